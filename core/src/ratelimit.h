/* ratelimit.h: pacing for `switchboard dlq replay --rate N/s`, and the TTY progress line.
 *
 * The limiter is a token bucket in its GCRA form (one "theoretical arrival time" instead of a
 * token count): message k may go at start + k * period / N, and up to `burst` messages may
 * go at once after an idle spell. Time is whatever clock the caller passes in (monotonic
 * microseconds in the CLI, a fake clock in tests), so it is fully deterministic, and the
 * arithmetic is exact (whole microseconds plus a remainder in 1/N), so that 3/s gives
 * exactly 3 messages per second over any length of time, with no drift.
 *
 * The struct is transparent so that it lives on the stack; touch it only through these
 * functions. Not thread-safe. */
#ifndef SB_RATELIMIT_H
#define SB_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct sb__ratelimit {
    uint64_t n;               /* messages per period */
    uint64_t inc_us, inc_rem; /* period / n, as whole µs + remainder (in 1/n µs) */
    uint64_t tau_us, tau_rem; /* (burst - 1) * period / n */
    int started;
    int64_t tat_us;   /* theoretical arrival time of the next message */
    uint64_t tat_rem; /* + tat_rem / n µs */
} sb__ratelimit_t;

/* Parses "N/s", "N/m" or "N/h" (N an integer from 1 to 1,000,000,000; blanks around the
 * parts allowed). *n and *period_us get N and the period. SB_EOK, SB_EPARSE or SB_ERANGE
 * with a one-line reason in errstr (may be NULL). */
int sb__ratelimit_parse(const char *s, uint64_t *n, uint64_t *period_us, char *errstr,
                        size_t errstr_size);

/* n messages per period_us (both >= 1), at most `burst` (>= 1; 0 is read as 1) at once. */
void sb__ratelimit_init(sb__ratelimit_t *rl, uint64_t n, uint64_t period_us, uint64_t burst);

/* Asks to send one message at now_us. 0: send it now (the message is counted). Otherwise
 * the microseconds to wait before asking again (nothing is counted). The first call always
 * answers 0. A clock that goes backwards only makes the wait longer by as much. */
int64_t sb__ratelimit_delay_us(sb__ratelimit_t *rl, int64_t now_us);

/* The progress line, e.g. "1200/5000  412.5/s  ETA 00:09": done/total, the average rate
 * since the start (elapsed_us), and the time left at that rate as mm:ss (minutes grow past
 * 59: "125:07"). total 0 means unknown: "1200/?  412.5/s". Before any rate is known the ETA
 * is "--:--". Always NUL-terminates buf (truncating); returns the length it needed, like
 * snprintf. Pure. */
size_t sb__progress_format(char *buf, size_t size, uint64_t done, uint64_t total,
                           uint64_t elapsed_us);

#endif
