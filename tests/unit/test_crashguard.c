/* test_crashguard.c: the crash guard's file (crashguard.c): strikes for the events that
 * were running when a process ended without leaving its handler, none for the ones that
 * returned, clearing, worker-thread slots, long ids, a full strike table, a foreign file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "switchboard/error.h"
#include "crashguard.h"
#include "log.h"

static char path[64];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/sb-crashguard-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

static sb__crashguard_t *open_guard(unsigned max)
{
    sb__crashguard_t *g = NULL;
    char err[256];
    assert_int_equal(sb__crashguard_open(path, max, &g, err, sizeof err), SB_EOK);
    return g;
}

static unsigned strikes(sb__crashguard_t *g, const char *id)
{
    return sb__crashguard_strikes(g, id, strlen(id));
}

/* A process that "dies" in a handler: enter without leave, then the mapping goes away. */
static void die_in(const char *id)
{
    sb__crashguard_t *g = open_guard(3);
    sb__crashguard_enter(g, true, id, strlen(id));
    sb__crashguard_close(g);
}

static void test_strikes_and_clear(void **state)
{
    (void)state;
    sb__crashguard_t *g = open_guard(3);
    assert_int_equal(strikes(g, "e1"), 0);
    sb__crashguard_enter(g, true, "e2", 2); /* returns normally */
    sb__crashguard_leave(g, true);
    sb__crashguard_close(g);
    for (unsigned k = 1; k <= 3; k++) {
        die_in("e1");
        g = open_guard(3);
        assert_int_equal(strikes(g, "e1"), k);
        assert_int_equal(strikes(g, "e2"), 0);
        sb__crashguard_close(g);
    }
    g = open_guard(3);
    assert_int_equal(sb__crashguard_max(g), 3);
    sb__crashguard_clear(g, "e1", 2);
    assert_int_equal(strikes(g, "e1"), 0);
    sb__crashguard_close(g);
    g = open_guard(3); /* the clear is in the file */
    assert_int_equal(strikes(g, "e1"), 0);
    sb__crashguard_close(g);
}

typedef struct worker_arg {
    sb__crashguard_t *g;
    const char *id;
} worker_arg_t;

static void *worker(void *p)
{
    worker_arg_t *a = p;
    sb__crashguard_enter(a->g, false, a->id, strlen(a->id)); /* and never leaves */
    return NULL;
}

static void test_worker_slots_and_long_ids(void **state)
{
    (void)state;
    char long_a[300], long_b[300];
    memset(long_a, 'a', sizeof long_a - 1);
    long_a[sizeof long_a - 1] = '\0';
    memcpy(long_b, long_a, sizeof long_b);
    long_b[250] = 'b'; /* differs after the compared prefix */
    sb__crashguard_t *g = open_guard(2);
    worker_arg_t a = {g, "on-worker"};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, worker, &a), 0);
    pthread_join(th, NULL);
    sb__crashguard_enter(g, true, long_a, strlen(long_a));
    sb__crashguard_close(g);
    g = open_guard(2);
    assert_int_equal(strikes(g, "on-worker"), 1);
    assert_int_equal(strikes(g, long_a), 1);
    assert_int_equal(strikes(g, long_b), 1); /* same first SB__CRASHGUARD_ID_MAX bytes */
    sb__crashguard_close(g);
}

static void test_full_table_and_foreign_file(void **state)
{
    (void)state;
    die_in("keep");
    die_in("keep"); /* 2 strikes: survives the flood of single strikes below */
    char id[32];
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "flood-%d", i);
        die_in(id);
    }
    sb__crashguard_t *g = open_guard(3);
    assert_int_equal(strikes(g, "keep"), 2);
    assert_int_equal(strikes(g, "flood-99"), 1);
    sb__crashguard_close(g);
    /* Anything else in the file (another program's, a truncated one): started afresh. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("not a crash file", f);
    fclose(f);
    g = open_guard(3);
    assert_int_equal(strikes(g, "keep"), 0);
    sb__crashguard_close(g);
    char err[256];
    assert_int_equal(sb__crashguard_open("/nonexistent-dir/x.crash", 3, &g, err, sizeof err),
                     SB_EIO);
    assert_non_null(strstr(err, "/nonexistent-dir/x.crash"));
}

int main(void)
{
    sb__log_configure(SB_LOG_ERROR, SB__LOG_TEXT, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_strikes_and_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_slots_and_long_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_table_and_foreign_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
