"""The Python API, one import for the CLI and for users; each part lives with its concern:
lifecycle.py (apply, set, and the apply/set commands' argument rules), removal.py (clear, reap),
faultstatus.py (status), inject/journal.py (journal readers), trace.py (the tracer),
inject/replay.py (faults over a capture), faults/ (the catalogue), values.py (durations, seeds).

Each name is imported when first used (PEP 562), so `from faultinj import api` costs nothing and a
command loads only the part it calls (`status` never loads the compiler, `clear` never the tracer).
The imports under TYPE_CHECKING are the same dependencies, written out for readers, type checkers
and tests/test_layers.py."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .faults import CATALOGUE, parse_spec
    from .faultstatus import FaultStatus, fault_status, status
    from .kernel.caps import require_privileges
    from .inject.journal import follow_seconds as journal_follow_seconds, open_for as journal
    from .inject.replay import replay
    from .trace import request as trace_request, stats as trace_stats, trace
    from .lifecycle import TC_MODES, apply, apply_command, apply_program, fault, set_command, set_fault
    from .pcap import Record as PcapRecord, write as write_pcap
    from .removal import Removed, clear, reap, whose
    from .values import MAX_SEED, check_seed, parse_duration
    from .stats import set_default_confidence

# name -> (module, its name there)
_WHERE = {
    "CATALOGUE": (".faults", "CATALOGUE"), "parse_spec": (".faults", "parse_spec"),
    "FaultStatus": (".faultstatus", "FaultStatus"), "fault_status": (".faultstatus", "fault_status"),
    "status": (".faultstatus", "status"),
    "require_privileges": (".kernel.caps", "require_privileges"),
    "journal": (".inject.journal", "open_for"), "journal_follow_seconds": (".inject.journal", "follow_seconds"),
    "replay": (".inject.replay", "replay"),
    "trace": (".trace", "trace"), "trace_request": (".trace", "request"),
    "trace_stats": (".trace", "stats"),
    "TC_MODES": (".lifecycle", "TC_MODES"), "apply": (".lifecycle", "apply"),
    "apply_command": (".lifecycle", "apply_command"), "apply_program": (".lifecycle", "apply_program"),
    "fault": (".lifecycle", "fault"), "set_command": (".lifecycle", "set_command"),
    "set_fault": (".lifecycle", "set_fault"),
    "PcapRecord": (".pcap", "Record"), "write_pcap": (".pcap", "write"),
    "Removed": (".removal", "Removed"), "clear": (".removal", "clear"), "reap": (".removal", "reap"),
    "whose": (".removal", "whose"),
    "MAX_SEED": (".values", "MAX_SEED"), "check_seed": (".values", "check_seed"),
    "parse_duration": (".values", "parse_duration"),
    "set_default_confidence": (".stats", "set_default_confidence"),
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    try:
        module, attr = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __package__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
