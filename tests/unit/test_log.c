/* The logger: every line is one JSON object (parsed back with jansson) or one text line;
 * escaping, invalid UTF-8, threshold, URL and registered-secret masking, and line atomicity
 * under concurrent writers. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "log.h"

/* ---- capture helpers -------------------------------------------------------------------- */

static FILE *capture_start(int level, int format)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    sb__log_configure(level, format, f);
    return f;
}

/* Everything written so far, NUL-terminated; restores stderr logging. Caller frees. */
static char *capture_end(FILE *f, size_t *len)
{
    sb__log_configure(SB_LOG_INFO, SB__LOG_JSON, NULL);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Cuts the next line out of *p (NUL replaces its '\n') and advances *p past it. */
static char *next_line(char **p)
{
    char *line = *p, *nl = strchr(line, '\n');
    assert_non_null(nl);
    *nl = '\0';
    *p = nl + 1;
    return line;
}

static json_t *parse_line(const char *line)
{
    json_error_t err;
    json_t *j = json_loads(line, 0, &err);
    if (!j)
        fail_msg("line does not parse (%s): %s", err.text, line);
    assert_true(json_is_object(j));
    return j;
}

/* Parses the only line of `buf` as JSON; fails the test unless it is exactly one object. */
static json_t *one_json_line(const char *buf)
{
    assert_int_equal(count_lines(buf), 1);
    json_error_t err;
    json_t *j = json_loads(buf, 0, &err);
    if (!j)
        fail_msg("line does not parse (%s): %s", err.text, buf);
    assert_true(json_is_object(j));
    return j;
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* "2026-12-03T16:00:00.123Z" */
static void assert_timestamp(const char *t)
{
    assert_non_null(t);
    assert_int_equal(strlen(t), 24);
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; i < 24; i++) {
        if (shape[i] == 'd')
            assert_true(t[i] >= '0' && t[i] <= '9');
        else
            assert_int_equal(t[i], shape[i]);
    }
}

/* ---- JSON format ------------------------------------------------------------------------ */

static void test_json_basic(void **state)
{
    FILE *f = capture_start(SB_LOG_DEBUG, SB__LOG_JSON);
    sb__log_fields_t fl = {.event_id = "6f1c0c1e-4f7a-4a34-9d59-1d2b1f0e8a11",
                           .event_type = "DataSyncCompletedEvent",
                           .handler = "notify",
                           .trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                           .module = "notifier"};
    sb__log(SB_LOG_INFO, &fl, "handled %d records in %s", 42, "3ms");
    char *buf = capture_end(f, NULL);
    json_t *j = one_json_line(buf);
    assert_timestamp(jstr(j, "time"));
    assert_string_equal(jstr(j, "level"), "info");
    assert_string_equal(jstr(j, "msg"), "handled 42 records in 3ms");
    assert_string_equal(jstr(j, "event_id"), fl.event_id);
    assert_string_equal(jstr(j, "event_type"), "DataSyncCompletedEvent");
    assert_string_equal(jstr(j, "handler"), "notify");
    assert_string_equal(jstr(j, "trace_id"), fl.trace_id);
    assert_string_equal(jstr(j, "module"), "notifier");
    assert_int_equal(json_object_size(j), 8);
    /* "time" comes first: greppable and sortable lines. */
    assert_memory_equal(buf, "{\"time\":\"", 9);
    json_decref(j);
    free(buf);

    /* Without fields only time, level and msg; unknown members are omitted, not null. */
    f = capture_start(SB_LOG_DEBUG, SB__LOG_JSON);
    sb__log(SB_LOG_ERROR, NULL, "boom");
    sb__log_fields_t partial = {.handler = "h"};
    sb__log(SB_LOG_DEBUG, &partial, "dbg");
    buf = capture_end(f, NULL);
    assert_int_equal(count_lines(buf), 2);
    char *p = buf;
    j = parse_line(next_line(&p));
    assert_string_equal(jstr(j, "level"), "error");
    assert_int_equal(json_object_size(j), 3);
    json_decref(j);
    j = parse_line(next_line(&p));
    assert_string_equal(jstr(j, "level"), "debug");
    assert_string_equal(jstr(j, "handler"), "h");
    assert_int_equal(json_object_size(j), 4);
    json_decref(j);
    free(buf);
}

static void test_json_escaping(void **state)
{
    static const char nasty[] = "q\"uote b\\ack nl\n cr\r tab\t bs\b ff\f ctl\x01\x1f "
                                "del\x7f slash/ e\xc3\xa9 check\xe2\x9c\x93 emoji\xf0\x9f\x98\x80 "
                                "sep\xe2\x80\xa8";
    FILE *f = capture_start(SB_LOG_DEBUG, SB__LOG_JSON);
    sb__log_fields_t fl = {.event_type = nasty};
    sb__logkv(SB_LOG_WARN, &fl, nasty, "k\"ey\n", nasty, (const char *)NULL);
    char *buf = capture_end(f, NULL);
    /* Raw control characters never reach the output. */
    for (const char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20)
            assert_int_equal(*p, '\n');
    json_t *j = one_json_line(buf);
    assert_string_equal(jstr(j, "msg"), nasty);
    assert_string_equal(jstr(j, "event_type"), nasty);
    assert_string_equal(jstr(j, "k\"ey\n"), nasty);
    json_decref(j);
    free(buf);
}

static void test_invalid_utf8(void **state)
{
    /* lone continuation, truncated 2-byte, surrogate (ED A0 80), overlong (C0 AF), F5 lead,
     * above U+10FFFF (F4 90 80 80), truncated 3-byte at the end */
    static const char bad[] = "a\x80"
                              "b\xc3("
                              "c\xed\xa0\x80"
                              "d\xc0\xaf"
                              "e\xf5"
                              "f\xf4\x90\x80\x80"
                              "g\xe2\x82";
#define R "\xef\xbf\xbd"
    static const char want[] = "a" R "b" R "(c" R R R "d" R R "e" R "f" R R R R "g" R R;
#undef R
    FILE *f = capture_start(SB_LOG_DEBUG, SB__LOG_JSON);
    sb__logkv(SB_LOG_INFO, NULL, bad, "v", bad, (const char *)NULL);
    sb__log(SB_LOG_INFO, NULL, "%s", bad);
    char *buf = capture_end(f, NULL);
    assert_int_equal(count_lines(buf), 2);
    char *p = buf;
    json_t *j = parse_line(next_line(&p)); /* jansson itself rejects invalid UTF-8 */
    assert_string_equal(jstr(j, "msg"), want);
    assert_string_equal(jstr(j, "v"), want);
    json_decref(j);
    j = parse_line(next_line(&p));
    assert_string_equal(jstr(j, "msg"), want);
    json_decref(j);
    free(buf);
}

static void test_extra_fields(void **state)
{
    FILE *f = capture_start(SB_LOG_DEBUG, SB__LOG_JSON);
    sb__log_kv_t kv[] = {SB__KV_S("queue", "orders"), SB__KV_I("delivery_tag", 123456789012LL),
                         SB__KV_I("neg", -5),         SB__KV_S("nothing", NULL),
                         SB__KV_S("level", "spoof"),  SB__KV_S("msg", "spoof")};
    sb__log_fields(SB_LOG_INFO, NULL, kv, sizeof kv / sizeof kv[0], "acked %s", "ok");
    char *buf = capture_end(f, NULL);
    json_t *j = one_json_line(buf);
    assert_string_equal(jstr(j, "msg"), "acked ok");
    assert_string_equal(jstr(j, "level"), "info");
    assert_string_equal(jstr(j, "queue"), "orders");
    assert_true(json_is_integer(json_object_get(j, "delivery_tag")));
    assert_int_equal(json_integer_value(json_object_get(j, "delivery_tag")), 123456789012LL);
    assert_int_equal(json_integer_value(json_object_get(j, "neg")), -5);
    assert_true(json_is_null(json_object_get(j, "nothing")));
    /* Reserved names are renamed, never duplicated. */
    assert_string_equal(jstr(j, "x_level"), "spoof");
    assert_string_equal(jstr(j, "x_msg"), "spoof");
    json_decref(j);
    free(buf);
}

static void test_long_message(void **state)
{
    size_t n = 100000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    /* A multi-byte character across the cut must not be split into invalid UTF-8. */
    memcpy(big + 16383, "\xc3\xa9", 2);
    memcpy(big + 4094, "\xe2\x9c\x93", 3);
    FILE *f = capture_start(SB_LOG_DEBUG, SB__LOG_JSON);
    sb__log(SB_LOG_INFO, NULL, "%s", big);
    sb__logkv(SB_LOG_INFO, NULL, big, "v", big, (const char *)NULL);
    char *buf = capture_end(f, NULL);
    assert_int_equal(count_lines(buf), 2);
    char *p = buf;
    json_t *j = parse_line(next_line(&p));
    const char *m = jstr(j, "msg");
    assert_true(strlen(m) > 16000 && strlen(m) <= 16 * 1024 + 3);
    assert_string_equal(m + strlen(m) - 3, "\xe2\x80\xa6"); /* truncation mark */
    assert_null(strstr(m, "\xef\xbf\xbd"));                 /* no U+FFFD from the cut */
    json_decref(j);
    j = parse_line(next_line(&p));
    assert_true(strlen(jstr(j, "v")) <= 4 * 1024 + 3);
    assert_null(strstr(jstr(j, "v"), "\xef\xbf\xbd"));
    assert_null(strstr(jstr(j, "msg"), "\xef\xbf\xbd"));
    json_decref(j);
    free(buf);
    free(big);
}

/* ---- text format ------------------------------------------------------------------------ */

static void test_text_format(void **state)
{
    FILE *f = capture_start(SB_LOG_DEBUG, SB__LOG_TEXT);
    sb__log_fields_t fl = {.event_id = "e-1", .handler = "notify"};
    sb__log_kv_t kv[] = {SB__KV_S("queue", "orders"), SB__KV_S("reason", "two words"),
                         SB__KV_S("empty", ""), SB__KV_I("n", 7), SB__KV_S("q", "say \"hi\"")};
    sb__log_fields(SB_LOG_INFO, &fl, kv, 5, "hello\nworld");
    sb__log(SB_LOG_WARN, NULL, "warned");
    sb__log(SB_LOG_ERROR, NULL, "failed");
    sb__log(SB_LOG_DEBUG, NULL, "dbg");
    char *buf = capture_end(f, NULL);
    assert_int_equal(count_lines(buf), 4);
    char *p = buf;
    const char *want[] = {
        (" INFO  hello\\nworld event_id=e-1 handler=notify queue=orders reason=\"two words\" "
         "empty=\"\" n=7 q=\"say \\\"hi\\\"\""),
        " WARN  warned", " ERROR failed", " DEBUG dbg"};
    for (size_t i = 0; i < 4; i++) {
        char *line = next_line(&p);
        assert_true(strlen(line) > 24);
        assert_string_equal(line + 24, want[i]);
        line[24] = '\0';
        assert_timestamp(line); /* the first 24 characters are the time */
    }
    free(buf);
}

/* ---- threshold and names ---------------------------------------------------------------- */

static void test_threshold(void **state)
{
    FILE *f = capture_start(SB_LOG_WARN, SB__LOG_JSON);
    assert_false(sb__log_enabled(SB_LOG_INFO));
    assert_true(sb__log_enabled(SB_LOG_WARN));
    sb__log(SB_LOG_DEBUG, NULL, "d");
    sb__log(SB_LOG_INFO, NULL, "i");
    sb__logkv(SB_LOG_INFO, NULL, "i2", "k", "v", (const char *)NULL);
    sb__log(SB_LOG_WARN, NULL, "w");
    sb__log(SB_LOG_ERROR, NULL, "e");
    char *buf = capture_end(f, NULL);
    assert_int_equal(count_lines(buf), 2);
    assert_non_null(strstr(buf, "\"msg\":\"w\""));
    assert_non_null(strstr(buf, "\"msg\":\"e\""));
    assert_null(strstr(buf, "\"msg\":\"i"));
    free(buf);
}

static void test_level_names(void **state)
{
    assert_int_equal(sb__log_level_parse("debug"), SB_LOG_DEBUG);
    assert_int_equal(sb__log_level_parse("INFO"), SB_LOG_INFO);
    assert_int_equal(sb__log_level_parse("warn"), SB_LOG_WARN);
    assert_int_equal(sb__log_level_parse("Warning"), SB_LOG_WARN);
    assert_int_equal(sb__log_level_parse("error"), SB_LOG_ERROR);
    assert_int_equal(sb__log_level_parse("fatal"), SB_EINVAL);
    assert_int_equal(sb__log_level_parse(""), SB_EINVAL);
    assert_int_equal(sb__log_level_parse(NULL), SB_EINVAL);
    assert_string_equal(sb__log_level_name(SB_LOG_DEBUG), "debug");
    assert_string_equal(sb__log_level_name(SB_LOG_ERROR), "error");
    assert_string_equal(sb__log_level_name(17), "?");
    assert_string_equal(sb__log_level_name(-1), "?");
    assert_int_equal(sb__log_format_parse("json"), SB__LOG_JSON);
    assert_int_equal(sb__log_format_parse("TEXT"), SB__LOG_TEXT);
    assert_int_equal(sb__log_format_parse("xml"), SB_EINVAL);
    assert_int_equal(sb__log_format_parse(NULL), SB_EINVAL);
}

/* ---- secrets ---------------------------------------------------------------------------- */

static void redact_ok(const char *in, const char *want)
{
    char out[256];
    assert_int_equal(sb__log_redact_url(in, out, sizeof out), SB_EOK);
    assert_string_equal(out, want);
}

static void test_redact_url(void **state)
{
    redact_ok("amqp://guest:guest@localhost:5672/%2f", "amqp://guest:********@localhost:5672/%2f");
    redact_ok("redis://:hunter2@redis:6379/0", "redis://:********@redis:6379/0");
    redact_ok("amqps://user:p@ss@host/vh", "amqps://user:********@host/vh");
    redact_ok("amqp://user@host/", "amqp://user@host/");
    redact_ok("redis://localhost:6379", "redis://localhost:6379");
    redact_ok("http://host/path?u=a:b@c", "http://host/path?u=a:b@c");
    redact_ok("localhost:9092", "localhost:9092");
    redact_ok("amqp://u:@host", "amqp://u:@host");
    redact_ok("", "");

    char small[16];
    assert_int_equal(sb__log_redact_url("amqp://guest:topsecret@host", small, sizeof small),
                     SB_ERANGE);
    assert_true(strlen(small) < sizeof small);
    assert_null(strstr(small, "top"));
    assert_int_equal(sb__log_redact_url(NULL, small, sizeof small), SB_EINVAL);
    assert_int_equal(sb__log_redact_url("x", small, 0), SB_EINVAL);
}

static void test_url_passwords_masked_in_lines(void **state)
{
    FILE *f = capture_start(SB_LOG_DEBUG, SB__LOG_JSON);
    sb__log(SB_LOG_INFO, NULL, "connecting to amqp://guest:hunter22@rabbit:5672/ now");
    sb__logkv(SB_LOG_INFO, NULL, "x", "url", "redis://:pw-9876@r:6379", (const char *)NULL);
    char *buf = capture_end(f, NULL);
    assert_null(strstr(buf, "hunter22"));
    assert_null(strstr(buf, "pw-9876"));
    assert_non_null(strstr(buf, "amqp://guest:********@rabbit:5672/ now"));
    assert_non_null(strstr(buf, "redis://:********@r:6379"));
    free(buf);
}

static void test_registered_secrets(void **state)
{
    assert_int_equal(sb__log_add_secret("s3cr3t-token"), SB_EOK);
    assert_int_equal(sb__log_add_secret("s3cr3t-token"), SB_EOK); /* duplicate: ignored */
    assert_int_equal(sb__log_add_secret("pa\"ss\\word"), SB_EOK); /* escapes in JSON */
    assert_int_equal(sb__log_add_secret("abc"), SB_EOK);          /* too short: ignored */
    assert_int_equal(sb__log_add_secret(NULL), SB_EINVAL);

    for (int fmt = SB__LOG_JSON; fmt <= SB__LOG_TEXT; fmt++) {
        FILE *f = capture_start(SB_LOG_DEBUG, fmt);
        sb__log_fields_t fl = {.trace_id = "xs3cr3t-tokenx"};
        sb__log_kv_t kv[] = {SB__KV_S("password", "pa\"ss\\word"),
                             SB__KV_S("s3cr3t-token", "key is a secret too")};
        sb__log_fields(SB_LOG_INFO, &fl, kv, 2, "token=%s and abc and pa\"ss\\word",
                       "s3cr3t-tokens3cr3t-token");
        char *buf = capture_end(f, NULL);
        assert_null(strstr(buf, "s3cr3t"));
        assert_null(strstr(buf, "ss\\word"));
        assert_null(strstr(buf, "ss\\\\word"));
        assert_non_null(strstr(buf, "abc")); /* short values are not secrets */
        if (fmt == SB__LOG_JSON) {
            json_t *j = one_json_line(buf);
            assert_string_equal(jstr(j, "msg"), "token=**************** and abc and ********");
            assert_string_equal(jstr(j, "trace_id"), "x********x");
            assert_string_equal(jstr(j, "password"), "********");
            assert_string_equal(jstr(j, "********"), "key is a secret too");
            json_decref(j);
        }
        free(buf);
    }
    sb__log_clear_secrets();
    FILE *f = capture_start(SB_LOG_DEBUG, SB__LOG_JSON);
    sb__log(SB_LOG_INFO, NULL, "s3cr3t-token");
    char *buf = capture_end(f, NULL);
    assert_non_null(strstr(buf, "s3cr3t-token")); /* cleared */
    free(buf);
}

/* ---- allocation failure ----------------------------------------------------------------- */

static void *no_malloc(size_t n)
{
    return NULL;
}
static void *no_realloc(void *p, size_t n)
{
    return NULL;
}

static void test_oom(void **state)
{
    char big[3000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    FILE *f = capture_start(SB_LOG_DEBUG, SB__LOG_JSON);
    assert_int_equal(sb_set_allocator(no_malloc, no_realloc, free), SB_EOK);
    assert_int_equal(sb__log_add_secret("some-secret"), SB_ENOMEM);
    sb__log(SB_LOG_INFO, NULL, "short line still works");
    sb__log(SB_LOG_INFO, NULL, "%s", big); /* message buffer fails: kept truncated */
    sb__logkv(SB_LOG_WARN, NULL, "big", "v", big, (const char *)NULL); /* line buffer fails */
    assert_int_equal(sb_set_allocator(NULL, NULL, NULL), SB_EOK);
    char *buf = capture_end(f, NULL);
    assert_int_equal(count_lines(buf), 3);
    char *p = buf;
    json_t *j = parse_line(next_line(&p));
    assert_string_equal(jstr(j, "msg"), "short line still works");
    json_decref(j);
    j = parse_line(next_line(&p));
    const char *m = jstr(j, "msg");
    assert_true(strlen(m) > 400 && strlen(m) < 600);
    assert_string_equal(m + strlen(m) - 3, "\xe2\x80\xa6");
    json_decref(j);
    j = parse_line(next_line(&p));
    assert_string_equal(jstr(j, "level"), "warn");
    assert_string_equal(jstr(j, "msg"), "log line dropped: out of memory");
    json_decref(j);
    free(buf);
    sb__log_clear_secrets();
}

/* ---- concurrency ------------------------------------------------------------------------ */

#define THREADS 4
#define LINES   10000

static void *writer(void *arg)
{
    int id = (int)(intptr_t)arg;
    char pad[3000];
    memset(pad, 'a' + id, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    sb__log_fields_t fl = {.handler = "writer"};
    for (int i = 0; i < LINES; i++) {
        /* Every 50th line is longer than PIPE_BUF and the stack buffer. */
        sb__log_kv_t kv[] = {SB__KV_I("thread", id), SB__KV_I("i", i),
                             SB__KV_S("pad", i % 50 == 0 ? pad : "short")};
        sb__log_fields(SB_LOG_INFO, &fl, kv, 3, "line %d of thread %d", i, id);
    }
    return NULL;
}

static void test_threads_atomic_lines(void **state)
{
    FILE *f = capture_start(SB_LOG_DEBUG, SB__LOG_JSON);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, writer, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    size_t len;
    char *buf = capture_end(f, &len);
    assert_int_equal(count_lines(buf), THREADS * LINES);
    int next[THREADS] = {0};
    char *p = buf;
    for (size_t n = 0; n < THREADS * LINES; n++) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        json_error_t err;
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, &err);
        if (!j)
            fail_msg("line %zu does not parse: %s", n, err.text);
        json_int_t t = json_integer_value(json_object_get(j, "thread"));
        json_int_t i = json_integer_value(json_object_get(j, "i"));
        assert_true(t >= 0 && t < THREADS);
        assert_int_equal(i, next[t]); /* per-thread order preserved */
        next[t]++;
        json_decref(j);
        p = nl + 1;
    }
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_basic),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_extra_fields),
        cmocka_unit_test(test_long_message),
        cmocka_unit_test(test_text_format),
        cmocka_unit_test(test_threshold),
        cmocka_unit_test(test_level_names),
        cmocka_unit_test(test_redact_url),
        cmocka_unit_test(test_url_passwords_masked_in_lines),
        cmocka_unit_test(test_registered_secrets),
        cmocka_unit_test(test_oom),
        cmocka_unit_test(test_threads_atomic_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
