/* A stand-in for another tool's programs: passes everything. */
#define SEC(name) __attribute__((section(name), used))

SEC("tc") int foreign_tc(void *ctx) { return -1; /* TC_ACT_UNSPEC */ }
SEC("xdp") int foreign_xdp(void *ctx) { return 2; /* XDP_PASS */ }
char _license[] SEC("license") = "GPL";
