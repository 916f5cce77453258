/* SPDX-License-Identifier: GPL-2.0 */
/* duplicate: send a copy of a share of packets (tc only: XDP cannot clone).
 * The copy goes out of the same hook first (bpf_clone_redirect), then the
 * original continues. The copy comes through this program again: it
 * carries a tag in skb->tc_index (unused without the dsmark qdisc, and left
 * alone so a user's skb->mark stays intact) and is let through untouched. */
#include "lib/fault.h"

#ifndef FI_HOOK_TC
#error "duplicate runs on tc hooks only"
#endif

#define FI_DUP_TAG 0xFA17

SEC(FI_SEC)
int duplicate(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_pkt pkt;
	__u32 old_tag;
	long err;

	if (ctx->tc_index == FI_DUP_TAG) {  /* our own copy, coming round again */
		ctx->tc_index = 0;
		return FI_PASS;
	}
	cfg = fi_config_get();
	if (!cfg)
		return FI_PASS;
	fi_parse(ctx, &pkt); /* for the flow key and the filter */
	if (!fi_match(cfg, &pkt))
		return FI_PASS;
	fi_count(FI_MATCHED);
	if (!fi_decide(cfg, &pkt, NULL))
		return FI_PASS;
	if (!(cfg->flags & FI_CFG_DRY_RUN)) {
		old_tag = ctx->tc_index;
		ctx->tc_index = FI_DUP_TAG;
		err = bpf_clone_redirect(ctx, ctx->ifindex, (cfg->flags & FI_CFG_INGRESS) ? BPF_F_INGRESS : 0);
		ctx->tc_index = old_tag;
		if (err)
			return FI_PASS;
	}
	fi_acted(ctx, cfg, &pkt, FI_A_DUPLICATE, 0);
	return FI_PASS;
}
