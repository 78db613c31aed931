/* log.c: structured logging, one line per call, JSON by default, text for humans.
 *
 * Design: a line is built completely in a per-call buffer (on the stack, growing on the heap
 * only for long lines) and written with one fwrite() under a mutex, so concurrent lines never
 * interleave. Every string is filtered while it is escaped, in one pass: registered secrets
 * and URL passwords are masked there, so no code path can write a secret by forgetting to
 * call a redaction helper. Input strings are capped (message 16 KiB, values 4 KiB) so a line
 * stays bounded; a line that cannot be allocated is replaced by a short fixed one saying so.
 *
 * The configuration (threshold, format, output) and the secret registry are process-wide,
 * changed only through sb__log_configure() and sb__log_add_secret(). Does not rotate files,
 * sample, rate-limit or ship logs anywhere: one FILE* is the whole output model. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "log.h"

#define MSG_CAP     (16u * 1024u) /* bytes of message text kept */
#define VALUE_CAP   (4u * 1024u)  /* bytes of a field value kept */
#define KEY_CAP     128u          /* bytes of a field name kept */
#define KV_MAX      32u           /* extra pairs accepted by sb__logkv() */
#define SECRET_MIN  4u
#define MASK        "********"
#define TRUNC_MARK  "\xe2\x80\xa6" /* U+2026, appended to truncated strings */
#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

static atomic_int g_level = SB_LOG_INFO;
static pthread_rwlock_t g_conf_lock = PTHREAD_RWLOCK_INITIALIZER; /* format, out, secrets */
static pthread_mutex_t g_write_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_format = SB__LOG_JSON;
static FILE *g_out; /* NULL: stderr */
static char **g_secrets;
static size_t *g_secret_lens;
static size_t g_nsecrets, g_secrets_cap;

/* ---- line buffer ------------------------------------------------------------------------ */

typedef struct lbuf {
    char *p;
    size_t len, cap;
    int oom;
    char stack[1024];
} lbuf_t;

static void lb_init(lbuf_t *b)
{
    b->p = b->stack;
    b->len = 0;
    b->cap = sizeof b->stack;
    b->oom = 0;
}

static void lb_free(lbuf_t *b)
{
    if (b->p != b->stack)
        sb_free(b->p);
}

static int lb_reserve(lbuf_t *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap * 2;
    while (cap - b->len < extra)
        cap *= 2;
    char *p;
    if (b->p == b->stack) {
        p = sb_malloc(cap);
        if (p)
            memcpy(p, b->stack, b->len);
    } else {
        p = sb_realloc(b->p, cap);
    }
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static void lb_put(lbuf_t *b, const char *s, size_t n)
{
    if (lb_reserve(b, n) == 0) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

static void lb_puts(lbuf_t *b, const char *s)
{
    lb_put(b, s, strlen(s));
}

static void lb_putc(lbuf_t *b, char c)
{
    lb_put(b, &c, 1);
}

/* ---- UTF-8, secrets, URL passwords ------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is invalid (overlongs,
 * surrogates and code points above U+10FFFF included). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* Length of the longest registered secret starting at s[0..n), 0 if none. Called with the
 * configuration lock held for reading. */
static size_t secret_at(const char *s, size_t n)
{
    size_t best = 0;
    for (size_t i = 0; i < g_nsecrets; i++) {
        size_t l = g_secret_lens[i];
        if (l <= n && l > best && g_secrets[i][0] == s[0] && memcmp(g_secrets[i], s, l) == 0)
            best = l;
    }
    return best;
}

static int url_stop(unsigned char c)
{
    return c <= 0x20 || c == 0x7F || c == '/' || c == '?' || c == '#' || c == '"' || c == '\'' ||
           c == '<' || c == '>' || c == '\\';
}

/* `s[0..n)` starts right after a "://". If the authority carries a password
 * ("user:password@"), sets [*from, *to) to the password's byte range and returns 1. The last
 * '@' of the authority ends the user information, as browsers parse it, so an unencoded '@'
 * in a password does not leak its tail. */
static int url_password(const char *s, size_t n, size_t *from, size_t *to)
{
    size_t k = 0, at = SIZE_MAX;
    for (; k < n && !url_stop((unsigned char)s[k]); k++)
        if (s[k] == '@')
            at = k;
    if (at == SIZE_MAX)
        return 0;
    const char *colon = memchr(s, ':', at);
    if (!colon)
        return 0;
    *from = (size_t)(colon - s) + 1;
    *to = at;
    return 1;
}

/* Escapes s[0..n) into b, masking secrets and URL passwords. `full`: JSON string rules
 * (quotes and backslashes too); otherwise only control characters are escaped (text-format
 * messages, which are not quoted). Invalid UTF-8 becomes U+FFFD. */
static void put_escaped(lbuf_t *b, const char *s, size_t n, int full)
{
    static const char hex[] = "0123456789abcdef";
    size_t mask_from = SIZE_MAX, mask_to = 0;
    size_t i = 0;
    while (i < n) {
        if (i >= mask_from) {
            if (i < mask_to) {
                lb_puts(b, MASK);
                i = mask_to;
            }
            mask_from = SIZE_MAX;
            continue;
        }
        if (s[i] == ':' && mask_from == SIZE_MAX && n - i > 3 && s[i + 1] == '/' &&
            s[i + 2] == '/') {
            size_t f, t;
            if (url_password(s + i + 3, n - i - 3, &f, &t)) {
                mask_from = i + 3 + f;
                mask_to = i + 3 + t;
            }
        }
        size_t sl = g_nsecrets ? secret_at(s + i, n - i) : 0;
        if (sl) {
            lb_puts(b, MASK);
            i += sl;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        size_t ul = utf8_seq((const unsigned char *)s + i, n - i);
        if (ul == 0) {
            lb_puts(b, REPLACEMENT);
            i++;
            continue;
        }
        if (ul > 1) {
            lb_put(b, s + i, ul);
            i += ul;
            continue;
        }
        i++;
        if (c >= 0x20 && c != 0x7F && (!full || (c != '"' && c != '\\'))) {
            lb_putc(b, (char)c);
            continue;
        }
        switch (c) {
        case '"':
            lb_puts(b, "\\\"");
            break;
        case '\\':
            lb_puts(b, "\\\\");
            break;
        case '\n':
            lb_puts(b, "\\n");
            break;
        case '\r':
            lb_puts(b, "\\r");
            break;
        case '\t':
            lb_puts(b, "\\t");
            break;
        case '\b':
            lb_puts(b, "\\b");
            break;
        case '\f':
            lb_puts(b, "\\f");
            break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            lb_put(b, u, sizeof u);
        }
        }
    }
}

/* len, shortened so that s[0..len) does not end inside a multi-byte UTF-8 sequence (used
 * after cutting a string, so the cut never manufactures invalid UTF-8). */
static size_t utf8_trim_tail(const char *s, size_t len)
{
    size_t i = len;
    for (int k = 0; k < 3 && i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80; k++)
        i--;
    if (i == 0)
        return len;
    unsigned char c = (unsigned char)s[i - 1];
    size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > 1 && len - (i - 1) < need ? i - 1 : len;
}

/* Length to keep of s when capped at `cap` bytes. *trunc says whether anything was cut. */
static size_t capped_len(const char *s, size_t cap, int *trunc)
{
    size_t n = strnlen(s, cap + 1);
    *trunc = n > cap;
    return *trunc ? utf8_trim_tail(s, cap) : n;
}

/* ---- line assembly ---------------------------------------------------------------------- */

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_text[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

static int is_reserved(const char *k)
{
    static const char *const reserved[] = {"time",       "level",   "msg",      "event_id",
                                           "event_type", "handler", "trace_id", "module"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcmp(k, reserved[i]) == 0)
            return 1;
    return 0;
}

/* "2026-12-03T16:00:00.123Z" into out (at least 25 bytes). */
static void format_time(char out[static 25])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    if (strftime(out, 25, "%Y-%m-%dT%H:%M:%S", &tm) != 19) {
        memcpy(out, "0000-00-00T00:00:00.000Z", 25); /* year beyond 9999: not worth more */
        return;
    }
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000) % 1000u;
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

static int text_needs_quotes(const char *s, size_t n)
{
    if (n == 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7F || c == '"' || c == '=' || c == '\\')
            return 1;
    }
    return 0;
}

/* One field: `"key":"value"` (JSON) or ` key=value` (text). `value` NULL writes null. */
static void put_field(lbuf_t *b, int text, const char *key, int prefix_x, const char *value,
                      const int64_t *num, size_t cap)
{
    int kt;
    size_t kn = capped_len(key, KEY_CAP, &kt);
    if (text) {
        lb_putc(b, ' ');
        if (prefix_x)
            lb_puts(b, "x_");
        put_escaped(b, key, kn, 0);
        lb_putc(b, '=');
    } else {
        lb_puts(b, prefix_x ? ",\"x_" : ",\"");
        put_escaped(b, key, kn, 1);
        lb_puts(b, "\":");
    }
    if (num) {
        char d[24];
        int dn = snprintf(d, sizeof d, "%lld", (long long)*num);
        lb_put(b, d, (size_t)dn);
        return;
    }
    if (!value) {
        lb_puts(b, "null");
        return;
    }
    int vt;
    size_t vn = capped_len(value, cap, &vt);
    int quote = !text || text_needs_quotes(value, vn);
    if (quote)
        lb_putc(b, '"');
    put_escaped(b, value, vn, quote);
    if (vt)
        lb_puts(b, TRUNC_MARK);
    if (quote)
        lb_putc(b, '"');
}

static void emit(int level, const sb__log_fields_t *f, const sb__log_kv_t *kv, size_t nkv,
                 const char *msg, size_t msglen, int msg_trunc)
{
    int li = level < SB_LOG_DEBUG ? SB_LOG_DEBUG : level > SB_LOG_ERROR ? SB_LOG_ERROR : level;
    char ts[25];
    format_time(ts);

    lbuf_t b;
    lb_init(&b);
    pthread_rwlock_rdlock(&g_conf_lock);
    int text = g_format == SB__LOG_TEXT;
    FILE *out = g_out ? g_out : stderr;

    if (text) {
        lb_puts(&b, ts);
        lb_putc(&b, ' ');
        lb_puts(&b, level_text[li]);
        lb_putc(&b, ' ');
        put_escaped(&b, msg, msglen, 0);
    } else {
        lb_puts(&b, "{\"time\":\"");
        lb_puts(&b, ts);
        lb_puts(&b, "\",\"level\":\"");
        lb_puts(&b, level_names[li]);
        lb_puts(&b, "\",\"msg\":\"");
        put_escaped(&b, msg, msglen, 1);
    }
    if (msg_trunc)
        lb_puts(&b, TRUNC_MARK);
    if (!text)
        lb_putc(&b, '"');
    if (f) {
        const struct {
            const char *k, *v;
        } known[] = {{"event_id", f->event_id},
                     {"event_type", f->event_type},
                     {"handler", f->handler},
                     {"trace_id", f->trace_id},
                     {"module", f->module}};
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            if (known[i].v)
                put_field(&b, text, known[i].k, 0, known[i].v, NULL, VALUE_CAP);
    }
    for (size_t i = 0; i < nkv; i++) {
        if (!kv[i].key)
            continue;
        int x = is_reserved(kv[i].key);
        if (kv[i].type == SB__KV_INT)
            put_field(&b, text, kv[i].key, x, NULL, &kv[i].num, VALUE_CAP);
        else
            put_field(&b, text, kv[i].key, x, kv[i].str, NULL, VALUE_CAP);
    }
    lb_puts(&b, text ? "\n" : "}\n");

    char fallback[160];
    const char *line = b.p;
    size_t len = b.len;
    if (b.oom) {
        int n = text ? snprintf(fallback, sizeof fallback,
                                "%s %s log line dropped: out of memory\n", ts, level_text[li])
                     : snprintf(fallback, sizeof fallback,
                                "{\"time\":\"%s\",\"level\":\"%s\","
                                "\"msg\":\"log line dropped: out of memory\"}\n",
                                ts, level_names[li]);
        line = fallback;
        len = (size_t)n < sizeof fallback ? (size_t)n : sizeof fallback - 1;
    }
    pthread_mutex_lock(&g_write_lock);
    fwrite(line, 1, len, out);
    fflush(out);
    pthread_mutex_unlock(&g_write_lock);
    pthread_rwlock_unlock(&g_conf_lock);
    lb_free(&b);
}

/* Formats the message and emits. The message is capped at MSG_CAP bytes. */
static void vemit(int level, const sb__log_fields_t *f, const sb__log_kv_t *kv, size_t nkv,
                  const char *fmt, va_list ap)
{
    char small[512];
    char *heap = NULL;
    const char *msg = small;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    size_t len;
    int trunc = 0;
    if (n < 0) {
        msg = "(unformattable log message)";
        len = strlen(msg);
    } else if ((size_t)n < sizeof small) {
        len = (size_t)n;
    } else {
        size_t want = (size_t)n > MSG_CAP ? MSG_CAP : (size_t)n;
        heap = sb_malloc(want + 1);
        if (heap) {
            vsnprintf(heap, want + 1, fmt, ap2);
            msg = heap;
            len = want;
        } else {
            len = sizeof small - 1;
        }
        if (len < (size_t)n) {
            trunc = 1;
            len = utf8_trim_tail(msg, len);
        }
    }
    va_end(ap2);
    emit(level, f, kv, nkv, msg, len, trunc);
    sb_free(heap);
}

/* ---- public (internal) API -------------------------------------------------------------- */

void sb__log_configure(int level, int format, FILE *out)
{
    atomic_store(&g_level, level);
    pthread_rwlock_wrlock(&g_conf_lock);
    g_format = format == SB__LOG_TEXT ? SB__LOG_TEXT : SB__LOG_JSON;
    g_out = out;
    pthread_rwlock_unlock(&g_conf_lock);
}

bool sb__log_enabled(int level)
{
    return level >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

void sb__log(int level, const sb__log_fields_t *f, const char *fmt, ...)
{
    if (!sb__log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    vemit(level, f, NULL, 0, fmt, ap);
    va_end(ap);
}

void sb__log_fields(int level, const sb__log_fields_t *f, const sb__log_kv_t *kv, size_t nkv,
                    const char *fmt, ...)
{
    if (!sb__log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    vemit(level, f, kv, nkv, fmt, ap);
    va_end(ap);
}

void sb__logkv(int level, const sb__log_fields_t *f, const char *msg, ...)
{
    if (!sb__log_enabled(level))
        return;
    sb__log_kv_t kv[KV_MAX];
    size_t n = 0;
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        if (n < KV_MAX)
            kv[n++] = SB__KV_S(k, v);
    }
    va_end(ap);
    if (!msg)
        msg = "";
    int trunc;
    size_t len = capped_len(msg, MSG_CAP, &trunc);
    emit(level, f, kv, n, msg, len, trunc);
}

int sb__log_level_parse(const char *s)
{
    if (!s)
        return SB_EINVAL;
    if (strcasecmp(s, "debug") == 0)
        return SB_LOG_DEBUG;
    if (strcasecmp(s, "info") == 0)
        return SB_LOG_INFO;
    if (strcasecmp(s, "warn") == 0 || strcasecmp(s, "warning") == 0)
        return SB_LOG_WARN;
    if (strcasecmp(s, "error") == 0)
        return SB_LOG_ERROR;
    return SB_EINVAL;
}

const char *sb__log_level_name(int level)
{
    if (level < SB_LOG_DEBUG || level > SB_LOG_ERROR)
        return "?";
    return level_names[level];
}

int sb__log_format_parse(const char *s)
{
    if (s && strcasecmp(s, "json") == 0)
        return SB__LOG_JSON;
    if (s && strcasecmp(s, "text") == 0)
        return SB__LOG_TEXT;
    return SB_EINVAL;
}

int sb__log_add_secret(const char *s)
{
    if (!s)
        return SB_EINVAL;
    size_t len = strlen(s);
    if (len < SECRET_MIN)
        return SB_EOK;
    int rc = SB_EOK;
    pthread_rwlock_wrlock(&g_conf_lock);
    for (size_t i = 0; i < g_nsecrets; i++)
        if (g_secret_lens[i] == len && memcmp(g_secrets[i], s, len) == 0)
            goto out;
    if (g_nsecrets == g_secrets_cap) {
        size_t cap = g_secrets_cap ? g_secrets_cap * 2 : 8;
        char **ns = sb_realloc(g_secrets, cap * sizeof *ns);
        if (!ns) {
            rc = SB_ENOMEM;
            goto out;
        }
        g_secrets = ns;
        size_t *nl = sb_realloc(g_secret_lens, cap * sizeof *nl);
        if (!nl) {
            rc = SB_ENOMEM;
            goto out;
        }
        g_secret_lens = nl;
        g_secrets_cap = cap;
    }
    char *copy = sb_strndup(s, len);
    if (!copy) {
        rc = SB_ENOMEM;
        goto out;
    }
    g_secrets[g_nsecrets] = copy;
    g_secret_lens[g_nsecrets] = len;
    g_nsecrets++;
out:
    pthread_rwlock_unlock(&g_conf_lock);
    return rc;
}

void sb__log_clear_secrets(void)
{
    pthread_rwlock_wrlock(&g_conf_lock);
    for (size_t i = 0; i < g_nsecrets; i++)
        sb_free(g_secrets[i]);
    sb_free(g_secrets);
    sb_free(g_secret_lens);
    g_secrets = NULL;
    g_secret_lens = NULL;
    g_nsecrets = g_secrets_cap = 0;
    pthread_rwlock_unlock(&g_conf_lock);
}

int sb__log_redact_url(const char *url, char *out, size_t n)
{
    if (!url || !out || n == 0)
        return SB_EINVAL;
    size_t len = strlen(url), from = SIZE_MAX, to = 0;
    const char *sep = strstr(url, "://");
    if (sep) {
        size_t base = (size_t)(sep - url) + 3;
        if (url_password(url + base, len - base, &from, &to)) {
            from += base;
            to += base;
        }
    }
    size_t o = 0;
    int trunc = 0;
    for (size_t i = 0; i < len;) {
        const char *piece = url + i;
        size_t pl = 1;
        if (i == from && from < to) {
            piece = MASK;
            pl = sizeof MASK - 1;
            i = to;
        } else {
            i++;
        }
        if (o + pl >= n) {
            trunc = 1;
            break;
        }
        memcpy(out + o, piece, pl);
        o += pl;
    }
    out[o] = '\0';
    return trunc ? SB_ERANGE : SB_EOK;
}
