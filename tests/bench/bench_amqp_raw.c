/* bench_amqp_raw: the baseline for bench_amqp.sh, and its publisher.
 *
 *   bench_amqp_raw publish URL EXCHANGE ROUTING_KEY N    N persistent 314-byte events
 *                                                         (unique Ids), pipelined confirms
 *   bench_amqp_raw setup|teardown URL EXCHANGE QUEUE  topic exchange + queue bound "#"
 *   bench_amqp_raw consume URL QUEUE N                    a minimal rabbitmq-c consumer:
 *                                                         prefetch 500, basic.ack
 *                                                         multiple=true every 100
 * consume prints "RAW_DONE n seconds msgs/s", timed from the first message to the Nth. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp.h>

#include "sbtest.h"
#include "sbtest_amqp.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int publish(const char *url, const char *exchange, const char *rk, long n)
{
    amqp_connection_state_t c = sbt_amqp_connect(url);
    if (!c)
        return 1;
    char **bodies = calloc((size_t)n, sizeof *bodies);
    for (long i = 0; i < n; i++) {
        char b[400];
        /* 314 bytes: the DataSyncCompletedEvent of ../shared/FACTS.md */
        int len = snprintf(b, sizeof b,
                           "{\"JobId\":\"job-%08ld\",\"SourceSystem\":\"crm-eu-west\","
                           "\"TargetSystem\":\"erp-central\",\"RecordsProcessed\":%ld,"
                           "\"CompletedAt\":\"2026-12-01T10:00:00.1234567Z\","
                           "\"Id\":\"5b1f0a52-8d3c-4c59-9f7e-%012ld\","
                           "\"CreationDate\":\"2026-12-01T10:00:00.1234567Z\","
                           "\"Region\":\"eu\",\"Note\":\"",
                           i, i % 100000, i);
        while (len < 312)
            b[len++] = 'x';
        b[len++] = '"';
        b[len++] = '}';
        b[len] = '\0';
        bodies[i] = strdup(b);
    }
    const char *rks[] = {rk};
    double t0 = now_s();
    int rc = sbt_amqp_publish_many(c, exchange, rks, true, (const char *const *)bodies, NULL,
                                   (size_t)n, NULL, NULL);
    double dt = now_s() - t0;
    fprintf(stderr, "published %ld in %.2f s (%.0f msg/s, body %zu bytes)\n", n, dt, n / dt,
            strlen(bodies[0]));
    for (long i = 0; i < n; i++)
        free(bodies[i]);
    free(bodies);
    sbt_amqp_close(c);
    return rc == 0 ? 0 : 1;
}

static int consume(const char *url, const char *queue, long n)
{
    amqp_connection_state_t c = sbt_amqp_connect(url);
    if (!c)
        return 1;
    amqp_channel_open(c, 2);
    amqp_basic_qos(c, 2, 0, 500, 0);
    amqp_basic_consume(c, 2, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL)
        return 1;
    long got = 0;
    double t0 = 0;
    uint64_t last = 0;
    while (got < n) {
        amqp_envelope_t env;
        amqp_maybe_release_buffers(c);
        amqp_rpc_reply_t r = amqp_consume_message(c, &env, NULL, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            return 1;
        if (got++ == 0)
            t0 = now_s();
        last = env.delivery_tag;
        if (got % 100 == 0)
            amqp_basic_ack(c, 2, last, 1);
        amqp_destroy_envelope(&env);
    }
    double dt = now_s() - t0;
    amqp_basic_ack(c, 2, last, 1);
    fprintf(stderr, "RAW_DONE %ld %.3f %.0f\n", got, dt, (got - 1) / dt);
    amqp_channel_close(c, 2, AMQP_REPLY_SUCCESS);
    sbt_amqp_close(c);
    return 0;
}

/* Declares (or deletes) the topic exchange and a durable queue bound to it with "#". */
static int topology(const char *url, const char *exchange, const char *queue, bool create)
{
    amqp_connection_state_t c = sbt_amqp_connect(url);
    if (!c)
        return 1;
    int rc = 0;
    if (create)
        rc = sbt_amqp_declare_topic_exchange(c, exchange) ||
             sbt_amqp_declare_queue(c, queue, exchange, "#");
    else
        rc = sbt_amqp_delete_queue(c, queue) || sbt_amqp_delete_exchange(c, exchange);
    sbt_amqp_close(c);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && (!strcmp(argv[1], "setup") || !strcmp(argv[1], "teardown")))
        return topology(argv[2], argv[3], argv[4], !strcmp(argv[1], "setup"));
    if (argc == 6 && !strcmp(argv[1], "publish"))
        return publish(argv[2], argv[3], argv[4], atol(argv[5]));
    if (argc == 5 && !strcmp(argv[1], "consume"))
        return consume(argv[2], argv[3], atol(argv[4]));
    fprintf(stderr, "usage: bench_amqp_raw publish URL EXCHANGE ROUTING_KEY N\n"
                    "       bench_amqp_raw consume URL QUEUE N\n");
    return 2;
}
