"""Run a scenario: lab up, faults (with phases), captures, traffic, counters,
lab down (always, unless asked to keep it), then the verdicts."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .. import api
from ..errors import FaultinjError, StateError
from ..kernel import caps
from .. import labs as lab
from ..labs import ovs
from ..inject import state
from ..labs.capture import write_pcap
from ..labs import Topology, unique_prefix
from ..packets import parse
from ..verdict import Check, Verdict
from . import inguest
from .expect import RunData, evaluate
from .plots import plot_for
from .hosts import for_topology as hosts_of
from .hosts import outside_the_lab, run_traffic
from .schema import Scenario
from ..faults.match import parse_match
from ..kernel.netns import netns_exists
from ..trace import Tracer


@dataclass
class CommandResult:
    returncode: int
    output: str


Report = Verdict   # a scenario's verdict (the name its callers know)


class _ScenarioTrace(threading.Thread):
    """Traces the first trace.count packets passing trace.filter while the traffic runs."""

    def __init__(self, scn, report: Report):
        super().__init__(daemon=True)

        self.count = scn.trace.count
        self.report = report
        self.tracer = Tracer(parse_match([w for w in scn.trace.filter.split(",") if w.strip()])).start()
        self._done = threading.Event()
        self.error: Exception | None = None

    def run(self):
        journeys: dict[tuple, list] = {}
        try:
            while not self._done.is_set():
                for hop in self.tracer.read(100):
                    if hop.key in journeys or len(journeys) < self.count:
                        journeys.setdefault(hop.key, []).append(hop)
            for hop in self.tracer.settle():   # frees waiting for their copy's fate: delivered or dropped
                if hop.key in journeys:
                    journeys[hop.key].append(hop)
        except Exception as exc:   # reported, never fatal to the scenario
            self.error = exc
        finally:
            self.tracer.close()
            self.report.journeys = list(journeys.values())

    def stop(self):
        self._done.set()
        if self.is_alive():
            self.join()
        if self.error:
            self.report.errors.append(f"trace: {self.error}")
            self.error = None


def _start_trace(scn, report: Report, progress) -> _ScenarioTrace:
    t = _ScenarioTrace(scn, report)
    t.start()
    progress(f"tracing the first {scn.trace.count} packets of {scn.trace.filter or 'any kind'}")
    return t


def run(scn: Scenario, pcap_dir: str | None = None, keep: bool = False,
        progress: Callable[[str], None] = lambda m: None) -> Report:
    if scn.lab.guest and not os.environ.get(inguest.IN_GUEST):
        return inguest.run_in_guest(scn, pcap_dir, keep, progress)
    caps.require_privileges()
    started = time.monotonic()
    topo = Topology(scn.lab)
    topo.progress = progress
    report = Report(scn.name, scn.path, prefix=topo.prefix)
    if scn.trace and scn.lab.vms:
        raise StateError(f"{scn.path}: trace: the tracer runs on this machine's kernel; a lab with VM hosts "
                         "cannot take it (remove 'trace' or the VMs)")
    try:
        hosts: dict = outside_the_lab(scn)
    except FaultinjError as exc:
        exc.args = (f"{scn.path}: {exc}",)
        raise
    data = RunData()
    applied: dict[str, object] = {}
    outside: list[str] = []   # ids of the faults applied on hosts outside the lab
    lock = threading.Lock()

    def apply_fault(f):
        host = hosts[f.host]
        rec = host.apply(f.spec, f.interface, f.seed, f.tc_mode)
        with lock:
            applied[f.name] = rec
            data.fault_ids[f.name] = rec["id"]
            if f.host in scn.targets:   # outside the lab: a killed run's faults there are cleared by the reaper
                outside.append(rec["id"])
                topo.record()
        report.faults[f.name] = {"host": f.host, "interface": f.interface, "spec": rec["spec"],
                                 "hook": rec["hook"], "attach_mode": rec["attach_mode"],
                                 "attach_kind": rec.get("attach_kind", ""), "seed": rec["seed"],
                                 "kernel": host.kernel or os.uname().release,
                                 "vm": f.host in scn.lab.vms}
        progress(f"fault {f.name}: {rec['spec']} on {f.host}/{f.interface} via {rec.get('attach_kind') or rec['attach_mode']} "
                 f"(seed {rec['seed']}{', kernel ' + host.kernel if host.kernel else ''})")

    journaled = {e.params[k] for e in scn.expect for k in e.expectation.journals if k in e.params}
    stop_drain = threading.Event()
    fault_host = {f.name: f.host for f in scn.faults}

    def drain(name, rec, last=False):
        """Move the fault's journal events into data (it keeps the last 4096: read it as traffic runs)."""
        if name not in journaled:
            return
        with lock:
            data.journal.setdefault(name, []).extend(hosts[fault_host[name]].journal(rec["id"]))

    def drain_loop():
        while not stop_drain.wait(0.1):
            with lock:
                current = list(applied.items())
            for name, rec in current:
                try:
                    drain(name, rec)
                except Exception:
                    pass   # cleared meanwhile: clear_fault drained it last

    def clear_fault(name):
        with lock:
            rec = applied.pop(name, None)
        if rec is None:
            return
        drain(name, rec, last=True)   # opens the journal's reader if the loop has not yet
        host = hosts[fault_host[name]]
        # counters read after the program was detached: a status read before clear missed a drop
        # in between once (CI); the journal likewise, drained after
        removed = host.clear(rec["id"])
        if removed is not None:
            data.counters[name] = removed.get("final_counters") or {}
            data.journal_lost[name] = removed.get("final_journal_lost", 0)
        if name in journaled:
            with lock:
                data.journal.setdefault(name, []).extend(host.journal_close(rec["id"]))

    def phase(fn, *args):
        try:
            fn(*args)
        except Exception as exc:
            report.errors.append(f"fault phase: {exc}")

    timers: list[threading.Timer] = []
    captures: dict[str, tuple] = {}   # name -> (host, its capture handle)
    tracer = None
    switch = None   # an OVS build's own daemons (lab.ovs_prefix); inside a guest, guestside starts them
    try:
        progress(f"lab up: {len(scn.lab.hosts)} hosts, {len(scn.lab.links)} links, prefix {topo.prefix}"
                 + (f"; outside it: {', '.join(scn.targets)}" if scn.targets else ""))
        topo.record = lambda: lab.remember(scn.name, topo, kept=False, extra={
            "file": os.path.abspath(scn.path), "faults_outside": outside,
            **({"ovs_private": {"pids": switch.pids, "dir": switch.dir, "netns": switch.netns}} if switch else {})})
        topo.record()
        if scn.lab.ovs_prefix and not os.environ.get(inguest.IN_GUEST):
            switch = ovs.PrivateSwitch(scn.lab.ovs_prefix, f"{tempfile.gettempdir()}/faultinj-ovs-{topo.prefix}",
                                       userspace=True, netns=f"{topo.prefix}ovs")
            topo.ovs_netns = switch.netns
            topo.record()   # its directory, before a daemon exists
            switch.start()
            topo.record()
            progress(f"Open vSwitch from {scn.lab.ovs_prefix}: {switch.version()} (userspace datapath, "
                     f"run directory {switch.dir})")
        topo.up()
        hosts.update(hosts_of(topo))   # and those outside the lab, found before it went up
        for f in scn.faults:
            if not f.at:
                apply_fault(f)
        for c in scn.captures:
            captures[c.name] = (hosts[c.host], hosts[c.host].capture_start(c.interface, c.snaplen, c.direction))
        csum_hosts = {e.params["host"] for e in scn.expect if e.expectation.reads == "csum_errors"}
        csum_before = {h: hosts[h].csum_errors() for h in csum_hosts}
        # kernel counters of the hosts an expectation reads them from: at the start, around each traffic entry
        counted = {e.params["host"] for e in scn.expect if e.expectation.reads == "kernel_counters"}
        counters_at_start = {h: hosts[h].kernel_counters() for h in counted}
        for f in scn.faults:
            if f.at:
                timers.append(threading.Timer(f.at, phase, (apply_fault, f)))
            if f.for_:
                timers.append(threading.Timer((f.at or 0) + f.for_, phase, (clear_fault, f.name)))
        for t in timers:
            t.start()
        if journaled:
            threading.Thread(target=drain_loop, daemon=True).start()
        if scn.trace:
            tracer = _start_trace(scn, report, progress)
        for i, t in enumerate(scn.traffic, 1):
            progress(f"traffic [{i}/{len(scn.traffic)}] {t.name}: {t.kind} from {t.host}")
            before = {h: hosts[h].kernel_counters() for h in counted}
            data.traffic[t.name] = run_traffic(t, scn, hosts)
            for h, was in before.items():
                data.kernel_counters[(h, t.name)] = _grown(was, hosts[h].kernel_counters())
        if tracer:
            time.sleep(0.3)   # the last packets' later hops
            tracer.stop()
        for t in timers:
            t.cancel()
            if t.is_alive():
                t.join()
        if scn.lab.ovs or any(kind == "ovs" for kind in scn.lab.bridges.values()):
            # now, before the megaflows of the last traffic idle out (10 s)
            try:
                data.ovs = report.ovs = topo.ovs_report()
            except Exception as exc:
                report.errors.append(f"reading the OVS bridges: {exc}")
        snaplens = {c.name: c.snaplen for c in scn.captures}
        for name, (host, handle) in list(captures.items()):
            frames, drops = host.capture_stop(handle)
            del captures[name]
            data.packets[name] = [parse(fr.data, fr.length) for fr in frames]
            data.times[name] = [fr.ts_ns / 1e9 for fr in frames]
            data.capture_drops[name] = drops
            if pcap_dir:
                os.makedirs(pcap_dir, exist_ok=True)
                path = os.path.join(pcap_dir, f"{scn.name}-{name}.pcap")
                write_pcap(path, frames, snaplens[name])
                report.pcaps[name] = path
        data.csum_errors = {h: hosts[h].csum_errors() - before for h, before in csum_before.items()}
        for h, was in counters_at_start.items():
            data.kernel_counters[(h, None)] = _grown(was, hosts[h].kernel_counters())
    except Exception as exc:
        report.errors.append(str(exc))
        raise
    finally:
        stop_drain.set()
        if tracer:
            tracer.stop()
        for t in timers:
            t.cancel()
        for host, handle in captures.values():
            try:
                host.capture_stop(handle, settle=0)
            except Exception:
                pass
        for name in list(applied):
            try:
                clear_fault(name)
            except Exception as exc:
                report.errors.append(f"clearing {name}: {exc}")
        for host in hosts.values():
            host.close()
        if keep and switch:
            report.errors.append("--keep: a lab on an OVS build's own switch is not kept (its daemons end with "
                                 "this run)")
            keep = False
        if keep and scn.lab.vms:
            report.errors.append("--keep: a lab with VM hosts is not kept (its VMs end with this run)")
            keep = False
        if keep:
            lab.remember(scn.name, topo, kept=True, extra={"file": os.path.abspath(scn.path)})
            progress(f"lab kept: faultinj lab down {scn.path}")
        else:
            topo.down()
            if switch:
                switch.stop()
            lab.forget(topo)
            progress("lab removed")
        report.seconds = time.monotonic() - started
    report.counters = data.counters
    for name, drops in data.capture_drops.items():
        if drops:
            report.checks.append(Check(f"capture {name} lost nothing", False, f"{drops} dropped by the kernel", "0"))
    report.description = scn.description
    data.journeys = report.journeys
    for e in scn.expect:
        report.checks.append(evaluate(e, data))
        try:
            plot = plot_for(e, data)
        except Exception as exc:   # a plot never costs the verdict
            plot = {"kind": "error", "error": f"{type(exc).__name__}: {exc}"}
        if plot:
            report.plots[len(report.checks) - 1] = plot
    return report


def _grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


# ---- labs kept for interactive work ------------------------------------------------------

def _kept(name: str) -> dict | None:
    return next((d for d in lab.recorded_labs() if d["name"] == name and d.get("kept")), None)


def lab_up(scn: Scenario, progress: Callable[[str], None] = lambda m: None) -> dict:
    caps.require_privileges()
    if scn.lab.vms or scn.lab.guest:
        raise StateError(f"{scn.path}: a lab with VM hosts or made inside a guest (lab.vms, lab.guest) lives only "
                         "while 'faultinj run' runs it "
                         "(its VMs are children of that process); run the scenario instead")
    with state.locked():
        if _kept(scn.name):
            raise StateError(f"lab '{scn.name}' is already up: 'faultinj lab down {scn.path}' first")
        topo = Topology(scn.lab, unique_prefix())
        extra = {"file": os.path.abspath(scn.path)}
        lab.remember(scn.name, topo, kept=False, extra=extra)  # a kill during up is reaped
        topo.up()
        data = lab.remember(scn.name, topo, kept=True, extra=extra)
    progress(f"lab {scn.name} up: " + ", ".join(f"{h} = netns {topo.netns(h)}" for h in scn.lab.hosts))
    return data


def lab_down(name: str) -> dict:
    caps.require_privileges()
    data = _kept(name)
    if data is None:
        known = ", ".join(d["name"] for d in lab.recorded_labs() if d.get("kept")) or "none"
        raise StateError(f"no lab '{name}' is up (up: {known})")
    for ns in data["namespaces"]:  # faults on the lab's links go with it
        try:
            api.clear(netns_name=ns, all_faults=True)
        except Exception:
            pass
    with state.locked():
        lab.remove_recorded(data)
    return data


def lab_status() -> list[dict]:
    """The labs that are up, after removing those a killed run left (with their faults)."""
    api.reap()
    out = []
    for data in lab.recorded_labs():
        if data.get("kept"):
            data["present"] = all(netns_exists(ns) for ns in data["namespaces"])
            out.append(data)
    return out
