/* SPDX-License-Identifier: GPL-2.0 */
/* truncate: cut frames longer than N bytes (param; Ethernet header
 * included) to N. The headers are left as they were, so the IP length says
 * more than arrives and the receiver drops the packet as truncated — what a
 * device that chops frames does. Rate from p=/ratio=/nth=. A cut the kernel
 * refuses is counted as refused, never as acted. */
#include "lib/fault.h"

SEC(FI_SEC)
int truncate(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_pkt pkt;
	__u32 len, n;
	long err;

	cfg = fi_config_get(ctx);
	if (!cfg)
		return FI_PASS;
	n = cfg->param;
	fi_parse(ctx, &pkt); /* for the flow key and the filter */
	if (!fi_match(cfg, &pkt))
		return FI_PASS;
	len = fi_len(ctx);
	if (len <= n)
		return FI_PASS;  /* nothing to cut */
	fi_count(FI_MATCHED);
	if (!fi_decide(cfg, &pkt, NULL))
		return FI_PASS;
	/* tc refuses a cut below the transport header, and on a CHECKSUM_PARTIAL
	 * skb (all TCP at egress, offload or not) below the checksum field: such
	 * a packet leaves whole, so it is counted apart, not as acted. The
	 * journal event comes from the parse (pkt), not from the cut frame. */
#if defined(FI_HOOK_TC)
	err = bpf_skb_change_tail(ctx, n, 0);
#else
	err = bpf_xdp_adjust_tail(ctx, (int)n - (int)len);
#endif
	if (err) {
		fi_count(FI_REFUSED);
		return FI_PASS;
	}
	fi_acted(ctx, cfg, &pkt, FI_A_MODIFY, n);
	return FI_PASS;
}
