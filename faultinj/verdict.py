"""A verdict is a list of Checks (what was observed, what was expected, the confidence interval
where statistics decide) and what they were judged from. One type for every run that judges:
a scenario (`faultinj run`, the demo) and `faultinj verify`."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import stats


@dataclass
class Check:
    name: str
    ok: bool
    observed: str
    expected: str
    ci: tuple[float, float] | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "observed": self.observed, "expected": self.expected,
                "ci": list(self.ci) if self.ci else None}

    @classmethod
    def from_json(cls, d: dict) -> "Check":
        return cls(str(d["name"]), bool(d["ok"]), str(d["observed"]), str(d["expected"]),
                   tuple(float(x) for x in d["ci"]) if d.get("ci") else None)


class HopRecord(dict):
    """A traced hop as its JSON (a verdict read back from JSON, e.g. from a guest): what the report
    and the text output use of a tracer's Hop."""

    def to_json(self) -> dict:
        return dict(self)

    @property
    def summary(self) -> str:
        return self.get("summary", "")

    def __str__(self) -> str:
        tail = f" reason={self['reason']}" if self.get("reason") else ""
        tail += f"  (faultinj {self['fault']})" if self.get("fault") else ""
        return (f"{self.get('time', '')} [{self.get('netns', 0):>10}] {self.get('netns_name', ''):<16} "
                f"{self.get('ifname', ''):<14} {self.get('direction', ''):<4} {self.get('point', '') + ' ' if self.get('direction') in ('ovs', 'fn') else ''}"
                f"{self.summary}{tail}")


@dataclass
class Verdict:
    scenario: str                    # what was run: the scenario's name, or "verify"
    path: str = ""                   # its file
    checks: list[Check] = field(default_factory=list)
    pcaps: dict[str, str] = field(default_factory=dict)    # capture -> its pcap file
    counters: dict[str, dict] = field(default_factory=dict)   # fault -> its counters
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    prefix: str = ""                 # the lab's namespace prefix (a lab.guest run: the guest's, as its namespaces)
    guest: str = ""                  # lab.guest: the VM the lab ran in (this machine's name for it)
    journeys: list[list] = field(default_factory=list)   # trace: each sampled packet's hops, in order
    faults: dict[str, dict] = field(default_factory=dict)  # fault -> where it ran: host, kernel, hook, attach mode
    ovs: dict[str, dict] = field(default_factory=dict)     # OVS bridge -> its rules' statistics and megaflows
    plots: dict[int, dict] = field(default_factory=dict)   # check index -> what the HTML report draws for it
    description: str = ""
    facts: dict = field(default_factory=dict)               # what else was seen (verify: packets captured)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.checks) and all(c.ok for c in self.checks)

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "path": self.path, "ok": self.ok, "seconds": round(self.seconds, 3),
                "checks": [c.to_json() for c in self.checks], "pcaps": self.pcaps, "counters": self.counters,
                "errors": self.errors, "lab_prefix": self.prefix, **({"guest": self.guest} if self.guest else {}), "faults": self.faults,
                "journeys": [[h.to_json() for h in j] for j in self.journeys], "ovs": self.ovs, "facts": self.facts}

    def to_wire(self) -> dict:
        """to_json and what the HTML report also needs (description, plots): what a guest sends back."""
        return {**self.to_json(), "description": self.description,
                "plots": {str(k): v for k, v in self.plots.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "Verdict":
        """The verdict to_wire (or to_json) wrote (data only: nothing in it is code, whoever wrote it)."""
        return cls(scenario=str(d["scenario"]), path=str(d.get("path", "")),
                   checks=[Check.from_json(c) for c in d.get("checks", [])],
                   pcaps={str(k): str(v) for k, v in (d.get("pcaps") or {}).items()},
                   counters=dict(d.get("counters") or {}), errors=[str(e) for e in d.get("errors") or []],
                   seconds=float(d.get("seconds") or 0), prefix=str(d.get("lab_prefix", "")),
                   guest=str(d.get("guest", "")), journeys=[[HopRecord(h) for h in j] for j in d.get("journeys") or []],
                   faults=dict(d.get("faults") or {}), ovs=dict(d.get("ovs") or {}),
                   plots={int(k): v for k, v in (d.get("plots") or {}).items()},
                   description=str(d.get("description", "")), facts=dict(d.get("facts") or {}))


def ratio_check(name: str, k: int, n: int, p: float, confidence: float | None = None,
                nothing: str = "nothing counted") -> Check:
    """Is probability p inside the Wilson interval of k successes in n? n = 0: a failure that says
    so (nothing: what was empty, e.g. "no packet matched `tcp and data` at rx"), not a NaN.
    confidence None: stats.default_confidence()."""
    if confidence is None:
        confidence = stats.default_confidence()
    expected = f"{p:.4f} within {stats.percent(confidence)} CI"
    if not n:
        return Check(name, False, nothing, expected)
    lo, hi = stats.wilson_interval(k, n, confidence)
    return Check(name, lo <= p <= hi, f"{k}/{n} = {k / n:.4f}", expected, (lo, hi))


def equal_check(name: str, observed, expected) -> Check:
    return Check(name, observed == expected, str(observed), str(expected))


def bounds_check(name: str, observed: int | None, equals=None, minimum=None, maximum=None) -> Check:
    ok = observed is not None
    want = []
    if equals is not None:
        ok = ok and observed == equals
        want.append(f"= {equals}")
    if minimum is not None:
        ok = ok and observed >= minimum
        want.append(f">= {minimum}")
    if maximum is not None:
        ok = ok and observed <= maximum
        want.append(f"<= {maximum}")
    return Check(name, ok, str(observed), " and ".join(want) or "any")
