/* The worker pool: 10,000 jobs on 4 threads, each done callback exactly once and on the loop
 * thread; SB_EBUSY at capacity; real concurrency (two jobs that rendezvous); shutdown with
 * queued jobs still delivers every done; destroy delivers what the loop did not; argument
 * checks and an allocation-failure sweep of sb__pool_new. Every loop run is bounded by a
 * timeout so that a broken pool fails instead of hanging. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/event.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "pool.h"
#include "runtime.h"

#define LOOP_TIMEOUT_MS 20000

/* ---- fixture: a runtime (thread-aware base) and a bounded loop run --------------------- */

typedef struct fixture {
    sb__runtime_t *rt;
    struct event_base *base;
    pthread_t loop_thread;
    bool timed_out;
} fixture_t;

static fixture_t fx;

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof fx);
    char err[256] = "";
    if (sb__runtime_new(&fx.rt, 0, err, sizeof err) != SB_EOK)
        return -1;
    fx.base = sb__runtime_base(fx.rt);
    fx.loop_thread = pthread_self();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sb__runtime_destroy(fx.rt);
    return 0;
}

static void on_timeout(sb__timer_t *t, void *arg)
{
    (void)t;
    (void)arg;
    fx.timed_out = true;
    event_base_loopbreak(fx.base);
}

/* Runs the loop until a callback calls event_base_loopbreak(), or the timeout. */
static void run_loop(void)
{
    sb__timer_t *t = sb__runtime_timer_new(fx.rt, on_timeout, NULL);
    assert_non_null(t);
    assert_int_equal(sb__timer_start(t, LOOP_TIMEOUT_MS, false), SB_EOK);
    event_base_loop(fx.base, 0);
    sb__timer_destroy(t);
    if (fx.timed_out)
        fail_msg("the loop timed out: a completion was lost or a job never ran");
}

static sb__pool_t *new_pool(unsigned threads, unsigned cap)
{
    sb__pool_t *p = NULL;
    char err[256] = "";
    int rc = sb__pool_new(fx.base, threads, cap, &p, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("sb__pool_new: %s", err);
    return p;
}

/* A gate jobs can wait on until the test opens it. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    int waiting;
} gate_t;

static void gate_init(gate_t *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = false;
    g->waiting = 0;
}

static void gate_open(gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gate_fini(gate_t *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

/* Waits until the gate opens, at most 10 s. */
static void gate_pass(gate_t *g)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&g->mu);
    g->waiting++;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        if (pthread_cond_timedwait(&g->cv, &g->mu, &until) != 0)
            break;
    pthread_mutex_unlock(&g->mu);
}

/* Waits until `n` jobs wait at the gate (the worker really picked them up), at most 10 s. */
static void gate_wait_for(gate_t *g, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&g->mu);
    while (g->waiting < n)
        if (pthread_cond_timedwait(&g->cv, &g->mu, &until) != 0)
            break;
    int got = g->waiting;
    pthread_mutex_unlock(&g->mu);
    assert_int_equal(got, n);
}

/* ---- 10,000 jobs on 4 threads ---------------------------------------------------------- */

#define MANY 10000

typedef struct many {
    sb__pool_t *pool;
    int work_runs[MANY];
    int done_runs[MANY];
    int ids[MANY];
    int next;     /* next id to submit */
    int done;     /* done callbacks so far */
    int off_loop; /* done callbacks not on the loop thread */
    size_t max_pending;
    int busy; /* SB_EBUSY answers */
} many_t;

static many_t *many_state;

static void many_work(void *arg)
{
    int id = *(int *)arg;
    many_state->work_runs[id]++; /* one job per slot: no race */
}

static void many_fill(many_t *m);

static void many_done(void *arg)
{
    int id = *(int *)arg;
    if (!pthread_equal(pthread_self(), fx.loop_thread))
        many_state->off_loop++;
    many_state->done_runs[id]++;
    if (++many_state->done == MANY)
        event_base_loopbreak(fx.base);
    else
        many_fill(many_state);
}

static void many_fill(many_t *m)
{
    while (m->next < MANY) {
        int rc = sb__pool_submit(m->pool, many_work, many_done, &m->ids[m->next]);
        if (rc == SB_EBUSY) {
            m->busy++;
            break;
        }
        assert_int_equal(rc, SB_EOK);
        m->next++;
        size_t pending = sb__pool_pending(m->pool);
        if (pending > m->max_pending)
            m->max_pending = pending;
    }
}

static void test_many_jobs(void **state)
{
    (void)state;
    many_t *m = calloc(1, sizeof *m);
    assert_non_null(m);
    many_state = m;
    for (int i = 0; i < MANY; i++)
        m->ids[i] = i;
    m->pool = new_pool(4, 16);
    many_fill(m);
    assert_int_equal(m->next, 16);
    run_loop();
    assert_int_equal(m->done, MANY);
    assert_int_equal(m->off_loop, 0);
    for (int i = 0; i < MANY; i++) {
        if (m->work_runs[i] != 1 || m->done_runs[i] != 1)
            fail_msg("job %d: work ran %d times, done %d times", i, m->work_runs[i],
                     m->done_runs[i]);
    }
    assert_true(m->max_pending <= 16);
    assert_true(m->busy > 0); /* the bound was hit and refused, not grown */
    assert_int_equal(sb__pool_pending(m->pool), 0);
    sb__pool_destroy(m->pool);
    free(m);
}

/* ---- capacity ------------------------------------------------------------------------- */

typedef struct counted {
    gate_t *gate;
    int done;
    int target;
    int off_loop;
} counted_t;

static void gated_work(void *arg)
{
    gate_pass(((counted_t *)arg)->gate);
}

static void counted_done(void *arg)
{
    counted_t *c = arg;
    if (!pthread_equal(pthread_self(), fx.loop_thread))
        c->off_loop++;
    if (++c->done == c->target)
        event_base_loopbreak(fx.base);
}

static void test_busy_at_capacity(void **state)
{
    (void)state;
    gate_t g;
    gate_init(&g);
    counted_t c = {.gate = &g, .target = 3};
    sb__pool_t *p = new_pool(1, 3);
    assert_int_equal(sb__pool_pending(p), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(sb__pool_submit(p, gated_work, counted_done, &c), SB_EOK);
    assert_int_equal(sb__pool_pending(p), 3);
    /* Full, whether the jobs are queued or running, and it stays full. */
    assert_int_equal(sb__pool_submit(p, gated_work, counted_done, &c), SB_EBUSY);
    gate_wait_for(&g, 1);
    assert_int_equal(sb__pool_submit(p, gated_work, counted_done, &c), SB_EBUSY);
    assert_int_equal(sb__pool_pending(p), 3);
    assert_int_equal(sb__pool_submit(p, NULL, counted_done, &c), SB_EINVAL);
    gate_open(&g);
    run_loop();
    assert_int_equal(c.done, 3);
    assert_int_equal(c.off_loop, 0);
    assert_int_equal(sb__pool_pending(p), 0);
    /* Room again; a NULL done is allowed. */
    c.target = 4;
    assert_int_equal(sb__pool_submit(p, gated_work, NULL, &c), SB_EOK);
    assert_int_equal(sb__pool_submit(p, gated_work, counted_done, &c), SB_EOK);
    run_loop();
    assert_int_equal(c.done, 4);
    assert_int_equal(sb__pool_pending(p), 0);
    sb__pool_destroy(p);
    gate_fini(&g);
}

/* ---- concurrency ---------------------------------------------------------------------- */

/* Two jobs meet: each arrives and waits (up to 10 s) for the other. With one thread the
 * first would wait alone and time out. */
typedef struct rendezvous {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    atomic_int met;
    int done;
} rendezvous_t;

static void meet_work(void *arg)
{
    rendezvous_t *r = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&r->mu);
    r->arrived++;
    pthread_cond_broadcast(&r->cv);
    while (r->arrived < 2)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &until) != 0)
            break;
    if (r->arrived >= 2)
        atomic_fetch_add(&r->met, 1);
    pthread_mutex_unlock(&r->mu);
}

static void meet_done(void *arg)
{
    rendezvous_t *r = arg;
    if (++r->done == 2)
        event_base_loopbreak(fx.base);
}

static void test_concurrent(void **state)
{
    (void)state;
    rendezvous_t r = {.arrived = 0};
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    atomic_init(&r.met, 0);
    sb__pool_t *p = new_pool(2, 2);
    assert_int_equal(sb__pool_submit(p, meet_work, meet_done, &r), SB_EOK);
    assert_int_equal(sb__pool_submit(p, meet_work, meet_done, &r), SB_EOK);
    run_loop();
    assert_int_equal(r.done, 2);
    assert_int_equal(atomic_load(&r.met), 2);
    sb__pool_destroy(p);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
}

/* ---- shutdown and destroy ------------------------------------------------------------- */

static void test_shutdown_delivers(void **state)
{
    (void)state;
    gate_t g;
    gate_init(&g);
    counted_t c = {.gate = &g, .target = 10};
    sb__pool_t *p = new_pool(1, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(sb__pool_submit(p, gated_work, counted_done, &c), SB_EOK);
    gate_wait_for(&g, 1); /* one running, nine queued */
    sb__pool_shutdown(p);
    sb__pool_shutdown(p); /* idempotent */
    assert_int_equal(sb__pool_submit(p, gated_work, counted_done, &c), SB_ECLOSED);
    assert_int_equal(sb__pool_pending(p), 10);
    gate_open(&g);
    run_loop();
    assert_int_equal(c.done, 10);
    assert_int_equal(c.off_loop, 0);
    assert_int_equal(sb__pool_pending(p), 0);
    sb__pool_destroy(p);
    gate_fini(&g);
}

static void test_destroy_delivers(void **state)
{
    (void)state;
    gate_t g;
    gate_init(&g);
    gate_open(&g);
    counted_t c = {.gate = &g, .target = -1};
    sb__pool_t *p = new_pool(2, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(sb__pool_submit(p, gated_work, counted_done, &c), SB_EOK);
    /* The loop never runs: destroy finishes the work and calls every done here. */
    sb__pool_destroy(p);
    assert_int_equal(c.done, 8);
    assert_int_equal(c.off_loop, 0); /* the caller's thread, which is this one */
    gate_fini(&g);
}

static void test_args(void **state)
{
    (void)state;
    sb__pool_destroy(NULL);
    assert_int_equal(sb__pool_pending(NULL), 0);
    sb__pool_shutdown(NULL);
    assert_int_equal(sb__pool_submit(NULL, gated_work, NULL, NULL), SB_EINVAL);
    sb__pool_t *p = (sb__pool_t *)0x1;
    char err[128] = "";
    assert_int_equal(sb__pool_new(NULL, 1, 1, &p, err, sizeof err), SB_EINVAL);
    assert_null(p);
    assert_true(strlen(err) > 0);
    assert_int_equal(sb__pool_new(fx.base, 0, 1, &p, NULL, 0), SB_EINVAL);
    assert_int_equal(sb__pool_new(fx.base, 1, 0, &p, NULL, 0), SB_EINVAL);
    assert_int_equal(sb__pool_new(fx.base, 1, 1, NULL, NULL, 0), SB_EINVAL);
}

static long alloc_countdown = -1; /* fail when it reaches 0; negative: never */

static void *failing_malloc(size_t size)
{
    if (alloc_countdown >= 0 && alloc_countdown-- == 0)
        return NULL;
    return malloc(size);
}

static void *failing_realloc(void *ptr, size_t size)
{
    if (alloc_countdown >= 0 && alloc_countdown-- == 0)
        return NULL;
    return realloc(ptr, size);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    for (long fail_at = 0;; fail_at++) {
        assert_true(fail_at < 100);
        alloc_countdown = fail_at;
        sb_set_allocator(failing_malloc, failing_realloc, free);
        sb__pool_t *p = NULL;
        char err[128] = "";
        int rc = sb__pool_new(fx.base, 3, 5, &p, err, sizeof err);
        sb_set_allocator(NULL, NULL, NULL);
        if (rc == SB_EOK) {
            assert_true(alloc_countdown >= 0); /* no injected failure was hit */
            sb__pool_destroy(p);
            break;
        }
        assert_int_equal(rc, SB_ENOMEM);
        assert_null(p);
        assert_string_equal(err, "pool: out of memory");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_many_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_at_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_delivers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_delivers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
