/* alloc.c: the process-wide allocator hooks.
 *
 * One explicit setter (sb_set_allocator) and no other global mutable state. jansson is
 * pointed at the same hooks so that allocation-failure sweeps reach its allocations too.
 * hiredis 0.14 (Debian 12) has no allocator hooks; its allocations stay on libc.
 *
 * jansson 2.14 does not always report a failed allocation: growing its token buffer can
 * fail silently and drop a character, and some failures come back as syntax errors. So
 * every failure is counted (sb__alloc_failures()), and code that parses with jansson
 * compares the count before and after: any failure during a parse means SB_ENOMEM, whatever
 * jansson said. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "alloc_internal.h"

static sb_malloc_fn sb_malloc_hook = malloc;
static sb_realloc_fn sb_realloc_hook = realloc;
static sb_free_fn sb_free_hook = free;
static atomic_ulong alloc_failures;

unsigned long sb__alloc_failures(void)
{
    return atomic_load_explicit(&alloc_failures, memory_order_relaxed);
}

static void *counted(void *p)
{
    if (!p)
        atomic_fetch_add_explicit(&alloc_failures, 1, memory_order_relaxed);
    return p;
}

/* jansson's hooks: they follow the installed allocator and count failures like sb_malloc. */
static void *json_malloc_hook(size_t size)
{
    return counted(sb_malloc_hook(size ? size : 1));
}

static void json_free_hook(void *p)
{
    if (p)
        sb_free_hook(p);
}

static pthread_once_t json_once = PTHREAD_ONCE_INIT;

static void install_json_hooks(void)
{
    json_set_alloc_funcs(json_malloc_hook, json_free_hook);
}

void sb__alloc_json_hooks(void)
{
    pthread_once(&json_once, install_json_hooks);
}

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
    sb__alloc_json_hooks();
    return SB_EOK;
}

void *sb_malloc(size_t size)
{
    return counted(sb_malloc_hook(size ? size : 1));
}

void *sb_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    size_t total = n * size;
    /* libc's calloc leaves fresh pages of a large block untouched (they are zero already),
     * so a big array costs memory only where it is used (the dispatcher's slots). */
    if (sb_malloc_hook == malloc)
        return counted(calloc(1, total > 0 ? total : 1));
    void *p = counted(sb_malloc_hook(total > 0 ? total : 1));
    if (p)
        memset(p, 0, total);
    return p;
}

char *sb__strjoin(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = sb_malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

void *sb_realloc(void *ptr, size_t size)
{
    return counted(sb_realloc_hook(ptr, size ? size : 1));
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
