/* notifier.c: example handler module: turns DataSync results into notification requests.
 *
 * Handlers: "completed" (DataSyncCompletedEvent) and "failed" (DataSyncFailedEvent). Each
 * logs a one-line summary of the sync job and publishes a follow-up NotificationRequested
 * event, in the seed systems' PascalCase style:
 *   {"Id": GUID v4, "CreationDate": RFC 3339 UTC, "Channel", "Recipient", "Subject",
 *    "Message", "SourceEventId", "Severity": "info" | "error"}
 * keyed by JobId (so a job's notifications stay in order on Kafka). The runtime acks the
 * source event only once the broker has confirmed the follow-up, so a crash in between
 * redelivers the source rather than losing the notification (the follow-up may then be
 * published twice, with different Ids: consumers deduplicate on SourceEventId).
 * Config (per handler instance): `channel` (default "email"), `recipient` (default
 * "data-team@example.com"); any other key is refused at start-up.
 * It does not send anything itself: delivery is the notification service's job. It is built
 * exactly as an out-of-tree module would be (sb_add_handler) and uses only
 * switchboard/handler.h and jansson. */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* getentropy, gmtime_r, clock_gettime */
#endif
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <switchboard/handler.h>

#define MOD               "notifier"
#define DEFAULT_CHANNEL   "email"
#define DEFAULT_RECIPIENT "data-team@example.com"
#define FOLLOW_UP_TYPE    "NotificationRequested"

typedef struct notifier {
    char *channel;
    char *recipient;
} notifier_t;

static void set_err(char *errstr, size_t size, const char *fmt, ...) SB_HANDLER_PRINTF(3, 4);
static void set_err(char *errstr, size_t size, const char *fmt, ...)
{
    if (!errstr || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
}

/* Strings from jansson-allocated memory go back through jansson's free function; our own
 * copies use the same allocator so that the host's allocation hooks see everything. */
static void *mod_alloc(size_t n)
{
    json_malloc_t m;
    json_get_alloc_funcs(&m, NULL);
    return m(n);
}

static void mod_free(void *p)
{
    json_free_t f;
    json_get_alloc_funcs(NULL, &f);
    if (p)
        f(p);
}

static char *mod_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = mod_alloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void notifier_shutdown(void *ud)
{
    notifier_t *n = ud;
    if (!n)
        return;
    mod_free(n->channel);
    mod_free(n->recipient);
    mod_free(n);
}

/* Reads an optional non-empty string setting into a fresh copy. 0, or -1 with a reason. */
static int read_str(const json_t *config, const char *key, const char *def, char **out,
                    char *errstr, size_t errstr_size)
{
    const json_t *v = config ? json_object_get(config, key) : NULL;
    const char *s = def;
    if (v) {
        s = json_string_value(v);
        if (!s || !*s) {
            set_err(errstr, errstr_size, MOD ": %s must be a non-empty string", key);
            return -1;
        }
    }
    if (!(*out = mod_strdup(s))) {
        set_err(errstr, errstr_size, MOD ": out of memory");
        return -1;
    }
    return 0;
}

static int notifier_init(json_t *config, void **ud, char *errstr, size_t errstr_size)
{
    if (config && !json_is_null(config)) {
        if (!json_is_object(config)) {
            set_err(errstr, errstr_size, MOD ": config must be a mapping");
            return -1;
        }
        const char *key;
        json_t *v;
        json_object_foreach(config, key, v)
        {
            if (strcmp(key, "channel") && strcmp(key, "recipient")) {
                set_err(errstr, errstr_size,
                        MOD ": unknown config key \"%s\" (known: channel, recipient)", key);
                return -1;
            }
        }
    } else {
        config = NULL;
    }
    notifier_t *n = mod_alloc(sizeof *n);
    if (!n) {
        set_err(errstr, errstr_size, MOD ": out of memory");
        return -1;
    }
    n->channel = n->recipient = NULL;
    if (read_str(config, "channel", DEFAULT_CHANNEL, &n->channel, errstr, errstr_size) != 0 ||
        read_str(config, "recipient", DEFAULT_RECIPIENT, &n->recipient, errstr, errstr_size) != 0)
        goto err;
    *ud = n;
    return 0;
err:
    notifier_shutdown(n);
    return -1;
}

/* init acquires nothing but memory: `config check` runs it and shuts it down again. */
static int notifier_check(json_t *config, char *errstr, size_t errstr_size)
{
    void *ud = NULL;
    int rc = notifier_init(config, &ud, errstr, errstr_size);
    notifier_shutdown(ud);
    return rc;
}

/* A random (version 4) GUID, lower-case, 36 characters. 0 or -1. */
static int guid_v4(char out[37])
{
    unsigned char b[16];
    if (getentropy(b, sizeof b) != 0)
        return -1;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

/* Now, as "2026-12-03T16:00:00.123Z". 0 or -1. */
static int now_rfc3339(char out[32])
{
    struct timespec ts;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || !gmtime_r(&ts.tv_sec, &tm))
        return -1;
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0)
        return -1;
    snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000L);
    return 0;
}

/* Builds and publishes the follow-up. `subject` and `message` are jansson strings whose
 * references this function takes (either may be NULL after a failed json_sprintf). */
static sb_outcome_t publish_notification(sb_context_t *ctx, const sb_event_t *ev,
                                         const notifier_t *n, const char *job_id,
                                         const char *severity, json_t *subject, json_t *message)
{
    char id[37], now[32];
    if (guid_v4(id) != 0 || now_rfc3339(now) != 0) {
        json_decref(subject);
        json_decref(message);
        sb_ctx_reason(ctx, MOD ": no random id or clock for the notification");
        return SB_RETRY;
    }
    /* "o" steals the references, also when packing fails. */
    json_t *body =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:s, s:s}", "Id", id, "CreationDate", now,
                  "Channel", n->channel, "Recipient", n->recipient, "Subject", subject, "Message",
                  message, "SourceEventId", sb_event_id(ev), "Severity", severity);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        sb_ctx_reason(ctx, MOD ": cannot build the notification (out of memory)");
        return SB_RETRY;
    }
    int rc = sb_ctx_publish(ctx, FOLLOW_UP_TYPE, text, strlen(text), job_id);
    mod_free(text);
    if (rc != 0) {
        sb_ctx_reason(ctx, MOD ": publishing " FOLLOW_UP_TYPE " failed (%d)", rc);
        return SB_RETRY;
    }
    return SB_OK;
}

static const char *require_job_id(sb_context_t *ctx, const sb_event_t *ev)
{
    const char *job = sb_event_get_str(ev, "JobId", NULL);
    if (!job || !*job) {
        sb_ctx_reason(ctx, "%s %s: missing JobId", sb_event_type(ev), sb_event_id(ev));
        return NULL;
    }
    return job;
}

static sb_outcome_t on_completed(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    const notifier_t *n = ud;
    const char *job = require_job_id(ctx, ev);
    if (!job)
        return SB_REJECT;
    const char *src = sb_event_get_str(ev, "SourceSystem", "?");
    const char *dst = sb_event_get_str(ev, "TargetSystem", "?");
    int64_t records = sb_event_get_int(ev, "RecordsProcessed", -1);
    char count[32];
    if (records >= 0)
        snprintf(count, sizeof count, "%" PRId64, records);
    else
        snprintf(count, sizeof count, "an unknown number of");

    sb_log(MOD, SB_LOG_INFO, "%s: data sync %s completed: %s -> %s, %s records",
           sb_ctx_handler(ctx), job, src, dst, count);
    return publish_notification(
        ctx, ev, n, job, "info", json_sprintf("Data sync %s completed", job),
        json_sprintf("Data sync %s from %s to %s completed successfully: %s records processed.",
                     job, src, dst, count));
}

static sb_outcome_t on_failed(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    const notifier_t *n = ud;
    const char *job = require_job_id(ctx, ev);
    if (!job)
        return SB_REJECT;
    const char *src = sb_event_get_str(ev, "SourceSystem", "?");
    const char *dst = sb_event_get_str(ev, "TargetSystem", "?");
    const char *error = sb_event_get_str(ev, "Error", "no error given");

    sb_log(MOD, SB_LOG_WARN, "%s: data sync %s failed: %s -> %s, error: %s", sb_ctx_handler(ctx),
           job, src, dst, error);
    return publish_notification(ctx, ev, n, job, "error", json_sprintf("Data sync %s failed", job),
                                json_sprintf("Data sync %s failed: %s", job, error));
}

static const sb_handler_def_t notifier_handlers[] = {
    {.name = "completed", .pattern = "DataSyncCompletedEvent", .fn = on_completed},
    {.name = "failed", .pattern = "DataSyncFailedEvent", .fn = on_failed},
    {0},
};

static const sb_module_t notifier = {
    SB_MODULE_HEADER,        .name = "notifier",
    .version = "1.0.0",      .handlers = notifier_handlers,
    .init = notifier_init,   .shutdown = notifier_shutdown,
    .check = notifier_check,
};

SB_MODULE_DEFINE(notifier)
