/* transport_kafka.c: the Kafka transport on librdkafka (see transport_kafka.h).
 *
 * Design:
 *  - One wake-up pipe. librdkafka writes to it (rd_kafka_queue_io_event_enable) when the
 *    consumer queue (messages, rebalances, logs and errors, the main queue being forwarded
 *    to it) or the producer's main queue (delivery reports, logs) becomes non-empty; a
 *    libevent read event then polls both with timeout 0, at most FETCH_BATCH messages per
 *    turn. A full batch re-arms a zero timer ("kick") for the rest, so nothing spins while
 *    idle and a busy topic cannot starve the loop. Every librdkafka callback therefore runs
 *    on the loop thread.
 *  - Fetched messages go to a per-partition list in offset order and stay there until they
 *    are committed: QUEUED (not handed over), INFLIGHT (the dispatcher has it, or its retry
 *    or dead-letter copy is being produced), DONE. The DONE prefix of a list is popped and
 *    its next offset stored (rd_kafka_offsets_store, once per pump turn); librdkafka's
 *    auto-commit commits stored offsets periodically, and a synchronous commit runs on
 *    revoke and at shutdown. enable.auto.offset.store is forced off (kafka_client.c): an
 *    offset is never stored past a message that is not settled.
 *  - Ordering: concurrency "partition" hands over a partition's head only when nothing of
 *    that partition is in flight; "key" scans a bounded window (KEY_WINDOW) of the list and
 *    hands over every QUEUED message whose key (64-bit hash; a collision only serialises)
 *    has no earlier unsettled message. A global cap (max_inflight) and the dispatcher's
 *    pause() bound what is in flight.
 *  - Settlements never free or hand over anything synchronously: they mark the message and
 *    queue its partition for the pump, so a handler that settles inside the sink call cannot
 *    recurse into the transport (the memory transport's rule).
 *  - Backpressure, in two layers. (1) The transport takes messages from librdkafka only
 *    while the partitions that are flowing hold fewer than partition_backlog / 2 local
 *    messages (queued, in flight, settled but not stored); what it does not take stays in
 *    librdkafka's queue, bounded by queued.min.messages and queued.max.messages.kbytes
 *    (kafka_client.c: 100000 and 4 MiB unless overridden), where librdkafka stops
 *    fetching on its own. (2) A partition that does not drain is paused with
 *    rd_kafka_pause_partitions so it cannot starve the others: one whose head waits for a
 *    retry delay, for the wait; one that held the fetch back for SLOW_MS with at least half
 *    of the flowing backlog (a slow handler, a slow key), until it drained to an eighth of
 *    partition_backlog (reconcile_pauses). Memory is bounded by 4 MiB + partition_backlog
 *    messages whatever the backlog on the broker (no partition is paused for slowness when
 *    that would pass it).
 *    librdkafka 2.0.2 notices room in a queue that stopped its fetcher only at its broker
 *    thread's next wake-up (up to 1 s): a consumer slower than the fetcher would alternate
 *    bursts and ~1 s pauses (measured: 150-200k msgs/s, and a 24 MiB queue to reach even
 *    that). watch_fetcher() therefore wakes the fetcher (kafka_waker.h) when a queue that
 *    came near its bound drained to 30%; with that, a small bound costs nothing (measured
 *    on 1,000,000 events: 4 MiB + 10,000 messages, 28 MB max RSS, at the raw client's rate).
 *  - retry_later: "topic" produces a copy to <topic><retry_topic_suffix> carrying its due time
 *    (kafka_produce.c); the consumer is subscribed to those topics too and holds a retry
 *    partition (paused, with a timer) until its head is due, which keeps the retry topic's
 *    order (Spring Kafka's approach, with one retry topic per topic: a longer delay at the
 *    head delays the shorter ones behind it).
 *    "in_place" keeps the message at its place, holds the partition for the delay and hands
 *    it over again with the next attempt number (order kept, partition blocked meanwhile).
 *    The mode is transport-wide: the dispatcher settles messages, not handlers, so a
 *    per-handler choice is not offered.
 *  - Rebalances (eager or cooperative, rd_kafka_rebalance_protocol()): on revoke, queued
 *    messages of the revoked partitions are dropped and nothing more is handed over; the
 *    unassign waits (asynchronously, the loop keeps running) until their in-flight messages
 *    settled or revoke_timeout passed; then offsets are stored, committed synchronously, and
 *    the partitions released. Messages still in flight then become orphans: their later
 *    settlement stores nothing. A lost assignment is released at once without a commit.
 *
 * Lag (sb__kafka_lag) is read at scrape time from librdkafka's cached high watermark and
 * our own positions, never with a broker round trip.
 *
 * Not here: decoding (intake), per-handler retry modes, rendering the lag metric, producing
 * (retry copies, dead letters, follow-up events and their delivery reports are
 * kafka_produce.c's; the private structs are in kafka_tx.h), and creating and configuring
 * the librdkafka clients: their defaults, the embedded cluster, the retry/DLQ topics and the
 * subscription are kafka_client.c's. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "datetime.h"
#include "errf.h"
#include "kafka_client.h"
#include "kafka_conf.h"
#include "kafka_produce.h"
#include "kafka_tx.h"
#include "kafka_waker.h"
#include "log.h"
#include "transport_kafka.h"

#define FETCH_BATCH        8192 /* messages taken from librdkafka per loop turn */
#define PUMP_BUDGET        4096 /* hand-overs per loop turn */
#define KEY_WINDOW         256  /* messages scanned per partition for key concurrency */
#define RELEASE_BACKOFF_MS 500  /* a released message waits this long before it is retried */
#define SLOW_MS            1000 /* the fetch held back this long by one partition: pause it */

static const sb__transport_ops_t kafka_ops;

/* ---- small helpers ---------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    return sb__datetime_now_us() / 1000;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

/* Decimal header value; false when malformed. */
static bool parse_u64(const char *v, size_t n, uint64_t *out)
{
    if (!v || n == 0 || n > 19)
        return false;
    uint64_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        acc = acc * 10 + (uint64_t)(v[i] - '0');
    }
    *out = acc;
    return true;
}

static bool is_regex(const char *topic)
{
    return topic[0] == '^';
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return lx && ls > lx && !memcmp(s + ls - lx, suffix, lx);
}

/* ---- libevent scheduling ---------------------------------------------------------------- */

static void kick(kafkatx_t *tx)
{
    static const struct timeval zero = {0, 0};
    if (tx->kick && !tx->destroying && !evtimer_pending(tx->kick, NULL))
        evtimer_add(tx->kick, &zero);
}

static void mark_ready(kafkatx_t *tx, kpart_t *kp)
{
    if (kp->in_ready)
        return;
    kp->in_ready = true;
    kp->next_ready = NULL;
    if (tx->ready_tail)
        tx->ready_tail->next_ready = kp;
    else
        tx->ready_head = kp;
    tx->ready_tail = kp;
}

static kpart_t *pop_ready(kafkatx_t *tx)
{
    kpart_t *kp = tx->ready_head;
    if (!kp)
        return NULL;
    tx->ready_head = kp->next_ready;
    if (!tx->ready_head)
        tx->ready_tail = NULL;
    kp->in_ready = false;
    kp->next_ready = NULL;
    return kp;
}

static void mark_all_ready(kafkatx_t *tx)
{
    for (kpart_t *kp = tx->parts; kp; kp = kp->next_all)
        if (kp->n_queued || kp->n)
            mark_ready(tx, kp);
}

/* ---- messages and partitions ------------------------------------------------------------ */

static void free_msg(kmsg_t *m)
{
    if (m->rkm)
        rd_kafka_message_destroy(m->rkm);
    sb_free(m);
}

static void list_unlink(kmsg_t **head, kmsg_t **tail, kmsg_t *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        *head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else if (tail)
        *tail = m->prev;
    m->prev = m->next = NULL;
}

static void part_unlink(kpart_t *kp, kmsg_t *m)
{
    list_unlink(&kp->head, &kp->tail, m);
    kp->n--;
}

static kpart_t *find_part(kafkatx_t *tx, const char *topic, int32_t partition)
{
    for (kpart_t *kp = tx->parts; kp; kp = kp->next_all)
        if (kp->partition == partition && !strcmp(kp->topic, topic))
            return kp;
    return NULL;
}

static void on_hold(evutil_socket_t fd, short what, void *arg);

static kpart_t *get_part(kafkatx_t *tx, const char *topic, int32_t partition)
{
    kpart_t *kp = find_part(tx, topic, partition);
    if (kp)
        return kp;
    kp = sb_calloc(1, sizeof *kp);
    if (!kp)
        return NULL;
    kp->tx = tx;
    kp->partition = partition;
    kp->topic = sb_strdup(topic);
    if (kp->topic && !tx->retry_in_place && ends_with(topic, tx->retry_suffix)) {
        kp->is_retry = true;
        kp->base_topic = sb_strndup(topic, strlen(topic) - strlen(tx->retry_suffix));
    } else if (kp->topic) {
        kp->base_topic = sb_strdup(topic);
    }
    kp->hold = evtimer_new(tx->evbase, on_hold, kp);
    if (!kp->topic || !kp->base_topic || !kp->hold) {
        if (kp->hold)
            event_free(kp->hold);
        sb_free(kp->topic);
        sb_free(kp->base_topic);
        sb_free(kp);
        return NULL;
    }
    kp->next_fetch = -1;
    kp->store = -1;
    kp->barrier = -1;
    kp->refetch = -1;
    kp->next_all = tx->parts;
    tx->parts = kp;
    return kp;
}

/* offset will not be handled here (dropped, or given back once stopped or revoking). */
static void lower_barrier(kpart_t *kp, int64_t offset)
{
    if (kp->barrier < 0 || offset < kp->barrier)
        kp->barrier = offset;
}

/* Drops every QUEUED message (never handed over; the next owner fetches them again). The
 * first one dropped becomes the partition's barrier: messages after it may be in flight
 * already (other keys, claimed ahead, a requeued retry before them) and settle later, but
 * the stored offset must stop at the hole, or the next owner would start past a message
 * nobody handled; and those still waiting for their turn must not run ahead of it
 * (grant_turns denies them). */
static void drop_queued(kafkatx_t *tx, kpart_t *kp)
{
    for (kmsg_t *m = kp->head, *next; m; m = next) {
        next = m->next;
        if (m->state != K_QUEUED)
            continue;
        lower_barrier(kp, m->d.offset);
        part_unlink(kp, m);
        kp->n_queued--;
        free_msg(m);
    }
    kp->hold_until = 0;
    event_del(kp->hold);
    if (kp->barrier >= 0)
        mark_ready(tx, kp); /* the pump denies the turns behind the barrier */
}

/* The partition is no longer ours: free what is settled or queued, orphan what is in
 * flight (its settlement will store nothing). */
static void detach_part(kafkatx_t *tx, kpart_t *kp)
{
    for (kmsg_t *m = kp->head, *next; m; m = next) {
        next = m->next;
        part_unlink(kp, m);
        if (m->state == K_INFLIGHT) {
            if (!m->turn.granted && !m->turn.denied) {
                m->turn.denied = true; /* deny_orphans() tells the dispatcher */
                tx->n_waiting--;
            }
            m->orphan = true;
            m->next = tx->orphans;
            if (tx->orphans)
                tx->orphans->prev = m;
            tx->orphans = m;
        } else {
            free_msg(m);
        }
    }
    kp->n_queued = kp->n_active = 0;
    kp->owned = kp->revoking = kp->paused = kp->dirty = kp->slow = false;
    kick(tx); /* deny_orphans() */
    kp->next_fetch = kp->store = kp->barrier = kp->refetch = -1;
    kp->hold_until = 0;
    event_del(kp->hold);
}

/* Pops the settled prefix, up to the barrier; the offset after it is the one to store. */
static void advance_prefix(kpart_t *kp)
{
    while (kp->head && kp->head->state == K_DONE &&
           (kp->barrier < 0 || kp->head->d.offset < kp->barrier)) {
        kmsg_t *m = kp->head;
        kp->store = m->d.offset + 1;
        kp->dirty = true;
        part_unlink(kp, m);
        free_msg(m);
        kp->drained++;
    }
}

/* ---- receiving ---------------------------------------------------------------------------- */

/* Seeks kp back to offset (asynchronously: librdkafka drops what it prefetched after it and
 * fetches again from there); receive() takes nothing else of kp until offset is back. */
static void refetch(kafkatx_t *tx, kpart_t *kp, int64_t offset)
{
    kp->refetch = offset;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    if (!l)
        return; /* the seek is retried with the next message of kp (dropped meanwhile) */
    rd_kafka_topic_partition_list_add(l, kp->topic, kp->partition)->offset = offset;
    rd_kafka_error_t *e = rd_kafka_seek_partitions(tx->consumer, l, 0);
    if (e) {
        sb__log(SB_LOG_WARN, NULL, "kafka: seeking %s [%" PRId32 "] to %" PRId64 ": %s", kp->topic,
                kp->partition, offset, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void receive(kafkatx_t *tx, rd_kafka_message_t *rkm)
{
    if (rkm->err) {
        if (rkm->err == RD_KAFKA_RESP_ERR__AUTHENTICATION || rkm->err == RD_KAFKA_RESP_ERR__SSL)
            tx->client_failed = true; /* not ready (tx_ready) */
        if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            sb__log(SB_LOG_WARN, NULL, "kafka consumer: %s%s%s: %s",
                    rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "", rkm->rkt ? " " : "",
                    rd_kafka_err2name(rkm->err), rd_kafka_message_errstr(rkm));
        rd_kafka_message_destroy(rkm);
        return;
    }
    kpart_t *kp = find_part(tx, rd_kafka_topic_name(rkm->rkt), rkm->partition);
    if (!kp || !kp->owned || kp->revoking || tx->stopped ||
        (kp->next_fetch >= 0 && rkm->offset < kp->next_fetch) ||
        (kp->refetch >= 0 && rkm->offset != kp->refetch)) {
        /* not ours (any more), seen already, or fetched before the seek of refetch */
        rd_kafka_message_destroy(rkm);
        return;
    }
    rd_kafka_headers_t *hs = NULL;
    size_t nh = 0;
    if (rd_kafka_message_headers(rkm, &hs) == RD_KAFKA_RESP_ERR_NO_ERROR && hs)
        nh = rd_kafka_header_cnt(hs);
    /* The message-id header (what switchboard and many producers set) is the id intake
     * falls back to when the body has none, as AMQP's message_id property: kept as a C
     * string after the headers. */
    const void *mid = NULL;
    size_t mid_len = 0;
    if (hs && (rd_kafka_header_get_last(hs, "message-id", &mid, &mid_len) != 0 || !mid ||
               mid_len == 0 || mid_len > 256 || memchr(mid, '\0', mid_len)))
        mid = NULL, mid_len = 0;
    kmsg_t *m = sb_malloc(sizeof *m + nh * sizeof(sb__header_t) + (mid ? mid_len + 1 : 0));
    if (!m) {
        /* Not kept: the partition is sought back to it, and nothing after it is taken until
         * it came again, so no later offset is stored past a message never handled. */
        sb__log(SB_LOG_ERROR, NULL,
                "kafka: out of memory receiving %s [%" PRId32 "] @%" PRId64 ": fetching it again",
                kp->topic, kp->partition, rkm->offset);
        refetch(tx, kp, rkm->offset);
        rd_kafka_message_destroy(rkm);
        return;
    }
    memset(m, 0, sizeof *m);
    m->rkm = rkm;
    m->kp = kp;
    kp->refetch = -1; /* it is back, if it was sought */
    uint64_t made = 0, due = 0;
    for (size_t i = 0; i < nh; i++) {
        const char *name;
        const void *val;
        size_t size;
        if (rd_kafka_header_get_all(hs, i, &name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
            name = "", val = NULL, size = 0;
        sb__header_t *h = &m->hdrs[i];
        h->name = name;
        h->name_len = (uint32_t)strlen(name);
        h->value = val ? val : "";
        h->value_len = val ? (uint32_t)size : 0;
        if (h->name_len == 13 && !memcmp(name, "x-sb-attempts", 13))
            parse_u64(h->value, h->value_len, &made);
        else if (h->name_len == 11 && !memcmp(name, "x-sb-due-at", 11))
            parse_u64(h->value, h->value_len, &due);
    }
    sb__delivery_t *d = &m->d;
    d->msg.body = rkm->payload ? (const char *)rkm->payload : "";
    d->msg.body_len = rkm->payload ? rkm->len : 0;
    d->msg.topic = kp->base_topic;
    d->msg.headers = m->hdrs;
    d->msg.n_headers = nh;
    if (mid) {
        char *id = (char *)&m->hdrs[nh];
        memcpy(id, mid, mid_len);
        id[mid_len] = '\0';
        d->msg.message_id = id;
    }
    d->attempt = made < 999999999u ? (unsigned)made + 1 : 999999999u;
    d->source = kp->topic;
    d->partition = rkm->partition;
    d->offset = rkm->offset;
    m->key_hash = rkm->key ? hash_bytes(rkm->key, rkm->key_len) : 0x6b6579ULL;
    tx->avg_len += (rkm->len + rkm->key_len) - tx->avg_len / 16; /* 16 x the running mean */
    if (kp->is_retry && due) {
        int64_t wait = (int64_t)due - wall_ms();
        if (wait > 0)
            m->not_before = mono_ms() + wait;
    }
    m->state = K_QUEUED;
    m->prev = kp->tail;
    if (kp->tail)
        kp->tail->next = m;
    else
        kp->head = m;
    kp->tail = m;
    kp->n++;
    kp->n_queued++;
    kp->next_fetch = rkm->offset + 1;
    mark_ready(tx, kp);
}

/* ---- handing over ---------------------------------------------------------------------- */

static bool can_push(const kafkatx_t *tx)
{
    return tx->started && !tx->stopped && !tx->sink_paused && !tx->closing &&
           tx->n_dispatched < tx->max_inflight;
}

static void hold(kafkatx_t *tx, kpart_t *kp, int64_t until, int64_t now)
{
    if (kp->hold_until == until && evtimer_pending(kp->hold, NULL))
        return;
    kp->hold_until = until;
    int64_t ms = until - now;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(kp->hold, &tv);
}

static void deliver(kafkatx_t *tx, kmsg_t *m)
{
    kpart_t *kp = m->kp;
    m->state = K_INFLIGHT;
    m->not_before = 0;
    kp->n_queued--;
    kp->n_active++;
    tx->n_dispatched++;
    tx->base.sink(tx->base.sink_arg, &m->d);
}

/* ---- claim-ahead: turns -------------------------------------------------------------------- */

/* m leaves the dispatcher's hands (settled, requeued, orphaned): a turn it was still waiting
 * for no longer counts. */
static void turn_clear(kafkatx_t *tx, kmsg_t *m)
{
    if (m->d.turn && !m->turn.granted && !m->turn.denied)
        tx->n_waiting--;
    m->turn.granted = true;
    m->turn.on_grant = NULL;
}

/* Tells the dispatcher that m's turn was decided (granted or denied), once. */
static void turn_decided(kmsg_t *m)
{
    void (*cb)(void *) = m->turn.on_grant;
    m->turn.on_grant = NULL;
    if (cb)
        cb(m->turn.arg);
}

/* Denies the turn to every message from m on that still waits for one (behind a barrier:
 * they must not run); the dispatcher releases them unrun. */
static void deny_turns(kafkatx_t *tx, kmsg_t *m)
{
    for (; m; m = m->next) {
        if (m->state != K_INFLIGHT || !m->d.turn || m->turn.granted || m->turn.denied)
            continue;
        m->turn.denied = true;
        tx->n_waiting--;
        turn_decided(m);
    }
}

/* Gives the turn to the first waiting message of kp once everything before it released
 * its turn, and so on down the list. A granted handler may settle inside on_grant; nothing
 * is unlinked synchronously, so the walk stays valid. */
static void grant_turns(kafkatx_t *tx, kpart_t *kp)
{
    for (kmsg_t *m = kp->head; m; m = m->next) {
        if (m->state == K_DONE)
            continue;
        if (kp->barrier >= 0 && m->d.offset >= kp->barrier) {
            deny_turns(tx, m);
            return;
        }
        if (m->state != K_INFLIGHT)
            return;
        if (!m->turn.granted) {
            m->turn.granted = true;
            tx->n_waiting--;
            turn_decided(m);
        }
        if (m->state == K_INFLIGHT && !m->turn_released)
            return;
    }
}

/* Orphans that waited for a turn are told they will never get it (they must not run: the
 * partition is gone); each callback may free its message, so the scan restarts. */
static void deny_orphans(kafkatx_t *tx)
{
    for (bool again = true; again;) {
        again = false;
        for (kmsg_t *m = tx->orphans; m; m = m->next) {
            if (m->turn.denied && m->turn.on_grant) {
                turn_decided(m);
                again = true;
                break;
            }
        }
    }
}

/* Partition order with claim-ahead: hands over up to `ahead` messages of kp in offset
 * order; only the first not preceded by an unreleased one has its turn. */
static unsigned dispatch_ahead(kafkatx_t *tx, kpart_t *kp, unsigned budget, int64_t now)
{
    bool blocked = false;
    unsigned n = 0;
    for (kmsg_t *m = kp->head; m; m = m->next) {
        if (m->state == K_DONE)
            continue;
        if (m->state == K_INFLIGHT) {
            blocked = blocked || !m->turn_released;
            continue;
        }
        if (n >= budget)
            break;
        if (m->not_before > now) {
            hold(tx, kp, m->not_before, now);
            break;
        }
        if (kp->n_active >= tx->ahead || !can_push(tx) ||
            (blocked && tx->n_waiting >= tx->ahead_total))
            break;
        m->turn = (sb__turn_t){.granted = !blocked};
        m->turn_released = false;
        m->d.turn = &m->turn;
        if (blocked)
            tx->n_waiting++;
        deliver(tx, m);
        n++;
        if (m->state == K_QUEUED) /* given back at once */
            break;
        blocked = blocked || (m->state == K_INFLIGHT && !m->turn_released);
    }
    return n;
}

static void hand_over(kafkatx_t *tx, kmsg_t *m)
{
    m->turn = (sb__turn_t){.granted = true};
    m->d.turn = NULL;
    deliver(tx, m);
}

/* Hands over what kp's ordering allows; returns how many. */
static unsigned dispatch_part(kafkatx_t *tx, kpart_t *kp, unsigned budget)
{
    if (!kp->owned || kp->revoking || !kp->n_queued)
        return 0;
    int64_t now = mono_ms();
    if (!tx->key_mode && tx->ahead)
        return dispatch_ahead(tx, kp, budget, now);
    if (!tx->key_mode) {
        if (kp->n_active)
            return 0;
        kmsg_t *m = kp->head;
        while (m && m->state != K_QUEUED)
            m = m->next;
        if (!m)
            return 0;
        if (m->not_before > now) {
            hold(tx, kp, m->not_before, now);
            return 0;
        }
        hand_over(tx, m);
        return 1;
    }
    uint64_t blocked[KEY_WINDOW];
    size_t nb = 0, scanned = 0;
    unsigned n = 0;
    for (kmsg_t *m = kp->head; m && scanned < KEY_WINDOW && n < budget; m = m->next, scanned++) {
        if (m->state == K_DONE)
            continue;
        bool is_blocked = false;
        for (size_t i = 0; i < nb && !is_blocked; i++)
            is_blocked = blocked[i] == m->key_hash;
        if (m->state == K_QUEUED && !is_blocked) {
            if (m->not_before > now) {
                hold(tx, kp, m->not_before, now); /* the partition waits (in-place retry) */
                break;
            }
            if (!can_push(tx))
                break;
            hand_over(tx, m); /* may settle at once: m is marked, never freed, here */
            n++;
        }
        if (!is_blocked)
            blocked[nb++] = m->key_hash;
    }
    return n;
}

/* ---- storing offsets, pausing, revokes ---------------------------------------------------- */

static void flush_stores(kafkatx_t *tx)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    for (kpart_t *kp = tx->parts; kp; kp = kp->next_all) {
        if (!kp->dirty || !kp->owned)
            continue;
        kp->dirty = false;
        if (!l && !(l = rd_kafka_topic_partition_list_new(8)))
            return;
        rd_kafka_topic_partition_list_add(l, kp->topic, kp->partition)->offset = kp->store;
    }
    if (!l)
        return;
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(tx->consumer, l);
    if (err)
        sb__log(SB_LOG_DEBUG, NULL, "kafka: storing offsets: %s", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(l);
}

static void set_paused(kafkatx_t *tx, kpart_t *kp, bool pause)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    if (!l)
        return;
    rd_kafka_topic_partition_list_add(l, kp->topic, kp->partition);
    rd_kafka_resp_err_t err = pause ? rd_kafka_pause_partitions(tx->consumer, l)
                                    : rd_kafka_resume_partitions(tx->consumer, l);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        kp->paused = pause;
        if (!pause && tx->waker) /* fetch now, not at the fetcher's next 1 s tick */
            sb__kafka_waker_poke(tx->waker, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static size_t flowing_backlog(const kafkatx_t *tx);

/* After a window of SLOW_MS in which the fetch stayed at the local bound: the partition
 * that holds it back, i.e. one with at least half of what the flowing partitions hold that
 * drained less than it holds during the window (a slow handler, a slow key: it would take
 * longer than the window to drain). NULL when there is none, or when pausing it would let
 * the local messages of all partitions together pass partition_backlog (then everyone
 * waits: memory stays bounded). A partition that is merely behind a fast fetcher drains
 * far more than it holds, and is left alone. */
static kpart_t *hog(kafkatx_t *tx)
{
    size_t flowing = flowing_backlog(tx), all = 0;
    kpart_t *h = NULL;
    for (kpart_t *kp = tx->parts; kp; kp = kp->next_all) {
        if (!kp->owned)
            continue;
        all += kp->n;
        if (!kp->revoking && !kp->paused && 2 * kp->n >= flowing && (!h || kp->n > h->n))
            h = kp;
    }
    if (!h || all >= tx->backlog || h->drained - h->drain_mark >= h->n)
        return NULL;
    return h;
}

static void start_window(kafkatx_t *tx, int64_t now)
{
    static const struct timeval slow = {SLOW_MS / 1000, (SLOW_MS % 1000) * 1000};
    tx->capped_since = now;
    for (kpart_t *kp = tx->parts; kp; kp = kp->next_all)
        kp->drain_mark = kp->drained;
    if (tx->slow_timer)
        evtimer_add(tx->slow_timer, &slow); /* looks again then, even if nothing moves */
}

/* A partition whose head waits (a retry topic's due time, or an in-place retry's delay) is
 * paused for the wait: its fetched messages would fill the local bound that every partition
 * shares, and with the bound reached nothing more is taken from librdkafka, so the other
 * partitions, rebalances and the poll interval would all wait for this one. So is one that
 * holds the fetch back without draining (hog()): it is resumed once it drained to an
 * eighth of partition_backlog. A partition that is merely slower than the fetcher is not
 * paused: pausing drops what librdkafka prefetched for it and costs a fetcher wake-up. */
static void reconcile_pauses(kafkatx_t *tx, int64_t now)
{
    if (!tx->fetch_capped) {
        tx->capped_since = 0;
    } else if (!tx->capped_since) {
        start_window(tx, now);
    } else if (now - tx->capped_since >= SLOW_MS) {
        kpart_t *h = hog(tx);
        if (h) {
            h->slow = true;
            sb__log(SB_LOG_INFO, NULL,
                    "kafka: partition %s[%d] holds %zu local messages and does not drain: "
                    "paused until it drained to %zu, so the other partitions keep flowing",
                    h->topic, (int)h->partition, h->n, tx->backlog / 8);
        }
        start_window(tx, now);
    }
    for (kpart_t *kp = tx->parts; kp; kp = kp->next_all) {
        if (!kp->owned || kp->revoking)
            continue;
        if (kp->slow && kp->n <= tx->backlog / 8) {
            kp->slow = false;
            sb__log(SB_LOG_INFO, NULL, "kafka: partition %s[%d] drained: resumed", kp->topic,
                    (int)kp->partition);
        }
        bool want = kp->hold_until > now || kp->slow;
        if (kp->paused != want)
            set_paused(tx, kp, want);
    }
}

static size_t revoking_active(const kafkatx_t *tx)
{
    size_t n = 0;
    for (const kpart_t *kp = tx->parts; kp; kp = kp->next_all)
        if (kp->revoking)
            n += kp->n_active;
    return n;
}

static void finish_revoke(kafkatx_t *tx)
{
    rd_kafka_topic_partition_list_t *l = tx->pending_revoke;
    if (!l)
        return;
    tx->pending_revoke = NULL;
    if (tx->revoke_timer)
        event_del(tx->revoke_timer);
    for (int i = 0; i < l->cnt; i++) {
        kpart_t *kp = find_part(tx, l->elems[i].topic, l->elems[i].partition);
        if (kp)
            advance_prefix(kp);
    }
    if (!tx->pending_lost) {
        flush_stores(tx);
        rd_kafka_resp_err_t err = rd_kafka_commit(tx->consumer, NULL, 0);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
            sb__log(SB_LOG_WARN, NULL, "kafka: commit on revoke failed: %s", rd_kafka_err2str(err));
    }
    size_t orphaned = 0;
    for (int i = 0; i < l->cnt; i++) {
        kpart_t *kp = find_part(tx, l->elems[i].topic, l->elems[i].partition);
        if (!kp)
            continue;
        orphaned += kp->n_active;
        detach_part(tx, kp);
    }
    if (orphaned)
        sb__log(SB_LOG_WARN, NULL,
                "kafka: released %d partitions with %zu messages still in flight; their "
                "results will not be committed (the next owner processes them again)",
                l->cnt, orphaned);
    if (tx->pending_coop) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(tx->consumer, l);
        if (e) {
            sb__log(SB_LOG_ERROR, NULL, "kafka: incremental unassign: %s",
                    rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
    } else {
        rd_kafka_resp_err_t err = rd_kafka_assign(tx->consumer, NULL);
        if (err)
            sb__log(SB_LOG_ERROR, NULL, "kafka: unassign: %s", rd_kafka_err2str(err));
    }
    sb__log(SB_LOG_INFO, NULL, "kafka: released %d partitions", l->cnt);
    rd_kafka_topic_partition_list_destroy(l);
}

static void on_revoke_timeout(evutil_socket_t fd, short what, void *arg)
{
    kafkatx_t *tx = arg;
    sb__log(SB_LOG_WARN, NULL,
            "kafka: revoke: %zu messages still in flight after %" PRIu64 " ms; releasing",
            revoking_active(tx), tx->revoke_timeout_ms);
    finish_revoke(tx);
}

static void describe(const rd_kafka_topic_partition_list_t *l, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < l->cnt && off + 1 < n; i++) {
        int w = snprintf(buf + off, n - off, "%s%s[%" PRId32 "]", i ? ", " : "", l->elems[i].topic,
                         l->elems[i].partition);
        if (w < 0 || (size_t)w >= n - off) {
            if (n > 4)
                memcpy(buf + n - 4, "...", 4);
            return;
        }
        off += (size_t)w;
    }
}

static void rebalance(kafkatx_t *tx, rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *parts)
{
    bool coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    char desc[512] = "";
    if (parts)
        describe(parts, desc, sizeof desc);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            kpart_t *kp = get_part(tx, parts->elems[i].topic, parts->elems[i].partition);
            if (!kp) {
                sb__log(SB_LOG_ERROR, NULL, "kafka: out of memory tracking %s",
                        parts->elems[i].topic);
                continue;
            }
            detach_part(tx, kp); /* a fresh start: fetch positions, holds, leftovers */
            kp->owned = true;
            kp->revoking = false;
            mark_ready(tx, kp);
        }
        sb__log(SB_LOG_INFO, NULL, "kafka: assigned %d partitions (%s): %s", parts->cnt,
                coop ? "cooperative" : "eager", desc);
        tx->joined = true;
        tx->client_failed = false;
        if (coop) {
            rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
            if (e) {
                sb__log(SB_LOG_ERROR, NULL, "kafka: incremental assign: %s",
                        rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
            }
        } else {
            rd_kafka_resp_err_t e = rd_kafka_assign(rk, parts);
            if (e)
                sb__log(SB_LOG_ERROR, NULL, "kafka: assign: %s", rd_kafka_err2str(e));
        }
        rd_kafka_resume_partitions(rk, parts); /* no pause survives from an earlier owner */
        kick(tx);
        return;
    }
    if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        sb__log(SB_LOG_ERROR, NULL, "kafka: rebalance error: %s", rd_kafka_err2str(err));
        if (coop)
            rd_kafka_error_destroy(rd_kafka_incremental_unassign(rk, parts));
        else
            rd_kafka_assign(rk, NULL);
        return;
    }
    bool lost = rd_kafka_assignment_lost(rk);
    if (lost)
        tx->joined = false; /* out of the group (session timed out): not ready until back */
    if (tx->pending_revoke) /* cannot happen: librdkafka waits for our unassign */
        finish_revoke(tx);
    for (int i = 0; i < parts->cnt; i++) {
        kpart_t *kp = find_part(tx, parts->elems[i].topic, parts->elems[i].partition);
        if (!kp)
            continue;
        drop_queued(tx, kp);
        kp->revoking = true;
    }
    tx->pending_revoke = rd_kafka_topic_partition_list_copy(parts);
    tx->pending_lost = lost;
    tx->pending_coop = coop;
    size_t active = revoking_active(tx);
    sb__log(SB_LOG_INFO, NULL, "kafka: %s %d partitions (%s)%s: %s", lost ? "lost" : "revoking",
            parts->cnt, coop ? "cooperative" : "eager",
            active && !lost && !tx->closing ? ", waiting for their in-flight messages" : "", desc);
    if (!tx->pending_revoke) {
        sb__log(SB_LOG_ERROR, NULL, "kafka: out of memory on revoke: releasing at once");
        if (coop)
            rd_kafka_error_destroy(rd_kafka_incremental_unassign(rk, parts));
        else
            rd_kafka_assign(rk, NULL);
        for (int i = 0; i < parts->cnt; i++) {
            kpart_t *kp = find_part(tx, parts->elems[i].topic, parts->elems[i].partition);
            if (kp)
                detach_part(tx, kp);
        }
        return;
    }
    if (!active || lost || tx->closing) {
        finish_revoke(tx);
        return;
    }
    struct timeval tv = {(time_t)(tx->revoke_timeout_ms / 1000),
                         (suseconds_t)(tx->revoke_timeout_ms % 1000) * 1000};
    evtimer_add(tx->revoke_timer, &tv);
}

/* A regex subscription also matches our own dead-letter topics (^orders\..* matches
 * orders.a.dlq): consuming them would handle every dead letter again and dead-letter it
 * once more, to orders.a.dlq.dlq, which matches too, and so on. Their partitions are kept
 * out of the assignment unless the topic is listed by name. Retry topics are consumed: that
 * is how a regex-matched topic gets its retries. */
static bool skipped_topic(const kafkatx_t *tx, const char *topic)
{
    if (!ends_with(topic, tx->dlq_suffix))
        return false;
    for (size_t i = 0; i < tx->n_topics; i++)
        if (!strcmp(tx->topics[i], topic))
            return false;
    return true;
}

/* parts without the skipped topics: a new list, or NULL when none is skipped (or out of
 * memory: then nothing is filtered). */
static rd_kafka_topic_partition_list_t *
without_skipped(const kafkatx_t *tx, const rd_kafka_topic_partition_list_t *parts)
{
    int skip = 0;
    for (int i = 0; i < parts->cnt; i++)
        skip += skipped_topic(tx, parts->elems[i].topic);
    if (!skip)
        return NULL;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts->cnt - skip);
    for (int i = 0; l && i < parts->cnt; i++)
        if (!skipped_topic(tx, parts->elems[i].topic))
            rd_kafka_topic_partition_list_add(l, parts->elems[i].topic, parts->elems[i].partition)
                ->offset = parts->elems[i].offset;
    return l;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kafkatx_t *tx = opaque;
    rd_kafka_topic_partition_list_t *own = parts ? without_skipped(tx, parts) : NULL;
    if (own && err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        sb__log(SB_LOG_INFO, NULL,
                "kafka: not consuming %d partitions of dead-letter topics the subscription "
                "matches",
                parts->cnt - own->cnt);
    rebalance(tx, rk, err, own ? own : parts);
    if (own)
        rd_kafka_topic_partition_list_destroy(own);
}

/* ---- the pump ------------------------------------------------------------------------------ */

/* Local messages (queued, in flight, settled but not stored) of partitions not paused. */
static size_t flowing_backlog(const kafkatx_t *tx)
{
    size_t n = 0;
    for (const kpart_t *kp = tx->parts; kp; kp = kp->next_all)
        if (kp->owned && !kp->paused)
            n += kp->n;
    return n;
}

static void pump(kafkatx_t *tx)
{
    if (tx->in_pump || tx->destroying)
        return;
    tx->in_pump = true;
    if (tx->parked && can_push(tx)) {
        tx->parked = false;
        mark_all_ready(tx);
    }
    unsigned budget = PUMP_BUDGET;
    while (tx->ready_head && budget) {
        kpart_t *kp = pop_ready(tx);
        advance_prefix(kp);
        if (tx->ahead)
            grant_turns(tx, kp);
        if (!can_push(tx)) {
            tx->parked = true;
            continue;
        }
        budget -= dispatch_part(tx, kp, budget);
    }
    flush_stores(tx);
    if (tx->orphans)
        deny_orphans(tx);
    reconcile_pauses(tx, mono_ms());
    if (tx->pending_revoke && revoking_active(tx) == 0)
        finish_revoke(tx);
    tx->in_pump = false;
    if (tx->ready_head || (tx->fetch_capped && flowing_backlog(tx) < tx->backlog / 4))
        kick(tx);
}

/* librdkafka 2.0.2's fetcher stops at its queue bound and may not look again for up to 1 s
 * (kafka_waker.h). Once its queue passed 60% of a bound the fetcher may stop soon; it is
 * woken when the queue drained under 30% (a poke to a fetcher still running is harmless).
 * The byte count is estimated from the mean message size. */
static void watch_fetcher(kafkatx_t *tx)
{
    if (!tx->waker)
        return;
    int64_t qlen = rd_kafka_queue_length(tx->cq);
    /* librdkafka counts a little more than payload and key per message: allow 64 bytes. */
    int64_t qbytes = qlen * (int64_t)(tx->avg_len / 16 + 64);
    if (qlen >= tx->q_min_msgs / 10 * 6 || qbytes >= tx->q_max_bytes / 10 * 6) {
        tx->fetch_full = true;
        return;
    }
    if (!tx->fetch_full || qlen > tx->q_min_msgs / 10 * 3 || qbytes > tx->q_max_bytes / 10 * 3)
        return;
    tx->fetch_full = false;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    if (!l)
        return;
    for (kpart_t *kp = tx->parts; kp; kp = kp->next_all)
        if (kp->owned && !kp->revoking && !kp->paused)
            rd_kafka_topic_partition_list_add(l, kp->topic, kp->partition);
    sb__kafka_waker_poke(tx->waker, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* Takes what librdkafka has (both clients), then hands over. */
static void service(kafkatx_t *tx)
{
    if (tx->destroying)
        return;
    sb__kafka_produce_poll(tx); /* delivery reports, logs, deferred completions */
    tx->fetch_more = false;
    if (tx->consumer && !tx->closing) {
        /* Take from librdkafka only while the local backlog of the flowing partitions is
         * under the bound: what is not taken stays in librdkafka's queue, which stops
         * fetching by itself at queued.min.messages / queued.max.messages.kbytes (and
         * retries after fetch.error.backoff.ms). Pausing partitions is kept for one
         * partition that does not drain (held or slow): pausing all of them would cost
         * a ~1 s fetcher tick on resume in librdkafka 2.0.2. */
        size_t local = flowing_backlog(tx);
        ssize_t n = 0;
        rd_kafka_message_t *rkm;
        while (n < FETCH_BATCH && local < tx->backlog / 2 &&
               (rkm = rd_kafka_consumer_poll(tx->consumer, 0)) != NULL) {
            receive(tx, rkm);
            n++;
            local++;
        }
        if (n == FETCH_BATCH)
            tx->fetch_more = true;
        tx->fetch_capped = local >= tx->backlog / 2;
        watch_fetcher(tx);
    }
    pump(tx);
    if (tx->fetch_more || (tx->fetch_capped && flowing_backlog(tx) < tx->backlog / 4))
        kick(tx);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    kafkatx_t *tx = arg;
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    service(tx);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    service(arg);
}

static void on_hold(evutil_socket_t fd, short what, void *arg)
{
    kpart_t *kp = arg;
    kp->hold_until = 0;
    mark_ready(kp->tx, kp);
    pump(kp->tx);
}

/* ---- settlement ---------------------------------------------------------------------------- */

/* The message is settled for good: it may count towards the stored prefix. */
void sb__kafka_settle_done(kafkatx_t *tx, kmsg_t *m)
{
    if (m->orphan) {
        list_unlink(&tx->orphans, NULL, m);
        free_msg(m);
        kick(tx); /* completions queued for it run on the next service() */
        return;
    }
    kpart_t *kp = m->kp;
    turn_clear(tx, m);
    m->state = K_DONE;
    kp->n_active--;
    mark_ready(tx, kp);
    kick(tx);
}

/* Back to QUEUED at its place, handed over again after `delay_ms`. */
static void requeue(kafkatx_t *tx, kmsg_t *m, uint64_t delay_ms)
{
    if (m->orphan) {
        list_unlink(&tx->orphans, NULL, m);
        free_msg(m);
        return;
    }
    kpart_t *kp = m->kp;
    turn_clear(tx, m);
    m->state = K_QUEUED;
    m->not_before = mono_ms() + (int64_t)delay_ms;
    kp->n_active--;
    kp->n_queued++;
    /* Stopped or revoking: it will not run here again, so it is a barrier too. */
    if (tx->stopped || kp->revoking)
        lower_barrier(kp, m->d.offset);
    mark_ready(tx, kp);
    kick(tx);
}

static void tx_ack(sb__transport_t *t, sb__delivery_t *d)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    tx->n_dispatched--;
    sb__kafka_settle_done(tx, (kmsg_t *)d);
}

static void tx_claim_ahead(sb__transport_t *t, size_t ahead, size_t total)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    /* In-place retries hold a partition for the retry delay: messages claimed ahead would
     * hold their claims that long, past a lease. Claim-ahead is for the retry topic. */
    if (tx->retry_in_place || tx->key_mode || ahead < 2)
        return;
    tx->ahead = ahead;
    tx->ahead_total = total ? total : 1;
}

static void tx_turn_done(sb__transport_t *t, sb__delivery_t *d)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    kmsg_t *m = (kmsg_t *)d;
    if (m->orphan || m->state != K_INFLIGHT)
        return;
    m->turn_released = true;
    mark_ready(tx, m->kp);
    kick(tx);
}

static void tx_release(sb__transport_t *t, sb__delivery_t *d)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    tx->n_dispatched--;
    requeue(tx, (kmsg_t *)d, RELEASE_BACKOFF_MS);
}

static int tx_retry_later(sb__transport_t *t, sb__delivery_t *d, uint64_t delay_ms,
                          unsigned next_attempt, sb__tx_done_cb cb, void *arg)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    kmsg_t *m = (kmsg_t *)d;
    /* An orphan (its partition went to another member, which fetches it again from the
     * committed offset) needs no retry copy: it is let go as an in-place retry would. */
    if (!tx->retry_in_place && !m->orphan)
        return sb__kafka_retry_copy(tx, m, delay_ms, next_attempt, cb, arg);
    if (sb__kafka_complete_later(tx, cb, arg) != SB_EOK)
        return SB_ENOMEM;
    d->attempt = next_attempt;
    tx->n_dispatched--;
    requeue(tx, m, delay_ms);
    kick(tx);
    return SB_EOK;
}

static void tx_pause(sb__transport_t *t)
{
    ((kafkatx_t *)t)->sink_paused = true;
}

static void tx_resume(sb__transport_t *t)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    tx->sink_paused = false;
    kick(tx);
}

/* Ready: started, in the group (an assignment arrived, possibly empty: a member with no
 * partition is consuming too), not lost since, and no authentication, TLS or fatal error
 * since that assignment. */
static bool tx_ready(sb__transport_t *t)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    return tx->started && !tx->stopped && tx->joined && !tx->client_failed;
}

static void tx_stop(sb__transport_t *t)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    tx->stopped = true;
    for (kpart_t *kp = tx->parts; kp; kp = kp->next_all)
        if (kp->owned && !kp->revoking)
            drop_queued(tx, kp); /* never handed over: re-read after a restart */
    kick(tx);
}

/* ---- the clients (kafka_client.h) ------------------------------------------------------ */

static const char *bootstraps(const kafkatx_t *tx)
{
    return tx->embedded ? tx->mock_bootstraps : tx->brokers;
}

/* What the clients are made from; read anew for each client, as the embedded cluster's
 * bootstraps exist only once it started. */
/* Readiness (tx_ready): a consumer that cannot authenticate, or hit a fatal error, is not
 * ready until it is assigned partitions again. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kafkatx_t *tx = opaque;
    sb__kafka_client_log_error(rk, err, reason);
    if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION || err == RD_KAFKA_RESP_ERR__FATAL ||
        err == RD_KAFKA_RESP_ERR__SSL)
        tx->client_failed = true;
}

static sb__kafka_client_opts_t client_opts(kafkatx_t *tx)
{
    return (sb__kafka_client_opts_t){
        .bootstraps = bootstraps(tx),
        .client_id = tx->client_id,
        .group = tx->group,
        .props = tx->props,
        .embedded = tx->embedded,
        .topics = tx->topics,
        .n_topics = tx->n_topics,
        .dlq_suffix = tx->dlq_suffix,
        .retry_suffix = tx->retry_suffix,
        .retry_in_place = tx->retry_in_place,
        .publish_topic = tx->publish_topic,
        .opaque = tx,
        .rebalance_cb = rebalance_cb,
        .dr_cb = sb__kafka_on_delivery,
        .error_cb = on_error,
    };
}

static int tx_start(sb__transport_t *t, char *errstr, size_t n)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    int rc;
    if (tx->started)
        return sb__errf(errstr, n, SB_ESTATE, "kafka transport already started");
    sb__kafka_client_opts_t o = client_opts(tx);
    if (tx->embedded) {
        rc = sb__kafka_client_embedded_start(&o, &tx->mock_host, &tx->mock, &tx->mock_bootstraps,
                                             errstr, n);
        if (rc != SB_EOK)
            return rc;
        o = client_opts(tx); /* with the embedded cluster's bootstraps */
    }
    if ((rc = sb__kafka_client_producer_new(&o, &tx->producer, &tx->pq, errstr, n)) != SB_EOK)
        return rc;
    if (tx->create_topics && !tx->embedded)
        sb__kafka_client_create_side_topics(&o, tx->producer);
    if ((rc = sb__kafka_client_consumer_new(&o, &tx->consumer, &tx->cq, &tx->q_min_msgs,
                                            &tx->q_max_bytes, errstr, n)) != SB_EOK)
        return rc;
    if (!(tx->waker = sb__kafka_waker_new(tx->consumer)))
        sb__log(SB_LOG_WARN, NULL,
                "kafka: no fetcher wake-up thread: a fetcher stopped at "
                "its queue bound resumes on its own 1 s tick");
    if (pipe(tx->wake) != 0)
        return sb__errf(errstr, n, SB_EIO, "pipe: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        fcntl(tx->wake[i], F_SETFL, fcntl(tx->wake[i], F_GETFL) | O_NONBLOCK);
        fcntl(tx->wake[i], F_SETFD, FD_CLOEXEC);
    }
    tx->wake_ev = event_new(tx->evbase, tx->wake[0], EV_READ | EV_PERSIST, on_wake, tx);
    if (!tx->wake_ev || event_add(tx->wake_ev, NULL) != 0)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    rd_kafka_queue_io_event_enable(tx->cq, tx->wake[1], "1", 1);
    rd_kafka_queue_io_event_enable(tx->pq, tx->wake[1], "1", 1);
    if ((rc = sb__kafka_client_subscribe(&o, tx->consumer, errstr, n)) != SB_EOK)
        return rc;
    tx->started = true;
    sb__log(SB_LOG_INFO, NULL, "kafka: consuming as group %s from %s (concurrency %s, retry %s)",
            tx->group, bootstraps(tx), tx->key_mode ? "key" : "partition",
            tx->retry_in_place ? "in place" : "topic");
    kick(tx); /* anything queued before the wake-ups were enabled */
    return SB_EOK;
}

/* ---- life cycle ---------------------------------------------------------------------------- */

static void free_all_messages(kafkatx_t *tx)
{
    for (kpart_t *kp = tx->parts; kp; kp = kp->next_all) {
        for (kmsg_t *m = kp->head, *next; m; m = next) {
            next = m->next;
            free_msg(m);
        }
        kp->head = kp->tail = NULL;
        kp->n = kp->n_queued = kp->n_active = 0;
    }
    for (kmsg_t *m = tx->orphans, *next; m; m = next) {
        next = m->next;
        free_msg(m);
    }
    tx->orphans = NULL;
}

#define FINAL_COMMIT_MS 5000

/* The commit at shutdown. While another member joins or leaves, the group coordinator
 * refuses commits of the old generation (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS,
 * UNKNOWN_MEMBER_ID), and what this member handled would be handled again by the next
 * owner: the consumer is served (the rebalance completes; our callback stores and commits
 * what it revokes; fetched messages are dropped, never stored) and the commit retried, for
 * up to FINAL_COMMIT_MS. */
static void final_commit(kafkatx_t *tx)
{
    int64_t deadline = mono_ms() + FINAL_COMMIT_MS;
    for (unsigned attempt = 1;; attempt++) {
        for (kpart_t *kp = tx->parts; kp; kp = kp->next_all)
            advance_prefix(kp);
        flush_stores(tx);
        rd_kafka_resp_err_t err = rd_kafka_commit(tx->consumer, NULL, 0);
        if (!err || err == RD_KAFKA_RESP_ERR__NO_OFFSET) {
            if (attempt > 1)
                sb__log(SB_LOG_INFO, NULL, "kafka: final commit done after the rebalance");
            return;
        }
        bool rebalancing = err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
                           err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
                           err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID;
        if (!rebalancing || mono_ms() >= deadline) {
            sb__log(SB_LOG_WARN, NULL, "kafka: final commit failed: %s", rd_kafka_err2str(err));
            return;
        }
        if (attempt == 1)
            sb__log(SB_LOG_INFO, NULL,
                    "kafka: final commit refused (%s): waiting for the rebalance to complete",
                    rd_kafka_err2name(err));
        int64_t until = mono_ms() + 200;
        while (mono_ms() < until) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(tx->consumer, 50);
            if (m)
                rd_kafka_message_destroy(m); /* closing: not ours to handle any more */
        }
    }
}

static void tx_destroy(sb__transport_t *t)
{
    kafkatx_t *tx = (kafkatx_t *)t;
    if (!tx)
        return;
    tx->closing = true;
    if (tx->consumer) {
        for (kpart_t *kp = tx->parts; kp; kp = kp->next_all)
            advance_prefix(kp);
        if (tx->pending_revoke)
            finish_revoke(tx);
        else if (tx->started)
            final_commit(tx);
        free_all_messages(tx);
        sb__kafka_waker_destroy(tx->waker);
        tx->waker = NULL;
        if (tx->cq)
            rd_kafka_queue_io_event_enable(tx->cq, -1, NULL, 0);
        rd_kafka_consumer_close(tx->consumer);
        finish_revoke(tx); /* in case close revoked without our callback finishing */
        if (tx->cq)
            rd_kafka_queue_destroy(tx->cq);
        rd_kafka_destroy(tx->consumer);
    }
    tx->destroying = true; /* delivery reports from here on call nobody back */
    sb__kafka_produce_close(tx);
    free_all_messages(tx);
    sb__kafka_client_embedded_stop(tx->mock_host, tx->mock);
    for (kpart_t *kp = tx->parts, *next; kp; kp = next) {
        next = kp->next_all;
        event_free(kp->hold);
        sb_free(kp->topic);
        sb_free(kp->base_topic);
        sb_free(kp);
    }
    if (tx->wake_ev)
        event_free(tx->wake_ev);
    if (tx->kick)
        event_free(tx->kick);
    if (tx->revoke_timer)
        event_free(tx->revoke_timer);
    if (tx->slow_timer)
        event_free(tx->slow_timer);
    for (int i = 0; i < 2; i++)
        if (tx->wake[i] >= 0)
            close(tx->wake[i]);
    for (size_t i = 0; i < tx->n_topics; i++)
        sb_free(tx->topics[i]);
    sb_free(tx->topics);
    json_decref(tx->props);
    sb_free(tx->brokers);
    sb_free(tx->group);
    sb_free(tx->client_id);
    sb_free(tx->dlq_suffix);
    sb_free(tx->retry_suffix);
    sb_free(tx->publish_topic);
    sb_free(tx->mock_bootstraps);
    sb_free(tx);
}

const char *sb__kafka_embedded_bootstraps(sb__transport_t *t)
{
    if (!t || t->ops != &kafka_ops)
        return NULL;
    return ((kafkatx_t *)t)->mock_bootstraps;
}

size_t sb__kafka_lag(sb__transport_t *t, sb__kafka_lag_t *out, size_t cap)
{
    if (!t || t->ops != &kafka_ops || !((kafkatx_t *)t)->consumer)
        return 0;
    kafkatx_t *tx = (kafkatx_t *)t;
    size_t n = 0;
    for (kpart_t *kp = tx->parts; kp; kp = kp->next_all) {
        if (!kp->owned || kp->revoking)
            continue;
        /* The position a restart would resume from: the stored offset, else the first
         * message held locally, else the next one to fetch (everything received settled). */
        int64_t pos = kp->store >= 0 ? kp->store : kp->head ? kp->head->d.offset : kp->next_fetch;
        int64_t lo = RD_KAFKA_OFFSET_INVALID, hi = RD_KAFKA_OFFSET_INVALID;
        if (pos < 0 ||
            rd_kafka_get_watermark_offsets(tx->consumer, kp->topic, kp->partition, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            continue;
        if (n < cap)
            out[n] = (sb__kafka_lag_t){kp->topic, kp->partition, hi > pos ? hi - pos : 0};
        n++;
    }
    return n;
}

static const sb__transport_ops_t kafka_ops = {
    .name = "kafka",
    .start = tx_start,
    .pause = tx_pause,
    .resume = tx_resume,
    .ack = tx_ack,
    .retry_later = tx_retry_later,
    .dead_letter = sb__kafka_dead_letter,
    .release = tx_release,
    .publish = sb__kafka_publish,
    .claim_ahead = tx_claim_ahead,
    .turn_done = tx_turn_done,
    .ready = tx_ready,
    .stop = tx_stop,
    .destroy = tx_destroy,
};

int sb__kafka_new(struct event_base *base, const sb__config_t *cfg, sb__tx_sink_fn sink,
                  void *sink_arg, sb__transport_t **out, char *errstr, size_t n)
{
    if (!base || !cfg || !sink || !out)
        return sb__errf(errstr, n, SB_EINVAL, "invalid argument");
    kafkatx_t *tx = sb_calloc(1, sizeof *tx);
    if (!tx)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    tx->base.ops = &kafka_ops;
    tx->base.sink = sink;
    tx->base.sink_arg = sink_arg;
    tx->evbase = base;
    tx->wake[0] = tx->wake[1] = -1;
    int rc = SB_ENOMEM;
    const char *brokers = sb__config_str(cfg, "transport.kafka.brokers");
    const char *publish = sb__config_str(cfg, "transport.kafka.publish_topic");
    json_t *topics = sb__config_json(cfg, "transport.kafka.topics");
    json_t *props = sb__config_json(cfg, "transport.kafka.properties");
    tx->embedded = !strcmp(brokers, "embedded");
    tx->key_mode = !strcmp(sb__config_str(cfg, "transport.kafka.concurrency"), "key");
    tx->retry_in_place = !strcmp(sb__config_str(cfg, "transport.kafka.retry"), "in_place");
    tx->create_topics = sb__config_bool(cfg, "transport.kafka.create_topics");
    tx->max_inflight = (size_t)sb__config_int(cfg, "transport.kafka.max_inflight");
    tx->backlog = (size_t)sb__config_int(cfg, "transport.kafka.partition_backlog");
    tx->revoke_timeout_ms = sb__config_duration_ms(cfg, "transport.kafka.revoke_timeout");
    size_t nt = json_is_array(topics) ? json_array_size(topics) : 0;
    if (nt == 0) {
        rc = sb__errf(errstr, n, SB_ECONFIG,
                      "transport.kafka.topics: at least one topic (or ^regex) is required");
        goto err;
    }
    if (!(tx->topics = sb_calloc(nt, sizeof *tx->topics)))
        goto nomem;
    for (size_t i = 0; i < nt; i++) {
        const char *s = json_string_value(json_array_get(topics, i));
        if (!s || !*s) {
            rc = sb__errf(errstr, n, SB_ECONFIG, "transport.kafka.topics[%zu]: empty", i);
            goto err;
        }
        if (!(tx->topics[i] = sb_strdup(s)))
            goto nomem;
        tx->n_topics++;
    }
    if (!publish || !*publish)
        publish = is_regex(tx->topics[0]) ? "" : tx->topics[0];
    if (!*publish)
        sb__log(SB_LOG_WARN, NULL,
                "kafka: the first topic is a regex and transport.kafka.publish_topic is not "
                "set: handlers cannot publish follow-up events (each attempt fails)");
    if (!(tx->brokers = sb_strdup(brokers)) ||
        !(tx->group = sb_strdup(sb__config_str(cfg, "transport.kafka.group_id"))) ||
        !(tx->client_id = sb_strdup(sb__config_str(cfg, "service.name"))) ||
        !(tx->dlq_suffix = sb_strdup(sb__config_str(cfg, "transport.kafka.dlq_topic_suffix"))) ||
        !(tx->retry_suffix =
              sb_strdup(sb__config_str(cfg, "transport.kafka.retry_topic_suffix"))) ||
        !(tx->publish_topic = sb_strdup(publish)))
        goto nomem;
    if (!*tx->dlq_suffix || !*tx->retry_suffix || !strcmp(tx->dlq_suffix, tx->retry_suffix)) {
        rc = sb__errf(errstr, n, SB_ECONFIG,
                      "transport.kafka: dlq_topic_suffix and retry_topic_suffix must be "
                      "non-empty and different");
        goto err;
    }
    tx->props = props ? json_deep_copy(props) : json_object();
    tx->kick = evtimer_new(base, on_kick, tx);
    tx->slow_timer = evtimer_new(base, on_kick, tx);
    tx->revoke_timer = evtimer_new(base, on_revoke_timeout, tx);
    if (!tx->props || !tx->kick || !tx->revoke_timer || !tx->slow_timer)
        goto nomem;
    /* Check the properties now, so `switchboard run` fails at start-up on a typo. */
    rc = sb__kafka_conf_check(tx->props, false, errstr, n);
    if (rc != SB_EOK)
        goto err;
    *out = &tx->base;
    return SB_EOK;
nomem:
    rc = sb__errf(errstr, n, SB_ENOMEM, "out of memory");
err:
    tx_destroy(&tx->base);
    return rc;
}
