"""A lab made inside one guest (`lab.guest: {kernel: ...}`): the scenario's namespaces, bridges,
faults, traffic, captures and trace all run on that guest's kernel. An Open vSwitch bridge there
runs on the kernel's own datapath (openvswitch.ko), with a private ovsdb-server and ovs-vswitchd
started in the guest for the run.

This machine boots the guest and runs the scenario in it through the agent (the guest sees this
machine's files, read-only but for the VM's work directory). The guest writes its verdict and
pcaps there; they are brought back here, the pcaps into the run's pcap directory."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import EnvironmentProblem, ExitStatus, FaultinjError, StateError, from_foreign

# set in the guest's run: the lab is made there, not in another guest
IN_GUEST = "FAULTINJ_LAB_IN_GUEST"


def run_in_guest(scn, pcap_dir: str | None, keep: bool, progress: Callable[[str], None]):
    from ..guest import kernels, vm
    from ..inject import caps, lab
    from ..inject.lab import Topology, TopologySpec

    if keep:
        raise StateError(f"{scn.path}: --keep: a lab made inside a guest (lab.guest) lives only while "
                         "'faultinj run' runs it; run it without --keep")
    caps.require_privileges()
    started = time.monotonic()
    spec = scn.lab.guest
    kernel = kernels.resolve(spec.kernel, progress)
    # a topology of its own that holds only the guest, recorded as soon as QEMU runs: a killed
    # run's QEMU is found and stopped by the next faultinj command (inject/lab.py: recorded labs)
    holder = Topology(TopologySpec(hosts=[], links=[]))
    work = vm.workdir(holder.prefix, "lab")
    holder.record = lambda: lab.remember(scn.name, holder, kept=False, extra={"file": os.path.abspath(scn.path)})
    stop_tail = threading.Event()
    try:
        guest = vm.Guest(vm.VMSpec(f"{holder.prefix}-lab", kernel, spec.memory, spec.cpus), work)
        holder.guests["lab"] = guest
        guest.start()
        holder.record()
        progress(f"lab inside a guest: booting {kernel.release} ({vm.accel()[1]})")
        agent = guest.wait_ready()
        progress(f"guest up ({agent.info['release']}): the lab is made in it")
        log = work / "progress.log"
        tail = threading.Thread(target=_follow, args=(log, progress, stop_tail), daemon=True)
        tail.start()
        # the scenario as read here (the guest sees this machine's files, but a copy in the work
        # directory is read whatever the guest mounts), run from this directory (relative paths of
        # command: traffic mean what they mean here; the guest cannot write there)
        copy = work / "scenario.yaml"
        shutil.copyfile(scn.path, copy)
        argv = ["env", f"{IN_GUEST}=1", sys.executable, "-m", "faultinj.scenario.inguest", str(copy), str(work)]
        out = agent.call("exec", _timeout=7200, timeout=7000, cwd=os.getcwd(), argv=argv)
        stop_tail.set()
        tail.join()
        failure = work / "failure.json"
        if failure.exists():
            raise _error_from(json.loads(failure.read_text()), str(copy), scn.path)
        if out["returncode"] != 0 or not (work / "report.pickle").exists():
            said = (out["stderr"].strip() or out["stdout"].strip()).splitlines()
            raise FaultinjError(f"the run inside the guest failed (exit {out['returncode']}): "
                                f"{said[-1] if said else 'no output'}")
        report = pickle.loads((work / "report.pickle").read_bytes())
        as_here(report, scn.path, f"{holder.prefix}-lab", time.monotonic() - started)   # the boot too
        for f in report.faults.values():
            f["vm"] = True   # host.kernel in there was the guest's own: its release is the kernel
        if pcap_dir:
            os.makedirs(pcap_dir, exist_ok=True)
            for name, path in list(report.pcaps.items()):
                dest = os.path.join(pcap_dir, os.path.basename(path))
                shutil.copyfile(path, dest)
                report.pcaps[name] = dest
        else:
            report.pcaps = {}
        return report
    finally:
        stop_tail.set()
        holder.down()   # the guest, and its work directory
        shutil.rmtree(work, ignore_errors=True)   # also when QEMU never started
        lab.forget(holder)
        progress("guest stopped")


def as_here(report, path: str, guest: str, seconds: float):
    """The guest's report as this machine shows it: its scenario file, the whole time, the guest it
    ran in; the lab prefix stays the guest's (the one its namespaces, journeys and progress show)."""
    report.path, report.guest, report.seconds = path, guest, seconds
    return report


def _error_from(d: dict, copy: str, path: str) -> FaultinjError:
    """The guest's error, as it would have been raised here: its message (naming the scenario
    file, not the guest's copy of it), its exit status."""
    err = FaultinjError(d["message"].replace(copy, path))
    err.status = ExitStatus(d["status"])
    if d.get("all_lines"):
        err.all_lines = [ln.replace(copy, path) for ln in d["all_lines"]]
    return err


def _follow(path: Path, progress, stop: threading.Event) -> None:
    """The guest's progress lines, as they come."""
    pos = 0
    while True:
        done = stop.wait(0.5)
        try:
            with open(path) as f:
                f.seek(pos)
                text = f.read()
                # whole lines only
                text = text[: text.rfind("\n") + 1]
                pos += len(text.encode())
        except FileNotFoundError:
            text = ""
        for line in text.splitlines():
            progress(f"[guest] {line}")
        if done:
            return


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
    from .runner import run
    from .schema import load

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
            report = run(scn, pcap_dir=str(work / "pcaps"), progress=lambda m: log.write(m + "\n"))
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
    (work / "report.pickle").write_bytes(pickle.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
