"""The agent's server: answers the JSON-lines protocol of faultinj.guest.agent inside a guest
(its virtio-serial port) or on a machine reached over ssh (stdin/stdout). It sits beside the CLI,
above everything it calls (the API, doctor, captures, traffic).

    python -m faultinj.guest.server (--stdio | --virtio-port)
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from typing import IO

from ..errors import EnvironmentProblem, ExitStatus, FaultinjError
from .agent import PORT_NAME, PROTOCOL
from .._version import __version__
from .. import doctor
from ..scenario import hosts


class _Server:
    """The host verbs (scenario/hosts.py's Host) answered by a NamespaceHost of this process's own
    namespace, each converted by its annotations; and the agent's own three: hello, doctor,
    shutdown."""

    def __init__(self):
        self.host = None   # made by the first verb: hello answers before the library is imported
        # a verb's Handle result (a capture, a TCP receiver) stays here; the caller gets its number
        self._handles: dict[int, object] = {}
        self._next = 0

    def answer(self, method: str, params: dict):
        if method in ("hello", "doctor", "shutdown"):
            return getattr(self, method)(**params)

        if method not in hosts.VERBS:
            raise FaultinjError(f"unknown agent method '{method}' (agent and caller differ in version?)")
        sig, hints = hosts.annotations(method)
        args = {}
        for name, value in params.items():
            if name not in sig.parameters or name == "self":
                raise FaultinjError(f"agent method '{method}' has no parameter '{name}'")
            args[name] = self._handles.pop(value) if hints.get(name) is hosts.Handle else \
                hosts.from_json(value, hints.get(name))
        if self.host is None:
            self.host = hosts.NamespaceHost(platform.node(), None)
        result = getattr(self.host, method)(**args)
        if hints["return"] is hosts.Handle:
            self._next += 1
            self._handles[self._next] = result
            return self._next
        return hosts.to_json(result)

    def hello(self) -> dict:
        links = []
        with open("/proc/net/dev") as f:
            names = [ln.split(":")[0].strip() for ln in f.read().splitlines()[2:]]
        for name in names:
            try:
                with open(f"/sys/class/net/{name}/address") as f:
                    links.append({"ifname": name, "mac": f.read().strip()})
            except OSError:
                pass
        return {"release": platform.release(), "version": __version__, "protocol": PROTOCOL, "pid": os.getpid(),
                "links": links}

    def doctor(self) -> dict:
        probes = doctor.run()
        return {"ok": doctor.healthy(probes), "probes": [p.to_json() for p in probes]}

    def shutdown(self) -> None:
        return None

    def close(self) -> None:
        if self.host:
            self.host.close()


def serve(rfile: IO[bytes], wfile: IO[bytes]) -> None:
    """Answer requests until the stream ends or 'shutdown' comes."""
    server = _Server()
    lock = threading.Lock()

    def send(obj) -> None:
        with lock:
            wfile.write(json.dumps(obj).encode() + b"\n")
            wfile.flush()

    send({"id": 0, "result": "ready"})
    try:
        for line in rfile:
            if _answer(server, line, send):
                return
    finally:
        server.close()


def _answer(server: _Server, line: bytes, send) -> bool:
    """Answer one request; True when it was 'shutdown'."""
    if not line.strip():
        return False
    req = None
    try:
        req = json.loads(line)
        print(f"{time.strftime('%H:%M:%S')} {req.get('method')}", file=sys.stderr, flush=True)
        send({"id": req.get("id"), "result": server.answer(req["method"], req.get("params", {}))})
        return req["method"] == "shutdown"
    except FaultinjError as exc:
        send({"id": req.get("id") if isinstance(req, dict) else None,
              "error": {"message": str(exc).splitlines()[0], "status": int(exc.status)}})
    except Exception as exc:  # reported to the caller, the agent keeps serving
        send({"id": req.get("id") if isinstance(req, dict) else None,
              "error": {"message": f"{type(exc).__name__}: {exc}", "status": int(ExitStatus.FAILED)}})
    return False


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
