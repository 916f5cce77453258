/* SPDX-License-Identifier: GPL-2.0 */
/* One program source serves XDP and tc: the build compiles each program
 * once per hook with -DFI_HOOK_XDP or -DFI_HOOK_TC, and this shim gives the
 * hook's context type, section name and verdicts (as Cilium's ctx/{skb,xdp}.h). */
#ifndef FI_CTX_H
#define FI_CTX_H

#include "defs.h"
#include <bpf/bpf_helpers.h>

#if defined(FI_HOOK_XDP)
typedef struct xdp_md fi_ctx_t;
#define FI_SEC "xdp"
#define FI_PASS XDP_PASS
#define FI_DROP XDP_DROP
#elif defined(FI_HOOK_TC)
typedef struct __sk_buff fi_ctx_t;
#define FI_SEC "tc"
/* Not TC_ACT_OK: "no verdict" lets the next filter on the hook run, so several
 * faults (ours or another tool's) chained on one hook all see the packet. */
#define FI_PASS TC_ACT_UNSPEC
/* Not TC_ACT_SHOT: on egress that reports NET_XMIT_DROP to the sending
 * socket (ping sees ENOBUFS and resends, TCP enters CWR), which is local
 * congestion, not loss on the wire. STOLEN frees the packet silently. */
#if defined(FI_TCX)
/* On a tcx link (kernel 6.6+) the verdicts are NEXT, PASS, DROP and REDIRECT only:
 * STOLEN counts as NEXT and the packet goes on, and DROP (SHOT) on egress is the
 * local congestion above. A redirect to no device (ifindex 0) is freed by
 * skb_do_redirect and reported to the sender as sent: loss on the wire. */
#define FI_DROP bpf_redirect(0, 0)
#elif defined(FI_TC_ACT)
/* As a tc action (matchall + act_bpf, --tc-mode matchall) the program's
 * verdict passes through act_bpf, which keeps only OK, PIPE, RECLASSIFY,
 * REDIRECT and SHOT (anything else, STOLEN included, becomes "no verdict"
 * and the packet goes on): a drop there has to be SHOT. */
#define FI_DROP TC_ACT_SHOT
#else
#define FI_DROP TC_ACT_STOLEN
#endif
#else
#error "build with -DFI_HOOK_XDP or -DFI_HOOK_TC"
#endif

/* How many header bytes tc needs in the linear area for the deepest parse
 * (two VLAN tags, IPv6 with extension headers, TCP with options). */
#define FI_PULL_LEN 256

static __always_inline void *fi_data(fi_ctx_t *ctx)
{
	return (void *)(long)ctx->data;
}

static __always_inline void *fi_data_end(fi_ctx_t *ctx)
{
	return (void *)(long)ctx->data_end;
}

/* Make sure the headers are in the linear area. Only tc can have them outside
 * it (paged skbs); a failed pull leaves the packet as it is, and the parser
 * then sees fewer bytes and passes the packet untouched. */
static __always_inline void fi_pull_headers(fi_ctx_t *ctx)
{
#if defined(FI_HOOK_TC)
	__u32 linear = ctx->data_end - ctx->data;
	if (linear < FI_PULL_LEN && ctx->len > linear)
		bpf_skb_pull_data(ctx, ctx->len < FI_PULL_LEN ? ctx->len : FI_PULL_LEN);
#endif
}

/* The frame's whole length, paged parts (tc) and fragments (XDP multi-buffer) included. */
static __always_inline __u32 fi_len(fi_ctx_t *ctx)
{
#if defined(FI_HOOK_TC)
	return ctx->len;
#else
	return bpf_xdp_get_buff_len(ctx);
#endif
}

/* Copy bytes out of / into the frame at any offset, linear area or not. No
 * packet pointer is needed or invalidated, so these work after a helper call
 * that moved the data. Non-zero: out of the frame. */
static __always_inline long fi_load_bytes(fi_ctx_t *ctx, __u32 off, void *buf, __u32 len)
{
#if defined(FI_HOOK_TC)
	return bpf_skb_load_bytes(ctx, off, buf, len);
#else
	return bpf_xdp_load_bytes(ctx, off, buf, len);
#endif
}

static __always_inline long fi_store_bytes(fi_ctx_t *ctx, __u32 off, void *buf, __u32 len)
{
#if defined(FI_HOOK_TC)
	return bpf_skb_store_bytes(ctx, off, buf, len, 0);
#else
	return bpf_xdp_store_bytes(ctx, off, buf, len);
#endif
}

/* As fi_store_bytes, with a CHECKSUM_COMPLETE skb's sum (skb->csum, what the
 * receiver checks against) following the new bytes: for a change the L4
 * checksum field does not make up for (corrupt csum=bad). */
static __always_inline long fi_store_bytes_rcsum(fi_ctx_t *ctx, __u32 off, void *buf, __u32 len)
{
#if defined(FI_HOOK_TC)
	return bpf_skb_store_bytes(ctx, off, buf, len, BPF_F_RECOMPUTE_CSUM);
#else
	return bpf_xdp_store_bytes(ctx, off, buf, len);
#endif
}

#endif
