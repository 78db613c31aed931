/* test_redis_outage.c: the Redis idempotency store losing its Redis mid-stream.
 *
 * A private redis-server (tests/integration/redis_testsrv.h) behind a pipeline: memory
 * transport, Redis store, `record` ledger.
 *  - on_unavailable: block (the default): Redis is SIGKILLed while 20,000 events flow. The
 *    store becomes unavailable (readiness false), intake stops (no delivery while it is
 *    down), nothing is acked whose "done" Redis did not confirm (what was handled when the
 *    connection died is held until "done" is written again), and after Redis is restarted
 *    on the same port every event is handled exactly once (the ledger).
 *  - the same with Redis up but refusing writes (CONFIG SET maxmemory 1 under noeviction:
 *    OOM) and then taking them again: an outage like the first, nothing acked that Redis
 *    did not store as done, every event handled exactly once.
 *  - on_unavailable: process: with Redis down, events keep being handled (without
 *    deduplication).
 *  - slow Redis: CLIENT PAUSE 2000 ALL while 2,000 events flow: the loop keeps turning (a
 *    20 ms timer never misses more than a few ticks), the store stays available, and every
 *    event is handled once after the pause.
 * Not here: the protocol itself (tests/integration/test_redis_store.c). */
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
#include "store_redis.h"
#include "transport_memory.h"

#include "../integration/redis_testsrv.h"
#include "sbtest.h"

typedef struct fx {
    sb__config_t *cfg;
    sb__pipeline_t *p;
    char ledger[128];
    size_t want;
} fx_t;

static fx_t *fx_new(int port, const char *policy)
{
    fx_t *f = calloc(1, sizeof *f);
    SBT_CHECK(f);
    snprintf(f->ledger, sizeof f->ledger, "/tmp/sb-redis-outage-%d-XXXXXX", (int)getpid());
    int fd = mkstemp(f->ledger);
    SBT_CHECK(fd >= 0);
    close(fd);
    char yaml[2048];
    int n = snprintf(yaml, sizeof yaml,
                     "log:\n  level: warn\n  format: text\n"
                     "service:\n  name: redis-outage\n  max_inflight: 200\n"
                     "transport:\n  kind: memory\n  memory:\n    loopback: false\n"
                     "    capacity: 50000\n"
                     "idempotency:\n  store: redis\n  redis:\n"
                     "    url: \"redis://127.0.0.1:%d/0\"\n    on_unavailable: %s\n"
                     "handlers:\n"
                     "  - name: rec\n    module: record\n    bind: [\"#\"]\n"
                     "    config:\n      path: %s\n",
                     port, policy, f->ledger);
    char err[512] = "";
    SBT_CHECK_MSG(sb__config_load_buffer(yaml, (size_t)n, "redis_outage.yaml", &f->cfg, err,
                                         sizeof err) == SB_EOK,
                  "config: %s", err);
    sb__pipeline_configure_logging(f->cfg);
    SBT_CHECK_MSG(sb__pipeline_new(f->cfg, &f->p, err, sizeof err) == SB_EOK, "pipeline: %s", err);
    SBT_CHECK_MSG(sb__pipeline_start(f->p, err, sizeof err) == SB_EOK, "start: %s", err);
    return f;
}

static void fx_destroy(fx_t *f)
{
    sb__pipeline_destroy(f->p);
    sb__config_destroy(f->cfg);
    unlink(f->ledger);
    free(f);
}

static bool run_until(fx_t *f, bool (*pred)(fx_t *), int ms)
{
    struct event_base *base = sb__runtime_base(f->p->rt);
    uint64_t end = sbt_now_ms() + (uint64_t)ms;
    while (!pred(f)) {
        if (sbt_now_ms() > end)
            return false;
        event_base_loop(base, EVLOOP_ONCE); /* the store's watchdog wakes it regularly */
    }
    return true;
}

static bool never(fx_t *f)
{
    (void)f;
    return false;
}

static sb__memtx_stats_t mstats(fx_t *f)
{
    sb__memtx_stats_t s;
    sb__memtx_stats(f->p->tx, &s);
    return s;
}

static bool up(fx_t *f)
{
    return f->p->store->ops->available(f->p->store);
}

static bool down(fx_t *f)
{
    return !up(f);
}

static bool some_acked(fx_t *f)
{
    return mstats(f).acked >= f->want;
}

static bool all_settled(fx_t *f)
{
    return mstats(f).acked >= f->want && sb__memtx_outstanding(f->p->tx) == 0 &&
           sb__dispatcher_inflight(f->p->dp) == 0;
}

static char **make_ids(size_t n, unsigned tag)
{
    char **ids = calloc(n, sizeof *ids);
    SBT_CHECK(ids);
    for (size_t i = 0; i < n; i++) {
        ids[i] = malloc(48);
        SBT_CHECK(ids[i]);
        snprintf(ids[i], 48, "%08x-0000-4000-8000-%012zu", tag, i);
    }
    return ids;
}

static void free_ids(char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

static void inject_all(fx_t *f, char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"Id\":\"%s\",\"n\":%zu}", ids[i], i);
        sb__memtx_msg_t m = {.routing_key = "Outage.Test",
                             .body = body,
                             .body_len = strlen(body),
                             .content_type = "application/json"};
        SBT_CHECK(sb__memtx_inject(f->p->tx, &m) == SB_EOK);
    }
}

static void check_ledger(fx_t *f, char **ids, size_t n)
{
    size_t missing, dups, unexpected;
    sbt_ledger_check(f->ledger, (const char *const *)ids, n, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dups == 0 && unexpected == 0,
                  "ledger: missing %zu, duplicated %zu, unexpected %zu (of %zu)", missing, dups,
                  unexpected, n);
}

static void srv_config(const testsrv_t *srv, const char *maxmemory)
{
    redisContext *c = redisConnect("127.0.0.1", srv->port);
    SBT_CHECK(c && !c->err);
    redisReply *r = redisCommand(c, "CONFIG SET maxmemory %s", maxmemory);
    SBT_CHECK(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(c);
}

/* oom false: Redis is SIGKILLed and restarted; true: it stays up but refuses every write
 * (maxmemory below its use, noeviction) and then takes them again. */
static void test_block(bool oom)
{
    enum { N = 20000 };
    const char *how = oom ? "out of memory" : "killed";
    testsrv_t srv = {0};
    SBT_CHECK_MSG(testsrv_start(&srv, false), "own redis-server did not start");
    fx_t *f = fx_new(srv.port, "block");
    SBT_CHECK(run_until(f, up, 5000));
    char **ids = make_ids(N, oom ? 0x00e3 : 0xb10c);
    inject_all(f, ids, N);

    f->want = 3000;
    SBT_CHECK(run_until(f, some_acked, 30000));
    if (oom)
        srv_config(&srv, "1");
    else
        testsrv_stop(&srv, SIGKILL); /* mid-stream */
    uint64_t t_kill = sbt_now_ms();
    SBT_CHECK_MSG(run_until(f, down, 3000), "store still available after Redis %s", how);
    printf("Redis %s after %llu acks; store unavailable after %llu ms\n", how,
           (unsigned long long)mstats(f).acked, (unsigned long long)(sbt_now_ms() - t_kill));

    /* What was in flight is answered (retried later, or acked if already handled). */
    run_until(f, never, 500);
    sb__memtx_stats_t before = mstats(f);
    size_t ledger_before = sbt_count_lines(f->ledger);
    run_until(f, never, 2000);
    sb__memtx_stats_t after = mstats(f);
    SBT_CHECK(!f->p->store->ops->available(f->p->store)); /* readiness false */
    SBT_CHECK_MSG(after.delivered == before.delivered,
                  "intake not paused: %llu deliveries while Redis was down",
                  (unsigned long long)(after.delivered - before.delivered));
    SBT_CHECK(after.acked == before.acked);
    /* Handled but not acked: those whose "done" was lost with the connection, held in
     * flight until it is written again (nothing is acked that Redis did not confirm). */
    size_t held = sb__dispatcher_inflight(f->p->dp);
    SBT_CHECK_MSG(sbt_count_lines(f->ledger) == ledger_before &&
                      ledger_before == after.acked + held,
                  "acked %llu + held %zu, but handled %zu", (unsigned long long)after.acked, held,
                  ledger_before);
    printf("while down: %llu delivered, %llu acked, %zu handled and held until Redis confirms "
           "done (acked + held = ledger lines), %llu retried, none delivered in 2 s\n",
           (unsigned long long)after.delivered, (unsigned long long)after.acked, held,
           (unsigned long long)after.retried);

    if (oom)
        srv_config(&srv, "0");
    else
        SBT_CHECK_MSG(testsrv_start(&srv, false), "redis-server did not restart on port %d",
                      srv.port);
    uint64_t t_up = sbt_now_ms();
    SBT_CHECK_MSG(run_until(f, up, 10000), "store did not reconnect: %s",
                  sb__store_redis_last_error(f->p->store));
    printf("Redis %s: store available after %llu ms\n", oom ? "takes writes again" : "restarted",
           (unsigned long long)(sbt_now_ms() - t_up));
    f->want = N;
    SBT_CHECK_MSG(run_until(f, all_settled, 60000), "not settled: acked %llu of %d",
                  (unsigned long long)mstats(f).acked, N);
    check_ledger(f, ids, N);
    const sb__dispatcher_stats_t *ds = sb__dispatcher_stats(f->p->dp);
    SBT_CHECK(ds->dead_lettered == 0);
    sb__redis_store_stats_t st;
    sb__store_redis_stats(f->p->store, &st);
    printf("block (%s): %d events, each handled exactly once; %llu retries, store: %llu "
           "commands, %llu failed locally, %llu completes replayed, %llu reconnects\n",
           how, N, (unsigned long long)mstats(f).retried, (unsigned long long)st.commands,
           (unsigned long long)st.failed, (unsigned long long)st.replayed,
           (unsigned long long)st.connects - 1);
    free_ids(ids, N);
    fx_destroy(f);
    if (oom)
        testsrv_stop(&srv, SIGTERM);
    testsrv_cleanup(&srv);
}

static void test_process(void)
{
    enum { N = 500 };
    testsrv_t srv = {0};
    SBT_CHECK_MSG(testsrv_start(&srv, false), "own redis-server did not start");
    fx_t *f = fx_new(srv.port, "process");
    SBT_CHECK(run_until(f, up, 5000));
    testsrv_stop(&srv, SIGKILL);
    SBT_CHECK(run_until(f, down, 3000));
    char **ids = make_ids(N, 0x9c0c);
    inject_all(f, ids, N);
    f->want = N;
    SBT_CHECK_MSG(run_until(f, all_settled, 20000), "process: acked %llu of %d with Redis down",
                  (unsigned long long)mstats(f).acked, N);
    SBT_CHECK(!f->p->store->ops->available(f->p->store));
    check_ledger(f, ids, N);
    printf("process: %d events handled while Redis was down\n", N);
    free_ids(ids, N);
    fx_destroy(f);
    testsrv_cleanup(&srv);
}

typedef struct ticks {
    uint64_t last, max_gap;
    bool on;
} ticks_t;

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    ticks_t *t = arg;
    uint64_t now = sbt_now_ms();
    if (t->on && t->last && now - t->last > t->max_gap)
        t->max_gap = now - t->last;
    t->last = now;
}

static void test_slow(void)
{
    enum { N = 2000 };
    testsrv_t srv = {0};
    SBT_CHECK_MSG(testsrv_start(&srv, false), "own redis-server did not start");
    fx_t *f = fx_new(srv.port, "block");
    SBT_CHECK(run_until(f, up, 5000));
    ticks_t t = {0};
    struct event *tick = event_new(sb__runtime_base(f->p->rt), -1, EV_PERSIST, tick_cb, &t);
    struct timeval every = {0, 20 * 1000};
    SBT_CHECK(tick && event_add(tick, &every) == 0);
    char **ids = make_ids(N, 0x510e);
    inject_all(f, ids, N / 2);
    f->want = 200;
    SBT_CHECK(run_until(f, some_acked, 20000));
    redisContext *c = redisConnect("127.0.0.1", srv.port);
    SBT_CHECK(c && !c->err);
    redisReply *r = redisCommand(c, "CLIENT PAUSE 2000 ALL");
    SBT_CHECK_MSG(r && r->type == REDIS_REPLY_STATUS, "CLIENT PAUSE: %s",
                  r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
    freeReplyObject(r);
    uint64_t t0 = sbt_now_ms();
    inject_all(f, ids + N / 2, N / 2); /* arriving while Redis is slow */
    t.on = true;
    t.last = 0;
    uint64_t acked_at_pause = mstats(f).acked;
    run_until(f, never, 1500);
    t.on = false;
    uint64_t acked_in_pause = mstats(f).acked - acked_at_pause;
    SBT_CHECK_MSG(t.max_gap < 250, "the loop stalled %llu ms while Redis was paused",
                  (unsigned long long)t.max_gap);
    SBT_CHECK(up(f)); /* slow is not down: 2 s < command_timeout */
    f->want = N;
    SBT_CHECK_MSG(run_until(f, all_settled, 30000), "not settled: acked %llu of %d",
                  (unsigned long long)mstats(f).acked, N);
    uint64_t took = sbt_now_ms() - t0;
    SBT_CHECK_MSG(took >= 1900, "settled %llu ms after the pause began: was Redis paused?",
                  (unsigned long long)took);
    check_ledger(f, ids, N);
    SBT_CHECK(sb__dispatcher_stats(f->p->dp)->dead_lettered == 0);
    printf("slow Redis: paused 2 s; the loop's longest gap %llu ms (20 ms timer), %llu acks "
           "during the first 1.5 s of the pause, all %d handled once after %llu ms\n",
           (unsigned long long)t.max_gap, (unsigned long long)acked_in_pause, N,
           (unsigned long long)took);
    redisFree(c);
    event_free(tick);
    free_ids(ids, N);
    fx_destroy(f);
    testsrv_cleanup(&srv);
}

int main(void)
{
    if (!testsrv_available()) {
        if (getenv("SB_TEST_REQUIRE_ALL") && !strcmp(getenv("SB_TEST_REQUIRE_ALL"), "1"))
            sbt_fail(__FILE__, __LINE__, "redis-server is not installed");
        printf("redis-server not installed: skipped\n");
        return SBT_SKIP;
    }
    test_block(false);
    test_block(true);
    test_process();
    test_slow();
    sb__log_clear_secrets();
    return 0;
}
