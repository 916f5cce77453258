/* SPDX-License-Identifier: GPL-2.0 */
/* The packet tracer: BTF raw tracepoints (tp_btf, no kprobes, no tracefs)
 * where a packet enters or leaves a device, and where the kernel frees one
 * as dropped. Each event carries the device's network namespace, name and
 * index, and the frame's first bytes; a filter (struct fi_match, as the
 * faults') is evaluated here, so what does not match costs a few loads. */
#include "lib/defs.h"
#include <bpf/bpf_helpers.h>
#include "lib/kernel.h"
#include "lib/match.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#define FI_SNAP 128     /* bytes of each frame, from its Ethernet header */

enum fi_hop {
	FI_HOP_QUEUE = 1,   /* net_dev_queue: leaves the device */
	FI_HOP_RX,          /* netif_rx: handed to the device's backlog */
	FI_HOP_RECEIVE,     /* netif_receive_skb (entry) */
	FI_HOP_GRO,         /* napi_gro_receive (entry) */
	FI_HOP_DROP,        /* kfree_skb: freed as a drop, with the reason */
};

struct fi_trace_event {
	__u64 ts_ns;
	__u64 skb;          /* the skb's address: one packet's hops share it, mostly */
	__u32 netns;        /* the device's network namespace inode */
	__u32 ifindex;
	__u32 len;
	__u32 reason;       /* FI_HOP_DROP: enum skb_drop_reason */
	__u16 snap;         /* bytes in frame[] */
	__u8 hop;
	__u8 pad;
	char ifname[16];
	__u8 frame[FI_SNAP];
};

struct fi_trace_config {
	__u32 active;
	__u32 pad;
	struct fi_match match;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fi_trace_config);
} fi_trace_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} fi_trace_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fi_trace_lost SEC(".maps");

/* Parse what the frame's headers say into pkt (for the filter), reading
 * kernel memory at fixed-size steps: ethernet (+2 VLAN tags), IPv4 or IPv6
 * (no extension headers), then the ports or ICMP id. 0: IP; -1: not. */
static __always_inline int fi_trace_parse(const unsigned char *l2, struct fi_pkt *pkt, __u16 vlan_tci)
{
	struct ethhdr eth;
	__u32 off = sizeof(eth);
	__be16 proto;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	if (bpf_probe_read_kernel(&eth, sizeof(eth), l2))
		return -1;
	proto = eth.h_proto;
	pkt->vlan = vlan_tci & 0x0FFF;  /* a tag the device took off (VLAN offload) */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct vlan_hdr vh;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (bpf_probe_read_kernel(&vh, sizeof(vh), l2 + off))
			return -1;
		if (i == 0 && !pkt->vlan)
			pkt->vlan = bpf_ntohs(vh.h_vlan_TCI) & 0x0FFF;
		proto = vh.h_vlan_encapsulated_proto;
		off += sizeof(vh);
	}
	pkt->l3_proto = bpf_ntohs(proto);
	pkt->flow.l3_proto = pkt->l3_proto;
	pkt->l3_off = off;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), l2 + off))
			return -1;
		pkt->l4_proto = ip.protocol;
		pkt->flow.saddr[0] = ip.saddr;
		pkt->flow.daddr[0] = ip.daddr;
		if (bpf_ntohs(ip.frag_off) & IP_OFFSET)
			return 0;  /* a later fragment: no ports */
		off += ip.ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), l2 + off))
			return -1;
		pkt->l4_proto = ip6.nexthdr;
		__builtin_memcpy(pkt->flow.saddr, &ip6.saddr, 16);
		__builtin_memcpy(pkt->flow.daddr, &ip6.daddr, 16);
		off += sizeof(ip6);
	} else {
		return -1;
	}
	pkt->flow.l4_proto = pkt->l4_proto;
	pkt->l4_off = off;
	if (pkt->l4_proto == IPPROTO_TCP || pkt->l4_proto == IPPROTO_UDP) {
		__be16 ports[2];
		__u8 flags;

		if (bpf_probe_read_kernel(ports, sizeof(ports), l2 + off))
			return 0;
		pkt->flow.sport = bpf_ntohs(ports[0]);
		pkt->flow.dport = bpf_ntohs(ports[1]);
		pkt->has_ports = 1;
		if (pkt->l4_proto == IPPROTO_TCP && !bpf_probe_read_kernel(&flags, 1, l2 + off + 13))
			pkt->tcp_flags = flags;
	} else if (pkt->l4_proto == IPPROTO_ICMP || pkt->l4_proto == IPPROTO_ICMPV6) {
		__be16 id;

		if (!bpf_probe_read_kernel(&id, sizeof(id), l2 + off + 4))
			pkt->flow.sport = bpf_ntohs(id);
	}
	return 0;
}

static __always_inline void fi_trace(const struct sk_buff *skb, __u8 hop, __u32 reason)
{
	struct fi_trace_config *cfg;
	struct fi_trace_event *e;
	struct net_device *dev;
	const unsigned char *l2;
	struct fi_pkt pkt;
	__u32 key = 0, len;
	__u16 mac;

	cfg = bpf_map_lookup_elem(&fi_trace_config, &key);
	if (!cfg || !cfg->active)
		return;
	mac = BPF_CORE_READ(skb, mac_header);
	if (mac == (__u16)~0U)   /* no link-layer header yet: nothing to read */
		return;
	l2 = BPF_CORE_READ(skb, head) + mac;
	if (fi_trace_parse(l2, &pkt, BPF_CORE_READ(skb, vlan_tci)) || !fi_match_pkt(&cfg->match, &pkt))
		return;
	e = bpf_ringbuf_reserve(&fi_trace_events, sizeof(*e), 0);
	if (!e) {
		__u64 *lost = bpf_map_lookup_elem(&fi_trace_lost, &key);

		if (lost)
			__sync_fetch_and_add(lost, 1);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->skb = (__u64)(long)skb;
	e->hop = hop;
	e->reason = reason;
	e->pad = 0;
	len = BPF_CORE_READ(skb, len);
	e->len = len;
	dev = BPF_CORE_READ(skb, dev);
	e->netns = dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : 0;
	e->ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
	if (!dev || bpf_probe_read_kernel_str(e->ifname, sizeof(e->ifname), dev->name) < 0)
		e->ifname[0] = 0;
	/* the frame from its link-layer header: at a receive hook skb->len counts
	 * from the network header, so add the mac header's length back */
	len += (__u32)(BPF_CORE_READ(skb, data) - l2);
	e->snap = len < FI_SNAP ? len : FI_SNAP;
	if (bpf_probe_read_kernel(e->frame, FI_SNAP, l2))
		e->snap = 0;
	bpf_ringbuf_submit(e, 0);
}

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

char _license[] SEC("license") = "GPL";
