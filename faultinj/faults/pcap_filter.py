"""tcpdump-style filter expressions for `faultinj trace`, compiled once into kernel filters.

A documented subset of pcap-filter(7):

    expr      := and-expr ('or' | '||') ...        primitive := [src|dst] host ADDR
    and-expr  := unary ('and' | '&&') ...                      | [src|dst] net CIDR
    unary     := ('not' | '!') unary | '(' expr ')'            | [tcp|udp] [src|dst] port N
               | primitive                                     | [tcp|udp] [src|dst] portrange N-M
                                                               | tcp | udp | icmp | icmp6 | sctp
                                                               | ip | ip6 | [ip] proto N | vlan ID

The kernel's filter (bpf/lib/match.h) is an 'and' of field tests, each one possibly negated; the
tracer holds up to MAX_SLOTS of them and traces a packet that passes any. So an expression is
brought to an 'or' of 'and's: `host X` is `src X or dst X` (two filters), `not` is pushed down
to the field tests (De Morgan). What cannot be put that way is refused, one line saying which part:
more than MAX_SLOTS filters, or two tests of one field in one 'and' (`dst port 80 and dst port 81`).
As in pcap-filter, a test never hits a packet that lacks its header, so `not port 22` passes ICMP.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from .. import layouts
from ..errors import SpecError
from ..packets import protocol_number
from .match import DPORT, DST4, DST6, MARK, PROTO, SPORT, SRC4, SRC6, VLAN, Match, parse_mark

MAX_SLOTS = layouts.array_len("fi_trace_config", "match")   # FI_TRACE_SLOTS (bpf/lib/trace.h), from the BTF
# patterns as text: re compiles (and caches) one at its first use, not at every apply's import
_TOKEN = r"\s*(\(|\)|&&|\|\||!|[^\s()!]+)"


@dataclass(frozen=True)
class Test:
    """One field test: where it is stored in a filter, its bit, its value, negated or not."""
    slot: str          # the Match field it fills: src, dst, proto, sport, dport, vlan, mark
    bit: int
    value: object
    text: str          # as the user wrote it, for messages
    negated: bool = False

    def negate(self) -> "Test":
        return replace(self, negated=not self.negated)


# an expression in 'or of ands' form: each inner tuple one filter
Dnf = tuple[tuple[Test, ...], ...]


def compile_filter(expression: str) -> tuple[Match, ...]:
    """'tcp and dst port 80' -> the filters the kernel evaluates (a packet passes if any does)."""
    tokens = re.findall(_TOKEN, expression)
    if not tokens:
        raise SpecError("empty filter expression: give e.g. 'tcp and dst port 80'")
    parser = _Parser(tokens, expression)
    dnf = parser.expr()
    if parser.pos < len(tokens):
        raise SpecError(f"filter expression: unexpected '{tokens[parser.pos]}' (after "
                        f"'{' '.join(tokens[:parser.pos])}')")
    dnf = _absorb(dnf)
    if len(dnf) > MAX_SLOTS:
        raise SpecError(f"filter expression '{expression}' needs {len(dnf)} kernel filters ('or' of 'and's), "
                        f"more than {MAX_SLOTS}: narrow it (each 'host' or 'port' without src/dst counts twice)")
    return tuple(_to_match(conj) for conj in dnf)


def _to_match(conj: tuple[Test, ...]) -> Match:
    kw: dict = {"fields": 0, "negate": 0}
    for t in conj:
        kw["fields"] |= t.bit
        kw["negate"] |= t.bit if t.negated else 0
        kw[t.slot] = t.value
    return Match(**kw)


def _and(a: Dnf, b: Dnf) -> Dnf:
    out = []
    for x in a:
        for y in b:
            merged = {t.slot: t for t in x}
            for t in y:
                have = merged.get(t.slot)
                if have is not None and have != t and _implies(t, have):
                    merged[t.slot] = t
                    continue
                if have is not None and have != t and _implies(have, t):
                    continue
                if have is not None and have != t:
                    raise SpecError(f"filter expression: '{have.text}' and '{t.text}' both test {t.slot} in one "
                                    "'and': the kernel filter holds one test of each field (unsupported)")
                merged[t.slot] = t
            out.append(tuple(merged.values()))
    return tuple(out)


def _absorb(a: Dnf) -> Dnf:
    """Drop each filter that another, with a subset of its tests, already passes (x or (x and y) = x)."""
    sets = [frozenset(c) for c in a]
    keep = []
    for i, s in enumerate(sets):
        if any(o < s or (o == s and j < i) for j, o in enumerate(sets) if j != i):
            continue
        keep.append(a[i])
    return tuple(keep)


def _implies(a: Test, b: Test) -> bool:
    """'src host X' implies 'ip' (a test every IPv4 source passes): one filter holds the first."""
    return (not a.negated and not b.negated and a.bit == b.bit and a.slot in ("src", "dst")
            and not any(b.value[1]))


def _not(a: Dnf) -> Dnf:
    """not (c1 or c2 ...) = (not c1) and (not c2) ...; not (t1 and t2) = (not t1) or (not t2)."""
    result: Dnf = ((),)
    for conj in a:
        result = _and(result, tuple((t.negate(),) for t in conj))
    return result


class _Parser:
    def __init__(self, tokens: list[str], text: str):
        self.tokens, self.pos, self.text = tokens, 0, text

    def peek(self) -> str | None:
        return self.tokens[self.pos].lower() if self.pos < len(self.tokens) else None

    def take(self, what: str) -> str:
        tok = self.peek()
        if tok is None:
            raise SpecError(f"filter expression '{self.text}' ends early: {what} expected")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expr(self) -> Dnf:
        dnf = self.conj()
        while self.peek() in ("or", "||"):
            self.pos += 1
            dnf = dnf + self.conj()
        return dnf

    def conj(self) -> Dnf:
        dnf = self.unary()
        while self.peek() in ("and", "&&"):
            self.pos += 1
            dnf = _and(dnf, self.unary())
        return dnf

    def unary(self) -> Dnf:
        tok = self.peek()
        if tok in ("not", "!"):
            self.pos += 1
            return _not(self.unary())
        if tok == "(":
            self.pos += 1
            dnf = self.expr()
            if self.take("')'") != ")":
                raise SpecError(f"filter expression '{self.text}': ')' expected at '{self.tokens[self.pos - 1]}'")
            return dnf
        return self.primitive()

    def primitive(self) -> Dnf:
        start = self.pos
        tok = self.take("a primitive (host, net, port, tcp, ...)").lower()
        proto = None
        if protocol_number(tok) is not None and self.peek() in ("src", "dst", "port", "portrange"):
            proto, tok = tok, self.take("port").lower()     # 'tcp dst port 80'
        direction = None
        if tok in ("src", "dst"):
            direction, tok = tok, self.take("host, net or port").lower()
        if tok in ("host", "net"):
            value = self.take(f"an address after '{tok}'")
            text = " ".join(self.tokens[start:self.pos])
            try:
                net = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise SpecError(f"filter expression: '{tok} {value}': give an address"
                                + (" or a network (10.0.0.0/24)" if tok == "net" else "")) from None
            if tok == "host" and net.prefixlen != net.max_prefixlen:
                raise SpecError(f"filter expression: 'host {value}': a host is one address (use 'net {value}')")
            stored = (net.network_address.packed, net.netmask.packed)
            src = Test("src", SRC4 if net.version == 4 else SRC6, stored, text)
            dst = Test("dst", DST4 if net.version == 4 else DST6, stored, text)
            dnf: Dnf = ((src,),) if direction == "src" else ((dst,),) if direction == "dst" else ((src,), (dst,))
        elif tok in ("port", "portrange"):
            value = self.take(f"a port after '{tok}'")
            text = " ".join(self.tokens[start:self.pos])
            lo, dash, hi = value.partition("-")
            try:
                rng = (int(lo), int(hi) if dash else int(lo))
            except ValueError:
                rng = (-1, -1)
            if not 0 <= rng[0] <= rng[1] <= 65535 or (tok == "port" and dash) or (tok == "portrange" and not dash):
                raise SpecError(f"filter expression: '{tok} {value}': give "
                                + ("a port 0..65535" if tok == "port" else "a range LOW-HIGH (e.g. 1024-2047)"))
            sp, dp = Test("sport", SPORT, rng, text), Test("dport", DPORT, rng, text)
            dnf = ((sp,),) if direction == "src" else ((dp,),) if direction == "dst" else ((sp,), (dp,))
        elif direction:
            raise SpecError(f"filter expression: '{direction} {tok}': src/dst qualify host, net or port")
        elif protocol_number(tok) is not None:
            dnf = ((Test("proto", PROTO, protocol_number(tok), tok),),)
        elif tok in ("proto", "ip") and (tok == "proto" or self.peek() == "proto"):
            if tok == "ip":
                self.pos += 1
            value = self.take("a protocol number after 'proto'")
            number = protocol_number(value) or (int(value) if value.isdigit() else 0)
            if not 1 <= number <= 255:
                raise SpecError(f"filter expression: 'proto {value}': give tcp, udp, icmp, icmp6, sctp or 1..255")
            dnf = ((Test("proto", PROTO, number, f"proto {value}"),),)
        elif tok in ("ip", "ip6"):
            # any IPv4 (IPv6) packet: an address test that every address passes
            size = 4 if tok == "ip" else 16
            dnf = ((Test("src", SRC4 if tok == "ip" else SRC6, (bytes(size), bytes(size)), tok),),)
        elif tok == "vlan":
            value = self.peek()
            if value is None or not value.isdigit():
                raise SpecError("filter expression: 'vlan' needs an id here ('vlan 10'): the kernel filter "
                                "tests the VLAN id, not whether a tag is present (unsupported)")
            self.pos += 1
            vid = int(value)
            if vid > 4095:
                raise SpecError(f"filter expression: 'vlan {value}': give a VLAN id 0..4095")
            dnf = ((Test("vlan", VLAN, vid, f"vlan {value}"),),)
        elif tok == "mark":   # not pcap-filter: the skb mark, as --mark
            value = self.take("VALUE[/MASK] after 'mark'")
            dnf = ((Test("mark", MARK, parse_mark(value), f"mark {value}"),),)
        else:
            raise SpecError(f"filter expression: '{tok}' is not supported; supported: host, net, port, portrange "
                            "(with src/dst), tcp, udp, icmp, icmp6, sctp, ip, ip6, proto N, vlan ID, mark V[/M], "
                            "and/or/not, parentheses")
        if proto is not None:
            dnf = _and(((Test("proto", PROTO, protocol_number(proto), proto),),), dnf)
        return dnf
