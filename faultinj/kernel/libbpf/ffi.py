"""The ctypes binding itself: libbpf.so.1 loaded with each call's signature, libbpf's log, errno
conventions, and the fd-level calls (pinned objects, maps, ids, probes, links)."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading

from ...errors import EnvironmentProblem, FaultinjError


_lib: ctypes.CDLL | None = None
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.vsnprintf.restype = ctypes.c_int
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
# A verifier log can be hundreds of KB in one message; the va_list can be
# consumed only once, so format it once into a buffer large enough (made at the
# first message: zeroing 4 MB cost ~2 ms of every command's start).
_print_buf = None
_print_lock = threading.Lock()
_messages: list[str] = []


LIBBPF_DEBUG = 2   # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2


def _on_print(level: int, fmt: bytes, va: int) -> int:
    global _print_buf
    if level >= LIBBPF_DEBUG:
        # ~90 lines per object opened (every section, map and relocation): what went wrong (the
        # verifier's log, a map refused) comes at WARN, and formatting these cost ~2 ms of every apply
        return 0
    if _print_buf is None:
        _print_buf = ctypes.create_string_buffer(4 << 20)
    n = _libc.vsnprintf(_print_buf, len(_print_buf), fmt, va)
    if n > 0:
        _messages.append(_print_buf.value.decode(errors="replace"))
    return 0


_print_cb = _PRINT_FN(_on_print)  # kept referenced for the life of the process



def lib() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    name = "libbpf.so.1"
    try:
        handle = ctypes.CDLL(name, use_errno=True)
    except OSError:
        from ctypes.util import find_library   # here only: it loads tempfile and random

        found = find_library("bpf")
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
        "btf__resolve_size": (ctypes.c_longlong, [vp, cu]),
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


def _obj_info(fd: int, what: str) -> bytes:
    """The head of a program's or map's bpf_*_info (256 bytes: more than any field read here)."""
    buf = ctypes.create_string_buffer(256)
    size = ctypes.c_uint32(len(buf))
    rc = lib().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(size))
    if rc < 0:
        _raise_errno(what, rc)
    return buf.raw


def map_info(fd: int) -> dict:
    """struct bpf_map_info's head: type, id, key_size, value_size, max_entries, map_flags."""
    names = ("type", "id", "key_size", "value_size", "max_entries", "map_flags")
    return dict(zip(names, struct.unpack_from("<6I", _obj_info(fd, "reading map info"))))


def possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise FaultinjError("cannot tell the number of possible CPUs")
    return n


def object_id(fd: int) -> int:
    """The kernel id of a program or map fd (bpf_prog_info/bpf_map_info both start type, id)."""
    return int.from_bytes(_obj_info(fd, "reading object info")[4:8], "little")


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
