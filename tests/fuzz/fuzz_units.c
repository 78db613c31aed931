/* Fuzz target: duration and size parsers, and the formatter round trip. Any input must give
 * a clean result or a clean error; a parsed value must survive format -> parse unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchboard/error.h"
#include "units.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256)
        return 0;
    char s[257];
    memcpy(s, data, size);
    s[size] = '\0';
    char err[128], buf[128];
    uint64_t v, w;
    if (sb__parse_duration_ms(s, &v, err, sizeof err) == SB_EOK) {
        sb__format_duration_ms(v, buf, sizeof buf);
        if (sb__parse_duration_ms(buf, &w, err, sizeof err) != SB_EOK || w != v)
            abort();
    }
    if (sb__parse_size(s, &v, err, sizeof err) == SB_EOK) {
        sb__format_size(v, buf, sizeof buf);
        if (sb__parse_size(buf, &w, err, sizeof err) != SB_EOK || w != v)
            abort();
    }
    return 0;
}
