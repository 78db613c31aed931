/* transport_kafka.h: the Kafka transport (librdkafka), behind the transport.h ops table.
 *
 * A high-level consumer in a consumer group, bridged to the libevent loop with
 * rd_kafka_queue_io_event_enable(); an idempotent producer (acks=all) for retry copies, dead
 * letters and follow-up events. Offsets are stored only for the contiguous settled prefix
 * of each partition and committed by librdkafka's auto-commit (periodically), and
 * synchronously on revoke and at shutdown. See transport_kafka.c for the design.
 *
 * Configuration (transport.kafka.*, see docs/configuration.md): brokers ("embedded": an
 * in-process librdkafka mock cluster with the configured topics, 3 partitions each),
 * group_id, topics (names or ^regex), concurrency (partition | key), max_inflight,
 * dlq_topic_suffix, retry (topic | in_place), retry_topic_suffix, publish_topic,
 * partition_backlog, revoke_timeout, create_topics, and properties.* passed to librdkafka
 * (keys prefixed "consumer." or "producer." go to that client only, without the prefix).
 *
 * Loop affinity: everything on the thread of the event base given to sb__kafka_new(). */
#ifndef SB_TRANSPORT_KAFKA_H
#define SB_TRANSPORT_KAFKA_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "transport.h"

struct event_base;

/* Creates the Kafka transport from the configuration (borrowed for the call only; every
 * value is copied). Nothing connects before start(). SB_EOK and *out (destroy with
 * (*out)->ops->destroy(*out)); SB_ECONFIG (a property librdkafka refuses, no topic) or
 * SB_ENOMEM, with the reason in errstr. */
int sb__kafka_new(struct event_base *base, const sb__config_t *cfg, sb__tx_sink_fn sink,
                  void *sink_arg, sb__transport_t **out, char *errstr, size_t errstr_size);

/* The bootstrap address of the embedded mock cluster once started ("embedded" brokers),
 * else NULL. Lives as long as the transport. For the demo and tests, which produce to it. */
const char *sb__kafka_embedded_bootstraps(sb__transport_t *t);

/* One assigned partition's lag (switchboard_kafka_consumer_lag): the high watermark last
 * reported by the broker (cached by librdkafka from fetch responses, no round trip) minus
 * the consumer's committed position: the offset stored for the settled prefix, else the
 * first offset still held locally (nothing settled since the assignment). `topic` is
 * borrowed from the transport and valid until the next loop turn. */
typedef struct sb__kafka_lag {
    const char *topic;
    int32_t partition;
    int64_t lag;
} sb__kafka_lag_t;

/* Fills out[0..cap) with the lag of the assigned partitions (not being revoked) whose
 * watermark and position are both known yet, and returns how many there are (which may be
 * more than cap: call with cap 0 to size the array). 0 for a transport that is not Kafka. */
size_t sb__kafka_lag(sb__transport_t *t, sb__kafka_lag_t *out, size_t cap);

#endif
