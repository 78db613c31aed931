/* error.c: names and descriptions of sb_err_t codes, generated from the same X-macro list
 * as the enum itself, so the three can never disagree; and sb__errf(), the one helper that
 * writes an error text into a caller's buffer. Holds no state and never allocates. */
#include <stdarg.h>
#include <stdio.h>

#include "switchboard/error.h"
#include "errf.h"

const char *sb_strerror(int err)
{
    switch (err) {
#define SB__ERR_TEXT(name, value, text)                                                            \
    case (value):                                                                                  \
        return text;
        SB_ERROR_LIST(SB__ERR_TEXT)
#undef SB__ERR_TEXT
    default:
        return "unknown error";
    }
}

const char *sb_err_name(int err)
{
    switch (err) {
#define SB__ERR_NAME(name, value, text)                                                            \
    case (value):                                                                                  \
        return "SB_E" #name;
        SB_ERROR_LIST(SB__ERR_NAME)
#undef SB__ERR_NAME
    default:
        return "SB_EUNKNOWN";
    }
}

int sb__errf(char *errstr, size_t errstr_size, int rc, const char *fmt, ...)
{
    if (errstr && errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return rc;
}
