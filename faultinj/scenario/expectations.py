"""The expectation kinds: one class each, owning what a file may say (its keys, their meanings, its
checks of them), how a run is judged by it (a Check) and what the report draws for it (a plot, or
None). Each class registers itself under its kind in KINDS when it is defined; the schema
(schema.py), the evaluation (expect.evaluate), the plots (plots.plot_for), the reference
(docs/scenarios.md) and the runner look a kind up there and never name one. A new kind is one class
here. Pure: no kernel.

The schema's part of a kind, in the order an entry is checked (the first mistake in an entry is the
one told): its keys (schema.py, from `keys` and `required`), the entries its keys name (`refers`),
then `validate`. The base class's `validate` checks the keys every kind means the same by: packet
predicates (of, having), a rate (p or ratio), confidence; a kind checks its own keys before those
(`refer`, its own, `common`) or after (`super().validate`, its own)."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .. import stats
from ..errors import SpecError
from ..faults.time_faults import ns_of, parse_rate
from ..packets import Packet
from ..verdict import Check, bounds_check, equal_check, ratio_check
from .expect import (RunData, connection_throughputs, delay_check, echo_delays_ns, kernel_counter_check,
                     late_segments, passes_through, probability, select, select_timed, seq_before, throughput_bps,
                     throughput_ratio, throughput_ratio_check)
from .plots import bursts, late_plot, ratio_curve, selected_with_times
from .predicates import compile_predicate

KINDS: dict[str, "Expectation"] = {}   # kind -> its one instance, in the order defined (the docs' order)

# keys that name another entry of the file, in the order checked, and what they name
REFERS = (("fault", "fault"), ("traffic", "traffic"), ("capture", "capture"), ("host", "host"),
          ("bridge", "bridge"), ("at_least_acted", "fault"), ("reference", "fault"))

_RATE = "the expected probability, 0..1 (or ratio)"
_RATIO = "the expected rate as one in N (or p)"
_CONF = "the confidence level, 0.5..1 (default 0.999, or $FAULTINJ_CONFIDENCE; run --confidence)"
_OF = "a packet predicate: which packets count (default all)"
_BOUNDS = {"equals": "exactly", "min": "at least", "max": "at most"}


@dataclass
class Entries:
    """The rest of the file, as the checks of an expectation that name its entries need it."""
    refs: dict[str, Any]   # fault, traffic, capture, bridge -> their names; host -> schema's hosts (.ref)
    traffic: list          # schema.TrafficEntry
    lab: Any               # inject.lab.TopologySpec
    faults: list           # schema.FaultEntry
    traced: bool           # the file has trace:


class Expectation:
    kind = ""                               # its name in a file: expect: [{KIND: {...}}]
    what = ""                               # what it checks (docs/scenarios.md, `faultinj run --schema`)
    keys: dict[str, str] = {}               # every key it takes -> what it means, in the docs' order
    required: frozenset[str] = frozenset()  # those a file must give (the rest are optional)
    refers = REFERS                         # its keys that name another entry of the file
    journals: tuple[str, ...] = ()          # keys naming faults whose journal the run must keep
    reads: str = ""                         # what the run reads from its host at the start and the end:
                                            # csum_errors or kernel_counters (a Host verb's name)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            if not set(cls.required) <= set(cls.keys):
                raise TypeError(f"expectation {cls.kind}: required {set(cls.required) - set(cls.keys)} not in keys")
            KINDS[cls.kind] = cls()

    @property
    def optional(self) -> set[str]:
        return set(self.keys) - set(self.required)

    # ---- the schema -------------------------------------------------------------------------
    def validate(self, ctx, prm, entries: Entries, mark) -> None:
        """Check an entry's settings (prm, a schema.YMap whose keys the schema checked) with ctx
        (schema._Ctx: ctx.fail tells a mistake at a position); mark: the entry's position."""
        self.refer(ctx, prm, entries)
        self.common(ctx, prm)

    def refer(self, ctx, prm, entries: Entries) -> None:
        for key, what in self.refers:
            if key == "host" and key in prm:
                prm[key] = entries.refs["host"].ref(ctx, prm, key, self.kind)
            elif key in prm:
                ctx.ref(prm, key, entries.refs[what], what, self.kind)

    def common(self, ctx, prm) -> None:
        """The keys every kind means the same by."""
        kind = self.kind
        for key in ("of", "having"):
            if key in prm:
                try:
                    compile_predicate(prm[key])
                except SpecError as exc:
                    ctx.fail(prm.value_marks[key], f"{kind}.{key}: {exc}")
        if {"p", "ratio"} & set(self.keys):
            if "p" in prm and "ratio" in prm:
                ctx.fail(prm.mark, f"{kind}: give p or ratio, not both")
            if "p" not in prm and "ratio" not in prm:
                ctx.fail(prm.mark, f"{kind} needs p (a probability) or ratio (one in N)")
            if "p" in prm:
                p = ctx.typed(prm, "p", (int, float), kind)
                if not 0 <= p <= 1:
                    ctx.fail(prm.value_marks["p"], f"{kind}.p must be 0..1")
            if "ratio" in prm:
                ctx.whole(prm, "ratio", kind, 1, 1, 10**9)
        if "confidence" in prm:
            c = ctx.typed(prm, "confidence", float, kind)
            if not stats.confidence_ok(c):
                ctx.fail(prm.value_marks["confidence"], f"{kind}.confidence must be in [0.5, 1)")

    def bounds(self, ctx, prm, hi: int) -> None:
        for key in ("equals", "min", "max"):
            if key in prm:
                ctx.whole(prm, key, self.kind, 0, 0, hi)

    def traffic_of(self, ctx, prm, entries: Entries, kind: str, message: str) -> None:
        t = next((t for t in entries.traffic if t.name == prm["traffic"]), None)   # None: its mistake is told
        if t is not None and t.kind != kind:
            ctx.fail(prm.value_marks["traffic"], message.format(t=t))

    def needs_trace(self, ctx, entries: Entries, mark) -> None:
        if not entries.traced:
            ctx.fail(mark, f"{self.kind}: the scenario traces nothing: add trace: {{filter: ..., count: N}}")

    # ---- the run ------------------------------------------------------------------------------
    def evaluate(self, prm: dict, data: RunData) -> Check:
        raise NotImplementedError(self.kind)

    def plot(self, prm: dict, data: RunData) -> dict | None:
        """What the report draws, or None where a single number is the whole answer."""
        return None


def _conf(prm: dict) -> float:
    return float(prm["confidence"]) if "confidence" in prm else stats.default_confidence()


class Fraction(Expectation):
    kind = "fraction"
    what = ("the share of the selected packets at a capture that have a property is p: p inside the Wilson interval "
            "of what was seen (no packet selected: a failure that says so)")
    keys = {"capture": "the capture", "having": "the property, a packet predicate (e.g. psh)", "of": _OF,
            "p": _RATE, "ratio": _RATIO, "confidence": _CONF}
    required = frozenset({"capture", "having"})

    def evaluate(self, prm, data):
        base = select(data, prm)
        having = compile_predicate(prm["having"])
        hit = sum(1 for p in base if having(p))
        return ratio_check(f"fraction: {prm['having']} among {prm.get('of', 'all')} at {prm['capture']}",
                           hit, len(base), probability(prm), _conf(prm),
                           f"no packet matched `{prm.get('of', 'all')}` at {prm['capture']}")

    def expected_share(self, prm, data, pkts) -> float:
        return probability(prm)

    def plot(self, prm, data):
        pkts, times = selected_with_times(data, prm)
        having = compile_predicate(prm["having"])
        curve = ratio_curve([having(q) for q in pkts], times, self.expected_share(prm, data, pkts), _conf(prm))
        return {"kind": "ratio", "what": f"{prm['having']} among {prm.get('of', 'all')}", "xlabel": "seconds",
                **curve}


class FaultRatio(Expectation):
    kind = "fault_ratio"
    what = "the fault's acted/matched counters show its rate (Wilson interval)"
    keys = {"fault": "the fault", "p": _RATE, "ratio": _RATIO, "confidence": _CONF}
    required = frozenset({"fault"})

    def evaluate(self, prm, data):
        c = data.counters.get(prm["fault"], {})
        return ratio_check(f"fault_ratio: acted/matched of {prm['fault']}", c.get("acted", 0), c.get("matched", 0),
                           probability(prm), _conf(prm), f"{prm['fault']} matched no packet")

    def plot(self, prm, data):
        c = data.counters.get(prm["fault"], {})
        acted, matched = c.get("acted", 0), c.get("matched", 0)
        if not matched:   # nothing to draw: the check says so
            return None
        conf = _conf(prm)
        lo, hi = stats.wilson_interval(acted, matched, conf)
        return {"kind": "ratio_point", "what": f"acted/matched of {prm['fault']}", "k": acted, "n": matched,
                "lo": lo, "hi": hi, "p": probability(prm), "confidence": conf}


class Uniform(Expectation):
    kind = "uniform"
    what = "a field of the selected packets is uniform over a range (chi-square), none outside"
    keys = {"capture": "the capture", "field": "ttl, sport, dport or payload_len", "range": "[low, high], whole numbers",
            "of": _OF, "confidence": _CONF}
    required = frozenset({"capture", "field", "range"})

    def validate(self, ctx, prm, entries, mark):
        super().validate(ctx, prm, entries, mark)
        rng = prm["range"]
        if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(x, int) for x in rng) and rng[0] < rng[1]):
            ctx.fail(prm.value_marks["range"], "uniform.range must be [low, high], whole numbers, low < high")
        if prm["field"] not in ("ttl", "sport", "dport", "payload_len"):
            ctx.fail(prm.value_marks["field"], "uniform.field must be ttl, sport, dport or payload_len")

    def evaluate(self, prm, data):
        conf = _conf(prm)
        lo, hi = prm["range"]
        values = [getattr(p, prm["field"]) for p in select(data, prm)]
        counts = Counter(values)
        chi, df, pval = stats.chi2_uniform([counts.get(v, 0) for v in range(lo, hi + 1)])
        outside = sum(1 for v in values if v is None or not lo <= v <= hi)
        return Check(f"uniform: {prm['field']} of {prm.get('of', 'all')} at {prm['capture']} over {lo}..{hi}",
                     bool(values) and outside == 0 and pval > 1 - conf,
                     f"n={len(values)} outside={outside} chi2={chi:.1f} df={df} p={pval:.3g}",
                     f"all in {lo}..{hi}, p > {1 - conf:.3g}")

    def plot(self, prm, data):
        lo, hi = prm["range"]
        values = [getattr(p, prm["field"]) for p in select(data, prm)]
        counts = Counter(values)
        return {"kind": "histogram", "field": prm["field"], "range": [lo, hi], "n": len(values),
                "counts": [counts.get(v, 0) for v in range(lo, hi + 1)],
                "outside": sum(1 for v in values if v is None or not lo <= v <= hi), "confidence": _conf(prm)}


class Loss(Expectation):
    kind = "loss"
    what = "the share of a udp traffic's datagrams lost is p (Wilson interval)"
    keys = {"traffic": "a udp traffic", "p": _RATE, "ratio": _RATIO, "confidence": _CONF}
    required = frozenset({"traffic"})

    def validate(self, ctx, prm, entries, mark):
        super().validate(ctx, prm, entries, mark)
        self.traffic_of(ctx, prm, entries, "udp", "loss is measured on udp traffic; '{t.name}' is {t.kind}")

    def evaluate(self, prm, data):
        r = data.traffic.get(prm["traffic"])
        sent = r.sent if r else 0
        lost = sent - len(r.received) if r else 0
        return ratio_check(f"loss of {prm['traffic']}", lost, sent, probability(prm), _conf(prm),
                           f"{prm['traffic']} sent nothing")

    def plot(self, prm, data):
        r = data.traffic.get(prm["traffic"])
        if r is None or not r.sent:
            return None
        received = r.received
        lost = [s for s in range(r.sent) if s not in received]
        p = probability(prm)
        curve = ratio_curve([s not in received for s in range(r.sent)], list(range(1, r.sent + 1)), p, _conf(prm))
        runs = Counter(bursts(lost))
        longest = max(runs) if runs else 1
        total = sum(runs.values())
        # independent losses at p: a burst has length L with probability (1-p) p^(L-1)
        expected = [total * (1 - p) * p ** (L - 1) for L in range(1, longest + 1)]
        return {"kind": "loss", "what": f"loss of {prm['traffic']}", "xlabel": "datagram",
                **curve, "bursts": [runs.get(L, 0) for L in range(1, longest + 1)], "bursts_expected": expected}


class TcpIntact(Expectation):
    kind = "tcp_intact"
    what = "a tcp traffic arrived whole (every byte, the same SHA-256); short form `tcp_intact: NAME`"
    keys = {"traffic": "a tcp traffic"}
    required = frozenset({"traffic"})

    def validate(self, ctx, prm, entries, mark):
        super().validate(ctx, prm, entries, mark)
        self.traffic_of(ctx, prm, entries, "tcp", self.kind + " needs tcp traffic; '{t.name}' is {t.kind}")

    def evaluate(self, prm, data):
        r = data.traffic.get(prm["traffic"])
        return Check(f"tcp_intact: {prm['traffic']}", bool(r and r.intact),
                     f"{r.received if r else 0} bytes received", f"{r.sent if r else '?'} bytes, same SHA-256")


class TcpStalled(TcpIntact):
    """The transfer did not complete: fewer bytes arrived than were to be sent (a rule meant to stall it)."""
    kind = "tcp_stalled"
    what = "a tcp traffic did not complete (fewer bytes arrived than were sent): a rule meant to stall it"

    def evaluate(self, prm, data):
        r = data.traffic.get(prm["traffic"])
        return Check(f"tcp_stalled: {prm['traffic']}", bool(r) and r.received < r.sent,
                     f"{r.received if r else 0} of {r.sent if r else '?'} bytes received",
                     "fewer than all: the transfer did not complete")


class OvsRule(Expectation):
    """An OpenFlow rule's packet count (ovs-ofctl dump-flows) at the end; at_least_acted: >= that fault's acted."""
    kind = "ovs_rule"
    what = "an OpenFlow rule's packet count (ovs-ofctl dump-flows) at the end"
    keys = {"bridge": "an ovs bridge with flows", "rule": "the rule's index in the bridge's flows, from 0",
            "equals": "exactly this many", "min": "at least", "max": "at most",
            "at_least_acted": "a fault: at least as many as it acted on"}
    required = frozenset({"bridge", "rule"})

    def validate(self, ctx, prm, entries, mark):
        super().validate(ctx, prm, entries, mark)
        lab = entries.lab
        flows = lab.ovs[prm["bridge"]].flows if prm["bridge"] in lab.ovs else []
        if not flows:
            ctx.fail(prm.value_marks["bridge"], f"ovs_rule: bridge {prm['bridge']} has no flows of its own")
        ctx.whole(prm, "rule", "ovs_rule", 0, 0, len(flows) - 1)
        self.bounds(ctx, prm, 2**63)

    def evaluate(self, prm, data):
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


class ChecksumErrors(Expectation):
    kind = "checksum_errors"
    what = "new TCP+UDP checksum errors counted by a host's stack (InCsumErrors)"
    keys = {"host": "the host", "equals": "how many (default 0)"}
    required = frozenset({"host"})
    reads = "csum_errors"

    def evaluate(self, prm, data):
        return equal_check(f"checksum_errors at {prm['host']} (Tcp+Udp InCsumErrors)",
                           data.csum_errors.get(prm["host"]), prm.get("equals", 0))


class CaptureChecksums(Expectation):
    kind = "capture_checksums"
    what = "no selected packet at a capture has a bad IP or L4 checksum (and there is one)"
    keys = {"capture": "the capture", "of": _OF}
    required = frozenset({"capture"})

    def evaluate(self, prm, data):
        pkts = select(data, prm)
        bad = sum(1 for p in pkts if p.ip_csum_ok is False or p.l4_csum_ok is False)
        unchecked = sum(1 for p in pkts if p.l4_csum_ok is None)
        return Check(f"capture_checksums: {prm.get('of', 'all')} at {prm['capture']}", bool(pkts) and bad == 0,
                     f"{bad} bad of {len(pkts)} ({unchecked} cut short by snaplen)", "0 bad")


class ExitCode(Expectation):
    kind = "exit_code"
    what = "a command traffic's exit code"
    keys = {"traffic": "a command traffic", "equals": "the code (default 0)"}
    required = frozenset({"traffic"})

    def evaluate(self, prm, data):
        r = data.traffic.get(prm["traffic"])
        return equal_check(f"exit_code of {prm['traffic']}", getattr(r, "returncode", None), prm.get("equals", 0))


class Count(Expectation):
    kind = "count"
    what = "how many selected packets a capture has"
    keys = {"capture": "the capture", "of": _OF, "equals": "exactly this many", "min": "at least", "max": "at most"}
    required = frozenset({"capture"})

    def evaluate(self, prm, data):
        return bounds_check(f"count: {prm.get('of', 'all')} at {prm['capture']}", len(select(data, prm)),
                            prm.get("equals"), prm.get("min"), prm.get("max"))


class FaultCounter(Expectation):
    kind = "counter"
    what = "a fault's counter at the end"
    keys = {"fault": "the fault", "counter": "seen, matched or acted", **_BOUNDS}
    required = frozenset({"fault", "counter"})

    def validate(self, ctx, prm, entries, mark):
        super().validate(ctx, prm, entries, mark)
        if prm["counter"] not in ("seen", "matched", "acted"):
            ctx.fail(prm.value_marks["counter"], "counter must be seen, matched or acted")

    def evaluate(self, prm, data):
        c = data.counters.get(prm["fault"], {})
        return bounds_check(f"counter {prm['counter']} of {prm['fault']}", c.get(prm["counter"]),
                            prm.get("equals"), prm.get("min"), prm.get("max"))


class CountersMatchCapture(Fraction):
    kind = "counters_match_capture"
    what = ("the selected packets having a property at a capture are exactly those the fault did not match plus "
            "those it acted on")
    keys = {"fault": "the fault", "capture": "the capture", "having": "the property the fault gives (e.g. psh)",
            "of": _OF}
    required = frozenset({"fault", "capture", "having"})

    def evaluate(self, prm, data):
        base = select(data, prm)
        having = compile_predicate(prm["having"])
        hit = sum(1 for p in base if having(p))
        c = data.counters.get(prm["fault"], {})
        natural = len(base) - c.get("matched", 0)
        return equal_check(f"counters_match_capture: {prm['having']} at {prm['capture']} = "
                           f"(not eligible) + acted by {prm['fault']}", hit, natural + c.get("acted", 0))

    def expected_share(self, prm, data, pkts) -> float:
        """The share the counters predict: (not eligible + acted) / all."""
        c = data.counters.get(prm["fault"], {})
        return (len(pkts) - c.get("matched", 0) + c.get("acted", 0)) / len(pkts) if pkts else 0.0


class TracedDrops(Expectation):
    """Traced packets (trace:) whose journey ended in a drop by the fault, labelled so from its journal."""
    kind = "traced_drops"
    what = ("traced packets (trace:) whose journey ended in a drop by the fault, labelled so from its journal; "
            "needs trace:")
    keys = {"fault": "the fault", **_BOUNDS}
    required = frozenset({"fault"})

    def validate(self, ctx, prm, entries, mark):
        super().validate(ctx, prm, entries, mark)
        self.needs_trace(ctx, entries, mark)

    def evaluate(self, prm, data):
        fid = data.fault_ids.get(prm["fault"], "?")
        drops = sum(1 for j in data.journeys for h in j
                    if h.direction == "DROP" and h.reason == "faultinj" and fid in h.fault)
        return bounds_check(f"traced packets dropped by {prm['fault']} (labelled from its journal)", drops,
                            prm.get("equals"), prm.get("min"), prm.get("max"))


class TracedPath(Expectation):
    """Traced packets the fault acted on whose journey then passes these points in this order (each a
    hop's point or its beginning: upcall, "exec output", a tracepoint's name); default min 1."""
    kind = "traced_path"
    what = "traced packets the fault acted on whose journey then passes these points in order; needs trace:"
    keys = {"fault": "the fault", "through": "hop points or their beginnings, e.g. [upcall, exec output]",
            "equals": "exactly", "min": "at least (default 1)", "max": "at most"}
    required = frozenset({"fault", "through"})

    def validate(self, ctx, prm, entries, mark):
        super().validate(ctx, prm, entries, mark)
        through = prm["through"]
        if not (isinstance(through, list) and through and all(isinstance(t, str) and t for t in through)):
            ctx.fail(prm.value_marks["through"], "traced_path.through: a list of hop points, e.g. "
                     "[upcall, exec output]")
        self.bounds(ctx, prm, 10**6)
        self.needs_trace(ctx, entries, mark)

    def evaluate(self, prm, data):
        fid = data.fault_ids.get(prm["fault"], "?")
        n = sum(1 for j in data.journeys if passes_through(j, fid, prm["through"]))
        bounded = {"equals", "min", "max"} & set(prm)
        return bounds_check(f"traced packets {prm['fault']} acted on, then through {' > '.join(prm['through'])}",
                            n, prm.get("equals"), prm.get("min", None if bounded else 1), prm.get("max"))


class FirstSegments(Expectation):
    kind = "first_segments"
    what = "the first data segment of every TCP connection at a capture has a property"
    keys = {"capture": "the capture", "having": "the property, e.g. psh",
            "connections": "how many connections there must be (default: as many as seen, at least one)"}
    required = frozenset({"capture", "having"})

    def validate(self, ctx, prm, entries, mark):
        self.refer(ctx, prm, entries)
        if "connections" in prm:
            ctx.whole(prm, "connections", self.kind, 1, 1, 10**6)
        self.common(ctx, prm)

    def evaluate(self, prm, data):
        # per TCP connection (5-tuple, one direction), the data segment with the lowest sequence number
        first: dict[tuple, Packet] = {}
        for p in data.packets.get(prm["capture"], []):
            if p.tcp_flags is None or not p.payload_len:
                continue
            conn = (p.src, p.dst, p.sport, p.dport)
            if conn not in first or seq_before(p.seq, first[conn].seq):
                first[conn] = p
        having = compile_predicate(prm["having"])
        hit = sum(1 for p in first.values() if having(p))
        want = prm.get("connections", len(first))
        return Check(f"first_segments: {prm['having']} on the first data segment of each connection at "
                     f"{prm['capture']}", len(first) == want and hit == want and want > 0,
                     f"{hit} of {len(first)} connections", f"all {want}")


class JournalMatches(Expectation):
    """The packets of a capture showing an anomaly are exactly those the fault's journal recorded."""
    kind = "journal_matches"
    what = ("the packets at a capture that show an anomaly are exactly those the fault's journal recorded (and at "
            "least one; no journal event lost)")
    keys = {"fault": "the fault", "capture": "the capture",
            "having": "the anomaly, a packet predicate (required: e.g. bad_checksum, psh)", "of": _OF}
    required = frozenset({"fault", "capture", "having"})
    journals = ("fault",)

    def evaluate(self, prm, data):
        having = compile_predicate(prm["having"])
        seen = Counter(p.journal_key() for p in select(data, prm) if having(p))
        journal = Counter(e.key() for e in data.journal.get(prm["fault"], []))
        lost = data.journal_lost.get(prm["fault"], 0)
        both = sum((seen & journal).values())
        return Check(f"journal_matches: {prm['having']} at {prm['capture']} = what {prm['fault']}'s journal recorded",
                     seen == journal and lost == 0 and both > 0,
                     f"{sum(seen.values())} seen, {sum(journal.values())} recorded, {both} in both"
                     + (f", {lost} events lost" if lost else ""),
                     "the same packets, at least one")


class OutOfOrder(Expectation):
    """TCP data segments that arrived after a later one of their connection (reordering), each named;
    of: which packets (e.g. dport == 5201); having: each late one is so (psh); first: each late one is
    its connection's first data segment; share: at least that share of the connections have exactly
    per_connection, the others none."""
    kind = "out_of_order"
    what = ("TCP data segments at a capture that arrived after a later one of their connection (retransmissions not "
            "counted), each named (ports, seq, how late, flags)")
    keys = {"capture": "the capture", "per_connection": "late segments each connection has (default 1)",
            "connections": "how many connections have them (default: as many as have, at least one)",
            "of": _OF + ", e.g. dport == 5201", "having": "a packet predicate each late segment must match (e.g. psh)",
            "first": "true: each late segment is its connection's first data segment",
            "share": "at least this share of the connections have exactly per_connection, every other none "
                     "(default 1: all)"}
    required = frozenset({"capture"})

    def validate(self, ctx, prm, entries, mark):
        self.refer(ctx, prm, entries)
        kind = self.kind
        if "connections" in prm:
            ctx.whole(prm, "connections", kind, 1, 1, 10**6)
        if "per_connection" in prm:
            ctx.whole(prm, "per_connection", kind, 1, 0, 10**6)
        if "first" in prm:
            ctx.typed(prm, "first", bool, kind)
        if "share" in prm:
            share = ctx.typed(prm, "share", (int, float), kind)
            if not 0 < share <= 1:
                ctx.fail(prm.value_marks["share"], f"{kind}.share must be in (0, 1]")
        self.common(ctx, prm)

    def evaluate(self, prm, data):
        # per TCP connection (one direction), the data segments that arrived after a later one
        pkts, times = select_timed(data, prm)
        late = late_segments(pkts, times)
        want = prm.get("per_connection", 1)
        conns = prm.get("connections", len(late))
        having = compile_predicate(prm["having"]) if "having" in prm else None
        counts = [len(v) for v in late.values()]
        segs = [s for v in late.values() for s in v]
        # late ones that are not what was asked: without the flag, or not their connection's first
        wrong = [s for s in segs if (having and not having(s.packet)) or (prm.get("first") and not s.first)]
        # share < 1: at least that share of the connections have exactly `want`, every other none
        share = float(prm.get("share", 1.0))
        exact = sum(1 for n in counts if n == want)
        ok = (len(late) == conns and conns > 0 and not wrong and all(n in (0, want) for n in counts)
              and exact >= math.ceil(share * conns - 1e-9))
        told = "; ".join(s.describe() for s in segs[:3]) + (f"; +{len(segs) - 3} more" if len(segs) > 3 else "")
        return Check(f"out_of_order: {want} late data segment(s) per connection at {prm['capture']}"
                     + (f" among {prm['of']}" if "of" in prm else ""), ok,
                     f"{len(late)} connections ({exact} with {want}), late segments per connection: {counts[:40]}"
                     + (f"; {told}" if told else "")
                     + (f"; not as asked: {', '.join(s.describe() for s in wrong[:3])}" if wrong else ""),
                     f"{conns} connections, {want} each"
                     + (f" (at least {math.ceil(share * conns - 1e-9)} of them; the others none)" if share < 1 else "")
                     + (f", each late one {prm['having']}" if having else "")
                     + (", each its connection's first data segment" if prm.get("first") else ""))

    def plot(self, prm, data):
        return late_plot(data, prm)


class ThroughputRatio(Expectation):
    """Per-connection throughput of `of` over that of `control` (same capture, same run): the ratio of
    geometric means, its interval (on the logarithms) at confidence below max / above min."""
    kind = "throughput_ratio"
    what = ("per-connection throughput of the `of` packets over that of the `control` packets at one capture in one "
            "run (each from its handshake's ACK to its last data segment): the ratio of their geometric means, its "
            "interval (on the logarithms: throughput noise is a factor) below max / above min")
    keys = {"capture": "the capture", "of": "the connections judged, a packet predicate",
            "control": "the connections compared with (a predicate), e.g. an unfaulted flow beside",
            "max": "the ratio's interval lies below this, e.g. 0.9 (it fell)", "min": "the interval lies above this",
            "confidence": _CONF}
    required = frozenset({"capture", "of", "control"})

    def validate(self, ctx, prm, entries, mark):
        self.refer(ctx, prm, entries)
        kind = self.kind
        try:
            compile_predicate(prm["control"])
        except SpecError as exc:
            ctx.fail(prm.value_marks["control"], f"{kind}.control: {exc}")
        if "min" not in prm and "max" not in prm:
            ctx.fail(prm.mark, "throughput_ratio needs max (it fell: e.g. max: 0.9) or min")
        for key in ("min", "max"):
            if key in prm and ctx.typed(prm, key, (int, float), kind) <= 0:
                ctx.fail(prm.value_marks[key], f"{kind}.{key}: a ratio above 0, e.g. 0.9")
        self.common(ctx, prm)

    def evaluate(self, prm, data):
        return throughput_ratio_check(prm, connection_throughputs(data, prm["capture"], prm["of"]),
                                      connection_throughputs(data, prm["capture"], prm["control"]), _conf(prm))

    def plot(self, prm, data):
        a = connection_throughputs(data, prm["capture"], prm["of"])
        b = connection_throughputs(data, prm["capture"], prm["control"])
        if len([x for _, x in a if x > 0]) < 2 or len([x for _, x in b if x > 0]) < 2:
            return None
        conf = _conf(prm)
        r, lo, hi = throughput_ratio([x for _, x in a if x > 0], [x for _, x in b if x > 0], conf)
        return {"kind": "throughput_ratio", "of": prm["of"], "control": prm["control"],
                "faulted": [x / 1e6 for _, x in a], "controls": [x / 1e6 for _, x in b],
                "ratio": r, "lo": lo, "hi": hi, "max": prm.get("max"), "min": prm.get("min"), "confidence": conf}


class KernelCounter(Expectation):
    """How much a host's kernel counter (TcpExt.TCPOFOQueue, or nstat's TcpExtTCPOFOQueue) grew, over
    the named traffic entries (each one's own span) or over the whole run."""
    kind = "kernel_counter"
    what = ("how much a host's kernel counter grew (/proc/net/netstat, snmp, snmp6), over the named traffic "
            "entries' spans or the whole run")
    keys = {"host": "the host", "counter": "e.g. TcpExt.TCPOFOQueue (nstat's TcpExtTCPOFOQueue too)",
            "traffic": "a traffic entry's name or a list of them: count over their spans only", **_BOUNDS}
    required = frozenset({"host", "counter"})
    refers = tuple(r for r in REFERS if r[0] != "traffic")   # its traffic: one or a list, checked below
    reads = "kernel_counters"

    def validate(self, ctx, prm, entries, mark):
        self.refer(ctx, prm, entries)
        kind = self.kind
        counter = ctx.typed(prm, "counter", str, kind)
        if not re.match(r"^[A-Za-z][A-Za-z0-9]*\.?[A-Za-z0-9_]+$", counter):
            ctx.fail(prm.value_marks["counter"], f"{kind}.counter: a name like TcpExt.TCPOFOQueue "
                     "(/proc/net/netstat, snmp, snmp6; nstat's TcpExtTCPOFOQueue too)")
        spans = prm.get("traffic")
        if spans is not None:
            names = [spans] if isinstance(spans, str) else spans
            if not isinstance(names, list) or not names or not all(isinstance(t, str) for t in names):
                ctx.fail(prm.value_marks["traffic"], f"{kind}.traffic: a traffic entry's name or a list of them")
            known = entries.refs["traffic"]
            for t in names:
                if t not in known:
                    ctx.fail(prm.value_marks["traffic"], f"{kind}.traffic: no traffic '{t}'; known: "
                             f"{', '.join(known) or 'none'}")
        self.bounds(ctx, prm, 2**63)
        self.common(ctx, prm)

    def evaluate(self, prm, data):
        return kernel_counter_check(prm, data.kernel_counters)


class Delay(Expectation):
    """ICMP echo requests in and their replies out at one capture (one host's clock): the time between
    them fits the delay fault's distribution (Kolmogorov-Smirnov), mean within 5% for D >= 10 ms.
    reference: a delay fault without jitter on other replies at the same capture: how late the host
    sends a held packet (its measured minus its delay) is taken from there, not from undelayed replies."""
    kind = "delay"
    what = ("ICMP echo replies a delay fault held, timed request-in to reply-out at one capture, fit its "
            "distribution (Kolmogorov-Smirnov), mean within 5% for D >= 10 ms")
    keys = {"capture": "the replying host's capture (one clock)", "fault": "the delay fault", "confidence": _CONF,
            "reference": "a delay fault without jitter on other replies at the same capture: the host's own "
                         "time to send a held packet is taken from it"}
    required = frozenset({"capture", "fault"})
    journals = ("fault", "reference")

    def validate(self, ctx, prm, entries, mark):
        super().validate(ctx, prm, entries, mark)
        for key in ("fault", "reference"):
            if key not in prm:
                continue
            spec = next(f.spec for f in entries.faults if f.name == prm[key])
            if spec.name != "delay":
                ctx.fail(prm.value_marks[key], f"delay: fault '{prm[key]}' is {spec.name}, not a delay")
            o = spec.options
            if key == "reference" and o.get("jitter", 0):
                ctx.fail(prm.value_marks[key], f"delay.reference: fault '{prm[key]}' must have no jitter")
            prm["model" if key == "fault" else "reference_ns"] = (
                {"delay_ns": ns_of(spec.value), "jitter_ns": o.get("jitter", 0), "dist": o.get("dist", "uniform")}
                if key == "fault" else ns_of(spec.value))

    def evaluate(self, prm, data):
        return delay_check(prm, echo_delays_ns(data, prm["capture"]), data.journal.get(prm["fault"], []),
                           _conf(prm), data.journal.get(prm.get("reference"), []))


class Throughput(Expectation):
    """Data bits per second of the selected packets at a capture, first to last: min/max like 9mbit;
    or_share_of: {of: PRED, share: 0.9}: min is at most that share of those packets' throughput (an
    unpaced flow beside: what the sender manages at all)."""
    kind = "throughput"
    what = "data bits per second of the selected packets at a capture, first to last"
    keys = {"capture": "the capture", "of": _OF, "min": "at least, e.g. 9mbit", "max": "at most, e.g. 11mbit",
            "or_share_of": "{of: PREDICATE, share: 0.9}: min is at most that share of those packets' throughput"}
    required = frozenset({"capture"})

    def validate(self, ctx, prm, entries, mark):
        super().validate(ctx, prm, entries, mark)
        share = prm.get("or_share_of")
        if share is not None:
            if not isinstance(share, dict) or set(share) != {"of", "share"} or not isinstance(share["share"], float) \
                    or not 0 < share["share"] <= 1:
                ctx.fail(prm.value_marks["or_share_of"], "throughput.or_share_of: {of: PREDICATE, share: 0.9}")
            try:
                compile_predicate(share["of"])
            except SpecError as exc:
                ctx.fail(prm.value_marks["or_share_of"], f"throughput.or_share_of.of: {exc}")
        if "min" not in prm and "max" not in prm:
            ctx.fail(prm.mark, "throughput needs min or max (bits per second, e.g. 9mbit)")
        for key in ("min", "max"):
            if key in prm:
                try:
                    parse_rate(f"throughput.{key}", str(prm[key]))
                except SpecError as exc:
                    ctx.fail(prm.value_marks[key], str(exc))

    def evaluate(self, prm, data):
        bps = throughput_bps(data, prm["capture"], prm.get("of", "all"))
        lo = parse_rate("min", str(prm["min"])) if "min" in prm else None
        hi = parse_rate("max", str(prm["max"])) if "max" in prm else None
        want = []
        if "or_share_of" in prm:
            ref = throughput_bps(data, prm["capture"], prm["or_share_of"]["of"])
            share = prm["or_share_of"]["share"]
            want.append(f"{prm['or_share_of']['of']}: {ref / 1e6:.2f} Mbit/s" if ref else "no reference")
            if lo is not None and ref:
                lo = min(lo, share * ref)
        ok = bps is not None and (lo is None or bps >= lo) and (hi is None or bps <= hi)
        return Check(f"throughput: data of {prm.get('of', 'all')} at {prm['capture']}", ok,
                     f"{bps / 1e6:.2f} Mbit/s" if bps else "no data",
                     " and ".join(([f">= {lo / 1e6:.2f} Mbit/s"] if lo is not None else [])
                                  + ([f"<= {prm['max']}"] if hi is not None else []))
                     + (f" ({want[0]})" if want else ""))
