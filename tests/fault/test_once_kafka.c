/* test_once_kafka.c: effectively-once on Kafka. 50,000 events, each produced two or three
 * times with the same Id in a random interleaving and under per-message keys (so the
 * copies of one event land on different partitions and are in flight at once), are
 * consumed by `switchboard run` (concurrency: key) with the record handler and the Redis
 * idempotency store; the consumer is SIGKILLed and restarted twice mid-stream (offsets
 * partly committed, so much is delivered again). The ledger must hold every id, every
 * duplicate skipped (the only repeats allowed: handlers caught by the SIGKILL between their
 * effect and "done", at most max_inflight per kill), and the group must end with every
 * offset of the topic and of its retry topic committed. The shared body is
 * test_once_common.h. SB_TEST_ONCE_N overrides the size. */
#include "test_once_common.h"

#define PARTITIONS 4
#define INFLIGHT   256

typedef struct kafka_side {
    const char *brokers;
    char *topic, *retry_topic, *group;
    rd_kafka_t *rk; /* never subscribes: reads the group's commits without joining it */
} kafka_side_t;

/* Uncommitted messages of one topic for the group, or -1 when unknown. */
static long topic_lag(kafka_side_t *k, const char *topic)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(l, topic, p);
    long lag = 0;
    if (rd_kafka_committed(k->rk, l, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        lag = -1;
    for (int p = 0; p < PARTITIONS && lag >= 0; p++) {
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(k->rk, topic, p, &lo, &hi, 5000) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            lag = -1;
            break;
        }
        int64_t committed = l->elems[p].err ? -1 : l->elems[p].offset;
        if (committed < 0)
            committed = lo;
        lag += (long)(hi - committed);
    }
    rd_kafka_topic_partition_list_destroy(l);
    return lag;
}

static bool kafka_drained(void *ud)
{
    kafka_side_t *k = ud;
    return topic_lag(k, k->topic) == 0 && topic_lag(k, k->retry_topic) == 0;
}

int main(void)
{
    kafka_side_t k = {.brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka")};
    size_t n = getenv("SB_TEST_ONCE_N") ? strtoul(getenv("SB_TEST_ONCE_N"), NULL, 10) : 50000;
    SBT_CHECK(n >= 1000);
    once_run_t r;
    once_setup(&r, n, "once-kafka");
    r.window = INFLIGHT;
    k.topic = sbt_unique_name("sbt-once");
    k.group = sbt_unique_name("sbt-once-g");
    size_t tl = strlen(k.topic) + 8;
    k.retry_topic = malloc(tl);
    SBT_CHECK(k.retry_topic);
    snprintf(k.retry_topic, tl, "%s.retry", k.topic);
    SBT_CHECK(sbt_kafka_create_topic(k.brokers, k.topic, PARTITIONS, 30000) == 0);

    /* Auto-commit every 200 ms so the kills land between commits; a short session timeout
     * so the restarted member does not wait long for the dead one's partitions. */
    char tx[1024];
    snprintf(tx, sizeof tx,
             "transport:\n"
             "  kind: kafka\n"
             "  kafka:\n"
             "    brokers: \"%s\"\n"
             "    group_id: %s\n"
             "    topics: [%s]\n"
             "    concurrency: key\n"
             "    max_inflight: %d\n"
             "    properties: {auto.commit.interval.ms: \"200\", session.timeout.ms: \"6000\", "
             "heartbeat.interval.ms: \"500\"}\n",
             k.brokers, k.group, k.topic, INFLIGHT);
    once_config(&r, "once-kafka", tx);

    char **keys = calloc(r.n_msgs, sizeof *keys);
    SBT_CHECK(keys);
    for (size_t i = 0; i < r.n_msgs; i++) {
        char key[32];
        snprintf(key, sizeof key, "m%zu", i);
        SBT_CHECK((keys[i] = strdup(key)) != NULL);
    }
    uint64_t t0 = sbt_now_ms();
    SBT_CHECK(sbt_kafka_produce(k.brokers, k.topic, -1, (const char *const *)r.bodies,
                                (const char *const *)keys, (int)r.n_msgs, 120000) == 0);
    printf("produced %zu messages in %.1f s\n", r.n_msgs, (double)(sbt_now_ms() - t0) / 1e3);
    for (size_t i = 0; i < r.n_msgs; i++)
        free(keys[i]);
    free(keys);

    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    SBT_CHECK(rd_kafka_conf_set(conf, "bootstrap.servers", k.brokers, err, sizeof err) ==
                  RD_KAFKA_CONF_OK &&
              rd_kafka_conf_set(conf, "group.id", k.group, err, sizeof err) == RD_KAFKA_CONF_OK &&
              rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err) == RD_KAFKA_CONF_OK);
    SBT_CHECK_MSG((k.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err)) != NULL,
                  "kafka: %s", err);

    t0 = sbt_now_ms();
    once_spawn(&r);
    once_kill_at(&r, n * 3 / 10);
    once_kill_at(&r, n * 6 / 10);
    once_finish(&r, 150000, kafka_drained, &k);
    printf("consumed in %.1f s\n", (double)(sbt_now_ms() - t0) / 1e3);
    long lag = topic_lag(&k, k.topic), retry_lag = topic_lag(&k, k.retry_topic);
    SBT_CHECK_MSG(lag == 0 && retry_lag == 0,
                  "group %s: %ld uncommitted on %s, %ld on its retry topic", k.group, lag, k.topic,
                  retry_lag);

    rd_kafka_destroy(k.rk);
    once_cleanup(&r);
    free(k.topic);
    free(k.retry_topic);
    free(k.group);
    printf("ok: every one of %zu events recorded once through two SIGKILLs\n", n);
    return 0;
}
