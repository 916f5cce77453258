/* SPDX-License-Identifier: GPL-2.0 */
/* Time faults at tc egress: delay (with jitter and a distribution), reorder
 * (the chosen packets are held back; later packets of their flow overtake
 * them) and rate (pacing). The program only sets each chosen packet's
 * earliest departure time (skb->tstamp, CLOCK_MONOTONIC); the fq qdisc that
 * faultinj puts on the link holds it until then and releases a flow's packets
 * in time order. Packets not chosen leave at once. */
#include "lib/fault.h"

enum fi_time_fault {      /* param: which fault */
	FI_TIME_DELAY = 0,
	FI_TIME_REORDER = 1,
	FI_TIME_RATE = 2,
};

enum fi_dist {
	FI_DIST_SIZE = 4096,
	FI_DIST_SCALE = 8192,   /* netem's NETEM_DIST_SCALE: a table entry of 8192 is one sigma */
	FI_DIST_SHIFT = 13,
};

FI_LAYOUT(delay, enum fi_time_fault fault; enum fi_dist dist);

/* The jitter's distribution as netem has it (iproute2's normal/pareto/paretonormal
 * .dist tables, loaded by user space); unused for uniform jitter. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FI_DIST_SIZE);
	__type(key, __u32);
	__type(value, __s32);
} fi_dist SEC(".maps");

/* rate: the next free departure time of each flow (or of all matched traffic). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} fi_pace SEC(".maps");

/* netem's tabledist(): mu + sigma * table[rnd] / scale, rounded as netem rounds;
 * uniform (no table) is mu - sigma + rnd % (2 sigma). */
static __always_inline __s64 fi_tabledist(__s64 mu, __s32 sigma, __u32 rnd, int table)
{
	__s64 x;
	__s32 *t;
	__u32 idx;

	if (sigma <= 0)
		return mu;
	if (!table)
		return (__s64)(rnd % (2 * (__u32)sigma)) + mu - sigma;
	idx = rnd % FI_DIST_SIZE;
	t = bpf_map_lookup_elem(&fi_dist, &idx);
	if (!t)
		return mu;
	/* sigma > 0 and the scale a power of two: / and % as shifts and masks; BPF has no
	 * signed division, so x / scale (toward zero, as C's) by its magnitude */
	x = (__s64)(sigma & (FI_DIST_SCALE - 1)) * *t;
	x += x >= 0 ? FI_DIST_SCALE / 2 : -FI_DIST_SCALE / 2;
	x = x >= 0 ? (__s64)((__u64)x >> FI_DIST_SHIFT) : -(__s64)((__u64)(-x) >> FI_DIST_SHIFT);
	return x + (__s64)(sigma >> FI_DIST_SHIFT) * *t + mu;
}

SEC(FI_SEC)
int delay(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_pkt pkt;
	__u64 draw, now, at, delay_ns = 0;
	__s64 d;

	cfg = fi_config_get(ctx);
	if (!cfg)
		return FI_PASS;
	fi_parse(ctx, &pkt);
	if (!fi_match(cfg, &pkt))
		return FI_PASS;
	fi_count(FI_MATCHED);
	if (!fi_decide(cfg, &pkt, &draw))
		return FI_PASS;
	now = bpf_ktime_get_ns();
	at = ctx->tstamp > now ? ctx->tstamp : now;   /* TCP's own pacing time, if later */
	if (cfg->param == FI_TIME_RATE) {
		/* A token bucket kept as a virtual clock: extra[0] picoseconds per byte;
		 * extra[1] 1 = one bucket for all matched traffic; extra[2] the burst (ns of
		 * the rate a flow that fell behind may send at once: a sender woken late,
		 * as under emulation, makes up for it instead of losing the time). */
		__u64 key = cfg->extra[1] ? 0 : fi_flow_hash(&pkt.flow), *next, v, floor;
		__u64 cost = ((__u64)ctx->len * cfg->extra[0]) / 1000;

		next = bpf_map_lookup_elem(&fi_pace, &key);
		if (!next) {
			bpf_map_update_elem(&fi_pace, &key, &at, BPF_NOEXIST);
			next = bpf_map_lookup_elem(&fi_pace, &key);
			if (!next)
				return FI_PASS;
		}
		floor = at > cfg->extra[2] ? at - cfg->extra[2] : 0;
		v = *next > floor ? *next : floor;
		if (v > at)
			at = v;
		*next = v + cost;
		delay_ns = at - now;
	} else {
		/* extra[0..1]: the delay (ns, low and high words); extra[2]: jitter (ns, at most
		 * 2^31 - 1 as netem's); extra[3]: 1 = jitter from the fi_dist table */
		__u64 mu = ((__u64)cfg->extra[1] << 32) | cfg->extra[0];

		d = fi_tabledist((__s64)mu, (__s32)cfg->extra[2], (__u32)draw, cfg->extra[3]);
		delay_ns = d > 0 ? (__u64)d : 0;
		at += delay_ns;
	}
	if (!(cfg->flags & FI_CFG_DRY_RUN))
		bpf_skb_set_tstamp(ctx, at, BPF_SKB_TSTAMP_DELIVERY_MONO);
	/* the journal's value: the delay given, in microseconds */
	fi_acted(ctx, cfg, &pkt, FI_A_DELAY, (__u32)(delay_ns / 1000));
	return FI_PASS;
}
