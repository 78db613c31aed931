/* asyncmod.c: a handler module for the dispatcher tests (test_dispatch, test_dispatch_shutdown).
 *
 * Each handler exercises one path of the handler API; its default binding is "Async.<Name>",
 * so one instance without `bind:` routes each event type to exactly one handler (an
 * instance binds every handler of its module, so per-handler `bind:` lists are not used).
 *   pending_ok     takes a token, completes SB_OK after config.delay_ms (default 50) from a
 *                  libevent timer on the loop
 *   pending_never  takes a token and never completes (the handler timeout must fire)
 *   pending_early  completes its token inside the handler call, then returns SB_PENDING
 *   block_sleep    SB_HANDLER_BLOCKING: sleeps config.sleep_ms (default 100), then
 *                  publishes BlockDone {"on_worker":true|false} (false: ran on the loop)
 *   publisher      publishes NotificationRequested {"source":"<event id>"}, returns SB_OK
 *   reader         reads JobId, RecordsProcessed, CompletedAt, Flag, Ratio with the typed
 *                  getters (defaults "none", -1, -1, -1, -1.5) and publishes ReaderResult
 *                  with what it read
 *   retry_after    sb_ctx_retry_after(config.retry_after_ms, default 1234), reason "later",
 *                  SB_RETRY
 * Design: timers and tokens still outstanding at shutdown are kept on a per-instance list
 * and released by the shutdown hook (after the dispatcher let go of them), so a test that
 * stops in the middle leaks nothing. Not thread-safe beyond what the host guarantees:
 * everything but block_sleep runs on the loop thread. It is test code, not an example. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include <switchboard/handler.h>

typedef struct waiter waiter_t;

typedef struct async_inst {
    uint64_t delay_ms, sleep_ms, retry_after_ms;
    pthread_t loop_thread; /* init runs on the thread that later runs the loop */
    waiter_t *waiters;     /* timers and tokens not completed yet */
} async_inst_t;

struct waiter {
    waiter_t *next, **prevp;
    async_inst_t *in;
    struct event *timer; /* NULL: never completes (pending_never) */
    sb_pending_t *token;
};

static uint64_t cfg_ms(json_t *config, const char *key, uint64_t def)
{
    json_t *v = config ? json_object_get(config, key) : NULL;
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v) : def;
}

static int async_init(json_t *config, void **ud, char *errstr, size_t errstr_size)
{
    async_inst_t *in = calloc(1, sizeof *in);
    if (!in) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    in->delay_ms = cfg_ms(config, "delay_ms", 50);
    in->sleep_ms = cfg_ms(config, "sleep_ms", 100);
    in->retry_after_ms = cfg_ms(config, "retry_after_ms", 1234);
    in->loop_thread = pthread_self();
    *ud = in;
    return 0;
}

static void waiter_unlink(waiter_t *w)
{
    *w->prevp = w->next;
    if (w->next)
        w->next->prevp = w->prevp;
    if (w->timer)
        event_free(w->timer);
    free(w);
}

static void async_shutdown(void *ud)
{
    async_inst_t *in = ud;
    /* The dispatcher is gone by now: completing a token it gave up only frees it. */
    while (in->waiters) {
        sb_pending_t *t = in->waiters->token;
        waiter_unlink(in->waiters);
        sb_pending_complete(t, SB_RETRY);
    }
    free(in);
}

static waiter_t *waiter_new(async_inst_t *in, sb_pending_t *token)
{
    waiter_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->in = in;
    w->token = token;
    w->next = in->waiters;
    if (w->next)
        w->next->prevp = &w->next;
    w->prevp = &in->waiters;
    in->waiters = w;
    return w;
}

static void fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    waiter_t *w = arg;
    sb_pending_t *t = w->token;
    waiter_unlink(w);
    sb_pending_complete(t, SB_OK);
}

static sb_outcome_t pending_ok(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    (void)ev;
    async_inst_t *in = ud;
    sb_pending_t *t = sb_ctx_pending(ctx);
    if (!t)
        return SB_RETRY;
    waiter_t *w = waiter_new(in, t);
    if (!w || !(w->timer = event_new(sb_loop_base(), -1, 0, fire, w))) {
        if (w)
            waiter_unlink(w);
        sb_pending_complete(t, SB_RETRY);
        return SB_PENDING;
    }
    struct timeval tv = {(time_t)(in->delay_ms / 1000), (suseconds_t)(in->delay_ms % 1000) * 1000};
    event_add(w->timer, &tv);
    return SB_PENDING;
}

static sb_outcome_t pending_never(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    (void)ev;
    sb_pending_t *t = sb_ctx_pending(ctx);
    if (!t || !waiter_new(ud, t))
        return SB_RETRY;
    return SB_PENDING;
}

static sb_outcome_t pending_early(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    (void)ev;
    (void)ud;
    sb_pending_t *t = sb_ctx_pending(ctx);
    if (!t)
        return SB_RETRY;
    sb_pending_complete(t, SB_OK);
    return SB_PENDING;
}

static sb_outcome_t block_sleep(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    (void)ev;
    async_inst_t *in = ud;
    struct timespec ts = {(time_t)(in->sleep_ms / 1000), (long)(in->sleep_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    const char *body = pthread_equal(pthread_self(), in->loop_thread) ? "{\"on_worker\":false}"
                                                                      : "{\"on_worker\":true}";
    return sb_ctx_publish(ctx, "BlockDone", body, strlen(body), NULL) == 0 ? SB_OK : SB_RETRY;
}

static sb_outcome_t publisher(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    (void)ud;
    char body[256];
    int n = snprintf(body, sizeof body, "{\"source\":\"%s\"}", sb_event_id(ev));
    if (sb_ctx_publish(ctx, "NotificationRequested", body, (size_t)n, NULL) != 0)
        return SB_RETRY;
    return SB_OK;
}

static sb_outcome_t reader(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    (void)ud;
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"JobId\":\"%s\",\"RecordsProcessed\":%" PRId64 ",\"CompletedAt\":%" PRId64
                     ",\"Flag\":%d,\"Ratio\":%.3f}",
                     sb_event_get_str(ev, "JobId", "none"),
                     sb_event_get_int(ev, "RecordsProcessed", -1),
                     sb_event_get_time(ev, "CompletedAt", -1), sb_event_get_bool(ev, "Flag", -1),
                     sb_event_get_double(ev, "Ratio", -1.5));
    if (n < 0 || (size_t)n >= sizeof body)
        return SB_REJECT;
    return sb_ctx_publish(ctx, "ReaderResult", body, (size_t)n, NULL) == 0 ? SB_OK : SB_RETRY;
}

static sb_outcome_t retry_after(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    (void)ev;
    async_inst_t *in = ud;
    sb_ctx_retry_after(ctx, in->retry_after_ms);
    sb_ctx_reason(ctx, "later");
    return SB_RETRY;
}

static const sb_handler_def_t handlers[] = {
    {.name = "pending_ok", .pattern = "Async.PendingOk", .fn = pending_ok},
    {.name = "pending_never", .pattern = "Async.PendingNever", .fn = pending_never},
    {.name = "pending_early", .pattern = "Async.PendingEarly", .fn = pending_early},
    {.name = "block_sleep",
     .pattern = "Async.BlockSleep",
     .fn = block_sleep,
     .flags = SB_HANDLER_BLOCKING},
    {.name = "publisher", .pattern = "Async.Publisher", .fn = publisher},
    {.name = "reader", .pattern = "Async.Reader", .fn = reader},
    {.name = "retry_after", .pattern = "Async.RetryAfter", .fn = retry_after},
    {0},
};

static const sb_module_t asyncmod = {
    SB_MODULE_HEADER,     .name = "asyncmod", .version = "1.0.0",
    .handlers = handlers, .init = async_init, .shutdown = async_shutdown,
};

SB_MODULE_DEFINE(asyncmod)
