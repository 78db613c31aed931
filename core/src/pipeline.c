/* pipeline.c: assembling a consumer from its configuration; see pipeline.h. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "dlq_amqp.h"
#include "dlq_kafka.h"
#include "errf.h"
#include "host.h"
#include "crashguard.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "replay_jobs.h"
#include "store_memory.h"
#include "store_redis.h"
#include "transport_amqp.h"
#include "transport_kafka.h"
#include "transport_memory.h"

void sb__pipeline_configure_logging(const sb__config_t *cfg)
{
    sb__log_configure(sb__log_level_parse(sb__config_str(cfg, "log.level")),
                      sb__log_format_parse(sb__config_str(cfg, "log.format")), NULL);
    static const char *secrets[] = {"idempotency.redis.password", "admin.token", NULL};
    for (size_t i = 0; secrets[i]; i++) {
        const char *v = sb__config_str(cfg, secrets[i]);
        if (v && *v)
            sb__log_add_secret(v);
    }
    json_t *props = sb__config_json(cfg, "transport.kafka.properties");
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v)
    {
        if (json_is_string(v) && (strstr(k, "password") || strstr(k, "secret")))
            sb__log_add_secret(json_string_value(v));
    }
    /* URL passwords (amqp://u:p@h, redis://u:p@h) are masked by the logger itself. */
}

static int make_amqp(sb__pipeline_t *p, char *errstr, size_t n)
{
    const sb__config_t *cfg = p->cfg;
    json_t *qs = sb__config_json(cfg, "transport.amqp.queues");
    size_t nq = json_array_size(qs);
    const char **queues = sb_calloc(nq + 1, sizeof *queues);
    if (!queues)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    for (size_t i = 0; i < nq; i++)
        queues[i] = json_string_value(json_array_get(qs, i));
    const char *const *patterns;
    size_t np = sb__registry_patterns(p->reg, &patterns);
    sb__amqptx_opts_t o = {
        .url = sb__config_str(cfg, "transport.amqp.url"),
        .password_file = sb__config_str(cfg, "transport.amqp.password_file"),
        .exchange = sb__config_str(cfg, "transport.amqp.exchange"),
        .queue = sb__config_str(cfg, "transport.amqp.queue"),
        .queues = queues,
        .n_queues = nq,
        .quorum = !strcmp(sb__config_str(cfg, "transport.amqp.queue_type"), "quorum"),
        .single_active_consumer = sb__config_bool(cfg, "transport.amqp.single_active_consumer"),
        .declare = sb__config_bool(cfg, "transport.amqp.declare"),
        .prefetch = (unsigned)sb__config_int(cfg, "transport.amqp.prefetch"),
        .heartbeat_s =
            (unsigned)((sb__config_duration_ms(cfg, "transport.amqp.heartbeat") + 999) / 1000),
        .ca_file = sb__config_str(cfg, "transport.amqp.tls.ca_file"),
        .cert_file = sb__config_str(cfg, "transport.amqp.tls.cert_file"),
        .key_file = sb__config_str(cfg, "transport.amqp.tls.key_file"),
        .verify_peer = sb__config_bool(cfg, "transport.amqp.tls.verify_peer"),
        .patterns = patterns,
        .n_patterns = np,
        .consumer = sb__config_str(cfg, "service.name"),
    };
    int rc = sb__amqptx_new(sb__runtime_base(p->rt), &o, sb__dispatcher_deliver, NULL, &p->tx,
                            errstr, n);
    sb_free(queues);
    return rc;
}

static int make_transport(sb__pipeline_t *p, char *errstr, size_t n)
{
    const sb__config_t *cfg = p->cfg;
    p->transport_kind = sb__config_str(cfg, "transport.kind");
    if (!strcmp(p->transport_kind, "memory")) {
        sb__memtx_opts_t o = {
            .capacity = (size_t)sb__config_int(cfg, "transport.memory.capacity"),
            .loopback = sb__config_bool(cfg, "transport.memory.loopback"),
            .queue_name = "memory",
        };
        /* The dispatcher fills in its own sink argument when it is created, before any
         * delivery can happen. */
        int rc = sb__memtx_new(sb__runtime_base(p->rt), &o, sb__dispatcher_deliver, NULL, &p->tx);
        return rc == SB_EOK ? SB_EOK
                            : sb__errf(errstr, n, rc, "memory transport: %s", sb_strerror(rc));
    }
    if (!strcmp(p->transport_kind, "amqp"))
        return make_amqp(p, errstr, n);
    if (!strcmp(p->transport_kind, "kafka"))
        return sb__kafka_new(sb__runtime_base(p->rt), cfg, sb__dispatcher_deliver, NULL, &p->tx,
                             errstr, n);
    return sb__errf(errstr, n, SB_ECONFIG,
                    "transport.kind: \"%s\" is not available in this build yet (use memory)",
                    p->transport_kind);
}

/* Messages of one ordering unit handed over before their turn (all units together: at most
 * half of max_inflight). Measured with Redis idempotency on a 3-partition topic: 128 ->
 * 64-112k msgs/s, 256 -> 76-209k, 512 -> 182-224k (larger windows fill Redis's batches). */
#define CLAIM_AHEAD 512

/* The consumer group in idempotency keys: Kafka's group id, else the service name. */
static const char *key_group(const sb__config_t *cfg, const char *transport_kind)
{
    return !strcmp(transport_kind, "kafka") ? sb__config_str(cfg, "transport.kafka.group_id")
                                            : sb__config_str(cfg, "service.name");
}

/* ---- the store gate ------------------------------------------------------------------- */

/* With a Redis store and on_unavailable: block, the dispatcher talks to the transport
 * through this proxy, so two reasons to pause (its in-flight cap, the store being down) can
 * hold intake at once: resume() happens only when neither holds. Every other operation
 * goes straight to the real transport, which keeps its sink and stays p->tx. */
typedef struct store_gate {
    sb__transport_t base; /* what the dispatcher sees; must be first */
    sb__transport_t *real;
    bool dp_paused, store_down;
} store_gate_t;

static sb__transport_t *real_tx(sb__transport_t *t)
{
    return ((store_gate_t *)t)->real;
}

static int gate_start(sb__transport_t *t, char *errstr, size_t n)
{
    return real_tx(t)->ops->start(real_tx(t), errstr, n);
}

static void gate_set(store_gate_t *g)
{
    sb__transport_t *r = g->real;
    if (g->dp_paused || g->store_down) {
        if (r->ops->pause)
            r->ops->pause(r);
    } else if (r->ops->resume) {
        r->ops->resume(r);
    }
}

static void gate_pause(sb__transport_t *t)
{
    ((store_gate_t *)t)->dp_paused = true;
    gate_set((store_gate_t *)t);
}

static void gate_resume(sb__transport_t *t)
{
    ((store_gate_t *)t)->dp_paused = false;
    gate_set((store_gate_t *)t);
}

static void gate_ack(sb__transport_t *t, sb__delivery_t *d)
{
    real_tx(t)->ops->ack(real_tx(t), d);
}

static int gate_retry_later(sb__transport_t *t, sb__delivery_t *d, uint64_t delay_ms,
                            unsigned next_attempt, sb__tx_done_cb cb, void *arg)
{
    return real_tx(t)->ops->retry_later(real_tx(t), d, delay_ms, next_attempt, cb, arg);
}

static int gate_dead_letter(sb__transport_t *t, sb__delivery_t *d, const sb__dl_meta_t *meta,
                            sb__tx_done_cb cb, void *arg)
{
    return real_tx(t)->ops->dead_letter(real_tx(t), d, meta, cb, arg);
}

static void gate_release(sb__transport_t *t, sb__delivery_t *d)
{
    real_tx(t)->ops->release(real_tx(t), d);
}

static int gate_publish(sb__transport_t *t, const sb__outmsg_t *m, sb__tx_done_cb cb, void *arg)
{
    return real_tx(t)->ops->publish(real_tx(t), m, cb, arg);
}

static void gate_turn_done(sb__transport_t *t, sb__delivery_t *d)
{
    if (real_tx(t)->ops->turn_done)
        real_tx(t)->ops->turn_done(real_tx(t), d);
}

static bool gate_ready(sb__transport_t *t)
{
    return real_tx(t)->ops->ready(real_tx(t));
}

static void gate_stop(sb__transport_t *t)
{
    if (real_tx(t)->ops->stop)
        real_tx(t)->ops->stop(real_tx(t));
}

static void gate_destroy(sb__transport_t *t)
{
    (void)t; /* the pipeline destroys the real transport and frees the gate */
}

static const sb__transport_ops_t gate_ops = {
    .name = "store-gate",
    .start = gate_start,
    .pause = gate_pause,
    .resume = gate_resume,
    .ack = gate_ack,
    .retry_later = gate_retry_later,
    .dead_letter = gate_dead_letter,
    .release = gate_release,
    .publish = gate_publish,
    .turn_done = gate_turn_done,
    .ready = gate_ready,
    .stop = gate_stop,
    .destroy = gate_destroy,
};

static bool store_blocks(const sb__pipeline_t *p)
{
    return strcmp(sb__config_str(p->cfg, "idempotency.redis.on_unavailable"), "process") != 0;
}

/* The Redis store came up or went down. on_unavailable: block holds intake while it is down
 * (nothing new is claimed, nothing is acked that is not done); process keeps going without
 * deduplication and says so once per outage. */
static void store_state_cb(void *arg, bool up)
{
    sb__pipeline_t *p = arg;
    if (!p->tx || !p->dp)
        return;
    if (!p->gate) {
        if (!up)
            sb__log(SB_LOG_WARN, NULL,
                    "idempotency store unavailable: processing WITHOUT deduplication "
                    "(idempotency.redis.on_unavailable: process); duplicates will run again");
        return;
    }
    p->gate->store_down = !up;
    if (sb__runtime_stopping(p->rt))
        return; /* intake stopped for good */
    sb__log(up ? SB_LOG_INFO : SB_LOG_WARN, NULL,
            up ? "idempotency store available: intake resumes"
               : "idempotency store unavailable: intake paused until it is back");
    gate_set(p->gate);
}

static int make_store(sb__pipeline_t *p, char *errstr, size_t n)
{
    const char *kind = sb__config_str(p->cfg, "idempotency.store");
    if (!strcmp(kind, "none"))
        return SB_EOK;
    if (!strcmp(kind, "memory")) {
        char owner[128];
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        snprintf(owner, sizeof owner, "%s:%ld", host, (long)getpid());
        int rc = sb__memstore_new(owner, 1000000, &p->store);
        return rc == SB_EOK ? SB_EOK : sb__errf(errstr, n, rc, "memory store: %s", sb_strerror(rc));
    }
    if (!strcmp(kind, "redis")) {
        /* The write probe goes to a key of this consumer's own namespace (and slot). */
        const char *prefix = sb__config_str(p->cfg, "idempotency.redis.prefix");
        const char *group = key_group(p->cfg, sb__config_str(p->cfg, "transport.kind"));
        size_t plen = strlen(prefix) + strlen(group) + sizeof "{}:probe";
        char *probe = sb_malloc(plen);
        if (!probe)
            return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
        snprintf(probe, plen, "%s{%s}:probe", prefix, group);
        sb__redis_store_opts_t o = {
            .url = sb__config_str(p->cfg, "idempotency.redis.url"),
            .password = sb__config_str(p->cfg, "idempotency.redis.password"),
            .probe_key = probe,
            /* fail-closed: ack nothing whose "done" Redis has not confirmed */
            .hold_completes = store_blocks(p),
        };
        int rc = sb__store_redis_new(p->rt, &o, &p->store, errstr, n);
        sb_free(probe);
        if (rc == SB_EOK)
            sb__store_redis_set_state_cb(p->store, store_state_cb, p);
        return rc;
    }
    return sb__errf(errstr, n, SB_ECONFIG,
                    "idempotency.store: \"%s\" is not available in this build yet (use memory "
                    "or none)",
                    kind);
}

int sb__pipeline_new(const sb__config_t *cfg, sb__pipeline_t **out, char *errstr, size_t n)
{
    int rc;
    sb__pipeline_t *p = sb_calloc(1, sizeof *p);
    if (!p)
        return sb__errf(errstr, n, SB_ENOMEM, "out of memory");
    p->cfg = cfg;
    if ((rc = sb__runtime_new(&p->rt, sb__config_duration_ms(cfg, "service.shutdown_timeout"),
                              errstr, n)) != SB_EOK)
        goto err;
    sb__host_set_loop(sb__runtime_base(p->rt));
    if ((rc = sb__intake_from_config(cfg, &p->intake, errstr, n)) != SB_EOK)
        goto err;
    if ((rc = sb__registry_new(&p->reg)) != SB_EOK) {
        sb__errf(errstr, n, rc, "out of memory");
        goto err;
    }
    if ((rc = sb__registry_load(p->reg, cfg, p->intake, errstr, n)) != SB_EOK)
        goto err;
    unsigned max_inflight = (unsigned)sb__config_int(cfg, "service.max_inflight");
    if (sb__registry_has_blocking(p->reg) &&
        (rc =
             sb__pool_new(sb__runtime_base(p->rt), (unsigned)sb__config_int(cfg, "service.workers"),
                          max_inflight, &p->pool, errstr, n)) != SB_EOK)
        goto err;
    if ((rc = make_store(p, errstr, n)) != SB_EOK || (rc = make_transport(p, errstr, n)) != SB_EOK)
        goto err;
    const char *crash_file = sb__config_str(cfg, "service.crash_file");
    if (crash_file && *crash_file &&
        (rc = sb__crashguard_open(crash_file, (unsigned)sb__config_int(cfg, "service.max_crashes"),
                                  &p->guard, errstr, n)) != SB_EOK)
        goto err;
    sb__dispatcher_opts_t o = {
        .max_inflight = max_inflight,
        .consumer = sb__config_str(cfg, "service.name"),
        .group = key_group(cfg, p->transport_kind),
        .key_prefix = sb__config_str(cfg, "idempotency.redis.prefix"),
        .lease_ms = sb__config_duration_ms(cfg, "idempotency.redis.lease"),
        .done_ttl_ms = sb__config_duration_ms(cfg, "idempotency.redis.ttl"),
        .process_without_store =
            !strcmp(sb__config_str(cfg, "idempotency.redis.on_unavailable"), "process"),
        .crashguard = p->guard,
    };
    sb__transport_t *dtx = p->tx;
    if (p->store && !strcmp(p->store->ops->name, "redis") && store_blocks(p)) {
        if (!(p->gate = sb_calloc(1, sizeof *p->gate))) {
            rc = sb__errf(errstr, n, SB_ENOMEM, "out of memory");
            goto err;
        }
        p->gate->base.ops = &gate_ops;
        p->gate->real = p->tx;
        dtx = &p->gate->base;
    }
    if ((rc = sb__dispatcher_new(p->rt, p->intake, dtx, p->store, p->pool, &o, &p->dp, errstr,
                                 n)) != SB_EOK)
        goto err;
    if (p->gate) { /* deliveries come from the real transport */
        p->tx->sink = p->gate->base.sink;
        p->tx->sink_arg = p->gate->base.sink_arg;
    }
    /* With a store, each message costs two store round trips before the next one of its
     * ordering unit may run; claiming ahead lets those share round trips. Half the slots at
     * most wait for their turn, so a unit's head always finds one. */
    if (p->store && p->tx->ops->claim_ahead)
        p->tx->ops->claim_ahead(p->tx, CLAIM_AHEAD, max_inflight / 2);
    *out = p;
    return SB_EOK;
err:
    sb__pipeline_destroy(p);
    return rc;
}

int sb__pipeline_start(sb__pipeline_t *p, char *errstr, size_t n)
{
    int rc = p->tx->ops->start(p->tx, errstr, n);
    /* Redis not connected yet (block mode): wait for it before taking anything. */
    if (rc == SB_EOK && p->gate && !p->store->ops->available(p->store)) {
        p->gate->store_down = true;
        gate_set(p->gate);
    }
    return rc;
}

void sb__pipeline_destroy(sb__pipeline_t *p)
{
    if (!p)
        return;
    /* Reverse order of creation: nothing is used after it is freed. */
    sb__replay_jobs_destroy(p->jobs);
    sb__pool_destroy(p->pool);
    sb__dispatcher_destroy(p->dp);
    sb__crashguard_close(p->guard);
    if (p->tx)
        p->tx->ops->destroy(p->tx);
    if (p->store)
        p->store->ops->destroy(p->store);
    sb_free(p->gate);
    sb__registry_destroy(p->reg);
    sb__intake_destroy(p->intake);
    sb__runtime_destroy(p->rt);
    sb_free(p);
}

/* ---- admin endpoints ------------------------------------------------------------------- */

static bool admin_ready(void *arg, char *why, size_t n)
{
    sb__pipeline_t *p = arg;
    if (sb__runtime_stopping(p->rt)) {
        snprintf(why, n, "shutting down");
        return false;
    }
    if (!p->tx->ops->ready(p->tx)) {
        snprintf(why, n, "%s transport not connected or not consuming", p->transport_kind);
        return false;
    }
    if (p->store && p->store->ops->available && !p->store->ops->available(p->store) &&
        strcmp(sb__config_str(p->cfg, "idempotency.redis.on_unavailable"), "process") != 0) {
        snprintf(why, n, "idempotency store unavailable");
        return false;
    }
    return true;
}

static void admin_metrics(void *arg, struct evbuffer *out)
{
    sb__pipeline_t *p = arg;
    sb__metrics_src_t src = {
        .dp = p->dp,
        .reg = p->reg,
        .intake = p->intake,
        .transport = p->transport_kind,
        .source = !strcmp(p->transport_kind, "memory") ? "memory" : "",
        .broker_connected = p->tx->ops->ready(p->tx),
        .store_up = p->store ? (p->store->ops->available(p->store) ? 1 : 0) : -1,
        .kafka = !strcmp(p->transport_kind, "kafka"),
    };
    sb__kafka_lag_t *lag = NULL;
    size_t nlag = src.kafka ? sb__kafka_lag(p->tx, NULL, 0) : 0;
    if (nlag && (lag = sb_calloc(nlag, sizeof *lag)) != NULL) {
        src.n_kafka_lag = sb__kafka_lag(p->tx, lag, nlag);
        if (src.n_kafka_lag > nlag) /* cannot change within the call; be safe anyway */
            src.n_kafka_lag = nlag;
        src.kafka_lag = lag;
    }
    sb__metrics_render(&src, out);
    sb__replay_jobs_metrics(p->jobs, out);
    sb_free(lag);
}

static json_t *admin_handlers(void *arg)
{
    return sb__metrics_handlers_json(((sb__pipeline_t *)arg)->reg);
}

static bool admin_route(void *arg, const char *method, const char *path, const char *body,
                        size_t body_len, bool authed, int *status, json_t **reply)
{
    return sb__replay_jobs_route(((sb__pipeline_t *)arg)->jobs, method, path, body, body_len,
                                 authed, status, reply);
}

int sb__pipeline_admin(sb__pipeline_t *p, const char *listen, const char *token, sb__admin_t **out,
                       char *errstr, size_t n)
{
    static const sb__admin_hooks_t hooks = {.ready = admin_ready,
                                            .metrics = admin_metrics,
                                            .handlers = admin_handlers,
                                            .route = admin_route};
    if (!p->jobs) {
        /* Replay jobs need a DLQ backend for the transport (none: POST /replay says 501). */
        const sb__dlq_backend_ops_t *ops = !strcmp(p->transport_kind, "amqp") ? &sb__dlq_amqp_ops
                                           : !strcmp(p->transport_kind, "kafka")
                                               ? &sb__dlq_kafka_ops
                                               : NULL;
        if (sb__replay_jobs_new(p->cfg, ops, &p->jobs) != SB_EOK)
            return sb__errf(errstr, n, SB_ENOMEM, "admin: out of memory");
    }
    return sb__admin_new(sb__runtime_base(p->rt), listen, token, &hooks, p, out, errstr, n);
}
