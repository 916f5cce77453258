"""Build and load a fault's program, unattached: what apply attaches, and
what program tests and `replay` run with BPF_PROG_TEST_RUN."""

from __future__ import annotations

from ..faults import FaultSpec
from . import build, libbpf, maps


def load(spec: FaultSpec, seed: int, deadline_ns: int = 0, dry_run: bool = False,
         journal: bool | None = None, tc_mode: str = "cls_bpf", tcx: bool = False) -> libbpf.LoadedObject:
    """Compile (cached), load, and write the config for spec; the caller closes it.
    dry_run: the program decides and counts but sends nothing of its own (duplicate's copies):
    for BPF_PROG_TEST_RUN, where a copy would leave through this namespace's loopback.
    journal: record each action in the fi_journal ring buffer (`faultinj journal`); None: as the
    spec says (journal=on, the default, or journal=off).
    tc_mode: 'matchall' loads the program as a tc action (BPF_PROG_TYPE_SCHED_ACT), which act_bpf
    requires; 'cls_bpf' as a classifier. tcx: for a tcx link (verdicts: bpf/lib/ctx.h)."""
    act = tc_mode == "matchall" and spec.hook != "xdp"
    obj_path = build.compile_program(spec.fault.program, spec.hook, act=act, tcx=tcx and spec.hook != "xdp")
    obj = libbpf.load_object(str(obj_path), maps.MAP_NAMES + tuple(spec.tables),
                             libbpf.BPF_PROG_TYPE_SCHED_ACT if act else None)
    try:
        maps.write_spec(obj.map_fds, spec, seed, deadline_ns, fresh=True, dry_run=dry_run, journal=journal)
    except BaseException:
        obj.close()
        raise
    return obj
