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
