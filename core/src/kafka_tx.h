/* kafka_tx.h: the Kafka transport's private state, shared by transport_kafka.c (consuming,
 * dispatching, settling, rebalances) and kafka_produce.c (retry copies, dead letters,
 * follow-up events, delivery reports).
 *
 * Design: the two files are one transport split by concept, so the structs stay transparent
 * to both rather than hidden behind accessors; each file keeps its helpers static and calls
 * across only through the few sb__kafka_ functions declared here and in kafka_produce.h.
 * See transport_kafka.c for how messages move through the states below.
 *
 * Not here: anything public (transport_kafka.h), the librdkafka clients' creation
 * (kafka_client.h). Nothing but those two files includes it.
 *
 * Loop affinity: everything on the transport's loop thread. */
#ifndef SB_KAFKA_TX_H
#define SB_KAFKA_TX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "kafka_waker.h"
#include "transport.h"

struct event;
struct event_base;

typedef enum kstate { K_QUEUED, K_INFLIGHT, K_DONE } kstate_t;

typedef struct kafkatx kafkatx_t;
typedef struct kpart kpart_t;

typedef struct kmsg {
    sb__delivery_t d; /* what the dispatcher sees; must be first */
    rd_kafka_message_t *rkm;
    kpart_t *kp;
    struct kmsg *prev, *next; /* partition list (offset order), or the orphan list */
    kstate_t state;
    bool orphan;
    uint64_t key_hash;
    int64_t not_before; /* monotonic ms; 0: now */
    sb__turn_t turn;    /* claim-ahead: may it run its handlers (transport.h) */
    bool turn_released; /* its handlers finished: the next one may take its turn */
    sb__header_t hdrs[];
} kmsg_t;

struct kpart {
    kpart_t *next_all, *next_ready;
    kafkatx_t *tx;
    char *topic;      /* the topic consumed */
    char *base_topic; /* without the retry suffix: intake's topic, DLQ and retry names */
    int32_t partition;
    bool is_retry, owned, revoking, in_ready, paused, dirty;
    bool slow; /* paused for holding the fetch back without draining (reconcile_pauses) */
    uint64_t drained, drain_mark; /* messages popped off the settled prefix; at window start */
    kmsg_t *head, *tail;
    size_t n, n_queued, n_active;
    int64_t next_fetch; /* offset after the last one received; -1: none yet */
    int64_t refetch;    /* a message dropped on receipt (out of memory), sought again: the
                           only offset taken until it is back; -1: none */
    int64_t store;      /* offset to store (the next one to consume) */
    int64_t barrier;    /* a message dropped unhandled (revoke, stop): store never passes it;
                           nothing after it gets a turn. -1: none */
    int64_t hold_until; /* monotonic ms the head waits for; 0: no hold */
    struct event *hold;
};

typedef enum op_kind { OP_SETTLE, OP_PUBLISH } op_kind_t;

/* A pending completion: a produce awaiting its delivery report, or a deferred callback. */
typedef struct kop {
    struct kop *next;
    kafkatx_t *tx;
    kmsg_t *m; /* OP_SETTLE: the original being settled */
    op_kind_t kind;
    sb__tx_done_cb cb;
    void *arg;
    int status;
    const char *what; /* "retry", "dead-letter", "publish" (logs) */
} kop_t;

struct kafkatx {
    sb__transport_t base; /* must be first */
    struct event_base *evbase;
    /* configuration */
    char *brokers, *group, *client_id, *dlq_suffix, *retry_suffix, *publish_topic;
    char **topics;
    size_t n_topics;
    bool key_mode, retry_in_place, create_topics, embedded;
    size_t max_inflight, backlog;
    uint64_t revoke_timeout_ms;
    json_t *props;
    /* clients */
    rd_kafka_t *mock_host;
    rd_kafka_mock_cluster_t *mock;
    char *mock_bootstraps;
    rd_kafka_t *consumer, *producer;
    rd_kafka_queue_t *cq, *pq;
    int wake[2];
    struct event *wake_ev, *kick, *revoke_timer, *slow_timer;
    /* state */
    bool started, stopped, sink_paused, in_pump, parked, closing, destroying, fetch_more;
    bool fetch_capped;    /* stopped taking from librdkafka at the local bound */
    int64_t capped_since; /* monotonic ms: start of the window in which the fetch stayed at
                             the local bound (reconcile_pauses); 0: not capped */
    bool joined;          /* an assignment arrived (possibly empty) and was not lost since */
    bool client_failed;   /* authentication, TLS or fatal error since the last assignment */
    /* librdkafka's own queue bound (effective queued.min.messages and .kbytes), and the
     * fetcher wake-up (kafka_waker.h): `fetch_full` once the queue neared a bound, so its
     * fetcher may have stopped; a poke once it drained to half. */
    sb__kafka_waker_t *waker;
    int64_t q_min_msgs, q_max_bytes, last_poke_ms;
    uint64_t avg_len; /* 16 x the running mean of a message's payload + key bytes */
    bool fetch_full;
    kpart_t *parts, *ready_head, *ready_tail;
    size_t n_dispatched; /* held by the dispatcher */
    /* claim-ahead (partition order with a store): up to `ahead` messages of a partition in
     * flight, at most `ahead_total` of them waiting for their turn (n_waiting). */
    size_t ahead, ahead_total, n_waiting;
    kmsg_t *orphans;
    kop_t *compl_head, *compl_tail;
    rd_kafka_topic_partition_list_t *pending_revoke;
    bool pending_lost, pending_coop;
};

/* transport_kafka.c: m (in flight) is settled for good and may count towards its
 * partition's stored prefix; an orphan is freed. Never re-enters the dispatcher: the
 * partition is only queued for the pump. */
void sb__kafka_settle_done(kafkatx_t *tx, kmsg_t *m);

#endif
