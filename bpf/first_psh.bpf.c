/* SPDX-License-Identifier: GPL-2.0 */
/* first-psh: PSH on the first data segment of every TCP connection — the
 * field bug of the seed article (OVS reordered exactly those segments).
 *
 * Per-connection state in an LRU map keyed by the flow hash: the sequence
 * number of the connection's first data segment. A retransmission of that
 * segment gets PSH too; a SYN on the flow starts a new connection. The unit
 * is the packet at the hook: with GSO, set the link's gso_max_segs to 1, or
 * the PSH lands on the last wire segment of the first super-packet. */
#include "lib/fault.h"
#include "lib/csum.h"

struct fi_conn {
	__u32 first_seq;
	__u32 hit;   /* 1: this connection was drawn to get PSH */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct fi_conn);
} fi_conns SEC(".maps");

SEC(FI_SEC)
int first_psh(fi_ctx_t *ctx)
{
	struct fi_config *cfg;
	struct fi_conn *conn, fresh = {};
	struct fi_pkt pkt;
	struct tcphdr *th;
	__u64 key;
	__u32 seq;

	cfg = fi_config_get(ctx);
	if (!cfg)
		return FI_PASS;
	th = fi_parse_tcp(ctx, &pkt);
	if (!th || !fi_match(cfg, &pkt))
		return FI_PASS;
	key = fi_flow_hash(&pkt.flow);
	if (th->flags & TCP_FLAG_SYN) {  /* a new connection on this flow */
		bpf_map_delete_elem(&fi_conns, &key);
		return FI_PASS;
	}
	if (pkt.l4_len <= th->doff * 4u || (th->flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		return FI_PASS;
	seq = bpf_ntohl(th->seq);
	conn = bpf_map_lookup_elem(&fi_conns, &key);
	if (!conn) {
		fresh.first_seq = seq;
		fresh.hit = fi_decide(cfg, &pkt, NULL);
		bpf_map_update_elem(&fi_conns, &key, &fresh, BPF_NOEXIST);
		conn = bpf_map_lookup_elem(&fi_conns, &key);
		if (!conn)
			return FI_PASS;
	}
	if (conn->first_seq != seq)
		return FI_PASS;
	fi_count(FI_MATCHED);
	if (!conn->hit || (th->flags & TCP_FLAG_PSH))
		return FI_PASS;
	fi_tcp_write_flags(ctx, th, pkt.l4_off, th->flags | TCP_FLAG_PSH);
	fi_acted(ctx, cfg, &pkt, FI_A_MODIFY, 0);
	return FI_PASS;
}
