/* schema.h: JSON Schema (draft 2020-12 subset) validation on jansson values.
 *
 * Schemas are compiled once, at start-up, into an internal tree; validation walks that tree
 * and the instance and allocates nothing unless a `pattern` keyword runs (POSIX regexec).
 * The supported subset is documented in schemas/README.md: type, required, properties,
 * additionalProperties, enum, const, pattern (POSIX ERE, unanchored), minLength/maxLength
 * (Unicode code points), minimum/maximum/exclusiveMinimum/exclusiveMaximum, items, allOf,
 * $ref (JSON pointer within the file, relative paths to sibling files) and format email,
 * date-time, uuid (asserted). Annotations ($schema, $id, title, ...) are ignored; any other
 * keyword is refused at compile time, naming the keyword and its location, because silently
 * ignoring an assertion would let invalid events through.
 *
 * Not thread-safe while compiling; compiled schemas are immutable, so validation may run
 * on any number of threads at once. */
#ifndef SB_SCHEMA_H
#define SB_SCHEMA_H

#include <stddef.h>

#include <jansson.h>

/* Owns every compiled schema and the JSON documents they came from; caches files by their
 * canonical absolute path, so a base schema referenced by many events is loaded once. */
typedef struct sb__schema_set sb__schema_set_t;

/* One compiled schema. Lives as long as its set; never freed on its own. */
typedef struct sb__schema sb__schema_t;

/* One validation failure. `pointer` is the JSON pointer (RFC 6901) of the failing instance
 * location ("" for the root, "/Email", "/Items/3"); a pointer too long for the buffer ends
 * in "...". `message` says what is wrong, e.g. `required property "JobId" is missing`. */
typedef struct {
    char pointer[256];
    char message[192];
} sb__schema_error_t;

/* A new, empty set. SB_EOK or SB_ENOMEM. */
int sb__schema_set_new(sb__schema_set_t **out);

/* Frees the set, every schema compiled in it and every document it holds. NULL: no-op. */
void sb__schema_set_destroy(sb__schema_set_t *s);

/* Loads and compiles the schema file at `path` (and every file it references, relative to
 * its directory). Loading a file already in the set returns the same schema. *out lives as
 * long as the set. Errors: SB_EIO (unreadable), SB_EPARSE (not JSON), SB_ESCHEMA (not a
 * valid or supported schema), SB_ENOMEM; errstr (may be NULL) then names the file and the
 * schema location, e.g. `a.schema.json#/properties/x: unsupported keyword "oneOf"`. A
 * failed call leaves the set as it was before it. */
int sb__schema_load(sb__schema_set_t *s, const char *path, const sb__schema_t **out, char *errstr,
                    size_t n);

/* Compiles an in-memory schema. The set takes its own reference to `schema` (the caller
 * keeps its own). Relative file references resolve against `base_dir`; with base_dir NULL
 * they are refused. Same errors and guarantees as sb__schema_load. */
int sb__schema_compile_json(sb__schema_set_t *s, const json_t *schema, const char *base_dir,
                            const sb__schema_t **out, char *errstr, size_t n);

/* Validates `instance` against `sc`. Returns SB_EOK when valid; SB_ESCHEMA when not, with
 * up to max_errs failures written to errs and their number to *n_errs (validation stops
 * once errs is full; max_errs 0 stops at the first failure and reports none); SB_EINVAL
 * on NULL arguments. Reads only; allocates nothing except inside regexec. Any thread. */
int sb__schema_validate(const sb__schema_t *sc, const json_t *instance, sb__schema_error_t *errs,
                        size_t max_errs, size_t *n_errs);

/* `switchboard validate --schema FILE EVENT.json...` (cmd_validate.c). argc/argv are the
 * arguments after the word "validate". Prints `EVENT.json: valid` or one
 * `EVENT.json: /pointer: message` line per failure on stdout. Returns the exit status: 0 all
 * valid, 1 some invalid or unreadable, 64 usage error, 78 the schema does not compile. */
int sb__cmd_validate(int argc, char **argv);

#endif
