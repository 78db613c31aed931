/* test_once_amqp.c: effectively-once on RabbitMQ. 50,000 events, each published two or
 * three times with the same Id (message_id too) in a random interleaving, are consumed by
 * `switchboard run` with the record handler and the Redis idempotency store; the consumer
 * is SIGKILLed and restarted twice mid-stream. The ledger must hold every id, every
 * published duplicate skipped (the only repeats allowed: handlers caught by the SIGKILL
 * between their effect and "done", at most prefetch per kill), and the queue (and the
 * retry queue that "another owner holds it" uses) must end empty.
 * The shared body is test_once_common.h. SB_TEST_ONCE_N overrides the size. */
#include "sbtest_amqp.h"
#include "test_once_common.h"

typedef struct amqp_side {
    const char *url;
    char *exchange, *queue, *retry_q;
} amqp_side_t;

static bool amqp_drained(void *ud)
{
    const amqp_side_t *a = ud;
    return sbt_amqp_depth(a->url, a->queue) == 0 && sbt_amqp_depth(a->url, a->retry_q) <= 0;
}

int main(void)
{
    amqp_side_t a = {.url = sbt_service("SB_TEST_AMQP_URL", "RabbitMQ")};
    size_t n = getenv("SB_TEST_ONCE_N") ? strtoul(getenv("SB_TEST_ONCE_N"), NULL, 10) : 50000;
    SBT_CHECK(n >= 1000);
    once_run_t r;
    once_setup(&r, n, "once-amqp");
    r.window = 256; /* prefetch: unacked deliveries, hence handlers run and not yet done */
    a.exchange = sbt_unique_name("sbt.once.x");
    a.queue = sbt_unique_name("sbt.once.q");
    size_t ql = strlen(a.queue) + 32;
    a.retry_q = malloc(ql);
    SBT_CHECK(a.retry_q);
    /* BUSY_RETRY_MS (settle.c) is 1 s: the 1000 ms bucket */
    snprintf(a.retry_q, ql, "%s.retry.1000", a.queue);

    char tx[1024];
    snprintf(tx, sizeof tx,
             "transport:\n"
             "  kind: amqp\n"
             "  amqp: {url: \"%s\", exchange: %s, queue: %s, prefetch: 256, heartbeat: 5s}\n",
             a.url, a.exchange, a.queue);
    once_config(&r, "once-amqp", tx);

    amqp_connection_state_t c = sbt_amqp_connect(a.url);
    SBT_CHECK(c != NULL);
    SBT_CHECK(sbt_amqp_declare_topic_exchange(c, a.exchange) == 0);
    SBT_CHECK(sbt_amqp_declare_queue(c, a.queue, a.exchange, "DataSync.#") == 0);
    uint64_t t0 = sbt_now_ms();
    const char *rk[] = {"DataSync.Completed"};
    SBT_CHECK(sbt_amqp_publish_many(c, a.exchange, rk, true, (const char *const *)r.bodies,
                                    (const char *const *)r.msg_ids, r.n_msgs, NULL, NULL) == 0);
    sbt_amqp_close(c);
    printf("published %zu messages in %.1f s\n", r.n_msgs, (double)(sbt_now_ms() - t0) / 1e3);

    t0 = sbt_now_ms();
    once_spawn(&r);
    once_kill_at(&r, n * 3 / 10);
    once_kill_at(&r, n * 6 / 10);
    once_finish(&r, 120000, amqp_drained, &a);
    printf("consumed in %.1f s\n", (double)(sbt_now_ms() - t0) / 1e3);
    long depth = sbt_amqp_depth(a.url, a.queue);
    long retry_depth = sbt_amqp_depth(a.url, a.retry_q);
    SBT_CHECK_MSG(depth == 0 && retry_depth <= 0, "queue %s holds %ld, its retry queue %ld",
                  a.queue, depth, retry_depth);

    char dlq[256], dlx[256];
    snprintf(dlq, sizeof dlq, "%s.dlq", a.queue);
    snprintf(dlx, sizeof dlx, "%s.dlx", a.exchange);
    const char *qs[] = {a.queue, a.retry_q, dlq, NULL};
    const char *xs[] = {a.exchange, dlx, NULL};
    sbt_amqp_cleanup(a.url, qs, xs);
    once_cleanup(&r);
    free(a.exchange);
    free(a.queue);
    free(a.retry_q);
    printf("ok: every one of %zu events recorded once through two SIGKILLs\n", n);
    return 0;
}
