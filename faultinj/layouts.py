"""Every C structure, enum and constant user space reads, as the BTF says it.

The data at the end of this file is generated, not written: `python -m faultinj.kernel.build
layouts --write` compiles bpf/lib/layouts.c (one member per structure and enum Python reads) and
each bpf/X.bpf.c naming its own (FI_LAYOUT, built with -DFI_LAYOUTS), and writes what their BTF
says. The build compares every program's BTF (and those objects') with it and refuses an object
that differs (kernel/layout.py), so a field or an action added in C is a rebuild and that
command, nothing by hand. Everything here is pure data and stdlib: the journal
decodes without the kernel layer, and the tracer and the config writer build their ctypes from it
(kernel/layout.py).
"""

from __future__ import annotations

import struct

_SCALAR = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "s8": "b", "s16": "h", "s32": "i", "s64": "q",
           "char": "c"}


def enum(name: str) -> dict[str, int]:
    """enum name's constants: {'FI_A_DROP': 1, ...}."""
    try:
        return ENUMS[name]
    except KeyError:
        raise KeyError(f"enum {name} is not in faultinj/layouts.py: name it in struct fi_layouts (bpf/lib/layouts.c) "
                       "or FI_LAYOUT (a fault's own), run python -m faultinj.kernel.build layouts --write") from None


def enum_names(name: str, prefix: str) -> dict[int, str]:
    """enum name as {value: its constant's name without prefix, lower case}: {1: 'drop', ...}."""
    return {v: n.removeprefix(prefix).lower() for n, v in enum(name).items()}


def members(name: str) -> tuple[tuple[str, int, str], ...]:
    """struct name's members: (name, byte offset, type: 'u32', 'u8[16]', 'struct fi_match[4]')."""
    return STRUCTS[name][1]


def size(name: str) -> int:
    return STRUCTS[name][0]


def type_size(ctype: str) -> int:
    base, _, n = ctype.partition("[")
    one = size(base.removeprefix("struct ")) if base.startswith("struct ") else struct.calcsize(_SCALAR[base])
    return one * int(n.rstrip("]")) if n else one


def array_len(name: str, member: str) -> int:
    """The element count of an array member (fi_trace_config.match: FI_TRACE_SLOTS)."""
    for m, _, ctype in members(name):
        if m == member:
            return int(ctype.partition("[")[2].rstrip("]"))
    raise KeyError(f"struct {name} has no member {member}")


def record(name: str) -> tuple[struct.Struct, tuple[str, ...]]:
    """struct name as a little-endian struct.Struct and the names of what it unpacks, in order:
    scalars as numbers, arrays and nested structures as their bytes; members named pad* and the
    compiler's holes skipped."""
    fmt, names, at = "<", [], 0
    for member, off, ctype in members(name):
        if off > at:
            fmt += f"{off - at}x"
        n = type_size(ctype)
        if member.startswith("pad"):
            fmt += f"{n}x"
        else:
            fmt += _SCALAR[ctype] if ctype in _SCALAR else f"{n}s"
            names.append(member)
        at = off + n
    if size(name) > at:
        fmt += f"{size(name) - at}x"
    out = struct.Struct(fmt)
    assert out.size == size(name), f"struct {name}: {out.size} bytes unpacked, {size(name)} in C"
    return out, tuple(names)


def member(name: str, member: str) -> tuple[int, str]:
    """(byte offset, type) of one member of struct name."""
    for m, off, ctype in members(name):
        if m == member:
            return off, ctype
    raise KeyError(f"struct {name} has no member {member}")


def offset(name: str, member_name: str) -> int:
    return member(name, member_name)[0]


def scalar(name: str, member_name: str) -> struct.Struct:
    """A scalar member as a little-endian struct.Struct (fi_event.idx: '<Q')."""
    return struct.Struct("<" + _SCALAR[member(name, member_name)[1]])


# ---- generated below by `python -m faultinj.kernel.build layouts --write` from bpf/lib/layouts.c: do not edit ----
STRUCTS: dict[str, tuple[int, tuple[tuple[str, int, str], ...]]] = {
    'fi_config': (152, (
        ('seed', 0, 'u64'),
        ('deadline_ns', 8, 'u64'),
        ('threshold', 16, 'u64'),
        ('param', 24, 'u32'),
        ('flags', 28, 'u32'),
        ('match', 32, 'struct fi_match'),
        ('extra', 128, 'u32[4]'),
        ('gen', 144, 'u32'),
        ('pad', 148, 'u32'),
    )),
    'fi_event': (80, (
        ('idx', 0, 'u64'),
        ('ts_ns', 8, 'u64'),
        ('ifindex', 16, 'u32'),
        ('seq', 20, 'u32'),
        ('saddr', 24, 'u32[4]'),
        ('daddr', 40, 'u32[4]'),
        ('l3_proto', 56, 'u16'),
        ('sport', 58, 'u16'),
        ('dport', 60, 'u16'),
        ('ip_id', 62, 'u16'),
        ('l4_proto', 64, 'u8'),
        ('action', 65, 'u8'),
        ('journal', 66, 'u8'),
        ('pad', 67, 'u8'),
        ('value', 68, 'u32'),
        ('gen', 72, 'u32'),
        ('pad2', 76, 'u32'),
    )),
    'fi_match': (96, (
        ('fields', 0, 'u32'),
        ('l4_proto', 4, 'u8'),
        ('tcp_set', 5, 'u8'),
        ('tcp_clear', 6, 'u8'),
        ('pad', 7, 'u8'),
        ('sport_lo', 8, 'u16'),
        ('sport_hi', 10, 'u16'),
        ('dport_lo', 12, 'u16'),
        ('dport_hi', 14, 'u16'),
        ('vlan', 16, 'u16'),
        ('negate', 18, 'u16'),
        ('src', 20, 'u32[4]'),
        ('src_mask', 36, 'u32[4]'),
        ('dst', 52, 'u32[4]'),
        ('dst_mask', 68, 'u32[4]'),
        ('nth', 84, 'u32'),
        ('mark', 88, 'u32'),
        ('mark_mask', 92, 'u32'),
    )),
    'fi_trace_config': (392, (
        ('active', 0, 'u32'),
        ('slots', 4, 'u32'),
        ('match', 8, 'struct fi_match[4]'),
    )),
    'fi_trace_count': (16, (
        ('packets', 0, 'u64'),
        ('bytes', 8, 'u64'),
    )),
    'fi_trace_count_key': (28, (
        ('netns', 0, 'u32'),
        ('reason', 4, 'u32'),
        ('hop', 8, 'u8'),
        ('flags', 9, 'u8'),
        ('sock_family', 10, 'u8'),
        ('sock_type', 11, 'u8'),
        ('ifname', 12, 'char[16]'),
    )),
    'fi_trace_event': (200, (
        ('ts_ns', 0, 'u64'),
        ('skb', 8, 'u64'),
        ('head', 16, 'u64'),
        ('func', 24, 'u64'),
        ('netns', 32, 'u32'),
        ('ifindex', 36, 'u32'),
        ('len', 40, 'u32'),
        ('reason', 44, 'u32'),
        ('sock', 48, 'u32'),
        ('snap', 52, 'u16'),
        ('hop', 54, 'u8'),
        ('flags', 55, 'u8'),
        ('ifname', 56, 'char[16]'),
        ('frame', 72, 'u8[128]'),
    )),
}
ENUMS: dict[str, dict[str, int]] = {
    'fi_action': {
        'FI_A_DROP': 1,
        'FI_A_MODIFY': 2,
        'FI_A_DUPLICATE': 3,
        'FI_A_DELAY': 4,
    },
    'fi_cfg_flag': {
        'FI_CFG_ACTIVE': 1,
        'FI_CFG_INGRESS': 2,
        'FI_CFG_DRY_RUN': 4,
        'FI_CFG_JOURNAL': 8,
    },
    'fi_corrupt_param': {
        'FI_CORRUPT_MAX_BITS': 64,
        'FI_CORRUPT_BAD_CSUM': 256,
    },
    'fi_counter': {
        'FI_SEEN': 0,
        'FI_MATCHED': 1,
        'FI_ACTED': 2,
        'FI_LOST': 3,
        'FI_REFUSED': 4,
        'FI_NR_COUNTERS': 5,
    },
    'fi_dist': {
        'FI_DIST_SHIFT': 13,
        'FI_DIST_SIZE': 4096,
        'FI_DIST_SCALE': 8192,
    },
    'fi_drop_flag': {
        'FI_DROP_DELIVERED': 1,
        'FI_DROP_SHARED': 2,
    },
    'fi_hop': {
        'FI_HOP_QUEUE': 1,
        'FI_HOP_RX': 2,
        'FI_HOP_RECEIVE': 3,
        'FI_HOP_GRO': 4,
        'FI_HOP_DROP': 5,
        'FI_HOP_DELIVERED': 6,
        'FI_HOP_FUNC': 7,
        'FI_HOP_OVS_UPCALL': 8,
        'FI_HOP_OVS_EXEC': 9,
    },
    'fi_journal_size': {
        'FI_JOURNAL_SIZE': 4096,
    },
    'fi_match_field': {
        'FI_M_SRC4': 1,
        'FI_M_SRC6': 2,
        'FI_M_DST4': 4,
        'FI_M_DST6': 8,
        'FI_M_PROTO': 16,
        'FI_M_SPORT': 32,
        'FI_M_DPORT': 64,
        'FI_M_TCP_FLAGS': 128,
        'FI_M_VLAN': 256,
        'FI_M_MARK': 512,
    },
    'fi_parse_limit': {
        'FI_MAX_VLAN': 2,
        'FI_MAX_IPV6_EXT': 4,
    },
    'fi_rewrite_mode': {
        'FI_RW_TTL_SET': 1,
        'FI_RW_TTL_DEC': 2,
        'FI_RW_ECN_CE': 3,
        'FI_RW_DSCP': 4,
    },
    'fi_rewrite_param': {
        'FI_RW_MODE_SHIFT': 24,
    },
    'fi_tcp_flags_param': {
        'FI_TF_SET_SHIFT': 8,
    },
    'fi_threshold': {
        'FI_ALWAYS_SHIFT': 32,
    },
    'fi_time_fault': {
        'FI_TIME_DELAY': 0,
        'FI_TIME_REORDER': 1,
        'FI_TIME_RATE': 2,
    },
    'fi_trace_mode': {
        'FI_TRACE_OFF': 0,
        'FI_TRACE_EVENTS': 1,
        'FI_TRACE_COUNT': 2,
    },
}
# which object's BTF says each: bpf/lib/layouts.c ('layouts'), bpf/<program>.bpf.c (FI_LAYOUT)
ANCHORS: dict[str, tuple[str, ...]] = {
    'corrupt': (
        'fi_corrupt_param',
    ),
    'delay': (
        'fi_dist',
        'fi_time_fault',
    ),
    'ip_rewrite': (
        'fi_rewrite_mode',
        'fi_rewrite_param',
    ),
    'layouts': (
        'fi_action',
        'fi_cfg_flag',
        'fi_config',
        'fi_counter',
        'fi_drop_flag',
        'fi_event',
        'fi_hop',
        'fi_journal_size',
        'fi_match',
        'fi_match_field',
        'fi_parse_limit',
        'fi_threshold',
        'fi_trace_config',
        'fi_trace_count',
        'fi_trace_count_key',
        'fi_trace_event',
        'fi_trace_mode',
    ),
    'tcp_flags': (
        'fi_tcp_flags_param',
    ),
}
