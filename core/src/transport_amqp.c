/* transport_amqp.c: the RabbitMQ transport on rabbitmq-c 0.11 (see transport_amqp.h): its
 * ops table, deliveries, settlements and the loop side of every hand-off.
 *
 * Design: ONE I/O THREAD PER CONNECTION (amqp_conn.c), because rabbitmq-c's API is
 * blocking; publishes live in amqp_publish.c; the three files share one private struct
 * (amqp_tx.h).
 *
 * Hand-offs, both ways through one mutex:
 *  - deliveries: the I/O thread copies each message into one allocation (record, headers
 *    as strings, the raw encoded properties for republishing, body) and appends a batch to
 *    a list, then makes one libevent event active for the batch. The list is bounded by the
 *    prefetch: the broker never has more than prefetch unacked messages out per consumer.
 *    pause() therefore needs no basic.cancel: the loop simply stops handing deliveries to
 *    the sink and keeps what arrived (at most prefetch per queue).
 *  - settlements: ack() only records (tag, connection generation) in an array; the loop
 *    wakes the I/O thread once `ack_batch` are pending, or from a 2 ms timer, so acks
 *    travel in batches. The I/O thread keeps a window of per-tag states indexed by tag
 *    offset and sends ONE basic.ack multiple=true for the contiguous settled prefix; tags
 *    settled out of order wait in the window (acked exactly once, by the prefix ack); if
 *    half the prefetch is settled behind a slow head, those are acked singly so the
 *    consumer does not stall. release() is a basic.nack requeue of that tag alone.
 *  - publishes: queued by the loop, completed by the I/O thread (see amqp_publish.c).
 *
 * After a reconnect, deliveries of an old generation are stale: their settlements are
 * no-ops (tags belong to the dead channel) and undelivered ones are dropped; the broker
 * redelivers them and idempotency keeps their effects single.
 *
 * It does not: use channel.flow, talk to the broker from the loop thread, or publish
 * (amqp_publish.c builds publishes; this file only queues them). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <event2/event.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "amqp_tx.h"
#include "datetime.h"
#include "errf.h"
#include "log.h"
#include "secret_file.h"
#include "transport_amqp.h"

#define ACK_TIMER_US 2000

static const sb__transport_ops_t amqptx_ops;

/* ---- small helpers --------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s && *s ? sb_strdup(s) : NULL;
}

static char *cat3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = sb_malloc(la + lb + lc + 1);
    if (!s)
        return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

static void eventfd_signal(int fd)
{
    uint64_t one = 1;
    ssize_t w;
    do
        w = write(fd, &one, sizeof one);
    while (w < 0 && errno == EINTR);
}

/* ---- headers: AMQP field values as strings --------------------------------------------- */

/* The text of a scalar field value: a pointer into the value (strings) or into tmp. False
 * for nested tables and arrays, which are not exposed as headers. */
static bool field_text(const amqp_field_value_t *v, char tmp[64], const char **p, size_t *len)
{
    int n = -1;
    switch (v->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        *p = v->value.bytes.len ? v->value.bytes.bytes : "";
        *len = v->value.bytes.len;
        return true;
    case AMQP_FIELD_KIND_BOOLEAN:
        n = snprintf(tmp, 64, "%s", v->value.boolean ? "true" : "false");
        break;
    case AMQP_FIELD_KIND_I8:
        n = snprintf(tmp, 64, "%d", (int)v->value.i8);
        break;
    case AMQP_FIELD_KIND_U8:
        n = snprintf(tmp, 64, "%u", (unsigned)v->value.u8);
        break;
    case AMQP_FIELD_KIND_I16:
        n = snprintf(tmp, 64, "%d", (int)v->value.i16);
        break;
    case AMQP_FIELD_KIND_U16:
        n = snprintf(tmp, 64, "%u", (unsigned)v->value.u16);
        break;
    case AMQP_FIELD_KIND_I32:
        n = snprintf(tmp, 64, "%" PRId32, v->value.i32);
        break;
    case AMQP_FIELD_KIND_U32:
        n = snprintf(tmp, 64, "%" PRIu32, v->value.u32);
        break;
    case AMQP_FIELD_KIND_I64:
        n = snprintf(tmp, 64, "%" PRId64, v->value.i64);
        break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        n = snprintf(tmp, 64, "%" PRIu64, v->value.u64);
        break;
    case AMQP_FIELD_KIND_F32:
        n = snprintf(tmp, 64, "%.9g", (double)v->value.f32);
        break;
    case AMQP_FIELD_KIND_F64:
        n = snprintf(tmp, 64, "%.17g", v->value.f64);
        break;
    case AMQP_FIELD_KIND_DECIMAL: {
        double d = v->value.decimal.value;
        for (unsigned i = 0; i < v->value.decimal.decimals; i++)
            d /= 10;
        n = snprintf(tmp, 64, "%.*f", (int)v->value.decimal.decimals, d);
        break;
    }
    case AMQP_FIELD_KIND_VOID:
        n = 0;
        tmp[0] = '\0';
        break;
    default:
        return false;
    }
    if (n < 0)
        return false;
    *p = tmp;
    *len = (size_t)n;
    return true;
}

static int64_t field_int(const amqp_field_value_t *v)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        return v->value.i8;
    case AMQP_FIELD_KIND_U8:
        return v->value.u8;
    case AMQP_FIELD_KIND_I16:
        return v->value.i16;
    case AMQP_FIELD_KIND_U16:
        return v->value.u16;
    case AMQP_FIELD_KIND_I32:
        return v->value.i32;
    case AMQP_FIELD_KIND_U32:
        return v->value.u32;
    case AMQP_FIELD_KIND_I64:
        return v->value.i64;
    case AMQP_FIELD_KIND_U64:
        return v->value.u64 > INT64_MAX ? INT64_MAX : (int64_t)v->value.u64;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: {
        int64_t acc = 0;
        const char *s = v->value.bytes.bytes;
        if (v->value.bytes.len == 0 || v->value.bytes.len > 9)
            return -1;
        for (size_t i = 0; i < v->value.bytes.len; i++) {
            if (s[i] < '0' || s[i] > '9')
                return -1;
            acc = acc * 10 + (s[i] - '0');
        }
        return acc;
    }
    default:
        return -1;
    }
}

/* Attempts already made: x-sb-attempts, else the largest x-death count, else 0. */
static unsigned attempts_made(const amqp_table_t *h)
{
    int64_t death = 0;
    for (int i = 0; i < h->num_entries; i++) {
        const amqp_table_entry_t *e = &h->entries[i];
        if (key_is(e->key, "x-sb-attempts")) {
            int64_t v = field_int(&e->value);
            if (v >= 0)
                return v > 999999 ? 999999u : (unsigned)v;
        } else if (key_is(e->key, "x-death") && e->value.kind == AMQP_FIELD_KIND_ARRAY) {
            const amqp_array_t *a = &e->value.value.array;
            for (int k = 0; k < a->num_entries; k++) {
                if (a->entries[k].kind != AMQP_FIELD_KIND_TABLE)
                    continue;
                const amqp_table_t *t = &a->entries[k].value.table;
                for (int j = 0; j < t->num_entries; j++)
                    if (key_is(t->entries[j].key, "count")) {
                        int64_t c = field_int(&t->entries[j].value);
                        if (c > death)
                            death = c;
                    }
            }
        }
    }
    return death > 999999 ? 999999u : (unsigned)death;
}

/* ---- building a delivery (I/O thread) -------------------------------------------------- */

static char *put(char **cur, const void *s, size_t n)
{
    char *d = *cur;
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    *cur += n + 1;
    return d;
}

static const char *bytes_or_null(char **cur, amqp_flags_t flags, amqp_flags_t bit, amqp_bytes_t b)
{
    return (flags & bit) ? put(cur, b.bytes, b.len) : NULL;
}

/* Allocates the record of a message whose header frame just arrived. */
dlv_t *sb__amqptx_build_record(amqptx_t *tx, const amqp_frame_t *f)
{
    const amqp_basic_properties_t *p = f->payload.properties.decoded;
    amqp_table_t empty = {0, NULL};
    const amqp_table_t *h = (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? &p->headers : &empty;
    uint64_t body_size = f->payload.properties.body_size;
    if (body_size > (uint64_t)SIZE_MAX / 2)
        return NULL;
    size_t nh = 0, strings = 0;
    char tmp[64];
    for (int i = 0; i < h->num_entries; i++) {
        const char *v;
        size_t vl;
        if (!field_text(&h->entries[i].value, tmp, &v, &vl))
            continue;
        nh++;
        strings += h->entries[i].key.len + 1 + vl + 1;
    }
    strings += strlen(tx->asm_exchange) + 1 + strlen(tx->asm_rk) + 1;
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
        strings += p->content_type.len + 1;
    if (p->_flags & AMQP_BASIC_TYPE_FLAG)
        strings += p->type.len + 1;
    if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        strings += p->message_id.len + 1;
    size_t raw = f->payload.properties.raw.len;
    size_t total =
        sizeof(dlv_t) + nh * sizeof(sb__header_t) + strings + raw + (size_t)body_size + 1;
    dlv_t *m = sb_malloc(total);
    if (!m)
        return NULL;
    memset(m, 0, sizeof *m);
    sb__header_t *hs = (sb__header_t *)(void *)(m + 1);
    char *cur = (char *)(hs + nh);
    m->exchange = put(&cur, tx->asm_exchange, strlen(tx->asm_exchange));
    m->routing_key = put(&cur, tx->asm_rk, strlen(tx->asm_rk));
    sb__intake_msg_t *msg = &m->d.msg;
    msg->content_type =
        bytes_or_null(&cur, p->_flags, AMQP_BASIC_CONTENT_TYPE_FLAG, p->content_type);
    msg->amqp_type = bytes_or_null(&cur, p->_flags, AMQP_BASIC_TYPE_FLAG, p->type);
    msg->message_id = bytes_or_null(&cur, p->_flags, AMQP_BASIC_MESSAGE_ID_FLAG, p->message_id);
    msg->exchange = m->exchange;
    msg->routing_key = m->routing_key;
    size_t k = 0;
    for (int i = 0; i < h->num_entries; i++) {
        const char *v;
        size_t vl;
        const amqp_table_entry_t *e = &h->entries[i];
        if (!field_text(&e->value, tmp, &v, &vl))
            continue;
        hs[k].name = put(&cur, e->key.bytes, e->key.len);
        hs[k].value = put(&cur, v, vl);
        hs[k].name_len = (uint32_t)e->key.len;
        hs[k].value_len = (uint32_t)vl;
        /* A retry copy comes back with the retry queue's routing key: restore the event's. */
        if (key_is(e->key, "x-sb-routing-key"))
            msg->routing_key = hs[k].value;
        else if (key_is(e->key, "x-sb-exchange"))
            msg->exchange = hs[k].value;
        k++;
    }
    msg->headers = hs;
    msg->n_headers = nh;
    m->props_raw.bytes = cur;
    m->props_raw.len = raw;
    if (raw)
        memcpy(cur, f->payload.properties.raw.bytes, raw);
    cur += raw;
    msg->body = cur;
    msg->body_len = (size_t)body_size;
    cur[body_size] = '\0';
    unsigned made = attempts_made(h);
    m->d.attempt = made + 1;
    m->d.redelivered = tx->asm_redelivered;
    m->d.source = tx->queues[tx->asm_qidx];
    m->d.partition = -1;
    m->d.offset = -1;
    m->tag = tx->asm_tag;
    m->gen = atomic_load(&tx->gen);
    m->qidx = tx->asm_qidx;
    return m;
}

/* ---- the ack window (I/O thread) ------------------------------------------------------- */

bool sb__amqptx_win_reserve(ackwin_t *w, uint64_t tag)
{
    if (tag < w->base)
        return true;
    uint64_t need = tag - w->base + 1;
    if (need <= w->cap)
        return true;
    uint64_t ncap = w->cap ? w->cap : 256;
    while (ncap < need)
        ncap *= 2;
    uint8_t *nst = sb_calloc((size_t)ncap, 1);
    if (!nst)
        return false;
    for (uint64_t t = w->base; w->st && t < w->top; t++)
        nst[t & (ncap - 1)] = w->st[t & (w->cap - 1)];
    sb_free(w->st);
    w->st = nst;
    w->cap = ncap;
    return true;
}

void sb__amqptx_win_reset(ackwin_t *w)
{
    if (w->st)
        memset(w->st, 0, (size_t)w->cap);
    w->base = 1;
    w->top = 1;
    w->pending = 0;
}

/* Records a settlement; nacks go out at once (before any later prefix ack covers them). */
int sb__amqptx_win_settle(amqptx_t *tx, uint64_t tag, bool nack)
{
    ackwin_t *w = &tx->win;
    if (tag < w->base || tag >= w->top)
        return AMQP_STATUS_OK; /* not ours: ignore rather than kill the channel */
    uint8_t *s = &w->st[tag & (w->cap - 1)];
    if (*s != W_OUT)
        return AMQP_STATUS_OK;
    if (nack) {
        *s = W_DONE;
        return amqp_basic_nack(tx->conn, CH_CONSUME, tag, 0, 1);
    }
    *s = W_ACK;
    w->pending++;
    return AMQP_STATUS_OK;
}

/* One multiple ack over the settled prefix; single acks behind a long-stuck head. */
int sb__amqptx_win_flush(amqptx_t *tx)
{
    ackwin_t *w = &tx->win;
    uint64_t last = 0;
    while (w->base < w->top) {
        uint8_t *s = &w->st[w->base & (w->cap - 1)];
        if (*s == W_OUT)
            break;
        if (*s == W_ACK) {
            last = w->base;
            w->pending--;
        }
        *s = W_OUT;
        w->base++;
    }
    int rc = AMQP_STATUS_OK;
    if (last)
        rc = amqp_basic_ack(tx->conn, CH_CONSUME, last, 1);
    if (rc == AMQP_STATUS_OK && w->pending >= (size_t)tx->prefetch / 2 + 1) {
        for (uint64_t t = w->base; t < w->top && rc == AMQP_STATUS_OK; t++) {
            uint8_t *s = &w->st[t & (w->cap - 1)];
            if (*s == W_ACK) {
                rc = amqp_basic_ack(tx->conn, CH_CONSUME, t, 0);
                *s = W_DONE;
                w->pending--;
            }
        }
    }
    return rc;
}

/* ---- handing deliveries to the loop (I/O thread) --------------------------------------- */

void sb__amqptx_batch_push(amqptx_t *tx, dlv_t *m)
{
    m->next = NULL;
    if (tx->io_tail)
        tx->io_tail->next = m;
    else
        tx->io_head = m;
    tx->io_tail = m;
}

void sb__amqptx_batch_flush(amqptx_t *tx)
{
    if (!tx->io_head)
        return;
    pthread_mutex_lock(&tx->mu);
    if (tx->in_tail)
        tx->in_tail->next = tx->io_head;
    else
        tx->in_head = tx->io_head;
    tx->in_tail = tx->io_tail;
    bool wake = !tx->loop_wake_pending;
    tx->loop_wake_pending = true;
    pthread_mutex_unlock(&tx->mu);
    tx->io_head = tx->io_tail = NULL;
    if (wake)
        event_active(tx->wake_ev, EV_READ, 0);
}

/* ---- the loop side --------------------------------------------------------------------- */

static void wake_io(amqptx_t *tx)
{
    bool w = !tx->io_wake_pending;
    tx->io_wake_pending = true;
    if (w)
        eventfd_signal(tx->efd);
}

/* Queues a settlement for the I/O thread; acks wake it in batches. */
static void post_settle(amqptx_t *tx, uint64_t tag, uint32_t gen, bool nack)
{
    pthread_mutex_lock(&tx->mu);
    if (tx->n_settles == tx->cap_settles) {
        size_t nc = tx->cap_settles ? tx->cap_settles * 2 : 256;
        settle_t *ns = sb_realloc(tx->settles, nc * sizeof *ns);
        if (!ns) {
            /* Without memory the tag stays unacked: the broker redelivers it after a
             * reconnect. Never crash for it. */
            pthread_mutex_unlock(&tx->mu);
            sb__log(SB_LOG_ERROR, NULL, "amqp: out of memory queueing a settlement");
            return;
        }
        tx->settles = ns;
        tx->cap_settles = nc;
    }
    tx->settles[tx->n_settles++] = (settle_t){tag, gen, nack};
    tx->unflushed++;
    if (nack || tx->unflushed >= tx->ack_batch) {
        tx->unflushed = 0;
        wake_io(tx);
    }
    pthread_mutex_unlock(&tx->mu);
    if (tx->unflushed && !evtimer_pending(tx->ack_timer, NULL)) {
        struct timeval tv = {0, ACK_TIMER_US};
        evtimer_add(tx->ack_timer, &tv);
    }
}

static void on_ack_timer(evutil_socket_t fd, short what, void *arg)
{
    amqptx_t *tx = arg;
    pthread_mutex_lock(&tx->mu);
    if (tx->unflushed) {
        tx->unflushed = 0;
        wake_io(tx);
    }
    pthread_mutex_unlock(&tx->mu);
}

void sb__amqptx_post_publish(amqptx_t *tx, pub_t *p)
{
    p->next = NULL;
    pthread_mutex_lock(&tx->mu);
    if (tx->pq_tail)
        tx->pq_tail->next = p;
    else
        tx->pq_head = p;
    tx->pq_tail = p;
    wake_io(tx);
    pthread_mutex_unlock(&tx->mu);
}

static void release_now(amqptx_t *tx, dlv_t *m)
{
    if (m->gen == atomic_load(&tx->gen))
        post_settle(tx, m->tag, m->gen, true);
    sb_free(m);
}

static void bl_push(amqptx_t *tx, dlv_t *m)
{
    m->next = NULL;
    if (tx->bl_tail)
        tx->bl_tail->next = m;
    else
        tx->bl_head = m;
    tx->bl_tail = m;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    amqptx_t *tx = arg;
    pthread_mutex_lock(&tx->mu);
    dlv_t *in = tx->in_head;
    pub_t *done = tx->done_head;
    tx->in_head = tx->in_tail = NULL;
    tx->done_head = tx->done_tail = NULL;
    tx->loop_wake_pending = false;
    pthread_mutex_unlock(&tx->mu);
    while (done) {
        pub_t *p = done;
        done = p->next;
        sb__tx_done_cb cb = p->cb;
        void *cbarg = p->arg;
        int status = p->status;
        dlv_t *orig = p->orig;
        sb__amqptx_pub_free(p);
        if (cb)
            cb(cbarg, status);
        if (orig && status == SB_EOK)
            sb_free(orig); /* acked with the broker: the delivery is over */
    }
    uint32_t gen = atomic_load(&tx->gen);
    while (in) {
        dlv_t *m = in;
        in = m->next;
        if (m->gen != gen)
            sb_free(m); /* its channel is gone; the broker redelivers it */
        else
            bl_push(tx, m);
    }
    while (tx->bl_head) {
        if (tx->stopped) {
            dlv_t *m = tx->bl_head;
            tx->bl_head = m->next;
            release_now(tx, m);
            continue;
        }
        if (tx->paused || !tx->started)
            break;
        dlv_t *m = tx->bl_head;
        tx->bl_head = m->next;
        if (!tx->bl_head)
            tx->bl_tail = NULL;
        if (m->gen != atomic_load(&tx->gen)) {
            sb_free(m);
            continue;
        }
        tx->base.sink(tx->base.sink_arg, &m->d);
    }
    if (!tx->bl_head)
        tx->bl_tail = NULL;
}

/* ---- ops ------------------------------------------------------------------------------- */

static int tx_start(sb__transport_t *t, char *errstr, size_t n)
{
    amqptx_t *tx = (amqptx_t *)t;
    if (tx->started || tx->stopped)
        return sb__errf(errstr, n, SB_ESTATE, "amqp transport: already started or stopped");
    tx->started = true;
    if (pthread_create(&tx->thr, NULL, sb__amqptx_io_main, tx) != 0)
        return sb__errf(errstr, n, SB_EIO, "amqp transport: cannot start the I/O thread");
    tx->thread_started = true;
    pthread_mutex_lock(&tx->mu);
    while (tx->start_state == 0)
        pthread_cond_wait(&tx->cv, &tx->mu);
    int st = tx->start_state, rc = tx->start_rc;
    pthread_mutex_unlock(&tx->mu);
    if (st < 0) {
        pthread_join(tx->thr, NULL);
        tx->thread_started = false;
        return sb__errf(errstr, n, rc, "amqp transport: %s", tx->start_err);
    }
    return SB_EOK;
}

static void tx_pause(sb__transport_t *t)
{
    ((amqptx_t *)t)->paused = true;
}

static void tx_resume(sb__transport_t *t)
{
    amqptx_t *tx = (amqptx_t *)t;
    tx->paused = false;
    if (tx->bl_head)
        event_active(tx->wake_ev, EV_READ, 0);
}

static void tx_ack(sb__transport_t *t, sb__delivery_t *d)
{
    amqptx_t *tx = (amqptx_t *)t;
    dlv_t *m = dlv_of(d);
    if (m->gen == atomic_load(&tx->gen))
        post_settle(tx, m->tag, m->gen, false);
    sb_free(m);
}

static void tx_release(sb__transport_t *t, sb__delivery_t *d)
{
    release_now((amqptx_t *)t, dlv_of(d));
}

static bool tx_ready(sb__transport_t *t)
{
    amqptx_t *tx = (amqptx_t *)t;
    return tx->started && !tx->stopped && atomic_load(&tx->ready) && !atomic_load(&tx->blocked);
}

static void tx_stop(sb__transport_t *t)
{
    amqptx_t *tx = (amqptx_t *)t;
    if (tx->stopped)
        return;
    tx->stopped = true;
    if (tx->thread_started) {
        pthread_mutex_lock(&tx->mu);
        tx->stop_req = true;
        wake_io(tx);
        pthread_mutex_unlock(&tx->mu);
    }
    /* What was fetched but not handed out goes back to the broker now. */
    while (tx->bl_head) {
        dlv_t *m = tx->bl_head;
        tx->bl_head = m->next;
        release_now(tx, m);
    }
    tx->bl_tail = NULL;
}

static void free_strv(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        sb_free(v[i]);
    sb_free(v);
}

static void tx_destroy(sb__transport_t *t)
{
    amqptx_t *tx = (amqptx_t *)t;
    if (!tx)
        return;
    if (tx->thread_started) {
        pthread_mutex_lock(&tx->mu);
        tx->shutdown_req = true;
        tx->io_wake_pending = false;
        wake_io(tx);
        pthread_mutex_unlock(&tx->mu);
        pthread_join(tx->thr, NULL);
    }
    if (tx->ack_timer)
        event_free(tx->ack_timer);
    if (tx->wake_ev)
        event_free(tx->wake_ev);
    /* Everything left is dropped unreported; the broker requeues what was unacked. */
    dlv_t *lists[] = {tx->in_head, tx->bl_head, tx->io_head};
    for (size_t i = 0; i < 3; i++)
        for (dlv_t *m = lists[i], *nx; m; m = nx) {
            nx = m->next;
            sb_free(m);
        }
    pub_t *pl[] = {tx->done_head, tx->pq_head, tx->pend_head};
    for (size_t i = 0; i < 3; i++)
        for (pub_t *p = pl[i], *nx; p; p = nx) {
            nx = p->next;
            sb__amqptx_pub_free(p);
        }
    sb_free(tx->asm_rec);
    sb_free(tx->settles);
    sb_free(tx->win.st);
    sb_free(tx->declared);
    if (tx->efd >= 0)
        close(tx->efd);
    pthread_mutex_destroy(&tx->mu);
    pthread_cond_destroy(&tx->cv);
    if (tx->password) {
        memset(tx->password, 0, strlen(tx->password));
        sb_free(tx->password);
    }
    if (tx->urlbuf) {
        memset(tx->urlbuf, 0, strlen(tx->urlbuf));
        sb_free(tx->urlbuf);
    }
    sb_free(tx->exchange);
    sb_free(tx->dlx);
    sb_free(tx->dlq);
    sb_free(tx->consumer);
    free_strv(tx->queues, tx->n_queues);
    free_strv(tx->patterns, tx->n_patterns);
    sb_free(tx->ca_file);
    sb_free(tx->cert_file);
    sb_free(tx->key_file);
    sb_free(tx);
}

static const sb__transport_ops_t amqptx_ops = {
    .name = "amqp",
    .start = tx_start,
    .pause = tx_pause,
    .resume = tx_resume,
    .ack = tx_ack,
    .retry_later = sb__amqptx_retry_later,
    .dead_letter = sb__amqptx_dead_letter,
    .release = tx_release,
    .publish = sb__amqptx_publish,
    .ready = tx_ready,
    .stop = tx_stop,
    .destroy = tx_destroy,
};

static char **copy_strv(const char *const *v, size_t n)
{
    char **out = sb_calloc(n ? n : 1, sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!(out[i] = sb_strdup(v[i]))) {
            free_strv(out, i);
            return NULL;
        }
    return out;
}

int sb__amqptx_new(struct event_base *base, const sb__amqptx_opts_t *o, sb__tx_sink_fn sink,
                   void *sink_arg, sb__transport_t **out, char *errstr, size_t n)
{
    if (!base || !o || !o->url || !out)
        return sb__errf(errstr, n, SB_EINVAL, "amqp: missing arguments");
    amqptx_t *tx = sb_calloc(1, sizeof *tx);
    if (!tx)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    int rc = SB_ENOMEM;
    tx->base.ops = &amqptx_ops;
    tx->base.sink = sink;
    tx->base.sink_arg = sink_arg;
    tx->evbase = base;
    tx->efd = -1;
    pthread_mutex_init(&tx->mu, NULL);
    pthread_cond_init(&tx->cv, NULL);
    atomic_init(&tx->ready, false);
    atomic_init(&tx->blocked, false);
    atomic_init(&tx->gen, 1);
    if (!(tx->urlbuf = sb_strdup(o->url)))
        goto err;
    amqp_default_connection_info(&tx->ci);
    if (amqp_parse_url(tx->urlbuf, &tx->ci) != AMQP_STATUS_OK) {
        rc = sb__errf(errstr, n, SB_ECONFIG,
                      "amqp: transport.amqp.url is not a valid amqp:// or amqps:// URL");
        goto err;
    }
    tx->tls = tx->ci.ssl != 0;
    if (o->password_file && *o->password_file &&
        !(tx->password = sb__secret_file_read("amqp", o->password_file, errstr, n, &rc)))
        goto err;
    const char *exchange = o->exchange && *o->exchange ? o->exchange : "integration_events";
    const char *queue = o->queue && *o->queue ? o->queue : "switchboard";
    tx->exchange = sb_strdup(exchange);
    tx->dlx = cat3(exchange, ".dlx", "");
    tx->dlq = cat3(queue, ".dlq", "");
    tx->consumer = sb_strdup(o->consumer && *o->consumer ? o->consumer : "switchboard");
    if (!tx->exchange || !tx->dlx || !tx->dlq || !tx->consumer)
        goto err;
    if (o->n_queues) {
        tx->queues = copy_strv(o->queues, o->n_queues);
        tx->n_queues = o->n_queues;
    } else {
        const char *one[] = {queue};
        tx->queues = copy_strv(one, 1);
        tx->n_queues = 1;
        /* Our own queue: bound per pattern (none given: everything). */
        static const char *const all[] = {"#"};
        const char *const *pats = o->n_patterns ? o->patterns : all;
        size_t np = o->n_patterns ? o->n_patterns : 1;
        if (!(tx->patterns = copy_strv(pats, np)))
            goto err;
        tx->n_patterns = np;
    }
    if (!tx->queues)
        goto err;
    tx->quorum = o->quorum;
    tx->sac = o->single_active_consumer;
    tx->declare = o->declare;
    tx->verify = o->verify_peer;
    tx->prefetch = o->prefetch ? o->prefetch : 256;
    if (tx->prefetch > 65535)
        tx->prefetch = 65535;
    tx->ack_batch = tx->prefetch / 4 ? tx->prefetch / 4 : 1;
    if (tx->ack_batch > 100)
        tx->ack_batch = 100;
    tx->heartbeat_s = o->heartbeat_s;
    if ((o->ca_file && *o->ca_file && !(tx->ca_file = dup_or_null(o->ca_file))) ||
        (o->cert_file && *o->cert_file && !(tx->cert_file = dup_or_null(o->cert_file))) ||
        (o->key_file && *o->key_file && !(tx->key_file = dup_or_null(o->key_file))))
        goto err;
    if (!!tx->cert_file != !!tx->key_file) {
        rc = sb__errf(errstr, n, SB_ECONFIG,
                      "amqp: tls.cert_file and tls.key_file must be given together");
        goto err;
    }
    if (!(tx->declared = sb_calloc(tx->n_queues * N_BUCKETS, sizeof *tx->declared)))
        goto err;
    tx->win.base = tx->win.top = 1;
    tx->rnd = (uint64_t)sb__datetime_now_us() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
    if ((tx->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        rc = sb__errf(errstr, n, SB_EIO, "amqp: eventfd: %s", strerror(errno));
        goto err;
    }
    tx->wake_ev = event_new(base, -1, 0, on_wake, tx);
    tx->ack_timer = evtimer_new(base, on_ack_timer, tx);
    if (!tx->wake_ev || !tx->ack_timer)
        goto err;
    *out = &tx->base;
    return SB_EOK;
err:
    if (rc == SB_ENOMEM)
        sb__errf(errstr, n, SB_ENOMEM, "amqp: out of memory");
    tx_destroy(&tx->base);
    return rc;
}
