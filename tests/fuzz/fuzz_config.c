/* Fuzz target: the configuration loader. Any bytes are a YAML document to load against the
 * property table; loading must end in success or a clean error, and a loaded configuration
 * must print (masked) without trouble. Never crash, never leak.
 *
 * *_file keys may name any path: the loader only reads regular files, without blocking, so
 * the fuzzer cannot hang it on /dev/stdin or a FIFO. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchboard/error.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    if (!sink)
        sink = fopen("/dev/null", "w");
    if (size > 65536)
        return 0;
    char err[512];
    sb__config_t *cfg = NULL;
    int rc = sb__config_load_buffer((const char *)data, size, "fuzz.yaml", &cfg, err, sizeof err);
    if (rc == SB_EOK) {
        if (!cfg)
            abort();
        if (sink)
            sb__config_dump(cfg, sink);
        /* Getters on table keys never fail. */
        if (!sb__config_str(cfg, "service.name") || !sb__config_json(cfg, "handlers"))
            abort();
        sb__config_destroy(cfg);
    } else if (cfg || (rc != SB_ECONFIG && rc != SB_ENOMEM) || !memchr(err, '\0', sizeof err)) {
        abort();
    }
    return 0;
}
