"""The fault catalogue: parse and validate a spec, say which program runs where.

Pure Python, no kernel access. A spec reads `NAME[=VALUE][,FILTER=V...][@HOOK]`,
e.g. `psh-ratio=10`, `drop=5%,proto=udp,dport=53@ingress`, `ttl-pong@xdp`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError
from .base import ALWAYS, HOOK_ALIASES, HOOKS, FaultType, Value, probability_threshold
from .match import MARK, NO_MATCH, Match, parse_match


def discover(path=__path__, package: str = __name__) -> dict[str, FaultType]:
    """Every module of the package that names a FAULT (or FAULTS, several sharing a program), by
    module name: a new fault is bpf/X.bpf.c and faults/X.py, nothing else to list."""
    out: dict[str, FaultType] = {}
    # the directory read as pkgutil.iter_modules would (its import is half a ms of every apply)
    names = {e.name.removesuffix(".py") if e.is_file() else e.name for d in path for e in os.scandir(d)
             if (e.is_file() and e.name.endswith(".py") and e.name != "__init__.py")
             or (e.is_dir() and e.name.isidentifier() and os.path.isfile(os.path.join(e.path, "__init__.py")))}
    for mod in sorted(names):
        module = importlib.import_module(f"{package}.{mod}")
        found = getattr(module, "FAULTS", ()) or ((module.FAULT,) if hasattr(module, "FAULT") else ())
        for f in found:
            if f.name in out:
                raise ImportError(f"faults/{mod}.py: a fault named {f.name} is in the catalogue already")
            out[f.name] = f
    return out


CATALOGUE: dict[str, FaultType] = discover()

# A user's own BPF C program (`apply --program FILE.c`): a spec like any fault's (program=FILE.c:FUNCTION@HOOK),
# listed and cleared alike, but not in the catalogue and with no config to write.
PROGRAM = FaultType(name="program", summary="a user's own BPF C program (faultinj apply --program FILE.c)",
                    program="", hooks=HOOKS, value=Value("FILE.c:FUNCTION", "the source and its entry function",
                                                         lambda _name, text: text.strip()),
                    unit="", threshold=None, configurable=False)

__all__ = ["CATALOGUE", "PROGRAM", "Change", "discover", "FaultSpec", "FaultType", "HOOKS", "Match", "parse_match",
           "parse_spec", "parse_change", "get_fault", "parse_hook", "rate_threshold"]


@dataclass(frozen=True)
class FaultSpec:
    fault: FaultType
    value: Any
    hook: str
    match: Match = NO_MATCH

    @property
    def name(self) -> str:
        return self.fault.name

    @property
    def threshold(self) -> int:
        return rate_threshold(self.fault, self.value, self.match)

    @property
    def options(self) -> dict:
        return self.fault.option_values(dict(self.match.options))

    @property
    def param(self) -> int:
        return self.fault.param(self.value, self.options)

    @property
    def extra(self) -> tuple:
        return self.fault.extra(self.value, self.options)

    @property
    def tables(self) -> dict:
        return self.fault.tables(self.value, self.options)

    def __str__(self) -> str:
        return f"{self.fault.name}={self.value}{self.match}@{self.hook}"


def rate_threshold(fault: FaultType, value, match: Match) -> int:
    """The draw's threshold: from the value where it is a rate, else from p=/ratio= (default: always)."""
    if fault.threshold is not None:
        return fault.threshold(value)
    return ALWAYS if match.probability is None else probability_threshold(match.probability)


def _suggest(word: str, choices) -> str:
    import difflib   # a mistake's suggestion only: not every spec's parse

    near = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{near[0]}'?)" if near else ""


def get_fault(name: str) -> FaultType:
    if name == PROGRAM.name:
        return PROGRAM
    try:
        return CATALOGUE[name]
    except KeyError:
        raise SpecError(
            f"unknown fault '{name}'{_suggest(name, CATALOGUE)}; known faults: {', '.join(CATALOGUE)} "
            "(see 'faultinj faults')"
        ) from None


def parse_hook(text: str) -> str:
    try:
        return HOOK_ALIASES[text.strip().lower()]
    except KeyError:
        raise SpecError(
            f"unknown hook '{text}'{_suggest(text, HOOK_ALIASES)}; hooks: xdp, ingress (tc-ingress), "
            "egress (tc-egress)"
        ) from None


def parse_spec(text: str, hook: str | None = None) -> FaultSpec:
    """'drop=0.2,proto=udp@ingress' -> FaultSpec. `hook` (from a flag) must agree with an @hook."""
    fault, value_text, filters, hook_text = _split(text)
    eq = value_text is not None
    if eq and not value_text.strip():
        raise SpecError(f"'{text}': nothing after '=': {fault.name} takes {fault.value.name}: {fault.value.help}")
    if value_text:
        value = fault.value.parse(fault.name, value_text)
    elif fault.value.required:
        raise SpecError(
            f"{fault.name} needs a value: {fault.name}={fault.value.name} ({fault.value.help})"
        )
    else:
        value = fault.value.default
    chosen = parse_hook(hook_text) if hook_text is not None else None
    if hook is not None:
        flag_hook = parse_hook(hook)
        if chosen is not None and chosen != flag_hook:
            raise SpecError(f"'{text}' says @{chosen} but --hook says {flag_hook}: give one")
        chosen = flag_hook
    chosen = chosen or fault.default_hook
    if chosen not in fault.hooks:
        raise SpecError(f"{fault.name} cannot run on {chosen}; it runs on: {', '.join(fault.hooks)}"
                        + (f" ({fault.hooks_note})" if fault.hooks_note else ""))
    match = parse_match(filters or [], fault.options)
    if match.fields & MARK and chosen == "xdp":
        raise SpecError("mark= filters on the skb's mark, which XDP runs before: give @ingress or @egress")
    if match.probability is not None and fault.threshold is not None:
        raise SpecError(f"{fault.name} takes its rate as its value ({fault.name}={fault.value.name}); "
                        "p= and ratio= are for faults whose value is something else (ttl, dscp)")
    return FaultSpec(fault=fault, value=value, hook=chosen, match=match)


def _split(text: str) -> tuple[FaultType, str | None, list[str] | None, str | None]:
    """'drop=5%,proto=udp@ingress' -> (drop, '5%', ['proto=udp'], 'ingress'); None where not given."""
    if not text or not text.strip():
        raise SpecError("empty fault spec: give NAME[=VALUE][@HOOK], e.g. psh-ratio=10")
    body, at, hook_text = text.strip().partition("@")
    if at and not hook_text:
        raise SpecError(f"'{text}': nothing after '@': give a hook (xdp, ingress, egress)")
    head, *filters = body.split(",")
    name, eq, value_text = head.partition("=")
    return get_fault(name.strip()), value_text if eq else None, filters or None, hook_text if at else None


@dataclass(frozen=True)
class Change:
    """What `set` changes in a running fault: its value, its filters (all of them), or both."""
    fault: FaultType
    value: str | None
    filters: list | None
    hook: str | None            # selects the fault among several; a fault's hook does not change

    def applied_to(self, current: FaultSpec) -> FaultSpec:
        """The spec after the change, parsed and validated as apply's."""
        value = self.value if self.value is not None else str(current.value)
        filters = self.filters if self.filters is not None else [f"{k}={v}" for k, v in current.match.words]
        return parse_spec(",".join([f"{current.name}={value}", *filters]) + f"@{current.hook}")


def parse_change(text: str) -> Change:
    """`set`'s NAME[=VALUE][,FILTER=V...][@HOOK]: the value and filters checked here, before any
    fault is looked up. NAME alone changes nothing by itself (--seed, --duration do)."""
    fault, value_text, filters, hook_text = _split(text)
    if not fault.configurable:
        raise SpecError("a custom program has no faultinj config to set: clear it and apply it again")
    if value_text is not None:
        parse_spec(text)                      # the new value (and filters) valid as apply's
    elif filters:
        parse_match(filters, fault.options)
    return Change(fault, value_text, filters, parse_hook(hook_text) if hook_text is not None else None)
