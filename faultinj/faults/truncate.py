"""truncate: cut frames to N bytes, headers left saying more."""

from .base import FaultType, Value, whole_number

MIN_LEN, MAX_LEN = 14, 65535


def parse_length(fault: str, text: str) -> int:
    return whole_number(text, MIN_LEN, MAX_LEN, f"{fault}: bad value '{text}': give the length to cut frames to "
                        f"in bytes, Ethernet header included, {MIN_LEN}..{MAX_LEN} (e.g. {fault}=100)")


FAULT = FaultType(
    name="truncate",
    summary="cut frames longer than N bytes to N (IP/L4 lengths left as they were: the receiver drops them)",
    program="truncate",
    hooks=("tc-egress", "tc-ingress", "xdp"),
    value=Value(name="N", help=f"the frame length to cut to, Ethernet header included ({MIN_LEN}..{MAX_LEN}); "
                "rate: p=/ratio=, or nth=K", parse=parse_length),
    unit="frames longer than N",
    threshold=None,
    param=lambda n, _: n,
)
