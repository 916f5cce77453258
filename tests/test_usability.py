"""What a new user tripped on (issue 25): faults found whatever their namespace, hints that work as
printed, one scenario reference that cannot fall behind the schema, labs that cannot work refused,
verdicts that say which fault and interface."""

from __future__ import annotations

import json
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

@pytest.fixture
def offload_lab():
    """A veth as it comes (GSO up to 65535 segments, tx checksum offload on), in namespaces."""
    from conftest import _clear_quietly
    from faultinj.inject.lab import Lab, LinkSettings

    lab = Lab()
    try:
        lab.up(a_settings=LinkSettings(tx_checksum=True))
        yield lab
    finally:
        _clear_quietly(lab)
        lab.down()


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
