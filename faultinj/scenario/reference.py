"""The scenario file reference (docs/scenarios.md, `faultinj run --schema`), made from the schema's
own tables (schema.py: TOP_KEYS, LAB_KEYS, ..., TRAFFIC_KINDS) and a sentence per key, and from the
expectation kinds' classes (expectations.py: each describes itself and its keys).

`undocumented()` lists every key and kind the schema takes that has no sentence here (and every
sentence for a key it no longer takes): a new expectation kind or key fails the test until it is
described. Regenerate the file with `faultinj run --schema > docs/scenarios.md`.
"""

from __future__ import annotations

from . import schema
from .expectations import KINDS
from .predicates import FIELDS, _WORDS

# part of a file -> (where it sits, what it is, {key: what it means})
PARTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "the scenario": ("top level", "A scenario file is one YAML mapping.", {
        "name": "the scenario's name (in verdicts, reports, lab records)",
        "description": "one paragraph shown in the HTML report",
        "lab": "the hosts, bridges and links built for the run (left out: every host is outside the lab)",
        "faults": "faults applied during the run, a list",
        "traffic": "traffic sent, in order, a list",
        "capture": "captures taken while the traffic runs, a list",
        "expect": "the checks judged at the end, a list (one kind each)",
        "trace": "packets whose journeys (every hop, where faults acted) go in the report",
    }),
    "lab": ("lab:", "The lab. Hosts are network namespaces unless lab.vms, lab.remote or lab.guest say "
            "otherwise. The lab has no routes: traffic goes between hosts that share a link or a bridge "
            "and a subnet (checked when the file is read, as are addresses given twice).", {
        "hosts": "host names, 1-12 lowercase letters, digits or _",
        "bridges": "{NAME: linux} or {NAME: ovs}, or {NAME: {kind: ovs, flows: [...], protocols: ..., "
                   "other_config: {...}}} (below)",
        "links": "a list; each {ends: [HOST, HOST or BRIDGE], HOST: {end settings}, BRIDGE: {port settings}}",
        "vms": "{HOST: {kernel, memory, cpus}}: these hosts are QEMU guests on that kernel (below)",
        "remote": "{HOST: {ssh, interfaces, options, command}}: machines reached through ssh (below)",
        "guest": "{kernel, memory, cpus}: the whole lab is made inside one VM on that kernel",
    }),
    "link end": ("lab.links[i].HOST", "A host's end of a link (interfaces are eth0, eth1, ... per host "
                 "unless named).", {
        "name": "the interface's name in the host (default ethN)",
        "ipv4": "an IPv4 address with its prefix length, e.g. 10.0.0.1/24",
        "ipv6": "an IPv6 address with its prefix length, e.g. fd00::1/64",
        "mtu": "68..65535",
        "gso_max_segs": "1..65535; 1: one skb per wire segment at tc egress (what psh-ratio counts)",
        "tx_checksum": "true (default) or false: tx checksum offload",
    }),
    "bridge": ("lab.bridges.NAME", "An Open vSwitch bridge's settings.", {
        "kind": "linux or ovs",
        "flows": "ovs-ofctl add-flow lines, each with actions=... (checked with ovs-ofctl where installed)",
        "protocols": "OpenFlow versions, e.g. OpenFlow13 or [OpenFlow10, OpenFlow13]",
        "other_config": "the bridge's other_config, {KEY: VALUE}",
        "prefix": "an Open vSwitch build of one's own (make install DESTDIR=DIR, dpkg -x ...), relative to the "
                  "file: its daemons and tools run the lab's ovs bridges (the same for every ovs bridge)",
    }),
    "port": ("lab.links[i].BRIDGE", "An OVS port's settings (the bridge's end of a link).", {
        "ofport": "its OpenFlow port number, 1..65279",
        "tag": "access VLAN, 0..4095",
        "vlan_mode": "access, trunk, native-tagged, native-untagged or dot1q-tunnel",
        "trunks": "VLAN ids it trunks",
        "other_config": "the port's other_config, {KEY: VALUE}",
    }),
    "vm": ("lab.vms.HOST, lab.guest", "A QEMU guest.", {
        "kernel": "a Debian kernel package (linux-image-6.1.0-57-amd64) or a vmlinuz path",
        "memory": "e.g. 1G (default) or 512M",
        "cpus": "1..16 (default 1)",
    }),
    "remote": ("lab.remote.HOST", "A machine reached through ssh, running `faultinj agent --stdio`.", {
        "ssh": "user@host",
        "interfaces": "{IFNAME: ADDRESS/PREFIX or null}: its interfaces the file names",
        "options": "extra ssh arguments, a list",
        "command": "the agent command there (default 'faultinj agent --stdio')",
    }),
    "host outside the lab": ("host: {...} in faults, traffic, capture", "Instead of a lab host's name: "
                             "a namespace outside the lab, known afterwards as container:NAME, pid:N or the path.", {
        "container": "a container's name or id (its network namespace)",
        "pid": "a process id (its network namespace)",
        "netns_path": "a namespace file, e.g. /run/docker/netns/ID",
        "runtime": "with container: docker, podman or containerd",
    }),
    "fault": ("faults[i]", "A fault applied for the run (or a phase of it).", {
        "spec": "a fault spec as `faultinj apply` takes it, e.g. psh-ratio=10 or drop=5%,proto=udp@ingress",
        "host": "where: a lab host or a host outside the lab",
        "interface": "the host's interface",
        "name": "how expectations name it (default faultN)",
        "seed": "its seed, 0..2**64-1 (default random)",
        "at": "apply it this long into the run, e.g. 2s (its timer starts with the traffic; default: before the traffic)",
        "for": "clear it after this long (default: at the end)",
        "hook": "xdp, ingress or egress, in place of @HOOK in the spec",
        "tc_mode": "cls_bpf (default) or matchall (a tc hook's)",
    }),
    "capture": ("capture[i]", "A packet capture while the traffic runs (saved as pcap).", {
        "host": "a lab host or a host outside the lab",
        "interface": "the host's interface",
        "name": "how expectations name it (default captureN)",
        "direction": "in, out or any (default)",
        "snaplen": "bytes kept per packet, 64..65535 (default 256)",
    }),
    "trace": ("trace:", "Packets traced hop by hop; their journeys go in the report.", {
        "filter": "fault filter words, e.g. proto=icmp,dst=10.0.0.2 (default every packet)",
        "count": "the first this many packets that pass it, 1..1000 (default 3)",
    }),
}

# traffic kind -> (what it sends, {key: what it means, with its default})
TRAFFIC: dict[str, tuple[str, dict[str, str]]] = {
    "ping": ("ICMP echo requests (ping); judged with count, fraction, delay, ...", {
        "from": "the sending host", "to": "the host pinged (its first address of the family)",
        "count": "requests, 1..1000000 (default 100)", "interval": "seconds between requests (default 0.01)",
        "size": "payload bytes, 0..65000 (default 56)", "v6": "ping its IPv6 address (default false)",
        "timeout": "seconds to wait for each reply (default 2)",
    }),
    "tcp": ("a TCP transfer of seeded random bytes, checked by SHA-256 at the receiver", {
        "from": "the sending host", "to": "the receiving host", "bytes": "how much, e.g. 20MB (default 10MB)",
        "port": "the receiver's port (default 5201)", "v6": "over IPv6 (default false)",
        "seed": "the random data's seed (default 1; connection i uses seed + i)",
        "connections": "transfers one after the other, 1..1000 (default 1)",
        "timeout": "seconds either end waits for progress, 0.5..3600 (default 60): a stalled transfer ends then",
    }),
    "udp": ("a paced UDP stream between namespace hosts; judged with loss", {
        "from": "the sending host", "to": "the receiving host", "count": "datagrams (default 10000)",
        "size": "payload bytes, 4..65000 (default 64)", "rate": "datagrams per second (default 20000)",
        "sport": "source port (default 40000)", "dport": "destination port (default 5300)",
        "v6": "over IPv6 (default false)",
    }),
    "command": ("a command run in a host (its exit code: exit_code)", {
        "host": "where it runs", "run": "a command line or an argv list",
        "timeout": "seconds before it is stopped (default 60)",
    }),
}

def _tables() -> dict[str, tuple[set, set]]:
    """Each part of a file as the schema takes it: (required keys, optional keys)."""
    return {"the scenario": schema.TOP_KEYS, "lab": schema.LAB_KEYS, "link end": (set(), schema.END_KEYS),
            "bridge": ({"kind"}, schema.BRIDGE_KEYS - {"kind"}), "port": (set(), schema.PORT_KEYS),
            "vm": schema.VM_KEYS, "remote": schema.REMOTE_KEYS,
            "host outside the lab": (set(), {*schema.TARGET_KINDS, "runtime"}), "fault": schema.FAULT_KEYS,
            "capture": schema.CAPTURE_KEYS, "trace": schema.TRACE_KEYS}


def undocumented() -> list[str]:
    """What the schema takes and this reference does not describe, and descriptions of what it no
    longer takes; empty when the two agree."""
    out = []

    def compare(what: str, keys: set, described: dict | None):
        if described is None:
            out.append(f"{what}: not described")
            return
        out.extend(f"{what}.{k}: not described" for k in sorted(keys - set(described)))
        out.extend(f"{what}.{k}: described, but the schema does not take it" for k in sorted(set(described) - keys))

    for part, (req, opt) in _tables().items():
        compare(part, set(req) | set(opt), PARTS.get(part, (None, None, None))[2])
    for kind, (req, opt) in schema.TRAFFIC_KINDS.items():
        compare(f"traffic {kind}", set(req) | set(opt), TRAFFIC[kind][1] if kind in TRAFFIC else None)
    out += [f"traffic {k}: described, but the schema has no such kind" for k in TRAFFIC if k not in schema.TRAFFIC_KINDS]
    for kind, x in KINDS.items():   # an expectation kind's keys are its descriptions: only blanks to find
        out += [f"expect {kind}: not described"] if not x.what.strip() else []
        out += [f"expect {kind}.{k}: not described" for k, said in x.keys.items() if not said.strip()]
    return out


def _keys_table(req: set, keys: dict[str, str]) -> list[str]:
    rows = ["| key | required | meaning |", "|---|---|---|"]
    for k in sorted(keys, key=lambda k: (k not in req, list(keys).index(k))):
        rows.append(f"| `{k}` | {'yes' if k in req else ''} | {keys[k].replace('|', '/')} |")
    return rows


def render() -> str:
    """docs/scenarios.md."""
    tables = _tables()
    out = ["# Scenario files: the reference", "",
           "Made from the schema's own tables (`faultinj/scenario/schema.py`) and the expectation kinds' classes",
           "(`faultinj/scenario/expectations.py`) by `faultinj run --schema`;",
           "a test fails when they differ, or when the schema takes a key described nowhere here.",
           "Every mistake in a file is reported as `file:line:column: what is wrong`, all at once, before",
           "anything runs. An example:", "", "```yaml", schema.__doc__.split("```yaml", 1)[1].split("```", 1)[0].strip(),
           "```", ""]
    for part, (where, what, keys) in PARTS.items():
        out += [f"## {part} (`{where}`)", "", what, ""]
        out += _keys_table(set(tables[part][0]), keys) + [""]
    out += ["## traffic (`traffic[i]`)", "",
            "Each entry is `{name: NAME, KIND: {...}}` with exactly one kind; name defaults to KINDi.", ""]
    for kind, (what, keys) in TRAFFIC.items():
        out += [f"### `{kind}`", "", what, ""] + _keys_table(set(schema.TRAFFIC_KINDS[kind][0]), keys) + [""]
    out += ["## expectations (`expect[i]`)", "",
            "Each entry is `{KIND: {...}}` with one kind. Where a rate is judged, give `p` or `ratio`, not both.",
            ""]
    for kind, x in KINDS.items():
        out += [f"### `{kind}`", "", x.what, ""] + _keys_table(set(x.required), x.keys) + [""]
    words = ", ".join(f"`{w}`" for w in _WORDS)
    out += ["## packet predicates (`of`, `having`)", "",
            f"Words: {words}; comparisons `FIELD OP NUMBER` on {', '.join(f'`{f}`' for f in FIELDS)} "
            "(OP: `< <= > >= == !=`); joined with `and`, each negated with `not`, e.g. `tcp and data and not psh`.",
            ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
