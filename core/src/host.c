/* host.c: the host side of the handler ABI: the sb_host_api table modules call through.
 *
 * Every entry is a thin adapter onto the internal API (event.c for event access,
 * settle.c for the context, log.c for logging), so the ABI can stay fixed while the
 * internals move. Built-in modules, linked into the binary, find the table through
 * sb_module_host defined here; shared-object modules get their own copy of that variable
 * (hidden in the .so) set by their entry point. */
#include <stdarg.h>
#include <stdio.h>

#include "switchboard/version.h"
#include "event.h"
#include "host.h"
#include "log.h"
#include "settle.h"

static struct event_base *host_base;

void sb__host_set_loop(struct event_base *base)
{
    host_base = base;
}

static void host_vlog(const char *module, sb_log_level_t level, const char *fmt, va_list ap)
{
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    sb__log_fields_t f = {.module = module};
    sb__log((int)level, &f, "%s", msg);
}

static void host_log(const char *module, sb_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    host_vlog(module, level, fmt, ap);
    va_end(ap);
}

static sb_event_t *mut(const sb_event_t *ev)
{
    /* Getters decode into the event's arena; to handlers the event is read-only. */
    return (sb_event_t *)ev;
}

static const char *ev_type(const sb_event_t *ev)
{
    return ev->type;
}

static const char *ev_id(const sb_event_t *ev)
{
    return ev->id;
}

static unsigned ev_attempt(const sb_event_t *ev)
{
    return ev->attempt;
}

static const char *ev_header(const sb_event_t *ev, const char *name, size_t *len)
{
    return name ? sb__event_header(ev, name, len) : NULL;
}

static const void *ev_body(const sb_event_t *ev, size_t *len)
{
    if (len)
        *len = ev->data_len;
    return ev->data;
}

static json_t *ev_json(const sb_event_t *ev)
{
    return sb__event_json(mut(ev));
}

static const char *ev_get_str(const sb_event_t *ev, const char *f, const char *def)
{
    const char *s;
    return f && sb__event_get_str(mut(ev), f, &s, NULL) == 0 ? s : def;
}

static int64_t ev_get_int(const sb_event_t *ev, const char *f, int64_t def)
{
    int64_t v;
    return f && sb__event_get_int(mut(ev), f, &v) == 0 ? v : def;
}

static double ev_get_double(const sb_event_t *ev, const char *f, double def)
{
    double v;
    return f && sb__event_get_double(mut(ev), f, &v) == 0 ? v : def;
}

static int ev_get_bool(const sb_event_t *ev, const char *f, int def)
{
    bool v;
    return f && sb__event_get_bool(mut(ev), f, &v) == 0 ? (int)v : def;
}

static int64_t ev_get_time(const sb_event_t *ev, const char *f, int64_t def)
{
    int64_t v;
    return f && sb__event_get_time(mut(ev), f, &v) == 0 ? v : def;
}

static const char *ev_traceparent(const sb_event_t *ev)
{
    return ev->traceparent;
}

static void *loop_base(void)
{
    return host_base;
}

static const sb_host_api host_api = {
    .abi_version = SB_HANDLER_ABI_VERSION,
    .struct_size = sizeof(sb_host_api),
    .host_version = SB_VERSION_STRING,
    .log = host_log,
    .vlog = host_vlog,
    .event_type = ev_type,
    .event_id = ev_id,
    .event_attempt = ev_attempt,
    .event_header = ev_header,
    .event_body = ev_body,
    .event_json = ev_json,
    .event_get_str = ev_get_str,
    .event_get_int = ev_get_int,
    .event_get_double = ev_get_double,
    .event_get_bool = ev_get_bool,
    .event_get_time = ev_get_time,
    .event_traceparent = ev_traceparent,
    .ctx_handler = sb__ctx_handler,
    .ctx_retry_after = sb__ctx_retry_after,
    .ctx_reason = sb__ctx_reason,
    .ctx_publish = sb__ctx_publish,
    .ctx_pending = sb__ctx_pending,
    .pending_complete = sb__pending_complete,
    .loop_base = loop_base,
};

/* Built-in modules call through this; shared objects define their own (hidden) copy. */
const sb_host_api *sb_module_host = &host_api;

const sb_host_api *sb__host_api(void)
{
    return &host_api;
}
