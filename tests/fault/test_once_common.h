/* test_once_common.h: the shared body of the effectively-once proofs (test_once_amqp.c,
 * test_once_kafka.c). Included by exactly one .c per test.
 *
 * N events, each published two or three times with the same Id (a seeded random shuffle
 * interleaves the copies), go through a broker to `switchboard run` with the `record`
 * handler and `idempotency.store: redis` on a private redis-server (so no key outlives the
 * test and the shared instance is never touched). The consumer is SIGKILLed and restarted
 * twice mid-stream. The ledger must then hold every id exactly once: every published
 * duplicate skipped by Redis, and the one repeat no store outside the effect's own storage
 * can prevent (a handler had appended its line when SIGKILL struck, before Redis stored
 * "done"; it runs again once its lease expires) caught by the ledger itself: `record` reads
 * its lines back at start (recover_lines: all of them here, since an event of the first
 * kill's window can come back after the second kill, when its retries outlived the second
 * process) and does not append those events again. Each
 * such catch is logged, and the test checks that every one was an event written in the
 * window before a kill (bounded by the messages in flight, r->window, which the including
 * file sets), so the ledger's own check never stands in for Redis.
 *
 * The seed comes from SB_TEST_SEED when set (to replay a failure), else from the clock; it
 * is printed. The transport-specific part (topology, publishing, "is it drained") is the
 * including file's. */
#ifndef TEST_ONCE_COMMON_H
#define TEST_ONCE_COMMON_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "sbtest.h"

#include "../integration/redis_testsrv.h"

typedef struct once_run {
    size_t n;       /* distinct events */
    size_t n_msgs;  /* messages published (n * 2..3) */
    char **ids;     /* [n] */
    char **bodies;  /* [n_msgs], shuffled copies */
    char **msg_ids; /* [n_msgs], the Id of each copy (borrowed from ids) */
    char *ledger, *cfg, *log, *prefix;
    testsrv_t redis;
    pid_t pid;
    size_t kills[2], n_kills; /* ledger lines when each SIGKILL landed */
    size_t window;            /* messages in flight at most (the crash window's bound) */
} once_run_t;

/* On any exit (a failed check included), our children go too: the consumer and the
 * private redis-server. */
static once_run_t *once_current;
static void once_atexit(void)
{
    if (!once_current)
        return;
    if (once_current->pid > 0) {
        kill(once_current->pid, SIGKILL);
        waitpid(once_current->pid, NULL, 0);
        once_current->pid = 0;
    }
    testsrv_stop(&once_current->redis, SIGKILL);
}

/* xorshift64*: reproducible across libcs for a given seed. */
static uint64_t once_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Builds the events and their shuffled copies, and starts the private Redis. */
static void once_setup(once_run_t *r, size_t n, const char *tag)
{
    memset(r, 0, sizeof *r);
    r->window = 256;
    if (!testsrv_available()) {
        if (getenv("SB_TEST_REQUIRE_ALL") && !strcmp(getenv("SB_TEST_REQUIRE_ALL"), "1"))
            sbt_fail(__FILE__, __LINE__, "redis-server is not installed");
        printf("redis-server not installed: skipped\n");
        exit(SBT_SKIP);
    }
    once_current = r;
    atexit(once_atexit);
    SBT_CHECK_MSG(testsrv_start(&r->redis, false), "private redis-server did not start");
    uint64_t seed = getenv("SB_TEST_SEED") ? strtoull(getenv("SB_TEST_SEED"), NULL, 0)
                                           : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    if (!seed)
        seed = 1;
    printf("seed %llu (SB_TEST_SEED to replay)\n", (unsigned long long)seed);
    uint64_t rs = seed;
    r->n = n;
    r->ids = calloc(n, sizeof *r->ids);
    unsigned char *copies = calloc(n, 1);
    SBT_CHECK(r->ids && copies);
    for (size_t i = 0; i < n; i++) {
        copies[i] = (unsigned char)(2 + once_rand(&rs) % 2);
        r->n_msgs += copies[i];
    }
    r->bodies = calloc(r->n_msgs, sizeof *r->bodies);
    r->msg_ids = calloc(r->n_msgs, sizeof *r->msg_ids);
    SBT_CHECK(r->bodies && r->msg_ids);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char id[80], b[512];
        snprintf(id, sizeof id, "%s-%d-%06zu", tag, (int)getpid(), i);
        /* ~330 bytes, like the benchmark's DataSyncCompletedEvent; EventType for Kafka */
        snprintf(b, sizeof b,
                 "{\"EventType\":\"DataSync.Completed\",\"JobId\":\"job-%06zu\","
                 "\"SourceSystem\":\"crm\",\"TargetSystem\":\"erp\","
                 "\"RecordsProcessed\":%zu,\"CompletedAt\":\"2026-12-01T10:00:00.1234567Z\","
                 "\"Id\":\"%s\",\"CreationDate\":\"2026-12-01T10:00:00.1234567Z\"}",
                 i, i, id);
        SBT_CHECK((r->ids[i] = strdup(id)) != NULL);
        for (unsigned c = 0; c < copies[i]; c++, k++) {
            SBT_CHECK((r->bodies[k] = strdup(b)) != NULL);
            r->msg_ids[k] = r->ids[i];
        }
    }
    free(copies);
    /* Fisher-Yates over the copies: duplicates land anywhere, near or far apart. */
    for (size_t i = r->n_msgs - 1; i > 0; i--) {
        size_t j = (size_t)(once_rand(&rs) % (i + 1));
        char *tb = r->bodies[i], *ti = r->msg_ids[i];
        r->bodies[i] = r->bodies[j];
        r->msg_ids[i] = r->msg_ids[j];
        r->bodies[j] = tb;
        r->msg_ids[j] = ti;
    }
    printf("%zu events, %zu messages (%.2f copies each)\n", r->n, r->n_msgs,
           (double)r->n_msgs / (double)r->n);
    r->prefix = sbt_unique_name("sbt:once:");
    r->ledger = sbt_write_temp("", ".jsonl");
    r->log = sbt_write_temp("", ".log");
}

/* Writes the config: `transport_yaml` is the whole `transport:` block. A short lease lets
 * the claims a killed consumer held expire soon after its restart (the dispatcher makes it
 * at least the handler's timeout + 5 s, hence `timeout: 1s`: 6 s). */
static void once_config(once_run_t *r, const char *name, const char *transport_yaml)
{
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "service: {name: %s, shutdown_timeout: 20s}\n"
             "admin: {listen: \"\"}\n"
             "log: {level: info, format: text}\n"
             "%s"
             "idempotency:\n"
             "  store: redis\n"
             "  redis: {url: \"redis://127.0.0.1:%d/0\", prefix: \"%s\", lease: 1s, ttl: 1h}\n"
             "handlers:\n"
             "  - {name: rec, module: record, bind: [\"DataSync.#\"], timeout: 1s,\n"
             "     config: {path: %s, recover_lines: %zu}}\n",
             name, transport_yaml, r->redis.port, r->prefix, r->ledger, r->n_msgs);
    r->cfg = sbt_write_temp(yaml, ".yaml");
}

static pid_t once_spawn(once_run_t *r)
{
    const char *args[] = {"run", "-c", r->cfg, NULL};
    return r->pid = sbt_spawn_switchboard(args, NULL, r->log);
}

/* Waits until the ledger holds `lines` lines, then SIGKILLs the consumer and starts it
 * again. The kill must land mid-stream. */
static void once_kill_at(once_run_t *r, size_t lines)
{
    SBT_CHECK_MSG(sbt_wait_lines(r->ledger, lines, 60000), "no progress to %zu (log: %s)", lines,
                  r->log);
    int st = sbt_stop(r->pid, SIGKILL, 5000);
    r->pid = 0;
    SBT_CHECK(st == 128 + SIGKILL);
    size_t at = sbt_count_lines(r->ledger);
    printf("killed with %zu ledger lines\n", at);
    SBT_CHECK(r->n_kills < 2);
    r->kills[r->n_kills++] = at;
    SBT_CHECK_MSG(at < r->n, "the consumer finished before the kill: not a mid-stream test");
    once_spawn(r);
}

static int once_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct once_stats {
    size_t lines, missing, unexpected, bad_dups, crash_dups, torn;
} once_stats_t;

/* Reads the ledger. Every id must be in it and no line may be foreign. The copies the
 * publisher duplicated must all have been skipped: an id may appear twice only as a
 * re-execution caused by a kill, i.e. its first line is among the last `window` lines
 * written before a SIGKILL and its second after it. That is the one gap no idempotency
 * store can close for an effect outside its own transaction: the handler appended the line,
 * then the process died before Redis stored "done"; the claim's lease expires and the event
 * runs again.
 *
 * A SIGKILL can also tear the line being written (Linux checks for fatal signals between
 * the pages of one write(2)), and the restarted consumer then appends its first line right
 * after the fragment. Such a line is read from its last `{"id":`; the fragment (an effect
 * cut short, redone after the restart) is counted in `torn`, not as a record. */
static void once_scan(const once_run_t *r, bool report, once_stats_t *st)
{
    memset(st, 0, sizeof *st);
    const char **sorted = malloc(r->n * sizeof *sorted);
    size_t *first = malloc(r->n * sizeof *first);
    unsigned *seen = calloc(r->n, sizeof *seen);
    SBT_CHECK(sorted && first && seen);
    memcpy(sorted, r->ids, r->n * sizeof *sorted);
    qsort(sorted, r->n, sizeof *sorted, once_cmp_str);
    FILE *f = fopen(r->ledger, "r");
    SBT_CHECK(f != NULL);
    char line[8192];
    for (size_t lineno = 0; fgets(line, sizeof line, f); lineno++) {
        st->lines++;
        json_t *j = json_loads(line, 0, NULL);
        if (!j) {
            char *last = line, *p;
            while ((p = strstr(last + 1, "{\"id\":")) != NULL)
                last = p;
            if (last != line && (j = json_loads(last, 0, NULL)) != NULL) {
                st->torn++;
                if (report)
                    printf("line %zu starts with a fragment torn by a SIGKILL: %.*s\n", lineno + 1,
                           (int)(last - line), line);
            }
        }
        const char *id = j ? json_string_value(json_object_get(j, "id")) : NULL;
        const char **hit = id ? bsearch(&id, sorted, r->n, sizeof *sorted, once_cmp_str) : NULL;
        if (!hit) {
            st->unexpected++;
            if (report)
                fprintf(stderr, "line %zu: not a line of ours: %s", lineno + 1, line);
        } else {
            size_t i = (size_t)(hit - sorted);
            if (seen[i]++ == 0) {
                first[i] = lineno;
            } else {
                bool in_window = false;
                for (size_t k = 0; k < r->n_kills; k++)
                    if (seen[i] == 2 && first[i] < r->kills[k] &&
                        first[i] + r->window >= r->kills[k] && lineno >= r->kills[k])
                        in_window = true;
                if (in_window) {
                    st->crash_dups++;
                } else if (st->bad_dups++ < 5 && report) {
                    fprintf(stderr, "%s: line %zu repeats line %zu (kills at %zu, %zu)\n", id,
                            lineno + 1, first[i] + 1, r->kills[0], r->kills[1]);
                }
            }
        }
        json_decref(j);
    }
    fclose(f);
    for (size_t i = 0; i < r->n; i++)
        st->missing += seen[i] == 0;
    free(sorted);
    free(first);
    free(seen);
}

/* The events `record` did not append again because its ledger held them from before a
 * restart (the log says so for each): every one must have been written in the window before
 * a kill, i.e. a re-run of an effect whose "done" the kill kept from Redis. Returns how many
 * there were. */
static size_t once_check_recovered(const once_run_t *r)
{
    static const char mark[] = " is in the ledger already";
    size_t n = 0, cap = 64;
    char **ids = malloc(cap * sizeof *ids);
    SBT_CHECK(ids);
    FILE *f = fopen(r->log, "r");
    SBT_CHECK(f != NULL);
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        char *end = strstr(line, mark), *start = end;
        if (!end)
            continue;
        while (start > line && start[-1] != ' ')
            start--;
        if (n == cap)
            SBT_CHECK((ids = realloc(ids, (cap *= 2) * sizeof *ids)) != NULL);
        SBT_CHECK((ids[n++] = strndup(start, (size_t)(end - start))) != NULL);
    }
    fclose(f);
    qsort(ids, n, sizeof *ids, once_cmp_str);
    size_t *at = malloc((n ? n : 1) * sizeof *at);
    SBT_CHECK(at);
    for (size_t i = 0; i < n; i++)
        at[i] = SIZE_MAX;
    f = fopen(r->ledger, "r");
    SBT_CHECK(f != NULL);
    for (size_t lineno = 0; fgets(line, sizeof line, f); lineno++) {
        json_t *j = json_loads(line, 0, NULL);
        const char *id = j ? json_string_value(json_object_get(j, "id")) : NULL;
        char **hit = id ? bsearch(&id, ids, n, sizeof *ids, once_cmp_str) : NULL;
        if (hit && at[hit - ids] == SIZE_MAX)
            at[hit - ids] = lineno;
        json_decref(j);
    }
    fclose(f);
    for (size_t i = 0; i < n; i++) {
        bool in_window = false;
        for (size_t k = 0; k < r->n_kills; k++)
            if (at[i] < r->kills[k] && at[i] + r->window >= r->kills[k])
                in_window = true;
        SBT_CHECK_MSG(in_window,
                      "%s: the ledger kept it from being appended again, but its line (%zu) "
                      "was not written just before a kill (at %zu, %zu): Redis should have "
                      "skipped it (log %s)",
                      ids[i], at[i] + 1, r->kills[0], r->kills[1], r->log);
        free(ids[i]);
    }
    free(ids);
    free(at);
    return n;
}

/* The verdict (see once_scan). */
static void once_check_ledger(once_run_t *r)
{
    once_stats_t st;
    once_scan(r, true, &st);
    size_t recovered = once_check_recovered(r);
    printf("ledger: %zu lines for %zu events: %zu missing, %zu unexpected, %zu duplicates "
           "not skipped, %zu re-executed after a SIGKILL between effect and \"done\"; "
           "%zu such re-runs caught by the ledger's read-back (bound %zu per kill), %zu torn "
           "by a SIGKILL\n",
           st.lines, r->n, st.missing, st.unexpected, st.bad_dups, st.crash_dups, recovered,
           r->window, st.torn);
    SBT_CHECK_MSG(st.missing == 0 && st.unexpected == 0 && st.bad_dups == 0 && st.crash_dups == 0 &&
                      recovered <= r->window * r->n_kills && st.torn <= r->n_kills,
                  "not effectively once (ledger %s, log %s)", r->ledger, r->log);
}

/* Waits until every id is in the ledger; then until drained(ud) (the broker holds no copy
 * any more) has held for a second; stops the consumer with SIGTERM and checks the ledger
 * for exactly-once. */
static void once_finish(once_run_t *r, int timeout_ms, bool (*drained)(void *ud), void *ud)
{
    once_stats_t st = {.missing = r->n};
    uint64_t deadline = sbt_now_ms() + (uint64_t)timeout_ms;
    while (sbt_now_ms() < deadline) {
        if (sbt_count_lines(r->ledger) >= r->n) {
            once_scan(r, false, &st);
            if (st.missing == 0)
                break;
        }
        usleep(200000);
    }
    SBT_CHECK_MSG(st.missing == 0, "%zu of %zu events never recorded (ledger %s, log %s)",
                  st.missing, r->n, r->ledger, r->log);
    /* The later copies of each event are still being skipped: wait for the broker to hand
     * out the last one and see it settled. */
    uint64_t quiet_since = 0;
    while (sbt_now_ms() < deadline) {
        if (drained(ud)) {
            if (!quiet_since)
                quiet_since = sbt_now_ms();
            else if (sbt_now_ms() - quiet_since >= 1000)
                break;
        } else {
            quiet_since = 0;
        }
        usleep(200000);
    }
    int status = sbt_stop(r->pid, SIGTERM, 25000);
    r->pid = 0;
    SBT_CHECK_MSG(status == 0, "switchboard exited with %d (log: %s)", status, r->log);
    once_check_ledger(r);
}

static void once_cleanup(once_run_t *r)
{
    once_current = NULL;
    testsrv_cleanup(&r->redis);
    if (getenv("SB_TEST_KEEP")) {
        printf("kept: ledger %s, log %s, config %s\n", r->ledger, r->log, r->cfg);
    } else {
        unlink(r->ledger);
        unlink(r->cfg);
        unlink(r->log);
    }
    for (size_t i = 0; i < r->n_msgs; i++)
        free(r->bodies[i]);
    for (size_t i = 0; i < r->n; i++)
        free(r->ids[i]);
    free(r->bodies);
    free(r->msg_ids);
    free(r->ids);
    free(r->prefix);
    free(r->ledger);
    free(r->cfg);
    free(r->log);
}

#endif
