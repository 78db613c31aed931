/* module.c: opening handler modules and validating what they hand back.
 *
 * Modules are untrusted input in the sense that they may have been built against another
 * header: nothing in a descriptor is used before its ABI version and size were compared with
 * ours. A descriptor whose abi_version differs from SB_HANDLER_ABI_VERSION is refused; a
 * struct_size smaller than the fields this host reads is refused too. Does not run init
 * hooks or register handlers (the registry does). */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "switchboard/version.h"
#include "errf.h"
#include "host.h"
#include "module.h"

struct sb__module {
    void *dl;   /* NULL for built-ins */
    char *path; /* NULL for built-ins */
    const sb_module_t *desc;
};

int sb__module_check(const sb_module_t *d, char *errstr, size_t errstr_size)
{
    if (!d)
        return sb__errf(errstr, errstr_size, SB_EINVAL, "module returned no descriptor");
    if (d->abi_version != SB_HANDLER_ABI_VERSION)
        return sb__errf(errstr, errstr_size, SB_EABI,
                        "module built for handler ABI %u, this switchboard speaks ABI %u",
                        (unsigned)d->abi_version, (unsigned)SB_HANDLER_ABI_VERSION);
    if (d->struct_size < offsetof(sb_module_t, reserved))
        return sb__errf(errstr, errstr_size, SB_EABI,
                        "module descriptor is %u bytes, at least %zu expected",
                        (unsigned)d->struct_size, offsetof(sb_module_t, reserved));
    if (!d->name || !*d->name)
        return sb__errf(errstr, errstr_size, SB_EINVAL, "module has no name");
    if (!d->handlers || !d->handlers[0].name)
        return sb__errf(errstr, errstr_size, SB_EINVAL, "module \"%s\" declares no handlers",
                        d->name);
    for (const sb_handler_def_t *h = d->handlers; h->name; h++) {
        if (!h->fn)
            return sb__errf(errstr, errstr_size, SB_EINVAL,
                            "module \"%s\": handler \"%s\" has no function", d->name, h->name);
        if (!h->pattern || !*h->pattern)
            return sb__errf(errstr, errstr_size, SB_EINVAL,
                            "module \"%s\": handler \"%s\" has no pattern", d->name, h->name);
        for (const sb_handler_def_t *o = d->handlers; o != h; o++)
            if (strcmp(o->name, h->name) == 0)
                return sb__errf(errstr, errstr_size, SB_EINVAL,
                                "module \"%s\": handler \"%s\" declared twice", d->name, h->name);
    }
    return SB_EOK;
}

int sb__module_open(const char *path, sb__module_t **out, char *errstr, size_t errstr_size)
{
    if (!path || !out)
        return sb__errf(errstr, errstr_size, SB_EINVAL, "no module path");
    *out = NULL;
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *why = dlerror();
        return sb__errf(errstr, errstr_size, SB_ENOTFOUND, "cannot load module %s: %s", path,
                        why ? why : "unknown dlopen error");
    }
    int rc;
    char why[256] = "";
    sb_module_init_fn init;
    /* POSIX blesses this conversion for dlsym results. */
    *(void **)&init = dlsym(dl, SB_MODULE_INIT_SYMBOL);
    if (!init) {
        rc = sb__errf(errstr, errstr_size, SB_EABI, "module %s does not export %s()", path,
                      SB_MODULE_INIT_SYMBOL);
        goto err;
    }
    const sb_module_t *d = init(sb__host_api(), why, sizeof why);
    if (!d) {
        rc = sb__errf(errstr, errstr_size, SB_EINVAL, "module %s refused to load: %s", path,
                      why[0] ? why : "no reason given");
        goto err;
    }
    rc = sb__module_check(d, why, sizeof why);
    if (rc != SB_EOK) {
        sb__errf(errstr, errstr_size, rc, "module %s: %s", path, why);
        goto err;
    }
    sb__module_t *m = sb_calloc(1, sizeof *m);
    if (!m || !(m->path = sb_strdup(path))) {
        sb_free(m);
        rc = sb__errf(errstr, errstr_size, SB_ENOMEM, "out of memory loading %s", path);
        goto err;
    }
    m->dl = dl;
    m->desc = d;
    *out = m;
    return SB_EOK;
err:
    dlclose(dl);
    return rc;
}

int sb__module_wrap_static(const sb_module_t *desc, sb__module_t **out, char *errstr,
                           size_t errstr_size)
{
    int rc = sb__module_check(desc, errstr, errstr_size);
    if (rc != SB_EOK)
        return rc;
    sb__module_t *m = sb_calloc(1, sizeof *m);
    if (!m)
        return sb__errf(errstr, errstr_size, SB_ENOMEM, "out of memory");
    m->desc = desc;
    *out = m;
    return SB_EOK;
}

const sb_module_t *sb__module_desc(const sb__module_t *m)
{
    return m->desc;
}

const char *sb__module_path(const sb__module_t *m)
{
    return m->path;
}

void sb__module_close(sb__module_t *m)
{
    if (!m)
        return;
    if (m->dl)
        dlclose(m->dl);
    sb_free(m->path);
    sb_free(m);
}
