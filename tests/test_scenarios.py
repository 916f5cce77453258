"""Scenario files: schema errors (no kernel), and real runs of every shipped scenario."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

import faultinj
from faultinj.errors import StateError
from faultinj.labs import traffic
from faultinj.kernel.netns import list_netns
from faultinj.scenario import ScenarioError, load, loads
from faultinj.scenario import junit
from faultinj.scenario.runner import run

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(glob.glob(str(ROOT / "scenarios" / "*.yaml")))

GOOD = """\
name: t
lab:
  hosts: [vm1, vm2]
  links:
    - ends: [vm1, vm2]
      vm1: {ipv4: 10.20.0.1/24}
      vm2: {ipv4: 10.20.0.2/24}
faults:
  - {name: f, spec: drop=1%, host: vm1, interface: eth0}
traffic:
  - {name: s, udp: {from: vm1, to: vm2, count: 100}}
capture:
  - {name: rx, host: vm2, interface: eth0}
expect:
  - loss: {traffic: s, p: 0.01}
"""


def test_good_file_loads():
    scn = loads(GOOD, "good.yaml")
    assert scn.interfaces == {"vm1": ["eth0"], "vm2": ["eth0"]}
    assert scn.faults[0].spec.hook == "tc-egress" and scn.address("vm2") == "10.20.0.2"


BAD = [
    # (replace this, with this, message, line)
    ("name: t", "name: t\ncolour: blue", "unknown key 'colour' in the scenario", 2),
    ("hosts: [vm1, vm2]", "hosts: [vm1, VM2]", "host name 'VM2'", 3),
    ("ends: [vm1, vm2]", "ends: [vm1, vm3]", "no host or bridge 'vm3' (did you mean", 5),
    ("{ipv4: 10.20.0.1/24}", "{ipv4: 10.20.0.1}", "with a prefix length", 6),
    ("{ipv4: 10.20.0.1/24}", "{ipv4: 10.20.0.1/24, gso: 1}", "unknown key 'gso'", 6),
    ("spec: drop=1%", "spec: dorp=1%", "did you mean 'drop'", 9),
    ("spec: drop=1%", "spec: drop=2", "from 0 to 1", 9),
    ("host: vm1, interface: eth0}", "host: vm9, interface: eth0}", "no host 'vm9'", 9),
    ("host: vm1, interface: eth0}", "host: vm1, interface: eth7}", "no interface of vm1 'eth7'", 9),
    ("count: 100", "count: many", "must be a whole number", 11),
    ("udp: {", "udq: {", "unknown key 'udq'", 11),
    ("{name: rx, host: vm2, interface: eth0}", "{name: rx, host: vm2, interface: eth0, direction: up}",
     "direction must be in, out or any", 13),
    ("loss: {traffic: s, p: 0.01}", "loss: {traffic: x, p: 0.01}", "no traffic 'x'", 15),
    ("loss: {traffic: s, p: 0.01}", "loss: {traffic: s}", "needs p (a probability) or ratio", 15),
    ("loss: {traffic: s, p: 0.01}", "los: {traffic: s, p: 0.01}", "did you mean 'loss'", 15),
    ("loss: {traffic: s, p: 0.01}", "fraction: {capture: rx, having: tcp and pushy, p: 0.1}",
     "cannot read 'pushy'", 15),
    ("  - {name: f, spec", "  - {name: f, at: soon, spec", "bad duration 'soon'", 9),
    ("lab:", "lab: [", "YAML: expected", 4),
    ("expect:", "trace: {filter: proto=tcpp}\nexpect:", "trace.filter: proto=tcpp", 14),
    ("expect:", "trace: {count: 0}\nexpect:", "trace.count must be 1..1000", 14),
    ("loss: {traffic: s, p: 0.01}", "delay: {capture: rx, fault: f}", "fault 'f' is drop, not a delay", 15),
    ("loss: {traffic: s, p: 0.01}", "throughput: {capture: rx}", "throughput needs min or max", 15),
    ("loss: {traffic: s, p: 0.01}", "throughput: {capture: rx, min: fast}", "bad rate 'fast'", 15),
    ("lab:\n", "lab:\n  guest: linux-image-amd64\n", "lab.guest: give kernel", 3),
    ("lab:\n", "lab:\n  guest: {kernel: linux-image-amd64, cpus: 0}\n", "lab.guest.cpus must be 1..16", 3),
    ("lab:\n", "lab:\n  guest: {kernel: linux-image-amd64}\n  vms: {vm1: {kernel: linux-image-amd64}}\n",
     "lab.vms: a lab made inside a guest (lab.guest) has only namespaces", 4),
    ("loss: {traffic: s, p: 0.01}", "traced_path: {fault: f, through: [upcall]}",
     "traced_path: the scenario traces nothing", 15),
    ("loss: {traffic: s, p: 0.01}", "traced_path: {fault: f, through: upcall}\ntrace: {count: 3}",
     "traced_path.through: a list of hop points", 15),
]


@pytest.mark.parametrize("old,new,message,line", BAD, ids=[b[2][:30] for b in BAD])
def test_schema_errors_point_at_the_line(old, new, message, line):
    assert old in GOOD
    with pytest.raises(ScenarioError) as err:
        loads(GOOD.replace(old, new, 1), "bad.yaml")
    text = str(err.value)
    assert message in text, text
    assert text.startswith(f"bad.yaml:{line}:"), text
    assert "\n" not in text


def test_several_mistakes_are_reported_at_once_each_at_its_line():
    """Four mistakes in four places: all four, in file order, each at file:line:column; an entry
    that failed still counts as named (the expect that refers to it is not a fifth mistake)."""
    text = (GOOD.replace("name: t", "name: t\ncolour: blue", 1)                       # line 2
            .replace("spec: drop=1%", "spec: dorp=1%", 1)                              # line 10
            .replace("count: 100", "count: many", 1)                                   # line 12
            .replace("{name: rx, host: vm2, interface: eth0}",
                     "{name: rx, host: vm2, interface: eth0, direction: up}", 1)       # line 14
            + "  - counter: {fault: f, counter: acted, equals: 1}\n")                # refers to the bad fault
    with pytest.raises(ScenarioError) as err:
        loads(text, "bad.yaml")
    lines = str(err.value).splitlines()
    assert [ln.split(":")[1] for ln in lines] == ["2", "10", "12", "14"], lines
    assert all(ln.startswith("bad.yaml:") for ln in lines)
    assert "colour" in lines[0] and "did you mean 'drop'" in lines[1] and "whole number" in lines[2]
    assert "direction must be in, out or any" in lines[3]


def test_several_mistakes_are_shown_by_run_each_on_a_line(tmp_path):
    from conftest import cli_runner
    from faultinj.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("name: t", "name: t\ncolour: blue", 1).replace("count: 100", "count: many", 1))
    r = cli_runner().invoke(app, ["run", str(bad)])
    assert r.exit_code == 2
    assert [ln.split(":")[3] for ln in r.stderr.strip().splitlines()] == ["2", "12"], r.stderr
    j = cli_runner().invoke(app, ["run", str(bad), "--json"])
    assert j.exit_code == 2 and len(json.loads(j.stdout)["errors"]) == 2


OUTSIDE = """\
name: c
faults:
  - {name: f, spec: drop=1%, host: {container: web}, interface: eth0}
traffic:
  - {name: p, ping: {from: {netns_path: /run/netns/x}, to: {container: web}}}
capture:
  - {name: rx, host: {pid: 4242}, interface: eth0}
expect:
  - count: {capture: rx, equals: 0}
"""

OUTSIDE_BAD = [
    ("{container: web}, interface", "{container: -web}, interface", "faults[0].host.container: '-web' is not", 3),
    ("{container: web}, interface", "{contianer: web}, interface", "did you mean 'container'", 3),
    ("{container: web}, interface", "{container: web, pid: 3}, interface", "name one of container, pid or", 3),
    ("{container: web}, interface", "{container: web, runtime: rkt}, interface", "one of docker, podman, containerd",
     3),
    ("{container: web}, interface", "{container: web, runtime: podman}, interface",
     "container:web is named with another runtime", 5),
    ("{container: web}, interface: eth0", "{container: web}, interface: 0", "interface must be a string", 3),
    ("{netns_path: /run/netns/x}", "{netns_path: run/netns/x}", "an absolute path", 5),
    ("{netns_path: /run/netns/x}", "{pid: 1, runtime: docker}", "runtime goes with container", 5),
    ("{pid: 4242}", "{pid: 0}", "capture[0].host.pid: a process id", 7),
    ("{pid: 4242}", "{pid: yes}", "must be a whole number", 7),
]


def test_a_lab_inside_a_guest_takes_no_host_outside_it():
    text = OUTSIDE.replace("name: c\n", "name: c\nlab:\n  guest: {kernel: linux-image-amd64}\n  hosts: []\n")
    with pytest.raises(ScenarioError, match=r"^c.yaml:3:\d+: lab.guest: the lab is made inside a VM, where "
                       r"container:web, /run/netns/x, pid:4242 cannot be reached"):
        loads(text, "c.yaml")


def test_a_lab_inside_a_guest_is_not_kept():
    from faultinj.scenario.runner import lab_up

    scn = loads(GOOD.replace("lab:\n", "lab:\n  guest: {kernel: linux-image-amd64}\n"), "g.yaml")
    assert scn.lab.guest.kernel == "linux-image-amd64" and scn.lab.guest.memory == "1G"
    with pytest.raises(StateError, match="lives only while 'faultinj run' runs it"):
        lab_up(scn)
    with pytest.raises(StateError, match="--keep: a lab made inside a guest"):
        run(scn, keep=True)


def _spec_error(text):
    from faultinj.errors import SpecError

    return SpecError(text)


@pytest.mark.parametrize("raised,status,said", [
    (lambda copy: _spec_error(f"{copy}:12:3: x"), 2, "bad.yaml:12:3: x"),    # names the file, not the copy
    (lambda copy: FileNotFoundError(2, "No such file", "/nope"), 2, "no such file: /nope: check the path"),
    (lambda copy: ValueError("boom"), 1, "unexpected error in the guest's run (a bug: please report it): "
                                         "ValueError: boom"),
], ids=["faultinj", "foreign", "bug"])
def test_an_error_in_the_guest_comes_back_with_its_message_and_exit_code(raised, status, said, tmp_path,
                                                                          monkeypatch, capfd):
    """The guest's side (guestside.main) answers what went wrong, its stdout's one line (which the
    agent's exec verb returns); this machine's side raises it again."""
    from faultinj.errors import FaultinjError
    from faultinj.scenario import guestside, inguest, runner
    from faultinj.scenario.hosts import Completed

    copy = tmp_path / "scenario.yaml"
    copy.write_text(GOOD.replace("lab:\n", "lab:\n  guest: {kernel: linux-image-amd64}\n"))

    def fail(*a, **kw):
        raise raised(str(copy))

    monkeypatch.setattr(runner, "run", fail)
    capfd.readouterr()
    assert guestside.main([str(copy), str(tmp_path)]) == 1
    out = capfd.readouterr().out
    assert len(out.splitlines()) == 1
    with pytest.raises(FaultinjError) as err:
        inguest.verdicts_of(Completed([], 1, out, ""), str(copy), "bad.yaml")
    assert str(err.value) == said and int(err.value.status) == status


def _hop(ts, direction="in", point="netif_receive_skb", fault=""):
    from faultinj.trace import Hop

    return Hop(ts, 1, "ns", "eth0", direction, point, 60, b"", fault=fault)


@pytest.mark.parametrize("order,ok", [
    (["ACT", "upcall", "exec output:2"], True),
    (["ACT", "exec output:2", "upcall", "exec output:1"], True),     # the points in order, others between
    (["upcall", "ACT", "exec output:2"], False),                     # the upcall came before the fault's act
    (["ACT", "exec output:2"], False),                               # no upcall
    (["upcall", "exec output:2"], False),                            # the fault never acted on it
    (["DUP", "upcall", "exec output:2"], True),                      # a duplicate fault's copy
])
def test_traced_path_wants_the_points_after_the_faults_act(order, ok):
    from faultinj.scenario.expect import RunData, evaluate
    from faultinj.scenario.schema import ExpectEntry

    hops = [_hop(i, p, "tc-egress", "f1 psh-ratio=1") if p in ("ACT", "DUP") else _hop(i, point=p)
            for i, p in enumerate(order)]
    data = RunData(journeys=[list(reversed(hops))], fault_ids={"psh": "f1"})   # order by time, not as read
    check = evaluate(ExpectEntry("traced_path", {"fault": "psh", "through": ["upcall", "exec output"]}, 1), data)
    assert check.ok == ok and check.observed == str(int(ok)), check
    none = evaluate(ExpectEntry("traced_path", {"fault": "psh", "through": ["upcall"], "max": 0}, 1), data)
    assert none.ok == (not ok) and none.expected == "<= 0", none    # max alone: no minimum of 1


def test_hosts_outside_the_lab_load():
    scn = loads(OUTSIDE, "c.yaml")
    assert scn.targets == {"container:web": {"container": "web", "runtime": None},
                           "/run/netns/x": {"netns_path": "/run/netns/x"}, "pid:4242": {"pid": 4242}}
    assert scn.faults[0].host == "container:web" and scn.traffic[0].params["to"] == "container:web"
    assert scn.lab.hosts == []


@pytest.mark.parametrize("old,new,message,line", OUTSIDE_BAD, ids=[b[2][:30] for b in OUTSIDE_BAD])
def test_hosts_outside_the_lab_errors_point_at_the_line(old, new, message, line):
    assert old in OUTSIDE
    with pytest.raises(ScenarioError) as err:
        loads(OUTSIDE.replace(old, new, 1), "bad.yaml")
    text = str(err.value)
    assert message in text and text.startswith(f"bad.yaml:{line}:") and "\n" not in text, text


def test_missing_file_is_a_clear_error():
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load("/nonexistent/x.yaml")


def _shipped_params():
    """Every shipped scenario, once in the suite: here, unless the demo test runs it (test_e2e.py:
    `faultinj demo` replays those through the CLI) or a guest's one boot does (tests/guests.py:
    SCENARIOS). Those booting VMs of their own are marked guest."""
    from faultinj.demo import STEPS
    from guests import in_a_boot

    elsewhere = {f for f, _ in STEPS} | in_a_boot()
    out = []
    for path in SHIPPED:
        name = os.path.basename(path)
        if name in elsewhere:
            continue
        lab = (yaml.safe_load(Path(path).read_text()) or {}).get("lab") or {}
        marks = [pytest.mark.guest, pytest.mark.slow] if lab.get("vms") or lab.get("guest") else []
        if marks and lab.get("vms") and "ovs" in (lab.get("bridges") or {}).values():
            marks.append(pytest.mark.xdist_group("host"))   # this machine's Open vSwitch: see conftest
        out.append(pytest.param(path, id=name, marks=marks))
    return out


@pytest.mark.parametrize("path", _shipped_params())
def test_shipped_scenario_passes(path, tmp_path):
    check_shipped_report(load(path), run(load(path), pcap_dir=str(tmp_path)))


def check_shipped_report(scn, report, in_guest: bool = False) -> None:
    """A shipped scenario's run: every check held, captures saved, nothing of its lab left, and what
    each scenario shows. in_guest: run directly inside a guest's boot (tests/test_guest.py)."""
    path = scn.path
    failed = [f"{c.name}: {c.observed} vs {c.expected}" for c in report.checks if not c.ok]
    assert report.ok, failed + report.errors
    assert report.pcaps and all(os.path.getsize(p) > 24 for p in report.pcaps.values())
    assert not [ns for ns in list_netns() if ns.startswith(report.prefix)]
    for name, f in report.faults.items():   # VM hosts: the fault ran in the guest, on its kernel
        assert f["vm"] == (f["host"] in scn.lab.vms or (scn.lab.guest is not None and not in_guest))
        if f["vm"]:
            assert f["kernel"] != os.uname().release
    if "seed-vms-ovs" in path:   # the seed article's attach: matchall + act_bpf inside vm1
        assert report.faults["psh"]["attach_mode"] == "matchall" and report.counters["psh"]["acted"] > 0
    if scn.lab.guest and not in_guest:   # the guest, its work directory and its lab record are gone
        from faultinj import labs as lab_mod

        holder = report.guest.removesuffix("-lab")   # this machine's name for the guest; the prefix is its lab's
        assert holder and holder != report.prefix
        assert not glob.glob(f"/tmp/faultinj-vm-{holder}*")
        assert not [d for d in lab_mod.recorded_labs() if d["prefix"] == holder]
        assert subprocess.run(["pgrep", "-f", report.guest], capture_output=True).returncode == 1
    if scn.trace:
        assert len(report.journeys) == scn.trace.count
    if scn.trace and scn.name == "bridge-lab":   # a ping request's journey, host -> bridge ports -> host
        first = [(h.netns_name.rsplit("-", 1)[1], h.direction) for h in report.journeys[0]]
        assert first == [("vm1", "out"), ("sw", "in"), ("sw", "out"), ("vm2", "in")], first
    for name, spec in scn.lab.ovs.items():   # ovs-psh-drop-rule: every rule's statistics, the megaflows
        sw = report.ovs[name]
        assert [r["flow"] for r in sw["rules"]] == spec.flows and all(r["found"] for r in sw["rules"])
        assert sw["megaflows"] and not sw["megaflows_error"]
    if scn.name == "ovs-psh-drop-rule":   # the fix: the dropping megaflow carries the tcp_flags mask
        assert any("tcp_flags(+psh)" in m["flow"] and m["flow"].endswith("actions:drop") and m["packets"]
                   for m in report.ovs["br0"]["megaflows"]), report.ovs["br0"]["megaflows"]


def test_the_ovs_field_bug_through_a_real_open_vswitch_bridge(tmp_path):
    """ovs-first-psh.yaml with its bridge made an Open vSwitch one (userspace datapath: no OVS
    kernel module here; run.sh installs and starts Open vSwitch for the tests)."""
    path = ROOT / "scenarios" / "ovs-first-psh.yaml"
    text = path.read_text()
    assert "bridges: {br0: linux}" in text
    scn = loads(text.replace("bridges: {br0: linux}", "bridges: {br0: ovs}"), str(path))
    report = run(scn, pcap_dir=str(tmp_path))
    assert report.ok, [f"{c.name}: {c.observed}" for c in report.checks if not c.ok] + report.errors
    assert not [ns for ns in list_netns() if ns.startswith(report.prefix)]
    bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True, check=True).stdout
    assert report.prefix not in bridges          # its bridge is gone too


def test_wrong_expectation_fails_with_a_readable_report(tmp_path):
    bad = Path(SHIPPED[0]).parent / "drop.yaml"
    text = bad.read_text().replace("loss: {traffic: stream, p: 0.05}", "loss: {traffic: stream, p: 0.25}")
    f = tmp_path / "wrong.yaml"
    f.write_text(text)
    junit_path = tmp_path / "junit.xml"
    r = subprocess.run([sys.executable, "-m", "faultinj.cli", "run", str(f), "--pcap-dir", str(tmp_path),
                        "--junit", str(junit_path), "--confidence", "0.999"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1, r.stderr
    assert "drop (" in r.stdout and "FAIL" in r.stdout
    assert "✗ loss of stream" in r.stdout and "expected 0.2500 within 99.9% CI" in r.stdout
    suite = ET.parse(junit_path).getroot().find("testsuite")
    assert suite.get("name") == "drop" and suite.get("failures") == "1"
    failures = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failures] == ["loss of stream"]
    assert "expected 0.2500" in failures[0].find("failure").get("message")


def test_junit_structure(tmp_path):
    from faultinj.scenario.runner import Report
    from faultinj.verdict import Check

    rep = Report("s", "s.yaml", checks=[Check("a", True, "1", "1"), Check("b", False, "2", "1", (0.1, 0.2))],
                 errors=["boom"], seconds=1.5)
    out = tmp_path / "j.xml"
    junit.write([rep], str(out))
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    for case in suite.findall("testcase"):
        assert case.get("name") and case.get("classname") == "faultinj.s"
    assert suite.findall("testcase")[2].find("error").get("message") == "boom"


def test_failure_mid_run_tears_everything_down(tmp_path, private_state, made_prefixes):
    from conftest import netns_of

    text = GOOD.replace("faults:\n", "faults:\n  - {name: x1, spec: ttl-pong, host: vm1, interface: eth0}\n"
                                      "  - {name: x2, spec: drop=1%@xdp, host: vm1, interface: eth0}\n")
    scn = loads(text, "fail.yaml")
    with pytest.raises(StateError, match="already has faultinj fault"):
        run(scn, pcap_dir=str(tmp_path))
    assert made_prefixes and not netns_of(made_prefixes)
    assert os.listdir(private_state["pin_root"]) == []
    assert os.listdir(private_state["run_dir"] / "faults") == []


def test_lab_up_status_down_cli(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text(GOOD.replace("name: t", "name: labtest"))
    cli = [sys.executable, "-m", "faultinj.cli", "lab"]
    r = subprocess.run(cli + ["up", str(f), "--json"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    try:
        assert set(data["namespaces"]) <= set(list_netns())
        assert traffic.ping(data["hosts"]["vm1"], "10.20.0.2", 3, interval=0.01).received == 3
        r = subprocess.run(cli + ["status", "--json"], capture_output=True, text=True, cwd=ROOT)
        assert [lab["name"] for lab in json.loads(r.stdout)] == ["labtest"]
        assert json.loads(r.stdout)[0]["present"]
        r = subprocess.run(cli + ["up", str(f)], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 5 and "already up" in r.stderr
    finally:
        r = subprocess.run(cli + ["down", str(f)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert not set(data["namespaces"]) & set(list_netns())


def test_verify_judges_a_fault_applied_by_hand(lab):
    """A capture cannot tell the fault's PSH from the stack's own (the end of a write, a forced push,
    a wait for send buffer): those n add to the fraction, n + (1 - n)/N. psh-ratio=2 keeps the check
    true up to n = 2.6% at 99.9% over 16k segments (with psh-ratio=10 only up to 0.85%: CI, loaded,
    saw 1839/16534 = 0.111, n = 1.2%); one write leaves only forced pushes and waits. The fault's own
    counters (fault_ratio) are exact."""
    with faultinj.fault("psh-ratio=2", lab.a.ifname, netns_name=lab.a.netns, seed=4) as rec:
        sender = threading.Thread(target=traffic.tcp_transfer,
                                  args=(lab.a.netns, lab.b.netns, lab.b.ip4, 20_000_000),
                                  kwargs={"write_size": 20_000_000})
        from faultinj.verify import verify

        sender_started = threading.Timer(0.3, sender.start)
        sender_started.start()
        res = verify(lab.b.ifname, netns_name=lab.b.netns, duration="4s", of="tcp and data", having="psh",
                     ratio=2, fault_id=rec.id)
        sender_started.join()
        sender.join()
    assert res.ok, [c for c in res.checks if not c.ok]
    assert [c.name.split(":")[0] for c in res.checks] == ["fraction", "fault_ratio"]
    assert res.facts["packets captured"] > 10000


def test_verify_can_fail(lab):
    from faultinj.verify import verify

    with faultinj.fault("psh-ratio=2", lab.a.ifname, netns_name=lab.a.netns, seed=4):
        t = threading.Timer(0.3, traffic.tcp_transfer, (lab.a.netns, lab.b.netns, lab.b.ip4, 5_000_000))
        t.start()
        res = verify(lab.b.ifname, netns_name=lab.b.netns, duration="2s", of="tcp and data", having="psh",
                     ratio=10)
        t.join()
    assert not res.ok and "fraction" in res.checks[0].name


def test_pytest_fixtures(fi_fault, fi_lab):
    topo = fi_lab()
    rec = fi_fault("drop=100%", topo.a.ifname, netns_name=topo.a.netns)
    assert traffic.ping(topo.a.netns, topo.b.ip4, 3, interval=0.01, timeout=1).received == 0
    assert [s.record.id for s in faultinj.status()] == [rec.id]


PHASES = """\
name: phases
lab:
  hosts: [vm1, vm2]
  links:
    - ends: [vm1, vm2]
      vm1: {ipv4: 10.21.0.1/24}
      vm2: {ipv4: 10.21.0.2/24}
faults:
  - {name: blackout, spec: drop=100%, host: vm1, interface: eth0, at: 1s, for: 1s}
traffic:
  - {name: pings, ping: {from: vm1, to: vm2, count: 300, interval: 0.01, timeout: 1}}
  - {name: hello, command: {host: vm2, run: "sh -c 'exit 3'"}}
capture:
  - {name: rx, host: vm2, interface: eth0, direction: in}
expect:
  - exit_code: {traffic: pings, equals: 0}     # ping fails only when no reply came at all
  - exit_code: {traffic: hello, equals: 3}
  # on for one second of a run of three or more: some requests lost, most not
  - counter: {fault: blackout, counter: acted, min: 15, max: 150}
  - count: {capture: rx, of: echo_request, min: 150, max: 285}
"""


def test_fault_phases_switch_on_and_off_during_traffic(tmp_path):
    report = run(loads(PHASES, "phases.yaml"), pcap_dir=str(tmp_path))
    assert report.ok, [f"{c.name}: {c.observed} vs {c.expected}" for c in report.checks if not c.ok] + report.errors
    acted = report.counters["blackout"]["acted"]
    [captured] = [int(c.observed) for c in report.checks if c.name.startswith("count:")]
    # every request was either dropped while the fault was on, or reached vm2 (+ a stray or two)
    assert 300 <= captured + acted <= 305


def test_ovs_bridge_without_open_vswitch_is_a_clear_error(monkeypatch, tmp_path, made_prefixes):
    from conftest import netns_of

    import shutil as sh

    from faultinj.errors import EnvironmentProblem

    real_which = sh.which
    monkeypatch.setattr("faultinj.labs.shutil.which", lambda n: None if n == "ovs-vsctl" else real_which(n))
    text = GOOD.replace("  links:\n    - ends: [vm1, vm2]\n", "  bridges: {br0: ovs}\n  links:\n    - ends: [vm1, vm2]\n")
    with pytest.raises(EnvironmentProblem, match="Open vSwitch"):
        run(loads(text, "ovs.yaml"), pcap_dir=str(tmp_path))
    assert not netns_of(made_prefixes)


def test_first_segments_check_fails_without_the_fault(tmp_path):
    text = (ROOT / "scenarios" / "ovs-first-psh.yaml").read_text()
    text = text.replace("  - {name: firstpsh, spec: first-psh, host: vm1, interface: eth0, seed: 1}\n", "")
    text = text.replace("faults:\n", "faults: []\n").replace("  - counter: {fault: firstpsh, counter: acted, equals: 20}\n", "")
    report = run(loads(text, "nofault.yaml"), pcap_dir=str(tmp_path))
    [check] = [c for c in report.checks if c.name.startswith("first_segments")]
    assert not check.ok and check.observed.endswith("of 20 connections")


def test_ttl_and_nth_end_to_end(tmp_path):
    text = """\
name: ttlnth
lab:
  hosts: [vm1, vm2]
  links:
    - ends: [vm1, vm2]
      vm1: {ipv4: 10.22.0.1/24}
      vm2: {ipv4: 10.22.0.2/24}
faults:
  - {name: ttl1, spec: "ttl=1,proto=icmp", host: vm1, interface: eth0}
  - {name: third, spec: "drop=100%,proto=udp,nth=3", host: vm1, interface: eth0}
traffic:
  - {name: pings, ping: {from: vm1, to: vm2, count: 50, interval: 0.005}}
  - {name: stream, udp: {from: vm1, to: vm2, count: 200}}
capture:
  - {name: rx, host: vm2, interface: eth0, direction: in}
expect:
  - exit_code: pings
  - count: {capture: rx, of: echo_request and ttl == 1, equals: 50}
  - count: {capture: rx, of: udp, equals: 199}
  - counter: {fault: third, counter: acted, equals: 1}
"""
    report = run(loads(text, "ttlnth.yaml"), pcap_dir=str(tmp_path))
    assert report.ok, [f"{c.name}: {c.observed} vs {c.expected}" for c in report.checks if not c.ok] + report.errors


# ---- OVS labs that hold a bug ------------------------------------------------------------

OVS_GOOD = """\
name: o
lab:
  hosts: [vm1, vm2]
  bridges:
    br0:
      kind: ovs
      protocols: OpenFlow13
      other_config: {mac-aging-time: 300}
      flows:
        - priority=100,tcp,tp_dst=5001,tcp_flags=+psh,actions=drop
        - priority=0,actions=NORMAL
  links:
    - ends: [vm1, br0]
      vm1: {ipv4: 10.20.0.1/24}
      br0: {ofport: 1}
    - ends: [vm2, br0]
      vm2: {ipv4: 10.20.0.2/24}
traffic:
  - {name: t, tcp: {from: vm1, to: vm2, port: 5001, timeout: 3}}
  - {name: u, udp: {from: vm1, to: vm2}}
expect:
  - ovs_rule: {bridge: br0, rule: 0, min: 1}
  - tcp_stalled: t
"""


def test_ovs_bridge_with_rules_loads():
    scn = loads(OVS_GOOD, "o.yaml")
    assert scn.lab.bridges == {"br0": "ovs"}
    spec = scn.lab.ovs["br0"]
    assert spec.protocols == ["OpenFlow13"] and spec.other_config == {"mac-aging-time": "300"}
    assert spec.flows[1] == "priority=0,actions=NORMAL"
    assert scn.lab.links[0].b.port.ofport == 1 and scn.lab.links[1].b.port is None
    assert scn.traffic[0].params["timeout"] == 3.0
    # the short form is still the same bridge, with nothing of its own
    old = loads(GOOD.replace("  links:\n    - ends: [vm1, vm2]\n", "  bridges: {br0: ovs}\n  links:\n    - ends: [vm1, vm2]\n"))
    assert old.lab.bridges == {"br0": "ovs"} and old.lab.ovs == {}


OVS_BAD = [
    ("      kind: ovs\n", "      kind: ovs\n      colour: red\n", "unknown key 'colour' in lab.bridges.br0", 7),
    ("      kind: ovs\n", "      kind: vpp\n", "lab.bridges.br0.kind must be linux or ovs", 6),
    ("protocols: OpenFlow13", "protocols: OpenFlow31", "no OpenFlow version 'OpenFlow31'", 7),
    ("        - priority=0,actions=NORMAL", "        - priority=0", "a rule needs actions=", 11),
    ("        - priority=0,actions=NORMAL", "        - priority=0,tpc,actions=NORMAL", "flows[1]: ovs-ofctl cannot use it", 11),
    ("{mac-aging-time: 300}", "{mac-aging-time: [1]}", "a value is a string or a number", 8),
    ("      br0: {ofport: 1}", "      br0: {ofport: 0}", "ofport must be 1..65279", 15),
    ("      br0: {ofport: 1}", "      br0: {vlan: 3}", "unknown key 'vlan' in lab.links[0].br0", 15),
    ("      vm2: {ipv4: 10.20.0.2/24}", "      vm2: {ipv4: 10.20.0.2/24}\n      br0: {ofport: 1}",
     "ofport 1 is already vm1's port on br0", 18),
    ("{bridge: br0, rule: 0, min: 1}", "{bridge: br1, rule: 0}", "no bridge 'br1'", 22),
    ("{bridge: br0, rule: 0, min: 1}", "{bridge: br0, rule: 2}", "ovs_rule.rule must be 0..1", 22),
    ("{bridge: br0, rule: 0, min: 1}", "{bridge: br0, rule: 0, at_least_acted: f}", "no fault 'f'", 22),
    ("  - tcp_stalled: t", "  - tcp_stalled: u", "tcp_stalled needs tcp traffic", 23),
    ("port: 5001, timeout: 3", "port: 5001, timeout: 0", "timeout must be 0.5..3600", 19),
]


@pytest.mark.parametrize("old,new,message,line", OVS_BAD, ids=[b[2][:30] for b in OVS_BAD])
def test_ovs_schema_errors_point_at_the_line(old, new, message, line):
    assert old in OVS_GOOD
    with pytest.raises(ScenarioError) as err:
        loads(OVS_GOOD.replace(old, new, 1), "bad.yaml")
    text = str(err.value)
    assert message in text, text
    assert text.startswith(f"bad.yaml:{line}:"), text


def test_a_flow_its_protocol_cannot_carry_is_refused():
    text = OVS_GOOD.replace("protocols: OpenFlow13", "protocols: OpenFlow10").replace(
        "priority=0,actions=NORMAL", "priority=0,actions=push_vlan:0x8100,NORMAL")
    with pytest.raises(ScenarioError, match=r"^o.yaml:11:11: lab.bridges.br0.flows\[1\]: ovs-ofctl cannot use it "
                                            r"with OpenFlow10: no usable protocol"):
        loads(text, "o.yaml")


def test_port_options_on_a_linux_bridge_are_refused():
    text = OVS_GOOD.replace("      kind: ovs\n      protocols: OpenFlow13\n      other_config: {mac-aging-time: 300}\n"
                            "      flows:\n        - priority=100,tcp,tp_dst=5001,tcp_flags=+psh,actions=drop\n"
                            "        - priority=0,actions=NORMAL\n", "      kind: linux\n")
    text = text.replace("  - ovs_rule: {bridge: br0, rule: 0, min: 1}\n", "")
    with pytest.raises(ScenarioError, match=r"^l.yaml:10:\d+: lab.links\[0\].br0: port options are for an ovs"):
        loads(text, "l.yaml")


def test_dump_flows_and_megaflows_are_read():
    from faultinj.labs import ovs

    table = ovs.parse_dump_flows(
        " cookie=0xfa110001, duration=5.1s, table=0, n_packets=54, n_bytes=81756, idle_age=1, "
        "priority=100,tcp,nw_dst=10.15.0.2,tp_dst=5001,tcp_flags=+psh actions=drop\n"
        " cookie=0xfa110002, duration=5.1s, table=0, n_packets=3261, n_bytes=2846250, priority=0 actions=NORMAL\n")
    assert [(r["cookie"], r["n_packets"], r["n_bytes"]) for r in table] == [
        (0xFA110001, 54, 81756), (0xFA110002, 3261, 2846250)]
    assert table[0]["rule"] == "priority=100,tcp,nw_dst=10.15.0.2,tp_dst=5001,tcp_flags=+psh actions=drop"
    mega = ovs.parse_megaflows(
        "recirc_id(0),in_port(2),eth_type(0x0800),ipv4(dst=10.15.0.2,proto=6,frag=no),tcp(dst=5001),"
        "tcp_flags(+psh), packets:53, bytes:80242, used:0.889s, flags:P., actions:drop\n")
    assert mega[0]["packets"] == 53 and mega[0]["bytes"] == 80242
    assert ovs.with_cookie("priority=0,actions=NORMAL", 1) == ("cookie=0xfa110002,priority=0,actions=NORMAL",
                                                                 0xFA110002)
    assert ovs.with_cookie("cookie=0x7,actions=drop", 0) == ("cookie=0x7,actions=drop", 7)


def test_ovs_psh_drop_rule_check_fails_without_the_rule(tmp_path):
    """The CVE-2023-5366 regression check proves itself once: with the drop rule aimed at a port
    nobody uses, PSH segments reach 5001, the transfer completes, the rule counts nothing."""
    text = (ROOT / "scenarios" / "ovs-psh-drop-rule.yaml").read_text()
    assert "tp_dst=5001,tcp_flags=+psh,actions=drop" in text
    f = tmp_path / "norule.yaml"
    f.write_text(text.replace("tp_dst=5001,tcp_flags=+psh,actions=drop", "tp_dst=5003,tcp_flags=+psh,actions=drop"))
    page = tmp_path / "norule.html"
    r = subprocess.run([sys.executable, "-m", "faultinj.cli", "run", str(f), "--pcap-dir", str(tmp_path), "--json",
                        "--report", str(page)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1, r.stderr
    [report] = json.loads(r.stdout)
    html = page.read_text()   # a failed run has its page too: the red checks and the rules' counts
    assert html.count('<tr class="check bad">') == 3 and "tp_dst=5003,tcp_flags=+psh actions=drop" in html
    failed = sorted(c["name"] for c in report["checks"] if not c["ok"])
    assert [n[:21] for n in failed] == ["count: tcp and dport ", "ovs_rule: packets of ", "tcp_stalled: filtered"]
    assert "dport == 5001 and psh" in failed[0] and "flows[0]" in failed[1], failed
    rules = report["ovs"]["br0"]["rules"]
    assert rules[0]["found"] and rules[0]["n_packets"] == 0 and rules[1]["n_packets"] > 1000
    assert any("tcp_flags" not in m["flow"] and "tp_dst" not in m["flow"] for m in report["ovs"]["br0"]["megaflows"])


def test_ovs_bridge_settings_and_port_options_reach_the_switch():
    from faultinj.labs import Topology

    text = OVS_GOOD.replace("      br0: {ofport: 1}",
                            "      br0: {ofport: 7, tag: 10, other_config: {priority-tags: true}}").replace(
        "      vm2: {ipv4: 10.20.0.2/24}", "      vm2: {ipv4: 10.20.0.2/24}\n      br0: {ofport: 9, tag: 10}")
    topo = Topology(loads(text, "o.yaml").lab)
    vsctl = lambda *a: subprocess.run(["ovs-vsctl", *a], capture_output=True, text=True, check=True).stdout.strip()
    try:
        topo.up()
        br = topo.ovs_bridges[0]
        assert vsctl("get", "bridge", br, "protocols") == "[OpenFlow13]"
        assert vsctl("get", "bridge", br, "other_config:mac-aging-time") == '"300"'
        p1, p2 = f"{topo.prefix}p1", f"{topo.prefix}p2"
        assert vsctl("get", "interface", p1, "ofport") == "7" and vsctl("get", "interface", p2, "ofport") == "9"
        assert vsctl("get", "port", p1, "tag") == "10" and vsctl("get", "port", p1, "other_config:priority-tags") == '"true"'
        sw = topo.ovs_report()["br0"]
        assert [r["n_packets"] for r in sw["rules"]] == [0, sw["rules"][1]["n_packets"]] and all(r["found"] for r in sw["rules"])
        # same VLAN on both ports: the hosts still reach each other through the bridge
        ping = subprocess.run(["ip", "netns", "exec", topo.netns("vm1"), "ping", "-c", "2", "-i", "0.2", "-W", "2",
                               "10.20.0.2"], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        topo.down()
    assert br not in vsctl("list-br").split()
