"""The maps every fault program shares (bpf/lib/fault.h): the config, built from a parsed spec in
one place (config_for, write_spec: apply, set and replay all go through it), the counters, the
journal's head and the fault's tables. Byte layouts come from kernel/layout.py."""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping

try:   # hashlib.blake2b is this one; hashlib itself loads OpenSSL first (~10 ms of every start-up)
    from _blake2 import blake2b
except ImportError:   # pragma: no cover  (an interpreter built without it)
    from hashlib import blake2b

from .. import layouts
from ..errors import FaultinjError
from . import layout, libbpf

if TYPE_CHECKING:   # status reads counters without loading the catalogue
    from ..faults import FaultSpec

CONFIG_SIZE = ctypes.sizeof(layout.FiConfig)
# enum fi_cfg_flag (bpf/lib/fault.h), as the BTF says
CFG_ACTIVE, CFG_INGRESS, CFG_DRY_RUN, CFG_JOURNAL = (layouts.enum("fi_cfg_flag")[f"FI_CFG_{n}"]
                                                     for n in ("ACTIVE", "INGRESS", "DRY_RUN", "JOURNAL"))
_COUNTER = layouts.enum("fi_counter")
COUNTERS = ("seen", "matched", "acted")   # what status shows: FI_SEEN, FI_MATCHED, FI_ACTED
REFUSED = _COUNTER["FI_REFUSED"]          # the kernel refused the change (truncate)
MAP_NAMES = ("fi_config", "fi_config_live", "fi_counters", "fi_flows", "fi_journal", "fi_journal_head", "fi_watch")
JOURNAL_SIZE = layouts.enum("fi_journal_size")["FI_JOURNAL_SIZE"]   # the journal keeps the last 4096 events
KEY0 = (0).to_bytes(4, "little")


def _key(i: int) -> bytes:
    return i.to_bytes(4, "little")


@dataclass
class Config:
    """struct fi_config, field by field (what tests and status read back)."""
    seed: int
    deadline_ns: int
    threshold: int
    param: int = 0
    active: bool = True
    match: bytes = bytes(ctypes.sizeof(layout.FiMatch))   # struct fi_match; all zero: no filter
    extra: tuple = (0,) * layouts.array_len("fi_config", "extra")
    flags: int = 0                   # FI_CFG_* other than ACTIVE
    gen: int = 0                     # the configuration's generation (each `set` counts it up)

    def pack(self) -> bytes:
        return bytes(layout.FiConfig(seed=self.seed, deadline_ns=self.deadline_ns, threshold=self.threshold,
                                     param=self.param,
                                     flags=self.flags & ~CFG_ACTIVE | (CFG_ACTIVE if self.active else 0),
                                     match=layout.FiMatch.from_buffer_copy(self.match), extra=tuple(self.extra),
                                     gen=self.gen))

    @classmethod
    def unpack(cls, raw: bytes) -> "Config":
        c = layout.FiConfig.from_buffer_copy(raw[:CONFIG_SIZE])
        return cls(c.seed, c.deadline_ns, c.threshold, c.param, bool(c.flags & CFG_ACTIVE), bytes(c.match),
                   tuple(c.extra), c.flags & ~CFG_ACTIVE, c.gen)


def config_for(spec: FaultSpec, seed: int, deadline_ns: int = 0, gen: int = 0, dry_run: bool = False,
               journal: bool | None = None) -> Config:
    """The one place a parsed spec becomes its config.
    dry_run: decide and count but send nothing of its own (BPF_PROG_TEST_RUN: replay, program tests).
    journal: record each action (None: as the spec says, journal=on by default)."""
    journal = spec.match.journal if journal is None else journal
    flags = ((CFG_INGRESS if spec.hook == "tc-ingress" else 0) | (CFG_DRY_RUN if dry_run else 0)
             | (CFG_JOURNAL if journal else 0))
    return Config(seed=stream_seed(seed, spec.name, spec.hook), deadline_ns=deadline_ns, threshold=spec.threshold,
                  param=spec.param, match=bytes(layout.match_struct(spec.match)), extra=spec.extra, flags=flags,
                  gen=gen)


def write_spec(fds: Mapping[str, int], spec: FaultSpec, seed: int, deadline_ns: int = 0, gen: int = 0,
               fresh: bool = False, **how) -> None:
    """Make a fault's maps say what spec says: its tables, then its config (see write_config).
    fds: map name -> fd (a loaded object's map_fds, or pinned()). how: config_for's dry_run, journal."""
    for name, values in spec.tables.items():   # before the config that uses them
        write_table(fds[name], values)
    write_config(fds, config_for(spec, seed, deadline_ns, gen, **how), fresh)


def write_record(rec) -> None:
    """Make a running fault's config say what its record (inject.state.Record) says: `set`, and a
    `set` a killed process left half done."""
    with pinned(rec.pin_dir) as fds:
        write_spec(fds, rec.fault_spec(), rec.seed, rec.deadline_ns, rec.gen)


def write_config(fds: Mapping[str, int], cfg: Config, fresh: bool = False) -> None:
    """Write cfg into the slot no packet reads, then make it live (bpf/lib/fault.h fi_config_live):
    a packet sees the old config or the new, never a mix. fresh: an object no packet has reached
    yet (just loaded): its first slot, no waiting."""
    if fresh:
        libbpf.map_update(fds["fi_config"], _key(0), cfg.pack())
        libbpf.map_update(fds["fi_config_live"], KEY0, _key(0))
        return
    spare = 1 - _live(fds)
    wait_for_running_programs()   # programs that read the spare slot before the last switch have returned
    libbpf.map_update(fds["fi_config"], _key(spare), cfg.pack())
    libbpf.map_update(fds["fi_config_live"], KEY0, _key(spare))


def read_config(fds: Mapping[str, int]) -> Config:
    """The live config."""
    return Config.unpack(libbpf.map_lookup(fds["fi_config"], _key(_live(fds)), CONFIG_SIZE))


def _live(fds: Mapping[str, int]) -> int:
    return struct.unpack("<I", libbpf.map_lookup(fds["fi_config_live"], KEY0, 4))[0] & 1


_MEMBARRIER = {"x86_64": 324, "aarch64": 283}.get(platform.machine())
MEMBARRIER_CMD_GLOBAL = 1


def wait_for_running_programs() -> None:
    """An RCU grace period: tc and XDP programs run inside RCU read-side sections, and
    membarrier(MEMBARRIER_CMD_GLOBAL) returns after synchronize_rcu(), so every program run that
    started before this call has returned."""
    libc = ctypes.CDLL(None, use_errno=True)
    if _MEMBARRIER is None or libc.syscall(_MEMBARRIER, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0:
        err = ctypes.get_errno()
        raise FaultinjError(f"cannot wait for running BPF programs (membarrier: {os.strerror(err)}): "
                            "a kernel booted with nohz_full refuses it; clear the fault and apply it again")


class _Pinned(dict):
    def __init__(self, pin_dir: str):
        super().__init__()
        self.pin_dir = pin_dir

    def __missing__(self, name: str) -> int:
        fd = self[name] = libbpf.obj_get(f"{self.pin_dir}/{name}")
        return fd


@contextmanager
def pinned(pin_dir: str) -> Iterator[Mapping[str, int]]:
    """A fault's pinned maps by name, each opened when first used, all closed at the end."""
    fds = _Pinned(pin_dir)
    try:
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


_M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finaliser, as fi_mix64 in bpf/lib/fault.h."""
    x ^= x >> 30
    x = x * 0xBF58476D1CE4E5B9 & _M64
    x ^= x >> 27
    x = x * 0x94D049BB133111EB & _M64
    return x ^ x >> 31


def stream_seed(seed: int, fault: str, hook: str) -> int:
    """The seed a fault's program draws with (the config map's seed): the user's seed mixed with
    the fault's name and hook. Two faults given one seed then draw independent streams (corrupt
    and duplicate do not pick the same packets), each still reproducible from that seed; the same
    fault on the same hook repeats exactly. `set` keeps the stream (neither part changes)."""
    salt = int.from_bytes(blake2b(f"{fault}@{hook}".encode(), digest_size=8).digest(), "little")
    return _mix64(seed ^ salt)


def _counter(fd: int, index: int) -> int:
    """One per-CPU counter summed over CPUs (each value is 8 bytes per possible CPU)."""
    ncpu = libbpf.possible_cpus()
    return sum(struct.unpack(f"<{ncpu}Q", libbpf.map_lookup(fd, index.to_bytes(4, "little"), 8 * ncpu)))


def read_counters(fd: int) -> dict[str, int]:
    return {name: _counter(fd, _COUNTER[f"FI_{name.upper()}"]) for name in COUNTERS}


def read_journal_head(fd: int) -> int:
    """Events the fault ever wrote to its journal (fi_journal_head)."""
    return struct.unpack("<Q", libbpf.map_lookup(fd, KEY0, 8))[0]


def read_overwritten(fd: int) -> int:
    """Journal events no longer kept (newer ones took their place), from fi_journal_head's fd."""
    return max(0, read_journal_head(fd) - JOURNAL_SIZE)


def read_pinned(pin_dir: str) -> tuple[dict | None, int, int]:
    """A fault's counters, its journal events no longer kept and the changes the kernel refused,
    from its pinned maps; (None, 0, 0) when the pins are gone."""
    try:
        fd = libbpf.obj_get(f"{pin_dir}/fi_counters")
    except Exception:
        return None, 0, 0
    try:
        counters, refused = read_counters(fd), read_refused(fd)
    finally:
        os.close(fd)
    try:
        fd = libbpf.obj_get(f"{pin_dir}/fi_journal_head")
    except Exception:
        return counters, 0, refused   # applied before the journal was a log
    try:
        return counters, read_overwritten(fd), refused
    finally:
        os.close(fd)


def read_refused(fd: int) -> int:
    """Packets the fault chose but could not change: the kernel refused (truncate below the headers).
    0 for a program loaded before the counter existed (its counter map is one entry shorter)."""
    try:
        return _counter(fd, REFUSED)
    except FaultinjError:
        return 0


def write_table(fd: int, values) -> None:
    """An array map of signed 32-bit values (a time fault's distribution table)."""
    for i, v in enumerate(values):
        libbpf.map_update(fd, struct.pack("<I", i), struct.pack("<i", v))
