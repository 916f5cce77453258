/* SPDX-License-Identifier: GPL-2.0 */
/* What every fault program shares: the config map (written by user space
 * while the program runs), the per-CPU outcome counters, the deadline and the
 * seeded per-flow random stream. */
#ifndef FI_FAULT_H
#define FI_FAULT_H

#include "ctx.h"
#include "match.h"
#include "parse.h"

/* A program's own types user space reads (its enums: corrupt's param bits,
 * ip_rewrite's modes): FI_LAYOUT(program, enum fi_x a; ...) in bpf/<program>.bpf.c
 * puts them in the BTF of the object built with -DFI_LAYOUTS, which is never
 * loaded (faultinj/layouts.py is generated from it, and the build checks it);
 * in the object that is loaded it is nothing. */
#ifdef FI_LAYOUTS
#define FI_LAYOUT(program, ...) struct fi_layouts_##program { __VA_ARGS__; } fi_layouts_##program
#else
#define FI_LAYOUT(program, ...)
#endif

/* The layout user space writes: faultinj/kernel/layout.py describes it, and
 * the build checks that description against this object's BTF (sizes and
 * offsets), so the two cannot drift. */
struct fi_config {
	__u64 seed;
	__u64 deadline_ns;   /* CLOCK_MONOTONIC (bpf_ktime_get_ns); 0: none */
	__u64 threshold;     /* act when a 32-bit draw is below it; 1 << 32: always */
	__u32 param;         /* the fault's own value (e.g. a TTL), see its program */
	__u32 flags;         /* FI_CFG_* */
	struct fi_match match;
	__u32 extra[4];      /* more of the fault's own values (burst-loss: its four rates) */
	__u32 gen;           /* the configuration's generation: `set` counts it up; events carry it */
	__u32 pad;
};

/* fi_config.flags. Enums, not #defines: user space reads their values from
 * the BTF (faultinj/layouts.py, generated from bpf/lib/layouts.c). */
enum fi_cfg_flag {
	FI_CFG_ACTIVE = 1,
	FI_CFG_INGRESS = 2,   /* the program runs at tc ingress (duplicate re-injects there) */
	FI_CFG_DRY_RUN = 4,   /* decide and count, but send nothing (replay, program tests) */
	FI_CFG_JOURNAL = 8,   /* record each action in the fi_journal log */
};

/* Outcomes, counted per CPU; faultinj/kernel/maps.py names them from the BTF. */
enum fi_counter {
	FI_SEEN = 0,    /* packets at the hook while the fault is live */
	FI_MATCHED,     /* packets the fault could act on */
	FI_ACTED,       /* packets it changed or dropped */
	FI_LOST,        /* unused: the journal overwrites its oldest events (readers count their own losses) */
	FI_REFUSED,     /* decided to act, but the kernel refused the change (not acted) */
	FI_NR_COUNTERS,
};

/* The config, in two slots: `set` rewrites the whole config while packets
 * flow, so it writes the slot no packet reads, then points fi_config_live at
 * it, then waits for an RCU grace period (every program that may still read
 * the old slot has returned) before the next `set` may write that one. One
 * packet sees one config: never the new rate with the old filter. A copy
 * under a bpf_spin_lock would do it too, but 144 more bytes of stack do not
 * fit beside corrupt's at XDP. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct fi_config);
} fi_config SEC(".maps");

/* which fi_config slot is live: 0 or 1 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} fi_config_live SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FI_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} fi_counters SEC(".maps");

/* Per-flow packet index: the n-th packet of a flow gets the n-th draw of the
 * flow's stream, so decisions do not depend on which CPU runs the program or
 * on other flows, and a retransmission (a later index) gets a fresh draw.
 * Keyed by the flow's 64-bit hash, in a 4-way set-associative table in an
 * array (FI_FLOW_SETS sets of four {hash, index} ways, a cache line each):
 * the array lookup is inlined by the verifier and a hit is four compares and
 * an atomic add, where an LRU hash map's lookup (jhash, bucket walk, LRU
 * bookkeeping) cost ~25 ns. A set holds four flows; a fifth in the same set
 * takes a way over (its stream restarts, as an LRU's eviction would do),
 * with 65536 ways that needs thousands of live flows. */
#define FI_FLOW_WAYS 4
#define FI_FLOW_SETS 16384   /* a power of two; 1 MiB */

struct fi_flow_way {
	__u64 tag;   /* the flow's hash | 1 (0: an empty way) */
	__u64 n;     /* packets of the flow drawn for so far */
};

struct fi_flow_set {
	struct fi_flow_way way[FI_FLOW_WAYS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FI_FLOW_SETS);
	__type(key, __u32);
	__type(value, struct fi_flow_set);
} fi_flows SEC(".maps");

/* The journal: one event per action, in a log that keeps the last
 * FI_JOURNAL_SIZE events and overwrites the oldest. Nobody consumes it:
 * every reader (`faultinj journal`, scenario runs, the tracer) maps it
 * read-only and keeps its own place, so each sees every event, and one that
 * falls more than FI_JOURNAL_SIZE behind counts its own losses.
 * faultinj/journal.py decodes it by the layout read from the BTF. */
struct fi_event {
	__u64 idx;           /* its number in the log + 1, written last; 0 while being written */
	__u64 ts_ns;         /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 ifindex;
	__u32 seq;           /* TCP: the sequence number; ICMP echo: the sequence */
	__u32 saddr[4];      /* IPv4 in [0] */
	__u32 daddr[4];
	__u16 l3_proto;
	__u16 sport, dport;  /* ports, or the ICMP echo id in sport */
	__u16 ip_id;         /* IPv4: the identification field */
	__u8 l4_proto;
	__u8 action;         /* FI_A_* */
	__u8 journal;        /* 1: for the journal; 0: only for a tracer watching (journal=off) */
	__u8 pad;
	__u32 value;         /* the fault's detail: the TTL it wrote; 0 */
	__u32 gen;           /* fi_config.gen when it happened: user space keeps each generation's spec */
	__u32 pad2;
};

/* fi_event.action; the journal names an action by its name here, lower case */
enum fi_action {
	FI_A_DROP = 1,
	FI_A_MODIFY,
	FI_A_DUPLICATE,
	FI_A_DELAY,      /* value: the delay given, in microseconds */
};

enum fi_journal_size {
	FI_JOURNAL_SIZE = 4096,   /* a power of two; 320 KiB */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, FI_JOURNAL_SIZE);
	__type(key, __u32);
	__type(value, struct fi_event);
} fi_journal SEC(".maps");

/* events ever written: the next one goes to fi_journal[head % FI_JOURNAL_SIZE] */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fi_journal_head SEC(".maps");

/* A tracer watching this fault (CLOCK_MONOTONIC, until then): actions are
 * logged also with journal=off. A lease the tracer renews, so a killed
 * tracer stops costing anything within seconds. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fi_watch SEC(".maps");

/* fi_config.threshold of a fault that acts on every packet: 1 << 32 (a shift:
 * this clang's BTF keeps 32 bits of an enum constant) */
enum fi_threshold {
	FI_ALWAYS_SHIFT = 32,
};
#define FI_ALWAYS (1ULL << FI_ALWAYS_SHIFT)

static __always_inline void fi_count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&fi_counters, &which);

	if (n)
		*n += 1;
}

static __always_inline __u32 fi_ifindex(fi_ctx_t *ctx)
{
#if defined(FI_HOOK_TC)
	return ctx->ifindex;
#else
	return ctx->ingress_ifindex;
#endif
}

static __always_inline int fi_watched(void)
{
	__u32 key = 0;
	__u64 *until = bpf_map_lookup_elem(&fi_watch, &key);

	/* the coarse clock (CLOCK_MONOTONIC at the tick): ~20 ns less than
	 * bpf_ktime_get_ns here, and a lease of seconds needs no finer */
	return until && *until > bpf_ktime_get_coarse_ns();
}

/* The fault acted on this packet: count it and, with the journal on, record
 * it. Everything comes from the parse (pkt), no packet access: it may
 * follow a helper that moved the data. */
static __always_inline void fi_acted(fi_ctx_t *ctx, const struct fi_config *cfg, const struct fi_pkt *pkt,
				     __u8 action, __u32 value)
{
	__u32 key = 0, slot;
	struct fi_event *e;
	__u64 *head, idx;

	fi_count(FI_ACTED);
	if (!(cfg->flags & FI_CFG_JOURNAL) && !fi_watched())
		return;
	head = bpf_map_lookup_elem(&fi_journal_head, &key);
	if (!head)
		return;
	idx = __sync_fetch_and_add(head, 1);
	slot = idx & (FI_JOURNAL_SIZE - 1);
	e = bpf_map_lookup_elem(&fi_journal, &slot);
	if (!e)
		return;
	e->idx = 0;   /* readers skip it until the last write below */
	e->ts_ns = bpf_ktime_get_ns();
	e->ifindex = fi_ifindex(ctx);
	e->seq = pkt->seq;
	__builtin_memcpy(e->saddr, pkt->flow.saddr, sizeof(e->saddr));
	__builtin_memcpy(e->daddr, pkt->flow.daddr, sizeof(e->daddr));
	e->l3_proto = pkt->l3_proto;
	e->sport = pkt->flow.sport;
	e->dport = pkt->flow.dport;
	e->ip_id = pkt->ip_id;
	e->l4_proto = pkt->l4_proto;
	e->action = action;
	e->journal = cfg->flags & FI_CFG_JOURNAL ? 1 : 0;
	e->pad = 0;
	e->value = value;
	e->gen = cfg->gen;
	e->pad2 = 0;
	__sync_fetch_and_add(&e->idx, idx + 1);   /* complete: an atomic, so after the writes above */
}

/* duplicate's copy (bpf_clone_redirect) enters the hook again from its first
 * filter. It carries FI_DUP_TAG | the duplicate's id in skb->tc_index (unused
 * without dsmark, and a user's skb->mark stays intact) until that duplicate
 * takes the tag off: the faults before it on the hook have already acted on
 * the packet it copied and let the copy pass untouched and uncounted; the
 * faults after it see the copy as a packet of its own (`replay` does the same). */
#define FI_DUP_TAG 0xF000
#define FI_DUP_TAG_MASK 0xF000
#define FI_DUP_ID_MASK 0x0FFF

static __always_inline int fi_is_dup_copy(fi_ctx_t *ctx)
{
#if defined(FI_HOOK_TC)
	return (ctx->tc_index & FI_DUP_TAG_MASK) == FI_DUP_TAG;
#else
	return 0;   /* XDP runs before any copy is made */
#endif
}

/* The live config (one slot, read by this packet throughout: see
 * fi_config_live), or NULL when the fault is switched off or past its
 * deadline, or the packet is the copy of a duplicate after this fault: then
 * the program must pass it and count nothing. */
static __always_inline struct fi_config *fi_config_get(fi_ctx_t *ctx)
{
	__u32 key = 0, *live;
	struct fi_config *cfg;

	if (fi_is_dup_copy(ctx))
		return NULL;
	live = bpf_map_lookup_elem(&fi_config_live, &key);
	if (!live)
		return NULL;
	key = *live & 1;
	cfg = bpf_map_lookup_elem(&fi_config, &key);
	if (!cfg || !(cfg->flags & FI_CFG_ACTIVE))
		return NULL;
	if (cfg->deadline_ns && bpf_ktime_get_ns() >= cfg->deadline_ns)
		return NULL;
	fi_count(FI_SEEN);
	return cfg;
}

/* Does the packet pass the fault's filter? */
static __always_inline int fi_match(const struct fi_config *cfg, const struct fi_pkt *pkt)
{
	return fi_match_pkt(&cfg->match, pkt);
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

/* The flow's 64-bit hash: each word times its own odd constant (independent
 * multiplies, run side by side), summed, then one mix. Two flows differing
 * in one word never collide (an odd constant is invertible mod 2^64). A mix
 * per word, chained, cost ~15 ns more. */
static __always_inline __u64 fi_flow_hash(const struct fi_flow *f)
{
	const __u64 *w = (const __u64 *)f;

	return fi_mix64(w[0] * 0x9e3779b97f4a7c15ULL + w[1] * 0xc2b2ae3d27d4eb4fULL +
			w[2] * 0x165667b19e3779f9ULL + w[3] * 0xd6e8feb86659fd93ULL +
			w[4] * 0xff51afd7ed558ccdULL);
}

/* The next 64-bit draw of this packet's flow, from the seed. The high half
 * decides whether to act (fi_chance); the low half is free for the fault's
 * own choice (a TTL, a bit position). */
/* The flow's next packet index: 0 for the first packet of the flow this
 * fault draws for. Shared by all CPUs (an atomic add). */
static __always_inline __u64 fi_next_index(__u64 flow)
{
	__u32 key = (__u32)flow & (FI_FLOW_SETS - 1);
	__u64 tag = flow | 1, old;
	struct fi_flow_set *set;
	int i;

	set = bpf_map_lookup_elem(&fi_flows, &key);
	if (!set)
		return 0;
#pragma unroll
	for (i = 0; i < FI_FLOW_WAYS; i++)
		if (set->way[i].tag == tag)
			return __sync_fetch_and_add(&set->way[i].n, 1);
	/* the flow's first packet (or another CPU's is claiming it now: the
	 * compare-and-swap then returns our tag, and both count on that way) */
#pragma unroll
	for (i = 0; i < FI_FLOW_WAYS; i++) {
		if (set->way[i].tag)
			continue;
		old = __sync_val_compare_and_swap(&set->way[i].tag, 0, tag);
		if (old == 0 || old == tag)
			return __sync_fetch_and_add(&set->way[i].n, 1);
	}
	/* the set is full: the way the hash picks starts this flow's stream */
	i = (flow >> 32) & (FI_FLOW_WAYS - 1);
	set->way[i].n = 1;
	set->way[i].tag = tag;
	return 0;
}

static __always_inline int fi_chance(const struct fi_config *cfg, __u64 draw)
{
	return (draw >> 32) < cfg->threshold;
}

/* Act on this packet? The high half of the flow's next draw decides (or the
 * packet's index in its flow, with nth); `draw`, when not NULL, receives the
 * draw so the fault can take its own choice (a TTL) from the low half.
 * Probability 0, and 1 without nth or a value to draw, need no map lookup:
 * an idle fault costs nothing, and its flows' streams start when it is given
 * a ratio. */
static __always_inline int fi_decide(const struct fi_config *cfg, const struct fi_pkt *pkt, __u64 *draw)
{
	__u64 flow, idx, d;

	if (cfg->threshold == 0)
		return 0;
	if (cfg->threshold >= FI_ALWAYS && !cfg->match.nth && !draw)
		return 1;
	flow = fi_flow_hash(&pkt->flow);
	idx = fi_next_index(flow);
	/* splitmix64 (one mix of a counter) seeded with seed ^ flow: the flow's idx-th draw */
	d = fi_mix64((cfg->seed ^ flow) + (idx + 1) * 0x9e3779b97f4a7c15ULL);
	if (draw)
		*draw = d;
	if (cfg->match.nth && idx + 1 != cfg->match.nth)
		return 0;
	return fi_chance(cfg, d);
}

char _license[] SEC("license") = "GPL";

#endif
