/* store_memory.h: the in-memory idempotency store (one process; the demo and the tests).
 *
 * Same protocol as the Redis store (store.h): claim is "SET key owner NX PX lease",
 * complete turns our lease into "done" for a TTL, release is compare-and-delete, extend is
 * compare-and-expire. Every operation answers synchronously: the callback runs inside the
 * call, before it returns. Loop thread only (no locking). */
#ifndef SB_STORE_MEMORY_H
#define SB_STORE_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Creates a store owned by `owner` (this consumer's id; copied) holding at most max_keys
 * keys. When every slot holds a live (unexpired) key, a claim of a new key answers
 * SB__CLAIM_ERROR instead of growing; expired keys are reclaimed lazily and by a sweep when
 * the table is full. SB_EOK and *out (destroy with (*out)->ops->destroy(*out)), SB_EINVAL
 * (NULL owner or out, max_keys 0) or SB_ENOMEM.
 *
 * Operation results, all through the callback, synchronously:
 *  claim(key, lease_ms):  absent or expired -> OWNED (held by us for lease_ms);
 *                         held (by us: another copy is in flight; or by another
 *                         owner) -> BUSY; done -> DONE;
 *                         table full of live keys -> ERROR.
 *  complete(key, ttl_ms): our live lease -> done for ttl_ms, SB_EOK; otherwise SB_ESTATE.
 *  release(key):          our live lease -> deleted, SB_EOK; otherwise SB_ESTATE.
 *  extend(key, lease_ms): our live lease -> expires lease_ms from now, SB_EOK; otherwise
 *                         SB_ESTATE.
 * The calls return SB_EINVAL (NULL key, zero lease or TTL, NULL claim callback) or
 * SB_ENOMEM (the key copy of a new entry) without calling the callback. Done callbacks
 * may be NULL. */
int sb__memstore_new(const char *owner, size_t max_keys, sb__store_t **out);

/* Replaces the clock (milliseconds, any origin, must not go backwards); NULL restores the
 * monotonic clock. For tests that move time. */
void sb__memstore_set_clock(sb__store_t *s, uint64_t (*now_ms)(void *), void *arg);

/* ops->claim as another owner (copied on first use; at most 64 distinct owners per store,
 * SB_ERANGE beyond): lets tests play a second consumer sharing this store. */
int sb__memstore_claim_as(sb__store_t *s, const char *owner, const char *key, uint64_t lease_ms,
                          sb__claim_cb cb, void *arg);

/* Entries in the table, live or expired-but-not-yet-reclaimed. For tests. */
size_t sb__memstore_count(sb__store_t *s);

#endif
