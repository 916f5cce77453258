"""What a scenario does on a host, whatever the host is: a network namespace on this machine
(the library called here), or a VM or a machine reached over ssh (the same library called by
the agent there).

`Host` writes each verb once: its parameters and its result's type. `NamespaceHost` does the
verbs with the library; `AgentHost` sends them to an agent, whose server (guest/server.py) answers
them with a NamespaceHost of its own. Both ends convert with the same two functions, to_json and
from_json, led by the verb's annotations: a result type carries its own JSON (to_json/from_json,
or a dataclass's fields), so nothing is converted by hand on either side.

Traffic is split into its two ends (a TCP receiver and a sender) so that each end runs where
its host is."""

from __future__ import annotations

import abc
import base64
import dataclasses
import functools
import inspect
import shlex
import types
import typing
from typing import NamedTuple, NewType, Union

from .. import api
from ..errors import FaultinjError, SpecError, TargetError
from ..kernel import netns as netns_mod
from ..inject import targets
from ..labs import traffic
from ..labs.capture import Capture, Frame
from ..kernel.netns import netns_exec
from ..labs.traffic import PingResult
from ..journal import Event

# what a verb returns to be given back to a later verb (a capture, a TCP receiver): the object
# itself here, a number standing for it across the wire (kept by the agent's server)
Handle = NewType("Handle", object)


@dataclasses.dataclass
class Completed:
    """A command's end (the fields of subprocess.CompletedProcess)."""

    args: list
    returncode: int
    stdout: str
    stderr: str


class Captured(NamedTuple):
    """What a capture saw: its frames and the count the kernel dropped (unpacks as a pair)."""

    frames: list[Frame]
    kernel_drops: int

    def to_json(self) -> dict:
        return {"kernel_drops": self.kernel_drops,
                "frames": [[f.ts_ns, f.outgoing, f.length, base64.b64encode(f.data).decode()] for f in self.frames]}

    @classmethod
    def from_json(cls, d: dict) -> "Captured":
        return cls([Frame(int(ts), bool(out), int(n), base64.b64decode(data)) for ts, out, n, data in d["frames"]],
                   int(d["kernel_drops"]))


class Host(abc.ABC):
    """The verbs, once. Parameters are passed by name across the wire: an implementation keeps
    each verb's signature exactly (tests/test_hosts.py checks it)."""

    name: str
    kernel: str | None   # the host's kernel release; None: this machine's

    @abc.abstractmethod
    def apply(self, spec: str, ifname: str, seed: int | None = None, tc_mode: str = "cls_bpf",
              hook: str | None = None, replace: bool = False, duration: str | float | None = None) -> dict:
        """Attach a fault (a spec, or its text) on interface ifname: its record's JSON."""

    @abc.abstractmethod
    def status(self, fault_id: str | None = None) -> list[dict]:
        """Every fault's state and counters on the host's machine (or one fault's)."""

    @abc.abstractmethod
    def set_fault(self, ifname: str | None, spec: str, seed: int | None = None,
                  duration: str | float | None = None, fault_id: str | None = None) -> dict:
        """Change a running fault with a map write (lifecycle.set_fault): its record's JSON."""

    @abc.abstractmethod
    def clear(self, fault_id: str) -> dict | None:
        """Remove the fault: the record it had, with its counters and lost journal events read after
        its program was detached (final_counters, final_journal_lost); None when there was none."""

    @abc.abstractmethod
    def journal(self, fault_id: str) -> list[Event]:
        """The fault's journal events not returned yet (one reader per fault, kept: the journal is
        not consumed, so a new reader would see the events already returned again)."""

    @abc.abstractmethod
    def journal_close(self, fault_id: str) -> list[Event]:
        """The events an open journal reader has not returned yet (also after clear: the reader
        holds the ring), then close it."""

    @abc.abstractmethod
    def capture_start(self, ifname: str, snaplen: int = 256, direction: str = "any") -> Handle:
        """Start capturing on ifname."""

    @abc.abstractmethod
    def capture_stop(self, handle: Handle, settle: float = 0.2) -> Captured:
        """Stop the capture (after `settle` seconds for what is still on its way)."""

    @abc.abstractmethod
    def tcp_listen(self, addr: str, port: int, timeout: float = 60.0) -> Handle:
        """The receiving end of a TCP transfer, listening."""

    @abc.abstractmethod
    def tcp_result(self, handle: Handle) -> dict:
        """Wait for the transfer to the listener to end: {'received', 'sha256', 'error'}."""

    @abc.abstractmethod
    def tcp_send(self, addr: str, nbytes: int, port: int, seed: int = 1, timeout: float = 60.0) -> dict:
        """Send nbytes of seeded random data: {'sent', 'sha256', 'seconds', 'error'}."""

    @abc.abstractmethod
    def ping(self, dst: str, count: int, interval: float, size: int, timeout: float) -> PingResult:
        """count echo requests to dst."""

    @abc.abstractmethod
    def exec(self, argv: list[str], timeout: float = 120, check: bool = False, cwd: str | None = None) -> Completed:
        """Run a command there; check: its failure is an error (FaultinjError)."""

    @abc.abstractmethod
    def csum_errors(self) -> int:
        """TCP and UDP checksum errors counted by the host's stack so far."""

    @abc.abstractmethod
    def kernel_counters(self) -> dict[str, int]:
        """Every counter of /proc/net/snmp, netstat and snmp6, flat ('TcpExt.TCPOFOQueue')."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of what the host holds for its verbs (journal readers). Not a verb: an agent's
        server closes its own host when its caller goes."""


VERBS: tuple[str, ...] = tuple(n for n, f in vars(Host).items()
                               if getattr(f, "__isabstractmethod__", False) and n != "close")


@functools.cache
def annotations(verb: str) -> tuple[inspect.Signature, dict]:
    """The verb's signature and its parameters' and result's types."""
    f = getattr(Host, verb)
    return inspect.signature(f), typing.get_type_hints(f)


def to_json(value):
    """A verb's result or parameter as JSON: its own to_json, a dataclass's fields, or a list of them."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def from_json(data, tp):
    """JSON back as type tp: its from_json, a dataclass from its fields (others ignored), a list of them."""
    if data is None:
        return None
    if typing.get_origin(tp) in (Union, types.UnionType):
        kinds = [a for a in typing.get_args(tp) if a is not type(None)]
        return from_json(data, kinds[0]) if len(kinds) == 1 else data
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return [from_json(d, item) for d in data]
    if hasattr(tp, "from_json"):
        return tp.from_json(data)
    if dataclasses.is_dataclass(tp):
        return tp(**{f.name: data[f.name] for f in dataclasses.fields(tp) if f.name in data})
    return data


def _over_the_wire(cls):
    """Every verb of Host as a call to the agent, written from the verb's annotations."""

    def remote(verb: str):
        sig, hints = annotations(verb)

        @functools.wraps(getattr(Host, verb))
        def call(self, *args, **kwargs):
            bound = sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            params = {k: str(v) if hints.get(k) is str and v is not None else to_json(v)   # a spec: its text
                      for k, v in list(bound.arguments.items())[1:]}
            return from_json(self.agent.call(verb, **params), hints["return"])

        call.verb, call.__isabstractmethod__ = verb, False   # wraps copied the stub's mark
        return call

    for verb in VERBS:
        setattr(cls, verb, remote(verb))
    return abc.update_abstractmethods(cls)


class NamespaceHost(Host):
    """A network namespace on this machine (netns None: the one this process runs in, as in an
    agent's server)."""

    def __init__(self, name: str, netns: str | None):
        self.name, self.netns = name, netns
        self.kernel = None   # this machine's
        self._readers: dict[str, object] = {}

    def apply(self, spec: str, ifname: str, seed: int | None = None, tc_mode: str = "cls_bpf",
              hook: str | None = None, replace: bool = False, duration: str | float | None = None) -> dict:
        return api.apply(spec, ifname, netns_name=self.netns, seed=seed, tc_mode=tc_mode, hook=hook,
                         replace=replace, duration=duration).to_json()

    def status(self, fault_id: str | None = None) -> list[dict]:
        return [s.to_json() for s in api.status(fault_id=fault_id)]

    def set_fault(self, ifname: str | None, spec: str, seed: int | None = None,
                  duration: str | float | None = None, fault_id: str | None = None) -> dict:
        return api.set_fault(ifname, spec, netns_name=self.netns, seed=seed, duration=duration,
                             fault_id=fault_id).to_json()

    def clear(self, fault_id: str) -> dict | None:
        removed = api.clear(fault_id=fault_id)
        return next((r.to_json() for r in removed if r.id == fault_id), None)

    def journal(self, fault_id: str) -> list[Event]:
        reader = self._readers.get(fault_id) or self._readers.setdefault(fault_id, api.journal(fault_id=fault_id))
        return reader.read()

    def journal_close(self, fault_id: str) -> list[Event]:
        reader = self._readers.pop(fault_id, None)
        if reader is None:
            return []
        try:
            return reader.read()
        finally:
            reader.close()

    def capture_start(self, ifname: str, snaplen: int = 256, direction: str = "any") -> Handle:
        return Capture(self.netns, ifname, snaplen=snaplen, direction=direction).start()

    def capture_stop(self, handle: Handle, settle: float = 0.2) -> Captured:
        frames = handle.stop(settle=settle)
        return Captured(frames, handle.kernel_drops)

    def tcp_listen(self, addr: str, port: int, timeout: float = 60.0) -> Handle:
        return traffic.TcpReceiver(self.netns, addr, port, timeout)

    def tcp_result(self, handle: Handle) -> dict:
        return handle.result()

    def tcp_send(self, addr: str, nbytes: int, port: int, seed: int = 1, timeout: float = 60.0) -> dict:
        return traffic.tcp_send(self.netns, addr, nbytes, port, seed, timeout=timeout)

    def ping(self, dst: str, count: int, interval: float, size: int, timeout: float) -> PingResult:
        return traffic.ping(self.netns, dst, count, interval, size, timeout)

    def exec(self, argv: list[str], timeout: float = 120, check: bool = False, cwd: str | None = None) -> Completed:
        argv = [str(a) for a in argv]
        proc = netns_exec(self.netns, *argv, timeout=timeout, cwd=cwd)
        if check and proc.returncode:
            raise FaultinjError(f"'{' '.join(argv)}' failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return Completed(argv, proc.returncode, proc.stdout, proc.stderr)

    def csum_errors(self) -> int:
        snmp = traffic.snmp(self.netns)
        return snmp.get("Tcp", {}).get("InCsumErrors", 0) + snmp.get("Udp", {}).get("InCsumErrors", 0)

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

    def apply(self, spec: str, ifname: str, seed: int | None = None, tc_mode: str = "cls_bpf",
              hook: str | None = None, replace: bool = False, duration: str | float | None = None) -> dict:
        return api.apply(spec, ifname, seed=seed, tc_mode=tc_mode, hook=hook, replace=replace, duration=duration,
                         **self.opts).to_json()

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


@_over_the_wire
class AgentHost(Host):
    """A VM, or a machine reached over ssh: every verb goes to the faultinj agent there
    (guest/agent.py's Agent), written from Host's annotations, none by hand."""

    def __init__(self, name: str, agent):
        self.name, self.agent = name, agent
        self.netns = None
        self.kernel = agent.info.get("release")

    def close(self) -> None:
        pass   # the agent is the lab's: it closes it


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
            return src.exec(argv, p["timeout"])
        except Exception as exc:  # a timeout is a result, not a crash
            return Completed(argv, -1, str(exc), "")
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
