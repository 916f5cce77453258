"""The journal of injected packets: what the programs record, `faultinj journal`, scenarios."""

from __future__ import annotations

import json
import subprocess
import sys
import os
import time

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

import faultinj
import faultinj.api
from conftest import cli_runner
from faultinj.cli import app
from faultinj.faults import parse_spec
from faultinj.kernel import libbpf, maps, program
from faultinj.labs import traffic
from faultinj.inject.journal import JournalLog
from faultinj.journal import EVENT_FORMAT, decode
from faultinj.packets import parse
from faultinj.scenario.expect import RunData, evaluate
from faultinj.scenario.schema import ExpectEntry

E = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


def _events(obj, spec="x"):
    log = JournalLog(obj.map_fds["fi_journal"], obj.map_fds["fi_journal_head"])
    try:
        return [decode(raw, "f1", spec, "ns/if", "hook") for raw in log.read()]
    finally:
        log.close()


def test_events_name_the_packet_and_the_action():
    tcp = bytes(Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2", id=4242) / TCP(sport=1111, dport=80, seq=777, flags="A") / b"d")
    udp6 = bytes(Ether(**E) / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=53, dport=5353) / b"q")
    obj = program.load(parse_spec("drop=1@xdp"), seed=1)
    try:
        libbpf.test_run(obj.prog_fd, tcp)
        libbpf.test_run(obj.prog_fd, udp6)
        e1, e2 = _events(obj)
    finally:
        obj.close()
    assert (e1.action, e1.src, e1.dst, e1.l4_proto, e1.sport, e1.dport, e1.ip_id, e1.seq) == \
        ("drop", "10.0.0.1", "10.0.0.2", 6, 1111, 80, 4242, 777)
    assert e1.key() == parse(tcp).journal_key()
    assert (e2.src, e2.dst, e2.l4_proto, e2.sport, e2.dport) == ("fd00::1", "fd00::2", 17, 53, 5353)
    assert e2.key() == parse(udp6).journal_key()
    assert e1.ts_ns < e2.ts_ns


def test_modifications_record_their_value_and_only_acted_packets_appear():
    pong = bytes(Ether(**E) / IP(src="10.0.0.2", dst="10.0.0.1", ttl=64) / b"")  # not ICMP: not a pong
    seg = bytes(Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="A") / b"x")
    obj = program.load(parse_spec("ttl=3,proto=tcp"), seed=1)
    try:
        libbpf.test_run(obj.prog_fd, pong)
        out = libbpf.test_run(obj.prog_fd, seg).data
        [e] = _events(obj)
    finally:
        obj.close()
    assert e.action == "modify" and e.value == 3 == Ether(out)[IP].ttl


def test_the_journal_keeps_the_newest_and_journal_off_records_nothing():
    frame = bytes(Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2", id=1) / UDP(sport=1, dport=2) / b"x")
    obj = program.load(parse_spec("drop=1@xdp"), seed=1)
    try:
        runner = libbpf.TestRunner(obj.prog_fd)
        late = JournalLog(obj.map_fds["fi_journal"], obj.map_fds["fi_journal_head"], from_start=False)
        for i in range(5000):
            runner.run(frame[:18] + i.to_bytes(2, "big") + frame[20:])   # the IP id counts the runs
        events = _events(obj)
        assert len(events) == maps.JOURNAL_SIZE == 4096 and [e.ip_id for e in events] == list(range(904, 5000))
        assert maps.read_overwritten(obj.map_fds["fi_journal_head"]) == 5000 - 4096
        assert len(late.read()) == 4096 and late.missed == 904      # a reader that fell behind knows
        late.close()
    finally:
        obj.close()
    obj = program.load(parse_spec("drop=1@xdp"), seed=1, journal=False)
    try:
        libbpf.test_run(obj.prog_fd, frame)
        assert _events(obj) == [] and maps.read_counters(obj.map_fds["fi_counters"])["acted"] == 1
    finally:
        obj.close()


def test_an_event_completed_between_two_looks_at_its_slot_is_read_not_missed():
    """The reader's race (issue 22): a slot still being written (index 0) when first looked at, and
    complete by the next look, is whole: a later read returns it, and nothing is counted missed. The
    writer is played through the map itself: the slot is written with index 0 just before the
    reader's first look, and the complete event put back right after it."""
    frame = bytes(Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2", id=7) / UDP(sport=1, dport=2) / b"x")
    obj = program.load(parse_spec("drop=1@xdp"), seed=1)
    try:
        libbpf.test_run(obj.prog_fd, frame)
        fd, slot0 = obj.map_fds["fi_journal"], b"\0\0\0\0"
        whole = libbpf.map_lookup(fd, slot0, EVENT_FORMAT.size)
        assert int.from_bytes(whole[:8], "little") == 1

        class Racing(JournalLog):
            looks = 0

            def _index(self, off):
                self.looks += 1
                if self.looks > 1:
                    return super()._index(off)
                libbpf.map_update(fd, slot0, bytes(8) + whole[8:])   # being written...
                idx = super()._index(off)
                libbpf.map_update(fd, slot0, whole)                  # ...and complete
                return idx

        log = Racing(fd, obj.map_fds["fi_journal_head"])
        try:
            first, second = log.read(), log.read()
            assert log.looks > 1 and (len(first), len(second), log.missed) == (0, 1, 0)
            assert decode(second[0], "f1", "x", "ns/if", "hook").ip_id == 7
        finally:
            log.close()
    finally:
        obj.close()


def test_journal_command_on_a_live_fault(lab):
    a, b = lab.a, lab.b
    rec = faultinj.apply("drop=10%,proto=udp", a.ifname, netns_name=a.netns, seed=3)
    res = traffic.udp_stream(a.netns, b.netns, b.ip4, 2000)
    r = cli_runner().invoke(app, ["journal", a.ifname, "--netns", a.netns, "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    [st] = faultinj.status()
    events = doc["events"]
    assert len(events) == st.counters["acted"] == 2000 - len(res.received) and doc["lost"] == {}
    assert all(e["fault_id"] == rec.id and e["action"] == "drop" and e["proto"] == "udp"
               and (e["src"], e["dst"], e["dport"]) == (a.ip4, b.ip4, 5300) for e in events)
    assert len({e["ip_id"] for e in events}) == len(events)                 # each packet once
    r = cli_runner().invoke(app, ["journal", "--json"])                         # read again: still there
    assert r.exit_code == 0 and len(json.loads(r.stdout)["events"]) == len(events)
    # --follow prints JSON lines as events come, from now on
    proc = subprocess.Popen([sys.executable, "-m", "faultinj.cli", "journal", "--follow", "--duration", "3",
                             "--json"], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        time.sleep(1.5)   # it starts and opens the journal: it prints what comes after
        res = traffic.udp_stream(a.netns, b.netns, b.ip4, 1000)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    lines = [json.loads(ln) for ln in out.splitlines()]
    assert proc.returncode == 0 and len(lines) == 1000 - len(res.received) > 50


def test_journal_errors_are_one_line():
    runner = cli_runner()
    for args, msg in ((["journal", "--duration", "1s"], "--duration goes with --follow"),
                      (["journal", "nosuchif0"], "no faults on nosuchif0"),
                      (["journal", "--id", "f00000000"], "no fault f00000000")):
        r = runner.invoke(app, args)
        assert r.exit_code != 0 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_journal_matches_fails_on_an_anomaly_the_fault_did_not_make():
    bad = Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2", id=9) / UDP(sport=1, dport=2, chksum=0x1234) / b"x"
    bad2 = Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2", id=10) / UDP(sport=1, dport=2, chksum=0x1234) / b"x"
    obj = program.load(parse_spec("drop=1@xdp"), seed=1)
    try:
        libbpf.test_run(obj.prog_fd, bytes(bad))
        events = _events(obj)
    finally:
        obj.close()
    e = ExpectEntry(kind="journal_matches", params={"fault": "f", "capture": "rx", "having": "bad_checksum"}, line=1)
    one = RunData(packets={"rx": [parse(bytes(bad))]}, journal={"f": events})
    two = RunData(packets={"rx": [parse(bytes(bad)), parse(bytes(bad2))]}, journal={"f": events})
    assert evaluate(e, one).ok
    assert not evaluate(e, two).ok                      # an anomaly nobody recorded
    assert not evaluate(e, RunData(packets={"rx": []}, journal={"f": events})).ok   # recorded, not seen


def test_journal_off_records_nothing_and_set_turns_it_back_on(lab):
    a, b = lab.a, lab.b
    faultinj.apply("drop=100%,proto=udp,journal=off", a.ifname, netns_name=a.netns)
    traffic.udp_stream(a.netns, b.netns, b.ip4, 100, settle=0.05)
    with faultinj.api.journal(a.ifname, netns_name=a.netns) as reader:
        assert reader.read() == []
        faultinj.set_fault(a.ifname, "drop,proto=udp", netns_name=a.netns)     # filters replaced: journal on
        traffic.udp_stream(a.netns, b.netns, b.ip4, 100, settle=0.05)
        assert len(reader.read()) == 100
    [st] = faultinj.status()
    assert st.counters["acted"] == 200


def test_status_says_when_the_journal_lost_events(lab):
    a, b = lab.a, lab.b
    faultinj.apply("drop=100%,proto=udp", a.ifname, netns_name=a.netns)
    traffic.udp_stream(a.netns, b.netns, b.ip4, 5000, settle=0.05)      # nobody reads: the last 4096 kept
    [st] = faultinj.status()
    assert st.counters["acted"] == 5000 and st.journal_lost == 5000 - 4096
    r = cli_runner().invoke(app, ["status"])
    assert f"{5000 - 4096} journal events lost (overwritten" in r.stdout
    assert json.loads(cli_runner().invoke(app, ["status", "--json"]).stdout)[0]["journal_lost"] == 904


def test_every_reader_sees_every_event(lab):
    """Two readers open at once (a `journal --follow`, a scenario, the tracer) each get all the events;
    reading takes nothing from the others, and a later `faultinj journal` still shows them."""
    a, b = lab.a, lab.b
    faultinj.apply("drop=10%,proto=udp", a.ifname, netns_name=a.netns, seed=3)
    with faultinj.api.journal(a.ifname, netns_name=a.netns) as one, \
            faultinj.api.journal(a.ifname, netns_name=a.netns) as two:
        res = traffic.udp_stream(a.netns, b.netns, b.ip4, 1000, settle=0.05)
        first, second = one.read(), two.read()
    [st] = faultinj.status()
    assert len(first) == len(second) == st.counters["acted"] == 1000 - len(res.received) > 50
    assert [e.key() for e in first] == [e.key() for e in second]
    for _ in range(2):
        r = cli_runner().invoke(app, ["journal", "--json"])
        assert r.exit_code == 0 and len(json.loads(r.stdout)["events"]) == len(first)


def test_events_keep_the_spec_in_force_when_they_happened(lab):
    a, b = lab.a, lab.b
    faultinj.apply("drop=100%,proto=udp", a.ifname, netns_name=a.netns)
    traffic.udp_stream(a.netns, b.netns, b.ip4, 20, settle=0.05)
    faultinj.set_fault(a.ifname, "drop=50%", netns_name=a.netns)
    traffic.udp_stream(a.netns, b.netns, b.ip4, 200, settle=0.05)
    faultinj.set_fault(a.ifname, "drop=100%,proto=tcp", netns_name=a.netns)
    with faultinj.api.journal(a.ifname, netns_name=a.netns) as reader:
        events = reader.read()
    assert len(events) > 40
    assert all("drop=1.0,proto=udp" in e.fault for e in events[:20]), [e.fault for e in events[:20]]
    assert all("drop=0.5,proto=udp" in e.fault for e in events[20:]), {e.fault for e in events[20:]}
