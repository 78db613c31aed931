/* sbtest.c: implementation of the test-support library (see sbtest.h). Blocking by design:
 * this code runs in test processes, never in the runtime. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <amqp_tcp_socket.h>

#include "sbtest.h"

/* switchboard children not reaped yet: a failing test ends them too (SIGKILL), so no
 * consumer outlives it. */
static pid_t children[64];

static void child_forget(pid_t pid)
{
    for (size_t i = 0; i < sizeof children / sizeof *children; i++)
        if (children[i] == pid)
            children[i] = 0;
}

void sbt_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    for (size_t i = 0; i < sizeof children / sizeof *children; i++) {
        /* Only a child of ours still running (one reaped elsewhere gives ECHILD). */
        if (children[i] > 0 && waitpid(children[i], NULL, WNOHANG) == 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
        }
    }
    exit(1);
}

const char *sbt_service(const char *var, const char *what)
{
    const char *v = getenv(var);
    if (v && *v)
        return v;
    const char *req = getenv("SB_TEST_REQUIRE_ALL");
    if (req && strcmp(req, "1") == 0) {
        fprintf(stderr, "FAIL: %s is required but %s is not set (run tests/run.sh)\n", what, var);
        exit(1);
    }
    fprintf(stderr, "SKIP: %s not configured (%s unset; tests/run.sh sets it)\n", what, var);
    exit(SBT_SKIP);
}

uint64_t sbt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

char *sbt_unique_name(const char *prefix)
{
    static unsigned counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char buf[256];
    snprintf(buf, sizeof buf, "%s-%ld-%u-%lx", prefix, (long)getpid(), ++counter,
             (unsigned long)((ts.tv_sec * 1000003L) ^ ts.tv_nsec) & 0xffffffUL);
    char *s = strdup(buf);
    SBT_CHECK(s != NULL);
    return s;
}

bool sbt_wait_until(bool (*pred)(void *ud), void *ud, int timeout_ms, int poll_ms)
{
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (pred(ud))
            return true;
        if (sbt_now_ms() >= deadline)
            return false;
        struct timespec ts = {poll_ms / 1000, (long)(poll_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* ---- RabbitMQ --------------------------------------------------------------------------- */

static int amqp_ok(amqp_rpc_reply_t r, const char *what)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        fprintf(stderr, "amqp %s: %s\n", what, amqp_error_string2(r.library_error));
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = r.reply.decoded;
        fprintf(stderr, "amqp %s: channel closed by server: %d %.*s\n", what, m->reply_code,
                (int)m->reply_text.len, (char *)m->reply_text.bytes);
    } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
               r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *m = r.reply.decoded;
        fprintf(stderr, "amqp %s: connection closed by server: %d %.*s\n", what, m->reply_code,
                (int)m->reply_text.len, (char *)m->reply_text.bytes);
    } else {
        fprintf(stderr, "amqp %s: failed (reply type %d)\n", what, (int)r.reply_type);
    }
    return -1;
}

amqp_connection_state_t sbt_amqp_connect(const char *url)
{
    struct amqp_connection_info ci;
    char *copy = strdup(url);
    SBT_CHECK(copy != NULL);
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp: cannot parse URL\n");
        free(copy);
        return NULL;
    }
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    struct timeval tv = {5, 0};
    int rc = s ? amqp_socket_open_noblock(s, ci.host, ci.port, &tv) : AMQP_STATUS_NO_MEMORY;
    if (rc != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp: cannot connect to %s:%d: %s\n", ci.host, ci.port,
                amqp_error_string2(rc));
        goto err;
    }
    if (amqp_ok(amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password),
                "login") != 0)
        goto err;
    amqp_channel_open(c, 1);
    if (amqp_ok(amqp_get_rpc_reply(c), "channel.open") != 0)
        goto err;
    amqp_confirm_select(c, 1);
    if (amqp_ok(amqp_get_rpc_reply(c), "confirm.select") != 0)
        goto err;
    free(copy);
    return c;
err:
    amqp_destroy_connection(c);
    free(copy);
    return NULL;
}

void sbt_amqp_close(amqp_connection_state_t c)
{
    if (!c)
        return;
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

int sbt_amqp_declare_topic_exchange(amqp_connection_state_t c, const char *exchange)
{
    amqp_exchange_declare(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes("topic"), 0, 1, 0,
                          0, amqp_empty_table);
    return amqp_ok(amqp_get_rpc_reply(c), "exchange.declare");
}

int sbt_amqp_declare_queue(amqp_connection_state_t c, const char *queue, const char *exchange,
                           const char *binding_key)
{
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    if (amqp_ok(amqp_get_rpc_reply(c), "queue.declare") != 0)
        return -1;
    if (!exchange)
        return 0;
    amqp_queue_bind(c, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange),
                    amqp_cstring_bytes(binding_key), amqp_empty_table);
    return amqp_ok(amqp_get_rpc_reply(c), "queue.bind");
}

int sbt_amqp_delete_queue(amqp_connection_state_t c, const char *queue)
{
    amqp_queue_delete(c, 1, amqp_cstring_bytes(queue), 0, 0);
    return amqp_ok(amqp_get_rpc_reply(c), "queue.delete");
}

int sbt_amqp_delete_exchange(amqp_connection_state_t c, const char *exchange)
{
    amqp_exchange_delete(c, 1, amqp_cstring_bytes(exchange), 0);
    return amqp_ok(amqp_get_rpc_reply(c), "exchange.delete");
}

int sbt_amqp_publish(amqp_connection_state_t c, const char *exchange, const char *routing_key,
                     const void *body, size_t len, const char *message_id, const char *type)
{
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.delivery_mode = 2;
    p.content_type = amqp_cstring_bytes("application/json");
    if (message_id) {
        p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        p.message_id = amqp_cstring_bytes(message_id);
    }
    if (type) {
        p._flags |= AMQP_BASIC_TYPE_FLAG;
        p.type = amqp_cstring_bytes(type);
    }
    amqp_bytes_t b = {len, (void *)body};
    int rc = amqp_basic_publish(c, 1, amqp_cstring_bytes(exchange ? exchange : ""),
                                amqp_cstring_bytes(routing_key), 0, 0, &p, b);
    if (rc != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp publish: %s\n", amqp_error_string2(rc));
        return -1;
    }
    /* Wait for the confirm (basic.ack) of this publish. */
    struct timeval tv = {10, 0};
    amqp_frame_t f;
    for (;;) {
        amqp_maybe_release_buffers(c);
        rc = amqp_simple_wait_frame_noblock(c, &f, &tv);
        if (rc != AMQP_STATUS_OK) {
            fprintf(stderr, "amqp publish confirm: %s\n", amqp_error_string2(rc));
            return -1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD)
            return 0;
        if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            fprintf(stderr, "amqp publish: broker nacked\n");
            return -1;
        }
        if (f.payload.method.id == AMQP_BASIC_RETURN_METHOD)
            continue;
        fprintf(stderr, "amqp publish: unexpected method 0x%08x\n", f.payload.method.id);
        return -1;
    }
}

char *sbt_amqp_get(amqp_connection_state_t c, const char *queue, size_t *len, int timeout_ms)
{
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        amqp_maybe_release_buffers(c);
        amqp_rpc_reply_t r = amqp_basic_get(c, 1, amqp_cstring_bytes(queue), 0);
        if (amqp_ok(r, "basic.get") != 0)
            return NULL;
        if (r.reply.id == AMQP_BASIC_GET_OK_METHOD) {
            amqp_basic_get_ok_t *ok = r.reply.decoded;
            uint64_t tag = ok->delivery_tag;
            amqp_message_t msg;
            r = amqp_read_message(c, 1, &msg, 0);
            if (amqp_ok(r, "read_message") != 0)
                return NULL;
            char *out = malloc(msg.body.len + 1);
            SBT_CHECK(out != NULL);
            memcpy(out, msg.body.bytes, msg.body.len);
            out[msg.body.len] = '\0';
            if (len)
                *len = msg.body.len;
            amqp_destroy_message(&msg);
            amqp_basic_ack(c, 1, tag, 0);
            return out;
        }
        if (sbt_now_ms() >= deadline)
            return NULL;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

long sbt_amqp_queue_depth(amqp_connection_state_t c, const char *queue)
{
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    if (amqp_ok(amqp_get_rpc_reply(c), "queue.declare passive") != 0 || !ok)
        return -1;
    return (long)ok->message_count;
}

/* ---- Kafka ------------------------------------------------------------------------------ */

static rd_kafka_conf_t *kconf(const char *brokers)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) != RD_KAFKA_CONF_OK)
        sbt_fail(__FILE__, __LINE__, "kafka conf: %s", err);
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    return conf;
}

static bool topic_ready(rd_kafka_t *rk, const char *topic, int partitions)
{
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    bool ok = false;
    if (rd_kafka_metadata(rk, 0, t, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && md &&
        md->topic_cnt == 1 && md->topics[0].err == 0 && md->topics[0].partition_cnt == partitions) {
        ok = true;
        for (int i = 0; i < partitions; i++)
            if (md->topics[0].partitions[i].leader < 0)
                ok = false;
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    return ok;
}

int sbt_kafka_create_topic(const char *brokers, const char *topic, int partitions, int timeout_ms)
{
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kconf(brokers), err, sizeof err);
    if (!rk) {
        fprintf(stderr, "kafka: %s\n", err);
        return -1;
    }
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 1, err, sizeof err);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms);
    int rc = -1;
    if (ev && rd_kafka_event_error(ev) == 0) {
        size_t n;
        const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
        if (n == 1 &&
            (rd_kafka_topic_result_error(tr[0]) == 0 ||
             rd_kafka_topic_result_error(tr[0]) == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS))
            rc = 0;
        else if (n == 1)
            fprintf(stderr, "kafka create topic %s: %s\n", topic,
                    rd_kafka_topic_result_error_string(tr[0]));
    } else {
        fprintf(stderr, "kafka create topic %s: %s\n", topic,
                ev ? rd_kafka_event_error_string(ev) : "timed out");
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);
    if (rc == 0) {
        uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
        while (!topic_ready(rk, topic, partitions)) {
            if (sbt_now_ms() >= deadline) {
                fprintf(stderr, "kafka: topic %s has no leaders after %d ms\n", topic, timeout_ms);
                rc = -1;
                break;
            }
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    rd_kafka_destroy(rk);
    return rc;
}

static void count_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    int *failed = opaque;
    if (m->err) {
        fprintf(stderr, "kafka delivery: %s\n", rd_kafka_err2str(m->err));
        (*failed)++;
    }
}

int sbt_kafka_produce(const char *brokers, const char *topic, int partition,
                      const char *const *values, const char *const *keys, int n, int timeout_ms)
{
    char err[512];
    int failed = 0;
    rd_kafka_conf_t *conf = kconf(brokers);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err);
    rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof err);
    rd_kafka_conf_set_dr_msg_cb(conf, count_delivery);
    rd_kafka_conf_set_opaque(conf, &failed);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "kafka: %s\n", err);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const char *k = keys ? keys[i] : NULL;
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                      RD_KAFKA_V_VALUE((void *)values[i], strlen(values[i])),
                                      RD_KAFKA_V_KEY((void *)k, k ? strlen(k) : 0),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        if (e) {
            fprintf(stderr, "kafka produce: %s\n", rd_kafka_err2str(e));
            failed++;
            break;
        }
        rd_kafka_poll(rk, 0);
    }
    if (rd_kafka_flush(rk, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "kafka produce: %d messages undelivered after %d ms\n",
                rd_kafka_outq_len(rk), timeout_ms);
        failed++;
    }
    rd_kafka_destroy(rk);
    return failed ? -1 : 0;
}

rd_kafka_t *sbt_kafka_consumer(const char *brokers, const char *group, const char *topic, ...)
{
    char err[512];
    rd_kafka_conf_t *conf = kconf(brokers);
    const char *defaults[][2] = {{"group.id", group},
                                 {"enable.auto.commit", "false"},
                                 {"auto.offset.reset", "earliest"},
                                 {"session.timeout.ms", "6000"},
                                 {"heartbeat.interval.ms", "500"}};
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1], err, sizeof err))
            sbt_fail(__FILE__, __LINE__, "kafka conf: %s", err);
    va_list ap;
    va_start(ap, topic);
    const char *kv;
    while ((kv = va_arg(ap, const char *)) != NULL) {
        char key[128];
        const char *eq = strchr(kv, '=');
        SBT_CHECK(eq && (size_t)(eq - kv) < sizeof key);
        memcpy(key, kv, (size_t)(eq - kv));
        key[eq - kv] = '\0';
        if (rd_kafka_conf_set(conf, key, eq + 1, err, sizeof err))
            sbt_fail(__FILE__, __LINE__, "kafka conf: %s", err);
    }
    va_end(ap);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "kafka: %s\n", err);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        fprintf(stderr, "kafka subscribe: %s\n", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

rd_kafka_message_t *sbt_kafka_poll(rd_kafka_t *consumer, int timeout_ms)
{
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = sbt_now_ms();
        if (now >= deadline)
            return NULL;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, (int)(deadline - now));
        if (!m)
            continue;
        if (m->err == 0)
            return m;
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            fprintf(stderr, "kafka poll: %s\n", rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
    }
}

/* An admin client (a producer handle) for the delete helpers; NULL with the reason printed. */
static rd_kafka_t *admin_client(const char *brokers)
{
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kconf(brokers), err, sizeof err);
    if (!rk)
        fprintf(stderr, "kafka admin client: %s\n", err);
    return rk;
}

/* Waits for the admin result on q; NULL (printed) when the broker did not answer in time or
 * the whole request failed. */
static rd_kafka_event_t *admin_result(rd_kafka_queue_t *q, const char *what, size_t n)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    if (!ev) {
        fprintf(stderr, "kafka: deleting %zu %s timed out\n", n, what);
        return NULL;
    }
    if (rd_kafka_event_error(ev)) {
        fprintf(stderr, "kafka: deleting %zu %s: %s\n", n, what, rd_kafka_event_error_string(ev));
        rd_kafka_event_destroy(ev);
        return NULL;
    }
    return ev;
}

size_t sbt_kafka_delete_topics(const char *brokers, const char *const *names, size_t n)
{
    if (n == 0)
        return 0;
    rd_kafka_t *rk = admin_client(brokers);
    if (!rk)
        return n;
    rd_kafka_DeleteTopic_t **dt = calloc(n, sizeof *dt);
    SBT_CHECK(dt != NULL);
    for (size_t i = 0; i < n; i++)
        dt[i] = rd_kafka_DeleteTopic_new(names[i]);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopics(rk, dt, n, NULL, q);
    size_t failed = n;
    rd_kafka_event_t *ev = admin_result(q, "topics", n);
    if (ev) {
        const rd_kafka_DeleteTopics_result_t *res = rd_kafka_event_DeleteTopics_result(ev);
        size_t cnt = 0;
        const rd_kafka_topic_result_t **tr =
            res ? rd_kafka_DeleteTopics_result_topics(res, &cnt) : NULL;
        failed = 0;
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
            if (!e)
                continue;
            failed++;
            if (e != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                fprintf(stderr, "kafka: deleting topic %s: %s\n", rd_kafka_topic_result_name(tr[i]),
                        rd_kafka_topic_result_error_string(tr[i]));
        }
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_DeleteTopic_destroy_array(dt, n);
    free(dt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return failed;
}

size_t sbt_kafka_delete_groups(const char *brokers, const char *const *names, size_t n)
{
    if (n == 0)
        return 0;
    rd_kafka_t *rk = admin_client(brokers);
    if (!rk)
        return n;
    rd_kafka_DeleteGroup_t **dg = calloc(n, sizeof *dg);
    SBT_CHECK(dg != NULL);
    for (size_t i = 0; i < n; i++)
        dg[i] = rd_kafka_DeleteGroup_new(names[i]);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteGroups(rk, dg, n, NULL, q);
    size_t failed = n;
    rd_kafka_event_t *ev = admin_result(q, "groups", n);
    if (ev) {
        const rd_kafka_DeleteGroups_result_t *res = rd_kafka_event_DeleteGroups_result(ev);
        size_t cnt = 0;
        const rd_kafka_group_result_t **gr =
            res ? rd_kafka_DeleteGroups_result_groups(res, &cnt) : NULL;
        failed = 0;
        for (size_t i = 0; i < cnt; i++) {
            const rd_kafka_error_t *e = rd_kafka_group_result_error(gr[i]);
            if (!e)
                continue;
            failed++;
            if (rd_kafka_error_code(e) != RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND)
                fprintf(stderr, "kafka: deleting group %s: %s\n", rd_kafka_group_result_name(gr[i]),
                        rd_kafka_error_string(e));
        }
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_DeleteGroup_destroy_array(dg, n);
    free(dg);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return failed;
}

/* ---- child processes and the record ledger ------------------------------------------- */

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <jansson.h>

char *sbt_write_temp(const char *text, const char *suffix)
{
    char path[256];
    snprintf(path, sizeof path, "/tmp/sbt-XXXXXX%s", suffix ? suffix : "");
    int fd = mkstemps(path, suffix ? (int)strlen(suffix) : 0);
    SBT_CHECK_MSG(fd >= 0, "mkstemps: %s", strerror(errno));
    size_t len = strlen(text);
    SBT_CHECK(write(fd, text, len) == (ssize_t)len);
    close(fd);
    char *p = strdup(path);
    SBT_CHECK(p != NULL);
    return p;
}

pid_t sbt_spawn_switchboard(const char *const *args, const char *const *env, const char *log_path)
{
    pid_t pid = fork();
    SBT_CHECK_MSG(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        if (log_path) {
            int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
        }
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        const char *argv[64];
        size_t n = 0;
        argv[n++] = SB_BIN;
        for (size_t i = 0; args[i] && n < 63; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(SB_BIN, (char *const *)argv);
        _exit(127);
    }
    for (size_t i = 0; i < sizeof children / sizeof *children; i++) {
        if (children[i] == 0) {
            children[i] = pid;
            break;
        }
    }
    return pid;
}

int sbt_stop(pid_t pid, int sig, int timeout_ms)
{
    if (sig)
        kill(pid, sig);
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            child_forget(pid);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (sbt_now_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            child_forget(pid);
            return -1;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

size_t sbt_grep(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    size_t n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

size_t sbt_count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = 0;
    int c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

bool sbt_wait_lines(const char *path, size_t lines, int timeout_ms)
{
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (sbt_count_lines(path) >= lines)
            return true;
        if (sbt_now_ms() >= deadline)
            return false;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void sbt_ledger_check(const char *path, const char *const *expected, size_t n, size_t *missing,
                      size_t *dups, size_t *unexpected)
{
    const char **sorted = malloc(n * sizeof *sorted);
    unsigned *seen = calloc(n ? n : 1, sizeof *seen);
    SBT_CHECK(sorted && seen);
    memcpy(sorted, expected, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_str);
    *missing = *dups = *unexpected = 0;
    FILE *f = fopen(path, "r");
    char line[8192];
    while (f && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        const char *id = j ? json_string_value(json_object_get(j, "id")) : NULL;
        if (id) {
            const char **hit = bsearch(&id, sorted, n, sizeof *sorted, cmp_str);
            if (hit)
                seen[hit - sorted]++;
            else
                (*unexpected)++;
        }
        json_decref(j);
    }
    if (f)
        fclose(f);
    for (size_t i = 0; i < n; i++) {
        if (seen[i] == 0)
            (*missing)++;
        else if (seen[i] > 1)
            (*dups)++;
    }
    free(sorted);
    free(seen);
}

int sbt_run_cli(const char *const *head, const char *const *tail, const char *out_path,
                const char *err_path)
{
    fflush(NULL); /* else the child's freopen would flush our buffered output a second time */
    pid_t pid = fork();
    SBT_CHECK_MSG(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        const char *argv[62];
        size_t n = 0;
        argv[n++] = SB_BIN;
        for (size_t i = 0; head[i] && n < 61; i++)
            argv[n++] = head[i];
        for (size_t i = 0; tail && tail[i] && n < 61; i++)
            argv[n++] = tail[i];
        argv[n] = NULL;
        if ((out_path && !freopen(out_path, "w", stdout)) ||
            (err_path && !freopen(err_path, "w", stderr)))
            _exit(127);
        execv(SB_BIN, (char *const *)argv);
        _exit(127);
    }
    int st;
    SBT_CHECK(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- HTTP (the admin endpoint) ---------------------------------------------------------- */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

int sbt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    SBT_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    SBT_CHECK(getsockname(fd, (struct sockaddr *)&a, &n) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

int sbt_http(int port, const char *method, const char *path, const char *token, const char *body,
             char **resp_body)
{
    if (resp_body)
        *resp_body = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char auth[256] = "", clen[96] = "";
    if (token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    if (body)
        snprintf(clen, sizeof clen, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                 strlen(body));
    size_t req_cap = strlen(method) + strlen(path) + (body ? strlen(body) : 0) + 512;
    char *req = malloc(req_cap);
    SBT_CHECK(req != NULL);
    int len = snprintf(req, req_cap,
                       "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s\r\n%s",
                       method, path, auth, clen, body ? body : "");
    SBT_CHECK(len > 0 && (size_t)len < req_cap);
    size_t off = 0;
    bool sent = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    while (sent && off < (size_t)len) {
        ssize_t k = send(fd, req + off, (size_t)len - off, MSG_NOSIGNAL);
        if (k <= 0)
            sent = false;
        else
            off += (size_t)k;
    }
    free(req);
    if (!sent) {
        close(fd);
        return -1;
    }
    size_t got = 0, cap = 16384;
    char *buf = malloc(cap);
    SBT_CHECK(buf != NULL);
    for (;;) {
        if (cap - got < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
            SBT_CHECK(buf != NULL);
        }
        ssize_t k = recv(fd, buf + got, cap - got - 1, 0);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    close(fd);
    buf[got] = '\0';
    int status = -1;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        return -1;
    }
    if (resp_body) {
        const char *b = strstr(buf, "\r\n\r\n");
        b = b ? b + 4 : buf + got;
        memmove(buf, b, strlen(b) + 1);
        *resp_body = buf;
    } else {
        free(buf);
    }
    return status;
}

long sbt_dlq_summary_count(const char *err_path, const char *word)
{
    FILE *f = fopen(err_path, "r");
    char line[2048], pat[64];
    long n = -1;
    snprintf(pat, sizeof pat, " %s", word);
    while (f && fgets(line, sizeof line, f)) {
        char *w = strncmp(line, "switchboard dlq ", 16) == 0 ? strstr(line, pat) : NULL;
        if (!w)
            continue;
        char *p = w;
        while (p > line && p[-1] >= '0' && p[-1] <= '9')
            p--;
        if (p < w)
            n = strtol(p, NULL, 10);
    }
    if (f)
        fclose(f);
    return n;
}

json_t *sbt_load_json_lines(const char *path)
{
    json_t *arr = json_array();
    FILE *f = fopen(path, "r");
    SBT_CHECK_MSG(f != NULL, "%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        SBT_CHECK_MSG(j != NULL, "%s: not JSON: %s (%s)", path, line, e.text);
        json_array_append_new(arr, j);
    }
    free(line);
    fclose(f);
    return arr;
}

/* ---- allocation-failure sweeps ---------------------------------------------------------- */

int sbt_fail_at, sbt_alloc_count;

void *sbt_failing_malloc(size_t n)
{
    if (++sbt_alloc_count == sbt_fail_at)
        return NULL;
    return malloc(n);
}

void *sbt_failing_realloc(void *p, size_t n)
{
    if (++sbt_alloc_count == sbt_fail_at)
        return NULL;
    return realloc(p, n);
}
