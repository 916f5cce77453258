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

# One scenario across kernels and OVS builds (faultinj/scenario/matrix.py): run_matrix, compare,
# bisect. That layer sits above this one (scenario/ imports api), so these are reached on first
# use rather than imported here: no import cycle.
_ACROSS_KERNELS = ("run_matrix", "compare", "bisect")


def __getattr__(name: str):
    if name in _ACROSS_KERNELS:
        from . import scenario

        return getattr(scenario, name)
    raise AttributeError(f"module 'faultinj.api' has no attribute '{name}'")
