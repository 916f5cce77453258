"""A throw-away lab: two network namespaces joined by a veth pair.

Every name carries a unique prefix, and `down()` deletes the namespaces
(which deletes the veth ends in them), also when the work in between failed.
Addresses live only inside these namespaces.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass, field

from ..errors import EnvironmentProblem, FaultinjError


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
class Host:
    netns: str
    ifname: str
    ip4: str
    ip6: str
    mac: str


@dataclass
class LinkSettings:
    """What decides what a fault sees: offloads and GSO segment size."""

    tx_checksum: bool = True      # off: the stack computes full checksums itself
    gso_max_segs: int | None = None  # 1: every skb at tc egress is one wire segment


@dataclass
class Lab:
    prefix: str = field(default_factory=unique_prefix)
    subnet: int = 0  # third octet / v6 group: keep concurrent labs apart
    a: Host | None = None
    b: Host | None = None

    def up(self, a_settings: LinkSettings | None = None, b_settings: LinkSettings | None = None) -> "Lab":
        p = self.prefix
        net = self.subnet or (int(p[-4:], 16) % 250) + 1
        self.a = Host(f"{p}-a", f"{p}a", f"10.201.{net}.1", f"fd00:fa:{net:x}::1", "02:fa:00:00:00:01")
        self.b = Host(f"{p}-b", f"{p}b", f"10.201.{net}.2", f"fd00:fa:{net:x}::2", "02:fa:00:00:00:02")
        try:
            for h in (self.a, self.b):
                _run("ip", "netns", "add", h.netns)
            _run("ip", "link", "add", self.a.ifname, "netns", self.a.netns, "address", self.a.mac, "type", "veth",
                 "peer", "name", self.b.ifname, "netns", self.b.netns, "address", self.b.mac)
            for h, peer, st in ((self.a, self.b, a_settings), (self.b, self.a, b_settings)):
                ns = ("ip", "-n", h.netns)
                _run(*ns, "link", "set", "lo", "up")
                _run(*ns, "addr", "add", f"{h.ip4}/24", "dev", h.ifname)
                _run(*ns, "addr", "add", f"{h.ip6}/64", "dev", h.ifname, "nodad")
                # static neighbours: no ARP/ND in the traffic, so runs repeat exactly
                _run(*ns, "neigh", "add", peer.ip4, "lladdr", peer.mac, "dev", h.ifname, "nud", "permanent")
                _run(*ns, "neigh", "add", peer.ip6, "lladdr", peer.mac, "dev", h.ifname, "nud", "permanent")
                if st and st.gso_max_segs is not None:
                    _run(*ns, "link", "set", h.ifname, "gso_max_segs", str(st.gso_max_segs))
                if st and not st.tx_checksum:
                    _run("ip", "netns", "exec", h.netns, "ethtool", "-K", h.ifname, "tx", "off")
                _run(*ns, "link", "set", h.ifname, "up")
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for h in (self.a, self.b):
            if h is not None:
                _run("ip", "netns", "del", h.netns, check=False)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.down()


def netns_exec(netns: str, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True, timeout=timeout)
