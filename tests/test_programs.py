"""Each program on scapy-crafted frames through BPF_PROG_TEST_RUN (real kernel, no attach)."""

from __future__ import annotations

import ctypes
import shutil
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting)
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Padding

from faultinj import layouts, stats
from faultinj.errors import BuildError, EnvironmentProblem, VerifierError
from faultinj.faults import CATALOGUE, parse_spec
from faultinj.kernel import build, layout, libbpf, maps, program

DATA = Path(__file__).parent / "data"
XDP_DROP, XDP_PASS = 1, 2
TC_UNSPEC, TC_STOLEN = -1, 4
PSH = 0x08


@contextmanager
def loaded(spec: str, seed: int = 1, dry_run: bool = False):
    obj = program.load(parse_spec(spec), seed=seed, dry_run=dry_run)
    try:
        yield obj
    finally:
        obj.close()


def run(obj, frame) -> tuple[int, bytes]:
    r = libbpf.test_run(obj.prog_fd, bytes(frame))
    return r.retval, r.data


def counters(obj) -> dict:
    return maps.read_counters(obj.map_fds["fi_counters"])


def ip_checksum_ok(frame: bytes) -> bool:
    pkt = Ether(frame)
    got = pkt[IP].chksum
    del pkt[IP].chksum
    return Ether(bytes(pkt))[IP].chksum == got


def l4_checksum_ok(frame: bytes, layer) -> bool:
    pkt = Ether(frame)
    got = pkt[layer].chksum if hasattr(pkt[layer], "chksum") else pkt[layer].cksum
    if hasattr(pkt[layer], "chksum"):
        del pkt[layer].chksum
    else:
        del pkt[layer].cksum
    rebuilt = Ether(bytes(pkt))[layer]
    return (rebuilt.chksum if hasattr(rebuilt, "chksum") else rebuilt.cksum) == got


def diff_offsets(a: bytes, b: bytes) -> set[int]:
    assert len(a) == len(b)
    return {i for i in range(len(a)) if a[i] != b[i]}


A, B = "10.1.0.1", "10.1.0.2"
PONG4 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=B, dst=A, ttl=64) / ICMP(type=0, id=7, seq=1) / (b"p" * 32)
PONG6 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="fd00::2", dst="fd00::1", hlim=64) / ICMPv6EchoReply(id=7, seq=1, data=b"p" * 32)
DATA4 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="A", seq=1000) / (b"d" * 100)
DATA6 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=40000, dport=80, flags="A") / (b"d" * 100)


# ---- ttl-pong ------------------------------------------------------------------------

PONG_VARIANTS = {
    "ipv4": PONG4,
    "vlan": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=10) / IP(src=B, dst=A, ttl=64) / ICMP(type=0) / (b"p" * 8),
    "qinq": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1AD(vlan=20) / Dot1Q(vlan=10) / IP(src=B, dst=A, ttl=64) / ICMP(type=0),
    "ip-options": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=B, dst=A, ttl=64, options=[b"\x01\x01\x01\x00"]) / ICMP(type=0),
}


@pytest.mark.parametrize("hook", ["xdp", "tc-ingress"])
@pytest.mark.parametrize("variant", PONG_VARIANTS)
def test_ttl_pong_sets_ttl_in_range_with_valid_checksum(hook, variant):
    frame = bytes(PONG_VARIANTS[variant])
    with loaded(f"ttl-pong@{hook}") as obj:
        ttls = set()
        for _ in range(200):
            rc, out = run(obj, frame)
            assert rc == (XDP_PASS if hook == "xdp" else TC_UNSPEC)
            pkt = Ether(out)
            assert 1 <= pkt[IP].ttl <= 64
            assert ip_checksum_ok(out)
            ip_off = frame.index(bytes(PONG_VARIANTS[variant][IP])[:12])
            # only the TTL and the header checksum may change
            assert diff_offsets(frame, out) <= {ip_off + 8, ip_off + 10, ip_off + 11}
            ttls.add(pkt[IP].ttl)
        assert len(ttls) > 40  # spread, not a constant
        assert counters(obj) == {"seen": 200, "matched": 200, "acted": 200}


def test_ttl_pong_ipv6_hop_limit():
    frame = bytes(PONG6)
    with loaded("ttl-pong") as obj:
        seen = set()
        for _ in range(100):
            _, out = run(obj, frame)
            pkt = Ether(out)
            assert 1 <= pkt[IPv6].hlim <= 64
            assert diff_offsets(frame, out) <= {14 + 7}  # the hop limit only
            assert l4_checksum_ok(out, ICMPv6EchoReply)  # hop limit is not in the pseudo header
            seen.add(pkt[IPv6].hlim)
        assert len(seen) > 30


def test_ttl_pong_is_uniform_over_1_to_ttl():
    frame = bytes(PONG4)
    with loaded("ttl-pong") as obj:
        counts = Counter(Ether(run(obj, frame)[1])[IP].ttl for _ in range(6400))
    chi, df, p = stats.chi2_uniform([counts.get(t, 0) for t in range(1, 65)])
    assert set(counts) <= set(range(1, 65))
    assert p > 0.001, f"chi2={chi} df={df} p={p}"


@pytest.mark.parametrize("frame", [
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B, ttl=64) / ICMP(type=8),                    # a ping, not a pong
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoRequest(),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=B, dst=A, ttl=0) / ICMP(type=0),                      # no range to draw from
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=B, dst=A, ttl=64, frag=5) / ICMP(type=0),             # non-first fragment
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=B, dst=A) / UDP() / b"x",
    Ether(type=0x0806) / (b"\x00" * 28),                                   # ARP
], ids=["echo-request", "echo-request-v6", "ttl0", "fragment", "udp", "arp"])
def test_ttl_pong_leaves_other_packets_alone(frame):
    with loaded("ttl-pong") as obj:
        rc, out = run(obj, frame)
        assert (rc, out) == (XDP_PASS, bytes(frame))
        assert counters(obj)["acted"] == 0


def test_ttl_1_stays_1():
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=B, dst=A, ttl=1) / ICMP(type=0))
    with loaded("ttl-pong") as obj:
        assert all(Ether(run(obj, frame)[1])[IP].ttl == 1 for _ in range(20))


# ---- psh-ratio ------------------------------------------------------------------------

TCP_VARIANTS = {
    "ipv4": DATA4,
    "ipv6": DATA6,
    "vlan": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=3) / IP(src=A, dst=B) / TCP(flags="A") / (b"d" * 10),
    "qinq": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1AD(vlan=4) / Dot1Q(vlan=3) / IP(src=A, dst=B) / TCP(flags="A") / (b"d" * 10),
    "ip-options": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B, options=[b"\x01\x01\x01\x00" * 3]) / TCP(flags="A") / (b"d" * 10),
    "tcp-options": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / TCP(flags="A", options=[("NOP", None), ("NOP", None),
                                                                          ("Timestamp", (1, 2))]) / (b"d" * 10),
    "v6-ext": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrRouting() / TCP(flags="A") / (b"d" * 10),
    "v6-first-fragment": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(offset=0, m=1)
    / TCP(flags="A") / (b"d" * 10),
    "ece-cwr-urg": Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / TCP(flags="AECU") / (b"d" * 10),
}


@pytest.mark.parametrize("variant", TCP_VARIANTS)
def test_psh_ratio_1_sets_psh_with_valid_checksum(variant):
    frame = bytes(TCP_VARIANTS[variant])
    with loaded("psh-ratio=1") as obj:
        rc, out = run(obj, frame)
    pkt = Ether(out)
    assert rc == TC_UNSPEC
    assert pkt[TCP].flags & PSH
    assert int(pkt[TCP].flags) == int(Ether(frame)[TCP].flags) | PSH
    assert l4_checksum_ok(out, TCP)
    assert len(diff_offsets(frame, out)) <= 3  # the flags byte and the checksum


@pytest.mark.parametrize("frame", [
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / TCP(flags="S") / (b"d" * 10),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / TCP(flags="FA") / (b"d" * 10),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / TCP(flags="RA") / (b"d" * 10),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / TCP(flags="PA") / (b"d" * 10),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / TCP(flags="A"),                                         # pure ACK
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / TCP(flags="A") / Padding(b"\0" * 6),                   # padded to 60 bytes
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B, frag=10) / TCP(flags="A") / (b"d" * 10),                 # non-first fragment
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(offset=8) / TCP(flags="A") / b"d",
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / UDP() / (b"d" * 10),
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / TCP(flags="A", dataofs=4) / (b"d" * 10),                # doff out of range
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B, ihl=4) / TCP(flags="A") / (b"d" * 10),                    # ihl out of range
], ids=["syn", "fin", "rst", "psh", "pure-ack", "padded-ack", "v4-fragment", "v6-fragment", "udp", "bad-doff",
        "bad-ihl"])
def test_psh_ratio_leaves_ineligible_segments_alone(frame):
    with loaded("psh-ratio=1") as obj:
        rc, out = run(obj, frame)
        assert (rc, out) == (TC_UNSPEC, bytes(frame))
        assert counters(obj)["acted"] == 0


def test_psh_ratio_fraction_within_binomial_ci():
    n, ratio = 20000, 10
    frame = bytes(DATA4)
    with loaded(f"psh-ratio={ratio}", seed=99) as obj:
        hit = sum(bool(Ether(run(obj, frame)[1])[TCP].flags & PSH) for _ in range(n))
        c = counters(obj)
    assert c == {"seen": n, "matched": n, "acted": hit}
    lo, hi = stats.wilson_interval(hit, n, 0.999)
    assert lo <= 1 / ratio <= hi, (hit, n, lo, hi)


# ---- drop -----------------------------------------------------------------------------

@pytest.mark.parametrize("hook,drop_rc,pass_rc", [("xdp", XDP_DROP, XDP_PASS), ("tc-egress", TC_STOLEN, TC_UNSPEC),
                                                  ("tc-ingress", TC_STOLEN, TC_UNSPEC)])
def test_drop_probability_and_counters(hook, drop_rc, pass_rc):
    n = 10000
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / UDP(sport=1000, dport=2000) / b"x")
    with loaded(f"drop=0.2@{hook}", seed=5) as obj:
        rcs = Counter(run(obj, frame)[0] for _ in range(n))
        assert set(rcs) <= {drop_rc, pass_rc}
        assert counters(obj) == {"seen": n, "matched": n, "acted": rcs[drop_rc]}
    assert stats.binomial_consistent(rcs[drop_rc], n, 0.2)


@pytest.mark.parametrize("p,expect", [("0", 0), ("100%", 500)])
def test_drop_extremes(p, expect):
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / UDP() / b"x")
    with loaded(f"drop={p}@xdp") as obj:
        assert sum(run(obj, frame)[0] == XDP_DROP for _ in range(500)) == expect


# ---- shared behaviour: seeds, deadline, switch, malformed frames -------------------------

def _decisions(spec: str, seed: int, frames: list[bytes]) -> list[tuple[int, bytes]]:
    with loaded(spec, seed=seed) as obj:
        return [run(obj, f) for f in frames]


def test_seeded_runs_repeat_packet_for_packet():
    flows = [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / UDP(sport=1000 + i, dport=53) / b"q") for i in range(5)]
    frames = [flows[i % 5] for i in range(500)]
    first = _decisions("drop=0.3@xdp", 1234, frames)
    assert first == _decisions("drop=0.3@xdp", 1234, frames)
    assert first != _decisions("drop=0.3@xdp", 1235, frames)


def test_a_flows_decisions_do_not_depend_on_other_flows():
    mine = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / UDP(sport=1, dport=2) / b"x")
    other = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / UDP(sport=3, dport=4) / b"x")
    alone = _decisions("drop=0.5@tc-egress", 7, [mine] * 200)
    mixed = _decisions("drop=0.5@tc-egress", 7, [f for m in range(200) for f in (other, mine, other)])
    assert [d for i, d in enumerate(mixed) if i % 3 == 1] == alone


def test_seeded_ttls_repeat():
    frames = [bytes(PONG4)] * 100
    assert _decisions("ttl-pong", 9, frames) == _decisions("ttl-pong", 9, frames)


def _set_config(obj, **changes):
    cfg = maps.read_config(obj.map_fds)
    for k, v in changes.items():
        setattr(cfg, k, v)
    maps.write_config(obj.map_fds, cfg)


@pytest.mark.parametrize("spec,rc", [("drop=100%@xdp", XDP_PASS), ("corrupt=1@xdp", XDP_PASS),
                                     ("truncate=40@egress", TC_UNSPEC), ("duplicate=1@egress", TC_UNSPEC)])
@pytest.mark.parametrize("change", [{"deadline_ns": 1}, {"active": False}])
def test_past_deadline_or_switched_off_passes_everything_and_counts_nothing(change, spec, rc):
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B) / UDP() / (b"x" * 20))
    with loaded(spec, dry_run=True) as obj:
        run(obj, frame)
        assert counters(obj) == {"seen": 1, "matched": 1, "acted": 1}
        _set_config(obj, **change)
        assert all(run(obj, frame) == (rc, frame) for _ in range(50))
        assert counters(obj) == {"seen": 1, "matched": 1, "acted": 1}


def test_live_config_change_takes_effect_without_reload():
    frame = bytes(DATA4)
    with loaded("psh-ratio=1000000000") as obj:
        assert not any(Ether(run(obj, frame)[1])[TCP].flags & PSH for _ in range(50))
        _set_config(obj, threshold=parse_spec("psh-ratio=1").threshold)
        assert all(Ether(run(obj, frame)[1])[TCP].flags & PSH for _ in range(50))


@pytest.mark.parametrize("spec,frame", [
    ("ttl-pong@xdp", PONG4), ("ttl-pong@xdp", PONG6), ("psh-ratio=1", DATA4), ("psh-ratio=1", DATA6),
    ("drop=0@xdp", DATA4),
])
def test_truncated_frames(spec, frame):
    """Cut inside the headers: passed untouched. Cut in the payload: the headers may be
    mangled, and then exactly as in the whole frame."""
    full = bytes(frame)
    with loaded(spec, seed=3) as whole_obj:
        _, whole_out = run(whole_obj, full)
    # test_run on an skb refuses (EINVAL) an IP frame shorter than its base header
    shortest = 14 if "xdp" in spec else 14 + (20 if IP in frame else 40)
    for n in range(shortest, len(full)):
        cut = full[:n]
        with loaded(spec, seed=3) as obj:  # fresh stream: the same draw as the whole frame
            rc, out = run(obj, cut)
        assert rc in (XDP_PASS, TC_UNSPEC)
        assert len(out) == n
        assert out == cut or out == whole_out[:n], f"length {n}"


def test_random_bytes_never_crash_and_pass_or_drop():
    import random

    rng = random.Random(1)
    with loaded("psh-ratio=1") as psh, loaded("ttl-pong") as pong:
        for _ in range(3000):
            frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=A, dst=B)) + rng.randbytes(rng.randint(0, 80))
            frame = bytearray(frame)
            for _ in range(rng.randint(0, 6)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
            frame = bytes(frame)
            for obj in (psh, pong):
                rc, out = run(obj, frame)
                assert rc in (XDP_PASS, TC_UNSPEC) and len(out) == len(frame)
                changed = diff_offsets(frame, out)
                assert len(changed) <= 3


# ---- one layout: C and Python ---------------------------------------------------------------

PROGRAMS = sorted({(f.program, f.default_hook) for f in CATALOGUE.values()}) + [("trace", "trace")]


@pytest.mark.parametrize("program,hook", PROGRAMS)
def test_python_layouts_equal_the_objects_btf(program, hook):
    """Every struct and enum user space writes or reads (config, filter, journal event, tracer config,
    actions, counters) is in faultinj/layouts.py as the compiled object's BTF says it, and the ctypes
    structures built from it lay out as C does."""
    obj_path = build.compile_program(program, hook)
    structs, enums = layout.read_btf(str(obj_path), None, tuple(layouts.STRUCTS) + tuple(layouts.ENUMS))
    assert "fi_match" in structs                 # every program filters
    assert "fi_event" in structs or program == "trace"
    for name, c in structs.items():
        assert c == layouts.STRUCTS[name], name
        assert ctypes.sizeof(layout.struct_type(name)) == c[0]
    for name, c in enums.items():
        assert c == layouts.ENUMS[name], name
    assert layout.mismatches(str(obj_path)) == []


def test_layouts_py_is_what_the_btf_of_layouts_c_says(capsys):
    """faultinj/layouts.py's generated part is current: regenerated from the BTF of bpf/lib/layouts.c
    and of each program naming its own types (FI_LAYOUT) it is the same text. Cost: 4 clang runs (~1.5 s)."""
    assert build.write_layouts([]) == 0, capsys.readouterr().err


def test_the_tracer_shows_every_hop_the_programs_report():
    """trace.py reads its record formats, hop ids, modes and drop flags from faultinj/layouts.py
    (the BTF); a hop added to enum fi_hop in C is shown by the tracer or handled by it by name, or
    this fails (and a member added to its records stops trace.py's import, naming the members)."""
    from faultinj import trace

    assert trace.EVENT.format == layouts.record("fi_trace_event")[0].format
    assert trace.COUNT_KEY.format == layouts.record("fi_trace_count_key")[0].format
    hop = layouts.enum("fi_hop")
    handled = set(trace.HOPS) | {trace.HOP_DELIVERED, trace.HOP_FUNC}
    assert set(hop.values()) == handled, {n: v for n, v in hop.items() if v not in handled}
    assert set(trace.HOP_POINTS) == set(trace.HOPS)
    assert {trace.DROP_DELIVERED, trace.DROP_SHARED} == set(layouts.enum("fi_drop_flag").values())


def _tree_with(tmp_path, path: str, old: str, new: str) -> Path:
    """A copy of bpf/ with one file (path, inside bpf/) edited."""
    tree = tmp_path / "bpf"
    shutil.copytree(build.bpf_dir(), tree)
    f = tree / path
    text = f.read_text()
    assert old in text
    f.write_text(text.replace(old, new))
    return tree


_DRIFTS = {
    # a field added to the journal event, in C only
    "field": ("drop", "lib/fault.h", "\t__u32 gen;           /* fi_config.gen",
              "\t__u32 hops;\n\t__u32 gen;           /* fi_config.gen",
              r"struct fi_event\.hops: .* in C, None in faultinj/layouts\.py"),
    # an action added, in C only: no loaded program's BTF carries enum fi_action (only its constants)
    "action": ("drop", "lib/fault.h", "\tFI_A_DELAY,", "\tFI_A_DELAY,\n\tFI_A_REORDER,", r"enum fi_action: .*FI_A_REORDER"),
    # a fault's own constant changed (FI_LAYOUT in bpf/corrupt.bpf.c)
    "fault's own enum": ("corrupt", "corrupt.bpf.c", "FI_CORRUPT_BAD_CSUM = 1 << 8,", "FI_CORRUPT_BAD_CSUM = 1 << 9,",
                         r"corrupt\.bpf\.c: .*enum fi_corrupt_param: .*FI_CORRUPT_BAD_CSUM"),
}


@pytest.mark.parametrize("drift", list(_DRIFTS))
def test_a_layout_drift_refuses_the_build(monkeypatch, tmp_path, drift):
    """A program whose struct (or an enum Python reads) differs from faultinj/layouts.py is not built:
    the error names the member and the command that regenerates layouts.py; nothing is cached. Then
    that command alone (layouts.py regenerated from the new BTF) makes the build pass: nothing in
    Python changes by hand. Cost: ~8 clang runs (~3 s)."""
    program, path, old, new, says = _DRIFTS[drift]
    tree = _tree_with(tmp_path, path, old, new)
    monkeypatch.setattr(build, "bpf_dir", lambda: tree)
    monkeypatch.setenv("FAULTINJ_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(BuildError, match=says) as err:
        build.compile_program(program, "tc-egress")
    assert "python -m faultinj.kernel.build layouts --write" in str(err.value)
    assert not list((tmp_path / "cache").glob(f"{program}.tc.*.o"))
    generated: dict = {}   # what `python -m faultinj.kernel.build layouts --write` writes, from the edited tree
    exec(build.layouts_text(tree), generated)
    for name in ("STRUCTS", "ENUMS", "ANCHORS"):
        monkeypatch.setattr(layouts, name, generated[name])
    assert layout.mismatches(str(build.compile_program(program, "tc-egress"))) == []
    if drift == "action":
        assert layouts.enum_names("fi_action", "FI_A_")[5] == "reorder"
    elif drift == "field":
        fmt, names = layouts.record("fi_event")
        assert "hops" in names and fmt.size == layouts.size("fi_event") > 80
    else:
        assert layouts.enum("fi_corrupt_param")["FI_CORRUPT_BAD_CSUM"] == 1 << 9


# ---- load errors -------------------------------------------------------------------------

def test_verifier_rejection_names_program_and_log():
    obj_path = build.compile_program("bad_verifier", "xdp", source=DATA / "bad_verifier.bpf.c")
    with pytest.raises(VerifierError) as err:
        libbpf.load_object(str(obj_path), maps.MAP_NAMES)
    msg = str(err.value)
    assert "bad_verifier" in msg and "invalid access to packet" in msg
    assert "\n" not in msg


def test_compile_error_shows_clangs_message():
    with pytest.raises(BuildError) as err:
        build.compile_program("bad_syntax", "tc-egress", source=DATA / "bad_syntax.bpf.c")
    assert "expected ';'" in str(err.value)


def test_missing_clang_says_what_to_install(monkeypatch):
    monkeypatch.setenv("FAULTINJ_CLANG", "/nonexistent/clang")
    with pytest.raises(EnvironmentProblem, match="apt-get install clang"):
        build.compile_program("drop", "xdp")


def test_build_cache_hit_runs_no_clang(monkeypatch, tmp_path):
    monkeypatch.setenv("FAULTINJ_CACHE_DIR", str(tmp_path))
    first = build.compile_program("drop", "xdp")
    calls = []
    monkeypatch.setattr(build.subprocess, "run", lambda *a, **k: calls.append(a))
    assert build.compile_program("drop", "xdp") == first
    assert calls == []


# ---- match filters: each field, matching and not, read from the config map ---------------

E = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
V4 = Ether(**E) / IP(src="10.1.0.1", dst="10.2.0.9") / TCP(sport=1500, dport=443, flags="S") / b"x"
V6 = Ether(**E) / IPv6(src="fd00:1::5", dst="fd00:2::9") / UDP(sport=53, dport=5353) / b"x"
TAGGED = Ether(**E) / Dot1Q(vlan=42) / IP(src="10.1.0.1", dst="10.2.0.9") / UDP(sport=1, dport=2) / b"x"
ARP = Ether(**E, type=0x0806) / (b"\x00" * 28)

FILTER_CASES = [
    ("src=10.1.0.0/16", [V4, TAGGED], [V6, ARP, Ether(**E) / IP(src="10.3.0.1") / UDP()]),
    ("dst=10.2.0.9", [V4, TAGGED], [V6, Ether(**E) / IP(dst="10.2.0.8") / UDP()]),
    ("src=fd00:1::/32", [V6], [V4, ARP]),
    ("dst=fd00:2::/64", [V6], [V4, Ether(**E) / IPv6(dst="fd00:3::1") / UDP()]),
    ("proto=tcp", [V4], [V6, TAGGED, ARP]),
    ("proto=udp", [V6, TAGGED], [V4, ARP]),
    ("sport=1000-2000", [V4], [V6, TAGGED, ARP]),
    ("dport=5353", [V6], [V4, TAGGED]),
    ("flags=+syn", [V4], [V6, Ether(**E) / IP() / TCP(flags="A") / b"x"]),
    ("flags=-ack", [V4], [Ether(**E) / IP() / TCP(flags="SA") / b"x", V6]),
    ("vlan=42", [TAGGED], [V4, Ether(**E) / Dot1Q(vlan=41) / IP() / UDP()]),
    ("proto=tcp,dport=443,dst=10.2.0.0/24", [V4], [V6, Ether(**E) / IP(dst="10.2.0.9") / TCP(dport=80) / b"x"]),
]


@pytest.mark.parametrize("filters,hits,misses", FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
@pytest.mark.parametrize("hook", ["xdp", "egress"])
def test_each_filter_field(filters, hits, misses, hook):
    drop_rc = XDP_DROP if hook == "xdp" else TC_STOLEN
    with loaded(f"drop=100%,{filters}@{hook}") as obj:
        for f in hits:
            assert run(obj, f)[0] == drop_rc, f.summary()
        for f in misses:
            assert run(obj, f)[0] != drop_rc, f.summary()
        assert counters(obj)["matched"] == len(hits)


def test_filters_change_live_in_the_config_map():
    with loaded("drop=100%,proto=udp@xdp") as obj:
        assert run(obj, V4)[0] == XDP_PASS
        _set_config(obj, match=bytes(layout.match_struct(parse_spec("drop=1,proto=tcp").match)))
        assert run(obj, V4)[0] == XDP_DROP


def test_psh_and_ttl_respect_filters():
    dport = Ether(bytes(DATA4))[TCP].dport
    with loaded(f"psh-ratio=1,dport={dport + 1}") as obj:
        assert not Ether(run(obj, DATA4)[1])[TCP].flags & PSH
    with loaded(f"psh-ratio=1,dport={dport}") as obj:
        assert Ether(run(obj, DATA4)[1])[TCP].flags & PSH
    with loaded("ttl-pong,src=10.99.0.0/16") as obj:
        assert run(obj, PONG4)[1] == bytes(PONG4)
    with loaded(f"ttl-pong,src={B}") as obj:
        assert run(obj, PONG4)[1] != bytes(PONG4)


# ---- first-psh -------------------------------------------------------------------------

def _seg(seq, flags="A", sport=1000, data=b"x" * 10):
    return bytes(Ether(**E) / IP(src=A, dst=B) / TCP(sport=sport, dport=80, seq=seq, flags=flags) / data)


def test_first_psh_marks_the_first_data_segment_of_each_connection():
    frames = [_seg(0, "S", data=b""), _seg(1), _seg(11), _seg(1), _seg(21),       # conn 1, with a retransmission
              _seg(100, sport=2000), _seg(110, sport=2000),                        # conn 2
              _seg(0, "S", data=b""), _seg(500), _seg(510),                        # conn 1's flow, reused
              _seg(600, "PA", sport=3000), _seg(610, sport=3000)]                  # already PSH: nothing to do
    want_psh = [False, True, False, True, False, True, False, False, True, False, True, False]
    with loaded("first-psh") as obj:
        outs = [run(obj, f)[1] for f in frames]
        c = counters(obj)
    assert [bool(Ether(o)[TCP].flags & PSH) for o in outs] == want_psh
    for o in outs:
        assert l4_checksum_ok(o, TCP)
    assert c["matched"] == 5 and c["acted"] == 4


def test_first_psh_probability_zero_and_filters():
    with loaded("first-psh=0") as obj:
        assert run(obj, _seg(1))[1] == _seg(1)
    with loaded("first-psh,dport=81") as obj:
        assert run(obj, _seg(1))[1] == _seg(1)


# ---- ttl, dscp, ecn-ce (one program rewriting one IP header field) ------------------------

UDP4 = Ether(**E) / IP(src=A, dst=B, ttl=64, tos=0x01) / UDP(sport=7, dport=9) / b"x"     # ECT(1)
UDP6 = Ether(**E) / IPv6(src="fd00::1", dst="fd00::2", hlim=64, tc=0x02) / UDP(sport=7, dport=9) / b"x"


@pytest.mark.parametrize("spec,v4,v6", [
    ("ttl=1", {"ttl": 1, "tos": 0x01}, {"hlim": 1, "tc": 0x02}),
    ("ttl=-2", {"ttl": 62, "tos": 0x01}, {"hlim": 62, "tc": 0x02}),
    ("ttl=-200", {"ttl": 0, "tos": 0x01}, {"hlim": 0, "tc": 0x02}),
    ("dscp=46", {"ttl": 64, "tos": 46 << 2 | 0x01}, {"hlim": 64, "tc": 46 << 2 | 0x02}),
    ("ecn-ce", {"ttl": 64, "tos": 0x03}, {"hlim": 64, "tc": 0x03}),
])
@pytest.mark.parametrize("hook", ["xdp", "egress"])
def test_ip_rewrites(spec, v4, v6, hook):
    with loaded(f"{spec}@{hook}") as obj:
        out4 = Ether(run(obj, UDP4)[1])
        out6 = Ether(run(obj, UDP6)[1])
    assert {k: getattr(out4[IP], k) for k in v4} == v4
    assert ip_checksum_ok(bytes(out4))
    assert l4_checksum_ok(bytes(out4), UDP)
    assert {k: getattr(out6[IPv6], k) for k in v6} == v6
    assert l4_checksum_ok(bytes(out6), UDP)  # neither TC nor hop limit is in the pseudo header
    assert out6[IPv6].fl == Ether(bytes(UDP6))[IPv6].fl


def test_ecn_ce_leaves_not_ect_alone():
    not_ect = Ether(**E) / IP(src=A, dst=B, tos=0xB8) / UDP() / b"x"
    with loaded("ecn-ce") as obj:
        assert run(obj, not_ect)[1] == bytes(not_ect)
        assert counters(obj) == {"seen": 1, "matched": 0, "acted": 0}


def test_rate_modifier_for_a_fault_whose_value_is_not_a_rate():
    frame = bytes(UDP4)
    with loaded("ttl=1,p=0.25", seed=8) as obj:
        hit = sum(Ether(run(obj, frame)[1])[IP].ttl == 1 for _ in range(8000))
    assert stats.binomial_consistent(hit, 8000, 0.25)


def test_nth_acts_on_the_kth_packet_of_each_flow():
    flows = [bytes(Ether(**E) / IP(src=A, dst=B) / UDP(sport=1000 + i, dport=53) / b"q") for i in range(4)]
    with loaded("drop=100%,nth=3@xdp") as obj:
        verdicts = [[run(obj, f)[0] for f in flows] for _ in range(6)]  # interleaved flows
    assert [[v == XDP_DROP for v in row] for row in verdicts] == [[k == 2] * 4 for k in range(6)]


# ---- tcp-flags --------------------------------------------------------------------------

@pytest.mark.parametrize("change,before,after", [
    ("+rst", "A", "RA"), ("-ack", "PA", "P"), ("+fin-psh", "PA", "FA"), ("+ece+cwr", "A", "AEC"),
    ("+syn", "S", "S"),  # already so: nothing changes
])
@pytest.mark.parametrize("hook", ["egress", "ingress"])
def test_tcp_flags_set_and_clear(change, before, after, hook):
    frame = bytes(Ether(**E) / IP(src=A, dst=B) / TCP(flags=before) / (b"d" * 20))
    with loaded(f"tcp-flags={change}@{hook}") as obj:
        out = run(obj, frame)[1]
        c = counters(obj)
    assert Ether(out)[TCP].flags == TCP(flags=after).flags
    assert l4_checksum_ok(out, TCP)
    assert c["acted"] == (0 if before == after else 1)


def test_tcp_flags_on_the_nth_packet_and_at_a_rate():
    frame = bytes(DATA6)
    with loaded("tcp-flags=+urg,nth=2") as obj:
        urg = [bool(Ether(run(obj, frame)[1])[TCP].flags & 0x20) for _ in range(5)]
    assert urg == [False, True, False, False, False]
    with loaded("tcp-flags=+urg,ratio=4", seed=2) as obj:
        hit = sum(bool(Ether(run(obj, frame)[1])[TCP].flags & 0x20) for _ in range(8000))
    assert stats.binomial_consistent(hit, 8000, 0.25)


# ---- burst-loss (Gilbert-Elliott) ---------------------------------------------------------

def _losses(spec: str, n: int, seed: int = 4) -> list[bool]:
    frame = bytes(Ether(**E) / IP(src=A, dst=B) / UDP(sport=1, dport=2) / b"x")
    with loaded(spec, seed=seed) as obj:
        runner = libbpf.TestRunner(obj.prog_fd)
        return [runner.run(frame).retval == XDP_DROP for _ in range(n)]


def test_burst_loss_rate_and_burst_length_follow_the_model():
    from faultinj.faults.burst_loss import expected_loss

    spec = "burst-loss=2%/25%@xdp"
    lost = _losses(spec, 100_000)
    bursts, run_len = [], 0
    for x in lost + [False]:
        if x:
            run_len += 1
        elif run_len:
            bursts.append(run_len)
            run_len = 0
    rate = sum(lost) / len(lost)
    want = expected_loss(parse_spec(spec).value)             # 0.02 / 0.27 = 7.4%
    assert abs(rate - want) / want < 0.15, (rate, want)       # correlated losses: no binomial CI here
    assert abs(sum(bursts) / len(bursts) - 1 / 0.25) < 0.6     # mean burst 1/r = 4 packets
    assert max(bursts) > 10                                   # bursts, not independent drops


def test_burst_loss_is_seeded_and_k_h_work():
    assert _losses("burst-loss=5%/20%@xdp", 3000, seed=1) == _losses("burst-loss=5%/20%@xdp", 3000, seed=1)
    assert _losses("burst-loss=5%/20%@xdp", 3000, seed=1) != _losses("burst-loss=5%/20%@xdp", 3000, seed=2)
    assert not any(_losses("burst-loss=0/50%/100%/0@xdp", 2000))          # never leaves the good state
    lost = _losses("burst-loss=0/50%/100%/10%@xdp", 20000)                # good state loses 1-k = 10%
    assert stats.binomial_consistent(sum(lost), len(lost), 0.10)


# ---- corrupt, truncate, duplicate ---------------------------------------------------------

def _bits_changed(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b))


E2 = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
PAYLOAD = bytes(range(256)) * 2
CORRUPTIBLE = {
    "tcp4": (Ether(**E2) / IP(src=A, dst=B) / TCP(sport=1, dport=2, flags="PA") / PAYLOAD, TCP),
    "tcp6": (Ether(**E2) / IPv6(src="fd00::1", dst="fd00::2") / TCP(sport=1, dport=2, flags="PA") / PAYLOAD, TCP),
    "udp4": (Ether(**E2) / IP(src=A, dst=B) / UDP(sport=1, dport=2) / PAYLOAD, UDP),
    "udp6-odd": (Ether(**E2) / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2) / PAYLOAD[:77], UDP),
    "icmp4": (Ether(**E2) / IP(src=A, dst=B) / ICMP(type=8) / PAYLOAD, ICMP),
    "icmp6": (Ether(**E2) / IPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoRequest(data=PAYLOAD), ICMPv6EchoRequest),
    "vlan-tcp4": (Ether(**E2) / Dot1Q(vlan=5) / IP(src=A, dst=B) / TCP(sport=1, dport=2) / PAYLOAD, TCP),
}


def _payload_offset(frame: bytes, layer) -> int:
    pkt = Ether(frame)
    return len(frame) - len(pkt[layer].payload) if layer is not ICMPv6EchoRequest else len(frame) - len(PAYLOAD)


@pytest.mark.parametrize("hook", ["xdp", "tc-egress", "tc-ingress"])
@pytest.mark.parametrize("variant", list(CORRUPTIBLE))
def test_corrupt_flips_payload_bits_and_fixes_the_checksum(hook, variant):
    pkt, layer = CORRUPTIBLE[variant]
    frame = bytes(pkt)
    start = _payload_offset(frame, layer)
    with loaded(f"corrupt=1@{hook}", seed=3) as obj:
        for _ in range(20):
            rc, out = run(obj, frame)
            assert rc in (XDP_PASS, TC_UNSPEC) and len(out) == len(frame)
            assert _bits_changed(frame[start:], out[start:]) == 1           # exactly one payload bit
            csum = start - {TCP: 4, UDP: 2}.get(layer, 6)                     # the checksum field's offset
            assert diff_offsets(frame[:start], out[:start]) <= {csum, csum + 1}  # and the checksum, nothing else
            assert l4_checksum_ok(out, layer if layer is not ICMPv6EchoRequest else ICMPv6EchoRequest), variant
        assert counters(obj) == {"seen": 20, "matched": 20, "acted": 20}


@pytest.mark.parametrize("variant", ["tcp4", "udp6-odd", "icmp4"])
@pytest.mark.parametrize("hook", ["xdp", "tc-egress"])
def test_corrupt_csum_bad_leaves_the_checksum_wrong(hook, variant):
    """A full checksum (these frames are CHECKSUM_NONE) stays as it was. At tc egress the program
    also moves a CHECKSUM_PARTIAL skb's partial sum (bpf/lib/csum.h fi_l4_csum_keep_at), by a
    pair of calls that must cancel out here; PARTIAL itself only real traffic shows
    (tests/test_csum_matrix.py, corrupt csum=bad at tc egress)."""
    pkt, layer = CORRUPTIBLE[variant]
    frame = bytes(pkt)
    with loaded(f"corrupt=1,csum=bad,bits=5@{hook}", seed=4) as obj:
        for _ in range(20):
            out = run(obj, frame)[1]
            assert 1 <= _bits_changed(frame, out) <= 5 and _bits_changed(frame, out) % 2 == 1
            assert Ether(out)[layer].chksum == Ether(frame)[layer].chksum      # as it was: now wrong
            assert not l4_checksum_ok(out, layer)


def test_corrupt_udp_without_checksum_stays_without_and_headers_alone():
    frame = bytes(Ether(**E2) / IP(src=A, dst=B) / UDP(sport=1, dport=2, chksum=0) / PAYLOAD)
    ack = bytes(Ether(**E2) / IP(src=A, dst=B) / TCP(sport=1, dport=2, flags="A"))
    with loaded("corrupt=1@xdp") as obj:
        out = run(obj, frame)[1]
        assert Ether(out)[UDP].chksum == 0 and _bits_changed(frame, out) == 1
        assert run(obj, ack)[1] == ack                 # no payload: nothing to corrupt
        assert counters(obj) == {"seen": 2, "matched": 1, "acted": 1}


def test_corrupt_rate_and_seeded_bits():
    frame = bytes(CORRUPTIBLE["udp4"][0])
    with loaded("corrupt=0.25@tc-egress", seed=8) as obj:
        outs = [run(obj, frame)[1] for _ in range(8000)]
    hit = sum(o != frame for o in outs)
    assert stats.binomial_consistent(hit, 8000, 0.25)
    with loaded("corrupt=0.25@tc-egress", seed=8) as obj:
        assert [run(obj, frame)[1] for _ in range(500)] == outs[:500]     # the same bits, packet for packet
    positions = Counter(max(diff_offsets(frame, o)) for o in outs if o != frame)   # max: past the checksum
    assert len(positions) > 300        # spread over the 512-byte payload, not one spot


@pytest.mark.parametrize("hook", ["xdp", "tc-egress", "tc-ingress"])
def test_truncate_cuts_long_frames_to_n(hook):
    long_ = bytes(Ether(**E2) / IP(src=A, dst=B) / UDP(sport=1, dport=2) / PAYLOAD)
    short = bytes(Ether(**E2) / IP(src=A, dst=B) / UDP(sport=1, dport=2) / b"x")
    with loaded(f"truncate=60@{hook}") as obj:
        rc, out = run(obj, long_)
        assert out == long_[:60]
        assert run(obj, short)[1] == short           # 43 bytes: nothing to cut
        assert counters(obj) == {"seen": 2, "matched": 1, "acted": 1}
    with loaded(f"truncate=100,ratio=4@{hook}", seed=6) as obj:
        lens = Counter(len(run(obj, long_)[1]) for _ in range(4000))
    assert set(lens) == {100, len(long_)} and stats.binomial_consistent(lens[100], 4000, 0.25)


@pytest.mark.parametrize("hook", ["tc-egress", "tc-ingress"])
def test_duplicate_decides_at_its_rate(hook):
    frame = bytes(CORRUPTIBLE["udp4"][0])
    with loaded(f"duplicate=0.3@{hook}", seed=2, dry_run=True) as obj:
        for _ in range(6000):
            rc, out = run(obj, frame)
            assert rc == TC_UNSPEC and out == frame     # the original goes on unchanged
        c = counters(obj)
    assert c["matched"] == 6000 and stats.binomial_consistent(c["acted"], 6000, 0.3)


def test_duplicate_is_tc_only():
    from faultinj.errors import SpecError

    with pytest.raises(SpecError, match="duplicate cannot run on xdp"):
        parse_spec("duplicate=1@xdp")
