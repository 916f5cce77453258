"""`status`: each fault's state (is its program still attached where it was put?) and counters."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .inject import advice, state
from .kernel import attach, caps, maps, netns
from .kernel import links as kernel_links
from .kernel.netns import Links
from .removal import reap_now
from .inject import custom

@dataclass
class FaultStatus:
    record: state.Record
    state: str            # active | expired | gone | detached
    detail: str
    counters: dict[str, int] | None
    maps: list[dict] | None = None   # a custom program's own maps (it has no faultinj counters)
    journal_lost: int = 0            # journal events no longer kept (it keeps the last 4096, overwrites)
    refused: int = 0                 # packets chosen but the kernel refused the change (not in acted)
    warnings: list[str] | None = None   # what keeps it from acting now (inject/advice.py)

    @property
    def mechanism(self) -> str | None:
        """How a time fault's packets are held, in words (None for other faults)."""
        rec = self.record
        if not rec.qdisc:
            return None
        whose = "added by faultinj" if rec.qdisc in ("adding", "added") else "another tool's, left as it is"
        saved = (f", in place of '{rec.qdisc_saved['kind']}' (put back at clear)" if rec.qdisc_saved else "")
        return f"earliest departure time: BPF sets skb->tstamp, the fq root qdisc ({whose}{saved}) holds the packet"

    def to_json(self) -> dict:
        d = self.record.to_json()
        d.update(state=self.state, detail=self.detail, counters=self.counters, journal_lost=self.journal_lost,
                 refused=self.refused, warnings=self.warnings or [], mechanism=self.mechanism)
        if self.maps is not None:
            d["maps"] = self.maps
        if self.record.deadline_ns:
            d["remaining_s"] = max(0.0, (self.record.deadline_ns - time.monotonic_ns()) / 1e9)
        return d


def _attachment_state(links: Links, rec: state.Record) -> tuple[str, str]:
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
    if rec.attach_kind == "tc-matchall":
        ours = links.cached(("tc", rec.netns, rec.ifindex, rec.hook), lambda: {
            (attach.filter_prio(f), attach.filter_name(f)) for f in attach.filters(ipr, rec.ifindex, rec.hook)})
        if (rec.tc_prio, rec.filter_name) not in ours:
            return "detached", "its tc filter was removed by something else"
    else:
        with netns.entered(rec.netns):
            ok, why = kernel_links.attached(rec)
        if not ok:
            return "detached", why
    if rec.expired():
        return "expired", "past its deadline: passes everything; the next faultinj command removes it"
    return "active", ""


def status(netns_name: str | None = None, all_namespaces: bool = True,
           fault_id: str | None = None) -> list[FaultStatus]:
    """Every fault's state and counters; those of one namespace (all_namespaces=False); or one fault.
    First it finishes what killed commands left (as every command does: see removal.reap_now)."""
    caps.require_privileges()
    out = []
    with Links() as links, state.locked():
        reap_now(links, leftovers_only=True)   # a fault gone or expired stays listed as such
        for rec in state.records():
            if (not all_namespaces and rec.netns != netns_name) or fault_id not in (None, rec.id):
                continue
            st, detail = _attachment_state(links, rec)
            if rec.custom:
                out.append(FaultStatus(rec, st, detail, None, custom.pinned_maps(rec.pin_dir)))
            else:
                counters, lost, refused = maps.read_pinned(rec.pin_dir)  # None: pins gone (status says why)
                found = (advice.warnings(links.get(rec.netns), rec, seen=(counters or {}).get("seen"))
                         if st == "active" else [])
                out.append(FaultStatus(rec, st, detail, counters, journal_lost=lost, refused=refused,
                                       warnings=found))
    return out


def fault_status(fault_id: str) -> FaultStatus | None:
    """One fault's status (its counters: .counters), None when there is no such fault."""
    return next(iter(status(fault_id=fault_id)), None)
