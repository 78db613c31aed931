/* sbtest.h: the test-support library shared by every integration and fault test.
 *
 * - Service discovery: tests/run.sh exports SB_TEST_AMQP_URL, SB_TEST_REDIS_URL and
 *   SB_TEST_KAFKA_BROKERS. A test whose service is not configured is skipped (exit 77)
 *   unless SB_TEST_REQUIRE_ALL=1, which run.sh sets, so CI never silently skips.
 * - Unique names for queues, topics, groups and keys, so tests never share state.
 * - Wait-until helpers with a deadline: tests poll a predicate, never sleep blindly.
 * - Small blocking publish/read helpers for RabbitMQ (rabbitmq-c) and Kafka (librdkafka).
 *   They are test-side clients of the real brokers, not mocks of anything.
 *
 * Failures inside helpers print a reason to stderr and return an error; the SBT_CHECK
 * macros abort the test with the file and line. */
#ifndef SBTEST_H
#define SBTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <amqp.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#define SBT_SKIP 77

/* Abort the test (exit 1) with a message when `cond` is false. */
#define SBT_CHECK(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            sbt_fail(__FILE__, __LINE__, "check failed: %s", #cond);                               \
    } while (0)
#define SBT_CHECK_MSG(cond, ...)                                                                   \
    do {                                                                                           \
        if (!(cond))                                                                               \
            sbt_fail(__FILE__, __LINE__, __VA_ARGS__);                                             \
    } while (0)

_Noreturn void sbt_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Value of a service variable, or skips the test (exit 77), or fails it when
 * SB_TEST_REQUIRE_ALL=1. `what` names the service in the message. */
const char *sbt_service(const char *var, const char *what);

/* "<prefix>-<pid>-<counter>-<random>": unique per call, per process and per run.
 * Static storage is not used: the caller frees with free(). */
char *sbt_unique_name(const char *prefix);

uint64_t sbt_now_ms(void);

/* Polls pred(ud) every poll_ms until it is true or timeout_ms passed. True if it held. */
bool sbt_wait_until(bool (*pred)(void *ud), void *ud, int timeout_ms, int poll_ms);

/* ---- child processes and the record ledger ------------------------------------------- */

/* Writes `text` to a new temporary file (mkstemp under /tmp, `suffix` appended, e.g.
 * ".yaml"); returns its malloc'd path. */
char *sbt_write_temp(const char *text, const char *suffix);

/* Starts `switchboard <args...>` (SB_BIN, NULL-terminated args) with stdout and stderr
 * appended to log_path (may be NULL: inherited). Extra environment "K=V" strings may be
 * given in env (NULL-terminated, may be NULL). Returns the pid. */
pid_t sbt_spawn_switchboard(const char *const *args, const char *const *env, const char *log_path);

/* Sends sig to pid and waits up to timeout_ms for it to exit; returns its exit status
 * (128+signal if killed by one), or -1 if it did not exit in time (then it is SIGKILLed). */
int sbt_stop(pid_t pid, int sig, int timeout_ms);

/* Waits until the file at path has at least `lines` lines (the record ledger), polling;
 * true if reached before timeout_ms. */
bool sbt_wait_lines(const char *path, size_t lines, int timeout_ms);
size_t sbt_count_lines(const char *path);
/* Lines of the file at path that contain needle (0 when it cannot be read). */
size_t sbt_grep(const char *path, const char *needle);

/* Reads the record ledger (one JSON object per line with "id") and counts occurrences per
 * id of expected[0..n): *missing gets how many expected ids never appear, *dups how many
 * appear more than once. Ids not in `expected` are counted in *unexpected. */
void sbt_ledger_check(const char *path, const char *const *expected, size_t n, size_t *missing,
                      size_t *dups, size_t *unexpected);

/* Runs `switchboard <head...> <tail...>` (SB_BIN; both NULL-terminated, tail may be NULL; at
 * most 60 arguments) and waits for it. Its stdout goes to out_path and its stderr to err_path
 * (each truncated first; NULL: inherited). Our buffered output is flushed before the fork, so
 * the child cannot write it again. Returns the exit status (128+signal if killed by one). */
int sbt_run_cli(const char *const *head, const char *const *tail, const char *out_path,
                const char *err_path);

/* "N <word>" from the summary line `switchboard dlq` wrote to err_path (e.g. word "purged"
 * in "... 12 purged ..."): N, or -1 when no summary line names it (the last one wins). */
long sbt_dlq_summary_count(const char *err_path, const char *word);

/* Reads a file of one JSON document per line (`dlq list --json`, the record ledger) into a
 * new array the caller owns (json_decref). A line that is not JSON fails the test. */
json_t *sbt_load_json_lines(const char *path);

/* ---- allocation-failure sweeps ---------------------------------------------------------- */

/* An allocator for sb_set_allocator(): each call counts in sbt_alloc_count, and the call
 * that makes it equal sbt_fail_at returns NULL (0: none fails). A sweep sets sbt_fail_at to
 * 1, 2, ... and resets sbt_alloc_count before each run. Not thread-safe. */
extern int sbt_fail_at, sbt_alloc_count;
void *sbt_failing_malloc(size_t n);
void *sbt_failing_realloc(void *p, size_t n);

/* ---- HTTP (the admin endpoint) ---------------------------------------------------------- */

/* A loopback TCP port that was free a moment ago (bind to port 0, read it, close): for an
 * admin listener, or as a port where nothing listens. */
int sbt_free_port(void);

/* One HTTP/1.1 request to 127.0.0.1:port with Connection: close; token (may be NULL) is sent
 * as "Authorization: Bearer <token>" and body (may be NULL) as a JSON body. Each send and
 * receive waits at most 5 s. Returns the status, or -1 when nothing answered (no listener, no
 * status line). When resp_body is not NULL it gets the response body, malloc'd and
 * NUL-terminated ("" when there is none), or NULL on -1: the caller frees it. */
int sbt_http(int port, const char *method, const char *path, const char *token, const char *body,
             char **resp_body);

/* ---- RabbitMQ --------------------------------------------------------------------------- */

/* Connects and opens channel 1. URL as amqp://user:pass@host:port/vhost. NULL on failure,
 * with the reason on stderr. */
amqp_connection_state_t sbt_amqp_connect(const char *url);
void sbt_amqp_close(amqp_connection_state_t c);

/* Declares a queue (durable, not exclusive, not auto-delete) and optionally binds it to
 * `exchange` with `binding_key` (skipped when exchange is NULL). 0 or -1. */
int sbt_amqp_declare_queue(amqp_connection_state_t c, const char *queue, const char *exchange,
                           const char *binding_key);
int sbt_amqp_declare_topic_exchange(amqp_connection_state_t c, const char *exchange);
int sbt_amqp_delete_queue(amqp_connection_state_t c, const char *queue);
int sbt_amqp_delete_exchange(amqp_connection_state_t c, const char *exchange);

/* Publishes one persistent message with optional message_id and type, under publisher
 * confirms (the call waits for the broker's ack). 0 or -1. */
int sbt_amqp_publish(amqp_connection_state_t c, const char *exchange, const char *routing_key,
                     const void *body, size_t len, const char *message_id, const char *type);

/* basic.get with a deadline: waits up to timeout_ms for a message, acks it, and returns a
 * malloc'd copy of the body (NUL-terminated; length in *len). NULL when none arrived. */
char *sbt_amqp_get(amqp_connection_state_t c, const char *queue, size_t *len, int timeout_ms);

/* Number of ready messages in a queue (passive declare), or -1. */
long sbt_amqp_queue_depth(amqp_connection_state_t c, const char *queue);

/* ---- Kafka ------------------------------------------------------------------------------ */

/* Creates a topic and waits until its metadata shows every partition with a leader. */
int sbt_kafka_create_topic(const char *brokers, const char *topic, int partitions, int timeout_ms);

/* Produces n messages (values[i], optional keys[i]) to a partition (-1: partitioner) and
 * waits for every delivery report. 0 when all were delivered. */
int sbt_kafka_produce(const char *brokers, const char *topic, int partition,
                      const char *const *values, const char *const *keys, int n, int timeout_ms);

/* A consumer in `group` with auto-commit off and earliest reset, subscribed to `topic`.
 * Extra "key=value" properties may follow, terminated by NULL. */
rd_kafka_t *sbt_kafka_consumer(const char *brokers, const char *group, const char *topic, ...);

/* Polls until a message with a payload arrives or timeout_ms passes. The caller destroys the
 * message with rd_kafka_message_destroy(). NULL on timeout. Errors such as partition EOF
 * are skipped. */
rd_kafka_message_t *sbt_kafka_poll(rd_kafka_t *consumer, int timeout_ms);

/* Deletes the topics names[0..n) (n may be 0) through the admin API and waits up to 15 s
 * for the broker's answer. Meant for cleanup, also at exit after a failed check: errors are
 * printed to stderr (except "does not exist") and counted, never fatal. Returns how many
 * were not deleted (all n when the broker did not answer); the names stay the caller's. */
size_t sbt_kafka_delete_topics(const char *brokers, const char *const *names, size_t n);

/* The same for consumer groups: deletes groups names[0..n) and their committed offsets. */
size_t sbt_kafka_delete_groups(const char *brokers, const char *const *names, size_t n);

#endif
