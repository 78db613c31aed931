/* test_dispatch_shutdown.c: graceful shutdown with work in flight, through the real runtime
 * loop (sb__runtime_run) of a pipeline built from YAML (memory transport, asyncmod.so).
 *
 * Design: a watcher timer on the loop waits until the injected messages are all in flight in
 * the dispatcher, then calls sb__runtime_stop() (what SIGTERM does, without signalling the
 * test process). Drain: run() returns 0 only once every in-flight message was acked. Stuck
 * work: a handler that never completes makes run() return 1 once shutdown_timeout passes.
 * Not here: signals themselves (test_shutdown_signals.c), dispatch paths (test_dispatch.c). */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/event.h>

#include "switchboard/switchboard.h"
#include "config.h"
#include "pipeline.h"
#include "registry.h"
#include "settle.h"
#include "transport_memory.h"

typedef struct fx {
    sb__config_t *cfg;
    sb__pipeline_t *p;
    struct event *watch;
    size_t wait_inflight;
    int64_t stopped_at_us;
} fx_t;

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void build(fx_t *f, const char *yaml_fmt)
{
    char yaml[2048], err[512] = "";
    int n = snprintf(yaml, sizeof yaml, yaml_fmt, MOD_ASYNC);
    assert_true(n > 0 && (size_t)n < sizeof yaml);
    if (sb__config_load_buffer(yaml, (size_t)n, "shutdown.yaml", &f->cfg, err, sizeof err) !=
        SB_EOK)
        fail_msg("config: %s", err);
    sb__pipeline_configure_logging(f->cfg);
    if (sb__pipeline_new(f->cfg, &f->p, err, sizeof err) != SB_EOK)
        fail_msg("pipeline: %s", err);
    if (sb__pipeline_start(f->p, err, sizeof err) != SB_EOK)
        fail_msg("start: %s", err);
}

static void inject(fx_t *f, const char *rk, unsigned id)
{
    char body[128];
    snprintf(body, sizeof body, "{\"Id\":\"5b1f0a52-8d3c-4c59-9f7e-%012u\"}", id);
    sb__memtx_msg_t m = {.routing_key = rk, .body = body, .body_len = strlen(body)};
    assert_int_equal(sb__memtx_inject(f->p->tx, &m), SB_EOK);
}

/* Every 5 ms: once wait_inflight messages are in the dispatcher, begin shutdown. */
static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fx_t *f = arg;
    if (sb__dispatcher_inflight(f->p->dp) >= f->wait_inflight) {
        f->stopped_at_us = mono_us();
        sb__runtime_stop(f->p->rt);
        event_del(f->watch);
    }
}

static int run_with_watch(fx_t *f, size_t wait_inflight)
{
    struct event_base *base = sb__runtime_base(f->p->rt);
    f->wait_inflight = wait_inflight;
    f->watch = event_new(base, -1, EV_PERSIST, watch_cb, f);
    assert_non_null(f->watch);
    struct timeval tv = {0, 5000};
    event_add(f->watch, &tv);
    int rc = sb__runtime_run(f->p->rt);
    event_free(f->watch);
    f->watch = NULL;
    return rc;
}

static void teardown(fx_t *f)
{
    sb__pipeline_destroy(f->p);
    sb__config_destroy(f->cfg);
}

static void test_drains_in_flight_work(void **state)
{
    (void)state;
    fx_t f = {0};
    build(&f, "log:\n  level: error\n"
              "service:\n  shutdown_timeout: 5s\n"
              "transport:\n  kind: memory\n  memory:\n    loopback: false\n"
              "handlers:\n  - name: async\n    module: %s\n    timeout: 10s\n"
              "    config:\n      delay_ms: 300\n");
    for (unsigned i = 0; i < 5; i++)
        inject(&f, "Async.PendingOk", i + 1);
    int rc = run_with_watch(&f, 5);
    int64_t drained_in = mono_us() - f.stopped_at_us;
    assert_int_equal(rc, SB__RUNTIME_EXIT_OK);
    assert_true(f.stopped_at_us != 0);
    /* It waited for the handlers (~300 ms) instead of returning at once. */
    assert_true(drained_in >= 200000);
    assert_true(drained_in < 4000000);
    sb__memtx_stats_t s;
    sb__memtx_stats(f.p->tx, &s);
    assert_int_equal(s.acked, 5);
    assert_int_equal(s.delivered, 5);
    assert_int_equal(sb__memtx_outstanding(f.p->tx), 0);
    assert_int_equal(sb__dispatcher_inflight(f.p->dp), 0);
    assert_int_equal(sb__dispatcher_stats(f.p->dp)->acked, 5);
    teardown(&f);
}

static void test_stuck_handler_times_out(void **state)
{
    (void)state;
    fx_t f = {0};
    build(&f, "log:\n  level: error\n"
              "service:\n  shutdown_timeout: 300ms\n"
              "transport:\n  kind: memory\n  memory:\n    loopback: false\n"
              "handlers:\n  - name: async\n    module: %s\n    timeout: 60s\n");
    inject(&f, "Async.PendingNever", 9);
    int rc = run_with_watch(&f, 1);
    int64_t took = mono_us() - f.stopped_at_us;
    assert_int_equal(rc, SB__RUNTIME_EXIT_TIMEOUT);
    assert_true(took >= 250000);
    if (took > 2000000)
        fail_msg("run() returned %lld ms after stop with shutdown_timeout 300ms",
                 (long long)(took / 1000));
    assert_int_equal(sb__dispatcher_inflight(f.p->dp), 1);
    sb__memtx_stats_t s;
    sb__memtx_stats(f.p->tx, &s);
    assert_int_equal(s.acked, 0);
    teardown(&f); /* the unsettled delivery and the module's token are freed here */
}

static void test_blocking_handler_in_flight_at_timeout(void **state)
{
    (void)state;
    /* A blocking handler outlives the drain: run() gives up, and tearing the pipeline down
     * (the pool delivers the late result while the dispatcher, transport and store still
     * exist) must neither crash nor leak. */
    fx_t f = {0};
    build(&f, "log:\n  level: error\n"
              "service:\n  shutdown_timeout: 100ms\n"
              "transport:\n  kind: memory\n  memory:\n    loopback: false\n"
              "handlers:\n  - name: async\n    module: %s\n    timeout: 60s\n"
              "    config:\n      sleep_ms: 400\n");
    inject(&f, "Async.BlockSleep", 10);
    inject(&f, "Async.BlockSleep", 11);
    int rc = run_with_watch(&f, 2);
    int64_t took = mono_us() - f.stopped_at_us;
    assert_int_equal(rc, SB__RUNTIME_EXIT_TIMEOUT);
    assert_true(took < 350000); /* did not wait for the 400 ms handlers */
    assert_int_equal(sb__dispatcher_inflight(f.p->dp), 2);
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drains_in_flight_work),
        cmocka_unit_test(test_stuck_handler_times_out),
        cmocka_unit_test(test_blocking_handler_in_flight_at_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
