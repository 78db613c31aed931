/* config_dump.c: sb__config_dump(), the one printer of a configuration.
 *
 * Prints the effective tree as block YAML that loads back, walking the property table beside
 * it: a key's type picks the form of its value (durations and sizes with units) and its flags
 * pick the masking. A secret prints as "********", a secret URL loses only its password, and
 * in free mappings (string maps, `any` subtrees) a key whose name looks secret
 * (sb__cfg_secret_name()) is masked too. Masking is done here, in the only printer, rather
 * than at load time, because the transports need the secrets in clear.
 *
 * Does not print the raw tree, the sources of values or the key reference (config_schema.c
 * writes that), and reports no error: a key path too long to follow prints masked. */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "switchboard/alloc.h"
#include "config.h"
#include "config_internal.h"
#include "units.h"

#define MASK "********"

/* ---- pass 4: printing ------------------------------------------------------------------- */

typedef enum { MODE_SCHEMA, MODE_MAP, MODE_ANY } dump_mode_t;

static bool plain_safe(const char *s)
{
    static const char *const special[] = {"true", "false", "yes", "no", "on",
                                          "off",  "null",  "y",   "n"};
    if (!*s || !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_' || *s == '/'))
        return false;
    for (const char *p = s; *p; p++) {
        char ch = *p;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '/' || ch == '-'))
            return false;
    }
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) {
        size_t n = strlen(special[i]);
        if (strlen(s) != n)
            continue;
        size_t k = 0;
        while (k < n && (s[k] | 0x20) == special[i][k])
            k++;
        if (k == n)
            return false;
    }
    return true;
}

static void put_string(FILE *out, const char *s)
{
    if (plain_safe(s)) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", out);
        else if (*p == '\t')
            fputs("\\t", out);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

/* amqp://user:pass@host -> amqp://user:********@host. Unparseable: all masked. */
static void put_url_masked(FILE *out, const char *s)
{
    const char *scheme = strstr(s, "://");
    if (!*s) {
        put_string(out, s);
        return;
    }
    if (!scheme) {
        fputs("\"" MASK "\"", out);
        return;
    }
    const char *auth = scheme + 3;
    const char *at = strrchr(auth, '@');
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon) {
        put_string(out, s);
        return;
    }
    size_t n = strlen(s) + sizeof MASK;
    char buf[1024];
    if (n >= sizeof buf) {
        fputs("\"" MASK "\"", out);
        return;
    }
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(colon + 1 - s), s, MASK, at);
    put_string(out, buf);
}

static void put_scalar(FILE *out, const json_t *v, const sb__cfg_prop_t *p, bool masked)
{
    char buf[64];
    if (masked) {
        if (p && (p->flags & SB__CFG_URL) && json_is_string(v))
            put_url_masked(out, json_string_value(v));
        else if (json_is_string(v) && !*json_string_value(v))
            fputs("\"\"", out);
        else
            fputs("\"" MASK "\"", out);
        return;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        put_string(out, json_string_value(v));
        break;
    case JSON_INTEGER:
        if (p && p->type == SB__CFG_DURATION) {
            sb__format_duration_ms((uint64_t)json_integer_value(v), buf, sizeof buf);
            fputs(buf, out);
        } else if (p && p->type == SB__CFG_SIZE) {
            sb__format_size((uint64_t)json_integer_value(v), buf, sizeof buf);
            fputs(buf, out);
        } else {
            fprintf(out, "%lld", (long long)json_integer_value(v));
        }
        break;
    case JSON_REAL:
        snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        fputs(buf, out);
        if (!strpbrk(buf, ".eE"))
            fputs(".0", out);
        break;
    case JSON_TRUE:
        fputs("true", out);
        break;
    case JSON_FALSE:
        fputs("false", out);
        break;
    default:
        fputs("null", out);
        break;
    }
}

static void put_indent(FILE *out, int n)
{
    for (int i = 0; i < n; i++)
        fputc(' ', out);
}

/* Flow style for containers nested in sequences of an `any` subtree. */
static void put_flow(FILE *out, const json_t *v)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        bool first = true;
        fputc('{', out);
        json_object_foreach((json_t *)v, k, x)
        {
            fputs(first ? "" : ", ", out);
            first = false;
            put_string(out, k);
            fputs(": ", out);
            if (sb__cfg_secret_name(k))
                fputs("\"" MASK "\"", out);
            else
                put_flow(out, x);
        }
        fputc('}', out);
    } else if (json_is_array(v)) {
        fputc('[', out);
        for (size_t i = 0; i < json_array_size(v); i++) {
            fputs(i ? ", " : "", out);
            put_flow(out, json_array_get(v, i));
        }
        fputc(']', out);
    } else {
        put_scalar(out, v, NULL, false);
    }
}

static void dump_object(FILE *out, const json_t *obj, sb__cfg_path_t *sp, dump_mode_t mode,
                        int indent, bool inline_first);

/* Prints ": value\n" (or ":\n" and a block) for one key. */
static void dump_value(FILE *out, const json_t *v, sb__cfg_path_t *sp, const sb__cfg_prop_t *p,
                       dump_mode_t mode, bool masked, int indent)
{
    if (masked || (!json_is_object(v) && !json_is_array(v))) {
        fputc(' ', out);
        put_scalar(out, v, p, masked);
        fputc('\n', out);
        return;
    }
    if (json_is_object(v)) {
        if (json_object_size(v) == 0) {
            fputs(" {}\n", out);
            return;
        }
        fputc('\n', out);
        dump_object(out, v, sp, mode, indent + 2, false);
        return;
    }
    if (json_array_size(v) == 0) {
        fputs(" []\n", out);
        return;
    }
    fputc('\n', out);
    size_t saved = sp->len;
    bool objects = p && p->type == SB__CFG_OBJECT_LIST;
    if (objects && path_push_raw(sp, "[]", &saved) != 0)
        objects = false;
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *item = json_array_get(v, i);
        put_indent(out, indent + 2);
        fputs("- ", out);
        if (json_is_object(item) && json_object_size(item) > 0) {
            dump_object(out, item, sp, objects ? MODE_SCHEMA : MODE_ANY, indent + 4, true);
        } else {
            put_flow(out, item);
            fputc('\n', out);
        }
    }
    path_pop(sp, saved);
}

static void dump_object(FILE *out, const json_t *obj, sb__cfg_path_t *sp, dump_mode_t mode,
                        int indent, bool inline_first)
{
    const char *k;
    json_t *v;
    bool first = true;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (!(first && inline_first))
            put_indent(out, indent);
        first = false;
        put_string(out, k);
        fputc(':', out);
        if (mode == MODE_SCHEMA) {
            size_t saved;
            if (path_push(sp, k, &saved) != 0) {
                fputs(" \"" MASK "\"\n", out);
                continue;
            }
            const sb__cfg_prop_t *p = sb__cfg_prop_find(sp->buf, sp->len);
            dump_mode_t child = MODE_SCHEMA;
            if (p && p->type == SB__CFG_STRING_MAP)
                child = MODE_MAP;
            else if (p && p->type == SB__CFG_ANY)
                child = MODE_ANY;
            bool masked = p && (p->flags & SB__CFG_SECRET);
            dump_value(out, v, sp, p, child, masked, indent);
            path_pop(sp, saved);
        } else {
            dump_value(out, v, sp, NULL, mode, sb__cfg_secret_name(k), indent);
        }
    }
}

void sb__config_dump(const sb__config_t *cfg, FILE *out)
{
    sb__cfg_path_t *sp;
    if (!cfg || !out)
        return;
    sp = sb_malloc(sizeof *sp);
    if (!sp) {
        fputs("# out of memory\n", out);
        return;
    }
    sp->len = 0;
    sp->buf[0] = '\0';
    fputs("# effective configuration from ", out);
    for (const char *p = cfg->name; *p; p++)
        fputc((unsigned char)*p < 0x20 ? '?' : *p, out);
    fputs(" (secrets masked)\n", out);
    dump_object(out, cfg->root, sp, MODE_SCHEMA, 0, false);
    sb_free(sp);
}
