/* SPDX-License-Identifier: GPL-2.0 */
/* trace: Open vSwitch's kernel datapath on the packet's journey, where the
 * openvswitch module is loaded (its tracepoints live in the module's BTF,
 * so this object is loaded apart, its maps the tracepoints' own): an upcall
 * (a miss sent to ovs-vswitchd, or an explicit userspace action) and each
 * action the datapath executes on the packet, as Retis's ovs collector
 * shows them. Filtered by the same filter as every hop. */
#include "lib/trace.h"

/* TRACE_EVENT(ovs_dp_upcall, dp, skb, key, upcall_info) */
SEC("tp_btf/ovs_dp_upcall")
int BPF_PROG(fi_ovs_dp_upcall, void *dp, struct sk_buff *skb)
{
	fi_trace_func(skb, FI_HOP_OVS_UPCALL, 0, 0);
	return 0;
}

/* TRACE_EVENT(ovs_do_execute_action, dp, skb, key, a, rem): a is the
 * action's netlink attribute (struct nlattr: u16 len, u16 type, then the
 * argument; uapi). The event carries the type as its reason and the first
 * 32 bits of the argument (output: the datapath port) as its func. */
SEC("tp_btf/ovs_do_execute_action")
int BPF_PROG(fi_ovs_do_execute_action, void *dp, struct sk_buff *skb, void *key, void *a)
{
	__u32 attr[2] = {};

	bpf_probe_read_kernel(attr, sizeof(attr), a);
	fi_trace_func(skb, FI_HOP_OVS_EXEC, attr[0] >> 16 & 0x3FFF, attr[1]);
	return 0;
}

char _license[] SEC("license") = "GPL";
