/* Intake benchmark (issue 3): decoding a 314-byte DataSyncCompletedEvent (type from the
 * routing key, id from the body) against the naive path every consumer starts with,
 * json_loadb + 3 field reads, on the same bytes in the same run.
 *
 *   bench_intake [SECONDS_PER_CASE] [SCHEMA_DIR]
 *
 * Prints msgs/s, ns/msg and allocations per message for each case and the ratios against
 * the bare parse. Build it Release without sanitizers for figures worth quoting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "switchboard/switchboard.h"
#include "envelope.h"
#include "schema.h"

#include "bench_common.h"

typedef int (*step_fn)(void *ctx);

typedef struct result {
    const char *name;
    double rate;
    double allocs_per_msg;
} result_t;

static result_t run(const char *name, step_fn fn, void *ctx, double seconds)
{
    /* Warm up, then count in batches until the time is up. */
    for (int i = 0; i < 10000; i++)
        fn(ctx);
    allocs = 0;
    unsigned long long n = 0;
    double t0 = now_s(), t;
    do {
        for (int i = 0; i < 10000; i++)
            if (fn(ctx) != 0) {
                fprintf(stderr, "%s: step failed\n", name);
                exit(1);
            }
        n += 10000;
        t = now_s();
    } while (t - t0 < seconds);
    result_t r = {name, n / (t - t0), (double)allocs / n};
    return r;
}

static int bare_parse(void *ctx)
{
    json_error_t e;
    json_t *j = json_loadb(BODY, sizeof BODY - 1, 0, &e);
    if (!j)
        return -1;
    const char *job = json_string_value(json_object_get(j, "JobId"));
    const char *src = json_string_value(json_object_get(j, "SourceSystem"));
    json_int_t n = json_integer_value(json_object_get(j, "RecordsProcessed"));
    sink += (long long)(job[0] + src[0] + n);
    json_decref(j);
    return 0;
}

typedef struct intake_ctx {
    sb__envelope_opts_t opts;
    sb__intake_msg_t msg;
    sb_event_t ev;
    const sb__schema_t *schema;
} intake_ctx_t;

static int intake(void *p)
{
    intake_ctx_t *c = p;
    if (sb__envelope_decode(&c->opts, &c->msg, &c->ev) != SB_EOK)
        return -1;
    sink += c->ev.id[0] + c->ev.type[0];
    return 0;
}

static int intake_reads(void *p)
{
    intake_ctx_t *c = p;
    if (intake(p) != 0)
        return -1;
    const char *job, *src;
    int64_t n;
    if (sb__event_get_str(&c->ev, "JobId", &job, NULL) ||
        sb__event_get_str(&c->ev, "SourceSystem", &src, NULL) ||
        sb__event_get_int(&c->ev, "RecordsProcessed", &n))
        return -1;
    sink += job[0] + src[0] + n;
    return 0;
}

static int intake_schema(void *p)
{
    intake_ctx_t *c = p;
    if (intake(p) != 0)
        return -1;
    json_t *j = sb__event_json(&c->ev);
    sb__schema_error_t errs[4];
    size_t nerr;
    if (!j || sb__schema_validate(c->schema, j, errs, 4, &nerr) != SB_EOK)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    const char *schema_dir = argc > 2 ? argv[2] : SCHEMA_DIR;
    sb_set_allocator(count_malloc, count_realloc, free);

    intake_ctx_t c = {.msg = {.body = BODY,
                              .body_len = sizeof BODY - 1,
                              .routing_key = "DataSyncCompletedEvent"}};
    sb__event_init(&c.ev);
    sb__schema_set_t *set;
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/DataSyncCompletedEvent.schema.json", schema_dir);
    if (sb__schema_set_new(&set) != SB_EOK ||
        sb__schema_load(set, path, &c.schema, err, sizeof err) != SB_EOK) {
        fprintf(stderr, "schema: %s\n", err);
        return 1;
    }

    printf("intake benchmark: %zu-byte DataSyncCompletedEvent, %.1f s per case\n\n",
           sizeof BODY - 1, secs);
    result_t r[4];
    r[0] = run("bare json_loadb + 3 field reads", bare_parse, NULL, secs);
    r[1] = run("switchboard intake (no schema)", intake, &c, secs);
    r[2] = run("switchboard intake + 3 field reads", intake_reads, &c, secs);
    r[3] = run("switchboard intake + schema", intake_schema, &c, secs);
    sb__event_reset(&c.ev);
    printf("%-38s %12s %10s %14s %8s\n", "case", "msgs/s", "ns/msg", "allocs/msg", "ratio");
    for (int i = 0; i < 4; i++)
        printf("%-38s %12.0f %10.1f %14.2f %7.2fx\n", r[i].name, r[i].rate, 1e9 / r[i].rate,
               r[i].allocs_per_msg, r[i].rate / r[0].rate);
    printf("\ngoals: intake >= 2.00x bare (got %.2fx), intake + schema >= 0.50x bare (got %.2fx)\n",
           r[1].rate / r[0].rate, r[3].rate / r[0].rate);
    sb__schema_set_destroy(set);
    sb_set_allocator(NULL, NULL, NULL);
    return 0;
}
