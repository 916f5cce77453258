"""BTF: the kernel's (functions taking a struct, enum values) and an object's (struct layouts,
which kernel/layout.py checks)."""

from __future__ import annotations

import ctypes
import os
import struct
from contextlib import contextmanager
from typing import Iterator

from ...errors import FaultinjError
from .ffi import lib


BTF_KIND_ENUM = 6
BTF_KIND_PTR, BTF_KIND_STRUCT, BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST = 2, 4, 8, 9, 10
BTF_KIND_RESTRICT, BTF_KIND_FUNC, BTF_KIND_FUNC_PROTO, BTF_KIND_TYPE_TAG = 11, 12, 13, 18


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size_or_type", ctypes.c_uint32)]


class _BtfParam(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32)]


@contextmanager
def _btf(path: str, base: str | None = None) -> Iterator[int]:
    """The BTF of the object or BTF file at path, parsed, freed after the block. base: the BTF a
    split one (a module's, /sys/kernel/btf/MODULE) builds on (the kernel's)."""
    lb = lib()
    base_btf = lb.btf__parse(base.encode(), None) if base else None
    if base and not base_btf:
        raise FaultinjError(f"cannot read BTF from {base}: {os.strerror(ctypes.get_errno())}")
    btf = lb.btf__parse_split(path.encode(), base_btf) if base else lb.btf__parse(path.encode(), None)
    if not btf:
        if base_btf:
            lb.btf__free(base_btf)
        raise FaultinjError(f"cannot read BTF from {path}: {os.strerror(ctypes.get_errno())}")
    try:
        yield btf
    finally:
        lb.btf__free(btf)
        if base_btf:
            lb.btf__free(base_btf)


btf_parsed = _btf   # its public name (faultinj.kernel.layout reads objects' BTF through it)


def _btf_type(btf: int, name: str, kind: int) -> tuple[int, int, int, int] | None:
    """(address, info, size, vlen) of the type `name` of that kind; None when there is none."""
    tid = lib().btf__find_by_name_kind(btf, name.encode(), kind)
    if tid < 0:
        return None
    t = lib().btf__type_by_id(btf, tid)
    _, info, size = struct.unpack("<III", ctypes.string_at(t, 12))
    return t, info, size, info & 0xFFFF


def btf_functions_taking(path: str, struct_name: str, max_arg: int = 5) -> dict[str, int]:
    """Functions in the kernel's BTF at path, and in its modules' beside it (/sys/kernel/btf/veth:
    split BTF on top of vmlinux's), with a `struct struct_name *` among their first max_arg
    arguments: {name: the argument's index (the first such)}."""
    lb = lib()
    with _btf(path) as base:
        out = _functions_taking(base, 1, struct_name, max_arg)
        first = lb.btf__type_cnt(base)
        folder = os.path.dirname(path)
        for name in sorted(os.listdir(folder)) if os.path.basename(path) == "vmlinux" else []:
            if name == "vmlinux":
                continue
            mod = lb.btf__parse_split(os.path.join(folder, name).encode(), base)
            if not mod:
                continue
            try:
                for fn, arg in _functions_taking(mod, first, struct_name, max_arg).items():
                    out.setdefault(fn, arg)
            finally:
                lb.btf__free(mod)
        return out


def _functions_taking(btf, first: int, struct_name: str, max_arg: int) -> dict[str, int]:
    """The functions among btf's types from id first (a module's own start after vmlinux's)."""
    lb = lib()

    def t(tid):
        return _BtfType.from_address(lb.btf__type_by_id(btf, tid))

    def pointee_is_struct(tid) -> bool:
        ty = t(tid)
        if ty.info >> 24 & 0x1F != BTF_KIND_PTR:
            return False
        tid = ty.size_or_type
        for _ in range(8):   # const, volatile, typedef... then the struct
            ty = t(tid)
            kind = ty.info >> 24 & 0x1F
            if kind == BTF_KIND_STRUCT:
                return lb.btf__name_by_offset(btf, ty.name_off) == struct_name.encode()
            if kind not in (BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT,
                            BTF_KIND_TYPE_TAG):
                return False
            tid = ty.size_or_type
        return False

    out = {}
    for tid in range(first, lb.btf__type_cnt(btf)):
        fn = t(tid)
        if fn.info >> 24 & 0x1F != BTF_KIND_FUNC:
            continue
        proto_addr = lb.btf__type_by_id(btf, fn.size_or_type)
        proto = _BtfType.from_address(proto_addr)
        params = (_BtfParam * (proto.info & 0xFFFF)).from_address(proto_addr + ctypes.sizeof(_BtfType))
        for i, prm in enumerate(params[:max_arg]):
            if prm.type and pointee_is_struct(prm.type):
                out[lb.btf__name_by_offset(btf, fn.name_off).decode()] = i
                break
    return out


def btf_enum(path: str, name: str, base: str | None = None) -> dict[int, str]:
    """The values of `enum name` in the BTF file at path (the running kernel's: /sys/kernel/btf/vmlinux;
    a module's, /sys/kernel/btf/MODULE, is split BTF: give the kernel's as base)."""
    with _btf(path, base) as btf:
        found = _btf_type(btf, name, BTF_KIND_ENUM)
        if found is None:
            return {}
        t, _, _, vlen = found
        raw = ctypes.string_at(t + 12, 8 * vlen)  # struct btf_enum { u32 name_off; s32 val; }
        return {val: lib().btf__name_by_offset(btf, name_off).decode()
                for name_off, val in (struct.unpack_from("<Ii", raw, 8 * i) for i in range(vlen))}


