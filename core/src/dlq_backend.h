/* dlq_backend.h: what a transport provides so that `switchboard dlq` and admin replay jobs
 * work on its dead-letter queue. An ops table, one implementation per broker (next to
 * transport_amqp.c and transport_kafka.c), chosen from the config like the transports.
 *
 * Everything else (filters, export/import files, rate limiting, progress, max-replays,
 * the summary, --dry-run) is transport-independent and lives above this interface: a verb
 * is a loop of next() -> filter -> [publish_confirmed()] -> ack() or keep().
 *
 * The contract, the same for every backend:
 *  - Replay loses nothing: a record is removed from the DLQ (ack) only after its copy was
 *    confirmed by the broker (publish_confirmed returned SB_EOK). When publishing fails, the
 *    caller keeps the message (keep), reports it, and goes on or stops; it stays in the DLQ.
 *    If the process dies between publish and ack, the worst case is a duplicate, which the
 *    consumers' idempotency absorbs; never a loss.
 *  - Every position that next() returned is settled exactly once, by ack() or keep(),
 *    before close(). close() with unsettled positions keeps them (AMQP: the channel closes
 *    and the broker requeues them; Kafka: their offsets are not committed).
 *  - Reading does not consume: a message that is neither acked nor kept stays in the DLQ;
 *    `list`, `show`, `stats`, `export` and `--dry-run` only ever call keep().
 *  - AMQP: next() is a basic.get or a consumer with a bounded prefetch; keep() is a
 *    basic.nack/reject with requeue, which RabbitMQ puts back at (or near) the head of the
 *    queue, so a scan must stop after count() messages or when it meets a message it has
 *    already seen (backends set the record's message id or use delivery tags to tell), not
 *    wait for the queue to run dry. ack() is basic.ack.
 *  - Kafka: the DLQ topic is a log. next() reads a range (from the committed offset of the
 *    DLQ consumer group, or an offset or time range given in the options) and returns
 *    SB_ECLOSED at the end of the range (end of every partition at open time). ack()
 *    removes the record: its offset is committed if nothing before it stays, else it is
 *    recorded in the commit's metadata with the group's offset (see dlq_kafka.c), so no
 *    verb sees it again; keep() leaves it. next() returns SB_ETOOBIG when a removal could
 *    not be recorded any more: the caller must stop. Because
 *    replay progress lives in that consumer group, an interrupted replay resumes where it
 *    stopped, without re-sending what was already confirmed and committed. Nothing is
 *    deleted from the topic: "removed" means "behind the group's committed offset"; purge
 *    commits past the selected messages.
 *  - Calls block (rabbitmq-c and the CLI's simple loop); they never run on the daemon's loop
 *    thread. The admin server runs replay jobs on a worker thread with its own handle. One
 *    handle is used by one thread at a time.
 *  - A call that fails returns a negative sb_err_t and, where it has errstr, says why in
 *    one line. SB_EUNAVAILABLE means the broker could not be reached; the caller may retry.
 *
 * No implementation here. */
#ifndef SB_DLQ_BACKEND_H
#define SB_DLQ_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "dlq_record.h"

typedef struct sb__dlq_backend sb__dlq_backend_t;
/* Where a record came from in the DLQ (AMQP delivery tag; Kafka partition and offset).
 * Owned by the backend, valid until ack() or keep() returns. */
typedef struct sb__dlq_pos sb__dlq_pos_t;

/* Which DLQ to open and how to read it. Strings are borrowed for the duration of open(). */
typedef struct sb__dlq_open_opts {
    const char *dlq; /* queue or topic; NULL: the one the config names */
    bool read_only;  /* list/show/stats/export: ack() is refused with SB_ESTATE */
    /* Kafka only; ignored by AMQP. */
    const char *group_id; /* replay progress group; NULL: "<group.id>.dlq-replay" */
    bool from_beginning;  /* ignore the group's committed offsets (list, export) */
    int64_t since_ms;     /* start at the first offset with timestamp >= since_ms; -1: none */
    int64_t start_offset; /* a partition-independent start offset; -1: none */
    uint64_t reserved[4];
} sb__dlq_open_opts_t;

/* Where publish_confirmed() sends a record. */
typedef struct sb__dlq_dest {
    /* NULL: the original destination, from the record's x-sb-original-* headers (AMQP:
     * exchange and routing key; Kafka: topic; the partition is chosen again by key).
     * Otherwise --to: AMQP "exchange/routing-key" or a queue name (default exchange);
     * Kafka: a topic. */
    const char *to;
} sb__dlq_dest_t;

typedef struct sb__dlq_backend_ops {
    const char *name; /* "amqp", "kafka" */

    /* Connects and opens the DLQ. SB_EOK and *out; SB_ECONFIG, SB_EUNAVAILABLE,
     * SB_ENOTFOUND (no such queue or topic), SB_ENOMEM. */
    int (*open)(const sb__config_t *cfg, const sb__dlq_open_opts_t *opts, sb__dlq_backend_t **out,
                char *errstr, size_t errstr_size);

    /* An estimate of the messages a full scan will see (AMQP: the queue's message count
     * from a passive declare; Kafka: the sum over partitions of end offset minus start
     * position). For progress and to bound AMQP scans. SB_EOK or an error. */
    int (*count)(sb__dlq_backend_t *b, uint64_t *estimate);

    /* The next message, waiting at most timeout_ms. SB_EOK with *rec (caller destroys
     * with sb__dlq_record_destroy) and *pos; SB_ETIMEOUT when none arrived in time (an
     * AMQP queue that is empty for now); SB_ECLOSED at the end of the range (Kafka) or of
     * the scan; other errors. The record carries its transport, source, partition/offset
     * (Kafka), every property and header with its type, and the body. */
    int (*next)(sb__dlq_backend_t *b, uint64_t timeout_ms, sb__dlq_record_t **rec,
                sb__dlq_pos_t **pos);

    /* Publishes rec (usually from sb__dlq_record_prepare_replay(), or a record from an
     * import file) to dest, and returns only when the broker confirmed it (publisher
     * confirm; Kafka: delivery report with acks=all). The body, properties and headers go
     * out byte for byte and type for type. SB_EOK; SB_ETIMEOUT, SB_EUNAVAILABLE,
     * SB_ENOTFOUND (AMQP: unroutable with the mandatory flag), SB_EINVAL (no original
     * destination and no --to), others. On error the message may or may not have been
     * published: the caller keeps the DLQ copy (a possible duplicate, never a loss). */
    int (*publish_confirmed)(sb__dlq_backend_t *b, const sb__dlq_record_t *rec,
                             const sb__dlq_dest_t *dest, char *errstr, size_t errstr_size);

    /* Removes the message at pos from the DLQ (AMQP: basic.ack; Kafka: commit, as above).
     * pos is invalid afterwards, whatever the result. */
    int (*ack)(sb__dlq_backend_t *b, sb__dlq_pos_t *pos);

    /* Leaves the message at pos in the DLQ (AMQP: nack with requeue; Kafka: nothing is
     * committed for it). pos is invalid afterwards. */
    int (*keep)(sb__dlq_backend_t *b, sb__dlq_pos_t *pos);

    /* Settles outstanding positions by keeping them, flushes commits and confirms, and
     * frees the handle. NULL is a no-op. */
    void (*close)(sb__dlq_backend_t *b);
} sb__dlq_backend_ops_t;

/* Every backend's handle starts with this. */
struct sb__dlq_backend {
    const sb__dlq_backend_ops_t *ops;
};

#endif
