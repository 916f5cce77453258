"""The two packet parsers agree: bpf/lib/parse.h (what the programs see) and
faultinj/packets.py (what verification reads from captures). Scenario verdicts
compare the kernel's view with Python's, so a disagreement is a false verdict.
The same frames go through both: the BPF parser through BPF_PROG_TEST_RUN of a
probe program that leaves what fi_parse found in a map."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from faultinj import packets
from faultinj.errors import FaultinjError
from faultinj.kernel import build, libbpf

DATA = Path(__file__).parent / "data"
E = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
A4, B4, A6, B6 = "10.1.0.1", "10.1.0.2", "fd00::1", "fd00::2"
TCP1 = TCP(sport=40000, dport=80, flags="PA", seq=123456789)
PAY = b"d" * 64

FRAMES = {
    "tcp4": Ether(**E) / IP(src=A4, dst=B4, id=77) / TCP1 / PAY,
    "udp4": Ether(**E) / IP(src=A4, dst=B4, id=78) / UDP(sport=5000, dport=53) / PAY,
    "udp4-no-checksum": Ether(**E) / IP(src=A4, dst=B4) / UDP(sport=5000, dport=53, chksum=0) / PAY,
    "icmp4-echo": Ether(**E) / IP(src=A4, dst=B4) / ICMP(type=8, id=9, seq=10) / PAY,
    "vlan-tcp4": Ether(**E) / Dot1Q(vlan=7) / IP(src=A4, dst=B4) / TCP1 / PAY,
    "qinq-udp4": Ether(**E) / Dot1AD(vlan=8) / Dot1Q(vlan=7) / IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / PAY,
    "three-tags": Ether(**E) / Dot1AD(vlan=8) / Dot1Q(vlan=7) / Dot1Q(vlan=6) / IP(src=A4, dst=B4) / TCP1,
    "ip-options-tcp4": Ether(**E) / IP(src=A4, dst=B4, options=[b"\x01\x01\x01\x00", b"\x07\x07\x04" + b"\0" * 5]) / TCP1 / PAY,
    "frag4-first": Ether(**E) / IP(src=A4, dst=B4, flags="MF", frag=0) / UDP(sport=7, dport=8) / PAY,
    "frag4-later": Ether(**E) / IP(src=A4, dst=B4, frag=100, proto=6) / PAY,
    "tcp6": Ether(**E) / IPv6(src=A6, dst=B6) / TCP1 / PAY,
    "udp6": Ether(**E) / IPv6(src=A6, dst=B6) / UDP(sport=5000, dport=53) / PAY,
    "icmp6-echo": Ether(**E) / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest(id=3, seq=4, data=PAY),
    "hbh-tcp6": Ether(**E) / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / TCP1 / PAY,
    "dst-rt-tcp6": Ether(**E) / IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / TCP1 / PAY,
    "frag6-first": Ether(**E) / IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(offset=0, m=1) / TCP1 / PAY,
    "frag6-later": Ether(**E) / IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(offset=50, nh=6) / PAY,
    "five-ext6": Ether(**E) / IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting()
                 / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / TCP1,
    "arp": Ether(**E) / ARP(),
}
# truncations: inside the IP header, inside the L4 header, inside the payload
for name in ("tcp4", "ip-options-tcp4", "tcp6", "hbh-tcp6", "udp4", "qinq-udp4", "icmp6-echo"):
    whole = bytes(FRAMES[name])
    l4_at = len(whole) - len(PAY) - (20 if "tcp" in name else 8)
    FRAMES[f"{name}-cut-in-l3"] = whole[: l4_at - 6]
    FRAMES[f"{name}-cut-in-l4"] = whole[: l4_at + 6]
    FRAMES[f"{name}-cut-in-payload"] = whole[: len(whole) - 20]


@pytest.fixture(scope="module", params=["xdp", "tc-ingress"])
def probe(request):
    path = build.compile_program("parse_probe", request.param, source=DATA / "parse_probe.bpf.c")
    obj = libbpf.load_object(str(path), ("probe",))
    yield obj
    obj.close()


OUT = struct.Struct("<iIHBBBBHHHHxxI16s16s")   # struct probe_out (2 bytes pad before seq)


def bpf_view(probe, frame: bytes) -> dict:
    libbpf.test_run(probe.prog_fd, frame)
    raw = libbpf.map_lookup(probe.map_fds["probe"], (0).to_bytes(4, "little"), OUT.size)
    rc, l4_len, l3, l4, frag, flags, has_ports, vlan, ip_id, sport, dport, seq, sa, da = OUT.unpack(raw)
    ip = {0x0800: 4, 0x86DD: 6}.get(l3)
    n = 4 if ip == 4 else 16
    view = {"rc": rc, "vlan": vlan, "ip": ip if rc != 1 or ip else None}
    if rc == -1:
        return view
    if ip:
        view.update(src=str(ipaddress.ip_address(sa[:n])), dst=str(ipaddress.ip_address(da[:n])), proto=l4,
                    fragment=bool(frag), ip_id=ip_id, l4_len=l4_len)
    if rc == 0:
        view.update(ports=(sport, dport) if has_ports else None, tcp=(flags, seq) if l4 == 6 else None,
                    echo=(sport, seq) if l4 in (1, 58) else None)
    return view


def python_view(frame: bytes, rc: int) -> dict:
    p = packets.parse(frame)
    l4 = {"ports": (p.sport, p.dport) if p.proto in (6, 17) and p.sport is not None else None,
          "tcp": (p.tcp_flags, p.seq) if p.proto == 6 and p.tcp_flags is not None else None,
          "echo": (p.echo_id, p.echo_seq) if p.proto in (1, 58) and p.icmp_type is not None else None}
    view = {"rc": rc, "vlan": p.vlan, "ip": p.version}
    if rc == -1:  # malformed for the programs: Python must not read an L4 header either
        assert l4 == {"ports": None, "tcp": None, "echo": None}, l4
        view["ip"] = None if p.version is None else view["ip"]
        return view
    if p.version:
        view.update(src=str(ipaddress.ip_address(p.src)), dst=str(ipaddress.ip_address(p.dst)), proto=p.proto,
                    fragment=p.fragment, ip_id=p.ip_id, l4_len=p.l4_len)
    if rc == 0:
        view.update(l4)
    return view


@pytest.mark.parametrize("name", FRAMES)
def test_bpf_and_python_parsers_agree(probe, name, request):
    frame = bytes(FRAMES[name])
    try:
        got = bpf_view(probe, frame)
    except FaultinjError as exc:
        # BPF_PROG_TEST_RUN of tc refuses an IP frame shorter than its IP header: no tc program ever
        # sees one (the stack drops it first), so there is nothing to compare but the refusal
        assert name.endswith("cut-in-l3") and "tc-ingress" in request.node.name, exc
        assert "Invalid argument" in str(exc)
        return
    want = python_view(frame, got["rc"])
    if got["rc"] == -1:
        want["ip"] = got["ip"]   # how far a malformed frame's L3 was read is not compared
    assert got == want


def test_the_probe_sees_what_matters():
    """The comparison above is not vacuous: the frames' L4 fields are read at all."""
    p = packets.parse(bytes(FRAMES["dst-rt-tcp6"]))
    assert (p.proto, p.sport, p.dport, p.tcp_flags) == (6, 40000, 80, 0x18) and p.l4_csum_ok


def test_udp_checksum_zero_means_none_over_ipv4_only():
    assert packets.parse(bytes(FRAMES["udp4-no-checksum"])).l4_csum_ok is True
    bad6 = Ether(**E) / IPv6(src=A6, dst=B6) / UDP(sport=1, dport=2, chksum=0) / PAY   # RFC 8200: required
    assert packets.parse(bytes(bad6)).l4_csum_ok is False
