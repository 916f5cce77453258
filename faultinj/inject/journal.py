"""Read the journal rings of applied faults (pinned as <pin_dir>/fi_journal)."""

from __future__ import annotations

import os

from ..journal import Event, decode
from . import libbpf, maps, state


class JournalReader:
    """The journals of some faults, read together. Reading consumes events: two readers of one
    fault's journal share its events between them."""

    def __init__(self, records: list[state.Record]):
        self.records: list[state.Record] = []
        self._fds: list[int] = []
        try:
            for rec in records:
                try:
                    fd = libbpf.obj_get(f"{rec.pin_dir}/fi_journal")
                except Exception:
                    continue   # a custom program, or a fault applied before the journal existed
                self.records.append(rec)
                self._fds.append(fd)
            self._rings = libbpf.RingBuffers(self._fds)
        except BaseException:
            self.close()
            raise

    def read(self, timeout_ms: int = 0) -> list[Event]:
        """The events waiting (after up to timeout_ms for the first), oldest first."""
        out = []
        for which, raw in self._rings.read(timeout_ms):
            rec = self.records[which]
            out.append(decode(raw, rec.id, rec.spec, rec.where, rec.hook))
        out.sort(key=lambda e: e.ts_ns)
        return out

    def lost(self) -> dict[str, int]:
        """Per fault id: events its program could not record because the ring was full."""
        out = {}
        for rec in self.records:
            try:
                fd = libbpf.obj_get(f"{rec.pin_dir}/fi_counters")
            except Exception:
                continue
            try:
                out[rec.id] = maps.read_lost(fd)
            finally:
                os.close(fd)
        return out

    def close(self) -> None:
        if getattr(self, "_rings", None):
            self._rings.close()
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
