"""Throw-away labs: hosts (network namespaces), Linux or Open vSwitch bridges,
and veth links between them.

Every name carries a unique prefix; `down()` deletes what `up()` made (the
namespaces, which takes their veth ends along, and an OVS bridge), also when
the work in between failed. Addresses live only inside these namespaces.
Neighbours are pinned (permanent entries), so traffic has no ARP/ND in it
and runs repeat exactly.
"""

from __future__ import annotations

import ipaddress
import dataclasses
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

from ..errors import EnvironmentProblem, FaultinjError
from ..inject import labrecords
from . import ovs
from ..inject.labrecords import forget, reap_orphans, recorded_labs, remove_recorded  # noqa: F401 (the lab's API)
from ..kernel.netns import netns_exec  # noqa: F401 (the lab's API)
from .ovs import OvsBridgeSpec, OvsPortSpec
from ..guest import kernels, vm
from ..guest.agent import Agent


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise EnvironmentProblem(f"{cmd[0]} not found: install iproute2 and ethtool") from None
    if check and proc.returncode != 0:
        raise FaultinjError(f"'{' '.join(cmd)}' failed: {proc.stderr.strip()}")
    return proc


def unique_prefix() -> str:
    return f"fi{os.getpid() % 1000:03d}{secrets.token_hex(2)}"


@dataclass
class LinkSettings:
    """What decides what a fault sees: offloads, GSO segment count, MTU."""

    tx_checksum: bool = True           # off: the stack computes full checksums itself
    gso_max_segs: int | None = None    # 1: every skb at tc egress is one wire segment
    mtu: int | None = None


@dataclass
class EndSpec:
    host: str                          # a host, or a bridge's name for its port
    ifname: str
    ipv4: str | None = None            # CIDR, e.g. 10.0.0.1/24
    ipv6: str | None = None
    settings: LinkSettings = field(default_factory=LinkSettings)
    port: OvsPortSpec | None = None    # on an OVS bridge's end: the port's options


@dataclass
class LinkSpec:
    a: EndSpec
    b: EndSpec                         # b.host may be a bridge


@dataclass
class VMHostSpec:
    """A host that is a QEMU VM (faultinj.guest) instead of a namespace."""

    kernel: str                        # a Debian kernel package name or a vmlinuz path
    memory: str = "1G"
    cpus: int = 1


@dataclass
class RemoteHostSpec:
    """A machine the user has (a VM of their libvirt lab, a server), driven through ssh: faultinj
    must be installed there; the lab neither makes nor wires it."""

    ssh: str                            # user@host, or a name from ~/.ssh/config
    options: list[str] = field(default_factory=list)    # extra ssh arguments (-o ..., -i KEY, -p PORT)
    command: str = "faultinj agent --stdio"
    interfaces: dict[str, str | None] = field(default_factory=dict)   # its interfaces -> address/prefix


@dataclass
class TopologySpec:
    hosts: list[str]
    links: list[LinkSpec]
    bridges: dict[str, str] = field(default_factory=dict)  # name -> linux | ovs
    vms: dict[str, VMHostSpec] = field(default_factory=dict)  # hosts that are VMs
    remote: dict[str, RemoteHostSpec] = field(default_factory=dict)  # hosts reached through ssh
    ovs: dict[str, OvsBridgeSpec] = field(default_factory=dict)  # OVS bridges' rules and settings
    # the whole lab (its namespaces and bridges) made inside one VM on this kernel (scenario/inguest.py)
    guest: VMHostSpec | None = None
    # an Open vSwitch build's prefix (bridges' `prefix`, or --ovs): its daemons and tools run the ovs bridges
    ovs_prefix: str | None = None


@dataclass
class Host:
    """One end of a link in a host: what faults, traffic and captures need."""

    netns: str | None                  # None on a VM host
    ifname: str
    ip4: str | None
    ip6: str | None
    mac: str
    vm: str | None = None              # the VM host's name


def _mac(n: int) -> str:
    return "02:fa:%02x:%02x:%02x:%02x" % ((n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)


class Topology:
    def __init__(self, spec: TopologySpec, prefix: str | None = None):
        self.spec = spec
        self.prefix = prefix or unique_prefix()
        self.namespaces: list[str] = []
        self.ovs_bridges: list[str] = []
        # a private ovs-vswitchd (an OVS build's prefix) runs in a namespace of its own: its ports go there
        self.ovs_netns: str | None = None
        self.ends: dict[tuple[str, str], Host] = {}  # (host, ifname) -> Host
        self.taps: dict[str, str | None] = {}   # tap -> the namespace it was moved to (None: ours)
        self.guests: dict = {}                          # VM host -> faultinj.guest.vm.Guest
        self.remotes: dict = {}                         # ssh host -> its faultinj.guest.agent.Agent
        self.progress = lambda msg: None
        self.record = lambda: None   # called when VMs started: the lab record must name their pids

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}-sw"

    def end(self, host: str, ifname: str | None = None) -> Host:
        for (h, i), end in self.ends.items():
            if h == host and (ifname is None or i == ifname):
                return end
        raise KeyError(f"{host}/{ifname}")

    def planned(self) -> tuple[list[str], list[str]]:
        """The namespaces and OVS bridges up() makes, known before it runs."""
        bridges = self.spec.bridges
        nss = [self.netns(h) for h in self.spec.hosts if h not in self.spec.vms and h not in self.spec.remote]
        if any(kind == "linux" for kind in bridges.values()):
            nss.append(self.switch_ns)
        return nss, [self._ovs_name(b) for b, kind in bridges.items() if kind == "ovs"]

    def up(self) -> "Topology":
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _add_ns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _up(self) -> None:
        bridges = self.spec.bridges
        if self.spec.vms:   # everything a VM needs, before anything is made

            vm.require_tools()
            self.kernels = {h: kernels.resolve(hs.kernel, self.progress) for h, hs in self.spec.vms.items()}
        for h, rs in self.spec.remote.items():
            self.remotes[h] = Agent.ssh(rs.ssh, rs.options, rs.command, f"host {h} ({rs.ssh})", timeout=60)
            self.progress(f"host {h}: faultinj agent up through ssh {rs.ssh} ({self.remotes[h].info['release']})")
        for h in self.spec.hosts:
            if h not in self.spec.vms and h not in self.spec.remote:
                self._add_ns(self.netns(h))
        if any(kind == "linux" for kind in bridges.values()):
            self._add_ns(self.switch_ns)
        for name, kind in bridges.items():
            if kind == "linux":
                _run("ip", "-n", self.switch_ns, "link", "add", name, "type", "bridge")
                _run("ip", "-n", self.switch_ns, "link", "set", name, "up")
            else:
                self._ovs_bridge(name)
        seg_of: dict[int, str] = {}  # link index -> L2 segment (a bridge name, or the link itself)
        vm_links = [(n, link) for n, link in enumerate(self.spec.links, 1) if link.a.host in self.spec.vms]
        if vm_links:
            self._boot_vms(vm_links, seg_of)
        for n, link in enumerate(self.spec.links, 1):
            if link.a.host in self.spec.vms:
                continue
            a_mac, b_mac = _mac(n * 2), _mac(n * 2 + 1)
            a_ns = self.netns(link.a.host)
            if link.b.host in bridges:
                kind = bridges[link.b.host]
                port = f"{self.prefix}p{n}"
                b_ns = self.switch_ns if kind == "linux" else self.ovs_netns
                peer = ["peer", "name", port] + (["netns", b_ns] if b_ns else [])
                _run("ip", "link", "add", link.a.ifname, "netns", a_ns, "address", a_mac, "type", "veth", *peer)
                if kind == "linux":
                    _run("ip", "-n", b_ns, "link", "set", port, "master", link.b.host)
                    _run("ip", "-n", b_ns, "link", "set", port, "up")
                else:
                    _run("ip", *(["-n", b_ns] if b_ns else []), "link", "set", port, "up")
                    self._ovs_add_port(link.b, port)
                seg_of[n] = link.b.host
                if kind == "ovs" and (not os.path.isdir("/sys/module/openvswitch") or os.environ.get(ovs.USERSPACE_ENV)):
                    # the userspace datapath does not finish partial checksums: a host whose
                    # offload is on would send TCP the other end drops (DESIGN.md)
                    link.a.settings = dataclasses.replace(link.a.settings, tx_checksum=False)
                self._configure(link.a, a_mac)
            else:
                b_ns = self.netns(link.b.host)
                _run("ip", "link", "add", link.a.ifname, "netns", a_ns, "address", a_mac, "type", "veth",
                     "peer", "name", link.b.ifname, "netns", b_ns, "address", b_mac)
                seg_of[n] = f"link{n}"
                self._configure(link.a, a_mac)
                self._configure(link.b, b_mac)
        self._pin_neighbours(seg_of)
        for name, kind in bridges.items():   # rules last: they may name ports by number
            if kind == "ovs" and name in self.spec.ovs:
                ovs.install_flows(self._ovs_name(name), name, self.spec.ovs[name])

    def tap_name(self, n: int) -> str:
        return f"{self.prefix}t{n}"

    def _boot_vms(self, vm_links, seg_of) -> None:
        """Taps first (QEMU opens them by name in this namespace), the VMs, then the taps join
        their bridges; each guest interface is then found by its MAC and named as the scenario says."""
        nics: dict[str, list] = {h: [] for h in self.spec.vms}
        for n, link in vm_links:
            tap = self.tap_name(n)
            vm.make_tap(tap)
            self.taps[tap] = None
            nics[link.a.host].append(vm.Nic(tap, _mac(n * 2)))
        for h, hs in self.spec.vms.items():
            kernel = self.kernels[h]
            spec = vm.VMSpec(f"{self.prefix}-{h}", kernel, hs.memory, hs.cpus, nics[h])
            self.guests[h] = vm.Guest(spec, vm.workdir(self.prefix, h)).start()
            self.record()
            self.progress(f"VM {h}: booting {kernel.release} ({vm.accel()[1]})")
        for h, guest in self.guests.items():   # they boot side by side
            guest.wait_ready()
            self.progress(f"VM {h}: up ({guest.agent.info['release']})")
        for i, (n, link) in enumerate(vm_links):
            tap = self.tap_name(n)
            kind = self.spec.bridges[link.b.host]
            if kind == "linux":
                _run("ip", "link", "set", tap, "netns", self.switch_ns)
                self.taps[tap] = self.switch_ns
                _run("ip", "-n", self.switch_ns, "link", "set", tap, "master", link.b.host)
                _run("ip", "-n", self.switch_ns, "link", "set", tap, "up")
            else:
                self._ovs_add_port(link.b, tap)
            seg_of[n] = link.b.host
            self._configure_vm_end(link.a, _mac(n * 2))

    def _configure_vm_end(self, end: EndSpec, mac: str) -> None:
        agent = self.guests[end.host].agent
        links = agent.info["links"]   # from the agent's hello: the NIC driver loads before it starts
        current = next((ln["ifname"] for ln in links if ln["mac"] == mac), None)
        if current is None:
            raise FaultinjError(f"VM {end.host}: no interface with MAC {mac} ({links})")
        ip = lambda *a: agent.call("exec", argv=["ip", *a], check=True)
        if current != end.ifname:
            ip("link", "set", current, "name", end.ifname)
        st = end.settings
        if end.ipv4:
            ip("addr", "add", end.ipv4, "dev", end.ifname)
        if end.ipv6:
            ip("addr", "add", end.ipv6, "dev", end.ifname, "nodad")
        if st.mtu:
            ip("link", "set", end.ifname, "mtu", str(st.mtu))
        if st.gso_max_segs is not None:
            ip("link", "set", end.ifname, "gso_max_segs", str(st.gso_max_segs))
        # no GRO on a VM's NIC: its captures count wire segments, as on a lab's veth
        offloads = ["gro", "off"] + ([] if st.tx_checksum else ["tx", "off"])
        agent.call("exec", argv=["ethtool", "-K", end.ifname, *offloads], check=True)
        ip("link", "set", end.ifname, "up")
        self.ends[(end.host, end.ifname)] = Host(
            None, end.ifname, end.ipv4.split("/")[0] if end.ipv4 else None,
            end.ipv6.split("/")[0] if end.ipv6 else None, mac, vm=end.host)

    def _configure(self, end: EndSpec, mac: str) -> None:
        ns = self.netns(end.host)
        ipn = ("ip", "-n", ns)
        st = end.settings
        if end.ipv4:
            _run(*ipn, "addr", "add", end.ipv4, "dev", end.ifname)
        if end.ipv6:
            _run(*ipn, "addr", "add", end.ipv6, "dev", end.ifname, "nodad")
        if st.mtu:
            _run(*ipn, "link", "set", end.ifname, "mtu", str(st.mtu))
        if st.gso_max_segs is not None:
            _run(*ipn, "link", "set", end.ifname, "gso_max_segs", str(st.gso_max_segs))
        if not st.tx_checksum:
            if not shutil.which("ethtool"):
                raise EnvironmentProblem("ethtool not found: install it (apt-get install ethtool)")
            _run("ip", "netns", "exec", ns, "ethtool", "-K", end.ifname, "tx", "off")
        _run(*ipn, "link", "set", end.ifname, "up")
        self.ends[(end.host, end.ifname)] = Host(
            ns, end.ifname, end.ipv4.split("/")[0] if end.ipv4 else None,
            end.ipv6.split("/")[0] if end.ipv6 else None, mac)

    def _pin_neighbours(self, seg_of: dict[int, str]) -> None:
        members: dict[str, list[Host]] = {}
        for n, link in enumerate(self.spec.links, 1):
            for end in (link.a, link.b):
                if (end.host, end.ifname) in self.ends:
                    members.setdefault(seg_of[n], []).append(self.ends[(end.host, end.ifname)])
        for hosts in members.values():
            for me in hosts:
                for other in hosts:
                    if other is me:
                        continue
                    for mine, theirs in ((me.ip4, other.ip4), (me.ip6, other.ip6)):
                        if mine and theirs and _same_subnet(self._cidr(me, mine), theirs):
                            argv = ["neigh", "replace", theirs, "lladdr", other.mac, "dev", me.ifname,
                                    "nud", "permanent"]
                            if me.vm:
                                self.guests[me.vm].agent.call("exec", argv=["ip", *argv], check=True)
                            else:
                                _run("ip", "-n", me.netns, *argv)

    def _cidr(self, host: Host, addr: str) -> str:
        for link in self.spec.links:
            for end in (link.a, link.b):
                for cidr in (end.ipv4, end.ipv6):
                    if cidr and cidr.split("/")[0] == addr and (
                            end.host == host.vm if host.vm else self.netns(end.host) == host.netns):
                        return cidr
        return addr

    def _ovs_name(self, bridge: str) -> str:
        return f"{self.prefix}{bridge}"[:15]

    def _ovs_add_port(self, end: EndSpec, port: str) -> None:
        _run("ovs-vsctl", "add-port", self._ovs_name(end.host), port,
             *(end.port.vsctl_settings(port) if end.port else []))

    def ovs_report(self) -> dict[str, dict]:
        """Each OVS bridge's rules with their statistics and its megaflows, now."""
        return {name: ovs.dump(self._ovs_name(name), name, self.spec.ovs.get(name) or OvsBridgeSpec())
                for name, kind in self.spec.bridges.items() if kind == "ovs" and self._ovs_name(name) in self.ovs_bridges}

    def _ovs_bridge(self, name: str) -> None:
        if not shutil.which("ovs-vsctl"):
            raise EnvironmentProblem("an ovs bridge needs Open vSwitch: install openvswitch-switch and run "
                                     "'ovs-ctl start' (or use kind: linux)")
        if _run("ovs-vsctl", "--timeout=3", "show", check=False).returncode != 0:
            raise EnvironmentProblem("Open vSwitch is installed but ovsdb-server/ovs-vswitchd are not running: "
                                     "start them with '/usr/share/openvswitch/scripts/ovs-ctl start --no-mlockall'")
        # a private switch on this machine (an OVS build's prefix) leaves the kernel datapath to the machine's own
        has_module = os.path.isdir("/sys/module/openvswitch") and not os.environ.get(ovs.USERSPACE_ENV)
        br = self._ovs_name(name)
        args = ["ovs-vsctl", "add-br", br]
        if not has_module:  # no kernel datapath here: the userspace one
            args += ["--", "set", "bridge", br, "datapath_type=netdev"]
        self.ovs_bridges.append(br)   # before it exists: a failed add-br leaves nothing half made
        _run(*args, *ovs.bridge_settings(br, self.spec.ovs.get(name) or OvsBridgeSpec()))
        _run("ip", *(["-n", self.ovs_netns] if self.ovs_netns else []), "link", "set", br, "up", check=False)

    def down(self) -> None:
        for agent in self.remotes.values():
            agent.close()
        self.remotes.clear()
        for guest in self.guests.values():
            guest.stop()
            shutil.rmtree(guest.workdir, ignore_errors=True)
        self.guests.clear()
        for tap, ns in self.taps.items():   # persistent taps outlive QEMU: ours go now
            _run(*(["ip", "-n", ns] if ns else ["ip"]), "link", "del", tap, check=False)
        self.taps.clear()
        for br in self.ovs_bridges:
            _run("ovs-vsctl", "--if-exists", "del-br", br, check=False)
        self.ovs_bridges.clear()
        for ns in reversed(self.namespaces):
            _run("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.down()


# ---- lab records: labs kept for interactive work, and labs of a running `faultinj run`
def remember(name: str, topo: Topology, kept: bool, extra: dict | None = None) -> dict:
    nss, bridges = topo.planned()
    taps = [topo.tap_name(n) for n, link in enumerate(topo.spec.links, 1) if link.a.host in topo.spec.vms]
    data = {"name": name, "prefix": topo.prefix, "namespaces": nss, "ovs_bridges": bridges, "taps": taps,
            "vm_pids": [g.proc.pid for g in topo.guests.values() if g.proc],
            "hosts": {h: topo.netns(h) for h in topo.spec.hosts}, "kept": kept, "owner_pid": os.getpid(),
            **(extra or {})}
    return labrecords.write(data)


def _same_subnet(cidr: str, addr: str) -> bool:
    if "/" not in cidr:
        return True
    try:
        return ipaddress.ip_address(addr) in ipaddress.ip_interface(cidr).network
    except ValueError:
        return False


class Lab:
    """The two-host lab of the demo and the tests: A and B joined by a veth pair."""

    def __init__(self, prefix: str | None = None):
        self.prefix = prefix or unique_prefix()
        self.topology: Topology | None = None
        self.a: Host | None = None
        self.b: Host | None = None

    def up(self, a_settings: LinkSettings | None = None, b_settings: LinkSettings | None = None) -> "Lab":
        net = int(self.prefix[-4:], 16) % 250 + 1
        spec = TopologySpec(hosts=["a", "b"], links=[LinkSpec(
            EndSpec("a", f"{self.prefix}a", f"10.201.{net}.1/24", f"fd00:fa:{net:x}::1/64",
                    a_settings or LinkSettings()),
            EndSpec("b", f"{self.prefix}b", f"10.201.{net}.2/24", f"fd00:fa:{net:x}::2/64",
                    b_settings or LinkSettings()))])
        self.topology = Topology(spec, self.prefix).up()
        self.a = self.topology.end("a")
        self.b = self.topology.end("b")
        return self

    def down(self) -> None:
        if self.topology:
            self.topology.down()

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.down()

