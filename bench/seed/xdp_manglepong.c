/* The seed article's XDP example ("Network debugging with eBPF"), with the
 * includes and helpers it left out; measured beside faultinj's ttl-pong. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* <linux/icmp.h> pulls in glibc's socket headers, which do not build for
 * -target bpf (gnu/stubs-32.h): the two things it is needed for, here. */
#define ICMP_ECHOREPLY 0
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 un;
};

static inline void csum_replace2(__u16 *sum, __u16 old, __u16 new)
{
	__u16 csum = ~*sum;

	csum += ~old;
	csum += csum < (__u16)~old;
	csum += new;
	csum += csum < new;
	*sum = ~csum;
}

SEC("xdp")
int xdp_main(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	struct iphdr *iph = (struct iphdr *)(eth + 1);
	struct icmphdr *icmph = (struct icmphdr *)(iph + 1);

	/* sanity check needed by the eBPF verifier */
	if ((void *)(icmph + 1) > data_end)
		return XDP_PASS;

	/* matched a pong packet */
	if (eth->h_proto != bpf_htons(ETH_P_IP) || iph->protocol != IPPROTO_ICMP ||
	    icmph->type != ICMP_ECHOREPLY)
		return XDP_PASS;

	if (iph->ttl) {
		/* save the old TTL to recalculate the checksum */
		__u16 *ttlproto = (__u16 *)&iph->ttl;
		__u16 old_ttlproto = *ttlproto;

		/* set the TTL to a pseudorandom number 1 < x < TTL */
		iph->ttl = bpf_get_prandom_u32() % iph->ttl + 1;

		/* recalculate the checksum; otherwise, the IP stack will drop it */
		csum_replace2(&iph->check, old_ttlproto, *ttlproto);
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
