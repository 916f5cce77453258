"""Network namespaces and interfaces: entering a named namespace, finding links.

We setns() this thread into /run/netns/NAME ourselves instead of using
pyroute2's pushns(), which creates a namespace that does not exist (a typo
would make a new empty namespace). Netlink sockets keep the namespace they
were opened in, so an IPRoute opened inside `entered()` works after it.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from typing import Iterator

from ..errors import TargetError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(netns: str | None) -> Iterator[None]:
    """Run the block inside network namespace netns (None: stay where we are)."""
    if netns is None:
        yield
        return
    if "/" in netns or not netns_exists(netns):
        known = ", ".join(list_netns()) or "none"
        raise TargetError(f"network namespace '{netns}' not found (available: {known}); see 'ip netns list'")
    target = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def open_iproute(netns: str | None):
    """An IPRoute socket in netns."""
    from pyroute2 import IPRoute  # ~0.2 s to import: only commands that need it pay

    with entered(netns):
        return IPRoute(ext_ack=True)


def link_index(ipr, ifname: str, netns: str | None) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if found:
        return found[0]
    names = sorted(link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
    where = f"in namespace {netns}" if netns else "here"
    raise TargetError(f"interface '{ifname}' not found {where} (available: {', '.join(names)})")


def link_exists(ipr, ifindex: int, ifname: str) -> bool:
    found = ipr.link_lookup(ifname=ifname)
    return bool(found) and found[0] == ifindex
