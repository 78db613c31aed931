/* transport_memory.h: the in-memory transport (embedded broker for the demo and the handler
 * test harness), plus its inspection and fault-injection API for tests.
 *
 * It honours the whole transport.h contract: deliveries reach the sink in batches from a
 * libevent callback (never from inside inject(), a settlement call or the sink itself);
 * retry_later() holds a copy on a timer for the delay; dead_letter() appends to a bounded
 * dead-letter queue; publish() records follow-ups and, with loopback, enqueues them too.
 * Every asynchronous completion is reported from a later loop turn, like a broker's confirm.
 *
 * Attempt numbering: a message carries the number of attempts already made in the header
 * x-sb-attempts (absent means none); its delivery has attempt = that number + 1. So
 * retry_later(d, delay, next_attempt) enqueues a copy with x-sb-attempts = next_attempt - 1,
 * which is delivered with attempt == next_attempt; a dead letter's x-sb-attempts is
 * meta->attempts (attempts made). Both meanings agree.
 *
 * Loop affinity: everything here runs on the thread of the event base given to
 * sb__memtx_new(). Nothing here may be called from another thread. destroy() must not be
 * called from inside the sink or from a completion callback of the same transport; it
 * frees every message (queued, delayed, in flight, dead letters, published records),
 * cancels the timers and drops pending completions without calling them. */
#ifndef SB_TRANSPORT_MEMORY_H
#define SB_TRANSPORT_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "transport.h"

struct event_base;

typedef struct sb__memtx_opts {
    size_t capacity;        /* max messages held: queued + delayed + in flight; 0: 10000 */
    size_t dlq_capacity;    /* max dead letters kept; 0: 10000 */
    size_t published_keep;  /* published records kept for inspection (the most recent ones,
                               older ones are dropped); 0: 10000 */
    bool loopback;          /* published follow-ups are also enqueued for consumption */
    unsigned batch;         /* deliveries per loop turn; 0: 64 */
    const char *queue_name; /* delivery source and x-sb-original-queue; NULL: "memory";
                               copied */
} sb__memtx_opts_t;

/* Creates a memory transport on `base` (borrowed; must outlive the transport). `o` may be
 * NULL for all defaults; zero fields take their defaults. Deliveries go to sink(sink_arg, d)
 * once started. SB_EOK and *out (destroy with (*out)->ops->destroy(*out)), or SB_EINVAL
 * (NULL base, sink or out) or SB_ENOMEM. */
int sb__memtx_new(struct event_base *base, const sb__memtx_opts_t *o, sb__tx_sink_fn sink,
                  void *sink_arg, sb__transport_t **out);

/* A message to inject, as a producer would send it. Strings may be NULL (absent) except
 * that body may be NULL only with body_len 0. In headers, a name_len or value_len of 0
 * means "NUL-terminated, use strlen()", so tests may write {.name = "a", .value = "b"};
 * an empty value is therefore written "" (length 0 either way). */
typedef struct sb__memtx_msg {
    const char *routing_key;
    const char *body;
    size_t body_len;
    const char *message_id;
    const char *content_type;
    const char *amqp_type;
    const sb__header_t *headers;
    size_t n_headers;
} sb__memtx_msg_t;

/* Enqueues a copy of *m (everything is copied; nothing is borrowed after the call). It is
 * delivered on a later loop turn while the transport is started, not paused and not
 * stopped. SB_EOK; SB_EBUSY when capacity messages are held (the queue never grows beyond
 * it); SB_EINVAL (NULL arguments, NULL body with a length); SB_ETOOBIG (a header longer
 * than 4 GiB); SB_ENOMEM. */
int sb__memtx_inject(sb__transport_t *t, const sb__memtx_msg_t *m);

/* A stored message: a dead letter or a published follow-up. Every string is NUL-terminated
 * (headers also carry their exact lengths; values are byte for byte what was given). Lives
 * until the transport is destroyed, the record is replayed, or (published ones) it is
 * dropped to respect published_keep. Read-only. */
typedef struct sb__memtx_record {
    const char *routing_key; /* dead letter: the original routing key; published: type */
    const char *body;
    size_t body_len;
    const char *message_id;   /* NULL when absent */
    const char *content_type; /* NULL when absent; published: "application/json" */
    const char *amqp_type;    /* NULL when absent */
    const char *key;          /* published: the partitioning key, NULL when none */
    const sb__header_t *headers;
    size_t n_headers;
} sb__memtx_record_t;

/* Header value of a record by exact name (the first match), NULL when absent; *len (may be
 * NULL) gets its length. */
const char *sb__memtx_record_header(const sb__memtx_record_t *r, const char *name, size_t *len);

/* Dead-letter queue, oldest first. dlq_at() returns NULL when i is out of range. */
size_t sb__memtx_dlq_count(sb__transport_t *t);
const sb__memtx_record_t *sb__memtx_dlq_at(sb__transport_t *t, size_t i);

/* Moves dead letter i back to the queue (its tail): same routing key, body and properties;
 * its headers lose every x-sb-* header and gain x-sb-replay-count (the record's previous
 * x-sb-replay-count + 1, or 1). It is delivered as attempt 1. Records after i move down by
 * one. SB_EOK, SB_ENOTFOUND (no such index), SB_EBUSY (capacity reached), SB_ENOMEM. */
int sb__memtx_dlq_replay(sb__transport_t *t, size_t i);

/* Published follow-ups, oldest kept first (at most published_keep of them). Headers:
 * event-type = type, message-id = id, and traceparent / tracestate when given. */
size_t sb__memtx_published_count(sb__transport_t *t);
const sb__memtx_record_t *sb__memtx_published_at(sb__transport_t *t, size_t i);

typedef struct sb__memtx_stats {
    uint64_t injected;            /* sb__memtx_inject() and dlq_replay() successes */
    uint64_t delivered;           /* deliveries handed to the sink (loopback ones included) */
    uint64_t acked;               /* ack() calls */
    uint64_t retried;             /* retry_later() calls that succeeded */
    uint64_t dead_lettered;       /* dead_letter() calls that succeeded */
    uint64_t published;           /* publish() calls that succeeded */
    uint64_t last_retry_delay_ms; /* delay of the last successful retry_later() */
} sb__memtx_stats_t;

void sb__memtx_stats(sb__transport_t *t, sb__memtx_stats_t *out);

/* Messages not yet settled: queued + delayed + delivered-but-unsettled, plus settlements
 * and publishes whose callback has not run yet. Zero means everything settled. */
size_t sb__memtx_outstanding(sb__transport_t *t);

typedef enum sb__memtx_op {
    SB__MEMTX_OP_PUBLISH = 0,
    SB__MEMTX_OP_DEAD_LETTER = 1,
    SB__MEMTX_OP_RETRY = 2,
} sb__memtx_op_t;

/* The next n calls of `op` are accepted (they return SB_EOK) but complete with status
 * SB_EIO through their callback on a later loop turn, like a broker nack: nothing is
 * recorded, and for retry / dead-letter the delivery stays unsettled and valid, to be
 * settled again by the caller. Replaces any count set before for that op. */
void sb__memtx_fail_next(sb__transport_t *t, sb__memtx_op_t op, unsigned n);

#endif
