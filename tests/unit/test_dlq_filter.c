/* DLQ filters (every option, alone and combined, from the command line and from JSON, and
 * their errors), max-replays, the event type of Kafka records whose type is only in the body,
 * the since getter, and the `dlq stats` accumulator and printers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "datetime.h"
#include "dlq_filter.h"
#include "sbtest.h"

static int64_t NOW; /* 2026-03-02T12:00:00Z */

static int64_t ts(const char *s)
{
    int64_t us;
    assert_int_equal(sb__datetime_parse(s, strlen(s), false, &us, NULL), 0);
    return us;
}

typedef struct dl {
    sb__dlq_transport_t tx;
    const char *type; /* routing key (AMQP) or event-type header (Kafka) */
    const char *reason, *error, *handler, *failed_at, *id, *replays;
} dl_t;

static sb__dlq_record_t *make(dl_t d)
{
    sb__dlq_record_t *r;
    assert_int_equal(sb__dlq_record_new(&r), SB_EOK);
    sb__dlq_record_set_transport(r, d.tx);
    sb__dlq_list_t *h = sb__dlq_record_headers(r);
    char k = d.tx == SB__DLQ_TX_KAFKA ? 'K' : 'S';
#define HDR(name, v)                                                                               \
    if (v)                                                                                         \
        assert_int_equal(sb__dlq_list_add_bytes(h, name, k, v, strlen(v)), SB_EOK);
    if (d.tx == SB__DLQ_TX_KAFKA) {
        HDR("event-type", d.type);
    } else {
        HDR(SB__DLQ_H_ORIG_RKEY, d.type);
    }
    HDR(SB__DLQ_H_REASON, d.reason);
    HDR(SB__DLQ_H_ERROR, d.error);
    HDR(SB__DLQ_H_HANDLER, d.handler);
    HDR(SB__DLQ_H_FAILED_AT, d.failed_at);
    HDR("message-id", d.id);
    HDR(SB__DLQ_H_REPLAY_COUNT, d.replays);
#undef HDR
    return r;
}

static sb__dlq_filter_t *filter(void)
{
    sb__dlq_filter_t *f;
    assert_int_equal(sb__dlq_filter_new(NOW, &f), SB_EOK);
    return f;
}

static void set_ok(sb__dlq_filter_t *f, const char *name, const char *value)
{
    char err[256] = "";
    int rc = sb__dlq_filter_set(f, name, value, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("--%s %s: %s", name, value ? value : "(none)", err);
}

static void set_bad(const char *name, const char *value, int want_rc, const char *want_in_err)
{
    sb__dlq_filter_t *f = filter();
    char err[256] = "";
    int rc = sb__dlq_filter_set(f, name, value, err, sizeof err);
    if (rc != want_rc)
        fail_msg("--%s %s = %d, want %d (%s)", name, value ? value : "(none)", rc, want_rc, err);
    if (!strstr(err, want_in_err))
        fail_msg("--%s %s: error \"%s\" lacks \"%s\"", name, value ? value : "", err, want_in_err);
    assert_false(sb__dlq_filter_selects(f)); /* unchanged */
    sb__dlq_filter_destroy(f);
}

/* A fixed DLQ of both transports. */
static const dl_t dlq[] = {
    /* 0 */ {SB__DLQ_TX_AMQP, "Order.Placed", "max-attempts", "timeout after 5s", "billing",
             "2026-03-01T10:00:00Z", "o-1", NULL},
    /* 1 */
    {SB__DLQ_TX_AMQP, "Order.Cancelled", "rejected", "card declined", "billing",
     "2026-03-02T11:30:00Z", "o-2", "1"},
    /* 2 */
    {SB__DLQ_TX_KAFKA, "DataSyncCompletedEvent", "schema", "$.Id: required", NULL,
     "2026-02-20T00:00:00Z", "d-1", "3"},
    /* 3 */
    {SB__DLQ_TX_KAFKA, "Order.Placed", "decode", "byte 3: invalid JSON", NULL,
     "2026-03-02T11:59:00Z", "o-3", NULL},
    /* 4 */ {SB__DLQ_TX_AMQP, NULL, "unroutable", NULL, NULL, NULL, NULL, NULL},
    /* 5 */
    {SB__DLQ_TX_AMQP, "Shipment.Sent", "timeout", "handler timed out", "shipping",
     "2026-03-02T06:00:00+02:00", "s-1", NULL},
};
#define N_DLQ (sizeof dlq / sizeof dlq[0])

/* Which records of dlq[] the filter selects, as a string of indexes: "013". */
static void expect(const sb__dlq_filter_t *f, const char *want)
{
    char got[16] = "";
    for (size_t i = 0; i < N_DLQ; i++) {
        sb__dlq_record_t *r = make(dlq[i]);
        if (sb__dlq_filter_match(f, r)) {
            size_t n = strlen(got);
            got[n] = (char)('0' + i);
            got[n + 1] = '\0';
        }
        sb__dlq_record_destroy(r);
    }
    assert_string_equal(got, want);
}

static void one(const char *name, const char *value, const char *want)
{
    sb__dlq_filter_t *f = filter();
    set_ok(f, name, value);
    expect(f, want);
    sb__dlq_filter_destroy(f);
}

static void test_empty_filter(void **state)
{
    (void)state;
    sb__dlq_filter_t *f = filter();
    expect(f, "012345");
    assert_false(sb__dlq_filter_selects(f));
    assert_int_equal(sb__dlq_filter_limit(f), 0);
    sb__dlq_filter_destroy(f);
    sb__dlq_filter_destroy(NULL);
}

static void test_each_option(void **state)
{
    (void)state;
    /* type: topic patterns over the event type, AMQP and Kafka alike */
    one("type", "Order.Placed", "03");
    one("type", "Order.*", "013");
    one("type", "#.Sent", "5");
    one("type", "#", "01235");
    one("type", "DataSyncCompletedEvent", "2");
    one("type", "*", "2");
    /* reason: lists */
    one("reason", "rejected", "1");
    one("reason", "schema, decode ,unroutable", "234");
    /* handler */
    one("handler", "billing", "01");
    one("handler", "shipping,billing", "015");
    /* error: POSIX ERE, unanchored */
    one("error", "time(d )?out", "05");
    one("error", "^card", "1");
    one("error", "JSON$", "3");
    one("error", "[$]\\.Id", "2");
    /* since/until: RFC 3339, offsets, dates, durations ago */
    one("since", "2026-03-02T00:00:00Z", "135");
    one("since", "2026-03-02", "135");
    one("since", "2026-03-02T04:00:00Z", "135"); /* 5 is 04:00Z: inclusive */
    one("since", "2026-03-02T04:00:00.000001Z", "13");
    one("since", "2026-03-02T04:00:00", "135"); /* no offset: UTC, inclusive */
    one("until", "2026-03-02T04:00:00Z", "02"); /* exclusive */
    one("since", "1h", "13");
    one("since", "2m", "3");
    one("since", "7d", "0135");
    one("until", "30d", "");
    one("until", "1h30m", "025");
    /* id: message id here */
    one("id", "o-2", "1");
    one("id", "nope", "");
    /* limit and max-replays do not select */
    one("limit", "2", "012345");
    one("max-replays", "1", "012345");
    one("force", NULL, "012345");
}

static void test_combinations(void **state)
{
    (void)state;
    sb__dlq_filter_t *f = filter();
    set_ok(f, "type", "Order.#");
    set_ok(f, "reason", "max-attempts,decode,rejected");
    expect(f, "013");
    set_ok(f, "since", "1d");
    expect(f, "13");
    set_ok(f, "error", "invalid");
    expect(f, "3");
    set_ok(f, "handler", "billing"); /* 3 has no handler */
    expect(f, "");
    sb__dlq_filter_destroy(f);

    /* Repeated options: type and lists add up, the others replace. */
    f = filter();
    set_ok(f, "type", "Shipment.*");
    set_ok(f, "type", "DataSyncCompletedEvent");
    expect(f, "25");
    set_ok(f, "reason", "schema");
    set_ok(f, "reason", "timeout");
    expect(f, "25");
    set_ok(f, "error", "nothing matches this");
    expect(f, "");
    set_ok(f, "error", ".");
    expect(f, "25");
    set_ok(f, "until", "2026-03-01");
    expect(f, "2");
    set_ok(f, "until", "2030-01-01");
    expect(f, "25");
    set_ok(f, "id", "s-1");
    expect(f, "5");
    assert_true(sb__dlq_filter_selects(f));
    sb__dlq_filter_destroy(f);

    /* An empty time window selects nothing. */
    f = filter();
    set_ok(f, "since", "2026-03-02T00:00:00Z");
    set_ok(f, "until", "2026-03-01T00:00:00Z");
    expect(f, "");
    sb__dlq_filter_destroy(f);
}

static void test_id_from_body(void **state)
{
    (void)state;
    sb__dlq_filter_t *f = filter();
    set_ok(f, "id", "3f2c-\"q\"");
    sb__dlq_record_t *r;
    assert_int_equal(sb__dlq_record_new(&r), SB_EOK);
    const char *body = "{\"Id\":\"3f2c-\\\"q\\\"\",\"Amount\":1}";
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, body, strlen(body)), SB_EOK);
    assert_true(sb__dlq_filter_match(f, r));
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_MESSAGE_ID, "other", 5), SB_EOK);
    assert_true(sb__dlq_filter_match(f, r)); /* the body's Id wins, as in the consumer */
    sb__dlq_record_destroy(r);
    sb__dlq_filter_destroy(f);
}

/* A Kafka record with the given body (NULL: none) and headers (name, value pairs). */
static sb__dlq_record_t *kafka_body(const char *body, const char *const *hdrs)
{
    sb__dlq_record_t *r;
    assert_int_equal(sb__dlq_record_new(&r), SB_EOK);
    sb__dlq_record_set_transport(r, SB__DLQ_TX_KAFKA);
    if (body)
        assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, body, strlen(body)), SB_EOK);
    for (size_t i = 0; hdrs && hdrs[i]; i += 2)
        assert_int_equal(sb__dlq_list_add_bytes(sb__dlq_record_headers(r), hdrs[i], 'K',
                                                hdrs[i + 1], strlen(hdrs[i + 1])),
                         SB_EOK);
    return r;
}

/* The type as sb__dlq_event_type sees it with type field `field`, as a string ("" for none). */
static void expect_type(const char *body, const char *const *hdrs, const char *field,
                        const char *want)
{
    sb__dlq_record_t *r = kafka_body(body, hdrs);
    char buf[64], got[128] = "";
    size_t len = 0;
    const char *t = sb__dlq_event_type(r, field, &len, buf, sizeof buf);
    if (t)
        snprintf(got, sizeof got, "%.*s", (int)len, t);
    if (strcmp(got, want))
        fail_msg("type of %s with field %s: \"%s\", want \"%s\"", body ? body : "(none)",
                 field ? field : "(none)", got, want);
    sb__dlq_record_destroy(r);
}

static void test_kafka_body_type(void **state)
{
    (void)state;
    const char *topic[] = {SB__DLQ_H_ORIG_TOPIC, "orders", NULL};
    const char *both[] = {SB__DLQ_H_ORIG_TOPIC, "orders", "event-type", "Order.FromHeader", NULL};
    const char *empty_hdr[] = {"event-type", "", NULL};
    /* The consumer's order (envelope.c): event-type header, body member, topic. */
    expect_type("{\"Id\":\"1\",\"EventType\":\"Order.Placed\"}", topic, "EventType",
                "Order.Placed");
    expect_type("{\"EventType\":\"Order.Placed\"}", both, "EventType", "Order.FromHeader");
    expect_type("{\"EventType\":\"Order.Placed\"}", empty_hdr, "EventType", "Order.Placed");
    expect_type("{\"EventType\":\"Order\\u002ePaid\"}", NULL, "EventType", "Order.Paid");
    expect_type("{\"EventType\":\"Order.Placed\"}", NULL, "Kind", "");
    expect_type("{\"Kind\":\"Order.Placed\"}", NULL, "Kind", "Order.Placed");
    expect_type("{\"EventType\":\"Order.Placed\"}", topic, NULL, "orders");
    expect_type("{\"EventType\":null}", topic, "EventType", "orders");
    expect_type("{\"EventType\":\"\"}", topic, "EventType", "orders");
    expect_type("{\"Id\":\"1\"}", topic, "EventType", "orders");
    /* The consumer refused these (no type it could route by): none. */
    expect_type("{\"EventType\":42}", topic, "EventType", "");
    expect_type("not json", topic, "EventType", "");
    expect_type("[\"EventType\"]", topic, "EventType", "");
    expect_type(NULL, topic, "EventType", "");

    /* An escaped type that does not fit the buffer counts as absent. */
    sb__dlq_record_t *r = kafka_body("{\"EventType\":\"Order\\u002ePaid\"}", NULL);
    char small[4];
    size_t len = 0;
    assert_null(sb__dlq_event_type(r, "EventType", &len, small, sizeof small));
    assert_null(sb__dlq_event_type(r, "EventType", &len, NULL, 0));

    /* The filter matches on it, with its type field (default EventType). */
    sb__dlq_filter_t *f = filter();
    set_ok(f, "type", "Order.*");
    assert_true(sb__dlq_filter_match(f, r));
    char buf[64];
    const char *t = sb__dlq_filter_event_type(f, r, &len, buf, sizeof buf);
    assert_non_null(t);
    assert_int_equal(len, 10);
    assert_memory_equal(t, "Order.Paid", 10);
    assert_int_equal(sb__dlq_filter_set_type_field(f, "Kind"), SB_EOK);
    assert_false(sb__dlq_filter_match(f, r));
    assert_int_equal(sb__dlq_filter_set_type_field(f, ""), SB_EOK);
    assert_false(sb__dlq_filter_match(f, r));
    assert_int_equal(sb__dlq_filter_set_type_field(f, "EventType"), SB_EOK);
    assert_true(sb__dlq_filter_match(f, r));
    sb__dlq_filter_destroy(f);
    sb__dlq_record_destroy(r);

    /* AMQP records keep their routing key rule: the body is not read. */
    assert_int_equal(sb__dlq_record_new(&r), SB_EOK);
    sb__dlq_record_set_transport(r, SB__DLQ_TX_AMQP);
    const char *body = "{\"EventType\":\"Order.Placed\"}";
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, body, strlen(body)), SB_EOK);
    assert_null(sb__dlq_event_type(r, "EventType", &len, buf, sizeof buf));
    sb__dlq_record_destroy(r);

    /* Stats count the same type. */
    sb__dlq_stats_t *s;
    assert_int_equal(sb__dlq_stats_new(&s), SB_EOK);
    r = kafka_body("{\"EventType\":\"Order.Placed\",\"Kind\":\"K\"}", topic);
    assert_int_equal(sb__dlq_stats_add(s, r), SB_EOK);
    assert_int_equal(sb__dlq_stats_set_type_field(s, "Kind"), SB_EOK);
    assert_int_equal(sb__dlq_stats_add(s, r), SB_EOK);
    assert_int_equal(sb__dlq_stats_set_type_field(s, NULL), SB_EOK);
    assert_int_equal(sb__dlq_stats_add(s, r), SB_EOK);
    sb__dlq_record_destroy(r);
    char *out = NULL;
    assert_int_equal(sb__dlq_stats_to_json(s, &out), SB_EOK);
    assert_non_null(strstr(out, "\"by_type\":{\"K\":1,\"Order.Placed\":1,\"orders\":1}"));
    sb_free(out);
    sb__dlq_stats_destroy(s);
}

static void test_since_getter(void **state)
{
    (void)state;
    sb__dlq_filter_t *f = filter();
    int64_t us = 7;
    assert_false(sb__dlq_filter_since(f, &us));
    assert_int_equal(us, 7);
    set_ok(f, "until", "2026-03-01");
    assert_false(sb__dlq_filter_since(f, &us));
    set_ok(f, "since", "2026-03-01T10:00:00Z");
    assert_true(sb__dlq_filter_since(f, &us));
    assert_int_equal(us, ts("2026-03-01T10:00:00Z"));
    set_ok(f, "since", "90m"); /* the last one wins; durations count back from now */
    assert_true(sb__dlq_filter_since(f, &us));
    assert_int_equal(us, NOW - 90LL * 60 * 1000000);
    assert_true(sb__dlq_filter_since(f, NULL));
    sb__dlq_filter_destroy(f);
}

static void test_max_replays(void **state)
{
    (void)state;
    sb__dlq_record_t *fresh = make(dlq[0]), *once = make(dlq[1]), *thrice = make(dlq[2]);
    sb__dlq_filter_t *f = filter();
    assert_true(sb__dlq_filter_replay_allowed(f, thrice)); /* no max */
    set_ok(f, "max-replays", "3");
    assert_true(sb__dlq_filter_replay_allowed(f, fresh));
    assert_true(sb__dlq_filter_replay_allowed(f, once));
    assert_false(sb__dlq_filter_replay_allowed(f, thrice));
    set_ok(f, "max_replays", "1");
    assert_false(sb__dlq_filter_replay_allowed(f, once));
    set_ok(f, "max-replays", "0");
    assert_false(sb__dlq_filter_replay_allowed(f, fresh));
    set_ok(f, "force", NULL);
    assert_true(sb__dlq_filter_replay_allowed(f, thrice));
    set_ok(f, "force", "false");
    assert_false(sb__dlq_filter_replay_allowed(f, thrice));
    set_ok(f, "limit", "25");
    assert_int_equal(sb__dlq_filter_limit(f), 25);
    sb__dlq_filter_destroy(f);
    sb__dlq_record_destroy(fresh);
    sb__dlq_record_destroy(once);
    sb__dlq_record_destroy(thrice);
}

static void test_bad_options(void **state)
{
    (void)state;
    set_bad("colour", "red", SB_EINVAL, "--colour: unknown filter option");
    set_bad("type", NULL, SB_EPARSE, "--type: a value is required");
    set_bad("type", "Order.Pl*", SB_EPARSE, "--type: invalid pattern \"Order.Pl*\"");
    set_bad("reason", "", SB_EPARSE, "--reason: empty list");
    set_bad("reason", " , ", SB_EPARSE, "--reason: empty list");
    set_bad("handler", ",", SB_EPARSE, "--handler: empty list");
    set_bad("error", "(unclosed", SB_EPARSE, "--error: invalid regular expression \"(unclosed\"");
    set_bad("since", "yesterday", SB_EPARSE, "--since: invalid time \"yesterday\"");
    set_bad("until", "2026-02-30", SB_EPARSE, "--until: invalid time");
    set_bad("since", "2026-13-01T00:00:00Z", SB_EPARSE, "--since: invalid time");
    set_bad("since", "1.5h", SB_EPARSE, "--since: invalid time");
    set_bad("since", "99999999999999999d", SB_EPARSE, "--since: invalid time");
    set_bad("until", "", SB_EPARSE, "--until: invalid time");
    set_bad("id", "", SB_EPARSE, "--id: empty id");
    set_bad("limit", "0", SB_EPARSE, "--limit: expected an integer >= 1, got \"0\"");
    set_bad("limit", "ten", SB_EPARSE, "--limit: expected an integer");
    set_bad("limit", "-1", SB_EPARSE, "--limit: expected an integer");
    set_bad("limit", "99999999999999999999999", SB_ERANGE,
            "--limit: \"99999999999999999999999\" is too large");
    set_bad("max-replays", "x", SB_EPARSE, "--max-replays: expected an integer >= 0");
    set_bad("force", "yes", SB_EPARSE, "--force: expected true or false");
    char err[64];
    assert_int_equal(sb__dlq_filter_set(NULL, "type", "x", err, sizeof err), SB_EINVAL);
    sb__dlq_filter_t *f = filter();
    assert_int_equal(sb__dlq_filter_set(f, NULL, "x", NULL, 0), SB_EINVAL);
    /* A failed repeat leaves the earlier value working. */
    set_ok(f, "type", "Order.Placed");
    assert_int_equal(sb__dlq_filter_set(f, "type", "a#", NULL, 0), SB_EPARSE);
    set_ok(f, "error", "time");
    assert_int_equal(sb__dlq_filter_set(f, "error", "[", NULL, 0), SB_EPARSE);
    expect(f, "0");
    sb__dlq_filter_destroy(f);
}

static sb__dlq_filter_t *from_json(const char *text, int want_rc, const char *want_in_err)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &je);
    if (!j)
        fail_msg("test JSON: %s", je.text);
    static const char *const extra[] = {"to", "rate", "dry_run", NULL};
    sb__dlq_filter_t *f = filter();
    char err[256] = "";
    int rc = sb__dlq_filter_from_json(f, j, extra, err, sizeof err);
    json_decref(j);
    if (rc != want_rc)
        fail_msg("%s = %d, want %d (%s)", text, rc, want_rc, err);
    if (want_in_err && !strstr(err, want_in_err))
        fail_msg("%s: error \"%s\" lacks \"%s\"", text, err, want_in_err);
    return f;
}

static void test_json(void **state)
{
    (void)state;
    sb__dlq_filter_t *f = from_json(
        "{\"type\":[\"Order.*\",\"Shipment.#\"],\"reason\":\"max-attempts,rejected,timeout\","
        "\"handler\":[\"billing\",\"shipping\"],\"error\":\"e\",\"since\":\"2d\","
        "\"until\":\"2026-03-02T12:00:00Z\",\"limit\":10,\"max_replays\":1,\"force\":false,"
        "\"to\":\"elsewhere\",\"rate\":\"10/s\",\"dry_run\":true}",
        SB_EOK, NULL);
    expect(f, "015");
    assert_int_equal(sb__dlq_filter_limit(f), 10);
    sb__dlq_record_t *once = make(dlq[1]);
    assert_false(sb__dlq_filter_replay_allowed(f, once));
    sb__dlq_record_destroy(once);
    sb__dlq_filter_destroy(f);

    f = from_json("{\"id\":\"d-1\",\"force\":true}", SB_EOK, NULL);
    expect(f, "2");
    sb__dlq_filter_destroy(f);
    f = from_json("{}", SB_EOK, NULL);
    expect(f, "012345");
    sb__dlq_filter_destroy(f);

    static const struct {
        const char *json, *err;
        int rc;
    } bad[] = {
        {"{\"colour\":\"red\"}", "\"colour\": unknown filter option", SB_EINVAL},
        {"{\"bogus\":1}", "\"bogus\": unknown filter option", SB_EINVAL},
        {"{\"type\":5}", "\"type\": expected a string or an array of strings", SB_EPARSE},
        {"{\"type\":[]}", "\"type\": empty list", SB_EPARSE},
        {"{\"type\":[\"a\",1]}", "\"type\"[1]: expected a string", SB_EPARSE},
        {"{\"reason\":[\"\"]}", "\"reason\": empty list", SB_EPARSE},
        {"{\"error\":[\"a\"]}", "\"error\": expected a string", SB_EPARSE},
        {"{\"error\":\"(\"}", "\"error\": invalid regular expression", SB_EPARSE},
        {"{\"since\":\"soon\"}", "\"since\": invalid time", SB_EPARSE},
        {"{\"limit\":\"10\"}", "\"limit\": expected an integer >= 1", SB_EPARSE},
        {"{\"limit\":0}", "\"limit\": expected an integer >= 1", SB_EPARSE},
        {"{\"limit\":-3}", "\"limit\": expected an integer >= 1", SB_EPARSE},
        {"{\"max_replays\":1.5}", "\"max_replays\": expected an integer >= 0", SB_EPARSE},
        {"{\"force\":\"yes\"}", "\"force\": expected true or false", SB_EPARSE},
        {"{\"id\":\"a\\u0000b\"}", "\"id\": contains a NUL character", SB_EPARSE},
        {"[1]", "must be a JSON object", SB_EPARSE},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        sb__dlq_filter_destroy(from_json(bad[i].json, bad[i].rc, bad[i].err));
    /* Without also_allowed, the caller's own members are refused too. */
    json_t *j = json_loads("{\"to\":\"x\"}", 0, NULL);
    f = filter();
    assert_int_equal(sb__dlq_filter_from_json(f, j, NULL, NULL, 0), SB_EINVAL);
    assert_int_equal(sb__dlq_filter_from_json(f, NULL, NULL, NULL, 0), SB_EPARSE);
    json_decref(j);
    sb__dlq_filter_destroy(f);
}

static void test_stats(void **state)
{
    (void)state;
    sb__dlq_stats_t *s;
    assert_int_equal(sb__dlq_stats_new(&s), SB_EOK);
    char *out = NULL;
    assert_int_equal(sb__dlq_stats_to_json(s, &out), SB_EOK);
    assert_string_equal(out, "{\"total\":0,\"oldest\":null,\"newest\":null,\"without_failed_at\":0,"
                             "\"by_reason\":{},\"by_type\":{},\"by_handler\":{}}");
    sb_free(out);
    assert_int_equal(sb__dlq_stats_format_table(s, &out), SB_EOK);
    assert_string_equal(out, "total     0\n");
    sb_free(out);
    for (size_t i = 0; i < N_DLQ; i++) {
        sb__dlq_record_t *r = make(dlq[i]);
        assert_int_equal(sb__dlq_stats_add(s, r), SB_EOK);
        if (i == 0) /* counted twice */
            assert_int_equal(sb__dlq_stats_add(s, r), SB_EOK);
        sb__dlq_record_destroy(r);
    }
    /* A name that is not UTF-8 and has a control character. */
    dl_t odd = {SB__DLQ_TX_AMQP, "Odd\xff\x01", "rejected", NULL, "billing", NULL, NULL, NULL};
    sb__dlq_record_t *r = make(odd);
    assert_int_equal(sb__dlq_stats_add(s, r), SB_EOK);
    sb__dlq_record_destroy(r);
    assert_int_equal(sb__dlq_stats_total(s), 8);

    assert_int_equal(sb__dlq_stats_format_table(s, &out), SB_EOK);
    assert_string_equal(out, "total     8\n"
                             "oldest    2026-02-20T00:00:00.000000Z\n"
                             "newest    2026-03-02T11:59:00.000000Z\n"
                             "no time   2 (without a valid x-sb-failed-at)\n"
                             "\n"
                             "REASON             COUNT\n"
                             "max-attempts           2\n"
                             "rejected               2\n"
                             "decode                 1\n"
                             "schema                 1\n"
                             "timeout                1\n"
                             "unroutable             1\n"
                             "\n"
                             "EVENT TYPE                   COUNT\n"
                             "Order.Placed                     3\n"
                             "(none)                           1\n"
                             "DataSyncCompletedEvent           1\n"
                             "Odd??                            1\n"
                             "Order.Cancelled                  1\n"
                             "Shipment.Sent                    1\n"
                             "\n"
                             "HANDLER        COUNT\n"
                             "billing            4\n"
                             "(none)             3\n"
                             "shipping           1\n");
    sb_free(out);
    assert_int_equal(sb__dlq_stats_to_json(s, &out), SB_EOK);
    assert_string_equal(out, "{\"total\":8,\"oldest\":\"2026-02-20T00:00:00.000000Z\","
                             "\"newest\":\"2026-03-02T11:59:00.000000Z\",\"without_failed_at\":2,"
                             "\"by_reason\":{\"max-attempts\":2,\"rejected\":2,\"decode\":1,"
                             "\"schema\":1,\"timeout\":1,\"unroutable\":1},"
                             "\"by_type\":{\"Order.Placed\":3,\"(none)\":1,"
                             "\"DataSyncCompletedEvent\":1,\"Odd?\\u0001\":1,\"Order.Cancelled\":1,"
                             "\"Shipment.Sent\":1},"
                             "\"by_handler\":{\"billing\":4,\"(none)\":3,\"shipping\":1}}");
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    assert_non_null(j); /* valid JSON */
    json_decref(j);
    sb_free(out);
    sb__dlq_stats_destroy(s);
    sb__dlq_stats_destroy(NULL);
}

/* Allocation failures: filter building and stats fail cleanly. */
static void test_alloc_failures(void **state)
{
    (void)state;
    int successes = 0;
    for (sbt_fail_at = 1; sbt_fail_at < 500 && successes == 0; sbt_fail_at++) {
        sbt_alloc_count = 0;
        sb_set_allocator(sbt_failing_malloc, sbt_failing_realloc, free);
        sb__dlq_filter_t *f = NULL;
        sb__dlq_stats_t *s = NULL;
        char *table = NULL, *js = NULL;
        int rc = sb__dlq_filter_new(NOW, &f);
        if (rc == SB_EOK)
            rc = sb__dlq_filter_set(f, "type", "Order.#", NULL, 0);
        if (rc == SB_EOK)
            rc = sb__dlq_filter_set(f, "reason", "a,b,c", NULL, 0);
        if (rc == SB_EOK)
            rc = sb__dlq_filter_set(f, "id", "x", NULL, 0);
        if (rc == SB_EOK)
            rc = sb__dlq_filter_set_type_field(f, "Kind");
        if (rc == SB_EOK)
            rc = sb__dlq_stats_new(&s);
        if (rc == SB_EOK)
            rc = sb__dlq_stats_set_type_field(s, "Kind");
        for (size_t i = 0; i < N_DLQ && rc == SB_EOK; i++) {
            sb_set_allocator(NULL, NULL, NULL);
            sb__dlq_record_t *r = make(dlq[i]);
            sb_set_allocator(sbt_failing_malloc, sbt_failing_realloc, free);
            rc = sb__dlq_stats_add(s, r);
            sb_set_allocator(NULL, NULL, NULL);
            sb__dlq_record_destroy(r);
            sb_set_allocator(sbt_failing_malloc, sbt_failing_realloc, free);
        }
        if (rc == SB_EOK)
            rc = sb__dlq_stats_format_table(s, &table);
        if (rc == SB_EOK)
            rc = sb__dlq_stats_to_json(s, &js);
        sb_set_allocator(NULL, NULL, NULL);
        assert_true(rc == SB_EOK || rc == SB_ENOMEM);
        if (rc == SB_EOK) {
            assert_int_equal(sb__dlq_stats_total(s), N_DLQ);
            successes++;
        }
        sb_free(table);
        sb_free(js);
        sb__dlq_stats_destroy(s);
        sb__dlq_filter_destroy(f);
    }
    assert_int_equal(successes, 1);
    assert_true(sbt_fail_at > 20);
}

int main(void)
{
    NOW = ts("2026-03-02T12:00:00Z");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_filter),   cmocka_unit_test(test_each_option),
        cmocka_unit_test(test_combinations),   cmocka_unit_test(test_id_from_body),
        cmocka_unit_test(test_max_replays),    cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_json),           cmocka_unit_test(test_stats),
        cmocka_unit_test(test_alloc_failures), cmocka_unit_test(test_kafka_body_type),
        cmocka_unit_test(test_since_getter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
