"""A user's own BPF C program (`faultinj apply --program FILE.c`): compiled,
loaded as the hook's program type, then pinned, attached, listed and cleared
like any fault by api.py. It has no faultinj config map: no rate, filter,
seed, deadline or counters; status lists its maps instead."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import SpecError
from ..kernel import build, libbpf

HOOK_TYPES = {"xdp": libbpf.BPF_PROG_TYPE_XDP, "tc-ingress": libbpf.BPF_PROG_TYPE_SCHED_CLS,
              "tc-egress": libbpf.BPF_PROG_TYPE_SCHED_CLS}
# section names (libbpf's and iproute2's legacy ones) that say the hook
_TC_SECTIONS = ("tc", "tcx", "classifier", "action")


def compile_source(source: str) -> Path:
    """The object file for source. An entry function without SEC() (the seed article's programs,
    as printed) lands in .text, where libbpf sees no program: then each function gets a section."""
    path = Path(source).resolve()
    obj = build.compile_custom(path)
    if not libbpf.list_programs(str(obj)):
        discard(obj)
        obj = build.compile_custom(path, function_sections=True)
        if not libbpf.list_programs(str(obj)):
            discard(obj)
            raise SpecError(f"{source} has no BPF program: it needs a non-static function taking "
                            "struct xdp_md * or struct __sk_buff *")
    return obj


def pick(obj: Path, section: str | None) -> tuple[str, str]:
    """(function, section) of the program to attach: the only one, or the one --section names."""
    progs = libbpf.list_programs(str(obj))
    have = ", ".join(f"{n} (section {s})" for n, s in progs)
    if section:
        for name, sec in progs:
            if section in (name, sec):
                return name, sec
        raise SpecError(f"no program '{section}' in the object; its programs: {have}")
    if len(progs) > 1:
        raise SpecError(f"{len(progs)} programs in the object ({have}): choose one with --section")
    return progs[0]


def hook_of_section(section: str, source: str) -> str:
    head = section.split("/")[0]
    if head.startswith("xdp"):
        return "xdp"
    if head in _TC_SECTIONS:
        return "tc-egress"
    raise SpecError(f"cannot tell where {source}'s program (section '{section}') runs: "
                    "give --hook xdp, ingress or egress")


def load(obj: Path, hook: str, function: str, tc_mode: str = "cls_bpf") -> libbpf.LoadedObject:
    """tc_mode 'matchall': as a tc action (act_bpf takes only BPF_PROG_TYPE_SCHED_ACT programs)."""
    prog_type = libbpf.BPF_PROG_TYPE_SCHED_ACT if tc_mode == "matchall" and hook != "xdp" else HOOK_TYPES[hook]
    return libbpf.load_object(str(obj), None, prog_type, function)


def discard(obj: Path) -> None:
    shutil.rmtree(obj.parent, ignore_errors=True)


def pinned_maps(pin_dir: str) -> list[dict]:
    """The maps pinned beside a custom program: name and kernel id."""
    out = []
    try:
        names = sorted(n for n in os.listdir(pin_dir) if n not in ("prog", "link"))   # link: a tcx/XDP link
    except OSError:
        return out
    for name in names:
        try:
            fd = libbpf.obj_get(f"{pin_dir}/{name}")
        except Exception:
            continue
        try:
            out.append({"name": name, "id": libbpf.object_id(fd), "pin": f"{pin_dir}/{name}"})
        finally:
            os.close(fd)
    return out
