/* ratelimit.c: the replay rate limiter (GCRA) and the progress line.
 *
 * Design: exact rational time (µs plus a remainder in 1/n µs) instead of floating-point
 * tokens, so the schedule is reproducible in tests and never drifts; the caller owns the
 * clock and the sleeping. The progress line is a pure formatter; deciding when to redraw
 * it, and whether stdout is a TTY, is the CLI's business.
 *
 * Not here: sleeping, clocks, terminal control sequences. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "switchboard/error.h"
#include "errf.h"
#include "ratelimit.h"

#define MAX_N     1000000000ull
#define MAX_BURST 1000000ull

static const char *skip_blanks(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

int sb__ratelimit_parse(const char *s, uint64_t *n, uint64_t *period_us, char *errstr,
                        size_t errstr_size)
{
    if (!s)
        return sb__errf(errstr, errstr_size, SB_EINVAL, "--rate: no value given");
    const char *p = skip_blanks(s);
    uint64_t acc = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
        acc = acc * 10 + (uint64_t)(*p - '0');
        p++;
        if (++digits > 10 || acc > MAX_N)
            return sb__errf(errstr, errstr_size, SB_ERANGE,
                            "--rate: \"%s\" is too fast (at most 1000000000 per unit)", s);
    }
    if (!digits)
        goto bad;
    if (acc == 0)
        return sb__errf(errstr, errstr_size, SB_ERANGE,
                        "--rate: \"%s\": the rate must be at least 1 per unit", s);
    p = skip_blanks(p);
    if (*p++ != '/')
        goto bad;
    p = skip_blanks(p);
    uint64_t per;
    switch (*p) {
    case 's':
        per = 1000000;
        break;
    case 'm':
        per = 60000000;
        break;
    case 'h':
        per = 3600000000ull;
        break;
    default:
        goto bad;
    }
    p = skip_blanks(p + 1);
    if (*p)
        goto bad;
    *n = acc;
    *period_us = per;
    return SB_EOK;
bad:
    return sb__errf(errstr, errstr_size, SB_EPARSE,
                    "--rate: invalid rate \"%s\": expected N/s, N/m or N/h (e.g. 100/s)", s);
}

void sb__ratelimit_init(sb__ratelimit_t *rl, uint64_t n, uint64_t period_us, uint64_t burst)
{
    memset(rl, 0, sizeof *rl);
    if (n < 1)
        n = 1;
    if (n > MAX_N)
        n = MAX_N;
    if (period_us < 1)
        period_us = 1;
    if (burst < 1)
        burst = 1;
    if (burst > MAX_BURST)
        burst = MAX_BURST;
    rl->n = n;
    rl->inc_us = period_us / n;
    rl->inc_rem = period_us % n;
    uint64_t b = burst - 1;
    rl->tau_us = b * rl->inc_us + (b * rl->inc_rem) / n;
    rl->tau_rem = (b * rl->inc_rem) % n;
}

int64_t sb__ratelimit_delay_us(sb__ratelimit_t *rl, int64_t now_us)
{
    if (!rl->started) {
        rl->started = 1;
        rl->tat_us = now_us;
        rl->tat_rem = 0;
    }
    /* allowed_at = tat - tau */
    int64_t a_us = rl->tat_us - (int64_t)rl->tau_us;
    uint64_t a_rem = rl->tat_rem;
    if (a_rem < rl->tau_rem) {
        a_rem += rl->n;
        a_us--;
    }
    a_rem -= rl->tau_rem;
    if (now_us < a_us || (now_us == a_us && a_rem > 0))
        return a_us - now_us + (a_rem > 0);
    /* Allowed: tat = max(tat, now) + T, where a caller arriving at tat rounded up to the
     * microsecond (as the wait it was given is) counts as on time, so no fraction is lost. */
    if (now_us > rl->tat_us + (rl->tat_rem > 0)) {
        rl->tat_us = now_us;
        rl->tat_rem = 0;
    }
    rl->tat_us += (int64_t)rl->inc_us;
    rl->tat_rem += rl->inc_rem;
    if (rl->tat_rem >= rl->n) {
        rl->tat_rem -= rl->n;
        rl->tat_us++;
    }
    return 0;
}

size_t sb__progress_format(char *buf, size_t size, uint64_t done, uint64_t total,
                           uint64_t elapsed_us)
{
    char counts[48], rate[32], eta[32];
    if (total)
        snprintf(counts, sizeof counts, "%llu/%llu", (unsigned long long)done,
                 (unsigned long long)total);
    else
        snprintf(counts, sizeof counts, "%llu/?", (unsigned long long)done);
    double r = elapsed_us ? (double)done * 1e6 / (double)elapsed_us : 0.0;
    snprintf(rate, sizeof rate, "%.1f/s", r);
    eta[0] = '\0';
    if (total) {
        if (done >= total) {
            snprintf(eta, sizeof eta, "  ETA 00:00");
        } else if (r <= 0.0) {
            snprintf(eta, sizeof eta, "  ETA --:--");
        } else {
            /* remaining * elapsed / done, in that order: exact for small numbers. */
            double secs = ceil((double)(total - done) * (double)elapsed_us / (double)done / 1e6);
            if (secs > 6e9) {
                snprintf(eta, sizeof eta, "  ETA --:--");
            } else {
                unsigned long long s = (unsigned long long)secs;
                snprintf(eta, sizeof eta, "  ETA %02llu:%02llu", s / 60, s % 60);
            }
        }
    }
    int n = snprintf(buf, size, "%s  %s%s", counts, rate, eta);
    return n < 0 ? 0 : (size_t)n;
}
