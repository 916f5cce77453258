"""Open vSwitch bridges that can hold a bug: their OpenFlow rules, other_config and port
options, and what the switch did at the end (each rule's statistics, the datapath's megaflows).

A bridge with `flows` gets exactly those rules (its default NORMAL rule is removed first), each
tagged with a cookie when it has none, so its statistics can be found again in `dump-flows`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from ..errors import FaultinjError, SpecError
from ..inject.labrecords import daemon_of

PROTOCOLS = ("OpenFlow10", "OpenFlow11", "OpenFlow12", "OpenFlow13", "OpenFlow14", "OpenFlow15")
COOKIE_BASE = 0xFA110000   # rule i without a cookie of its own gets COOKIE_BASE + i + 1
VLAN_MODES = ("access", "trunk", "native-tagged", "native-untagged", "dot1q-tunnel")


@dataclass
class OvsBridgeSpec:
    flows: list[str] = field(default_factory=list)           # ovs-ofctl add-flow lines, in order
    protocols: list[str] = field(default_factory=list)       # e.g. [OpenFlow13]; empty: OVS's default
    other_config: dict[str, str] = field(default_factory=dict)
    prefix: str | None = None   # an OVS build's install directory (None: the ovs-* on PATH)


@dataclass
class OvsPortSpec:
    ofport: int | None = None            # Interface ofport_request: the number rules use in in_port=
    tag: int | None = None
    vlan_mode: str | None = None
    trunks: list[int] = field(default_factory=list)
    other_config: dict[str, str] = field(default_factory=dict)

    def vsctl_settings(self, port: str) -> list[str]:
        """ovs-vsctl arguments to append to `add-port BR PORT`."""
        out: list[str] = []
        if self.ofport is not None:
            out += ["--", "set", "interface", port, f"ofport_request={self.ofport}"]
        cols = []
        if self.tag is not None:
            cols.append(f"tag={self.tag}")
        if self.vlan_mode:
            cols.append(f"vlan_mode={self.vlan_mode}")
        if self.trunks:
            cols.append("trunks=" + ",".join(str(t) for t in self.trunks))
        cols += [f"other_config:{k}={_quote(v)}" for k, v in self.other_config.items()]
        if cols:
            out += ["--", "set", "port", port, *cols]
        return out


def _quote(v: str) -> str:
    return f'"{v}"' if re.search(r"[\s,=:\[\]{}\"]", v) else v


def has_cookie(flow: str) -> bool:
    return re.search(r"(^|,)\s*cookie\s*=", flow) is not None


def with_cookie(flow: str, i: int) -> tuple[str, int | None]:
    """The flow as added, and the cookie that finds it (None: the user's own cookie)."""
    if has_cookie(flow):
        m = re.search(r"cookie\s*=\s*(0x[0-9a-fA-F]+|\d+)", flow)
        return flow, int(m.group(1), 0) if m else None
    cookie = COOKIE_BASE + i + 1
    return f"cookie={cookie:#x},{flow}", cookie


def ofctl_args(protocols: list[str]) -> list[str]:
    return ["-O", ",".join(protocols)] if protocols else []


def check_flow(flow: str, protocols: list[str]) -> str | None:
    """ovs-ofctl's own complaint about a flow (parse-flow: no switch involved), or None when it
    parses, or when ovs-ofctl is not installed (the lab then says what is missing)."""
    if not shutil.which("ovs-ofctl"):
        return None
    proc = subprocess.run(["ovs-ofctl", *ofctl_args(protocols), "parse-flow", flow], capture_output=True,
                          text=True)
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    return (lines[-1] if lines else f"ovs-ofctl exited {proc.returncode}").removeprefix("ovs-ofctl: ")


def bridge_settings(br: str, spec: OvsBridgeSpec) -> list[str]:
    """ovs-vsctl arguments to append to `add-br BR`."""
    cols = []
    if spec.protocols:
        cols.append("protocols=" + ",".join(spec.protocols))
    cols += [f"other_config:{k}={_quote(v)}" for k, v in spec.other_config.items()]
    return ["--", "set", "bridge", br, *cols] if cols else []


def install_flows(br: str, name: str, spec: OvsBridgeSpec) -> None:
    if not spec.flows:
        return
    base = ["ovs-ofctl", *ofctl_args(spec.protocols)]
    _ofctl(base + ["del-flows", br], f"bridge {name}: removing the default rule")
    for i, flow in enumerate(spec.flows):
        _ofctl(base + ["add-flow", br, with_cookie(flow, i)[0]], f"bridge {name} flows[{i}] '{flow}'")


def _ofctl(argv: list[str], what: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise FaultinjError(f"{what}: {proc.stderr.strip() or f'ovs-ofctl exited {proc.returncode}'}")
    return proc.stdout


_STAT = re.compile(r"\b(cookie|duration|table|n_packets|n_bytes|idle_age|hard_age)=([^,\s]+),?\s*")


def parse_dump_flows(text: str) -> list[dict]:
    """`ovs-ofctl dump-flows` lines as {cookie, table, n_packets, n_bytes, rule}."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if "actions=" not in line or line.startswith(("NXST", "OFPST")):
            continue
        stats = dict(_STAT.findall(line))
        out.append({"cookie": int(stats.get("cookie", "0"), 0), "table": int(stats.get("table", "0")),
                    "n_packets": int(stats.get("n_packets", "0")), "n_bytes": int(stats.get("n_bytes", "0")),
                    "rule": _STAT.sub("", line).strip()})
    return out


_MEGA = re.compile(r"packets:(\d+), bytes:(\d+)")


def parse_megaflows(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or "actions:" not in line:
            continue
        m = _MEGA.search(line)
        out.append({"packets": int(m.group(1)) if m else 0, "bytes": int(m.group(2)) if m else 0, "flow": line})
    return out


def dump(br: str, name: str, spec: OvsBridgeSpec) -> dict:
    """What the bridge did: each of the scenario's rules with its statistics, every rule in the
    table, and the megaflows. The megaflows come from `ovs-appctl dpif/dump-flows BR`: the same
    datapath flows as `dpctl/dump-flows`, but only this bridge's (the userspace datapath is shared
    by every netdev bridge on the machine)."""
    # a rule's statistics are pushed to it from the datapath's megaflows by the revalidators, every
    # ~500 ms: a transfer that just ended may not be counted yet (CI saw 8 of >1000 packets); wait
    # for a full revalidation round first
    subprocess.run(["ovs-appctl", "revalidator/wait"], capture_output=True, text=True, timeout=30)
    table = parse_dump_flows(_ofctl(["ovs-ofctl", *ofctl_args(spec.protocols), "--no-names", "dump-flows", br],
                                    f"bridge {name}: dump-flows"))
    rules = []
    for i, flow in enumerate(spec.flows):
        cookie = with_cookie(flow, i)[1]
        hits = [r for r in table if cookie is not None and r["cookie"] == cookie]
        rules.append({"index": i, "flow": flow, "cookie": cookie, "found": bool(hits),
                      "n_packets": sum(r["n_packets"] for r in hits), "n_bytes": sum(r["n_bytes"] for r in hits)})
    proc = subprocess.run(["ovs-appctl", "dpif/dump-flows", br], capture_output=True, text=True, timeout=30)
    mega_text = proc.stdout if proc.returncode == 0 else ""
    return {"bridge": br, "protocols": spec.protocols, "rules": rules, "table": table,
            "megaflows": parse_megaflows(mega_text),
            "megaflows_error": None if proc.returncode == 0 else proc.stderr.strip()}


# ---- an OVS build of one's own (a prefix: bridges' `prefix`, --ovs DIR) ---------------------------

DAEMONS = ("ovsdb-server", "ovs-vswitchd")
TOOLS = ("ovs-vsctl", "ovs-ofctl", "ovs-appctl", "ovsdb-tool")


BIN_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin",
            "usr/lib/openvswitch-switch")   # the last: Debian's ovs-vswitchd (an alternatives target)


def prefix_bin(prefix: str, name: str) -> str | None:
    """DIR/{usr/,}{s,}bin/NAME (an install with --prefix=DIR, or a package unpacked with dpkg -x)."""
    for sub in BIN_DIRS:
        p = os.path.join(prefix, sub, name)
        if os.access(p, os.X_OK):
            return p
    return None


def prefix_schema(prefix: str) -> str | None:
    for sub in ("usr/local/share/openvswitch", "usr/share/openvswitch", "share/openvswitch"):
        p = os.path.join(prefix, sub, "vswitch.ovsschema")
        if os.path.isfile(p):
            return p
    return None


def check_prefix(prefix: str) -> str:
    """The prefix as an absolute path, when it holds an OVS build (its daemons, tools and schema);
    SpecError (exit 2) naming what is missing otherwise."""
    p = os.path.abspath(os.path.expanduser(prefix))
    if not os.path.isdir(p):
        raise SpecError(f"OVS prefix {prefix} is not a directory: give where an Open vSwitch build is installed "
                        "(make install DESTDIR=DIR, or dpkg -x openvswitch-switch_*.deb DIR)")
    missing = [n for n in (*DAEMONS, *TOOLS) if not prefix_bin(p, n)]
    if not prefix_schema(p):
        missing.append("vswitch.ovsschema")
    if missing:
        raise SpecError(f"OVS prefix {prefix} lacks {', '.join(missing)}: it must hold ovs-vswitchd, ovsdb-server, "
                        "the ovs-* tools and share/openvswitch/vswitch.ovsschema (Debian: openvswitch-switch "
                        "and openvswitch-common)")
    return p


# set while a private switch runs on a machine whose kernel datapath (if any) is the machine's own
# switch's: its bridges take the userspace datapath
USERSPACE_ENV = "FAULTINJ_OVS_USERSPACE"


class PrivateSwitch:
    """An ovsdb-server and ovs-vswitchd of their own for one run, from an OVS build's prefix (or the
    ovs-* on PATH when prefix is None), with a private run/db/log directory. While it runs, this
    process's environment points every ovs-* command at it (PATH first, OVS_RUNDIR and the rest),
    so the lab's own ovs-vsctl/ovs-ofctl/ovs-appctl calls reach it and not the machine's switch.
    `stop()` ends both daemons, removes the directory and restores the environment."""

    ENV = ("PATH", "OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR", "OVS_PKGDATADIR", USERSPACE_ENV)

    def __init__(self, prefix: str | None, rundir: str, userspace: bool, netns: str | None = None):
        # netns: ovs-vswitchd runs in this namespace, made for it (and removed by stop): a userspace
        # datapath owns a device named ovs-netdev, which the machine's own switch may hold already
        self.prefix, self.dir, self.userspace, self.netns = prefix, rundir, userspace, netns
        self._saved: dict[str, str | None] | None = None
        self.pids: list[int] = []

    def _bin(self, name: str) -> str:
        found = prefix_bin(self.prefix, name) if self.prefix else shutil.which(name)
        if not found:
            raise SpecError(f"no {name} in {self.prefix or 'PATH'}: install Open vSwitch (openvswitch-switch)")
        return found

    def start(self) -> "PrivateSwitch":
        schema = prefix_schema(self.prefix) if self.prefix else "/usr/share/openvswitch/vswitch.ovsschema"
        d = self.dir
        os.makedirs(d, mode=0o700, exist_ok=True)
        self._saved = {k: os.environ.get(k) for k in self.ENV}
        bins = [os.path.join(self.prefix, sub) for sub in BIN_DIRS] if self.prefix else []
        os.environ.update(OVS_RUNDIR=d, OVS_DBDIR=d, OVS_LOGDIR=d, OVS_SYSCONFDIR=d,
                          PATH=os.pathsep.join([*bins, os.environ.get("PATH", "")]))
        if self.prefix:
            os.environ["OVS_PKGDATADIR"] = os.path.dirname(schema)
        if self.userspace:
            os.environ[USERSPACE_ENV] = "1"
        in_ns = ["ip", "netns", "exec", self.netns] if self.netns else []
        try:
            if self.netns:
                _sh(["ip", "netns", "add", self.netns], "making the switch's namespace")
                _sh(["ip", "-n", self.netns, "link", "set", "lo", "up"], "making the switch's namespace")
            for prefix_, binary, args in (
                    ([], "ovsdb-tool", ["create", f"{d}/conf.db", schema]),
                    ([], "ovsdb-server", [f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
                                          f"--pidfile={d}/ovsdb-server.pid", "--detach",
                                          f"--log-file={d}/ovsdb-server.log"]),
                    ([], "ovs-vsctl", ["--no-wait", "init"]),
                    (in_ns, "ovs-vswitchd", [f"unix:{d}/db.sock", f"--pidfile={d}/ovs-vswitchd.pid", "--detach",
                                             f"--log-file={d}/ovs-vswitchd.log"])):
                proc = subprocess.run([*prefix_, self._bin(binary), *args], capture_output=True, text=True,
                                      timeout=60)
                if proc.returncode:
                    raise FaultinjError(f"starting Open vSwitch from {self.prefix or 'PATH'}: "
                                        f"'{binary}' failed: {proc.stderr.strip()[-300:]}")
                pid = _read_pid(binary, d)
                if pid:
                    self.pids.append(pid)
        except BaseException:
            self.stop()
            raise
        return self

    def version(self) -> str:
        proc = subprocess.run([self._bin("ovs-vswitchd"), "--version"], capture_output=True, text=True)
        return (proc.stdout.splitlines() or ["?"])[0]

    def stop(self) -> None:
        """Best effort, always complete: never in the way of the run's own outcome. Each daemon is
        told to exit through its own control socket in the private directory (never `-t NAME`,
        which would find the machine's switch once the environment is restored)."""
        import signal
        import time

        for name in ("ovs-vswitchd", "ovsdb-server"):
            pid = _read_pid(name, self.dir)
            ctl = f"{self.dir}/{name}.{pid}.ctl"
            if pid and os.path.exists(ctl):
                try:
                    subprocess.run([self._bin("ovs-appctl"), "-t", ctl, "exit"], capture_output=True, timeout=10)
                except Exception:
                    pass
        end = time.monotonic() + 5
        for pid in self.pids:
            while daemon_of(pid, self.dir) and time.monotonic() < end:
                time.sleep(0.05)
            if daemon_of(pid, self.dir):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        if self._saved is not None:
            for k, v in self._saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self._saved = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _sh(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode:
        raise FaultinjError(f"{what}: '{' '.join(argv)}' failed: {proc.stderr.strip()}")


def _read_pid(binary: str, d: str) -> int | None:
    name = os.path.basename(binary)
    if name not in DAEMONS:
        return None
    try:
        with open(f"{d}/{name}.pid") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
