/* The topic router: AMQP topic semantics, duplicates, target order, limits, bad patterns,
 * allocation failures, and a randomized cross-check against a naive recursive matcher. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "router.h"

static int T[64]; /* targets are the addresses &T[i] */

/* ---- reference matcher: split the strings, then recurse. -------------------------------- */

#define REF_MAX_WORDS 64

/* "" is zero words; otherwise n dots give n + 1 words (possibly empty). Words are copied. */
static int ref_split(const char *s, size_t len, char w[][64], int maxw)
{
    if (len == 0)
        return 0;
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            assert_true(n < maxw);
            size_t wl = i - start;
            assert_true(wl < 64);
            memcpy(w[n], s + start, wl);
            w[n][wl] = '\0';
            n++;
            start = i + 1;
        }
    }
    return n;
}

static int ref_words(char (*p)[64], int np, char (*k)[64], int nk)
{
    if (np == 0)
        return nk == 0;
    if (strcmp(p[0], "#") == 0) {
        for (int i = 0; i <= nk; i++)
            if (ref_words(p + 1, np - 1, k + i, nk - i))
                return 1;
        return 0;
    }
    if (nk == 0)
        return 0;
    if (strcmp(p[0], "*") == 0 || strcmp(p[0], k[0]) == 0)
        return ref_words(p + 1, np - 1, k + 1, nk - 1);
    return 0;
}

static int ref_match(const char *pattern, const char *key)
{
    char pw[REF_MAX_WORDS][64], kw[REF_MAX_WORDS][64];
    int np = ref_split(pattern, strlen(pattern), pw, REF_MAX_WORDS);
    int nk = ref_split(key, strlen(key), kw, REF_MAX_WORDS);
    return ref_words(pw, np, kw, nk);
}

/* ---- helpers ----------------------------------------------------------------------------- */

static sb__router_t *new_router(void)
{
    sb__router_t *r = NULL;
    assert_int_equal(sb__router_new(&r), SB_EOK);
    assert_non_null(r);
    return r;
}

static void add_ok(sb__router_t *r, const char *pattern, void *target)
{
    char err[256] = "";
    int rc = sb__router_add(r, pattern, target, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("add \"%s\": %s (%s)", pattern, sb_err_name(rc), err);
}

static size_t match(sb__router_t *r, const char *key, void **out, size_t cap)
{
    size_t n = 12345;
    int rc = sb__router_match(r, key, strlen(key), out, cap, &n);
    if (rc != SB_EOK)
        fail_msg("match \"%s\": %s", key, sb_err_name(rc));
    return n;
}

/* Expects exactly the targets listed (indices into T, -1 terminated), in that order. */
static void expect(sb__router_t *r, const char *key, ...)
{
    void *out[64];
    size_t n = match(r, key, out, 32);
    va_list ap;
    va_start(ap, key);
    size_t i = 0;
    for (int t; (t = va_arg(ap, int)) >= 0; i++) {
        if (i >= n)
            fail_msg("key \"%s\": %zu matches, expected more (next T[%d])", key, n, t);
        if (out[i] != &T[t])
            fail_msg("key \"%s\": match %zu is T[%td], expected T[%d]", key, i, (int *)out[i] - T,
                     t);
    }
    va_end(ap);
    if (i != n)
        fail_msg("key \"%s\": %zu matches, expected %zu", key, n, i);
}

/* ---- single-pattern table ---------------------------------------------------------------- */

static const struct {
    const char *pattern, *key;
    int want;
} table[] = {
    /* the empty key is zero words (RabbitMQ) */
    {"", "", 1},
    {"#", "", 1},
    {"#.#", "", 1},
    {"*", "", 0},
    {"", "a", 0},
    {"a.#", "", 0},
    {"#.*", "", 0},
    /* `#` alone */
    {"#", "a", 1},
    {"#", "a.b.c", 1},
    {"#", ".", 1},
    {"#", "DataSyncCompletedEvent", 1},
    /* `#` at the end: zero or more words */
    {"a.#", "a", 1},
    {"a.#", "a.b", 1},
    {"a.#", "a.b.c.d", 1},
    {"a.#", "b", 0},
    {"a.#", "ab", 0},
    {"a.#", "b.a", 0},
    /* `#` at the start */
    {"#.a", "a", 1},
    {"#.a", "x.a", 1},
    {"#.a", "x.y.z.a", 1},
    {"#.a", "a.x", 0},
    {"#.a", "xa", 0},
    /* `#` in the middle */
    {"a.#.b", "a.b", 1},
    {"a.#.b", "a.x.b", 1},
    {"a.#.b", "a.x.y.z.b", 1},
    {"a.#.b", "a.b.b", 1},
    {"a.#.b", "a.b.c", 0},
    {"a.#.b", "a", 0},
    {"a.#.b", "b", 0},
    {"a.#.b.#.c", "a.b.b.c", 1},
    {"a.#.b.#.c", "a.c.b.c", 1},
    {"a.#.b.#.c", "a.c.c", 0},
    {"#.b.#", "b", 1},
    {"#.b.#", "a.b.c", 1},
    {"#.b.#", "a.c", 0},
    /* consecutive `#` */
    {"#.#", "a", 1},
    {"#.#", "a.b.c", 1},
    {"#.#.a", "a", 1},
    {"a.#.#", "a", 1},
    {"a.#.#.b", "a.b", 1},
    {"a.#.#.b", "a.x.y.b", 1},
    {"a.#.#.b", "a.x.y", 0},
    {"#.#.#.#", "x", 1},
    /* `*` with `#` */
    {"*.#.*", "a", 0},
    {"*.#.*", "a.b", 1},
    {"*.#.*", "a.b.c.d", 1},
    {"*.#", "a", 1},
    {"*.#", "a.b", 1},
    {"*.#", "", 0},
    {"#.*", "a", 1},
    {"#.*", "a.b.c", 1},
    {"#.*.#", "a.b.c", 1},
    {"#.*.*", "a", 0},
    {"#.*.*", "a.b", 1},
    /* `*` is exactly one word */
    {"*", "a", 1},
    {"*", "a.b", 0},
    {"*.*", "a", 0},
    {"*.*", "a.b", 1},
    {"*.*", "a.b.c", 0},
    {"*", "DataSyncCompletedEvent", 1},
    /* empty words */
    {"a..b", "a..b", 1},
    {"a.*.b", "a..b", 1},
    {"a.b", "a..b", 0},
    {"a.", "a.", 1},
    {"a.", "a", 0},
    {"a.*", "a.", 1},
    {".a", ".a", 1},
    {"*.a", ".a", 1},
    {"*.*", ".", 1},
    {"*", ".", 0},
    {".", ".", 1},
    {"..", "..", 1},
    {".", "..", 0},
    /* literals: exact, case-sensitive, byte-wise */
    {"a.b.c", "a.b.c", 1},
    {"a.b.c", "a.b", 0},
    {"a.b", "a.b.c", 0},
    {"A", "a", 0},
    {"DataSyncCompletedEvent", "DataSyncCompletedEvent", 1},
    {"DataSyncCompletedEvent", "DataSyncFailedEvent", 0},
    {"DataSyncCompletedEvent", "DataSyncCompletedEven", 0},
    {"caf\xc3\xa9.*", "caf\xc3\xa9.x", 1},
    {"\xff\xfe", "\xff\xfe", 1},
    {"averyveryverylongwordthatspansseveralhashblocks.x",
     "averyveryverylongwordthatspansseveralhashblocks.x", 1},
    {"averyveryverylongwordthatspansseveralhashblocks.x",
     "averyveryverylongwordthatspansseveralhashblockz.x", 0},
};

static void test_table(void **state)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        sb__router_t *r = new_router();
        add_ok(r, table[i].pattern, &T[0]);
        void *out[2] = {NULL, NULL};
        size_t n = match(r, table[i].key, out, 2);
        if ((int)n != table[i].want)
            fail_msg("pattern \"%s\" key \"%s\": %zu matches, expected %d", table[i].pattern,
                     table[i].key, n, table[i].want);
        if (n)
            assert_ptr_equal(out[0], &T[0]);
        /* The reference agrees with the table: it is what the random test trusts. */
        if (ref_match(table[i].pattern, table[i].key) != table[i].want)
            fail_msg("reference disagrees: \"%s\" \"%s\"", table[i].pattern, table[i].key);
        sb__router_destroy(r);
    }
    /* All patterns in one router: each key still gets exactly its own matches. */
    sb__router_t *r = new_router();
    size_t np = sizeof table / sizeof table[0];
    void **targets = calloc(np, sizeof *targets);
    char *ids = calloc(np, 1);
    assert_non_null(targets);
    assert_non_null(ids);
    for (size_t i = 0; i < np; i++)
        add_ok(r, table[i].pattern, &ids[i]);
    for (size_t k = 0; k < np; k++) {
        size_t n = 0, want = 0;
        void *out[sizeof table / sizeof table[0]];
        assert_int_equal(sb__router_match(r, table[k].key, strlen(table[k].key), out, np, &n),
                         SB_EOK);
        for (size_t i = 0; i < np; i++)
            if (ref_match(table[i].pattern, table[k].key)) {
                assert_true(want < n);
                assert_ptr_equal(out[want], &ids[i]);
                want++;
            }
        assert_int_equal(n, want);
    }
    free(targets);
    free(ids);
    sb__router_destroy(r);
}

/* ---- RabbitMQ tutorial 5 ----------------------------------------------------------------- */

static void test_rabbitmq_tutorial(void **state)
{
    /* Q1 binds *.orange.*; Q2 binds *.*.rabbit and lazy.#. */
    sb__router_t *r = new_router();
    add_ok(r, "*.orange.*", &T[1]);
    add_ok(r, "*.*.rabbit", &T[2]);
    add_ok(r, "lazy.#", &T[2]);
    assert_int_equal(sb__router_size(r), 3);
    expect(r, "quick.orange.rabbit", 1, 2, -1);
    expect(r, "lazy.orange.elephant", 1, 2, -1);
    expect(r, "quick.orange.fox", 1, -1);
    expect(r, "lazy.brown.fox", 2, -1);
    expect(r, "lazy.pink.rabbit", 2, -1); /* two bindings, delivered once */
    expect(r, "quick.brown.fox", -1);
    expect(r, "orange", -1);
    expect(r, "quick.orange.new.rabbit", -1);
    expect(r, "lazy.orange.new.rabbit", 2, -1);
    expect(r, "lazy", 2, -1);
    sb__router_destroy(r);
}

/* ---- duplicates, order, output capacity -------------------------------------------------- */

static void test_duplicates_and_order(void **state)
{
    sb__router_t *r = new_router();
    assert_int_equal(sb__router_size(r), 0);
    expect(r, "a", -1);
    add_ok(r, "a.*", &T[3]);
    add_ok(r, "a.*", &T[3]); /* same pair: no-op */
    assert_int_equal(sb__router_size(r), 1);
    add_ok(r, "a.*", &T[1]); /* same pattern, other target */
    add_ok(r, "#", &T[2]);
    add_ok(r, "a.b", &T[1]); /* T[1] again, second pattern */
    add_ok(r, "#.b", &T[3]);
    add_ok(r, "#", &T[2]);
    add_ok(r, "#.#", &T[2]); /* equivalent to "#" but a distinct binding */
    assert_int_equal(sb__router_size(r), 6);
    /* Order is the order in which targets were first added: T3, T1, T2. */
    expect(r, "a.b", 3, 1, 2, -1);
    expect(r, "a.c", 3, 1, 2, -1);
    expect(r, "x.b", 3, 2, -1);
    expect(r, "x", 2, -1);
    expect(r, "", 2, -1);

    /* Output capacity: SB_ERANGE with the full count and the first out_cap written. */
    void *out[3] = {NULL, NULL, NULL};
    size_t n = 0;
    assert_int_equal(sb__router_match(r, "a.b", 3, out, 2, &n), SB_ERANGE);
    assert_int_equal(n, 3);
    assert_ptr_equal(out[0], &T[3]);
    assert_ptr_equal(out[1], &T[1]);
    assert_null(out[2]);
    assert_int_equal(sb__router_match(r, "a.b", 3, NULL, 0, &n), SB_ERANGE);
    assert_int_equal(n, 3);
    assert_int_equal(sb__router_match(r, "a.b", 3, out, 3, &n), SB_EOK);
    assert_int_equal(n, 3);

    /* key_len is honoured: the key need not be NUL-terminated. */
    assert_int_equal(sb__router_match(r, "a.bXYZ", 3, out, 3, &n), SB_EOK);
    assert_int_equal(n, 3);
    assert_int_equal(sb__router_match(r, "x.b.c", 3, out, 3, &n), SB_EOK);
    assert_int_equal(n, 2);
    assert_int_equal(sb__router_match(r, NULL, 0, out, 3, &n), SB_EOK);
    assert_int_equal(n, 1); /* the empty key: "#" and "#.#" */
    assert_int_equal(sb__router_match(r, NULL, 1, out, 3, &n), SB_EINVAL);
    assert_int_equal(n, 0);

    /* Many targets on one node come out sorted (heapsort path) and deduplicated. */
    sb__router_t *big = new_router();
    static char many[1000];
    for (int i = 999; i >= 0; i -= 2)
        add_ok(big, "x.#", &many[i]);
    for (int i = 0; i < 1000; i += 2)
        add_ok(big, "#", &many[i]);
    for (int i = 0; i < 1000; i++)
        add_ok(big, "*", &many[i]);
    assert_int_equal(sb__router_size(big), 2000);
    void *o[1000];
    assert_int_equal(sb__router_match(big, "x", 1, o, 1000, &n), SB_EOK);
    assert_int_equal(n, 1000);
    /* First-added order: odd ones descending, then even ones ascending. */
    for (int i = 0; i < 500; i++) {
        assert_ptr_equal(o[i], &many[999 - 2 * i]);
        assert_ptr_equal(o[500 + i], &many[2 * i]);
    }
    assert_int_equal(sb__router_match(big, "y.z", 3, o, 1000, &n), SB_EOK);
    assert_int_equal(n, 500);
    sb__router_destroy(big);
    sb__router_destroy(r);
}

/* ---- bad patterns and limits ------------------------------------------------------------- */

static void add_bad(sb__router_t *r, const char *pattern, void *target, int want,
                    const char *in_err)
{
    char err[512] = "";
    size_t before = sb__router_size(r);
    int rc = sb__router_add(r, pattern, target, err, sizeof err);
    if (rc != want)
        fail_msg("add \"%.40s\": %s, expected %s", pattern ? pattern : "(null)", sb_err_name(rc),
                 sb_err_name(want));
    if (!strstr(err, in_err))
        fail_msg("add \"%.40s\": error \"%s\" lacks \"%s\"", pattern ? pattern : "(null)", err,
                 in_err);
    assert_int_equal(sb__router_size(r), before);
    /* NULL errstr is fine too. */
    assert_int_equal(sb__router_add(r, pattern, target, NULL, 0), want);
}

static void test_bad_patterns(void **state)
{
    sb__router_t *r = new_router();
    add_ok(r, "a.b", &T[0]);
    add_bad(r, "a*", &T[1], SB_EPARSE, "whole words");
    add_bad(r, "a.b*", &T[1], SB_EPARSE, "word 2 \"b*\"");
    add_bad(r, "#a", &T[1], SB_EPARSE, "whole words");
    add_bad(r, "a.#b.c", &T[1], SB_EPARSE, "\"#b\"");
    add_bad(r, "**", &T[1], SB_EPARSE, "whole words");
    add_bad(r, "##", &T[1], SB_EPARSE, "whole words");
    add_bad(r, "*#", &T[1], SB_EPARSE, "whole words");
    add_bad(r, "Data*Event", &T[1], SB_EPARSE, "whole words");
    add_bad(r, NULL, &T[1], SB_EINVAL, "pattern is NULL");
    add_bad(r, "a", NULL, SB_EINVAL, "target is NULL");
    assert_int_equal(sb__router_add(NULL, "a", &T[1], NULL, 0), SB_EINVAL);

    /* Word and length limits. */
    char p[SB__ROUTER_MAX_PATTERN_LEN + 2];
    size_t len = 0;
    for (int i = 0; i < SB__ROUTER_MAX_WORDS; i++) {
        if (i)
            p[len++] = '.';
        p[len++] = i % 2 ? '*' : 'w';
    }
    p[len] = '\0';
    add_ok(r, p, &T[1]); /* exactly the limit */
    strcpy(p + len, ".w");
    add_bad(r, p, &T[1], SB_ETOOBIG, "more than 256 words");
    memset(p, 'x', SB__ROUTER_MAX_PATTERN_LEN);
    p[SB__ROUTER_MAX_PATTERN_LEN] = '\0';
    add_ok(r, p, &T[2]);
    p[SB__ROUTER_MAX_PATTERN_LEN] = 'x';
    p[SB__ROUTER_MAX_PATTERN_LEN + 1] = '\0';
    add_bad(r, p, &T[2], SB_ETOOBIG, "too long");

    /* A failed add changed nothing. */
    assert_int_equal(sb__router_size(r), 3);
    expect(r, "a.b", 0, -1);
    expect(r, "a", -1);
    sb__router_destroy(r);
    sb__router_destroy(NULL);
}

static void test_key_limits(void **state)
{
    /* 256 words match, 257 are refused, whether the trie still has live states or not. */
    static char key[4 * SB__ROUTER_MAX_WORDS];
    size_t len = 0;
    for (int i = 0; i < SB__ROUTER_MAX_WORDS; i++) {
        if (i)
            key[len++] = '.';
        key[len++] = 'k';
    }
    sb__router_t *r = new_router();
    add_ok(r, "#", &T[0]);
    add_ok(r, "z", &T[1]);
    size_t n = 99;
    void *out[4];
    assert_int_equal(sb__router_match(r, key, len, out, 4, &n), SB_EOK);
    assert_int_equal(n, 1);
    memcpy(key + len, ".k", 2);
    assert_int_equal(sb__router_match(r, key, len + 2, out, 4, &n), SB_ETOOBIG);
    assert_int_equal(n, 0);
    sb__router_destroy(r);

    r = new_router();
    add_ok(r, "z", &T[1]); /* the key dies at its first word */
    assert_int_equal(sb__router_match(r, key, len, out, 4, &n), SB_EOK);
    assert_int_equal(n, 0);
    assert_int_equal(sb__router_match(r, key, len + 2, out, 4, &n), SB_ETOOBIG);
    /* Trailing empty word counts too: 256 words then a dot is 257. */
    memcpy(key + len, ".", 1);
    assert_int_equal(sb__router_match(r, key, len + 1, out, 4, &n), SB_ETOOBIG);
    sb__router_destroy(r);
}

/* Many `#` against a long key: polynomial, not exponential (would not finish otherwise). */
static void test_many_hashes(void **state)
{
    sb__router_t *r = new_router();
    char p[512];
    size_t len = 0;
    for (int i = 0; i < 100; i++) {
        memcpy(p + len, "#.", 2);
        len += 2;
    }
    strcpy(p + len, "x");
    add_ok(r, p, &T[0]);
    add_ok(r, "#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.y", &T[1]);
    static char key[2 * SB__ROUTER_MAX_WORDS];
    len = 0;
    for (int i = 0; i < 200; i++) {
        memcpy(key + len, "k.", 2);
        len += 2;
    }
    key[len] = 'x';
    key[len + 1] = '\0';
    expect(r, key, 0, -1);
    key[len] = 'y';
    expect(r, key, 1, -1);
    key[len] = 'z';
    expect(r, key, -1);
    sb__router_destroy(r);
}

/* ---- allocation failures ----------------------------------------------------------------- */

static long fail_at; /* fail the allocation with this 1-based number; 0: never */
static long n_allocs, live;
static int injected;

static void *fail_malloc(size_t n)
{
    if (++n_allocs == fail_at) {
        injected = 1;
        return NULL;
    }
    void *p = malloc(n);
    if (p)
        live++;
    return p;
}

static void *fail_realloc(void *old, size_t n)
{
    if (++n_allocs == fail_at) {
        injected = 1;
        return NULL;
    }
    void *p = realloc(old, n);
    if (p && !old)
        live++;
    return p;
}

static void fail_free(void *p)
{
    if (p)
        live--;
    free(p);
}

static const char *const sweep_patterns[] = {
    "a.b",
    "a.*",
    "#",
    "a.#.b",
    "*.#.*",
    "DataSyncCompletedEvent",
    "x.y.z",
    "a.b",
    "#.#",
    "q.w.e.r.t.y",
    "",
    "a..b",
    "Svc1.Entity1.*",
    "Svc1.#",
    "Svc2.Entity3.Created",
    "#.a",
    "p1",
    "p2",
    "p3",
    "p4",
    "p5",
    "p6",
    "p7",
    "p8",
    "p9",
    "p10",
    "p11",
    "p12",
    "p13",
    "p14",
    "p15",
    "p16",
    "p17",
    "p18",
    "p19",
    "p20",
    "a.b.c.d.e.f.g.h.i.j.k",
};
#define N_SWEEP (sizeof sweep_patterns / sizeof sweep_patterns[0])

static const char *const sweep_keys[] = {"a.b",
                                         "a",
                                         "",
                                         "a.x.b",
                                         "x.y.z",
                                         "p7",
                                         "Svc1.Entity1.Updated",
                                         "a..b",
                                         "q.w.e.r.t.y",
                                         "z.a",
                                         "DataSyncCompletedEvent"};

static void test_alloc_failures(void **state)
{
    int finished = 0;
    for (fail_at = 1; !finished; fail_at++) {
        n_allocs = live = 0;
        injected = 0;
        assert_int_equal(sb_set_allocator(fail_malloc, fail_realloc, fail_free), SB_EOK);
        sb__router_t *r = NULL;
        int rc = sb__router_new(&r);
        if (rc != SB_EOK) {
            assert_int_equal(rc, SB_ENOMEM);
            assert_null(r);
            assert_int_equal(live, 0);
            continue;
        }
        /* Which adds went through; each target i is pattern i's (T index i % 8). */
        int ok[N_SWEEP];
        size_t want_size = 0;
        for (size_t i = 0; i < N_SWEEP; i++) {
            char err[128] = "";
            size_t before = sb__router_size(r);
            rc = sb__router_add(r, sweep_patterns[i], &T[i % 8], err, sizeof err);
            if (rc == SB_EOK) {
                ok[i] = 1;
                if (sb__router_size(r) != before)
                    want_size++;
            } else {
                if (rc != SB_ENOMEM)
                    fail_msg("fail_at %ld, add \"%s\": %s", fail_at, sweep_patterns[i],
                             sb_err_name(rc));
                assert_true(strstr(err, "out of memory") != NULL);
                assert_int_equal(sb__router_size(r), before);
                ok[i] = 0;
            }
        }
        finished = !injected;
        assert_int_equal(sb__router_size(r), want_size);
        /* Matching never allocates, and agrees with the successful adds only. */
        long allocs_before = n_allocs;
        for (size_t k = 0; k < sizeof sweep_keys / sizeof sweep_keys[0]; k++) {
            void *out[16];
            size_t n;
            assert_int_equal(sb__router_match(r, sweep_keys[k], strlen(sweep_keys[k]), out, 16, &n),
                             SB_EOK);
            /* Expected: targets in first-successful-add order. */
            void *want[16];
            size_t nw = 0;
            void *seen[16];
            size_t nseen = 0;
            for (size_t i = 0; i < N_SWEEP; i++) {
                if (!ok[i])
                    continue;
                void *t = &T[i % 8];
                size_t j = 0;
                while (j < nseen && seen[j] != t)
                    j++;
                if (j == nseen)
                    seen[nseen++] = t;
            }
            for (size_t j = 0; j < nseen; j++)
                for (size_t i = 0; i < N_SWEEP; i++)
                    if (ok[i] && &T[i % 8] == seen[j] &&
                        ref_match(sweep_patterns[i], sweep_keys[k])) {
                        want[nw++] = seen[j];
                        break;
                    }
            assert_int_equal(n, nw);
            for (size_t j = 0; j < n; j++)
                assert_ptr_equal(out[j], want[j]);
        }
        assert_int_equal(n_allocs, allocs_before);
        sb__router_destroy(r);
        assert_int_equal(live, 0);
    }
    assert_true(fail_at > 20); /* the sweep really went through many allocations */
    assert_int_equal(sb_set_allocator(NULL, NULL, NULL), SB_EOK);
}

/* ---- randomized cross-check -------------------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static void random_words(char *buf, int with_wild)
{
    static const char *const lit[] = {"a", "b", "c", "", "dd"};
    int nw = (int)rnd(6);
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < nw; i++) {
        const char *w;
        uint32_t x = rnd(with_wild ? 8 : 5);
        w = x < 5 ? lit[x] : x < 7 ? "#" : "*";
        if (i)
            buf[len++] = '.';
        size_t wl = strlen(w);
        memcpy(buf + len, w, wl);
        len += wl;
    }
    buf[len] = '\0';
}

static void test_random_cross_check(void **state)
{
    enum { ROUTERS = 60, PATTERNS = 40, KEYS = 200, NT = 12 };
    rng_state = 0x2545f4914f6cdd1dULL;
    long checked = 0, matched = 0;
    for (int round = 0; round < ROUTERS; round++) {
        sb__router_t *r = new_router();
        char pats[PATTERNS][64];
        int tgt[PATTERNS];
        int order[NT], norder = 0;
        for (int i = 0; i < PATTERNS; i++) {
            random_words(pats[i], 1);
            tgt[i] = (int)rnd(NT);
            add_ok(r, pats[i], &T[tgt[i]]);
            int j = 0;
            while (j < norder && order[j] != tgt[i])
                j++;
            if (j == norder)
                order[norder++] = tgt[i];
        }
        for (int k = 0; k < KEYS; k++) {
            char key[64];
            random_words(key, 0);
            void *out[NT];
            size_t n = 0;
            assert_int_equal(sb__router_match(r, key, strlen(key), out, NT, &n), SB_EOK);
            size_t nw = 0;
            for (int j = 0; j < norder; j++) {
                int hit = 0;
                for (int i = 0; i < PATTERNS && !hit; i++)
                    hit = tgt[i] == order[j] && ref_match(pats[i], key);
                if (!hit)
                    continue;
                if (nw >= n || out[nw] != &T[order[j]])
                    fail_msg("round %d key \"%s\": target T[%d] missing or misplaced at %zu", round,
                             key, order[j], nw);
                nw++;
            }
            if (nw != n)
                fail_msg("round %d key \"%s\": %zu matches, reference %zu", round, key, n, nw);
            checked++;
            matched += n > 0;
        }
        sb__router_destroy(r);
    }
    assert_int_equal(checked, ROUTERS * KEYS);
    assert_true(matched > checked / 10); /* the alphabet is small enough to hit often */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_rabbitmq_tutorial),
        cmocka_unit_test(test_duplicates_and_order),
        cmocka_unit_test(test_bad_patterns),
        cmocka_unit_test(test_key_limits),
        cmocka_unit_test(test_many_hashes),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_random_cross_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
