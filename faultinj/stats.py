"""Statistics for verdicts: binomial confidence intervals and a chi-square test.

A ratio fault is judged by whether its configured probability lies inside
the confidence interval of what was observed; no scipy needed.
"""

from __future__ import annotations

import math
import os
from statistics import NormalDist

from .errors import SpecError

CONFIDENCE = 0.999
CONFIDENCE_ENV = "FAULTINJ_CONFIDENCE"


def default_confidence() -> float:
    """The confidence of a statistical check that states none: $FAULTINJ_CONFIDENCE if set, else
    0.999. Each check at 0.999 is a false alarm once in a thousand runs; a job that judges K of them
    (a CI suite) keeps its chance of any false alarm at a by giving each 1 - a/K (Bonferroni)."""
    raw = os.environ.get(CONFIDENCE_ENV)
    if not raw:
        return CONFIDENCE
    try:
        c = float(raw)
    except ValueError:
        c = -1.0
    return check_confidence(c, f"{CONFIDENCE_ENV}={raw!r}")


def confidence_ok(confidence: float) -> bool:
    """A confidence level every check accepts: in [0.5, 1)."""
    return 0.5 <= confidence < 1


def check_confidence(confidence: float, what: str) -> float:
    """`confidence` if it is a level in [0.5, 1), else a SpecError naming `what` was given."""
    if not confidence_ok(confidence):
        raise SpecError(f"{what}: give a confidence level in [0.5, 1), e.g. 0.99999")
    return confidence


def set_default_confidence(confidence: float) -> None:
    """`faultinj run --confidence`: the default of every check this process judges, and of the runs
    it starts in guests (they inherit $FAULTINJ_CONFIDENCE)."""
    check_confidence(confidence, f"bad --confidence {confidence}")
    os.environ[CONFIDENCE_ENV] = repr(confidence)


def percent(confidence: float) -> str:
    """A confidence level as its report prints it: 0.999 -> '99.9%', 0.99999 -> '99.999%'."""
    return f"{confidence * 100:.6g}%"


def z_for(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(k: int, n: int, confidence: float | None = None) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (confidence None: default_confidence())."""
    if n <= 0:
        return 0.0, 1.0
    z = z_for(default_confidence() if confidence is None else confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_consistent(k: int, n: int, p: float, confidence: float | None = None) -> bool:
    lo, hi = wilson_interval(k, n, confidence)
    return lo <= p <= hi


def _gammainc_upper(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (series / continued fraction)."""
    if x <= 0:
        return 1.0
    gln = math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return 1.0 - total * math.exp(-x + a * math.log(x) - gln)
    b = x + 1 - a
    c = 1.0 / 1e-300
    d = 1.0 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - gln) * h


def chi2_sf(stat: float, df: int) -> float:
    """P(X >= stat) for X ~ chi-square with df degrees of freedom."""
    return _gammainc_upper(df / 2.0, stat / 2.0)


def chi2_uniform(counts: list[int]) -> tuple[float, int, float]:
    """Chi-square goodness of fit of counts to the uniform distribution: (stat, df, p)."""
    n = sum(counts)
    k = len(counts)
    if n == 0 or k < 2:
        return 0.0, 0, 1.0
    expected = n / k
    stat = sum((c - expected) ** 2 / expected for c in counts)
    return stat, k - 1, chi2_sf(stat, k - 1)


# ---- Kolmogorov–Smirnov: is a sample drawn from a distribution? ------------------------------

def ks_critical(n: int, confidence: float | None = None, m: int | None = None) -> float:
    """The largest D the asymptotic Kolmogorov distribution accepts at `confidence` for a sample of n
    (two samples: of n and m; confidence None: default_confidence())."""
    if confidence is None:
        confidence = default_confidence()
    c = math.sqrt(-0.5 * math.log((1 - confidence) / 2))
    return c * math.sqrt((n + m) / (n * m) if m else 1 / n)


def ks_pvalue(d: float, n: int, m: int | None = None) -> float:
    """P(D >= d) under the null hypothesis, from the Kolmogorov distribution with Stephens'
    small-sample correction (two samples: the effective size nm/(n+m))."""
    ne = n * m / (n + m) if m else n
    if ne <= 0 or d <= 0:
        return 1.0
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    if lam < 0.2:
        return 1.0
    q = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, q))


def ks_statistic(sample: list[float], cdf) -> float:
    """sup |F_n(x) - F(x)| of the sample against cdf (a function). For a discrete F, cdf must give
    P(X <= x); the statistic then errs on the strict side."""
    xs = sorted(sample)
    n = len(xs)
    d = 0.0
    for i, x in enumerate(xs):
        f = cdf(x)
        d = max(d, (i + 1) / n - f, f - i / n)
    return d


def ks_two_sample(a: list[float], b: list[float]) -> float:
    xs, ys = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(xs) and j < len(ys):
        v = min(xs[i], ys[j])
        while i < len(xs) and xs[i] <= v:
            i += 1
        while j < len(ys) and ys[j] <= v:
            j += 1
        d = max(d, abs(i / len(xs) - j / len(ys)))
    return d
