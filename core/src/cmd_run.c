/* cmd_run.c: `switchboard run -c FILE`, the daemon. Loads and validates the config (exit 78
 * on any problem, naming file, line and key), builds the pipeline, serves the admin
 * endpoints, consumes until SIGINT/SIGTERM, drains in-flight messages within
 * service.shutdown_timeout and exits 0 (1 if the drain timed out, 128+signal on a second
 * signal). */
#include <stdio.h>
#include <string.h>

#include "switchboard/error.h"
#include "cmd_run.h"
#include "config.h"
#include "log.h"
#include "pipeline.h"

#define EX_USAGE_  64
#define EX_SOFT_   70
#define EX_CONFIG_ 78

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
out:
    sb__admin_destroy(adm);
    sb__pipeline_destroy(p);
    sb__config_destroy(cfg);
    return status;
}
