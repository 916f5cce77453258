/* SPDX-License-Identifier: GPL-2.0 */
/* corrupt: flip random bits in the payload of a share of packets. The L4
 * checksum (TCP, UDP, ICMP, ICMPv6) is fixed by default, so the corruption
 * reaches the application; with csum=bad it is left as it was and the
 * receiver drops the packet. The bits are drawn from the packet's seeded
 * stream: the same seed flips the same bits.
 *
 * param: the number of bits (1..64) | FI_CORRUPT_BAD_CSUM.
 * Checksum states (csum=bad):
 * - tc egress: TCP is always CHECKSUM_PARTIAL there (UDP with tx offload on):
 *   the checksum is completed after tc, over the corrupted bytes; the partial
 *   sum is moved so that it comes out as the original, wrong for the new
 *   bytes (fi_l4_csum_keep_at). A device that checks it drops the packet;
 *   a veth with tx offload on hands the PARTIAL skb to its peer, which never
 *   checks it: there turn the sender's tx checksumming off.
 * - tc ingress: a packet whose checksum the stack would not check (PARTIAL
 *   from a veth peer with offload on, UNNECESSARY from a device) is made
 *   CHECKSUM_NONE (fi_csum_distrust), so the receiver checks and drops it;
 *   with CHECKSUM_COMPLETE the flips go into skb->csum, so its check fails.
 * - xdp: the skb made after XDP_PASS keeps the state the driver gives it (a
 *   veth peer's PARTIAL, a NIC's UNNECESSARY) and no XDP helper changes it:
 *   there the receiver may deliver the packet; use tc ingress for csum=bad. */
#include "lib/fault.h"
#include "lib/csum.h"

enum fi_corrupt_param {
	FI_CORRUPT_BAD_CSUM = 1 << 8,   /* param: leave the checksum wrong */
	FI_CORRUPT_MAX_BITS = 64,       /* param's low bits: bits flipped, 1..this */
};

FI_LAYOUT(corrupt, enum fi_corrupt_param param);

SEC(FI_SEC)
int corrupt(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_pkt pkt;
	__u32 start, plen, csum_off = 0, nbits, hdr = 0;
	int udp = 0, fix;
	__u64 draw;

	cfg = fi_config_get(ctx);
	if (!cfg)
		return FI_PASS;
	if (fi_parse(ctx, &pkt) != 0 || !fi_match(cfg, &pkt))
		return FI_PASS;  /* not IP, a later fragment, or malformed */
	if (pkt.l4_proto == IPPROTO_TCP) {
		struct tcphdr *th = pkt.l4;

		if ((void *)(th + 1) > fi_data_end(ctx))
			return FI_PASS;
		hdr = th->doff * 4;
		csum_off = pkt.l4_off + 16;
	} else if (pkt.l4_proto == IPPROTO_UDP) {
		hdr = 8;
		csum_off = pkt.l4_off + 6;
		udp = 1;
	} else if (pkt.l4_proto == IPPROTO_ICMP || pkt.l4_proto == IPPROTO_ICMPV6) {
		hdr = 8;
		csum_off = pkt.l4_off + 2;
	}
	if (pkt.l4_len <= hdr)
		return FI_PASS;  /* no payload */
	start = pkt.l4_off + hdr;
	plen = pkt.l4_len - hdr;
	fi_count(FI_MATCHED);
	if (!fi_decide(cfg, &pkt, &draw))
		return FI_PASS;
	nbits = cfg->param & 0xFF;
	fix = !(cfg->param & FI_CORRUPT_BAD_CSUM);
	for (__u32 i = 0; i < FI_CORRUPT_MAX_BITS; i++) {
		__u64 pos;
		__u32 off;
		__u8 b, nb;

		if (i >= nbits)
			break;
		pos = fi_mix64(draw + i) % ((__u64)plen * 8);
		off = start + (__u32)(pos >> 3);
		if (fi_load_bytes(ctx, off, &b, 1))
			break;  /* the frame is shorter than its IP header says */
		nb = b ^ (1 << (pos & 7));
		if (fix ? fi_store_bytes(ctx, off, &nb, 1) : fi_store_bytes_rcsum(ctx, off, &nb, 1))
			break;
		if (csum_off && (fix || !(cfg->flags & FI_CFG_INGRESS))) {
			/* the byte is the high half of its 16-bit word at an even
			 * offset from the L4 header, the low half at an odd one */
			int low = (off - pkt.l4_off) & 1;
			__be16 ow = bpf_htons(low ? b : (__u16)b << 8), nw = bpf_htons(low ? nb : (__u16)nb << 8);

			if (fix)
				fi_l4_csum_replace2_at(ctx, csum_off, ow, nw, udp);
			else
				fi_l4_csum_keep_at(ctx, csum_off, ow, nw, udp);
		}
	}
	if (!fix && (cfg->flags & FI_CFG_INGRESS))
		fi_csum_distrust(ctx, pkt.l3_off, pkt.l4_off);
	fi_acted(ctx, cfg, &pkt, FI_A_MODIFY, nbits);
	return FI_PASS;
}
