"""The built-in demo: the seed article's faults replayed by the shipped scenario files
(scenarios/), each in a throw-away lab of namespaces, verified, the lab removed (also on failure)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from .errors import EnvironmentProblem
from .kernel import caps
from .verdict import Verdict
from .scenario import load
from .scenario.runner import run as run_scenario

# (file, what the step shows)
STEPS = (
    ("ttl-pong.yaml", "ttl-pong on vm1's XDP: 2500 pings, reply TTLs must spread over 1..64"),
    ("psh-ratio.yaml", "psh-ratio=10 on vm1's tc egress: 20 MB of TCP, 1 in 10 data segments must carry PSH"),
    ("drop.yaml", "drop=5% on vm1's tc egress: 20000 UDP datagrams, loss must be 5% within the CI"),
    ("traced-drop.yaml", "trace: 3 pings with vm2's replies dropped; each reply's journey must end at the "
     "fault, labelled"),
)


def scenarios_dir() -> Path:
    """scenarios/ inside the installed wheel, else the source tree's."""
    here = Path(__file__).resolve().parent
    for cand in (here / "scenarios", here.parent / "scenarios"):
        if (cand / STEPS[0][0]).is_file():
            return cand
    raise EnvironmentProblem(f"faultinj's scenario files are missing (looked in {here / 'scenarios'}): "
                             "reinstall faultinj")


def run(pcap_dir: str | None = None, seed: int | None = None, keep: bool = False,
        progress: Callable[[str], None] = lambda msg: None) -> list[Verdict]:
    """Run each step's scenario; seed: every fault's (None: as the files say)."""
    caps.require_privileges()
    verdicts = []
    for i, (name, what) in enumerate(STEPS, 1):
        scn = load(scenarios_dir() / name)
        if seed is not None:
            scn.faults = [replace(f, seed=seed) for f in scn.faults]
        progress(f"[{i}/{len(STEPS)}] {what} ({name})")
        verdicts.append(run_scenario(scn, pcap_dir=pcap_dir, keep=keep, progress=progress))
    return verdicts
