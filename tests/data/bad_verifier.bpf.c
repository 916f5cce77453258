/* Reads packet data without a bounds check: the verifier must refuse it. */
#include "lib/fault.h"

SEC(FI_SEC)
int bad_verifier(fi_ctx_t *ctx)
{
	unsigned char *p = fi_data(ctx);

	return p[20] ? FI_PASS : FI_DROP;
}
