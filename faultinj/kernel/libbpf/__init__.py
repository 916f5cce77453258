"""A ctypes binding to the few calls of the system libbpf (libbpf.so.1) we use.

libbpf 1.x conventions: int-returning calls return -errno; pointer-returning
calls return NULL and set errno, so they need `use_errno=True` and
`restype = c_void_p` (a plain int restype would truncate the pointer).
Only calls present in libbpf 1.1 (Debian bookworm) are used.

The binding in parts, each its own module: ffi.py (the library, its calls, fds and maps), objects.py
(load, pin, attach), ringbuf.py, btf.py, testrun.py (BPF_PROG_TEST_RUN); callers say `libbpf.X`.

Each name is imported when first used (PEP 562), as faultinj.api does: `status` and `clear` read
pins and maps (ffi.py) and never load objects, ring buffers, BTF or test runs (~1.5 ms of their
start). The imports under TYPE_CHECKING are the same, written out for readers and type checkers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .btf import btf_enum, btf_functions_taking, btf_parsed
    from .ffi import (
        BPF_PROG_TYPE_SCHED_ACT, BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, BPF_TCX_INGRESS,
        all_ids, lib, link_create, map_fd_by_id, map_info, map_keys, map_lookup, map_update, obj_get,
        object_id, possible_cpus, probe_prog_type, prog_fd_by_id, version,
    )
    from .objects import FunctionProgram, FunctionRefused, LoadedObject, TracingObject, list_programs, load_object
    from .ringbuf import RingReader
    from .testrun import TestRun, TestRunner, test_run

# module -> the names it gives
_PARTS = {
    ".btf": ("btf_enum", "btf_functions_taking", "btf_parsed"),
    ".ffi": ("BPF_PROG_TYPE_SCHED_ACT", "BPF_PROG_TYPE_SCHED_CLS", "BPF_PROG_TYPE_XDP", "BPF_TCX_INGRESS",
             "all_ids", "lib", "link_create", "map_fd_by_id", "map_info", "map_keys", "map_lookup", "map_update",
             "obj_get", "object_id", "possible_cpus", "probe_prog_type", "prog_fd_by_id", "version"),
    ".objects": ("FunctionProgram", "FunctionRefused", "LoadedObject", "TracingObject", "list_programs",
                 "load_object"),
    ".ringbuf": ("RingReader",),
    ".testrun": ("TestRun", "TestRunner", "test_run"),
}
_WHERE = {name: module for module, names in _PARTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __package__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
