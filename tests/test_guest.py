"""The suite on a second kernel: a Debian guest (6.1 by default: act_bpf, cls_matchall, netem, fq
as modules, no tcx) boots once under QEMU and runs the program tests, doctor, and
apply/status/set/clear on both tc modes and XDP, with this same tree. Each guest test's outcome
is a test here, named after it, so both kernels' results are in the pytest output.

FAULTINJ_TEST_KERNEL picks the guest kernel (a Debian package name, or linux-image-amd64 for the
one Debian ships now, or a vmlinuz path)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = os.environ.get("FAULTINJ_TEST_KERNEL", "linux-image-amd64")
# what runs in the guest: under software emulation Python is 10-20x slower, so the slowest
# program tests (truncations at every offset, the fuzzers) stay on this machine's kernel
GUEST_SELECTION = [
    "tests/test_programs.py", "-k", "psh_ratio or ttl_pong or drop or parse or csum or lifecycle or matchall or second_xdp or doctor",
    "tests/test_e2e.py::test_apply_status_set_clear_lifecycle",
    "tests/test_e2e.py::test_matchall_mode_where_the_kernel_has_it_else_a_clear_refusal",
    "tests/test_e2e.py::test_drop_rate",
    "tests/test_e2e.py::test_second_xdp_fault_refused_unless_replace",
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
    guest = vm.Guest(vm.VMSpec("fisuite", kernel, memory="2G", cpus=2), work).start()
    try:
        agent = guest.wait_ready()
        junit = work / "guest.xml"
        out = agent.call("exec", timeout=3600, cwd=str(ROOT), argv=[
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
            "--rootdir", str(ROOT), *GUEST_SELECTION])
        results = _parse_junit(junit)
        results["_release"] = agent.info["release"]
        results["_summary"] = (out["stdout"].strip().splitlines() or [""])[-1]
        return results
    finally:
        guest.stop()


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


def test_seed_vm_lab_scenario_passes_and_fails_without_the_fault(tmp_path):
    """scenarios/seed-vms-ovs.yaml: two guests on an OVS bridge, psh-ratio=10 by matchall + act_bpf
    inside vm1. Then the same lab with a fault that (almost) never acts: its verdicts must fail."""
    import yaml

    from faultinj.scenario import runner, schema

    path = ROOT / "scenarios" / "seed-vms-ovs.yaml"
    report = runner.run(schema.load(path))
    assert report.ok, [c.to_json() for c in report.checks if not c.ok] + report.errors
    psh = report.faults["psh"]
    assert psh["vm"] and psh["attach_mode"] == "matchall" and psh["kernel"] != os.uname().release
    assert report.counters["psh"]["acted"] > 0

    doc = yaml.safe_load(path.read_text())
    doc["faults"][0]["spec"] = "psh-ratio=1000000000"
    broken = tmp_path / "seed-vms-ovs-nofault.yaml"
    broken.write_text(yaml.safe_dump(doc))
    report = runner.run(schema.load(broken))
    failed = {c.name.split(":")[0] for c in report.checks if not c.ok}
    assert not report.ok and any("ratio" in name for name in failed), [c.to_json() for c in report.checks]
