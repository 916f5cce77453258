"""Hosts reached through ssh (lab.remote): the scenario drives faultinj on machines the user has,
through `faultinj agent --stdio` over ssh, the agent VM hosts use too. Here the "machines" are two
namespaces, each with its own sshd on its own loopback, reached with ssh's ProxyCommand (no address
on this machine's namespace)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from faultinj.labs import Lab, LinkSettings
from faultinj.scenario import runner, schema

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture
def ssh_lab(tmp_path, private_state):
    if not os.path.exists(SSHD):
        pytest.fail("sshd missing: run.sh test installs openssh-server")
    lab = Lab().up(a_settings=LinkSettings(tx_checksum=False, gso_max_segs=1),
                   b_settings=LinkSettings(tx_checksum=False))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # sshd's privilege separation directory
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "id.pub").read_text())
    daemons = []
    try:
        for host in (lab.a, lab.b):
            d = tmp_path / host.netns
            d.mkdir()
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "hostkey")], check=True)
            (d / "sshd_config").write_text(textwrap.dedent(f"""\
                Port 2222
                ListenAddress 127.0.0.1
                HostKey {d}/hostkey
                PidFile {d}/sshd.pid
                AuthorizedKeysFile {tmp_path}/authorized_keys
                PermitRootLogin prohibit-password
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                UsePAM no
                StrictModes no
                """))
            daemons.append(subprocess.Popen(["ip", "netns", "exec", host.netns, SSHD, "-D", "-e", "-f",
                                             str(d / "sshd_config")], stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        yield lab, key
    finally:
        for p in daemons:
            p.terminate()
            p.wait()
        lab.down()


def _remote(host, key, tag: str) -> dict:
    # the remote faultinj: this tree's, with state of its own (as on another machine)
    cmd = (f"env FAULTINJ_RUN_DIR=/run/faultinj-ssh-{tag} FAULTINJ_PIN_ROOT=/sys/fs/bpf/faultinj-ssh-{tag} "
           f"{sys.executable} -m faultinj.guest.server --stdio")
    opts = ["-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", f"ProxyCommand=ip netns exec {host.netns} socat - TCP:127.0.0.1:2222"]
    return {"ssh": f"root@{host.netns}", "options": opts, "command": cmd,
            "interfaces": {host.ifname: host.ip4 + "/24"}}


def _scenario(lab, key, spec: str) -> dict:
    return {
        "name": "ssh-psh",
        "lab": {"hosts": ["m1", "m2"],
                "remote": {"m1": _remote(lab.a, key, lab.prefix + "a"), "m2": _remote(lab.b, key, lab.prefix + "b")}},
        "faults": [{"name": "psh", "spec": spec, "host": "m1", "interface": lab.a.ifname, "seed": 7}],
        "traffic": [{"name": "transfer", "tcp": {"from": "m1", "to": "m2", "bytes": "2MB"}}],
        "capture": [{"name": "rx", "host": "m2", "interface": lab.b.ifname, "direction": "in", "snaplen": 2048}],
        "expect": [{"tcp_intact": "transfer"}, {"fault_ratio": {"fault": "psh", "ratio": 10}},
                   {"counters_match_capture": {"fault": "psh", "capture": "rx", "of": "tcp and data",
                                               "having": "psh"}},
                   {"checksum_errors": {"host": "m2"}}],
    }


def test_ssh_hosts_run_a_scenario_through_the_agent(ssh_lab, tmp_path):
    import yaml

    lab, key = ssh_lab
    path = tmp_path / "ssh.yaml"
    path.write_text(yaml.safe_dump(_scenario(lab, key, "psh-ratio=10")))
    report = runner.run(schema.load(path))
    assert report.ok, [c.to_json() for c in report.checks if not c.ok] + report.errors
    assert report.counters["psh"]["acted"] > 100
    # the fault lived on the remote side (its own state), never here
    assert os.listdir(private_state_faults()) == []
    # the same lab with a fault that (almost) never acts: the verdicts must fail
    path.write_text(yaml.safe_dump(_scenario(lab, key, "psh-ratio=1000000000")))
    report = runner.run(schema.load(path))
    assert not report.ok and not next(c for c in report.checks if c.name.startswith("fault_ratio")).ok


def private_state_faults():
    from faultinj.inject import state

    return state.run_dir() / "faults"


def test_an_unreachable_ssh_host_is_one_line_and_leaves_nothing(tmp_path, private_state):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        name: ssh-bad
        lab:
          hosts: [m1]
          remote:
            m1:
              ssh: root@nosuchhost.invalid
              options: ["-o", "ConnectTimeout=3"]
              interfaces: {eth0: 10.0.0.1/24}
        """))
    r = subprocess.run([sys.executable, "-m", "faultinj.cli", "run", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 3, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("faultinj: error:")]
    assert len(errors) == 1 and "m1" in errors[0] and "Could not resolve" in errors[0], r.stderr
    assert r.stderr.strip().splitlines()[-1] == errors[0]   # progress lines before it, nothing after
