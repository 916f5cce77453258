"""Network namespaces and interfaces: entering a namespace, finding links.

A namespace is given as None (ours), a name under /run/netns, or an absolute
path to a namespace file (/proc/PID/ns/net, a runtime's bind mount): paths are
how containers and processes are addressed. We setns() this thread ourselves
instead of using pyroute2's pushns(), which creates a namespace that does not
exist (a typo would make a new empty namespace), and which only knows names.
Netlink sockets keep the namespace they were opened in, so an IPRoute opened
inside `entered()` works after it; libbpf calls that take an ifindex must run
inside the block. A path can outlive its namespace's identity (/proc/PID is
reused), so records keep the namespace's inode and `alive()` compares it.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
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


def is_path(netns: str | None) -> bool:
    return bool(netns) and netns.startswith("/")


def command(netns: str | None, *argv: str) -> str:
    """A shell command that runs argv in netns as printed (hints a user pastes): `ip -n NS ...`,
    `tc -n NS ...`, `ip netns exec NS ethtool ...`; a namespace file through nsenter."""
    import shlex

    words = list(argv)
    if netns is not None:
        if is_path(netns):
            words = ["nsenter", f"--net={netns}", *words]
        elif words[0] in ("ip", "tc"):
            words = [words[0], "-n", netns, *words[1:]]
        else:
            words = ["ip", "netns", "exec", netns, *words]
    return " ".join(shlex.quote(w) for w in words)


def _file(netns: str) -> str:
    return netns if is_path(netns) else os.path.join(NETNS_RUN_DIR, netns)


def netns_exists(name: str) -> bool:
    return os.path.exists(_file(name))


def inode(netns: str | None) -> int | None:
    """The namespace's identity (its nsfs inode), None if it is gone."""
    try:
        return os.stat(_file(netns) if netns else "/proc/thread-self/ns/net").st_ino
    except OSError:
        return None


def alive(netns: str | None, expected_inode: int | None = None) -> bool:
    """The namespace exists and, when an inode was recorded, is still the same one."""
    if netns is None:
        return True
    found = inode(netns)
    return found is not None and (expected_inode is None or found == expected_inode)


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
    if is_path(netns):
        try:
            target = os.open(netns, os.O_RDONLY)
        except OSError as exc:
            raise TargetError(f"network namespace file {netns} cannot be opened ({exc.strerror})") from None
    elif "/" in netns or not netns_exists(netns):
        known = ", ".join(list_netns()) or "none"
        raise TargetError(f"network namespace '{netns}' not found (available: {known}); see 'ip netns list'")
    else:
        target = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            _setns(target)
        except OSError as exc:  # EINVAL: not a network namespace file
            raise TargetError(f"{netns} is not a network namespace ({exc.strerror})") from None
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


def links(netns: str | None) -> dict[int, str]:
    """The namespace's interfaces, index -> name: if_nameindex(3) inside it, no netlink library
    (pyroute2 alone takes longer to import than the commands that only look links up)."""
    # socket's C core has it; socket.py itself builds ~40 enums at import (~1.5 ms of every status)
    from _socket import if_nameindex

    with entered(netns):
        return dict(if_nameindex())


def link_index(netns: str | None, ifname: str, where: str | None = None) -> int:
    """ifname's index in netns; an unknown name says which there are. where: how to name the place."""
    found = links(netns)
    for index, name in found.items():
        if name == ifname:
            return index
    place = f"in namespace {where or netns}" if (where or netns) else "here"
    raise TargetError(f"interface '{ifname}' not found {place} (available: {', '.join(sorted(found.values()))})")


def link_exists(netns: str | None, ifindex: int, ifname: str) -> bool:
    return links(netns).get(ifindex) == ifname


class LazyIPRoute:
    """An IPRoute socket in ns, opened when first used: a command that only looks links up
    (netns.links) never imports pyroute2."""

    def __init__(self, ns: str | None):
        self._ns, self._ipr = ns, None

    def __getattr__(self, name: str):
        if self._ipr is None:
            self._ipr = open_iproute(self._ns)
        return getattr(self._ipr, name)

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()


class Links:
    """One command's IPRoute sockets, per namespace, opened on first use, closed together."""

    def __init__(self):
        self._open: dict[str | None, LazyIPRoute] = {}

    def get(self, ns: str | None) -> LazyIPRoute:
        if ns not in self._open:
            self._open[ns] = LazyIPRoute(ns)
        return self._open[ns]

    def cached(self, key: tuple, fetch):
        """One netlink dump per key for the life of this object (status reads many records)."""
        if not hasattr(self, "_cache"):
            self._cache = {}
        if key not in self._cache:
            self._cache[key] = fetch()
        return self._cache[key]

    def close(self):
        for ipr in self._open.values():
            ipr.close()
        self._open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def netns_exec(netns: str | None, *cmd: str, timeout: float = 120, cwd: str | None = None) -> subprocess.CompletedProcess:
    """cmd (this machine's) in network namespace netns: a name, or a file such as /proc/PID/ns/net
    (None: this process's own)."""
    enter = [] if netns is None else ["nsenter", f"--net={netns}"] if netns.startswith("/") else ["ip", "netns", "exec", netns]
    return subprocess.run([*enter, *cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd)
