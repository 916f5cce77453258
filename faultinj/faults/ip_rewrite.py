"""ttl, ecn-ce, dscp: one program (bpf/ip_rewrite.bpf.c) rewriting one IP header field."""

from .. import layouts
from ..errors import SpecError
from .base import FaultType, Value, parse_probability, probability_threshold, whole_number

# param: mode << MODE_SHIFT | value (bpf/ip_rewrite.bpf.c), as the BTF says
MODE_SHIFT = layouts.enum("fi_rewrite_param")["FI_RW_MODE_SHIFT"]
TTL_SET, TTL_DEC, ECN_CE, DSCP = (layouts.enum("fi_rewrite_mode")[f"FI_RW_{n}"] for n in ("TTL_SET", "TTL_DEC",
                                                                                      "ECN_CE", "DSCP"))


def parse_ttl(fault: str, text: str) -> int:
    """'1' sets the TTL to 1; '-2' takes 2 off it."""
    try:
        n = int(text.strip(), 10)
    except ValueError:
        n = None
    if n is None or not (-255 <= n <= 255) or n == 0 and text.strip().startswith("-"):
        raise SpecError(f"{fault}: bad value '{text}': give N (set TTL/hop limit to N, 0..255) or -N (take N off, "
                        f"1..255), e.g. {fault}=1 or {fault}=-1")
    return n


def parse_dscp(fault: str, text: str) -> int:
    return whole_number(text, 0, 63, f"{fault}: bad value '{text}': give a DSCP 0..63 (e.g. {fault}=46 for EF)", 0)


FAULTS = [
    FaultType(
        name="ttl",
        summary="set the TTL / hop limit to N, or take N off it (-N): TTL-expiry replays",
        program="ip_rewrite",
        hooks=("tc-egress", "tc-ingress", "xdp"),
        value=Value(name="N", help="N sets the TTL to N (0..255); -N takes N off (not below 0)", parse=parse_ttl),
        unit="IPv4 and IPv6 packets",
        threshold=None,
        param=lambda n, _: (TTL_DEC << MODE_SHIFT | -n) if n < 0 else (TTL_SET << MODE_SHIFT | n),
    ),
    FaultType(
        name="ecn-ce",
        summary="mark Congestion Experienced on ECN-capable packets with probability P",
        program="ip_rewrite",
        hooks=("tc-egress", "tc-ingress", "xdp"),
        value=Value(name="P", help="share of ECN-capable packets marked, 0..1 or 0%..100% (default: all)",
                    parse=parse_probability, default=1.0),
        unit="IPv4/IPv6 packets with ECT(0) or ECT(1)",
        threshold=probability_threshold,
        param=lambda p, _: ECN_CE << MODE_SHIFT,
    ),
    FaultType(
        name="dscp",
        summary="rewrite the DSCP (ECN bits kept)",
        program="ip_rewrite",
        hooks=("tc-egress", "tc-ingress", "xdp"),
        value=Value(name="N", help="the DSCP to write, 0..63", parse=parse_dscp),
        unit="IPv4 and IPv6 packets",
        threshold=None,
        param=lambda n, _: DSCP << MODE_SHIFT | n,
    ),
]
