/* kafka_produce.c: the producing side of the Kafka transport (see kafka_produce.h).
 *
 * Design:
 *  - retry_later "topic" produces a copy to <topic><retry_topic_suffix> with the original
 *    key, value and headers plus x-sb-attempts (attempts made) and x-sb-due-at (epoch ms);
 *    the consumer holds a retry partition until its head is due (transport_kafka.c). A copy
 *    of a copy keeps the first origin (x-sb-original-topic/-partition/-offset).
 *  - dead_letter produces to <topic><dlq_topic_suffix> with the original key, value and
 *    headers plus x-sb-reason, x-sb-error, x-sb-handler, x-sb-attempts, x-sb-consumer,
 *    x-sb-failed-at and the origin; headers a copy rewrites are never inherited twice.
 *  - Both go through the idempotent producer (enable.idempotence, acks=all); the original
 *    counts as settled only once the delivery report succeeded (a failure leaves it in
 *    flight and the settlement's callback gets SB_EIO). Follow-up events use the same
 *    producer, to the publish topic, with event-type, content-type, message-id and trace
 *    context headers.
 *  - Every produce carries a pending operation (kop_t) as its opaque, completed by the
 *    delivery report on the loop thread; an in-place retry's callback is queued the same
 *    way (sb__kafka_complete_later) and run at the next service turn.
 *
 * Not here: creating the producer or the topics (kafka_client.c), holding retry partitions
 * and in-place retries (transport_kafka.c). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "alloc_internal.h"
#include "switchboard/error.h"
#include "datetime.h"
#include "kafka_produce.h"
#include "log.h"

#define CLOSE_FLUSH_MS 10000

static const sb__header_t *find_header(const kmsg_t *m, const char *name)
{
    size_t n = strlen(name);
    const sb__header_t *found = NULL;
    for (size_t i = 0; i < m->d.msg.n_headers; i++)
        if (m->hdrs[i].name_len == n && !memcmp(m->hdrs[i].name, name, n))
            found = &m->hdrs[i]; /* the last one wins, as Kafka clients read them */
    return found;
}

/* Headers a copy does not inherit: they are rewritten. */
static bool rewritten(const sb__header_t *h, bool dead_letter)
{
    static const char *const retry_names[] = {"x-sb-attempts", "x-sb-due-at", NULL};
    static const char *const dl_names[] = {"x-sb-attempts",
                                           "x-sb-due-at",
                                           "x-sb-reason",
                                           "x-sb-error",
                                           "x-sb-handler",
                                           "x-sb-consumer",
                                           "x-sb-failed-at",
                                           "x-sb-original-topic",
                                           "x-sb-original-partition",
                                           "x-sb-original-offset",
                                           NULL};
    const char *const *names = dead_letter ? dl_names : retry_names;
    for (size_t i = 0; names[i]; i++)
        if (h->name_len == strlen(names[i]) && !memcmp(h->name, names[i], h->name_len))
            return true;
    return false;
}

static rd_kafka_headers_t *copy_headers(const kmsg_t *m, bool dead_letter, size_t extra)
{
    rd_kafka_headers_t *hs = rd_kafka_headers_new(m->d.msg.n_headers + extra);
    if (!hs)
        return NULL;
    for (size_t i = 0; i < m->d.msg.n_headers; i++) {
        const sb__header_t *h = &m->hdrs[i];
        if (!rewritten(h, dead_letter))
            rd_kafka_header_add(hs, h->name, (ssize_t)h->name_len, h->value, h->value_len);
    }
    return hs;
}

static void add_hdr(rd_kafka_headers_t *hs, const char *name, const char *value)
{
    rd_kafka_header_add(hs, name, -1, value, (ssize_t)strlen(value));
}

/* Adds the origin: kept from the message's x-sb-original-* headers when it is itself a
 * retry copy, else the message's own topic, partition and offset. */
static void add_origin(rd_kafka_headers_t *hs, const kmsg_t *m)
{
    static const char *const names[] = {"x-sb-original-topic", "x-sb-original-partition",
                                        "x-sb-original-offset"};
    char part[16], off[24];
    snprintf(part, sizeof part, "%" PRId32, m->d.partition);
    snprintf(off, sizeof off, "%" PRId64, m->d.offset);
    const char *own[] = {m->d.source, part, off};
    const sb__header_t *topic = find_header(m, names[0]);
    for (size_t i = 0; i < 3; i++) {
        const sb__header_t *h = topic ? find_header(m, names[i]) : NULL;
        if (h)
            rd_kafka_header_add(hs, names[i], -1, h->value, h->value_len);
        else
            add_hdr(hs, names[i], own[i]);
    }
}

static int produce(kafkatx_t *tx, const char *topic, const void *key, size_t key_len,
                   const void *value, size_t len, rd_kafka_headers_t *hs, kop_t *op)
{
    rd_kafka_resp_err_t err = rd_kafka_producev(
        tx->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_HEADERS(hs),
        RD_KAFKA_V_OPAQUE(op), RD_KAFKA_V_END);
    if (err) {
        sb__log(SB_LOG_WARN, NULL, "kafka: %s to %s refused: %s", op->what, topic,
                rd_kafka_err2str(err));
        rd_kafka_headers_destroy(hs);
        sb_free(op);
        return err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? SB_EBUSY : SB_EIO;
    }
    return SB_EOK;
}

static kop_t *new_op(kafkatx_t *tx, kmsg_t *m, op_kind_t kind, const char *what, sb__tx_done_cb cb,
                     void *arg)
{
    kop_t *op = sb_calloc(1, sizeof *op);
    if (op)
        *op = (kop_t){.tx = tx, .m = m, .kind = kind, .cb = cb, .arg = arg, .what = what};
    return op;
}

int sb__kafka_complete_later(kafkatx_t *tx, sb__tx_done_cb cb, void *arg)
{
    kop_t *c = new_op(tx, NULL, OP_SETTLE, "retry", cb, arg);
    if (!c)
        return SB_ENOMEM;
    c->status = SB_EOK;
    if (tx->compl_tail)
        tx->compl_tail->next = c;
    else
        tx->compl_head = c;
    tx->compl_tail = c;
    return SB_EOK;
}

static void run_completions(kafkatx_t *tx)
{
    kop_t *c = tx->compl_head;
    tx->compl_head = tx->compl_tail = NULL;
    while (c) {
        kop_t *next = c->next;
        sb__tx_done_cb cb = c->cb;
        void *arg = c->arg;
        int status = c->status;
        sb_free(c);
        if (cb)
            cb(arg, status);
        c = next;
    }
}

void sb__kafka_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    kop_t *op = rkm->_private;
    if (!op)
        return;
    kafkatx_t *tx = op->tx;
    if (tx->destroying) {
        sb_free(op);
        return;
    }
    int status = SB_EOK;
    if (rkm->err) {
        status = SB_EIO;
        sb__log(SB_LOG_WARN, NULL, "kafka: %s to %s failed: %s (%s)", op->what,
                rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "?", rd_kafka_err2str(rkm->err),
                rd_kafka_err2name(rkm->err));
    }
    if (op->kind == OP_SETTLE && status == SB_EOK) {
        tx->n_dispatched--;
        sb__kafka_settle_done(tx, op->m);
    }
    sb__tx_done_cb cb = op->cb;
    void *arg = op->arg;
    sb_free(op);
    if (cb)
        cb(arg, status);
}

int sb__kafka_retry_copy(kafkatx_t *tx, kmsg_t *m, uint64_t delay_ms, unsigned next_attempt,
                         sb__tx_done_cb cb, void *arg)
{
    sb__delivery_t *d = &m->d;
    char *topic = sb__strjoin(m->kp->base_topic, tx->retry_suffix);
    kop_t *op = new_op(tx, m, OP_SETTLE, "retry", cb, arg);
    rd_kafka_headers_t *hs = topic && op ? copy_headers(m, false, 5) : NULL;
    if (!hs) {
        sb_free(topic);
        sb_free(op);
        return SB_ENOMEM;
    }
    char attempts[16], due[24];
    snprintf(attempts, sizeof attempts, "%u", next_attempt ? next_attempt - 1 : 0);
    snprintf(due, sizeof due, "%" PRId64, sb__datetime_now_us() / 1000 + (int64_t)delay_ms);
    add_hdr(hs, "x-sb-attempts", attempts);
    add_hdr(hs, "x-sb-due-at", due);
    if (!find_header(m, "x-sb-original-topic"))
        add_origin(hs, m);
    int rc = produce(tx, topic, m->rkm->key, m->rkm->key_len, d->msg.body, d->msg.body_len, hs, op);
    sb_free(topic);
    return rc;
}

int sb__kafka_dead_letter(sb__transport_t *t, sb__delivery_t *d, const sb__dl_meta_t *meta,
                          sb__tx_done_cb cb, void *arg)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    kmsg_t *m = (kmsg_t *)d;
    if (!meta)
        return SB_EINVAL;
    if (m->orphan) {
        /* Its partition went to another member, which fetches it again from the committed
         * offset and decides there: a dead letter from here would be a second copy. */
        if (sb__kafka_complete_later(tx, cb, arg) != SB_EOK)
            return SB_ENOMEM;
        tx->n_dispatched--;
        sb__kafka_settle_done(tx, m);
        return SB_EOK;
    }
    char *topic = sb__strjoin(m->kp->base_topic, tx->dlq_suffix);
    kop_t *op = new_op(tx, m, OP_SETTLE, "dead-letter", cb, arg);
    rd_kafka_headers_t *hs = topic && op ? copy_headers(m, true, 10) : NULL;
    if (!hs) {
        sb_free(topic);
        sb_free(op);
        return SB_ENOMEM;
    }
    char attempts[16], failed_at[32];
    snprintf(attempts, sizeof attempts, "%u", meta->attempts);
    sb__datetime_format(meta->failed_at_us ? meta->failed_at_us : sb__datetime_now_us(), failed_at);
    add_hdr(hs, "x-sb-reason", meta->reason ? meta->reason : "");
    add_hdr(hs, "x-sb-error", meta->error ? meta->error : "");
    if (meta->handler)
        add_hdr(hs, "x-sb-handler", meta->handler);
    add_hdr(hs, "x-sb-attempts", attempts);
    add_hdr(hs, "x-sb-consumer", meta->consumer ? meta->consumer : "");
    add_hdr(hs, "x-sb-failed-at", failed_at);
    add_origin(hs, m);
    int rc = produce(tx, topic, m->rkm->key, m->rkm->key_len, d->msg.body, d->msg.body_len, hs, op);
    sb_free(topic);
    return rc;
}

int sb__kafka_publish(sb__transport_t *t, const sb__outmsg_t *o, sb__tx_done_cb cb, void *arg)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    if (!o || !o->type || (!o->body && o->body_len))
        return SB_EINVAL;
    if (!tx->producer || !tx->publish_topic || !*tx->publish_topic)
        return SB_ESTATE;
    kop_t *op = new_op(tx, NULL, OP_PUBLISH, "publish", cb, arg);
    rd_kafka_headers_t *hs = op ? rd_kafka_headers_new(5) : NULL;
    if (!hs) {
        sb_free(op);
        return SB_ENOMEM;
    }
    add_hdr(hs, "event-type", o->type);
    add_hdr(hs, "content-type", "application/json");
    if (o->id)
        add_hdr(hs, "message-id", o->id);
    if (o->traceparent)
        add_hdr(hs, "traceparent", o->traceparent);
    if (o->tracestate)
        add_hdr(hs, "tracestate", o->tracestate);
    return produce(tx, tx->publish_topic, o->key, o->key ? strlen(o->key) : 0,
                   o->body ? o->body : "", o->body_len, hs, op);
}

void sb__kafka_produce_poll(kafkatx_t *tx)
{
    if (tx->producer)
        rd_kafka_poll(tx->producer, 0); /* delivery reports, logs */
    run_completions(tx);
}

void sb__kafka_produce_close(kafkatx_t *tx)
{
    if (tx->producer) {
        if (tx->pq)
            rd_kafka_queue_io_event_enable(tx->pq, -1, NULL, 0);
        if (rd_kafka_flush(tx->producer, CLOSE_FLUSH_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            sb__log(SB_LOG_WARN, NULL, "kafka: %d produced messages unconfirmed at exit",
                    rd_kafka_outq_len(tx->producer));
            rd_kafka_purge(tx->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_flush(tx->producer, 1000);
        }
        if (tx->pq)
            rd_kafka_queue_destroy(tx->pq);
        rd_kafka_destroy(tx->producer);
    }
    tx->producer = NULL;
    tx->pq = NULL;
    for (kop_t *c = tx->compl_head, *next; c; c = next) {
        next = c->next;
        sb_free(c);
    }
    tx->compl_head = tx->compl_tail = NULL;
}
