/* dlq_filter.h: which dead letters a `switchboard dlq` verb (or a POST /replay job) selects,
 * and the `dlq stats` accumulator.
 *
 * A filter is built option by option, from the command line (sb__dlq_filter_set with the
 * option's name and text) or from a JSON object (the admin API's request body), and then
 * tested against records. Options (all optional; a record must pass every one given):
 *
 *   type PATTERN     the event type (sb__dlq_event_type) matches an AMQP topic
 *                    pattern ("Order.*", "#.Created", "DataSyncCompletedEvent"); repeated:
 *                    any of them
 *   reason LIST      x-sb-reason is one of a comma-separated list; repeated: lists add up
 *   handler LIST     x-sb-handler is one of a comma-separated list; repeated: lists add up
 *   error REGEX      x-sb-error matches a POSIX extended regular expression (unanchored)
 *   since TIME       x-sb-failed-at >= TIME; until TIME: x-sb-failed-at < TIME. TIME is RFC
 *                    3339 ("2026-03-01T12:00:00Z"; without an offset: UTC), a date
 *                    ("2026-03-01", midnight UTC), or a duration meaning that long before the
 *                    filter's `now` ("2h", "7d", "1h30m")
 *   id ID            the event id (sb__dlq_record_event_id) equals ID
 *   limit N          at most N records (N >= 1): counted by the caller, not by match()
 *   max-replays N    replay refuses records already replayed N times or more (x-sb-replay-count)
 *   force            replay even beyond max-replays
 * A record that lacks the field an option tests does not match it. The last value of a
 * non-list option wins.
 *
 * The event type is the one the consumer routed by (sb__dlq_event_type): a Kafka record
 * whose type is in no header falls back to the body member the consumer read
 * (transport.kafka.event_type_field), as envelope.c does.
 *
 * Not thread-safe while being built; matching does not modify the filter... except the type
 * router's scratch state, so one filter serves one thread. */
#ifndef SB_DLQ_FILTER_H
#define SB_DLQ_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dlq_record.h"

typedef struct sb__dlq_filter sb__dlq_filter_t;

/* An empty filter (matches everything). now_us (wall clock, µs since the epoch) anchors
 * relative times. SB_EOK or SB_ENOMEM. */
int sb__dlq_filter_new(int64_t now_us, sb__dlq_filter_t **out);
void sb__dlq_filter_destroy(sb__dlq_filter_t *f);

/* Sets option `name` ("type", "reason", "error", "handler", "since", "until", "id", "limit",
 * "max-replays" (or "max_replays"), "force") from its command-line text; for "force", value
 * may be NULL (meaning true), "true" or "false". SB_EOK; SB_EINVAL for an unknown option;
 * SB_EPARSE / SB_ERANGE for a bad value; SB_ENOMEM. errstr names the option as "--name".
 * On error the filter is unchanged. */
int sb__dlq_filter_set(sb__dlq_filter_t *f, const char *name, const char *value, char *errstr,
                       size_t errstr_size);

/* Sets every member of a JSON object: strings for the text options ("type", "reason" and
 * "handler" also take an array of strings), integers for "limit" and "max_replays", a boolean
 * for "force". Members named in `also_allowed` (a NULL-terminated list, may be NULL) are
 * skipped, for the caller's own options ("to", "rate", "dry_run"); any other member is an
 * error. Errors name the member as "\"name\"". The filter may be partly set on error. */
int sb__dlq_filter_from_json(sb__dlq_filter_t *f, const json_t *obj,
                             const char *const *also_allowed, char *errstr, size_t errstr_size);

/* true when the record passes every selecting option (not limit, not max-replays). */
bool sb__dlq_filter_match(const sb__dlq_filter_t *f, const sb__dlq_record_t *r);

/* true when replay may publish r: force, or no max-replays, or replay count < max-replays. */
bool sb__dlq_filter_replay_allowed(const sb__dlq_filter_t *f, const sb__dlq_record_t *r);

/* The limit, 0 when none. */
uint64_t sb__dlq_filter_limit(const sb__dlq_filter_t *f);
/* true and *us (µs since the epoch) when `since` is set. A reader may use it to skip ahead
 * (Kafka: seek by record timestamp), but only as an optimisation: match() decides on
 * x-sb-failed-at. */
bool sb__dlq_filter_since(const sb__dlq_filter_t *f, int64_t *us);
/* true when at least one selecting option is set (purge without one asks for --all). */
bool sb__dlq_filter_selects(const sb__dlq_filter_t *f);

/* The body member that holds the event type of records whose type is in no header
 * (transport.kafka.event_type_field; the default is "EventType"); NULL or "": none.
 * SB_EOK or SB_ENOMEM (then unchanged). */
int sb__dlq_filter_set_type_field(sb__dlq_filter_t *f, const char *field);
/* The record's event type as the filter matches it (see sb__dlq_event_type). */
const char *sb__dlq_filter_event_type(const sb__dlq_filter_t *f, const sb__dlq_record_t *r,
                                      size_t *len, char *buf, size_t size);

/* The event type the consumer routed the record by: sb__dlq_record_event_type (AMQP: the
 * original routing key; Kafka: the event-type or ce_type header); for a record that is not
 * AMQP and has neither header, like the consumer (envelope.c): when its body is a JSON
 * object, the top-level string member `type_field` (may be NULL: skipped), else the
 * x-sb-original-topic header. The result, *len bytes that need not end in a NUL, points
 * into the record, or into buf (`size` bytes) when an escaped JSON string had to be decoded
 * (one that does not fit counts as absent). NULL when there is none. */
const char *sb__dlq_event_type(const sb__dlq_record_t *r, const char *type_field, size_t *len,
                               char *buf, size_t size);

/* ---- stats --------------------------------------------------------------------------- */

typedef struct sb__dlq_stats sb__dlq_stats_t;

/* New stats count event types with the default type field "EventType". */
int sb__dlq_stats_new(sb__dlq_stats_t **out);
void sb__dlq_stats_destroy(sb__dlq_stats_t *s);
/* As sb__dlq_filter_set_type_field, for the by-type counts. */
int sb__dlq_stats_set_type_field(sb__dlq_stats_t *s, const char *field);
/* Counts r: by reason, event type (sb__dlq_event_type) and handler ("(none)" when absent;
 * bytes that are not UTF-8 become '?'), and the oldest and newest x-sb-failed-at. SB_EOK or
 * SB_ENOMEM (then the stats are unchanged). */
int sb__dlq_stats_add(sb__dlq_stats_t *s, const sb__dlq_record_t *r);
uint64_t sb__dlq_stats_total(const sb__dlq_stats_t *s);

/* The `dlq stats` table, several lines ending in '\n': totals, then one section per
 * dimension, largest count first (ties by name). Control characters print as '?'.
 * *out: caller frees with sb_free(). SB_EOK or SB_ENOMEM. */
int sb__dlq_stats_format_table(const sb__dlq_stats_t *s, char **out);
/* One JSON object (no newline): {"total":N,"oldest":TIME|null,"newest":TIME|null,
 * "without_failed_at":N,"by_reason":{...},"by_type":{...},"by_handler":{...}}, the maps in
 * the table's order. *out: caller frees with sb_free(). SB_EOK or SB_ENOMEM. */
int sb__dlq_stats_to_json(const sb__dlq_stats_t *s, char **out);

#endif
