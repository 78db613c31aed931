/* envelope.h: raw message -> sb_event, once, for every envelope switchboard understands.
 *
 *  1. Native integration events (.NET EventBus, System.Text.Json): the body is the event
 *     object with PascalCase members, `Id` (GUID) and `CreationDate`; the type comes from the
 *     AMQP routing key, else the AMQP `type` property, else the Kafka header `event-type`,
 *     else a configured body member (Kafka), else the Kafka topic.
 *  2. CloudEvents 1.0 binary mode: attributes in AMQP application properties
 *     (`cloudEvents:*` or `cloudEvents_*`) or Kafka headers (`ce_*`); the body is the data.
 *  3. CloudEvents 1.0 structured mode: content type application/cloudevents+json; the body
 *     is the event, its `data` member the payload. Batch mode is refused with a reason.
 *
 * Event id precedence: CloudEvents `id`, body `Id`, body `id`, AMQP message-id; else, with
 * id_strategy hash, the SHA-256 of the body; else a decode error. A message that fails here
 * is never retried: the caller dead-letters it with reason `decode` (or `too-big` limits,
 * which are decode failures too) and the message in ev->error.
 *
 * What it does not do: schema validation (schema.c), routing (router.c), any I/O. */
#ifndef SB_ENVELOPE_H
#define SB_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>

#include "event.h"

typedef struct sb__envelope_opts {
    size_t max_message_size; /* bytes; 0 = 1 MiB */
    unsigned max_depth;      /* JSON nesting; 0 = 64 */
    bool id_hash;            /* intake.id_strategy: hash */
    const char *type_field;  /* body member holding the type (Kafka), NULL = none */
} sb__envelope_opts_t;

/* Decodes `msg` into `ev` (which must have been init'ed; it is reset first). The event
 * borrows msg and its bytes until reset. Returns SB_EOK, SB_EDECODE or SB_ETOOBIG with the
 * precise reason in ev->error, or SB_ENOMEM. */
int sb__envelope_decode(const sb__envelope_opts_t *opts, const sb__intake_msg_t *msg,
                        sb_event_t *ev);

#endif
