"""The guest's side of a lab made inside a guest (lab.guest, or a scenario given --kernel): run
by the agent in the guest (the exec verb) as `python -m faultinj.scenario.guestside SCENARIO WORKDIR
[RUNS]`, it runs the scenario on the guest's kernel (RUNS times: one boot for a --repeat) and
answers with its outcome, one JSON line on its stdout: {"verdicts": [...]} or {"error": {...}}.
The agent returns that output to the host (scenario/inguest.py) in its answer, as any verb's
result. Progress lines and pcaps go to the work directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import EnvironmentProblem, FaultinjError, from_foreign
from ..labs import ovs
from . import runner
from .schema import load

# ---- inside the guest ----------------------------------------------------------------------

# --ovs DIR given to the host's run: the guest's switch comes from that build
OVS_PREFIX_ENV = "FAULTINJ_OVS_PREFIX"


def _start_ovs(d: Path, prefix: str | None) -> ovs.PrivateSwitch:
    """A private ovsdb-server and ovs-vswitchd for this run (from the OVS build's prefix, or the
    machine's), on the guest kernel's datapath. OVS_RUNDIR etc. point every ovs-* command this
    process runs at them."""
    if subprocess.run(["modprobe", "openvswitch"], capture_output=True).returncode:
        raise EnvironmentProblem("the guest's kernel has no openvswitch module: an ovs bridge inside the "
                                 "guest needs it (use kind: linux, or another kernel)")
    if not prefix and not shutil.which("ovsdb-server"):
        raise EnvironmentProblem("an ovs bridge needs Open vSwitch: install openvswitch-switch")
    try:
        return ovs.PrivateSwitch(prefix, str(d), userspace=False).start()
    except FaultinjError as exc:
        raise EnvironmentProblem(f"in the guest: {exc}") from None


def outcome(path: str, work: Path, repeat: int = 1) -> dict:
    """The runs' verdicts, {"verdicts": [...]}, or the error that stopped them, {"error": {...}}
    (which the host raises again: same message, same exit code). JSON data."""
    log = open(work / "progress.log", "a", buffering=1)
    try:
        scn = load(path)
        prefix = os.environ.get(OVS_PREFIX_ENV) or scn.lab.ovs_prefix
        switch = None
        try:
            if any(kind == "ovs" for kind in scn.lab.bridges.values()):
                switch = _start_ovs(Path("/run/faultinj-ovs"), prefix)
                log.write(f"Open vSwitch started (kernel datapath): {switch.version()}"
                          f"{' from ' + prefix if prefix else ''}\n")
            reports = []
            for i in range(1, repeat + 1):
                if repeat > 1:
                    log.write(f"run {i} of {repeat}\n")
                pcaps = work / "pcaps" / (f"run-{i}" if repeat > 1 else "")
                reports.append(runner.run(scn, pcap_dir=str(pcaps), progress=lambda m: log.write(m + "\n")))
        finally:
            if switch:
                switch.stop()
    except Exception as exc:
        import traceback

        err = exc if isinstance(exc, FaultinjError) else from_foreign(exc)
        if err is None:
            last = traceback.format_exc().strip().splitlines()[-1]
            err = FaultinjError(f"unexpected error in the guest's run (a bug: please report it): {last}")
        return {"error": {"kind": type(err).__name__, "message": str(err), "status": int(err.status),
                          "all_lines": getattr(err, "all_lines", None)}}
    finally:
        log.close()
    return {"verdicts": [r.to_wire() for r in reports]}


def main(argv: list[str]) -> int:
    # the outcome is the only line on stdout: whatever else the run prints goes to stderr
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    out = outcome(argv[0], Path(argv[1]), int(argv[2]) if len(argv) > 2 else 1)
    answer.write(json.dumps(out, default=str) + "\n")
    answer.close()
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
