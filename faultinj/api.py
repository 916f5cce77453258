"""The Python API: apply, status, set_fault, clear. The CLI is a thin layer on it.

Each step that changes the kernel registers its undo before the next step
runs; a failure anywhere unwinds them all, so nothing is left half-applied.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator

from .errors import SpecError, StateError, TargetError
from .faults import PROGRAM, FaultSpec, parse_change, parse_hook, parse_spec
from .inject import attach, caps, custom, libbpf, maps, netns, program, state, targets

TC_MODES = ("cls_bpf", "matchall")
MAX_SEED = (1 << 64) - 1
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float | int | None) -> float | None:
    """'30s', '5m', '1.5h', '500ms', 30 -> seconds; None -> None."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        m = _DURATION.match(text)
        if not m:
            raise SpecError(f"bad duration '{text}': give a number with an optional unit ms, s, m, h, d (e.g. 30s)")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not (0 < seconds <= 365 * 86400):
        raise SpecError(f"bad duration '{text}': it must be more than 0 and at most 365 days")
    return seconds


def check_seed(seed: int | None) -> int:
    if seed is None:
        return secrets.randbits(64)
    if not (0 <= seed <= MAX_SEED):
        raise SpecError(f"bad seed {seed}: give a whole number from 0 to 2**64-1")
    return seed


def _deadline(seconds: float | None) -> tuple[int, float | None]:
    if seconds is None:
        return 0, None
    return time.monotonic_ns() + int(seconds * 1e9), time.time() + seconds


class _LazyIPRoute:
    """An IPRoute socket in ns, opened when first used: a command that only looks links up
    (netns.links) never imports pyroute2."""

    def __init__(self, ns: str | None):
        self._ns, self._ipr = ns, None

    def __getattr__(self, name: str):
        if self._ipr is None:
            self._ipr = netns.open_iproute(self._ns)
        return getattr(self._ipr, name)

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()


class _Links:
    """IPRoute sockets per namespace, opened on first use, closed together."""

    def __init__(self):
        self._open: dict[str | None, _LazyIPRoute] = {}

    def get(self, ns: str | None) -> _LazyIPRoute:
        if ns not in self._open:
            self._open[ns] = _LazyIPRoute(ns)
        return self._open[ns]

    def cached(self, key: tuple, fetch):
        """One netlink dump per key for the life of this object (status reads many records)."""
        if not hasattr(self, "_cache"):
            self._cache = {}
        if key not in self._cache:
            self._cache[key] = fetch()
        return self._cache[key]

    def close(self):
        for ipr in self._open.values():
            ipr.close()
        self._open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _same_link(rec: state.Record, ns: str | None, ifindex: int) -> bool:
    return rec.netns == ns and rec.ifindex == ifindex


# ---- apply -----------------------------------------------------------------

def _target(ifname: str | None, netns_name=None, netns_path=None, pid=None, container=None, runtime=None,
            peer_of=None) -> tuple[targets.Target, str | None]:
    """The namespace (and, for peer_of, the interface) a command's options name."""
    if peer_of is not None:
        if any(v is not None for v in (netns_name, netns_path, pid, container)):
            raise SpecError("--peer-of names the namespace itself: leave out --netns, --netns-path, --pid, --container")
        caps.require_privileges()
        return targets.peer_of(peer_of, ifname or "eth0", runtime)
    if any(v is not None for v in (netns_path, pid, container)):
        caps.require_privileges()
    return targets.resolve(netns_name=netns_name, netns_path=netns_path, pid=pid, container=container,
                           runtime=runtime), ifname


def apply(spec: str | FaultSpec, ifname: str, *, netns_name: str | None = None, seed: int | None = None,
          duration: str | float | None = None, replace: bool = False, tc_mode: str = "cls_bpf",
          hook: str | None = None, netns_path: str | None = None, pid: int | None = None,
          container: str | None = None, runtime: str | None = None, peer_of: str | None = None) -> state.Record:
    """Attach a fault and return its record. The fault outlives this process.

    Where: ifname in our namespace, or in netns_name (/run/netns), netns_path (a namespace file), the
    namespace of process pid, or of a container (Docker or Podman, by name or id). peer_of=CONTAINER
    attaches on the far end of that container's veth ifname (its peer, found from the veth's link)."""
    fs = spec if isinstance(spec, FaultSpec) else parse_spec(spec, hook)
    if not fs.fault.configurable:
        raise SpecError("apply a program of your own with --program FILE.c")
    _check_tc_mode(tc_mode, fs.hook)
    seconds = parse_duration(duration)
    seed = check_seed(seed)
    caps.require_privileges()
    target, ifname = _target(ifname, netns_name, netns_path, pid, container, runtime, peer_of)
    return _install(fs, ifname, target, seed, seconds, replace, tc_mode,
                    lambda deadline_ns: program.load(fs, seed=seed, deadline_ns=deadline_ns, tc_mode=tc_mode))


def apply_program(source: str, ifname: str, *, section: str | None = None, hook: str | None = None,
                  netns_name: str | None = None, replace: bool = False,
                  tc_mode: str = "cls_bpf", netns_path: str | None = None, pid: int | None = None,
                  container: str | None = None, runtime: str | None = None,
                  peer_of: str | None = None) -> state.Record:
    """Compile, load and attach a user's own BPF C program, kept and listed like a fault.
    The hook comes from --hook, else from the program's section (xdp..., tc/classifier/action)."""
    chosen = parse_hook(hook) if hook else None
    caps.require_privileges()
    target, ifname = _target(ifname, netns_name, netns_path, pid, container, runtime, peer_of)
    compiled = custom.compile_source(source)       # before anything changes in the kernel
    try:
        name, sec = custom.pick(compiled, section)
        chosen = chosen or custom.hook_of_section(sec, source)
        _check_tc_mode(tc_mode, chosen)
        fs = FaultSpec(PROGRAM, f"{os.path.abspath(source)}:{name}", chosen)
        return _install(fs, ifname, target, 0, None, replace, tc_mode,
                        lambda _deadline: custom.load(compiled, chosen, name, tc_mode))
    finally:
        custom.discard(compiled)


def _check_tc_mode(tc_mode: str, hook: str) -> None:
    if tc_mode not in TC_MODES:
        raise SpecError(f"unknown --tc-mode '{tc_mode}': give one of {', '.join(TC_MODES)}")
    if tc_mode == "matchall" and hook == "xdp":
        raise SpecError("--tc-mode matchall applies to tc hooks, not xdp")


def _install(fs: FaultSpec, ifname: str, target: targets.Target, seed: int, seconds: float | None,
             replace: bool, tc_mode: str, load) -> state.Record:
    """Load (load(deadline_ns) -> LoadedObject), pin, attach and record one program, or undo it all.
    The root qdisc the fault needs (fq for time faults) is added first where it is not there."""
    netns_name, hook, qdisc = target.netns, fs.hook, fs.fault.qdisc
    with _Links() as links, state.locked():
        ipr = links.get(netns_name)
        if not netns.alive(netns_name, target.inode):   # a process that exited since we looked it up
            raise TargetError(f"{target.where} is gone (its network namespace no longer exists)")
        ifindex = netns.link_index(netns_name, ifname, target.label)
        _reap(links)
        replaced = _check_xdp_free(ipr, netns_name, ifindex, ifname, replace) if hook == "xdp" else None

        deadline_ns, expires_at = _deadline(seconds)
        fid = "f" + secrets.token_hex(4)
        rec = state.Record(
            id=fid, fault=fs.name, value=fs.value, hook=hook, netns=netns_name, ifname=ifname,
            ifindex=ifindex, attach_mode="cls_bpf" if hook != "xdp" else "", prog_id=0,
            pin_dir=str(state.pin_dir_for(fid)), seed=seed, deadline_ns=deadline_ns, expires_at=expires_at,
            pending="apply", pid=os.getpid(), match=[list(w) for w in fs.match.words],
            target=target.label, container=target.container, netns_inode=target.inode,
        )
        with ExitStack() as undo:
            state.save(rec)  # the intent, before anything changes in the kernel
            undo.callback(state.delete, rec)
            if qdisc:
                _ensure_qdisc(ipr, rec, qdisc, undo)
            obj = load(deadline_ns)
            undo.callback(obj.close)
            pin_dir = state.new_pin_dir(fid)
            undo.callback(state.remove_pins, pin_dir)
            obj.pin(str(pin_dir))
            rec.prog_id = libbpf.object_id(obj.prog_fd)
            if hook == "xdp":
                state.save(rec)
                rec.attach_mode = attach.xdp_attach(ipr, ifindex, obj.prog_fd, replace)
                undo.callback(attach.xdp_detach, ipr, ifindex, rec.attach_mode, obj.prog_fd)
            else:
                if not attach.has_clsact(ipr, ifindex):
                    state.mark_clsact_created(netns_name, ifindex, ifname)  # intent first
                    undo.callback(state.forget_link, netns_name, ifindex)
                    attach.ensure_clsact(ipr, ifindex)
                    undo.callback(attach.remove_clsact_if_empty, ipr, ifindex)
                rec.attach_mode = tc_mode
                rec.tc_prio = attach.next_prio(ipr, ifindex, hook)
                rec.filter_name = f"faultinj:{fid}:{fs.name}"
                state.save(rec)
                attach.tc_attach(ipr, ifindex, hook, obj.prog_fd, rec.filter_name, tc_mode, rec.tc_prio)
                undo.callback(attach.tc_detach, ipr, ifindex, hook, rec.tc_prio, rec.filter_name, tc_mode)
            rec.pending = rec.pid = None
            state.save(rec)
            undo.pop_all()  # success: everything stays
        obj.close()  # the attachment and the pins hold the program and maps now
        if replaced is not None:
            # the kernel swapped the program in place; only the old bookkeeping remains
            _forget(replaced)
        return rec


def _ensure_qdisc(ipr, rec: state.Record, kind: str, undo: ExitStack) -> None:
    """The root qdisc a time fault needs: ours if we add it (or another fault of ours did), someone
    else's fq left as it is, any other root qdisc of someone's refused (nothing is replaced)."""
    current = attach.root_qdisc(ipr, rec.ifindex)
    ours = _qdisc_sharers(rec)
    if current == kind:
        rec.qdisc = "added" if ours else "present"
        state.save(rec)
        return
    if current not in attach.default_qdisc_kinds():
        raise StateError(f"{rec.ifname} has a root qdisc '{current}' that another tool installed; a time fault "
                         f"needs {kind} there and faultinj does not replace it: remove it first "
                         f"('tc qdisc del dev {rec.ifname} root')")
    rec.qdisc = "adding"
    state.save(rec)   # the intent: a process killed now is rolled back, the qdisc with it
    undo.callback(attach.remove_root_fq, rec.netns, rec.ifname)
    attach.add_root_fq(rec.netns, rec.ifname)
    rec.qdisc = "added"
    state.save(rec)


def _release_qdisc(rec: state.Record) -> None:
    """Remove the fq faultinj added when the last fault that needed it is gone."""
    if rec.qdisc in ("adding", "added") and not _qdisc_sharers(rec):
        attach.remove_root_fq(rec.netns, rec.ifname)


def _qdisc_sharers(rec: state.Record) -> list[state.Record]:
    """Our other faults on rec's link that hold the root qdisc faultinj added there."""
    return [r for r in state.records() if r.id != rec.id and _same_link(r, rec.netns, rec.ifindex)
            and r.qdisc in ("adding", "added")]


def _check_xdp_free(ipr, ns, ifindex, ifname, replace) -> state.Record | None:
    """Refuse a second XDP program on a link unless replace; returns our record it replaces."""
    ours = [r for r in state.records() if r.hook == "xdp" and _same_link(r, ns, ifindex)]
    mode, prog_id = attach.xdp_current(ipr, ifindex)
    if not prog_id:
        for r in ours:  # records of a program someone else detached
            _forget(r)
        return None
    mine = next((r for r in ours if r.prog_id == prog_id), None)
    if not replace:
        if mine:
            raise StateError(
                f"{ifname} already has faultinj fault {mine.id} ({mine.spec}) on xdp: "
                f"clear it first or pass --replace"
            )
        raise StateError(
            f"{ifname} already has a foreign XDP program (id {prog_id}, {mode}): faultinj will not "
            "replace it without --replace"
        )
    return mine


@contextmanager
def fault(spec: str | FaultSpec, ifname: str, **kwargs) -> Iterator[state.Record]:
    """Apply a fault around a block (a test), clearing it afterwards whatever happens."""
    rec = apply(spec, ifname, **kwargs)
    try:
        yield rec
    finally:
        clear(fault_id=rec.id)


# ---- status ----------------------------------------------------------------

@dataclass
class FaultStatus:
    record: state.Record
    state: str            # active | expired | gone | detached
    detail: str
    counters: dict[str, int] | None
    maps: list[dict] | None = None   # a custom program's own maps (it has no faultinj counters)
    journal_lost: int = 0            # journal events no longer kept (it keeps the last 4096, overwrites)
    refused: int = 0                 # packets chosen but the kernel refused the change (not in acted)

    def to_json(self) -> dict:
        d = self.record.to_json()
        d.update(state=self.state, detail=self.detail, counters=self.counters, journal_lost=self.journal_lost,
                 refused=self.refused)
        if self.maps is not None:
            d["maps"] = self.maps
        if self.record.deadline_ns:
            d["remaining_s"] = max(0.0, (self.record.deadline_ns - time.monotonic_ns()) / 1e9)
        return d


def _read_counters(rec: state.Record) -> tuple[dict | None, int, int]:
    """The fault's counters, its journal events no longer kept and the changes the kernel refused."""
    try:
        fd = libbpf.obj_get(f"{rec.pin_dir}/fi_counters")
    except Exception:
        return None, 0, 0  # pins gone: status says why (gone, detached)
    try:
        counters, refused = maps.read_counters(fd), maps.read_refused(fd)
    finally:
        os.close(fd)
    try:
        fd = libbpf.obj_get(f"{rec.pin_dir}/fi_journal_head")
    except Exception:
        return counters, 0, refused   # applied before the journal was a log
    try:
        return counters, maps.read_overwritten(fd), refused
    finally:
        os.close(fd)


def _attachment_state(links: _Links, rec: state.Record) -> tuple[str, str]:
    if rec.pending:
        return "interrupted", (f"a faultinj process (pid {rec.pid}) died during '{rec.pending}'; "
                               "the next faultinj command finishes or undoes it")
    if not netns.alive(rec.netns, rec.netns_inode):
        if rec.target:
            return "gone", f"{rec.target} is gone (its network namespace no longer exists)"
        return "gone", f"namespace {rec.netns} no longer exists"
    ipr = links.get(rec.netns)
    names = links.cached(("links", rec.netns), lambda: netns.links(rec.netns))
    if names.get(rec.ifindex) != rec.ifname:
        return "gone", f"interface {rec.ifname} (index {rec.ifindex}) no longer exists"
    if rec.hook == "xdp":
        _, prog_id = links.cached(("xdp", rec.netns, rec.ifindex), lambda: attach.xdp_current(ipr, rec.ifindex))
        if prog_id != rec.prog_id:
            return "detached", "another XDP program replaced it" if prog_id else "its XDP program was removed"
    else:
        ours = links.cached(("tc", rec.netns, rec.ifindex, rec.hook), lambda: {
            (attach.filter_prio(f), attach.filter_name(f)) for f in attach.filters(ipr, rec.ifindex, rec.hook)})
        if (rec.tc_prio, rec.filter_name) not in ours:
            return "detached", "its tc filter was removed by something else"
    if rec.expired():
        return "expired", "past its deadline: passes everything; the next faultinj command removes it"
    return "active", ""


def status(netns_name: str | None = None, all_namespaces: bool = True,
           fault_id: str | None = None) -> list[FaultStatus]:
    """Every fault's state and counters; those of one namespace (all_namespaces=False); or one fault."""
    caps.require_privileges()
    out = []
    with _Links() as links, state.locked(exclusive=False):
        for rec in state.records():
            if (not all_namespaces and rec.netns != netns_name) or fault_id not in (None, rec.id):
                continue
            st, detail = _attachment_state(links, rec)
            if not rec.fault_spec().fault.configurable:
                out.append(FaultStatus(rec, st, detail, None, custom.pinned_maps(rec.pin_dir)))
            else:
                counters, lost, refused = _read_counters(rec)
                out.append(FaultStatus(rec, st, detail, counters, journal_lost=lost, refused=refused))
    return out


def fault_status(fault_id: str) -> FaultStatus | None:
    """One fault's status (its counters: .counters), None when there is no such fault."""
    return next(iter(status(fault_id=fault_id)), None)


# ---- set -------------------------------------------------------------------

def set_fault(ifname: str, spec: str, *, netns_name: str | None = None, seed: int | None = None,
              duration: str | float | None = None, fault_id: str | None = None, netns_path: str | None = None,
              pid: int | None = None, container: str | None = None, runtime: str | None = None) -> state.Record:
    """Change a running fault's value, filters (and seed, deadline) with a map write: no reload."""
    change = parse_change(spec)
    ftype, hook = change.fault, change.hook
    if change.value is None and change.filters is None and seed is None and duration is None:
        raise SpecError(f"nothing to change: give {ftype.name}={ftype.value.name}, filters, --seed or --duration")
    seconds = parse_duration(duration)
    if seed is not None:
        check_seed(seed)
    caps.require_privileges()
    target, _ = _target(ifname, netns_name, netns_path, pid, container, runtime)
    netns_name = target.netns
    with _Links() as links, state.locked():
        _reap(links)
        cands = [r for r in state.records() if r.ifname == ifname and r.netns == netns_name
                 and r.fault == ftype.name and (hook is None or r.hook == hook)
                 and (fault_id is None or r.id == fault_id)]
        if not cands:
            netns.link_index(netns_name, ifname, target.label)  # says so if the interface is unknown
            raise StateError(f"no {ftype.name} fault on {ifname}{' in ' + target.where if netns_name else ''}: "
                             f"apply one with 'faultinj apply {spec.partition('@')[0]} {ifname}'")
        if len(cands) > 1:
            raise StateError(f"{len(cands)} {ftype.name} faults on {ifname} ({', '.join(r.id for r in cands)}): "
                             "choose one with --id")
        rec = cands[0]
        new = change.applied_to(rec.fault_spec())
        rec.specs[str(rec.gen)] = rec.spec     # what the journal's events so far were made under
        rec.gen += 1
        rec.value, rec.match = new.value, [list(w) for w in new.match.words]
        if seed is not None:
            rec.seed = seed
        if seconds is not None:
            rec.deadline_ns, rec.expires_at = _deadline(seconds)
        rec.pending, rec.pid = "set", os.getpid()
        state.save(rec)  # the intent: a process killed now is rolled forward
        _write_config(rec)
        rec.pending = rec.pid = None
        state.save(rec)
        return rec


def _write_config(rec: state.Record) -> None:
    """Make the kernel's config map say what the record says."""
    with maps.pinned(rec.pin_dir) as fds:
        maps.write_spec(fds, rec.fault_spec(), rec.seed, rec.deadline_ns, rec.gen)


# ---- clear -----------------------------------------------------------------

def clear(ifname: str | None = None, *, netns_name: str | None = None, all_faults: bool = False,
          fault_id: str | None = None, netns_path: str | None = None, pid: int | None = None,
          container: str | None = None, runtime: str | None = None) -> list[state.Record]:
    """Remove faults: on one interface, one by id, or all; or every fault of a container (its own
    interfaces and its veth peers), process or namespace file. Returns what was removed."""
    named = next((v for v in (container, pid, netns_path) if v is not None), None)
    if not (ifname or all_faults or fault_id or named is not None):
        raise SpecError("say what to clear: an interface, --id ID, --container NAME, or --all")
    caps.require_privileges()
    if named is not None:
        if netns_name is not None:
            raise SpecError("give --netns or --container/--pid/--netns-path, not both")
        wanted, unknown = _records_of(netns_path, pid, container, runtime)
        with _Links() as links, state.locked():
            recs = [r for r in state.records() if wanted(r) and (not ifname or r.ifname == ifname)]
            if not recs and unknown is not None:
                raise unknown
            if not recs:
                raise StateError(f"no faults on {ifname + ' in ' if ifname else ''}"
                                 f"{'container ' + container if container else named} (see 'faultinj status')")
            for rec in recs:
                _remove(links, rec)
            return recs
    with _Links() as links, state.locked():
        recs = state.records()
        if fault_id:
            recs = [r for r in recs if r.id == fault_id]
            if not recs:
                raise StateError(f"no fault with id {fault_id} (see 'faultinj status')")
        elif ifname:
            recs = [r for r in recs if r.ifname == ifname and r.netns == netns_name]
            if not recs:
                netns.link_index(netns_name, ifname)  # unknown interface: say so
        elif netns_name is not None:
            recs = [r for r in recs if r.netns == netns_name]
        for rec in recs:
            _remove(links, rec)
        return recs


def _records_of(netns_path, pid, container, runtime):
    """Which records a --container/--pid/--netns-path names. A container that is gone is still
    matched by the name its faults were applied with."""
    if container is not None:
        unknown = cid = None
        try:
            cid = targets.find_container(container, runtime).id
        except TargetError as exc:
            unknown = exc
        labels = {f"container:{container}", f"peer-of:{container}"}
        return (lambda r: (cid is not None and r.container == cid) or r.target in labels), unknown
    target = targets.resolve(netns_path=netns_path, pid=pid)
    return (lambda r: r.netns == target.netns
            or (r.netns_inode is not None and r.netns_inode == target.inode)), None


def _forget(rec: state.Record) -> None:
    state.remove_pins(rec.pin_dir)
    state.delete(rec)


def _remove(links: _Links, rec: state.Record) -> None:
    """Detach exactly what this record created, then unpin and forget it.

    Copes with a fault half made or half removed by a killed process: each
    step checks the kernel first (our filter name, our program id)."""
    if rec.pending != "clear":
        rec.pending, rec.pid = "clear", os.getpid()
        state.save(rec)
    if not netns.alive(rec.netns, rec.netns_inode):
        return _forget_all(rec)
    if not netns.link_exists(rec.netns, rec.ifindex, rec.ifname):
        return _forget_all(rec)
    ipr = links.get(rec.netns)
    if rec.hook == "xdp":
        fd = libbpf.prog_fd_by_id(rec.prog_id) if rec.prog_id else None
        if fd is not None:
            try:
                mode, current = attach.xdp_current(ipr, rec.ifindex)
                if current == rec.prog_id:
                    attach.xdp_detach(ipr, rec.ifindex, rec.attach_mode or mode, fd)
            finally:
                os.close(fd)
        _forget(rec)
        return
    if rec.tc_prio is not None and rec.filter_name:
        attach.tc_detach(ipr, rec.ifindex, rec.hook, rec.tc_prio, rec.filter_name, rec.attach_mode)
    _release_qdisc(rec)   # after the filter: no packet gets a departure time with nothing to honour it
    _forget(rec)
    others = [r for r in state.records() if r.hook != "xdp" and _same_link(r, rec.netns, rec.ifindex)]
    if not others and state.clsact_created(rec.netns, rec.ifindex):
        if attach.remove_clsact_if_empty(ipr, rec.ifindex) or not attach.has_clsact(ipr, rec.ifindex):
            state.forget_link(rec.netns, rec.ifindex)


def _forget_all(rec: state.Record) -> None:
    _forget(rec)
    state.forget_link(rec.netns, rec.ifindex)


def _reap(links: _Links) -> list[state.Record]:
    """Finish what killed processes left (see Record.pending) and remove faults
    past their deadline (their programs already pass everything)."""
    from .inject import lab

    dead_namespaces = set(lab.reap_orphans())
    now = time.monotonic_ns()
    done = []
    for rec in state.records():
        if rec.netns in dead_namespaces or _target_gone(links, rec):
            _forget_all(rec)   # the namespace took the program's attachment with it: only our files remain
            done.append(rec)
        elif rec.pending == "set":
            _write_config(rec)
            rec.pending = rec.pid = None
            state.save(rec)
        elif rec.pending in ("apply", "clear") or rec.expired(now):
            _remove(links, rec)
            done.append(rec)
    return done


def _target_gone(links: _Links, rec: state.Record) -> bool:
    """A container's or process's namespace has gone (or its PID now names another namespace), or the
    far end of an exited container's veth went with it. Named namespaces are left to 'clear'."""
    if netns.is_path(rec.netns) and not netns.alive(rec.netns, rec.netns_inode):
        return True
    if rec.container and netns.alive(rec.netns, rec.netns_inode):
        # by index only: a link renamed inside the container still holds our filter
        return rec.ifindex not in links.cached(("links", rec.netns), lambda: netns.links(rec.netns))
    return False


def reap() -> list[state.Record]:
    caps.require_privileges()
    with _Links() as links, state.locked():
        return _reap(links)


# ---- journal ---------------------------------------------------------------

def journal(ifname: str | None = None, *, netns_name: str | None = None, fault_id: str | None = None,
            from_start: bool = True):
    """A reader (inject.journal.JournalReader; close it) of the journals of the faults on ifname,
    one fault by id, or every fault: from the oldest event kept, or (from_start=False) the next one.
    Reading takes nothing from other readers: each sees every event."""
    from .inject.journal import JournalReader

    caps.require_privileges()
    def wanted(r: state.Record) -> bool:
        if fault_id is not None:
            return r.id == fault_id
        if ifname is not None:
            return r.ifname == ifname and r.netns == netns_name
        return netns_name is None or r.netns == netns_name   # every fault, or every one in a namespace

    with state.locked(exclusive=False):
        recs = [r for r in state.records() if wanted(r)]
    if not recs and (ifname or fault_id):
        what = f"fault {fault_id}" if fault_id else f"faults on {ifname}{' in ' + netns_name if netns_name else ''}"
        raise StateError(f"no {what}: see 'faultinj status'")
    return JournalReader(recs, from_start)   # it skips custom programs: they have no journal
