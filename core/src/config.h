/* config.h: the configuration loader and its property table.
 *
 * A YAML file (JSON is YAML) is read with libyaml into a jansson tree, overridden from the
 * environment (SWITCHBOARD_<PATH>), checked against one table of properties (config_schema.c)
 * and completed with defaults, so that every getter on a table key succeeds. The first
 * problem found is reported as one line naming the file and line (or the environment
 * variable) and the key path, and loading fails with SB_ECONFIG.
 *
 * Effective values are stored typed: strings and enums as strings, int as integers, bool as
 * booleans, durations as integer milliseconds, sizes as integer bytes, lists and maps as
 * arrays and objects. Secrets are kept in clear in memory (the transports need them) but are
 * masked by sb__config_dump(), the only printer of a configuration. */
#ifndef SB_CONFIG_H
#define SB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

typedef struct sb__config sb__config_t;

/* Loads the file at `path` (NULL: defaults and environment only), applies the environment
 * and validates. On success *out owns the configuration (release with sb__config_destroy())
 * and 0 is returned. On failure *out is NULL, a one-line reason goes to errstr (may be NULL)
 * and the result is SB_ECONFIG (invalid), SB_EIO (file unreadable) or SB_ENOMEM. Reads the
 * process environment; not thread-safe against setenv(). */
int sb__config_load(const char *path, sb__config_t **out, char *errstr, size_t errstr_size);

/* Same from a buffer holding the YAML text; `name` stands for the file name in messages
 * (NULL: "<config>"). `buf` need not be NUL-terminated. */
int sb__config_load_buffer(const char *buf, size_t len, const char *name, sb__config_t **out,
                           char *errstr, size_t errstr_size);

/* Releases a configuration; NULL is a no-op. Every pointer a getter returned dies with it. */
void sb__config_destroy(sb__config_t *cfg);

/* Getters. `path` is a dotted key path as in the table ("transport.kafka.brokers"); list
 * elements are reached with [N] ("handlers[0].timeout") and map keys that contain dots are
 * matched whole ("transport.kafka.properties.sasl.mechanism"). For a table key the value
 * always exists; a missing or mistyped path gives NULL / 0 / false. Strings are borrowed and
 * live as long as cfg. */
const char *sb__config_str(const sb__config_t *cfg, const char *path);
int64_t sb__config_int(const sb__config_t *cfg, const char *path);
bool sb__config_bool(const sb__config_t *cfg, const char *path);
uint64_t sb__config_duration_ms(const sb__config_t *cfg, const char *path);
uint64_t sb__config_size(const sb__config_t *cfg, const char *path);

/* The subtree at `path` ("" or NULL: the whole tree), borrowed: lives as long as cfg, do not
 * modify it. Used for lists, maps and handlers. It holds secrets in clear: never print it;
 * print configurations with sb__config_dump() only. */
json_t *sb__config_json(const sb__config_t *cfg, const char *path);

/* True if path is present in the effective configuration (handlers[N].retry.* keys are
 * absent when they inherit from retry.*). */
bool sb__config_has(const sb__config_t *cfg, const char *path);

/* Name of the source ("cfg.yaml", or "<defaults>" when loaded without a file). */
const char *sb__config_source(const sb__config_t *cfg);

/* Prints the effective configuration as YAML, every secret replaced with "********" (for
 * URLs only the password part: amqp://guest:********@host). The output loads back. */
void sb__config_dump(const sb__config_t *cfg, FILE *out);

/* `switchboard config ...`: argv[0] is the word after "config" ("check" or "reference"),
 * i.e. main() calls sb__cmd_config(argc - 2, argv + 2). Returns a sysexits status: 0, 64
 * (usage), 70 (out of memory) or 78 (invalid configuration). */
int sb__cmd_config(int argc, char **argv);

/* ---- the property table (config_schema.c) ------------------------------------------- */

typedef enum sb__cfg_type {
    SB__CFG_STRING,
    SB__CFG_INT,
    SB__CFG_BOOL,
    SB__CFG_DURATION,
    SB__CFG_SIZE,
    SB__CFG_ENUM,
    SB__CFG_STRING_LIST, /* sequence of scalars, or one comma-separated scalar */
    SB__CFG_STRING_MAP,  /* mapping of free keys to scalars ("path.*" in the reference) */
    SB__CFG_OBJECT_LIST, /* sequence of mappings, each checked against "path[]." entries */
    SB__CFG_ANY          /* any subtree, not checked (a module's own configuration) */
} sb__cfg_type_t;

enum {
    SB__CFG_SECRET = 1u << 0,   /* masked when printed; X_file accepted instead of X */
    SB__CFG_REQUIRED = 1u << 1, /* must be present and non-empty */
    SB__CFG_URL = 1u << 2,      /* with SECRET: only the password part of the URL is masked */
    SB__CFG_INHERIT = 1u << 3   /* no default: absent means "inherit" (handlers[].retry.*) */
};

typedef struct sb__cfg_prop {
    const char *path;          /* "intake.max_depth", "handlers[].retry.policy" */
    sb__cfg_type_t type;       /* */
    const char *def;           /* default as a user would write it; NULL: none */
    int64_t min, max;          /* range of int (value), duration (ms), size (bytes), if min < max */
    const char *const *values; /* enum values, NULL-terminated */
    unsigned flags;            /* SB__CFG_* */
    const char *doc;           /* one line */
} sb__cfg_prop_t;

/* The table, in reference order, and its length. Static; lives for the process. */
const sb__cfg_prop_t *sb__cfg_props(size_t *count);

/* The entry with exactly this schema path (with [] for list elements), or NULL. */
const sb__cfg_prop_t *sb__cfg_prop_find(const char *path, size_t len);

/* Name of the type as the reference writes it ("duration", "string-list"). */
const char *sb__cfg_type_name(sb__cfg_type_t type);

/* True if a free key (a string-map key, or a key inside an `any` subtree) names a secret:
 * it contains "password", "passwd", "secret" or "token", or ends in ".key" or "key.pem". */
bool sb__cfg_secret_name(const char *key);

/* Writes the Markdown key reference (docs/configuration.md below its marker line). */
void sb__cfg_reference_md(FILE *out);

#endif
