/* Through the real Apache Kafka broker: a consumer group member consumes part of a topic and
 * commits; a second member of the same group resumes exactly at the committed offset, with
 * no gap and nothing consumed twice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbtest.h"

#define N     20
#define FIRST 12

static int value_index(const rd_kafka_message_t *m)
{
    char buf[32];
    size_t n = m->len < sizeof buf - 1 ? m->len : sizeof buf - 1;
    memcpy(buf, m->payload, n);
    buf[n] = '\0';
    return atoi(buf + 2); /* "m-<i>" */
}

int main(void)
{
    const char *brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    char *topic = sbt_unique_name("sbt-group");
    char *group = sbt_unique_name("sbt-g");
    SBT_CHECK(sbt_kafka_create_topic(brokers, topic, 1, 30000) == 0);

    char vals[N][16];
    const char *values[N];
    for (int i = 0; i < N; i++) {
        snprintf(vals[i], sizeof vals[i], "m-%d", i);
        values[i] = vals[i];
    }
    SBT_CHECK(sbt_kafka_produce(brokers, topic, 0, values, NULL, N, 30000) == 0);

    /* First member: consume FIRST messages in order, commit synchronously, leave. */
    rd_kafka_t *a = sbt_kafka_consumer(brokers, group, topic, NULL);
    SBT_CHECK(a != NULL);
    for (int i = 0; i < FIRST; i++) {
        rd_kafka_message_t *m = sbt_kafka_poll(a, 30000);
        SBT_CHECK_MSG(m != NULL, "first consumer got %d of %d messages", i, FIRST);
        SBT_CHECK_MSG(value_index(m) == i, "expected m-%d, got offset %lld", i,
                      (long long)m->offset);
        if (i == FIRST - 1) {
            rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(l, topic, 0)->offset = m->offset + 1;
            rd_kafka_resp_err_t e = rd_kafka_commit(a, l, 0);
            SBT_CHECK_MSG(e == 0, "commit: %s", rd_kafka_err2str(e));
            rd_kafka_topic_partition_list_destroy(l);
        }
        rd_kafka_message_destroy(m);
    }
    /* The broker reports the committed offset. */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0);
    SBT_CHECK(rd_kafka_committed(a, l, 10000) == 0);
    SBT_CHECK_MSG(l->elems[0].offset == FIRST, "committed offset %lld",
                  (long long)l->elems[0].offset);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(a);
    rd_kafka_destroy(a);

    /* Second member resumes at the committed offset. */
    rd_kafka_t *b = sbt_kafka_consumer(brokers, group, topic, NULL);
    SBT_CHECK(b != NULL);
    for (int i = FIRST; i < N; i++) {
        rd_kafka_message_t *m = sbt_kafka_poll(b, 30000);
        SBT_CHECK_MSG(m != NULL, "second consumer got nothing for m-%d", i);
        SBT_CHECK_MSG(value_index(m) == i, "expected m-%d, got m-%d", i, value_index(m));
        rd_kafka_message_destroy(m);
    }
    /* Nothing beyond the end. */
    rd_kafka_message_t *extra = sbt_kafka_poll(b, 1000);
    SBT_CHECK_MSG(extra == NULL, "unexpected extra message at offset %lld",
                  extra ? (long long)extra->offset : -1LL);
    rd_kafka_consumer_close(b);
    rd_kafka_destroy(b);
    printf("ok: group %s resumed at offset %d of %d on %s\n", group, FIRST, N, brokers);
    free(topic);
    free(group);
    return 0;
}
