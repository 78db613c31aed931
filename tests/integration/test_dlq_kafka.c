/* `switchboard dlq` on a real Kafka dead-letter topic, end to end:
 *  - a real consumer (handler `fail`, outcome reject) dead-letters 10 events to <topic>.dlq;
 *  - stats --json counts 10 rejected;
 *  - replay --dry-run moves nothing: the replay group's offset does not advance (stats still
 *    counts 10, since reading starts at that offset);
 *  - with the consumer restarted on a config whose handler succeeds, replay --limit 4
 *    replays 4 (record ledger) and stats counts 6; a second replay resumes there and
 *    replays the other 6 without re-sending the first 4: in the ledger every id appears
 *    exactly once, and stats counts 0.
 * The topics are deleted at the end. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "kafka_common.h"
#include "sbtest.h"

enum { N = 10 };

static const char *FAIL_REJECT = "  - name: broken\n    module: fail\n    bind: [\"#\"]\n"
                                 "    config: {outcome: reject, reason: \"broken\"}\n";

/* `switchboard dlq -c cfg args...` with stdout to out_path; the exit status. */
static int dlq(const char *cfg, const char *out_path, const char *const *args)
{
    fflush(stdout);
    pid_t pid = fork();
    SBT_CHECK(pid >= 0);
    if (pid == 0) {
        const char *argv[32];
        size_t n = 0;
        argv[n++] = SB_BIN;
        argv[n++] = "dlq";
        argv[n++] = "-c";
        argv[n++] = cfg;
        for (size_t i = 0; args[i] && n < 31; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        if (out_path && !freopen(out_path, "w", stdout))
            _exit(127);
        execv(SB_BIN, (char *const *)argv);
        _exit(127);
    }
    int st;
    SBT_CHECK(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* stats --json: how many dead letters of `reason` lie behind the replay group's offset. */
static long stats_count(const char *cfg, const char *out, const char *reason)
{
    int rc = dlq(cfg, out, (const char *[]){"stats", "--json", NULL});
    SBT_CHECK_MSG(rc == 0, "dlq stats exited %d", rc);
    json_error_t e;
    json_t *j = json_load_file(out, 0, &e);
    SBT_CHECK_MSG(j != NULL, "stats output: %s", e.text);
    long total = (long)json_integer_value(json_object_get(j, "total"));
    long r = (long)json_integer_value(json_object_get(json_object_get(j, "by_reason"), reason));
    json_decref(j);
    SBT_CHECK_MSG(total == r, "stats: total %ld, %s %ld", total, reason, r);
    return r;
}

static void delete_topics(const char *brokers, const char *const *names, size_t n)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk)
        return;
    rd_kafka_DeleteTopic_t *dt[8];
    for (size_t i = 0; i < n; i++)
        dt[i] = rd_kafka_DeleteTopic_new(names[i]);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopics(rk, dt, n, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_DeleteTopic_destroy_array(dt, n);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

int main(void)
{
    const char *brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    char *topic = sbt_unique_name("sbt-dlqk");
    char *group = sbt_unique_name("sbt-dlqk-g");
    char *ledger = sbt_unique_name("/tmp/sbt-dlqk-ledger");
    char *ledger2 = sbt_unique_name("/tmp/sbt-dlqk-ledger2");
    char *log = sbt_unique_name("/tmp/sbt-dlqk-log");
    char *out = sbt_unique_name("/tmp/sbt-dlqk-out");
    SBT_CHECK(sbt_kafka_create_topic(brokers, topic, 2, 30000) == 0);
    kt_events_t ev;
    kt_events_make(&ev, N, 3, NULL);
    char *cfg = kt_config(brokers, topic, group, ledger, NULL, FAIL_REJECT, NULL);
    char *cfg2 = kt_config(brokers, topic, group, ledger2, NULL, NULL, NULL);

    /* 1. Dead letters from a real consumer. */
    SBT_CHECK(sbt_kafka_produce(brokers, topic, -1, (const char *const *)ev.bodies,
                                (const char *const *)ev.keys, N, 30000) == 0);
    pid_t p = kt_run(cfg, log);
    bool ok = sbt_wait_lines(ledger, N, 60000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "%zu of %d events handled", sbt_count_lines(ledger), N);
    long n = 0;
    for (int i = 0; i < 60 && (n = stats_count(cfg, out, "rejected")) < N; i++)
        usleep(500 * 1000);
    if (n != N)
        kt_dump_log(log);
    SBT_CHECK_MSG(n == N, "stats: %ld rejected, want %d", n, N);
    SBT_CHECK(sbt_stop(p, SIGTERM, 30000) == 0);
    printf("ok: %d dead letters, stats counts them as rejected\n", N);

    /* 2. The handler is fixed; --dry-run moves nothing. */
    p = kt_run(cfg2, log);
    SBT_CHECK(dlq(cfg2, out, (const char *[]){"replay", "--dry-run", NULL}) == 0);
    SBT_CHECK_MSG(sbt_count_lines(out) == N, "dry run listed %zu", sbt_count_lines(out));
    SBT_CHECK(stats_count(cfg2, out, "rejected") == N);
    usleep(1000 * 1000);
    SBT_CHECK(sbt_count_lines(ledger2) == 0);
    printf("ok: replay --dry-run moved nothing\n");

    /* 3. Replay 4, then resume with the other 6. */
    SBT_CHECK(dlq(cfg2, out, (const char *[]){"replay", "--limit", "4", NULL}) == 0);
    ok = sbt_wait_lines(ledger2, 4, 30000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "replay --limit 4: %zu handled", sbt_count_lines(ledger2));
    SBT_CHECK(stats_count(cfg2, out, "rejected") == N - 4);
    SBT_CHECK(dlq(cfg2, out, (const char *[]){"replay", NULL}) == 0);
    ok = sbt_wait_lines(ledger2, N, 30000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "second replay: %zu of %d handled", sbt_count_lines(ledger2), N);
    usleep(1500 * 1000);
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger2, (const char *const *)ev.ids, N, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dups == 0 && unexpected == 0,
                  "ledger: %zu missing, %zu duplicated, %zu unexpected", missing, dups, unexpected);
    SBT_CHECK(stats_count(cfg2, out, "rejected") == 0);
    SBT_CHECK(sbt_stop(p, SIGTERM, 30000) == 0);
    printf("ok: replay --limit 4 then a resumed replay: each of %d ids exactly once\n", N);

    char *dlqt = malloc(strlen(topic) + 8), *retryt = malloc(strlen(topic) + 8);
    sprintf(dlqt, "%s.dlq", topic);
    sprintf(retryt, "%s.retry", topic);
    delete_topics(brokers, (const char *const[]){topic, dlqt, retryt}, 3);
    kt_events_free(&ev);
    unlink(ledger);
    unlink(ledger2);
    unlink(log);
    unlink(out);
    unlink(cfg);
    unlink(cfg2);
    free(dlqt);
    free(retryt);
    free(topic);
    free(group);
    free(ledger);
    free(ledger2);
    free(log);
    free(out);
    free(cfg);
    free(cfg2);
    return 0;
}
