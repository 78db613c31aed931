/* RabbitMQ blocks the connection (a memory alarm: the high watermark set to 1 byte with
 * rabbitmqctl) while every event needs a retry copy published: switchboard logs that the
 * broker blocked it, /readyz answers 503, nothing is acked meanwhile; once the watermark is
 * restored the broker unblocks it, it logs so, is ready again, and every event goes through
 * its retry (attempts 1 and 2 in the ledger). The watermark is always restored, also when
 * the test fails or is interrupted (atexit and signal handlers). Runs alone (RUN_SERIAL): it
 * disturbs the shared broker. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

enum { N = 20 };

static char g_restore[256]; /* the rabbitmqctl command that restores the watermark */
static atomic_int g_alarm;

static void restore_watermark(void)
{
    if (atomic_exchange(&g_alarm, 0) && system(g_restore) != 0)
        fprintf(stderr, "WARNING: could not restore RabbitMQ's memory watermark: run %s\n",
                g_restore);
}

static void on_signal(int sig)
{
    restore_watermark();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* The watermark now, as the arguments of set_vm_memory_high_watermark. */
static bool read_watermark(char *out, size_t n)
{
    FILE *p = popen("rabbitmqctl eval 'vm_memory_monitor:get_vm_memory_high_watermark().' "
                    "2>/dev/null",
                    "r");
    if (!p)
        return false;
    char line[128] = "";
    char *got = fgets(line, sizeof line, p);
    pclose(p);
    if (!got)
        return false;
    line[strcspn(line, "\r\n")] = '\0';
    double f;
    long long abs_bytes;
    if (sscanf(line, "{absolute,%lld}", &abs_bytes) == 1)
        snprintf(out, n, "absolute %lld", abs_bytes);
    else if (sscanf(line, "%lf", &f) == 1 && f > 0)
        snprintf(out, n, "%s", line);
    else
        return false;
    return true;
}

static int ready_status(int port)
{
    return sbt_http(port, "GET", "/readyz", NULL, NULL, NULL);
}

int main(void)
{
    char mark[96];
    if (system("rabbitmqctl status >/dev/null 2>&1") != 0 || !read_watermark(mark, sizeof mark)) {
        if (getenv("SB_TEST_REQUIRE_ALL") && !strcmp(getenv("SB_TEST_REQUIRE_ALL"), "1")) {
            fprintf(stderr, "rabbitmqctl cannot control the broker\n");
            return 1;
        }
        printf("skipped: rabbitmqctl cannot control the broker\n");
        return SBT_SKIP;
    }
    snprintf(g_restore, sizeof g_restore,
             "rabbitmqctl set_vm_memory_high_watermark %s >/dev/null 2>&1", mark);
    atexit(restore_watermark);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGALRM, on_signal);

    const char *url = sbt_service("SB_TEST_AMQP_URL", "RabbitMQ");
    char *exchange = sbt_unique_name("sbt.blocked.x");
    char *queue = sbt_unique_name("sbt.blocked.q");
    char *tag = sbt_unique_name("blk");
    char *ledger = sbt_write_temp("", ".jsonl");
    char *log = sbt_write_temp("", ".log");
    int port = sbt_free_port();
    sbt_events_t ev;
    sbt_events_make(&ev, tag, N);
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "service: {name: blocked, shutdown_timeout: 10s}\n"
             "admin: {listen: \"127.0.0.1:%d\"}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: amqp\n"
             "  amqp: {url: \"%s\", exchange: %s, queue: %s, prefetch: 50}\n"
             "idempotency: {store: none}\n"
             "retry: {policy: fixed, base_delay: 250ms, max_attempts: 5, jitter: false}\n"
             "handlers:\n"
             "  - {name: rec, module: record, bind: [\"DataSync.#\"], config: {path: %s}}\n"
             "  - {name: once, module: fail, bind: [\"DataSync.#\"], config: {times: 1}}\n",
             port, url, exchange, queue, ledger);
    char *cfg = sbt_write_temp(yaml, ".yaml");

    sbt_amqp_seed(url, exchange, queue, "DataSync.#", "DataSync.Completed", &ev);

    /* The alarm: every publishing connection is blocked. */
    atomic_store(&g_alarm, 1);
    SBT_CHECK(system("rabbitmqctl set_vm_memory_high_watermark absolute 1 >/dev/null 2>&1") == 0);
    const char *args[] = {"run", "-c", cfg, NULL};
    pid_t pid = sbt_spawn_switchboard(args, NULL, log);
    uint64_t deadline = sbt_now_ms() + 30000;
    while (sbt_grep(log, "blocked the connection") == 0 && sbt_now_ms() < deadline)
        usleep(100 * 1000);
    SBT_CHECK_MSG(sbt_grep(log, "blocked the connection") == 1, "no blocked notice (log %s)", log);
    SBT_CHECK_MSG(ready_status(port) == 503, "ready while blocked");
    SBT_CHECK(sbt_count_lines(ledger) == N); /* attempt 1 of each, retries waiting */
    usleep(1000 * 1000);
    SBT_CHECK_MSG(sbt_count_lines(ledger) == N, "retries went through while blocked");

    restore_watermark();
    SBT_CHECK_MSG(sbt_wait_lines(ledger, 2 * N, 30000),
                  "%zu of %d lines after the unblock "
                  "(log %s)",
                  sbt_count_lines(ledger), 2 * N, log);
    SBT_CHECK_MSG(sbt_grep(log, "unblocked the connection") == 1, "no unblocked notice");
    SBT_CHECK_MSG(ready_status(port) == 200, "not ready after the unblock");
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, (const char *const *)ev.ids, N, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dups == N && unexpected == 0,
                  "ledger: %zu missing, %zu seen twice (want every id twice), %zu unexpected",
                  missing, dups, unexpected);
    SBT_CHECK(sbt_stop(pid, SIGTERM, 15000) == 0);
    SBT_CHECK(sbt_amqp_depth(url, queue) == 0);
    printf("ok: blocked by a memory alarm: logged, not ready, retries held; unblocked: "
           "logged, ready, all %d events through their retry\n",
           N);

    char dlq[256], dlx[256], r1[256];
    snprintf(dlq, sizeof dlq, "%s.dlq", queue);
    snprintf(dlx, sizeof dlx, "%s.dlx", exchange);
    snprintf(r1, sizeof r1, "%s.retry.250", queue);
    const char *qs[] = {queue, dlq, r1, NULL};
    const char *xs[] = {exchange, dlx, NULL};
    sbt_amqp_cleanup(url, qs, xs);
    const char *files[] = {ledger, log, cfg};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        unlink(files[i]);
    sbt_events_free(&ev);
    free(exchange);
    free(queue);
    free(tag);
    free(ledger);
    free(log);
    free(cfg);
    return 0;
}
