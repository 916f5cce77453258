/* Empty on purpose. With -target bpf, glibc's headers (stdint.h, arpa/inet.h,
 * and <linux/icmp.h> through them) take the 32-bit path and include
 * gnu/stubs-32.h, which only multilib systems have. Users' programs that
 * include them (the seed article's do) compile with this directory on the
 * include path; faultinj's own programs include no libc header. */
