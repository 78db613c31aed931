/* cmd_run.h: `switchboard run` (cmd_run.c). Returns the exit status. */
#ifndef SB_CMD_RUN_H
#define SB_CMD_RUN_H

int sb__cmd_run(int argc, char **argv);

#endif
