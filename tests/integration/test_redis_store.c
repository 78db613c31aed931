/* test_redis_store.c: the Redis idempotency store (store_redis.c) against real Redis.
 *
 * - URL parsing (redis://, unix://, user, password, IPv6, database; bad URLs).
 * - claim / complete / release / extend results with two stores of different owners (two
 *   consumers), on the shared Redis with this run's own key prefix (removed at the end).
 * - Lease expiry; a complete within a certain lease is SET XX, else the script; NOSCRIPT
 *   recovery after SCRIPT FLUSH, 10,000 pipelined claims (ops/s
 *   printed), the bound on outstanding commands.
 * - A private redis-server (requirepass, unix socket, ACL user): missing or wrong
 *   password gives a clear error and no availability; the right one, the socket URL with
 *   ?db= and an ACL user work.
 * - Redis refusing writes (OOM, READONLY) is an outage: refused completes are replayed,
 *   never taken for done; reconnects wait for a write probe to pass.
 * - Through a pipeline (memory transport, Redis store, record ledger): a duplicate delivery
 *   is skipped; an event claimed by a consumer that "crashed" (claimed, never completed) is
 *   handled once by this consumer after the lease expires; a blocking handler that runs 3 s
 *   with a 1 s lease keeps its claim (renewed while it runs), then marks it done.
 * The outage behaviour is in tests/fault/test_redis_outage.c. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "switchboard/error.h"
#include "config.h"
#include "log.h"
#include "pipeline.h"
#include "runtime.h"
#include "store_redis.h"
#include "transport_memory.h"

#include "redis_testsrv.h"
#include "sbtest.h"

static sb__runtime_t *rt;
static struct event_base *base;
static const char *redis_url;
static char *prefix; /* this run's key prefix on the shared Redis */

/* ---- loop and results ----------------------------------------------------------------- */

static bool run_until(bool (*pred)(void *), void *ud, int ms)
{
    uint64_t end = sbt_now_ms() + (uint64_t)ms;
    while (!pred(ud)) {
        if (sbt_now_ms() > end)
            return false;
        event_base_loop(base, EVLOOP_ONCE); /* the store's watchdog wakes it regularly */
    }
    return true;
}

typedef struct res {
    int n;
    int last;
} res_t;

static void claim_cb(void *arg, sb__claim_result_t r)
{
    res_t *x = arg;
    x->n++;
    x->last = (int)r;
}

static void done_cb(void *arg, int status)
{
    res_t *x = arg;
    x->n++;
    x->last = status;
}

static bool res_answered(void *ud)
{
    return ((res_t *)ud)->n > 0;
}

static int claim(sb__store_t *s, const char *key, uint64_t lease)
{
    res_t x = {0, -1};
    SBT_CHECK(s->ops->claim(s, key, lease, claim_cb, &x) == SB_EOK);
    SBT_CHECK_MSG(run_until(res_answered, &x, 5000), "claim %s not answered", key);
    SBT_CHECK(x.n == 1);
    return x.last;
}

static int op(sb__store_t *s, const char *what, const char *key, uint64_t ms)
{
    res_t x = {0, 1};
    int rc = !strcmp(what, "complete")  ? s->ops->complete(s, key, ms, done_cb, &x)
             : !strcmp(what, "release") ? s->ops->release(s, key, done_cb, &x)
                                        : s->ops->extend(s, key, ms, done_cb, &x);
    SBT_CHECK(rc == SB_EOK);
    SBT_CHECK_MSG(run_until(res_answered, &x, 5000), "%s %s not answered", what, key);
    return x.last;
}

static bool store_up(void *ud)
{
    sb__store_t *s = ud;
    return s->ops->available(s);
}

static sb__store_t *new_store(const char *url, const char *password, const char *owner)
{
    sb__redis_store_opts_t o = {.url = url, .password = password, .owner = owner};
    sb__store_t *s = NULL;
    char err[256] = "";
    int rc = sb__store_redis_new(rt, &o, &s, err, sizeof err);
    SBT_CHECK_MSG(rc == SB_EOK, "store: %s", err);
    return s;
}

static sb__store_t *connected_store(const char *owner)
{
    sb__store_t *s = new_store(redis_url, NULL, owner);
    SBT_CHECK_MSG(run_until(store_up, s, 5000), "not connected: %s", sb__store_redis_last_error(s));
    return s;
}

static char *key(const char *name)
{
    char *k = malloc(strlen(prefix) + strlen(name) + 1);
    SBT_CHECK(k);
    sprintf(k, "%s%s", prefix, name);
    return k;
}

static redisContext *sync_connect(const char *url)
{
    sb__redis_url_t u;
    SBT_CHECK(sb__redis_url_parse(url, &u, NULL, 0) == SB_EOK);
    redisContext *c = u.is_unix ? redisConnectUnix(u.path) : redisConnect(u.host, u.port);
    SBT_CHECK_MSG(c && !c->err, "sync connect to %s failed", url);
    if (u.password[0]) {
        redisReply *r = redisCommand(c, "AUTH %s", u.password);
        SBT_CHECK(r && r->type != REDIS_REPLY_ERROR);
        freeReplyObject(r);
    }
    if (u.db) {
        redisReply *r = redisCommand(c, "SELECT %d", u.db);
        SBT_CHECK(r && r->type != REDIS_REPLY_ERROR);
        freeReplyObject(r);
    }
    return c;
}

/* Deletes every key under this run's prefix from the shared Redis. */
static void cleanup_keys(void)
{
    redisContext *c = sync_connect(redis_url);
    char cursor[32] = "0";
    size_t deleted = 0;
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s* COUNT 1000", cursor, prefix);
        SBT_CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            redisReply *d = redisCommand(c, "UNLINK %s", r->element[1]->element[i]->str);
            freeReplyObject(d);
            deleted++;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
    printf("cleanup: %zu keys under %s removed\n", deleted, prefix);
}

/* ---- URL parsing ---------------------------------------------------------------------- */

static void test_url(void)
{
    sb__redis_url_t u;
    char err[256];
    SBT_CHECK(sb__redis_url_parse("redis://127.0.0.1:6379/0", &u, err, sizeof err) == SB_EOK);
    SBT_CHECK(!u.is_unix && !strcmp(u.host, "127.0.0.1") && u.port == 6379 && u.db == 0 &&
              !u.password[0] && !u.user[0]);
    SBT_CHECK(sb__redis_url_parse("redis://:s3cret@redis.local:1234/3", &u, err, sizeof err) ==
              SB_EOK);
    SBT_CHECK(!strcmp(u.host, "redis.local") && u.port == 1234 && u.db == 3 &&
              !strcmp(u.password, "s3cret") && !u.user[0]);
    SBT_CHECK(sb__redis_url_parse("redis://app:p%40ss:w@h", &u, err, sizeof err) == SB_EOK);
    SBT_CHECK(!strcmp(u.user, "app") && !strcmp(u.password, "p@ss:w") && u.port == 6379 &&
              !strcmp(u.host, "h"));
    SBT_CHECK(sb__redis_url_parse("redis://[::1]:6380/2", &u, err, sizeof err) == SB_EOK);
    SBT_CHECK(!strcmp(u.host, "::1") && u.port == 6380 && u.db == 2);
    SBT_CHECK(sb__redis_url_parse("redis://h/", &u, err, sizeof err) == SB_EOK && u.db == 0);
    SBT_CHECK(sb__redis_url_parse("unix:///run/redis/redis.sock?db=5", &u, err, sizeof err) ==
              SB_EOK);
    SBT_CHECK(u.is_unix && !strcmp(u.path, "/run/redis/redis.sock") && u.db == 5);
    SBT_CHECK(sb__redis_url_parse("unix://u:pw@/tmp/r.sock", &u, err, sizeof err) == SB_EOK);
    SBT_CHECK(u.is_unix && !strcmp(u.path, "/tmp/r.sock") && !strcmp(u.user, "u") &&
              !strcmp(u.password, "pw"));
    const char *bad[] = {"http://h",
                         "redis://",
                         "redis://h:0",
                         "redis://h:99999",
                         "redis://h/abc",
                         "rediss://h",
                         "unix://relative",
                         "redis://h?db=1",
                         "unix:///s?x=1",
                         "redis://[::1",
                         "redis://u:p%zz@h",
                         "redis://h:12x",
                         NULL};
    for (int i = 0; bad[i]; i++) {
        err[0] = '\0';
        int rc = sb__redis_url_parse(bad[i], &u, err, sizeof err);
        SBT_CHECK_MSG(rc == SB_ECONFIG && err[0], "\"%s\" accepted (rc %d)", bad[i], rc);
    }
    SBT_CHECK(sb__redis_url_parse("redis://u:topsecret@h:bad", &u, err, sizeof err) == SB_ECONFIG);
    SBT_CHECK(!strstr(err, "topsecret"));
    SBT_CHECK(sb__redis_url_parse("rediss://h", &u, err, sizeof err) == SB_ECONFIG &&
              strstr(err, "TLS"));
    printf("url parsing: ok\n");
}

/* ---- semantics ------------------------------------------------------------------------ */

static void test_semantics(void)
{
    sb__store_t *a = connected_store("consumer-a");
    sb__store_t *b = connected_store("consumer-b");
    SBT_CHECK(!strcmp(sb__store_redis_owner(a), "consumer-a"));
    char *k1 = key("sem:1"), *k2 = key("sem:2");

    SBT_CHECK(claim(a, k1, 30000) == SB__CLAIM_OWNED);
    SBT_CHECK(claim(b, k1, 30000) == SB__CLAIM_BUSY); /* held by another owner */
    /* A second copy of the event in this process while the first is still running. */
    SBT_CHECK(claim(a, k1, 30000) == SB__CLAIM_BUSY);
    sb__redis_store_stats_t st;
    sb__store_redis_stats(a, &st);
    SBT_CHECK(st.local_busy == 1);
    SBT_CHECK(op(b, "complete", k1, 60000) == SB_ESTATE); /* not b's */
    SBT_CHECK(op(a, "complete", k1, 60000) == SB_EOK);
    SBT_CHECK(claim(b, k1, 30000) == SB__CLAIM_DONE);
    SBT_CHECK(claim(a, k1, 30000) == SB__CLAIM_DONE);

    SBT_CHECK(claim(a, k2, 30000) == SB__CLAIM_OWNED);
    SBT_CHECK(op(b, "release", k2, 0) == SB_ESTATE);
    SBT_CHECK(op(b, "extend", k2, 30000) == SB_ESTATE);
    SBT_CHECK(op(a, "extend", k2, 45000) == SB_EOK);
    redisContext *c = sync_connect(redis_url);
    redisReply *r = redisCommand(c, "PTTL %s", k2);
    SBT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer > 30000 && r->integer <= 45000);
    freeReplyObject(r);
    r = redisCommand(c, "GET %s", k2);
    SBT_CHECK(r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, "inprogress:consumer-a"));
    freeReplyObject(r);
    SBT_CHECK(op(a, "release", k2, 0) == SB_EOK); /* after a retryable failure */
    SBT_CHECK(claim(b, k2, 30000) == SB__CLAIM_OWNED);
    SBT_CHECK(op(a, "complete", k2, 60000) == SB_ESTATE); /* b's now */
    SBT_CHECK(op(b, "complete", k2, 60000) == SB_EOK);
    r = redisCommand(c, "GET %s", k2);
    SBT_CHECK(r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, "done"));
    freeReplyObject(r);
    r = redisCommand(c, "PTTL %s", k2);
    SBT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer > 50000 && r->integer <= 60000);
    freeReplyObject(r);

    /* Our own leftover lease (e.g. a release that never arrived) is ours again. */
    char *k3 = key("sem:3");
    r = redisCommand(c, "SET %s inprogress:consumer-a PX 30000", k3);
    freeReplyObject(r);
    SBT_CHECK(claim(a, k3, 30000) == SB__CLAIM_OWNED);
    SBT_CHECK(claim(b, k3, 30000) == SB__CLAIM_BUSY);
    SBT_CHECK(op(a, "complete", k3, 60000) == SB_EOK);

    /* Complete of an absent key (lease expired, Redis lost it): remembered as done. */
    char *k4 = key("sem:4");
    SBT_CHECK(op(a, "complete", k4, 60000) == SB_EOK);
    SBT_CHECK(claim(b, k4, 30000) == SB__CLAIM_DONE);

    redisFree(c);
    free(k1);
    free(k2);
    free(k3);
    free(k4);
    a->ops->destroy(a);
    b->ops->destroy(b);
    printf("semantics (owned/done/busy, release, extend, complete rules): ok\n");
}

static char *get_str(redisContext *c, const char *k)
{
    redisReply *r = redisCommand(c, "GET %s", k);
    SBT_CHECK(r);
    char *v = strdup(r->type == REDIS_REPLY_STRING ? r->str : "(nil)");
    freeReplyObject(r);
    return v;
}

static uint64_t fast_completes(sb__store_t *s)
{
    sb__redis_store_stats_t st;
    sb__store_redis_stats(s, &st);
    return st.fast_completes;
}

/* A complete while our lease certainly runs is the native SET key done XX PX ttl; once
 * that is not certain (near the lease's end, after it, the key gone) the owner-checking
 * script decides, with the same results. */
static void test_fast_complete(void)
{
    sb__store_t *a = connected_store("fast-a");
    sb__store_t *b = connected_store("fast-b");
    redisContext *c = sync_connect(redis_url);
    char *k1 = key("fast:1"), *k2 = key("fast:2"), *k3 = key("fast:3"), *k4 = key("fast:4"),
         *k5 = key("fast:5");

    /* Within the lease: the fast path, "done" with the done TTL. */
    SBT_CHECK(claim(a, k1, 30000) == SB__CLAIM_OWNED);
    SBT_CHECK(op(a, "complete", k1, 60000) == SB_EOK);
    SBT_CHECK(fast_completes(a) == 1);
    char *v = get_str(c, k1);
    SBT_CHECK_MSG(!strcmp(v, "done"), "k1 = %s", v);
    free(v);
    redisReply *r = redisCommand(c, "PTTL %s", k1);
    SBT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer > 50000 && r->integer <= 60000);
    freeReplyObject(r);
    SBT_CHECK(claim(b, k1, 30000) == SB__CLAIM_DONE);

    /* The key vanished under a running lease (deleted, evicted): XX does not write, the
     * script remembers the event as done. */
    SBT_CHECK(claim(a, k2, 30000) == SB__CLAIM_OWNED);
    r = redisCommand(c, "DEL %s", k2);
    freeReplyObject(r);
    SBT_CHECK(op(a, "complete", k2, 60000) == SB_EOK);
    SBT_CHECK(fast_completes(a) == 1);
    v = get_str(c, k2);
    SBT_CHECK_MSG(!strcmp(v, "done"), "k2 = %s", v);
    free(v);

    /* Past the certain part of a 300 ms lease (until 200 ms): the script. */
    SBT_CHECK(claim(a, k3, 300) == SB__CLAIM_OWNED);
    usleep(250 * 1000);
    SBT_CHECK(op(a, "complete", k3, 60000) == SB_EOK);
    SBT_CHECK(fast_completes(a) == 1);

    /* The lease ran out and b took the key: the script refuses a's complete, b's holds. */
    SBT_CHECK(claim(a, k4, 300) == SB__CLAIM_OWNED);
    usleep(400 * 1000);
    SBT_CHECK(claim(b, k4, 30000) == SB__CLAIM_OWNED);
    SBT_CHECK(op(a, "complete", k4, 60000) == SB_ESTATE);
    SBT_CHECK(fast_completes(a) == 1);
    v = get_str(c, k4);
    SBT_CHECK_MSG(!strcmp(v, "inprogress:fast-b"), "k4 = %s", v);
    free(v);
    SBT_CHECK(op(b, "complete", k4, 60000) == SB_EOK);
    SBT_CHECK(fast_completes(b) == 1);

    /* An extend makes the lease certain again: past the claim's 1 s but within the
     * extension, the fast path. */
    SBT_CHECK(claim(a, k5, 1000) == SB__CLAIM_OWNED);
    SBT_CHECK(op(a, "extend", k5, 60000) == SB_EOK);
    usleep(1000 * 1000);
    SBT_CHECK(op(a, "complete", k5, 60000) == SB_EOK);
    SBT_CHECK(fast_completes(a) == 2);
    v = get_str(c, k5);
    SBT_CHECK_MSG(!strcmp(v, "done"), "k5 = %s", v);
    free(v);

    redisFree(c);
    free(k1);
    free(k2);
    free(k3);
    free(k4);
    free(k5);
    a->ops->destroy(a);
    b->ops->destroy(b);
    printf("complete within a certain lease: SET XX (2 of 5); near or past it, or the key "
           "gone: the owner-checking script: ok\n");
}

typedef struct expiry {
    sb__store_t *s;
    const char *key;
    res_t x;
    bool sent;
    int busy_seen;
} expiry_t;

static bool owned_after_expiry(void *ud)
{
    expiry_t *e = ud;
    if (e->sent && e->x.n == 0)
        return false;
    if (e->sent) {
        if (e->x.last == SB__CLAIM_OWNED)
            return true;
        SBT_CHECK(e->x.last == SB__CLAIM_BUSY);
        e->busy_seen++;
        usleep(50 * 1000);
    }
    e->x = (res_t){0, -1};
    e->sent = true;
    SBT_CHECK(e->s->ops->claim(e->s, e->key, 30000, claim_cb, &e->x) == SB_EOK);
    return false;
}

static void test_lease_expiry(void)
{
    sb__store_t *a = connected_store("crashy-a");
    sb__store_t *b = connected_store("survivor-b");
    char *k = key("lease:1");
    uint64_t t0 = sbt_now_ms();
    SBT_CHECK(claim(a, k, 700) == SB__CLAIM_OWNED);
    /* a never completes (it "crashed"); b polls until the lease is gone. */
    expiry_t e = {.s = b, .key = k};
    SBT_CHECK(run_until(owned_after_expiry, &e, 5000));
    uint64_t took = sbt_now_ms() - t0;
    SBT_CHECK_MSG(e.busy_seen >= 1 && took >= 600, "owned after %llu ms, busy %d times",
                  (unsigned long long)took, e.busy_seen);
    printf("lease expiry: b owned the key after %llu ms (lease 700 ms, %d busy answers)\n",
           (unsigned long long)took, e.busy_seen);
    free(k);
    a->ops->destroy(a);
    b->ops->destroy(b);
}

static void test_noscript(void)
{
    sb__store_t *a = connected_store("noscript-a");
    redisContext *c = sync_connect(redis_url);
    redisReply *r = redisCommand(c, "SCRIPT FLUSH");
    SBT_CHECK(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    char *k = key("noscript:1");
    SBT_CHECK(claim(a, k, 30000) == SB__CLAIM_OWNED);
    SBT_CHECK(op(a, "complete", k, 60000) == SB_EOK);
    SBT_CHECK(claim(a, k, 30000) == SB__CLAIM_DONE);
    sb__redis_store_stats_t st;
    sb__store_redis_stats(a, &st);
    SBT_CHECK_MSG(st.noscript >= 1, "no NOSCRIPT seen (%llu)", (unsigned long long)st.noscript);
    /* Flush again between two pipelined calls: every call still answers correctly. */
    r = redisCommand(c, "SCRIPT FLUSH");
    freeReplyObject(r);
    redisFree(c);
    printf("NOSCRIPT recovery: ok (%llu NOSCRIPT replies re-sent as EVAL)\n",
           (unsigned long long)st.noscript);
    free(k);
    a->ops->destroy(a);
}

/* A store that is down answers a renewal (extend) at once with an error and no callback,
 * so the dispatcher does not count a renewal that was never sent; complete and claim
 * still answer through their callbacks. */
static void test_down_answers(void)
{
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", sbt_free_port());
    sb__store_t *s = new_store(url, NULL, "down");
    char *k = key("down:1");
    res_t x = {0, -1};
    SBT_CHECK(s->ops->extend(s, k, 30000, done_cb, &x) == SB_EUNAVAILABLE);
    SBT_CHECK(s->ops->claim(s, k, 30000, claim_cb, &x) == SB_EOK);
    SBT_CHECK(x.n == 1 && x.last == SB__CLAIM_ERROR); /* the extend called nothing */
    printf("down: extend refused at once (no callback), claim answered ERROR: ok\n");
    free(k);
    s->ops->destroy(s);
}

typedef struct bulk {
    size_t want, n, owned, errors;
} bulk_t;

static void bulk_claim_cb(void *arg, sb__claim_result_t r)
{
    bulk_t *b = arg;
    b->n++;
    b->owned += r == SB__CLAIM_OWNED;
    b->errors += r == SB__CLAIM_ERROR;
}

static void bulk_done_cb(void *arg, int status)
{
    bulk_t *b = arg;
    b->n++;
    b->owned += status == SB_EOK;
}

static bool bulk_done(void *ud)
{
    bulk_t *b = ud;
    return b->n >= b->want;
}

static void test_pipelining(void)
{
    enum { N = 10000 };
    sb__store_t *a = connected_store("bulk-a");
    char **keys = calloc(N, sizeof *keys);
    SBT_CHECK(keys);
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "bulk:%d", i);
        keys[i] = key(name);
    }
    bulk_t b = {.want = N};
    uint64_t t0 = sbt_now_ms();
    for (int i = 0; i < N; i++) /* none waits for the one before */
        SBT_CHECK(a->ops->claim(a, keys[i], 60000, bulk_claim_cb, &b) == SB_EOK);
    SBT_CHECK(b.n == 0); /* nothing answered before the loop ran: all in flight at once */
    sb__redis_store_stats_t st;
    sb__store_redis_stats(a, &st);
    SBT_CHECK(st.outstanding == N);
    SBT_CHECK(run_until(bulk_done, &b, 20000));
    uint64_t t_claim = sbt_now_ms() - t0;
    SBT_CHECK_MSG(b.owned == N, "owned %zu of %d (errors %zu)", b.owned, N, b.errors);
    bulk_t d = {.want = N};
    t0 = sbt_now_ms();
    for (int i = 0; i < N; i++)
        SBT_CHECK(a->ops->complete(a, keys[i], 60000, bulk_done_cb, &d) == SB_EOK);
    SBT_CHECK(run_until(bulk_done, &d, 20000));
    uint64_t t_done = sbt_now_ms() - t0;
    SBT_CHECK(d.owned == N);
    printf("pipelining: %d claims in %llu ms (%.0f ops/s), %d completes in %llu ms (%.0f ops/s)\n",
           N, (unsigned long long)t_claim, N * 1000.0 / (double)(t_claim ? t_claim : 1), N,
           (unsigned long long)t_done, N * 1000.0 / (double)(t_done ? t_done : 1));

    /* The bound: a store allowing 100 outstanding answers the rest at once. */
    sb__redis_store_opts_t o = {.url = redis_url, .owner = "bounded", .max_outstanding = 100};
    sb__store_t *small = NULL;
    SBT_CHECK(sb__store_redis_new(rt, &o, &small, NULL, 0) == SB_EOK);
    SBT_CHECK(run_until(store_up, small, 5000));
    bulk_t c = {.want = 1000};
    for (int i = 0; i < 1000; i++) {
        char name[32];
        snprintf(name, sizeof name, "bounded:%d", i);
        char *k = key(name);
        SBT_CHECK(small->ops->claim(small, k, 60000, bulk_claim_cb, &c) == SB_EOK);
        free(k);
    }
    SBT_CHECK(c.errors == 900 && c.n == 900); /* answered at once, before any reply */
    SBT_CHECK(run_until(bulk_done, &c, 10000));
    SBT_CHECK(c.owned == 100);
    printf("outstanding bound: 100 in flight, 900 refused at once: ok\n");
    small->ops->destroy(small);
    for (int i = 0; i < N; i++)
        free(keys[i]);
    free(keys);
    a->ops->destroy(a);
}

/* ---- completes across a lost connection -------------------------------------------------- */

static bool disconnected(void *ud)
{
    sb__redis_store_stats_t st;
    sb__store_redis_stats(ud, &st);
    return st.disconnects > 0;
}

/* A private redis-server for a test that changes it (kills clients, its configuration);
 * false (printed as skipped) when redis-server is not installed. */
static bool own_server(const char *what, testsrv_t *srv, char *url, size_t n, redisContext **c)
{
    if (!testsrv_available()) {
        printf("%s: redis-server not installed, skipped\n", what);
        return false;
    }
    SBT_CHECK_MSG(testsrv_start(srv, false), "own redis-server did not start");
    snprintf(url, n, "redis://127.0.0.1:%d/0", srv->port);
    *c = sync_connect(url);
    return true;
}

static void own_server_end(testsrv_t *srv, redisContext *c)
{
    redisFree(c);
    testsrv_stop(srv, SIGTERM);
    testsrv_cleanup(srv);
}

/* A complete whose connection is lost before Redis answered: with hold_completes (what
 * on_unavailable: block uses) its answer waits for the replay on the next connection and is
 * then "done"; without, it is answered SB_EUNAVAILABLE at once (and replayed all the same). */
static void test_hold_completes(void)
{
    testsrv_t srv = {0};
    char url[64];
    redisContext *c = NULL;
    if (!own_server("hold completes", &srv, url, sizeof url, &c))
        return;
    for (int hold = 1; hold >= 0; hold--) {
        sb__redis_store_opts_t o = {.url = url, .owner = "holder", .hold_completes = hold};
        sb__store_t *s = NULL;
        SBT_CHECK(sb__store_redis_new(rt, &o, &s, NULL, 0) == SB_EOK);
        SBT_CHECK(run_until(store_up, s, 5000));
        char k[64];
        snprintf(k, sizeof k, "hold:%d", hold);
        SBT_CHECK(claim(s, k, 30000) == SB__CLAIM_OWNED);
        /* The complete is written when the loop runs next; the connection is gone by then. */
        res_t x = {0, 1};
        SBT_CHECK(s->ops->complete(s, k, 60000, done_cb, &x) == SB_EOK);
        redisReply *r = redisCommand(c, "CLIENT KILL TYPE normal SKIPME yes");
        SBT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer >= 1);
        freeReplyObject(r);
        SBT_CHECK(run_until(disconnected, s, 5000));
        if (hold) {
            SBT_CHECK_MSG(x.n == 0, "answered (%d) before Redis stored done", x.last);
            SBT_CHECK(run_until(res_answered, &x, 10000)); /* reconnect, replay */
            SBT_CHECK_MSG(x.last == SB_EOK, "replayed complete: %d", x.last);
        } else {
            SBT_CHECK(x.n == 1 && x.last == SB_EUNAVAILABLE);
            SBT_CHECK(run_until(store_up, s, 10000));
        }
        /* Either way Redis has it done once the store is back. */
        sb__redis_store_stats_t st;
        do {
            event_base_loop(base, EVLOOP_ONCE);
            sb__store_redis_stats(s, &st);
        } while (st.outstanding > 0 || !s->ops->available(s));
        r = redisCommand(c, "GET %s", k);
        SBT_CHECK(r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, "done"));
        freeReplyObject(r);
        s->ops->destroy(s);
    }
    own_server_end(&srv, c);
    printf("completes across a lost connection: held until replayed (hold_completes), else "
           "answered at once; done in Redis both ways: ok\n");
}

/* ---- access: password, ACL user, unix socket ------------------------------------------ */

typedef struct errwait {
    sb__store_t *s;
    const char *needle;
} errwait_t;

static bool error_contains(void *ud)
{
    errwait_t *w = ud;
    return strstr(sb__store_redis_last_error(w->s), w->needle) != NULL;
}

static void srv_cmd(redisContext *c, const char *cmd)
{
    redisReply *r = redisCommand(c, cmd);
    SBT_CHECK_MSG(r && r->type != REDIS_REPLY_ERROR, "%s: %s", cmd, r ? r->str : c->errstr);
    freeReplyObject(r);
}

static bool store_down(void *ud)
{
    sb__store_t *s = ud;
    return !s->ops->available(s);
}

/* Redis up but refusing writes (out of memory, turned into a replica) is an outage, not a
 * per-message error: a refused complete is not taken for done (held, it is not answered)
 * and is replayed once writes are taken again; the store stays unavailable meanwhile (its
 * reconnects fail the handshake's write probe), so a fail-closed consumer stops intake
 * instead of acking events whose "done" Redis never stored. */
static void test_write_refusals(void)
{
    testsrv_t srv = {0};
    char url[64];
    redisContext *c = NULL;
    if (!own_server("write refusals", &srv, url, sizeof url, &c))
        return;
    sb__redis_store_opts_t o = {.url = url,
                                .owner = "refused",
                                .hold_completes = true,
                                .probe_key = "t:{g}:probe",
                                .backoff_max_ms = 300};
    sb__store_t *s = NULL;
    SBT_CHECK(sb__store_redis_new(rt, &o, &s, NULL, 0) == SB_EOK);
    SBT_CHECK(run_until(store_up, s, 5000));

    /* Out of memory (maxmemory below what is used, noeviction): the complete is refused. */
    SBT_CHECK(claim(s, "oom:1", 30000) == SB__CLAIM_OWNED);
    srv_cmd(c, "CONFIG SET maxmemory 1");
    res_t x = {0, 1};
    SBT_CHECK(s->ops->complete(s, "oom:1", 60000, done_cb, &x) == SB_EOK);
    SBT_CHECK(run_until(store_down, s, 5000));
    SBT_CHECK_MSG(strstr(sb__store_redis_last_error(s), "OOM"), "last error: %s",
                  sb__store_redis_last_error(s));
    /* Reconnects are refused by the probe: still down, the complete still unanswered. */
    uint64_t until = sbt_now_ms() + 1200;
    while (sbt_now_ms() < until) {
        event_base_loop(base, EVLOOP_ONCE);
        SBT_CHECK_MSG(!s->ops->available(s), "up while Redis refuses writes");
    }
    SBT_CHECK_MSG(x.n == 0, "a refused complete was answered (%d)", x.last);
    sb__redis_store_stats_t st;
    sb__store_redis_stats(s, &st);
    SBT_CHECK_MSG(st.disconnects >= 3, "only %llu reconnect attempts",
                  (unsigned long long)st.disconnects);
    SBT_CHECK_MSG(strstr(sb__store_redis_last_error(s), "refuses writes"), "last error: %s",
                  sb__store_redis_last_error(s));
    srv_cmd(c, "CONFIG SET maxmemory 0");
    SBT_CHECK(run_until(res_answered, &x, 5000)); /* reconnected, replayed */
    SBT_CHECK_MSG(x.last == SB_EOK, "replayed complete: %d", x.last);
    char *v = get_str(c, "oom:1");
    SBT_CHECK_MSG(!strcmp(v, "done"), "oom:1 = %s", v);
    free(v);
    redisReply *r = redisCommand(c, "EXISTS t:{g}:probe");
    SBT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0); /* XX: never created */
    freeReplyObject(r);

    /* A replica (of a master that is not there): claims are refused, READONLY. */
    int dead_port = testsrv_free_port();
    char cmd[64];
    snprintf(cmd, sizeof cmd, "REPLICAOF 127.0.0.1 %d", dead_port);
    srv_cmd(c, cmd);
    SBT_CHECK(claim(s, "ro:1", 30000) == SB__CLAIM_ERROR);
    SBT_CHECK(run_until(store_down, s, 5000));
    SBT_CHECK_MSG(strstr(sb__store_redis_last_error(s), "READONLY"), "last error: %s",
                  sb__store_redis_last_error(s));
    srv_cmd(c, "REPLICAOF NO ONE");
    SBT_CHECK(run_until(store_up, s, 5000));
    SBT_CHECK(claim(s, "ro:1", 30000) == SB__CLAIM_OWNED);
    SBT_CHECK(op(s, "complete", "ro:1", 60000) == SB_EOK);

    s->ops->destroy(s);
    own_server_end(&srv, c);
    printf("write refusals (OOM, READONLY): an outage; the refused complete held and replayed "
           "once writes are taken; the write probe keeps the store down meanwhile: ok\n");
}

static void test_access(void)
{
    if (!testsrv_available()) {
        printf("access: redis-server not installed, skipped\n");
        return;
    }
    testsrv_t srv = {0};
    snprintf(srv.pass, sizeof srv.pass, "pw-%d-sbtest", (int)getpid());
    SBT_CHECK_MSG(testsrv_start(&srv, true), "own redis-server did not start");
    char url[300];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", srv.port);

    /* No password: SCRIPT LOAD is refused with NOAUTH; never available. */
    sb__store_t *s = new_store(url, NULL, "nopass");
    errwait_t w = {s, "NOAUTH"};
    SBT_CHECK_MSG(run_until(error_contains, &w, 5000), "last error: %s",
                  sb__store_redis_last_error(s));
    SBT_CHECK(!s->ops->available(s));
    SBT_CHECK(claim(s, "k", 1000) == SB__CLAIM_ERROR);
    printf("no password: \"%s\"\n", sb__store_redis_last_error(s));
    s->ops->destroy(s);

    /* Wrong password. */
    s = new_store(url, "wrong-password", "wrongpass");
    w = (errwait_t){s, "AUTH failed"};
    SBT_CHECK_MSG(run_until(error_contains, &w, 5000), "last error: %s",
                  sb__store_redis_last_error(s));
    SBT_CHECK(!s->ops->available(s));
    SBT_CHECK(!strstr(sb__store_redis_last_error(s), "wrong-password"));
    printf("wrong password: \"%s\"\n", sb__store_redis_last_error(s));
    s->ops->destroy(s);

    /* Password from the configuration (not in the URL), read from password_file. */
    char *pwfile = sbt_write_temp(srv.pass, ".secret");
    char yaml[512];
    int yn = snprintf(yaml, sizeof yaml,
                      "idempotency:\n  store: redis\n  redis:\n    url: \"%s\"\n"
                      "    password_file: %s\n",
                      url, pwfile);
    sb__config_t *cfg = NULL;
    char cerr[512] = "";
    SBT_CHECK_MSG(sb__config_load_buffer(yaml, (size_t)yn, "pw.yaml", &cfg, cerr, sizeof cerr) ==
                      SB_EOK,
                  "config: %s", cerr);
    SBT_CHECK(!strcmp(sb__config_str(cfg, "idempotency.redis.password"), srv.pass));
    s = new_store(sb__config_str(cfg, "idempotency.redis.url"),
                  sb__config_str(cfg, "idempotency.redis.password"), "goodpass");
    sb__config_destroy(cfg);
    unlink(pwfile);
    free(pwfile);
    SBT_CHECK_MSG(run_until(store_up, s, 5000), "%s", sb__store_redis_last_error(s));
    SBT_CHECK(claim(s, "sb:test:pw", 30000) == SB__CLAIM_OWNED);
    s->ops->destroy(s);

    /* Unix socket, password in the URL, database 2. */
    snprintf(url, sizeof url, "unix://:%s@%s?db=2", srv.pass, srv.sock);
    s = new_store(url, NULL, "unixsock");
    SBT_CHECK_MSG(run_until(store_up, s, 5000), "%s", sb__store_redis_last_error(s));
    SBT_CHECK(claim(s, "sb:test:db2", 30000) == SB__CLAIM_OWNED);
    redisContext *c = sync_connect(url);
    redisReply *r = redisCommand(c, "GET sb:test:db2");
    SBT_CHECK(r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, "inprogress:unixsock"));
    freeReplyObject(r);
    s->ops->destroy(s);

    /* An ACL user. */
    r = redisCommand(c, "ACL SETUSER sbuser on >sbuser-pass ~sb:* +@all");
    SBT_CHECK(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(c);
    snprintf(url, sizeof url, "redis://sbuser:sbuser-pass@127.0.0.1:%d/0", srv.port);
    s = new_store(url, NULL, "acl");
    SBT_CHECK_MSG(run_until(store_up, s, 5000), "%s", sb__store_redis_last_error(s));
    SBT_CHECK(claim(s, "sb:test:acl", 30000) == SB__CLAIM_OWNED);
    s->ops->destroy(s);
    snprintf(url, sizeof url, "redis://sbuser:nope@127.0.0.1:%d/0", srv.port);
    s = new_store(url, NULL, "acl-bad");
    w = (errwait_t){s, "AUTH failed"};
    SBT_CHECK(run_until(error_contains, &w, 5000));
    s->ops->destroy(s);

    testsrv_cleanup(&srv);
    printf("access (NOAUTH, wrong password, password option, unix socket + db, ACL user): ok\n");
}

/* ---- through a pipeline --------------------------------------------------------------- */

typedef struct pl {
    sb__config_t *cfg;
    sb__pipeline_t *p;
    char ledger[128];
    size_t want;
} pl_t;

static pl_t *pl_new(const char *extra_yaml)
{
    pl_t *f = calloc(1, sizeof *f);
    SBT_CHECK(f);
    snprintf(f->ledger, sizeof f->ledger, "/tmp/sb-redis-ledger-%d-XXXXXX", (int)getpid());
    int fd = mkstemp(f->ledger);
    SBT_CHECK(fd >= 0);
    close(fd);
    char yaml[2048];
    int n = snprintf(yaml, sizeof yaml,
                     "log:\n  level: error\n"
                     "service:\n  name: redis-store-test\n"
                     "transport:\n  kind: memory\n  memory:\n    loopback: false\n"
                     "idempotency:\n  store: redis\n  redis:\n    url: \"%s\"\n"
                     "    prefix: \"%s\"\n    lease: 1s\n%s"
                     "handlers:\n"
                     "  - name: rec\n    module: record\n    bind: [\"#\"]\n"
                     "    config:\n      path: %s\n",
                     redis_url, prefix, extra_yaml, f->ledger);
    char err[512] = "";
    SBT_CHECK_MSG(sb__config_load_buffer(yaml, (size_t)n, "redis_store.yaml", &f->cfg, err,
                                         sizeof err) == SB_EOK,
                  "config: %s\n%s", err, yaml);
    SBT_CHECK_MSG(sb__pipeline_new(f->cfg, &f->p, err, sizeof err) == SB_EOK, "pipeline: %s", err);
    SBT_CHECK_MSG(sb__pipeline_start(f->p, err, sizeof err) == SB_EOK, "start: %s", err);
    return f;
}

static void pl_destroy(pl_t *f)
{
    sb__pipeline_destroy(f->p);
    sb__config_destroy(f->cfg);
    unlink(f->ledger);
    free(f);
}

static bool pl_settled(void *ud)
{
    pl_t *f = ud;
    sb__memtx_stats_t s;
    sb__memtx_stats(f->p->tx, &s);
    return s.acked >= f->want && sb__memtx_outstanding(f->p->tx) == 0 &&
           sb__dispatcher_inflight(f->p->dp) == 0;
}

static bool dispatcher_idle_after_ack(void *ud)
{
    sb__pipeline_t *p = ud;
    sb__memtx_stats_t s;
    sb__memtx_stats(p->tx, &s);
    return s.acked >= 1 && sb__memtx_outstanding(p->tx) == 0 && sb__dispatcher_inflight(p->dp) == 0;
}

static void inject(pl_t *f, const char *id)
{
    char body[256];
    snprintf(body, sizeof body, "{\"Id\":\"%s\",\"n\":1}", id);
    sb__memtx_msg_t m = {.routing_key = "Redis.Test",
                         .body = body,
                         .body_len = strlen(body),
                         .content_type = "application/json"};
    SBT_CHECK(sb__memtx_inject(f->p->tx, &m) == SB_EOK);
}

static void test_pipeline_duplicates_and_crash(void)
{
    /* The pipeline gets its own runtime; ours stays idle meanwhile. */
    pl_t *f = pl_new("");
    struct event_base *saved = base;
    base = sb__runtime_base(f->p->rt);
    SBT_CHECK(run_until(store_up, f->p->store, 5000));

    /* Duplicates: one copy, then two more later; and two copies in flight together. */
    inject(f, "11111111-0000-4000-8000-000000000001");
    f->want = 1;
    SBT_CHECK(run_until(pl_settled, f, 10000));
    inject(f, "11111111-0000-4000-8000-000000000001");
    inject(f, "11111111-0000-4000-8000-000000000001");
    inject(f, "11111111-0000-4000-8000-000000000002");
    inject(f, "11111111-0000-4000-8000-000000000002"); /* in flight with the one before */
    f->want = 5;
    SBT_CHECK(run_until(pl_settled, f, 15000));
    const sb__dispatcher_stats_t *ds = sb__dispatcher_stats(f->p->dp);
    SBT_CHECK_MSG(ds->duplicate_events >= 3, "duplicate events %llu",
                  (unsigned long long)ds->duplicate_events);

    /* A consumer that claimed an event and crashed before completing it. */
    sb__redis_store_opts_t o = {.url = redis_url, .owner = "crashed-consumer"};
    sb__store_t *other = NULL;
    SBT_CHECK(sb__store_redis_new(f->p->rt, &o, &other, NULL, 0) == SB_EOK);
    SBT_CHECK(run_until(store_up, other, 5000));
    char k[256];
    snprintf(k, sizeof k, "%s{redis-store-test}:rec:%s", prefix,
             "11111111-0000-4000-8000-000000000003");
    SBT_CHECK(claim(other, k, 1500) == SB__CLAIM_OWNED);
    uint64_t t0 = sbt_now_ms();
    inject(f, "11111111-0000-4000-8000-000000000003");
    f->want = 6;
    SBT_CHECK(run_until(pl_settled, f, 15000));
    uint64_t took = sbt_now_ms() - t0;
    SBT_CHECK_MSG(took >= 1000, "handled after %llu ms, before the lease ended",
                  (unsigned long long)took);
    other->ops->destroy(other);

    const char *ids[] = {"11111111-0000-4000-8000-000000000001",
                         "11111111-0000-4000-8000-000000000002",
                         "11111111-0000-4000-8000-000000000003"};
    size_t missing, dups, unexpected;
    sbt_ledger_check(f->ledger, ids, 3, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dups == 0 && unexpected == 0,
                  "ledger: missing %zu dups %zu unexpected %zu", missing, dups, unexpected);
    printf("pipeline: duplicates skipped (%llu duplicate events), crashed consumer's event "
           "handled once after its lease (%llu ms)\n",
           (unsigned long long)ds->duplicate_events, (unsigned long long)took);
    base = saved;
    pl_destroy(f);
}

static bool elapsed(void *ud)
{
    return sbt_now_ms() >= *(uint64_t *)ud;
}

/* A blocking handler claims for the plain lease (1 s here) and the loop renews the claim
 * while it runs on its worker: 2.5 s into a 3 s run the key is still ours, then done. */
static void test_blocking_lease_renewed(void)
{
    char yaml[2048];
    int n = snprintf(yaml, sizeof yaml,
                     "log:\n  level: error\n"
                     "service:\n  name: redis-store-test\n  workers: 2\n"
                     "transport:\n  kind: memory\n  memory:\n    loopback: false\n"
                     "idempotency:\n  store: redis\n  redis:\n    url: \"%s\"\n"
                     "    prefix: \"%s\"\n    lease: 1s\n"
                     "handlers:\n"
                     "  - name: async\n    module: %s\n    timeout: 30s\n"
                     "    config:\n      sleep_ms: 3000\n",
                     redis_url, prefix, MOD_ASYNC);
    sb__config_t *cfg = NULL;
    sb__pipeline_t *p = NULL;
    char err[512] = "";
    SBT_CHECK_MSG(sb__config_load_buffer(yaml, (size_t)n, "lease.yaml", &cfg, err, sizeof err) ==
                      SB_EOK,
                  "config: %s", err);
    SBT_CHECK_MSG(sb__pipeline_new(cfg, &p, err, sizeof err) == SB_EOK, "pipeline: %s", err);
    SBT_CHECK_MSG(sb__pipeline_start(p, err, sizeof err) == SB_EOK, "start: %s", err);
    struct event_base *saved = base;
    base = sb__runtime_base(p->rt);
    SBT_CHECK(run_until(store_up, p->store, 5000));
    const char *id = "22222222-0000-4000-8000-000000000001";
    char body[256];
    snprintf(body, sizeof body, "{\"Id\":\"%s\"}", id);
    sb__memtx_msg_t m = {.routing_key = "Async.BlockSleep",
                         .body = body,
                         .body_len = strlen(body),
                         .content_type = "application/json"};
    SBT_CHECK(sb__memtx_inject(p->tx, &m) == SB_EOK);
    char key[256];
    snprintf(key, sizeof key, "%s{redis-store-test}:async.block_sleep:%s", prefix, id);
    uint64_t until = sbt_now_ms() + 2500;
    run_until(elapsed, &until, 5000);
    redisContext *c = sync_connect(redis_url);
    redisReply *r = redisCommand(c, "GET %s", key);
    SBT_CHECK_MSG(r && r->type == REDIS_REPLY_STRING && !strncmp(r->str, "inprogress:", 11),
                  "2.5 s into the run the claim is %s (lease 1 s, not renewed?)",
                  r && r->type == REDIS_REPLY_STRING ? r->str : "gone");
    freeReplyObject(r);
    SBT_CHECK(run_until(dispatcher_idle_after_ack, p, 10000));
    r = redisCommand(c, "GET %s", key);
    SBT_CHECK_MSG(r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, "done"),
                  "after the run the key is %s",
                  r && r->type == REDIS_REPLY_STRING ? r->str : "gone");
    freeReplyObject(r);
    redisFree(c);
    printf("blocking handler: 3 s run on a 1 s lease kept its claim (renewed), then done\n");
    base = saved;
    sb__pipeline_destroy(p);
    sb__config_destroy(cfg);
}

int main(void)
{
    redis_url = sbt_service("SB_TEST_REDIS_URL", "Redis");
    sb__log_configure(SB_LOG_WARN, SB__LOG_TEXT, NULL);
    prefix = sbt_unique_name("sbtest-idem");
    char *p = realloc(prefix, strlen(prefix) + 2);
    SBT_CHECK(p);
    prefix = strcat(p, ":");
    test_url();
    char err[256];
    SBT_CHECK(sb__runtime_new(&rt, 1000, err, sizeof err) == SB_EOK);
    base = sb__runtime_base(rt);
    test_semantics();
    test_lease_expiry();
    test_fast_complete();
    test_noscript();
    test_down_answers();
    test_pipelining();
    test_access();
    test_hold_completes();
    test_write_refusals();
    sb__runtime_destroy(rt);
    rt = NULL;
    test_pipeline_duplicates_and_crash();
    test_blocking_lease_renewed();
    cleanup_keys();
    free(prefix);
    sb__log_clear_secrets();
    return 0;
}
