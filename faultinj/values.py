"""What commands take beside a spec: durations (--duration, scenario phases) and seeds."""

from __future__ import annotations

import os
import re
import time

from .errors import SpecError

MAX_SEED = (1 << 64) - 1
_DURATION = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$"   # compiled at its first use (re caches it)
_UNITS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float | int | None) -> float | None:
    """'30s', '5m', '1.5h', '500ms', 30 -> seconds; None -> None."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        m = re.match(_DURATION, text)
        if not m:
            raise SpecError(f"bad duration '{text}': give a number with an optional unit ms, s, m, h, d (e.g. 30s)")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not (0 < seconds <= 365 * 86400):
        raise SpecError(f"bad duration '{text}': it must be more than 0 and at most 365 days")
    return seconds


def check_seed(seed: int | None) -> int:
    if seed is None:
        return int.from_bytes(os.urandom(8), "little")   # secrets' own source; secrets loads OpenSSL
    if not (0 <= seed <= MAX_SEED):
        raise SpecError(f"bad seed {seed}: give a whole number from 0 to 2**64-1")
    return seed


def deadline(seconds: float | None) -> tuple[int, float | None]:
    if seconds is None:
        return 0, None
    return time.monotonic_ns() + int(seconds * 1e9), time.time() + seconds
