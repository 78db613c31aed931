/* alloc.c: the process-wide allocator hooks.
 *
 * One explicit setter (sb_set_allocator) and no other global mutable state. jansson is
 * pointed at the same hooks so that allocation-failure sweeps reach its allocations too.
 * hiredis 0.14 (Debian 12) has no allocator hooks; its allocations stay on libc. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"

static sb_malloc_fn sb_malloc_hook = malloc;
static sb_realloc_fn sb_realloc_hook = realloc;
static sb_free_fn sb_free_hook = free;

int sb_set_allocator(sb_malloc_fn m, sb_realloc_fn r, sb_free_fn f)
{
    if (!m && !r && !f) {
        m = malloc;
        r = realloc;
        f = free;
    } else if (!m || !r || !f) {
        return SB_EINVAL;
    }
    sb_malloc_hook = m;
    sb_realloc_hook = r;
    sb_free_hook = f;
    json_set_alloc_funcs(m, f);
    return SB_EOK;
}

void *sb_malloc(size_t size)
{
    return sb_malloc_hook(size ? size : 1);
}

void *sb_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    size_t total = n * size;
    void *p = sb_malloc_hook(total > 0 ? total : 1);
    if (p)
        memset(p, 0, total);
    return p;
}

void *sb_realloc(void *ptr, size_t size)
{
    return sb_realloc_hook(ptr, size ? size : 1);
}

char *sb_strndup(const char *s, size_t n)
{
    char *d = sb_malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *sb_strdup(const char *s)
{
    return s ? sb_strndup(s, strlen(s)) : NULL;
}

void sb_free(void *ptr)
{
    if (ptr)
        sb_free_hook(ptr);
}
