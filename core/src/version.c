/* version.c: the library's run-time version. Exists so that a program can tell the
 * library it loaded from the headers it was compiled with. */
#include "switchboard/version.h"

unsigned sb_version(void)
{
    return SB_VERSION_NUM;
}

const char *sb_version_string(void)
{
    return SB_VERSION_STRING;
}
