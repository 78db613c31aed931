/* The RabbitMQ transport's settlement paths, end to end through `switchboard run`:
 *  - wildcard bindings: the queue is bound per handler pattern (Order.*, Invoice.#), so
 *    matching keys arrive and others (Nope.x) never reach the queue;
 *  - retry with delay then success: `fail times: 1` + a fixed 1 s delay; the record ledger
 *    shows attempt 1 and attempt 2 about 1 s apart (through <queue>.retry.1000);
 *  - max attempts: `fail` always, 2 attempts (delay bucket 250 ms), then the DLQ;
 *  - REJECT and a body that is not JSON (decode) go straight to the DLQ;
 *  - every dead letter is read back with basic.get: body, message_id, persistence and an
 *    application header unchanged, and every x-sb-* header checked;
 *  - out-of-order settlement: slow asynchronous handlers (asyncmod pending_ok, 300 ms)
 *    interleaved with fast ones; all recorded exactly once (an ack sent twice or for a
 *    wrong tag would kill the channel and show up as redeliveries), queue empty at the end. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

#define N_FAST 200
#define N_SLOW 40

/* Ledger times of id's attempts 1 and 2, in ms since the epoch (0 when absent). */
static void attempt_times(const char *ledger, const char *id, double *t1, double *t2)
{
    *t1 = *t2 = 0;
    FILE *f = fopen(ledger, "r");
    SBT_CHECK(f != NULL);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        if (!j)
            continue;
        const char *lid = json_string_value(json_object_get(j, "id"));
        const char *tm = json_string_value(json_object_get(j, "time"));
        json_int_t at = json_integer_value(json_object_get(j, "attempt"));
        if (lid && tm && !strcmp(lid, id)) {
            int h, mi;
            double s;
            if (sscanf(tm + 11, "%d:%d:%lf", &h, &mi, &s) == 3) {
                double ms = ((h * 60.0 + mi) * 60.0 + s) * 1000.0;
                if (at == 1)
                    *t1 = ms;
                else if (at == 2)
                    *t2 = ms;
            }
        }
        json_decref(j);
    }
    fclose(f);
}

static void check_xsb(sbt_amqp_msg_t *m, const char *exchange, const char *rk, const char *reason,
                      const char *handler, const char *attempts)
{
    const char *v;
    SBT_CHECK_MSG((v = sbt_amqp_msg_header(m, "x-sb-reason")) && !strcmp(v, reason),
                  "x-sb-reason %s, want %s", v ? v : "(none)", reason);
    SBT_CHECK_MSG((v = sbt_amqp_msg_header(m, "x-sb-error")) && *v, "x-sb-error empty");
    v = sbt_amqp_msg_header(m, "x-sb-handler");
    if (handler)
        SBT_CHECK_MSG(v && !strcmp(v, handler), "x-sb-handler %s, want %s", v ? v : "(none)",
                      handler);
    else
        SBT_CHECK_MSG(v == NULL, "x-sb-handler %s for a %s failure", v, reason);
    SBT_CHECK_MSG((v = sbt_amqp_msg_header(m, "x-sb-attempts")) && !strcmp(v, attempts),
                  "x-sb-attempts %s, want %s (%s)", v ? v : "(none)", attempts, reason);
    SBT_CHECK((v = sbt_amqp_msg_header(m, "x-sb-consumer")) && !strcmp(v, "retry-dlq-test"));
    SBT_CHECK_MSG((v = sbt_amqp_msg_header(m, "x-sb-failed-at")) && strlen(v) >= 20 &&
                      v[4] == '-' && v[10] == 'T' && v[strlen(v) - 1] == 'Z',
                  "x-sb-failed-at %s", v ? v : "(none)");
    SBT_CHECK((v = sbt_amqp_msg_header(m, "x-sb-original-exchange")) && !strcmp(v, exchange));
    SBT_CHECK((v = sbt_amqp_msg_header(m, "x-sb-original-routing-key")) && !strcmp(v, rk));
    SBT_CHECK(!strcmp(m->routing_key, rk)); /* the DLX routes by the original key */
    SBT_CHECK((v = sbt_amqp_msg_header(m, "x-app")) && !strcmp(v, "kept"));
    SBT_CHECK(m->persistent);
}

int main(void)
{
    const char *url = sbt_service("SB_TEST_AMQP_URL", "RabbitMQ");
    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK_MSG(c != NULL, "cannot connect to RabbitMQ at %s", url);
    char *exchange = sbt_unique_name("sbt.retry.x");
    char *queue = sbt_unique_name("sbt.retry.q");
    char ledger[] = "/tmp/sbt-retry-ledger-XXXXXX";
    int lfd = mkstemp(ledger);
    SBT_CHECK(lfd >= 0);
    close(lfd);

    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "service: {name: retry-dlq-test}\n"
             "admin: {listen: \"\"}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: amqp\n"
             "  amqp: {url: \"%s\", exchange: %s, queue: %s, prefetch: 32}\n"
             "idempotency: {store: none}\n"
             "retry: {policy: fixed, base_delay: 1s, max_attempts: 3, jitter: false}\n"
             "handlers:\n"
             "  - name: flaky\n"
             "    module: fail\n"
             "    bind: [\"Retry.*\"]\n"
             "    config: {times: 1}\n"
             "  - name: doomed\n"
             "    module: fail\n"
             "    bind: [\"Doomed.#\"]\n"
             "    retry: {base_delay: 200ms, max_attempts: 2}\n"
             "  - name: rejecter\n"
             "    module: fail\n"
             "    bind: [\"Reject.#\"]\n"
             "    config: {outcome: reject, reason: bad order}\n"
             "  - name: slow\n"
             "    module: %s\n"
             "    config: {delay_ms: 300}\n"
             "  - name: rec\n"
             "    module: record\n"
             "    bind: [\"Order.*\", \"Invoice.#\", \"Retry.*\", \"Async.pending_ok\"]\n"
             "    config: {path: %s}\n",
             url, exchange, queue, MOD_ASYNC, ledger);
    char *cfg = sbt_write_temp(yaml, ".yaml");
    char *log = sbt_write_temp("", ".log");
    const char *args[] = {"run", "-c", cfg, NULL};
    pid_t pid = sbt_spawn_switchboard(args, NULL, log);
    /* Started means the topology exists. */
    SBT_CHECK_MSG(sbt_wait_lines(log, 2, 10000), "switchboard did not start (log: %s)", log);
    for (int i = 0; i < 100 && sbt_amqp_depth(url, queue) < 0; i++)
        usleep(100000);

    /* Fast and slow events interleaved, plus the routing checks. */
    enum { N = N_FAST + N_SLOW + 3 };
    char *bodies[N];
    const char *rks[N];
    size_t n = 0;
    for (int i = 0; i < N_FAST + N_SLOW; i++) {
        char b[256];
        bool slow = i % 6 == 5 && i / 6 < N_SLOW;
        snprintf(b, sizeof b, "{\"Id\":\"ooo-%d\",\"JobId\":\"j%d\"}", i, i);
        bodies[n] = strdup(b);
        rks[n++] = slow ? "Async.pending_ok" : (i % 2 ? "Order.Created" : "Invoice.Paid.Eu");
    }
    bodies[n] = strdup("{\"Id\":\"retry-1\"}");
    rks[n++] = "Retry.Once";
    bodies[n] = strdup("{\"Id\":\"nope-1\"}");
    rks[n++] = "Nope.x"; /* bound by nothing: never reaches the queue */
    bodies[n] = strdup("{\"Id\":\"order-deep\"}");
    rks[n++] = "Order.Created.Deep"; /* Order.* does not match three words */
    SBT_CHECK(sbt_amqp_publish_many(c, exchange, rks, false, (const char *const *)bodies, NULL, n,
                                    "x-app", "kept") == 0);
    const char *dl_bodies[] = {"{\"Id\":\"doomed-1\"}", "{\"Id\":\"reject-1\"}", "not json"};
    const char *dl_rks[] = {"Doomed.Now", "Reject.Order", "Order.Bad"};
    const char *dl_mids[] = {"mid-doomed", "mid-reject", "mid-decode"};
    SBT_CHECK(sbt_amqp_publish_many(c, exchange, dl_rks, false, dl_bodies, dl_mids, 3, "x-app",
                                    "kept") == 0);

    /* N_FAST + N_SLOW recorded once each, retry-1 twice. */
    size_t want = N_FAST + N_SLOW + 2;
    SBT_CHECK_MSG(sbt_wait_lines(ledger, want, 20000), "only %zu of %zu lines (log: %s)",
                  sbt_count_lines(ledger), want, log);
    /* Three dead letters. */
    char dlq[256];
    snprintf(dlq, sizeof dlq, "%s.dlq", queue);
    for (int i = 0; i < 100 && sbt_amqp_depth(url, dlq) < 3; i++)
        usleep(100000);
    usleep(300000); /* anything extra would show now */
    int st = sbt_stop(pid, SIGTERM, 15000);
    SBT_CHECK_MSG(st == 0, "switchboard exited with %d (log: %s)", st, log);
    SBT_CHECK_MSG(sbt_count_lines(ledger) == want, "%zu ledger lines, want %zu",
                  sbt_count_lines(ledger), want);

    const char *expect[N_FAST + N_SLOW + 1];
    char *own[N_FAST + N_SLOW];
    for (int i = 0; i < N_FAST + N_SLOW; i++) {
        char id[32];
        snprintf(id, sizeof id, "ooo-%d", i);
        expect[i] = own[i] = strdup(id);
    }
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, expect, N_FAST + N_SLOW, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dups == 0 && unexpected == 2,
                  "out-of-order: missing %zu, duplicated %zu, unexpected %zu (want the 2 "
                  "retry-1 lines only)",
                  missing, dups, unexpected);
    double t1, t2;
    attempt_times(ledger, "retry-1", &t1, &t2);
    SBT_CHECK_MSG(t1 > 0 && t2 > 0, "retry-1 attempts not both recorded");
    SBT_CHECK_MSG(t2 - t1 >= 950 && t2 - t1 <= 3000, "retry delay %.0f ms, want ~1000", t2 - t1);

    SBT_CHECK_MSG(sbt_amqp_depth(url, queue) == 0, "queue %s not empty", queue);
    SBT_CHECK(sbt_amqp_depth(url, dlq) == 3);
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        sbt_amqp_msg_t *m = sbt_amqp_get_msg(c, dlq, 2000);
        SBT_CHECK(m != NULL);
        if (!strcmp(m->body, "{\"Id\":\"doomed-1\"}")) {
            SBT_CHECK(m->message_id && !strcmp(m->message_id, "mid-doomed"));
            check_xsb(m, exchange, "Doomed.Now", "max-attempts", "doomed", "2");
            seen |= 1;
        } else if (!strcmp(m->body, "{\"Id\":\"reject-1\"}")) {
            SBT_CHECK(m->message_id && !strcmp(m->message_id, "mid-reject"));
            check_xsb(m, exchange, "Reject.Order", "rejected", "rejecter", "1");
            const char *e = sbt_amqp_msg_header(m, "x-sb-error");
            SBT_CHECK_MSG(strstr(e, "bad order") != NULL, "x-sb-error %s", e);
            seen |= 2;
        } else if (!strcmp(m->body, "not json")) {
            SBT_CHECK(m->message_id && !strcmp(m->message_id, "mid-decode"));
            check_xsb(m, exchange, "Order.Bad", "decode", NULL, "1");
            seen |= 4;
        } else {
            sbt_fail(__FILE__, __LINE__, "unexpected dead letter %s", m->body);
        }
        sbt_amqp_msg_free(m);
    }
    SBT_CHECK(seen == 7);

    sbt_amqp_close(c);
    char dlx[256], r1[300], r2[300];
    snprintf(dlx, sizeof dlx, "%s.dlx", exchange);
    snprintf(r1, sizeof r1, "%s.retry.1000", queue);
    snprintf(r2, sizeof r2, "%s.retry.250", queue);
    const char *qs[] = {queue, dlq, r1, r2, NULL};
    const char *xs[] = {exchange, dlx, NULL};
    sbt_amqp_cleanup(url, qs, xs);
    unlink(ledger);
    unlink(cfg);
    unlink(log);
    for (size_t i = 0; i < n; i++)
        free(bodies[i]);
    for (int i = 0; i < N_FAST + N_SLOW; i++)
        free(own[i]);
    free(exchange);
    free(queue);
    free(cfg);
    free(log);
    printf("ok: wildcards, retry, max-attempts, reject, decode, out-of-order acks\n");
    return 0;
}
