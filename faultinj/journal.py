"""The journal of injected packets: one event per action a fault took, as
the program recorded it (bpf/lib/fault.h struct fi_event). Pure decoding;
faultinj/inject/journal.py reads the rings."""

from __future__ import annotations

import functools
import ipaddress
import struct
import time
from dataclasses import dataclass

# struct fi_event: u64 idx, ts; u32 ifindex, seq; u32 saddr[4], daddr[4]; u16 l3, sport, dport, ip_id;
# u8 l4, action, journal, pad; u32 value, gen, pad2
EVENT_FORMAT = struct.Struct("<QQII16s16sHHHHBBBxII4x")
ACTIONS = {1: "drop", 2: "modify", 3: "duplicate", 4: "delay"}
PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD


def wall_time(ts_ns: int) -> float:
    """A kernel stamp (bpf_ktime_get_ns: CLOCK_MONOTONIC) on the wall clock."""
    return time.time() - (time.monotonic_ns() - ts_ns) / 1e9


def clock(ts_ns: int) -> str:
    """A kernel stamp as local HH:MM:SS.microseconds."""
    us = int(wall_time(ts_ns) * 1e6)
    return _hms(us // 1_000_000) + f".{us % 1_000_000:06d}"


def wall_clock(wall_ns: int) -> str:
    """A wall-clock stamp (ns since the epoch) as local HH:MM:SS.microseconds."""
    us = wall_ns // 1000
    return _hms(us // 1_000_000) + f".{us % 1_000_000:06d}"


@functools.lru_cache(maxsize=64)
def _hms(second: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(second))


@dataclass(frozen=True)
class Event:
    fault_id: str
    fault: str          # the fault's spec
    where: str          # namespace/interface
    hook: str
    ts_ns: int          # CLOCK_MONOTONIC
    ifindex: int
    l3_proto: int
    l4_proto: int
    src: str | None
    dst: str | None
    sport: int
    dport: int
    ip_id: int
    seq: int            # TCP sequence number, or ICMP echo sequence
    action: str
    value: int
    gen: int = 0        # the configuration's generation when it happened (fault is that one's spec)


    def key(self) -> tuple:
        """What identifies the packet in a capture too (faultinj/packets.py Packet.journal_key)."""
        return (self.src, self.dst, self.l4_proto, self.sport, self.dport, self.ip_id, self.seq)

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["proto"] = PROTOS.get(self.l4_proto, self.l4_proto)
        d["time"] = wall_time(self.ts_ns)
        return d

    def __str__(self) -> str:
        proto = PROTOS.get(self.l4_proto, str(self.l4_proto) if self.src else f"ethertype 0x{self.l3_proto:04x}")
        ports = f":{self.sport} -> {self.dst}:{self.dport}" if self.l4_proto in (6, 17, 132) else f" -> {self.dst}"
        flow = f"{proto} {self.src}{ports}" if self.src else proto
        ids = (f" id={self.ip_id}" if self.l3_proto == ETH_P_IP else "") + (f" seq={self.seq}"
                                                                             if self.l4_proto in (1, 6, 58) else "")
        detail = f" ({self.value})" if self.value else ""
        return (f"{clock(self.ts_ns)} {self.fault_id} {self.where} {self.hook} {self.action}{detail} {flow}{ids}"
                f"  [{self.fault}]")


def _addr(l3: int, raw: bytes) -> str | None:
    if l3 == ETH_P_IP:
        return str(ipaddress.IPv4Address(raw[:4]))
    if l3 == ETH_P_IPV6:
        return str(ipaddress.IPv6Address(raw))
    return None


def decode(raw: bytes, fault_id: str, fault, where: str, hook: str) -> Event:
    """fault: the spec, or a function of the event's configuration generation giving it."""
    _idx, ts, ifindex, seq, saddr, daddr, l3, sport, dport, ip_id, l4, action, _journal, value, gen = \
        EVENT_FORMAT.unpack_from(raw)
    return Event(fault_id, fault(gen) if callable(fault) else fault, where, hook, ts, ifindex, l3, l4,
                 _addr(l3, saddr), _addr(l3, daddr), sport, dport, ip_id, seq, ACTIONS.get(action, str(action)),
                 value, gen)
