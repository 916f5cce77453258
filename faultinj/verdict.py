"""A verdict is a list of Checks: what was observed, what was expected, the
confidence interval where statistics decide."""

from __future__ import annotations

from dataclasses import dataclass

from . import stats

CONFIDENCE = 0.999


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


def ratio_check(name: str, k: int, n: int, p: float, confidence: float = CONFIDENCE) -> Check:
    """Is probability p inside the Wilson interval of k successes in n?"""
    lo, hi = stats.wilson_interval(k, n, confidence)
    frac = k / n if n else float("nan")
    return Check(name, n > 0 and lo <= p <= hi, f"{k}/{n} = {frac:.4f}", f"{p:.4f} within {confidence:.1%} CI",
                 (lo, hi))


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
