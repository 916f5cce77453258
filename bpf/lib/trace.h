/* SPDX-License-Identifier: GPL-2.0 */
/* What the tracer's programs share (bpf/trace.bpf.c: tracepoints;
 * bpf/trace_func.bpf.c: fentry on kernel functions): the event, the maps
 * (the function programs reuse the tracepoint object's), the frame parse
 * and the filter. */
#ifndef FI_TRACE_H
#define FI_TRACE_H

#include "defs.h"
#include <bpf/bpf_helpers.h>
#include "kernel.h"
#include "match.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#define FI_SNAP 128     /* bytes of each frame, from its Ethernet header */
/* The ring: 16 MiB, ~70k events. Events are submitted without waking the
 * reader (BPF_RB_NO_WAKEUP), which reads in bulk on a 10 ms timer: a wakeup
 * per event cost the traced traffic more than the event itself */
#define FI_TRACE_RING (16 << 20)

enum fi_hop {
	FI_HOP_QUEUE = 1,   /* net_dev_queue: leaves the device */
	FI_HOP_RX,          /* netif_rx: handed to the device's backlog */
	FI_HOP_RECEIVE,     /* netif_receive_skb (entry) */
	FI_HOP_GRO,         /* napi_gro_receive (entry) */
	FI_HOP_DROP,        /* kfree_skb: freed as a drop, with the reason */
	FI_HOP_DELIVERED,   /* a socket read a copy of a frame freed as FI_DROP_SHARED */
	FI_HOP_FUNC,        /* a kernel function took the skb (trace --functions, fentry) */
	FI_HOP_OVS_UPCALL,  /* OVS's kernel datapath sent the packet to ovs-vswitchd */
	FI_HOP_OVS_EXEC,    /* ... executed an action on it (reason: which, func: its argument) */
};

/* fi_trace_event.flags of FI_HOP_DROP */
enum fi_drop_flag {
	FI_DROP_DELIVERED = 1,   /* a socket had read a copy (sock says which) */
	FI_DROP_SHARED = 2,      /* another skb still holds the data: its fate decides */
};

struct fi_trace_event {
	__u64 ts_ns;
	__u64 skb;          /* the skb's address: one packet's hops share it, mostly */
	__u64 head;         /* its data's address: shared by its clones */
	__u64 func;         /* FI_HOP_FUNC: the function's address (bpf_get_func_ip);
			     * FI_HOP_OVS_EXEC: the action's first 32 bits (output: the port) */
	__u32 netns;        /* the device's network namespace inode */
	__u32 ifindex;
	__u32 len;
	__u32 reason;       /* FI_HOP_DROP: enum skb_drop_reason; FI_HOP_OVS_EXEC: enum ovs_action_attr */
	__u32 sock;         /* the reader's socket: family << 16 | type */
	__u16 snap;         /* bytes in frame[] */
	__u8 hop;
	__u8 flags;         /* FI_DROP_* */
	char ifname[16];
	__u8 frame[FI_SNAP];
};

/* fi_trace_config.active */
enum fi_trace_mode {
	FI_TRACE_OFF = 0,
	FI_TRACE_EVENTS,    /* every hop an event on the ring */
	FI_TRACE_COUNT,     /* hops counted here (fi_trace_counts), no event: trace --stats */
};

/* A packet is traced when it passes one of the filters: a pcap-filter
 * expression compiles to an 'or' of up to FI_TRACE_SLOTS of them */
#define FI_TRACE_SLOTS 4

struct fi_trace_config {
	__u32 active;       /* enum fi_trace_mode */
	__u32 slots;        /* filters in use, 1..FI_TRACE_SLOTS */
	struct fi_match match[FI_TRACE_SLOTS];
};

/* trace --stats: what passed where, counted in the kernel */
struct fi_trace_count_key {
	__u32 netns;
	__u32 reason;       /* FI_HOP_DROP: enum skb_drop_reason; FI_HOP_OVS_EXEC: enum ovs_action_attr */
	__u8 hop;
	__u8 flags;         /* FI_DROP_* */
	__u8 sock_family;   /* FI_DROP_DELIVERED: the reader's socket (user space decides: done or a drop) */
	__u8 sock_type;
	char ifname[16];
};

struct fi_trace_count {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fi_trace_config);
} fi_trace_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, FI_TRACE_RING);
} fi_trace_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fi_trace_count_key);
	__type(value, struct fi_trace_count);
} fi_trace_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fi_trace_lost SEC(".maps");

/* data (skb->head) a socket read while the skb that brought it lived on */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} fi_trace_delivered SEC(".maps");

/* data freed as a drop while a copy lived on: waiting for that copy's fate */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} fi_trace_shared SEC(".maps");

static __always_inline void fi_trace_lost_one(void)
{
	__u32 key = 0;
	__u64 *lost = bpf_map_lookup_elem(&fi_trace_lost, &key);

	if (lost)
		__sync_fetch_and_add(lost, 1);
}

/* A full memory barrier: a fetching atomic (BPF_FETCH: a locked instruction
 * on x86, fully ordered on arm64) on a word every object has. A free and a
 * socket's read on two CPUs each write one map then read the other's
 * (fi_drop_flags, skb_copy_datagram_iovec): without a barrier between the
 * write and the read, both reads may miss (a store may wait in its CPU's
 * store buffer past a later load, which x86 allows), and a delivered reply
 * is shown as a drop (issue 25 item 8). */
static __always_inline void fi_full_fence(void)
{
	__u32 key = 0;
	__u64 *word = bpf_map_lookup_elem(&fi_trace_lost, &key), old;

	if (word) {
		old = __sync_fetch_and_add(word, 0);
		asm volatile("" : : "r"(old));   /* used: the fetching form, not a plain add */
	}
}

#define FI_HDR 72       /* QinQ + IPv6 + ports: read in one helper call */

static __always_inline __u16 fi_be16(const __u8 *b)
{
	return (__u16)b[0] << 8 | b[1];
}

/* The network and transport headers, from b (the frame's first FI_HDR
 * bytes) with l3 the network header's offset: a constant in each inlined
 * copy, so every read has a constant offset into the stack buffer. */
static __always_inline void fi_trace_l3(const __u8 *b, const unsigned char *l2, const __u32 l3, __u16 proto,
					struct fi_pkt *pkt)
{
	__u32 l4;

	pkt->l3_proto = proto;
	pkt->flow.l3_proto = proto;
	pkt->l3_off = l3;
	if (proto == ETH_P_IP) {
		__u8 ihl = b[l3] & 0x0F;

		pkt->l4_proto = b[l3 + 9];
		__builtin_memcpy(&pkt->flow.saddr[0], b + l3 + 12, 4);
		__builtin_memcpy(&pkt->flow.daddr[0], b + l3 + 16, 4);
		if (fi_be16(b + l3 + 6) & IP_OFFSET)
			return;  /* a later fragment: no ports */
		if (ihl != 5) {  /* options: the ports are further on, read them from the frame */
			__u8 p[14];

			pkt->flow.l4_proto = pkt->l4_proto;
			if (ihl < 5 || bpf_probe_read_kernel(p, sizeof(p), l2 + l3 + ihl * 4))
				return;
			pkt->l4_off = l3 + ihl * 4;
			if (pkt->l4_proto == IPPROTO_TCP || pkt->l4_proto == IPPROTO_UDP) {
				pkt->flow.sport = fi_be16(p);
				pkt->flow.dport = fi_be16(p + 2);
				pkt->has_ports = 1;
				if (pkt->l4_proto == IPPROTO_TCP)
					pkt->tcp_flags = p[13];
			} else if (pkt->l4_proto == IPPROTO_ICMP) {
				pkt->flow.sport = fi_be16(p + 4);
			}
			return;
		}
		l4 = l3 + 20;
	} else if (proto == ETH_P_IPV6) {
		pkt->l4_proto = b[l3 + 6];
		__builtin_memcpy(pkt->flow.saddr, b + l3 + 8, 16);
		__builtin_memcpy(pkt->flow.daddr, b + l3 + 24, 16);
		l4 = l3 + 40;  /* extension headers are not walked */
	} else {
		return;
	}
	pkt->flow.l4_proto = pkt->l4_proto;
	pkt->l4_off = l4;
	if (pkt->l4_proto == IPPROTO_TCP || pkt->l4_proto == IPPROTO_UDP) {
		pkt->flow.sport = fi_be16(b + l4);
		pkt->flow.dport = fi_be16(b + l4 + 2);
		pkt->has_ports = 1;
		if (pkt->l4_proto == IPPROTO_TCP && l4 + 14 <= FI_HDR)
			pkt->tcp_flags = b[l4 + 13];
	} else if (pkt->l4_proto == IPPROTO_ICMP || pkt->l4_proto == IPPROTO_ICMPV6) {
		pkt->flow.sport = fi_be16(b + l4 + 4);
	}
}

/* Parse what the frame's headers say into pkt (for the filter): ethernet,
 * up to two VLAN tags, IPv4 or IPv6, then the ports or the ICMP id. */
static __always_inline void fi_trace_parse(const __u8 *b, const unsigned char *l2, __u16 vlan_tci,
					   struct fi_pkt *pkt)
{
	__u16 proto = fi_be16(b + 12);

	__builtin_memset(pkt, 0, sizeof(*pkt));
	pkt->vlan = vlan_tci & 0x0FFF;  /* a tag the device took off (VLAN offload) */
	if (proto != ETH_P_8021Q && proto != ETH_P_8021AD) {
		fi_trace_l3(b, l2, 14, proto, pkt);
		return;
	}
	if (!pkt->vlan)
		pkt->vlan = fi_be16(b + 14) & 0x0FFF;
	proto = fi_be16(b + 16);
	if (proto != ETH_P_8021Q && proto != ETH_P_8021AD) {
		fi_trace_l3(b, l2, 18, proto, pkt);
		return;
	}
	fi_trace_l3(b, l2, 22, fi_be16(b + 20), pkt);
}

/* How many skbs hold this skb's data (skb_clone shares it; the low 16 bits). */
static __always_inline int fi_dataref(const struct sk_buff *skb)
{
	struct skb_shared_info *sh = (void *)(skb->head + skb->end);
	int ref = 0;

	bpf_probe_read_kernel(&ref, sizeof(ref), &sh->dataref.counter);
	return ref & 0xFFFF;
}

/* A drop's flags: was the frame delivered to a socket, or does a copy live on? */
static __always_inline __u8 fi_drop_flags(__u64 head, __u32 *sock, int shared)
{
	__u32 *kind = bpf_map_lookup_elem(&fi_trace_delivered, &head), one = 1;

	if (!kind && shared) {
		bpf_map_update_elem(&fi_trace_shared, &head, &one, BPF_ANY);
		fi_full_fence();   /* the write above is seen before the read below (see there) */
		kind = bpf_map_lookup_elem(&fi_trace_delivered, &head);  /* read meanwhile? */
		if (!kind)
			return FI_DROP_SHARED;
		bpf_map_delete_elem(&fi_trace_shared, &head);
	}
	if (!kind)
		return 0;
	*sock = *kind;
	bpf_map_delete_elem(&fi_trace_delivered, &head);
	return FI_DROP_DELIVERED;
}

static __always_inline int fi_trace_match(const struct fi_trace_config *cfg, const struct fi_pkt *pkt)
{
#pragma unroll
	for (int i = 0; i < FI_TRACE_SLOTS; i++)
		if (i < cfg->slots && fi_match_pkt(&cfg->match[i], pkt))
			return 1;
	return 0;
}

/* trace --stats: one more of this hop, where it happened */
static __always_inline void fi_trace_count(const struct sk_buff *skb, __u8 hop, __u32 reason)
{
	struct fi_trace_count_key k;
	struct fi_trace_count *c, one = { 1, skb->len };
	struct net_device *dev = skb->dev;
	__u32 sock = 0;

	__builtin_memset(&k, 0, sizeof(k));
	k.hop = hop;
	k.reason = reason;
	/* a free while a copy lives on stays FI_DROP_SHARED: no event follows its copy here */
	k.flags = hop == FI_HOP_DROP ? fi_drop_flags((__u64)(long)skb->head, &sock, fi_dataref(skb) > 1) : 0;
	k.sock_family = sock >> 16;
	k.sock_type = sock & 0xFF;
	if (dev) {
		k.netns = dev->nd_net.net->ns.inum;
		bpf_probe_read_kernel_str(k.ifname, sizeof(k.ifname), dev->name);
	}
	c = bpf_map_lookup_elem(&fi_trace_counts, &k);
	if (c) {
		c->packets++;   /* per CPU: no atomics */
		c->bytes += one.bytes;
	} else {
		bpf_map_update_elem(&fi_trace_counts, &k, &one, BPF_NOEXIST);
	}
}

static __always_inline void fi_trace_func(const struct sk_buff *skb, __u8 hop, __u32 reason, __u64 func)
{
	struct fi_trace_config *cfg;
	struct fi_trace_event *e;
	struct net_device *dev;
	const unsigned char *l2;
	__u8 hdr[FI_HDR];
	struct fi_pkt pkt;
	__u32 key = 0, len;
	__u16 mac, proto;

	/* Newer kernels (6.12 for OVS's tracepoints and others) type some
	 * tracepoint arguments as possibly NULL (trusted_ptr_or_null_): the
	 * verifier refuses a field load before this check */
	if (!skb)
		return;
	cfg = bpf_map_lookup_elem(&fi_trace_config, &key);
	if (!cfg || !cfg->active)
		return;
	/* tp_btf: the skb is a typed kernel pointer, its fields plain loads (CO-RE relocated) */
	mac = skb->mac_header;
	if (mac == (__u16)~0U) {
		/* no link-layer header (yet): a function on the send path. The filter
		 * reads the network header; the frame is not shown */
		if (hop != FI_HOP_FUNC || skb->network_header == (__u16)~0U)
			return;
		l2 = skb->head + skb->network_header;
		if (bpf_probe_read_kernel(hdr, sizeof(hdr), l2))
			return;
		__builtin_memset(&pkt, 0, sizeof(pkt));
		proto = bpf_ntohs(skb->protocol);
		if (!proto)   /* not set yet (ip_output sets it): the version says */
			proto = hdr[0] >> 4 == 4 ? ETH_P_IP : hdr[0] >> 4 == 6 ? ETH_P_IPV6 : 0;
		fi_trace_l3(hdr, l2, 0, proto, &pkt);
		mac = (__u16)~0U;
	} else {
		l2 = skb->head + mac;
		if (bpf_probe_read_kernel(hdr, sizeof(hdr), l2))
			return;
		fi_trace_parse(hdr, l2, skb->vlan_tci, &pkt);
	}
	pkt.mark = skb->mark;
	if (!fi_trace_match(cfg, &pkt))
		return;
	if (hop <= FI_HOP_GRO) {
		/* a device hop: whatever a socket read of this data before is not this
		 * packet's fate any more (the data's address is reused once freed, and a
		 * copy read while its original was consumed leaves a mark nobody takes) */
		__u64 head = (__u64)(long)skb->head;

		if (bpf_map_lookup_elem(&fi_trace_delivered, &head))
			bpf_map_delete_elem(&fi_trace_delivered, &head);
	}
	if (cfg->active == FI_TRACE_COUNT) {
		fi_trace_count(skb, hop, reason);
		return;
	}
	e = bpf_ringbuf_reserve(&fi_trace_events, sizeof(*e), 0);
	if (!e) {
		fi_trace_lost_one();
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->skb = (__u64)(long)skb;
	e->hop = hop;
	e->reason = reason;
	e->head = (__u64)(long)skb->head;
	e->func = func;
	e->sock = 0;
	e->flags = hop == FI_HOP_DROP ? fi_drop_flags(e->head, &e->sock, fi_dataref(skb) > 1) : 0;
	len = skb->len;
	e->len = len;
	dev = skb->dev;
	e->netns = dev ? dev->nd_net.net->ns.inum : 0;
	e->ifindex = dev ? dev->ifindex : 0;
	if (!dev || bpf_probe_read_kernel_str(e->ifname, sizeof(e->ifname), dev->name) < 0)
		e->ifname[0] = 0;
	/* the frame from its link-layer header: at a receive hook skb->len counts
	 * from the network header, so add the mac header's length back */
	len += (__u32)(skb->data - l2);
	if (mac == (__u16)~0U) {
		/* from the network header: behind an Ethernet header of zeros and the
		 * protocol, so the frame reads (and parses) as the others do */
		__u16 wire = bpf_htons(pkt.l3_proto);

		len = skb->len + 14;
		__builtin_memset(e->frame, 0, 12);
		__builtin_memcpy(e->frame + 12, &wire, 2);
		e->snap = len < FI_SNAP ? len : FI_SNAP;
		if (bpf_probe_read_kernel(e->frame + 14, FI_SNAP - 14, l2))
			e->snap = 0;
	} else {
		e->snap = len < FI_SNAP ? len : FI_SNAP;
		if (bpf_probe_read_kernel(e->frame, FI_SNAP, l2))
			e->snap = 0;
	}
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void fi_trace(const struct sk_buff *skb, __u8 hop, __u32 reason)
{
	fi_trace_func(skb, hop, reason, 0);
}

#endif
