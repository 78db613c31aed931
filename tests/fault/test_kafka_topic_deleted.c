/* The consumed topics are deleted while `switchboard run` consumes them, then SIGTERM: the
 * process must still exit, with status 0, within shutdown_timeout plus the close budget of
 * cmd_run.c (20 s). librdkafka 2.0.2 can hang in rd_kafka_destroy() for good in this
 * situation (its broker thread waits for partitions that no longer exist); without the
 * close watchdog the process would wait for an orchestrator's SIGKILL. Each of the 200
 * events is handled before the deletion (record ledger). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "sbtest.h"

#define N 200

int main(void)
{
    const char *brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    char *topic = sbt_unique_name("sbt-kdel");
    char *group = sbt_unique_name("sbt-kdel-g");
    char *ledger = sbt_unique_name("/tmp/sbt-kdel-ledger");
    char *log = sbt_unique_name("/tmp/sbt-kdel-log");
    char retry[256], dlq[256];
    snprintf(retry, sizeof retry, "%s.retry", topic);
    snprintf(dlq, sizeof dlq, "%s.dlq", topic);
    SBT_CHECK(sbt_kafka_create_topic(brokers, topic, 3, 30000) == 0);

    char **bodies = calloc(N, sizeof *bodies);
    SBT_CHECK(bodies != NULL);
    for (int i = 0; i < N; i++) {
        char b[256];
        snprintf(b, sizeof b,
                 "{\"Id\":\"%s-%04d\",\"EventType\":\"DataSyncCompletedEvent\","
                 "\"CreationDate\":\"2024-05-01T10:00:00Z\"}",
                 topic, i);
        SBT_CHECK((bodies[i] = strdup(b)) != NULL);
    }
    SBT_CHECK(sbt_kafka_produce(brokers, topic, -1, (const char *const *)bodies, NULL, N, 30000) ==
              0);

    char y[2048];
    snprintf(y, sizeof y,
             "service: {name: sbt-kdel, shutdown_timeout: 3s}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: kafka\n"
             "  kafka:\n"
             "    brokers: \"%s\"\n"
             "    group_id: %s\n"
             "    topics: [%s]\n"
             "handlers:\n"
             "  - name: rec\n"
             "    module: record\n"
             "    bind: [\"#\"]\n"
             "    config: {path: \"%s\"}\n"
             "idempotency: {store: none}\n"
             "admin: {listen: \"\"}\n",
             brokers, group, topic, ledger);
    char *cfg = sbt_write_temp(y, ".yaml");
    const char *args[] = {"run", "-c", cfg, NULL};
    pid_t p = sbt_spawn_switchboard(args, NULL, log);
    SBT_CHECK_MSG(sbt_wait_lines(ledger, N, 60000), "only %zu of %d handled",
                  sbt_count_lines(ledger), N);

    sbt_kafka_delete_topics(brokers, (const char *const[]){topic, retry, dlq}, 3);
    sleep(4); /* the consumer learns that its partitions are gone */

    uint64_t t0 = sbt_now_ms();
    int st = sbt_stop(p, SIGTERM, 3000 + 20000 + 15000);
    uint64_t took = sbt_now_ms() - t0;
    if (st != 0) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "tail -n 30 %s >&2", log);
        SBT_CHECK(system(cmd) >= 0);
    }
    SBT_CHECK_MSG(st == 0, "switchboard exited with %d after %llu ms (-1: still running)", st,
                  (unsigned long long)took);
    printf("ok: topics deleted under the consumer: SIGTERM exit 0 in %llu ms\n",
           (unsigned long long)took);

    for (int i = 0; i < N; i++)
        free(bodies[i]);
    free(bodies);
    unlink(ledger);
    unlink(log);
    unlink(cfg);
    free(cfg);
    free(ledger);
    free(log);
    free(group);
    free(topic);
    return 0;
}
