"""corrupt: flip random payload bits at a rate, the L4 checksum fixed (default) or left wrong."""

from .. import layouts
from ..errors import SpecError
from .base import FaultType, Option, Value, parse_probability, probability_threshold, whole_number

_PARAM = layouts.enum("fi_corrupt_param")   # bpf/corrupt.bpf.c
BAD_CSUM, MAX_BITS = _PARAM["FI_CORRUPT_BAD_CSUM"], _PARAM["FI_CORRUPT_MAX_BITS"]


def parse_csum(name: str, text: str) -> str:
    t = text.strip().lower()
    if t not in ("fix", "bad"):
        raise SpecError(f"{name}={text}: give csum=fix (the corruption reaches the application) or csum=bad "
                        "(the receiver drops the packet)")
    return t


def parse_bits(name: str, text: str) -> int:
    return whole_number(text, 1, MAX_BITS, f"{name}={text}: give the number of bits to flip per packet, 1..{MAX_BITS}")


FAULT = FaultType(
    name="corrupt",
    summary="flip random bits in the payload with probability P; checksum fixed (csum=fix) or left wrong (csum=bad)",
    program="corrupt",
    hooks=("tc-egress", "tc-ingress", "xdp"),
    value=Value(name="P", help="share of packets corrupted, 0..1 or 0%..100%", parse=parse_probability),
    unit="IPv4/IPv6 packets with payload",
    threshold=probability_threshold,
    param=lambda p, o: o["bits"] | (BAD_CSUM if o["csum"] == "bad" else 0),
    options=(
        Option("csum", "fix: keep the TCP/UDP/ICMP checksum valid, so the corruption reaches the application; "
               "bad: leave it wrong, so the receiver drops the packet (at tc egress on a veth, needs the "
               "sender's tx checksum offload off: its peer never checks a checksum left to the offload)", parse_csum, "fix"),
        Option("bits", f"bits flipped per packet, 1..{MAX_BITS}", parse_bits, 1),
    ),
)
