"""Records of labs, and how a killed run's lab is removed.

A run records its lab (namespaces, OVS bridges, taps, its guests' QEMU process groups and work
directories) before building it; if the run is killed, the next faultinj command finds the record
with a dead owner and removes what it lists. Removing needs nothing but the record: no import of the
lab or guest code, so every command can reap (faultinj.removal) without loading them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ..errors import note
from . import state


def _run(*cmd: str) -> None:
    subprocess.run(cmd, capture_output=True, text=True)


def kill_group(pid: int, wait: float = 10.0) -> None:
    """SIGKILL a VM's process group (vng, virtme-run, QEMU) and wait until it is empty."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def workdir(prefix: str, name: str) -> Path:
    """A guest's work directory (shared read-write with it)."""
    import tempfile   # here: tempfile loads random, which the commands reaping through here need not

    d = Path(tempfile.gettempdir()) / f"faultinj-vm-{prefix}-{name}"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


def remove_workdirs(prefix: str) -> None:
    import tempfile

    for d in Path(tempfile.gettempdir()).glob(f"faultinj-vm-{prefix}-*"):
        shutil.rmtree(d, ignore_errors=True)


def write(data: dict) -> dict:
    """Record a lab (data: at least name, prefix, owner_pid) atomically."""
    path = _labs_dir() / f"{data['prefix']}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return data


def _labs_dir():
    state.ensure_dirs()
    d = state.run_dir() / "labs"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def forget(topo_or_prefix) -> None:
    prefix = getattr(topo_or_prefix, "prefix", topo_or_prefix)
    try:
        os.unlink(_labs_dir() / f"{prefix}.json")
    except FileNotFoundError:
        pass


def recorded_labs() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(_labs_dir().glob("*.json"))]


def remove_recorded(data: dict) -> None:
    for pid in data.get("vm_pids", []):   # each QEMU leads its own process group
        kill_group(pid)
    if data.get("ovs_private"):   # an OVS build's own daemons: their bridges end with them
        kill_private(data["ovs_private"]["pids"], data["ovs_private"]["dir"], data["ovs_private"].get("netns"))
    if data.get("vm_pids"):
        remove_workdirs(data["prefix"])
    for tap in data.get("taps", []):
        _run("ip", "link", "del", tap)
    for br in data.get("ovs_bridges", []):
        _run("ovs-vsctl", "--if-exists", "del-br", br)
    for ns in reversed(data.get("namespaces", [])):
        _run("ip", "netns", "del", ns)
    _clear_outside(data)
    forget(data["prefix"])


def _clear_outside(data: dict) -> None:
    """The faults a dead run applied outside its lab (in containers) did not go with its namespaces:
    mark them as being cleared, which the reaper that called us then finishes."""
    ids = set(data.get("faults_outside", []))
    if not ids:
        return
    for rec in state.records():
        if rec.id in ids and rec.pending is None:
            rec.pending, rec.pid = "clear", data.get("owner_pid")
            state.save(rec)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans() -> list[str]:
    """Remove labs whose `faultinj run` died; returns their namespaces."""
    gone = []
    for data in recorded_labs():
        if not data.get("kept") and not _alive(data.get("owner_pid")):
            remove_recorded(data)
            note(
                "removed lab %s that a killed 'faultinj run' (pid %s) left: namespaces %s", data.get("name"),
                data.get("owner_pid"), ", ".join(data.get("namespaces", [])) or "none")
            gone.extend(data.get("namespaces", []))
    return gone


def daemon_of(pid: int, rundir: str) -> bool:
    """Is pid still one of this switch's daemons (its command line names the run directory)?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return rundir.encode() in f.read()
    except OSError:
        return False


def kill_private(pids: list[int], rundir: str, netns: str | None = None) -> None:
    """A killed run's private switch (its lab record names it): its daemons, its namespace, its directory."""
    for pid in pids:
        if daemon_of(pid, rundir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if netns:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    shutil.rmtree(rundir, ignore_errors=True)
