/* kafka_client.h: the librdkafka clients of the Kafka transport, created and configured.
 *
 * What the transport needs from librdkafka before it consumes: an idempotent producer, a
 * group consumer whose offsets switchboard stores itself, the embedded mock cluster
 * (brokers: embedded), the retry and DLQ topics beside the consumed ones, and the
 * subscription. Each function takes a small options struct rather than the transport, so
 * the settings switchboard imposes on librdkafka read in one place and the transport keeps
 * only consuming, dispatching, settling and producing. See kafka_client.c for the defaults.
 *
 * Not here: polling, wake-ups, rebalance handling and delivery reports (the transport's
 * callbacks are only installed), destroying the clients (the transport owns them once
 * created), reading transport.kafka.* (the caller fills the options).
 *
 * Loop affinity: none of their own; the transport calls them from its loop thread. The
 * metadata and CreateTopics round trips of sb__kafka_client_create_side_topics() block. */
#ifndef SB_KAFKA_CLIENT_H
#define SB_KAFKA_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/* librdkafka's rebalance and delivery-report callbacks, as rd_kafka_conf_set_rebalance_cb()
 * and rd_kafka_conf_set_dr_msg_cb() take them; `opaque` is sb__kafka_client_opts_t.opaque. */
typedef void (*sb__kafka_rebalance_cb)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                       rd_kafka_topic_partition_list_t *parts, void *opaque);
typedef void (*sb__kafka_dr_cb)(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque);
/* librdkafka's error callback (rd_kafka_conf_set_error_cb()); one that replaces the default
 * logs with sb__kafka_client_log_error() itself. */
typedef void (*sb__kafka_error_cb)(rd_kafka_t *rk, int err, const char *reason, void *opaque);

/* Logs an error librdkafka reported (fatal ones with their cause): the default error
 * callback. */
void sb__kafka_client_log_error(rd_kafka_t *rk, int err, const char *reason);

/* Everything the clients are made from. All pointers are borrowed for the call only (the
 * clients copy what they keep), except `opaque`, handed to every callback. */
typedef struct sb__kafka_client_opts {
    const char *bootstraps; /* bootstrap.servers: the brokers, or the embedded cluster's */
    const char *client_id;
    const char *group;   /* group.id of the consumer */
    const json_t *props; /* transport.kafka.properties (kafka_conf.h) */
    bool embedded;       /* the brokers are the embedded mock cluster */
    char *const *topics; /* the consumed topics: names, or ^regex (no side topics) */
    size_t n_topics;
    const char *dlq_suffix, *retry_suffix;
    bool retry_in_place;       /* no retry topics */
    const char *publish_topic; /* "" when none */
    void *opaque;
    sb__kafka_rebalance_cb rebalance_cb; /* the consumer's */
    sb__kafka_dr_cb dr_cb;               /* the producer's */
    sb__kafka_error_cb error_cb;         /* both clients'; NULL: log only */
} sb__kafka_client_opts_t;

/* Starts the embedded mock cluster (one broker) with every listed topic, its DLQ topic and
 * (retry "topic") its retry topic, and the publish topic, 3 partitions each. Each output is
 * set as soon as it exists, also on failure: the caller releases them with
 * sb__kafka_client_embedded_stop() and sb_free(*bootstraps). SB_EOK, SB_EIO or SB_ENOMEM. */
int sb__kafka_client_embedded_start(const sb__kafka_client_opts_t *o, rd_kafka_t **host,
                                    rd_kafka_mock_cluster_t **mock, char **bootstraps, char *errstr,
                                    size_t errstr_size);

/* Destroys what sb__kafka_client_embedded_start() made (either may be NULL). */
void sb__kafka_client_embedded_stop(rd_kafka_t *host, rd_kafka_mock_cluster_t *mock);

/* Creates the idempotent producer (acks=all) with its logs and delivery reports on its main
 * queue, *q. *rk is set as soon as it exists, also when *q then fails: the caller destroys
 * both. SB_EOK, SB_ECONFIG (a refused property) or SB_ENOMEM. */
int sb__kafka_client_producer_new(const sb__kafka_client_opts_t *o, rd_kafka_t **rk,
                                  rd_kafka_queue_t **q, char *errstr, size_t errstr_size);

/* Creates the group consumer (offsets stored by the caller, auto-committed by librdkafka),
 * its main queue forwarded to the consumer queue *q, and reports the effective local queue
 * bounds librdkafka fetches up to: queued.min.messages and queued.max.messages.kbytes (in
 * bytes). Ownership as for the producer. SB_EOK, SB_ECONFIG or SB_ENOMEM. */
int sb__kafka_client_consumer_new(const sb__kafka_client_opts_t *o, rd_kafka_t **rk,
                                  rd_kafka_queue_t **q, int64_t *q_min_msgs, int64_t *q_max_bytes,
                                  char *errstr, size_t errstr_size);

/* Creates the missing DLQ and retry topics of the listed topics that exist, with their
 * partition counts, through `producer`. Failures are logged, not returned. Blocks up to 15 s
 * for the metadata and as long again for the creation. */
void sb__kafka_client_create_side_topics(const sb__kafka_client_opts_t *o, rd_kafka_t *producer);

/* Subscribes `consumer` to the topics and (retry "topic") to the retry topics of the listed
 * ones. SB_EOK, SB_ECONFIG or SB_ENOMEM. */
int sb__kafka_client_subscribe(const sb__kafka_client_opts_t *o, rd_kafka_t *consumer, char *errstr,
                               size_t errstr_size);

#endif
