/* `switchboard dlq` on a real Kafka dead-letter topic, end to end:
 *  - a real consumer (handler `fail`, outcome reject) dead-letters 10 events to <topic>.dlq;
 *  - stats --json counts 10 rejected;
 *  - replay --dry-run moves nothing: the replay group's offset does not advance (stats still
 *    counts 10, since reading starts at that offset);
 *  - with the consumer restarted on a config whose handler succeeds, replay --limit 4
 *    replays 4 (record ledger) and stats counts 6; a second replay resumes there and
 *    replays the other 6 without re-sending the first 4: in the ledger every id appears
 *    exactly once, and stats counts 0;
 *  - the done set's bound: on a topic of 4400 dead letters whose two types alternate in one
 *    partition, purge --type A must record each moved A in the replay group's offset
 *    metadata (4096 bytes): it stops before the first A it could not record, exits 1 and
 *    says why; every A it reported purged is gone and nothing else is; purge --type B then
 *    moves the offset over them and purge --type A finishes the rest;
 *  - reads apply the metadata, ignore it when it names another offset or is not ours, and
 *    refuse (exit 1, saying why) an unknown version or damaged ranges.
 * The topics and the replay group are deleted at the end. */
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

static const char *err_path; /* when set, dlq() writes stderr there */

/* `switchboard dlq -c cfg args...` with stdout to out_path; the exit status. */
static int dlq(const char *cfg, const char *out_path, const char *const *args)
{
    return sbt_run_cli((const char *const[]){"dlq", "-c", cfg, NULL}, args, out_path, err_path);
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

/* ---- the done set's bound ----------------------------------------------------------------- */

enum { NO = 4400 };

/* "N <word>" in the summary line of err_path ("12 purged"), or -1. */
static long summary_count(const char *word)
{
    return sbt_dlq_summary_count(err_path, word);
}

static void dump_err(void)
{
    FILE *f = fopen(err_path, "r");
    char line[2048];
    fprintf(stderr, "---- stderr of switchboard dlq\n");
    while (f && fgets(line, sizeof line, f))
        fputs(line, stderr);
    if (f)
        fclose(f);
}

/* stats --json --queue topic: the total, and the count of `type` in *of_type. */
static long stats_of(const char *cfg, const char *out, const char *topic, const char *type,
                     long *of_type)
{
    int rc = dlq(cfg, out, (const char *[]){"stats", "--json", "--queue", topic, NULL});
    if (rc != 0)
        dump_err();
    SBT_CHECK_MSG(rc == 0, "dlq stats exited %d", rc);
    json_t *j = json_load_file(out, 0, NULL);
    SBT_CHECK(j != NULL);
    long total = (long)json_integer_value(json_object_get(j, "total"));
    *of_type = (long)json_integer_value(json_object_get(json_object_get(j, "by_type"), type));
    json_decref(j);
    return total;
}

/* The replay group's committed offset on partition 0 of topic, and its metadata's size. */
static int64_t committed_of(const char *brokers, const char *group, const char *topic,
                            size_t *md_size)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    SBT_CHECK_MSG(rk != NULL, "consumer: %s", err);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0);
    SBT_CHECK(rd_kafka_committed(rk, l, 10000) == 0 && !l->elems[0].err);
    int64_t off = l->elems[0].offset;
    *md_size = l->elems[0].metadata_size;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return off;
}

static void check_metadata_bound(const char *brokers, const char *cfg, const char *out,
                                 const char *otopic, const char *replay_group)
{
    /* Offsets 0, 2, 4, ...: Overflow.A; 1, 3, 5, ...: Overflow.B. */
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    SBT_CHECK_MSG(rk != NULL, "producer: %s", err);
    for (int i = 0; i < NO; i++) {
        const char *type = i % 2 ? "Overflow.B" : "Overflow.A";
        char body[128];
        snprintf(body, sizeof body, "{\"Id\":\"ov-%d\",\"EventType\":\"%s\"}", i, type);
        rd_kafka_headers_t *hs = rd_kafka_headers_new(3);
        rd_kafka_header_add(hs, "event-type", -1, type, -1);
        rd_kafka_header_add(hs, "x-sb-reason", -1, "rejected", -1);
        rd_kafka_header_add(hs, "x-sb-failed-at", -1, "2026-03-01T12:00:00Z", -1);
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(otopic), RD_KAFKA_V_PARTITION(0),
            RD_KAFKA_V_VALUE(body, strlen(body)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(hs), RD_KAFKA_V_END);
        SBT_CHECK_MSG(e == 0, "produce: %s", rd_kafka_err2str(e));
    }
    SBT_CHECK(rd_kafka_flush(rk, 60000) == 0);
    rd_kafka_destroy(rk);
    long a = 0, total = stats_of(cfg, out, otopic, "Overflow.A", &a);
    SBT_CHECK_MSG(total == NO && a == NO / 2, "stats: %ld, %ld of type A", total, a);

    /* Every A moved past a kept B is one more range: the run stops when they fill the
     * metadata, BEFORE the A it could not record. */
    int rc =
        dlq(cfg, out, (const char *[]){"purge", "--queue", otopic, "--type", "Overflow.A", NULL});
    long purged = summary_count("purged");
    if (rc != 1 || !sbt_grep(err_path, "stopped before offset") ||
        !sbt_grep(err_path, "broader filter"))
        dump_err();
    SBT_CHECK_MSG(rc == 1, "purge --type A (too many to record) exited %d", rc);
    SBT_CHECK(sbt_grep(err_path, "stopped before offset") == 1);
    SBT_CHECK(sbt_grep(err_path, "Nothing was lost or sent twice") == 1);
    SBT_CHECK(sbt_grep(err_path, "broader filter") == 1);
    SBT_CHECK_MSG(purged > 1500 && purged < NO / 2, "purge --type A: %ld purged", purged);
    size_t md = 0;
    int64_t off = committed_of(brokers, replay_group, otopic, &md);
    SBT_CHECK_MSG(off == 1 && md > 3900 && md <= 4096, "committed %lld with %zu bytes of metadata",
                  (long long)off, md);
    /* What it reported purged is gone, nothing else is. */
    total = stats_of(cfg, out, otopic, "Overflow.A", &a);
    SBT_CHECK_MSG(total == NO - purged && a == NO / 2 - purged,
                  "after purging %ld: %ld left, %ld of type A", purged, total, a);
    /* A second run stops at once: the set is still full. */
    rc = dlq(cfg, out, (const char *[]){"purge", "--queue", otopic, "--type", "Overflow.A", NULL});
    SBT_CHECK_MSG(rc == 1 && summary_count("purged") == 0, "second purge --type A: %d, %ld purged",
                  rc, summary_count("purged"));
    printf(
        "ok: purge --type A stopped after %ld (metadata %zu bytes): exit 1, nothing else moved\n",
        purged, md);

    /* Moving the Bs advances the offset over the recorded As and frees the set. */
    rc = dlq(cfg, out, (const char *[]){"purge", "--queue", otopic, "--type", "Overflow.B", NULL});
    if (rc != 0)
        dump_err();
    SBT_CHECK_MSG(rc == 0 && summary_count("purged") == NO / 2, "purge --type B: %d, %ld purged",
                  rc, summary_count("purged"));
    total = stats_of(cfg, out, otopic, "Overflow.A", &a);
    SBT_CHECK_MSG(total == NO / 2 - purged && a == total, "after purging B: %ld left, %ld A", total,
                  a);
    rc = dlq(cfg, out, (const char *[]){"purge", "--queue", otopic, "--type", "Overflow.A", NULL});
    if (rc != 0)
        dump_err();
    SBT_CHECK_MSG(rc == 0 && summary_count("purged") == NO / 2 - purged,
                  "last purge --type A: %d, %ld purged", rc, summary_count("purged"));
    total = stats_of(cfg, out, otopic, "Overflow.A", &a);
    SBT_CHECK(total == 0);
    off = committed_of(brokers, replay_group, otopic, &md);
    SBT_CHECK_MSG(off == NO && md == 0, "committed %lld with %zu bytes of metadata", (long long)off,
                  md);
    printf("ok: purge --type B, then --type A: 0 left, offset %d, no metadata\n", NO);
}

/* Commits offset with metadata md for the replay group on partition 0 of topic. */
static void commit_with(const char *brokers, const char *group, const char *topic, int64_t offset,
                        const char *md)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof err);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    SBT_CHECK_MSG(rk != NULL, "consumer: %s", err);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_t *e = rd_kafka_topic_partition_list_add(l, topic, 0);
    e->offset = offset;
    if (md) {
        e->metadata = strdup(md);
        e->metadata_size = strlen(md);
    }
    rd_kafka_resp_err_t rc = rd_kafka_commit(rk, l, 0);
    SBT_CHECK_MSG(rc == 0 && !l->elems[0].err, "commit: %s", rd_kafka_err2str(rc));
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
}

/* How reads treat the replay group's metadata (on the emptied overflow topic of NO records):
 * ours is applied; ours for another offset (a reset group) and foreign text are ignored; an
 * unknown version or damaged ranges make every verb refuse, naming the problem. */
static void check_metadata_read(const char *brokers, const char *cfg, const char *out,
                                const char *otopic, const char *group)
{
    long a = 0;
    /* 4398 is "3e6" in base 36: the set {4399} leaves only 4398. */
    commit_with(brokers, group, otopic, NO - 2, "sbdlq1:3e6:1");
    SBT_CHECK(stats_of(cfg, out, otopic, "Overflow.A", &a) == 1 && a == 1);
    commit_with(brokers, group, otopic, NO - 2, "sbdlq1:3e5:1"); /* for offset 4397 */
    SBT_CHECK(stats_of(cfg, out, otopic, "Overflow.A", &a) == 2);
    commit_with(brokers, group, otopic, NO - 2, "written by another tool");
    SBT_CHECK(stats_of(cfg, out, otopic, "Overflow.A", &a) == 2);
    static const struct {
        const char *md, *says;
    } bad[] = {
        {"sbdlq2:3e6:1", "has a format this switchboard does not know"},
        {"sbdlq1:3e6:1,,2", "is damaged"},
        {"sbdlq1:3e6:0", "is damaged"},
        {"sbdlq1:3e6:1+", "is damaged"},
        {"sbdlq1:3e6:zzzzzzzzzzzzzzzz", "is damaged"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        commit_with(brokers, group, otopic, NO - 2, bad[i].md);
        int rc = dlq(cfg, out, (const char *[]){"list", "--queue", otopic, NULL});
        if (rc != 1 || sbt_grep(err_path, bad[i].says) != 1)
            dump_err();
        SBT_CHECK_MSG(rc == 1 && sbt_grep(err_path, bad[i].says) == 1, "metadata \"%s\": list %d",
                      bad[i].md, rc);
        rc = dlq(cfg, out, (const char *[]){"purge", "--queue", otopic, "--all", NULL});
        SBT_CHECK_MSG(rc == 1, "metadata \"%s\": purge %d", bad[i].md, rc);
    }
    commit_with(brokers, group, otopic, NO, NULL);
    printf("ok: the replay group's metadata: applied, ignored when another offset's or "
           "foreign, refused when unknown or damaged\n");
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

    /* Reading the retained log: --from-beginning sees all N again (already replayed),
     * --offset 3 sees what lies at offset >= 3 in each of the 2 partitions, a replay
     * refuses both (exit 64), and the replay group's progress is untouched. */
    SBT_CHECK(dlq(cfg2, out, (const char *const[]){"list", "--json", "--from-beginning", NULL}) ==
              0);
    SBT_CHECK_MSG(sbt_count_lines(out) == N, "--from-beginning listed %zu", sbt_count_lines(out));
    SBT_CHECK(dlq(cfg2, out, (const char *const[]){"list", "--json", "--offset", "3", NULL}) == 0);
    size_t from3 = sbt_count_lines(out);
    SBT_CHECK_MSG(from3 < N && from3 >= N - 6, "--offset 3 listed %zu of %d", from3, N);
    SBT_CHECK(dlq(cfg2, out, (const char *const[]){"replay", "--from-beginning", NULL}) == 64);
    SBT_CHECK(dlq(cfg2, out, (const char *const[]){"list", "--offset", "x", NULL}) == 64);
    SBT_CHECK(stats_count(cfg2, out, "rejected") == 0);
    printf("ok: --from-beginning lists all %d, --offset 3 lists %zu; replay refuses them\n", N,
           from3);

    /* 4. The done set's bound (its own one-partition DLQ topic). */
    char *otopic = sbt_unique_name("sbt-dlqk-ov");
    char *errf = sbt_unique_name("/tmp/sbt-dlqk-err");
    char *replay_group = malloc(strlen(group) + 16);
    sprintf(replay_group, "%s.dlq-replay", group);
    err_path = errf;
    SBT_CHECK(sbt_kafka_create_topic(brokers, otopic, 1, 30000) == 0);
    check_metadata_bound(brokers, cfg2, out, otopic, replay_group);
    check_metadata_read(brokers, cfg2, out, otopic, replay_group);

    char *dlqt = malloc(strlen(topic) + 8), *retryt = malloc(strlen(topic) + 8);
    sprintf(dlqt, "%s.dlq", topic);
    sprintf(retryt, "%s.retry", topic);
    sbt_kafka_delete_topics(brokers, (const char *const[]){topic, dlqt, retryt, otopic}, 4);
    sbt_kafka_delete_groups(brokers, (const char *const[]){group, replay_group}, 2);
    unlink(errf);
    free(errf);
    free(otopic);
    free(replay_group);
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
