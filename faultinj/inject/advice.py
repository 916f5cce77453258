"""Why a fault may act on nothing, said at `apply` and in `status` (issue 13, defects 9 and 10).

- Another tool's tc filter at a lower priority runs first: a verdict from it (TC_ACT_OK, SHOT,
  REDIRECT...) ends classification, and our filter never sees the packet.
- Offloads: at tc egress TCP hands over GSO super-packets (a PSH ratio counts skbs, not wire
  segments), and a veth with tx checksum offload on hands its peer packets whose checksum is left to
  the offload, which the peer trusts unchecked (corrupt's csum=bad is then delivered).

Each finding is one line that says what to do. Nothing here changes the kernel.
"""

from __future__ import annotations

from ..kernel import attach, links, netns
from . import state

# faults whose count is per TCP segment on the wire, which GSO super-packets at tc egress break
_PER_SEGMENT = ("psh-ratio", "first-psh")


def _describe(msg) -> str:
    kind = msg.get_attr("TCA_KIND")
    name = attach.filter_name(msg)
    return f"{kind} filter '{name}'" if name else f"{kind} filter (handle {msg['handle']:#x})"


def _ours(msg, prog_ids: set[int]) -> bool:
    """Our filter: by our name (matchall), by the program id libbpf writes into the names of the
    filters it attaches ('<program>:[<id>]'), or by the program id the dump carries."""
    name = attach.filter_name(msg) or ""
    if name.startswith("faultinj:") or links.prog_id_of_filter_name(name) in prog_ids:
        return True
    opts = msg.get_attr("TCA_OPTIONS")
    return bool(opts) and msg.get_attr("TCA_KIND") == "bpf" and opts.get_attr("TCA_BPF_ID") in prog_ids


def filters_before(filters: list, rec) -> list[tuple[str, int]]:
    """Another tool's filters that run before rec's on its hook: (description, prio), lowest first.
    filters: the hook's filter dump (each prio comes as a head without options, then its filters)."""
    if rec.hook == "xdp" or rec.tc_prio is None:
        return []
    by_prio: dict[int, list] = {}
    for f in filters:
        by_prio.setdefault(attach.filter_prio(f), []).append(f)
    ours = {r.prog_id for r in state.records() if r.prog_id}
    out = []
    for prio, group in sorted(by_prio.items()):
        named = [f for f in group if f.get_attr("TCA_OPTIONS")] or group
        if prio >= rec.tc_prio or any(_ours(f, ours) for f in named):
            continue
        out.append((_describe(named[0]), prio))
    return out


def _put_first(found: list[tuple[str, int]]) -> str:
    lowest = found[0][1]
    return f"--prio {lowest - 1} puts it first" if lowest > 1 else "nothing can run before prio 1"


def shadow_warnings(filters: list, rec) -> list[str]:
    """At apply: every foreign filter that runs first."""
    found = filters_before(filters, rec)
    return [f"{desc} at prio {prio} on {rec.ifname} {rec.hook} runs first: if it returns a verdict (TC_ACT_OK, "
            f"SHOT, REDIRECT), this fault sees no packets ({_put_first(found)})" for desc, prio in found]


def shadow_status(filters: list, rec, seen: int | None) -> list[str]:
    """In status: said when the fault has seen nothing and a foreign filter runs first."""
    found = filters_before(filters, rec)
    if seen or not found:
        return []
    desc, prio = found[0]
    return [f"sees no packets: {desc} at prio {prio} runs first (apply it again: {_put_first(found)})"]


def features(ns: str | None, ifname: str) -> dict[str, bool]:
    """The device's ethtool features (`ethtool -k`), read by ioctl inside its namespace; {} when unreadable."""
    from pyroute2.ethtool import Ethtool

    try:
        with netns.entered(ns):
            tool = Ethtool()
        try:
            return {k: bool(v.enable) for k, v in tool.get_features(ifname).features.items()}
        finally:
            tool.close()
    except Exception:   # a device without ethtool ops, or gone: nothing to say
        return {}


def offload_warnings(rec, feats: dict[str, bool], gso_max_segs: int | None, kind: str | None = None) -> list[str]:
    """Offloads that keep rec's fault from acting as its counters say."""
    out = []
    if rec.fault in _PER_SEGMENT and rec.hook == "tc-egress" and (gso_max_segs or 0) > 1:
        out.append(f"{rec.ifname} hands tc egress GSO super-packets (gso_max_segs {gso_max_segs}): {rec.fault} "
                   f"counts those, not wire segments; fix: "
                   f"'{netns.command(rec.netns, 'ip', 'link', 'set', rec.ifname, 'gso_max_segs', '1')}' "
                   f"(or '{netns.command(rec.netns, 'ethtool', '-K', rec.ifname, 'tso', 'off', 'gso', 'off')}')")
    csum_bad = rec.fault == "corrupt" and ["csum", "bad"] in [list(w) for w in rec.match]
    tx_csum = [k for k, on in feats.items() if on and k.startswith("tx-checksum")]
    if csum_bad and rec.hook == "tc-egress" and tx_csum and kind == "veth":
        # a NIC completes the checksum (wrong, as corrupt leaves it); a veth hands the skb over as it is
        out.append(f"{rec.ifname} is a veth with tx checksum offload on ({', '.join(sorted(tx_csum))}): csum=bad "
                   f"packets leave with their checksum left to the offload, which the peer trusts unchecked, so "
                   f"the corruption is delivered; fix: '{netns.command(rec.netns, 'ethtool', '-K', rec.ifname, 'tx', 'off')}' "
                   "(or corrupt at the "
                   "receiver's tc ingress)")
    return out


def _link(links: list, ifindex: int):
    return next((link for link in links if link["index"] == ifindex), None)


def _kind(link) -> str | None:
    info = link.get_attr("IFLA_LINKINFO") if link is not None else None
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def warnings(ipr, rec, seen: int | None = None, at_apply: bool = False) -> list[str]:
    """Every finding for rec: at apply (any foreign filter first), or in status (seen: its counter)."""
    out = []
    # only a tc filter has filters before it (a tcx link runs before every tc filter; no dump: no
    # netlink library loaded for status and apply)
    if rec.hook != "xdp" and rec.tc_prio is not None:
        filters = attach.filters(ipr, rec.ifindex, rec.hook)
        out += shadow_warnings(filters, rec) if at_apply else shadow_status(filters, rec, seen)
    if rec.hook == "tc-egress" and rec.fault in _PER_SEGMENT + ("corrupt",):
        link = _link(ipr.get_links(rec.ifindex), rec.ifindex)
        gso = link.get_attr("IFLA_GSO_MAX_SEGS") if link is not None else None
        out += offload_warnings(rec, features(rec.netns, rec.ifname) if rec.fault == "corrupt" else {}, gso,
                                _kind(link))
    return out
