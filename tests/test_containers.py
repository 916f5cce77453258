"""Containers and processes as targets, against a real Docker daemon.

The daemon is the one `./run.sh test` starts (dockerd --iptables=false --bridge=none, its socket at
/run/faultinj-docker/docker.sock, or DOCKER_HOST). Each test runs a busybox container with
`--network none` and gives it a veth whose other end is in a lab namespace of its own, so the fault
is judged by real pings; the container, the namespace and faultinj's state are removed even when the
test fails. Without a daemon the tests skip, unless FAULTINJ_REQUIRE_DOCKER=1 (run.sh sets it).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from conftest import cli_runner, hook_prog_ids
from faultinj.cli import app

pytestmark = pytest.mark.kernel
runner = cli_runner()
IMAGE = "faultinj-test-busybox:1"
RUNSH_SOCKET = "/run/faultinj-docker/docker.sock"
RUNSH_CONTAINERD = "/run/faultinj-docker/exec/containerd/containerd.sock"


def invoke(*args):
    return runner.invoke(app, list(args))


def _docker_cli() -> str | None:
    return os.environ.get("FAULTINJ_DOCKER") or shutil.which("docker")


@pytest.fixture(scope="session")
def docker():
    """The docker CLI (a list to run), with DOCKER_HOST pointing at a live daemon; the test image built."""
    cli = _docker_cli()
    if not os.environ.get("DOCKER_HOST") and os.path.exists(RUNSH_SOCKET):
        os.environ["DOCKER_HOST"] = f"unix://{RUNSH_SOCKET}"   # faultinj's own `docker inspect` uses it too
    if not os.environ.get("CONTAINERD_ADDRESS") and os.path.exists(RUNSH_CONTAINERD):
        os.environ["CONTAINERD_ADDRESS"] = RUNSH_CONTAINERD    # the containerd that dockerd runs for itself
    why = None
    if not cli:
        why = "no docker CLI (apt-get install docker.io)"
    elif subprocess.run([cli, "info"], capture_output=True, timeout=30).returncode != 0:
        why = "no Docker daemon answers (./run.sh test starts one)"
    if why:
        if os.environ.get("FAULTINJ_REQUIRE_DOCKER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    if subprocess.run([cli, "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        _import_busybox_image(cli)
    return cli


def _import_busybox_image(cli: str) -> None:
    """An image from a busybox-static root, made with `docker import` (no registry)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(f"{root}/bin")
        shutil.copy(busybox, f"{root}/bin/busybox")
        for applet in ("sh", "sleep", "ip", "ping", "cat"):
            os.symlink("busybox", f"{root}/bin/{applet}")
        tar = f"{root}.tar"
        with tarfile.open(tar, "w") as t:
            t.add(root, arcname=".")
        try:
            subprocess.run([cli, "import", tar, IMAGE], check=True, capture_output=True)
        finally:
            os.unlink(tar)


class Box:
    """A running container with eth0 (10.N.0.2) joined by a veth to a lab namespace (10.N.0.1)."""

    def __init__(self, docker: str):
        tag = secrets.token_hex(3)
        self.docker, self.name, self.lab = docker, f"fi-t-{tag}", f"fit-{tag}"
        self.host_end = f"x{tag}"          # the lab end's name says nothing about the container
        net = 100 + secrets.randbelow(100)
        self.ip_lab, self.ip_box = f"10.{net}.0.1", f"10.{net}.0.2"
        self.id = self.pid = None

    def up(self):
        d = self.docker
        self.id = subprocess.run([d, "run", "-d", "--network", "none", "--name", self.name, IMAGE,
                                  "/bin/sleep", "600"], check=True, capture_output=True, text=True).stdout.strip()
        self.pid = int(subprocess.run([d, "inspect", "-f", "{{.State.Pid}}", self.name], check=True,
                                      capture_output=True, text=True).stdout)
        ns = f"/proc/{self.pid}/ns/net"
        run = lambda *c: subprocess.run(c, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.lab)
        tmp = f"y{self.host_end[1:]}"
        run("ip", "-n", self.lab, "link", "add", self.host_end, "type", "veth", "peer", "name", tmp)
        run("ip", "-n", self.lab, "link", "set", tmp, "netns", ns)
        run("nsenter", f"--net={ns}", "ip", "link", "set", tmp, "name", "eth0")
        run("nsenter", f"--net={ns}", "ip", "addr", "add", f"{self.ip_box}/24", "dev", "eth0")
        run("nsenter", f"--net={ns}", "ip", "link", "set", "eth0", "up")
        run("ip", "-n", self.lab, "addr", "add", f"{self.ip_lab}/24", "dev", self.host_end)
        run("ip", "-n", self.lab, "link", "set", self.host_end, "up")
        return self

    def ping(self, count: int = 10) -> int:
        """Replies received by the lab end."""
        r = subprocess.run(["ip", "netns", "exec", self.lab, "ping", "-c", str(count), "-i", "0.05", "-W", "1",
                            self.ip_box], capture_output=True, text=True)
        m = re.search(r"(\d+) (?:packets )?received", r.stdout)
        return int(m.group(1)) if m else 0

    def remove(self):
        subprocess.run([self.docker, "rm", "-f", self.name], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.lab], capture_output=True)


@pytest.fixture
def box(docker, private_state):
    b = Box(docker)
    try:
        yield b.up()
    finally:
        import faultinj

        for opts in ({"container": b.name}, {"netns_name": b.lab, "all_faults": True}):
            try:
                faultinj.clear(**opts)
            except Exception:
                pass
        b.remove()
        try:
            faultinj.reap()
        except Exception:
            pass


def _status(box=None) -> list[dict]:
    import json

    r = invoke("status", "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def _pins(private_state) -> list[str]:
    root = private_state["pin_root"]
    return sorted(os.listdir(root)) if root.is_dir() else []


def test_a_fault_by_container_name_drops_what_it_says(box):
    assert box.ping(5) == 5                     # the check can fail: without the fault pings pass
    r = invoke("apply", "drop=100%,proto=icmp@egress", "eth0", "--container", box.name, "--seed", "1")
    assert r.exit_code == 0, r.stderr
    assert f"container:{box.name}/eth0" in r.stdout
    assert f"container:{box.name}/eth0" in invoke("status").stdout
    assert box.ping(10) == 0                    # every echo reply dropped in the container
    [st] = _status()
    assert st["target"] == f"container:{box.name}" and st["container"] == box.id
    assert st["counters"]["acted"] == st["counters"]["matched"] == 10   # ARP passed: only the 10 replies
    r = invoke("clear", "--container", box.name)
    assert r.exit_code == 0, r.stderr
    assert box.ping(5) == 5 and _status() == []


def test_by_pid_and_by_namespace_file(box, private_state):
    r = invoke("apply", "drop=100%,proto=icmp@ingress", "eth0", "--pid", str(box.pid), "--seed", "2")
    assert r.exit_code == 0, r.stderr
    assert f"pid:{box.pid}/eth0" in invoke("status").stdout
    assert box.ping(6) == 0
    assert _status()[0]["counters"]["acted"] == 6
    # the same namespace by file: set and clear find the fault the --pid put there
    path = f"/proc/{box.pid}/ns/net"
    r = invoke("set", "eth0", "drop=0%", "--netns-path", path)
    assert r.exit_code == 0, r.stderr
    assert box.ping(4) == 4
    r = invoke("clear", "--netns-path", path)
    assert r.exit_code == 0 and "cleared" in r.stdout, r.stderr
    assert _status() == [] and _pins(private_state) == []


def test_peer_of_finds_the_far_end_of_the_veth_by_its_link(box):
    """The far end is in the lab namespace under a name unrelated to the container: found from eth0's
    IFLA_LINK and the netnsid of the namespace holding it."""
    r = invoke("apply", "drop=100%,proto=icmp@ingress", "--peer-of", box.name, "--seed", "3", "--json")
    assert r.exit_code == 0, r.stderr
    import json

    rec = json.loads(r.stdout)
    assert rec["ifname"] == box.host_end and rec["netns"] == box.lab
    assert f"peer-of:{box.name}/{box.host_end}" in invoke("status").stdout
    assert box.ping(8) == 0                     # the replies die on the lab end's ingress
    assert _status()[0]["counters"]["acted"] == 8
    assert rec["prog_id"] in hook_prog_ids(box.lab, box.host_end, "ingress")   # the kernel runs it there
    assert invoke("clear", "--container", box.name).exit_code == 0
    assert box.ping(3) == 3


def test_a_container_that_exits_takes_its_faults_and_the_next_command_reaps_only_those(box, private_state):
    other = f"fio{secrets.token_hex(3)}"   # an unrelated fault in the lab namespace must survive
    subprocess.run(["ip", "-n", box.lab, "link", "add", other, "type", "veth", "peer", "name", other + "p"],
                   check=True)
    assert invoke("apply", "drop=1%", other, "--netns", box.lab).exit_code == 0
    assert invoke("apply", "drop=5%", "eth0", "--container", box.name).exit_code == 0
    assert invoke("apply", "drop=5%@ingress", "--peer-of", box.name).exit_code == 0
    assert len(_pins(private_state)) == 3
    subprocess.run([box.docker, "rm", "-f", box.name], check=True, capture_output=True)
    # the kernel removes a namespace (and the veth whose other end is in ours) in a work queue after
    # its last process is gone: `docker rm` may return first (seen in CI: the peer end still active)
    want = {other: "active", "eth0": "gone", box.host_end: "gone"}
    for _ in range(100):   # a poll on the kernel's own cleanup, not a time bound on faultinj
        states = {s["ifname"]: s["state"] for s in _status()}
        if states == want:
            break
        time.sleep(0.1)
    assert states == want
    r = invoke("reap")
    assert r.exit_code == 0 and r.stdout.count("reaped") == 2, r.stdout
    [left] = _status()
    assert left["ifname"] == other and left["state"] == "active"
    assert _pins(private_state) == [left["id"]]
    assert invoke("clear", other, "--netns", box.lab).exit_code == 0


@pytest.mark.parametrize("args, needle", [
    (["--container", "fi-no-such-container"], "no container 'fi-no-such-container'"),
    (["--pid", "2147483646"], "no process 2147483646"),
    (["--netns-path", "/etc/hostname"], "not a network namespace"),
    (["--netns-path", "/nonexistent/ns"], "not found"),
    (["--peer-of", "fi-no-such-container"], "no container"),
])
def test_bad_names_fail_in_one_line_and_leave_nothing(docker, private_state, args, needle):
    r = invoke("apply", "drop=1%", "eth0", *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert _status() == [] and _pins(private_state) == []


def test_unknown_interface_in_a_container_and_clear_of_unknown_container(box, private_state):
    r = invoke("apply", "drop=1%", "eth9", "--container", box.name)
    assert r.exit_code == 2 and "eth9" in r.stderr and "eth0" in r.stderr, r.stderr
    r = invoke("clear", "--container", "fi-no-such-container")
    assert r.exit_code == 2 and "no container" in r.stderr
    assert _status() == [] and _pins(private_state) == []


@pytest.mark.parametrize("args, needle", [
    (["--netns", "x", "--pid", "1"], "give one of --netns, --pid"),
    (["--container", "a", "--netns-path", "/proc/1/ns/net"], "give one of --netns-path, --container"),
    (["--peer-of", "a", "--pid", "1"], "--peer-of names the namespace itself"),
    (["--runtime", "docker"], "--runtime goes with --container"),
    (["--container", "a", "--runtime", "rkt"], "unknown runtime 'rkt'"),
])
def test_one_target_at_a_time(private_state, args, needle):
    r = invoke("apply", "drop=1%", "eth0", *args)
    assert r.exit_code == 2 and needle in r.stderr, r.stderr


# ---- runtimes -----------------------------------------------------------------------------

def test_containerd_finds_dockers_container_by_id_and_the_fault_acts(box):
    """Through `ctr` on the containerd dockerd runs (its namespace moby): the container by a prefix of
    its id, its task's PID, the fault judged by pings."""
    from faultinj.inject import runtimes

    if "containerd" not in runtimes.installed():   # dockerd always runs one: its absence is a failure here
        pytest.fail(f"no containerd found (CONTAINERD_ADDRESS={os.environ.get('CONTAINERD_ADDRESS')})")
    found = runtimes.find(box.id[:12], "containerd")
    assert (found.id, found.pid, found.runtime) == (box.id, box.pid, "containerd")
    assert box.ping(4) == 4
    r = invoke("apply", "drop=100%,proto=icmp@egress", "eth0", "--container", box.id[:12], "--runtime", "containerd")
    assert r.exit_code == 0, r.stderr
    assert box.ping(6) == 0
    [st] = _status()
    assert st["target"] == f"container:{box.id[:12]}" and st["counters"]["acted"] == 6
    assert invoke("clear", "--container", box.id[:12], "--runtime", "containerd").exit_code == 0
    assert box.ping(3) == 3 and _status() == []


def _only_on_path(tmp_path, monkeypatch, *clis):
    """PATH holding just these CLIs (real ones, linked), and no FAULTINJ_<CLI> overrides."""
    for name in ("docker", "podman", "ctr", "crictl"):
        monkeypatch.delenv(f"FAULTINJ_{name.upper()}", raising=False)
    for cli in clis:
        os.symlink(shutil.which(cli) or f"/usr/bin/{cli}", tmp_path / cli)
    monkeypatch.setenv("PATH", str(tmp_path))


def test_runtime_detection_follows_what_is_installed(docker, tmp_path, monkeypatch):
    from faultinj.inject import runtimes

    ctr = shutil.which("ctr")   # Debian's containerd, which docker.io brings
    assert ctr and os.environ.get("CONTAINERD_ADDRESS"), "no ctr, or no containerd socket known"
    _only_on_path(tmp_path, monkeypatch, "docker")
    assert runtimes.installed() == ["docker"]
    os.symlink(ctr, tmp_path / "ctr")
    assert runtimes.installed() == ["docker", "containerd"]   # the order auto-detection asks them in
    monkeypatch.setenv("FAULTINJ_PODMAN", "/nonexistent/podman")
    assert "podman" not in runtimes.installed()


@pytest.mark.parametrize("clis, args, needle", [
    ((), ["--container", "web"], "no container runtime here: install docker, podman or containerd's ctr"),
    (("docker",), ["--container", "web", "--runtime", "podman"], "podman is not installed"),
    (("docker",), ["--container", "web", "--runtime", "containerd"], "containerd's ctr (or crictl) is not installed"),
])
def test_a_runtime_that_is_not_installed_is_one_line_and_exit_3(docker, private_state, tmp_path, monkeypatch,
                                                               clis, args, needle):
    _only_on_path(tmp_path, monkeypatch, *clis)
    r = invoke("apply", "drop=1%", "eth0", *args)
    assert r.exit_code == 3, (r.stdout, r.stderr)
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert _status() == [] and _pins(private_state) == []


# ---- containers in scenario files ---------------------------------------------------------

SCENARIO = """\
name: box
description: a fault in a container, judged by pings from a namespace outside it and a TCP transfer
faults:
  - {{name: drop, spec: "{spec}", host: {{container: {name}}}, interface: eth0, seed: 7}}
traffic:
  - {{name: pings, ping: {{from: {{netns_path: /run/netns/{lab}}}, to: {{container: {name}}}, count: 20, interval: 0.02}}}}
  - {{name: bulk, tcp: {{from: {{netns_path: /run/netns/{lab}}}, to: {{container: {name}}}, bytes: 300KB, port: 5301}}}}
capture:
  - {{name: at_box, host: {{container: {name}}}, interface: eth0, direction: in}}
  - {{name: at_lab, host: {{netns_path: /run/netns/{lab}}}, interface: {host_end}, direction: in}}
expect:
  - count: {{capture: at_box, of: echo_request, equals: 20}}
  - count: {{capture: at_lab, of: echo_reply, equals: 0}}
  - counter: {{fault: drop, counter: acted, equals: 20}}
  - tcp_intact: bulk
  - checksum_errors: {{host: {{container: {name}}}}}
"""


def _scenario(box, tmp_path, spec="drop=100%,proto=icmp@egress", name=None) -> str:
    path = tmp_path / "box.yaml"
    path.write_text(SCENARIO.format(spec=spec, name=name or box.name, lab=box.lab, host_end=box.host_end))
    return str(path)


def _run_json(path, tmp_path):
    import json

    r = invoke("run", path, "--json", "--pcap-dir", str(tmp_path / "pcaps"))
    return r, (json.loads(r.stdout)[0] if r.stdout.strip().startswith("[") else None)


def test_a_scenario_targets_a_container_by_name(box, tmp_path):
    """Traffic to the container (our own sender and receiver, run in its namespace from here: the image
    has no tools), a capture at its eth0, the fault judged by what the lab end never got."""
    r, rep = _run_json(_scenario(box, tmp_path), tmp_path)
    assert r.exit_code == 0 and rep["ok"], (r.stderr, rep)
    assert rep["counters"]["drop"]["acted"] == 20 and rep["faults"]["drop"]["host"] == f"container:{box.name}"
    assert _status() == [] and box.ping(3) == 3     # the fault went with the run


def test_a_container_scenario_fails_without_the_fault(box, tmp_path):
    r, rep = _run_json(_scenario(box, tmp_path, spec="drop=0%,proto=icmp@egress"), tmp_path)
    assert r.exit_code == 1 and not rep["ok"]
    failed = [c["name"] for c in rep["checks"] if not c["ok"]]
    assert failed == ["count: echo_reply at at_lab", "counter acted of drop"], rep["checks"]


@pytest.mark.parametrize("how", ["stopped", "unknown"])
def test_a_scenario_whose_container_is_not_running_stops_before_anything(box, tmp_path, private_state, how):
    name = box.name
    if how == "stopped":
        subprocess.run([box.docker, "stop", "-t", "0", box.name], check=True, capture_output=True)
    else:
        name = "fi-no-such-container"
    path = _scenario(box, tmp_path, name=name)
    Path(path).write_text(Path(path).read_text().replace("faults:", "lab: {hosts: [spare]}\nfaults:"))
    ours = f"fi{os.getpid() % 1000:03d}"   # lab.unique_prefix: other sessions make namespaces meanwhile
    before = {n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
              if n.startswith(ours)}
    r = invoke("run", path)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert ("is not running" if how == "stopped" else "no container 'fi-no-such-container'") in r.stderr
    assert str(tmp_path / "box.yaml") in r.stderr
    after = {n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
             if n.startswith(ours)}
    from faultinj import labs as lab

    assert after <= before and lab.recorded_labs() == [] and _status() == [] and _pins(private_state) == []


def test_a_scenario_names_an_interface_the_container_lacks(box, tmp_path, private_state):
    path = _scenario(box, tmp_path)
    Path(path).write_text(Path(path).read_text().replace("interface: eth0, seed", "interface: eth9, seed"))
    r = invoke("run", path)
    assert r.exit_code == 2 and "eth9" in r.stderr and "eth0" in r.stderr, r.stderr
    assert _status() == [] and _pins(private_state) == []


def test_a_killed_run_leaves_no_fault_in_the_container(box, tmp_path, private_state):
    """A lab's namespaces take their faults with them; a container outlives the run, so the run records
    the faults it put there and the next command, finding the run dead, clears them."""
    import signal
    import sys
    import time

    path = _scenario(box, tmp_path)
    Path(path).write_text(Path(path).read_text().replace("count: 20, interval: 0.02", "count: 2000, interval: 0.02"))
    proc = subprocess.Popen([sys.executable, "-m", "faultinj.cli", "run", path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if "traffic [1/2]" in (line := proc.stderr.readline()) or not line:
                break
        assert box.ping(3) == 0                       # the fault is in, the run is pinging
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the fault's program as recorded, before the next command finishes the killed run
    [prog_id] = [json.loads(p.read_text())["prog_id"] for p in (private_state["run_dir"] / "faults").glob("*.json")]
    # the first command after the kill (status here, as any other) finishes it, and says so
    r = invoke("status", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == [], r.stdout
    assert f"on container:{box.name}/eth0): left by a killed faultinj process" in r.stderr, r.stderr
    assert _pins(private_state) == [] and invoke("reap").stdout.strip() == "nothing to reap"
    assert prog_id not in hook_prog_ids(f"/proc/{box.pid}/ns/net", "eth0")   # tcx link or tc filter: gone
    assert box.ping(5) == 5
