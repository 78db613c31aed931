/* amqp_publish.c: the RabbitMQ transport's confirm channel: retries, dead letters and
 * follow-up events.
 *
 * Design: publishes are built on the loop (properties decoded from the original's raw
 * bytes, headers adjusted), published by the I/O thread on channel 2 under publisher
 * confirms, pipelined (no wait per message); the broker's acks (multiple too) and nacks
 * complete them; a connection loss fails every outstanding one. Callbacks run on the loop.
 *
 * Retries use per-delay queues, not per-message expiration: RabbitMQ only expires messages
 * at the head of a queue, so one long per-message TTL would hold back every shorter one
 * behind it. Delays are rounded UP to a bucket (100 ms, 250 ms, 500 ms, 1 s, 2 s, 5 s,
 * 10 s, 30 s, 1 min, 2 min, 5 min, 10 min, 30 min, 1 h, 2 h, 6 h, 12 h, 24 h; delays under
 * 50 ms requeue at once to the source queue), which bounds the number of queues per source
 * queue to 18. `<queue>.retry.<ms>` dead-letters back to its source queue through the
 * default exchange; dead-lettering replaces the routing key, so the copy carries the
 * event's own routing key and exchange in x-sb-routing-key / x-sb-exchange, which take
 * precedence on delivery. x-sb-attempts counts attempts made; without it, the largest
 * x-death count is used. The original is acked only after the copy's confirm. (Broker-side
 * dead-lettering of classic queues is at-most-once: a broker crash in the TTL hand-over
 * can lose a retry copy; quorum retry queues would be needed to close that gap.)
 *
 * It does not: declare the retry queues (amqp_conn.c does, on first use per connection),
 * or wait for confirms of follow-up publishes at destroy (the dispatcher drained before
 * that). */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <event2/event.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "amqp_tx.h"
#include "datetime.h"

#define IMMEDIATE_MS 50

const uint64_t sb__amqptx_buckets_ms[] = {100,     250,     500,     1000,     2000,     5000,
                                          10000,   30000,   60000,   120000,   300000,   600000,
                                          1800000, 3600000, 7200000, 21600000, 43200000, 86400000};
_Static_assert(sizeof sb__amqptx_buckets_ms / sizeof sb__amqptx_buckets_ms[0] == N_BUCKETS,
               "N_BUCKETS must match the bucket table");

/* ---- retry buckets --------------------------------------------------------------------- */

uint64_t sb__amqptx_retry_bucket_ms(uint64_t delay_ms)
{
    if (delay_ms < IMMEDIATE_MS)
        return 0;
    for (size_t i = 0; i < N_BUCKETS; i++)
        if (sb__amqptx_buckets_ms[i] >= delay_ms)
            return sb__amqptx_buckets_ms[i];
    return sb__amqptx_buckets_ms[N_BUCKETS - 1];
}

static int bucket_index(uint64_t delay_ms)
{
    if (delay_ms < IMMEDIATE_MS)
        return -1;
    for (size_t i = 0; i < N_BUCKETS; i++)
        if (sb__amqptx_buckets_ms[i] >= delay_ms)
            return (int)i;
    return (int)N_BUCKETS - 1;
}

/* ---- publishes (I/O thread) ------------------------------------------------------------ */

void sb__amqptx_pub_done(amqptx_t *tx, pub_t *p)
{
    p->next = NULL;
    pthread_mutex_lock(&tx->mu);
    if (tx->done_tail)
        tx->done_tail->next = p;
    else
        tx->done_head = p;
    tx->done_tail = p;
    bool wake = !tx->loop_wake_pending;
    tx->loop_wake_pending = true;
    pthread_mutex_unlock(&tx->mu);
    if (wake)
        event_active(tx->wake_ev, EV_READ, 0);
}

/* A confirmed (or nacked) publish: the original of a retry or dead letter is acked now. */
static void confirm_one(amqptx_t *tx, pub_t *p, bool ok)
{
    p->status = ok && !p->returned ? SB_EOK : SB_EIO;
    if (p->status == SB_EOK && p->orig && p->orig_gen == atomic_load(&tx->gen))
        sb__amqptx_win_settle(tx, p->orig_tag, false);
    sb__amqptx_pub_done(tx, p);
}

void sb__amqptx_pub_confirm(amqptx_t *tx, uint64_t tag, bool multiple, bool ok)
{
    pub_t **pp = &tx->pend_head, *prev = NULL;
    while (*pp) {
        pub_t *p = *pp;
        if (p->seq > tag)
            break;
        if (p->seq == tag || multiple) {
            *pp = p->next;
            if (tx->pend_tail == p)
                tx->pend_tail = prev;
            confirm_one(tx, p, ok);
            if (!multiple)
                break;
            continue;
        }
        prev = p;
        pp = &p->next;
    }
}

void sb__amqptx_pub_fail_pending(amqptx_t *tx)
{
    pub_t *p = tx->pend_head;
    tx->pend_head = tx->pend_tail = NULL;
    while (p) {
        pub_t *n = p->next;
        p->status = SB_EIO;
        sb__amqptx_pub_done(tx, p);
        p = n;
    }
}

int sb__amqptx_pub_send(amqptx_t *tx, pub_t *p, char *err, size_t n)
{
    if (p->kind == P_RETRY && p->bucket >= 0 &&
        sb__amqptx_declare_retry_queue(tx, p->qidx, p->bucket, err, n) != 0)
        return -1;
    if (p->orig && p->orig_gen != atomic_load(&tx->gen)) {
        /* The original's channel is gone: it will be redelivered, so the copy must not be
         * made (it would be a duplicate). */
        p->status = SB_EIO;
        sb__amqptx_pub_done(tx, p);
        return 0;
    }
    int rc = amqp_basic_publish(tx->conn, CH_PUBLISH, p->exchange, p->routing_key, p->mandatory, 0,
                                &p->props, p->body);
    if (rc != AMQP_STATUS_OK) {
        sb__amqptx_set_err(err, n, "publish: %s", amqp_error_string2(rc));
        p->status = SB_EIO;
        sb__amqptx_pub_done(tx, p);
        return -1;
    }
    p->seq = ++tx->pub_seq;
    p->next = NULL;
    if (tx->pend_tail)
        tx->pend_tail->next = p;
    else
        tx->pend_head = p;
    tx->pend_tail = p;
    return 0;
}

/* A basic.return precedes the confirm of the returned message: mark the oldest pending
 * mandatory publish with that routing key as failed. */
void sb__amqptx_pub_returned(amqptx_t *tx, const amqp_basic_return_t *r)
{
    for (pub_t *p = tx->pend_head; p; p = p->next) {
        if (p->mandatory && !p->returned && p->routing_key.len == r->routing_key.len &&
            memcmp(p->routing_key.bytes, r->routing_key.bytes, r->routing_key.len) == 0) {
            p->returned = true;
            return;
        }
    }
}

/* ---- building publishes (loop thread) -------------------------------------------------- */

void sb__amqptx_pub_free(pub_t *p)
{
    empty_amqp_pool(&p->pool);
    sb_free(p);
}

static pub_t *pub_new(amqptx_t *tx, enum pub_kind kind, sb__tx_done_cb cb, void *arg)
{
    pub_t *p = sb_calloc(1, sizeof *p);
    if (!p)
        return NULL;
    init_amqp_pool(&p->pool, 2048);
    p->kind = kind;
    p->tx = tx;
    p->cb = cb;
    p->arg = arg;
    p->bucket = -1;
    return p;
}

/* A copy of s in the publish's pool; .bytes NULL on ENOMEM. */
static amqp_bytes_t pool_str(pub_t *p, const char *s, size_t n)
{
    amqp_bytes_t b;
    amqp_pool_alloc_bytes(&p->pool, n ? n : 1, &b);
    if (b.bytes) {
        if (n)
            memcpy(b.bytes, s, n);
        b.len = n;
    }
    return b;
}

typedef struct kv {
    const char *k;
    const char *v;
} kv_t;

static bool drop_key(amqp_bytes_t k, bool all_xsb)
{
    /* A dead letter gets fresh failure headers, but keeps its replay history so that
     * `dlq replay --max-replays` counts across replay and failure cycles. */
    if (all_xsb)
        return k.len >= 5 && memcmp(k.bytes, "x-sb-", 5) == 0 && !key_is(k, "x-sb-replay-count") &&
               !key_is(k, "x-sb-replayed-at");
    return key_is(k, "x-sb-attempts") || key_is(k, "x-sb-routing-key") ||
           key_is(k, "x-sb-exchange");
}

/* Properties of the original (decoded from its raw bytes) with headers adjusted: keys
 * matching drop_key() removed, `extra` appended. */
static int copy_props(pub_t *p, dlv_t *m, bool all_xsb, const kv_t *extra, size_t n_extra)
{
    amqp_basic_properties_t *orig = NULL;
    if (amqp_decode_properties(AMQP_BASIC_CLASS, &p->pool, m->props_raw, (void **)&orig) !=
            AMQP_STATUS_OK ||
        !orig)
        return SB_ENOMEM;
    p->props = *orig;
    amqp_table_t old = (orig->_flags & AMQP_BASIC_HEADERS_FLAG) ? orig->headers : amqp_empty_table;
    size_t cap = (size_t)old.num_entries + n_extra;
    amqp_table_entry_t *e = amqp_pool_alloc(&p->pool, cap * sizeof *e + 1);
    if (!e)
        return SB_ENOMEM;
    int k = 0;
    for (int i = 0; i < old.num_entries; i++)
        if (!drop_key(old.entries[i].key, all_xsb))
            e[k++] = old.entries[i];
    for (size_t i = 0; i < n_extra; i++) {
        amqp_bytes_t v = pool_str(p, extra[i].v, strlen(extra[i].v));
        if (!v.bytes)
            return SB_ENOMEM;
        e[k++] = str_entry(extra[i].k, v);
    }
    p->props.headers.num_entries = k;
    p->props.headers.entries = e;
    p->props._flags |= AMQP_BASIC_HEADERS_FLAG;
    return SB_EOK;
}

/* Sends p, a copy of d's body to `exchange` with routing key `rk` (mandatory: an unroutable
 * copy is returned, not lost), on the confirm channel. */
static int send_copy(amqptx_t *tx, pub_t *p, amqp_bytes_t exchange, const char *rk,
                     const sb__delivery_t *d)
{
    p->exchange = exchange;
    p->routing_key = pool_str(p, rk, strlen(rk));
    p->body = (amqp_bytes_t){d->msg.body_len, (void *)d->msg.body};
    p->mandatory = true;
    if (!p->routing_key.bytes) {
        sb__amqptx_pub_free(p);
        return SB_ENOMEM;
    }
    sb__amqptx_post_publish(tx, p);
    return SB_EOK;
}

int sb__amqptx_retry_later(sb__transport_t *t, sb__delivery_t *d, uint64_t delay_ms,
                           unsigned next_attempt, sb__tx_done_cb cb, void *arg)
{
    amqptx_t *tx = (amqptx_t *)t;
    dlv_t *m = dlv_of(d);
    pub_t *p = pub_new(tx, P_RETRY, cb, arg);
    if (!p)
        return SB_ENOMEM;
    char num[16];
    snprintf(num, sizeof num, "%u", next_attempt > 1 ? next_attempt - 1 : 0);
    kv_t extra[] = {{"x-sb-attempts", num},
                    {"x-sb-routing-key", d->msg.routing_key ? d->msg.routing_key : ""},
                    {"x-sb-exchange", d->msg.exchange ? d->msg.exchange : ""}};
    int rc = copy_props(p, m, false, extra, 3);
    if (rc != SB_EOK) {
        sb__amqptx_pub_free(p);
        return rc;
    }
    p->orig = m;
    p->orig_tag = m->tag;
    p->orig_gen = m->gen;
    p->qidx = m->qidx;
    p->bucket = bucket_index(delay_ms);
    const char *q = tx->queues[m->qidx];
    char name[600];
    if (p->bucket >= 0)
        snprintf(name, sizeof name, "%s.retry.%" PRIu64, q, sb__amqptx_buckets_ms[p->bucket]);
    else
        snprintf(name, sizeof name, "%s", q);
    /* the default exchange: the routing key is the queue name */
    return send_copy(tx, p, amqp_empty_bytes, name, d);
}

int sb__amqptx_dead_letter(sb__transport_t *t, sb__delivery_t *d, const sb__dl_meta_t *meta,
                           sb__tx_done_cb cb, void *arg)
{
    amqptx_t *tx = (amqptx_t *)t;
    dlv_t *m = dlv_of(d);
    if (!meta)
        return SB_EINVAL;
    pub_t *p = pub_new(tx, P_DEAD_LETTER, cb, arg);
    if (!p)
        return SB_ENOMEM;
    char attempts[16], failed_at[32];
    snprintf(attempts, sizeof attempts, "%u", meta->attempts);
    sb__datetime_format(meta->failed_at_us ? meta->failed_at_us : sb__datetime_now_us(), failed_at);
    const char *rk = d->msg.routing_key ? d->msg.routing_key : "";
    kv_t extra[10];
    size_t n = 0;
    extra[n++] = (kv_t){"x-sb-reason", meta->reason ? meta->reason : ""};
    extra[n++] = (kv_t){"x-sb-error", meta->error ? meta->error : ""};
    if (meta->handler)
        extra[n++] = (kv_t){"x-sb-handler", meta->handler};
    extra[n++] = (kv_t){"x-sb-attempts", attempts};
    extra[n++] = (kv_t){"x-sb-consumer", meta->consumer ? meta->consumer : ""};
    extra[n++] = (kv_t){"x-sb-failed-at", failed_at};
    extra[n++] = (kv_t){"x-sb-original-exchange", d->msg.exchange ? d->msg.exchange : ""};
    extra[n++] = (kv_t){"x-sb-original-routing-key", rk};
    extra[n++] = (kv_t){"x-sb-original-queue", tx->queues[m->qidx]};
    int rc = copy_props(p, m, true, extra, n);
    if (rc != SB_EOK) {
        sb__amqptx_pub_free(p);
        return rc;
    }
    p->orig = m;
    p->orig_tag = m->tag;
    p->orig_gen = m->gen;
    p->qidx = m->qidx;
    return send_copy(tx, p, amqp_cstring_bytes(tx->dlx), rk, d);
}

int sb__amqptx_publish(sb__transport_t *t, const sb__outmsg_t *o, sb__tx_done_cb cb, void *arg)
{
    amqptx_t *tx = (amqptx_t *)t;
    if (!o || !o->type || !*o->type || (!o->body && o->body_len))
        return SB_EINVAL;
    pub_t *p = pub_new(tx, P_FOLLOWUP, cb, arg);
    if (!p)
        return SB_ENOMEM;
    amqp_table_entry_t *e = amqp_pool_alloc(&p->pool, 2 * sizeof *e);
    p->exchange = amqp_cstring_bytes(tx->exchange);
    p->routing_key = pool_str(p, o->type, strlen(o->type));
    p->body = pool_str(p, o->body ? o->body : "", o->body_len);
    amqp_basic_properties_t *pr = &p->props;
    pr->_flags =
        AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    pr->content_type = amqp_cstring_bytes("application/json");
    pr->delivery_mode = AMQP_DELIVERY_PERSISTENT;
    pr->timestamp = (uint64_t)time(NULL);
    bool ok = e && p->routing_key.bytes && p->body.bytes;
    if (ok && o->id) {
        pr->_flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        pr->message_id = pool_str(p, o->id, strlen(o->id));
        ok = pr->message_id.bytes != NULL;
    }
    int nh = 0;
    if (ok && o->traceparent) {
        amqp_bytes_t v = pool_str(p, o->traceparent, strlen(o->traceparent));
        ok = v.bytes != NULL;
        e[nh++] = str_entry("traceparent", v);
    }
    if (ok && o->tracestate) {
        amqp_bytes_t v = pool_str(p, o->tracestate, strlen(o->tracestate));
        ok = v.bytes != NULL;
        e[nh++] = str_entry("tracestate", v);
    }
    if (!ok) {
        sb__amqptx_pub_free(p);
        return SB_ENOMEM;
    }
    if (nh) {
        pr->_flags |= AMQP_BASIC_HEADERS_FLAG;
        pr->headers.num_entries = nh;
        pr->headers.entries = e;
    }
    sb__amqptx_post_publish(tx, p);
    return SB_EOK;
}
