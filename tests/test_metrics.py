"""faultinj metrics: Prometheus exposition of the running faults.

Unit tests feed the collector made-up status rows; the end-to-end test runs the real command on
127.0.0.1 and a free port and scrapes it while pings cross a fault in a namespace lab.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest

from faultinj.errors import SpecError, StateError
from faultinj.metrics import FaultCollector, parse_listen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _samples(families) -> dict:
    """{(sample name, fault id): value} (plus the faultinj_up sample under id None)."""
    out = {}
    for fam in families:
        for s in fam.samples:
            out[(s.name, s.labels.get("id"))] = s.value
    return out


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:9469", ("127.0.0.1", 9469)), (":9100", ("127.0.0.1", 9100)), ("9100", ("127.0.0.1", 9100)),
    ("[::1]:9469", ("::1", 9469)), ("0.0.0.0:80", ("0.0.0.0", 80)),
])
def test_listen_addresses_default_to_loopback(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["127.0.0.1:x", "127.0.0.1:70000", "host:"])
def test_bad_listen_addresses_are_usage_errors(text):
    with pytest.raises(SpecError):
        parse_listen(text)


def _row(fid, counters, state="active", deadline_ns=0, lost=0):
    rec = SimpleNamespace(id=fid, fault="drop", spec="drop=0.5@tc-egress", ifname="eth0", netns="/proc/7/ns/net",
                          target="container:web", hook="tc-egress", deadline_ns=deadline_ns)
    return SimpleNamespace(record=rec, state=state, counters=counters, journal_lost=lost)


def test_collector_reads_status_on_every_scrape():
    rows = [_row("f1", {"seen": 10, "matched": 8, "acted": 4}, deadline_ns=time.monotonic_ns() + int(60e9), lost=2)]
    col = FaultCollector(lambda: rows)
    before = time.monotonic_ns()
    got = _samples(col.collect())
    after = time.monotonic_ns()
    assert got[("faultinj_up", None)] == 1
    assert got[("faultinj_packets_seen_total", "f1")] == 10
    assert got[("faultinj_packets_acted_total", "f1")] == 4
    assert got[("faultinj_journal_lost_events_total", "f1")] == 2
    deadline = rows[0].record.deadline_ns   # the time left as of the scrape: no bound on how long it took
    assert (deadline - after) / 1e9 <= got[("faultinj_deadline_remaining_seconds", "f1")] <= (deadline - before) / 1e9
    labels = next(s.labels for f in col.collect() for s in f.samples if s.name == "faultinj_packets_seen_total")
    assert labels == {"id": "f1", "fault": "drop", "spec": "drop=0.5@tc-egress", "interface": "eth0",
                      "netns": "/proc/7/ns/net", "target": "container:web", "hook": "tc-egress"}
    rows[:] = [_row("f2", None, state="gone")]       # f1 cleared; f2 a custom program (no counters)
    got = _samples(col.collect())
    assert not any(fid == "f1" for _, fid in got)
    assert got[("faultinj_fault_state", "f2")] == 1 and ("faultinj_packets_seen_total", "f2") not in got


def test_collector_says_when_state_cannot_be_read():
    def broken():
        raise StateError("faultinj record x is unreadable")
    assert _samples(FaultCollector(broken).collect()) == {("faultinj_up", None): 0}


# ---- end to end -------------------------------------------------------------

def _scrape(port: int) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return _samples(text_string_to_metric_families(resp.read().decode()))


@pytest.fixture
def metrics_server(private_state):
    port = _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "faultinj")
    proc = subprocess.Popen([exe, "metrics", "--listen", f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    try:
        assert "serving faultinj metrics on http://127.0.0.1:" in proc.stderr.readline()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.kernel
def test_scraped_during_traffic_counters_rise_and_a_cleared_fault_vanishes(lab, metrics_server):
    import faultinj
    from faultinj.labs import traffic

    port = metrics_server
    a, b = lab.a, lab.b
    assert _scrape(port) == {("faultinj_up", None): 1.0}
    ra = faultinj.apply("drop=50%,proto=icmp", a.ifname, netns_name=a.netns, seed=5, duration="5m")
    rb = faultinj.apply("drop=0", b.ifname, netns_name=b.netns, seed=6)
    first = _scrape(port)
    # no ICMP yet (the fresh link's own IPv6 chatter may be seen, but it does not match)
    assert first[("faultinj_packets_matched_total", ra.id)] == 0
    assert ("faultinj_packets_seen_total", rb.id) in first

    seen = []
    pings = threading.Thread(target=traffic.ping, args=(a.netns, b.ip4, 300), kwargs={"interval": 0.01})
    pings.start()
    while pings.is_alive():
        seen.append(_scrape(port).get(("faultinj_packets_matched_total", ra.id), 0))
        time.sleep(0.3)
    pings.join()
    assert seen == sorted(seen) and len(set(seen)) >= 3, seen     # rising while the pings ran

    before = time.monotonic_ns()
    final = _scrape(port)
    after = time.monotonic_ns()
    [st] = [s for s in faultinj.status() if s.record.id == ra.id]
    assert final[("faultinj_packets_matched_total", ra.id)] == st.counters["matched"] == 300
    assert final[("faultinj_packets_acted_total", ra.id)] == st.counters["acted"]
    assert 100 < st.counters["acted"] < 200
    left = final[("faultinj_deadline_remaining_seconds", ra.id)]
    assert max(0, (ra.deadline_ns - after) / 1e9) <= left <= (ra.deadline_ns - before) / 1e9

    faultinj.clear(fault_id=ra.id)
    after = _scrape(port)
    assert not any(fid == ra.id for _, fid in after)
    assert ("faultinj_packets_seen_total", rb.id) in after
    faultinj.clear(fault_id=rb.id)


@pytest.mark.kernel
def test_a_busy_port_is_one_line_and_exit_2(private_state):
    exe = os.path.join(os.path.dirname(sys.executable), "faultinj")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = subprocess.run([exe, "metrics", "--listen", f"127.0.0.1:{s.getsockname()[1]}", "--duration", "1s"],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "cannot listen" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
