/* test_harness.c: the handler test harness (switchboard/testing.h), used exactly as a
 * handler team would use it.
 *
 * The design choice: this file includes only installed public headers and links the shared
 * libswitchboard, not sb_internal, so it proves the public API is enough to test a handler:
 * the built-in `fail` and `record` modules and the notifier example module (NOTIFIER_SO)
 * through every outcome the harness reports (acked, retried with a delay, dead-lettered with
 * a reason, duplicates, published follow-ups) and its start-up errors. It does not test the
 * dispatcher's internals; test_retry and friends do that. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "switchboard/testing.h"

#define COMPLETED_ID "3f1c7e0a-0001-4c2b-9a55-6d1e2b7a9c01"
#define FAILED_ID    "3f1c7e0a-0002-4c2b-9a55-6d1e2b7a9c01"

/* A harness for `module`, failing the test with the reason when it cannot start. */
static sb_test_t *load(const char *module, const char *yaml)
{
    char err[512] = "";
    sb_test_t *t = sb_test_new(module, yaml, err, sizeof err);
    if (!t)
        fail_msg("sb_test_new(%s): %s", module, err);
    return t;
}

static void send_ok(sb_test_t *t, const char *type, const char *body, const char *const *headers,
                    sb_test_result_t *r)
{
    assert_int_equal(sb_test_send(t, type, body, headers, r), 0);
}

/* ---- fail ------------------------------------------------------------------------------ */

static void test_fail_retry_with_delay(void **state)
{
    sb_test_t *t = load("fail", "config:\n  delay: 250ms\n  reason: broker hiccup\n");
    sb_test_result_t r;
    send_ok(t, "AnyEvent", "{\"Id\": \"e-retry-1\"}", NULL, &r);
    assert_int_equal(r.outcome, SB_TEST_RETRIED);
    assert_int_equal(r.retry_delay_ms, 250);
    assert_int_equal(r.attempts, 1);
    assert_non_null(strstr(r.error, "broker hiccup"));
    assert_string_equal(r.handler, "fail");
    assert_int_equal(r.n_published, 0);
    assert_false(r.duplicate);
    sb_test_destroy(t);
}

static void test_fail_reject_with_reason(void **state)
{
    sb_test_t *t = load("fail", "config:\n  outcome: reject\n  reason: bad customer\n");
    sb_test_result_t r;
    send_ok(t, "AnyEvent", "{\"Id\": \"e-reject-1\"}", NULL, &r);
    assert_int_equal(r.outcome, SB_TEST_DEAD_LETTERED);
    assert_string_equal(r.reason, "rejected");
    assert_non_null(strstr(r.error, "bad customer"));
    assert_string_equal(r.handler, "fail");
    sb_test_destroy(t);
}

/* times: 2 fails attempts 1 and 2; the third delivery (2 attempts made) succeeds. Each send
 * is what the broker would redeliver, with the attempts counted so far in x-sb-attempts. */
static void test_fail_times_recovers(void **state)
{
    sb_test_t *t = load("fail", "retry:\n  max_attempts: 5\nconfig:\n  times: 2\n"
                                "  delay_ms: 10\n");
    const char *body = "{\"Id\": \"e-times-1\"}";
    sb_test_result_t r;
    send_ok(t, "AnyEvent", body, NULL, &r);
    assert_int_equal(r.outcome, SB_TEST_RETRIED);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.retry_delay_ms, 10);

    const char *second[] = {"x-sb-attempts", "1", NULL};
    send_ok(t, "AnyEvent", body, second, &r);
    assert_int_equal(r.outcome, SB_TEST_RETRIED);
    assert_int_equal(r.attempts, 2);
    assert_false(r.duplicate);

    const char *third[] = {"x-sb-attempts", "2", NULL};
    send_ok(t, "AnyEvent", body, third, &r);
    assert_int_equal(r.outcome, SB_TEST_ACKED);
    assert_int_equal(r.attempts, 3);
    assert_false(r.duplicate);

    /* Handled now: one more redelivery is a duplicate. */
    const char *fourth[] = {"x-sb-attempts", "3", NULL};
    send_ok(t, "AnyEvent", body, fourth, &r);
    assert_int_equal(r.outcome, SB_TEST_ACKED);
    assert_true(r.duplicate);
    sb_test_destroy(t);
}

static void test_fail_max_attempts(void **state)
{
    sb_test_t *t = load("fail", "retry:\n  max_attempts: 3\n");
    sb_test_result_t r;
    const char *before_last[] = {"x-sb-attempts", "1", NULL};
    send_ok(t, "AnyEvent", "{\"Id\": \"e-max-1\"}", before_last, &r);
    assert_int_equal(r.outcome, SB_TEST_RETRIED);
    assert_int_equal(r.attempts, 2);
    assert_true(r.retry_delay_ms > 0); /* the policy's delay: exponential, 1 s base */

    const char *last[] = {"x-sb-attempts", "2", NULL};
    send_ok(t, "AnyEvent", "{\"Id\": \"e-max-1\"}", last, &r);
    assert_int_equal(r.outcome, SB_TEST_DEAD_LETTERED);
    assert_string_equal(r.reason, "max-attempts");
    assert_int_equal(r.attempts, 3);
    assert_non_null(strstr(r.error, "injected failure"));
    assert_string_equal(r.handler, "fail");
    sb_test_destroy(t);
}

/* ---- record ---------------------------------------------------------------------------- */

static void test_record_writes_ledger(void **state)
{
    char path[] = "/tmp/sb_test_harness_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char yaml[256];
    snprintf(yaml, sizeof yaml, "config:\n  path: \"%s\"\n  fields: [JobId]\n", path);
    sb_test_t *t = load("record", yaml);
    sb_test_result_t r;
    send_ok(t, "DataSyncCompletedEvent", "{\"Id\": \"e-rec-1\", \"JobId\": \"job-7\"}", NULL, &r);
    assert_int_equal(r.outcome, SB_TEST_ACKED);
    assert_int_equal(r.n_published, 0);
    sb_test_destroy(t);

    json_error_t jerr;
    json_t *line = json_load_file(path, JSON_DISABLE_EOF_CHECK, &jerr);
    unlink(path);
    if (!line)
        fail_msg("ledger: %s", jerr.text);
    assert_string_equal(json_string_value(json_object_get(line, "id")), "e-rec-1");
    assert_string_equal(json_string_value(json_object_get(line, "type")), "DataSyncCompletedEvent");
    assert_string_equal(json_string_value(json_object_get(line, "handler")), "record");
    assert_int_equal(json_integer_value(json_object_get(line, "attempt")), 1);
    assert_string_equal(json_string_value(json_object_get(line, "JobId")), "job-7");
    json_decref(line);
}

/* recover_lines: the ledger's last lines, written before this start (here by "earlier
 * processes"), are not appended again for the same handler and id; older lines, other
 * handlers' lines and a fragment torn by a kill do not count. */
static void test_record_recovers_tail(void **state)
{
    char path[] = "/tmp/sb_test_harness_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char before[] = "{\"id\":\"a1\",\"handler\":\"record\"}\n"
                                 "{\"id\":\"a2\",\"handler\":\"record\"}\n"
                                 "{\"id\":\"a3\",\"handler\":\"record\"}\n"
                                 "{\"id\":\"a4\",\"handler\":\"other\"}\n"
                                 "{\"id\":\"a5\",\"handler\":\"record\"}\n"
                                 "{\"id\":\"a3\",\"handler\":\"record\"}\n"
                                 "{\"id\":\"a6\",\"ha"; /* torn */
    assert_int_equal(write(fd, before, sizeof before - 1), (ssize_t)(sizeof before - 1));
    close(fd);
    char yaml[256];
    snprintf(yaml, sizeof yaml, "config:\n  path: \"%s\"\n  recover_lines: 4\n", path);
    sb_test_t *t = load("record", yaml);
    /* a5 and a3 are in the last 4 lines; a4 only for another handler, a2 before them, a6
     * torn: those three are appended. */
    static const char *const sent[] = {"a5", "a3", "a4", "a2", "a6"};
    char body[64];
    for (size_t i = 0; i < sizeof sent / sizeof *sent; i++) {
        sb_test_result_t r;
        snprintf(body, sizeof body, "{\"Id\": \"%s\"}", sent[i]);
        send_ok(t, "DataSyncCompletedEvent", body, NULL, &r);
        assert_int_equal(r.outcome, SB_TEST_ACKED);
    }
    sb_test_destroy(t);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[256];
    size_t n = 0;
    const char *want_after[] = {"a4", "a2", "a6"};
    while (fgets(line, sizeof line, f)) {
        if (n++ < 7)
            continue; /* the lines written before (the fragment ended at start-up) */
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "id")), want_after[n - 8]);
        json_decref(j);
    }
    fclose(f);
    assert_int_equal(n, 7 + 3);

    /* A bad value is refused at start. */
    char err[256] = "";
    snprintf(yaml, sizeof yaml, "config:\n  path: \"%s\"\n  recover_lines: -1\n", path);
    assert_null(sb_test_new("record", yaml, err, sizeof err));
    assert_non_null(strstr(err, "recover_lines"));
    unlink(path);
}

/* ---- the notifier module --------------------------------------------------------------- */

/* The i-th published body, parsed; the test fails when it is not a JSON object. */
static json_t *published_json(sb_test_t *t, size_t i)
{
    const char *body = sb_test_published_body(t, i);
    assert_non_null(body);
    json_error_t jerr;
    json_t *o = json_loads(body, 0, &jerr);
    if (!json_is_object(o))
        fail_msg("published body %zu: %s: %s", i, jerr.text, body);
    return o;
}

static void test_notifier_completed(void **state)
{
    sb_test_t *t = load(NOTIFIER_SO, "config:\n  channel: sms\n");
    sb_test_result_t r;
    send_ok(t, "DataSyncCompletedEvent",
            "{\"Id\": \"" COMPLETED_ID "\", \"JobId\": \"job-42\", \"SourceSystem\": \"CRM\", "
            "\"TargetSystem\": \"Warehouse\", \"RecordsProcessed\": 1500}",
            NULL, &r);
    assert_int_equal(r.outcome, SB_TEST_ACKED);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.n_published, 1);
    assert_int_equal(sb_test_published_count(t), 1);
    assert_string_equal(sb_test_published_type(t, 0), "NotificationRequested");
    assert_null(sb_test_published_type(t, 1));
    json_t *n = published_json(t, 0);
    assert_string_equal(json_string_value(json_object_get(n, "SourceEventId")), COMPLETED_ID);
    assert_string_equal(json_string_value(json_object_get(n, "Severity")), "info");
    assert_string_equal(json_string_value(json_object_get(n, "Channel")), "sms");
    assert_int_equal(strlen(json_string_value(json_object_get(n, "Id"))), 36);
    assert_non_null(strstr(json_string_value(json_object_get(n, "Message")), "1500"));
    json_decref(n);
    sb_test_destroy(t);
}

static void test_notifier_failed_is_error(void **state)
{
    sb_test_t *t = load(NOTIFIER_SO, NULL);
    sb_test_result_t r;
    send_ok(t, "DataSyncFailedEvent",
            "{\"Id\": \"" FAILED_ID "\", \"JobId\": \"job-43\", \"Error\": \"timeout\"}", NULL, &r);
    assert_int_equal(r.outcome, SB_TEST_ACKED);
    assert_int_equal(r.n_published, 1);
    json_t *n = published_json(t, 0);
    assert_string_equal(json_string_value(json_object_get(n, "SourceEventId")), FAILED_ID);
    assert_string_equal(json_string_value(json_object_get(n, "Severity")), "error");
    assert_string_equal(json_string_value(json_object_get(n, "Channel")), "email");
    assert_non_null(strstr(json_string_value(json_object_get(n, "Message")), "timeout"));
    json_decref(n);
    sb_test_destroy(t);
}

static void test_notifier_missing_job_id(void **state)
{
    sb_test_t *t = load(NOTIFIER_SO, NULL);
    sb_test_result_t r;
    send_ok(t, "DataSyncCompletedEvent", "{\"Id\": \"e-nojob-1\", \"RecordsProcessed\": 3}", NULL,
            &r);
    assert_int_equal(r.outcome, SB_TEST_DEAD_LETTERED);
    assert_string_equal(r.reason, "rejected");
    assert_non_null(strstr(r.error, "missing JobId"));
    assert_non_null(strstr(r.error, "e-nojob-1"));
    assert_string_equal(r.handler, "notifier.completed");
    assert_int_equal(r.n_published, 0);
    assert_int_equal(sb_test_published_count(t), 0);
    sb_test_destroy(t);
}

/* The same Id twice: the second is acked as a duplicate without running the handler, so it
 * publishes nothing more. */
static void test_duplicate_skipped(void **state)
{
    sb_test_t *t = load(NOTIFIER_SO, NULL);
    const char *body = "{\"Id\": \"e-dup-1\", \"JobId\": \"job-44\"}";
    sb_test_result_t first, second;
    send_ok(t, "DataSyncCompletedEvent", body, NULL, &first);
    assert_int_equal(first.outcome, SB_TEST_ACKED);
    assert_false(first.duplicate);
    assert_int_equal(first.n_published, 1);
    send_ok(t, "DataSyncCompletedEvent", body, NULL, &second);
    assert_int_equal(second.outcome, SB_TEST_ACKED);
    assert_true(second.duplicate);
    assert_int_equal(second.n_published, 0);
    assert_int_equal(sb_test_published_count(t), 1);
    sb_test_destroy(t);
}

/* ---- intake and start-up errors -------------------------------------------------------- */

static void test_malformed_json(void **state)
{
    sb_test_t *t = load(NOTIFIER_SO, NULL);
    sb_test_result_t r;
    send_ok(t, "DataSyncCompletedEvent", "{\"Id\": \"e-bad-1\", \"JobId\": ", NULL, &r);
    assert_int_equal(r.outcome, SB_TEST_DEAD_LETTERED);
    assert_string_equal(r.reason, "decode");
    assert_true(r.error[0] != '\0');
    assert_int_equal(r.n_published, 0);
    sb_test_destroy(t);
}

static void test_bad_module_path(void **state)
{
    char err[512] = "";
    sb_test_t *t = sb_test_new("/nonexistent/dir/nohandler.so", NULL, err, sizeof err);
    assert_null(t);
    assert_non_null(strstr(err, "cannot load module /nonexistent/dir/nohandler.so"));
    /* A NULL buffer is allowed. */
    assert_null(sb_test_new("/nonexistent/dir/nohandler.so", NULL, NULL, 0));
    assert_null(sb_test_new(NULL, NULL, err, sizeof err));
    sb_test_destroy(NULL);
}

static void test_bad_instance_yaml(void **state)
{
    char err[512] = "";
    sb_test_t *t =
        sb_test_new("fail", "config:\n  times: 1\nretyr:\n  max_attempts: 3\n", err, sizeof err);
    assert_null(t);
    /* "instance_yaml:LINE: KEY: unknown key", the line counted in the caller's YAML. */
    unsigned line = 0;
    char key[64] = "";
    if (sscanf(err, "instance_yaml:%u: %63[^:]: unknown key", &line, key) != 2)
        fail_msg("unexpected error: %s", err);
    assert_int_equal(line, 3);
    assert_string_equal(key, "retyr");
}

static void test_bad_module_config(void **state)
{
    char err[512] = "";
    sb_test_t *t = sb_test_new(NOTIFIER_SO, "config:\n  chanel: sms\n", err, sizeof err);
    assert_null(t);
    assert_non_null(strstr(err, "chanel"));
}

static void test_send_bad_arguments(void **state)
{
    sb_test_t *t = load("fail", NULL);
    sb_test_result_t r;
    assert_true(sb_test_send(NULL, "X", "{}", NULL, &r) < 0);
    assert_true(sb_test_send(t, NULL, "{}", NULL, &r) < 0);
    assert_true(sb_test_send(t, "X", NULL, NULL, &r) < 0);
    assert_true(sb_test_send(t, "X", "{}", NULL, NULL) < 0);
    assert_int_equal(sb_test_published_count(NULL), 0);
    assert_null(sb_test_published_body(t, 0));
    sb_test_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_retry_with_delay),
        cmocka_unit_test(test_fail_reject_with_reason),
        cmocka_unit_test(test_fail_times_recovers),
        cmocka_unit_test(test_fail_max_attempts),
        cmocka_unit_test(test_record_writes_ledger),
        cmocka_unit_test(test_record_recovers_tail),
        cmocka_unit_test(test_notifier_completed),
        cmocka_unit_test(test_notifier_failed_is_error),
        cmocka_unit_test(test_notifier_missing_job_id),
        cmocka_unit_test(test_duplicate_skipped),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_bad_module_path),
        cmocka_unit_test(test_bad_instance_yaml),
        cmocka_unit_test(test_bad_module_config),
        cmocka_unit_test(test_send_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
