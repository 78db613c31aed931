/* Seed compatibility: messages published exactly as the .NET EventBus does (topic exchange,
 * one durable queue per event type named after it and bound with routing key = type,
 * persistent JSON with message_id and timestamp) are consumed unchanged by `switchboard run`
 * from those per-event queues (transport.amqp.queues, declare: false: passive checks only),
 * recorded once each by the `record` handler, and acked (the queues end empty). The
 * exchange and type names are made unique so that runs never share broker state. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

#define PER_TYPE 50

int main(void)
{
    const char *url = sbt_service("SB_TEST_AMQP_URL", "RabbitMQ");
    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK_MSG(c != NULL, "cannot connect to RabbitMQ at %s", url);

    char *exchange = sbt_unique_name("sbt.seed.x");
    char *own = sbt_unique_name("sbt.seed.own");
    char *tag = sbt_unique_name("");
    char types[2][128];
    snprintf(types[0], sizeof types[0], "DataSyncCompletedEvent%s", tag);
    snprintf(types[1], sizeof types[1], "ETLJobStartedEvent%s", tag);

    /* The EventBus's own declarations. */
    SBT_CHECK(sbt_amqp_declare_topic_exchange(c, exchange) == 0);
    for (int t = 0; t < 2; t++)
        SBT_CHECK(sbt_amqp_declare_queue(c, types[t], exchange, types[t]) == 0);

    /* Half before switchboard starts, half while it runs. */
    enum { N = 2 * PER_TYPE };
    char *ids[N], *bodies[N];
    const char *rks[N];
    for (int i = 0; i < N; i++) {
        int t = i % 2;
        char id[64], body[512];
        snprintf(id, sizeof id, "6f1c2b7e-0000-4000-8000-%012d", i);
        if (t == 0)
            snprintf(body, sizeof body,
                     "{\"JobId\":\"job-%d\",\"SourceSystem\":\"crm\",\"TargetSystem\":\"erp\","
                     "\"RecordsProcessed\":%d,\"CompletedAt\":\"2026-12-01T10:00:00.1234567Z\","
                     "\"Id\":\"%s\",\"CreationDate\":\"2026-12-01T10:00:00.1234567Z\"}",
                     i, i * 10, id);
        else
            snprintf(body, sizeof body,
                     "{\"JobId\":\"job-%d\",\"JobName\":\"nightly\",\"Id\":\"%s\","
                     "\"CreationDate\":\"2026-12-01T10:00:00.1234567Z\"}",
                     i, id);
        ids[i] = strdup(id);
        bodies[i] = strdup(body);
        rks[i] = types[t];
    }
    /* message_id is a fresh GUID in the EventBus, unrelated to the body's Id. */
    char *mids[N];
    for (int i = 0; i < N; i++) {
        char m[64];
        snprintf(m, sizeof m, "aaaaaaaa-0000-4000-8000-%012d", i);
        mids[i] = strdup(m);
    }
    SBT_CHECK(sbt_amqp_publish_many(c, exchange, rks, false, (const char *const *)bodies,
                                    (const char *const *)mids, N / 2, NULL, NULL) == 0);

    char ledger[] = "/tmp/sbt-seed-ledger-XXXXXX";
    int lfd = mkstemp(ledger);
    SBT_CHECK(lfd >= 0);
    close(lfd);
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "service: {name: seed-compat}\n"
             "admin: {listen: \"\"}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: amqp\n"
             "  amqp:\n"
             "    url: \"%s\"\n"
             "    exchange: %s\n"
             "    queue: %s\n"
             "    queues: [%s, %s]\n"
             "    declare: false\n"
             "    prefetch: 16\n"
             "idempotency: {store: none}\n"
             "handlers:\n"
             "  - name: rec\n"
             "    module: record\n"
             "    bind: [\"#\"]\n"
             "    config: {path: %s}\n",
             url, exchange, own, types[0], types[1], ledger);
    char *cfg = sbt_write_temp(yaml, ".yaml");
    char *log = sbt_write_temp("", ".log");
    const char *args[] = {"run", "-c", cfg, NULL};
    pid_t pid = sbt_spawn_switchboard(args, NULL, log);

    SBT_CHECK(sbt_amqp_publish_many(c, exchange, rks + N / 2, false,
                                    (const char *const *)bodies + N / 2,
                                    (const char *const *)mids + N / 2, N / 2, NULL, NULL) == 0);
    SBT_CHECK_MSG(sbt_wait_lines(ledger, N, 20000), "only %zu of %d events recorded (log: %s)",
                  sbt_count_lines(ledger), N, log);
    int st = sbt_stop(pid, SIGTERM, 15000);
    SBT_CHECK_MSG(st == 0, "switchboard exited with %d (log: %s)", st, log);

    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, (const char *const *)ids, N, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dups == 0 && unexpected == 0,
                  "missing %zu, duplicated %zu, unexpected %zu", missing, dups, unexpected);
    for (int t = 0; t < 2; t++)
        SBT_CHECK_MSG(sbt_amqp_depth(url, types[t]) == 0, "queue %s not empty", types[t]);
    char dlq[256];
    snprintf(dlq, sizeof dlq, "%s.dlq", own);
    SBT_CHECK(sbt_amqp_depth(url, dlq) == 0);

    sbt_amqp_close(c);
    char dlx[256];
    snprintf(dlx, sizeof dlx, "%s.dlx", exchange);
    const char *qs[] = {types[0], types[1], dlq, NULL};
    const char *xs[] = {exchange, dlx, NULL};
    sbt_amqp_cleanup(url, qs, xs);
    unlink(ledger);
    unlink(cfg);
    unlink(log);
    for (int i = 0; i < N; i++) {
        free(ids[i]);
        free(bodies[i]);
        free(mids[i]);
    }
    free(exchange);
    free(own);
    free(tag);
    free(cfg);
    free(log);
    printf("ok: %d EventBus-style events consumed from per-event queues\n", N);
    return 0;
}
