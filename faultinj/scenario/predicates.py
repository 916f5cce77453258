"""Packet predicates for expectations: `tcp and data and not psh`, `ttl < 64`.

Words: ipv4 ipv6 tcp udp icmp data echo_reply echo_request and the TCP flags
fin syn rst psh ack urg ece cwr; comparisons `FIELD OP NUMBER` on ttl,
payload_len, sport, dport, proto; joined with `and`, negated with `not`.
"""

from __future__ import annotations

import operator
import re
from typing import Callable

from ..errors import SpecError
from ..packets import TCP_FLAGS, Packet

Predicate = Callable[[Packet], bool]

_WORDS: dict[str, Predicate] = {
    "all": lambda p: True,
    "ip": lambda p: p.version is not None,
    "ipv4": lambda p: p.version == 4,
    "ipv6": lambda p: p.version == 6,
    "tcp": lambda p: p.proto == 6 and p.tcp_flags is not None,
    "udp": lambda p: p.proto == 17,
    "icmp": lambda p: p.proto in (1, 58),
    "data": lambda p: bool(p.payload_len),
    "echo_reply": lambda p: (p.proto, p.icmp_type) in ((1, 0), (58, 129)),
    "echo_request": lambda p: (p.proto, p.icmp_type) in ((1, 8), (58, 128)),
    "bad_checksum": lambda p: p.ip_csum_ok is False or p.l4_csum_ok is False,
}
for _flag, _name in zip("FSRPAUEC", ("fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr")):
    _WORDS[_name] = (lambda bit: lambda p: p.tcp_flags is not None and bool(p.tcp_flags & bit))(TCP_FLAGS[_flag])

FIELDS = ("ttl", "payload_len", "sport", "dport", "proto")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
        "!=": operator.ne}
_CMP = re.compile(r"^\s*(\w+)\s*(<=|>=|==|!=|<|>)\s*(\d+)\s*$")


def compile_predicate(text: str) -> Predicate:
    if not isinstance(text, str) or not text.strip():
        raise SpecError("a packet predicate must be a non-empty string, e.g. 'tcp and data'")
    parts = [t.strip() for t in re.split(r"\band\b", text)]
    tests: list[Predicate] = []
    for part in parts:
        negate = False
        if part.startswith("not "):
            negate, part = True, part[4:].strip()
        m = _CMP.match(part)
        if m:
            field, op, num = m.group(1), _OPS[m.group(2)], int(m.group(3))
            if field not in FIELDS:
                raise SpecError(f"unknown field '{field}' in '{text}': fields are {', '.join(FIELDS)}")
            test = (lambda f, o, n: lambda p: getattr(p, f) is not None and o(getattr(p, f), n))(field, op, num)
        elif part in _WORDS:
            test = _WORDS[part]
        else:
            raise SpecError(f"cannot read '{part}' in predicate '{text}': use words "
                            f"({', '.join(sorted(_WORDS))}) or FIELD OP NUMBER ({', '.join(FIELDS)})")
        tests.append((lambda t: lambda p: not t(p))(test) if negate else test)
    return lambda p: all(t(p) for t in tests)
