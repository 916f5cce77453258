"""Capture files: read pcap (microsecond or nanosecond) and pcapng, write pcap or
pcapng as the output's name says.

Reading goes through scapy's raw readers (bytes and metadata, no dissection:
tens of thousands of frames stay cheap), which know every pcap byte order and
resolution and pcapng's blocks (Wireshark and dumpcap write pcapng by default).
scapy is imported here only when a file is read or a pcapng written.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

from .errors import SpecError

LINKTYPE_ETHERNET = 1


@dataclass
class Record:
    ts_ns: int
    length: int     # on the wire
    data: bytes     # captured


def _ts_ns(md, nano: bool) -> int:
    if hasattr(md, "tsresol"):   # pcapng: a count of 1/tsresol seconds (tsresol 10**n or 2**n)
        return ((md.tshigh << 32) + md.tslow) * 1_000_000_000 // md.tsresol
    return md.sec * 1_000_000_000 + md.usec * (1 if nano else 1000)   # "usec" is ns in a nanosecond pcap


def read(path: str) -> Iterator[Record]:
    """The frames of a pcap or pcapng file (gzip-compressed too)."""
    from scapy.error import Scapy_Exception
    from scapy.utils import RawPcapNgReader

    try:
        reader = RawPcapNgReader(path)   # falls back to the pcap reader by magic
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    except Scapy_Exception as exc:
        raise SpecError(f"{path} is not a pcap or pcapng file ({exc})") from None
    with reader:
        ng = isinstance(reader, RawPcapNgReader)
        nano = getattr(reader, "nano", False)
        if not ng and reader.linktype != LINKTYPE_ETHERNET:
            raise SpecError(f"{path} has link type {reader.linktype}; only Ethernet (1) captures can be replayed")
        it = iter(reader)
        while True:
            try:
                data, md = next(it)
            except StopIteration:
                return
            except Scapy_Exception as exc:
                raise SpecError(f"{path}: {exc}") from None
            if ng and md.linktype != LINKTYPE_ETHERNET:
                raise SpecError(f"{path} has an interface of link type {md.linktype}; only Ethernet (1) "
                                "captures can be replayed")
            yield Record(_ts_ns(md, nano), md.wirelen, data)


def write(path: str, records: Iterable, snaplen: int = 65535) -> int:
    """Write records (anything with ts_ns, length, data): pcapng when path ends in .pcapng,
    else microsecond pcap. Returns the count."""
    if str(path).lower().endswith(".pcapng"):
        return _write_pcapng(path, records)
    n = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        for r in records:
            sec, nsec = divmod(r.ts_ns, 1_000_000_000)
            f.write(struct.pack("<IIII", sec, nsec // 1000, len(r.data), max(r.length, len(r.data))))
            f.write(r.data)
            n += 1
    return n


def _write_pcapng(path: str, records: Iterable) -> int:
    from decimal import Decimal

    from scapy.utils import RawPcapNgWriter

    n = 0
    with RawPcapNgWriter(str(path)) as w:
        w.linktype = LINKTYPE_ETHERNET
        w.write_header(None)
        for r in records:
            # a Decimal keeps the stamp exact through the writer's seconds * resolution
            w.write_packet(r.data, sec=Decimal(r.ts_ns) / 1_000_000_000, caplen=len(r.data),
                           wirelen=max(r.length, len(r.data)))
            n += 1
    return n
