"""Classic pcap files: read and write (no scapy: tens of thousands of frames)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

from .errors import SpecError

LINKTYPE_ETHERNET = 1
_MAGICS = {0xA1B2C3D4: ("<", 1000), 0xD4C3B2A1: (">", 1000), 0xA1B23C4D: ("<", 1), 0x4D3CB2A1: (">", 1)}


@dataclass
class Record:
    ts_ns: int
    length: int     # on the wire
    data: bytes     # captured


def read(path: str) -> Iterator[Record]:
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        head = f.read(24)
        if len(head) < 24:
            raise SpecError(f"{path} is not a pcap file (too short)")
        magic = struct.unpack("<I", head[:4])[0]
        if magic == 0x0A0D0D0A:
            raise SpecError(f"{path} is pcapng: convert it with 'editcap -F pcap {path} out.pcap'")
        if magic not in _MAGICS:
            raise SpecError(f"{path} is not a pcap file (magic {magic:#x})")
        order, ns_per_unit = _MAGICS[magic]
        linktype = struct.unpack(order + "I", head[20:24])[0] & 0xFFFF
        if linktype != LINKTYPE_ETHERNET:
            raise SpecError(f"{path} has link type {linktype}; only Ethernet (1) captures can be replayed")
        rec = struct.Struct(order + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, incl, orig = rec.unpack(h)
            data = f.read(incl)
            if len(data) < incl:
                return  # a capture cut short while written
            yield Record(sec * 1_000_000_000 + frac * ns_per_unit, orig, data)


def write(path: str, records: Iterable, snaplen: int = 65535) -> int:
    """Write records (anything with ts_ns, length, data) as microsecond pcap; returns the count."""
    n = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        for r in records:
            sec, nsec = divmod(r.ts_ns, 1_000_000_000)
            f.write(struct.pack("<IIII", sec, nsec // 1000, len(r.data), max(r.length, len(r.data))))
            f.write(r.data)
            n += 1
    return n
