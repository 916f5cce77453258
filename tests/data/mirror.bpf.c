/* The checksum-state matrix's witness (tests/test_csum_matrix.py): at tc
 * ingress, after every fault on the hook, a clone of each packet goes out of
 * a mirror veth, where a packet socket captures it. A packet socket on the
 * receiving interface itself sees frames before tc ingress, so it cannot see
 * what a tc-ingress fault did; this sees what the receiver's stack is handed.
 * No headers (as foreign.bpf.c): the helper by its number, built for any
 * architecture with -DMIRROR_IFINDEX=the mirror veth's index. */
#define SEC(name) __attribute__((section(name), used))

#ifndef MIRROR_IFINDEX
#error "build with -DMIRROR_IFINDEX=the mirror veth's index"
#endif

static long (*bpf_clone_redirect)(void *skb, unsigned int ifindex, unsigned long long flags) = (void *)13;

SEC("tc") int mirror(void *skb)
{
	bpf_clone_redirect(skb, MIRROR_IFINDEX, 0);   /* to the mirror veth's egress */
	return -1;                                     /* TC_ACT_UNSPEC: as if it were not there */
}

char _license[] SEC("license") = "GPL";
