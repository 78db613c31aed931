/* cmd_validate.c: `switchboard validate --schema FILE EVENT.json...`.
 *
 * Compiles the schema once (and the files it references) and validates each event file
 * against it, printing one line per failure (`EVENT.json: /pointer: message`, with
 * "(root)" for the empty pointer) or `EVENT.json: valid`. The exit status follows sysexits:
 * 0 all valid, 1 any invalid or unreadable event, 64 usage, 78 the schema does not compile.
 * It does not decode envelopes (CloudEvents, headers): the files are the event bodies. */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "switchboard/error.h"
#include "schema.h"

#define EXIT_INVALID 1
#define EXIT_USAGE   64
#define EXIT_CONFIG  78
#define MAX_SHOWN    32 /* failures printed per event file */

static void usage(FILE *out)
{
    fprintf(out, "usage: switchboard validate --schema FILE EVENT.json...\n"
                 "  Validates each event (a JSON file) against the JSON Schema FILE.\n"
                 "  Exit status: 0 all valid, 1 some invalid, 64 usage, 78 bad schema.\n");
}

static int validate_file(const sb__schema_t *sc, const char *path)
{
    json_error_t je;
    json_t *ev = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!ev) {
        if (json_error_code(&je) == json_error_cannot_open_file)
            printf("%s: cannot read: %s\n", path, je.text);
        else
            printf("%s: not valid JSON: %s (line %d, column %d)\n", path, je.text, je.line,
                   je.column);
        return EXIT_INVALID;
    }
    sb__schema_error_t errs[MAX_SHOWN + 1];
    size_t n = 0;
    int rc = sb__schema_validate(sc, ev, errs, MAX_SHOWN + 1, &n);
    json_decref(ev);
    if (rc == SB_EOK) {
        printf("%s: valid\n", path);
        return 0;
    }
    if (rc != SB_ESCHEMA) {
        printf("%s: validation failed: %s\n", path, sb_strerror(rc));
        return EXIT_INVALID;
    }
    for (size_t i = 0; i < n && i < MAX_SHOWN; i++)
        printf("%s: %s: %s\n", path, errs[i].pointer[0] ? errs[i].pointer : "(root)",
               errs[i].message);
    if (n > MAX_SHOWN)
        printf("%s: (more failures not shown)\n", path);
    return EXIT_INVALID;
}

int sb__cmd_validate(int argc, char **argv)
{
    const char *schema = NULL;
    int i = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--schema") || !strcmp(a, "-s")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "switchboard validate: %s needs a file\n", a);
                usage(stderr);
                return EXIT_USAGE;
            }
            schema = argv[++i];
        } else if (!strncmp(a, "--schema=", 9)) {
            schema = a + 9;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "switchboard validate: unknown option \"%s\"\n", a);
            usage(stderr);
            return EXIT_USAGE;
        } else {
            break;
        }
    }
    if (!schema || !schema[0]) {
        fprintf(stderr, "switchboard validate: --schema FILE is required\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (i >= argc) {
        fprintf(stderr, "switchboard validate: no event file given\n");
        usage(stderr);
        return EXIT_USAGE;
    }

    sb__schema_set_t *set = NULL;
    const sb__schema_t *sc = NULL;
    char err[512];
    if (sb__schema_set_new(&set) != SB_EOK) {
        fprintf(stderr, "switchboard validate: out of memory\n");
        return EXIT_CONFIG;
    }
    if (sb__schema_load(set, schema, &sc, err, sizeof err) != SB_EOK) {
        fprintf(stderr, "switchboard validate: %s\n", err);
        sb__schema_set_destroy(set);
        return EXIT_CONFIG;
    }
    int status = 0;
    for (; i < argc; i++)
        if (validate_file(sc, argv[i]) != 0)
            status = EXIT_INVALID;
    sb__schema_set_destroy(set);
    fflush(stdout);
    return status;
}
