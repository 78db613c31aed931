/* store_memory.c: the in-memory idempotency store (see store_memory.h for the contract).
 *
 * Design: one open-addressing hash table (linear probing, FNV-1a, at most half full) sized
 * once from max_keys, with backward-shift deletion so there are no tombstones. An entry is
 * a key copy, an owner index into a small interned-owner table, a state (leased or done)
 * and an absolute expiry. Expired entries count as absent: a lookup that meets one reuses
 * its slot (no allocation: the key is already there); when the table is full, one sweep
 * deletes every expired entry before a claim gives up. The only allocation per operation
 * is the key copy when a new key is inserted.
 *
 * It does not share state between processes, persist anything, or age entries in the
 * background (memory is bounded by max_keys, not by time). */
#include <string.h>
#include <time.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "store_memory.h"

#define MAX_OWNERS 64

enum { E_EMPTY = 0, E_LEASED = 1, E_DONE = 2 };

typedef struct entry {
    char *key; /* NULL: empty slot */
    uint64_t hash;
    uint64_t expires_ms;
    uint8_t state;
    uint8_t owner; /* index into owners[] */
} entry_t;

typedef struct memstore {
    sb__store_t base; /* must be first */
    entry_t *tab;
    size_t mask; /* table size - 1 (a power of two) */
    size_t n, max_keys;
    char *owners[MAX_OWNERS];
    size_t n_owners;
    uint64_t (*now_fn)(void *);
    void *now_arg;
} memstore_t;

static const sb__store_ops_t memstore_ops;

static uint64_t mono_ms(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t deadline(uint64_t now, uint64_t ms)
{
    return ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
}

static bool live(const entry_t *e, uint64_t now)
{
    return e->key && now < e->expires_ms;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t probe(const memstore_t *s, const char *key, uint64_t h)
{
    size_t i = (size_t)h & s->mask;
    while (s->tab[i].key && !(s->tab[i].hash == h && strcmp(s->tab[i].key, key) == 0))
        i = (i + 1) & s->mask;
    return i;
}

/* Deletes slot i and shifts later members of its probe chain back into the hole. */
static void delete_at(memstore_t *s, size_t i)
{
    sb_free(s->tab[i].key);
    s->tab[i] = (entry_t){0};
    s->n--;
    size_t hole = i;
    for (size_t j = (i + 1) & s->mask; s->tab[j].key; j = (j + 1) & s->mask) {
        size_t home = (size_t)s->tab[j].hash & s->mask;
        /* Movable when its home is not cyclically within (hole, j]. */
        bool in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            s->tab[hole] = s->tab[j];
            s->tab[j] = (entry_t){0};
            hole = j;
        }
    }
}

static void sweep(memstore_t *s, uint64_t now)
{
    for (size_t i = 0; i <= s->mask;) {
        if (s->tab[i].key && now >= s->tab[i].expires_ms)
            delete_at(s, i); /* re-check i: another entry may have moved into it */
        else
            i++;
    }
}

static int owner_index(memstore_t *s, const char *owner)
{
    for (size_t i = 0; i < s->n_owners; i++)
        if (strcmp(s->owners[i], owner) == 0)
            return (int)i;
    if (s->n_owners == MAX_OWNERS)
        return SB_ERANGE;
    char *c = sb_strdup(owner);
    if (!c)
        return SB_ENOMEM;
    s->owners[s->n_owners] = c;
    return (int)s->n_owners++;
}

static int claim_idx(memstore_t *s, unsigned owner, const char *key, uint64_t lease_ms,
                     sb__claim_cb cb, void *arg)
{
    if (!key || !lease_ms || !cb)
        return SB_EINVAL;
    uint64_t now = s->now_fn(s->now_arg);
    uint64_t h = fnv1a(key);
    size_t i = probe(s, key, h);
    entry_t *e = &s->tab[i];
    if (e->key && live(e, now)) {
        /* A live claim is BUSY even for its own owner: in one process that means another
         * copy of the event is in flight right now, and running the handler twice at once
         * is exactly what the store exists to prevent. The copy retries later. */
        sb__claim_result_t r = e->state == E_DONE ? SB__CLAIM_DONE : SB__CLAIM_BUSY;
        cb(arg, r);
        return SB_EOK;
    }
    if (!e->key) { /* a new key */
        if (s->n >= s->max_keys) {
            sweep(s, now);
            if (s->n >= s->max_keys) {
                cb(arg, SB__CLAIM_ERROR);
                return SB_EOK;
            }
            i = probe(s, key, h);
            e = &s->tab[i];
        }
        char *k = sb_strdup(key);
        if (!k)
            return SB_ENOMEM;
        e->key = k;
        e->hash = h;
        s->n++;
    }
    e->state = E_LEASED;
    e->owner = (uint8_t)owner;
    e->expires_ms = deadline(now, lease_ms);
    cb(arg, SB__CLAIM_OWNED);
    return SB_EOK;
}

/* Our live lease on key, or NULL. */
static entry_t *our_lease(memstore_t *s, const char *key, uint64_t now)
{
    entry_t *e = &s->tab[probe(s, key, fnv1a(key))];
    if (e->key && live(e, now) && e->state == E_LEASED && e->owner == 0)
        return e;
    return NULL;
}

static int ms_claim(sb__store_t *st, const char *key, uint64_t lease_ms, sb__claim_cb cb, void *arg)
{
    return claim_idx((memstore_t *)st, 0, key, lease_ms, cb, arg);
}

static int ms_complete(sb__store_t *st, const char *key, uint64_t ttl_ms, sb__store_done_cb cb,
                       void *arg)
{
    memstore_t *s = (memstore_t *)st;
    if (!key || !ttl_ms)
        return SB_EINVAL;
    uint64_t now = s->now_fn(s->now_arg);
    entry_t *e = our_lease(s, key, now);
    if (e) {
        e->state = E_DONE;
        e->expires_ms = deadline(now, ttl_ms);
    }
    if (cb)
        cb(arg, e ? SB_EOK : SB_ESTATE);
    return SB_EOK;
}

static int ms_release(sb__store_t *st, const char *key, sb__store_done_cb cb, void *arg)
{
    memstore_t *s = (memstore_t *)st;
    if (!key)
        return SB_EINVAL;
    entry_t *e = our_lease(s, key, s->now_fn(s->now_arg));
    if (e)
        delete_at(s, (size_t)(e - s->tab));
    if (cb)
        cb(arg, e ? SB_EOK : SB_ESTATE);
    return SB_EOK;
}

static int ms_extend(sb__store_t *st, const char *key, uint64_t lease_ms, sb__store_done_cb cb,
                     void *arg)
{
    memstore_t *s = (memstore_t *)st;
    if (!key || !lease_ms)
        return SB_EINVAL;
    uint64_t now = s->now_fn(s->now_arg);
    entry_t *e = our_lease(s, key, now);
    if (e)
        e->expires_ms = deadline(now, lease_ms);
    if (cb)
        cb(arg, e ? SB_EOK : SB_ESTATE);
    return SB_EOK;
}

static bool ms_available(sb__store_t *st)
{
    (void)st;
    return true;
}

static void ms_destroy(sb__store_t *st)
{
    memstore_t *s = (memstore_t *)st;
    if (!s)
        return;
    if (s->tab)
        for (size_t i = 0; i <= s->mask; i++)
            sb_free(s->tab[i].key);
    sb_free(s->tab);
    for (size_t i = 0; i < s->n_owners; i++)
        sb_free(s->owners[i]);
    sb_free(s);
}

static const sb__store_ops_t memstore_ops = {
    .name = "memory",
    .claim = ms_claim,
    .complete = ms_complete,
    .release = ms_release,
    .extend = ms_extend,
    .available = ms_available,
    .destroy = ms_destroy,
};

static memstore_t *as_memstore(sb__store_t *st)
{
    return (st && st->ops == &memstore_ops) ? (memstore_t *)st : NULL;
}

int sb__memstore_new(const char *owner, size_t max_keys, sb__store_t **out)
{
    if (!owner || !out || !max_keys)
        return SB_EINVAL;
    if (max_keys > SIZE_MAX / 4 / sizeof(entry_t))
        return SB_ENOMEM;
    size_t size = 2;
    while (size < max_keys * 2) /* at most half full */
        size *= 2;
    memstore_t *s = sb_calloc(1, sizeof *s);
    if (!s)
        return SB_ENOMEM;
    s->base.ops = &memstore_ops;
    s->max_keys = max_keys;
    s->mask = size - 1;
    s->now_fn = mono_ms;
    s->tab = sb_calloc(size, sizeof *s->tab);
    if (!s->tab || owner_index(s, owner) != 0)
        goto err;
    *out = &s->base;
    return SB_EOK;
err:
    ms_destroy(&s->base);
    return SB_ENOMEM;
}

void sb__memstore_set_clock(sb__store_t *st, uint64_t (*now_ms)(void *), void *arg)
{
    memstore_t *s = as_memstore(st);
    if (!s)
        return;
    s->now_fn = now_ms ? now_ms : mono_ms;
    s->now_arg = now_ms ? arg : NULL;
}

int sb__memstore_claim_as(sb__store_t *st, const char *owner, const char *key, uint64_t lease_ms,
                          sb__claim_cb cb, void *arg)
{
    memstore_t *s = as_memstore(st);
    if (!s || !owner)
        return SB_EINVAL;
    if (!key || !lease_ms || !cb)
        return SB_EINVAL;
    int idx = owner_index(s, owner);
    if (idx < 0)
        return idx;
    return claim_idx(s, (unsigned)idx, key, lease_ms, cb, arg);
}

size_t sb__memstore_count(sb__store_t *st)
{
    memstore_t *s = as_memstore(st);
    return s ? s->n : 0;
}
