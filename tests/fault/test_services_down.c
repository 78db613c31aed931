/* Each service down: connecting to a loopback port where nothing listens gives a clear,
 * prompt error from rabbitmq-c, librdkafka and hiredis (async, on libevent) instead of a
 * hang. These are the failures every transport and store must surface. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#include "sbtest.h"

static void amqp_down(int port)
{
    char url[128];
    snprintf(url, sizeof url, "amqp://guest:guest@127.0.0.1:%d/", port);
    uint64_t t0 = sbt_now_ms();
    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK_MSG(c == NULL, "connected to a closed port?");
    SBT_CHECK_MSG(sbt_now_ms() - t0 < 6000, "AMQP connect failure took too long");
    printf("ok: AMQP to closed port %d fails promptly\n", port);
}

struct kerr {
    int transport_errors;
    int all_down;
};

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct kerr *k = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        k->all_down++;
    else if (err == RD_KAFKA_RESP_ERR__TRANSPORT)
        k->transport_errors++;
}

static void kafka_down(int port)
{
    char brokers[64], err[512];
    snprintf(brokers, sizeof brokers, "127.0.0.1:%d", port);
    struct kerr k = {0};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", "sbt-down", err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    rd_kafka_conf_set_opaque(conf, &k);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    SBT_CHECK(rk != NULL);
    uint64_t deadline = sbt_now_ms() + 15000;
    while (k.all_down == 0 && sbt_now_ms() < deadline)
        rd_kafka_poll(rk, 100);
    SBT_CHECK_MSG(k.all_down > 0, "librdkafka never reported all brokers down");
    rd_kafka_destroy(rk);
    printf("ok: Kafka to closed port %d reports all brokers down\n", port);
}

struct rstate {
    struct event_base *base;
    int connect_status;
    int called;
};

static void redis_on_connect(const redisAsyncContext *ac, int status)
{
    struct rstate *s = ac->data;
    s->connect_status = status;
    s->called = 1;
    event_base_loopbreak(s->base);
}

static void redis_timeout(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

static void redis_down(int port)
{
    struct rstate s = {.base = event_base_new()};
    redisAsyncContext *ac = redisAsyncConnect("127.0.0.1", port);
    SBT_CHECK(ac != NULL);
    if (ac->err) {
        /* Refused synchronously: also a prompt, clear failure. */
        printf("ok: Redis to closed port %d refused at once: %s\n", port, ac->errstr);
        redisAsyncFree(ac);
        event_base_free(s.base);
        return;
    }
    ac->data = &s;
    redisLibeventAttach(ac, s.base);
    redisAsyncSetConnectCallback(ac, redis_on_connect);
    struct event *t = evtimer_new(s.base, redis_timeout, s.base);
    struct timeval tv = {5, 0};
    evtimer_add(t, &tv);
    event_base_dispatch(s.base);
    SBT_CHECK_MSG(s.called, "hiredis never reported the failed connect");
    SBT_CHECK(s.connect_status != REDIS_OK);
    printf("ok: Redis to closed port %d fails in the connect callback\n", port);
    event_free(t);
    event_base_free(s.base); /* hiredis freed the context after the failed connect */
}

int main(void)
{
    amqp_down(sbt_free_port());
    kafka_down(sbt_free_port());
    redis_down(sbt_free_port());
    return 0;
}
