/* secret_file.h: reading a secret (a password) from a file, as the `*_file` options of the
 * AMQP transport and the DLQ tool allow. */
#ifndef SB_SECRET_FILE_H
#define SB_SECRET_FILE_H

#include <stddef.h>

/* The first line of the file at `path`, without its line ending; caller frees with
 * sb_free(). NULL with *rc set (SB_ECONFIG naming `what` and the path, or SB_ENOMEM).
 * The stack copy is wiped before returning. */
char *sb__secret_file_read(const char *what, const char *path, char *errstr, size_t n, int *rc);

#endif
