/* dlq_kafka.h: the Kafka backend of dlq_backend.h (blocking librdkafka clients, for the CLI
 * and worker threads, never the daemon's loop thread).
 *
 * The DLQ is the set of topics `<topic><transport.kafka.dlq_topic_suffix>` (default ".dlq")
 * for every entry of transport.kafka.topics, or the one topic the open options name. Replay
 * progress is the committed offsets of the consumer group `<transport.kafka.group_id>
 * .dlq-replay` (or the open options' group_id), with the offsets moved beyond them (by a
 * filtered or partial run) in each commit's metadata; see dlq_kafka.c. next() returns
 * SB_ETOOBIG (and logs why) when the next record's removal could not be recorded there: the
 * run must stop. A destination (sb__dlq_dest_t.to) is a topic; NULL means the record's
 * x-sb-original-topic. */
#ifndef SB_DLQ_KAFKA_H
#define SB_DLQ_KAFKA_H

#include "dlq_backend.h"

extern const sb__dlq_backend_ops_t sb__dlq_kafka_ops;

#endif
