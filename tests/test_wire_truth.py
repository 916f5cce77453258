"""Counters against the wire (issue 13): what a fault says it matched and did is
what the kernel's own state and a capture at the receiver show, at every hook.

BPF_PROG_TEST_RUN cannot show these cases: its packets carry no checksum state,
no offloaded VLAN tag and one linear buffer. Only real traffic on a real link is
evidence here.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

import faultinj
from faultinj.inject import traffic
from faultinj.inject.netns import entered

ETH_P_ALL = 0x0003


def send_frames(host, frames: list[bytes], gap: float = 0.0005) -> None:
    """Frames as they are, out of host's interface through a packet socket (this kernel has no VLAN devices)."""
    with entered(host.netns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.bind((host.ifname, 0))
        for f in frames:
            s.send(f)
            time.sleep(gap)
    finally:
        s.close()


def counters_by_hook() -> dict[str, dict[str, int]]:
    return {st.record.hook: st.counters for st in faultinj.status()}


# ---- 1. vlan= at every hook ---------------------------------------------------------------

def tagged(a, b, *tags: tuple[type, int], n: int) -> list[bytes]:
    frames = []
    for i in range(n):
        f = Ether(src=a.mac, dst=b.mac)
        for layer, vid in tags:
            f = f / layer(vlan=vid)
        frames.append(bytes(f / IP(src=a.ip4, dst=b.ip4) / UDP(sport=40000 + i, dport=9) / (b"v" * 20)))
    return frames


def test_vlan_filter_matches_the_outer_tag_at_every_hook(lab):
    """100 frames tagged 7, 100 tagged 8, 50 QinQ with outer 8 and inner 7: vlan=7 matches the 100
    at xdp (tag in the data), at tc ingress (the kernel moved the outer tag to skb->vlan_tci; the
    QinQ frames' inner tag stays in the data) and at tc egress (a packet socket's tag is data)."""
    a, b = lab.a, lab.b
    faultinj.apply("drop=0,vlan=7@xdp", b.ifname, netns_name=b.netns, seed=1)
    faultinj.apply("drop=0,vlan=7@ingress", b.ifname, netns_name=b.netns, seed=1)
    faultinj.apply("drop=0,vlan=7@egress", a.ifname, netns_name=a.netns, seed=1)
    frames = (tagged(a, b, (Dot1Q, 7), n=100) + tagged(a, b, (Dot1Q, 8), n=100)
              + tagged(a, b, (Dot1AD, 8), (Dot1Q, 7), n=50))
    send_frames(a, frames)
    time.sleep(0.2)
    got = counters_by_hook()
    assert {hook: c["matched"] for hook, c in got.items()} == {"xdp": 100, "tc-ingress": 100, "tc-egress": 100}
    assert all(c["seen"] >= 250 for c in got.values())


# ---- 2. truncate counts only the cuts the kernel made ------------------------------------

@pytest.mark.parametrize("length", [40, 60])
def test_truncate_acted_equals_the_cut_frames_the_receiver_sees(lab, length):
    """At tc egress TCP's skbs are CHECKSUM_PARTIAL (also with the link's tx offload off: the
    checksum is filled in after tc), and the kernel refuses a cut below the checksum field
    (14 + 20 + 18 = 52 bytes): a cut to 40 is refused every time, one to 60 is made.
    `acted` counts only the cuts made; the receiver's capture sees exactly those."""
    from faultinj.inject.capture import Capture
    from faultinj.packets import parse

    a, b = lab.a, lab.b
    faultinj.apply(f"truncate={length},p=0.05,proto=tcp@egress", a.ifname, netns_name=a.netns, seed=3)
    with Capture(b.netns, b.ifname, direction="in") as cap:
        traffic.tcp_transfer(a.netns, b.netns, b.ip4, 300_000, timeout=30)
    [st] = faultinj.status()
    cut = [f for f in cap.frames if f.length == length and parse(f.data).proto == 6]
    assert cap.kernel_drops == 0
    assert st.counters["matched"] > 150
    assert st.counters["acted"] == len(cut)
    assert (st.counters["acted"] > 0) == (length >= 52)
    assert (st.refused > 0) == (length < 52)   # said, not hidden: chosen but left whole


# ---- 3. csum=bad reaches the receiver's checksum check in every state --------------------

@pytest.fixture
def offload_lab():
    """A lab whose sender keeps tx checksum offload on (the default of a veth)."""
    from conftest import _clear_quietly
    from faultinj.inject.lab import Lab, LinkSettings

    lab = Lab()
    try:
        lab.up(a_settings=LinkSettings(tx_checksum=True))
        yield lab
    finally:
        _clear_quietly(lab)
        lab.down()


def test_corrupt_bad_checksum_is_dropped_when_the_checksum_was_trusted(offload_lab):
    """With the sender's offload on, the skb reaching b's tc ingress is CHECKSUM_PARTIAL: the
    receiver would deliver it unchecked. A datagram corrupted with csum=bad must still fail the
    receiver's check: UdpInCsumErrors rises by exactly acted and nothing corrupted is delivered.
    (At xdp the kernel keeps that state and no program can change it: see corrupt.bpf.c.)"""
    a, b = offload_lab.a, offload_lab.b
    faultinj.apply("corrupt=20%,csum=bad,proto=udp@ingress", b.ifname, netns_name=b.netns, seed=5)
    before = traffic.snmp(b.netns)["Udp"]["InCsumErrors"]
    res = traffic.udp_stream(a.netns, b.netns, b.ip4, 2000, size=200)
    errors = traffic.snmp(b.netns)["Udp"]["InCsumErrors"] - before
    [st] = faultinj.status()
    acted = st.counters["acted"]
    assert acted > 200
    assert errors == acted == 2000 - len(res.received)


def test_corrupt_bad_checksum_tcp_with_offload_at_ingress(offload_lab):
    """TCP too (GSO packets from the veth peer, CHECKSUM_PARTIAL): every corrupted packet is
    counted by the receiver as a checksum error, and the retransmissions bring the data intact."""
    a, b = offload_lab.a, offload_lab.b
    faultinj.apply("corrupt=20%,csum=bad,proto=tcp@ingress", b.ifname, netns_name=b.netns, seed=6)
    before = traffic.snmp(b.netns)["Tcp"]["InCsumErrors"]
    res = traffic.tcp_transfer(a.netns, b.netns, b.ip4, 1_000_000, timeout=30)
    errors = traffic.snmp(b.netns)["Tcp"]["InCsumErrors"] - before
    [st] = faultinj.status()
    assert res.intact
    assert st.counters["acted"] > 0
    assert errors == st.counters["acted"]


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_corrupt_bad_checksum_at_egress_is_counted_by_the_receiver(lab, proto):
    """At tc egress TCP is CHECKSUM_PARTIAL even with the sender's offload off (the checksum is
    completed after tc, over the corrupted bytes), UDP is CHECKSUM_NONE (its checksum already in
    the field). Both must leave wrong: the receiver counts exactly `acted` checksum errors, and
    TCP's retransmissions bring the data intact. (Before the fix TCP left with a valid checksum
    and the corruption was delivered: errors 0.)"""
    a, b = lab.a, lab.b
    subprocess.run(["ip", "netns", "exec", b.netns, "ethtool", "-K", b.ifname, "rx", "off"], check=True)
    faultinj.apply(f"corrupt=10%,csum=bad,proto={proto}@egress", a.ifname, netns_name=a.netns, seed=9)
    counter = "Tcp" if proto == "tcp" else "Udp"
    before = traffic.snmp(b.netns)[counter]["InCsumErrors"]
    if proto == "tcp":
        res = traffic.tcp_transfer(a.netns, b.netns, b.ip4, 300_000, timeout=30)
        assert res.intact
    else:
        res = traffic.udp_stream(a.netns, b.netns, b.ip4, 1000, size=200)
    errors = traffic.snmp(b.netns)[counter]["InCsumErrors"] - before
    [st] = faultinj.status()
    assert st.counters["acted"] > 5
    assert errors == st.counters["acted"]
    if proto == "udp":
        assert len(res.received) == 1000 - errors
