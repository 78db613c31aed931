/* bench_kafka_raw: the baseline for bench_kafka.sh, a minimal librdkafka consumer: one
 * group member, batches taken with rd_kafka_consume_batch_queue, no parsing, offsets
 * auto-committed. Tuned: queued.min.messages raised to 1,000,000 (and the byte bound to the
 * maximum), which removes librdkafka 2.0.2's fetch stall at the price of buffering the
 * backlog in memory.
 *   bench_kafka_raw BROKERS TOPIC GROUP N
 * Prints "events=N seconds=S rate=R" (first to Nth message).
 *   bench_kafka_raw produce BROKERS TOPIC N
 * Creates TOPIC with 3 partitions and produces N 314-byte DataSyncCompletedEvent events. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

static int produce(const char *brokers, const char *topic, long long n)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
    rd_kafka_conf_set(conf, "linger.ms", "50", err, sizeof err);
    rd_kafka_conf_set(conf, "batch.num.messages", "10000", err, sizeof err);
    rd_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk)
        return 1;
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, 3, 1, err, sizeof err);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    char body[512];
    for (long long i = 0; i < n; i++) {
        int len = snprintf(body, sizeof body,
                           "{\"Id\":\"bench-%012lld-0000-4000-8000-000000000000\","
                           "\"EventType\":\"DataSyncCompletedEvent\","
                           "\"CreationDate\":\"2024-05-01T10:00:00Z\",\"JobId\":\"job-%08lld\","
                           "\"SourceSystem\":\"CRM\",\"TargetSystem\":\"DataWarehouse\","
                           "\"RecordsProcessed\":%lld,\"Notes\":\"",
                           i, i % 100000000, i % 100000);
        while (len < 312)
            body[len++] = 'x';
        body[len++] = '"';
        body[len++] = '}';
        while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_VALUE(body, (size_t)len),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
    }
    rd_kafka_flush(rk, 120000);
    int left = rd_kafka_outq_len(rk);
    rd_kafka_destroy(rk);
    fprintf(stderr, "produced %lld events of 314 bytes to %s (%d undelivered)\n", n, topic, left);
    return left ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "produce"))
        return produce(argv[2], argv[3], atoll(argv[4]));
    if (argc != 5) {
        fprintf(stderr, "usage: bench_kafka_raw BROKERS TOPIC GROUP N\n");
        return 64;
    }
    long long n = atoll(argv[4]), seen = 0;
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[][2] = {{"bootstrap.servers", argv[1]},
                           {"group.id", argv[3]},
                           {"auto.offset.reset", "earliest"},
                           {"queued.min.messages", "1000000"},
                           {"queued.max.messages.kbytes", "2097151"},
                           {"fetch.wait.max.ms", "100"}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, sizeof err) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, argv[2], RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    static rd_kafka_message_t *batch[4096];
    struct timespec t0 = {0}, t1;
    size_t bytes = 0;
    while (seen < n) {
        ssize_t got = rd_kafka_consume_batch_queue(q, 1000, batch, 4096);
        for (ssize_t i = 0; i < got; i++) {
            if (!batch[i]->err) {
                if (seen++ == 0)
                    clock_gettime(CLOCK_MONOTONIC, &t0);
                bytes += batch[i]->len;
            }
            rd_kafka_message_destroy(batch[i]);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "events=%lld seconds=%.3f rate=%.0f bytes=%zu\n", n, s, n / s, bytes);
    rd_kafka_queue_destroy(q);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return 0;
}
