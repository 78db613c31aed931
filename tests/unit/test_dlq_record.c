/* Dead-letter records: building, cloning, the JSON Lines form (byte-identical round trips of
 * every header type), decoder errors, the accessors the CLI reads, replay preparation, and
 * an allocation-failure sweep over from_json. */
#include <math.h>
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
#include "dlq_record.h"
#include "envelope.h"
#include "event.h"
#include "sbtest.h"

/* to_json -> from_json -> to_json gives the same bytes; returns the line (sb_free). */
static char *roundtrip(const sb__dlq_record_t *r)
{
    char *a = NULL, *b = NULL, err[256] = "";
    size_t alen = 0, blen = 0;
    assert_int_equal(sb__dlq_record_to_json(r, &a, &alen), SB_EOK);
    assert_int_equal(strlen(a), alen);
    assert_null(memchr(a, '\n', alen));
    sb__dlq_record_t *back = NULL;
    int rc = sb__dlq_record_from_json(a, alen, &back, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("from_json: %s\nline: %s", err, a);
    assert_int_equal(sb__dlq_record_to_json(back, &b, &blen), SB_EOK);
    if (alen != blen || memcmp(a, b, alen) != 0)
        fail_msg("not identical:\n%s\n%s", a, b);
    /* A clone encodes the same too. */
    sb__dlq_record_t *c = NULL;
    char *cl = NULL;
    assert_int_equal(sb__dlq_record_clone(back, &c), SB_EOK);
    assert_int_equal(sb__dlq_record_to_json(c, &cl, NULL), SB_EOK);
    assert_string_equal(cl, a);
    sb_free(cl);
    sb__dlq_record_destroy(c);
    sb__dlq_record_destroy(back);
    sb_free(b);
    return a;
}

static sb__dlq_record_t *parse_ok(const char *line)
{
    sb__dlq_record_t *r = NULL;
    char err[256] = "";
    int rc = sb__dlq_record_from_json(line, strlen(line), &r, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("from_json(%s): %s", line, err);
    return r;
}

static void parse_bad(const char *line, int want_rc, const char *want_in_err)
{
    sb__dlq_record_t *r = (sb__dlq_record_t *)(uintptr_t)1;
    char err[256] = "";
    int rc = sb__dlq_record_from_json(line, strlen(line), &r, err, sizeof err);
    if (rc != want_rc)
        fail_msg("from_json(%s) = %d, want %d (%s)", line, rc, want_rc, err);
    assert_ptr_equal(r, (sb__dlq_record_t *)(uintptr_t)1);
    if (!strstr(err, want_in_err))
        fail_msg("from_json(%s): error \"%s\" lacks \"%s\"", line, err, want_in_err);
}

static void expect_line(const sb__dlq_record_t *r, const char *want)
{
    char *line = roundtrip(r);
    assert_string_equal(line, want);
    sb_free(line);
}

static sb__dlq_record_t *new_record(void)
{
    sb__dlq_record_t *r = NULL;
    assert_int_equal(sb__dlq_record_new(&r), SB_EOK);
    return r;
}

static void test_empty_and_envelope(void **state)
{
    (void)state;
    sb__dlq_record_t *r = new_record();
    expect_line(r, "{\"v\":1,\"body\":\"\"}");
    size_t len = 99;
    assert_string_equal(sb__dlq_record_get(r, SB__DLQ_BODY, &len), "");
    assert_int_equal(len, 0);
    assert_null(sb__dlq_record_get(r, SB__DLQ_SOURCE, NULL));

    sb__dlq_record_set_transport(r, SB__DLQ_TX_KAFKA);
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_SOURCE, "orders.dlq", 10), SB_EOK);
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_PARTITION, 3), SB_EOK);
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_OFFSET, 9007199254740993ull), SB_EOK);
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_KEY, "k\0y", 3), SB_EOK);
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_TIMESTAMP_MS, 1700000000123ull), SB_EOK);
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, "{\"a\":1}", 7), SB_EOK);
    expect_line(r, "{\"v\":1,\"transport\":\"kafka\",\"source\":\"orders.dlq\",\"partition\":3,"
                   "\"offset\":9007199254740993,\"key\":\"k\\u0000y\",\"timestamp_ms\":"
                   "1700000000123,\"body\":\"{\\\"a\\\":1}\"}");
    /* ranges */
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_PARTITION, (uint64_t)INT32_MAX + 1),
                     SB_ERANGE);
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_PRIORITY, 256), SB_ERANGE);
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_OFFSET, (uint64_t)INT64_MAX + 1), SB_ERANGE);
    uint64_t v = 0;
    assert_true(sb__dlq_record_get_num(r, SB__DLQ_PARTITION, &v));
    assert_int_equal(v, 3);
    sb__dlq_record_unset_num(r, SB__DLQ_PARTITION);
    assert_false(sb__dlq_record_get_num(r, SB__DLQ_PARTITION, &v));
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_SOURCE, NULL, 0), SB_EOK);
    assert_null(sb__dlq_record_get(r, SB__DLQ_SOURCE, NULL));
    sb__dlq_record_destroy(r);
    sb__dlq_record_destroy(NULL);
}

static void test_amqp_properties(void **state)
{
    (void)state;
    sb__dlq_record_t *r = new_record();
    sb__dlq_record_set_transport(r, SB__DLQ_TX_AMQP);
    static const struct {
        sb__dlq_str_t which;
        const char *v;
    } strs[] = {
        {SB__DLQ_SOURCE, "orders.dlq"},
        {SB__DLQ_EXCHANGE, ""},
        {SB__DLQ_ROUTING_KEY, "orders.dlq"},
        {SB__DLQ_CONTENT_TYPE, "application/json"},
        {SB__DLQ_CONTENT_ENCODING, "gzip"},
        {SB__DLQ_CORRELATION_ID, "c-1"},
        {SB__DLQ_REPLY_TO, "amq.rabbitmq.reply-to"},
        {SB__DLQ_EXPIRATION, "60000"},
        {SB__DLQ_MESSAGE_ID, "m-1"},
        {SB__DLQ_TYPE, "OrderPlaced"},
        {SB__DLQ_USER_ID, "guest"},
        {SB__DLQ_APP_ID, "orders"},
        {SB__DLQ_CLUSTER_ID, "c"},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        assert_int_equal(sb__dlq_record_set(r, strs[i].which, strs[i].v, strlen(strs[i].v)),
                         SB_EOK);
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_DELIVERY_MODE, 2), SB_EOK);
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_PRIORITY, 0), SB_EOK);
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_TIMESTAMP, UINT64_MAX), SB_EOK);
    expect_line(r,
                "{\"v\":1,\"transport\":\"amqp\",\"source\":\"orders.dlq\",\"exchange\":\"\","
                "\"routing_key\":\"orders.dlq\",\"props\":{\"content_type\":\"application/json\","
                "\"content_encoding\":\"gzip\",\"delivery_mode\":2,\"priority\":0,"
                "\"correlation_id\":\"c-1\",\"reply_to\":\"amq.rabbitmq.reply-to\","
                "\"expiration\":\"60000\",\"message_id\":\"m-1\","
                "\"timestamp\":\"18446744073709551615\",\"type\":\"OrderPlaced\","
                "\"user_id\":\"guest\",\"app_id\":\"orders\",\"cluster_id\":\"c\"},"
                "\"body\":\"\"}");
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_TIMESTAMP, 1700000000), SB_EOK);
    char *line = roundtrip(r);
    assert_non_null(strstr(line, "\"timestamp\":1700000000,"));
    sb_free(line);
    sb__dlq_record_destroy(r);
}

/* One header of every AMQP type, a Kafka header of each kind, nested tables and arrays. */
static sb__dlq_record_t *every_type(void)
{
    sb__dlq_record_t *r = new_record();
    sb__dlq_list_t *h = sb__dlq_record_headers(r);
    sb__dlq_value_t v;
    v = (sb__dlq_value_t){.type = 't', .as.b = true};
    assert_int_equal(sb__dlq_list_add(h, "t", 1, &v, NULL), SB_EOK);
    assert_int_equal(sb__dlq_list_add_int(h, "b", 'b', -128), SB_EOK);
    assert_int_equal(sb__dlq_list_add_uint(h, "B", 'B', 255), SB_EOK);
    assert_int_equal(sb__dlq_list_add_int(h, "s", 's', -32768), SB_EOK);
    assert_int_equal(sb__dlq_list_add_uint(h, "u", 'u', 65535), SB_EOK);
    assert_int_equal(sb__dlq_list_add_int(h, "I", 'I', INT32_MIN), SB_EOK);
    assert_int_equal(sb__dlq_list_add_uint(h, "i", 'i', UINT32_MAX), SB_EOK);
    assert_int_equal(sb__dlq_list_add_int(h, "l", 'l', INT64_MIN), SB_EOK);
    assert_int_equal(sb__dlq_list_add_uint(h, "L", 'L', UINT64_MAX), SB_EOK);
    assert_int_equal(sb__dlq_list_add_uint(h, "L2", 'L', 42), SB_EOK);
    v = (sb__dlq_value_t){.type = 'f', .as.f = 0.1f};
    assert_int_equal(sb__dlq_list_add(h, "f", 1, &v, NULL), SB_EOK);
    v = (sb__dlq_value_t){.type = 'd', .as.d = 0.1};
    assert_int_equal(sb__dlq_list_add(h, "d", 1, &v, NULL), SB_EOK);
    v = (sb__dlq_value_t){.type = 'D', .as.dec = {2, 12345}};
    assert_int_equal(sb__dlq_list_add(h, "D", 1, &v, NULL), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(h, "S", 'S', "h\xc3\xa9llo\n", 7), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(h, "x", 'x', "\x00\xff\x80", 3), SB_EOK);
    assert_int_equal(sb__dlq_list_add_uint(h, "T", 'T', 1700000000), SB_EOK);
    sb__dlq_list_t *tab, *arr, *inner;
    assert_int_equal(sb__dlq_list_add_list(h, "F", 'F', &tab), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(tab, "k", 'S', "v", 1), SB_EOK);
    assert_int_equal(sb__dlq_list_add_list(tab, "A", 'A', &arr), SB_EOK);
    assert_int_equal(sb__dlq_list_add_int(arr, NULL, 'I', 1), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(arr, NULL, 'S', "two", 3), SB_EOK);
    assert_int_equal(sb__dlq_list_add_list(arr, NULL, 'F', &inner), SB_EOK);
    v = (sb__dlq_value_t){.type = 'V'};
    assert_int_equal(sb__dlq_list_add(inner, "void", 4, &v, NULL), SB_EOK);
    assert_int_equal(sb__dlq_list_add_list(h, "A0", 'A', NULL), SB_EOK);
    v = (sb__dlq_value_t){.type = 'V'};
    assert_int_equal(sb__dlq_list_add(h, "V", 1, &v, NULL), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(h, "K", 'K', "kafka", 5), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(h, "K", 'K', NULL, 0), SB_EOK); /* duplicate */
    assert_int_equal(sb__dlq_list_add_bytes(h, "K", 'K', "", 0), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(h, "\xff", 'S', "bin name", 8), SB_EOK);
    return r;
}

static void test_every_header_type(void **state)
{
    (void)state;
    sb__dlq_record_t *r = every_type();
    expect_line(r,
                "{\"v\":1,\"headers\":[[\"t\",\"t\",true],[\"b\",\"b\",-128],[\"B\",\"B\",255],"
                "[\"s\",\"s\",-32768],[\"u\",\"u\",65535],[\"I\",\"I\",-2147483648],"
                "[\"i\",\"i\",4294967295],[\"l\",\"l\",-9223372036854775808],"
                "[\"L\",\"L\",\"18446744073709551615\"],[\"L2\",\"L\",42],[\"f\",\"f\",0.1],"
                "[\"d\",\"d\",0.1],[\"D\",\"D\",{\"scale\":2,\"value\":12345}],"
                "[\"S\",\"S\",\"h\xc3\xa9llo\\n\"],[\"x\",\"x\",{\"b64\":\"AP+A\"}],"
                "[\"T\",\"T\",1700000000],[\"F\",\"F\",[[\"k\",\"S\",\"v\"],[\"A\",\"A\","
                "[[\"I\",1],[\"S\",\"two\"],[\"F\",[[\"void\",\"V\",null]]]]]]],"
                "[\"A0\",\"A\",[]],[\"V\",\"V\",null],[\"K\",\"K\",\"kafka\"],[\"K\",\"K\",null],"
                "[\"K\",\"K\",\"\"],[{\"b64\":\"/w==\"},\"S\",\"bin name\"]],\"body\":\"\"}");
    /* Values read back with their exact types. */
    char *line = NULL;
    assert_int_equal(sb__dlq_record_to_json(r, &line, NULL), SB_EOK);
    sb__dlq_record_t *back = parse_ok(line);
    const sb__dlq_list_t *h = sb__dlq_record_headers_const(back);
    assert_int_equal(h->n, 23);
    const sb__dlq_value_t *f = sb__dlq_list_find(h, "f");
    assert_int_equal(f->type, 'f');
    assert_true(f->as.f == 0.1f);
    const sb__dlq_value_t *x = sb__dlq_list_find(h, "x");
    assert_int_equal(x->as.bytes.len, 3);
    assert_memory_equal(x->as.bytes.p, "\x00\xff\x80", 3);
    const sb__dlq_value_t *tab = sb__dlq_list_find(h, "F");
    assert_int_equal(tab->as.list.n, 2);
    assert_int_equal(tab->as.list.v[1].value.as.list.v[2].value.type, 'F');
    const sb__dlq_value_t *k = sb__dlq_list_find(h, "K");
    assert_string_equal(k->as.bytes.p, "kafka");
    assert_int_equal(h->v[20].value.type, 'K');
    assert_null(h->v[20].value.as.bytes.p);
    assert_int_equal(h->v[22].name.len, 1);
    assert_int_equal((unsigned char)h->v[22].name.p[0], 0xff);
    sb_free(line);
    sb__dlq_record_destroy(back);
    sb__dlq_record_destroy(r);
}

static void add_double(sb__dlq_list_t *h, double d)
{
    sb__dlq_value_t v = {.type = 'd', .as.d = d};
    assert_int_equal(sb__dlq_list_add(h, "d", 1, &v, NULL), SB_EOK);
}

static void add_float(sb__dlq_list_t *h, float f)
{
    sb__dlq_value_t v = {.type = 'f', .as.f = f};
    assert_int_equal(sb__dlq_list_add(h, "f", 1, &v, NULL), SB_EOK);
}

static void test_floats_bit_exact(void **state)
{
    (void)state;
    sb__dlq_record_t *r = new_record();
    sb__dlq_list_t *h = sb__dlq_record_headers(r);
    double nan_payload;
    uint64_t bits = 0x7ff8000000000123ull;
    memcpy(&nan_payload, &bits, sizeof bits);
    const double ds[] = {0.0,
                         -0.0,
                         1.0,
                         -1.5,
                         1e300,
                         5e-324,
                         2.2250738585072014e-308,
                         1.7976931348623157e308,
                         123456789012345678.0,
                         1.0 / 3.0,
                         INFINITY,
                         -INFINITY,
                         nan_payload};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        add_double(h, ds[i]);
    float fnan;
    uint32_t fbits = 0xffc00001u;
    memcpy(&fnan, &fbits, sizeof fbits);
    const float fs[] = {0.0f,        -0.0f, 1.0f,     3.4028235e38f, 1e-45f, 1.17549435e-38f,
                        16777217.0f, 0.3f,  INFINITY, fnan};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        add_float(h, fs[i]);
    char *line = roundtrip(r);
    assert_non_null(strstr(line, "[\"d\",\"d\",-0.0]"));
    assert_non_null(strstr(line, "[\"d\",\"d\",1.0]"));
    assert_non_null(strstr(line, "[\"d\",\"d\",5e-324]"));
    assert_non_null(strstr(line, "{\"bits\":\"7ff0000000000000\"}"));
    assert_non_null(strstr(line, "{\"bits\":\"7ff8000000000123\"}"));
    assert_non_null(strstr(line, "{\"bits\":\"ffc00001\"}"));
    assert_non_null(strstr(line, "[\"f\",\"f\",0.3]"));
    sb__dlq_record_t *back = parse_ok(line);
    const sb__dlq_list_t *bh = sb__dlq_record_headers_const(back);
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        assert_memory_equal(&bh->v[i].value.as.d, &ds[i], sizeof(double));
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        assert_memory_equal(&bh->v[13 + i].value.as.f, &fs[i], sizeof(float));
    sb_free(line);
    sb__dlq_record_destroy(back);
    sb__dlq_record_destroy(r);
}

static void test_bodies(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        size_t len;
        const char *want;
    } cases[] = {
        {"", 0, "\"\""},
        {"plain", 5, "\"plain\""},
        {"\"\\\x01\x1f\x7f\t", 6, "\"\\\"\\\\\\u0001\\u001f\x7f\\t\""},
        {"\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\""},
        {"a\0b", 3, "\"a\\u0000b\""},
        {"\xff", 1, "{\"b64\":\"/w==\"}"},
        {"\xc3", 1, "{\"b64\":\"ww==\"}"},                 /* truncated sequence */
        {"\xc0\xaf", 2, "{\"b64\":\"wK8=\"}"},             /* overlong */
        {"\xed\xa0\x80", 3, "{\"b64\":\"7aCA\"}"},         /* surrogate */
        {"\xf4\x90\x80\x80", 4, "{\"b64\":\"9JCAgA==\"}"}, /* above U+10FFFF */
        {"ok \xfe", 4, "{\"b64\":\"b2sg/g==\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sb__dlq_record_t *r = new_record();
        assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, cases[i].body, cases[i].len), SB_EOK);
        char want[128];
        snprintf(want, sizeof want, "{\"v\":1,\"body\":%s}", cases[i].want);
        expect_line(r, want);
        char *line = roundtrip(r);
        sb__dlq_record_t *back = parse_ok(line);
        size_t len;
        const char *b = sb__dlq_record_get(back, SB__DLQ_BODY, &len);
        assert_int_equal(len, cases[i].len);
        assert_memory_equal(b, cases[i].body, len);
        sb_free(line);
        sb__dlq_record_destroy(back);
        sb__dlq_record_destroy(r);
    }
    /* A large binary body of every byte value. */
    char big[4096];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 7);
    sb__dlq_record_t *r = new_record();
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, big, sizeof big), SB_EOK);
    char *line = roundtrip(r);
    sb__dlq_record_t *back = parse_ok(line);
    size_t len;
    assert_memory_equal(sb__dlq_record_get(back, SB__DLQ_BODY, &len), big, sizeof big);
    assert_int_equal(len, sizeof big);
    sb_free(line);
    sb__dlq_record_destroy(back);
    sb__dlq_record_destroy(r);
}

/* Non-canonical but equivalent input re-encodes canonically (and then is stable). */
static void test_canonicalisation(void **state)
{
    (void)state;
    sb__dlq_record_t *r = parse_ok(
        "  {\"body\": {\"b64\": \"aGk=\"}, \"headers\": [[\"n\", \"d\", 1], [\"m\", \"L\", "
        "\"5\"], [\"f\", \"f\", 1e0], [\"x\", \"d\", {\"bits\": \"3ff0000000000000\"}]], "
        "\"v\": 1, \"props\": {\"timestamp\": \"7\"}}\r\n");
    char *line = roundtrip(r);
    assert_string_equal(line, "{\"v\":1,\"props\":{\"timestamp\":7},\"headers\":[[\"n\",\"d\","
                              "1.0],[\"m\",\"L\",5],[\"f\",\"f\",1.0],[\"x\",\"d\",1.0]],"
                              "\"body\":\"hi\"}");
    sb_free(line);
    sb__dlq_record_destroy(r);
}

static void test_bad_lines(void **state)
{
    (void)state;
    parse_bad("", SB_EPARSE, "not valid JSON");
    parse_bad("{\"v\":1,\"body\":\"\"", SB_EPARSE, "not valid JSON");
    parse_bad("[1]", SB_EPARSE, "expected a JSON object");
    parse_bad("{\"body\":\"\"}", SB_EPARSE, "missing \"v\"");
    parse_bad("{\"v\":2,\"body\":\"\"}", SB_EPARSE, "v: unsupported format version");
    parse_bad("{\"v\":1}", SB_EPARSE, "missing \"body\"");
    parse_bad("{\"v\":1,\"body\":\"\",\"bogus\":1}", SB_EPARSE, "unknown member \"bogus\"");
    parse_bad("{\"v\":1,\"body\":\"\",\"body\":\"\"}", SB_EPARSE, "duplicate");
    parse_bad("{\"v\":1,\"body\":5}", SB_EPARSE, "body: expected a string or {\"b64\"");
    parse_bad("{\"v\":1,\"body\":{\"b64\":\"abc\"}}", SB_EPARSE, "body: invalid base64");
    parse_bad("{\"v\":1,\"body\":{\"b64\":\"/x==\"}}", SB_EPARSE, "body: invalid base64");
    parse_bad("{\"v\":1,\"body\":{\"b64\":\"a=bc\"}}", SB_EPARSE, "body: invalid base64");
    parse_bad("{\"v\":1,\"body\":{\"b64\":\"ab\",\"x\":1}}", SB_EPARSE, "body: expected");
    parse_bad("{\"v\":1,\"body\":\"\",\"transport\":\"mqtt\"}", SB_EPARSE,
              "transport: expected \"amqp\" or \"kafka\"");
    parse_bad("{\"v\":1,\"body\":\"\",\"partition\":-1}", SB_ERANGE, "partition: out of range");
    parse_bad("{\"v\":1,\"body\":\"\",\"partition\":2147483648}", SB_ERANGE, "partition");
    parse_bad("{\"v\":1,\"body\":\"\",\"offset\":\"5\"}", SB_EPARSE,
              "offset: expected an integer, got a string");
    parse_bad("{\"v\":1,\"body\":\"\",\"props\":{\"priority\":256}}", SB_ERANGE,
              "props.priority: out of range (0..255)");
    parse_bad("{\"v\":1,\"body\":\"\",\"props\":{\"timestamp\":\"01\"}}", SB_EPARSE,
              "props.timestamp: expected an unsigned integer or a string of decimal digits");
    parse_bad("{\"v\":1,\"body\":\"\",\"props\":{\"timestamp\":\"18446744073709551616\"}}",
              SB_ERANGE, "props.timestamp: out of range");
    parse_bad("{\"v\":1,\"body\":\"\",\"props\":{\"partition\":1}}", SB_EPARSE,
              "props: unknown member \"partition\"");
    parse_bad("{\"v\":1,\"body\":\"\",\"props\":[]}", SB_EPARSE, "props: expected an object");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":{}}", SB_EPARSE, "headers: expected an array");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"S\"]]}", SB_EPARSE,
              "headers[0]: expected [name, type, value]");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"S\",\"\"],[1,\"S\",\"\"]]}", SB_EPARSE,
              "headers[1][0]: expected a string");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"Q\",1]]}", SB_EPARSE,
              "headers[0][1]: expected a type letter");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"SS\",1]]}", SB_EPARSE,
              "headers[0][1]: expected a type letter");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"B\",300]]}", SB_ERANGE,
              "headers[0][2]: 300 is out of range for type \"B\" (0..255)");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"b\",-129]]}", SB_ERANGE,
              "headers[0][2]: -129 is out of range for type \"b\"");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"I\",1.5]]}", SB_EPARSE,
              "headers[0][2]: expected an integer, got a real number");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"L\",-1]]}", SB_ERANGE,
              "headers[0][2]: out of range");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"t\",1]]}", SB_EPARSE,
              "headers[0][2]: expected true or false");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"V\",0]]}", SB_EPARSE,
              "headers[0][2]: expected null");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"S\",null]]}", SB_EPARSE,
              "headers[0][2]: expected a string");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"f\",1e39]]}", SB_ERANGE,
              "headers[0][2]: out of range for a 32-bit float");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"d\",{\"bits\":\"7ff\"}]]}", SB_EPARSE,
              "headers[0][2]: expected a number or {\"bits\"");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"D\",{\"scale\":256,\"value\":1}]]}",
              SB_ERANGE, "headers[0][2].scale: out of range (0..255)");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"D\",[2,1]]]}", SB_EPARSE,
              "headers[0][2]: expected {\"scale\"");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"F\",[[\"b\",\"A\",[[\"I\",\"x\"]]]]]]}",
              SB_EPARSE, "headers[0][2][0][2][0][1]: expected an integer, got a string");
    parse_bad("{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"A\",[[\"n\",\"I\",1]]]]}", SB_EPARSE,
              "headers[0][2][0]: expected [type, value]");
    /* Nesting beyond the limit. */
    char deep[2048] = "{\"v\":1,\"body\":\"\",\"headers\":[[\"a\",\"A\",";
    for (int i = 0; i < SB__DLQ_MAX_DEPTH; i++)
        strcat(deep, "[[\"A\",");
    strcat(deep, "[]");
    for (int i = 0; i < SB__DLQ_MAX_DEPTH; i++)
        strcat(deep, "]]");
    strcat(deep, "]]}");
    parse_bad(deep, SB_EPARSE, "nest too deep");
    /* errstr may be NULL */
    sb__dlq_record_t *r = NULL;
    assert_int_equal(sb__dlq_record_from_json("x", 1, &r, NULL, 0), SB_EPARSE);
    assert_null(r);
}

static void test_list_api(void **state)
{
    (void)state;
    sb__dlq_list_t l = {0};
    sb__dlq_value_t v = {.type = '?'};
    assert_int_equal(sb__dlq_list_add(&l, "a", 1, &v, NULL), SB_EINVAL);
    assert_int_equal(sb__dlq_list_add_int(&l, "a", 'b', 128), SB_ERANGE);
    assert_int_equal(sb__dlq_list_add_int(&l, "a", 'B', -1), SB_ERANGE);
    assert_int_equal(sb__dlq_list_add_uint(&l, "a", 'l', (uint64_t)INT64_MAX + 1), SB_ERANGE);
    assert_int_equal(sb__dlq_list_add_uint(&l, "a", 'i', (uint64_t)UINT32_MAX + 1), SB_ERANGE);
    assert_int_equal(sb__dlq_list_add_int(&l, "a", 'S', 1), SB_EINVAL);
    assert_int_equal(sb__dlq_list_add_bytes(&l, "a", 'S', NULL, 0), SB_EINVAL);
    assert_int_equal(sb__dlq_list_add_bytes(&l, "a", 'I', "x", 1), SB_EINVAL);
    assert_int_equal(sb__dlq_list_add_list(&l, "a", 'S', NULL), SB_EINVAL);
    assert_int_equal(l.n, 0);
    /* Nesting limit through the API: adding a value that holds a too-deep list. */
    sb__dlq_list_t *cur;
    assert_int_equal(sb__dlq_list_add_list(&l, "deep", 'A', &cur), SB_EOK);
    for (int i = 0; i < SB__DLQ_MAX_DEPTH + 2; i++)
        assert_int_equal(sb__dlq_list_add_list(cur, NULL, 'A', &cur), SB_EOK);
    sb__dlq_list_t l2 = {0};
    assert_int_equal(sb__dlq_list_add(&l2, "copy", 4, &l.v[0].value, NULL), SB_ETOOBIG);
    sb__dlq_record_t *r = new_record();
    assert_int_equal(sb__dlq_list_add_list(sb__dlq_record_headers(r), "x", 'F', NULL), SB_EOK);
    sb__dlq_list_t *rh = sb__dlq_record_headers(r);
    /* Splice the deep list in by hand, as a misbehaving builder could. */
    sb__dlq_list_clear(&rh->v[0].value.as.list);
    rh->v[0].value.type = 'A';
    rh->v[0].value.as.list = l.v[0].value.as.list;
    l.v[0].value.type = 'V';
    char *line = NULL;
    assert_int_equal(sb__dlq_record_to_json(r, &line, NULL), SB_ETOOBIG);
    assert_null(line);
    sb__dlq_record_destroy(r);
    sb__dlq_list_clear(&l);

    assert_int_equal(sb__dlq_list_add_bytes(&l, "a", 'S', "1", 1), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(&l, "b", 'S', "2", 1), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(&l, "a", 'S', "3", 1), SB_EOK);
    assert_string_equal(sb__dlq_list_find(&l, "a")->as.bytes.p, "1");
    assert_null(sb__dlq_list_find(&l, "c"));
    assert_int_equal(sb__dlq_list_remove(&l, "a"), 2);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0].name.p, "b");
    assert_int_equal(sb__dlq_list_remove(&l, "a"), 0);
    sb__dlq_list_clear(&l);
    sb__dlq_list_clear(&l);
}

static sb__dlq_record_t *dead_letter(sb__dlq_transport_t t)
{
    sb__dlq_record_t *r = new_record();
    sb__dlq_record_set_transport(r, t);
    sb__dlq_list_t *h = sb__dlq_record_headers(r);
    char k = t == SB__DLQ_TX_KAFKA ? 'K' : 'S';
    assert_int_equal(sb__dlq_list_add_bytes(h, "traceparent", k, "00-ab-cd-01", 11), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(h, "x-sb-reason", k, "max-attempts", 12), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(h, "x-sb-error", k, "timeout after 5s", 16), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(h, "x-sb-handler", k, "billing", 7), SB_EOK);
    if (t == SB__DLQ_TX_KAFKA)
        assert_int_equal(sb__dlq_list_add_bytes(h, "x-sb-attempts", 'K', "5", 1), SB_EOK);
    else
        assert_int_equal(sb__dlq_list_add_int(h, "x-sb-attempts", 'I', 5), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(h, "x-sb-consumer", k, "orders-svc", 10), SB_EOK);
    assert_int_equal(sb__dlq_list_add_bytes(h, "x-sb-failed-at", k, "2026-03-01T12:00:00.5Z", 22),
                     SB_EOK);
    return r;
}

static void test_accessors(void **state)
{
    (void)state;
    sb__dlq_record_t *r = dead_letter(SB__DLQ_TX_AMQP);
    assert_string_equal(sb__dlq_record_reason(r), "max-attempts");
    assert_string_equal(sb__dlq_record_error(r), "timeout after 5s");
    assert_string_equal(sb__dlq_record_handler(r), "billing");
    assert_string_equal(sb__dlq_record_consumer(r), "orders-svc");
    uint64_t n = 0;
    assert_true(sb__dlq_record_attempts(r, &n));
    assert_int_equal(n, 5);
    int64_t at = 0, want = 0;
    assert_int_equal(sb__datetime_parse("2026-03-01T12:00:00.5Z", 22, false, &want, NULL), 0);
    assert_true(sb__dlq_record_failed_at_us(r, &at));
    assert_int_equal(at, want);
    assert_int_equal(sb__dlq_record_replay_count(r), 0);

    /* AMQP event type: x-sb-original-routing-key, else the routing key. */
    size_t len = 0;
    assert_null(sb__dlq_record_event_type(r, &len));
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_ROUTING_KEY, "orders.dlq", 10), SB_EOK);
    assert_string_equal(sb__dlq_record_event_type(r, &len), "orders.dlq");
    assert_int_equal(len, 10);
    sb__dlq_list_t *h = sb__dlq_record_headers(r);
    assert_int_equal(sb__dlq_list_add_bytes(h, "event-type", 'S', "Ignored", 7), SB_EOK);
    assert_string_equal(sb__dlq_record_event_type(r, &len), "orders.dlq");
    assert_int_equal(sb__dlq_list_add_bytes(h, SB__DLQ_H_ORIG_RKEY, 'S', "Order.Placed", 12),
                     SB_EOK);
    assert_string_equal(sb__dlq_record_event_type(r, &len), "Order.Placed");

    /* Event id (the consumer's order; test_event_id_matches_consumer has the rest): the
     * body's Id, decoded; one that does not fit buf counts as absent; a number as written. */
    char buf[64];
    assert_null(sb__dlq_record_event_id(r, &len, buf, sizeof buf));
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, "{\"Id\":\"a\\u0062c\",\"x\":1}", 23),
                     SB_EOK);
    const char *id = sb__dlq_record_event_id(r, &len, buf, sizeof buf);
    assert_int_equal(len, 3);
    assert_memory_equal(id, "abc", 3);
    assert_null(sb__dlq_record_event_id(r, &len, buf, 2)); /* does not fit */
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, "{\"Id\":42}", 9), SB_EOK);
    id = sb__dlq_record_event_id(r, &len, NULL, 0);
    assert_memory_equal(id, "42", 2);
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, "not json", 8), SB_EOK);
    assert_null(sb__dlq_record_event_id(r, &len, buf, sizeof buf));
    /* The consumer refuses a body that is no object: the message-id header, then the
     * message_id property still name it. */
    assert_int_equal(sb__dlq_list_add_bytes(h, "message-id", 'S', "hdr-1", 5), SB_EOK);
    assert_string_equal(sb__dlq_record_event_id(r, &len, buf, sizeof buf), "hdr-1");
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_MESSAGE_ID, "prop-1", 6), SB_EOK);
    assert_string_equal(sb__dlq_record_event_id(r, &len, buf, sizeof buf), "prop-1");
    /* The body's Id comes before the message_id property and the message-id header. */
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, "{\"x\":1}", 7), SB_EOK);
    id = sb__dlq_record_event_id(r, &len, buf, sizeof buf);
    assert_non_null(id);
    assert_string_equal(id, "prop-1");
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, "{\"Id\":\"body-1\"}", 15), SB_EOK);
    id = sb__dlq_record_event_id(r, &len, buf, sizeof buf);
    assert_int_equal(len, 6);
    assert_memory_equal(id, "body-1", 6);
    sb__dlq_record_destroy(r);

    /* Kafka: event-type, else ce_type; attempts as text. */
    r = dead_letter(SB__DLQ_TX_KAFKA);
    assert_true(sb__dlq_record_attempts(r, &n));
    assert_int_equal(n, 5);
    h = sb__dlq_record_headers(r);
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_ROUTING_KEY, "ignored", 7), SB_EOK);
    assert_null(sb__dlq_record_event_type(r, &len));
    assert_int_equal(sb__dlq_list_add_bytes(h, "ce_type", 'K', "com.example.created", 19), SB_EOK);
    assert_string_equal(sb__dlq_record_event_type(r, &len), "com.example.created");
    assert_int_equal(sb__dlq_list_add_bytes(h, "event-type", 'K', "OrderPlaced", 11), SB_EOK);
    assert_string_equal(sb__dlq_record_event_type(r, &len), "OrderPlaced");
    sb__dlq_record_destroy(r);

    /* Unknown transport tries all; a null Kafka header is no string; T timestamps. */
    r = new_record();
    h = sb__dlq_record_headers(r);
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_ROUTING_KEY, "rk", 2), SB_EOK);
    assert_string_equal(sb__dlq_record_event_type(r, &len), "rk");
    assert_int_equal(sb__dlq_list_add_bytes(h, "x-sb-reason", 'K', NULL, 0), SB_EOK);
    assert_null(sb__dlq_record_reason(r));
    assert_int_equal(sb__dlq_list_add_uint(h, "x-sb-failed-at", 'T', 1700000000), SB_EOK);
    assert_true(sb__dlq_record_failed_at_us(r, &at));
    assert_int_equal(at, 1700000000000000ll);
    assert_int_equal(sb__dlq_list_add_int(h, "x-sb-attempts", 'l', -1), SB_EOK);
    assert_false(sb__dlq_record_attempts(r, &n));
    assert_int_equal(sb__dlq_list_add_bytes(h, "x-sb-replay-count", 'S', "2x", 2), SB_EOK);
    assert_int_equal(sb__dlq_record_replay_count(r), 0);
    sb__dlq_record_destroy(r);

    r = new_record();
    h = sb__dlq_record_headers(r);
    assert_int_equal(sb__dlq_list_add_bytes(h, "x-sb-failed-at", 'S', "yesterday", 9), SB_EOK);
    assert_false(sb__dlq_record_failed_at_us(r, &at));
    sb__dlq_record_destroy(r);
}

/* ---- the event id is the consumer's ------------------------------------------------------ */

typedef struct id_case {
    const char *what;
    sb__dlq_transport_t tx;
    const char *content_type; /* AMQP property */
    const char *message_id;   /* AMQP property */
    const char *headers[10];  /* name, value, ...; NULL-terminated */
    const char *body;
    const char *want;     /* the record's id; NULL: none */
    bool consumer_agrees; /* the consumer decodes it, with this id (else it refuses it) */
} id_case_t;

static const id_case_t ID_CASES[] = {
    {"body Id first",
     SB__DLQ_TX_AMQP,
     NULL,
     "prop-1",
     {"message-id", "hdr-1", NULL},
     "{\"id\":\"lower-1\",\"Id\":\"upper-1\"}",
     "upper-1",
     true},
    {"then body id",
     SB__DLQ_TX_AMQP,
     NULL,
     "prop-1",
     {NULL},
     "{\"id\":\"lower-1\"}",
     "lower-1",
     true},
    {"a null Id is absent",
     SB__DLQ_TX_AMQP,
     NULL,
     NULL,
     {NULL},
     "{\"Id\":null,\"id\":\"l-2\"}",
     "l-2",
     true},
    {"then AMQP message_id",
     SB__DLQ_TX_AMQP,
     NULL,
     "prop-1",
     {"message-id", "hdr-1", NULL},
     "{\"x\":1}",
     "prop-1",
     true},
    {"escaped Id decoded",
     SB__DLQ_TX_KAFKA,
     NULL,
     NULL,
     {NULL},
     "{\"Id\":\"a\\u00e9\\\"b\"}",
     "a\xc3\xa9\"b",
     true},
    /* Kafka has no message_id property: the Kafka transport gives intake the message-id
     * header in its place, after the body's Id and id. */
    {"Kafka: message-id header when the body has no Id",
     SB__DLQ_TX_KAFKA,
     NULL,
     NULL,
     {"message-id", "hdr-1", "event-type", "T", NULL},
     "{\"x\":1}",
     "hdr-1",
     true},
    {"Kafka: no Id and no message-id: the body's SHA-256 (id_strategy: hash)",
     SB__DLQ_TX_KAFKA,
     NULL,
     NULL,
     {"event-type", "T", NULL},
     "{\"x\":1}",
     "5041bf1f713df204784353e82f6a4a535931cb64f1f4b4a5aeaffcb720918b22",
     true},
    {"CloudEvents binary (Kafka ce_id) before the body",
     SB__DLQ_TX_KAFKA,
     NULL,
     NULL,
     {"ce_specversion", "1.0", "ce_id", "ce-1", "ce_source", "/s", "ce_type", "T", NULL},
     "{\"Id\":\"body-1\"}",
     "ce-1",
     true},
    {"CloudEvents binary (AMQP cloudEvents:id)",
     SB__DLQ_TX_AMQP,
     NULL,
     "prop-1",
     {"cloudEvents:specversion", "1.0", "cloudEvents:id", "ce-2", "cloudEvents:source", "/s",
      "cloudEvents:type", "T"},
     "{\"Id\":\"body-1\"}",
     "ce-2",
     true},
    {"CloudEvents binary without an id",
     SB__DLQ_TX_KAFKA,
     NULL,
     NULL,
     {"ce_specversion", "1.0", "ce_source", "/s", "ce_type", "T", NULL},
     "{\"Id\":\"body-1\"}",
     NULL,
     false},
    {"CloudEvents structured (property)",
     SB__DLQ_TX_AMQP,
     "application/cloudevents+json; charset=utf-8",
     "prop-1",
     {NULL},
     "{\"specversion\":\"1.0\",\"id\":\"s-1\",\"Id\":\"x\",\"source\":\"/s\",\"type\":\"T\"}",
     "s-1",
     true},
    {"CloudEvents structured (Kafka header)",
     SB__DLQ_TX_KAFKA,
     NULL,
     NULL,
     {"content-type", "application/cloudevents+json", "ce_id", "hdr", NULL},
     "{\"specversion\":\"1.0\",\"id\":\"s-2\",\"source\":\"/s\",\"type\":\"T\"}",
     "s-2",
     true},
    /* The consumer refuses these (no id it could log); the tool still names what it can. */
    {"a numeric Id as written",
     SB__DLQ_TX_AMQP,
     NULL,
     "prop-1",
     {NULL},
     "{\"Id\":42}",
     "42",
     false},
    {"not JSON: the property",
     SB__DLQ_TX_AMQP,
     NULL,
     "prop-1",
     {"message-id", "hdr-1", NULL},
     "not json",
     "prop-1",
     false},
    {"not an object: the header",
     SB__DLQ_TX_KAFKA,
     NULL,
     NULL,
     {"message-id", "hdr-1", NULL},
     "[1]",
     "hdr-1",
     false},
    {"not JSON, nothing else", SB__DLQ_TX_KAFKA, NULL, NULL, {NULL}, "not json", NULL, false},
};

static void test_event_id_matches_consumer(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof ID_CASES / sizeof ID_CASES[0]; c++) {
        const id_case_t *k = &ID_CASES[c];
        sb__dlq_record_t *r = new_record();
        sb__dlq_record_set_transport(r, k->tx);
        char ht = k->tx == SB__DLQ_TX_KAFKA ? 'K' : 'S';
        sb__header_t hs[5];
        size_t nh = 0;
        for (size_t i = 0; k->headers[i]; i += 2) {
            const char *n = k->headers[i], *v = k->headers[i + 1];
            assert_int_equal(sb__dlq_list_add_bytes(sb__dlq_record_headers(r), n, ht, v, strlen(v)),
                             SB_EOK);
            hs[nh++] = (sb__header_t){n, v, (uint32_t)strlen(n), (uint32_t)strlen(v)};
        }
        if (k->content_type)
            assert_int_equal(sb__dlq_record_set(r, SB__DLQ_CONTENT_TYPE, k->content_type,
                                                strlen(k->content_type)),
                             SB_EOK);
        if (k->message_id)
            assert_int_equal(
                sb__dlq_record_set(r, SB__DLQ_MESSAGE_ID, k->message_id, strlen(k->message_id)),
                SB_EOK);
        assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, k->body, strlen(k->body)), SB_EOK);
        char buf[128];
        size_t len = 0;
        const char *id = sb__dlq_record_event_id(r, &len, buf, sizeof buf);
        if (!k->want) {
            if (id)
                fail_msg("%s: id \"%.*s\", want none", k->what, (int)len, id);
        } else if (!id || len != strlen(k->want) || memcmp(id, k->want, len)) {
            fail_msg("%s: id \"%.*s\", want \"%s\"", k->what, id ? (int)len : 6, id ? id : "(none)",
                     k->want);
        }
        /* What the consumer decodes from the same message (as the transports fill it). */
        sb__intake_msg_t m = {
            .body = k->body, .body_len = strlen(k->body), .headers = hs, .n_headers = nh};
        if (k->tx == SB__DLQ_TX_AMQP) {
            m.routing_key = "T";
            m.content_type = k->content_type;
            m.message_id = k->message_id;
        } else {
            m.topic = "T";
            for (size_t i = 0; i < nh; i++) /* as transport_kafka.c fills it */
                if (!strcmp(hs[i].name, "message-id"))
                    m.message_id = hs[i].value;
        }
        sb__envelope_opts_t o = {.id_hash = true};
        sb_event_t ev;
        sb__event_init(&ev);
        int rc = sb__envelope_decode(&o, &m, &ev);
        if (k->consumer_agrees) {
            if (rc != SB_EOK)
                fail_msg("%s: the consumer refused it: %s", k->what, ev.error);
            if (ev.id_len != len || memcmp(ev.id, id, len))
                fail_msg("%s: consumer id \"%s\", dlq id \"%.*s\"", k->what, ev.id, (int)len, id);
        } else if (rc == SB_EOK) {
            fail_msg("%s: the consumer decoded it (id \"%s\")", k->what, ev.id);
        }
        sb__event_reset(&ev);
        /* A hashed id needs 65 bytes of buf. */
        if (k->want && strlen(k->want) == 64)
            assert_null(sb__dlq_record_event_id(r, &len, buf, 64));
        sb__dlq_record_destroy(r);
    }
}

static void test_prepare_replay(void **state)
{
    (void)state;
    int64_t now;
    assert_int_equal(sb__datetime_parse("2026-03-02T08:00:00Z", 20, false, &now, NULL), 0);
    sb__dlq_record_t *r = dead_letter(SB__DLQ_TX_AMQP);
    sb__dlq_list_t *h = sb__dlq_record_headers(r);
    sb__dlq_list_t *death;
    assert_int_equal(sb__dlq_list_add_list(h, "x-death", 'A', &death), SB_EOK);
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_BODY, "{\"Id\":\"1\"}", 10), SB_EOK);
    sb__dlq_record_t *p1 = NULL, *p2 = NULL;
    assert_int_equal(sb__dlq_record_prepare_replay(r, now, &p1), SB_EOK);
    char *line = roundtrip(p1);
    assert_string_equal(
        line, "{\"v\":1,\"transport\":\"amqp\",\"headers\":["
              "[\"traceparent\",\"S\",\"00-ab-cd-01\"],[\"x-sb-reason\",\"S\",\"max-attempts\"],"
              "[\"x-sb-error\",\"S\",\"timeout after 5s\"],"
              "[\"x-sb-handler\",\"S\",\"billing\"],[\"x-sb-consumer\",\"S\",\"orders-svc\"],"
              "[\"x-sb-failed-at\",\"S\",\"2026-03-01T12:00:00.5Z\"],"
              "[\"x-sb-replay-count\",\"l\",1],"
              "[\"x-sb-replayed-at\",\"S\",\"2026-03-02T08:00:00.000000Z\"]],"
              "\"body\":\"{\\\"Id\\\":\\\"1\\\"}\"}");
    sb_free(line);
    assert_int_equal(sb__dlq_record_replay_count(p1), 1);
    uint64_t n;
    assert_false(sb__dlq_record_attempts(p1, &n));
    /* Replaying the replay counts on, with one pair of replay headers. */
    assert_int_equal(sb__dlq_record_prepare_replay(p1, now + 1000000, &p2), SB_EOK);
    assert_int_equal(sb__dlq_record_replay_count(p2), 2);
    const sb__dlq_list_t *h2 = sb__dlq_record_headers_const(p2);
    size_t count = 0;
    for (size_t i = 0; i < h2->n; i++)
        count += h2->v[i].name.len == 17 && memcmp(h2->v[i].name.p, "x-sb-replay-count", 17) == 0;
    assert_int_equal(count, 1);
    assert_string_equal(sb__dlq_record_header_str(p2, SB__DLQ_H_REPLAYED_AT, NULL),
                        "2026-03-02T08:00:01.000000Z");
    /* The original is untouched. */
    assert_true(sb__dlq_record_attempts(r, &n));
    sb__dlq_record_destroy(p1);
    sb__dlq_record_destroy(p2);
    sb__dlq_record_destroy(r);

    /* Kafka: text headers; partition, offset and timestamp dropped; key kept. */
    r = dead_letter(SB__DLQ_TX_KAFKA);
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_PARTITION, 1), SB_EOK);
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_OFFSET, 10), SB_EOK);
    assert_int_equal(sb__dlq_record_set_num(r, SB__DLQ_TIMESTAMP_MS, 10), SB_EOK);
    assert_int_equal(sb__dlq_record_set(r, SB__DLQ_KEY, "order-7", 7), SB_EOK);
    assert_int_equal(
        sb__dlq_list_add_bytes(sb__dlq_record_headers(r), "x-sb-replay-count", 'K', "4", 1),
        SB_EOK);
    assert_int_equal(sb__dlq_record_prepare_replay(r, now, &p1), SB_EOK);
    assert_false(sb__dlq_record_get_num(p1, SB__DLQ_PARTITION, NULL));
    assert_false(sb__dlq_record_get_num(p1, SB__DLQ_OFFSET, NULL));
    assert_false(sb__dlq_record_get_num(p1, SB__DLQ_TIMESTAMP_MS, NULL));
    assert_string_equal(sb__dlq_record_get(p1, SB__DLQ_KEY, NULL), "order-7");
    const sb__dlq_value_t *rc =
        sb__dlq_list_find(sb__dlq_record_headers_const(p1), "x-sb-replay-count");
    assert_int_equal(rc->type, 'K');
    assert_string_equal(rc->as.bytes.p, "5");
    sb__dlq_record_destroy(p1);
    sb__dlq_record_destroy(r);
}

/* Allocation-failure sweep over from_json (and to_json / clone on the way). */
static void test_alloc_failures(void **state)
{
    (void)state;
    sb__dlq_record_t *src = every_type();
    sb__dlq_record_set_transport(src, SB__DLQ_TX_AMQP);
    assert_int_equal(sb__dlq_record_set(src, SB__DLQ_BODY, "\xff\xfe body", 7), SB_EOK);
    assert_int_equal(sb__dlq_record_set(src, SB__DLQ_CONTENT_TYPE, "text/plain", 10), SB_EOK);
    char *line = NULL;
    size_t len = 0;
    assert_int_equal(sb__dlq_record_to_json(src, &line, &len), SB_EOK);
    int successes = 0;
    for (sbt_fail_at = 1; sbt_fail_at < 2000 && successes == 0; sbt_fail_at++) {
        sbt_alloc_count = 0;
        char err[256] = "";
        sb__dlq_record_t *r = NULL, *c = NULL;
        char *again = NULL;
        sb_set_allocator(sbt_failing_malloc, sbt_failing_realloc, free);
        int rc = sb__dlq_record_from_json(line, len, &r, err, sizeof err);
        if (rc == SB_EOK)
            rc = sb__dlq_record_clone(r, &c);
        if (rc == SB_EOK)
            rc = sb__dlq_record_to_json(c, &again, NULL);
        sb__dlq_record_t *p = NULL;
        if (rc == SB_EOK)
            rc = sb__dlq_record_prepare_replay(c, 0, &p);
        sb__dlq_record_destroy(p);
        sb__dlq_record_destroy(c);
        sb__dlq_record_destroy(r);
        sb_set_allocator(NULL, NULL, NULL);
        if (rc != SB_EOK && rc != SB_ENOMEM)
            fail_msg("sbt_fail_at %d: rc %d (%s)", sbt_fail_at, rc, err);
        if (rc == SB_ENOMEM && r == NULL && err[0] && !strstr(err, "out of memory"))
            fail_msg("sbt_fail_at %d: error \"%s\"", sbt_fail_at, err);
        if (rc == SB_EOK) {
            assert_string_equal(again, line);
            successes++;
        }
        sb_free(again);
    }
    assert_int_equal(successes, 1);
    assert_true(sbt_fail_at > 50);
    sb_free(line);
    sb__dlq_record_destroy(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_and_envelope),
        cmocka_unit_test(test_amqp_properties),
        cmocka_unit_test(test_every_header_type),
        cmocka_unit_test(test_floats_bit_exact),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_canonicalisation),
        cmocka_unit_test(test_bad_lines),
        cmocka_unit_test(test_list_api),
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_event_id_matches_consumer),
        cmocka_unit_test(test_prepare_replay),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
