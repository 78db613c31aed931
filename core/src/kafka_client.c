/* kafka_client.c: creating and configuring the Kafka transport's librdkafka clients (see
 * kafka_client.h).
 *
 * Design:
 *  - Every client starts from one base configuration: bootstrap.servers, client.id, logs on a
 *    queue (log.queue, so they run on the loop thread, set_log_queue NULL = the main queue),
 *    our log and error callbacks, then the user's properties (kafka_conf.h). Defaults come
 *    next, only for what the user left unset (sb__kafka_conf_user_set), and what correctness
 *    requires comes last, overriding the user.
 *  - Producer: linger.ms 5 and message.timeout.ms 30000 by default; enable.idempotence and
 *    acks=all always: retry copies, dead letters and follow-up events all go through it.
 *  - Consumer: auto.offset.reset earliest; queued.min.messages 100000 and
 *    queued.max.messages.kbytes 4096 (4 MiB) bound librdkafka's local queue, where it stops
 *    fetching on its own (the transport's first layer of backpressure), and the effective
 *    bounds are reported so the transport can wake a fetcher stopped at them (kafka_waker.h);
 *    fetch.error.backoff.ms is 10 ms, because 2.0.2 backs a full partition queue off by it
 *    (500 ms by default) and a fetch error should not stall 500 ms either; session.timeout.ms
 *    6000 on the embedded cluster. enable.auto.commit is on and enable.auto.offset.store
 *    forced off: the transport stores an offset only past settled messages and librdkafka
 *    commits stored offsets periodically (a user value for either is ignored, with a warning).
 *    The main queue is forwarded to the consumer queue so one queue carries messages,
 *    rebalances, logs and errors.
 *  - The embedded cluster (brokers: embedded) is a librdkafka mock cluster with one broker,
 *    hosted by a silent producer, with the listed topics, their side topics and the publish
 *    topic created up front (EMBEDDED_PARTITIONS each).
 *  - Side topics on a real cluster (create_topics): <topic><dlq_topic_suffix> and (retry
 *    "topic") <topic><retry_topic_suffix> are created when missing, with the partition
 *    count of <topic>.
 *
 *  - A ^regex subscription also subscribes "^(<regex>)<retry suffix>$", so the retry topics
 *    of what it matches are consumed even when the regex itself does not match them.
 *
 * Not here: creating topics matched by a regex subscription (only listed topics get retry/DLQ
 * topics: a regex relies on the broker's auto-creation), keeping a regex subscription's DLQ
 * topics out of the assignment (the transport's rebalance callback), polling and callbacks
 * beyond logs and errors (the transport's). */
#include <stdlib.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "alloc_internal.h"
#include "switchboard/error.h"
#include "errf.h"
#include "kafka_client.h"
#include "kafka_conf.h"
#include "log.h"

#define EMBEDDED_PARTITIONS 3
#define ADMIN_TIMEOUT_MS    15000
/* Start-up waits this long for the cluster's metadata before creating side topics; the loop
 * is not running yet, so a broker that is down or refuses the credentials must not hold
 * SIGTERM and the admin endpoints for long. A healthy broker answers in milliseconds. */
#define METADATA_TIMEOUT_MS 5000

/* ---- small helpers ---------------------------------------------------------------------- */

static bool is_regex(const char *topic)
{
    return topic[0] == '^';
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr, size_t n)
{
    return sb__kafka_conf_set(conf, k, v, errstr, n);
}

static bool user_set(const sb__kafka_client_opts_t *o, const char *which, const char *key)
{
    return sb__kafka_conf_user_set(o->props, which, key);
}

/* ---- configuration of the clients ------------------------------------------------------ */

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    int l = level <= 3   ? SB_LOG_ERROR
            : level == 4 ? SB_LOG_WARN
            : level <= 6 ? SB_LOG_INFO
                         : SB_LOG_DEBUG;
    /* The properties go to both clients on purpose: each ignores the other's. */
    if (!strcmp(fac, "CONFWARN") &&
        (strstr(buf, "is a consumer property") || strstr(buf, "is a producer property")))
        l = SB_LOG_DEBUG;
    sb__log(l, NULL, "kafka %s %s: %s", rd_kafka_name(rk), fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    sb__kafka_client_log_error(rk, err, reason);
}

void sb__kafka_client_log_error(rd_kafka_t *rk, int err, const char *reason)
{
    bool fatal = err == RD_KAFKA_RESP_ERR__FATAL;
    char fbuf[256] = "";
    if (fatal)
        rd_kafka_fatal_error(rk, fbuf, sizeof fbuf);
    sb__log(fatal ? SB_LOG_ERROR : SB_LOG_WARN, NULL, "kafka %s: %s (%s)%s%s", rd_kafka_name(rk),
            reason, rd_kafka_err2name((rd_kafka_resp_err_t)err), fatal ? ": " : "", fbuf);
}

static rd_kafka_conf_t *base_conf(const sb__kafka_client_opts_t *o, const char *which, char *errstr,
                                  size_t n)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        sb__errf(errstr, n, SB_ENOMEM, "out of memory");
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, o->opaque);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, o->error_cb ? o->error_cb : error_cb);
    if (conf_set(conf, "bootstrap.servers", o->bootstraps, errstr, n) ||
        conf_set(conf, "client.id", o->client_id, errstr, n) ||
        conf_set(conf, "log.queue", "true", errstr, n) ||
        sb__kafka_conf_apply(o->props, conf, which, errstr, n)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

int sb__kafka_client_producer_new(const sb__kafka_client_opts_t *o, rd_kafka_t **rk,
                                  rd_kafka_queue_t **q, char *errstr, size_t n)
{
    /* The user's properties, defaults for what they left unset, then what correctness
     * requires (idempotence, acks=all). */
    int rc;
    rd_kafka_conf_t *conf = base_conf(o, "producer", errstr, n);
    if (!conf)
        return SB_ECONFIG;
    if (!user_set(o, "producer", "linger.ms"))
        conf_set(conf, "linger.ms", "5", NULL, 0);
    if (!user_set(o, "producer", "message.timeout.ms"))
        conf_set(conf, "message.timeout.ms", "30000", NULL, 0);
    if ((rc = conf_set(conf, "enable.idempotence", "true", errstr, n)) ||
        (rc = conf_set(conf, "acks", "all", errstr, n))) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, o->dr_cb);
    char err[512];
    *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!*rk) {
        rd_kafka_conf_destroy(conf);
        return sb__errf(errstr, n, SB_ECONFIG, "kafka producer: %s", err);
    }
    rd_kafka_set_log_queue(*rk, NULL);
    *q = rd_kafka_queue_get_main(*rk);
    return *q ? SB_EOK : sb__errf(errstr, n, SB_ENOMEM, "out of memory");
}

static int64_t conf_int(const rd_kafka_conf_t *conf, const char *key, int64_t dflt)
{
    char buf[32];
    size_t len = sizeof buf;
    if (rd_kafka_conf_get(conf, key, buf, &len) != RD_KAFKA_CONF_OK)
        return dflt;
    char *end;
    long long v = strtoll(buf, &end, 10);
    return end != buf && v > 0 ? (int64_t)v : dflt;
}

int sb__kafka_client_consumer_new(const sb__kafka_client_opts_t *o, rd_kafka_t **rk,
                                  rd_kafka_queue_t **q, int64_t *q_min_msgs, int64_t *q_max_bytes,
                                  char *errstr, size_t n)
{
    rd_kafka_conf_t *conf = base_conf(o, "consumer", errstr, n);
    if (!conf)
        return SB_ECONFIG;
    static const char *const defaults[][2] = {
        {"auto.offset.reset", "earliest"},
        {"queued.min.messages", "100000"},
        {"queued.max.messages.kbytes", "4096"},
        /* A fetch error backs off 500 ms by default: too long for a consumer. */
        {"fetch.error.backoff.ms", "10"},
        /* A subscribed topic that does not exist yet (a retry topic the broker creates on
         * the first retry, a new topic a regex matches) is noticed at the next metadata
         * refresh: 10 s instead of 5 min. */
        {"topic.metadata.refresh.interval.ms", "10000"},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (!user_set(o, "consumer", defaults[i][0]))
            conf_set(conf, defaults[i][0], defaults[i][1], NULL, 0);
    if (o->embedded && !user_set(o, "consumer", "session.timeout.ms"))
        conf_set(conf, "session.timeout.ms", "6000", NULL, 0);
    if (user_set(o, "consumer", "enable.auto.offset.store") ||
        user_set(o, "consumer", "enable.auto.commit"))
        sb__log(SB_LOG_WARN, NULL,
                "kafka: enable.auto.commit and enable.auto.offset.store are managed by "
                "switchboard (offsets are stored once settled); the given values are ignored");
    int rc;
    if ((rc = conf_set(conf, "group.id", o->group, errstr, n)) ||
        (rc = conf_set(conf, "enable.auto.commit", "true", errstr, n)) ||
        (rc = conf_set(conf, "enable.auto.offset.store", "false", errstr, n))) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    rd_kafka_conf_set_rebalance_cb(conf, o->rebalance_cb);
    sb__kafka_conf_warn(conf);
    *q_min_msgs = conf_int(conf, "queued.min.messages", 100000);
    *q_max_bytes = conf_int(conf, "queued.max.messages.kbytes", 65536) * 1024;
    char err[512];
    *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!*rk) {
        rd_kafka_conf_destroy(conf);
        return sb__errf(errstr, n, SB_ECONFIG, "kafka consumer: %s", err);
    }
    sb__log(SB_LOG_INFO, NULL, "kafka: consumer %s on librdkafka %s", rd_kafka_name(*rk),
            rd_kafka_version_str());
    rd_kafka_set_log_queue(*rk, NULL);
    rd_kafka_poll_set_consumer(*rk); /* main queue (logs, errors) -> consumer queue */
    *q = rd_kafka_queue_get_consumer(*rk);
    return *q ? SB_EOK : sb__errf(errstr, n, SB_ENOMEM, "out of memory");
}

/* ---- the embedded cluster ------------------------------------------------------------------ */

int sb__kafka_client_embedded_start(const sb__kafka_client_opts_t *o, rd_kafka_t **host,
                                    rd_kafka_mock_cluster_t **mock, char **bootstraps, char *errstr,
                                    size_t n)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
    *host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!*host) {
        rd_kafka_conf_destroy(conf);
        return sb__errf(errstr, n, SB_EIO, "embedded broker: %s", err);
    }
    *mock = rd_kafka_mock_cluster_new(*host, 1);
    if (!*mock)
        return sb__errf(errstr, n, SB_EIO, "embedded broker: cannot create the mock cluster");
    if (!(*bootstraps = sb_strdup(rd_kafka_mock_cluster_bootstraps(*mock))))
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    for (size_t i = 0; i < o->n_topics; i++) {
        if (is_regex(o->topics[i]))
            continue;
        const char *suffixes[] = {"", o->dlq_suffix, o->retry_in_place ? NULL : o->retry_suffix};
        for (size_t k = 0; k < 3; k++) {
            if (!suffixes[k])
                continue;
            char *name = sb__strjoin(o->topics[i], suffixes[k]);
            if (!name)
                return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
            rd_kafka_mock_topic_create(*mock, name, EMBEDDED_PARTITIONS, 1);
            sb_free(name);
        }
    }
    if (*o->publish_topic && !is_regex(o->publish_topic))
        rd_kafka_mock_topic_create(*mock, o->publish_topic, EMBEDDED_PARTITIONS, 1);
    sb__log(SB_LOG_INFO, NULL, "kafka: embedded broker (librdkafka mock cluster) on %s",
            *bootstraps);
    return SB_EOK;
}

void sb__kafka_client_embedded_stop(rd_kafka_t *host, rd_kafka_mock_cluster_t *mock)
{
    if (mock)
        rd_kafka_mock_cluster_destroy(mock);
    if (host)
        rd_kafka_destroy(host);
}

/* ---- topics -------------------------------------------------------------------------------- */

/* Creates the missing <topic>.retry and <topic>.dlq with the partition count of <topic>. */
void sb__kafka_client_create_side_topics(const sb__kafka_client_opts_t *o, rd_kafka_t *producer)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(producer, 1, NULL, &md, METADATA_TIMEOUT_MS);
    if (err) {
        sb__log(SB_LOG_WARN, NULL, "kafka: metadata: %s (retry and DLQ topics not created)",
                rd_kafka_err2str(err));
        return;
    }
    rd_kafka_NewTopic_t *nt[64];
    size_t nn = 0;
    char err_s[256];
    for (size_t i = 0; i < o->n_topics; i++) {
        if (is_regex(o->topics[i]))
            continue;
        int parts = 0;
        for (int k = 0; k < md->topic_cnt; k++)
            if (!strcmp(md->topics[k].topic, o->topics[i]) && !md->topics[k].err)
                parts = md->topics[k].partition_cnt;
        if (parts <= 0)
            continue;
        const char *suffixes[] = {o->dlq_suffix, o->retry_in_place ? NULL : o->retry_suffix};
        for (size_t s = 0; s < 2; s++) {
            if (!suffixes[s] || nn >= sizeof nt / sizeof nt[0])
                continue;
            char *name = sb__strjoin(o->topics[i], suffixes[s]);
            bool exists = false;
            for (int k = 0; name && k < md->topic_cnt; k++)
                exists = exists || (!strcmp(md->topics[k].topic, name) && !md->topics[k].err);
            if (name && !exists)
                nt[nn] = rd_kafka_NewTopic_new(name, parts, -1, err_s, sizeof err_s);
            if (name && !exists && nt[nn])
                nn++;
            sb_free(name);
        }
    }
    rd_kafka_metadata_destroy(md);
    if (!nn)
        return;
    rd_kafka_queue_t *q = rd_kafka_queue_new(producer);
    if (q) {
        rd_kafka_CreateTopics(producer, nt, nn, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ADMIN_TIMEOUT_MS);
        const rd_kafka_CreateTopics_result_t *res =
            ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
        size_t cnt = 0;
        const rd_kafka_topic_result_t **tr =
            res ? rd_kafka_CreateTopics_result_topics(res, &cnt) : NULL;
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
            if (!e)
                sb__log(SB_LOG_INFO, NULL, "kafka: created topic %s",
                        rd_kafka_topic_result_name(tr[i]));
            else if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                sb__log(SB_LOG_WARN, NULL, "kafka: creating topic %s: %s",
                        rd_kafka_topic_result_name(tr[i]),
                        rd_kafka_topic_result_error_string(tr[i]));
        }
        if (!ev)
            sb__log(SB_LOG_WARN, NULL, "kafka: creating retry/DLQ topics timed out");
        else
            rd_kafka_event_destroy(ev);
        rd_kafka_queue_destroy(q);
    }
    rd_kafka_NewTopic_destroy_array(nt, nn);
}

/* "^(<regex>)<suffix>$": the regex without its own anchors, the suffix escaped. */
static char *retry_regex(const char *regex, const char *suffix)
{
    const char *body = regex + 1; /* after the '^' */
    size_t lb = strlen(body);
    if (lb && body[lb - 1] == '$' && (lb < 2 || body[lb - 2] != '\\'))
        lb--;
    char *r = sb_malloc(lb + 2 * strlen(suffix) + 6);
    if (!r)
        return NULL;
    size_t o = 0;
    r[o++] = '^';
    r[o++] = '(';
    memcpy(r + o, body, lb);
    o += lb;
    r[o++] = ')';
    for (const char *c = suffix; *c; c++) {
        if (strchr(".[]()*+?{}|^$\\", *c))
            r[o++] = '\\';
        r[o++] = *c;
    }
    r[o++] = '$';
    r[o] = '\0';
    return r;
}

int sb__kafka_client_subscribe(const sb__kafka_client_opts_t *o, rd_kafka_t *consumer, char *errstr,
                               size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)o->n_topics * 2);
    if (!l)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    for (size_t i = 0; i < o->n_topics; i++) {
        rd_kafka_topic_partition_list_add(l, o->topics[i], RD_KAFKA_PARTITION_UA);
        if (!o->retry_in_place) {
            char *r = is_regex(o->topics[i]) ? retry_regex(o->topics[i], o->retry_suffix)
                                             : sb__strjoin(o->topics[i], o->retry_suffix);
            if (!r) {
                rd_kafka_topic_partition_list_destroy(l);
                return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
            }
            rd_kafka_topic_partition_list_add(l, r, RD_KAFKA_PARTITION_UA);
            sb_free(r);
        }
    }
    rd_kafka_resp_err_t err = rd_kafka_subscribe(consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        return sb__errf(errstr, n, SB_ECONFIG, "kafka subscribe: %s", rd_kafka_err2str(err));
    return SB_EOK;
}
