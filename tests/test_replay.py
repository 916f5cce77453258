"""Offline replay over a pcap through BPF_PROG_TEST_RUN (no interface)."""

import json

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from conftest import cli_runner
from faultinj import pcap, stats
from faultinj.cli import app
from faultinj.errors import SpecError
from faultinj.inject.replay import replay
from faultinj.packets import parse
from scapy.utils import EDecimal

E = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


@pytest.fixture
def capture(tmp_path):
    frames = []
    for i in range(400):
        if i % 2:
            f = Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000, dport=53) / b"q"
        else:
            f = Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=2000, dport=80, seq=i, flags="A") / (b"d" * 50)
        frames.append(pcap.Record(1_700_000_000_000_000_000 + i * 1000, len(f), bytes(f)))
    path = tmp_path / "in.pcap"
    pcap.write(str(path), frames)
    return path


def test_drops_are_omitted_and_changes_written(capture, tmp_path):
    out = tmp_path / "out.pcap"
    res = replay(str(capture), ["psh-ratio=1", "drop=100%,proto=udp"], str(out), seed=1)
    assert (res.packets, len(res.dropped), res.written) == (400, 200, 200)
    assert res.dropped == list(range(1, 400, 2)) and res.changed == list(range(0, 400, 2))
    pkts = [parse(r.data) for r in pcap.read(str(out))]
    assert all(p.proto == 6 and p.tcp_flags & 0x08 and p.l4_csum_ok for p in pkts)
    assert res.counters["drop=1.0,proto=udp@tc-egress"] == {"seen": 400, "matched": 200, "acted": 200}


def test_duplicates_are_written_twice_and_truncation_and_corruption_show(capture, tmp_path):
    out = tmp_path / "out.pcap"
    res = replay(str(capture), ["duplicate=100%,proto=udp", "truncate=40,proto=tcp", "corrupt=1,proto=udp"],
                 str(out), seed=2)
    assert res.duplicated == list(range(1, 400, 2)) and res.dropped == []
    assert res.written == 600 and res.changed == list(range(400))
    recs = list(pcap.read(str(out)))
    tcp = [r for r in recs if parse(r.data).proto == 6]
    udp = [r for r in recs if parse(r.data).proto == 17]
    assert len(tcp) == 200 and all(len(r.data) == 40 for r in tcp)
    assert len(udp) == 400
    # the copy passes the faults after duplicate as a packet of its own: corrupted by its own draw
    assert [c["acted"] for s, c in res.counters.items() if s.startswith("corrupt")] == [400]
    assert sum(a.data != b.data for a, b in zip(udp[::2], udp[1::2])) > 150
    assert all(parse(r.data).l4_csum_ok for r in udp)                 # corrupted with the checksum fixed
    assert res.counters["duplicate=1.0,proto=udp@tc-egress"]["acted"] == 200


def test_seeded_replay_is_identical_and_another_seed_is_not(capture, tmp_path):
    runs = [replay(str(capture), ["drop=30%"], str(tmp_path / f"{s}-{i}.pcap"), seed=s).dropped
            for i, s in enumerate((7, 7, 8))]
    assert runs[0] == runs[1] != runs[2]
    assert (tmp_path / "7-0.pcap").read_bytes() == (tmp_path / "7-1.pcap").read_bytes()


def test_bad_inputs(tmp_path):
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\0" * 40)   # a pcapng magic and nothing sound after it
    with pytest.raises(SpecError, match="not a pcap or pcapng file"):
        replay(str(bad), ["drop=1"], str(tmp_path / "o.pcap"))
    text = tmp_path / "notes.pcap"
    text.write_text("hello, not a capture")
    with pytest.raises(SpecError, match="not a pcap or pcapng file"):
        replay(str(text), ["drop=1"], str(tmp_path / "o.pcap"))
    with pytest.raises(SpecError, match="cannot read"):
        replay(str(tmp_path / "missing.pcap"), ["drop=1"], str(tmp_path / "o.pcap"))


def test_cli_json(capture, tmp_path):
    r = cli_runner().invoke(app, ["replay", str(capture), "drop=100%,proto=tcp", "--out", str(tmp_path / "o.pcap"),
                                  "--seed", "3", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["written"] == 200 and data["seed"] == 3


# ---- capture formats: pcap (us, ns), pcapng in; pcap or pcapng out by the name --------------

def _frames(n=50):
    return [Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i, dport=53) / b"q"
            for i in range(n)]


@pytest.mark.parametrize("fmt", ["pcapng", "pcap-ns", "pcap-us"])
def test_replay_reads_pcapng_and_nanosecond_pcap(tmp_path, fmt):
    """What Wireshark/dumpcap (pcapng) and tcpdump --nano write is read, stamps kept."""
    from scapy.utils import PcapNgWriter, PcapWriter

    frames = _frames()
    for i, f in enumerate(frames):
        f.time = EDecimal(1_700_000_000) + EDecimal(i * 1_234_567) / 1_000_000_000
    path = tmp_path / ("in.pcapng" if fmt == "pcapng" else "in.pcap")
    writer = PcapNgWriter(str(path)) if fmt == "pcapng" else PcapWriter(str(path), nano=fmt == "pcap-ns")
    with writer as w:
        for f in frames:
            w.write(f)
    recs = list(pcap.read(str(path)))
    assert [r.data for r in recs] == [bytes(f) for f in frames]
    # nanosecond pcap keeps every nanosecond; pcap and scapy's pcapng writer keep microseconds
    tolerance = 0 if fmt == "pcap-ns" else 1000
    assert recs[0].ts_ns // 1000 == 1_700_000_000_000_000
    assert all(abs(r.ts_ns - recs[0].ts_ns - i * 1_234_567) <= tolerance for i, r in enumerate(recs))
    res = replay(str(path), ["drop=100%,sport=1000-1009"], str(tmp_path / "o.pcap"), seed=1)
    assert (res.packets, res.written) == (50, 40)


@pytest.mark.parametrize("name", ["o.pcap", "o.pcapng"])
def test_replay_writes_the_format_its_output_is_named(capture, tmp_path, name):
    out = tmp_path / name
    res = replay(str(capture), ["drop=100%,proto=udp"], str(out), seed=1)
    magic = out.read_bytes()[:4]
    assert magic == (b"\x0a\x0d\x0d\x0a" if name.endswith("pcapng") else b"\xd4\xc3\xb2\xa1")
    recs = list(pcap.read(str(out)))
    src = [r for r in pcap.read(str(capture)) if parse(r.data).proto == 6]
    assert res.written == len(recs) == 200
    assert [(r.ts_ns, r.length, r.data) for r in recs] == [(r.ts_ns // 1000 * 1000, r.length, r.data) for r in src]


# ---- each fault draws from a stream of its own ----------------------------------------------

@pytest.fixture
def many_flows(tmp_path):
    """4000 UDP datagrams over 40 flows."""
    frames = [Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i % 40, dport=53) / (b"q" * 20)
              for i in range(4000)]
    path = tmp_path / "many.pcap"
    pcap.write(str(path), [pcap.Record(1_700_000_000_000_000_000 + i * 1000, len(f), bytes(f))
                           for i, f in enumerate(frames)])
    return path


def test_two_faults_with_one_seed_hit_independent_packets(many_flows, tmp_path):
    """corrupt=5% duplicate=5% --seed 4: the packets each hits overlap no more than independent
    draws would (about 4000 x 0.05 x 0.05 = 10), not the same packets; and the run repeats."""
    runs = [replay(str(many_flows), ["corrupt=5%", "duplicate=5%"], str(tmp_path / f"o{i}.pcap"), seed=4)
            for i in range(2)]
    changed, duplicated = set(runs[0].changed), set(runs[0].duplicated)
    assert stats.binomial_consistent(len(changed), 4000, 0.05)
    assert stats.binomial_consistent(len(duplicated), 4000, 0.05)
    both = len(changed & duplicated)
    assert stats.binomial_consistent(both, 4000, len(changed) / 4000 * len(duplicated) / 4000), both
    assert (runs[0].changed, runs[0].duplicated) == (runs[1].changed, runs[1].duplicated)
    assert (tmp_path / "o0.pcap").read_bytes() == (tmp_path / "o1.pcap").read_bytes()
