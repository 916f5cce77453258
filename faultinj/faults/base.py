"""The shape every catalogue entry has, and the value parsers they share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .. import layouts
from ..errors import SpecError

# act when the high 32 bits of a draw are below the threshold: 2**32 is "always" (FI_ALWAYS)
ALWAYS = 1 << layouts.enum("fi_threshold")["FI_ALWAYS_SHIFT"]

HOOKS = ("xdp", "tc-ingress", "tc-egress")
HOOK_ALIASES = {
    "xdp": "xdp",
    "ingress": "tc-ingress",
    "tc-ingress": "tc-ingress",
    "egress": "tc-egress",
    "tc-egress": "tc-egress",
}


@dataclass(frozen=True)
class Value:
    """The value after `name=`: how to read it, what it means, whether it is needed."""

    name: str
    help: str
    parse: Callable[[str, str], Any]   # (fault name, text) -> value, raises SpecError
    default: Any = None                 # None: the value is required

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class Option:
    """A fault's own `KEY=VALUE` word, written among the filters (`corrupt=1%,csum=bad`)."""

    name: str
    help: str
    parse: Callable[[str, str], Any]   # (option name, text) -> value, raises SpecError
    default: Any


@dataclass(frozen=True)
class FaultType:
    name: str
    summary: str
    program: str                  # bpf/<program>.bpf.c
    hooks: tuple[str, ...]        # where it may run, the default first
    value: Value
    unit: str                     # what "matched" counts, in the user's words
    # the value as a rate (a threshold for the draw); None: the value is something
    # else (a TTL, a DSCP) and the rate comes from the p=/ratio= modifiers
    threshold: Callable[[Any], int] | None
    # the config map's param word and extra[4] words, from the value and the fault's options
    param: Callable[[Any, dict], int] = lambda value, options: 0
    extra: Callable[[Any, dict], tuple] = lambda value, options: (0, 0, 0, 0)
    # the fault's own KEY=VALUE words beside the filters (corrupt: csum=, bits=), with defaults
    options: tuple[Option, ...] = ()
    # more maps the program has, filled from the value and options at load and at set: {name: values}
    tables: Callable[[Any, dict], dict] = lambda value, options: {}
    # a qdisc the fault needs on the link (time faults: fq holds packets until their departure time)
    qdisc: str | None = None
    hooks_note: str = ""          # why it runs only where it does
    # False: a user's own program (apply --program): no faultinj config, counters or journal
    configurable: bool = True

    def option_values(self, given: dict) -> dict:
        """Every option's value: the parsed word where given, else its default."""
        return {o.name: given.get(o.name, o.default) for o in self.options}

    @property
    def default_hook(self) -> str:
        return self.hooks[0]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "summary": self.summary,
            "value": {
                "name": self.value.name,
                "help": self.value.help,
                "required": self.value.required,
                "default": self.value.default,
            },
            "hooks": list(self.hooks),
            "default_hook": self.default_hook,
            "unit": self.unit,
            "rate": "its value" if self.threshold else "p= or ratio= (default: every packet)",
            "options": [{"name": o.name, "help": o.help, "default": o.default} for o in self.options],
            "program": f"bpf/{self.program}.bpf.c",
        }


def parse_probability(fault: str, text: str) -> float:
    """'0.05', '5%', '1' -> a probability in [0, 1]."""
    t = text.strip()
    try:
        p = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        p = math.nan
    if not (0.0 <= p <= 1.0):  # also catches NaN
        raise SpecError(
            f"{fault}: bad value '{text}': give a probability from 0 to 1 or a percentage "
            f"from 0% to 100% (e.g. {fault}=0.05 or {fault}=5%)"
        )
    return p


def whole_number(text: str, lo: int, hi: int, problem: str, base: int = 10) -> int:
    """text as a whole number in lo..hi; anything else raises SpecError(problem)."""
    try:
        n = int(text.strip(), base)
    except ValueError:
        raise SpecError(problem) from None
    if not lo <= n <= hi:
        raise SpecError(problem)
    return n


MAX_RATIO = 1_000_000_000


def parse_ratio(fault: str, text: str) -> int:
    """'10' -> 10, meaning one in ten."""
    return whole_number(text, 1, MAX_RATIO, f"{fault}: bad value '{text}': give a whole number N from 1 to "
                        f"{MAX_RATIO} (one packet in N is hit, e.g. {fault}=10)")


def probability_threshold(p: float) -> int:
    return min(ALWAYS, round(p * ALWAYS))


def ratio_threshold(n: int) -> int:
    return round(ALWAYS / n)
