/* Handler module for bench_amqp.sh: does nothing but count. With config `stop_after: N` it
 * prints the time from its first event to its Nth (the consumer's throughput, startup
 * excluded) to stderr and raises SIGTERM, so the switchboard process exits gracefully. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <switchboard/handler.h>

typedef struct noop {
    long long n, stop_after;
    struct timespec t0;
} noop_t;

static int noop_init(json_t *config, void **ud, char *errstr, size_t errstr_size)
{
    noop_t *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    json_t *v = config ? json_object_get(config, "stop_after") : NULL;
    s->stop_after = json_is_integer(v) ? (long long)json_integer_value(v) : 0;
    *ud = s;
    return 0;
}

static void noop_shutdown(void *ud)
{
    free(ud);
}

static sb_outcome_t on_event(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    noop_t *s = ud;
    if (s->n++ == 0)
        clock_gettime(CLOCK_MONOTONIC, &s->t0);
    if (s->stop_after && s->n == s->stop_after) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - s->t0.tv_sec) + (t1.tv_nsec - s->t0.tv_nsec) / 1e9;
        fprintf(stderr, "NOOP_DONE %lld %.3f %.0f\n", s->n, secs, (double)(s->n - 1) / secs);
        raise(SIGTERM);
    }
    return SB_OK;
}

static const sb_handler_def_t handlers[] = {
    {.name = "noop", .pattern = "#", .fn = on_event},
    {0},
};

static const sb_module_t noop = {
    SB_MODULE_HEADER,     .name = "bench_noop", .version = "1",
    .handlers = handlers, .init = noop_init,    .shutdown = noop_shutdown,
};

SB_MODULE_DEFINE(noop)
