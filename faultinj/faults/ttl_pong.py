from .base import FaultType, Value, parse_probability, probability_threshold

FAULT = FaultType(
    name="ttl-pong",
    summary="ICMP/ICMPv6 echo replies get a TTL (hop limit) drawn uniformly from 1..original",
    program="ttl_pong",
    hooks=("xdp", "tc-ingress", "tc-egress"),
    value=Value(
        name="probability",
        help="share of echo replies hit, 0..1 or 0%..100% (default: all)",
        parse=parse_probability,
        default=1.0,
    ),
    unit="echo replies at the hook",
    threshold=probability_threshold,
)
