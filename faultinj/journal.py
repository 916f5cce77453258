"""The journal of injected packets: one event per action a fault took, as
the program recorded it (bpf/lib/fault.h struct fi_event, its layout and
enum fi_action read from the BTF: faultinj/layouts.py). Pure decoding;
faultinj/inject/journal.py reads the rings."""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import namedtuple
from dataclasses import dataclass

from . import layouts
from .packets import PORTED, protocol_name

# struct fi_event: numbers, and its addresses as bytes; pads skipped (layouts.record)
EVENT_FORMAT, EVENT_FIELDS = layouts.record("fi_event")
_Raw = namedtuple("_Raw", EVENT_FIELDS)
ACTIONS = layouts.enum_names("fi_action", "FI_A_")     # {1: 'drop', 2: 'modify', ...}
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
        d["proto"] = protocol_name(self.l4_proto)
        d["time"] = wall_time(self.ts_ns)
        return d

    def __str__(self) -> str:
        proto = str(protocol_name(self.l4_proto)) if self.src else f"ethertype 0x{self.l3_proto:04x}"
        ports = f":{self.sport} -> {self.dst}:{self.dport}" if self.l4_proto in PORTED else f" -> {self.dst}"
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
    e = _Raw._make(EVENT_FORMAT.unpack_from(raw))
    l3 = e.l3_proto
    return Event(fault_id, fault(e.gen) if callable(fault) else fault, where, hook, e.ts_ns, e.ifindex, l3,
                 e.l4_proto, _addr(l3, e.saddr), _addr(l3, e.daddr), e.sport, e.dport, e.ip_id, e.seq,
                 ACTIONS.get(e.action, str(e.action)), e.value, e.gen)
