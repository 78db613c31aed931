/* dlq_record.c: dead-letter records in memory: the record, its typed values and header
 * lists, and what the CLI and replay read from it.
 *
 * Design: the record stores bytes and typed values exactly as the broker gave them (the
 * AMQP field-table type of every header value, byte strings that need not be UTF-8 or
 * NUL-free), so that nothing is lost between a DLQ backend, export and import. Values are
 * checked (type letter, range, nesting) when they are copied in, so a record built through
 * this API has a JSON Lines form unless it nests too deep. The event id and type follow the
 * consumer (envelope.c), so `dlq` names an event as the handler saw it.
 *
 * Not here: the JSON Lines codec (dlq_jsonl.c), broker I/O, filtering, the CLI's table
 * output. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "datetime.h"
#include "dlq_record.h"
#include "dlq_record_internal.h"
#include "jscan.h"

const uint64_t sb__dlq_num_max[SB__DLQ_NUM_COUNT] = {
    [SB__DLQ_PARTITION] = INT32_MAX,    [SB__DLQ_OFFSET] = INT64_MAX,
    [SB__DLQ_TIMESTAMP_MS] = INT64_MAX, [SB__DLQ_DELIVERY_MODE] = 255,
    [SB__DLQ_PRIORITY] = 255,           [SB__DLQ_TIMESTAMP] = UINT64_MAX,
};

/* ---- value types ------------------------------------------------------------------------ */

sb__dlq_kind_t sb__dlq_kind_of(char t)
{
    switch (t) {
    case 't':
        return SB__DLQ_K_BOOL;
    case 'b':
    case 's':
    case 'I':
    case 'l':
        return SB__DLQ_K_SIGNED;
    case 'B':
    case 'u':
    case 'i':
    case 'L':
    case 'T':
        return SB__DLQ_K_UNSIGNED;
    case 'f':
        return SB__DLQ_K_FLOAT;
    case 'd':
        return SB__DLQ_K_DOUBLE;
    case 'D':
        return SB__DLQ_K_DECIMAL;
    case 'S':
    case 'x':
    case 'K':
        return SB__DLQ_K_BYTES;
    case 'F':
    case 'A':
        return SB__DLQ_K_LIST;
    case 'V':
        return SB__DLQ_K_VOID;
    default:
        return SB__DLQ_K_BAD;
    }
}

void sb__dlq_signed_range(char t, int64_t *lo, int64_t *hi)
{
    switch (t) {
    case 'b':
        *lo = INT8_MIN;
        *hi = INT8_MAX;
        break;
    case 's':
        *lo = INT16_MIN;
        *hi = INT16_MAX;
        break;
    case 'I':
        *lo = INT32_MIN;
        *hi = INT32_MAX;
        break;
    default:
        *lo = INT64_MIN;
        *hi = INT64_MAX;
        break;
    }
}

uint64_t sb__dlq_unsigned_max(char t)
{
    switch (t) {
    case 'B':
        return UINT8_MAX;
    case 'u':
        return UINT16_MAX;
    case 'i':
        return UINT32_MAX;
    default:
        return UINT64_MAX;
    }
}

/* ---- bytes and lists ------------------------------------------------------------------- */

int sb__dlq_bytes_set(sb__dlq_bytes_t *b, const char *p, size_t len)
{
    char *copy = NULL;
    if (p) {
        copy = sb_malloc(len + 1);
        if (!copy)
            return SB_ENOMEM;
        if (len)
            memcpy(copy, p, len);
        copy[len] = '\0';
    }
    sb_free(b->p);
    b->p = copy;
    b->len = p ? len : 0;
    return SB_EOK;
}

void sb__dlq_list_clear(sb__dlq_list_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        sb_free(l->v[i].name.p);
        sb__dlq_value_free(&l->v[i].value);
    }
    sb_free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

void sb__dlq_value_free(sb__dlq_value_t *v)
{
    switch (sb__dlq_kind_of(v->type)) {
    case SB__DLQ_K_BYTES:
        sb_free(v->as.bytes.p);
        v->as.bytes.p = NULL;
        break;
    case SB__DLQ_K_LIST:
        sb__dlq_list_clear(&v->as.list);
        break;
    default:
        break;
    }
}

/* Checks a value (recursively) before it is copied in. */
static int value_check(const sb__dlq_value_t *v, unsigned depth)
{
    int64_t lo, hi;
    switch (sb__dlq_kind_of(v->type)) {
    case SB__DLQ_K_BAD:
        return SB_EINVAL;
    case SB__DLQ_K_SIGNED:
        sb__dlq_signed_range(v->type, &lo, &hi);
        return v->as.i < lo || v->as.i > hi ? SB_ERANGE : SB_EOK;
    case SB__DLQ_K_UNSIGNED:
        return v->as.u > sb__dlq_unsigned_max(v->type) ? SB_ERANGE : SB_EOK;
    case SB__DLQ_K_LIST:
        if (depth >= SB__DLQ_MAX_DEPTH)
            return SB_ETOOBIG;
        for (size_t i = 0; i < v->as.list.n; i++) {
            int rc = value_check(&v->as.list.v[i].value, depth + 1);
            if (rc != SB_EOK)
                return rc;
        }
        return SB_EOK;
    default:
        return SB_EOK;
    }
}

static int list_copy(sb__dlq_list_t *dst, const sb__dlq_list_t *src);

/* Deep copy of a checked value into *dst (which holds nothing). */
static int value_copy(sb__dlq_value_t *dst, const sb__dlq_value_t *src)
{
    *dst = *src;
    switch (sb__dlq_kind_of(src->type)) {
    case SB__DLQ_K_BYTES:
        dst->as.bytes.p = NULL;
        return sb__dlq_bytes_set(&dst->as.bytes, src->as.bytes.p, src->as.bytes.len);
    case SB__DLQ_K_LIST:
        memset(&dst->as.list, 0, sizeof dst->as.list);
        return list_copy(&dst->as.list, &src->as.list);
    default:
        return SB_EOK;
    }
}

int sb__dlq_list_reserve(sb__dlq_list_t *l, size_t want)
{
    if (want <= l->cap)
        return SB_EOK;
    size_t cap = l->cap ? l->cap * 2 : 4;
    while (cap < want)
        cap *= 2;
    sb__dlq_field_t *v = sb_realloc(l->v, cap * sizeof *v);
    if (!v)
        return SB_ENOMEM;
    l->v = v;
    l->cap = cap;
    return SB_EOK;
}

/* Appends an empty slot (name copied) and returns it, or NULL on ENOMEM. */
static sb__dlq_field_t *list_push(sb__dlq_list_t *l, const char *name, size_t name_len)
{
    if (sb__dlq_list_reserve(l, l->n + 1) != SB_EOK)
        return NULL;
    sb__dlq_field_t *f = &l->v[l->n];
    memset(f, 0, sizeof *f);
    f->value.type = 'V';
    if (name && sb__dlq_bytes_set(&f->name, name, name_len) != SB_EOK)
        return NULL;
    l->n++;
    return f;
}

static int list_copy(sb__dlq_list_t *dst, const sb__dlq_list_t *src)
{
    if (sb__dlq_list_reserve(dst, src->n) != SB_EOK)
        return SB_ENOMEM;
    for (size_t i = 0; i < src->n; i++) {
        const sb__dlq_field_t *sf = &src->v[i];
        sb__dlq_field_t *df = list_push(dst, sf->name.p, sf->name.len);
        if (!df || value_copy(&df->value, &sf->value) != SB_EOK) {
            if (df)
                df->value.type = 'V'; /* value_copy cleaned up only what it did not own */
            sb__dlq_list_clear(dst);
            return SB_ENOMEM;
        }
    }
    return SB_EOK;
}

int sb__dlq_list_add(sb__dlq_list_t *l, const char *name, size_t name_len, const sb__dlq_value_t *v,
                     sb__dlq_value_t **added)
{
    int rc = value_check(v, 1);
    if (rc != SB_EOK)
        return rc;
    sb__dlq_field_t *f = list_push(l, name, name_len);
    if (!f)
        return SB_ENOMEM;
    rc = value_copy(&f->value, v);
    if (rc != SB_EOK) {
        l->n--;
        sb_free(f->name.p);
        sb__dlq_value_free(&f->value);
        return rc;
    }
    if (added)
        *added = &f->value;
    return SB_EOK;
}

static size_t cstrlen(const char *s)
{
    return s ? strlen(s) : 0;
}

int sb__dlq_list_add_int(sb__dlq_list_t *l, const char *name, char type, int64_t v)
{
    sb__dlq_value_t val = {.type = type};
    switch (sb__dlq_kind_of(type)) {
    case SB__DLQ_K_SIGNED:
        val.as.i = v;
        break;
    case SB__DLQ_K_UNSIGNED:
        if (v < 0)
            return SB_ERANGE;
        val.as.u = (uint64_t)v;
        break;
    default:
        return SB_EINVAL;
    }
    return sb__dlq_list_add(l, name, cstrlen(name), &val, NULL);
}

int sb__dlq_list_add_uint(sb__dlq_list_t *l, const char *name, char type, uint64_t v)
{
    sb__dlq_value_t val = {.type = type};
    switch (sb__dlq_kind_of(type)) {
    case SB__DLQ_K_SIGNED:
        if (v > INT64_MAX)
            return SB_ERANGE;
        val.as.i = (int64_t)v;
        break;
    case SB__DLQ_K_UNSIGNED:
        val.as.u = v;
        break;
    default:
        return SB_EINVAL;
    }
    return sb__dlq_list_add(l, name, cstrlen(name), &val, NULL);
}

int sb__dlq_list_add_bytes(sb__dlq_list_t *l, const char *name, char type, const char *p,
                           size_t len)
{
    if (sb__dlq_kind_of(type) != SB__DLQ_K_BYTES || (!p && type != 'K'))
        return SB_EINVAL;
    /* The cast is safe: value_copy only reads the bytes. */
    sb__dlq_value_t val = {.type = type, .as.bytes = {(char *)(uintptr_t)p, p ? len : 0}};
    return sb__dlq_list_add(l, name, cstrlen(name), &val, NULL);
}

int sb__dlq_list_add_list(sb__dlq_list_t *l, const char *name, char type, sb__dlq_list_t **child)
{
    if (sb__dlq_kind_of(type) != SB__DLQ_K_LIST)
        return SB_EINVAL;
    sb__dlq_value_t val = {.type = type};
    sb__dlq_value_t *added;
    int rc = sb__dlq_list_add(l, name, cstrlen(name), &val, &added);
    if (rc == SB_EOK && child)
        *child = &added->as.list;
    return rc;
}

static bool name_is(const sb__dlq_field_t *f, const char *name, size_t len)
{
    return f->name.p && f->name.len == len && memcmp(f->name.p, name, len) == 0;
}

size_t sb__dlq_list_remove(sb__dlq_list_t *l, const char *name)
{
    size_t len = strlen(name), w = 0, removed = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (name_is(&l->v[i], name, len)) {
            sb_free(l->v[i].name.p);
            sb__dlq_value_free(&l->v[i].value);
            removed++;
        } else {
            l->v[w++] = l->v[i];
        }
    }
    l->n = w;
    return removed;
}

const sb__dlq_value_t *sb__dlq_list_find(const sb__dlq_list_t *l, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < l->n; i++)
        if (name_is(&l->v[i], name, len))
            return &l->v[i].value;
    return NULL;
}

/* ---- record lifetime and fields ---------------------------------------------------------- */

int sb__dlq_record_new(sb__dlq_record_t **out)
{
    sb__dlq_record_t *r = sb_calloc(1, sizeof *r);
    if (!r)
        return SB_ENOMEM;
    *out = r;
    return SB_EOK;
}

void sb__dlq_record_destroy(sb__dlq_record_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < SB__DLQ_STR_COUNT; i++)
        sb_free(r->str[i].p);
    sb__dlq_list_clear(&r->headers);
    sb_free(r);
}

int sb__dlq_record_clone(const sb__dlq_record_t *r, sb__dlq_record_t **out)
{
    sb__dlq_record_t *c;
    if (sb__dlq_record_new(&c) != SB_EOK)
        return SB_ENOMEM;
    c->transport = r->transport;
    memcpy(c->num, r->num, sizeof c->num);
    memcpy(c->has_num, r->has_num, sizeof c->has_num);
    for (int i = 0; i < SB__DLQ_STR_COUNT; i++)
        if (sb__dlq_bytes_set(&c->str[i], r->str[i].p, r->str[i].len) != SB_EOK)
            goto err;
    if (list_copy(&c->headers, &r->headers) != SB_EOK)
        goto err;
    *out = c;
    return SB_EOK;
err:
    sb__dlq_record_destroy(c);
    return SB_ENOMEM;
}

void sb__dlq_record_set_transport(sb__dlq_record_t *r, sb__dlq_transport_t t)
{
    r->transport = t;
}

sb__dlq_transport_t sb__dlq_record_transport(const sb__dlq_record_t *r)
{
    return r->transport;
}

int sb__dlq_record_set(sb__dlq_record_t *r, sb__dlq_str_t which, const char *p, size_t len)
{
    return sb__dlq_bytes_set(&r->str[which], p, len);
}

const char *sb__dlq_record_get(const sb__dlq_record_t *r, sb__dlq_str_t which, size_t *len)
{
    const sb__dlq_bytes_t *b = &r->str[which];
    if (len)
        *len = b->len;
    if (!b->p && which == SB__DLQ_BODY)
        return "";
    return b->p;
}

int sb__dlq_record_set_num(sb__dlq_record_t *r, sb__dlq_num_t which, uint64_t v)
{
    if (v > sb__dlq_num_max[which])
        return SB_ERANGE;
    r->num[which] = v;
    r->has_num[which] = true;
    return SB_EOK;
}

void sb__dlq_record_unset_num(sb__dlq_record_t *r, sb__dlq_num_t which)
{
    r->num[which] = 0;
    r->has_num[which] = false;
}

bool sb__dlq_record_get_num(const sb__dlq_record_t *r, sb__dlq_num_t which, uint64_t *v)
{
    if (r->has_num[which] && v)
        *v = r->num[which];
    return r->has_num[which];
}

sb__dlq_list_t *sb__dlq_record_headers(sb__dlq_record_t *r)
{
    return &r->headers;
}

const sb__dlq_list_t *sb__dlq_record_headers_const(const sb__dlq_record_t *r)
{
    return &r->headers;
}
/* ---- accessors --------------------------------------------------------------------------- */

const char *sb__dlq_record_header_str(const sb__dlq_record_t *r, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < r->headers.n; i++) {
        const sb__dlq_field_t *f = &r->headers.v[i];
        if (!name_is(f, name, nlen))
            continue;
        if (sb__dlq_kind_of(f->value.type) == SB__DLQ_K_BYTES && f->value.as.bytes.p) {
            if (len)
                *len = f->value.as.bytes.len;
            return f->value.as.bytes.p;
        }
    }
    return NULL;
}

static bool digits_u64(const char *s, size_t len, uint64_t *v)
{
    uint64_t acc = 0;
    if (len == 0 || len > 20)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned dg = (unsigned)(s[i] - '0');
        if (acc > (UINT64_MAX - dg) / 10)
            return false;
        acc = acc * 10 + dg;
    }
    *v = acc;
    return true;
}

bool sb__dlq_record_header_uint(const sb__dlq_record_t *r, const char *name, uint64_t *v)
{
    const sb__dlq_value_t *val = sb__dlq_list_find(&r->headers, name);
    if (!val)
        return false;
    switch (sb__dlq_kind_of(val->type)) {
    case SB__DLQ_K_SIGNED:
        if (val->as.i < 0)
            return false;
        *v = (uint64_t)val->as.i;
        return true;
    case SB__DLQ_K_UNSIGNED:
        *v = val->as.u;
        return true;
    case SB__DLQ_K_BYTES:
        return val->as.bytes.p && digits_u64(val->as.bytes.p, val->as.bytes.len, v);
    default:
        return false;
    }
}

const char *sb__dlq_record_reason(const sb__dlq_record_t *r)
{
    return sb__dlq_record_header_str(r, SB__DLQ_H_REASON, NULL);
}

const char *sb__dlq_record_error(const sb__dlq_record_t *r)
{
    return sb__dlq_record_header_str(r, SB__DLQ_H_ERROR, NULL);
}

const char *sb__dlq_record_handler(const sb__dlq_record_t *r)
{
    return sb__dlq_record_header_str(r, SB__DLQ_H_HANDLER, NULL);
}

const char *sb__dlq_record_consumer(const sb__dlq_record_t *r)
{
    return sb__dlq_record_header_str(r, SB__DLQ_H_CONSUMER, NULL);
}

bool sb__dlq_record_attempts(const sb__dlq_record_t *r, uint64_t *attempts)
{
    return sb__dlq_record_header_uint(r, SB__DLQ_H_ATTEMPTS, attempts);
}

bool sb__dlq_record_failed_at_us(const sb__dlq_record_t *r, int64_t *unix_us)
{
    const sb__dlq_value_t *v = sb__dlq_list_find(&r->headers, SB__DLQ_H_FAILED_AT);
    if (!v)
        return false;
    if (v->type == 'T') {
        if (v->as.u > (uint64_t)INT64_MAX / 1000000)
            return false;
        *unix_us = (int64_t)v->as.u * 1000000;
        return true;
    }
    if (sb__dlq_kind_of(v->type) != SB__DLQ_K_BYTES || !v->as.bytes.p)
        return false;
    return sb__datetime_parse(v->as.bytes.p, v->as.bytes.len, true, unix_us, NULL) == 0;
}

uint64_t sb__dlq_record_replay_count(const sb__dlq_record_t *r)
{
    uint64_t n = 0;
    return sb__dlq_record_header_uint(r, SB__DLQ_H_REPLAY_COUNT, &n) ? n : 0;
}

const char *sb__dlq_record_event_type(const sb__dlq_record_t *r, size_t *len)
{
    const char *s = NULL;
    size_t n = 0;
    if (r->transport != SB__DLQ_TX_KAFKA) {
        s = sb__dlq_record_header_str(r, SB__DLQ_H_ORIG_RKEY, &n);
        if (!s && r->transport == SB__DLQ_TX_AMQP && r->str[SB__DLQ_ROUTING_KEY].p) {
            s = r->str[SB__DLQ_ROUTING_KEY].p;
            n = r->str[SB__DLQ_ROUTING_KEY].len;
        }
    }
    if (!s && r->transport != SB__DLQ_TX_AMQP) {
        s = sb__dlq_record_header_str(r, "event-type", &n);
        if (!s)
            s = sb__dlq_record_header_str(r, "ce_type", &n);
        if (!s && r->transport == SB__DLQ_TX_UNKNOWN && r->str[SB__DLQ_ROUTING_KEY].p) {
            s = r->str[SB__DLQ_ROUTING_KEY].p;
            n = r->str[SB__DLQ_ROUTING_KEY].len;
        }
    }
    if (s && len)
        *len = n;
    return s;
}

/* envelope.c's media_is: the media type without parameters, case-insensitively. */
static bool media_is(const char *ct, size_t n, const char *type)
{
    while (n && *ct == ' ') {
        ct++;
        n--;
    }
    size_t tl = strlen(type);
    return n >= tl && strncasecmp(ct, type, tl) == 0 && (n == tl || ct[tl] == ';' || ct[tl] == ' ');
}

/* The first header named `name`, whatever its value, or NULL. */
static const sb__dlq_field_t *header_field(const sb__dlq_record_t *r, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < r->headers.n; i++)
        if (name_is(&r->headers.v[i], name, nlen))
            return &r->headers.v[i];
    return NULL;
}

/* envelope.c's has_ce_headers: a header with a CloudEvents binary-mode prefix. */
static bool has_ce_headers(const sb__dlq_record_t *r)
{
    for (size_t i = 0; i < r->headers.n; i++) {
        const sb__dlq_bytes_t *n = &r->headers.v[i].name;
        if (!n->p)
            continue;
        if ((n->len > 3 && memcmp(n->p, "ce_", 3) == 0) ||
            (n->len > 12 &&
             (memcmp(n->p, "cloudEvents:", 12) == 0 || memcmp(n->p, "cloudEvents_", 12) == 0)))
            return true;
    }
    return false;
}

/* A top-level member of the body: a string (decoded into buf when escaped; too long for buf
 * counts as absent) or, when `numbers`, a number as written. 1 found, 0 absent (or null), -1
 * another type. */
static int body_member(const sb__jindex_t *idx, const char *name, bool numbers, char *buf,
                       size_t size, const char **out, size_t *len)
{
    const sb__jfield_t *f = sb__jindex_find(idx, name, strlen(name));
    if (!f || f->type == SB__JT_NULL)
        return 0;
    if (f->type == SB__JT_NUMBER && numbers) {
        *out = f->val;
        *len = f->val_len;
        return 1;
    }
    if (f->type != SB__JT_STRING)
        return -1;
    *out = f->val;
    *len = f->val_len;
    if (f->val_esc) {
        if (!buf || f->val_len > size)
            return -1;
        *len = sb__junescape(f->val, f->val_len, buf);
        *out = buf;
    }
    return 1;
}

const char *sb__dlq_record_event_id(const sb__dlq_record_t *r, size_t *len, char *buf, size_t size)
{
    /* The consumer's order (envelope.c): a structured CloudEvent's "id"; else a binary-mode
     * one's id header; else, in a body that is a JSON object, its "Id", its "id", the AMQP
     * message_id property (on Kafka: the message-id header, up to 256 bytes) and a SHA-256 of the
     * body (intake.id_strategy: hash; without it the consumer refused the message, and the hash
     * still names it). Beyond the consumer: a numeric Id or id as written, and for a body that is
     * no JSON object the message_id property or a message-id header (the consumer refused those).
     */
    size_t n = 0;
    const char *s = NULL;
    const char *ct = NULL;
    size_t ctl = 0;
    if (r->str[SB__DLQ_CONTENT_TYPE].p) {
        ct = r->str[SB__DLQ_CONTENT_TYPE].p;
        ctl = r->str[SB__DLQ_CONTENT_TYPE].len;
    } else {
        ct = sb__dlq_record_header_str(r, "content-type", &ctl);
    }
    const sb__dlq_bytes_t *body = &r->str[SB__DLQ_BODY];
    sb__jindex_t idx;
    sb__jtype_t root = SB__JT_NONE;
    bool object =
        body->p &&
        sb__jscan(body->p, body->len, SB__JSCAN_MAX_DEPTH, &idx, &root, NULL, 0) == SB_EOK &&
        root == SB__JT_OBJECT;
    if (ct && media_is(ct, ctl, "application/cloudevents+json")) {
        if (!object || body_member(&idx, "id", false, buf, size, &s, &n) != 1 || !n)
            return NULL;
    } else if (has_ce_headers(r)) {
        static const char *const names[] = {"ce_id", "cloudEvents:id", "cloudEvents_id"};
        for (size_t i = 0; i < 3 && !s; i++)
            if (header_field(r, names[i])) {
                s = sb__dlq_record_header_str(r, names[i], &n);
                if (!s || !n)
                    return NULL;
            }
        if (!s)
            return NULL;
    } else if (object) {
        int f = body_member(&idx, "Id", true, buf, size, &s, &n);
        if (f == 0)
            f = body_member(&idx, "id", true, buf, size, &s, &n);
        if (f < 0)
            return NULL;
        if (f == 0 && r->transport != SB__DLQ_TX_KAFKA && r->str[SB__DLQ_MESSAGE_ID].p &&
            r->str[SB__DLQ_MESSAGE_ID].len) {
            s = r->str[SB__DLQ_MESSAGE_ID].p;
            n = r->str[SB__DLQ_MESSAGE_ID].len;
        } else if (f == 0 && r->transport == SB__DLQ_TX_KAFKA) {
            size_t hn = 0;
            const char *h = sb__dlq_record_header_str(r, "message-id", &hn);
            if (h && hn && hn <= 256 && !memchr(h, '\0', hn))
                s = h, n = hn;
        }
        if (!s) {
            unsigned char md[32];
            unsigned int mdlen = 0;
            if (!buf || size < 65 ||
                EVP_Digest(body->p, body->len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
                return NULL;
            static const char hex[] = "0123456789abcdef";
            for (int i = 0; i < 32; i++) {
                buf[2 * i] = hex[md[i] >> 4];
                buf[2 * i + 1] = hex[md[i] & 15];
            }
            buf[64] = '\0';
            s = buf;
            n = 64;
        }
    } else {
        /* Not a JSON object: the consumer refused it without an id. Name it by what it
         * carries: the message_id property, else a message-id header. */
        if (r->str[SB__DLQ_MESSAGE_ID].p && r->str[SB__DLQ_MESSAGE_ID].len) {
            s = r->str[SB__DLQ_MESSAGE_ID].p;
            n = r->str[SB__DLQ_MESSAGE_ID].len;
        } else if (!(s = sb__dlq_record_header_str(r, "message-id", &n)) || !n) {
            return NULL;
        }
    }
    if (len)
        *len = n;
    return s;
}

int sb__dlq_record_prepare_replay(const sb__dlq_record_t *r, int64_t now_us, sb__dlq_record_t **out)
{
    sb__dlq_record_t *c;
    if (sb__dlq_record_clone(r, &c) != SB_EOK)
        return SB_ENOMEM;
    uint64_t count = sb__dlq_record_replay_count(r);
    if (count < UINT64_MAX)
        count++;
    sb__dlq_list_remove(&c->headers, SB__DLQ_H_ATTEMPTS);
    sb__dlq_list_remove(&c->headers, "x-death");
    sb__dlq_list_remove(&c->headers, SB__DLQ_H_REPLAY_COUNT);
    sb__dlq_list_remove(&c->headers, SB__DLQ_H_REPLAYED_AT);
    sb__dlq_record_unset_num(c, SB__DLQ_PARTITION);
    sb__dlq_record_unset_num(c, SB__DLQ_OFFSET);
    sb__dlq_record_unset_num(c, SB__DLQ_TIMESTAMP_MS);
    char at[32], num[24];
    sb__datetime_format(now_us, at);
    snprintf(num, sizeof num, "%" PRIu64, count);
    int rc;
    if (c->transport == SB__DLQ_TX_KAFKA) {
        rc = sb__dlq_list_add_bytes(&c->headers, SB__DLQ_H_REPLAY_COUNT, 'K', num, strlen(num));
        if (rc == SB_EOK)
            rc = sb__dlq_list_add_bytes(&c->headers, SB__DLQ_H_REPLAYED_AT, 'K', at, strlen(at));
    } else {
        rc = sb__dlq_list_add_uint(&c->headers, SB__DLQ_H_REPLAY_COUNT, 'l',
                                   count > INT64_MAX ? INT64_MAX : count);
        if (rc == SB_EOK)
            rc = sb__dlq_list_add_bytes(&c->headers, SB__DLQ_H_REPLAYED_AT, 'S', at, strlen(at));
    }
    if (rc != SB_EOK) {
        sb__dlq_record_destroy(c);
        return rc;
    }
    *out = c;
    return SB_EOK;
}
