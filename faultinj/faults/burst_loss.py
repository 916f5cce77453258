"""burst-loss: Gilbert-Elliott loss with netem's gemodel parameters (p, r, 1-h, 1-k)."""

from ..errors import SpecError
from .base import FaultType, Value, parse_probability

U32_MAX = (1 << 32) - 1


def canonical(fault: str, text: str) -> str:
    """'1%/30%' -> '0.01/0.3/1.0/0.0' (netem's defaults: 1-h = 100%, 1-k = 0%)."""
    parts = text.split("/")
    if not 2 <= len(parts) <= 4:
        raise SpecError(f"{fault}: give p/r[/1-h[/1-k]] as netem's gemodel: p good->bad, r bad->good, "
                        f"1-h loss in bad (default 100%), 1-k loss in good (default 0%), e.g. {fault}=1%/30%")
    probs = [parse_probability(fault, t) for t in parts] + [1.0, 0.0][len(parts) - 2:]
    if probs[0] > 0 and probs[1] == 0:
        raise SpecError(f"{fault}: r=0 never leaves the bad state; give r > 0")
    return "/".join(repr(p) for p in probs)


def thresholds(value: str, _options: dict | None = None) -> tuple:
    return tuple(min(U32_MAX, round(float(p) * (1 << 32))) for p in str(value).split("/"))


def expected_loss(value: str) -> float:
    p, r, loss_bad, loss_good = (float(x) for x in str(value).split("/"))
    bad = p / (p + r) if p + r else 0.0
    return bad * loss_bad + (1 - bad) * loss_good


FAULT = FaultType(
    name="burst-loss",
    summary="bursty loss: Gilbert-Elliott with netem's gemodel parameters, per flow and seeded",
    program="burst_loss",
    hooks=("tc-egress", "tc-ingress", "xdp"),
    value=Value(name="p/r[/1-h[/1-k]]", help="netem gemodel: p good->bad, r bad->good, 1-h loss in bad "
                "(default 100%), 1-k loss in good (default 0%); e.g. 1%/30%", parse=canonical),
    unit="every packet (that passes the filter); long-run loss p/(p+r)*(1-h) + r/(p+r)*(1-k), "
    "mean burst 1/r packets",
    threshold=None,
    extra=thresholds,
)
