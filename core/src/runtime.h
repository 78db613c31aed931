/* runtime.h: the process's one libevent loop, its timers, signals and graceful shutdown.
 *
 * Lifecycle: sb__runtime_new() -> components attach to sb__runtime_base() and register as
 * shutdown participants -> sb__runtime_run() (blocks the calling thread, which becomes the
 * loop thread) -> sb__runtime_destroy().
 *
 * Shutdown: SIGINT, SIGTERM or sb__runtime_stop() start it. The runtime logs "shutdown
 * requested", calls every participant's stop_intake(), then sums inflight() every few
 * milliseconds and whenever sb__runtime_poke() is called. When the sum reaches zero, or
 * shutdown_timeout_ms passes (a warning names the count left), it calls every finish() once
 * and sb__runtime_run() returns. A second SIGINT/SIGTERM during shutdown logs "second
 * signal: exiting now" and run() returns at once with 128 + signo, without finish().
 *
 * Loop affinity: every function here runs on the loop thread except sb__runtime_stop() and
 * sb__runtime_poke(), which any thread may call. Only one runtime per process should exist
 * at a time: libevent delivers signals to one event base. */
#ifndef SB_RUNTIME_H
#define SB_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

typedef struct sb__runtime sb__runtime_t;
typedef struct sb__timer sb__timer_t;

/* Exit statuses sb__runtime_run() returns. */
#define SB__RUNTIME_EXIT_OK      0 /* graceful: in-flight work settled */
#define SB__RUNTIME_EXIT_TIMEOUT 1 /* shutdown_timeout expired with work in flight */
#define SB__RUNTIME_EXIT_FAILURE 1 /* the loop itself failed */
/* After a second signal: 128 + the signal number (130 for SIGINT, 143 for SIGTERM). */

/* Hooks of a component that takes part in graceful shutdown. Every member may be NULL. The
 * struct is copied; `arg` is passed back to each hook. All hooks run on the loop thread and
 * must not block on I/O. */
typedef struct sb__runtime_participant {
    const char *name;               /* for logs; borrowed, must outlive the registration */
    void (*stop_intake)(void *arg); /* once, when shutdown begins: stop consuming */
    size_t (*inflight)(void *arg);  /* messages received but not yet settled */
    void (*finish)(void *arg);      /* once, after drain or timeout: flush, commit, close */
} sb__runtime_participant_t;

typedef void (*sb__timer_cb)(sb__timer_t *t, void *arg);

/* Creates the loop. Makes libevent thread-aware (evthread_use_pthreads, once per process)
 * so other threads may wake it, installs SIGINT/SIGTERM handling and ignores SIGPIPE
 * process-wide. shutdown_timeout_ms bounds the drain (0: do not wait). Returns SB_EOK with
 * *out set (caller destroys with sb__runtime_destroy()), or SB_ENOMEM / SB_EINVAL /
 * SB_EIO with a reason in errstr. */
int sb__runtime_new(sb__runtime_t **out, uint64_t shutdown_timeout_ms, char *errstr,
                    size_t errstr_size);

/* Frees the loop and its own events. Timers and everything else attached to the base must
 * be freed first. NULL is a no-op. Not while run() is executing. */
void sb__runtime_destroy(sb__runtime_t *rt);

/* The event base, for components to attach to. Lives as long as the runtime. */
struct event_base *sb__runtime_base(sb__runtime_t *rt);

/* Runs the loop until shutdown completes; returns the process exit status (see above).
 * Call once per runtime. */
int sb__runtime_run(sb__runtime_t *rt);

/* Begins graceful shutdown as SIGTERM does (but a second call is not a "second signal").
 * Any thread; the work happens on the loop thread, also when called before run(). */
void sb__runtime_stop(sb__runtime_t *rt);

/* Says "something settled": during shutdown, in-flight counts are re-checked at once
 * instead of at the next periodic check. Any thread; cheap; no-op outside shutdown. */
void sb__runtime_poke(sb__runtime_t *rt);

/* True once shutdown has begun (stop_intake was or is being called). Loop thread. */
bool sb__runtime_stopping(const sb__runtime_t *rt);

/* Registers a participant. SB_EOK, SB_EINVAL (NULL), SB_ENOMEM, or SB_ESTATE once shutdown
 * has begun. */
int sb__runtime_add_participant(sb__runtime_t *rt, const sb__runtime_participant_t *p, void *arg);

/* Unregisters the participant added with the same hooks table pointer's contents and arg.
 * SB_EOK or SB_ENOTFOUND. Not from inside one of the participant hooks. */
int sb__runtime_remove_participant(sb__runtime_t *rt, const sb__runtime_participant_t *p,
                                   void *arg);

/* A timer on the loop. Created stopped; NULL on allocation failure. The callback may stop,
 * restart or destroy its own timer. */
sb__timer_t *sb__runtime_timer_new(sb__runtime_t *rt, sb__timer_cb cb, void *arg);

/* (Re)arms the timer to fire after `ms` milliseconds, and then every `ms` if `repeat`.
 * Restarting a pending timer replaces its schedule. SB_EOK or SB_EIO. */
int sb__timer_start(sb__timer_t *t, uint64_t ms, bool repeat);

/* Disarms the timer; no-op if it is not pending. */
void sb__timer_stop(sb__timer_t *t);

/* True while the timer is armed. */
bool sb__timer_pending(const sb__timer_t *t);

/* Stops and frees the timer. NULL is a no-op. */
void sb__timer_destroy(sb__timer_t *t);

#endif
