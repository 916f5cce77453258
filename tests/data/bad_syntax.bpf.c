#include "lib/fault.h"

SEC(FI_SEC)
int bad_syntax(fi_ctx_t *ctx)
{
	return FI_PASS  /* missing semicolon */
}
