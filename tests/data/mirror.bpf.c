/* The matrix's witness (tests/test_csum_matrix.py): at tc ingress, after every
 * fault on the hook, a clone of each packet goes out of a mirror veth, where
 * a packet socket captures it. A packet socket on the receiving interface
 * itself sees frames before tc ingress, so it cannot see what a tc-ingress
 * fault did; this sees what the receiver's stack is handed. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#ifndef MIRROR_IFINDEX
#error "build with -DMIRROR_IFINDEX=the mirror veth's index"
#endif

SEC("tc")
int mirror(struct __sk_buff *skb)
{
	bpf_clone_redirect(skb, MIRROR_IFINDEX, 0);
	return TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "GPL";
