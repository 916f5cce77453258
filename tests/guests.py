"""What runs on the other kernels (tests/test_guest.py boots each once per run, see tests/README.md).

KERNELS: the guests, by short name; each boots once, under QEMU, and runs there:
- SELECTIONS[name]: test node ids of this tree (or whole files) run by pytest inside the guest;
- SCENARIOS[name]: shipped `lab.guest` scenario files, run inside that same boot (their lab made
  directly on the guest's kernel) instead of in a boot of their own. Append yours here: a lab.guest
  scenario on no list still runs in tests/test_scenarios.py, booting its own guest.

Under emulation Python is 10-20x slower: pick each fault's core case, the kernel-dependent ones
(attach kinds, qdiscs, the tracer), and leave the exhaustive tests and the fuzzers to this
machine's kernel. Every entry costs guest time: say what it checks that this kernel cannot."""

from __future__ import annotations

import os

# 6.1: act_bpf, cls_matchall, netem, fq, openvswitch.ko as modules, no tcx.
# 6.12: tcx and XDP links, openvswitch.ko; the kernel the fix-validation work targets.
# FAULTINJ_TEST_KERNEL / FAULTINJ_TEST_KERNEL_612: a Debian package name or a vmlinuz path.
KERNELS = {
    "6.1": os.environ.get("FAULTINJ_TEST_KERNEL", "linux-image-amd64"),
    "6.12": os.environ.get("FAULTINJ_TEST_KERNEL_612", "linux-image-6.12.118+deb12-amd64"),
}

_PROGRAMS = [
    "tests/test_programs.py::test_psh_ratio_1_sets_psh_with_valid_checksum",
    "tests/test_programs.py::test_drop_probability_and_counters",
    "tests/test_programs.py::test_ttl_pong_ipv6_hop_limit",
    "tests/test_programs.py::test_past_deadline_or_switched_off_passes_everything_and_counts_nothing",
]
# the link cases: on 6.1 (no tcx) a refusal of --attach link, then auto falling back to a tc filter;
# on 6.12 tcx links for real; XDP links (5.9+) on both
_LINKS = [
    "tests/test_e2e.py::test_apply_status_set_clear_lifecycle[tcx-link]",
    "tests/test_e2e.py::test_matchall_mode_where_the_kernel_has_it_else_a_clear_refusal",
    "tests/test_e2e.py::test_second_xdp_fault_refused_unless_replace[xdp-link]",
    "tests/test_e2e.py::test_tcx_link_takes_the_place_asked",
]
# fentry, which this machine's kernel refuses: the function path runs for real only in guests;
# Open vSwitch's kernel datapath (openvswitch.ko), which this machine's kernel lacks
_TRACER = [
    "tests/test_trace.py::test_functions_taking_an_skb_are_found_from_btf",
    "tests/test_trace.py::test_functions_path_of_a_ping_across_two_namespaces",
    "tests/test_trace.py::test_a_psh_segment_injected_by_a_fault_then_its_upcall_and_the_datapaths_action",
]

SELECTIONS = {
    "6.1": [
        *_PROGRAMS,
        # the time faults on the wire: their traffic tests need fq, which guests have (the
        # kernel-independent ones, tables and models, stay on this machine)
        "tests/test_time_faults.py::test_delay_on_the_wire_or_a_clear_refusal",
        "tests/test_time_faults.py::test_a_foreign_root_qdisc_is_replaced_only_with_replace_and_put_back",
        "tests/test_time_faults.py::test_a_root_qdisc_that_cannot_be_put_back_is_not_replaced_even_with_replace",
        "tests/test_time_faults.py::test_reordered_packets_at_the_receiver_are_exactly_the_journals",
        "tests/test_time_faults.py::test_rate_paces_the_wire_exactly_and_slows_tcp",
        "tests/test_time_faults.py::test_delay_and_netem_give_the_same_distribution",
        "tests/test_time_faults.py::test_doctor_names_the_mechanism_this_kernel_offers",
        *_LINKS,
        # duplicate's copy tagged in tc_index, its id drawn with a cmpxchg on .bss (~75 s here)
        "tests/test_wire_truth.py::test_duplicate_copy_passes_only_the_faults_after_it_and_replay_agrees[egress]",
        "tests/test_reliability.py::test_doctor_reports_a_working_default_feature_set",
        *_TRACER,
        # the seed's field bug without its fault must fail (~60 s in this boot, 3-5 min in one of its own)
        "tests/test_seed_field_bug.py::test_the_seed_field_bug_scenario_fails_without_the_fault",
    ],
    # what 6.12's verifier and hooks decide: every fault program's core case, a tc and an XDP link
    # lifecycle, and the tracer (tracepoints, fentry, the OVS datapath's programs). Left to the
    # host (6.18 has tcx too) and to 6.1: doctor (89 s here), BTF's function list (115 s), tcx
    # placement (88 s), matchall (23 s) -- measured in a 6.12 guest on a loaded machine
    "6.12": [
        *_PROGRAMS,
        "tests/test_e2e.py::test_apply_status_set_clear_lifecycle[tcx-link]",
        "tests/test_e2e.py::test_second_xdp_fault_refused_unless_replace[xdp-link]",
        "tests/test_trace.py::test_ping_through_a_bridge_lists_every_hop_in_order",
        "tests/test_trace.py::test_a_kernel_drop_has_its_reason_from_btf",
        "tests/test_trace.py::test_functions_path_of_a_ping_across_two_namespaces",
        "tests/test_trace.py::test_a_psh_segment_injected_by_a_fault_then_its_upcall_and_the_datapaths_action",
    ],
}

SCENARIOS = {
    # the OVS kernel datapath (openvswitch.ko: not on this machine's kernel); the seed's field bug
    # on it (~60 s here); the advmss clamp fix, which 6.1.0-55 and later carry (~30 s)
    "6.1": ["scenarios/ovs-kernel-datapath.yaml", "scenarios/seed-field-bug.yaml", "scenarios/tcp-advmss-clamp.yaml"],
    "6.12": [],
}


def in_a_boot() -> set[str]:
    """The scenario files some guest boot runs (tests/test_scenarios.py leaves them out)."""
    return {os.path.basename(p) for paths in SCENARIOS.values() for p in paths}
