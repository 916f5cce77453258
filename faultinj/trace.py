"""`faultinj trace`: where a packet went, and where it died.

BTF raw tracepoints (bpf/trace.bpf.c; no kprobes, no tracefs, no kernel
headers) report each hop: the device leaving (net_dev_queue) or receiving
(netif_rx, netif_receive_skb, napi_gro_receive) a packet, and kfree_skb with
the kernel's drop reason, named from the running kernel's BTF. The filter is
a fault filter (faults/match.py), evaluated in the kernel. Faults' journal
events are merged in, so a hop where faultinj acted says which fault did —
including drops, which faultinj makes with TC_ACT_STOLEN or XDP_DROP and the
kernel does not report through kfree_skb (on a tcx link a drop is a redirect to no
device, which kfree_skb does report: that report is folded into the fault's drop). The journal is a log nobody
consumes, so the tracer sees every action whoever else reads it; while the
tracer runs it holds a lease (fi_watch) that makes a journal=off fault log
its actions for tracers only.

Cost: events go on the ring without waking the reader, which reads every
10 ms, in bulk, through the ring's mapped pages; a batch is viewed as one
numpy array of records, a Hop made only when the batch is looked at (Hops),
and a frame parsed only when a hop's key or summary is asked for. --stats
counts in the kernel instead (no event). The filter may be several (a
pcap-filter expression, faults/pcap_filter.py): a packet passing any is
traced. Where the openvswitch module is loaded, its datapath's upcalls and
actions are hops too (bpf/trace_ovs.bpf.c).
"""

from __future__ import annotations

import errno
import gc
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Sequence
from operator import attrgetter, itemgetter

from . import layouts
from .errors import BuildError, KernelFeatureMissing, SpecError
from .faults.match import NO_MATCH, Match, parse_match
from .faults.pcap_filter import compile_filter
from .journal import clock, wall_clock, wall_time
from .packets import address, parse, protocol_name
from .values import parse_duration
from .kernel import build, caps, layout, libbpf
from .inject import state
from .inject.journal import JournalReader
from .kernel.netns import inode

BTF_PATH = "/sys/kernel/btf/vmlinux"
# struct fi_trace_event and fi_trace_count_key, as the BTF says (faultinj/layouts.py). The readers
# below unpack them by position, fastest: the member order they expect is checked here, so a field
# added in C stops the import with its name instead of shifting every hop's fields.
EVENT, _EVENT_FIELDS = layouts.record("fi_trace_event")
COUNT_KEY, _COUNT_KEY_FIELDS = layouts.record("fi_trace_count_key")
for _got, _want in ((_EVENT_FIELDS, ("ts_ns", "skb", "head", "func", "netns", "ifindex", "len", "reason", "sock",
                                     "snap", "hop", "flags", "ifname", "frame")),
                    (_COUNT_KEY_FIELDS, ("netns", "reason", "hop", "flags", "sock_family", "sock_type", "ifname"))):
    if _got != _want:
        raise BuildError(f"the tracer's records changed in C: members {_got}, trace.py unpacks {_want}")
# a ring record: its header (u32 length, u32 page offset), then the event, padded to 8 bytes
RECORD = struct.Struct("<II" + EVENT.format.lstrip("<") + f"{-EVENT.size % 8}x")
_FRAME_AT = 8 + layouts.offset("fi_trace_event", "frame")   # a record's frame, from the record's start
_NUMPY = {"u8": "u1", "u16": "<u2", "u32": "<u4", "u64": "<u8", "s8": "i1", "s16": "<i2", "s32": "<i4",
          "s64": "<i8"}


def record_dtype(name: str = "fi_trace_event", header: int = 8, itemsize: int = RECORD.size):
    """The ring's records as a numpy structured dtype, from the same layout the struct readers use
    (faultinj/layouts.py): the members at their offsets past the ring's header, the record's size
    with its padding; char arrays as bytes (S: trailing NULs off), other arrays as arrays."""
    import numpy as np

    names, formats, offsets = [], [], []
    for member, off, ctype in layouts.members(name):
        if member.startswith("pad"):
            continue
        base, _, n = ctype.partition("[")
        names.append(member)
        formats.append(f"S{n.rstrip(']')}" if base == "char" and n else
                       (_NUMPY[base], (int(n.rstrip("]")),)) if n else _NUMPY[ctype])
        offsets.append(header + off)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


_MODE, _HOP = layouts.enum("fi_trace_mode"), layouts.enum("fi_hop")
MODE_EVENTS, MODE_COUNT = _MODE["FI_TRACE_EVENTS"], _MODE["FI_TRACE_COUNT"]
READ_BATCH = 256 << 10               # read() returns early once this much waits on the ring
# enum fi_hop: where a hop was seen -> its direction and the kernel's point
_HOP_SHOWN = {"QUEUE": ("out", "net_dev_queue"), "RX": ("in", "netif_rx"), "RECEIVE": ("in", "netif_receive_skb"),
              "GRO": ("in", "napi_gro_receive"), "DROP": ("DROP", "kfree_skb"), "OVS_UPCALL": ("ovs", "upcall"),
              "OVS_EXEC": ("ovs", "exec")}
HOPS = {_HOP[f"FI_HOP_{n}"]: d for n, (d, _) in _HOP_SHOWN.items()}
HOP_POINTS = {_HOP[f"FI_HOP_{n}"]: p for n, (_, p) in _HOP_SHOWN.items()}
HOP_OVS_UPCALL, HOP_OVS_EXEC = _HOP["FI_HOP_OVS_UPCALL"], _HOP["FI_HOP_OVS_EXEC"]   # OVS's kernel datapath
OVS_BTF = "/sys/kernel/btf/openvswitch"  # the module's BTF: there when the kernel datapath is loaded
FOLD_NS = 1_000_000                  # a fault's drop and the kernel's free of that packet: within 1 ms
HOP_FUNC = _HOP["FI_HOP_FUNC"]       # trace --functions: a kernel function took the skb
MAX_FUNCTIONS = 64                   # --functions attaches one fentry program per function: bounded
# the maps the function programs (bpf/trace_func.bpf.c) share with the tracepoints' object
SHARED_MAPS = ("fi_trace_config", "fi_trace_events", "fi_trace_lost", "fi_trace_delivered", "fi_trace_shared",
               "fi_trace_counts")
FI_HOP_DROP = _HOP["FI_HOP_DROP"]
HOP_DELIVERED = _HOP["FI_HOP_DELIVERED"]   # a socket read a copy of a frame freed while shared
DROP_DELIVERED, DROP_SHARED = (layouts.enum("fi_drop_flag")[f"FI_DROP_{n}"] for n in ("DELIVERED", "SHARED"))
# How long a free whose data another skb still held waits for that copy's fate (read by a socket:
# a delivery; else a drop), counted from when this reader got the free (a tracer that reads late
# must not give up on a copy at once). ping and OVS read their copies within microseconds on a
# quiet machine; on a loaded one a reader may be scheduled hundreds of ms later (issue 25 item 8:
# with 200 ms counted from the kernel's stamp, ping's replies were shown as drops). A copy read
# through a mapped ring (tcpdump's TPACKET) is never read by recvmsg: its free waits out the grace.
SHARED_GRACE_NS = 2_000_000_000
IN_GUEST = "FAULTINJ_LAB_IN_GUEST"      # scenario/inguest.py sets it in the guest's run
WATCH_LEASE_NS = 3_000_000_000       # fi_watch: renewed every second while the tracer runs
AF_INET, AF_INET6, AF_PACKET, SOCK_DGRAM, SOCK_RAW = 2, 10, 17, 2, 3


def btf_path() -> str:
    return os.environ.get("FAULTINJ_BTF", BTF_PATH)


def check_btf() -> str:
    path = btf_path()
    if not os.path.isfile(path):
        raise KernelFeatureMissing(f"kernel BTF not found at {path}: the tracer needs a kernel built with "
                                   "CONFIG_DEBUG_INFO_BTF=y (BTF raw tracepoints, CO-RE)")
    return path


def drop_reasons(path: str | None = None) -> dict[int, str]:
    """enum skb_drop_reason of the running kernel, prefixes off: {2: 'NOT_SPECIFIED', ...}; with
    the openvswitch module loaded, its own (enum ovs_drop_reason, 6.4 and later: 'OVS_DROP_...')."""
    path = path or check_btf()
    names = libbpf.btf_enum(path, "skb_drop_reason")
    out = {v: n.removeprefix("SKB_DROP_REASON_").removeprefix("SKB_") for v, n in names.items()}
    if os.path.isfile(OVS_BTF):
        out.update(libbpf.btf_enum(OVS_BTF, "ovs_drop_reason", base=path))
    return out


def ovs_actions(path: str | None = None) -> dict[int, str]:
    """enum ovs_action_attr of the loaded openvswitch module: {1: 'output', 2: 'userspace', ...}."""
    names = libbpf.btf_enum(OVS_BTF, "ovs_action_attr", base=path or check_btf())
    return {v: n.removeprefix("OVS_ACTION_ATTR_").lower() for v, n in names.items()}


def root_label() -> str:
    """What the namespace faultinj runs in is called in hops: 'host', or, in a lab made inside a
    guest (lab.guest), the guest's name (its hostname): its root namespace is not this machine's."""
    if os.environ.get(IN_GUEST):
        return f"guest {socket.gethostname()}"
    return "host"


def netns_names() -> dict[int, str]:
    """Namespace inode -> name: the named ones (/run/netns), 'host' (the one faultinj runs in: the
    guest's name in a guest, root_label) and 'init' (pid 1's, where that is another: faultinj in a
    container)."""
    out = {}
    for path, name in (("/proc/1/ns/net", "init"), ("/proc/self/ns/net", root_label())):
        try:
            out[os.stat(path).st_ino] = name
        except OSError:
            pass
    try:
        for name in os.listdir("/run/netns"):
            try:
                out[os.stat(f"/run/netns/{name}").st_ino] = name
            except OSError:
                continue
    except OSError:
        pass
    return out


@dataclass(slots=True)
class Hop:
    ts_ns: int
    netns: int
    netns_name: str
    ifname: str
    direction: str          # out | in | DROP | ACT | done (freed after delivery to a socket: not a loss)
    point: str              # the tracepoint, or the fault's hook
    length: int
    frame: bytes            # from the Ethernet header, at most 128 bytes
    reason: str = ""        # DROP: the kernel's drop reason, or "faultinj"
    fault: str = ""         # a faultinj fault acted here: its id and spec
    delivered: str = ""     # done: the socket that had read the frame (raw socket, packet socket, ...)
    since_ns: int = 0       # fn: time since this packet's previous hop
    # ts_ns on the wall clock of the machine that traced it (a guest's, in a lab.guest run: its
    # monotonic clock means nothing here); 0: this machine's, converted when shown
    wall_ns: int = 0
    head: int = 0           # the data's address (clones share it; reused once the data is freed)
    # the packet (packets.Packet.journal_key) and its one-line description: from the frame when
    # first asked for (a tracer reading every packet decodes only what its user looks at)
    _key: tuple | None = None
    _summary: str | None = None

    def _decode(self) -> None:
        # a packet's hops mostly carry the same bytes (a bridge, a veth pair): parsed once
        got = _SUMMARIES.get((self.frame, self.length))
        if got is None:
            if len(_SUMMARIES) >= 4096:
                _SUMMARIES.clear()
            got = _SUMMARIES[(self.frame, self.length)] = summarise(self.frame, self.length)
        self._key, self._summary = got

    @property
    def key(self) -> tuple:
        if self._key is None:
            self._decode()
        return self._key

    @property
    def summary(self) -> str:
        if self._summary is None:
            self._decode()
        return self._summary

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("ts_ns", "netns", "netns_name", "ifname", "direction", "point",
                                           "length", "reason", "fault", "delivered", "since_ns", "summary")}
        d["time"] = self.wall_ns / 1e9 if self.wall_ns else wall_time(self.ts_ns)
        d["key"] = list(self.key)
        return d

    def clock(self) -> str:
        """HH:MM:SS.microseconds on the clock of the machine that traced it."""
        return clock(self.ts_ns) if not self.wall_ns else wall_clock(self.wall_ns)

    def __str__(self) -> str:
        summary = self._summary if self._summary is not None else self.summary
        stamp = wall_clock(self.wall_ns) if self.wall_ns else clock(self.ts_ns)
        if not (self.reason or self.delivered or self.fault) and self.direction in _PLAIN:   # most hops
            where = (self.netns, self.netns_name, self.ifname, self.direction)
            prefix = _PREFIXES.get(where)
            if prefix is None:
                if len(_PREFIXES) > 4096:
                    _PREFIXES.clear()
                prefix = _PREFIXES[where] = (f" [{self.netns:>10}] {self.netns_name:<16} {self.ifname:<14} "
                                             f"{self.direction:<4} ")
            return stamp + prefix + summary
        tail = f" reason={self.reason}" if self.reason else ""
        tail += f", after delivery to a {self.delivered}" if self.delivered else ""
        tail += f"  (faultinj {self.fault})" if self.fault else ""
        if self.direction == "ovs":   # Open vSwitch's kernel datapath: an upcall, or an action it executed
            return (f"{stamp} [{self.netns:>10}] {self.netns_name:<16} {self.ifname:<14} ovs  "
                    f"{self.point:<16} {summary}{tail}")
        if self.direction == "fn":
            return (f"{stamp} [{self.netns:>10}] {self.netns_name:<16} {self.ifname:<14} fn   "
                    f"{self.point:<28} +{self.since_ns / 1000:7.1f}us {summary}")
        return (f"{stamp} [{self.netns:>10}] {self.netns_name:<16} {self.ifname:<14} "
                f"{self.direction:<4} {summary}{tail}")


def skb_functions(pattern: str, limit: int = MAX_FUNCTIONS) -> dict[str, int]:
    """The kernel functions whose name matches the regular expression and that take an sk_buff
    among their first five arguments (from the running kernel's BTF, as pwru finds them):
    {name: the skb's argument index}. More than limit is refused (one fentry program each)."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise SpecError(f"--functions {pattern!r}: not a regular expression ({exc})") from None
    found = {n: i for n, i in libbpf.btf_functions_taking(check_btf(), "sk_buff").items() if rx.search(n)}
    if not found:
        raise SpecError(f"--functions {pattern!r}: no kernel function taking an sk_buff matches")
    if len(found) > limit:
        raise SpecError(f"--functions {pattern!r}: {len(found)} functions match, more than {limit} "
                        "(one fentry program each): narrow the pattern or raise --max-functions")
    return found


_BY_TIME = attrgetter("ts_ns")
_PREFIXES: dict = {}   # (netns, its name, device, direction) -> that part of Hop.__str__'s line
_PLAIN = ("out", "in", "DROP", "ACT", "DUP", "done")   # Hop.__str__'s common line (not ovs, fn)
_SUMMARIES: dict = {}   # (frame, length) -> summarise(): the last few thousand packets'


_FLAGS = ["".join(c for c, b in zip("FSRPAUEC", range(8)) if f & (1 << b)) for f in range(256)]
_IP4 = struct.Struct("!12xHBBHHHxBxx4s4s")   # ethertype; IPv4: version+ihl, tos, tot_len, id, frag, proto, saddr, daddr
_IP6 = struct.Struct("!12xH4xHBx16s16s")      # ethertype; IPv6: payload length, next header, saddr, daddr
_PORTS_SEQ = struct.Struct("!HHI")
_PORTS = struct.Struct("!HH")


def _summarise_fast(frame: bytes, wire_len: int):
    """summarise() for the common frames (untagged IPv4 unfragmented, or IPv6 without extension
    headers; TCP, UDP, ICMP/ICMPv6 with the whole L4 header in the snap), a few unpacks instead of
    packets.parse: most of the tracer's cost per printed hop. None: not one of those (summarise
    falls back to parse; a test holds the two to the same result)."""
    n = len(frame)
    if n < 42:   # Ethernet + IPv4 + 8 bytes: no frame with less is one of these
        return None
    if frame[12] == 8 and frame[13] == 0:
        etype, vihl, _tos, tot, ip_id, frag, proto, src, dst = _IP4.unpack_from(frame)
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20 or frag & 0x1FFF:
            return None
        l4 = 14 + ihl
        l4_len = tot - ihl if tot else wire_len - l4
    elif frame[12] == 0x86 and frame[13] == 0xDD and n >= 62:
        etype, plen, proto, src, dst = _IP6.unpack_from(frame)
        if frame[14] >> 4 != 6 or proto in (0, 43, 60, 44, 51):
            return None
        l4, ip_id = 54, 0
        l4_len = plen if plen else wire_len - l4
    else:
        return None
    if proto == 6:
        if l4_len < 20 or n < l4 + 20:
            return None
        sport, dport, seq = _PORTS_SEQ.unpack_from(frame, l4)
        s, d = address(src), address(dst)
        return ((s, d, 6, sport, dport, ip_id, seq),
                f"tcp {s}:{sport} -> {d}:{dport} [{_FLAGS[frame[l4 + 13]]}] seq={seq} "
                f"len={l4_len - (frame[l4 + 12] >> 4) * 4}")
    if l4_len < 8 or n < l4 + 8:
        return None
    if proto == 17:
        sport, dport = _PORTS.unpack_from(frame, l4)
        s, d = address(src), address(dst)
        return (s, d, 17, sport, dport, ip_id, 0), f"udp {s}:{sport} -> {d}:{dport} id={ip_id} len={l4_len - 8}"
    if proto in (1, 58) and frame[l4] in (0, 8, 128, 129):
        echo_id, echo_seq = _PORTS.unpack_from(frame, l4 + 4)
        s, d = address(src), address(dst)
        kind = "request" if frame[l4] in (8, 128) else "reply"
        return (s, d, proto, echo_id, 0, ip_id, echo_seq), f"{kind} #{echo_id}.{echo_seq} {s} -> {d}"
    return None


def summarise(frame: bytes, wire_len: int) -> tuple[tuple, str]:
    """(the packet's key, 'request #4211.1 10.0.0.1 -> 10.0.0.2') from the frame's first bytes."""
    got = _summarise_fast(frame, wire_len)
    return got if got is not None else _summarise_parsed(frame, wire_len)


def _summarise_parsed(frame: bytes, wire_len: int) -> tuple[tuple, str]:
    """summarise() through packets.parse: every frame (VLAN tags, IPv6 extension headers,
    fragments, frames cut short, not IP)."""
    p = parse(frame, wire_len, checksums=False)
    key = p.journal_key()
    src, dst = key[0], key[1]
    if p.proto in (1, 58) and p.icmp_type in (0, 8, 128, 129):
        kind = "request" if p.icmp_type in (8, 128) else "reply"
        return key, f"{kind} #{p.echo_id}.{p.echo_seq} {src} -> {dst}"
    if p.proto == 6 and p.tcp_flags is not None:
        flags = "".join(c for c, b in zip("FSRPAUEC", range(8)) if p.tcp_flags & (1 << b))
        return key, f"tcp {src}:{p.sport} -> {dst}:{p.dport} [{flags}] seq={p.seq} len={p.payload_len}"
    if p.proto == 17 and p.sport is not None:
        return key, f"udp {src}:{p.sport} -> {dst}:{p.dport} id={p.ip_id} len={p.payload_len}"
    if p.version:
        return key, f"{protocol_name(p.proto)} {src} -> {dst}"
    # not IP (ARP, LLDP): the frame itself names the packet (every non-IP frame one packet otherwise)
    return ("frame", frame[:64].hex()), f"{len(frame)} bytes, not IP"


@dataclass
class Tracer:
    """Trace packets that pass `match`, until closed. read() returns hops in time order."""

    match: Match | tuple = NO_MATCH                 # a filter, or several (a packet passing any is traced)
    with_faults: bool = True
    functions: dict = field(default_factory=dict)   # kernel function -> the skb's argument index (fentry)
    _obj: object = None
    _rings: object = None
    _journal: object = None
    _reasons: dict = field(default_factory=dict)
    _names: dict = field(default_factory=dict)
    _fault_at: dict = field(default_factory=dict)   # fault id -> (netns name, netns inode, interface)
    _held: dict = field(default_factory=dict)       # data address -> a free waiting for its copy's fate
    _watched_at: int = 0
    _fn_progs: list = field(default_factory=list)
    _fn_names: dict = field(default_factory=dict)   # function address -> name
    _last_ts: dict = field(default_factory=dict)    # packet key -> its latest hop's stamp
    _fault_drops: dict = field(default_factory=dict)   # (packet key, netns, ifname) -> a fault dropped it then
    count_only: bool = False                        # trace --stats: hops counted in the kernel, no events
    refused_functions: list = field(default_factory=list)   # --functions the kernel would not trace
    _ifnames: dict = field(default_factory=dict)    # the kernel's ifname bytes -> str
    _ovs: object = None                             # bpf/trace_ovs.bpf.c, where openvswitch.ko is loaded
    _ovs_actions: dict = field(default_factory=dict)
    _unnamed: dict = field(default_factory=dict)    # namespace inode without a name -> last looked for
    _dtype: object = None                           # record_dtype(), made at the first read
    # CLOCK_MONOTONIC (the programs' stamps) -> the wall clock, on this machine: each hop carries its
    # wall time, so that hops traced in a guest read on the guest's clock wherever they are shown
    _to_wall: int = 0

    def start(self) -> "Tracer":
        path = check_btf()
        self._to_wall = time.time_ns() - time.monotonic_ns()
        self._reasons = drop_reasons(path)
        self._names = netns_names()
        obj_path = build.compile_program("trace", "trace")
        try:
            self._obj = libbpf.TracingObject(str(obj_path), SHARED_MAPS)
            # struct fi_trace_config: the mode, the filters (an 'or' of up to layout.TRACE_SLOTS)
            slots = self.filters()
            cfg = layout.FiTraceConfig(active=0, slots=len(slots))   # FI_TRACE_OFF until all is attached
            for i, m in enumerate(slots):
                cfg.match[i] = layout.match_struct(m)
            libbpf.map_update(self._obj.map_fds["fi_trace_config"], b"\0\0\0\0", bytes(cfg))
            self._rings = libbpf.RingReader(self._obj.map_fds["fi_trace_events"])
            self._obj.attach()
            if os.path.isfile(OVS_BTF):   # the kernel datapath is here: its upcalls and actions too
                self._ovs_actions = ovs_actions(path)
                self._ovs = libbpf.TracingObject(str(build.compile_program("trace_ovs", "trace")), (),
                                                 {m: self._obj.map_fds[m] for m in SHARED_MAPS})
                self._ovs.attach()
            if self.functions:
                self._attach_functions()
            if self.with_faults:
                # from now on, journal=off events too; it skips custom programs (no journal)
                self._journal = JournalReader(state.records(), from_start=False, everything=True)
                self._watch()
                for r in self._journal.records:   # where each fault is, looked up once
                    self._fault_at[r.id] = (r.target or r.netns or root_label(), self._ns_inum(r.netns), r.ifname)
            # every program is attached (fentry on many functions takes seconds in a slow guest), the
            # journals read from here: only now do the programs trace, so that no packet is seen by
            # some of them and not by the others
            cfg.active = MODE_COUNT if self.count_only else MODE_EVENTS
            libbpf.map_update(self._obj.map_fds["fi_trace_config"], b"\0\0\0\0", bytes(cfg))
        except BaseException:
            self.close()
            raise
        return self

    def filters(self) -> tuple[Match, ...]:
        return self.match if isinstance(self.match, tuple) else (self.match,)

    def _attach_functions(self) -> None:
        path = str(build.compile_program("trace_func", "trace"))
        reuse = {m: self._obj.map_fds[m] for m in SHARED_MAPS}
        wanted = set(self.functions)
        refused = []
        for name, arg in sorted(self.functions.items()):
            try:
                self._fn_progs.append(libbpf.FunctionProgram(path, f"fi_fn_skb{arg}", name, reuse))
            except libbpf.FunctionRefused as exc:
                if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, 524) and not self._fn_progs:   # 524: ENOTSUPP
                    raise KernelFeatureMissing(
                        f"this kernel refuses fentry programs ({os.strerror(exc.errno)} on {name}) and "
                        "faultinj has no kprobe path: --functions cannot run here (the hop tracer still can)"
                    ) from None
                refused.append(name)   # not traceable (inlined, notrace): left out
        if not self._fn_progs:
            raise KernelFeatureMissing(f"no function of {len(wanted)} could be traced (fentry refused all: "
                                       f"{', '.join(refused[:5])}...)")
        self.refused_functions = refused
        with open("/proc/kallsyms") as f:
            for line in f:
                addr, _, name = line.split()[:3]
                if name in wanted:
                    self._fn_names[int(addr, 16)] = name

    def _watch(self) -> None:
        """Renew the lease that makes each fault log its actions for tracers (journal=off too)."""
        now = time.monotonic_ns()
        if now - self._watched_at < 1_000_000_000:
            return
        self._watched_at = now
        until = struct.pack("<Q", now + WATCH_LEASE_NS)
        for r in self._journal.records:
            try:
                fd = libbpf.obj_get(f"{r.pin_dir}/fi_watch")
            except Exception:
                continue   # cleared meanwhile
            try:
                libbpf.map_update(fd, b"\0\0\0\0", until)
            finally:
                os.close(fd)

    def _ns_name(self, inum: int) -> str:
        name = self._names.get(inum)
        if name is None:
            now = time.monotonic_ns()
            if now - self._unnamed.get(inum, 0) > 1_000_000_000:   # not named (a container's): once a second
                self._unnamed[inum] = now
                self._names.update(netns_names())
            name = self._names.get(inum, "?")
        return name

    def _ns_inum(self, name: str | None) -> int:
        """A name, a namespace file's path (containers, processes), or None for ours."""
        return inode(name) or 0

    def read(self, timeout_ms: int = 100) -> "Hops":
        """The hops since the last read, in time order: waits up to timeout_ms, less once a batch
        waits. A sequence of Hop made when first looked at (its len() makes none)."""
        self._rings.wait(timeout_ms, READ_BATCH)
        hops = self._hops(self._rings.read(length=EVENT.size))
        hops.more(self.flush(time.monotonic_ns() - SHARED_GRACE_NS))
        if self._journal is not None:
            self._watch()
            for e in self._journal.read():
                if not any(m.accepts(e.src, e.dst, e.l4_proto, e.sport, e.dport) for m in self.filters()):
                    continue
                ns_name, inum, ifname = self._fault_at[e.fault_id]
                what = {"drop": "DROP", "duplicate": "DUP"}.get(e.action, "ACT")
                hops.more((Hop(e.ts_ns, inum, ns_name, ifname, what, e.hook, 0, b"",
                               reason="faultinj" if e.action == "drop" else "",
                               fault=f"{e.fault} {e.fault_id}", wall_ns=e.ts_ns + self._to_wall, _key=e.key(),
                               _summary=_event_summary(e)),))
                if e.action == "drop":
                    if len(self._fault_drops) > 100_000:
                        self._fault_drops.clear()
                    self._fault_drops[(e.key(), inum, ifname)] = e.ts_ns
            # the journal is written before the program returns, so a fault's drop is known here
            # before (or in the same read as) the kernel's report of freeing that packet
            if self._fault_drops:
                hops = Hops.of([h for h in hops if not self._freed_by_fault(h)])
        return hops

    def _freed_by_fault(self, h: Hop) -> bool:
        """kfree_skb of a packet a fault on a tcx link just dropped (redirected to no device)."""
        if h.direction != "DROP" or h.fault:
            return False
        at = self._fault_drops.get((h.key, h.netns, h.ifname))
        return at is not None and 0 <= h.ts_ns - at < FOLD_NS

    def _hops(self, batch: bytes) -> "Hops":
        """Hops from a batch of ring records, decoded together: the records viewed as a numpy
        array, the common hops (a device's, a plain drop) left there until the batch is looked at
        (Hops), the others (a free waiting for its copy, a delivery, OVS's actions, functions:
        they keep state here) made now, in the ring's order. A frame's fields are read only when
        asked for (Hop.key, Hop.summary)."""
        import numpy as np

        if self._dtype is None:
            self._dtype = record_dtype()
        rows = np.frombuffer(batch, self._dtype)
        hop, flags = rows["hop"], rows["flags"]
        own = np.isin(hop, _OWN) | ((hop == FI_HOP_DROP) & ((flags & (DROP_DELIVERED | DROP_SHARED)) != 0))
        if not own.any():
            return Hops(self, batch, rows, np.arange(len(rows)), [])
        made, now, held = [], time.monotonic_ns(), self._held
        for i in np.flatnonzero(own).tolist():
            (_len, _pg, ts, _skb, head, func, netns, _ifindex, length, reason, sock, snap, hop_, flags_,
             ifname, frame) = RECORD.unpack_from(batch, i * RECORD.size)
            if hop_ == HOP_DELIVERED:
                h = held.pop(head, None)
                if h is not None:
                    made.append((i, _delivered(h[0], sock)))
                continue
            h = Hop(ts, netns, self._ns_name(netns), self._ifname(ifname.rstrip(b"\0")), HOPS.get(hop_, "?"),
                    HOP_POINTS.get(hop_, "?"), length, frame[:snap], "", "", "", 0, ts + self._to_wall, head)
            if hop_ == FI_HOP_DROP:
                h.reason = self._reasons.get(reason) or str(reason)
                if flags_ & DROP_DELIVERED:
                    h = _delivered(h, sock)
                else:   # DROP_SHARED
                    held[head] = (h, now)
                    continue
            elif hop_ == HOP_OVS_EXEC:
                action = self._ovs_actions.get(reason, str(reason))
                h.point = f"exec {action}" + (f":{func}" if action == "output" else "")
            elif hop_ == HOP_FUNC:
                # the function's address, or just past an IBT landing pad (endbr64: 4 bytes)
                h.direction, h.point = "fn", self._fn_names.get(func) or self._fn_names.get(func - 4, hex(func))
                key = h.key
                h.since_ns = ts - self._last_ts.get(key, ts)
                if len(self._last_ts) > 100_000:
                    self._last_ts.clear()
                self._last_ts[key] = max(ts, self._last_ts.get(key, 0))
            made.append((i, h))
        return Hops(self, batch, rows, np.flatnonzero(~own), made)

    def _ifname(self, raw: bytes) -> str:
        name = self._ifnames.get(raw)
        if name is None:
            name = self._ifnames[raw] = raw.split(b"\0")[0].decode(errors="replace")
        return name

    def _made(self, batch: bytes, rows, which) -> list[Hop]:
        """The Hops of the common records `which` (indices into rows), in that order."""
        names, ns_names, to_wall, reasons, ns_name, ifname = (self._ifnames, self._names, self._to_wall,
                                                              self._reasons, self._ns_name, self._ifname)
        out = []
        append = out.append

        def col(c):   # a member of the records picked, as Python numbers (one call per batch)
            return rows[c].take(which).tolist()

        for at, ts, head, netns, length, reason, snap, hop, name in zip(
                (which * RECORD.size + _FRAME_AT).tolist(), col("ts_ns"), col("head"), col("netns"), col("len"),
                col("reason"), col("snap"), col("hop"), col("ifname")):
            h = Hop(ts, netns, ns_names.get(netns) or ns_name(netns), names.get(name) or ifname(name),
                    HOPS.get(hop, "?"), HOP_POINTS.get(hop, "?"), length, batch[at:at + snap], "", "", "", 0,
                    ts + to_wall, head)   # positional: cheaper
            if hop == FI_HOP_DROP:
                h.reason = reasons.get(reason) or str(reason)
            append(h)
        return out

    def counts(self) -> list[dict]:
        """trace --stats: what passed each hook so far, counted in the kernel (summed over CPUs)."""
        fd, cpus = self._obj.map_fds["fi_trace_counts"], libbpf.possible_cpus()
        out = []
        for k in libbpf.map_keys(fd, COUNT_KEY.size):
            raw = libbpf.map_lookup(fd, k, 16 * cpus)
            packets = sum(struct.unpack_from("<Q", raw, 16 * i)[0] for i in range(cpus))
            nbytes = sum(struct.unpack_from("<Q", raw, 16 * i + 8)[0] for i in range(cpus))
            netns, reason, hop, flags, family, kind, ifname = COUNT_KEY.unpack(k)
            direction = HOPS.get(hop, "?")
            if hop == FI_HOP_DROP and flags & DROP_DELIVERED and _ends_delivery(
                    family << 16 | kind, self._reasons.get(reason) or str(reason)):
                direction = "done"
            elif hop == FI_HOP_DROP and flags & DROP_SHARED:
                direction = "free"   # a copy lived on: a delivery or a drop (plain trace follows the copy)
            out.append({"netns": netns, "netns_name": self._ns_name(netns),
                        "ifname": ifname.split(b"\0")[0].decode(errors="replace"), "direction": direction,
                        "point": HOP_POINTS.get(hop, "?") + (f" {self._ovs_actions.get(reason, reason)}"
                                                             if hop == HOP_OVS_EXEC else ""),
                        "reason": (self._reasons.get(reason) or str(reason)) if hop == FI_HOP_DROP else "",
                        "packets": packets, "bytes": nbytes})
        out.sort(key=lambda c: (-c["packets"], c["netns_name"], c["ifname"], c["point"]))
        return out

    def flush(self, before_ns: int | None = None) -> list[Hop]:
        """Frees held for their copy's fate that this reader got before before_ns (all: None; on
        CLOCK_MONOTONIC): nobody read the copy, so they were drops after all."""
        out = {k: h for k, (h, got) in self._held.items() if before_ns is None or got < before_ns}
        for k in out:
            del self._held[k]
        return list(out.values())

    def settle(self) -> list[Hop]:
        """At the end: the hops still to come while frees wait for their copies' fate (at most the
        grace), then the frees whose copy nobody read, as drops."""
        hops: list[Hop] = []
        end = time.monotonic_ns() + SHARED_GRACE_NS
        while self._held and time.monotonic_ns() < end:
            hops.extend(self.read(20))
        return hops + self.flush()

    def lost(self) -> int:
        """Events the kernel could not queue (the reader fell behind)."""
        return struct.unpack("<Q", libbpf.map_lookup(self._obj.map_fds["fi_trace_lost"], b"\0\0\0\0", 8))[0]

    def close(self) -> None:
        for p in self._fn_progs:
            p.close()
        self._fn_progs = []
        for thing in (self._rings, self._journal, self._ovs, self._obj):
            if thing is not None:
                thing.close()
        self._rings = self._journal = self._ovs = self._obj = None

    def __enter__(self) -> "Tracer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


# hops made as they are read (Tracer._hops), not left in the batch: they keep state in the reader
_OWN = (HOP_DELIVERED, HOP_OVS_EXEC, HOP_FUNC)


class Hops(Sequence):
    """A read's hops in time order (the ring's order where stamps tie, then the frees given up
    on, then the faults' actions), as Tracer.read() returns them. The common ones stay in the ring
    records' array until the batch is first looked at (iterated, indexed, compared): then every
    Hop is made at once. len() makes none (a reader that counts what passed pays no Python object
    per hop)."""

    __slots__ = ("_tracer", "_batch", "_rows", "_which", "_made", "_more", "_list")

    def __init__(self, tracer, batch: bytes, rows, which, made: list):
        # which: the common records' indices (ascending); made: (record index, Hop) of the others
        self._tracer, self._batch, self._rows, self._which, self._made = tracer, batch, rows, which, made
        self._more: list[Hop] = []   # hops from elsewhere, after the ring's where stamps tie
        self._list: list[Hop] | None = None

    @classmethod
    def of(cls, hops: list[Hop]) -> "Hops":
        out = cls(None, b"", None, (), [])
        out._more = hops
        return out

    def more(self, hops) -> None:
        self._more.extend(hops)
        self._list = None

    def _hops(self) -> list[Hop]:
        if self._list is not None:
            return self._list
        which = self._which
        if not self._made and not self._more:   # the common case: the ring's hops alone
            if len(which) > 1:   # in time order before they are made (stable: ties in the ring's order)
                which = which[self._rows["ts_ns"][which].argsort(kind="stable")]
            self._list = self._tracer._made(self._batch, self._rows, which) if len(which) else []
            return self._list
        # every hop with its place: the ring's index, then after the ring's (sorted stably by
        # time, as one list in that order would be)
        placed = list(zip(which.tolist(), self._tracer._made(self._batch, self._rows, which))) if len(which) else []
        placed += self._made
        placed.sort(key=_AT)
        out = [h for _, h in placed] + self._more
        out.sort(key=_BY_TIME)
        self._list = out
        return out

    def __len__(self) -> int:
        if self._list is not None:
            return len(self._list)
        return len(self._which) + len(self._made) + len(self._more)

    def __getitem__(self, i):
        return self._hops()[i]

    def __iter__(self):
        return iter(self._hops())

    def __add__(self, other) -> list[Hop]:   # as a list's: a list
        return self._hops() + list(other)

    def __radd__(self, other) -> list[Hop]:
        return list(other) + self._hops()

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, (list, tuple, Hops)) else NotImplemented

    def __repr__(self) -> str:
        return f"Hops({self._hops()!r})"


_AT = itemgetter(0)


def _socket_kind(sock: int) -> str:
    family, kind = sock >> 16, sock & 0xFFFF
    if family == AF_PACKET:
        return "packet socket"
    if family in (AF_INET, AF_INET6) and kind == SOCK_RAW:
        return "raw socket"
    if family in (AF_INET, AF_INET6) and kind == SOCK_DGRAM:
        return "datagram socket"
    return "socket"


def _delivered(h: Hop, sock: int) -> Hop:
    """A free after a socket read the frame (a clone of it): the end of a delivery, not a loss --
    where that socket was where the packet went. A raw or datagram socket (ping's replies, a
    broadcast) took it; a packet socket (an OVS netdev port, a capture) took it only if the kernel
    then freed the original as not for this host's stack (_NOT_OURS): freed for any other reason (TCP's
    PAWS check, no UDP socket), the capture had a copy but the packet was lost. A stream socket
    never reads a clone: such a mark is of an earlier packet whose data was at the same address."""
    if _ends_delivery(sock, h.reason):
        h.direction, h.delivered = "done", _socket_kind(sock)
    return h


def _ends_delivery(sock: int, reason: str) -> bool:
    """Whether a free as `reason` after this socket read a copy is the end of a delivery (_delivered)."""
    kind = _socket_kind(sock)
    return kind in ("raw socket", "datagram socket") or (kind == "packet socket" and reason in _NOT_OURS)


# freed as not for this host's stack: after a packet socket read it (an OVS netdev port, LLDP to a
# daemon), the end of its delivery
_NOT_OURS = ("OTHERHOST", "UNHANDLED_PROTO")


def _event_summary(e) -> str:
    if e.l4_proto in (1, 58):
        return f"#{e.sport}.{e.seq} {e.src} -> {e.dst}"
    if e.l4_proto == 6:
        return f"tcp {e.src}:{e.sport} -> {e.dst}:{e.dport} seq={e.seq}"
    if e.l4_proto == 17:
        return f"udp {e.src}:{e.sport} -> {e.dst}:{e.dport} id={e.ip_id}"
    return f"{protocol_name(e.l4_proto)} {e.src} -> {e.dst}"


class _Stop(Exception):
    """on_hop asked to stop."""


def trace(match: Match | tuple = NO_MATCH, count: int | None = None, duration: float | None = None,
          on_hop=None, with_faults: bool = True, settle: float = 0.3,
          functions: dict | None = None, on_start=None, keep: bool = True,
          on_batch=None) -> tuple[list[Hop], int]:
    """Trace until `count` packets were seen (then `settle` more seconds for their later hops),
    `duration` passed, KeyboardInterrupt, or on_hop returned False. A packet is what its key names
    (Hop.key: addresses, protocol, ports or echo id, IP id, TCP or echo sequence; the frame's bytes
    when it is not IP): a ping's request and reply are two. It counts when its first hop is seen,
    and every later hop of a counted packet is kept. on_hop(hop) is called as hops come. Returns
    the hops and how many the kernel could not queue (this reader fell behind). on_start() is
    called once every program is attached and tracing (the duration counts from then).
    keep=False: the hops go to on_hop only (the list returned is empty): a long trace holds no
    more memory than a read's batch (the packets counted are kept only with a count).
    on_batch(): called after each read's hops went to on_hop (a printer flushes there); it may
    return False to stop."""
    hops: list[Hop] = []
    packets: set = set()
    # A read makes tens of thousands of short-lived objects (no cycles: freed as they go): the
    # cyclic collector's passes over them and over everything imported cost ~15% of a printed
    # hop (bench 8c). Fewer passes while tracing, and what existed before is left out of them.
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], 20_000), *threshold[1:])
    try:
        return _trace(match, count, duration, on_hop, with_faults, settle, functions, on_start, keep, on_batch,
                      hops, packets)
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _trace(match, count, duration, on_hop, with_faults, settle, functions, on_start, keep, on_batch,
           hops: list, packets: set) -> tuple[list[Hop], int]:
    def take(h: Hop) -> bool:
        """Whether the hop is wanted (one of the counted packets'); on_hop may stop (_Stop)."""
        if count is not None:
            if len(packets) >= count and h.key not in packets:
                return False
            packets.add(h.key)
        if keep:
            hops.append(h)
        if on_hop and on_hop(h) is False:
            raise _Stop
        return True

    with Tracer(match, with_faults, functions or {}) as tracer:
        if on_start:
            on_start()
        end = None if duration is None else time.monotonic() + duration
        try:
            while end is None or time.monotonic() < end:
                for h in tracer.read(100):
                    take(h)
                if on_batch and on_batch() is False:
                    raise _Stop
                if count is not None and len(packets) >= count:
                    end = min(end or float("inf"), time.monotonic() + settle)
        except KeyboardInterrupt:
            pass
        except _Stop:
            if keep:
                hops.extend(tracer.flush())
            return hops, tracer.lost()
        try:
            for h in tracer.settle():
                take(h)
            if on_batch:
                on_batch()
        except (_Stop, KeyboardInterrupt):
            pass
        lost = tracer.lost()
    return hops, lost


def stats(match: Match | tuple = NO_MATCH, duration: float | None = None, functions: dict | None = None) -> list[dict]:
    """trace --stats: how many packets passed each hook of each interface, and how many the
    kernel dropped for which reason, counted in the kernel (no event per packet), until `duration`
    passed or KeyboardInterrupt. Tracer.counts() rows."""
    with Tracer(match, False, functions or {}, count_only=True) as tracer:
        try:
            time.sleep(duration) if duration is not None else threading.Event().wait()
        except KeyboardInterrupt:
            pass
        return tracer.counts()


@dataclass
class Request:
    """What `faultinj trace` was asked, checked: the filter (as words, for people, and compiled), how
    long, and the kernel functions to follow too."""
    words: list[str]
    match: Match | tuple
    seconds: float | None
    functions: dict[str, int] | None


def request(expression: list[str] | None = None, *, icmp: bool = False, tcp: bool = False, udp: bool = False,
            proto: str | None = None, src: str | None = None, dst: str | None = None, sport: str | None = None,
            dport: str | None = None, flags: str | None = None, vlan: int | None = None, mark: str | None = None,
            count: int | None = None, duration: str | None = None, functions: str | None = None,
            max_functions: int = MAX_FUNCTIONS, stats: bool = False, pcap: str | None = None) -> Request:
    """The trace command's options checked and compiled (a tcpdump-style expression or the filter
    flags, not both); also that this process may trace and the kernel has BTF."""
    chosen = [name for name, on in (("icmp", icmp), ("tcp", tcp), ("udp", udp)) if on]
    if len(chosen) + (proto is not None) > 1:
        raise SpecError("give one of --icmp, --tcp, --udp, --proto")
    if count is not None and count < 1:
        raise SpecError(f"--count {count}: give 1 or more packets")
    words = [f"proto={(chosen or [proto])[0]}"] if chosen or proto else []
    words += [f"{k}={v}" for k, v in (("src", src), ("dst", dst), ("sport", sport), ("dport", dport),
                                      ("flags", flags), ("vlan", vlan), ("mark", mark)) if v is not None]
    if expression:
        if words:
            raise SpecError("give a filter expression or the filter flags (--tcp, --dst, ...), not both")
        words = [" ".join(expression)]
        match = compile_filter(words[0])
    else:
        match = parse_match(words)
    seconds = parse_duration(duration)
    caps.require_privileges()
    check_btf()
    fns = skb_functions(functions, max_functions) if functions else None
    if stats and (count is not None or pcap):
        raise SpecError("--stats counts in the kernel: it takes no --count or --pcap (give --duration)")
    return Request(words, match, seconds, fns)
