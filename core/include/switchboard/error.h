/* switchboard/error.h: the one error enum of the library.
 *
 * 0 is success and every error is negative, everywhere. The list is an X-macro so that
 * the enum, sb_strerror() and sb_err_name() cannot drift apart. Handler outcomes
 * (OK / RETRY / REJECT / PENDING) are not errors and live in handler.h. */
#ifndef SWITCHBOARD_ERROR_H
#define SWITCHBOARD_ERROR_H

#include "switchboard/common.h"

/* X(NAME, value, description) */
#define SB_ERROR_LIST(X)                                                                           \
    X(OK, 0, "success")                                                                            \
    X(NOMEM, -1, "out of memory")                                                                  \
    X(INVAL, -2, "invalid argument")                                                               \
    X(RANGE, -3, "value out of range")                                                             \
    X(PARSE, -4, "malformed input")                                                                \
    X(IO, -5, "input/output error")                                                                \
    X(NOTFOUND, -6, "not found")                                                                   \
    X(EXISTS, -7, "already exists")                                                                \
    X(ABI, -8, "handler ABI mismatch")                                                             \
    X(CONFIG, -9, "invalid configuration")                                                         \
    X(TIMEOUT, -10, "timed out")                                                                   \
    X(CLOSED, -11, "closed or shutting down")                                                      \
    X(UNAVAILABLE, -12, "service unavailable")                                                     \
    X(TOOBIG, -13, "too large")                                                                    \
    X(DECODE, -14, "message could not be decoded")                                                 \
    X(SCHEMA, -15, "message failed schema validation")                                             \
    X(UNROUTABLE, -16, "no handler matches the event")                                             \
    X(BUSY, -17, "resource busy")                                                                  \
    X(STATE, -18, "operation not valid in the current state")

typedef enum sb_err {
#define SB__ERR_ENUM(name, value, text) SB_E##name = (value),
    SB_ERROR_LIST(SB__ERR_ENUM)
#undef SB__ERR_ENUM
        SB__ERR_LAST = -19 /* one past the most negative code; not an error itself */
} sb_err_t;

SB_BEGIN_DECLS

/* Human-readable description of an error code, e.g. "out of memory". Unknown codes give
 * "unknown error". Static string, never NULL. Any thread. */
SB_API const char *sb_strerror(int err);

/* Symbolic name of an error code, e.g. "SB_ENOMEM"; "SB_EUNKNOWN" for unknown codes. */
SB_API const char *sb_err_name(int err);

SB_END_DECLS

#endif
