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

#endif
