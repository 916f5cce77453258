"""Does every BPF program of faultinj load on this kernel? Each fault on each hook it runs on (and
as a tc action, and for a tcx link), the tracer's tracepoints (attached), its fentry program on one
function per skb argument position, and OVS's datapath tracepoints where openvswitch.ko loads.
One JSON object on stdout: {"release": ..., "results": {name: "ok" | "skip: why" | "FAIL: why"}}.

    python bench/load_all.py                       # this kernel
    python bench/load_all.py --guest /tmp/k612/root/boot/vmlinuz-6.12.118+deb12-amd64
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _try(results: dict, name: str, fn) -> None:
    try:
        out = fn()
        results[name] = out if isinstance(out, str) else "ok"
    except Exception as exc:   # noqa: BLE001 - reported, one line each
        results[name] = f"FAIL: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400]
        results[name + ".log"] = str(exc)[-1500:]


def load_everything() -> dict:
    from faultinj.faults import CATALOGUE
    from faultinj.kernel import build, libbpf
    from faultinj import trace

    results: dict = {}
    for f in sorted(CATALOGUE.values(), key=lambda f: f.name):
        if not f.program:
            continue
        for hook in f.hooks:
            variants = [("", {})]
            if hook != "xdp":
                variants += [(".act", {"act": True}), (".tcx", {"tcx": True})]
            for tag, kw in variants:
                def load(f=f, hook=hook, kw=kw):
                    obj = libbpf.load_object(str(build.compile_program(f.program, hook, **kw)), None,
                                             libbpf.BPF_PROG_TYPE_SCHED_ACT if kw.get("act") else None)
                    obj.close()
                _try(results, f"{f.program}@{hook}{tag}", load)

    keep = {}

    def tracer():
        o = libbpf.TracingObject(str(build.compile_program("trace", "trace")), trace.SHARED_MAPS)
        o.attach()
        keep["trace"] = o
    _try(results, "trace (tp_btf)", tracer)

    def ovs():
        if not os.path.isdir("/sys/module/openvswitch"):
            subprocess.run(["modprobe", "openvswitch"], capture_output=True)
        if not os.path.isfile(trace.OVS_BTF):
            return "skip: no openvswitch module"
        o = libbpf.TracingObject(str(build.compile_program("trace_ovs", "trace")), (),
                                 {m: keep["trace"].map_fds[m] for m in trace.SHARED_MAPS})
        o.attach()
        o.close()
    _try(results, "trace_ovs (tp_btf, openvswitch)", ovs)

    # fentry: one function for each argument position the skb can take
    def functions():
        found = libbpf.btf_functions_taking(trace.check_btf(), "sk_buff")
        by_arg: dict[int, list[str]] = {}
        for name, arg in sorted(found.items()):
            by_arg.setdefault(arg, []).append(name)
        return by_arg
    by_arg = {}
    _try(results, "btf functions", lambda: by_arg.update(functions()))
    path = str(build.compile_program("trace_func", "trace")) if "trace" in keep else None
    for arg in range(5):
        def fentry(arg=arg):
            if path is None:
                return "skip: the tracer did not load"
            last = None
            for name in by_arg.get(arg, [])[:20]:
                try:
                    p = libbpf.FunctionProgram(path, f"fi_fn_skb{arg}", name,
                                               {m: keep["trace"].map_fds[m] for m in trace.SHARED_MAPS})
                    p.close()
                    return f"ok ({name})"
                except libbpf.FunctionRefused as exc:
                    last = exc
                    if exc.errno == 13:   # EACCES: the verifier refused the program itself
                        raise
                    if exc.errno == 1:   # EPERM: this kernel refuses fentry altogether
                        return f"skip: this kernel refuses fentry ({os.strerror(exc.errno)})"
                    # else (EOPNOTSUPP, ENOTSUPP, EINVAL): this function cannot be traced: the next
            return f"skip: no traceable function with the skb as argument {arg} ({str(last)[:200]})"
        _try(results, f"trace_func fi_fn_skb{arg} (fentry)", fentry)
    for o in keep.values():
        o.close()
    return results


def in_guest(vmlinuz: str, trees: list[str]) -> dict:
    """Boot the kernel once and run this script there from each tree (this one by default; another
    checkout, e.g. an older commit's, to compare): {tree: its result}."""
    import shutil

    from faultinj.guest import kernels, vm

    kernel = kernels.resolve(vmlinuz)
    work = vm.workdir(f"ld{os.getpid()}", "load")
    guest = vm.Guest(vm.VMSpec(f"ld{os.getpid() % 10000}", kernel, memory="1G", cpus=1), work).start()
    out_all = {}
    try:
        agent = guest.wait_ready()
        for i, tree in enumerate(trees):
            out = work / f"load{i}.json"
            argv = [sys.executable, str(Path(tree) / "bench" / "load_all.py")]
            agent.call("exec", timeout=1800, cwd=tree, argv=[
                "sh", "-c", " ".join(shlex.quote(a) for a in argv) + f" > {shlex.quote(str(out))} 2>&1; echo $?"])
            text = out.read_text()
            try:
                out_all[tree] = json.loads(text)
            except ValueError:
                out_all[tree] = {"release": agent.info["release"], "error": text[-3000:]}
    finally:
        guest.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out_all


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--guest":
        res = in_guest(sys.argv[2], sys.argv[3:] or [str(ROOT)])
        print(json.dumps(res, indent=1))
        bad = any("error" in r or any(str(v).startswith("FAIL") for v in r.get("results", {}).values())
                  for r in res.values())
    else:
        res = {"release": platform.release(), "results": load_everything()}
        print(json.dumps(res, indent=1))
        bad = "error" in res or any(str(v).startswith("FAIL") for v in res["results"].values())
    sys.exit(1 if bad else 0)
