"""duplicate: send a copy of a share of packets (tc clone-redirect)."""

from .base import FaultType, Value, parse_probability, probability_threshold

FAULT = FaultType(
    name="duplicate",
    summary="send a copy of every packet with probability P (tc only: the copy goes out first)",
    program="duplicate",
    hooks=("tc-egress", "tc-ingress"),
    value=Value(name="P", help="share of packets duplicated, 0..1 or 0%..100%", parse=parse_probability),
    unit="every packet at the hook",
    threshold=probability_threshold,
)
