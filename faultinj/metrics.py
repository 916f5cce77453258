"""Prometheus metrics of the running faults (`faultinj metrics`).

A Collector reads faultinj.status() on every scrape, so a fault appears as soon
as it is applied and vanishes once cleared; nothing is cached between scrapes.
The counters are the programs' own per-CPU counters, summed (monotonic while
the fault lives: a fault applied again is a new id, hence a new series).
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from . import api
from .errors import FaultinjError, SpecError
from .kernel import caps

DEFAULT_PORT = 9469
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
LABELS = ("id", "fault", "spec", "interface", "netns", "target", "hook")


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9469', '[::1]:9469', ':9469' (loopback), '9469' -> (address, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise SpecError(f"bad --listen '{text}': give ADDRESS:PORT, e.g. {DEFAULT_LISTEN}")
    return host, number


def _labels(rec) -> list[str]:
    return [rec.id, rec.fault, rec.spec, rec.ifname, rec.netns or "host", rec.target or rec.netns or "host",
            rec.hook]


class FaultCollector:
    """Collector of every fault faultinj knows; `status` is faultinj.api.status unless given."""

    def __init__(self, status: Callable[[], list] | None = None):
        self._status = status if status is not None else api.status

    def describe(self) -> Iterable:
        return []   # no collect() at registration: that would read the kernel

    def collect(self) -> Iterable:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily("faultinj_up", "1 when faultinj's faults could be read on this scrape")
        try:
            rows = self._status()
        except FaultinjError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        counters = {name: CounterMetricFamily(f"faultinj_packets_{name}", help_, labels=LABELS) for name, help_ in (
            ("seen", "Packets the fault's program saw at its hook"),
            ("matched", "Packets that passed the fault's filters"),
            ("acted", "Packets the fault acted on (dropped, changed, duplicated)"))}
        lost = CounterMetricFamily("faultinj_journal_lost_events", "Journal events overwritten (each fault keeps its last 4096)",
                                   labels=LABELS)
        left = GaugeMetricFamily("faultinj_deadline_remaining_seconds",
                                 "Seconds until the fault's in-kernel deadline (faults with a deadline only)",
                                 labels=LABELS)
        state = GaugeMetricFamily("faultinj_fault_state", "1 for the fault's state (active, expired, gone, "
                                  "detached, interrupted)", labels=LABELS + ("state",))
        now = time.monotonic_ns()
        for row in rows:
            rec, labels = row.record, _labels(row.record)
            state.add_metric(labels + [row.state], 1)
            if row.counters is not None:
                for name, family in counters.items():
                    family.add_metric(labels, row.counters.get(name, 0))
                lost.add_metric(labels, row.journal_lost)
            if rec.deadline_ns:
                left.add_metric(labels, max(0.0, (rec.deadline_ns - now) / 1e9))
        yield state
        yield from counters.values()
        yield lost
        yield left


def serve(listen: str = DEFAULT_LISTEN, status: Callable[[], list] | None = None):
    """Serve /metrics on listen (loopback unless told otherwise). Returns (server, thread): call
    server.shutdown() to stop it."""
    from prometheus_client import CollectorRegistry, start_http_server

    caps.require_privileges()
    addr, port = parse_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FaultCollector(status))
    try:
        return start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise SpecError(f"cannot listen on {addr}:{port} ({exc.strerror or exc}): choose another --listen") from None
