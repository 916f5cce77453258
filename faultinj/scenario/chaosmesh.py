"""Chaos Mesh NetworkChaos manifests (apiVersion chaos-mesh.org/v1alpha1), run as they are against
Docker containers on this machine, as Chaos Mesh runs them against pods.

A manifest becomes faultinj faults on each selected container's interface (`device`, default eth0):
loss -> drop, duplicate -> duplicate, corrupt -> corrupt (checksum left bad, as netem's), partition ->
drop=100%, delay -> delay (jitter, reorder), bandwidth -> rate. `target` (a second selector) and
`externalTargets` (addresses, CIDRs) become address filters, one fault per address (a fault holds one
filter). The faults carry the manifest's metadata.name: `status` shows it, `clear --name` removes
them all. Every field faultinj does not honour is refused at its file:line:column (exit 2).

Pods are containers: `selector.labelSelectors` are Docker labels, `selector.namespaces` the label
NAMESPACE_LABEL (the one the kubelet's Docker shim puts on a pod's containers); a manifest without
`selector.namespaces` but with metadata.namespace selects in that namespace, as Chaos Mesh does.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import random
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import EnvironmentProblem, StateError, TargetError
from .schema import ScenarioError, YMap, _Ctx, parse_marked, read_file
from .. import api
from ..kernel import caps
from ..inject import state
from ..inject.runtimes import _cli
from ..inject.targets import resolve

API = "chaos-mesh.org/v1alpha1"
KIND = "NetworkChaos"
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
ACTIONS = ("loss", "delay", "duplicate", "corrupt", "bandwidth", "partition")
MODES = ("one", "all", "fixed", "fixed-percent", "random-max-percent")
DIRECTIONS = ("to", "from", "both")
TIME_ACTIONS = ("delay", "bandwidth")   # faultinj's time faults: tc egress only, and they need fq

# Chaos Mesh fields faultinj knows and does not honour: refused with the reason, never ignored
_UNSUPPORTED = {
    "spec": {"scheduler": "schedules are not run by faultinj: run the manifest when you want it",
             "remoteCluster": "there is no cluster here: faultinj runs on this machine's containers",
             "targetDevice": "the target's device is not used: faultinj filters by the target's addresses",
             "rate": "the 'rate' action's field: use action: bandwidth"},
    "selector": {"pods": "select containers by labelSelectors", "nodes": "there are no nodes here",
                 "nodeSelectors": "there are no nodes here", "fieldSelectors": "containers have labels only",
                 "annotationSelectors": "containers have labels only",
                 "expressionSelectors": "give labelSelectors (key: value pairs)",
                 "podPhaseSelectors": "running containers are the ones selected"},
    "metadata": {"annotations": "annotations (such as experiment.chaos-mesh.org/pause) are not honoured"},
    "bandwidth": {"peakrate": "faultinj paces at one rate (no peak bucket)",
                  "minburst": "faultinj paces at one rate (no peak bucket)"},
}
_OPTIONAL = {
    "top": {"apiVersion", "kind", "metadata", "spec"},
    "metadata": {"name", "namespace", "labels"},
    "spec": {"action", "mode", "value", "selector", "direction", "target", "externalTargets", "device", "duration",
             "delay", "loss", "duplicate", "corrupt", "bandwidth"},
    "selector": {"namespaces", "labelSelectors"},
    "target": {"selector", "mode", "value"},
    "delay": {"latency", "jitter", "correlation", "reorder"},
    "reorder": {"reorder", "correlation", "gap"},
    "loss": {"loss", "correlation"}, "duplicate": {"duplicate", "correlation"},
    "corrupt": {"corrupt", "correlation"},
    "bandwidth": {"rate", "limit", "buffer"},
}
_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TC_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps|tbps)\s*$", re.I)
_TC_BITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
            "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12}


@dataclass
class Selector:
    labels: dict[str, str]
    namespaces: list[str]
    mode: str
    value: str | None


@dataclass
class Manifest:
    path: str
    name: str
    action: str
    selector: Selector
    direction: str = "to"
    target: Selector | None = None
    external: list[str] = field(default_factory=list)
    device: str = "eth0"
    duration_s: float | None = None
    base: str = ""                    # the faultinj spec of the action, before filters and hook
    notes: list[str] = field(default_factory=list)


@dataclass
class Planned:
    container: str
    interface: str
    spec: str


@dataclass
class Applied:
    manifest: Manifest
    selected: list[str]
    targets: list[str]
    records: list

    def to_json(self) -> dict:
        return {"name": self.manifest.name, "action": self.manifest.action, "selected": self.selected,
                "targets": self.targets, "duration_s": self.manifest.duration_s, "notes": self.manifest.notes,
                "faults": [r.to_json() for r in self.records]}

    def lines(self) -> list[str]:
        m = self.manifest
        out = [f"NetworkChaos {m.name}: {m.action} on {', '.join(self.selected)}"
               + (f" (targets: {', '.join(self.targets)})" if self.targets else "")
               + (f", for {m.duration_s:g}s" if m.duration_s else "")]
        out += [f"applied {r.id}: {r.spec} on {r.where}, seed {r.seed}" for r in self.records]
        out += [f"note: {n}" for n in m.notes]
        out.append(f"remove with: faultinj clear --name {m.name}")
        return out


def is_network_chaos(path: str) -> bool:
    """Is the file a Chaos Mesh manifest (any chaos-mesh.org apiVersion: load says what is wrong)?"""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("chaos-mesh.org/")


# ---- the manifest --------------------------------------------------------------------------------

def load(path: str | Path) -> Manifest:
    path = str(path)
    return loads(read_file(path, "manifest"), path)


def _keys(ctx: _Ctx, m, where: str, part: str, required=()) -> None:
    """Each key faultinj does not honour is a mistake of its own (all told at once); a missing
    required key ends the part."""
    if not isinstance(m, dict):
        ctx.fail(getattr(m, "mark", None), f"{where} must be a mapping")
    allowed = _OPTIONAL[part] | set(required)
    for k in m:
        why = _UNSUPPORTED.get(part, {}).get(k)
        if why:
            ctx.part(ctx.fail, m.key_marks[k], f"{where}.{k} is not supported by faultinj: {why}")
        elif k not in allowed:
            near = difflib.get_close_matches(str(k), sorted(allowed), n=1, cutoff=0.6)
            hint = f" (did you mean '{near[0]}'?)" if near else f"; faultinj takes: {', '.join(sorted(allowed))}"
            ctx.part(ctx.fail, m.key_marks[k], f"unknown field '{k}' in {where}{hint}")
    for k in required:
        if k not in m:
            ctx.fail(m.mark, f"{where} lacks '{k}'")


def _string(ctx: _Ctx, m: YMap, key: str, where: str, default=None):
    """A string field; Chaos Mesh's percentages are strings, numbers are taken as well."""
    if key not in m:
        return default
    v = m[key]
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        ctx.fail(m.value_marks[key], f"{where}.{key} must be a string, not {v!r}")
    return str(v)


def _percent(ctx: _Ctx, m: YMap, key: str, where: str) -> float:
    text = _string(ctx, m, key, where)
    if text is None:
        ctx.fail(m.mark, f"{where} lacks '{key}'")
    try:
        p = float(text)
    except ValueError:
        p = -1.0
    if not 0 <= p <= 100:
        ctx.fail(m.value_marks[key], f"{where}.{key}: give a percentage from 0 to 100 (e.g. '25'), not {text!r}")
    return p


def _no_correlation(ctx: _Ctx, m: YMap, where: str) -> None:
    text = _string(ctx, m, "correlation", where)
    if text is not None and text.strip() not in ("", "0", "0.0"):
        ctx.fail(m.value_marks["correlation"], f"{where}.correlation: faultinj draws each packet independently "
                 f"(no netem correlation): remove it or give '0', not {text!r}")


def go_duration(text: str) -> float | None:
    """A Go duration ('30s', '1m30s', '500ms') in seconds; None if it is not one."""
    text = text.strip()
    if not _GO_DURATION.match(text):
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(text))


def _duration(ctx: _Ctx, m: YMap, key: str, where: str, required=True) -> float | None:
    text = _string(ctx, m, key, where)
    if text is None:
        if required:
            ctx.fail(m.mark, f"{where} lacks '{key}'")
        return None
    s = go_duration(text)
    if s is None:
        ctx.fail(m.value_marks[key], f"{where}.{key}: give a duration such as '10ms', '1m30s', not {text!r}")
    return s


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms"


def _selector(ctx: _Ctx, m: YMap, where: str, mode_m: YMap, default_ns: str | None) -> Selector:
    sel = m["selector"]
    _keys(ctx, sel, f"{where}.selector", "selector")
    labels = sel.get("labelSelectors", {})
    if not isinstance(labels, dict) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                               for v in labels.values()):
        ctx.fail(sel.value_marks["labelSelectors"], f"{where}.selector.labelSelectors: give label: value pairs")
    namespaces = sel.get("namespaces", [default_ns] if default_ns else [])
    if not isinstance(namespaces, list) or not all(isinstance(n, str) for n in namespaces):
        ctx.fail(sel.value_marks["namespaces"], f"{where}.selector.namespaces: give a list of namespace names")
    if not labels and not namespaces:
        ctx.fail(sel.mark, f"{where}.selector selects every container: give labelSelectors or namespaces")
    mode = _string(ctx, mode_m, "mode", where)
    if mode is None:
        ctx.fail(mode_m.mark, f"{where} lacks 'mode' (one of {', '.join(MODES)})")
    if mode not in MODES:
        ctx.fail(mode_m.value_marks["mode"], f"{where}.mode: give one of {', '.join(MODES)}, not {mode!r}")
    value = _string(ctx, mode_m, "value", where)
    if mode in ("one", "all"):
        if value not in (None, ""):
            ctx.fail(mode_m.value_marks["value"], f"{where}.value: mode {mode} takes no value")
        value = None
    else:
        ok = value is not None and value.isdigit() and (mode == "fixed" or int(value) <= 100)
        if not ok:
            what = "a whole number of containers" if mode == "fixed" else "a percentage from 0 to 100"
            ctx.fail(mode_m.value_marks.get("value", mode_m.value_marks["mode"]),
                     f"{where}.value: mode {mode} needs {what} (e.g. value: '1')"
                     + (f", not {value!r}" if value is not None else ""))
    return Selector({str(k): str(v) for k, v in labels.items()}, list(namespaces), mode, value)


def _action(ctx: _Ctx, spec: YMap, action: str, m: Manifest) -> str:
    """The faultinj spec (without filters and hook) of the action's own section."""
    if action == "partition":
        return "drop=1.0"
    if action not in spec:
        ctx.fail(spec.mark, f"spec lacks '{action}' (the {action} action's parameters)")
    sec = spec[action]
    where = f"spec.{action}"
    _keys(ctx, sec, where, action)
    if action in ("loss", "duplicate", "corrupt"):
        _no_correlation(ctx, sec, where)
        p = _percent(ctx, sec, action, where) / 100
        fault = {"loss": "drop", "duplicate": "duplicate", "corrupt": "corrupt"}[action]
        # netem's corruption is made after the checksum: the receiver drops such packets
        return f"{fault}={p:g}" + (",csum=bad" if action == "corrupt" else "")
    if action == "delay":
        _no_correlation(ctx, sec, where)
        latency = _duration(ctx, sec, "latency", where)
        jitter = _duration(ctx, sec, "jitter", where, required=False) or 0.0
        out = f"delay={_ms(latency)}"
        if jitter:
            # tc netem (how Chaos Mesh's daemon sets it) takes the normal table when jitter is given
            out += f",jitter={_ms(jitter)},dist=normal"
        if "reorder" in sec:
            r = sec["reorder"]
            _keys(ctx, r, f"{where}.reorder", "reorder")
            _no_correlation(ctx, r, f"{where}.reorder")
            gap = r.get("gap", 0)
            if gap not in (0, 1, "0", "1"):
                ctx.fail(r.value_marks["gap"], f"{where}.reorder.gap: faultinj picks the packets that go at once "
                         f"by probability only: remove gap or give 0, not {gap!r}")
            share = _percent(ctx, r, "reorder", where + ".reorder") / 100
            # netem's reorder sends that share at once and delays the rest; the rest overtaken by them
            out += f",p={1 - share:g}"
        return out
    # bandwidth
    text = _string(ctx, sec, "rate", where)
    if text is None:
        ctx.fail(sec.mark, f"{where} lacks 'rate'")
    mr = _TC_RATE.match(text)
    if not mr:
        ctx.fail(sec.value_marks["rate"], f"{where}.rate: give a tc rate such as '1mbps' (bytes/s) or '10mbit', "
                 f"not {text!r}")
    bps = int(float(mr.group(1)) * _TC_BITS[mr.group(2).lower()])
    out = f"rate={bps}bit,per=all"
    if "buffer" in sec:
        buf = sec["buffer"]
        if not isinstance(buf, int) or isinstance(buf, bool) or buf < 1:
            ctx.fail(sec.value_marks["buffer"], f"{where}.buffer: give the bucket size in bytes, not {buf!r}")
        burst_s = buf * 8 / bps
        out += f",burst={max(burst_s * 1000, 0.001):.3f}ms"
    if "limit" in sec:
        lim = sec["limit"]
        if not isinstance(lim, int) or isinstance(lim, bool) or lim < 1:
            ctx.fail(sec.value_marks["limit"], f"{where}.limit: give the queue size in bytes, not {lim!r}")
        m.notes.append(f"{where}.limit ({lim} bytes): faultinj holds packets in fq, bounded by its 10 s horizon, "
                       "not by a byte limit")
    return out


def loads(text: str, path: str = "<manifest>") -> Manifest:
    ctx = _Ctx(path)
    doc = parse_marked(text, path)
    if not isinstance(doc, YMap):
        raise ScenarioError(f"{path}:1:1: a NetworkChaos manifest is a mapping with apiVersion, kind, metadata, spec")
    ctx.part(_keys, ctx, doc, "the manifest", "top", ("apiVersion", "kind", "metadata", "spec"))
    if not all(k in doc for k in ("apiVersion", "kind", "metadata", "spec")):
        ctx.raise_mistakes()
    if doc["apiVersion"] != API:
        ctx.fail(doc.value_marks["apiVersion"], f"apiVersion: faultinj runs {API}, not {doc['apiVersion']!r}")
    if doc["kind"] != KIND:
        ctx.fail(doc.value_marks["kind"], f"kind: faultinj runs {KIND} manifests, not {doc['kind']!r}")
    meta, spec = doc["metadata"], doc["spec"]
    ctx.part(_keys, ctx, meta, "metadata", "metadata", ("name",))
    ctx.part(_keys, ctx, spec, "spec", "spec", ("action", "selector"))
    if not (isinstance(meta, dict) and "name" in meta and isinstance(spec, dict) and "action" in spec
            and "selector" in spec):
        ctx.raise_mistakes()
    name = _string(ctx, meta, "name", "metadata")
    if not re.match(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$", name):
        ctx.fail(meta.value_marks["name"], f"metadata.name: a Kubernetes name (lower case letters, digits, '-', "
                 f"'.'), not {name!r}")
    default_ns = _string(ctx, meta, "namespace", "metadata")
    action = _string(ctx, spec, "action", "spec")
    if action not in ACTIONS:
        ctx.fail(spec.value_marks["action"], f"spec.action: give one of {', '.join(ACTIONS)}, not {action!r}")
    for other in ACTIONS:
        if other != action and other in spec and other != "partition":
            ctx.part(ctx.fail, spec.key_marks[other], f"spec.{other}: the action is {action}: remove it")
    selector = ctx.part(_selector, ctx, spec, "spec", spec, default_ns)
    m = Manifest(path, name, action, selector)
    m.base = ctx.part(_action, ctx, spec, action, m, default="")
    direction = _string(ctx, spec, "direction", "spec", "to")
    if direction not in DIRECTIONS:
        ctx.part(ctx.fail, spec.value_marks["direction"],
                 f"spec.direction: give one of {', '.join(DIRECTIONS)}, not {direction!r}")
    m.direction = direction
    if "target" in spec:
        t = spec["target"]

        def target():
            _keys(ctx, t, "spec.target", "target", ("selector", "mode"))
            return _selector(ctx, t, "spec.target", t, default_ns)
        m.target = ctx.part(target)
    if "externalTargets" in spec:
        ext = spec["externalTargets"]

        def external():
            if not isinstance(ext, list):
                ctx.fail(spec.value_marks["externalTargets"], "spec.externalTargets: give a list of addresses or CIDRs")
            out = []
            for item, mark in zip(ext, ext.item_marks):
                try:
                    out.append(str(ipaddress.ip_network(str(item), strict=False)))
                except ValueError:
                    ctx.fail(mark, f"spec.externalTargets: {item!r} is not an address or CIDR (faultinj resolves no "
                             "host names: give the address)")
            return out
        m.external = ctx.part(external, default=[])
    m.device = _string(ctx, spec, "device", "spec", "eth0")
    if "duration" in spec:
        m.duration_s = ctx.part(_duration, ctx, spec, "duration", "spec")
    if action in TIME_ACTIONS and direction in ("from", "both") and (m.external or "target" not in spec):
        ctx.part(ctx.fail, spec.value_marks["direction"],
                 f"spec.direction: {action} runs at egress only, so '{direction}' delays the target's own sending: "
                 "give a target selector and no externalTargets, or direction: to")
    ctx.raise_mistakes()
    return m


# ---- containers ----------------------------------------------------------------------------------

def _docker() -> str:
    cli = _cli("docker")
    if not cli:
        raise EnvironmentProblem("no docker CLI: install docker.io (or set FAULTINJ_DOCKER); NetworkChaos "
                                 "selects Docker containers by their labels")
    return cli


def containers_matching(sel: Selector) -> list[str]:
    """Names of the running containers whose labels match the selector, sorted."""
    cli = _docker()
    found: set[str] | None = None
    for ns in sel.namespaces or [None]:
        argv = [cli, "ps", "--format", "{{.Names}}"]
        argv += [a for k, v in sel.labels.items() for a in ("--filter", f"label={k}={v}")]
        if ns is not None:
            argv += ["--filter", f"label={NAMESPACE_LABEL}={ns}"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise EnvironmentProblem(f"docker ps failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        names = {n for n in r.stdout.split() if n}
        found = names if found is None else found | names
    return sorted(found or ())


def choose(names: list[str], mode: str, value: str | None, rng: random.Random) -> list[str]:
    """Chaos Mesh's modes over the matching containers."""
    if mode == "all":
        return list(names)
    if mode == "one":
        n = 1
    elif mode == "fixed":
        n = int(value)
    elif mode == "fixed-percent":
        n = math.floor(len(names) * int(value) / 100)
    else:   # random-max-percent: a share from 0 to value percent
        n = math.floor(len(names) * rng.randint(0, int(value)) / 100)
    return sorted(rng.sample(names, min(n, len(names))))


def addresses(container: str, device: str) -> list[str]:
    """The container's global addresses on device (from its own namespace)."""
    t = resolve(container=container)
    r = subprocess.run(["nsenter", f"--net={t.netns}", "ip", "-j", "addr", "show", "dev", device],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise TargetError(f"container {container} has no interface {device}: set spec.device to one it has")
    out = []
    for link in json.loads(r.stdout or "[]"):
        out += [a["local"] for a in link.get("addr_info", []) if a.get("scope") == "global"]
    return out


def plan(m: Manifest, sources: dict[str, list[str]], targets: dict[str, list[str]]) -> list[Planned]:
    """The faults a manifest makes, given the selected containers and the targets (name -> addresses)."""
    peers = [a for addrs in targets.values() for a in addrs] + m.external
    hook_to, hook_from = "egress", "ingress"
    out: list[Planned] = []

    def faults(container: str, hook: str, key: str, addrs: list[str] | None):
        for a in (addrs if addrs else [None]):
            filt = f",{key}={a}" if a else ""
            out.append(Planned(container, m.device, f"{m.base}{filt}@{hook}"))

    filtered = m.target is not None or bool(m.external)
    if m.direction in ("to", "both"):
        for c in sources:
            faults(c, hook_to, "dst", peers if filtered else None)
    if m.direction in ("from", "both"):
        if m.action in TIME_ACTIONS:   # held at the target's egress, on its way to the selected ones
            mine = [a for addrs in sources.values() for a in addrs]
            for c in targets:
                faults(c, hook_to, "dst", mine)
        else:
            for c in sources:
                faults(c, hook_from, "src", peers if filtered else None)
    return out


def run(m: Manifest, rng: random.Random | None = None) -> Applied:
    """Select the containers, apply every fault under the manifest's name; all or nothing."""
    caps.require_privileges()
    rng = rng or random.SystemRandom()
    api.reap()   # what every command does first: an expired run of this manifest is gone then
    if any(r.name == m.name for r in state.records()):
        raise StateError(f"NetworkChaos {m.name} is already applied: remove it with 'faultinj clear --name {m.name}' "
                         "first")
    matching = containers_matching(m.selector)
    if not matching:
        raise TargetError(f"{m.path}: spec.selector matches no running container (labels "
                          f"{m.selector.labels or '-'}, namespaces {m.selector.namespaces or '-'} as label "
                          f"{NAMESPACE_LABEL})")
    selected = choose(matching, m.selector.mode, m.selector.value, rng)
    if not selected:
        raise TargetError(f"{m.path}: mode {m.selector.mode} with value {m.selector.value} selects none of the "
                          f"{len(matching)} matching containers")
    chosen_targets: list[str] = []
    if m.target is not None:
        tmatch = containers_matching(m.target)
        chosen_targets = choose(tmatch, m.target.mode, m.target.value, rng)
        if not chosen_targets:
            raise TargetError(f"{m.path}: spec.target selects no running container")
    sources = {c: addresses(c, m.device) for c in selected}
    targets = {c: addresses(c, m.device) for c in chosen_targets}
    for c, addrs in targets.items():
        if not addrs:
            raise TargetError(f"target container {c} has no address on {m.device}: nothing to filter by")
    planned = plan(m, sources, targets)
    applied = []
    try:
        for p in planned:
            applied.append(api.apply(p.spec, p.interface, container=p.container, duration=m.duration_s,
                                     name=m.name))
    except BaseException:
        for rec in applied:   # nothing half-applied
            try:
                api.clear(fault_id=rec.id)
            except Exception:
                pass
        raise
    return Applied(m, selected, chosen_targets, applied)
