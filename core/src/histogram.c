/* histogram.c: recording into a fixed-bucket latency histogram (see histogram.h). The
 * Prometheus rendering lives in metrics.c; recording lives here so the dispatcher does not
 * depend on the exposition. */
#include <stddef.h>

#include "histogram.h"

const double sb__histogram_bounds[SB__HIST_NBOUNDS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

void sb__histogram_observe(sb__histogram_t *h, double seconds)
{
    if (!(seconds > 0)) /* negative, zero or NaN */
        seconds = 0;
    size_t i = 0;
    while (i < SB__HIST_NBOUNDS && seconds > sb__histogram_bounds[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum += seconds;
}
