"""What a scenario does on a host, whatever the host is: a network namespace on this machine
(the library called here), or a VM (the same library called by the agent inside it).

Traffic is split into its two ends (a TCP receiver and a sender) so that each end runs where
its host is."""

from __future__ import annotations

import base64
import shlex

from .. import api
from ..errors import FaultinjError, SpecError, TargetError
from ..inject import netns as netns_mod
from ..inject import targets, traffic
from ..inject.capture import Capture, Frame
from ..inject.netns import netns_exec


class NamespaceHost:
    def __init__(self, name: str, netns: str):
        self.name, self.netns = name, netns
        self.kernel = None   # this machine's
        self._readers: dict[str, object] = {}

    def apply(self, spec, iface: str, seed, tc_mode: str) -> dict:
        return api.apply(spec, iface, netns_name=self.netns, seed=seed, tc_mode=tc_mode).to_json()

    def clear(self, fault_id: str) -> dict | None:
        """Remove the fault: the record it had, with its counters and lost journal events read after
        its program was detached (final_counters, final_journal_lost); None when there was none."""
        removed = api.clear(fault_id=fault_id)
        return next((r.to_json() for r in removed if r.id == fault_id), None)

    def journal(self, fault_id: str) -> list:
        reader = self._readers.get(fault_id) or self._readers.setdefault(fault_id, api.journal(fault_id=fault_id))
        return reader.read()

    def journal_close(self, fault_id: str) -> list:
        """The events an open journal reader has not returned yet (also after clear: the reader
        holds the ring), then close it."""
        reader = self._readers.pop(fault_id, None)
        if reader is None:
            return []
        try:
            return reader.read()
        finally:
            reader.close()

    def capture_start(self, iface: str, snaplen: int, direction: str):
        return Capture(self.netns, iface, snaplen=snaplen, direction=direction).start()

    def capture_stop(self, handle, settle: float = 0.2) -> tuple[list[Frame], int]:
        frames = handle.stop(settle=settle)
        return frames, handle.kernel_drops

    def tcp_listen(self, addr: str, port: int, timeout: float = 60.0):
        return traffic.TcpReceiver(self.netns, addr, port, timeout)

    def tcp_result(self, handle) -> dict:
        return handle.result()

    def tcp_send(self, addr: str, nbytes: int, port: int, seed: int, timeout: float = 60.0) -> dict:
        return traffic.tcp_send(self.netns, addr, nbytes, port, seed, timeout=timeout)

    def ping(self, dst: str, count: int, interval: float, size: int, timeout: float):
        return traffic.ping(self.netns, dst, count, interval, size, timeout)

    def command(self, argv: list[str], timeout: float):
        return netns_exec(self.netns, *argv, timeout=timeout)

    def csum_errors(self) -> int:
        return _csum_errors(traffic.snmp(self.netns))

    def kernel_counters(self) -> dict[str, int]:
        return traffic.kernel_counters(self.netns)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


class TargetHost(NamespaceHost):
    """A namespace outside the lab: a container's, a process's or a namespace file's. Faults go in
    through the same options as `apply --container/--pid/--netns-path` (so status names them the
    same way); traffic and captures run our own code in its namespace from here, so the container
    needs no tools of its own."""

    def __init__(self, name: str, opts: dict):
        self.opts = {k: v for k, v in opts.items() if v is not None}
        self.target = targets.resolve(**opts)
        super().__init__(name, self.target.netns)

    def apply(self, spec, iface: str, seed, tc_mode: str) -> dict:
        return api.apply(spec, iface, seed=seed, tc_mode=tc_mode, **self.opts).to_json()

    def check_interfaces(self, names) -> None:
        for name in names:
            netns_mod.link_index(self.netns, name, self.name)

    def address(self, v6: bool) -> str:
        """Where traffic to this host goes: its first global address (by interface index)."""
        import socket

        ipr = netns_mod.open_iproute(self.netns)
        try:
            found = sorted((a["index"], a.get_attr("IFA_ADDRESS")) for a in
                           ipr.get_addr(family=socket.AF_INET6 if v6 else socket.AF_INET) if a["scope"] == 0)
        finally:
            ipr.close()
        if not found:
            raise TargetError(f"{self.name} has no global {'IPv6' if v6 else 'IPv4'} address to send traffic to")
        return found[0][1]


class AgentHost:
    """A VM host: every call goes to the faultinj agent inside it."""

    def __init__(self, name: str, agent):
        self.name, self.agent = name, agent
        self.netns = None
        self.kernel = agent.info.get("release")

    def apply(self, spec, iface: str, seed, tc_mode: str) -> dict:
        return self.agent.call("apply", spec=str(spec), ifname=iface, seed=seed, tc_mode=tc_mode)

    def clear(self, fault_id: str) -> dict | None:
        removed = self.agent.call("clear", fault_id=fault_id)
        return next((r for r in removed if r["id"] == fault_id), None)

    def journal(self, fault_id: str) -> list:
        return self._events("journal", fault_id)

    def journal_close(self, fault_id: str) -> list:
        try:
            return self._events("journal_close", fault_id)
        except FaultinjError as exc:
            if "journal_close" in str(exc):   # an older agent (an ssh host's faultinj) has no such call
                return []
            raise

    def _events(self, method: str, fault_id: str) -> list:
        from ..journal import Event

        fields = Event.__dataclass_fields__
        return [Event(**{k: v for k, v in e.items() if k in fields}) for e in
                self.agent.call(method, fault_id=fault_id)]

    def capture_start(self, iface: str, snaplen: int, direction: str):
        return self.agent.call("capture_start", ifname=iface, snaplen=snaplen, direction=direction)

    def capture_stop(self, handle, settle: float = 0.2) -> tuple[list[Frame], int]:
        out = self.agent.call("capture_stop", handle=handle)
        frames = [Frame(ts, bool(o), n, base64.b64decode(d)) for ts, o, n, d in out["frames"]]
        return frames, out["kernel_drops"]

    def tcp_listen(self, addr: str, port: int, timeout: float = 60.0):
        return self.agent.call("tcp_listen", addr=addr, port=port, timeout=timeout)

    def tcp_result(self, handle) -> dict:
        return self.agent.call("tcp_result", handle=handle)

    def tcp_send(self, addr: str, nbytes: int, port: int, seed: int, timeout: float = 60.0) -> dict:
        return self.agent.call("tcp_send", addr=addr, nbytes=nbytes, port=port, seed=seed, timeout=timeout)

    def ping(self, dst: str, count: int, interval: float, size: int, timeout: float):
        return traffic.PingResult(**self.agent.call("ping", dst=dst, count=count, interval=interval, size=size,
                                                    timeout=timeout))

    def command(self, argv: list[str], timeout: float):
        import subprocess

        out = self.agent.call("exec", argv=argv, timeout=timeout)
        return subprocess.CompletedProcess(argv, out["returncode"], out["stdout"], out["stderr"])

    def csum_errors(self) -> int:
        return _csum_errors(self.agent.call("snmp"))

    def kernel_counters(self) -> dict[str, int]:
        return self.agent.call("kernel_counters")

    def close(self) -> None:
        pass


def _csum_errors(snmp: dict) -> int:
    return snmp.get("Tcp", {}).get("InCsumErrors", 0) + snmp.get("Udp", {}).get("InCsumErrors", 0)


def outside_the_lab(scn) -> dict:
    """The scenario's hosts outside the lab, each found now and its interfaces checked, so that a
    container that is not running stops the run before anything is made or applied."""
    out = {}
    for name, opts in scn.targets.items():
        host = out[name] = TargetHost(name, opts)
        host.check_interfaces(sorted({e.interface for e in (*scn.faults, *scn.captures) if e.host == name}))
    return out


def for_topology(topo) -> dict:
    out = {}
    for h in topo.spec.hosts:
        guest = topo.guests.get(h)
        agent = guest.agent if guest else topo.remotes.get(h)
        out[h] = AgentHost(h, agent) if agent else NamespaceHost(h, topo.netns(h))
    return out


def run_traffic(t, scn, hosts: dict):
    """One traffic entry, each end on its host."""
    p = t.params
    src = hosts[t.host]
    if t.kind == "command":
        argv = p["run"] if isinstance(p["run"], list) else shlex.split(p["run"])
        try:
            return src.command([str(a) for a in argv], p["timeout"])
        except Exception as exc:  # a timeout is a result, not a crash
            import subprocess

            return subprocess.CompletedProcess(argv, -1, str(exc), "")
    dst_host = hosts[p["to"]]
    dst = dst_host.address(p["v6"]) if isinstance(dst_host, TargetHost) else scn.address(p["to"], p["v6"])
    if t.kind == "ping":
        return src.ping(dst, p["count"], p["interval"], p["size"], p["timeout"])
    if t.kind == "tcp":
        results = []
        for i in range(p["connections"]):
            rx = dst_host.tcp_listen(dst, p["port"], p["timeout"])
            sent = src.tcp_send(dst, p["bytes"], p["port"], p["seed"] + i, p["timeout"])
            results.append(traffic.tcp_result(p["bytes"], sent, dst_host.tcp_result(rx), sent["seconds"]))
        return traffic.TcpResult(sum(r.sent for r in results), sum(r.received for r in results),
                                 all(r.intact for r in results), sum(r.seconds for r in results))
    if not isinstance(src, NamespaceHost) or not isinstance(dst_host, NamespaceHost):
        raise SpecError(f"traffic {t.name}: udp streams run between namespace hosts only; use tcp or ping with VMs")
    return traffic.udp_stream(src.netns, dst_host.netns, dst, p["count"], size=p["size"], rate_pps=p["rate"],
                              sport=p["sport"], dport=p["dport"])
