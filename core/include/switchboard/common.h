/* switchboard/common.h: visibility and linkage macros shared by every public header.
 * Nothing here allocates or has state. */
#ifndef SWITCHBOARD_COMMON_H
#define SWITCHBOARD_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define SB_BEGIN_DECLS extern "C" {
#define SB_END_DECLS   }
#else
#define SB_BEGIN_DECLS
#define SB_END_DECLS
#endif

/* Symbols of libswitchboard are hidden unless marked SB_API. */
#if defined(__GNUC__) || defined(__clang__)
#define SB_API             __attribute__((visibility("default")))
#define SB_PRINTF(fmt, va) __attribute__((format(printf, fmt, va)))
#define SB_WARN_UNUSED     __attribute__((warn_unused_result))
#else
#define SB_API
#define SB_PRINTF(fmt, va)
#define SB_WARN_UNUSED
#endif

#endif
