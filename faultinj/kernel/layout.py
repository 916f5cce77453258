"""The byte layouts user space shares with the BPF programs, read from the BTF.

C defines them (bpf/lib/fault.h, match.h, trace.h). faultinj/layouts.py holds what the BTF of
bpf/lib/layouts.c says of each (generated: `python -m faultinj.kernel.build layouts --write`); the
ctypes structures here are built from it, and check() compares every object build.py compiles
(and bpf/lib/layouts.c's, whose BTF carries the enums no program's does) with it: each struct's
size and every member's offset, size and type, each enum's constants. A drift refuses the build
instead of writing a config the program reads wrongly.
"""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

from .. import layouts
from ..errors import BuildError
from . import libbpf

ANCHOR = "layouts"          # bpf/lib/layouts.c: struct fi_layouts names every layout Python reads
REGENERATE = "python -m faultinj.kernel.build layouts --write"
_CTYPES = {"u8": ctypes.c_uint8, "u16": ctypes.c_uint16, "u32": ctypes.c_uint32, "u64": ctypes.c_uint64,
           "s8": ctypes.c_int8, "s16": ctypes.c_int16, "s32": ctypes.c_int32, "s64": ctypes.c_int64,
           "char": ctypes.c_char}
_BUILT: dict[str, type[ctypes.Structure]] = {}


def ctype_of(ctype: str):
    """A member's type ('u32', 'u32[4]', 'struct fi_match[4]') as a ctypes type."""
    base, _, n = ctype.partition("[")
    one = struct_type(base.removeprefix("struct ")) if base.startswith("struct ") else _CTYPES[base]
    return one * int(n.rstrip("]")) if n else one


def struct_type(name: str) -> type[ctypes.Structure]:
    """struct name (faultinj/layouts.py) as a ctypes structure, members in C's order."""
    if name not in _BUILT:
        cls = type(name, (ctypes.Structure,), {"_fields_": [(m, ctype_of(t)) for m, _, t in layouts.members(name)]})
        got = [(m, getattr(cls, m).offset) for m, _, _ in layouts.members(name)]
        want = [(m, off) for m, off, _ in layouts.members(name)]
        if got != want or ctypes.sizeof(cls) != layouts.size(name):   # C packed or aligned otherwise
            raise BuildError(f"struct {name}: ctypes lays it out as {got}, C as {want}")
        _BUILT[name] = cls
    return _BUILT[name]


def member_type(struct_cls: type[ctypes.Structure], member: str):
    return dict(struct_cls._fields_)[member]


FiMatch = struct_type("fi_match")
FiConfig = struct_type("fi_config")
FiEvent = struct_type("fi_event")
FiTraceConfig = struct_type("fi_trace_config")
TRACE_SLOTS = layouts.array_len("fi_trace_config", "match")   # FI_TRACE_SLOTS


def match_struct(m) -> FiMatch:
    """A parsed filter (faults.match.Match) as struct fi_match."""
    def addr(member: str, raw: bytes):
        kind = member_type(FiMatch, member)
        return kind.from_buffer_copy(raw.ljust(ctypes.sizeof(kind), b"\0"))

    return FiMatch(fields=m.fields, l4_proto=m.proto, tcp_set=m.tcp_set, tcp_clear=m.tcp_clear,
                   sport_lo=m.sport[0], sport_hi=m.sport[1], dport_lo=m.dport[0], dport_hi=m.dport[1],
                   vlan=m.vlan, negate=m.negate, src=addr("src", m.src[0]), src_mask=addr("src_mask", m.src[1]),
                   dst=addr("dst", m.dst[0]), dst_mask=addr("dst_mask", m.dst[1]), nth=m.nth, mark=m.mark[0],
                   mark_mask=m.mark[1])


# ---- reading an object's BTF (libbpf's parser, walked here) ----

_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT = range(1, 12)
_TYPE_TAG, _ENUM64 = 18, 19


class _Btf:
    def __init__(self, handle: int):
        self.lib, self.h = libbpf.lib(), handle

    def header(self, tid: int) -> tuple[int, str, int, int, int, int]:
        """(address, name, kind, vlen, kind_flag, size_or_type) of type tid."""
        addr = self.lib.btf__type_by_id(self.h, tid)
        name_off, info, sot = struct.unpack("<III", ctypes.string_at(addr, 12))
        return addr, self.name(name_off), info >> 24 & 0x1F, info & 0xFFFF, info >> 31, sot

    def name(self, off: int) -> str:
        return (self.lib.btf__name_by_offset(self.h, off) or b"").decode()

    def find(self, name: str, kind: int) -> int | None:
        tid = self.lib.btf__find_by_name_kind(self.h, name.encode(), kind)
        return None if tid < 0 else tid

    def resolve(self, tid: int) -> int:
        """Past typedefs and qualifiers."""
        while True:
            _, _, kind, _, _, sot = self.header(tid)
            if kind not in (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG):
                return tid
            tid = sot

    def type_name(self, tid: int, where: str, structs: dict, enums: dict) -> str:
        """A member's type as layouts.py writes it; structs and enums it names are read into those."""
        tid = self.resolve(tid)
        addr, name, kind, vlen, _, sot = self.header(tid)
        if kind == _INT:
            enc = struct.unpack("<I", ctypes.string_at(addr + 12, 4))[0]
            if name == "char" or enc >> 24 & 2:
                return "char"
            return f"{'s' if enc >> 24 & 1 else 'u'}{sot * 8}"
        if kind in (_ENUM, _ENUM64):
            self.read_enum(tid, enums)
            return f"u{sot * 8}"   # stored as an unsigned integer of the enum's size
        if kind == _STRUCT:
            self.read_struct(tid, structs, enums)
            return f"struct {name}"
        if kind == _ARRAY:
            elem, _, nelems = struct.unpack("<III", ctypes.string_at(addr + 12, 12))
            return f"{self.type_name(elem, where, structs, enums)}[{nelems}]"
        raise BuildError(f"{where}: a member of BTF kind {kind} (pointer, union, ...): faultinj/layouts.py "
                         "describes integers, enums, structs and arrays of them")

    def read_struct(self, tid: int, structs: dict, enums: dict) -> None:
        addr, name, _, vlen, kind_flag, size = self.header(tid)
        if name in structs:
            return
        raw = ctypes.string_at(addr + 12, 12 * vlen)   # struct btf_member { u32 name_off, type, offset; }
        out = []
        for i in range(vlen):
            name_off, mtype, bits = struct.unpack_from("<III", raw, 12 * i)
            member = self.name(name_off)
            if kind_flag and bits >> 24 or bits % 8:
                raise BuildError(f"struct {name}.{member} is a bitfield: give it a whole integer type")
            out.append((member, (bits & 0xFFFFFF) // 8, self.type_name(mtype, f"struct {name}.{member}",
                                                                        structs, enums)))
        structs[name] = (size, tuple(out))

    def read_enum(self, tid: int, enums: dict) -> None:
        addr, name, kind, vlen, signed, _ = self.header(tid)
        if not name:
            raise BuildError("an anonymous enum in struct fi_layouts: give it a name")
        if kind == _ENUM:
            raw = ctypes.string_at(addr + 12, 8 * vlen)   # struct btf_enum { u32 name_off; s32 val; }
            vals = [struct.unpack_from("<I" + ("i" if signed else "I"), raw, 8 * i) for i in range(vlen)]
        else:
            raw = ctypes.string_at(addr + 12, 12 * vlen)  # struct btf_enum64 { u32 name_off, lo32, hi32; }
            vals = [(n, hi << 32 | lo) for n, lo, hi in (struct.unpack_from("<III", raw, 12 * i)
                                                           for i in range(vlen))]
        enums[name] = {self.name(off): v for off, v in vals}


def anchor_struct(anchor: str) -> str:
    """The struct naming an anchor's types: fi_layouts (bpf/lib/layouts.c), fi_layouts_<program>
    (FI_LAYOUT in bpf/<program>.bpf.c, built with -DFI_LAYOUTS)."""
    return "fi_layouts" if anchor == ANCHOR else f"fi_layouts_{anchor}"


def read_btf(obj_path: str, anchor: str | None = "fi_layouts", names: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(structs, enums) as layouts.py holds them, from the BTF of the object at obj_path: every
    type struct `anchor`'s members name (and what those name), and the structs and enums in names
    that the object has."""
    structs: dict = {}
    enums: dict = {}
    with libbpf.btf_parsed(obj_path) as handle:
        btf = _Btf(handle)
        if anchor:
            tid = btf.find(anchor, _STRUCT)
            if tid is None:
                raise BuildError(f"{obj_path} has no struct {anchor} in its BTF")
            addr, _, _, vlen, _, _ = btf.header(tid)
            for i in range(vlen):
                name_off, mtype, _ = struct.unpack_from("<III", ctypes.string_at(addr + 12 + 12 * i, 12))
                btf.type_name(mtype, f"struct {anchor}.{btf.name(name_off)}", structs, enums)
        for name in names:
            if name in structs or name in enums:
                continue
            if (tid := btf.find(name, _STRUCT)) is not None:
                btf.read_struct(tid, structs, enums)
            elif (tid := btf.find(name, _ENUM)) is not None or (tid := btf.find(name, _ENUM64)) is not None:
                btf.read_enum(tid, enums)
    return structs, enums


def mismatches(obj_path: str, anchor: str | None = None) -> list[str]:
    """How the object's BTF disagrees with faultinj/layouts.py: one line per difference, none when
    equal. Every struct and enum layouts.py holds that the object has is compared; with anchor (the
    object of bpf/lib/layouts.c, ANCHOR, or a program's built with -DFI_LAYOUTS, its name): also
    what the anchor names that layouts.py lacks, and what layouts.py says it names that it lacks."""
    known = tuple(layouts.STRUCTS) + tuple(layouts.ENUMS)
    structs, enums = read_btf(obj_path, anchor_struct(anchor) if anchor else None, known)
    owned = set(layouts.ANCHORS.get(anchor, ())) if anchor else set()
    out = []
    for kind, c_side, py_side in (("struct", structs, layouts.STRUCTS), ("enum", enums, layouts.ENUMS)):
        for name in sorted(set(c_side) | (owned & set(py_side))):
            c, py = c_side.get(name), py_side.get(name)
            if c == py:
                continue
            if c is None or py is None:
                out.append(f"{kind} {name}: {'not ' if c is None else ''}in C, "
                           f"{'not ' if py is None else ''}in faultinj/layouts.py")
            elif kind == "enum":
                diff = sorted(set(c.items()) ^ set(py.items()))
                out.append(f"enum {name}: C has {dict(sorted(c.items(), key=lambda kv: kv[1]))}, "
                           f"faultinj/layouts.py {dict(sorted(py.items(), key=lambda kv: kv[1]))} "
                           f"(differ in {sorted({n for n, _ in diff})})")
            else:
                if c[0] != py[0]:
                    out.append(f"struct {name}: {c[0]} bytes in C, {py[0]} in faultinj/layouts.py")
                cm, pm = {m[0]: m[1:] for m in c[1]}, {m[0]: m[1:] for m in py[1]}
                for m in [m for m, *_ in c[1]] + [m for m, *_ in py[1] if m not in cm]:
                    if cm.get(m) != pm.get(m):
                        out.append(f"struct {name}.{m}: (offset, type) {cm.get(m)} in C, {pm.get(m)} in "
                                   "faultinj/layouts.py")
                if not any(ln.startswith(f"struct {name}") for ln in out) and [m[0] for m in c[1]] != \
                        [m[0] for m in py[1]]:
                    out.append(f"struct {name}: members in another order in C")
    return out


def check(obj_path: str, source: str, anchor: str | None = None) -> None:
    """Refuse an object whose shared structs and enums differ from faultinj/layouts.py."""
    bad = mismatches(obj_path, anchor)
    if bad:
        raise BuildError(f"{source}: the C layouts differ from faultinj/layouts.py (after changing bpf/, run "
                         f"`{REGENERATE}`): " + "; ".join(bad))


def generated_text(objects: dict[str, str]) -> str:
    """faultinj/layouts.py with its generated part read from the BTF of the anchors' objects:
    {ANCHOR: bpf/lib/layouts.c's, program: bpf/<program>.bpf.c's built with -DFI_LAYOUTS}."""
    structs: dict = {}
    enums: dict = {}
    anchors: dict = {}
    for anchor, obj_path in sorted(objects.items()):
        s, e = read_btf(obj_path, anchor_struct(anchor))
        for mine, theirs, kind in ((structs, s, "struct"), (enums, e, "enum")):
            for name, value in theirs.items():
                if mine.get(name, value) != value:
                    raise BuildError(f"{kind} {name}: two different ones (one in {anchor}'s BTF): give them two names")
                mine[name] = value
        anchors[anchor] = tuple(sorted(set(s) | set(e)))
    path = Path(layouts.__file__)
    text = path.read_text()
    marker = text.index("# ---- generated below")
    head = text[:text.index("\n", marker) + 1]
    lines = ["STRUCTS: dict[str, tuple[int, tuple[tuple[str, int, str], ...]]] = {"]
    for name in sorted(structs):
        size, members = structs[name]
        lines.append(f"    {name!r}: ({size}, (")
        lines.extend(f"        {m!r}," for m in members)
        lines.append("    )),")
    lines.append("}")
    lines.append("ENUMS: dict[str, dict[str, int]] = {")
    for name in sorted(enums):
        lines.append(f"    {name!r}: {{")
        lines.extend(f"        {c!r}: {v}," for c, v in sorted(enums[name].items(), key=lambda kv: kv[1]))
        lines.append("    },")
    lines.append("}")
    lines.append("# which object's BTF says each: bpf/lib/layouts.c ('layouts'), bpf/<program>.bpf.c (FI_LAYOUT)")
    lines.append("ANCHORS: dict[str, tuple[str, ...]] = {")
    for a, names in sorted(anchors.items()):
        lines.append(f"    {a!r}: (")
        lines.extend(f"        {n!r}," for n in names)
        lines.append("    ),")
    lines.append("}")
    return head + "\n".join(lines) + "\n"
