"""BPF_PROG_TEST_RUN: a loaded program run on a frame, in the kernel, without attaching it."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from .ffi import _raise_errno, lib


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
