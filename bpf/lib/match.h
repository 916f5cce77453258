/* SPDX-License-Identifier: GPL-2.0 */
/* The match filters every fault (and the tracer) shares, packed by
 * faultinj/faults/match.py: src/dst CIDR, protocol, port ranges, TCP flags,
 * VLAN. Kept in a map, so filters change without a reload. */
#ifndef FI_MATCH_H
#define FI_MATCH_H

#include "pkt.h"
#include <bpf/bpf_helpers.h>

/* Which packets a fault may act on; a field counts only when its FI_M_* bit
 * is set. Lives in the config map: filters change without a reload. */
struct fi_match {
	__u32 fields;              /* FI_M_* */
	__u8 l4_proto;
	__u8 tcp_set;              /* these TCP flags must be present */
	__u8 tcp_clear;            /* these must be absent */
	__u8 pad;
	__u16 sport_lo, sport_hi;
	__u16 dport_lo, dport_hi;
	__u16 vlan;
	__u16 negate;              /* FI_M_* bits whose test is inverted (trace 'not port 22') */
	__u32 src[4], src_mask[4]; /* IPv4 in src[0] (with FI_M_SRC4), or IPv6 (FI_M_SRC6) */
	__u32 dst[4], dst_mask[4];
	__u32 nth;                 /* act only on the nth packet of each flow (1-based); 0: any */
	__u32 mark, mark_mask;     /* skb->mark & mark_mask == mark (FI_M_MARK; tc and the tracer) */
};

enum fi_match_field {   /* fi_match.fields and .negate; read from the BTF by faults/match.py */
	FI_M_SRC4 = 1 << 0,
	FI_M_SRC6 = 1 << 1,
	FI_M_DST4 = 1 << 2,
	FI_M_DST6 = 1 << 3,
	FI_M_PROTO = 1 << 4,
	FI_M_SPORT = 1 << 5,
	FI_M_DPORT = 1 << 6,
	FI_M_TCP_FLAGS = 1 << 7,
	FI_M_VLAN = 1 << 8,
	FI_M_MARK = 1 << 9,
};

static __always_inline int fi_addr_in(const __u32 *addr, const __u32 *net, const __u32 *mask, int words)
{
#pragma unroll
	for (int i = 0; i < 4; i++)
		if (i < words && (addr[i] & mask[i]) != net[i])
			return 0;
	return 1;
}

/* A field's verdict: a field not filtered passes; a filtered one passes
 * when its test hit, or, negated, when it did not. */
#define FI_M_FAILS(m, bit, hit) (((m)->fields & (bit)) && !(hit) != !!((m)->negate & (bit)))

/* Does the packet pass the filter? A field's test never hits a packet
 * that lacks that header (so a negated one passes it: 'not port 22' passes
 * ICMP, as in pcap-filter). */
static __always_inline int fi_match_pkt(const struct fi_match *m, const struct fi_pkt *pkt)
{
	__u32 f = m->fields;
	int ip4 = pkt->l3_proto == ETH_P_IP, ip6 = pkt->l3_proto == ETH_P_IPV6;
	int ports = pkt->has_ports;

	if (!f)
		return 1;
	if (FI_M_FAILS(m, FI_M_VLAN, pkt->vlan == m->vlan))
		return 0;
	if (FI_M_FAILS(m, FI_M_MARK, (pkt->mark & m->mark_mask) == m->mark))
		return 0;
	if (FI_M_FAILS(m, FI_M_SRC4, ip4 && fi_addr_in(pkt->flow.saddr, m->src, m->src_mask, 1)))
		return 0;
	if (FI_M_FAILS(m, FI_M_DST4, ip4 && fi_addr_in(pkt->flow.daddr, m->dst, m->dst_mask, 1)))
		return 0;
	if (FI_M_FAILS(m, FI_M_SRC6, ip6 && fi_addr_in(pkt->flow.saddr, m->src, m->src_mask, 4)))
		return 0;
	if (FI_M_FAILS(m, FI_M_DST6, ip6 && fi_addr_in(pkt->flow.daddr, m->dst, m->dst_mask, 4)))
		return 0;
	/* l4_proto is 0 where not IP: never a filter's */
	if (FI_M_FAILS(m, FI_M_PROTO, pkt->l4_proto == m->l4_proto))
		return 0;
	if (FI_M_FAILS(m, FI_M_SPORT, ports && pkt->flow.sport >= m->sport_lo && pkt->flow.sport <= m->sport_hi))
		return 0;
	if (FI_M_FAILS(m, FI_M_DPORT, ports && pkt->flow.dport >= m->dport_lo && pkt->flow.dport <= m->dport_hi))
		return 0;
	if (FI_M_FAILS(m, FI_M_TCP_FLAGS, pkt->l4_proto == IPPROTO_TCP && ports &&
					  (pkt->tcp_flags & m->tcp_set) == m->tcp_set && !(pkt->tcp_flags & m->tcp_clear)))
		return 0;
	return 1;
}

#endif
