/* An out-of-tree handler module: counts DataSync events. */
#include <switchboard/handler.h>

static sb_outcome_t on_datasync(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    return SB_OK;
}

static const sb_handler_def_t handlers[] = {
    {.name = "datasync", .pattern = "DataSyncCompletedEvent", .fn = on_datasync},
    {0},
};

static const sb_module_t example = {
    SB_MODULE_HEADER,
    .name = "example",
    .version = "0.0.1",
    .handlers = handlers,
};

SB_MODULE_DEFINE(example)
