/* transport_memory.c: the in-memory transport (see transport_memory.h for the contract).
 *
 * Design: every message, dead letter and published record is one allocation holding the
 * record header, its header array and all its strings, so a copy is one sb_malloc() and a
 * free is one sb_free(). A message lives in exactly one place at a time: the FIFO queue,
 * the delayed list (with its own one-shot libevent timer), the in-flight list (handed to
 * the sink), or, while a settlement's callback is pending, only in that completion.
 * Deliveries and completions are driven by one zero-delay timer ("kick"): a timer, not
 * event_active(), so each loop turn also polls I/O and a busy queue cannot starve the loop.
 * Capacity counts queued + delayed + in flight; a successful retry_later() or dead_letter()
 * gives up the original's slot at once (the broker has acked it), a failed one keeps it.
 *
 * It does not persist anything, does not cross threads, does not model redelivery after a
 * crash (a delivery that is never settled stays in flight until destroy), and does not
 * call pending callbacks on destroy. */
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "datetime.h"
#include "transport_memory.h"

#define DEFAULT_CAPACITY 10000
#define DEFAULT_BATCH    64
#define INJECTED_FAILURE SB_EIO

enum msg_state { M_QUEUED, M_DELAYED, M_INFLIGHT, M_SETTLING_OK, M_SETTLING_FAIL, M_RECORD };

typedef struct memtx memtx_t;
typedef struct mem_msg mem_msg_t;

/* A pending completion; embedded in a message for its settlement, allocated for publish. */
typedef struct compl
{
    struct compl *next;
    sb__tx_done_cb cb;
    void *arg;
    int status;
    mem_msg_t *msg; /* the settling message; NULL for publish */
    bool heap;
}
compl_t;

struct mem_msg {
    sb__delivery_t d; /* what the sink sees; points into this allocation */
    sb__memtx_record_t rec;
    mem_msg_t *prev, *next;
    memtx_t *tx;
    struct event *timer; /* while delayed */
    compl_t done;
    enum msg_state state;
};

typedef struct msg_list {
    mem_msg_t *head, *tail;
    size_t n;
} msg_list_t;

struct memtx {
    sb__transport_t base; /* must be first */
    struct event_base *evbase;
    struct event *kick;
    char *queue_name;
    size_t capacity, dlq_capacity, published_keep;
    unsigned batch;
    bool loopback, started, paused, stopped;
    msg_list_t queue, delayed, inflight;
    size_t n_settling; /* successful settlements awaiting their callback */
    size_t n_pub_pending;
    compl_t *compl_head, *compl_tail;
    mem_msg_t **dlq;
    size_t dlq_n, dlq_cap;
    mem_msg_t **pub; /* ring of published records */
    size_t pub_first, pub_n, pub_cap;
    unsigned fail[3];
    sb__memtx_stats_t stats;
};

static const sb__transport_ops_t memtx_ops;

/* ---- building records ------------------------------------------------------------------ */

typedef struct span {
    const char *s; /* NULL: absent */
    size_t n;
} span_t;

typedef struct hdr_src {
    span_t name, value;
} hdr_src_t;

enum hdr_filter { KEEP_ALL, DROP_ATTEMPTS, DROP_XSB };

static span_t sp(const char *s)
{
    span_t r = {s, s ? strlen(s) : 0};
    return r;
}

static bool is_xsb(const sb__header_t *h)
{
    return h->name_len >= 5 && memcmp(h->name, "x-sb-", 5) == 0;
}

static bool drop_header(const sb__header_t *h, enum hdr_filter f)
{
    if (f == DROP_XSB)
        return is_xsb(h);
    if (f == DROP_ATTEMPTS)
        return h->name_len == 13 && memcmp(h->name, "x-sb-attempts", 13) == 0;
    return false;
}

/* Adds a string of n bytes and its NUL to *acc; false on overflow. */
static bool add_size(size_t *acc, size_t n)
{
    if (*acc > SIZE_MAX - n - 1)
        return false;
    *acc += n + 1; /* every string gets its NUL */
    return true;
}

static char *put(char **cursor, span_t v)
{
    if (!v.s)
        return NULL;
    char *dst = *cursor;
    if (v.n)
        memcpy(dst, v.s, v.n);
    dst[v.n] = '\0';
    *cursor += v.n + 1;
    return dst;
}

/* Everything a record is built from: the given fields, headers copied from `orig` (minus
 * those the filter drops, lengths taken as given) and then `extra`. */
typedef struct build {
    span_t routing_key, body, message_id, content_type, amqp_type, key;
    const sb__header_t *orig;
    size_t n_orig;
    enum hdr_filter filter;
    const hdr_src_t *extra;
    size_t n_extra;
} build_t;

/* A copy of record r (its routing key, body, properties and headers but those `filter`
 * drops) with the `extra` headers added: a replay, retry or dead letter of it. */
static build_t copy_of(const sb__memtx_record_t *r, enum hdr_filter filter, const hdr_src_t *extra,
                       size_t n_extra)
{
    return (build_t){
        .routing_key = sp(r->routing_key),
        .body = {r->body, r->body_len},
        .message_id = sp(r->message_id),
        .content_type = sp(r->content_type),
        .amqp_type = sp(r->amqp_type),
        .orig = r->headers,
        .n_orig = r->n_headers,
        .filter = filter,
        .extra = extra,
        .n_extra = n_extra,
    };
}

/* One allocation holding the message and all its bytes. NULL on ENOMEM or size overflow
 * (*err says which). */
static mem_msg_t *build_msg(memtx_t *tx, const build_t *b, int *err)
{
    size_t nh = 0, strings = 0;
    bool ok = true;
    const span_t *fields[] = {&b->routing_key,  &b->body,      &b->message_id,
                              &b->content_type, &b->amqp_type, &b->key};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (fields[i]->s)
            ok = ok && add_size(&strings, fields[i]->n);
    for (size_t i = 0; i < b->n_orig; i++) {
        if (drop_header(&b->orig[i], b->filter))
            continue;
        nh++;
        ok = ok && add_size(&strings, b->orig[i].name_len) &&
             add_size(&strings, b->orig[i].value_len);
    }
    for (size_t i = 0; i < b->n_extra; i++) {
        nh++;
        ok =
            ok && add_size(&strings, b->extra[i].name.n) && add_size(&strings, b->extra[i].value.n);
    }
    size_t fixed = sizeof(mem_msg_t) + nh * sizeof(sb__header_t);
    if (!ok || strings > SIZE_MAX - fixed) {
        *err = SB_ETOOBIG;
        return NULL;
    }
    mem_msg_t *m = sb_malloc(fixed + strings);
    if (!m) {
        *err = SB_ENOMEM;
        return NULL;
    }
    memset(m, 0, sizeof *m);
    sb__header_t *hs = (sb__header_t *)(void *)(m + 1);
    char *cur = (char *)(hs + nh);
    sb__memtx_record_t *r = &m->rec;
    r->routing_key = put(&cur, b->routing_key);
    r->body = put(&cur, b->body.s ? b->body : (span_t){"", 0});
    r->body_len = b->body.s ? b->body.n : 0;
    r->message_id = put(&cur, b->message_id);
    r->content_type = put(&cur, b->content_type);
    r->amqp_type = put(&cur, b->amqp_type);
    r->key = put(&cur, b->key);
    size_t k = 0;
    for (size_t i = 0; i < b->n_orig; i++) {
        const sb__header_t *h = &b->orig[i];
        if (drop_header(h, b->filter))
            continue;
        hs[k].name = put(&cur, (span_t){h->name ? h->name : "", h->name_len});
        hs[k].value = put(&cur, (span_t){h->value ? h->value : "", h->value_len});
        hs[k].name_len = h->name_len;
        hs[k].value_len = h->value_len;
        k++;
    }
    for (size_t i = 0; i < b->n_extra; i++, k++) {
        hs[k].name = put(&cur, b->extra[i].name);
        hs[k].value = put(&cur, b->extra[i].value);
        hs[k].name_len = (uint32_t)b->extra[i].name.n;
        hs[k].value_len = (uint32_t)b->extra[i].value.n;
    }
    r->headers = hs;
    r->n_headers = nh;
    m->tx = tx;
    m->state = M_RECORD;
    return m;
}

const char *sb__memtx_record_header(const sb__memtx_record_t *r, const char *name, size_t *len)
{
    if (!r || !name)
        return NULL;
    size_t n = strlen(name);
    for (size_t i = 0; i < r->n_headers; i++) {
        const sb__header_t *h = &r->headers[i];
        if (h->name_len == n && memcmp(h->name, name, n) == 0) {
            if (len)
                *len = h->value_len;
            return h->value;
        }
    }
    return NULL;
}

/* Reads a small decimal header value; `dflt` when absent or malformed. */
static unsigned header_uint(const sb__memtx_record_t *r, const char *name, unsigned dflt)
{
    size_t len;
    const char *v = sb__memtx_record_header(r, name, &len);
    if (!v || len == 0 || len > 9)
        return dflt;
    unsigned acc = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return dflt;
        acc = acc * 10 + (unsigned)(v[i] - '0');
    }
    return acc;
}

/* Fills the delivery view of a message that is about to be queued. */
static void prepare_delivery(memtx_t *tx, mem_msg_t *m)
{
    sb__delivery_t *d = &m->d;
    const sb__memtx_record_t *r = &m->rec;
    memset(d, 0, sizeof *d);
    d->msg.body = r->body;
    d->msg.body_len = r->body_len;
    d->msg.routing_key = r->routing_key;
    d->msg.content_type = r->content_type;
    d->msg.amqp_type = r->amqp_type;
    d->msg.message_id = r->message_id;
    d->msg.headers = r->headers;
    d->msg.n_headers = r->n_headers;
    unsigned made = header_uint(r, "x-sb-attempts", 0);
    d->attempt = made < 999999999u ? made + 1 : made;
    d->redelivered = false;
    d->source = tx->queue_name;
    d->partition = -1;
    d->offset = -1;
}

/* ---- lists and the kick ---------------------------------------------------------------- */

static void list_push(msg_list_t *l, mem_msg_t *m)
{
    m->next = NULL;
    m->prev = l->tail;
    if (l->tail)
        l->tail->next = m;
    else
        l->head = m;
    l->tail = m;
    l->n++;
}

static void list_remove(msg_list_t *l, mem_msg_t *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        l->head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else
        l->tail = m->prev;
    m->prev = m->next = NULL;
    l->n--;
}

static size_t held(const memtx_t *tx)
{
    return tx->queue.n + tx->delayed.n + tx->inflight.n;
}

static bool can_deliver(const memtx_t *tx)
{
    return tx->started && !tx->paused && !tx->stopped && tx->queue.head;
}

static void kick(memtx_t *tx)
{
    static const struct timeval zero = {0, 0};
    if ((tx->compl_head || can_deliver(tx)) && !evtimer_pending(tx->kick, NULL))
        evtimer_add(tx->kick, &zero);
}

static void push_compl(memtx_t *tx, compl_t *c)
{
    c->next = NULL;
    if (tx->compl_tail)
        tx->compl_tail->next = c;
    else
        tx->compl_head = c;
    tx->compl_tail = c;
    kick(tx);
}

static void run_completions(memtx_t *tx)
{
    /* Only those pending now: completions queued by these callbacks wait a turn. */
    compl_t *c = tx->compl_head;
    tx->compl_head = tx->compl_tail = NULL;
    while (c) {
        compl_t *next = c->next;
        sb__tx_done_cb cb = c->cb;
        void *arg = c->arg;
        int status = c->status;
        mem_msg_t *m = c->msg;
        if (c->heap)
            sb_free(c); /* an embedded one dies with its message below */
        if (m && m->state == M_SETTLING_OK) {
            tx->n_settling--;
            sb_free(m);
        } else if (m) {
            m->state = M_INFLIGHT; /* still unsettled, still holding its slot */
        } else {
            tx->n_pub_pending--;
        }
        if (cb)
            cb(arg, status);
        c = next;
    }
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    memtx_t *tx = arg;
    run_completions(tx);
    for (unsigned i = 0; i < tx->batch && can_deliver(tx); i++) {
        mem_msg_t *m = tx->queue.head;
        list_remove(&tx->queue, m);
        list_push(&tx->inflight, m);
        m->state = M_INFLIGHT;
        tx->stats.delivered++;
        tx->base.sink(tx->base.sink_arg, &m->d); /* m may be settled and freed here */
    }
    kick(tx);
}

static void enqueue(memtx_t *tx, mem_msg_t *m)
{
    prepare_delivery(tx, m);
    m->state = M_QUEUED;
    list_push(&tx->queue, m);
    kick(tx);
}

static void on_delay_done(evutil_socket_t fd, short what, void *arg)
{
    mem_msg_t *m = arg;
    memtx_t *tx = m->tx;
    event_free(m->timer);
    m->timer = NULL;
    list_remove(&tx->delayed, m);
    m->state = M_QUEUED;
    list_push(&tx->queue, m);
    kick(tx);
}

/* ---- public test API ------------------------------------------------------------------- */

static int tx_start(sb__transport_t *t, char *errstr, size_t errstr_size);

/* A memory transport, possibly behind a decorated ops table (the test harness replaces
 * retry_later but keeps the rest). */
static memtx_t *as_memtx(sb__transport_t *t)
{
    return (t && t->ops && t->ops->start == tx_start) ? (memtx_t *)t : NULL;
}

static span_t hdr_span(const char *s, uint32_t n)
{
    if (!s)
        return (span_t){"", 0};
    return (span_t){s, n ? n : strlen(s)};
}

int sb__memtx_inject(sb__transport_t *t, const sb__memtx_msg_t *m)
{
    memtx_t *tx = as_memtx(t);
    if (!tx || !m || (!m->body && m->body_len) || (m->n_headers && !m->headers))
        return SB_EINVAL;
    if (held(tx) >= tx->capacity)
        return SB_EBUSY;
    /* Resolve the strlen() convention into exact lengths, in a small stack batch. */
    hdr_src_t stackbuf[16];
    hdr_src_t *hs = stackbuf;
    if (m->n_headers > sizeof stackbuf / sizeof stackbuf[0]) {
        if (m->n_headers > SIZE_MAX / sizeof *hs)
            return SB_ETOOBIG;
        hs = sb_malloc(m->n_headers * sizeof *hs);
        if (!hs)
            return SB_ENOMEM;
    }
    int rc = SB_EOK;
    for (size_t i = 0; i < m->n_headers; i++) {
        hs[i].name = hdr_span(m->headers[i].name, m->headers[i].name_len);
        hs[i].value = hdr_span(m->headers[i].value, m->headers[i].value_len);
        if (hs[i].name.n > UINT32_MAX || hs[i].value.n > UINT32_MAX)
            rc = SB_ETOOBIG;
    }
    mem_msg_t *msg = NULL;
    if (rc == SB_EOK) {
        build_t b = {
            .routing_key = sp(m->routing_key),
            .body = {m->body ? m->body : "", m->body_len},
            .message_id = sp(m->message_id),
            .content_type = sp(m->content_type),
            .amqp_type = sp(m->amqp_type),
            .extra = hs,
            .n_extra = m->n_headers,
        };
        msg = build_msg(tx, &b, &rc);
    }
    if (hs != stackbuf)
        sb_free(hs);
    if (!msg)
        return rc;
    tx->stats.injected++;
    enqueue(tx, msg);
    return SB_EOK;
}

size_t sb__memtx_dlq_count(sb__transport_t *t)
{
    memtx_t *tx = as_memtx(t);
    return tx ? tx->dlq_n : 0;
}

const sb__memtx_record_t *sb__memtx_dlq_at(sb__transport_t *t, size_t i)
{
    memtx_t *tx = as_memtx(t);
    return (tx && i < tx->dlq_n) ? &tx->dlq[i]->rec : NULL;
}

int sb__memtx_dlq_replay(sb__transport_t *t, size_t i)
{
    memtx_t *tx = as_memtx(t);
    if (!tx)
        return SB_EINVAL;
    if (i >= tx->dlq_n)
        return SB_ENOTFOUND;
    if (held(tx) >= tx->capacity)
        return SB_EBUSY;
    mem_msg_t *dl = tx->dlq[i];
    const sb__memtx_record_t *r = &dl->rec;
    unsigned replays = header_uint(r, "x-sb-replay-count", 0);
    char num[16];
    snprintf(num, sizeof num, "%u", replays < 999999999u ? replays + 1 : replays);
    hdr_src_t extra[] = {{sp("x-sb-replay-count"), sp(num)}};
    build_t b = copy_of(r, DROP_XSB, extra, 1);
    int rc;
    mem_msg_t *m = build_msg(tx, &b, &rc);
    if (!m)
        return rc;
    memmove(&tx->dlq[i], &tx->dlq[i + 1], (tx->dlq_n - i - 1) * sizeof tx->dlq[0]);
    tx->dlq_n--;
    sb_free(dl);
    tx->stats.injected++;
    enqueue(tx, m);
    return SB_EOK;
}

size_t sb__memtx_published_count(sb__transport_t *t)
{
    memtx_t *tx = as_memtx(t);
    return tx ? tx->pub_n : 0;
}

const sb__memtx_record_t *sb__memtx_published_at(sb__transport_t *t, size_t i)
{
    memtx_t *tx = as_memtx(t);
    if (!tx || i >= tx->pub_n)
        return NULL;
    return &tx->pub[(tx->pub_first + i) % tx->pub_cap]->rec;
}

void sb__memtx_stats(sb__transport_t *t, sb__memtx_stats_t *out)
{
    memtx_t *tx = as_memtx(t);
    if (!out)
        return;
    if (tx)
        *out = tx->stats;
    else
        memset(out, 0, sizeof *out);
}

size_t sb__memtx_outstanding(sb__transport_t *t)
{
    memtx_t *tx = as_memtx(t);
    return tx ? held(tx) + tx->n_settling + tx->n_pub_pending : 0;
}

void sb__memtx_fail_next(sb__transport_t *t, sb__memtx_op_t op, unsigned n)
{
    memtx_t *tx = as_memtx(t);
    if (tx && (unsigned)op < 3)
        tx->fail[op] = n;
}

static bool take_failure(memtx_t *tx, sb__memtx_op_t op)
{
    if (!tx->fail[op])
        return false;
    tx->fail[op]--;
    return true;
}

/* ---- ops ------------------------------------------------------------------------------- */

static mem_msg_t *msg_of(sb__delivery_t *d)
{
    return (mem_msg_t *)(void *)((char *)d - offsetof(mem_msg_t, d));
}

static int tx_start(sb__transport_t *t, char *errstr, size_t errstr_size)
{
    memtx_t *tx = (memtx_t *)t;
    if (tx->stopped) {
        if (errstr && errstr_size)
            snprintf(errstr, errstr_size, "memory transport: start after stop");
        return SB_ESTATE;
    }
    tx->started = true;
    kick(tx);
    return SB_EOK;
}

static void tx_pause(sb__transport_t *t)
{
    ((memtx_t *)t)->paused = true;
}

static void tx_resume(sb__transport_t *t)
{
    memtx_t *tx = (memtx_t *)t;
    tx->paused = false;
    kick(tx);
}

static void tx_ack(sb__transport_t *t, sb__delivery_t *d)
{
    memtx_t *tx = (memtx_t *)t;
    mem_msg_t *m = msg_of(d);
    assert(m->tx == tx && m->state == M_INFLIGHT); /* settled exactly once */
    list_remove(&tx->inflight, m);
    tx->stats.acked++;
    sb_free(m);
}

/* Starts the asynchronous settlement of an in-flight message: on success the message
 * leaves the in-flight list (its slot is free) and is freed after the callback; on failure
 * it keeps its slot and returns to in flight before the callback. */
static void settle_async(memtx_t *tx, mem_msg_t *m, int status, sb__tx_done_cb cb, void *arg)
{
    if (status == SB_EOK) {
        list_remove(&tx->inflight, m);
        m->state = M_SETTLING_OK;
        tx->n_settling++;
    } else {
        m->state = M_SETTLING_FAIL;
    }
    m->done = (compl_t){.cb = cb, .arg = arg, .status = status, .msg = m};
    push_compl(tx, &m->done);
}

static int tx_retry_later(sb__transport_t *t, sb__delivery_t *d, uint64_t delay_ms,
                          unsigned next_attempt, sb__tx_done_cb cb, void *arg)
{
    memtx_t *tx = (memtx_t *)t;
    mem_msg_t *m = msg_of(d);
    assert(m->tx == tx && m->state == M_INFLIGHT);
    if (take_failure(tx, SB__MEMTX_OP_RETRY)) {
        settle_async(tx, m, INJECTED_FAILURE, cb, arg);
        return SB_EOK;
    }
    char num[16];
    snprintf(num, sizeof num, "%u", next_attempt > 1 ? next_attempt - 1 : 0);
    hdr_src_t extra[] = {{sp("x-sb-attempts"), sp(num)}};
    const sb__memtx_record_t *r = &m->rec;
    build_t b = copy_of(r, DROP_ATTEMPTS, extra, 1);
    int rc;
    mem_msg_t *copy = build_msg(tx, &b, &rc);
    if (!copy)
        return rc;
    copy->timer = evtimer_new(tx->evbase, on_delay_done, copy);
    uint64_t secs = delay_ms / 1000;
    struct timeval tv = {
        .tv_sec = secs > (uint64_t)INT32_MAX ? INT32_MAX : (time_t)secs,
        .tv_usec = (suseconds_t)((delay_ms % 1000) * 1000),
    };
    /* libevent measures the delay from the time it cached when this loop turn began: a
     * long turn would make the retry come early by that much. */
    event_base_update_cache_time(tx->evbase);
    if (!copy->timer || evtimer_add(copy->timer, &tv) != 0) {
        rc = copy->timer ? SB_EIO : SB_ENOMEM;
        if (copy->timer)
            event_free(copy->timer);
        sb_free(copy);
        return rc;
    }
    prepare_delivery(tx, copy);
    copy->state = M_DELAYED;
    list_push(&tx->delayed, copy);
    tx->stats.retried++;
    tx->stats.last_retry_delay_ms = delay_ms;
    settle_async(tx, m, SB_EOK, cb, arg);
    return SB_EOK;
}

/* Gives an unsettled delivery back, as a broker does with a requeue: it is delivered again
 * (same attempt, same headers) after a short pause, so a failing settlement cannot spin. */
static void tx_release(sb__transport_t *t, sb__delivery_t *d)
{
    memtx_t *tx = (memtx_t *)t;
    mem_msg_t *m = msg_of(d);
    assert(m->tx == tx && m->state == M_INFLIGHT);
    list_remove(&tx->inflight, m);
    static const struct timeval pause_tv = {0, 100 * 1000};
    m->timer = evtimer_new(tx->evbase, on_delay_done, m);
    if (!m->timer || evtimer_add(m->timer, &pause_tv) != 0) {
        if (m->timer)
            event_free(m->timer);
        m->timer = NULL;
        enqueue(tx, m); /* no timer: requeue at once rather than lose it */
        return;
    }
    m->state = M_DELAYED;
    list_push(&tx->delayed, m);
}

static int tx_dead_letter(sb__transport_t *t, sb__delivery_t *d, const sb__dl_meta_t *meta,
                          sb__tx_done_cb cb, void *arg)
{
    memtx_t *tx = (memtx_t *)t;
    mem_msg_t *m = msg_of(d);
    assert(m->tx == tx && m->state == M_INFLIGHT);
    if (!meta)
        return SB_EINVAL;
    if (take_failure(tx, SB__MEMTX_OP_DEAD_LETTER)) {
        settle_async(tx, m, INJECTED_FAILURE, cb, arg);
        return SB_EOK;
    }
    if (tx->dlq_n >= tx->dlq_capacity) {
        settle_async(tx, m, SB_EBUSY, cb, arg);
        return SB_EOK;
    }
    if (tx->dlq_n == tx->dlq_cap) {
        size_t ncap = tx->dlq_cap ? tx->dlq_cap * 2 : 16;
        if (ncap > tx->dlq_capacity)
            ncap = tx->dlq_capacity;
        mem_msg_t **nd = sb_realloc(tx->dlq, ncap * sizeof *nd);
        if (!nd)
            return SB_ENOMEM;
        tx->dlq = nd;
        tx->dlq_cap = ncap;
    }
    char attempts[16], failed_at[32];
    snprintf(attempts, sizeof attempts, "%u", meta->attempts);
    sb__datetime_format(meta->failed_at_us ? meta->failed_at_us : sb__datetime_now_us(), failed_at);
    const sb__memtx_record_t *r = &m->rec;
    hdr_src_t extra[8];
    size_t n = 0;
    extra[n++] = (hdr_src_t){sp("x-sb-reason"), sp(meta->reason ? meta->reason : "")};
    extra[n++] = (hdr_src_t){sp("x-sb-error"), sp(meta->error ? meta->error : "")};
    if (meta->handler)
        extra[n++] = (hdr_src_t){sp("x-sb-handler"), sp(meta->handler)};
    extra[n++] = (hdr_src_t){sp("x-sb-attempts"), sp(attempts)};
    extra[n++] = (hdr_src_t){sp("x-sb-consumer"), sp(meta->consumer ? meta->consumer : "")};
    extra[n++] = (hdr_src_t){sp("x-sb-failed-at"), sp(failed_at)};
    extra[n++] =
        (hdr_src_t){sp("x-sb-original-routing-key"), sp(r->routing_key ? r->routing_key : "")};
    extra[n++] = (hdr_src_t){sp("x-sb-original-queue"), sp(tx->queue_name)};
    build_t b = copy_of(r, DROP_ATTEMPTS, extra, n);
    int rc;
    mem_msg_t *dl = build_msg(tx, &b, &rc);
    if (!dl)
        return rc;
    tx->dlq[tx->dlq_n++] = dl;
    tx->stats.dead_lettered++;
    settle_async(tx, m, SB_EOK, cb, arg);
    return SB_EOK;
}

static int tx_publish(sb__transport_t *t, const sb__outmsg_t *o, sb__tx_done_cb cb, void *arg)
{
    memtx_t *tx = (memtx_t *)t;
    if (!o || !o->type || (!o->body && o->body_len))
        return SB_EINVAL;
    compl_t *c = sb_malloc(sizeof *c);
    if (!c)
        return SB_ENOMEM;
    *c = (compl_t){.cb = cb, .arg = arg, .status = SB_EOK, .heap = true};
    if (take_failure(tx, SB__MEMTX_OP_PUBLISH)) {
        c->status = INJECTED_FAILURE;
    } else if (tx->loopback && held(tx) >= tx->capacity) {
        c->status = SB_EBUSY;
    } else {
        hdr_src_t extra[4];
        size_t n = 0;
        extra[n++] = (hdr_src_t){sp("event-type"), sp(o->type)};
        if (o->id)
            extra[n++] = (hdr_src_t){sp("message-id"), sp(o->id)};
        if (o->traceparent)
            extra[n++] = (hdr_src_t){sp("traceparent"), sp(o->traceparent)};
        if (o->tracestate)
            extra[n++] = (hdr_src_t){sp("tracestate"), sp(o->tracestate)};
        build_t b = {
            .routing_key = sp(o->type),
            .body = {o->body ? o->body : "", o->body_len},
            .message_id = sp(o->id),
            .content_type = sp("application/json"),
            .key = sp(o->key),
            .extra = extra,
            .n_extra = n,
        };
        int rc = SB_EOK;
        mem_msg_t *rec = build_msg(tx, &b, &rc);
        mem_msg_t *loop = NULL;
        if (rec && tx->loopback)
            loop = build_msg(tx, &b, &rc);
        if (!rec || (tx->loopback && !loop)) {
            sb_free(rec);
            sb_free(c);
            return rc;
        }
        if (tx->pub_n == tx->pub_cap) { /* full ring: drop the oldest */
            sb_free(tx->pub[tx->pub_first]);
            tx->pub_first = (tx->pub_first + 1) % tx->pub_cap;
            tx->pub_n--;
        }
        tx->pub[(tx->pub_first + tx->pub_n) % tx->pub_cap] = rec;
        tx->pub_n++;
        tx->stats.published++;
        if (loop) {
            tx->stats.injected++;
            enqueue(tx, loop);
        }
    }
    tx->n_pub_pending++;
    push_compl(tx, c);
    return SB_EOK;
}

static bool tx_ready(sb__transport_t *t)
{
    memtx_t *tx = (memtx_t *)t;
    return tx->started && !tx->stopped;
}

static void tx_stop(sb__transport_t *t)
{
    ((memtx_t *)t)->stopped = true;
}

static void free_list(msg_list_t *l)
{
    mem_msg_t *m = l->head;
    while (m) {
        mem_msg_t *next = m->next;
        if (m->timer)
            event_free(m->timer);
        sb_free(m);
        m = next;
    }
    l->head = l->tail = NULL;
    l->n = 0;
}

static void tx_destroy(sb__transport_t *t)
{
    memtx_t *tx = (memtx_t *)t;
    if (!tx)
        return;
    if (tx->kick)
        event_free(tx->kick);
    /* Pending completions are dropped unreported; settling messages die with them. */
    for (compl_t *c = tx->compl_head, *next; c; c = next) {
        next = c->next;
        mem_msg_t *m = c->msg;
        if (c->heap)
            sb_free(c);
        if (m && m->state == M_SETTLING_OK)
            sb_free(m);
        /* M_SETTLING_FAIL messages are still on the in-flight list, freed below. */
    }
    free_list(&tx->queue);
    free_list(&tx->delayed);
    free_list(&tx->inflight);
    for (size_t i = 0; i < tx->dlq_n; i++)
        sb_free(tx->dlq[i]);
    sb_free(tx->dlq);
    for (size_t i = 0; i < tx->pub_n; i++)
        sb_free(tx->pub[(tx->pub_first + i) % tx->pub_cap]);
    sb_free(tx->pub);
    sb_free(tx->queue_name);
    sb_free(tx);
}

static const sb__transport_ops_t memtx_ops = {
    .name = "memory",
    .start = tx_start,
    .pause = tx_pause,
    .resume = tx_resume,
    .ack = tx_ack,
    .retry_later = tx_retry_later,
    .dead_letter = tx_dead_letter,
    .release = tx_release,
    .publish = tx_publish,
    .ready = tx_ready,
    .stop = tx_stop,
    .destroy = tx_destroy,
};

int sb__memtx_new(struct event_base *base, const sb__memtx_opts_t *o, sb__tx_sink_fn sink,
                  void *sink_arg, sb__transport_t **out)
{
    if (!base || !sink || !out)
        return SB_EINVAL;
    sb__memtx_opts_t d = {0};
    if (!o)
        o = &d;
    memtx_t *tx = sb_calloc(1, sizeof *tx);
    if (!tx)
        return SB_ENOMEM;
    tx->base.ops = &memtx_ops;
    tx->base.sink = sink;
    tx->base.sink_arg = sink_arg;
    tx->evbase = base;
    tx->capacity = o->capacity ? o->capacity : DEFAULT_CAPACITY;
    tx->dlq_capacity = o->dlq_capacity ? o->dlq_capacity : DEFAULT_CAPACITY;
    tx->published_keep = o->published_keep ? o->published_keep : DEFAULT_CAPACITY;
    tx->batch = o->batch ? o->batch : DEFAULT_BATCH;
    tx->loopback = o->loopback;
    tx->queue_name = sb_strdup(o->queue_name ? o->queue_name : "memory");
    tx->pub_cap = tx->published_keep;
    if (tx->pub_cap > SIZE_MAX / sizeof *tx->pub)
        goto err;
    tx->pub = sb_calloc(tx->pub_cap, sizeof *tx->pub);
    tx->kick = evtimer_new(base, on_kick, tx);
    if (!tx->queue_name || !tx->pub || !tx->kick)
        goto err;
    *out = &tx->base;
    return SB_EOK;
err:
    tx_destroy(&tx->base);
    return SB_ENOMEM;
}
