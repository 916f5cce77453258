"""The guest's side of a lab made inside a guest (lab.guest, or a scenario given --kernel): run
by the agent in the guest as `python -m faultinj.scenario.guestside SCENARIO WORKDIR`, it runs the
scenario on the guest's kernel and writes its verdict (report.json) or its error (failure.json)
into the work directory, which the host reads (scenario/inguest.py). JSON only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import EnvironmentProblem, FaultinjError, from_foreign
from . import runner
from .schema import load

# ---- inside the guest ----------------------------------------------------------------------

def _start_ovs(d: Path) -> None:
    """A private ovsdb-server and ovs-vswitchd for this run, on the guest kernel's datapath.
    OVS_RUNDIR etc. point every ovs-* command this process runs at them."""
    if subprocess.run(["modprobe", "openvswitch"], capture_output=True).returncode:
        raise EnvironmentProblem("the guest's kernel has no openvswitch module: an ovs bridge inside the "
                                 "guest needs it (use kind: linux, or another kernel)")
    if not shutil.which("ovsdb-server"):
        raise EnvironmentProblem("an ovs bridge needs Open vSwitch: install openvswitch-switch")
    d.mkdir(parents=True, exist_ok=True)
    os.environ.update(OVS_RUNDIR=str(d), OVS_LOGDIR=str(d), OVS_DBDIR=str(d), OVS_SYSCONFDIR=str(d))
    schema = "/usr/share/openvswitch/vswitch.ovsschema"
    for argv in (["ovsdb-tool", "create", f"{d}/conf.db", schema],
                 ["ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock", "--pidfile", "--detach",
                  "--log-file"],
                 ["ovs-vswitchd", f"unix:{d}/db.sock", "--pidfile", "--detach", "--log-file"]):
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode:
            raise EnvironmentProblem(f"starting Open vSwitch in the guest: '{argv[0]}' failed: "
                                     f"{proc.stderr.strip()[-300:]}")


def _stop_ovs() -> None:
    """Best effort (the guest ends with the run anyway): never in the way of the run's own outcome."""
    if not shutil.which("ovs-appctl"):
        return
    for daemon in ("ovs-vswitchd", "ovsdb-server"):
        try:
            subprocess.run(["ovs-appctl", "-t", daemon, "exit"], capture_output=True, timeout=30)
        except Exception:
            pass


def main(argv: list[str]) -> int:
    path, work = argv[0], Path(argv[1])
    log = open(work / "progress.log", "a", buffering=1)
    try:
        scn = load(path)
        ovs_dir = Path("/run/faultinj-ovs")
        wants_ovs = any(kind == "ovs" for kind in scn.lab.bridges.values())
        try:
            if wants_ovs:
                _start_ovs(ovs_dir)
                log.write("Open vSwitch started (kernel datapath)\n")
            report = runner.run(scn, pcap_dir=str(work / "pcaps"), progress=lambda m: log.write(m + "\n"))
        finally:
            if wants_ovs:
                _stop_ovs()
    except Exception as exc:   # the host raises it again: same message, same exit code
        import traceback

        err = exc if isinstance(exc, FaultinjError) else from_foreign(exc)
        if err is None:
            last = traceback.format_exc().strip().splitlines()[-1]
            err = FaultinjError(f"unexpected error in the guest's run (a bug: please report it): {last}")
        (work / "failure.json").write_text(json.dumps({
            "kind": type(err).__name__, "message": str(err), "status": int(err.status),
            "all_lines": getattr(err, "all_lines", None)}))
        return 1
    (work / "report.json").write_text(json.dumps(report.to_wire(), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
