/* mod_fail.c: the built-in `fail` module: fails events on purpose, for testing retries and
 * dead-lettering.
 *
 * Handler "fail", default binding "#". Config (all optional, checked strictly at init):
 *   outcome: retry | reject          what a failure returns (default retry)
 *   mode: always | times | probability
 *                                    default always; `times:` or `probability:` alone imply
 *                                    their mode
 *   times: N                         fail attempts 1..N of every event, then succeed
 *   probability: p                   0..1; fail when hash(event id, attempt) < p
 *   delay: 250ms | delay_ms: 250     with outcome retry: sb_ctx_retry_after(delay)
 *   reason: text                     the failure reason (default "injected failure")
 *   crash_id: ID                     abort() the whole process on the event with this id,
 *                                    every time it runs (a handler that crashes; with
 *                                    mode times and times: 0 the others pass)
 * The module is stateless on purpose: `times` reads the event's attempt number and
 * `probability` hashes the id and attempt instead of drawing random numbers, so a run is
 * reproducible and survives consumer restarts. It never blocks and never publishes. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "builtin_modules.h"
#include "units.h"

#define MOD            "fail"
#define DEFAULT_REASON "injected failure"

typedef enum fail_mode { MODE_ALWAYS, MODE_TIMES, MODE_PROBABILITY } fail_mode_t;

typedef struct fail_inst {
    sb_outcome_t outcome; /* SB_RETRY or SB_REJECT */
    fail_mode_t mode;
    uint64_t times;
    double probability;
    bool has_delay;
    uint64_t delay_ms;
    char *reason;
    char *crash_id;
} fail_inst_t;

static void fail_shutdown(void *ud)
{
    fail_inst_t *in = ud;
    if (!in)
        return;
    sb_free(in->reason);
    sb_free(in->crash_id);
    sb_free(in);
}

/* delay: "250ms" or an integer of milliseconds; delay_ms: an integer of milliseconds. */
static int read_delay(const char *key, const json_t *v, uint64_t *out, char *errstr,
                      size_t errstr_size)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return SB_EOK;
    }
    if (json_is_string(v) && !strcmp(key, "delay")) {
        char why[128];
        if (sb__parse_duration_ms(json_string_value(v), out, why, sizeof why) == SB_EOK)
            return SB_EOK;
        sb__mod_err(errstr, errstr_size, MOD ": delay: %s", why);
        return SB_ECONFIG;
    }
    sb__mod_err(errstr, errstr_size, MOD ": %s must be %s", key,
                strcmp(key, "delay") ? "a non-negative integer of milliseconds"
                                     : "a duration such as 250ms or an integer of milliseconds");
    return SB_ECONFIG;
}

/* An optional non-empty string option into *out (replacing what was there). */
static int read_text(const json_t *config, const char *key, char **out, char *errstr,
                     size_t errstr_size)
{
    const json_t *v = json_object_get(config, key);
    if (!v)
        return SB_EOK;
    const char *s = json_string_value(v);
    if (!s || !*s) {
        sb__mod_err(errstr, errstr_size, MOD ": %s must be a non-empty string", key);
        return SB_ECONFIG;
    }
    char *copy = sb_strdup(s);
    if (!copy) {
        sb__mod_err(errstr, errstr_size, MOD ": out of memory");
        return SB_ENOMEM;
    }
    sb_free(*out);
    *out = copy;
    return SB_EOK;
}

static int parse_config(const json_t *config, fail_inst_t *in, char *errstr, size_t errstr_size)
{
    static const char *const keys[] = {"outcome",  "mode",   "times",    "probability", "delay",
                                       "delay_ms", "reason", "crash_id", NULL};
    int rc = sb__mod_check_keys(MOD, config, keys, errstr, errstr_size);
    if (rc != SB_EOK || !config || json_is_null(config))
        return rc;

    const json_t *v = json_object_get(config, "outcome");
    if (v) {
        const char *s = json_string_value(v);
        if (s && !strcmp(s, "retry")) {
            in->outcome = SB_RETRY;
        } else if (s && !strcmp(s, "reject")) {
            in->outcome = SB_REJECT;
        } else {
            sb__mod_err(errstr, errstr_size, MOD ": outcome must be retry or reject");
            return SB_ECONFIG;
        }
    }

    const json_t *times = json_object_get(config, "times");
    const json_t *prob = json_object_get(config, "probability");
    v = json_object_get(config, "mode");
    if (v) {
        const char *s = json_string_value(v);
        if (s && !strcmp(s, "always")) {
            in->mode = MODE_ALWAYS;
        } else if (s && !strcmp(s, "times")) {
            in->mode = MODE_TIMES;
        } else if (s && !strcmp(s, "probability")) {
            in->mode = MODE_PROBABILITY;
        } else {
            sb__mod_err(errstr, errstr_size, MOD ": mode must be always, times or probability");
            return SB_ECONFIG;
        }
    } else if (times && prob) {
        sb__mod_err(errstr, errstr_size,
                    MOD ": times and probability exclude each other (set mode)");
        return SB_ECONFIG;
    } else {
        in->mode = times ? MODE_TIMES : prob ? MODE_PROBABILITY : MODE_ALWAYS;
    }
    if (times && in->mode != MODE_TIMES) {
        sb__mod_err(errstr, errstr_size, MOD ": times only applies to mode: times");
        return SB_ECONFIG;
    }
    if (prob && in->mode != MODE_PROBABILITY) {
        sb__mod_err(errstr, errstr_size, MOD ": probability only applies to mode: probability");
        return SB_ECONFIG;
    }
    if (in->mode == MODE_TIMES) {
        if (!times || !json_is_integer(times) || json_integer_value(times) < 0) {
            sb__mod_err(errstr, errstr_size,
                        MOD ": mode times needs times: N (a non-negative integer)");
            return SB_ECONFIG;
        }
        in->times = (uint64_t)json_integer_value(times);
    }
    if (in->mode == MODE_PROBABILITY) {
        double p = prob && json_is_number(prob) ? json_number_value(prob) : -1.0;
        if (!(p >= 0.0 && p <= 1.0)) {
            sb__mod_err(errstr, errstr_size,
                        MOD ": mode probability needs probability: p with 0 <= p <= 1");
            return SB_ECONFIG;
        }
        in->probability = p;
    }

    const json_t *delay = json_object_get(config, "delay");
    const json_t *delay_ms = json_object_get(config, "delay_ms");
    if (delay && delay_ms) {
        sb__mod_err(errstr, errstr_size, MOD ": give delay or delay_ms, not both");
        return SB_ECONFIG;
    }
    if (delay || delay_ms) {
        if (in->outcome != SB_RETRY) {
            sb__mod_err(errstr, errstr_size, MOD ": %s only applies to outcome: retry",
                        delay ? "delay" : "delay_ms");
            return SB_ECONFIG;
        }
        rc = read_delay(delay ? "delay" : "delay_ms", delay ? delay : delay_ms, &in->delay_ms,
                        errstr, errstr_size);
        if (rc != SB_EOK)
            return rc;
        in->has_delay = true;
    }

    if ((rc = read_text(config, "crash_id", &in->crash_id, errstr, errstr_size)) != SB_EOK)
        return rc;
    return read_text(config, "reason", &in->reason, errstr, errstr_size);
}

static int fail_init(json_t *config, void **ud, char *errstr, size_t errstr_size)
{
    fail_inst_t *in = sb_calloc(1, sizeof *in);
    if (!in) {
        sb__mod_err(errstr, errstr_size, MOD ": out of memory");
        return SB_ENOMEM;
    }
    in->outcome = SB_RETRY;
    in->mode = MODE_ALWAYS;
    int rc = parse_config(config, in, errstr, errstr_size);
    if (rc != SB_EOK)
        goto err;
    *ud = in;
    return SB_EOK;
err:
    fail_shutdown(in);
    return rc;
}

/* init acquires nothing but memory: the check is init then shutdown. */
static int fail_check(json_t *config, char *errstr, size_t errstr_size)
{
    void *ud = NULL;
    int rc = fail_init(config, &ud, errstr, errstr_size);
    fail_shutdown(ud);
    return rc;
}

/* A uniform number in [0, 1) from the event id and attempt: FNV-1a, then splitmix64's
 * finaliser so that neighbouring ids and attempts spread out. */
static double event_draw(const char *id, unsigned attempt)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3u;
    }
    h ^= (uint64_t)attempt * 0x9e3779b97f4a7c15u;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9u;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebu;
    h ^= h >> 31;
    return (double)(h >> 11) * (1.0 / 9007199254740992.0); /* 53 bits / 2^53 */
}

static sb_outcome_t fail_event(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    const fail_inst_t *in = ud;
    if (!in) {
        sb_ctx_reason(ctx, DEFAULT_REASON);
        return SB_RETRY;
    }
    if (in->crash_id && !strcmp(sb_event_id(ev), in->crash_id))
        abort(); /* a crashing handler, for the crash guard's tests */
    unsigned attempt = sb_event_attempt(ev);
    bool fail;
    switch (in->mode) {
    case MODE_TIMES:
        fail = attempt <= in->times;
        break;
    case MODE_PROBABILITY:
        fail = event_draw(sb_event_id(ev), attempt) < in->probability;
        break;
    case MODE_ALWAYS:
    default:
        fail = true;
        break;
    }
    if (!fail)
        return SB_OK;
    sb_ctx_reason(ctx, "%s", in->reason ? in->reason : DEFAULT_REASON);
    if (in->outcome == SB_RETRY && in->has_delay)
        sb_ctx_retry_after(ctx, in->delay_ms);
    return in->outcome;
}

static const sb_handler_def_t fail_handlers[] = {
    {.name = "fail", .pattern = "#", .fn = fail_event},
    {0},
};

const sb_module_t sb__mod_fail = {
    SB_MODULE_HEADER,          .name = "fail",    .version = "1.0.0",
    .handlers = fail_handlers, .init = fail_init, .shutdown = fail_shutdown,
    .check = fail_check,
};
