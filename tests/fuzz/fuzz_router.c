/* Fuzz target: the topic router, cross-checked against a dynamic-programming reference.
 *
 * Input: lines. A line starting with '?' is a key (the rest of the line, any bytes); any other
 * line is a binding whose first byte picks one of 8 targets and whose rest is the pattern.
 * Every add must succeed exactly when the pattern is valid; every match must return the
 * reference's targets, deduplicated, in first-successful-add order; the size must count
 * distinct (pattern, target) pairs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchboard/error.h"
#include "router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_LINES 256
#define N_TARGETS 8

static char targets[N_TARGETS];

struct span {
    const char *p;
    size_t len;
};

/* "" is zero words, else n dots make n + 1 words. Returns -1 past `max` words. */
static int split(const char *s, size_t len, struct span *w, int max)
{
    if (len == 0)
        return 0;
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (n == max)
                return -1;
            w[n].p = s + start;
            w[n].len = i - start;
            n++;
            start = i + 1;
        }
    }
    return n;
}

static int valid_pattern(const char *p)
{
    static struct span w[SB__ROUTER_MAX_WORDS];
    size_t len = strlen(p);
    if (len > SB__ROUTER_MAX_PATTERN_LEN)
        return 0;
    int n = split(p, len, w, SB__ROUTER_MAX_WORDS);
    if (n < 0)
        return 0;
    for (int i = 0; i < n; i++)
        if (w[i].len > 1 && (memchr(w[i].p, '*', w[i].len) || memchr(w[i].p, '#', w[i].len)))
            return 0;
    return 1;
}

/* Does pattern p match key k? O(words(p) x words(k)), two rolling rows. */
static int ref_match(const char *p, const char *k, size_t klen)
{
    static struct span pw[SB__ROUTER_MAX_WORDS], kw[SB__ROUTER_MAX_WORDS];
    static unsigned char prev[SB__ROUTER_MAX_WORDS + 1], row[SB__ROUTER_MAX_WORDS + 1];
    int np = split(p, strlen(p), pw, SB__ROUTER_MAX_WORDS);
    int nk = split(k, klen, kw, SB__ROUTER_MAX_WORDS);
    if (np < 0 || nk < 0)
        abort();
    memset(prev, 0, (size_t)nk + 1);
    prev[0] = 1; /* the empty pattern prefix matches the empty key prefix */
    for (int i = 0; i < np; i++) {
        int hash = pw[i].len == 1 && pw[i].p[0] == '#';
        int star = pw[i].len == 1 && pw[i].p[0] == '*';
        for (int j = 0; j <= nk; j++) {
            if (hash)
                row[j] = prev[j] || (j > 0 && row[j - 1]);
            else if (j == 0)
                row[j] = 0;
            else
                row[j] = prev[j - 1] && (star || (pw[i].len == kw[j - 1].len &&
                                                  memcmp(pw[i].p, kw[j - 1].p, pw[i].len) == 0));
        }
        memcpy(prev, row, (size_t)nk + 1);
    }
    return prev[nk];
}

static int count_words(const char *k, size_t len)
{
    if (!len)
        return 0;
    int n = 1;
    for (size_t i = 0; i < len; i++)
        n += k[i] == '.';
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';

    sb__router_t *r = NULL;
    if (sb__router_new(&r) != SB_EOK)
        abort();
    /* Successful adds, in order. */
    const char *pat[MAX_LINES];
    int tgt[MAX_LINES];
    int n_ok = 0;
    size_t distinct = 0;
    int order[N_TARGETS], n_order = 0;

    char *line = buf, *end = buf + size;
    for (int lines = 0; line < end && lines < MAX_LINES; lines++) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        char *le = nl ? nl : end;
        *le = '\0';
        if (line[0] == '?') {
            const char *key = line + 1;
            size_t klen = (size_t)(le - key); /* may hold NULs: matched as bytes */
            void *out[N_TARGETS];
            size_t n = 99;
            int rc = sb__router_match(r, key, klen, out, N_TARGETS, &n);
            if (count_words(key, klen) > SB__ROUTER_MAX_WORDS) {
                if (rc != SB_ETOOBIG || n != 0)
                    abort();
            } else {
                if (rc != SB_EOK)
                    abort();
                size_t want = 0;
                for (int j = 0; j < n_order; j++) {
                    int hit = 0;
                    for (int i = 0; i < n_ok && !hit; i++)
                        hit = tgt[i] == order[j] && ref_match(pat[i], key, klen);
                    if (!hit)
                        continue;
                    if (want >= n || out[want] != &targets[order[j]])
                        abort();
                    want++;
                }
                if (want != n)
                    abort();
                /* A short output array: same count, SB_ERANGE, first target first. */
                void *one[1];
                size_t n1 = 0;
                rc = sb__router_match(r, key, klen, one, 1, &n1);
                if (n1 != n || rc != (n > 1 ? SB_ERANGE : SB_EOK) || (n && one[0] != out[0]))
                    abort();
            }
        } else if (line < le) {
            int t = (unsigned char)line[0] % N_TARGETS;
            const char *p = line + 1;
            char err[128];
            int rc = sb__router_add(r, p, &targets[t], err, sizeof err);
            if (valid_pattern(p) != (rc == SB_EOK))
                abort();
            if (rc == SB_EOK) {
                int dup = 0;
                for (int i = 0; i < n_ok && !dup; i++)
                    dup = tgt[i] == t && strcmp(pat[i], p) == 0;
                distinct += !dup;
                pat[n_ok] = p;
                tgt[n_ok++] = t;
                int j = 0;
                while (j < n_order && order[j] != t)
                    j++;
                if (j == n_order)
                    order[n_order++] = t;
            } else if (rc != SB_EPARSE && rc != SB_ETOOBIG) {
                abort();
            }
            if (sb__router_size(r) != distinct)
                abort();
        }
        line = le + 1;
    }
    sb__router_destroy(r);
    free(buf);
    return 0;
}
