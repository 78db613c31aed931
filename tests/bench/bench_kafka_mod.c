/* Handler module for bench_kafka.sh: counts events and times them. Config:
 *   n: N        events to wait for (required)
 *   read: bool  read 3 body fields per event, as bench_reader does (default false: no-op)
 * At the Nth event it prints "events=N seconds=S rate=R" (first to Nth event) to stderr and
 * raises SIGTERM, so `switchboard run` shuts down gracefully. Bench code: not an example. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <switchboard/handler.h>

typedef struct bench {
    long long n, seen;
    int read;
    struct timespec t0;
} bench_t;

static volatile long long sink;

static sb_outcome_t on_event(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    bench_t *b = ud;
    if (b->seen++ == 0)
        clock_gettime(CLOCK_MONOTONIC, &b->t0);
    if (b->read) {
        const char *job = sb_event_get_str(ev, "JobId", "");
        const char *src = sb_event_get_str(ev, "SourceSystem", "");
        int64_t r = sb_event_get_int(ev, "RecordsProcessed", 0);
        sink += job[0] + src[0] + r;
    }
    if (b->seen == b->n) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - b->t0.tv_sec) + (t1.tv_nsec - b->t0.tv_nsec) / 1e9;
        fprintf(stderr, "events=%lld seconds=%.3f rate=%.0f\n", b->n, s, b->n / s);
        raise(SIGTERM);
    }
    return SB_OK;
}

static int bench_init(json_t *config, void **ud, char *errstr, size_t errstr_size)
{
    bench_t *b = calloc(1, sizeof *b);
    if (!b)
        return -1;
    b->n = json_integer_value(json_object_get(config, "n"));
    b->read = json_is_true(json_object_get(config, "read"));
    if (b->n <= 0) {
        snprintf(errstr, errstr_size, "bench_kafka_mod: config.n is required");
        free(b);
        return -1;
    }
    *ud = b;
    return 0;
}

static void bench_shutdown(void *ud)
{
    free(ud);
}

static const sb_handler_def_t handlers[] = {
    {.name = "count", .pattern = "#", .fn = on_event},
    {0},
};

static const sb_module_t bench = {
    SB_MODULE_HEADER,     .name = "bench_kafka_mod", .version = "1",
    .handlers = handlers, .init = bench_init,        .shutdown = bench_shutdown,
};

SB_MODULE_DEFINE(bench)
