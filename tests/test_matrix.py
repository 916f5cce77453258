"""One scenario across kernels: kernel names (every package apt lists, metapackages, the user's own
build, 'host'), the version ranges bisect walks, and the matrix / compare / bisect commands.

Cost: the name and range tests run in well under a second each (apt-cache's lists, no download, no boot)."""

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import cli_runner

from faultinj.cli import app
from faultinj.errors import SpecError
from faultinj.guest import kernels

runner = cli_runner()
needs_apt = pytest.mark.skipif(not shutil.which("apt-cache") or not kernels.debian_version("linux-image-6.1.0-57-amd64"),
                               reason="apt's lists do not name Debian 12's kernels here (run apt-get update)")


def _one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faultinj: error:"), r.stderr
    return lines[0]


@pytest.mark.parametrize("a,b", [
    ("6.1.170-3", "6.1.172-1"), ("6.1.192-1", "6.1.192-2"), ("6.1.192-3", "6.12.100-1~deb12u1"),
    ("6.12.115-2~deb12u1", "6.12.115-2"), ("1:1.0", "2.0"), ("1.0~rc1", "1.0"), ("1.0", "1.0+b1"),
    ("1.0a", "1.0"), ("2.0-1", "2.0-1"), ("6.12.9-1", "6.12.10-1"),
])
def test_debian_version_order_is_dpkgs(a, b):
    ours = kernels.compare_versions(a, b)
    assert ours == -kernels.compare_versions(b, a)
    if shutil.which("dpkg"):
        for op, want in (("lt", ours < 0), ("eq", ours == 0), ("gt", ours > 0)):
            assert (subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0) == want, (a, op, b)


@needs_apt
def test_every_kernel_package_form_apt_lists_resolves():
    assert kernels.package_name("linux-image-6.1.0-57-amd64") == "linux-image-6.1.0-57-amd64"
    assert kernels.package_name("linux-image-6.12.118+deb12-amd64") == "linux-image-6.12.118+deb12-amd64"
    # metapackages: the versioned package apt says they depend on today
    for meta in ("linux-image-amd64", "linux-image-6.12-amd64", "linux-image-cloud-amd64"):
        want = subprocess.run(["apt-cache", "depends", meta], capture_output=True, text=True).stdout
        got = kernels.package_name(meta)
        assert got.startswith("linux-image-") and got != meta and f"Depends: {got}" in want
    assert "cloud-amd64" in kernels.package_name("linux-image-cloud-amd64")
    host = kernels.resolve("host")
    assert host.is_host and host.label == "host" and host.vmlinuz is None


@pytest.mark.parametrize("name,needle", [
    ("not-a-kernel", "neither a vmlinuz path nor a Debian kernel package"),
    ("linux-image-6.1.0-57-amd64-dbg", "debug-symbols package"),
    ("linux-image-9.9.9-99-amd64", "cannot fetch kernel package"),
    ("linux-image-nosuch-amd64", "apt knows no kernel metapackage"),
    ("/no/such/bzImage", "not found"),
    ("/etc/hostname", "not a bootable x86 kernel image"),
])
def test_bad_kernel_names_are_one_line_exit_2(name, needle):
    with pytest.raises(SpecError, match=needle.replace(".", r"\.")):
        kernels.resolve(name)
    r = runner.invoke(app, ["doctor", "--kernel", name])
    assert r.exit_code == 2 and needle in _one_error_line(r)


def test_own_build_path_with_modules(tmp_path):
    """A bzImage's release comes from its boot header, whatever the file is called."""
    img = next(iter(sorted((kernels._cache()).glob("linux-image-*/boot/vmlinuz-*"))), None)
    if img is None:
        pytest.skip("no kernel package unpacked in the cache")
    release = img.name.removeprefix("vmlinuz-")
    shutil.copy(img, tmp_path / "bzImage")
    (tmp_path / "mods" / release).mkdir(parents=True)
    k = kernels.resolve(f"{tmp_path}/bzImage:{tmp_path}/mods")
    assert k.release == release and k.modules == tmp_path / "mods" and not k.is_host
    # the <release> directory itself is accepted too
    assert kernels.resolve(f"{tmp_path}/bzImage:{tmp_path}/mods/{release}").modules == tmp_path / "mods"
    with pytest.raises(SpecError, match="holds no"):
        kernels.resolve(f"{tmp_path}/bzImage:{tmp_path}")
    assert kernels.resolve(f"{tmp_path}/bzImage").modules is None


@needs_apt
def test_kernel_range_is_apts_versions_in_order_one_flavour():
    r = kernels.kernel_range("linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-amd64")
    names = [p for p, _ in r]
    assert names[0] == "linux-image-6.1.0-47-amd64" and names[-1] == "linux-image-6.1.0-57-amd64"
    assert all(n.endswith("-amd64") and "-cloud-" not in n and "-rt-" not in n for n in names)
    versions = [v for _, v in r]
    assert all(kernels.compare_versions(a, b) < 0 for a, b in zip(versions, versions[1:]))
    # newer first: the same list reversed; metapackages resolve; 6.1 -> 6.12 crosses the series
    assert kernels.kernel_range("linux-image-6.1.0-57-amd64", "linux-image-6.1.0-47-amd64") == r[::-1]
    across = kernels.kernel_range("linux-image-6.1.0-56-amd64", "linux-image-6.12-amd64")
    assert across[0][0] == "linux-image-6.1.0-56-amd64" and "6.12." in across[-1][0] and len(across) > 3
    with pytest.raises(SpecError, match="different flavours"):
        kernels.kernel_range("linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-cloud-amd64")
    with pytest.raises(SpecError, match="same kernel"):
        kernels.kernel_range("linux-image-amd64", kernels.package_name("linux-image-amd64"))


# ---- bad input: one line, exit 2, nothing left (no QEMU, no work dir, no lab record) ---------------

def _descendants() -> set[int]:
    """Processes this test process started (QEMU under vng, ovs daemons...): the machine is shared, so
    other jobs' processes are not counted."""
    import os

    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    mine, todo = set(), [os.getpid()]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parent.items() if pp == p} - mine
        mine |= kids
        todo += kids
    return mine


def _leftovers(tmp: Path) -> tuple:
    """What a command could leave: a process of ours, a guest's or a private switch's work directory
    (in this test's own temporary directory, see _private_tmp), a lab record (this session's own)."""
    from faultinj import labs as lab

    return _descendants(), sorted(p.name for p in tmp.glob("faultinj-*")), {d["prefix"] for d in lab.recorded_labs()}


@pytest.fixture
def private_tmp(monkeypatch):
    """Work directories (vm.workdir, the private switch's) made in a directory of this test's own,
    not the shared /tmp; short, since a VM's agent socket lives in it (108 bytes at most: pytest's
    tmp_path under an xdist worker is longer)."""
    import shutil
    import tempfile
    from pathlib import Path

    d = tempfile.mkdtemp(prefix="fim")
    monkeypatch.setattr(tempfile, "tempdir", d)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


DROP = "scenarios/drop.yaml"


@pytest.mark.parametrize("args,needle", [
    (("run", DROP, "--kernel", "not-a-kernel"), "neither a vmlinuz path nor a Debian kernel package"),
    (("run", DROP, "--kernel", "host", "--kernel", "linux-image-9.9.9-99-amd64"), "cannot fetch kernel package"),
    (("run", DROP, "--kernel", "/etc/hostname"), "not a bootable x86 kernel image"),
    (("run", DROP, "--kernel", "host", "--keep"), "--keep keeps one lab"),
    (("run", DROP, "--repeat", "0"), "give 1 to 100 runs"),
    (("run", DROP, "--kernel", "linux-image-6.1.0-57-amd64", "--kernel", "nope"), "neither a vmlinuz path"),
    (("doctor", "--kernel", "linux-image-6.1.0-57-amd64", "--kernel", "linux-image-6.1.0-57-amd64-dbg"),
     "debug-symbols package"),
    (("run", "scenarios/seed-vms-ovs.yaml", "--kernel", "host"), "'host' is no kernel to boot them with"),
    (("run", DROP, "--ovs", "/no/such/ovs"), "is not a directory"),
    (("run", DROP, "--ovs", "/etc"), "lacks ovsdb-server"),
    (("compare", DROP, "--before", "host"), "compare needs both sides"),
    (("compare", DROP, "--after", "linux-image-6.1.0-57-amd64"), "missing: --before"),
    (("compare", DROP, "--before", "host", "--after", "host"), "are the same"),
    (("compare", DROP, "--before", "host", "--after", "ovs=/etc"), "lacks"),
    (("compare", DROP, "--before", "ovs=/etc", "--after", "host"), "lacks"),
    (("bisect", DROP, "--good", "linux-image-6.1.0-47-amd64"), "give --good and --bad"),
    (("bisect", DROP, "--good", "host", "--bad", "linux-image-6.1.0-57-amd64"), "give a package name"),
    (("bisect", DROP, "--good", "linux-image-6.1.0-47-amd64", "--bad", "linux-image-6.1.0-57-rt-amd64"),
     "different flavours"),
    (("bisect", DROP, "--good", "linux-image-6.1.0-56-amd64", "--bad", "linux-image-6.1.0-57-amd64"),
     "no kernel package lies between"),
    (("bisect", DROP, "--good", "linux-image-6.1.0-47-amd64", "--bad", "linux-image-9.9.9-99-amd64"),
     "apt knows no kernel package"),
])
def test_bad_input_across_kernels_is_one_line_exit_2_and_leaves_nothing(args, needle, private_tmp):
    if "bisect" in args and not shutil.which("apt-cache"):
        pytest.skip("no apt")
    before = _leftovers(private_tmp)
    r = runner.invoke(app, list(args))
    assert r.exit_code == 2 and needle in _one_error_line(r), r.output
    assert _leftovers(private_tmp) == before
    j = runner.invoke(app, [*args, "--json"])
    assert j.exit_code == 2 and __import__("json").loads(j.stdout)["exit_code"] == 2


# ---- bisect's search, on apt's real list, with a verdict given per version (no boot: the logic) ----

@needs_apt
@pytest.mark.parametrize("flip", range(1, 11))
def test_bisect_names_the_first_differing_version_in_about_log2_n_boots(flip, monkeypatch):
    """Each version's verdict is FAIL before index `flip` and PASS from it (a fix arriving there);
    bisect must name exactly that version, having run 2 ends + at most ceil(log2(n-1)) between."""
    import math

    from faultinj.scenario import load, matrix
    from faultinj.verdict import Check, Verdict

    versions = kernels.kernel_range("linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-amd64")
    index = {p: i for i, (p, _) in enumerate(versions)}
    ran = []

    def fake_run_side(scn, side, repeat=1, pcap_dir=None, progress=None):
        ran.append(side.kernel)
        ok = index[side.kernel] >= flip
        return matrix.Cell(side, [Verdict("x", checks=[Check("delivered", ok, str(ok), "True")])])

    monkeypatch.setattr(matrix, "run_side", fake_run_side)
    b = matrix.bisect(load(DROP), "linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-amd64")
    assert b.ok and versions[b.first_different][0] == versions[flip][0], b.reason
    assert b.tried[b.first_different].verdict == "PASS" and b.tried[b.first_different - 1].verdict == "FAIL"
    n = len(versions)
    assert len(ran) == len(set(ran)) == b.boots <= 2 + math.ceil(math.log2(n - 1))
    assert versions[flip][0] in b.reason and b.to_json()["first_different"]["package"] == versions[flip][0]


@needs_apt
def test_bisect_says_when_the_ends_agree_or_a_verdict_is_mixed(monkeypatch):
    from faultinj.scenario import load, matrix
    from faultinj.verdict import Check, Verdict

    def cell(side, oks):
        return matrix.Cell(side, [Verdict("x", checks=[Check("c", ok, "", "")]) for ok in oks])

    monkeypatch.setattr(matrix, "run_side", lambda scn, side, *a, **k: cell(side, [True]))
    b = matrix.bisect(load(DROP), "linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-amd64")
    assert not b.ok and "both ends give PASS" in b.reason and b.boots == 2
    monkeypatch.setattr(matrix, "run_side", lambda scn, side, *a, **k: cell(
        side, [True, False] if "-52-" in side.kernel else [side.kernel.endswith("57-amd64")] * 2))
    b = matrix.bisect(load(DROP), "linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-amd64", repeat=2)
    assert not b.ok and "MIXED (1 of 2 runs pass)" in b.reason and "cannot be placed" in b.reason


# ---- OVS builds: Debian's openvswitch-switch + openvswitch-common unpacked into a prefix ------------
# This machine has one OVS version (3.1.0, Debian 12's); the mechanism is tested with that version
# unpacked (dpkg -x) into two prefixes, run by private daemons beside the machine's own switch.

OVS_SCENARIO = "scenarios/ovs-psh-drop-rule.yaml"   # host, userspace datapath: ~7 s a run


@pytest.fixture(scope="session")
def ovs_prefixes(tmp_path_factory) -> tuple[str, str]:
    if not (shutil.which("apt-get") and shutil.which("dpkg") and shutil.which("ovs-vsctl")):
        pytest.skip("needs apt-get, dpkg and the machine's Open vSwitch")
    d = tmp_path_factory.mktemp("ovsdebs")
    got = subprocess.run(["apt-get", "download", "openvswitch-switch", "openvswitch-common"], cwd=d,
                         capture_output=True, text=True)
    debs = sorted(d.glob("*.deb"))
    if got.returncode or len(debs) != 2:
        pytest.skip(f"apt-get download openvswitch-switch openvswitch-common failed: {got.stderr.strip()[-200:]}")
    out = []
    for name in ("ovs-a", "ovs-b"):
        for deb in debs:
            subprocess.run(["dpkg", "-x", str(deb), str(d / name)], check=True)
        out.append(str(d / name))
    return out[0], out[1]


def _machine_switch_bridges() -> set[str]:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OVS_")}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    r = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr   # the machine's switch still answers
    return set(r.stdout.split())


@pytest.mark.slow
def test_two_ovs_builds_side_by_side_on_private_switches(ovs_prefixes, tmp_path):
    """run --kernel host --ovs A --ovs B: two columns, each lab on its build's own ovsdb-server and
    ovs-vswitchd (never on the machine's switch; the vswitchd in a namespace of its own, since a userspace
    datapath owns a device named ovs-netdev that the machine's switch may hold), --json/--junit/--report
    carry the matrix, nothing is left. Cost: ~30 s (four runs of a 7 s scenario, no boot)."""
    import glob
    import json
    import os
    import xml.etree.ElementTree as ET

    a, b = ovs_prefixes
    env_before = {k: os.environ.get(k) for k in ("PATH", "OVS_RUNDIR", "OVS_DBDIR")}
    seen = []

    def progress(m):   # while the traffic runs: the lab's bridge is on the private switch only
        if "traffic [1/" in m:
            private = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
            seen.append((set(private), _machine_switch_bridges(), os.environ.get("OVS_RUNDIR")))

    from faultinj import scenario as scenario_api
    m = scenario_api.run_matrix(OVS_SCENARIO, [f"host,ovs={a}", f"host,ovs={b}"], pcap_dir=str(tmp_path / "p"),
                       progress=progress)
    assert [c.verdict for c in m.cells] == ["PASS", "PASS"], m.table()
    assert len(seen) == 2
    for (private, machine, rundir), prefix in zip(seen, (a, b)):
        assert len(private) == 1 and not (private & machine) and rundir.startswith("/tmp/faultinj-ovs-")
    assert {k: os.environ.get(k) for k in env_before} == env_before
    ours = set().union(*(private for private, _, _ in seen))
    assert not ours & _machine_switch_bridges() and not glob.glob("/tmp/faultinj-ovs-*")
    assert not any(ns.endswith("ovs") and ns.startswith("fi") for ns in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    # the CLI: the same matrix as JSON, one JUnit testsuite per column, the HTML side by side
    r = runner.invoke(app, ["run", OVS_SCENARIO, "--kernel", "host", "--ovs", a, "--ovs", b, "--json",
                            "--junit", str(tmp_path / "j.xml"), "--report", str(tmp_path / "r.html"),
                            "--pcap-dir", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    (doc,) = json.loads(r.stdout)
    assert [c["label"] for c in doc["columns"]] == [f"host,ovs={a}", f"host,ovs={b}"]
    assert all(c["verdict"] == "PASS" and c["release"] == os.uname().release for c in doc["columns"])
    row = next(x for x in doc["rows"] if x["check"] == "tcp_stalled: filtered")
    assert [c["ok"] for c in row["cells"]] == [True, True]
    suites = ET.parse(tmp_path / "j.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == [f"ovs-psh-drop-rule [host,ovs={a}]", f"ovs-psh-drop-rule [host,ovs={b}]"]
    html = (tmp_path / "r.html").read_text()
    assert 'class="scenario matrix"' in html and html.count(f"ovs={a}") >= 2


def test_compare_exits_1_when_both_sides_pass(ovs_prefixes, tmp_path):
    """Two builds of the same OVS: the scenario passes on both, so it does not show a fix.
    Cost: ~15 s (two runs, no boot)."""
    import json

    a, b = ovs_prefixes
    r = runner.invoke(app, ["compare", OVS_SCENARIO, "--before", f"ovs={a}", "--after", f"ovs={b}", "--json",
                            "--pcap-dir", str(tmp_path)])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert not doc["ok"] and doc["reason"] == "both sides pass: the scenario does not catch the bug"
    assert doc["before"]["verdict"] == doc["after"]["verdict"] == "PASS" and doc["flipped"] == []


def test_repeat_gives_each_verdict_as_k_of_n(tmp_path):
    """--repeat 3 on this machine's kernel: k of N in the text and the JSON. Cost: ~8 s."""
    import json

    r = runner.invoke(app, ["run", DROP, "--kernel", "host", "--repeat", "3", "--json", "--pcap-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    (doc,) = json.loads(r.stdout)
    col = doc["columns"][0]
    assert (col["passes"], col["runs"], col["verdict"]) == (3, 3, "PASS") and len(col["verdicts"]) == 3
    assert all(c["cells"][0]["runs"] == 3 for c in doc["rows"])
    # a scenario that fails: 0 of N is FAIL, exit 1 (the drop ratio it expects is not the one applied)
    bad = tmp_path / "drop-wrong.yaml"
    text = open(DROP).read()
    assert "drop=5%" in text
    bad.write_text(text.replace("drop=5%", "drop=25%"))
    r = runner.invoke(app, ["run", str(bad), "--kernel", "host", "--repeat", "2", "--pcap-dir", str(tmp_path)])
    assert r.exit_code == 1 and "FAIL 0/2" in r.stdout, r.output


def test_ovs_prefix_in_the_scenario_file(ovs_prefixes, tmp_path):
    """bridges: {br0: {kind: ovs, prefix: DIR}}: checked at load (file:line), one build per lab."""
    from faultinj.scenario import load
    from faultinj.scenario.schema import ScenarioError

    a, b = ovs_prefixes
    text = open(OVS_SCENARIO).read()
    good = tmp_path / "good.yaml"
    good.write_text(text.replace("      kind: ovs\n", f"      kind: ovs\n      prefix: {a}\n"))
    assert load(str(good)).lab.ovs_prefix == a
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("      kind: ovs\n", "      kind: ovs\n      prefix: /etc\n"))
    with pytest.raises(ScenarioError, match=r"bad.yaml:\d+:\d+: lab.bridges.br0.prefix: OVS prefix /etc lacks"):
        load(str(bad))
    two = tmp_path / "two.yaml"
    two.write_text(text.replace("      kind: ovs\n", f"      kind: ovs\n      prefix: {a}\n").replace(
        "  links:\n", f"    br1: {{kind: ovs, prefix: {b}}}\n  links:\n", 1))
    with pytest.raises(ScenarioError, match="one Open vSwitch runs a lab's ovs bridges"):
        load(str(two))


# ---- on a real guest kernel ------------------------------------------------------------------

@pytest.mark.guest
@pytest.mark.slow
def test_a_namespace_lab_given_a_kernel_runs_inside_a_guest_of_it(private_tmp):
    """run drop.yaml --kernel linux-image-amd64 (a metapackage): the namespace lab is made inside a
    guest of Debian's current kernel; the verdict comes back (JSON from the guest), with its pcap,
    and nothing is left. Cost: one guest boot, ~2 min under TCG."""
    import json
    import os

    tmp_path = private_tmp / "pcaps"
    release = kernels.resolve("linux-image-amd64").release
    before = _leftovers(private_tmp)
    r = runner.invoke(app, ["run", DROP, "--kernel", "linux-image-amd64", "--json", "--pcap-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    (doc,) = json.loads(r.stdout)
    (col,) = doc["columns"]
    assert col["label"] == "linux-image-amd64" and col["release"] == release != os.uname().release
    (v,) = col["verdicts"]
    assert v["ok"] and v["faults"]["loss"]["vm"] and v["faults"]["loss"]["kernel"] == release
    assert os.path.getsize(v["pcaps"]["rx"]) > 24 and v["pcaps"]["rx"].startswith(str(tmp_path / "linux-image-amd64"))
    assert "[linux-image-amd64] guest up" in r.stderr and "[linux-image-amd64] [guest] lab up" in r.stderr
    assert _leftovers(private_tmp) == before


def test_the_guest_sends_json_and_inguest_neither_imports_the_runner_nor_unpickles(tmp_path):
    """Issue 22: no runner <-> inguest cycle (the guest's side, guestside, is the one that imports the
    runner), and what a guest writes is read as JSON data only. Cost: milliseconds."""
    import ast
    import pickle
    from pathlib import Path

    import json

    from faultinj.errors import FaultinjError
    from faultinj.scenario import inguest
    from faultinj.scenario.hosts import Completed
    from faultinj.verdict import Check, HopRecord, Verdict

    src = Path(inguest.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom):
            imported |= {node.module or ""} | {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert not {"runner", "pickle", "guestside"} & imported and "pickle.load" not in src
    # a verdict with a journey round-trips through the guest's JSON answer
    v = Verdict("s", "p.yaml", [Check("c", True, "1", "1", (0.1, 0.2))], journeys=[[HopRecord(
        {"summary": "icmp echo", "direction": "DROP", "ifname": "eth0", "reason": "faultinj"})]],
                plots={0: {"kind": "ratio", "x": [1]}}, description="d")
    ran = Completed([], 0, "a stray line\n" + json.dumps({"verdicts": [v.to_wire(), v.to_wire()]}) + "\n", "")
    back = inguest.verdicts_of(ran, "/w/scenario.yaml", "p.yaml")
    assert len(back) == 2 and back[0].to_wire() == v.to_wire() and back[0].plots == {0: {"kind": "ratio", "x": [1]}}
    assert "icmp echo" in str(back[0].journeys[0][0]) and back[0].checks[0].ci == (0.1, 0.2)
    # the guest's error is raised here as there, naming the scenario file, not the guest's copy
    err = {"error": {"kind": "SpecError", "message": "/w/scenario.yaml: bad", "status": 2, "all_lines": None}}
    with pytest.raises(FaultinjError, match="^p.yaml: bad$") as exc:
        inguest.verdicts_of(Completed([], 1, json.dumps(err), ""), "/w/scenario.yaml", "p.yaml")
    assert int(exc.value.status) == 2
    # anything else a guest might answer is refused as data, never run
    for junk in (pickle.dumps(v).decode("latin-1"), '{"scenario": "x"}', '{"verdicts": [1, 2]}',
                 '{"verdicts": [{"checks": 3}]}', ""):
        with pytest.raises(FaultinjError, match="is not a verdict|inside the guest failed"):
            inguest.verdicts_of(Completed([], 0, junk, ""), "/w/scenario.yaml", "p.yaml")


def test_a_side_sets_the_kernel_where_the_scenario_boots_one():
    """with_side: a namespace lab moves into a guest of the kernel, lab.guest and every lab.vms VM
    take it, 'host' runs a lab.guest scenario here. Cost: milliseconds."""
    from faultinj.scenario import load
    from faultinj.scenario.matrix import Side, with_side

    k = "linux-image-6.1.0-50-amd64"
    ns = with_side(load(DROP), Side(k))
    assert ns.lab.guest.kernel == k and not ns.lab.vms and load(DROP).lab.guest is None
    guest = load("scenarios/ovs-kernel-datapath.yaml")
    assert with_side(guest, Side(k)).lab.guest.kernel == k
    assert with_side(guest, Side(k)).lab.guest.memory == guest.lab.guest.memory
    assert with_side(guest, Side("host")).lab.guest is None
    vms = with_side(load("scenarios/seed-vms-ovs.yaml"), Side(k))
    assert vms.lab.vms and {v.kernel for v in vms.lab.vms.values()} == {k} and vms.lab.guest is None


def test_doctor_columns_start_with_this_machine():
    """doctor --kernel host --json: the column layout without a boot. Cost: ~2 s."""
    import json
    import os

    r = runner.invoke(app, ["doctor", "--kernel", "host", "--json"])
    assert r.exit_code in (0, 3), r.output
    doc = json.loads(r.stdout)
    (col,) = doc["columns"]
    assert col["kernel"] == "host" and col["release"] == os.uname().release == doc["kernel"]
    assert {p["name"] for p in col["probes"]} >= {"BTF", "tcx links", "tracer (tp_btf, CO-RE)"}
    text = runner.invoke(app, ["doctor", "--kernel", "host"]).stdout
    assert text.splitlines()[0].split() == ["probe", "host"] and "default feature set" in text


# ---- a real flip: scenarios/tcp-advmss-clamp.yaml ("tcp: clamp route advmss to TCP_MIN_MSS",
# stable 6.1.191): FAIL on linux-image-6.1.0-54-amd64 (6.1.190), PASS from 6.1.0-55 (6.1.192) ----

FLIP = "scenarios/tcp-advmss-clamp.yaml"
LAST_FAILING, FIRST_PASSING = "linux-image-6.1.0-54-amd64", "linux-image-6.1.0-55-amd64"
needs_flip = pytest.mark.skipif(not __import__("os").path.exists(FLIP), reason=f"{FLIP} is not in this checkout")


@pytest.mark.guest
@pytest.mark.slow
@needs_flip
@needs_apt
def test_compare_shows_the_fix_and_bisect_names_the_version_that_brought_it(tmp_path):
    """compare --before 6.1.0-54 --after 6.1.0-55: exit 0, the segment count flipped; bisect from
    6.1.0-53 to 6.1.0-55 names 6.1.0-55 with both verdicts. Cost: 5 guest boots (2 + 3), ~8-12 min
    under TCG: the most expensive test here; the search itself is tested without boots above."""
    import json

    r = runner.invoke(app, ["compare", FLIP, "--before", LAST_FAILING, "--after", FIRST_PASSING, "--json",
                            "--pcap-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["before"]["verdict"] == "FAIL" and doc["after"]["verdict"] == "PASS"
    assert doc["before"]["release"] == "6.1.0-54-amd64" and doc["after"]["release"] == "6.1.0-55-amd64"
    flipped = {f["check"]: f for f in doc["flipped"]}
    assert list(flipped) == ["count: tcp and data at rx"], doc["flipped"]
    assert int(flipped["count: tcp and data at rx"]["before"]["observed"]) > 200 >= int(
        flipped["count: tcp and data at rx"]["after"]["observed"])
    r = runner.invoke(app, ["bisect", FLIP, "--good", "linux-image-6.1.0-53-amd64", "--bad", FIRST_PASSING, "--json",
                            "--pcap-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    b = json.loads(r.stdout)
    assert b["first_different"]["package"] == FIRST_PASSING and b["first_different"]["verdict"].startswith("PASS")
    assert b["last_like_good"]["package"] == LAST_FAILING and b["last_like_good"]["verdict"].startswith("FAIL")
    assert b["boots"] == 3 and [v["verdict"] for v in b["versions"]] == ["FAIL", "FAIL", "PASS"]
