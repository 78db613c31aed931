/* A shared object without the module entry point: the loader must refuse it. */
#include <switchboard/handler.h>

SB_MODULE_EXPORT int not_a_module(void);
int not_a_module(void)
{
    return 42;
}
