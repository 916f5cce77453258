"""Removing faults: `clear`, and the reaping every command does first (what killed processes left
half done, faults past their deadline, faults whose namespace or container is gone, labs whose
runner died)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .errors import FaultinjError, SpecError, StateError, TargetError, note
from .kernel import attach, caps, libbpf, maps, netns
from .inject import labrecords, state, targets
from .kernel import links as kernel_links
from .kernel.netns import Links
from . import which

# What a command finished for a killed one (or found gone) is said (errors.note), not done
# silently: the CLI shows these as notes on stderr.


@dataclass
class Removed:
    """A fault that clear (or reaping) removed: its record, and what its maps held once its program
    was detached and before they were unpinned: every packet it acted on (a status read before clear
    can miss the last), and the journal events it no longer kept. None/0 when its pins were gone."""
    record: state.Record
    final_counters: dict | None = None
    final_journal_lost: int = 0

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def spec(self) -> str:
        return self.record.spec

    @property
    def where(self) -> str:
        return self.record.where

    @property
    def user(self) -> str:
        return self.record.user

    def to_json(self) -> dict:
        return {**self.record.to_json(), "final_counters": self.final_counters,
                "final_journal_lost": self.final_journal_lost}


def same_link(rec: state.Record, ns: str | None, ifindex: int) -> bool:
    return rec.netns == ns and rec.ifindex == ifindex


def put_back_root(rec: state.Record) -> None:
    """Remove the fq faultinj added; put back the root qdisc it replaced (if it did)."""
    attach.remove_root_fq(rec.netns, rec.ifname)
    if rec.qdisc_saved:
        try:
            attach.restore_root_qdisc(rec.netns, rec.ifindex, rec.qdisc_saved)
        except OSError as exc:
            raise StateError(f"could not put back the root qdisc '{rec.qdisc_saved['kind']}' on {rec.ifname} "
                             f"({exc.strerror}): add it again by hand") from None


def _release_qdisc(rec: state.Record) -> None:
    """Remove the fq faultinj added when the last fault that needed it is gone (and put back what it
    replaced)."""
    if rec.qdisc in ("adding", "added") and not qdisc_sharers(rec):
        put_back_root(rec)


def qdisc_sharers(rec: state.Record) -> list[state.Record]:
    """Our other faults on rec's link that hold the root qdisc faultinj added there."""
    return [r for r in state.records() if r.id != rec.id and same_link(r, rec.netns, rec.ifindex)
            and r.qdisc in ("adding", "added")]


def clear(ifname: str | None = None, *, netns_name: str | None = None, all_faults: bool = False,
          fault_id: str | None = None, netns_path: str | None = None, pid: int | None = None,
          container: str | None = None, runtime: str | None = None, mine: bool = False,
          name: str | None = None) -> list[Removed]:
    """Remove faults: on one interface, one by id, or all; or every fault of a container (its own
    interfaces and its veth peers), process or namespace file; or every fault applied under a name
    (a Chaos Mesh manifest's). mine: only those this user applied (state.current_user; alone: all of
    them). Returns what was removed, each with its final counters (Removed.user: whose)."""
    named = next((v for v in (container, pid, netns_path) if v is not None), None)
    if name is not None:
        if ifname or all_faults or fault_id or named is not None or netns_name is not None:
            raise SpecError("--name clears every fault applied under that name: give it alone")
        caps.require_privileges()
        with Links() as links, state.locked():
            reaped = [r for r in reap_now(links) if r.record.name == name]
            recs = [r for r in state.records() if r.name == name]
            if not recs and not reaped:
                raise StateError(f"no faults named {name} (see 'faultinj status')")
            return reaped + [_remove(links, rec) for rec in recs]
    if mine and not (ifname or fault_id or named is not None):
        all_faults = True
    if not (ifname or all_faults or fault_id or named is not None):
        raise SpecError("say what to clear: an interface, --id ID, --container NAME, --all or --mine")
    caps.require_privileges()
    me = state.current_user()

    def allowed(r: state.Record) -> bool:
        return not mine or r.user == me
    if named is not None:
        if netns_name is not None:
            raise SpecError("give --netns or --container/--pid/--netns-path, not both")
        wanted, unknown = _records_of(netns_path, pid, container, runtime)
        with Links() as links, state.locked():
            reaped = [r for r in reap_now(links) if wanted(r.record) and (not ifname or r.record.ifname == ifname)]
            recs = [r for r in state.records() if wanted(r) and (not ifname or r.ifname == ifname) and allowed(r)]
            if not recs and not reaped and unknown is not None:
                raise unknown
            if not recs and not reaped:
                raise StateError(f"no faults on {ifname + ' in ' if ifname else ''}"
                                 f"{'container ' + container if container else named} (see 'faultinj status')")
            return reaped + [_remove(links, rec) for rec in recs]


    def wanted(r: state.Record) -> bool:
        if fault_id:
            return r.id == fault_id
        if ifname:
            return r.ifname == ifname and r.netns == netns_name
        return netns_name is None or r.netns == netns_name

    with Links() as links, state.locked():
        if fault_id:   # by id alone; an interface or namespace beside it must be its own
            which.by_id(fault_id, state.records(), ifname, netns_name)
        elif ifname:   # without --netns: the one namespace with faults on ifname
            netns_name = which.netns_of(ifname, netns_name, state.records())
        reaped = [r for r in reap_now(links) if wanted(r.record)]   # what killed commands left: finished first
        recs = [r for r in state.records() if wanted(r) and allowed(r)]
        if fault_id and not recs and not reaped:
            raise StateError(f"no fault with id {fault_id} (see 'faultinj status')")
        if ifname and not fault_id and not recs and not reaped:
            netns.link_index(netns_name, ifname)  # unknown interface: say so
        return reaped + [_remove(links, rec) for rec in recs]


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


def forget(rec: state.Record) -> None:
    state.remove_pins(rec.pin_dir)
    state.delete(rec)


def _remove(links: Links, rec: state.Record) -> Removed:
    """Detach exactly what this record created, then unpin and forget it; what its maps held then.

    Copes with a fault half made or half removed by a killed process: each
    step checks the kernel first (our filter name, our program id)."""
    if rec.pending != "clear":
        rec.pending, rec.pid = "clear", os.getpid()
        state.save(rec)
    if not netns.alive(rec.netns, rec.netns_inode) or not netns.link_exists(rec.netns, rec.ifindex, rec.ifname):
        removed = _read_final(rec)   # its link is gone: nothing runs the program any more
        _forget_all(rec)
        return removed
    ipr = links.get(rec.netns)
    if rec.attach_kind == "tc-matchall":
        if rec.tc_prio is not None and rec.filter_name:
            attach.tc_detach(ipr, rec.ifindex, rec.hook, rec.tc_prio, rec.filter_name, rec.attach_mode)
    else:
        kernel_links.detach(rec)   # by program id; a link's own undo is the unpinning in forget
    # detached; once the program runs already under way have returned (an RCU grace period),
    # nothing counts after this
    try:
        maps.wait_for_running_programs()
    except FaultinjError:   # a nohz_full kernel: the counters may miss a packet in flight, no more
        pass
    removed = _read_final(rec)
    if rec.hook == "xdp":
        forget(rec)
        return removed
    put_back_failed = None
    try:
        _release_qdisc(rec)   # after the filter: no packet gets a departure time with nothing to honour it
    except StateError as exc:   # the fault is gone all the same: say what to put back by hand
        put_back_failed = exc
    forget(rec)
    others = [r for r in state.records() if r.hook != "xdp" and same_link(r, rec.netns, rec.ifindex)]
    if not others and state.clsact_created(rec.netns, rec.ifindex):
        if attach.remove_clsact_if_empty(ipr, rec.ifindex) or not attach.has_clsact(ipr, rec.ifindex):
            state.forget_link(rec.netns, rec.ifindex)
    if put_back_failed:
        raise put_back_failed
    return removed


def _read_final(rec: state.Record) -> Removed:
    """The counters and lost journal events of a fault no longer run, from its pins, before they go."""
    counters, lost, _ = maps.read_pinned(rec.pin_dir)
    return Removed(rec, counters, lost)


def _forget_all(rec: state.Record) -> None:
    forget(rec)
    state.forget_link(rec.netns, rec.ifindex)


def reap_now(links: Links, leftovers_only: bool = False) -> list[Removed]:
    """Finish what killed processes left (see Record.pending, and labs of a killed run), remove faults
    past their deadline (their programs already pass everything) and faults whose namespace or
    interface is gone; each said as a note. leftovers_only: only what killed processes left."""
    dead_namespaces = set(labrecords.reap_orphans())
    now = time.monotonic_ns()
    done = []
    for rec in state.records():
        if rec.netns in dead_namespaces or (not leftovers_only and _target_gone(links, rec)):
            _forget_all(rec)   # the namespace took the program's attachment with it: only our files remain
            removed = Removed(rec)
            why = ("its lab's 'faultinj run' was killed (lab removed)" if rec.netns in dead_namespaces
                   else "its namespace or interface is gone")
        elif rec.pending == "set":
            maps.write_record(rec)
            rec.pending = rec.pid = None
            state.save(rec)
            note("finished the 'set' of %s (%s on %s) that a killed faultinj process left", rec.id,
                        rec.spec, rec.where)
            continue
        elif rec.pending in ("apply", "clear") or (not leftovers_only and rec.expired(now)):
            why = f"left by a killed faultinj process (pid {rec.pid})" if rec.pending else "past its deadline"
            removed = _remove(links, rec)
        else:
            continue
        note("removed %s (%s on %s): %s", rec.id, rec.spec, rec.where, why)
        done.append(removed)
    return done


def _target_gone(links: Links, rec: state.Record) -> bool:
    """The fault's namespace has gone (a named one deleted, a container's or process's gone, or its PID
    now names another namespace), or the far end of an exited container's veth went with it."""
    if rec.netns is not None and not netns.alive(rec.netns, rec.netns_inode):
        return True
    if rec.container and netns.alive(rec.netns, rec.netns_inode):
        # by index only: a link renamed inside the container still holds our filter
        return rec.ifindex not in links.cached(("links", rec.netns), lambda: netns.links(rec.netns))
    return False


def reap() -> list[Removed]:
    caps.require_privileges()
    with Links() as links, state.locked():
        return reap_now(links)


def whose(removed: list[Removed]) -> str:
    """Whose faults these are, for a shared machine: '2 yours, 1 bob's'."""
    me = state.current_user()
    counts: dict[str, int] = {}
    for r in removed:
        counts[r.user] = counts.get(r.user, 0) + 1
    said = {me: "yours", "": "applied before faultinj recorded who"}
    return ", ".join(f"{counts[u]} {said.get(u, u + chr(39) + 's')}"
                     for u in sorted(counts, key=lambda u: (u != me, u == "", u)))
