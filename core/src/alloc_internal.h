/* alloc_internal.h: allocator facts for the library's own use (see alloc.c). */
#ifndef SB_ALLOC_INTERNAL_H
#define SB_ALLOC_INTERNAL_H

/* Allocations that failed so far in this process (through sb_malloc & co. and jansson).
 * Compare before and after a jansson parse: a change means the parse hit out-of-memory,
 * whatever jansson reported. */
unsigned long sb__alloc_failures(void);

/* Points jansson at the library's allocator (once per process; idempotent, any thread).
 * Everything that parses with jansson calls it first. */
void sb__alloc_json_hooks(void);

/* a followed by b in a new string (caller frees with sb_free()); NULL when out of memory. */
char *sb__strjoin(const char *a, const char *b);

#endif
