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

from .lab import netns_exec
from .netns import entered

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


def tcp_transfer(src_ns: str, dst_ns: str, dst_addr: str, nbytes: int, port: int = 5201,
                 seed: int = 1, write_size: int = 1 << 20, timeout: float = 60.0) -> TcpResult:
    """Send nbytes of seeded random data from src_ns to dst_ns; compare hashes."""
    fam = _family(dst_addr)
    with entered(dst_ns):
        lsock = socket.socket(fam, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((dst_addr, port))
    lsock.listen(1)
    lsock.settimeout(timeout)
    got = {"n": 0, "hash": hashlib.sha256(), "error": None}

    def receive():
        try:
            conn, _ = lsock.accept()
            conn.settimeout(timeout)
            with conn:
                while True:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        break
                    got["n"] += len(chunk)
                    got["hash"].update(chunk)
        except OSError as exc:
            got["error"] = exc

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    rng = random.Random(seed)
    block = rng.randbytes(write_size)
    sent_hash = hashlib.sha256()
    start = time.monotonic()
    with entered(src_ns):
        s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect((dst_addr, port))
        left = nbytes
        while left > 0:
            piece = block[: min(left, len(block))]
            s.sendall(piece)
            sent_hash.update(piece)
            left -= len(piece)
        s.shutdown(socket.SHUT_WR)
        t.join(timeout)
    finally:
        s.close()
        lsock.close()
    secs = time.monotonic() - start
    intact = got["error"] is None and got["n"] == nbytes and got["hash"].digest() == sent_hash.digest()
    return TcpResult(nbytes, got["n"], intact, secs)


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
