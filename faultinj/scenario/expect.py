"""Evaluate a scenario's expectations on what a run collected. Pure: no kernel."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .. import stats
from ..packets import Packet
from ..verdict import CONFIDENCE, Check, bounds_check, equal_check, ratio_check
from .predicates import compile_predicate
from .schema import ExpectEntry


@dataclass
class RunData:
    packets: dict[str, list[Packet]] = field(default_factory=dict)      # capture -> packets
    times: dict[str, list[float]] = field(default_factory=dict)         # capture -> each packet's time (s)
    capture_drops: dict[str, int] = field(default_factory=dict)
    traffic: dict[str, object] = field(default_factory=dict)            # traffic -> result
    counters: dict[str, dict[str, int]] = field(default_factory=dict)   # fault -> counters
    csum_errors: dict[str, int] = field(default_factory=dict)           # host -> new checksum errors
    journal: dict[str, list] = field(default_factory=dict)              # fault -> journal events
    journal_lost: dict[str, int] = field(default_factory=dict)          # fault -> events overwritten before read
    ovs: dict[str, dict] = field(default_factory=dict)                  # OVS bridge -> rules' stats, megaflows
    journeys: list[list] = field(default_factory=list)                  # trace: each traced packet's hops
    fault_ids: dict[str, str] = field(default_factory=dict)             # fault -> its id (journey labels)


def _p(params: dict) -> float:
    return float(params["p"]) if "p" in params else 1.0 / params["ratio"]


def _select(data: RunData, params: dict, key: str = "of") -> list[Packet]:
    pred = compile_predicate(params.get(key, "all"))
    return [p for p in data.packets.get(params["capture"], []) if pred(p)]


def evaluate(e: ExpectEntry, data: RunData) -> Check:
    k, prm = e.kind, e.params
    conf = float(prm.get("confidence", CONFIDENCE))
    if k == "fraction":
        base = _select(data, prm)
        having = compile_predicate(prm["having"])
        hit = sum(1 for p in base if having(p))
        return ratio_check(f"fraction: {prm['having']} among {prm.get('of', 'all')} at {prm['capture']}",
                           hit, len(base), _p(prm), conf)
    if k == "fault_ratio":
        c = data.counters.get(prm["fault"], {})
        return ratio_check(f"fault_ratio: acted/matched of {prm['fault']}", c.get("acted", 0), c.get("matched", 0),
                           _p(prm), conf)
    if k == "uniform":
        lo, hi = prm["range"]
        values = [getattr(p, prm["field"]) for p in _select(data, prm)]
        counts = Counter(values)
        chi, df, pval = stats.chi2_uniform([counts.get(v, 0) for v in range(lo, hi + 1)])
        outside = sum(1 for v in values if v is None or not lo <= v <= hi)
        return Check(f"uniform: {prm['field']} of {prm.get('of', 'all')} at {prm['capture']} over {lo}..{hi}",
                     bool(values) and outside == 0 and pval > 1 - conf,
                     f"n={len(values)} outside={outside} chi2={chi:.1f} df={df} p={pval:.3g}",
                     f"all in {lo}..{hi}, p > {1 - conf:.3g}")
    if k == "loss":
        r = data.traffic.get(prm["traffic"])
        sent = r.sent if r else 0
        lost = sent - len(r.received) if r else 0
        return ratio_check(f"loss of {prm['traffic']}", lost, sent, _p(prm), conf)
    if k == "tcp_intact":
        r = data.traffic.get(prm["traffic"])
        return Check(f"tcp_intact: {prm['traffic']}", bool(r and r.intact),
                     f"{r.received if r else 0} bytes received", f"{r.sent if r else '?'} bytes, same SHA-256")
    if k == "tcp_stalled":
        r = data.traffic.get(prm["traffic"])
        return Check(f"tcp_stalled: {prm['traffic']}", bool(r) and r.received < r.sent,
                     f"{r.received if r else 0} of {r.sent if r else '?'} bytes received",
                     "fewer than all: the transfer did not complete")
    if k == "ovs_rule":
        rule = data.ovs.get(prm["bridge"], {}).get("rules", [])[prm["rule"]:][:1]
        n = rule[0]["n_packets"] if rule and rule[0]["found"] else None
        what = f"ovs_rule: packets of {prm['bridge']} flows[{prm['rule']}]" + (f" ({rule[0]['flow']})" if rule else "")
        if "at_least_acted" in prm:
            acted = data.counters.get(prm["at_least_acted"], {}).get("acted")
            low = max(acted or 0, prm.get("min", 0))
            return Check(what, n is not None and acted is not None and n >= low and
                         (prm.get("max") is None or n <= prm["max"]),
                         f"{n} packets" + ("" if n is not None else " (rule not found)"),
                         f">= acted of {prm['at_least_acted']} ({acted})"
                         + (f", >= {prm['min']}" if "min" in prm else "")
                         + (f", <= {prm['max']}" if "max" in prm else ""))
        return bounds_check(what, n, prm.get("equals"), prm.get("min"), prm.get("max"))
    if k == "checksum_errors":
        return equal_check(f"checksum_errors at {prm['host']} (Tcp+Udp InCsumErrors)",
                           data.csum_errors.get(prm["host"]), prm.get("equals", 0))
    if k == "capture_checksums":
        pkts = _select(data, prm)
        bad = sum(1 for p in pkts if p.ip_csum_ok is False or p.l4_csum_ok is False)
        unchecked = sum(1 for p in pkts if p.l4_csum_ok is None)
        return Check(f"capture_checksums: {prm.get('of', 'all')} at {prm['capture']}", bool(pkts) and bad == 0,
                     f"{bad} bad of {len(pkts)} ({unchecked} cut short by snaplen)", "0 bad")
    if k == "exit_code":
        r = data.traffic.get(prm["traffic"])
        return equal_check(f"exit_code of {prm['traffic']}", getattr(r, "returncode", None), prm.get("equals", 0))
    if k == "count":
        return bounds_check(f"count: {prm.get('of', 'all')} at {prm['capture']}", len(_select(data, prm)),
                            prm.get("equals"), prm.get("min"), prm.get("max"))
    if k == "counter":
        c = data.counters.get(prm["fault"], {})
        return bounds_check(f"counter {prm['counter']} of {prm['fault']}", c.get(prm["counter"]),
                            prm.get("equals"), prm.get("min"), prm.get("max"))
    if k == "traced_drops":
        fid = data.fault_ids.get(prm["fault"], "?")
        drops = sum(1 for j in data.journeys for h in j
                    if h.direction == "DROP" and h.reason == "faultinj" and fid in h.fault)
        return bounds_check(f"traced packets dropped by {prm['fault']} (labelled from its journal)", drops,
                            prm.get("equals"), prm.get("min"), prm.get("max"))
    if k == "counters_match_capture":
        base = _select(data, prm)
        having = compile_predicate(prm["having"])
        hit = sum(1 for p in base if having(p))
        c = data.counters.get(prm["fault"], {})
        natural = len(base) - c.get("matched", 0)
        return equal_check(f"counters_match_capture: {prm['having']} at {prm['capture']} = "
                           f"(not eligible) + acted by {prm['fault']}", hit, natural + c.get("acted", 0))
    if k == "first_segments":
        # per TCP connection (5-tuple, one direction), the data segment with the lowest sequence number
        first: dict[tuple, Packet] = {}
        for p in data.packets.get(prm["capture"], []):
            if p.tcp_flags is None or not p.payload_len:
                continue
            conn = (p.src, p.dst, p.sport, p.dport)
            if conn not in first or _seq_before(p.seq, first[conn].seq):
                first[conn] = p
        having = compile_predicate(prm["having"])
        hit = sum(1 for p in first.values() if having(p))
        want = prm.get("connections", len(first))
        return Check(f"first_segments: {prm['having']} on the first data segment of each connection at "
                     f"{prm['capture']}", len(first) == want and hit == want and want > 0,
                     f"{hit} of {len(first)} connections", f"all {want}")
    if k == "out_of_order":
        # per TCP connection (one direction), the data segments that arrived after a later one
        late = out_of_order(data.packets.get(prm["capture"], []))
        want = prm.get("per_connection", 1)
        conns = prm.get("connections", len(late))
        counts = sorted(Counter({c: len(v) for c, v in late.items()}).values())
        ok = len(late) == conns and conns > 0 and all(n == want for n in counts)
        return Check(f"out_of_order: {want} late data segment(s) per connection at {prm['capture']}", ok,
                     f"{len(late)} connections, late segments per connection: {counts[:20]}",
                     f"{conns} connections, {want} each")
    if k == "journal_matches":
        having = compile_predicate(prm["having"])
        seen = Counter(p.journal_key() for p in _select(data, prm) if having(p))
        journal = Counter(e.key() for e in data.journal.get(prm["fault"], []))
        lost = data.journal_lost.get(prm["fault"], 0)
        both = sum((seen & journal).values())
        return Check(f"journal_matches: {prm['having']} at {prm['capture']} = what {prm['fault']}'s journal recorded",
                     seen == journal and lost == 0 and both > 0,
                     f"{sum(seen.values())} seen, {sum(journal.values())} recorded, {both} in both"
                     + (f", {lost} events lost" if lost else ""),
                     "the same packets, at least one")
    raise AssertionError(f"unhandled expectation {k}")


def out_of_order(packets: list[Packet]) -> dict[tuple, list[Packet]]:
    """Per TCP connection (one direction), the data segments that arrived after a segment with a
    later sequence number (retransmissions of what already arrived are not late: they start below
    the highest end seen but were sent again, so count only segments never seen before)."""
    top: dict[tuple, int] = {}
    seen: dict[tuple, set] = {}
    late: dict[tuple, list[Packet]] = {}
    for p in packets:
        if p.tcp_flags is None or not p.payload_len:
            continue
        conn = (p.src, p.dst, p.sport, p.dport)
        late.setdefault(conn, [])
        if p.seq in seen.setdefault(conn, set()):
            continue   # a retransmission
        seen[conn].add(p.seq)
        end = (p.seq + p.payload_len) & 0xFFFFFFFF
        if conn in top and _seq_before(p.seq, top[conn]):
            late[conn].append(p)
        if conn not in top or _seq_before(top[conn], end):
            top[conn] = end
    return late


def _seq_before(a: int, b: int) -> bool:
    """TCP sequence order, with wrap-around."""
    return ((a - b) & 0xFFFFFFFF) > 0x7FFFFFFF
