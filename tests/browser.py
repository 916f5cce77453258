"""A real headless Chromium (Debian's `chromium`), driven over the DevTools protocol with the
standard library only: open a page with the network cut off, collect every console message,
uncaught exception and log entry (a resource that failed to load is one), read the DOM, take a
full-page screenshot."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field


def find() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@dataclass
class PageResult:
    console: list[dict] = field(default_factory=list)     # {level, text} of console calls and log entries
    exceptions: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)            # expression -> its value, after load
    screenshot: bytes = b""

    @property
    def errors(self) -> list[str]:
        return self.exceptions + [f"{m['level']}: {m['text']}" for m in self.console
                                  if m["level"] in ("error", "assert", "warning")]


class _WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: masked text frames out, frames in."""

    def __init__(self, url: str, timeout: float):
        assert url.startswith("ws://")
        hostport, path = url[5:].split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"DevTools refused the websocket: {head[:200]!r}")

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            buf += chunk
        return buf

    def send(self, text: str) -> None:
        data = text.encode()
        head = bytearray([0x81])
        n = len(data)
        if n < 126:
            head.append(0x80 | n)
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        self.sock.sendall(bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._exact(2), "big")
            elif n == 127:
                n = int.from_bytes(self._exact(8), "big")
            payload = self._exact(n)
            op = b0 & 0x0F
            if op == 8:
                raise ConnectionError("DevTools closed the websocket")
            if op in (9, 10):
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()


class _DevTools:
    def __init__(self, ws: _WebSocket, result: PageResult):
        self.ws, self.result, self.next_id = ws, result, 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        m, p = msg.get("method"), msg.get("params", {})
        self.events.append(msg)
        if m == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.result.console.append({"level": {"warning": "warning"}.get(p["type"], p["type"]), "text": text})
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.result.exceptions.append(d.get("exception", {}).get("description") or d.get("text", "?"))
        elif m == "Log.entryAdded":
            e = p.get("entry", {})
            self.result.console.append({"level": e.get("level", "info"), "text": e.get("text", "")})

    def wait_for(self, method: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if any(e.get("method") == method for e in self.events):
            return
        self.ws.sock.settimeout(timeout)
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            self._event(msg)
            if msg.get("method") == method:
                return
        raise TimeoutError(f"no {method} within {timeout} s")


def open_page(path: str, evaluate: dict[str, str] | None = None, width: int = 1200, timeout: float = 60.0,
              settle: float = 0.5) -> PageResult:
    """Load the file in headless Chromium with no network; evaluate: name -> JS expression."""
    exe = find()
    if not exe:
        raise FileNotFoundError("chromium not found: apt-get install chromium")
    result = PageResult()
    profile = tempfile.mkdtemp(prefix="faultinj-chromium-")
    proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--disable-background-networking", "--disable-sync",
                             "--host-resolver-rules=MAP * ~NOTFOUND",   # a page that needs the network fails
                             f"--user-data-dir={profile}", "--remote-debugging-port=0", f"--window-size={width},900",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start its DevTools endpoint (exit {proc.poll()})")
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout))
        page = next(t for t in targets if t["type"] == "page")
        dt = _DevTools(_WebSocket(page["webSocketDebuggerUrl"], timeout), result)
        for domain in ("Page", "Runtime", "Log"):
            dt.call(f"{domain}.enable")
        dt.call("Page.navigate", url="file://" + os.path.abspath(path))
        dt.wait_for("Page.loadEventFired", timeout)
        time.sleep(settle)
        for name, expr in (evaluate or {}).items():
            result.values[name] = dt.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")
        size = dt.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = dt.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                       clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        result.screenshot = base64.b64decode(shot["data"])
        # late events (an error raised after load) arrive before the answer to this call
        dt.call("Runtime.evaluate", expression="1")
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
