/* SPDX-License-Identifier: GPL-2.0 */
/* Test only: run the shared parser (bpf/lib/parse.h) on a frame and leave
 * what it found in a map, for tests/test_parsers.py to compare with
 * faultinj/packets.py. Passes every frame. */
#include "lib/parse.h"

struct probe_out {
	__s32 rc;            /* fi_parse's return: 0 L4 in reach, 1 leave alone, -1 malformed */
	__u32 l4_len;
	__u16 l3_proto;
	__u8 l4_proto;
	__u8 nonfirst_frag;
	__u8 tcp_flags;
	__u8 has_ports;
	__u16 vlan;
	__u16 ip_id;
	__u16 sport;         /* ports, or the ICMP echo id */
	__u16 dport;
	__u32 seq;
	__u32 saddr[4];
	__u32 daddr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct probe_out);
} probe SEC(".maps");

SEC(FI_SEC)
int parse_probe(fi_ctx_t *ctx)
{
	struct fi_pkt pkt;
	struct probe_out *o;
	__u32 key = 0;
	int rc;

	rc = fi_parse(ctx, &pkt);
	o = bpf_map_lookup_elem(&probe, &key);
	if (!o)
		return FI_PASS;
	o->rc = rc;
	o->l4_len = pkt.l4_len;
	o->l3_proto = pkt.l3_proto;
	o->l4_proto = pkt.l4_proto;
	o->nonfirst_frag = pkt.nonfirst_frag;
	o->tcp_flags = pkt.tcp_flags;
	o->has_ports = pkt.has_ports;
	o->vlan = pkt.vlan;
	o->ip_id = pkt.ip_id;
	o->sport = pkt.flow.sport;
	o->dport = pkt.flow.dport;
	o->seq = pkt.seq;
	__builtin_memcpy(o->saddr, pkt.flow.saddr, sizeof(o->saddr));
	__builtin_memcpy(o->daddr, pkt.flow.daddr, sizeof(o->daddr));
	return FI_PASS;
}

char _license[] SEC("license") = "GPL";
