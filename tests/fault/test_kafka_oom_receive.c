/* The Kafka transport out of memory while receiving, on the real broker: an in-process
 * pipeline (kafka transport, `record` ledger) consumes 300 events of a 1-partition topic
 * with an allocator that refuses the transport's allocation for the 100th message. That
 * message is not lost (nor are the ones after it skipped past it): the partition is sought
 * back to it, it is received again, and every event is handled exactly once. */
#include <event2/event.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "config.h"
#include "kafka_common.h"
#include "kafka_tx.h"
#include "pipeline.h"
#include "sbtest.h"

enum { N = 300, FAIL_AT = 100 };

static atomic_int kmsg_allocs, refused;

/* sizeof(kmsg_t) with no headers: the transport's allocation for one received message
 * (the test producer sets no headers). */
static void *oom_malloc(size_t n)
{
    if (n == sizeof(kmsg_t) && atomic_fetch_add(&kmsg_allocs, 1) + 1 == FAIL_AT) {
        atomic_fetch_add(&refused, 1);
        return NULL;
    }
    return malloc(n);
}

typedef struct watch {
    sb__pipeline_t *p;
    const char *ledger;
    uint64_t deadline;
} watch_t;

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    watch_t *w = arg;
    if (sbt_count_lines(w->ledger) >= N || sbt_now_ms() > w->deadline)
        sb__runtime_stop(w->p->rt);
}

int main(void)
{
    const char *brokers = sbt_service("SB_TEST_KAFKA_BROKERS", "Kafka");
    SBT_CHECK(sb_set_allocator(oom_malloc, realloc, free) == SB_EOK);
    char *topic = sbt_unique_name("sbt-oom");
    char *group = sbt_unique_name("sbt-oom-g");
    char *ledger = sbt_write_temp("", ".jsonl");
    SBT_CHECK(sbt_kafka_create_topic(brokers, topic, 1, 30000) == 0);
    kt_events_t ev;
    kt_events_make(&ev, N, 0, NULL);
    SBT_CHECK(
        sbt_kafka_produce(brokers, topic, 0, (const char *const *)ev.bodies, NULL, N, 30000) == 0);

    char yaml[2048];
    int n =
        snprintf(yaml, sizeof yaml,
                 "service: {name: oom-receive, shutdown_timeout: 10s}\n"
                 "log: {level: info, format: text}\n"
                 "transport:\n"
                 "  kind: kafka\n"
                 "  kafka: {brokers: \"%s\", group_id: %s, topics: [%s], create_topics: false}\n"
                 "idempotency: {store: none}\n"
                 "handlers:\n"
                 "  - {name: rec, module: record, bind: [\"#\"], config: {path: %s}}\n",
                 brokers, group, topic, ledger);
    char err[512] = "";
    sb__config_t *cfg = NULL;
    SBT_CHECK_MSG(sb__config_load_buffer(yaml, (size_t)n, "oom.yaml", &cfg, err, sizeof err) ==
                      SB_EOK,
                  "config: %s", err);
    sb__pipeline_configure_logging(cfg);
    sb__pipeline_t *p = NULL;
    SBT_CHECK_MSG(sb__pipeline_new(cfg, &p, err, sizeof err) == SB_EOK, "pipeline: %s", err);
    SBT_CHECK_MSG(sb__pipeline_start(p, err, sizeof err) == SB_EOK, "start: %s", err);
    watch_t w = {p, ledger, sbt_now_ms() + 60000};
    struct event *t = event_new(sb__runtime_base(p->rt), -1, EV_PERSIST, tick, &w);
    struct timeval every = {0, 100000};
    SBT_CHECK(t && event_add(t, &every) == 0);
    int status = sb__runtime_run(p->rt);
    event_free(t);
    sb__pipeline_destroy(p);
    sb__config_destroy(cfg);

    SBT_CHECK_MSG(atomic_load(&refused) == 1, "the allocation was refused %d times",
                  atomic_load(&refused));
    size_t missing, dups, unexpected;
    sbt_ledger_check(ledger, (const char *const *)ev.ids, N, &missing, &dups, &unexpected);
    SBT_CHECK_MSG(missing == 0 && dups == 0 && unexpected == 0,
                  "ledger: %zu missing, %zu twice, %zu unexpected", missing, dups, unexpected);
    SBT_CHECK_MSG(status == 0, "the run ended with %d", status);
    printf("ok: message %d could not be allocated on receipt; it was fetched again and all %d "
           "events were handled once\n",
           FAIL_AT, N);

    const char *topics[] = {topic};
    sbt_kafka_delete_topics(brokers, topics, 1);
    unlink(ledger);
    kt_events_free(&ev);
    free(topic);
    free(group);
    free(ledger);
    return 0;
}
