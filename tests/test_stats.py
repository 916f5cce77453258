"""Statistics and the capture parser: pure Python, no kernel."""

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, IPv6
from scapy.layers.l2 import Dot1Q, Ether

from faultinj import stats
from faultinj.packets import parse


def test_wilson_interval_known_value():
    lo, hi = stats.wilson_interval(10, 100, confidence=0.95)
    assert lo == pytest.approx(0.0552, abs=1e-3) and hi == pytest.approx(0.1744, abs=1e-3)


def test_binomial_consistency_can_fail():
    assert stats.binomial_consistent(1000, 10000, 0.1)
    assert not stats.binomial_consistent(1300, 10000, 0.1)
    assert not stats.binomial_consistent(0, 10000, 0.1)


def test_chi2_survival_known_values():
    # critical values of the chi-square distribution
    assert stats.chi2_sf(103.442, 63) == pytest.approx(0.001, rel=0.02)
    assert stats.chi2_sf(3.841, 1) == pytest.approx(0.05, rel=0.01)
    assert stats.chi2_sf(0.0, 5) == 1.0


def test_chi2_uniform_detects_skew():
    assert stats.chi2_uniform([100] * 64)[2] > 0.99
    assert stats.chi2_uniform([200] + [100] * 63)[2] == pytest.approx(0.0039, abs=2e-4)
    assert stats.chi2_uniform([400] + [100] * 63)[2] < 1e-9


def test_parse_tcp_checksum_and_flags():
    good = Ether(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="PA") / b"hello"))
    p = parse(bytes(good))
    assert (p.version, p.proto, p.tcp_flags, p.payload_len, p.l4_csum_ok, p.ip_csum_ok) == (4, 6, 0x18, 5, True, True)
    raw = bytearray(bytes(good))
    raw[-1] ^= 0xFF
    assert parse(bytes(raw)).l4_csum_ok is False
    assert parse(bytes(good)[:40], len(good)).l4_csum_ok is None  # cut short: unknown, not bad


def test_parse_v6_and_udp_and_icmp():
    p = parse(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="fd00::1", dst="fd00::2", hlim=9) / ICMPv6EchoReply(id=3)))
    assert (p.version, p.ttl, p.icmp_type, p.l4_csum_ok) == (6, 9, 129, True)
    p = parse(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(ttl=3) / UDP(sport=1, dport=2) / b"abcd"))
    assert (p.proto, p.sport, p.dport, p.payload, p.l4_csum_ok) == (17, 1, 2, b"abcd", True)
    p = parse(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(ttl=7) / ICMP(type=0)))
    assert (p.ttl, p.icmp_type, p.l4_csum_ok) == (7, 0, True)
    assert parse(b"\x00" * 10).version is None


def test_parse_never_raises_on_garbage():
    import random

    rng = random.Random(3)
    good = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2") / TCP() / b"x")
    for _ in range(20000):
        b = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        parse(bytes(b)[: rng.randint(0, len(b))])
    assert parse(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(ihl=2) / TCP())).tcp_flags is None
