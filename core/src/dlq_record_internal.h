/* dlq_record_internal.h: what dlq_record.c (the record model) and dlq_jsonl.c (its JSON
 * Lines codec) share, and nothing more.
 *
 * Design: the codec reads and fills the record's fields directly, so decoding moves the
 * bytes it parsed into the record without a second copy and encoding needs no getter per
 * field; the record's layout and the value-type helpers live here for that. It is not an
 * interface: everyone else includes dlq_record.h and never sees the record's layout. */
#ifndef SB_DLQ_RECORD_INTERNAL_H
#define SB_DLQ_RECORD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dlq_record.h"

struct sb__dlq_record {
    sb__dlq_transport_t transport;
    sb__dlq_bytes_t str[SB__DLQ_STR_COUNT];
    uint64_t num[SB__DLQ_NUM_COUNT];
    bool has_num[SB__DLQ_NUM_COUNT];
    sb__dlq_list_t headers;
};

/* The largest value of each number field (the ranges dlq_record.h lists). */
extern const uint64_t sb__dlq_num_max[SB__DLQ_NUM_COUNT];

/* How a type letter's value is stored (which union member dlq_record.h names for it). */
typedef enum sb__dlq_kind {
    SB__DLQ_K_BAD = 0,
    SB__DLQ_K_BOOL,
    SB__DLQ_K_SIGNED,
    SB__DLQ_K_UNSIGNED,
    SB__DLQ_K_FLOAT,
    SB__DLQ_K_DOUBLE,
    SB__DLQ_K_DECIMAL,
    SB__DLQ_K_BYTES,
    SB__DLQ_K_LIST,
    SB__DLQ_K_VOID,
} sb__dlq_kind_t;

/* The kind of type letter t; SB__DLQ_K_BAD for an unknown letter. */
sb__dlq_kind_t sb__dlq_kind_of(char t);
/* The range of a signed integer type letter ("b", "s", "I"; anything else: int64). */
void sb__dlq_signed_range(char t, int64_t *lo, int64_t *hi);
/* The largest value of an unsigned integer type letter ("B", "u", "i"; anything else:
 * UINT64_MAX). */
uint64_t sb__dlq_unsigned_max(char t);

/* Replaces *b with a copy of p[0..len) (NUL-terminated after len); p == NULL makes it
 * absent. SB_EOK, or SB_ENOMEM with *b unchanged. */
int sb__dlq_bytes_set(sb__dlq_bytes_t *b, const char *p, size_t len);
/* Frees what v holds (its bytes or its nested list). */
void sb__dlq_value_free(sb__dlq_value_t *v);
/* Makes room for `want` fields in l, l->n unchanged. SB_EOK or SB_ENOMEM. */
int sb__dlq_list_reserve(sb__dlq_list_t *l, size_t want);

#endif
