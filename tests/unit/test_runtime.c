/* The runtime: timers (order, repeat, restart and destroy from their own callback),
 * programmatic stop with a participant that drains, the shutdown timeout, a second signal
 * raised in-process, stop from another thread, and participant bookkeeping. */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "switchboard/error.h"
#include "log.h"
#include "runtime.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static sb__runtime_t *new_rt(uint64_t timeout_ms)
{
    sb__runtime_t *rt = NULL;
    char err[256] = "";
    int rc = sb__runtime_new(&rt, timeout_ms, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("sb__runtime_new: %s", err);
    assert_non_null(sb__runtime_base(rt));
    return rt;
}

/* Log capture, so the tests can check what the runtime said. */
static FILE *log_start(void)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    sb__log_configure(SB_LOG_DEBUG, SB__LOG_JSON, f);
    return f;
}

static char *log_end(FILE *f)
{
    sb__log_configure(SB_LOG_INFO, SB__LOG_JSON, NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return buf;
}

/* The first line whose msg starts with `msg`, parsed; NULL if none. */
static json_t *find_line(const char *log, const char *msg)
{
    for (const char *p = log; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        json_t *j = json_loadb(p, len, 0, NULL);
        assert_non_null(j); /* every runtime line is JSON */
        const char *m = json_string_value(json_object_get(j, "msg"));
        if (m && strncmp(m, msg, strlen(msg)) == 0)
            return j;
        json_decref(j);
        p += len + (nl ? 1 : 0);
    }
    return NULL;
}

static void test_destroy_null(void **state)
{
    sb__runtime_destroy(NULL);
    sb__timer_destroy(NULL);
    assert_int_equal(sb__runtime_new(NULL, 0, NULL, 0), SB_EINVAL);
}

/* ---- timers ----------------------------------------------------------------------------- */

struct order {
    sb__runtime_t *rt;
    int fired[8];
    int n;
};

struct tagged {
    struct order *o;
    int tag;
};

static void record(sb__timer_t *t, void *arg)
{
    struct tagged *tg = arg;
    tg->o->fired[tg->o->n++] = tg->tag;
    assert_false(sb__timer_pending(t));
}

static void stop_cb(sb__timer_t *t, void *arg)
{
    sb__runtime_stop(arg);
}

static void test_timers_fire_in_order(void **state)
{
    sb__runtime_t *rt = new_rt(1000);
    struct order o = {.rt = rt};
    struct tagged tg[4] = {{&o, 30}, {&o, 10}, {&o, 20}, {&o, 0}};
    sb__timer_t *t[4];
    uint64_t ms[4] = {30, 10, 20, 0};
    for (int i = 0; i < 4; i++) {
        t[i] = sb__runtime_timer_new(rt, record, &tg[i]);
        assert_non_null(t[i]);
        assert_false(sb__timer_pending(t[i]));
        assert_int_equal(sb__timer_start(t[i], ms[i], false), SB_EOK);
        assert_true(sb__timer_pending(t[i]));
    }
    /* A stopped timer never fires; a restarted one uses its latest schedule. */
    struct tagged never = {&o, 99};
    sb__timer_t *cancelled = sb__runtime_timer_new(rt, record, &never);
    assert_int_equal(sb__timer_start(cancelled, 5, false), SB_EOK);
    sb__timer_stop(cancelled);
    assert_false(sb__timer_pending(cancelled));
    sb__timer_stop(cancelled);                                  /* idempotent */
    assert_int_equal(sb__timer_start(t[3], 40, false), SB_EOK); /* 0 -> 40 ms */

    sb__timer_t *stopper = sb__runtime_timer_new(rt, stop_cb, rt);
    assert_int_equal(sb__timer_start(stopper, 60, false), SB_EOK);
    uint64_t t0 = now_ms();
    assert_int_equal(sb__runtime_run(rt), 0);
    assert_true(now_ms() - t0 >= 55);
    assert_int_equal(o.n, 4);
    assert_int_equal(o.fired[0], 10);
    assert_int_equal(o.fired[1], 20);
    assert_int_equal(o.fired[2], 30);
    assert_int_equal(o.fired[3], 0);
    for (int i = 0; i < 4; i++)
        sb__timer_destroy(t[i]);
    sb__timer_destroy(cancelled);
    sb__timer_destroy(stopper);
    sb__runtime_destroy(rt);
}

struct rep {
    sb__runtime_t *rt;
    int count;
    uint64_t first, last;
    sb__timer_t *self_destroying;
    int restarts;
};

static void repeat_cb(sb__timer_t *t, void *arg)
{
    struct rep *r = arg;
    uint64_t now = now_ms();
    if (r->count++ == 0)
        r->first = now;
    r->last = now;
    assert_true(sb__timer_pending(t)); /* a repeat timer is re-armed before its callback */
    if (r->count == 5) {
        sb__timer_stop(t);
        sb__runtime_stop(r->rt);
    }
}

static void restart_cb(sb__timer_t *t, void *arg)
{
    struct rep *r = arg;
    if (++r->restarts < 3) {
        assert_int_equal(sb__timer_start(t, 2, false), SB_EOK);
    } else {
        sb__timer_destroy(t); /* from its own callback */
        r->self_destroying = NULL;
    }
}

static void test_repeat_timer(void **state)
{
    sb__runtime_t *rt = new_rt(1000);
    struct rep r = {.rt = rt};
    sb__timer_t *t = sb__runtime_timer_new(rt, repeat_cb, &r);
    assert_int_equal(sb__timer_start(t, 10, true), SB_EOK);
    r.self_destroying = sb__runtime_timer_new(rt, restart_cb, &r);
    assert_int_equal(sb__timer_start(r.self_destroying, 1, false), SB_EOK);
    assert_int_equal(sb__runtime_run(rt), 0);
    assert_int_equal(r.count, 5);
    assert_true(r.last - r.first >= 35); /* four more periods of 10 ms */
    assert_int_equal(r.restarts, 3);
    assert_null(r.self_destroying);
    /* Switching a timer from repeating to one-shot is allowed once it is idle. */
    assert_int_equal(sb__timer_start(t, 1, false), SB_EOK);
    sb__timer_destroy(t);
    sb__runtime_destroy(rt);
}

/* ---- graceful shutdown ------------------------------------------------------------------ */

struct part {
    sb__runtime_t *rt;
    sb__timer_t *drain; /* settles one message per tick */
    size_t inflight;
    bool drains;
    int stop_calls, finish_calls;
    size_t inflight_at_finish;
    int settled_after_finish;
    int raise_second; /* raise SIGTERM from stop_intake's timer */
};

static void drain_tick(sb__timer_t *t, void *arg)
{
    struct part *p = arg;
    if (p->raise_second) {
        raise(SIGTERM);
        return;
    }
    if (p->finish_calls)
        p->settled_after_finish++;
    if (p->inflight > 0 && p->drains) {
        p->inflight--;
        sb__runtime_poke(p->rt);
    }
}

static void p_stop_intake(void *arg)
{
    struct part *p = arg;
    p->stop_calls++;
    assert_true(sb__runtime_stopping(p->rt));
    assert_int_equal(sb__timer_start(p->drain, 20, !p->raise_second), SB_EOK);
}

static size_t p_inflight(void *arg)
{
    return ((struct part *)arg)->inflight;
}

static void p_finish(void *arg)
{
    struct part *p = arg;
    p->finish_calls++;
    p->inflight_at_finish = p->inflight;
    sb__timer_stop(p->drain);
}

static const sb__runtime_participant_t participant = {
    .name = "test", .stop_intake = p_stop_intake, .inflight = p_inflight, .finish = p_finish};

static void part_init(struct part *p, sb__runtime_t *rt, size_t inflight, bool drains)
{
    memset(p, 0, sizeof *p);
    p->rt = rt;
    p->inflight = inflight;
    p->drains = drains;
    p->drain = sb__runtime_timer_new(rt, drain_tick, p);
    assert_non_null(p->drain);
    assert_int_equal(sb__runtime_add_participant(rt, &participant, p), SB_EOK);
}

static void test_stop_drains_then_finishes(void **state)
{
    FILE *lf = log_start();
    sb__runtime_t *rt = new_rt(5000);
    struct part p;
    part_init(&p, rt, 5, true);
    /* A passive participant: only finish. */
    int passive_finish = 0;
    sb__runtime_stop(rt); /* before run: handled once the loop starts */
    sb__runtime_stop(rt); /* a second stop is not a second signal */
    uint64_t t0 = now_ms();
    int rc = sb__runtime_run(rt);
    uint64_t elapsed = now_ms() - t0;
    assert_int_equal(rc, 0);
    assert_int_equal(p.stop_calls, 1);
    assert_int_equal(p.finish_calls, 1);
    assert_int_equal(p.inflight_at_finish, 0);
    assert_int_equal(p.settled_after_finish, 0);
    assert_true(elapsed >= 90 && elapsed < 2000); /* 5 ticks of 20 ms, not the timeout */
    assert_int_equal(sb__runtime_add_participant(rt, &participant, &passive_finish), SB_ESTATE);
    sb__timer_destroy(p.drain);
    sb__runtime_destroy(rt);

    char *log = log_end(lf);
    json_t *j = find_line(log, "shutdown requested");
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "module")), "runtime");
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "stop requested");
    json_decref(j);
    j = find_line(log, "shutdown complete");
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "exit_status")), 0);
    json_decref(j);
    assert_null(find_line(log, "shutdown timeout"));
    free(log);
}

static void test_timeout_returns_1(void **state)
{
    FILE *lf = log_start();
    sb__runtime_t *rt = new_rt(150);
    struct part p;
    part_init(&p, rt, 3, false); /* never drains */
    sb__timer_t *stopper = sb__runtime_timer_new(rt, stop_cb, rt);
    assert_int_equal(sb__timer_start(stopper, 1, false), SB_EOK);
    uint64_t t0 = now_ms();
    int rc = sb__runtime_run(rt);
    uint64_t elapsed = now_ms() - t0;
    assert_int_equal(rc, 1);
    assert_true(elapsed >= 140 && elapsed < 2000);
    assert_int_equal(p.stop_calls, 1);
    assert_int_equal(p.finish_calls, 1); /* finish still runs: flush what settled */
    assert_int_equal(p.inflight_at_finish, 3);
    sb__timer_destroy(stopper);
    sb__timer_destroy(p.drain);
    sb__runtime_destroy(rt);

    char *log = log_end(lf);
    json_t *j = find_line(log, "shutdown timeout expired");
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_int_equal(json_integer_value(json_object_get(j, "inflight")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "timeout_ms")), 150);
    json_decref(j);
    free(log);
}

static void test_nothing_in_flight_stops_at_once(void **state)
{
    FILE *lf = log_start();
    sb__runtime_t *rt = new_rt(0);
    sb__runtime_stop(rt);
    uint64_t t0 = now_ms();
    assert_int_equal(sb__runtime_run(rt), 0);
    assert_true(now_ms() - t0 < 500);
    assert_int_equal(sb__runtime_run(rt), 1); /* run is once per runtime */
    sb__runtime_destroy(rt);
    free(log_end(lf));
}

static void raise_cb(sb__timer_t *t, void *arg)
{
    raise(SIGTERM);
}

static void test_second_signal(void **state)
{
    FILE *lf = log_start();
    sb__runtime_t *rt = new_rt(10000);
    struct part p;
    part_init(&p, rt, 2, false);
    p.raise_second = 1;
    /* Both signals are real SIGTERMs raised from the loop: the first from a timer, the
     * second from the participant's drain timer once stop_intake ran. */
    sb__timer_t *first = sb__runtime_timer_new(rt, raise_cb, NULL);
    assert_int_equal(sb__timer_start(first, 1, false), SB_EOK);
    uint64_t t0 = now_ms();
    int rc = sb__runtime_run(rt);
    assert_int_equal(rc, 128 + SIGTERM);
    assert_true(now_ms() - t0 < 2000);
    assert_int_equal(p.stop_calls, 1);
    assert_int_equal(p.finish_calls, 0);
    sb__timer_destroy(first);
    sb__timer_destroy(p.drain);
    sb__runtime_destroy(rt);
    char *log = log_end(lf);
    json_t *j = find_line(log, "shutdown requested");
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "SIGTERM");
    json_decref(j);
    j = find_line(log, "second signal: exiting now");
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "signal")), "SIGTERM");
    json_decref(j);
    free(log);
}

struct stopper_ctx {
    sb__runtime_t *rt;
    pthread_t th;
};

static void *stop_from_thread(void *arg)
{
    sb__runtime_stop(arg);
    return NULL;
}

static void spawn_stopper(sb__timer_t *t, void *arg)
{
    struct stopper_ctx *c = arg;
    assert_int_equal(pthread_create(&c->th, NULL, stop_from_thread, c->rt), 0);
}

/* sb__runtime_stop() from a thread that is not the loop's wakes the loop and stops it. */
static void test_stop_from_other_thread(void **state)
{
    FILE *lf = log_start();
    sb__runtime_t *rt = new_rt(1000);
    struct stopper_ctx c = {.rt = rt};
    sb__timer_t *t = sb__runtime_timer_new(rt, spawn_stopper, &c);
    assert_int_equal(sb__timer_start(t, 5, false), SB_EOK);
    assert_int_equal(sb__runtime_run(rt), 0);
    pthread_join(c.th, NULL);
    sb__timer_destroy(t);
    sb__runtime_destroy(rt);
    free(log_end(lf));
}

static void test_participant_bookkeeping(void **state)
{
    sb__runtime_t *rt = new_rt(1000);
    int a, b;
    assert_int_equal(sb__runtime_add_participant(rt, NULL, &a), SB_EINVAL);
    assert_int_equal(sb__runtime_add_participant(NULL, &participant, &a), SB_EINVAL);
    for (int i = 0; i < 10; i++) /* grows past the initial capacity */
        assert_int_equal(sb__runtime_add_participant(rt, &participant, &a), SB_EOK);
    assert_int_equal(sb__runtime_add_participant(rt, &participant, &b), SB_EOK);
    assert_int_equal(sb__runtime_remove_participant(rt, &participant, &b), SB_EOK);
    assert_int_equal(sb__runtime_remove_participant(rt, &participant, &b), SB_ENOTFOUND);
    assert_null(sb__runtime_timer_new(rt, NULL, NULL));
    /* An absurd delay is clamped, not overflowed. */
    sb__timer_t *t = sb__runtime_timer_new(rt, stop_cb, rt);
    assert_int_equal(sb__timer_start(t, UINT64_MAX, true), SB_EOK);
    assert_true(sb__timer_pending(t));
    sb__timer_destroy(t); /* destroying a pending timer */
    sb__runtime_destroy(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_destroy_null),
        cmocka_unit_test(test_timers_fire_in_order),
        cmocka_unit_test(test_repeat_timer),
        cmocka_unit_test(test_stop_drains_then_finishes),
        cmocka_unit_test(test_timeout_returns_1),
        cmocka_unit_test(test_nothing_in_flight_stops_at_once),
        cmocka_unit_test(test_second_signal),
        cmocka_unit_test(test_stop_from_other_thread),
        cmocka_unit_test(test_participant_bookkeeping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
