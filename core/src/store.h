/* store.h: the idempotency store interface (memory here; Redis in idem_redis.c).
 *
 * A store remembers, per (consumer group, handler, event id), whether an event was handled.
 * The protocol is an inbox with leases: claim() takes a key for this process (the owner)
 * for a lease; complete() marks it done for a TTL; release() gives it back after a
 * retryable failure; extend() renews the lease of a long handler. A done key makes later
 * deliveries of the same event skip that handler; a key held by another owner makes the
 * message retry later, never ack.
 *
 * All calls happen on the loop thread and complete through callbacks on the loop thread,
 * possibly before the call returns (the memory store answers at once). Backends pipeline
 * calls; there is no synchronous round trip. A call that fails returns a negative error and
 * does not call its callback. */
#ifndef SB_STORE_H
#define SB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sb__store sb__store_t;

typedef enum sb__claim_result {
    SB__CLAIM_OWNED = 0, /* the key is ours until the lease ends: run the handler */
    SB__CLAIM_DONE = 1,  /* handled before: skip (duplicate) */
    SB__CLAIM_BUSY = 2,  /* another owner holds it: retry later */
    SB__CLAIM_ERROR = 3, /* the store failed: treat per on_unavailable */
} sb__claim_result_t;

typedef void (*sb__claim_cb)(void *arg, sb__claim_result_t r);
typedef void (*sb__store_done_cb)(void *arg, int status);

typedef struct sb__store_ops {
    const char *name;
    int (*claim)(sb__store_t *s, const char *key, uint64_t lease_ms, sb__claim_cb cb, void *arg);
    int (*complete)(sb__store_t *s, const char *key, uint64_t ttl_ms, sb__store_done_cb cb,
                    void *arg);
    int (*release)(sb__store_t *s, const char *key, sb__store_done_cb cb, void *arg);
    int (*extend)(sb__store_t *s, const char *key, uint64_t lease_ms, sb__store_done_cb cb,
                  void *arg);
    bool (*available)(sb__store_t *s);
    void (*destroy)(sb__store_t *s);
} sb__store_ops_t;

struct sb__store {
    const sb__store_ops_t *ops;
};

#endif
