/* dlq_kafka.c: the Kafka backend of dlq_backend.h, on librdkafka used BLOCKING.
 *
 * Design: the DLQ is a log, so "removed" means "behind the replay group's committed offset C,
 * or in the done set committed with it" (below). open() takes, for every partition of every
 * DLQ topic, the low and high watermarks and the group's committed offset and metadata,
 * chooses a start (C, or the earliest offset when there is none; read-only handles may
 * instead start at the beginning or at a time given in the options, found with
 * rd_kafka_offsets_for_times) and assigns the partitions there by hand (rd_kafka_assign: no
 * group join, no rebalance, the group only stores offsets). The range ends at the high
 * watermarks taken at open, so a run terminates even while new dead letters arrive; next()
 * returns SB_ECLOSED once every partition reached it.
 *
 * The done set. A filtered or partial replay/purge moves records that lie after records it
 * leaves in the DLQ (not selected, refused by max-replays, failed). An offset alone can only
 * say "everything before C is gone", so the moved records would stay visible behind a kept
 * one and a later replay would send them again (with the same replay count: max-replays
 * would not stop it). So every commit also stores, in the commit's metadata string (Kafka
 * keeps up to the broker's offset.metadata.max.bytes, 4096 by default, per partition;
 * librdkafka 2.0.2 sends it with rd_kafka_commit and returns it from rd_kafka_committed),
 * the offsets at or after C that are removed too, as sorted, disjoint, non-adjacent ranges:
 *
 *     "sbdlq1:" C ":" [ITEM ("," ITEM)*]        ITEM = GAP ["+" LEN]
 *
 * every number in lowercase base 36: a range starts GAP offsets after the end of the
 * previous one (the first: after C; GAP >= 1, as C itself is never in the set) and holds LEN
 * offsets (1 when omitted). Kept and moved records alternating cost 2 bytes per moved one,
 * about 2,000 in 4096 bytes; a moved run of any length costs one ITEM. An empty set is
 * written as no metadata (a plain commit). C in the string must equal the committed offset,
 * else the set belongs to another offset (someone reset the group) and is ignored; metadata
 * that is not ours is ignored too; "sbdlq" with another version fails open (never guess).
 * Every read (stats, list, show, export, replay, purge) skips the set (seeking past long
 * ranges) and count() does not count it. A handle whose options choose its start
 * (from_beginning, start_offset) sees everything from there, as it sees records behind C.
 *
 * Settling: ack() adds the record's offset to the set, with the offsets between it and the
 * previous record read in its partition (they hold no record, e.g. transaction markers or
 * compacted ones, or are in the set already), advances C over the range that now starts at
 * C, drops what lies behind C, and commits C with the set, synchronously. keep() changes
 * nothing: the record stays, with everything else not in the set. C never moves back.
 * Read-only handles commit nothing (ack() is refused).
 *
 * The set is bounded by the metadata limit (offset.metadata.max.bytes from DescribeConfigs
 * at open, at most 4096; 4096 when it cannot be read). Before next() returns a record whose
 * ack would have to add a range (something before it stays), it checks that the metadata,
 * with room for one more range for it and for each unsettled position, still fits. If not,
 * it logs why and returns SB_ETOOBIG, then and on every later call: the run stops BEFORE
 * that record is published or purged, so nothing moves that could not be recorded (no
 * duplicate, no loss). The operator replays or purges the records that stay (a broader
 * filter, or in order), which shrinks the set, and runs the command again. An error while
 * reading is sticky the same way: the record it lost is never covered by a later ack.
 *
 * Publishing (replay) goes through an idempotent producer (acks=all), one message at a
 * time: produce, flush, and read the delivery report. The record's key, body and headers go
 * out unchanged (Kafka headers are bytes or null; "S"/"x" values of an imported AMQP record
 * are sent as their bytes, integers as decimal text, other types are refused).
 *
 * It does not: delete anything from a topic (Kafka cannot; purge only advances the replay
 * group's offset and set), join the group (two writing runs on one DLQ at once are not
 * supported: both would read it, and the later commit would replace the other's set),
 * support regex topics without --queue, or work with brokers: "embedded" (the mock cluster
 * lives inside `switchboard run`). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "switchboard/alloc.h"
#include "alloc_internal.h"
#include "switchboard/error.h"
#include "dlq_kafka.h"
#include "errf.h"
#include "kafka_conf.h"
#include "log.h"

#define META_TIMEOUT_MS    10000
#define IDLE_TIMEOUT_MS    30000 /* no message although the range is not done: give up */
#define DELIVERY_TIMEOUT_S 30
#define POLL_SLICE_MS      200
#define SEEK_MIN_SKIP      256 /* a range of the done set at least this long is sought past */

/* The done set's encoding (see the top of the file). */
#define SET_PREFIX     "sbdlq1:"
#define SET_MAGIC      "sbdlq"
#define SET_MAX_BYTES  4096 /* Kafka's default offset.metadata.max.bytes; never more */
#define B36_MAX_DIGITS 13   /* INT64_MAX in base 36 */
/* The prefix, C and ':' at their longest, and one ",GAP+LEN" at its longest. */
#define SET_HDR_MAX  (sizeof SET_PREFIX - 1 + B36_MAX_DIGITS + 1)
#define SET_ITEM_MAX (1 + B36_MAX_DIGITS + 1 + B36_MAX_DIGITS)

typedef struct range {
    int64_t lo, hi; /* [lo, hi) */
} range_t;

typedef struct part {
    const char *topic; /* into kdlq_t.topics */
    int32_t partition;
    int64_t lo, hi, start;
    bool done;
    bool skip;         /* reads skip the done set (not when the options chose the start) */
    int64_t committed; /* C: every offset below it is removed */
    range_t *set;      /* the done set: removed at or after C; sorted, disjoint, > C */
    size_t ns, scap;
    size_t items_len;  /* the set's ITEMs and commas, encoded */
    int64_t last_read; /* the last offset consumed here (returned or skipped); start - 1 */
    size_t unsettled;  /* positions next() returned that are not settled yet */
} part_t;

typedef struct kdlq {
    sb__dlq_backend_t base;
    rd_kafka_t *c, *p;
    char *brokers, *client_id;
    json_t *props;
    char **topics;
    size_t nt;
    part_t *parts;
    size_t np, remaining;
    bool read_only;
    int32_t broker_id; /* the broker that answered the metadata request */
    size_t set_max;    /* the metadata limit the done set must fit */
    int stuck;         /* a sticky next() error (SB_ETOOBIG, a lost record): the run ends */
} kdlq_t;

struct sb__dlq_pos {
    size_t pi;
    int64_t off;
    int64_t from; /* the first offset an ack removes with it: last_read + 1 when read */
};

typedef struct delivery {
    bool done;
    rd_kafka_resp_err_t err;
} delivery_t;

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr, size_t n)
{
    return sb__kafka_conf_set(conf, k, v, errstr, n);
}

static int apply_props(const kdlq_t *b, rd_kafka_conf_t *conf, const char *which, char *errstr,
                       size_t n)
{
    return sb__kafka_conf_apply(b->props, conf, which, errstr, n);
}

static bool user_set(const kdlq_t *b, const char *which, const char *key)
{
    return sb__kafka_conf_user_set(b->props, which, key);
}

static rd_kafka_conf_t *base_conf(const kdlq_t *b, const char *which, char *errstr, size_t n,
                                  int *rc)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        *rc = sb__errf(errstr, n, SB_ENOMEM, "out of memory");
        return NULL;
    }
    if ((*rc = conf_set(conf, "bootstrap.servers", b->brokers, errstr, n)) ||
        (*rc = conf_set(conf, "client.id", b->client_id, errstr, n)) ||
        (*rc = apply_props(b, conf, which, errstr, n))) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (!strcmp(which, "consumer"))
        sb__kafka_conf_warn(conf);
    return conf;
}

static void pause_part(kdlq_t *b, part_t *p)
{
    if (p->done)
        return;
    p->done = true;
    b->remaining--;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    if (!l)
        return;
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    rd_kafka_pause_partitions(b->c, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---- the done set ---------------------------------------------------------------------- */

static size_t b36_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 36) {
        v /= 36;
        n++;
    }
    return n;
}

static size_t b36_put(char *out, uint64_t v)
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    char tmp[B36_MAX_DIGITS + 1];
    size_t n = 0;
    do {
        tmp[n++] = digits[v % 36];
        v /= 36;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* A base-36 number at *s (before end), at most INT64_MAX; advances *s. */
static bool b36_get(const char **s, const char *end, int64_t *out)
{
    const char *p = *s;
    uint64_t v = 0;
    while (p < end) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (*p >= 'a' && *p <= 'z')
            d = *p - 'a' + 10;
        else
            break;
        if (v > ((uint64_t)INT64_MAX - (uint64_t)d) / 36)
            return false;
        v = v * 36 + (uint64_t)d;
        p++;
    }
    if (p == *s)
        return false;
    *s = p;
    *out = (int64_t)v;
    return true;
}

static size_t item_len(int64_t gap, int64_t len)
{
    return b36_len((uint64_t)gap) + (len > 1 ? 1 + b36_len((uint64_t)len) : 0);
}

static void set_measure(part_t *p)
{
    size_t n = 0;
    int64_t prev = p->committed;
    for (size_t i = 0; i < p->ns; i++) {
        n += (i ? 1 : 0) + item_len(p->set[i].lo - prev, p->set[i].hi - p->set[i].lo);
        prev = p->set[i].hi;
    }
    p->items_len = n;
}

/* Advances C over the range that starts at (or before) it and drops what lies behind C. */
static void set_normalize(part_t *p)
{
    size_t k = 0;
    while (k < p->ns && p->set[k].lo <= p->committed) {
        if (p->set[k].hi > p->committed)
            p->committed = p->set[k].hi;
        k++;
    }
    if (k) {
        memmove(p->set, p->set + k, (p->ns - k) * sizeof *p->set);
        p->ns -= k;
    }
    set_measure(p);
}

/* Adds [lo, hi) to the set, merging what it touches. C is not advanced here. */
static int set_add(part_t *p, int64_t lo, int64_t hi)
{
    if (lo < p->committed)
        lo = p->committed;
    if (hi <= lo)
        return SB_EOK;
    size_t i = 0;
    while (i < p->ns && p->set[i].hi < lo)
        i++;
    size_t j = i;
    while (j < p->ns && p->set[j].lo <= hi) {
        if (p->set[j].lo < lo)
            lo = p->set[j].lo;
        if (p->set[j].hi > hi)
            hi = p->set[j].hi;
        j++;
    }
    if (j == i) {
        if (p->ns == p->scap) {
            size_t nc = p->scap ? p->scap * 2 : 16;
            range_t *ns = sb_realloc(p->set, nc * sizeof *ns);
            if (!ns)
                return SB_ENOMEM;
            p->set = ns;
            p->scap = nc;
        }
        memmove(p->set + i + 1, p->set + i, (p->ns - i) * sizeof *p->set);
        p->ns++;
    } else if (j > i + 1) {
        memmove(p->set + i + 1, p->set + j, (p->ns - j) * sizeof *p->set);
        p->ns -= j - i - 1;
    }
    p->set[i] = (range_t){lo, hi};
    return SB_EOK;
}

/* The range of the set that holds off, or NULL. */
static const range_t *set_find(const part_t *p, int64_t off)
{
    size_t a = 0, z = p->ns;
    while (a < z) {
        size_t m = a + (z - a) / 2;
        if (p->set[m].hi <= off)
            a = m + 1;
        else if (p->set[m].lo > off)
            z = m;
        else
            return &p->set[m];
    }
    return NULL;
}

/* The metadata for (C, set) in a malloc'd buffer that librdkafka frees with the list (its
 * rd_free is free()); NULL with *len 0 for an empty set. SB_EOK or SB_ENOMEM. */
static int set_encode(const part_t *p, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!p->ns)
        return SB_EOK;
    char *s = malloc(SET_HDR_MAX + p->items_len + 1);
    if (!s)
        return SB_ENOMEM;
    size_t n = sizeof SET_PREFIX - 1;
    memcpy(s, SET_PREFIX, n);
    n += b36_put(s + n, (uint64_t)p->committed);
    s[n++] = ':';
    int64_t prev = p->committed;
    for (size_t i = 0; i < p->ns; i++) {
        if (i)
            s[n++] = ',';
        n += b36_put(s + n, (uint64_t)(p->set[i].lo - prev));
        if (p->set[i].hi - p->set[i].lo > 1) {
            s[n++] = '+';
            n += b36_put(s + n, (uint64_t)(p->set[i].hi - p->set[i].lo));
        }
        prev = p->set[i].hi;
    }
    *out = s;
    *len = n;
    return SB_EOK;
}

/* Loads the set from the metadata committed with offset `committed` (>= 0). Metadata that
 * is not ours, or that names another offset, gives an empty set. */
static int set_decode(part_t *p, const char *md, size_t n, int64_t committed, char *errstr,
                      size_t en)
{
    size_t ml = sizeof SET_MAGIC - 1, pl = sizeof SET_PREFIX - 1;
    if (!md || n < ml || memcmp(md, SET_MAGIC, ml))
        return SB_EOK;
    if (n < pl || memcmp(md, SET_PREFIX, pl))
        return sb__errf(errstr, en, SB_EPARSE,
                        "kafka: %s [%" PRId32 "]: the replay group's offset metadata \"%.*s\" "
                        "has a format this switchboard does not know (a newer version wrote "
                        "it?); use that version",
                        p->topic, p->partition, (int)(n > 40 ? 40 : n), md);
    const char *s = md + pl, *end = md + n;
    int64_t base = 0;
    bool ok = b36_get(&s, end, &base) && s < end && *s++ == ':';
    if (ok && base != committed) {
        sb__log(SB_LOG_WARN, NULL,
                "kafka DLQ %s [%" PRId32 "]: the replay group's offset metadata belongs to "
                "offset %" PRId64 ", not to the committed %" PRId64 " (the group was reset?): "
                "ignored",
                p->topic, p->partition, base, committed);
        return SB_EOK;
    }
    int64_t prev = base;
    while (ok && s < end) {
        int64_t gap = 0, len = 1;
        ok = b36_get(&s, end, &gap) && gap >= 1 && gap <= INT64_MAX - prev;
        if (ok && s < end && *s == '+') {
            s++;
            ok = b36_get(&s, end, &len) && len >= 1;
        }
        if (ok)
            ok = len <= INT64_MAX - (prev + gap);
        if (ok)
            ok = set_add(p, prev + gap, prev + gap + len) == SB_EOK;
        if (ok) {
            prev += gap + len;
            if (s < end)
                ok = *s++ == ',' && s < end;
        }
    }
    if (!ok) {
        p->ns = 0;
        return sb__errf(errstr, en, SB_EPARSE,
                        "kafka: %s [%" PRId32 "]: the replay group's offset metadata is "
                        "damaged (\"%.*s...\"); reset the group's offsets to go on",
                        p->topic, p->partition, (int)(n > 40 ? 40 : n), md);
    }
    return SB_EOK;
}

/* Commits C with the set. */
static int commit_part(kdlq_t *b, part_t *p)
{
    char *md = NULL;
    size_t mlen = 0;
    if (set_encode(p, &md, &mlen) != SB_EOK)
        return SB_ENOMEM;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    if (!l) {
        free(md);
        return SB_ENOMEM;
    }
    rd_kafka_topic_partition_t *e1 = rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
    e1->offset = p->committed;
    e1->metadata = md; /* owned by the list now */
    e1->metadata_size = mlen;
    rd_kafka_resp_err_t e = rd_kafka_commit(b->c, l, 0);
    if (!e && l->elems[0].err)
        e = l->elems[0].err;
    rd_kafka_topic_partition_list_destroy(l);
    if (e == RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE) {
        /* The limit read at open was wrong (a broker configured otherwise): stop. */
        sb__log(SB_LOG_ERROR, NULL,
                "kafka DLQ %s [%" PRId32 "]: the broker refused %zu bytes of offset metadata "
                "(offset.metadata.max.bytes); this record may be moved again; stopping",
                p->topic, p->partition, mlen);
        b->stuck = SB_ETOOBIG;
    }
    return e ? SB_EUNAVAILABLE : SB_EOK;
}

/* The broker's offset.metadata.max.bytes, at most SET_MAX_BYTES; SET_MAX_BYTES when it
 * cannot be read (e.g. no DescribeConfigs permission). */
static size_t metadata_limit(kdlq_t *b)
{
    size_t lim = SET_MAX_BYTES;
    char id[16];
    snprintf(id, sizeof id, "%" PRId32, b->broker_id);
    rd_kafka_queue_t *q = rd_kafka_queue_new(b->c);
    rd_kafka_ConfigResource_t *cr = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_BROKER, id);
    rd_kafka_AdminOptions_t *ao =
        rd_kafka_AdminOptions_new(b->c, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    if (q && cr) {
        if (ao)
            rd_kafka_AdminOptions_set_request_timeout(ao, META_TIMEOUT_MS, NULL, 0);
        rd_kafka_DescribeConfigs(b->c, &cr, 1, ao, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, META_TIMEOUT_MS + 1000);
        const rd_kafka_DescribeConfigs_result_t *res =
            ev && !rd_kafka_event_error(ev) ? rd_kafka_event_DescribeConfigs_result(ev) : NULL;
        size_t nr = 0, ne = 0;
        const rd_kafka_ConfigResource_t **rs =
            res ? rd_kafka_DescribeConfigs_result_resources(res, &nr) : NULL;
        const rd_kafka_ConfigEntry_t **es = nr && !rd_kafka_ConfigResource_error(rs[0])
                                                ? rd_kafka_ConfigResource_configs(rs[0], &ne)
                                                : NULL;
        for (size_t i = 0; i < ne; i++) {
            const char *v = rd_kafka_ConfigEntry_value(es[i]);
            if (strcmp(rd_kafka_ConfigEntry_name(es[i]), "offset.metadata.max.bytes") || !v)
                continue;
            char *endp;
            long long x = strtoll(v, &endp, 10);
            if (*endp == '\0' && x >= 0 && (unsigned long long)x < lim)
                lim = (size_t)x;
        }
        if (ev)
            rd_kafka_event_destroy(ev);
    }
    if (ao)
        rd_kafka_AdminOptions_destroy(ao);
    if (cr)
        rd_kafka_ConfigResource_destroy(cr);
    if (q)
        rd_kafka_queue_destroy(q);
    return lim;
}

static void dlq_close(sb__dlq_backend_t *bb)
{
    kdlq_t *b = (kdlq_t *)bb;
    if (!b)
        return;
    if (b->p) {
        rd_kafka_flush(b->p, 10000);
        rd_kafka_destroy(b->p);
    }
    if (b->c) {
        rd_kafka_consumer_close(b->c);
        rd_kafka_destroy(b->c);
    }
    for (size_t i = 0; i < b->np; i++)
        sb_free(b->parts[i].set);
    sb_free(b->parts);
    for (size_t i = 0; i < b->nt; i++)
        sb_free(b->topics[i]);
    sb_free(b->topics);
    json_decref(b->props);
    sb_free(b->brokers);
    sb_free(b->client_id);
    sb_free(b);
}

static int add_topic(kdlq_t *b, const char *name)
{
    char **t = sb_realloc(b->topics, (b->nt + 1) * sizeof *t);
    if (!t)
        return SB_ENOMEM;
    b->topics = t;
    if (!(t[b->nt] = sb_strdup(name)))
        return SB_ENOMEM;
    b->nt++;
    return SB_EOK;
}

static int resolve_topics(kdlq_t *b, const sb__config_t *cfg, const sb__dlq_open_opts_t *opts,
                          char *errstr, size_t n)
{
    if (opts && opts->dlq && *opts->dlq)
        return add_topic(b, opts->dlq);
    const char *suffix = sb__config_str(cfg, "transport.kafka.dlq_topic_suffix");
    json_t *topics = sb__config_json(cfg, "transport.kafka.topics");
    size_t nt = json_is_array(topics) ? json_array_size(topics) : 0;
    if (!nt)
        return sb__errf(errstr, n, SB_ECONFIG, "kafka: transport.kafka.topics is empty");
    for (size_t i = 0; i < nt; i++) {
        const char *s = json_string_value(json_array_get(topics, i));
        if (!s || !*s || s[0] == '^')
            return sb__errf(errstr, n, SB_ECONFIG,
                            "kafka: transport.kafka.topics[%zu] is a regex or empty; name the "
                            "DLQ topic with --queue",
                            i);
        char *t = sb__strjoin(s, suffix && *suffix ? suffix : ".dlq");
        if (!t)
            return SB_ENOMEM;
        int rc = add_topic(b, t);
        sb_free(t);
        if (rc != SB_EOK)
            return rc;
    }
    return SB_EOK;
}

/* The partitions of every DLQ topic, with their watermarks. */
static int load_partitions(kdlq_t *b, char *errstr, size_t n)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(b->c, 1, NULL, &md, META_TIMEOUT_MS);
    if (e)
        return sb__errf(errstr, n, SB_EUNAVAILABLE, "kafka: metadata: %s", rd_kafka_err2str(e));
    b->broker_id = md->orig_broker_id;
    int rc = SB_EOK;
    size_t missing = 0;
    const char *missing_name = NULL;
    for (size_t t = 0; t < b->nt && rc == SB_EOK; t++) {
        const struct rd_kafka_metadata_topic *mt = NULL;
        for (int i = 0; i < md->topic_cnt; i++)
            if (!strcmp(md->topics[i].topic, b->topics[t]) && !md->topics[i].err)
                mt = &md->topics[i];
        if (!mt || mt->partition_cnt <= 0) {
            missing++;
            missing_name = b->topics[t];
            continue;
        }
        part_t *np = sb_realloc(b->parts, (b->np + (size_t)mt->partition_cnt) * sizeof *np);
        if (!np) {
            rc = SB_ENOMEM;
            break;
        }
        b->parts = np;
        for (int i = 0; i < mt->partition_cnt; i++) {
            part_t *p = &b->parts[b->np];
            memset(p, 0, sizeof *p);
            p->topic = b->topics[t];
            p->partition = mt->partitions[i].id;
            e = rd_kafka_query_watermark_offsets(b->c, p->topic, p->partition, &p->lo, &p->hi,
                                                 META_TIMEOUT_MS);
            if (e) {
                rc = sb__errf(errstr, n, SB_EUNAVAILABLE,
                              "kafka: watermarks of %s [%" PRId32 "]: %s", p->topic, p->partition,
                              rd_kafka_err2str(e));
                break;
            }
            b->np++;
        }
    }
    rd_kafka_metadata_destroy(md);
    if (rc == SB_EOK && missing == b->nt)
        rc = sb__errf(errstr, n, SB_ENOTFOUND, "kafka: topic %s does not exist", missing_name);
    return rc;
}

/* C and the done set of every partition from the group's commits, and the start offsets:
 * C, or the options' (read-only handles). */
static int choose_starts(kdlq_t *b, const sb__dlq_open_opts_t *opts, char *errstr, size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)b->np);
    if (!l)
        return SB_ENOMEM;
    for (size_t i = 0; i < b->np; i++)
        rd_kafka_topic_partition_list_add(l, b->parts[i].topic, b->parts[i].partition);
    rd_kafka_resp_err_t e = rd_kafka_committed(b->c, l, META_TIMEOUT_MS);
    if (e) {
        rd_kafka_topic_partition_list_destroy(l);
        return sb__errf(errstr, n, SB_EUNAVAILABLE, "kafka: committed offsets: %s",
                        rd_kafka_err2str(e));
    }
    int rc = SB_EOK;
    for (size_t i = 0; i < b->np && rc == SB_EOK; i++) {
        part_t *p = &b->parts[i];
        const rd_kafka_topic_partition_t *e1 =
            rd_kafka_topic_partition_list_find(l, p->topic, p->partition);
        int64_t off = !e1 || e1->err ? RD_KAFKA_OFFSET_INVALID : e1->offset;
        p->committed = off >= 0 ? off : p->lo;
        if (off >= 0)
            rc = set_decode(p, e1->metadata, e1->metadata_size, off, errstr, n);
        /* Records below the low watermark are gone anyway. */
        if (p->committed < p->lo)
            p->committed = p->lo;
        set_normalize(p);
        p->start = p->committed;
        p->skip = true;
    }
    if (rc != SB_EOK) {
        rd_kafka_topic_partition_list_destroy(l);
        return rc;
    }
    bool seekable = opts && (b->read_only || opts->from_beginning);
    if (seekable && opts->from_beginning)
        for (size_t i = 0; i < b->np; i++) {
            b->parts[i].start = b->parts[i].lo;
            b->parts[i].skip = false;
        }
    if (seekable && opts->start_offset >= 0)
        for (size_t i = 0; i < b->np; i++) { /* within what the partition retains */
            int64_t o = opts->start_offset;
            b->parts[i].start = o < b->parts[i].lo   ? b->parts[i].lo
                                : o > b->parts[i].hi ? b->parts[i].hi
                                                     : o;
            b->parts[i].skip = false;
        }
    if (seekable && opts->since_ms >= 0) {
        for (int i = 0; i < l->cnt; i++) {
            l->elems[i].offset = opts->since_ms;
            l->elems[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        e = rd_kafka_offsets_for_times(b->c, l, META_TIMEOUT_MS);
        if (e) {
            rd_kafka_topic_partition_list_destroy(l);
            return sb__errf(errstr, n, SB_EUNAVAILABLE, "kafka: offsets for times: %s",
                            rd_kafka_err2str(e));
        }
        for (size_t i = 0; i < b->np; i++) {
            const rd_kafka_topic_partition_t *e1 =
                rd_kafka_topic_partition_list_find(l, b->parts[i].topic, b->parts[i].partition);
            /* A partition whose lookup failed is read from its start: the seek only saves
             * reading, skipping the partition would hide records. */
            if (!e1 || e1->err)
                continue;
            /* -1 (RD_KAFKA_OFFSET_END): no message at or after that time. */
            int64_t t = e1->offset >= 0 ? e1->offset : b->parts[i].hi;
            if (t > b->parts[i].start)
                b->parts[i].start = t;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    for (size_t i = 0; i < b->np; i++) {
        part_t *p = &b->parts[i];
        if (p->start < p->lo)
            p->start = p->lo;
        const range_t *r;
        while (p->skip && (r = set_find(p, p->start)) != NULL)
            p->start = r->hi;
        if (p->start > p->hi)
            p->start = p->hi;
        p->last_read = p->start - 1;
        p->done = p->start >= p->hi;
        if (!p->done)
            b->remaining++;
    }
    return SB_EOK;
}

static int dlq_open(const sb__config_t *cfg, const sb__dlq_open_opts_t *opts,
                    sb__dlq_backend_t **out, char *errstr, size_t n)
{
    const char *brokers = sb__config_str(cfg, "transport.kafka.brokers");
    if (!brokers || !*brokers || !strcmp(brokers, "embedded"))
        return sb__errf(errstr, n, SB_ECONFIG,
                        "kafka: transport.kafka.brokers must name real brokers (the embedded "
                        "cluster lives only inside `switchboard run`)");
    kdlq_t *b = sb_calloc(1, sizeof *b);
    if (!b)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    b->base.ops = &sb__dlq_kafka_ops;
    b->read_only = opts && opts->read_only;
    int rc = SB_ENOMEM;
    char *group = NULL;
    const char *cid = sb__config_str(cfg, "service.name");
    json_t *props = sb__config_json(cfg, "transport.kafka.properties");
    if (!(b->brokers = sb_strdup(brokers)) || !(b->client_id = sb_strdup(cid ? cid : "")) ||
        !(b->props = props ? json_deep_copy(props) : json_object()))
        goto err;
    if (opts && opts->group_id && *opts->group_id) {
        group = sb_strdup(opts->group_id);
    } else {
        const char *g = sb__config_str(cfg, "transport.kafka.group_id");
        group = sb__strjoin(g && *g ? g : "switchboard", ".dlq-replay");
    }
    if (!group)
        goto err;
    if ((rc = resolve_topics(b, cfg, opts, errstr, n)) != SB_EOK)
        goto err;
    rd_kafka_conf_t *conf = base_conf(b, "consumer", errstr, n, &rc);
    if (!conf)
        goto err;
    if ((rc = conf_set(conf, "group.id", group, errstr, n)) ||
        (rc = conf_set(conf, "enable.auto.commit", "false", errstr, n)) ||
        (rc = conf_set(conf, "enable.auto.offset.store", "false", errstr, n)) ||
        (rc = conf_set(conf, "auto.offset.reset", "earliest", errstr, n)) ||
        (rc = conf_set(conf, "enable.partition.eof", "true", errstr, n))) {
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    char kerr[512];
    if (!(b->c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof kerr))) {
        rd_kafka_conf_destroy(conf);
        rc = sb__errf(errstr, n, SB_ECONFIG, "kafka: %s", kerr);
        goto err;
    }
    if ((rc = load_partitions(b, errstr, n)) != SB_EOK ||
        (rc = choose_starts(b, opts, errstr, n)) != SB_EOK)
        goto err;
    b->set_max = b->read_only ? SET_MAX_BYTES : metadata_limit(b);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)b->np + 1);
    if (!l) {
        rc = SB_ENOMEM;
        goto err;
    }
    for (size_t i = 0; i < b->np; i++)
        if (!b->parts[i].done)
            rd_kafka_topic_partition_list_add(l, b->parts[i].topic, b->parts[i].partition)->offset =
                b->parts[i].start;
    rd_kafka_resp_err_t e = rd_kafka_assign(b->c, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        rc = sb__errf(errstr, n, SB_EUNAVAILABLE, "kafka: assign: %s", rd_kafka_err2str(e));
        goto err;
    }
    sb_free(group);
    *out = &b->base;
    return SB_EOK;
err:
    if (rc == SB_ENOMEM)
        sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    sb_free(group);
    dlq_close(&b->base);
    return rc;
}

static int dlq_count(sb__dlq_backend_t *bb, uint64_t *estimate)
{
    kdlq_t *b = (kdlq_t *)bb;
    uint64_t sum = 0;
    for (size_t i = 0; i < b->np; i++) {
        const part_t *p = &b->parts[i];
        int64_t n = p->hi - p->start;
        for (size_t k = 0; p->skip && k < p->ns; k++) {
            int64_t lo = p->set[k].lo > p->start ? p->set[k].lo : p->start;
            int64_t hi = p->set[k].hi < p->hi ? p->set[k].hi : p->hi;
            if (hi > lo)
                n -= hi - lo;
        }
        sum += n > 0 ? (uint64_t)n : 0;
    }
    *estimate = sum;
    return SB_EOK;
}

static part_t *find_part(kdlq_t *b, const char *topic, int32_t partition, size_t *pi)
{
    for (size_t i = 0; i < b->np; i++)
        if (b->parts[i].partition == partition && !strcmp(b->parts[i].topic, topic)) {
            *pi = i;
            return &b->parts[i];
        }
    return NULL;
}

static int to_record(const rd_kafka_message_t *m, const char *topic, sb__dlq_record_t **out)
{
    sb__dlq_record_t *r = NULL;
    int rc = sb__dlq_record_new(&r);
    if (rc != SB_EOK)
        return rc;
    sb__dlq_record_set_transport(r, SB__DLQ_TX_KAFKA);
    rc = sb__dlq_record_set(r, SB__DLQ_SOURCE, topic, strlen(topic));
    if (rc == SB_EOK)
        rc = sb__dlq_record_set_num(r, SB__DLQ_PARTITION, (uint64_t)m->partition);
    if (rc == SB_EOK)
        rc = sb__dlq_record_set_num(r, SB__DLQ_OFFSET, (uint64_t)m->offset);
    if (rc == SB_EOK && m->key)
        rc = sb__dlq_record_set(r, SB__DLQ_KEY, m->key, m->key_len);
    int64_t ts = rd_kafka_message_timestamp(m, NULL);
    if (rc == SB_EOK && ts >= 0)
        rc = sb__dlq_record_set_num(r, SB__DLQ_TIMESTAMP_MS, (uint64_t)ts);
    rd_kafka_headers_t *hs = NULL;
    if (rc == SB_EOK && rd_kafka_message_headers(m, &hs) == RD_KAFKA_RESP_ERR_NO_ERROR && hs) {
        sb__dlq_list_t *l = sb__dlq_record_headers(r);
        for (size_t i = 0; rc == SB_EOK; i++) {
            const char *name;
            const void *v;
            size_t sz;
            if (rd_kafka_header_get_all(hs, i, &name, &v, &sz))
                break;
            rc = sb__dlq_list_add_bytes(l, name, 'K', v, v ? sz : 0);
        }
    }
    if (rc == SB_EOK)
        rc = sb__dlq_record_set(r, SB__DLQ_BODY, m->payload ? m->payload : "", m->len);
    if (rc != SB_EOK) {
        sb__dlq_record_destroy(r);
        return rc;
    }
    *out = r;
    return SB_EOK;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Past a long range of the done set, so a run does not read what it skips. A failed seek
 * only means reading on: the records are still skipped one by one. */
static void seek_past(kdlq_t *b, part_t *p, int64_t to)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    if (!l)
        return;
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = to;
    rd_kafka_error_t *err = rd_kafka_seek_partitions(b->c, l, META_TIMEOUT_MS);
    if (err)
        rd_kafka_error_destroy(err);
    else if (!l->elems[0].err)
        p->last_read = to - 1;
    rd_kafka_topic_partition_list_destroy(l);
}

/* Whether a record that would add a range to p's set may be returned: the metadata, with one
 * more range for it and for each unsettled position, stays within the limit. */
static bool set_has_room(const kdlq_t *b, const part_t *p)
{
    return SET_HDR_MAX + p->items_len + (p->unsettled + 1) * SET_ITEM_MAX <= b->set_max;
}

static int dlq_next(sb__dlq_backend_t *bb, uint64_t timeout_ms, sb__dlq_record_t **rec,
                    sb__dlq_pos_t **pos)
{
    kdlq_t *b = (kdlq_t *)bb;
    if (b->stuck)
        return b->stuck;
    /* The range is known to hold more messages: waiting for them is not "empty for now". */
    uint64_t wait = timeout_ms > IDLE_TIMEOUT_MS ? timeout_ms : IDLE_TIMEOUT_MS;
    int64_t t0 = mono_ms();
    while (b->remaining) {
        if ((uint64_t)(mono_ms() - t0) >= wait)
            return SB_ETIMEOUT;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(b->c, POLL_SLICE_MS);
        if (!m)
            continue;
        size_t pi = 0;
        part_t *p = m->rkt ? find_part(b, rd_kafka_topic_name(m->rkt), m->partition, &pi) : NULL;
        if (m->err) {
            rd_kafka_resp_err_t e = m->err;
            rd_kafka_message_destroy(m);
            if (e == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (p)
                    pause_part(b, p);
                continue;
            }
            if (!p)
                continue; /* a client-level notice; librdkafka retries by itself */
            return SB_EUNAVAILABLE;
        }
        if (!p || p->done || m->offset < p->start || m->offset <= p->last_read) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->offset >= p->hi) {
            pause_part(b, p);
            rd_kafka_message_destroy(m);
            continue;
        }
        int64_t off = m->offset, skip_to = -1;
        const range_t *in;
        if (p->skip && off < p->committed)
            skip_to = p->committed; /* C moved past it during this run */
        else if (p->skip && (in = set_find(p, off)) != NULL)
            skip_to = in->hi;
        if (skip_to >= 0) {
            /* Removed already: not there for any verb. */
            rd_kafka_message_destroy(m);
            t0 = mono_ms(); /* reading on is progress, not idling */
            p->last_read = off;
            if (skip_to >= p->hi)
                pause_part(b, p);
            else if (skip_to - off >= SEEK_MIN_SKIP)
                seek_past(b, p, skip_to);
            continue;
        }
        int64_t from = p->last_read + 1;
        if (!b->read_only && from > p->committed && !set_has_room(b, p)) {
            rd_kafka_message_destroy(m);
            sb__log(SB_LOG_ERROR, NULL,
                    "kafka DLQ %s [%" PRId32 "]: stopped before offset %" PRId64
                    ": the replay group cannot record more dead letters moved past ones "
                    "that stay (%zu ranges fill %zu of %zu bytes of offset metadata). "
                    "Nothing was lost or sent twice. Replay or purge with a broader filter, "
                    "or in order (the records that stay first), then run this again",
                    p->topic, p->partition, off, p->ns,
                    sizeof SET_PREFIX - 1 + b36_len((uint64_t)p->committed) + 1 + p->items_len,
                    b->set_max);
            return b->stuck = SB_ETOOBIG;
        }
        sb__dlq_record_t *r = NULL;
        sb__dlq_pos_t *ps = NULL;
        int rc = to_record(m, p->topic, &r);
        rd_kafka_message_destroy(m);
        if (rc == SB_EOK && !(ps = sb_malloc(sizeof *ps)))
            rc = SB_ENOMEM;
        if (rc != SB_EOK) {
            /* Never covered by a later ack (the run ends): the message stays in the DLQ. */
            sb__dlq_record_destroy(r);
            return b->stuck = rc;
        }
        p->last_read = off;
        if (!b->read_only)
            p->unsettled++;
        if (off + 1 >= p->hi)
            pause_part(b, p);
        ps->pi = pi;
        ps->off = off;
        ps->from = from;
        *rec = r;
        *pos = ps;
        return SB_EOK;
    }
    return SB_ECLOSED;
}

static int dlq_ack(sb__dlq_backend_t *bb, sb__dlq_pos_t *pos)
{
    kdlq_t *b = (kdlq_t *)bb;
    size_t pi = pos->pi;
    int64_t off = pos->off, from = pos->from;
    sb_free(pos);
    if (b->read_only)
        return SB_ESTATE;
    part_t *p = &b->parts[pi];
    if (p->unsettled)
        p->unsettled--;
    if (off < p->committed)
        return SB_EOK; /* removed already (a handle that started before C) */
    int rc = set_add(p, from, off + 1);
    if (rc != SB_EOK)
        return rc;
    set_normalize(p);
    return commit_part(b, p);
}

static int dlq_keep(sb__dlq_backend_t *bb, sb__dlq_pos_t *pos)
{
    kdlq_t *b = (kdlq_t *)bb;
    size_t pi = pos->pi;
    sb_free(pos);
    if (!b->read_only && b->parts[pi].unsettled)
        b->parts[pi].unsettled--;
    return SB_EOK;
}

/* ---- publishing ----------------------------------------------------------------------- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    delivery_t *d = m->_private;
    if (d) {
        d->err = m->err;
        d->done = true;
    }
}

static int new_producer(kdlq_t *b, char *errstr, size_t n)
{
    int rc;
    rd_kafka_conf_t *conf = base_conf(b, "producer", errstr, n, &rc);
    if (!conf)
        return rc;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    if (!user_set(b, "producer", "message.timeout.ms") &&
        (rc = conf_set(conf, "message.timeout.ms", "30000", errstr, n))) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    if ((rc = conf_set(conf, "enable.idempotence", "true", errstr, n)) ||
        (rc = conf_set(conf, "acks", "all", errstr, n))) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    char kerr[512];
    if (!(b->p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof kerr))) {
        rd_kafka_conf_destroy(conf);
        return sb__errf(errstr, n, SB_ECONFIG, "kafka: producer: %s", kerr);
    }
    return SB_EOK;
}

/* The record's headers as Kafka headers (bytes or null). */
static int make_headers(const sb__dlq_record_t *rec, rd_kafka_headers_t **out, char *errstr,
                        size_t n)
{
    const sb__dlq_list_t *l = sb__dlq_record_headers_const(rec);
    rd_kafka_headers_t *hs = rd_kafka_headers_new(l->n ? l->n : 1);
    if (!hs)
        return SB_ENOMEM;
    for (size_t i = 0; i < l->n; i++) {
        const sb__dlq_field_t *f = &l->v[i];
        const sb__dlq_value_t *v = &f->value;
        char num[32];
        const char *p = NULL;
        ssize_t len = 0;
        switch (v->type) {
        case 'K':
        case 'S':
        case 'x':
            p = v->as.bytes.p;
            len = p ? (ssize_t)v->as.bytes.len : 0;
            break;
        case 'V':
            break;
        case 'b':
        case 's':
        case 'I':
        case 'l':
            len = snprintf(num, sizeof num, "%" PRId64, v->as.i);
            p = num;
            break;
        case 'B':
        case 'u':
        case 'i':
        case 'L':
        case 'T':
            len = snprintf(num, sizeof num, "%" PRIu64, v->as.u);
            p = num;
            break;
        case 't':
            p = v->as.b ? "true" : "false";
            len = (ssize_t)strlen(p);
            break;
        default:
            rd_kafka_headers_destroy(hs);
            return sb__errf(errstr, n, SB_EINVAL,
                            "header %.*s has type %c, which Kafka cannot carry", (int)f->name.len,
                            f->name.p ? f->name.p : "", v->type);
        }
        rd_kafka_header_add(hs, f->name.p ? f->name.p : "", (ssize_t)f->name.len, p, len);
    }
    *out = hs;
    return SB_EOK;
}

static int dlq_publish(sb__dlq_backend_t *bb, const sb__dlq_record_t *rec,
                       const sb__dlq_dest_t *dest, char *errstr, size_t n)
{
    kdlq_t *b = (kdlq_t *)bb;
    const char *topic = dest ? dest->to : NULL;
    char *orig = NULL;
    if (!topic) {
        size_t len;
        const char *s = sb__dlq_record_header_str(rec, SB__DLQ_H_ORIG_TOPIC, &len);
        if (!s || !len)
            return sb__errf(errstr, n, SB_EINVAL, "no " SB__DLQ_H_ORIG_TOPIC " header; use --to");
        if (!(orig = sb_strndup(s, len)))
            return SB_ENOMEM;
        topic = orig;
    }
    if (topic[0] == ':')
        topic++; /* ":TOPIC", as `dlq import` writes it for AMQP's default exchange */
    int rc = SB_EOK;
    if (!*topic)
        rc = sb__errf(errstr, n, SB_EINVAL, "empty destination topic");
    if (rc == SB_EOK && !b->p)
        rc = new_producer(b, errstr, n);
    rd_kafka_headers_t *hs = NULL;
    if (rc == SB_EOK)
        rc = make_headers(rec, &hs, errstr, n);
    if (rc != SB_EOK) {
        sb_free(orig);
        return rc;
    }
    size_t klen = 0, blen = 0;
    const char *key = sb__dlq_record_get(rec, SB__DLQ_KEY, &klen);
    const char *body = sb__dlq_record_get(rec, SB__DLQ_BODY, &blen);
    delivery_t d = {false, RD_KAFKA_RESP_ERR_NO_ERROR};
    rd_kafka_resp_err_t e =
        rd_kafka_producev(b->p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key ? klen : 0),
                          RD_KAFKA_V_VALUE(blen ? (void *)body : NULL, blen),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hs),
                          RD_KAFKA_V_OPAQUE(&d), RD_KAFKA_V_END);
    if (e) {
        rd_kafka_headers_destroy(hs);
        rc = sb__errf(errstr, n, SB_EUNAVAILABLE, "kafka: produce to %s: %s", topic,
                      rd_kafka_err2str(e));
        sb_free(orig);
        return rc;
    }
    int64_t t0 = mono_ms();
    while (!d.done && mono_ms() - t0 < (DELIVERY_TIMEOUT_S + 5) * 1000)
        rd_kafka_flush(b->p, 1000);
    if (!d.done) {
        /* The report may still come; &d must not be written after we return. */
        rd_kafka_purge(b->p, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        while (!d.done)
            rd_kafka_poll(b->p, 100);
        rc = sb__errf(errstr, n, SB_ETIMEOUT, "kafka: no delivery report for %s within %d s", topic,
                      DELIVERY_TIMEOUT_S);
    } else if (d.err) {
        int code = d.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ? SB_ENOTFOUND
                   : d.err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT      ? SB_ETIMEOUT
                                                                    : SB_EUNAVAILABLE;
        rc = sb__errf(errstr, n, code, "kafka: delivery to %s failed: %s", topic,
                      rd_kafka_err2str(d.err));
    }
    sb_free(orig);
    return rc;
}

const sb__dlq_backend_ops_t sb__dlq_kafka_ops = {
    .name = "kafka",
    .open = dlq_open,
    .count = dlq_count,
    .next = dlq_next,
    .publish_confirmed = dlq_publish,
    .ack = dlq_ack,
    .keep = dlq_keep,
    .close = dlq_close,
};
