/* A module claiming a future handler ABI: the loader must refuse it. */
#include <switchboard/handler.h>

static sb_outcome_t on_event(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    return SB_OK;
}

static const sb_handler_def_t handlers[] = {
    {.name = "h", .pattern = "#", .fn = on_event},
    {0},
};

static const sb_module_t badabi = {
    .abi_version = SB_HANDLER_ABI_VERSION + 1,
    .struct_size = sizeof(sb_module_t),
    .name = "badabi",
    .handlers = handlers,
};

SB_MODULE_DEFINE(badabi)
