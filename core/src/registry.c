/* registry.c: handler instances from the configuration; see registry.h.
 *
 * Shared objects are opened once per path however many instances use them; built-ins are
 * found by descriptor name. The registry owns instance state (the `ud` an init hook
 * returned) and calls each shutdown hook exactly once. It does not run handlers. */
#include <stdio.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "builtin_modules.h"
#include "errf.h"
#include "module.h"
#include "registry.h"
#include "router.h"

typedef struct instance {
    const sb_module_t *desc;
    void *ud;
    bool inited;
} instance_t;

struct sb__registry {
    sb__module_t **modules; /* opened shared objects */
    size_t n_modules;
    instance_t *instances;
    size_t n_instances;
    sb__handler_t **handlers;
    size_t n_handlers;
    char **patterns; /* every bound pattern, once (copies), for broker bindings */
    size_t n_patterns;
};

int sb__registry_new(sb__registry_t **out)
{
    sb__registry_t *r = sb_calloc(1, sizeof *r);
    if (!r)
        return SB_ENOMEM;
    *out = r;
    return SB_EOK;
}

static int grow(void **arr, size_t n, size_t elem)
{
    void *p = sb_realloc(*arr, (n + 1) * elem);
    if (!p)
        return SB_ENOMEM;
    *arr = p;
    return SB_EOK;
}

/* Remembers a bound pattern once; SB_ENOMEM. */
static int note_pattern(sb__registry_t *r, const char *pattern)
{
    for (size_t i = 0; i < r->n_patterns; i++)
        if (!strcmp(r->patterns[i], pattern))
            return SB_EOK;
    char *c = sb_strdup(pattern);
    if (!c || grow((void **)&r->patterns, r->n_patterns, sizeof *r->patterns) != SB_EOK) {
        sb_free(c);
        return SB_ENOMEM;
    }
    r->patterns[r->n_patterns++] = c;
    return SB_EOK;
}

size_t sb__registry_patterns(const sb__registry_t *r, const char *const **out)
{
    *out = (const char *const *)r->patterns;
    return r->n_patterns;
}

static int find_module(sb__registry_t *r, const char *name, const sb_module_t **out, char *errstr,
                       size_t n)
{
    if (!strchr(name, '/')) {
        for (const sb_module_t *const *b = sb__builtin_modules; *b; b++)
            if (!strcmp((*b)->name, name)) {
                *out = *b;
                return SB_EOK;
            }
        return sb__errf(errstr, n, SB_ENOTFOUND,
                        "no built-in module \"%s\" (built-ins: log, record, fail; a shared "
                        "object is given by its path, e.g. ./%s.so)",
                        name, name);
    }
    for (size_t i = 0; i < r->n_modules; i++)
        if (!strcmp(sb__module_path(r->modules[i]), name)) {
            *out = sb__module_desc(r->modules[i]);
            return SB_EOK;
        }
    if (grow((void **)&r->modules, r->n_modules, sizeof *r->modules) != SB_EOK)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    sb__module_t *m;
    int rc = sb__module_open(name, &m, errstr, n);
    if (rc != SB_EOK)
        return rc;
    r->modules[r->n_modules++] = m;
    *out = sb__module_desc(m);
    return SB_EOK;
}

static int check_patterns(const char *inst, const char *const *bind, const sb_module_t *d,
                          char *errstr, size_t n)
{
    /* A throwaway router validates pattern syntax exactly as the intake will. */
    sb__router_t *rt;
    if (sb__router_new(&rt) != SB_EOK)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    int rc = SB_EOK;
    char why[256];
    static int dummy;
    if (bind) {
        for (size_t i = 0; bind[i] && rc == SB_EOK; i++)
            if ((rc = sb__router_add(rt, bind[i], &dummy, why, sizeof why)) != SB_EOK)
                sb__errf(errstr, n, SB_ECONFIG, "handler \"%s\": bind pattern \"%s\": %s", inst,
                         bind[i], why);
    } else {
        for (const sb_handler_def_t *h = d->handlers; h->name && rc == SB_EOK; h++)
            if ((rc = sb__router_add(rt, h->pattern, &dummy, why, sizeof why)) != SB_EOK)
                sb__errf(errstr, n, SB_ECONFIG,
                         "handler \"%s\": module %s declares pattern \"%s\": %s", inst, d->name,
                         h->pattern, why);
    }
    sb__router_destroy(rt);
    return rc == SB_EOK ? SB_EOK : (rc == SB_ENOMEM ? SB_ENOMEM : SB_ECONFIG);
}

int sb__registry_add(sb__registry_t *r, const sb__instance_spec_t *spec, sb__intake_t *intake,
                     char *errstr, size_t n)
{
    const sb_module_t *d = NULL;
    int rc = find_module(r, spec->module, &d, errstr, n);
    if (rc != SB_EOK)
        return rc == SB_ENOMEM ? rc : SB_ECONFIG;
    for (size_t i = 0; i < r->n_handlers; i++) {
        size_t l = strlen(spec->name);
        if (!strncmp(r->handlers[i]->name, spec->name, l) &&
            (r->handlers[i]->name[l] == '\0' || r->handlers[i]->name[l] == '.'))
            return sb__errf(errstr, n, SB_ECONFIG, "handler \"%s\" is declared twice", spec->name);
    }
    if ((rc = check_patterns(spec->name, spec->bind, d, errstr, n)) != SB_EOK)
        return rc;
    if (grow((void **)&r->instances, r->n_instances, sizeof *r->instances) != SB_EOK)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    instance_t *inst = &r->instances[r->n_instances];
    memset(inst, 0, sizeof *inst);
    inst->desc = d;
    if (!intake) { /* a check only (config check): nothing is acquired */
        char why[512] = "";
        if (d->check && d->check(spec->config, why, sizeof why) != 0)
            return sb__errf(errstr, n, SB_ECONFIG, "handler \"%s\" (module %s): %s", spec->name,
                            d->name, why[0] ? why : "invalid configuration");
    } else if (d->init) {
        char why[512] = "";
        if (d->init(spec->config, &inst->ud, why, sizeof why) != 0)
            return sb__errf(errstr, n, SB_ECONFIG, "handler \"%s\" (module %s): init failed: %s",
                            spec->name, d->name, why[0] ? why : "no reason given");
    }
    inst->inited = intake != NULL;
    r->n_instances++;

    size_t ndefs = 0;
    for (const sb_handler_def_t *h = d->handlers; h->name; h++)
        ndefs++;
    for (const sb_handler_def_t *h = d->handlers; h->name; h++) {
        if (grow((void **)&r->handlers, r->n_handlers, sizeof *r->handlers) != SB_EOK)
            return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
        sb__handler_t *hd = sb_calloc(1, sizeof *hd);
        char name[512];
        if (ndefs == 1)
            snprintf(name, sizeof name, "%s", spec->name);
        else
            snprintf(name, sizeof name, "%s.%s", spec->name, h->name);
        if (!hd || !(hd->name = sb_strdup(name))) {
            sb_free(hd);
            return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
        }
        hd->def = h;
        hd->ud = inst->ud;
        size_t nb = 0;
        while (spec->bind && spec->bind[nb])
            nb++;
        if (!(hd->bind = sb_calloc(nb ? nb + 1 : 2, sizeof *hd->bind))) {
            sb_free(hd->name);
            sb_free(hd);
            return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
        }
        r->handlers[r->n_handlers++] = hd; /* freed with the registry from here on */
        for (size_t i = 0; i < (nb ? nb : 1); i++)
            if (!(hd->bind[i] = sb_strdup(nb ? spec->bind[i] : h->pattern)))
                return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
        hd->blocking = spec->blocking || (h->flags & SB_HANDLER_BLOCKING);
        hd->timeout_ms = spec->timeout_ms;
        hd->retry = spec->retry;
        char why[256];
        if (!intake) {
            continue;
        } else if (spec->bind) {
            for (size_t i = 0; spec->bind[i]; i++)
                if ((rc = sb__intake_bind_handler(intake, spec->bind[i], hd, why, sizeof why)) ||
                    (rc = note_pattern(r, spec->bind[i])))
                    return sb__errf(errstr, n, rc, "handler \"%s\": %s", name,
                                    rc == SB_ENOMEM ? "out of memory" : why);
        } else if ((rc = sb__intake_bind_handler(intake, h->pattern, hd, why, sizeof why)) ||
                   (rc = note_pattern(r, h->pattern))) {
            return sb__errf(errstr, n, rc, "handler \"%s\": %s", name,
                            rc == SB_ENOMEM ? "out of memory" : why);
        }
    }
    return SB_EOK;
}

int sb__registry_load(sb__registry_t *r, const sb__config_t *cfg, sb__intake_t *intake,
                      char *errstr, size_t n)
{
    sb__retry_policy_t global;
    int rc = sb__retry_policy_from_config(cfg, "retry", NULL, &global, errstr, n);
    if (rc != SB_EOK)
        return rc;
    json_t *list = sb__config_json(cfg, "handlers");
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        char path[64];
        sb__instance_spec_t spec = {0};
        snprintf(path, sizeof path, "handlers[%zu].retry", i);
        if ((rc = sb__retry_policy_from_config(cfg, path, &global, &spec.retry, errstr, n)))
            return rc;
        spec.name = json_string_value(json_object_get(e, "name"));
        spec.module = json_string_value(json_object_get(e, "module"));
        spec.config = json_object_get(e, "config");
        spec.blocking = json_is_true(json_object_get(e, "blocking"));
        json_t *t = json_object_get(e, "timeout");
        spec.timeout_ms = json_is_integer(t) ? (uint64_t)json_integer_value(t) : 30000;
        json_t *bind = json_object_get(e, "bind");
        const char *patterns[65];
        if (json_array_size(bind) > 64)
            return sb__errf(errstr, n, SB_ECONFIG, "handlers[%zu].bind: at most 64 patterns", i);
        if (json_array_size(bind) > 0) {
            size_t k;
            json_t *p;
            json_array_foreach(bind, k, p) patterns[k] = json_string_value(p);
            patterns[json_array_size(bind)] = NULL;
            spec.bind = patterns;
        }
        if (!spec.name || !spec.module)
            return sb__errf(errstr, n, SB_ECONFIG, "handlers[%zu]: name and module are required",
                            i);
        if ((rc = sb__registry_add(r, &spec, intake, errstr, n)) != SB_EOK)
            return rc;
    }
    return SB_EOK;
}

size_t sb__registry_count(const sb__registry_t *r)
{
    return r->n_handlers;
}

sb__handler_t *sb__registry_handler(const sb__registry_t *r, size_t i)
{
    return i < r->n_handlers ? r->handlers[i] : NULL;
}

bool sb__registry_has_blocking(const sb__registry_t *r)
{
    for (size_t i = 0; i < r->n_handlers; i++)
        if (r->handlers[i]->blocking)
            return true;
    return false;
}

void sb__registry_destroy(sb__registry_t *r)
{
    if (!r)
        return;
    for (size_t i = r->n_instances; i-- > 0;)
        if (r->instances[i].inited && r->instances[i].desc->shutdown)
            r->instances[i].desc->shutdown(r->instances[i].ud);
    for (size_t i = 0; i < r->n_handlers; i++) {
        for (char **b = r->handlers[i]->bind; b && *b; b++)
            sb_free(*b);
        sb_free(r->handlers[i]->bind);
        sb_free(r->handlers[i]->name);
        sb_free(r->handlers[i]);
    }
    for (size_t i = 0; i < r->n_modules; i++)
        sb__module_close(r->modules[i]);
    for (size_t i = 0; i < r->n_patterns; i++)
        sb_free(r->patterns[i]);
    sb_free(r->patterns);
    sb_free(r->handlers);
    sb_free(r->instances);
    sb_free(r->modules);
    sb_free(r);
}
