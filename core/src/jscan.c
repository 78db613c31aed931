/* jscan.c: validating single-pass JSON scanner with a top-level member index.
 *
 * Why not jansson for everything: a full DOM parse costs ~5.4 us for a 314-byte event here
 * (FACTS.md), several times what routing and idempotency need. This scanner checks the same
 * rules in one branch-light pass and records spans, so the intake path needs no tree and no
 * allocation; the tree is built on demand (schemas, handlers asking for it).
 *
 * What it deliberately does not do: decode values (callers decode the few they read), build
 * anything, or detect duplicate keys below the top level (jansson does when a tree is built). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchboard/error.h"
#include "jscan.h"

typedef struct scan {
    const char *buf;
    const char *p;
    const char *end;
    char *err;
    size_t err_size;
} scan_t;

static int fail(scan_t *s, const char *what)
{
    if (s->err && s->err_size)
        snprintf(s->err, s->err_size, "invalid JSON at byte %zu: %s", (size_t)(s->p - s->buf),
                 what);
    return SB_EDECODE;
}

static inline void skip_ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static inline int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_u4(scan_t *s, const char *q, unsigned *out)
{
    if (s->end - q < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)q[i]);
        if (h < 0)
            return -1;
        v = (v << 4) | (unsigned)h;
    }
    *out = v;
    return 0;
}

/* Length of a valid UTF-8 sequence starting at q (first byte >= 0x80), or 0. */
static inline size_t utf8_seq(const unsigned char *q, const unsigned char *end)
{
    unsigned c = q[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0)
        need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        need = 2;
    else if (c == 0xED)
        need = 2, hi = 0x9F; /* no UTF-16 surrogates */
    else if (c == 0xF0)
        need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4)
        need = 3, hi = 0x8F;
    else
        return 0;
    if ((size_t)(end - q) <= need)
        return 0;
    if (q[1] < lo || q[1] > hi)
        return 0;
    for (size_t i = 2; i <= need; i++)
        if (q[i] < 0x80 || q[i] > 0xBF)
            return 0;
    return need + 1;
}

/* s->p is on the opening quote. On success s->p is past the closing quote; *esc tells
 * whether escapes occurred. */
static int scan_string(scan_t *s, const char **start, uint32_t *len, uint8_t *esc, int is_key)
{
    const unsigned char *q = (const unsigned char *)s->p + 1;
    const unsigned char *end = (const unsigned char *)s->end;
    *start = (const char *)q;
    *esc = 0;
    for (;;) {
        /* Fast path over plain printable ASCII. */
        while (q < end && *q >= 0x20 && *q < 0x80 && *q != '"' && *q != '\\')
            q++;
        if (q >= end) {
            s->p = (const char *)q;
            return fail(s, "unterminated string");
        }
        unsigned c = *q;
        if (c == '"')
            break;
        if (c == '\\') {
            *esc = 1;
            if (q + 1 >= end) {
                s->p = (const char *)q;
                return fail(s, "unterminated escape");
            }
            unsigned e = q[1];
            if (e == 'u') {
                unsigned cp;
                s->p = (const char *)q;
                if (read_u4(s, (const char *)q + 2, &cp) != 0)
                    return fail(s, "invalid \\u escape");
                q += 6;
                if (cp == 0 && is_key)
                    return fail(s, "\\u0000 in an object key");
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return fail(s, "lone low surrogate in \\u escape");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (end - q < 6 || q[0] != '\\' || q[1] != 'u' ||
                        read_u4(s, (const char *)q + 2, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                        return fail(s, "high surrogate not followed by a low surrogate");
                    q += 6;
                }
                continue;
            }
            if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
                e == 't') {
                q += 2;
                continue;
            }
            s->p = (const char *)q;
            return fail(s, "invalid escape character");
        }
        if (c < 0x20) {
            s->p = (const char *)q;
            return fail(s, "control character in string (must be escaped)");
        }
        size_t n = utf8_seq(q, end);
        if (!n) {
            s->p = (const char *)q;
            return fail(s, "invalid UTF-8 in string");
        }
        q += n;
    }
    *len = (uint32_t)((const char *)q - *start);
    s->p = (const char *)q + 1;
    return SB_EOK;
}

static int scan_number(scan_t *s, uint8_t *is_int)
{
    const char *start = s->p, *q = s->p;
    const char *end = s->end;
    int neg = 0;
    if (q < end && *q == '-') {
        neg = 1;
        q++;
    }
    if (q >= end || *q < '0' || *q > '9') {
        s->p = q;
        return fail(s, "invalid number");
    }
    const char *int_start = q;
    if (*q == '0') {
        q++;
    } else {
        while (q < end && *q >= '0' && *q <= '9')
            q++;
    }
    size_t int_digits = (size_t)(q - int_start);
    int real = 0, has_exp = 0;
    if (q < end && *q == '.') {
        real = 1;
        q++;
        if (q >= end || *q < '0' || *q > '9') {
            s->p = q;
            return fail(s, "digit expected after decimal point");
        }
        while (q < end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        real = has_exp = 1;
        q++;
        if (q < end && (*q == '+' || *q == '-'))
            q++;
        if (q >= end || *q < '0' || *q > '9') {
            s->p = q;
            return fail(s, "digit expected in exponent");
        }
        while (q < end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < end && *q >= '0' && *q <= '9') {
        s->p = q;
        return fail(s, "leading zeros are not allowed");
    }
    s->p = q;
    *is_int = !real;
    size_t len = (size_t)(q - start);
    if (!real) {
        /* jansson refuses integers beyond int64: so do we, here, not later. */
        static const char max_pos[] = "9223372036854775807";
        static const char max_neg[] = "9223372036854775808";
        if (int_digits > 19 ||
            (int_digits == 19 && memcmp(int_start, neg ? max_neg : max_pos, 19) > 0)) {
            s->p = start;
            return fail(s, "integer does not fit in 64 bits");
        }
        return SB_EOK;
    }
    if (has_exp || int_digits > 300) {
        char tmp[128];
        if (len >= sizeof tmp) {
            s->p = start;
            return fail(s, "number too long (at most 127 characters)");
        }
        memcpy(tmp, start, len);
        tmp[len] = '\0';
        double d = strtod(tmp, NULL);
        if (isinf(d)) {
            s->p = start;
            return fail(s, "real number overflows a double");
        }
    }
    return SB_EOK;
}

static int scan_literal(scan_t *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return fail(s, "invalid literal");
    s->p += n;
    return SB_EOK;
}

size_t sb__junescape(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        char c = s[i];
        if (c != '\\') {
            out[o++] = c;
            i++;
            continue;
        }
        char e = s[i + 1];
        i += 2;
        switch (e) {
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'n':
            out[o++] = '\n';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'u': {
            unsigned cp = 0;
            for (int k = 0; k < 4; k++)
                cp = (cp << 4) | (unsigned)hexval((unsigned char)s[i + (size_t)k]);
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 <= len && s[i] == '\\' && s[i + 1] == 'u') {
                unsigned lo = 0;
                for (int k = 0; k < 4; k++)
                    lo = (lo << 4) | (unsigned)hexval((unsigned char)s[i + 2 + (size_t)k]);
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80) {
                out[o++] = (char)cp;
            } else if (cp < 0x800) {
                out[o++] = (char)(0xC0 | (cp >> 6));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[o++] = (char)(0xE0 | (cp >> 12));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[o++] = (char)(0xF0 | (cp >> 18));
                out[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            out[o++] = e;
            break; /* " \ / */
        }
    }
    return o;
}

/* Streams the decoded bytes of a validated JSON string body, one at a time, so keys of any
 * length compare without a buffer. */
typedef struct dec {
    const char *s;
    size_t len, i;
    char pend[4];
    int np, pi;
} dec_t;

static int dec_next(dec_t *d)
{
    if (d->pi < d->np)
        return (unsigned char)d->pend[d->pi++];
    if (d->i >= d->len)
        return -1;
    if (d->s[d->i] != '\\')
        return (unsigned char)d->s[d->i++];
    size_t n = d->s[d->i + 1] == 'u' ? 6 : 2;
    if (n == 6 && d->i + 12 <= d->len && d->s[d->i + 6] == '\\' && d->s[d->i + 7] == 'u') {
        unsigned hi = 0;
        for (int k = 2; k < 6; k++)
            hi = (hi << 4) | (unsigned)hexval((unsigned char)d->s[d->i + (size_t)k]);
        if (hi >= 0xD800 && hi <= 0xDBFF)
            n = 12; /* surrogate pair */
    }
    d->np = (int)sb__junescape(d->s + d->i, n, d->pend);
    d->pi = 0;
    d->i += n;
    return (unsigned char)d->pend[d->pi++];
}

static int raw_equal(const char *a, size_t al, int a_esc, const char *b, size_t bl, int b_esc)
{
    if (!a_esc && !b_esc)
        return al == bl && memcmp(a, b, al) == 0;
    dec_t x = {.s = a, .len = al}, y = {.s = b, .len = bl};
    for (;;) {
        int c1 = a_esc ? dec_next(&x) : (x.i < al ? (unsigned char)a[x.i++] : -1);
        int c2 = b_esc ? dec_next(&y) : (y.i < bl ? (unsigned char)b[y.i++] : -1);
        if (c1 != c2)
            return 0;
        if (c1 < 0)
            return 1;
    }
}

/* Compares a recorded key with a decoded name. */
static int key_is(const sb__jfield_t *f, const char *name, size_t name_len)
{
    if (!f->key_esc && f->key_len != name_len)
        return 0;
    return raw_equal(f->key, f->key_len, f->key_esc, name, name_len, 0);
}

static int is_duplicate(const sb__jindex_t *idx, const sb__jfield_t *f)
{
    for (unsigned i = 0; i < idx->n; i++) {
        const sb__jfield_t *o = &idx->f[i];
        if (!f->key_esc && !o->key_esc && f->key_len != o->key_len)
            continue;
        if (raw_equal(o->key, o->key_len, o->key_esc, f->key, f->key_len, f->key_esc))
            return 1;
    }
    return 0;
}

const sb__jfield_t *sb__jindex_find(const sb__jindex_t *idx, const char *name, size_t name_len)
{
    for (unsigned i = 0; i < idx->n; i++)
        if (key_is(&idx->f[i], name, name_len))
            return &idx->f[i];
    return NULL;
}

int sb__jscan(const char *buf, size_t len, unsigned max_depth, sb__jindex_t *idx, sb__jtype_t *root,
              char *err, size_t err_size)
{
    scan_t s = {.buf = buf, .p = buf, .end = buf + len, .err = err, .err_size = err_size};
    /* Container kinds by depth: bit set = object. */
    uint64_t kinds[SB__JSCAN_MAX_DEPTH / 64 + 1];
    unsigned depth = 0;
    int rc;
    if (max_depth == 0 || max_depth > SB__JSCAN_MAX_DEPTH)
        max_depth = SB__JSCAN_MAX_DEPTH;
    if (idx) {
        idx->n = 0;
        idx->overflow = false;
    }
    if (root)
        *root = SB__JT_NONE;
    if (len >= 3 && (unsigned char)buf[0] == 0xEF && (unsigned char)buf[1] == 0xBB &&
        (unsigned char)buf[2] == 0xBF)
        return fail(&s, "byte order mark is not allowed");
    skip_ws(&s);
    if (s.p >= s.end)
        return fail(&s, len ? "no JSON value (only whitespace)" : "empty input");

    sb__jfield_t *cur = NULL; /* top-level member whose value is being scanned */
    int root_obj = (*s.p == '{');

    for (;;) {
        /* ---- a value starts here ---- */
        skip_ws(&s);
        if (s.p >= s.end)
            return fail(&s, "unexpected end of input, value expected");
        if (cur && depth == 1)
            cur->val = s.p;
        char c = *s.p;
        sb__jtype_t t;
        if (c == '{' || c == '[') {
            if (depth >= max_depth)
                return fail(&s, "nesting too deep");
            if (c == '{')
                kinds[depth / 64] |= (uint64_t)1 << (depth % 64);
            else
                kinds[depth / 64] &= ~((uint64_t)1 << (depth % 64));
            depth++;
            if (depth == 1 && root)
                *root = c == '{' ? SB__JT_OBJECT : SB__JT_ARRAY;
            if (cur && depth == 2)
                cur->type = c == '{' ? SB__JT_OBJECT : SB__JT_ARRAY;
            s.p++;
            skip_ws(&s);
            if (s.p >= s.end)
                return fail(&s, "unexpected end of input in container");
            if ((c == '{' && *s.p == '}') || (c == '[' && *s.p == ']')) {
                s.p++;
                depth--;
                goto after_value;
            }
            if (c == '[')
                continue; /* first element */
            goto member_key;
        }
        if (c == '"') {
            const char *st;
            uint32_t sl;
            uint8_t esc;
            if ((rc = scan_string(&s, &st, &sl, &esc, 0)) != SB_EOK)
                return rc;
            t = SB__JT_STRING;
            if (cur && depth == 1) {
                cur->val = st;
                cur->val_len = sl;
                cur->val_esc = esc;
            }
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            uint8_t is_int;
            if ((rc = scan_number(&s, &is_int)) != SB_EOK)
                return rc;
            t = SB__JT_NUMBER;
            if (cur && depth == 1)
                cur->is_int = is_int;
        } else if (c == 't') {
            if ((rc = scan_literal(&s, "true", 4)) != SB_EOK)
                return rc;
            t = SB__JT_TRUE;
        } else if (c == 'f') {
            if ((rc = scan_literal(&s, "false", 5)) != SB_EOK)
                return rc;
            t = SB__JT_FALSE;
        } else if (c == 'n') {
            if ((rc = scan_literal(&s, "null", 4)) != SB_EOK)
                return rc;
            t = SB__JT_NULL;
        } else {
            return fail(&s, "unexpected character, value expected");
        }
        if (depth == 0 && root)
            *root = t;
        if (cur && depth == 1) {
            cur->type = (uint8_t)t;
            if (t != SB__JT_STRING)
                cur->val_len = (uint32_t)(s.p - cur->val);
        }

    after_value:
        /* ---- a value ended; depth is the depth of its container ---- */
        if (cur && depth == 1 && cur->type != SB__JT_STRING && s.p > cur->val &&
            (cur->type == SB__JT_OBJECT || cur->type == SB__JT_ARRAY))
            cur->val_len = (uint32_t)(s.p - cur->val);
        skip_ws(&s);
        if (depth == 0) {
            if (s.p != s.end)
                return fail(&s, "trailing characters after the JSON value");
            return SB_EOK;
        }
        if (s.p >= s.end)
            return fail(&s, "unexpected end of input in container");
        int in_obj = (kinds[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1;
        c = *s.p;
        if (c == ',') {
            s.p++;
            if (!in_obj)
                continue;
            goto member_key;
        }
        if ((in_obj && c == '}') || (!in_obj && c == ']')) {
            s.p++;
            depth--;
            goto after_value;
        }
        return fail(&s, in_obj ? "expected ',' or '}' in object" : "expected ',' or ']' in array");

    member_key:
        /* ---- an object member's key, then ':' ---- */
        skip_ws(&s);
        if (s.p >= s.end || *s.p != '"')
            return fail(&s, "object key (a string) expected");
        {
            const char *kst;
            uint32_t kl;
            uint8_t kesc;
            if ((rc = scan_string(&s, &kst, &kl, &kesc, 1)) != SB_EOK)
                return rc;
            if (depth == 1)
                cur = NULL;
            if (depth == 1 && root_obj && idx) {
                sb__jfield_t f = {.key = kst, .key_len = kl, .key_esc = kesc};
                if (is_duplicate(idx, &f)) {
                    s.p = kst;
                    return fail(&s, "duplicate key in object");
                }
                if (idx->n < SB__JINDEX_MAX) {
                    idx->f[idx->n] = f;
                    cur = &idx->f[idx->n++];
                } else {
                    idx->overflow = true;
                }
            }
        }
        skip_ws(&s);
        if (s.p >= s.end || *s.p != ':')
            return fail(&s, "expected ':' after object key");
        s.p++;
    }
}
