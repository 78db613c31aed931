/* switchboard_kafka_consumer_lag against the real broker: 1000 events in a new 3-partition
 * topic, `switchboard run` with a `fail` handler whose retries wait 60 s (in-place retries,
 * one message in flight), so nothing is settled and no offset advances; /metrics is polled
 * until the lag series of the 3 partitions appear with a sum of at least 900 (the whole
 * backlog minus what the fetcher may not have seen yet is 1000). The exposition must pass
 * `promtool check metrics` when promtool is installed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "sbtest.h"

#define N        1000
#define PROMTOOL "/usr/bin/promtool"

/* The body of GET /metrics (malloc'd), or NULL when the request failed or was not a 200. */
static char *get_metrics(int port)
{
    char *body;
    int st = sbt_http(port, "GET", "/metrics", NULL, NULL, &body);
    if (st != 200)
        free(body);
    return st == 200 ? body : NULL;
}

/* Sums the lag series of `topic`; *series gets how many there are. */
static long long lag_sum(const char *text, const char *topic, int *series)
{
    char prefix[256];
    snprintf(prefix, sizeof prefix, "switchboard_kafka_consumer_lag{topic=\"%s\",partition=\"",
             topic);
    long long sum = 0;
    *series = 0;
    for (const char *p = strstr(text, prefix); p; p = strstr(p + 1, prefix)) {
        int part;
        long long v;
        if (sscanf(p + strlen(prefix), "%d\"} %lld", &part, &v) == 2) {
            sum += v;
            ++*series;
        }
    }
    return sum;
}

static void promtool_check(const char *text)
{
    if (access(PROMTOOL, X_OK) != 0) {
        fprintf(stderr, "note: %s not installed; promtool check skipped\n", PROMTOOL);
        return;
    }
    char *path = sbt_write_temp(text, ".prom");
    char cmd[512];
    snprintf(cmd, sizeof cmd, PROMTOOL " check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    SBT_CHECK(p != NULL);
    char out[4096];
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    unlink(path);
    free(path);
    SBT_CHECK_MSG(st == 0, "promtool check metrics failed (%d):\n%s", st, out);
}

int main(void)
{
    const char *brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Apache Kafka");
    char *topic = sbt_unique_name("sbt-klag");
    char *group = sbt_unique_name("sbt-klag-g");
    char *log = sbt_unique_name("/tmp/sbt-klag-log");
    SBT_CHECK(sbt_kafka_create_topic(brokers, topic, 3, 30000) == 0);

    char **bodies = calloc(N, sizeof *bodies), **keys = calloc(N, sizeof *keys);
    SBT_CHECK(bodies && keys);
    for (int i = 0; i < N; i++) {
        char b[256], k[32];
        snprintf(b, sizeof b,
                 "{\"Id\":\"%s-%04d\",\"EventType\":\"DataSyncCompletedEvent\","
                 "\"CreationDate\":\"2024-05-01T10:00:00Z\",\"Seq\":%d}",
                 topic, i, i);
        snprintf(k, sizeof k, "k%d", i);
        bodies[i] = strdup(b);
        keys[i] = strdup(k);
        SBT_CHECK(bodies[i] && keys[i]);
    }
    SBT_CHECK(sbt_kafka_produce(brokers, topic, -1, (const char *const *)bodies,
                                (const char *const *)keys, N, 30000) == 0);

    int port = sbt_free_port();
    char y[2048];
    snprintf(y, sizeof y,
             "service: {name: sbt-klag, shutdown_timeout: 3s, max_inflight: 1}\n"
             "log: {level: info, format: text}\n"
             "transport:\n"
             "  kind: kafka\n"
             "  kafka:\n"
             "    brokers: \"%s\"\n"
             "    group_id: %s\n"
             "    topics: [%s]\n"
             "    max_inflight: 1\n"
             "    retry: in_place\n"
             "handlers:\n"
             "  - name: stuck\n"
             "    module: fail\n"
             "    bind: [\"#\"]\n"
             "    config: {delay: 60s}\n"
             "retry: {policy: fixed, base_delay: 60s, max_attempts: 5, jitter: false}\n"
             "idempotency: {store: none}\n"
             "admin: {listen: \"127.0.0.1:%d\"}\n",
             brokers, group, topic, port);
    char *cfg = sbt_write_temp(y, ".yaml");
    const char *args[] = {"run", "-c", cfg, NULL};
    pid_t p = sbt_spawn_switchboard(args, NULL, log);

    uint64_t t0 = sbt_now_ms();
    char *text = NULL;
    int series = 0;
    long long sum = 0;
    while (sbt_now_ms() - t0 < 60000) {
        free(text);
        text = get_metrics(port);
        if (text) {
            sum = lag_sum(text, topic, &series);
            if (series == 3 && sum >= 900)
                break;
        }
        usleep(250 * 1000);
    }
    if (!(series == 3 && sum >= 900 && sum <= N)) {
        fprintf(stderr, "---- last exposition:\n%s\n", text ? text : "(none)");
        char cmd[512];
        snprintf(cmd, sizeof cmd, "tail -n 40 %s >&2", log);
        SBT_CHECK(system(cmd) >= 0);
    }
    SBT_CHECK_MSG(series == 3 && sum >= 900 && sum <= N,
                  "lag: %d series, sum %lld (want 3 series, 900..%d)", series, sum, N);
    SBT_CHECK(strstr(text, "# TYPE switchboard_kafka_consumer_lag gauge") != NULL);
    promtool_check(text);
    printf("ok: kafka consumer lag: 3 partitions, sum %lld of %d\n", sum, N);

    int st = sbt_stop(p, SIGTERM, 30000);
    SBT_CHECK_MSG(st >= 0, "switchboard did not stop (%d)", st);

    free(text);
    for (int i = 0; i < N; i++) {
        free(bodies[i]);
        free(keys[i]);
    }
    free(bodies);
    free(keys);
    unlink(cfg);
    unlink(log);
    free(cfg);
    free(log);
    free(topic);
    free(group);
    return 0;
}
