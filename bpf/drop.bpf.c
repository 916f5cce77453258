/* SPDX-License-Identifier: GPL-2.0 */
/* drop: every packet (that passes the fault's filter) is dropped with the
 * configured probability. Packets that do not parse as IP still draw (from
 * their ethertype's stream) unless a filter asks for an IP field. */
#include "lib/fault.h"

SEC(FI_SEC)
int drop(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_pkt pkt;

	cfg = fi_config_get(ctx);
	if (!cfg)
		return FI_PASS;
	if (!cfg->match.fields && !cfg->match.nth &&
	    (cfg->threshold == 0 || (cfg->threshold >= FI_ALWAYS && !(cfg->flags & FI_CFG_JOURNAL) && !fi_watched()))) {
		/* no filter, no draw, no journal, no tracer: the verdict needs no parsing
		 * (an idle drop=0 costs a counter) */
		fi_count(FI_MATCHED);
		if (cfg->threshold == 0)
			return FI_PASS;
		fi_count(FI_ACTED);
		return FI_DROP;
	}
	fi_parse(ctx, &pkt); /* for the flow key and the filter */
	if (!fi_match(cfg, &pkt))
		return FI_PASS;
	fi_count(FI_MATCHED);
	if (!fi_decide(cfg, &pkt, NULL))
		return FI_PASS;
	fi_acted(ctx, cfg, &pkt, FI_A_DROP, 0);
	return FI_DROP;
}
