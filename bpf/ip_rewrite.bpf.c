/* SPDX-License-Identifier: GPL-2.0 */
/* ttl, ecn-ce, dscp: rewrite one field of the IP header, IPv4 header
 * checksum updated (IPv6 has none). The config's param says what:
 * mode << 24 | value. */
#include "lib/fault.h"
#include "lib/csum.h"

enum fi_rewrite_param {
	FI_RW_MODE_SHIFT = 24,   /* param: mode << FI_RW_MODE_SHIFT | value */
};

enum fi_rewrite_mode {   /* param >> FI_RW_MODE_SHIFT */
	FI_RW_TTL_SET = 1,   /* TTL / hop limit := value */
	FI_RW_TTL_DEC = 2,   /* TTL / hop limit -= value, not below 0 */
	FI_RW_ECN_CE = 3,    /* ECN := CE (11), on ECN-capable packets only */
	FI_RW_DSCP = 4,      /* DSCP := value, ECN kept */
};

FI_LAYOUT(ip_rewrite, enum fi_rewrite_param param; enum fi_rewrite_mode mode);

static __always_inline __u8 fi_new_ttl(__u32 mode, __u32 value, __u8 ttl)
{
	if (mode == FI_RW_TTL_SET)
		return value;
	return ttl > value ? ttl - value : 0;
}

static __always_inline __u8 fi_new_tos(__u32 mode, __u32 value, __u8 tos)
{
	if (mode == FI_RW_ECN_CE)
		return (tos & 0x03) ? tos | 0x03 : tos;
	return (value << 2) | (tos & 0x03);
}

SEC(FI_SEC)
int ip_rewrite(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_pkt pkt;
	void *data_end;
	__u32 mode, value;
	int parsed;

	cfg = fi_config_get(ctx);
	if (!cfg)
		return FI_PASS;
	mode = cfg->param >> FI_RW_MODE_SHIFT;
	value = cfg->param & 0xFFFF;
	parsed = fi_parse(ctx, &pkt);
	/* a non-first fragment (parsed == 1) still has an IP header to rewrite */
	if (parsed < 0 || (pkt.l3_proto != ETH_P_IP && pkt.l3_proto != ETH_P_IPV6) || !fi_match(cfg, &pkt))
		return FI_PASS;
	data_end = fi_data_end(ctx);

	if (pkt.l3_proto == ETH_P_IP) {
		struct iphdr *iph = pkt.l3;
		__u8 *b = pkt.l3;
		__u8 old, new;

		if ((void *)(iph + 1) > data_end)
			return FI_PASS;
		if (mode == FI_RW_ECN_CE && !(iph->tos & 0x03))
			return FI_PASS; /* not ECN-capable: CE would be a protocol violation */
		fi_count(FI_MATCHED);
		if (!fi_decide(cfg, &pkt, NULL))
			return FI_PASS;
		if (mode == FI_RW_TTL_SET || mode == FI_RW_TTL_DEC) {
			old = iph->ttl;
			new = fi_new_ttl(mode, value, old);
			fi_csum_replace2(&iph->check, bpf_htons(((__u16)old << 8) | iph->protocol),
					 bpf_htons(((__u16)new << 8) | iph->protocol));
			iph->ttl = new;
		} else {
			old = iph->tos;
			new = fi_new_tos(mode, value, old);
			fi_csum_replace2(&iph->check, bpf_htons(((__u16)b[0] << 8) | old),
					 bpf_htons(((__u16)b[0] << 8) | new));
			iph->tos = new;
		}
		if (old != new)
			fi_acted(ctx, cfg, &pkt, FI_A_MODIFY, new);
	} else {
		struct ipv6hdr *ip6h = pkt.l3;
		__u8 *b = pkt.l3;
		__u8 tc, new;

		if ((void *)(ip6h + 1) > data_end)
			return FI_PASS;
		tc = (b[0] & 0x0F) << 4 | b[1] >> 4;
		if (mode == FI_RW_ECN_CE && !(tc & 0x03))
			return FI_PASS;
		fi_count(FI_MATCHED);
		if (!fi_decide(cfg, &pkt, NULL))
			return FI_PASS;
		if (mode == FI_RW_TTL_SET || mode == FI_RW_TTL_DEC) {
			new = fi_new_ttl(mode, value, ip6h->hop_limit);
			if (new != ip6h->hop_limit)
				fi_acted(ctx, cfg, &pkt, FI_A_MODIFY, new);
			ip6h->hop_limit = new;
		} else {
			new = fi_new_tos(mode, value, tc);
			if (new != tc)
				fi_acted(ctx, cfg, &pkt, FI_A_MODIFY, new);
			b[0] = (b[0] & 0xF0) | (new >> 4);
			b[1] = (b[1] & 0x0F) | (new << 4);
		}
	}
	return FI_PASS;
}
