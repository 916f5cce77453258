"""Which faults a command names (set, clear, journal): by id alone, or by interface.

An interface named without a namespace means this namespace's faults on it when there are any;
else the faults on that name in the one namespace that has some (a new user's `set psh-ratio=5
ntA0` for the fault on ntA0 in netns ntA). Faults on that name in several namespaces: ask which.
"""

from __future__ import annotations

from typing import Callable, Iterable

from .errors import StateError
from .inject import state


def netns_of(ifname: str, netns_name: str | None, records: Iterable[state.Record],
             wanted: Callable[[state.Record], bool] = lambda r: True) -> str | None:
    """The namespace whose faults on ifname a command means: netns_name when given; else ours when
    we have faults on ifname (or no namespace has); else the one namespace that has; several: an error."""
    if netns_name is not None:
        return netns_name
    on = [r for r in records if r.ifname == ifname and wanted(r)]
    if not on or any(r.netns is None for r in on):
        return None
    spaces = sorted({r.netns for r in on})
    if len(spaces) == 1:
        return spaces[0]
    ids = ", ".join(f"{r.id} in {r.netns}" for r in on)
    raise StateError(f"faults on {ifname} in {len(spaces)} namespaces ({ids}): give --netns NS or --id ID")


def by_id(fault_id: str, records: Iterable[state.Record], ifname: str | None = None,
          netns_name: str | None = None) -> state.Record | None:
    """The fault with this id; an interface or namespace given beside it must be its own."""
    rec = next((r for r in records if r.id == fault_id), None)
    if rec is None:
        return None
    if ifname is not None and rec.ifname != ifname:
        raise StateError(f"fault {fault_id} is on {rec.where}, not on {ifname}: leave out the interface "
                         f"(--id alone finds it)")
    if netns_name is not None and rec.netns != netns_name:
        raise StateError(f"fault {fault_id} is on {rec.where}, not in {netns_name}: leave out --netns "
                         f"(--id alone finds it)")
    return rec
