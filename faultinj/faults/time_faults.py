"""Time faults: delay (jitter, netem's distributions), reorder and rate, chosen packet by packet by
BPF at tc egress and held by the fq qdisc (earliest departure time). See bpf/delay.bpf.c."""

from __future__ import annotations

import functools
import os
import re

from .. import layouts
from ..errors import SpecError
from .base import FaultType, Option, Value

MODES = {n: v for v, n in layouts.enum_names("fi_time_fault", "FI_TIME_").items()}   # param (bpf/delay.bpf.c)
DIST_SIZE, DIST_SCALE = layouts.enum("fi_dist")["FI_DIST_SIZE"], layouts.enum("fi_dist")["FI_DIST_SCALE"]
DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")
MAX_JITTER_NS = (1 << 31) - 1          # netem's own limit (a signed 32-bit sigma)
MAX_DELAY_NS = 10 * 1_000_000_000      # fq's default horizon: later departures are dropped
# patterns as text: re compiles (and caches) one at its first use, not at every apply's import
_DURATION = r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)\s*$"
_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_RATE = r"(?i)^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)?\s*$"
_BITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9}
HOOK_NOTE = ("the kernel holds packets only on their way out: put the fault on the sending side's egress "
             "(or on the egress of an ifb device that the ingress traffic is redirected to)")
DIST_DIRS = ("/usr/lib/x86_64-linux-gnu/tc", "/usr/lib/aarch64-linux-gnu/tc", "/usr/lib/tc", "/usr/lib64/tc",
             "/usr/share/tc")


def parse_duration_ns(what: str, text: str, lo: int = 0, hi: int = MAX_DELAY_NS) -> int:
    m = re.match(_DURATION, str(text))
    ns = round(float(m.group(1)) * _NS[m.group(2)]) if m else -1
    if not lo <= ns <= hi:
        raise SpecError(f"{what}: bad duration '{text}': give a number with a unit ns, us, ms or s, "
                        f"from {lo / 1e6:g} ms to {hi / 1e9:g} s (e.g. {what}=20ms)")
    return ns


def canonical_duration(what: str, text: str) -> str:
    """'20ms' -> '20ms', '0.5s' -> '500ms': the spec shows what the user means."""
    return format_ns(parse_duration_ns(what, text))


def ns_of(text) -> int:
    return parse_duration_ns("duration", str(text))


def canonical_rate(what: str, text: str) -> str:
    bps = parse_rate(what, text)
    for unit, n in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps % n == 0:
            return f"{bps // n}{unit}"
    return f"{bps}bit"


def format_ns(ns: int) -> str:
    for unit, n in (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)):
        if ns % n == 0 and ns >= n:
            return f"{ns // n}{unit}"
    return f"{ns}ns"


def parse_rate(what: str, text: str) -> int:
    m = re.match(_RATE, str(text))
    bps = float(m.group(1)) * _BITS[(m.group(2) or "bit").lower()] if m else 0
    if not 1000 <= bps <= 100e9:
        raise SpecError(f"{what}: bad rate '{text}': give bits per second with a unit bit, kbit, mbit, gbit "
                        "(or bytes: bps, kbps, mbps), from 1kbit to 100gbit (e.g. rate=10mbit)")
    return round(bps)


@functools.lru_cache(maxsize=None)
def dist_table(name: str) -> tuple[int, ...]:
    """iproute2's own table for netem's distribution `name` (4096 signed values, 8192 = one sigma):
    the jitter is then distributed exactly as netem's."""
    for d in DIST_DIRS:
        path = os.path.join(d, f"{name}.dist")
        if os.path.isfile(path):
            with open(path) as f:
                values = [int(w) for ln in f if not ln.lstrip().startswith("#") for w in ln.split()]
            if len(values) != DIST_SIZE:
                raise SpecError(f"{path}: expected {DIST_SIZE} values, found {len(values)}")
            return tuple(values)
    raise SpecError(f"dist={name}: iproute2's {name}.dist table not found (in {', '.join(DIST_DIRS)}): "
                    "install iproute2, or use dist=uniform")


def delay_model(delay_ns: int, jitter_ns: int, dist: str = "uniform"):
    """(cdf, mean) of the delay a packet is given, in ns: what the program draws (netem's tabledist),
    negative draws held for 0. cdf(x) = P(delay <= x)."""
    import bisect

    if jitter_ns <= 0:
        return (lambda x: 1.0 if x >= delay_ns else 0.0), float(delay_ns)
    if dist == "uniform":
        lo, span = delay_ns - jitter_ns, 2 * jitter_ns
        return (lambda x: min(1.0, max(0.0, (x - lo) / span))), float(max(0, delay_ns))
    values = sorted(max(0.0, delay_ns + jitter_ns * t / DIST_SCALE) for t in dist_table(dist))
    return (lambda x: bisect.bisect_right(values, x) / len(values)), sum(values) / len(values)


def _dist(_what: str, text: str) -> str:
    if text not in DISTRIBUTIONS:
        raise SpecError(f"dist: give one of {', '.join(DISTRIBUTIONS)} (netem's names), not '{text}'")
    return text


def _jitter(what: str, text: str) -> int:
    return parse_duration_ns(what, text, 0, MAX_JITTER_NS)


def _delay_extra(value, options: dict) -> tuple:
    ns = ns_of(value)
    table = options.get("dist", "uniform") != "uniform"
    return (ns & 0xFFFFFFFF, ns >> 32, options.get("jitter", 0), 1 if table else 0)


def _tables(_value, options: dict) -> dict:
    dist = options.get("dist", "uniform")   # uniform needs no table (but the map is kept: set may change it)
    return {"fi_dist": dist_table(dist) if dist != "uniform" else ()}


JITTER = Option("jitter", "spread of the delay (e.g. 5ms): uniform in delay±jitter, or jitter is one sigma of "
                "dist=", _jitter, 0)
DIST = Option("dist", "the jitter's distribution: uniform (default), normal, pareto, paretonormal — netem's, "
              "from iproute2's tables", _dist, "uniform")
PER = Option("per", "flow: each flow paced to the rate on its own (default); all: the matched traffic together",
             lambda _w, t: t if t in ("flow", "all") else (_ for _ in ()).throw(
                 SpecError(f"per: give flow or all, not '{t}'")), "flow")
DEFAULT_BURST_NS = 0
BURST = Option("burst", "how much of the rate, as a time, a flow that fell behind may send at once (as tbf's "
               "burst, default 0: strict pacing); e.g. burst=20ms lets a sender woken late catch up",
               lambda w, t: parse_duration_ns(w, t, 0, 1_000_000_000), 0)

DELAY = FaultType(
    name="delay",
    summary="hold packets back by D (jitter=, dist= as netem's), chosen by the filters and p=/ratio=/nth=",
    program="delay",
    hooks=("tc-egress",),
    value=Value(name="D", help="the delay, e.g. 20ms (up to 10 s, fq's horizon); options jitter=, dist=; rate: "
                "p=/ratio=/nth= (default every packet)", parse=canonical_duration),
    unit="every packet at the hook (that passes the filter)",
    threshold=None,
    param=lambda _v, _o: MODES["delay"],
    extra=_delay_extra,
    options=(JITTER, DIST),
    tables=_tables,
    qdisc="fq",
    hooks_note=HOOK_NOTE,
)

REORDER = FaultType(
    name="reorder",
    summary="hold the chosen packets back by T so that later packets of their flow overtake them",
    program="delay",
    hooks=("tc-egress",),
    value=Value(name="T", help="how long a chosen packet is held, e.g. 10ms; choose packets with p=/ratio=/nth= "
                "and the filters (e.g. reorder=10ms,nth=3)", parse=canonical_duration),
    unit="every packet at the hook (that passes the filter)",
    threshold=None,
    param=lambda _v, _o: MODES["reorder"],
    extra=lambda value, _o: (ns_of(value) & 0xFFFFFFFF, ns_of(value) >> 32, 0, 0),
    qdisc="fq",
    hooks_note=HOOK_NOTE,
)

RATE = FaultType(
    name="rate",
    summary="pace a flow (per=flow) or all matched traffic (per=all) to R bit/s",
    program="delay",
    hooks=("tc-egress",),
    value=Value(name="R", help="bits per second, e.g. 10mbit (1kbit..100gbit)", parse=canonical_rate),
    unit="every packet at the hook (that passes the filter)",
    threshold=None,
    param=lambda _v, _o: MODES["rate"],
    # picoseconds per byte
    extra=lambda value, o: (round(8e12 / parse_rate("rate", value)), 1 if o.get("per") == "all" else 0,
                            o.get("burst", DEFAULT_BURST_NS), 0),
    options=(PER, BURST),
    qdisc="fq",
    hooks_note=HOOK_NOTE,
)

FAULTS = (DELAY, REORDER, RATE)
