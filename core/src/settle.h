/* settle.h: the dispatcher, which takes each delivery from a transport to its settlement.
 *
 * Per message: intake (decode, validate, route) -> for each matched handler: idempotency
 * claim -> run (loop thread, worker pool, or asynchronously with SB_PENDING) -> record the
 * outcome (complete or release the claim) -> once every handler has an outcome, settle the
 * message exactly once: ack; retry later through the transport (delay from the handlers'
 * policies, attempts in x-sb-attempts); or dead-letter with the x-sb-* metadata.
 *
 * Design choices:
 *  - In-flight messages live in a fixed array of slots (max_inflight) allocated at start:
 *    memory is flat under any backlog; when the slots run out, the transport is paused.
 *  - Claims and completions go to the store without waiting (the store pipelines them).
 *  - A handler that already succeeded for an event is skipped on redelivery (its key is
 *    done), so a multi-handler message retried for one handler does not re-run the others.
 *  - Follow-up events published by a handler are confirmed before the handler counts as
 *    done; a failed publish makes it a retry.
 *  - Blocking handlers run on the worker pool and cannot be interrupted: when one ran longer
 *    than its timeout (time spent waiting for a worker not counted), the attempt counts as
 *    a timeout once it returns. Their follow-ups are published when the attempt succeeds.
 *    Pending (asynchronous) handlers that overrun are given up at once; their late
 *    completion is ignored.
 *
 * Not here: decoding (intake.c), broker specifics (transport_*.c), store specifics. */
#ifndef SB_SETTLE_H
#define SB_SETTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "histogram.h"
#include "intake.h"
#include "pool.h"
#include "retry.h"
#include "runtime.h"
#include "store.h"
#include "transport.h"

/* A configured handler instance, owned by the registry. */
typedef struct sb__handler {
    char *name;  /* instance name: logs, x-sb-handler, idempotency keys */
    char **bind; /* the patterns it is bound to (NULL-terminated copies): the config's bind,
                    else the module's default pattern */
    const sb_handler_def_t *def;
    void *ud; /* the module instance's state */
    bool blocking;
    uint64_t timeout_ms;
    sb__retry_policy_t retry;
    /* counters (loop thread) */
    uint64_t n_ok, n_retried, n_rejected, n_duplicates, n_timeouts, n_dead_lettered;
    sb__histogram_t duration; /* seconds per attempt that ran */
} sb__handler_t;

typedef struct sb__dispatcher sb__dispatcher_t;

typedef struct sb__dispatcher_opts {
    unsigned max_inflight;             /* slots; default 1000 */
    const char *consumer;              /* service.name, for x-sb-consumer */
    const char *group;                 /* consumer group, part of idempotency keys */
    const char *key_prefix;            /* idempotency key prefix, default "sb:idem:" */
    uint64_t lease_ms;                 /* claim lease, default 30 s */
    uint64_t done_ttl_ms;              /* how long a done key is remembered, default 7 d */
    bool process_without_store;        /* store unavailable: run anyway (on_unavailable: process) */
    struct sb__crashguard *crashguard; /* NULL: off; see crashguard.h */
} sb__dispatcher_opts_t;

/* Dead-letter reasons: decode, schema, unroutable, rejected, max-attempts, timeout,
 * crashed (sb__dl_reasons). */
#define SB__N_DL_REASONS 7

typedef struct sb__dispatcher_stats {
    uint64_t received, acked, retried, dead_lettered, released;
    uint64_t duplicates;                     /* handler runs skipped: already done for this event */
    uint64_t duplicate_events;               /* messages acked without running anything: all done */
    uint64_t dl_by_reason[SB__N_DL_REASONS]; /* in sb__dl_reasons order */
    uint64_t acked_unroutable, acked_invalid;
    uint64_t publishes, publish_failures;
} sb__dispatcher_stats_t;

extern const char *const sb__dl_reasons[SB__N_DL_REASONS];

/* Creates a dispatcher. All arguments are borrowed and must outlive it; store and pool may
 * be NULL (no idempotency; blocking handlers refused at registration). It registers itself
 * as a shutdown participant of rt and becomes the transport's sink. */
int sb__dispatcher_new(sb__runtime_t *rt, sb__intake_t *intake, sb__transport_t *tx,
                       sb__store_t *store, sb__pool_t *pool, const sb__dispatcher_opts_t *o,
                       sb__dispatcher_t **out, char *errstr, size_t errstr_size);
void sb__dispatcher_destroy(sb__dispatcher_t *dp);

/* The transport sink (pass with the dispatcher as sink_arg). */
void sb__dispatcher_deliver(void *dispatcher, sb__delivery_t *d);

size_t sb__dispatcher_inflight(const sb__dispatcher_t *dp);
const sb__dispatcher_stats_t *sb__dispatcher_stats(const sb__dispatcher_t *dp);

/* Observer for tests and the harness: called on every message settlement. */
typedef enum sb__settlement {
    SB__SETTLED_ACK = 0,
    SB__SETTLED_RETRY = 1,
    SB__SETTLED_DEAD_LETTER = 2,
    SB__SETTLED_RELEASE = 3,
} sb__settlement_t;
typedef struct sb__settle_info {
    sb__settlement_t how;
    const sb_event_t *ev; /* may be half-decoded for decode failures */
    uint64_t delay_ms;    /* retries */
    unsigned attempt;     /* the attempt that just ended */
    const char *reason;   /* dead letters */
    const char *error;
    const char *handler;
} sb__settle_info_t;
void sb__dispatcher_observe(sb__dispatcher_t *dp,
                            void (*fn)(void *arg, const sb__settle_info_t *info), void *arg);

/* ---- what the host API (host.c) needs to see ------------------------------------------ */

typedef struct sb__slot sb__slot_t;
typedef struct sb__hstate sb__hstate_t;

struct sb_context {
    sb__hstate_t *hs;
};

struct sb_pending {
    sb__hstate_t *hs; /* NULL once the attempt was given up (timeout) */
};

const char *sb__ctx_handler(const sb_context_t *ctx);
void sb__ctx_retry_after(sb_context_t *ctx, uint64_t delay_ms);
void sb__ctx_reason(sb_context_t *ctx, const char *fmt, va_list ap);
int sb__ctx_publish(sb_context_t *ctx, const char *type, const char *body, size_t len,
                    const char *key);
sb_pending_t *sb__ctx_pending(sb_context_t *ctx);
void sb__pending_complete(sb_pending_t *p, sb_outcome_t outcome);

#endif
