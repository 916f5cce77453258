"""The suite on other kernels: each guest in tests/guests.py (Debian 6.1, 6.12) boots once under
QEMU and runs there, with this same tree, its selection of this suite's tests and the lab.guest
scenarios listed for it. Each guest test's outcome is a test here, named after the kernel
(test_on_the_guest_kernel[6.1-tests/test_programs.py::...]), so every kernel's results are in the
pytest output; the guest's own junit says what ran, no collection is done here.

Everything that boots a guest is marked `guest` (tests/README.md): `-m 'not guest'` is the quick
host run, and under xdist the guest tests run in one worker beside the host's."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from guests import KERNELS, SCENARIOS, SELECTIONS

ROOT = Path(__file__).resolve().parent.parent
KERNEL = KERNELS["6.1"]    # the refusal tests below boot (or fail to boot) this one
IN_GUEST = "FAULTINJ_LAB_IN_GUEST"
SCENARIO_TEST = "tests/test_guest.py::test_lab_guest_scenario_in_this_boot"


def _scenario_id(path: str) -> str:
    return f"{SCENARIO_TEST}[{os.path.basename(path)}]"


def _entries(kernel: str) -> list[str]:
    return [*SELECTIONS[kernel], *(_scenario_id(p) for p in SCENARIOS[kernel])]


class _Boots:
    """Each kernel's one boot, made when its first test asks for it."""

    def __init__(self):
        self.done: dict[str, dict] = {}

    def get(self, name: str) -> dict:
        if name not in self.done:
            self.done[name] = _boot_and_run(name)
        return self.done[name]


@pytest.fixture(scope="module")
def guest_boots():
    return _Boots()


def _boot_and_run(name: str) -> dict:
    from faultinj.guest import kernels, vm

    started = time.monotonic()
    kernel = kernels.resolve(KERNELS[name])
    work = vm.workdir(f"t{os.getpid()}", f"suite{name.replace('.', '')}")
    # one vCPU: with two, veth delivers through each CPU's backlog and the kernel itself may reorder
    # a stream, which the reorder test would take for the fault's doing
    guest = vm.Guest(vm.VMSpec(f"fisuite{name.replace('.', '')}", kernel, memory="2G", cpus=1), work).start()
    try:
        agent = guest.wait_ready()
        booted = time.monotonic()
        junit = work / "guest.xml"
        log = work / "pytest.log"   # follow it while the guest works: tail -f
        argv = ["env", f"{IN_GUEST}=1", sys.executable, "-u", "-m", "pytest", "-v", "-p", "no:cacheprovider",
                "-p", "no:xdist", f"--junitxml={junit}", "--durations=15", "--rootdir", str(ROOT),
                *_entries(name)]
        agent.call("exec", timeout=3600, cwd=str(ROOT), argv=[
            "sh", "-c", " ".join(shlex.quote(a) for a in argv) + f" > {shlex.quote(str(log))} 2>&1; echo $?"])
        text = log.read_text() if log.exists() else ""
        print(text[-3000:])
        results = _parse_junit(junit) if junit.exists() else {}
        return {"results": results, "release": agent.info["release"],
                "summary": (text.strip().splitlines() or ["no output"])[-1],
                "boot_s": round(booted - started, 1), "run_s": round(time.monotonic() - booted, 1)}
    finally:
        guest.stop()
        shutil.rmtree(work, ignore_errors=True)


def _parse_junit(path: Path) -> dict:
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        file = case.get("classname", "").replace(".", "/") + ".py"
        node = f"{file}::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped") is not None
        out[node] = ("failed", (bad.get("message") or "")[:2000]) if bad is not None else \
            ("skipped", (case.find("skipped").get("message") or "")[:300]) if skipped else \
            ("passed", float(case.get("time") or 0))
    return out


def _outcomes(results: dict, entry: str) -> dict:
    """The guest's results an entry covers: a test id and its parametrized cases, or a file's tests."""
    if "::" in entry:
        return {k: v for k, v in results.items() if k == entry or k.startswith(entry + "[")}
    return {k: v for k, v in results.items() if k.split("::", 1)[0] == entry}


@pytest.mark.guest
@pytest.mark.slow
@pytest.mark.parametrize("kernel,entry", [(k, e) for k in KERNELS for e in _entries(k)],
                         ids=[f"{k}-{e}" for k in KERNELS for e in _entries(k)])
def test_on_the_guest_kernel(guest_boots, kernel, entry, record_property):
    run = guest_boots.get(kernel)
    release = run["release"]
    record_property("guest_boot", json.dumps({k: run[k] for k in ("release", "boot_s", "run_s", "summary")}
                                             | {"kernel": kernel}))
    assert release != os.uname().release, "the guest must run another kernel than this machine's"
    got = _outcomes(run["results"], entry)
    assert got, f"{entry} did not run in the {release} guest ({run['summary']})"
    bad = {k: v for k, v in got.items() if v[0] != "passed"}
    assert not bad, f"on {release}: " + "; ".join(f"{k}: {o}: {m}" for k, (o, m) in bad.items())
    record_property("guest_seconds", round(sum(v[1] for v in got.values()), 1))


if os.environ.get(IN_GUEST):
    # inside a guest's boot only (test_on_the_guest_kernel names these): a lab.guest scenario made
    # directly on this kernel, as `faultinj run` does it inside the guest it boots
    @pytest.mark.parametrize("path", sorted({p for ps in SCENARIOS.values() for p in ps}),
                             ids=lambda p: os.path.basename(p))
    def test_lab_guest_scenario_in_this_boot(path, tmp_path):
        from faultinj.scenario import guestside, inguest, load
        from faultinj.scenario.hosts import Completed
        from test_scenarios import check_shipped_report

        copy = tmp_path / "scenario.yaml"
        shutil.copyfile(ROOT / path, copy)
        out = guestside.outcome(str(copy), tmp_path)
        assert "verdicts" in out, out
        # JSON, as the host reads it
        [report] = inguest.verdicts_of(Completed([], 0, json.dumps(out), ""), str(copy), path)
        check_shipped_report(load(ROOT / path), report, in_guest=True)


@pytest.mark.guest
@pytest.mark.slow
@pytest.mark.xdist_group("host")   # this machine's Open vSwitch: see conftest
def test_seed_vm_lab_fails_without_the_fault(tmp_path):
    """scenarios/seed-vms-ovs.yaml passes in tests/test_scenarios.py (every shipped scenario runs
    there); here the same lab with a fault that (almost) never acts: its verdicts must fail."""
    import yaml

    from faultinj.scenario import runner, schema

    doc = yaml.safe_load((ROOT / "scenarios" / "seed-vms-ovs.yaml").read_text())
    doc["faults"][0]["spec"] = "psh-ratio=1000000000"
    broken = tmp_path / "seed-vms-ovs-nofault.yaml"
    broken.write_text(yaml.safe_dump(doc))
    report = runner.run(schema.load(broken))
    failed = {c.name.split(":")[0] for c in report.checks if not c.ok}
    assert not report.ok and "fault_ratio" in failed, [c.to_json() for c in report.checks]
    assert report.faults["psh"]["attach_mode"] == "matchall"


# ---- bad input and failure: one line, the documented exit code, nothing left -------------------

def _cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "faultinj.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def short_tmp():
    """A TMPDIR of this test's own, short: a VM's agent socket lives in it (108 bytes at most)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="fiq")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _qemu_pids(mark: str) -> set[int]:
    """QEMU processes whose command line holds `mark` (their work directory's): this test's own,
    never the other half's or other people's guests."""
    out = subprocess.run(["pgrep", "-f", f"qemu-system.*{mark}"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _no_qemu_left(mark: str, wait: float = 15.0) -> bool:
    end = time.monotonic() + wait
    while _qemu_pids(mark) and time.monotonic() < end:
        time.sleep(0.2)
    return not _qemu_pids(mark)


def _error_line(r) -> str:
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("faultinj: error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_unknown_kernel_package_is_bad_input():
    r = _cli("doctor", "--kernel", "linux-image-9.9.9-99-amd64")
    assert r.returncode == 2 and "cannot fetch kernel package" in _error_line(r)
    r = _cli("doctor", "--kernel", "not-a-kernel")
    assert r.returncode == 2 and "neither a vmlinuz path nor a Debian kernel package" in _error_line(r)


def test_missing_qemu_is_an_environment_problem(tmp_path):
    from faultinj.guest import kernels

    name = str(kernels.resolve(KERNEL).vmlinuz)   # a path: no apt-cache needed on the empty PATH
    r = _cli("doctor", "--kernel", name, env={"PATH": str(tmp_path)})
    assert r.returncode == 3 and "apt-get install qemu-system-x86" in _error_line(r)


@pytest.mark.guest
def test_a_guest_that_does_not_come_up_in_time_is_stopped(short_tmp):
    # its VM's work directory, in QEMU's command line, under this test's own TMPDIR
    r = _cli("doctor", "--kernel", KERNEL, env={"FAULTINJ_VM_BOOT_TIMEOUT": "3", "TMPDIR": short_tmp})
    assert r.returncode == 3 and "did not come up" in _error_line(r)
    assert _no_qemu_left(short_tmp)


def test_commands_that_cannot_take_a_vm_lab_say_so(tmp_path):
    r = _cli("lab", "up", str(ROOT / "scenarios" / "seed-vms-ovs.yaml"))
    assert r.returncode == 5 and "VM hosts" in _error_line(r)


@pytest.mark.guest
@pytest.mark.slow
@pytest.mark.xdist_group("host")   # this machine's Open vSwitch: see conftest
def test_a_killed_run_leaves_nothing_that_reap_does_not_remove(short_tmp):
    """SIGKILL `faultinj run` once its VMs are up: QEMU, taps and the OVS bridge stay until the next
    faultinj command, which removes them (the lab record names the QEMU process groups and taps)."""
    import signal

    mark = short_tmp   # TMPDIR: the VMs' work directories, in their QEMU command lines
    env = {**os.environ, "TMPDIR": mark}
    proc = subprocess.Popen([sys.executable, "-m", "faultinj.cli", "run", str(ROOT / "scenarios" / "seed-vms-ovs.yaml")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    prefix = None
    try:
        for line in proc.stderr:
            if "prefix " in line and prefix is None:
                prefix = line.rsplit("prefix ", 1)[1].strip()
            if "VM vm2: up" in line:
                break
        assert prefix, "the run never said its prefix"
        assert _qemu_pids(mark), "no QEMU running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _qemu_pids(mark), "QEMU went with the run: nothing left to reap (the check could not fail)"
    r = _cli("reap", env={"TMPDIR": mark})
    assert r.returncode == 0, r.stderr
    assert _no_qemu_left(mark)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert prefix not in links
    bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout
    assert prefix not in bridges
    import glob

    assert not glob.glob(f"{mark}/faultinj-vm-{prefix}-*")   # the VMs' work directories
