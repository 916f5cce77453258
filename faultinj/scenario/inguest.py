"""A lab made inside one guest (`lab.guest: {kernel: ...}`): the scenario's namespaces, bridges,
faults, traffic, captures and trace all run on that guest's kernel. An Open vSwitch bridge there
runs on the kernel's own datapath (openvswitch.ko), with a private ovsdb-server and ovs-vswitchd
started in the guest for the run.

This machine boots the guest and runs the scenario in it through the agent, as a VM host's verbs
run (scenario/hosts.py's AgentHost, its exec verb). The guest's side (scenario/guestside.py)
answers with its verdicts or its error, one JSON line, which comes back in the agent's answer; it
leaves its pcaps in the VM's work directory (the guest sees this machine's files, read-only but
for that directory), brought here into the run's pcap directory. What the guest sends is read as
JSON data and checked: a guest may run the user's own kernel, and nothing it writes is ever
unpickled here.

This module is the host's side only: it imports no runner (runner calls it for lab.guest), and
the guest's side imports the runner; neither imports the other back."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import ExitStatus, FaultinjError, StateError
from ..guest import kernels, vm
from ..kernel import caps
from .. import labs as lab
from ..labs import Topology, TopologySpec
from .. import stats
from ..verdict import Verdict
from .hosts import AgentHost

# set in the guest's run: the lab is made there, not in another guest
IN_GUEST = "FAULTINJ_LAB_IN_GUEST"


def run_in_guest(scn, pcap_dir: str | None, keep: bool, progress: Callable[[str], None]) -> Verdict:
    return runs_in_guest(scn, pcap_dir, keep, progress, 1)[0]


def runs_in_guest(scn, pcap_dir: str | None, keep: bool, progress: Callable[[str], None],
                  repeat: int) -> list[Verdict]:
    """The scenario `repeat` times in one guest (one boot): each run's verdict, in order; run i's
    pcaps go to pcap_dir/run-i when repeated."""
    if keep:
        raise StateError(f"{scn.path}: --keep: a lab made inside a guest (lab.guest) lives only while "
                         "'faultinj run' runs it; run it without --keep")
    caps.require_privileges()
    started = time.monotonic()
    spec = scn.lab.guest
    kernel = kernels.resolve(spec.kernel, progress)
    # a topology of its own that holds only the guest, recorded as soon as QEMU runs: a killed
    # run's QEMU is found and stopped by the next faultinj command (labs/__init__.py: recorded labs)
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
        ovs_prefix = [f"FAULTINJ_OVS_PREFIX={scn.lab.ovs_prefix}"] if scn.lab.ovs_prefix else []   # guestside's
        # run --confidence (FAULTINJ_CONFIDENCE): the guest's checks are judged at the same level
        conf = [f"{stats.CONFIDENCE_ENV}={os.environ[stats.CONFIDENCE_ENV]}"] if os.environ.get(stats.CONFIDENCE_ENV) else []
        argv = ["env", f"{IN_GUEST}=1", *ovs_prefix, *conf, sys.executable, "-m", "faultinj.scenario.guestside", str(copy), str(work), str(repeat)]
        ran = AgentHost("lab", agent).exec(argv, timeout=7000, cwd=os.getcwd())
        stop_tail.set()
        tail.join()
        reports = verdicts_of(ran, str(copy), scn.path)
        if len(reports) != repeat:
            raise FaultinjError(f"the guest sent {len(reports)} verdicts for {repeat} runs")
        for i, report in enumerate(reports, 1):
            # the lab prefix stays the guest's (the one its namespaces, journeys and progress show)
            as_here(report, scn.path, f"{holder.prefix}-lab",
                    time.monotonic() - started if repeat == 1 else report.seconds)   # the boot too
            for f in report.faults.values():
                f["vm"] = True   # host.kernel in there was the guest's own: its release is the kernel
            if pcap_dir:
                where = os.path.join(pcap_dir, f"run-{i}") if repeat > 1 else pcap_dir
                os.makedirs(where, exist_ok=True)
                for name, path in list(report.pcaps.items()):
                    dest = os.path.join(where, os.path.basename(path))
                    shutil.copyfile(path, dest)
                    report.pcaps[name] = dest
            else:
                report.pcaps = {}
        return reports
    finally:
        stop_tail.set()
        holder.down()   # the guest, and its work directory
        shutil.rmtree(work, ignore_errors=True)   # also when QEMU never started
        lab.forget(holder)
        progress("guest stopped")


def verdicts_of(ran, copy: str, path: str) -> list[Verdict]:
    """The guest's verdicts, one per run, from its answer (the last line its run printed): JSON,
    checked to be verdicts' shape; its error raised here as it was there."""
    said = ran.stdout.strip().splitlines()
    try:
        d = json.loads(said[-1]) if said else None
    except ValueError:
        d = None
    if isinstance(d, dict) and isinstance(d.get("error"), dict):
        raise _error_from(d["error"], copy, path)
    if not isinstance(d, dict) or "verdicts" not in d:
        why = (ran.stderr.strip() or ran.stdout.strip()).splitlines()
        raise FaultinjError(f"the run inside the guest failed (exit {ran.returncode}): "
                            f"{why[-1][:300] if why else 'no output'}")
    try:
        if not isinstance(d["verdicts"], list) or not all(isinstance(x, dict) for x in d["verdicts"]):
            raise ValueError("not a list of objects")
        return [Verdict.from_json(x) for x in d["verdicts"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise FaultinjError(f"the guest's answer is not a verdict: {exc}") from None


def as_here(report, path: str, guest: str, seconds: float):
    """The guest's report as this machine shows it: its scenario file, the whole time, the guest it
    ran in; the lab prefix stays the guest's (the one its namespaces, journeys and progress show)."""
    report.path, report.guest, report.seconds = path, guest, seconds
    return report


def _error_from(d: dict, copy: str, path: str) -> FaultinjError:
    """The guest's error, as it would have been raised here: its message (naming the scenario
    file, not the guest's copy of it), its exit status."""
    err = FaultinjError(str(d["message"]).replace(copy, path))
    try:
        err.status = ExitStatus(int(d["status"]))
    except (ValueError, TypeError, KeyError):
        err.status = ExitStatus.FAILED
    if d.get("all_lines"):
        err.all_lines = [str(ln).replace(copy, path) for ln in d["all_lines"]]
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
