/* SPDX-License-Identifier: GPL-2.0 */
/* ttl-pong: ICMP echo replies (pongs) get a TTL (IPv4) or hop limit (IPv6)
 * drawn uniformly from 1..original, as in the seed article's xdp_manglepong.
 * The IPv4 header checksum is updated; IPv6 has none over the hop limit,
 * and ICMPv6's pseudo header does not include it. */
#include "lib/fault.h"
#include "lib/csum.h"

SEC(FI_SEC)
int ttl_pong(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_pkt pkt;
	void *data_end;
	__u64 draw;

	cfg = fi_config_get(ctx);
	if (!cfg)
		return FI_PASS;
	if (fi_parse(ctx, &pkt) != 0 || !fi_match(cfg, &pkt))
		return FI_PASS;
	data_end = fi_data_end(ctx);

	if (pkt.l3_proto == ETH_P_IP && pkt.l4_proto == IPPROTO_ICMP) {
		struct iphdr *iph = pkt.l3;
		struct icmp_echo *ie = pkt.l4;
		__u8 old_ttl, new_ttl;

		if ((void *)(iph + 1) > data_end || (void *)(ie + 1) > data_end)
			return FI_PASS;
		if (ie->type != ICMP_ECHOREPLY || iph->ttl == 0)
			return FI_PASS;
		fi_count(FI_MATCHED);
		if (!fi_decide(cfg, &pkt, &draw))
			return FI_PASS;
		old_ttl = iph->ttl;
		new_ttl = (__u32)draw % old_ttl + 1;
		/* TTL and protocol form one 16-bit word of the header */
		fi_csum_replace2(&iph->check, bpf_htons(((__u16)old_ttl << 8) | iph->protocol),
				 bpf_htons(((__u16)new_ttl << 8) | iph->protocol));
		iph->ttl = new_ttl;
		fi_acted(ctx, cfg, &pkt, FI_A_MODIFY, new_ttl);
	} else if (pkt.l3_proto == ETH_P_IPV6 && pkt.l4_proto == IPPROTO_ICMPV6) {
		struct ipv6hdr *ip6h = pkt.l3;
		struct icmp_echo *ie = pkt.l4;

		if ((void *)(ip6h + 1) > data_end || (void *)(ie + 1) > data_end)
			return FI_PASS;
		if (ie->type != ICMPV6_ECHO_REPLY || ip6h->hop_limit == 0)
			return FI_PASS;
		fi_count(FI_MATCHED);
		if (!fi_decide(cfg, &pkt, &draw))
			return FI_PASS;
		ip6h->hop_limit = (__u32)draw % ip6h->hop_limit + 1;
		fi_acted(ctx, cfg, &pkt, FI_A_MODIFY, ip6h->hop_limit);
	}
	return FI_PASS;
}
