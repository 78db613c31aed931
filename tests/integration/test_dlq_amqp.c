/* `switchboard dlq` on a real RabbitMQ dead-letter queue, end to end:
 *  - a real consumer dead-letters events with mixed reasons (handler REJECT, and bodies
 *    that are not JSON: decode);
 *  - stats --json counts by reason; list --json lines parse; show ID finds one;
 *  - export, import into a fresh queue, export again: bodies, properties and headers equal;
 *  - --dry-run moves nothing; replay --type --limit moves exactly one;
 *  - replay --reason rejected after "fixing" the handler (consumer restarted with a config
 *    whose handler succeeds): each handled once (record ledger), the DLQ keeps the others;
 *  - replayed copies that fail again come back with x-sb-replay-count; --max-replays 1
 *    refuses them (exit 1) unless --force; purge removes the selected ones. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

static const char *url;
static char *cfg_path;

/* Runs `switchboard dlq -c CFG args...`, stdout to out_path (may be NULL); exit status. */
static int dlq(const char *out_path, const char *const *args)
{
    return sbt_run_cli((const char *const[]){"dlq", "-c", cfg_path, NULL}, args, out_path, NULL);
}

static json_t *load_lines(const char *path, size_t *n)
{
    json_t *arr = sbt_load_json_lines(path);
    *n = json_array_size(arr);
    return arr;
}

static long wait_depth(const char *q, long want)
{
    long d = -1;
    for (int i = 0; i < 150 && (d = sbt_amqp_depth(url, q)) != want; i++)
        usleep(100000);
    return d;
}

static const char *body_of(json_t *rec)
{
    return json_string_value(json_object_get(rec, "body"));
}

static json_t *find_body(json_t *arr, const char *body)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (body_of(v) && !strcmp(body_of(v), body))
            return v;
    }
    return NULL;
}

static const char *header(json_t *rec, const char *name)
{
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(rec, "headers"), i, h)
    {
        if (!strcmp(json_string_value(json_array_get(h, 0)), name)) {
            json_t *v = json_array_get(h, 2);
            static char buf[64];
            if (json_is_integer(v)) {
                snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
                return buf;
            }
            return json_string_value(v);
        }
    }
    return NULL;
}

static pid_t start_consumer(const char *exchange, const char *queue, const char *ledger, bool fixed,
                            char **cfg_out, const char *log)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "service: {name: dlq-test}\n"
             "admin: {listen: \"\"}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: amqp\n"
             "  amqp: {url: \"%s\", exchange: %s, queue: %s, prefetch: 32}\n"
             "idempotency: {store: none}\n"
             "handlers:\n"
             "%s"
             "  - name: rec\n"
             "    module: record\n"
             "    bind: [\"Order.*\"%s]\n"
             "    config: {path: %s}\n",
             url, exchange, queue,
             fixed ? ""
                   : "  - name: rejecter\n    module: fail\n    bind: [\"Reject.#\"]\n"
                     "    config: {outcome: reject, reason: bad order}\n",
             fixed ? ", \"Reject.#\"" : "", ledger);
    *cfg_out = sbt_write_temp(yaml, ".yaml");
    const char *args[] = {"run", "-c", *cfg_out, NULL};
    pid_t pid = sbt_spawn_switchboard(args, NULL, log);
    size_t before = sbt_count_lines(log);
    SBT_CHECK_MSG(sbt_wait_lines(log, before + 2, 10000), "switchboard did not start (%s)", log);
    for (int i = 0; i < 100 && sbt_amqp_depth(url, queue) < 0; i++)
        usleep(100000);
    usleep(300000);
    return pid;
}

int main(void)
{
    url = sbt_service("SB_TEST_AMQP_URL", "RabbitMQ");
    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK_MSG(c != NULL, "cannot connect to RabbitMQ at %s", url);
    char *exchange = sbt_unique_name("sbt.dlq.x");
    char *queue = sbt_unique_name("sbt.dlq.q");
    char *fresh = sbt_unique_name("sbt.dlq.fresh");
    char dlq_name[256], dlx[256];
    snprintf(dlq_name, sizeof dlq_name, "%s.dlq", queue);
    snprintf(dlx, sizeof dlx, "%s.dlx", exchange);
    char *ledger = sbt_write_temp("", ".ledger");
    char *log = sbt_write_temp("", ".log");
    char *out = sbt_write_temp("", ".out");
    char *e1 = sbt_write_temp("", ".jsonl");
    char *e2 = sbt_write_temp("", ".jsonl");

    /* 1. Dead letters: 3 rejected, 2 decode. */
    char *cfg_a, *cfg_b;
    pid_t pid = start_consumer(exchange, queue, ledger, false, &cfg_a, log);
    cfg_path = cfg_a;
    const char *bodies[] = {"{\"Id\":\"r1\"}", "{\"Id\":\"r2\"}", "{\"Id\":\"r3\"}", "not json 1",
                            "not json 2"};
    const char *rks[] = {"Reject.Order", "Reject.Order", "Reject.Invoice", "Order.Bad",
                         "Order.Bad"};
    const char *mids[] = {"r1", "r2", "r3", "d1", "d2"};
    SBT_CHECK(sbt_amqp_publish_many(c, exchange, rks, false, bodies, mids, 5, "x-app", "kept") ==
              0);
    SBT_CHECK_MSG(wait_depth(dlq_name, 5) == 5, "dead letters did not arrive (log %s)", log);
    SBT_CHECK(sbt_stop(pid, SIGTERM, 15000) == 0);

    /* 2. stats, list, show. */
    SBT_CHECK(dlq(out, (const char *[]){"stats", "--json", NULL}) == 0);
    size_t n;
    json_t *st = load_lines(out, &n);
    SBT_CHECK(n == 1);
    json_t *s0 = json_array_get(st, 0);
    SBT_CHECK(json_integer_value(json_object_get(s0, "total")) == 5);
    json_t *br = json_object_get(s0, "by_reason");
    SBT_CHECK_MSG(json_integer_value(json_object_get(br, "rejected")) == 3 &&
                      json_integer_value(json_object_get(br, "decode")) == 2,
                  "by_reason wrong");
    json_decref(st);
    SBT_CHECK(dlq(out, (const char *[]){"list", "--json", NULL}) == 0);
    json_t *l = load_lines(out, &n);
    SBT_CHECK_MSG(n == 5, "list --json gave %zu lines", n);
    json_decref(l);
    SBT_CHECK(dlq(out, (const char *[]){"list", NULL}) == 0);
    SBT_CHECK(sbt_count_lines(out) == 5);
    SBT_CHECK(dlq(out, (const char *[]){"show", "r2", NULL}) == 0);
    SBT_CHECK(dlq(out, (const char *[]){"show", "nope", NULL}) != 0);
    SBT_CHECK(sbt_amqp_depth(url, dlq_name) == 5);

    /* 3. export -> import into a fresh DLQ -> export: identical bodies, props, headers. */
    SBT_CHECK(dlq(NULL, (const char *[]){"export", "--out", e1, NULL}) == 0);
    SBT_CHECK(sbt_count_lines(e1) == 5);
    SBT_CHECK(sbt_amqp_declare_queue(c, fresh, NULL, NULL) == 0);
    SBT_CHECK(dlq(NULL, (const char *[]){"import", e1, "--queue", fresh, NULL}) == 0);
    SBT_CHECK(wait_depth(fresh, 5) == 5);
    SBT_CHECK(dlq(NULL, (const char *[]){"export", "--queue", fresh, "--out", e2, NULL}) == 0);
    size_t n1, n2;
    json_t *a1 = load_lines(e1, &n1), *a2 = load_lines(e2, &n2);
    SBT_CHECK(n1 == 5 && n2 == 5);
    for (size_t i = 0; i < 5; i++) {
        json_t *x = find_body(a1, bodies[i]), *y = find_body(a2, bodies[i]);
        SBT_CHECK_MSG(x && y, "body %s missing", bodies[i]);
        SBT_CHECK_MSG(json_equal(json_object_get(x, "headers"), json_object_get(y, "headers")),
                      "headers differ for %s", bodies[i]);
        SBT_CHECK(json_equal(json_object_get(x, "props"), json_object_get(y, "props")));
        SBT_CHECK(header(x, "x-app") && !strcmp(header(x, "x-app"), "kept"));
    }
    json_decref(a1);
    json_decref(a2);

    /* 4. dry run moves nothing. */
    SBT_CHECK(dlq(out, (const char *[]){"replay", "--reason", "rejected", "--dry-run", NULL}) == 0);
    SBT_CHECK(sbt_count_lines(out) == 3);
    SBT_CHECK(sbt_amqp_depth(url, dlq_name) == 5);

    /* 5. Fixed handler: replay --type/--limit one, then the rest of the rejected ones. */
    pid = start_consumer(exchange, queue, ledger, true, &cfg_b, log);
    SBT_CHECK(dlq(NULL, (const char *[]){"replay", "--type", "Reject.Invoice", "--limit", "1",
                                         NULL}) == 0);
    SBT_CHECK_MSG(sbt_wait_lines(ledger, 1, 10000), "replayed r3 not handled (log %s)", log);
    SBT_CHECK(wait_depth(dlq_name, 4) == 4);
    SBT_CHECK(dlq(NULL, (const char *[]){"replay", "--reason", "rejected", "--rate", "100/s",
                                         NULL}) == 0);
    SBT_CHECK(sbt_wait_lines(ledger, 3, 10000));
    SBT_CHECK(wait_depth(dlq_name, 2) == 2);

    /* 6. The decode ones fail again: back with x-sb-replay-count 1. */
    SBT_CHECK(dlq(NULL, (const char *[]){"replay", "--reason", "decode", NULL}) == 0);
    usleep(500000);
    SBT_CHECK(wait_depth(dlq_name, 2) == 2);
    usleep(300000);
    const char *ids[] = {"r1", "r2", "r3"};
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, ids, 3, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dups == 0 && unexpected == 0,
                  "ledger: missing %zu dups %zu unexpected %zu", missing, dups, unexpected);
    SBT_CHECK(dlq(out, (const char *[]){"list", "--json", NULL}) == 0);
    l = load_lines(out, &n);
    SBT_CHECK(n == 2);
    for (size_t i = 0; i < n; i++) {
        const char *rc = header(json_array_get(l, i), "x-sb-replay-count");
        SBT_CHECK_MSG(rc && !strcmp(rc, "1"), "x-sb-replay-count %s", rc ? rc : "(none)");
        SBT_CHECK(header(json_array_get(l, i), "x-sb-replayed-at") != NULL);
    }
    json_decref(l);
    SBT_CHECK(dlq(NULL, (const char *[]){"replay", "--max-replays", "1", NULL}) == 1);
    SBT_CHECK(sbt_amqp_depth(url, dlq_name) == 2);
    SBT_CHECK(dlq(NULL, (const char *[]){"replay", "--max-replays", "1", "--force", NULL}) == 0);
    SBT_CHECK(wait_depth(dlq_name, 2) == 2);

    /* 7. purge. */
    SBT_CHECK(dlq(NULL, (const char *[]){"purge", NULL}) == 64);
    SBT_CHECK(dlq(NULL, (const char *[]){"purge", "--reason", "decode", "--dry-run", NULL}) == 0);
    SBT_CHECK(sbt_amqp_depth(url, dlq_name) == 2);
    SBT_CHECK(dlq(NULL, (const char *[]){"purge", "--reason", "decode", NULL}) == 0);
    SBT_CHECK(sbt_amqp_depth(url, dlq_name) == 0);
    SBT_CHECK(sbt_stop(pid, SIGTERM, 15000) == 0);
    SBT_CHECK(sbt_count_lines(ledger) == 3);

    sbt_amqp_close(c);
    const char *qs[] = {queue, dlq_name, fresh, NULL};
    const char *xs[] = {exchange, dlx, NULL};
    sbt_amqp_cleanup(url, qs, xs);
    const char *files[] = {ledger, log, out, e1, e2, cfg_a, cfg_b};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        unlink(files[i]);
    char *owned[] = {exchange, queue, fresh, ledger, log, out, e1, e2, cfg_a, cfg_b};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        free(owned[i]);
    printf("ok: dlq stats, list, show, export/import, dry-run, replay, max-replays, purge\n");
    return 0;
}
