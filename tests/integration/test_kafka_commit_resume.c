/* Kafka transport, commits: a `switchboard run` child consumes a 3-partition topic into the
 * record ledger and is stopped (SIGTERM) mid-stream; more events are produced; a second
 * child resumes at the committed offsets. Each event takes ~3 ms (an asynchronous handler),
 * so the stop meets messages in flight. Every id is in the ledger exactly once: no gap,
 * and nothing processed twice (graceful shutdown settles what is in flight, then commits
 * synchronously). Then the same with concurrency: key.
 *
 * Then the hole: with concurrency: key, a message queued behind a slow one of its key while
 * later messages of another key are done already. SIGTERM drops the queued one (never handed
 * over); the stored offset must stop there, not jump over it with the done ones behind it,
 * so the next run handles it. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kafka_common.h"
#include "sbtest.h"

#define N1 1500
#define N2 500

static void scenario(const char *brokers, const char *concurrency)
{
    char *topic = sbt_unique_name("sbt-kcr");
    char *group = sbt_unique_name("sbt-kcr-g");
    char *ledger = sbt_unique_name("/tmp/sbt-kcr-ledger");
    char *log = sbt_unique_name("/tmp/sbt-kcr-log");
    SBT_CHECK(sbt_kafka_create_topic(brokers, topic, 3, 30000) == 0);
    kt_events_t ev;
    kt_events_make(&ev, N1 + N2, 50, "Async.PendingOk");
    SBT_CHECK(sbt_kafka_produce(brokers, topic, -1, (const char *const *)ev.bodies,
                                (const char *const *)ev.keys, N1, 30000) == 0);
    char extra[128];
    snprintf(extra, sizeof extra, "    concurrency: %s\n", concurrency);
    char handlers[256];
    snprintf(handlers, sizeof handlers,
             "  - name: slow\n    module: %s\n    config: {delay_ms: 3}\n", MOD_ASYNC);
    char *cfg = kt_config(brokers, topic, group, ledger, extra, handlers, NULL);

    pid_t a = kt_run(cfg, log);
    bool got = sbt_wait_lines(ledger, N1 / 10, 60000);
    if (!got)
        kt_dump_log(log);
    SBT_CHECK_MSG(got, "first run handled %zu of %d", sbt_count_lines(ledger), N1 / 10);
    int st = sbt_stop(a, SIGTERM, 30000);
    if (st != 0)
        kt_dump_log(log);
    SBT_CHECK_MSG(st == 0, "first run exit status %d", st);
    size_t first = sbt_count_lines(ledger);
    printf("%s: first run handled %zu of %d before SIGTERM\n", concurrency, first, N1);

    SBT_CHECK(sbt_kafka_produce(brokers, topic, -1, (const char *const *)ev.bodies + N1,
                                (const char *const *)ev.keys + N1, N2, 30000) == 0);
    pid_t b = kt_run(cfg, log);
    got = sbt_wait_lines(ledger, N1 + N2, 60000);
    if (!got)
        kt_dump_log(log);
    SBT_CHECK_MSG(got, "after restart: %zu of %d", sbt_count_lines(ledger), N1 + N2);
    usleep(500 * 1000); /* anything handled twice would show up now */
    st = sbt_stop(b, SIGTERM, 30000);
    SBT_CHECK_MSG(st == 0, "second run exit status %d", st);
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, (const char *const *)ev.ids, (size_t)ev.n, &missing, &dups,
                     &unexpected);
    if (missing || dups || unexpected)
        kt_dump_log(log);
    SBT_CHECK_MSG(!missing && !dups && !unexpected,
                  "%s: missing %zu, duplicates %zu, unexpected %zu", concurrency, missing, dups,
                  unexpected);
    SBT_CHECK(sbt_grep(log, "kafka: assigned") >= 2);
    printf("ok: %s: %d ids once each across a SIGTERM and a restart\n", concurrency, ev.n);
    kt_events_free(&ev);
    kt_files_free(topic, group, ledger, log, cfg);
}

static void hole(const char *brokers)
{
    enum { NB = 20 };
    char *topic = sbt_unique_name("sbt-kcr-hole");
    char *group = sbt_unique_name("sbt-kcr-hole-g");
    char *ledger = sbt_unique_name("/tmp/sbt-kcr-hole-ledger");
    char *log = sbt_unique_name("/tmp/sbt-kcr-hole-log");
    SBT_CHECK(sbt_kafka_create_topic(brokers, topic, 1, 30000) == 0);
    kt_events_t slow, fast;
    kt_events_make(&slow, 1, 1, "Async.PendingOk"); /* the record line, then 3 s */
    kt_events_make(&fast, NB + 1, 1, NULL);
    /* offset 0: key A, slow; 1: key A (queued behind 0); 2..: key B, done at once */
    const char *bodies[NB + 2], *keys[NB + 2];
    bodies[0] = slow.bodies[0];
    keys[0] = "A";
    for (int i = 0; i <= NB; i++) {
        bodies[1 + i] = fast.bodies[i];
        keys[1 + i] = i == 0 ? "A" : "B";
    }
    SBT_CHECK(sbt_kafka_produce(brokers, topic, 0, bodies, keys, NB + 2, 30000) == 0);
    char handlers[256];
    snprintf(handlers, sizeof handlers,
             "  - name: slow\n    module: %s\n    config: {delay_ms: 3000}\n", MOD_ASYNC);
    char *cfg = kt_config(brokers, topic, group, ledger, "    concurrency: key\n", handlers, NULL);
    pid_t a = kt_run(cfg, log);
    bool got = sbt_wait_lines(ledger, 1 + NB, 60000); /* offset 0's line and key B's */
    if (!got)
        kt_dump_log(log);
    SBT_CHECK_MSG(got, "first run: %zu lines", sbt_count_lines(ledger));
    int st = sbt_stop(a, SIGTERM, 30000);
    SBT_CHECK_MSG(st == 0, "first run exit status %d", st);
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, (const char *const *)fast.ids, 1, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 1, "offset 1 ran before the stop: the scenario did not happen");

    pid_t b = kt_run(cfg, log);
    bool handled = false;
    for (int i = 0; i < 300 && !handled; i++) {
        sbt_ledger_check(ledger, (const char *const *)fast.ids, 1, &missing, &dups, &unexpected);
        handled = missing == 0;
        if (!handled)
            usleep(100 * 1000);
    }
    st = sbt_stop(b, SIGTERM, 30000);
    if (!handled)
        kt_dump_log(log);
    SBT_CHECK_MSG(handled, "the message dropped at the stop was never handled: the offset "
                           "was committed past it");
    SBT_CHECK_MSG(st == 0, "second run exit status %d", st);
    printf("ok: key order: a queued message dropped at SIGTERM behind done ones is handled by "
           "the next run\n");
    kt_events_free(&slow);
    kt_events_free(&fast);
    kt_files_free(topic, group, ledger, log, cfg);
}

int main(void)
{
    const char *brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    scenario(brokers, "partition");
    scenario(brokers, "key");
    hole(brokers);
    return 0;
}
