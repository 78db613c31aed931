/* test_amqp_volume_common.h: the shared body of the AMQP fault tests (broker restart,
 * consumer SIGKILL): publish N events, run `switchboard run` with the record handler,
 * disturb something mid-stream (the caller's `disturb`), and require every id recorded at
 * least once and the queue empty at the end. Included by exactly one .c per test. */
#ifndef TEST_AMQP_VOLUME_COMMON_H
#define TEST_AMQP_VOLUME_COMMON_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

typedef struct volume_run {
    const char *url;
    char *exchange, *queue, *ledger, *cfg, *log;
    pid_t pid;
    size_t n;
    char **ids;
} volume_run_t;

static pid_t volume_spawn(volume_run_t *r)
{
    const char *args[] = {"run", "-c", r->cfg, NULL};
    return r->pid = sbt_spawn_switchboard(args, NULL, r->log);
}

/* record_opts: extra keys of the record handler's config (e.g. ", fsync: true" to slow the
 * consumer down so that the disturbance lands mid-stream), "" for none. */
static void volume_setup(volume_run_t *r, size_t n, const char *tag, const char *record_opts)
{
    r->url = sbt_service("SB_TEST_AMQP_URL", "RabbitMQ");
    r->n = n;
    char p[64];
    snprintf(p, sizeof p, "sbt.%s.x", tag);
    r->exchange = sbt_unique_name(p);
    snprintf(p, sizeof p, "sbt.%s.q", tag);
    r->queue = sbt_unique_name(p);
    r->ledger = sbt_write_temp("", ".jsonl");
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "service: {name: %s, shutdown_timeout: 10s}\n"
             "admin: {listen: \"\"}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: amqp\n"
             "  amqp: {url: \"%s\", exchange: %s, queue: %s, prefetch: 256, heartbeat: 5s}\n"
             "idempotency: {store: none}\n"
             "handlers:\n"
             "  - {name: rec, module: record, bind: [\"DataSync.#\"], config: {path: %s%s}}\n",
             tag, r->url, r->exchange, r->queue, r->ledger, record_opts);
    r->cfg = sbt_write_temp(yaml, ".yaml");
    r->log = sbt_write_temp("", ".log");

    /* The queue and its binding exist before anything is published. */
    amqp_connection_state_t c = sbt_amqp_connect(r->url);
    SBT_CHECK(c != NULL);
    SBT_CHECK(sbt_amqp_declare_topic_exchange(c, r->exchange) == 0);
    SBT_CHECK(sbt_amqp_declare_queue(c, r->queue, r->exchange, "DataSync.#") == 0);
    r->ids = calloc(n, sizeof *r->ids);
    char **bodies = calloc(n, sizeof *bodies);
    SBT_CHECK(r->ids && bodies);
    for (size_t i = 0; i < n; i++) {
        char id[64], b[512];
        snprintf(id, sizeof id, "%s-%06zu", tag, i);
        /* 314 bytes, like the benchmark's DataSyncCompletedEvent */
        snprintf(b, sizeof b,
                 "{\"JobId\":\"job-%06zu\",\"SourceSystem\":\"crm\",\"TargetSystem\":\"erp\","
                 "\"RecordsProcessed\":%zu,\"CompletedAt\":\"2026-12-01T10:00:00.1234567Z\","
                 "\"Id\":\"%s\",\"CreationDate\":\"2026-12-01T10:00:00.1234567Z\"}",
                 i, i, id);
        r->ids[i] = strdup(id);
        bodies[i] = strdup(b);
    }
    const char *rk[] = {"DataSync.Completed"};
    SBT_CHECK(sbt_amqp_publish_many(c, r->exchange, rk, true, (const char *const *)bodies, NULL, n,
                                    NULL, NULL) == 0);
    for (size_t i = 0; i < n; i++)
        free(bodies[i]);
    free(bodies);
    sbt_amqp_close(c);
}

/* Waits for every id, stops switchboard, checks the queue, cleans up. */
static void volume_finish(volume_run_t *r, int timeout_ms)
{
    size_t missing = r->n, dups = 0, unexpected = 0;
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    while (sbt_now_ms() < deadline) {
        if (sbt_count_lines(r->ledger) >= r->n) {
            sbt_ledger_check(r->ledger, (const char *const *)r->ids, r->n, &missing, &dups,
                             &unexpected);
            if (missing == 0)
                break;
        }
        usleep(200000);
    }
    SBT_CHECK_MSG(missing == 0, "%zu of %zu events never recorded (log: %s)", missing, r->n,
                  r->log);
    int st = sbt_stop(r->pid, SIGTERM, 15000);
    SBT_CHECK_MSG(st == 0, "switchboard exited with %d (log: %s)", st, r->log);
    long depth = sbt_amqp_depth(r->url, r->queue);
    SBT_CHECK_MSG(depth == 0, "queue %s holds %ld messages at the end", r->queue, depth);
    printf("all %zu events recorded (%zu recorded more than once), queue empty\n", r->n, dups);
    char dlq[256], dlx[256];
    snprintf(dlq, sizeof dlq, "%s.dlq", r->queue);
    snprintf(dlx, sizeof dlx, "%s.dlx", r->exchange);
    const char *qs[] = {r->queue, dlq, NULL};
    const char *xs[] = {r->exchange, dlx, NULL};
    sbt_amqp_cleanup(r->url, qs, xs);
    unlink(r->ledger);
    unlink(r->cfg);
    unlink(r->log);
    for (size_t i = 0; i < r->n; i++)
        free(r->ids[i]);
    free(r->ids);
    free(r->exchange);
    free(r->queue);
    free(r->ledger);
    free(r->cfg);
    free(r->log);
}

#endif
