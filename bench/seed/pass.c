/* The floor: a program that only passes (-DHOOK_XDP or -DHOOK_TC). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifdef HOOK_XDP
SEC("xdp") int pass_xdp(struct xdp_md *ctx) { return XDP_PASS; }
#else
SEC("tc") int pass_tc(struct __sk_buff *skb) { return -1; /* TC_ACT_UNSPEC */ }
#endif
char _license[] SEC("license") = "GPL";
