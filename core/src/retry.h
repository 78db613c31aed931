/* retry.h: retry policies (how long to wait before the next attempt, and when to give up).
 *
 * Pure arithmetic: the caller supplies the random value used for jitter, so every result is
 * reproducible in tests. Attempts are numbered from 1 (the first delivery); attempt 2 is the
 * first retry. sb__random_u64() is the random source the dispatcher feeds in. */
#ifndef SB_RETRY_H
#define SB_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef enum sb__retry_kind {
    SB__RETRY_FIXED,      /* base, base, base, ... */
    SB__RETRY_LINEAR,     /* base, 2*base, 3*base, ... */
    SB__RETRY_EXPONENTIAL /* base, 2*base, 4*base, ... */
} sb__retry_kind_t;

typedef struct sb__retry_policy {
    sb__retry_kind_t kind;
    uint64_t base_delay_ms;
    uint64_t max_delay_ms; /* caps every single delay */
    unsigned max_attempts; /* attempts in all, the first delivery included */
    bool jitter;           /* "full jitter": uniform in [0, computed delay] */
} sb__retry_policy_t;

/* The delay in milliseconds before attempt `next_attempt` (2 = the first retry; 0 and 1 are
 * treated as 2). fixed: base; linear: base * (next_attempt - 1); exponential:
 * base * 2^(next_attempt - 2); always capped at max_delay_ms, without overflow for any
 * attempt number. With jitter the result is uniform in [0, capped], drawn from `rnd` (any
 * uniformly distributed 64-bit value, e.g. sb__random_u64()); without jitter rnd is unused.
 * Any thread. */
uint64_t sb__retry_delay_ms(const sb__retry_policy_t *p, unsigned next_attempt, uint64_t rnd);

/* True when no attempt should follow the failed attempt number `attempt_that_failed`, i.e.
 * when it is >= max_attempts (dead-letter with reason max-attempts). */
bool sb__retry_exhausted(const sb__retry_policy_t *p, unsigned attempt_that_failed);

/* Reads a policy from the configuration keys <prefix>.policy, .base_delay, .max_delay,
 * .max_attempts and .jitter; prefix is "retry" or "handlers[N].retry". A key that is absent
 * (handler keys inherit, see config.h) takes its value from `inherit`; with inherit NULL an
 * absent key is an error. Fails with SB_ECONFIG and a one-line reason naming the key when a
 * value is missing or mistyped, or when base_delay > max_delay after inheritance; SB_EINVAL
 * on NULL arguments. *out is written only on success. */
int sb__retry_policy_from_config(const sb__config_t *cfg, const char *prefix,
                                 const sb__retry_policy_t *inherit, sb__retry_policy_t *out,
                                 char *errstr, size_t errstr_size);

/* Name of a kind as the configuration writes it ("exponential"); "unknown" otherwise. */
const char *sb__retry_kind_name(sb__retry_kind_t kind);

/* A fast, thread-safe 64-bit pseudo-random value for jitter (splitmix64 over an atomic
 * counter seeded once per process from getrandom()). Not for cryptography. Any thread. */
uint64_t sb__random_u64(void);

#endif
