/* transport_amqp.c: the RabbitMQ transport on rabbitmq-c 0.11 (see transport_amqp.h).
 *
 * Design: ONE I/O THREAD PER CONNECTION. rabbitmq-c's API is blocking (connect, login,
 * every RPC, and socket writes, which loop until the bytes are out), so nothing of it runs
 * on the libevent loop. The I/O thread owns the amqp_connection_state_t entirely: it
 * connects (amqp:// or amqps:// with CA, client certificate and peer + host name
 * verification), declares the topology on an RPC channel (3), sets basic.qos and consumes
 * on channel 1, and publishes retries, dead letters and follow-ups on channel 2 in confirm
 * mode. It then poll()s the socket and an eventfd: frames are drained with
 * amqp_simple_wait_frame_noblock() (zero timeout; that call also sends heartbeats and
 * detects a silent broker, so the poll timeout is at most half the heartbeat), and the
 * commands the loop queued (settlements, publishes, stop) are executed.
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
 *  - publishes: built on the loop (properties decoded from the original's raw bytes, headers
 *    adjusted), published by the I/O thread under publisher confirms, pipelined (no wait per
 *    message); the broker's acks (multiple too) and nacks complete them; a connection loss
 *    fails every outstanding one. Callbacks run on the loop.
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
 * Reconnect: on any connection or channel error (a channel error closes everything, which
 * keeps the state machine small), the thread tears the connection down, bumps the
 * generation, fails outstanding publishes, and reconnects with exponential backoff and
 * jitter (100 ms doubling up to 10 s). Deliveries of an old generation are stale: their
 * settlements are no-ops (tags belong to the dead channel) and undelivered ones are
 * dropped; the broker redelivers them and idempotency keeps their effects single.
 *
 * It does not: use channel.flow, support several hosts in one URL, or wait for confirms of
 * follow-up publishes at destroy (the dispatcher drained before that). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <event2/event.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "datetime.h"
#include "errf.h"
#include "secret_file.h"
#include "log.h"
#include "transport_amqp.h"

#define CH_CONSUME        1
#define CH_PUBLISH        2
#define CH_RPC            3
#define FRAME_MAX         131072
#define CONNECT_TIMEOUT_S 10
#define BACKOFF_MIN_MS    100
#define BACKOFF_MAX_MS    10000
#define FRAMES_PER_ROUND  512
#define ACK_TIMER_US      2000
#define IMMEDIATE_MS      50

static const uint64_t buckets_ms[] = {100,     250,     500,     1000,     2000,     5000,
                                      10000,   30000,   60000,   120000,   300000,   600000,
                                      1800000, 3600000, 7200000, 21600000, 43200000, 86400000};
#define N_BUCKETS (sizeof buckets_ms / sizeof buckets_ms[0])

typedef struct amqptx amqptx_t;

/* One received message, one allocation: record, header array, strings, raw props, body. */
typedef struct dlv {
    sb__delivery_t d; /* what the sink sees */
    struct dlv *next; /* hand-off and backlog lists */
    uint64_t tag;
    uint32_t gen;
    uint32_t qidx;           /* consumed queue index */
    const char *exchange;    /* as delivered (the retry path's x-sb-exchange overrides msg) */
    const char *routing_key; /* as delivered */
    amqp_bytes_t props_raw;  /* encoded basic properties, for republishing */
} dlv_t;

enum pub_kind { P_FOLLOWUP, P_RETRY, P_DEAD_LETTER };

typedef struct pub {
    struct pub *next;
    enum pub_kind kind;
    amqptx_t *tx;
    dlv_t *orig; /* retry / dead letter: acked after the confirm; freed after the callback */
    uint64_t orig_tag;
    uint32_t orig_gen;
    uint32_t qidx; /* retry: source queue */
    int bucket;    /* retry: bucket index, -1 immediate */
    amqp_bytes_t exchange, routing_key, body;
    amqp_basic_properties_t props;
    bool mandatory, returned;
    uint64_t seq; /* publisher-confirm sequence number */
    int status;
    sb__tx_done_cb cb;
    void *arg;
    amqp_pool_t pool; /* everything above that is not borrowed from orig */
} pub_t;

typedef struct settle {
    uint64_t tag;
    uint32_t gen;
    bool nack;
} settle_t;

/* Per-tag states of the ack window. */
enum { W_OUT = 0, W_ACK = 1, W_DONE = 2 };

typedef struct ackwin {
    uint8_t *st;
    uint64_t cap;   /* power of two */
    uint64_t base;  /* every tag below is settled with the broker */
    uint64_t top;   /* highest tag seen + 1 */
    size_t pending; /* W_ACK entries */
} ackwin_t;

struct amqptx {
    sb__transport_t base; /* must be first */
    struct event_base *evbase;
    struct event *wake_ev;   /* activated by the I/O thread */
    struct event *ack_timer; /* loop: pushes batched acks to the I/O thread */
    /* configuration (immutable after new) */
    char *urlbuf; /* parsed in place */
    struct amqp_connection_info ci;
    char *password;
    char *exchange, *dlx, *dlq, *consumer;
    char **queues;
    size_t n_queues;
    char **patterns;
    size_t n_patterns;
    bool quorum, sac, declare, tls, verify;
    char *ca_file, *cert_file, *key_file;
    unsigned prefetch, heartbeat_s, ack_batch;
    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    dlv_t *in_head, *in_tail;     /* I/O -> loop deliveries */
    pub_t *done_head, *done_tail; /* I/O -> loop completed publishes */
    bool loop_wake_pending;
    settle_t *settles; /* loop -> I/O */
    size_t n_settles, cap_settles;
    pub_t *pq_head, *pq_tail; /* loop -> I/O publishes */
    bool stop_req, shutdown_req, io_wake_pending;
    int start_state; /* 0 waiting, 1 connected, -1 failed */
    int start_rc;
    char start_err[256];
    int efd;
    atomic_bool ready;
    atomic_uint gen;
    /* loop thread only */
    bool started, paused, stopped, thread_started;
    dlv_t *bl_head, *bl_tail; /* fetched, not yet handed to the sink */
    size_t unflushed;         /* settles added since the last wake-up */
    pthread_t thr;
    /* I/O thread only */
    amqp_connection_state_t conn;
    ackwin_t win;
    uint64_t pub_seq;
    pub_t *pend_head, *pend_tail; /* published, awaiting confirm, by seq */
    bool *declared; /* [n_queues * N_BUCKETS] retry queues declared on this connection */
    dlv_t *asm_rec; /* message being assembled on channel 1 */
    size_t asm_body_got;
    uint64_t asm_tag;
    bool asm_redelivered, asm_want_header;
    uint32_t asm_qidx;
    char asm_exchange[256], asm_rk[256];
    uint64_t ch2_skip; /* body bytes of a basic.return still to skip on channel 2 */
    bool ch2_want_header;
    dlv_t *io_head, *io_tail; /* batch being collected */
    uint64_t rnd;
};

static const sb__transport_ops_t amqptx_ops;

/* ---- small helpers --------------------------------------------------------------------- */

uint64_t sb__amqptx_retry_bucket_ms(uint64_t delay_ms)
{
    if (delay_ms < IMMEDIATE_MS)
        return 0;
    for (size_t i = 0; i < N_BUCKETS; i++)
        if (buckets_ms[i] >= delay_ms)
            return buckets_ms[i];
    return buckets_ms[N_BUCKETS - 1];
}

static int bucket_index(uint64_t delay_ms)
{
    if (delay_ms < IMMEDIATE_MS)
        return -1;
    for (size_t i = 0; i < N_BUCKETS; i++)
        if (buckets_ms[i] >= delay_ms)
            return (int)i;
    return (int)N_BUCKETS - 1;
}

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

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t xrand(amqptx_t *tx)
{
    uint64_t x = tx->rnd;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return tx->rnd = x;
}

static void eventfd_signal(int fd)
{
    uint64_t one = 1;
    ssize_t w;
    do
        w = write(fd, &one, sizeof one);
    while (w < 0 && errno == EINTR);
}

/* Error text into a caller's buffer; truncation is fine (a vsnprintf wrapper, so that
 * gcc's -Wformat-truncation does not demand exact buffer arithmetic for log text). */
static void set_err(char *buf, size_t n, const char *fmt, ...) SB_PRINTF(3, 4);
static void set_err(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

/* Describes a failed RPC reply into buf (no secrets: replies never carry the password). */
static void reply_text(amqp_rpc_reply_t r, char *buf, size_t n)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        set_err(buf, n, "ok");
        return;
    case AMQP_RESPONSE_NONE:
        set_err(buf, n, "missing RPC reply");
        return;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        set_err(buf, n, "%s", amqp_error_string2(r.library_error));
        return;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            set_err(buf, n, "connection closed by the broker: %u %.*s", m->reply_code,
                    (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            set_err(buf, n, "channel closed by the broker: %u %.*s", m->reply_code,
                    (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            set_err(buf, n, "unexpected broker method 0x%08x", (unsigned)r.reply.id);
        }
        return;
    }
    set_err(buf, n, "unknown RPC reply");
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

static bool key_is(amqp_bytes_t k, const char *name)
{
    size_t n = strlen(name);
    return k.len == n && memcmp(k.bytes, name, n) == 0;
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
static dlv_t *build_record(amqptx_t *tx, const amqp_frame_t *f)
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

static bool win_reserve(ackwin_t *w, uint64_t tag)
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

static void win_reset(ackwin_t *w)
{
    if (w->st)
        memset(w->st, 0, (size_t)w->cap);
    w->base = 1;
    w->top = 1;
    w->pending = 0;
}

/* Records a settlement; nacks go out at once (before any later prefix ack covers them). */
static int win_settle(amqptx_t *tx, uint64_t tag, bool nack)
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
static int win_flush(amqptx_t *tx)
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

/* ---- publishes (I/O thread) ------------------------------------------------------------ */

static void push_done(amqptx_t *tx, pub_t *p)
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
        win_settle(tx, p->orig_tag, false);
    push_done(tx, p);
}

static void on_confirm(amqptx_t *tx, uint64_t tag, bool multiple, bool ok)
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

static void fail_pending(amqptx_t *tx)
{
    pub_t *p = tx->pend_head;
    tx->pend_head = tx->pend_tail = NULL;
    while (p) {
        pub_t *n = p->next;
        p->status = SB_EIO;
        push_done(tx, p);
        p = n;
    }
}

static amqp_table_entry_t str_entry(const char *k, amqp_bytes_t v)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = v;
    return e;
}

static int declare_retry_queue(amqptx_t *tx, uint32_t qidx, int b, char *err, size_t n)
{
    bool *done = &tx->declared[qidx * N_BUCKETS + (size_t)b];
    if (*done)
        return 0;
    char name[600];
    snprintf(name, sizeof name, "%s.retry.%" PRIu64, tx->queues[qidx], buckets_ms[b]);
    amqp_table_entry_t e[3];
    e[0].key = amqp_cstring_bytes("x-message-ttl");
    e[0].value.kind = AMQP_FIELD_KIND_I64;
    e[0].value.value.i64 = (int64_t)buckets_ms[b];
    e[1] = str_entry("x-dead-letter-exchange", amqp_cstring_bytes(""));
    e[2] = str_entry("x-dead-letter-routing-key", amqp_cstring_bytes(tx->queues[qidx]));
    amqp_table_t args = {3, e};
    amqp_queue_declare(tx->conn, CH_RPC, amqp_cstring_bytes(name), 0, 1, 0, 0, args);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(tx->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[256];
        reply_text(r, why, sizeof why);
        set_err(err, n, "declaring retry queue %s: %s", name, why);
        return -1;
    }
    *done = true;
    return 0;
}

static int do_publish(amqptx_t *tx, pub_t *p, char *err, size_t n)
{
    if (p->kind == P_RETRY && p->bucket >= 0 &&
        declare_retry_queue(tx, p->qidx, p->bucket, err, n) != 0)
        return -1;
    if (p->orig && p->orig_gen != atomic_load(&tx->gen)) {
        /* The original's channel is gone: it will be redelivered, so the copy must not be
         * made (it would be a duplicate). */
        p->status = SB_EIO;
        push_done(tx, p);
        return 0;
    }
    int rc = amqp_basic_publish(tx->conn, CH_PUBLISH, p->exchange, p->routing_key, p->mandatory, 0,
                                &p->props, p->body);
    if (rc != AMQP_STATUS_OK) {
        set_err(err, n, "publish: %s", amqp_error_string2(rc));
        p->status = SB_EIO;
        push_done(tx, p);
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
static void on_return(amqptx_t *tx, const amqp_basic_return_t *r)
{
    for (pub_t *p = tx->pend_head; p; p = p->next) {
        if (p->mandatory && !p->returned && p->routing_key.len == r->routing_key.len &&
            memcmp(p->routing_key.bytes, r->routing_key.bytes, r->routing_key.len) == 0) {
            p->returned = true;
            return;
        }
    }
}

/* ---- the connection (I/O thread) ------------------------------------------------------- */

static void log_io(int level, const char *fmt, ...) SB_PRINTF(2, 3);
static void log_io(int level, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sb__log(level, NULL, "amqp: %s", buf);
}

static int rpc_ok(amqptx_t *tx, const char *what, char *err, size_t n)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(tx->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    char why[300];
    reply_text(r, why, sizeof why);
    set_err(err, n, "%s: %s", what, why);
    return -1;
}

static amqp_table_t queue_args(amqptx_t *tx, amqp_table_entry_t e[2])
{
    int n = 0;
    if (tx->quorum)
        e[n++] = str_entry("x-queue-type", amqp_cstring_bytes("quorum"));
    if (tx->sac) {
        e[n].key = amqp_cstring_bytes("x-single-active-consumer");
        e[n].value.kind = AMQP_FIELD_KIND_BOOLEAN;
        e[n].value.value.boolean = 1;
        n++;
    }
    amqp_table_t t = {n, n ? e : NULL};
    return t;
}

static int declare_topology(amqptx_t *tx, char *err, size_t n)
{
    amqp_connection_state_t c = tx->conn;
    char what[700];
    amqp_boolean_t passive = tx->declare ? 0 : 1;
    amqp_exchange_declare(c, CH_RPC, amqp_cstring_bytes(tx->exchange), amqp_cstring_bytes("topic"),
                          passive, 1, 0, 0, amqp_empty_table);
    set_err(what, sizeof what, "%s exchange %s", passive ? "checking" : "declaring", tx->exchange);
    if (rpc_ok(tx, what, err, n))
        return -1;
    amqp_table_entry_t e[2];
    for (size_t i = 0; i < tx->n_queues; i++) {
        /* Only the queue switchboard owns gets the queue-type arguments. */
        amqp_table_t args = tx->patterns ? queue_args(tx, e) : amqp_empty_table;
        amqp_queue_declare(c, CH_RPC, amqp_cstring_bytes(tx->queues[i]), passive, 1, 0, 0,
                           passive ? amqp_empty_table : args);
        set_err(what, sizeof what, "%s queue %s", passive ? "checking" : "declaring",
                tx->queues[i]);
        if (rpc_ok(tx, what, err, n))
            return -1;
    }
    if (tx->declare) {
        if (tx->patterns) { /* our own queue: one binding per handler pattern */
            for (size_t k = 0; k < tx->n_patterns; k++) {
                amqp_queue_bind(c, CH_RPC, amqp_cstring_bytes(tx->queues[0]),
                                amqp_cstring_bytes(tx->exchange),
                                amqp_cstring_bytes(tx->patterns[k]), amqp_empty_table);
                set_err(what, sizeof what, "binding %s to %s with %s", tx->queues[0], tx->exchange,
                        tx->patterns[k]);
                if (rpc_ok(tx, what, err, n))
                    return -1;
            }
        } else { /* per-event queues: bound with their own name, as the .NET EventBus does */
            for (size_t i = 0; i < tx->n_queues; i++) {
                amqp_queue_bind(c, CH_RPC, amqp_cstring_bytes(tx->queues[i]),
                                amqp_cstring_bytes(tx->exchange), amqp_cstring_bytes(tx->queues[i]),
                                amqp_empty_table);
                set_err(what, sizeof what, "binding %s to %s", tx->queues[i], tx->exchange);
                if (rpc_ok(tx, what, err, n))
                    return -1;
            }
        }
    }
    /* Switchboard's own dead-letter infrastructure is always declared. */
    amqp_exchange_declare(c, CH_RPC, amqp_cstring_bytes(tx->dlx), amqp_cstring_bytes("topic"), 0, 1,
                          0, 0, amqp_empty_table);
    set_err(what, sizeof what, "declaring exchange %s", tx->dlx);
    if (rpc_ok(tx, what, err, n))
        return -1;
    amqp_queue_declare(c, CH_RPC, amqp_cstring_bytes(tx->dlq), 0, 1, 0, 0, amqp_empty_table);
    set_err(what, sizeof what, "declaring queue %s", tx->dlq);
    if (rpc_ok(tx, what, err, n))
        return -1;
    amqp_queue_bind(c, CH_RPC, amqp_cstring_bytes(tx->dlq), amqp_cstring_bytes(tx->dlx),
                    amqp_cstring_bytes("#"), amqp_empty_table);
    set_err(what, sizeof what, "binding %s to %s", tx->dlq, tx->dlx);
    return rpc_ok(tx, what, err, n);
}

static void io_close(amqptx_t *tx, bool graceful)
{
    if (!tx->conn)
        return;
    if (graceful) {
        struct timeval tv = {2, 0};
        amqp_set_rpc_timeout(tx->conn, &tv);
        amqp_channel_close(tx->conn, CH_CONSUME, AMQP_REPLY_SUCCESS);
        amqp_connection_close(tx->conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(tx->conn);
    tx->conn = NULL;
}

/* Connects and sets everything up. 0; -1 transient (retry); -2 fatal (refused by policy,
 * TLS, topology). */
static int io_connect(amqptx_t *tx, char *err, size_t n)
{
    amqp_connection_state_t c = amqp_new_connection();
    if (!c) {
        set_err(err, n, "out of memory");
        return -1;
    }
    tx->conn = c;
    amqp_socket_t *s = tx->tls ? amqp_ssl_socket_new(c) : amqp_tcp_socket_new(c);
    if (!s) {
        set_err(err, n, "cannot create the %s socket", tx->tls ? "TLS" : "TCP");
        return -1;
    }
    if (tx->tls) {
        if (tx->ca_file && amqp_ssl_socket_set_cacert(s, tx->ca_file) != AMQP_STATUS_OK) {
            set_err(err, n, "TLS: cannot load the CA file %s", tx->ca_file);
            return -2;
        }
        if (tx->cert_file && tx->key_file &&
            amqp_ssl_socket_set_key(s, tx->cert_file, tx->key_file) != AMQP_STATUS_OK) {
            set_err(err, n, "TLS: cannot load the client certificate %s / key %s", tx->cert_file,
                    tx->key_file);
            return -2;
        }
        amqp_ssl_socket_set_verify_peer(s, tx->verify);
        amqp_ssl_socket_set_verify_hostname(s, tx->verify);
    }
    struct timeval tv = {CONNECT_TIMEOUT_S, 0};
    int rc = amqp_socket_open_noblock(s, tx->ci.host, tx->ci.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        set_err(err, n, "cannot connect to %s:%d%s: %s", tx->ci.host, tx->ci.port,
                tx->tls ? " (TLS)" : "", amqp_error_string2(rc));
        bool tls_fail =
            rc == AMQP_STATUS_SSL_ERROR || rc == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED ||
            rc == AMQP_STATUS_SSL_PEER_VERIFY_FAILED || rc == AMQP_STATUS_SSL_CONNECTION_FAILED;
        return tls_fail ? -2 : -1;
    }
    amqp_set_rpc_timeout(c, &tv);
    amqp_table_entry_t props[1];
    props[0] = str_entry("connection_name", amqp_cstring_bytes(tx->consumer));
    amqp_table_t client_props = {1, props};
    amqp_rpc_reply_t r = amqp_login_with_properties(
        c, tx->ci.vhost, 16, FRAME_MAX, (int)tx->heartbeat_s, &client_props, AMQP_SASL_METHOD_PLAIN,
        tx->ci.user, tx->password ? tx->password : tx->ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[300];
        reply_text(r, why, sizeof why);
        set_err(err, n, "login to %s:%d vhost %s as %s refused: %s", tx->ci.host, tx->ci.port,
                tx->ci.vhost, tx->ci.user, why);
        /* A refused login is a closed socket for rabbitmq-c 0.11: treat it as fatal only
         * when the broker said so explicitly; otherwise it may be a restarting broker. */
        return r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION ? -2 : -1;
    }
    for (int ch = CH_CONSUME; ch <= CH_RPC; ch++) {
        amqp_channel_open(c, (amqp_channel_t)ch);
        if (rpc_ok(tx, "channel.open", err, n))
            return -1;
    }
    if (declare_topology(tx, err, n))
        return -2;
    amqp_confirm_select(c, CH_PUBLISH);
    if (rpc_ok(tx, "confirm.select", err, n))
        return -1;
    amqp_basic_qos(c, CH_CONSUME, 0, (uint16_t)tx->prefetch, 0);
    if (rpc_ok(tx, "basic.qos", err, n))
        return -1;
    for (size_t i = 0; i < tx->n_queues; i++) {
        char tag[32];
        snprintf(tag, sizeof tag, "sb-%zu", i);
        amqp_basic_consume(c, CH_CONSUME, amqp_cstring_bytes(tx->queues[i]),
                           amqp_cstring_bytes(tag), 0, 0, 0, amqp_empty_table);
        char what[600];
        set_err(what, sizeof what, "consuming %s", tx->queues[i]);
        if (rpc_ok(tx, what, err, n))
            return -2;
    }
    return 0;
}

/* ---- frames (I/O thread) --------------------------------------------------------------- */

static void batch_push(amqptx_t *tx, dlv_t *m)
{
    m->next = NULL;
    if (tx->io_tail)
        tx->io_tail->next = m;
    else
        tx->io_head = m;
    tx->io_tail = m;
}

static void batch_flush(amqptx_t *tx)
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

static void copy_short(char dst[256], amqp_bytes_t b)
{
    size_t n = b.len < 255 ? b.len : 255;
    if (n)
        memcpy(dst, b.bytes, n);
    dst[n] = '\0';
}

static int on_method(amqptx_t *tx, const amqp_frame_t *f, char *err, size_t n)
{
    switch (f->payload.method.id) {
    case AMQP_BASIC_DELIVER_METHOD: {
        const amqp_basic_deliver_t *d = f->payload.method.decoded;
        tx->asm_tag = d->delivery_tag;
        tx->asm_redelivered = d->redelivered;
        copy_short(tx->asm_exchange, d->exchange);
        copy_short(tx->asm_rk, d->routing_key);
        tx->asm_qidx = 0;
        if (d->consumer_tag.len > 3 && memcmp(d->consumer_tag.bytes, "sb-", 3) == 0) {
            unsigned long v = strtoul((const char *)d->consumer_tag.bytes + 3, NULL, 10);
            tx->asm_qidx = v < tx->n_queues ? (uint32_t)v : 0;
        }
        if (!win_reserve(&tx->win, d->delivery_tag)) {
            set_err(err, n, "out of memory growing the ack window");
            return -1;
        }
        if (d->delivery_tag >= tx->win.top)
            tx->win.top = d->delivery_tag + 1;
        tx->asm_want_header = true;
        return 0;
    }
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *a = f->payload.method.decoded;
        if (f->channel == CH_PUBLISH)
            on_confirm(tx, a->delivery_tag, a->multiple, true);
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *a = f->payload.method.decoded;
        if (f->channel == CH_PUBLISH)
            on_confirm(tx, a->delivery_tag, a->multiple, false);
        return 0;
    }
    case AMQP_BASIC_RETURN_METHOD:
        on_return(tx, f->payload.method.decoded);
        tx->ch2_want_header = true;
        return 0;
    case AMQP_CHANNEL_CLOSE_METHOD: {
        const amqp_channel_close_t *m = f->payload.method.decoded;
        set_err(err, n, "channel %u closed by the broker: %u %.*s", (unsigned)f->channel,
                m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        return -1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *m = f->payload.method.decoded;
        set_err(err, n, "connection closed by the broker: %u %.*s", m->reply_code,
                (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        return -1;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        set_err(err, n, "the broker cancelled the consumer (queue deleted?)");
        return -1;
    default:
        return 0;
    }
}

static int on_frame(amqptx_t *tx, const amqp_frame_t *f, char *err, size_t n)
{
    if (f->frame_type == AMQP_FRAME_METHOD)
        return on_method(tx, f, err, n);
    if (f->channel == CH_PUBLISH) { /* content of a basic.return: skip it */
        if (f->frame_type == AMQP_FRAME_HEADER && tx->ch2_want_header) {
            tx->ch2_want_header = false;
            tx->ch2_skip = f->payload.properties.body_size;
        } else if (f->frame_type == AMQP_FRAME_BODY) {
            size_t l = f->payload.body_fragment.len;
            tx->ch2_skip = l > tx->ch2_skip ? 0 : tx->ch2_skip - l;
        }
        return 0;
    }
    if (f->channel != CH_CONSUME)
        return 0;
    if (f->frame_type == AMQP_FRAME_HEADER) {
        if (!tx->asm_want_header)
            return 0;
        tx->asm_want_header = false;
        dlv_t *m = build_record(tx, f);
        if (!m) {
            set_err(err, n, "out of memory receiving a message of %" PRIu64 " bytes",
                    f->payload.properties.body_size);
            return -1;
        }
        tx->asm_body_got = 0;
        if (m->d.msg.body_len == 0)
            batch_push(tx, m);
        else
            tx->asm_rec = m;
        return 0;
    }
    if (f->frame_type == AMQP_FRAME_BODY && tx->asm_rec) {
        dlv_t *m = tx->asm_rec;
        size_t l = f->payload.body_fragment.len;
        size_t room = m->d.msg.body_len - tx->asm_body_got;
        if (l > room)
            l = room;
        memcpy((char *)m->d.msg.body + tx->asm_body_got, f->payload.body_fragment.bytes, l);
        tx->asm_body_got += l;
        if (tx->asm_body_got == m->d.msg.body_len) {
            tx->asm_rec = NULL;
            batch_push(tx, m);
        }
    }
    return 0;
}

/* Takes the loop's commands; false when asked to shut down. */
static int run_commands(amqptx_t *tx, bool *shutdown, char *err, size_t n)
{
    pthread_mutex_lock(&tx->mu);
    tx->io_wake_pending = false;
    size_t ns = tx->n_settles;
    settle_t *ss = NULL;
    if (ns) {
        ss = tx->settles;
        tx->settles = NULL;
        tx->n_settles = tx->cap_settles = 0;
    }
    pub_t *pq = tx->pq_head;
    tx->pq_head = tx->pq_tail = NULL;
    bool stop = tx->stop_req;
    tx->stop_req = false;
    *shutdown = tx->shutdown_req;
    pthread_mutex_unlock(&tx->mu);
    int rc = 0;
    uint32_t gen = atomic_load(&tx->gen);
    for (size_t i = 0; i < ns && rc == 0; i++)
        if (ss[i].gen == gen && tx->conn &&
            win_settle(tx, ss[i].tag, ss[i].nack) != AMQP_STATUS_OK) {
            set_err(err, n, "basic.nack failed");
            rc = -1;
        }
    sb_free(ss);
    while (pq) {
        pub_t *p = pq;
        pq = pq->next;
        if (rc == 0 && tx->conn) {
            if (do_publish(tx, p, err, n) != 0)
                rc = -1;
        } else {
            p->status = SB_EIO;
            push_done(tx, p);
        }
    }
    if (rc == 0 && stop && tx->conn) {
        for (size_t i = 0; i < tx->n_queues; i++) {
            char tag[32];
            snprintf(tag, sizeof tag, "sb-%zu", i);
            amqp_basic_cancel(tx->conn, CH_CONSUME, amqp_cstring_bytes(tag));
            if (rpc_ok(tx, "basic.cancel", err, n)) {
                rc = -1;
                break;
            }
        }
    }
    if (rc == 0 && tx->conn && win_flush(tx) != AMQP_STATUS_OK) {
        set_err(err, n, "basic.ack failed");
        rc = -1;
    }
    return rc;
}

/* Reads what is there without blocking. */
static int read_frames(amqptx_t *tx, char *err, size_t n)
{
    for (int i = 0; i < FRAMES_PER_ROUND; i++) {
        amqp_frame_t f;
        struct timeval zero = {0, 0};
        int rc = amqp_simple_wait_frame_noblock(tx->conn, &f, &zero);
        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        if (rc != AMQP_STATUS_OK) {
            set_err(err, n, "%s", amqp_error_string2(rc));
            return -1;
        }
        if (on_frame(tx, &f, err, n) != 0)
            return -1;
    }
    batch_flush(tx);
    amqp_maybe_release_buffers(tx->conn); /* everything was copied out */
    /* Confirms just read may have settled originals of retries and dead letters. */
    if (win_flush(tx) != AMQP_STATUS_OK) {
        set_err(err, n, "basic.ack failed");
        return -1;
    }
    return 0;
}

/* Runs one connection until it fails or shutdown; true on shutdown. */
static bool io_session(amqptx_t *tx)
{
    char err[512] = "";
    int fd = amqp_socket_get_sockfd(amqp_get_socket(tx->conn));
    int timeout = tx->heartbeat_s ? (int)(tx->heartbeat_s * 1000 / 4) : 1000;
    if (timeout > 1000 || timeout <= 0)
        timeout = 1000;
    for (;;) {
        bool shutdown = false;
        if (run_commands(tx, &shutdown, err, sizeof err) != 0)
            break;
        if (shutdown)
            return true;
        if (read_frames(tx, err, sizeof err) != 0)
            break;
        /* Commands may have queued frames (RPC replies read ahead): no sleeping then. */
        bool more = amqp_frames_enqueued(tx->conn) || amqp_data_in_buffer(tx->conn);
        struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN}, {.fd = tx->efd, .events = POLLIN}};
        int pr = poll(pfd, 2, more ? 0 : timeout);
        if (pr < 0 && errno != EINTR) {
            set_err(err, sizeof err, "poll: %s", strerror(errno));
            break;
        }
        if (pr > 0 && (pfd[1].revents & POLLIN)) {
            uint64_t v;
            ssize_t r = read(tx->efd, &v, sizeof v);
            (void)r;
        }
    }
    /* Connection lost. */
    atomic_store(&tx->ready, false);
    log_io(SB_LOG_WARN, "connection to %s:%d lost: %s; reconnecting", tx->ci.host, tx->ci.port,
           err);
    return false;
}

static void io_teardown(amqptx_t *tx)
{
    atomic_store(&tx->ready, false);
    io_close(tx, false);
    atomic_fetch_add(&tx->gen, 1);
    fail_pending(tx);
    if (tx->asm_rec) {
        sb_free(tx->asm_rec);
        tx->asm_rec = NULL;
    }
    tx->asm_want_header = false;
    tx->ch2_want_header = false;
    tx->ch2_skip = 0;
    while (tx->io_head) {
        dlv_t *m = tx->io_head;
        tx->io_head = m->next;
        sb_free(m);
    }
    tx->io_tail = NULL;
    win_reset(&tx->win);
    tx->pub_seq = 0;
    memset(tx->declared, 0, tx->n_queues * N_BUCKETS * sizeof *tx->declared);
}

static void start_report(amqptx_t *tx, int state, int rc, const char *err)
{
    pthread_mutex_lock(&tx->mu);
    if (tx->start_state == 0) {
        tx->start_state = state;
        tx->start_rc = rc;
        snprintf(tx->start_err, sizeof tx->start_err, "%s", err ? err : "");
        pthread_cond_broadcast(&tx->cv);
    }
    pthread_mutex_unlock(&tx->mu);
}

/* Sleeps up to ms, woken early by shutdown. True when shutdown was requested. */
static bool backoff_sleep(amqptx_t *tx, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    for (;;) {
        pthread_mutex_lock(&tx->mu);
        bool sd = tx->shutdown_req;
        pthread_mutex_unlock(&tx->mu);
        if (sd)
            return true;
        uint64_t now = now_ms();
        if (now >= end)
            return false;
        struct pollfd pfd = {.fd = tx->efd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(end - now)) > 0) {
            uint64_t v;
            ssize_t r = read(tx->efd, &v, sizeof v);
            (void)r;
        }
    }
}

/* Fails what the loop queued while disconnected (publishes) and drops stale settlements. */
static void drain_while_down(amqptx_t *tx)
{
    bool sd;
    char err[64];
    run_commands(tx, &sd, err, sizeof err);
}

static void *io_main(void *arg)
{
    amqptx_t *tx = arg;
    uint64_t backoff = BACKOFF_MIN_MS;
    bool first = true, was_up = false;
    for (;;) {
        char err[512] = "";
        int rc = io_connect(tx, err, sizeof err);
        if (rc == 0) {
            atomic_store(&tx->ready, true);
            if (was_up)
                log_io(SB_LOG_INFO, "reconnected to %s:%d", tx->ci.host, tx->ci.port);
            else
                log_io(SB_LOG_INFO, "connected to %s:%d, consuming %zu queue(s)", tx->ci.host,
                       tx->ci.port, tx->n_queues);
            start_report(tx, 1, SB_EOK, NULL);
            first = false;
            was_up = true;
            backoff = BACKOFF_MIN_MS;
            if (io_session(tx)) {
                /* Shutdown: settle what the loop decided, then close politely. */
                bool sd;
                run_commands(tx, &sd, err, sizeof err);
                atomic_store(&tx->ready, false);
                io_close(tx, true);
                fail_pending(tx);
                return NULL;
            }
            io_teardown(tx);
        } else {
            io_teardown(tx);
            if (first && rc == -2) {
                start_report(tx, -1, SB_ECONFIG, err);
                return NULL;
            }
            if (first) {
                log_io(SB_LOG_WARN, "%s; retrying in the background", err);
                start_report(tx, 1, SB_EOK, NULL);
                first = false;
            } else {
                log_io(SB_LOG_WARN, "%s; retrying in %" PRIu64 " ms", err, backoff);
            }
        }
        drain_while_down(tx);
        uint64_t jittered = backoff / 2 + xrand(tx) % (backoff / 2 + 1);
        if (backoff_sleep(tx, jittered))
            return NULL;
        drain_while_down(tx);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

/* ---- the loop side --------------------------------------------------------------------- */

static dlv_t *dlv_of(sb__delivery_t *d)
{
    return (dlv_t *)(void *)((char *)d - offsetof(dlv_t, d));
}

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

static void post_publish(amqptx_t *tx, pub_t *p)
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

static void pub_free(pub_t *p)
{
    empty_amqp_pool(&p->pool);
    sb_free(p);
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
        pub_free(p);
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
    if (pthread_create(&tx->thr, NULL, io_main, tx) != 0)
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

static int tx_retry_later(sb__transport_t *t, sb__delivery_t *d, uint64_t delay_ms,
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
        pub_free(p);
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
        snprintf(name, sizeof name, "%s.retry.%" PRIu64, q, buckets_ms[p->bucket]);
    else
        snprintf(name, sizeof name, "%s", q);
    p->exchange = amqp_empty_bytes; /* the default exchange: routing key = queue name */
    p->routing_key = pool_str(p, name, strlen(name));
    p->body = (amqp_bytes_t){d->msg.body_len, (void *)d->msg.body};
    p->mandatory = true;
    if (!p->routing_key.bytes) {
        pub_free(p);
        return SB_ENOMEM;
    }
    post_publish(tx, p);
    return SB_EOK;
}

static int tx_dead_letter(sb__transport_t *t, sb__delivery_t *d, const sb__dl_meta_t *meta,
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
        pub_free(p);
        return rc;
    }
    p->orig = m;
    p->orig_tag = m->tag;
    p->orig_gen = m->gen;
    p->qidx = m->qidx;
    p->exchange = amqp_cstring_bytes(tx->dlx);
    p->routing_key = pool_str(p, rk, strlen(rk));
    p->body = (amqp_bytes_t){d->msg.body_len, (void *)d->msg.body};
    p->mandatory = true;
    if (!p->routing_key.bytes) {
        pub_free(p);
        return SB_ENOMEM;
    }
    post_publish(tx, p);
    return SB_EOK;
}

static int tx_publish(sb__transport_t *t, const sb__outmsg_t *o, sb__tx_done_cb cb, void *arg)
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
        pub_free(p);
        return SB_ENOMEM;
    }
    if (nh) {
        pr->_flags |= AMQP_BASIC_HEADERS_FLAG;
        pr->headers.num_entries = nh;
        pr->headers.entries = e;
    }
    post_publish(tx, p);
    return SB_EOK;
}

static bool tx_ready(sb__transport_t *t)
{
    amqptx_t *tx = (amqptx_t *)t;
    return tx->started && !tx->stopped && atomic_load(&tx->ready);
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
            pub_free(p);
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
    .retry_later = tx_retry_later,
    .dead_letter = tx_dead_letter,
    .release = tx_release,
    .publish = tx_publish,
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
