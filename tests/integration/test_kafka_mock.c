/* librdkafka's mock cluster (rdkafka_mock.h), the embedded default broker: a topic created
 * on it, messages produced and consumed back through a consumer group with a commit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "sbtest.h"

#define N 50

int main(void)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    SBT_CHECK_MSG(host != NULL, "%s", err);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(host, 1);
    SBT_CHECK(mc != NULL);
    const char *brokers = rd_kafka_mock_cluster_bootstraps(mc);
    char *topic = sbt_unique_name("sbt-mock");
    char *group = sbt_unique_name("sbt-mock-g");
    SBT_CHECK(rd_kafka_mock_topic_create(mc, topic, 2, 1) == 0);

    char vals[N][16];
    const char *values[N];
    for (int i = 0; i < N; i++) {
        snprintf(vals[i], sizeof vals[i], "e-%d", i);
        values[i] = vals[i];
    }
    SBT_CHECK(sbt_kafka_produce(brokers, topic, -1, values, values, N, 20000) == 0);

    rd_kafka_t *c = sbt_kafka_consumer(brokers, group, topic, NULL);
    SBT_CHECK(c != NULL);
    int seen[N] = {0};
    for (int i = 0; i < N; i++) {
        rd_kafka_message_t *m = sbt_kafka_poll(c, 30000);
        SBT_CHECK_MSG(m != NULL, "got %d of %d messages from the mock cluster", i, N);
        int idx = atoi((const char *)m->payload + 2);
        SBT_CHECK(idx >= 0 && idx < N);
        seen[idx]++;
        rd_kafka_message_destroy(m);
    }
    for (int i = 0; i < N; i++)
        SBT_CHECK_MSG(seen[i] == 1, "e-%d seen %d times", i, seen[i]);
    SBT_CHECK(rd_kafka_commit(c, NULL, 0) == 0);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
    free(topic);
    free(group);
    printf("ok: %d messages through the mock cluster\n", N);
    return 0;
}
