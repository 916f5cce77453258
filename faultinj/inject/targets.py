"""Where a fault goes when the user names a container, a process or a namespace file.

Each becomes a Target: the network namespace to work in (a path such as
/proc/PID/ns/net, or a name, or None for ours), its inode (so a reused PID is
never mistaken for the namespace the fault was put in), and the label `status`
shows. Containers are looked up through their runtime (runtimes.py): it knows the
container's init PID, and every runtime's container is in that process's
network namespace.

`--peer-of` goes the other way: the container's interface is one end of a veth;
its IFLA_LINK is the peer's ifindex and IFLA_LINK_NETNSID says which namespace
holds the peer, as the container's namespace numbers it. We match that number
against the namespaces we know (ours and /run/netns/*) by asking the
container's namespace for their ids (RTM_GETNSID), never by guessing veth names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import SpecError, TargetError
from ..kernel import netns
from . import runtimes


@dataclass
class Target:
    netns: str | None          # what netns.entered() takes
    label: str | None = None   # as the user named it (None: a plain --netns or ours)
    container: str | None = None
    inode: int | None = None

    @property
    def where(self) -> str:
        return self.label or self.netns or "host"


find_container = runtimes.find   # api's name for it


def _ns_of_pid(pid: int, what: str) -> tuple[str, int]:
    path = f"/proc/{pid}/ns/net"
    ino = netns.inode(path)
    if ino is None:
        raise TargetError(f"{what}: no process {pid} (or its namespace cannot be read)")
    return path, ino


def resolve(*, netns_name: str | None = None, netns_path: str | None = None, pid: int | None = None,
            container: str | None = None, runtime: str | None = None) -> Target:
    """The one namespace the options name (at most one may be given)."""
    given = [n for n, v in (("--netns", netns_name), ("--netns-path", netns_path), ("--pid", pid),
                            ("--container", container)) if v is not None]
    if len(given) > 1:
        raise SpecError(f"give one of {', '.join(given)}: each names a network namespace")
    if runtime is not None and container is None:
        raise SpecError("--runtime goes with --container")
    if container is not None:
        c = runtimes.find(container, runtime)
        if not c.pid:
            raise TargetError(f"container '{container}' ({c.runtime} {c.id[:12]}) is not running")
        path, ino = _ns_of_pid(c.pid, f"container '{container}'")
        return Target(path, f"container:{container}", c.id, ino)
    if pid is not None:
        if pid <= 0:
            raise SpecError(f"bad pid {pid}: give a process id")
        path, ino = _ns_of_pid(pid, f"--pid {pid}")
        return Target(path, f"pid:{pid}", None, ino)
    if netns_path is not None:
        path = os.path.abspath(netns_path)
        ino = netns.inode(path)
        if ino is None:
            raise TargetError(f"network namespace file {netns_path} not found")
        with netns.entered(path):   # refuses a file that is not a network namespace
            pass
        return Target(path, path, None, ino)
    return Target(netns_name, None, None, None)


def _known_namespaces() -> list[str | None]:
    return [None] + netns.list_netns()


def peer_of(container: str, ifname: str = "eth0", runtime: str | None = None) -> tuple[Target, str]:
    """The far end of the container's veth ifname: (its namespace as a Target, its interface name)."""
    inside = resolve(container=container, runtime=runtime)
    index = netns.link_index(inside.netns, ifname, inside.label)
    ipr = netns.open_iproute(inside.netns)
    try:
        link = ipr.get_links(index)[0]
        peer_index = link.get_attr("IFLA_LINK")
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info else None
        if kind != "veth" or not peer_index:
            raise TargetError(f"{ifname} in container '{container}' is not a veth ({kind or 'no kind'}): "
                              "--peer-of needs a veth pair")
        nsid = link.get_attr("IFLA_LINK_NETNSID")
        if nsid is None:
            peer_ns = inside.netns     # both ends in the container
        else:
            peer_ns = _namespace_with_id(ipr, nsid, container)
    finally:
        ipr.close()
    peer_ipr = netns.open_iproute(peer_ns)
    try:
        found = peer_ipr.get_links(peer_index)
        peer_name = found[0].get_attr("IFLA_IFNAME") if found else None
    except Exception:
        peer_name = None
    finally:
        peer_ipr.close()
    if not peer_name:
        raise TargetError(f"the peer of {ifname} in container '{container}' (ifindex {peer_index}) is gone")
    label = f"peer-of:{container}"
    ino = netns.inode(peer_ns)
    return Target(peer_ns, label, inside.container, ino if netns.is_path(peer_ns) else None), peer_name


def _namespace_with_id(ipr, nsid: int, container: str) -> str | None:
    """Which of our known namespaces the container's namespace calls nsid."""
    for cand in _known_namespaces():
        path = "/proc/self/ns/net" if cand is None else os.path.join(netns.NETNS_RUN_DIR, cand)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            got = ipr.get_netnsid(fd=fd)
        except Exception:
            got = None
        finally:
            os.close(fd)
        if got and got.get("nsid") == nsid:
            return cand
    raise TargetError(f"the peer of container '{container}''s interface is in a namespace faultinj cannot "
                      f"name (netnsid {nsid}): neither this one nor any in /run/netns")
