/* JSON Schema subset: every keyword both ways, the golden fixtures of the seed events
 * (tests/unit/fixtures/schema/<Event>/<case>.json with the exact expected failures in
 * <case>.expect, one "pointer<TAB>message" line each; empty means valid), references within
 * and across files, cycles, refusals at compile time, and an allocation-failure sweep. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "schema.h"

#define SCHEMAS  SB_SOURCE_DIR "/schemas"
#define FIXTURES SB_SOURCE_DIR "/tests/unit/fixtures/schema"

/* ---- helpers ------------------------------------------------------------------------- */

static sb__schema_set_t *g_set;

static int setup(void **state)
{
    return sb__schema_set_new(&g_set) == SB_EOK ? 0 : -1;
}

static int teardown(void **state)
{
    sb__schema_set_destroy(g_set);
    g_set = NULL;
    return 0;
}

static const sb__schema_t *compile(const char *text, const char *base_dir)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    if (!j)
        fail_msg("test schema is not JSON: %s: %s", je.text, text);
    const sb__schema_t *sc = NULL;
    char err[512] = "";
    int rc = sb__schema_compile_json(g_set, j, base_dir, &sc, err, sizeof err);
    json_decref(j);
    if (rc != SB_EOK)
        fail_msg("schema %s did not compile: %s", text, err);
    return sc;
}

static void compile_bad(const char *text, const char *base_dir, int want_rc,
                        const char *want_in_err)
{
    json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
    assert_non_null(j);
    const sb__schema_t *sc = (const sb__schema_t *)&sc;
    char err[512] = "";
    int rc = sb__schema_compile_json(g_set, j, base_dir, &sc, err, sizeof err);
    json_decref(j);
    if (rc != want_rc)
        fail_msg("schema %s: rc %d (%s), want %d", text, rc, err, want_rc);
    assert_null(sc);
    if (!strstr(err, want_in_err))
        fail_msg("schema %s: error \"%s\" lacks \"%s\"", text, err, want_in_err);
}

static void valid(const sb__schema_t *sc, const char *inst)
{
    json_t *j = json_loads(inst, JSON_DECODE_ANY, NULL);
    if (!j)
        fail_msg("test instance is not JSON: %s", inst);
    sb__schema_error_t errs[4];
    size_t n = 99;
    int rc = sb__schema_validate(sc, j, errs, 4, &n);
    json_decref(j);
    if (rc != SB_EOK)
        fail_msg("%s: want valid, got rc %d: %s: %s", inst, rc, n ? errs[0].pointer : "-",
                 n ? errs[0].message : "-");
    assert_int_equal(n, 0);
}

/* Invalid, and the first failure is at `ptr` with `msg` in its message. */
static void invalid(const sb__schema_t *sc, const char *inst, const char *ptr, const char *msg)
{
    json_t *j = json_loads(inst, JSON_DECODE_ANY, NULL);
    if (!j)
        fail_msg("test instance is not JSON: %s", inst);
    sb__schema_error_t errs[4];
    size_t n = 0;
    int rc = sb__schema_validate(sc, j, errs, 4, &n);
    json_decref(j);
    if (rc != SB_ESCHEMA || n == 0)
        fail_msg("%s: want invalid, got rc %d", inst, rc);
    if (strcmp(errs[0].pointer, ptr) || !strstr(errs[0].message, msg))
        fail_msg("%s: got \"%s\": %s; want \"%s\": ...%s...", inst, errs[0].pointer,
                 errs[0].message, ptr, msg);
}

static char tmpdir[64];

static void write_file(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup_tmp(void **state)
{
    strcpy(tmpdir, "/tmp/sb-schema-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    return setup(state);
}

static int teardown_tmp(void **state)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(tmpdir);
    return teardown(state);
}

/* ---- keywords ------------------------------------------------------------------------ */

static void test_type(void **state)
{
    const sb__schema_t *s = compile("{\"type\": \"string\"}", NULL);
    valid(s, "\"x\"");
    invalid(s, "1", "", "expected string, got integer 1");
    invalid(s, "null", "", "expected string, got null");

    s = compile("{\"type\": \"integer\"}", NULL);
    valid(s, "3");
    valid(s, "1.0");
    valid(s, "-0.0");
    valid(s, "1e300");
    invalid(s, "1.5", "", "expected integer, got number 1.5");
    invalid(s, "\"1\"", "", "expected integer, got string \"1\"");

    s = compile("{\"type\": \"number\"}", NULL);
    valid(s, "3");
    valid(s, "3.25");
    invalid(s, "true", "", "expected number, got boolean");

    s = compile("{\"type\": [\"object\", \"array\", \"null\"]}", NULL);
    valid(s, "{}");
    valid(s, "[]");
    valid(s, "null");
    invalid(s, "false", "", "expected object, array or null, got boolean");

    s = compile("{\"type\": \"boolean\"}", NULL);
    valid(s, "false");
    invalid(s, "0", "", "expected boolean");

    compile_bad("{\"type\": \"int\"}", NULL, SB_ESCHEMA, "unknown type \"int\"");
    compile_bad("{\"type\": []}", NULL, SB_ESCHEMA, "\"type\" must be");
    compile_bad("{\"type\": [1]}", NULL, SB_ESCHEMA, "unknown type");
}

static void test_required_properties(void **state)
{
    const sb__schema_t *s = compile("{\"required\": [\"a\", \"b\"],"
                                    " \"properties\": {\"a\": {\"type\": \"integer\"},"
                                    "                  \"c\": {\"type\": \"string\"}}}",
                                    NULL);
    valid(s, "{\"a\": 1, \"b\": null}");
    valid(s, "{\"a\": 1, \"b\": null, \"c\": \"x\", \"d\": []}");
    valid(s, "[1, 2]"); /* object keywords ignore other types */
    invalid(s, "{\"a\": 1}", "", "required property \"b\" is missing");
    invalid(s, "{\"a\": \"1\", \"b\": 0}", "/a", "expected integer");
    invalid(s, "{\"a\": 1, \"b\": 0, \"c\": 5}", "/c", "expected string");

    compile_bad("{\"required\": \"a\"}", NULL, SB_ESCHEMA, "array of strings");
    compile_bad("{\"required\": [1]}", NULL, SB_ESCHEMA, "array of strings");
    compile_bad("{\"properties\": []}", NULL, SB_ESCHEMA, "object of schemas");
    compile_bad("{\"properties\": {\"a\": 1}}", NULL, SB_ESCHEMA,
                "#/properties/a: a schema must be an object or a boolean");
}

static void test_additional_properties(void **state)
{
    const sb__schema_t *s =
        compile("{\"properties\": {\"a\": {}}, \"additionalProperties\": false}", NULL);
    valid(s, "{\"a\": 1}");
    invalid(s, "{\"a\": 1, \"b\": 2}", "/b", "property \"b\" is not allowed");

    s = compile("{\"properties\": {\"a\": {}}, \"additionalProperties\": {\"type\": \"integer\"}}",
                NULL);
    valid(s, "{\"a\": \"x\", \"b\": 2}");
    invalid(s, "{\"a\": \"x\", \"b\": \"2\"}", "/b", "expected integer");

    s = compile("{\"additionalProperties\": true}", NULL);
    valid(s, "{\"z\": 1}");
}

static void test_enum_const(void **state)
{
    const sb__schema_t *s = compile("{\"enum\": [\"red\", 1, null, {\"a\": [1, 2]}]}", NULL);
    valid(s, "\"red\"");
    valid(s, "1.0"); /* numbers compare by value */
    valid(s, "null");
    valid(s, "{\"a\": [1.0, 2]}");
    invalid(s, "\"blue\"", "", "\"blue\" is not one of \"red\", 1, null, an object");
    invalid(s, "{\"a\": [2, 1]}", "", "is not one of");
    invalid(s, "true", "", "is not one of");

    s = compile("{\"const\": \"DataSyncCompletedEvent\"}", NULL);
    valid(s, "\"DataSyncCompletedEvent\"");
    invalid(s, "\"DataSyncFailedEvent\"", "", "is not the constant \"DataSyncCompletedEvent\"");
    s = compile("{\"const\": {\"x\": 1, \"y\": [true]}}", NULL);
    valid(s, "{\"y\": [true], \"x\": 1}");
    invalid(s, "{\"y\": [true], \"x\": 1, \"z\": 0}", "", "is not the constant");
    s = compile("{\"const\": null}", NULL);
    valid(s, "null");
    invalid(s, "0", "", "is not the constant null");

    compile_bad("{\"enum\": 1}", NULL, SB_ESCHEMA, "\"enum\" must be an array");
}

static void test_pattern(void **state)
{
    /* POSIX ERE, unanchored as JSON Schema requires. */
    const sb__schema_t *s = compile("{\"pattern\": \"[0-9]{3}-[0-9]{4}\"}", NULL);
    valid(s, "\"call 555-1234 now\"");
    valid(s, "42"); /* string keywords ignore other types */
    invalid(s, "\"555-123\"", "", "\"555-123\" does not match the pattern \"[0-9]{3}-[0-9]{4}\"");

    s = compile("{\"pattern\": \"^[A-Z][a-z]+$\"}", NULL);
    valid(s, "\"Maria\"");
    invalid(s, "\"Maria \"", "", "does not match");

    compile_bad("{\"pattern\": \"(unclosed\"}", NULL, SB_ESCHEMA, "invalid pattern \"(unclosed\"");
    compile_bad("{\"pattern\": \"a{2,1}\"}", NULL, SB_ESCHEMA, "#/pattern: invalid pattern");
    compile_bad("{\"pattern\": 5}", NULL, SB_ESCHEMA, "\"pattern\" must be a string");

    /* What POSIX leaves undefined, or what would make regcomp explode, is refused. */
    compile_bad("{\"pattern\": \"a++\"}", NULL, SB_ESCHEMA, "consecutive repetition");
    compile_bad("{\"pattern\": \"a{2}*\"}", NULL, SB_ESCHEMA, "consecutive repetition");
    compile_bad("{\"pattern\": \"a{1,256}\"}", NULL, SB_ESCHEMA, "above 255");
    compile_bad("{\"pattern\": \"((a{1,100}){1,100})\"}", NULL, SB_ESCHEMA, "too complex");
    s = compile("{\"pattern\": \"^([[:alpha:]]{2,3}[]+*]?|x{0,})(-[0-9a-f]{4})+$\"}", NULL);
    valid(s, "\"ab+-00ff-1234\"");
    valid(s, "\"xxx-abcd\"");
    invalid(s, "\"abcd-00ff\"", "", "does not match");
}

static void test_lengths_code_points(void **state)
{
    const sb__schema_t *s = compile("{\"minLength\": 2, \"maxLength\": 3}", NULL);
    valid(s, "\"ab\"");
    valid(s, "\"\xc3\xb1\xc3\xb1\xc3\xb1\"");             /* ñññ: 6 bytes, 3 code points */
    valid(s, "\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\"");     /* two 4-byte emoji */
    valid(s, "\"\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\""); /* €€€ */
    invalid(s, "\"\xc3\xb1\"", "", "is shorter than 2 characters");
    invalid(s, "\"\xc3\xb1\xc3\xb1\xc3\xb1\xc3\xb1\"", "", "is longer than 3 characters (4)");
    invalid(s, "\"abcd\"", "", "is longer than 3 characters (4)");
    valid(s, "[1, 2, 3, 4]");

    s = compile("{\"minLength\": 1.0}", NULL);
    invalid(s, "\"\"", "", "\"\" is shorter than 1 character");
    compile_bad("{\"minLength\": -1}", NULL, SB_ESCHEMA, "non-negative integer");
    compile_bad("{\"maxLength\": 1.5}", NULL, SB_ESCHEMA, "non-negative integer");
}

static void test_numbers(void **state)
{
    const sb__schema_t *s = compile("{\"minimum\": 0, \"maximum\": 10.5}", NULL);
    valid(s, "0");
    valid(s, "10.5");
    valid(s, "\"-1\"");
    invalid(s, "-1", "", "-1 is less than the minimum 0");
    invalid(s, "-0.001", "", "is less than the minimum 0");
    invalid(s, "11", "", "11 is greater than the maximum 10.5");

    s = compile("{\"exclusiveMinimum\": 0, \"exclusiveMaximum\": 1}", NULL);
    valid(s, "0.5");
    invalid(s, "0", "", "0 is not greater than the exclusive minimum 0");
    invalid(s, "1.0", "", "is not less than the exclusive maximum 1");

    /* Exact comparison beyond 2^53, where doubles cannot tell the numbers apart. */
    s = compile("{\"minimum\": 9007199254740993}", NULL);
    valid(s, "9007199254740993");
    invalid(s, "9007199254740992", "", "is less than the minimum 9007199254740993");
    s = compile("{\"maximum\": 0.5}", NULL);
    valid(s, "0");
    invalid(s, "1", "", "greater than the maximum");
    s = compile("{\"minimum\": -9223372036854775808, \"maximum\": 9223372036854775807}", NULL);
    valid(s, "9223372036854775807");
    invalid(s, "1e19", "", "greater than the maximum");
    invalid(s, "-1e19", "", "less than the minimum");

    compile_bad("{\"minimum\": \"0\"}", NULL, SB_ESCHEMA, "must be a number");
    compile_bad("{\"exclusiveMinimum\": true}", NULL, SB_ESCHEMA, "draft 4");
}

static void test_items_allof(void **state)
{
    const sb__schema_t *s = compile("{\"items\": {\"type\": \"integer\", \"minimum\": 0}}", NULL);
    valid(s, "[]");
    valid(s, "[0, 1, 2]");
    invalid(s, "[0, 1, -2]", "/2", "-2 is less than the minimum 0");
    compile_bad("{\"items\": [{}]}", NULL, SB_ESCHEMA, "array form");

    s = compile("{\"allOf\": [{\"type\": \"string\"}, {\"minLength\": 2}, {\"maxLength\": 3}]}",
                NULL);
    valid(s, "\"abc\"");
    invalid(s, "\"a\"", "", "shorter than 2");
    invalid(s, "\"abcd\"", "", "longer than 3");
    invalid(s, "1", "", "expected string");
    compile_bad("{\"allOf\": []}", NULL, SB_ESCHEMA, "non-empty array");
    compile_bad("{\"allOf\": [{\"oneOf\": []}]}", NULL, SB_ESCHEMA,
                "#/allOf/0/oneOf: unsupported keyword \"oneOf\"");
}

static void test_boolean_schemas(void **state)
{
    const sb__schema_t *s = compile("true", NULL);
    valid(s, "{\"anything\": [1]}");
    s = compile("false", NULL);
    invalid(s, "1", "", "no value is allowed here");
    s = compile("{\"properties\": {\"gone\": false}}", NULL);
    valid(s, "{\"here\": 1}");
    invalid(s, "{\"gone\": 1}", "/gone", "no value is allowed here");
}

static void test_formats(void **state)
{
    const sb__schema_t *s = compile("{\"format\": \"email\"}", NULL);
    const char *good_email[] = {"a@b.co", "first.last+tag@sub.example.com", "o'brien@example.ie",
                                "u@xn--80ak6aa92e.com", "jos\303\251@correo.espa\303\261a.es"};
    for (size_t i = 0; i < sizeof good_email / sizeof *good_email; i++) {
        char buf[128];
        snprintf(buf, sizeof buf, "\"%s\"", good_email[i]);
        valid(s, buf);
    }
    const char *bad_email[] = {"not-an-email",    "a@b",
                               "@example.com",    "a@",
                               "a b@example.com", "a@exa mple.com",
                               "a@@example.com",  ".a@example.com",
                               "a.@example.com",  "a..b@example.com",
                               "a@example..com",  "a@-example.com",
                               "a@example.com-",  "a@.example.com",
                               "a@example.com.",  "a<b>@example.com",
                               "a@exam_ple.com"};
    for (size_t i = 0; i < sizeof bad_email / sizeof *bad_email; i++) {
        char buf[128];
        snprintf(buf, sizeof buf, "\"%s\"", bad_email[i]);
        invalid(s, buf, "", "is not a valid email address");
    }
    char longer[400];
    memset(longer, 'a', sizeof longer);
    memcpy(longer, "\"", 1);
    memcpy(longer + 66, "@example.com\"", 14); /* 65-byte local part */
    invalid(s, longer, "", "is not a valid email address");
    valid(s, "5"); /* formats apply to strings only */

    s = compile("{\"format\": \"date-time\"}", NULL);
    const char *good_dt[] = {"2026-12-01T10:00:00Z",
                             "2026-12-01T10:00:00.1234567Z",
                             "2026-12-01T10:00:00.123456789+05:30",
                             "2026-12-01t10:00:00z",
                             "2024-02-29T00:00:00-00:00",
                             "2000-02-29T23:59:59.9Z",
                             "1998-12-31T23:59:60Z",
                             "1998-12-31T15:59:60.123-08:00",
                             "1999-01-01T00:29:60+00:30"};
    for (size_t i = 0; i < sizeof good_dt / sizeof *good_dt; i++) {
        char buf[128];
        snprintf(buf, sizeof buf, "\"%s\"", good_dt[i]);
        valid(s, buf);
    }
    const char *bad_dt[] = {"2026-02-30T10:00:00Z",
                            "2025-02-29T10:00:00Z",
                            "1900-02-29T10:00:00Z",
                            "2026-04-31T10:00:00Z",
                            "2026-00-10T10:00:00Z",
                            "2026-12-00T10:00:00Z",
                            "2026-12-01T24:00:00Z",
                            "2026-12-01T10:60:00Z",
                            "2026-12-01T10:00:61Z",
                            "1998-12-31T23:58:60Z",
                            "1998-12-31T22:59:60Z",
                            "2026-12-01T10:00:00",
                            "2026-12-01T10:00:00.Z",
                            "2026-12-01T10:00:00.1234567890Z",
                            "2026-12-01 10:00:00Z",
                            "2026-12-01T10:00:00+0100",
                            "2026-12-01T10:00:00+24:00",
                            "2026-12-01T10:00:00+01:60",
                            "2026-12-01",
                            "10:00:00Z",
                            "2026-12-01T10:00:00ZZ",
                            "+2026-12-01T10:00:00Z",
                            "2026-1-01T10:00:00Z",
                            "\331\242026-12-01T10:00:00Z"};
    for (size_t i = 0; i < sizeof bad_dt / sizeof *bad_dt; i++) {
        char buf[128];
        snprintf(buf, sizeof buf, "\"%s\"", bad_dt[i]);
        invalid(s, buf, "", "is not a valid RFC 3339 date-time");
    }

    s = compile("{\"format\": \"uuid\"}", NULL);
    valid(s, "\"3f2504e0-4f89-41d3-9a0c-0305e82c3301\"");
    valid(s, "\"3F2504E0-4F89-41D3-9A0C-0305E82C3301\"");
    valid(s, "\"00000000-0000-0000-0000-000000000000\"");
    invalid(s, "\"3f2504e0-4f89-41d3-9a0c-0305e82c330\"", "", "is not a valid UUID");
    invalid(s, "\"3f2504e04f8941d39a0c0305e82c3301\"", "", "is not a valid UUID");
    invalid(s, "\"{3f2504e0-4f89-41d3-9a0c-0305e82c3301}\"", "", "is not a valid UUID");
    invalid(s, "\"3f2504e0-4f89-41d3-9a0c-0305e82c330g\"", "", "is not a valid UUID");
    invalid(s, "\"3f2504e0-4f89-41d3-9a0c_0305e82c3301\"", "", "is not a valid UUID");

    /* Other formats are annotations. */
    s = compile("{\"format\": \"hostname\"}", NULL);
    valid(s, "\"not a hostname!\"");
}

static void test_messages_and_pointers(void **state)
{
    const sb__schema_t *s =
        compile("{\"additionalProperties\": {\"items\": {\"type\": \"null\"}}}", NULL);
    invalid(s, "{\"a/b~c\": [null, null, null, 1]}", "/a~1b~0c/3", "expected null");
    invalid(s, "{\"\": [1]}", "//0", "expected null"); /* key "" then index 0 */

    /* Values in messages are escaped and cut. */
    s = compile("{\"type\": \"integer\"}", NULL);
    invalid(s, "\"line\\nbreak\\u0007\\\"q\\\"\"", "",
            "got string \"line\\nbreak\\u0007\\\"q\\\"\"");
    invalid(s, "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", "",
            "aaaaaaaa...\"");

    /* max_errs bounds collection; 0 only says whether it is valid. */
    s = compile("{\"required\": [\"a\", \"b\", \"c\"]}", NULL);
    json_t *j = json_object();
    sb__schema_error_t errs[2];
    size_t n = 99;
    assert_int_equal(sb__schema_validate(s, j, errs, 2, &n), SB_ESCHEMA);
    assert_int_equal(n, 2);
    assert_string_equal(errs[1].message, "required property \"b\" is missing");
    assert_int_equal(sb__schema_validate(s, j, NULL, 0, &n), SB_ESCHEMA);
    assert_int_equal(n, 0);
    assert_int_equal(sb__schema_validate(NULL, j, NULL, 0, &n), SB_EINVAL);
    assert_int_equal(sb__schema_validate(s, j, NULL, 1, &n), SB_EINVAL);
    json_decref(j);

    /* A very deep pointer is cut with "..." rather than overflowing. */
    s = compile("{\"$defs\": {\"n\": {\"items\": {\"$ref\": \"#/$defs/n\"}, \"type\": \"array\"}},"
                " \"$ref\": \"#/$defs/n\"}",
                NULL);
    char deep[2 * 300 + 8];
    memset(deep, '[', 300);
    deep[300] = '1';
    memset(deep + 301, ']', 300);
    deep[601] = '\0';
    j = json_loads(deep, 0, NULL);
    assert_non_null(j);
    assert_int_equal(sb__schema_validate(s, j, errs, 2, &n), SB_ESCHEMA);
    assert_int_equal(n, 1);
    assert_int_equal(strlen(errs[0].pointer), sizeof errs[0].pointer - 1);
    assert_string_equal(errs[0].pointer + sizeof errs[0].pointer - 4, "...");
    json_decref(j);
}

/* ---- references ---------------------------------------------------------------------- */

static void test_ref_within_file(void **state)
{
    const sb__schema_t *s =
        compile("{\"$defs\": {\"a/b\": {\"type\": \"integer\"}, \"t~ilde\": {\"type\": \"string\"},"
                "             \"with space\": {\"type\": \"null\"},"
                "             \"wrap\": {\"allOf\": [{\"type\": \"boolean\"}]}},"
                " \"properties\": {\"x\": {\"$ref\": \"#/$defs/a~1b\"},"
                "                  \"y\": {\"$ref\": \"#/$defs/t~0ilde\"},"
                "                  \"z\": {\"$ref\": \"#/$defs/with%20space\"},"
                "                  \"w\": {\"$ref\": \"#/$defs/wrap/allOf/0\"},"
                "                  \"v\": {\"$ref\": \"#/properties/x\", \"minimum\": 5}}}",
                NULL);
    valid(s, "{\"x\": 1, \"y\": \"s\", \"z\": null, \"w\": true, \"v\": 7}");
    invalid(s, "{\"x\": \"1\"}", "/x", "expected integer");
    invalid(s, "{\"y\": 1}", "/y", "expected string");
    invalid(s, "{\"z\": 1}", "/z", "expected null");
    invalid(s, "{\"w\": 1}", "/w", "expected boolean");
    invalid(s, "{\"v\": 2}", "/v", "less than the minimum 5"); /* $ref and siblings both apply */
    invalid(s, "{\"v\": 7.5}", "/v", "expected integer");

    compile_bad("{\"$ref\": \"#/$defs/nope\"}", NULL, SB_ESCHEMA, "points to nothing");
    compile_bad("{\"$ref\": \"#/$defs/x~2\", \"$defs\": {\"x~2\": {}}}", NULL, SB_ESCHEMA,
                "points to nothing");
    compile_bad("{\"$ref\": \"#anchor\", \"$defs\": {\"a\": {\"$anchor\": \"anchor\"}}}", NULL,
                SB_ESCHEMA, "only JSON pointer fragments");
    compile_bad("{\"$ref\": \"https://example.com/x.json\"}", NULL, SB_ESCHEMA,
                "only relative file references");
    compile_bad("{\"$ref\": \"/etc/x.json\"}", NULL, SB_ESCHEMA, "only relative file references");
    compile_bad("{\"$ref\": \"Other.schema.json\"}", NULL, SB_ESCHEMA, "needs a base directory");
    compile_bad("{\"$ref\": 1}", NULL, SB_ESCHEMA, "\"$ref\" must be a string");
    compile_bad("{\"$ref\": \"#/%zz\"}", NULL, SB_ESCHEMA, "malformed fragment");
}

static void test_ref_sibling_files(void **state)
{
    write_file("Base.schema.json",
               "{\"type\": \"object\", \"required\": [\"Id\"],"
               " \"properties\": {\"Id\": {\"$ref\": \"#/$defs/Guid\"}},"
               " \"$defs\": {\"Guid\": {\"type\": \"string\", \"format\": \"uuid\"}}}");
    write_file("Ev.schema.json", "{\"allOf\": [{\"$ref\": \"Base.schema.json\"},"
                                 "            {\"properties\": {\"Other\": {\"$ref\": "
                                 "\"./Base.schema.json#/$defs/Guid\"}}}]}");
    char path[256];
    snprintf(path, sizeof path, "%s/Ev.schema.json", tmpdir);
    const sb__schema_t *ev = NULL, *again = NULL, *base = NULL;
    char err[512] = "";
    assert_int_equal(sb__schema_load(g_set, path, &ev, err, sizeof err), SB_EOK);
    valid(ev, "{\"Id\": \"3f2504e0-4f89-41d3-9a0c-0305e82c3301\"}");
    invalid(ev, "{}", "", "required property \"Id\" is missing");
    invalid(ev, "{\"Id\": \"x\"}", "/Id", "not a valid UUID");
    invalid(ev, "{\"Id\": \"3f2504e0-4f89-41d3-9a0c-0305e82c3301\", \"Other\": 1}", "/Other",
            "expected string");

    /* Cached by canonical path: same schema through another spelling. */
    char other[300];
    snprintf(other, sizeof other, "%s/../%s/Ev.schema.json", tmpdir, strrchr(tmpdir, '/') + 1);
    assert_int_equal(sb__schema_load(g_set, other, &again, err, sizeof err), SB_EOK);
    assert_ptr_equal(ev, again);
    snprintf(path, sizeof path, "%s/Base.schema.json", tmpdir);
    assert_int_equal(sb__schema_load(g_set, path, &base, err, sizeof err), SB_EOK);
    valid(base, "{\"Id\": \"3f2504e0-4f89-41d3-9a0c-0305e82c3301\"}");

    /* An inline schema resolves files against base_dir. */
    const sb__schema_t *inl = compile("{\"$ref\": \"Base.schema.json#/$defs/Guid\"}", tmpdir);
    invalid(inl, "\"nope\"", "", "not a valid UUID");

    /* Broken references name the referring file and location. */
    write_file("Broken.schema.json",
               "{\"properties\": {\"a\": {\"$ref\": \"Missing.schema.json\"}}}");
    snprintf(path, sizeof path, "%s/Broken.schema.json", tmpdir);
    const sb__schema_t *broken = (const sb__schema_t *)&broken;
    assert_int_equal(sb__schema_load(g_set, path, &broken, err, sizeof err), SB_EIO);
    assert_null(broken);
    assert_non_null(
        strstr(err, "Broken.schema.json#/properties/a/$ref: $ref \"Missing.schema.json\""));
    assert_non_null(strstr(err, "No such file"));

    write_file("NotJson.schema.json", "{\"type\": ");
    write_file("RefsNotJson.schema.json", "{\"$ref\": \"NotJson.schema.json\"}");
    snprintf(path, sizeof path, "%s/RefsNotJson.schema.json", tmpdir);
    assert_int_equal(sb__schema_load(g_set, path, &broken, err, sizeof err), SB_EPARSE);
    snprintf(path, sizeof path, "%s/NotJson.schema.json", tmpdir);
    assert_int_equal(sb__schema_load(g_set, path, &broken, err, sizeof err), SB_EPARSE);
    assert_non_null(strstr(err, "line 1"));
    write_file("Dup.schema.json", "{\"type\": \"string\", \"type\": \"integer\"}");
    snprintf(path, sizeof path, "%s/Dup.schema.json", tmpdir);
    assert_int_equal(sb__schema_load(g_set, path, &broken, err, sizeof err), SB_EPARSE);
    assert_non_null(strstr(err, "duplicate"));
    assert_int_equal(sb__schema_load(g_set, "/nonexistent/x.json", &broken, err, sizeof err),
                     SB_EIO);

    /* A failed load leaves the set as it was: earlier schemas still work. */
    write_file("Bad.schema.json",
               "{\"allOf\": [{\"$ref\": \"Base.schema.json\"}, {\"anyOf\": []}]}");
    snprintf(path, sizeof path, "%s/Bad.schema.json", tmpdir);
    assert_int_equal(sb__schema_load(g_set, path, &broken, err, sizeof err), SB_ESCHEMA);
    assert_non_null(strstr(err, "Bad.schema.json#/allOf/1/anyOf: unsupported keyword \"anyOf\""));
    valid(ev, "{\"Id\": \"3f2504e0-4f89-41d3-9a0c-0305e82c3301\"}");
    invalid(ev, "{\"Id\": 1}", "/Id", "expected string");
}

static void test_cycles(void **state)
{
    /* Recursion that descends into the instance is fine on finite input. */
    const sb__schema_t *s = compile(
        "{\"$defs\": {\"node\": {\"type\": \"object\", \"required\": [\"v\"],"
        "  \"properties\": {\"v\": {\"type\": \"integer\"}, \"next\": {\"$ref\": \"#/$defs/node\"},"
        "                  \"kids\": {\"items\": {\"$ref\": \"#\"}}}}},"
        " \"$ref\": \"#/$defs/node\"}",
        NULL);
    valid(s, "{\"v\": 1, \"next\": {\"v\": 2, \"next\": {\"v\": 3}}}");
    valid(s, "{\"v\": 1, \"kids\": [{\"v\": 2, \"kids\": [{\"v\": 3}]}]}");
    invalid(s, "{\"v\": 1, \"next\": {\"v\": 2, \"next\": {\"w\": 3}}}", "/next/next",
            "required property \"v\" is missing");
    invalid(s, "{\"v\": 1, \"kids\": [{\"v\": 2, \"kids\": [{\"v\": \"3\"}]}]}", "/kids/0/kids/0/v",
            "expected integer");

    /* Cycles that never reach instance data would loop: refused. */
    compile_bad("{\"$ref\": \"#\"}", NULL, SB_ESCHEMA, "cycle");
    compile_bad("{\"$defs\": {\"a\": {\"$ref\": \"#/$defs/b\"}, \"b\": {\"$ref\": \"#/$defs/a\"}}}",
                NULL, SB_ESCHEMA, "cycle");
    compile_bad("{\"allOf\": [{\"allOf\": [{\"$ref\": \"#\"}]}]}", NULL, SB_ESCHEMA, "cycle");

    /* Across files: A and B refer to each other through properties. */
    write_file("A.schema.json",
               "{\"type\": \"object\", \"properties\": {\"b\": {\"$ref\": \"B.schema.json\"}}}");
    write_file("B.schema.json",
               "{\"type\": \"object\", \"properties\": {\"a\": {\"$ref\": \"A.schema.json\"}}}");
    char path[256], err[512] = "";
    snprintf(path, sizeof path, "%s/A.schema.json", tmpdir);
    const sb__schema_t *a = NULL;
    assert_int_equal(sb__schema_load(g_set, path, &a, err, sizeof err), SB_EOK);
    valid(a, "{\"b\": {\"a\": {\"b\": {}}}}");
    invalid(a, "{\"b\": {\"a\": {\"b\": 1}}}", "/b/a/b", "expected object");
    write_file("C.schema.json", "{\"$ref\": \"D.schema.json\"}");
    write_file("D.schema.json", "{\"allOf\": [{\"$ref\": \"C.schema.json\"}]}");
    snprintf(path, sizeof path, "%s/C.schema.json", tmpdir);
    assert_int_equal(sb__schema_load(g_set, path, &a, err, sizeof err), SB_ESCHEMA);
    assert_non_null(strstr(err, "cycle"));

    /* A long chain of references is refused rather than exhausting the stack. */
    char big[40000];
    size_t o = (size_t)snprintf(big, sizeof big, "{\"$ref\": \"#/$defs/d0\", \"$defs\": {");
    for (int i = 0; i < 400; i++)
        o += (size_t)snprintf(big + o, sizeof big - o, "%s\"d%d\": {\"$ref\": \"#/$defs/d%d\"}",
                              i ? ", " : "", i, i + 1);
    snprintf(big + o, sizeof big - o, ", \"d400\": {}}}");
    compile_bad(big, NULL, SB_ESCHEMA, "deeper than");
}

static void test_refusals(void **state)
{
    static const char *unsupported[] = {"oneOf",
                                        "anyOf",
                                        "not",
                                        "if",
                                        "then",
                                        "else",
                                        "patternProperties",
                                        "minItems",
                                        "maxItems",
                                        "uniqueItems",
                                        "prefixItems",
                                        "contains",
                                        "unevaluatedProperties",
                                        "dependentRequired",
                                        "propertyNames",
                                        "multipleOf",
                                        "minProperties",
                                        "$dynamicRef",
                                        "dependencies",
                                        "madeUpKeyword"};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++) {
        char schema[200], want[200];
        snprintf(schema, sizeof schema,
                 "{\"properties\": {\"x\": {\"type\": \"string\", \"%s\": {}}}}", unsupported[i]);
        snprintf(want, sizeof want, "#/properties/x/%s: unsupported keyword \"%s\"", unsupported[i],
                 unsupported[i]);
        compile_bad(schema, NULL, SB_ESCHEMA, want);
    }
    /* Even in a definition nothing refers to. */
    compile_bad("{\"$defs\": {\"unused\": {\"not\": {}}}}", NULL, SB_ESCHEMA,
                "#/$defs/unused/not: unsupported keyword \"not\"");
    compile_bad("5", NULL, SB_ESCHEMA, "a schema must be an object or a boolean");

    /* Annotations and x- extensions are accepted. */
    const sb__schema_t *s = compile(
        "{\"$schema\": \"https://json-schema.org/draft/2020-12/schema\", \"$id\": \"urn:x\","
        " \"title\": \"t\", \"description\": \"d\", \"examples\": [1], \"$comment\": \"c\","
        " \"default\": 0, \"deprecated\": false, \"readOnly\": true, \"writeOnly\": false,"
        " \"x-owner\": \"team\", \"format\": \"ipv4\", \"type\": \"integer\"}",
        NULL);
    valid(s, "1");
    invalid(s, "\"1\"", "", "expected integer");
}

/* ---- golden fixtures ----------------------------------------------------------------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int fixture_event(const char *event)
{
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/%s.schema.json", SCHEMAS, event);
    const sb__schema_t *sc = NULL;
    if (sb__schema_load(g_set, path, &sc, err, sizeof err) != SB_EOK)
        fail_msg("%s: %s", path, err);
    snprintf(path, sizeof path, "%s/%s", FIXTURES, event);
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    assert_true(n > 0);
    int valid_n = 0, invalid_n = 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        size_t len = strlen(name);
        if (len > 5 && !strcmp(name + len - 5, ".json")) {
            char jpath[1024], epath[1024];
            snprintf(jpath, sizeof jpath, "%s/%s", path, name);
            snprintf(epath, sizeof epath, "%s/%.*s.expect", path, (int)(len - 5), name);
            json_error_t je;
            json_t *inst = json_load_file(jpath, JSON_DECODE_ANY, &je);
            if (!inst)
                fail_msg("%s: %s", jpath, je.text);
            sb__schema_error_t errs[16];
            size_t ne = 0;
            int rc = sb__schema_validate(sc, inst, errs, 16, &ne);
            json_decref(inst);
            char got[4096] = "";
            size_t o = 0;
            for (size_t k = 0; k < ne; k++)
                o += (size_t)snprintf(got + o, sizeof got - o, "%s\t%s\n", errs[k].pointer,
                                      errs[k].message);
            const char *want = slurp(epath);
            if (!want)
                fail_msg("%s: missing", epath);
            if (strcmp(got, want))
                fail_msg("%s:\n--- got ---\n%s--- want ---\n%s", jpath, got, want);
            assert_int_equal(rc, want[0] ? SB_ESCHEMA : SB_EOK);
            if (want[0])
                invalid_n++;
            else
                valid_n++;
        }
        free(names[i]);
    }
    free(names);
    if (valid_n < 1 || invalid_n < 3)
        fail_msg("%s: %d valid and %d invalid fixtures; want >= 1 and >= 3", event, valid_n,
                 invalid_n);
    return valid_n + invalid_n;
}

static void test_golden_fixtures(void **state)
{
    static const char *events[] = {"DataSyncCompletedEvent", "DataSyncFailedEvent",
                                   "ETLJobStartedEvent", "ETLJobCompletedEvent", "CustomerData"};
    for (size_t i = 0; i < sizeof events / sizeof *events; i++)
        fixture_event(events[i]);
    /* Every shipped schema compiles, including the base. */
    const sb__schema_t *sc;
    char err[512] = "";
    assert_int_equal(
        sb__schema_load(g_set, SCHEMAS "/IntegrationEvent.schema.json", &sc, err, sizeof err),
        SB_EOK);
}

/* ---- allocation ---------------------------------------------------------------------- */

static long fail_at, n_calls, live;

static void *sweep_malloc(size_t n)
{
    if (++n_calls == fail_at)
        return NULL;
    void *p = malloc(n);
    if (p)
        live++;
    return p;
}

static void *sweep_realloc(void *p, size_t n)
{
    if (++n_calls == fail_at)
        return NULL;
    void *q = realloc(p, n);
    if (q && !p)
        live++;
    return q;
}

static void sweep_free(void *p)
{
    if (p)
        live--;
    free(p);
}

/* Fails allocation N for every N a clean load makes, then checks the clean load. Each run
 * must end in SB_ENOMEM and leak nothing. jansson 2.14 does not always report its own
 * allocation failures (some come back as syntax errors, a failed growth of its lexer
 * buffer silently drops a character); the loader compares the allocator's failure count
 * around the parse, so none of those may show here. */
static void test_alloc_failure_sweep(void **state)
{
    long total = -1, n_nomem = 0, n_parse = 0, n_swallowed = 0;
    for (fail_at = 1; total < 0 || fail_at <= total + 1; fail_at++) {
        n_calls = 0;
        live = 0;
        if (total < 0)
            fail_at = -1; /* first pass: count the allocations of a clean load */
        assert_int_equal(sb_set_allocator(sweep_malloc, sweep_realloc, sweep_free), SB_EOK);
        sb__schema_set_t *set = NULL;
        const sb__schema_t *sc = NULL;
        char err[512] = "";
        int rc = sb__schema_set_new(&set);
        if (rc == SB_EOK)
            rc = sb__schema_load(set, SCHEMAS "/DataSyncCompletedEvent.schema.json", &sc, err,
                                 sizeof err);
        long calls = n_calls;
        if (rc == SB_EOK && (fail_at < 0 || fail_at > calls)) {
            /* Nothing failed. The valid path allocates nothing. */
            long keep = fail_at;
            fail_at = -1;
            json_t *ev = json_load_file(
                FIXTURES "/DataSyncCompletedEvent/valid-7-digit-fraction.json", 0, NULL);
            assert_non_null(ev);
            long before = n_calls;
            size_t ne = 1;
            assert_int_equal(sb__schema_validate(sc, ev, NULL, 0, &ne), SB_EOK);
            assert_int_equal(n_calls, before);
            json_decref(ev);
            fail_at = keep;
        } else if (rc == SB_EOK) {
            n_swallowed++;
        } else {
            if (rc == SB_EPARSE)
                n_parse++;
            else if (rc == SB_ENOMEM)
                n_nomem++;
            else
                fail_msg("allocation %ld failed: rc %d (%s)", fail_at, rc, err);
            assert_null(sc);
            assert_true(set == NULL || err[0] != '\0'); /* set_new has no error text */
        }
        sb__schema_set_destroy(set);
        assert_int_equal(sb_set_allocator(NULL, NULL, NULL), SB_EOK);
        if (live != 0)
            fail_msg("allocation %ld failed: %ld blocks leaked", fail_at, live);
        if (total < 0) {
            assert_int_equal(rc, SB_EOK);
            total = calls;
            fail_at = 0;
        }
    }
    assert_true(total > 50); /* the sweep really went through the loader */
    print_message("schema load: %ld allocation points; %ld SB_ENOMEM, %ld misreported by "
                  "jansson as syntax errors, %ld swallowed by jansson\n",
                  total, n_nomem, n_parse, n_swallowed);
    assert_int_equal(n_parse, 0);
    assert_int_equal(n_swallowed, 0);
    assert_int_equal(n_nomem, total);
}

/* ---- the command, in process (the ctest test_validate_cli runs the real binary) ----- */

static void test_cmd_validate(void **state)
{
    char *ok[] = {"--schema", SCHEMAS "/DataSyncCompletedEvent.schema.json",
                  FIXTURES "/DataSyncCompletedEvent/valid-7-digit-fraction.json"};
    assert_int_equal(sb__cmd_validate(3, ok), 0);
    char *bad[] = {"--schema=" SCHEMAS "/DataSyncCompletedEvent.schema.json",
                   FIXTURES "/DataSyncCompletedEvent/valid-7-digit-fraction.json",
                   FIXTURES "/DataSyncCompletedEvent/invalid-negative-records.json"};
    assert_int_equal(sb__cmd_validate(3, bad), 1);
    char *notjson[] = {"-s", SCHEMAS "/CustomerData.schema.json", FIXTURES "/not-json.txt"};
    assert_int_equal(sb__cmd_validate(3, notjson), 1);
    char *missing[] = {"-s", SCHEMAS "/CustomerData.schema.json", FIXTURES "/nope.json"};
    assert_int_equal(sb__cmd_validate(3, missing), 1);
    char *noschema[] = {FIXTURES "/CustomerData/valid.json"};
    assert_int_equal(sb__cmd_validate(1, noschema), 64);
    char *noevent[] = {"--schema", SCHEMAS "/CustomerData.schema.json"};
    assert_int_equal(sb__cmd_validate(2, noevent), 64);
    char *dangling[] = {"--schema"};
    assert_int_equal(sb__cmd_validate(1, dangling), 64);
    char *unknown[] = {"--frobnicate", "x"};
    assert_int_equal(sb__cmd_validate(2, unknown), 64);
    char *badschema[] = {"--schema", FIXTURES "/not-json.txt", FIXTURES "/CustomerData/valid.json"};
    assert_int_equal(sb__cmd_validate(3, badschema), 78);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_required_properties, setup, teardown),
        cmocka_unit_test_setup_teardown(test_additional_properties, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enum_const, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pattern, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lengths_code_points, setup, teardown),
        cmocka_unit_test_setup_teardown(test_numbers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_items_allof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_boolean_schemas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_formats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_messages_and_pointers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ref_within_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ref_sibling_files, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_cycles, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_golden_fixtures, setup, teardown),
        cmocka_unit_test(test_alloc_failure_sweep),
        cmocka_unit_test(test_cmd_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
