/* retry.c: retry policies: the delay before the next attempt, exhaustion, and reading a
 * policy (with per-handler inheritance) from the configuration.
 *
 * Design: the delay is pure integer arithmetic over an injected random value, so the maths
 * is tested exactly and jitter is reproducible; every multiplication is guarded by a
 * division or shift against the cap, so no attempt number overflows. Jitter is "full
 * jitter" (uniform in [0, delay]), which spreads a burst of retries best. The random source
 * is splitmix64 over one atomic counter: lock-free, thread-safe, seeded once.
 *
 * Does not schedule anything (the dispatcher arms timers or asks the transport to delay) and
 * does not count attempts (the transport carries the attempt number with the message). */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "switchboard/error.h"
#include "retry.h"
#include "units.h"

/* ---- delays --------------------------------------------------------------------------- */

static uint64_t undithered_delay(const sb__retry_policy_t *p, unsigned next_attempt)
{
    const uint64_t base = p->base_delay_ms, cap = p->max_delay_ms;
    uint64_t d;
    if (next_attempt < 2)
        next_attempt = 2;
    switch (p->kind) {
    case SB__RETRY_LINEAR: {
        uint64_t k = (uint64_t)next_attempt - 1;
        d = (base != 0 && k > cap / base) ? cap : base * k;
        break;
    }
    case SB__RETRY_EXPONENTIAL: {
        unsigned shift = next_attempt - 2;
        /* base << shift <= cap exactly when base <= cap >> shift. */
        if (base == 0)
            d = 0;
        else
            d = (shift < 64 && base <= (cap >> shift)) ? base << shift : cap;
        break;
    }
    case SB__RETRY_FIXED:
    default:
        d = base;
        break;
    }
    return d < cap ? d : cap;
}

uint64_t sb__retry_delay_ms(const sb__retry_policy_t *p, unsigned next_attempt, uint64_t rnd)
{
    uint64_t d = undithered_delay(p, next_attempt);
    if (!p->jitter)
        return d;
    if (d == UINT64_MAX)
        return rnd;
    /* Modulo bias is below 2^-23 for any delay under 2^40 ms (35 years): negligible. */
    return rnd % (d + 1);
}

bool sb__retry_exhausted(const sb__retry_policy_t *p, unsigned attempt_that_failed)
{
    return attempt_that_failed >= p->max_attempts;
}

const char *sb__retry_kind_name(sb__retry_kind_t kind)
{
    switch (kind) {
    case SB__RETRY_FIXED:
        return "fixed";
    case SB__RETRY_LINEAR:
        return "linear";
    case SB__RETRY_EXPONENTIAL:
        return "exponential";
    }
    return "unknown";
}

/* ---- configuration -------------------------------------------------------------------- */

typedef struct reader {
    const sb__config_t *cfg;
    const char *prefix;
    char *errstr;
    size_t errstr_size;
} reader_t;

/* The value at <prefix>.<key>, NULL if absent. SB_EINVAL when the path does not fit. */
static int lookup_key(const reader_t *r, const char *key, json_t **out)
{
    char path[256];
    int len = snprintf(path, sizeof path, "%s.%s", r->prefix, key);
    if (len < 0 || (size_t)len >= sizeof path) {
        if (r->errstr && r->errstr_size)
            snprintf(r->errstr, r->errstr_size, "retry: configuration prefix too long");
        return SB_EINVAL;
    }
    *out = sb__config_json(r->cfg, path);
    return SB_EOK;
}

static int key_error(const reader_t *r, const char *key, const char *what)
{
    if (r->errstr && r->errstr_size)
        snprintf(r->errstr, r->errstr_size, "%s: %s.%s: %s", sb__config_source(r->cfg), r->prefix,
                 key, what);
    return SB_ECONFIG;
}

/* Readers: an absent key takes its value from `inh` (error without one). read_u64 also says
 * whether the value was inherited, if `inherited` is not NULL. */
static int read_policy(const reader_t *r, const sb__retry_policy_t *inh, sb__retry_kind_t *v)
{
    json_t *j;
    int rc = lookup_key(r, "policy", &j);
    if (rc != SB_EOK)
        return rc;
    if (!j) {
        if (!inh)
            return key_error(r, "policy", "not set and nothing to inherit");
        *v = inh->kind;
        return SB_EOK;
    }
    const char *s = json_string_value(j);
    if (!s)
        return key_error(r, "policy", "expected a string");
    static const sb__retry_kind_t kinds[] = {SB__RETRY_FIXED, SB__RETRY_LINEAR,
                                             SB__RETRY_EXPONENTIAL};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(s, sb__retry_kind_name(kinds[i])) == 0) {
            *v = kinds[i];
            return SB_EOK;
        }
    }
    return key_error(r, "policy", "expected one of fixed, linear, exponential");
}

static int read_u64(const reader_t *r, const char *key, uint64_t inh_value,
                    const sb__retry_policy_t *inh, uint64_t max, uint64_t *v, bool *inherited)
{
    json_t *j;
    int rc = lookup_key(r, key, &j);
    if (rc != SB_EOK)
        return rc;
    if (inherited)
        *inherited = !j;
    if (!j) {
        if (!inh)
            return key_error(r, key, "not set and nothing to inherit");
        *v = inh_value;
        return SB_EOK;
    }
    if (!json_is_integer(j))
        return key_error(r, key, "expected an integer");
    json_int_t n = json_integer_value(j);
    if (n < 0 || (uint64_t)n > max)
        return key_error(r, key, "out of range");
    *v = (uint64_t)n;
    return SB_EOK;
}

static int read_bool(const reader_t *r, const char *key, const sb__retry_policy_t *inh, bool *v)
{
    json_t *j;
    int rc = lookup_key(r, key, &j);
    if (rc != SB_EOK)
        return rc;
    if (!j) {
        if (!inh)
            return key_error(r, key, "not set and nothing to inherit");
        *v = inh->jitter;
        return SB_EOK;
    }
    if (!json_is_boolean(j))
        return key_error(r, key, "expected a boolean");
    *v = json_is_true(j);
    return SB_EOK;
}

int sb__retry_policy_from_config(const sb__config_t *cfg, const char *prefix,
                                 const sb__retry_policy_t *inherit, sb__retry_policy_t *out,
                                 char *errstr, size_t errstr_size)
{
    if (!cfg || !prefix || !out) {
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size, "retry: missing configuration or output");
        return SB_EINVAL;
    }
    const reader_t r = {cfg, prefix, errstr, errstr_size};
    sb__retry_policy_t p;
    bool inh_base = false, inh_max = false;
    uint64_t attempts = 0;
    int rc;
    if ((rc = read_policy(&r, inherit, &p.kind)) != SB_EOK ||
        (rc = read_u64(&r, "base_delay", inherit ? inherit->base_delay_ms : 0, inherit, UINT64_MAX,
                       &p.base_delay_ms, &inh_base)) != SB_EOK ||
        (rc = read_u64(&r, "max_delay", inherit ? inherit->max_delay_ms : 0, inherit, UINT64_MAX,
                       &p.max_delay_ms, &inh_max)) != SB_EOK ||
        (rc = read_u64(&r, "max_attempts", inherit ? inherit->max_attempts : 0, inherit, UINT_MAX,
                       &attempts, NULL)) != SB_EOK ||
        (rc = read_bool(&r, "jitter", inherit, &p.jitter)) != SB_EOK)
        return rc;
    if (attempts == 0)
        return key_error(&r, "max_attempts", "must be at least 1");
    p.max_attempts = (unsigned)attempts;
    if (p.base_delay_ms > p.max_delay_ms) {
        char b[32], m[32];
        sb__format_duration_ms(p.base_delay_ms, b, sizeof b);
        sb__format_duration_ms(p.max_delay_ms, m, sizeof m);
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size,
                     "%s: %s: base_delay (%s%s) is greater than max_delay (%s%s)",
                     sb__config_source(cfg), prefix, b, inh_base ? ", inherited" : "", m,
                     inh_max ? ", inherited" : "");
        return SB_ECONFIG;
    }
    *out = p;
    return SB_EOK;
}

/* ---- random source -------------------------------------------------------------------- */

#define GOLDEN_GAMMA 0x9e3779b97f4a7c15u

static atomic_uint_fast64_t rng_state;
static pthread_once_t rng_once = PTHREAD_ONCE_INIT;

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void rng_seed(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        /* No entropy yet (early boot) or no syscall: jitter needs spread, not secrecy. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = mix64((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
               mix64((uint64_t)(uintptr_t)&seed);
    }
    atomic_store(&rng_state, seed);
}

uint64_t sb__random_u64(void)
{
    pthread_once(&rng_once, rng_seed);
    /* splitmix64: each caller takes its own step of the Weyl sequence, then mixes it. */
    uint64_t x =
        (uint64_t)atomic_fetch_add_explicit(&rng_state, GOLDEN_GAMMA, memory_order_relaxed);
    return mix64(x + GOLDEN_GAMMA);
}
