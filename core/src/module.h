/* module.h: loading handler modules (shared objects) and checking their descriptors.
 *
 * A module is opened with dlopen(RTLD_NOW | RTLD_LOCAL), its single exported entry point is
 * called with the host API, and the descriptor it returns is checked (ABI version, struct
 * size, handler table) before anything else touches it. Built-in modules go through the same
 * descriptor check. Registration with the router and running init hooks is the registry's
 * job, not this file's. */
#ifndef SB_MODULE_H
#define SB_MODULE_H

#include <stddef.h>

#include "switchboard/handler.h"

typedef struct sb__module sb__module_t;

/* Opens the module at `path`. On success *out owns the dlopen handle; release it with
 * sb__module_close(). On failure returns a negative sb_err_t and a one-line reason. */
int sb__module_open(const char *path, sb__module_t **out, char *errstr, size_t errstr_size);

/* Wraps a statically linked descriptor (built-in module) after the same checks. */
int sb__module_wrap_static(const sb_module_t *desc, sb__module_t **out, char *errstr,
                           size_t errstr_size);

/* Checks a descriptor: ABI, size, names, handler table. 0 or SB_EABI / SB_EINVAL. */
int sb__module_check(const sb_module_t *desc, char *errstr, size_t errstr_size);

const sb_module_t *sb__module_desc(const sb__module_t *m);
const char *sb__module_path(const sb__module_t *m); /* NULL for built-ins */

/* Closes the module; NULL is a no-op. Calls no hooks. */
void sb__module_close(sb__module_t *m);

#endif
