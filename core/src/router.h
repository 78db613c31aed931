/* router.h: the topic router, mapping binding patterns to targets (handler references).
 *
 * Semantics are those of an AMQP topic exchange (as RabbitMQ implements it), over words
 * separated by '.':
 *   - `*` matches exactly one word, `#` matches zero or more words, any other word matches
 *     itself byte for byte (case-sensitive; UTF-8 is neither required nor checked).
 *   - Empty words exist: "a..b" is three words, the middle one empty; "a." is "a" and "".
 *     The empty string is zero words (as in RabbitMQ), so the empty key is matched by the
 *     patterns "", "#", "#.#"..., and not by "*". A `*` does match one empty word.
 *   - The same matcher serves AMQP routing keys and Kafka event types; an event type without
 *     dots ("DataSyncCompletedEvent") is a single word.
 *   - Unlike RabbitMQ, which treats "a*" or "#b" as literal words, a `*` or `#` mixed into a
 *     word is refused at add time (SB_EPARSE): it is almost always a mistake.
 *
 * Targets are opaque non-NULL pointers; the router never dereferences or frees them. A key
 * may match several bindings; each target is reported once, and targets come out in the
 * order in which each was first added to the router.
 *
 * Not thread-safe: matching updates scratch state inside the router, so one router belongs to
 * one thread (the loop thread) or is used under the caller's lock. Matching never allocates. */
#ifndef SB_ROUTER_H
#define SB_ROUTER_H

#include <stddef.h>

/* Limits: words per pattern or key, and bytes per pattern. A key has no byte limit of its
 * own beyond its word count. */
#define SB__ROUTER_MAX_WORDS       256
#define SB__ROUTER_MAX_PATTERN_LEN 4096

typedef struct sb__router sb__router_t;

/* Creates an empty router. SB_EOK and *out set, or SB_ENOMEM (*out untouched).
 * Free with sb__router_destroy(). */
int sb__router_new(sb__router_t **out);

/* Frees the router and everything it allocated (never the targets). NULL is a no-op. */
void sb__router_destroy(sb__router_t *r);

/* Binds `pattern` (NUL-terminated, copied) to `target` (borrowed, never dereferenced, must
 * not be NULL). Adding the same (pattern, target) pair again is a no-op returning SB_EOK.
 * Returns SB_EOK; SB_EINVAL for NULL arguments; SB_EPARSE for a `*` or `#` that is not a
 * whole word; SB_ETOOBIG beyond SB__ROUTER_MAX_PATTERN_LEN bytes or SB__ROUTER_MAX_WORDS
 * words; SB_ENOMEM. On any error the router is unchanged, and `errstr` (may be NULL) says
 * why in one line. */
int sb__router_add(sb__router_t *r, const char *pattern, void *target, char *errstr,
                   size_t errstr_size);

/* Matches `key` (key_len bytes, need not be NUL-terminated; NULL is allowed when key_len is
 * 0) against every binding. *n_out receives the number of distinct matching targets, and
 * out[0 .. min(*n_out, out_cap)) the first of them in target order (out may be NULL when
 * out_cap is 0, to count).
 * Returns SB_EOK when every match fit; SB_ERANGE when *n_out > out_cap (out holds the first
 * out_cap; call again with a larger array); SB_ETOOBIG (and *n_out = 0) for a key of more
 * than SB__ROUTER_MAX_WORDS words; SB_EINVAL for a NULL key with key_len > 0.
 * Zero matches is SB_EOK with *n_out = 0: the unroutable policy is the caller's. Cost grows
 * with the key's word count times the active trie states, not with the number of bindings. */
int sb__router_match(sb__router_t *r, const char *key, size_t key_len, void **out, size_t out_cap,
                     size_t *n_out);

/* Number of distinct (pattern, target) bindings. */
size_t sb__router_size(const sb__router_t *r);

#endif
