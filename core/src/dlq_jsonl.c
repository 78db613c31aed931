/* dlq_jsonl.c: the lossless JSON Lines form of a dead-letter record (format version 1,
 * documented in dlq_record.h and docs/dlq-format.md): sb__dlq_record_to_json and
 * sb__dlq_record_from_json, with the strict UTF-8 check and base64 they rest on.
 *
 * Design: the JSON form names every type, so that export -> import is byte-identical on
 * both brokers. The encoder is hand-written (fixed member order, canonical numbers, our own
 * UTF-8 check) because canonical output is the point; the decoder lets jansson parse
 * (through the library's allocator) and then walks the tree strictly, naming the field on
 * any error. Floats are written as the shortest decimal that reads back to the same bits,
 * checked when encoding, else as their bits, so NaN payloads and -0.0 survive. Byte strings
 * that are not valid UTF-8 travel as strict, canonical base64.
 *
 * It does not: own the record model (dlq_record.c; this file reads and fills records
 * through dlq_record_internal.h), frame or read files (the CLI writes and splits the
 * lines), or talk to brokers. */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "alloc_internal.h"
#include "dlq_record.h"
#include "dlq_record_internal.h"
#include "errf.h"

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
    switch (sb__dlq_kind_of(v->type)) {
    case SB__DLQ_K_BOOL:
        puts_(b, v->as.b ? "true" : "false");
        break;
    case SB__DLQ_K_SIGNED:
        putf_i64(b, v->as.i);
        break;
    case SB__DLQ_K_UNSIGNED:
        put_u64_field(b, v->as.u);
        break;
    case SB__DLQ_K_FLOAT:
        if (shortest_real((double)v->as.f, true, t)) {
            puts_(b, t);
        } else {
            uint32_t bits;
            memcpy(&bits, &v->as.f, sizeof bits);
            put_bits(b, bits, 8);
        }
        break;
    case SB__DLQ_K_DOUBLE:
        if (shortest_real(v->as.d, false, t)) {
            puts_(b, t);
        } else {
            uint64_t bits;
            memcpy(&bits, &v->as.d, sizeof bits);
            put_bits(b, bits, 16);
        }
        break;
    case SB__DLQ_K_DECIMAL:
        snprintf(t, sizeof t, "{\"scale\":%u,\"value\":%" PRIu32 "}", (unsigned)v->as.dec.scale,
                 v->as.dec.value);
        puts_(b, t);
        break;
    case SB__DLQ_K_BYTES:
        if (!v->as.bytes.p && v->type == 'K')
            puts_(b, "null");
        else
            put_bytes(b, v->as.bytes.p, v->as.bytes.len);
        break;
    case SB__DLQ_K_LIST:
        put_list(b, &v->as.list, v->type == 'F', depth + 1);
        break;
    case SB__DLQ_K_VOID:
    case SB__DLQ_K_BAD:
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
        return sb__dlq_bytes_set(out, json_string_value(j), json_string_length(j)) == SB_EOK
                   ? SB_EOK
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
    switch (sb__dlq_kind_of(t)) {
    case SB__DLQ_K_BOOL:
        if (!json_is_boolean(j))
            return expected(d, "true or false", j);
        v->as.b = json_is_true(j);
        return SB_EOK;
    case SB__DLQ_K_SIGNED: {
        if (!json_is_integer(j))
            return expected(d, "an integer", j);
        int64_t lo, hi;
        sb__dlq_signed_range(t, &lo, &hi);
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
    case SB__DLQ_K_UNSIGNED: {
        uint64_t max = sb__dlq_unsigned_max(t);
        if (json_is_integer(j) && max <= INT64_MAX &&
            (json_integer_value(j) < 0 || (uint64_t)json_integer_value(j) > max)) {
            snprintf(msg, sizeof msg, "%lld is out of range for type \"%c\" (0..%" PRIu64 ")",
                     (long long)json_integer_value(j), t, max);
            return fail(d, SB_ERANGE, msg);
        }
        return dec_u64(d, j, max, &v->as.u);
    }
    case SB__DLQ_K_FLOAT:
        return dec_real(d, j, true, v);
    case SB__DLQ_K_DOUBLE:
        return dec_real(d, j, false, v);
    case SB__DLQ_K_DECIMAL: {
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
    case SB__DLQ_K_BYTES:
        if (t == 'K' && json_is_null(j))
            return SB_EOK;
        return dec_bytes(d, j, &v->as.bytes);
    case SB__DLQ_K_LIST:
        if (depth >= SB__DLQ_MAX_DEPTH)
            return fail(d, SB_EPARSE, "tables and arrays nest too deep (more than 64 levels)");
        return dec_list(d, j, t == 'F', depth + 1, &v->as.list);
    case SB__DLQ_K_VOID:
        if (!json_is_null(j))
            return expected(d, "null", j);
        return SB_EOK;
    case SB__DLQ_K_BAD:
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
    if (sb__dlq_list_reserve(l, n) != SB_EOK)
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
            sb__dlq_kind_of(json_string_value(ty)[0]) == SB__DLQ_K_BAD) {
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
            sb__dlq_value_free(&f->value);
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
            rc = dec_u64(d, val, sb__dlq_num_max[ni], &r->num[ni]);
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
            rc = dec_u64(d, val, sb__dlq_num_max[ni], &r->num[ni]);
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
