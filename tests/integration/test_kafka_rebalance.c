/* Kafka transport, rebalances: two `switchboard run` members share a 6-partition topic, a
 * third joins, then one leaves (SIGTERM), while every message takes a few milliseconds
 * (an asynchronous handler), so revokes meet messages in flight. Idempotency is off
 * (store: none): only the commit logic keeps ids from being handled twice. Every id must be
 * in the record ledger exactly once. Run with cooperative-sticky and with eager (range)
 * assignment; then both again with the Redis store (SB_TEST_REDIS_URL), where partition
 * order hands messages over ahead of their turn (claim-ahead), so revokes also meet
 * messages claimed and waiting for their turn. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "kafka_common.h"
#include "sbtest.h"

#define N 3000

/* Deletes the keys this run wrote (prefix "<group>:") from the shared Redis. */
static void drop_keys(const char *redis_url, const char *group)
{
    char host[128] = "127.0.0.1";
    int port = 6379;
    sscanf(redis_url, "redis://%127[^:/]:%d", host, &port);
    redisContext *c = redisConnect(host, port);
    SBT_CHECK(c && !c->err);
    unsigned long long cursor = 0;
    do {
        redisReply *r = redisCommand(c, "SCAN %llu MATCH %s:* COUNT 1000", cursor, group);
        SBT_CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        cursor = strtoull(r->element[0]->str, NULL, 10);
        for (size_t i = 0; i < r->element[1]->elements; i++)
            freeReplyObject(redisCommand(c, "DEL %s", r->element[1]->element[i]->str));
        freeReplyObject(r);
    } while (cursor != 0);
    redisFree(c);
}

static void scenario(const char *brokers, const char *strategy, const char *redis_url)
{
    char *topic = sbt_unique_name("sbt-kreb");
    char *group = sbt_unique_name("sbt-kreb-g");
    char *ledger = sbt_unique_name("/tmp/sbt-kreb-ledger");
    char *log = sbt_unique_name("/tmp/sbt-kreb-log");
    SBT_CHECK(sbt_kafka_create_topic(brokers, topic, 6, 30000) == 0);
    kt_events_t ev;
    kt_events_make(&ev, N, 100, "Async.PendingOk");
    SBT_CHECK(sbt_kafka_produce(brokers, topic, -1, (const char *const *)ev.bodies,
                                (const char *const *)ev.keys, N / 2, 30000) == 0);
    char extra[512], handlers[512];
    snprintf(extra, sizeof extra,
             "    properties:\n"
             "      partition.assignment.strategy: %s\n"
             "      session.timeout.ms: \"10000\"\n"
             "      heartbeat.interval.ms: \"500\"\n",
             strategy);
    snprintf(handlers, sizeof handlers,
             "  - name: slow\n    module: %s\n    config: {delay_ms: 4}\n", MOD_ASYNC);
    char idem[512] = "";
    if (redis_url)
        snprintf(idem, sizeof idem,
                 "idempotency: {store: redis, redis: {url: \"%s\", prefix: \"%s:\"}}\n", redis_url,
                 group);
    char *cfg = kt_config(brokers, topic, group, ledger, extra, handlers, redis_url ? idem : NULL);

    pid_t a = kt_run(cfg, log), b = kt_run(cfg, log);
    bool ok = sbt_wait_lines(ledger, 300, 60000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "%s: two members handled %zu", strategy, sbt_count_lines(ledger));
    size_t moves = sbt_grep(log, "kafka: assigned") + sbt_grep(log, "kafka: revoking");
    pid_t c = kt_run(cfg, log);
    ok = sbt_wait_lines(ledger, 900, 60000);
    SBT_CHECK_MSG(ok, "%s: after the join, %zu", strategy, sbt_count_lines(ledger));
    /* The leave comes once the join's rebalance is over (no assignment change for 1.5 s):
     * a member that leaves in the middle of another member's cooperative join can find its
     * generation gone, its final commit refused and its partitions lost, and the next
     * owner handles again what it had handled since its last commit (at-least-once;
     * idempotency skips those). That case is not what this test is about. */
    uint64_t quiet_since = sbt_now_ms(), give_up = sbt_now_ms() + 30000;
    while (sbt_now_ms() - quiet_since < 1500 && sbt_now_ms() < give_up) {
        size_t now = sbt_grep(log, "kafka: assigned") + sbt_grep(log, "kafka: revoking");
        if (now != moves) {
            moves = now;
            quiet_since = sbt_now_ms();
        }
        usleep(100 * 1000);
    }
    size_t before_leave = sbt_count_lines(ledger);
    int st = sbt_stop(a, SIGTERM, 30000);
    if (st != 0)
        kt_dump_log(log);
    SBT_CHECK_MSG(st == 0, "%s: leaving member exit status %d", strategy, st);
    SBT_CHECK(sbt_kafka_produce(brokers, topic, -1, (const char *const *)ev.bodies + N / 2,
                                (const char *const *)ev.keys + N / 2, N - N / 2, 30000) == 0);
    ok = sbt_wait_lines(ledger, N, 90000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "%s: in the end %zu of %d", strategy, sbt_count_lines(ledger), N);
    usleep(500 * 1000);
    SBT_CHECK(sbt_stop(b, SIGTERM, 30000) == 0);
    SBT_CHECK(sbt_stop(c, SIGTERM, 30000) == 0);
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, (const char *const *)ev.ids, (size_t)ev.n, &missing, &dups,
                     &unexpected);
    if (missing || dups || unexpected)
        kt_dump_log(log);
    SBT_CHECK_MSG(!missing && !dups && !unexpected,
                  "%s: missing %zu, duplicates %zu, unexpected %zu", strategy, missing, dups,
                  unexpected);
    size_t revokes = sbt_grep(log, "kafka: revoking");
    SBT_CHECK_MSG(revokes >= 2, "%s: only %zu revokes logged", strategy, revokes);
    printf("ok: %s%s: %d ids once each; join at %zu, leave at %zu handled; %zu revokes, "
           "%zu waited for in-flight messages\n",
           strategy, redis_url ? " with Redis (claim-ahead)" : "", N, (size_t)300, before_leave,
           revokes, sbt_grep(log, "waiting for their in-flight"));
    if (redis_url)
        drop_keys(redis_url, group);
    kt_events_free(&ev);
    kt_files_free(topic, group, ledger, log, cfg);
}

int main(void)
{
    const char *brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    scenario(brokers, "cooperative-sticky", NULL);
    scenario(brokers, "range", NULL);
    const char *redis_url = sbt_service("SB_TEST_REDIS_URL", "Redis");
    scenario(brokers, "cooperative-sticky", redis_url);
    scenario(brokers, "range", redis_url);
    return 0;
}
