#include <stdio.h>
#include <switchboard/switchboard.h>

int main(void)
{
    printf("%s %u\n", sb_version_string(), (unsigned)SB_HANDLER_ABI_VERSION);
    return sb_version() == SB_VERSION_NUM ? 0 : 1;
}
