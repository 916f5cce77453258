/* SPDX-License-Identifier: GPL-2.0 */
/* psh-ratio: a TCP segment that carries payload and none of SYN, FIN, RST,
 * PSH gets PSH with the configured probability (1/N), as in the seed
 * article's tcp_psh, with the TCP checksum kept valid.
 *
 * The unit is the packet at the hook. On tc egress TCP hands over GSO
 * super-packets (up to 64 KB); the kernel splits them after tc and copies
 * PSH to the last segment only. To count wire segments, set the link's
 * gso_max_segs to 1 so each skb at the hook is one segment. */
#include "lib/fault.h"
#include "lib/csum.h"

SEC(FI_SEC)
int psh_ratio(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_pkt pkt;
	struct tcphdr *th;

	cfg = fi_config_get(ctx);
	if (!cfg)
		return FI_PASS;
	th = fi_parse_tcp(ctx, &pkt);
	if (!th || !fi_match(cfg, &pkt))
		return FI_PASS;
	if (pkt.l4_len <= th->doff * 4u)
		return FI_PASS; /* no payload */
	if (th->flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST | TCP_FLAG_PSH))
		return FI_PASS;
	fi_count(FI_MATCHED);
	if (!fi_decide(cfg, &pkt, NULL))
		return FI_PASS;

	fi_tcp_write_flags(ctx, th, pkt.l4_off, th->flags | TCP_FLAG_PSH);
	fi_acted(ctx, cfg, &pkt, FI_A_MODIFY, 0);
	return FI_PASS;
}
