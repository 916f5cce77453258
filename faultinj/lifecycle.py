"""Putting faults on and changing them: apply (a fault, or a user's own program), set.

Each step that changes the kernel registers its undo before the next step
runs; a failure anywhere unwinds them all, so nothing is left half-applied.
"""

from __future__ import annotations

import os
import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator

from .errors import SpecError, StateError, TargetError, note
from .faults import CATALOGUE, PROGRAM, FaultSpec, parse_change, parse_hook, parse_spec
from .inject import advice, custom, state, targets
from .kernel import attach, caps, libbpf, maps, netns, program
from .kernel import links as kernel_links
from .kernel.netns import Links
from .removal import clear, forget, put_back_root, qdisc_sharers, reap_now, same_link
from .values import check_seed, deadline, parse_duration
from . import which

TC_MODES = ("cls_bpf", "matchall")


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
          container: str | None = None, runtime: str | None = None, peer_of: str | None = None,
          prio: int | None = None, attach_kind: str = "auto", first: bool = False, before: str | None = None,
          after: str | None = None, name: str | None = None) -> state.Record:
    """Attach a fault and return its record. The fault outlives this process.

    attach_kind: auto (tcx/XDP links where the kernel has them), link, or netlink (tc filter, XDP
    through netlink). first/before/after (a fault id or a program id) place a tcx link among the
    hook's tcx programs; by default it runs after them.

    Where: ifname in our namespace, or in netns_name (/run/netns), netns_path (a namespace file), the
    namespace of process pid, or of a container (Docker or Podman, by name or id). peer_of=CONTAINER
    attaches on the far end of that container's veth ifname (its peer, found from the veth's link).
    prio: the tc filter's priority (lower runs first; default: after every other filter on the hook).
    name: a name shared by faults applied together (status shows it, clear(name=...) removes them).
    The record's warnings say what may keep the fault from acting (inject/advice.py)."""
    fs = spec if isinstance(spec, FaultSpec) else parse_spec(spec, hook)
    if not fs.fault.configurable:
        raise SpecError("apply a program of your own with --program FILE.c")
    _check_tc_mode(tc_mode, fs.hook)
    _check_prio(prio, fs.hook)
    how = _Placement(attach_kind, first, before, after, prio)
    how.check(fs.hook, tc_mode)
    seconds = parse_duration(duration)
    seed = check_seed(seed)
    caps.require_privileges()
    target, ifname = _target(ifname, netns_name, netns_path, pid, container, runtime, peer_of)
    return _install(fs, ifname, target, seed, seconds, replace, tc_mode,
                    lambda deadline_ns, kind: program.load(fs, seed=seed, deadline_ns=deadline_ns, tc_mode=tc_mode,
                                                           tcx=kind == "tcx-link"),
                    how=how, name=name)


def apply_program(source: str, ifname: str, *, section: str | None = None, hook: str | None = None,
                  netns_name: str | None = None, replace: bool = False,
                  tc_mode: str = "cls_bpf", netns_path: str | None = None, pid: int | None = None,
                  container: str | None = None, runtime: str | None = None,
                  peer_of: str | None = None, prio: int | None = None, attach_kind: str = "auto",
                  first: bool = False, before: str | None = None, after: str | None = None) -> state.Record:
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
        _check_prio(prio, chosen)
        how = _Placement(attach_kind, first, before, after, prio)
        how.check(chosen, tc_mode)
        fs = FaultSpec(PROGRAM, f"{os.path.abspath(source)}:{name}", chosen)
        return _install(fs, ifname, target, 0, None, replace, tc_mode,
                        lambda _deadline, _kind: custom.load(compiled, chosen, name, tc_mode), how=how)
    finally:
        custom.discard(compiled)


def _check_tc_mode(tc_mode: str, hook: str) -> None:
    if tc_mode not in TC_MODES:
        raise SpecError(f"unknown --tc-mode '{tc_mode}': give one of {', '.join(TC_MODES)}")
    if tc_mode == "matchall" and hook == "xdp":
        raise SpecError("--tc-mode matchall applies to tc hooks, not xdp")


@dataclass
class _Placement:
    """How to attach: the kind asked for (auto, link, netlink) and a tcx link's place."""
    choice: str = "auto"
    first: bool = False
    before: str | None = None
    after: str | None = None
    prio: int | None = None     # a classic tc filter's priority (--prio): implies one

    @property
    def placed(self) -> bool:
        return bool(self.first or self.before or self.after)

    def check(self, hook: str, tc_mode: str) -> None:
        kernel_links.check_choice(self.choice, hook, tc_mode, self.placed)
        if sum(bool(x) for x in (self.first, self.before, self.after)) > 1:
            raise SpecError("give one of --first, --before, --after")
        if self.prio is not None and (self.choice == "link" or self.placed):
            raise SpecError("--prio orders classic tc filters; a tcx link is placed with --first/--before/--after: "
                            "give one or the other")
        if self.prio is not None:
            self.choice = "netlink"   # a priority asks for a tc filter

    def flags(self) -> tuple[int, int]:
        return kernel_links.tcx_placement(self.first, _prog_of(self.before), _prog_of(self.after))


def _prog_of(ref: str | None) -> int | None:
    """The program id a --before/--after names: one of our faults (by id) or a kernel program id."""
    if not ref:
        return None
    ref = str(ref)
    if ref.isdigit():
        return int(ref)
    rec = next((r for r in state.records() if r.id == ref), None)
    if rec is None:
        raise StateError(f"no fault with id {ref} to place this one next to: give a fault id (see 'faultinj "
                         "status') or a program id (see 'bpftool net show')")
    return rec.prog_id


def _check_prio(prio: int | None, hook: str) -> None:
    if prio is None:
        return
    if hook == "xdp":
        raise SpecError("--prio orders tc filters: leave it out for xdp")
    if not 1 <= prio <= 0xFFFF:
        raise SpecError(f"bad --prio {prio}: give 1..65535 (lower runs first)")


def _install(fs: FaultSpec, ifname: str, target: targets.Target, seed: int, seconds: float | None,
             replace: bool, tc_mode: str, load, how: _Placement = _Placement(),
             name: str | None = None) -> state.Record:
    """Load (load(deadline_ns, attach kind) -> LoadedObject), pin, attach and record one program, or undo it all.
    The root qdisc the fault needs (fq for time faults) is added first where it is not there."""
    netns_name, hook, qdisc = target.netns, fs.hook, fs.fault.qdisc
    with Links() as links, state.locked():
        ipr = links.get(netns_name)
        # a process that exited since we looked it up (a name that never existed: link_index says so)
        if netns.is_path(netns_name) and not netns.alive(netns_name, target.inode):
            raise TargetError(f"{target.where} is gone (its network namespace no longer exists)")
        ifindex = netns.link_index(netns_name, ifname, target.label)
        reap_now(links)
        replaced = _check_xdp_free(ipr, netns_name, ifindex, ifname, replace) if hook == "xdp" else None

        deadline_ns, expires_at = deadline(seconds)
        fid = "f" + os.urandom(4).hex()   # as secrets.token_hex(4), without loading OpenSSL (~4 ms)
        rec = state.Record(
            id=fid, spec=state.compose(fs.name, fs.value, fs.match.words, hook), netns=netns_name, ifname=ifname,
            ifindex=ifindex, attach_mode="cls_bpf" if hook != "xdp" else "", prog_id=0,
            pin_dir=str(state.pin_dir_for(fid)), seed=seed, deadline_ns=deadline_ns, expires_at=expires_at,
            pending="apply", pid=os.getpid(),
            target=target.label, container=target.container, netns_inode=target.inode, name=name,
            user=state.current_user(),
        )
        with ExitStack() as undo:
            state.save(rec)  # the intent, before anything changes in the kernel
            undo.callback(state.delete, rec)
            if qdisc:
                _ensure_qdisc(ipr, rec, qdisc, undo, replace)
            rec.attach_kind = kernel_links.choose_kind(how.choice, hook, tc_mode, how.placed)
            obj = load(deadline_ns, rec.attach_kind)
            undo.callback(obj.close)
            pin_dir = state.new_pin_dir(fid)
            undo.callback(state.remove_pins, pin_dir)
            obj.pin(str(pin_dir))
            rec.prog_id = libbpf.object_id(obj.prog_fd)
            _attach(ipr, rec, obj.prog_fd, how, replace, replaced, undo)
            rec.pending = rec.pid = None
            rec.warnings = _twins(rec) + advice.warnings(ipr, rec, at_apply=True)
            state.save(rec)
            undo.pop_all()  # success: everything stays
        obj.close()  # the attachment and the pins hold the program and maps now
        if replaced is not None:
            # the kernel swapped the program in place; only the old bookkeeping remains
            forget(replaced)
        return rec


def _attach(ipr, rec: state.Record, prog_fd: int, how: _Placement, replace: bool,
            replaced: state.Record | None, undo: ExitStack) -> None:
    """Attach the loaded program as rec.attach_kind says, registering each undo; the record is
    saved (the intent) before the kernel changes."""
    ns, ifindex, hook, kind = rec.netns, rec.ifindex, rec.hook, rec.attach_kind
    if hook == "xdp":
        if kind == "xdp-link" and replaced is not None and replaced.attach_kind == "xdp-link":
            # our own link: swap its program in place, then the new fault's directory holds the link
            rec.attach_mode = replaced.attach_mode
            state.save(rec)
            kernel_links.link_replace_program(replaced.pin_dir, prog_fd)
            undo.callback(_restore_link_program, replaced)   # the old program is pinned still
            link_fd = libbpf.obj_get(f"{replaced.pin_dir}/{kernel_links.LINK_PIN}")
            try:
                kernel_links.pin(link_fd, rec.pin_dir)
            finally:
                os.close(link_fd)
            return
        if replace and (replaced is not None or _xdp_taken(ns, ifindex)):
            # replacing a program attached through netlink (ours or, with --replace, another's):
            # only netlink can, and the kernel refuses it where a link holds the hook
            rec.attach_kind = kind = "xdp"
        state.save(rec)
        with netns.entered(ns):
            if kind == "xdp-link":
                rec.attach_mode = kernel_links.link_attach(kind, hook, ifindex, prog_fd, rec.pin_dir)
                return   # the pin holds it: removing the pin directory (an undo already) detaches it
            old = libbpf.prog_fd_by_id(replaced.prog_id) if replaced is not None else None
            try:
                rec.attach_mode = kernel_links.xdp_attach(ifindex, prog_fd, (old if old is not None else -1)
                                                   if replace else None)
            finally:
                if old is not None:
                    os.close(old)
        undo.callback(_in_netns, ns, kernel_links.xdp_detach, ifindex, rec.attach_mode, prog_fd)
        return
    if kind == "tcx-link":
        rec.attach_mode = "cls_bpf"
        state.save(rec)
        with netns.entered(ns):
            kernel_links.link_attach(kind, hook, ifindex, prog_fd, rec.pin_dir, how.flags())
        return
    if not attach.has_clsact(ipr, ifindex):
        state.mark_clsact_created(ns, ifindex, rec.ifname)  # intent first
        undo.callback(state.forget_link, ns, ifindex)
        with netns.entered(ns):
            kernel_links.clsact_create(ifindex)
        undo.callback(attach.remove_clsact_if_empty, ipr, ifindex)
    rec.attach_mode = "matchall" if kind == "tc-matchall" else "cls_bpf"
    rec.tc_prio = attach.next_prio(ipr, ifindex, hook) if how.prio is None else attach.free_prio(
        ipr, ifindex, hook, how.prio, rec.ifname, rec.netns)
    if kind == "tc-matchall":   # libbpf has no API for a BPF action: pyroute2, found by our name
        rec.filter_name = f"faultinj:{rec.id}:{rec.fault}"
        state.save(rec)
        attach.matchall_attach(ipr, ifindex, hook, prog_fd, rec.filter_name, rec.tc_prio)
        undo.callback(attach.tc_detach, ipr, ifindex, hook, rec.tc_prio, rec.filter_name, "matchall")
        return
    state.save(rec)
    with netns.entered(ns):
        kernel_links.tc_filter_attach(ifindex, hook, prog_fd, rec.tc_prio)
    undo.callback(_in_netns, ns, kernel_links.tc_filter_detach, ifindex, hook, rec.tc_prio, rec.prog_id)


def _restore_link_program(rec: state.Record) -> None:
    fd = libbpf.obj_get(f"{rec.pin_dir}/prog")
    try:
        kernel_links.link_replace_program(rec.pin_dir, fd)
    finally:
        os.close(fd)


def _in_netns(ns: str | None, fn, *args):
    with netns.entered(ns):
        return fn(*args)


def _xdp_taken(ns: str | None, ifindex: int) -> bool:
    with netns.entered(ns):
        return bool(kernel_links.xdp_current(ifindex)[1])


def _twins(rec: state.Record) -> list[str]:
    """Applying a spec already on the hook stacks a second fault: said, not done silently."""
    same = [r.id for r in state.records() if r.id != rec.id and r.spec == rec.spec
            and same_link(r, rec.netns, rec.ifindex)]
    if not same:
        return []
    return [f"{rec.spec} is already on {rec.ifname} as {', '.join(same)}: both act, one after the other "
            f"(to change the running one: 'faultinj set'; to undo this one: 'faultinj clear --id {rec.id}')"]


def _ensure_qdisc(ipr, rec: state.Record, kind: str, undo: ExitStack, replace: bool = False) -> None:
    """The root qdisc a time fault needs: ours if we add it (or another fault of ours did), someone
    else's fq left as it is, any other root qdisc of someone's refused unless replace: then saved
    exactly (kind, handle, options) in the record and put back when the last fault needing ours goes."""
    current = attach.root_qdisc(ipr, rec.ifindex)
    ours = qdisc_sharers(rec)
    if current == kind:
        rec.qdisc = "added" if ours else "present"
        rec.qdisc_saved = ours[0].qdisc_saved if ours else None
        state.save(rec)
        return
    foreign = current not in attach.default_qdisc_kinds()
    if foreign and not replace:
        raise StateError(f"{rec.ifname} has a root qdisc '{current}' that another tool installed; a time fault "
                         f"needs {kind} there: give --replace to put {kind} in its place (faultinj puts '{current}' "
                         f"back, options and all, at clear), or remove it yourself "
                         f"('{netns.command(rec.netns, 'tc', 'qdisc', 'del', 'dev', rec.ifname, 'root')}')")
    if foreign:
        rec.qdisc_saved = attach.save_root_qdisc(rec.netns, rec.ifindex, rec.ifname)
    rec.qdisc = "adding"
    state.save(rec)   # the intent: a process killed now is rolled back, the qdisc with it
    undo.callback(put_back_root, rec)
    attach.add_root_fq(rec.netns, rec.ifname, replace=foreign)
    rec.qdisc = "added"
    state.save(rec)


def _check_xdp_free(ipr, ns, ifindex, ifname, replace) -> state.Record | None:
    """Refuse a second XDP program on a link unless replace; returns our record it replaces."""
    ours = [r for r in state.records() if r.hook == "xdp" and same_link(r, ns, ifindex)]
    with netns.entered(ns):
        mode, prog_id = kernel_links.xdp_current(ifindex)
    if not prog_id:
        for r in ours:  # records of a program someone else detached
            forget(r)
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


def set_fault(ifname: str | None, spec: str, *, netns_name: str | None = None, seed: int | None = None,
              duration: str | float | None = None, fault_id: str | None = None, netns_path: str | None = None,
              pid: int | None = None, container: str | None = None, runtime: str | None = None) -> state.Record:
    """Change a running fault's value, filters (and seed, deadline) with a map write: no reload.
    Which fault: fault_id alone, or ifname (without a namespace: see which.netns_of)."""
    change = parse_change(spec)
    ftype, hook = change.fault, change.hook
    if change.value is None and change.filters is None and seed is None and duration is None:
        raise SpecError(f"nothing to change: give {ftype.name}={ftype.value.name}, filters, --seed or --duration")
    if ifname is None and fault_id is None:
        raise SpecError(f"say which fault: faultinj set {spec} INTERFACE, or --id ID (see 'faultinj status')")
    seconds = parse_duration(duration)
    if seed is not None:
        check_seed(seed)
    caps.require_privileges()
    named = any(v is not None for v in (netns_path, pid, container))
    target = _target(ifname, netns_name, netns_path, pid, container, runtime)[0] if named else None

    def kind(r: state.Record) -> bool:
        return r.fault == ftype.name and (hook is None or r.hook == hook)

    with Links() as links, state.locked():
        reap_now(links)
        records = state.records()
        if fault_id is not None:
            rec = which.by_id(fault_id, records, ifname, target.netns if target else netns_name)
            if rec is None:
                raise StateError(f"no fault with id {fault_id} (see 'faultinj status')")
            if not kind(rec):
                raise StateError(f"fault {fault_id} is {rec.spec}, not {ftype.name}{'@' + hook if hook else ''}: "
                                 f"give its own name, e.g. faultinj set {rec.fault}=... --id {fault_id}")
            cands = [rec]
        else:
            ns = target.netns if target else which.netns_of(ifname, netns_name, records, kind)
            cands = [r for r in records if r.ifname == ifname and r.netns == ns and kind(r)]
        if not cands:
            where = target.where if target else ns
            netns.link_index(ns, ifname, target.label if target else None)  # says so if the interface is unknown
            raise StateError(f"no {ftype.name} fault on {ifname}{' in ' + where if where else ''}: "
                             f"apply one with 'faultinj apply {spec.partition('@')[0]} {ifname}"
                             f"{' --netns ' + ns if ns and not target else ''}'")
        if len(cands) > 1:
            raise StateError(f"{len(cands)} {ftype.name} faults on {ifname} ({', '.join(r.id for r in cands)}): "
                             "choose one with --id")
        rec = cands[0]
        new = change.applied_to(rec.fault_spec())
        rec.specs[str(rec.gen)] = rec.spec     # what the journal's events so far were made under
        rec.gen += 1
        rec.spec = state.compose(rec.fault, new.value, new.match.words, rec.hook)
        if seed is not None:
            rec.seed = seed
        if seconds is not None:
            rec.deadline_ns, rec.expires_at = deadline(seconds)
        rec.pending, rec.pid = "set", os.getpid()
        state.save(rec)  # the intent: a process killed now is rolled forward
        maps.write_record(rec)
        rec.pending = rec.pid = None
        state.save(rec)
        return rec


# ---- the commands' argument rules (the CLI parses and prints; what it was given is checked here) ----

def apply_command(spec: str | None, ifname: str | None, *, program: str | None = None,
                  section: str | None = None, seed: int | None = None, duration: str | None = None,
                  peer_of: str | None = None, **kwargs) -> state.Record:
    """`faultinj apply`: a catalogue fault (SPEC INTERFACE) or, with program=FILE.c, a program of the
    user's own (INTERFACE alone, in either position). With peer_of, the interface defaults to eth0.
    kwargs: as apply/apply_program (netns_name, hook, replace, tc_mode, prio, where and how)."""
    if program:
        if spec and ifname:
            raise SpecError(f"--program takes the place of a fault spec: give only the interface "
                            f"(faultinj apply --program {program} {ifname})")
        if seed is not None or duration is not None:
            raise SpecError("a custom program has no faultinj seed or deadline: leave out --seed and --duration")
        iface = ifname or spec or ("eth0" if peer_of else None)
        if not iface:
            raise SpecError(f"give the interface: faultinj apply --program {program} INTERFACE")
        return apply_program(program, iface, section=section, peer_of=peer_of, **kwargs)
    if section:
        raise SpecError("--section goes with --program FILE.c")
    if peer_of and spec and not ifname:
        ifname = "eth0"
    if not spec or not ifname:
        raise SpecError("give a fault spec and an interface, e.g. faultinj apply psh-ratio=10 eth0 "
                        "(see 'faultinj faults')")
    return apply(spec, ifname, seed=seed, duration=duration, peer_of=peer_of, **kwargs)


def names_a_fault(word: str) -> bool:
    """Does the word start with a catalogue fault's name (psh-ratio=5, drop,proto=udp, drop@xdp)?"""
    return re.split(r"[=,@]", word, maxsplit=1)[0].strip() in CATALOGUE


def set_command(spec: str, ifname: str | None = None, **kwargs) -> state.Record:
    """`faultinj set SPEC [INTERFACE]`; the old order (INTERFACE SPEC) still works, with a note.
    kwargs: as set_fault."""
    if ifname and names_a_fault(ifname) and not names_a_fault(spec):
        spec, ifname = ifname, spec
        note(
            "'set INTERFACE SPEC' is the old order and still works; say 'faultinj set %s %s' (SPEC INTERFACE, "
            "as apply)", spec, ifname)
    return set_fault(ifname, spec, **kwargs)
