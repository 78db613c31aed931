/* The in-memory idempotency store: every claim outcome, lease expiry and done TTL on an
 * injected clock, complete/release/extend by the owner and not by others, two owners
 * through sb__memstore_claim_as, bounded capacity with reclamation, a randomized comparison
 * with a naive model (which exercises probing and backward-shift deletion under heavy
 * collisions), and allocation failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "store_memory.h"

static uint64_t fake_now;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

typedef struct answer {
    int calls;
    sb__claim_result_t r;
    int status;
} answer_t;

static void on_claim(void *arg, sb__claim_result_t r)
{
    answer_t *a = arg;
    a->calls++;
    a->r = r;
}

static void on_done(void *arg, int status)
{
    answer_t *a = arg;
    a->calls++;
    a->status = status;
}

static sb__store_t *new_store(size_t max_keys)
{
    sb__store_t *s = NULL;
    assert_int_equal(sb__memstore_new("me", max_keys, &s), SB_EOK);
    assert_non_null(s);
    fake_now = 1000;
    sb__memstore_set_clock(s, fake_clock, NULL);
    assert_string_equal(s->ops->name, "memory");
    assert_true(s->ops->available(s));
    return s;
}

/* Claims synchronously, checking the callback ran exactly once inside the call. */
static sb__claim_result_t claim(sb__store_t *s, const char *key, uint64_t lease)
{
    answer_t a = {0};
    assert_int_equal(s->ops->claim(s, key, lease, on_claim, &a), SB_EOK);
    assert_int_equal(a.calls, 1);
    return a.r;
}

static sb__claim_result_t claim_as(sb__store_t *s, const char *owner, const char *key,
                                   uint64_t lease)
{
    answer_t a = {0};
    assert_int_equal(sb__memstore_claim_as(s, owner, key, lease, on_claim, &a), SB_EOK);
    assert_int_equal(a.calls, 1);
    return a.r;
}

static int complete(sb__store_t *s, const char *key, uint64_t ttl)
{
    answer_t a = {0};
    assert_int_equal(s->ops->complete(s, key, ttl, on_done, &a), SB_EOK);
    assert_int_equal(a.calls, 1);
    return a.status;
}

static int release(sb__store_t *s, const char *key)
{
    answer_t a = {0};
    assert_int_equal(s->ops->release(s, key, on_done, &a), SB_EOK);
    assert_int_equal(a.calls, 1);
    return a.status;
}

static int extend(sb__store_t *s, const char *key, uint64_t lease)
{
    answer_t a = {0};
    assert_int_equal(s->ops->extend(s, key, lease, on_done, &a), SB_EOK);
    assert_int_equal(a.calls, 1);
    return a.status;
}

static void test_new_args(void **state)
{
    (void)state;
    sb__store_t *s = NULL;
    assert_int_equal(sb__memstore_new(NULL, 10, &s), SB_EINVAL);
    assert_int_equal(sb__memstore_new("me", 0, &s), SB_EINVAL);
    assert_int_equal(sb__memstore_new("me", 10, NULL), SB_EINVAL);
    assert_int_equal(sb__memstore_new("me", SIZE_MAX, &s), SB_ENOMEM);
    assert_null(s);
    s = new_store(4);
    answer_t a = {0};
    assert_int_equal(s->ops->claim(s, NULL, 10, on_claim, &a), SB_EINVAL);
    assert_int_equal(s->ops->claim(s, "k", 0, on_claim, &a), SB_EINVAL);
    assert_int_equal(s->ops->claim(s, "k", 10, NULL, &a), SB_EINVAL);
    assert_int_equal(s->ops->complete(s, "k", 0, on_done, &a), SB_EINVAL);
    assert_int_equal(s->ops->extend(s, "k", 0, on_done, &a), SB_EINVAL);
    assert_int_equal(s->ops->release(s, NULL, on_done, &a), SB_EINVAL);
    assert_int_equal(sb__memstore_claim_as(s, NULL, "k", 10, on_claim, &a), SB_EINVAL);
    assert_int_equal(a.calls, 0); /* failed calls never call back */
    /* Done callbacks may be NULL. */
    assert_int_equal(s->ops->complete(s, "k", 10, NULL, NULL), SB_EOK);
    s->ops->destroy(s);
    sb__store_t *none = NULL;
    if (none)
        none->ops->destroy(none);
}

static void test_claim_outcomes(void **state)
{
    (void)state;
    sb__store_t *s = new_store(16);
    assert_int_equal(claim(s, "g:h:e1", 100), SB__CLAIM_OWNED);
    /* A second copy in flight in the same process waits: the claim is live. */
    assert_int_equal(claim(s, "g:h:e1", 100), SB__CLAIM_BUSY);
    assert_int_equal(claim_as(s, "other", "g:h:e1", 100), SB__CLAIM_BUSY);
    assert_int_equal(complete(s, "g:h:e1", 1000), SB_EOK);
    assert_int_equal(claim(s, "g:h:e1", 100), SB__CLAIM_DONE);
    assert_int_equal(claim_as(s, "other", "g:h:e1", 100), SB__CLAIM_DONE);
    /* A done key is no longer a lease: complete, release and extend refuse it. */
    assert_int_equal(complete(s, "g:h:e1", 1000), SB_ESTATE);
    assert_int_equal(release(s, "g:h:e1"), SB_ESTATE);
    assert_int_equal(extend(s, "g:h:e1", 1000), SB_ESTATE);
    /* Unknown keys. */
    assert_int_equal(complete(s, "nope", 10), SB_ESTATE);
    assert_int_equal(release(s, "nope"), SB_ESTATE);
    assert_int_equal(extend(s, "nope", 10), SB_ESTATE);
    assert_int_equal(sb__memstore_count(s), 1);
    s->ops->destroy(s);
}

static void test_other_owner_cannot_settle(void **state)
{
    (void)state;
    sb__store_t *s = new_store(16);
    assert_int_equal(claim_as(s, "other", "k", 100), SB__CLAIM_OWNED);
    assert_int_equal(claim(s, "k", 100), SB__CLAIM_BUSY);
    assert_int_equal(complete(s, "k", 1000), SB_ESTATE);
    assert_int_equal(release(s, "k"), SB_ESTATE);
    assert_int_equal(extend(s, "k", 1000), SB_ESTATE);
    assert_int_equal(claim(s, "k", 100), SB__CLAIM_BUSY); /* still theirs */
    /* Their lease lapses: we take it. */
    fake_now += 100;
    assert_int_equal(claim(s, "k", 100), SB__CLAIM_OWNED);
    assert_int_equal(claim_as(s, "other", "k", 100), SB__CLAIM_BUSY);
    assert_int_equal(complete(s, "k", 1000), SB_EOK);
    s->ops->destroy(s);
}

static void test_lease_expiry(void **state)
{
    (void)state;
    sb__store_t *s = new_store(16);
    assert_int_equal(claim(s, "k", 100), SB__CLAIM_OWNED);
    fake_now += 99;
    assert_int_equal(claim_as(s, "b", "k", 100), SB__CLAIM_BUSY);
    fake_now += 1; /* exactly at the end of the lease: expired */
    assert_int_equal(claim_as(s, "b", "k", 100), SB__CLAIM_OWNED);
    /* We lost the lease: our complete must not mark their key done. */
    assert_int_equal(complete(s, "k", 1000), SB_ESTATE);
    assert_int_equal(release(s, "k"), SB_ESTATE);
    assert_int_equal(claim(s, "k", 100), SB__CLAIM_BUSY);
    /* An expired lease of ours cannot be completed either. */
    assert_int_equal(claim(s, "j", 10), SB__CLAIM_OWNED);
    fake_now += 10;
    assert_int_equal(complete(s, "j", 1000), SB_ESTATE);
    assert_int_equal(extend(s, "j", 1000), SB_ESTATE);
    s->ops->destroy(s);
}

static void test_extend_and_release(void **state)
{
    (void)state;
    sb__store_t *s = new_store(16);
    assert_int_equal(claim(s, "k", 100), SB__CLAIM_OWNED);
    fake_now += 90;
    assert_int_equal(extend(s, "k", 100), SB_EOK); /* now expires at +190 */
    fake_now += 60;
    assert_int_equal(claim_as(s, "b", "k", 100), SB__CLAIM_BUSY);
    fake_now += 39;
    assert_int_equal(claim_as(s, "b", "k", 100), SB__CLAIM_BUSY);
    fake_now += 1;
    assert_int_equal(claim_as(s, "b", "k", 100), SB__CLAIM_OWNED);
    /* Release gives the key back at once. */
    assert_int_equal(claim(s, "r", 1000), SB__CLAIM_OWNED);
    assert_int_equal(claim_as(s, "b", "r", 1000), SB__CLAIM_BUSY);
    assert_int_equal(release(s, "r"), SB_EOK);
    assert_int_equal(release(s, "r"), SB_ESTATE); /* gone */
    assert_int_equal(claim_as(s, "b", "r", 1000), SB__CLAIM_OWNED);
    s->ops->destroy(s);
}

static void test_done_ttl(void **state)
{
    (void)state;
    sb__store_t *s = new_store(16);
    assert_int_equal(claim(s, "k", 100), SB__CLAIM_OWNED);
    assert_int_equal(complete(s, "k", 1000), SB_EOK);
    fake_now += 999;
    assert_int_equal(claim_as(s, "b", "k", 100), SB__CLAIM_DONE);
    fake_now += 1;
    assert_int_equal(claim_as(s, "b", "k", 100), SB__CLAIM_OWNED);
    s->ops->destroy(s);
}

static void test_capacity_and_reclaim(void **state)
{
    (void)state;
    sb__store_t *s = new_store(4);
    char key[32];
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(claim(s, key, 100), SB__CLAIM_OWNED);
    }
    assert_int_equal(claim(s, "k4", 100), SB__CLAIM_ERROR);
    assert_int_equal(claim_as(s, "b", "k4", 100), SB__CLAIM_ERROR);
    /* Existing keys still answer normally when full (k0 is held: busy). */
    assert_int_equal(claim(s, "k0", 100), SB__CLAIM_BUSY);
    assert_int_equal(complete(s, "k1", 50), SB_EOK);
    assert_int_equal(sb__memstore_count(s), 4);
    /* Releasing one frees a slot. */
    assert_int_equal(release(s, "k2"), SB_EOK);
    assert_int_equal(claim(s, "k4", 100), SB__CLAIM_OWNED);
    assert_int_equal(claim(s, "k5", 100), SB__CLAIM_ERROR);
    /* k1 (done, TTL 50) expires first: the sweep reclaims it. */
    fake_now += 50;
    assert_int_equal(claim(s, "k5", 100), SB__CLAIM_OWNED);
    assert_int_equal(sb__memstore_count(s), 4);
    /* Everything expires: a churn of new keys never grows the table. */
    for (int i = 0; i < 1000; i++) {
        fake_now += 101;
        snprintf(key, sizeof key, "churn%d", i);
        assert_int_equal(claim(s, key, 100), SB__CLAIM_OWNED);
        assert_true(sb__memstore_count(s) <= 4);
    }
    s->ops->destroy(s);
}

static void test_owner_limit(void **state)
{
    (void)state;
    sb__store_t *s = new_store(256);
    char owner[32];
    answer_t a = {0};
    for (int i = 1; i < 64; i++) { /* owner 0 is "me" */
        snprintf(owner, sizeof owner, "o%d", i);
        assert_int_equal(claim_as(s, owner, owner, 100), SB__CLAIM_OWNED);
    }
    assert_int_equal(sb__memstore_claim_as(s, "one-too-many", "x", 100, on_claim, &a), SB_ERANGE);
    assert_int_equal(a.calls, 0);
    /* Known owners keep working, "me" included by name. */
    assert_int_equal(claim_as(s, "o5", "o5", 100), SB__CLAIM_BUSY); /* held by o5 already */
    assert_int_equal(claim_as(s, "me", "mine", 100), SB__CLAIM_OWNED);
    assert_int_equal(complete(s, "mine", 100), SB_EOK);
    s->ops->destroy(s);
}

/* A naive model of the protocol, compared with the store over random operations. */
#define MODEL_KEYS 48
typedef struct model_entry {
    int state; /* 0 absent, 1 leased, 2 done */
    int owner;
    uint64_t exp;
} model_entry_t;

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static bool model_live(const model_entry_t *e)
{
    return e->state && fake_now < e->exp;
}

static void run_model(size_t max_keys, int ops)
{
    sb__store_t *s = new_store(max_keys);
    model_entry_t m[MODEL_KEYS] = {{0}};
    const char *owners[2] = {"me", "b"};
    char key[16];
    for (int n = 0; n < ops; n++) {
        int k = (int)(rnd() % MODEL_KEYS);
        snprintf(key, sizeof key, "key:%d", k);
        model_entry_t *e = &m[k];
        uint64_t dur = 1 + rnd() % 50;
        switch (rnd() % 6) {
        case 0:
        case 1: { /* claim as me or b */
            int who = (int)(rnd() % 2);
            sb__claim_result_t want;
            if (model_live(e)) {
                if (e->state == 2)
                    want = SB__CLAIM_DONE;
                else
                    want = SB__CLAIM_BUSY; /* held, even by the same owner */
            } else {
                size_t live = 0;
                for (int i = 0; i < MODEL_KEYS; i++)
                    live += model_live(&m[i]);
                want = live >= max_keys ? SB__CLAIM_ERROR : SB__CLAIM_OWNED;
            }
            if (want == SB__CLAIM_OWNED)
                *e = (model_entry_t){1, who, fake_now + dur};
            sb__claim_result_t got = who ? claim_as(s, owners[who], key, dur) : claim(s, key, dur);
            assert_int_equal(got, want);
            break;
        }
        case 2: {
            bool ours = model_live(e) && e->state == 1 && e->owner == 0;
            if (ours)
                *e = (model_entry_t){2, 0, fake_now + dur};
            assert_int_equal(complete(s, key, dur), ours ? SB_EOK : SB_ESTATE);
            break;
        }
        case 3: {
            bool ours = model_live(e) && e->state == 1 && e->owner == 0;
            if (ours)
                e->state = 0;
            assert_int_equal(release(s, key), ours ? SB_EOK : SB_ESTATE);
            break;
        }
        case 4: {
            bool ours = model_live(e) && e->state == 1 && e->owner == 0;
            if (ours)
                e->exp = fake_now + dur;
            assert_int_equal(extend(s, key, dur), ours ? SB_EOK : SB_ESTATE);
            break;
        }
        default:
            fake_now += rnd() % 4;
            break;
        }
        assert_true(sb__memstore_count(s) <= max_keys);
    }
    s->ops->destroy(s);
}

static void test_model(void **state)
{
    (void)state;
    run_model(5, 20000);
    run_model(32, 20000);
    run_model(64, 20000);
}

/* Allocation failure: the key copy fails cleanly, no callback, nothing inserted. */
static int fail_allocs;

static void *failing_malloc(size_t n)
{
    return fail_allocs ? NULL : malloc(n);
}

static void *failing_realloc(void *p, size_t n)
{
    return fail_allocs ? NULL : realloc(p, n);
}

static void test_alloc_failure(void **state)
{
    (void)state;
    sb__store_t *s = new_store(8);
    assert_int_equal(claim(s, "present", 100), SB__CLAIM_OWNED);
    assert_int_equal(sb_set_allocator(failing_malloc, failing_realloc, free), SB_EOK);
    fail_allocs = 1;
    answer_t a = {0};
    assert_int_equal(s->ops->claim(s, "new", 100, on_claim, &a), SB_ENOMEM);
    assert_int_equal(a.calls, 0);
    /* Operations on existing keys need no allocation. */
    assert_int_equal(claim(s, "present", 100), SB__CLAIM_BUSY);
    assert_int_equal(complete(s, "present", 100), SB_EOK);
    sb__store_t *t = NULL;
    assert_int_equal(sb__memstore_new("x", 8, &t), SB_ENOMEM);
    assert_int_equal(sb__memstore_claim_as(s, "newowner", "k", 100, on_claim, &a), SB_ENOMEM);
    fail_allocs = 0;
    assert_int_equal(sb_set_allocator(NULL, NULL, NULL), SB_EOK);
    assert_int_equal(sb__memstore_count(s), 1);
    assert_int_equal(claim(s, "new", 100), SB__CLAIM_OWNED);
    s->ops->destroy(s);
}

static void test_default_clock(void **state)
{
    (void)state;
    sb__store_t *s = NULL;
    assert_int_equal(sb__memstore_new("me", 4, &s), SB_EOK);
    sb__memstore_set_clock(s, fake_clock, NULL);
    sb__memstore_set_clock(s, NULL, NULL); /* back to the monotonic clock */
    assert_int_equal(claim(s, "k", 60000), SB__CLAIM_OWNED);
    assert_int_equal(claim_as(s, "b", "k", 60000), SB__CLAIM_BUSY);
    s->ops->destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_args),
        cmocka_unit_test(test_claim_outcomes),
        cmocka_unit_test(test_other_owner_cannot_settle),
        cmocka_unit_test(test_lease_expiry),
        cmocka_unit_test(test_extend_and_release),
        cmocka_unit_test(test_done_ttl),
        cmocka_unit_test(test_capacity_and_reclaim),
        cmocka_unit_test(test_owner_limit),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_alloc_failure),
        cmocka_unit_test(test_default_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
