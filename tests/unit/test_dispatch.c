/* test_dispatch.c: every dispatch and settlement path of the dispatcher (settle.c), end to
 * end through a pipeline built from YAML: memory transport (without loopback), memory or no
 * idempotency store, built-in modules record/fail and the test module asyncmod.so.
 *
 * Design: each test builds its own pipeline, injects messages and turns the loop once at a
 * time until a predicate on the transport and dispatcher holds or a deadline passes (never a
 * bare sleep). Settlements are captured through sb__dispatcher_observe() with a monotonic
 * timestamp, so retry spacing is measured, not assumed. Assertions read the memory
 * transport (stats, dead-letter queue with its headers, published records), the
 * dispatcher's stats and the per-handler counters.
 * Not here: graceful shutdown (tests/fault/test_dispatch_shutdown.c), the retry maths in
 * isolation (test_retry.c), the transport on its own (test_transport_memory.c). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "switchboard/switchboard.h"
#include "config.h"
#include "datetime.h"
#include "pipeline.h"
#include "registry.h"
#include "settle.h"
#include "transport_memory.h"

#define MAX_SETTLES 256

typedef struct settle_rec {
    sb__settlement_t how;
    uint64_t delay_ms;
    unsigned attempt;
    char reason[32];
    char handler[64];
    char error[256];
    int64_t at_us; /* monotonic */
} settle_rec_t;

typedef struct fx {
    sb__config_t *cfg;
    sb__pipeline_t *p;
    char dir[64];
    settle_rec_t rec[MAX_SETTLES];
    size_t n_rec; /* every settlement, also past MAX_SETTLES */
    size_t max_inflight;
    size_t want; /* final settlements (acks + confirmed dead letters) to wait for */
} fx_t;

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

static void observe(void *arg, const sb__settle_info_t *info)
{
    fx_t *f = arg;
    size_t inflight = sb__dispatcher_inflight(f->p->dp);
    if (inflight > f->max_inflight)
        f->max_inflight = inflight;
    if (f->n_rec < MAX_SETTLES) {
        settle_rec_t *r = &f->rec[f->n_rec];
        r->how = info->how;
        r->delay_ms = info->delay_ms;
        r->attempt = info->attempt;
        copy(r->reason, sizeof r->reason, info->reason);
        copy(r->handler, sizeof r->handler, info->handler);
        copy(r->error, sizeof r->error, info->error);
        r->at_us = mono_us();
    }
    f->n_rec++;
}

/* Replaces every @DIR@ (the fixture's temp dir) and @MOD@ (asyncmod.so) in tmpl. */
static char *expand(const fx_t *f, const char *tmpl)
{
    size_t cap = strlen(tmpl) * 2 + 4096, off = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    for (const char *s = tmpl; *s;) {
        const char *rep = NULL;
        if (!strncmp(s, "@DIR@", 5))
            rep = f->dir;
        else if (!strncmp(s, "@MOD@", 5))
            rep = MOD_ASYNC;
        if (rep) {
            size_t l = strlen(rep);
            assert_true(off + l + 1 < cap);
            memcpy(out + off, rep, l);
            off += l;
            s += 5;
        } else {
            assert_true(off + 2 < cap);
            out[off++] = *s++;
        }
    }
    out[off] = '\0';
    return out;
}

static fx_t *fx_new(const char *yaml_body)
{
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sb-dispatch-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char *body = expand(f, yaml_body);
    char *yaml = malloc(strlen(body) + 256);
    assert_non_null(yaml);
    int n = sprintf(yaml,
                    "log:\n  level: error\n"
                    "transport:\n  kind: memory\n  memory:\n    loopback: false\n%s",
                    body);
    free(body);
    char err[512] = "";
    if (sb__config_load_buffer(yaml, (size_t)n, "test_dispatch.yaml", &f->cfg, err, sizeof err) !=
        SB_EOK)
        fail_msg("config: %s\n%s", err, yaml);
    free(yaml);
    sb__pipeline_configure_logging(f->cfg);
    if (sb__pipeline_new(f->cfg, &f->p, err, sizeof err) != SB_EOK)
        fail_msg("pipeline: %s", err);
    sb__dispatcher_observe(f->p->dp, observe, f);
    if (sb__pipeline_start(f->p, err, sizeof err) != SB_EOK)
        fail_msg("start: %s", err);
    return f;
}

static void fx_destroy(fx_t *f)
{
    sb__pipeline_destroy(f->p);
    sb__config_destroy(f->cfg);
    DIR *d = opendir(f->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char path[512];
            snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(f->dir);
    free(f);
}

/* ---- driving the loop ----------------------------------------------------------------- */

static void give_up(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

typedef bool (*pred_fn)(fx_t *f);

/* Turns the loop until done(f) or ms pass; samples the in-flight count after every turn. */
static bool run_until(fx_t *f, pred_fn done, unsigned ms)
{
    struct event_base *base = sb__runtime_base(f->p->rt);
    struct event *t = evtimer_new(base, give_up, base);
    assert_non_null(t);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(t, &tv);
    while (!done(f)) {
        if (event_base_loop(base, EVLOOP_ONCE) != 0 || event_base_got_break(base))
            break;
        size_t in = sb__dispatcher_inflight(f->p->dp);
        if (in > f->max_inflight)
            f->max_inflight = in;
    }
    event_free(t);
    return done(f);
}

static sb__memtx_stats_t mstats(fx_t *f)
{
    sb__memtx_stats_t s;
    sb__memtx_stats(f->p->tx, &s);
    return s;
}

/* f->want messages finally settled (acked or confirmed dead-lettered), nothing outstanding. */
static bool all_settled(fx_t *f)
{
    sb__memtx_stats_t s = mstats(f);
    return s.acked + s.dead_lettered >= f->want && sb__memtx_outstanding(f->p->tx) == 0 &&
           sb__dispatcher_inflight(f->p->dp) == 0;
}

static bool one_settlement(fx_t *f)
{
    return f->n_rec >= 1;
}

static void settle_all(fx_t *f, size_t want, unsigned ms)
{
    f->want = want;
    if (!run_until(f, all_settled, ms)) {
        sb__memtx_stats_t s = mstats(f);
        fail_msg("not settled within %u ms: acked %llu dead-lettered %llu outstanding %zu "
                 "inflight %zu (want %zu)",
                 ms, (unsigned long long)s.acked, (unsigned long long)s.dead_lettered,
                 sb__memtx_outstanding(f->p->tx), sb__dispatcher_inflight(f->p->dp), want);
    }
}

/* ---- messages ------------------------------------------------------------------------- */

static void body_for(char *buf, size_t n, unsigned id, const char *extra)
{
    snprintf(buf, n, "{\"Id\":\"5b1f0a52-8d3c-4c59-9f7e-%012u\"%s%s}", id, extra ? "," : "",
             extra ? extra : "");
}

static void inject_raw(fx_t *f, const char *rk, const char *body, const sb__header_t *hs, size_t nh)
{
    sb__memtx_msg_t m = {.routing_key = rk,
                         .body = body,
                         .body_len = strlen(body),
                         .content_type = "application/json",
                         .headers = hs,
                         .n_headers = nh};
    assert_int_equal(sb__memtx_inject(f->p->tx, &m), SB_EOK);
}

static void inject(fx_t *f, const char *rk, unsigned id, const char *extra)
{
    char body[1024];
    body_for(body, sizeof body, id, extra);
    inject_raw(f, rk, body, NULL, 0);
}

static const char DSC_FIELDS[] =
    "\"JobId\":\"job-42\",\"SourceSystem\":\"CRM\",\"TargetSystem\":\"ERP\","
    "\"RecordsProcessed\":1250,\"CompletedAt\":\"2026-12-01T10:00:00.1234567Z\","
    "\"CreationDate\":\"2026-12-01T10:00:00.1234567Z\"";

/* ---- inspection ----------------------------------------------------------------------- */

static sb__handler_t *handler(fx_t *f, const char *name)
{
    for (size_t i = 0; i < sb__registry_count(f->p->reg); i++) {
        sb__handler_t *h = sb__registry_handler(f->p->reg, i);
        if (!strcmp(h->name, name))
            return h;
    }
    fail_msg("no handler %s", name);
    return NULL;
}

static size_t ledger_lines(fx_t *f, const char *file, char *first, size_t first_n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", f->dir, file);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0;
    char line[2048];
    size_t n = 0;
    while (fgets(line, sizeof line, fp)) {
        if (n == 0 && first)
            copy(first, first_n, line);
        n++;
    }
    fclose(fp);
    return n;
}

/* Asserts that header `name` of r is exactly `want` (and present once). */
static void assert_hdr(const sb__memtx_record_t *r, const char *name, const char *want)
{
    size_t len, seen = 0;
    const char *v = sb__memtx_record_header(r, name, &len);
    if (!v)
        fail_msg("header %s absent", name);
    for (size_t i = 0; i < r->n_headers; i++)
        if (r->headers[i].name_len == strlen(name) &&
            !memcmp(r->headers[i].name, name, r->headers[i].name_len))
            seen++;
    if (seen != 1)
        fail_msg("header %s appears %zu times (first value \"%.*s\")", name, seen, (int)len, v);
    if (want && (len != strlen(want) || memcmp(v, want, len)))
        fail_msg("header %s is \"%.*s\", expected \"%s\"", name, (int)len, v, want);
}

static bool hdr_contains(const sb__memtx_record_t *r, const char *name, const char *needle)
{
    size_t len;
    const char *v = sb__memtx_record_header(r, name, &len);
    if (!v)
        return false;
    char buf[1024];
    snprintf(buf, sizeof buf, "%.*s", (int)len, v);
    return strstr(buf, needle) != NULL;
}

static const sb__memtx_record_t *only_dead_letter(fx_t *f, const char *reason)
{
    assert_int_equal(sb__memtx_dlq_count(f->p->tx), 1);
    const sb__memtx_record_t *r = sb__memtx_dlq_at(f->p->tx, 0);
    assert_non_null(r);
    assert_hdr(r, "x-sb-reason", reason);
    return r;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_single_handler_ok(void **state)
{
    (void)state;
    fx_t *f = fx_new("service:\n  name: disp-test\n"
                     "handlers:\n"
                     "  - name: rec\n    module: record\n    bind: [DataSyncCompletedEvent]\n"
                     "    config:\n      path: @DIR@/rec.jsonl\n");
    inject(f, "DataSyncCompletedEvent", 1, DSC_FIELDS);
    settle_all(f, 1, 5000);
    sb__memtx_stats_t s = mstats(f);
    assert_int_equal(s.delivered, 1);
    assert_int_equal(s.acked, 1);
    assert_int_equal(s.retried, 0);
    assert_int_equal(sb__memtx_dlq_count(f->p->tx), 0);
    const sb__dispatcher_stats_t *ds = sb__dispatcher_stats(f->p->dp);
    assert_int_equal(ds->received, 1);
    assert_int_equal(ds->acked, 1);
    assert_int_equal(handler(f, "rec")->n_ok, 1);
    char line[2048];
    assert_int_equal(ledger_lines(f, "rec.jsonl", line, sizeof line), 1);
    assert_non_null(strstr(line, "\"handler\":\"rec\""));
    assert_non_null(strstr(line, "\"attempt\":1"));
    assert_non_null(strstr(line, "5b1f0a52-8d3c-4c59-9f7e-000000000001"));
    assert_int_equal(f->n_rec, 1);
    assert_int_equal(f->rec[0].how, SB__SETTLED_ACK);
    fx_destroy(f);
}

static void test_multi_handler_retries_only_the_failed_one(void **state)
{
    (void)state;
    fx_t *f = fx_new("retry:\n  base_delay: 20ms\n  jitter: false\n"
                     "handlers:\n"
                     "  - name: rec1\n    module: record\n    bind: [Multi.Event]\n"
                     "    config:\n      path: @DIR@/rec1.jsonl\n"
                     "  - name: flaky\n    module: fail\n    bind: [Multi.Event]\n"
                     "    config:\n      times: 1\n"
                     "  - name: rec2\n    module: record\n    bind: [Multi.Event]\n"
                     "    config:\n      path: @DIR@/rec2.jsonl\n");
    inject(f, "Multi.Event", 7, NULL);
    settle_all(f, 1, 5000);
    sb__memtx_stats_t s = mstats(f);
    assert_int_equal(s.delivered, 2); /* really redelivered by the transport */
    assert_int_equal(s.retried, 1);
    assert_int_equal(s.acked, 1);
    assert_int_equal(f->n_rec, 2);
    assert_int_equal(f->rec[0].how, SB__SETTLED_RETRY);
    assert_string_equal(f->rec[0].handler, "flaky");
    assert_int_equal(f->rec[0].attempt, 1);
    assert_int_equal(f->rec[0].delay_ms, 20);
    assert_int_equal(f->rec[1].how, SB__SETTLED_ACK);
    assert_int_equal(f->rec[1].attempt, 2);
    assert_int_equal(ledger_lines(f, "rec1.jsonl", NULL, 0), 1);
    assert_int_equal(ledger_lines(f, "rec2.jsonl", NULL, 0), 1);
    sb__handler_t *r1 = handler(f, "rec1"), *r2 = handler(f, "rec2"), *fl = handler(f, "flaky");
    assert_int_equal(r1->n_ok, 1);
    assert_int_equal(r1->n_duplicates, 1);
    assert_int_equal(r2->n_ok, 1);
    assert_int_equal(r2->n_duplicates, 1);
    assert_int_equal(fl->n_retried, 1);
    assert_int_equal(fl->n_ok, 1);
    const sb__dispatcher_stats_t *ds = sb__dispatcher_stats(f->p->dp);
    assert_int_equal(ds->retried, 1);
    assert_int_equal(ds->acked, 1);
    assert_int_equal(ds->duplicates, 2);
    fx_destroy(f);
}

static void test_retry_exponential_spacing(void **state)
{
    (void)state;
    fx_t *f = fx_new("retry:\n  policy: exponential\n  base_delay: 50ms\n  jitter: false\n"
                     "  max_attempts: 4\n"
                     "handlers:\n"
                     "  - name: boom\n    module: fail\n    bind: [Retry.Event]\n");
    inject(f, "Retry.Event", 3, NULL);
    settle_all(f, 1, 5000);
    assert_int_equal(f->n_rec, 4);
    static const uint64_t delays[] = {50, 100, 200};
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(f->rec[i].how, SB__SETTLED_RETRY);
        assert_int_equal(f->rec[i].attempt, i + 1);
        assert_int_equal(f->rec[i].delay_ms, delays[i]);
        int64_t gap = f->rec[i + 1].at_us - f->rec[i].at_us;
        if (gap < (int64_t)delays[i] * 1000 - 1000)
            fail_msg("attempt %u came %lld us after the retry of attempt %u (delay %llu ms)", i + 2,
                     (long long)gap, i + 1, (unsigned long long)delays[i]);
    }
    assert_int_equal(f->rec[3].how, SB__SETTLED_DEAD_LETTER);
    assert_string_equal(f->rec[3].reason, "max-attempts");
    only_dead_letter(f, "max-attempts");
    assert_int_equal(mstats(f).delivered, 4);
    fx_destroy(f);
}

static void test_retry_after_explicit_delay(void **state)
{
    (void)state;
    fx_t *f = fx_new("retry:\n  base_delay: 10ms\n  jitter: false\n"
                     "handlers:\n  - name: async\n    module: @MOD@\n"
                     "    config:\n      retry_after_ms: 1234\n");
    inject(f, "Async.RetryAfter", 4, NULL);
    assert_true(run_until(f, one_settlement, 5000));
    assert_int_equal(f->rec[0].how, SB__SETTLED_RETRY);
    assert_int_equal(f->rec[0].delay_ms, 1234);
    assert_string_equal(f->rec[0].error, "later");
    assert_string_equal(f->rec[0].handler, "async.retry_after");
    /* Let the transport confirm the retry copy; then stop long before it comes back. */
    f->want = 0;
    struct event_base *base = sb__runtime_base(f->p->rt);
    for (int i = 0; i < 5 && mstats(f).retried == 0; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    sb__memtx_stats_t s = mstats(f);
    assert_int_equal(s.retried, 1);
    assert_int_equal(s.last_retry_delay_ms, 1234);
    assert_int_equal(s.delivered, 1);
    fx_destroy(f);
}

static void test_max_attempts_dead_letter_metadata(void **state)
{
    (void)state;
    fx_t *f = fx_new("service:\n  name: disp-test\n"
                     "retry:\n  base_delay: 10ms\n  jitter: false\n  max_attempts: 3\n"
                     "handlers:\n"
                     "  - name: boom\n    module: fail\n    bind: [DataSyncCompletedEvent]\n"
                     "    config:\n      reason: always broken\n");
    const sb__header_t hs[] = {
        {.name = "x-custom", .value = "abc"},
        {.name = "tenant", .value = "t-1 with spaces"},
        {.name = "empty", .value = ""},
    };
    char body[1024];
    body_for(body, sizeof body, 5, DSC_FIELDS);
    int64_t before = sb__datetime_now_us();
    inject_raw(f, "DataSyncCompletedEvent", body, hs, 3);
    settle_all(f, 1, 5000);
    int64_t after = sb__datetime_now_us();
    assert_int_equal(mstats(f).delivered, 3);
    assert_int_equal(mstats(f).retried, 2);
    const sb__memtx_record_t *r = only_dead_letter(f, "max-attempts");
    assert_hdr(r, "x-sb-attempts", "3");
    assert_hdr(r, "x-sb-handler", "boom");
    assert_hdr(r, "x-sb-consumer", "disp-test");
    assert_hdr(r, "x-sb-original-routing-key", "DataSyncCompletedEvent");
    assert_hdr(r, "x-sb-error", NULL);
    assert_true(hdr_contains(r, "x-sb-error", "always broken"));
    size_t len;
    const char *at = sb__memtx_record_header(r, "x-sb-failed-at", &len);
    assert_non_null(at);
    int64_t us;
    bool had_offset = false;
    assert_int_equal(sb__datetime_parse(at, len, false, &us, &had_offset), 0);
    assert_true(had_offset);
    assert_true(us >= before - 1000000 && us <= after + 1000000);
    /* Body and original headers byte for byte, in order, nothing else besides x-sb-*. */
    assert_non_null(r->routing_key);
    assert_string_equal(r->routing_key, "DataSyncCompletedEvent");
    assert_int_equal(r->body_len, strlen(body));
    assert_memory_equal(r->body, body, r->body_len);
    size_t k = 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        const sb__header_t *h = &r->headers[i];
        if (h->name_len >= 5 && !memcmp(h->name, "x-sb-", 5))
            continue;
        assert_true(k < 3);
        assert_int_equal(h->name_len, strlen(hs[k].name));
        assert_memory_equal(h->name, hs[k].name, h->name_len);
        assert_int_equal(h->value_len, strlen(hs[k].value));
        assert_memory_equal(h->value, hs[k].value, h->value_len);
        k++;
    }
    assert_int_equal(k, 3);
    sb__handler_t *h = handler(f, "boom");
    assert_int_equal(h->n_retried, 3);
    assert_int_equal(h->n_dead_lettered, 1);
    const sb__dispatcher_stats_t *ds = sb__dispatcher_stats(f->p->dp);
    assert_int_equal(ds->dead_lettered, 1);
    assert_int_equal(ds->dl_by_reason[4], 1);
    fx_destroy(f);
}

static void test_reject_dead_letters_at_once(void **state)
{
    (void)state;
    fx_t *f = fx_new("handlers:\n"
                     "  - name: nope\n    module: fail\n    bind: [Reject.Event]\n"
                     "    config:\n      outcome: reject\n      reason: bad data\n");
    inject(f, "Reject.Event", 6, NULL);
    settle_all(f, 1, 5000);
    assert_int_equal(mstats(f).delivered, 1);
    assert_int_equal(mstats(f).retried, 0);
    const sb__memtx_record_t *r = only_dead_letter(f, "rejected");
    assert_hdr(r, "x-sb-error", "bad data");
    assert_hdr(r, "x-sb-attempts", "1");
    assert_hdr(r, "x-sb-handler", "nope");
    assert_int_equal(handler(f, "nope")->n_rejected, 1);
    assert_int_equal(sb__dispatcher_stats(f->p->dp)->dl_by_reason[3], 1);
    fx_destroy(f);
}

static void test_decode_failure_never_retried(void **state)
{
    (void)state;
    fx_t *f = fx_new("handlers:\n"
                     "  - name: rec\n    module: record\n    bind: [\"#\"]\n"
                     "    config:\n      path: @DIR@/rec.jsonl\n");
    inject_raw(f, "Any.Event", "{\"Id\": \"x\", ", NULL, 0);
    settle_all(f, 1, 5000);
    assert_int_equal(mstats(f).delivered, 1);
    assert_int_equal(mstats(f).retried, 0);
    const sb__memtx_record_t *r = only_dead_letter(f, "decode");
    assert_null(sb__memtx_record_header(r, "x-sb-handler", NULL));
    assert_hdr(r, "x-sb-attempts", "1");
    assert_int_equal(r->body_len, strlen("{\"Id\": \"x\", "));
    assert_int_equal(ledger_lines(f, "rec.jsonl", NULL, 0), 0);
    assert_int_equal(sb__dispatcher_stats(f->p->dp)->dl_by_reason[0], 1);
    fx_destroy(f);
}

static void test_unroutable_dead_letters_by_default(void **state)
{
    (void)state;
    fx_t *f = fx_new("handlers:\n"
                     "  - name: rec\n    module: record\n    bind: [Known.Event]\n"
                     "    config:\n      path: @DIR@/rec.jsonl\n");
    inject(f, "Nobody.Listens", 8, NULL);
    settle_all(f, 1, 5000);
    const sb__memtx_record_t *r = only_dead_letter(f, "unroutable");
    assert_hdr(r, "x-sb-original-routing-key", "Nobody.Listens");
    assert_int_equal(mstats(f).acked, 0);
    assert_int_equal(sb__dispatcher_stats(f->p->dp)->dl_by_reason[2], 1);
    fx_destroy(f);
}

static void test_unroutable_acked_when_configured(void **state)
{
    (void)state;
    fx_t *f = fx_new("intake:\n  unroutable: ack\n"
                     "handlers:\n"
                     "  - name: rec\n    module: record\n    bind: [Known.Event]\n"
                     "    config:\n      path: @DIR@/rec.jsonl\n");
    inject(f, "Nobody.Listens", 9, NULL);
    settle_all(f, 1, 5000);
    assert_int_equal(mstats(f).acked, 1);
    assert_int_equal(sb__memtx_dlq_count(f->p->tx), 0);
    const sb__dispatcher_stats_t *ds = sb__dispatcher_stats(f->p->dp);
    assert_int_equal(ds->acked_unroutable, 1);
    assert_int_equal(ds->acked, 1);
    fx_destroy(f);
}

static void test_schema_failure_dead_letters(void **state)
{
    (void)state;
    fx_t *f = fx_new("schemas:\n  dir: " SCHEMAS "\n  bindings:\n"
                     "    DataSyncCompletedEvent: DataSyncCompletedEvent.schema.json\n"
                     "handlers:\n"
                     "  - name: rec\n    module: record\n    bind: [DataSyncCompletedEvent]\n"
                     "    config:\n      path: @DIR@/rec.jsonl\n");
    inject(f, "DataSyncCompletedEvent", 10, DSC_FIELDS); /* valid */
    inject(f, "DataSyncCompletedEvent", 11,
           "\"JobId\":\"job-42\",\"SourceSystem\":\"CRM\",\"TargetSystem\":\"ERP\","
           "\"RecordsProcessed\":\"many\",\"CompletedAt\":\"2026-12-01T10:00:00Z\","
           "\"CreationDate\":\"2026-12-01T10:00:00Z\"");
    settle_all(f, 2, 5000);
    assert_int_equal(mstats(f).acked, 1);
    assert_int_equal(mstats(f).delivered, 2);
    const sb__memtx_record_t *r = only_dead_letter(f, "schema");
    assert_true(hdr_contains(r, "x-sb-error", "RecordsProcessed"));
    assert_int_equal(ledger_lines(f, "rec.jsonl", NULL, 0), 1);
    assert_int_equal(sb__dispatcher_stats(f->p->dp)->dl_by_reason[1], 1);
    fx_destroy(f);
}

static void run_duplicate(const char *store, size_t want_lines)
{
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "idempotency:\n  store: %s\n"
             "handlers:\n"
             "  - name: rec\n    module: record\n    bind: [Dup.Event]\n"
             "    config:\n      path: @DIR@/rec.jsonl\n",
             store);
    fx_t *f = fx_new(yaml);
    inject(f, "Dup.Event", 12, NULL);
    settle_all(f, 1, 5000);
    inject(f, "Dup.Event", 12, NULL);
    settle_all(f, 2, 5000);
    assert_int_equal(mstats(f).acked, 2);
    assert_int_equal(ledger_lines(f, "rec.jsonl", NULL, 0), want_lines);
    sb__handler_t *h = handler(f, "rec");
    const sb__dispatcher_stats_t *ds = sb__dispatcher_stats(f->p->dp);
    assert_int_equal(ds->acked, 2);
    assert_int_equal(h->n_ok, want_lines);
    assert_int_equal(h->n_duplicates, 2 - want_lines);
    assert_int_equal(ds->duplicates, 2 - want_lines);
    fx_destroy(f);
}

static void test_duplicate_skipped_with_store(void **state)
{
    (void)state;
    run_duplicate("memory", 1);
}

static void test_duplicate_runs_twice_without_store(void **state)
{
    (void)state;
    run_duplicate("none", 2);
}

static void test_pending_outcomes(void **state)
{
    (void)state;
    fx_t *f = fx_new("retry:\n  max_attempts: 1\n"
                     "handlers:\n  - name: async\n    module: @MOD@\n    timeout: 100ms\n"
                     "    config:\n      delay_ms: 50\n");
    inject(f, "Async.PendingOk", 13, NULL);
    inject(f, "Async.PendingNever", 14, NULL);
    inject(f, "Async.PendingEarly", 15, NULL);
    int64_t t0 = mono_us();
    settle_all(f, 3, 5000);
    assert_true(mono_us() - t0 >= 100000); /* the timeout had to pass */
    assert_int_equal(mstats(f).acked, 2);
    assert_int_equal(mstats(f).delivered, 3);
    const sb__memtx_record_t *r = only_dead_letter(f, "timeout");
    assert_hdr(r, "x-sb-handler", "async.pending_never");
    assert_true(hdr_contains(r, "x-sb-error", "timed out"));
    assert_int_equal(handler(f, "async.pending_ok")->n_ok, 1);
    assert_int_equal(handler(f, "async.pending_early")->n_ok, 1);
    assert_int_equal(handler(f, "async.pending_never")->n_timeouts, 1);
    assert_int_equal(sb__dispatcher_stats(f->p->dp)->dl_by_reason[5], 1);
    fx_destroy(f);
}

static void test_pending_timeout_then_retry(void **state)
{
    (void)state;
    /* A timed-out pending attempt is retryable: with attempts left it is retried. */
    fx_t *f = fx_new("retry:\n  max_attempts: 2\n  base_delay: 10ms\n  jitter: false\n"
                     "handlers:\n  - name: async\n    module: @MOD@\n    timeout: 50ms\n");
    inject(f, "Async.PendingNever", 16, NULL);
    settle_all(f, 1, 5000);
    assert_int_equal(f->n_rec, 2);
    assert_int_equal(f->rec[0].how, SB__SETTLED_RETRY);
    assert_int_equal(f->rec[1].how, SB__SETTLED_DEAD_LETTER);
    assert_string_equal(f->rec[1].reason, "timeout");
    assert_int_equal(handler(f, "async.pending_never")->n_timeouts, 2);
    fx_destroy(f);
}

static void test_blocking_runs_on_workers_concurrently(void **state)
{
    (void)state;
    fx_t *f = fx_new("service:\n  workers: 4\n"
                     "handlers:\n  - name: async\n    module: @MOD@\n    timeout: 5s\n"
                     "    config:\n      sleep_ms: 200\n");
    int64_t t0 = mono_us();
    for (unsigned i = 0; i < 4; i++)
        inject(f, "Async.BlockSleep", 20 + i, NULL);
    settle_all(f, 4, 5000);
    int64_t took = mono_us() - t0;
    assert_int_equal(mstats(f).acked, 4);
    assert_true(took >= 200000);
    if (took >= 700000)
        fail_msg("4 x 200 ms on 4 workers took %lld ms", (long long)(took / 1000));
    assert_int_equal(sb__memtx_published_count(f->p->tx), 4);
    for (size_t i = 0; i < 4; i++) {
        const sb__memtx_record_t *p = sb__memtx_published_at(f->p->tx, i);
        assert_string_equal(p->routing_key, "BlockDone");
        assert_string_equal(p->body, "{\"on_worker\":true}");
    }
    assert_int_equal(handler(f, "async.block_sleep")->n_ok, 4);
    fx_destroy(f);
}

static void test_blocking_timeout(void **state)
{
    (void)state;
    fx_t *f = fx_new("retry:\n  max_attempts: 2\n  base_delay: 10ms\n  jitter: false\n"
                     "handlers:\n  - name: async\n    module: @MOD@\n    timeout: 50ms\n"
                     "    config:\n      sleep_ms: 150\n");
    inject(f, "Async.BlockSleep", 30, NULL);
    settle_all(f, 1, 5000);
    assert_int_equal(f->n_rec, 2);
    assert_int_equal(f->rec[0].how, SB__SETTLED_RETRY);
    assert_non_null(strstr(f->rec[0].error, "timed out"));
    assert_int_equal(f->rec[1].how, SB__SETTLED_DEAD_LETTER);
    assert_string_equal(f->rec[1].reason, "timeout");
    only_dead_letter(f, "timeout");
    assert_int_equal(handler(f, "async.block_sleep")->n_timeouts, 2);
    assert_int_equal(handler(f, "async.block_sleep")->n_ok, 0);
    fx_destroy(f);
}

static void test_more_handlers_than_inline_slots(void **state)
{
    (void)state;
    /* Five handlers on one event: past the dispatcher's inline handler states. */
    char yaml[2048] = "handlers:\n";
    for (int i = 1; i <= 5; i++) {
        char e[256];
        snprintf(e, sizeof e,
                 "  - name: rec%d\n    module: record\n    bind: [Wide.Event]\n"
                 "    config:\n      path: @DIR@/rec%d.jsonl\n",
                 i, i);
        strcat(yaml, e);
    }
    fx_t *f = fx_new(yaml);
    inject(f, "Wide.Event", 50, NULL);
    inject(f, "Wide.Event", 51, NULL);
    settle_all(f, 2, 5000);
    assert_int_equal(mstats(f).acked, 2);
    for (int i = 1; i <= 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "rec%d.jsonl", i);
        assert_int_equal(ledger_lines(f, name, NULL, 0), 2);
        snprintf(name, sizeof name, "rec%d", i);
        assert_int_equal(handler(f, name)->n_ok, 2);
    }
    fx_destroy(f);
}

static void test_blocking_timeout_excludes_queue_wait(void **state)
{
    (void)state;
    /* One worker, two 150 ms handlers, timeout 250 ms: each run is well inside its
     * timeout, but the second waits ~150 ms for the worker first. Time spent queued for a
     * worker is not the handler overrunning; both must be acked on their first attempt. */
    fx_t *f = fx_new("service:\n  workers: 1\n"
                     "retry:\n  base_delay: 10ms\n  jitter: false\n"
                     "handlers:\n  - name: async\n    module: @MOD@\n    timeout: 250ms\n"
                     "    config:\n      sleep_ms: 150\n");
    inject(f, "Async.BlockSleep", 60, NULL);
    inject(f, "Async.BlockSleep", 61, NULL);
    settle_all(f, 2, 5000);
    sb__handler_t *h = handler(f, "async.block_sleep");
    if (h->n_timeouts != 0)
        fail_msg("%llu of 2 blocking runs of 150 ms counted as timeouts (timeout 250 ms): the "
                 "time queued for a worker counts against the handler",
                 (unsigned long long)h->n_timeouts);
    assert_int_equal(mstats(f).delivered, 2);
    assert_int_equal(h->n_ok, 2);
    fx_destroy(f);
}

static void test_publish_confirmed_before_ack(void **state)
{
    (void)state;
    static const char TP[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    fx_t *f = fx_new("retry:\n  base_delay: 20ms\n  jitter: false\n"
                     "handlers:\n  - name: async\n    module: @MOD@\n");
    sb__memtx_fail_next(f->p->tx, SB__MEMTX_OP_PUBLISH, 1);
    const sb__header_t hs[] = {{.name = "traceparent", .value = TP}};
    char body[256];
    body_for(body, sizeof body, 31, NULL);
    inject_raw(f, "Async.Publisher", body, hs, 1);
    settle_all(f, 1, 5000);
    assert_int_equal(f->n_rec, 2);
    assert_int_equal(f->rec[0].how, SB__SETTLED_RETRY); /* never acked on a failed publish */
    assert_int_equal(f->rec[1].how, SB__SETTLED_ACK);
    sb__memtx_stats_t s = mstats(f);
    assert_int_equal(s.delivered, 2);
    assert_int_equal(s.acked, 1);
    assert_int_equal(s.published, 1);
    assert_int_equal(sb__memtx_published_count(f->p->tx), 1);
    const sb__memtx_record_t *p = sb__memtx_published_at(f->p->tx, 0);
    assert_string_equal(p->routing_key, "NotificationRequested");
    assert_string_equal(p->body, "{\"source\":\"5b1f0a52-8d3c-4c59-9f7e-000000000031\"}");
    assert_hdr(p, "traceparent", TP);
    const sb__dispatcher_stats_t *ds = sb__dispatcher_stats(f->p->dp);
    assert_int_equal(ds->publishes, 2);
    assert_int_equal(ds->publish_failures, 1);
    fx_destroy(f);
}

static void test_dead_letter_publish_failure_releases(void **state)
{
    (void)state;
    fx_t *f = fx_new("handlers:\n"
                     "  - name: nope\n    module: fail\n    bind: [Reject.Event]\n"
                     "    config:\n      outcome: reject\n");
    sb__memtx_fail_next(f->p->tx, SB__MEMTX_OP_DEAD_LETTER, 1);
    inject(f, "Reject.Event", 32, NULL);
    settle_all(f, 1, 5000);
    assert_int_equal(f->n_rec, 3);
    assert_int_equal(f->rec[0].how, SB__SETTLED_DEAD_LETTER);
    assert_int_equal(f->rec[1].how, SB__SETTLED_RELEASE);
    assert_int_equal(f->rec[2].how, SB__SETTLED_DEAD_LETTER);
    sb__memtx_stats_t s = mstats(f);
    assert_int_equal(s.delivered, 2);
    assert_int_equal(s.dead_lettered, 1);
    assert_int_equal(s.acked, 0);
    only_dead_letter(f, "rejected");
    const sb__dispatcher_stats_t *ds = sb__dispatcher_stats(f->p->dp);
    assert_int_equal(ds->released, 1);
    assert_int_equal(ds->dead_lettered, 1);
    assert_int_equal(sb__memtx_outstanding(f->p->tx), 0);
    fx_destroy(f);
}

static void test_retry_publish_failure_releases(void **state)
{
    (void)state;
    fx_t *f = fx_new("retry:\n  base_delay: 10ms\n  jitter: false\n"
                     "handlers:\n"
                     "  - name: flaky\n    module: fail\n    bind: [Flaky.Event]\n"
                     "    config:\n      times: 1\n");
    sb__memtx_fail_next(f->p->tx, SB__MEMTX_OP_RETRY, 1);
    inject(f, "Flaky.Event", 33, NULL);
    settle_all(f, 1, 5000);
    /* retry copy refused -> released (same attempt) -> retried -> acked on attempt 2 */
    assert_int_equal(f->n_rec, 4);
    assert_int_equal(f->rec[0].how, SB__SETTLED_RETRY);
    assert_int_equal(f->rec[1].how, SB__SETTLED_RELEASE);
    assert_int_equal(f->rec[2].how, SB__SETTLED_RETRY);
    assert_int_equal(f->rec[2].attempt, 1);
    assert_int_equal(f->rec[3].how, SB__SETTLED_ACK);
    assert_int_equal(f->rec[3].attempt, 2);
    sb__memtx_stats_t s = mstats(f);
    assert_int_equal(s.delivered, 3);
    assert_int_equal(s.retried, 1);
    assert_int_equal(s.acked, 1);
    const sb__dispatcher_stats_t *ds = sb__dispatcher_stats(f->p->dp);
    assert_int_equal(ds->released, 1);
    assert_int_equal(ds->retried, 1);
    assert_int_equal(ds->acked, 1);
    fx_destroy(f);
}

static void test_backpressure_bounds_inflight(void **state)
{
    (void)state;
    fx_t *f = fx_new("service:\n  max_inflight: 4\n"
                     "handlers:\n  - name: async\n    module: @MOD@\n"
                     "    config:\n      delay_ms: 20\n");
    for (unsigned i = 0; i < 50; i++)
        inject(f, "Async.PendingOk", 100 + i, NULL);
    settle_all(f, 50, 10000);
    assert_true(f->max_inflight <= 4);
    assert_true(f->max_inflight >= 2); /* they did run concurrently */
    sb__memtx_stats_t s = mstats(f);
    assert_int_equal(s.acked, 50);
    assert_int_equal(s.delivered, 50); /* nothing pushed past pause() and given back */
    const sb__dispatcher_stats_t *ds = sb__dispatcher_stats(f->p->dp);
    assert_int_equal(ds->released, 0);
    assert_int_equal(ds->acked, 50);
    assert_int_equal(handler(f, "async.pending_ok")->n_ok, 50);
    fx_destroy(f);
}

static void test_typed_getters(void **state)
{
    (void)state;
    fx_t *f = fx_new("handlers:\n  - name: async\n    module: @MOD@\n");
    inject(f, "Async.Reader", 40,
           "\"JobId\":\"job-42\",\"RecordsProcessed\":1250,"
           "\"CompletedAt\":\"2026-12-01T10:00:00.123456Z\",\"Flag\":true,\"Ratio\":0.25");
    settle_all(f, 1, 5000);
    inject(f, "Async.Reader", 41,
           "\"JobId\":null,\"RecordsProcessed\":\"1250\",\"CompletedAt\":5,"
           "\"Flag\":\"true\"");
    settle_all(f, 2, 5000);
    inject(f, "Async.Reader", 42, "\"Flag\":false,\"Ratio\":3,\"CompletedAt\":\"not a time\"");
    settle_all(f, 3, 5000);
    assert_int_equal(sb__memtx_published_count(f->p->tx), 3);
    int64_t us;
    const char *t = "2026-12-01T10:00:00.123456Z";
    assert_int_equal(sb__datetime_parse(t, strlen(t), false, &us, NULL), 0);
    char want[512];
    snprintf(want, sizeof want,
             "{\"JobId\":\"job-42\",\"RecordsProcessed\":1250,\"CompletedAt\":%lld,"
             "\"Flag\":1,\"Ratio\":0.250}",
             (long long)us);
    assert_string_equal(sb__memtx_published_at(f->p->tx, 0)->body, want);
    assert_string_equal(sb__memtx_published_at(f->p->tx, 1)->body,
                        "{\"JobId\":\"none\",\"RecordsProcessed\":-1,\"CompletedAt\":-1,"
                        "\"Flag\":-1,\"Ratio\":-1.500}");
    assert_string_equal(sb__memtx_published_at(f->p->tx, 2)->body,
                        "{\"JobId\":\"none\",\"RecordsProcessed\":-1,\"CompletedAt\":-1,"
                        "\"Flag\":0,\"Ratio\":3.000}");
    fx_destroy(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_handler_ok),
        cmocka_unit_test(test_multi_handler_retries_only_the_failed_one),
        cmocka_unit_test(test_retry_exponential_spacing),
        cmocka_unit_test(test_retry_after_explicit_delay),
        cmocka_unit_test(test_max_attempts_dead_letter_metadata),
        cmocka_unit_test(test_reject_dead_letters_at_once),
        cmocka_unit_test(test_decode_failure_never_retried),
        cmocka_unit_test(test_unroutable_dead_letters_by_default),
        cmocka_unit_test(test_unroutable_acked_when_configured),
        cmocka_unit_test(test_schema_failure_dead_letters),
        cmocka_unit_test(test_duplicate_skipped_with_store),
        cmocka_unit_test(test_duplicate_runs_twice_without_store),
        cmocka_unit_test(test_pending_outcomes),
        cmocka_unit_test(test_pending_timeout_then_retry),
        cmocka_unit_test(test_blocking_runs_on_workers_concurrently),
        cmocka_unit_test(test_blocking_timeout),
        cmocka_unit_test(test_blocking_timeout_excludes_queue_wait),
        cmocka_unit_test(test_more_handlers_than_inline_slots),
        cmocka_unit_test(test_publish_confirmed_before_ack),
        cmocka_unit_test(test_dead_letter_publish_failure_releases),
        cmocka_unit_test(test_retry_publish_failure_releases),
        cmocka_unit_test(test_backpressure_bounds_inflight),
        cmocka_unit_test(test_typed_getters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
