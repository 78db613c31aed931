/* config_schema.c: the one table of configuration properties.
 *
 * Every key switchboard understands is one row here: path, type, default, range, enum values,
 * flags and a one-line doc. The loader validates against it, fills defaults from it, maps
 * environment variables onto it, masks secrets with it, and the reference in
 * docs/configuration.md is generated from it (a unit test keeps the two identical). Adding a
 * key is adding a row. Modules' own keys (handlers[].config) are deliberately not here: the
 * module checks them. */
#include <ctype.h>
#include <string.h>

#include "config.h"
#include "units.h"

#define MS_S   1000
#define MS_MIN (60 * MS_S)
#define MS_H   (60 * MS_MIN)
#define MS_D   (24 * MS_H)
#define KIB    1024
#define MIB    (1024 * KIB)

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"json", "text", NULL};
static const char *const transport_kinds[] = {"memory", "kafka", "amqp", NULL};
static const char *const kafka_concurrency[] = {"partition", "key", NULL};
static const char *const kafka_retry_modes[] = {"topic", "in_place", NULL};
static const char *const queue_types[] = {"classic", "quorum", NULL};
static const char *const id_strategies[] = {"strict", "hash", NULL};
static const char *const unroutable_policies[] = {"ack", "dead-letter", NULL};
static const char *const invalid_policies[] = {"dead-letter", "ack", NULL};
static const char *const retry_policies[] = {"fixed", "linear", "exponential", NULL};
static const char *const idem_stores[] = {"none", "memory", "redis", NULL};
static const char *const unavailable_policies[] = {"block", "process", NULL};

#define P_STR(p, d, f, doc_)                                                                       \
    {                                                                                              \
        .path = (p), .type = SB__CFG_STRING, .def = (d), .flags = (f), .doc = (doc_)               \
    }
#define P_INT(p, d, lo, hi, f, doc_)                                                               \
    {                                                                                              \
        .path = (p), .type = SB__CFG_INT, .def = (d), .min = (lo), .max = (hi), .flags = (f),      \
        .doc = (doc_)                                                                              \
    }
#define P_BOOL(p, d, f, doc_)                                                                      \
    {                                                                                              \
        .path = (p), .type = SB__CFG_BOOL, .def = (d), .flags = (f), .doc = (doc_)                 \
    }
#define P_DUR(p, d, lo, hi, f, doc_)                                                               \
    {                                                                                              \
        .path = (p), .type = SB__CFG_DURATION, .def = (d), .min = (lo), .max = (hi), .flags = (f), \
        .doc = (doc_)                                                                              \
    }
#define P_SIZE(p, d, lo, hi, f, doc_)                                                              \
    {                                                                                              \
        .path = (p), .type = SB__CFG_SIZE, .def = (d), .min = (lo), .max = (hi), .flags = (f),     \
        .doc = (doc_)                                                                              \
    }
#define P_ENUM(p, d, v, f, doc_)                                                                   \
    {                                                                                              \
        .path = (p), .type = SB__CFG_ENUM, .def = (d), .values = (v), .flags = (f), .doc = (doc_)  \
    }
#define P_LIST(p, doc_)                                                                            \
    {                                                                                              \
        .path = (p), .type = SB__CFG_STRING_LIST, .doc = (doc_)                                    \
    }
#define P_MAP(p, doc_)                                                                             \
    {                                                                                              \
        .path = (p), .type = SB__CFG_STRING_MAP, .doc = (doc_)                                     \
    }
#define P_OBJS(p, doc_)                                                                            \
    {                                                                                              \
        .path = (p), .type = SB__CFG_OBJECT_LIST, .doc = (doc_)                                    \
    }
#define P_ANY(p, doc_)                                                                             \
    {                                                                                              \
        .path = (p), .type = SB__CFG_ANY, .doc = (doc_)                                            \
    }

/* The retry keys appear twice: with defaults at the top level, inheriting in handlers. */
#define RETRY_KEYS(prefix, d_policy, d_base, d_max, d_attempts, d_jitter, f)                       \
    P_ENUM(prefix "retry.policy", d_policy, retry_policies, f,                                     \
           "How the delay grows between attempts."),                                               \
        P_DUR(prefix "retry.base_delay", d_base, 1, MS_D, f,                                       \
              "Delay before the first retry; the unit step of linear and exponential."),           \
        P_DUR(prefix "retry.max_delay", d_max, 1, 7 * (int64_t)MS_D, f,                            \
              "Upper bound of any single delay."),                                                 \
        P_INT(prefix "retry.max_attempts", d_attempts, 1, 1000, f,                                 \
              "Attempts in all (the first delivery included) before dead-lettering."),             \
        P_BOOL(prefix "retry.jitter", d_jitter, f,                                                 \
               "Randomise the delays so that the retries of a burst spread out.")

static const sb__cfg_prop_t props[] = {
    P_STR("service.name", "switchboard", 0,
          "Name of this service; used as the consumer name in brokers and logs."),
    P_DUR("service.shutdown_timeout", "30s", 0, 10 * MS_MIN, 0,
          "On SIGTERM, how long in-flight messages may take to settle before exit."),
    P_INT("service.max_inflight", "1000", 1, 100000, 0,
          "Messages in flight at most; intake pauses at this bound (memory stays flat)."),
    P_INT("service.workers", "4", 1, 256, 0, "Worker threads for handlers declared blocking."),
    P_STR("service.crash_file", "", 0,
          "Crash guard: a file (on storage that outlives the process, e.g. a pod volume) where "
          "the event each handler runs is noted; an event that was running when the process "
          "died service.max_crashes times is dead-lettered (reason crashed) instead of run "
          "again. Empty: off."),
    P_INT("service.max_crashes", "3", 1, 1000, 0,
          "Crash guard: crashes while an event ran before it is dead-lettered unhandled."),

    P_ENUM("log.level", "info", log_levels, 0, "Least severe level written."),
    P_ENUM("log.format", "json", log_formats, 0, "json: one JSON object a line; text: for humans."),

    P_ENUM("transport.kind", "memory", transport_kinds, 0,
           "Which broker to consume from (memory: in-process, for tests and the demo)."),
    P_INT("transport.memory.capacity", "10000", 1, 10000000, 0,
          "In-memory broker: messages it holds at most (queued, delayed and in flight)."),
    P_BOOL("transport.memory.loopback", "true", 0,
           "In-memory broker: follow-up events published by handlers are consumed too."),

    P_STR("transport.kafka.brokers", "embedded", 0,
          "Bootstrap servers (host:port,...), or \"embedded\" for librdkafka's mock cluster."),
    P_STR("transport.kafka.group_id", "switchboard", 0, "Consumer group id."),
    P_LIST("transport.kafka.topics", "Topics to subscribe to."),
    P_STR("transport.kafka.event_type_field", "EventType", 0,
          "Body field holding the event type when no event-type / ce_type header is set."),
    P_ENUM("transport.kafka.concurrency", "partition", kafka_concurrency, 0,
           "Ordering unit: one message at a time per partition, or per message key."),
    P_INT("transport.kafka.max_inflight", "1000", 1, 100000, 0,
          "Messages dispatched and not yet settled, over all partitions."),
    P_STR("transport.kafka.dlq_topic_suffix", ".dlq", 0,
          "Dead letters of topic T go to T followed by this suffix."),
    P_ENUM("transport.kafka.retry", "topic", kafka_retry_modes, 0,
           "topic: copy to T.retry with a due time, consumed when due (non-blocking); "
           "in_place: hold the partition and re-run the message after the delay."),
    P_STR("transport.kafka.retry_topic_suffix", ".retry", 0,
          "Retry copies of topic T go to T followed by this suffix (retry: topic)."),
    P_STR("transport.kafka.publish_topic", "", 0,
          "Topic for follow-up events published by handlers; empty: the first topic."),
    P_INT("transport.kafka.partition_backlog", "10000", 16, 1000000, 0,
          "Local bound: a partition holding this many fetched, uncommitted messages is "
          "paused; all flowing partitions together take at most half of it from librdkafka."),
    P_DUR("transport.kafka.revoke_timeout", "15s", 0, 10 * MS_MIN, 0,
          "On a revoke, how long in-flight messages of the revoked partitions may settle."),
    P_BOOL("transport.kafka.create_topics", "true", 0,
           "At start, create missing T.retry and T.dlq topics (as many partitions as T)."),
    P_MAP("transport.kafka.properties",
          "librdkafka properties passed through unchanged (secret-named keys are masked)."),

    P_STR("transport.amqp.url", "amqp://guest:guest@127.0.0.1:5672/%2f",
          SB__CFG_SECRET | SB__CFG_URL,
          "Broker URL (amqp:// or amqps://); its password is masked when printed."),
    P_STR("transport.amqp.password_file", NULL, 0,
          "File whose first line is the broker password (overrides the URL's password)."),
    P_STR("transport.amqp.exchange", "integration_events", 0,
          "Exchange the integration events are published to (bound by routing key)."),
    P_STR("transport.amqp.queue", "switchboard", 0,
          "Queue declared and consumed when `queues` is empty."),
    P_LIST("transport.amqp.queues",
           "Existing queues to consume instead of `queue` (e.g. one per event type)."),
    P_ENUM("transport.amqp.queue_type", "classic", queue_types, 0,
           "Type of the queues switchboard declares."),
    P_BOOL("transport.amqp.single_active_consumer", "false", 0,
           "Declare queues with x-single-active-consumer (strict ordering, one consumer)."),
    P_INT("transport.amqp.prefetch", "256", 1, 65535, 0, "basic.qos prefetch count per channel."),
    P_BOOL("transport.amqp.declare", "true", 0,
           "Declare the exchange, queues and bindings at start-up (false: they must exist)."),
    P_DUR("transport.amqp.heartbeat", "30s", 0, 10 * MS_MIN, 0,
          "AMQP heartbeat interval (0 disables heartbeats)."),
    P_STR("transport.amqp.tls.ca_file", NULL, 0,
          "CA bundle to verify the broker with (amqps://); empty: system default."),
    P_STR("transport.amqp.tls.cert_file", NULL, 0, "Client certificate (PEM) for mutual TLS."),
    P_STR("transport.amqp.tls.key_file", NULL, 0,
          "Client private key (PEM) for mutual TLS (a path, not the key itself)."),
    P_BOOL("transport.amqp.tls.verify_peer", "true", 0,
           "Verify the broker's certificate and host name."),

    P_SIZE("intake.max_message_size", "1MiB", KIB, 256 * (int64_t)MIB, 0,
           "Larger messages are dead-lettered with reason decode."),
    P_INT("intake.max_depth", "64", 1, 2048, 0,
          "Maximum JSON nesting depth of a body (2048 is jansson's own limit)."),
    P_ENUM("intake.id_strategy", "strict", id_strategies, 0,
           "Without an event id: strict dead-letters, hash uses the SHA-256 of the body."),
    P_ENUM("intake.unroutable", "dead-letter", unroutable_policies, 0,
           "What to do with events no handler is bound to."),

    P_STR("schemas.dir", "schemas", 0, "Directory of the JSON Schema files."),
    P_MAP("schemas.bindings", "Event-type pattern -> schema file name (in schemas.dir)."),
    P_ENUM("schemas.on_invalid", "dead-letter", invalid_policies, 0,
           "What to do with events that fail their schema."),

    RETRY_KEYS("", "exponential", "1s", "5m", "5", "true", 0),

    P_OBJS("handlers", "The handlers to run, each bound to event-type patterns."),
    P_STR("handlers[].name", NULL, SB__CFG_REQUIRED, "Unique name of this handler."),
    P_STR("handlers[].module", NULL, SB__CFG_REQUIRED,
          "A built-in module name, or the path of a module .so."),
    P_LIST("handlers[].bind",
           "Event-type patterns (AMQP topic syntax: * one word, # zero or more)."),
    P_BOOL("handlers[].blocking", "false", 0,
           "Run on the worker pool because the handler blocks (I/O, CPU)."),
    P_DUR("handlers[].timeout", "30s", 1, MS_D, 0,
          "An attempt that has not settled by then counts as failed (retried)."),
    RETRY_KEYS("handlers[].", NULL, NULL, NULL, NULL, NULL, SB__CFG_INHERIT),
    P_ANY("handlers[].config", "The module's own settings, checked by the module."),

    P_ENUM("idempotency.store", "memory", idem_stores, 0,
           "Where processed event ids are remembered (none: no deduplication)."),
    P_STR("idempotency.redis.url", "redis://127.0.0.1:6379/0", SB__CFG_SECRET | SB__CFG_URL,
          "Redis URL (redis://[:password@]host:port/db); its password is masked."),
    P_STR("idempotency.redis.password", NULL, SB__CFG_SECRET,
          "Redis password (AUTH), if not given in the URL."),
    P_STR("idempotency.redis.prefix", "sb:idem:", 0, "Prefix of the keys switchboard writes."),
    P_DUR("idempotency.redis.lease", "30s", MS_S, MS_D, 0,
          "How long an event being processed is reserved against other consumers."),
    P_DUR("idempotency.redis.ttl", "7d", MS_S, 365 * (int64_t)MS_D, 0,
          "How long a processed event id is remembered."),
    P_ENUM("idempotency.redis.on_unavailable", "block", unavailable_policies, 0,
           "Redis down: block (stop consuming until it is back) or process without dedup."),

    P_STR("admin.listen", "127.0.0.1:9464", 0,
          "Address of the admin HTTP endpoint (health, metrics); empty: disabled."),
    P_STR("admin.token", NULL, SB__CFG_SECRET,
          "Bearer token required by the admin endpoint; empty: no authentication."),
};

const sb__cfg_prop_t *sb__cfg_props(size_t *count)
{
    *count = sizeof props / sizeof props[0];
    return props;
}

const sb__cfg_prop_t *sb__cfg_prop_find(const char *path, size_t len)
{
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (strlen(props[i].path) == len && memcmp(props[i].path, path, len) == 0)
            return &props[i];
    return NULL;
}

const char *sb__cfg_type_name(sb__cfg_type_t type)
{
    switch (type) {
    case SB__CFG_STRING:
        return "string";
    case SB__CFG_INT:
        return "int";
    case SB__CFG_BOOL:
        return "bool";
    case SB__CFG_DURATION:
        return "duration";
    case SB__CFG_SIZE:
        return "size";
    case SB__CFG_ENUM:
        return "enum";
    case SB__CFG_STRING_LIST:
        return "string-list";
    case SB__CFG_STRING_MAP:
        return "string-map";
    case SB__CFG_OBJECT_LIST:
        return "object-list";
    case SB__CFG_ANY:
        return "any";
    }
    return "?";
}

static bool contains_ci(const char *s, const char *needle)
{
    size_t n = strlen(needle);
    for (; *s; s++) {
        size_t i = 0;
        while (i < n && s[i] && tolower((unsigned char)s[i]) == needle[i])
            i++;
        if (i == n)
            return true;
    }
    return false;
}

static bool ends_with_ci(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    if (lx > ls)
        return false;
    for (size_t i = 0; i < lx; i++)
        if (tolower((unsigned char)s[ls - lx + i]) != suffix[i])
            return false;
    return true;
}

bool sb__cfg_secret_name(const char *key)
{
    return contains_ci(key, "password") || contains_ci(key, "passwd") ||
           contains_ci(key, "secret") || contains_ci(key, "token") || ends_with_ci(key, ".key") ||
           ends_with_ci(key, "key.pem");
}

/* ---- reference ------------------------------------------------------------------------- */

static void md_range(FILE *out, const sb__cfg_prop_t *p)
{
    char lo[64], hi[64];
    if (p->type == SB__CFG_ENUM) {
        for (const char *const *v = p->values; *v; v++)
            fprintf(out, "%s`%s`", v == p->values ? "" : ", ", *v);
        return;
    }
    if (p->min >= p->max) {
        fputs("-", out);
        return;
    }
    switch (p->type) {
    case SB__CFG_DURATION:
        sb__format_duration_ms((uint64_t)p->min, lo, sizeof lo);
        sb__format_duration_ms((uint64_t)p->max, hi, sizeof hi);
        break;
    case SB__CFG_SIZE:
        sb__format_size((uint64_t)p->min, lo, sizeof lo);
        sb__format_size((uint64_t)p->max, hi, sizeof hi);
        break;
    default:
        snprintf(lo, sizeof lo, "%lld", (long long)p->min);
        snprintf(hi, sizeof hi, "%lld", (long long)p->max);
        break;
    }
    fprintf(out, "%s .. %s", lo, hi);
}

static void md_default(FILE *out, const sb__cfg_prop_t *p)
{
    if (p->def)
        fprintf(out, "`%s`", p->def);
    else if (p->flags & SB__CFG_REQUIRED)
        fputs("(required)", out);
    else if (p->flags & SB__CFG_INHERIT)
        fputs("(inherits)", out);
    else if (p->type == SB__CFG_STRING_LIST || p->type == SB__CFG_OBJECT_LIST)
        fputs("`[]`", out);
    else if (p->type == SB__CFG_STRING_MAP || p->type == SB__CFG_ANY)
        fputs("`{}`", out);
    else
        fputs("`\"\"`", out);
}

/* The environment variable of a key: SWITCHBOARD_ and the path upper-cased, dots as _. */
static void md_env(FILE *out, const sb__cfg_prop_t *p)
{
    if (strchr(p->path, '[')) {
        fputs("-", out);
        return;
    }
    fputs("`SWITCHBOARD_", out);
    for (const char *c = p->path; *c; c++)
        fputc(*c == '.' ? '_' : toupper((unsigned char)*c), out);
    if (p->type == SB__CFG_STRING_MAP)
        fputs("[_<KEY>]", out);
    if (p->flags & SB__CFG_SECRET)
        fputs("[_FILE]", out);
    fputs("`", out);
}

void sb__cfg_reference_md(FILE *out)
{
    const char *section = "";
    size_t seclen = (size_t)-1;
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++) {
        const sb__cfg_prop_t *p = &props[i];
        size_t len = strcspn(p->path, ".[");
        if (len != seclen || strncmp(section, p->path, len) != 0) {
            section = p->path;
            seclen = len;
            fprintf(out, "%s### `%.*s`\n\n", i ? "\n" : "", (int)len, p->path);
            fputs("| Key | Type | Default | Range / values | Environment | Description |\n", out);
            fputs("|---|---|---|---|---|---|\n", out);
        }
        fprintf(out, "| `%s%s` | %s%s | ", p->path, p->type == SB__CFG_STRING_MAP ? ".*" : "",
                sb__cfg_type_name(p->type), (p->flags & SB__CFG_SECRET) ? ", secret" : "");
        md_default(out, p);
        fputs(" | ", out);
        md_range(out, p);
        fputs(" | ", out);
        md_env(out, p);
        fprintf(out, " | %s |\n", p->doc);
    }
}
