"""BPF ring buffers read from user space (the tracer's events)."""

from __future__ import annotations

import ctypes
import errno

from .ffi import RINGBUF_SAMPLE_FN, _raise_errno, lib


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
