/* dlq_record.c: dead-letter records in memory and their lossless JSON Lines form.
 *
 * Design: the record stores bytes and typed values exactly as the broker gave them and the
 * JSON form names every type, so that export -> import is byte-identical on both brokers.
 * The encoder is hand-written (fixed member order, canonical numbers, our own UTF-8 check)
 * because canonical output is the point; the decoder lets jansson parse (through the
 * library's allocator) and then walks the tree strictly, naming the field on any error.
 * Floats are written as the shortest decimal that reads back to the same bits, checked when
 * encoding, else as their bits, so NaN payloads and -0.0 survive.
 *
 * Not here: broker I/O, filtering, the CLI's table output. */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "alloc_internal.h"
#include "datetime.h"
#include "dlq_record.h"
#include "errf.h"
#include "jscan.h"

struct sb__dlq_record {
    sb__dlq_transport_t transport;
    sb__dlq_bytes_t str[SB__DLQ_STR_COUNT];
    uint64_t num[SB__DLQ_NUM_COUNT];
    bool has_num[SB__DLQ_NUM_COUNT];
    sb__dlq_list_t headers;
};

/* JSON member names, in output order within their groups. */
static const char *const str_names[SB__DLQ_STR_COUNT] = {
    [SB__DLQ_SOURCE] = "source",
    [SB__DLQ_EXCHANGE] = "exchange",
    [SB__DLQ_ROUTING_KEY] = "routing_key",
    [SB__DLQ_KEY] = "key",
    [SB__DLQ_CONTENT_TYPE] = "content_type",
    [SB__DLQ_CONTENT_ENCODING] = "content_encoding",
    [SB__DLQ_CORRELATION_ID] = "correlation_id",
    [SB__DLQ_REPLY_TO] = "reply_to",
    [SB__DLQ_EXPIRATION] = "expiration",
    [SB__DLQ_MESSAGE_ID] = "message_id",
    [SB__DLQ_TYPE] = "type",
    [SB__DLQ_USER_ID] = "user_id",
    [SB__DLQ_APP_ID] = "app_id",
    [SB__DLQ_CLUSTER_ID] = "cluster_id",
    [SB__DLQ_BODY] = "body",
};
static const char *const num_names[SB__DLQ_NUM_COUNT] = {
    [SB__DLQ_PARTITION] = "partition",       [SB__DLQ_OFFSET] = "offset",
    [SB__DLQ_TIMESTAMP_MS] = "timestamp_ms", [SB__DLQ_DELIVERY_MODE] = "delivery_mode",
    [SB__DLQ_PRIORITY] = "priority",         [SB__DLQ_TIMESTAMP] = "timestamp",
};
static const uint64_t num_max[SB__DLQ_NUM_COUNT] = {
    [SB__DLQ_PARTITION] = INT32_MAX,    [SB__DLQ_OFFSET] = INT64_MAX,
    [SB__DLQ_TIMESTAMP_MS] = INT64_MAX, [SB__DLQ_DELIVERY_MODE] = 255,
    [SB__DLQ_PRIORITY] = 255,           [SB__DLQ_TIMESTAMP] = UINT64_MAX,
};

/* The "props" object, in output order: (is_num, index). */
static const struct {
    bool num;
    int which;
} prop_order[] = {
    {false, SB__DLQ_CONTENT_TYPE}, {false, SB__DLQ_CONTENT_ENCODING}, {true, SB__DLQ_DELIVERY_MODE},
    {true, SB__DLQ_PRIORITY},      {false, SB__DLQ_CORRELATION_ID},   {false, SB__DLQ_REPLY_TO},
    {false, SB__DLQ_EXPIRATION},   {false, SB__DLQ_MESSAGE_ID},       {true, SB__DLQ_TIMESTAMP},
    {false, SB__DLQ_TYPE},         {false, SB__DLQ_USER_ID},          {false, SB__DLQ_APP_ID},
    {false, SB__DLQ_CLUSTER_ID},
};
#define N_PROPS (sizeof prop_order / sizeof prop_order[0])

/* ---- value types ------------------------------------------------------------------------ */

typedef enum kind {
    K_BAD = 0,
    K_BOOL,
    K_SIGNED,
    K_UNSIGNED,
    K_FLOAT,
    K_DOUBLE,
    K_DECIMAL,
    K_BYTES,
    K_LIST,
    K_VOID,
} kind_t;

static kind_t kind_of(char t)
{
    switch (t) {
    case 't':
        return K_BOOL;
    case 'b':
    case 's':
    case 'I':
    case 'l':
        return K_SIGNED;
    case 'B':
    case 'u':
    case 'i':
    case 'L':
    case 'T':
        return K_UNSIGNED;
    case 'f':
        return K_FLOAT;
    case 'd':
        return K_DOUBLE;
    case 'D':
        return K_DECIMAL;
    case 'S':
    case 'x':
    case 'K':
        return K_BYTES;
    case 'F':
    case 'A':
        return K_LIST;
    case 'V':
        return K_VOID;
    default:
        return K_BAD;
    }
}

static void signed_range(char t, int64_t *lo, int64_t *hi)
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

static uint64_t unsigned_max(char t)
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

static int bytes_set(sb__dlq_bytes_t *b, const char *p, size_t len)
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

static void value_free(sb__dlq_value_t *v);

void sb__dlq_list_clear(sb__dlq_list_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        sb_free(l->v[i].name.p);
        value_free(&l->v[i].value);
    }
    sb_free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static void value_free(sb__dlq_value_t *v)
{
    switch (kind_of(v->type)) {
    case K_BYTES:
        sb_free(v->as.bytes.p);
        v->as.bytes.p = NULL;
        break;
    case K_LIST:
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
    switch (kind_of(v->type)) {
    case K_BAD:
        return SB_EINVAL;
    case K_SIGNED:
        signed_range(v->type, &lo, &hi);
        return v->as.i < lo || v->as.i > hi ? SB_ERANGE : SB_EOK;
    case K_UNSIGNED:
        return v->as.u > unsigned_max(v->type) ? SB_ERANGE : SB_EOK;
    case K_LIST:
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
    switch (kind_of(src->type)) {
    case K_BYTES:
        dst->as.bytes.p = NULL;
        return bytes_set(&dst->as.bytes, src->as.bytes.p, src->as.bytes.len);
    case K_LIST:
        memset(&dst->as.list, 0, sizeof dst->as.list);
        return list_copy(&dst->as.list, &src->as.list);
    default:
        return SB_EOK;
    }
}

static int list_reserve(sb__dlq_list_t *l, size_t want)
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
    if (list_reserve(l, l->n + 1) != SB_EOK)
        return NULL;
    sb__dlq_field_t *f = &l->v[l->n];
    memset(f, 0, sizeof *f);
    f->value.type = 'V';
    if (name && bytes_set(&f->name, name, name_len) != SB_EOK)
        return NULL;
    l->n++;
    return f;
}

static int list_copy(sb__dlq_list_t *dst, const sb__dlq_list_t *src)
{
    if (list_reserve(dst, src->n) != SB_EOK)
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
        value_free(&f->value);
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
    switch (kind_of(type)) {
    case K_SIGNED:
        val.as.i = v;
        break;
    case K_UNSIGNED:
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
    switch (kind_of(type)) {
    case K_SIGNED:
        if (v > INT64_MAX)
            return SB_ERANGE;
        val.as.i = (int64_t)v;
        break;
    case K_UNSIGNED:
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
    if (kind_of(type) != K_BYTES || (!p && type != 'K'))
        return SB_EINVAL;
    /* The cast is safe: value_copy only reads the bytes. */
    sb__dlq_value_t val = {.type = type, .as.bytes = {(char *)(uintptr_t)p, p ? len : 0}};
    return sb__dlq_list_add(l, name, cstrlen(name), &val, NULL);
}

int sb__dlq_list_add_list(sb__dlq_list_t *l, const char *name, char type, sb__dlq_list_t **child)
{
    if (kind_of(type) != K_LIST)
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
            value_free(&l->v[i].value);
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
        if (bytes_set(&c->str[i], r->str[i].p, r->str[i].len) != SB_EOK)
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
    return bytes_set(&r->str[which], p, len);
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
    if (v > num_max[which])
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

/* ---- UTF-8 and base64 -------------------------------------------------------------------- */

bool sb__dlq_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n;
        unsigned cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return false;
        }
        if ((size_t)(end - p) <= n)
            return false;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c)
{
    const char *q = c ? strchr(b64_alphabet, c) : NULL;
    return q ? (int)(q - b64_alphabet) : -1;
}

/* Strict, canonical base64 (padding required, unused bits zero), so that decode -> encode
 * gives the input back. Decodes into out (holds len / 4 * 3 bytes). -1 on bad input. */
static long b64_decode(const char *s, size_t len, unsigned char *out)
{
    if (len % 4)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad) {
                return -1; /* data after '=' */
            } else if ((v[k] = b64_value((unsigned char)s[i + k])) < 0) {
                return -1;
            }
        }
        uint32_t triple = ((uint32_t)v[0] << 18) | ((uint32_t)v[1] << 12) | ((uint32_t)v[2] << 6) |
                          (uint32_t)v[3];
        if ((pad == 1 && (triple & 0xff)) || (pad == 2 && (triple & 0xffff)))
            return -1; /* non-zero unused bits: not canonical */
        out[o++] = (unsigned char)(triple >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(triple >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)triple;
    }
    return (long)o;
}

/* ---- encoder ----------------------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
    int rc; /* sticky: first error */
} buf_t;

static bool buf_grow(buf_t *b, size_t more)
{
    if (b->rc != SB_EOK)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = sb_realloc(b->p, cap);
    if (!p) {
        b->rc = SB_ENOMEM;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void put(buf_t *b, const char *s, size_t n)
{
    if (!buf_grow(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

static void putf_u64(buf_t *b, uint64_t v)
{
    char t[32];
    int n = snprintf(t, sizeof t, "%" PRIu64, v);
    put(b, t, (size_t)n);
}

static void putf_i64(buf_t *b, int64_t v)
{
    char t[32];
    int n = snprintf(t, sizeof t, "%" PRId64, v);
    put(b, t, (size_t)n);
}

/* A JSON string of valid UTF-8 text. */
static void put_jstring(buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(b, s + run, i - run);
        run = i + 1;
        char e[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t n = 2;
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        default:
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            n = 6;
        }
        put(b, e, n);
    }
    put(b, s + run, len - run);
    put(b, "\"", 1);
}

static void put_bytes(buf_t *b, const char *s, size_t len)
{
    if (!s)
        s = "";
    if (sb__dlq_utf8_valid(s, len)) {
        put_jstring(b, s, len);
        return;
    }
    puts_(b, "{\"b64\":\"");
    const unsigned char *u = (const unsigned char *)s;
    if (!buf_grow(b, (len + 2) / 3 * 4))
        return;
    char *o = b->p + b->len;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t t = ((uint32_t)u[i] << 16) | ((uint32_t)u[i + 1] << 8) | u[i + 2];
        *o++ = b64_alphabet[t >> 18];
        *o++ = b64_alphabet[(t >> 12) & 63];
        *o++ = b64_alphabet[(t >> 6) & 63];
        *o++ = b64_alphabet[t & 63];
    }
    if (i < len) {
        uint32_t t = (uint32_t)u[i] << 16;
        if (i + 1 < len)
            t |= (uint32_t)u[i + 1] << 8;
        *o++ = b64_alphabet[t >> 18];
        *o++ = b64_alphabet[(t >> 12) & 63];
        *o++ = i + 1 < len ? b64_alphabet[(t >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
    b->p[b->len] = '\0';
    puts_(b, "\"}");
}

static void put_u64_field(buf_t *b, uint64_t v)
{
    if (v > INT64_MAX) {
        put(b, "\"", 1);
        putf_u64(b, v);
        put(b, "\"", 1);
    } else {
        putf_u64(b, v);
    }
}

/* The shortest "%.*g" that reads back (through strtod, as jansson reads it, then narrowed
 * for floats) to the same bits, with ".0" added when it would read as an integer. false when
 * no such text exists (NaN, infinities). */
static bool shortest_real(double d, bool is_float, char out[40])
{
    if (!isfinite(d))
        return false;
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, 40, "%.*g", prec, d);
        double back = strtod(out, NULL);
        bool same;
        if (is_float) {
            float f = (float)d, fb;
            if (fabs(back) > FLT_MAX)
                continue;
            fb = (float)back;
            same = memcmp(&f, &fb, sizeof f) == 0;
        } else {
            same = memcmp(&d, &back, sizeof d) == 0;
        }
        if (same) {
            if (!strpbrk(out, ".e"))
                strcat(out, ".0");
            return true;
        }
    }
    return false;
}

static void put_bits(buf_t *b, uint64_t bits, int digits)
{
    char t[40];
    snprintf(t, sizeof t, "{\"bits\":\"%0*" PRIx64 "\"}", digits, bits);
    puts_(b, t);
}

static void put_list(buf_t *b, const sb__dlq_list_t *l, bool named, unsigned depth);

static void put_value(buf_t *b, const sb__dlq_value_t *v, unsigned depth)
{
    char t[40];
    switch (kind_of(v->type)) {
    case K_BOOL:
        puts_(b, v->as.b ? "true" : "false");
        break;
    case K_SIGNED:
        putf_i64(b, v->as.i);
        break;
    case K_UNSIGNED:
        put_u64_field(b, v->as.u);
        break;
    case K_FLOAT:
        if (shortest_real((double)v->as.f, true, t)) {
            puts_(b, t);
        } else {
            uint32_t bits;
            memcpy(&bits, &v->as.f, sizeof bits);
            put_bits(b, bits, 8);
        }
        break;
    case K_DOUBLE:
        if (shortest_real(v->as.d, false, t)) {
            puts_(b, t);
        } else {
            uint64_t bits;
            memcpy(&bits, &v->as.d, sizeof bits);
            put_bits(b, bits, 16);
        }
        break;
    case K_DECIMAL:
        snprintf(t, sizeof t, "{\"scale\":%u,\"value\":%" PRIu32 "}", (unsigned)v->as.dec.scale,
                 v->as.dec.value);
        puts_(b, t);
        break;
    case K_BYTES:
        if (!v->as.bytes.p && v->type == 'K')
            puts_(b, "null");
        else
            put_bytes(b, v->as.bytes.p, v->as.bytes.len);
        break;
    case K_LIST:
        put_list(b, &v->as.list, v->type == 'F', depth + 1);
        break;
    case K_VOID:
    case K_BAD:
        puts_(b, "null");
        break;
    }
}

static void put_list(buf_t *b, const sb__dlq_list_t *l, bool named, unsigned depth)
{
    if (depth > SB__DLQ_MAX_DEPTH) {
        if (b->rc == SB_EOK)
            b->rc = SB_ETOOBIG;
        return;
    }
    put(b, "[", 1);
    for (size_t i = 0; i < l->n; i++) {
        const sb__dlq_field_t *f = &l->v[i];
        put(b, i ? ",[" : "[", i ? 2 : 1);
        if (named) {
            put_bytes(b, f->name.p, f->name.len);
            put(b, ",", 1);
        }
        char ty[4] = {'"', f->value.type, '"', ','};
        put(b, ty, 4);
        put_value(b, &f->value, depth);
        put(b, "]", 1);
    }
    put(b, "]", 1);
}

int sb__dlq_record_to_json(const sb__dlq_record_t *r, char **line, size_t *len)
{
    buf_t b = {0};
    char num[8];
    snprintf(num, sizeof num, "%d", SB__DLQ_FORMAT_VERSION);
    puts_(&b, "{\"v\":");
    puts_(&b, num);
    if (r->transport != SB__DLQ_TX_UNKNOWN)
        puts_(&b, r->transport == SB__DLQ_TX_AMQP ? ",\"transport\":\"amqp\""
                                                  : ",\"transport\":\"kafka\"");
    static const int envelope[] = {SB__DLQ_SOURCE, SB__DLQ_EXCHANGE, SB__DLQ_ROUTING_KEY};
    for (size_t i = 0; i < 3; i++) {
        const sb__dlq_bytes_t *s = &r->str[envelope[i]];
        if (!s->p)
            continue;
        puts_(&b, ",\"");
        puts_(&b, str_names[envelope[i]]);
        puts_(&b, "\":");
        put_bytes(&b, s->p, s->len);
    }
    static const int kafka_nums[] = {SB__DLQ_PARTITION, SB__DLQ_OFFSET};
    for (size_t i = 0; i < 2; i++) {
        if (!r->has_num[kafka_nums[i]])
            continue;
        puts_(&b, ",\"");
        puts_(&b, num_names[kafka_nums[i]]);
        puts_(&b, "\":");
        putf_u64(&b, r->num[kafka_nums[i]]);
    }
    if (r->str[SB__DLQ_KEY].p) {
        puts_(&b, ",\"key\":");
        put_bytes(&b, r->str[SB__DLQ_KEY].p, r->str[SB__DLQ_KEY].len);
    }
    if (r->has_num[SB__DLQ_TIMESTAMP_MS]) {
        puts_(&b, ",\"timestamp_ms\":");
        putf_u64(&b, r->num[SB__DLQ_TIMESTAMP_MS]);
    }
    bool any_prop = false;
    for (size_t i = 0; i < N_PROPS; i++) {
        int w = prop_order[i].which;
        bool present = prop_order[i].num ? r->has_num[w] : r->str[w].p != NULL;
        if (!present)
            continue;
        puts_(&b, any_prop ? ",\"" : ",\"props\":{\"");
        any_prop = true;
        puts_(&b, prop_order[i].num ? num_names[w] : str_names[w]);
        puts_(&b, "\":");
        if (prop_order[i].num)
            put_u64_field(&b, r->num[w]);
        else
            put_bytes(&b, r->str[w].p, r->str[w].len);
    }
    if (any_prop)
        puts_(&b, "}");
    if (r->headers.n) {
        puts_(&b, ",\"headers\":");
        put_list(&b, &r->headers, true, 1);
    }
    puts_(&b, ",\"body\":");
    put_bytes(&b, r->str[SB__DLQ_BODY].p, r->str[SB__DLQ_BODY].len);
    puts_(&b, "}");
    if (b.rc != SB_EOK) {
        sb_free(b.p);
        return b.rc;
    }
    *line = b.p;
    if (len)
        *len = b.len;
    return SB_EOK;
}

/* ---- decoder ----------------------------------------------------------------------------- */

typedef struct dec {
    char *err;
    size_t err_size;
    char path[256];
} dec_t;

/* Appends to the path; returns the old length to restore. */
static size_t path_push(dec_t *d, const char *fmt_member, size_t index, bool is_index)
{
    size_t old = strlen(d->path);
    size_t room = sizeof d->path - old;
    if (is_index)
        snprintf(d->path + old, room, "[%zu]", index);
    else
        snprintf(d->path + old, room, "%s%s", old ? "." : "", fmt_member);
    return old;
}

static void path_pop(dec_t *d, size_t old)
{
    d->path[old] = '\0';
}

static int fail(dec_t *d, int rc, const char *what)
{
    /* A deep path keeps its tail, where the problem is. */
    const char *path = d->path[0] ? d->path : "record";
    size_t len = strlen(path);
    return sb__errf(d->err, d->err_size, rc, "%s%s: %s", len > 80 ? "..." : "",
                    len > 80 ? path + len - 80 : path, what);
}

static const char *jtype_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static int expected(dec_t *d, const char *what, const json_t *got)
{
    char msg[128];
    snprintf(msg, sizeof msg, "expected %s, got %s", what, jtype_name(got));
    return fail(d, SB_EPARSE, msg);
}

/* BYTES: a string, or {"b64": "..."}. */
static int dec_bytes(dec_t *d, const json_t *j, sb__dlq_bytes_t *out)
{
    if (json_is_string(j))
        return bytes_set(out, json_string_value(j), json_string_length(j)) == SB_EOK ? SB_EOK
                                                                                     : SB_ENOMEM;
    const json_t *b64 = json_is_object(j) ? json_object_get(j, "b64") : NULL;
    if (!b64 || json_object_size(j) != 1)
        return expected(d, "a string or {\"b64\": \"...\"}", j);
    if (!json_is_string(b64))
        return fail(d, SB_EPARSE, "\"b64\" must be a string");
    size_t len = json_string_length(b64);
    unsigned char *raw = sb_malloc(len / 4 * 3 + 1);
    if (!raw)
        return SB_ENOMEM;
    long n = b64_decode(json_string_value(b64), len, raw);
    if (n < 0) {
        sb_free(raw);
        return fail(d, SB_EPARSE, "invalid base64 (RFC 4648, padded, canonical)");
    }
    raw[n] = '\0';
    sb_free(out->p);
    out->p = (char *)raw;
    out->len = (size_t)n;
    return SB_EOK;
}

/* U64: an integer >= 0, or a string of decimal digits. */
static int dec_u64(dec_t *d, const json_t *j, uint64_t max, uint64_t *out)
{
    char msg[128];
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (v < 0 || (uint64_t)v > max)
            goto range;
        *out = (uint64_t)v;
        return SB_EOK;
    }
    if (json_is_string(j) && max > INT64_MAX) {
        const char *s = json_string_value(j);
        size_t len = json_string_length(j);
        uint64_t acc = 0;
        if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
            goto bad;
        for (size_t i = 0; i < len; i++) {
            if (s[i] < '0' || s[i] > '9')
                goto bad;
            unsigned dg = (unsigned)(s[i] - '0');
            if (acc > (UINT64_MAX - dg) / 10)
                goto range;
            acc = acc * 10 + dg;
        }
        *out = acc;
        return SB_EOK;
    bad:
        return fail(d, SB_EPARSE, "expected an unsigned integer or a string of decimal digits");
    }
    return expected(d, max > INT64_MAX ? "an unsigned integer" : "an integer", j);
range:
    snprintf(msg, sizeof msg, "out of range (0..%" PRIu64 ")", max);
    return fail(d, SB_ERANGE, msg);
}

static int dec_real(dec_t *d, const json_t *j, bool is_float, sb__dlq_value_t *v)
{
    if (json_is_object(j)) {
        const json_t *bits = json_object_get(j, "bits");
        size_t want = is_float ? 8 : 16;
        if (!bits || json_object_size(j) != 1 || !json_is_string(bits) ||
            json_string_length(bits) != want ||
            strspn(json_string_value(bits), "0123456789abcdef") != want)
            return fail(d, SB_EPARSE,
                        is_float ? "expected a number or {\"bits\": \"<8 hex>\"}"
                                 : "expected a number or {\"bits\": \"<16 hex>\"}");
        uint64_t u = strtoull(json_string_value(bits), NULL, 16);
        if (is_float) {
            uint32_t u32 = (uint32_t)u;
            memcpy(&v->as.f, &u32, sizeof u32);
        } else {
            memcpy(&v->as.d, &u, sizeof u);
        }
        return SB_EOK;
    }
    if (!json_is_number(j))
        return expected(d, "a number", j);
    double x = json_number_value(j);
    if (is_float) {
        if (fabs(x) > FLT_MAX)
            return fail(d, SB_ERANGE, "out of range for a 32-bit float");
        v->as.f = (float)x;
    } else {
        v->as.d = x;
    }
    return SB_EOK;
}

static int dec_list(dec_t *d, const json_t *j, bool named, unsigned depth, sb__dlq_list_t *l);

/* Decodes VALUE of type t into v (which holds nothing yet; on error it holds nothing). */
static int dec_value(dec_t *d, char t, const json_t *j, unsigned depth, sb__dlq_value_t *v)
{
    char msg[160];
    memset(v, 0, sizeof *v);
    v->type = t;
    switch (kind_of(t)) {
    case K_BOOL:
        if (!json_is_boolean(j))
            return expected(d, "true or false", j);
        v->as.b = json_is_true(j);
        return SB_EOK;
    case K_SIGNED: {
        if (!json_is_integer(j))
            return expected(d, "an integer", j);
        int64_t lo, hi;
        signed_range(t, &lo, &hi);
        json_int_t x = json_integer_value(j);
        if (x < lo || x > hi) {
            snprintf(msg, sizeof msg,
                     "%lld is out of range for type \"%c\" (%" PRId64 "..%" PRId64 ")",
                     (long long)x, t, lo, hi);
            return fail(d, SB_ERANGE, msg);
        }
        v->as.i = x;
        return SB_EOK;
    }
    case K_UNSIGNED: {
        uint64_t max = unsigned_max(t);
        if (json_is_integer(j) && max <= INT64_MAX &&
            (json_integer_value(j) < 0 || (uint64_t)json_integer_value(j) > max)) {
            snprintf(msg, sizeof msg, "%lld is out of range for type \"%c\" (0..%" PRIu64 ")",
                     (long long)json_integer_value(j), t, max);
            return fail(d, SB_ERANGE, msg);
        }
        return dec_u64(d, j, max, &v->as.u);
    }
    case K_FLOAT:
        return dec_real(d, j, true, v);
    case K_DOUBLE:
        return dec_real(d, j, false, v);
    case K_DECIMAL: {
        const json_t *sc = json_is_object(j) ? json_object_get(j, "scale") : NULL;
        const json_t *va = json_is_object(j) ? json_object_get(j, "value") : NULL;
        if (!sc || !va || json_object_size(j) != 2)
            return fail(d, SB_EPARSE, "expected {\"scale\": 0..255, \"value\": 0..4294967295}");
        uint64_t s, x;
        size_t old = path_push(d, "scale", 0, false);
        int rc = dec_u64(d, sc, UINT8_MAX, &s);
        path_pop(d, old);
        if (rc != SB_EOK)
            return rc;
        old = path_push(d, "value", 0, false);
        rc = dec_u64(d, va, UINT32_MAX, &x);
        path_pop(d, old);
        if (rc != SB_EOK)
            return rc;
        v->as.dec.scale = (uint8_t)s;
        v->as.dec.value = (uint32_t)x;
        return SB_EOK;
    }
    case K_BYTES:
        if (t == 'K' && json_is_null(j))
            return SB_EOK;
        return dec_bytes(d, j, &v->as.bytes);
    case K_LIST:
        if (depth >= SB__DLQ_MAX_DEPTH)
            return fail(d, SB_EPARSE, "tables and arrays nest too deep (more than 64 levels)");
        return dec_list(d, j, t == 'F', depth + 1, &v->as.list);
    case K_VOID:
        if (!json_is_null(j))
            return expected(d, "null", j);
        return SB_EOK;
    case K_BAD:
        break;
    }
    return SB_EPARSE; /* unreachable: the caller checked the type letter */
}

/* [ [NAME, TYPE, VALUE], ... ] when named, else [ [TYPE, VALUE], ... ]. */
static int dec_list(dec_t *d, const json_t *j, bool named, unsigned depth, sb__dlq_list_t *l)
{
    if (!json_is_array(j))
        return expected(d, "an array", j);
    size_t n = json_array_size(j);
    if (list_reserve(l, n) != SB_EOK)
        return SB_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(j, i);
        size_t old = path_push(d, NULL, i, true);
        int rc = SB_EOK;
        size_t want = named ? 3 : 2;
        if (!json_is_array(e) || json_array_size(e) != want) {
            rc = fail(d, SB_EPARSE,
                      named ? "expected [name, type, value]" : "expected [type, value]");
            goto out;
        }
        sb__dlq_field_t *f = &l->v[l->n];
        memset(f, 0, sizeof *f);
        f->value.type = 'V';
        if (named) {
            size_t o2 = path_push(d, NULL, 0, true);
            rc = dec_bytes(d, json_array_get(e, 0), &f->name);
            path_pop(d, o2);
            if (rc != SB_EOK)
                goto out;
        }
        const json_t *ty = json_array_get(e, named ? 1 : 0);
        size_t o2 = path_push(d, NULL, named ? 1 : 0, true);
        if (!json_is_string(ty) || json_string_length(ty) != 1 ||
            kind_of(json_string_value(ty)[0]) == K_BAD) {
            rc = fail(d, SB_EPARSE,
                      "expected a type letter (one of t b B s u I i l L f d D S x "
                      "T F A V K)");
            path_pop(d, o2);
            sb_free(f->name.p);
            goto out;
        }
        path_pop(d, o2);
        o2 = path_push(d, NULL, named ? 2 : 1, true);
        rc = dec_value(d, json_string_value(ty)[0], json_array_get(e, named ? 2 : 1), depth,
                       &f->value);
        path_pop(d, o2);
        if (rc != SB_EOK) {
            sb_free(f->name.p);
            value_free(&f->value);
            goto out;
        }
        l->n++;
    out:
        path_pop(d, old);
        if (rc != SB_EOK)
            return rc;
    }
    return SB_EOK;
}

static int str_index(const char *key)
{
    for (int i = 0; i < SB__DLQ_STR_COUNT; i++)
        if (strcmp(key, str_names[i]) == 0)
            return i;
    return -1;
}

static int num_index(const char *key)
{
    for (int i = 0; i < SB__DLQ_NUM_COUNT; i++)
        if (strcmp(key, num_names[i]) == 0)
            return i;
    return -1;
}

static bool is_prop_str(int i)
{
    return i >= SB__DLQ_CONTENT_TYPE && i <= SB__DLQ_CLUSTER_ID;
}

static bool is_prop_num(int i)
{
    return i == SB__DLQ_DELIVERY_MODE || i == SB__DLQ_PRIORITY || i == SB__DLQ_TIMESTAMP;
}

static int unknown_member(dec_t *d, const char *key)
{
    char msg[160];
    snprintf(msg, sizeof msg, "unknown member \"%.100s\"", key);
    return fail(d, SB_EPARSE, msg);
}

static int dec_props(dec_t *d, const json_t *j, sb__dlq_record_t *r)
{
    if (!json_is_object(j))
        return expected(d, "an object", j);
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)(uintptr_t)j, key, val)
    {
        int si = str_index(key), ni = num_index(key);
        int rc;
        if (si >= 0 && is_prop_str(si)) {
            size_t old = path_push(d, key, 0, false);
            rc = dec_bytes(d, val, &r->str[si]);
            path_pop(d, old);
        } else if (ni >= 0 && is_prop_num(ni)) {
            size_t old = path_push(d, key, 0, false);
            rc = dec_u64(d, val, num_max[ni], &r->num[ni]);
            path_pop(d, old);
            r->has_num[ni] = rc == SB_EOK;
        } else {
            rc = unknown_member(d, key);
        }
        if (rc != SB_EOK)
            return rc;
    }
    return SB_EOK;
}

static int dec_record(dec_t *d, const json_t *root, sb__dlq_record_t *r)
{
    if (!json_is_object(root))
        return expected(d, "a JSON object", root);
    const json_t *v = json_object_get(root, "v");
    if (!v)
        return fail(d, SB_EPARSE, "missing \"v\" (format version)");
    if (!json_is_integer(v) || json_integer_value(v) != SB__DLQ_FORMAT_VERSION) {
        d->path[0] = '\0';
        return sb__errf(d->err, d->err_size, SB_EPARSE,
                        "v: unsupported format version (this build reads version %d)",
                        SB__DLQ_FORMAT_VERSION);
    }
    if (!json_object_get(root, "body"))
        return fail(d, SB_EPARSE, "missing \"body\"");
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)(uintptr_t)root, key, val)
    {
        int rc = SB_EOK;
        size_t old = path_push(d, key, 0, false);
        int si = str_index(key), ni = num_index(key);
        if (strcmp(key, "v") == 0) {
            /* checked above */
        } else if (strcmp(key, "transport") == 0) {
            const char *s = json_is_string(val) ? json_string_value(val) : NULL;
            if (s && strcmp(s, "amqp") == 0)
                r->transport = SB__DLQ_TX_AMQP;
            else if (s && strcmp(s, "kafka") == 0)
                r->transport = SB__DLQ_TX_KAFKA;
            else
                rc = fail(d, SB_EPARSE, "expected \"amqp\" or \"kafka\"");
        } else if (strcmp(key, "props") == 0) {
            rc = dec_props(d, val, r);
        } else if (strcmp(key, "headers") == 0) {
            rc = dec_list(d, val, true, 1, &r->headers);
        } else if (si >= 0 && !is_prop_str(si)) {
            rc = dec_bytes(d, val, &r->str[si]);
        } else if (ni >= 0 && !is_prop_num(ni)) {
            rc = dec_u64(d, val, num_max[ni], &r->num[ni]);
            r->has_num[ni] = rc == SB_EOK;
        } else {
            path_pop(d, old);
            rc = unknown_member(d, key);
        }
        path_pop(d, old);
        if (rc != SB_EOK)
            return rc;
    }
    return SB_EOK;
}

int sb__dlq_record_from_json(const char *line, size_t len, sb__dlq_record_t **out, char *errstr,
                             size_t errstr_size)
{
    sb__alloc_json_hooks();
    if (!line)
        return sb__errf(errstr, errstr_size, SB_EINVAL, "no line given");
    json_error_t je;
    unsigned long failures = sb__alloc_failures();
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (sb__alloc_failures() != failures) {
        json_decref(root);
        return sb__errf(errstr, errstr_size, SB_ENOMEM, "out of memory reading a record");
    }
    if (!root)
        return sb__errf(errstr, errstr_size, SB_EPARSE, "not valid JSON: %s (column %d)", je.text,
                        je.column);
    sb__dlq_record_t *r;
    if (sb__dlq_record_new(&r) != SB_EOK) {
        json_decref(root);
        return sb__errf(errstr, errstr_size, SB_ENOMEM, "out of memory reading a record");
    }
    dec_t d = {.err = errstr, .err_size = errstr_size};
    int rc = dec_record(&d, root, r);
    json_decref(root);
    if (rc != SB_EOK) {
        if (rc == SB_ENOMEM)
            sb__errf(errstr, errstr_size, SB_ENOMEM, "out of memory reading a record");
        sb__dlq_record_destroy(r);
        return rc;
    }
    *out = r;
    return SB_EOK;
}

/* ---- accessors --------------------------------------------------------------------------- */

const char *sb__dlq_record_header_str(const sb__dlq_record_t *r, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < r->headers.n; i++) {
        const sb__dlq_field_t *f = &r->headers.v[i];
        if (!name_is(f, name, nlen))
            continue;
        if (kind_of(f->value.type) == K_BYTES && f->value.as.bytes.p) {
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
    switch (kind_of(val->type)) {
    case K_SIGNED:
        if (val->as.i < 0)
            return false;
        *v = (uint64_t)val->as.i;
        return true;
    case K_UNSIGNED:
        *v = val->as.u;
        return true;
    case K_BYTES:
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
    if (kind_of(v->type) != K_BYTES || !v->as.bytes.p)
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
