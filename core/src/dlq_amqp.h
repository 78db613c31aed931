/* dlq_amqp.h: the RabbitMQ backend of dlq_backend.h (blocking rabbitmq-c, for the CLI and
 * worker threads, never the daemon's loop thread).
 *
 * The DLQ is `<transport.amqp.queue>.dlq` (default "switchboard.dlq") unless the open
 * options name another queue. A destination (sb__dlq_dest_t.to) is "EXCHANGE:ROUTING_KEY",
 * "EXCHANGE" (the record's original routing key), or ":QUEUE" (the default exchange, i.e.
 * straight into that queue; `dlq import` uses it). */
#ifndef SB_DLQ_AMQP_H
#define SB_DLQ_AMQP_H

#include "dlq_backend.h"

extern const sb__dlq_backend_ops_t sb__dlq_amqp_ops;

#endif
