/* main.c: the `switchboard` command. Parses the verb and hands over to the library; holds
 * no logic of its own beyond argument handling and exit statuses (sysexits). */
#include <stdio.h>
#include <string.h>

#include "switchboard/switchboard.h"
#include "cmd_demo.h"
#include "cmd_dlq.h"
#include "cmd_new_handler.h"
#include "cmd_run.h"
#include "config.h"
#include "module.h"
#include "schema.h"

#define EX_OK_       0
#define EX_FAIL      1
#define EX_USAGE_    64
#define EX_SOFTWARE_ 70
#define EX_CONFIG_   78

static void usage(FILE *out)
{
    fprintf(out,
            "usage: switchboard <command> [options]\n"
            "\n"
            "commands:\n"
            "  version, --version       print the version and handler ABI\n"
            "  run [-c FILE]            consume with the configuration in FILE\n"
            "  dlq -c FILE <verb> ...   dead letters: stats, list, show, export, import,\n"
            "                           replay, purge (RabbitMQ or Kafka; see dlq --help)\n"
            "  demo [--events N]        run the embedded demo (no broker needed)\n"
            "  config check -c FILE     validate a config file and print the effective config\n"
            "  config reference         print every configuration key\n"
            "  validate --schema FILE EVENT.json...\n"
            "                           validate events against a JSON Schema\n"
            "  module check PATH...     load handler modules and print what they declare\n"
            "  new-handler NAME [--dir DIR]\n"
            "                           write a handler module skeleton with its test\n"
            "  help, --help             this text\n");
}

static int cmd_version(void)
{
    printf("switchboard %s (handler ABI %u)\n", sb_version_string(),
           (unsigned)SB_HANDLER_ABI_VERSION);
    return EX_OK_;
}

static int cmd_module_check(int argc, char **argv)
{
    if (argc < 1) {
        fprintf(stderr, "switchboard module check: no module path given\n");
        return EX_USAGE_;
    }
    int status = EX_OK_;
    for (int i = 0; i < argc; i++) {
        char err[512];
        sb__module_t *m;
        if (sb__module_open(argv[i], &m, err, sizeof err) != SB_EOK) {
            fprintf(stderr, "switchboard: %s\n", err);
            status = EX_CONFIG_;
            continue;
        }
        const sb_module_t *d = sb__module_desc(m);
        printf("module %s %s (ABI %u) from %s\n", d->name, d->version ? d->version : "-",
               (unsigned)d->abi_version, argv[i]);
        for (const sb_handler_def_t *h = d->handlers; h->name; h++)
            printf("  handler %s pattern %s%s\n", h->name, h->pattern,
                   (h->flags & SB_HANDLER_BLOCKING) ? " blocking" : "");
        sb__module_close(m);
    }
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EX_USAGE_;
    }
    const char *verb = argv[1];
    if (!strcmp(verb, "version") || !strcmp(verb, "--version") || !strcmp(verb, "-V"))
        return cmd_version();
    if (!strcmp(verb, "help") || !strcmp(verb, "--help") || !strcmp(verb, "-h")) {
        usage(stdout);
        return EX_OK_;
    }
    if (!strcmp(verb, "run"))
        return sb__cmd_run(argc - 2, argv + 2);
    if (!strcmp(verb, "dlq"))
        return sb__cmd_dlq(argc - 2, argv + 2);
    if (!strcmp(verb, "demo"))
        return sb__cmd_demo(argc - 2, argv + 2);
    if (!strcmp(verb, "config"))
        return sb__cmd_config(argc - 2, argv + 2);
    if (!strcmp(verb, "validate"))
        return sb__cmd_validate(argc - 2, argv + 2);
    if (!strcmp(verb, "new-handler"))
        return sb__cmd_new_handler(argc - 2, argv + 2);
    if (!strcmp(verb, "module") && argc >= 3 && !strcmp(argv[2], "check"))
        return cmd_module_check(argc - 3, argv + 3);
    fprintf(stderr, "switchboard: unknown command \"%s\"\n", verb);
    usage(stderr);
    return EX_USAGE_;
}
