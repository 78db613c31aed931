/* replay_jobs.c: replay jobs for the admin API (see replay_jobs.h).
 *
 * Design: a fixed ring of 16 job slots under one mutex; the running job's counters are the
 * atomics of sb__dlq_replay_progress_t, so GET /jobs/{id} reads them without stopping the
 * worker. The worker thread opens its own backend handle from the daemon's config, runs the
 * shared replay loop (dlq_replay.c), closes the handle and marks the job done or failed;
 * it is joined by the next POST or at destroy. Metric totals are folded in when a job ends.
 *
 * DELETE /jobs/{id} cancels the running job: the shared replay loop stops before its next
 * record (a record whose copy is being published is finished: published and acked), and
 * the job ends "cancelled". The same flag stops a job at destroy.
 *
 * It does not: run two jobs at once, keep more than 16 jobs, or persist them. */
#include "replay_jobs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "datetime.h"
#include "dlq_filter.h"
#include "dlq_replay.h"
#include "ratelimit.h"

#define MAX_JOBS   16
#define MAX_ERRORS 50

enum { JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED };
static const char *const state_names[] = {"running", "done", "failed", "cancelled"};

typedef struct job {
    char id[24];
    atomic_int state;
    bool dry_run;
    char *to;
    sb__dlq_filter_t *filter;
    sb__ratelimit_t rl;
    bool paced;
    sb__dlq_replay_progress_t p;
    int64_t started_us;
    atomic_int_fast64_t finished_us;
    json_t *errors; /* strings; guarded by the jobs' mutex */
    struct sb__replay_jobs *owner;
} job_t;

struct sb__replay_jobs {
    const sb__config_t *cfg;
    const sb__dlq_backend_ops_t *ops;
    pthread_mutex_t mu;
    job_t *jobs[MAX_JOBS]; /* ring, oldest replaced */
    size_t next_slot;
    unsigned long seq;
    job_t *running; /* the job whose thread is not joined yet */
    pthread_t th;
    atomic_bool cancel;
    sb__replay_counts_t totals; /* finished jobs; guarded by mu */
};

static void job_free(job_t *jb)
{
    if (!jb)
        return;
    sb__dlq_filter_destroy(jb->filter);
    sb_free(jb->to);
    json_decref(jb->errors);
    sb_free(jb);
}

int sb__replay_jobs_new(const sb__config_t *cfg, const sb__dlq_backend_ops_t *ops,
                        sb__replay_jobs_t **out)
{
    if (!cfg || !out)
        return SB_EINVAL;
    sb__replay_jobs_t *j = sb_calloc(1, sizeof *j);
    if (!j)
        return SB_ENOMEM;
    if (pthread_mutex_init(&j->mu, NULL) != 0) {
        sb_free(j);
        return SB_ENOMEM;
    }
    j->cfg = cfg;
    j->ops = ops;
    atomic_init(&j->cancel, false);
    *out = j;
    return SB_EOK;
}

/* Joins the finished (or, with cancel, stopping) worker. Not under mu. */
static void join_worker(sb__replay_jobs_t *j)
{
    pthread_mutex_lock(&j->mu);
    job_t *r = j->running;
    pthread_mutex_unlock(&j->mu);
    if (!r)
        return;
    pthread_join(j->th, NULL);
    pthread_mutex_lock(&j->mu);
    j->running = NULL;
    pthread_mutex_unlock(&j->mu);
}

void sb__replay_jobs_destroy(sb__replay_jobs_t *j)
{
    if (!j)
        return;
    atomic_store(&j->cancel, true);
    join_worker(j);
    for (size_t i = 0; i < MAX_JOBS; i++)
        job_free(j->jobs[i]);
    pthread_mutex_destroy(&j->mu);
    sb_free(j);
}

static void on_record(void *arg, sb__dlq_replay_event_t ev, const char *id, const char *why)
{
    job_t *jb = arg;
    if (ev == SB__DLQ_REPLAY_WOULD)
        return;
    char line[640];
    snprintf(line, sizeof line, "%s %.120s: %.480s",
             ev == SB__DLQ_REPLAY_REFUSED ? "refused" : "failed", id, why ? why : "");
    pthread_mutex_lock(&jb->owner->mu);
    if (json_array_size(jb->errors) < MAX_ERRORS)
        json_array_append_new(jb->errors, json_string(line));
    pthread_mutex_unlock(&jb->owner->mu);
}

static void add_error(job_t *jb, const char *msg)
{
    pthread_mutex_lock(&jb->owner->mu);
    json_array_append_new(jb->errors, json_string(msg));
    pthread_mutex_unlock(&jb->owner->mu);
}

static void *worker(void *arg)
{
    job_t *jb = arg;
    sb__replay_jobs_t *j = jb->owner;
    char err[512] = "";
    sb__dlq_open_opts_t oo = {
        .dlq = NULL, .read_only = jb->dry_run, .since_ms = -1, .start_offset = -1};
    sb__dlq_backend_t *b = NULL;
    int rc = j->ops->open(j->cfg, &oo, &b, err, sizeof err);
    if (rc == SB_EOK) {
        sb__dlq_replay_opts_t o = {.b = b,
                                   .filter = jb->filter,
                                   .to = jb->to,
                                   .dry_run = jb->dry_run,
                                   .rl = jb->paced ? &jb->rl : NULL,
                                   .cancel = &j->cancel,
                                   .on_record = on_record,
                                   .arg = jb};
        err[0] = '\0';
        rc = sb__dlq_replay_run(&o, &jb->p, err, sizeof err);
        j->ops->close(b);
    }
    if (rc != SB_EOK)
        add_error(jb, *err ? err : sb_strerror(rc));
    pthread_mutex_lock(&j->mu);
    uint64_t done = atomic_load(&jb->p.replayed);
    if (jb->dry_run)
        j->totals.skipped += done;
    else
        j->totals.replayed += done;
    j->totals.failed += atomic_load(&jb->p.failed);
    j->totals.refused += atomic_load(&jb->p.refused);
    j->totals.skipped += atomic_load(&jb->p.skipped);
    atomic_store(&jb->finished_us, sb__datetime_now_us());
    atomic_store(&jb->state, rc != SB_EOK              ? JOB_FAILED
                             : atomic_load(&j->cancel) ? JOB_CANCELLED
                                                       : JOB_DONE);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

static json_t *error_doc(int status, const char *msg)
{
    return json_pack("{s:s, s:i}", "error", msg, "status", status);
}

static const char *const own_options[] = {"to", "rate", "dry_run", NULL};

/* The body member holding a Kafka event's type, as `switchboard dlq` reads it: the consumer
 * falls back to it when no header names the type (envelope.c), so the job's "type" filter
 * must see the same type. NULL for other transports. */
static const char *type_field(const sb__config_t *cfg)
{
    const char *kind = sb__config_str(cfg, "transport.kind");
    if (!kind || strcmp(kind, "kafka"))
        return NULL;
    return sb__config_str(cfg, "transport.kafka.event_type_field");
}

/* Builds a job from the POST body; NULL with *status and *reply set. */
static job_t *job_from_body(const sb__config_t *cfg, const char *body, size_t len, int *status,
                            json_t **reply)
{
    char err[512] = "";
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, 0, &jerr);
    job_t *jb = NULL;
    if (!doc || !json_is_object(doc)) {
        *status = 400;
        snprintf(err, sizeof err, "the body must be a JSON object%s%s", doc ? "" : ": ",
                 doc ? "" : jerr.text);
        goto bad;
    }
    jb = sb_calloc(1, sizeof *jb);
    if (!jb || !(jb->errors = json_array()) ||
        sb__dlq_filter_new(sb__datetime_now_us(), &jb->filter) != SB_EOK ||
        sb__dlq_filter_set_type_field(jb->filter, type_field(cfg)) != SB_EOK)
        goto nomem;
    if (sb__dlq_filter_set(jb->filter, "max-replays", "5", NULL, 0) != SB_EOK)
        goto nomem;
    if (sb__dlq_filter_from_json(jb->filter, doc, own_options, err, sizeof err) != SB_EOK) {
        *status = 400;
        goto bad;
    }
    json_t *v = json_object_get(doc, "to");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || !json_string_length(v)) {
            *status = 400;
            snprintf(err, sizeof err, "\"to\": a non-empty string");
            goto bad;
        }
        if (!(jb->to = sb_strdup(json_string_value(v))))
            goto nomem;
    }
    v = json_object_get(doc, "dry_run");
    if (v && !json_is_boolean(v)) {
        *status = 400;
        snprintf(err, sizeof err, "\"dry_run\": true or false");
        goto bad;
    }
    jb->dry_run = v && json_is_true(v);
    v = json_object_get(doc, "rate");
    if (v && !json_is_null(v)) {
        uint64_t n = 0, period = 0;
        char rerr[256] = "";
        if (!json_is_string(v) ||
            sb__ratelimit_parse(json_string_value(v), &n, &period, rerr, sizeof rerr) != SB_EOK) {
            *status = 400;
            snprintf(err, sizeof err, "\"rate\": %s", *rerr ? rerr : "a string such as \"100/s\"");
            goto bad;
        }
        sb__ratelimit_init(&jb->rl, n, period, 1);
        jb->paced = true;
    }
    json_decref(doc);
    return jb;
nomem:
    *status = 500;
    snprintf(err, sizeof err, "out of memory");
bad:
    json_decref(doc);
    job_free(jb);
    *reply = error_doc(*status, err);
    return NULL;
}

static void post_replay(sb__replay_jobs_t *j, const char *body, size_t len, int *status,
                        json_t **reply)
{
    if (!j->ops) {
        *status = 501;
        *reply = error_doc(501, "this transport has no dead-letter queue backend");
        return;
    }
    job_t *jb = job_from_body(j->cfg, body, len, status, reply);
    if (!jb)
        return;
    pthread_mutex_lock(&j->mu);
    bool busy = j->running && atomic_load(&j->running->state) == JOB_RUNNING;
    pthread_mutex_unlock(&j->mu);
    if (busy) {
        job_free(jb);
        *status = 409;
        *reply = error_doc(409, "a replay job is already running");
        return;
    }
    join_worker(j); /* the previous worker has finished: this returns at once */
    atomic_store(&j->cancel, false);
    jb->owner = j;
    atomic_init(&jb->state, JOB_RUNNING);
    atomic_init(&jb->finished_us, 0);
    jb->started_us = sb__datetime_now_us();
    pthread_mutex_lock(&j->mu);
    snprintf(jb->id, sizeof jb->id, "%08lx%06lx", (unsigned long)(jb->started_us / 1000000),
             ++j->seq & 0xffffff);
    job_free(j->jobs[j->next_slot]);
    j->jobs[j->next_slot] = jb;
    j->next_slot = (j->next_slot + 1) % MAX_JOBS;
    int rc = pthread_create(&j->th, NULL, worker, jb);
    if (rc == 0)
        j->running = jb;
    else
        atomic_store(&jb->state, JOB_FAILED);
    pthread_mutex_unlock(&j->mu);
    if (rc != 0) {
        add_error(jb, "cannot start the replay thread");
        atomic_store(&jb->finished_us, sb__datetime_now_us());
    }
    *status = 202;
    *reply = json_pack("{s:s}", "job", jb->id);
}

static json_t *time_or_null(int64_t us)
{
    if (!us)
        return json_null();
    char buf[32];
    sb__datetime_format(us, buf);
    return json_string(buf);
}

json_t *sb__replay_jobs_get(sb__replay_jobs_t *j, const char *id)
{
    if (!j || !id)
        return NULL;
    json_t *doc = NULL;
    pthread_mutex_lock(&j->mu);
    for (size_t i = 0; i < MAX_JOBS; i++) {
        job_t *jb = j->jobs[i];
        if (!jb || strcmp(jb->id, id))
            continue;
        int st = atomic_load(&jb->state);
        doc = json_pack(
            "{s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}", "id", jb->id, "state",
            state_names[st], "dry_run", jb->dry_run, "total", (json_int_t)atomic_load(&jb->p.total),
            "done", (json_int_t)atomic_load(&jb->p.replayed), "failed",
            (json_int_t)atomic_load(&jb->p.failed), "refused",
            (json_int_t)atomic_load(&jb->p.refused), "skipped",
            (json_int_t)atomic_load(&jb->p.skipped), "seen", (json_int_t)atomic_load(&jb->p.seen),
            "errors", json_deep_copy(jb->errors), "started_at", time_or_null(jb->started_us),
            "finished_at", time_or_null(atomic_load(&jb->finished_us)));
        break;
    }
    pthread_mutex_unlock(&j->mu);
    return doc;
}

/* DELETE /jobs/{id}: asks the running job to stop; 202, or 404 / 409 (not running). */
static void cancel_job(sb__replay_jobs_t *j, const char *id, int *status, json_t **reply)
{
    pthread_mutex_lock(&j->mu);
    job_t *jb = NULL;
    for (size_t i = 0; i < MAX_JOBS && !jb; i++)
        if (j->jobs[i] && !strcmp(j->jobs[i]->id, id))
            jb = j->jobs[i];
    int st = jb ? atomic_load(&jb->state) : -1;
    if (jb && st == JOB_RUNNING && jb == j->running)
        atomic_store(&j->cancel, true);
    pthread_mutex_unlock(&j->mu);
    if (!jb) {
        *status = 404;
        *reply = error_doc(404, "no such job");
    } else if (st != JOB_RUNNING) {
        char msg[96];
        snprintf(msg, sizeof msg, "the job is not running (%s)", state_names[st]);
        *status = 409;
        *reply = error_doc(409, msg);
    } else {
        *status = 202;
        *reply = json_pack("{s:s, s:s}", "job", id, "state", "cancelling");
    }
}

bool sb__replay_jobs_route(void *arg, const char *method, const char *path, const char *body,
                           size_t body_len, bool authed, int *status, json_t **reply)
{
    sb__replay_jobs_t *j = arg;
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (!authed) { /* GET /jobs/{id} too: job errors name events */
        *status = 401;
        *reply = error_doc(401, "a valid bearer token is required");
        return true;
    }
    if (!strcmp(path, "/replay")) {
        if (strcmp(method, "POST")) {
            *status = 405;
            *reply = error_doc(405, "method not allowed (POST)");
            return true;
        }
        post_replay(j, body, body_len, status, reply);
        return true;
    }
    if (!strncmp(path, "/jobs/", 6)) {
        if (!strcmp(method, "DELETE")) {
            cancel_job(j, path + 6, status, reply);
            return true;
        }
        if (!get) {
            *status = 405;
            *reply = error_doc(405, "method not allowed (GET, DELETE)");
            return true;
        }
        json_t *doc = sb__replay_jobs_get(j, path + 6);
        *status = doc ? 200 : 404;
        *reply = doc ? doc : error_doc(404, "no such job");
        return true;
    }
    return false;
}

void sb__replay_jobs_counts(sb__replay_jobs_t *j, sb__replay_counts_t *out)
{
    memset(out, 0, sizeof *out);
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    *out = j->totals;
    job_t *r = j->running;
    if (r && atomic_load(&r->state) == JOB_RUNNING) {
        uint64_t done = atomic_load(&r->p.replayed);
        if (r->dry_run)
            out->skipped += done;
        else
            out->replayed += done;
        out->failed += atomic_load(&r->p.failed);
        out->refused += atomic_load(&r->p.refused);
        out->skipped += atomic_load(&r->p.skipped);
    }
    pthread_mutex_unlock(&j->mu);
}

void sb__replay_jobs_metrics(sb__replay_jobs_t *j, struct evbuffer *out)
{
    sb__replay_counts_t c;
    sb__replay_jobs_counts(j, &c);
    evbuffer_add_printf(out,
                        "# HELP switchboard_replay_messages_total Dead letters handled by admin "
                        "replay jobs, by outcome.\n"
                        "# TYPE switchboard_replay_messages_total counter\n"
                        "switchboard_replay_messages_total{outcome=\"replayed\"} %llu\n"
                        "switchboard_replay_messages_total{outcome=\"failed\"} %llu\n"
                        "switchboard_replay_messages_total{outcome=\"refused\"} %llu\n"
                        "switchboard_replay_messages_total{outcome=\"skipped\"} %llu\n",
                        (unsigned long long)c.replayed, (unsigned long long)c.failed,
                        (unsigned long long)c.refused, (unsigned long long)c.skipped);
}
