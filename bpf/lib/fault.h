/* SPDX-License-Identifier: GPL-2.0 */
/* What every fault program shares: the config map (written by user space
 * while the program runs), the per-CPU outcome counters, the deadline and the
 * seeded per-flow random stream. */
#ifndef FI_FAULT_H
#define FI_FAULT_H

#include "ctx.h"
#include "parse.h"

/* Mirrors faultinj/inject/maps.py CONFIG_FORMAT; change both together. */
struct fi_config {
	__u64 seed;
	__u64 deadline_ns;   /* CLOCK_MONOTONIC (bpf_ktime_get_ns); 0: none */
	__u64 threshold;     /* act when a 32-bit draw is below it; 1 << 32: always */
	__u32 param;         /* the fault's own value (e.g. a TTL), see its program */
	__u32 flags;         /* FI_CFG_* */
};

#define FI_CFG_ACTIVE 1

/* Outcomes, counted per CPU; faultinj/inject/maps.py names them. */
enum fi_counter {
	FI_SEEN = 0,    /* packets at the hook while the fault is live */
	FI_MATCHED,     /* packets the fault could act on */
	FI_ACTED,       /* packets it changed or dropped */
	FI_NR_COUNTERS,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fi_config);
} fi_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FI_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} fi_counters SEC(".maps");

/* Per-flow packet index: the n-th packet of a flow gets the n-th draw of the
 * flow's stream, so decisions do not depend on which CPU runs the program or
 * on other flows, and a retransmission (a later index) gets a fresh draw.
 * Keyed by the flow's 64-bit hash: hashing a 40-byte key in the map lookup
 * cost more than the rest of the decision. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} fi_flows SEC(".maps");

#define FI_ALWAYS (1ULL << 32)

static __always_inline void fi_count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&fi_counters, &which);

	if (n)
		*n += 1;
}

/* The live config, or NULL when the fault is switched off or past its
 * deadline: then the program must pass everything and count nothing. */
static __always_inline struct fi_config *fi_config_get(void)
{
	__u32 key = 0;
	struct fi_config *cfg = bpf_map_lookup_elem(&fi_config, &key);

	if (!cfg || !(cfg->flags & FI_CFG_ACTIVE))
		return NULL;
	if (cfg->deadline_ns && bpf_ktime_get_ns() >= cfg->deadline_ns)
		return NULL;
	fi_count(FI_SEEN);
	return cfg;
}

/* splitmix64's finaliser: a bijective 64-bit mix with full avalanche */
static __always_inline __u64 fi_mix64(__u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static __always_inline __u64 fi_flow_hash(const struct fi_flow *f)
{
	const __u64 *w = (const __u64 *)f;
	__u64 h = 0;

#pragma unroll
	for (int i = 0; i < sizeof(*f) / 8; i++)
		h = fi_mix64(h ^ w[i]);
	return h;
}

/* The next 64-bit draw of this packet's flow, from the seed. The high half
 * decides whether to act (fi_chance); the low half is free for the fault's
 * own choice (a TTL, a bit position). */
static __always_inline __u64 fi_draw(const struct fi_config *cfg, const struct fi_pkt *pkt)
{
	__u64 zero = 0, idx, *n, flow = fi_flow_hash(&pkt->flow);

	n = bpf_map_lookup_elem(&fi_flows, &flow);
	if (!n) {
		bpf_map_update_elem(&fi_flows, &flow, &zero, BPF_NOEXIST);
		n = bpf_map_lookup_elem(&fi_flows, &flow);
	}
	idx = n ? __sync_fetch_and_add(n, 1) : 0;
	return fi_mix64(cfg->seed ^ fi_mix64(flow + idx * 0x9e3779b97f4a7c15ULL));
}

static __always_inline int fi_chance(const struct fi_config *cfg, __u64 draw)
{
	return (draw >> 32) < cfg->threshold;
}

/* Act on this packet? Probability 0 and 1 need no draw: an idle fault costs
 * no map lookup, and its flows' streams start when it is given a ratio. */
static __always_inline int fi_decide(const struct fi_config *cfg, const struct fi_pkt *pkt)
{
	if (cfg->threshold == 0)
		return 0;
	if (cfg->threshold >= FI_ALWAYS)
		return 1;
	return fi_chance(cfg, fi_draw(cfg, pkt));
}

char _license[] SEC("license") = "GPL";

#endif
