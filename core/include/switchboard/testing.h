/* switchboard/testing.h: the handler test harness, for teams writing handlers.
 *
 * Runs one handler module through the real intake, dispatch and settlement code on the
 * in-memory transport and the in-memory idempotency store, without any broker, and reports
 * what happened to each event: acked, retried (after which delay), or dead-lettered (with
 * which reason and error), and what the handler published. A retry is reported, not
 * performed: send the event again with an "x-sb-attempts" header to test a later attempt.
 *
 *     sb_test_t *t = sb_test_new("./my_handler.so", "config:\n  channel: sms\n", err, sizeof err);
 *     sb_test_result_t r;
 *     sb_test_send(t, "DataSyncCompletedEvent", "{\"Id\":\"...\",\"JobId\":\"j1\"}", NULL, &r);
 *     assert(r.outcome == SB_TEST_ACKED && r.n_published == 1);
 *     sb_test_destroy(t);
 *
 * Link with switchboard::switchboard (CMake) or `pkg-config --libs switchboard`. One harness
 * per thread at a time; not for production use. */
#ifndef SWITCHBOARD_TESTING_H
#define SWITCHBOARD_TESTING_H

#include "switchboard/common.h"

SB_BEGIN_DECLS

typedef struct sb_test sb_test_t;

typedef enum sb_test_outcome {
    SB_TEST_ACKED = 0,         /* handled (or skipped as a duplicate, or acked by policy) */
    SB_TEST_RETRIED = 1,       /* the message would be retried after retry_delay_ms */
    SB_TEST_DEAD_LETTERED = 2, /* dead-lettered: see reason, error, handler */
    SB_TEST_TIMED_OUT = 3,     /* the harness gave up waiting (a PENDING never completed) */
} sb_test_outcome_t;

typedef struct sb_test_result {
    sb_test_outcome_t outcome;
    uint64_t retry_delay_ms; /* SB_TEST_RETRIED */
    unsigned attempts;       /* the attempt that ended (1 = first delivery) */
    char reason[32];         /* dead letters: decode, schema, unroutable, rejected, ... */
    char error[512];         /* dead letters and retries: why */
    char handler[128];       /* the handler concerned, when there is one */
    size_t n_published;      /* follow-up events published while handling this event */
    int duplicate;           /* acked because the event was handled before */
} sb_test_result_t;

/* Loads the module at `module` (a path to a .so, or a built-in name: log, record, fail) as
 * one handler instance named after the module. `instance_yaml` (may be NULL) is the YAML of
 * that instance as it would appear under `handlers:` in a config file: bind, retry,
 * timeout, blocking, config... On failure returns NULL with the reason in errstr. */
SB_API sb_test_t *sb_test_new(const char *module, const char *instance_yaml, char *errstr,
                              size_t errstr_size);

/* Sends one event: `type` becomes the routing key, `json_body` the body, `headers` an
 * optional NULL-terminated list of name, value pairs. Runs the loop until the event is
 * settled (at most 10 s) and fills *out. Returns 0, or a negative error (bad arguments, the
 * queue is full). */
SB_API int sb_test_send(sb_test_t *t, const char *type, const char *json_body,
                        const char *const *headers, sb_test_result_t *out);

/* Follow-up events published so far (all sends), oldest first; NULL when out of range.
 * Valid until the next send or destroy. */
SB_API size_t sb_test_published_count(sb_test_t *t);
SB_API const char *sb_test_published_type(sb_test_t *t, size_t i);
SB_API const char *sb_test_published_body(sb_test_t *t, size_t i);

/* Releases everything (runs the module's shutdown hook). NULL is a no-op. */
SB_API void sb_test_destroy(sb_test_t *t);

SB_END_DECLS

#endif
