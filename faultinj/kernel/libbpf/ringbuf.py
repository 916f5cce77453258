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
