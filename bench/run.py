#!/usr/bin/env python3
"""faultinj benchmarks: every figure a ratio to a baseline measured in the
same run, interleaved, repeated; median with min and max. Run as root:

    .venv/bin/python bench/run.py [--quick] [--json bench/results.json] [--only 1,2,...]

Prints markdown tables. Never run by the tests (these machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

import faultinj  # noqa: E402
from faultinj.faults import parse_spec  # noqa: E402
from faultinj.inject import custom
from faultinj.kernel import libbpf, program
from faultinj.labs import traffic  # noqa: E402
from faultinj.labs.capture import Capture  # noqa: E402
from faultinj.labs import Lab, netns_exec  # noqa: E402
from faultinj.packets import parse  # noqa: E402

FAULTINJ = [sys.executable, "-m", "faultinj.cli"]
E = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
PKT_UDP = bytes(Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"u" * 18))
PKT_PONG = bytes(Ether(**E) / IP(src="10.0.0.2", dst="10.0.0.1", ttl=64) / ICMP(type=0) / (b"p" * 56))
PKT_DATA = bytes(Ether(**E) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="A") / (b"d" * 1400))


def med(xs):
    return statistics.median(xs), min(xs), max(xs)


def fmt_ratio(xs):
    m, lo, hi = med(xs)
    return f"{m:.2f}× ({lo:.2f}–{hi:.2f})"


def table(title, head, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def compile_seed(name: str, define: str | None = None) -> str:
    out = Path(tempfile.mkdtemp(prefix="fibench-")) / f"{name}.o"
    cmd = ["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
           str(HERE / "seed" / f"{name}.c"), "-o", str(out)]
    if define:
        cmd.insert(1, f"-D{define}")
    subprocess.run(cmd, check=True)
    return str(out)


# 1 ---------------------------------------------------------------------------------------
def per_packet(rounds: int, repeat: int) -> dict:
    objs = {}
    objs["pass xdp"] = libbpf.load_object(compile_seed("pass", "HOOK_XDP"), ())
    objs["pass tc"] = libbpf.load_object(compile_seed("pass", "HOOK_TC"), ())
    # the seed article's programs as printed (examples/seed/), built and loaded as `apply --program` does
    for name, hook in (("xdp_manglepong", "xdp"), ("tcp_psh", "tc-egress")):
        obj_path = custom.compile_source(str(ROOT / "examples" / "seed" / f"{name}.c"))
        try:
            objs[f"seed {name}"] = custom.load(obj_path, hook, custom.pick(obj_path, None)[0])
        finally:
            custom.discard(obj_path)
    for spec in ("ttl-pong@xdp", "psh-ratio=1@egress", "psh-ratio=1000000000@egress", "drop=0@xdp",
                 "drop=0@egress", "drop=100%@xdp", "drop=50%@xdp", "ttl-pong,journal=off@xdp",
                 "psh-ratio=1,journal=off@egress", "delay=1ms", "delay=1ms,jitter=500us,dist=normal",
                 "rate=50mbit"):
        objs[spec] = program.load(parse_spec(spec), seed=1)
    # (name, program, floor, packet, how): "repeat": kernel mean over `repeat` runs of the same packet
    # (fine where a run leaves the packet as it found it); "fresh": median of single runs on fresh copies
    cases = [
        ("ttl-pong, non-matching (UDP)", "ttl-pong@xdp", "pass xdp", PKT_UDP, "repeat"),
        ("seed xdp_manglepong, non-matching", "seed xdp_manglepong", "pass xdp", PKT_UDP, "repeat"),
        ("ttl-pong, mangling a pong (+csum, journal)", "ttl-pong@xdp", "pass xdp", PKT_PONG, "fresh"),
        ("ttl-pong, mangling a pong (+csum), journal=off", "ttl-pong,journal=off@xdp", "pass xdp", PKT_PONG,
         "fresh"),
        ("seed xdp_manglepong, mangling a pong", "seed xdp_manglepong", "pass xdp", PKT_PONG, "fresh"),
        ("psh-ratio, non-matching (UDP)", "psh-ratio=1@egress", "pass tc", PKT_UDP, "repeat"),
        ("seed tcp_psh, non-matching", "seed tcp_psh", "pass tc", PKT_UDP, "repeat"),
        ("psh-ratio=1e9, eligible (per-flow draw)", "psh-ratio=1000000000@egress", "pass tc", PKT_DATA, "repeat"),
        ("psh-ratio, setting PSH (+csum, journal)", "psh-ratio=1@egress", "pass tc", PKT_DATA, "fresh"),
        ("psh-ratio, setting PSH (+csum), journal=off", "psh-ratio=1,journal=off@egress", "pass tc", PKT_DATA,
         "fresh"),
        ("seed tcp_psh, eligible (no csum fix)", "seed tcp_psh", "pass tc", PKT_DATA, "fresh"),
        ("drop=0 on xdp (idle: no draw)", "drop=0@xdp", "pass xdp", PKT_UDP, "repeat"),
        ("drop=0 on tc (idle: no draw)", "drop=0@egress", "pass tc", PKT_UDP, "repeat"),
        ("drop=50% on xdp (per-flow draw)", "drop=50%@xdp", "pass xdp", PKT_UDP, "repeat"),
        ("drop=100% on xdp (journal: parse, log every action)", "drop=100%@xdp", "pass xdp", PKT_UDP, "repeat"),
        # time faults: the program's share of a held packet's cost (the qdisc's is in section 10)
        ("delay=1ms (draw, skb->tstamp, journal)", "delay=1ms", "pass tc", PKT_UDP, "repeat"),
        ("delay=1ms,jitter=500us,dist=normal (netem's table)", "delay=1ms,jitter=500us,dist=normal", "pass tc",
         PKT_UDP, "repeat"),
        ("rate=50mbit (per-flow bucket, skb->tstamp, journal)", "rate=50mbit", "pass tc", PKT_UDP, "repeat"),
    ]
    runners = {k: libbpf.TestRunner(o.prog_fd) for k, o in objs.items()}
    # the journal is a log that overwrites its oldest events: every action is recorded, nothing to drain

    def measure(name, pkt, how):
        r = runners[name]
        if how == "repeat":
            return r.run(pkt, repeat).duration_ns
        return statistics.median(r.run(pkt).duration_ns for _ in range(max(2000, repeat // 500)))

    results = {c[0]: {"ns": [], "floor_ns": [], "ratio": []} for c in cases}
    for _ in range(rounds):
        for label, prog, floor, pkt, how in cases:  # interleaved: floor and program back to back
            f = measure(floor, pkt, how)
            p = measure(prog, pkt, how)
            results[label]["ns"].append(p)
            results[label]["floor_ns"].append(f)
            results[label]["ratio"].append(p / f if f else float("nan"))
    rows = []
    for label, prog, floor, pkt, how in cases:
        r = results[label]
        rows.append((label, f"{med(r['ns'])[0]:.0f}", f"{med(r['floor_ns'])[0]:.0f} ({floor})",
                     fmt_ratio(r["ratio"]), how))
    table("1. Per-packet cost, BPF_PROG_TEST_RUN (ns; ratio to a pass-only program on the same hook)",
          ["case", "ns", "floor ns", "ratio median (min–max)", "method"], rows)
    for o in objs.values():
        o.close()
    return results


# 2, 3 ------------------------------------------------------------------------------------
def _iperf(lab, udp: bool, seconds: int) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", lab.b.netns, "iperf3", "-s", "-1", "-J"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.3)
    args = ["iperf3", "-c", lab.b.ip4, "-t", str(seconds), "-J"]
    if udp:
        args += ["-u", "-l", "64", "-b", "0"]
    cli = netns_exec(lab.a.netns, *args, timeout=seconds + 30)
    out, _ = srv.communicate(timeout=30)
    if udp:
        s = json.loads(out)["end"]["sum"]
        return (s["packets"] - s["lost_packets"]) / s["seconds"]  # datagrams/s received
    return json.loads(cli.stdout)["end"]["sum_received"]["bits_per_second"]


NFT = """table inet fibench {
  chain out {
    type filter hook output priority 0;
    numgen random mod 100 > 99 drop
  }
}
"""


def live_paths(rounds: int, seconds: int) -> dict:
    res = {}
    with Lab().up() as lab:
        paths = ["bare", "faultinj drop=0 (tc egress)", "faultinj psh-ratio=1e9 (tc egress)",
                 "nftables numgen drop, p=0"]
        for udp in (False, True):
            key = "udp64_pps" if udp else "tcp_bps"
            vals = {p: [] for p in paths}
            for _ in range(rounds):
                for p in paths:
                    rec = None
                    if p.startswith("faultinj drop"):
                        rec = faultinj.apply("drop=0", lab.a.ifname, netns_name=lab.a.netns)
                    elif p.startswith("faultinj psh"):
                        rec = faultinj.apply("psh-ratio=1000000000", lab.a.ifname, netns_name=lab.a.netns)
                    elif p.startswith("nft"):
                        subprocess.run(["ip", "netns", "exec", lab.a.netns, "nft", "-f", "-"], input=NFT,
                                       text=True, check=True)
                    try:
                        vals[p].append(_iperf(lab, udp, seconds))
                    finally:
                        if rec:
                            faultinj.clear(fault_id=rec.id)
                        if p.startswith("nft"):
                            subprocess.run(["ip", "netns", "exec", lab.a.netns, "nft", "delete", "table", "inet",
                                            "fibench"], check=True)
            base = vals["bare"]
            rows = []
            for p in paths:
                ratios = [v / b for v, b in zip(vals[p], base)]
                unit = (lambda v: f"{v / 1e9:.2f} Gbit/s") if not udp else (lambda v: f"{v / 1e3:.0f} kpps")
                rows.append((p, unit(med(vals[p])[0]), fmt_ratio(ratios)))
            nft = vals["nftables numgen drop, p=0"]
            rows.append(("faultinj drop=0 vs nftables", "", fmt_ratio(
                [a / b for a, b in zip(vals["faultinj drop=0 (tc egress)"], nft)])))
            title = ("2. Live TCP throughput, veth between namespaces, iperf3 one stream" if not udp else
                     "3. Small packets: UDP 64-byte payload, iperf3 -b 0, received rate")
            table(title, ["path", "median", "ratio to bare, median (min–max)"], rows)
            res[key] = vals
    return res


# 4 ---------------------------------------------------------------------------------------
def _time(cmds, env=None) -> float:
    t = time.perf_counter()
    for c in cmds:
        subprocess.run(c, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def attach_time(rounds: int) -> dict:
    res = {"tc": [], "xdp": [], "tc_ratio": [], "xdp_ratio": []}
    obj_tc = compile_seed("pass", "HOOK_TC")
    obj_xdp = compile_seed("pass", "HOOK_XDP")
    with Lab().up() as lab:
        ns, dev = lab.a.netns, lab.a.ifname
        nx = ["ip", "netns", "exec", ns]
        fi_tc = [FAULTINJ + ["apply", "drop=0", dev, "--netns", ns], FAULTINJ + ["clear", dev, "--netns", ns]]
        fi_xdp = [FAULTINJ + ["apply", "ttl-pong", dev, "--netns", ns], FAULTINJ + ["clear", dev, "--netns", ns]]
        ip_tc = [nx + ["tc", "qdisc", "add", "dev", dev, "clsact"],
                 nx + ["tc", "filter", "add", "dev", dev, "egress", "bpf", "da", "obj", obj_tc, "sec", "tc"],
                 nx + ["tc", "qdisc", "del", "dev", dev, "clsact"]]
        ip_xdp = [nx + ["ip", "link", "set", "dev", dev, "xdp", "obj", obj_xdp, "sec", "xdp"],
                  nx + ["ip", "link", "set", "dev", dev, "xdp", "off"]]
        _time(fi_tc)  # warm the cache
        for _ in range(rounds):
            a, b = _time(fi_tc), _time(ip_tc)
            res["tc"].append((a, b))
            res["tc_ratio"].append(a / b)
            a, b = _time(fi_xdp), _time(ip_xdp)
            res["xdp"].append((a, b))
            res["xdp_ratio"].append(a / b)
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, FAULTINJ_CACHE_DIR=cache)
            cold = _time(fi_tc, env)
        # the same work through the Python API, in one process (a test suite's view)
        for _ in range(rounds):
            t = time.perf_counter()
            rec = faultinj.apply("drop=0", dev, netns_name=ns)
            faultinj.clear(fault_id=rec.id)
            a = time.perf_counter() - t
            b = _time(ip_tc)
            res.setdefault("api_tc", []).append((a, b))
            res.setdefault("api_tc_ratio", []).append(a / b)
    py = _time([[sys.executable, "-c", "pass"]])
    rows = [
        ("tc: faultinj apply+clear vs tc qdisc/filter add + qdisc del", f"{med([a for a, _ in res['tc']])[0] * 1000:.0f} ms",
         f"{med([b for _, b in res['tc']])[0] * 1000:.0f} ms", fmt_ratio(res["tc_ratio"])),
        ("xdp: faultinj apply+clear vs ip link set xdp obj / off", f"{med([a for a, _ in res['xdp']])[0] * 1000:.0f} ms",
         f"{med([b for _, b in res['xdp']])[0] * 1000:.0f} ms", fmt_ratio(res["xdp_ratio"])),
        ("tc: faultinj.apply()+clear() in-process vs the same iproute2 processes",
         f"{med([a for a, _ in res['api_tc']])[0] * 1000:.0f} ms", f"{med([b for _, b in res['api_tc']])[0] * 1000:.0f} ms",
         fmt_ratio(res["api_tc_ratio"])),
        ("tc, cold cache (first compile), once", f"{cold * 1000:.0f} ms", "", ""),
        ("python -c pass (interpreter start), once", f"{py * 1000:.0f} ms", "", ""),
    ]
    table("4. Attach + detach wall time, warm cache (two faultinj processes vs iproute2 processes)",
          ["what", "faultinj", "iproute2", "ratio median (min–max)"], rows)
    res["cold_s"] = cold
    return res


# 5 ---------------------------------------------------------------------------------------
def status_time(rounds: int) -> dict:
    res = {"status_s": [], "python_s": [], "ratio": []}
    with Lab().up() as lab:
        for i in range(50):
            host = lab.a if i % 2 else lab.b
            faultinj.apply("drop=0", host.ifname, netns_name=host.netns)
        try:
            for _ in range(rounds):
                s = _time([FAULTINJ + ["status"]])
                p = _time([[sys.executable, "-c", "pass"]])
                res["status_s"].append(s)
                res["python_s"].append(p)
                res["ratio"].append(s / p)
        finally:
            faultinj.clear(all_faults=True)
    table("5. `faultinj status` with 50 faults applied",
          ["what", "median (min–max)", "ratio to python -c pass"],
          [("faultinj status", "%.0f ms (%.0f–%.0f)" % tuple(x * 1000 for x in med(res["status_s"])),
            fmt_ratio(res["ratio"]))])
    return res


# 6 ---------------------------------------------------------------------------------------
def capture_rate(seconds: int) -> dict:
    res = []
    with Lab().up() as lab:
        for rate_k in (50, 100, 200, 400):
            cap = Capture(lab.b.netns, lab.b.ifname, direction="in").start()
            srv = subprocess.Popen(["ip", "netns", "exec", lab.b.netns, "iperf3", "-s", "-1", "-J"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(0.3)
            # 64-byte payload at a fixed packet rate: bits/s = rate * 64 * 8
            netns_exec(lab.a.netns, "iperf3", "-c", lab.b.ip4, "-u", "-l", "64", "-b",
                       str(rate_k * 1000 * 64 * 8), "-t", str(seconds), timeout=seconds + 30)
            srv.communicate(timeout=30)
            frames = cap.stop()
            t = time.perf_counter()
            pkts = [parse(f.data, f.length) for f in frames]
            udp = sum(1 for p in pkts if p.proto == 17)
            parse_rate = len(frames) / (time.perf_counter() - t)
            res.append({"offered_pps": rate_k * 1000, "captured": len(frames), "udp": udp,
                        "kernel_drops": cap.kernel_drops, "captured_pps": len(frames) / seconds,
                        "parse_pps": parse_rate})
    table("6. Verification capture: AF_PACKET in the namespace + parse",
          ["offered", "captured/s", "kernel drops", "parsed/s"],
          [(f"{r['offered_pps'] / 1000:.0f} kpps", f"{r['captured_pps'] / 1000:.0f} k", r["kernel_drops"],
            f"{r['parse_pps'] / 1000:.0f} k") for r in res])
    return {"runs": res}


# 7 ---------------------------------------------------------------------------------------
def run_rss() -> dict:
    res = {}
    for f in sorted((ROOT / "scenarios").glob("*.yaml")):
        with tempfile.TemporaryDirectory() as pcaps:
            code = ("import resource, subprocess, sys; "
                    f"r = subprocess.run({FAULTINJ + ['run', str(f), '--pcap-dir', pcaps]!r}, capture_output=True); "
                    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout.split()
            res[f.name] = {"exit": int(out[0]), "peak_rss_mib": int(out[1]) / 1024}
    table("7. Peak RSS of `faultinj run` per shipped scenario", ["scenario", "exit", "peak RSS"],
          [(k, v["exit"], f"{v['peak_rss_mib']:.0f} MiB") for k, v in res.items()])
    return res


# 8 ---------------------------------------------------------------------------------------
def journal_and_tracer(rounds: int, seconds: int) -> dict:
    """The journal's cost per action (BPF_PROG_TEST_RUN; the log records every action), and the tracer's cost to live traffic: idle (a filter nothing passes)
    and tracing every packet (events read in this process as they come)."""
    import resource
    import threading

    from faultinj.faults.match import parse_match
    from faultinj.trace import Tracer

    res = {}
    on = program.load(parse_spec("drop=100%,proto=udp@xdp"), seed=1)   # a filter: both parse
    off = program.load(parse_spec("drop=100%,proto=udp@xdp"), seed=1, journal=False)
    r_on, r_off = libbpf.TestRunner(on.prog_fd), libbpf.TestRunner(off.prog_fd)
    ns_on, ns_off = [], []
    for _ in range(rounds):
        a = b = 0
        for _ in range(20):
            b += r_off.run(PKT_UDP, 2000).duration_ns
            a += r_on.run(PKT_UDP, 2000).duration_ns
        ns_on.append(a / 20)
        ns_off.append(b / 20)
    on.close()
    off.close()
    table("8a. The journal: cost per action (drop=100%,proto=udp on xdp, ns per packet)",
          ["journal", "ns", "ratio to journal off, median (min–max)"],
          [("off", f"{med(ns_off)[0]:.0f}", "1"),
           ("on, every event recorded", f"{med(ns_on)[0]:.0f}", fmt_ratio([a / b for a, b in zip(ns_on, ns_off)]))])
    res["journal_ns"] = {"on": ns_on, "off": ns_off}

    with Lab().up() as lab:
        cases = ["no tracer", "tracer, filter matching nothing", "tracer, every packet: hops read",
                 "tracer, every packet: hops read and formatted", "tracer, every packet: --stats (kernel counts)"]
        if "count_only" not in Tracer.__dataclass_fields__:   # a faultinj before trace --stats (a before/after run)
            cases = cases[:-1]
        for udp in (False, True):
            vals = {c: [] for c in cases}
            events = {c: [] for c in cases}
            busy = {c: [] for c in cases}
            lost = {c: [] for c in cases}
            for _ in range(rounds):
                for c in cases:
                    tracer, stop, reader, seen = None, threading.Event(), None, [0]
                    if c != "no tracer":
                        words = ["dst=192.0.2.99"] if "nothing" in c else []
                        kw = {"count_only": True} if "stats" in c else {}
                        tracer = Tracer(parse_match(words), with_faults=False, **kw).start()

                        def drain(t=tracer, formatted="formatted" in c, stats="stats" in c):
                            while not stop.is_set():
                                if stats:     # as trace --stats: the kernel's counts, once a second
                                    stop.wait(1)
                                    seen[0] = sum(x["packets"] for x in t.counts())
                                    continue
                                hops = t.read(50)
                                seen[0] += len(hops)
                                if formatted:   # as `faultinj trace` prints each hop
                                    for h in hops:
                                        str(h)

                        reader = threading.Thread(target=drain, daemon=True)
                        reader.start()
                    used = resource.getrusage(resource.RUSAGE_SELF)   # this process: the reader's work
                    try:
                        vals[c].append(_iperf(lab, udp, seconds))
                    finally:
                        now = resource.getrusage(resource.RUSAGE_SELF)
                        busy[c].append((now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime) / seconds)
                        stop.set()
                        if reader:
                            reader.join()
                        if tracer:
                            events[c].append(seen[0] / seconds)
                            lost[c].append(tracer.lost() / seconds)
                            tracer.close()
            base = vals["no tracer"]
            unit = (lambda v: f"{v / 1e9:.2f} Gbit/s") if not udp else (lambda v: f"{v / 1e3:.0f} kpps")
            table("8b. The tracer's cost to live traffic" + (" (UDP 64-byte)" if udp else " (TCP, one stream)"),
                  ["case", "median", "ratio to no tracer, median (min–max)", "hops/s read", "hops/s lost",
                   "this process's CPU (the reader)"],
                  [(c, unit(med(vals[c])[0]), fmt_ratio([v / b for v, b in zip(vals[c], base)]),
                    f"{med(events[c])[0] / 1e3:.0f}k" if events[c] else "",
                    f"{med(lost[c])[0] / 1e3:.0f}k" if lost[c] else "",
                    f"{med(busy[c])[0]:.0%}") for c in cases])
            res["tracer_udp" if udp else "tracer_tcp"] = vals
            res["tracer_hops_per_s_udp" if udp else "tracer_hops_per_s_tcp"] = events
            res["tracer_reader_cpu_udp" if udp else "tracer_reader_cpu_tcp"] = busy
            res["tracer_lost_per_s_udp" if udp else "tracer_lost_per_s_tcp"] = lost
    return res


def _enable_bpf_stats() -> int:
    """BPF_ENABLE_STATS (5.8+): every program's run time and count are kept while the returned fd
    is open (closed: as before). What each of the tracer's programs costs per call, in the kernel."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(128)   # union bpf_attr: enable_stats.type = BPF_STATS_RUN_TIME (0)
    fd = libc.syscall(321, 32, attr, 128)     # __NR_bpf (x86-64), BPF_ENABLE_STATS
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS")
    return fd


def _prog_runs(objs) -> dict[str, tuple[int, int]]:
    """{program: (run_time_ns, run_cnt)} of the loaded tracing objects' programs (bpf_prog_info)."""
    import struct as _s

    from faultinj.kernel.libbpf.ffi import _obj_info, lib
    from faultinj.kernel.libbpf.objects import _programs

    out = {}
    for o in objs:
        for prog, name, _ in _programs(o._obj):
            info = _obj_info(lib().bpf_program__fd(prog), name)
            out[name] = _s.unpack_from("<QQ", info, 192)   # run_time_ns, run_cnt
    return out


def tracer_bpf_cost(rounds: int, seconds: int) -> dict:
    """8d. The tracer's programs' own cost per call (BPF run-time stats, not throughput: less
    sensitive to a shared machine), on a 64-byte UDP flood: filter matching nothing, every hop an
    event (read by a thread), every hop counted (--stats)."""
    import threading

    from faultinj.faults.match import parse_match
    from faultinj.trace import Tracer

    cases = {"filter matching nothing": (["dst=192.0.2.99"], {}), "every hop an event": ([], {}),
             "every hop counted (--stats)": ([], {"count_only": True})}
    ns = {c: [] for c in cases}
    calls = {c: [] for c in cases}
    fd = _enable_bpf_stats()
    try:
        with Lab().up() as lab:
            for _ in range(rounds):
                for c, (words, kw) in cases.items():
                    tracer = Tracer(parse_match(words), with_faults=False, **kw).start()
                    stop = threading.Event()

                    def drain(t=tracer, counting=bool(kw)):
                        while not stop.is_set():
                            if counting:
                                stop.wait(0.1)
                            else:
                                t.read(50)
                    th = threading.Thread(target=drain, daemon=True)
                    th.start()
                    try:
                        before = _prog_runs([tracer._obj])
                        _iperf(lab, True, seconds)
                        after = _prog_runs([tracer._obj])
                    finally:
                        stop.set()
                        th.join()
                        tracer.close()
                    t_ns = sum(after[p][0] - before[p][0] for p in after)
                    n = sum(after[p][1] - before[p][1] for p in after)
                    ns[c].append(t_ns / max(n, 1))
                    calls[c].append(n / seconds)
    finally:
        os.close(fd)
    table("8d. The tracer's programs, cost per call in the kernel (UDP 64-byte flood; BPF run-time stats)",
          ["case", "ns per call, median (min–max)", "calls/s"],
          [(c, f"{med(ns[c])[0]:.0f} ({min(ns[c]):.0f}–{max(ns[c]):.0f})", f"{med(calls[c])[0] / 1e3:.0f}k")
           for c in cases])
    return {"ns_per_call": ns, "calls_per_s": calls}


# bpftrace on the tracepoints faultinj's tracer uses, one line per hop (its printf goes through a
# perf buffer per CPU, read and formatted by bpftrace): the side-by-side reference of issue 23
BPFTRACE = """
tracepoint:net:net_dev_queue, tracepoint:net:netif_rx, tracepoint:net:netif_receive_skb_entry,
tracepoint:net:napi_gro_receive_entry
{ printf("%s %s %u %llx\\n", probe, str(args->name), args->len, args->skbaddr); }
tracepoint:skb:kfree_skb { printf("%s %llx %u\\n", probe, args->skbaddr, args->reason); }
tracepoint:skb:skb_copy_datagram_iovec { printf("%s %llx %d\\n", probe, args->skbaddr, args->len); }
"""


def _lines_while_iperf(lab, udp: bool, seconds: int, argv: list[str], ready: str) -> tuple[float, float, int, float]:
    """A tracing process (bpftrace, or `faultinj trace`) whose lines this process reads and drops
    while iperf3 runs: (iperf's result, lines/s, events the tracer said it lost, its CPU share)."""
    import re
    import signal
    import threading

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1 << 20)
    said: list[str] = []
    n = [0]
    up = threading.Event()

    def out():
        for line in proc.stdout:
            n[0] += 1
            if ready in line:
                up.set()
            if "Lost" in line:
                said.append(line)

    def err():
        for line in proc.stderr:
            said.append(line)
            if ready in line:
                up.set()

    ts = [threading.Thread(target=f, daemon=True) for f in (out, err)]
    for t in ts:
        t.start()
    if not up.wait(120):
        proc.kill()
        raise RuntimeError(f"{argv[0]} did not start: {''.join(said)[-500:]}")
    time.sleep(0.5)
    cpu0 = _cpu_of(proc.pid)
    n0 = n[0]
    val = _iperf(lab, udp, seconds)
    lines = (n[0] - n0) / seconds
    cpu = (_cpu_of(proc.pid) - cpu0) / seconds
    proc.send_signal(signal.SIGINT)
    killed = False
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:   # it did not end: it could not say what it lost
        killed = True
        proc.kill()
        proc.wait()
    for t in ts:
        t.join(5)
    text = "".join(said)
    lost = sum(int(x) for x in re.findall(r"Lost (\d+) events", text))
    lost += sum(int(x) for x in re.findall(r"(\d+) hops lost", text))
    if killed and not lost:
        lost = float("nan")   # unknown, not 0: shown as such
    return val, lines, lost, cpu


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tracer_vs_bpftrace(rounds: int, seconds: int) -> dict:
    """8c. Every packet traced by a process printing one line per hop, read through a pipe:
    `faultinj trace` against bpftrace on the same tracepoints, interleaved with no tracer."""
    cases = {"no tracer": None, "faultinj trace (every hop, a line each)": FAULTINJ + ["trace", "--no-faults"]}
    if shutil.which("bpftrace"):
        script = Path(tempfile.mkdtemp(prefix="fibench-")) / "hops.bt"
        script.write_text(BPFTRACE)
        # bpftrace's tracepoints need tracefs: mounted in a mount namespace of its own (where the
        # machine has none mounted, nothing of it changes); unshare and sh exec bpftrace (one pid)
        cases["bpftrace, same tracepoints (a line each)"] = [
            "unshare", "-m", "--propagation", "private", "sh", "-c",
            "[ -d /sys/kernel/tracing/events ] || mount -t tracefs nodev /sys/kernel/tracing; exec bpftrace \"$0\"",
            str(script)]
    ready = {"faultinj trace (every hop, a line each)": "tracing", "bpftrace, same tracepoints (a line each)": "Attaching"}
    try:
        return _tracers_side_by_side(cases, ready, rounds, seconds)
    finally:
        if len(cases) > 2:
            shutil.rmtree(Path(cases["bpftrace, same tracepoints (a line each)"][-1]).parent, ignore_errors=True)


def _lost_cell(xs: list) -> str:
    """lost/s: the median, and how many rounds could not say (the tracer killed at its exit wait)."""
    if not xs:
        return ""
    known = [x for x in xs if x == x]
    cell = f"{med(known)[0] / 1e3:.1f}k" if known else "unknown"
    return cell + (f" ({len(xs) - len(known)} of {len(xs)} rounds unknown: killed at exit)" if len(known) < len(xs) else "")


def _tracers_side_by_side(cases: dict, ready: dict, rounds: int, seconds: int) -> dict:
    res = {}
    with Lab().up() as lab:
        for udp in (False, True):
            vals = {c: [] for c in cases}
            lines = {c: [] for c in cases}
            lost = {c: [] for c in cases}
            cpu = {c: [] for c in cases}
            for _ in range(rounds):
                for c, argv in cases.items():
                    if argv is None:
                        vals[c].append(_iperf(lab, udp, seconds))
                        continue
                    v, n, lo, cp = _lines_while_iperf(lab, udp, seconds, argv, ready[c])
                    vals[c].append(v)
                    lines[c].append(n)
                    lost[c].append(lo / seconds)
                    cpu[c].append(cp)
            base = vals["no tracer"]
            unit = (lambda v: f"{v / 1e9:.2f} Gbit/s") if not udp else (lambda v: f"{v / 1e3:.0f} kpps")
            table("8c. Tracing every hop, a line each, faultinj beside bpftrace" +
                  (" (UDP 64-byte)" if udp else " (TCP, one stream)"),
                  ["case", "median", "ratio to no tracer, median (min–max)", "lines/s", "lost/s", "tracer CPU"],
                  [(c, unit(med(vals[c])[0]), fmt_ratio([v / b for v, b in zip(vals[c], base)]),
                    f"{med(lines[c])[0] / 1e3:.0f}k" if lines[c] else "",
                    _lost_cell(lost[c]),
                    f"{med(cpu[c])[0]:.0%}" if cpu[c] else "") for c in cases])
            key = "udp" if udp else "tcp"
            res[f"vs_bpftrace_{key}"] = {"rate": vals, "lines_per_s": lines, "lost_per_s": lost, "cpu": cpu}
    return res


# 9 ---------------------------------------------------------------------------------------
def vm_kernels(rounds: int, quick: bool, host_per_packet: dict | None) -> dict:
    """Boot-to-ready of a guest (QEMU via virtme-ng, the agent answering), and section 1 run inside
    it: per-packet ratios to the pass program on the guest's kernel beside this machine's."""
    from faultinj.guest import kernels, vm

    kernel = kernels.resolve(os.environ.get("FAULTINJ_TEST_KERNEL", "linux-image-amd64"))
    boots, inside = [], None
    for i in range(2 if quick else 3):
        work = vm.workdir(f"bench{os.getpid()}", f"b{i}")
        t0 = time.monotonic()
        guest = vm.Guest(vm.VMSpec(f"fibench{i}", kernel), work).start()
        try:
            agent = guest.wait_ready()
            boots.append(time.monotonic() - t0)
            if inside is None:
                out = work / "guest.json"
                agent.call("exec", timeout=3600, cwd=str(ROOT), check=True, argv=[
                    sys.executable, str(HERE / "run.py"), "--only", "1", "--json", str(out)]
                    + (["--quick"] if quick else []))
                inside = json.loads(out.read_text())
        finally:
            guest.stop()
            shutil.rmtree(work, ignore_errors=True)
    accel = vm.accel()[1]
    table(f"9a. VM boot to ready ({kernel.release}, {accel}; the agent answering)", ["boots", "seconds median (min–max)"],
          [(len(boots), f"{statistics.median(boots):.1f} ({min(boots):.1f}–{max(boots):.1f})")])
    rows = []
    guest_pp = inside.get("per_packet", {})
    for label, r in guest_pp.items():
        here = (host_per_packet or {}).get(label)
        rows.append((label, fmt_ratio(here["ratio"]) if here else "(run with 1)", fmt_ratio(r["ratio"]),
                     f"{med(r['ns'])[0]:.0f}"))
    table(f"9b. Per-packet cost ratio to pass, this kernel ({platform.release()}) vs guest "
          f"({inside['meta']['kernel']}, emulated: compare ratios, not ns)",
          ["case", "ratio here", "ratio in guest", "guest ns"], rows)
    return {"boot_s": boots, "accel": accel, "guest_kernel": inside["meta"]["kernel"], "guest_per_packet": guest_pp}


# 12 --------------------------------------------------------------------------------------
def _once(cmd) -> float:
    return _once_cpu(cmd)[0]


def _once_cpu(cmd) -> tuple[float, float]:
    """Wall time and the CPU time (user + system) the process took: on a loaded machine the CPU
    time's ratio holds still where the wall time's swings."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.perf_counter() - t, ru.ru_utime + ru.ru_stime


def startup_time(rounds: int) -> dict:
    """The commands people type most, each one process, beside the interpreter's own start and the
    floor of the CLI library (`python -c 'import typer'`) in the same round: `status` with 10 faults
    applied, `apply` and `clear` of one more, `--version`, `--help`. Goal (issue 22): apply, status and
    clear each ≤ 1.5× the typer floor."""
    import compileall

    # faultinj's bytecode cached as `pip install` leaves it (typer's is): a run with
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module at every start
    compileall.compile_dir(str(ROOT / "faultinj"), quiet=1)
    py = [sys.executable, "-c", "pass"]
    floor = [sys.executable, "-c", "import typer"]
    res: dict = {}
    with Lab().up() as lab:
        ns, dev = lab.a.netns, lab.a.ifname
        for i in range(10):
            faultinj.apply("drop=0,dport=%d" % (1000 + i), lab.b.ifname, netns_name=lab.b.netns)
        cmds = {"faultinj --version": FAULTINJ + ["--version"], "faultinj --help": FAULTINJ + ["--help"],
                "faultinj status (10 faults)": FAULTINJ + ["status"],
                "faultinj apply drop=0 (tc)": FAULTINJ + ["apply", "drop=0", dev, "--netns", ns],
                "faultinj clear (1 fault)": FAULTINJ + ["clear", dev, "--netns", ns]}
        try:
            _once(cmds["faultinj apply drop=0 (tc)"])   # warm the build cache
            _once(cmds["faultinj clear (1 fault)"])
            for _ in range(rounds):
                for name, cmd in cmds.items():
                    p, (f, fcpu), (c, ccpu) = _once(py), _once_cpu(floor), _once_cpu(cmd)
                    res.setdefault(name, []).append(c)
                    res.setdefault(name + " ratio", []).append(c / p)
                    res.setdefault(name + " typer ratio", []).append(c / f)
                    res.setdefault(name + " typer cpu ratio", []).append(ccpu / fcpu)
                    res.setdefault("python -c pass", []).append(p)
                    res.setdefault("python -c 'import typer'", []).append(f)
                    res.setdefault("python -c 'import typer' ratio", []).append(f / p)
        finally:
            faultinj.clear(all_faults=True)
    ms = lambda xs: "%.0f ms (%.0f–%.0f)" % tuple(x * 1000 for x in med(xs))   # noqa: E731
    rows = [(name, ms(res[name]), fmt_ratio(res[name + " ratio"]), fmt_ratio(res[name + " typer ratio"]),
             fmt_ratio(res[name + " typer cpu ratio"])) for name in cmds]
    rows.append(("python -c 'import typer'", ms(res["python -c 'import typer'"]),
                 fmt_ratio(res["python -c 'import typer' ratio"]), "1×", "1×"))
    rows.append(("python -c pass", ms(res["python -c pass"]), "1×", "", ""))
    table("12. Command start-up: one process each, beside `python -c pass` and `python -c 'import typer'` in the "
          "same round (goal: apply, status, clear ≤ 1.5× the typer floor)",
          ["command", "median (min–max)", "ratio to python -c pass", "ratio to import typer",
           "CPU time ratio to import typer"], rows)
    return res


# 10 --------------------------------------------------------------------------------------
TIME_PATHS = {   # label -> (faultinj spec or None, tc qdisc args or None)
    "bare (noqueue)": (None, None),
    "fq alone": (None, "fq"),
    "faultinj delay=1ms (BPF + fq)": ("delay=1ms", None),
    "netem delay 1ms": (None, "netem delay 1ms"),
    "faultinj rate=50mbit (BPF + fq)": ("rate=50mbit", None),
    "netem rate 50mbit": (None, "netem rate 50mbit"),
}


def time_vs_netem(rounds: int, seconds: int) -> dict:
    """Time faults beside netem on the same veth: TCP throughput, interleaved (the BPF program's own
    per-packet cost is in section 1). Needs fq and netem: where this kernel lacks them, a guest
    (Debian 6.1) boots and runs this section inside."""
    from faultinj import doctor

    have = {p.name: p.ok for p in doctor.run() if p.name in ("fq qdisc", "netem qdisc")}
    if not all(have.values()) or len(have) < 2:
        return _time_vs_netem_in_guest(rounds, seconds)
    res = {"kernel": platform.release(), "tcp_bps": {}}
    with Lab().up() as lab:
        vals = {p: [] for p in TIME_PATHS}
        for _ in range(rounds):
            for label, (spec, qdisc) in TIME_PATHS.items():
                rec = faultinj.apply(spec, lab.a.ifname, netns_name=lab.a.netns) if spec else None
                if qdisc:
                    netns_exec(lab.a.netns, "tc", "qdisc", "add", "dev", lab.a.ifname, "root", *qdisc.split())
                try:
                    vals[label].append(_iperf(lab, False, seconds))
                finally:
                    if rec:
                        faultinj.clear(fault_id=rec.id)
                    if qdisc:
                        netns_exec(lab.a.netns, "tc", "qdisc", "del", "dev", lab.a.ifname, "root")
        res["tcp_bps"] = vals
    _time_tables(res)
    return res


def _time_tables(res: dict) -> None:
    where = f"kernel {res['kernel']}" + (", an emulated guest (TCG), one vCPU: compare ratios, not absolutes"
                                          if res.get("guest") else "")
    vals = res["tcp_bps"]
    base = vals["bare (noqueue)"]
    rows = [(label, f"{med(xs)[0] / 1e6:.0f} Mbit/s", fmt_ratio([v / b for v, b in zip(xs, base)]))
            for label, xs in vals.items()]
    table(f"10. Time faults beside netem ({where}): TCP one stream, iperf3", ["path", "median",
          "ratio to bare, median (min–max)"], rows)


def _time_vs_netem_in_guest(rounds: int, seconds: int) -> dict:
    from faultinj.guest import kernels, vm

    kernel = kernels.resolve(os.environ.get("FAULTINJ_TEST_KERNEL", "linux-image-amd64"))
    work = vm.workdir(f"bench{os.getpid()}", "time")
    guest = vm.Guest(vm.VMSpec("fibenchtime", kernel, memory="1G", cpus=1), work).start()
    try:
        agent = guest.wait_ready()
        out = work / "guest.json"
        agent.call("exec", timeout=7200, cwd=str(ROOT), check=True, argv=[
            sys.executable, str(HERE / "run.py"), "--only", "10", "--json", str(out), "--rounds", str(rounds),
            "--seconds", str(seconds)])
        res = json.loads(out.read_text())["time_vs_netem"]
    finally:
        guest.stop()
        shutil.rmtree(work, ignore_errors=True)
    res["guest"] = vm.accel()[1]
    _time_tables(res)
    return res


# 11 --------------------------------------------------------------------------------------
def attach_kinds(rounds: int, seconds: int) -> dict:
    """tcx link against tc filter, side by side: apply+clear (CLI processes and the API in one
    process) and the live path (UDP 64 B received rate, TCP throughput) with an idle drop=0."""
    res = {k: [] for k in ("cli_link", "cli_filter", "api_link", "api_filter")}
    with Lab().up() as lab:
        ns, dev = lab.a.netns, lab.a.ifname
        cli = {kind: [FAULTINJ + ["apply", "drop=0", dev, "--netns", ns, "--attach", kind],
                      FAULTINJ + ["clear", dev, "--netns", ns]] for kind in ("link", "netlink")}
        for kind in ("link", "netlink"):
            _time(cli[kind])   # warm both builds (a tcx link loads its own variant)
        for _ in range(rounds):
            for kind, key in (("link", "link"), ("netlink", "filter")):
                res[f"cli_{key}"].append(_time(cli[kind]))
                t = time.perf_counter()
                for _ in range(10):
                    rec = faultinj.apply("drop=0", dev, netns_name=ns, attach_kind=kind)
                    faultinj.clear(fault_id=rec.id)
                res[f"api_{key}"].append((time.perf_counter() - t) / 10)
        live = {}
        for udp in (True, False):
            vals = {"bare": [], "link": [], "netlink": []}
            for _ in range(rounds):
                for kind in vals:
                    rec = None if kind == "bare" else faultinj.apply("drop=0", dev, netns_name=ns, attach_kind=kind)
                    try:
                        vals[kind].append(_iperf(lab, udp, seconds))
                    finally:
                        if rec:
                            faultinj.clear(fault_id=rec.id)
            live["udp64_pps" if udp else "tcp_bps"] = vals
        res["live"] = live
    ms = lambda xs: f"{med(xs)[0] * 1000:.1f} ms"   # noqa: E731
    rows = [("apply+clear, two CLI processes", ms(res["cli_link"]), ms(res["cli_filter"]),
             fmt_ratio([a / b for a, b in zip(res["cli_link"], res["cli_filter"])])),
            ("apply+clear, Python API in-process (mean of 10)", ms(res["api_link"]), ms(res["api_filter"]),
             fmt_ratio([a / b for a, b in zip(res["api_link"], res["api_filter"])]))]
    u = live["udp64_pps"]
    rows.append(("UDP 64 B received, ratio to bare", fmt_ratio([v / b for v, b in zip(u["link"], u["bare"])]),
                 fmt_ratio([v / b for v, b in zip(u["netlink"], u["bare"])]),
                 fmt_ratio([a / b for a, b in zip(u["link"], u["netlink"])])))
    t = live["tcp_bps"]
    rows.append(("TCP one stream, ratio to bare", fmt_ratio([v / b for v, b in zip(t["link"], t["bare"])]),
                 fmt_ratio([v / b for v, b in zip(t["netlink"], t["bare"])]),
                 fmt_ratio([a / b for a, b in zip(t["link"], t["netlink"])])))
    table("11. Attach kinds: tcx link vs tc filter (drop=0 on tc egress; libbpf both)",
          ["what", "tcx link", "tc filter", "link / filter, median (min–max)"], rows)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, shorter runs")
    ap.add_argument("--json", default=str(HERE / "results.json"))
    ap.add_argument("--only", default="1,2,4,5,6,7,8,9,10,11,12,13,14", help="sections to run (3 runs with 2)")
    ap.add_argument("--rounds", type=int, help="rounds (default 7, 3 with --quick)")
    ap.add_argument("--seconds", type=int, help="seconds per live run (section 10; default 4, 2 with --quick)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (loads BPF programs, builds namespaces)", file=sys.stderr)
        return 3
    only = {int(x) for x in args.only.split(",")}
    needed = ("iperf3", "nft") if only & {2, 3, 8, 10, 11, 13, 14} else ()
    for tool in needed + ("tc", "clang"):
        if not shutil.which(tool):
            print(f"bench: {tool} not found: apt-get install iperf3 nftables iproute2 clang", file=sys.stderr)
            return 3
    only = {int(x) for x in args.only.split(",")}
    rounds = args.rounds or (3 if args.quick else 7)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    meta = {"date": time.strftime("%Y-%m-%d"), "commit": commit, "cores": os.cpu_count(), "kernel": platform.release(),
            "loadavg": os.getloadavg()}
    print(f"faultinj bench — {meta['date']}, commit {commit}, {meta['cores']} cores, kernel {meta['kernel']}, "
          f"{rounds} rounds interleaved, load average {' '.join(f'{x:.1f}' for x in meta['loadavg'])}")
    out = {"meta": meta}
    if 1 in only:
        out["per_packet"] = per_packet(rounds, 200_000 if args.quick else 1_000_000)
    if 2 in only:
        out["live"] = live_paths(rounds, 2 if args.quick else 4)
    if 4 in only:
        out["attach"] = attach_time(rounds)
    if 5 in only:
        out["status"] = status_time(rounds)
    if 6 in only:
        out["capture"] = capture_rate(2 if args.quick else 3)
    if 7 in only:
        out["run_rss"] = run_rss()
    if 8 in only:
        out["journal_tracer"] = journal_and_tracer(rounds, 2 if args.quick else 4)
    if 14 in only:
        out["tracer_bpf"] = tracer_bpf_cost(rounds, 2 if args.quick else 4)
    if 13 in only:
        out["vs_bpftrace"] = tracer_vs_bpftrace(rounds, 2 if args.quick else 4)
    if 11 in only:
        out["attach_kinds"] = attach_kinds(rounds, args.seconds or (2 if args.quick else 4))
    if 12 in only:
        out["startup"] = startup_time(rounds)
    if 9 in only:
        out["vm"] = vm_kernels(rounds, args.quick, out.get("per_packet"))
    if 10 in only:
        out["time_vs_netem"] = time_vs_netem(rounds, args.seconds or (2 if args.quick else 4))
    Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
