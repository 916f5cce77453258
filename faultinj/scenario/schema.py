"""Scenario files: YAML read safely, validated completely before anything
touches the kernel, every error pointing at file:line:column.

```yaml
name: psh-ratio
lab:
  hosts: [vm1, vm2]
  bridges: {br0: linux}                 # optional; or ovs, or {kind: ovs, flows: [...], protocols: OpenFlow13}
  links:
    - ends: [vm1, vm2]                  # or [vm1, br0]
      vm1: {ipv4: 10.0.0.1/24, gso_max_segs: 1, tx_checksum: false}
      vm2: {ipv4: 10.0.0.2/24}
faults:
  - {name: psh, spec: psh-ratio=10, host: vm1, interface: eth0, seed: 42, at: 0s, for: 10s}
traffic:
  - {name: transfer, tcp: {from: vm1, to: vm2, bytes: 20MB}}
capture:
  - {name: rx, host: vm2, interface: eth0, direction: in, snaplen: 2048}
expect:
  - fraction: {capture: rx, of: tcp and data, having: psh, p: 0.1}
```
"""

from __future__ import annotations

import difflib
import os
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from ..faults import FaultSpec, parse_spec
from ..faults.match import parse_match
from ..labs import EndSpec, LinkSettings, LinkSpec, RemoteHostSpec, TopologySpec, VMHostSpec
from ..labs.ovs import PROTOCOLS as OVS_PROTOCOLS
from ..labs.ovs import VLAN_MODES as OVS_VLAN_MODES
from ..labs.ovs import OvsBridgeSpec, OvsPortSpec
from ..labs.ovs import check_flow as ovs_check_flow
from ..inject.runtimes import RUNTIMES
from .expectations import KINDS, Entries, Expectation
from ..api import parse_duration
from ..labs.ovs import check_prefix


class ScenarioError(SpecError):
    """One or more mistakes in a scenario file, one line each (file:line:column: what)."""

    def __init__(self, *lines: str):
        self.lines = list(lines)
        super().__init__("\n".join(lines))

    @property
    def all_lines(self) -> list[str]:   # the CLI shows every one, --json lists them
        return self.lines


# ---- YAML with positions --------------------------------------------------------------

class YMap(dict):
    mark = None
    key_marks: dict
    value_marks: dict


class YList(list):
    mark = None
    item_marks: list


class _Loader(yaml.SafeLoader):
    pass


def _map(loader, node):
    loader.flatten_mapping(node)
    m = YMap()
    m.mark, m.key_marks, m.value_marks = node.start_mark, {}, {}
    for k_node, v_node in node.value:
        k = loader.construct_object(k_node, deep=True)
        if not isinstance(k, str):
            raise ScenarioError(f"{_pos(k_node.start_mark)}: keys must be strings, not {k!r}")
        if k in m:
            raise ScenarioError(f"{_pos(k_node.start_mark)}: '{k}' appears twice")
        m[k] = loader.construct_object(v_node, deep=True)
        m.key_marks[k], m.value_marks[k] = k_node.start_mark, v_node.start_mark
    return m


def _seq(loader, node):
    lst = YList(loader.construct_object(n, deep=True) for n in node.value)
    lst.mark, lst.item_marks = node.start_mark, [n.start_mark for n in node.value]
    return lst


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _seq)


def _pos(mark) -> str:
    return f"{mark.name}:{mark.line + 1}:{mark.column + 1}" if mark else "?"


class _Ctx:
    """Where we are in the file, for messages; the mistakes found so far. A mistake ends the part of
    the file it is in (an entry, the lab); the other parts are still checked, so a file with several
    mistakes is told all of them at once."""

    def __init__(self, path: str):
        self.path = path
        self.mistakes: list[tuple[tuple[int, int], str]] = []

    def fail(self, mark, msg: str):
        raise ScenarioError(f"{_pos(mark)}: {msg}")

    def part(self, check, *args, default=None):
        """check(*args), or default when it finds a mistake (kept, told at the end)."""
        try:
            return check(*args)
        except ScenarioError as exc:
            m = re.match(r"^.*?:(\d+):(\d+): ", str(exc))
            self.mistakes.append(((int(m.group(1)) - 1, int(m.group(2)) - 1) if m else (1 << 30, 0), str(exc)))
            return default

    def raise_mistakes(self) -> None:
        if self.mistakes:
            raise ScenarioError(*[msg for _, msg in sorted(self.mistakes, key=lambda x: x[0])])

    def keys(self, m, where: str, required=(), optional=()) -> None:
        if not isinstance(m, dict):
            self.fail(getattr(m, "mark", None), f"{where} must be a mapping")
        allowed = set(required) | set(optional)
        for k in m:
            if k not in allowed:
                near = difflib.get_close_matches(k, sorted(allowed), n=1, cutoff=0.6)
                hint = f" (did you mean '{near[0]}'?)" if near else f"; allowed: {', '.join(sorted(allowed))}"
                self.fail(m.key_marks.get(k), f"unknown key '{k}' in {where}{hint}")
        for k in required:
            if k not in m:
                self.fail(m.mark, f"{where} lacks '{k}'")

    def whole(self, m: YMap, key: str, where: str, default: int, lo: int, hi: int) -> int:
        return _pos_int(self, m, key, where, default, lo, hi)

    def typed(self, m: YMap, key: str, types, where: str, default=None):
        if key not in m:
            return default
        v = m[key]
        if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            self.fail(m.value_marks[key], f"{where}.{key} must be {_tname(types)}, not {v!r}")
        if not isinstance(v, types):
            self.fail(m.value_marks[key], f"{where}.{key} must be {_tname(types)}, not {type(v).__name__} {v!r}")
        return v

    def ref(self, m: YMap, key: str, known, what: str, where: str) -> str:
        v = self.typed(m, key, str, where)
        if v not in known:
            near = difflib.get_close_matches(str(v), list(known), n=1, cutoff=0.5)
            hint = f" (did you mean '{near[0]}'?)" if near else f"; known: {', '.join(known) or 'none'}"
            self.fail(m.value_marks[key], f"{where}.{key}: no {what} '{v}'{hint}")
        return v


def _tname(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list",
             dict: "a mapping"}
    return " or ".join(names.get(t, t.__name__) for t in types)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)i?[bB]?\s*$")


def parse_size(v) -> int | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    m = _SIZE.match(str(v))
    if not m:
        return None
    return int(float(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2).lower()])


# ---- the model --------------------------------------------------------------------------

@dataclass
class FaultEntry:
    name: str
    spec: FaultSpec
    host: str
    interface: str
    seed: int | None = None
    at: float | None = None
    for_: float | None = None
    tc_mode: str = "cls_bpf"


@dataclass
class TrafficEntry:
    name: str
    kind: str                  # ping | tcp | udp | command
    host: str
    params: dict = field(default_factory=dict)


@dataclass
class CaptureEntry:
    name: str
    host: str
    interface: str
    direction: str = "any"
    snaplen: int = 256


@dataclass
class ExpectEntry:
    kind: str
    params: dict
    line: int

    @property
    def expectation(self) -> Expectation:
        """The kind's class (expectations.py): its evaluation, its plot."""
        return KINDS[self.kind]


@dataclass
class TraceEntry:
    filter: str        # fault filter words, e.g. "proto=icmp,dst=10.0.0.2"
    count: int         # the first this many packets that pass it


@dataclass
class Scenario:
    name: str
    description: str
    path: str
    lab: TopologySpec
    faults: list[FaultEntry]
    traffic: list[TrafficEntry]
    captures: list[CaptureEntry]
    expect: list[ExpectEntry]
    interfaces: dict[str, list[str]]   # host -> its interface names
    trace: "TraceEntry | None" = None  # packets whose journeys the report shows
    # hosts outside the lab, by the name they have here (e.g. container:web) -> what finds their
    # namespace (targets.resolve's and api.apply's container/runtime, pid or netns_path)
    targets: dict[str, dict] = field(default_factory=dict)

    def address(self, host: str, v6: bool = False) -> str:
        for cidr in (self.lab.remote[host].interfaces.values() if host in self.lab.remote else []):
            if cidr and (":" in cidr) == v6:
                return cidr.split("/")[0]
        for link in self.lab.links:
            for end in (link.a, link.b):
                if end.host == host:
                    cidr = end.ipv6 if v6 else end.ipv4
                    if cidr:
                        return cidr.split("/")[0]
        raise KeyError(host)


TRAFFIC_KINDS = {
    "ping": ({"from", "to"}, {"count", "interval", "size", "v6", "timeout"}),
    "tcp": ({"from", "to"}, {"bytes", "port", "v6", "seed", "connections", "timeout"}),
    "udp": ({"from", "to"}, {"count", "size", "rate", "sport", "dport", "v6"}),
    "command": ({"host", "run"}, {"timeout"}),
}
TARGET_KINDS = ("container", "pid", "netns_path")
# the keys of each part of a file: (required, optional); docs/scenarios.md documents every one
# (scenario/reference.py, checked by tests/test_usability.py)
TOP_KEYS = ({"name"}, {"lab", "description", "faults", "traffic", "capture", "expect", "trace"})
LAB_KEYS = ({"hosts"}, {"bridges", "vms", "remote", "links", "guest"})
VM_KEYS = ({"kernel"}, {"memory", "cpus"})
REMOTE_KEYS = ({"ssh", "interfaces"}, {"options", "command"})
FAULT_KEYS = ({"spec", "host", "interface"}, {"name", "seed", "at", "for", "hook", "tc_mode"})
CAPTURE_KEYS = ({"host", "interface"}, {"name", "direction", "snaplen"})
TRACE_KEYS = (set(), {"filter", "count"})
END_KEYS = {"name", "ipv4", "ipv6", "mtu", "gso_max_segs", "tx_checksum"}
NAME = re.compile(r"^[a-z][a-z0-9_]{0,11}$")


def read_file(path: str, what: str) -> str:
    """A scenario file's (or manifest's) text; what it could not read as one ScenarioError."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read {what} {path}: {exc.strerror}") from None


def load(path: str | Path) -> Scenario:
    path = str(path)
    return loads(read_file(path, "scenario"), path)


def parse_marked(text: str, path: str):
    """YAML text as maps and lists that remember each key's and value's file:line:col (YMap); a YAML
    error as one ScenarioError at its position. Scenario files and NetworkChaos manifests share it."""
    try:
        loader = _Loader(text)
        loader.name = path
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise ScenarioError(f"{_pos(exc.problem_mark)}: YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: YAML: {exc}") from None


def loads(text: str, path: str = "<scenario>") -> Scenario:
    ctx = _Ctx(path)
    doc = parse_marked(text, path)
    if not isinstance(doc, YMap):
        raise ScenarioError(f"{path}:1:1: a scenario is a mapping with name, lab, faults, traffic, capture, expect")
    ctx.part(ctx.keys, doc, "the scenario", *TOP_KEYS)
    name = ctx.part(ctx.typed, doc, "name", str, "scenario")
    description = ctx.part(ctx.typed, doc, "description", str, "scenario", "")
    if "lab" in doc:
        lab, interfaces = ctx.part(_lab, ctx, doc["lab"], default=(None, None))
        if lab is None:   # the entries refer to the lab's hosts and interfaces: nothing more to check
            ctx.raise_mistakes()
    else:   # every host is a container, a process or a namespace file
        lab, interfaces = TopologySpec(hosts=[], links=[]), {}
    hosts = _Hosts(lab.hosts)

    def entries(key, check, *args):
        """Each entry checked on its own; one with a mistake is left out, its name still known."""
        out, names = [], []
        for i, item in enumerate(ctx.part(_list, ctx, doc, key, default=[])):
            got = ctx.part(check, ctx, item, i, *args)
            if got is not None:
                out.append(got)
                names.append(got.name)
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                names.append(item["name"])
        return out, names

    faults, fault_names = entries("faults", _fault, hosts, interfaces)
    traffic, traffic_names = entries("traffic", _traffic, hosts, lab)
    captures, capture_names = entries("capture", _capture, hosts, interfaces)
    if not ctx.mistakes:   # positions of the entries as written
        ctx.part(_unique, ctx, doc, "faults", [f.name for f in faults])
        ctx.part(_unique, ctx, doc, "traffic", [t.name for t in traffic])
        ctx.part(_unique, ctx, doc, "capture", [c.name for c in captures])
    refs = {"fault": fault_names, "traffic": traffic_names, "capture": capture_names, "host": hosts,
            "bridge": [b for b, kind in lab.bridges.items() if kind == "ovs"]}
    expect = [e for e in (ctx.part(_expect, ctx, e, refs, traffic, lab, faults, "trace" in doc)
                          for e in ctx.part(_list, ctx, doc, "expect", default=[])) if e is not None]
    trace = ctx.part(_trace, ctx, doc["trace"]) if "trace" in doc else None
    if lab.guest and hosts.targets:
        ctx.part(ctx.fail, doc["lab"].key_marks["guest"], f"lab.guest: the lab is made inside a VM, where "
                 f"{', '.join(hosts.targets)} cannot be reached: remove lab.guest or those hosts")
    ctx.raise_mistakes()
    return Scenario(name, description, path, lab, faults, traffic, captures, expect, interfaces, trace,
                    hosts.targets)

class _Hosts(list):
    """The lab's hosts, and the hosts outside it that entries name as {container: NAME} (with
    runtime), {pid: N} or {netns_path: PATH}: each gets the name it has in status (container:NAME,
    pid:N, the path), under which the rest of the file and the report know it."""

    def __init__(self, lab_hosts):
        super().__init__(lab_hosts)
        self.targets: dict[str, dict] = {}

    def ref(self, ctx, m, key: str, where: str) -> str:
        v = m.get(key)
        if not isinstance(v, YMap):
            return ctx.ref(m, key, self, "host", where)
        w = f"{where}.{key}"
        ctx.keys(v, w, optional={*TARGET_KINDS, "runtime"})
        given = [k for k in TARGET_KINDS if k in v]
        if len(given) != 1:
            ctx.fail(v.mark, f"{w}: name one of container, pid or netns_path (a namespace outside the lab)")
        kind = given[0]
        if "runtime" in v and kind != "container":
            ctx.fail(v.key_marks["runtime"], f"{w}.runtime goes with container")
        if kind == "container":
            name = ctx.typed(v, "container", str, w)
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
                ctx.fail(v.value_marks["container"], f"{w}.container: '{name}' is not a container name or id")
            runtime = ctx.typed(v, "runtime", str, w)
            if runtime is not None and runtime not in RUNTIMES:
                ctx.fail(v.value_marks["runtime"], f"{w}.runtime: one of {', '.join(RUNTIMES)}, not {runtime!r}")
            label, opts = f"container:{name}", {"container": name, "runtime": runtime}
        elif kind == "pid":
            pid = ctx.typed(v, "pid", int, w)
            if pid <= 0:
                ctx.fail(v.value_marks["pid"], f"{w}.pid: a process id, not {pid}")
            label, opts = f"pid:{pid}", {"pid": pid}
        else:
            path = ctx.typed(v, "netns_path", str, w)
            if not path.startswith("/"):
                ctx.fail(v.value_marks["netns_path"], f"{w}.netns_path: an absolute path, e.g. /proc/PID/ns/net")
            label, opts = path, {"netns_path": path}
        if self.targets.setdefault(label, opts) != opts:
            ctx.fail(v.mark, f"{w}: {label} is named with another runtime elsewhere in the file")
        return label

    def interface(self, ctx, m, host: str, interfaces, where: str) -> str:
        """A lab host's interface is known now; one outside the lab is checked when the run starts."""
        if host in self.targets:
            return ctx.typed(m, "interface", str, where)
        return ctx.ref(m, "interface", interfaces[host], f"interface of {host}", where)


def _trace(ctx, t) -> TraceEntry:
    ctx.keys(t, "trace", *TRACE_KEYS)
    text = ctx.typed(t, "filter", str, "trace", "")
    try:
        parse_match([w for w in text.split(",") if w.strip()])
    except SpecError as exc:
        ctx.fail(t.value_marks["filter"], f"trace.filter: {exc}")
    return TraceEntry(text, _pos_int(ctx, t, "count", "trace", 3, 1, 1000))


def _list(ctx, doc, key) -> list:
    v = doc.get(key, [])
    if v is None:
        return []
    if not isinstance(v, list):
        ctx.fail(doc.value_marks[key], f"'{key}' must be a list")
    return v


def _unique(ctx, doc, key, names) -> None:
    seen = set()
    for i, n in enumerate(names):
        if n in seen:
            ctx.fail(doc[key].item_marks[i], f"two {key} entries are named '{n}'")
        seen.add(n)


def _lab(ctx, lab) -> tuple[TopologySpec, dict[str, list[str]]]:
    ctx.keys(lab, "lab", *LAB_KEYS)
    hosts = ctx.typed(lab, "hosts", list, "lab")
    for i, h in enumerate(hosts):
        if not isinstance(h, str) or not NAME.match(h):
            ctx.fail(hosts.item_marks[i], f"host name {h!r}: use 1-12 lowercase letters, digits or _")
    bridges_in = ctx.typed(lab, "bridges", dict, "lab", YMap()) or YMap()
    bridges: dict[str, str] = {}
    ovs_specs: dict[str, OvsBridgeSpec] = {}
    for b, conf in bridges_in.items():
        if not NAME.match(b) or b in hosts:
            ctx.fail(bridges_in.key_marks[b], f"bridge name '{b}' must be 1-12 lowercase characters, unlike any host")
        bridges[b], spec = _bridge(ctx, b, conf, bridges_in.value_marks[b])
        if spec:
            ovs_specs[b] = spec
    vms = {}
    for h, conf in (ctx.typed(lab, "vms", dict, "lab", YMap()) or YMap()).items():
        if h not in hosts:
            ctx.fail(lab["vms"].key_marks[h], f"lab.vms: '{h}' is not one of the hosts {list(hosts)}")
        if not isinstance(conf, YMap):
            ctx.fail(lab["vms"].value_marks[h], f"lab.vms.{h}: give kernel (and memory, cpus)")
        vms[h] = _vm(ctx, conf, f"lab.vms.{h}")
    guest = None
    if "guest" in lab:
        conf = lab["guest"]
        if not isinstance(conf, YMap):
            ctx.fail(lab.value_marks["guest"], "lab.guest: give kernel (and memory, cpus): the whole lab is "
                     "made inside one VM on that kernel")
        guest = _vm(ctx, conf, "lab.guest")
        for other in ("vms", "remote"):
            if lab.get(other):
                ctx.fail(lab.key_marks[other], f"lab.{other}: a lab made inside a guest (lab.guest) has only "
                         f"namespaces and bridges in it: remove lab.guest or lab.{other}")
    remote = {}
    for h, conf in (ctx.typed(lab, "remote", dict, "lab", YMap()) or YMap()).items():
        w = f"lab.remote.{h}"
        if h not in hosts or h in vms:
            ctx.fail(lab["remote"].key_marks[h], f"lab.remote: '{h}' must be one of the hosts, and not a VM")
        if not isinstance(conf, YMap):
            ctx.fail(lab["remote"].value_marks[h], f"{w}: give ssh (user@host) and interfaces")
        ctx.keys(conf, w, *REMOTE_KEYS)
        opts = ctx.typed(conf, "options", list, w, []) or []
        if not all(isinstance(o, str) for o in opts):
            ctx.fail(conf.value_marks["options"], f"{w}.options: a list of ssh arguments (strings)")
        ifaces = ctx.typed(conf, "interfaces", dict, w)
        for name, cidr in ifaces.items():
            if cidr is not None:
                try:
                    ipaddress.ip_interface(cidr)
                except ValueError:
                    ctx.fail(ifaces.value_marks[name], f"{w}.interfaces.{name}: '{cidr}' is not an address/prefix")
        remote[h] = RemoteHostSpec(ctx.typed(conf, "ssh", str, w), list(opts),
                                   ctx.typed(conf, "command", str, w, "faultinj agent --stdio"), dict(ifaces))
    links = []
    interfaces: dict[str, list[str]] = {h: list(remote[h].interfaces) if h in remote else [] for h in hosts}
    addresses: dict[Any, str] = {}   # (segment or host, address) -> which end has it: no two alike
    for i, link in enumerate(ctx.typed(lab, "links", list, "lab", YList()) or []):
        where = f"lab.links[{i}]"
        if not isinstance(link, YMap):
            ctx.fail(lab["links"].item_marks[i], f"{where} must be a mapping")
        ends = ctx.typed(link, "ends", list, where)
        if ends is None:
            ctx.fail(link.mark, f"{where} lacks 'ends'")
        if len(ends) != 2 or not all(isinstance(e, str) for e in ends):
            ctx.fail(link.value_marks["ends"], f"{where}.ends must name two hosts, or a host and a bridge")
        for j, e in enumerate(ends):
            if e not in hosts and e not in bridges:
                near = difflib.get_close_matches(e, hosts + list(bridges), n=1, cutoff=0.5)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                ctx.fail(ends.item_marks[j], f"{where}.ends: no host or bridge '{e}'{hint}")
        if ends[0] in bridges and ends[1] in bridges:
            ctx.fail(link.value_marks["ends"], f"{where}: a link joins a host to a host or to a bridge")
        if ends[0] in bridges:
            ends = YList([ends[1], ends[0]])
        if ends[0] == ends[1]:
            ctx.fail(link.value_marks["ends"], f"{where}: both ends are '{ends[0]}'")
        if ends[0] in remote or ends[1] in remote:
            ctx.fail(link.value_marks["ends"], f"{where}: '{ends[0] if ends[0] in remote else ends[1]}' is reached "
                                               "through ssh: its links are its own, not the lab's")
        if ends[1] in vms or (ends[0] in vms and ends[1] not in bridges):
            ctx.fail(link.value_marks["ends"], f"{where}: a VM's link goes to a bridge (its NIC is a tap there)")
        ctx.keys(link, where, required={"ends"}, optional=set(ends))
        spec_ends = []
        for host in ends:
            if host in bridges:
                port = _port(ctx, link[host], f"{where}.{host}", bridges[host]) if host in link else None
                spec_ends.append(EndSpec(host, "port", port=port))
                continue
            conf = link.get(host) or YMap()
            ctx.keys(conf, f"{where}.{host}", optional=END_KEYS)
            ifname = ctx.typed(conf, "name", str, f"{where}.{host}", f"eth{len(interfaces[host])}")
            if ifname in interfaces[host]:
                ctx.fail(conf.mark, f"{where}.{host}: {host} already has an interface {ifname}")
            interfaces[host].append(ifname)
            addrs = {}
            for fam in ("ipv4", "ipv6"):
                v = ctx.typed(conf, fam, str, f"{where}.{host}")
                if v is not None:
                    try:
                        iface = ipaddress.ip_interface(v)
                    except ValueError:
                        ctx.fail(conf.value_marks[fam], f"{where}.{host}.{fam}: '{v}' is not an address/prefix")
                    if iface.version != (4 if fam == "ipv4" else 6) or "/" not in v:
                        ctx.fail(conf.value_marks[fam], f"{where}.{host}.{fam}: give an {fam} address with a "
                                                        f"prefix length, e.g. {'10.0.0.1/24' if fam == 'ipv4' else 'fd00::1/64'}")
                addrs[fam] = v
                segment = ends[1] if ends[1] in bridges else f"link{i}"   # one layer-2 segment
                for key in ((segment, iface.ip), (host, iface.ip)) if v is not None else ():
                    if key in addresses:
                        ctx.fail(conf.value_marks[fam], f"{where}.{host}.{fam}: {iface.ip} is already "
                                 f"{addresses[key]}'s address{' on ' + ends[1] if ends[1] in bridges else ''}: "
                                 "give each end its own")
                    addresses[key] = f"{where}.{host}"
            gso = ctx.typed(conf, "gso_max_segs", int, f"{where}.{host}")
            mtu = ctx.typed(conf, "mtu", int, f"{where}.{host}")
            if gso is not None and not 1 <= gso <= 65535:
                ctx.fail(conf.value_marks["gso_max_segs"], "gso_max_segs must be 1..65535")
            if mtu is not None and not 68 <= mtu <= 65535:
                ctx.fail(conf.value_marks["mtu"], "mtu must be 68..65535")
            st = LinkSettings(tx_checksum=ctx.typed(conf, "tx_checksum", bool, f"{where}.{host}", True),
                              gso_max_segs=gso, mtu=mtu)
            spec_ends.append(EndSpec(host, ifname, addrs.get("ipv4"), addrs.get("ipv6"), st))
        links.append(LinkSpec(spec_ends[0], spec_ends[1]))
    ofports: dict[tuple[str, int], str] = {}
    for i, link in enumerate(links):
        p = link.b.port
        if p and p.ofport is not None:
            if (link.b.host, p.ofport) in ofports:
                ctx.fail(lab["links"][i][link.b.host].value_marks["ofport"],
                         f"lab.links[{i}].{link.b.host}.ofport {p.ofport} is already "
                         f"{ofports[(link.b.host, p.ofport)]}'s port on {link.b.host}")
            ofports[(link.b.host, p.ofport)] = link.a.host
    prefixes = {b: spec.prefix for b, spec in ovs_specs.items() if spec.prefix}
    if len(set(prefixes.values())) > 1 or (prefixes and len(prefixes) < sum(k == "ovs" for k in bridges.values())):
        b = sorted(prefixes)[0]
        ctx.fail(bridges_in[b].value_marks["prefix"], f"lab.bridges.{b}.prefix: one Open vSwitch runs a lab's ovs "
                 "bridges: give every ovs bridge the same prefix (or none)")
    return TopologySpec(hosts=list(hosts), links=links, bridges=bridges, vms=vms, remote=remote, ovs=ovs_specs,
                        guest=guest, ovs_prefix=next(iter(prefixes.values()), None)), interfaces


def _vm(ctx, conf, where: str) -> VMHostSpec:
    """A VM's kernel, memory and CPUs (lab.vms.HOST, lab.guest)."""
    ctx.keys(conf, where, *VM_KEYS)
    memory = str(ctx.typed(conf, "memory", (str, int), where, "1G"))
    if not re.match(r"^\d+[MG]?$", memory):
        ctx.fail(conf.value_marks["memory"], f"{where}.memory: e.g. 1G or 512M")
    cpus = ctx.typed(conf, "cpus", int, where, 1)
    if not 1 <= cpus <= 16:
        ctx.fail(conf.value_marks["cpus"], f"{where}.cpus must be 1..16")
    return VMHostSpec(ctx.typed(conf, "kernel", str, where), memory, cpus)


BRIDGE_KEYS = {"kind", "flows", "protocols", "other_config", "prefix"}
PORT_KEYS = {"ofport", "tag", "vlan_mode", "trunks", "other_config"}


def _bridge(ctx, b: str, conf, mark) -> tuple[str, OvsBridgeSpec | None]:
    """`linux`, `ovs`, or {kind: ovs, flows: [...], protocols: OpenFlow13, other_config: {...}}."""
    if isinstance(conf, str):
        if conf not in ("linux", "ovs"):
            ctx.fail(mark, f"bridge {b}: kind must be linux or ovs, not {conf!r}")
        return conf, None
    if not isinstance(conf, YMap):
        ctx.fail(mark, f"bridge {b}: give its kind (linux or ovs), or a mapping with kind, flows, protocols, "
                       f"other_config")
    where = f"lab.bridges.{b}"
    ctx.keys(conf, where, required={"kind"}, optional=BRIDGE_KEYS)
    kind = ctx.typed(conf, "kind", str, where)
    if kind not in ("linux", "ovs"):
        ctx.fail(conf.value_marks["kind"], f"{where}.kind must be linux or ovs, not {kind!r}")
    if kind == "linux":
        extra = sorted(set(conf) - {"kind"})
        if extra:
            ctx.fail(conf.key_marks[extra[0]], f"{where}.{extra[0]}: only an ovs bridge takes {extra[0]}")
        return kind, None
    protocols = conf.get("protocols", [])
    if isinstance(protocols, str):
        protocols = [p.strip() for p in protocols.split(",")]
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        ctx.fail(conf.value_marks["protocols"], f"{where}.protocols: e.g. OpenFlow13 or [OpenFlow10, OpenFlow13]")
    for p in protocols:
        if p not in OVS_PROTOCOLS:
            near = difflib.get_close_matches(p, OVS_PROTOCOLS, n=1, cutoff=0.6)
            hint = f" (did you mean '{near[0]}'?)" if near else f"; known: {', '.join(OVS_PROTOCOLS)}"
            ctx.fail(conf.value_marks["protocols"], f"{where}.protocols: no OpenFlow version '{p}'{hint}")
    flows = ctx.typed(conf, "flows", list, where, YList()) or YList()
    for i, flow in enumerate(flows):
        fmark = flows.item_marks[i]
        if not isinstance(flow, str) or not flow.strip():
            ctx.fail(fmark, f"{where}.flows[{i}]: an ovs-ofctl add-flow line, e.g. "
                            f"'priority=100,tcp,tp_dst=5001,tcp_flags=+psh,actions=drop'")
        if not re.search(r"\bactions?\s*=", flow):
            ctx.fail(fmark, f"{where}.flows[{i}]: a rule needs actions=... (e.g. actions=drop or actions=NORMAL)")
        problem = ovs_check_flow(flow, protocols)
        if problem:
            ctx.fail(fmark, f"{where}.flows[{i}]: ovs-ofctl cannot use it"
                            f"{' with ' + ','.join(protocols) if protocols else ''}: {problem}")
    other = _string_map(ctx, conf, "other_config", where)
    prefix = ctx.typed(conf, "prefix", str, where)
    if prefix is not None:   # an OVS build of one's own: relative to the scenario's directory

        try:
            prefix = check_prefix(os.path.join(os.path.dirname(os.path.abspath(ctx.path)), prefix))
        except SpecError as exc:
            ctx.fail(conf.value_marks["prefix"], f"{where}.prefix: {exc}")
    return kind, OvsBridgeSpec([f.strip() for f in flows], protocols, other, prefix)


def _string_map(ctx, conf, key, where) -> dict[str, str]:
    m = ctx.typed(conf, key, dict, where, YMap()) or YMap()
    out = {}
    for k, v in m.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        if not isinstance(v, (str, int, float)):
            ctx.fail(m.value_marks[k], f"{where}.{key}.{k}: a value is a string or a number, not {v!r}")
        out[k] = str(v)
    return out


def _port(ctx, conf, where: str, kind: str) -> OvsPortSpec:
    if kind != "ovs":
        ctx.fail(getattr(conf, "mark", None), f"{where}: port options are for an ovs bridge's ports")
    ctx.keys(conf, where, optional=PORT_KEYS)
    ofport = _pos_int(ctx, conf, "ofport", where, 1, 1, 65279) if "ofport" in conf else None
    tag = _pos_int(ctx, conf, "tag", where, 0, 0, 4095) if "tag" in conf else None
    vlan_mode = ctx.typed(conf, "vlan_mode", str, where)
    if vlan_mode is not None and vlan_mode not in OVS_VLAN_MODES:
        ctx.fail(conf.value_marks["vlan_mode"], f"{where}.vlan_mode: one of {', '.join(OVS_VLAN_MODES)}")
    trunks = ctx.typed(conf, "trunks", list, where, [])
    if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= 4095 for t in trunks):
        ctx.fail(conf.value_marks["trunks"], f"{where}.trunks: VLAN ids 0..4095")
    return OvsPortSpec(ofport, tag, vlan_mode, list(trunks), _string_map(ctx, conf, "other_config", where))


def _duration(ctx, m, key, where):
    if key not in m:
        return None
    try:
        v = m[key]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0 and key == "at":
            return 0.0
        return parse_duration(v)
    except SpecError as exc:
        ctx.fail(m.value_marks[key], f"{where}.{key}: {exc}")


def _fault(ctx, f, i, hosts, interfaces) -> FaultEntry:
    where = f"faults[{i}]"
    ctx.keys(f, where, *FAULT_KEYS)
    host = hosts.ref(ctx, f, "host", where)
    iface = hosts.interface(ctx, f, host, interfaces, where)
    try:
        spec = parse_spec(ctx.typed(f, "spec", str, where), ctx.typed(f, "hook", str, where))
    except SpecError as exc:
        ctx.fail(f.value_marks["spec"], f"{where}.spec: {exc}")
    seed = ctx.typed(f, "seed", int, where)
    if seed is not None and not 0 <= seed < 2**64:
        ctx.fail(f.value_marks["seed"], f"{where}.seed must be 0..2**64-1")
    name = ctx.typed(f, "name", str, where, f"fault{i}")
    tc_mode = ctx.typed(f, "tc_mode", str, where, "cls_bpf")
    if tc_mode not in ("cls_bpf", "matchall") or (tc_mode == "matchall" and spec.hook == "xdp"):
        ctx.fail(f.value_marks["tc_mode"], f"{where}.tc_mode: cls_bpf or matchall (a tc hook's), not {tc_mode!r}")
    return FaultEntry(name, spec, host, iface, seed, _duration(ctx, f, "at", where), _duration(ctx, f, "for", where),
                      tc_mode)


def _segments(lab: TopologySpec) -> dict[str, list[tuple[str, Any]]]:
    """Each layer-2 segment of the lab (a bridge, or a host-to-host link): its ends' (host, address)."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for i, link in enumerate(lab.links):
        seg = link.b.host if link.b.host in lab.bridges else f"link{i}"
        for end in (link.a, link.b):
            for cidr in (end.ipv4, end.ipv6):
                if cidr:
                    out.setdefault(seg, []).append((end.host, ipaddress.ip_interface(cidr)))
    return out


def _reachable(ctx, params, w: str, lab: TopologySpec, src: str, dst: str, v6: bool) -> None:
    """The lab has no routes: traffic goes to dst's first address of its family (Scenario.address),
    which src reaches only from an address of its own in that subnet on the same segment."""
    if src in lab.remote or dst in lab.remote or src not in lab.hosts or dst not in lab.hosts:
        return   # remote hosts and namespaces outside the lab have routes of their own
    fam = "ipv6" if v6 else "ipv4"
    segs = _segments(lab)
    to = next(((seg, a) for link in lab.links for end in (link.a, link.b) if end.host == dst
               and (end.ipv6 if v6 else end.ipv4)
               for seg, ends in segs.items() for h, a in ends if h == dst and str(a) == (end.ipv6 if v6 else end.ipv4)),
              None)
    mark = params.value_marks.get("to", params.mark)
    if to is None:
        ctx.fail(mark, f"{w}.to: {dst} has no {fam} address (give one in lab.links)")
    seg, addr = to
    if not any(h == src and a.version == addr.version and addr.ip in a.network for h, a in segs[seg]):
        mine = [str(a) for ends in segs.values() for h, a in ends if h == src and a.version == addr.version]
        ctx.fail(mark, f"{w}.to: {dst}'s {addr} is not in a subnet {src} has on the same link or bridge "
                 f"({src}: {', '.join(mine) or 'no ' + fam + ' address'}); the lab has no routes: put them "
                 f"in one subnet")


def _traffic(ctx, t, i, hosts, lab: TopologySpec | None = None) -> TrafficEntry:
    where = f"traffic[{i}]"
    ctx.keys(t, where, optional={"name", *TRAFFIC_KINDS})
    kinds = [k for k in TRAFFIC_KINDS if k in t]
    if len(kinds) != 1:
        ctx.fail(t.mark, f"{where} needs exactly one of {', '.join(TRAFFIC_KINDS)}")
    kind = kinds[0]
    params = t[kind]
    required, optional = TRAFFIC_KINDS[kind]
    ctx.keys(params, f"{where}.{kind}", required=required, optional=optional)
    w = f"{where}.{kind}"
    host = hosts.ref(ctx, params, "from" if kind != "command" else "host", w)
    out: dict[str, Any] = {}
    if kind != "command":
        out["to"] = hosts.ref(ctx, params, "to", w)
        out["v6"] = ctx.typed(params, "v6", bool, w, False)
    if kind == "ping":
        out["count"] = _pos_int(ctx, params, "count", w, 100, 1, 1_000_000)
        out["interval"] = float(ctx.typed(params, "interval", (int, float), w, 0.01))
        out["size"] = _pos_int(ctx, params, "size", w, 56, 0, 65000)
        out["timeout"] = float(ctx.typed(params, "timeout", (int, float), w, 2))
    elif kind == "tcp":
        size = parse_size(params.get("bytes", "10MB"))
        if size is None or size <= 0:
            ctx.fail(params.value_marks.get("bytes", params.mark), f"{w}.bytes: give a size like 20MB or 1000000")
        out["bytes"] = size
        out["port"] = _pos_int(ctx, params, "port", w, 5201, 1, 65535)
        out["seed"] = ctx.typed(params, "seed", int, w, 1)
        out["connections"] = _pos_int(ctx, params, "connections", w, 1, 1, 1000)
        # how long either end waits for progress: a transfer that stalls by design ends this soon after
        out["timeout"] = float(ctx.typed(params, "timeout", (int, float), w, 60))
        if not 0.5 <= out["timeout"] <= 3600:
            ctx.fail(params.value_marks["timeout"], f"{w}.timeout must be 0.5..3600 seconds")
    elif kind == "udp":
        out["count"] = _pos_int(ctx, params, "count", w, 10000, 1, 10_000_000)
        out["size"] = _pos_int(ctx, params, "size", w, 64, 4, 65000)
        out["rate"] = _pos_int(ctx, params, "rate", w, 20000, 1, 10_000_000)
        out["sport"] = _pos_int(ctx, params, "sport", w, 40000, 1, 65535)
        out["dport"] = _pos_int(ctx, params, "dport", w, 5300, 1, 65535)
    else:
        out["run"] = ctx.typed(params, "run", (str, list), w)
        out["timeout"] = float(ctx.typed(params, "timeout", (int, float), w, 60))
    if kind != "command" and lab is not None:
        _reachable(ctx, params, w, lab, host, out["to"], out["v6"])
    name = ctx.typed(t, "name", str, where, f"{kind}{i}")
    return TrafficEntry(name, kind, host, out)


def _pos_int(ctx, m, key, where, default, lo, hi) -> int:
    v = ctx.typed(m, key, int, where, default)
    if not lo <= v <= hi:
        ctx.fail(m.value_marks[key], f"{where}.{key} must be {lo}..{hi}")
    return v


def _capture(ctx, c, i, hosts, interfaces) -> CaptureEntry:
    where = f"capture[{i}]"
    ctx.keys(c, where, *CAPTURE_KEYS)
    host = hosts.ref(ctx, c, "host", where)
    iface = hosts.interface(ctx, c, host, interfaces, where)
    direction = ctx.typed(c, "direction", str, where, "any")
    if direction not in ("in", "out", "any"):
        ctx.fail(c.value_marks["direction"], f"{where}.direction must be in, out or any")
    snaplen = _pos_int(ctx, c, "snaplen", where, 256, 64, 65535)
    return CaptureEntry(ctx.typed(c, "name", str, where, f"capture{i}"), host, iface, direction, snaplen)


def _expect(ctx, e, refs, traffic, lab: TopologySpec, faults=(), traced: bool = False) -> ExpectEntry:
    if not isinstance(e, YMap) or len(e) != 1:
        ctx.fail(getattr(e, "mark", None), f"an expectation is one of: {', '.join(KINDS)}, with its settings")
    kind = next(iter(e))
    if kind not in KINDS:
        ctx.keys(e, "expect", optional=KINDS)
    params = e[kind]
    x = KINDS[kind]
    if isinstance(params, str) and len(x.required) == 1:  # short form: `tcp_intact: transfer`
        p = YMap({next(iter(x.required)): params})
        p.mark, p.key_marks, p.value_marks = e.value_marks[kind], {}, {next(iter(x.required)): e.value_marks[kind]}
        params = p
    ctx.keys(params, kind, required=x.required, optional=x.optional)
    x.validate(ctx, params, Entries(refs, traffic, lab, faults, traced), e.mark)
    return ExpectEntry(kind, dict(params), e.mark.line + 1)
