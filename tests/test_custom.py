"""`faultinj apply --program FILE.c`: a user's own BPF C, the seed article's two programs first."""

from __future__ import annotations

import json
import os
import re
import struct
from collections import Counter
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether

import faultinj
from conftest import cli_runner, ns_run
from faultinj import stats
from faultinj.cli import app
from faultinj.errors import ProgramError, SpecError
from faultinj.inject import custom
from faultinj.kernel import libbpf
from faultinj.labs import traffic

DATA = Path(__file__).parent / "data"
SEED = Path(__file__).resolve().parent.parent / "examples" / "seed"   # the article's programs, as printed
SEED_XDP = str(SEED / "xdp_manglepong.c")
SEED_TC = str(SEED / "tcp_psh.c")
COUNTER = str(DATA / "custom_counter.c")
E = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
XDP_PASS, TC_ACT_OK = 2, 0


def _loaded(source: str, hook: str, section: str | None = None):
    obj_path = custom.compile_source(source)
    try:
        name, _ = custom.pick(obj_path, section)
        return custom.load(obj_path, hook, name)
    finally:
        custom.discard(obj_path)


def _ip_csum_ok(frame: bytes) -> bool:
    p = Ether(frame)
    got = p[IP].chksum
    del p[IP].chksum
    return Ether(bytes(p))[IP].chksum == got


def test_seed_xdp_program_as_printed_randomises_pong_ttls():
    pong = bytes(Ether(**E) / IP(src="10.0.0.2", dst="10.0.0.1", ttl=64) / ICMP(type=0) / (b"p" * 32))
    ping = bytes(Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2", ttl=64) / ICMP(type=8) / (b"p" * 32))
    obj = _loaded(SEED_XDP, "xdp")
    try:
        runner = libbpf.TestRunner(obj.prog_fd)
        outs = [runner.run(pong) for _ in range(3000)]
        assert runner.run(ping).data == ping                    # only pongs
    finally:
        obj.close()
    assert all(r.retval == XDP_PASS for r in outs)
    ttls = Counter(Ether(r.data)[IP].ttl for r in outs)
    assert set(ttls) <= set(range(1, 65)) and len(ttls) > 55
    _, _, pval = stats.chi2_uniform([ttls.get(t, 0) for t in range(1, 65)])
    assert pval > 0.001
    assert all(_ip_csum_ok(r.data) for r in outs[:200])


def test_seed_tc_program_as_printed_sets_psh_on_one_in_ten():
    seg = bytes(Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="A") / (b"d" * 100))
    syn = bytes(Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S"))
    obj = _loaded(SEED_TC, "tc-egress")
    try:
        runner = libbpf.TestRunner(obj.prog_fd)
        outs = [runner.run(seg) for _ in range(10000)]
        assert runner.run(syn).data == syn
    finally:
        obj.close()
    assert all(r.retval == TC_ACT_OK for r in outs)
    psh = sum(bool(Ether(r.data)[TCP].flags & 0x08) for r in outs)
    assert stats.binomial_consistent(psh, 10000, 0.1)


def test_seed_xdp_program_on_a_link_lists_and_clears(lab, private_state):
    a, b = lab.a, lab.b
    rec = faultinj.apply_program(SEED_XDP, a.ifname, netns_name=a.netns, hook="xdp")
    assert rec.fault == "program" and rec.value.endswith("seed/xdp_manglepong.c:xdp_main")
    out = ns_run(a.netns, "ping", "-c", "200", "-i", "0.002", "-q", b.ip4, check=False).stdout
    assert " 0% packet loss" in out
    detail = ns_run(a.netns, "ping", "-c", "60", "-i", "0.002", b.ip4, check=False).stdout
    ttls = {int(t) for t in re.findall(r"ttl=(\d+)", detail)}
    assert len(ttls) > 20 and max(ttls) <= 64                  # spread, as the article's ping output shows
    [st] = faultinj.status()
    assert st.record.id == rec.id and st.state == "active" and st.counters is None and st.maps == []
    faultinj.clear(a.ifname, netns_name=a.netns)
    assert faultinj.status() == [] and os.listdir(private_state["pin_root"]) == []
    detail = ns_run(a.netns, "ping", "-c", "20", "-i", "0.002", b.ip4, check=False).stdout
    assert set(re.findall(r"ttl=(\d+)", detail)) == {"64"}


def test_custom_program_maps_are_pinned_and_shown(lab, private_state):
    a, b = lab.a, lab.b
    r = cli_runner().invoke(app, ["apply", "--program", COUNTER, "--section", "tc", b.ifname, "--netns", b.netns,
                                  "--hook", "ingress", "--json"])
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["hook"] == "tc-ingress" and rec["value"].endswith(":count_tc")
    assert traffic.ping(a.netns, b.ip4, 25, interval=0.005).received == 25
    r = cli_runner().invoke(app, ["status", "--json"])
    [st] = json.loads(r.stdout)
    [m] = [m for m in st["maps"] if m["name"] == "seen"]
    fd = libbpf.obj_get(m["pin"])
    try:
        assert struct.unpack("<Q", libbpf.map_lookup(fd, b"\0\0\0\0", 8))[0] >= 25
    finally:
        os.close(fd)
    text = cli_runner().invoke(app, ["status"]).stdout
    assert "custom program; maps: " in text and "seen (id " in text
    # the xdp one from the same file, the hook told by its section
    rec2 = faultinj.apply_program(COUNTER, a.ifname, netns_name=a.netns, section="count_all")
    assert rec2.hook == "xdp"
    r = cli_runner().invoke(app, ["clear", "--all"])
    assert r.exit_code == 0 and faultinj.status() == []
    assert os.listdir(private_state["pin_root"]) == []


def test_custom_program_errors_leave_nothing(lab, private_state, tmp_path):
    a = lab.a
    bad = tmp_path / "bad.c"
    bad.write_text("int f(struct xdp_md *ctx) { return undefined_thing; }\n")
    with pytest.raises(ProgramError, match="clang failed to compile"):
        faultinj.apply_program(str(bad), a.ifname, netns_name=a.netns, hook="xdp")
    with pytest.raises(ProgramError, match="no such file"):
        faultinj.apply_program(str(tmp_path / "missing.c"), a.ifname, netns_name=a.netns, hook="xdp")
    with pytest.raises(SpecError, match="give --hook"):
        faultinj.apply_program(SEED_XDP, a.ifname, netns_name=a.netns)      # section .text says nothing
    with pytest.raises(SpecError, match="choose one with --section"):
        faultinj.apply_program(COUNTER, a.ifname, netns_name=a.netns)
    with pytest.raises(SpecError, match="no program 'nope'"):
        faultinj.apply_program(COUNTER, a.ifname, netns_name=a.netns, section="nope")
    faultinj.apply_program(COUNTER, a.ifname, netns_name=a.netns, section="xdp")
    with pytest.raises(SpecError, match="no faultinj config to set"):
        faultinj.set_fault(a.ifname, "program", netns_name=a.netns)
    runner = cli_runner()
    for args, msg in ((["apply", "--program", COUNTER, "x", a.ifname], "only the interface"),
                      (["apply", "--program", COUNTER, a.ifname, "--seed", "1"], "no faultinj seed"),
                      (["apply", "drop=1", a.ifname, "--section", "xdp"], "--section goes with --program"),
                      # the user's own file: bad input (2), not a broken installation (3)
                      (["apply", "--program", str(bad), a.ifname, "--netns", a.netns, "--hook", "xdp"],
                       "undefined_thing"),
                      (["apply", "--program", str(tmp_path / "missing.c"), a.ifname, "--netns", a.netns],
                       "no such file")):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    faultinj.clear(all_faults=True)
    assert os.listdir(private_state["pin_root"]) == [] and faultinj.status() == []
