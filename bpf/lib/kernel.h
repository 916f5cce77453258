/* SPDX-License-Identifier: GPL-2.0 */
/* The few kernel structures the tracer reads, each field by name only:
 * preserve_access_index makes every access a CO-RE relocation, which libbpf
 * resolves against the running kernel's BTF (/sys/kernel/btf/vmlinux) at
 * load time. No kernel headers and no vmlinux.h: offsets come from the
 * kernel itself, nested and anonymous members included. */
#ifndef FI_KERNEL_H
#define FI_KERNEL_H

#include "defs.h"

#define FI_CORE __attribute__((preserve_access_index))

struct ns_common {
	unsigned int inum;
} FI_CORE;

struct net {
	struct ns_common ns;
} FI_CORE;

typedef struct {
	struct net *net;
} FI_CORE possible_net_t;

struct net_device {
	char name[16];
	int ifindex;
	possible_net_t nd_net;
} FI_CORE;

struct sock_common {
	unsigned short skc_family;
} FI_CORE;

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
} FI_CORE;

/* at head + end: who else holds the packet's data (skb_clone shares it) */
struct skb_shared_info {
	struct {
		int counter;
	} dataref;
} FI_CORE;

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned int end;
	unsigned int len;
	__u32 mark;
	__u16 vlan_tci;
	__u16 mac_header;
	__u16 network_header;
	__u16 protocol;
	unsigned char *head;
	unsigned char *data;
} FI_CORE;

#endif
