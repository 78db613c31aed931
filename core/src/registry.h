/* registry.h: the configured handler instances and the modules behind them.
 *
 * Each `handlers[]` entry of the configuration is one instance of a module (built in, or a
 * shared object loaded by path) with its own `config:` subtree, init hook and state. Every
 * handler a module declares becomes a runtime handler named after the instance (or
 * "<instance>.<handler>" when the module declares several), bound on the intake to the
 * entry's `bind` patterns or, without them, to the module's default patterns. Loading is
 * all or nothing: a failure undoes every init already run and names the entry. */
#ifndef SB_REGISTRY_H
#define SB_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "config.h"
#include "intake.h"
#include "retry.h"
#include "settle.h"

typedef struct sb__registry sb__registry_t;

typedef struct sb__instance_spec {
    const char *name;        /* instance name */
    const char *module;      /* built-in name, or a path to a .so (contains '/') */
    json_t *config;          /* the module's subtree, borrowed for the call; may be NULL */
    const char *const *bind; /* NULL-terminated patterns, or NULL: module defaults */
    bool blocking;
    uint64_t timeout_ms;
    sb__retry_policy_t retry;
} sb__instance_spec_t;

int sb__registry_new(sb__registry_t **out);

/* Every handlers[] entry of cfg, with retry policies inheriting from retry.*. intake NULL:
 * a check only (`config check`): modules are found and opened, names, patterns and retry
 * policies checked and each module's check hook run on its config, but no init runs and
 * nothing is bound. */
int sb__registry_load(sb__registry_t *r, const sb__config_t *cfg, sb__intake_t *intake,
                      char *errstr, size_t errstr_size);

/* One instance, for programs that build their pipeline in code (harness, demo). */
int sb__registry_add(sb__registry_t *r, const sb__instance_spec_t *spec, sb__intake_t *intake,
                     char *errstr, size_t errstr_size);

size_t sb__registry_count(const sb__registry_t *r);
sb__handler_t *sb__registry_handler(const sb__registry_t *r, size_t i);
bool sb__registry_has_blocking(const sb__registry_t *r);

/* Every pattern some handler is bound with (its `bind` list or its module's defaults), once
 * each, in registration order: the broker bindings of the consumer's queue. *out lives as
 * long as the registry. Returns the count. */
size_t sb__registry_patterns(const sb__registry_t *r, const char *const **out);

/* Runs every shutdown hook (reverse order), closes the modules, frees. NULL: no-op. */
void sb__registry_destroy(sb__registry_t *r);

#endif
