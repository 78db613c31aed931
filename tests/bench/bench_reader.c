/* Handler module for bench_pipeline: reads 3 top-level fields of each event, as a typical
 * handler does, and succeeds. */
#include <switchboard/handler.h>

static volatile long long sink;

static sb_outcome_t on_event(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    const char *job = sb_event_get_str(ev, "JobId", "");
    const char *src = sb_event_get_str(ev, "SourceSystem", "");
    int64_t n = sb_event_get_int(ev, "RecordsProcessed", 0);
    sink += job[0] + src[0] + n;
    return SB_OK;
}

static const sb_handler_def_t handlers[] = {
    {.name = "reader", .pattern = "#", .fn = on_event},
    {0},
};

static const sb_module_t reader = {
    SB_MODULE_HEADER,
    .name = "bench_reader",
    .version = "1",
    .handlers = handlers,
};

SB_MODULE_DEFINE(reader)
