/* Kafka transport, retries and dead letters, against the real broker:
 *  1. retry: topic (the default): a handler fails attempts 1 and 2 of every event; copies go
 *     through <topic>.retry with x-sb-attempts and x-sb-due-at, are consumed when due, and
 *     every event succeeds at attempt 3; the ledger (record runs first, on every attempt)
 *     shows attempts 1, 2, 3 per id, spaced by at least the configured delay.
 *  2. retry: in_place: same failures on one partition; the partition is held for the delay
 *     and order is kept: the ledger is id0 a1, id0 a2, id0 a3, id1 a1, ...
 *  2b. a held partition is paused and does not hold the others up: partition 0's first event
 *     retries in place after 30 s, with thousands behind it; partition 1's 20,000 events are
 *     all handled meanwhile (the local bound is small, so partition 0's fetched messages
 *     alone would fill it and stop the intake of every partition).
 *  2c. so is a slow partition (a 200 ms handler on partition 0) that holds the local bound:
 *     partition 1's 2,000 events are all handled while partition 0 is still running.
 *  3. dead letters: every attempt fails, max_attempts 2 (one retry through the retry topic);
 *     <topic>.dlq, read with a plain consumer, has for every event the original key, value
 *     and headers plus x-sb-reason=max-attempts, x-sb-error, x-sb-handler, x-sb-attempts=2,
 *     x-sb-consumer, x-sb-failed-at and x-sb-original-topic/-partition/-offset pointing at
 *     the message in <topic> (not the retry copy). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "kafka_common.h"
#include "sbtest.h"

#define DELAY_MS 400

static const char *FAIL_TWICE = "  - name: flaky\n    module: fail\n    bind: [\"#\"]\n"
                                "    config: {times: 2}\n";
static const char *FAIL_ALWAYS = "  - name: broken\n    module: fail\n    bind: [\"#\"]\n"
                                 "    config: {reason: \"always broken\"}\n";

typedef struct line {
    char id[96];
    unsigned attempt;
    double t; /* seconds */
} line_t;

static double parse_time(const char *s)
{
    /* 2026-12-03T17:07:55.014715Z: only time differences matter here. */
    int h, m;
    double sec;
    if (sscanf(s + 11, "%d:%d:%lfZ", &h, &m, &sec) != 3)
        return 0;
    return h * 3600.0 + m * 60.0 + sec;
}

static size_t read_ledger(const char *path, line_t *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    SBT_CHECK(f != NULL);
    char buf[4096];
    size_t n = 0;
    while (n < cap && fgets(buf, sizeof buf, f)) {
        json_t *j = json_loads(buf, 0, NULL);
        SBT_CHECK(j != NULL);
        snprintf(out[n].id, sizeof out[n].id, "%s", json_string_value(json_object_get(j, "id")));
        out[n].attempt = (unsigned)json_integer_value(json_object_get(j, "attempt"));
        out[n].t = parse_time(json_string_value(json_object_get(j, "time")));
        json_decref(j);
        n++;
    }
    fclose(f);
    return n;
}

typedef struct setup {
    char *topic, *group, *ledger, *log, *cfg;
    kt_events_t ev;
} setup_t;

static void setup(setup_t *s, const char *brokers, int partitions, int n, const char *kafka_extra,
                  const char *handlers, const char *top)
{
    s->topic = sbt_unique_name("sbt-krd");
    s->group = sbt_unique_name("sbt-krd-g");
    s->ledger = sbt_unique_name("/tmp/sbt-krd-ledger");
    s->log = sbt_unique_name("/tmp/sbt-krd-log");
    SBT_CHECK(sbt_kafka_create_topic(brokers, s->topic, partitions, 30000) == 0);
    kt_events_make(&s->ev, n, 7, NULL);
    s->cfg = kt_config(brokers, s->topic, s->group, s->ledger, kafka_extra, handlers, top);
}

static void teardown(setup_t *s)
{
    kt_events_free(&s->ev);
    unlink(s->ledger);
    unlink(s->log);
    unlink(s->cfg);
    free(s->topic);
    free(s->group);
    free(s->ledger);
    free(s->log);
    free(s->cfg);
}

static const char *RETRY_FIXED = "retry: {policy: fixed, base_delay: 400ms, max_attempts: 5, "
                                 "jitter: false}\n";

static void retry_topic(const char *brokers)
{
    setup_t s;
    enum { N = 30 };
    setup(&s, brokers, 3, N, NULL, FAIL_TWICE, RETRY_FIXED);
    SBT_CHECK(sbt_kafka_produce(brokers, s.topic, -1, (const char *const *)s.ev.bodies,
                                (const char *const *)s.ev.keys, N, 30000) == 0);
    pid_t p = kt_run(s.cfg, s.log);
    bool ok = sbt_wait_lines(s.ledger, 3 * N, 60000);
    if (!ok)
        kt_dump_log(s.log);
    SBT_CHECK_MSG(ok, "retry topic: %zu of %d ledger lines", sbt_count_lines(s.ledger), 3 * N);
    usleep(300 * 1000);
    SBT_CHECK(sbt_stop(p, SIGTERM, 30000) == 0);
    line_t lines[4 * N];
    size_t n = read_ledger(s.ledger, lines, 4 * N);
    SBT_CHECK_MSG(n == 3 * N, "%zu lines", n);
    for (int i = 0; i < N; i++) {
        double t[4] = {0};
        int seen = 0;
        for (size_t k = 0; k < n; k++)
            if (!strcmp(lines[k].id, s.ev.ids[i]) && lines[k].attempt >= 1 &&
                lines[k].attempt <= 3) {
                seen |= 1 << lines[k].attempt;
                t[lines[k].attempt] = lines[k].t;
            }
        SBT_CHECK_MSG(seen == 0xe, "%s: attempts seen mask 0x%x", s.ev.ids[i], seen);
        SBT_CHECK_MSG(t[2] - t[1] >= DELAY_MS / 1000.0 - 0.01 &&
                          t[3] - t[2] >= DELAY_MS / 1000.0 - 0.01,
                      "%s: delays %.3f s and %.3f s, below %d ms", s.ev.ids[i], t[2] - t[1],
                      t[3] - t[2], DELAY_MS);
    }
    printf("ok: retry topic: %d events, attempts 1..3 each, delays >= %d ms\n", N, DELAY_MS);
    teardown(&s);
}

static void retry_in_place(const char *brokers)
{
    setup_t s;
    enum { N = 8 };
    setup(&s, brokers, 1, N, "    retry: in_place\n", FAIL_TWICE,
          "retry: {policy: fixed, base_delay: 200ms, max_attempts: 5, jitter: false}\n");
    SBT_CHECK(sbt_kafka_produce(brokers, s.topic, 0, (const char *const *)s.ev.bodies,
                                (const char *const *)s.ev.keys, N, 30000) == 0);
    pid_t p = kt_run(s.cfg, s.log);
    bool ok = sbt_wait_lines(s.ledger, 3 * N, 60000);
    if (!ok)
        kt_dump_log(s.log);
    SBT_CHECK_MSG(ok, "in place: %zu of %d ledger lines", sbt_count_lines(s.ledger), 3 * N);
    usleep(300 * 1000);
    SBT_CHECK(sbt_stop(p, SIGTERM, 30000) == 0);
    line_t lines[4 * N];
    size_t n = read_ledger(s.ledger, lines, 4 * N);
    SBT_CHECK_MSG(n == 3 * N, "%zu lines", n);
    for (size_t k = 0; k < n; k++) {
        SBT_CHECK_MSG(!strcmp(lines[k].id, s.ev.ids[k / 3]) && lines[k].attempt == k % 3 + 1,
                      "line %zu: %s attempt %u, expected %s attempt %zu", k, lines[k].id,
                      lines[k].attempt, s.ev.ids[k / 3], k % 3 + 1);
        if (k % 3)
            SBT_CHECK_MSG(lines[k].t - lines[k - 1].t >= 0.19, "line %zu: delay %.3f s", k,
                          lines[k].t - lines[k - 1].t);
    }
    SBT_CHECK(sbt_grep(s.log, "created topic") == 1); /* only the DLQ topic: no retry topic */
    printf("ok: in-place retry: %d events in order, attempts 1..3 each, delays >= 200 ms\n", N);
    teardown(&s);
}

static void held_partition_paused(const char *brokers)
{
    enum { N0 = 4000, N1 = 20000 };
    setup_t s;
    setup(&s, brokers, 2, N0 + N1, "    retry: in_place\n    partition_backlog: 1000\n",
          "  - name: once\n    module: fail\n    bind: [\"Fail.Once\"]\n    config: {times: 1}\n",
          "retry: {policy: fixed, base_delay: 30s, max_attempts: 5, jitter: false}\n");
    kt_events_t first;
    kt_events_make(&first, 1, 1, "Fail.Once");
    const char **b0 = malloc((N0 + 1) * sizeof *b0);
    SBT_CHECK(b0 != NULL);
    b0[0] = first.bodies[0];
    for (int i = 0; i < N0; i++)
        b0[1 + i] = s.ev.bodies[i];
    SBT_CHECK(sbt_kafka_produce(brokers, s.topic, 0, b0, NULL, N0 + 1, 30000) == 0);
    SBT_CHECK(sbt_kafka_produce(brokers, s.topic, 1, (const char *const *)s.ev.bodies + N0, NULL,
                                N1, 30000) == 0);
    pid_t p = kt_run(s.cfg, s.log);
    /* Partition 1 done, well before partition 0's retry is due (30 s after its start). */
    size_t missing = N1, dups, unexpected;
    uint64_t deadline = sbt_now_ms() + 20000;
    while (missing && sbt_now_ms() < deadline) {
        usleep(200 * 1000);
        sbt_ledger_check(s.ledger, (const char *const *)s.ev.ids + N0, N1, &missing, &dups,
                         &unexpected);
    }
    if (missing)
        kt_dump_log(s.log);
    SBT_CHECK_MSG(!missing, "partition 1: %zu of %d not handled in 20 s while partition 0 waits",
                  missing, N1);
    sbt_ledger_check(s.ledger, (const char *const *)s.ev.ids, N0, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == N0, "partition 0 went on past its held head (%zu of %d handled)",
                  N0 - missing, N0);
    SBT_CHECK(sbt_stop(p, SIGTERM, 30000) == 0);
    printf("ok: a partition held for an in-place retry is paused: the other partition's %d "
           "events were handled meanwhile\n",
           N1);
    free(b0);
    kt_events_free(&first);
    teardown(&s);
}

/* A partition that does not drain (a slow handler: 60 events of 200 ms each on partition 0)
 * and holds the small local bound (partition_backlog 16) is paused after it held the fetch
 * back for a second, so partition 1's 2,000 events, produced once partition 0 is under way,
 * are all handled while partition 0 is still far from done (without the pause they would
 * trickle in one per slow event); then everything is handled exactly once. */
static void slow_partition_paused(const char *brokers)
{
    enum { N0 = 60, N1 = 2000 };
    setup_t s;
    setup(&s, brokers, 2, N1, "    partition_backlog: 16\n",
          "  - name: slow\n    module: " MOD_ASYNC "\n    config: {delay_ms: 200}\n", NULL);
    kt_events_t slow;
    kt_events_make(&slow, N0, 1, "Async.PendingOk");
    SBT_CHECK(sbt_kafka_produce(brokers, s.topic, 0, (const char *const *)slow.bodies, NULL, N0,
                                30000) == 0);
    pid_t p = kt_run(s.cfg, s.log);
    /* Partition 0 fills the local bound first; partition 1's events come behind it. */
    SBT_CHECK_MSG(sbt_wait_lines(s.ledger, 3, 30000), "partition 0 did not start");
    SBT_CHECK(sbt_kafka_produce(brokers, s.topic, 1, (const char *const *)s.ev.bodies, NULL, N1,
                                30000) == 0);
    size_t missing = N1, dups, unexpected, slow_missing = N0;
    uint64_t deadline = sbt_now_ms() + 60000;
    while (missing && sbt_now_ms() < deadline) {
        usleep(100 * 1000);
        /* partition 0's progress first: it only grows, so it is not overstated */
        sbt_ledger_check(s.ledger, (const char *const *)slow.ids, N0, &slow_missing, &dups,
                         &unexpected);
        sbt_ledger_check(s.ledger, (const char *const *)s.ev.ids, N1, &missing, &dups, &unexpected);
    }
    size_t slow_left = slow_missing;
    if (missing || slow_missing == 0)
        kt_dump_log(s.log);
    SBT_CHECK_MSG(!missing, "partition 1: %zu of %d not handled", missing, N1);
    SBT_CHECK_MSG(slow_left >= N0 / 2,
                  "partition 1 was held back by the slow partition 0: it finished only when %zu "
                  "of partition 0's %d events were left",
                  slow_left, N0);
    SBT_CHECK_MSG(sbt_grep(s.log, "does not drain: paused") >= 1, "no slow-partition pause logged");
    bool ok = sbt_wait_lines(s.ledger, N0 + N1, 60000);
    SBT_CHECK_MSG(ok, "%zu of %d ledger lines", sbt_count_lines(s.ledger), N0 + N1);
    sbt_ledger_check(s.ledger, (const char *const *)slow.ids, N0, &slow_missing, &dups,
                     &unexpected);
    SBT_CHECK_MSG(!slow_missing && !dups, "partition 0: %zu missing, %zu twice", slow_missing,
                  dups);
    sbt_ledger_check(s.ledger, (const char *const *)s.ev.ids, N1, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(!missing && !dups, "partition 1: %zu missing, %zu twice", missing, dups);
    SBT_CHECK(sbt_stop(p, SIGTERM, 30000) == 0);
    printf("ok: a slow partition holding the local bound is paused: the other partition's %d "
           "events were handled while it still had %zu of %d to go; each event once\n",
           N1, slow_left, N0);
    kt_events_free(&slow);
    teardown(&s);
}

static const char *header(rd_kafka_headers_t *hs, const char *name, size_t *len)
{
    const void *v = NULL;
    size_t sz = 0;
    if (!hs || rd_kafka_header_get_last(hs, name, &v, &sz) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    if (len)
        *len = sz;
    return v;
}

static bool header_is(rd_kafka_headers_t *hs, const char *name, const char *want)
{
    size_t len;
    const char *v = header(hs, name, &len);
    return v && len == strlen(want) && !memcmp(v, want, len);
}

static void dead_letters(const char *brokers)
{
    setup_t s;
    enum { N = 12 };
    setup(&s, brokers, 2, N, NULL, FAIL_ALWAYS,
          "retry: {policy: fixed, base_delay: 100ms, max_attempts: 2, jitter: false}\n");
    /* Produce with headers, remembering where each message landed. */
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_t *prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    SBT_CHECK(prod != NULL);
    for (int i = 0; i < N; i++) {
        rd_kafka_headers_t *hs = rd_kafka_headers_new(2);
        rd_kafka_header_add(hs, "tenant", -1, "acme", -1);
        rd_kafka_header_add(hs, "content-type", -1, "application/json", -1);
        SBT_CHECK(rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(s.topic), RD_KAFKA_V_PARTITION(i % 2),
                                    RD_KAFKA_V_KEY(s.ev.keys[i], strlen(s.ev.keys[i])),
                                    RD_KAFKA_V_VALUE(s.ev.bodies[i], strlen(s.ev.bodies[i])),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_HEADERS(hs), RD_KAFKA_V_END) == 0);
    }
    SBT_CHECK(rd_kafka_flush(prod, 30000) == 0);
    rd_kafka_destroy(prod);

    pid_t p = kt_run(s.cfg, s.log);
    char *dlq = malloc(strlen(s.topic) + 8);
    sprintf(dlq, "%s.dlq", s.topic);
    char *g2 = sbt_unique_name("sbt-krd-dlq");
    rd_kafka_t *c = sbt_kafka_consumer(brokers, g2, dlq, NULL);
    SBT_CHECK(c != NULL);
    int seen[N] = {0};
    for (int got = 0; got < N; got++) {
        rd_kafka_message_t *m = sbt_kafka_poll(c, 60000);
        if (!m)
            kt_dump_log(s.log);
        SBT_CHECK_MSG(m != NULL, "dead letters: got %d of %d", got, N);
        int i = -1;
        for (int k = 0; k < N; k++)
            if (m->len == strlen(s.ev.bodies[k]) && !memcmp(m->payload, s.ev.bodies[k], m->len))
                i = k;
        SBT_CHECK_MSG(i >= 0, "a dead letter with an unknown body");
        seen[i]++;
        SBT_CHECK(m->key_len == strlen(s.ev.keys[i]) && !memcmp(m->key, s.ev.keys[i], m->key_len));
        rd_kafka_headers_t *hs = NULL;
        SBT_CHECK(rd_kafka_message_headers(m, &hs) == 0);
        char part[8], off[24];
        snprintf(part, sizeof part, "%d", i % 2);
        snprintf(off, sizeof off, "%d", i / 2); /* produced alternately to 2 empty partitions */
        SBT_CHECK(header_is(hs, "tenant", "acme"));
        SBT_CHECK(header_is(hs, "content-type", "application/json"));
        SBT_CHECK(header_is(hs, "x-sb-reason", "max-attempts"));
        size_t elen;
        const char *e = header(hs, "x-sb-error", &elen);
        SBT_CHECK(e && elen == strlen("gave up after 2 attempts: always broken") &&
                  !memcmp(e, "gave up after 2 attempts: always broken", elen));
        SBT_CHECK(header_is(hs, "x-sb-handler", "broken"));
        SBT_CHECK(header_is(hs, "x-sb-attempts", "2"));
        SBT_CHECK(header_is(hs, "x-sb-consumer", "sbt-kafka"));
        SBT_CHECK(header_is(hs, "x-sb-original-topic", s.topic));
        SBT_CHECK_MSG(header_is(hs, "x-sb-original-partition", part), "partition of %d", i);
        SBT_CHECK_MSG(header_is(hs, "x-sb-original-offset", off), "offset of %d", i);
        size_t len;
        const char *fa = header(hs, "x-sb-failed-at", &len);
        SBT_CHECK(fa && len >= 20 && fa[4] == '-' && fa[10] == 'T');
        SBT_CHECK(!header(hs, "x-sb-due-at", NULL));
        size_t cnt = 0;
        for (size_t k = 0;; k++) {
            const char *name;
            const void *v;
            size_t sz;
            if (rd_kafka_header_get_all(hs, k, &name, &v, &sz))
                break;
            if (!strcmp(name, "x-sb-attempts"))
                cnt++;
        }
        SBT_CHECK_MSG(cnt == 1, "x-sb-attempts appears %zu times", cnt);
        rd_kafka_message_destroy(m);
    }
    for (int i = 0; i < N; i++)
        SBT_CHECK_MSG(seen[i] == 1, "event %d dead-lettered %d times", i, seen[i]);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    SBT_CHECK(sbt_stop(p, SIGTERM, 30000) == 0);
    SBT_CHECK(sbt_count_lines(s.ledger) == 2 * N); /* attempts 1 and 2 of each */
    printf("ok: dead letters: %d events with key, value, headers and every x-sb-* header\n", N);
    free(dlq);
    free(g2);
    teardown(&s);
}

int main(void)
{
    const char *brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    retry_topic(brokers);
    retry_in_place(brokers);
    held_partition_paused(brokers);
    slow_partition_paused(brokers);
    dead_letters(brokers);
    return 0;
}
