/* Kafka claim-ahead (partition order with an idempotency store), on the real broker and the
 * real Redis: the transport hands up to 32 messages of a partition to the dispatcher before
 * their turn so that their claims share round trips, but handlers must still run strictly in
 * offset order per partition, each once, and a turn starts only after the previous message
 * finished (handlers succeeded, or it was settled: retry copy, dead letter, duplicate).
 *
 * Events go to explicit partitions of a 3-partition topic, each id naming its partition and
 * a per-partition sequence number. Mixed in: copies re-produced with the same Id right after
 * the original (inside the claim-ahead window: the claim is busy or done) and at the end of
 * the partition (done: duplicate), events a second handler (`fail`, times 1) retries through
 * <topic>.retry, and events a third one (`fail`, outcome reject) dead-letters. The `record`
 * handler runs first for every event, so its ledger shows the order in which turns were
 * given, the retried events included (record succeeds at attempt 1, and its claim makes the
 * retry copy a duplicate for it).
 *  1. One consumer until drained (both topics committed to their ends): every id exactly
 *     once in the ledger, and per partition in increasing sequence order; <topic>.dlq holds
 *     exactly the rejected events.
 *  2. The same with max_inflight 64 (so at most 32 messages wait for a turn), SIGKILLed
 *     mid-stream and restarted once the dead consumer's claims expired (so nothing is
 *     "busy": a busy claim sends the message through the retry topic, out of order by
 *     design): no id missing, repeats at most 32 * 3 + max_inflight and only of ids first
 *     handled before the kill, and first occurrences per partition in increasing order,
 *     except for near-copied ids: the busy copy's retry (on <topic>.retry, due 1 s later)
 *     may run before the original once the killed consumer's claim expired, by design.
 * Topics (with .retry and .dlq), the consumer groups and the Redis keys are deleted. */
#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "kafka_common.h"
#include "sbtest.h"

#define NPART 3
#define AHEAD 32 /* CLAIM_AHEAD in core/src/pipeline.c */

static const char *brokers, *redis_url;

/* ---- cleanup, also on a failed check ------------------------------------------------------- */

static struct {
    char *topics[16], *groups[4], *prefixes[4], *files[16];
    size_t nt, ng, np, nf;
    pid_t pid;
} cl;

static void redis_delete_prefix(const char *prefix);

static void cleanup(void)
{
    if (cl.pid > 0)
        sbt_stop(cl.pid, SIGKILL, 10000);
    cl.pid = 0;
    if (brokers) {
        sbt_kafka_delete_topics(brokers, (const char *const *)cl.topics, cl.nt);
        sbt_kafka_delete_groups(brokers, (const char *const *)cl.groups, cl.ng);
    }
    for (size_t i = 0; i < cl.np; i++)
        redis_delete_prefix(cl.prefixes[i]);
    bool keep = getenv("SB_TEST_KEEP") != NULL;
    for (size_t i = 0; i < cl.nf; i++) {
        if (keep)
            printf("kept %s\n", cl.files[i]);
        else
            unlink(cl.files[i]);
    }
    for (size_t i = 0; i < cl.nt; i++)
        free(cl.topics[i]);
    for (size_t i = 0; i < cl.ng; i++)
        free(cl.groups[i]);
    for (size_t i = 0; i < cl.np; i++)
        free(cl.prefixes[i]);
    for (size_t i = 0; i < cl.nf; i++)
        free(cl.files[i]);
    memset(&cl, 0, sizeof cl);
}

static char *own(char *s, char **arr, size_t *n, size_t cap)
{
    SBT_CHECK(s != NULL && *n < cap);
    arr[(*n)++] = s;
    return s;
}

static char *cat(const char *a, const char *b)
{
    char *s = malloc(strlen(a) + strlen(b) + 1);
    SBT_CHECK(s != NULL);
    strcpy(s, a);
    strcat(s, b);
    return s;
}

/* ---- a minimal Redis client: one EVAL returning an integer ------------------------------- */

static int redis_connect(void)
{
    char host[256] = "127.0.0.1", port[16] = "6379";
    const char *p = strstr(redis_url, "://");
    p = p ? p + 3 : redis_url;
    const char *at = strchr(p, '@');
    if (at)
        p = at + 1;
    size_t hl = strcspn(p, ":/");
    if (hl && hl < sizeof host)
        snprintf(host, sizeof host, "%.*s", (int)hl, p);
    if (p[hl] == ':')
        snprintf(port, sizeof port, "%.*s", (int)strcspn(p + hl + 1, "/"), p + hl + 1);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, port, &hints, &ai) != 0)
        return -1;
    int fd = socket(ai->ai_family, ai->ai_socktype, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* EVAL script 0 arg: the integer reply, or -1 (the reason on stderr). */
static long long redis_eval_int(const char *script, const char *arg)
{
    int fd = redis_connect();
    if (fd < 0) {
        fprintf(stderr, "redis: cannot connect to %s\n", redis_url);
        return -1;
    }
    size_t cap = strlen(script) + strlen(arg) + 128;
    char *cmd = malloc(cap);
    SBT_CHECK(cmd != NULL);
    int n = snprintf(cmd, cap, "*4\r\n$4\r\nEVAL\r\n$%zu\r\n%s\r\n$1\r\n0\r\n$%zu\r\n%s\r\n",
                     strlen(script), script, strlen(arg), arg);
    long long v = -1;
    if (write(fd, cmd, (size_t)n) == n) {
        char buf[512];
        size_t got = 0;
        while (got < sizeof buf - 1 && !memchr(buf, '\n', got)) {
            ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        buf[got] = '\0';
        if (buf[0] == ':')
            v = strtoll(buf + 1, NULL, 10);
        else
            fprintf(stderr, "redis: %s", buf);
    }
    free(cmd);
    close(fd);
    return v;
}

/* Keys under prefix that are not "done": claims held (or leases not yet expired). */
static long long redis_open_claims(const char *prefix)
{
    char *pat = cat(prefix, "*");
    long long n = redis_eval_int("local n = 0 "
                                 "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
                                 "if redis.call('GET', k) ~= 'done' then n = n + 1 end end "
                                 "return n",
                                 pat);
    free(pat);
    return n;
}

static long long redis_count(const char *prefix)
{
    char *pat = cat(prefix, "*");
    long long n = redis_eval_int("return #redis.call('KEYS', ARGV[1])", pat);
    free(pat);
    return n;
}

static void redis_delete_prefix(const char *prefix)
{
    char *pat = cat(prefix, "*");
    long long n = redis_eval_int("local ks = redis.call('KEYS', ARGV[1]) "
                                 "for _, k in ipairs(ks) do redis.call('DEL', k) end return #ks",
                                 pat);
    printf("redis: deleted %lld keys under %s\n", n, prefix);
    free(pat);
}

/* ---- Kafka offsets ----------------------------------------------------------------------- */

/* Messages of topic not yet committed by group (end offsets minus committed ones), or -1
 * when the broker does not answer (or the topic does not exist yet). *end gets the sum of
 * the end offsets. */
static long topic_lag(rd_kafka_t *rk, const char *topic, long *end)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const rd_kafka_metadata_t *md = NULL;
    long lag = -1;
    *end = 0;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR || !md ||
        md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0)
        goto out;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(NPART);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id);
    if (rd_kafka_committed(rk, l, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        lag = 0;
        for (int i = 0; i < l->cnt; i++) {
            int64_t lo, hi;
            if (l->elems[i].err || rd_kafka_query_watermark_offsets(
                                       rk, topic, l->elems[i].partition, &lo, &hi, 5000)) {
                lag = -1;
                break;
            }
            int64_t c = l->elems[i].offset >= 0 ? l->elems[i].offset : lo;
            lag += (long)(hi - c);
            *end += (long)hi;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return lag;
}

/* A handle for offset queries in group (never subscribes, so never joins it). */
static rd_kafka_t *offsets_client(const char *group)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof err);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    SBT_CHECK_MSG(rk != NULL, "kafka: %s", err);
    return rk;
}

/* ---- events ------------------------------------------------------------------------------ */

typedef struct events {
    char *run;
    int per_part;       /* distinct events per partition */
    char **msgs[NPART]; /* bodies as produced, per partition */
    int n_msgs[NPART];
    int n_ids, n_retry, n_reject, n_dups;
    char **ids; /* every distinct id */
} events_t;

static const char *ev_type(int seq)
{
    if (seq % 50 == 7)
        return "Ck.Retry";
    if (seq % 97 == 11)
        return "Ck.Reject";
    return "Ck.Plain";
}

static char *ev_body(const events_t *e, int p, int seq)
{
    char b[512];
    snprintf(b, sizeof b,
             "{\"Id\":\"%s-p%d-%06d\",\"EventType\":\"%s\","
             "\"CreationDate\":\"2026-12-01T10:00:00Z\",\"JobId\":\"job-%d-%d\","
             "\"SourceSystem\":\"CRM\",\"TargetSystem\":\"DataWarehouse\","
             "\"RecordsProcessed\":%d,\"Seq\":%d}",
             e->run, p, seq, ev_type(seq), p, seq, seq * 7, seq);
    char *s = strdup(b);
    SBT_CHECK(s != NULL);
    return s;
}

/* Is seq copied right behind its original (events_make)? */
static bool has_near_copy(int seq)
{
    return seq % 37 == 3 && !strcmp(ev_type(seq), "Ck.Plain");
}

/* per_part events per partition, with near and far copies of some plain ones. */
static void events_make(events_t *e, int per_part)
{
    memset(e, 0, sizeof *e);
    e->run = sbt_unique_name("ca");
    e->per_part = per_part;
    e->n_ids = NPART * per_part;
    e->ids = calloc((size_t)e->n_ids, sizeof *e->ids);
    SBT_CHECK(e->ids != NULL);
    for (int p = 0; p < NPART; p++) {
        e->msgs[p] = calloc((size_t)per_part * 2, sizeof *e->msgs[p]);
        SBT_CHECK(e->msgs[p] != NULL);
        for (int s = 0; s < per_part; s++) {
            char id[96];
            snprintf(id, sizeof id, "%s-p%d-%06d", e->run, p, s);
            SBT_CHECK((e->ids[p * per_part + s] = strdup(id)) != NULL);
            e->msgs[p][e->n_msgs[p]++] = ev_body(e, p, s);
            if (p == 0) {
                e->n_retry += !strcmp(ev_type(s), "Ck.Retry");
                e->n_reject += !strcmp(ev_type(s), "Ck.Reject");
            }
            /* a near copy: 2 behind, well inside the claim-ahead window */
            if (s % 37 == 5 && has_near_copy(s - 2)) {
                e->msgs[p][e->n_msgs[p]++] = ev_body(e, p, s - 2);
                e->n_dups++;
            }
        }
        for (int s = 0; s < per_part; s += 101) /* far copies, at the end */
            if (!strcmp(ev_type(s), "Ck.Plain")) {
                e->msgs[p][e->n_msgs[p]++] = ev_body(e, p, s);
                e->n_dups++;
            }
    }
    e->n_retry *= NPART;
    e->n_reject *= NPART;
}

static void events_free(events_t *e)
{
    for (int p = 0; p < NPART; p++) {
        for (int i = 0; i < e->n_msgs[p]; i++)
            free(e->msgs[p][i]);
        free(e->msgs[p]);
    }
    for (int i = 0; i < e->n_ids; i++)
        free(e->ids[i]);
    free(e->ids);
    free(e->run);
}

static void produce_all(const events_t *e, const char *topic)
{
    for (int p = 0; p < NPART; p++)
        SBT_CHECK(sbt_kafka_produce(brokers, topic, p, (const char *const *)e->msgs[p], NULL,
                                    e->n_msgs[p], 60000) == 0);
}

/* ---- the ledger --------------------------------------------------------------------------- */

typedef struct verdict {
    size_t lines, missing, unexpected, repeats, disorder, repeats_after_kill_only;
} verdict_t;

/* Reads the ledger: per id the count, and per partition whether first occurrences come in
 * increasing sequence. A repeat is fine only when the first line is before kill_line (0: no
 * kill, no repeat is fine at all; counted in repeats either way). */
static void scan(const events_t *e, const char *ledger, size_t kill_line, bool report, verdict_t *v)
{
    memset(v, 0, sizeof *v);
    int *seen = calloc((size_t)e->n_ids, sizeof *seen);
    size_t *first = calloc((size_t)e->n_ids, sizeof *first);
    SBT_CHECK(seen && first);
    int last[NPART];
    for (int p = 0; p < NPART; p++)
        last[p] = -1;
    FILE *f = fopen(ledger, "r");
    SBT_CHECK(f != NULL);
    char line[4096];
    size_t prefix_len = strlen(e->run);
    for (size_t lineno = 0; fgets(line, sizeof line, f); lineno++) {
        v->lines++;
        json_t *j = json_loads(line, 0, NULL);
        if (!j) {
            /* a line torn by the SIGKILL: its event is redone after the restart */
            char *lastj = line, *q;
            while ((q = strstr(lastj + 1, "{\"id\":")) != NULL)
                lastj = q;
            if (lastj != line)
                j = json_loads(lastj, 0, NULL);
        }
        char idbuf[160];
        const char *jid = j ? json_string_value(json_object_get(j, "id")) : NULL;
        const char *id = jid ? (snprintf(idbuf, sizeof idbuf, "%s", jid), idbuf) : NULL;
        json_decref(j);
        int p = -1, s = -1;
        if (!id || strncmp(id, e->run, prefix_len) != 0 ||
            sscanf(id + prefix_len, "-p%d-%d", &p, &s) != 2 || p < 0 || p >= NPART || s < 0 ||
            s >= e->per_part) {
            v->unexpected++;
            if (report)
                fprintf(stderr, "ledger line %zu: not ours: %s", lineno + 1, line);
            continue;
        }
        int k = p * e->per_part + s;
        if (seen[k]++) {
            v->repeats++;
            if (!kill_line || first[k] >= kill_line || lineno < kill_line) {
                v->repeats_after_kill_only++;
                if (report)
                    fprintf(stderr, "ledger line %zu repeats %s first seen at line %zu\n",
                            lineno + 1, id, first[k] + 1);
            }
        } else {
            first[k] = lineno;
            /* After a kill, the retry copy of a near duplicate (busy while the original held
             * the claim) may run first once the dead consumer's claim expired: by design. */
            if (kill_line && has_near_copy(s))
                continue;
            if (s <= last[p]) {
                if (v->disorder++ < 10 && report)
                    fprintf(stderr,
                            "ledger line %zu: partition %d seq %d handled after seq %d "
                            "(out of offset order)\n",
                            lineno + 1, p, s, last[p]);
            }
            if (s > last[p])
                last[p] = s;
        }
    }
    fclose(f);
    for (int k = 0; k < e->n_ids; k++)
        v->missing += seen[k] == 0;
    if (report && v->missing) {
        int shown = 0;
        for (int k = 0; k < e->n_ids && shown < 10; k++)
            if (!seen[k] && shown++ < 10)
                fprintf(stderr, "never handled: %s\n", e->ids[k]);
    }
    free(seen);
    free(first);
}

/* ---- one scenario ------------------------------------------------------------------------- */

typedef struct scen {
    char *topic, *retryt, *dlqt, *group, *prefix, *ledger, *log, *cfg;
} scen_t;

static void scen_setup(scen_t *sc, const char *tag, int max_inflight)
{
    sc->topic = own(sbt_unique_name(tag), cl.topics, &cl.nt, 16);
    sc->retryt = own(cat(sc->topic, ".retry"), cl.topics, &cl.nt, 16);
    sc->dlqt = own(cat(sc->topic, ".dlq"), cl.topics, &cl.nt, 16);
    sc->group = own(cat(sc->topic, "-g"), cl.groups, &cl.ng, 4);
    sc->prefix = own(cat("sbt:ca:", sc->topic), cl.prefixes, &cl.np, 4);
    sc->ledger = own(sbt_write_temp("", ".jsonl"), cl.files, &cl.nf, 16);
    sc->log = own(sbt_write_temp("", ".log"), cl.files, &cl.nf, 16);
    SBT_CHECK(sbt_kafka_create_topic(brokers, sc->topic, NPART, 30000) == 0);
    char y[4096];
    snprintf(y, sizeof y,
             "service: {name: sbt-claim-ahead, shutdown_timeout: 20s, max_inflight: %d}\n"
             "log: {level: info, format: text}\n"
             "admin: {listen: \"\"}\n"
             "transport:\n"
             "  kind: kafka\n"
             "  kafka:\n"
             "    brokers: \"%s\"\n"
             "    group_id: %s\n"
             "    topics: [%s]\n"
             "    concurrency: partition\n"
             "retry: {policy: fixed, base_delay: 200ms, max_attempts: 3, jitter: false}\n"
             "idempotency:\n"
             "  store: redis\n"
             "  redis: {url: \"%s\", prefix: \"%s\", lease: 1s, ttl: 1h}\n"
             "handlers:\n"
             "  - {name: rec, module: record, bind: [\"#\"], timeout: 1s,\n"
             "     config: {path: %s}}\n"
             "  - {name: flaky, module: fail, bind: [\"Ck.Retry\"], timeout: 1s,\n"
             "     config: {times: 1}}\n"
             "  - {name: broken, module: fail, bind: [\"Ck.Reject\"], timeout: 1s,\n"
             "     config: {outcome: reject, reason: \"rejected on purpose\"}}\n",
             max_inflight, brokers, sc->group, sc->topic, redis_url, sc->prefix, sc->ledger);
    sc->cfg = own(sbt_write_temp(y, ".yaml"), cl.files, &cl.nf, 16);
}

static pid_t scen_run(scen_t *sc)
{
    return cl.pid = kt_run(sc->cfg, sc->log);
}

/* Waits until every id is in the ledger, then until both topics are committed to their
 * ends (every retry copy consumed and settled) for a second; stops with SIGTERM. */
static void scen_finish(scen_t *sc, const events_t *e, size_t kill_line, int timeout_ms)
{
    verdict_t v = {.missing = (size_t)e->n_ids};
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    while (sbt_now_ms() < deadline) {
        if (sbt_count_lines(sc->ledger) >= (size_t)e->n_ids) {
            scan(e, sc->ledger, kill_line, false, &v);
            if (!v.missing)
                break;
        }
        usleep(200 * 1000);
    }
    if (v.missing) {
        scan(e, sc->ledger, kill_line, true, &v);
        kt_dump_log(sc->log);
    }
    SBT_CHECK_MSG(!v.missing, "%zu of %d ids never handled (ledger %s, log %s)", v.missing,
                  e->n_ids, sc->ledger, sc->log);
    rd_kafka_t *rk = offsets_client(sc->group);
    uint64_t quiet = 0;
    long lag = -1, rlag = -1, end, rend;
    while (sbt_now_ms() < deadline) {
        lag = topic_lag(rk, sc->topic, &end);
        rlag = topic_lag(rk, sc->retryt, &rend);
        if (lag == 0 && rlag == 0) {
            if (!quiet)
                quiet = sbt_now_ms();
            else if (sbt_now_ms() - quiet >= 1000)
                break;
        } else {
            quiet = 0;
        }
        usleep(200 * 1000);
    }
    rd_kafka_destroy(rk);
    if (lag != 0 || rlag != 0)
        kt_dump_log(sc->log);
    SBT_CHECK_MSG(lag == 0 && rlag == 0, "not drained: lag %ld on %s, %ld on %s (log %s)", lag,
                  sc->topic, rlag, sc->retryt, sc->log);
    printf("drained: %ld messages on %s, %ld retry copies on %s\n", end, sc->topic, rend,
           sc->retryt);
    SBT_CHECK_MSG(rend >= e->n_retry, "%ld retry copies for %d retried events", rend, e->n_retry);
    int st = sbt_stop(cl.pid, SIGTERM, 30000);
    cl.pid = 0;
    if (st != 0)
        kt_dump_log(sc->log);
    SBT_CHECK_MSG(st == 0, "switchboard exit status %d", st);
}

static long dlq_count(scen_t *sc)
{
    rd_kafka_t *rk = offsets_client(sc->group);
    long end = 0;
    topic_lag(rk, sc->dlqt, &end);
    rd_kafka_destroy(rk);
    return end;
}

/* 1. in order, once each, no kill */
static void steady(void)
{
    scen_t sc;
    scen_setup(&sc, "sbt-kca", 1000);
    events_t e;
    events_make(&e, 1000);
    produce_all(&e, sc.topic);
    printf("steady: %d events, %d copies, %d retried, %d rejected over %d partitions\n", e.n_ids,
           e.n_dups, e.n_retry, e.n_reject, NPART);
    uint64_t t0 = sbt_now_ms();
    scen_run(&sc);
    scen_finish(&sc, &e, 0, 180000);
    verdict_t v;
    scan(&e, sc.ledger, 0, true, &v);
    if (v.missing || v.unexpected || v.repeats || v.disorder)
        kt_dump_log(sc.log);
    SBT_CHECK_MSG(!v.missing && !v.unexpected && !v.repeats && !v.disorder,
                  "steady: %zu lines: %zu missing, %zu unexpected, %zu repeats, %zu out of "
                  "partition order (ledger %s)",
                  v.lines, v.missing, v.unexpected, v.repeats, v.disorder, sc.ledger);
    long dlq = dlq_count(&sc);
    SBT_CHECK_MSG(dlq == e.n_reject, "%ld dead letters for %d rejected events", dlq, e.n_reject);
    long long claims = redis_open_claims(sc.prefix);
    SBT_CHECK_MSG(claims == 0, "%lld claims left open in Redis", claims);
    printf("ok: steady: %zu ids once each, in offset order per partition; %ld dead letters; "
           "%lld keys done (%.1f s)\n",
           v.lines, dlq, redis_count(sc.prefix), (double)(sbt_now_ms() - t0) / 1000.0);
    events_free(&e);
}

static bool no_open_claims(void *ud)
{
    return redis_open_claims(ud) == 0;
}

/* 2. SIGKILL mid-stream, restart once the dead consumer's claims expired */
static void killed(void)
{
    enum { MAX_INFLIGHT = 64 };
    scen_t sc;
    scen_setup(&sc, "sbt-kcak", MAX_INFLIGHT);
    events_t e;
    events_make(&e, 3000);
    produce_all(&e, sc.topic);
    printf("killed: %d events, %d copies, %d retried, %d rejected over %d partitions\n", e.n_ids,
           e.n_dups, e.n_retry, e.n_reject, NPART);
    scen_run(&sc);
    bool got = sbt_wait_lines(sc.ledger, (size_t)e.n_ids / 6, 120000);
    if (!got)
        kt_dump_log(sc.log);
    SBT_CHECK_MSG(got, "no progress: %zu ledger lines", sbt_count_lines(sc.ledger));
    int st = sbt_stop(cl.pid, SIGKILL, 5000);
    cl.pid = 0;
    SBT_CHECK(st == 128 + SIGKILL);
    size_t at = sbt_count_lines(sc.ledger);
    printf("killed with %zu of %d ledger lines\n", at, e.n_ids);
    SBT_CHECK_MSG(at < (size_t)e.n_ids, "finished before the kill: not a mid-stream test");
    /* The dead consumer's claims (lease: the handler timeout + 5 s) must expire first: a
     * claim still held sends its message through the retry topic, out of order by design. */
    uint64_t t0 = sbt_now_ms();
    SBT_CHECK_MSG(sbt_wait_until(no_open_claims, sc.prefix, 30000, 200),
                  "%lld claims still open after 30 s", redis_open_claims(sc.prefix));
    printf("claims of the killed consumer expired after %.1f s\n",
           (double)(sbt_now_ms() - t0) / 1000.0);
    scen_run(&sc);
    scen_finish(&sc, &e, at, 240000);
    verdict_t v;
    scan(&e, sc.ledger, at, true, &v);
    size_t bound = AHEAD * NPART + MAX_INFLIGHT;
    printf("killed: %zu lines: %zu missing, %zu unexpected, %zu repeats (bound %zu), %zu "
           "repeats not of a line before the kill, %zu out of partition order\n",
           v.lines, v.missing, v.unexpected, v.repeats, bound, v.repeats_after_kill_only,
           v.disorder);
    SBT_CHECK_MSG(!v.missing && !v.unexpected && v.repeats <= bound && !v.repeats_after_kill_only &&
                      !v.disorder,
                  "killed: not once and in order (ledger %s, log %s)", sc.ledger, sc.log);
    long dlq = dlq_count(&sc);
    SBT_CHECK_MSG(dlq >= e.n_reject, "%ld dead letters for %d rejected events", dlq, e.n_reject);
    printf("ok: killed: every id handled, %zu re-run after the SIGKILL, first occurrences in "
           "offset order per partition; %ld dead letters\n",
           v.repeats, dlq);
    events_free(&e);
}

int main(void)
{
    brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    redis_url = sbt_service("SB_TEST_REDIS_URL", "Redis");
    atexit(cleanup);
    steady();
    killed();
    return 0;
}
