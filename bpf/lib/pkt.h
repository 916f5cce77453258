/* SPDX-License-Identifier: GPL-2.0 */
/* What a parsed packet is, for the fault programs (parse.h fills it from the
 * frame) and the tracer (trace.bpf.c fills it from an skb). No hook context. */
#ifndef FI_PKT_H
#define FI_PKT_H

#include "defs.h"

/* The flow a packet belongs to; keys the per-flow state of the seeded
 * random stream. Ports are ICMP echo ids for echo packets, 0 where absent. */
struct fi_flow {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u16 l3_proto;
	__u8 l4_proto;
	__u8 pad;
};

struct fi_pkt {
	void *l3;
	void *l4;            /* NULL when there is no L4 header to look at */
	__u32 l3_off;        /* byte offsets from the start of the frame */
	__u32 l4_off;
	__u32 l4_len;        /* L4 header + payload, from the IP header's length */
	__u16 l3_proto;      /* ETH_P_IP, ETH_P_IPV6, or another ethertype */
	__u8 l4_proto;
	__u8 nonfirst_frag;  /* a fragment without the L4 header: left alone */
	__u8 tcp_flags;      /* TCP only */
	__u8 has_ports;      /* TCP or UDP: flow.sport/dport are ports */
	__u16 vlan;          /* VID of the outer tag; 0 untagged */
	__u16 ip_id;         /* IPv4 identification (for the journal) */
	__u32 seq;           /* TCP sequence number, ICMP echo sequence (for the journal) */
	__u32 mark;          /* skb->mark (tc, the tracer; 0 at XDP, which has none) */
	struct fi_flow flow;
};

#endif
