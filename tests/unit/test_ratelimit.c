/* Replay pacing (--rate) with a fake clock, rate parsing, and the progress line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "switchboard/error.h"
#include "ratelimit.h"

static void rate_ok(const char *s, uint64_t want_n, uint64_t want_period)
{
    uint64_t n = 0, per = 0;
    char err[256] = "";
    if (sb__ratelimit_parse(s, &n, &per, err, sizeof err) != SB_EOK)
        fail_msg("\"%s\": %s", s, err);
    assert_int_equal(n, want_n);
    assert_int_equal(per, want_period);
}

static void rate_bad(const char *s, int want_rc, const char *want_in_err)
{
    uint64_t n = 7, per = 7;
    char err[256] = "";
    assert_int_equal(sb__ratelimit_parse(s, &n, &per, err, sizeof err), want_rc);
    assert_int_equal(n, 7);
    if (!strstr(err, want_in_err))
        fail_msg("\"%s\": error \"%s\" lacks \"%s\"", s, err, want_in_err);
}

static void test_parse(void **state)
{
    (void)state;
    rate_ok("100/s", 100, 1000000);
    rate_ok("5/m", 5, 60000000);
    rate_ok("3600/h", 3600, 3600000000ull);
    rate_ok(" 10 / s ", 10, 1000000);
    rate_ok("1000000000/s", 1000000000, 1000000);
    rate_bad("", SB_EPARSE, "--rate: invalid rate \"\": expected N/s, N/m or N/h");
    rate_bad("100", SB_EPARSE, "expected N/s");
    rate_bad("100/", SB_EPARSE, "expected N/s");
    rate_bad("100/d", SB_EPARSE, "expected N/s");
    rate_bad("100/sec", SB_EPARSE, "expected N/s");
    rate_bad("1.5/s", SB_EPARSE, "expected N/s");
    rate_bad("-1/s", SB_EPARSE, "expected N/s");
    rate_bad("/s", SB_EPARSE, "expected N/s");
    rate_bad("0/s", SB_ERANGE, "at least 1");
    rate_bad("1000000001/s", SB_ERANGE, "too fast");
    rate_bad("99999999999999999999999/s", SB_ERANGE, "too fast");
    assert_int_equal(sb__ratelimit_parse(NULL, NULL, NULL, NULL, 0), SB_EINVAL);
}

/* Drives the limiter like the CLI: ask, sleep what it says, ask again. Returns the times at
 * which the messages went. */
static void run(sb__ratelimit_t *rl, int64_t start, size_t count, int64_t *sent)
{
    int64_t now = start;
    for (size_t i = 0; i < count; i++) {
        int64_t d;
        int guard = 0;
        while ((d = sb__ratelimit_delay_us(rl, now)) > 0) {
            now += d;
            assert_true(++guard < 3); /* one wait always suffices */
        }
        sent[i] = now;
    }
}

static void test_even_spacing(void **state)
{
    (void)state;
    sb__ratelimit_t rl;
    sb__ratelimit_init(&rl, 4, 1000000, 1);
    int64_t t[9];
    run(&rl, 1000, 9, t);
    for (int i = 0; i < 9; i++)
        assert_int_equal(t[i], 1000 + i * 250000);
}

static void test_no_drift_with_remainders(void **state)
{
    (void)state;
    /* 3/s: 333333.33 µs apart; message 3k goes at exactly start + k seconds. */
    sb__ratelimit_t rl;
    sb__ratelimit_init(&rl, 3, 1000000, 1);
    static int64_t t[3001];
    run(&rl, 0, 3001, t);
    for (int k = 0; k <= 1000; k++)
        assert_int_equal(t[3 * k], (int64_t)k * 1000000);
    assert_int_equal(t[1], 333334); /* 333333.33 rounded up: never early */
    assert_int_equal(t[2], 666667);
    /* 7/m */
    sb__ratelimit_init(&rl, 7, 60000000, 1);
    run(&rl, 5, 15, t);
    assert_int_equal(t[7], 5 + 60000000);
    assert_int_equal(t[14], 5 + 120000000);
}

static void test_idle_and_burst(void **state)
{
    (void)state;
    sb__ratelimit_t rl;
    sb__ratelimit_init(&rl, 10, 1000000, 1);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 0), 0);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 0), 100000);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 40000), 60000);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 100000), 0);
    /* After a long idle spell, burst 1 allows one message, then spacing again. */
    assert_int_equal(sb__ratelimit_delay_us(&rl, 10000000), 0);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 10000000), 100000);

    /* Burst 3: three at once after idling, then the steady rate. */
    sb__ratelimit_init(&rl, 10, 1000000, 3);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 0), 0);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 0), 0);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 0), 0);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 0), 100000);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 100000), 0);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 100000), 100000);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 5000000), 0);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 5000000), 0);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 5000000), 0);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 5000000), 100000);

    /* Burst 0 reads as 1; a clock going backwards only waits longer. */
    sb__ratelimit_init(&rl, 1, 1000000, 0);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 1000000), 0);
    assert_int_equal(sb__ratelimit_delay_us(&rl, 500000), 1500000);
    /* Very fast rates: no wait at all between whole microseconds. */
    sb__ratelimit_init(&rl, 1000000000, 1000000, 1);
    static int64_t t[5001];
    run(&rl, 7, 5001, t);
    assert_int_equal(t[0], 7);
    assert_int_equal(t[1], 8); /* due at 7.001 µs: never early */
    assert_int_equal(t[1000], 8);
    assert_int_equal(t[1001], 9);
    assert_int_equal(t[5000], 7 + 5); /* 5000 messages take 5 µs */
}

static void progress(uint64_t done, uint64_t total, uint64_t elapsed_us, const char *want)
{
    char buf[128];
    size_t n = sb__progress_format(buf, sizeof buf, done, total, elapsed_us);
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));
}

static void test_progress(void **state)
{
    (void)state;
    progress(0, 5000, 0, "0/5000  0.0/s  ETA --:--");
    progress(1200, 5000, 3000000, "1200/5000  400.0/s  ETA 00:10");
    progress(1, 3, 3000000, "1/3  0.3/s  ETA 00:06");
    progress(10, 10000, 1000000, "10/10000  10.0/s  ETA 16:39");
    progress(1, 100000, 1000000, "1/100000  1.0/s  ETA 1666:39");
    progress(5000, 5000, 12000000, "5000/5000  416.7/s  ETA 00:00");
    progress(6000, 5000, 12000000, "6000/5000  500.0/s  ETA 00:00");
    progress(1200, 0, 3000000, "1200/?  400.0/s");
    progress(1, UINT64_MAX, 1000000000000ull, "1/18446744073709551615  0.0/s  ETA --:--");
    /* Truncation, snprintf-style. */
    char small[8];
    size_t n = sb__progress_format(small, sizeof small, 1200, 5000, 3000000);
    assert_int_equal(n, strlen("1200/5000  400.0/s  ETA 00:10"));
    assert_string_equal(small, "1200/50");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_even_spacing),
        cmocka_unit_test(test_no_drift_with_remainders),
        cmocka_unit_test(test_idle_and_burst),
        cmocka_unit_test(test_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
