"""The byte layouts user space shares with the BPF programs, described once in Python.

C defines them (bpf/lib/fault.h, match.h); these ctypes structures describe them for user space,
and check() compares each with the compiled object's BTF (size, every member's offset and size)
when build.py compiles a program: a drift between C and Python refuses the build instead of
writing a config the program reads wrongly.
"""

from __future__ import annotations

import ctypes

from ..errors import BuildError

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
ADDR = ctypes.c_uint8 * 16    # __u32[4] in C: an address in network order (IPv4 in the first 4 bytes)


class FiMatch(ctypes.Structure):
    """struct fi_match: which packets a fault acts on (a field counts when its FI_M_* bit is set)."""
    _fields_ = [("fields", u32), ("l4_proto", u8), ("tcp_set", u8), ("tcp_clear", u8), ("pad", u8),
                ("sport_lo", u16), ("sport_hi", u16), ("dport_lo", u16), ("dport_hi", u16),
                ("vlan", u16), ("negate", u16), ("src", ADDR), ("src_mask", ADDR), ("dst", ADDR),
                ("dst_mask", ADDR), ("nth", u32), ("mark", u32), ("mark_mask", u32)]


class FiConfig(ctypes.Structure):
    """struct fi_config: one slot of the config map."""
    _fields_ = [("seed", u64), ("deadline_ns", u64), ("threshold", u64), ("param", u32), ("flags", u32),
                ("match", FiMatch), ("extra", u32 * 4), ("gen", u32), ("pad", u32)]


# FI_TRACE_SLOTS: a pcap-filter expression is an 'or' of up to this many filters (faults/pcap_filter.py's
# MAX_SLOTS, the same number: tests/test_pcap_filter.py; not imported from there, so that reading a
# fault's maps does not load the fault catalogue)
TRACE_SLOTS = 4


class FiTraceConfig(ctypes.Structure):
    """struct fi_trace_config (bpf/lib/trace.h): the tracer's mode (enum fi_trace_mode) and filters."""
    _fields_ = [("active", u32), ("slots", u32), ("match", FiMatch * TRACE_SLOTS)]


class FiEvent(ctypes.Structure):
    """struct fi_event: one journal entry (faultinj/journal.py decodes it with EVENT_FORMAT)."""
    _fields_ = [("idx", u64), ("ts_ns", u64), ("ifindex", u32), ("seq", u32), ("saddr", ADDR),
                ("daddr", ADDR), ("l3_proto", u16), ("sport", u16), ("dport", u16), ("ip_id", u16),
                ("l4_proto", u8), ("action", u8), ("journal", u8), ("pad", u8), ("value", u32),
                ("gen", u32), ("pad2", u32)]


# C struct name -> its description here; what check() compares in every fault program's object
STRUCTS = {"fi_match": FiMatch, "fi_config": FiConfig, "fi_event": FiEvent, "fi_trace_config": FiTraceConfig}


def match_struct(m) -> FiMatch:
    """A parsed filter (faults.match.Match) as struct fi_match."""
    def addr(raw: bytes):
        return ADDR.from_buffer_copy(raw.ljust(16, b"\0"))

    return FiMatch(m.fields, m.proto, m.tcp_set, m.tcp_clear, 0, *m.sport, *m.dport, m.vlan, m.negate,
                   addr(m.src[0]), addr(m.src[1]), addr(m.dst[0]), addr(m.dst[1]), m.nth, *m.mark)


def describe(struct: type[ctypes.Structure]) -> tuple[int, dict[str, tuple[int, int]]]:
    """(size, {member: (offset, size)}) of a description, as btf_struct gives the C side."""
    return ctypes.sizeof(struct), {name: (getattr(struct, name).offset, getattr(struct, name).size)
                                   for name, _ in struct._fields_}


def mismatches(obj_path: str, structs: dict = STRUCTS) -> list[str]:
    """How the object's BTF disagrees with the descriptions: one line per difference, none when equal."""
    from . import libbpf

    out = []
    for cname, struct in structs.items():
        btf = libbpf.btf_struct(obj_path, cname)
        if btf is None:
            continue      # a program that does not use this struct (the tracer has no config)
        size, members = describe(struct)
        if btf[0] != size:
            out.append(f"struct {cname}: {btf[0]} bytes in C, {size} in faultinj/inject/layout.py")
        for name in sorted(set(members) | set(btf[1]), key=lambda n: btf[1].get(n, members.get(n))[0]):
            c, py = btf[1].get(name), members.get(name)
            if c != py:
                out.append(f"struct {cname}.{name}: (offset, size) {c} in C, {py} in faultinj/inject/layout.py")
    return out


def check(obj_path: str, source: str) -> None:
    """Refuse an object whose shared structs differ from the descriptions here."""
    bad = mismatches(obj_path)
    if bad:
        raise BuildError(f"{source}: the C and Python layouts differ (change bpf/lib and "
                         "faultinj/inject/layout.py together): " + "; ".join(bad))
