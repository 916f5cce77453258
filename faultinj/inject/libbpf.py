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
import time
from dataclasses import dataclass, field

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


class RingReader:
    """A BPF ring buffer read in bulk through its mapped pages (as libbpf does, without a
    callback per record): read() returns the bytes of every record committed since the last
    read, each an 8-byte header (length, page offset) then the record padded to 8 bytes. Reading
    consumes: the kernel keeps one consumer position per ring."""

    BUSY, DISCARD = 1 << 31, 1 << 30
    _POS, _HDR = struct.Struct("<Q"), struct.Struct("<I")

    def __init__(self, fd: int):
        import mmap

        self.size = map_info(fd)["max_entries"]
        page = mmap.PAGESIZE
        self._cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            # the producer's page, then the data mapped twice: a record that wraps reads whole
            self._prod = mmap.mmap(fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except BaseException:
            self._cons.close()
            raise
        self._page = page

    def wait(self, timeout_ms: int, batch: int) -> None:
        """Until batch bytes wait or timeout_ms passed. The programs never wake the reader (a
        wakeup per record cost the traced traffic more than the record): it looks every 10 ms."""
        end = time.monotonic() + timeout_ms / 1000
        while self.pending() < batch:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.01))

    def pending(self) -> int:
        return self._POS.unpack_from(self._prod, 0)[0] - self._POS.unpack_from(self._cons, 0)[0]

    def read(self, max_bytes: int | None = None) -> bytes:
        cons = start = self._POS.unpack_from(self._cons, 0)[0]
        prod = self._POS.unpack_from(self._prod, 0)[0]
        if max_bytes is not None:
            prod = min(prod, cons + max_bytes)
        mask, base, hdr = self.size - 1, self._page, self._HDR
        while cons < prod:
            length = hdr.unpack_from(self._prod, base + (cons & mask))[0]
            if length & self.BUSY:
                break                       # still being written: the next read gets it
            cons += ((length & ~(self.BUSY | self.DISCARD)) + 8 + 7) & ~7
        if cons == start:
            return b""
        off = base + (start & mask)
        out = self._prod[off:off + cons - start]
        self._POS.pack_into(self._cons, 0, cons)
        return out

    def close(self) -> None:
        for m in (self._cons, self._prod):
            if m is not None:
                m.close()
        self._cons = self._prod = None


def map_info(fd: int) -> dict:
    """struct bpf_map_info's head: type, id, key_size, value_size, max_entries, map_flags."""
    buf = ctypes.create_string_buffer(256)
    size = ctypes.c_uint32(len(buf))
    rc = lib().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(size))
    if rc < 0:
        _raise_errno("reading map info", rc)
    names = ("type", "id", "key_size", "value_size", "max_entries", "map_flags")
    return dict(zip(names, struct.unpack_from("<6I", buf.raw)))


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
        "bpf_map_get_next_key": (ci, [ci, vp, vp]),
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


def _reuse_maps(obj: int, reuse: dict[str, int]) -> None:
    """Before load: the object's maps of these names are the given fds (another object's)."""
    lb = lib()
    for mname, fd in reuse.items():
        m = lb.bpf_object__find_map_by_name(obj, mname.encode())
        if m:
            rc = lb.bpf_map__reuse_fd(m, fd)
            if rc < 0:
                _raise_errno(f"sharing the map {mname}", rc)


class TracingObject:
    """A loaded object whose every program is attached where its section says (tp_btf/...),
    held by this process only: closing it (or exiting) detaches everything. reuse: maps taken
    from another loaded object (name -> fd)."""

    def __init__(self, path: str, map_names: tuple[str, ...], reuse: dict[str, int] | None = None):
        lb = lib()
        self._links: list[int] = []
        with _print_lock:
            _messages.clear()
            self._obj = _open(path)
            try:
                _reuse_maps(self._obj, reuse or {})
            except BaseException:
                lb.bpf_object__close(self._obj)
                self._obj = 0
                raise
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


def btf_functions_taking(path: str, struct_name: str, max_arg: int = 5) -> dict[str, int]:
    """Functions in the kernel's BTF at path, and in its modules' beside it (/sys/kernel/btf/veth:
    split BTF on top of vmlinux's), with a `struct struct_name *` among their first max_arg
    arguments: {name: the argument's index (the first such)}."""
    lb = lib()
    base = lb.btf__parse(path.encode(), None)
    if not base:
        raise FaultinjError(f"cannot read BTF from {path}: {os.strerror(ctypes.get_errno())}")
    try:
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
    finally:
        lb.btf__free(base)


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
                _reuse_maps(self._obj, reuse)
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


def btf_enum(path: str, name: str, base: str | None = None) -> dict[int, str]:
    """The values of `enum name` in the BTF file at path (the running kernel's: /sys/kernel/btf/vmlinux;
    a module's, /sys/kernel/btf/MODULE, is split BTF: give the kernel's as base)."""
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
        tid = lb.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_ENUM)
        if tid < 0:
            return {}
        t = lb.btf__type_by_id(btf, tid)
        _, info, _ = struct.unpack("<III", ctypes.string_at(t, 12))
        vlen = info & 0xFFFF
        raw = ctypes.string_at(t + 12, 8 * vlen)  # struct btf_enum { u32 name_off; s32 val; }
        out = {}
        for i in range(vlen):
            name_off, val = struct.unpack_from("<Ii", raw, 8 * i)
            out[val] = lb.btf__name_by_offset(btf, name_off).decode()
        return out
    finally:
        lb.btf__free(btf)
        if base_btf:
            lb.btf__free(base_btf)


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


def map_keys(fd: int, key_size: int) -> list[bytes]:
    """Every key of a hash map (a snapshot: keys added meanwhile may be missed)."""
    keys, prev, nxt = [], None, ctypes.create_string_buffer(key_size)
    while True:
        rc = lib().bpf_map_get_next_key(fd, prev, nxt)
        if rc == -errno.ENOENT:
            return keys
        if rc < 0:
            _raise_errno("listing a map's keys", rc)
        keys.append(nxt.raw)
        prev = ctypes.create_string_buffer(nxt.raw, key_size)


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
