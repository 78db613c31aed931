/* cmd_demo.c: `switchboard demo`, the embedded-default main job.
 *
 * One process, no external service: the in-memory broker (librdkafka's mock cluster takes
 * its place once the Kafka transport exists) and the in-memory idempotency store. A
 * generator publishes a realistic stream of the seed systems' integration events
 * (DataSync and ETLJob events, CustomerData with some invalid emails), with duplicates,
 * events that fail and recover, and events that end in the dead-letter queue; the built-in
 * handlers and the example notifier module consume them through the real pipeline, the
 * admin endpoints answer while it runs, and a summary closes the run. Deterministic: the
 * same --seed gives the same stream. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "admin_http.h"
#include "cmd_demo.h"
#include "config.h"
#include "datetime.h"
#include "log.h"
#include "pipeline.h"
#include "transport_memory.h"

#define EX_USAGE_  64
#define EX_SOFT_   70
#define EX_CONFIG_ 78

typedef struct demo {
    sb__pipeline_t *p;
    sb__timer_t *tick;
    unsigned total, sent, duplicates_sent, malformed_sent;
    uint64_t rng;
    char (*ids)[40]; /* ids sent so far, for duplicates */
    unsigned n_ids;
    int64_t t0;
    bool quiet;
    unsigned by_type[10];
} demo_t;

static const char *const TYPES[] = {"DataSyncCompletedEvent", "DataSyncFailedEvent",
                                    "ETLJobStartedEvent",     "ETLJobCompletedEvent",
                                    "CustomerData",           "LegacyImportEvent",
                                    "ReportRequestedEvent",   "InventoryAdjustedEvent",
                                    "(malformed)"};

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
        return snprintf(body, n,
                        "{\"JobId\":\"%s\",\"Error\":\"%s\",\"FailedAt\":\"%s\",\"Id\":\"%s\","
                        "\"CreationDate\":\"%s\"}",
                        job,
                        pick(d,
                             (const char *const[]){"Timeout connecting to ERP",
                                                   "Duplicate key in target table",
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
        static const char *names[] = {"Ana García", "Luis Martínez", "Marta Núñez",
                                      "Jorge Pérez", "Lucía Fernández"};
        return snprintf(body, n,
                        "{\"Id\":\"%s\",\"CreationDate\":\"%s\",\"Email\":\"%s\","
                        "\"Phone\":\"+34 6%08u\",\"Name\":\"%s\",\"ProcessedAt\":\"%s\"}",
                        id, now, bad ? "not-an-email" : "customer@example.com",
                        (unsigned)(next_rand(d) % 100000000), pick(d, names, 5), now);
    }
    case 5:
    case 6:
    case 7:
        return snprintf(body, n, "{\"Id\":\"%s\",\"CreationDate\":\"%s\",\"Batch\":%u}", id,
                        now, (unsigned)(next_rand(d) % 1000));
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

static void on_tick(sb__timer_t *t, void *arg)
{
    demo_t *d = arg;
    sb__transport_t *tx = d->p->tx;
    for (unsigned i = 0; i < 25 && d->sent < d->total; i++) {
        char body[1024], idbuf[40];
        const char *id;
        unsigned kind;
        bool dup = d->n_ids > 10 && next_rand(d) % 10 == 0;
        if (dup) {
            /* A publisher retrying after a lost ack: same event, same id. */
            id = d->ids[next_rand(d) % d->n_ids];
            kind = 2; /* ETLJobStarted: idempotency makes the second one a no-op */
            d->duplicates_sent++;
        } else {
            guid(d, idbuf);
            id = idbuf;
            kind = pick_kind(d);
        }
        int len = make_event(d, kind, id, body, sizeof body);
        sb__memtx_msg_t m = {.routing_key = kind == 8 ? "DataSyncCompletedEvent" : TYPES[kind],
                             .body = body,
                             .body_len = (size_t)len,
                             .message_id = id,
                             .content_type = "application/json"};
        if (sb__memtx_inject(tx, &m) != SB_EOK)
            break; /* broker full: try again next tick */
        if (!dup && kind == 2)
            snprintf(d->ids[d->n_ids++], 40, "%s", id);
        d->by_type[kind]++;
        d->sent++;
    }
    if (d->sent >= d->total && sb__memtx_outstanding(tx) == 0) {
        sb__timer_stop(t);
        sb__runtime_stop(d->p->rt);
    }
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

static void usage(FILE *f)
{
    fprintf(f, "usage: switchboard demo [--events N] [--seed N] [--admin HOST:PORT] [--verbose]\n"
               "  Runs the embedded demo: a realistic stream of integration events through\n"
               "  the in-memory broker, the built-in handlers and the notifier module.\n");
}

int sb__cmd_demo(int argc, char **argv)
{
    unsigned events = 300;
    uint64_t seed = 42;
    const char *admin = "127.0.0.1:9464";
    bool verbose = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--events") && i + 1 < argc) {
            events = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--admin") && i + 1 < argc) {
            admin = argv[++i];
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
    const char *schema = find_resource("SWITCHBOARD_SCHEMAS_DIR", schema_dirs, schemas_buf,
                                       sizeof schemas_buf);
    const char *notifier = find_resource("SWITCHBOARD_NOTIFIER", module_paths, module_buf,
                                         sizeof module_buf);
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

    char yaml[8192];
    int yl = snprintf(
        yaml, sizeof yaml,
        "service:\n  name: switchboard-demo\n  shutdown_timeout: 10s\n"
        "log:\n  level: %s\n  format: text\n"
        "transport:\n  kind: memory\n  memory:\n    loopback: true\n    capacity: 20000\n"
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
        "    config:\n      outcome: reject\n      reason: \"legacy format is no longer supported\"\n"
        "  - name: report-builder\n    module: fail\n    bind: [ReportRequestedEvent]\n"
        "    retry:\n      max_attempts: 3\n"
        "    config:\n      reason: \"report service unreachable\"\n",
        verbose ? "info" : "error", schema_dir, ledger_path, notifier);
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
        fprintf(stderr, "switchboard demo: admin endpoints: %s (use --admin HOST:PORT or "
                        "--admin \"\" to disable)\n", err);
        goto out;
    }
    if (sb__pipeline_start(d.p, err, sizeof err) != SB_EOK) {
        fprintf(stderr, "switchboard demo: %s\n", err);
        goto out;
    }
    printf("switchboard demo: %u integration events through the embedded in-memory broker\n",
           events);
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
    int rs = sb__runtime_run(d.p->rt);
    double secs = (double)(sb__datetime_now_us() - d.t0) / 1e6;

    const sb__dispatcher_stats_t *st = sb__dispatcher_stats(d.p->dp);
    sb__memtx_stats_t ms;
    sb__memtx_stats(d.p->tx, &ms);
    uint64_t handled = 0;
    for (size_t i = 0; i < sb__registry_count(d.p->reg); i++)
        handled += sb__registry_handler(d.p->reg, i)->n_ok;
    printf("\nsummary (%.2f s):\n", secs);
    printf("  published by the demo        %u (%u of them duplicates of earlier events)\n",
           d.sent, d.duplicates_sent);
    printf("  received (deliveries)        %" PRIu64 " (retries and %" PRIu64
           " follow-up events included)\n",
           st->received, ms.published);
    printf("  handled                      %" PRIu64 " handler runs succeeded\n", handled);
    printf("  duplicates skipped           %" PRIu64 " events (and %" PRIu64
           " handler runs already done before a retry)\n",
           st->duplicate_events, st->duplicates);
    printf("  retried                      %" PRIu64 "\n", st->retried);
    printf("  dead-lettered                %" PRIu64 "\n", st->dead_lettered);
    for (int i = 0; i < 6; i++)
        if (st->dl_by_reason[i])
            printf("    %-26s %" PRIu64 "\n", sb__dl_reasons[i], st->dl_by_reason[i]);
    printf("  follow-ups published         %" PRIu64 " NotificationRequested\n", ms.published);
    printf("  per handler:\n");
    for (size_t i = 0; i < sb__registry_count(d.p->reg); i++) {
        const sb__handler_t *h = sb__registry_handler(d.p->reg, i);
        printf("    %-26s ok %" PRIu64 ", retried %" PRIu64 ", rejected %" PRIu64
               ", duplicates %" PRIu64 "\n",
               h->name, h->n_ok, h->n_retried, h->n_rejected, h->n_duplicates);
    }
    printf("  ledger                       %s\n", ledger_path);
    printf("  dead-letter queue            %zu messages (reasons in x-sb-reason)\n",
           sb__memtx_dlq_count(d.p->tx));
    status = rs == 0 ? 0 : EX_SOFT_;
out:
    sb__timer_destroy(d.tick);
    sb__admin_destroy(adm);
    sb__pipeline_destroy(d.p);
    sb_free(d.ids);
    sb__config_destroy(cfg);
    return status;
}
