/* cmd_run.c: `switchboard run -c FILE`, the daemon. Loads and validates the config (exit 78
 * on any problem, naming file, line and key), builds the pipeline, serves the admin
 * endpoints, consumes until SIGINT/SIGTERM, drains in-flight messages within
 * service.shutdown_timeout and exits 0 (1 if the drain timed out, 128+signal on a second
 * signal).
 *
 * Closing the clients after the drain (final commits, producer flush, librdkafka's thread
 * joins) is bounded too: CLOSE_BUDGET_S after the loop ended, a watchdog exits with the
 * run's status. Everything was settled and committed by then; it exists because
 * librdkafka 2.0.2 can hang in rd_kafka_destroy() for good (seen when the consumed topics
 * were deleted while assigned), and an orchestrator would otherwise wait for its SIGKILL.
 * A second SIGINT/SIGTERM during the close ends the process at once. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "switchboard/error.h"
#include "cmd_run.h"
#include "config.h"
#include "log.h"
#include "pipeline.h"

#define EX_USAGE_  64
#define EX_SOFT_   70
#define EX_CONFIG_ 78

#define CLOSE_BUDGET_S 20

static volatile sig_atomic_t close_status;

static void close_watchdog(int sig)
{
    (void)sig;
    static const char msg[] = "switchboard: closing the broker clients took longer than "
                              "20 s; exiting (everything was settled before)\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(close_status);
}

/* The loop is over: bound the close, and let a second signal end it. */
static void arm_close_watchdog(int status)
{
    close_status = status;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = close_watchdog;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    alarm(CLOSE_BUDGET_S);
}

int sb__cmd_run(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
            path = argv[++i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: switchboard run [-c FILE]\n"
                   "  Consumes with the configuration in FILE (defaults and SWITCHBOARD_* "
                   "environment variables without it).\n");
            return 0;
        } else {
            fprintf(stderr, "usage: switchboard run [-c FILE]\n");
            return EX_USAGE_;
        }
    }
    char err[1024];
    sb__config_t *cfg;
    int rc = sb__config_load(path, &cfg, err, sizeof err);
    if (rc != SB_EOK) {
        fprintf(stderr, "switchboard: %s\n", err);
        return rc == SB_ENOMEM ? EX_SOFT_ : EX_CONFIG_;
    }
    sb__pipeline_configure_logging(cfg);
    sb__pipeline_t *p = NULL;
    sb__admin_t *adm = NULL;
    int status = EX_CONFIG_;
    if ((rc = sb__pipeline_new(cfg, &p, err, sizeof err)) != SB_EOK) {
        sb__log(SB_LOG_ERROR, NULL, "start-up failed: %s", err);
        status = rc == SB_ENOMEM ? EX_SOFT_ : EX_CONFIG_;
        goto out;
    }
    const char *listen = sb__config_str(cfg, "admin.listen");
    const char *token = sb__config_str(cfg, "admin.token");
    if (listen && *listen &&
        (rc = sb__pipeline_admin(p, listen, token, &adm, err, sizeof err)) != SB_EOK) {
        sb__log(SB_LOG_ERROR, NULL, "admin endpoints: %s", err);
        status = rc == SB_ECONFIG ? EX_CONFIG_ : EX_SOFT_;
        goto out;
    }
    if ((rc = sb__pipeline_start(p, err, sizeof err)) != SB_EOK) {
        sb__log(SB_LOG_ERROR, NULL, "transport: %s", err);
        status = EX_SOFT_;
        goto out;
    }
    sb__log(SB_LOG_INFO, NULL, "switchboard consuming (%s transport, %zu handlers)",
            p->transport_kind, sb__registry_count(p->reg));
    status = sb__runtime_run(p->rt);
    arm_close_watchdog(status);
out:
    sb__admin_destroy(adm);
    sb__pipeline_destroy(p);
    alarm(0);
    sb__config_destroy(cfg);
    return status;
}
