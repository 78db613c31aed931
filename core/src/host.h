/* host.h: the host API table handed to handler modules (see host.c). */
#ifndef SB_HOST_H
#define SB_HOST_H

#include "switchboard/handler.h"

struct event_base;

/* The table for this process; lives for the whole process. */
const sb_host_api *sb__host_api(void);

/* The loop modules get from sb_loop_base(). Set once at start-up. */
void sb__host_set_loop(struct event_base *base);

#endif
