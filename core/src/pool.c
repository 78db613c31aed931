/* pool.c: a bounded worker pool whose completions come back on the libevent loop.
 *
 * Design: `queue_cap` job records are allocated up front. Free records are a list only the
 * loop thread touches (submit takes one, delivery gives it back), so the free list needs no
 * lock and "pending" is simply cap - free. Queued and finished jobs are two FIFO lists under
 * one mutex; workers sleep on a condition variable. A worker that finishes a job appends it
 * to the done list and, if no delivery is already scheduled, makes one event active with
 * event_active() (thread-safe on a thread-aware base); the loop then detaches the whole done
 * list at once and calls each done callback, so N completions cost about one wake-up. A
 * delivery processes only the jobs it detached: done callbacks that submit more work cannot
 * keep the loop inside one callback forever.
 *
 * Does not grow, time out or cancel jobs (a handler timeout settles the message; its work
 * still runs to the end on its worker), and does not retry: SB_EBUSY goes to the caller.
 * Workers block every signal so that signals reach the loop thread. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "pool.h"

typedef struct job {
    sb__pool_work_fn work;
    sb__pool_done_fn done;
    void *arg;
    struct job *next;
} job_t;

struct sb__pool {
    struct event_base *base;
    struct event *done_ev; /* made active by workers; delivers done callbacks on the loop */

    job_t *jobs; /* the `cap` preallocated records */
    unsigned cap;
    job_t *free_list; /* loop thread only */
    size_t nfree;     /* loop thread only */

    pthread_mutex_t mu;     /* guards everything below */
    pthread_cond_t work_cv; /* signalled on submit and shutdown */
    job_t *queue_head, *queue_tail;
    job_t *done_head, *done_tail;
    bool delivery_armed; /* done_ev has been (or is being) activated and has not run yet */
    bool closing;

    pthread_t *threads;
    unsigned nthreads; /* started */
    bool mu_ok, cv_ok;
};

static void set_err(char *errstr, size_t n, const char *msg)
{
    if (errstr && n)
        snprintf(errstr, n, "%s", msg);
}

static void append(job_t **head, job_t **tail, job_t *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

/* ---- worker side ---------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    sb__pool_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->queue_head && !p->closing)
            pthread_cond_wait(&p->work_cv, &p->mu);
        job_t *j = p->queue_head;
        if (!j)
            break; /* closing and drained */
        p->queue_head = j->next;
        if (!p->queue_head)
            p->queue_tail = NULL;
        pthread_mutex_unlock(&p->mu);

        j->work(j->arg);

        pthread_mutex_lock(&p->mu);
        append(&p->done_head, &p->done_tail, j);
        if (!p->delivery_armed) {
            p->delivery_armed = true;
            pthread_mutex_unlock(&p->mu);
            event_active(p->done_ev, EV_READ, 0);
            pthread_mutex_lock(&p->mu);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- loop side ------------------------------------------------------------------------ */

static job_t *take_done(sb__pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    job_t *list = p->done_head;
    p->done_head = p->done_tail = NULL;
    p->delivery_armed = false;
    pthread_mutex_unlock(&p->mu);
    return list;
}

/* Frees each record before calling its done callback, so the callback may submit again. */
static void deliver(sb__pool_t *p, job_t *list)
{
    while (list) {
        job_t *j = list;
        list = j->next;
        sb__pool_done_fn done = j->done;
        void *arg = j->arg;
        j->next = p->free_list;
        p->free_list = j;
        p->nfree++;
        if (done)
            done(arg);
    }
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sb__pool_t *p = arg;
    deliver(p, take_done(p));
}

int sb__pool_submit(sb__pool_t *p, sb__pool_work_fn work, sb__pool_done_fn done, void *arg)
{
    if (!p || !work)
        return SB_EINVAL;
    pthread_mutex_lock(&p->mu);
    if (p->closing) {
        pthread_mutex_unlock(&p->mu);
        return SB_ECLOSED;
    }
    job_t *j = p->free_list;
    if (!j) {
        pthread_mutex_unlock(&p->mu);
        return SB_EBUSY;
    }
    p->free_list = j->next;
    p->nfree--;
    j->work = work;
    j->done = done;
    j->arg = arg;
    append(&p->queue_head, &p->queue_tail, j);
    pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    return SB_EOK;
}

size_t sb__pool_pending(const sb__pool_t *p)
{
    return p ? p->cap - p->nfree : 0;
}

void sb__pool_shutdown(sb__pool_t *p)
{
    if (!p || !p->mu_ok)
        return;
    pthread_mutex_lock(&p->mu);
    p->closing = true;
    if (p->cv_ok)
        pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

void sb__pool_destroy(sb__pool_t *p)
{
    if (!p)
        return;
    sb__pool_shutdown(p);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    /* Workers are gone: nothing can activate done_ev any more, and the queue is drained. */
    if (p->done_ev)
        event_free(p->done_ev);
    if (p->mu_ok)
        deliver(p, take_done(p));
    if (p->cv_ok)
        pthread_cond_destroy(&p->work_cv);
    if (p->mu_ok)
        pthread_mutex_destroy(&p->mu);
    sb_free(p->threads);
    sb_free(p->jobs);
    sb_free(p);
}

int sb__pool_new(struct event_base *base, unsigned threads, unsigned queue_cap, sb__pool_t **out,
                 char *errstr, size_t errstr_size)
{
    if (out)
        *out = NULL;
    if (!base || !out || threads == 0 || queue_cap == 0) {
        set_err(errstr, errstr_size,
                "pool: needs a base, an output, threads >= 1 and queue_cap >= 1");
        return SB_EINVAL;
    }
    int rc = SB_ENOMEM;
    sb__pool_t *p = sb_calloc(1, sizeof *p);
    if (!p) {
        set_err(errstr, errstr_size, "pool: out of memory");
        return SB_ENOMEM;
    }
    p->base = base;
    p->cap = queue_cap;
    p->jobs = sb_calloc(queue_cap, sizeof *p->jobs);
    p->threads = sb_calloc(threads, sizeof *p->threads);
    if (!p->jobs || !p->threads) {
        set_err(errstr, errstr_size, "pool: out of memory");
        goto err;
    }
    for (unsigned i = queue_cap; i-- > 0;) {
        p->jobs[i].next = p->free_list;
        p->free_list = &p->jobs[i];
    }
    p->nfree = queue_cap;

    rc = SB_EIO;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        set_err(errstr, errstr_size, "pool: cannot create a mutex");
        goto err;
    }
    p->mu_ok = true;
    if (pthread_cond_init(&p->work_cv, NULL) != 0) {
        set_err(errstr, errstr_size, "pool: cannot create a condition variable");
        goto err;
    }
    p->cv_ok = true;
    p->done_ev = event_new(base, -1, 0, on_done, p);
    if (!p->done_ev) {
        rc = SB_ENOMEM;
        set_err(errstr, errstr_size, "pool: cannot create the completion event");
        goto err;
    }

    /* Workers inherit a mask blocking every signal: SIGTERM and SIGINT belong to the loop. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0)
            break;
        p->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (p->nthreads != threads) {
        char msg[96];
        snprintf(msg, sizeof msg, "pool: cannot start worker thread %u of %u", p->nthreads + 1,
                 threads);
        set_err(errstr, errstr_size, msg);
        goto err;
    }
    *out = p;
    return SB_EOK;
err:
    sb__pool_destroy(p);
    return rc;
}
