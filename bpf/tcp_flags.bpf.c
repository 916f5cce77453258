/* SPDX-License-Identifier: GPL-2.0 */
/* tcp-flags: set and/or clear TCP flags (param: set << 8 | clear, enum fi_tcp_flags_param) on TCP
 * packets that pass the filter, at the configured rate or on the nth packet
 * of each flow; the TCP checksum kept valid with or without offload. */
#include "lib/fault.h"
#include "lib/csum.h"

enum fi_tcp_flags_param {
	FI_TF_SET_SHIFT = 8,   /* param: flags to set << FI_TF_SET_SHIFT | flags to clear */
};

FI_LAYOUT(tcp_flags, enum fi_tcp_flags_param param);

SEC(FI_SEC)
int tcp_flags(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_pkt pkt;
	struct tcphdr *th;
	__u8 set, clear, old, new;

	cfg = fi_config_get(ctx);
	if (!cfg)
		return FI_PASS;
	th = fi_parse_tcp(ctx, &pkt);
	if (!th || !fi_match(cfg, &pkt))
		return FI_PASS;
	fi_count(FI_MATCHED);
	if (!fi_decide(cfg, &pkt, NULL))
		return FI_PASS;
	set = cfg->param >> FI_TF_SET_SHIFT;
	clear = cfg->param;
	old = th->flags;
	new = (old | set) & ~clear;
	if (new == old)
		return FI_PASS;
	fi_tcp_write_flags(ctx, th, pkt.l4_off, new);
	fi_acted(ctx, cfg, &pkt, FI_A_MODIFY, new);
	return FI_PASS;
}
