"""Verified experiments: apply a fault in a lab, drive traffic, capture, judge.

Each returns an Outcome: a list of Checks (observed, expected, confidence
interval) plus the fault's counters; the demo prints them, the tests assert
on them, and scenarios (issue 3) will build on the same pieces.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from . import api, stats
from .inject import traffic
from .inject.capture import Capture
from .inject.lab import Lab
from .packets import TCP_FLAGS, parse
from .verdict import CONFIDENCE, Check, equal_check, ratio_check


@dataclass
class Outcome:
    experiment: str
    spec: str
    checks: list[Check] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    pcap: str | None = None
    facts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_json(self) -> dict:
        return {"experiment": self.experiment, "spec": self.spec, "ok": self.ok, "counters": self.counters,
                "pcap": self.pcap, "facts": self.facts, "checks": [c.to_json() for c in self.checks]}


def _counters(rec) -> dict[str, int]:
    for st in api.status(netns_name=rec.netns, all_namespaces=False):
        if st.record.id == rec.id:
            return st.counters or {}
    return {}


def _save(cap: Capture, pcap_dir: str | None, name: str) -> str | None:
    if not pcap_dir:
        return None
    os.makedirs(pcap_dir, exist_ok=True)
    path = os.path.join(pcap_dir, f"{name}.pcap")
    cap.save_pcap(path)
    return path


def ttl_pong(lab: Lab, count: int = 2000, seed: int | None = None, v6: bool = False,
             pcap_dir: str | None = None) -> Outcome:
    """XDP on A's link mangles the echo replies A receives: TTLs spread uniformly over 1..64."""
    rec = api.apply("ttl-pong@xdp", lab.a.ifname, netns_name=lab.a.netns, seed=seed)
    try:
        with Capture(lab.a.netns, lab.a.ifname, direction="in") as cap:
            res = traffic.ping(lab.a.netns, lab.b.ip6 if v6 else lab.b.ip4, count, interval=0.001)
        counters = _counters(rec)
    finally:
        api.clear(fault_id=rec.id)
    reply = 129 if v6 else 0
    pongs = [p for p in (parse(f.data, f.length) for f in cap.frames) if p.icmp_type == reply]
    ttls = Counter(p.ttl for p in pongs)
    chi, df, pval = stats.chi2_uniform([ttls.get(t, 0) for t in range(1, 65)])
    out = Outcome("ttl-pong", rec.spec, counters=counters, pcap=_save(cap, pcap_dir, "ttl-pong"),
                  facts={"seed": rec.seed, "replies": len(pongs), "distinct_ttls": len(ttls),
                         "capture_drops": cap.kernel_drops})
    out.checks = [
        equal_check("every ping answered", res.received, count),
        equal_check("echo replies captured", len(pongs), count),
        Check("TTLs within 1..64", all(1 <= t <= 64 for t in ttls), f"{min(ttls, default=0)}..{max(ttls, default=0)}",
              "1..64"),
        Check("TTLs uniform over 1..64 (chi-square)", pval > 1 - CONFIDENCE,
              f"chi2={chi:.1f} df={df} p={pval:.3g}", f"p > {1 - CONFIDENCE:.3g}"),
        equal_check("IPv4 header checksums valid", sum(1 for p in pongs if p.ip_csum_ok is False), 0)
        if not v6 else equal_check("ICMPv6 checksums valid", sum(1 for p in pongs if p.l4_csum_ok is False), 0),
        equal_check("counters: acted = replies", counters.get("acted"), count),
    ]
    return out


def psh_ratio(lab: Lab, ratio: int = 10, nbytes: int = 20_000_000, seed: int | None = None,
              pcap_dir: str | None = None) -> Outcome:
    """tc egress on A sets PSH on 1 in `ratio` data segments; judged at B's capture.

    The lab's A link must have gso_max_segs 1 (one skb at the hook = one
    segment on the wire) and tx checksum offload off (full checksums on the
    wire, so the capture can check them)."""
    rec = api.apply(f"psh-ratio={ratio}", lab.a.ifname, netns_name=lab.a.netns, seed=seed)
    try:
        csum_before = traffic.snmp(lab.b.netns)["Tcp"].get("InCsumErrors", 0)
        with Capture(lab.b.netns, lab.b.ifname, snaplen=2048, direction="in") as cap:
            res = traffic.tcp_transfer(lab.a.netns, lab.b.netns, lab.b.ip4, nbytes, seed=seed or 1)
        csum_errors = traffic.snmp(lab.b.netns)["Tcp"].get("InCsumErrors", 0) - csum_before
        counters = _counters(rec)
    finally:
        api.clear(fault_id=rec.id)
    data = [p for p in (parse(f.data, f.length) for f in cap.frames) if p.proto == 6 and p.payload_len]
    psh = sum(1 for p in data if p.tcp_flags & TCP_FLAGS["P"])
    matched, acted = counters.get("matched", 0), counters.get("acted", 0)
    natural = len(data) - matched  # data segments that already had PSH (not eligible)
    out = Outcome("psh-ratio", rec.spec, counters=counters, pcap=_save(cap, pcap_dir, "psh-ratio"),
                  facts={"seed": rec.seed, "data_segments": len(data), "psh_segments": psh,
                         "natural_psh": natural, "capture_drops": cap.kernel_drops,
                         "transfer_s": round(res.seconds, 3)})
    out.checks = [
        Check("TCP data intact", res.intact, f"{res.received} bytes", f"{res.sent} bytes, same SHA-256"),
        ratio_check(f"PSH on eligible segments (1/{ratio})", acted, matched, 1 / ratio),
        equal_check("PSH at receiver = natural + injected", psh, natural + acted),
        equal_check("bad TCP checksums in capture", sum(1 for p in data if p.l4_csum_ok is False), 0),
        equal_check("receiver TcpInCsumErrors", csum_errors, 0),
        equal_check("capture lost nothing", cap.kernel_drops, 0),
    ]
    return out


def drop(lab: Lab, probability: float = 0.05, count: int = 20000, seed: int | None = None,
         hook: str = "egress", pcap_dir: str | None = None) -> Outcome:
    """A numbered UDP stream from A to B with drop=P on A's egress (or B's ingress / XDP)."""
    host = lab.a if hook == "egress" else lab.b
    dport = 5300
    # the filter keeps the fault on the stream alone (no stray IPv6 MLD/RS packets in the counts)
    rec = api.apply(f"drop={probability},proto=udp,dport={dport}@{hook}", host.ifname, netns_name=host.netns,
                    seed=seed)
    try:
        with Capture(lab.b.netns, lab.b.ifname, direction="in") as cap:
            res = traffic.udp_stream(lab.a.netns, lab.b.netns, lab.b.ip4, count, dport=dport)
        counters = _counters(rec)
    finally:
        api.clear(fault_id=rec.id)
    lost = count - len(res.received)
    out = Outcome("drop", rec.spec, counters=counters, pcap=_save(cap, pcap_dir, "drop"),
                  facts={"seed": rec.seed, "sent": count, "received": len(res.received),
                         "capture_drops": cap.kernel_drops})
    out.checks = [
        ratio_check(f"loss fraction ({probability})", lost, count, probability),
        equal_check("counters: acted = lost datagrams", counters.get("acted"), lost),
        equal_check("counters: matched = sent", counters.get("matched"), count),
    ]
    out.facts["lost"] = sorted(set(range(count)) - res.received)
    return out


def traced_drop(lab: Lab, pings: int = 3, seed: int | None = None) -> Outcome:
    """drop=100% of B's echo replies at B's tc egress; the tracer follows the pings: each request
    crosses A -> B, each reply dies at B's egress, labelled with the fault (from its journal)."""
    from .faults.match import parse_match
    from .inject.trace import Tracer

    rec = api.apply("drop=100%,proto=icmp", lab.b.ifname, netns_name=lab.b.netns, seed=seed)
    try:
        with Tracer(parse_match(["proto=icmp"])) as tracer:
            traffic.ping(lab.a.netns, lab.b.ip4, pings, interval=0.05, timeout=1.0)
            lab_addrs = {lab.a.ip4, lab.b.ip4}   # the tracer sees every namespace: keep this lab's
            hops = [h for h in tracer.read(300) if {h.key[0], h.key[1]} <= lab_addrs]
        counters = _counters(rec)
    finally:
        api.clear(fault_id=rec.id)
    a, b = f"{lab.a.netns}/{lab.a.ifname}", f"{lab.b.netns}/{lab.b.ifname}"
    path = " → ".join(f"{h.netns_name}/{h.ifname} {h.direction}" for h in hops)
    journey = " → ".join([f"{a} out", f"{b} in", f"{b} DROP"] * pings)
    labelled = [h for h in hops if h.direction == "DROP" and h.reason == "faultinj" and rec.id in h.fault]
    out = Outcome("traced-drop", rec.spec, counters=counters,
                  facts={"hops": [str(h) for h in hops], "seed": rec.seed})
    out.checks = [
        Check(f"trace: each of {pings} pings goes A out, B in, then its reply is dropped at B", path == journey,
              f"{len(hops)} hops" + ("" if path == journey else f": {path}"), f"{3 * pings} hops in that order"),
        equal_check("trace: drops labelled with the fault (journal)", len(labelled), pings),
        equal_check("counters: acted = replies", counters.get("acted"), pings),
    ]
    return out
