/* The error enum, its names and texts, the version, and the allocator hooks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "switchboard/switchboard.h"

static void test_codes(void **state)
{
    assert_int_equal(SB_EOK, 0);
    assert_int_equal(SB_OK, 0); /* the handler outcome, a separate enum */
    assert_string_equal(sb_err_name(SB_EOK), "SB_EOK");
    assert_string_equal(sb_err_name(SB_ENOMEM), "SB_ENOMEM");
    assert_string_equal(sb_strerror(SB_ENOMEM), "out of memory");
    assert_string_equal(sb_strerror(12345), "unknown error");
    assert_string_equal(sb_err_name(-999), "SB_EUNKNOWN");
    /* Every code is negative, distinct, named and described. */
    for (int e = -1; e > SB__ERR_LAST; e--) {
        assert_string_not_equal(sb_err_name(e), "SB_EUNKNOWN");
        assert_string_not_equal(sb_strerror(e), "unknown error");
        for (int o = e - 1; o > SB__ERR_LAST; o--)
            assert_string_not_equal(sb_err_name(e), sb_err_name(o));
    }
}

static void test_version(void **state)
{
    assert_int_equal(sb_version(), SB_VERSION_NUM);
    assert_string_equal(sb_version_string(), SB_VERSION_STRING);
}

static int n_alloc, n_free;

static void *count_malloc(size_t n)
{
    n_alloc++;
    return malloc(n);
}

static void *count_realloc(void *p, size_t n)
{
    if (!p)
        n_alloc++;
    return realloc(p, n);
}

static void count_free(void *p)
{
    if (p)
        n_free++;
    free(p);
}

static void test_allocator_hooks(void **state)
{
    assert_int_equal(sb_set_allocator(count_malloc, NULL, count_free), SB_EINVAL);
    assert_int_equal(sb_set_allocator(count_malloc, count_realloc, count_free), SB_EOK);
    char *s = sb_strdup("hello");
    assert_string_equal(s, "hello");
    sb_free(s);
    sb_free(NULL);
    /* jansson allocations go through the same hooks. */
    json_t *j = json_pack("{s:i}", "a", 1);
    assert_non_null(j);
    json_decref(j);
    assert_true(n_alloc >= 2);
    assert_int_equal(n_alloc, n_free);
    assert_int_equal(sb_set_allocator(NULL, NULL, NULL), SB_EOK);
    int *z = sb_calloc(4, sizeof *z);
    assert_int_equal(z[0] + z[3], 0);
    sb_free(z);
    assert_null(sb_calloc(SIZE_MAX / 2, 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_allocator_hooks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
