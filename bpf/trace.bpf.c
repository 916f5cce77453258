/* SPDX-License-Identifier: GPL-2.0 */
/* The packet tracer: BTF raw tracepoints (tp_btf, no kprobes, no tracefs)
 * where a packet enters or leaves a device, and where the kernel frees one
 * as dropped. Each event carries the device's network namespace, name and
 * index, and the frame's first bytes; a filter (struct fi_match, as the
 * faults') is evaluated here, so what does not match costs a few loads.
 *
 * A free is not always a loss. A raw socket (ping) or a packet socket (an
 * OVS netdev port, tcpdump) gets a clone of the frame, sharing its data; the
 * original then goes on and is freed as NO_SOCKET or OTHERHOST. So a free
 * whose data a socket read (skb_copy_datagram_iovec on a skb with the same
 * head) is a delivery; a free while another skb still holds the data is
 * "shared", and user space waits for that copy's fate (FI_HOP_DELIVERED if
 * a socket reads it; a drop of its own if it is dropped). Retis follows a
 * packet across clones by its data address too. */
#include "lib/trace.h"

SEC("tp_btf/net_dev_queue")
int BPF_PROG(fi_net_dev_queue, struct sk_buff *skb)
{
	fi_trace(skb, FI_HOP_QUEUE, 0);
	return 0;
}

SEC("tp_btf/netif_rx")
int BPF_PROG(fi_netif_rx, struct sk_buff *skb)
{
	fi_trace(skb, FI_HOP_RX, 0);
	return 0;
}

SEC("tp_btf/netif_receive_skb_entry")
int BPF_PROG(fi_netif_receive_skb_entry, const struct sk_buff *skb)
{
	fi_trace(skb, FI_HOP_RECEIVE, 0);
	return 0;
}

SEC("tp_btf/napi_gro_receive_entry")
int BPF_PROG(fi_napi_gro_receive_entry, const struct sk_buff *skb)
{
	fi_trace(skb, FI_HOP_GRO, 0);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(fi_kfree_skb, struct sk_buff *skb, void *location, int reason)
{
	fi_trace(skb, FI_HOP_DROP, reason);
	return 0;
}

/* A socket reads a frame (raw, packet, UDP, TCP: every recvmsg that copies). */
SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(fi_skb_copy_datagram_iovec, const struct sk_buff *skb, int len)
{
	struct fi_trace_config *cfg;
	struct fi_trace_event *e;
	struct sock *sk;
	__u32 kind, key = 0;
	__u64 head;

	if (!skb)   /* possibly NULL to the verifier of newer kernels (lib/trace.h) */
		return 0;
	head = (__u64)(long)skb->head;
	sk = skb->sk;
	kind = sk ? (__u32)sk->__sk_common.skc_family << 16 | sk->sk_type : 0;

	if (fi_dataref(skb) > 1) {   /* its original still lives: say so when it is freed */
		bpf_map_update_elem(&fi_trace_delivered, &head, &kind, BPF_ANY);
		fi_full_fence();   /* a free on another CPU sees this mark, or this read its 'shared' */
	}
	if (!bpf_map_lookup_elem(&fi_trace_shared, &head))
		return 0;
	bpf_map_delete_elem(&fi_trace_shared, &head);
	cfg = bpf_map_lookup_elem(&fi_trace_config, &key);
	if (!cfg || cfg->active != FI_TRACE_EVENTS)
		return 0;
	e = bpf_ringbuf_reserve(&fi_trace_events, sizeof(*e), 0);
	if (!e) {
		fi_trace_lost_one();
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->skb = (__u64)(long)skb;
	e->head = head;
	e->sock = kind;
	e->hop = FI_HOP_DELIVERED;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

char _license[] SEC("license") = "GPL";
