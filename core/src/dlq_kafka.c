/* dlq_kafka.c: the Kafka backend of dlq_backend.h, on librdkafka used BLOCKING.
 *
 * Design: the DLQ is a log, so "removed" means "behind the replay group's committed offset".
 * open() takes, for every partition of every DLQ topic, the low and high watermarks and the
 * group's committed offset, chooses a start (the committed offset, or the earliest one
 * when there is none; read-only handles may instead start at the beginning or at a time
 * given in the options, found with rd_kafka_offsets_for_times) and assigns the partitions
 * there by hand (rd_kafka_assign: no group join, no rebalance, the group only stores
 * offsets). The range ends at the high watermarks taken at open, so a run terminates even
 * while new dead letters arrive; next() returns SB_ECLOSED once every partition reached it.
 *
 * Settling: positions are queued per partition in the order next() returned them; ack()
 * marks one acked and commits, synchronously, the offset after the longest acked prefix of
 * its partition. A kept message stays at the head of that queue, so nothing past it is
 * committed in this run and a rerun sees it (and what follows it) again. Read-only handles
 * queue nothing and commit nothing.
 *
 * Publishing (replay) goes through an idempotent producer (acks=all), one message at a
 * time: produce, flush, and read the delivery report. The record's key, body and headers go
 * out unchanged (Kafka headers are bytes or null; "S"/"x" values of an imported AMQP record
 * are sent as their bytes, integers as decimal text, other types are refused).
 *
 * It does not: delete anything from a topic (Kafka cannot; purge only advances the replay
 * group's offset), join the group (two replays of one DLQ at once would both read it),
 * support regex topics without --queue, or work with brokers: "embedded" (the mock cluster
 * lives inside `switchboard run`). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "dlq_kafka.h"
#include "errf.h"
#include "kafka_conf.h"

#define META_TIMEOUT_MS    10000
#define IDLE_TIMEOUT_MS    30000 /* no message although the range is not done: give up */
#define DELIVERY_TIMEOUT_S 30
#define POLL_SLICE_MS      200

enum { P_PENDING = 0, P_ACKED, P_KEPT };

typedef struct pend {
    int64_t off;
    int st;
} pend_t;

typedef struct part {
    const char *topic; /* into kdlq_t.topics */
    int32_t partition;
    int64_t lo, hi, start;
    bool done;
    pend_t *q; /* unsettled or kept positions, in next() order */
    size_t qh, qn, qcap;
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
} kdlq_t;

struct sb__dlq_pos {
    size_t pi;
    int64_t off;
};

typedef struct delivery {
    bool done;
    rd_kafka_resp_err_t err;
} delivery_t;

static char *cat2(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = sb_malloc(na + nb + 1);
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb + 1);
    }
    return s;
}

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
        sb_free(b->parts[i].q);
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
        char *t = cat2(s, suffix && *suffix ? suffix : ".dlq");
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

/* Start offsets: the group's committed ones, or the options' (read-only handles). */
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
    for (size_t i = 0; i < b->np; i++) {
        const rd_kafka_topic_partition_t *e1 =
            rd_kafka_topic_partition_list_find(l, b->parts[i].topic, b->parts[i].partition);
        int64_t off = !e1 || e1->err ? RD_KAFKA_OFFSET_INVALID : e1->offset;
        b->parts[i].start = off >= 0 ? off : b->parts[i].lo;
    }
    bool seekable = opts && (b->read_only || opts->from_beginning);
    if (seekable && opts->from_beginning)
        for (size_t i = 0; i < b->np; i++)
            b->parts[i].start = b->parts[i].lo;
    if (seekable && opts->start_offset >= 0)
        for (size_t i = 0; i < b->np; i++)
            b->parts[i].start = opts->start_offset;
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
        if (p->start > p->hi)
            p->start = p->hi;
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
        group = cat2(g && *g ? g : "switchboard", ".dlq-replay");
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
    for (size_t i = 0; i < b->np; i++)
        sum += (uint64_t)(b->parts[i].hi - b->parts[i].start);
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

static int dlq_next(sb__dlq_backend_t *bb, uint64_t timeout_ms, sb__dlq_record_t **rec,
                    sb__dlq_pos_t **pos)
{
    kdlq_t *b = (kdlq_t *)bb;
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
        if (!p || p->done || m->offset < p->start) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->offset >= p->hi) {
            pause_part(b, p);
            rd_kafka_message_destroy(m);
            continue;
        }
        sb__dlq_record_t *r = NULL;
        sb__dlq_pos_t *ps = NULL;
        int rc = to_record(m, p->topic, &r);
        int64_t off = m->offset;
        rd_kafka_message_destroy(m);
        if (rc == SB_EOK && !(ps = sb_malloc(sizeof *ps)))
            rc = SB_ENOMEM;
        if (rc == SB_EOK && !b->read_only && p->qn == p->qcap) {
            size_t nc = p->qcap ? p->qcap * 2 : 64;
            pend_t *nq = sb_realloc(p->q, nc * sizeof *nq);
            if (nq) {
                p->q = nq;
                p->qcap = nc;
            } else {
                rc = SB_ENOMEM;
            }
        }
        if (rc != SB_EOK) {
            /* Never committed past: the message stays in the DLQ. */
            sb__dlq_record_destroy(r);
            sb_free(ps);
            return rc;
        }
        if (!b->read_only)
            p->q[p->qn++] = (pend_t){off, P_PENDING};
        if (off + 1 >= p->hi)
            pause_part(b, p);
        ps->pi = pi;
        ps->off = off;
        *rec = r;
        *pos = ps;
        return SB_EOK;
    }
    return SB_ECLOSED;
}

static int settle(kdlq_t *b, sb__dlq_pos_t *pos, int st)
{
    size_t pi = pos->pi;
    int64_t off = pos->off;
    sb_free(pos);
    if (b->read_only)
        return st == P_ACKED ? SB_ESTATE : SB_EOK;
    part_t *p = &b->parts[pi];
    size_t i = p->qh;
    while (i < p->qn && p->q[i].off != off)
        i++;
    if (i == p->qn)
        return SB_EINVAL;
    p->q[i].st = st;
    int64_t last = -1;
    while (p->qh < p->qn && p->q[p->qh].st == P_ACKED)
        last = p->q[p->qh++].off;
    if (p->qh == p->qn)
        p->qh = p->qn = 0;
    if (last < 0)
        return SB_EOK;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    if (!l)
        return SB_ENOMEM;
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = last + 1;
    rd_kafka_resp_err_t e = rd_kafka_commit(b->c, l, 0);
    if (!e && l->elems[0].err)
        e = l->elems[0].err;
    rd_kafka_topic_partition_list_destroy(l);
    return e ? SB_EUNAVAILABLE : SB_EOK;
}

static int dlq_ack(sb__dlq_backend_t *bb, sb__dlq_pos_t *pos)
{
    return settle((kdlq_t *)bb, pos, P_ACKED);
}

static int dlq_keep(sb__dlq_backend_t *bb, sb__dlq_pos_t *pos)
{
    return settle((kdlq_t *)bb, pos, P_KEPT);
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
