"""The byte layout of the maps every fault program shares (bpf/lib/fault.h)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ..errors import FaultinjError
from ..faults.match import MATCH_FORMAT, NO_MATCH
from . import libbpf

# struct fi_config { u64 seed, deadline_ns, threshold; u32 param, flags; struct fi_match match;
# u32 extra[4], gen, pad; } padded to 8 bytes (the u64 alignment), as the compiler lays it out
_HEAD = struct.Struct("<QQQII")
_EXTRA = struct.Struct("<4II")
CONFIG_SIZE = (_HEAD.size + MATCH_FORMAT.size + _EXTRA.size + 4 + 7) // 8 * 8
CFG_ACTIVE, CFG_INGRESS, CFG_DRY_RUN, CFG_JOURNAL = 1, 2, 4, 8   # FI_CFG_* in bpf/lib/fault.h
COUNTERS = ("seen", "matched", "acted")  # enum fi_counter, in order
REFUSED = 4                               # FI_REFUSED: the kernel refused the change (truncate)
MAP_NAMES = ("fi_config", "fi_counters", "fi_flows", "fi_journal", "fi_journal_head", "fi_watch")
JOURNAL_SIZE = 4096                       # FI_JOURNAL_SIZE: the journal keeps the last 4096 events
KEY0 = (0).to_bytes(4, "little")


@dataclass
class Config:
    seed: int
    deadline_ns: int
    threshold: int
    param: int = 0
    active: bool = True
    match: bytes = NO_MATCH.pack()   # struct fi_match, see faults/match.py
    extra: tuple = (0, 0, 0, 0)
    flags: int = 0                   # FI_CFG_* other than ACTIVE
    gen: int = 0                     # the configuration's generation (each `set` counts it up)

    def pack(self) -> bytes:
        head = _HEAD.pack(self.seed, self.deadline_ns, self.threshold, self.param,
                          self.flags & ~CFG_ACTIVE | (CFG_ACTIVE if self.active else 0))
        return (head + self.match + _EXTRA.pack(*self.extra, self.gen)).ljust(CONFIG_SIZE, b"\0")

    @classmethod
    def unpack(cls, raw: bytes) -> "Config":
        seed, deadline, threshold, param, flags = _HEAD.unpack(raw[: _HEAD.size])
        match = raw[_HEAD.size: _HEAD.size + MATCH_FORMAT.size]
        *extra, gen = _EXTRA.unpack_from(raw, _HEAD.size + MATCH_FORMAT.size)
        return cls(seed, deadline, threshold, param, bool(flags & CFG_ACTIVE), match, tuple(extra),
                   flags & ~CFG_ACTIVE, gen)


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
    salt = int.from_bytes(hashlib.blake2b(f"{fault}@{hook}".encode(), digest_size=8).digest(), "little")
    return _mix64(seed ^ salt)


def write_config(fd: int, cfg: Config) -> None:
    libbpf.map_update(fd, KEY0, cfg.pack())


def read_config(fd: int) -> Config:
    return Config.unpack(libbpf.map_lookup(fd, KEY0, CONFIG_SIZE))


def _counter(fd: int, index: int) -> int:
    """One per-CPU counter summed over CPUs (each value is 8 bytes per possible CPU)."""
    ncpu = libbpf.possible_cpus()
    return sum(struct.unpack(f"<{ncpu}Q", libbpf.map_lookup(fd, index.to_bytes(4, "little"), 8 * ncpu)))


def read_counters(fd: int) -> dict[str, int]:
    return {name: _counter(fd, i) for i, name in enumerate(COUNTERS)}


def read_journal_head(fd: int) -> int:
    """Events the fault ever wrote to its journal (fi_journal_head)."""
    return struct.unpack("<Q", libbpf.map_lookup(fd, KEY0, 8))[0]


def read_overwritten(fd: int) -> int:
    """Journal events no longer kept (newer ones took their place), from fi_journal_head's fd."""
    return max(0, read_journal_head(fd) - JOURNAL_SIZE)


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
