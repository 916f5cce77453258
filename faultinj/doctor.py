"""`faultinj doctor`: what this machine can do, probed for real in a
throw-away namespace (never on the machine's own interfaces)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from .errors import KernelFeatureMissing
from .faults import parse_spec
from .guest import kernels
from .guest.kernels import short_name
from .guest.vm import probe_kernel
from .inject import state
from .kernel import attach, build, caps, libbpf, links, netns, program
from .labs import Lab
from .trace import Tracer


@dataclass
class Probe:
    name: str
    ok: bool
    detail: str
    enables: str
    fix: str = ""
    required: bool = True   # part of the default feature set

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "enables": self.enables,
                "fix": self.fix, "required": self.required}


def _mounted(path: str, fstype: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(ln.split()[1] == path and ln.split()[2] == fstype for ln in f)


def _try(fn) -> tuple[bool, str]:
    try:
        return True, fn() or ""
    except Exception as exc:  # a probe reports, it does not stop the others
        return False, str(exc).splitlines()[0]


def run() -> list[Probe]:
    out: list[Probe] = []
    privileged, why = _try(caps.require_privileges)
    out.append(Probe("root / CAP_BPF + CAP_NET_ADMIN", privileged, why or "yes", "everything",
                     "run faultinj as root (sudo)"))
    ok, detail = _try(lambda: f"libbpf {libbpf.version()}")
    out.append(Probe("libbpf", ok, detail, "loading programs", "apt-get install libbpf1 libbpf-dev"))
    clang = shutil.which(os.environ.get("FAULTINJ_CLANG", "clang"))
    version = ""
    if clang:
        version = subprocess.run([clang, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    out.append(Probe("clang", bool(clang), version or "not found", "compiling fault programs", "apt-get install clang"))
    headers = any(os.path.isfile(f"{d}/bpf/bpf_helpers.h") for d in ("/usr/include", "/usr/local/include"))
    out.append(Probe("libbpf headers", headers, "bpf/bpf_helpers.h" if headers else "missing",
                     "compiling fault programs", "apt-get install libbpf-dev"))
    cache = build.cache_dir()
    ok, detail = _try(lambda: _writable(cache))
    out.append(Probe("cache directory writable", ok, detail or str(cache), "compiling once, loading fast",
                     f"make {cache} writable or set FAULTINJ_CACHE_DIR"))
    btf = os.path.exists("/sys/kernel/btf/vmlinux")
    out.append(Probe("BTF", btf, "/sys/kernel/btf/vmlinux" if btf else "missing", "the packet tracer (CO-RE)",
                     "a kernel built with CONFIG_DEBUG_INFO_BTF", required=False))
    bpffs = _mounted("/sys/fs/bpf", "bpf")
    out.append(Probe("bpffs mounted", bpffs, "/sys/fs/bpf" if bpffs else "not mounted (faultinj mounts it)",
                     "pins: faults outlive the faultinj process", "mount -t bpf bpf /sys/fs/bpf", required=False))
    tracefs = _mounted("/sys/kernel/tracing", "tracefs")
    out.append(Probe("tracefs mounted", tracefs, "/sys/kernel/tracing" if tracefs else "not mounted",
                     "nothing faultinj needs: the tracer attaches BTF raw tracepoints by name",
                     "mount -t tracefs tracefs /sys/kernel/tracing (for perf and bpftrace)", required=False))
    if not privileged:
        return out
    ok = False
    try:
        ok = libbpf.probe_prog_type(libbpf.BPF_PROG_TYPE_XDP) and libbpf.probe_prog_type(libbpf.BPF_PROG_TYPE_SCHED_CLS)
        detail = "XDP and SCHED_CLS programs load" if ok else "the kernel refuses XDP/tc programs"
    except Exception as exc:
        detail = str(exc)
    out.append(Probe("BPF syscall", ok, detail, "everything", "a kernel with CONFIG_BPF_SYSCALL"))
    if clang and headers and ok:
        out.extend(_hook_probes())
    if clang and headers and ok and btf:
        ok, detail = _try(_tracer)
        out.append(Probe("tracer (tp_btf, CO-RE)", ok, detail, "faultinj trace",
                         "a kernel with BTF and raw tracepoints (5.5+)", required=False))
    return out


def _writable(path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path):
        pass
    return str(path)


def _hook_probes() -> list[Probe]:
    out = []
    lab = Lab(prefix=f"fidoc{os.getpid() % 10000}")
    try:
        lab.up()
        ipr = netns.open_iproute(lab.a.netns)
        idx = netns.link_index(lab.a.netns, lab.a.ifname)
        xdp = program.load(parse_spec("drop=0@xdp"), seed=0)
        tc = program.load(parse_spec("drop=0@egress"), seed=0)
        try:
            for mode in ("native", "generic"):
                def attach_mode(mode=mode):
                    with netns.entered(lab.a.netns):
                        links.xdp_attach(idx, xdp.prog_fd, None, modes=(mode,))
                        links.xdp_detach(idx, mode, xdp.prog_fd)
                ok, detail = _try(attach_mode)
                out.append(Probe(f"XDP {mode} (veth)", ok, detail or "attached and detached",
                                 "ttl-pong and drop on XDP", "a kernel with XDP support",
                                 required=(mode == "native")))
            ok, detail = _try(lambda: _in(lab.a.netns, links.clsact_create, idx) and "added")
            out.append(Probe("clsact qdisc", ok, detail, "tc hooks", "CONFIG_NET_SCH_INGRESS"))

            def cls_bpf():
                _in(lab.a.netns, links.tc_filter_attach, idx, "tc-egress", tc.prog_fd, 1)
            ok, detail = _try(cls_bpf)
            out.append(Probe("cls_bpf direct-action", ok, detail or "attached", "tc faults (default --tc-mode)",
                             "CONFIG_NET_CLS_BPF"))

            def matchall():  # the classifier alone (no action): does the kernel have it?
                ipr.tc("add-filter", "matchall", index=idx, parent=attach.TC_PARENTS["tc-egress"], prio=2,
                       handle=1, protocol=attach.ETH_P_ALL)
                return "a matchall filter added"
            ok, detail = _try(matchall)
            out.append(Probe("cls_matchall", ok, detail if ok else f"missing (CONFIG_NET_CLS_MATCHALL): {detail}",
                             "--tc-mode matchall", "a kernel with CONFIG_NET_CLS_MATCHALL (modprobe cls_matchall)",
                             required=False))

            def act_bpf():  # a program loaded as a tc action, behind a cls_bpf filter (matchall may be absent)
                act = program.load(parse_spec("drop=0@egress"), seed=0, tc_mode="matchall")
                try:
                    ipr.tc("add-filter", "bpf", index=idx, parent=attach.TC_PARENTS["tc-egress"], prio=3,
                           handle=1, protocol=attach.ETH_P_ALL, fd=tc.prog_fd, name="faultinj:doctor3",
                           action={"kind": "bpf", "fd": act.prog_fd, "name": "faultinj:doctor3", "action": "pipe"})
                finally:
                    act.close()
                return "a BPF action (SCHED_ACT program) attached"
            ok, detail = _try(act_bpf)
            out.append(Probe("act_bpf", ok, detail if ok else f"missing (CONFIG_NET_ACT_BPF): {detail}",
                             "--tc-mode matchall", "a kernel with CONFIG_NET_ACT_BPF (modprobe act_bpf)",
                             required=False))

            def fq():
                attach.add_root_fq(lab.a.netns, lab.a.ifname)
                attach.remove_root_fq(lab.a.netns, lab.a.ifname)
                return "added and removed"
            fq_ok, detail = ok, detail = _try(fq)
            out.append(Probe("fq qdisc", ok, detail if ok else "missing (CONFIG_NET_SCH_FQ)",
                             "time faults: delay, reorder, rate (earliest departure time)",
                             "a kernel with CONFIG_NET_SCH_FQ (modprobe sch_fq), or a VM lab", required=False))

            def netem():
                proc = attach._tc(lab.a.netns, "qdisc", "add", "dev", lab.a.ifname, "root", "netem", "delay", "1ms")
                if proc.returncode != 0:
                    raise KernelFeatureMissing(proc.stderr.strip())
                attach._tc(lab.a.netns, "qdisc", "del", "dev", lab.a.ifname, "root")
                return "added and removed"
            netem_ok, detail = ok, detail = _try(netem)
            out.append(Probe("netem qdisc", ok, detail if ok else "missing (CONFIG_NET_SCH_NETEM)",
                             "comparing time faults with netem (bench)", "a kernel with CONFIG_NET_SCH_NETEM",
                             required=False))
            bpf_qdisc = _has_bpf_qdisc()
            out.append(Probe("BPF qdisc (struct_ops)", bpf_qdisc,
                             "Qdisc_ops in the kernel's BTF" if bpf_qdisc else "missing (CONFIG_NET_SCH_BPF, 6.16+)",
                             "reported only: faultinj holds time faults with fq", "a kernel 6.16+ with "
                             "CONFIG_NET_SCH_BPF", required=False))
            out.append(Probe("time-fault mechanism", fq_ok, time_mechanism(fq_ok, netem_ok, bpf_qdisc),
                             "delay, reorder, rate", "a kernel with CONFIG_NET_SCH_FQ (modprobe sch_fq), or a VM lab",
                             required=False))

            def tcx():   # what apply does on a tcx-link fault: a link pinned, then detached and unpinned
                if not links.kernel_has_links("tc-egress"):
                    raise KernelFeatureMissing("no tcx attach type (kernel 6.6+)")
                links.link_attach("tcx-link", "tc-egress", idx, tc.prog_fd, pins)
                order = links.tcx_programs(idx, "tc-egress")
                links.unpin_link(pins)
                return f"a tcx link pinned and removed (programs seen: {len(order)})"

            def xdp_link():
                mode = links.link_attach("xdp-link", "xdp", idx, xdp.prog_fd, pins)
                links.unpin_link(pins)
                return f"an XDP link ({mode}) pinned and removed"
            pins = tempfile.mkdtemp(prefix="fidoctor-", dir=_bpffs_dir())
            try:
                with netns.entered(lab.a.netns):
                    for name, fn, enables, fix in (
                            ("tcx links", tcx, "tc faults as tcx links (--attach link; auto picks them)",
                             "a kernel 6.6 or newer (else faultinj uses tc filters)"),
                            ("xdp links", xdp_link, "XDP faults as XDP links (--attach link; auto picks them)",
                             "a kernel 5.9 or newer (else faultinj attaches XDP through netlink)")):
                        ok, detail = _try(fn)
                        out.append(Probe(name, ok, detail, enables, fix, required=False))
            finally:
                shutil.rmtree(pins, ignore_errors=True)
        finally:
            xdp.close()
            tc.close()
            ipr.close()
    except Exception as exc:
        out.append(Probe("test lab", False, str(exc).splitlines()[0], "probing hooks", "install iproute2"))
    finally:
        lab.down()
    return out


def _in(ns: str, fn, *args):
    with netns.entered(ns):
        return fn(*args)


def _bpffs_dir() -> str:
    state.ensure_dirs()
    return str(state.pin_root())


def _has_bpf_qdisc() -> bool:
    """The BPF qdisc registers struct_ops Qdisc_ops: its value type is in the kernel's BTF."""
    try:
        with open("/sys/kernel/btf/vmlinux", "rb") as f:
            return b"bpf_struct_ops_Qdisc_ops\0" in f.read()
    except OSError:
        return False


def time_mechanism(fq: bool, netem: bool, bpf_qdisc: bool) -> str:
    """What holds a time fault's packets on this kernel, in words (doctor and README)."""
    if fq:
        return "earliest departure time: BPF sets skb->tstamp at tc egress, fq holds each packet until then"
    have = [n for n, ok in (("netem", netem), ("a BPF qdisc", bpf_qdisc)) if ok]
    return ("none: no fq (CONFIG_NET_SCH_FQ)" + (f"; this kernel has {' and '.join(have)}, which faultinj does "
                                                  "not drive (see README, Time faults)" if have else ""))


def _tracer() -> str:
    t = Tracer(with_faults=False)
    t.start()
    try:
        return f"{len(t._obj.programs)} tracepoints attached and detached"
    finally:
        t.close()


def healthy(probes: list[Probe]) -> bool:
    return all(p.ok for p in probes if p.required)


__all__ = ["Probe", "run", "healthy"]


def across(kernel_names: list[str], progress=lambda m: None) -> list[dict]:
    """doctor's probes on this machine, then in a guest of each kernel (`doctor --kernel A --kernel B`):
    one column each, {kernel, release, ok, accel, seconds, probes}. Every name is checked before the
    first guest boots ('host' is this machine's column, given once)."""
    import time


    for name in kernel_names:
        kernels.check(name)
    started = time.monotonic()
    here = run()
    cols = [{"kernel": kernels.HOST, "release": os.uname().release, "ok": healthy(here), "accel": "",
             "seconds": round(time.monotonic() - started, 1), "probes": [p.to_json() for p in here]}]
    for name in kernel_names:
        if name == kernels.HOST:
            continue
        started = time.monotonic()
        g = probe_kernel(name, progress)
        cols.append({"kernel": name, "release": g["release"], "ok": g.get("ok"), "accel": g.get("accel", ""),
                     "seconds": round(time.monotonic() - started, 1), "probes": g["probes"]})
        progress(f"{name}: probed in {cols[-1]['seconds']:.0f} s")
    return cols


def table(cols: list[dict]) -> list[list[str]]:
    """The columns as text rows: a probe a row (yes / no, '-' for an optional probe that failed)."""
    names: list[str] = []
    for c in cols:
        names += [p["name"] for p in c["probes"] if p["name"] not in names]

    rows = [["probe", *[short_name(c["kernel"]) for c in cols]], ["release", *[c["release"] for c in cols]]]
    for n in names:
        row = [n]
        for c in cols:
            p = next((p for p in c["probes"] if p["name"] == n), None)
            row.append("?" if p is None else "yes" if p["ok"] else "no" if p.get("required", True) else "-")
        rows.append(row)
    rows.append(["default feature set", *["works" if c["ok"] else "does NOT work" for c in cols]])
    rows.append(["probe time", *[f"{c['seconds']:.0f} s" for c in cols]])
    return rows
