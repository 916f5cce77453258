"""The Python API, one import for the CLI and for users; each part lives with its concern:
lifecycle.py (apply, set), removal.py (clear, reap), faultstatus.py (status), inject/journal.py
(journal readers), values.py (durations, seeds)."""

from __future__ import annotations

from .faultstatus import FaultStatus, fault_status, status
from .inject.journal import open_for as journal
from .lifecycle import TC_MODES, apply, apply_program, fault, set_fault
from .removal import clear, reap
from .values import MAX_SEED, check_seed, parse_duration

__all__ = ["FaultStatus", "MAX_SEED", "TC_MODES", "apply", "apply_program", "check_seed", "clear", "fault",
           "fault_status", "journal", "parse_duration", "reap", "set_fault", "status"]

