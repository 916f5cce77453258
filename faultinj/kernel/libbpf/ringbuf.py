"""BPF ring buffers read from user space (the tracer's events), in bulk through their mapped pages."""

from __future__ import annotations

import struct
import time

from .ffi import map_info


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

    def read(self, max_bytes: int | None = None, length: int | None = None) -> bytes:
        """length: the records are expected to be all this long (as reserved, without the header):
        their headers are then checked together (numpy), not one by one in Python; from a record
        of another length, or one still being written, on, one by one as without it."""
        cons = start = self._POS.unpack_from(self._cons, 0)[0]
        prod = self._POS.unpack_from(self._prod, 0)[0]
        if max_bytes is not None:
            prod = min(prod, cons + max_bytes)
        mask, base, hdr = self.size - 1, self._page, self._HDR
        if length:
            step = (length + 8 + 7) & ~7
            if prod - cons >= step:
                cons += self._whole(base + (cons & mask), (prod - cons) // step, length, step)
        while cons < prod:
            got = hdr.unpack_from(self._prod, base + (cons & mask))[0]
            if got & self.BUSY:
                break                       # still being written: the next read gets it
            cons += ((got & ~(self.BUSY | self.DISCARD)) + 8 + 7) & ~7
        if cons == start:
            return b""
        off = base + (start & mask)
        out = self._prod[off:off + cons - start]
        self._POS.pack_into(self._cons, 0, cons)
        return out

    def _whole(self, off: int, n: int, length: int, step: int) -> int:
        """The bytes from off that are whole records of that length, up to n of them: their
        headers read as one strided array (the data is mapped twice: a record never wraps)."""
        import numpy as np

        heads = np.ndarray((n,), np.dtype("<u4"), self._prod, off, (step,))
        odd = np.flatnonzero((heads & np.uint32(~self.DISCARD & 0xFFFFFFFF)) != length)   # BUSY too
        del heads   # the mmap cannot close while an array views it
        return int(odd[0] if len(odd) else n) * step

    def close(self) -> None:
        for m in (self._cons, self._prod):
            if m is not None:
                m.close()
        self._cons = self._prod = None
