/* mod_log.c: the built-in `log` module: one line per event, through the host's logger.
 *
 * Handler "log", default binding "#". Each line carries the handler instance, the event
 * type, id and attempt, and, with `fields: [JobId, ...]`, those top-level payload fields as
 * compact JSON (so a string and a number stay distinguishable). `level:` is one of debug,
 * info (default), warn, error. It formats into a stack buffer and allocates nothing per
 * event (except to cut a field whose JSON does not fit, marked with "..."). It never fails an
 * event and does not read headers or nested fields. */
#include <stdio.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "builtin_modules.h"

#define MOD       "log"
#define LINE_MAX_ 2048 /* one log line */
#define VALUE_MAX 256  /* one field's JSON in the line */

typedef struct log_inst {
    sb_log_level_t level;
    char **fields;
    size_t n_fields;
} log_inst_t;

static int parse_level(const char *s, sb_log_level_t *out)
{
    static const struct {
        const char *name;
        sb_log_level_t level;
    } levels[] = {{"debug", SB_LOG_DEBUG},
                  {"info", SB_LOG_INFO},
                  {"warn", SB_LOG_WARN},
                  {"warning", SB_LOG_WARN},
                  {"error", SB_LOG_ERROR}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (!strcmp(s, levels[i].name)) {
            *out = levels[i].level;
            return 0;
        }
    }
    return -1;
}

static int log_init(json_t *config, void **ud, char *errstr, size_t errstr_size)
{
    static const char *const keys[] = {"level", "fields", NULL};
    int rc = sb__mod_check_keys(MOD, config, keys, errstr, errstr_size);
    if (rc != SB_EOK)
        return rc;
    log_inst_t *in = sb_calloc(1, sizeof *in);
    if (!in) {
        sb__mod_err(errstr, errstr_size, MOD ": out of memory");
        return SB_ENOMEM;
    }
    in->level = SB_LOG_INFO;
    json_t *lv = config ? json_object_get(config, "level") : NULL;
    if (lv) {
        const char *s = json_string_value(lv);
        if (!s || parse_level(s, &in->level) != 0) {
            sb__mod_err(errstr, errstr_size, MOD ": level must be one of debug, info, warn, error");
            rc = SB_ECONFIG;
            goto err;
        }
    }
    rc = sb__mod_fields(MOD, config ? json_object_get(config, "fields") : NULL, &in->fields,
                        &in->n_fields, errstr, errstr_size);
    if (rc != SB_EOK)
        goto err;
    *ud = in;
    return SB_EOK;
err:
    sb_free(in);
    return rc;
}

static void log_shutdown(void *ud)
{
    log_inst_t *in = ud;
    if (!in)
        return;
    sb__mod_fields_free(in->fields, in->n_fields);
    sb_free(in);
}

/* init acquires nothing but memory: the check is init then shutdown. */
static int log_check(json_t *config, char *errstr, size_t errstr_size)
{
    void *ud = NULL;
    int rc = log_init(config, &ud, errstr, errstr_size);
    log_shutdown(ud);
    return rc;
}

/* Appends " name=<compact JSON>" (or "name=-" when absent) to line[*used..). */
static void append_field(char *line, size_t *used, const char *name, const json_t *v)
{
    char val[VALUE_MAX];
    if (!v) {
        snprintf(val, sizeof val, "-");
    } else {
        size_t need = json_dumpb(v, val, sizeof val - 1, JSON_COMPACT | JSON_ENCODE_ANY);
        if (need == 0) {
            snprintf(val, sizeof val, "?");
        } else if (need > sizeof val - 1) {
            /* json_dumpb leaves a too-small buffer undefined: dump whole and cut. Rare. */
            char *all = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            json_free_t jfree;
            json_get_alloc_funcs(NULL, &jfree);
            snprintf(val, sizeof val, "%.*s...", (int)(sizeof val - 4), all ? all : "?");
            if (all)
                jfree(all);
        } else {
            val[need] = '\0';
        }
    }
    if (*used >= LINE_MAX_)
        return;
    int n = snprintf(line + *used, LINE_MAX_ - *used, " %s=%s", name, val);
    if (n > 0)
        *used += (size_t)n < LINE_MAX_ - *used ? (size_t)n : LINE_MAX_ - *used;
}

static sb_outcome_t log_event(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    const log_inst_t *in = ud;
    sb_log_level_t level = in ? in->level : SB_LOG_INFO;
    char line[LINE_MAX_];
    size_t used = 0;
    int n = snprintf(line, sizeof line, "%s: %s id=%s attempt=%u", sb_ctx_handler(ctx),
                     sb_event_type(ev), sb_event_id(ev), sb_event_attempt(ev));
    if (n > 0)
        used = (size_t)n < sizeof line ? (size_t)n : sizeof line;
    if (in && in->n_fields) {
        const json_t *body = sb_event_json(ev);
        for (size_t i = 0; i < in->n_fields; i++) {
            const json_t *v = json_is_object(body) ? json_object_get(body, in->fields[i]) : NULL;
            append_field(line, &used, in->fields[i], v);
        }
    }
    sb_log(MOD, level, "%s", line);
    return SB_OK;
}

static const sb_handler_def_t log_handlers[] = {
    {.name = "log", .pattern = "#", .fn = log_event},
    {0},
};

const sb_module_t sb__mod_log = {
    SB_MODULE_HEADER,         .name = "log",    .version = "1.0.0",
    .handlers = log_handlers, .init = log_init, .shutdown = log_shutdown,
    .check = log_check,
};
