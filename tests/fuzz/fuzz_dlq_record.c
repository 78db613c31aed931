/* Fuzz target: DLQ JSON lines. Any input must give a record or a clean error. A record
 * that parses must encode, and its encoding must be a fixed point: decoding it and encoding
 * again gives the same bytes (the canonical form round-trips byte for byte). The accessors
 * and replay preparation must not crash on whatever was parsed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchboard/alloc.h"
#include "switchboard/error.h"
#include "dlq_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    sb__dlq_record_t *r = NULL, *back = NULL, *rep = NULL;
    char err[256];
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    if (sb__dlq_record_from_json((const char *)data, size, &r, err, sizeof err) != SB_EOK)
        return 0;
    if (sb__dlq_record_to_json(r, &a, &alen) != SB_EOK)
        abort();
    if (memchr(a, '\n', alen))
        abort();
    if (sb__dlq_record_from_json(a, alen, &back, err, sizeof err) != SB_EOK)
        abort();
    if (sb__dlq_record_to_json(back, &b, &blen) != SB_EOK)
        abort();
    if (alen != blen || memcmp(a, b, alen) != 0)
        abort();
    /* Accessors and replay preparation. */
    size_t len;
    char idbuf[64];
    uint64_t u;
    int64_t t;
    (void)sb__dlq_record_reason(r);
    (void)sb__dlq_record_event_type(r, &len);
    (void)sb__dlq_record_event_id(r, &len, idbuf, sizeof idbuf);
    (void)sb__dlq_record_attempts(r, &u);
    (void)sb__dlq_record_failed_at_us(r, &t);
    if (sb__dlq_record_prepare_replay(r, 1700000000000000, &rep) != SB_EOK)
        abort();
    if (sb__dlq_record_replay_count(rep) == 0)
        abort();
    sb__dlq_record_destroy(rep);
    sb_free(a);
    sb_free(b);
    sb__dlq_record_destroy(back);
    sb__dlq_record_destroy(r);
    return 0;
}
