/* Kafka transport on the real broker: regex subscriptions and follow-up events.
 *  1. Regex: topics <p>.a and <p>.b, subscription ^<p>\..* (with a short
 *     topic.metadata.refresh.interval.ms). Plain events to both, a few that fail once
 *     (FlakyEvent: their copies go to <p>.a.retry, which the regex matches and which must be
 *     consumed as the retry topic it is) and one the handler rejects (PoisonEvent: dead-lettered
 *     to <p>.b.dlq, which the regex matches too but which must NOT be consumed: a consumer
 *     reading its own dead letters handles them again and dead-letters them to <p>.b.dlq.dlq,
 *     which it matches in turn). Then <p>.c is created while the consumer runs and its events
 *     are consumed. The record ledger has every plain id once, the flaky ids at attempts 1 and
 *     2, the poison id once; <p>.b.dlq was never assigned (the assignment that brought <p>.c,
 *     created after the dead letter, shows the whole subscription) and has no committed
 *     offset; no <p>.b.dlq.* topic exists; committed offsets are at the end of every consumed
 *     partition. The same run also subscribes ^<p>-anch\.[a-z]+$, a regex that excludes the
 *     side topics: the retry copies of <p>-anch.a go to <p>-anch.a.retry all the same and must
 *     be consumed (attempt 2 of its flaky events), not left where nobody reads them.
 *  2. Follow-ups: the notifier module handles N events (with traceparent and tracestate) of
 *     one topic, publish_topic unset (so follow-ups go to that first topic). The topic then
 *     holds exactly one NotificationRequested per source, with event-type, content-type, a
 *     unique message-id, the source's traceparent and tracestate, the JobId as key and the
 *     source id as SourceEventId; the follow-ups, consumed in turn, are recorded once each;
 *     the committed offsets are at the end; a restart with one new event per partition
 *     handles those (and their follow-ups) and nothing else.
 * Every topic of the run shares one prefix and is deleted at the end, also on failure (the
 * ones the broker auto-created included), as are the consumer groups. */
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "kafka_common.h"
#include "sbtest.h"

#define N_PLAIN  20 /* per topic, part 1 */
#define N_FLAKY  4
#define N_NOTIFY 20

static const char *g_brokers;
static char *g_prefix; /* every topic of the run starts with it */
static char *g_groups[2];
static pid_t g_child; /* the running switchboard, killed if a check fails */

/* ---- small Kafka helpers ------------------------------------------------------------------ */

static rd_kafka_conf_t *conf_new(void)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    SBT_CHECK(rd_kafka_conf_set(conf, "bootstrap.servers", g_brokers, err, sizeof err) == 0);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    return conf;
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *group)
{
    char err[512];
    rd_kafka_conf_t *conf = conf_new();
    if (group) {
        SBT_CHECK(rd_kafka_conf_set(conf, "group.id", group, err, sizeof err) == 0);
        SBT_CHECK(rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) == 0);
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof err);
    SBT_CHECK_MSG(rk != NULL, "kafka client: %s", err);
    return rk;
}

/* Names of the topics that start with `prefix` (at most cap). */
static size_t list_topics(rd_kafka_t *rk, const char *prefix, char **out, size_t cap)
{
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    size_t n = 0, lp = strlen(prefix);
    for (int i = 0; i < md->topic_cnt && n < cap; i++)
        if (!strncmp(md->topics[i].topic, prefix, lp))
            out[n++] = strdup(md->topics[i].topic);
    rd_kafka_metadata_destroy(md);
    return n;
}

static int partition_count(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = 0;
    if (rd_kafka_metadata(rk, 0, t, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR && md &&
        md->topic_cnt == 1 && !md->topics[0].err)
        n = md->topics[0].partition_cnt;
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    return n;
}

static int64_t high_watermark(rd_kafka_t *rk, const char *topic, int32_t partition)
{
    int64_t lo = -1, hi = -1;
    if (rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi, 10000))
        return -1;
    return hi;
}

typedef struct out {
    const char *key, *value, *traceparent, *tracestate;
    int32_t partition; /* RD_KAFKA_PARTITION_UA: by key */
} out_t;

static void produce(const char *topic, const out_t *o, size_t n)
{
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, NULL);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_headers_t *hs = rd_kafka_headers_new(2);
        if (o[i].traceparent)
            rd_kafka_header_add(hs, "traceparent", -1, o[i].traceparent, -1);
        if (o[i].tracestate)
            rd_kafka_header_add(hs, "tracestate", -1, o[i].tracestate, -1);
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(o[i].partition),
            RD_KAFKA_V_KEY(o[i].key, o[i].key ? strlen(o[i].key) : 0),
            RD_KAFKA_V_VALUE((void *)o[i].value, strlen(o[i].value)),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hs), RD_KAFKA_V_END);
        SBT_CHECK_MSG(e == 0, "produce to %s: %s", topic, rd_kafka_err2str(e));
    }
    SBT_CHECK_MSG(rd_kafka_flush(rk, 30000) == 0, "produce to %s: not delivered", topic);
    rd_kafka_destroy(rk);
}

static void produce_events(const char *topic, const kt_events_t *ev)
{
    out_t *o = calloc((size_t)ev->n, sizeof *o);
    SBT_CHECK(o != NULL);
    for (int i = 0; i < ev->n; i++)
        o[i] = (out_t){ev->keys[i], ev->bodies[i], NULL, NULL, RD_KAFKA_PARTITION_UA};
    produce(topic, o, (size_t)ev->n);
    free(o);
}

/* Every message of every partition of `topic`, from the beginning to the high watermark
 * taken at the start (read without joining a group: assign, no commits). The client lives
 * until msgs_free(): librdkafka wants every message destroyed before its client. */
typedef struct msgs {
    rd_kafka_t *rk;
    rd_kafka_message_t **m;
    size_t n;
} msgs_t;

static msgs_t read_topic(const char *topic)
{
    char *group = sbt_unique_name("sbt-krx-read"); /* assign needs one; never joined */
    rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, group);
    free(group);
    int np = partition_count(rk, topic);
    SBT_CHECK_MSG(np > 0, "topic %s has no partitions", topic);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
    int64_t *end = calloc((size_t)np, sizeof *end), *pos = calloc((size_t)np, sizeof *pos);
    SBT_CHECK(end && pos);
    size_t want = 0;
    for (int p = 0; p < np; p++) {
        int64_t lo = 0, hi = 0;
        SBT_CHECK(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000) == 0);
        end[p] = hi;
        pos[p] = lo;
        want += (size_t)(hi - lo);
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = lo;
    }
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, l);
    SBT_CHECK_MSG(e == 0, "assign %s: %s", topic, rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
    msgs_t r = {rk, calloc(want ? want : 1, sizeof *r.m), 0};
    SBT_CHECK(r.m != NULL);
    uint64_t deadline = sbt_now_ms() + 30000;
    while (r.n < want) {
        SBT_CHECK_MSG(sbt_now_ms() < deadline, "reading %s: %zu of %zu messages", topic, r.n, want);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m)
            continue;
        if (m->err || m->offset >= end[m->partition] || m->offset < pos[m->partition]) {
            rd_kafka_message_destroy(m);
            continue;
        }
        pos[m->partition] = m->offset + 1;
        r.m[r.n++] = m;
    }
    free(end);
    free(pos);
    return r;
}

static void msgs_free(msgs_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        rd_kafka_message_destroy(r->m[i]);
    free(r->m);
    rd_kafka_assign(r->rk, NULL);
    rd_kafka_destroy(r->rk);
}

/* A header's value as a NUL-terminated copy in buf ("" when absent); false when absent. */
static bool header(const rd_kafka_message_t *m, const char *name, char *buf, size_t cap)
{
    rd_kafka_headers_t *hs = NULL;
    const void *v = NULL;
    size_t sz = 0;
    buf[0] = '\0';
    if (rd_kafka_message_headers(m, &hs) || rd_kafka_header_get_last(hs, name, &v, &sz))
        return false;
    snprintf(buf, cap, "%.*s", (int)sz, v ? (const char *)v : "");
    return true;
}

/* Committed offset of the group for topic[partition]; RD_KAFKA_OFFSET_INVALID when none. */
static int64_t committed(const char *group, const char *topic, int32_t partition)
{
    rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, group);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, 15000);
    SBT_CHECK_MSG(e == 0, "committed offsets of %s: %s", group, rd_kafka_err2str(e));
    int64_t off = l->elems[0].err ? RD_KAFKA_OFFSET_INVALID : l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return off;
}

/* The group committed the end of every partition of topic. */
static void check_committed_at_end(const char *group, const char *topic)
{
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, NULL);
    int np = partition_count(rk, topic);
    SBT_CHECK_MSG(np > 0, "topic %s has no partitions", topic);
    for (int p = 0; p < np; p++) {
        int64_t hi = high_watermark(rk, topic, p), c = committed(group, topic, p);
        SBT_CHECK_MSG(hi >= 0 && (c == hi || (hi == 0 && c < 0)),
                      "%s[%d]: committed %lld, end %lld", topic, p, (long long)c, (long long)hi);
    }
    rd_kafka_destroy(rk);
}

static char *topic_name(const char *suffix)
{
    char *s = malloc(strlen(g_prefix) + strlen(suffix) + 1);
    SBT_CHECK(s != NULL);
    sprintf(s, "%s%s", g_prefix, suffix);
    return s;
}

/* Deletes every topic of the run and the groups; runs at exit, also after a failed check. */
static void cleanup(void)
{
    if (g_child > 0) {
        sbt_stop(g_child, SIGKILL, 10000);
        g_child = 0;
    }
    if (!g_prefix)
        return;
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, NULL);
    char *names[64];
    size_t n = list_topics(rk, g_prefix, names, 64);
    rd_kafka_destroy(rk);
    sbt_kafka_delete_topics(g_brokers, (const char *const *)names, n);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    const char *groups[2];
    size_t ng = 0;
    for (size_t i = 0; i < 2; i++)
        if (g_groups[i])
            groups[ng++] = g_groups[i];
    sbt_kafka_delete_groups(g_brokers, groups, ng);
    printf("cleanup: deleted %zu topics with prefix %s and %zu groups\n", n, g_prefix, ng);
}

/* ---- the record ledger ------------------------------------------------------------------ */

typedef struct entry {
    char id[128], type[64];
    unsigned attempt;
} entry_t;

typedef struct ledger {
    entry_t *e;
    size_t n;
} ledger_t;

static ledger_t ledger_read(const char *path)
{
    ledger_t l = {NULL, 0};
    size_t cap = 0;
    FILE *f = fopen(path, "r");
    char buf[4096];
    while (f && fgets(buf, sizeof buf, f)) {
        json_t *j = json_loads(buf, 0, NULL);
        SBT_CHECK_MSG(j != NULL, "ledger line: %s", buf);
        if (l.n == cap) {
            cap = cap ? 2 * cap : 64;
            l.e = realloc(l.e, cap * sizeof *l.e);
            SBT_CHECK(l.e != NULL);
        }
        entry_t *e = &l.e[l.n++];
        snprintf(e->id, sizeof e->id, "%s", json_string_value(json_object_get(j, "id")));
        snprintf(e->type, sizeof e->type, "%s", json_string_value(json_object_get(j, "type")));
        e->attempt = (unsigned)json_integer_value(json_object_get(j, "attempt"));
        json_decref(j);
    }
    if (f)
        fclose(f);
    return l;
}

/* Lines for id; *attempts gets a bit per attempt seen. */
static unsigned ledger_count(const ledger_t *l, const char *id, unsigned *attempts)
{
    unsigned n = 0;
    if (attempts)
        *attempts = 0;
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->e[i].id, id)) {
            n++;
            if (attempts && l->e[i].attempt < 32)
                *attempts |= 1u << l->e[i].attempt;
        }
    return n;
}

/* Every id of ev has exactly `lines` lines, at attempts 1..lines. */
static void check_ids(const ledger_t *l, const kt_events_t *ev, unsigned lines, const char *what)
{
    for (int i = 0; i < ev->n; i++) {
        unsigned att;
        unsigned n = ledger_count(l, ev->ids[i], &att);
        SBT_CHECK_MSG(n == lines && att == ((1u << (lines + 1)) - 2),
                      "%s %s: handled %u times (attempts mask 0x%x), expected %u", what, ev->ids[i],
                      n, att, lines);
    }
}

/* Lines of the switchboard log reporting an assignment that names topic[...]. */
static size_t assigned_lines(const char *log, const char *topic)
{
    char needle[300];
    snprintf(needle, sizeof needle, "%s[", topic);
    FILE *f = fopen(log, "r");
    if (!f)
        return 0;
    char line[8192];
    size_t n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "kafka: assigned") && strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

/* ---- 1. regex subscriptions ---------------------------------------------------------------- */

typedef struct expect {
    const kt_events_t *ev;
    unsigned lines; /* per id */
} expect_t;

/* True when every id of x has at least its lines in the ledger. */
static bool all_recorded(const char *ledger, const expect_t *x, size_t nx)
{
    ledger_t l = ledger_read(ledger);
    bool done = true;
    for (size_t k = 0; k < nx && done; k++)
        for (int i = 0; i < x[k].ev->n && done; i++)
            done = ledger_count(&l, x[k].ev->ids[i], NULL) >= x[k].lines;
    free(l.e);
    return done;
}

static bool wait_recorded(const char *ledger, const expect_t *x, size_t nx, int timeout_ms)
{
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    while (!all_recorded(ledger, x, nx)) {
        if (sbt_now_ms() >= deadline)
            return false;
        usleep(100 * 1000);
    }
    return true;
}

static void regex_subscription(void)
{
    enum { N_Q = 10 };
    /* ^<p>\..* matches <p>.a, <p>.b, <p>.c and their side topics; ^<p>-anch\.[a-z]+$ matches
     * <p>-anch.a only, not its retry topic, whose copies must be consumed all the same. */
    char *ta = topic_name(".a"), *tb = topic_name(".b"), *tc = topic_name(".c");
    char *ta_retry = topic_name(".a.retry"), *tb_dlq = topic_name(".b.dlq");
    char *tb_dlq_more = topic_name(".b.dlq.");
    char *tq = topic_name("-anch.a"), *tq_retry = topic_name("-anch.a.retry");
    char *group = g_groups[0] = sbt_unique_name("sbt-krx-g");
    char *ledger = sbt_unique_name("/tmp/sbt-krx-ledger");
    char *log = sbt_unique_name("/tmp/sbt-krx-log");
    SBT_CHECK(sbt_kafka_create_topic(g_brokers, ta, 2, 30000) == 0);
    SBT_CHECK(sbt_kafka_create_topic(g_brokers, tb, 2, 30000) == 0);
    SBT_CHECK(sbt_kafka_create_topic(g_brokers, tq, 2, 30000) == 0);

    kt_events_t a, b, c, flaky, poison, q, qflaky;
    kt_events_make(&a, N_PLAIN, 5, NULL);
    kt_events_make(&b, N_PLAIN, 5, NULL);
    kt_events_make(&c, N_PLAIN, 5, NULL);
    kt_events_make(&flaky, N_FLAKY, 2, "FlakyEvent");
    kt_events_make(&poison, 1, 1, "PoisonEvent");
    kt_events_make(&q, N_Q, 3, NULL);
    kt_events_make(&qflaky, N_FLAKY, 2, "FlakyEvent");
    produce_events(ta, &a);
    produce_events(ta, &flaky);
    produce_events(tb, &b);
    produce_events(tb, &poison);
    produce_events(tq, &q);
    produce_events(tq, &qflaky);

    /* Single quotes: YAML keeps the backslashes. */
    char topics[600];
    snprintf(topics, sizeof topics, "'^%s\\..*', '^%s-anch\\.[a-z]+$'", g_prefix, g_prefix);
    const char *handlers = "  - name: flaky\n    module: fail\n    bind: [FlakyEvent]\n"
                           "    config: {times: 1}\n"
                           "  - name: poison\n    module: fail\n    bind: [PoisonEvent]\n"
                           "    config: {outcome: reject, reason: poisoned}\n";
    char *cfg =
        kt_config(g_brokers, topics, group, ledger,
                  "    properties: {topic.metadata.refresh.interval.ms: \"1000\"}\n", handlers,
                  "retry: {policy: fixed, base_delay: 200ms, max_attempts: 3, "
                  "jitter: false}\n");
    g_child = kt_run(cfg, log);

    /* Plain events once, flaky ones of <p>.a twice (the second from <p>.a.retry), the poison
     * once, and the first attempt of the flaky ones of <p>-anch.a. */
    const expect_t first[] = {{&a, 1}, {&b, 1}, {&flaky, 2}, {&poison, 1}, {&q, 1}, {&qflaky, 1}};
    bool ok = wait_recorded(ledger, first, sizeof first / sizeof first[0], 45000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "regex: %zu ledger lines, not all ids handled", sbt_count_lines(ledger));

    /* The poison's dead letter is confirmed (the DLQ topic exists from here on). */
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, NULL);
    uint64_t deadline = sbt_now_ms() + 30000;
    while (high_watermark(rk, tb_dlq, 0) < 1 && sbt_now_ms() < deadline)
        usleep(100 * 1000);
    rd_kafka_destroy(rk);
    msgs_t dl = read_topic(tb_dlq);
    SBT_CHECK_MSG(dl.n == 1, "%s holds %zu messages, expected the poison once", tb_dlq, dl.n);
    char v[256];
    SBT_CHECK(dl.m[0]->len == strlen(poison.bodies[0]) &&
              !memcmp(dl.m[0]->payload, poison.bodies[0], dl.m[0]->len));
    SBT_CHECK(header(dl.m[0], "x-sb-reason", v, sizeof v) && !strcmp(v, "rejected"));
    SBT_CHECK(header(dl.m[0], "x-sb-original-topic", v, sizeof v) && !strcmp(v, tb));
    msgs_free(&dl);

    /* A new matching topic while the consumer runs. */
    SBT_CHECK(sbt_kafka_create_topic(g_brokers, tc, 2, 30000) == 0);
    produce_events(tc, &c);
    const expect_t added[] = {{&c, 1}};
    ok = wait_recorded(ledger, added, 1, 45000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "regex: the events of the new topic %s were not all handled", tc);
    /* The assignment that brought <p>.c is the whole subscription as of a metadata refresh
     * after <p>.b.dlq existed: whether <p>.b.dlq is subscribed is decided by now. */
    SBT_CHECK(assigned_lines(log, tc) >= 1);
    size_t dlq_assigned = assigned_lines(log, tb_dlq);
    if (dlq_assigned) {
        /* Show what it leads to before failing: the dead letter handled again. */
        const expect_t again[] = {{&poison, 2}};
        wait_recorded(ledger, again, 1, 10000);
        ledger_t l = ledger_read(ledger);
        unsigned att;
        unsigned n = ledger_count(&l, poison.ids[0], &att);
        free(l.e);
        kt_dump_log(log);
        SBT_CHECK_MSG(false,
                      "regex: the consumer subscribed to its own dead-letter topic %s (assigned "
                      "in %zu rebalances); the dead-lettered event was handled %u times "
                      "(attempts mask 0x%x)",
                      tb_dlq, dlq_assigned, n, att);
    }
    /* The retry copies of <p>-anch.a (in <p>-anch.a.retry since the first attempts). */
    const expect_t retried[] = {{&qflaky, 2}};
    ok = wait_recorded(ledger, retried, 1, 30000);
    if (!ok) {
        rk = client(RD_KAFKA_PRODUCER, NULL);
        int64_t copies = high_watermark(rk, tq_retry, 0);
        rd_kafka_destroy(rk);
        kt_dump_log(log);
        SBT_CHECK_MSG(false,
                      "regex: retries of %s (subscribed by an anchored regex) are never "
                      "consumed: %s holds %lld copies and was assigned in %zu rebalances",
                      tq, tq_retry, (long long)copies, assigned_lines(log, tq_retry));
    }
    usleep(500 * 1000); /* anything wrongly consumed would add lines */
    SBT_CHECK_MSG(sbt_stop(g_child, SIGTERM, 30000) == 0, "switchboard did not exit cleanly");
    g_child = 0;

    ledger_t l = ledger_read(ledger);
    size_t want = 3 * N_PLAIN + 2 * N_FLAKY + 1 + N_Q + 2 * N_FLAKY;
    SBT_CHECK_MSG(l.n == want, "regex: %zu ledger lines, expected %zu", l.n, want);
    check_ids(&l, &a, 1, ta);
    check_ids(&l, &b, 1, tb);
    check_ids(&l, &c, 1, tc);
    check_ids(&l, &flaky, 2, "flaky");
    check_ids(&l, &poison, 1, "poison");
    check_ids(&l, &q, 1, tq);
    check_ids(&l, &qflaky, 2, "flaky (anchored regex)");
    free(l.e);
    SBT_CHECK(assigned_lines(log, ta_retry) >= 1);
    SBT_CHECK(assigned_lines(log, tq_retry) >= 1);

    /* Broker side: offsets committed at the end of what was consumed, nothing for the DLQ,
     * and no topic the dead letter would have been dead-lettered to again. */
    check_committed_at_end(group, ta);
    check_committed_at_end(group, tb);
    check_committed_at_end(group, tc);
    check_committed_at_end(group, ta_retry);
    check_committed_at_end(group, tq);
    check_committed_at_end(group, tq_retry);
    int64_t dlq_off = committed(group, tb_dlq, 0);
    SBT_CHECK_MSG(dlq_off < 0, "the group committed offset %lld on its DLQ topic %s",
                  (long long)dlq_off, tb_dlq);
    rk = client(RD_KAFKA_PRODUCER, NULL);
    char *names[64];
    size_t nt = list_topics(rk, tb_dlq_more, names, 64);
    rd_kafka_destroy(rk);
    for (size_t i = 0; i < nt; i++) {
        fprintf(stderr, "unexpected topic %s\n", names[i]);
        free(names[i]);
    }
    SBT_CHECK_MSG(nt == 0, "%zu topics named %s*: dead letters of dead letters", nt, tb_dlq_more);
    printf("ok: regex ^%s\\..*: %d + %d events once each, %d retried once through %s, the "
           "poison dead-lettered once and %s never consumed; new topic %s consumed (%d events)\n",
           g_prefix, N_PLAIN, N_PLAIN, N_FLAKY, ta_retry, tb_dlq, tc, N_PLAIN);
    printf("ok: anchored regex ^%s-anch\\.[a-z]+$: %d events once each, %d retried once through "
           "%s\n",
           g_prefix, N_Q, N_FLAKY, tq_retry);

    kt_events_t *all[] = {&a, &b, &c, &flaky, &poison, &q, &qflaky};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        kt_events_free(all[i]);
    unlink(cfg);
    unlink(ledger);
    unlink(log);
    char *strs[] = {cfg, ledger, log, ta, tb, tc, ta_retry, tb_dlq, tb_dlq_more, tq, tq_retry};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        free(strs[i]);
}

/* ---- 2. follow-up events ------------------------------------------------------------------ */

static char *notifier_path(void)
{
#ifdef NOTIFIER_SO
    const char *def = NOTIFIER_SO;
#else
    const char *def = NULL;
#endif
    const char *env = getenv("SWITCHBOARD_NOTIFIER");
    char buf[4096];
    if (env && *env) {
        snprintf(buf, sizeof buf, "%s", env);
    } else if (def) {
        snprintf(buf, sizeof buf, "%s", def);
    } else {
        /* Where `switchboard demo` looks too: next to the binary's directory. */
        char bin[4096];
        snprintf(bin, sizeof bin, "%s", SB_BIN);
        snprintf(buf, sizeof buf, "%s/../handlers/notifier/notifier.so", dirname(bin));
    }
    struct stat st;
    SBT_CHECK_MSG(stat(buf, &st) == 0, "notifier module %s not found (build target notifier)", buf);
    char *p = strdup(buf);
    SBT_CHECK(p != NULL);
    return p;
}

typedef struct source {
    kt_events_t ev;
    char (*tp)[64], (*ts)[32], (*job)[32];
} source_t;

static void sources_make(source_t *s, int n, uint64_t seed)
{
    kt_events_make(&s->ev, n, 3, NULL);
    s->tp = calloc((size_t)n, sizeof *s->tp);
    s->ts = calloc((size_t)n, sizeof *s->ts);
    s->job = calloc((size_t)n, sizeof *s->job);
    SBT_CHECK(s->tp && s->ts && s->job);
    for (int i = 0; i < n; i++) {
        snprintf(s->tp[i], sizeof s->tp[i], "00-%016llx%016llx-%016llx-01",
                 (unsigned long long)seed, (unsigned long long)i + 1,
                 (unsigned long long)(0x1000 + i));
        snprintf(s->ts[i], sizeof s->ts[i], "sbt=%d", i);
        snprintf(s->job[i], sizeof s->job[i], "job-%d", i); /* kt_events_make's JobId */
    }
}

static void sources_free(source_t *s)
{
    kt_events_free(&s->ev);
    free(s->tp);
    free(s->ts);
    free(s->job);
}

static void sources_produce(const char *topic, const source_t *s, int from, int n, bool spread)
{
    out_t *o = calloc((size_t)n, sizeof *o);
    SBT_CHECK(o != NULL);
    for (int k = 0; k < n; k++) {
        int i = from + k;
        o[k] = (out_t){s->ev.keys[i], s->ev.bodies[i], s->tp[i], s->ts[i],
                       spread ? k : RD_KAFKA_PARTITION_UA};
    }
    produce(topic, o, (size_t)n);
    free(o);
}

static bool is_guid(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdef", s[i]))
            return false;
    }
    return true;
}

/* The topic holds `total` source events (the first `total` of s) and exactly one follow-up
 * per source, with the expected key, headers and body. Adds the follow-ups' body ids to
 * out_ids (caller frees). */
static void check_follow_ups(const char *topic, const source_t *s, int total, char ***out_ids)
{
    msgs_t r = read_topic(topic);
    int *seen = calloc((size_t)total, sizeof *seen);
    char **msg_ids = calloc((size_t)total, sizeof *msg_ids);
    char **body_ids = calloc((size_t)total, sizeof *body_ids);
    SBT_CHECK(seen && msg_ids && body_ids);
    int sources = 0, follow = 0, id_mismatch = 0;
    char v[512];
    for (size_t k = 0; k < r.n; k++) {
        const rd_kafka_message_t *m = r.m[k];
        if (!header(m, "event-type", v, sizeof v)) {
            sources++; /* produced by the test, without an event-type header */
            continue;
        }
        SBT_CHECK_MSG(!strcmp(v, "NotificationRequested"), "follow-up of type %s", v);
        follow++;
        json_error_t je;
        json_t *j = json_loadb(m->payload, m->len, 0, &je);
        SBT_CHECK_MSG(j != NULL, "follow-up body: %s", je.text);
        const char *src = json_string_value(json_object_get(j, "SourceEventId"));
        const char *bid = json_string_value(json_object_get(j, "Id"));
        SBT_CHECK(src && bid && is_guid(bid));
        int i = -1;
        for (int x = 0; x < total; x++)
            if (!strcmp(s->ev.ids[x], src))
                i = x;
        SBT_CHECK_MSG(i >= 0, "follow-up for an unknown source %s", src);
        seen[i]++;
        SBT_CHECK_MSG(seen[i] == 1, "source %s has %d follow-ups", src, seen[i]);
        SBT_CHECK(!strcmp(json_string_value(json_object_get(j, "Channel")), "sms"));
        SBT_CHECK(!strcmp(json_string_value(json_object_get(j, "Recipient")), "ops@example.com"));
        SBT_CHECK(!strcmp(json_string_value(json_object_get(j, "Severity")), "info"));
        SBT_CHECK(json_string_value(json_object_get(j, "CreationDate")) != NULL);
        body_ids[i] = strdup(bid);
        json_decref(j);
        SBT_CHECK_MSG(m->key_len == strlen(s->job[i]) && !memcmp(m->key, s->job[i], m->key_len),
                      "follow-up of %s: key is not %s", src, s->job[i]);
        SBT_CHECK(header(m, "content-type", v, sizeof v) && !strcmp(v, "application/json"));
        SBT_CHECK_MSG(header(m, "message-id", v, sizeof v) && is_guid(v),
                      "follow-up of %s: message-id \"%s\"", src, v);
        msg_ids[i] = strdup(v);
        id_mismatch += strcmp(msg_ids[i], body_ids[i]) != 0;
        SBT_CHECK_MSG(header(m, "traceparent", v, sizeof v) && !strcmp(v, s->tp[i]),
                      "follow-up of %s: traceparent \"%s\", expected %s", src, v, s->tp[i]);
        SBT_CHECK_MSG(header(m, "tracestate", v, sizeof v) && !strcmp(v, s->ts[i]),
                      "follow-up of %s: tracestate \"%s\", expected %s", src, v, s->ts[i]);
    }
    SBT_CHECK_MSG(sources == total && follow == total,
                  "%s: %d sources and %d follow-ups, expected %d of each", topic, sources, follow,
                  total);
    for (int i = 0; i < total; i++)
        for (int x = 0; x < i; x++)
            SBT_CHECK_MSG(strcmp(msg_ids[i], msg_ids[x]), "message-id %s repeated", msg_ids[i]);
    if (id_mismatch)
        printf("note: %d of %d follow-ups carry a message-id header different from their body "
               "Id (the runtime and the module each make one)\n",
               id_mismatch, total);
    for (int i = 0; i < total; i++)
        free(msg_ids[i]);
    free(msg_ids);
    free(seen);
    msgs_free(&r);
    *out_ids = body_ids;
}

/* The new sources of the restart and as many follow-ups as sources are recorded. */
static bool restart_done(const char *ledger, const source_t *s, int n, int extra)
{
    ledger_t l = ledger_read(ledger);
    size_t follow = 0;
    for (size_t i = 0; i < l.n; i++)
        follow += !strcmp(l.e[i].type, "NotificationRequested");
    bool done = follow >= (size_t)(n + extra);
    for (int i = n; i < n + extra; i++)
        done = done && ledger_count(&l, s->ev.ids[i], NULL) > 0;
    free(l.e);
    return done;
}

static void follow_ups(void)
{
    enum { N = N_NOTIFY, EXTRA = 2 };
    char *topic = topic_name("-pub");
    char *group = g_groups[1] = sbt_unique_name("sbt-krp-g");
    char *ledger = sbt_unique_name("/tmp/sbt-krp-ledger");
    char *log = sbt_unique_name("/tmp/sbt-krp-log");
    char *so = notifier_path();
    SBT_CHECK(sbt_kafka_create_topic(g_brokers, topic, EXTRA, 30000) == 0);
    source_t s;
    sources_make(&s, N + EXTRA, (uint64_t)sbt_now_ms() ^ ((uint64_t)getpid() << 40));
    sources_produce(topic, &s, 0, N, false);

    /* No bind: the module's own patterns (a bind would apply to both of its handlers). */
    char handlers[4600];
    snprintf(handlers, sizeof handlers,
             "  - name: notify\n    module: \"%s\"\n"
             "    config: {channel: sms, recipient: \"ops@example.com\"}\n",
             so);
    char *cfg = kt_config(g_brokers, topic, group, ledger, NULL, handlers, NULL);
    g_child = kt_run(cfg, log);
    /* N sources, then their N follow-ups (published to the same topic: publish_topic is
     * unset) consumed in turn; record runs on both, notify only on the sources. */
    bool ok = sbt_wait_lines(ledger, 2 * N, 45000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "follow-ups: %zu of %d ledger lines", sbt_count_lines(ledger), 2 * N);
    usleep(300 * 1000);
    SBT_CHECK_MSG(sbt_stop(g_child, SIGTERM, 30000) == 0, "switchboard did not exit cleanly");
    g_child = 0;

    char **fids;
    check_follow_ups(topic, &s, N, &fids);
    ledger_t l = ledger_read(ledger);
    SBT_CHECK_MSG(l.n == 2 * N, "follow-ups: %zu ledger lines, expected %d", l.n, 2 * N);
    for (int i = 0; i < N; i++) {
        unsigned att;
        SBT_CHECK_MSG(ledger_count(&l, s.ev.ids[i], &att) == 1 && att == 2,
                      "source %s handled %u times", s.ev.ids[i],
                      ledger_count(&l, s.ev.ids[i], NULL));
        SBT_CHECK_MSG(ledger_count(&l, fids[i], NULL) == 1, "follow-up %s recorded %u times",
                      fids[i], ledger_count(&l, fids[i], NULL));
    }
    free(l.e);
    check_committed_at_end(group, topic);

    /* Restart: one new source per partition; everything before it was committed, so the
     * ledger gains exactly those and their follow-ups (a partition is handled in order: a
     * re-processed message would be recorded before the new source of its partition). */
    sources_produce(topic, &s, N, EXTRA, true);
    g_child = kt_run(cfg, log);
    uint64_t deadline = sbt_now_ms() + 45000;
    while (!restart_done(ledger, &s, N, EXTRA) && sbt_now_ms() < deadline)
        usleep(100 * 1000);
    usleep(300 * 1000);
    SBT_CHECK_MSG(sbt_stop(g_child, SIGTERM, 30000) == 0, "switchboard did not exit cleanly");
    g_child = 0;
    l = ledger_read(ledger);
    if (l.n != 2 * (N + EXTRA))
        kt_dump_log(log);
    SBT_CHECK_MSG(l.n == 2 * (N + EXTRA), "after restart: %zu ledger lines, expected %d", l.n,
                  2 * (N + EXTRA));
    for (int i = 0; i < N + EXTRA; i++)
        SBT_CHECK_MSG(ledger_count(&l, s.ev.ids[i], NULL) == 1, "source %s handled %u times",
                      s.ev.ids[i], ledger_count(&l, s.ev.ids[i], NULL));
    for (int i = 0; i < N; i++)
        SBT_CHECK(ledger_count(&l, fids[i], NULL) == 1);
    free(l.e);
    for (int i = 0; i < N; i++)
        free(fids[i]);
    free(fids);
    check_follow_ups(topic, &s, N + EXTRA, &fids);
    for (int i = 0; i < N + EXTRA; i++)
        free(fids[i]);
    free(fids);
    check_committed_at_end(group, topic);
    printf("ok: follow-ups: %d + %d events, one NotificationRequested each on %s with "
           "event-type, content-type, message-id, traceparent, tracestate and the JobId key; "
           "offsets committed, nothing re-processed after a restart\n",
           N, EXTRA, topic);

    sources_free(&s);
    unlink(cfg);
    unlink(ledger);
    unlink(log);
    free(cfg);
    free(ledger);
    free(log);
    free(so);
    free(topic);
}

int main(void)
{
    g_brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    g_prefix = sbt_unique_name("krx");
    atexit(cleanup);
    uint64_t t0 = sbt_now_ms();
    regex_subscription();
    printf("(regex part: %.1f s)\n", (double)(sbt_now_ms() - t0) / 1000.0);
    t0 = sbt_now_ms();
    follow_ups();
    printf("(follow-up part: %.1f s)\n", (double)(sbt_now_ms() - t0) / 1000.0);
    return 0;
}
