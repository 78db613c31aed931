/* test_example_handler.c: the out-of-tree example module under switchboard's test harness.
 *
 * Built outside the switchboard tree against the installed package (find_package), linking
 * only switchboard::switchboard, the way a handler team tests its module: no broker, no
 * test framework, exit status 0 = pass. MODULE_PATH (the built example_handler.so) comes
 * from CMakeLists.txt. It does not test the runtime itself; switchboard's own suite does. */
#include <stdio.h>
#include <string.h>

#include <switchboard/testing.h>

static int failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

int main(void)
{
    char err[512] = "";
    sb_test_t *t = sb_test_new(MODULE_PATH, NULL, err, sizeof err);
    if (!t) {
        fprintf(stderr, "cannot load %s: %s\n", MODULE_PATH, err);
        return 1;
    }
    const char *body = "{\"Id\": \"6b0e1a52-0001-4d3c-8a11-2f9c4e7d5b01\", "
                       "\"JobId\": \"job-1\", \"RecordsProcessed\": 12}";
    sb_test_result_t r;

    /* Bound to DataSyncCompletedEvent: handled and acked, nothing published. */
    CHECK(sb_test_send(t, "DataSyncCompletedEvent", body, NULL, &r) == 0);
    CHECK(r.outcome == SB_TEST_ACKED);
    CHECK(r.attempts == 1);
    CHECK(!r.duplicate);
    CHECK(r.n_published == 0);

    /* The same Id again is a duplicate: acked without running the handler. */
    CHECK(sb_test_send(t, "DataSyncCompletedEvent", body, NULL, &r) == 0);
    CHECK(r.outcome == SB_TEST_ACKED);
    CHECK(r.duplicate);

    /* No handler is bound to another type: dead-lettered as unroutable. */
    CHECK(sb_test_send(t, "ETLJobStartedEvent",
                       "{\"Id\": \"6b0e1a52-0002-4d3c-8a11-2f9c4e7d5b01\"}", NULL, &r) == 0);
    CHECK(r.outcome == SB_TEST_DEAD_LETTERED);
    CHECK(strcmp(r.reason, "unroutable") == 0);

    /* A body that is not JSON never reaches the handler. */
    CHECK(sb_test_send(t, "DataSyncCompletedEvent", "{\"Id\": ", NULL, &r) == 0);
    CHECK(r.outcome == SB_TEST_DEAD_LETTERED);
    CHECK(strcmp(r.reason, "decode") == 0);

    CHECK(sb_test_published_count(t) == 0);
    sb_test_destroy(t);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok: example_handler tests passed\n");
    return 0;
}
