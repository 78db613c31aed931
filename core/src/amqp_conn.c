/* amqp_conn.c: the RabbitMQ transport's I/O thread: its connection and its loop.
 *
 * Design: rabbitmq-c's API is blocking (connect, login, every RPC, and socket writes, which
 * loop until the bytes are out), so nothing of it runs on the libevent loop. The I/O thread
 * owns the amqp_connection_state_t entirely: it connects (amqp:// or amqps:// with CA,
 * client certificate and peer + host name verification), declares the topology on an RPC
 * channel (3), sets basic.qos and consumes on channel 1, and puts channel 2 in confirm mode
 * for amqp_publish.c. It then poll()s the socket and an eventfd: frames are drained with
 * amqp_simple_wait_frame_noblock() (zero timeout; that call also sends heartbeats and
 * detects a silent broker, so the poll timeout is at most half the heartbeat), and the
 * commands the loop queued (settlements, publishes, stop) are executed.
 *
 * Reconnect: on any connection or channel error (a channel error closes everything, which
 * keeps the state machine small), the thread tears the connection down, bumps the
 * generation, fails outstanding publishes, and reconnects with exponential backoff and
 * jitter (100 ms doubling up to 10 s).
 *
 * It does not: use channel.flow, support several hosts in one URL, or build deliveries and
 * publishes itself (transport_amqp.c and amqp_publish.c do; this file only routes frames). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "amqp_tx.h"
#include "log.h"

#define FRAME_MAX         131072
#define CONNECT_TIMEOUT_S 10
#define BACKOFF_MIN_MS    100
#define BACKOFF_MAX_MS    10000
#define FRAMES_PER_ROUND  512

/* ---- small helpers --------------------------------------------------------------------- */

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

/* Error text into a caller's buffer; truncation is fine (a vsnprintf wrapper, so that
 * gcc's -Wformat-truncation does not demand exact buffer arithmetic for log text). */
void sb__amqptx_set_err(char *buf, size_t n, const char *fmt, ...)
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
        sb__amqptx_set_err(buf, n, "ok");
        return;
    case AMQP_RESPONSE_NONE:
        sb__amqptx_set_err(buf, n, "missing RPC reply");
        return;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        sb__amqptx_set_err(buf, n, "%s", amqp_error_string2(r.library_error));
        return;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            sb__amqptx_set_err(buf, n, "connection closed by the broker: %u %.*s", m->reply_code,
                               (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            sb__amqptx_set_err(buf, n, "channel closed by the broker: %u %.*s", m->reply_code,
                               (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            sb__amqptx_set_err(buf, n, "unexpected broker method 0x%08x", (unsigned)r.reply.id);
        }
        return;
    }
    sb__amqptx_set_err(buf, n, "unknown RPC reply");
}

/* ---- retry queues (I/O thread, declared on first use) ---------------------------------- */

int sb__amqptx_declare_retry_queue(amqptx_t *tx, uint32_t qidx, int b, char *err, size_t n)
{
    bool *done = &tx->declared[qidx * N_BUCKETS + (size_t)b];
    if (*done)
        return 0;
    char name[600];
    snprintf(name, sizeof name, "%s.retry.%" PRIu64, tx->queues[qidx], sb__amqptx_buckets_ms[b]);
    amqp_table_entry_t e[3];
    e[0].key = amqp_cstring_bytes("x-message-ttl");
    e[0].value.kind = AMQP_FIELD_KIND_I64;
    e[0].value.value.i64 = (int64_t)sb__amqptx_buckets_ms[b];
    e[1] = str_entry("x-dead-letter-exchange", amqp_cstring_bytes(""));
    e[2] = str_entry("x-dead-letter-routing-key", amqp_cstring_bytes(tx->queues[qidx]));
    amqp_table_t args = {3, e};
    amqp_queue_declare(tx->conn, CH_RPC, amqp_cstring_bytes(name), 0, 1, 0, 0, args);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(tx->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[256];
        reply_text(r, why, sizeof why);
        sb__amqptx_set_err(err, n, "declaring retry queue %s: %s", name, why);
        return -1;
    }
    *done = true;
    return 0;
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
    sb__amqptx_set_err(err, n, "%s: %s", what, why);
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
    sb__amqptx_set_err(what, sizeof what, "%s exchange %s", passive ? "checking" : "declaring",
                       tx->exchange);
    if (rpc_ok(tx, what, err, n))
        return -1;
    amqp_table_entry_t e[2];
    for (size_t i = 0; i < tx->n_queues; i++) {
        /* Only the queue switchboard owns gets the queue-type arguments. */
        amqp_table_t args = tx->patterns ? queue_args(tx, e) : amqp_empty_table;
        amqp_queue_declare(c, CH_RPC, amqp_cstring_bytes(tx->queues[i]), passive, 1, 0, 0,
                           passive ? amqp_empty_table : args);
        sb__amqptx_set_err(what, sizeof what, "%s queue %s", passive ? "checking" : "declaring",
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
                sb__amqptx_set_err(what, sizeof what, "binding %s to %s with %s", tx->queues[0],
                                   tx->exchange, tx->patterns[k]);
                if (rpc_ok(tx, what, err, n))
                    return -1;
            }
        } else { /* per-event queues: bound with their own name, as the .NET EventBus does */
            for (size_t i = 0; i < tx->n_queues; i++) {
                amqp_queue_bind(c, CH_RPC, amqp_cstring_bytes(tx->queues[i]),
                                amqp_cstring_bytes(tx->exchange), amqp_cstring_bytes(tx->queues[i]),
                                amqp_empty_table);
                sb__amqptx_set_err(what, sizeof what, "binding %s to %s", tx->queues[i],
                                   tx->exchange);
                if (rpc_ok(tx, what, err, n))
                    return -1;
            }
        }
    }
    /* Switchboard's own dead-letter infrastructure is always declared. */
    amqp_exchange_declare(c, CH_RPC, amqp_cstring_bytes(tx->dlx), amqp_cstring_bytes("topic"), 0, 1,
                          0, 0, amqp_empty_table);
    sb__amqptx_set_err(what, sizeof what, "declaring exchange %s", tx->dlx);
    if (rpc_ok(tx, what, err, n))
        return -1;
    amqp_queue_declare(c, CH_RPC, amqp_cstring_bytes(tx->dlq), 0, 1, 0, 0, amqp_empty_table);
    sb__amqptx_set_err(what, sizeof what, "declaring queue %s", tx->dlq);
    if (rpc_ok(tx, what, err, n))
        return -1;
    amqp_queue_bind(c, CH_RPC, amqp_cstring_bytes(tx->dlq), amqp_cstring_bytes(tx->dlx),
                    amqp_cstring_bytes("#"), amqp_empty_table);
    sb__amqptx_set_err(what, sizeof what, "binding %s to %s", tx->dlq, tx->dlx);
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
        sb__amqptx_set_err(err, n, "out of memory");
        return -1;
    }
    tx->conn = c;
    amqp_socket_t *s = tx->tls ? amqp_ssl_socket_new(c) : amqp_tcp_socket_new(c);
    if (!s) {
        sb__amqptx_set_err(err, n, "cannot create the %s socket", tx->tls ? "TLS" : "TCP");
        return -1;
    }
    if (tx->tls) {
        if (tx->ca_file && amqp_ssl_socket_set_cacert(s, tx->ca_file) != AMQP_STATUS_OK) {
            sb__amqptx_set_err(err, n, "TLS: cannot load the CA file %s", tx->ca_file);
            return -2;
        }
        if (tx->cert_file && tx->key_file &&
            amqp_ssl_socket_set_key(s, tx->cert_file, tx->key_file) != AMQP_STATUS_OK) {
            sb__amqptx_set_err(err, n, "TLS: cannot load the client certificate %s / key %s",
                               tx->cert_file, tx->key_file);
            return -2;
        }
        amqp_ssl_socket_set_verify_peer(s, tx->verify);
        amqp_ssl_socket_set_verify_hostname(s, tx->verify);
    }
    struct timeval tv = {CONNECT_TIMEOUT_S, 0};
    int rc = amqp_socket_open_noblock(s, tx->ci.host, tx->ci.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        sb__amqptx_set_err(err, n, "cannot connect to %s:%d%s: %s", tx->ci.host, tx->ci.port,
                           tx->tls ? " (TLS)" : "", amqp_error_string2(rc));
        bool tls_fail =
            rc == AMQP_STATUS_SSL_ERROR || rc == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED ||
            rc == AMQP_STATUS_SSL_PEER_VERIFY_FAILED || rc == AMQP_STATUS_SSL_CONNECTION_FAILED;
        return tls_fail ? -2 : -1;
    }
    amqp_set_rpc_timeout(c, &tv);
    /* connection.blocked: the broker tells us when a resource alarm (memory, disk) stops it
     * from reading our publishes, instead of leaving them to hang unexplained. */
    amqp_table_entry_t caps[1] = {
        {.key = amqp_cstring_bytes("connection.blocked"),
         .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value = {.boolean = 1}}}};
    amqp_table_entry_t props[2];
    props[0] = str_entry("connection_name", amqp_cstring_bytes(tx->consumer));
    props[1] = (amqp_table_entry_t){
        .key = amqp_cstring_bytes("capabilities"),
        .value = {.kind = AMQP_FIELD_KIND_TABLE, .value = {.table = {1, caps}}}};
    amqp_table_t client_props = {2, props};
    amqp_rpc_reply_t r = amqp_login_with_properties(
        c, tx->ci.vhost, 16, FRAME_MAX, (int)tx->heartbeat_s, &client_props, AMQP_SASL_METHOD_PLAIN,
        tx->ci.user, tx->password ? tx->password : tx->ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[300];
        reply_text(r, why, sizeof why);
        sb__amqptx_set_err(err, n, "login to %s:%d vhost %s as %s refused: %s", tx->ci.host,
                           tx->ci.port, tx->ci.vhost, tx->ci.user, why);
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
        sb__amqptx_set_err(what, sizeof what, "consuming %s", tx->queues[i]);
        if (rpc_ok(tx, what, err, n))
            return -2;
    }
    return 0;
}

/* ---- frames and commands (I/O thread) -------------------------------------------------- */

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
        if (!sb__amqptx_win_reserve(&tx->win, d->delivery_tag)) {
            sb__amqptx_set_err(err, n, "out of memory growing the ack window");
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
            sb__amqptx_pub_confirm(tx, a->delivery_tag, a->multiple, true);
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *a = f->payload.method.decoded;
        if (f->channel == CH_PUBLISH)
            sb__amqptx_pub_confirm(tx, a->delivery_tag, a->multiple, false);
        return 0;
    }
    case AMQP_BASIC_RETURN_METHOD:
        sb__amqptx_pub_returned(tx, f->payload.method.decoded);
        tx->ch2_want_header = true;
        return 0;
    case AMQP_CHANNEL_CLOSE_METHOD: {
        const amqp_channel_close_t *m = f->payload.method.decoded;
        sb__amqptx_set_err(err, n, "channel %u closed by the broker: %u %.*s", (unsigned)f->channel,
                           m->reply_code, (int)m->reply_text.len,
                           (const char *)m->reply_text.bytes);
        return -1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *m = f->payload.method.decoded;
        sb__amqptx_set_err(err, n, "connection closed by the broker: %u %.*s", m->reply_code,
                           (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        return -1;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        sb__amqptx_set_err(err, n, "the broker cancelled the consumer (queue deleted?)");
        return -1;
    case AMQP_CONNECTION_BLOCKED_METHOD: {
        const amqp_connection_blocked_t *m = f->payload.method.decoded;
        atomic_store(&tx->blocked, true);
        log_io(SB_LOG_WARN,
               "broker %s:%d blocked the connection (%.*s): retries, dead letters and "
               "follow-ups wait, and so does every message that needs one; not ready until "
               "it is unblocked",
               tx->ci.host, tx->ci.port, (int)m->reason.len, (const char *)m->reason.bytes);
        return 0;
    }
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        atomic_store(&tx->blocked, false);
        log_io(SB_LOG_INFO, "broker %s:%d unblocked the connection", tx->ci.host, tx->ci.port);
        return 0;
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
        dlv_t *m = sb__amqptx_build_record(tx, f);
        if (!m) {
            sb__amqptx_set_err(err, n, "out of memory receiving a message of %" PRIu64 " bytes",
                               f->payload.properties.body_size);
            return -1;
        }
        tx->asm_body_got = 0;
        if (m->d.msg.body_len == 0)
            sb__amqptx_batch_push(tx, m);
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
            sb__amqptx_batch_push(tx, m);
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
            sb__amqptx_win_settle(tx, ss[i].tag, ss[i].nack) != AMQP_STATUS_OK) {
            sb__amqptx_set_err(err, n, "basic.nack failed");
            rc = -1;
        }
    sb_free(ss);
    while (pq) {
        pub_t *p = pq;
        pq = pq->next;
        if (rc == 0 && tx->conn) {
            if (sb__amqptx_pub_send(tx, p, err, n) != 0)
                rc = -1;
        } else {
            p->status = SB_EIO;
            sb__amqptx_pub_done(tx, p);
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
    if (rc == 0 && tx->conn && sb__amqptx_win_flush(tx) != AMQP_STATUS_OK) {
        sb__amqptx_set_err(err, n, "basic.ack failed");
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
            sb__amqptx_set_err(err, n, "%s", amqp_error_string2(rc));
            return -1;
        }
        if (on_frame(tx, &f, err, n) != 0)
            return -1;
    }
    sb__amqptx_batch_flush(tx);
    amqp_maybe_release_buffers(tx->conn); /* everything was copied out */
    /* Confirms just read may have settled originals of retries and dead letters. */
    if (sb__amqptx_win_flush(tx) != AMQP_STATUS_OK) {
        sb__amqptx_set_err(err, n, "basic.ack failed");
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
            sb__amqptx_set_err(err, sizeof err, "poll: %s", strerror(errno));
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
    atomic_store(&tx->blocked, false); /* a new connection starts unblocked */
    io_close(tx, false);
    atomic_fetch_add(&tx->gen, 1);
    sb__amqptx_pub_fail_pending(tx);
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
    sb__amqptx_win_reset(&tx->win);
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

void *sb__amqptx_io_main(void *arg)
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
                sb__amqptx_pub_fail_pending(tx);
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
