from .base import FaultType, Value, parse_probability, probability_threshold

FAULT = FaultType(
    name="first-psh",
    summary="PSH on the first data segment of every TCP connection (the seed article's OVS bug)",
    program="first_psh",
    hooks=("tc-egress", "tc-ingress"),
    value=Value(
        name="probability",
        help="share of connections hit, 0..1 or 0%..100% (default: all)",
        parse=parse_probability,
        default=1.0,
    ),
    unit="first data segments of TCP connections (and their retransmissions), as skbs at the hook: "
    "set gso_max_segs 1 so the first skb is the first wire segment",
    threshold=probability_threshold,
)
