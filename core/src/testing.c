/* testing.c: the handler test harness; see switchboard/testing.h.
 *
 * It builds an ordinary pipeline (pipeline.c) from a generated configuration: in-memory
 * transport without loopback, in-memory store, one handler instance. The only departure
 * from production is that retries are intercepted (recorded and acked) instead of being
 * redelivered later, so each send has exactly one result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "switchboard/testing.h"
#include "config.h"
#include "log.h"
#include "pipeline.h"
#include "transport_memory.h"

struct sb_test {
    sb__config_t *cfg;
    sb__pipeline_t *p;
    sb__transport_ops_t ops; /* the memory transport's, with retry_later intercepted */
    const sb__transport_ops_t *real;
    sb_test_result_t *cur;
    bool settled;
    size_t published_before;
};

static sb_test_t *current; /* the harness whose event is being settled (one at a time) */

static int harness_retry(sb__transport_t *t, sb__delivery_t *d, uint64_t delay_ms,
                         unsigned next_attempt, sb__tx_done_cb cb, void *arg)
{
    sb_test_t *h = current;
    h->real->ack(t, d);
    cb(arg, SB_EOK);
    return SB_EOK;
}

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

static void observe(void *arg, const sb__settle_info_t *info)
{
    sb_test_t *h = arg;
    sb_test_result_t *r = h->cur;
    if (!r)
        return;
    r->attempts = info->attempt;
    copy(r->handler, sizeof r->handler, info->handler);
    switch (info->how) {
    case SB__SETTLED_ACK:
        r->outcome = SB_TEST_ACKED;
        break;
    case SB__SETTLED_RETRY:
        r->outcome = SB_TEST_RETRIED;
        r->retry_delay_ms = info->delay_ms;
        copy(r->error, sizeof r->error, info->error);
        break;
    case SB__SETTLED_DEAD_LETTER:
        r->outcome = SB_TEST_DEAD_LETTERED;
        copy(r->reason, sizeof r->reason, info->reason);
        copy(r->error, sizeof r->error, info->error);
        break;
    case SB__SETTLED_RELEASE:
        r->outcome = SB_TEST_RETRIED;
        copy(r->error, sizeof r->error, info->error);
        break;
    }
    h->settled = true;
}

sb_test_t *sb_test_new(const char *module, const char *instance_yaml, char *errstr, size_t n)
{
    if (!module || !*module) {
        if (errstr && n)
            snprintf(errstr, n, "no module given");
        return NULL;
    }
    sb_test_t *h = sb_calloc(1, sizeof *h);
    if (!h) {
        if (errstr && n)
            snprintf(errstr, n, "out of memory");
        return NULL;
    }
    /* The instance is named after the module file: "/x/notifier.so" -> "notifier". */
    const char *base = strrchr(module, '/');
    base = base ? base + 1 : module;
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(base, "."), base);
    size_t ylen = instance_yaml ? strlen(instance_yaml) : 0;
    size_t cap = 1024 + strlen(module) + 2 * ylen;
    char *yaml = sb_malloc(cap);
    if (!yaml)
        goto nomem;
    /* The module path goes into a double-quoted YAML scalar: escape it. */
    char qmodule[1024];
    size_t q = 0;
    for (const char *c = module; *c && q + 2 < sizeof qmodule; c++) {
        if (*c == '"' || *c == '\\')
            qmodule[q++] = '\\';
        qmodule[q++] = *c;
    }
    qmodule[q] = '\0';
    int off = snprintf(yaml, cap,
                       "log:\n  level: warn\n"
                       "transport:\n  kind: memory\n  memory:\n    loopback: false\n"
                       "idempotency:\n  store: memory\n"
                       "handlers:\n  - name: \"%s\"\n    module: \"%s\"\n",
                       name, qmodule);
    int prefix_lines = 0;
    for (int i = 0; i < off; i++)
        prefix_lines += yaml[i] == '\n';
    /* Indent the caller's YAML under the handler entry. */
    for (const char *line = instance_yaml; line && *line;) {
        size_t l = strcspn(line, "\n");
        off += snprintf(yaml + off, cap - (size_t)off, "    %.*s\n", (int)l, line);
        line += l + (line[l] == '\n');
    }
    int rc = sb__config_load_buffer(yaml, (size_t)off, "<harness>", &h->cfg, errstr, n);
    sb_free(yaml);
    if (rc != SB_EOK) {
        /* Point at the caller's YAML: "<harness>:14: handlers[0].x" -> "instance_yaml:3: x". */
        int line;
        char rest[512];
        if (errstr && sscanf(errstr, "<harness>:%d: %511[^\n]", &line, rest) == 2 &&
            line > prefix_lines) {
            const char *key = rest;
            if (!strncmp(key, "handlers[0].", 12))
                key += 12;
            snprintf(errstr, n, "instance_yaml:%d: %s", line - prefix_lines, key);
        }
        goto err;
    }
    sb__pipeline_configure_logging(h->cfg);
    if (sb__pipeline_new(h->cfg, &h->p, errstr, n) != SB_EOK)
        goto err;
    h->real = h->p->tx->ops;
    h->ops = *h->real;
    h->ops.retry_later = harness_retry;
    h->p->tx->ops = &h->ops;
    sb__dispatcher_observe(h->p->dp, observe, h);
    if (sb__pipeline_start(h->p, errstr, n) != SB_EOK)
        goto err;
    return h;
nomem:
    if (errstr && n)
        snprintf(errstr, n, "out of memory");
err:
    sb_test_destroy(h);
    return NULL;
}

static void give_up(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

int sb_test_send(sb_test_t *h, const char *type, const char *json_body, const char *const *headers,
                 sb_test_result_t *out)
{
    if (!h || !type || !json_body || !out)
        return SB_EINVAL;
    memset(out, 0, sizeof *out);
    sb__header_t hs[32];
    size_t nh = 0;
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2) {
        if (nh == 32)
            return SB_ETOOBIG;
        hs[nh++] = (sb__header_t){.name = headers[i], .value = headers[i + 1]};
    }
    sb__memtx_msg_t m = {.routing_key = type,
                         .body = json_body,
                         .body_len = strlen(json_body),
                         .content_type = "application/json",
                         .headers = hs,
                         .n_headers = nh};
    size_t before = sb__memtx_published_count(h->p->tx);
    uint64_t dups = sb__dispatcher_stats(h->p->dp)->duplicates;
    int rc = sb__memtx_inject(h->p->tx, &m);
    if (rc != SB_EOK)
        return rc;
    h->cur = out;
    h->settled = false;
    current = h;
    struct event_base *base = sb__runtime_base(h->p->rt);
    struct event *timer = evtimer_new(base, give_up, base);
    struct timeval tv = {10, 0};
    if (timer)
        evtimer_add(timer, &tv);
    bool timed_out = false;
    while (!h->settled || sb__memtx_outstanding(h->p->tx) > 0) {
        if (event_base_loop(base, EVLOOP_ONCE) != 0 || event_base_got_break(base)) {
            timed_out = true;
            break;
        }
    }
    if (timer)
        event_free(timer);
    if (!h->settled || timed_out)
        out->outcome = SB_TEST_TIMED_OUT;
    out->duplicate = sb__dispatcher_stats(h->p->dp)->duplicates > dups;
    out->n_published = sb__memtx_published_count(h->p->tx) - before;
    h->cur = NULL;
    current = NULL;
    return SB_EOK;
}

size_t sb_test_published_count(sb_test_t *h)
{
    return h ? sb__memtx_published_count(h->p->tx) : 0;
}

const char *sb_test_published_type(sb_test_t *h, size_t i)
{
    const sb__memtx_record_t *r = h ? sb__memtx_published_at(h->p->tx, i) : NULL;
    return r ? r->routing_key : NULL;
}

const char *sb_test_published_body(sb_test_t *h, size_t i)
{
    const sb__memtx_record_t *r = h ? sb__memtx_published_at(h->p->tx, i) : NULL;
    return r ? r->body : NULL;
}

void sb_test_destroy(sb_test_t *h)
{
    if (!h)
        return;
    if (h->p)
        h->p->tx->ops = h->real ? h->real : h->p->tx->ops;
    sb__pipeline_destroy(h->p);
    sb__config_destroy(h->cfg);
    sb_free(h);
}
