/* schema.c: a compiled JSON Schema (draft 2020-12 subset) validator on jansson.
 *
 * Design: a schema file is compiled once into a graph of nodes, one per schema object, with
 * every keyword decoded into a field (bounds as numbers, `required` as a string array,
 * `properties` sorted for binary search, `pattern` as a regex_t compiled once). $ref is
 * resolved at compile time to the target node; nodes are cached per document by the JSON
 * value they came from, so a recursive schema simply becomes a cycle in the graph and
 * compiles in finite time. A cycle that never descends into the instance ({"$ref": "#"},
 * or allOf loops) would recurse forever at validation and is refused at compile time.
 * Validation walks nodes and instance together; instance locations are a chain of stack
 * frames turned into a JSON pointer only when an error is reported, so the valid path
 * allocates nothing (POSIX regexec aside).
 *
 * Deliberately not done: anything outside the documented subset (oneOf, anyOf, not,
 * if/then/else, patternProperties, unevaluated*, prefixItems, min/maxItems, ...) is refused
 * at compile time rather than ignored; $id is not used for resolution (references resolve
 * against the referring file's directory, never over the network); `pattern` is POSIX ERE,
 * not ECMA-262; format is asserted only for email, date-time and uuid (other formats are
 * annotations). */
#include <errno.h>
#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "alloc_internal.h"
#include "errf.h"
#include "schema.h"

#define COMPILE_MAX_DEPTH  256  /* schema nesting + $ref chain while compiling */
#define VALIDATE_MAX_DEPTH 4096 /* nested node validations for one instance */
#define DOC_BUCKETS        256  /* node cache buckets per document (power of two) */

enum {
    T_NULL = 1u << 0,
    T_BOOLEAN = 1u << 1,
    T_OBJECT = 1u << 2,
    T_ARRAY = 1u << 3,
    T_NUMBER = 1u << 4,
    T_STRING = 1u << 5,
    T_INTEGER = 1u << 6,
};
static const char *const type_names[] = {"null",   "boolean", "object", "array",
                                         "number", "string",  "integer"};

enum { FMT_NONE, FMT_EMAIL, FMT_DATETIME, FMT_UUID };

/* Which numeric bounds a node has. */
enum { B_MIN = 1u << 0, B_MAX = 1u << 1, B_XMIN = 1u << 2, B_XMAX = 1u << 3 };

typedef struct {
    bool is_int;
    json_int_t i;
    double d;
} num_t;

struct doc;

typedef struct {
    const char *name; /* borrowed from the schema document */
    const sb__schema_t *schema;
} prop_t;

struct sb__schema {
    sb__schema_t *next_all;  /* every node of the set, newest first */
    sb__schema_t *next_hash; /* bucket chain of its document */
    struct doc *doc;
    const json_t *src;    /* the JSON it was compiled from (borrowed from doc) */
    const char *ref_text; /* "$ref" value, for messages */
    unsigned char mark;   /* cycle check: 0 unvisited, 1 on the path, 2 done */
    bool is_false;        /* the `false` schema */
    bool has_re;
    bool has_minlen, has_maxlen;
    unsigned types;              /* T_* bits; 0 = any */
    unsigned char type_order[8]; /* type_names indexes as the schema lists them */
    unsigned char n_types;
    unsigned bounds; /* B_* bits */
    int format;
    num_t min, max, xmin, xmax;
    size_t minlen, maxlen;
    regex_t re;
    const char *pattern;
    const json_t *enum_;  /* array, borrowed */
    const json_t *const_; /* borrowed */
    const char **required;
    size_t n_required;
    prop_t *props; /* sorted by name */
    size_t n_props;
    const sb__schema_t *addl; /* additionalProperties; NULL = anything */
    const sb__schema_t *items;
    const sb__schema_t **allof;
    size_t n_allof;
    const sb__schema_t *ref;
};

struct doc {
    char *path; /* canonical absolute path; NULL for in-memory schemas */
    char *dir;  /* base for relative references; NULL: none allowed */
    json_t *root;
    sb__schema_t *buckets[DOC_BUCKETS];
};

struct sb__schema_set {
    struct doc **docs;
    size_t n_docs, cap_docs;
    sb__schema_t *all;
};

/* A location as a chain of frames on the stack: an object key, an array index, or (at the
 * root only) a raw pointer text. Turned into a string only for messages. */
typedef struct path {
    const struct path *up;
    const char *key;
    size_t idx;
    const char *raw;
} path_t;

/* ---- small helpers ------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t size, len;
    bool full;
} writer_t;

static void w_putc(writer_t *w, char c)
{
    if (w->full)
        return;
    if (w->len + 1 >= w->size) {
        w->full = true;
        return;
    }
    w->buf[w->len++] = c;
    w->buf[w->len] = '\0';
}

static void w_puts(writer_t *w, const char *s)
{
    while (*s && !w->full)
        w_putc(w, *s++);
}

/* Ends a truncated buffer in "..." so nobody mistakes it for the whole text. */
static void w_finish(writer_t *w)
{
    if (w->full && w->size >= 4)
        memcpy(w->buf + w->size - 4, "...", 4);
}

static void w_path(writer_t *w, const path_t *p)
{
    if (!p)
        return;
    w_path(w, p->up);
    if (p->raw) {
        w_puts(w, p->raw);
    } else if (p->key) {
        w_putc(w, '/');
        for (const char *k = p->key; *k; k++) {
            if (*k == '~')
                w_puts(w, "~0");
            else if (*k == '/')
                w_puts(w, "~1");
            else
                w_putc(w, *k);
        }
    } else {
        char num[32];
        snprintf(num, sizeof num, "/%zu", p->idx);
        w_puts(w, num);
    }
}

static void format_path(char *buf, size_t size, const path_t *p)
{
    writer_t w = {buf, size, 0, false};
    buf[0] = '\0';
    w_path(&w, p);
    w_finish(&w);
}

/* A string for a message: quoted, escaped (no control characters reach a terminal) and cut
 * after about `max` bytes on a UTF-8 boundary. */
static void w_quoted(writer_t *w, const char *s, size_t len, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    w_putc(w, '"');
    size_t i = 0;
    for (; i < len && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            w_putc(w, '\\');
            w_putc(w, (char)c);
        } else if (c == '\n') {
            w_puts(w, "\\n");
        } else if (c == '\t') {
            w_puts(w, "\\t");
        } else if (c < 0x20 || c == 0x7f) {
            w_puts(w, "\\u00");
            w_putc(w, hex[c >> 4]);
            w_putc(w, hex[c & 15]);
        } else {
            w_putc(w, (char)c);
        }
    }
    /* finish a multibyte sequence the cut would split */
    while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80)
        w_putc(w, s[i++]);
    if (i < len)
        w_puts(w, "...");
    w_putc(w, '"');
}

static void w_num(writer_t *w, const json_t *j)
{
    char num[40];
    if (json_is_integer(j))
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
    else
        snprintf(num, sizeof num, "%.17g", json_real_value(j));
    w_puts(w, num);
}

/* Short description of a value: "abc", 42, true, null, an object, an array. */
static void w_value(writer_t *w, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_STRING:
        w_quoted(w, json_string_value(j), json_string_length(j), 48);
        break;
    case JSON_INTEGER:
    case JSON_REAL:
        w_num(w, j);
        break;
    case JSON_TRUE:
        w_puts(w, "true");
        break;
    case JSON_FALSE:
        w_puts(w, "false");
        break;
    case JSON_NULL:
        w_puts(w, "null");
        break;
    case JSON_OBJECT:
        w_puts(w, "an object");
        break;
    case JSON_ARRAY:
        w_puts(w, "an array");
        break;
    }
}

static void w_num_t(writer_t *w, const num_t *n)
{
    char num[40];
    if (n->is_int)
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, n->i);
    else
        snprintf(num, sizeof num, "%.17g", n->d);
    w_puts(w, num);
}

/* ---- numbers ------------------------------------------------------------------------- */

static bool real_is_integral(double d)
{
    /* |d| >= 2^53 is always integral; below, compare with its truncation. */
    if (d >= 9007199254740992.0 || d <= -9007199254740992.0)
        return true;
    return d == (double)(long long)d;
}

/* Compares a double with an integer exactly. */
static int cmp_real_int(double d, json_int_t i)
{
    if (d >= 9223372036854775808.0)
        return 1;
    if (d < -9223372036854775808.0)
        return -1;
    json_int_t t = (json_int_t)d; /* truncation; exact and in range here */
    if (t != i)
        return t < i ? -1 : 1;
    double frac = d - (double)t;
    return frac > 0 ? 1 : frac < 0 ? -1 : 0;
}

static int cmp_num(const json_t *j, const num_t *b)
{
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (b->is_int)
            return v < b->i ? -1 : v > b->i;
        return -cmp_real_int(b->d, v);
    }
    double d = json_real_value(j);
    if (b->is_int)
        return cmp_real_int(d, b->i);
    return d < b->d ? -1 : d > b->d;
}

static num_t num_of(const json_t *j)
{
    num_t n = {false, 0, 0};
    if (json_is_integer(j)) {
        n.is_int = true;
        n.i = json_integer_value(j);
    } else {
        n.d = json_real_value(j);
    }
    return n;
}

/* JSON Schema equality: numbers compare by value (1 == 1.0), objects ignore key order. */
static bool values_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        num_t nb = num_of(b);
        return cmp_num(a, &nb) == 0;
    }
    if (json_typeof(a) != json_typeof(b))
        return false;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY: {
        size_t n = json_array_size(a);
        if (n != json_array_size(b))
            return false;
        for (size_t i = 0; i < n; i++)
            if (!values_equal(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return false;
        for (void *it = json_object_iter((json_t *)a); it;
             it = json_object_iter_next((json_t *)a, it)) {
            const json_t *o = json_object_get(b, json_object_iter_key(it));
            if (!o || !values_equal(json_object_iter_value(it), o))
                return false;
        }
        return true;
    }
    default:
        return true; /* true, false, null: same type is same value */
    }
}

/* ---- formats ------------------------------------------------------------------------- */

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool check_uuid(const char *s, size_t len)
{
    if (len != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i]))
            return false;
    }
    return true;
}

/* Reads exactly n digits at s; -1 if any is not a digit. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return dm[m - 1];
}

/* RFC 3339 section 5.6 date-time, with 1 to 9 fractional digits. T/Z may be lower case
 * (RFC 3339 5.6 note). A leap second (:60) is valid only at 23:59 UTC. */
static bool check_datetime(const char *s, size_t len)
{
    if (len < 20)
        return false;
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), se = digits(s + 17, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || s[4] != '-' || s[7] != '-')
        return false;
    if (d > days_in_month(y, mo))
        return false;
    if ((s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':')
        return false;
    if (h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 || se > 60)
        return false;
    size_t i = 19;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < len && is_digit(s[i]))
            i++;
        if (i == start || i - start > 9)
            return false;
    }
    int off = 0; /* minutes east of UTC */
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        if (len - i < 6)
            return false;
        int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59 || s[i + 3] != ':')
            return false;
        off = (oh * 60 + om) * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return false;
    }
    if (i != len)
        return false;
    if (se == 60) {
        int utc = ((h * 60 + mi - off) % 1440 + 1440) % 1440;
        if (utc != 23 * 60 + 59)
            return false;
    }
    return true;
}

/* Pragmatic address check, not RFC 5322: one '@', a non-empty local part of at most 64
 * bytes without blanks, controls or specials, and a domain of at most 253 bytes made of
 * two or more dot-separated labels (letters, digits, '-', non-ASCII for IDN). */
static bool check_email(const char *s, size_t len)
{
    if (len < 3 || len > 254)
        return false;
    const char *at = memchr(s, '@', len);
    if (!at || memchr(at + 1, '@', len - (size_t)(at - s) - 1))
        return false;
    size_t llen = (size_t)(at - s), dlen = len - llen - 1;
    if (llen == 0 || llen > 64 || dlen == 0 || dlen > 253)
        return false;
    if (s[0] == '.' || s[llen - 1] == '.')
        return false;
    for (size_t i = 0; i < llen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || strchr("()<>[]:;,\\\"", (int)c))
            return false;
        if (c == '.' && s[i + 1] == '.')
            return false;
    }
    const char *dom = at + 1;
    size_t labels = 0, lab = 0;
    for (size_t i = 0; i <= dlen; i++) {
        if (i == dlen || dom[i] == '.') {
            if (lab == 0 || lab > 63 || dom[i - 1] == '-' || dom[i - lab] == '-')
                return false;
            labels++;
            lab = 0;
            continue;
        }
        unsigned char c = (unsigned char)dom[i];
        if (!(c >= 0x80 || is_alnum((char)c) || c == '-'))
            return false;
        lab++;
    }
    return labels >= 2;
}

static size_t count_code_points(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* ---- set and documents --------------------------------------------------------------- */

static size_t ptr_hash(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    v ^= v >> 17;
    v *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return (size_t)(v >> 7) & (DOC_BUCKETS - 1);
}

static sb__schema_t *doc_lookup(const struct doc *d, const json_t *src)
{
    for (sb__schema_t *n = d->buckets[ptr_hash(src)]; n; n = n->next_hash)
        if (n->src == src)
            return n;
    return NULL;
}

static void node_free(sb__schema_t *n)
{
    if (n->has_re)
        regfree(&n->re);
    sb_free(n->required);
    sb_free(n->props);
    sb_free(n->allof);
    sb_free(n);
}

static void doc_free(struct doc *d)
{
    if (!d)
        return;
    json_decref(d->root);
    sb_free(d->path);
    sb_free(d->dir);
    sb_free(d);
}

int sb__schema_set_new(sb__schema_set_t **out)
{
    if (!out)
        return SB_EINVAL;
    *out = sb_calloc(1, sizeof **out);
    return *out ? SB_EOK : SB_ENOMEM;
}

void sb__schema_set_destroy(sb__schema_set_t *s)
{
    if (!s)
        return;
    while (s->all) {
        sb__schema_t *n = s->all;
        s->all = n->next_all;
        node_free(n);
    }
    for (size_t i = 0; i < s->n_docs; i++)
        doc_free(s->docs[i]);
    sb_free(s->docs);
    sb_free(s);
}

/* Undoes everything added since (n_docs, all): nodes come off in the reverse order they
 * were added, so each is at the head of its bucket chain when removed. */
static void rollback(sb__schema_set_t *s, size_t n_docs, sb__schema_t *all)
{
    while (s->all != all) {
        sb__schema_t *n = s->all;
        s->all = n->next_all;
        sb__schema_t **pp = &n->doc->buckets[ptr_hash(n->src)];
        while (*pp && *pp != n)
            pp = &(*pp)->next_hash;
        if (*pp)
            *pp = n->next_hash;
        node_free(n);
    }
    while (s->n_docs > n_docs)
        doc_free(s->docs[--s->n_docs]);
}

/* Adds a document; takes over `root` on success only. */
static int doc_add(sb__schema_set_t *s, const char *path, const char *dir, json_t *root,
                   struct doc **out)
{
    if (s->n_docs == s->cap_docs) {
        size_t cap = s->cap_docs ? s->cap_docs * 2 : 8;
        struct doc **nd = sb_realloc(s->docs, cap * sizeof *nd);
        if (!nd)
            return SB_ENOMEM;
        s->docs = nd;
        s->cap_docs = cap;
    }
    struct doc *d = sb_calloc(1, sizeof *d);
    if (!d)
        return SB_ENOMEM;
    if ((path && !(d->path = sb_strdup(path))) || (dir && !(d->dir = sb_strdup(dir)))) {
        doc_free(d);
        return SB_ENOMEM;
    }
    d->root = root;
    s->docs[s->n_docs++] = d;
    *out = d;
    return SB_EOK;
}

/* ---- compiling ----------------------------------------------------------------------- */

typedef struct {
    sb__schema_set_t *set;
    char *errstr;
    size_t n;
    int depth;
} cctx_t;

static int cerr(cctx_t *cx, const struct doc *d, const path_t *at, int code, const char *fmt, ...)
    SB_PRINTF(5, 6);
static int cerr(cctx_t *cx, const struct doc *d, const path_t *at, int code, const char *fmt, ...)
{
    if (!cx->errstr || !cx->n)
        return code;
    char where[256], msg[320];
    format_path(where, sizeof where, at);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sb__errf(cx->errstr, cx->n, code, "%s#%s: %s", d->path ? d->path : "(inline schema)",
                    where, msg);
}

static int compile_node(cctx_t *cx, struct doc *d, const json_t *js, const path_t *at,
                        const sb__schema_t **out);
static int load_doc(cctx_t *cx, const char *path, struct doc **out);

/* Resolves a JSON pointer (already percent-decoded) inside root. NULL if it names nothing
 * or is malformed. */
static const json_t *resolve_pointer(const json_t *root, const char *ptr)
{
    const json_t *cur = root;
    char tok[256];
    while (*ptr) {
        if (*ptr != '/')
            return NULL;
        ptr++;
        size_t n = 0;
        while (*ptr && *ptr != '/') {
            char c = *ptr++;
            if (c == '~') {
                if (*ptr == '0')
                    c = '~';
                else if (*ptr == '1')
                    c = '/';
                else
                    return NULL;
                ptr++;
            }
            if (n + 1 >= sizeof tok)
                return NULL;
            tok[n++] = c;
        }
        tok[n] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_get(cur, tok);
        } else if (json_is_array(cur)) {
            if (n == 0 || n > 9 || (tok[0] == '0' && n > 1))
                return NULL;
            size_t idx = 0;
            for (size_t i = 0; i < n; i++) {
                if (!is_digit(tok[i]))
                    return NULL;
                idx = idx * 10 + (size_t)(tok[i] - '0');
            }
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
        if (!cur)
            return NULL;
    }
    return cur;
}

/* Percent-decodes a URI fragment into out (size n). -1 when malformed or too long. */
static int percent_decode(const char *s, char *out, size_t n)
{
    size_t o = 0;
    for (; *s; s++) {
        char c = *s;
        if (c == '%') {
            if (!is_hex(s[1]) || !is_hex(s[2]))
                return -1;
            char h[3] = {s[1], s[2], 0};
            c = (char)strtol(h, NULL, 16);
            if (c == '\0')
                return -1;
            s += 2;
        }
        if (o + 1 >= n)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

static int compile_ref(cctx_t *cx, struct doc *d, const char *ref, const path_t *at,
                       const sb__schema_t **out)
{
    const char *hash = strchr(ref, '#');
    size_t ulen = hash ? (size_t)(hash - ref) : strlen(ref);
    const char *frag = hash ? hash + 1 : "";
    struct doc *td = d;
    if (ulen > 0) {
        if (memchr(ref, ':', ulen) || ref[0] == '/')
            return cerr(cx, d, at, SB_ESCHEMA,
                        "$ref \"%s\": only relative file references are supported", ref);
        if (!d->dir)
            return cerr(cx, d, at, SB_ESCHEMA,
                        "$ref \"%s\": a file reference needs a base directory", ref);
        char path[PATH_MAX];
        int len = snprintf(path, sizeof path, "%s/%.*s", d->dir, (int)ulen, ref);
        if (len < 0 || (size_t)len >= sizeof path)
            return cerr(cx, d, at, SB_ESCHEMA, "$ref \"%s\": path too long", ref);
        int rc = load_doc(cx, path, &td);
        if (rc == SB_EIO || rc == SB_EPARSE) {
            char inner[384] = "";
            if (cx->errstr && cx->n)
                snprintf(inner, sizeof inner, "%s", cx->errstr);
            return cerr(cx, d, at, rc, "$ref \"%s\": %s", ref, inner);
        }
        if (rc != SB_EOK)
            return rc; /* load_doc or the compiler wrote the reason */
    }
    char ptr[512];
    if (percent_decode(frag, ptr, sizeof ptr) != 0)
        return cerr(cx, d, at, SB_ESCHEMA, "$ref \"%s\": malformed fragment", ref);
    if (ptr[0] && ptr[0] != '/')
        return cerr(cx, d, at, SB_ESCHEMA,
                    "$ref \"%s\": only JSON pointer fragments are supported ($anchor is not)", ref);
    const json_t *target = resolve_pointer(td->root, ptr);
    if (!target)
        return cerr(cx, d, at, SB_ESCHEMA, "$ref \"%s\" points to nothing", ref);
    path_t tat = {NULL, NULL, 0, frag};
    return compile_node(cx, td, target, &tat, out);
}

static int parse_type(cctx_t *cx, struct doc *d, const json_t *v, const path_t *at, sb__schema_t *n)
{
    size_t cnt = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_string(v) && (!json_is_array(v) || cnt == 0))
        return cerr(cx, d, at, SB_ESCHEMA,
                    "\"type\" must be a type name or a non-empty array of them");
    for (size_t i = 0; i < cnt; i++) {
        const json_t *t = json_is_array(v) ? json_array_get(v, i) : v;
        const char *name = json_string_value(t);
        size_t k = 0;
        while (name && k < sizeof type_names / sizeof *type_names && strcmp(name, type_names[k]))
            k++;
        if (!name || k == sizeof type_names / sizeof *type_names)
            return cerr(cx, d, at, SB_ESCHEMA,
                        "unknown type %s%s%s (expected null, boolean, object, array, number, "
                        "string or integer)",
                        name ? "\"" : "", name ? name : "(not a string)", name ? "\"" : "");
        if (!(n->types & (1u << k)) && n->n_types < sizeof n->type_order)
            n->type_order[n->n_types++] = (unsigned char)k;
        n->types |= 1u << k;
    }
    return SB_EOK;
}

static int parse_count(cctx_t *cx, struct doc *d, const json_t *v, const path_t *at, const char *kw,
                       size_t *out)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (size_t)json_integer_value(v);
        return SB_EOK;
    }
    if (json_is_real(v) && json_real_value(v) >= 0 && real_is_integral(json_real_value(v)) &&
        json_real_value(v) < 1e18) {
        *out = (size_t)json_real_value(v);
        return SB_EOK;
    }
    return cerr(cx, d, at, SB_ESCHEMA, "\"%s\" must be a non-negative integer", kw);
}

static int prop_cmp(const void *a, const void *b)
{
    return strcmp(((const prop_t *)a)->name, ((const prop_t *)b)->name);
}

static bool is_annotation(const char *k)
{
    static const char *const names[] = {
        "$schema",     "$id",      "$comment",    "$anchor",          "$dynamicAnchor",
        "$vocabulary", "title",    "description", "examples",         "default",
        "deprecated",  "readOnly", "writeOnly",   "contentMediaType", "contentEncoding"};
    if (!strncmp(k, "x-", 2))
        return true;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(k, names[i]))
            return true;
    return false;
}

/* Refuses what POSIX leaves undefined or what makes glibc's regcomp explode: consecutive
 * repetition operators ("a++", undefined in ERE), bounds above RE_DUP_MAX's portable 255,
 * and nested repetition whose expansion would exceed PATTERN_MAX_COST positions (regcomp
 * copies a repeated sub-expression once per bound). Anything else malformed is left to
 * regcomp to report. Returns NULL or the reason. */
#define PATTERN_MAX_COST 4096
static const char *pattern_too_hard(const char *re)
{
    size_t cost[32] = {0}, last = 0;
    int sp = 0;
    bool last_quant = false;
    for (const char *p = re; *p; p++) {
        size_t bound = 0;
        if (*p == '*' || *p == '+' || *p == '?') {
            bound = 2;
        } else if (*p == '{' && is_digit(p[1])) {
            char *end;
            unsigned long m = strtoul(p + 1, &end, 10), n = m;
            const char *q = end;
            if (*q == ',') {
                q++;
                n = m + 1;
                if (is_digit(*q)) {
                    n = strtoul(q, &end, 10);
                    q = end;
                }
            }
            if (*q == '}') { /* otherwise not a bound: an atom, regcomp decides */
                if (m > 255 || n > 255)
                    return "repetition bounds above 255 are not portable";
                bound = (m > n ? m : n) + 1;
                p = q;
            }
        }
        if (bound) {
            if (last_quant)
                return "consecutive repetition operators are undefined in POSIX ERE";
            cost[sp] += last * (bound - 1);
            last_quant = true;
        } else if (*p == '(') {
            if (sp + 1 >= (int)(sizeof cost / sizeof *cost))
                return "groups nested too deeply";
            cost[++sp] = 0;
            last = 0;
            last_quant = false;
        } else if (*p == ')' && sp > 0) {
            last = cost[sp--];
            cost[sp] += last;
            last_quant = false;
        } else if (*p == '|') {
            last = 0;
            last_quant = false;
        } else {
            if (*p == '\\' && p[1]) {
                p++;
            } else if (*p == '[') { /* bracket expression: skip to its closing ']' */
                const char *q = p + 1;
                q += *q == '^';
                q += *q == ']';
                while (*q && *q != ']') {
                    if (*q == '[' && (q[1] == ':' || q[1] == '.' || q[1] == '=')) {
                        const char term[3] = {q[1], ']', '\0'};
                        const char *close = strstr(q + 2, term);
                        q = close ? close + 2 : q + 1;
                    } else {
                        q++;
                    }
                }
                if (*q)
                    p = q;
            }
            cost[sp] += 1;
            last = 1;
            last_quant = false;
        }
        if (cost[sp] > PATTERN_MAX_COST)
            return "pattern too complex (nested repetition expands too far)";
    }
    return NULL;
}

static int compile_keyword(cctx_t *cx, struct doc *d, sb__schema_t *n, const char *k,
                           const json_t *v, const path_t *at)
{
    int rc;
    if (!strcmp(k, "type"))
        return parse_type(cx, d, v, at, n);
    if (!strcmp(k, "required")) {
        size_t cnt = json_array_size(v);
        if (!json_is_array(v))
            return cerr(cx, d, at, SB_ESCHEMA, "\"required\" must be an array of strings");
        if (cnt && !(n->required = sb_calloc(cnt, sizeof *n->required)))
            return SB_ENOMEM;
        for (size_t i = 0; i < cnt; i++) {
            const char *s = json_string_value(json_array_get(v, i));
            if (!s)
                return cerr(cx, d, at, SB_ESCHEMA, "\"required\" must be an array of strings");
            n->required[n->n_required++] = s;
        }
        return SB_EOK;
    }
    if (!strcmp(k, "properties")) {
        if (!json_is_object(v))
            return cerr(cx, d, at, SB_ESCHEMA, "\"properties\" must be an object of schemas");
        size_t cnt = json_object_size(v);
        if (cnt && !(n->props = sb_calloc(cnt, sizeof *n->props)))
            return SB_ENOMEM;
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it)) {
            const char *name = json_object_iter_key(it);
            path_t sub = {at, name, 0, NULL};
            prop_t *p = &n->props[n->n_props];
            p->name = name;
            if ((rc = compile_node(cx, d, json_object_iter_value(it), &sub, &p->schema)))
                return rc;
            n->n_props++;
        }
        if (n->n_props > 1)
            qsort(n->props, n->n_props, sizeof *n->props, prop_cmp);
        return SB_EOK;
    }
    if (!strcmp(k, "additionalProperties"))
        return compile_node(cx, d, v, at, &n->addl);
    if (!strcmp(k, "items")) {
        if (json_is_array(v))
            return cerr(cx, d, at, SB_ESCHEMA,
                        "\"items\" must be a schema (the array form of older drafts is not "
                        "supported)");
        return compile_node(cx, d, v, at, &n->items);
    }
    if (!strcmp(k, "allOf")) {
        size_t cnt = json_array_size(v);
        if (!json_is_array(v) || cnt == 0)
            return cerr(cx, d, at, SB_ESCHEMA, "\"allOf\" must be a non-empty array of schemas");
        if (!(n->allof = sb_calloc(cnt, sizeof *n->allof)))
            return SB_ENOMEM;
        for (size_t i = 0; i < cnt; i++) {
            path_t sub = {at, NULL, i, NULL};
            if ((rc = compile_node(cx, d, json_array_get(v, i), &sub, &n->allof[i])))
                return rc;
            n->n_allof++;
        }
        return SB_EOK;
    }
    if (!strcmp(k, "$ref")) {
        if (!json_is_string(v))
            return cerr(cx, d, at, SB_ESCHEMA, "\"$ref\" must be a string");
        n->ref_text = json_string_value(v);
        return compile_ref(cx, d, n->ref_text, at, &n->ref);
    }
    if (!strcmp(k, "$defs") || !strcmp(k, "definitions")) {
        /* Compiled eagerly so that an unsupported keyword in an unused definition is
         * still reported at start-up. */
        if (!json_is_object(v))
            return cerr(cx, d, at, SB_ESCHEMA, "\"%s\" must be an object of schemas", k);
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it)) {
            path_t sub = {at, json_object_iter_key(it), 0, NULL};
            const sb__schema_t *ignored;
            if ((rc = compile_node(cx, d, json_object_iter_value(it), &sub, &ignored)))
                return rc;
        }
        return SB_EOK;
    }
    if (!strcmp(k, "enum")) {
        if (!json_is_array(v))
            return cerr(cx, d, at, SB_ESCHEMA, "\"enum\" must be an array");
        n->enum_ = v;
        return SB_EOK;
    }
    if (!strcmp(k, "const")) {
        n->const_ = v;
        return SB_EOK;
    }
    if (!strcmp(k, "pattern")) {
        const char *re = json_string_value(v);
        if (!re || strlen(re) != json_string_length(v))
            return cerr(cx, d, at, SB_ESCHEMA, "\"pattern\" must be a string without NUL");
        const char *hard = pattern_too_hard(re);
        if (hard)
            return cerr(cx, d, at, SB_ESCHEMA, "pattern \"%.80s\" refused: %s", re, hard);
        int e = regcomp(&n->re, re, REG_EXTENDED | REG_NOSUB);
        if (e == REG_ESPACE)
            return cerr(cx, d, at, SB_ENOMEM, "out of memory compiling the pattern");
        if (e != 0) {
            char why[128];
            regerror(e, &n->re, why, sizeof why);
            return cerr(cx, d, at, SB_ESCHEMA, "invalid pattern \"%.80s\" (POSIX ERE): %s", re,
                        why);
        }
        n->has_re = true;
        n->pattern = re;
        return SB_EOK;
    }
    if (!strcmp(k, "minLength")) {
        n->has_minlen = true;
        return parse_count(cx, d, v, at, k, &n->minlen);
    }
    if (!strcmp(k, "maxLength")) {
        n->has_maxlen = true;
        return parse_count(cx, d, v, at, k, &n->maxlen);
    }
    static const struct {
        const char *name;
        unsigned bit;
    } bounds[] = {{"minimum", B_MIN},
                  {"maximum", B_MAX},
                  {"exclusiveMinimum", B_XMIN},
                  {"exclusiveMaximum", B_XMAX}};
    for (size_t i = 0; i < sizeof bounds / sizeof *bounds; i++) {
        if (strcmp(k, bounds[i].name))
            continue;
        if (!json_is_number(v))
            return cerr(cx, d, at, SB_ESCHEMA,
                        "\"%s\" must be a number (the boolean form of draft 4 is not "
                        "supported)",
                        k);
        num_t *dst = bounds[i].bit == B_MIN    ? &n->min
                     : bounds[i].bit == B_MAX  ? &n->max
                     : bounds[i].bit == B_XMIN ? &n->xmin
                                               : &n->xmax;
        *dst = num_of(v);
        n->bounds |= bounds[i].bit;
        return SB_EOK;
    }
    if (!strcmp(k, "format")) {
        const char *f = json_string_value(v);
        if (!f)
            return cerr(cx, d, at, SB_ESCHEMA, "\"format\" must be a string");
        n->format = !strcmp(f, "email")       ? FMT_EMAIL
                    : !strcmp(f, "date-time") ? FMT_DATETIME
                    : !strcmp(f, "uuid")      ? FMT_UUID
                                              : FMT_NONE; /* other formats: annotations */
        return SB_EOK;
    }
    if (is_annotation(k))
        return SB_EOK;
    return cerr(cx, d, at, SB_ESCHEMA,
                "unsupported keyword \"%s\": switchboard validates a subset of JSON Schema "
                "(see schemas/README.md) and refuses to ignore an assertion",
                k);
}

static int compile_node(cctx_t *cx, struct doc *d, const json_t *js, const path_t *at,
                        const sb__schema_t **out)
{
    sb__schema_t *n = doc_lookup(d, js);
    if (n) {
        *out = n;
        return SB_EOK;
    }
    if (!json_is_object(js) && !json_is_boolean(js))
        return cerr(cx, d, at, SB_ESCHEMA, "a schema must be an object or a boolean");
    if (cx->depth >= COMPILE_MAX_DEPTH)
        return cerr(cx, d, at, SB_ESCHEMA, "schema nested or chained deeper than %d levels",
                    COMPILE_MAX_DEPTH);
    if (!(n = sb_calloc(1, sizeof *n)))
        return SB_ENOMEM;
    n->doc = d;
    n->src = js;
    size_t b = ptr_hash(js);
    n->next_hash = d->buckets[b];
    d->buckets[b] = n;
    n->next_all = cx->set->all;
    cx->set->all = n;
    *out = n;
    if (json_is_boolean(js)) {
        n->is_false = json_is_false(js);
        return SB_EOK;
    }
    cx->depth++;
    int rc = SB_EOK;
    for (void *it = json_object_iter((json_t *)js); it && rc == SB_EOK;
         it = json_object_iter_next((json_t *)js, it)) {
        const char *k = json_object_iter_key(it);
        path_t kat = {at, k, 0, NULL};
        rc = compile_keyword(cx, d, n, k, json_object_iter_value(it), &kat);
    }
    cx->depth--;
    return rc;
}

/* A cycle through $ref/allOf alone never consumes instance depth: refuse it. */
static int check_cycles(cctx_t *cx, sb__schema_t *n, int depth)
{
    if (n->mark == 2)
        return SB_EOK;
    if (n->mark == 1 || depth > COMPILE_MAX_DEPTH) {
        const char *p = n->doc->path ? n->doc->path : "(inline schema)";
        return sb__errf(cx->errstr, cx->n, SB_ESCHEMA,
                        "%s: $ref/allOf %s%s%s never descends into the instance and would "
                        "recurse forever",
                        p, n->mark == 1 ? "cycle" : "chain too long", n->ref_text ? " at " : "",
                        n->ref_text ? n->ref_text : "");
    }
    n->mark = 1;
    int rc = SB_EOK;
    if (n->ref)
        rc = check_cycles(cx, (sb__schema_t *)n->ref, depth + 1);
    for (size_t i = 0; rc == SB_EOK && i < n->n_allof; i++)
        rc = check_cycles(cx, (sb__schema_t *)n->allof[i], depth + 1);
    n->mark = 2;
    return rc;
}

/* Loads `path` into the set unless it is there already. */
static int load_doc(cctx_t *cx, const char *path, struct doc **out)
{
    char canon[PATH_MAX];
    if (!realpath(path, canon))
        return sb__errf(cx->errstr, cx->n, SB_EIO, "cannot open schema \"%s\": %s", path,
                        strerror(errno));
    for (size_t i = 0; i < cx->set->n_docs; i++) {
        if (cx->set->docs[i]->path && !strcmp(cx->set->docs[i]->path, canon)) {
            *out = cx->set->docs[i];
            return SB_EOK;
        }
    }
    json_error_t je;
    sb__alloc_json_hooks();
    unsigned long failures = sb__alloc_failures();
    json_t *root = json_load_file(canon, JSON_REJECT_DUPLICATES, &je);
    if (sb__alloc_failures() != failures) {
        /* jansson may swallow or misreport an allocation failure: trust the count. */
        json_decref(root);
        return sb__errf(cx->errstr, cx->n, SB_ENOMEM, "cannot load schema \"%s\": out of memory",
                        canon);
    }
    if (!root) {
        /* jansson reports a failed allocation in its lexer set-up with no text at all. */
        enum json_error_code c = je.text[0] ? json_error_code(&je) : json_error_out_of_memory;
        int rc = c == json_error_out_of_memory      ? SB_ENOMEM
                 : c == json_error_cannot_open_file ? SB_EIO
                                                    : SB_EPARSE;
        return sb__errf(cx->errstr, cx->n, rc, "cannot load schema \"%s\": %s (line %d, column %d)",
                        canon, je.text, je.line, je.column);
    }
    char dir[PATH_MAX];
    const char *slash = strrchr(canon, '/');
    size_t dlen = slash ? (size_t)(slash - canon) : 0;
    memcpy(dir, canon, dlen);
    dir[dlen] = '\0';
    if (dlen == 0)
        strcpy(dir, "/");
    struct doc *d;
    int rc = doc_add(cx->set, canon, dir, root, &d);
    if (rc != SB_EOK) {
        json_decref(root);
        return rc;
    }
    path_t at = {NULL, NULL, 0, ""};
    const sb__schema_t *ignored;
    if ((rc = compile_node(cx, d, root, &at, &ignored)) != SB_EOK)
        return rc;
    *out = d;
    return SB_EOK;
}

static int finish(cctx_t *cx, size_t n_docs, sb__schema_t *all, int rc, const struct doc *d,
                  const sb__schema_t **out)
{
    if (rc == SB_EOK)
        rc = compile_node(cx, (struct doc *)d, d->root, &(path_t){NULL, NULL, 0, ""}, out);
    for (sb__schema_t *n = cx->set->all; rc == SB_EOK && n != all; n = n->next_all)
        rc = check_cycles(cx, n, 0);
    if (rc != SB_EOK) {
        if (rc == SB_ENOMEM && cx->errstr && cx->n)
            snprintf(cx->errstr, cx->n, "out of memory compiling the schema");
        rollback(cx->set, n_docs, all);
        *out = NULL;
    }
    return rc;
}

int sb__schema_load(sb__schema_set_t *s, const char *path, const sb__schema_t **out, char *errstr,
                    size_t n)
{
    if (!s || !path || !out)
        return sb__errf(errstr, n, SB_EINVAL, "no schema path given");
    cctx_t cx = {s, errstr, n, 0};
    size_t n_docs = s->n_docs;
    sb__schema_t *all = s->all;
    struct doc *d = NULL;
    int rc = load_doc(&cx, path, &d);
    return finish(&cx, n_docs, all, rc, d, out);
}

int sb__schema_compile_json(sb__schema_set_t *s, const json_t *schema, const char *base_dir,
                            const sb__schema_t **out, char *errstr, size_t n)
{
    if (!s || !schema || !out)
        return sb__errf(errstr, n, SB_EINVAL, "no schema given");
    cctx_t cx = {s, errstr, n, 0};
    size_t n_docs = s->n_docs;
    sb__schema_t *all = s->all;
    struct doc *d = NULL;
    int rc = doc_add(s, NULL, base_dir, (json_t *)schema, &d);
    if (rc == SB_EOK)
        json_incref((json_t *)schema);
    return finish(&cx, n_docs, all, rc, d, out);
}

/* ---- validating ---------------------------------------------------------------------- */

typedef struct {
    sb__schema_error_t *errs;
    size_t max, n;
    bool invalid;
    bool stop;
    int internal; /* negative error when validation itself failed */
    int depth;
} vctx_t;

/* Starts an error at `at` in the next free slot; NULL when there is none (validation then
 * stops). report_end() commits it. */
static writer_t *report_begin(vctx_t *v, const path_t *at, writer_t *w)
{
    v->invalid = true;
    if (v->n >= v->max) {
        v->stop = true;
        return NULL;
    }
    sb__schema_error_t *e = &v->errs[v->n];
    format_path(e->pointer, sizeof e->pointer, at);
    e->message[0] = '\0';
    *w = (writer_t){e->message, sizeof e->message, 0, false};
    return w;
}

/* Commits the error begun, unless the same failure was already reported through another
 * path (the base schema and the event both saying "expected object"). */
static void report_end(vctx_t *v, writer_t *w)
{
    if (!w)
        return;
    w_finish(w);
    const sb__schema_error_t *e = &v->errs[v->n];
    for (size_t i = 0; i < v->n; i++)
        if (!strcmp(v->errs[i].pointer, e->pointer) && !strcmp(v->errs[i].message, e->message))
            return;
    if (++v->n == v->max)
        v->stop = true;
}

static void report(vctx_t *v, const path_t *at, const char *fmt, ...) SB_PRINTF(3, 4);
static void report(vctx_t *v, const path_t *at, const char *fmt, ...)
{
    writer_t wb, *w = report_begin(v, at, &wb);
    if (!w)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->buf, w->size, fmt, ap);
    va_end(ap);
    report_end(v, w);
}

/* "<value> <text>" */
static void report_value(vctx_t *v, const path_t *at, const json_t *j, const char *text)
{
    writer_t wb, *w = report_begin(v, at, &wb);
    if (!w)
        return;
    w_value(w, j);
    w_puts(w, text);
    report_end(v, w);
}

/* Indexed by json_typeof(): OBJECT, ARRAY, STRING, INTEGER, REAL, TRUE, FALSE, NULL. */
_Static_assert(JSON_OBJECT == 0 && JSON_REAL == 4 && JSON_NULL == 7, "jansson json_type order");
static const unsigned json_type_bits[] = {T_OBJECT, T_ARRAY,   T_STRING,  T_INTEGER | T_NUMBER,
                                          T_NUMBER, T_BOOLEAN, T_BOOLEAN, T_NULL};
static const char *const json_type_names[] = {"object", "array",   "string",  "integer",
                                              "number", "boolean", "boolean", "null"};

static unsigned type_bits(const json_t *j)
{
    if (json_is_real(j) && real_is_integral(json_real_value(j)))
        return T_NUMBER | T_INTEGER;
    return json_type_bits[json_typeof(j)];
}

static void report_type(vctx_t *v, const path_t *at, const sb__schema_t *sc, const json_t *j)
{
    writer_t wb, *w = report_begin(v, at, &wb);
    if (!w)
        return;
    w_puts(w, "expected ");
    for (size_t i = 0; i < sc->n_types; i++) {
        if (i)
            w_puts(w, i + 1 == sc->n_types ? " or " : ", ");
        w_puts(w, type_names[sc->type_order[i]]);
    }
    w_puts(w, ", got ");
    w_puts(w, json_type_names[json_typeof(j)]);
    if (json_is_string(j) || json_is_number(j)) {
        w_putc(w, ' ');
        w_value(w, j);
    }
    report_end(v, w);
}

static void report_bound(vctx_t *v, const path_t *at, const json_t *j, const char *text,
                         const num_t *b)
{
    writer_t wb, *w = report_begin(v, at, &wb);
    if (!w)
        return;
    w_value(w, j);
    w_puts(w, text);
    w_num_t(w, b);
    report_end(v, w);
}

static const prop_t *find_prop(const sb__schema_t *sc, const char *key)
{
    size_t lo = 0, hi = sc->n_props;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, sc->props[mid].name);
        if (c == 0)
            return &sc->props[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static void validate_node(vctx_t *v, const sb__schema_t *sc, const json_t *inst, const path_t *at);

static void validate_string(vctx_t *v, const sb__schema_t *sc, const json_t *inst, const path_t *at)
{
    const char *s = json_string_value(inst);
    size_t len = json_string_length(inst);
    if (sc->has_minlen || sc->has_maxlen) {
        size_t cp = count_code_points(s, len);
        char text[96];
        if (sc->has_minlen && cp < sc->minlen) {
            snprintf(text, sizeof text, " is shorter than %zu character%s", sc->minlen,
                     sc->minlen == 1 ? "" : "s");
            report_value(v, at, inst, text);
        }
        if (sc->has_maxlen && cp > sc->maxlen) {
            snprintf(text, sizeof text, " is longer than %zu character%s (%zu)", sc->maxlen,
                     sc->maxlen == 1 ? "" : "s", cp);
            report_value(v, at, inst, text);
        }
    }
    if (sc->has_re && !v->stop) {
        if (memchr(s, '\0', len)) {
            report_value(v, at, inst, " contains a NUL character and cannot match a pattern");
        } else {
            int e = regexec(&sc->re, s, 0, NULL, 0);
            if (e == REG_NOMATCH) {
                writer_t wb, *w = report_begin(v, at, &wb);
                if (w) {
                    w_value(w, inst);
                    w_puts(w, " does not match the pattern ");
                    w_quoted(w, sc->pattern, strlen(sc->pattern), 64);
                    report_end(v, w);
                }
            } else if (e != 0) {
                v->internal = SB_ENOMEM;
                v->stop = true;
            }
        }
    }
    if (sc->format != FMT_NONE && !v->stop) {
        if (sc->format == FMT_EMAIL && !check_email(s, len))
            report_value(v, at, inst, " is not a valid email address");
        else if (sc->format == FMT_DATETIME && !check_datetime(s, len))
            report_value(v, at, inst, " is not a valid RFC 3339 date-time");
        else if (sc->format == FMT_UUID && !check_uuid(s, len))
            report_value(v, at, inst, " is not a valid UUID");
    }
}

static void validate_number(vctx_t *v, const sb__schema_t *sc, const json_t *inst, const path_t *at)
{
    if ((sc->bounds & B_MIN) && cmp_num(inst, &sc->min) < 0)
        report_bound(v, at, inst, " is less than the minimum ", &sc->min);
    if ((sc->bounds & B_XMIN) && cmp_num(inst, &sc->xmin) <= 0 && !v->stop)
        report_bound(v, at, inst, " is not greater than the exclusive minimum ", &sc->xmin);
    if ((sc->bounds & B_MAX) && cmp_num(inst, &sc->max) > 0 && !v->stop)
        report_bound(v, at, inst, " is greater than the maximum ", &sc->max);
    if ((sc->bounds & B_XMAX) && cmp_num(inst, &sc->xmax) >= 0 && !v->stop)
        report_bound(v, at, inst, " is not less than the exclusive maximum ", &sc->xmax);
}

static void validate_object(vctx_t *v, const sb__schema_t *sc, const json_t *inst, const path_t *at)
{
    for (size_t i = 0; i < sc->n_required && !v->stop; i++) {
        if (!json_object_get(inst, sc->required[i])) {
            writer_t wb, *w = report_begin(v, at, &wb);
            if (w) {
                w_puts(w, "required property ");
                w_quoted(w, sc->required[i], strlen(sc->required[i]), 64);
                w_puts(w, " is missing");
                report_end(v, w);
            }
        }
    }
    if (!sc->n_props && !sc->addl)
        return;
    for (void *it = json_object_iter((json_t *)inst); it && !v->stop;
         it = json_object_iter_next((json_t *)inst, it)) {
        const char *key = json_object_iter_key(it);
        path_t sub = {at, key, 0, NULL};
        const prop_t *p = find_prop(sc, key);
        if (p) {
            validate_node(v, p->schema, json_object_iter_value(it), &sub);
        } else if (sc->addl && sc->addl->is_false) {
            writer_t wb, *w = report_begin(v, &sub, &wb);
            if (w) {
                w_puts(w, "property ");
                w_quoted(w, key, strlen(key), 64);
                w_puts(w, " is not allowed (additionalProperties is false)");
                report_end(v, w);
            }
        } else if (sc->addl) {
            validate_node(v, sc->addl, json_object_iter_value(it), &sub);
        }
    }
}

static void validate_enum(vctx_t *v, const sb__schema_t *sc, const json_t *inst, const path_t *at)
{
    size_t n = json_array_size(sc->enum_);
    for (size_t i = 0; i < n; i++)
        if (values_equal(inst, json_array_get(sc->enum_, i)))
            return;
    writer_t wb, *w = report_begin(v, at, &wb);
    if (!w)
        return;
    w_value(w, inst);
    w_puts(w, " is not one of ");
    for (size_t i = 0; i < n; i++) {
        if (i)
            w_puts(w, ", ");
        w_value(w, json_array_get(sc->enum_, i));
    }
    report_end(v, w);
}

static void validate_node(vctx_t *v, const sb__schema_t *sc, const json_t *inst, const path_t *at)
{
    if (v->stop)
        return;
    if (sc->is_false) {
        report(v, at, "no value is allowed here (schema is false)");
        return;
    }
    if (v->depth >= VALIDATE_MAX_DEPTH) {
        report(v, at, "value nested too deeply to validate");
        v->stop = true;
        return;
    }
    v->depth++;
    if (sc->ref)
        validate_node(v, sc->ref, inst, at);
    unsigned tb = type_bits(inst);
    if (sc->types && !(sc->types & tb) && !v->stop)
        report_type(v, at, sc, inst);
    if (sc->enum_ && !v->stop)
        validate_enum(v, sc, inst, at);
    if (sc->const_ && !v->stop && !values_equal(inst, sc->const_)) {
        writer_t wb, *w = report_begin(v, at, &wb);
        if (w) {
            w_value(w, inst);
            w_puts(w, " is not the constant ");
            w_value(w, sc->const_);
            report_end(v, w);
        }
    }
    if (!v->stop) {
        if (tb & T_STRING) {
            if (sc->has_minlen || sc->has_maxlen || sc->has_re || sc->format)
                validate_string(v, sc, inst, at);
        } else if (tb & T_NUMBER) {
            if (sc->bounds)
                validate_number(v, sc, inst, at);
        } else if (tb & T_OBJECT) {
            validate_object(v, sc, inst, at);
        } else if ((tb & T_ARRAY) && sc->items) {
            size_t n = json_array_size(inst);
            for (size_t i = 0; i < n && !v->stop; i++) {
                path_t sub = {at, NULL, i, NULL};
                validate_node(v, sc->items, json_array_get(inst, i), &sub);
            }
        }
    }
    for (size_t i = 0; i < sc->n_allof && !v->stop; i++)
        validate_node(v, sc->allof[i], inst, at);
    v->depth--;
}

int sb__schema_validate(const sb__schema_t *sc, const json_t *instance, sb__schema_error_t *errs,
                        size_t max_errs, size_t *n_errs)
{
    if (n_errs)
        *n_errs = 0;
    if (!sc || !instance || (max_errs && !errs))
        return SB_EINVAL;
    vctx_t v = {errs, max_errs, 0, false, false, 0, 0};
    path_t root = {NULL, NULL, 0, ""};
    validate_node(&v, sc, instance, &root);
    if (n_errs)
        *n_errs = v.n;
    if (v.internal)
        return v.internal;
    return v.invalid ? SB_ESCHEMA : SB_EOK;
}
