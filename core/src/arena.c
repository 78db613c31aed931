/* arena.c: bump allocation for message-scoped memory; see arena.h. No per-object free. */
#include <string.h>

#include "switchboard/alloc.h"
#include "arena.h"

struct sb__arena_block {
    sb__arena_block_t *next;
    size_t size;
    _Alignas(16) char data[];
};

void sb__arena_init(sb__arena_t *a)
{
    a->used = 0;
    a->blocks = NULL;
    a->block_used = 0;
    a->block_size = 0;
}

void sb__arena_reset(sb__arena_t *a)
{
    sb__arena_block_t *b = a->blocks;
    while (b) {
        sb__arena_block_t *next = b->next;
        sb_free(b);
        b = next;
    }
    sb__arena_init(a);
}

void *sb__arena_alloc(sb__arena_t *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (size == 0)
        size = 16;
    if (SB__ARENA_INLINE - a->used >= size) {
        void *p = a->inline_buf + a->used;
        a->used += size;
        return p;
    }
    if (a->blocks && a->block_size - a->block_used >= size) {
        void *p = a->blocks->data + a->block_used;
        a->block_used += size;
        return p;
    }
    size_t bs = size > 4096 ? size : 4096;
    sb__arena_block_t *b = sb_malloc(sizeof *b + bs);
    if (!b)
        return NULL;
    b->next = a->blocks;
    b->size = bs;
    a->blocks = b;
    a->block_size = bs;
    a->block_used = size;
    return b->data;
}

char *sb__arena_strndup(sb__arena_t *a, const char *s, size_t n)
{
    char *d = sb__arena_alloc(a, n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}
