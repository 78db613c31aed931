/* secret_file.c: a secret from a file; see secret_file.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "errf.h"
#include "secret_file.h"

char *sb__secret_file_read(const char *what, const char *path, char *errstr, size_t n, int *rc)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        *rc = sb__errf(errstr, n, SB_ECONFIG, "%s: cannot read password_file %s: %s", what, path,
                       strerror(errno));
        return NULL;
    }
    char buf[1024];
    char *line = fgets(buf, sizeof buf, f);
    fclose(f);
    if (!line) {
        *rc = sb__errf(errstr, n, SB_ECONFIG, "%s: password_file %s is empty", what, path);
        return NULL;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    char *p = sb_strdup(buf);
    memset(buf, 0, sizeof buf);
    if (!p)
        *rc = SB_ENOMEM;
    return p;
}
