"""What a run collected (RunData) and the measurements the expectation kinds (expectations.py) judge
it by. Pure: no kernel."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from .. import stats
from ..faults.time_faults import delay_model
from ..packets import Packet
from ..verdict import Check, bounds_check
from .predicates import compile_predicate


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
    # (host, traffic name or None for the whole run) -> how much each kernel counter grew meanwhile
    kernel_counters: dict[tuple, dict[str, int]] = field(default_factory=dict)


def probability(params: dict) -> float:
    return float(params["p"]) if "p" in params else 1.0 / params["ratio"]


def select(data: RunData, params: dict, key: str = "of") -> list[Packet]:
    pred = compile_predicate(params.get(key, "all"))
    return [p for p in data.packets.get(params["capture"], []) if pred(p)]


def select_timed(data: RunData, params: dict) -> tuple[list[Packet], list[float]]:
    """The selected packets of a capture and their arrival times (s)."""
    pred = compile_predicate(params.get("of", "all"))
    pkts = data.packets.get(params["capture"], [])
    times = data.times.get(params["capture"]) or [0.0] * len(pkts)
    sel = [(p, t) for p, t in zip(pkts, times) if pred(p)]
    return [p for p, _ in sel], [t for _, t in sel]


def evaluate(e, data: RunData) -> Check:
    """Judge what a run collected by one expectation (a schema.ExpectEntry): its kind's class
    (expectations.py) does."""
    return e.expectation.evaluate(e.params, data)


def throughput_bps(data: RunData, capture: str, of: str) -> float | None:
    """Data bits per second of the selected packets at a capture, first data segment to last."""
    pred = compile_predicate(of)
    pkts = [(t, p.payload_len) for p, t in zip(data.packets.get(capture, []), data.times.get(capture, []))
            if pred(p) and p.payload_len]
    if len(pkts) < 2 or pkts[-1][0] <= pkts[0][0]:
        return None
    return sum(n for _, n in pkts[1:]) * 8 / (pkts[-1][0] - pkts[0][0])


def echo_delays_ns(data: RunData, capture: str) -> list[tuple[float, Packet]]:
    """Each ICMP echo reply's time after its request, at one capture (the replying host's: one
    clock), with the reply."""
    asked: dict[tuple, float] = {}
    out = []
    for p, t in zip(data.packets.get(capture, []), data.times.get(capture, [])):
        key = (p.version, p.echo_id, p.echo_seq)
        if (p.proto, p.icmp_type) in ((1, 8), (58, 128)):
            asked.setdefault(key, t)
        elif (p.proto, p.icmp_type) in ((1, 0), (58, 129)) and key in asked:
            out.append(((t - asked.pop(key)) * 1e9, p))
    return out


def delay_check(prm: dict, pairs: list[tuple[float, Packet]], journal: list, conf: float,
                reference: list = ()) -> Check:
    """The replies the fault's journal names as delayed fit the fault's distribution plus the host's
    own time (KS at conf), and for D >= 10 ms their mean less that time is within 5% of the
    distribution's mean. The host's own time: how much later than their constant delay the replies
    of the reference fault left (a held packet waits for a timer: an emulated, busy guest is late),
    else the time it took to answer the replies no fault held."""
    m = prm["model"]
    cdf, mean = delay_model(m["delay_ns"], m["jitter_ns"], m["dist"])
    held = Counter(e.key() for e in journal)
    delayed = [d for d, p in pairs if held[p.journal_key()]]
    if prm.get("reference"):
        ref = Counter(e.key() for e in reference)
        base = [d - prm["reference_ns"] for d, p in pairs if ref[p.journal_key()]] or [0.0]
    else:
        base = [d for d, p in pairs if not held[p.journal_key()]] or [0.0]
    n = len(delayed)
    # P(held + own time <= x), the own time drawn from the undelayed replies
    d = stats.ks_statistic(delayed, lambda x: sum(cdf(x - b) for b in base) / len(base)) if n else 1.0
    pval = stats.ks_pvalue(d, n) if n else 0.0
    own = sum(base) / len(base)
    added = sum(delayed) / n - own if n else 0.0
    check_mean = m["delay_ns"] >= 10_000_000
    ok = n >= 50 and n == len(journal) and pval > 1 - conf and (not check_mean or abs(added - mean) <= 0.05 * mean)
    return Check(f"delay: echo reply after request at {prm['capture']} ~ {prm['fault']}'s "
                 f"{m['dist']} {m['delay_ns'] / 1e6:g}±{m['jitter_ns'] / 1e6:g} ms",
                 ok, f"{n} delayed of {len(pairs)} replies ({len(journal)} in the journal): KS D={d:.3f} "
                     f"p={pval:.3g}, mean added {added / 1e6:.2f} ms (own time {own / 1e6:.2f} ms"
                     + (f", from {len(base)} replies of {prm['reference']}" if prm.get("reference") else "") + ")",
                 f"all journal's, >= 50, p > {1 - conf:.3g}" + (f", mean added {mean / 1e6:.2f} ms ± 5%"
                                                                  if check_mean else ""))


_FLAG_LETTERS = (("S", 0x02), ("F", 0x01), ("R", 0x04), ("P", 0x08), ("U", 0x20), ("E", 0x40), ("W", 0x80),
                 (".", 0x10))


def flags_text(flags: int | None) -> str:
    """TCP flags as tcpdump writes them: P. is PSH+ACK, S SYN, . ACK."""
    return "".join(ch for ch, bit in _FLAG_LETTERS if (flags or 0) & bit) or "none"


@dataclass
class LateSegment:
    """A data segment that arrived after a later one of its connection."""
    packet: Packet
    sport: int
    dport: int
    seq: int            # as on the wire
    rel_seq: int        # from the connection's first data byte seen
    length: int
    flags: str          # tcpdump's letters
    overtaken_by: int   # new segments of later sequence that arrived before it
    late_ms: float      # after the first of those
    first: bool         # it is its connection's first data segment (the lowest sequence number)

    def describe(self) -> str:
        return (f"{self.sport}>{self.dport} seq +{self.rel_seq} len {self.length} [{self.flags}] "
                f"after {self.overtaken_by} later, {self.late_ms:.1f} ms late"
                + (" (first data)" if self.first else ""))

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "packet"}


def late_segments(packets: list[Packet], times: list[float] | None = None) -> dict[tuple, list[LateSegment]]:
    """Per TCP connection (one direction, in the order connections were first seen), the data
    segments that arrived after a segment with a later sequence number. Retransmissions of what
    already arrived are not late: they start below the highest end seen but were sent again, so
    only segments never seen before count. A connection whose segments all came in order is
    there with an empty list."""
    times = times if times is not None else [0.0] * len(packets)
    top: dict[tuple, int] = {}
    seen: dict[tuple, set] = {}
    arrived: dict[tuple, list[tuple[int, float]]] = {}   # new segments: (seq, time)
    lowest: dict[tuple, int] = {}
    found: dict[tuple, list[tuple[Packet, float, list]]] = {}
    for p, t in zip(packets, times):
        if p.tcp_flags is None or not p.payload_len:
            continue
        conn = (p.src, p.dst, p.sport, p.dport)
        found.setdefault(conn, [])
        if conn not in lowest or seq_before(p.seq, lowest[conn]):
            lowest[conn] = p.seq
        if p.seq in seen.setdefault(conn, set()):
            continue   # a retransmission
        seen[conn].add(p.seq)
        end = (p.seq + p.payload_len) & 0xFFFFFFFF
        if conn in top and seq_before(p.seq, top[conn]):
            found[conn].append((p, t, [u for s, u in arrived[conn] if seq_before(p.seq, s)]))
        arrived.setdefault(conn, []).append((p.seq, t))
        if conn not in top or seq_before(top[conn], end):
            top[conn] = end
    return {conn: [LateSegment(p, p.sport, p.dport, p.seq, (p.seq - lowest[conn]) & 0xFFFFFFFF, p.payload_len,
                               flags_text(p.tcp_flags), len(over), (t - min(over)) * 1e3 if over else 0.0,
                               p.seq == lowest[conn])
                   for p, t, over in v]
            for conn, v in found.items()}


def connection_throughputs(data: RunData, capture: str, of: str) -> list[tuple[tuple, float]]:
    """Per TCP connection (one direction) of the selected packets at a capture: its data bits per
    second, from its first packet there after its SYN (the handshake's ACK) to its last data
    segment, data counted once (a retransmission adds nothing). The SYN is left out: every
    connection's SYN can cost the same (an upcall in a switch, a slow first packet), which would
    dilute what the data phase alone shows. Connections in the order first seen."""
    pred = compile_predicate(of)
    span: dict[tuple, list] = {}   # conn -> [first time, last data time, bytes, seqs seen]
    for p, t in zip(data.packets.get(capture, []), data.times.get(capture, [])):
        if p.tcp_flags is None or not pred(p) or p.tcp_flags & 0x02:
            continue
        conn = (p.src, p.dst, p.sport, p.dport)
        s = span.setdefault(conn, [t, None, 0, set()])
        if p.payload_len and p.seq not in s[3]:
            s[3].add(p.seq)
            s[2] += p.payload_len
            s[1] = t
    return [(c, s[2] * 8 / (s[1] - s[0])) for c, s in span.items() if s[1] is not None and s[1] > s[0]]


def throughput_ratio(a: list[float], b: list[float], confidence: float) -> tuple[float, float, float]:
    """The ratio of the geometric means of a and b, and its confidence interval: throughput noise is
    multiplicative (a busy machine slows a transfer by a factor), so the means and their standard
    errors are taken on the logarithms (independent samples: the two variances of the means add),
    and the interval is brought back by exp."""
    la, lb = [math.log(x) for x in a], [math.log(x) for x in b]
    ma, mb = sum(la) / len(la), sum(lb) / len(lb)
    va = sum((x - ma) ** 2 for x in la) / (len(la) - 1)
    vb = sum((x - mb) ** 2 for x in lb) / (len(lb) - 1)
    se = (va / len(la) + vb / len(lb)) ** 0.5
    z = stats.z_for(confidence)
    return math.exp(ma - mb), math.exp(ma - mb - z * se), math.exp(ma - mb + z * se)


def throughput_ratio_check(prm: dict, faulted: list, control: list, conf: float) -> Check:
    """The selected connections' throughput over the control's (geometric means), with its
    confidence interval: the whole interval below max (it fell) / above min."""
    a, b = [x for _, x in faulted if x > 0], [x for _, x in control if x > 0]
    name = f"throughput_ratio: per-connection throughput of {prm['of']} / of {prm['control']} at {prm['capture']}"
    want = " and ".join(([f"<= {prm['max']}"] if "max" in prm else []) + ([f">= {prm['min']}"] if "min" in prm else []))
    expected = f"the {stats.percent(conf)} interval {want}, >= 2 connections each"
    if len(a) < 2 or len(b) < 2:
        return Check(name, False, f"{len(a)} and {len(b)} connections with data", expected)
    r, lo, hi = throughput_ratio(a, b, conf)
    ok = ("max" not in prm or hi <= prm["max"]) and ("min" not in prm or lo >= prm["min"])

    def told(xs):
        return (f"{math.exp(sum(math.log(x) for x in xs) / len(xs)) / 1e6:.1f} Mbit/s "
                f"({min(xs) / 1e6:.1f}..{max(xs) / 1e6:.1f}) over {len(xs)}")
    return Check(name, ok, f"{r:.3f} [{lo:.3f}, {hi:.3f}] ({told(a)} / {told(b)})", expected, (lo, hi))


def counter_value(counters: dict[str, int], name: str) -> int | None:
    """A kernel counter by its dotted name (TcpExt.TCPOFOQueue) or nstat's (TcpExtTCPOFOQueue)."""
    if name in counters:
        return counters[name]
    return next((v for k, v in counters.items() if k.replace(".", "") == name), None)


def kernel_counter_check(prm: dict, grown: dict[tuple, dict[str, int]]) -> Check:
    """How much a host's kernel counter grew over the named traffic (each entry's own span, added),
    or over the whole run."""
    spans = prm.get("traffic")
    spans = [None] if spans is None else [spans] if isinstance(spans, str) else list(spans)
    values = [counter_value(grown.get((prm["host"], t), {}), prm["counter"]) for t in spans]
    total = None if any(v is None for v in values) else sum(values)
    during = f" during {', '.join(spans)}" if spans != [None] else ""
    check = bounds_check(f"kernel_counter: {prm['counter']} at {prm['host']}{during}", total,
                         prm.get("equals"), prm.get("min"), prm.get("max"))
    if total is None:
        check.observed = "no such counter (or not read)"
    return check


def seq_before(a: int, b: int) -> bool:
    """TCP sequence order, with wrap-around."""
    return ((a - b) & 0xFFFFFFFF) > 0x7FFFFFFF


def passes_through(journey: list, fault_id: str, through: list[str]) -> bool:
    """The fault acted on this packet, and after that its hops pass each point of through in order."""
    hops = sorted(journey, key=lambda h: h.ts_ns)
    # ACT: it changed the packet; DUP: it copied it (a drop ends the journey)
    i = next((n for n, h in enumerate(hops) if h.direction in ("ACT", "DUP") and fault_id in h.fault), None)
    if i is None:
        return False
    want = list(through)
    for h in hops[i + 1:]:
        if want and h.point.startswith(want[0]):
            want.pop(0)
    return not want
