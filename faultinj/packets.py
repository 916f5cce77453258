"""Reading captured frames without scapy: the few fields verification needs.

scapy costs ~0.3-0.9 s to import and ~50 us a packet; verification reads
tens of thousands of frames, so this walks the headers itself. Checksums are
checked only where the whole packet was captured.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from array import array
from dataclasses import dataclass

from . import layouts

# The IP protocols faultinj names (match=proto=, pcap-filter expressions, the journal, the
# tracer): the one table of them. pcap-filter calls ICMPv6 icmp6, and so may a filter here.
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132}
PROTOCOL_ALIASES = {"icmp6": 58}
PROTOCOL_NAMES = {n: name for name, n in PROTOCOLS.items()}     # 6 -> 'tcp'
PORTED = (6, 17, 132)          # protocols whose flows have ports (a journal event shows them)


def protocol_number(name: str) -> int | None:
    """A protocol's number by its name (tcp, icmp6, ...), in any case; None for a name not known."""
    name = name.lower()
    return PROTOCOLS.get(name, PROTOCOL_ALIASES.get(name))


def protocol_name(number: int) -> str | int:
    """'tcp' for 6; the number itself for a protocol without a name here."""
    return PROTOCOL_NAMES.get(number, number)


TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}


def inet_sum(data: bytes, start: int = 0) -> int:
    if len(data) % 2:
        data = data + b"\0"
    s = start + sum(array("H", data))  # native order; folded below, byte-swapped at the end
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum_ok(data: bytes, pseudo: bytes = b"") -> bool:
    """A header or segment with its checksum in place sums to 0xffff."""
    return inet_sum(pseudo + data) == 0xFFFF


@functools.lru_cache(maxsize=4096)
def address(raw: bytes) -> str:
    """4 or 16 bytes as an address's text (a tracer names the same few addresses again and again)."""
    return str(ipaddress.ip_address(raw))


@dataclass
class Packet:
    version: int | None = None   # 4, 6, or None for non-IP
    ttl: int | None = None       # TTL or hop limit
    tos: int | None = None       # IPv4 TOS / IPv6 traffic class: DSCP << 2 | ECN
    proto: int | None = None
    src: bytes = b""
    dst: bytes = b""
    ip_csum_ok: bool | None = None
    icmp_type: int | None = None
    sport: int | None = None
    dport: int | None = None
    tcp_flags: int | None = None
    seq: int | None = None
    payload_len: int | None = None
    payload: bytes = b""         # what was captured of the L4 payload
    l4_csum_ok: bool | None = None  # None when the capture was cut short
    ip_id: int = 0               # IPv4 identification
    echo_id: int = 0             # ICMP/ICMPv6 echo identifier and sequence
    echo_seq: int = 0
    vlan: int = 0                # VID of the outer tag; 0 untagged
    fragment: bool = False       # a fragment other than the first: no L4 header
    l4_len: int | None = None    # L4 header + payload, from the IP header's length

    def journal_key(self) -> tuple:
        """The packet as a journal event names it (faultinj/journal.py Event.key)."""
        src = address(self.src) if self.src else None
        dst = address(self.dst) if self.dst else None
        if self.proto in (1, 58):
            return (src, dst, self.proto, self.echo_id, 0, self.ip_id, self.echo_seq)
        return (src, dst, self.proto or 0, self.sport or 0, self.dport or 0, self.ip_id,
                self.seq if self.proto == 6 and self.seq is not None else 0)


# as far as bpf/lib/parse.h parses (enum fi_parse_limit): a third tag is "another ethertype"
_LIMIT = layouts.enum("fi_parse_limit")
MAX_VLAN, MAX_IPV6_EXT = _LIMIT["FI_MAX_VLAN"], _LIMIT["FI_MAX_IPV6_EXT"]
IPV6_EXT = (0, 43, 60, 44, 51)   # hop-by-hop, routing, destination options, fragment, AH


def _ipv6_ext(data: bytes, pos: int, nxt: int, pkt: Packet) -> tuple[int, int] | None:
    """Walk IPv6 extension headers as bpf/lib/parse.h does: (upper-layer protocol, its offset),
    or None when a header is cut short."""
    for _ in range(MAX_IPV6_EXT):
        if nxt not in IPV6_EXT:
            break
        if len(data) < pos + 8 if nxt == 44 else len(data) < pos + 2:
            return None
        if nxt == 44:
            if struct.unpack_from("!H", data, pos + 2)[0] & 0xFFF8:
                pkt.fragment = True
            nxt, pos = data[pos], pos + 8
        elif nxt == 51:
            nxt, pos = data[pos], pos + (data[pos + 1] + 2) * 4
        else:
            nxt, pos = data[pos], pos + (data[pos + 1] + 1) * 8
        if pos > len(data):
            return None
    return nxt, pos


def parse(data: bytes, wire_len: int | None = None, checksums: bool = True) -> Packet:
    """The fields of a frame, read the way the programs read them (bpf/lib/parse.h; a test holds
    the two to the same frames). A frame cut short (snaplen) yields what its bytes hold.
    checksums=False: leave ip_csum_ok and l4_csum_ok None (the tracer names packets, it does not
    verify them: checksumming was most of its cost per hop)."""
    wire_len = len(data) if wire_len is None else wire_len
    pkt = Packet()
    if len(data) < 14:
        return pkt
    (etype,) = struct.unpack_from("!H", data, 12)
    off = 14
    for i in range(MAX_VLAN):
        if etype not in (0x8100, 0x88A8):
            break
        if len(data) < off + 4:
            return pkt
        if i == 0:
            pkt.vlan = struct.unpack_from("!H", data, off)[0] & 0x0FFF
        (etype,) = struct.unpack_from("!H", data, off + 2)
        off += 4
    if etype == 0x0800 and len(data) >= off + 20:
        ihl = (data[off] & 0x0F) * 4
        if data[off] >> 4 != 4 or ihl < 20:
            return pkt
        tot = struct.unpack_from("!H", data, off + 2)[0]
        pkt.version, pkt.ttl, pkt.proto, pkt.tos = 4, data[off + 8], data[off + 9], data[off + 1]
        pkt.ip_id = struct.unpack_from("!H", data, off + 4)[0]
        pkt.src, pkt.dst = data[off + 12: off + 16], data[off + 16: off + 20]
        if checksums and len(data) >= off + ihl:
            pkt.ip_csum_ok = checksum_ok(data[off: off + ihl])
        pkt.fragment = bool(struct.unpack_from("!H", data, off + 6)[0] & 0x1FFF)
        # tot_len 0: BIG TCP's "larger than 64K", the frame says how long
        l4, l4_len = off + ihl, (tot - ihl if tot else wire_len - off - ihl)
        pkt.l4_len = max(l4_len, 0)
        if pkt.fragment or l4_len < 0 or len(data) < l4:  # no L4 header to read
            return pkt
        pseudo = pkt.src + pkt.dst + struct.pack("!BBH", 0, pkt.proto, l4_len)
    elif etype == 0x86DD and len(data) >= off + 40:
        if data[off] >> 4 != 6:
            return pkt
        plen = struct.unpack_from("!H", data, off + 4)[0]
        pkt.version, pkt.ttl = 6, data[off + 7]
        pkt.tos = (data[off] & 0x0F) << 4 | data[off + 1] >> 4
        pkt.src, pkt.dst = data[off + 8: off + 24], data[off + 24: off + 40]
        walked = _ipv6_ext(data, off + 40, data[off + 6], pkt)
        if walked is None:
            return pkt
        pkt.proto, l4 = walked
        ext = l4 - off - 40
        l4_len = plen - ext if plen else wire_len - l4
        pkt.l4_len = max(l4_len, 0)
        if pkt.fragment or l4_len < 0:
            return pkt
        pseudo = pkt.src + pkt.dst + struct.pack("!IxxxB", l4_len, pkt.proto)
    else:
        return pkt
    whole = checksums and l4 + l4_len <= len(data) and l4_len > 0
    seg = data[l4: l4 + l4_len]
    if pkt.proto == 6 and len(seg) >= 20:
        pkt.sport, pkt.dport, pkt.seq = struct.unpack_from("!HHI", seg, 0)
        doff = (seg[12] >> 4) * 4
        pkt.tcp_flags = seg[13]
        pkt.payload_len = l4_len - doff
        pkt.payload = seg[doff:]
    elif pkt.proto == 17 and len(seg) >= 8:
        pkt.sport, pkt.dport = struct.unpack_from("!HH", seg, 0)
        pkt.payload_len = l4_len - 8
        pkt.payload = seg[8:]
    elif pkt.proto in (1, 58) and len(seg) >= 8:
        pkt.icmp_type = seg[0]
        pkt.echo_id, pkt.echo_seq = struct.unpack_from("!HH", seg, 4)
        pkt.payload_len = l4_len - 8
    if whole and pkt.proto == 17 and pkt.version == 4 and len(seg) >= 8 and seg[6:8] == b"\0\0":
        pkt.l4_csum_ok = True   # IPv4 UDP checksum 0: "no checksum" (RFC 768); IPv6 requires one
    elif whole and pkt.proto in (6, 17, 58):
        pkt.l4_csum_ok = checksum_ok(seg, pseudo)
    elif whole and pkt.proto == 1:
        pkt.l4_csum_ok = checksum_ok(seg)
    return pkt
