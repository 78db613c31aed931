/* intake.c: decode, validate, route; see intake.h. Glue only: each step lives in its own
 * file (envelope.c, schema.c, router.c) and this one decides the verdict and counts. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "errf.h"
#include "intake.h"
#include "router.h"
#include "schema.h"

#define MAX_SCHEMAS_PER_EVENT 8

struct sb__intake {
    sb__intake_opts_t opts;
    char *type_field; /* owned copy of opts.envelope.type_field */
    sb__router_t *handlers;
    sb__router_t *schemas; /* targets are const sb__schema_t * */
    sb__schema_set_t *schema_set;
    sb__intake_stats_t stats;
};

int sb__intake_new(const sb__intake_opts_t *opts, sb__intake_t **out)
{
    sb__intake_t *in = sb_calloc(1, sizeof *in);
    if (!in)
        return SB_ENOMEM;
    in->opts = *opts;
    if (opts->envelope.type_field && !(in->type_field = sb_strdup(opts->envelope.type_field)))
        goto err;
    in->opts.envelope.type_field = in->type_field;
    if (sb__router_new(&in->handlers) != SB_EOK || sb__router_new(&in->schemas) != SB_EOK ||
        sb__schema_set_new(&in->schema_set) != SB_EOK)
        goto err;
    *out = in;
    return SB_EOK;
err:
    sb__intake_destroy(in);
    return SB_ENOMEM;
}

void sb__intake_destroy(sb__intake_t *in)
{
    if (!in)
        return;
    sb__router_destroy(in->handlers);
    sb__router_destroy(in->schemas);
    sb__schema_set_destroy(in->schema_set);
    sb_free(in->type_field);
    sb_free(in);
}

int sb__intake_bind_handler(sb__intake_t *in, const char *pattern, void *target, char *errstr,
                            size_t errstr_size)
{
    return sb__router_add(in->handlers, pattern, target, errstr, errstr_size);
}

int sb__intake_bind_schema(sb__intake_t *in, const char *pattern, const char *path, char *errstr,
                           size_t errstr_size)
{
    const sb__schema_t *sc;
    int rc = sb__schema_load(in->schema_set, path, &sc, errstr, errstr_size);
    if (rc != SB_EOK)
        return rc;
    return sb__router_add(in->schemas, pattern, (void *)sc, errstr, errstr_size);
}

int sb__intake_from_config(const sb__config_t *cfg, sb__intake_t **out, char *errstr,
                           size_t errstr_size)
{
    sb__intake_opts_t o = {
        .envelope = {.max_message_size = sb__config_size(cfg, "intake.max_message_size"),
                     .max_depth = (unsigned)sb__config_int(cfg, "intake.max_depth"),
                     .id_hash = !strcmp(sb__config_str(cfg, "intake.id_strategy"), "hash"),
                     .type_field = NULL},
        .ack_unroutable = !strcmp(sb__config_str(cfg, "intake.unroutable"), "ack"),
        .ack_schema_invalid = !strcmp(sb__config_str(cfg, "schemas.on_invalid"), "ack"),
    };
    if (!strcmp(sb__config_str(cfg, "transport.kind"), "kafka"))
        o.envelope.type_field = sb__config_str(cfg, "transport.kafka.event_type_field");
    sb__intake_t *in;
    if (sb__intake_new(&o, &in) != SB_EOK)
        return sb__errf(errstr, errstr_size, SB_ENOMEM, "out of memory");
    const char *dir = sb__config_str(cfg, "schemas.dir");
    json_t *bindings = sb__config_json(cfg, "schemas.bindings");
    const char *pattern;
    json_t *file;
    json_object_foreach(bindings, pattern, file)
    {
        char path[PATH_MAX], why[512];
        const char *name = json_string_value(file);
        if (!name) {
            sb__intake_destroy(in);
            return sb__errf(errstr, errstr_size, SB_ECONFIG, "schemas.bindings.%s: not a string",
                            pattern);
        }
        if (name[0] == '/')
            snprintf(path, sizeof path, "%s", name);
        else
            snprintf(path, sizeof path, "%s/%s", dir, name);
        int rc = sb__intake_bind_schema(in, pattern, path, why, sizeof why);
        if (rc != SB_EOK) {
            sb__intake_destroy(in);
            return sb__errf(errstr, errstr_size, rc == SB_ENOMEM ? SB_ENOMEM : SB_ECONFIG,
                            "schemas.bindings.%s: %s", pattern, why);
        }
    }
    *out = in;
    return SB_EOK;
}

static void set_verdict(sb__verdict_t *v, sb__verdict_kind_t kind, const char *reason,
                        const char *fmt, ...) SB_PRINTF(4, 5);

static void set_verdict(sb__verdict_t *v, sb__verdict_kind_t kind, const char *reason,
                        const char *fmt, ...)
{
    v->kind = kind;
    v->reason = reason;
    v->n_targets = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->error, sizeof v->error, fmt, ap);
    va_end(ap);
}

static int validate(sb__intake_t *in, sb_event_t *ev, sb__verdict_t *v, bool *valid)
{
    void *found[MAX_SCHEMAS_PER_EVENT];
    size_t n = 0;
    *valid = true;
    int rc =
        sb__router_match(in->schemas, ev->type, ev->type_len, found, MAX_SCHEMAS_PER_EVENT, &n);
    if (rc == SB_ERANGE)
        n = MAX_SCHEMAS_PER_EVENT;
    else if (rc != SB_EOK)
        n = 0; /* an over-long type has no schema; routing reports it */
    if (n == 0)
        return SB_EOK;
    json_t *j = sb__event_json(ev);
    if (!j) {
        if (strstr(ev->error, "out of memory"))
            return SB_ENOMEM;
        *valid = false;
        set_verdict(v, SB__VERDICT_DEAD_LETTER, "decode", "%s", ev->error);
        return SB_EOK;
    }
    for (size_t i = 0; i < n; i++) {
        sb__schema_error_t errs[4];
        size_t ne = 0;
        if (sb__schema_validate(found[i], j, errs, 4, &ne) == SB_EOK)
            continue;
        *valid = false;
        size_t off = 0;
        v->error[0] = '\0';
        for (size_t k = 0; k < ne && off < sizeof v->error; k++) {
            int w = snprintf(v->error + off, sizeof v->error - off, "%s%s: %s", k ? "; " : "",
                             errs[k].pointer[0] ? errs[k].pointer : "(root)", errs[k].message);
            if (w < 0)
                break;
            off += (size_t)w;
        }
        v->kind = in->opts.ack_schema_invalid ? SB__VERDICT_ACK : SB__VERDICT_DEAD_LETTER;
        v->reason = "schema";
        v->n_targets = 0;
        return SB_EOK;
    }
    return SB_EOK;
}

int sb__intake_process(sb__intake_t *in, const sb__intake_msg_t *msg, sb_event_t *ev,
                       sb__verdict_t *v)
{
    in->stats.received++;
    int rc = sb__envelope_decode(&in->opts.envelope, msg, ev);
    if (rc == SB_ENOMEM)
        return SB_ENOMEM;
    if (rc != SB_EOK) {
        in->stats.decode_failed++;
        set_verdict(v, SB__VERDICT_DEAD_LETTER, "decode", "%s", ev->error);
        return SB_EOK;
    }
    bool valid;
    if ((rc = validate(in, ev, v, &valid)) != SB_EOK)
        return rc;
    if (!valid) {
        if (!strcmp(v->reason, "decode"))
            in->stats.decode_failed++;
        else
            in->stats.schema_failed++;
        return SB_EOK;
    }
    size_t n = 0;
    rc = sb__router_match(in->handlers, ev->type, ev->type_len, v->targets, SB__INTAKE_MAX_TARGETS,
                          &n);
    if (rc == SB_ERANGE) {
        in->stats.unroutable++;
        set_verdict(v, SB__VERDICT_DEAD_LETTER, "unroutable",
                    "event type \"%s\" matches %zu handlers, at most %d are supported", ev->type, n,
                    SB__INTAKE_MAX_TARGETS);
        return SB_EOK;
    }
    if (rc != SB_EOK || n == 0) {
        in->stats.unroutable++;
        set_verdict(v, in->opts.ack_unroutable ? SB__VERDICT_ACK : SB__VERDICT_DEAD_LETTER,
                    "unroutable",
                    rc == SB_ETOOBIG ? "event type \"%.200s\" has too many words to route"
                                     : "no handler is bound to event type \"%.200s\"",
                    ev->type);
        return SB_EOK;
    }
    in->stats.dispatched++;
    v->kind = SB__VERDICT_DISPATCH;
    v->reason = NULL;
    v->error[0] = '\0';
    v->n_targets = n;
    return SB_EOK;
}

const sb__intake_stats_t *sb__intake_stats(const sb__intake_t *in)
{
    return &in->stats;
}
