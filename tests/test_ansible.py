"""The Ansible collection (ansible/faultinj/net) built with ansible-galaxy and driven by a real
ansible-playbook against two hosts reached over SSH.

The "hosts" are two network namespaces joined by a veth (eth0 in each), each with its own sshd on
its own loopback, reached with ssh's ProxyCommand, as tests/test_remote.py's ssh hosts are (no
address on this machine's namespace). Each sshd gives its sessions faultinj state of their own
(sshd_config SetEnv), and runs in the mount namespace `ip netns exec` made for it, with a bpffs of
its own: faultinj there is as on another machine. The kernel's own view of each host's eth0
(BPF_PROG_QUERY and the tc filters) and pings between the hosts judge what the modules did.

Costs (measured on this machine, 2 cores shared, load ~9): building and installing the
collection and starting the two sshds ~6 s (once); each ansible-playbook run 4-7 s: the README
playbook test (8 runs) ~56 s, the killed-playbook test ~16 s, the scenario test (3 runs, two of
them building a lab) ~20 s, the named-namespace test (4 `ansible` calls) ~30 s; the whole file
~130 s.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import hook_prog_ids
from faultinj.stats import binomial_consistent

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """The collection built from this repository and installed into a directory of its own."""
    galaxy = BIN / "ansible-galaxy"
    if not galaxy.exists():
        pytest.fail("ansible-core missing: pip install -e '.[test]'")
    d = tmp_path_factory.mktemp("collection")
    subprocess.run([str(galaxy), "collection", "build", str(ROOT / "ansible/faultinj/net"), "--output-path", str(d)],
                   check=True, capture_output=True)
    (tarball,) = d.glob("faultinj-net-*.tar.gz")
    subprocess.run([str(galaxy), "collection", "install", "-p", str(d / "installed"), str(tarball)],
                   check=True, capture_output=True)
    return d / "installed"


class Hosts:
    """Two namespaces h1, h2 joined eth0 to eth0 (10.N.0.1, 10.N.0.2), each with an sshd."""

    def __init__(self, tmp: Path):
        self.tag = secrets.token_hex(3)
        self.tmp = tmp
        self.ns = {"h1": f"fians-{self.tag}1", "h2": f"fians-{self.tag}2"}
        net = 100 + secrets.randbelow(150)
        self.ip = {"h1": f"10.{net}.7.1", "h2": f"10.{net}.7.2"}
        self.daemons: list[subprocess.Popen] = []

    def up(self):
        run = lambda *c: subprocess.run(c, check=True, capture_output=True)  # noqa: E731
        for ns in self.ns.values():
            run("ip", "netns", "add", ns)
        a, b = f"fa{self.tag}", f"fb{self.tag}"
        run("ip", "link", "add", a, "netns", self.ns["h1"], "type", "veth", "peer", "name", b, "netns", self.ns["h2"])
        for h, tmpname in (("h1", a), ("h2", b)):
            for cmd in (["link", "set", tmpname, "name", "eth0"], ["addr", "add", f"{self.ip[h]}/24", "dev", "eth0"],
                        ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"]):
                run("ip", "-n", self.ns[h], *cmd)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # sshd's privilege separation directory
        self.key = self.tmp / "id"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        (self.tmp / "authorized_keys").write_text((self.tmp / "id.pub").read_text())
        for h, ns in self.ns.items():
            d = self.tmp / h
            d.mkdir()
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "hostkey"))
            (d / "sshd_config").write_text(textwrap.dedent(f"""\
                Port 2222
                ListenAddress 127.0.0.1
                HostKey {d}/hostkey
                PidFile {d}/sshd.pid
                AuthorizedKeysFile {self.tmp}/authorized_keys
                PermitRootLogin prohibit-password
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                UsePAM no
                StrictModes no
                Subsystem sftp internal-sftp
                SetEnv FAULTINJ_RUN_DIR={self.run_dir(h)} FAULTINJ_PIN_ROOT=/sys/fs/bpf/faultinj-ans-{self.tag}{h}
                """))
            self.daemons.append(subprocess.Popen(["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f",
                                                  str(d / "sshd_config")], stderr=subprocess.DEVNULL))
        for h in self.ns:   # until each answers
            for _ in range(50):
                if self.ssh(h, "true", check=False).returncode == 0:
                    break
                time.sleep(0.1)
        return self

    def run_dir(self, h: str) -> str:
        return f"/run/faultinj-ans-{self.tag}{h}"

    def ssh_opts(self, h: str) -> list[str]:
        return ["-i", str(self.key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", f"ProxyCommand=ip netns exec {self.ns[h]} socat - TCP:127.0.0.1:2222"]

    def ssh(self, h: str, cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", *self.ssh_opts(h), f"root@{h}", cmd], capture_output=True, text=True,
                              check=check, timeout=120)

    def faultinj(self, h: str, *args: str) -> subprocess.CompletedProcess:
        """faultinj on host h (its own state), as a user there would run it."""
        return self.ssh(h, " ".join([sys.executable, "-m", "faultinj.cli", *args]), check=False)

    def inventory(self) -> Path:
        hosts = {h: {"ansible_host": h, "ansible_user": "root", "ansible_ssh_private_key_file": str(self.key),
                     "ansible_ssh_common_args": " ".join(
                         ["-o StrictHostKeyChecking=no", "-o UserKnownHostsFile=/dev/null",
                          f"-o ProxyCommand='ip netns exec {self.ns[h]} socat - TCP:127.0.0.1:2222'"]),
                     "ansible_python_interpreter": sys.executable} for h in self.ns}
        p = self.tmp / "inventory.json"
        p.write_text(json.dumps({"lab": {"hosts": hosts}}))
        return p

    def ping(self, frm: str, to: str, count: int) -> int:
        r = subprocess.run(["ip", "netns", "exec", self.ns[frm], "ping", "-n", "-q", "-c", str(count), "-i", "0.01",
                            "-W", "1", self.ip[to]], capture_output=True, text=True)
        m = re.search(r"(\d+) received", r.stdout)
        return int(m.group(1)) if m else 0

    def progs(self, h: str) -> list[int]:
        """What runs on the host's eth0 at tc egress, as the kernel says (not faultinj's records)."""
        return hook_prog_ids(self.ns[h], "eth0", "egress")

    def down(self):
        for p in self.daemons:
            p.terminate()
            p.wait()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for h in self.ns:
            shutil.rmtree(self.run_dir(h), ignore_errors=True)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, private_state):
    if not os.path.exists(SSHD):
        pytest.fail("sshd missing: run.sh test installs openssh-server")
    h = Hosts(tmp_path_factory.mktemp("ansible-hosts"))
    try:
        yield h.up()
    finally:
        h.down()   # the namespaces take the programs with them


RESULT = re.compile(r"^(ok|changed|fatal|failed): \[(h\d)\](?:: FAILED!)? => (\{.*\})$")
RECAP = re.compile(r"^(h\d)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


class Play:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.rc, self.out = proc.returncode, proc.stdout + proc.stderr
        self.results: dict[str, list[dict]] = {}
        self.recap: dict[str, dict] = {}
        for line in self.out.splitlines():
            m = RESULT.match(line)
            if m:
                self.results.setdefault(m.group(2), []).append({"status": m.group(1), **json.loads(m.group(3))})
            m = RECAP.match(line)
            if m:
                self.recap[m.group(1)] = {"changed": int(m.group(3)), "failed": int(m.group(5)),
                                          "unreachable": int(m.group(4))}

    def first(self, h: str) -> dict:
        return self.results[h][0]


def _env(collection: Path, tmp: Path) -> dict:
    return {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collection), "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_HOME": str(tmp / "ansible-home"), "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=no", "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
            "ANSIBLE_CALLBACK_FORMAT_PRETTY": "false", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "False"}


def playbook(collection, hosts, path: Path, *args: str) -> Play:
    return Play(subprocess.run([str(BIN / "ansible-playbook"), "-v", "-i", str(hosts.inventory()), str(path), *args],
                               capture_output=True, text=True, timeout=600, env=_env(collection, hosts.tmp)))


def _readme_playbook(tmp: Path) -> Path:
    text = README.read_text()
    start = text.index("## Ansible")
    body = re.compile(r"```yaml\n(.*?)```", re.S).search(text, start).group(1)
    p = tmp / "readme-playbook.yml"
    p.write_text(body)
    return p


@pytest.mark.slow   # over ~30 s (tests/README.md)
def test_the_readme_playbook_applies_sets_and_removes_faults_on_two_hosts(collection, hosts, tmp_path):
    book = _readme_playbook(tmp_path)
    assert hosts.progs("h1") == [] and hosts.progs("h2") == []
    # 1. applied on both
    play = playbook(collection, hosts, book)
    assert play.rc == 0, play.out
    assert {h: r["changed"] for h, r in play.recap.items()} == {"h1": 1, "h2": 1}, play.out
    first = {h: play.first(h) for h in ("h1", "h2")}
    for h, r in first.items():
        assert r["action"] == "applied" and r["spec"] == "drop=0.3,proto=icmp@tc-egress" and r["seed"] == 7
        assert r["counters"]["seen"] == 0 and r["state"] == "active"
    prog = {h: hosts.progs(h) for h in ("h1", "h2")}
    assert all(len(p) == 1 for p in prog.values()), prog      # the kernel has one program on each eth0
    # 2. traffic, then the same playbook: no change, the counters say what happened
    n = 400
    replies = hosts.ping("h1", "h2", n)
    play = playbook(collection, hosts, book)
    assert play.rc == 0 and {h: r["changed"] for h, r in play.recap.items()} == {"h1": 0, "h2": 0}, play.out
    again = {h: play.first(h) for h in ("h1", "h2")}
    assert all(again[h]["action"] == "none" and again[h]["id"] == first[h]["id"] for h in again)
    c1, c2 = again["h1"]["counters"], again["h2"]["counters"]
    # h1 dropped requests, h2 replies to the rest: every lost reply is one of theirs
    assert c1["seen"] >= n and replies == n - c1["acted"] - c2["acted"], (replies, c1, c2)
    assert binomial_consistent(c1["acted"], c1["matched"], 0.3), c1
    assert not binomial_consistent(c1["acted"], c1["matched"], 0.1), c1    # a check that can fail
    # 3. another value: changed live (faultinj set: the same id and kernel program, counters kept)
    play = playbook(collection, hosts, book, "-e", "loss=50%")
    assert play.rc == 0 and {h: r["changed"] for h, r in play.recap.items()} == {"h1": 1, "h2": 1}, play.out
    for h in ("h1", "h2"):
        r = play.first(h)
        assert r["action"] == "set" and r["id"] == first[h]["id"] and r["spec"] == "drop=0.5,proto=icmp@tc-egress"
        assert r["counters"]["seen"] >= again[h]["counters"]["seen"]
        assert hosts.progs(h) == prog[h]
    # 4. check mode: says what it would do, does nothing
    play = playbook(collection, hosts, book, "--check", "-e", "state=absent")
    assert play.rc == 0 and play.recap["h1"]["changed"] == 1 and play.first("h1")["action"] == "remove", play.out
    assert hosts.progs("h1") == prog["h1"]
    play = playbook(collection, hosts, book, "--check", "-e", "loss=10%")
    assert play.first("h1")["action"] == "set" and play.first("h1")["spec"] == "drop=0.5,proto=icmp@tc-egress"
    # 5. a bad spec: the task fails with faultinj's one line, nothing changed
    play = playbook(collection, hosts, book, "-e", "loss=150%")
    assert play.rc == 2 and play.recap["h1"]["failed"] == 1, play.out
    msg = play.first("h1")["msg"]
    from faultinj.faults import parse_spec

    with pytest.raises(Exception) as err:
        parse_spec("drop=150%,proto=icmp")
    assert msg == str(err.value) and "\n" not in msg, msg
    assert hosts.progs("h1") == prog["h1"]
    # 6. state absent: removed on both, with their final counters; then nothing more to remove
    play = playbook(collection, hosts, book, "-e", "state=absent")
    assert play.rc == 0 and {h: r["changed"] for h, r in play.recap.items()} == {"h1": 1, "h2": 1}, play.out
    for h in ("h1", "h2"):
        (gone,) = play.first(h)["removed"]
        assert gone["id"] == first[h]["id"] and gone["counters"]["seen"] >= again[h]["counters"]["seen"] > 0
        assert hosts.progs(h) == []
    play = playbook(collection, hosts, book, "-e", "state=absent")
    assert play.rc == 0 and {h: r["changed"] for h, r in play.recap.items()} == {"h1": 0, "h2": 0}, play.out
    assert hosts.ping("h1", "h2", 20) == 20


KILLED = """\
- hosts: lab
  gather_facts: false
  tasks:
    - faultinj.net.fault: {spec: "drop=100%,proto=icmp", interface: eth0, duration: 4s}
    - name: long
      ansible.builtin.command: sleep 15
"""


def test_a_playbook_killed_mid_run_leaves_nothing_the_next_command_does_not_reap(collection, hosts, tmp_path):
    book = tmp_path / "killed.yml"
    book.write_text(KILLED)
    proc = subprocess.Popen([str(BIN / "ansible-playbook"), "-i", str(hosts.inventory()), str(book)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(collection, hosts.tmp), start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("TASK [long]"):
                break
        time.sleep(1.0)   # the sleep task has started on the hosts
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert any(ln.startswith("TASK [long]") for ln in seen), "".join(seen)
    # the faults outlived the playbook, acting until their deadline, in the kernel
    assert hosts.progs("h1") and hosts.progs("h2")
    assert hosts.ping("h1", "h2", 5) == 0
    time.sleep(4.5)
    assert hosts.ping("h1", "h2", 5) == 5        # past the deadline: the programs pass everything
    for h in ("h1", "h2"):
        st = json.loads(hosts.faultinj(h, "status", "--json").stdout)
        assert [f["state"] for f in st] == ["expired"], st
        r = hosts.faultinj(h, "reap", "--json")   # the next faultinj command there
        assert r.returncode == 0 and len(json.loads(r.stdout)) == 1, r.stdout + r.stderr
        assert hosts.progs(h) == [] and json.loads(hosts.faultinj(h, "status", "--json").stdout) == []


SCENARIO = """\
name: icmp_cut
lab:
  hosts: [a, b]
  links:
    - ends: [a, b]
      a: {{ipv4: 10.77.0.1/24}}
      b: {{ipv4: 10.77.0.2/24}}
faults:
  - {{name: cut, spec: "drop={p},proto=icmp", host: a, interface: eth0, seed: 3}}
traffic:
  - {{name: pings, ping: {{from: a, to: b, count: 20, interval: 0.02}}}}
capture:
  - {{name: rx, host: b, interface: eth0, direction: in}}
expect:
  - count: {{capture: rx, of: echo_request, equals: 0}}
  - counter: {{fault: cut, counter: acted, equals: 20}}
"""

SCENARIO_PLAY = """\
- hosts: h1
  gather_facts: false
  tasks:
    - faultinj.net.scenario: {{path: "{path}", pcap_dir: "{pcaps}"}}
"""


def test_the_scenario_module_returns_verdicts_and_fails_naming_the_failed_expectations(collection, hosts, tmp_path):
    for p, ok in (("100%", True), ("0%", False)):
        scn = tmp_path / f"scn-{ok}.yaml"
        scn.write_text(SCENARIO.format(p=p))
        book = tmp_path / f"scn-{ok}.yml"
        book.write_text(SCENARIO_PLAY.format(path=scn, pcaps=tmp_path / "pcaps"))
        play = playbook(collection, hosts, book)
        r = play.first("h1")
        if ok:
            assert play.rc == 0 and r["ok"] is True and r["changed"] is False, play.out
            assert [c["ok"] for c in r["checks"]] == [True, True] and r["counters"]["cut"]["acted"] == 20
        else:
            assert play.rc == 2 and r["status"] == "fatal" and r["ok"] is False, play.out
            assert r["msg"].startswith("scenario icmp_cut: FAIL: ") and "count" in r["msg"] and "counter" in r["msg"]
    # check mode only checks the file: a mistake is faultinj's file:line:col line
    bad = tmp_path / "bad.yaml"
    bad.write_text(SCENARIO.format(p="100%").replace("count: 20,", "count: lots,"))
    book = tmp_path / "bad.yml"
    book.write_text(SCENARIO_PLAY.format(path=bad, pcaps=tmp_path / "pcaps"))
    play = playbook(collection, hosts, book, "--check")
    assert play.rc == 2 and play.first("h1")["msg"].startswith(f"{bad}:11:"), play.out


ADHOC = re.compile(r"^(h\d) \| (\w+)!? => (\{.*\})$")


def adhoc(collection, hosts, host: str, args: str, *extra: str) -> tuple[str, dict]:
    """One module call with `ansible` (no playbook): its status word and result."""
    r = subprocess.run([str(BIN / "ansible"), "-i", str(hosts.inventory()), host, "-m", "faultinj.net.fault", "-a",
                        args, *extra], capture_output=True, text=True, timeout=300, env=_env(collection, hosts.tmp))
    m = next((ADHOC.match(ln) for ln in r.stdout.splitlines() if ADHOC.match(ln)), None)
    assert m, r.stdout + r.stderr
    return m.group(2), json.loads(m.group(3))


@pytest.mark.slow   # over ~30 s (tests/README.md)
def test_a_fault_in_a_named_namespace_of_the_host(collection, hosts):
    inner = f"fians-in-{hosts.tag}"
    hosts.ssh("h1", f"ip netns add {inner} && ip -n {inner} link add d0 type veth peer name d1 "
                    f"&& ip -n {inner} link set d0 up && ip -n {inner} link set d1 up")
    try:
        args = f"spec=drop=5%,proto=udp interface=d0 netns={inner} seed=3"
        word, r = adhoc(collection, hosts, "h1", args)
        assert word == "CHANGED" and r["action"] == "applied" and r["where"] == f"{inner}/d0", r
        word, again = adhoc(collection, hosts, "h1", args)
        assert word == "SUCCESS" and again["action"] == "none" and again["id"] == r["id"], again
        # the namespace is part of what a fault is known by: absent on the host's own d0 (there is
        # none) finds nothing to remove, and the fault in the namespace stays
        word, other = adhoc(collection, hosts, "h1", "spec=drop interface=d0 state=absent")
        assert word == "SUCCESS" and other["removed"] == [], other
        assert [f["id"] for f in json.loads(hosts.faultinj("h1", "status", "--json").stdout)] == [r["id"]]
        word, gone = adhoc(collection, hosts, "h1", f"spec=drop interface=d0 netns={inner} state=absent")
        assert word == "CHANGED" and [g["id"] for g in gone["removed"]] == [r["id"]], gone
        st = json.loads(hosts.faultinj("h1", "status", "--json").stdout)
        assert st == [], st
    finally:
        hosts.ssh("h1", f"ip netns del {inner}", check=False)
        if os.path.exists(f"/run/netns/{inner}"):
            os.unlink(f"/run/netns/{inner}")
