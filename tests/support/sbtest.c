/* sbtest.c: implementation of the test-support library (see sbtest.h). Blocking by design:
 * this code runs in test processes, never in the runtime. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amqp_tcp_socket.h>

#include "sbtest.h"

void sbt_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
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
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (sbt_now_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
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
