/* amqp_tx.h: the RabbitMQ transport's private state, shared by its three files.
 *
 *  - transport_amqp.c: the ops table, deliveries (records built from frames, handed to the
 *    loop in batches), the ack window, and the loop side of every hand-off;
 *  - amqp_conn.c: the I/O thread: connection, TLS, login, topology, frame pump, commands,
 *    reconnect with backoff;
 *  - amqp_publish.c: the confirm channel: retries, dead letters and follow-ups.
 *
 * Design: one struct (amqptx_t) whose fields are fenced by the thread that owns them
 * (immutable after new, shared under mu, loop thread only, I/O thread only), so the files
 * share state without widening parameter lists. It is not an interface: nothing outside
 * these three files includes it. */
#ifndef SB_AMQP_TX_H
#define SB_AMQP_TX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "switchboard/common.h"
#include "transport_amqp.h"

struct event_base;
struct event;

#define CH_CONSUME 1
#define CH_PUBLISH 2
#define CH_RPC     3
#define N_BUCKETS  ((size_t)18) /* retry delay buckets (amqp_publish.c) */

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
    atomic_bool blocked; /* the broker sent connection.blocked (a resource alarm) */
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

static inline dlv_t *dlv_of(sb__delivery_t *d)
{
    return (dlv_t *)(void *)((char *)d - offsetof(dlv_t, d));
}

static inline bool key_is(amqp_bytes_t k, const char *name)
{
    size_t n = strlen(name);
    return k.len == n && memcmp(k.bytes, name, n) == 0;
}

static inline amqp_table_entry_t str_entry(const char *k, amqp_bytes_t v)
{
    amqp_table_entry_t e;
    e.key = amqp_cstring_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = v;
    return e;
}

/* ---- transport_amqp.c: deliveries and the ack window ------------------------------------ */

/* I/O thread. The record of a message whose header frame just arrived on channel 1 (the
 * delivery's method fields are in tx->asm_*); NULL on ENOMEM. */
dlv_t *sb__amqptx_build_record(amqptx_t *tx, const amqp_frame_t *f);
/* I/O thread. Collects a complete delivery; flush hands the batch to the loop. */
void sb__amqptx_batch_push(amqptx_t *tx, dlv_t *m);
void sb__amqptx_batch_flush(amqptx_t *tx);
/* I/O thread. The ack window: reserve room for a new tag (false on ENOMEM), forget
 * everything (new connection), record a settlement (a nack goes out at once), send what the
 * settled prefix allows. The int results are rabbitmq-c statuses. */
bool sb__amqptx_win_reserve(ackwin_t *w, uint64_t tag);
void sb__amqptx_win_reset(ackwin_t *w);
int sb__amqptx_win_settle(amqptx_t *tx, uint64_t tag, bool nack);
int sb__amqptx_win_flush(amqptx_t *tx);
/* Loop thread. Queues a publish for the I/O thread and wakes it; ownership transferred. */
void sb__amqptx_post_publish(amqptx_t *tx, pub_t *p);

/* ---- amqp_conn.c: the I/O thread ---------------------------------------------------------- */

/* The I/O thread's entry point (arg: the amqptx_t). */
void *sb__amqptx_io_main(void *arg);
/* Error text into a caller's buffer; truncation is fine. */
void sb__amqptx_set_err(char *buf, size_t n, const char *fmt, ...) SB_PRINTF(3, 4);
/* I/O thread. Declares `<queue>.retry.<bucket>` once per connection. 0, or -1 with err. */
int sb__amqptx_declare_retry_queue(amqptx_t *tx, uint32_t qidx, int b, char *err, size_t n);

/* ---- amqp_publish.c: the confirm channel -------------------------------------------------- */

extern const uint64_t sb__amqptx_buckets_ms[]; /* N_BUCKETS entries, ascending */

/* I/O thread. Publishes p on channel 2 (it then awaits its confirm), or completes it with
 * SB_EIO; ownership transferred. 0, or -1 with err when the connection must be dropped. */
int sb__amqptx_pub_send(amqptx_t *tx, pub_t *p, char *err, size_t n);
/* I/O thread. Hands a completed publish to the loop (its callback runs there). */
void sb__amqptx_pub_done(amqptx_t *tx, pub_t *p);
/* I/O thread. A basic.ack / basic.nack on channel 2, a basic.return, a lost connection. */
void sb__amqptx_pub_confirm(amqptx_t *tx, uint64_t tag, bool multiple, bool ok);
void sb__amqptx_pub_returned(amqptx_t *tx, const amqp_basic_return_t *r);
void sb__amqptx_pub_fail_pending(amqptx_t *tx);
/* Any thread that owns p. */
void sb__amqptx_pub_free(pub_t *p);
/* Loop thread: the ops table's retry_later, dead_letter and publish. */
int sb__amqptx_retry_later(sb__transport_t *t, sb__delivery_t *d, uint64_t delay_ms,
                           unsigned next_attempt, sb__tx_done_cb cb, void *arg);
int sb__amqptx_dead_letter(sb__transport_t *t, sb__delivery_t *d, const sb__dl_meta_t *meta,
                           sb__tx_done_cb cb, void *arg);
int sb__amqptx_publish(sb__transport_t *t, const sb__outmsg_t *o, sb__tx_done_cb cb, void *arg);

#endif
