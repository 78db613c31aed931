/* Retry policies: each kind's sequence, the cap, huge attempt numbers, jitter bounds and
 * mean, exhaustion, reading policies from configuration with per-handler inheritance, the
 * base_delay > max_delay error, and the random source. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "switchboard/error.h"
#include "config.h"
#include "retry.h"

static sb__retry_policy_t policy(sb__retry_kind_t kind, uint64_t base, uint64_t max)
{
    return (sb__retry_policy_t){.kind = kind,
                                .base_delay_ms = base,
                                .max_delay_ms = max,
                                .max_attempts = 5,
                                .jitter = false};
}

static void expect_sequence(const sb__retry_policy_t *p, const uint64_t *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t got = sb__retry_delay_ms(p, (unsigned)(i + 2), 12345);
        if (got != want[i])
            fail_msg("%s: attempt %zu: got %llu, want %llu", sb__retry_kind_name(p->kind), i + 2,
                     (unsigned long long)got, (unsigned long long)want[i]);
    }
}

static void test_fixed(void **state)
{
    (void)state;
    sb__retry_policy_t p = policy(SB__RETRY_FIXED, 1000, 60000);
    expect_sequence(&p, (const uint64_t[]){1000, 1000, 1000, 1000, 1000}, 5);
    p.max_delay_ms = 300; /* the cap applies to fixed too */
    expect_sequence(&p, (const uint64_t[]){300, 300}, 2);
}

static void test_linear(void **state)
{
    (void)state;
    sb__retry_policy_t p = policy(SB__RETRY_LINEAR, 250, 1000);
    expect_sequence(&p, (const uint64_t[]){250, 500, 750, 1000, 1000, 1000}, 6);
}

static void test_exponential(void **state)
{
    (void)state;
    sb__retry_policy_t p = policy(SB__RETRY_EXPONENTIAL, 100, 5000);
    expect_sequence(&p, (const uint64_t[]){100, 200, 400, 800, 1600, 3200, 5000, 5000}, 8);
    /* Attempts 0 and 1 are treated as the first retry. */
    assert_int_equal(sb__retry_delay_ms(&p, 0, 0), 100);
    assert_int_equal(sb__retry_delay_ms(&p, 1, 0), 100);
}

static void test_huge_attempts(void **state)
{
    (void)state;
    const unsigned attempts[] = {63, 64, 65, 66, 100, 1000, 1u << 20, UINT_MAX - 1, UINT_MAX};
    const sb__retry_kind_t kinds[] = {SB__RETRY_FIXED, SB__RETRY_LINEAR, SB__RETRY_EXPONENTIAL};
    const uint64_t caps[] = {5 * 60 * 1000, UINT64_MAX / 3, UINT64_MAX};
    for (size_t k = 0; k < 3; k++) {
        for (size_t c = 0; c < 3; c++) {
            sb__retry_policy_t p = policy(kinds[k], 7, caps[c]);
            for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
                uint64_t d = sb__retry_delay_ms(&p, attempts[i], 0);
                assert_true(d <= caps[c]);
                if (kinds[k] == SB__RETRY_FIXED) {
                    assert_int_equal(d, 7);
                } else if (kinds[k] == SB__RETRY_LINEAR) {
                    /* 7 * (2^32 - 1) fits 64 bits: the exact value is computable here. */
                    uint64_t want = 7 * ((uint64_t)attempts[i] - 1);
                    assert_true(d == (want < caps[c] ? want : caps[c]));
                } else if (caps[c] == 5 * 60 * 1000 || attempts[i] >= 66) {
                    assert_true(d == caps[c]); /* 7 << 61 and beyond exceed these caps */
                }
            }
        }
    }
    /* Exact where representable: 1 << 63 fits a UINT64_MAX cap, 1 << 64 does not. */
    sb__retry_policy_t p = policy(SB__RETRY_EXPONENTIAL, 1, UINT64_MAX);
    assert_true(sb__retry_delay_ms(&p, 65, 0) == (uint64_t)1 << 63);
    assert_true(sb__retry_delay_ms(&p, 66, 0) == UINT64_MAX);
    p.base_delay_ms = 3; /* 3 << 63 overflows 64 bits: must cap, not wrap */
    assert_true(sb__retry_delay_ms(&p, 65, 0) == UINT64_MAX);
    assert_true(sb__retry_delay_ms(&p, 64, 0) == (uint64_t)3 << 62);
    p = policy(SB__RETRY_LINEAR, UINT64_MAX / 2, UINT64_MAX);
    assert_true(sb__retry_delay_ms(&p, 3, 0) == UINT64_MAX - 1);
    assert_true(sb__retry_delay_ms(&p, 4, 0) == UINT64_MAX);
    assert_true(sb__retry_delay_ms(&p, UINT_MAX, 0) == UINT64_MAX);
    /* A zero base stays zero and does not divide by zero. */
    p = policy(SB__RETRY_LINEAR, 0, 1000);
    assert_int_equal(sb__retry_delay_ms(&p, UINT_MAX, 0), 0);
    p.kind = SB__RETRY_EXPONENTIAL;
    assert_int_equal(sb__retry_delay_ms(&p, UINT_MAX, 0), 0);
}

static void test_jitter(void **state)
{
    (void)state;
    sb__retry_policy_t p = policy(SB__RETRY_EXPONENTIAL, 100, 5000);
    p.jitter = true;
    /* Extreme random values stay inside [0, capped]. */
    assert_int_equal(sb__retry_delay_ms(&p, 2, 0), 0);
    assert_true(sb__retry_delay_ms(&p, 2, UINT64_MAX) <= 100);
    assert_int_equal(sb__retry_delay_ms(&p, 2, 100), 100);
    assert_int_equal(sb__retry_delay_ms(&p, 2, 101), 0);
    for (unsigned attempt = 2; attempt < 12; attempt++) {
        const uint64_t capped = attempt < 8 ? 100u << (attempt - 2) : 5000;
        const int n = 20000;
        double sum = 0;
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int i = 0; i < n; i++) {
            uint64_t d = sb__retry_delay_ms(&p, attempt, sb__random_u64());
            assert_true(d <= capped);
            sum += (double)d;
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        double mean = sum / n;
        /* Uniform on [0, capped]: the mean is capped/2 within a few standard errors. */
        if (mean < capped * 0.47 || mean > capped * 0.53)
            fail_msg("attempt %u: mean %.1f, capped %llu", attempt, mean,
                     (unsigned long long)capped);
        assert_true(lo < capped / 20);          /* reaches near 0 */
        assert_true(hi > capped - capped / 20); /* and near the cap */
    }
    /* Deterministic for a given random value; full 64-bit range with an unbounded cap. */
    assert_int_equal(sb__retry_delay_ms(&p, 5, 777), sb__retry_delay_ms(&p, 5, 777));
    p = policy(SB__RETRY_FIXED, UINT64_MAX, UINT64_MAX);
    p.jitter = true;
    assert_true(sb__retry_delay_ms(&p, 2, UINT64_MAX) == UINT64_MAX);
    assert_true(sb__retry_delay_ms(&p, 2, 42) == 42);
}

static void test_exhausted(void **state)
{
    (void)state;
    sb__retry_policy_t p = policy(SB__RETRY_FIXED, 1, 1);
    p.max_attempts = 3;
    assert_false(sb__retry_exhausted(&p, 1));
    assert_false(sb__retry_exhausted(&p, 2));
    assert_true(sb__retry_exhausted(&p, 3));
    assert_true(sb__retry_exhausted(&p, 4));
    assert_true(sb__retry_exhausted(&p, UINT_MAX));
    p.max_attempts = 1; /* no retry at all */
    assert_true(sb__retry_exhausted(&p, 1));
}

static void test_random(void **state)
{
    (void)state;
    /* Not a quality test: distinct values and both halves of the bit range appear. */
    uint64_t prev = sb__random_u64(), or_bits = 0, and_bits = UINT64_MAX;
    for (int i = 0; i < 1000; i++) {
        uint64_t v = sb__random_u64();
        assert_true(v != prev);
        prev = v;
        or_bits |= v;
        and_bits &= v;
    }
    assert_true(or_bits == UINT64_MAX);
    assert_true(and_bits == 0);
}

/* ---- configuration -------------------------------------------------------------------- */

static sb__config_t *load(const char *yaml)
{
    char err[512] = "";
    sb__config_t *cfg = NULL;
    int rc = sb__config_load_buffer(yaml, strlen(yaml), "cfg.yaml", &cfg, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("load failed (%d): %s", rc, err);
    return cfg;
}

static void test_config_defaults(void **state)
{
    (void)state;
    sb__config_t *cfg = load("service:\n  name: t\n");
    sb__retry_policy_t p;
    char err[256] = "";
    assert_int_equal(sb__retry_policy_from_config(cfg, "retry", NULL, &p, err, sizeof err), SB_EOK);
    /* The property table's defaults: exponential, 1s, 5m, 5, jitter on. */
    assert_int_equal(p.kind, SB__RETRY_EXPONENTIAL);
    assert_int_equal(p.base_delay_ms, 1000);
    assert_int_equal(p.max_delay_ms, 300000);
    assert_int_equal(p.max_attempts, 5);
    assert_true(p.jitter);
    sb__config_destroy(cfg);
}

static void test_config_inherit(void **state)
{
    (void)state;
    sb__config_t *cfg = load("retry:\n"
                             "  policy: linear\n  base_delay: 2s\n  max_delay: 1m\n"
                             "  max_attempts: 7\n  jitter: false\n"
                             "handlers:\n"
                             "  - name: a\n    module: log\n"
                             "  - name: b\n    module: log\n"
                             "    retry:\n      policy: fixed\n      max_attempts: 2\n"
                             "  - name: c\n    module: log\n"
                             "    retry: {base_delay: 250ms, max_delay: 10s, jitter: true,"
                             " policy: exponential, max_attempts: 9}\n");
    sb__retry_policy_t top, a, b, c;
    char err[256] = "";
    assert_int_equal(sb__retry_policy_from_config(cfg, "retry", NULL, &top, err, sizeof err),
                     SB_EOK);
    assert_int_equal(top.kind, SB__RETRY_LINEAR);
    assert_int_equal(top.base_delay_ms, 2000);
    assert_int_equal(top.max_delay_ms, 60000);
    assert_int_equal(top.max_attempts, 7);
    assert_false(top.jitter);

    /* Nothing set: everything inherited. */
    assert_int_equal(
        sb__retry_policy_from_config(cfg, "handlers[0].retry", &top, &a, err, sizeof err), SB_EOK);
    assert_memory_equal(&a, &top, sizeof a);

    /* Some keys set, the others inherited. */
    assert_int_equal(
        sb__retry_policy_from_config(cfg, "handlers[1].retry", &top, &b, err, sizeof err), SB_EOK);
    assert_int_equal(b.kind, SB__RETRY_FIXED);
    assert_int_equal(b.max_attempts, 2);
    assert_int_equal(b.base_delay_ms, 2000);
    assert_int_equal(b.max_delay_ms, 60000);
    assert_false(b.jitter);

    /* All keys set: nothing inherited. */
    assert_int_equal(
        sb__retry_policy_from_config(cfg, "handlers[2].retry", &top, &c, err, sizeof err), SB_EOK);
    assert_int_equal(c.kind, SB__RETRY_EXPONENTIAL);
    assert_int_equal(c.base_delay_ms, 250);
    assert_int_equal(c.max_delay_ms, 10000);
    assert_int_equal(c.max_attempts, 9);
    assert_true(c.jitter);

    /* Without anything to inherit, an absent handler key is an error naming the key. */
    sb__retry_policy_t untouched = {.max_attempts = 42};
    assert_int_equal(
        sb__retry_policy_from_config(cfg, "handlers[1].retry", NULL, &untouched, err, sizeof err),
        SB_ECONFIG);
    assert_string_equal(err,
                        "cfg.yaml: handlers[1].retry.base_delay: not set and nothing to inherit");
    assert_int_equal(untouched.max_attempts, 42);
    sb__config_destroy(cfg);
}

static void test_config_base_above_max(void **state)
{
    (void)state;
    char err[256] = "";
    sb__retry_policy_t p = {.max_attempts = 42};
    sb__config_t *cfg = load("retry:\n  base_delay: 10s\n  max_delay: 5s\n");
    assert_int_equal(sb__retry_policy_from_config(cfg, "retry", NULL, &p, err, sizeof err),
                     SB_ECONFIG);
    assert_string_equal(err, "cfg.yaml: retry: base_delay (10s) is greater than max_delay (5s)");
    assert_int_equal(p.max_attempts, 42); /* untouched */
    assert_int_equal(sb__retry_policy_from_config(cfg, "retry", NULL, &p, NULL, 0), SB_ECONFIG);
    sb__config_destroy(cfg);

    /* The conflict may arise only through inheritance: the message says which side. */
    cfg = load("retry:\n  base_delay: 2s\n  max_delay: 1m\n"
               "handlers:\n  - name: a\n    module: log\n    retry:\n      max_delay: 1s\n");
    sb__retry_policy_t top;
    assert_int_equal(sb__retry_policy_from_config(cfg, "retry", NULL, &top, err, sizeof err),
                     SB_EOK);
    assert_int_equal(
        sb__retry_policy_from_config(cfg, "handlers[0].retry", &top, &p, err, sizeof err),
        SB_ECONFIG);
    assert_string_equal(err, "cfg.yaml: handlers[0].retry: base_delay (2s, inherited) is "
                             "greater than max_delay (1s)");
    sb__config_destroy(cfg);
}

static void test_config_bad_args(void **state)
{
    (void)state;
    sb__retry_policy_t p;
    char err[64] = "";
    assert_int_equal(sb__retry_policy_from_config(NULL, "retry", NULL, &p, err, sizeof err),
                     SB_EINVAL);
    sb__config_t *cfg = load("");
    assert_int_equal(sb__retry_policy_from_config(cfg, NULL, NULL, &p, NULL, 0), SB_EINVAL);
    assert_int_equal(sb__retry_policy_from_config(cfg, "retry", NULL, NULL, NULL, 0), SB_EINVAL);
    char longprefix[400];
    memset(longprefix, 'x', sizeof longprefix - 1);
    longprefix[sizeof longprefix - 1] = '\0';
    assert_int_equal(sb__retry_policy_from_config(cfg, longprefix, NULL, &p, err, sizeof err),
                     SB_EINVAL);
    sb__config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed),           cmocka_unit_test(test_linear),
        cmocka_unit_test(test_exponential),     cmocka_unit_test(test_huge_attempts),
        cmocka_unit_test(test_jitter),          cmocka_unit_test(test_exhausted),
        cmocka_unit_test(test_random),          cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_inherit),  cmocka_unit_test(test_config_base_above_max),
        cmocka_unit_test(test_config_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
