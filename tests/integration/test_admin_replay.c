/* Admin replay jobs on a real RabbitMQ dead-letter queue, through a real `switchboard run`:
 *  - a consumer whose `fail` handler rejects dead-letters 5 events;
 *  - with admin.token set: POST /replay without the token -> 401, with a malformed body or
 *    an unknown filter -> 400, GET /jobs/unknown -> 404 (and 401 without the token);
 *  - {"reason":"rejected","dry_run":true} -> 202, the job finishes with total 5, done 5,
 *    and nothing moved;
 *  - the consumer restarted with a succeeding handler: a slow replay job cancelled by
 *    DELETE /jobs/{id} after its first record ends "cancelled" with the rest still in the
 *    DLQ (DELETE again -> 409, unknown -> 404, no token -> 401); a paced replay job (a second
 *    POST while it runs -> 409) moves the rest; each id is handled once (ledger), the DLQ is
 *    empty, and /metrics shows switchboard_replay_messages_total{outcome="replayed"} 5. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

#define TOKEN "replay-test-token"

static const char *url;
static int admin_port;

typedef struct {
    int status;
    char body[16384];
} resp_t;

/* One HTTP/1.1 request with Connection: close; the status and the body. */
static resp_t http(const char *method, const char *path, const char *token, const char *body)
{
    resp_t r;
    char *b;
    r.status = sbt_http(admin_port, method, path, token, body, &b);
    snprintf(r.body, sizeof r.body, "%s", b ? b : "");
    free(b);
    return r;
}

static json_t *parse(const resp_t *r)
{
    json_error_t e;
    json_t *j = json_loads(r->body, 0, &e);
    SBT_CHECK_MSG(j != NULL, "not JSON (status %d): %s", r->status, r->body);
    return j;
}

static long jint(json_t *o, const char *k)
{
    return (long)json_integer_value(json_object_get(o, k));
}

/* POSTs a replay and returns the job id (caller frees); checks 202. */
static char *post_job(const char *body)
{
    resp_t r = http("POST", "/replay", TOKEN, body);
    SBT_CHECK_MSG(r.status == 202, "POST /replay %s: %d %s", body, r.status, r.body);
    json_t *j = parse(&r);
    const char *id = json_string_value(json_object_get(j, "job"));
    SBT_CHECK(id && *id);
    char *out = strdup(id);
    json_decref(j);
    return out;
}

/* Polls GET /jobs/{id} until it is no longer running; the final document. */
static json_t *wait_job(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/jobs/%s", id);
    for (int i = 0; i < 300; i++) {
        resp_t r = http("GET", path, TOKEN, NULL);
        SBT_CHECK_MSG(r.status == 200, "GET %s: %d %s", path, r.status, r.body);
        json_t *j = parse(&r);
        const char *st = json_string_value(json_object_get(j, "state"));
        SBT_CHECK(st != NULL);
        if (strcmp(st, "running"))
            return j;
        json_decref(j);
        usleep(100000);
    }
    SBT_CHECK_MSG(false, "job %s still running after 30 s", id);
    return NULL;
}

static long wait_depth(const char *q, long want)
{
    long d = -1;
    for (int i = 0; i < 150 && (d = sbt_amqp_depth(url, q)) != want; i++)
        usleep(100000);
    return d;
}

static pid_t start_consumer(const char *exchange, const char *queue, const char *ledger, bool fixed,
                            char **cfg_out, const char *log)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "service: {name: admin-replay-test}\n"
             "admin: {listen: \"127.0.0.1:%d\", token: \"%s\"}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: amqp\n"
             "  amqp: {url: \"%s\", exchange: %s, queue: %s, prefetch: 32}\n"
             "idempotency: {store: none}\n"
             "handlers:\n"
             "%s"
             "  - name: rec\n"
             "    module: record\n"
             "    bind: [\"Order.*\"%s]\n"
             "    config: {path: %s}\n",
             admin_port, TOKEN, url, exchange, queue,
             fixed ? ""
                   : "  - name: rejecter\n    module: fail\n    bind: [\"Reject.#\"]\n"
                     "    config: {outcome: reject, reason: bad order}\n",
             fixed ? ", \"Reject.#\"" : "", ledger);
    *cfg_out = sbt_write_temp(yaml, ".yaml");
    const char *args[] = {"run", "-c", *cfg_out, NULL};
    pid_t pid = sbt_spawn_switchboard(args, NULL, log);
    size_t before = sbt_count_lines(log);
    SBT_CHECK_MSG(sbt_wait_lines(log, before + 2, 10000), "switchboard did not start (%s)", log);
    for (int i = 0; i < 100 && sbt_amqp_depth(url, queue) < 0; i++)
        usleep(100000);
    for (int i = 0; i < 100 && http("GET", "/healthz", NULL, NULL).status != 200; i++)
        usleep(100000);
    usleep(300000);
    return pid;
}

int main(void)
{
    url = sbt_service("SB_TEST_AMQP_URL", "RabbitMQ");
    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK_MSG(c != NULL, "cannot connect to RabbitMQ at %s", url);
    admin_port = sbt_free_port();
    char *exchange = sbt_unique_name("sbt.areplay.x");
    char *queue = sbt_unique_name("sbt.areplay.q");
    char dlq_name[256], dlx[256];
    snprintf(dlq_name, sizeof dlq_name, "%s.dlq", queue);
    snprintf(dlx, sizeof dlx, "%s.dlx", exchange);
    char *ledger = sbt_write_temp("", ".ledger");
    char *log = sbt_write_temp("", ".log");

    /* 1. Five dead letters (handler reject). */
    char *cfg_a, *cfg_b;
    pid_t pid = start_consumer(exchange, queue, ledger, false, &cfg_a, log);
    const char *bodies[] = {"{\"Id\":\"r1\"}", "{\"Id\":\"r2\"}", "{\"Id\":\"r3\"}",
                            "{\"Id\":\"r4\"}", "{\"Id\":\"r5\"}"};
    const char *rks[] = {"Reject.Order", "Reject.Order", "Reject.Order", "Reject.Invoice",
                         "Reject.Invoice"};
    const char *mids[] = {"r1", "r2", "r3", "r4", "r5"};
    SBT_CHECK(sbt_amqp_publish_many(c, exchange, rks, false, bodies, mids, 5, NULL, NULL) == 0);
    SBT_CHECK_MSG(wait_depth(dlq_name, 5) == 5, "dead letters did not arrive (log %s)", log);

    /* 2. Auth and bad requests. */
    resp_t r = http("POST", "/replay", NULL, "{\"reason\":\"rejected\"}");
    SBT_CHECK_MSG(r.status == 401, "POST without token: %d", r.status);
    r = http("POST", "/replay", "wrong", "{\"reason\":\"rejected\"}");
    SBT_CHECK(r.status == 401);
    r = http("POST", "/replay", TOKEN, "{\"reason\":");
    SBT_CHECK_MSG(r.status == 400, "malformed body: %d %s", r.status, r.body);
    json_t *j = parse(&r);
    SBT_CHECK(json_is_string(json_object_get(j, "error")));
    json_decref(j);
    r = http("POST", "/replay", TOKEN, "{\"colour\":\"red\"}");
    SBT_CHECK_MSG(r.status == 400, "unknown member: %d %s", r.status, r.body);
    r = http("POST", "/replay", TOKEN, "{\"dry_run\":\"yes\"}");
    SBT_CHECK(r.status == 400);
    r = http("POST", "/replay", TOKEN, "[1,2]");
    SBT_CHECK(r.status == 400);
    r = http("GET", "/jobs/unknown", TOKEN, NULL);
    SBT_CHECK_MSG(r.status == 404, "unknown job: %d", r.status);
    r = http("GET", "/jobs/unknown", NULL, NULL);
    SBT_CHECK(r.status == 401);
    r = http("GET", "/replay", TOKEN, NULL);
    SBT_CHECK(r.status == 405);

    /* 3. Dry run: total 5, would move 5, moves nothing. */
    char *id = post_job("{\"reason\":\"rejected\",\"dry_run\":true}");
    j = wait_job(id);
    SBT_CHECK_MSG(!strcmp(json_string_value(json_object_get(j, "state")), "done"),
                  "dry run state %s", json_string_value(json_object_get(j, "state")));
    SBT_CHECK_MSG(jint(j, "total") == 5 && jint(j, "done") == 5 && jint(j, "failed") == 0 &&
                      jint(j, "refused") == 0,
                  "dry run job: %s", json_dumps(j, JSON_COMPACT));
    SBT_CHECK(json_is_string(json_object_get(j, "started_at")));
    SBT_CHECK(json_is_string(json_object_get(j, "finished_at")));
    SBT_CHECK(json_array_size(json_object_get(j, "errors")) == 0);
    json_decref(j);
    free(id);
    SBT_CHECK(sbt_amqp_depth(url, dlq_name) == 5);
    SBT_CHECK(sbt_count_lines(ledger) == 0);
    SBT_CHECK(sbt_stop(pid, SIGTERM, 15000) == 0);

    /* 4. Fixed handler. A slow replay cancelled after its first record: it stops, the
     * rest stays in the DLQ; DELETE again -> 409, unknown -> 404, no token -> 401. */
    pid = start_consumer(exchange, queue, ledger, true, &cfg_b, log);
    id = post_job("{\"reason\":\"rejected\",\"rate\":\"1/s\"}");
    char jpath[128];
    snprintf(jpath, sizeof jpath, "/jobs/%s", id);
    for (int i = 0; i < 100; i++) { /* the first record goes at once, the next after 1 s */
        r = http("GET", jpath, TOKEN, NULL);
        j = parse(&r);
        long done = jint(j, "done");
        json_decref(j);
        if (done >= 1)
            break;
        usleep(50000);
    }
    r = http("DELETE", jpath, NULL, NULL);
    SBT_CHECK_MSG(r.status == 401, "DELETE without token: %d", r.status);
    r = http("DELETE", jpath, TOKEN, NULL);
    SBT_CHECK_MSG(r.status == 202 && strstr(r.body, "cancelling"), "DELETE: %d %s", r.status,
                  r.body);
    j = wait_job(id);
    long first = jint(j, "done");
    SBT_CHECK_MSG(!strcmp(json_string_value(json_object_get(j, "state")), "cancelled") &&
                      first >= 1 && first < 5 && jint(j, "failed") == 0,
                  "cancelled job: %s", json_dumps(j, JSON_COMPACT));
    json_decref(j);
    r = http("DELETE", jpath, TOKEN, NULL);
    SBT_CHECK_MSG(r.status == 409, "DELETE of a cancelled job: %d %s", r.status, r.body);
    r = http("DELETE", "/jobs/unknown", TOKEN, NULL);
    SBT_CHECK(r.status == 404);
    free(id);
    SBT_CHECK_MSG(wait_depth(dlq_name, 5 - first) == 5 - first, "DLQ after the cancel: %ld",
                  sbt_amqp_depth(url, dlq_name));
    SBT_CHECK_MSG(sbt_wait_lines(ledger, (size_t)first, 10000), "replayed not handled (log %s)",
                  log);
    printf("cancelled after %ld of 5 replayed; %ld stay in the DLQ\n", first, 5 - first);

    /* The rest: a paced replay; a second POST while it runs gets 409. */
    id = post_job("{\"reason\":\"rejected\",\"rate\":\"4/s\"}");
    r = http("POST", "/replay", TOKEN, "{\"reason\":\"rejected\"}");
    SBT_CHECK_MSG(r.status == 409, "second POST while running: %d %s", r.status, r.body);
    j = wait_job(id);
    SBT_CHECK_MSG(!strcmp(json_string_value(json_object_get(j, "state")), "done") &&
                      jint(j, "done") == 5 - first && jint(j, "failed") == 0,
                  "replay job: %s", json_dumps(j, JSON_COMPACT));
    json_decref(j);
    free(id);
    SBT_CHECK_MSG(sbt_wait_lines(ledger, 5, 10000), "replayed events not handled (log %s)", log);
    SBT_CHECK(wait_depth(dlq_name, 0) == 0);
    usleep(300000);
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, mids, 5, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dups == 0 && unexpected == 0,
                  "ledger: missing %zu dups %zu unexpected %zu", missing, dups, unexpected);

    /* 5. The metric. */
    r = http("GET", "/metrics", NULL, NULL);
    SBT_CHECK(r.status == 200);
    SBT_CHECK_MSG(strstr(r.body, "switchboard_replay_messages_total{outcome=\"replayed\"} 5\n"),
                  "metrics:\n%s", r.body);
    SBT_CHECK(strstr(r.body, "switchboard_replay_messages_total{outcome=\"failed\"} 0\n"));
    SBT_CHECK(sbt_stop(pid, SIGTERM, 15000) == 0);

    sbt_amqp_close(c);
    const char *qs[] = {queue, dlq_name, NULL};
    const char *xs[] = {exchange, dlx, NULL};
    sbt_amqp_cleanup(url, qs, xs);
    const char *files[] = {ledger, log, cfg_a, cfg_b};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        unlink(files[i]);
    char *owned[] = {exchange, queue, ledger, log, cfg_a, cfg_b};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        free(owned[i]);
    printf("ok: admin replay jobs: auth, bad requests, dry run, cancel, replay, 409, 404, "
           "metric\n");
    return 0;
}
