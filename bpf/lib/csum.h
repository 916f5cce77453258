/* SPDX-License-Identifier: GPL-2.0 */
/* Internet checksum updates. */
#ifndef FI_CSUM_H
#define FI_CSUM_H

#include "ctx.h"
#include <bpf/bpf_endian.h>

/* Incremental update of a checksum when one 16-bit word changes, RFC 1624
 * eqn. 3: HC' = ~(~HC + ~m + m'). One's-complement sums do not depend on byte
 * order as long as all words use the same one, so network-order words go in
 * as they are. Never the "check += 1" shortcut: it is wrong at 0xffff. */
static __always_inline void fi_csum_replace2(__sum16 *sum, __be16 old, __be16 new)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~old;
	s += new;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	*sum = (__sum16)~s;
}

/* Update the L4 checksum at byte offset csum_off after a 16-bit word of the
 * L4 header or payload changed from old to new (both network order).
 *
 * On tc the skb may be CHECKSUM_PARTIAL (offload): then the check field holds
 * the pseudo-header sum and must not change for a word outside the pseudo
 * header; bpf_l4_csum_replace knows the skb's state and does the right thing.
 * XDP frames have no such state: the field is the full checksum.
 * udp_zero_ok: a UDP checksum of 0 means "none" and must stay 0. */
static __always_inline void fi_l4_csum_replace2(fi_ctx_t *ctx, __sum16 *sum, __u32 csum_off,
						__be16 old, __be16 new, int udp_zero_ok)
{
#if defined(FI_HOOK_TC)
	(void)sum;
	bpf_l4_csum_replace(ctx, csum_off, old, new, 2 | (udp_zero_ok ? BPF_F_MARK_MANGLED_0 : 0));
#else
	(void)ctx;
	(void)csum_off;
	if (udp_zero_ok && *sum == 0)
		return;
	fi_csum_replace2(sum, old, new);
	if (udp_zero_ok && *sum == 0)
		*sum = 0xffff;
#endif
}

/* As fi_l4_csum_replace2, for a checksum field known only by its offset
 * (after fi_store_bytes, with no packet pointer at hand). */
static __always_inline void fi_l4_csum_replace2_at(fi_ctx_t *ctx, __u32 csum_off, __be16 old, __be16 new,
						   int udp_zero_ok)
{
#if defined(FI_HOOK_TC)
	fi_l4_csum_replace2(ctx, NULL, csum_off, old, new, udp_zero_ok);
#else
	__sum16 sum;

	if (fi_load_bytes(ctx, csum_off, &sum, sizeof(sum)))
		return;
	fi_l4_csum_replace2(ctx, &sum, csum_off, old, new, udp_zero_ok);
	fi_store_bytes(ctx, csum_off, &sum, sizeof(sum));
#endif
}

/* After a 16-bit word of the L4 payload changed from old to new with the
 * checksum meant to stay wrong (corrupt csum=bad), at tc egress: keep the
 * checksum the packet will leave with what it was before the change.
 *
 * At tc egress TCP is always CHECKSUM_PARTIAL (offload or not: the stack, or
 * skb_checksum_help after tc, completes the checksum later), UDP is PARTIAL
 * with tx offload on: the field holds only the pseudo-header sum, and the
 * checksum completed over the changed bytes would be valid. Adding old - new
 * to that partial sum makes the completed checksum the original one, wrong
 * for the new bytes. On a packet whose field is the full checksum the field
 * must not change. One pair of calls does both without knowing the state: a
 * plain replace (old -> new) is a no-op on PARTIAL and fixes a full checksum;
 * a pseudo-header replace (new -> old) undoes that fix on a full checksum and
 * on PARTIAL moves the partial sum by old - new. */
static __always_inline void fi_l4_csum_keep_at(fi_ctx_t *ctx, __u32 csum_off, __be16 old, __be16 new,
					       int udp_zero_ok)
{
#if defined(FI_HOOK_TC)
	__u64 zero = udp_zero_ok ? BPF_F_MARK_MANGLED_0 : 0;

	bpf_l4_csum_replace(ctx, csum_off, old, new, 2 | zero);
	bpf_l4_csum_replace(ctx, csum_off, new, old, 2 | BPF_F_PSEUDO_HDR | zero);
#else
	(void)ctx;
	(void)csum_off;
	(void)old;
	(void)new;
	(void)udp_zero_ok;
#endif
}

#define FI_DISTRUST_MAX 256  /* more than the deepest L4 header offset handled (IPv6 + extension headers) */

/* Make the receiving stack check the L4 checksum itself, after a change that
 * left it wrong on purpose; l4_off: where the L4 header starts. Returns 0, or
 * -1 when the packet's checksum state could not be changed.
 *
 * At tc ingress the skb may say its checksum needs no check: CHECKSUM_PARTIAL
 * (a veth peer with tx offload on hands its skbs over as they are: the field
 * holds only the pseudo-header sum, to be completed by a device that never
 * comes) or CHECKSUM_UNNECESSARY (a device vouched for it). The stack then
 * delivers the packet unchecked. bpf_csum_level(RESET) clears only
 * UNNECESSARY; no helper clears PARTIAL, but taking out (bpf_skb_adjust_room)
 * more bytes than lie between skb->data and the checksum start makes the
 * kernel give the partial state up (skb_postpull_rcsum: CHECKSUM_NONE). So the
 * headers up to just past the L4 start are taken out, put back and rewritten:
 * the same bytes, now checked by the receiver (seen on kernel 6.18: a veth
 * peer's UDP and TCP then count as InCsumErrors). A packet too short for that
 * (IPv4 UDP payload under ~28 bytes) keeps its state. XDP cannot change the
 * state of the skb the stack builds after it: see corrupt.bpf.c. */
static __always_inline int fi_csum_distrust(fi_ctx_t *ctx, __u32 l3_off, __u32 l4_off)
{
#if defined(FI_HOOK_TC)
	__u8 saved[FI_DISTRUST_MAX];
	__u32 n;

	bpf_csum_level(ctx, BPF_CSUM_LEVEL_RESET);
	/* BPF_ADJ_ROOM_MAC works after the kernel's MAC header, which is just
	 * the Ethernet header only when no tag is left in the data */
	if (l3_off != ETH_HLEN || l4_off < l3_off || l4_off + 2 >= FI_DISTRUST_MAX)
		return -1;
	/* taken out from ETH_HLEN on: puts the checksum start before skb->data */
	n = l4_off + 2;
	asm volatile("" : "+r"(n));  /* the verifier wants the bound on the register the helper gets */
	/* the same n (2 .. FI_DISTRUST_MAX - 1 here), in a form whose lower bound
	 * (1) the verifier sees: 6.1's learns nothing from 'if (n == 0)' and
	 * refused the read as possibly zero-sized */
	n = ((n - 1) & (FI_DISTRUST_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(ctx, ETH_HLEN, saved, n))
		return -1;
	/* FIXED_GSO: a GSO packet keeps its segment size (the room comes back) */
	if (bpf_skb_adjust_room(ctx, -(__s32)n, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
		return -1;   /* too short to take that much out: the state stays */
	if (bpf_skb_adjust_room(ctx, n, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
		return -1;   /* not expected: the room was there a moment ago */
	if (bpf_skb_store_bytes(ctx, ETH_HLEN, saved, n, BPF_F_RECOMPUTE_CSUM))
		return -1;
	return 0;
#else
	(void)ctx;
	(void)l3_off;
	(void)l4_off;
	return 0;
#endif
}

/* Rewrite a TCP header's flags byte with the checksum kept valid. The data
 * offset and the flags form one 16-bit word at byte 12 of the header. On tc
 * the packet pointers are invalid after this (a helper call). */
static __always_inline void fi_tcp_write_flags(fi_ctx_t *ctx, struct tcphdr *th, __u32 l4_off, __u8 flags)
{
	__u8 hi = th->doff << 4 | th->res1;
	__be16 old_word = bpf_htons(((__u16)hi << 8) | th->flags);

	th->flags = flags;
	fi_l4_csum_replace2(ctx, &th->check, l4_off + 16, old_word, bpf_htons(((__u16)hi << 8) | flags), 0);
}

#endif
