/* event.c: field access on decoded events; see event.h for the design. The index built by
 * the scanner answers lookups; the jansson tree is only a fallback for payloads with more
 * top-level members than the index holds, and for callers that want the tree itself. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchboard/error.h"
#include "alloc_internal.h"
#include "datetime.h"
#include "event.h"

void sb__event_init(sb_event_t *ev)
{
    memset(ev, 0, offsetof(sb_event_t, index));
    ev->index.n = 0;
    ev->index.overflow = false;
    sb__arena_init(&ev->arena);
    ev->error[0] = '\0';
}

void sb__event_reset(sb_event_t *ev)
{
    if (ev->json)
        json_decref(ev->json);
    sb__arena_reset(&ev->arena);
    memset(ev, 0, offsetof(sb_event_t, index));
    ev->index.n = 0;
    ev->index.overflow = false;
    ev->error[0] = '\0';
}

const char *sb__event_header(const sb_event_t *ev, const char *name, size_t *len)
{
    if (!ev->msg)
        return NULL;
    size_t nl = strlen(name);
    for (size_t i = 0; i < ev->msg->n_headers; i++) {
        const sb__header_t *h = &ev->msg->headers[i];
        if (h->name_len == nl && memcmp(h->name, name, nl) == 0) {
            if (len)
                *len = h->value_len;
            return h->value;
        }
    }
    return NULL;
}

json_t *sb__event_json(sb_event_t *ev)
{
    if (ev->json_state == 1)
        return ev->json;
    if (ev->json_state == -1)
        return NULL;
    if (ev->data_type == SB__JT_NONE) {
        ev->json_state = -1;
        snprintf(ev->error, sizeof ev->error, "the event has no JSON payload");
        return NULL;
    }
    json_error_t je;
    sb__alloc_json_hooks();
    unsigned long failures = sb__alloc_failures();
    ev->json = json_loadb(ev->data, ev->data_len,
                          JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
    if (sb__alloc_failures() != failures) {
        /* jansson may drop a character or blame the input when memory runs out. */
        json_decref(ev->json);
        ev->json = NULL;
        ev->json_state = -1;
        snprintf(ev->error, sizeof ev->error, "out of memory building the JSON tree");
        return NULL;
    }
    if (!ev->json) {
        ev->json_state = -1;
        snprintf(ev->error, sizeof ev->error, "invalid JSON at byte %d: %s", je.position, je.text);
        return NULL;
    }
    ev->json_state = 1;
    return ev->json;
}

/* Finds a member: in the index, else (index overflowed) in the tree. Exactly one of
 * *f / *j is set on SB_EOK. */
static int lookup(sb_event_t *ev, const char *name, const sb__jfield_t **f, json_t **j)
{
    *f = NULL;
    *j = NULL;
    if (ev->data_type != SB__JT_OBJECT)
        return SB_ENOTFOUND;
    *f = sb__jindex_find(&ev->index, name, strlen(name));
    if (*f)
        return (*f)->type == SB__JT_NULL ? SB_ENOTFOUND : SB_EOK;
    if (!ev->index.overflow)
        return SB_ENOTFOUND;
    json_t *root = sb__event_json(ev);
    *j = root ? json_object_get(root, name) : NULL;
    if (!*j || json_is_null(*j))
        return SB_ENOTFOUND;
    return SB_EOK;
}

int sb__event_get_str(sb_event_t *ev, const char *name, const char **out, size_t *len)
{
    const sb__jfield_t *f;
    json_t *j;
    int rc = lookup(ev, name, &f, &j);
    if (rc != SB_EOK)
        return rc;
    if (j) {
        if (!json_is_string(j))
            return SB_EINVAL;
        *out = json_string_value(j);
        if (len)
            *len = json_string_length(j);
        return SB_EOK;
    }
    if (f->type != SB__JT_STRING)
        return SB_EINVAL;
    char *s = sb__arena_alloc(&ev->arena, (size_t)f->val_len + 1);
    if (!s)
        return SB_ENOMEM;
    size_t n = f->val_esc ? sb__junescape(f->val, f->val_len, s) : f->val_len;
    if (!f->val_esc)
        memcpy(s, f->val, n);
    s[n] = '\0';
    *out = s;
    if (len)
        *len = n;
    return SB_EOK;
}

int sb__event_get_int(sb_event_t *ev, const char *name, int64_t *out)
{
    const sb__jfield_t *f;
    json_t *j;
    int rc = lookup(ev, name, &f, &j);
    if (rc != SB_EOK)
        return rc;
    if (j) {
        if (json_is_integer(j)) {
            *out = (int64_t)json_integer_value(j);
            return SB_EOK;
        }
        return SB_EINVAL;
    }
    if (f->type != SB__JT_NUMBER || !f->is_int)
        return SB_EINVAL;
    /* The scanner proved it is an integer that fits in int64. */
    const char *p = f->val, *end = f->val + f->val_len;
    int neg = *p == '-';
    p += neg;
    uint64_t v = 0;
    while (p < end)
        v = v * 10 + (uint64_t)(*p++ - '0');
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return SB_EOK;
}

int sb__event_get_double(sb_event_t *ev, const char *name, double *out)
{
    const sb__jfield_t *f;
    json_t *j;
    int rc = lookup(ev, name, &f, &j);
    if (rc != SB_EOK)
        return rc;
    if (j) {
        if (!json_is_number(j))
            return SB_EINVAL;
        *out = json_number_value(j);
        return SB_EOK;
    }
    if (f->type != SB__JT_NUMBER)
        return SB_EINVAL;
    char tmp[128];
    if (f->val_len >= sizeof tmp)
        return SB_EINVAL;
    memcpy(tmp, f->val, f->val_len);
    tmp[f->val_len] = '\0';
    *out = strtod(tmp, NULL);
    return SB_EOK;
}

int sb__event_get_bool(sb_event_t *ev, const char *name, bool *out)
{
    const sb__jfield_t *f;
    json_t *j;
    int rc = lookup(ev, name, &f, &j);
    if (rc != SB_EOK)
        return rc;
    if (j) {
        if (!json_is_boolean(j))
            return SB_EINVAL;
        *out = json_is_true(j);
        return SB_EOK;
    }
    if (f->type != SB__JT_TRUE && f->type != SB__JT_FALSE)
        return SB_EINVAL;
    *out = f->type == SB__JT_TRUE;
    return SB_EOK;
}

int sb__event_get_time(sb_event_t *ev, const char *name, int64_t *unix_us)
{
    const char *s;
    size_t n;
    int rc = sb__event_get_str(ev, name, &s, &n);
    if (rc != SB_EOK)
        return rc;
    return sb__datetime_parse(s, n, true, unix_us, NULL) == 0 ? SB_EOK : SB_EINVAL;
}
