/* sbtest_amqp.h: RabbitMQ helpers for the AMQP transport tests, beyond sbtest.h's basics.
 *
 * Bulk publishing under pipelined confirms (the .NET EventBus's properties: persistent,
 * message_id, timestamp), reading a message with its routing key and headers (dead-letter
 * checks), queue depths on a fresh connection (a passive declare of a missing queue closes
 * the channel), and best-effort cleanup. Test-side clients of the real broker. */
#ifndef SBTEST_AMQP_H
#define SBTEST_AMQP_H

#include <stdbool.h>
#include <stddef.h>

#include <amqp.h>

/* Publishes n persistent messages to `exchange` with routing_keys[i] (or routing_keys[0]
 * for all when one_key), bodies[i], message_ids[i] (message_ids may be NULL), a timestamp,
 * and optional extra string headers (hdr_name/hdr_value, may be NULL), pipelining up to
 * 1000 unconfirmed. c must have channel 1 open in confirm mode (sbt_amqp_connect does
 * that). 0 when every message was confirmed, -1 otherwise. */
int sbt_amqp_publish_many(amqp_connection_state_t c, const char *exchange,
                          const char *const *routing_keys, bool one_key, const char *const *bodies,
                          const char *const *message_ids, size_t n, const char *hdr_name,
                          const char *hdr_value);

/* n small events: ids "<tag>-NNN", bodies {"Id":...,"JobId":...}. */
typedef struct sbt_events {
    char **ids, **bodies;
    size_t n;
} sbt_events_t;
void sbt_events_make(sbt_events_t *ev, const char *tag, size_t n);
void sbt_events_free(sbt_events_t *ev);

/* Declares the topic exchange and the durable queue bound to `pattern`, then publishes the
 * events with routing key rk and their ids as message ids (confirmed); fails the test on an
 * error. */
void sbt_amqp_seed(const char *url, const char *exchange, const char *queue, const char *pattern,
                   const char *rk, const sbt_events_t *ev);

typedef struct sbt_amqp_msg {
    char *body;
    size_t len;
    char *routing_key;
    char *exchange;
    char *message_id; /* NULL when absent */
    bool persistent;
    size_t n_headers;
    char **names; /* scalar headers as strings (integers in decimal) */
    char **values;
} sbt_amqp_msg_t;

/* basic.get (acked) with a deadline; NULL when nothing arrived. */
sbt_amqp_msg_t *sbt_amqp_get_msg(amqp_connection_state_t c, const char *queue, int timeout_ms);
const char *sbt_amqp_msg_header(const sbt_amqp_msg_t *m, const char *name);
void sbt_amqp_msg_free(sbt_amqp_msg_t *m);

/* Messages in a queue (ready + unacked, as the passive declare counts ready only, call it
 * with no consumer attached), on a connection of its own; -1 when the queue is missing. */
long sbt_amqp_depth(const char *url, const char *queue);

/* Deletes the named queues and exchanges (NULL-terminated lists, either may be NULL),
 * ignoring those that do not exist. */
void sbt_amqp_cleanup(const char *url, const char *const *queues, const char *const *exchanges);

#endif
