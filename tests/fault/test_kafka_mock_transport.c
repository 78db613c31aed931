/* Kafka transport under faults injected with librdkafka's mock cluster (in this process;
 * the `switchboard run` child connects to it): every event fails its first attempt, so every
 * event goes through the retry topic (produce requests); Produce and OffsetCommit requests
 * fail transiently (request errors pushed on the mock); the broker goes down for 2 s
 * mid-stream and comes back. Every event must succeed at attempt 2 (none lost, the retry
 * copy carried x-sb-attempts), no event may need more than a few attempts (bounded
 * retries), the child must exit 0 on SIGTERM, and the log must say what happened. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "kafka_common.h"
#include "sbtest.h"

#define N                 200
#define API_PRODUCE       0
#define API_OFFSET_COMMIT 8

/* How many ids reached attempt 2; *max_attempt gets the largest attempt seen. */
static int count_done(const char *ledger, const kt_events_t *ev, unsigned *max_attempt)
{
    static char done[N];
    memset(done, 0, sizeof done);
    *max_attempt = 0;
    FILE *f = fopen(ledger, "r");
    if (!f)
        return 0;
    char buf[2048];
    while (fgets(buf, sizeof buf, f)) {
        json_t *j = json_loads(buf, 0, NULL);
        if (!j)
            continue;
        const char *id = json_string_value(json_object_get(j, "id"));
        unsigned a = (unsigned)json_integer_value(json_object_get(j, "attempt"));
        if (a > *max_attempt)
            *max_attempt = a;
        for (int i = 0; id && i < ev->n; i++)
            if (a == 2 && !strcmp(id, ev->ids[i]))
                done[i] = 1;
        json_decref(j);
    }
    fclose(f);
    int n = 0;
    for (int i = 0; i < ev->n; i++)
        n += done[i];
    return n;
}

int main(void)
{
    char err[512];
    rd_kafka_conf_t *hc = rd_kafka_conf_new();
    rd_kafka_conf_set(hc, "log_level", "0", err, sizeof err);
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, hc, err, sizeof err);
    SBT_CHECK(host != NULL);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(host, 1);
    SBT_CHECK(mc != NULL);
    const char *brokers = rd_kafka_mock_cluster_bootstraps(mc);
    char *topic = sbt_unique_name("sbt-kmock");
    char *group = sbt_unique_name("sbt-kmock-g");
    char *ledger = sbt_unique_name("/tmp/sbt-kmock-ledger");
    char *log = sbt_unique_name("/tmp/sbt-kmock-log");
    char side[256];
    SBT_CHECK(rd_kafka_mock_topic_create(mc, topic, 2, 1) == 0);
    snprintf(side, sizeof side, "%s.retry", topic);
    SBT_CHECK(rd_kafka_mock_topic_create(mc, side, 2, 1) == 0);
    snprintf(side, sizeof side, "%s.dlq", topic);
    SBT_CHECK(rd_kafka_mock_topic_create(mc, side, 2, 1) == 0);

    kt_events_t ev;
    kt_events_make(&ev, N, 20, NULL);
    SBT_CHECK(sbt_kafka_produce(brokers, topic, -1, (const char *const *)ev.bodies,
                                (const char *const *)ev.keys, N, 30000) == 0);
    char *cfg =
        kt_config(brokers, topic, group, ledger,
                  "    create_topics: false\n"
                  "    properties: {session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\", "
                  "auto.commit.interval.ms: \"200\", reconnect.backoff.max.ms: \"500\"}\n",
                  "  - name: flaky\n    module: fail\n    bind: [\"#\"]\n    config: {times: 1}\n",
                  "retry: {policy: fixed, base_delay: 50ms, max_attempts: 10, jitter: false}\n");

    /* Transient request errors, consumed by the child's first requests of each kind. */
    rd_kafka_mock_push_request_errors(
        mc, API_PRODUCE, 3, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
    rd_kafka_mock_push_request_errors(
        mc, API_OFFSET_COMMIT, 3, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE);
    pid_t p = kt_run(cfg, log);
    bool ok = sbt_wait_lines(ledger, N / 2, 60000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "before the outage: %zu ledger lines", sbt_count_lines(ledger));

    SBT_CHECK(rd_kafka_mock_broker_set_down(mc, 1) == 0);
    usleep(2000 * 1000);
    size_t during = sbt_count_lines(ledger);
    SBT_CHECK(rd_kafka_mock_broker_set_up(mc, 1) == 0);

    unsigned max_attempt = 0;
    int done = 0;
    uint64_t deadline = sbt_now_ms() + 90000;
    while ((done = count_done(ledger, &ev, &max_attempt)) < N && sbt_now_ms() < deadline)
        usleep(200 * 1000);
    if (done < N)
        kt_dump_log(log);
    SBT_CHECK_MSG(done == N, "%d of %d events succeeded at attempt 2", done, N);
    SBT_CHECK_MSG(max_attempt <= 3, "an event needed %u attempts", max_attempt);
    int st = sbt_stop(p, SIGTERM, 30000);
    if (st != 0)
        kt_dump_log(log);
    SBT_CHECK_MSG(st == 0, "exit status %d", st);
    size_t warnings = sbt_grep(log, "WARN  kafka") + sbt_grep(log, "ERROR kafka");
    if (!warnings)
        kt_dump_log(log);
    SBT_CHECK_MSG(warnings > 0, "the outage left no kafka warning in the log");
    printf("ok: mock faults: %d events all succeeded at attempt 2 (max attempt %u); %zu ledger "
           "lines at the outage; %zu kafka warnings logged\n",
           N, max_attempt, during, warnings);
    kt_events_free(&ev);
    kt_files_free(topic, group, ledger, log, cfg);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
    return 0;
}
