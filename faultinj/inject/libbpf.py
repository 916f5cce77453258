"""A ctypes binding to the few calls of the system libbpf (libbpf.so.1) we use.

libbpf 1.x conventions: int-returning calls return -errno; pointer-returning
calls return NULL and set errno, so they need `use_errno=True` and
`restype = c_void_p` (a plain int restype would truncate the pointer).
Only calls present in libbpf 1.1 (Debian bookworm) are used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from ..errors import EnvironmentProblem, FaultinjError, VerifierError

_lib: ctypes.CDLL | None = None
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.vsnprintf.restype = ctypes.c_int

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
# A verifier log can be hundreds of KB in one message; the va_list can be
# consumed only once, so format it once into a buffer large enough.
_print_buf = ctypes.create_string_buffer(4 << 20)
_print_lock = threading.Lock()
_messages: list[str] = []


def _on_print(level: int, fmt: bytes, va: int) -> int:
    n = _libc.vsnprintf(_print_buf, len(_print_buf), fmt, va)
    if n > 0:
        _messages.append(_print_buf.value.decode(errors="replace"))
    return 0


_print_cb = _PRINT_FN(_on_print)  # kept referenced for the life of the process


# int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size)
RINGBUF_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class RingBuffers:
    """BPF ring buffers (by map fd) read together: read() returns the records
    waiting, as (which, bytes) with `which` the index of the fd in fds. Reading
    consumes: the kernel keeps one consumer position per ring."""

    def __init__(self, fds: list[int]):
        self._got: list[tuple[int, bytes]] = []

        def on_sample(ctx, data, size):
            self._got.append((ctx or 0, ctypes.string_at(data, size)))
            return 0

        self._cb = RINGBUF_SAMPLE_FN(on_sample)   # referenced for as long as the rings are
        self._rb = None
        lb = lib()
        for i, fd in enumerate(fds):
            if self._rb is None:
                self._rb = lb.ring_buffer__new(fd, self._cb, ctypes.c_void_p(i), None)
                if not self._rb:
                    _raise_errno("opening the journal ring buffer", -ctypes.get_errno())
            else:
                rc = lb.ring_buffer__add(self._rb, fd, self._cb, ctypes.c_void_p(i))
                if rc < 0:
                    self.close()
                    _raise_errno("opening the journal ring buffer", rc)

    def read(self, timeout_ms: int = 0) -> list[tuple[int, bytes]]:
        if self._rb is None:
            return []
        lb = lib()
        rc = lb.ring_buffer__poll(self._rb, timeout_ms) if timeout_ms else lb.ring_buffer__consume(self._rb)
        if rc < 0 and -rc != errno.EINTR:
            _raise_errno("reading the journal", rc)
        got, self._got = self._got, []
        return got

    def close(self) -> None:
        if self._rb:
            lib().ring_buffer__free(self._rb)
            self._rb = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    name = "libbpf.so.1"
    try:
        handle = ctypes.CDLL(name, use_errno=True)
    except OSError:
        found = ctypes.util.find_library("bpf")
        if not found:
            raise EnvironmentProblem(
                "libbpf.so.1 not found: install the system libbpf (apt-get install libbpf1 libbpf-dev)"
            ) from None
        handle = ctypes.CDLL(found, use_errno=True)
    vp, ci, cu, cs = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p
    sigs = {
        "libbpf_set_print": (vp, [_PRINT_FN]),
        "bpf_object__open_file": (vp, [cs, vp]),
        "bpf_object__load": (ci, [vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__next_program": (vp, [vp, vp]),
        "bpf_object__find_map_by_name": (vp, [vp, cs]),
        "bpf_object__next_map": (vp, [vp, vp]),
        "bpf_map__name": (cs, [vp]),
        "bpf_program__section_name": (cs, [vp]),
        "bpf_program__set_type": (ci, [vp, ci]),
        "bpf_program__set_autoload": (ci, [vp, ctypes.c_bool]),
        "bpf_program__fd": (ci, [vp]),
        "bpf_program__name": (cs, [vp]),
        "bpf_program__pin": (ci, [vp, cs]),
        "bpf_map__fd": (ci, [vp]),
        "bpf_map__pin": (ci, [vp, cs]),
        "bpf_obj_get": (ci, [cs]),
        "bpf_prog_get_fd_by_id": (ci, [cu]),
        "bpf_map_get_fd_by_id": (ci, [cu]),
        "bpf_map_update_elem": (ci, [ci, vp, vp, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (ci, [ci, vp, vp]),
        "bpf_obj_get_info_by_fd": (ci, [ci, vp, ctypes.POINTER(cu)]),
        "bpf_prog_test_run_opts": (ci, [ci, vp]),
        "libbpf_num_possible_cpus": (ci, []),
        "libbpf_probe_bpf_prog_type": (ci, [ci, vp]),
        "libbpf_major_version": (cu, []),
        "libbpf_minor_version": (cu, []),
        "bpf_link_create": (ci, [ci, ci, ci, vp]),
        "bpf_prog_get_next_id": (ci, [cu, ctypes.POINTER(cu)]),
        "bpf_map_get_next_id": (ci, [cu, ctypes.POINTER(cu)]),
        "bpf_program__attach": (vp, [vp]),
        "bpf_program__set_attach_target": (ci, [vp, ci, cs]),
        "bpf_map__reuse_fd": (ci, [vp, ci]),
        "btf__type_cnt": (cu, [vp]),
        "bpf_link__destroy": (ci, [vp]),
        "btf__parse": (vp, [cs, vp]),
        "btf__parse_split": (vp, [cs, vp]),
        "btf__free": (None, [vp]),
        "btf__find_by_name_kind": (ci, [vp, cs, cu]),
        "btf__type_by_id": (vp, [vp, cu]),
        "btf__name_by_offset": (cs, [vp, cu]),
        "btf__resolve_size": (ctypes.c_longlong, [vp, cu]),
        "ring_buffer__new": (vp, [ci, RINGBUF_SAMPLE_FN, vp, vp]),
        "ring_buffer__add": (ci, [vp, ci, RINGBUF_SAMPLE_FN, vp]),
        "ring_buffer__poll": (ci, [vp, ci]),
        "ring_buffer__consume": (ci, [vp]),
        "ring_buffer__free": (None, [vp]),
    }
    for fname, (res, args) in sigs.items():
        fn = getattr(handle, fname)
        fn.restype = res
        fn.argtypes = args
    handle.libbpf_set_print(_print_cb)
    _lib = handle
    return handle


def _raise_errno(what: str, rc: int) -> None:
    err = -rc if rc < 0 else ctypes.get_errno()
    if err == errno.EPERM:
        raise EnvironmentProblem(
            f"{what}: operation not permitted — run faultinj as root (needs CAP_BPF and CAP_NET_ADMIN)"
        )
    raise FaultinjError(f"{what}: {os.strerror(err)}")


@dataclass
class LoadedObject:
    """A loaded BPF object: one program and its maps, open in this process."""

    path: str
    program: str
    prog_fd: int
    map_fds: dict[str, int]
    _obj: int = field(repr=False, default=0)
    _maps: dict[str, int] = field(repr=False, default_factory=dict)
    _prog: int = field(repr=False, default=0)

    def pin(self, directory: str) -> None:
        """Pin the program and every named map into directory (which must exist)."""
        lb = lib()
        rc = lb.bpf_program__pin(self._prog, f"{directory}/prog".encode())
        if rc < 0:
            _raise_errno(f"pinning program {self.program} in {directory}", rc)
        for name, ptr in self._maps.items():
            rc = lb.bpf_map__pin(ptr, f"{directory}/{name}".encode())
            if rc < 0:
                _raise_errno(f"pinning map {name} in {directory}", rc)

    def close(self) -> None:
        if self._obj:
            lib().bpf_object__close(self._obj)
            self._obj = 0


def _programs(obj: int) -> list[tuple[int, str, str]]:
    """(program, function name, section name) of every entry program in an open object."""
    lb, out, prog = lib(), [], None
    while True:
        prog = lb.bpf_object__next_program(obj, prog)
        if not prog:
            return out
        out.append((prog, lb.bpf_program__name(prog).decode(), lb.bpf_program__section_name(prog).decode()))


def _open(path: str) -> int:
    obj = lib().bpf_object__open_file(path.encode(), None)
    if not obj:
        err = ctypes.get_errno()
        raise FaultinjError(f"cannot open BPF object {path}: {os.strerror(err)}")
    return obj


def list_programs(path: str) -> list[tuple[str, str]]:
    """(function, section) of each entry program in the object file, without loading it."""
    with _print_lock:
        obj = _open(path)
        try:
            return [(name, sec) for _, name, sec in _programs(obj)]
        finally:
            lib().bpf_object__close(obj)


def load_object(path: str, map_names: tuple[str, ...] | None, prog_type: int | None = None,
                program: str | None = None) -> LoadedObject:
    """Open and load a program of the object at path: its only one, or `program` (a function or
    section name), as prog_type when given (legacy or missing section names). map_names: the maps
    it must have; None: all its maps, whatever they are (a user's own program).

    A verifier rejection raises VerifierError carrying the log's tail.
    """
    lb = lib()
    with _print_lock:
        _messages.clear()
        obj = _open(path)
        progs = _programs(obj)
        chosen = [p for p in progs if program in (p[1], p[2])] if program else progs
        if len(chosen) != 1:
            lb.bpf_object__close(obj)
            have = ", ".join(f"{n} (section {s})" for _, n, s in progs) or "none"
            if program:
                raise FaultinjError(f"no program '{program}' in {path}; its programs: {have}")
            raise FaultinjError(f"{path} has {len(progs)} programs ({have}): choose one with --section")
        prog, name, _ = chosen[0]
        for other, _, _ in progs:
            if other != prog:
                lb.bpf_program__set_autoload(other, False)
        if prog_type is not None:
            lb.bpf_program__set_type(prog, prog_type)
        rc = lb.bpf_object__load(obj)
        log = "".join(_messages)
        _messages.clear()
    if rc < 0:
        lb.bpf_object__close(obj)
        if -rc == errno.EPERM:
            _raise_errno(f"loading program {name}", rc)
        raise VerifierError(name, _verifier_tail(log), -rc)
    maps = {}
    if map_names is None:
        m = None
        while (m := lb.bpf_object__next_map(obj, m)):
            maps[lb.bpf_map__name(m).decode()] = m
    for m in map_names or ():
        ptr = lb.bpf_object__find_map_by_name(obj, m.encode())
        if not ptr:
            lb.bpf_object__close(obj)
            raise FaultinjError(f"program {name} in {path} lacks the map {m}")
        maps[m] = ptr
    return LoadedObject(
        path=path,
        program=name,
        prog_fd=lb.bpf_program__fd(prog),
        map_fds={m: lb.bpf_map__fd(p) for m, p in maps.items()},
        _obj=obj,
        _maps=maps,
        _prog=prog,
    )


class TracingObject:
    """A loaded object whose every program is attached where its section says (tp_btf/...),
    held by this process only: closing it (or exiting) detaches everything."""

    def __init__(self, path: str, map_names: tuple[str, ...]):
        lb = lib()
        self._links: list[int] = []
        with _print_lock:
            _messages.clear()
            self._obj = _open(path)
            rc = lb.bpf_object__load(self._obj)
            log = "".join(_messages)
            _messages.clear()
        if rc < 0:
            lb.bpf_object__close(self._obj)
            self._obj = 0
            if -rc == errno.EPERM:
                _raise_errno(f"loading {path}", rc)
            raise VerifierError(os.path.basename(path), _verifier_tail(log), -rc)
        self.map_fds = {}
        for m in map_names:
            ptr = lb.bpf_object__find_map_by_name(self._obj, m.encode())
            if not ptr:
                self.close()
                raise FaultinjError(f"{path} lacks the map {m}")
            self.map_fds[m] = lb.bpf_map__fd(ptr)
        self.programs = [name for _, name, _ in _programs(self._obj)]

    def attach(self) -> None:
        lb = lib()
        for prog, name, sec in _programs(self._obj):
            link = lb.bpf_program__attach(prog)
            if not link:
                err = ctypes.get_errno()
                raise FaultinjError(f"cannot attach {name} ({sec}): {os.strerror(err)}")
            self._links.append(link)

    def close(self) -> None:
        lb = lib()
        for link in self._links:
            lb.bpf_link__destroy(link)
        self._links = []
        if self._obj:
            lb.bpf_object__close(self._obj)
            self._obj = 0


BTF_KIND_ENUM = 6
BTF_KIND_PTR, BTF_KIND_STRUCT, BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST = 2, 4, 8, 9, 10
BTF_KIND_RESTRICT, BTF_KIND_FUNC, BTF_KIND_FUNC_PROTO, BTF_KIND_TYPE_TAG = 11, 12, 13, 18


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size_or_type", ctypes.c_uint32)]


class _BtfParam(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32)]


@contextmanager
def _btf(path: str) -> Iterator[int]:
    """The BTF of the object or BTF file at path, parsed, freed after the block."""
    lb = lib()
    btf = lb.btf__parse(path.encode(), None)
    if not btf:
        raise FaultinjError(f"cannot read BTF from {path}: {os.strerror(ctypes.get_errno())}")
    try:
        yield btf
    finally:
        lb.btf__free(btf)


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


class FunctionProgram:
    """One program of an object (the others not loaded) as fentry on a kernel function, with the
    named maps taken from another loaded object (map name -> fd). Closing detaches it."""

    def __init__(self, path: str, program: str, function: str, reuse: dict[str, int]):
        lb = lib()
        self._obj, self._link = 0, None
        with _print_lock:
            _messages.clear()
            self._obj = _open(path)
            try:
                chosen = None
                for prog, name, _ in _programs(self._obj):
                    if name == program:
                        chosen = prog
                    else:
                        lb.bpf_program__set_autoload(prog, False)
                if chosen is None:
                    raise FaultinjError(f"{path} lacks the program {program}")
                rc = lb.bpf_program__set_attach_target(chosen, 0, function.encode())
                if rc < 0:
                    _raise_errno(f"targeting {function}", rc)
                for mname, fd in reuse.items():
                    m = lb.bpf_object__find_map_by_name(self._obj, mname.encode())
                    if m:
                        rc = lb.bpf_map__reuse_fd(m, fd)
                        if rc < 0:
                            _raise_errno(f"sharing the map {mname}", rc)
                rc = lb.bpf_object__load(self._obj)
                log = "".join(_messages)
                _messages.clear()
                if rc < 0:
                    self.errno = -rc
                    raise FunctionRefused(function, -rc, _verifier_tail(log))
                link = lb.bpf_program__attach(chosen)
                if not link:
                    err = ctypes.get_errno()
                    self.errno = err
                    raise FunctionRefused(function, err, "")
                self._link = link
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        lb = lib()
        if self._link:
            lb.bpf_link__destroy(self._link)
            self._link = None
        if self._obj:
            lb.bpf_object__close(self._obj)
            self._obj = 0


class FunctionRefused(FaultinjError):
    def __init__(self, function: str, err: int, log: str):
        super().__init__(f"the kernel refused fentry on {function}: {os.strerror(err)}"
                         + (f"\n{log}" if log else ""))
        self.function, self.errno = function, err


def btf_enum(path: str, name: str) -> dict[int, str]:
    """The values of `enum name` in the BTF file at path (the running kernel's: /sys/kernel/btf/vmlinux)."""
    with _btf(path) as btf:
        found = _btf_type(btf, name, BTF_KIND_ENUM)
        if found is None:
            return {}
        t, _, _, vlen = found
        raw = ctypes.string_at(t + 12, 8 * vlen)  # struct btf_enum { u32 name_off; s32 val; }
        return {val: lib().btf__name_by_offset(btf, name_off).decode()
                for name_off, val in (struct.unpack_from("<Ii", raw, 8 * i) for i in range(vlen))}


def btf_struct(path: str, name: str) -> tuple[int, dict[str, tuple[int, int]]] | None:
    """(size, {member: (byte offset, size)}) of `struct name` in the BTF of the object (or BTF
    file) at path; None when it has no such struct. See inject/layout.py."""
    with _btf(path) as btf:
        found = _btf_type(btf, name, BTF_KIND_STRUCT)
        if found is None:
            return None
        t, info, size, vlen = found
        raw = ctypes.string_at(t + 12, 12 * vlen)  # struct btf_member { u32 name_off, type, offset; }
        members = {}
        for i in range(vlen):
            name_off, mtype, offset = struct.unpack_from("<III", raw, 12 * i)
            bits = offset & 0xFFFFFF if info >> 31 else offset   # kind_flag: bitfield size in the top byte
            members[lib().btf__name_by_offset(btf, name_off).decode()] = (bits // 8,
                                                                           lib().btf__resolve_size(btf, mtype))
        return size, members


def _verifier_tail(log: str) -> str:
    lines = [ln for ln in log.splitlines() if ln.strip()]
    if "-- BEGIN PROG LOAD LOG --" in log:
        body = log.split("-- BEGIN PROG LOAD LOG --", 1)[1].split("-- END PROG LOAD LOG --", 1)[0]
        lines = [ln for ln in body.splitlines() if ln.strip() and not ln.startswith("processed ")]
    return "\n".join(lines[-12:])


def obj_get(path: str) -> int:
    """Open a pinned object; returns an fd (close it with os.close)."""
    fd = lib().bpf_obj_get(path.encode())
    if fd < 0:
        _raise_errno(f"opening pinned object {path}", fd)
    return fd


def prog_fd_by_id(prog_id: int) -> int | None:
    """An fd for the loaded program with that id, None when it no longer exists."""
    return _fd_by_id(lib().bpf_prog_get_fd_by_id, "program", prog_id)


def map_fd_by_id(map_id: int) -> int | None:
    """An fd for the map with that id, None when it no longer exists."""
    return _fd_by_id(lib().bpf_map_get_fd_by_id, "map", map_id)


def _fd_by_id(call, what: str, obj_id: int) -> int | None:
    fd = call(obj_id)
    if fd == -errno.ENOENT:
        return None
    if fd < 0:
        _raise_errno(f"opening {what} id {obj_id}", fd)
    return fd


def map_update(fd: int, key: bytes, value: bytes) -> None:
    kb, vb = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
    rc = lib().bpf_map_update_elem(fd, kb, vb, 0)
    if rc < 0:
        _raise_errno("writing a map", rc)


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes:
    kb, vb = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value_size)
    rc = lib().bpf_map_lookup_elem(fd, kb, vb)
    if rc < 0:
        _raise_errno("reading a map", rc)
    return vb.raw


def possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise FaultinjError("cannot tell the number of possible CPUs")
    return n


def object_id(fd: int) -> int:
    """The kernel id of a program or map fd (bpf_prog_info/bpf_map_info both start type, id)."""
    buf = ctypes.create_string_buffer(256)
    size = ctypes.c_uint32(len(buf))
    rc = lib().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(size))
    if rc < 0:
        _raise_errno("reading object info", rc)
    return int.from_bytes(buf.raw[4:8], "little")


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


@dataclass
class TestRun:
    retval: int
    data: bytes
    duration_ns: int


class TestRunner:
    """BPF_PROG_TEST_RUN on many packets with buffers allocated once (fuzzing,
    replay, benchmarks). With repeat > 1 the kernel feeds each run the packet
    the previous run left (a mangled packet stays mangled), and reports the
    mean time."""

    def __init__(self, prog_fd: int, max_len: int = 9216):
        self.prog_fd = prog_fd
        self._din = ctypes.create_string_buffer(max_len)
        self._dout = ctypes.create_string_buffer(max_len + 512)
        self._opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts),
                                  data_in=ctypes.cast(self._din, ctypes.c_void_p),
                                  data_out=ctypes.cast(self._dout, ctypes.c_void_p))
        self._ref = ctypes.byref(self._opts)
        self._call = lib().bpf_prog_test_run_opts
        self.max_len = max_len

    def run(self, packet: bytes, repeat: int = 1) -> TestRun:
        n = len(packet)
        if n > self.max_len:
            raise ValueError(f"packet of {n} bytes is longer than {self.max_len}")
        ctypes.memmove(self._din, packet, n)
        o = self._opts
        o.data_size_in, o.data_size_out, o.repeat = n, n + 512, repeat
        rc = self._call(self.prog_fd, self._ref)
        if rc < 0:
            _raise_errno("BPF_PROG_TEST_RUN", rc)
        retval = o.retval
        if retval >= 1 << 31:
            retval -= 1 << 32
        return TestRun(retval=retval, data=ctypes.string_at(self._dout, o.data_size_out), duration_ns=o.duration)


def test_run(prog_fd: int, packet: bytes, repeat: int = 1) -> TestRun:
    """Run a program once on one packet with BPF_PROG_TEST_RUN."""
    return TestRunner(prog_fd, max(len(packet), 64)).run(packet, repeat)


def version() -> str:
    lb = lib()
    return f"{lb.libbpf_major_version()}.{lb.libbpf_minor_version()}"


BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_SCHED_ACT = 4
BPF_PROG_TYPE_XDP = 6
BPF_TCX_INGRESS = 46  # kernel 6.6+; not in older uapi headers


def probe_prog_type(prog_type: int) -> bool:
    return lib().libbpf_probe_bpf_prog_type(prog_type, None) == 1


def link_create(prog_fd: int, ifindex: int, attach_type: int) -> int:
    """A bpf_link (e.g. tcx); closing the fd detaches it. Raises on failure."""
    fd = lib().bpf_link_create(prog_fd, ifindex, attach_type, None)
    if fd < 0:
        _raise_errno("bpf_link_create", fd)
    return fd


def all_ids(kind: str) -> list[int]:
    """Every program or map id the kernel has (kind: 'prog' or 'map')."""
    call = lib().bpf_prog_get_next_id if kind == "prog" else lib().bpf_map_get_next_id
    ids, cur, nxt = [], 0, ctypes.c_uint32(0)
    while call(cur, ctypes.byref(nxt)) == 0:
        cur = nxt.value
        ids.append(cur)
    return ids
