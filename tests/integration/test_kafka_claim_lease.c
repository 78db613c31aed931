/* Claim-ahead keeps its claims alive while they wait for their turn. 40 events in ONE
 * partition, the record handler (claimed ahead: it runs first) then a handler that takes
 * 250 ms each (asynchronous); both with timeout 1 s, so the effective lease is timeout + 5 s
 * = 6 s with idempotency.redis.lease 1s: all 40 are claimed at once and the last waits
 * ~10 s for its turn, longer than its lease. The dispatcher renews
 * waiting claims every third of their lease and verifies ownership at the turn, so every
 * event runs once, in order, at its first attempt: no "claim expired while waiting" and no
 * retry copy. On the real Kafka broker and Redis; keys, topics and files are removed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "kafka_common.h"
#include "sbtest.h"

#define N 40

static size_t count_keys(redisContext *rc, const char *pattern, bool del)
{
    size_t n = 0;
    redisReply *r = redisCommand(rc, "KEYS %s", pattern);
    SBT_CHECK(r && r->type == REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < r->elements; i++) {
        n++;
        if (del)
            freeReplyObject(redisCommand(rc, "DEL %s", r->element[i]->str));
    }
    freeReplyObject(r);
    return n;
}

int main(void)
{
    const char *brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    const char *redis_url = sbt_service("SB_TEST_REDIS_URL", "Redis");
    char host[128] = "127.0.0.1";
    int port = 6379;
    sscanf(redis_url, "redis://%127[^:/]:%d", host, &port);
    redisContext *rc = redisConnect(host, port);
    SBT_CHECK_MSG(rc && !rc->err, "redis %s:%d", host, port);

    char *topic = sbt_unique_name("sbt-klease");
    char *group = sbt_unique_name("sbt-klease-g");
    char *prefix = sbt_unique_name("sbt:klease");
    char *ledger = sbt_unique_name("/tmp/sbt-klease-ledger");
    char *log = sbt_unique_name("/tmp/sbt-klease-log");
    SBT_CHECK(sbt_kafka_create_topic(brokers, topic, 1, 30000) == 0);
    kt_events_t ev;
    kt_events_make(&ev, N, 1, "Async.PendingOk");
    SBT_CHECK(sbt_kafka_produce(brokers, topic, 0, (const char *const *)ev.bodies,
                                (const char *const *)ev.keys, N, 30000) == 0);

    char y[4096];
    snprintf(y, sizeof y,
             "service: {name: sbt-klease, shutdown_timeout: 10s}\n"
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
             "    timeout: 1s\n"
             "    config: {path: %s}\n"
             "  - name: slow\n"
             "    module: %s\n"
             "    timeout: 1s\n"
             "    config: {delay_ms: 250}\n"
             "idempotency:\n"
             "  store: redis\n"
             "  redis: {url: \"%s\", prefix: \"%s:\", lease: 1s}\n"
             "admin: {listen: \"\"}\n",
             brokers, group, topic, ledger, MOD_ASYNC, redis_url, prefix);
    char *cfg = sbt_write_temp(y, ".yaml");
    pid_t p = kt_run(cfg, log);
    bool ok = sbt_wait_lines(ledger, N, 90000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "handled %zu of %d", sbt_count_lines(ledger), N);
    /* the last handler's done is written after its 250 ms */
    usleep(1500 * 1000);
    SBT_CHECK(sbt_stop(p, SIGTERM, 30000) == 0);

    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, (const char *const *)ev.ids, N, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(!missing && !dups && !unexpected, "missing %zu, dups %zu, unexpected %zu",
                  missing, dups, unexpected);
    /* in order, each at its first attempt */
    FILE *f = fopen(ledger, "r");
    SBT_CHECK(f != NULL);
    char line[4096];
    int i = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        SBT_CHECK(o != NULL);
        const char *id = json_string_value(json_object_get(o, "id"));
        SBT_CHECK_MSG(id && !strcmp(id, ev.ids[i]), "line %d: %s, expected %s", i,
                      id ? id : "(none)", ev.ids[i]);
        json_t *a = json_object_get(o, "attempt");
        SBT_CHECK_MSG(!a || json_integer_value(a) == 1, "line %d: attempt %lld", i,
                      (long long)json_integer_value(a));
        json_decref(o);
        i++;
    }
    fclose(f);
    size_t expired = sbt_grep(log, "expired while waiting");
    size_t retried = sbt_grep(log, "retry in");
    if (expired || retried)
        kt_dump_log(log);
    SBT_CHECK_MSG(!expired && !retried, "%zu claims expired while waiting, %zu retries", expired,
                  retried);
    char pat[256];
    snprintf(pat, sizeof pat, "%s:*", prefix);
    size_t keys = count_keys(rc, pat, false);
    SBT_CHECK_MSG(keys == 2 * N, "%zu keys (want %d: done for rec and slow)", keys, 2 * N);
    printf("ok: %d events claimed ahead in one partition, the last waiting ~10 s with a 6 s "
           "lease: each ran once, in order, first attempt\n",
           N);

    count_keys(rc, pat, true);
    redisFree(rc);
    unlink(ledger);
    unlink(log);
    unlink(cfg);
    free(cfg);
    kt_events_free(&ev);
    free(ledger);
    free(log);
    free(prefix);
    free(group);
    free(topic);
    return 0;
}
