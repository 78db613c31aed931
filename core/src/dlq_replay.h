/* dlq_replay.h: the replay loop shared by `switchboard dlq replay` and the admin server's
 * replay jobs (POST /replay): next() -> filter -> max-replays -> [pace, publish_confirmed]
 * -> ack() or keep(), over an open DLQ backend (dlq_backend.h).
 *
 * Progress is reported through atomic counters that another thread may read while the loop
 * runs (the admin server's GET /jobs/{id}), and through optional callbacks for each record
 * that failed, was refused, or (dry run) would move. The loop blocks (the backend does); it
 * never runs on the daemon's loop thread. */
#ifndef SB_DLQ_REPLAY_H
#define SB_DLQ_REPLAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dlq_backend.h"
#include "dlq_filter.h"
#include "ratelimit.h"

/* Counters, updated by the loop, readable from any thread. */
typedef struct sb__dlq_replay_progress {
    atomic_uint_fast64_t total;    /* the backend's estimate at the start */
    atomic_uint_fast64_t seen;     /* records read */
    atomic_uint_fast64_t selected; /* records the filter selected */
    atomic_uint_fast64_t replayed; /* confirmed and acked (dry run: would move) */
    atomic_uint_fast64_t failed;   /* publish or ack failed (the record stays, or may repeat) */
    atomic_uint_fast64_t refused;  /* beyond max-replays without force */
    atomic_uint_fast64_t skipped;  /* read but not selected by the filter */
} sb__dlq_replay_progress_t;

typedef enum {
    SB__DLQ_REPLAY_FAILED,  /* why: the error */
    SB__DLQ_REPLAY_REFUSED, /* why: the replay count */
    SB__DLQ_REPLAY_WOULD    /* dry run: would replay; why: NULL */
} sb__dlq_replay_event_t;

typedef struct sb__dlq_replay_opts {
    sb__dlq_backend_t *b;           /* open, writable unless dry_run */
    const sb__dlq_filter_t *filter; /* required; its limit is honoured */
    const char *to;                 /* NULL: the original destination */
    bool dry_run;                   /* publish and ack nothing */
    sb__ratelimit_t *rl;            /* NULL: as fast as the broker confirms */
    const atomic_bool *cancel;      /* NULL, or stops the loop before the next record */
    /* Called on the loop's thread for each failed, refused or (dry run) selected record;
     * id is the event id or "(no id)". May be NULL. */
    void (*on_record)(void *arg, sb__dlq_replay_event_t ev, const char *id, const char *why);
    void *arg;
    /* Called after every record (e.g. a TTY progress line). May be NULL. */
    void (*on_progress)(void *arg);
} sb__dlq_replay_opts_t;

/* Runs the loop until the scan ends, the limit is reached or cancel is set. Counters in *p
 * are set to zero first. SB_EOK (even when records failed; see p->failed), or the error
 * that stopped reading the DLQ (SB_EUNAVAILABLE: the broker went away), with a line in
 * errstr. */
int sb__dlq_replay_run(const sb__dlq_replay_opts_t *o, sb__dlq_replay_progress_t *p, char *errstr,
                       size_t errstr_size);

/* The record's event id in buf (or "(no id)"). */
const char *sb__dlq_replay_id(const sb__dlq_record_t *r, char *buf, size_t n);

#endif
