/* `switchboard dlq` filters and an interrupted replay, on a real RabbitMQ (and Redis).
 *
 * Part 1, filters. A real consumer (`switchboard run`, no idempotency store) dead-letters
 * 11 events in two batches about a second apart: events of several types rejected by two
 * `fail` instances with different names and reasons (rejecter-a on Payment.#, rejecter-b on
 * Shipment.*), and bodies that are not JSON (reason decode, no handler). For every filter
 * (--type exact, wildcard and repeated, --reason, --error REGEX, --handler, --since,
 * --until, --id, --limit, and combinations) `list --json` must return exactly the expected
 * ids, and the DLQ must still hold all 11 afterwards (reading verbs never consume). Then
 * `purge` with filters removes exactly the selected ones and keeps the rest, and
 * `replay --dry-run` with a filter prints "would replay ID" for exactly the selection and
 * moves nothing (the consumer's queue, bound to those types, stays empty).
 *
 * Part 2, an interrupted replay. 30 events are dead-lettered by a failing handler `work`;
 * the consumer is restarted with `work` fixed (the record module) and idempotency on the
 * real Redis (a unique key prefix, deleted at the end). `dlq replay --rate 5/s` is SIGKILLed
 * after several copies were handled, then replay runs again to completion. The ledger must
 * hold every id exactly once, the DLQ must end empty, and nothing may stay unacked (the
 * queues' depths once every process is gone, and rabbitmqctl's unacked counts while the
 * consumer runs, when rabbitmqctl reaches the broker).
 *
 * Why the kill cannot lose or duplicate an event: replay takes a dead letter with basic.get
 * (unacked), publishes the copy under publisher confirms, waits for the broker's confirm and
 * only then acks the dead letter (dlq_replay.c, dlq_amqp.c). When SIGKILL lands
 *  - before the publish (almost always: the replay spends its time pacing, and pacing
 *    happens before the publish), the broker requeues the unacked dead letter when the
 *    connection dies, and the next run moves it: nothing lost, nothing sent twice;
 *  - after the publish but before the broker got the ack (a window of a few ms), the copy is
 *    in the consumer's queue AND the dead letter comes back to the DLQ, so the next run
 *    publishes it again: two copies with the same message_id (the event id). The consumer
 *    handles the first and stores "done" for (group, handler, id) in Redis; the second one's
 *    claim finds "done", so it is acked without running the handler (outcome "duplicate").
 * A random kill seldom hits the second window, so the test also builds that state on
 * purpose: after the kill it publishes, exactly as replay would, a copy of one dead letter
 * that is still in the DLQ (same body, same message_id, original exchange and routing key).
 * The consumer handles it; the resumed replay sends the DLQ's copy again, and the consumer's
 * /metrics must count it as a duplicate (settled outcome="duplicate" >= 1, received ==
 * recorded + duplicates) while the ledger still holds that id once. If the kill itself hit
 * the window, the count of duplicates shows it too (printed). The real window was checked
 * once by hand with gdb: a replay stopped at dlq_ack (its copy confirmed and already
 * handled by the consumer) and SIGKILLed there left the dead letter back in the DLQ, and
 * the next run's copy was acked as outcome="duplicate" without a second ledger line. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

static const char *url;
static char *cfg_path; /* the config `switchboard dlq` is given */

/* ---- cleanup, on success and on a failed check alike --------------------------------- */

#define MAX_NAMES 16
static pid_t children[4];
static const char *queues[MAX_NAMES], *exchanges[MAX_NAMES];
static size_t n_queues, n_exchanges;
static char *files[MAX_NAMES];
static size_t n_files;
static const char *redis_url;
static char *redis_prefix; /* our keys; NULL: none to delete */
static bool redis_clean;
static bool passed; /* the temporary files (logs) stay after a failure */

static void redis_delete_prefix(void);

static void cleanup(void)
{
    for (size_t i = 0; i < sizeof children / sizeof children[0]; i++) {
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    }
    if (n_queues || n_exchanges) {
        queues[n_queues] = NULL;
        exchanges[n_exchanges] = NULL;
        sbt_amqp_cleanup(url, queues, exchanges);
        n_queues = n_exchanges = 0;
    }
    if (redis_prefix && !redis_clean)
        redis_delete_prefix();
    redis_clean = true;
    for (size_t i = 0; passed && i < n_files; i++)
        unlink(files[i]);
    if (!passed && n_files)
        fprintf(stderr, "logs kept: %s ...\n", files[0]);
    n_files = 0;
}

static void own_queue(const char *q)
{
    SBT_CHECK(n_queues + 1 < MAX_NAMES);
    queues[n_queues++] = q;
}

static void own_exchange(const char *x)
{
    SBT_CHECK(n_exchanges + 1 < MAX_NAMES);
    exchanges[n_exchanges++] = x;
}

static char *temp_file(const char *text, const char *suffix)
{
    SBT_CHECK(n_files < MAX_NAMES);
    return files[n_files++] = sbt_write_temp(text, suffix);
}

static void own_child(pid_t pid)
{
    for (size_t i = 0; i < sizeof children / sizeof children[0]; i++) {
        if (children[i] <= 0) {
            children[i] = pid;
            return;
        }
    }
    SBT_CHECK_MSG(false, "too many children");
}

static void disown_child(pid_t pid)
{
    for (size_t i = 0; i < sizeof children / sizeof children[0]; i++)
        if (children[i] == pid)
            children[i] = 0;
}

/* ---- switchboard dlq ------------------------------------------------------------------ */

/* Runs `switchboard dlq -c cfg_path args...` (NULL-terminated), stdout to out_path (may be
 * NULL); returns its exit status. */
static int dlqv(const char *out_path, const char *const *args)
{
    return sbt_run_cli((const char *const[]){"dlq", "-c", cfg_path, NULL}, args, out_path, NULL);
}

static json_t *load_lines(const char *path)
{
    return sbt_load_json_lines(path);
}

static const char *rec_id(json_t *rec)
{
    const char *id =
        json_string_value(json_object_get(json_object_get(rec, "props"), "message_id"));
    SBT_CHECK_MSG(id != NULL, "a record without props.message_id");
    return id;
}

static const char *rec_header(json_t *rec, const char *name)
{
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(rec, "headers"), i, h)
    {
        if (!strcmp(json_string_value(json_array_get(h, 0)), name))
            return json_string_value(json_array_get(h, 2));
    }
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "a,b,c" from n strings, sorted first when `sort`. Caller frees. */
static char *join(const char **v, size_t n, bool sort)
{
    if (sort)
        qsort(v, n, sizeof *v, cmp_str);
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i]) + 1;
    char *s = malloc(len);
    SBT_CHECK(s != NULL);
    s[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(s, ",");
        strcat(s, v[i]);
    }
    return s;
}

/* The ids `list --json FILTERS...` prints, joined in DLQ order or sorted. Caller frees. */
static char *list_ids(const char *out, bool sort, const char *const *filters)
{
    const char *args[32] = {"list", "--json"};
    size_t n = 2;
    for (size_t i = 0; filters && filters[i]; i++) {
        SBT_CHECK(n < 31);
        args[n++] = filters[i];
    }
    args[n] = NULL;
    int st = dlqv(out, args);
    SBT_CHECK_MSG(st == 0, "dlq list exited %d", st);
    json_t *arr = load_lines(out);
    size_t k = json_array_size(arr);
    const char **ids = calloc(k ? k : 1, sizeof *ids);
    SBT_CHECK(ids != NULL);
    for (size_t i = 0; i < k; i++)
        ids[i] = rec_id(json_array_get(arr, i));
    char *s = join(ids, k, sort);
    free(ids);
    json_decref(arr);
    return s;
}

static long wait_depth(const char *q, long want, int timeout_ms)
{
    long d = -1;
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    while ((d = sbt_amqp_depth(url, q)) != want && sbt_now_ms() < deadline)
        usleep(100000);
    return d;
}

/* ---- rabbitmqctl: unacked counts (the AMQP passive declare only counts ready ones) ----- */

/* Ready and unacked messages of queue q in vhost "/", from rabbitmqctl. false when
 * rabbitmqctl is missing or does not list the queue (a broker on another host). */
static bool rmq_counts(const char *q, long *ready, long *unacked)
{
    if (access("/usr/sbin/rabbitmqctl", X_OK) != 0)
        return false;
    FILE *p = popen("timeout 30 /usr/sbin/rabbitmqctl list_queues -q --no-table-headers "
                    "name messages_ready messages_unacknowledged 2>/dev/null",
                    "r");
    if (!p)
        return false;
    char line[1024];
    bool found = false;
    while (fgets(line, sizeof line, p)) {
        char name[600];
        long r, u;
        if (sscanf(line, "%599s %ld %ld", name, &r, &u) == 3 && !strcmp(name, q)) {
            *ready = r;
            *unacked = u;
            found = true;
        }
    }
    pclose(p);
    return found;
}

/* Waits until rabbitmqctl shows q with `ready` ready (-1: any) and none unacked. Returns
 * false when rabbitmqctl cannot see the queue (the check is then the caller's depth check
 * after the processes exit). */
static bool wait_settled_rmq(const char *q, long ready, int timeout_ms)
{
    long r = -1, u = -1;
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (!rmq_counts(q, &r, &u)) {
            printf("rabbitmqctl does not see %s: unacked check left to the depth checks\n", q);
            return false;
        }
        if (u == 0 && (ready < 0 || r == ready))
            return true;
        SBT_CHECK_MSG(sbt_now_ms() < deadline, "%s: %ld ready (want %ld), %ld unacked", q, r, ready,
                      u);
        usleep(200000);
    }
}

/* ---- the consumer, its admin endpoint, Redis -------------------------------------------- */

/* GET /metrics; the malloc'd body, or NULL when the endpoint does not answer 200. */
static char *get_metrics(int port)
{
    char *body;
    int st = sbt_http(port, "GET", "/metrics", NULL, NULL, &body);
    if (st != 200)
        free(body);
    return st == 200 ? body : NULL;
}

/* The value of the first sample whose line starts with `prefix`; -1 when absent. */
static long metric(int port, const char *prefix)
{
    char *m = get_metrics(port);
    if (!m)
        return -1;
    long v = -1;
    size_t pl = strlen(prefix);
    for (char *line = m; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (!strncmp(line, prefix, pl)) {
            char *sp = strrchr(line, ' ');
            if (sp)
                v = strtol(sp + 1, NULL, 10);
            break;
        }
        line = nl ? nl + 1 : NULL;
    }
    free(m);
    return v;
}

#define M_DUP      "switchboard_messages_settled_total{handler=\"work\",outcome=\"duplicate\"}"
#define M_OK       "switchboard_messages_settled_total{handler=\"work\",outcome=\"ok\"}"
#define M_RETRIED  "switchboard_messages_settled_total{handler=\"work\",outcome=\"retried\"}"
#define M_RECEIVED "switchboard_messages_received_total{"

static pid_t start_consumer(const char *yaml, const char *queue, const char *log, int admin_port)
{
    char *cfg = temp_file(yaml, ".yaml");
    const char *args[] = {"run", "-c", cfg, NULL};
    size_t before = sbt_count_lines(log);
    pid_t pid = sbt_spawn_switchboard(args, NULL, log);
    own_child(pid);
    SBT_CHECK_MSG(sbt_wait_lines(log, before + 2, 15000), "switchboard did not start (%s)", log);
    for (int i = 0; i < 150 && sbt_amqp_depth(url, queue) < 0; i++)
        usleep(100000);
    SBT_CHECK_MSG(sbt_amqp_depth(url, queue) >= 0, "queue %s not declared (%s)", queue, log);
    if (admin_port) {
        for (int i = 0; i < 150 && metric(admin_port, M_RECEIVED) < 0; i++)
            usleep(100000);
        SBT_CHECK_MSG(metric(admin_port, M_RECEIVED) >= 0, "no /metrics on port %d (%s)",
                      admin_port, log);
    }
    usleep(300000); /* the consumer's basic.consume follows the declarations */
    cfg_path = cfg;
    return pid;
}

static void stop_consumer(pid_t pid)
{
    int st = sbt_stop(pid, SIGTERM, 20000);
    disown_child(pid);
    SBT_CHECK_MSG(st == 0, "the consumer exited %d", st);
}

static redisContext *redis_connect(void)
{
    /* redis://[user:pass@]host:port[/db] */
    const char *p = redis_url;
    SBT_CHECK_MSG(!strncmp(p, "redis://", 8), "SB_TEST_REDIS_URL: only redis:// URLs");
    p += 8;
    char user[128] = "", pass[128] = "", host[256] = "127.0.0.1";
    int port = 6379, db = 0;
    const char *at = strchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            snprintf(user, sizeof user, "%.*s", (int)(colon - p), p);
            snprintf(pass, sizeof pass, "%.*s", (int)(at - colon - 1), colon + 1);
        } else {
            snprintf(pass, sizeof pass, "%.*s", (int)(at - p), p);
        }
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (hl)
        snprintf(host, sizeof host, "%.*s", (int)hl, p);
    p += hl;
    if (*p == ':')
        port = (int)strtol(p + 1, (char **)&p, 10);
    if (*p == '/')
        db = (int)strtol(p + 1, NULL, 10);
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    SBT_CHECK_MSG(c && !c->err, "cannot connect to Redis at %s:%d", host, port);
    redisReply *r;
    if (*pass) {
        r = *user ? redisCommand(c, "AUTH %s %s", user, pass) : redisCommand(c, "AUTH %s", pass);
        SBT_CHECK(r && r->type != REDIS_REPLY_ERROR);
        freeReplyObject(r);
    }
    r = redisCommand(c, "SELECT %d", db);
    SBT_CHECK(r && r->type != REDIS_REPLY_ERROR);
    freeReplyObject(r);
    return c;
}

/* Counts the keys under our prefix: *done whose value is "done", *other the rest. When
 * `del`, deletes them too. */
static void redis_keys(bool del, long *done, long *other)
{
    redisContext *c = redis_connect();
    char pattern[300];
    snprintf(pattern, sizeof pattern, "%s*", redis_prefix);
    long nd = 0, no = 0;
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        SBT_CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const char *key = r->element[1]->element[i]->str;
            redisReply *v = redisCommand(c, "GET %s", key);
            if (v && v->type == REDIS_REPLY_STRING && !strcmp(v->str, "done"))
                nd++;
            else
                no++;
            freeReplyObject(v);
            if (del)
                freeReplyObject(redisCommand(c, "DEL %s", key));
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
    if (done)
        *done = nd;
    if (other)
        *other = no;
}

static void redis_delete_prefix(void)
{
    redis_keys(true, NULL, NULL);
}

/* ---- part 1: filters ---------------------------------------------------------------- */

#define N1 11

static const char *out1;

/* list --json with the filters (NULL-terminated varargs) returns exactly `want` (sorted,
 * comma-joined), and the DLQ still holds `depth`. */
static void expect_list(const char *dlq_name, long depth, const char *want, ...)
{
    const char *filters[24];
    size_t n = 0;
    va_list ap;
    va_start(ap, want);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 23)
        filters[n++] = a;
    va_end(ap);
    filters[n] = NULL;
    char *got = list_ids(out1, true, filters);
    char shown[512] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(shown + strlen(shown), sizeof shown - strlen(shown), " %s", filters[i]);
    SBT_CHECK_MSG(!strcmp(got, want), "list%s: got [%s], want [%s]", shown, got, want);
    long d = sbt_amqp_depth(url, dlq_name);
    SBT_CHECK_MSG(d == depth, "after list%s the DLQ holds %ld, want %ld", shown, d, depth);
    printf("list%s: [%s]\n", shown, got);
    free(got);
}

static void part_filters(void)
{
    char *exchange = sbt_unique_name("sbt.dlqf.x");
    char *queue = sbt_unique_name("sbt.dlqf.q");
    char dlq_name[256], dlx[256];
    snprintf(dlq_name, sizeof dlq_name, "%s.dlq", queue);
    snprintf(dlx, sizeof dlx, "%s.dlx", exchange);
    own_queue(queue);
    own_queue(strdup(dlq_name));
    own_exchange(exchange);
    own_exchange(strdup(dlx));
    char *ledger = temp_file("", ".ledger");
    char *log = temp_file("", ".log");
    out1 = temp_file("", ".out");

    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "service: {name: dlq-filters}\n"
             "admin: {listen: \"\"}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: amqp\n"
             "  amqp: {url: \"%s\", exchange: %s, queue: %s, prefetch: 32}\n"
             "idempotency: {store: none}\n"
             "handlers:\n"
             "  - {name: rec, module: record, bind: [\"Order.*\"], config: {path: %s}}\n"
             "  - name: rejecter-a\n"
             "    module: fail\n"
             "    bind: [\"Payment.#\"]\n"
             "    config: {outcome: reject, reason: card declined by issuer}\n"
             "  - name: rejecter-b\n"
             "    module: fail\n"
             "    bind: [\"Shipment.*\"]\n"
             "    config: {outcome: reject, reason: address unknown}\n",
             url, exchange, queue, ledger);
    pid_t pid = start_consumer(yaml, queue, log, 0);

    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK(c != NULL);
    /* Batch 1: p1-p3, s1-s2, d1. */
    const char *ids1[] = {"p1", "p2", "p3", "s1", "s2", "d1"};
    const char *rks1[] = {"Payment.Card.Captured", "Payment.Card.Captured", "Payment.Card.Captured",
                          "Shipment.Delayed",      "Shipment.Delayed",      "Order.Created"};
    const char *bodies1[] = {"{\"Id\":\"p1\"}", "{\"Id\":\"p2\"}", "{\"Id\":\"p3\"}",
                             "{\"Id\":\"s1\"}", "{\"Id\":\"s2\"}", "not json d1"};
    SBT_CHECK(sbt_amqp_publish_many(c, exchange, rks1, false, bodies1, ids1, 6, NULL, NULL) == 0);
    SBT_CHECK_MSG(wait_depth(dlq_name, 6, 15000) == 6, "batch 1 not dead-lettered (log %s)", log);
    /* The split: every batch-1 dead letter failed before the next whole second, every
     * batch-2 one after it. */
    time_t split = time(NULL) + 1;
    while (time(NULL) < split)
        usleep(50000);
    usleep(100000);
    char split_s[32];
    struct tm tm;
    gmtime_r(&split, &tm);
    strftime(split_s, sizeof split_s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    /* Batch 2: p4 (another type), p5, s3, d2, d3. */
    const char *ids2[] = {"p4", "p5", "s3", "d2", "d3"};
    const char *rks2[] = {"Payment.Refund.Issued", "Payment.Card.Captured", "Shipment.Lost",
                          "Order.Created", "Order.Updated"};
    const char *bodies2[] = {"{\"Id\":\"p4\"}", "{\"Id\":\"p5\"}", "{\"Id\":\"s3\"}", "not json d2",
                             "<Order/>"};
    SBT_CHECK(sbt_amqp_publish_many(c, exchange, rks2, false, bodies2, ids2, 5, NULL, NULL) == 0);
    sbt_amqp_close(c);
    SBT_CHECK_MSG(wait_depth(dlq_name, N1, 15000) == N1, "batch 2 not dead-lettered (log %s)", log);
    stop_consumer(pid);
    SBT_CHECK(sbt_count_lines(ledger) == 0);
    printf("11 dead letters, split at %s\n", split_s);

    /* What the consumer wrote, for the filters' sake. */
    SBT_CHECK(dlqv(out1, (const char *[]){"list", "--json", NULL}) == 0);
    json_t *all = load_lines(out1);
    SBT_CHECK(json_array_size(all) == N1);
    size_t i;
    json_t *r;
    json_array_foreach(all, i, r)
    {
        const char *id = rec_id(r), *reason = rec_header(r, "x-sb-reason");
        const char *handler = rec_header(r, "x-sb-handler"), *err = rec_header(r, "x-sb-error");
        SBT_CHECK_MSG(reason && err, "%s: no x-sb-reason or x-sb-error", id);
        if (id[0] == 'd') {
            SBT_CHECK_MSG(!strcmp(reason, "decode") && !handler, "%s: %s %s", id, reason,
                          handler ? handler : "-");
        } else {
            const char *want_h = id[0] == 'p' ? "rejecter-a" : "rejecter-b";
            const char *want_e = id[0] == 'p' ? "card declined by issuer" : "address unknown";
            SBT_CHECK_MSG(!strcmp(reason, "rejected") && handler && !strcmp(handler, want_h) &&
                              !strcmp(err, want_e),
                          "%s: reason %s handler %s error %s", id, reason, handler ? handler : "-",
                          err);
        }
    }
    json_decref(all);
    char *order = list_ids(out1, false, NULL); /* DLQ order, for --limit */
    char *everything = list_ids(out1, true, NULL);
    SBT_CHECK(!strcmp(everything, "d1,d2,d3,p1,p2,p3,p4,p5,s1,s2,s3"));

    /* --type: exact, wildcards, repeated (patterns add up). */
    expect_list(dlq_name, N1, "p1,p2,p3,p5", "--type", "Payment.Card.Captured", NULL);
    expect_list(dlq_name, N1, "p1,p2,p3,p4,p5", "--type", "Payment.#", NULL);
    expect_list(dlq_name, N1, "d1,d2,d3", "--type", "Order.*", NULL);
    expect_list(dlq_name, N1, "p4", "--type", "*.Refund.*", NULL);
    expect_list(dlq_name, N1, "d3,s1,s2,s3", "--type", "Shipment.*", "--type", "Order.Updated",
                NULL);
    expect_list(dlq_name, N1, "", "--type", "Payment", NULL);
    /* --reason: one, a list. */
    expect_list(dlq_name, N1, "d1,d2,d3", "--reason", "decode", NULL);
    expect_list(dlq_name, N1, "p1,p2,p3,p4,p5,s1,s2,s3", "--reason", "rejected", NULL);
    expect_list(dlq_name, N1, everything, "--reason", "decode,rejected", NULL);
    expect_list(dlq_name, N1, "", "--reason", "timeout", NULL);
    /* --error: an extended regex on x-sb-error. */
    expect_list(dlq_name, N1, "p1,p2,p3,p4,p5", "--error", "declined by", NULL);
    expect_list(dlq_name, N1, "s1,s2,s3", "--error", "^addr(ess)? unknown$", NULL);
    expect_list(dlq_name, N1, "", "--error", "^declined", NULL);
    /* --handler: one, a list; decode failures have none. */
    expect_list(dlq_name, N1, "s1,s2,s3", "--handler", "rejecter-b", NULL);
    expect_list(dlq_name, N1, "p1,p2,p3,p4,p5,s1,s2,s3", "--handler", "rejecter-a, rejecter-b",
                NULL);
    expect_list(dlq_name, N1, "", "--handler", "rec", NULL);
    /* --since / --until split the batches (since inclusive, until exclusive). */
    expect_list(dlq_name, N1, "d2,d3,p4,p5,s3", "--since", split_s, NULL);
    expect_list(dlq_name, N1, "d1,p1,p2,p3,s1,s2", "--until", split_s, NULL);
    expect_list(dlq_name, N1, everything, "--since", "1h", NULL);
    expect_list(dlq_name, N1, "", "--until", "1h", NULL);
    /* --id */
    expect_list(dlq_name, N1, "s2", "--id", "s2", NULL);
    expect_list(dlq_name, N1, "", "--id", "s", NULL);
    /* --limit: the first N of the DLQ's order. */
    char first3[64];
    {
        const char *p = order;
        for (int k = 0; k < 3; k++)
            p = strchr(p, ',') + 1;
        snprintf(first3, sizeof first3, "%.*s", (int)(p - order - 1), order);
    }
    char *got = list_ids(out1, false, (const char *[]){"--limit", "3", NULL});
    SBT_CHECK_MSG(!strcmp(got, first3), "--limit 3: [%s], want [%s]", got, first3);
    free(got);
    SBT_CHECK(sbt_amqp_depth(url, dlq_name) == N1);
    expect_list(dlq_name, N1, everything, "--limit", "100", NULL);
    /* Combinations: every filter must hold; --limit counts the selected ones. */
    expect_list(dlq_name, N1, "p4,p5,s3", "--reason", "rejected", "--since", split_s, NULL);
    expect_list(dlq_name, N1, "p1,p2,p3", "--type", "Payment.#", "--until", split_s, NULL);
    expect_list(dlq_name, N1, "s3", "--handler", "rejecter-b", "--type", "Shipment.Lost", NULL);
    expect_list(dlq_name, N1, "", "--reason", "decode", "--handler", "rejecter-a", NULL);
    got = list_ids(
        out1, false,
        (const char *[]){"--handler", "rejecter-a", "--error", "card", "--limit", "2", NULL});
    {
        /* the first two p's of the DLQ's order */
        char want[32] = "";
        int k = 0;
        for (const char *p = order; *p && k < 2; p = strchr(p, ',') ? strchr(p, ',') + 1 : "") {
            if (*p == 'p') {
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%.2s", k ? "," : "",
                         p);
                k++;
            }
        }
        SBT_CHECK_MSG(!strcmp(got, want), "--handler --error --limit 2: [%s], want [%s]", got,
                      want);
    }
    free(got);
    /* stats honour the filters too */
    SBT_CHECK(dlqv(out1, (const char *[]){"stats", "--json", "--since", split_s, NULL}) == 0);
    json_t *st = load_lines(out1);
    SBT_CHECK(json_array_size(st) == 1);
    json_t *s0 = json_array_get(st, 0);
    SBT_CHECK(json_integer_value(json_object_get(s0, "total")) == 5);
    SBT_CHECK(
        json_integer_value(json_object_get(json_object_get(s0, "by_handler"), "rejecter-a")) == 2);
    json_decref(st);
    /* Reading never consumed. */
    got = list_ids(out1, false, NULL);
    SBT_CHECK_MSG(!strcmp(got, order), "DLQ order changed by reading: [%s], was [%s]", got, order);
    free(got);

    /* purge with filters: exactly the selection goes. */
    SBT_CHECK(dlqv(out1, (const char *[]){"purge", "--handler", "rejecter-b", "--until", split_s,
                                          NULL}) == 0);
    SBT_CHECK(wait_depth(dlq_name, N1 - 2, 5000) == N1 - 2);
    expect_list(dlq_name, N1 - 2, "d1,d2,d3,p1,p2,p3,p4,p5,s3", NULL);
    SBT_CHECK(dlqv(out1, (const char *[]){"purge", "--type", "Order.*", "--error", ".", "--since",
                                          split_s, NULL}) == 0);
    SBT_CHECK(wait_depth(dlq_name, N1 - 4, 5000) == N1 - 4);
    expect_list(dlq_name, N1 - 4, "d1,p1,p2,p3,p4,p5,s3", NULL);
    SBT_CHECK(dlqv(out1, (const char *[]){"purge", "--id", "nope", NULL}) == 0);
    SBT_CHECK(sbt_amqp_depth(url, dlq_name) == N1 - 4);

    /* replay --dry-run with a filter: prints exactly the selection, moves nothing. */
    SBT_CHECK(dlqv(out1, (const char *[]){"replay", "--dry-run", "--type", "Payment.#", "--since",
                                          split_s, NULL}) == 0);
    FILE *f = fopen(out1, "r");
    SBT_CHECK(f != NULL);
    char line[256];
    const char *would[8];
    size_t nw = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        SBT_CHECK_MSG(!strncmp(line, "would replay ", 13) && nw < 8, "dry run printed \"%s\"",
                      line);
        would[nw++] = strdup(line + 13);
    }
    fclose(f);
    char *w = join(would, nw, true);
    SBT_CHECK_MSG(!strcmp(w, "p4,p5"), "dry run would replay [%s], want [p4,p5]", w);
    free(w);
    for (size_t k = 0; k < nw; k++)
        free((void *)would[k]);
    usleep(300000);
    SBT_CHECK(sbt_amqp_depth(url, queue) == 0); /* bound to Payment.#: nothing arrived */
    expect_list(dlq_name, N1 - 4, "d1,p1,p2,p3,p4,p5,s3", NULL);

    free(order);
    free(everything);
    printf("ok: filters, purge with filters, dry-run replay with filters\n");
}

/* ---- part 2: an interrupted replay ------------------------------------------------------ */

#define N2 30

static void part_interrupted(void)
{
    char *exchange = sbt_unique_name("sbt.dlqr.x");
    char *queue = sbt_unique_name("sbt.dlqr.q");
    char dlq_name[256], dlx[256], retry_q[256];
    snprintf(dlq_name, sizeof dlq_name, "%s.dlq", queue);
    snprintf(dlx, sizeof dlx, "%s.dlx", exchange);
    /* BUSY_RETRY_MS (settle.c): a duplicate arriving while its first copy is in progress */
    snprintf(retry_q, sizeof retry_q, "%s.retry.1000", queue);
    own_queue(queue);
    own_queue(strdup(dlq_name));
    own_queue(strdup(retry_q));
    own_exchange(exchange);
    own_exchange(strdup(dlx));
    char *ledger = temp_file("", ".ledger");
    char *log = temp_file("", ".log");
    char *rlog = temp_file("", ".log");
    char *out = temp_file("", ".out");
    redis_prefix = sbt_unique_name("sbt:dlqr:");
    int port = sbt_free_port();

    const char *fmt = "service: {name: dlq-replay-kill, shutdown_timeout: 20s}\n"
                      "admin: {listen: \"%s\"}\n"
                      "log: {level: info, format: text}\n"
                      "transport:\n"
                      "  kind: amqp\n"
                      "  amqp: {url: \"%s\", exchange: %s, queue: %s, prefetch: 32}\n"
                      "idempotency:\n"
                      "  store: redis\n"
                      "  redis: {url: \"%s\", prefix: \"%s\", lease: 10s, ttl: 1h}\n"
                      "handlers:\n"
                      "  - name: work\n"
                      "    bind: [\"Replay.#\"]\n"
                      "%s";
    char failing[2048], fixed[2048], handler[512], admin[64];
    snprintf(failing, sizeof failing, fmt, "", url, exchange, queue, redis_url, redis_prefix,
             "    module: fail\n    config: {outcome: reject, reason: not deployed yet}\n");
    snprintf(handler, sizeof handler, "    module: record\n    config: {path: %s}\n", ledger);
    snprintf(admin, sizeof admin, "127.0.0.1:%d", port);
    snprintf(fixed, sizeof fixed, fmt, admin, url, exchange, queue, redis_url, redis_prefix,
             handler);

    /* 30 dead letters. */
    pid_t pid = start_consumer(failing, queue, log, 0);
    char *ids[N2], *bodies[N2];
    const char *rks[] = {"Replay.Item"};
    for (int k = 0; k < N2; k++) {
        char id[16], b[128];
        snprintf(id, sizeof id, "rp-%02d", k);
        SBT_CHECK((ids[k] = strdup(id)) != NULL);
        snprintf(b, sizeof b, "{\"Id\":\"%s\",\"N\":%d}", ids[k], k);
        SBT_CHECK((bodies[k] = strdup(b)) != NULL);
    }
    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK(c != NULL);
    SBT_CHECK(sbt_amqp_publish_many(c, exchange, rks, true, (const char *const *)bodies,
                                    (const char *const *)ids, N2, NULL, NULL) == 0);
    SBT_CHECK_MSG(wait_depth(dlq_name, N2, 20000) == N2, "not dead-lettered (log %s)", log);
    stop_consumer(pid);
    long done, other;
    redis_keys(false, &done, &other);
    SBT_CHECK_MSG(done == 0 && other == 0, "a rejected event left keys: %ld done, %ld other", done,
                  other);

    /* The fixed consumer; replay at 5/s, SIGKILLed after several copies were handled. */
    pid = start_consumer(fixed, queue, log, port);
    const char *rargs[] = {"dlq", "-c", cfg_path, "replay", "--rate", "5/s", NULL};
    pid_t rp = sbt_spawn_switchboard(rargs, NULL, rlog);
    own_child(rp);
    SBT_CHECK_MSG(sbt_wait_lines(ledger, 8, 30000), "replay made no progress (%s, %s)", rlog, log);
    int st = sbt_stop(rp, SIGKILL, 5000);
    disown_child(rp);
    SBT_CHECK_MSG(st == 128 + SIGKILL, "replay exited %d before the kill (%s)", st, rlog);
    size_t at_kill = sbt_count_lines(ledger);
    SBT_CHECK_MSG(at_kill < N2, "replay finished before the kill: not an interruption");

    /* What the killed replay held comes back: handled copies + dead letters = 30, or 31
     * when the kill fell between a confirmed publish and its ack. */
    long recorded = 0, left = 0;
    uint64_t deadline = sbt_now_ms() + 15000;
    for (;;) {
        recorded = (long)sbt_count_lines(ledger);
        left = sbt_amqp_depth(url, dlq_name);
        if (recorded + left >= N2 && metric(port, M_RECEIVED) == recorded)
            break;
        SBT_CHECK_MSG(sbt_now_ms() < deadline, "after the kill: %ld handled + %ld in the DLQ",
                      recorded, left);
        usleep(100000);
    }
    wait_settled_rmq(dlq_name, left, 10000);
    long window = recorded + left - N2;
    SBT_CHECK_MSG(window == 0 || window == 1, "after the kill: %ld handled + %ld in the DLQ",
                  recorded, left);
    printf("killed the replay: %zu handled at the kill, %ld handled, %ld back in the DLQ%s\n",
           at_kill, recorded, left, window ? " (the kill fell between a publish and its ack)" : "");

    /* The confirmed-but-not-acked state, on purpose: a copy of a dead letter still in the
     * DLQ, published as replay publishes it. */
    SBT_CHECK(dlqv(out, (const char *[]){"list", "--json", "--limit", "1", NULL}) == 0);
    json_t *one = load_lines(out);
    SBT_CHECK(json_array_size(one) == 1);
    json_t *rec = json_array_get(one, 0);
    const char *dup_id = rec_id(rec);
    const char *dup_body = json_string_value(json_object_get(rec, "body"));
    const char *dup_rk = rec_header(rec, "x-sb-original-routing-key");
    SBT_CHECK(dup_body && dup_rk && !strcmp(dup_rk, "Replay.Item"));
    SBT_CHECK(
        sbt_amqp_publish_many(c, exchange, &dup_rk, true, &dup_body, &dup_id, 1, NULL, NULL) == 0);
    SBT_CHECK_MSG(sbt_wait_lines(ledger, (size_t)recorded + 1, 10000),
                  "the early copy of %s was not handled (%s)", dup_id, log);
    printf("published %s early, as a replay killed after its confirm would have\n", dup_id);
    sbt_amqp_close(c);

    /* Replay again, to completion. */
    SBT_CHECK(dlqv(NULL, (const char *[]){"replay", NULL}) == 0);
    SBT_CHECK_MSG(sbt_wait_lines(ledger, N2, 20000), "not every id handled (%s)", log);
    deadline = sbt_now_ms() + 20000;
    long dups = 0, received = 0, ok = 0, retried = 0;
    for (;;) {
        dups = metric(port, M_DUP);
        ok = metric(port, M_OK);
        retried = metric(port, M_RETRIED);
        received = metric(port, M_RECEIVED);
        if (dups >= 1 + window && ok == N2 && received == ok + dups + retried &&
            sbt_amqp_depth(url, queue) == 0 && sbt_amqp_depth(url, dlq_name) == 0)
            break;
        SBT_CHECK_MSG(sbt_now_ms() < deadline,
                      "consumer: received %ld, ok %ld, duplicate %ld, retried %ld (%s)", received,
                      ok, dups, retried, log);
        usleep(100000);
    }
    wait_settled_rmq(queue, 0, 10000);
    wait_settled_rmq(dlq_name, 0, 10000);
    printf("consumer: received %ld, handled %ld, skipped %ld duplicate(s), %ld busy retries\n",
           received, ok, dups, retried);
    size_t missing, dup_lines, unexpected;
    sbt_ledger_check(ledger, (const char *const *)ids, N2, &missing, &dup_lines, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dup_lines == 0 && unexpected == 0,
                  "ledger: missing %zu, duplicated %zu, unexpected %zu", missing, dup_lines,
                  unexpected);
    SBT_CHECK(sbt_count_lines(ledger) == N2);
    redis_keys(false, &done, &other);
    SBT_CHECK_MSG(done == N2 && other == 0, "Redis: %ld done, %ld other keys", done, other);

    /* Nothing unacked: once the consumer is gone, whatever it held would be ready again. */
    stop_consumer(pid);
    SBT_CHECK(sbt_amqp_depth(url, queue) == 0);
    SBT_CHECK(sbt_amqp_depth(url, dlq_name) == 0);
    SBT_CHECK(sbt_amqp_depth(url, retry_q) <= 0);
    SBT_CHECK(sbt_count_lines(ledger) == N2);
    json_decref(one);
    for (int k = 0; k < N2; k++) {
        free(ids[k]);
        free(bodies[k]);
    }
    printf("ok: interrupted replay, every id handled exactly once\n");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    url = sbt_service("SB_TEST_AMQP_URL", "RabbitMQ");
    redis_url = sbt_service("SB_TEST_REDIS_URL", "Redis");
    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK_MSG(c != NULL, "cannot connect to RabbitMQ at %s", url);
    sbt_amqp_close(c);
    atexit(cleanup);
    uint64_t t0 = sbt_now_ms();
    part_filters();
    printf("part 1: %.1f s\n", (double)(sbt_now_ms() - t0) / 1e3);
    t0 = sbt_now_ms();
    part_interrupted();
    printf("part 2: %.1f s\n", (double)(sbt_now_ms() - t0) / 1e3);
    passed = true;
    cleanup();
    return 0;
}
