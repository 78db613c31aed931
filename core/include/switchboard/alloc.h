/* switchboard/alloc.h: the pluggable allocator.
 *
 * Every allocation the library makes goes through these hooks, and so do jansson's
 * (sb_set_allocator installs them there too), which is how the tests fail allocation N for
 * N = 1, 2, ... and check for clean errors and no leaks. Set the allocator once, before any
 * other switchboard call; it is process-wide state with this one explicit setter. */
#ifndef SWITCHBOARD_ALLOC_H
#define SWITCHBOARD_ALLOC_H

#include "switchboard/common.h"

SB_BEGIN_DECLS

typedef void *(*sb_malloc_fn)(size_t size);
typedef void *(*sb_realloc_fn)(void *ptr, size_t size);
typedef void (*sb_free_fn)(void *ptr);

/* Install allocation hooks. Passing all three NULL restores malloc/realloc/free.
 * Returns 0, or SB_EINVAL if only some are NULL. Not thread-safe: call before start-up. */
SB_API int sb_set_allocator(sb_malloc_fn m, sb_realloc_fn r, sb_free_fn f);

/* Allocate through the installed hooks. sb_malloc(0) returns a unique non-NULL pointer or
 * NULL; callers must not depend on either. Memory is released with sb_free(). */
SB_API void *sb_malloc(size_t size);
SB_API void *sb_calloc(size_t n, size_t size);
SB_API void *sb_realloc(void *ptr, size_t size);
SB_API char *sb_strdup(const char *s);
SB_API char *sb_strndup(const char *s, size_t n);

/* Free memory the library returned with the words "caller frees with sb_free()".
 * sb_free(NULL) is a no-op. */
SB_API void sb_free(void *ptr);

SB_END_DECLS

#endif
