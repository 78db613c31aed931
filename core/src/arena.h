/* arena.h: message-scoped memory (in the manner of nginx pools).
 *
 * Each in-flight message owns an arena; everything decoded for it (NUL-terminated copies
 * of the id, type, decoded strings handed to handlers) comes from there and is released in
 * one go when the message settles. The first block lives inside the arena itself, so a
 * typical event costs no malloc at all; larger needs chain heap blocks, freed at reset. */
#ifndef SB_ARENA_H
#define SB_ARENA_H

#include <stddef.h>

#define SB__ARENA_INLINE 1024

typedef struct sb__arena_block sb__arena_block_t;

typedef struct sb__arena {
    size_t used;               /* bytes used in inline[] */
    sb__arena_block_t *blocks; /* heap blocks, newest first */
    size_t block_used;         /* bytes used in blocks (the newest) */
    size_t block_size;         /* capacity of blocks (the newest) */
    _Alignas(16) char inline_buf[SB__ARENA_INLINE];
} sb__arena_t;

void sb__arena_init(sb__arena_t *a);
/* Releases heap blocks and makes all memory reusable. */
void sb__arena_reset(sb__arena_t *a);
/* 16-byte aligned memory valid until the next reset; NULL when out of memory. */
void *sb__arena_alloc(sb__arena_t *a, size_t size);
/* NUL-terminated copy of s[0..n). */
char *sb__arena_strndup(sb__arena_t *a, const char *s, size_t n);

#endif
