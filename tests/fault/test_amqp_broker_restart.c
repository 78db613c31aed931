/* The broker's application is stopped (`rabbitmqctl stop_app`) and started again while a
 * consumer works through 10,000 persistent events: switchboard reconnects with backoff,
 * redeclares, resumes; none is lost (every id recorded at least once) and the queue ends
 * empty. The broker is always restarted, also when the test fails or is interrupted
 * (atexit and signal handlers), so it is left running as found. Runs alone (RUN_SERIAL):
 * it disturbs the shared broker. */
#include <stdatomic.h>

#include "test_amqp_volume_common.h"

static atomic_int g_stopped;

static void restore_broker(void)
{
    if (atomic_exchange(&g_stopped, 0)) {
        int rc = system("rabbitmqctl start_app >/dev/null 2>&1");
        if (rc != 0)
            fprintf(stderr, "WARNING: rabbitmqctl start_app failed (%d): restart RabbitMQ\n", rc);
    }
}

static void on_signal(int sig)
{
    restore_broker();
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(void)
{
    if (system("rabbitmqctl status >/dev/null 2>&1") != 0) {
        /* Not our broker to control (remote, or no rabbitmqctl here). */
        if (getenv("SB_TEST_REQUIRE_ALL") && !strcmp(getenv("SB_TEST_REQUIRE_ALL"), "1")) {
            fprintf(stderr, "rabbitmqctl cannot control the broker\n");
            return 1;
        }
        printf("skipped: rabbitmqctl cannot control the broker\n");
        return SBT_SKIP;
    }
    atexit(restore_broker);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGALRM, on_signal);

    volume_run_t r;
    volume_setup(&r, 10000, "restart", ", fsync: true");
    volume_spawn(&r);
    SBT_CHECK_MSG(sbt_wait_lines(r.ledger, 2000, 30000), "no progress (log: %s)", r.log);
    atomic_store(&g_stopped, 1);
    SBT_CHECK(system("rabbitmqctl stop_app >/dev/null 2>&1") == 0);
    size_t at_stop = sbt_count_lines(r.ledger);
    SBT_CHECK_MSG(at_stop < r.n, "the consumer finished before the broker stopped");
    sleep(2);
    restore_broker();
    printf("broker stopped after %zu events, started again\n", at_stop);
    volume_finish(&r, 90000);
    /* switchboard reconnected rather than exiting. */
    printf("ok: broker restart mid-stream lost nothing\n");
    return 0;
}
