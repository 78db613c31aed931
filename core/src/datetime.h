/* datetime.h: RFC 3339 / ISO-8601 date-times as integration events carry them.
 *
 * Accepts "YYYY-MM-DDThh:mm:ss[.f{1,9}](Z|±hh:mm)" with a real calendar check (leap years,
 * month lengths), 't'/'z'/' ' variants as RFC 3339 permits, and, because .NET writes
 * DateTime values of kind Unspecified without any offset ("2026-12-01T10:00:00.1234567"),
 * an absent offset when the caller allows it (then read as UTC). Resolution: microseconds;
 * .NET's 7th fractional digit (100 ns) is truncated. Leap second 60 is accepted and read as
 * 59.999999 (as most runtimes do). */
#ifndef SB_DATETIME_H
#define SB_DATETIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses s[0..len). Returns 0 and microseconds since the Unix epoch, or -1. *had_offset
 * (may be NULL) tells whether a Z or numeric offset was present. */
int sb__datetime_parse(const char *s, size_t len, bool allow_no_offset, int64_t *unix_us,
                       bool *had_offset);

/* "2026-12-03T16:00:00.123456Z" (always UTC, microseconds). buf must hold 32 bytes. */
void sb__datetime_format(int64_t unix_us, char buf[32]);

/* Current wall-clock time in microseconds since the epoch. */
int64_t sb__datetime_now_us(void);

#endif
