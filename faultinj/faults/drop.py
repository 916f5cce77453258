from .base import FaultType, Value, parse_probability, probability_threshold

FAULT = FaultType(
    name="drop",
    summary="drop every packet with probability P",
    program="drop",
    hooks=("tc-egress", "tc-ingress", "xdp"),
    value=Value(name="P", help="drop probability, 0..1 or 0%..100% (e.g. 0.05 or 5%)", parse=parse_probability),
    unit="every packet at the hook",
    threshold=probability_threshold,
)
