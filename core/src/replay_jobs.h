/* replay_jobs.h: the admin API's replay jobs (POST /replay, GET /jobs/{id}).
 *
 *   POST /replay   body: a JSON object with the CLI's filters (dlq_filter.h: type, reason,
 *                  handler, error, since, until, id, limit, max_replays, force) and "to",
 *                  "rate" ("100/s"), "dry_run". 202 {"job":"<id>"}; 400 for a malformed
 *                  body; 409 while another job runs; 501 when the transport has no DLQ
 *                  backend.
 *   GET /jobs/{id} {"id","state":"running|done|failed|cancelled","dry_run","total","done",
 *                  "failed","refused","skipped","errors":[...],"started_at","finished_at"}
 *                  (times RFC 3339, finished_at null while running); 404 for an unknown id.
 *   DELETE /jobs/{id} cancels the running job: 202 {"job","state":"cancelling"}, the job
 *                  stops before its next record and ends "cancelled"; 409 when it is not
 *                  running, 404 for an unknown id.
 *   All answer 401 without the bearer token when one is configured.
 *
 * Design: a job runs sb__dlq_replay_run() on its own thread with its own backend handle
 * (the backend blocks; never on the loop). One job runs at a time; the last 16 are kept.
 * The route hook and the metrics are called on the loop thread and only read counters
 * (atomics) or take a short mutex. It does not persist jobs or resume them after a restart. */
#ifndef SB_REPLAY_JOBS_H
#define SB_REPLAY_JOBS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "config.h"
#include "dlq_backend.h"

struct evbuffer;

typedef struct sb__replay_jobs sb__replay_jobs_t;

/* cfg and ops are borrowed (ops NULL: the transport has no DLQ; POST /replay answers
 * 501). SB_EOK or SB_ENOMEM. */
int sb__replay_jobs_new(const sb__config_t *cfg, const sb__dlq_backend_ops_t *ops,
                        sb__replay_jobs_t **out);

/* Asks a running job to stop, waits for it, frees everything. NULL is a no-op. */
void sb__replay_jobs_destroy(sb__replay_jobs_t *j);

/* An sb__admin_hooks_t route hook (arg: the jobs). */
bool sb__replay_jobs_route(void *arg, const char *method, const char *path, const char *body,
                           size_t body_len, bool authed, int *status, json_t **reply);

/* Replay counts over every job of this process, the running one included, by outcome. */
typedef struct sb__replay_counts {
    uint64_t replayed, failed, refused, skipped;
} sb__replay_counts_t;
void sb__replay_jobs_counts(sb__replay_jobs_t *j, sb__replay_counts_t *out);

/* Appends the switchboard_replay_messages_total{outcome} family (j may be NULL: zeros). */
void sb__replay_jobs_metrics(sb__replay_jobs_t *j, struct evbuffer *out);

/* The state of job `id` as GET /jobs/{id} answers it; NULL when unknown. For tests. */
json_t *sb__replay_jobs_get(sb__replay_jobs_t *j, const char *id);

#endif
