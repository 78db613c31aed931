/* cmd_new_handler.h: `switchboard new-handler NAME [--dir DIR]`, and the templates it
 * writes (the core/src/scaffold/ files, embedded at build time by scaffold/scaffold.cmake). */
#ifndef SB_CMD_NEW_HANDLER_H
#define SB_CMD_NEW_HANDLER_H

/* One file of the skeleton: the name it gets in the new folder and its text, both with
 * "@NAME@" (and "@SB_VERSION@") still to be replaced. */
typedef struct sb__scaffold_file {
    const char *name;
    const char *text;
} sb__scaffold_file_t;

/* Every template, terminated by an entry with name == NULL. */
extern const sb__scaffold_file_t sb__scaffold_files[];

/* Runs the command: argv[0] is NAME (main() calls sb__cmd_new_handler(argc - 2, argv + 2)).
 * Returns a sysexits status: 0, 64 usage or invalid name, 73 the folder exists and is not
 * empty or cannot be written. */
int sb__cmd_new_handler(int argc, char **argv);

#endif
