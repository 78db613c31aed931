/* Intake end to end, without a broker: config -> decode -> schema -> route -> verdict. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "switchboard/switchboard.h"
#include "intake.h"

static const char VALID[] =
    "{\"JobId\":\"job-42\",\"SourceSystem\":\"CRM\",\"TargetSystem\":\"ERP\","
    "\"RecordsProcessed\":1250,\"CompletedAt\":\"2026-12-01T10:00:00.1234567Z\","
    "\"Id\":\"5b1f0a52-8d3c-4c59-9f7e-0c2a3f1d9e01\","
    "\"CreationDate\":\"2026-12-01T10:00:00.1234567Z\"}";

static int h_sync, h_all; /* handler targets: only their addresses matter */

static sb__intake_t *make(const char *extra_yaml)
{
    char yaml[2048], err[512];
    snprintf(yaml, sizeof yaml,
             "schemas:\n"
             "  dir: %s\n"
             "  bindings:\n"
             "    DataSyncCompletedEvent: DataSyncCompletedEvent.schema.json\n"
             "    CustomerData: CustomerData.schema.json\n"
             "%s",
             SCHEMAS, extra_yaml);
    sb__config_t *cfg;
    if (sb__config_load_buffer(yaml, strlen(yaml), "test.yaml", &cfg, err, sizeof err) != SB_EOK)
        fail_msg("config: %s", err);
    sb__intake_t *in;
    if (sb__intake_from_config(cfg, &in, err, sizeof err) != SB_EOK)
        fail_msg("intake: %s", err);
    sb__config_destroy(cfg);
    /* A wildcard inside a word is refused (almost always a mistake for a whole word). */
    assert_int_equal(sb__intake_bind_handler(in, "DataSync*Event", &h_sync, err, sizeof err),
                     SB_EPARSE);
    assert_int_equal(
        sb__intake_bind_handler(in, "DataSyncCompletedEvent", &h_sync, err, sizeof err), SB_EOK);
    assert_int_equal(sb__intake_bind_handler(in, "#", &h_all, err, sizeof err), SB_EOK);
    return in;
}

static void process(sb__intake_t *in, const char *body, const char *rk, sb__verdict_t *v)
{
    static sb_event_t ev;
    static int inited;
    if (!inited) {
        sb__event_init(&ev);
        inited = 1;
    }
    sb__intake_msg_t m = {.body = body, .body_len = strlen(body), .routing_key = rk};
    assert_int_equal(sb__intake_process(in, &m, &ev, v), SB_EOK);
}

static void test_dispatch_to_every_match(void **state)
{
    sb__intake_t *in = make("");
    sb__verdict_t v;
    process(in, VALID, "DataSyncCompletedEvent", &v);
    assert_int_equal(v.kind, SB__VERDICT_DISPATCH);
    /* The exact binding and "#" match, each target once, in binding order. */
    assert_int_equal(v.n_targets, 2);
    assert_ptr_equal(v.targets[0], &h_sync);
    assert_ptr_equal(v.targets[1], &h_all);
    assert_int_equal(sb__intake_stats(in)->dispatched, 1);
    sb__intake_destroy(in);
}

static void test_schema_failure_dead_letters(void **state)
{
    sb__intake_t *in = make("");
    sb__verdict_t v;
    char bad[sizeof VALID + 8];
    snprintf(bad, sizeof bad, "%s", VALID);
    memcpy(strstr(bad, "1250"), "-125", 4);
    process(in, bad, "DataSyncCompletedEvent", &v);
    assert_int_equal(v.kind, SB__VERDICT_DEAD_LETTER);
    assert_string_equal(v.reason, "schema");
    assert_non_null(strstr(v.error, "/RecordsProcessed: -125 is less than the minimum 0"));
    /* Without a schema for the type, the same body is dispatched. */
    process(in, bad, "SomethingElse", &v);
    assert_int_equal(v.kind, SB__VERDICT_DISPATCH);
    /* CustomerData with an invalid email. */
    process(in,
            "{\"Id\":\"7c9e6679-7425-40de-944b-e07fc1f90ae7\",\"CreationDate\":\"2026-12-01T10:00:"
            "00Z\","
            "\"Email\":\"not-an-email\",\"Phone\":null,\"Name\":\"Ana\"}",
            "CustomerData", &v);
    assert_int_equal(v.kind, SB__VERDICT_DEAD_LETTER);
    assert_non_null(strstr(v.error, "/Email"));
    /* Nested duplicate keys surface when the tree is built for the schema. */
    process(in,
            "{\"Id\":\"7c9e6679-7425-40de-944b-e07fc1f90ae7\",\"CreationDate\":\"2026-12-01T10:00:"
            "00Z\","
            "\"Email\":\"a@b.c\",\"Phone\":null,\"Name\":\"Ana\",\"X\":{\"k\":1,\"k\":2}}",
            "CustomerData", &v);
    assert_int_equal(v.kind, SB__VERDICT_DEAD_LETTER);
    assert_string_equal(v.reason, "decode");
    assert_non_null(strstr(v.error, "duplicate"));
    assert_int_equal(sb__intake_stats(in)->schema_failed, 2);
    assert_int_equal(sb__intake_stats(in)->decode_failed, 1);
    sb__intake_destroy(in);
}

static void test_schema_failure_ack_policy(void **state)
{
    sb__intake_t *in = make("  on_invalid: ack\n");
    sb__verdict_t v;
    process(in, "{\"Id\":\"5b1f0a52-8d3c-4c59-9f7e-0c2a3f1d9e01\"}", "DataSyncCompletedEvent", &v);
    assert_int_equal(v.kind, SB__VERDICT_ACK);
    assert_string_equal(v.reason, "schema");
    sb__intake_destroy(in);
}

static void test_decode_failure(void **state)
{
    sb__intake_t *in = make("");
    sb__verdict_t v;
    process(in, "{\"Id\":", "DataSyncCompletedEvent", &v);
    assert_int_equal(v.kind, SB__VERDICT_DEAD_LETTER);
    assert_string_equal(v.reason, "decode");
    assert_non_null(strstr(v.error, "unexpected end of input"));
    sb__intake_destroy(in);
}

static void test_unroutable_policies(void **state)
{
    char err[256];
    sb__config_t *cfg;
    const char *y = "intake:\n  unroutable: dead-letter\n";
    assert_int_equal(sb__config_load_buffer(y, strlen(y), "t.yaml", &cfg, err, sizeof err), SB_EOK);
    sb__intake_t *in;
    assert_int_equal(sb__intake_from_config(cfg, &in, err, sizeof err), SB_EOK);
    sb__config_destroy(cfg);
    sb__intake_bind_handler(in, "ETL.*", &h_all, err, sizeof err);
    sb__verdict_t v;
    process(in, "{\"Id\":\"x\"}", "DataSyncCompletedEvent", &v);
    assert_int_equal(v.kind, SB__VERDICT_DEAD_LETTER);
    assert_string_equal(v.reason, "unroutable");
    assert_non_null(
        strstr(v.error, "no handler is bound to event type \"DataSyncCompletedEvent\""));
    process(in, "{\"Id\":\"x\"}", "ETL.Started", &v);
    assert_int_equal(v.kind, SB__VERDICT_DISPATCH);
    sb__intake_destroy(in);

    y = "intake:\n  unroutable: ack\n";
    assert_int_equal(sb__config_load_buffer(y, strlen(y), "t.yaml", &cfg, err, sizeof err), SB_EOK);
    assert_int_equal(sb__intake_from_config(cfg, &in, err, sizeof err), SB_EOK);
    sb__config_destroy(cfg);
    process(in, "{\"Id\":\"x\"}", "DataSyncCompletedEvent", &v);
    assert_int_equal(v.kind, SB__VERDICT_ACK);
    assert_string_equal(v.reason, "unroutable");
    assert_int_equal(sb__intake_stats(in)->unroutable, 1);
    sb__intake_destroy(in);
}

static void test_bad_schema_binding(void **state)
{
    char yaml[512], err[512];
    snprintf(yaml, sizeof yaml, "schemas:\n  dir: %s\n  bindings:\n    X: Nope.schema.json\n",
             SCHEMAS);
    sb__config_t *cfg;
    assert_int_equal(sb__config_load_buffer(yaml, strlen(yaml), "t.yaml", &cfg, err, sizeof err),
                     SB_EOK);
    sb__intake_t *in = NULL;
    assert_int_equal(sb__intake_from_config(cfg, &in, err, sizeof err), SB_ECONFIG);
    assert_null(in);
    assert_non_null(strstr(err, "schemas.bindings.X"));
    assert_non_null(strstr(err, "Nope.schema.json"));
    sb__config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch_to_every_match),
        cmocka_unit_test(test_schema_failure_dead_letters),
        cmocka_unit_test(test_schema_failure_ack_policy),
        cmocka_unit_test(test_decode_failure),
        cmocka_unit_test(test_unroutable_policies),
        cmocka_unit_test(test_bad_schema_binding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
