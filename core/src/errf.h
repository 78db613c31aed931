/* errf.h: filling a caller's error buffer, the one way every edge of the library does it.
 *
 * Functions at the edges (config, module loading, schemas) report a one-line reason into
 * (char *errstr, size_t errstr_size), which the caller may pass as NULL / 0, and return an
 * sb_err_t code. sb__errf() does both in one statement: `return sb__errf(errstr, n, SB_EINVAL,
 * "no schema given");`. Not installed; not for log lines (log.h) or message verdicts. */
#ifndef SB_ERRF_H
#define SB_ERRF_H

#include <stddef.h>

#include "switchboard/common.h"

/* Formats fmt into errstr (truncated to errstr_size - 1 bytes, always NUL-terminated) unless
 * errstr is NULL or errstr_size is 0, and returns rc unchanged. */
int sb__errf(char *errstr, size_t errstr_size, int rc, const char *fmt, ...) SB_PRINTF(4, 5);

#endif
