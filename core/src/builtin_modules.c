/* builtin_modules.c: the table of built-in handler modules and the config helpers they share.
 *
 * The modules validate their own `config:` subtree strictly (an unknown key is an error that
 * names it), as a loaded module would; the helpers here only spare the three built-ins from
 * repeating the same checks. They are not part of the handler API: a .so module has its own. */
#include <stdio.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "builtin_modules.h"

const sb_module_t *const sb__builtin_modules[] = {
    &sb__mod_log,
    &sb__mod_record,
    &sb__mod_fail,
    NULL,
};

int sb__mod_check_keys(const char *mod, const json_t *config, const char *const *allowed,
                       char *errstr, size_t errstr_size)
{
    if (!config || json_is_null(config))
        return SB_EOK;
    if (!json_is_object(config)) {
        sb__mod_err(errstr, errstr_size, "%s: config must be a mapping", mod);
        return SB_ECONFIG;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)config, key, v)
    {
        const char *const *a = allowed;
        while (*a && strcmp(*a, key))
            a++;
        if (*a)
            continue;
        char known[256] = "";
        size_t used = 0;
        for (a = allowed; *a && used < sizeof known; a++) {
            int n =
                snprintf(known + used, sizeof known - used, "%s%s", a == allowed ? "" : ", ", *a);
            if (n < 0)
                break;
            used += (size_t)n;
        }
        sb__mod_err(errstr, errstr_size, "%s: unknown config key \"%s\" (known: %s)", mod, key,
                    known);
        return SB_ECONFIG;
    }
    return SB_EOK;
}

int sb__mod_fields(const char *mod, const json_t *v, char ***out, size_t *n_out, char *errstr,
                   size_t errstr_size)
{
    *out = NULL;
    *n_out = 0;
    if (!v)
        return SB_EOK;
    if (!json_is_array(v)) {
        sb__mod_err(errstr, errstr_size, "%s: fields must be a list of field names", mod);
        return SB_ECONFIG;
    }
    size_t n = json_array_size(v);
    if (n == 0)
        return SB_EOK;
    char **f = sb_calloc(n, sizeof *f);
    if (!f)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(v, i));
        if (!s || !*s) {
            sb__mod_err(errstr, errstr_size, "%s: fields[%zu] must be a non-empty string", mod, i);
            sb__mod_fields_free(f, n);
            return SB_ECONFIG;
        }
        if (!(f[i] = sb_strdup(s))) {
            sb__mod_fields_free(f, n);
            goto oom;
        }
    }
    *out = f;
    *n_out = n;
    return SB_EOK;
oom:
    sb__mod_err(errstr, errstr_size, "%s: out of memory", mod);
    return SB_ENOMEM;
}

void sb__mod_fields_free(char **fields, size_t n)
{
    if (!fields)
        return;
    for (size_t i = 0; i < n; i++)
        sb_free(fields[i]);
    sb_free(fields);
}

void sb__mod_err(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (!errstr || !errstr_size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
}
