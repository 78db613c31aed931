/* cmd_config.c: the `switchboard config` command.
 *
 *   switchboard config check -c FILE   validate FILE (plus the environment) and print the
 *                                      effective configuration with secrets masked
 *   switchboard config reference       print the Markdown key reference
 *
 * Only argument handling and sysexits statuses live here; loading and validating are
 * config.c's, masking config_dump.c's. The error of a failed check is the loader's one line,
 * on stderr. */
#include <stdio.h>
#include <string.h>

#include "switchboard/error.h"
#include "admin_http.h"
#include "config.h"
#include "kafka_conf.h"
#include "registry.h"

#define EX_OK_       0
#define EX_USAGE_    64
#define EX_SOFTWARE_ 70
#define EX_CONFIG_   78

static void usage(FILE *out)
{
    fputs("usage: switchboard config check -c FILE   validate and print the effective config\n"
          "       switchboard config reference       print the key reference (Markdown)\n",
          out);
}

static int check(int argc, char **argv)
{
    const char *file = NULL;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
            file = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            file = argv[i] + 9;
        } else {
            fprintf(stderr, "switchboard config check: unexpected argument \"%s\"\n", argv[i]);
            usage(stderr);
            return EX_USAGE_;
        }
    }
    if (!file) {
        fputs("switchboard config check: no configuration file given (-c FILE)\n", stderr);
        usage(stderr);
        return EX_USAGE_;
    }
    char err[1024];
    sb__config_t *cfg;
    int rc = sb__config_load(file, &cfg, err, sizeof err);
    if (rc != SB_EOK) {
        fprintf(stderr, "switchboard: %s\n", err);
        return rc == SB_ENOMEM ? EX_SOFTWARE_ : EX_CONFIG_;
    }
    /* What `run` refuses at start-up beyond the keys themselves (a listen address without a
     * token, a librdkafka property librdkafka refuses, a module that cannot be loaded or
     * whose check hook refuses its handler's config); warns as `run` does. */
    const char *listen = sb__config_str(cfg, "admin.listen");
    if (listen && *listen &&
        sb__admin_check_listen(listen, sb__config_str(cfg, "admin.token"), err, sizeof err) !=
            SB_EOK) {
        fprintf(stderr, "switchboard: %s\n", err);
        sb__config_destroy(cfg);
        return EX_CONFIG_;
    }
    const char *kind = sb__config_str(cfg, "transport.kind");
    if (kind && !strcmp(kind, "kafka") &&
        sb__kafka_conf_check(sb__config_json(cfg, "transport.kafka.properties"), true, err,
                             sizeof err) != SB_EOK) {
        fprintf(stderr, "switchboard: %s\n", err);
        sb__config_destroy(cfg);
        return EX_CONFIG_;
    }
    sb__registry_t *reg = NULL;
    rc = sb__registry_new(&reg);
    if (rc == SB_EOK)
        rc = sb__registry_load(reg, cfg, NULL, err, sizeof err);
    else
        snprintf(err, sizeof err, "out of memory");
    sb__registry_destroy(reg);
    if (rc != SB_EOK) {
        fprintf(stderr, "switchboard: %s\n", err);
        sb__config_destroy(cfg);
        return rc == SB_ENOMEM ? EX_SOFTWARE_ : EX_CONFIG_;
    }
    sb__config_dump(cfg, stdout);
    sb__config_destroy(cfg);
    return fflush(stdout) == 0 ? EX_OK_ : EX_SOFTWARE_;
}

int sb__cmd_config(int argc, char **argv)
{
    if (argc < 1) {
        usage(stderr);
        return EX_USAGE_;
    }
    if (!strcmp(argv[0], "check"))
        return check(argc - 1, argv + 1);
    if (!strcmp(argv[0], "reference") && argc == 1) {
        sb__cfg_reference_md(stdout);
        return EX_OK_;
    }
    if (!strcmp(argv[0], "help") || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        usage(stdout);
        return EX_OK_;
    }
    fprintf(stderr, "switchboard config: unknown subcommand \"%s\"\n", argv[0]);
    usage(stderr);
    return EX_USAGE_;
}
