/* switchboard/handler.h: the only header a handler module includes.
 *
 * A handler module is a shared object that exports one symbol, SB_MODULE_INIT_SYMBOL
 * ("sb_module_init"). The daemon dlopen()s it, calls that entry point with a table of host
 * functions (sb_host_api), and receives a descriptor (sb_module_t) naming the module and its
 * handlers. Both structures start with an ABI version and their own size and only ever grow
 * at the end, so a module built against an older header keeps loading; a module whose
 * major ABI differs is refused with a one-line reason. The same descriptor is used for
 * built-in modules linked statically. This is the manner of Redis modules' OnLoad.
 *
 * This header deliberately has no dependency on libswitchboard's other headers, so a module
 * needs no link-time dependency on the library: it only calls through `host`. */
#ifndef SWITCHBOARD_HANDLER_H
#define SWITCHBOARD_HANDLER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped only when this header changes incompatibly. */
#define SB_HANDLER_ABI_VERSION 1u

#define SB_MODULE_INIT_SYMBOL "sb_module_init"

#if defined(__GNUC__) || defined(__clang__)
#define SB_MODULE_EXPORT __attribute__((visibility("default")))
#else
#define SB_MODULE_EXPORT
#endif

/* What a handler tells the runtime about one event. Not an error code. */
typedef enum sb_outcome {
    SB_OK = 0,      /* handled: the message may be acked */
    SB_RETRY = 1,   /* transient failure: try again later (policy decides when) */
    SB_REJECT = 2,  /* permanent failure: dead-letter now with the given reason */
    SB_PENDING = 3, /* asynchronous: the handler completes it later from the loop */
} sb_outcome_t;

typedef enum sb_log_level {
    SB_LOG_DEBUG = 0,
    SB_LOG_INFO = 1,
    SB_LOG_WARN = 2,
    SB_LOG_ERROR = 3,
} sb_log_level_t;

typedef struct sb_event sb_event_t;     /* opaque; borrowed for the handler call */
typedef struct sb_context sb_context_t; /* opaque; borrowed for the handler call */

/* A handler. `ud` is the module's user data. Runs on the loop thread unless the handler is
 * declared SB_HANDLER_BLOCKING, in which case it runs on a worker thread. */
typedef sb_outcome_t (*sb_handler_fn)(sb_context_t *ctx, const sb_event_t *ev, void *ud);

/* Flags of a handler definition. */
#define SB_HANDLER_BLOCKING 0x1u /* may block: run on the bounded worker pool */

typedef struct sb_handler_def {
    const char *name;    /* unique within the module, e.g. "notify" */
    const char *pattern; /* default binding, AMQP topic syntax, e.g. "DataSync.*" */
    sb_handler_fn fn;
    unsigned flags;
} sb_handler_def_t;

/* Functions the host offers a module. Lives as long as the module is loaded. */
typedef struct sb_host_api {
    uint32_t abi_version; /* SB_HANDLER_ABI_VERSION of the host */
    uint32_t struct_size; /* sizeof(sb_host_api) in the host */
    const char *host_version;
    /* Log a line attributed to the module. Any thread. */
    void (*log)(const char *module, sb_log_level_t level, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
        __attribute__((format(printf, 3, 4)))
#endif
        ;
    /* Later ABI minor versions append fields here. */
} sb_host_api;

/* A module's description of itself. Must outlive the module (static storage). */
typedef struct sb_module {
    uint32_t abi_version; /* SB_HANDLER_ABI_VERSION the module was built against */
    uint32_t struct_size; /* sizeof(sb_module_t) in the module */
    const char *name;     /* e.g. "notifier" */
    const char *version;  /* the module's own version, e.g. "1.0.0" */
    const sb_handler_def_t *handlers; /* terminated by an entry with name == NULL */
    /* Called once after loading, before any handler runs. Return 0 or a negative value
     * with a reason in errstr; a failure stops start-up. May be NULL. */
    int (*init)(const sb_host_api *host, void **ud, char *errstr, size_t errstr_size);
    /* Called once at shutdown after the last handler call. May be NULL. */
    void (*shutdown)(void *ud);
    void *reserved[8]; /* zero; room to grow without breaking the ABI */
} sb_module_t;

/* Signature of the exported entry point. Returns the descriptor, or NULL with a reason. */
typedef const sb_module_t *(*sb_module_init_fn)(const sb_host_api *host, char *errstr,
                                                size_t errstr_size);

/* Define the module's entry point around a static descriptor:
 *
 *     static const sb_module_t my_module = { SB_MODULE_HEADER, .name = "x", ... };
 *     SB_MODULE_DEFINE(my_module)
 */
#define SB_MODULE_HEADER .abi_version = SB_HANDLER_ABI_VERSION, .struct_size = sizeof(sb_module_t)

#define SB_MODULE_DEFINE(descriptor)                                                       \
    SB_MODULE_EXPORT const sb_module_t *sb_module_init(const sb_host_api *host,            \
                                                       char *errstr, size_t errstr_size);  \
    const sb_module_t *sb_module_init(const sb_host_api *host, char *errstr,               \
                                      size_t errstr_size)                                  \
    {                                                                                      \
        (void)errstr;                                                                      \
        (void)errstr_size;                                                                 \
        (void)host;                                                                        \
        return &(descriptor);                                                              \
    }

#ifdef __cplusplus
}
#endif

#endif
