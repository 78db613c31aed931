/* Fuzz target: JSON Schema validation and compilation. The input, parsed as JSON, is
 * validated against DataSyncCompletedEvent (compiled once); when it is an object or a
 * boolean it is also compiled as a schema (sibling references resolve in schemas/) and, if
 * that succeeds, the input is validated against itself. Results must be clean, and every
 * reported pointer that was not cut short must name a location that exists in the
 * instance. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "switchboard/error.h"
#include "schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Follows an RFC 6901 pointer; NULL when it names nothing. */
static const json_t *follow(const json_t *j, const char *p)
{
    char tok[256];
    while (*p) {
        if (*p++ != '/')
            return NULL;
        size_t n = 0;
        while (*p && *p != '/') {
            char c = *p++;
            if (c == '~') {
                c = *p == '0' ? '~' : *p == '1' ? '/' : 0;
                if (!c)
                    return NULL;
                p++;
            }
            if (n + 1 >= sizeof tok)
                return NULL;
            tok[n++] = c;
        }
        tok[n] = '\0';
        if (json_is_object(j))
            j = json_object_get(j, tok);
        else if (json_is_array(j))
            j = json_array_get(j, (size_t)strtoul(tok, NULL, 10));
        else
            return NULL;
        if (!j)
            return NULL;
    }
    return j;
}

static void check(const sb__schema_t *sc, const json_t *inst)
{
    sb__schema_error_t errs[8];
    size_t n = 0;
    int rc = sb__schema_validate(sc, inst, errs, 8, &n);
    if (rc != SB_EOK && rc != SB_ESCHEMA)
        abort();
    if ((rc == SB_ESCHEMA) != (n > 0) || n > 8)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (!memchr(errs[i].pointer, 0, sizeof errs[i].pointer) ||
            !memchr(errs[i].message, 0, sizeof errs[i].message) || !errs[i].message[0])
            abort();
        size_t len = strlen(errs[i].pointer);
        bool cut = len >= 3 && !strcmp(errs[i].pointer + len - 3, "...");
        if (!cut && !follow(inst, errs[i].pointer))
            abort();
    }
    /* Validating with no room must agree on the outcome. */
    if (sb__schema_validate(sc, inst, NULL, 0, &n) != rc || n != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sb__schema_set_t *set;
    static const sb__schema_t *event;
    if (!set) {
        char err[512];
        if (sb__schema_set_new(&set) != SB_EOK ||
            sb__schema_load(set, SB_SCHEMAS_DIR "/DataSyncCompletedEvent.schema.json", &event, err,
                            sizeof err) != SB_EOK)
            abort();
    }
    if (size > 8192)
        return 0;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!j)
        return 0;
    check(event, j);
    if (json_is_object(j) || json_is_boolean(j)) {
        sb__schema_set_t *own = NULL;
        const sb__schema_t *sc = NULL;
        char err[256];
        if (sb__schema_set_new(&own) != SB_EOK)
            abort();
        int rc = sb__schema_compile_json(own, j, SB_SCHEMAS_DIR, &sc, err, sizeof err);
        if (rc == SB_EOK)
            check(sc, j);
        else if (rc != SB_ESCHEMA && rc != SB_EIO && rc != SB_EPARSE)
            abort();
        sb__schema_set_destroy(own);
    }
    json_decref(j);
    return 0;
}
