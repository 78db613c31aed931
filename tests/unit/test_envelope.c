/* Envelope decoding: native .NET integration events, CloudEvents binary and structured
 * mode, id and type precedence, trace context, limits, and the nasty inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchboard/switchboard.h"
#include "envelope.h"
#include "jscan.h"
#include "sbtest.h"

static const char *SAMPLE =
    "{\"JobId\":\"job-42\",\"SourceSystem\":\"CRM\",\"TargetSystem\":\"ERP\","
    "\"RecordsProcessed\":1250,\"CompletedAt\":\"2026-12-01T10:00:00.1234567Z\","
    "\"Id\":\"5b1f0a52-8d3c-4c59-9f7e-0c2a3f1d9e01\","
    "\"CreationDate\":\"2026-12-01T10:00:00.1234567Z\"}";

static sb_event_t ev;

static int setup(void **state)
{
    sb__event_init(&ev);
    return 0;
}

static int teardown(void **state)
{
    sb__event_reset(&ev);
    return 0;
}

static int decode(const sb__envelope_opts_t *o, sb__intake_msg_t *m)
{
    static const sb__envelope_opts_t defaults = {0};
    return sb__envelope_decode(o ? o : &defaults, m, &ev);
}

static sb__intake_msg_t amqp(const char *body, const char *rk)
{
    sb__intake_msg_t m = {.body = body, .body_len = body ? strlen(body) : 0, .routing_key = rk};
    return m;
}

#define H(n, v)                                                                                    \
    {                                                                                              \
        .name = n, .value = v, .name_len = sizeof(n) - 1, .value_len = sizeof(v) - 1               \
    }

static void expect_decode_error(sb__intake_msg_t *m, const char *needle)
{
    int rc = decode(NULL, m);
    if (rc != SB_EDECODE && rc != SB_ETOOBIG)
        fail_msg("expected a decode error containing \"%s\", got %d (%s)", needle, rc, ev.error);
    if (!strstr(ev.error, needle))
        fail_msg("error \"%s\" lacks \"%s\"", ev.error, needle);
}

static void test_native_amqp(void **state)
{
    sb__intake_msg_t m = amqp(SAMPLE, "DataSyncCompletedEvent");
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_int_equal(ev.kind, SB__ENV_NATIVE);
    assert_string_equal(ev.type, "DataSyncCompletedEvent");
    assert_string_equal(ev.id, "5b1f0a52-8d3c-4c59-9f7e-0c2a3f1d9e01");
    assert_int_equal(ev.id_len, 36);
    assert_string_equal(ev.creation_date, "2026-12-01T10:00:00.1234567Z");
    /* 2026-12-01T10:00:00Z = 1796119200; 7th digit truncated to microseconds. */
    assert_int_equal(ev.creation_us, 1796119200LL * 1000000 + 123456);
    assert_int_equal(ev.attempt, 1);
    const char *s;
    size_t n;
    int64_t i;
    assert_int_equal(sb__event_get_str(&ev, "JobId", &s, &n), SB_EOK);
    assert_string_equal(s, "job-42");
    assert_int_equal(sb__event_get_int(&ev, "RecordsProcessed", &i), SB_EOK);
    assert_int_equal(i, 1250);
    int64_t t;
    assert_int_equal(sb__event_get_time(&ev, "CompletedAt", &t), SB_EOK);
    assert_int_equal(t, ev.creation_us);
    assert_int_equal(sb__event_get_str(&ev, "Missing", &s, &n), SB_ENOTFOUND);
    assert_int_equal(sb__event_get_int(&ev, "JobId", &i), SB_EINVAL);
    /* The tree is built on demand and agrees with the index. */
    json_t *j = sb__event_json(&ev);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "RecordsProcessed")), 1250);
    assert_ptr_equal(sb__event_json(&ev), j);
}

static void test_type_precedence(void **state)
{
    /* routing key > AMQP type > event-type header > body field > topic */
    sb__intake_msg_t m = amqp(SAMPLE, "rk.type");
    m.amqp_type = "PropType";
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_string_equal(ev.type, "rk.type");
    m.routing_key = "";
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_string_equal(ev.type, "PropType");

    sb__header_t hs[] = {H("event-type", "HeaderType")};
    sb__intake_msg_t k = {.body = SAMPLE,
                          .body_len = strlen(SAMPLE),
                          .topic = "orders",
                          .headers = hs,
                          .n_headers = 1};
    assert_int_equal(decode(NULL, &k), SB_EOK);
    assert_string_equal(ev.type, "HeaderType");
    k.n_headers = 0;
    sb__envelope_opts_t o = {.type_field = "SourceSystem"};
    assert_int_equal(decode(&o, &k), SB_EOK);
    assert_string_equal(ev.type, "CRM");
    assert_int_equal(decode(NULL, &k), SB_EOK);
    assert_string_equal(ev.type, "orders");
    k.topic = NULL;
    expect_decode_error(&k, "no event type");
}

static void test_id_precedence(void **state)
{
    /* body Id > body id > message-id; hash when configured */
    sb__intake_msg_t m = amqp("{\"id\":\"lower\",\"X\":1}", "T");
    m.message_id = "msg-id";
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_string_equal(ev.id, "lower");
    m = amqp("{\"X\":1}", "T");
    m.message_id = "msg-id";
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_string_equal(ev.id, "msg-id");
    m.message_id = NULL;
    expect_decode_error(&m, "no event id");
    sb__envelope_opts_t o = {.id_hash = true};
    assert_int_equal(decode(&o, &m), SB_EOK);
    assert_true(ev.id_hashed);
    /* sha256("{\"X\":1}") */
    assert_string_equal(ev.id, "c3b8ae9299fe16ecfdffdb6621b52775e99b413d6d6d82eaf11a6c652b0478c6");
}

static void test_id_errors(void **state)
{
    sb__intake_msg_t m = amqp("{\"Id\":42}", "T");
    expect_decode_error(&m, "\"Id\" must be a string, got a number");
    m = amqp("{\"Id\":\"\"}", "T");
    expect_decode_error(&m, "id is empty");
    char big[1200];
    memset(big, 'a', sizeof big);
    memcpy(big, "{\"Id\":\"", 7);
    memcpy(big + sizeof big - 3, "\"}", 3);
    m = amqp(big, "T");
    expect_decode_error(&m, "at most 1024");
    /* Escaped id is decoded. */
    m = amqp("{\"Id\":\"a\\u00e9\\n\"}", "T");
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_string_equal(ev.id, "a\xc3\xa9\n");
}

static void test_creation_date(void **state)
{
    const char *ok[] = {"2026-12-01T10:00:00Z",         "2026-12-01T10:00:00.1Z",
                        "2026-12-01T10:00:00.1234567Z", "2026-12-01T10:00:00.123456789+01:00",
                        "2026-12-01T10:00:00.1234567", /* .NET DateTimeKind.Unspecified */
                        "2024-02-29T00:00:00Z"};
    const char *bad[] = {"2026-02-30T10:00:00Z",
                         "2025-02-29T00:00:00Z",
                         "2026-12-01",
                         "2026-12-01T25:00:00Z",
                         "2026-12-01T10:00:00.Z",
                         "2026-12-01T10:00:00.1234567890Z",
                         "yesterday"};
    char body[256];
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        snprintf(body, sizeof body, "{\"Id\":\"x\",\"CreationDate\":\"%s\"}", ok[i]);
        sb__intake_msg_t m = amqp(body, "T");
        if (decode(NULL, &m) != SB_EOK)
            fail_msg("%s: %s", ok[i], ev.error);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(body, sizeof body, "{\"Id\":\"x\",\"CreationDate\":\"%s\"}", bad[i]);
        sb__intake_msg_t m = amqp(body, "T");
        expect_decode_error(&m, "CreationDate");
    }
    sb__intake_msg_t m = amqp("{\"Id\":\"x\",\"CreationDate\":12}", "T");
    expect_decode_error(&m, "must be a string");
}

static void test_nasty_bodies(void **state)
{
    sb__intake_msg_t m = amqp("", "T");
    expect_decode_error(&m, "empty body");
    m = amqp("   ", "T");
    expect_decode_error(&m, "only whitespace");
    m = amqp("[1,2]", "T");
    expect_decode_error(&m, "must be a JSON object, got an array");
    m = amqp("\"str\"", "T");
    expect_decode_error(&m, "got a string");
    m = amqp("null", "T");
    expect_decode_error(&m, "got null");
    m = amqp("{\"Id\":\"a\",\"Id\":\"b\"}", "T");
    expect_decode_error(&m, "duplicate key");
    m = amqp("{\"Id\":\"a\",\"\\u0049d\":\"b\"}", "T"); /* escaped duplicate */
    expect_decode_error(&m, "duplicate key");
    m = amqp("{\"Id\":\"a\"} x", "T");
    expect_decode_error(&m, "trailing characters");
    m = amqp("{\"Id\":\"a\",}", "T");
    expect_decode_error(&m, "object key");
    m = amqp("{\"Id\":\"a\\x\"}", "T");
    expect_decode_error(&m, "invalid escape");
    m = amqp("{\"Id\":\"\\ud800\"}", "T");
    expect_decode_error(&m, "surrogate");
    m = amqp("{\"Id\":\"a\",\"n\":01}", "T");
    expect_decode_error(&m, "leading zeros");
    m = amqp("{\"Id\":\"a\",\"n\":99999999999999999999}", "T");
    expect_decode_error(&m, "64 bits");
    m = amqp("{\"Id\":\"a\",\"n\":1e999}", "T");
    expect_decode_error(&m, "overflows");
    m = amqp("{\"Id\":\"a\",\"n\":tru}", "T");
    expect_decode_error(&m, "invalid literal");
    m = amqp("\xef\xbb\xbf{\"Id\":\"a\"}", "T");
    expect_decode_error(&m, "byte order mark");
    /* Invalid UTF-8: lone continuation, overlong, surrogate, truncated, > U+10FFFF. */
    const char *utf8[] = {"{\"Id\":\"\x80\"}", "{\"Id\":\"\xc0\xaf\"}", "{\"Id\":\"\xed\xa0\x80\"}",
                          "{\"Id\":\"\xe2\x82\"}", "{\"Id\":\"\xf4\x90\x80\x80\"}"};
    for (size_t i = 0; i < sizeof utf8 / sizeof *utf8; i++) {
        m = amqp(utf8[i], "T");
        expect_decode_error(&m, "invalid UTF-8");
    }
    /* Raw control character. */
    m = amqp("{\"Id\":\"a\tb\"}", "T");
    expect_decode_error(&m, "control character");
    /* Valid multi-byte UTF-8 and escapes pass. */
    m = amqp("{\"Id\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\",\"e\":\"\\ud83d\\ude00\"}", "T");
    assert_int_equal(decode(NULL, &m), SB_EOK);
    const char *s;
    assert_int_equal(sb__event_get_str(&ev, "e", &s, NULL), SB_EOK);
    assert_string_equal(s, "\xf0\x9f\x98\x80");
}

static void test_depth_and_size(void **state)
{
    /* 10,000-deep nesting is refused without recursion or a crash. */
    size_t depth = 10000;
    char *b = malloc(2 * depth + 32);
    size_t n = 0;
    n += (size_t)sprintf(b, "{\"Id\":\"a\",\"d\":");
    for (size_t i = 0; i < depth; i++)
        b[n++] = '[';
    for (size_t i = 0; i < depth; i++)
        b[n++] = ']';
    b[n++] = '}';
    b[n] = '\0';
    sb__intake_msg_t m = amqp(b, "T");
    expect_decode_error(&m, "nesting too deep");
    /* 64 levels (the default) pass; 65 do not. */
    n = (size_t)sprintf(b, "{\"Id\":\"a\",\"d\":");
    for (size_t i = 0; i < 63; i++)
        b[n++] = '[';
    for (size_t i = 0; i < 63; i++)
        b[n++] = ']';
    b[n++] = '}';
    b[n] = '\0';
    m = amqp(b, "T");
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_non_null(sb__event_json(&ev));
    sb__envelope_opts_t o = {.max_depth = 63};
    assert_int_equal(decode(&o, &m), SB_EDECODE);
    free(b);

    /* Oversize is refused before any scanning. */
    o = (sb__envelope_opts_t){.max_message_size = 64};
    m = amqp(SAMPLE, "T");
    assert_int_equal(decode(&o, &m), SB_ETOOBIG);
    assert_non_null(strstr(ev.error, "exceeds intake.max_message_size (64)"));
}

static void test_cloudevents_binary(void **state)
{
    sb__header_t kafka[] = {
        H("ce_specversion", "1.0"),
        H("ce_id", "ce-1"),
        H("ce_source", "/crm"),
        H("ce_type", "com.example.DataSync"),
        H("ce_time", "2026-12-01T10:00:00Z"),
        H("ce_traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        H("content-type", "application/json")};
    sb__intake_msg_t m = {
        .body = SAMPLE, .body_len = strlen(SAMPLE), .topic = "t", .headers = kafka, .n_headers = 7};
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_int_equal(ev.kind, SB__ENV_CE_BINARY);
    assert_string_equal(ev.id, "ce-1"); /* CE id wins over body Id */
    assert_string_equal(ev.type, "com.example.DataSync");
    assert_string_equal(ev.ce_source, "/crm");
    assert_string_equal(ev.traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    int64_t i;
    assert_int_equal(sb__event_get_int(&ev, "RecordsProcessed", &i), SB_EOK);

    /* AMQP prefixes, both spellings. */
    sb__header_t amqph[] = {H("cloudEvents:specversion", "1.0"), H("cloudEvents_id", "a-1"),
                            H("cloudEvents:source", "/x"), H("cloudEvents:type", "T.x")};
    m = (sb__intake_msg_t){
        .body = "{}", .body_len = 2, .routing_key = "rk", .headers = amqph, .n_headers = 4};
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_string_equal(ev.id, "a-1");
    assert_string_equal(ev.type, "T.x");

    /* Each required attribute missing in turn. */
    const char *req[] = {"specversion", "id", "source", "type"};
    for (int k = 0; k < 4; k++) {
        sb__header_t hs[3];
        int n = 0;
        for (int j = 0; j < 4; j++)
            if (j != k)
                hs[n++] = kafka[j];
        m = (sb__intake_msg_t){.body = "{}", .body_len = 2, .headers = hs, .n_headers = 3};
        char want[64];
        snprintf(want, sizeof want, "required attribute \"%s\"", req[k]);
        expect_decode_error(&m, want);
    }
    sb__header_t v2[] = {H("ce_specversion", "0.3"), H("ce_id", "x"), H("ce_source", "s"),
                         H("ce_type", "t")};
    m = (sb__intake_msg_t){.body = "{}", .body_len = 2, .headers = v2, .n_headers = 4};
    expect_decode_error(&m, "specversion");
    /* Non-JSON data is carried opaque. */
    sb__header_t bin[] = {H("ce_specversion", "1.0"), H("ce_id", "x"), H("ce_source", "s"),
                          H("ce_type", "t"), H("content-type", "application/octet-stream")};
    m = (sb__intake_msg_t){.body = "\x01\x02", .body_len = 2, .headers = bin, .n_headers = 5};
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_int_equal(ev.data_type, SB__JT_NONE);
    assert_null(sb__event_json(&ev));
}

static void test_cloudevents_structured(void **state)
{
    const char *ce = "{\"specversion\":\"1.0\",\"id\":\"s-1\",\"source\":\"/etl\","
                     "\"type\":\"ETLJobStartedEvent\",\"time\":\"2026-12-01T10:00:00Z\","
                     "\"datacontenttype\":\"application/json\","
                     "\"traceparent\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\","
                     "\"data\":{\"JobId\":\"j\",\"JobType\":\"full\",\"Source\":\"db\"}}";
    sb__intake_msg_t m = {.body = ce,
                          .body_len = strlen(ce),
                          .routing_key = "ignored",
                          .content_type = "application/cloudevents+json; charset=utf-8"};
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_int_equal(ev.kind, SB__ENV_CE_STRUCTURED);
    assert_string_equal(ev.id, "s-1");
    assert_string_equal(ev.type, "ETLJobStartedEvent");
    assert_non_null(ev.traceparent);
    const char *s;
    assert_int_equal(sb__event_get_str(&ev, "JobType", &s, NULL), SB_EOK);
    assert_string_equal(s, "full");
    assert_int_equal(sb__event_get_str(&ev, "specversion", &s, NULL), SB_ENOTFOUND);
    json_t *j = sb__event_json(&ev);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "Source")), "db");

    const char *missing = "{\"specversion\":\"1.0\",\"id\":\"s-1\",\"type\":\"T\"}";
    m.body = missing;
    m.body_len = strlen(missing);
    expect_decode_error(&m, "required attribute \"source\"");
    m.content_type = "application/cloudevents-batch+json";
    m.body = "[]";
    m.body_len = 2;
    expect_decode_error(&m, "batch mode is not supported");
    const char *b64 = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"T\","
                      "\"data_base64\":\"AAAA\"}";
    m.content_type = "application/cloudevents+json";
    m.body = b64;
    m.body_len = strlen(b64);
    expect_decode_error(&m, "data_base64");
    /* A structured event without data is valid. */
    const char *nodata = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"T\"}";
    m.body = nodata;
    m.body_len = strlen(nodata);
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_int_equal(ev.data_type, SB__JT_NONE);
}

static void test_trace_context(void **state)
{
    sb__header_t hs[] = {
        H("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        H("tracestate", "congo=t61rcWkgMzE")};
    sb__intake_msg_t m = amqp(SAMPLE, "T");
    m.headers = hs;
    m.n_headers = 2;
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_string_equal(ev.traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_string_equal(ev.tracestate, "congo=t61rcWkgMzE");
    /* Malformed trace context is dropped, not fatal. */
    sb__header_t badh[] = {
        H("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")};
    m.headers = badh;
    m.n_headers = 1;
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_null(ev.traceparent);
}

static void test_index_overflow_falls_back_to_tree(void **state)
{
    char body[4096];
    size_t n = (size_t)sprintf(body, "{\"Id\":\"x\"");
    for (int i = 0; i < 60; i++)
        n += (size_t)sprintf(body + n, ",\"f%d\":%d", i, i);
    sprintf(body + n, "}");
    sb__intake_msg_t m = amqp(body, "T");
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_true(ev.index.overflow);
    int64_t v;
    assert_int_equal(sb__event_get_int(&ev, "f59", &v), SB_EOK);
    assert_int_equal(v, 59);
    assert_int_equal(sb__event_get_int(&ev, "f3", &v), SB_EOK);
    assert_int_equal(v, 3);
    /* Nested duplicates are caught when the tree is built. */
    m = amqp("{\"Id\":\"x\",\"o\":{\"a\":1,\"a\":2}}", "T");
    assert_int_equal(decode(NULL, &m), SB_EOK);
    assert_null(sb__event_json(&ev));
    assert_non_null(strstr(ev.error, "duplicate"));
}

static void test_getters(void **state)
{
    sb__intake_msg_t m =
        amqp("{\"Id\":\"x\",\"b\":true,\"f\":false,\"d\":2.5,\"i\":-9223372036854775808,"
             "\"n\":null,\"s\":\"q\\\"uote\"}",
             "T");
    assert_int_equal(decode(NULL, &m), SB_EOK);
    bool b;
    double d;
    int64_t i;
    const char *s;
    assert_int_equal(sb__event_get_bool(&ev, "b", &b), SB_EOK);
    assert_true(b);
    assert_int_equal(sb__event_get_bool(&ev, "f", &b), SB_EOK);
    assert_false(b);
    assert_int_equal(sb__event_get_double(&ev, "d", &d), SB_EOK);
    assert_true(d == 2.5);
    assert_int_equal(sb__event_get_int(&ev, "d", &i), SB_EINVAL);
    assert_int_equal(sb__event_get_int(&ev, "i", &i), SB_EOK);
    assert_true(i == INT64_MIN);
    assert_int_equal(sb__event_get_str(&ev, "n", &s, NULL), SB_ENOTFOUND);
    assert_int_equal(sb__event_get_str(&ev, "s", &s, NULL), SB_EOK);
    assert_string_equal(s, "q\"uote");
    assert_int_equal(sb__event_get_bool(&ev, "s", &b), SB_EINVAL);
    assert_int_equal(sb__event_get_time(&ev, "s", &i), SB_EINVAL);
}

/* Golden fixtures: tests/unit/fixtures/envelope/<name>.json with a first line
 * "# <routing-key> <expect: ok|decode> [<substring of id or error>]". */
static void test_golden_fixtures(void **state)
{
    char path[512];
    snprintf(path, sizeof path, "%s/index.txt", FIXTURES_DIR);
    FILE *idx = fopen(path, "r");
    assert_non_null(idx);
    char line[512];
    int count = 0;
    while (fgets(line, sizeof line, idx)) {
        char file[128], rk[128], expect[16], needle[256] = "";
        if (line[0] == '#' ||
            sscanf(line, "%127s %127s %15s %255[^\n]", file, rk, expect, needle) < 3)
            continue;
        snprintf(path, sizeof path, "%s/%s", FIXTURES_DIR, file);
        FILE *f = fopen(path, "rb");
        if (!f)
            fail_msg("cannot open %s", path);
        static char body[65536];
        size_t n = fread(body, 1, sizeof body, f);
        fclose(f);
        sb__intake_msg_t m = {.body = body, .body_len = n, .routing_key = rk};
        int rc = decode(NULL, &m);
        if (!strcmp(expect, "ok")) {
            if (rc != SB_EOK)
                fail_msg("%s: expected ok, got %s", file, ev.error);
            if (needle[0] && strcmp(ev.id, needle) != 0)
                fail_msg("%s: id %s, expected %s", file, ev.id, needle);
        } else {
            if (rc == SB_EOK)
                fail_msg("%s: expected a decode error", file);
            if (needle[0] && !strstr(ev.error, needle))
                fail_msg("%s: error \"%s\" lacks \"%s\"", file, ev.error, needle);
        }
        count++;
    }
    fclose(idx);
    assert_true(count >= 8);
}

/* Allocation-failure sweep: fail allocation N for N = 1, 2, ... on a decode that needs the
 * heap (a large id overflows the inline arena) and on building the tree. */
static void test_allocation_failures(void **state)
{
    char body[4096];
    char id[1001];
    memset(id, 'z', 1000);
    id[1000] = '\0';
    snprintf(body, sizeof body, "{\"Id\":\"%s\",\"a\":[1,2,{\"b\":\"c\"}],\"s\":\"%s\"}", id, id);
    int successes = 0;
    for (sbt_fail_at = 1; sbt_fail_at < 200 && successes == 0; sbt_fail_at++) {
        sbt_alloc_count = 0;
        sb_set_allocator(sbt_failing_malloc, sbt_failing_realloc, free);
        sb__intake_msg_t m = amqp(body, "T");
        int rc = decode(NULL, &m);
        const char *s = NULL;
        if (rc == SB_EOK)
            rc = sb__event_get_str(&ev, "s", &s, NULL);
        json_t *j = rc == SB_EOK ? sb__event_json(&ev) : NULL;
        sb__event_reset(&ev);
        sb_set_allocator(NULL, NULL, NULL);
        assert_true(rc == SB_EOK || rc == SB_ENOMEM);
        if (rc == SB_EOK && j)
            successes++;
    }
    assert_int_equal(successes, 1);
    assert_true(sbt_fail_at > 3); /* the sweep did hit some allocations */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_native_amqp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_type_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_creation_date, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nasty_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_depth_and_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cloudevents_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cloudevents_structured, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trace_context, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_overflow_falls_back_to_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_getters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_golden_fixtures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
