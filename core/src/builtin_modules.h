/* builtin_modules.h: the handler modules linked into the switchboard binary.
 *
 * Each is an ordinary sb_module_t descriptor written against switchboard/handler.h only
 * (no SB_MODULE_DEFINE: the host provides sb_module_host for statically linked modules),
 * so they go through the same descriptor checks, init hooks and dispatch as a loaded .so.
 *   log     logs every event it sees                     (mod_log.c)
 *   record  appends one JSON line per event to a ledger  (mod_record.c)
 *   fail    fails on purpose: retry or reject, always, N times or with probability p
 *           (mod_fail.c)
 * They exist for operators (log), tests and the demo (record, fail); none of them talks to
 * a broker or keeps state between events. */
#ifndef SB_BUILTIN_MODULES_H
#define SB_BUILTIN_MODULES_H

#include <stdarg.h>
#include <stddef.h>

#include "switchboard/common.h"
#include "switchboard/handler.h"

extern const sb_module_t sb__mod_log, sb__mod_record, sb__mod_fail;

/* Every built-in module, terminated by NULL. A handler's `module:` names one by its
 * descriptor name ("log", "record", "fail"). */
extern const sb_module_t *const sb__builtin_modules[];

/* ---- config helpers shared by the built-ins (builtin_modules.c); internal ---------------- */

/* Checks that `config` (may be NULL or null: nothing configured) is a mapping whose keys are
 * all in the NULL-terminated `allowed`. SB_ECONFIG with "MOD: unknown config key "k"". */
int sb__mod_check_keys(const char *mod, const json_t *config, const char *const *allowed,
                       char *errstr, size_t errstr_size);

/* Reads `fields: [A, B]` (v may be NULL: none) into an array of n copies; the caller frees
 * with sb__mod_fields_free(). SB_ECONFIG or SB_ENOMEM with a reason. */
int sb__mod_fields(const char *mod, const json_t *v, char ***out, size_t *n_out, char *errstr,
                   size_t errstr_size);
void sb__mod_fields_free(char **fields, size_t n);

/* snprintf into errstr when errstr is not NULL. */
void sb__mod_err(char *errstr, size_t errstr_size, const char *fmt, ...) SB_PRINTF(3, 4);

#endif
