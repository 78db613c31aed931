/* intake.h: the transport-agnostic front half of the runtime, as one call per message.
 *
 * raw message -> envelope decode -> schema validation (when a schema is bound to the event
 * type) -> routing -> a verdict: dispatch to these targets, acknowledge (unroutable under
 * the `ack` policy, or schema failures under `ack`), or dead-letter with a reason (`decode`,
 * `schema`, `unroutable`) and a precise error. The verdict is final for everything intake
 * can decide; retries and handler outcomes are settlement's business (not here).
 *
 * Schemas are compiled once when bound; patterns use the router's topic syntax for both
 * handler and schema bindings. Counters are kept for metrics. Single-threaded: an intake
 * belongs to the loop thread. */
#ifndef SB_INTAKE_H
#define SB_INTAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "envelope.h"

#define SB__INTAKE_MAX_TARGETS 64

typedef struct sb__intake sb__intake_t;

typedef enum sb__verdict_kind {
    SB__VERDICT_DISPATCH = 0, /* run targets[0..n_targets) */
    SB__VERDICT_ACK = 1,      /* settle as done without running anything */
    SB__VERDICT_DEAD_LETTER = 2,
} sb__verdict_kind_t;

typedef struct sb__verdict {
    sb__verdict_kind_t kind;
    const char *reason; /* static: "decode", "schema", "unroutable" (ACK and DEAD_LETTER) */
    char error[512];    /* human-readable detail for x-sb-error and logs */
    size_t n_targets;
    void *targets[SB__INTAKE_MAX_TARGETS];
} sb__verdict_t;

typedef struct sb__intake_stats {
    uint64_t received;
    uint64_t dispatched;
    uint64_t decode_failed;
    uint64_t schema_failed;
    uint64_t unroutable;
} sb__intake_stats_t;

typedef struct sb__intake_opts {
    sb__envelope_opts_t envelope;
    bool ack_unroutable;     /* intake.unroutable: ack (else dead-letter) */
    bool ack_schema_invalid; /* schemas.on_invalid: ack (else dead-letter) */
} sb__intake_opts_t;

int sb__intake_new(const sb__intake_opts_t *opts, sb__intake_t **out);
void sb__intake_destroy(sb__intake_t *in);

/* Builds the options and schema bindings from a loaded configuration: intake.* and
 * schemas.*; schema files are looked up in schemas.dir (relative paths are relative to the
 * working directory). Handler bindings are added by the caller (the registry). */
int sb__intake_from_config(const sb__config_t *cfg, sb__intake_t **out, char *errstr,
                           size_t errstr_size);

/* Binds events whose type matches `pattern` to a handler target (borrowed). */
int sb__intake_bind_handler(sb__intake_t *in, const char *pattern, void *target, char *errstr,
                            size_t errstr_size);

/* Binds events whose type matches `pattern` to the schema in file `path`, compiled now.
 * An event matching several schema bindings must satisfy all of them. */
int sb__intake_bind_schema(sb__intake_t *in, const char *pattern, const char *path, char *errstr,
                           size_t errstr_size);

/* Decides what to do with one message. `ev` (init'ed by the caller, reused across calls)
 * receives the decoded event, which borrows `msg`. Returns SB_EOK with *v filled, or
 * SB_ENOMEM (nothing decided: the caller retries later, it must not ack). */
int sb__intake_process(sb__intake_t *in, const sb__intake_msg_t *msg, sb_event_t *ev,
                       sb__verdict_t *v);

const sb__intake_stats_t *sb__intake_stats(const sb__intake_t *in);

#endif
