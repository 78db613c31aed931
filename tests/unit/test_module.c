/* Loading handler modules: a good one, a wrong ABI, a missing entry point, a missing file,
 * and descriptor checks on statically linked modules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "switchboard/switchboard.h"
#include "host.h"
#include "module.h"

static void test_good_module(void **state)
{
    char err[512] = "";
    sb__module_t *m = NULL;
    int rc = sb__module_open(MOD_GOOD, &m, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("%s", err);
    const sb_module_t *d = sb__module_desc(m);
    assert_string_equal(d->name, "good");
    assert_string_equal(d->version, "1.2.3");
    assert_string_equal(d->handlers[0].name, "first");
    assert_string_equal(d->handlers[1].pattern, "#");
    assert_true(d->handlers[1].flags & SB_HANDLER_BLOCKING);
    assert_null(d->handlers[2].name);
    assert_string_equal(sb__module_path(m), MOD_GOOD);
    sb__module_close(m);
    sb__module_close(NULL);
}

static void test_wrong_abi(void **state)
{
    char err[512] = "";
    sb__module_t *m = (sb__module_t *)0x1;
    assert_int_equal(sb__module_open(MOD_BADABI, &m, err, sizeof err), SB_EABI);
    assert_null(m);
    assert_non_null(strstr(err, "handler ABI 2"));
    assert_non_null(strstr(err, "speaks ABI 1"));
}

static void test_no_entry_point(void **state)
{
    char err[512] = "";
    sb__module_t *m;
    assert_int_equal(sb__module_open(MOD_NOENTRY, &m, err, sizeof err), SB_EABI);
    assert_non_null(strstr(err, "does not export sb_module_init"));
}

static void test_missing_file(void **state)
{
    char err[512] = "";
    sb__module_t *m;
    assert_int_equal(sb__module_open("/nonexistent/mod.so", &m, err, sizeof err), SB_ENOTFOUND);
    assert_non_null(strstr(err, "cannot load module /nonexistent/mod.so"));
}

static sb_outcome_t noop(sb_context_t *c, const sb_event_t *e, void *u)
{
    return SB_OK;
}

static void test_static_descriptor_checks(void **state)
{
    char err[256];
    sb__module_t *m = NULL;
    static const sb_handler_def_t dup[] = {
        {.name = "a", .pattern = "x", .fn = noop}, {.name = "a", .pattern = "y", .fn = noop}, {0}};
    static const sb_handler_def_t nofn[] = {{.name = "a", .pattern = "x"}, {0}};
    static const sb_handler_def_t none[] = {{0}};
    static const sb_handler_def_t ok[] = {{.name = "a", .pattern = "x", .fn = noop}, {0}};
    sb_module_t d = {SB_MODULE_HEADER, .name = "m", .handlers = dup};
    assert_int_equal(sb__module_check(&d, err, sizeof err), SB_EINVAL);
    assert_non_null(strstr(err, "declared twice"));
    d.handlers = nofn;
    assert_int_equal(sb__module_check(&d, err, sizeof err), SB_EINVAL);
    assert_non_null(strstr(err, "no function"));
    d.handlers = none;
    assert_int_equal(sb__module_check(&d, err, sizeof err), SB_EINVAL);
    assert_non_null(strstr(err, "no handlers"));
    d.handlers = ok;
    d.struct_size = 8;
    assert_int_equal(sb__module_check(&d, err, sizeof err), SB_EABI);
    d.struct_size = sizeof d;
    d.name = NULL;
    assert_int_equal(sb__module_check(&d, err, sizeof err), SB_EINVAL);
    d.name = "m";
    assert_int_equal(sb__module_check(NULL, err, sizeof err), SB_EINVAL);
    assert_int_equal(sb__module_wrap_static(&d, &m, err, sizeof err), SB_EOK);
    assert_null(sb__module_path(m));
    assert_ptr_equal(sb__module_desc(m), &d);
    sb__module_close(m);
    /* The host API table advertises our ABI. */
    assert_int_equal(sb__host_api()->abi_version, SB_HANDLER_ABI_VERSION);
    assert_int_equal(sb__host_api()->struct_size, sizeof(sb_host_api));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_module),
        cmocka_unit_test(test_wrong_abi),
        cmocka_unit_test(test_no_entry_point),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_static_descriptor_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
