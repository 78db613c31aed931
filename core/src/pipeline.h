/* pipeline.h: one consumer, assembled from a configuration.
 *
 * runtime (loop, signals) + transport + idempotency store + worker pool + intake + handler
 * registry + dispatcher, created in dependency order and destroyed in reverse. `run`,
 * `demo` and the handler test harness all build their consumer here, so there is one
 * wiring to get right. Transports and stores are chosen by name from the config; this
 * build knows `memory` for both (Kafka, RabbitMQ and Redis arrive with their issues). */
#ifndef SB_PIPELINE_H
#define SB_PIPELINE_H

#include "admin_http.h"
#include "config.h"
#include "intake.h"
#include "pool.h"
#include "registry.h"
#include "runtime.h"
#include "settle.h"
#include "store.h"
#include "transport.h"

typedef struct sb__pipeline {
    const sb__config_t *cfg; /* borrowed */
    sb__runtime_t *rt;
    sb__transport_t *tx;
    sb__store_t *store; /* NULL: idempotency.store none */
    sb__pool_t *pool;
    sb__intake_t *intake;
    sb__registry_t *reg;
    sb__dispatcher_t *dp;
    const char *transport_kind;
    struct store_gate *gate;      /* Redis store, on_unavailable: block (pipeline.c) */
    struct sb__replay_jobs *jobs; /* admin replay jobs (replay_jobs.h), with the admin server */
    struct sb__crashguard *guard; /* service.crash_file (crashguard.h); NULL: off */
} sb__pipeline_t;

/* Builds everything but does not start intake. SB_ECONFIG (with the reason) when the
 * configuration asks for something impossible; SB_ENOMEM. */
int sb__pipeline_new(const sb__config_t *cfg, sb__pipeline_t **out, char *errstr,
                     size_t errstr_size);

/* Starts the transport (deliveries begin on the next loop turn). */
int sb__pipeline_start(sb__pipeline_t *p, char *errstr, size_t errstr_size);

void sb__pipeline_destroy(sb__pipeline_t *p);

/* Serves the admin endpoints (/healthz, /readyz, /metrics, /handlers) for this pipeline on
 * its loop. `listen` is host:port; token may be NULL (then only loopback is allowed). */
int sb__pipeline_admin(sb__pipeline_t *p, const char *listen, const char *token, sb__admin_t **out,
                       char *errstr, size_t errstr_size);

/* Applies log.level / log.format and registers every secret of cfg with the logger. */
void sb__pipeline_configure_logging(const sb__config_t *cfg);

#endif
