"""Read the journals of applied faults (pinned as <pin_dir>/fi_journal and fi_journal_head).

A journal is a log the program writes and nobody consumes (bpf/lib/fault.h): it keeps the last
JOURNAL_SIZE events, overwriting the oldest. Each reader maps it read-only and keeps its own place,
so any number of readers (`journal --follow`, a scenario run, the tracer) each see every event; a
reader that falls more than JOURNAL_SIZE events behind counts what it missed."""

from __future__ import annotations

import mmap
import os
import time

from .. import layouts
from ..errors import SpecError, StateError
from ..journal import EVENT_FORMAT, Event, decode
from ..values import parse_duration
from ..kernel import caps, libbpf, maps
from . import state
from .. import which

_IDX = layouts.scalar("fi_event", "idx")        # the slot's index word; the head (u64) is read alike
_IDX_AT = layouts.offset("fi_event", "idx")
_JOURNAL_FLAG = layouts.offset("fi_event", "journal")   # a byte: for the journal, or only for a tracer


class JournalLog:
    """One fault's log, mapped read-only, read from a place of this reader's own."""

    def __init__(self, log_fd: int, head_fd: int, from_start: bool = True):
        size = EVENT_FORMAT.size * maps.JOURNAL_SIZE
        self._log = mmap.mmap(log_fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        try:
            self._head = mmap.mmap(head_fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        except BaseException:
            self._log.close()
            raise
        head = self.head()
        self.next = max(0, head - maps.JOURNAL_SIZE) if from_start else head
        self.missed = 0     # events overwritten before this reader got to them

    def head(self) -> int:
        return _IDX.unpack_from(self._head, 0)[0]

    def _index(self, off: int) -> int:
        """The index word of the slot at off: its event's number + 1 once complete, 0 while written."""
        return _IDX.unpack_from(self._log, off + _IDX_AT)[0]

    def read(self, everything: bool = False) -> list[bytes]:
        """The new events' bytes, oldest first: those for the journal, or with everything, also
        those logged only for a tracer (journal=off while one watched)."""
        out, head, size = [], self.head(), EVENT_FORMAT.size
        if head - self.next > maps.JOURNAL_SIZE:
            self.missed += head - maps.JOURNAL_SIZE - self.next
            self.next = head - maps.JOURNAL_SIZE
        while self.next < head:
            off = (self.next % maps.JOURNAL_SIZE) * size
            # one look decides: a writer may complete the slot between two (issue 22)
            idx = self._index(off)
            if idx == 0 or idx < self.next + 1:
                break                  # still being written: the next read gets it
            if idx != self.next + 1:
                self.missed += 1       # overwritten already
                self.next += 1
                continue
            raw = self._log[off:off + size]
            if self._index(off) != self.next + 1:   # overwritten while copied
                self.missed += 1
            elif everything or raw[_JOURNAL_FLAG]:
                out.append(raw)
            self.next += 1
        return out

    def close(self) -> None:
        self._log.close()
        self._head.close()


class JournalReader:
    """The journals of some faults, read together. Reading takes nothing from other readers.
    from_start: begin with every event the journals still keep (else with the next one)."""

    def __init__(self, records: list[state.Record], from_start: bool = True, everything: bool = False):
        self.records: list[state.Record] = []
        self._logs: list[JournalLog] = []
        self._everything = everything
        try:
            for rec in records:
                try:
                    log_fd = libbpf.obj_get(f"{rec.pin_dir}/fi_journal")
                    head_fd = libbpf.obj_get(f"{rec.pin_dir}/fi_journal_head")
                except Exception:
                    continue   # a custom program, or a fault applied before the journal existed
                try:
                    self._logs.append(JournalLog(log_fd, head_fd, from_start))
                finally:
                    os.close(log_fd)
                    os.close(head_fd)
                self.records.append(rec)
        except BaseException:
            self.close()
            raise

    def _spec_of(self, i: int):
        def spec(gen: int) -> str:
            rec = self.records[i]
            if gen > rec.gen:      # set since this reader began: read the record again
                fresh = {r.id: r for r in state.records()}
                if rec.id in fresh:
                    rec = self.records[i] = fresh[rec.id]
            return rec.spec_at(gen)
        return spec

    def read(self, timeout_ms: int = 0) -> list[Event]:
        """The events waiting (after up to timeout_ms for the first), oldest first."""
        end = time.monotonic() + timeout_ms / 1000
        while True:
            out = []
            for i, log in enumerate(self._logs):
                rec = self.records[i]
                spec = self._spec_of(i)
                out.extend(decode(raw, rec.id, spec, rec.where, rec.hook) for raw in log.read(self._everything))
            if out or time.monotonic() >= end:
                break
            time.sleep(min(0.02, max(0.0, end - time.monotonic())))
        out.sort(key=lambda e: e.ts_ns)
        return out

    def missed(self) -> dict[str, int]:
        """Per fault id: events this reader missed (overwritten before it read them)."""
        return {rec.id: log.missed for rec, log in zip(self.records, self._logs)}

    def lost(self) -> dict[str, int]:
        """Per fault id: events the journal no longer keeps (overwritten by newer ones)."""
        out = {}
        for rec in self.records:
            try:
                fd = libbpf.obj_get(f"{rec.pin_dir}/fi_journal_head")
            except Exception:
                continue
            try:
                out[rec.id] = maps.read_overwritten(fd)
            finally:
                os.close(fd)
        return out

    def close(self) -> None:
        for log in getattr(self, "_logs", []):
            log.close()
        self._logs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_for(ifname: str | None = None, *, netns_name: str | None = None, fault_id: str | None = None,
            from_start: bool = True):
    """A reader (inject.journal.JournalReader; close it) of the journals of the faults on ifname,
    one fault by id, or every fault: from the oldest event kept, or (from_start=False) the next one.
    Reading takes nothing from other readers: each sees every event."""
    caps.require_privileges()
    def wanted(r: state.Record) -> bool:
        if fault_id is not None:
            return r.id == fault_id
        if ifname is not None:
            return r.ifname == ifname and r.netns == netns_name
        return netns_name is None or r.netns == netns_name   # every fault, or every one in a namespace


    with state.locked(exclusive=False):
        records = state.records()
        if fault_id is not None:   # by id alone; an interface or namespace beside it must be its own
            which.by_id(fault_id, records, ifname, netns_name)
        elif ifname is not None:   # without --netns: the one namespace with faults on ifname
            netns_name = which.netns_of(ifname, netns_name, records)
        recs = [r for r in records if wanted(r)]
    if not recs and (ifname or fault_id):
        what = f"fault {fault_id}" if fault_id else f"faults on {ifname}{' in ' + netns_name if netns_name else ''}"
        raise StateError(f"no {what}: see 'faultinj status'")
    return JournalReader(recs, from_start)   # it skips custom programs: they have no journal


def follow_seconds(duration: str | None, follow: bool) -> float | None:
    """How long `journal --follow --duration D` follows (None: until stopped); D goes with --follow only."""
    seconds = parse_duration(duration)
    if seconds is not None and not follow:
        raise SpecError("--duration goes with --follow")
    return seconds
