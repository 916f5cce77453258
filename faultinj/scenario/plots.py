"""What the report draws for an expectation whose answer is a distribution: small, plain data
(lists of numbers), computed from what a run collected. Pure: no kernel, no plotting library
(faultinj.scenario.html draws them)."""

from __future__ import annotations

from collections import Counter

from .. import stats
from ..verdict import CONFIDENCE
from .expect import RunData, _p, _select, _select_timed, connection_throughputs, late_segments, throughput_ratio
from .predicates import compile_predicate
from .schema import ExpectEntry

MAX_POINTS = 200   # a curve's points: enough to see its shape, small enough for the page


def _checkpoints(n: int) -> list[int]:
    if n <= MAX_POINTS:
        return list(range(1, n + 1))
    return sorted({max(1, round(n * i / MAX_POINTS)) for i in range(1, MAX_POINTS + 1)})


def _ratio_curve(hits: list[bool], xs: list[float], p: float, conf: float) -> dict:
    """Running k/n with its Wilson band, at up to MAX_POINTS points."""
    out = {"x": [], "ratio": [], "lo": [], "hi": [], "p": p, "confidence": conf}
    k = 0
    marks = set(_checkpoints(len(hits)))
    for i, h in enumerate(hits, 1):
        k += h
        if i in marks:
            lo, hi = stats.wilson_interval(k, i, conf)
            out["x"].append(xs[i - 1])
            out["ratio"].append(k / i)
            out["lo"].append(lo)
            out["hi"].append(hi)
    out["k"], out["n"] = k, len(hits)
    return out


def _selected_with_times(data: RunData, prm: dict) -> tuple[list, list[float]]:
    pred = compile_predicate(prm.get("of", "all"))
    pkts = data.packets.get(prm["capture"], [])
    times = data.times.get(prm["capture"]) or [0.0] * len(pkts)
    sel = [(p, t) for p, t in zip(pkts, times) if pred(p)]
    t0 = sel[0][1] if sel else 0.0
    return [p for p, _ in sel], [t - t0 for _, t in sel]


def _bursts(lost: list[int]) -> list[int]:
    """Lengths of runs of consecutive lost sequence numbers."""
    runs, prev, length = [], None, 0
    for s in lost:
        if prev is not None and s == prev + 1:
            length += 1
        else:
            if length:
                runs.append(length)
            length = 1
        prev = s
    if length:
        runs.append(length)
    return runs


def plot_for(e: ExpectEntry, data: RunData) -> dict | None:
    """The plot of one expectation, or None where a single number is the whole answer."""
    k, prm = e.kind, e.params
    conf = float(prm.get("confidence", CONFIDENCE))
    if k == "uniform":
        lo, hi = prm["range"]
        values = [getattr(p, prm["field"]) for p in _select(data, prm)]
        counts = Counter(values)
        return {"kind": "histogram", "field": prm["field"], "range": [lo, hi], "n": len(values),
                "counts": [counts.get(v, 0) for v in range(lo, hi + 1)],
                "outside": sum(1 for v in values if v is None or not lo <= v <= hi), "confidence": conf}
    if k in ("fraction", "counters_match_capture"):
        pkts, times = _selected_with_times(data, prm)
        having = compile_predicate(prm["having"])
        if k == "fraction":
            p = _p(prm)
        else:   # the share the counters predict: (not eligible + acted) / all
            c = data.counters.get(prm["fault"], {})
            p = (len(pkts) - c.get("matched", 0) + c.get("acted", 0)) / len(pkts) if pkts else 0.0
        curve = _ratio_curve([having(q) for q in pkts], times, p, conf)
        return {"kind": "ratio", "what": f"{prm['having']} among {prm.get('of', 'all')}", "xlabel": "seconds",
                **curve}
    if k == "fault_ratio":
        c = data.counters.get(prm["fault"], {})
        acted, matched = c.get("acted", 0), c.get("matched", 0)
        if not matched:   # nothing to draw: the check says so
            return None
        lo, hi = stats.wilson_interval(acted, matched, conf)
        return {"kind": "ratio_point", "what": f"acted/matched of {prm['fault']}", "k": acted, "n": matched,
                "lo": lo, "hi": hi, "p": _p(prm), "confidence": conf}
    if k == "loss":
        r = data.traffic.get(prm["traffic"])
        if r is None or not r.sent:
            return None
        received = r.received
        lost = [s for s in range(r.sent) if s not in received]
        curve = _ratio_curve([s not in received for s in range(r.sent)], list(range(1, r.sent + 1)), _p(prm), conf)
        bursts = Counter(_bursts(lost))
        p = _p(prm)
        longest = max(bursts) if bursts else 1
        total = sum(bursts.values())
        # independent losses at p: a burst has length L with probability (1-p) p^(L-1)
        expected = [total * (1 - p) * p ** (L - 1) for L in range(1, longest + 1)]
        return {"kind": "loss", "what": f"loss of {prm['traffic']}", "xlabel": "datagram",
                **curve, "bursts": [bursts.get(L, 0) for L in range(1, longest + 1)], "bursts_expected": expected}
    if k == "out_of_order":
        return _late_plot(data, prm)
    if k == "throughput_ratio":
        a = connection_throughputs(data, prm["capture"], prm["of"])
        b = connection_throughputs(data, prm["capture"], prm["control"])
        if len([x for _, x in a if x > 0]) < 2 or len([x for _, x in b if x > 0]) < 2:
            return None
        r, lo, hi = throughput_ratio([x for _, x in a if x > 0], [x for _, x in b if x > 0], conf)
        return {"kind": "throughput_ratio", "of": prm["of"], "control": prm["control"],
                "faulted": [x / 1e6 for _, x in a], "controls": [x / 1e6 for _, x in b],
                "ratio": r, "lo": lo, "hi": hi, "max": prm.get("max"), "min": prm.get("min"), "confidence": conf}
    return None


MAX_CONNECTIONS = 40   # a sequence plot's connections


def _late_plot(data: RunData, prm: dict) -> dict | None:
    """Each connection's data segments as they arrived (time since its first, sequence number from
    its lowest, in kB), its late ones marked and named."""
    pkts, times = _select_timed(data, prm)
    late = late_segments(pkts, times)
    if not late:
        return None
    named = {id(s.packet): s for v in late.values() for s in v}
    conns: dict[tuple, dict] = {}
    for p, t in zip(pkts, times):
        conn = (p.src, p.dst, p.sport, p.dport)
        if conn not in late or not p.payload_len or (conn not in conns and len(conns) >= MAX_CONNECTIONS):
            continue
        c = conns.setdefault(conn, {"port": p.sport, "t0": t, "seq0": p.seq, "t": [], "seq": [], "late": []})
        rel = (p.seq - c["seq0"]) & 0xFFFFFFFF
        rel = rel - (1 << 32) if rel > 0x7FFFFFFF else rel   # signed: a late one is below the first seen
        c["t"].append((t - c["t0"]) * 1e3)
        c["seq"].append(rel)
        if id(p) in named:
            c["late"].append(len(c["t"]) - 1)
    for c in conns.values():
        low = min(c["seq"])
        c["seq"] = [(x - low) / 1e3 for x in c["seq"]]
        c["late"] = [[c["t"][i], c["seq"][i]] for i in c["late"]]
        n = len(c["t"])
        if n > MAX_POINTS:
            keep = _checkpoints(n)
            c["t"], c["seq"] = [c["t"][i - 1] for i in keep], [c["seq"][i - 1] for i in keep]
        del c["t0"], c["seq0"]
    return {"kind": "late_segments", "what": prm.get("of", "all"), "connections": list(conns.values()),
            "per_connection": [len(v) for v in late.values()],
            "late": [s.to_json() for v in late.values() for s in v][:200]}
