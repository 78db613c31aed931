/* event.h: the decoded event (struct sb_event) and field access on it.
 *
 * An event is decoded once at intake (envelope.c) into this structure, which refers to the
 * transport's bytes instead of copying them, indexes the payload's top-level members, and
 * builds a jansson tree only when somebody asks for one (a bound schema, a handler calling
 * for the tree). Typed getters read the index, so a handler that reads three fields costs
 * three small decodes, not a parse. Memory handed out lives in the event's arena until the
 * event is reset (after settlement). Events are reused: init once, reset per message. */
#ifndef SB_EVENT_H
#define SB_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "switchboard/handler.h"
#include "arena.h"
#include "jscan.h"

typedef enum sb__envelope_kind {
    SB__ENV_NATIVE = 0,        /* .NET EventBus style: the body is the event object */
    SB__ENV_CE_BINARY = 1,     /* CloudEvents 1.0 binary mode: attributes in headers */
    SB__ENV_CE_STRUCTURED = 2, /* CloudEvents 1.0 structured mode: application/cloudevents+json */
} sb__envelope_kind_t;

/* One header or application property, as strings. Borrowed from the transport. */
typedef struct sb__header {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
} sb__header_t;

/* What a transport hands to intake for one message. Everything is borrowed until the
 * message settles. Unset strings are NULL. */
typedef struct sb__intake_msg {
    const char *body;
    size_t body_len;
    const char *routing_key;  /* AMQP routing key */
    const char *exchange;     /* AMQP exchange */
    const char *topic;        /* Kafka topic */
    const char *content_type; /* AMQP content-type property (Kafka: from headers) */
    const char *amqp_type;    /* AMQP `type` property */
    const char *message_id;   /* AMQP message-id property */
    const sb__header_t *headers;
    size_t n_headers;
} sb__intake_msg_t;

struct sb_event {
    /* Identity, NUL-terminated, valid until reset. */
    const char *id;
    const char *type;
    size_t id_len;
    size_t type_len;
    sb__envelope_kind_t kind;
    bool id_hashed; /* the id is the SHA-256 of the body (intake.id_strategy: hash) */
    /* CloudEvents attributes (NULL when absent). */
    const char *ce_source;
    const char *ce_specversion;
    const char *ce_subject;
    const char *ce_time;
    const char *content_type; /* datacontenttype / content-type */
    /* .NET IntegrationEvent base. */
    const char *creation_date; /* as received; NULL when absent */
    int64_t creation_us;       /* parsed, when creation_date != NULL */
    /* W3C trace context, carried onto retries, dead letters and follow-up events. */
    const char *traceparent;
    const char *tracestate;
    /* Payload: the body (native, CE binary) or the `data` member (CE structured). */
    const char *data;
    size_t data_len;
    sb__jtype_t data_type; /* SB__JT_NONE: no data or not JSON */
    unsigned max_depth;
    unsigned attempt; /* 1 for the first delivery */
    const sb__intake_msg_t *msg;
    json_t *json;       /* built on demand */
    int json_state;     /* 0 not built, 1 built, -1 failed */
    sb__jindex_t index; /* top-level members of the payload, when it is an object */
    sb__arena_t arena;
    char error[256];
};

void sb__event_init(sb_event_t *ev);
/* Drops everything decoded for the last message; the event can decode the next one. */
void sb__event_reset(sb_event_t *ev);

/* Header lookup by exact name (case-sensitive, as AMQP and Kafka are). NULL when absent.
 * The value is NOT NUL-terminated; *len gets its length. */
const char *sb__event_header(const sb_event_t *ev, const char *name, size_t *len);

/* Typed access to top-level payload members. SB_EOK, SB_ENOTFOUND (absent or null),
 * SB_EINVAL (present with another type), SB_ENOMEM. Strings are decoded and
 * NUL-terminated in the event's arena. Integers must be integral and fit in int64;
 * booleans are JSON true/false; times are RFC 3339 strings (no offset read as UTC). */
int sb__event_get_str(sb_event_t *ev, const char *name, const char **out, size_t *len);
int sb__event_get_int(sb_event_t *ev, const char *name, int64_t *out);
int sb__event_get_double(sb_event_t *ev, const char *name, double *out);
int sb__event_get_bool(sb_event_t *ev, const char *name, bool *out);
int sb__event_get_time(sb_event_t *ev, const char *name, int64_t *unix_us);

/* The payload as a jansson tree, built on first call (duplicate keys refused). Borrowed:
 * lives until the event is reset. NULL if the payload is not JSON or fails to parse
 * (then ev->error says why). */
json_t *sb__event_json(sb_event_t *ev);

#endif
