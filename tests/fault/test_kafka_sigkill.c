/* Kafka transport, crash: a `switchboard run` child is SIGKILLed mid-stream (messages in
 * flight, offsets partly committed), then restarted: every id reaches the ledger (none
 * lost); ids handled again after the crash are at most what the last commit had not yet
 * covered, which the test reports. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kafka_common.h"
#include "sbtest.h"

#define N 3000

int main(void)
{
    const char *brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    char *topic = sbt_unique_name("sbt-kkill");
    char *group = sbt_unique_name("sbt-kkill-g");
    char *ledger = sbt_unique_name("/tmp/sbt-kkill-ledger");
    char *log = sbt_unique_name("/tmp/sbt-kkill-log");
    SBT_CHECK(sbt_kafka_create_topic(brokers, topic, 3, 30000) == 0);
    kt_events_t ev;
    kt_events_make(&ev, N, 40, "Async.PendingOk");
    SBT_CHECK(sbt_kafka_produce(brokers, topic, -1, (const char *const *)ev.bodies,
                                (const char *const *)ev.keys, N, 30000) == 0);
    /* Slow enough to be killed mid-stream (~3 ms per event, one at a time per partition,
     * ~1000 events/s); auto-commit every 200 ms so the crash lands between commits; a short
     * session timeout so the restarted member does not wait long for the dead one. */
    char handlers[256];
    snprintf(handlers, sizeof handlers,
             "  - name: slow\n    module: %s\n    config: {delay_ms: 3}\n", MOD_ASYNC);
    char *cfg = kt_config(brokers, topic, group, ledger,
                          "    properties: {auto.commit.interval.ms: \"200\", "
                          "session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\"}\n",
                          handlers, NULL);
    pid_t a = kt_run(cfg, log);
    bool ok = sbt_wait_lines(ledger, N / 3, 60000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "before the kill: %zu", sbt_count_lines(ledger));
    int st = sbt_stop(a, SIGKILL, 10000);
    SBT_CHECK(st == 128 + SIGKILL);
    size_t at_kill = sbt_count_lines(ledger);
    pid_t b = kt_run(cfg, log);
    ok = sbt_wait_lines(ledger, N, 60000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "after the restart: %zu lines", sbt_count_lines(ledger));
    size_t missing, dups, unexpected;
    /* Keep waiting until every id is there (duplicates also count as lines). */
    uint64_t deadline = sbt_now_ms() + 60000;
    do {
        sbt_ledger_check(ledger, (const char *const *)ev.ids, (size_t)ev.n, &missing, &dups,
                         &unexpected);
        if (!missing)
            break;
        usleep(100 * 1000);
    } while (sbt_now_ms() < deadline);
    SBT_CHECK(sbt_stop(b, SIGTERM, 30000) == 0);
    if (missing || unexpected)
        kt_dump_log(log);
    SBT_CHECK_MSG(!missing && !unexpected, "missing %zu, unexpected %zu", missing, unexpected);
    printf("ok: SIGKILL after %zu of %d: none lost; %zu handled again after the crash\n", at_kill,
           N, dups);
    SBT_CHECK_MSG(dups < at_kill, "nothing was committed before the crash");
    kt_events_free(&ev);
    kt_files_free(topic, group, ledger, log, cfg);
    return 0;
}
