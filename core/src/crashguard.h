/* crashguard.h: poison messages that crash the process.
 *
 * A handler that crashes (a segfault, an abort) takes the whole consumer with it; the broker
 * hands the message out again and the restarted consumer would crash on it again, forever,
 * with everything behind it stuck. The guard keeps, in a small file mapped MAP_SHARED (so a
 * write survives the crash without a system call per handler call), the event id each
 * handler-calling thread is executing. When the next process opens the file, the ids still
 * there were executing when the previous one died: each gets one strike in the file's
 * strike table. An event with max_crashes strikes is dead-lettered (reason "crashed")
 * without running its handlers; an event settled for good (acked or dead-lettered) loses its
 * strikes. A SIGKILL that lands while a handler runs gives that event one strike, which its
 * next settlement clears: only an event that crashes every time it runs reaches the limit.
 *
 * Thread slots: 0 is the loop thread; worker threads take slots 1..SB__CRASHGUARD_SLOTS-1
 * on their first call (threads beyond that are not watched). Event ids longer than
 * SB__CRASHGUARD_ID_MAX bytes are compared by that prefix. One process per file. */
#ifndef SB_CRASHGUARD_H
#define SB_CRASHGUARD_H

#include <stdbool.h>
#include <stddef.h>

#define SB__CRASHGUARD_SLOTS  64
#define SB__CRASHGUARD_ID_MAX 128

typedef struct sb__crashguard sb__crashguard_t;

/* Opens (creating) path, takes the strikes of the previous process (logged at warn) and
 * clears its slots. SB_EOK, or SB_EIO / SB_ENOMEM with the reason in errstr. */
int sb__crashguard_open(const char *path, unsigned max_crashes, sb__crashguard_t **out,
                        char *errstr, size_t errstr_size);
void sb__crashguard_close(sb__crashguard_t *g);

/* The calling thread runs a handler on event id / has returned. on_loop: the loop thread. */
void sb__crashguard_enter(sb__crashguard_t *g, bool on_loop, const char *id, size_t len);
void sb__crashguard_leave(sb__crashguard_t *g, bool on_loop);

/* Strikes of id (0 for most: a table with no strikes answers without looking). */
unsigned sb__crashguard_strikes(const sb__crashguard_t *g, const char *id, size_t len);
unsigned sb__crashguard_max(const sb__crashguard_t *g);

/* id is settled for good: its strikes, if any, are dropped. */
void sb__crashguard_clear(sb__crashguard_t *g, const char *id, size_t len);

#endif
