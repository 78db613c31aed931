/* The configuration loader: YAML and JSON input, the property table's checks with their
 * file:line:key messages, environment overrides, ${VAR} substitution, *_file secrets,
 * masking, handlers, the generated reference, and an allocation-failure sweep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "config.h"

#ifndef SB_SOURCE_DIR
#error "SB_SOURCE_DIR must name the source tree"
#endif
#define FIXTURE(name) SB_SOURCE_DIR "/tests/unit/fixtures/config/" name

/* ---- helpers ----------------------------------------------------------------------------- */

static sb__config_t *load_ok(const char *yaml)
{
    char err[1024] = "";
    sb__config_t *cfg = NULL;
    int rc = sb__config_load_buffer(yaml, strlen(yaml), "cfg.yaml", &cfg, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("load failed (%d): %s\n--- input ---\n%s", rc, err, yaml);
    assert_non_null(cfg);
    return cfg;
}

/* Loading must fail with SB_ECONFIG and exactly this message. */
static void load_err(const char *yaml, const char *want)
{
    char err[1024] = "";
    sb__config_t *cfg = (sb__config_t *)0x1;
    int rc = sb__config_load_buffer(yaml, strlen(yaml), "cfg.yaml", &cfg, err, sizeof err);
    if (rc != SB_ECONFIG || strcmp(err, want) != 0)
        fail_msg("rc %d, error\n  \"%s\"\nwanted\n  \"%s\"\n--- input ---\n%s", rc, err, want,
                 yaml);
    assert_null(cfg);
}

static char *dump_to_string(const sb__config_t *cfg)
{
    /* static: gcc's -Wdangling-pointer mistakes the result for a pointer to a local */
    static char *buf;
    static size_t len;
    buf = NULL;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    sb__config_dump(cfg, f);
    fclose(f);
    return buf; /* free() */
}

static char temp_names[8][64];
static int temp_count;

static char *write_temp(const char *content)
{
    assert_true(temp_count < 8);
    char *name = temp_names[temp_count++];
    snprintf(name, sizeof temp_names[0], "/tmp/sb_test_config_XXXXXX");
    int fd = mkstemp(name);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    close(fd);
    return name;
}

/* ---- defaults, input forms ------------------------------------------------------------ */

static void test_defaults(void **state)
{
    (void)state;
    sb__config_t *cfg = NULL;
    char err[256] = "";
    assert_int_equal(sb__config_load(NULL, &cfg, err, sizeof err), SB_EOK);
    assert_string_equal(sb__config_source(cfg), "<defaults>");
    assert_string_equal(sb__config_str(cfg, "service.name"), "switchboard");
    assert_int_equal(sb__config_duration_ms(cfg, "service.shutdown_timeout"), 30000);
    assert_string_equal(sb__config_str(cfg, "log.level"), "info");
    assert_string_equal(sb__config_str(cfg, "transport.kind"), "memory");
    assert_string_equal(sb__config_str(cfg, "transport.kafka.brokers"), "embedded");
    assert_int_equal(sb__config_int(cfg, "transport.kafka.max_inflight"), 1000);
    assert_string_equal(sb__config_str(cfg, "transport.amqp.url"),
                        "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_false(sb__config_bool(cfg, "transport.amqp.single_active_consumer"));
    assert_true(sb__config_bool(cfg, "transport.amqp.declare"));
    assert_int_equal(sb__config_size(cfg, "intake.max_message_size"), 1 << 20);
    assert_int_equal(sb__config_duration_ms(cfg, "idempotency.redis.ttl"), 7 * 86400000ull);
    assert_string_equal(sb__config_str(cfg, "admin.token"), "");
    assert_int_equal(json_array_size(sb__config_json(cfg, "handlers")), 0);
    assert_int_equal(json_object_size(sb__config_json(cfg, "transport.kafka.properties")), 0);
    /* Every key of the table outside lists has a value. */
    size_t n;
    const sb__cfg_prop_t *t = sb__cfg_props(&n);
    for (size_t i = 0; i < n; i++) {
        if (strchr(t[i].path, '['))
            continue;
        if (!sb__config_has(cfg, t[i].path))
            fail_msg("no default for %s", t[i].path);
    }
    sb__config_destroy(cfg);
    sb__config_destroy(NULL);
}

static void test_empty_inputs(void **state)
{
    (void)state;
    const char *inputs[] = {"", "\n", "# only a comment\n", "---\n", "--- \n...\n", "{}"};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        sb__config_t *cfg = load_ok(inputs[i]);
        assert_string_equal(sb__config_str(cfg, "service.name"), "switchboard");
        sb__config_destroy(cfg);
    }
    /* Empty sections and values keep the defaults. */
    sb__config_t *cfg = load_ok("transport:\nlog:\n  level:\nhandlers:\n");
    assert_string_equal(sb__config_str(cfg, "log.level"), "info");
    sb__config_destroy(cfg);
}

static void test_json_input(void **state)
{
    (void)state;
    char err[512] = "";
    sb__config_t *cfg = NULL;
    int rc = sb__config_load(FIXTURE("config.json"), &cfg, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("%s", err);
    assert_string_equal(sb__config_str(cfg, "service.name"), "from-json");
    assert_int_equal(sb__config_duration_ms(cfg, "service.shutdown_timeout"), 5000);
    assert_int_equal(sb__config_int(cfg, "transport.amqp.prefetch"), 100);
    assert_string_equal(sb__config_str(cfg, "transport.amqp.queues[1]"), "B");
    assert_string_equal(sb__config_str(cfg, "handlers[0].name"), "h");
    assert_int_equal(sb__config_int(cfg, "handlers[0].config.n"), 1);
    sb__config_destroy(cfg);
    /* Errors in JSON input have lines too. */
    load_err("{\n  \"log\": {\n    \"level\": \"loud\"\n  }\n}",
             "cfg.yaml:3: log.level: invalid value \"loud\" (expected one of: debug, info, "
             "warn, error)");
}

static void test_full_fixture(void **state)
{
    (void)state;
    char err[512] = "";
    sb__config_t *cfg = NULL;
    int rc = sb__config_load(FIXTURE("full.yaml"), &cfg, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("%s", err);
    assert_int_equal(sb__config_duration_ms(cfg, "service.shutdown_timeout"), 45000);
    assert_string_equal(sb__config_str(cfg, "transport.kafka.topics[1]"), "etl-events");
    assert_int_equal(sb__config_int(cfg, "transport.kafka.max_inflight"), 5000);
    /* Map keys with dots are matched whole; librdkafka values are strings. */
    assert_string_equal(sb__config_str(cfg, "transport.kafka.properties.sasl.mechanism"),
                        "SCRAM-SHA-512");
    assert_string_equal(sb__config_str(cfg, "transport.kafka.properties.session.timeout.ms"),
                        "6000");
    assert_int_equal(sb__config_size(cfg, "intake.max_message_size"), 256 * 1024);
    assert_string_equal(sb__config_str(cfg, "schemas.bindings.ETLJob.#"),
                        "ETLJobStartedEvent.schema.json");
    assert_int_equal(sb__config_duration_ms(cfg, "retry.base_delay"), 250);
    assert_int_equal(sb__config_duration_ms(cfg, "retry.max_delay"), 300000);
    sb__config_destroy(cfg);
}

/* ---- the table's checks ---------------------------------------------------------------- */

static void test_unknown_keys(void **state)
{
    (void)state;
    load_err("transport:\n  kafka:\n    brokerz: localhost:9092\n",
             "cfg.yaml:3: transport.kafka.brokerz: unknown key (did you mean \"brokers\"?)");
    load_err("service:\n  name: x\nlogg:\n  level: info\n",
             "cfg.yaml:3: logg: unknown key (did you mean \"log\"?)");
    load_err("zzzzzz: 1\n", "cfg.yaml:1: zzzzzz: unknown key");
    /* A key from deeper in the section. */
    load_err("brokers: x\n",
             "cfg.yaml:1: brokers: unknown key (did you mean \"transport.kafka.brokers\"?)");
    /* Dotted keys are not expanded. */
    load_err("transport.kafka.brokers: x\n",
             "cfg.yaml:1: transport.kafka.brokers: unknown key (dotted keys are not expanded: "
             "nest the keys)");
}

static void test_wrong_types(void **state)
{
    (void)state;
    load_err("service: production\n", "cfg.yaml:1: service: expected a mapping, got a scalar");
    load_err("service:\n  name: [a, b]\n",
             "cfg.yaml:2: service.name: expected a string, got a sequence");
    load_err("retry:\n  max_attempts: {a: 1}\n",
             "cfg.yaml:2: retry.max_attempts: expected an int, got a mapping");
    load_err("retry:\n  max_attempts: many\n",
             "cfg.yaml:2: retry.max_attempts: expected an integer, got \"many\"");
    load_err("retry:\n  jitter: maybe\n",
             "cfg.yaml:2: retry.jitter: expected true or false, got \"maybe\"");
    load_err("transport:\n  kafka:\n    topics: {a: b}\n",
             "cfg.yaml:3: transport.kafka.topics: expected a sequence of strings, got a "
             "mapping");
    load_err("transport:\n  kafka:\n    topics:\n      - a\n      - [b]\n",
             "cfg.yaml:5: transport.kafka.topics[1]: expected a string, got a sequence");
    load_err("transport:\n  kafka:\n    properties:\n      acks: [1]\n",
             "cfg.yaml:4: transport.kafka.properties.acks: expected a string, got a sequence");
    load_err("handlers: {name: x}\n",
             "cfg.yaml:1: handlers: expected a sequence of mappings, got a mapping");
    load_err("- a\n- b\n", "cfg.yaml:1: the top level must be a mapping of keys");
    load_err("just text\n", "cfg.yaml:1: the top level must be a mapping of keys");
    /* Quoted and plain scalars are parsed by the key's type alike. */
    sb__config_t *cfg = load_ok("retry:\n  max_attempts: \"7\"\n  jitter: 'off'\nservice:\n"
                                "  name: 0123\n");
    assert_int_equal(sb__config_int(cfg, "retry.max_attempts"), 7);
    assert_false(sb__config_bool(cfg, "retry.jitter"));
    assert_string_equal(sb__config_str(cfg, "service.name"), "0123");
    sb__config_destroy(cfg);
}

static void test_bad_values(void **state)
{
    (void)state;
    load_err("service:\n  name: x\n  shutdown_timeout: 1.5s\n",
             "cfg.yaml:3: service.shutdown_timeout: invalid duration \"1.5s\": fractions are "
             "not supported, use a smaller unit (e.g. 1500ms instead of 1.5s)");
    load_err("retry:\n  base_delay: 10y\n",
             "cfg.yaml:2: retry.base_delay: invalid duration \"10y\": unknown unit (use ms, s, "
             "m, h or d)");
    load_err("intake:\n\n  max_message_size: 12 parsecs\n",
             "cfg.yaml:3: intake.max_message_size: invalid size \"12 parsecs\": unknown unit "
             "(use B, KiB, MiB, GiB, kB, MB or GB)");
    load_err("log:\n  format: xml\n",
             "cfg.yaml:2: log.format: invalid value \"xml\" (expected one of: json, text)");
    load_err("transport:\n  kind: zeromq\n",
             "cfg.yaml:2: transport.kind: invalid value \"zeromq\" (expected one of: memory, "
             "kafka, amqp)");
}

static void test_ranges(void **state)
{
    (void)state;
    load_err("intake:\n  max_message_size: 512MiB\n",
             "cfg.yaml:2: intake.max_message_size: 512MiB is out of range (1KiB..256MiB)");
    load_err("intake:\n  max_message_size: 100\n",
             "cfg.yaml:2: intake.max_message_size: 100 is out of range (1KiB..256MiB)");
    load_err("service:\n  shutdown_timeout: 11m\n",
             "cfg.yaml:2: service.shutdown_timeout: 11m is out of range (0s..10m)");
    load_err("transport:\n  amqp:\n    prefetch: 0\n",
             "cfg.yaml:3: transport.amqp.prefetch: 0 is out of range (1..65535)");
    load_err("transport:\n  amqp:\n    prefetch: -5\n",
             "cfg.yaml:3: transport.amqp.prefetch: -5 is out of range (1..65535)");
    load_err("transport:\n  kafka:\n    max_inflight: 99999999999999999999999\n",
             "cfg.yaml:3: transport.kafka.max_inflight: 99999999999999999999999 is out of "
             "range (1..100000)");
    sb__config_t *cfg = load_ok("intake:\n  max_message_size: 256MiB\n  max_depth: 1\n");
    assert_int_equal(sb__config_size(cfg, "intake.max_message_size"), 256u << 20);
    assert_int_equal(sb__config_int(cfg, "intake.max_depth"), 1);
    sb__config_destroy(cfg);
}

static void test_yaml_refusals(void **state)
{
    (void)state;
    load_err("log:\n  level: info\n  level: debug\n",
             "cfg.yaml:3: log.level: duplicate key (first at line 2)");
    load_err("log: {level: info}\nservice: {}\nlog: {format: text}\n",
             "cfg.yaml:3: log: duplicate key (first at line 1)");
    load_err("handlers:\n  - name: a\n    module: m\n    name: b\n",
             "cfg.yaml:4: handlers[0].name: duplicate key (first at line 2)");
    load_err("base: &b\n  level: info\nlog: *b\n",
             "cfg.yaml:1: base: anchors and aliases are not supported");
    load_err("log:\n  level: *x\n", "cfg.yaml:2: log.level: anchors and aliases are not "
                                    "supported");
    load_err("log: {level: info}\n---\nlog: {level: debug}\n",
             "cfg.yaml:2: only one YAML document is allowed");
    load_err("log:\n  level: !!binary aW5mbw==\n",
             "cfg.yaml:2: log.level: YAML tag tag:yaml.org,2002:binary is not supported");
    load_err("? [a, b]\n: c\n", "cfg.yaml:1: complex mapping keys are not supported");
    load_err("log: [\n", "cfg.yaml:2: YAML syntax error: did not find expected node content "
                         "while parsing a flow node");
    load_err("service:\n  name: \"a\\0b\"\n",
             "cfg.yaml:2: service.name: NUL character or invalid UTF-8");
    /* 70 levels of nesting. */
    char deep[400] = "a: ";
    for (int i = 0; i < 70; i++)
        strcat(deep, "[");
    char err[1024] = "";
    sb__config_t *cfg = NULL;
    assert_int_equal(sb__config_load_buffer(deep, strlen(deep), "cfg.yaml", &cfg, err, sizeof err),
                     SB_ECONFIG);
    assert_non_null(strstr(err, "cfg.yaml:1: a[0][0]"));
    assert_non_null(strstr(err, ": nesting deeper than 64 levels"));
    /* !!str is fine. */
    cfg = load_ok("service:\n  name: !!str 42\n");
    assert_string_equal(sb__config_str(cfg, "service.name"), "42");
    sb__config_destroy(cfg);
}

/* ---- handlers ----------------------------------------------------------------------------- */

static void test_handlers(void **state)
{
    (void)state;
    sb__config_t *cfg = load_ok("retry:\n  max_attempts: 4\n"
                                "handlers:\n"
                                "  - name: audit\n    module: log\n    bind: ['#']\n"
                                "  - name: wh\n    module: /x/wh.so\n    bind: a.*, b.#\n"
                                "    timeout: 5s\n    retry:\n      max_attempts: 9\n"
                                "    config:\n      n: 10\n      r: 0.25\n      q: \"10\"\n"
                                "      b: true\n      s: yes\n      h: 0x1f\n      z: null\n");
    json_t *hs = sb__config_json(cfg, "handlers");
    assert_int_equal(json_array_size(hs), 2);
    assert_string_equal(sb__config_str(cfg, "handlers[0].module"), "log");
    assert_int_equal(sb__config_duration_ms(cfg, "handlers[0].timeout"), 30000);
    assert_false(sb__config_bool(cfg, "handlers[0].blocking"));
    assert_false(sb__config_has(cfg, "handlers[0].retry.max_attempts")); /* inherits */
    assert_int_equal(json_object_size(sb__config_json(cfg, "handlers[0].config")), 0);
    assert_string_equal(sb__config_str(cfg, "handlers[1].bind[1]"), "b.#");
    assert_int_equal(sb__config_duration_ms(cfg, "handlers[1].timeout"), 5000);
    assert_int_equal(sb__config_int(cfg, "handlers[1].retry.max_attempts"), 9);
    assert_false(sb__config_has(cfg, "handlers[1].retry.policy"));
    /* The module's own subtree is typed by the YAML core schema. */
    json_t *mc = sb__config_json(cfg, "handlers[1].config");
    assert_true(json_is_integer(json_object_get(mc, "n")));
    assert_true(json_is_real(json_object_get(mc, "r")));
    assert_true(json_is_string(json_object_get(mc, "q")));
    assert_true(json_is_true(json_object_get(mc, "b")));
    assert_string_equal(json_string_value(json_object_get(mc, "s")), "yes");
    assert_int_equal(json_integer_value(json_object_get(mc, "h")), 31);
    assert_true(json_is_null(json_object_get(mc, "z")));
    sb__config_destroy(cfg);

    load_err("handlers:\n  - module: log\n", "cfg.yaml:2: handlers[0]: missing required key "
                                             "\"name\"");
    load_err("handlers:\n  - name: a\n    module: log\n  - name: b\n",
             "cfg.yaml:4: handlers[1]: missing required key \"module\"");
    load_err("handlers:\n  - name: \"\"\n    module: log\n",
             "cfg.yaml:2: handlers[0].name: must not be empty");
    load_err("handlers:\n  - name: a\n    module: log\n    tiemout: 5s\n",
             "cfg.yaml:4: handlers[0].tiemout: unknown key (did you mean \"timeout\"?)");
    load_err("handlers:\n  - name: a\n    module: log\n    max_attempts: 5\n",
             "cfg.yaml:4: handlers[0].max_attempts: unknown key (did you mean "
             "\"retry.max_attempts\"?)");
    load_err("handlers:\n  - name: a\n    module: log\n    retry:\n      policy: random\n",
             "cfg.yaml:5: handlers[0].retry.policy: invalid value \"random\" (expected one of: "
             "fixed, linear, exponential)");
    load_err("handlers:\n  - audit\n", "cfg.yaml:2: handlers[0]: expected a mapping, got a "
                                       "scalar");
    load_err("handlers:\n  - {name: a, module: m}\n  - {name: a, module: n}\n",
             "cfg.yaml:3: handlers[1].name: duplicate name \"a\" (also handlers[0])");
}

/* ---- environment -------------------------------------------------------------------------- */

extern char **environ;

/* Removes every SWITCHBOARD_* variable (tests set them; each test starts clean). */
static int clear_env(void **state)
{
    (void)state;
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++) {
            if (!strncmp(*e, "SWITCHBOARD_", 12)) {
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof name, "%.*s", (int)n, *e);
                break;
            }
        }
        if (!name[0])
            return 0;
        unsetenv(name);
    }
}

static void test_env_scalars(void **state)
{
    (void)state;
    setenv("SWITCHBOARD_TRANSPORT_KAFKA_BROKERS", "k1:9092,k2:9092", 1);
    setenv("SWITCHBOARD_TRANSPORT_KAFKA_MAX_INFLIGHT", "42", 1);
    setenv("SWITCHBOARD_TRANSPORT_AMQP_DECLARE", "false", 1);
    setenv("SWITCHBOARD_SERVICE_SHUTDOWN_TIMEOUT", "1m30s", 1);
    setenv("SWITCHBOARD_INTAKE_MAX_MESSAGE_SIZE", "64KiB", 1);
    setenv("SWITCHBOARD_LOG_LEVEL", "warn", 1);
    setenv("SWITCHBOARD_CONFIG", "/reserved/for/the/path", 1);
    /* The environment wins over the file, and creates sections the file lacks. */
    sb__config_t *cfg = load_ok("transport:\n  kafka:\n    brokers: from-file\n");
    assert_string_equal(sb__config_str(cfg, "transport.kafka.brokers"), "k1:9092,k2:9092");
    assert_int_equal(sb__config_int(cfg, "transport.kafka.max_inflight"), 42);
    assert_false(sb__config_bool(cfg, "transport.amqp.declare"));
    assert_int_equal(sb__config_duration_ms(cfg, "service.shutdown_timeout"), 90000);
    assert_int_equal(sb__config_size(cfg, "intake.max_message_size"), 65536);
    assert_string_equal(sb__config_str(cfg, "log.level"), "warn");
    sb__config_destroy(cfg);
    /* Without a file too. */
    char err[256];
    assert_int_equal(sb__config_load(NULL, &cfg, err, sizeof err), SB_EOK);
    assert_string_equal(sb__config_str(cfg, "log.level"), "warn");
    sb__config_destroy(cfg);
    clear_env(NULL);
}

static void test_env_lists_and_maps(void **state)
{
    (void)state;
    setenv("SWITCHBOARD_TRANSPORT_KAFKA_TOPICS", "orders, payments,,audit ", 1);
    setenv("SWITCHBOARD_TRANSPORT_KAFKA_PROPERTIES_SASL_USERNAME", "bob", 1);
    setenv("SWITCHBOARD_TRANSPORT_KAFKA_PROPERTIES_SESSION_TIMEOUT_MS", "6000", 1);
    setenv("SWITCHBOARD_SCHEMAS_BINDINGS", "DataSyncCompletedEvent=dsc.json, ETLJob.#=etl.json", 1);
    sb__config_t *cfg = load_ok("transport:\n  kafka:\n    topics: [x]\n    properties:\n"
                                "      acks: all\n");
    json_t *topics = sb__config_json(cfg, "transport.kafka.topics");
    assert_int_equal(json_array_size(topics), 3);
    assert_string_equal(json_string_value(json_array_get(topics, 0)), "orders");
    assert_string_equal(json_string_value(json_array_get(topics, 1)), "payments");
    assert_string_equal(json_string_value(json_array_get(topics, 2)), "audit");
    json_t *props = sb__config_json(cfg, "transport.kafka.properties");
    assert_string_equal(json_string_value(json_object_get(props, "acks")), "all");
    assert_string_equal(json_string_value(json_object_get(props, "sasl.username")), "bob");
    assert_string_equal(json_string_value(json_object_get(props, "session.timeout.ms")), "6000");
    assert_string_equal(sb__config_str(cfg, "schemas.bindings.DataSyncCompletedEvent"), "dsc.json");
    assert_string_equal(sb__config_str(cfg, "schemas.bindings.ETLJob.#"), "etl.json");
    sb__config_destroy(cfg);
    /* A scalar in the file is a comma-separated list too (handy with ${VAR}). */
    clear_env(NULL);
    cfg = load_ok("transport:\n  amqp:\n    queues: A,B\n");
    assert_int_equal(json_array_size(sb__config_json(cfg, "transport.amqp.queues")), 2);
    sb__config_destroy(cfg);
}

static void test_env_errors(void **state)
{
    (void)state;
    setenv("SWITCHBOARD_INTAKE_MAX_MESSAGE_SIZE", "lots", 1);
    load_err("", "SWITCHBOARD_INTAKE_MAX_MESSAGE_SIZE: intake.max_message_size: invalid size "
                 "\"lots\": expected an integer and an optional unit (B, KiB, MiB, GiB, kB, MB, "
                 "GB), e.g. 64KiB");
    clear_env(NULL);
    setenv("SWITCHBOARD_TRANSPORT_AMQP_PREFETCH", "0", 1);
    load_err("transport:\n  amqp:\n    prefetch: 10\n",
             "SWITCHBOARD_TRANSPORT_AMQP_PREFETCH: transport.amqp.prefetch: 0 is out of range "
             "(1..65535)");
    clear_env(NULL);
    setenv("SWITCHBOARD_LOG_LEVL", "debug", 1);
    load_err("", "SWITCHBOARD_LOG_LEVL: unknown configuration variable (did you mean "
                 "SWITCHBOARD_LOG_LEVEL?)");
    clear_env(NULL);
    setenv("SWITCHBOARD_NOTHING_LIKE_IT", "1", 1);
    load_err("", "SWITCHBOARD_NOTHING_LIKE_IT: unknown configuration variable");
    clear_env(NULL);
    setenv("SWITCHBOARD_HANDLERS", "[]", 1);
    load_err("", "SWITCHBOARD_HANDLERS: handlers cannot be set from the environment");
    clear_env(NULL);
    setenv("SWITCHBOARD_SCHEMAS_BINDINGS", "a.b", 1);
    load_err("", "SWITCHBOARD_SCHEMAS_BINDINGS: schemas.bindings: expected KEY=VALUE items "
                 "separated by commas");
    clear_env(NULL);
    setenv("SWITCHBOARD_ADMIN_TOKEN", "t1", 1);
    setenv("SWITCHBOARD_ADMIN_TOKEN_FILE", "/nonexistent", 1);
    char err[512] = "";
    sb__config_t *cfg;
    assert_int_equal(sb__config_load_buffer("", 0, "cfg.yaml", &cfg, err, sizeof err), SB_ECONFIG);
    assert_non_null(strstr(err, "is also set; use one of the two"));
    assert_null(strstr(err, "t1"));
    clear_env(NULL);
}

/* ---- substitution --------------------------------------------------------------------- */

static void test_substitution(void **state)
{
    (void)state;
    setenv("SB_TEST_CFG_BROKERS", "b1:9092", 1);
    setenv("SB_TEST_CFG_EMPTY", "", 1);
    setenv("SB_TEST_CFG_N", "17", 1);
    unsetenv("SB_TEST_CFG_UNSET");
    sb__config_t *cfg =
        load_ok("transport:\n  kafka:\n    brokers: ${SB_TEST_CFG_BROKERS}\n"
                "    group_id: g-${SB_TEST_CFG_UNSET:-default}-${SB_TEST_CFG_EMPTY:-e}\n"
                "    dlq_topic_suffix: \"$$.dead$$\"\n"
                "    event_type_field: \"${SB_TEST_CFG_EMPTY}|$x|$\"\n"
                "    max_inflight: ${SB_TEST_CFG_N}\n");
    assert_string_equal(sb__config_str(cfg, "transport.kafka.brokers"), "b1:9092");
    assert_string_equal(sb__config_str(cfg, "transport.kafka.group_id"), "g-default-e");
    assert_string_equal(sb__config_str(cfg, "transport.kafka.dlq_topic_suffix"), "$.dead$");
    assert_string_equal(sb__config_str(cfg, "transport.kafka.event_type_field"), "|$x|$");
    assert_int_equal(sb__config_int(cfg, "transport.kafka.max_inflight"), 17);
    sb__config_destroy(cfg);
    load_err("service:\n  name: x\n  shutdown_timeout: ${SB_TEST_CFG_UNSET}\n",
             "cfg.yaml:3: service.shutdown_timeout: environment variable SB_TEST_CFG_UNSET is "
             "not set (write ${SB_TEST_CFG_UNSET:-default} to give a default)");
    load_err("transport:\n  kafka:\n    topics:\n      - a\n      - ${SB_TEST_CFG_UNSET}\n",
             "cfg.yaml:5: transport.kafka.topics[1]: environment variable SB_TEST_CFG_UNSET is "
             "not set (write ${SB_TEST_CFG_UNSET:-default} to give a default)");
    load_err("service:\n  name: ${oops\n",
             "cfg.yaml:2: service.name: unterminated \"${\" (write $$ for a dollar)");
    load_err("service:\n  name: ${1X}\n",
             "cfg.yaml:2: service.name: invalid substitution \"${1X}\" (expected ${NAME} or "
             "${NAME:-default})");
    /* The substituted value is checked by type like any other. */
    setenv("SB_TEST_CFG_N", "0", 1);
    load_err("transport:\n  kafka:\n    max_inflight: ${SB_TEST_CFG_N}\n",
             "cfg.yaml:3: transport.kafka.max_inflight: 0 is out of range (1..100000)");
}

/* ---- *_file secrets ---------------------------------------------------------------------- */

static void test_secret_files(void **state)
{
    (void)state;
    char yaml[1024];
    const char *token = write_temp("file-admin-token\n");
    const char *kpass = write_temp("file-kafka-pass\r\n");
    const char *url = write_temp("amqp://u:file-amqp-pass@h/v");
    snprintf(yaml, sizeof yaml,
             "admin:\n  token_file: %s\ntransport:\n  amqp:\n    url_file: %s\n  kafka:\n"
             "    properties:\n      sasl.password_file: %s\n",
             token, url, kpass);
    sb__config_t *cfg = load_ok(yaml);
    assert_string_equal(sb__config_str(cfg, "admin.token"), "file-admin-token");
    assert_string_equal(sb__config_str(cfg, "transport.amqp.url"), "amqp://u:file-amqp-pass@h/v");
    assert_string_equal(sb__config_str(cfg, "transport.kafka.properties.sasl.password"),
                        "file-kafka-pass");
    assert_false(sb__config_has(cfg, "admin.token_file"));
    sb__config_destroy(cfg);

    /* From the environment: SWITCHBOARD_X_FILE, and map keys' _FILE. */
    setenv("SWITCHBOARD_ADMIN_TOKEN_FILE", token, 1);
    setenv("SWITCHBOARD_TRANSPORT_KAFKA_PROPERTIES_SASL_PASSWORD_FILE", kpass, 1);
    cfg = load_ok("admin:\n  token: from-yaml\n");
    assert_string_equal(sb__config_str(cfg, "admin.token"), "file-admin-token");
    assert_string_equal(sb__config_str(cfg, "transport.kafka.properties.sasl.password"),
                        "file-kafka-pass");
    sb__config_destroy(cfg);
    clear_env(NULL);

    load_err("admin:\n  token: a\n  token_file: /etc/hostname\n",
             "cfg.yaml:3: admin.token_file: both token and token_file are set; use one of the "
             "two");
    load_err("transport:\n  kafka:\n    properties:\n      sasl.password: x\n"
             "      sasl.password_file: /etc/hostname\n",
             "cfg.yaml:5: transport.kafka.properties.sasl.password_file: both sasl.password and "
             "sasl.password_file are set; use one of the two");
    load_err("admin:\n  token_file: /nonexistent/secret\n",
             "cfg.yaml:2: admin.token_file: cannot read \"/nonexistent/secret\": No such file or "
             "directory");
    load_err("admin:\n  token_file: /dev/null\n",
             "cfg.yaml:2: admin.token_file: cannot read \"/dev/null\": not a regular file");
    load_err("admin:\n  token_file: [a]\n",
             "cfg.yaml:2: admin.token_file: expected a file name, got a sequence");
    /* Only secrets have a _file form. */
    load_err("service:\n  name_file: /etc/hostname\n",
             "cfg.yaml:2: service.name_file: unknown key (only secrets have a _file form)");
}

/* ---- masking ---------------------------------------------------------------------------- */

static void test_dump_masks_secrets(void **state)
{
    (void)state;
    char err[512] = "";
    sb__config_t *cfg = NULL;
    setenv("SWITCHBOARD_IDEMPOTENCY_REDIS_PASSWORD", "env-redis-password", 1);
    int rc = sb__config_load(FIXTURE("full.yaml"), &cfg, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("%s", err);
    clear_env(NULL);
    char *out = dump_to_string(cfg);
    static const char *const secrets[] = {"full-yaml-kafka-password",   "full-yaml-amqp-password",
                                          "full-yaml-handler-password", "full-yaml-redis-password",
                                          "full-yaml-admin-token",      "env-redis-password"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (strstr(out, secrets[i]))
            fail_msg("secret %s printed:\n%s", secrets[i], out);
    assert_non_null(strstr(out, "url: \"amqps://sync:********@rabbit.internal:5671/prod\""));
    assert_non_null(strstr(out, "url: \"redis://:********@redis:6379/2\""));
    assert_non_null(strstr(out, "sasl.password: \"********\""));
    assert_non_null(strstr(out, "token: \"********\""));
    assert_non_null(strstr(out, "      password: \"********\""));
    /* Non-secrets are printed, durations and sizes in their units. */
    assert_non_null(strstr(out, "sasl.username: switchboard"));
    assert_non_null(strstr(out, "max_message_size: 256KiB"));
    assert_non_null(strstr(out, "base_delay: 250ms"));
    assert_non_null(strstr(out, "ttl: 3d"));
    free(out);
    sb__config_destroy(cfg);

    /* A URL without a password is printed whole; one that is not a URL is masked whole. */
    cfg = load_ok("transport:\n  amqp:\n    url: amqp://rabbit/vh\nidempotency:\n  redis:\n"
                  "    url: not-a-url-secret\n");
    out = dump_to_string(cfg);
    assert_non_null(strstr(out, "url: \"amqp://rabbit/vh\""));
    assert_null(strstr(out, "not-a-url-secret"));
    free(out);
    sb__config_destroy(cfg);

    /* Errors never quote a secret's value. */
    load_err("admin:\n  token: {value: leaked-token}\n",
             "cfg.yaml:2: admin.token: expected a string, got a mapping");
}

static void test_dump_round_trip(void **state)
{
    (void)state;
    char err[512] = "";
    sb__config_t *cfg = NULL;
    int rc = sb__config_load(FIXTURE("full.yaml"), &cfg, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("%s", err);
    char *first = dump_to_string(cfg);
    sb__config_destroy(cfg);
    /* The dump is valid configuration; loading it again gives the same dump. */
    cfg = load_ok(first);
    char *second = dump_to_string(cfg);
    const char *a = strchr(first, '\n'), *b = strchr(second, '\n'); /* skip the header */
    assert_non_null(a);
    assert_non_null(b);
    if (strcmp(a, b) != 0)
        fail_msg("dump changed on reload:\n%s\n---\n%s", first, second);
    assert_int_equal(sb__config_int(cfg, "handlers[1].config.batch"), 100);
    assert_string_equal(sb__config_str(cfg, "handlers[1].config.label"), "100");
    free(first);
    free(second);
    sb__config_destroy(cfg);
}

/* ---- the reference in docs/configuration.md ------------------------------------------------ */

static void test_reference_doc(void **state)
{
    (void)state;
    static const char marker[] = "<!-- generated by `switchboard config reference` -->\n";
    FILE *f = fopen(SB_SOURCE_DIR "/docs/configuration.md", "rb");
    assert_non_null(f);
    static char doc[1 << 17];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    char *gen = strstr(doc, marker);
    if (!gen)
        fail_msg("docs/configuration.md lacks the marker line %s", marker);
    gen += strlen(marker);
    char *want = NULL;
    size_t wlen = 0;
    FILE *m = open_memstream(&want, &wlen);
    assert_non_null(m);
    sb__cfg_reference_md(m);
    fclose(m);
    if (strncmp(gen, want, wlen) != 0)
        fail_msg("docs/configuration.md is stale: regenerate the part below the marker with "
                 "`switchboard config reference`");
    free(want);
}

/* ---- the table itself ---------------------------------------------------------------------- */

static void test_table(void **state)
{
    (void)state;
    size_t n;
    const sb__cfg_prop_t *t = sb__cfg_props(&n);
    for (size_t i = 0; i < n; i++) {
        const sb__cfg_prop_t *p = &t[i];
        assert_non_null(p->doc);
        assert_ptr_equal(sb__cfg_prop_find(p->path, strlen(p->path)), p); /* unique */
        if (p->type == SB__CFG_ENUM)
            assert_non_null(p->values);
        if (p->type != SB__CFG_STRING && p->type != SB__CFG_STRING_LIST &&
            p->type != SB__CFG_STRING_MAP && p->type != SB__CFG_OBJECT_LIST &&
            p->type != SB__CFG_ANY && !(p->flags & (SB__CFG_INHERIT | SB__CFG_REQUIRED)) && !p->def)
            fail_msg("%s has no default", p->path);
        if (p->flags & SB__CFG_SECRET)
            assert_int_equal(p->type, SB__CFG_STRING);
    }
    assert_true(sb__cfg_secret_name("sasl.password"));
    assert_true(sb__cfg_secret_name("ssl.key.password"));
    assert_true(sb__cfg_secret_name("sasl.oauthbearer.client.secret"));
    assert_true(sb__cfg_secret_name("ssl.key.pem"));
    assert_true(sb__cfg_secret_name("ssl.key"));
    assert_false(sb__cfg_secret_name("ssl.key.location"));
    assert_false(sb__cfg_secret_name("sasl.username"));
}

/* ---- allocation failures ------------------------------------------------------------------ */

static long alloc_countdown; /* fail when it reaches 0; negative: never */

static void *failing_malloc(size_t size)
{
    if (alloc_countdown >= 0 && alloc_countdown-- == 0)
        return NULL;
    return malloc(size);
}

static void *failing_realloc(void *ptr, size_t size)
{
    if (alloc_countdown >= 0 && alloc_countdown-- == 0)
        return NULL;
    return realloc(ptr, size);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    const char *token = write_temp("sweep-token\n");
    setenv("SWITCHBOARD_TRANSPORT_KAFKA_PROPERTIES_SASL_USERNAME", "sweep", 1);
    setenv("SWITCHBOARD_TRANSPORT_AMQP_QUEUES", "a,b,c", 1);
    setenv("SWITCHBOARD_ADMIN_TOKEN_FILE", token, 1);
    setenv("SB_TEST_CFG_SWEEP", "from-env", 1);
    /* The whole fixture, plus substitution and the environment. */
    FILE *f = fopen(FIXTURE("full.yaml"), "rb");
    assert_non_null(f);
    static char yaml[16384];
    size_t n = fread(yaml, 1, sizeof yaml - 1, f);
    fclose(f);
    yaml[n] = '\0';
    static const char from[] = "  format: text\n";
    static const char to[] = "  format: ${SB_TEST_CFG_SWEEP_UNSET:-text}\n";
    char *at = strstr(yaml, from);
    assert_non_null(at);
    assert_true(n + sizeof to < sizeof yaml);
    memmove(at + strlen(to), at + strlen(from), strlen(at + strlen(from)) + 1);
    memcpy(at, to, strlen(to));
    static const char name_from[] = "  name: orders-sync\n";
    static const char name_to[] = "  name: ${SB_TEST_CFG_SWEEP}$$\n";
    at = strstr(yaml, name_from);
    assert_non_null(at);
    memmove(at + strlen(name_to), at + strlen(name_from), strlen(at + strlen(name_from)) + 1);
    memcpy(at, name_to, strlen(name_to));

    char err[256];
    sb__config_t *cfg = NULL;
    int rc = sb__config_load_buffer(yaml, strlen(yaml), "sweep.yaml", &cfg, err, sizeof err);
    if (rc != SB_EOK)
        fail_msg("%s", err);
    assert_string_equal(sb__config_str(cfg, "service.name"), "from-env$");
    assert_string_equal(sb__config_str(cfg, "log.format"), "text");
    assert_string_equal(sb__config_str(cfg, "admin.token"), "sweep-token");
    sb__config_destroy(cfg);
    int successes = 0;
    long total = 0;
    for (long fail_at = 0; fail_at < 100000; fail_at++) {
        alloc_countdown = fail_at;
        sb_set_allocator(failing_malloc, failing_realloc, free);
        cfg = NULL;
        err[0] = '\0';
        rc = sb__config_load_buffer(yaml, strlen(yaml), "sweep.yaml", &cfg, err, sizeof err);
        char *out = NULL;
        if (rc == SB_EOK) {
            out = dump_to_string(cfg); /* may fail inside too; must not crash */
            sb__config_destroy(cfg);
        }
        sb_set_allocator(NULL, NULL, NULL);
        free(out);
        if (rc == SB_EOK) {
            if (alloc_countdown >= 0) { /* no injected failure was hit: done */
                successes++;
                total = fail_at;
                break;
            }
            continue;
        }
        if (rc != SB_ENOMEM)
            fail_msg("allocation %ld failed: rc %d (%s), wanted SB_ENOMEM", fail_at, rc, err);
        assert_null(cfg);
        assert_non_null(strstr(err, "out of memory"));
    }
    assert_int_equal(successes, 1);
    assert_true(total > 100); /* the sweep really went through the loader */
    clear_env(NULL);
}

int main(void)
{
    clear_env(NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_defaults, clear_env),
        cmocka_unit_test_teardown(test_empty_inputs, clear_env),
        cmocka_unit_test_teardown(test_json_input, clear_env),
        cmocka_unit_test_teardown(test_full_fixture, clear_env),
        cmocka_unit_test_teardown(test_unknown_keys, clear_env),
        cmocka_unit_test_teardown(test_wrong_types, clear_env),
        cmocka_unit_test_teardown(test_bad_values, clear_env),
        cmocka_unit_test_teardown(test_ranges, clear_env),
        cmocka_unit_test_teardown(test_yaml_refusals, clear_env),
        cmocka_unit_test_teardown(test_handlers, clear_env),
        cmocka_unit_test_teardown(test_env_scalars, clear_env),
        cmocka_unit_test_teardown(test_env_lists_and_maps, clear_env),
        cmocka_unit_test_teardown(test_env_errors, clear_env),
        cmocka_unit_test_teardown(test_substitution, clear_env),
        cmocka_unit_test_teardown(test_secret_files, clear_env),
        cmocka_unit_test_teardown(test_dump_masks_secrets, clear_env),
        cmocka_unit_test_teardown(test_dump_round_trip, clear_env),
        cmocka_unit_test_teardown(test_reference_doc, clear_env),
        cmocka_unit_test_teardown(test_table, clear_env),
        cmocka_unit_test_teardown(test_alloc_failures, clear_env),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < temp_count; i++)
        unlink(temp_names[i]);
    return failed;
}
