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
	__u16 pad2;
	__u32 src[4], src_mask[4]; /* IPv4 in src[0] (with FI_M_SRC4), or IPv6 (FI_M_SRC6) */
	__u32 dst[4], dst_mask[4];
	__u32 nth;                 /* act only on the nth packet of each flow (1-based); 0: any */
};

#define FI_M_SRC4 (1 << 0)
#define FI_M_SRC6 (1 << 1)
#define FI_M_DST4 (1 << 2)
#define FI_M_DST6 (1 << 3)
#define FI_M_PROTO (1 << 4)
#define FI_M_SPORT (1 << 5)
#define FI_M_DPORT (1 << 6)
#define FI_M_TCP_FLAGS (1 << 7)
#define FI_M_VLAN (1 << 8)

static __always_inline int fi_addr_in(const __u32 *addr, const __u32 *net, const __u32 *mask, int words)
{
#pragma unroll
	for (int i = 0; i < 4; i++)
		if (i < words && (addr[i] & mask[i]) != net[i])
			return 0;
	return 1;
}

/* Does the packet pass the fault's filter? An address, port, protocol or
 * flag filter never matches a packet that lacks that header. */
static __always_inline int fi_match_pkt(const struct fi_match *m, const struct fi_pkt *pkt)
{
	__u32 f = m->fields;

	if (!f)
		return 1;
	if ((f & FI_M_VLAN) && pkt->vlan != m->vlan)
		return 0;
	if (f & (FI_M_SRC4 | FI_M_DST4)) {
		if (pkt->l3_proto != ETH_P_IP)
			return 0;
		if ((f & FI_M_SRC4) && !fi_addr_in(pkt->flow.saddr, m->src, m->src_mask, 1))
			return 0;
		if ((f & FI_M_DST4) && !fi_addr_in(pkt->flow.daddr, m->dst, m->dst_mask, 1))
			return 0;
	}
	if (f & (FI_M_SRC6 | FI_M_DST6)) {
		if (pkt->l3_proto != ETH_P_IPV6)
			return 0;
		if ((f & FI_M_SRC6) && !fi_addr_in(pkt->flow.saddr, m->src, m->src_mask, 4))
			return 0;
		if ((f & FI_M_DST6) && !fi_addr_in(pkt->flow.daddr, m->dst, m->dst_mask, 4))
			return 0;
	}
	if ((f & FI_M_PROTO) && pkt->l4_proto != m->l4_proto) /* 0 where not IP: never a filter's */
		return 0;
	if (f & (FI_M_SPORT | FI_M_DPORT)) {
		if (!pkt->has_ports)
			return 0;
		if ((f & FI_M_SPORT) && (pkt->flow.sport < m->sport_lo || pkt->flow.sport > m->sport_hi))
			return 0;
		if ((f & FI_M_DPORT) && (pkt->flow.dport < m->dport_lo || pkt->flow.dport > m->dport_hi))
			return 0;
	}
	if (f & FI_M_TCP_FLAGS) {
		if (pkt->l4_proto != IPPROTO_TCP || !pkt->has_ports)
			return 0;
		if ((pkt->tcp_flags & m->tcp_set) != m->tcp_set || (pkt->tcp_flags & m->tcp_clear))
			return 0;
	}
	return 1;
}

#endif
