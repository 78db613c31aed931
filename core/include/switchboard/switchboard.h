/* switchboard/switchboard.h: umbrella header for applications embedding the runtime.
 * Handler modules include only switchboard/handler.h. */
#ifndef SWITCHBOARD_H
#define SWITCHBOARD_H

#include "switchboard/common.h"
#include "switchboard/version.h"
#include "switchboard/error.h"
#include "switchboard/alloc.h"
#include "switchboard/handler.h"

#endif
