/* settle.c: the dispatcher; see settle.h for the design.
 *
 * Handlers of one message run one after another, in binding order (messages run
 * concurrently). That keeps every event single-threaded: a blocking handler on a worker
 * and an asynchronous one on the loop never touch the same event at once, so the event's
 * lazily built fields need no locks. A handler that completes synchronously (the common
 * case) moves the message along without recursion through a small trampoline (advance()).
 *
 * The dispatcher never waits: store calls, pool jobs, publishes and settlements all
 * complete through callbacks on the loop thread. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "crashguard.h"
#include "datetime.h"
#include "log.h"
#include "settle.h"

#define HS_INLINE     2
#define BUSY_RETRY_MS 1000

const char *const sb__dl_reasons[SB__N_DL_REASONS] = {
    "decode", "schema", "unroutable", "rejected", "max-attempts", "timeout", "crashed"};

typedef enum hs_result {
    R_NONE = 0,
    R_OK,
    R_DUP,
    R_RETRY,
    R_REJECT,
    R_TIMEOUT,
    R_BUSY,        /* another owner holds the claim */
    R_UNAVAILABLE, /* the store failed (fail-closed) */
    R_RELEASED,    /* never ran: its turn was denied (the partition is gone) */
} hs_result_t;

typedef struct buffered_pub {
    struct buffered_pub *next;
    char *type, *key;
    char *body;
    size_t len;
} buffered_pub_t;

struct sb__hstate {
    sb__slot_t *slot;
    sb__handler_t *h;
    struct sb_context ctx;
    sb_pending_t *pending;
    struct event *timer;
    const char *key; /* idempotency key (slot arena), NULL without a store */
    bool claimed;    /* we own the key: complete or release it */
    bool on_worker;  /* the handler function is running on a worker thread */
    bool waiting;    /* PENDING, not completed yet */
    bool timed_out;
    bool has_retry_after;
    sb_outcome_t outcome; /* written by the worker */
    uint64_t retry_after_ms;
    uint64_t started_us;
    uint64_t claimed_us; /* when the claim was sent or last renewed */
    uint64_t lease_ms;
    bool turn_waiting; /* claimed, waiting for its turn (claim-ahead) */
    bool renewed;      /* its claim was renewed while waiting: verify it at the turn */
    int64_t worker_us; /* time the handler ran on its worker (written there) */
    unsigned pubs_outstanding;
    bool pub_failed;
    hs_result_t finish_after_pubs; /* done, but publishes still in flight */
    hs_result_t claim_result;      /* result to report once the store answered */
    bool early;                    /* completed from inside the handler call */
    buffered_pub_t *pubs, *pubs_tail;
    hs_result_t result;
    char reason[256];
};

struct sb__slot {
    sb__dispatcher_t *dp;
    sb__delivery_t *d;
    sb__slot_t *next_free;
    bool in_use;
    bool active;    /* a handler is running (asynchronously) */
    bool advancing; /* inside advance() */
    bool again;
    unsigned n_hs, next_hs;
    sb__hstate_t *hs;
    sb__hstate_t hs_inline[HS_INLINE];
    /* settlement in progress (for the transport callback) */
    sb__settlement_t how;
    sb_event_t ev;
};

struct sb__dispatcher {
    sb__runtime_t *rt;
    struct event_base *base;
    sb__intake_t *intake;
    sb__transport_t *tx;
    sb__store_t *store;
    sb__pool_t *pool;
    sb__dispatcher_opts_t o;
    char *consumer, *group, *prefix;
    sb__slot_t *slots;
    sb__slot_t *free_slots;
    /* intake's verdict for the message being delivered: used within deliver() only (its
     * targets are copied to the slot, its error text consumed by the dead-letter call),
     * so one per dispatcher instead of one per slot */
    sb__verdict_t verdict;
    unsigned n_fresh; /* slots[0..n_fresh) were ever used (initialised); the rest untouched */
    size_t inflight;
    bool paused;   /* we paused the transport for lack of slots */
    bool stopping; /* shutdown: intake stopped */
    sb__dispatcher_stats_t stats;
    sb__timer_t *renew; /* renews the claims of messages waiting for their turn */
    void (*observe)(void *arg, const sb__settle_info_t *info);
    void *observe_arg;
};

static void advance(sb__slot_t *s);
static void hs_done(sb__hstate_t *hs, hs_result_t r);
static void handle_outcome(sb__hstate_t *hs, sb_outcome_t out);
static void renew_start(sb__dispatcher_t *dp);

/* ---- slots -------------------------------------------------------------------------------- */

/* Slots are initialised on first use: the array is calloc'd (untouched pages cost no
 * memory), so a consumer whose prefetch is below max_inflight never pays for the rest. */
static sb__slot_t *slot_get(sb__dispatcher_t *dp)
{
    sb__slot_t *s = dp->free_slots;
    if (s) {
        dp->free_slots = s->next_free;
    } else if (dp->n_fresh < dp->o.max_inflight) {
        s = &dp->slots[dp->n_fresh++];
        s->dp = dp;
        sb__event_init(&s->ev);
    } else {
        return NULL;
    }
    s->in_use = true;
    s->active = s->advancing = s->again = false;
    s->n_hs = s->next_hs = 0;
    s->hs = NULL;
    dp->inflight++;
    if (!dp->paused && dp->inflight >= dp->o.max_inflight && dp->tx->ops->pause) {
        dp->paused = true;
        dp->tx->ops->pause(dp->tx);
    }
    return s;
}

static void hs_cleanup(sb__hstate_t *hs)
{
    if (hs->timer) {
        event_free(hs->timer);
        hs->timer = NULL;
    }
    buffered_pub_t *p = hs->pubs;
    while (p) {
        buffered_pub_t *n = p->next;
        sb_free(p);
        p = n;
    }
    hs->pubs = hs->pubs_tail = NULL;
    if (hs->pending) {
        /* Never completed before the slot went away: detach; complete() frees it. */
        hs->pending->hs = NULL;
        hs->pending = NULL;
    }
}

static void slot_put(sb__slot_t *s)
{
    sb__dispatcher_t *dp = s->dp;
    for (unsigned i = 0; i < s->n_hs; i++)
        hs_cleanup(&s->hs[i]);
    sb__event_reset(&s->ev);
    s->d = NULL;
    s->in_use = false;
    s->next_free = dp->free_slots;
    dp->free_slots = s;
    dp->inflight--;
    if (dp->paused && !dp->stopping && dp->inflight <= dp->o.max_inflight * 3 / 4) {
        dp->paused = false;
        if (dp->tx->ops->resume)
            dp->tx->ops->resume(dp->tx);
    }
    if (dp->stopping)
        sb__runtime_poke(dp->rt);
}

/* ---- settlement ---------------------------------------------------------------------------- */

static void notify(sb__slot_t *s, sb__settlement_t how, uint64_t delay, const char *reason,
                   const char *error, const char *handler)
{
    sb__dispatcher_t *dp = s->dp;
    if (!dp->observe)
        return;
    sb__settle_info_t info = {.how = how,
                              .ev = &s->ev,
                              .delay_ms = delay,
                              .attempt = s->d->attempt,
                              .reason = reason,
                              .error = error,
                              .handler = handler};
    dp->observe(dp->observe_arg, &info);
}

static void log_fields(const sb__slot_t *s, const char *handler, sb__log_fields_t *f)
{
    f->event_id = s->ev.id;
    f->event_type = s->ev.type;
    f->handler = handler;
    f->trace_id = s->ev.traceparent;
    f->module = NULL;
}

static void settled_cb(void *arg, int status)
{
    sb__slot_t *s = arg;
    sb__dispatcher_t *dp = s->dp;
    if (status != SB_EOK) {
        /* The retry or dead-letter copy was not confirmed: the original must not be
         * acked. Give it back to the broker, which redelivers it. */
        sb__log_fields_t f;
        log_fields(s, NULL, &f);
        sb__log(SB_LOG_ERROR, &f, "%s publish failed (%s): releasing the message unsettled",
                s->how == SB__SETTLED_RETRY ? "retry" : "dead-letter", sb_strerror(status));
        dp->stats.released++;
        if (s->how == SB__SETTLED_RETRY)
            dp->stats.retried--;
        else
            dp->stats.dead_lettered--;
        notify(s, SB__SETTLED_RELEASE, 0, NULL, sb_strerror(status), NULL);
        dp->tx->ops->release(dp->tx, s->d);
    }
    slot_put(s);
}

static int reason_index(const char *reason)
{
    for (int i = 0; i < SB__N_DL_REASONS; i++)
        if (!strcmp(sb__dl_reasons[i], reason))
            return i;
    return 0;
}

static void settle_ack(sb__slot_t *s)
{
    sb__dispatcher_t *dp = s->dp;
    sb__crashguard_clear(dp->o.crashguard, s->ev.id, s->ev.id_len);
    dp->stats.acked++;
    notify(s, SB__SETTLED_ACK, 0, NULL, NULL, NULL);
    dp->tx->ops->ack(dp->tx, s->d);
    slot_put(s);
}

static void settle_dead_letter(sb__slot_t *s, const char *reason, const char *error,
                               sb__handler_t *h)
{
    sb__dispatcher_t *dp = s->dp;
    sb__log_fields_t f;
    log_fields(s, h ? h->name : NULL, &f);
    sb__log(SB_LOG_WARN, &f, "dead-lettering (%s): %s", reason, error ? error : "");
    sb__dl_meta_t meta = {.reason = reason,
                          .error = error ? error : "",
                          .handler = h ? h->name : NULL,
                          .attempts = s->d->attempt,
                          .consumer = dp->consumer,
                          .failed_at_us = sb__datetime_now_us()};
    sb__crashguard_clear(dp->o.crashguard, s->ev.id, s->ev.id_len);
    dp->stats.dead_lettered++;
    dp->stats.dl_by_reason[reason_index(reason)]++;
    if (h)
        h->n_dead_lettered++;
    s->how = SB__SETTLED_DEAD_LETTER;
    notify(s, SB__SETTLED_DEAD_LETTER, 0, reason, error, h ? h->name : NULL);
    int rc = dp->tx->ops->dead_letter(dp->tx, s->d, &meta, settled_cb, s);
    if (rc != SB_EOK)
        settled_cb(s, rc);
}

static void settle_retry(sb__slot_t *s, uint64_t delay_ms, unsigned next_attempt, const char *why,
                         const char *handler)
{
    sb__dispatcher_t *dp = s->dp;
    sb__log_fields_t f;
    log_fields(s, handler, &f);
    sb__log(SB_LOG_INFO, &f, "retry in %" PRIu64 " ms (attempt %u): %s", delay_ms, next_attempt,
            why ? why : "");
    dp->stats.retried++;
    s->how = SB__SETTLED_RETRY;
    notify(s, SB__SETTLED_RETRY, delay_ms, NULL, why, handler);
    int rc = dp->tx->ops->retry_later(dp->tx, s->d, delay_ms, next_attempt, settled_cb, s);
    if (rc != SB_EOK)
        settled_cb(s, rc);
}

/* Every handler has a result: settle the message exactly once. */
static void settle(sb__slot_t *s)
{
    for (unsigned i = 0; i < s->n_hs; i++) {
        if (s->hs[i].result == R_RELEASED) {
            s->dp->stats.released++;
            s->dp->tx->ops->release(s->dp->tx, s->d);
            slot_put(s);
            return;
        }
    }
    sb__hstate_t *reject = NULL, *exhausted = NULL, *retry = NULL, *busy = NULL;
    uint64_t delay = 0;
    unsigned attempt = s->d->attempt;
    unsigned dups = 0;
    for (unsigned i = 0; i < s->n_hs; i++) {
        sb__hstate_t *hs = &s->hs[i];
        dups += hs->result == R_DUP;
        switch (hs->result) {
        case R_REJECT:
            if (!reject)
                reject = hs;
            break;
        case R_RETRY:
        case R_TIMEOUT: {
            if (sb__retry_exhausted(&hs->h->retry, attempt)) {
                if (!exhausted)
                    exhausted = hs;
                break;
            }
            uint64_t d = hs->has_retry_after
                             ? hs->retry_after_ms
                             : sb__retry_delay_ms(&hs->h->retry, attempt + 1, sb__random_u64());
            if (!retry || d > delay)
                delay = d;
            if (!retry)
                retry = hs;
            break;
        }
        case R_BUSY:
        case R_UNAVAILABLE:
            if (!busy)
                busy = hs;
            break;
        default:
            break;
        }
    }
    if (reject) {
        settle_dead_letter(s, "rejected",
                           reject->reason[0] ? reject->reason : "rejected by the handler",
                           reject->h);
    } else if (exhausted) {
        char why[400];
        snprintf(why, sizeof why, "gave up after %u attempts: %s", attempt,
                 exhausted->reason[0] ? exhausted->reason : "the handler asked for a retry");
        settle_dead_letter(s, exhausted->result == R_TIMEOUT ? "timeout" : "max-attempts", why,
                           exhausted->h);
    } else if (retry) {
        settle_retry(s, delay, attempt + 1,
                     retry->reason[0] ? retry->reason : "the handler asked for a retry",
                     retry->h->name);
    } else if (busy) {
        /* Not the handler's failure: the attempt does not count. */
        settle_retry(s, BUSY_RETRY_MS, attempt,
                     busy->result == R_BUSY ? "another consumer holds the event"
                                            : "idempotency store unavailable",
                     busy->h->name);
    } else {
        if (dups == s->n_hs)
            s->dp->stats.duplicate_events++;
        settle_ack(s);
    }
}

/* ---- per-handler steps --------------------------------------------------------------------- */

static void count(sb__hstate_t *hs, hs_result_t r)
{
    sb__handler_t *h = hs->h;
    switch (r) {
    case R_OK:
        h->n_ok++;
        break;
    case R_DUP:
        h->n_duplicates++;
        hs->slot->dp->stats.duplicates++;
        break;
    case R_RETRY:
        h->n_retried++;
        break;
    case R_TIMEOUT:
        h->n_timeouts++;
        h->n_retried++;
        break;
    case R_REJECT:
        h->n_rejected++;
        break;
    default:
        break;
    }
}

static void hs_done(sb__hstate_t *hs, hs_result_t r)
{
    if (hs->pubs_outstanding > 0) {
        hs->finish_after_pubs = r;
        return;
    }
    if (hs->timer)
        event_del(hs->timer);
    hs->result = r;
    count(hs, r);
    if (hs->started_us && r != R_DUP && r != R_BUSY && r != R_UNAVAILABLE)
        sb__histogram_observe(&hs->h->duration,
                              (double)(sb__datetime_now_us() - hs->started_us) / 1e6);
    sb__slot_t *s = hs->slot;
    s->active = false;
    advance(s);
}

static void store_done_cb(void *arg, int status)
{
    sb__hstate_t *hs = arg;
    /* A failed complete or release changes nothing: the lease expires on its own. */
    hs_done(hs, hs->claim_result);
}

/* The last handler of a message succeeded and every earlier one succeeded or was a
 * duplicate, so the message will be acked: the next message of its ordering unit may run
 * now, while the store records completion (transport.h, turn_done). */
static void release_turn_early(sb__hstate_t *hs)
{
    sb__slot_t *s = hs->slot;
    sb__dispatcher_t *dp = s->dp;
    if (!s->d->turn || !dp->tx->ops->turn_done || hs != &s->hs[s->n_hs - 1])
        return;
    for (unsigned i = 0; i + 1 < s->n_hs; i++)
        if (s->hs[i].result != R_OK && s->hs[i].result != R_DUP)
            return;
    dp->tx->ops->turn_done(dp->tx, s->d);
}

/* Completes or releases our claim, then finishes the handler with r. */
static void finish_claim(sb__hstate_t *hs, hs_result_t r)
{
    sb__dispatcher_t *dp = hs->slot->dp;
    if (!hs->claimed) {
        hs_done(hs, r);
        return;
    }
    hs->claimed = false;
    hs->claim_result = r;
    if (r == R_OK)
        release_turn_early(hs);
    int rc;
    if (r == R_OK)
        rc = dp->store->ops->complete(dp->store, hs->key, dp->o.done_ttl_ms, store_done_cb, hs);
    else
        rc = dp->store->ops->release(dp->store, hs->key, store_done_cb, hs);
    if (rc != SB_EOK) {
        /* The lease will expire on its own; the outcome stands. */
        hs_done(hs, r);
    }
}

static void after_ok(sb__hstate_t *hs)
{
    if (hs->pub_failed) {
        if (!hs->reason[0])
            snprintf(hs->reason, sizeof hs->reason, "a follow-up event could not be published");
        finish_claim(hs, R_RETRY);
        return;
    }
    finish_claim(hs, R_OK);
}

static void pub_cb(void *arg, int status)
{
    sb__hstate_t *hs = arg;
    sb__dispatcher_t *dp = hs->slot->dp;
    if (status != SB_EOK) {
        hs->pub_failed = true;
        dp->stats.publish_failures++;
    }
    if (--hs->pubs_outstanding > 0)
        return;
    if (hs->finish_after_pubs != R_NONE && hs->result == R_NONE && !hs->waiting && !hs->on_worker) {
        /* R_OK: the handler succeeded and its claim is still to complete; anything else:
         * the claim was settled already and only the publishes held the handler back. */
        hs_result_t r = hs->finish_after_pubs;
        hs->finish_after_pubs = R_NONE;
        if (r == R_OK)
            after_ok(hs);
        else
            hs_done(hs, r);
    }
}

static int do_publish(sb__hstate_t *hs, const char *type, const char *body, size_t len,
                      const char *key)
{
    sb__slot_t *s = hs->slot;
    sb__dispatcher_t *dp = s->dp;
    char id[37];
    uint64_t a = sb__random_u64(), b = sb__random_u64();
    snprintf(id, sizeof id, "%08x-%04x-4%03x-%04x-%012" PRIx64, (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
             (unsigned)(0x8000 | ((b >> 48) & 0x3fff)), (uint64_t)(b & 0xffffffffffffULL));
    sb__outmsg_t m = {.type = type,
                      .body = body,
                      .body_len = len,
                      .key = key,
                      .id = id,
                      .traceparent = s->ev.traceparent,
                      .tracestate = s->ev.tracestate};
    dp->stats.publishes++;
    hs->pubs_outstanding++;
    int rc = dp->tx->ops->publish(dp->tx, &m, pub_cb, hs);
    if (rc != SB_EOK) {
        hs->pubs_outstanding--;
        hs->pub_failed = true;
        dp->stats.publish_failures++;
    }
    return rc;
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    sb__hstate_t *hs = arg;
    hs->timed_out = true;
    if (hs->waiting) {
        /* Give up the pending attempt; a late completion is ignored. */
        hs->waiting = false;
        if (hs->pending) {
            hs->pending->hs = NULL;
            hs->pending = NULL;
        }
        snprintf(hs->reason, sizeof hs->reason, "handler timed out after %" PRIu64 " ms",
                 hs->h->timeout_ms);
        finish_claim(hs, R_TIMEOUT);
    }
}

static void arm_timeout(sb__hstate_t *hs)
{
    if (!hs->h->timeout_ms)
        return;
    sb__dispatcher_t *dp = hs->slot->dp;
    if (!hs->timer && !(hs->timer = event_new(dp->base, -1, 0, timeout_cb, hs)))
        return; /* no timer: the handler runs without a deadline */
    struct timeval tv = {(time_t)(hs->h->timeout_ms / 1000),
                         (suseconds_t)(hs->h->timeout_ms % 1000) * 1000};
    event_add(hs->timer, &tv);
}

static void worker_run(void *arg)
{
    sb__hstate_t *hs = arg;
    int64_t t0 = sb__datetime_now_us();
    sb__crashguard_t *g = hs->slot->dp->o.crashguard;
    sb__crashguard_enter(g, false, hs->slot->ev.id, hs->slot->ev.id_len);
    hs->outcome = hs->h->def->fn(&hs->ctx, &hs->slot->ev, hs->h->ud);
    sb__crashguard_leave(g, false);
    hs->worker_us = sb__datetime_now_us() - t0;
}

static void worker_done(void *arg)
{
    sb__hstate_t *hs = arg;
    hs->on_worker = false;
    /* The timeout counts the time the handler ran, not the time it waited for a worker;
     * a blocking handler cannot be interrupted, so it is judged when it returns. */
    if (hs->h->timeout_ms && hs->worker_us > (int64_t)hs->h->timeout_ms * 1000)
        hs->timed_out = true;
    sb_outcome_t out = hs->outcome;
    /* Follow-ups of a blocking handler go out only when its attempt succeeded: a retried
     * attempt would otherwise publish them again. */
    if (out == SB_OK && !hs->timed_out)
        for (buffered_pub_t *p = hs->pubs; p; p = p->next)
            do_publish(hs, p->type, p->body, p->len, p->key);
    if (out == SB_PENDING) {
        snprintf(hs->reason, sizeof hs->reason,
                 "a blocking handler returned SB_PENDING, which only loop handlers may");
        out = SB_RETRY;
    }
    if (hs->timed_out) {
        snprintf(hs->reason, sizeof hs->reason, "handler timed out after %" PRIu64 " ms",
                 hs->h->timeout_ms);
        finish_claim(hs, R_TIMEOUT);
        return;
    }
    handle_outcome(hs, out);
}

static void handle_outcome(sb__hstate_t *hs, sb_outcome_t out)
{
    switch (out) {
    case SB_OK:
        if (hs->pubs_outstanding > 0) {
            hs->finish_after_pubs = R_OK;
            return;
        }
        after_ok(hs);
        return;
    case SB_RETRY:
        finish_claim(hs, R_RETRY);
        return;
    case SB_REJECT:
        finish_claim(hs, R_REJECT);
        return;
    case SB_PENDING:
        if (hs->early) {
            /* sb_pending_complete() ran inside the handler call. */
            hs->early = false;
            handle_outcome(hs, hs->outcome == SB_PENDING ? SB_RETRY : hs->outcome);
            return;
        }
        if (!hs->pending) {
            snprintf(hs->reason, sizeof hs->reason,
                     "handler returned SB_PENDING without calling sb_ctx_pending()");
            finish_claim(hs, R_RETRY);
            return;
        }
        hs->waiting = true;
        arm_timeout(hs);
        return;
    default:
        snprintf(hs->reason, sizeof hs->reason, "handler returned an invalid outcome %d", (int)out);
        finish_claim(hs, R_RETRY);
        return;
    }
}

static void run_handler(sb__hstate_t *hs)
{
    sb__slot_t *s = hs->slot;
    sb__dispatcher_t *dp = s->dp;
    hs->started_us = sb__datetime_now_us();
    /* Its claim is renewed while it runs: a blocking handler, an asynchronous one (pending
     * token) or one whose publishes are still unconfirmed may outlast the lease. */
    if (hs->claimed)
        renew_start(dp);
    if (hs->h->blocking) {
        hs->on_worker = true;
        int rc = dp->pool ? sb__pool_submit(dp->pool, worker_run, worker_done, hs) : SB_EINVAL;
        if (rc != SB_EOK) {
            hs->on_worker = false;
            snprintf(hs->reason, sizeof hs->reason, "worker pool full");
            finish_claim(hs, R_BUSY);
            return;
        }
        return;
    }
    sb__crashguard_enter(dp->o.crashguard, true, s->ev.id, s->ev.id_len);
    sb_outcome_t out = hs->h->def->fn(&hs->ctx, &s->ev, hs->h->ud);
    sb__crashguard_leave(dp->o.crashguard, true);
    handle_outcome(hs, out);
}

/* How often held claims are looked at: a quarter of the lease, within 50 ms .. 1 s. */
static uint64_t renew_tick_ms(const sb__dispatcher_t *dp)
{
    uint64_t ms = dp->o.lease_ms / 4;
    return ms < 50 ? 50 : ms > 1000 ? 1000 : ms;
}

static void renew_start(sb__dispatcher_t *dp)
{
    if (dp->renew && !sb__timer_pending(dp->renew))
        sb__timer_start(dp->renew, renew_tick_ms(dp), false);
}

/* Held claims are renewed every third of their lease: those of messages waiting for their
 * turn (claim-ahead: each earlier message may take up to its timeout), and those of
 * handlers still running (a blocking handler claims for the plain lease, however long its
 * timeout, so a crash frees its events after one lease, not after the timeout). Fire and
 * forget: a waiting message's turn verifies ownership once more before the handler runs;
 * a running handler's completion writes "done" only while the key is its own or free. */
static void renew_tick(sb__timer_t *t, void *arg)
{
    sb__dispatcher_t *dp = arg;
    uint64_t now = sb__datetime_now_us();
    bool waiting = false;
    for (unsigned i = 0; i < dp->n_fresh; i++) {
        sb__slot_t *s = &dp->slots[i];
        if (!s->in_use || !s->next_hs)
            continue;
        sb__hstate_t *hs = &s->hs[s->next_hs - 1];
        if (!hs->claimed || !(hs->turn_waiting || hs->started_us))
            continue;
        waiting = true;
        if (now - hs->claimed_us > hs->lease_ms * 1000 / 3 &&
            dp->store->ops->extend(dp->store, hs->key, hs->lease_ms, NULL, NULL) == SB_EOK) {
            hs->claimed_us = now;
            hs->renewed = true;
        }
    }
    if (waiting)
        sb__timer_start(t, renew_tick_ms(dp), false);
}

static void renewed_cb(void *arg, int status)
{
    sb__hstate_t *hs = arg;
    if (status == SB_EOK) {
        run_handler(hs);
        return;
    }
    /* Not ours any more (SB_ESTATE: someone claimed it after the lease ran out), or the
     * store failed: do not run; the message comes back later. The release only deletes
     * the key if it is still ours, and forgets it locally. */
    snprintf(hs->reason, sizeof hs->reason, "the claim expired while waiting for its turn");
    finish_claim(hs, status == SB_ESTATE ? R_BUSY : R_UNAVAILABLE);
}

static void turn_cb(void *arg)
{
    sb__hstate_t *hs = arg;
    sb__slot_t *s = hs->slot;
    sb__dispatcher_t *dp = s->dp;
    hs->turn_waiting = false;
    if (s->d->turn && s->d->turn->denied) {
        s->next_hs = s->n_hs; /* none of its handlers runs */
        finish_claim(hs, R_RELEASED);
        return;
    }
    /* Claimed ahead and waited long for the turn (earlier messages each may take up to
     * their timeout): renew the claim, and run only if it is still ours, so the handler
     * never runs on a lease that may already have run out. */
    if (hs->claimed && hs->claimed_us &&
        (hs->renewed || sb__datetime_now_us() - hs->claimed_us > hs->lease_ms * 1000 / 3)) {
        hs->claimed_us = sb__datetime_now_us();
        if (dp->store->ops->extend(dp->store, hs->key, hs->lease_ms, renewed_cb, hs) == SB_EOK)
            return;
        renewed_cb(hs, SB_EUNAVAILABLE);
        return;
    }
    run_handler(hs);
}

/* Runs the handler now, or once the message's turn comes (claim-ahead, transport.h). */
static void run_in_turn(sb__hstate_t *hs)
{
    sb__turn_t *t = hs->slot->d->turn;
    if (t && !t->granted && !t->denied) {
        t->on_grant = turn_cb;
        t->arg = hs;
        hs->turn_waiting = true;
        renew_start(hs->slot->dp);
        return;
    }
    turn_cb(hs);
}

static void claim_cb(void *arg, sb__claim_result_t r)
{
    sb__hstate_t *hs = arg;
    sb__dispatcher_t *dp = hs->slot->dp;
    switch (r) {
    case SB__CLAIM_OWNED:
        hs->claimed = true;
        run_in_turn(hs);
        return;
    case SB__CLAIM_DONE:
        hs_done(hs, R_DUP);
        return;
    case SB__CLAIM_BUSY:
        hs_done(hs, R_BUSY);
        return;
    default:
        if (dp->o.process_without_store) {
            run_in_turn(hs);
            return;
        }
        hs_done(hs, R_UNAVAILABLE);
        return;
    }
}

static void begin(sb__hstate_t *hs)
{
    sb__slot_t *s = hs->slot;
    sb__dispatcher_t *dp = s->dp;
    if (!dp->store) {
        run_handler(hs);
        return;
    }
    if (!hs->key) {
        size_t n = strlen(dp->prefix) + strlen(dp->group) + strlen(hs->h->name) + s->ev.id_len + 6;
        char *k = sb__arena_alloc(&s->ev.arena, n);
        if (!k) {
            snprintf(hs->reason, sizeof hs->reason, "out of memory");
            hs_done(hs, R_UNAVAILABLE);
            return;
        }
        snprintf(k, n, "%s{%s}:%s:%s", dp->prefix, dp->group, hs->h->name, s->ev.id);
        hs->key = k;
    }
    /* A handler on the loop (synchronous or pending) keeps its claim for its whole timeout;
     * a blocking one, on a worker while the loop renews its claim (renew_tick), for the
     * plain lease. */
    uint64_t lease = dp->o.lease_ms;
    if (!hs->h->blocking && hs->h->timeout_ms + 5000 > lease)
        lease = hs->h->timeout_ms + 5000;
    hs->lease_ms = lease;
    hs->claimed_us = sb__datetime_now_us();
    if (dp->store->ops->claim(dp->store, hs->key, lease, claim_cb, hs) != SB_EOK)
        claim_cb(hs, SB__CLAIM_ERROR);
}

static void advance(sb__slot_t *s)
{
    if (s->advancing) {
        s->again = true;
        return;
    }
    s->advancing = true;
    for (;;) {
        s->again = false;
        if (s->active)
            break;
        if (s->next_hs < s->n_hs) {
            sb__hstate_t *hs = &s->hs[s->next_hs++];
            s->active = true;
            begin(hs);
            if (s->again || !s->active)
                continue;
            break;
        }
        s->advancing = false;
        settle(s); /* may free the slot */
        return;
    }
    s->advancing = false;
}

/* ---- intake -------------------------------------------------------------------------------- */

void sb__dispatcher_deliver(void *arg, sb__delivery_t *d)
{
    sb__dispatcher_t *dp = arg;
    dp->stats.received++;
    sb__slot_t *s = slot_get(dp);
    if (!s) {
        /* The transport pushed past pause(): give the message back, it is redelivered. */
        dp->stats.released++;
        dp->tx->ops->release(dp->tx, d);
        return;
    }
    s->d = d;
    int rc = sb__intake_process(dp->intake, &d->msg, &s->ev, &dp->verdict);
    s->ev.attempt = d->attempt;
    if (rc != SB_EOK) {
        sb__log(SB_LOG_ERROR, NULL, "intake: %s: releasing the message", sb_strerror(rc));
        dp->stats.released++;
        dp->tx->ops->release(dp->tx, d);
        slot_put(s);
        return;
    }
    sb__verdict_t *v = &dp->verdict;
    if (v->kind == SB__VERDICT_DEAD_LETTER) {
        settle_dead_letter(s, v->reason, v->error, NULL);
        return;
    }
    if (v->kind == SB__VERDICT_ACK) {
        if (!strcmp(v->reason, "unroutable"))
            dp->stats.acked_unroutable++;
        else
            dp->stats.acked_invalid++;
        settle_ack(s);
        return;
    }
    unsigned strikes = sb__crashguard_strikes(dp->o.crashguard, s->ev.id, s->ev.id_len);
    if (strikes && strikes >= sb__crashguard_max(dp->o.crashguard)) {
        char why[160];
        snprintf(why, sizeof why,
                 "the consumer crashed %u times while a handler ran this event: not run again",
                 strikes);
        settle_dead_letter(s, "crashed", why, NULL);
        return;
    }
    s->n_hs = (unsigned)v->n_targets;
    if (s->n_hs <= HS_INLINE) {
        s->hs = s->hs_inline;
    } else if (!(s->hs = sb__arena_alloc(&s->ev.arena, s->n_hs * sizeof *s->hs))) {
        dp->stats.released++;
        dp->tx->ops->release(dp->tx, d);
        s->n_hs = 0;
        slot_put(s);
        return;
    }
    memset(s->hs, 0, s->n_hs * sizeof *s->hs);
    for (unsigned i = 0; i < s->n_hs; i++) {
        s->hs[i].slot = s;
        s->hs[i].h = v->targets[i];
        s->hs[i].ctx.hs = &s->hs[i];
    }
    advance(s);
}

/* ---- context functions (host API) ------------------------------------------------------ */

const char *sb__ctx_handler(const sb_context_t *ctx)
{
    return ctx->hs->h->name;
}

void sb__ctx_retry_after(sb_context_t *ctx, uint64_t delay_ms)
{
    ctx->hs->has_retry_after = true;
    ctx->hs->retry_after_ms = delay_ms;
}

void sb__ctx_reason(sb_context_t *ctx, const char *fmt, va_list ap)
{
    vsnprintf(ctx->hs->reason, sizeof ctx->hs->reason, fmt, ap);
}

int sb__ctx_publish(sb_context_t *ctx, const char *type, const char *body, size_t len,
                    const char *key)
{
    sb__hstate_t *hs = ctx->hs;
    if (!type || !*type || (!body && len))
        return SB_EINVAL;
    if (!hs->on_worker)
        return do_publish(hs, type, body, len, key);
    /* On a worker thread: keep a copy; the loop publishes it when the handler returns. */
    size_t tl = strlen(type) + 1, kl = key ? strlen(key) + 1 : 0;
    buffered_pub_t *p = sb_malloc(sizeof *p + tl + kl + len);
    if (!p)
        return SB_ENOMEM;
    char *mem = (char *)(p + 1);
    p->next = NULL;
    p->type = memcpy(mem, type, tl);
    p->key = kl ? memcpy(mem + tl, key, kl) : NULL;
    p->body = memcpy(mem + tl + kl, body ? body : "", len);
    p->len = len;
    if (hs->pubs_tail)
        hs->pubs_tail->next = p;
    else
        hs->pubs = p;
    hs->pubs_tail = p;
    return SB_EOK;
}

sb_pending_t *sb__ctx_pending(sb_context_t *ctx)
{
    sb__hstate_t *hs = ctx->hs;
    if (hs->on_worker)
        return NULL;
    if (hs->pending)
        return hs->pending;
    sb_pending_t *p = sb_malloc(sizeof *p);
    if (!p)
        return NULL;
    p->hs = hs;
    hs->pending = p;
    return p;
}

void sb__pending_complete(sb_pending_t *p, sb_outcome_t outcome)
{
    if (!p)
        return;
    sb__hstate_t *hs = p->hs;
    sb_free(p);
    if (!hs)
        return; /* given up already (timeout or shutdown) */
    hs->pending = NULL;
    if (!hs->waiting) {
        /* Completed from inside the handler, before it returned SB_PENDING: remember the
         * outcome; handle_outcome() takes it when the handler returns. */
        hs->early = true;
        hs->outcome = outcome;
        return;
    }
    hs->waiting = false;
    if (hs->timer)
        event_del(hs->timer);
    if (outcome == SB_PENDING)
        outcome = SB_RETRY;
    handle_outcome(hs, outcome);
}

/* ---- life cycle ----------------------------------------------------------------------- */

static void p_stop_intake(void *arg)
{
    sb__dispatcher_t *dp = arg;
    dp->stopping = true;
    if (dp->tx->ops->stop)
        dp->tx->ops->stop(dp->tx);
}

static size_t p_inflight(void *arg)
{
    return ((sb__dispatcher_t *)arg)->inflight;
}

static const sb__runtime_participant_t participant = {
    .name = "dispatcher",
    .stop_intake = p_stop_intake,
    .inflight = p_inflight,
    .finish = NULL,
};

int sb__dispatcher_new(sb__runtime_t *rt, sb__intake_t *intake, sb__transport_t *tx,
                       sb__store_t *store, sb__pool_t *pool, const sb__dispatcher_opts_t *o,
                       sb__dispatcher_t **out, char *errstr, size_t errstr_size)
{
    sb__dispatcher_t *dp = sb_calloc(1, sizeof *dp);
    if (!dp)
        goto nomem;
    dp->rt = rt;
    dp->base = sb__runtime_base(rt);
    dp->intake = intake;
    dp->tx = tx;
    dp->store = store;
    dp->pool = pool;
    dp->o = *o;
    if (!dp->o.max_inflight)
        dp->o.max_inflight = 1000;
    if (!dp->o.lease_ms)
        dp->o.lease_ms = 30000;
    if (!dp->o.done_ttl_ms)
        dp->o.done_ttl_ms = 7ull * 86400000;
    if (!(dp->consumer = sb_strdup(o->consumer ? o->consumer : "switchboard")) ||
        !(dp->group = sb_strdup(o->group ? o->group : "switchboard")) ||
        !(dp->prefix = sb_strdup(o->key_prefix ? o->key_prefix : "sb:idem:")))
        goto nomem;
    dp->o.consumer = dp->consumer;
    dp->o.group = dp->group;
    dp->o.key_prefix = dp->prefix;
    dp->slots = sb_calloc(dp->o.max_inflight, sizeof *dp->slots);
    if (!dp->slots)
        goto nomem;
    if (store && !(dp->renew = sb__runtime_timer_new(rt, renew_tick, dp)))
        goto nomem;
    if (sb__runtime_add_participant(rt, &participant, dp) != SB_EOK)
        goto nomem;
    tx->sink = sb__dispatcher_deliver;
    tx->sink_arg = dp;
    *out = dp;
    return SB_EOK;
nomem:
    sb__dispatcher_destroy(dp);
    if (errstr && errstr_size)
        snprintf(errstr, errstr_size, "out of memory creating the dispatcher");
    return SB_ENOMEM;
}

void sb__dispatcher_destroy(sb__dispatcher_t *dp)
{
    if (!dp)
        return;
    if (dp->slots) {
        for (unsigned i = 0; i < dp->n_fresh; i++) {
            sb__slot_t *s = &dp->slots[i];
            for (unsigned k = 0; s->in_use && k < s->n_hs; k++)
                hs_cleanup(&s->hs[k]);
            sb__event_reset(&s->ev);
        }
        sb__runtime_remove_participant(dp->rt, &participant, dp);
    }
    sb__timer_destroy(dp->renew);
    sb_free(dp->slots);
    sb_free(dp->consumer);
    sb_free(dp->group);
    sb_free(dp->prefix);
    sb_free(dp);
}

size_t sb__dispatcher_inflight(const sb__dispatcher_t *dp)
{
    return dp->inflight;
}

const sb__dispatcher_stats_t *sb__dispatcher_stats(const sb__dispatcher_t *dp)
{
    return &dp->stats;
}

void sb__dispatcher_observe(sb__dispatcher_t *dp,
                            void (*fn)(void *arg, const sb__settle_info_t *info), void *arg)
{
    dp->observe = fn;
    dp->observe_arg = arg;
}
