/* jscan.h: a validating, non-allocating JSON scanner that indexes top-level object members.
 *
 * One pass over the bytes checks everything a JSON parser would refuse (RFC 8259 grammar,
 * UTF-8 validity, escapes, lone surrogates, nesting depth, integers beyond int64, reals that
 * overflow a double, trailing garbage, duplicate top-level keys), so that a message accepted
 * at intake never fails later when jansson builds its tree, except for duplicate keys in
 * nested objects, which jansson (JSON_REJECT_DUPLICATES) reports. On the way it records
 * where each top-level member's key and value lie, which is all routing, idempotency and most
 * handlers need. It builds no tree and never allocates. */
#ifndef SB_JSCAN_H
#define SB_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The deepest nesting jansson itself accepts; configured limits are clamped to it. */
#define SB__JSCAN_MAX_DEPTH 2048
/* Top-level members indexed; beyond this the index is marked overflowed. */
#define SB__JINDEX_MAX 48

typedef enum sb__jtype {
    SB__JT_NONE = 0,
    SB__JT_OBJECT,
    SB__JT_ARRAY,
    SB__JT_STRING,
    SB__JT_NUMBER,
    SB__JT_TRUE,
    SB__JT_FALSE,
    SB__JT_NULL,
} sb__jtype_t;

typedef struct sb__jfield {
    const char *key; /* raw key bytes, between the quotes; escapes not decoded */
    const char *val; /* raw value: for strings between the quotes, else the whole token */
    uint32_t key_len;
    uint32_t val_len;
    uint8_t type;    /* sb__jtype_t */
    uint8_t key_esc; /* the key contains backslash escapes */
    uint8_t val_esc; /* the (string) value contains backslash escapes */
    uint8_t is_int;  /* numbers: no fraction, no exponent */
} sb__jfield_t;

typedef struct sb__jindex {
    unsigned n;    /* members recorded in f[] */
    bool overflow; /* more members than SB__JINDEX_MAX: look the rest up in the tree */
    sb__jfield_t f[SB__JINDEX_MAX];
} sb__jindex_t;

/* Validates buf[0..len) as one JSON text and, when the root is an object and idx is not
 * NULL, indexes its members. max_depth counts nested containers (the root object is 1).
 * Returns SB_EOK, or SB_EDECODE with "byte N: reason" in err. *root gets the root type. */
int sb__jscan(const char *buf, size_t len, unsigned max_depth, sb__jindex_t *idx, sb__jtype_t *root,
              char *err, size_t err_size);

/* Finds a top-level member by its decoded name. NULL when absent (or beyond the index). */
const sb__jfield_t *sb__jindex_find(const sb__jindex_t *idx, const char *name, size_t name_len);

/* Decodes a JSON string body (the bytes between the quotes, already validated) into out,
 * which must hold `len` bytes (decoding never grows). Returns the decoded length. */
size_t sb__junescape(const char *s, size_t len, char *out);

#endif
