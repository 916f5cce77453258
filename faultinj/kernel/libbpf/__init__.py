"""A ctypes binding to the few calls of the system libbpf (libbpf.so.1) we use.

libbpf 1.x conventions: int-returning calls return -errno; pointer-returning
calls return NULL and set errno, so they need `use_errno=True` and
`restype = c_void_p` (a plain int restype would truncate the pointer).
Only calls present in libbpf 1.1 (Debian bookworm) are used.

The binding in parts, each its own module: ffi.py (the library, its calls, fds and maps), objects.py
(load, pin, attach), ringbuf.py, btf.py, testrun.py (BPF_PROG_TEST_RUN); callers say `libbpf.X`.
"""

from __future__ import annotations

from .btf import (  # noqa: F401
    btf_enum, btf_functions_taking,
)
from .ffi import (  # noqa: F401
    BPF_PROG_TYPE_SCHED_ACT, BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, BPF_TCX_INGRESS,
    all_ids, lib, link_create, map_fd_by_id, map_info, map_keys, map_lookup, map_update, obj_get,
    object_id, possible_cpus, probe_prog_type, prog_fd_by_id, version,
)
from .objects import (  # noqa: F401
    FunctionProgram, FunctionRefused, LoadedObject, TracingObject, list_programs, load_object,
)
from .ringbuf import (  # noqa: F401
    RingReader,
)
from .testrun import (  # noqa: F401
    TestRun, TestRunner, test_run,
)
