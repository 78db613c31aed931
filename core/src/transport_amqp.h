/* transport_amqp.h: the RabbitMQ transport (rabbitmq-c), behind the transport.h ops table.
 *
 * Topology it declares (declare: true) or checks passively (declare: false):
 *  - the topic exchange `exchange` (durable);
 *  - the consumed queues: `queue` (durable, classic or quorum, optional single active
 *    consumer) bound to the exchange once per handler pattern; or, when `queues` is given,
 *    those queues (declared durable and bound with their own name as routing key, exactly as
 *    the .NET EventBus does, or only checked with declare: false).
 * Its own infrastructure is always declared (it is switchboard's, not the application's):
 *  - `<exchange>.dlx` (topic, durable) and `<queue>.dlq` bound to it with "#";
 *  - retry queues `<source queue>.retry.<delay ms>` on demand (x-message-ttl = delay,
 *    dead-lettering back to the source queue through the default exchange).
 *
 * Loop affinity: every ops function runs on the loop thread of `base`; callbacks and the
 * sink run there too. One I/O thread per transport owns the connection (see the .c). */
#ifndef SB_TRANSPORT_AMQP_H
#define SB_TRANSPORT_AMQP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport.h"

struct event_base;

typedef struct sb__amqptx_opts {
    const char *url;           /* amqp://user:pass@host:port/vhost or amqps://...; required */
    const char *password_file; /* NULL: the URL's password; else the file's first line */
    const char *exchange;      /* NULL: "integration_events" */
    const char *queue;         /* NULL: "switchboard"; also names the DLQ */
    const char *const *queues; /* n_queues existing queues to consume instead of `queue` */
    size_t n_queues;
    bool quorum;                 /* x-queue-type: quorum for the queue switchboard declares */
    bool single_active_consumer; /* x-single-active-consumer: true */
    bool declare;                /* false: passive checks of exchange and consumed queues */
    unsigned prefetch;           /* basic.qos per consumer; 0: 256 */
    unsigned heartbeat_s;        /* 0: no heartbeats */
    const char *ca_file, *cert_file, *key_file; /* amqps:// only; may be NULL */
    bool verify_peer;                           /* certificate chain and host name */
    const char *const *patterns; /* binding keys of `queue` (the handlers' patterns) */
    size_t n_patterns;
    const char *consumer; /* service name, shown as the connection name; may be NULL */
} sb__amqptx_opts_t;

/* Creates the transport; nothing connects before start(). Every string is copied.
 * start() connects on the I/O thread and waits for the first attempt: it fails (with the
 * reason in errstr, never the password) when the broker refuses the login, TLS fails, or
 * the topology cannot be declared; an unreachable broker is retried in the background
 * (ready() stays false until connected). SB_EOK, SB_EINVAL (bad URL or options), SB_ENOMEM. */
int sb__amqptx_new(struct event_base *base, const sb__amqptx_opts_t *o, sb__tx_sink_fn sink,
                   void *sink_arg, sb__transport_t **out, char *errstr, size_t errstr_size);

/* The retry delay actually used for a requested delay (the bucket it is rounded up to;
 * 0 for an immediate requeue). Exposed for tests and docs. */
uint64_t sb__amqptx_retry_bucket_ms(uint64_t delay_ms);

#endif
