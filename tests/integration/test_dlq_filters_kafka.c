/* `switchboard dlq` filters, export/import and an interrupted replay on a real Kafka DLQ:
 *  - a real consumer with three failing handlers dead-letters four groups of events to
 *    <topic>.dlq, in two batches two seconds apart (T_MID between them):
 *      A  4 x Order.Created          type in the body only  orders_bad  rejected
 *      B  3 x Payment.Card.Declined  event-type header      pay_bad     rejected
 *      ------- T_MID -------
 *      C  3 x Order.Cancelled        event-type header      cancel_bad  max-attempts
 *      D  2 x Payment.Refunded       type in the body only  pay_bad     rejected
 *    (orders_bad: "order total negative"; pay_bad: "card declined by issuer"; cancel_bad
 *    retries with max_attempts 1: "gave up after 1 attempts: inventory locked");
 *  - `list --json` with each filter (--type exact, wildcard and repeated, --reason,
 *    --error REGEX, --handler, --since, --until, --id, --limit, combinations) returns
 *    exactly the expected ids; stats --json counts the body-only types too;
 *  - --since seeks by Kafka timestamp on a topic of hand-made dead letters (old ones, one
 *    whose timestamp lags its x-sb-failed-at, one imported-like): the old ones are not
 *    read, no match is lost;
 *  - export, import into a fresh topic, export again: keys, bodies and headers (a binary
 *    one among them) are byte-identical, id by id;
 *  - replay --rate 2/s with a consumer whose handlers succeed is SIGKILLed after 3 records
 *    were committed; a second replay finishes: every id is in the ledger exactly once and
 *    stats counts 0;
 *  - admin replay jobs (POST /replay on `switchboard run`, dry run) with a "type" filter see
 *    the type the consumer routes by, from transport.kafka.event_type_field (set to another
 *    member) too, as `dlq --type` does on the same config;
 *  - a filtered replay and purge on ONE partition where two types interleave: replay --type
 *    A (a consumer records what it handles) moves the 7 As, past Bs that stay; the replay
 *    group's offset stays before the first B and the moved offsets are in its metadata;
 *    list and stats show only the Bs; a second replay --type A moves nothing; purge --id
 *    one B, then list; purge --type B leaves 0; a replay afterwards scans nothing; the
 *    ledger has every A exactly once and no B.
 * Topics and consumer groups are deleted at the end, also when a check fails (atexit). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "kafka_common.h"
#include "sbtest.h"

static const char *HANDLERS =
    "  - name: orders_bad\n    module: fail\n    bind: [\"Order.Created\"]\n"
    "    config: {outcome: reject, reason: \"order total negative\"}\n"
    "  - name: cancel_bad\n    module: fail\n    bind: [\"Order.Cancelled\"]\n"
    "    retry: {max_attempts: 1}\n"
    "    config: {outcome: retry, reason: \"inventory locked\"}\n"
    "  - name: pay_bad\n    module: fail\n    bind: [\"Payment.#\"]\n"
    "    config: {outcome: reject, reason: \"card declined by issuer\"}\n";

static const char *brokers;
static char *out_path, *err_path;

/* What the atexit handler cleans up. */
static struct {
    char *topics[12], *groups[6], *files[24];
    size_t nt, ng, nf;
    pid_t pids[4]; /* children still running (0: none) */
} cl;

static char *track_file(char *path)
{
    if (cl.nf < 24)
        cl.files[cl.nf++] = path;
    return path;
}

/* ---- running `switchboard dlq` ------------------------------------------------------------ */

/* `switchboard dlq -c cfg args...`, stdout to out_path, stderr to err_path; the exit status. */
static int dlq(const char *cfg, const char *const *args)
{
    return sbt_run_cli((const char *const[]){"dlq", "-c", cfg, NULL}, args, out_path, err_path);
}

static void dump(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    fprintf(stderr, "---- %s\n", path);
    while (f && fgets(line, sizeof line, f))
        fputs(line, stderr);
    if (f)
        fclose(f);
}

/* dlq must exit 0. */
static void dlq_ok(const char *cfg, const char *const *args)
{
    int rc = dlq(cfg, args);
    if (rc != 0) {
        dump(err_path);
        SBT_CHECK_MSG(rc == 0, "switchboard dlq %s exited %d", args[0], rc);
    }
}

/* "N scanned" from the summary line on stderr. */
static long scanned(void)
{
    FILE *f = fopen(err_path, "r");
    char line[1024];
    long n = -1;
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, ": ");
        if (strncmp(line, "switchboard dlq ", 16) == 0 && p && strstr(p, " scanned"))
            n = strtol(p + 2, NULL, 10);
    }
    if (f)
        fclose(f);
    return n;
}

/* stats --json of the DLQ (extra args may name --queue or filters). Caller decrefs. */
static json_t *stats(const char *cfg, const char *const *extra)
{
    const char *args[16] = {"stats", "--json"};
    size_t n = 2;
    for (size_t i = 0; extra && extra[i] && n < 15; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    dlq_ok(cfg, args);
    json_error_t e;
    json_t *j = json_load_file(out_path, 0, &e);
    SBT_CHECK_MSG(j != NULL, "stats output: %s", e.text);
    return j;
}

static long stats_total(const char *cfg, const char *const *extra)
{
    json_t *j = stats(cfg, extra);
    long n = (long)json_integer_value(json_object_get(j, "total"));
    json_decref(j);
    return n;
}

/* ---- id sets ----------------------------------------------------------------------------- */

typedef struct idset {
    char *v[64];
    size_t n;
} idset_t;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void idset_add(idset_t *s, const char *id)
{
    SBT_CHECK(s->n < 64);
    s->v[s->n] = strdup(id);
    SBT_CHECK(s->v[s->n] != NULL);
    s->n++;
    qsort(s->v, s->n, sizeof s->v[0], cmp_str);
}

static void idset_add_events(idset_t *s, const kt_events_t *ev)
{
    for (int i = 0; i < ev->n; i++)
        idset_add(s, ev->ids[i]);
}

static void idset_free(idset_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    s->n = 0;
}

static bool idset_has(const idset_t *s, const char *id)
{
    return bsearch(&id, s->v, s->n, sizeof s->v[0], cmp_str) != NULL;
}

/* The "Id" of a record's body (a JSON string in the export format). */
static const char *record_id(json_t *rec, json_t **body_doc)
{
    const char *body = json_string_value(json_object_get(rec, "body"));
    *body_doc = body ? json_loads(body, 0, NULL) : NULL;
    return *body_doc ? json_string_value(json_object_get(*body_doc, "Id")) : NULL;
}

/* The ids of the records in a JSON Lines file. */
static void ids_of_file(const char *path, idset_t *out)
{
    FILE *f = fopen(path, "r");
    SBT_CHECK(f != NULL);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *rec = json_loads(line, 0, NULL), *doc = NULL;
        SBT_CHECK_MSG(rec != NULL, "not a JSON line: %s", line);
        const char *id = record_id(rec, &doc);
        SBT_CHECK_MSG(id != NULL, "no Id in %s", line);
        SBT_CHECK_MSG(!idset_has(out, id), "%s listed twice", id);
        idset_add(out, id);
        json_decref(doc);
        json_decref(rec);
    }
    free(line);
    fclose(f);
}

static void print_set(const char *what, const idset_t *s)
{
    fprintf(stderr, "  %s (%zu):", what, s->n);
    for (size_t i = 0; i < s->n; i++)
        fprintf(stderr, " %s", s->v[i]);
    fprintf(stderr, "\n");
}

/* `list --json ARGS` on cfg must return exactly `want`. */
static void expect_list(const char *cfg, const char *const *args, const idset_t *want)
{
    const char *a[20] = {"list", "--json"};
    size_t n = 2;
    char label[512] = "list";
    for (size_t i = 0; args[i] && n < 19; i++) {
        a[n++] = args[i];
        snprintf(label + strlen(label), sizeof label - strlen(label), " %s", args[i]);
    }
    a[n] = NULL;
    dlq_ok(cfg, a);
    idset_t got = {0};
    ids_of_file(out_path, &got);
    bool same = got.n == want->n;
    for (size_t i = 0; same && i < got.n; i++)
        same = strcmp(got.v[i], want->v[i]) == 0;
    if (!same) {
        fprintf(stderr, "%s: wrong selection\n", label);
        print_set("want", want);
        print_set("got", &got);
        dump(err_path);
        SBT_CHECK_MSG(same, "%s selected %zu, want %zu", label, got.n, want->n);
    }
    idset_free(&got);
    printf("ok: %s: %zu ids\n", label, want->n);
}

/* The union of the groups given as a string of letters ("AC") over ev[0..3]. */
static void groups(idset_t *s, const kt_events_t *ev, const char *which)
{
    idset_free(s);
    for (const char *p = which; *p; p++)
        idset_add_events(s, &ev[*p - 'A']);
}

/* ---- Kafka helpers ----------------------------------------------------------------------- */

static void count_failed(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    if (m->err)
        (*(int *)opaque)++;
}

static rd_kafka_t *producer(int *failed)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    SBT_CHECK(rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) ==
              RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rd_kafka_conf_set_dr_msg_cb(conf, count_failed);
    rd_kafka_conf_set_opaque(conf, failed);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    SBT_CHECK_MSG(rk != NULL, "producer: %s", err);
    return rk;
}

static void produce_one(rd_kafka_t *rk, const char *topic, const char *key, const char *body,
                        rd_kafka_headers_t *hs, int64_t ts_ms)
{
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
        RD_KAFKA_V_VALUE((void *)body, strlen(body)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(hs), RD_KAFKA_V_TIMESTAMP(ts_ms), RD_KAFKA_V_END);
    SBT_CHECK_MSG(e == 0, "produce: %s", rd_kafka_err2str(e));
}

static void producer_done(rd_kafka_t *rk, const int *failed)
{
    SBT_CHECK(rd_kafka_flush(rk, 30000) == 0);
    SBT_CHECK_MSG(*failed == 0, "%d messages not delivered", *failed);
    rd_kafka_destroy(rk);
}

/* Produces the events, with an event-type header when type_header is not NULL, and two test
 * headers: a binary one and one that is null on every other message. */
static void produce_events(const char *topic, const kt_events_t *ev, const char *type_header)
{
    int failed = 0;
    rd_kafka_t *rk = producer(&failed);
    for (int i = 0; i < ev->n; i++) {
        rd_kafka_headers_t *hs = rd_kafka_headers_new(3);
        if (type_header)
            rd_kafka_header_add(hs, "event-type", -1, type_header, -1);
        rd_kafka_header_add(hs, "x-test-bin", -1, "\xff\x00\x01\xfe", 4);
        rd_kafka_header_add(hs, "x-test-maybe", -1, i % 2 ? NULL : "v", i % 2 ? 0 : 1);
        produce_one(rk, topic, ev->keys[i], ev->bodies[i], hs, 0);
    }
    producer_done(rk, &failed);
}

/* A consumer handle of `group` that never joins it: for committed offsets only. */
static rd_kafka_t *offsets_client(const char *group)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    SBT_CHECK_MSG(rk != NULL, "consumer: %s", err);
    return rk;
}

/* The sum of the committed offsets of the client's group on partitions 0..np-1 of topic
 * (the topic's low watermark is 0: it is new); -1 on error. */
static long committed_sum(rd_kafka_t *rk, const char *topic, int np)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
    for (int i = 0; i < np; i++)
        rd_kafka_topic_partition_list_add(l, topic, i);
    long sum = 0;
    if (rd_kafka_committed(rk, l, 5000) != 0)
        sum = -1;
    for (int i = 0; i < l->cnt && sum >= 0; i++)
        if (l->elems[i].err)
            sum = -1;
        else if (l->elems[i].offset > 0)
            sum += (long)l->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(l);
    return sum;
}

/* Kills what still runs, deletes the topics and groups and the files. */
static void cleanup(void)
{
    for (size_t i = 0; i < 4; i++)
        if (cl.pids[i] > 0)
            sbt_stop(cl.pids[i], SIGKILL, 10000);
    if (brokers) {
        sbt_kafka_delete_topics(brokers, (const char *const *)cl.topics, cl.nt);
        sbt_kafka_delete_groups(brokers, (const char *const *)cl.groups, cl.ng);
    }
    for (size_t i = 0; i < cl.nt; i++)
        free(cl.topics[i]);
    for (size_t i = 0; i < cl.ng; i++)
        free(cl.groups[i]);
    for (size_t i = 0; i < cl.nf; i++) {
        unlink(cl.files[i]);
        free(cl.files[i]);
    }
}

static char *dup_fmt(const char *a, const char *b)
{
    char *s = malloc(strlen(a) + strlen(b) + 1);
    SBT_CHECK(s != NULL);
    strcpy(s, a);
    strcat(s, b);
    return s;
}

/* ---- time -------------------------------------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* RFC 3339, UTC, milliseconds. */
static void rfc3339(int64_t ms, char *buf, size_t n)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, n, "%s.%03dZ", date, (int)(ms % 1000));
}

/* Waits until stats on cfg counts `want` dead letters (the consumer creates the DLQ topic
 * when it starts: until then stats fails). */
static void wait_dead_letters(const char *cfg, long want, const char *log)
{
    long n = 0;
    for (int i = 0; i < 240 && n < want; i++) {
        if (i)
            usleep(250 * 1000);
        if (dlq(cfg, (const char *[]){"stats", "--json", NULL}) != 0)
            continue;
        json_t *j = json_load_file(out_path, 0, NULL);
        n = j ? (long)json_integer_value(json_object_get(j, "total")) : 0;
        json_decref(j);
    }
    if (n != want)
        kt_dump_log(log);
    SBT_CHECK_MSG(n == want, "%ld dead letters, want %ld", n, want);
}

/* ---- the parts --------------------------------------------------------------------------- */

static void check_filters(const char *cfg, const kt_events_t *ev, const char *t_mid)
{
    idset_t want = {0};
    /* --type: exact (a body-only type and a header type), wildcards, repeated. */
    groups(&want, ev, "A");
    expect_list(cfg, (const char *[]){"--type", "Order.Created", NULL}, &want);
    groups(&want, ev, "C");
    expect_list(cfg, (const char *[]){"--type", "Order.Cancelled", NULL}, &want);
    groups(&want, ev, "AC");
    expect_list(cfg, (const char *[]){"--type", "Order.*", NULL}, &want);
    groups(&want, ev, "BD");
    expect_list(cfg, (const char *[]){"--type", "Payment.#", NULL}, &want);
    groups(&want, ev, "B");
    expect_list(cfg, (const char *[]){"--type", "*.*.Declined", NULL}, &want);
    groups(&want, ev, "AD");
    expect_list(cfg, (const char *[]){"--type", "#.Created", "--type", "Payment.Refunded", NULL},
                &want);
    groups(&want, ev, "");
    expect_list(cfg, (const char *[]){"--type", "Order", NULL}, &want);
    /* --reason */
    groups(&want, ev, "C");
    expect_list(cfg, (const char *[]){"--reason", "max-attempts", NULL}, &want);
    groups(&want, ev, "ABD");
    expect_list(cfg, (const char *[]){"--reason", "rejected", NULL}, &want);
    groups(&want, ev, "ABCD");
    expect_list(cfg, (const char *[]){"--reason", "timeout,max-attempts, rejected", NULL}, &want);
    groups(&want, ev, "");
    expect_list(cfg, (const char *[]){"--reason", "decode", NULL}, &want);
    /* --error: POSIX ERE, unanchored */
    groups(&want, ev, "BD");
    expect_list(cfg, (const char *[]){"--error", "^card declined", NULL}, &want);
    groups(&want, ev, "C");
    expect_list(cfg, (const char *[]){"--error", "gave up after [0-9]+ attempts: .*locked$", NULL},
                &want);
    groups(&want, ev, "AC");
    expect_list(cfg, (const char *[]){"--error", "total|inventory", NULL}, &want);
    /* --handler */
    groups(&want, ev, "BD");
    expect_list(cfg, (const char *[]){"--handler", "pay_bad", NULL}, &want);
    groups(&want, ev, "AC");
    expect_list(cfg, (const char *[]){"--handler", "orders_bad,cancel_bad", NULL}, &want);
    groups(&want, ev, "");
    expect_list(cfg, (const char *[]){"--handler", "rec", NULL}, &want);
    /* --since / --until around T_MID, and relative times */
    groups(&want, ev, "CD");
    expect_list(cfg, (const char *[]){"--since", t_mid, NULL}, &want);
    groups(&want, ev, "AB");
    expect_list(cfg, (const char *[]){"--until", t_mid, NULL}, &want);
    groups(&want, ev, "ABCD");
    expect_list(cfg, (const char *[]){"--since", "10m", NULL}, &want);
    groups(&want, ev, "");
    expect_list(cfg, (const char *[]){"--until", "10m", NULL}, &want);
    /* combinations */
    groups(&want, ev, "D");
    expect_list(cfg, (const char *[]){"--reason", "rejected", "--since", t_mid, NULL}, &want);
    groups(&want, ev, "B");
    expect_list(cfg, (const char *[]){"--type", "Payment.#", "--until", t_mid, NULL}, &want);
    groups(&want, ev, "A");
    expect_list(cfg, (const char *[]){"--handler", "orders_bad,pay_bad", "--error", "total", NULL},
                &want);
    /* --id */
    idset_free(&want);
    idset_add(&want, ev[1].ids[2]);
    expect_list(cfg, (const char *[]){"--id", ev[1].ids[2], NULL}, &want);
    idset_free(&want);
    idset_add(&want, ev[0].ids[0]);
    expect_list(cfg, (const char *[]){"--id", ev[0].ids[0], NULL}, &want);
    idset_free(&want);
    expect_list(cfg, (const char *[]){"--id", ev[0].ids[0], "--type", "Payment.#", NULL}, &want);
    /* --limit: that many distinct dead letters, of those selected */
    idset_t all = {0}, got = {0};
    groups(&all, ev, "ABCD");
    dlq_ok(cfg, (const char *[]){"list", "--json", "--limit", "5", NULL});
    ids_of_file(out_path, &got);
    SBT_CHECK_MSG(got.n == 5, "--limit 5 listed %zu", got.n);
    for (size_t i = 0; i < got.n; i++)
        SBT_CHECK_MSG(idset_has(&all, got.v[i]), "--limit 5 listed %s", got.v[i]);
    idset_free(&got);
    groups(&all, ev, "AC");
    dlq_ok(cfg, (const char *[]){"list", "--json", "--type", "Order.*", "--limit", "2", NULL});
    ids_of_file(out_path, &got);
    SBT_CHECK_MSG(got.n == 2, "--type Order.* --limit 2 listed %zu", got.n);
    for (size_t i = 0; i < got.n; i++)
        SBT_CHECK_MSG(idset_has(&all, got.v[i]), "--type Order.* --limit 2 listed %s", got.v[i]);
    idset_free(&got);
    idset_free(&all);
    printf("ok: --limit 5 and --type Order.* --limit 2\n");
    /* show ID */
    dlq_ok(cfg, (const char *[]){"show", ev[3].ids[1], NULL});
    SBT_CHECK(sbt_grep(out_path, ev[3].ids[1]) > 0);
    SBT_CHECK(sbt_grep(out_path, "card declined by issuer") == 1);
    SBT_CHECK(dlq(cfg, (const char *[]){"show", "no-such-id", NULL}) == 1);
    idset_free(&want);

    /* stats counts the types the consumer routed by, body-only ones included. */
    json_t *j = stats(cfg, NULL);
    json_t *by_type = json_object_get(j, "by_type"), *by_reason = json_object_get(j, "by_reason");
    json_t *by_handler = json_object_get(j, "by_handler");
    SBT_CHECK(json_integer_value(json_object_get(j, "total")) == 12);
    SBT_CHECK(json_integer_value(json_object_get(by_type, "Order.Created")) == 4);
    SBT_CHECK(json_integer_value(json_object_get(by_type, "Payment.Card.Declined")) == 3);
    SBT_CHECK(json_integer_value(json_object_get(by_type, "Order.Cancelled")) == 3);
    SBT_CHECK(json_integer_value(json_object_get(by_type, "Payment.Refunded")) == 2);
    SBT_CHECK(json_integer_value(json_object_get(by_reason, "rejected")) == 9);
    SBT_CHECK(json_integer_value(json_object_get(by_reason, "max-attempts")) == 3);
    SBT_CHECK(json_integer_value(json_object_get(by_handler, "pay_bad")) == 5);
    SBT_CHECK(json_integer_value(json_object_get(by_handler, "orders_bad")) == 4);
    SBT_CHECK(json_integer_value(json_object_get(by_handler, "cancel_bad")) == 3);
    json_decref(j);
    SBT_CHECK(stats_total(cfg, (const char *[]){"--since", t_mid, NULL}) == 5);
    printf("ok: stats counts by type (body-only types too), reason and handler\n");
}

/* Hand-made dead letters on seek_topic (one partition), with Kafka timestamps set by the
 * test: --since seeks past the old ones and loses no match. */
static void check_seek(const char *cfg, const char *seek_topic, const char *run)
{
    int64_t now = wall_ms();
    struct {
        const char *name;
        int64_t ts, failed_at;
        bool match; /* by --since 45m */
    } recs[] = {
        {"old-1", now - 3 * 3600000LL, now - 3 * 3600000LL, false},
        {"old-2", now - 3 * 3600000LL + 1000, now - 3 * 3600000LL + 1000, false},
        /* Its timestamp lags its x-sb-failed-at by 10 minutes (a skewed clock). */
        {"skewed", now - 50 * 60000LL, now - 40 * 60000LL, true},
        {"recent", now - 1000, now - 60000LL, true},
        /* Imported: stamped now, failed long ago. */
        {"imported", now, now - 2 * 3600000LL, false},
    };
    enum { NR = sizeof recs / sizeof recs[0] };
    int failed = 0;
    rd_kafka_t *rk = producer(&failed);
    idset_t want = {0};
    for (int i = 0; i < NR; i++) {
        char id[160], body[256], at[40];
        snprintf(id, sizeof id, "%s-%s", run, recs[i].name);
        snprintf(body, sizeof body, "{\"Id\":\"%s\",\"EventType\":\"Seek.Test\"}", id);
        rfc3339(recs[i].failed_at, at, sizeof at);
        rd_kafka_headers_t *hs = rd_kafka_headers_new(4);
        rd_kafka_header_add(hs, "x-sb-reason", -1, "rejected", -1);
        rd_kafka_header_add(hs, "x-sb-error", -1, "seek test", -1);
        rd_kafka_header_add(hs, "x-sb-failed-at", -1, at, -1);
        produce_one(rk, seek_topic, "k", body, hs, recs[i].ts);
        if (recs[i].match)
            idset_add(&want, id);
    }
    producer_done(rk, &failed);

    /* Does the topic keep CreateTime? (A LogAppendTime broker stamps everything now.) */
    dlq_ok(cfg, (const char *[]){"export", "--queue", seek_topic, "--out", "-", NULL});
    json_error_t e;
    FILE *f = fopen(out_path, "r");
    SBT_CHECK(f != NULL);
    json_t *first = json_loadf(f, JSON_DISABLE_EOF_CHECK, &e);
    fclose(f);
    SBT_CHECK_MSG(first != NULL, "export: %s", e.text);
    int64_t ts0 = (int64_t)json_integer_value(json_object_get(first, "timestamp_ms"));
    json_decref(first);
    bool create_time = ts0 == recs[0].ts;

    expect_list(cfg, (const char *[]){"--queue", seek_topic, "--since", "45m", NULL}, &want);
    long n = scanned();
    if (create_time) {
        /* Seeks to 45m + 1h of slack before now: skips the two 3-hour-old records. */
        SBT_CHECK_MSG(n == NR - 2, "--since 45m scanned %ld, want %d", n, NR - 2);
    } else {
        printf("note: %s stamps LogAppendTime; the seek cannot skip anything\n", seek_topic);
    }
    SBT_CHECK(stats_total(cfg, (const char *[]){"--queue", seek_topic, "--since", "45m", NULL}) ==
              2);
    /* A dry run is read-only: it seeks too, and moves nothing. */
    dlq_ok(cfg,
           (const char *[]){"purge", "--queue", seek_topic, "--since", "45m", "--dry-run", NULL});
    SBT_CHECK(sbt_grep(out_path, "would purge") == 2);
    SBT_CHECK(stats_total(cfg, (const char *[]){"--queue", seek_topic, NULL}) == NR);
    /* Without --since everything is read. */
    groups(&want, NULL, "");
    expect_list(cfg, (const char *[]){"--queue", seek_topic, "--until", "4h", NULL}, &want);
    SBT_CHECK_MSG(scanned() == NR, "--until 4h scanned %ld, want %d", scanned(), NR);
    idset_free(&want);
    printf("ok: --since seeks by timestamp%s and loses no match\n",
           create_time ? " (the old records were not read)" : "");
}

typedef struct rec3 {
    json_t *key, *body, *headers;
} rec3_t;

/* id -> (key, body, headers) of an export file, in set order. */
static void load_export(const char *path, idset_t *ids, rec3_t *recs)
{
    ids_of_file(path, ids);
    FILE *f = fopen(path, "r");
    SBT_CHECK(f != NULL);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *rec = json_loads(line, 0, NULL), *doc = NULL;
        const char *id = record_id(rec, &doc);
        char **hit = bsearch(&id, ids->v, ids->n, sizeof ids->v[0], cmp_str);
        SBT_CHECK(hit != NULL);
        rec3_t *r = &recs[hit - ids->v];
        r->key = json_incref(json_object_get(rec, "key"));
        r->body = json_incref(json_object_get(rec, "body"));
        r->headers = json_incref(json_object_get(rec, "headers"));
        json_decref(doc);
        json_decref(rec);
    }
    free(line);
    fclose(f);
}

static void check_export_import(const char *cfg, const char *import_topic, const char *exp1,
                                const char *exp2)
{
    dlq_ok(cfg, (const char *[]){"export", "--out", exp1, NULL});
    SBT_CHECK(sbt_count_lines(exp1) == 12);
    SBT_CHECK_MSG(sbt_grep(exp1, "[\"x-test-bin\",\"K\",{\"b64\":\"/wAB/g==\"}]") == 12,
                  "the binary header is not exported as base64");
    dlq_ok(cfg, (const char *[]){"import", exp1, "--queue", import_topic, NULL});
    SBT_CHECK(sbt_grep(err_path, "12 imported, 0 failed") == 1);
    dlq_ok(cfg, (const char *[]){"export", "--queue", import_topic, "--out", exp2, NULL});
    SBT_CHECK(sbt_count_lines(exp2) == 12);

    idset_t ids1 = {0}, ids2 = {0};
    rec3_t r1[64] = {{0}}, r2[64] = {{0}};
    load_export(exp1, &ids1, r1);
    load_export(exp2, &ids2, r2);
    SBT_CHECK(ids1.n == 12 && ids2.n == 12);
    for (size_t i = 0; i < ids1.n; i++) {
        SBT_CHECK_MSG(strcmp(ids1.v[i], ids2.v[i]) == 0, "id %s vs %s", ids1.v[i], ids2.v[i]);
        SBT_CHECK_MSG(r1[i].key && json_equal(r1[i].key, r2[i].key), "%s: key differs", ids1.v[i]);
        SBT_CHECK_MSG(json_equal(r1[i].body, r2[i].body), "%s: body differs", ids1.v[i]);
        SBT_CHECK_MSG(r1[i].headers && json_equal(r1[i].headers, r2[i].headers),
                      "%s: headers differ", ids1.v[i]);
        json_decref(r1[i].key);
        json_decref(r1[i].body);
        json_decref(r1[i].headers);
        json_decref(r2[i].key);
        json_decref(r2[i].body);
        json_decref(r2[i].headers);
    }
    idset_free(&ids1);
    idset_free(&ids2);
    /* The import is a DLQ like the other: filters work on it. */
    SBT_CHECK(stats_total(
                  cfg, (const char *[]){"--queue", import_topic, "--type", "Order.*", NULL}) == 7);
    printf("ok: export -> import -> export: keys, bodies and headers byte-identical\n");
}

static void check_interrupted_replay(const char *cfg_ok, const char *dlq_topic, const char *group,
                                     const kt_events_t *ev, const char *ledger, const char *log)
{
    pid_t consumer = cl.pids[1] = kt_run(cfg_ok, log);
    char replay_group[256];
    snprintf(replay_group, sizeof replay_group, "%s.dlq-replay", group);
    rd_kafka_t *oc = offsets_client(replay_group);
    SBT_CHECK(committed_sum(oc, dlq_topic, 2) == 0);

    /* Slow: one record every 500 ms, so the kill lands while it waits for the next. */
    const char *args[] = {"dlq", "-c", cfg_ok, "replay", "--rate", "2/s", NULL};
    pid_t rp = cl.pids[2] = sbt_spawn_switchboard(args, NULL, log);
    long moved = 0;
    uint64_t deadline = sbt_now_ms() + 60000;
    while ((moved = committed_sum(oc, dlq_topic, 2)) < 3 && sbt_now_ms() < deadline)
        usleep(5 * 1000);
    kill(rp, SIGKILL);
    int st = sbt_stop(rp, 0, 10000);
    cl.pids[2] = 0;
    SBT_CHECK_MSG(moved >= 3, "replay committed %ld records in 60 s", moved);
    SBT_CHECK_MSG(st == 128 + SIGKILL, "replay exited %d before it was killed", st);
    moved = committed_sum(oc, dlq_topic, 2);
    SBT_CHECK_MSG(moved >= 3 && moved < 12, "interrupted replay moved %ld", moved);
    SBT_CHECK(stats_total(cfg_ok, NULL) == 12 - moved);
    printf("ok: replay --rate 2/s killed after %ld of 12\n", moved);

    dlq_ok(cfg_ok, (const char *[]){"replay", NULL});
    SBT_CHECK_MSG(sbt_grep(err_path, ", 0 failed") == 1, "second replay failed");
    SBT_CHECK(committed_sum(oc, dlq_topic, 2) == 12);
    bool ok = sbt_wait_lines(ledger, 12, 60000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "%zu of 12 replayed events handled", sbt_count_lines(ledger));
    usleep(1500 * 1000); /* a duplicate would show up now */
    const char *ids[12];
    size_t k = 0;
    for (int g = 0; g < 4; g++)
        for (int i = 0; i < ev[g].n; i++)
            ids[k++] = ev[g].ids[i];
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, ids, k, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dups == 0 && unexpected == 0,
                  "ledger: %zu missing, %zu duplicated, %zu unexpected", missing, dups, unexpected);
    SBT_CHECK(stats_total(cfg_ok, NULL) == 0);
    rd_kafka_destroy(oc);
    SBT_CHECK(sbt_stop(consumer, SIGTERM, 30000) == 0);
    cl.pids[1] = 0;
    printf("ok: the resumed replay sent the other %ld; each of 12 ids handled exactly once, "
           "stats counts 0\n",
           12 - moved);
}

/* ---- admin replay jobs ------------------------------------------------------------------ */

#define TOKEN "dlqfk-admin-token"

static int admin_port;

/* One HTTP/1.1 request to the admin port (Connection: close): the status; the body in
 * `body_out` (static storage, valid until the next call). -1 when nothing listens. */
static int http(const char *method, const char *path, const char *body, const char **body_out)
{
    static char *buf;
    free(buf);
    int st = sbt_http(admin_port, method, path, TOKEN, body, &buf);
    *body_out = buf ? buf : "";
    return st;
}

/* POST /replay `req`, wait until the job is no longer running; its final document. */
static json_t *admin_job(const char *req)
{
    const char *body;
    int st = http("POST", "/replay", req, &body);
    SBT_CHECK_MSG(st == 202, "POST /replay %s: %d %s", req, st, body);
    json_t *j = json_loads(body, 0, NULL);
    SBT_CHECK(j != NULL && json_string_value(json_object_get(j, "job")));
    char path[128];
    snprintf(path, sizeof path, "/jobs/%s", json_string_value(json_object_get(j, "job")));
    json_decref(j);
    for (int i = 0; i < 600; i++) {
        st = http("GET", path, NULL, &body);
        SBT_CHECK_MSG(st == 200, "GET %s: %d %s", path, st, body);
        j = json_loads(body, 0, NULL);
        SBT_CHECK(j != NULL);
        const char *state = json_string_value(json_object_get(j, "state"));
        SBT_CHECK(state != NULL);
        if (strcmp(state, "running"))
            return j;
        json_decref(j);
        usleep(100 * 1000);
    }
    SBT_CHECK_MSG(false, "job %s still running after 60 s", path);
    return NULL;
}

/* An admin replay job's "type" filter sees the type the consumer routes by, a body member
 * (transport.kafka.event_type_field) included, as `dlq --type` does. With the field set to
 * TargetSystem, groups A and D (no event-type header) are of type "DataWarehouse". */
static void check_admin_type(const char *topic, const char *group, const char *ledger,
                             const char *log, const kt_events_t *ev)
{
    admin_port = sbt_free_port();
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "service: {name: sbt-dlqfk-admin, shutdown_timeout: 20s}\n"
             "log: {level: info, format: text}\n"
             "admin: {listen: \"127.0.0.1:%d\", token: \"" TOKEN "\"}\n"
             "transport:\n"
             "  kind: kafka\n"
             "  kafka:\n"
             "    brokers: \"%s\"\n"
             "    group_id: %s\n"
             "    topics: [%s]\n"
             "    event_type_field: TargetSystem\n"
             "handlers:\n"
             "  - name: rec\n"
             "    module: record\n"
             "    bind: [\"#\"]\n"
             "    config: {path: %s}\n"
             "idempotency: {store: none}\n",
             admin_port, brokers, group, topic, ledger);
    char *cfg = track_file(sbt_write_temp(yaml, ".yaml"));
    cl.pids[0] = kt_run(cfg, log);
    const char *body;
    int st = -1;
    for (int i = 0; i < 300 && (st = http("GET", "/healthz", NULL, &body)) != 200; i++)
        usleep(100 * 1000);
    if (st != 200)
        kt_dump_log(log);
    SBT_CHECK_MSG(st == 200, "the admin server did not come up (%d)", st);
    static const struct {
        const char *req;
        long done;
    } jobs[] = {
        {"{\"type\":\"DataWarehouse\",\"dry_run\":true}", 6},
        {"{\"type\":\"Payment.#\",\"dry_run\":true}", 3},
        {"{\"type\":\"Order.Created\",\"dry_run\":true}", 0},
    };
    for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
        json_t *j = admin_job(jobs[i].req);
        const char *state = json_string_value(json_object_get(j, "state"));
        long done = (long)json_integer_value(json_object_get(j, "done"));
        long skipped = (long)json_integer_value(json_object_get(j, "skipped"));
        char *doc = json_dumps(j, JSON_COMPACT);
        SBT_CHECK_MSG(!strcmp(state, "done") && done == jobs[i].done && skipped == 12 - done,
                      "job %s: %s", jobs[i].req, doc);
        free(doc);
        json_decref(j);
        printf("ok: admin job %s: done %ld, skipped %ld\n", jobs[i].req, done, skipped);
    }
    SBT_CHECK(sbt_stop(cl.pids[0], SIGTERM, 30000) == 0);
    cl.pids[0] = 0;
    SBT_CHECK(sbt_count_lines(ledger) == 0);
    /* The CLI on the same config agrees. */
    idset_t want = {0};
    groups(&want, ev, "AD");
    expect_list(cfg, (const char *[]){"--type", "DataWarehouse", NULL}, &want);
    idset_free(&want);
}

/* The committed offset of `group` on partition 0 of topic, and its metadata in md. */
static int64_t committed_meta(rd_kafka_t *rk, const char *topic, char *md, size_t mdsize)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0);
    SBT_CHECK(rd_kafka_committed(rk, l, 5000) == 0 && !l->elems[0].err);
    int64_t off = l->elems[0].offset;
    size_t n = l->elems[0].metadata_size < mdsize - 1 ? l->elems[0].metadata_size : mdsize - 1;
    if (n)
        memcpy(md, l->elems[0].metadata, n);
    md[n] = '\0';
    rd_kafka_topic_partition_list_destroy(l);
    return off;
}

/* "N <word>" in the summary line on stderr ("7 replayed"), or -1. */
static long summary_count(const char *word)
{
    return sbt_dlq_summary_count(err_path, word);
}

/* Hand-made dead letters of two types interleaved in the one partition of <itopic>.dlq. */
static void check_interleaved(const char *cfg, const char *itopic, const char *igroup,
                              const char *ledger, const char *log, const char *run)
{
    static const char pattern[] = "BAABABBABAABBA"; /* offsets 0..13 */
    enum { NR = sizeof pattern - 1 };
    char dlq_topic[256], replay_group[256];
    snprintf(dlq_topic, sizeof dlq_topic, "%s.dlq", itopic);
    snprintf(replay_group, sizeof replay_group, "%s.dlq-replay", igroup);
    idset_t as = {0}, bs = {0};
    char ids[NR][160];
    const char *a_ids[NR];
    size_t na = 0;
    char at[40];
    rfc3339(wall_ms(), at, sizeof at);
    int failed = 0;
    rd_kafka_t *rk = producer(&failed);
    for (int i = 0; i < NR; i++) {
        const char *type = pattern[i] == 'A' ? "Interleaved.Alpha" : "Interleaved.Beta";
        char body[256];
        snprintf(ids[i], sizeof ids[i], "%s-%c%d", run, pattern[i], i);
        snprintf(body, sizeof body, "{\"Id\":\"%s\",\"EventType\":\"%s\"}", ids[i], type);
        rd_kafka_headers_t *hs = rd_kafka_headers_new(6);
        rd_kafka_header_add(hs, "event-type", -1, type, -1);
        rd_kafka_header_add(hs, "x-sb-reason", -1, "rejected", -1);
        rd_kafka_header_add(hs, "x-sb-error", -1, "interleaved test", -1);
        rd_kafka_header_add(hs, "x-sb-failed-at", -1, at, -1);
        rd_kafka_header_add(hs, "x-sb-original-topic", -1, itopic, -1);
        produce_one(rk, dlq_topic, "k", body, hs, 0);
        if (pattern[i] == 'A') {
            idset_add(&as, ids[i]);
            a_ids[na++] = ids[i];
        } else {
            idset_add(&bs, ids[i]);
        }
    }
    producer_done(rk, &failed);
    idset_t all = {0};
    for (int i = 0; i < NR; i++)
        idset_add(&all, ids[i]);
    expect_list(cfg, (const char *[]){NULL}, &all);
    idset_free(&all);

    /* 1. replay --type A, with a consumer that records what it handles. */
    cl.pids[3] = kt_run(cfg, log);
    dlq_ok(cfg, (const char *[]){"replay", "--type", "Interleaved.Alpha", NULL});
    SBT_CHECK_MSG(summary_count("replayed") == (long)na && summary_count("failed") == 0,
                  "replay --type A: %ld replayed, %ld failed", summary_count("replayed"),
                  summary_count("failed"));
    bool ok = sbt_wait_lines(ledger, na, 60000);
    if (!ok)
        kt_dump_log(log);
    SBT_CHECK_MSG(ok, "%zu of %zu replayed events handled", sbt_count_lines(ledger), na);
    /* The offset stays before the first B; the As moved past it are in the metadata. */
    rd_kafka_t *oc = offsets_client(replay_group);
    char md[8192];
    int64_t off = committed_meta(oc, dlq_topic, md, sizeof md);
    SBT_CHECK_MSG(off == 0 && strcmp(md, "sbdlq1:0:1+2,1,2,1+2,2") == 0,
                  "committed %lld with metadata \"%s\"", (long long)off, md);
    printf("ok: replay --type A moved %zu past kept Bs: offset 0, metadata \"%s\"\n", na, md);

    /* 2. list and stats show only the Bs. */
    expect_list(cfg, (const char *[]){NULL}, &bs);
    SBT_CHECK_MSG(scanned() == (long)bs.n, "list scanned %ld, want %zu", scanned(), bs.n);
    json_t *j = stats(cfg, NULL);
    json_t *by_type = json_object_get(j, "by_type");
    SBT_CHECK(json_integer_value(json_object_get(j, "total")) == (json_int_t)bs.n);
    SBT_CHECK(json_integer_value(json_object_get(by_type, "Interleaved.Beta")) == (json_int_t)bs.n);
    SBT_CHECK(json_object_get(by_type, "Interleaved.Alpha") == NULL);
    json_decref(j);
    idset_t none = {0};
    expect_list(cfg, (const char *[]){"--type", "Interleaved.Alpha", NULL}, &none);
    dlq_ok(cfg, (const char *[]){"export", "--out", "-", NULL});
    SBT_CHECK(sbt_count_lines(out_path) == bs.n);
    SBT_CHECK(dlq(cfg, (const char *[]){"show", a_ids[0], NULL}) == 1);
    printf("ok: list, stats, export and show see only the %zu Bs\n", bs.n);

    /* 3. A second replay --type A moves nothing. */
    dlq_ok(cfg, (const char *[]){"replay", "--type", "Interleaved.Alpha", NULL});
    SBT_CHECK_MSG(summary_count("selected") == 0 && summary_count("replayed") == 0,
                  "second replay --type A: %ld selected, %ld replayed", summary_count("selected"),
                  summary_count("replayed"));
    SBT_CHECK(committed_meta(oc, dlq_topic, md, sizeof md) == 0);
    printf("ok: a second replay --type A selects nothing\n");

    /* 4. purge with a filter, then list. */
    dlq_ok(cfg, (const char *[]){"purge", "--id", ids[3], NULL});
    SBT_CHECK_MSG(summary_count("purged") == 1, "purge --id: %ld purged", summary_count("purged"));
    idset_t rest = {0};
    for (size_t i = 0; i < bs.n; i++)
        if (strcmp(bs.v[i], ids[3]))
            idset_add(&rest, bs.v[i]);
    expect_list(cfg, (const char *[]){NULL}, &rest);
    SBT_CHECK(stats_total(cfg, NULL) == (long)rest.n);
    dlq_ok(cfg, (const char *[]){"purge", "--type", "Interleaved.Beta", NULL});
    if (summary_count("purged") != (long)rest.n)
        dump(err_path);
    SBT_CHECK_MSG(summary_count("purged") == (long)rest.n, "purge --type B: %ld purged, want %zu",
                  summary_count("purged"), rest.n);
    expect_list(cfg, (const char *[]){NULL}, &none);
    SBT_CHECK(stats_total(cfg, NULL) == 0);
    off = committed_meta(oc, dlq_topic, md, sizeof md);
    SBT_CHECK_MSG(off == NR && md[0] == '\0', "after purging all: offset %lld, metadata \"%s\"",
                  (long long)off, md);
    printf("ok: purge --id one B, then purge --type B: 0 left, offset %d, no metadata\n", NR);

    /* 5. A replay afterwards sends nothing; every A was handled exactly once. */
    dlq_ok(cfg, (const char *[]){"replay", NULL});
    SBT_CHECK_MSG(scanned() == 0, "the last replay scanned %ld", scanned());
    usleep(1500 * 1000); /* a duplicate would show up now */
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, a_ids, na, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dups == 0 && unexpected == 0,
                  "ledger: %zu missing, %zu duplicated, %zu unexpected", missing, dups, unexpected);
    rd_kafka_destroy(oc);
    SBT_CHECK(sbt_stop(cl.pids[3], SIGTERM, 30000) == 0);
    cl.pids[3] = 0;
    idset_free(&as);
    idset_free(&bs);
    idset_free(&rest);
    printf("ok: a replay afterwards sent nothing; each of %zu As handled exactly once\n", na);
}

int main(void)
{
    brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    atexit(cleanup);
    char *topic = sbt_unique_name("sbt-dlqfk");
    char *group = sbt_unique_name("sbt-dlqfk-g");
    char *import_topic = sbt_unique_name("sbt-dlqfk-imp");
    char *seek_topic = sbt_unique_name("sbt-dlqfk-seek");
    char *itopic = sbt_unique_name("sbt-dlqfk-il");
    char *igroup = sbt_unique_name("sbt-dlqfk-ilg");
    char *dlq_topic = dup_fmt(topic, ".dlq");
    /* The consumer creates <topic>.dlq and <topic>.retry; the dlq tool's group is
     * <group>.dlq-replay. */
    cl.topics[cl.nt++] = topic;
    cl.topics[cl.nt++] = dlq_topic;
    cl.topics[cl.nt++] = dup_fmt(topic, ".retry");
    cl.topics[cl.nt++] = import_topic;
    cl.topics[cl.nt++] = seek_topic;
    cl.topics[cl.nt++] = itopic;
    cl.topics[cl.nt++] = dup_fmt(itopic, ".dlq");
    cl.topics[cl.nt++] = dup_fmt(itopic, ".retry");
    cl.groups[cl.ng++] = group;
    cl.groups[cl.ng++] = dup_fmt(group, ".dlq-replay");
    cl.groups[cl.ng++] = igroup;
    cl.groups[cl.ng++] = dup_fmt(igroup, ".dlq-replay");
    char *run = sbt_unique_name("seek");
    char *ledger = track_file(sbt_unique_name("/tmp/sbt-dlqfk-ledger"));
    char *ledger2 = track_file(sbt_unique_name("/tmp/sbt-dlqfk-ledger2"));
    char *ledger3 = track_file(sbt_unique_name("/tmp/sbt-dlqfk-ledger3"));
    char *ledger4 = track_file(sbt_unique_name("/tmp/sbt-dlqfk-ledger4"));
    char *log = track_file(sbt_unique_name("/tmp/sbt-dlqfk-log"));
    char *exp1 = track_file(sbt_unique_name("/tmp/sbt-dlqfk-exp1"));
    char *exp2 = track_file(sbt_unique_name("/tmp/sbt-dlqfk-exp2"));
    out_path = track_file(sbt_unique_name("/tmp/sbt-dlqfk-out"));
    err_path = track_file(sbt_unique_name("/tmp/sbt-dlqfk-err"));
    SBT_CHECK(sbt_kafka_create_topic(brokers, topic, 2, 30000) == 0);
    SBT_CHECK(sbt_kafka_create_topic(brokers, import_topic, 2, 30000) == 0);
    SBT_CHECK(sbt_kafka_create_topic(brokers, seek_topic, 1, 30000) == 0);
    SBT_CHECK(sbt_kafka_create_topic(brokers, itopic, 1, 30000) == 0);
    SBT_CHECK(sbt_kafka_create_topic(brokers, cl.topics[cl.nt - 2], 1, 30000) == 0);

    kt_events_t ev[4];
    kt_events_make(&ev[0], 4, 3, "Order.Created");
    kt_events_make(&ev[1], 3, 3, "Payment.Card.Declined");
    kt_events_make(&ev[2], 3, 3, "Order.Cancelled");
    kt_events_make(&ev[3], 2, 3, "Payment.Refunded");
    char *cfg = track_file(kt_config(brokers, topic, group, ledger, NULL, HANDLERS, NULL));
    char *cfg_ok = track_file(kt_config(brokers, topic, group, ledger2, NULL, NULL, NULL));
    char *cfg_il = track_file(kt_config(brokers, itopic, igroup, ledger3, NULL, NULL, NULL));

    /* 1. Two batches of dead letters from a real consumer, T_MID between them. */
    cl.pids[0] = kt_run(cfg, log);
    produce_events(topic, &ev[0], NULL);
    produce_events(topic, &ev[1], "Payment.Card.Declined");
    wait_dead_letters(cfg, 7, log);
    /* Every dead letter of batch 1 is older than now; T_MID is the next whole second. */
    int64_t mid = (wall_ms() / 1000 + 1) * 1000;
    char t_mid[40];
    rfc3339(mid, t_mid, sizeof t_mid);
    while (wall_ms() < mid + 1000)
        usleep(50 * 1000);
    produce_events(topic, &ev[2], "Order.Cancelled");
    produce_events(topic, &ev[3], NULL);
    wait_dead_letters(cfg, 12, log);
    SBT_CHECK(sbt_stop(cl.pids[0], SIGTERM, 30000) == 0);
    cl.pids[0] = 0;
    printf("ok: 12 dead letters in two batches around %s\n", t_mid);

    /* 2. Filters. */
    check_filters(cfg, ev, t_mid);
    check_admin_type(topic, group, ledger4, log, ev);
    /* 3. The time seek. */
    check_seek(cfg, seek_topic, run);
    /* 4. Export, import, export. */
    check_export_import(cfg, import_topic, exp1, exp2);
    /* 5. An interrupted replay resumes without loss or duplicates. */
    check_interrupted_replay(cfg_ok, dlq_topic, group, ev, ledger2, log);
    /* 6. Filtered replay and purge where types interleave in one partition. */
    check_interleaved(cfg_il, itopic, igroup, ledger3, log, run);

    for (int i = 0; i < 4; i++)
        kt_events_free(&ev[i]);
    free(run);
    return 0; /* cleanup() deletes the topics, groups and files */
}
