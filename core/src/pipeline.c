/* pipeline.c: assembling a consumer from its configuration; see pipeline.h. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "errf.h"
#include "host.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "store_memory.h"
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
        return rc == SB_EOK ? SB_EOK : sb__errf(errstr, n, rc, "memory transport: %s",
                                                sb_strerror(rc));
    }
    return sb__errf(errstr, n, SB_ECONFIG,
                    "transport.kind: \"%s\" is not available in this build yet (use memory)",
                    p->transport_kind);
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
        return rc == SB_EOK ? SB_EOK : sb__errf(errstr, n, rc, "memory store: %s",
                                                sb_strerror(rc));
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
        (rc = sb__pool_new(sb__runtime_base(p->rt), (unsigned)sb__config_int(cfg, "service.workers"),
                           max_inflight, &p->pool, errstr, n)) != SB_EOK)
        goto err;
    if ((rc = make_store(p, errstr, n)) != SB_EOK || (rc = make_transport(p, errstr, n)) != SB_EOK)
        goto err;
    const char *kafka_group = sb__config_str(cfg, "transport.kafka.group_id");
    sb__dispatcher_opts_t o = {
        .max_inflight = max_inflight,
        .consumer = sb__config_str(cfg, "service.name"),
        .group = !strcmp(p->transport_kind, "kafka") ? kafka_group
                                                     : sb__config_str(cfg, "service.name"),
        .key_prefix = sb__config_str(cfg, "idempotency.redis.prefix"),
        .lease_ms = sb__config_duration_ms(cfg, "idempotency.redis.lease"),
        .done_ttl_ms = sb__config_duration_ms(cfg, "idempotency.redis.ttl"),
        .process_without_store =
            !strcmp(sb__config_str(cfg, "idempotency.redis.on_unavailable"), "process"),
    };
    if ((rc = sb__dispatcher_new(p->rt, p->intake, p->tx, p->store, p->pool, &o, &p->dp, errstr,
                                 n)) != SB_EOK)
        goto err;
    *out = p;
    return SB_EOK;
err:
    sb__pipeline_destroy(p);
    return rc;
}

int sb__pipeline_start(sb__pipeline_t *p, char *errstr, size_t n)
{
    return p->tx->ops->start(p->tx, errstr, n);
}

void sb__pipeline_destroy(sb__pipeline_t *p)
{
    if (!p)
        return;
    /* Reverse order of creation: nothing is used after it is freed. */
    sb__pool_destroy(p->pool);
    sb__dispatcher_destroy(p->dp);
    if (p->tx)
        p->tx->ops->destroy(p->tx);
    if (p->store)
        p->store->ops->destroy(p->store);
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
    };
    sb__metrics_render(&src, out);
}

static json_t *admin_handlers(void *arg)
{
    return sb__metrics_handlers_json(((sb__pipeline_t *)arg)->reg);
}

int sb__pipeline_admin(sb__pipeline_t *p, const char *listen, const char *token,
                       sb__admin_t **out, char *errstr, size_t n)
{
    static const sb__admin_hooks_t hooks = {
        .ready = admin_ready, .metrics = admin_metrics, .handlers = admin_handlers};
    return sb__admin_new(sb__runtime_base(p->rt), listen, token, &hooks, p, out, errstr, n);
}
