/* pool.h: a bounded pool of worker threads for handlers declared blocking.
 *
 * The loop thread submits a job (work + done + arg); a worker runs work(arg); then done(arg)
 * runs back on the loop thread, through an event of the loop's base. The loop never waits
 * for a worker: a full pool refuses at once with SB_EBUSY, and the caller decides (pause
 * intake, retry later). Job records are preallocated, so submitting never allocates.
 *
 * Requirement: the event base must be thread-aware (created after evthread_use_pthreads(),
 * which sb__runtime_new() does), because workers wake it with event_active().
 *
 * Loop affinity: sb__pool_new, _submit, _pending, _shutdown and _destroy run on the loop
 * thread (the thread running the base); work functions on a worker thread; done functions
 * on the loop thread, except those still undelivered at destroy (see sb__pool_destroy). */
#ifndef SB_POOL_H
#define SB_POOL_H

#include <stddef.h>

struct event_base;

typedef struct sb__pool sb__pool_t;

typedef void (*sb__pool_work_fn)(void *arg); /* runs on a worker thread; may block */
typedef void (*sb__pool_done_fn)(void *arg); /* runs on the loop thread afterwards */

/* Starts `threads` workers (>= 1) with room for `queue_cap` jobs (>= 1) queued, running or
 * awaiting delivery of their done callback. `base` is borrowed and must outlive the pool.
 * Returns SB_EOK with *out set (release with sb__pool_destroy()), SB_EINVAL, SB_ENOMEM, or
 * SB_EIO when a thread or event cannot be created; on failure nothing is left running. */
int sb__pool_new(struct event_base *base, unsigned threads, unsigned queue_cap, sb__pool_t **out,
                 char *errstr, size_t errstr_size);

/* Queues a job: work(arg) on a worker, then done(arg) on the loop (done may be NULL). Never
 * blocks and never allocates. SB_EOK; SB_EBUSY when queue_cap jobs are queued, running or
 * awaiting delivery; SB_ECLOSED once sb__pool_shutdown() was called; SB_EINVAL without work.
 * On failure neither function will be called. A done callback may submit again: its own
 * job record is already free by then. */
int sb__pool_submit(sb__pool_t *p, sb__pool_work_fn work, sb__pool_done_fn done, void *arg);

/* Jobs queued + running + finished but whose done callback has not been called yet. */
size_t sb__pool_pending(const sb__pool_t *p);

/* Stops accepting jobs. Queued jobs still run and their done callbacks are still delivered
 * on the loop (keep it running until sb__pool_pending() is 0); then the workers exit. Does
 * not wait. Idempotent. */
void sb__pool_shutdown(sb__pool_t *p);

/* Shuts down, waits for the workers to finish every queued job (this blocks: call it when
 * the loop has stopped or the pool is drained), and frees the pool. Done callbacks not yet
 * delivered on the loop are called here, synchronously, from the calling thread, in
 * completion order. NULL is a no-op. Not from inside a work or done callback. */
void sb__pool_destroy(sb__pool_t *p);

#endif
