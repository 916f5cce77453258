"""`faultinj replay`: run faults' programs over every packet of a capture with
BPF_PROG_TEST_RUN and write what would leave the hook. No interface needed.

Several specs run in order, as chained tc filters would: a packet a fault
drops reaches none after it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import pcap
from ..errors import SpecError, missing_path
from ..faults import FaultSpec, parse_spec
from ..values import check_seed
from ..kernel import caps, libbpf, maps, program

DROP = {"xdp": 1, "tc-ingress": 4, "tc-egress": 4}  # XDP_DROP, TC_ACT_STOLEN
ABORT = {"xdp": 0, "tc-ingress": 2, "tc-egress": 2}  # XDP_ABORTED, TC_ACT_SHOT


@dataclass
class ReplayResult:
    packets: int = 0
    written: int = 0
    dropped: list[int] = field(default_factory=list)     # 0-based packet numbers
    changed: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    seed: int = 0

    def to_json(self) -> dict:
        return {"packets": self.packets, "written": self.written, "dropped": self.dropped, "changed": self.changed,
                "duplicated": self.duplicated, "counters": self.counters, "seed": self.seed}


def replay(in_path: str, specs: list[str | FaultSpec], out_path: str, seed: int | None = None) -> ReplayResult:
    seed = check_seed(seed)   # None: a random one (the result says which)
    caps.require_privileges()
    parsed = [s if isinstance(s, FaultSpec) else parse_spec(s) for s in specs]
    records = list(pcap.read(in_path))  # read (and fail on a bad file) before loading anything
    if not os.path.isdir(os.path.dirname(os.path.abspath(out_path))):
        raise SpecError(missing_path(out_path))
    loaded = []
    try:
        for spec in parsed:
            # dry run: duplicate decides and counts, but its copy would leave through this namespace's lo
            obj = program.load(spec, seed=seed, dry_run=True, journal=False)
            loaded.append((spec, obj, libbpf.TestRunner(obj.prog_fd, max(65535, *(len(r.data) for r in records)))))
        res = ReplayResult(packets=len(records), seed=seed)
        copied: dict[int, int] = {}   # duplicate faults: their acted counter so far

        def through(data: bytes, start: int) -> list[bytes]:
            """What leaves the hook for a frame entering the faults at loaded[start]. A duplicate's copy
            continues with the faults after it only (as its tag makes it live: lib/fault.h). At tc egress
            the copy leaves first (the clone is sent inside the helper call); at ingress it is queued
            behind the original."""
            for j in range(start, len(loaded)):
                spec, obj, runner = loaded[j]
                r = runner.run(data)
                if r.retval in (DROP[spec.hook], ABORT[spec.hook]):
                    return []
                data = r.data
                if spec.fault.name == "duplicate":
                    acted = maps.read_counters(obj.map_fds["fi_counters"])["acted"]
                    if acted > copied.get(id(obj), 0):
                        copied[id(obj)] = acted
                        first = through(data, j + 1)   # egress: the copy; ingress: the original
                        return first + through(data, j + 1)
            return [data]

        out = []
        for i, rec in enumerate(records):
            if len(rec.data) < 14:  # BPF_PROG_TEST_RUN refuses a frame without an Ethernet header
                out.append(rec)
                continue
            frames = through(rec.data, 0)
            if not frames:
                res.dropped.append(i)
                continue
            if any(f != rec.data for f in frames):
                res.changed.append(i)
            if len(frames) > 1:
                res.duplicated.append(i)
            out.extend(pcap.Record(rec.ts_ns, rec.length - len(rec.data) + len(f), f) for f in frames)
        res.written = pcap.write(out_path, out)
        res.counters = {str(spec): maps.read_counters(obj.map_fds["fi_counters"]) for spec, obj, _ in loaded}
        return res
    finally:
        for _, obj, _ in loaded:
            obj.close()
