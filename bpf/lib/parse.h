/* SPDX-License-Identifier: GPL-2.0 */
/* Packet parsing, one rule for every helper (as xdp-tutorial's
 * parsing_helpers.h): a helper takes the cursor and data_end, checks bounds
 * and variable lengths, moves the cursor past its header and returns the next
 * protocol, or -1 when the header is absent, short or malformed. A packet
 * that cannot be parsed is passed untouched by every program. */
#ifndef FI_PARSE_H
#define FI_PARSE_H

#include "ctx.h"
#include "pkt.h"
#include <bpf/bpf_endian.h>

enum fi_parse_limit {     /* faultinj/packets.py parses as far */
	FI_MAX_VLAN = 2,
	FI_MAX_IPV6_EXT = 4,
};

struct fi_cursor {
	void *pos;
};

/* outer_known: the outer tag is not in the data (tc: the kernel moved it to
 * skb->vlan_tci), so the first tag in the data is an inner one and *vlan keeps
 * what the caller put there. */
static __always_inline int fi_parse_eth(struct fi_cursor *c, void *data_end, __u16 *vlan, int outer_known)
{
	struct ethhdr *eth = c->pos;
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		return -1;
	c->pos = eth + 1;
	proto = bpf_ntohs(eth->h_proto);

	/* 802.1Q and 802.1ad (QinQ) tags */
#pragma unroll
	for (int i = 0; i < FI_MAX_VLAN; i++) {
		struct vlan_hdr *vh = c->pos;

		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		if ((void *)(vh + 1) > data_end)
			return -1;
		if (i == 0 && !outer_known)
			*vlan = bpf_ntohs(vh->h_vlan_TCI) & 0x0FFF;
		c->pos = vh + 1;
		proto = bpf_ntohs(vh->h_vlan_encapsulated_proto);
	}
	return proto;
}

/* IPv4: sets l4_len from tot_len and marks non-first fragments. */
static __always_inline int fi_parse_ipv4(struct fi_cursor *c, void *data_end, struct fi_pkt *pkt)
{
	struct iphdr *iph = c->pos;
	__u32 hlen, tot;

	if ((void *)(iph + 1) > data_end)
		return -1;
	hlen = iph->ihl * 4;
	if (iph->version != 4 || hlen < sizeof(*iph))
		return -1;
	if (c->pos + hlen > data_end)
		return -1;
	tot = bpf_ntohs(iph->tot_len);
	/* tot_len 0 is BIG TCP's way of saying "larger than 64K": then the
	 * frame's own length counts, worked out by the caller */
	if (tot != 0 && tot < hlen)
		return -1;
	pkt->l4_len = tot ? tot - hlen : 0;
	pkt->flow.saddr[0] = iph->saddr;
	pkt->flow.daddr[0] = iph->daddr;
	pkt->ip_id = bpf_ntohs(iph->id);
	if (bpf_ntohs(iph->frag_off) & IP_OFFSET)
		pkt->nonfirst_frag = 1;
	c->pos += hlen;
	return iph->protocol;
}

/* IPv6 and its common extension headers (hop-by-hop, routing, destination
 * options, fragment, AH); a non-first fragment ends the parse. */
static __always_inline int fi_parse_ipv6(struct fi_cursor *c, void *data_end, struct fi_pkt *pkt)
{
	struct ipv6hdr *ip6h = c->pos;
	void *start;
	__u8 next;

	if ((void *)(ip6h + 1) > data_end)
		return -1;
	if (ip6h->version != 6)
		return -1;
	__builtin_memcpy(pkt->flow.saddr, ip6h->saddr, 16);
	__builtin_memcpy(pkt->flow.daddr, ip6h->daddr, 16);
	next = ip6h->nexthdr;
	c->pos = ip6h + 1;
	start = c->pos;

#pragma unroll
	for (int i = 0; i < FI_MAX_IPV6_EXT; i++) {
		struct ipv6_opt_hdr *oh = c->pos;

		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING &&
		    next != IPPROTO_DSTOPTS && next != IPPROTO_FRAGMENT && next != IPPROTO_AH)
			break;
		if ((void *)(oh + 1) > data_end)
			return -1;
		if (next == IPPROTO_FRAGMENT) {
			struct frag_hdr *fh = c->pos;

			if ((void *)(fh + 1) > data_end)
				return -1;
			if (bpf_ntohs(fh->frag_off) & 0xFFF8)
				pkt->nonfirst_frag = 1;
			next = fh->nexthdr;
			c->pos = fh + 1;
		} else if (next == IPPROTO_AH) {
			next = oh->nexthdr;
			c->pos += (oh->hdrlen + 2) * 4;
		} else {
			next = oh->nexthdr;
			c->pos += (oh->hdrlen + 1) * 8;
		}
		if (c->pos > data_end)
			return -1;
	}
	{
		__u32 plen = bpf_ntohs(ip6h->payload_len);
		__u32 ext = c->pos - start;

		if (plen != 0 && plen < ext)
			return -1;
		pkt->l4_len = plen ? plen - ext : 0;
	}
	return next;
}

/* Parse a frame from Ethernet to the start of L4. Returns 0 when the packet
 * is IPv4/IPv6 with an L4 header in reach (pkt->l4 set), 1 when it is a
 * frame to leave alone at L4 (other ethertype, non-first fragment), -1 when
 * malformed. pkt->flow is filled as far as parsed either way. */
static __always_inline int fi_parse(fi_ctx_t *ctx, struct fi_pkt *pkt)
{
	void *data, *data_end;
	struct fi_cursor c;
	int proto;

	fi_pull_headers(ctx);  /* before reading data/data_end: a pull moves them */
	data = fi_data(ctx);
	data_end = fi_data_end(ctx);
	c.pos = data;

	__builtin_memset(pkt, 0, sizeof(*pkt));
#if defined(FI_HOOK_TC)
	/* Before tc ingress (and on egress from a VLAN device with tx offload)
	 * the kernel keeps the outer tag beside the packet, not in it: that one
	 * is the outer tag, and a tag still in the data is the inner one (QinQ).
	 * XDP always sees every tag in the data. */
	pkt->mark = ctx->mark;
	if (ctx->vlan_present)
		pkt->vlan = ctx->vlan_tci & 0x0FFF;
	proto = fi_parse_eth(&c, data_end, &pkt->vlan, ctx->vlan_present);
#else
	proto = fi_parse_eth(&c, data_end, &pkt->vlan, 0);
#endif
	if (proto < 0)
		return -1;
	pkt->l3_proto = proto;
	pkt->flow.l3_proto = proto;
	pkt->l3 = c.pos;
	pkt->l3_off = c.pos - data;
	if (proto == ETH_P_IP)
		proto = fi_parse_ipv4(&c, data_end, pkt);
	else if (proto == ETH_P_IPV6)
		proto = fi_parse_ipv6(&c, data_end, pkt);
	else
		return 1;
	if (proto < 0)
		return -1;
	pkt->l4_proto = proto;
	pkt->flow.l4_proto = proto;
	if (pkt->nonfirst_frag)
		return 1;
	pkt->l4 = c.pos;
	pkt->l4_off = c.pos - data;
	if (pkt->l4_len == 0) {
		/* BIG TCP (length 0 in the IP header): what the frame holds */
		__u32 frame_len;
#if defined(FI_HOOK_TC)
		frame_len = ctx->len;
#else
		frame_len = data_end - data;
#endif
		pkt->l4_len = frame_len > pkt->l4_off ? frame_len - pkt->l4_off : 0;
	}

	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		struct udphdr *uh = c.pos; /* ports sit first in both */

		if ((void *)(uh + 1) > data_end)
			return -1;
		pkt->flow.sport = bpf_ntohs(uh->source);
		pkt->flow.dport = bpf_ntohs(uh->dest);
		pkt->has_ports = 1;
		if (proto == IPPROTO_TCP) {
			struct tcphdr *th = c.pos;

			if ((void *)(th + 1) > data_end)
				return -1;
			pkt->tcp_flags = th->flags;
			pkt->seq = bpf_ntohl(th->seq);
		}
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		struct icmp_echo *ie = c.pos;

		if ((void *)(ie + 1) > data_end)
			return -1;
		pkt->flow.sport = bpf_ntohs(ie->id);
		pkt->seq = bpf_ntohs(ie->sequence);
	}
	return 0;
}

/* Parse a frame that must be TCP: its header, bounds-checked and with a
 * sane data offset, or NULL (not TCP, malformed, a later fragment). */
static __always_inline struct tcphdr *fi_parse_tcp(fi_ctx_t *ctx, struct fi_pkt *pkt)
{
	struct tcphdr *th;

	if (fi_parse(ctx, pkt) != 0 || pkt->l4_proto != IPPROTO_TCP)
		return NULL;
	th = pkt->l4;
	if ((void *)(th + 1) > fi_data_end(ctx) || th->doff < 5)
		return NULL;
	return th;
}

#endif
