"""What `faultinj run FILE...` does with its files and flags, as a library call: which flags go
together, every file read before anything runs, what is missing (matplotlib for --report) said
before a lab is built; then the scenarios (or a matrix of them across kernels and OVS builds, or a
Chaos Mesh NetworkChaos manifest applied to containers), and the JUnit and HTML reports written.
The CLI parses the flags, calls run_files and prints what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import SpecError
from ..stats import set_default_confidence
from ..verdict import Verdict
from . import chaosmesh, html, matrix, runner
from . import junit as junit_xml
from .matrix import Matrix
from .schema import load

NO_FILES = ("give one or more scenario files (faultinj run FILE.yaml; 'faultinj run --schema' "
            "prints what they may hold)")


@dataclass
class FilesRun:
    """What `run` did: a manifest's faults (applied), or one verdict per scenario (reports), or one
    matrix per scenario (matrices, with --kernel/--ovs/--repeat); report: the HTML page written."""
    applied: chaosmesh.Applied | None = None
    reports: list[Verdict] = field(default_factory=list)
    matrices: list[Matrix] = field(default_factory=list)
    repeat: int = 1
    report: str | None = None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports) and all(m.ok for m in self.matrices)

    def to_json(self):
        if self.applied is not None:
            return self.applied.to_json()
        if self.matrices:
            return [m.to_json() for m in self.matrices]
        return [r.to_json() for r in self.reports]


def sides(kernels: list[str], ovs_dirs: list[str]) -> list[str]:
    """The matrix's columns: every kernel with every OVS build (KERNEL,ovs=DIR), or either alone."""
    if kernels and ovs_dirs:
        return [f"{k},ovs={o}" for k in kernels for o in ovs_dirs]
    return kernels or [f"ovs={o}" for o in ovs_dirs] or [""]


def check_manifest_flags(files: list[str], *, junit: str | None, report: str | None, keep: bool,
                         kernels: list[str], ovs: list[str], repeat: int, confidence: float | None) -> None:
    if len(files) > 1:
        raise SpecError("give one NetworkChaos manifest at a time (faultinj run chaos.yaml)")
    if junit or report or keep or kernels or ovs or repeat != 1 or confidence is not None:
        raise SpecError("--junit, --report, --keep, --kernel, --ovs, --repeat and --confidence go with scenario "
                        "files: a NetworkChaos manifest applies its faults and returns, judging nothing (see them "
                        "with 'faultinj status')")


def run_files(files: list[str] | None, *, pcap_dir: str | None = "faultinj-captures", junit: str | None = None,
              report: str | None = None, keep: bool = False, kernels: list[str] | None = None,
              ovs: list[str] | None = None, repeat: int = 1, confidence: float | None = None,
              progress: Callable[[str, str], None] = lambda name, message: None) -> FilesRun:
    """Run scenario files (or apply one NetworkChaos manifest); progress(scenario name, message)."""
    files, kernels, ovs = list(files or []), list(kernels or []), list(ovs or [])
    if not files:
        raise SpecError(NO_FILES)
    if any(chaosmesh.is_network_chaos(f) for f in files):
        check_manifest_flags(files, junit=junit, report=report, keep=keep, kernels=kernels, ovs=ovs, repeat=repeat,
                             confidence=confidence)
        return FilesRun(applied=chaosmesh.run(chaosmesh.load(files[0])))

    if confidence is not None:
        set_default_confidence(confidence)
    scenarios = [load(f) for f in files]  # every file validated before anything runs
    if report:
        html.require_matplotlib()   # missing matplotlib: say so before the labs run, not after
    if kernels or ovs or repeat != 1:
        if keep:
            raise SpecError("--keep keeps one lab: it takes no --kernel, --ovs or --repeat")
        columns = sides(kernels, ovs)
        done = FilesRun(repeat=repeat, matrices=[
            matrix.run_matrix(scn, columns, repeat=repeat, pcap_dir=pcap_dir,
                              progress=lambda m, n=scn.name: progress(n, m))
            for scn in scenarios])
        verdicts = [v for m in done.matrices for v in m.verdicts()]
    else:
        done = FilesRun(reports=[runner.run(scn, pcap_dir=pcap_dir, keep=keep,
                                            progress=lambda m, n=scn.name: progress(n, m))
                                 for scn in scenarios])
        verdicts = done.reports
    if junit:
        junit_xml.write(verdicts, junit)
    if report:
        done.report = html.write(verdicts, report, matrices=done.matrices or ())
    return done
