/* dlq_replay.c: the replay loop over a DLQ backend, shared by the CLI and the admin
 * server's replay jobs (see dlq_replay.h).
 *
 * Design: one blocking loop; a record is acked only after publish_confirmed() succeeded, so
 * nothing is lost (a crash in between gives a duplicate, absorbed by idempotency). Counters
 * are C11 atomics so a job's progress can be read from the loop thread while a worker runs.
 *
 * It does not open or close the backend, print anything, or choose the backend. */
#include "dlq_replay.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <switchboard/error.h>

#include "datetime.h"
#include "errf.h"

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

const char *sb__dlq_replay_id(const sb__dlq_record_t *r, char *buf, size_t n)
{
    size_t len;
    const char *id = sb__dlq_record_event_id(r, &len, buf, n);
    if (!id)
        return "(no id)";
    if (id != buf)
        snprintf(buf, n, "%.*s", (int)(len > n - 1 ? n - 1 : len), id);
    return buf;
}

static void pace(sb__ratelimit_t *rl, const atomic_bool *cancel)
{
    if (!rl)
        return;
    for (;;) {
        int64_t d = sb__ratelimit_delay_us(rl, mono_us());
        if (d <= 0 || (cancel && atomic_load(cancel)))
            return;
        if (d > 200000)
            d = 200000; /* wake up now and then to notice cancel */
        struct timespec ts = {d / 1000000, (long)(d % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
}

static void report(const sb__dlq_replay_opts_t *o, sb__dlq_replay_event_t ev,
                   const sb__dlq_record_t *r, const char *why)
{
    if (!o->on_record)
        return;
    char idb[128];
    o->on_record(o->arg, ev, sb__dlq_replay_id(r, idb, sizeof idb), why);
}

/* true when the record is to be acked (its copy was confirmed). */
static bool replay_one(const sb__dlq_replay_opts_t *o, sb__dlq_replay_progress_t *p,
                       const sb__dlq_record_t *r)
{
    char err[512];
    if (!sb__dlq_filter_replay_allowed(o->filter, r)) {
        atomic_fetch_add(&p->refused, 1);
        snprintf(err, sizeof err, "already replayed %llu times (force to replay anyway)",
                 (unsigned long long)sb__dlq_record_replay_count(r));
        report(o, SB__DLQ_REPLAY_REFUSED, r, err);
        return false;
    }
    if (o->dry_run) {
        atomic_fetch_add(&p->replayed, 1);
        report(o, SB__DLQ_REPLAY_WOULD, r, NULL);
        return false;
    }
    sb__dlq_record_t *copy = NULL;
    int rc = sb__dlq_record_prepare_replay(r, sb__datetime_now_us(), &copy);
    if (rc != SB_EOK) {
        atomic_fetch_add(&p->failed, 1);
        report(o, SB__DLQ_REPLAY_FAILED, r, sb_strerror(rc));
        return false;
    }
    pace(o->rl, o->cancel);
    if (o->cancel && atomic_load(o->cancel)) { /* cancelled while waiting: it stays */
        sb__dlq_record_destroy(copy);
        return false;
    }
    sb__dlq_dest_t dest = {.to = o->to};
    err[0] = '\0';
    rc = o->b->ops->publish_confirmed(o->b, copy, &dest, err, sizeof err);
    sb__dlq_record_destroy(copy);
    if (rc != SB_EOK) {
        atomic_fetch_add(&p->failed, 1);
        report(o, SB__DLQ_REPLAY_FAILED, r, *err ? err : sb_strerror(rc));
        return false;
    }
    return true;
}

int sb__dlq_replay_run(const sb__dlq_replay_opts_t *o, sb__dlq_replay_progress_t *p, char *errstr,
                       size_t errstr_size)
{
    if (!o || !o->b || !o->filter || !p)
        return sb__errf(errstr, errstr_size, SB_EINVAL, "replay: missing argument");
    atomic_store(&p->total, 0);
    atomic_store(&p->seen, 0);
    atomic_store(&p->selected, 0);
    atomic_store(&p->replayed, 0);
    atomic_store(&p->failed, 0);
    atomic_store(&p->refused, 0);
    atomic_store(&p->skipped, 0);
    const sb__dlq_backend_ops_t *ops = o->b->ops;
    uint64_t est = 0;
    if (ops->count(o->b, &est) == SB_EOK)
        atomic_store(&p->total, est);
    uint64_t limit = sb__dlq_filter_limit(o->filter);
    for (;;) {
        if (limit && atomic_load(&p->selected) >= limit)
            break;
        if (o->cancel && atomic_load(o->cancel))
            break;
        sb__dlq_record_t *r = NULL;
        sb__dlq_pos_t *pos = NULL;
        int rc = ops->next(o->b, 0, &r, &pos);
        if (rc == SB_ECLOSED || rc == SB_ETIMEOUT)
            break;
        if (rc == SB_ETOOBIG)
            return sb__errf(errstr, errstr_size, rc,
                            "stopped: no room to record more moved records behind the ones "
                            "that stay (replay with a broader filter, or in order); nothing "
                            "was lost or sent twice");
        if (rc != SB_EOK)
            return sb__errf(errstr, errstr_size, rc, "reading the DLQ failed: %s", sb_strerror(rc));
        atomic_fetch_add(&p->seen, 1);
        bool ack = false;
        if (sb__dlq_filter_match(o->filter, r)) {
            atomic_fetch_add(&p->selected, 1);
            ack = replay_one(o, p, r);
        } else {
            atomic_fetch_add(&p->skipped, 1);
        }
        if (ack) {
            if (ops->ack(o->b, pos) == SB_EOK) {
                atomic_fetch_add(&p->replayed, 1);
            } else {
                atomic_fetch_add(&p->failed, 1);
                report(o, SB__DLQ_REPLAY_FAILED, r, "ack failed (it may be replayed again)");
            }
        } else {
            ops->keep(o->b, pos);
        }
        sb__dlq_record_destroy(r);
        if (o->on_progress)
            o->on_progress(o->arg);
    }
    return SB_EOK;
}
