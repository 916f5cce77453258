"""The suite on a second kernel: a Debian guest (6.1 by default: act_bpf, cls_matchall, netem, fq
as modules, no tcx) boots once under QEMU and runs the program tests, doctor, and
apply/status/set/clear on both tc modes and XDP, with this same tree. Each guest test's outcome
is a test here, named after it, so both kernels' results are in the pytest output.

FAULTINJ_TEST_KERNEL picks the guest kernel (a Debian package name, or linux-image-amd64 for the
one Debian ships now, or a vmlinuz path)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = os.environ.get("FAULTINJ_TEST_KERNEL", "linux-image-amd64")
# what runs in the guest: under software emulation Python is 20-40x slower, so a choice of the
# program tests (each fault's core case; the exhaustive ones and the fuzzers stay on this machine's
# kernel), the time faults (their traffic tests need fq: guests have it), and the lifecycle on cls_bpf,
# matchall and XDP
GUEST_SELECTION = [
    "tests/test_programs.py::test_psh_ratio_1_sets_psh_with_valid_checksum",
    "tests/test_programs.py::test_drop_probability_and_counters",
    "tests/test_programs.py::test_ttl_pong_ipv6_hop_limit",
    "tests/test_programs.py::test_past_deadline_or_switched_off_passes_everything_and_counts_nothing",
    "tests/test_time_faults.py",
    "tests/test_e2e.py::test_apply_status_set_clear_lifecycle",
    "tests/test_e2e.py::test_matchall_mode_where_the_kernel_has_it_else_a_clear_refusal",
    "tests/test_e2e.py::test_second_xdp_fault_refused_unless_replace",
    # duplicate's copy tagged in tc_index, its id drawn with a cmpxchg on .bss: 6.1 as well (~75 s here)
    "tests/test_wire_truth.py::test_duplicate_copy_passes_only_the_faults_after_it_and_replay_agrees[egress]",
    "tests/test_reliability.py::test_doctor_reports_a_working_default_feature_set",
    # fentry, which this machine's kernel refuses: the function path runs for real only here
    "tests/test_trace.py::test_functions_taking_an_skb_are_found_from_btf",
    "tests/test_trace.py::test_functions_path_of_a_ping_across_two_namespaces",
]


def _guest_test_ids() -> list[str]:
    """The guest's tests, collected here (same tree, same ids)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *GUEST_SELECTION], cwd=ROOT, capture_output=True, text=True)
    return [ln.strip() for ln in proc.stdout.splitlines() if "::" in ln]


@pytest.fixture(scope="module")
def guest_results(tmp_path_factory):
    from faultinj.guest import kernels, vm

    kernel = kernels.resolve(KERNEL)
    work = vm.workdir(f"t{os.getpid()}", "suite")
    # one vCPU: with two, veth delivers through each CPU's backlog and the kernel itself may reorder
    # a stream, which the reorder test would take for the fault's doing
    guest = vm.Guest(vm.VMSpec("fisuite", kernel, memory="2G", cpus=1), work).start()
    try:
        agent = guest.wait_ready()
        junit = work / "guest.xml"
        log = work / "pytest.log"   # follow it while the guest works: tail -f
        argv = [sys.executable, "-u", "-m", "pytest", "-v", "-p", "no:cacheprovider", f"--junitxml={junit}",
                "--durations=15", "--rootdir", str(ROOT), *GUEST_SELECTION]
        agent.call("exec", timeout=3600, cwd=str(ROOT), argv=[
            "sh", "-c", " ".join(shlex.quote(a) for a in argv) + f" > {shlex.quote(str(log))} 2>&1; echo $?"])
        print(log.read_text()[-3000:])
        results = _parse_junit(junit)
        results["_release"] = agent.info["release"]
        results["_summary"] = (log.read_text().strip().splitlines() or [""])[-1]
        return results
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
            ("skipped", "") if skipped else ("passed", "")
    return out


@pytest.mark.parametrize("test_id", _guest_test_ids())
def test_on_the_guest_kernel(guest_results, test_id):
    release = guest_results["_release"]
    assert release != os.uname().release, "the guest must run another kernel than this machine's"
    assert test_id in guest_results, f"{test_id} did not run in the guest ({guest_results['_summary']})"
    outcome, message = guest_results[test_id]
    assert outcome == "passed", f"on {release}: {outcome}: {message}"


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


def _qemu_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _no_new_qemu(before: set[int], wait: float = 15.0) -> bool:
    end = time.monotonic() + wait
    while _qemu_pids() - before and time.monotonic() < end:
        time.sleep(0.2)
    return not (_qemu_pids() - before)


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

    name = kernels.resolve(KERNEL).name
    r = _cli("doctor", "--kernel", name, env={"PATH": str(tmp_path)})
    assert r.returncode == 3 and "apt-get install qemu-system-x86" in _error_line(r)


def test_a_guest_that_does_not_come_up_in_time_is_stopped():
    before = _qemu_pids()
    r = _cli("doctor", "--kernel", KERNEL, env={"FAULTINJ_VM_BOOT_TIMEOUT": "3"})
    assert r.returncode == 3 and "did not come up" in _error_line(r)
    assert _no_new_qemu(before)


def test_commands_that_cannot_take_a_vm_lab_say_so(tmp_path):
    r = _cli("lab", "up", str(ROOT / "scenarios" / "seed-vms-ovs.yaml"))
    assert r.returncode == 5 and "VM hosts" in _error_line(r)


def test_a_killed_run_leaves_nothing_that_reap_does_not_remove():
    """SIGKILL `faultinj run` once its VMs are up: QEMU, taps and the OVS bridge stay until the next
    faultinj command, which removes them (the lab record names the QEMU process groups and taps)."""
    import signal

    before = _qemu_pids()
    proc = subprocess.Popen([sys.executable, "-m", "faultinj.cli", "run", str(ROOT / "scenarios" / "seed-vms-ovs.yaml")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    prefix = None
    try:
        for line in proc.stderr:
            if "prefix " in line and prefix is None:
                prefix = line.rsplit("prefix ", 1)[1].strip()
            if "VM vm2: up" in line:
                break
        assert prefix, "the run never said its prefix"
        assert _qemu_pids() - before, "no QEMU running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _qemu_pids() - before, "QEMU went with the run: nothing left to reap (the check could not fail)"
    r = _cli("reap")
    assert r.returncode == 0, r.stderr
    assert _no_new_qemu(before)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert prefix not in links
    bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout
    assert prefix not in bridges
    import glob
    import tempfile

    assert not glob.glob(f"{tempfile.gettempdir()}/faultinj-vm-{prefix}-*")   # the VMs' work directories
