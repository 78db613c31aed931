/* TLS: the test starts a second RabbitMQ node of its own (other ports, state in a temporary
 * directory) with a TLS listener whose certificate is signed by a CA generated here with the
 * openssl CLI (amqp_tls_node.sh). A consumer on amqps:// with that CA and peer + host name
 * verification (the default) handles a message; one given an unrelated CA is refused at
 * start with a clear error. The node is always stopped (atexit, signals). Skipped when
 * rabbitmq-server or openssl is missing. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

#define TLS_PORT  35671
#define AMQP_PORT 35672
#define DIST_PORT 35680

static char g_dir[256];
static char g_node[64];
static int g_started;

static void stop_node(void)
{
    if (!g_started)
        return;
    g_started = 0;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/tests/integration/amqp_tls_node.sh stop %s %s", SB_SOURCE_DIR,
             g_dir, g_node);
    if (system(cmd) != 0)
        fprintf(stderr, "could not stop node %s\n", g_node);
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
}

static void on_signal(int sig)
{
    stop_node();
    signal(sig, SIG_DFL);
    raise(sig);
}

static char *config(const char *ca, const char *ledger, const char *q)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "service: {name: tls-test}\n"
             "admin: {listen: \"\"}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: amqp\n"
             "  amqp:\n"
             "    url: \"amqps://guest:guest@localhost:%d/%%2f\"\n"
             "    exchange: tls.x\n"
             "    queue: %s\n"
             "    tls: {ca_file: %s}\n"
             "idempotency: {store: none}\n"
             "handlers:\n"
             "  - {name: rec, module: record, bind: [\"#\"], config: {path: %s}}\n",
             TLS_PORT, q, ca, ledger);
    return sbt_write_temp(yaml, ".yaml");
}

static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

int main(void)
{
    if (system("command -v rabbitmq-server >/dev/null && command -v openssl >/dev/null") != 0) {
        printf("skipped: rabbitmq-server or openssl not installed\n");
        return SBT_SKIP;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/sbt-tls-%ld", (long)getpid());
    snprintf(g_node, sizeof g_node, "sbtls%ld", (long)getpid());
    atexit(stop_node);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/tests/integration/amqp_tls_node.sh start %s %s %d %d %d",
             SB_SOURCE_DIR, g_dir, g_node, AMQP_PORT, TLS_PORT, DIST_PORT);
    g_started = 1;
    SBT_CHECK_MSG(system(cmd) == 0, "the TLS node did not start");

    /* Right CA: connects, verifies the peer and host name, handles a message. */
    char ca[300], other[300];
    snprintf(ca, sizeof ca, "%s/ca.pem", g_dir);
    snprintf(other, sizeof other, "%s/other-ca.pem", g_dir);
    char *ledger = sbt_write_temp("", ".jsonl");
    char *cfg = config(ca, ledger, "tls.q");
    char *log = sbt_write_temp("", ".log");
    const char *args[] = {"run", "-c", cfg, NULL};
    pid_t pid = sbt_spawn_switchboard(args, NULL, log);
    char plain[128];
    snprintf(plain, sizeof plain, "amqp://guest:guest@127.0.0.1:%d/%%2f", AMQP_PORT);
    long depth = -1;
    for (int i = 0; i < 100 && (depth = sbt_amqp_depth(plain, "tls.q")) < 0; i++)
        usleep(100000);
    SBT_CHECK_MSG(depth >= 0, "switchboard never declared its queue over TLS (log: %s)", log);
    amqp_connection_state_t c = sbt_amqp_connect(plain);
    SBT_CHECK(c != NULL);
    const char *body = "{\"Id\":\"tls-1\",\"JobId\":\"j\"}";
    SBT_CHECK(sbt_amqp_publish(c, "tls.x", "DataSync.Completed", body, strlen(body), "m1", NULL) ==
              0);
    sbt_amqp_close(c);
    SBT_CHECK_MSG(sbt_wait_lines(ledger, 1, 10000), "message not handled over TLS (log: %s)", log);
    SBT_CHECK(sbt_stop(pid, SIGTERM, 10000) == 0);
    const char *ids[] = {"tls-1"};
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, ids, 1, &missing, &dups, &unexpected);
    SBT_CHECK(missing == 0 && dups == 0 && unexpected == 0);

    /* Unrelated CA: refused at start, with the reason. */
    char *cfg2 = config(other, ledger, "tls.q2");
    char *log2 = sbt_write_temp("", ".log");
    const char *args2[] = {"run", "-c", cfg2, NULL};
    pid = sbt_spawn_switchboard(args2, NULL, log2);
    int st = sbt_stop(pid, 0, 20000);
    SBT_CHECK_MSG(st != 0 && st < 128, "a wrong CA was not refused (status %d, log: %s)", st, log2);
    SBT_CHECK_MSG(file_contains(log2, "verification failed"), "no clear TLS error in %s", log2);

    unlink(ledger);
    unlink(cfg);
    unlink(cfg2);
    unlink(log);
    unlink(log2);
    free(ledger);
    free(cfg);
    free(cfg2);
    free(log);
    free(log2);
    stop_node();
    printf("ok: amqps:// with CA verification works; an unrelated CA is refused\n");
    return 0;
}
