"""Fuzzing every program through BPF_PROG_TEST_RUN: over a million frames in
all. Every output must be the input unchanged, a drop, or a frame changed
only where the fault may change it, with checksums as valid as they were."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import fuzz

from faultinj.faults import parse_spec
from faultinj.kernel import libbpf, program
from faultinj.packets import parse

XDP_DROP, XDP_PASS, TC_UNSPEC, TC_STOLEN = 1, 2, -1, 4
A, B = "10.9.0.1", "10.9.0.2"

TEMPLATES = [bytes(f) for f in (
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / TCP(flags="A") / (b"d" * 40),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B, options=[b"\x01\x01\x01\x00"]) / TCP(flags="A", options=[("NOP", None)] * 4) / (b"d" * 9),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=5) / IP(src=A, dst=B) / TCP(flags="A") / (b"d" * 20),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1AD(vlan=6) / Dot1Q(vlan=5) / IP(src=A, dst=B) / TCP(flags="A") / (b"d" * 20),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="fd00::1", dst="fd00::2") / TCP(flags="A") / (b"d" * 30),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(flags="A") / b"dd",
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=B, dst=A, ttl=64) / ICMP(type=0) / (b"p" * 16),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=7) / IP(src=B, dst=A, ttl=200) / ICMP(type=0),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="fd00::2", dst="fd00::1", hlim=64) / ICMPv6EchoReply(data=b"p" * 8),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / UDP(sport=1, dport=2) / (b"u" * 12),
)]

PROGRAMS = {  # spec -> verdicts meaning "passed" and "dropped"
    "psh-ratio=1@egress": (TC_UNSPEC, None),
    "psh-ratio=1@ingress": (TC_UNSPEC, None),
    "ttl-pong@xdp": (XDP_PASS, None),
    "ttl-pong@ingress": (TC_UNSPEC, None),
    "first-psh@egress": (TC_UNSPEC, None),
    "ttl=-1@xdp": (XDP_PASS, None),
    "dscp=10@egress": (TC_UNSPEC, None),
    "tcp-flags=+rst-ack@ingress": (TC_UNSPEC, None),
    "drop=50%@xdp": (XDP_PASS, XDP_DROP),
    "drop=50%@egress": (TC_UNSPEC, TC_STOLEN),
    "burst-loss=5%/20%@xdp": (XDP_PASS, XDP_DROP),
    "corrupt=50%@xdp": (XDP_PASS, None),
    "corrupt=50%,bits=2@ingress": (TC_UNSPEC, None),
    "truncate=60,p=0.5@egress": (TC_UNSPEC, None),
    "truncate=60,p=0.5@xdp": (XDP_PASS, None),
    "duplicate=50%@egress": (TC_UNSPEC, None),   # dry run: a copy would leave through this namespace's lo
}


class Fuzzer:
    def __init__(self, spec: str):
        self.spec = spec
        self.obj = program.load(parse_spec(spec), seed=1, dry_run=spec.startswith("duplicate"))
        self.runner = libbpf.TestRunner(self.obj.prog_fd)
        self.pass_rc, self.drop_rc = PROGRAMS[spec]
        self.tc = "@xdp" not in spec
        self.runs = 0
        self.changed = 0

    def close(self):
        self.obj.close()

    def check(self, frame: bytes) -> None:
        if len(frame) < 14:  # test_run refuses frames shorter than an Ethernet header
            return
        try:
            res = self.runner.run(frame)
        except Exception as exc:
            # test_run on an skb refuses some inputs (EINVAL: an IP ethertype without a full IP header)
            assert self.tc and "Invalid argument" in str(exc), (self.spec, frame.hex(), exc)
            return
        self.runs += 1
        rc, out = res.retval, res.data
        if self.drop_rc is not None and rc == self.drop_rc:
            return
        assert rc == self.pass_rc, (self.spec, rc, frame.hex())
        if self.spec.startswith("truncate"):   # cut to 60 bytes, or untouched
            assert out == frame or (len(frame) > 60 and out == frame[:60]), (self.spec, frame.hex(), out.hex())
            self.changed += out != frame
            return
        assert len(out) == len(frame), (self.spec, frame.hex())
        if out == frame:
            return
        self.changed += 1
        diff = [i for i in range(len(frame)) if frame[i] != out[i]]
        assert self.drop_rc is None and len(diff) <= (5 if "bits=2" in self.spec else 3), \
            (self.spec, frame.hex(), out.hex())
        before, after = parse(frame), parse(out)
        if before.ip_csum_ok:
            assert after.ip_csum_ok, (self.spec, frame.hex(), out.hex())
        if before.l4_csum_ok:
            assert after.l4_csum_ok, (self.spec, frame.hex(), out.hex())
        if self.spec.startswith(("psh", "first-psh")) and before.tcp_flags is not None and after.tcp_flags is not None:
            assert after.tcp_flags == before.tcp_flags | 0x08
        if self.spec.startswith("ttl-pong") and before.ttl and after.ttl is not None and before.proto == after.proto:
            assert 1 <= after.ttl <= before.ttl
        if self.spec.startswith("ttl=-1") and before.ttl is not None and before.version == after.version:
            assert after.ttl == max(before.ttl - 1, 0)


class Campaign:
    """The fuzz campaign: each part runs once per module, whichever test asks first, and counts
    its own frames, so no test depends on another having run first (the total asks for every part)."""

    def __init__(self, fuzzers: dict[str, Fuzzer]):
        self.fuzzers = fuzzers
        self.frames: dict[str, int] = {}   # part -> frames it ran through the programs

    def run(self, part) -> int:
        if part.__name__ not in self.frames:
            before = sum(f.runs for f in self.fuzzers.values())
            part(self.fuzzers)
            self.frames[part.__name__] = sum(f.runs for f in self.fuzzers.values()) - before
        return self.frames[part.__name__]


@pytest.fixture(scope="module")
def campaign():
    made = Campaign({spec: Fuzzer(spec) for spec in PROGRAMS})
    yield made
    for f in made.fuzzers.values():
        f.close()
    print(f"\nfuzz: {sum(made.frames.values())} frames through BPF_PROG_TEST_RUN")


def mutate(rng: random.Random, frame: bytes, max_flips: int = 4) -> bytes:
    b = bytearray(frame)
    for _ in range(rng.randint(1, max_flips)):
        b[rng.randrange(min(len(b), 80))] = rng.randrange(256)
    return bytes(b)


def random_bytes(fuzzers):
    rng = random.Random(1)
    for f in fuzzers.values():
        for _ in range(23_000):
            f.check(rng.randbytes(rng.randint(0, 160)))


def mutated_valid_frames(fuzzers):
    rng = random.Random(2)
    for f in fuzzers.values():
        for i in range(78_000):
            f.check(mutate(rng, TEMPLATES[i % len(TEMPLATES)]))


def every_truncation_length(fuzzers):
    for f in fuzzers.values():
        for t in TEMPLATES:
            for n in range(len(t) + 1):
                f.check(t[:n])


def ihl_and_doff_out_of_range(fuzzers):
    for f in fuzzers.values():
        for ihl in range(16):
            for doff in range(16):
                frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B, ihl=ihl) / TCP(flags="A", dataofs=doff) / (b"d" * 64))
                f.check(frame)
                f.check(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="fd00::1", dst="fd00::2") / TCP(flags="A", dataofs=doff) / b"d"))


def scapy_fuzz_of_headers(fuzzers):
    layers = [
        lambda: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / fuzz(IP(src=A, dst=B)) / TCP(flags="A") / b"data",
        lambda: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / fuzz(TCP()) / b"data",
        lambda: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / fuzz(IPv6()) / TCP(flags="A") / b"data",
        lambda: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / fuzz(Dot1Q()) / IP(src=A, dst=B) / fuzz(ICMP()),
        lambda: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=B, dst=A) / fuzz(UDP()) / b"x",
        lambda: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6() / fuzz(ICMPv6EchoReply()),
    ]
    for i in range(3000):
        frame = bytes(layers[i % len(layers)]())
        for f in fuzzers.values():
            f.check(frame)


PARTS = (random_bytes, mutated_valid_frames, every_truncation_length, ihl_and_doff_out_of_range,
         scapy_fuzz_of_headers)


@pytest.mark.parametrize("part", PARTS, ids=[p.__name__ for p in PARTS])
def test_part(campaign, part):
    assert campaign.run(part) > 0


def test_a_million_frames_in_total(campaign):
    """Every part (those already run by the tests above are not run again): alone, it runs them all."""
    total = sum(campaign.run(part) for part in PARTS)
    assert total >= 1_000_000, total
    assert all(f.changed > 0 for spec, f in campaign.fuzzers.items()
               if not spec.startswith(("drop", "burst", "duplicate"))), \
        {s: f.changed for s, f in campaign.fuzzers.items()}


# ---- a property test of the parser: PSH set exactly on what the model says is eligible ------

@st.composite
def tcp_frames(draw):
    vlans = draw(st.integers(0, 2))
    v6 = draw(st.booleans())
    flags = draw(st.integers(0, 255))
    payload = draw(st.binary(max_size=40))
    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    for i in range(vlans):
        pkt = pkt / (Dot1AD(vlan=i + 1) if i == 0 and vlans == 2 else Dot1Q(vlan=i + 1))
    if v6:
        pkt = pkt / IPv6(src="fd00::1", dst="fd00::2")
        if draw(st.booleans()):
            pkt = pkt / IPv6ExtHdrHopByHop()
    else:
        opts = draw(st.integers(0, 10))
        pkt = pkt / IP(src=A, dst=B, options=[b"\x01" * (opts * 4)] if opts else [])
    doff_opts = draw(st.integers(0, 10))
    pkt = pkt / TCP(flags=flags, options=[("NOP", None)] * (doff_opts * 4)) / payload
    return bytes(pkt), flags, len(payload)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tcp_frames())
def test_psh_property(frame_flags_len):
    frame, flags, plen = frame_flags_len
    eligible = plen > 0 and not flags & 0x0F
    obj = _psh_obj()
    out = libbpf.test_run(obj.prog_fd, frame).data
    after = Ether(out)[TCP]
    assert int(after.flags) == (flags | 0x08 if eligible else flags)
    assert (out == frame) == (not eligible)
    if eligible:
        got = after.chksum
        del after.chksum
        assert Ether(bytes(Ether(out)))[TCP].chksum == got  # unchanged frame recomputes to itself
        rebuilt = Ether(out)
        del rebuilt[TCP].chksum
        assert Ether(bytes(rebuilt))[TCP].chksum == got


_cache = {}


def _psh_obj():
    if "psh" not in _cache:
        _cache["psh"] = program.load(parse_spec("psh-ratio=1"), seed=1)
    return _cache["psh"]
