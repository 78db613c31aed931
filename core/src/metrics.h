/* metrics.h: the Prometheus exposition of the runtime's counters (text format 0.0.4).
 *
 * Pull, not push: nothing here keeps its own copy of the counts. The dispatcher, the
 * handlers (sb__handler_t) and the intake already count on the loop thread; a scrape reads
 * them through a source struct the caller fills with borrowed pointers and renders one
 * exposition into an evbuffer. The only state of our own is the handler-duration histogram,
 * a fixed-bucket array the dispatcher embeds and feeds (one per handler).
 *
 * Metric names are part of the contract (issue 8):
 *   switchboard_messages_received_total{transport,source}       counter
 *   switchboard_messages_settled_total{handler,outcome}          counter
 *       outcome: ok, retried, dead_lettered, duplicate, rejected
 *   switchboard_handler_duration_seconds{handler}                histogram
 *   switchboard_dead_letters_total{reason}                       counter (the 6 reasons)
 *   switchboard_inflight_messages                                gauge
 *   switchboard_broker_connected                                 gauge 0/1
 *   switchboard_idempotency_store_up                             gauge 0/1, only with a store
 *   switchboard_kafka_consumer_lag{topic,partition}              gauge, only with Kafka
 *   process_resident_memory_bytes, process_cpu_seconds_total,
 *   process_open_fds, process_start_time_seconds                 from /proc/self (Linux),
 *   (and process_virtual_memory_bytes, process_max_fds, as the Go client names them)
 *
 * Loop affinity: everything here runs on the loop thread (the counters it reads are
 * loop-thread counters). Not here: HTTP (admin_http.c), computing the Kafka lag
 * (transport_kafka.c), replay counters (added with their subsystem). */
#ifndef SB_METRICS_H
#define SB_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "intake.h"
#include "registry.h"
#include "settle.h"
#include "transport_kafka.h"

struct evbuffer;

#include "histogram.h"

int sb__histogram_render(const sb__histogram_t *h, const char *name, const char *label_name,
                         const char *label_value, struct evbuffer *out);

/* ---- exposition --------------------------------------------------------------------------- */

/* What a scrape reads. Every pointer is borrowed for the call and may be NULL: the families
 * it feeds are then rendered with zero values (received, dead letters, in-flight) or no
 * series (per-handler families). */
typedef struct sb__metrics_src {
    const sb__dispatcher_t *dp;       /* received, dead letters by reason, in-flight */
    const sb__registry_t *reg;        /* per-handler settlement counters */
    const sb__intake_t *intake;       /* received, when there is no dispatcher */
    const sb__histogram_t *durations; /* parallel to reg's handlers (count entries), or NULL */
    const char *transport;            /* label value, e.g. "memory", "amqp", "kafka"; NULL: "" */
    const char *source;               /* queue or topic name; NULL: "" */
    bool broker_connected;
    int store_up; /* -1: no idempotency store (metric omitted), 0 down, 1 up */
    bool kafka;   /* announce switchboard_kafka_consumer_lag (with the series in kafka_lag) */
    const sb__kafka_lag_t *kafka_lag; /* n_kafka_lag entries, may be NULL */
    size_t n_kafka_lag;
} sb__metrics_src_t;

/* Appends the whole exposition (switchboard_* families, then process_*) to `out`.
 * SB_EOK or SB_ENOMEM (out may then hold a partial exposition: discard it). */
int sb__metrics_render(const sb__metrics_src_t *src, struct evbuffer *out);

/* Appends the process_* families only, read from /proc/self; families whose source cannot
 * be read are left out. SB_EOK or SB_ENOMEM. */
int sb__metrics_render_process(struct evbuffer *out);

/* Appends `s` escaped as a label value (backslash, double quote and newline escaped; invalid
 * UTF-8 bytes become U+FFFD so the exposition stays valid UTF-8), without the quotes.
 * NULL is the empty string. SB_EOK or SB_ENOMEM. */
int sb__metrics_escape_label(struct evbuffer *out, const char *s);

/* The /handlers document: {"handlers":[{"name", "module_handler", "pattern", "blocking",
 * "timeout_ms", "counters":{"ok","retried","rejected","duplicate","timeout",
 * "dead_lettered"}}...]}. `pattern` is the module's default binding (the configured `bind`
 * patterns live in the intake and are not visible here). reg may be NULL (empty list).
 * A new reference, or NULL on allocation failure. */
json_t *sb__metrics_handlers_json(const sb__registry_t *reg);

#endif
