/* SPDX-License-Identifier: GPL-2.0 */
/* burst-loss: Gilbert–Elliott loss with netem's gemodel parameters, per
 * flow and seeded. extra[] holds four thresholds on a 32-bit draw:
 * p (good -> bad), r (bad -> good), 1-h (loss in the bad state),
 * 1-k (loss in the good state). As netem: the packet's fate is decided in
 * the state it finds, then the state moves on. */
#include "lib/fault.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);   /* 1: the flow is in the bad state */
} fi_ge_state SEC(".maps");

SEC(FI_SEC)
int burst_loss(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_pkt pkt;
	__u32 *bad, fresh = 0, lose_draw, move_draw;
	__u64 key, draw;
	int lose;

	cfg = fi_config_get(ctx);
	if (!cfg)
		return FI_PASS;
	fi_parse(ctx, &pkt);
	if (!fi_match(cfg, &pkt))
		return FI_PASS;
	fi_count(FI_MATCHED);
	if (!fi_decide(cfg, &pkt, &draw))  /* nth= can still pick packets; the rate is the model's */
		return FI_PASS;
	key = fi_flow_hash(&pkt.flow);
	bad = bpf_map_lookup_elem(&fi_ge_state, &key);
	if (!bad) {
		bpf_map_update_elem(&fi_ge_state, &key, &fresh, BPF_NOEXIST);
		bad = bpf_map_lookup_elem(&fi_ge_state, &key);
		if (!bad)
			return FI_PASS;
	}
	lose_draw = draw;
	move_draw = draw >> 32;
	if (*bad) {
		lose = lose_draw < cfg->extra[2];
		if (move_draw < cfg->extra[1])
			*bad = 0;
	} else {
		lose = lose_draw < cfg->extra[3];
		if (move_draw < cfg->extra[0])
			*bad = 1;
	}
	if (!lose)
		return FI_PASS;
	fi_acted(ctx, cfg, &pkt, FI_A_DROP, 0);
	return FI_DROP;
}
