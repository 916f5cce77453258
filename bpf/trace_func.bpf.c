/* SPDX-License-Identifier: GPL-2.0 */
/* trace --functions: fentry on a kernel function that takes an sk_buff (found
 * from BTF, as pwru does), one load per function, attach target set by user
 * space. The skb is the function's argument number N (fi_fn_skbN); the event
 * and the filter are the tracepoints' (lib/trace.h), their maps reused. */
#include "lib/trace.h"

#define FI_FN(n)                                                             \
SEC("fentry")                                                                \
int fi_fn_skb##n(__u64 *ctx)                                                 \
{                                                                            \
	fi_trace_func((const struct sk_buff *)ctx[n], FI_HOP_FUNC, 0,        \
		      bpf_get_func_ip(ctx));                                 \
	return 0;                                                            \
}

FI_FN(0)
FI_FN(1)
FI_FN(2)
FI_FN(3)
FI_FN(4)

char _license[] SEC("license") = "GPL";
