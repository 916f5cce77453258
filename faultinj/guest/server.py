"""The agent's server: answers the JSON-lines protocol of faultinj.guest.agent inside a guest
(its virtio-serial port) or on a machine reached over ssh (stdin/stdout). It sits beside the CLI,
above everything it calls (the API, doctor, captures, traffic).

    python -m faultinj.guest.server (--stdio | --virtio-port)
"""

from __future__ import annotations

import base64
import json
import os
import platform
import subprocess
import sys
import threading
import time
from typing import IO

from ..errors import EnvironmentProblem, ExitStatus, FaultinjError
from .agent import PORT_NAME


class _Server:
    def __init__(self):
        self._handles: dict[int, object] = {}
        self._next = 0

    def _keep(self, obj) -> int:
        self._next += 1
        self._handles[self._next] = obj
        return self._next

    # each method takes JSON-able params and returns a JSON-able result
    def hello(self) -> dict:
        from .._version import __version__

        links = []
        with open("/proc/net/dev") as f:
            names = [ln.split(":")[0].strip() for ln in f.read().splitlines()[2:]]
        for name in names:
            try:
                with open(f"/sys/class/net/{name}/address") as f:
                    links.append({"ifname": name, "mac": f.read().strip()})
            except OSError:
                pass
        return {"release": platform.release(), "version": __version__, "pid": os.getpid(), "links": links}

    def apply(self, spec: str, ifname: str, seed=None, tc_mode: str = "cls_bpf", hook=None,
              replace: bool = False, duration=None) -> dict:
        from .. import api

        return api.apply(spec, ifname, seed=seed, tc_mode=tc_mode, hook=hook, replace=replace,
                         duration=duration).to_json()

    def status(self, fault_id=None) -> list:
        from .. import api

        return [s.to_json() for s in api.status(fault_id=fault_id)]

    def set(self, ifname: str, spec: str, seed=None, duration=None, fault_id=None) -> dict:
        from .. import api

        return api.set_fault(ifname, spec, seed=seed, duration=duration, fault_id=fault_id).to_json()

    def clear(self, ifname=None, fault_id=None, all_faults: bool = False) -> list:
        from .. import api

        return [r.to_json() for r in api.clear(ifname, fault_id=fault_id, all_faults=all_faults)]

    def journal(self, fault_id: str) -> list:
        from .. import api

        # one reader per fault, kept: the journal is not consumed, so a new reader would see the
        # events already returned again
        key = ("journal", fault_id)
        reader = self._handles.get(key) or self._handles.setdefault(key, api.journal(fault_id=fault_id))
        return [e.to_json() for e in reader.read()]

    def journal_close(self, fault_id: str) -> list:
        """What the fault's reader has not returned yet (also after clear), then close it."""
        reader = self._handles.pop(("journal", fault_id), None)
        if reader is None:
            return []
        try:
            return [e.to_json() for e in reader.read()]
        finally:
            reader.close()

    def doctor(self) -> dict:
        from ..inject import doctor

        probes = doctor.run()
        return {"ok": doctor.healthy(probes), "probes": [p.to_json() for p in probes]}

    def exec(self, argv: list, timeout: float = 120, check: bool = False, cwd=None) -> dict:
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, cwd=cwd)
        if check and proc.returncode:
            raise FaultinjError(f"'{' '.join(map(str, argv))}' failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}

    def capture_start(self, ifname: str, snaplen: int = 256, direction: str = "any") -> int:
        from ..inject.capture import Capture

        return self._keep(Capture(None, ifname, snaplen=snaplen, direction=direction).start())

    def capture_stop(self, handle: int) -> dict:
        cap = self._handles.pop(handle)
        frames = cap.stop()
        return {"kernel_drops": cap.kernel_drops,
                "frames": [[f.ts_ns, f.outgoing, f.length, base64.b64encode(f.data).decode()] for f in frames]}

    def tcp_listen(self, addr: str, port: int, timeout: float = 60.0) -> int:
        from ..inject.traffic import TcpReceiver

        return self._keep(TcpReceiver(None, addr, port, timeout))

    def tcp_result(self, handle: int) -> dict:
        return self._handles.pop(handle).result()

    def tcp_send(self, addr: str, nbytes: int, port: int, seed: int = 1, timeout: float = 60.0) -> dict:
        from ..inject.traffic import tcp_send

        return tcp_send(None, addr, nbytes, port, seed, timeout=timeout)

    def ping(self, dst: str, count: int, interval: float, size: int, timeout: float) -> dict:
        from dataclasses import asdict

        from ..inject.traffic import ping

        return asdict(ping(None, dst, count, interval, size, timeout))

    def snmp(self) -> dict:
        from ..inject.traffic import snmp

        return snmp(None)

    def kernel_counters(self) -> dict:
        from ..inject.traffic import kernel_counters

        return kernel_counters(None)

    def shutdown(self) -> None:
        return None


def serve(rfile: IO[bytes], wfile: IO[bytes]) -> None:
    """Answer requests until the stream ends or 'shutdown' comes."""
    server = _Server()
    lock = threading.Lock()

    def send(obj) -> None:
        with lock:
            wfile.write(json.dumps(obj).encode() + b"\n")
            wfile.flush()

    send({"id": 0, "result": "ready"})
    for line in rfile:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            print(f"{time.strftime('%H:%M:%S')} {req.get('method')}", file=sys.stderr, flush=True)
            method = getattr(server, req["method"], None)
            if method is None or req["method"].startswith("_"):
                raise FaultinjError(f"unknown agent method '{req['method']}' (agent and caller differ in version?)")
            send({"id": req.get("id"), "result": method(**req.get("params", {}))})
            if req["method"] == "shutdown":
                return
        except FaultinjError as exc:
            send({"id": req.get("id") if isinstance(req, dict) else None,
                  "error": {"message": str(exc).splitlines()[0], "status": int(exc.status)}})
        except Exception as exc:  # reported to the caller, the agent keeps serving
            send({"id": req.get("id") if isinstance(req, dict) else None,
                  "error": {"message": f"{type(exc).__name__}: {exc}", "status": int(ExitStatus.FAILED)}})


def virtio_port(name: str = PORT_NAME) -> str:
    base = "/sys/class/virtio-ports"
    for port in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        with open(f"{base}/{port}/name") as f:
            if f.read().strip() == name:
                return f"/dev/{port}"
    raise EnvironmentProblem(f"no virtio-serial port named {name}: this is not a VM started by faultinj")


def main(argv: list[str] | None = None) -> None:
    """python -m faultinj.guest.server (--stdio | --virtio-port)"""
    args = sys.argv[1:] if argv is None else argv
    if "--virtio-port" in args:
        fd = os.open(virtio_port(), os.O_RDWR)
        # buffered writes: a raw write to the port may take only part of a long answer
        serve(os.fdopen(fd, "rb", buffering=0), os.fdopen(os.dup(fd), "wb"))
    else:
        serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
