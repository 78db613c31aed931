/* Durations and sizes as written in config files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "switchboard/error.h"
#include "units.h"

static void duration_ok(const char *s, uint64_t want)
{
    uint64_t v = 12345;
    char err[256] = "";
    int rc = sb__parse_duration_ms(s, &v, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("\"%s\": %s", s, err);
    assert_int_equal(v, want);
}

static void duration_bad(const char *s, int want_rc, const char *want_in_err)
{
    uint64_t v = 12345;
    char err[256] = "";
    assert_int_equal(sb__parse_duration_ms(s, &v, err, sizeof err), want_rc);
    assert_int_equal(v, 12345); /* untouched on failure */
    if (!strstr(err, want_in_err))
        fail_msg("\"%s\": error \"%s\" lacks \"%s\"", s, err, want_in_err);
}

static void test_durations(void **state)
{
    duration_ok("250ms", 250);
    duration_ok("30s", 30000);
    duration_ok("5m", 300000);
    duration_ok("2h", 7200000);
    duration_ok("7d", 604800000);
    duration_ok("1h30m", 5400000);
    duration_ok("1m500ms", 60500);
    duration_ok("0", 0);
    duration_ok("0s", 0);
    duration_ok("  15s ", 15000);
    duration_ok("213503982334d", 213503982334ull * 86400000ull);
}

static void test_bad_durations(void **state)
{
    duration_bad("", SB_EPARSE, "expected");
    duration_bad("15", SB_EPARSE, "missing unit");
    duration_bad("1.5s", SB_EPARSE, "fractions are not supported");
    duration_bad("10y", SB_EPARSE, "unknown unit");
    duration_bad("s", SB_EPARSE, "expected an integer");
    duration_bad("-5s", SB_EPARSE, "expected an integer");
    duration_bad("5s x", SB_EPARSE, "expected");
    duration_bad("99999999999999999999s", SB_ERANGE, "too large");
    duration_bad("213503982335d", SB_ERANGE, "too large");
    assert_int_equal(sb__parse_duration_ms(NULL, NULL, NULL, 0), SB_EINVAL);
}

static void size_ok(const char *s, uint64_t want)
{
    uint64_t v = 1;
    char err[256] = "";
    int rc = sb__parse_size(s, &v, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("\"%s\": %s", s, err);
    assert_int_equal(v, want);
}

static void test_sizes(void **state)
{
    size_ok("64KiB", 65536);
    size_ok("1MiB", 1048576);
    size_ok("2GiB", 2147483648ull);
    size_ok("1 MiB", 1048576);
    size_ok("512", 512);
    size_ok("512B", 512);
    size_ok("10kB", 10000);
    size_ok("3MB", 3000000);
    size_ok("0", 0);

    uint64_t v = 7;
    char err[256];
    assert_int_equal(sb__parse_size("1.5MiB", &v, err, sizeof err), SB_EPARSE);
    assert_int_equal(sb__parse_size("1mib", &v, err, sizeof err), SB_EPARSE);
    assert_non_null(strstr(err, "unknown unit"));
    assert_int_equal(sb__parse_size("MiB", &v, err, sizeof err), SB_EPARSE);
    assert_int_equal(sb__parse_size("1MiB2", &v, err, sizeof err), SB_EPARSE);
    assert_int_equal(sb__parse_size("17179869184GiB", &v, err, sizeof err), SB_ERANGE);
    assert_int_equal(sb__parse_size("18446744073709551616", &v, err, sizeof err), SB_ERANGE);
    assert_int_equal(v, 7);
    /* A NULL error buffer is allowed. */
    assert_int_equal(sb__parse_size("x", &v, NULL, 0), SB_EPARSE);
}

static void test_format(void **state)
{
    char buf[64];
    sb__format_duration_ms(5400000, buf, sizeof buf);
    assert_string_equal(buf, "1h30m");
    sb__format_duration_ms(250, buf, sizeof buf);
    assert_string_equal(buf, "250ms");
    sb__format_duration_ms(0, buf, sizeof buf);
    assert_string_equal(buf, "0s");
    sb__format_size(65536, buf, sizeof buf);
    assert_string_equal(buf, "64KiB");
    sb__format_size(1000, buf, sizeof buf);
    assert_string_equal(buf, "1000B");
    /* Round trip through the parser. */
    uint64_t v;
    sb__format_duration_ms(93784005, buf, sizeof buf);
    assert_int_equal(sb__parse_duration_ms(buf, &v, NULL, 0), SB_EOK);
    assert_int_equal(v, 93784005);
    /* Truncation never overruns. */
    char tiny[4];
    sb__format_duration_ms(93784005, tiny, sizeof tiny);
    assert_true(strlen(tiny) < sizeof tiny);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_bad_durations),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
