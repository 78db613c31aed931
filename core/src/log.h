/* log.h: the process logger: one JSON object per line (default) or a text line for humans.
 *
 * JSON:  {"time":"2026-12-03T16:00:00.123Z","level":"info","msg":"...","event_id":"...",...}
 * text:  2026-12-03T16:00:00.123Z INFO  msg event_id=... key=value ...
 *
 * Every call formats its whole line into one buffer and writes it with a single fwrite()
 * under a lock, so lines from different threads never interleave. Any thread may log.
 *
 * Secrets: every string that goes into a line (message, fields, keys and values) is
 * filtered on the way in: occurrences of a registered secret become "********", and the
 * password of any "scheme://user:password@host" URL is masked the same way. Strings are
 * escaped so that a line is always one valid JSON object (control characters, quotes,
 * backslashes; invalid UTF-8 becomes U+FFFD), and in text format always one line.
 *
 * Levels are sb_log_level_t from switchboard/handler.h (SB_LOG_DEBUG .. SB_LOG_ERROR). */
#ifndef SB_LOG_H
#define SB_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "switchboard/common.h"
#include "switchboard/handler.h"

#define SB__LOG_JSON 0
#define SB__LOG_TEXT 1

/* What is known about the current event; any member may be NULL (then it is omitted).
 * Borrowed for the duration of the call. */
typedef struct sb__log_fields {
    const char *event_id;
    const char *event_type;
    const char *handler;
    const char *trace_id;
    const char *module;
} sb__log_fields_t;

/* One extra field of a line: a string or an integer. Reserved names (time, level, msg and
 * the sb__log_fields_t members) are written with an "x_" prefix so they never collide. */
typedef enum sb__log_kv_type { SB__KV_STR = 0, SB__KV_INT = 1 } sb__log_kv_type_t;

typedef struct sb__log_kv {
    const char *key;
    sb__log_kv_type_t type;
    const char *str; /* SB__KV_STR; NULL is written as JSON null / text "null" */
    int64_t num;     /* SB__KV_INT */
} sb__log_kv_t;

#define SB__KV_S(k, v) ((sb__log_kv_t){.key = (k), .type = SB__KV_STR, .str = (v)})
#define SB__KV_I(k, v) ((sb__log_kv_t){.key = (k), .type = SB__KV_INT, .num = (int64_t)(v)})

/* Sets the threshold (lines below it are dropped), the format (SB__LOG_JSON or
 * SB__LOG_TEXT) and the output (NULL means stderr). The FILE is borrowed: it must stay open
 * until the next configure call. Any thread; takes effect for lines started afterwards. */
void sb__log_configure(int level, int format, FILE *out);

/* True when a line at `level` would be written (cheap: one atomic load). */
bool sb__log_enabled(int level);

/* A line with a printf-style message. `f` may be NULL. */
void sb__log(int level, const sb__log_fields_t *f, const char *fmt, ...) SB_PRINTF(3, 4);

/* A line with a literal message and extra string fields given as NULL-terminated
 * (const char *key, const char *value) pairs. */
void sb__logkv(int level, const sb__log_fields_t *f, const char *msg, ...);

/* The general form: extra typed fields kv[0..nkv) and a printf-style message. */
void sb__log_fields(int level, const sb__log_fields_t *f, const sb__log_kv_t *kv, size_t nkv,
                    const char *fmt, ...) SB_PRINTF(5, 6);

/* "debug", "info", "warn" ("warning"), "error", case-insensitive -> SB_LOG_*; anything else
 * (or NULL) -> SB_EINVAL. */
int sb__log_level_parse(const char *s);

/* "debug", "info", "warn", "error"; "?" for anything else. Static string. */
const char *sb__log_level_name(int level);

/* "json" -> SB__LOG_JSON, "text" -> SB__LOG_TEXT, else SB_EINVAL. */
int sb__log_format_parse(const char *s);

/* Registers a secret: from now on its occurrences are masked in every line. Values shorter
 * than 4 bytes are ignored (they would mask ordinary words) and so are duplicates; both
 * return SB_EOK. The string is copied. SB_ENOMEM on allocation failure, SB_EINVAL for
 * NULL. Any thread. */
int sb__log_add_secret(const char *s);

/* Forgets every registered secret and frees the registry (tests, and process teardown). */
void sb__log_clear_secrets(void);

/* Copies `url` into out[0..n) with the password of "scheme://user:password@host..."
 * replaced by "********". A URL without a password is copied unchanged. Always
 * NUL-terminates when n > 0. Returns SB_EOK, SB_ERANGE when the result was truncated, or
 * SB_EINVAL for NULL arguments / n == 0. */
int sb__log_redact_url(const char *url, char *out, size_t n);

#endif
