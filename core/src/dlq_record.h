/* dlq_record.h: one dead-letter message in memory, for either broker, and its JSON Lines form.
 *
 * A record holds everything a DLQ backend reads from the broker, so that `dlq export` and
 * `dlq import` (and replay) lose nothing: where the message was read (source queue or topic,
 * exchange, routing key, Kafka partition/offset/key/timestamp), the twelve AMQP basic
 * properties (each may be absent), the headers as an ORDERED list that allows duplicate
 * names, with the exact AMQP field-table type of every value (or Kafka's bytes-or-null), and
 * the body bytes. Byte strings are byte strings everywhere: nothing assumes UTF-8 or NUL-free
 * text (stored copies carry an extra NUL after their length for convenience).
 *
 * JSON Lines format, version 1 (also in docs/dlq-format.md; the codec is dlq_jsonl.c). One
 * record is one JSON object on one line (no raw newline inside; the encoder writes no trailing
 * newline). Members, written in this order, those marked ? only when present:
 *
 *   "v": 1                               format version (required)
 *   "transport": "amqp" | "kafka"        ? which broker the record came from
 *   "source": BYTES                      ? queue (AMQP) or topic (Kafka) it was read from
 *   "exchange": BYTES                    ? AMQP exchange it was published to
 *   "routing_key": BYTES                 ? AMQP routing key it was published with
 *   "partition": INT                     ? Kafka partition, 0 .. 2^31-1
 *   "offset": INT                        ? Kafka offset, 0 .. 2^63-1
 *   "key": BYTES                         ? Kafka message key (absent = null key)
 *   "timestamp_ms": INT                  ? Kafka message timestamp, 0 .. 2^63-1
 *   "props": { ... }                     ? AMQP basic properties, each member optional, in
 *       this order: content_type, content_encoding (BYTES), delivery_mode, priority
 *       (INT 0..255), correlation_id, reply_to, expiration, message_id (BYTES), timestamp
 *       (U64), type, user_id, app_id, cluster_id (BYTES)
 *   "headers": [ [NAME, TYPE, VALUE], ... ]   ? in broker order; NAME is BYTES, TYPE one letter
 *   "body": BYTES                        (required; may be "")
 *
 * BYTES is a JSON string when the bytes are valid UTF-8 (control characters, '"' and '\'
 * escaped, everything else written raw), else {"b64": "<RFC 4648 base64, padded>"}.
 * U64 is a JSON integer up to 2^63-1 and a string of decimal digits above ("18446744073709551615").
 *
 * TYPE and VALUE (the AMQP 0-9-1 field types as rabbitmq-c names them, plus "K" for Kafka):
 *   "t" true/false               "b" -128..127     "B" 0..255        "s" -32768..32767
 *   "u" 0..65535                 "I" int32         "i" uint32        "l" int64
 *   "L" U64                      "T" U64 (AMQP timestamp, seconds)
 *   "f" / "d" float32 / float64: a JSON number that reads back to the same bits (shortest
 *       such form, always with '.' or an exponent, so -0.0 survives), or {"bits": "<8 or 16
 *       lowercase hex digits>"} (IEEE 754 bits) for NaN, infinities, or anything a number
 *       would not round-trip
 *   "D" decimal: {"scale": 0..255, "value": 0..4294967295}
 *   "S" long string, "x" byte array: BYTES
 *   "F" nested table: [ [NAME, TYPE, VALUE], ... ]     "A" array: [ [TYPE, VALUE], ... ]
 *   "V" void: null
 *   "K" Kafka header: BYTES, or null for a null value
 * Tables and arrays nest at most SB__DLQ_MAX_DEPTH deep.
 *
 * Encoding is canonical: to_json(from_json(to_json(r))) == to_json(r) byte for byte, and a
 * record survives to_json -> from_json unchanged (every byte, type and bit). The decoder is
 * strict: unknown members, wrong types and out-of-range values are errors naming the field
 * ("headers[3][2]: 300 is out of range for type \"B\" (0..255)"). It accepts non-canonical
 * but equivalent input (members in any order, UTF-8 text given as base64, numbers with other
 * spellings), which re-encodes canonically.
 *
 * Not here: talking to brokers (dlq_backend.h), filtering (dlq_filter.h). Not thread-safe
 * per record; distinct records are independent. */
#ifndef SB_DLQ_RECORD_H
#define SB_DLQ_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB__DLQ_FORMAT_VERSION 1
#define SB__DLQ_MAX_DEPTH      64

/* Header names written by transports (transport.h) and by replay. */
#define SB__DLQ_H_REASON        "x-sb-reason"
#define SB__DLQ_H_ERROR         "x-sb-error"
#define SB__DLQ_H_HANDLER       "x-sb-handler"
#define SB__DLQ_H_ATTEMPTS      "x-sb-attempts"
#define SB__DLQ_H_CONSUMER      "x-sb-consumer"
#define SB__DLQ_H_FAILED_AT     "x-sb-failed-at"
#define SB__DLQ_H_ORIG_EXCHANGE "x-sb-original-exchange"
#define SB__DLQ_H_ORIG_RKEY     "x-sb-original-routing-key"
#define SB__DLQ_H_ORIG_TOPIC    "x-sb-original-topic"
#define SB__DLQ_H_ORIG_PART     "x-sb-original-partition"
#define SB__DLQ_H_ORIG_OFFSET   "x-sb-original-offset"
#define SB__DLQ_H_REPLAY_COUNT  "x-sb-replay-count"
#define SB__DLQ_H_REPLAYED_AT   "x-sb-replayed-at"

typedef enum sb__dlq_transport {
    SB__DLQ_TX_UNKNOWN = 0,
    SB__DLQ_TX_AMQP,
    SB__DLQ_TX_KAFKA,
} sb__dlq_transport_t;

/* Byte strings of the record: envelope fields, AMQP string properties, the body. */
typedef enum sb__dlq_str {
    SB__DLQ_SOURCE = 0,
    SB__DLQ_EXCHANGE,
    SB__DLQ_ROUTING_KEY,
    SB__DLQ_KEY, /* Kafka message key */
    SB__DLQ_CONTENT_TYPE,
    SB__DLQ_CONTENT_ENCODING,
    SB__DLQ_CORRELATION_ID,
    SB__DLQ_REPLY_TO,
    SB__DLQ_EXPIRATION,
    SB__DLQ_MESSAGE_ID,
    SB__DLQ_TYPE,
    SB__DLQ_USER_ID,
    SB__DLQ_APP_ID,
    SB__DLQ_CLUSTER_ID,
    SB__DLQ_BODY, /* absent and empty are the same body */
    SB__DLQ_STR_COUNT
} sb__dlq_str_t;

/* Numbers of the record, each present or absent. Ranges: partition 0..INT32_MAX, offset and
 * timestamp_ms 0..INT64_MAX, delivery_mode and priority 0..255, timestamp any uint64. */
typedef enum sb__dlq_num {
    SB__DLQ_PARTITION = 0,
    SB__DLQ_OFFSET,
    SB__DLQ_TIMESTAMP_MS, /* Kafka message timestamp */
    SB__DLQ_DELIVERY_MODE,
    SB__DLQ_PRIORITY,
    SB__DLQ_TIMESTAMP, /* AMQP timestamp property, seconds */
    SB__DLQ_NUM_COUNT
} sb__dlq_num_t;

/* A byte string. p == NULL means absent (or, for "K" values, null). When p != NULL, p[len]
 * is a NUL that is not part of the value. */
typedef struct sb__dlq_bytes {
    char *p;
    size_t len;
} sb__dlq_bytes_t;

typedef struct sb__dlq_field sb__dlq_field_t;

/* An ordered list of fields: a header list, an "F" table (named fields) or an "A" array
 * (fields without names). Owned by whatever holds it. */
typedef struct sb__dlq_list {
    sb__dlq_field_t *v;
    size_t n, cap;
} sb__dlq_list_t;

/* One typed value. `type` is one of the letters listed above; which union member is used:
 * t: b; b s I l: i; B u i L T: u; f: f; d: d; D: dec; S x K: bytes; F A: list; V: none. */
typedef struct sb__dlq_value {
    char type;
    union {
        bool b;
        int64_t i;
        uint64_t u;
        float f;
        double d;
        struct {
            uint8_t scale;
            uint32_t value;
        } dec;
        sb__dlq_bytes_t bytes;
        sb__dlq_list_t list;
    } as;
} sb__dlq_value_t;

struct sb__dlq_field {
    sb__dlq_bytes_t name; /* p == NULL inside "A" arrays */
    sb__dlq_value_t value;
};

typedef struct sb__dlq_record sb__dlq_record_t;

/* ---- lifetime ------------------------------------------------------------------------- */

/* An empty record (no transport, no fields, empty body). SB_EOK or SB_ENOMEM. */
int sb__dlq_record_new(sb__dlq_record_t **out);
/* Frees the record and everything in it. NULL is a no-op. */
void sb__dlq_record_destroy(sb__dlq_record_t *r);
/* Deep copy. SB_EOK or SB_ENOMEM (*out untouched). */
int sb__dlq_record_clone(const sb__dlq_record_t *r, sb__dlq_record_t **out);

/* ---- setters and getters (used by backends) ------------------------------------------ */

void sb__dlq_record_set_transport(sb__dlq_record_t *r, sb__dlq_transport_t t);
sb__dlq_transport_t sb__dlq_record_transport(const sb__dlq_record_t *r);

/* Copies p[0..len); p == NULL makes the field absent. SB_EOK, SB_ENOMEM (field unchanged). */
int sb__dlq_record_set(sb__dlq_record_t *r, sb__dlq_str_t which, const char *p, size_t len);
/* The field's bytes (NUL-terminated after *len, which may be NULL), or NULL when absent.
 * Lives until the field is set again or the record is destroyed. The body is never NULL. */
const char *sb__dlq_record_get(const sb__dlq_record_t *r, sb__dlq_str_t which, size_t *len);

/* SB_EOK, or SB_ERANGE outside the field's range (field unchanged). */
int sb__dlq_record_set_num(sb__dlq_record_t *r, sb__dlq_num_t which, uint64_t v);
void sb__dlq_record_unset_num(sb__dlq_record_t *r, sb__dlq_num_t which);
/* true and *v when present. */
bool sb__dlq_record_get_num(const sb__dlq_record_t *r, sb__dlq_num_t which, uint64_t *v);

/* The header list, which lives as long as the record; add to it with sb__dlq_list_add*. */
sb__dlq_list_t *sb__dlq_record_headers(sb__dlq_record_t *r);
const sb__dlq_list_t *sb__dlq_record_headers_const(const sb__dlq_record_t *r);

/* ---- lists ---------------------------------------------------------------------------- */

/* Appends a deep copy of *v named name[0..name_len) (name NULL inside arrays). The value is
 * checked: a known type letter, integers within their type's range, nesting at most
 * SB__DLQ_MAX_DEPTH. *added (may be NULL) gets the stored value, valid until the list
 * changes again. SB_EOK; SB_EINVAL for an unknown type; SB_ERANGE; SB_ETOOBIG for nesting;
 * SB_ENOMEM (list unchanged). */
int sb__dlq_list_add(sb__dlq_list_t *l, const char *name, size_t name_len, const sb__dlq_value_t *v,
                     sb__dlq_value_t **added);
/* Shorthands: integers of any integer type (range-checked), byte strings ("S", "x", "K";
 * p NULL for a null "K"), and an empty "F" or "A" whose list *child (may be NULL) receives
 * (valid until l changes). Same returns as sb__dlq_list_add. */
int sb__dlq_list_add_int(sb__dlq_list_t *l, const char *name, char type, int64_t v);
int sb__dlq_list_add_uint(sb__dlq_list_t *l, const char *name, char type, uint64_t v);
int sb__dlq_list_add_bytes(sb__dlq_list_t *l, const char *name, char type, const char *p,
                           size_t len);
int sb__dlq_list_add_list(sb__dlq_list_t *l, const char *name, char type, sb__dlq_list_t **child);
/* Removes every field named `name`; returns how many. */
size_t sb__dlq_list_remove(sb__dlq_list_t *l, const char *name);
/* The first field named `name`, or NULL. */
const sb__dlq_value_t *sb__dlq_list_find(const sb__dlq_list_t *l, const char *name);
/* Frees the list's contents and leaves it empty. */
void sb__dlq_list_clear(sb__dlq_list_t *l);

/* ---- JSON Lines ----------------------------------------------------------------------- */

/* Encodes r as one line (no newline). *line gets a NUL-terminated string the caller frees
 * with sb_free(), *len (may be NULL) its length. SB_EOK, SB_ENOMEM, SB_ETOOBIG (nesting
 * beyond SB__DLQ_MAX_DEPTH, only possible for a record built through the API). */
int sb__dlq_record_to_json(const sb__dlq_record_t *r, char **line, size_t *len);

/* Decodes one line (a trailing "\n" or "\r\n" is allowed). SB_EOK and *out (caller destroys);
 * SB_EPARSE (not JSON, or not a record: errstr names the field and the problem); SB_ERANGE
 * (a number outside its field's range); SB_ENOMEM. *out untouched on error. */
int sb__dlq_record_from_json(const char *line, size_t len, sb__dlq_record_t **out, char *errstr,
                             size_t errstr_size);

/* ---- what the CLI reads ---------------------------------------------------------------- */

/* The first header named `name` whose value is a byte string ("S", "x", or non-null "K"):
 * its bytes (NUL-terminated after *len) or NULL. */
const char *sb__dlq_record_header_str(const sb__dlq_record_t *r, const char *name, size_t *len);
/* The first header named `name` as an unsigned integer: any integer type holding a value
 * >= 0, or a byte string of decimal digits (Kafka headers are bytes). false when absent or
 * not such a number. */
bool sb__dlq_record_header_uint(const sb__dlq_record_t *r, const char *name, uint64_t *v);

/* x-sb-reason, x-sb-error, x-sb-handler, x-sb-consumer: NUL-terminated, or NULL. */
const char *sb__dlq_record_reason(const sb__dlq_record_t *r);
const char *sb__dlq_record_error(const sb__dlq_record_t *r);
const char *sb__dlq_record_handler(const sb__dlq_record_t *r);
const char *sb__dlq_record_consumer(const sb__dlq_record_t *r);
/* x-sb-attempts. false when absent or not a number. */
bool sb__dlq_record_attempts(const sb__dlq_record_t *r, uint64_t *attempts);
/* x-sb-failed-at: an RFC 3339 string (or an AMQP "T" timestamp in seconds). false when
 * absent or unparsable. */
bool sb__dlq_record_failed_at_us(const sb__dlq_record_t *r, int64_t *unix_us);
/* x-sb-replay-count, 0 when absent. */
uint64_t sb__dlq_record_replay_count(const sb__dlq_record_t *r);

/* The event type: AMQP: the original routing key (x-sb-original-routing-key, else the
 * record's routing key); Kafka: the "event-type" header, else "ce_type". A record of
 * unknown transport tries all four in that order. NULL when none is present. */
const char *sb__dlq_record_event_type(const sb__dlq_record_t *r, size_t *len);

/* The event id, as the consumer (envelope.c) takes it: a structured CloudEvent's body "id";
 * else the CloudEvents binary id headers (ce_id, cloudEvents:id, cloudEvents_id); else the
 * JSON body's "Id", then "id" (a string, or a number as written), then the AMQP message_id
 * property, then the SHA-256 of the body (the consumer's id with id_strategy: hash); a body
 * that is not JSON is named by its message_id property or "message-id" header. The result
 * points into the record, or into buf when an escaped JSON string had to be decoded (buf
 * of `size` bytes; a decoded id that does not fit counts as absent). NULL when none. */
const char *sb__dlq_record_event_id(const sb__dlq_record_t *r, size_t *len, char *buf, size_t size);

/* The copy to publish when replaying r at wall-clock time now_us. It keeps everything
 * (body, properties, every header, including the x-sb-* failure headers, for the audit
 * trail) except: it drops x-sb-attempts (a replay starts again at attempt 1), RabbitMQ's
 * x-death (from which the AMQP transport would otherwise count attempts), and the previous
 * x-sb-replay-count and x-sb-replayed-at, then appends x-sb-replay-count = previous + 1 and
 * x-sb-replayed-at = now (RFC 3339, UTC, microseconds). Kafka records get them as "K"
 * headers (decimal text), others as "l" and "S". Partition, offset and timestamp_ms are
 * dropped (the broker assigns new ones). SB_EOK and *out (caller destroys), or SB_ENOMEM. */
int sb__dlq_record_prepare_replay(const sb__dlq_record_t *r, int64_t now_us,
                                  sb__dlq_record_t **out);

/* Validates UTF-8 strictly (no overlongs, surrogates, or code points above U+10FFFF). */
bool sb__dlq_utf8_valid(const char *p, size_t len);

#endif
