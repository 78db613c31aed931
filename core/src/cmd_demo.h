/* cmd_demo.h: `switchboard demo` (cmd_demo.c). argv[0] is the first argument after
 * "demo". Returns the exit status. */
#ifndef SB_CMD_DEMO_H
#define SB_CMD_DEMO_H

int sb__cmd_demo(int argc, char **argv);

#endif
