"""Capture on an interface inside a namespace with an AF_PACKET socket.

A socket opened inside the namespace keeps it; a large receive buffer and a
reader thread that copies only the first `snaplen` bytes (MSG_TRUNC still
reports the real length) keep up where scapy's sniffer loses packets. The
kernel's own drop count (PACKET_STATISTICS) is reported, so a lossy capture
is never mistaken for a fault. Captures are written as pcap.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass

from ..errors import SpecError, TargetError
from ..kernel.netns import command as netns_command
from ..kernel.netns import entered
from ..pcap import write

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35


@dataclass
class Frame:
    ts_ns: int
    outgoing: bool
    length: int      # on the wire
    data: bytes      # at most snaplen bytes


class Capture:
    def __init__(self, netns: str | None, ifname: str, snaplen: int = 256, direction: str = "any",
                 rcvbuf: int = 64 << 20):
        if direction not in ("in", "out", "any"):
            raise SpecError(f"unknown direction '{direction}': give in, out or any")
        self.netns, self.ifname, self.snaplen, self.direction = netns, ifname, snaplen, direction
        self.frames: list[Frame] = []
        self.kernel_drops = 0
        self._rcvbuf = rcvbuf
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> "Capture":
        with entered(self.netns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self._rcvbuf)
            try:
                sock.bind((self.ifname, ETH_P_ALL))
            except OSError as exc:
                where = f" in namespace {self.netns}" if self.netns else ""
                raise TargetError(f"cannot capture on {self.ifname}{where} ({exc.strerror}): "
                                  f"see '{netns_command(self.netns, 'ip', 'link')}' for its interfaces") from None
            sock.settimeout(0.1)
            self._sock = sock
            self._stats()  # reading resets the kernel's counters: start from zero
        except BaseException:
            self._sock = None
            sock.close()
            raise
        self._thread = threading.Thread(target=self._loop, name=f"capture-{self.ifname}", daemon=True)
        self._thread.start()
        return self

    def _stats(self) -> tuple[int, int]:
        raw = self._sock_or_raise().getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        return struct.unpack("II", raw)

    def _sock_or_raise(self) -> socket.socket:
        if self._sock is None:
            raise RuntimeError("capture not started")
        return self._sock

    def _loop(self) -> None:
        buf = bytearray(self.snaplen)
        view = memoryview(buf)
        sock = self._sock
        want_out = self.direction in ("out", "any")
        want_in = self.direction in ("in", "any")
        # the kernel's receive time of each frame (not when this thread got to it: a slow reader,
        # e.g. in an emulated guest, would stretch the gaps between frames)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        anc = socket.CMSG_SPACE(16)
        while True:
            try:
                n, ancdata, _flags, addr = sock.recvmsg_into([buf], anc, socket.MSG_TRUNC)
            except socket.timeout:
                if self._stop.is_set():
                    return
                continue
            except OSError:
                return
            out = addr[2] == PACKET_OUTGOING
            if (out and want_out) or (not out and want_in):
                ts = time.time_ns()
                for level, kind, data in ancdata:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                        sec, nsec = struct.unpack_from("qq", data)
                        ts = sec * 1_000_000_000 + nsec
                self.frames.append(Frame(ts, out, n, bytes(view[: min(n, self.snaplen)])))

    def stop(self, settle: float = 0.2) -> list[Frame]:
        """Stop after `settle` seconds of grace; returns the frames."""
        if self._sock is None:
            return self.frames
        time.sleep(settle)
        self._stop.set()
        if self._thread:
            self._thread.join()
        _, drops = self._stats()
        self.kernel_drops += drops
        self._sock.close()
        self._sock = None
        return self.frames

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(settle=0 if exc[0] else 0.2)

    def save_pcap(self, path: str) -> None:
        write_pcap(path, self.frames, self.snaplen)


def write_pcap(path: str, frames: list[Frame], snaplen: int) -> None:
    write(path, frames, snaplen)
