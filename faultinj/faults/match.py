"""Match filters common to every fault: `drop=10%,proto=tcp,dport=443,dst=10.0.0.0/24`.

Pure Python: parse the filter words; kernel/layout.py lays them out as `struct fi_match`
(bpf/lib/match.h) for the config map, so filters change without a reload.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .. import layouts
from ..errors import SpecError
from ..packets import PROTOCOLS, protocol_number
from .base import parse_probability, parse_ratio, whole_number

# bits of fi_match.fields
# the fi_match.fields bits (enum fi_match_field, bpf/lib/match.h), as the BTF says
_FIELD = layouts.enum("fi_match_field")
SRC4, SRC6, DST4, DST6, PROTO, SPORT, DPORT, TCP_FLAGS, VLAN, MARK = (
    _FIELD[f"FI_M_{n}"] for n in ("SRC4", "SRC6", "DST4", "DST6", "PROTO", "SPORT", "DPORT", "TCP_FLAGS", "VLAN",
                                  "MARK"))
TCP_FLAG_BITS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20, "ece": 0x40,
                 "cwr": 0x80}
KEYS = ("src", "dst", "proto", "sport", "dport", "flags", "vlan", "mark", "p", "ratio", "nth", "journal")


@dataclass(frozen=True)
class Match:
    words: tuple[tuple[str, str], ...] = ()      # what the user wrote, in order
    fields: int = 0
    proto: int = 0
    tcp_set: int = 0
    tcp_clear: int = 0
    sport: tuple[int, int] = (0, 0)
    dport: tuple[int, int] = (0, 0)
    vlan: int = 0
    src: tuple[bytes, bytes] = (b"", b"")        # address, mask (packed)
    dst: tuple[bytes, bytes] = (b"", b"")
    nth: int = 0                                  # act on the nth packet of each flow only
    probability: float | None = None              # p= / ratio=: the rate of faults whose value is not one
    options: tuple[tuple[str, object], ...] = ()  # the fault's own words (corrupt: csum=, bits=), parsed
    journal: bool = True                          # record each action in the journal (journal=off: not)
    mark: tuple[int, int] = (0, 0)                # skb->mark & mask == value: (value, mask)
    negate: int = 0                               # field bits whose test is inverted (trace expressions)

    def __str__(self) -> str:
        return "".join(f",{k}={v}" for k, v in self.words)

    def accepts(self, src: str | None, dst: str | None, proto: int, sport: int, dport: int) -> bool:
        """The filter in Python, for what user space sees without the packet (journal events):
        addresses, protocol and ports. TCP flags, VLAN and mark are not judged here (always pass)."""
        def inside(addr: str | None, net: tuple[bytes, bytes]) -> bool:
            if addr is None:
                return False
            raw = ipaddress.ip_address(addr).packed
            return len(raw) == len(net[0]) and all((a & m) == n for a, m, n in zip(raw, net[1], net[0]))

        has_ports = proto in (6, 17)
        hits = {SRC4: lambda: inside(src, self.src), SRC6: lambda: inside(src, self.src),
                DST4: lambda: inside(dst, self.dst), DST6: lambda: inside(dst, self.dst),
                PROTO: lambda: proto == self.proto,
                SPORT: lambda: has_ports and self.sport[0] <= sport <= self.sport[1],
                DPORT: lambda: has_ports and self.dport[0] <= dport <= self.dport[1]}
        # as bpf/lib/match.h FI_M_FAILS: a filtered field passes when its test hits, or negated, misses
        return all(bool(hit()) != bool(self.negate & bit) for bit, hit in hits.items() if self.fields & bit)


def _ports(key: str, text: str) -> tuple[int, int]:
    lo, dash, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi) if dash else int(lo)
    except ValueError:
        a, b = -1, -1
    if not (0 <= a <= b <= 65535):
        raise SpecError(f"{key}={text}: give a port 0..65535 or a range LOW-HIGH (e.g. {key}=443 or {key}=1024-2047)")
    return a, b


def _net(key: str, text: str):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise SpecError(f"{key}={text}: give an address or a network, e.g. {key}=10.0.0.0/24 or {key}=fd00::/64") from None


def _proto(text: str) -> int:
    t = text.lower()
    if protocol_number(t) is not None:
        return protocol_number(t)
    try:
        n = int(t)
    except ValueError:
        n = 0
    if not 1 <= n <= 255:
        raise SpecError(f"proto={text}: give {', '.join(PROTOCOLS)} or a protocol number 1..255")
    return n


def _flags(text: str) -> tuple[int, int]:
    """'+syn-ack' -> (present, absent) bit sets."""
    present = absent = 0
    i = 0
    t = text.lower()
    if not t or t[0] not in "+-":
        raise SpecError(f"flags={text}: give +FLAG (present) and -FLAG (absent), e.g. flags=+syn-ack")
    while i < len(t):
        sign = t[i]
        j = i + 1
        while j < len(t) and t[j] not in "+-":
            j += 1
        name = t[i + 1:j]
        if sign not in "+-" or name not in TCP_FLAG_BITS:
            raise SpecError(f"flags={text}: unknown flag '{name}'; flags: {', '.join(TCP_FLAG_BITS)}")
        if sign == "+":
            present |= TCP_FLAG_BITS[name]
        else:
            absent |= TCP_FLAG_BITS[name]
        i = j
    if present & absent:
        raise SpecError(f"flags={text}: a flag cannot be both present and absent")
    return present, absent


def parse_mark(text: str) -> tuple[int, int]:
    """'0x10' or '0x10/0xff' (decimal too) -> (value, mask): the packet's skb mark & mask == value."""
    value, slash, mask = text.partition("/")
    try:
        v, m = int(value, 0), int(mask, 0) if slash else 0xFFFFFFFF
    except ValueError:
        v = m = -1
    if not (0 <= v <= 0xFFFFFFFF and 0 <= m <= 0xFFFFFFFF):
        raise SpecError(f"mark={text}: give the skb mark as VALUE or VALUE/MASK, 32-bit, e.g. mark=0x10/0xff")
    if v & ~m:
        raise SpecError(f"mark={text}: the value has bits outside the mask (no packet could match)")
    return v, m


def parse_match(items: list[str], options: tuple = ()) -> Match:
    """['proto=tcp', 'dport=443'] -> Match. `options`: the fault's own words (base.Option) allowed too."""
    kw: dict = {"fields": 0}
    words = []
    parsed_options = []
    own = {o.name: o for o in options}
    family = None
    for item in items:
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key not in KEYS and key not in own:
            allowed = (*KEYS, *own)
            import difflib   # a mistake's suggestion only

            near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            mine = f"; this fault's options: {', '.join(own)}" if own else ""
            raise SpecError(f"unknown filter '{key}'{hint}; filters: {', '.join(KEYS)}{mine}")
        if not eq or not value:
            raise SpecError(f"filter '{key}' needs a value: {key}=VALUE")
        if key in dict(words):
            raise SpecError(f"filter '{key}' given twice")
        words.append((key, value))
        if key in own:
            parsed_options.append((key, own[key].parse(key, value)))
        elif key in ("src", "dst"):
            net = _net(key, value)
            if family and family != net.version:
                raise SpecError("src and dst must both be IPv4 or both IPv6")
            family = net.version
            bit = {("src", 4): SRC4, ("src", 6): SRC6, ("dst", 4): DST4, ("dst", 6): DST6}[(key, net.version)]
            kw["fields"] |= bit
            kw[key] = (net.network_address.packed, net.netmask.packed)
        elif key == "proto":
            kw["fields"] |= PROTO
            kw["proto"] = _proto(value)
        elif key in ("sport", "dport"):
            kw["fields"] |= SPORT if key == "sport" else DPORT
            kw[key] = _ports(key, value)
        elif key == "flags":
            kw["fields"] |= TCP_FLAGS
            kw["tcp_set"], kw["tcp_clear"] = _flags(value)
        elif key in ("p", "ratio"):

            if "probability" in kw:
                raise SpecError("give p= or ratio=, not both")
            kw["probability"] = parse_probability("p", value) if key == "p" else 1 / parse_ratio("ratio", value)
        elif key == "nth":
            kw["nth"] = whole_number(value, 1, 2**32 - 1,
                                     f"nth={value}: give the packet number in its flow, 1 or more (nth=1: the first)")
        elif key == "journal":
            if value.lower() not in ("on", "off"):
                raise SpecError(f"journal={value}: give journal=on (record each action, the default) or journal=off")
            kw["journal"] = value.lower() == "on"
        elif key == "vlan":
            kw["fields"] |= VLAN
            kw["vlan"] = whole_number(value, 0, 4095, f"vlan={value}: give a VLAN id 0..4095")
        elif key == "mark":
            kw["fields"] |= MARK
            kw["mark"] = parse_mark(value)
    if "proto" in kw and kw["proto"] not in (6, 17) and kw["fields"] & (SPORT | DPORT):
        raise SpecError("sport/dport filter TCP or UDP: proto must be tcp or udp (or left out)")
    return Match(words=tuple(words), options=tuple(parsed_options), **kw)


NO_MATCH = Match()
__all__ = ["Match", "parse_match", "parse_mark", "NO_MATCH"]
