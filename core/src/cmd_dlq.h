/* cmd_dlq.h: `switchboard dlq` (see cmd_dlq.c). */
#ifndef SB_CMD_DLQ_H
#define SB_CMD_DLQ_H

/* argv[0] is the first argument after "dlq". Returns a sysexits status. */
int sb__cmd_dlq(int argc, char **argv);

#endif
