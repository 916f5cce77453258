"""One scenario across kernels and Open vSwitch builds: a verdict matrix (`run --kernel A --kernel B`),
`compare` (FAIL before a fix, PASS after) and `bisect` (the first Debian kernel whose verdict differs).

A *side* is what one column runs on: a kernel (a Debian package name, a metapackage, the user's own
`/path/bzImage[:/path/modules]`, or `host`: this machine's kernel, no guest) and/or an OVS build
(`ovs=DIR`: ovs-vswitchd, ovsdb-server and the ovs-* tools from DIR), written `KERNEL`, `ovs=DIR`
or `KERNEL,ovs=DIR`. A namespace-only scenario given a kernel runs inside a guest of that kernel
(as lab.guest does); lab.guest and lab.vms scenarios take the kernel from the side.

Each side's verdict is k of N runs (`repeat`): PASS when N of N pass, FAIL when none does, MIXED
otherwise; a run that could not be made (the verifier refused a program on that kernel, ...) is
ERROR with its reason. Every side is checked before anything is fetched or booted: a bad name is
one line, exit 2, and nothing is left behind."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import FaultinjError, SpecError
from ..guest import kernels
from ..labs import VMHostSpec
from ..verdict import Verdict
from . import inguest, runner
from .schema import Scenario
from ..labs import ovs

PASS, FAIL, MIXED, ERROR = "PASS", "FAIL", "MIXED", "ERROR"
GUEST_MEMORY = "1G"   # a namespace-only scenario's guest (lab.guest's default)


@dataclass(frozen=True)
class Side:
    kernel: str | None = None   # None: the scenario's own (this machine, or what its lab names)
    ovs: str | None = None      # an OVS build's prefix directory

    @property
    def label(self) -> str:
        parts = []
        if self.kernel:
            parts.append(kernels.short_name(self.kernel))
        if self.ovs:
            parts.append(f"ovs={self.ovs}")
        return ",".join(parts) or "default"

    def to_json(self) -> dict:
        return {"kernel": self.kernel, "ovs": self.ovs, "label": self.label}


def parse_side(text: str, what: str = "--kernel") -> Side:
    """'KERNEL', 'ovs=DIR' or 'KERNEL,ovs=DIR', checked: SpecError (exit 2) for a bad kernel name, a
    path that is not a kernel or an OVS prefix without ovs-vswitchd. Nothing is fetched."""
    text = (text or "").strip()
    if not text:
        raise SpecError(f"{what}: give a kernel (a Debian package name, /path/bzImage[:modules] or 'host') "
                        "or ovs=DIR")
    kernel = ovs_dir = None
    for part in text.split(","):
        part = part.strip()
        if part.startswith("ovs="):
            ovs_dir = part[4:]
        elif kernel is None and part:
            kernel = part
        else:
            raise SpecError(f"{what} {text}: one kernel and at most one ovs=DIR, separated by a comma")
    if kernel:
        kernels.check(kernel)
    if ovs_dir is not None:
        ovs_dir = ovs.check_prefix(ovs_dir)
    return Side(kernel, ovs_dir)


def with_side(scn: Scenario, side: Side) -> Scenario:
    """The scenario as it runs on a side: its guest's or its VMs' kernel replaced, a namespace-only
    lab moved into a guest of that kernel, its OVS bridges given the side's build."""
    lab = scn.lab
    if side.kernel == kernels.HOST:
        if lab.vms:
            raise SpecError(f"{scn.path}: lab.vms boots VMs: 'host' is no kernel to boot them with "
                            "(give a kernel package or image)")
        lab = dataclasses.replace(lab, guest=None)
    elif side.kernel:
        if lab.vms:
            lab = dataclasses.replace(lab, vms={h: dataclasses.replace(v, kernel=side.kernel)
                                                for h, v in lab.vms.items()})
        elif lab.guest:
            lab = dataclasses.replace(lab, guest=dataclasses.replace(lab.guest, kernel=side.kernel))
        else:
            if scn.targets or lab.remote:
                raise SpecError(f"{scn.path}: --kernel runs the lab inside a guest, where "
                                f"{', '.join([*scn.targets, *lab.remote])} cannot be reached: run it without "
                                "--kernel")
            lab = dataclasses.replace(lab, guest=VMHostSpec(side.kernel, GUEST_MEMORY, 1))
    if side.ovs:
        if "ovs" not in lab.bridges.values():
            raise SpecError(f"{scn.path}: ovs={side.ovs}: the scenario has no ovs bridge to run on that build")
        lab = dataclasses.replace(lab, ovs_prefix=side.ovs)
    return dataclasses.replace(scn, lab=lab)


# ---- one side ------------------------------------------------------------------------------

@dataclass
class Cell:
    """A scenario's runs on one side."""

    side: Side
    runs: list[Verdict] = field(default_factory=list)
    error: FaultinjError | None = None
    seconds: float = 0.0
    release: str = ""

    @property
    def passes(self) -> int:
        return sum(r.ok for r in self.runs)

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return ERROR
        if not self.runs:
            return ERROR
        return PASS if self.passes == len(self.runs) else FAIL if self.passes == 0 else MIXED

    def describe(self) -> str:
        if self.error is not None:
            return f"ERROR ({self.error})"
        return f"{self.verdict} ({self.passes} of {len(self.runs)} runs pass)"

    def check(self, name: str) -> tuple[int, int, str] | None:
        """(runs where the check held, runs that had it, its observed value in the first run)."""
        seen = [c for r in self.runs for c in r.checks if c.name == name]
        if not seen:
            return None
        return sum(c.ok for c in seen), len(seen), seen[0].observed

    def to_json(self) -> dict:
        return {**self.side.to_json(), "release": self.release, "verdict": self.verdict, "passes": self.passes,
                "runs": len(self.runs), "seconds": round(self.seconds, 1),
                "error": str(self.error) if self.error is not None else None,
                "exit_status": int(self.error.status) if self.error is not None else None,
                "verdicts": [r.to_json() for r in self.runs]}


def run_side(scn: Scenario, side: Side, repeat: int = 1, pcap_dir: str | None = None,
             progress: Callable[[str], None] = lambda m: None) -> Cell:
    """Run the scenario `repeat` times on one side. An error of the run itself (a program the
    kernel refuses, a guest that does not come up) is the cell's ERROR, not the caller's; bad
    input (SpecError) is raised."""
    cell = Cell(side)
    started = time.monotonic()
    say = lambda m: progress(f"[{side.label}] {m}")   # noqa: E731
    try:
        if side.kernel and side.kernel != kernels.HOST:
            k = kernels.resolve(side.kernel, lambda m: say(f"fetch: {m}"))
            cell.release = k.release
            say(f"kernel {k.release}: {k.vmlinuz}")
        elif side.kernel == kernels.HOST or not (scn.lab.guest or scn.lab.vms):
            cell.release = os.uname().release
        on = with_side(scn, side)
        if on.lab.guest and repeat > 1:   # every run in one guest: one boot, not N
            where = os.path.join(pcap_dir, _safe(side.label)) if pcap_dir else None
            cell.runs = inguest.runs_in_guest(on, where, False, say, repeat)
        for i in range(0 if cell.runs else repeat):
            if repeat > 1:
                say(f"run {i + 1} of {repeat}")
            where = os.path.join(pcap_dir, _safe(side.label) + (f"-run{i + 1}" if repeat > 1 else "")) \
                if pcap_dir else None
            cell.runs.append(runner.run(on, pcap_dir=where, progress=say))
            for f in cell.runs[-1].faults.values():
                cell.release = cell.release or f.get("kernel", "")
    except SpecError:
        raise
    except FaultinjError as exc:
        cell.error = exc
        say(f"error: {exc}")
    cell.seconds = time.monotonic() - started
    say(f"{cell.describe()} in {cell.seconds:.1f} s")
    return cell


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in ".+-_" else "_" for c in label)[:80]


# ---- the matrix ----------------------------------------------------------------------------

@dataclass
class Matrix:
    scenario: Scenario
    cells: list[Cell]
    repeat: int = 1

    @property
    def rows(self) -> list[str]:
        """Every check's name, in the order the runs made them."""
        names: list[str] = []
        for cell in self.cells:
            for r in cell.runs:
                for c in r.checks:
                    if c.name not in names:
                        names.append(c.name)
        return names

    @property
    def ok(self) -> bool:
        return all(c.verdict == PASS for c in self.cells)

    def verdicts(self) -> list[Verdict]:
        """One verdict per column (its first run), named after the side: what --junit and --report take."""
        out = []
        for cell in self.cells:
            v = dataclasses.replace(cell.runs[0]) if cell.runs else Verdict(self.scenario.name, self.scenario.path)
            v.scenario = f"{self.scenario.name} [{cell.side.label}]"
            v.seconds = cell.seconds
            if cell.error is not None:
                v.errors = [*v.errors, str(cell.error)]
            if len(cell.runs) > 1:
                v.facts = {**v.facts, "runs passed": f"{cell.passes} of {len(cell.runs)}"}
            out.append(v)
        return out

    def to_json(self) -> dict:
        return {"scenario": self.scenario.name, "path": self.scenario.path, "repeat": self.repeat, "ok": self.ok,
                "columns": [c.to_json() for c in self.cells],
                "rows": [{"check": name, "cells": [_row_cell(c.check(name)) for c in self.cells]}
                         for name in self.rows]}

    def table(self) -> list[list[str]]:
        """Text rows: a header, one row per check (✓/✗, k of N when repeated, the observed value),
        each side's verdict and time."""
        head = ["", *[c.side.label for c in self.cells]]
        out = [head, ["release", *[c.release or "?" for c in self.cells]]]
        for name in self.rows:
            row = [name]
            for c in self.cells:
                got = c.check(name)
                if got is None:
                    row.append("-")
                    continue
                k, n, observed = got
                mark = "✓" if k == n else "✗" if k == 0 else "~"
                row.append(f"{mark}{f' {k}/{n}' if n > 1 else ''} {observed}")
            out.append(row)
        out.append(["verdict", *[(c.verdict if c.error is None else f"ERROR: {c.error}")
                                 + (f" {c.passes}/{len(c.runs)}" if self.repeat > 1 and c.error is None else "")
                                 for c in self.cells]])
        out.append(["time", *[f"{c.seconds:.1f} s" for c in self.cells]])
        return out


def _row_cell(got) -> dict | None:
    if got is None:
        return None
    k, n, observed = got
    return {"ok": k == n, "passes": k, "runs": n, "observed": observed}


def check_repeat(repeat: int) -> None:
    if repeat < 1 or repeat > 100:
        raise SpecError(f"--repeat {repeat}: give 1 to 100 runs")


def run_matrix(scn: Scenario, sides: list[str], repeat: int = 1, pcap_dir: str | None = None,
               progress: Callable[[str], None] = lambda m: None) -> Matrix:
    """The scenario on every side, one after another (the compile cache is shared: each BPF object is
    built once, whatever the kernel). Every side is checked before the first runs."""
    check_repeat(repeat)
    parsed = [parse_side(s) for s in sides]
    for side in parsed:
        with_side(scn, side)   # a side the scenario cannot take: said before anything boots
    cells = []
    for i, side in enumerate(parsed, 1):
        progress(f"[{side.label}] kernel {i} of {len(parsed)}")
        cells.append(run_side(scn, side, repeat, pcap_dir, progress))
    return Matrix(scn, cells, repeat)


# ---- compare -------------------------------------------------------------------------------

@dataclass
class Comparison:
    before: Cell
    after: Cell
    flipped: list[tuple[str, tuple, tuple]]   # check, (k, n, observed) before, after

    @property
    def ok(self) -> bool:
        """The fix is shown: FAIL in every run before, PASS in every run after."""
        return self.before.verdict == FAIL and self.after.verdict == PASS

    @property
    def reason(self) -> str:
        b, a = self.before.verdict, self.after.verdict
        if self.ok:
            return "FAIL before, PASS after: the scenario catches the bug and the fix holds"
        if b == PASS and a == PASS:
            return "both sides pass: the scenario does not catch the bug"
        if b == FAIL and a == FAIL:
            return "both sides fail: the fix does not hold (or the scenario fails for another reason)"
        if b == PASS and a == FAIL:
            return "PASS before, FAIL after: the change broke what the scenario checks (a regression)"
        return f"not conclusive: before {self.before.describe()}, after {self.after.describe()}"

    def to_json(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, "before": self.before.to_json(), "after": self.after.to_json(),
                "flipped": [{"check": n, "before": _row_cell(b), "after": _row_cell(a)} for n, b, a in self.flipped]}


def compare(scn: Scenario, before: str | None, after: str | None, repeat: int = 1, pcap_dir: str | None = None,
            progress: Callable[[str], None] = lambda m: None) -> Comparison:
    if not before or not after:
        raise SpecError(f"compare needs both sides: give --before and --after (missing: "
                        f"{'--before' if not before else '--after'})")
    check_repeat(repeat)
    b, a = parse_side(before, "--before"), parse_side(after, "--after")
    if b == a:
        raise SpecError(f"--before and --after are the same ({b.label}): give the side without the fix and the "
                        "side with it")
    with_side(scn, b)
    with_side(scn, a)
    progress(f"before: {b.label}; after: {a.label}")
    cb = run_side(scn, b, repeat, pcap_dir, progress)
    ca = run_side(scn, a, repeat, pcap_dir, progress)
    names = Matrix(scn, [cb, ca]).rows
    flipped = []
    for name in names:
        x, y = cb.check(name), ca.check(name)
        if x and y and (x[0] == x[1]) != (y[0] == y[1]):
            flipped.append((name, x, y))
    return Comparison(cb, ca, flipped)


# ---- bisect --------------------------------------------------------------------------------

@dataclass
class Bisection:
    versions: list[tuple[str, str]]        # (package, Debian version), from good to bad
    tried: dict[int, Cell]                 # index in versions -> its cell
    first_different: int | None = None     # index of the first version whose verdict differs from good's
    reason: str = ""

    @property
    def boots(self) -> int:
        return len(self.tried)

    @property
    def ok(self) -> bool:
        return self.first_different is not None

    def to_json(self) -> dict:
        out = {"ok": self.ok, "reason": self.reason, "boots": self.boots, "candidates": len(self.versions),
               "versions": [{"package": p, "version": v, "verdict": self.tried[i].verdict if i in self.tried else None}
                            for i, (p, v) in enumerate(self.versions)]}
        if self.first_different is not None:
            i = self.first_different
            out["first_different"] = {"package": self.versions[i][0], "version": self.versions[i][1],
                                      "verdict": self.tried[i].describe()}
            out["last_like_good"] = {"package": self.versions[i - 1][0], "version": self.versions[i - 1][1],
                                     "verdict": self.tried[i - 1].describe()}
        return out


def bisect(scn: Scenario, good: str, bad: str, repeat: int = 1, pcap_dir: str | None = None,
           progress: Callable[[str], None] = lambda m: None) -> Bisection:
    """Over apt's kernel packages from good to bad (one flavour, Debian version order), find the
    first whose verdict differs from good's: both ends are run first (they must differ), then
    about log2(n) more. A MIXED verdict (k of N with 0 < k < N) stops it: it cannot be placed."""
    if not good or not bad:
        raise SpecError("bisect needs both ends: give --good and --bad (Debian kernel package names)")
    check_repeat(repeat)
    for end, name in (("--good", good), ("--bad", bad)):
        if name == kernels.HOST or kernels.is_path(name):
            raise SpecError(f"bisect {end} {name}: bisect walks apt's kernel packages: give a package name")
    versions = kernels.kernel_range(good, bad)
    if len(versions) < 3:
        raise SpecError(f"no kernel package lies between {versions[0][0]} ({versions[0][1]}) and "
                        f"{versions[-1][0]} ({versions[-1][1]}): nothing to bisect (compare them instead)")
    with_side(scn, Side(versions[0][0]))
    n = len(versions)
    progress(f"bisect over {n} kernels ({n - 2} between the ends): at most {2 + math.ceil(math.log2(n - 1))} boots")
    result = Bisection(versions, {})

    def trial(i: int) -> str:
        package, version = versions[i]
        progress(f"[{i + 1}/{n}] {package} ({version})")
        cell = run_side(scn, Side(package), repeat, pcap_dir, progress)
        result.tried[i] = cell
        return cell.verdict

    lo_v, hi_v = trial(0), trial(n - 1)
    if MIXED in (lo_v, hi_v):
        result.reason = (f"a verdict at an end is not one of PASS or FAIL: {versions[0][0]} "
                         f"{result.tried[0].describe()}, {versions[-1][0]} {result.tried[n - 1].describe()}")
        return result
    if lo_v == hi_v:
        result.reason = (f"both ends give {lo_v}: {versions[0][0]} {result.tried[0].describe()}, "
                         f"{versions[-1][0]} {result.tried[n - 1].describe()}: the scenario does not tell them apart")
        return result
    lo, hi = 0, n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        v = trial(mid)
        if v == lo_v:
            lo = mid
        elif v == hi_v:
            hi = mid
        else:
            result.reason = (f"{versions[mid][0]} gives {result.tried[mid].describe()}, neither end's verdict "
                             f"({lo_v}, {hi_v}): cannot be placed")
            return result
    result.first_different = hi
    result.reason = (f"first version whose verdict differs: {versions[hi][0]} ({versions[hi][1]}) "
                     f"{result.tried[hi].describe()}; the one before, {versions[lo][0]} ({versions[lo][1]}), "
                     f"{result.tried[lo].describe()}")
    return result
