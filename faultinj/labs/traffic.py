"""Built-in traffic between namespaces: ping, a TCP transfer checked byte for
byte, and a numbered UDP stream. Sockets are opened inside the namespaces, so
one process drives both ends; every loop is bounded in count and time."""

from __future__ import annotations

import hashlib
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass

from ..kernel.netns import netns_exec
from ..kernel.netns import entered

SO_RCVBUFFORCE = 33


@dataclass
class PingResult:
    returncode: int
    sent: int
    received: int
    output: str


def ping(netns: str, dst: str, count: int, interval: float = 0.002, size: int = 56, timeout: float = 2.0) -> PingResult:
    # exactly count requests (no -w: with it ping keeps sending until count replies)
    proc = netns_exec(netns, "ping", "-q", "-n", "-c", str(count), "-i", f"{interval:.3f}", "-s", str(size),
                      "-W", str(max(1, int(timeout))), dst, timeout=count * interval * 3 + timeout + 30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", proc.stdout)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return PingResult(proc.returncode, sent, received, proc.stdout + proc.stderr)


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


@dataclass
class TcpResult:
    sent: int
    received: int
    intact: bool
    seconds: float


class TcpReceiver:
    """The receiving end of a TCP transfer: listens in netns, counts and hashes what arrives.
    Apart from the sender so that the two ends can run on different machines (VM hosts)."""

    def __init__(self, netns: str | None, addr: str, port: int = 5201, timeout: float = 60.0):
        with entered(netns):
            self._lsock = socket.socket(_family(addr), socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((addr, port))
        self._lsock.listen(1)
        self._lsock.settimeout(timeout)
        self.timeout = timeout
        self.received = 0
        self._hash = hashlib.sha256()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        try:
            conn, _ = self._lsock.accept()
            conn.settimeout(self.timeout)
            with conn:
                while True:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        break
                    self.received += len(chunk)
                    self._hash.update(chunk)
        except OSError as exc:
            self.error = str(exc)

    def result(self, timeout: float | None = None) -> dict:
        """Wait for the sender to finish; {'received', 'sha256', 'error'}."""
        self._thread.join(self.timeout if timeout is None else timeout)
        self._lsock.close()
        return {"received": self.received, "sha256": self._hash.hexdigest(), "error": self.error}


def tcp_send(netns: str | None, dst_addr: str, nbytes: int, port: int = 5201, seed: int = 1,
             write_size: int = 1 << 20, timeout: float = 60.0) -> dict:
    """Send nbytes of seeded random data; {'sent', 'sha256', 'seconds', 'error'}."""
    rng = random.Random(seed)
    block = rng.randbytes(min(write_size, max(nbytes, 1)))
    sent_hash = hashlib.sha256()
    start = time.monotonic()
    with entered(netns):
        s = socket.socket(_family(dst_addr), socket.SOCK_STREAM)
    sent, error = 0, None
    try:
        s.settimeout(timeout)
        s.connect((dst_addr, port))
        while sent < nbytes:
            piece = block[: min(nbytes - sent, len(block))]
            s.sendall(piece)
            sent_hash.update(piece)
            sent += len(piece)
        s.shutdown(socket.SHUT_WR)
    except OSError as exc:
        error = str(exc)
    finally:
        s.close()
    return {"sent": sent, "sha256": sent_hash.hexdigest(), "seconds": time.monotonic() - start, "error": error}


def tcp_result(nbytes: int, sent: dict, got: dict, seconds: float) -> TcpResult:
    intact = (sent["error"] is None and got["error"] is None and got["received"] == nbytes
              and got["sha256"] == sent["sha256"])
    return TcpResult(nbytes, got["received"], intact, seconds)


def tcp_transfer(src_ns: str | None, dst_ns: str | None, dst_addr: str, nbytes: int, port: int = 5201,
                 seed: int = 1, write_size: int = 1 << 20, timeout: float = 60.0) -> TcpResult:
    """Send nbytes of seeded random data from src_ns to dst_ns; compare hashes."""
    rx = TcpReceiver(dst_ns, dst_addr, port, timeout)
    sent = tcp_send(src_ns, dst_addr, nbytes, port, seed, write_size, timeout)
    got = rx.result()
    return tcp_result(nbytes, sent, got, sent["seconds"])


@dataclass
class UdpResult:
    sent: int
    received: set[int]
    seconds: float


def udp_stream(src_ns: str, dst_ns: str, dst_addr: str, count: int, size: int = 64, rate_pps: int = 20000,
               sport: int = 40000, dport: int = 5300, settle: float = 0.3) -> UdpResult:
    """Send count numbered datagrams from a fixed source port (one flow)."""
    fam = _family(dst_addr)
    with entered(dst_ns):
        r = socket.socket(fam, socket.SOCK_DGRAM)
    with entered(src_ns):
        s = socket.socket(fam, socket.SOCK_DGRAM)
    received: set[int] = set()
    stop = threading.Event()
    try:
        r.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        r.bind((dst_addr, dport))
        r.settimeout(0.1)
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))

        def receive():
            while not stop.is_set():
                try:
                    data = r.recv(65535)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if len(data) >= 4:
                    received.add(struct.unpack_from("!I", data)[0])

        t = threading.Thread(target=receive, daemon=True)
        t.start()
        pad = b"\0" * max(0, size - 4)
        start = time.monotonic()
        burst = max(1, rate_pps // 100)
        for i in range(count):
            s.sendto(struct.pack("!I", i) + pad, (dst_addr, dport))
            if i % burst == burst - 1:
                ahead = (i + 1) / rate_pps - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        secs = time.monotonic() - start
        deadline = time.monotonic() + 5
        last = -1
        while time.monotonic() < deadline and len(received) != last:  # until arrivals stop
            last = len(received)
            time.sleep(settle)
        stop.set()
        t.join()
    finally:
        s.close()
        r.close()
    return UdpResult(count, received, secs)


def snmp(netns: str | None) -> dict[str, dict[str, int]]:
    """The namespace's /proc/net/snmp counters, e.g. snmp(ns)['Tcp']['InCsumErrors']."""
    with entered(netns):
        with open("/proc/thread-self/net/snmp") as f:
            lines = f.read().splitlines()
    out: dict[str, dict[str, int]] = {}
    for head, vals in zip(lines[::2], lines[1::2]):
        proto, names = head.split(":", 1)
        out[proto] = dict(zip(names.split(), (int(v) for v in vals.split(":", 1)[1].split())))
    return out


def kernel_counters(netns: str | None) -> dict[str, int]:
    """Every counter of the namespace's /proc/net/snmp, /proc/net/netstat (IpExt, TcpExt) and
    /proc/net/snmp6, flat: 'Tcp.InCsumErrors', 'IpExt.InTruncatedPkts', 'Udp6InCsumErrors'."""
    out: dict[str, int] = {}
    with entered(netns):
        for name in ("snmp", "netstat"):
            with open(f"/proc/thread-self/net/{name}") as f:
                lines = f.read().splitlines()
            for head, vals in zip(lines[::2], lines[1::2]):
                proto, names = head.split(":", 1)
                out.update((f"{proto}.{n}", int(v)) for n, v in zip(names.split(), vals.split(":", 1)[1].split()))
        with open("/proc/thread-self/net/snmp6") as f:
            for line in f:
                name, _, value = line.partition(" ")
                if value.strip().lstrip("-").isdigit():
                    out[name] = int(value)
    return out


# The receiver's checksum failures, IPv4 header and every L4 protocol, both families
# (TCP over IPv6 counts in Tcp.InCsumErrors: one TCP MIB for both).
CSUM_ERROR_COUNTERS = ("IpExt.InCsumErrors", "Tcp.InCsumErrors", "Udp.InCsumErrors", "Icmp.InCsumErrors",
                       "Udp6InCsumErrors", "Icmp6InCsumErrors", "UdpLite6InCsumErrors", "UdpLite.InCsumErrors")
TRUNCATED_COUNTERS = ("IpExt.InTruncatedPkts", "Ip6InTruncatedPkts")
