from .base import FaultType, Value, parse_ratio, ratio_threshold

FAULT = FaultType(
    name="psh-ratio",
    summary="TCP data segments without SYN/FIN/RST/PSH get PSH with probability 1/N",
    program="psh_ratio",
    hooks=("tc-egress", "tc-ingress"),
    value=Value(name="N", help="one eligible segment in N gets PSH (1..1000000000)", parse=parse_ratio),
    # GSO: tc egress sees super-packets; set the link's gso_max_segs to 1 to
    # make each packet at the hook one segment on the wire (see DESIGN.md)
    unit="TCP packets with payload and none of SYN/FIN/RST/PSH, as skbs at the hook "
    "(GSO super-packets on egress unless the link's gso_max_segs is 1)",
    threshold=ratio_threshold,
)
