/* Faults injected with librdkafka's mock cluster: the broker goes down while messages are
 * produced and comes back; produce and commit requests fail transiently. Nothing is lost
 * and the client recovers on its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "sbtest.h"

#define N 30

/* Kafka protocol API keys (rdkafka_mock.h takes them as plain integers). */
#define API_PRODUCE       0
#define API_OFFSET_COMMIT 8

static int delivered, failed;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    if (m->err)
        failed++;
    else
        delivered++;
}

int main(void)
{
    char err[512];
    rd_kafka_conf_t *hc = rd_kafka_conf_new();
    rd_kafka_conf_set(hc, "log_level", "0", err, sizeof err);
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, hc, err, sizeof err);
    SBT_CHECK(host != NULL);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(host, 1);
    SBT_CHECK(mc != NULL);
    const char *brokers = rd_kafka_mock_cluster_bootstraps(mc);
    char *topic = sbt_unique_name("sbt-fault");
    SBT_CHECK(rd_kafka_mock_topic_create(mc, topic, 1, 1) == 0);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof err);
    rd_kafka_conf_set(conf, "message.timeout.ms", "60000", err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    SBT_CHECK(p != NULL);

    /* 1. Transient produce errors: retried by the client, delivered once each. */
    rd_kafka_mock_push_request_errors(
        mc, API_PRODUCE, 3, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
    for (int i = 0; i < N / 2; i++) {
        char v[16];
        snprintf(v, sizeof v, "f-%d", i);
        SBT_CHECK(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(v, strlen(v)),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) == 0);
    }
    SBT_CHECK(rd_kafka_flush(p, 30000) == 0);
    SBT_CHECK_MSG(delivered == N / 2 && failed == 0, "delivered %d failed %d", delivered, failed);

    /* 2. Broker down while producing, then back: everything queued is delivered. */
    SBT_CHECK(rd_kafka_mock_broker_set_down(mc, 1) == 0);
    for (int i = N / 2; i < N; i++) {
        char v[16];
        snprintf(v, sizeof v, "f-%d", i);
        SBT_CHECK(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(v, strlen(v)),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) == 0);
    }
    rd_kafka_flush(p, 1500); /* cannot complete while the broker is down */
    SBT_CHECK_MSG(delivered == N / 2, "delivered %d while the broker was down", delivered);
    SBT_CHECK(rd_kafka_mock_broker_set_up(mc, 1) == 0);
    SBT_CHECK(rd_kafka_flush(p, 30000) == 0);
    SBT_CHECK_MSG(delivered == N && failed == 0, "after recovery: delivered %d failed %d",
                  delivered, failed);
    rd_kafka_destroy(p);

    /* 3. Commit errors: a transient coordinator error is retried; all N read, in order. */
    char *group = sbt_unique_name("sbt-fault-g");
    rd_kafka_t *c = sbt_kafka_consumer(brokers, group, topic, NULL);
    SBT_CHECK(c != NULL);
    for (int i = 0; i < N; i++) {
        rd_kafka_message_t *m = sbt_kafka_poll(c, 30000);
        SBT_CHECK_MSG(m != NULL, "consumed %d of %d", i, N);
        char want[16];
        snprintf(want, sizeof want, "f-%d", i);
        SBT_CHECK_MSG(m->len == strlen(want) && !memcmp(m->payload, want, m->len),
                      "message %d out of order", i);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_mock_push_request_errors(mc, API_OFFSET_COMMIT, 1,
                                      RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
    rd_kafka_resp_err_t e = rd_kafka_commit(c, NULL, 0);
    /* The injected error surfaces to the caller, who retries (as the runtime will). */
    if (e != 0) {
        printf("commit failed once as injected: %s\n", rd_kafka_err2str(e));
        e = rd_kafka_commit(c, NULL, 0);
    }
    SBT_CHECK_MSG(e == 0, "commit after retry: %s", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0);
    SBT_CHECK(rd_kafka_committed(c, l, 10000) == 0);
    SBT_CHECK_MSG(l->elems[0].offset == N, "committed %lld", (long long)l->elems[0].offset);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
    free(topic);
    free(group);
    printf("ok: %d messages survived produce errors, a broker outage and a commit error\n", N);
    return 0;
}
