/* sbtest_amqp.c: see sbtest_amqp.h. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp.h>
#include <amqp_framing.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

/* Reads frames until the confirms reach `upto` (counting multiple acks); -1 on a nack or
 * an error. */
static int wait_confirms(amqp_connection_state_t c, uint64_t *confirmed, uint64_t upto)
{
    while (*confirmed < upto) {
        amqp_frame_t f;
        struct timeval tv = {30, 0};
        int rc = amqp_simple_wait_frame_noblock(c, &f, &tv);
        if (rc != AMQP_STATUS_OK) {
            fprintf(stderr, "amqp: waiting for confirms: %s\n", amqp_error_string2(rc));
            return -1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            /* RabbitMQ confirms in order on one channel, so the tag is the count. */
            if (a->delivery_tag > *confirmed)
                *confirmed = a->delivery_tag;
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            fprintf(stderr, "amqp: publish nacked\n");
            return -1;
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
            fprintf(stderr, "amqp: channel closed while publishing\n");
            return -1;
        }
        amqp_maybe_release_buffers(c);
    }
    return 0;
}

int sbt_amqp_publish_many(amqp_connection_state_t c, const char *exchange,
                          const char *const *routing_keys, bool one_key, const char *const *bodies,
                          const char *const *message_ids, size_t n, const char *hdr_name,
                          const char *hdr_value)
{
    /* sbt_amqp_connect's earlier single publishes may have used sequence numbers: count
     * from a fresh channel's view by reading the broker's next ack values relative to 0 is
     * not possible, so use a channel of our own. */
    static amqp_channel_t next_ch = 10;
    amqp_channel_t ch = next_ch++;
    amqp_channel_open(c, ch);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL)
        return -1;
    amqp_confirm_select(c, ch);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL)
        return -1;
    uint64_t confirmed = 0;
    amqp_table_entry_t e;
    for (size_t i = 0; i < n; i++) {
        amqp_basic_properties_t p;
        memset(&p, 0, sizeof p);
        p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
        p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
        p.timestamp = (uint64_t)time(NULL);
        if (message_ids && message_ids[i]) {
            p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
            p.message_id = amqp_cstring_bytes(message_ids[i]);
        }
        if (hdr_name) {
            e.key = amqp_cstring_bytes(hdr_name);
            e.value.kind = AMQP_FIELD_KIND_UTF8;
            e.value.value.bytes = amqp_cstring_bytes(hdr_value);
            p._flags |= AMQP_BASIC_HEADERS_FLAG;
            p.headers.num_entries = 1;
            p.headers.entries = &e;
        }
        const char *rk = one_key ? routing_keys[0] : routing_keys[i];
        amqp_bytes_t body = {strlen(bodies[i]), (void *)bodies[i]};
        if (amqp_basic_publish(c, ch, amqp_cstring_bytes(exchange), amqp_cstring_bytes(rk), 0, 0,
                               &p, body) != AMQP_STATUS_OK)
            return -1;
        if (i + 1 >= confirmed + 1000 && wait_confirms(c, &confirmed, i + 1 - 500) != 0)
            return -1;
    }
    int rc = wait_confirms(c, &confirmed, n);
    amqp_channel_close(c, ch, AMQP_REPLY_SUCCESS);
    return rc;
}

static char *dupn(const void *s, size_t n)
{
    char *d = malloc(n + 1);
    SBT_CHECK(d != NULL);
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

sbt_amqp_msg_t *sbt_amqp_get_msg(amqp_connection_state_t c, const char *queue, int timeout_ms)
{
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        amqp_maybe_release_buffers(c);
        amqp_rpc_reply_t r = amqp_basic_get(c, 1, amqp_cstring_bytes(queue), 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            return NULL;
        if (r.reply.id == AMQP_BASIC_GET_OK_METHOD) {
            amqp_basic_get_ok_t *ok = r.reply.decoded;
            uint64_t tag = ok->delivery_tag;
            sbt_amqp_msg_t *m = calloc(1, sizeof *m);
            SBT_CHECK(m != NULL);
            m->routing_key = dupn(ok->routing_key.bytes, ok->routing_key.len);
            m->exchange = dupn(ok->exchange.bytes, ok->exchange.len);
            amqp_message_t msg;
            r = amqp_read_message(c, 1, &msg, 0);
            SBT_CHECK(r.reply_type == AMQP_RESPONSE_NORMAL);
            m->body = dupn(msg.body.bytes, msg.body.len);
            m->len = msg.body.len;
            amqp_basic_properties_t *p = &msg.properties;
            if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
                m->message_id = dupn(p->message_id.bytes, p->message_id.len);
            m->persistent = (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) && p->delivery_mode == 2;
            if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
                int nh = p->headers.num_entries;
                m->names = calloc((size_t)nh + 1, sizeof *m->names);
                m->values = calloc((size_t)nh + 1, sizeof *m->values);
                SBT_CHECK(m->names && m->values);
                for (int i = 0; i < nh; i++) {
                    amqp_table_entry_t *e = &p->headers.entries[i];
                    char buf[64];
                    const char *v = NULL;
                    size_t vl = 0;
                    switch (e->value.kind) {
                    case AMQP_FIELD_KIND_UTF8:
                    case AMQP_FIELD_KIND_BYTES:
                        v = e->value.value.bytes.bytes;
                        vl = e->value.value.bytes.len;
                        break;
                    case AMQP_FIELD_KIND_I64:
                        vl = (size_t)snprintf(buf, sizeof buf, "%" PRId64, e->value.value.i64);
                        v = buf;
                        break;
                    case AMQP_FIELD_KIND_I32:
                        vl = (size_t)snprintf(buf, sizeof buf, "%" PRId32, e->value.value.i32);
                        v = buf;
                        break;
                    default:
                        continue;
                    }
                    m->names[m->n_headers] = dupn(e->key.bytes, e->key.len);
                    m->values[m->n_headers] = dupn(v ? v : "", vl);
                    m->n_headers++;
                }
            }
            amqp_destroy_message(&msg);
            amqp_basic_ack(c, 1, tag, 0);
            return m;
        }
        if (sbt_now_ms() >= deadline)
            return NULL;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

const char *sbt_amqp_msg_header(const sbt_amqp_msg_t *m, const char *name)
{
    for (size_t i = 0; i < m->n_headers; i++)
        if (!strcmp(m->names[i], name))
            return m->values[i];
    return NULL;
}

void sbt_amqp_msg_free(sbt_amqp_msg_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_headers; i++) {
        free(m->names[i]);
        free(m->values[i]);
    }
    free(m->names);
    free(m->values);
    free(m->body);
    free(m->routing_key);
    free(m->exchange);
    free(m->message_id);
    free(m);
}

long sbt_amqp_depth(const char *url, const char *queue)
{
    amqp_connection_state_t c = sbt_amqp_connect(url);
    if (!c)
        return -1;
    long d = sbt_amqp_queue_depth(c, queue);
    sbt_amqp_close(c);
    return d;
}

void sbt_amqp_cleanup(const char *url, const char *const *queues, const char *const *exchanges)
{
    /* One connection per name: a failed delete would close the shared channel. */
    for (size_t i = 0; queues && queues[i]; i++) {
        amqp_connection_state_t c = sbt_amqp_connect(url);
        if (c) {
            amqp_queue_delete(c, 1, amqp_cstring_bytes(queues[i]), 0, 0);
            sbt_amqp_close(c);
        }
    }
    for (size_t i = 0; exchanges && exchanges[i]; i++) {
        amqp_connection_state_t c = sbt_amqp_connect(url);
        if (c) {
            amqp_exchange_delete(c, 1, amqp_cstring_bytes(exchanges[i]), 0);
            sbt_amqp_close(c);
        }
    }
}

void sbt_events_make(sbt_events_t *ev, const char *tag, size_t n)
{
    ev->n = n;
    ev->ids = calloc(n, sizeof *ev->ids);
    ev->bodies = calloc(n, sizeof *ev->bodies);
    SBT_CHECK(ev->ids && ev->bodies);
    for (size_t i = 0; i < n; i++) {
        char id[128], b[256];
        snprintf(id, sizeof id, "%s-%03zu", tag, i);
        snprintf(b, sizeof b, "{\"Id\":\"%s\",\"JobId\":\"job-%zu\",\"RecordsProcessed\":%zu}", id,
                 i, i);
        ev->ids[i] = strdup(id);
        ev->bodies[i] = strdup(b);
        SBT_CHECK(ev->ids[i] && ev->bodies[i]);
    }
}

void sbt_events_free(sbt_events_t *ev)
{
    for (size_t i = 0; i < ev->n; i++) {
        free(ev->ids[i]);
        free(ev->bodies[i]);
    }
    free(ev->ids);
    free(ev->bodies);
    ev->ids = ev->bodies = NULL;
    ev->n = 0;
}

void sbt_amqp_seed(const char *url, const char *exchange, const char *queue, const char *pattern,
                   const char *rk, const sbt_events_t *ev)
{
    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK_MSG(c != NULL, "cannot connect to RabbitMQ at %s", url);
    SBT_CHECK(sbt_amqp_declare_topic_exchange(c, exchange) == 0);
    SBT_CHECK(sbt_amqp_declare_queue(c, queue, exchange, pattern) == 0);
    const char *rks[] = {rk};
    SBT_CHECK(sbt_amqp_publish_many(c, exchange, rks, true, (const char *const *)ev->bodies,
                                    (const char *const *)ev->ids, ev->n, NULL, NULL) == 0);
    sbt_amqp_close(c);
}
