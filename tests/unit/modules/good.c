/* A well-formed module with two handlers, loaded by test_module. */
#include <switchboard/handler.h>

static sb_outcome_t on_event(sb_context_t *ctx, const sb_event_t *ev, void *ud)
{
    return SB_OK;
}

static const sb_handler_def_t handlers[] = {
    {.name = "first", .pattern = "DataSync.*", .fn = on_event},
    {.name = "second", .pattern = "#", .fn = on_event, .flags = SB_HANDLER_BLOCKING},
    {0},
};

static const sb_module_t good = {
    SB_MODULE_HEADER,
    .name = "good",
    .version = "1.2.3",
    .handlers = handlers,
};

SB_MODULE_DEFINE(good)
