/* histogram.h: a fixed-bucket latency histogram (the type; rendering is in metrics.c).
 * Its own header so that the dispatcher can embed one per handler without depending on the
 * metrics exposition. */
#ifndef SB_HISTOGRAM_H
#define SB_HISTOGRAM_H

#include <stdint.h>

/* Upper bounds (seconds) of the finite buckets: 0.5 ms .. 10 s. A +Inf bucket follows. */
#define SB__HIST_NBOUNDS 14
extern const double sb__histogram_bounds[SB__HIST_NBOUNDS];

/* A fixed-bucket latency histogram. Zero-initialise it (`= {0}` or calloc); no destroy.
 * Loop thread only (plain counters, no atomics). */
typedef struct sb__histogram {
    uint64_t buckets[SB__HIST_NBOUNDS + 1]; /* per-bucket counts, not cumulative; last: +Inf */
    uint64_t count;
    double sum; /* seconds */
} sb__histogram_t;

/* Records one observation. Negative or NaN values count as 0. */
void sb__histogram_observe(sb__histogram_t *h, double seconds);

/* Writes the _bucket (cumulative, with le="..."), _sum and _count samples of one series of
 * family `name` (no HELP/TYPE lines: the caller writes them once per family). When
 * label_name is not NULL, every sample carries label_name="label_value" (escaped) before
 * `le`. SB_EOK or SB_ENOMEM. */
#endif
