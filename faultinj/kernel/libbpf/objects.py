"""BPF objects: open, load (verifier errors in full), pin; tracing objects attached where their
sections say; one program of an object as fentry on a kernel function."""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass, field

from ...errors import FaultinjError, VerifierError
from .ffi import _messages, _print_lock, _raise_errno, lib


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


def _verifier_tail(log: str) -> str:
    lines = [ln for ln in log.splitlines() if ln.strip()]
    if "-- BEGIN PROG LOAD LOG --" in log:
        body = log.split("-- BEGIN PROG LOAD LOG --", 1)[1].split("-- END PROG LOAD LOG --", 1)[0]
        lines = [ln for ln in body.splitlines() if ln.strip() and not ln.startswith("processed ")]
    return "\n".join(lines[-12:])
