"""What the report draws for an expectation whose answer is a distribution: small, plain data
(lists of numbers), computed from what a run collected; each kind's class (expectations.py) makes
its own from these parts. Pure: no kernel, no plotting library (faultinj.scenario.html draws them)."""

from __future__ import annotations

from .. import stats
from .expect import RunData, late_segments, select_timed

MAX_POINTS = 200   # a curve's points: enough to see its shape, small enough for the page


def checkpoints(n: int) -> list[int]:
    if n <= MAX_POINTS:
        return list(range(1, n + 1))
    return sorted({max(1, round(n * i / MAX_POINTS)) for i in range(1, MAX_POINTS + 1)})


def ratio_curve(hits: list[bool], xs: list[float], p: float, conf: float) -> dict:
    """Running k/n with its Wilson band, at up to MAX_POINTS points."""
    out = {"x": [], "ratio": [], "lo": [], "hi": [], "p": p, "confidence": conf}
    k = 0
    marks = set(checkpoints(len(hits)))
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


def selected_with_times(data: RunData, prm: dict) -> tuple[list, list[float]]:
    """The selected packets of a capture and their times since the first of them (s)."""
    pkts, times = select_timed(data, prm)
    t0 = times[0] if times else 0.0
    return pkts, [t - t0 for t in times]


def bursts(lost: list[int]) -> list[int]:
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


def plot_for(e, data: RunData) -> dict | None:
    """The plot of one expectation (a schema.ExpectEntry), or None where a single number is the whole
    answer: its kind's class (expectations.py) makes it."""
    return e.expectation.plot(e.params, data)


MAX_CONNECTIONS = 40   # a sequence plot's connections


def late_plot(data: RunData, prm: dict) -> dict | None:
    """Each connection's data segments as they arrived (time since its first, sequence number from
    its lowest, in kB), its late ones marked and named."""
    pkts, times = select_timed(data, prm)
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
            keep = checkpoints(n)
            c["t"], c["seq"] = [c["t"][i - 1] for i in keep], [c["seq"][i - 1] for i in keep]
        del c["t0"], c["seq0"]
    return {"kind": "late_segments", "what": prm.get("of", "all"), "connections": list(conns.values()),
            "per_connection": [len(v) for v in late.values()],
            "late": [s.to_json() for v in late.values() for s in v][:200]}
