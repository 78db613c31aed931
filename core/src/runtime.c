/* runtime.c: the libevent loop, timers, signals and the graceful-shutdown protocol.
 *
 * Design: signals arrive through libevent's evsignal (its handler only writes to a socket
 * pair), so all shutdown work runs as ordinary callbacks on the loop thread. Shutdown is a
 * small state machine, RUNNING -> DRAINING -> DONE: stop_intake() on every participant,
 * then a drain check (a 10 ms periodic timer, plus an immediate re-check whenever a component
 * calls sb__runtime_poke()), bounded by a one-shot deadline timer. Only sb__runtime_stop()
 * and sb__runtime_poke() cross threads, and both merely activate an event, which libevent
 * makes safe once evthread_use_pthreads() was called.
 *
 * Does not own the components' events (transports and stores attach to the base
 * themselves), does no I/O of its own besides logging, and never calls exit(): the exit status
 * is returned to main(). */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "log.h"
#include "runtime.h"

#define DRAIN_CHECK_MS 10

enum { ST_RUNNING = 0, ST_DRAINING = 1, ST_DONE = 2 };

typedef struct participant {
    sb__runtime_participant_t p;
    void *arg;
} participant_t;

struct sb__runtime {
    struct event_base *base;
    struct event *sig_int, *sig_term;
    struct event *stop_ev;     /* activated by sb__runtime_stop(), any thread */
    struct event *poke_ev;     /* activated by sb__runtime_poke(), any thread */
    struct event *tick_ev;     /* periodic drain check while draining */
    struct event *deadline_ev; /* shutdown_timeout */
    participant_t *parts;
    size_t nparts, cap;
    uint64_t timeout_ms;
    atomic_int state;
    int status;
    bool ran;
};

struct sb__timer {
    sb__runtime_t *rt;
    struct event *ev;
    sb__timer_cb cb;
    void *arg;
};

static const sb__log_fields_t log_fields = {.module = "runtime"};

static void set_err(char *errstr, size_t n, const char *msg)
{
    if (errstr && n)
        snprintf(errstr, n, "%s", msg);
}

/* Clamped to ~68 years so that libevent's "now + tv" cannot overflow. */
static struct timeval ms_to_tv(uint64_t ms)
{
    const uint64_t max_ms = (uint64_t)INT32_MAX * 1000u;
    if (ms > max_ms)
        ms = max_ms;
    struct timeval tv;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    return tv;
}

/* ---- shutdown state machine ------------------------------------------------------------- */

static size_t total_inflight(const sb__runtime_t *rt)
{
    size_t sum = 0;
    for (size_t i = 0; i < rt->nparts; i++)
        if (rt->parts[i].p.inflight)
            sum += rt->parts[i].p.inflight(rt->parts[i].arg);
    return sum;
}

static void finish_all(sb__runtime_t *rt, int status)
{
    atomic_store(&rt->state, ST_DONE);
    event_del(rt->tick_ev);
    event_del(rt->deadline_ev);
    for (size_t i = 0; i < rt->nparts; i++)
        if (rt->parts[i].p.finish)
            rt->parts[i].p.finish(rt->parts[i].arg);
    rt->status = status;
    sb__log_fields(SB_LOG_INFO, &log_fields, (sb__log_kv_t[]){SB__KV_I("exit_status", status)}, 1,
                   "shutdown complete");
    event_base_loopbreak(rt->base);
}

static void check_drained(sb__runtime_t *rt)
{
    if (atomic_load(&rt->state) == ST_DRAINING && total_inflight(rt) == 0)
        finish_all(rt, SB__RUNTIME_EXIT_OK);
}

static void begin_shutdown(sb__runtime_t *rt, const char *reason)
{
    atomic_store(&rt->state, ST_DRAINING);
    sb__log_fields(
        SB_LOG_INFO, &log_fields,
        (sb__log_kv_t[]){SB__KV_S("reason", reason), SB__KV_I("timeout_ms", rt->timeout_ms)}, 2,
        "shutdown requested");
    for (size_t i = 0; i < rt->nparts; i++)
        if (rt->parts[i].p.stop_intake)
            rt->parts[i].p.stop_intake(rt->parts[i].arg);
    struct timeval deadline = ms_to_tv(rt->timeout_ms);
    struct timeval tick = ms_to_tv(DRAIN_CHECK_MS);
    if (event_add(rt->deadline_ev, &deadline) != 0 || event_add(rt->tick_ev, &tick) != 0) {
        /* Without timers the drain could wait forever: finish now rather than hang. */
        sb__log(SB_LOG_ERROR, &log_fields, "cannot arm shutdown timers: finishing now");
        finish_all(rt, SB__RUNTIME_EXIT_FAILURE);
        return;
    }
    check_drained(rt);
}

static void on_signal(evutil_socket_t signo, short what, void *arg)
{
    sb__runtime_t *rt = arg;
    int st = atomic_load(&rt->state);
    if (st == ST_RUNNING) {
        begin_shutdown(rt, signo == SIGINT ? "SIGINT" : "SIGTERM");
    } else if (st == ST_DRAINING) {
        sb__log_fields(SB_LOG_ERROR, &log_fields,
                       (sb__log_kv_t[]){SB__KV_S("signal", signo == SIGINT ? "SIGINT" : "SIGTERM"),
                                        SB__KV_I("inflight", total_inflight(rt))},
                       2, "second signal: exiting now");
        atomic_store(&rt->state, ST_DONE);
        event_del(rt->tick_ev);
        event_del(rt->deadline_ev);
        rt->status = 128 + (int)signo;
        event_base_loopbreak(rt->base);
    }
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    sb__runtime_t *rt = arg;
    if (atomic_load(&rt->state) == ST_RUNNING)
        begin_shutdown(rt, "stop requested");
}

static void on_check(evutil_socket_t fd, short what, void *arg)
{
    check_drained(arg);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    sb__runtime_t *rt = arg;
    if (atomic_load(&rt->state) != ST_DRAINING)
        return;
    size_t left = total_inflight(rt);
    if (left == 0) {
        finish_all(rt, SB__RUNTIME_EXIT_OK);
        return;
    }
    sb__log_fields(
        SB_LOG_WARN, &log_fields,
        (sb__log_kv_t[]){SB__KV_I("inflight", left), SB__KV_I("timeout_ms", rt->timeout_ms)}, 2,
        "shutdown timeout expired with messages in flight");
    finish_all(rt, SB__RUNTIME_EXIT_TIMEOUT);
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static pthread_once_t threads_once = PTHREAD_ONCE_INIT;
static int threads_rc = -1;

static void init_threads(void)
{
    threads_rc = evthread_use_pthreads();
}

int sb__runtime_new(sb__runtime_t **out, uint64_t shutdown_timeout_ms, char *errstr,
                    size_t errstr_size)
{
    if (!out) {
        set_err(errstr, errstr_size, "no output pointer");
        return SB_EINVAL;
    }
    *out = NULL;
    pthread_once(&threads_once, init_threads);
    if (threads_rc != 0) {
        set_err(errstr, errstr_size, "libevent: cannot enable thread support");
        return SB_EIO;
    }
    int rc = SB_ENOMEM;
    struct event_config *cfg = NULL;
    sb__runtime_t *rt = sb_calloc(1, sizeof *rt);
    if (!rt)
        goto err;
    rt->timeout_ms = shutdown_timeout_ms;
    atomic_init(&rt->state, ST_RUNNING);

    cfg = event_config_new();
    if (!cfg)
        goto err;
    /* Millisecond timers should mean milliseconds, not the coarse clock's ~4 ms ticks. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    rt->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    cfg = NULL;
    if (!rt->base) {
        rc = SB_EIO;
        set_err(errstr, errstr_size, "libevent: cannot create the event base");
        goto err;
    }
    rt->sig_int = evsignal_new(rt->base, SIGINT, on_signal, rt);
    rt->sig_term = evsignal_new(rt->base, SIGTERM, on_signal, rt);
    rt->stop_ev = event_new(rt->base, -1, 0, on_stop, rt);
    rt->poke_ev = event_new(rt->base, -1, 0, on_check, rt);
    rt->tick_ev = event_new(rt->base, -1, EV_PERSIST, on_check, rt);
    rt->deadline_ev = event_new(rt->base, -1, 0, on_deadline, rt);
    if (!rt->sig_int || !rt->sig_term || !rt->stop_ev || !rt->poke_ev || !rt->tick_ev ||
        !rt->deadline_ev) {
        set_err(errstr, errstr_size, "out of memory creating loop events");
        goto err;
    }
    if (event_add(rt->sig_int, NULL) != 0 || event_add(rt->sig_term, NULL) != 0) {
        rc = SB_EIO;
        set_err(errstr, errstr_size, "libevent: cannot install SIGINT/SIGTERM handling");
        goto err;
    }
    /* A peer closing a socket must be an EPIPE error, not the death of the process. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) != 0) {
        rc = SB_EIO;
        set_err(errstr, errstr_size, "cannot ignore SIGPIPE");
        goto err;
    }
    *out = rt;
    return SB_EOK;
err:
    if (rc == SB_ENOMEM && !rt)
        set_err(errstr, errstr_size, "out of memory");
    if (cfg)
        event_config_free(cfg);
    sb__runtime_destroy(rt);
    return rc;
}

void sb__runtime_destroy(sb__runtime_t *rt)
{
    if (!rt)
        return;
    struct event *evs[] = {rt->sig_int, rt->sig_term, rt->stop_ev,
                           rt->poke_ev, rt->tick_ev,  rt->deadline_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    if (rt->base)
        event_base_free(rt->base);
    sb_free(rt->parts);
    sb_free(rt);
}

struct event_base *sb__runtime_base(sb__runtime_t *rt)
{
    return rt->base;
}

int sb__runtime_run(sb__runtime_t *rt)
{
    if (rt->ran) {
        sb__log(SB_LOG_ERROR, &log_fields, "sb__runtime_run called twice");
        return SB__RUNTIME_EXIT_FAILURE;
    }
    rt->ran = true;
    int r = event_base_dispatch(rt->base);
    if (atomic_load(&rt->state) == ST_DONE)
        return rt->status;
    sb__log(SB_LOG_ERROR, &log_fields, "event loop ended unexpectedly (%s)",
            r < 0 ? "error" : "no events left");
    return SB__RUNTIME_EXIT_FAILURE;
}

void sb__runtime_stop(sb__runtime_t *rt)
{
    if (atomic_load(&rt->state) == ST_RUNNING)
        event_active(rt->stop_ev, EV_TIMEOUT, 0);
}

void sb__runtime_poke(sb__runtime_t *rt)
{
    /* Outside shutdown nobody waits for a drain: settle paths may call this freely. */
    if (atomic_load_explicit(&rt->state, memory_order_relaxed) == ST_DRAINING)
        event_active(rt->poke_ev, EV_TIMEOUT, 0);
}

bool sb__runtime_stopping(const sb__runtime_t *rt)
{
    return atomic_load(&rt->state) != ST_RUNNING;
}

int sb__runtime_add_participant(sb__runtime_t *rt, const sb__runtime_participant_t *p, void *arg)
{
    if (!rt || !p)
        return SB_EINVAL;
    if (atomic_load(&rt->state) != ST_RUNNING)
        return SB_ESTATE;
    if (rt->nparts == rt->cap) {
        size_t cap = rt->cap ? rt->cap * 2 : 4;
        participant_t *np = sb_realloc(rt->parts, cap * sizeof *np);
        if (!np)
            return SB_ENOMEM;
        rt->parts = np;
        rt->cap = cap;
    }
    rt->parts[rt->nparts].p = *p;
    rt->parts[rt->nparts].arg = arg;
    rt->nparts++;
    return SB_EOK;
}

int sb__runtime_remove_participant(sb__runtime_t *rt, const sb__runtime_participant_t *p, void *arg)
{
    if (!rt || !p)
        return SB_EINVAL;
    for (size_t i = 0; i < rt->nparts; i++) {
        const participant_t *q = &rt->parts[i];
        if (q->arg == arg && q->p.stop_intake == p->stop_intake && q->p.inflight == p->inflight &&
            q->p.finish == p->finish) {
            memmove(&rt->parts[i], &rt->parts[i + 1], (rt->nparts - i - 1) * sizeof *q);
            rt->nparts--;
            return SB_EOK;
        }
    }
    return SB_ENOTFOUND;
}

/* ---- timers ----------------------------------------------------------------------------- */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    sb__timer_t *t = arg;
    t->cb(t, t->arg); /* may destroy t: nothing after this */
}

sb__timer_t *sb__runtime_timer_new(sb__runtime_t *rt, sb__timer_cb cb, void *arg)
{
    if (!rt || !cb)
        return NULL;
    sb__timer_t *t = sb_calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->rt = rt;
    t->cb = cb;
    t->arg = arg;
    t->ev = event_new(rt->base, -1, 0, on_timer, t);
    if (!t->ev) {
        sb_free(t);
        return NULL;
    }
    return t;
}

int sb__timer_start(sb__timer_t *t, uint64_t ms, bool repeat)
{
    /* The persist flag is fixed at assignment, so re-assign the (now idle) event. */
    event_del(t->ev);
    if (event_assign(t->ev, t->rt->base, -1, repeat ? EV_PERSIST : 0, on_timer, t) != 0)
        return SB_EIO;
    struct timeval tv = ms_to_tv(ms);
    return event_add(t->ev, &tv) == 0 ? SB_EOK : SB_EIO;
}

void sb__timer_stop(sb__timer_t *t)
{
    event_del(t->ev);
}

bool sb__timer_pending(const sb__timer_t *t)
{
    return event_pending(t->ev, EV_TIMEOUT, NULL) != 0;
}

void sb__timer_destroy(sb__timer_t *t)
{
    if (!t)
        return;
    event_free(t->ev);
    sb_free(t);
}
