/* The in-memory transport on a real libevent loop: inject -> deliver -> ack, FIFO order and
 * batching, no delivery from inside inject() or the sink, pause/resume, capacity, timed
 * retries that bump attempts, dead letters (byte-identical body and headers plus well-formed
 * x-sb-* metadata), a full DLQ, replay, publish with and without loopback, failure
 * injection, stop, destroy with work pending (ASan/LSan check for leaks) and allocation
 * failure. Every wait is bounded by a deadline so nothing hangs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/event.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "datetime.h"
#include "transport_memory.h"

#define MAX_SEEN 1024

typedef struct ctx {
    struct event_base *base;
    sb__transport_t *t;
    sb__delivery_t *seen[MAX_SEEN]; /* deliveries, in order; NULL once settled by the test */
    uint64_t seen_at[MAX_SEEN];
    size_t n_seen;
    bool auto_ack;
    size_t pause_after; /* the sink pauses after this many deliveries (0: never) */
    int depth, max_depth;
    bool inject_in_sink;
} ctx_t;

typedef struct done {
    int calls;
    int status;
} done_t;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_done(void *arg, int status)
{
    done_t *d = arg;
    d->calls++;
    d->status = status;
}

static void sink(void *arg, sb__delivery_t *d)
{
    ctx_t *c = arg;
    c->depth++;
    if (c->depth > c->max_depth)
        c->max_depth = c->depth;
    assert_true(c->n_seen < MAX_SEEN);
    c->seen_at[c->n_seen] = mono_ms();
    c->seen[c->n_seen++] = d;
    if (c->inject_in_sink) {
        sb__memtx_msg_t m = {.routing_key = "Nested", .body = "{}", .body_len = 2};
        (void)sb__memtx_inject(c->t, &m);
    }
    if (c->pause_after && c->n_seen == c->pause_after)
        c->t->ops->pause(c->t);
    if (c->auto_ack) {
        c->t->ops->ack(c->t, d);
        c->seen[c->n_seen - 1] = NULL;
    }
    c->depth--;
}

static void setup_ctx(ctx_t *c, const sb__memtx_opts_t *o)
{
    memset(c, 0, sizeof *c);
    c->base = event_base_new();
    assert_non_null(c->base);
    assert_int_equal(sb__memtx_new(c->base, o, sink, c, &c->t), SB_EOK);
    assert_string_equal(c->t->ops->name, "memory");
}

static void teardown_ctx(ctx_t *c)
{
    c->t->ops->destroy(c->t);
    event_base_free(c->base);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

/* Runs the loop until pred(c) holds or timeout_ms passes; returns pred(c). */
static bool run_until(ctx_t *c, bool (*pred)(ctx_t *), uint64_t timeout_ms)
{
    bool expired = false;
    struct event *dl = evtimer_new(c->base, on_deadline, &expired);
    assert_non_null(dl);
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    evtimer_add(dl, &tv);
    while (!pred(c) && !expired)
        event_base_loop(c->base, EVLOOP_ONCE);
    event_free(dl);
    return pred(c);
}

/* Runs the loop for ms, whatever happens. */
static bool never(ctx_t *c)
{
    (void)c;
    return false;
}

static void run_for(ctx_t *c, uint64_t ms)
{
    (void)run_until(c, never, ms);
}

static size_t want_seen;
static bool seen_enough(ctx_t *c)
{
    return c->n_seen >= want_seen;
}

static bool settled(ctx_t *c)
{
    return sb__memtx_outstanding(c->t) == 0;
}

static void wait_seen(ctx_t *c, size_t n)
{
    want_seen = n;
    if (!run_until(c, seen_enough, 3000))
        fail_msg("only %zu of %zu deliveries arrived", c->n_seen, n);
}

static void inject_simple(ctx_t *c, const char *rk, const char *body)
{
    sb__memtx_msg_t m = {.routing_key = rk, .body = body, .body_len = strlen(body)};
    assert_int_equal(sb__memtx_inject(c->t, &m), SB_EOK);
}

static const char *hdr(const sb__delivery_t *d, const char *name)
{
    for (size_t i = 0; i < d->msg.n_headers; i++)
        if (strcmp(d->msg.headers[i].name, name) == 0)
            return d->msg.headers[i].value;
    return NULL;
}

static size_t hdr_count(const sb__delivery_t *d, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < d->msg.n_headers; i++)
        n += strcmp(d->msg.headers[i].name, name) == 0;
    return n;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_new_args(void **state)
{
    (void)state;
    struct event_base *b = event_base_new();
    sb__transport_t *t = NULL;
    assert_int_equal(sb__memtx_new(NULL, NULL, sink, NULL, &t), SB_EINVAL);
    assert_int_equal(sb__memtx_new(b, NULL, NULL, NULL, &t), SB_EINVAL);
    assert_int_equal(sb__memtx_new(b, NULL, sink, NULL, NULL), SB_EINVAL);
    assert_null(t);
    assert_int_equal(sb__memtx_new(b, NULL, sink, NULL, &t), SB_EOK);
    assert_false(t->ops->ready(t));
    assert_int_equal(sb__memtx_inject(t, NULL), SB_EINVAL);
    sb__memtx_msg_t bad = {.body = NULL, .body_len = 3};
    assert_int_equal(sb__memtx_inject(t, &bad), SB_EINVAL);
    assert_int_equal(sb__memtx_inject(NULL, &bad), SB_EINVAL);
    assert_int_equal(sb__memtx_dlq_count(t), 0);
    assert_null(sb__memtx_dlq_at(t, 0));
    assert_null(sb__memtx_published_at(t, 0));
    assert_int_equal(sb__memtx_dlq_replay(t, 0), SB_ENOTFOUND);
    t->ops->destroy(t);
    event_base_free(b);
}

static void test_inject_deliver_ack(void **state)
{
    (void)state;
    ctx_t c;
    setup_ctx(&c, NULL);
    sb__header_t hs[] = {{.name = "event-type", .value = "OrderPlaced"},
                         {.name = "traceparent", .value = "00-abc-def-01"}};
    sb__memtx_msg_t m = {.routing_key = "OrderPlaced",
                         .body = "{\"a\":1}",
                         .body_len = 7,
                         .message_id = "id-1",
                         .content_type = "application/json",
                         .amqp_type = "OrderPlaced",
                         .headers = hs,
                         .n_headers = 2};
    assert_int_equal(sb__memtx_inject(c.t, &m), SB_EOK);
    inject_simple(&c, "B", "2");
    inject_simple(&c, "C", "3");
    /* Not delivered before start, nor synchronously by start. */
    run_for(&c, 20);
    assert_int_equal(c.n_seen, 0);
    char err[128];
    assert_int_equal(c.t->ops->start(c.t, err, sizeof err), SB_EOK);
    assert_true(c.t->ops->ready(c.t));
    assert_int_equal(c.n_seen, 0);
    wait_seen(&c, 3);
    sb__delivery_t *d = c.seen[0];
    assert_int_equal(d->msg.body_len, 7);
    assert_memory_equal(d->msg.body, "{\"a\":1}", 7);
    assert_string_equal(d->msg.routing_key, "OrderPlaced");
    assert_string_equal(d->msg.message_id, "id-1");
    assert_string_equal(d->msg.content_type, "application/json");
    assert_string_equal(d->msg.amqp_type, "OrderPlaced");
    assert_null(d->msg.exchange);
    assert_null(d->msg.topic);
    assert_int_equal(d->msg.n_headers, 2);
    assert_string_equal(hdr(d, "event-type"), "OrderPlaced");
    assert_int_equal(d->msg.headers[1].value_len, strlen("00-abc-def-01"));
    assert_int_equal(d->attempt, 1);
    assert_false(d->redelivered);
    assert_string_equal(d->source, "memory");
    assert_int_equal(d->partition, -1);
    assert_int_equal(d->offset, -1);
    assert_null(c.seen[1]->msg.message_id);
    assert_int_equal(sb__memtx_outstanding(c.t), 3);
    for (size_t i = 0; i < 3; i++)
        c.t->ops->ack(c.t, c.seen[i]);
    assert_int_equal(sb__memtx_outstanding(c.t), 0);
    sb__memtx_stats_t st;
    sb__memtx_stats(c.t, &st);
    assert_int_equal(st.injected, 3);
    assert_int_equal(st.delivered, 3);
    assert_int_equal(st.acked, 3);
    assert_int_equal(st.retried + st.dead_lettered + st.published, 0);
    teardown_ctx(&c);
}

static void test_fifo_and_batches(void **state)
{
    (void)state;
    ctx_t c;
    sb__memtx_opts_t o = {.batch = 16};
    setup_ctx(&c, &o);
    c.auto_ack = true;
    char body[16];
    for (int i = 0; i < 200; i++) {
        snprintf(body, sizeof body, "%d", i);
        inject_simple(&c, "T", body);
    }
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    event_base_loop(c.base, EVLOOP_ONCE);
    assert_true(c.n_seen > 0 && c.n_seen <= 16); /* one batch per loop turn */
    wait_seen(&c, 200);
    sb__memtx_stats_t st;
    sb__memtx_stats(c.t, &st);
    assert_int_equal(st.delivered, 200);
    assert_int_equal(st.acked, 200);
    assert_int_equal(sb__memtx_outstanding(c.t), 0);
    teardown_ctx(&c);
}

/* FIFO needs the bodies, so this one keeps deliveries and checks them before acking. */
static void test_fifo_order(void **state)
{
    (void)state;
    ctx_t c;
    sb__memtx_opts_t o = {.batch = 7};
    setup_ctx(&c, &o);
    char body[16];
    for (int i = 0; i < 100; i++) {
        snprintf(body, sizeof body, "%d", i);
        inject_simple(&c, "T", body);
    }
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    wait_seen(&c, 100);
    for (int i = 0; i < 100; i++) {
        snprintf(body, sizeof body, "%d", i);
        assert_int_equal(c.seen[i]->msg.body_len, strlen(body));
        assert_memory_equal(c.seen[i]->msg.body, body, strlen(body));
        c.t->ops->ack(c.t, c.seen[i]);
    }
    teardown_ctx(&c);
}

static void test_no_reentrant_delivery(void **state)
{
    (void)state;
    ctx_t c;
    setup_ctx(&c, NULL);
    c.auto_ack = true;
    c.inject_in_sink = true; /* each delivery injects another */
    inject_simple(&c, "T", "x");
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    wait_seen(&c, 50);
    assert_int_equal(c.max_depth, 1); /* the sink was never entered from inside itself */
    c.inject_in_sink = false;
    teardown_ctx(&c);
}

static void test_pause_resume(void **state)
{
    (void)state;
    ctx_t c;
    setup_ctx(&c, NULL);
    c.auto_ack = true;
    c.pause_after = 5;
    for (int i = 0; i < 20; i++)
        inject_simple(&c, "T", "x");
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    run_for(&c, 50);
    assert_int_equal(c.n_seen, 5); /* paused inside the batch: nothing more */
    c.t->ops->resume(c.t);
    assert_int_equal(c.n_seen, 5); /* not synchronously */
    wait_seen(&c, 20);
    /* Pause before start: start does not deliver while paused. */
    c.t->ops->pause(c.t);
    inject_simple(&c, "T", "y");
    run_for(&c, 30);
    assert_int_equal(c.n_seen, 20);
    c.t->ops->resume(c.t);
    wait_seen(&c, 21);
    teardown_ctx(&c);
}

static void test_capacity(void **state)
{
    (void)state;
    ctx_t c;
    sb__memtx_opts_t o = {.capacity = 3};
    setup_ctx(&c, &o);
    for (int i = 0; i < 3; i++)
        inject_simple(&c, "T", "x");
    sb__memtx_msg_t m = {.routing_key = "T", .body = "x", .body_len = 1};
    assert_int_equal(sb__memtx_inject(c.t, &m), SB_EBUSY);
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    wait_seen(&c, 3);
    /* Delivered but unsettled messages still count. */
    assert_int_equal(sb__memtx_inject(c.t, &m), SB_EBUSY);
    c.t->ops->ack(c.t, c.seen[0]);
    assert_int_equal(sb__memtx_inject(c.t, &m), SB_EOK);
    assert_int_equal(sb__memtx_inject(c.t, &m), SB_EBUSY);
    /* A retry takes over the original's slot: it never fails for capacity. */
    done_t dn = {0};
    assert_int_equal(c.t->ops->retry_later(c.t, c.seen[1], 10, 2, on_done, &dn), SB_EOK);
    assert_int_equal(sb__memtx_inject(c.t, &m), SB_EBUSY);
    c.t->ops->ack(c.t, c.seen[2]);
    wait_seen(&c, 5);
    assert_int_equal(dn.calls, 1);
    c.t->ops->ack(c.t, c.seen[3]);
    c.t->ops->ack(c.t, c.seen[4]);
    assert_true(run_until(&c, settled, 1000));
    sb__memtx_stats_t st;
    sb__memtx_stats(c.t, &st);
    assert_int_equal(st.injected, 4);
    teardown_ctx(&c);
}

static void test_retry_delay_and_attempts(void **state)
{
    (void)state;
    ctx_t c;
    setup_ctx(&c, NULL);
    sb__header_t hs[] = {{.name = "keep", .value = "me"}};
    sb__memtx_msg_t m = {.routing_key = "T",
                         .body = "b",
                         .body_len = 1,
                         .message_id = "m1",
                         .headers = hs,
                         .n_headers = 1};
    assert_int_equal(sb__memtx_inject(c.t, &m), SB_EOK);
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    wait_seen(&c, 1);
    assert_int_equal(c.seen[0]->attempt, 1);

    done_t dn = {0};
    uint64_t t0 = mono_ms();
    assert_int_equal(c.t->ops->retry_later(c.t, c.seen[0], 150, 2, on_done, &dn), SB_EOK);
    assert_int_equal(dn.calls, 0);                   /* asynchronous */
    assert_int_equal(sb__memtx_outstanding(c.t), 2); /* the copy and the settling original */
    wait_seen(&c, 2);
    uint64_t waited = c.seen_at[1] - t0;
    assert_true(waited >= 150);
    assert_true(waited < 150 + 400);
    assert_int_equal(dn.calls, 1);
    assert_int_equal(dn.status, SB_EOK);
    sb__delivery_t *d = c.seen[1];
    assert_int_equal(d->attempt, 2);
    assert_string_equal(hdr(d, "x-sb-attempts"), "1");
    assert_string_equal(hdr(d, "keep"), "me");
    assert_string_equal(d->msg.message_id, "m1");
    assert_memory_equal(d->msg.body, "b", 1);

    /* Again: still one x-sb-attempts header, bumped. Delay 0 still goes through the loop. */
    assert_int_equal(c.t->ops->retry_later(c.t, d, 0, 3, on_done, &dn), SB_EOK);
    wait_seen(&c, 3);
    assert_int_equal(c.seen[2]->attempt, 3);
    assert_string_equal(hdr(c.seen[2], "x-sb-attempts"), "2");
    assert_int_equal(hdr_count(c.seen[2], "x-sb-attempts"), 1);
    c.t->ops->ack(c.t, c.seen[2]);
    assert_true(run_until(&c, settled, 1000));
    assert_int_equal(dn.calls, 2);
    sb__memtx_stats_t st;
    sb__memtx_stats(c.t, &st);
    assert_int_equal(st.retried, 2);
    assert_int_equal(st.last_retry_delay_ms, 0);
    assert_int_equal(st.delivered, 3);
    assert_int_equal(st.acked, 1);
    teardown_ctx(&c);
}

static void test_injected_attempts(void **state)
{
    (void)state;
    ctx_t c;
    setup_ctx(&c, NULL);
    sb__header_t hs[] = {{.name = "x-sb-attempts", .value = "4"}};
    sb__memtx_msg_t m = {.body = "b", .body_len = 1, .headers = hs, .n_headers = 1};
    assert_int_equal(sb__memtx_inject(c.t, &m), SB_EOK);
    hs[0].value = "garbage";
    assert_int_equal(sb__memtx_inject(c.t, &m), SB_EOK);
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    wait_seen(&c, 2);
    assert_int_equal(c.seen[0]->attempt, 5);
    assert_int_equal(c.seen[1]->attempt, 1);
    assert_null(c.seen[0]->msg.routing_key);
    c.t->ops->ack(c.t, c.seen[0]);
    c.t->ops->ack(c.t, c.seen[1]);
    teardown_ctx(&c);
}

static bool is_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static void test_dead_letter(void **state)
{
    (void)state;
    ctx_t c;
    sb__memtx_opts_t o = {.queue_name = "orders"};
    setup_ctx(&c, &o);
    /* Binary header value and body with NUL bytes: kept byte for byte. */
    static const char bin[] = {'a', '\0', 'b', '\xff', '\n'};
    static const char body[] = {'{', '\0', '}', '\x80', ' '};
    sb__header_t hs[] = {{.name = "event-type", .value = "OrderPlaced"},
                         {.name = "bin", .value = bin, .name_len = 3, .value_len = 5},
                         {.name = "empty", .value = ""}};
    sb__memtx_msg_t m = {.routing_key = "orders.placed",
                         .body = body,
                         .body_len = 5,
                         .message_id = "m-9",
                         .content_type = "application/json",
                         .headers = hs,
                         .n_headers = 3};
    assert_int_equal(sb__memtx_inject(c.t, &m), SB_EOK);
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    wait_seen(&c, 1);
    assert_string_equal(c.seen[0]->source, "orders");

    int64_t at = 1767225600123456; /* 2026-01-01T00:00:00.123456Z */
    sb__dl_meta_t meta = {.reason = "rejected",
                          .error = "bad customer: \"x\"",
                          .handler = "notifier",
                          .attempts = 3,
                          .consumer = "svc-a",
                          .failed_at_us = at};
    done_t dn = {0};
    assert_int_equal(c.t->ops->dead_letter(c.t, c.seen[0], &meta, on_done, &dn), SB_EOK);
    assert_int_equal(dn.calls, 0); /* asynchronous */
    assert_true(run_until(&c, settled, 1000));
    assert_int_equal(dn.calls, 1);
    assert_int_equal(dn.status, SB_EOK);
    assert_int_equal(sb__memtx_dlq_count(c.t), 1);
    const sb__memtx_record_t *r = sb__memtx_dlq_at(c.t, 0);
    assert_non_null(r);
    assert_int_equal(r->body_len, 5);
    assert_memory_equal(r->body, body, 5);
    assert_string_equal(r->routing_key, "orders.placed");
    assert_string_equal(r->message_id, "m-9");
    assert_string_equal(r->content_type, "application/json");
    /* Original headers first, identical. */
    assert_true(r->n_headers >= 3);
    assert_string_equal(r->headers[0].name, "event-type");
    assert_string_equal(r->headers[0].value, "OrderPlaced");
    assert_int_equal(r->headers[1].name_len, 3);
    assert_memory_equal(r->headers[1].name, "bin", 3);
    assert_int_equal(r->headers[1].value_len, 5);
    assert_memory_equal(r->headers[1].value, bin, 5);
    assert_int_equal(r->headers[2].value_len, 0);
    /* The metadata. */
    assert_int_equal(r->n_headers, 3 + 8);
    assert_string_equal(sb__memtx_record_header(r, "x-sb-reason", NULL), "rejected");
    assert_string_equal(sb__memtx_record_header(r, "x-sb-error", NULL), "bad customer: \"x\"");
    assert_string_equal(sb__memtx_record_header(r, "x-sb-handler", NULL), "notifier");
    assert_string_equal(sb__memtx_record_header(r, "x-sb-attempts", NULL), "3");
    assert_string_equal(sb__memtx_record_header(r, "x-sb-consumer", NULL), "svc-a");
    assert_string_equal(sb__memtx_record_header(r, "x-sb-original-routing-key", NULL),
                        "orders.placed");
    assert_string_equal(sb__memtx_record_header(r, "x-sb-original-queue", NULL), "orders");
    size_t len;
    const char *fa = sb__memtx_record_header(r, "x-sb-failed-at", &len);
    assert_non_null(fa);
    assert_string_equal(fa, "2026-01-01T00:00:00.123456Z");
    int64_t back;
    assert_int_equal(sb__datetime_parse(fa, len, false, &back, NULL), 0);
    assert_int_equal(back, at);
    for (size_t i = 3; i < r->n_headers; i++)
        assert_int_equal(r->headers[i].value_len, strlen(r->headers[i].value));

    /* No handler, no failed_at: no x-sb-handler header, failed-at is now. */
    inject_simple(&c, "k2", "{}");
    wait_seen(&c, 2);
    sb__dl_meta_t meta2 = {
        .reason = "decode", .error = "not JSON", .attempts = 1, .consumer = "svc-a"};
    int64_t before = sb__datetime_now_us();
    assert_int_equal(c.t->ops->dead_letter(c.t, c.seen[1], &meta2, on_done, &dn), SB_EOK);
    int64_t after = sb__datetime_now_us();
    assert_true(run_until(&c, settled, 1000));
    r = sb__memtx_dlq_at(c.t, 1);
    assert_non_null(r);
    assert_null(sb__memtx_record_header(r, "x-sb-handler", NULL));
    fa = sb__memtx_record_header(r, "x-sb-failed-at", &len);
    assert_int_equal(len, 27);
    assert_true(is_digits(fa, 4) && fa[4] == '-' && fa[10] == 'T' && fa[19] == '.' &&
                is_digits(fa + 20, 6) && fa[26] == 'Z');
    assert_int_equal(sb__datetime_parse(fa, len, false, &back, NULL), 0);
    assert_true(back >= before && back <= after);
    sb__memtx_stats_t st;
    sb__memtx_stats(c.t, &st);
    assert_int_equal(st.dead_lettered, 2);
    assert_int_equal(st.acked, 0);
    teardown_ctx(&c);
}

static void test_dlq_full(void **state)
{
    (void)state;
    ctx_t c;
    sb__memtx_opts_t o = {.dlq_capacity = 1};
    setup_ctx(&c, &o);
    inject_simple(&c, "T", "1");
    inject_simple(&c, "T", "2");
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    wait_seen(&c, 2);
    sb__dl_meta_t meta = {.reason = "rejected", .error = "no", .attempts = 1};
    done_t d1 = {0}, d2 = {0};
    assert_int_equal(c.t->ops->dead_letter(c.t, c.seen[0], &meta, on_done, &d1), SB_EOK);
    assert_int_equal(c.t->ops->dead_letter(c.t, c.seen[1], &meta, on_done, &d2), SB_EOK);
    run_for(&c, 20);
    assert_int_equal(d1.status, SB_EOK);
    assert_int_equal(d2.calls, 1);
    assert_int_equal(d2.status, SB_EBUSY);
    assert_int_equal(sb__memtx_dlq_count(c.t), 1);
    /* The refused delivery is still valid and unsettled: the dispatcher retries it. */
    assert_int_equal(sb__memtx_outstanding(c.t), 1);
    assert_memory_equal(c.seen[1]->msg.body, "2", 1);
    done_t d3 = {0};
    assert_int_equal(c.t->ops->retry_later(c.t, c.seen[1], 1, 2, on_done, &d3), SB_EOK);
    wait_seen(&c, 3);
    assert_int_equal(c.seen[2]->attempt, 2);
    c.t->ops->ack(c.t, c.seen[2]);
    assert_true(run_until(&c, settled, 1000));
    assert_int_equal(d3.status, SB_EOK);
    teardown_ctx(&c);
}

static void test_dlq_replay(void **state)
{
    (void)state;
    ctx_t c;
    setup_ctx(&c, NULL);
    sb__header_t hs[] = {{.name = "x-sb-attempts", .value = "2"}, {.name = "keep", .value = "k"}};
    sb__memtx_msg_t m = {
        .routing_key = "T", .body = "b", .body_len = 1, .headers = hs, .n_headers = 2};
    assert_int_equal(sb__memtx_inject(c.t, &m), SB_EOK);
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    sb__dl_meta_t meta = {.reason = "max-attempts", .error = "e", .handler = "h", .attempts = 3};
    done_t dn = {0};
    for (unsigned round = 1; round <= 2; round++) {
        wait_seen(&c, round);
        sb__delivery_t *d = c.seen[round - 1];
        assert_int_equal(d->attempt, round == 1 ? 3 : 1);
        assert_int_equal(c.t->ops->dead_letter(c.t, d, &meta, on_done, &dn), SB_EOK);
        assert_true(run_until(&c, settled, 1000));
        assert_int_equal(sb__memtx_dlq_count(c.t), 1);
        assert_int_equal(sb__memtx_dlq_replay(c.t, 0), SB_EOK);
        assert_int_equal(sb__memtx_dlq_count(c.t), 0);
        wait_seen(&c, round + 1);
        sb__delivery_t *r = c.seen[round];
        char want[4];
        snprintf(want, sizeof want, "%u", round);
        assert_string_equal(hdr(r, "x-sb-replay-count"), want);
        assert_int_equal(r->attempt, 1);
        assert_null(hdr(r, "x-sb-reason"));
        assert_null(hdr(r, "x-sb-attempts"));
        assert_string_equal(hdr(r, "keep"), "k");
        assert_int_equal(r->msg.n_headers, 2);
        assert_string_equal(r->msg.routing_key, "T");
    }
    c.t->ops->ack(c.t, c.seen[2]);
    assert_int_equal(sb__memtx_dlq_replay(c.t, 0), SB_ENOTFOUND);
    teardown_ctx(&c);
}

static void test_publish(void **state)
{
    (void)state;
    ctx_t c;
    sb__memtx_opts_t o = {.published_keep = 2};
    setup_ctx(&c, &o);
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    sb__outmsg_t om = {.type = "NotificationRequested",
                       .body = "{\"n\":1}",
                       .body_len = 7,
                       .key = "cust-1",
                       .id = "out-1",
                       .traceparent = "00-t-s-01",
                       .tracestate = "k=v"};
    done_t dn = {0};
    assert_int_equal(c.t->ops->publish(c.t, &om, on_done, &dn), SB_EOK);
    assert_int_equal(dn.calls, 0);
    assert_int_equal(sb__memtx_outstanding(c.t), 1);
    assert_true(run_until(&c, settled, 1000));
    assert_int_equal(dn.calls, 1);
    assert_int_equal(dn.status, SB_EOK);
    assert_int_equal(c.n_seen, 0); /* no loopback */
    assert_int_equal(sb__memtx_published_count(c.t), 1);
    const sb__memtx_record_t *r = sb__memtx_published_at(c.t, 0);
    assert_string_equal(r->routing_key, "NotificationRequested");
    assert_memory_equal(r->body, "{\"n\":1}", 7);
    assert_string_equal(r->message_id, "out-1");
    assert_string_equal(r->key, "cust-1");
    assert_string_equal(sb__memtx_record_header(r, "event-type", NULL), "NotificationRequested");
    assert_string_equal(sb__memtx_record_header(r, "message-id", NULL), "out-1");
    assert_string_equal(sb__memtx_record_header(r, "traceparent", NULL), "00-t-s-01");
    assert_string_equal(sb__memtx_record_header(r, "tracestate", NULL), "k=v");
    /* Only the most recent published_keep records are kept. */
    sb__outmsg_t o2 = {.type = "A", .body = "2", .body_len = 1};
    sb__outmsg_t o3 = {.type = "B", .body = "3", .body_len = 1};
    assert_int_equal(c.t->ops->publish(c.t, &o2, on_done, &dn), SB_EOK);
    assert_int_equal(c.t->ops->publish(c.t, &o3, NULL, NULL), SB_EOK);
    assert_true(run_until(&c, settled, 1000));
    assert_int_equal(sb__memtx_published_count(c.t), 2);
    assert_string_equal(sb__memtx_published_at(c.t, 0)->routing_key, "A");
    assert_string_equal(sb__memtx_published_at(c.t, 1)->routing_key, "B");
    assert_null(sb__memtx_record_header(sb__memtx_published_at(c.t, 1), "traceparent", NULL));
    sb__outmsg_t bad = {.type = NULL};
    assert_int_equal(c.t->ops->publish(c.t, &bad, on_done, &dn), SB_EINVAL);
    sb__memtx_stats_t st;
    sb__memtx_stats(c.t, &st);
    assert_int_equal(st.published, 3);
    teardown_ctx(&c);
}

static void test_publish_loopback(void **state)
{
    (void)state;
    ctx_t c;
    sb__memtx_opts_t o = {.loopback = true, .capacity = 2};
    setup_ctx(&c, &o);
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    sb__outmsg_t om = {.type = "Follow", .body = "{}", .body_len = 2, .id = "f-1"};
    done_t dn = {0};
    assert_int_equal(c.t->ops->publish(c.t, &om, on_done, &dn), SB_EOK);
    wait_seen(&c, 1);
    sb__delivery_t *d = c.seen[0];
    assert_string_equal(d->msg.routing_key, "Follow");
    assert_string_equal(d->msg.message_id, "f-1");
    assert_string_equal(hdr(d, "event-type"), "Follow");
    assert_int_equal(d->attempt, 1);
    /* Loopback counts against capacity. */
    inject_simple(&c, "T", "x");
    done_t full = {0};
    assert_int_equal(c.t->ops->publish(c.t, &om, on_done, &full), SB_EOK);
    run_for(&c, 20);
    assert_int_equal(full.calls, 1);
    assert_int_equal(full.status, SB_EBUSY);
    assert_int_equal(sb__memtx_published_count(c.t), 1);
    c.t->ops->ack(c.t, c.seen[0]);
    wait_seen(&c, 2);
    c.t->ops->ack(c.t, c.seen[1]);
    assert_true(run_until(&c, settled, 1000));
    sb__memtx_stats_t st;
    sb__memtx_stats(c.t, &st);
    assert_int_equal(st.published, 1);
    assert_int_equal(st.delivered, 2);
    teardown_ctx(&c);
}

static void test_failure_injection(void **state)
{
    (void)state;
    ctx_t c;
    setup_ctx(&c, NULL);
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    inject_simple(&c, "T", "x");
    wait_seen(&c, 1);
    sb__delivery_t *d = c.seen[0];
    done_t dn = {0};

    sb__memtx_fail_next(c.t, SB__MEMTX_OP_PUBLISH, 1);
    sb__outmsg_t om = {.type = "F", .body = "{}", .body_len = 2};
    assert_int_equal(c.t->ops->publish(c.t, &om, on_done, &dn), SB_EOK);
    assert_int_equal(dn.calls, 0);
    run_for(&c, 10);
    assert_int_equal(dn.calls, 1);
    assert_int_equal(dn.status, SB_EIO);
    assert_int_equal(sb__memtx_published_count(c.t), 0);
    assert_int_equal(c.t->ops->publish(c.t, &om, on_done, &dn), SB_EOK);
    run_for(&c, 10);
    assert_int_equal(dn.status, SB_EOK);
    assert_int_equal(sb__memtx_published_count(c.t), 1);

    sb__memtx_fail_next(c.t, SB__MEMTX_OP_DEAD_LETTER, 1);
    sb__dl_meta_t meta = {.reason = "rejected", .error = "e", .attempts = 1};
    assert_int_equal(c.t->ops->dead_letter(c.t, d, &meta, on_done, &dn), SB_EOK);
    run_for(&c, 10);
    assert_int_equal(dn.calls, 3);
    assert_int_equal(dn.status, SB_EIO);
    assert_int_equal(sb__memtx_dlq_count(c.t), 0);

    sb__memtx_fail_next(c.t, SB__MEMTX_OP_RETRY, 2);
    assert_int_equal(c.t->ops->retry_later(c.t, d, 1, 2, on_done, &dn), SB_EOK);
    run_for(&c, 10);
    assert_int_equal(dn.status, SB_EIO);
    assert_int_equal(c.t->ops->retry_later(c.t, d, 1, 2, on_done, &dn), SB_EOK);
    run_for(&c, 10);
    assert_int_equal(dn.calls, 5);
    assert_int_equal(dn.status, SB_EIO);
    assert_int_equal(c.n_seen, 1); /* nothing was re-enqueued */
    /* Still one valid, unsettled delivery, which settles normally now. */
    assert_int_equal(sb__memtx_outstanding(c.t), 1);
    assert_memory_equal(d->msg.body, "x", 1);
    assert_int_equal(c.t->ops->dead_letter(c.t, d, &meta, on_done, &dn), SB_EOK);
    assert_true(run_until(&c, settled, 1000));
    assert_int_equal(dn.status, SB_EOK);
    assert_int_equal(sb__memtx_dlq_count(c.t), 1);
    sb__memtx_stats_t st;
    sb__memtx_stats(c.t, &st);
    assert_int_equal(st.retried, 0);
    assert_int_equal(st.dead_lettered, 1);
    assert_int_equal(st.published, 1);
    teardown_ctx(&c);
}

static void test_stop(void **state)
{
    (void)state;
    ctx_t c;
    setup_ctx(&c, NULL);
    inject_simple(&c, "T", "1");
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    wait_seen(&c, 1);
    c.t->ops->stop(c.t);
    assert_false(c.t->ops->ready(c.t));
    inject_simple(&c, "T", "2");
    /* Outstanding settlements still complete after stop; the retry copy is not delivered. */
    done_t dn = {0};
    assert_int_equal(c.t->ops->retry_later(c.t, c.seen[0], 5, 2, on_done, &dn), SB_EOK);
    run_for(&c, 60);
    assert_int_equal(dn.calls, 1);
    assert_int_equal(dn.status, SB_EOK);
    assert_int_equal(c.n_seen, 1);
    c.t->ops->resume(c.t);
    run_for(&c, 20);
    assert_int_equal(c.n_seen, 1);
    char err[128] = "";
    assert_int_equal(c.t->ops->start(c.t, err, sizeof err), SB_ESTATE);
    assert_true(strlen(err) > 0);
    assert_int_equal(sb__memtx_outstanding(c.t), 2); /* both queued, freed by destroy */
    teardown_ctx(&c);
}

static void test_destroy_with_pending(void **state)
{
    (void)state;
    ctx_t c;
    sb__memtx_opts_t o = {.loopback = true};
    setup_ctx(&c, &o);
    for (int i = 0; i < 4; i++)
        inject_simple(&c, "T", "x");
    assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
    wait_seen(&c, 4);
    inject_simple(&c, "T", "queued");
    done_t dn = {0};
    sb__dl_meta_t meta = {.reason = "rejected", .error = "e", .attempts = 1};
    /* A long delay, a settlement whose callback has not run, an in-flight message, a dead
     * letter, a publish (with its loopback copy) and its pending completion. */
    assert_int_equal(c.t->ops->retry_later(c.t, c.seen[0], 60000, 2, on_done, &dn), SB_EOK);
    assert_int_equal(c.t->ops->dead_letter(c.t, c.seen[1], &meta, on_done, &dn), SB_EOK);
    sb__memtx_fail_next(c.t, SB__MEMTX_OP_RETRY, 1);
    assert_int_equal(c.t->ops->retry_later(c.t, c.seen[2], 1, 2, on_done, &dn), SB_EOK);
    sb__outmsg_t om = {.type = "F", .body = "{}", .body_len = 2};
    assert_int_equal(c.t->ops->publish(c.t, &om, on_done, &dn), SB_EOK);
    assert_true(sb__memtx_outstanding(c.t) >= 6);
    teardown_ctx(&c);              /* LeakSanitizer checks that nothing was left behind */
    assert_int_equal(dn.calls, 0); /* pending callbacks are dropped, not called */
}

/* Allocation failure: fail allocation N for N = 0, 1, ... through new, inject, retry,
 * dead-letter and publish; every failure is a clean error and nothing leaks. */
static long alloc_budget = -1; /* allocations left before failing; -1: unlimited */

static void *budget_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

static void *budget_realloc(void *p, size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return realloc(p, n);
}

static void test_alloc_failure(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    assert_non_null(base);
    assert_int_equal(sb_set_allocator(budget_malloc, budget_realloc, free), SB_EOK);
    bool completed = false;
    for (long n = 0; n < 64 && !completed; n++) {
        ctx_t c;
        memset(&c, 0, sizeof c);
        c.base = base;
        alloc_budget = n;
        int rc = sb__memtx_new(base, NULL, sink, &c, &c.t);
        if (rc != SB_EOK) {
            assert_int_equal(rc, SB_ENOMEM);
            continue;
        }
        sb__header_t many[20];
        for (int i = 0; i < 20; i++)
            many[i] = (sb__header_t){.name = "h", .value = "v"};
        sb__memtx_msg_t m = {
            .routing_key = "T", .body = "x", .body_len = 1, .headers = many, .n_headers = 20};
        rc = sb__memtx_inject(c.t, &m);
        if (rc == SB_EOK) {
            assert_int_equal(c.t->ops->start(c.t, NULL, 0), SB_EOK);
            event_base_loop(base, EVLOOP_ONCE);
            assert_int_equal(c.n_seen, 1);
            done_t dn = {0};
            sb__dl_meta_t meta = {.reason = "rejected", .error = "e", .attempts = 1};
            sb__outmsg_t om = {.type = "F", .body = "{}", .body_len = 2};
            int r1 = c.t->ops->retry_later(c.t, c.seen[0], 60000, 2, on_done, &dn);
            if (r1 != SB_EOK) {
                assert_int_equal(r1, SB_ENOMEM);
                int r2 = c.t->ops->dead_letter(c.t, c.seen[0], &meta, on_done, &dn);
                if (r2 != SB_EOK)
                    assert_int_equal(r2, SB_ENOMEM);
            }
            int r3 = c.t->ops->publish(c.t, &om, on_done, &dn);
            if (r3 != SB_EOK)
                assert_int_equal(r3, SB_ENOMEM);
            completed = r1 == SB_EOK && r3 == SB_EOK;
        } else {
            assert_int_equal(rc, SB_ENOMEM);
        }
        c.t->ops->destroy(c.t);
    }
    alloc_budget = -1;
    assert_int_equal(sb_set_allocator(NULL, NULL, NULL), SB_EOK);
    assert_true(completed);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_args),
        cmocka_unit_test(test_inject_deliver_ack),
        cmocka_unit_test(test_fifo_and_batches),
        cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_no_reentrant_delivery),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_capacity),
        cmocka_unit_test(test_retry_delay_and_attempts),
        cmocka_unit_test(test_injected_attempts),
        cmocka_unit_test(test_dead_letter),
        cmocka_unit_test(test_dlq_full),
        cmocka_unit_test(test_dlq_replay),
        cmocka_unit_test(test_publish),
        cmocka_unit_test(test_publish_loopback),
        cmocka_unit_test(test_failure_injection),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_destroy_with_pending),
        cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
