"""What a new user tripped on (issue 25): faults found whatever their namespace, hints that work as
printed, one scenario reference that cannot fall behind the schema, labs that cannot work refused,
verdicts that say which fault and interface."""

from __future__ import annotations

import json
from pathlib import Path
import re
import shlex
import subprocess

import pytest
from conftest import cli_runner, ns_run

import faultinj
from faultinj.cli import app
from faultinj.errors import ExitStatus

runner = cli_runner()


def invoke(*args):
    return runner.invoke(app, list(args))


# ---- 2. set, clear and journal find a fault by id alone, or by an interface unique among the faults

def test_set_clear_journal_find_a_fault_in_a_namespace_without_netns(lab):
    """`set psh-ratio=5 IFACE` for the one fault on IFACE, which sits in the lab's namespace; `set
    ... --id ID` with no interface; journal and clear the same."""
    a = lab.a
    rec = faultinj.apply("psh-ratio=10", a.ifname, netns_name=a.netns, seed=1)
    r = invoke("set", "psh-ratio=5", a.ifname)
    assert r.exit_code == 0, r.output
    assert f"set {rec.id}: psh-ratio=5@tc-egress on {a.netns}/{a.ifname}" in r.stdout
    r = invoke("set", "psh-ratio=7", "--id", rec.id)
    assert r.exit_code == 0, r.output
    r = invoke("set", "--id", rec.id, "psh-ratio=6", a.ifname)
    assert r.exit_code == 0, r.output
    [st] = [s for s in faultinj.status() if s.record.id == rec.id]
    assert st.record.value == 6
    r = invoke("set", "drop=0.5", "--id", rec.id)   # another fault's name: said, not done
    assert r.exit_code == ExitStatus.STATE and "is psh-ratio=6" in r.stderr
    r = invoke("set", "psh-ratio=6", "--id", rec.id, a.ifname + "x")   # an interface not its own
    assert r.exit_code == ExitStatus.STATE and f"not on {a.ifname}x" in r.stderr
    r = invoke("journal", a.ifname, "--json")
    assert r.exit_code == 0, r.output
    assert "1 faults" not in r.stderr
    r = invoke("clear", a.ifname, "--json")
    assert r.exit_code == 0, r.output
    assert [c["id"] for c in json.loads(r.stdout)] == [rec.id]
    assert not [s for s in faultinj.status() if s.record.id == rec.id]


def test_an_interface_name_in_two_namespaces_asks_which(lab):
    """The same interface name with faults in two namespaces: set, clear and journal ask for --netns
    or --id (nothing changed); with --netns each finds its own."""
    a, b = lab.a, lab.b
    subprocess.run(["ip", "-n", b.netns, "link", "add", a.ifname, "type", "veth", "peer", "name", a.ifname + "p"],
                   check=True)
    subprocess.run(["ip", "-n", b.netns, "link", "set", a.ifname, "up"], check=True)
    ra = faultinj.apply("drop=0", a.ifname, netns_name=a.netns, seed=1)
    rb = faultinj.apply("drop=0", a.ifname, netns_name=b.netns, seed=1)
    for args in (("set", "drop=0.1", a.ifname), ("clear", a.ifname), ("journal", a.ifname)):
        r = invoke(*args)
        assert r.exit_code == ExitStatus.STATE, (args, r.output)
        assert "2 namespaces" in r.stderr and ra.id in r.stderr and rb.id in r.stderr
    r = invoke("set", "drop=0.1", a.ifname, "--netns", b.netns, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["id"] == rb.id
    values = {s.record.id: s.record.value for s in faultinj.status()}
    assert values[ra.id] == 0 and values[rb.id] == 0.1


def test_set_without_interface_nor_id_says_what_to_give():
    r = invoke("set", "psh-ratio=5")
    assert r.exit_code == ExitStatus.USAGE and "--id ID" in r.stderr


# ---- 3. every hint names the namespace and works as printed --------------------------------

def _quoted_commands(line: str) -> list[str]:
    return [c for c in re.findall(r"'([^']+)'", line) if c.split()[0] in ("ip", "tc", "ethtool", "nsenter")]


def test_offload_hints_name_the_namespace_and_work_as_printed(offload_lab):
    """psh-ratio and corrupt csum=bad at a namespaced veth's tc egress: apply's hints are commands
    that, pasted into a shell as printed, succeed and remove the cause (status has nothing more to say)."""
    a = offload_lab.a
    said = []
    for spec in ("psh-ratio=10@egress", "corrupt=1%,csum=bad@egress"):
        r = invoke("apply", spec, a.ifname, "--netns", a.netns)
        assert r.exit_code == 0, r.output
        said += [ln for ln in r.stderr.splitlines() if "fix:" in ln]
    commands = [c for line in said for c in _quoted_commands(line)]
    assert len(said) == 2 and len(commands) == 3, said
    assert all(a.netns in c for c in commands), commands
    for c in commands:
        done = subprocess.run(c, shell=True, capture_output=True, text=True)
        assert done.returncode == 0, (c, done.stderr)
    assert not [w for s in faultinj.status() for w in (s.warnings or ())]
    shown = ns_run(a.netns, "ip", "-d", "link", "show", a.ifname).stdout
    assert "gso_max_segs 1 " in shown


def test_a_taken_prio_names_the_namespace_in_its_hint(lab):
    """--prio already held: the 'tc filter show' it points to lists the filter as printed."""
    a = lab.a
    faultinj.apply("drop=0@ingress", a.ifname, netns_name=a.netns, prio=7, attach_kind="netlink")
    r = invoke("apply", "drop=0@ingress", a.ifname, "--netns", a.netns, "--prio", "7")
    assert r.exit_code == ExitStatus.STATE
    [c] = _quoted_commands(r.stderr)
    done = subprocess.run(c, shell=True, capture_output=True, text=True)
    assert done.returncode == 0 and "pref 7" in done.stdout, (c, done.stderr)


# ---- 5. a lab that cannot work is refused at file:line:col; an empty selection says so -------

LAB = """name: nonsense
lab:
  hosts: [a, b, c]
  bridges: {br0: linux}
  links:
    - ends: [a, b]
      a: {ipv4: 10.50.0.1/24}
      b: {ipv4: B_ADDR}
    - ends: [c, br0]
      c: {ipv4: 10.70.0.3/24}
    - ends: [a, br0]
      a: {name: eth1, ipv4: A_BR0}
traffic:
  - {name: t, udp: {from: a, to: TO, count: 10}}
capture:
  - {name: rx, host: CAP_HOST, interface: eth0}
expect:
  - loss: {traffic: t, p: 0}
"""


def _lab_file(**subst) -> str:
    text = LAB
    for k, v in {"B_ADDR": "10.50.0.2/24", "A_BR0": "10.70.0.1/24", "TO": "b", "CAP_HOST": "b", **subst}.items():
        text = text.replace(k, v)
    return text


@pytest.mark.parametrize("subst,where,said", [
    ({"B_ADDR": "10.50.0.1/24"}, "f.yaml:8:17:", "lab.links[0].b.ipv4: 10.50.0.1 is already lab.links[0].a's"),
    ({"A_BR0": "10.70.0.3/24"}, "f.yaml:12:29:", "10.70.0.3 is already lab.links[1].c's address on br0"),
    ({"B_ADDR": "10.60.0.2/24"}, "f.yaml:14:34:", "b's 10.60.0.2/24 is not in a subnet a has on the same link"),
    ({"TO": "c", "A_BR0": "10.80.0.1/24"}, "f.yaml:14:34:", "c's 10.70.0.3/24 is not in a subnet a has"),
    ({"CAP_HOST": "d"}, "f.yaml:16:22:", "capture[0].host: no host 'd'"),
])
def test_a_lab_that_cannot_work_is_refused_at_its_line(subst, where, said):
    from faultinj.scenario import loads
    from faultinj.scenario.schema import ScenarioError

    with pytest.raises(ScenarioError) as exc:
        loads(_lab_file(**subst), "f.yaml")
    assert any(ln.startswith(where) and said in ln for ln in exc.value.all_lines), exc.value.all_lines


def test_a_lab_that_can_work_loads():
    from faultinj.scenario import loads

    scn = loads(_lab_file(), "f.yaml")
    assert scn.address("b") == "10.50.0.2"
    loads(_lab_file(TO="c"), "f.yaml")   # a and c share br0 in 10.70.0.0/24


def test_an_expectation_that_matched_nothing_says_so_not_nan():
    from faultinj.scenario.expect import RunData, evaluate
    from faultinj.scenario.schema import ExpectEntry

    checks = [evaluate(ExpectEntry("fraction", {"capture": "rx", "of": "tcp and data", "having": "psh", "p": 0.1}, 1),
                       RunData(packets={"rx": []})),
              evaluate(ExpectEntry("fault_ratio", {"fault": "psh", "ratio": 10}, 1),
                       RunData(counters={"psh": {"seen": 0, "matched": 0, "acted": 0}}))]
    assert [c.observed for c in checks] == ["no packet matched `tcp and data` at rx", "psh matched no packet"]
    assert not any(c.ok for c in checks) and not any("nan" in c.observed for c in checks)


# ---- 6. verify's verdict names the fault and the interface; a guest's report its lab prefix ---

def test_verify_verdict_lines_name_the_fault_id_and_the_interface(lab):
    from faultinj.verify import verify

    a, b = lab.a, lab.b
    rec = faultinj.apply("psh-ratio=10", a.ifname, netns_name=a.netns, seed=1)
    res = verify(b.ifname, netns_name=b.netns, duration="0.3s", of="tcp and data", having="psh", ratio=10,
                 fault_id=rec.id)
    names = [c.name for c in res.checks]
    assert names[0] == f"fraction: psh among tcp and data at {b.netns}/{b.ifname}", names
    assert names[1] == f"fault_ratio: acted/matched of {rec.id}", names
    assert res.checks[0].observed == f"no packet matched `tcp and data` at {b.netns}/{b.ifname}"


def test_a_guest_runs_report_keeps_the_guests_lab_prefix():
    """lab.guest: the report shows the prefix the guest's namespaces (journeys, progress) carry, and
    the guest it ran in, by this machine's name for it."""
    from faultinj.scenario import html
    from faultinj.scenario.inguest import as_here
    from faultinj.verdict import Check, Verdict

    made_inside = Verdict("s", path="/tmp/guest-work/scenario.yaml", prefix="fi1a2b3c4", seconds=3.0,
                          checks=[Check("c", True, "1", "1")])
    r = as_here(made_inside, "scenarios/x.yaml", "fi9f8e7d6-lab", 41.0)
    assert (r.prefix, r.guest, r.path, r.seconds) == ("fi1a2b3c4", "fi9f8e7d6-lab", "scenarios/x.yaml", 41.0)
    page = html._report_section(html._Svg(), 0, r)
    assert "lab prefix <code>fi1a2b3c4</code> in guest <code>fi9f8e7d6-lab</code>" in page
    assert r.to_json()["lab_prefix"] == "fi1a2b3c4" and r.to_json()["guest"] == "fi9f8e7d6-lab"


# ---- 4. one scenario reference, made from the schema's tables, that cannot fall behind ---------

def test_every_scenario_key_and_kind_is_described():
    """Every key, traffic kind and expectation kind the schema takes has its sentence in
    scenario/reference.py (a kind another change adds fails here until it is described)."""
    from faultinj.scenario import reference

    assert reference.undocumented() == []


def test_the_reference_check_fails_on_an_undescribed_kind_or_key(monkeypatch):
    from faultinj.scenario import expectations, reference, schema

    for kind in ("brand_new", "said"):   # the classes below register themselves; gone after the test
        monkeypatch.setitem(expectations.KINDS, kind, None)

    class BrandNew(expectations.Expectation):
        kind = "brand_new"
        keys = {"capture": "the capture", "of": ""}
        required = frozenset({"capture"})

    class Said(expectations.Expectation):
        kind = "said"
        what = "described"
        keys = {"capture": "the capture", "of": " "}

    monkeypatch.setitem(schema.TRAFFIC_KINDS, "tcp", (schema.TRAFFIC_KINDS["tcp"][0],
                                                     schema.TRAFFIC_KINDS["tcp"][1] | {"window"}))
    assert reference.undocumented() == ["traffic tcp.window: not described", "expect brand_new: not described",
                                        "expect brand_new.of: not described", "expect said.of: not described"]


def test_docs_scenarios_md_is_the_reference_and_run_schema_prints_it():
    from pathlib import Path

    from faultinj.scenario import expectations, reference, schema

    text = reference.render()
    doc = Path(__file__).parent.parent / "docs" / "scenarios.md"
    assert doc.read_text() == text, "regenerate: faultinj run --schema > docs/scenarios.md"
    for kind in [*expectations.KINDS, *schema.TRAFFIC_KINDS]:
        assert f"### `{kind}`" in text
    for key in ("having", "interval", "v6", "size", "rate", "port", "connections", "timeout", "per_connection"):
        assert f"| `{key}` |" in text
    r = invoke("run", "--schema")
    assert r.exit_code == 0 and r.stdout == text


def test_the_readme_names_every_expectation_and_traffic_kind():
    from pathlib import Path

    from faultinj.scenario import expectations, schema

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert [k for k in [*expectations.KINDS, *schema.TRAFFIC_KINDS] if f"`{k}`" not in readme] == []
    assert "docs/scenarios.md" in readme


# ---- 7. smaller things -------------------------------------------------------------------------

def _demo_packages() -> list[str]:
    """The apt packages run.sh checks for the demo (its first APT_PACKAGES line)."""
    text = (Path(__file__).parent.parent / "run.sh").read_text()
    return re.search(r'^APT_PACKAGES="([^"]+)"', text, re.M).group(1).split()


def test_run_sh_demo_installs_only_what_changed_and_no_test_extras(tmp_path):
    """./run.sh demo with a venv whose python and faultinj only log what they are asked: the first
    run installs '.' (not '.[test]'), the next installs nothing, a changed tree installs again, and
    an install with the test extras serves the demo too. (~1 s: no pip, no demo.)"""
    import os
    from pathlib import Path

    if subprocess.run(["dpkg", "-s", *_demo_packages()], capture_output=True).returncode:
        pytest.skip("the demo's apt packages are not all installed: run.sh would install them")
    venv, log = tmp_path / "venv", tmp_path / "log"
    (venv / "bin").mkdir(parents=True)
    for tool in ("python", "faultinj"):
        (venv / "bin" / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >>{log}\n')
        (venv / "bin" / tool).chmod(0o755)
    run_sh = Path(__file__).parent.parent / "run.sh"

    def demo() -> list[str]:
        log.write_text("")
        done = subprocess.run(["bash", str(run_sh), "demo", "--seed", "3"], capture_output=True, text=True,
                              env={**os.environ, "FAULTINJ_VENV": str(venv)}, timeout=120)
        assert done.returncode == 0, done.stderr
        return log.read_text().splitlines()

    first = demo()
    assert "python -m pip install -q ." in first and not [ln for ln in first if "[test]" in ln]
    assert first[-1] == "faultinj demo --seed 3"
    assert demo() == ["faultinj demo --seed 3"]
    stamp = venv / ".faultinj-installed"
    built_from = stamp.read_text().strip()
    stamp.write_text("0" * 16 + "\n")   # what a changed tree hashes to
    assert "python -m pip install -q ." in demo()
    stamp.write_text(built_from + "[test]\n")   # the test path's install has everything the demo needs
    assert demo() == ["faultinj demo --seed 3"]


def test_replay_out_in_a_missing_directory_blames_the_directory(tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    from faultinj import pcap
    from faultinj.errors import from_foreign

    frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
    capture = tmp_path / "in.pcap"
    pcap.write(str(capture), [pcap.Record(1_700_000_000_000_000_000, len(frame), frame)])
    r = invoke("replay", str(capture), "drop=1", "--out", "/nonexistent-dir-fi25/x.pcap")
    assert r.exit_code == ExitStatus.USAGE
    assert r.stderr.strip() == ("faultinj: error: no such directory: /nonexistent-dir-fi25 (for "
                                "/nonexistent-dir-fi25/x.pcap): create it first")
    # any other output path a command writes (verify --pcap, trace --pcap, --junit): the same words
    said = str(from_foreign(FileNotFoundError(2, "No such file or directory", "/nonexistent-dir-fi25/j.xml")))
    assert said.startswith("no such directory: /nonexistent-dir-fi25")
    assert str(from_foreign(FileNotFoundError(2, "x", str(tmp_path / "gone.pcap")))).startswith("no such file")


def test_apply_help_shows_every_filter():
    from faultinj.faults.match import KEYS

    r = invoke("apply", "--help")
    assert r.exit_code == 0
    assert [k for k in KEYS if f"{k}=" not in r.stdout] == []


def test_journal_says_one_fault_not_one_faults(lab):
    rec = faultinj.apply("drop=0", lab.a.ifname, netns_name=lab.a.netns, seed=1)
    r = invoke("journal", "--id", rec.id)
    assert r.exit_code == 0 and "0 events from 1 fault\n" in r.stderr, r.stderr


def test_clear_all_says_how_many_and_whose_and_mine_clears_only_yours(lab):
    """Two faults, one recorded as another user's: --mine clears only this user's; --all clears the
    other and says whose it was."""
    from faultinj.inject import state

    a = lab.a
    mine = faultinj.apply("drop=0", a.ifname, netns_name=a.netns, seed=1)
    theirs = faultinj.apply("drop=0@xdp", a.ifname, netns_name=a.netns, seed=1)
    assert mine.user == state.current_user() != ""
    with state.locked():
        rec = next(r for r in state.records() if r.id == theirs.id)
        rec.user = "someone-else"
        state.save(rec)
    r = invoke("clear", "--mine", "--netns", a.netns)
    assert r.exit_code == 0, r.output
    assert f"cleared {mine.id}" in r.stdout and theirs.id not in r.stdout
    assert r.stdout.splitlines()[-1] == "cleared 1 fault (1 yours)"
    r = invoke("clear", "--all", "--netns", a.netns)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == ("cleared 1 fault (1 someone-else's); 'faultinj clear --mine' clears "
                                         "only yours")
    assert not faultinj.status()


def test_the_report_shows_no_path_of_the_machine_it_was_made_on(tmp_path, monkeypatch):
    """The scenario file relative to where faultinj ran, the captures relative to the report."""
    from faultinj.scenario import html
    from faultinj.verdict import Check, Verdict

    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    r = Verdict("s", path=str(tmp_path / "scenarios" / "x.yaml"), prefix="fi1", checks=[Check("c", True, "1", "1")],
                pcaps={"rx": str(tmp_path / "out" / "rx.pcap")})
    page = Path(html.write([r], str(tmp_path / "out" / "report.html"))).read_text()
    assert str(tmp_path) not in page
    assert "scenarios/x.yaml" in page and "<code>rx.pcap</code>" in page


def test_a_capture_on_a_missing_interface_points_at_the_namespaces_links(lab):
    a = lab.a
    r = invoke("verify", "nosuch0", "--netns", a.netns, "--having", "psh", "--p", "0.1", "--duration", "1s")
    assert r.exit_code == ExitStatus.USAGE
    [c] = _quoted_commands(r.stderr)
    done = subprocess.run(c, shell=True, capture_output=True, text=True)
    assert done.returncode == 0 and a.ifname in done.stdout, (c, done.stderr)


def test_a_hint_for_a_namespace_file_goes_through_nsenter(offload_lab):
    a = offload_lab.a
    r = invoke("apply", "psh-ratio=10@egress", a.ifname, "--netns-path", f"/run/netns/{a.netns}")
    faultinj.clear(netns_path=f"/run/netns/{a.netns}")   # the fixture clears by namespace name
    assert r.exit_code == 0, r.output
    commands = _quoted_commands(r.stderr)
    assert commands and all(c.startswith(f"nsenter --net=/run/netns/{a.netns} ") for c in commands), commands
    done = subprocess.run(commands[0], shell=True, capture_output=True, text=True)
    assert done.returncode == 0, (commands[0], done.stderr)
    assert "gso_max_segs 1 " in ns_run(a.netns, "ip", "-d", "link", "show", a.ifname).stdout
