/* error.c: names and descriptions of sb_err_t codes, generated from the same X-macro list
 * as the enum itself, so the three can never disagree. */
#include "switchboard/error.h"

const char *sb_strerror(int err)
{
    switch (err) {
#define SB__ERR_TEXT(name, value, text)                                                    \
    case (value):                                                                          \
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
#define SB__ERR_NAME(name, value, text)                                                    \
    case (value):                                                                          \
        return "SB_E" #name;
        SB_ERROR_LIST(SB__ERR_NAME)
#undef SB__ERR_NAME
    default:
        return "SB_EUNKNOWN";
    }
}
