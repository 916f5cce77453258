"""The agent: faultinj driven from another machine, one JSON object a line.

A request is {"id": N, "method": M, "params": {...}}; the answer is
{"id": N, "result": ...} or {"id": N, "error": {"message": ..., "status": exit code}}.
The same protocol runs over any byte stream: a virtio-serial port of a VM that
faultinj booted, or the stdin/stdout of `ssh HOST faultinj agent --stdio` on a
machine the user has. Inside, the agent (faultinj.guest.server) answers the verbs
of scenario/hosts.py's Host with the same library as the CLI, in its own network
namespace (the guest's or the machine's). This module is the protocol's transport,
client side: scenario/hosts.py's AgentHost sends the verbs through it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections import deque

from ..errors import EnvironmentProblem, ExitStatus, FaultinjError
from .._version import __version__

PORT_NAME = "faultinj.agent"
# the verbs and their parameters (scenario/hosts.py's Host): both ends must speak the same
PROTOCOL = 2


# ---- the client (on the machine that runs the lab) ---------------------------------------

class AgentError(FaultinjError):
    pass


class Agent:
    """One agent over a stream; calls are answered in order."""

    def __init__(self, rfile, wfile, where: str, closer=None):
        self._r, self._w, self.where, self._closer = rfile, wfile, where, closer
        self._id = 0
        # one call at a time: a scenario drains a fault's journal from a thread while its traffic
        # runs through the same agent, and each caller must read its own answer
        self._lock = threading.Lock()
        self.info: dict = {}

    @classmethod
    def unix(cls, path: str, where: str, timeout: float, alive=lambda: True) -> "Agent":
        """Connect to a VM's agent port (QEMU's end of the virtio-serial port)."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                break
            except OSError:
                sock.close()
                if not alive():
                    raise EnvironmentProblem(f"{where}: QEMU exited before the guest came up")
                if time.monotonic() > deadline:
                    raise EnvironmentProblem(f"{where}: QEMU did not open its agent socket within {timeout:.0f} s")
                time.sleep(0.2)
        agent = cls(sock.makefile("rb"), sock.makefile("wb"), where, sock.close)
        agent._sock = sock
        agent._wait_ready(deadline)
        return agent

    @classmethod
    def ssh(cls, dest: str, options: list[str], command: str, where: str, timeout: float) -> "Agent":
        """Start `faultinj agent --stdio` on a machine the user has, through ssh."""
        import shutil

        if not shutil.which("ssh"):
            raise EnvironmentProblem("an ssh host needs the ssh client: apt-get install openssh-client")
        return cls.process(["ssh", "-o", "BatchMode=yes", *options, dest, command], where, timeout)

    @classmethod
    def process(cls, argv: list[str], where: str, timeout: float) -> "Agent":
        """Start an agent serving on its stdin/stdout (`faultinj agent --stdio`, here or through ssh)."""
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # the agent logs a line per request on stderr: read it all the time, or a full pipe (64 KiB,
        # a few thousand requests) stops the agent mid-answer; the last lines say why it went away
        said: deque[bytes] = deque(maxlen=20)
        reader = threading.Thread(target=lambda: said.extend(proc.stderr), daemon=True,
                                  name=f"agent stderr {where}")
        reader.start()

        def close():
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        agent = cls(proc.stdout, proc.stdin, where, close)
        agent._proc, agent._stderr, agent._stderr_reader = proc, said, reader
        agent._wait_ready(time.monotonic() + timeout)
        return agent

    def _readline(self, deadline: float | None) -> bytes:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.settimeout(None if deadline is None else max(0.1, deadline - time.monotonic()))
        try:
            line = self._r.readline()
        except (socket.timeout, TimeoutError):
            raise EnvironmentProblem(f"{self.where}: the agent did not answer in time") from None
        if not line:
            err = ""
            proc = getattr(self, "_proc", None)
            if proc is not None:
                self._stderr_reader.join(5)   # the agent's stderr ends when it does
                last = [ln for ln in b"".join(self._stderr).decode(errors="replace").splitlines() if ln.strip()]
                err = f": {last[-1].strip()}" if last else ""
            raise EnvironmentProblem(f"{self.where}: the agent went away{err}")
        return line

    def _wait_ready(self, deadline: float) -> None:
        while True:
            msg = json.loads(self._readline(deadline))
            if msg.get("result") == "ready":
                break
        self.info = self.call("hello", _timeout=max(1.0, deadline - time.monotonic()))
        if self.info.get("protocol") != PROTOCOL:
            self.close()
            raise EnvironmentProblem(f"{self.where}: its faultinj ({self.info.get('version')}) speaks another agent "
                                     f"protocol than this one ({__version__}): install the same version there")

    def call(self, method: str, _timeout: float | None = None, **params):
        """Call method(**params) in the agent; _timeout: how long to wait for the answer (default: the
        call's own 'timeout' parameter plus a margin, else 10 minutes)."""
        timeout = _timeout if _timeout is not None else (
            params["timeout"] + 60 if isinstance(params.get("timeout"), (int, float)) else 600)
        with self._lock:
            return self._call(method, timeout, params)

    def _call(self, method: str, timeout: float, params: dict):
        self._id += 1
        self._w.write(json.dumps({"id": self._id, "method": method, "params": params}).encode() + b"\n")
        self._w.flush()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = json.loads(self._readline(deadline))
            if msg.get("id") == self._id:
                break
        if "error" in msg:
            err = AgentError(f"{self.where}: {msg['error']['message']}")
            err.status = ExitStatus(msg["error"].get("status", 1))
            raise err
        return msg["result"]

    def close(self) -> None:
        if self._closer:
            try:
                self._closer()
            finally:
                self._closer = None

