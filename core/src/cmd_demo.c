/* cmd_demo.c: `switchboard demo`, the embedded-default main job.
 *
 * One process, no external service: the Kafka transport on librdkafka's mock cluster
 * (`brokers: embedded`, in-process) and the in-memory idempotency store; `--broker memory`
 * runs the same stream through the in-memory broker instead. A generator publishes a
 * realistic stream of the seed systems' integration events (DataSync and ETLJob events,
 * CustomerData with some invalid emails), with duplicates, events that fail and recover,
 * and events that end in the dead-letter queue; the built-in handlers and the example
 * notifier module consume them through the real pipeline, the admin endpoints answer while
 * it runs, and a summary closes the run. Deterministic: the same --seed gives the same
 * stream (not the same interleaving).
 *
 * Design: on Kafka the generator is an ordinary librdkafka producer bootstrapped from the
 * mock cluster's address (event type in the `event-type` header, key = event id), so the
 * consumer sees exactly what a real publisher would send. The run ends when every
 * published event and every follow-up has reached a final settlement (acked or
 * dead-lettered) per the dispatcher's counters and nothing is in flight, or at --timeout.
 * The generator keeps at most BACKLOG_MAX events unsettled, which also keeps the mock
 * cluster (5 MiB per partition, older data dropped) from discarding unread events.
 *
 * Not here: a real broker (use `switchboard run`), and no check of what the handlers did
 * beyond the counters (the ledger file is left for that). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "admin_http.h"
#include "cmd_demo.h"
#include "config.h"
#include "datetime.h"
#include "log.h"
#include "pipeline.h"
#include "transport_kafka.h"
#include "transport_memory.h"

#define EX_USAGE_  64
#define EX_SOFT_   70
#define EX_CONFIG_ 78

#define DEMO_TOPIC  "integration-events"
#define BACKLOG_MAX 2000 /* published events not yet settled, at most */

typedef struct demo {
    sb__pipeline_t *p;
    sb__timer_t *tick;
    rd_kafka_t *producer; /* NULL: the in-memory broker */
    unsigned total;
    unsigned produced; /* handed to the broker client */
    unsigned sent;     /* confirmed by the broker */
    unsigned failed;   /* refused or not confirmed: never delivered */
    unsigned duplicates_sent, malformed_sent;
    int64_t deadline_us;
    bool timed_out, finished;
    uint64_t rng;
    char (*ids)[40]; /* ids sent so far, for duplicates */
    unsigned n_ids;
    int64_t t0;
    bool quiet;
    unsigned by_type[10];
} demo_t;

static const char *const TYPES[] = {
    "DataSyncCompletedEvent", "DataSyncFailedEvent",    "ETLJobStartedEvent",
    "ETLJobCompletedEvent",   "CustomerData",           "LegacyImportEvent",
    "ReportRequestedEvent",   "InventoryAdjustedEvent", "(malformed)"};

static uint64_t next_rand(demo_t *d)
{
    uint64_t z = (d->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void guid(demo_t *d, char out[40])
{
    uint64_t a = next_rand(d), b = next_rand(d);
    snprintf(out, 40, "%08x-%04x-4%03x-%04x-%012" PRIx64, (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
             (unsigned)(0x8000 | ((b >> 48) & 0x3fff)), (uint64_t)(b & 0xffffffffffffULL));
}

static const char *pick(demo_t *d, const char *const *v, size_t n)
{
    return v[next_rand(d) % n];
}

/* One event of the stream: its type index and JSON body. */
static int make_event(demo_t *d, unsigned kind, const char *id, char *body, size_t n)
{
    static const char *systems[] = {"CRM", "ERP", "Billing", "DataWarehouse", "Salesforce"};
    static const char *jobs[] = {"FullLoad", "Incremental", "Reconciliation"};
    char now[32], job[40];
    sb__datetime_format(sb__datetime_now_us(), now);
    guid(d, job);
    switch (kind) {
    case 0:
        return snprintf(body, n,
                        "{\"JobId\":\"%s\",\"SourceSystem\":\"%s\",\"TargetSystem\":\"%s\","
                        "\"RecordsProcessed\":%u,\"CompletedAt\":\"%s\",\"Id\":\"%s\","
                        "\"CreationDate\":\"%s\"}",
                        job, pick(d, systems, 5), pick(d, systems, 5),
                        (unsigned)(next_rand(d) % 100000), now, id, now);
    case 1:
        return snprintf(
            body, n,
            "{\"JobId\":\"%s\",\"Error\":\"%s\",\"FailedAt\":\"%s\",\"Id\":\"%s\","
            "\"CreationDate\":\"%s\"}",
            job,
            pick(d,
                 (const char *const[]){"Timeout connecting to ERP", "Duplicate key in target table",
                                       "Source API returned 503"},
                 3),
            now, id, now);
    case 2:
        return snprintf(body, n,
                        "{\"JobId\":\"%s\",\"JobType\":\"%s\",\"Source\":\"s3://etl-input/%s\","
                        "\"StartedAt\":\"%s\",\"Id\":\"%s\",\"CreationDate\":\"%s\"}",
                        job, pick(d, jobs, 3), pick(d, systems, 5), now, id, now);
    case 3:
        return snprintf(body, n,
                        "{\"JobId\":\"%s\",\"JobType\":\"%s\",\"RecordsProcessed\":%u,"
                        "\"CompletedAt\":\"%s\",\"Id\":\"%s\",\"CreationDate\":\"%s\"}",
                        job, pick(d, jobs, 3), (unsigned)(next_rand(d) % 50000), now, id, now);
    case 4: {
        /* One customer in five has an email the schema refuses. */
        bool bad = next_rand(d) % 5 == 0;
        static const char *names[] = {"Ana García", "Luis Martínez", "Marta Núñez", "Jorge Pérez",
                                      "Lucía Fernández"};
        return snprintf(body, n,
                        "{\"Id\":\"%s\",\"CreationDate\":\"%s\",\"Email\":\"%s\","
                        "\"Phone\":\"+34 6%08u\",\"Name\":\"%s\",\"ProcessedAt\":\"%s\"}",
                        id, now, bad ? "not-an-email" : "customer@example.com",
                        (unsigned)(next_rand(d) % 100000000), pick(d, names, 5), now);
    }
    case 5:
    case 6:
    case 7:
        return snprintf(body, n, "{\"Id\":\"%s\",\"CreationDate\":\"%s\",\"Batch\":%u}", id, now,
                        (unsigned)(next_rand(d) % 1000));
    default:
        return snprintf(body, n, "{\"Id\":\"%s\",\"JobId\": oops", id);
    }
}

/* Mix of the stream, in percent of events: see the summary for what each becomes. */
static unsigned pick_kind(demo_t *d)
{
    unsigned r = (unsigned)(next_rand(d) % 100);
    static const unsigned cut[] = {28, 38, 53, 68, 86, 91, 94, 97, 100};
    for (unsigned k = 0; k < 9; k++)
        if (r < cut[k])
            return k;
    return 0;
}

/* Settlement accounting, from the dispatcher's counters only (the same for every
 * transport). Each event the broker confirmed, the demo's and the follow-ups the handlers
 * published, ends acked or dead-lettered; a retry in between is not final. unsettled():
 * the final settlements still missing, counting events not yet confirmed as missing too. */
static uint64_t settled(const demo_t *d)
{
    const sb__dispatcher_stats_t *st = sb__dispatcher_stats(d->p->dp);
    return st->acked + st->dead_lettered;
}

static uint64_t expected(const demo_t *d)
{
    const sb__dispatcher_stats_t *st = sb__dispatcher_stats(d->p->dp);
    return (uint64_t)d->sent + (st->publishes - st->publish_failures);
}

static uint64_t unsettled(const demo_t *d)
{
    uint64_t done = settled(d), want = expected(d) + (d->produced - d->sent - d->failed);
    return done >= want ? 0 : want - done;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    demo_t *d = opaque;
    if (m->err) {
        if (d->failed++ == 0)
            fprintf(stderr, "switchboard demo: publish failed: %s\n", rd_kafka_err2str(m->err));
    } else {
        d->sent++;
    }
}

/* Hands one event to the broker: SB_EOK, SB_EBUSY (full, try again later) or another
 * error (the event is counted as failed). */
static int publish(demo_t *d, const char *type, const char *id, const char *body, size_t len)
{
    if (!d->producer) {
        sb__memtx_msg_t m = {.routing_key = type,
                             .body = body,
                             .body_len = len,
                             .message_id = id,
                             .content_type = "application/json"};
        int rc = sb__memtx_inject(d->p->tx, &m);
        if (rc == SB_EOK)
            d->sent++;
        return rc == SB_EOK ? SB_EOK : SB_EBUSY;
    }
    rd_kafka_resp_err_t err = rd_kafka_producev(
        d->producer, RD_KAFKA_V_TOPIC(DEMO_TOPIC), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(id, strlen(id)), RD_KAFKA_V_VALUE((void *)(uintptr_t)body, len),
        RD_KAFKA_V_HEADER("event-type", type, -1),
        RD_KAFKA_V_HEADER("content-type", "application/json", -1), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        return SB_EBUSY;
    if (err) {
        if (d->failed++ == 0)
            fprintf(stderr, "switchboard demo: publish failed: %s\n", rd_kafka_err2str(err));
        return SB_EIO;
    }
    return SB_EOK;
}

static void finish(demo_t *d, bool timed_out)
{
    d->finished = true;
    d->timed_out = timed_out;
    sb__timer_stop(d->tick);
    sb__runtime_stop(d->p->rt);
}

static void on_tick(sb__timer_t *t, void *arg)
{
    (void)t;
    demo_t *d = arg;
    if (d->finished)
        return;
    if (d->producer)
        rd_kafka_poll(d->producer, 0); /* delivery reports */
    for (unsigned i = 0; i < 25 && d->produced < d->total && unsettled(d) < BACKLOG_MAX; i++) {
        char body[1024], idbuf[40];
        const char *id;
        unsigned kind;
        uint64_t rng = d->rng;
        bool dup = d->n_ids > 10 && next_rand(d) % 10 == 0;
        if (dup) {
            /* A publisher retrying after a lost ack: same event, same id. */
            id = d->ids[next_rand(d) % d->n_ids];
            kind = 2; /* ETLJobStarted: idempotency makes the second one a no-op */
        } else {
            guid(d, idbuf);
            id = idbuf;
            kind = pick_kind(d);
        }
        int len = make_event(d, kind, id, body, sizeof body);
        int rc =
            publish(d, kind == 8 ? "DataSyncCompletedEvent" : TYPES[kind], id, body, (size_t)len);
        if (rc == SB_EBUSY) {
            d->rng = rng; /* the same event again next tick */
            break;
        }
        d->produced++;
        if (rc != SB_EOK)
            continue;
        if (dup)
            d->duplicates_sent++;
        else if (kind == 2)
            snprintf(d->ids[d->n_ids++], 40, "%s", id);
        d->by_type[kind]++;
    }
    if (d->produced >= d->total && d->sent + d->failed == d->produced && unsettled(d) == 0 &&
        sb__dispatcher_inflight(d->p->dp) == 0)
        finish(d, false);
    else if (sb__datetime_now_us() > d->deadline_us)
        finish(d, true);
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* A resource shipped with switchboard: the environment variable, then next to the build
 * tree, then the install location. */
static const char *find_resource(const char *env, const char *const *candidates, char *buf,
                                 size_t n)
{
    const char *e = getenv(env);
    if (e && *e)
        return e;
    char exe[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (l > 0) {
        exe[l] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        for (size_t i = 0; candidates[i]; i++) {
            int w = snprintf(buf, n, "%s/%s", exe, candidates[i]);
            if (w > 0 && (size_t)w < n && file_exists(buf))
                return buf;
        }
    }
    return NULL;
}

/* The generator's producer: an ordinary client of the embedded cluster, polled from the
 * generator's timer (delivery reports run there, on the loop thread). */
static int new_producer(demo_t *d, const char *bootstraps, char *errstr, size_t n)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf)
        return snprintf(errstr, n, "out of memory"), SB_ENOMEM;
    const char *const props[][2] = {{"bootstrap.servers", bootstraps},
                                    {"client.id", "switchboard-demo-publisher"},
                                    {"linger.ms", "2"},
                                    {"acks", "all"},
                                    {"message.timeout.ms", "30000"}};
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, n) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            return SB_ECONFIG;
        }
    rd_kafka_conf_set_opaque(conf, d);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    d->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, n);
    if (!d->producer) {
        rd_kafka_conf_destroy(conf);
        return SB_EIO;
    }
    return SB_EOK;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: switchboard demo [--events N] [--seed N] [--admin HOST:PORT]\n"
               "                        [--broker kafka|memory] [--timeout SECONDS] [--verbose]\n"
               "  Runs the embedded demo: a realistic stream of integration events through\n"
               "  an in-process broker (kafka: librdkafka's mock cluster, the default;\n"
               "  memory: the in-memory broker), the built-in handlers and the notifier\n"
               "  module, until every event is settled (or --timeout, default 120 s).\n");
}

int sb__cmd_demo(int argc, char **argv)
{
    unsigned events = 300;
    uint64_t seed = 42;
    const char *admin = "127.0.0.1:9464";
    bool verbose = false, kafka = true;
    unsigned timeout_s = 120;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--events") && i + 1 < argc) {
            events = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--admin") && i + 1 < argc) {
            admin = argv[++i];
        } else if (!strcmp(argv[i], "--broker") && i + 1 < argc) {
            const char *b = argv[++i];
            if (strcmp(b, "kafka") && strcmp(b, "memory")) {
                fprintf(stderr, "switchboard demo: --broker must be kafka or memory\n");
                return EX_USAGE_;
            }
            kafka = !strcmp(b, "kafka");
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout_s = (unsigned)strtoul(argv[++i], NULL, 10);
            if (timeout_s == 0 || timeout_s > 86400) {
                fprintf(stderr, "switchboard demo: --timeout must be 1..86400 seconds\n");
                return EX_USAGE_;
            }
        } else if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) {
            verbose = true;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return EX_USAGE_;
        }
    }
    if (events == 0 || events > 1000000) {
        fprintf(stderr, "switchboard demo: --events must be 1..1000000\n");
        return EX_USAGE_;
    }
    char schemas_buf[PATH_MAX], module_buf[PATH_MAX];
    static const char *const schema_dirs[] = {
        "../../schemas/IntegrationEvent.schema.json",    /* build/<dir>/core -> source */
        "../../../schemas/IntegrationEvent.schema.json", /* build/<a>/<b>/core */
        "../share/switchboard/schemas/IntegrationEvent.schema.json", NULL};
    static const char *const module_paths[] = {"../handlers/notifier/notifier.so",
                                               "../lib/switchboard/modules/notifier.so", NULL};
    const char *schema =
        find_resource("SWITCHBOARD_SCHEMAS_DIR", schema_dirs, schemas_buf, sizeof schemas_buf);
    const char *notifier =
        find_resource("SWITCHBOARD_NOTIFIER", module_paths, module_buf, sizeof module_buf);
    if (!schema || !notifier) {
        fprintf(stderr, "switchboard demo: cannot find the %s (set %s)\n",
                !schema ? "event schemas" : "notifier module",
                !schema ? "SWITCHBOARD_SCHEMAS_DIR" : "SWITCHBOARD_NOTIFIER");
        return EX_CONFIG_;
    }
    char schema_dir[PATH_MAX];
    snprintf(schema_dir, sizeof schema_dir, "%s", schema);
    if (strstr(schema_dir, "IntegrationEvent.schema.json"))
        *strrchr(schema_dir, '/') = '\0';

    char ledger[] = "/tmp/switchboard-demo-XXXXXX";
    if (!mkdtemp(ledger)) {
        fprintf(stderr, "switchboard demo: mkdtemp: %s\n", strerror(errno));
        return EX_SOFT_;
    }
    char ledger_path[PATH_MAX];
    snprintf(ledger_path, sizeof ledger_path, "%s/ledger.jsonl", ledger);

    /* Kafka: a fresh group id and a short session timeout, because the mock cluster makes a
     * new member wait session.timeout.ms - 1 s after the last one left the group; a short
     * fetch wait so retries due in tens of milliseconds are not held by an idle fetch.
     * Concurrency by key (the event id): in partition order, every retry, dead-letter or
     * follow-up produce would hold its whole partition for a broker round trip.
     * Follow-ups go to the consumed topic (the default publish_topic), as with the
     * in-memory broker's loopback. */
    char transport[1024];
    if (kafka)
        snprintf(transport, sizeof transport,
                 "transport:\n  kind: kafka\n  kafka:\n    brokers: embedded\n"
                 "    group_id: switchboard-demo-%ld-%" PRId64 "\n"
                 "    topics: [" DEMO_TOPIC "]\n"
                 "    concurrency: key\n"
                 "    properties:\n"
                 "      consumer.session.timeout.ms: \"6000\"\n"
                 "      consumer.heartbeat.interval.ms: \"500\"\n"
                 "      consumer.fetch.wait.max.ms: \"20\"\n",
                 (long)getpid(), sb__datetime_now_us());
    else
        snprintf(transport, sizeof transport,
                 "transport:\n  kind: memory\n  memory:\n    loopback: true\n"
                 "    capacity: 20000\n");
    char yaml[8192];
    int yl =
        snprintf(yaml, sizeof yaml,
                 "service:\n  name: switchboard-demo\n  shutdown_timeout: 10s\n"
                 "log:\n  level: %s\n  format: text\n"
                 "%s"
                 "idempotency:\n  store: memory\n"
                 "intake:\n  unroutable: dead-letter\n"
                 "schemas:\n  dir: \"%s\"\n  bindings:\n"
                 "    DataSyncCompletedEvent: DataSyncCompletedEvent.schema.json\n"
                 "    DataSyncFailedEvent: DataSyncFailedEvent.schema.json\n"
                 "    ETLJobStartedEvent: ETLJobStartedEvent.schema.json\n"
                 "    ETLJobCompletedEvent: ETLJobCompletedEvent.schema.json\n"
                 "    CustomerData: CustomerData.schema.json\n"
                 "retry:\n  policy: exponential\n  base_delay: 20ms\n  max_delay: 200ms\n"
                 "  max_attempts: 4\n"
                 "handlers:\n"
                 "  - name: ledger\n    module: record\n"
                 "    bind: [DataSyncCompletedEvent, DataSyncFailedEvent, ETLJobStartedEvent,\n"
                 "           ETLJobCompletedEvent, CustomerData, NotificationRequested]\n"
                 "    config:\n      path: \"%s\"\n"
                 "  - name: notifier\n    module: \"%s\"\n"
                 "    config:\n      channel: email\n"
                 "  - name: flaky-etl\n    module: fail\n    bind: [ETLJobCompletedEvent]\n"
                 "    config:\n      times: 2\n      reason: \"warehouse busy, try again\"\n"
                 "  - name: legacy-import\n    module: fail\n    bind: [LegacyImportEvent]\n"
                 "    config:\n      outcome: reject\n      reason: \"legacy format is no longer "
                 "supported\"\n"
                 "  - name: report-builder\n    module: fail\n    bind: [ReportRequestedEvent]\n"
                 "    retry:\n      max_attempts: 3\n"
                 "    config:\n      reason: \"report service unreachable\"\n",
                 verbose ? "info" : "error", transport, schema_dir, ledger_path, notifier);
    if (yl <= 0 || (size_t)yl >= sizeof yaml) {
        fprintf(stderr, "switchboard demo: paths too long\n");
        return EX_SOFT_;
    }
    char err[1024];
    sb__config_t *cfg = NULL;
    if (sb__config_load_buffer(yaml, (size_t)yl, "<demo>", &cfg, err, sizeof err) != SB_EOK) {
        fprintf(stderr, "switchboard demo: %s\n", err);
        return EX_CONFIG_;
    }
    sb__pipeline_configure_logging(cfg);
    demo_t d = {.total = events, .rng = seed};
    d.ids = sb_calloc(events, sizeof *d.ids);
    int status = EX_SOFT_;
    sb__admin_t *adm = NULL;
    if (!d.ids || sb__pipeline_new(cfg, &d.p, err, sizeof err) != SB_EOK) {
        fprintf(stderr, "switchboard demo: %s\n", d.ids ? err : "out of memory");
        goto out;
    }
    if (admin && *admin && sb__pipeline_admin(d.p, admin, NULL, &adm, err, sizeof err) != SB_EOK) {
        fprintf(stderr,
                "switchboard demo: admin endpoints: %s (use --admin HOST:PORT or "
                "--admin \"\" to disable)\n",
                err);
        goto out;
    }
    if (sb__pipeline_start(d.p, err, sizeof err) != SB_EOK) {
        fprintf(stderr, "switchboard demo: %s\n", err);
        goto out;
    }
    if (kafka) {
        const char *boot = sb__kafka_embedded_bootstraps(d.p->tx);
        if (!boot || new_producer(&d, boot, err, sizeof err) != SB_EOK) {
            fprintf(stderr, "switchboard demo: publisher: %s\n", boot ? err : "no embedded broker");
            goto out;
        }
        printf("switchboard demo: %u integration events through librdkafka's mock cluster "
               "(embedded, %s, topic " DEMO_TOPIC ")\n",
               events, boot);
    } else {
        printf("switchboard demo: %u integration events through the embedded in-memory broker\n",
               events);
    }
    if (adm)
        printf("  admin endpoints: http://127.0.0.1:%d/metrics  /healthz  /readyz  /handlers\n",
               sb__admin_port(adm));
    fflush(stdout);
    d.tick = sb__runtime_timer_new(d.p->rt, on_tick, &d);
    if (!d.tick || sb__timer_start(d.tick, 5, true) != SB_EOK) {
        fprintf(stderr, "switchboard demo: cannot start the generator\n");
        goto out;
    }
    d.t0 = sb__datetime_now_us();
    d.deadline_us = d.t0 + (int64_t)timeout_s * 1000000;
    int rs = sb__runtime_run(d.p->rt);
    double secs = (double)(sb__datetime_now_us() - d.t0) / 1e6;

    const sb__dispatcher_stats_t *st = sb__dispatcher_stats(d.p->dp);
    uint64_t followups = st->publishes - st->publish_failures;
    uint64_t handled = 0;
    for (size_t i = 0; i < sb__registry_count(d.p->reg); i++)
        handled += sb__registry_handler(d.p->reg, i)->n_ok;
    printf("\nsummary (%.2f s):\n", secs);
    printf("  published by the demo        %u (%u of them duplicates of earlier events)\n", d.sent,
           d.duplicates_sent);
    printf("  received (deliveries)        %" PRIu64 " (retries and %" PRIu64
           " follow-up events included)\n",
           st->received, followups);
    printf("  handled                      %" PRIu64 " handler runs succeeded\n", handled);
    printf("  duplicates skipped           %" PRIu64 " events (and %" PRIu64
           " handler runs already done before a retry)\n",
           st->duplicate_events, st->duplicates);
    printf("  retried                      %" PRIu64 "\n", st->retried);
    printf("  dead-lettered                %" PRIu64 "\n", st->dead_lettered);
    for (int i = 0; i < SB__N_DL_REASONS; i++)
        if (st->dl_by_reason[i])
            printf("    %-26s %" PRIu64 "\n", sb__dl_reasons[i], st->dl_by_reason[i]);
    printf("  follow-ups published         %" PRIu64 " NotificationRequested\n", followups);
    printf("  per handler:\n");
    for (size_t i = 0; i < sb__registry_count(d.p->reg); i++) {
        const sb__handler_t *h = sb__registry_handler(d.p->reg, i);
        printf("    %-26s ok %" PRIu64 ", retried %" PRIu64 ", rejected %" PRIu64
               ", duplicates %" PRIu64 "\n",
               h->name, h->n_ok, h->n_retried, h->n_rejected, h->n_duplicates);
    }
    printf("  ledger                       %s\n", ledger_path);
    printf("  dead-letter queue            %" PRIu64 " messages in %s (reasons in x-sb-reason)\n",
           st->dead_lettered, kafka ? "topic " DEMO_TOPIC ".dlq" : "the in-memory DLQ");
    status = rs == 0 ? 0 : EX_SOFT_;
    if (d.failed) {
        fprintf(stderr, "switchboard demo: %u events could not be published\n", d.failed);
        status = EX_SOFT_;
    }
    if (d.timed_out) {
        fprintf(stderr,
                "switchboard demo: timed out after %u s: %u of %u events published, %" PRIu64
                " deliveries still unsettled\n",
                timeout_s, d.sent, events, unsettled(&d));
        status = EX_SOFT_;
    }
out:
    if (d.producer) {
        /* Only a timed-out run leaves anything unconfirmed: drop it, serve the reports. */
        rd_kafka_purge(d.producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(d.producer, 1000);
        rd_kafka_destroy(d.producer);
    }
    sb__timer_destroy(d.tick);
    sb__admin_destroy(adm);
    sb__pipeline_destroy(d.p);
    sb_free(d.ids);
    sb__config_destroy(cfg);
    return status;
}
