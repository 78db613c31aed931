/* A message round-trips through the real RabbitMQ: declared topic exchange, a bound durable
 * queue, a persistent message published under confirms, read back with its properties. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbtest.h"

int main(void)
{
    const char *url = sbt_service("SB_TEST_AMQP_URL", "RabbitMQ");
    amqp_connection_state_t c = sbt_amqp_connect(url);
    SBT_CHECK_MSG(c != NULL, "cannot connect to RabbitMQ at %s", url);

    char *exchange = sbt_unique_name("sbt.x");
    char *queue = sbt_unique_name("sbt.q");
    SBT_CHECK(sbt_amqp_declare_topic_exchange(c, exchange) == 0);
    SBT_CHECK(sbt_amqp_declare_queue(c, queue, exchange, "DataSync.#") == 0);

    const char *body = "{\"Id\":\"5b1f0a52-8d3c-4c59-9f7e-0c2a3f1d9e01\","
                       "\"CreationDate\":\"2026-12-01T10:00:00.1234567Z\",\"JobId\":\"job-1\"}";
    /* Matches the binding: delivered. */
    SBT_CHECK(sbt_amqp_publish(c, exchange, "DataSync.Completed", body, strlen(body),
                               "5b1f0a52-8d3c-4c59-9f7e-0c2a3f1d9e01", "DataSyncCompleted") == 0);
    /* Does not match: routed nowhere. */
    SBT_CHECK(sbt_amqp_publish(c, exchange, "ETLJob.Started", "{}", 2, NULL, NULL) == 0);

    size_t len = 0;
    char *got = sbt_amqp_get(c, queue, &len, 5000);
    SBT_CHECK_MSG(got != NULL, "no message arrived on %s", queue);
    SBT_CHECK(len == strlen(body));
    SBT_CHECK(memcmp(got, body, len) == 0);
    free(got);
    /* Exactly one message was routed to the queue. */
    SBT_CHECK(sbt_amqp_queue_depth(c, queue) == 0);
    SBT_CHECK(sbt_amqp_get(c, queue, &len, 300) == NULL);

    SBT_CHECK(sbt_amqp_delete_queue(c, queue) == 0);
    SBT_CHECK(sbt_amqp_delete_exchange(c, exchange) == 0);
    sbt_amqp_close(c);
    free(exchange);
    free(queue);
    printf("ok: AMQP round trip through %s\n", url);
    return 0;
}
