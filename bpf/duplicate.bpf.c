/* SPDX-License-Identifier: GPL-2.0 */
/* duplicate: send a copy of a share of packets (tc only: XDP cannot clone).
 * The copy goes out of the same hook first (bpf_clone_redirect), then the
 * original continues. The copy enters the hook again from its first filter,
 * tagged with this program's id (FI_DUP_TAG, lib/fault.h): the faults before
 * this one pass it untouched, this one takes the tag off and lets it through,
 * and the faults after it act on it as on any packet. So each copy has had
 * every fault on the hook once, as `replay` models it. */
#include "lib/fault.h"

#ifndef FI_HOOK_TC
#error "duplicate runs on tc hooks only"
#endif

/* This program's tag, drawn at its first packet: tells its copies from those
 * of another duplicate on the same hook (1 in 4095 alike). */
__u64 fi_dup_id = 0;

static __always_inline __u16 fi_dup_tag(void)
{
	__u64 id = fi_dup_id;

	if (!id) {
		id = bpf_get_prandom_u32() % FI_DUP_ID_MASK + 1;
		__sync_val_compare_and_swap(&fi_dup_id, 0, id);   /* the first CPU's draw wins */
		id = fi_dup_id;
	}
	return FI_DUP_TAG | (id & FI_DUP_ID_MASK);
}

SEC(FI_SEC)
int duplicate(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_pkt pkt;
	__u32 old_tag;
	__u16 tag;
	long err;

	tag = fi_dup_tag();
	if (ctx->tc_index == tag) {   /* our own copy, coming round again: it goes on as a packet of its own */
		ctx->tc_index = 0;
		return FI_PASS;
	}
	cfg = fi_config_get(ctx);
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
		ctx->tc_index = tag;
		err = bpf_clone_redirect(ctx, ctx->ifindex, (cfg->flags & FI_CFG_INGRESS) ? BPF_F_INGRESS : 0);
		ctx->tc_index = old_tag;
		if (err)
			return FI_PASS;
	}
	fi_acted(ctx, cfg, &pkt, FI_A_DUPLICATE, 0);
	return FI_PASS;
}
