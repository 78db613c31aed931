/* config_internal.h: what the files of the configuration loader share, and nothing more.
 *
 * config.c (environment, validation, getters, error messages), config_yaml.c (YAML -> raw
 * tree) and config_dump.c (the printer) are one module split by concept; this header is the
 * seam between them. It is private to those files: everyone else includes config.h, the
 * module's interface, and never sees the handle's layout or the loader's context. */
#ifndef SB_CONFIG_INTERNAL_H
#define SB_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "switchboard/common.h"

#define SB__CFG_PATH_MAX 1024 /* longest key path */

struct sb__config {
    json_t *root; /* effective tree, typed */
    char *name;   /* source name */
};

/* A key path built while walking a tree: "handlers[0].retry.policy" (concrete) or
 * "handlers[].retry.policy" (schema). Push returns -1 if it would pass SB__CFG_PATH_MAX;
 * pop restores the length a push saved. */
typedef struct sb__cfg_path {
    char buf[SB__CFG_PATH_MAX + 1];
    size_t len;
} sb__cfg_path_t;

/* One load in progress: the source name for messages, the two side tables that say where a
 * value came from, and the caller's error buffer (may be NULL). */
typedef struct sb__cfg_ctx {
    const char *name; /* file name for messages */
    json_t *lines;    /* concrete path -> line * 2 + (scalar was plain) */
    json_t *envsrc;   /* concrete path -> name of the variable that set it */
    char *errstr;
    size_t errsize;
} sb__cfg_ctx_t;

static inline int path_push(sb__cfg_path_t *p, const char *key, size_t *saved)
{
    size_t klen = strlen(key);
    *saved = p->len;
    size_t need = p->len + (p->len ? 1 : 0) + klen;
    if (need > SB__CFG_PATH_MAX)
        return -1;
    if (p->len)
        p->buf[p->len++] = '.';
    memcpy(p->buf + p->len, key, klen);
    p->len += klen;
    p->buf[p->len] = '\0';
    return 0;
}

static inline int path_push_index(sb__cfg_path_t *p, size_t index, size_t *saved)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "[%zu]", index);
    *saved = p->len;
    if (p->len + (size_t)n > SB__CFG_PATH_MAX)
        return -1;
    memcpy(p->buf + p->len, tmp, (size_t)n + 1);
    p->len += (size_t)n;
    return 0;
}

static inline int path_push_raw(sb__cfg_path_t *p, const char *s, size_t *saved)
{
    size_t n = strlen(s);
    *saved = p->len;
    if (p->len + n > SB__CFG_PATH_MAX)
        return -1;
    memcpy(p->buf + p->len, s, n + 1);
    p->len += n;
    return 0;
}

static inline void path_pop(sb__cfg_path_t *p, size_t saved)
{
    p->len = saved;
    p->buf[saved] = '\0';
}

/* ---- config.c -------------------------------------------------------------------------- */

/* True if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
bool sb__cfg_utf8_valid(const unsigned char *s, size_t n);

/* Writes "NAME:LINE: CPATH: message" (without "CPATH: " when cpath is NULL or empty) into
 * c->errstr and returns SB_ECONFIG. */
int sb__cfg_fail_line(sb__cfg_ctx_t *c, size_t line, const char *cpath, const char *fmt, ...)
    SB_PRINTF(4, 5);

/* Writes "NAME: out of memory" into c->errstr and returns SB_ENOMEM. */
int sb__cfg_oom(sb__cfg_ctx_t *c);

/* ---- config_yaml.c --------------------------------------------------------------------- */

/* Pass 1: parses the YAML text buf[0..len) (need not be NUL-terminated) into *out, a raw
 * tree whose scalars are strings (or null), recording every node's line in c->lines. An
 * empty document gives an empty mapping. On success *out is owned by the caller; on failure
 * it is NULL and the result is SB_ECONFIG (message in c->errstr) or SB_ENOMEM. */
int sb__cfg_yaml_read(sb__cfg_ctx_t *c, const char *buf, size_t len, json_t **out);

#endif
