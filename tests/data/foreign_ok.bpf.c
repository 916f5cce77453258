/* Another tool's tc program that ends classification: every packet gets TC_ACT_OK. */
#define SEC(name) __attribute__((section(name), used))

SEC("tc") int foreign_ok(void *ctx) { return 0; /* TC_ACT_OK */ }
char _license[] SEC("license") = "GPL";
