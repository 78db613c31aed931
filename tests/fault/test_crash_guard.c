/* A handler that crashes the whole process, on real RabbitMQ: the built-in `fail` module
 * aborts on one "poison" event of 50 (crash_id), before `record` runs. With the crash guard
 * on (service.crash_file, max_crashes: 3) the consumer, started again after each crash
 * (as a supervisor would), dies three times, then dead-letters the poison event unhandled
 * (reason "crashed") and handles the 49 others; nothing is lost. The crash file is the only
 * state carried from one process to the next. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

enum { N = 50, POISON = 20, MAX_CRASHES = 3 };

int main(void)
{
    const char *url = sbt_service("SB_TEST_AMQP_URL", "RabbitMQ");
    char *exchange = sbt_unique_name("sbt.crash.x");
    char *queue = sbt_unique_name("sbt.crash.q");
    char *tag = sbt_unique_name("crash");
    char *ledger = sbt_write_temp("", ".jsonl");
    char *crash_file = sbt_write_temp("", ".crash");
    char *log = sbt_write_temp("", ".log");
    sbt_events_t ev;
    sbt_events_make(&ev, tag, N);
    char *const *ids = ev.ids;
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "service: {name: crash-guard, shutdown_timeout: 10s, crash_file: %s, "
             "max_crashes: %d}\n"
             "admin: {listen: \"\"}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: amqp\n"
             "  amqp: {url: \"%s\", exchange: %s, queue: %s, prefetch: 10}\n"
             "idempotency: {store: none}\n"
             "handlers:\n"
             "  - {name: crasher, module: fail, bind: [\"DataSync.#\"],\n"
             "     config: {mode: times, times: 0, crash_id: \"%s\"}}\n"
             "  - {name: rec, module: record, bind: [\"DataSync.#\"], config: {path: %s}}\n",
             crash_file, MAX_CRASHES, url, exchange, queue, ids[POISON], ledger);
    char *cfg = sbt_write_temp(yaml, ".yaml");

    sbt_amqp_seed(url, exchange, queue, "DataSync.#", "DataSync.Completed", &ev);
    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK(c != NULL);

    /* Run, and run again after every crash, until a run handles everything. */
    int crashes = 0;
    pid_t pid = -1;
    char dlq[256];
    snprintf(dlq, sizeof dlq, "%s.dlq", queue);
    for (int run = 0; run < MAX_CRASHES + 3; run++) {
        const char *args[] = {"run", "-c", cfg, NULL};
        pid = sbt_spawn_switchboard(args, NULL, log);
        int status = 0;
        pid_t w = 0;
        uint64_t deadline = sbt_now_ms() + 20000;
        while ((w = waitpid(pid, &status, WNOHANG)) == 0 && sbt_now_ms() < deadline) {
            if (sbt_count_lines(ledger) >= N - 1 && sbt_amqp_depth(url, dlq) == 1)
                break; /* this run got through */
            usleep(100 * 1000);
        }
        if (w == 0)
            break; /* still running: done, or stuck (checked below) */
        SBT_CHECK_MSG(w == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                      "run %d ended otherwise than by the handler's abort (status 0x%x, log %s)",
                      run, status, log);
        crashes++;
        pid = -1;
    }
    SBT_CHECK_MSG(pid > 0, "the consumer kept crashing (%d crashes, log %s)", crashes, log);
    SBT_CHECK_MSG(crashes == MAX_CRASHES,
                  "%d crashes before the poison event was set aside, "
                  "want %d (log %s)",
                  crashes, MAX_CRASHES, log);

    /* The poison event in the DLQ, unhandled, with its reason; every other one handled. */
    sbt_amqp_msg_t *m = sbt_amqp_get_msg(c, dlq, 10000);
    SBT_CHECK_MSG(m != NULL, "no dead letter in %s (log %s)", dlq, log);
    const char *reason = sbt_amqp_msg_header(m, "x-sb-reason");
    const char *err = sbt_amqp_msg_header(m, "x-sb-error");
    SBT_CHECK_MSG(reason && !strcmp(reason, "crashed"), "x-sb-reason %s", reason ? reason : "-");
    SBT_CHECK_MSG(err && strstr(err, "crashed 3 times"), "x-sb-error %s", err ? err : "-");
    SBT_CHECK(strstr(m->body, ids[POISON]) != NULL);
    sbt_amqp_msg_free(m);
    SBT_CHECK(sbt_wait_lines(ledger, N - 1, 20000));
    size_t missing, dups, unexpected;
    const char *others[N - 1];
    for (int i = 0, k = 0; i < N; i++)
        if (i != POISON)
            others[k++] = ids[i];
    sbt_ledger_check(ledger, others, N - 1, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && unexpected == 0,
                  "ledger: %zu missing, %zu unexpected (the poison event must never be "
                  "recorded)",
                  missing, unexpected);
    SBT_CHECK_MSG((int)sbt_grep(log, "the previous process died while a handler ran event") ==
                      MAX_CRASHES,
                  "the crash guard's warnings (log %s)", log);
    SBT_CHECK(sbt_stop(pid, SIGTERM, 15000) == 0);
    SBT_CHECK(sbt_amqp_depth(url, queue) == 0);
    printf("ok: a handler that aborts the process on one event: %d crashes, then the event was "
           "dead-lettered unhandled (reason crashed) and the other %d handled (%zu twice, "
           "redelivered after a crash)\n",
           crashes, N - 1, dups);

    sbt_amqp_close(c);
    char dlx[256];
    snprintf(dlx, sizeof dlx, "%s.dlx", exchange);
    const char *qs[] = {queue, dlq, NULL};
    const char *xs[] = {exchange, dlx, NULL};
    sbt_amqp_cleanup(url, qs, xs);
    const char *files[] = {ledger, crash_file, log, cfg};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        unlink(files[i]);
    sbt_events_free(&ev);
    free(exchange);
    free(queue);
    free(tag);
    free(ledger);
    free(crash_file);
    free(log);
    free(cfg);
    return 0;
}
