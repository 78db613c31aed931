/* units.h: parsing of human-written durations and sizes used throughout the config.
 *
 * Durations: one or more <integer><unit> groups, unit one of ms, s, m, h, d
 * ("250ms", "30s", "1h30m", "7d"); the bare "0" is accepted. Result in milliseconds.
 * Sizes: <integer>[unit], unit one of B, KiB, MiB, GiB, TiB (binary) or kB, KB, MB, GB, TB
 * (decimal); no unit means bytes. Leading/trailing blanks are allowed, nothing else.
 * Overflow is SB_ERANGE, anything malformed SB_EPARSE; range policy belongs to callers. */
#ifndef SB_UNITS_H
#define SB_UNITS_H

#include <stddef.h>
#include <stdint.h>

int sb__parse_duration_ms(const char *s, uint64_t *out_ms, char *errstr, size_t errstr_size);
int sb__parse_size(const char *s, uint64_t *out_bytes, char *errstr, size_t errstr_size);

/* Format helpers (for printing effective config): "1h30m", "64KiB". Always NUL-terminate. */
void sb__format_duration_ms(uint64_t ms, char *buf, size_t size);
void sb__format_size(uint64_t bytes, char *buf, size_t size);

#endif
