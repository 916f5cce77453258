"""matchall + act_bpf through netlink (pyroute2): libbpf has no API for a BPF action. The other
attach kinds (tcx and XDP links, cls_bpf filters, XDP) go through libbpf: links.py. Also what
libbpf cannot list: the filters on a hook (priorities, emptiness of a clsact faultinj added).

Ownership: we create clsact only when absent and remove it only when we created it and nothing at
all is left on it; a matchall filter is removed only after checking it carries our name.
"""

from __future__ import annotations

import binascii   # base64's own core, without base64's module (a start-up's 0.3 ms)
import errno
import os
import struct

from ..errors import FaultinjError, KernelFeatureMissing, StateError
from . import netns as _netns
from ..errors import EnvironmentProblem
from .netns import entered

TC_PARENTS = {"tc-ingress": 0xFFFFFFF2, "tc-egress": 0xFFFFFFF3}
CLSACT_HANDLE = 0xFFFF0000
# Filters without an explicit priority get 0xC000 and below from the kernel;
# ours sit after them so that faults act closest to the wire, in the order
# they were applied.
FIRST_PRIO = 0xD000
ETH_P_ALL = 0x0003


def _nl_error(exc) -> tuple[int, str]:
    code = getattr(exc, "code", 0)
    text = str(exc.args[1]) if len(getattr(exc, "args", ())) > 1 else str(exc)
    return code, text


# ---- tc ----------------------------------------------------------------

def has_clsact(ipr, ifindex: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))


def filters(ipr, ifindex: int, hook: str) -> list:
    return [f for f in ipr.get_filters(index=ifindex, parent=TC_PARENTS[hook]) if f.get_attr("TCA_KIND")]


def filter_prio(msg) -> int:
    return (msg["info"] >> 16) & 0xFFFF


def filter_name(msg) -> str | None:
    opts = msg.get_attr("TCA_OPTIONS")
    if not opts:
        return None
    kind = msg.get_attr("TCA_KIND")
    if kind == "bpf":
        return opts.get_attr("TCA_BPF_NAME")
    if kind == "matchall":
        act = opts.get_attr("TCA_MATCHALL_ACT")
        if act:
            for a in act.get("attrs", []):
                aopts = a[1].get_attr("TCA_ACT_OPTIONS") if hasattr(a[1], "get_attr") else None
                if aopts is not None:
                    return aopts.get_attr("TCA_ACT_BPF_NAME")
    return None


def next_prio(ipr, ifindex: int, hook: str) -> int:
    used = [filter_prio(f) for f in filters(ipr, ifindex, hook)]
    mine = [p for p in used if p >= FIRST_PRIO]
    return max(mine) + 1 if mine else FIRST_PRIO


def free_prio(ipr, ifindex: int, hook: str, prio: int, ifname: str, netns_name: str | None = None) -> int:
    """The user's --prio, refused when a filter (ours or another tool's) holds it already."""
    held = [f for f in filters(ipr, ifindex, hook) if filter_prio(f) == prio]
    if held:
        name = next((n for n in map(filter_name, held) if n), None)
        kind = held[0].get_attr("TCA_KIND")
        who = (f"faultinj's {name.split(':')[1]}" if (name or "").startswith("faultinj:")
               else f"{kind} filter '{name}'" if name else f"a {kind} filter")
        raise StateError(f"prio {prio} on {ifname} {hook} is taken by {who}: choose another --prio "
                         f"(see '{_netns.command(netns_name, 'tc', 'filter', 'show', 'dev', ifname, hook.removeprefix('tc-'))}')")
    return prio


def matchall_attach(ipr, ifindex: int, hook: str, prog_fd: int, name: str, prio: int) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        # the action's default verdict is pipe, as iproute2's 'action bpf' (the seed article's
        # command): a program's "no verdict" ends classification here
        ipr.tc("add-filter", "matchall", index=ifindex, parent=TC_PARENTS[hook], prio=prio, handle=1,
               protocol=ETH_P_ALL, action={"kind": "bpf", "fd": prog_fd, "name": name, "action": "pipe"})
    except NetlinkError as exc:
        code, text = _nl_error(exc)
        if code in (errno.ENOENT, errno.EOPNOTSUPP):
            # a tc kind the kernel has no module for: ENOENT with extack text naming the classifier or action
            missing = ("cls_matchall (CONFIG_NET_CLS_MATCHALL)" if "classifier" in text.lower()
                       else "act_bpf (CONFIG_NET_ACT_BPF)")
            raise KernelFeatureMissing(
                f"--tc-mode matchall needs {missing}, which this kernel lacks ({text}); "
                "use the default --tc-mode cls_bpf"
            ) from None
        raise FaultinjError(f"adding the tc filter failed: {text}") from None


def tc_find(ipr, ifindex: int, hook: str, prio: int, name: str):
    for f in filters(ipr, ifindex, hook):
        if filter_prio(f) == prio and filter_name(f) == name:
            return f
    return None


def tc_detach(ipr, ifindex: int, hook: str, prio: int, name: str, mode: str) -> bool:
    """Delete our filter; False when no filter of that prio carries our name."""
    f = tc_find(ipr, ifindex, hook, prio, name)
    if f is None:
        return False
    ipr.tc("del-filter", "matchall" if mode == "matchall" else "bpf", index=ifindex, parent=TC_PARENTS[hook], prio=prio, handle=1,
           protocol=ETH_P_ALL)
    return True


def remove_clsact_if_empty(ipr, ifindex: int) -> bool:
    """Remove clsact when no filter at all is left on either hook."""
    if not has_clsact(ipr, ifindex):
        return False
    if filters(ipr, ifindex, "tc-ingress") or filters(ipr, ifindex, "tc-egress"):
        return False
    ipr.tc("del", "clsact", index=ifindex)
    return True


# ---- the root qdisc a time fault needs (fq: earliest departure time) ---------------------

TC_H_ROOT = 0xFFFFFFFF


def root_qdisc(ipr, ifindex: int) -> str | None:
    for q in ipr.get_qdiscs(index=ifindex):
        if q["parent"] == TC_H_ROOT:
            return q.get_attr("TCA_KIND")
    return None


def default_qdisc_kinds() -> set[str]:
    """Kinds the kernel gives a link by itself: replacing one of these takes nothing from anyone,
    and deleting ours brings it back."""
    kinds = {"noqueue", "pfifo_fast", "mq"}
    try:
        with open("/proc/sys/net/core/default_qdisc") as f:
            kinds.add(f.read().strip())
    except OSError:
        pass
    return kinds


def _tc(netns: str | None, *args: str):
    import subprocess

    if netns is None:
        cmd = ["tc", *args]
    elif "/" in netns:   # a namespace given by path (a container's)
        cmd = ["nsenter", f"--net={netns}", "tc", *args]
    else:
        cmd = ["tc", "-n", netns, *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise EnvironmentProblem("tc not found: install iproute2") from None


def add_root_fq(netns: str | None, ifname: str, replace: bool = False) -> None:
    """fq as the link's root qdisc (pyroute2 has no fq): it holds each packet until skb->tstamp.
    A large flow_limit: a held flow's packets wait in its queue, not dropped at fq's default 100.
    replace: in place of the root qdisc there (saved first with save_root_qdisc)."""
    proc = _tc(netns, "qdisc", "replace" if replace else "add", "dev", ifname, "root", "fq", "flow_limit", "10000",
               "limit", "100000")
    if proc.returncode != 0:
        text = proc.stderr.strip()
        if "unknown" in text.lower() or "not supported" in text.lower():
            raise KernelFeatureMissing(
                "time faults need the fq qdisc (CONFIG_NET_SCH_FQ) to hold packets until their departure time, "
                "which this kernel lacks; run them in a VM lab on a kernel that has it (see 'faultinj doctor "
                "--kernel linux-image-amd64')")
        raise FaultinjError(f"adding the fq qdisc on {ifname} failed: {text}")


def remove_root_fq(netns: str | None, ifname: str) -> None:
    proc = _tc(netns, "qdisc", "show", "dev", ifname, "root")
    if proc.returncode == 0 and proc.stdout.startswith("qdisc fq "):
        _tc(netns, "qdisc", "del", "dev", ifname, "root")


# ---- another tool's root qdisc, replaced with --replace: saved as the kernel dumps it, restored ----

RTM_NEWQDISC, RTM_GETQDISC, RTM_GETTCLASS = 36, 38, 42
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_CREATE, NLM_F_REPLACE = 1, 4, 0x300, 0x400, 0x100
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCA_KIND, TCA_OPTIONS, TCA_STAB = 1, 2, 8
TC_H_INGRESS = 0xFFFFFFF1
# classful qdiscs whose classes a user adds (tbf's or prio's classes come with the qdisc itself)
USER_CLASSES = {"htb", "hfsc", "drr", "qfq", "cbq", "ets"}
# root qdiscs whose dump the kernel takes back as they were (add with options, dump, replace,
# restore, dump: the same tc output; the first four on 6.18 here, all on Debian's 6.1 in a guest).
# Not htb (its dump reports its version where an add wants the major only), red and choke (their
# add needs a table the dump leaves out): EINVAL.
RESTORABLE = {"tbf", "pfifo", "bfifo", "pfifo_head_drop", "fq_codel", "sfq", "codel", "pie", "cake", "fq_pie",
              "prio", "netem", "sfb", "skbprio", "hhf", "cbs", "etf", "plug", "drr", "qfq"}
_TCMSG = struct.Struct("=BxxxiIII")     # family, ifindex, handle, parent, info
_NLMSG = struct.Struct("=IHHII")        # length, type, flags, seq, pid
_RTA = struct.Struct("=HH")


def _rtattrs(buf: bytes):
    while len(buf) >= 4:
        ln, kind = _RTA.unpack_from(buf)
        if ln < 4:
            return
        yield kind, buf[4:ln]
        buf = buf[(ln + 3) & ~3:]


def _rtattr(kind: int, data: bytes) -> bytes:
    return _RTA.pack(4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def _netlink(netns: str | None, msg_type: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
    """One request on a NETLINK_ROUTE socket in netns; the answers' (type, payload), or raises
    on an error answer (OSError with the kernel's errno)."""
    import socket   # here: only a time fault's qdisc asks, and socket costs ~2 ms of every start

    with entered(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        sock.send(_NLMSG.pack(_NLMSG.size + len(body), msg_type, flags, 1, 0) + body)
        out = []
        while True:
            data = sock.recv(1 << 16)
            while len(data) >= _NLMSG.size:
                ln, typ, _f, _seq, _pid = _NLMSG.unpack_from(data)
                payload = data[_NLMSG.size:ln]
                if typ == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", payload)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return out
                if typ == NLMSG_DONE:
                    return out
                out.append((typ, payload))
                data = data[(ln + 3) & ~3:]
            if not flags & NLM_F_DUMP and not flags & NLM_F_ACK:
                return out
    finally:
        sock.close()


def _dump(netns: str | None, msg_type: int, ifindex: int) -> list[tuple[int, int, dict]]:
    """(handle, parent, {attr kind: bytes}) of each qdisc or class on ifindex."""
    out = []
    for _typ, payload in _netlink(netns, msg_type, NLM_F_REQUEST | NLM_F_DUMP, _TCMSG.pack(0, ifindex, 0, 0, 0)):
        _fam, idx, handle, parent, _info = _TCMSG.unpack_from(payload)
        if idx == ifindex:
            out.append((handle, parent, dict(_rtattrs(payload[_TCMSG.size:]))))
    return out


def save_root_qdisc(netns: str | None, ifindex: int, ifname: str) -> dict:
    """Another tool's root qdisc exactly as the kernel dumps it (kind, handle, options, size table),
    to be put back by restore_root_qdisc. A root with classes or child qdiscs is refused: one
    message cannot put a tree back."""
    try:
        qdiscs = _dump(netns, RTM_GETQDISC, ifindex)
    except OSError as exc:
        raise StateError(f"cannot read {ifname}'s root qdisc to save it ({exc.strerror})") from None
    root = next(((h, a) for h, parent, a in qdiscs if parent == TC_H_ROOT), None)
    if root is None:
        raise StateError(f"{ifname} has no root qdisc to save")
    handle, attrs = root
    kind = attrs.get(TCA_KIND, b"").rstrip(b"\0").decode()
    if kind not in RESTORABLE:
        raise StateError(f"faultinj cannot put back a '{kind}' root qdisc exactly (it can: "
                         f"{', '.join(sorted(RESTORABLE))}), so it does not replace it even with --replace: "
                         f"remove it yourself ('{_netns.command(netns, 'tc', 'qdisc', 'del', 'dev', ifname, 'root')}') and add it again after 'faultinj clear'")
    children = [h for h, parent, _a in qdiscs if parent not in (TC_H_ROOT, TC_H_INGRESS) and
                parent >> 16 == handle >> 16 and h]
    try:
        classes = _dump(netns, RTM_GETTCLASS, ifindex) if kind in USER_CLASSES else []
    except OSError as exc:
        raise StateError(f"cannot read {ifname}'s classes ({exc.strerror})") from None
    if children or classes:
        raise StateError(f"{ifname}'s root qdisc '{kind}' has classes or qdiscs under it: faultinj restores only "
                         f"a classless root qdisc, so it does not replace this one even with --replace; remove it "
                         f"yourself ('{_netns.command(netns, 'tc', 'qdisc', 'del', 'dev', ifname, 'root')}') and put it back after 'faultinj clear'")
    return {"kind": kind, "handle": handle,
            "attrs": {str(k): binascii.b2a_base64(attrs[k], newline=False).decode() for k in (TCA_KIND, TCA_OPTIONS, TCA_STAB)
                      if k in attrs}}


def restore_root_qdisc(netns: str | None, ifindex: int, saved: dict) -> None:
    """Put back the root qdisc save_root_qdisc saved, in place of whatever root is there."""
    body = _TCMSG.pack(0, ifindex, saved["handle"], TC_H_ROOT, 0) + b"".join(
        _rtattr(int(k), binascii.a2b_base64(v)) for k, v in sorted(saved["attrs"].items(), key=lambda kv: int(kv[0])))
    _netlink(netns, RTM_NEWQDISC, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)
