"""Reading captured frames without scapy: the few fields verification needs.

scapy costs ~0.3-0.9 s to import and ~50 us a packet; verification reads
tens of thousands of frames, so this walks the headers itself. Checksums are
checked only where the whole packet was captured.
"""

from __future__ import annotations

import ipaddress
import struct
from array import array
from dataclasses import dataclass

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


@dataclass
class Packet:
    version: int | None = None   # 4, 6, or None for non-IP
    ttl: int | None = None       # TTL or hop limit
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

    def journal_key(self) -> tuple:
        """The packet as a journal event names it (faultinj/journal.py Event.key)."""
        src = str(ipaddress.ip_address(self.src)) if self.src else None
        dst = str(ipaddress.ip_address(self.dst)) if self.dst else None
        if self.proto in (1, 58):
            return (src, dst, self.proto, self.echo_id, 0, self.ip_id, self.echo_seq)
        return (src, dst, self.proto or 0, self.sport or 0, self.dport or 0, self.ip_id,
                self.seq if self.proto == 6 and self.seq is not None else 0)


def parse(data: bytes, wire_len: int | None = None) -> Packet:
    wire_len = len(data) if wire_len is None else wire_len
    pkt = Packet()
    if len(data) < 14:
        return pkt
    off = 12
    (etype,) = struct.unpack_from("!H", data, off)
    off = 14
    while etype in (0x8100, 0x88A8) and len(data) >= off + 4:
        (etype,) = struct.unpack_from("!H", data, off + 2)
        off += 4
    if etype == 0x0800 and len(data) >= off + 20:
        ihl = (data[off] & 0x0F) * 4
        tot = struct.unpack_from("!H", data, off + 2)[0]
        pkt.version, pkt.ttl, pkt.proto = 4, data[off + 8], data[off + 9]
        pkt.ip_id = struct.unpack_from("!H", data, off + 4)[0]
        pkt.src, pkt.dst = data[off + 12: off + 16], data[off + 16: off + 20]
        if len(data) >= off + ihl:
            pkt.ip_csum_ok = checksum_ok(data[off: off + ihl])
        frag = struct.unpack_from("!H", data, off + 6)[0] & 0x1FFF
        l4, l4_len = off + ihl, tot - ihl
        if frag or ihl < 20 or l4_len < 0:  # a fragment, or a malformed header: no L4 to read
            return pkt
        pseudo = pkt.src + pkt.dst + struct.pack("!BBH", 0, pkt.proto, l4_len)
    elif etype == 0x86DD and len(data) >= off + 40:
        plen = struct.unpack_from("!H", data, off + 4)[0]
        pkt.version, pkt.proto, pkt.ttl = 6, data[off + 6], data[off + 7]
        pkt.src, pkt.dst = data[off + 8: off + 24], data[off + 24: off + 40]
        l4, l4_len = off + 40, plen
        pseudo = pkt.src + pkt.dst + struct.pack("!IxxxB", l4_len, pkt.proto)
    else:
        return pkt
    whole = off + (l4 - off) + l4_len <= len(data) and l4_len > 0
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
    if whole and pkt.proto in (6, 17, 58):
        pkt.l4_csum_ok = checksum_ok(seg, pseudo)
    elif whole and pkt.proto == 1:
        pkt.l4_csum_ok = checksum_ok(seg)
    return pkt
