from .. import layouts
from ..errors import SpecError
from .base import FaultType, Value
from .match import _flags
from .match import TCP_FLAG_BITS

SET_SHIFT = layouts.enum("fi_tcp_flags_param")["FI_TF_SET_SHIFT"]   # param: set << SET_SHIFT | clear


def parse_flag_change(fault: str, text: str) -> tuple[int, int]:
    """'+psh-ack' -> (bits to set, bits to clear)."""
    try:
        return _flags(text)
    except SpecError as exc:
        raise SpecError(f"{fault}: {str(exc).replace('flags=', '')}; e.g. {fault}=+psh or {fault}=+rst-ack") from None


def canonical(fault: str, text: str) -> str:
    """The change in a fixed spelling ('+ACK-rst' -> '+rst-ack'): what records and status show."""
    set_, clear = parse_flag_change(fault, text)
    return "".join(f"{sign}{name}" for sign, bits in (("+", set_), ("-", clear))
                   for name, bit in TCP_FLAG_BITS.items() if bits & bit)


def _param(change: str, _options: dict) -> int:
    set_, clear = parse_flag_change("tcp-flags", change)
    return set_ << SET_SHIFT | clear


FAULT = FaultType(
    name="tcp-flags",
    summary="set and/or clear TCP flags (FIN SYN RST PSH ACK URG ECE CWR) at a rate or on the nth packet",
    program="tcp_flags",
    hooks=("tc-egress", "tc-ingress"),
    value=Value(name="CHANGE", help="+FLAG to set, -FLAG to clear, e.g. +psh, +rst-ack; rate: p=/ratio=, "
                "or nth=K", parse=canonical),
    unit="TCP packets (that pass the filter) at the hook",
    threshold=None,
    param=_param,
)
