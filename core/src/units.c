/* units.c: durations and sizes as people write them in YAML.
 *
 * Integers only: "1.5s" is refused rather than rounded, because a silently rounded timeout
 * is worse than a clear error. Every multiplication and addition is overflow-checked. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "switchboard/error.h"
#include "errf.h"
#include "units.h"

static const char *skip_blanks(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Reads a run of decimal digits into *v. Returns the end, or NULL on overflow. */
static const char *read_uint(const char *p, uint64_t *v, int *ndigits)
{
    uint64_t acc = 0;
    int n = 0;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (acc > (UINT64_MAX - d) / 10)
            return NULL;
        acc = acc * 10 + d;
        p++;
        n++;
    }
    *v = acc;
    *ndigits = n;
    return p;
}

static int mul_add(uint64_t *acc, uint64_t v, uint64_t mult)
{
    if (mult && v > UINT64_MAX / mult)
        return -1;
    if (*acc > UINT64_MAX - v * mult)
        return -1;
    *acc += v * mult;
    return 0;
}

int sb__parse_duration_ms(const char *s, uint64_t *out_ms, char *errstr, size_t errstr_size)
{
    static const struct {
        const char *name;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    if (!s || !out_ms)
        return sb__errf(errstr, errstr_size, SB_EINVAL, "no duration given");
    const char *p = skip_blanks(s);
    uint64_t total = 0;
    int groups = 0;
    while (*p && *p != ' ' && *p != '\t') {
        uint64_t v;
        int nd;
        const char *q = read_uint(p, &v, &nd);
        if (!q)
            return sb__errf(errstr, errstr_size, SB_ERANGE, "duration \"%s\" is too large", s);
        if (nd == 0)
            return sb__errf(
                errstr, errstr_size, SB_EPARSE,
                "invalid duration \"%s\": expected an integer and a unit (ms, s, m, h, d), "
                "e.g. 250ms or 30s",
                s);
        if (*q == '.' || *q == ',')
            return sb__errf(
                errstr, errstr_size, SB_EPARSE,
                "invalid duration \"%s\": fractions are not supported, use a smaller unit "
                "(e.g. 1500ms instead of 1.5s)",
                s);
        size_t ulen = 0;
        while (isalpha((unsigned char)q[ulen]))
            ulen++;
        if (ulen == 0) {
            if (v == 0 && groups == 0 && *skip_blanks(q) == '\0') {
                *out_ms = 0;
                return SB_EOK;
            }
            return sb__errf(errstr, errstr_size, SB_EPARSE,
                            "invalid duration \"%s\": missing unit (ms, s, m, h or d)", s);
        }
        uint64_t mult = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strlen(units[i].name) == ulen && strncmp(q, units[i].name, ulen) == 0)
                mult = units[i].ms;
        if (!mult)
            return sb__errf(errstr, errstr_size, SB_EPARSE,
                            "invalid duration \"%s\": unknown unit (use ms, s, m, h or d)", s);
        if (mul_add(&total, v, mult) != 0)
            return sb__errf(errstr, errstr_size, SB_ERANGE, "duration \"%s\" is too large", s);
        groups++;
        p = q + ulen;
    }
    if (*skip_blanks(p) != '\0' || groups == 0)
        return sb__errf(errstr, errstr_size, SB_EPARSE,
                        "invalid duration \"%s\": expected e.g. 250ms, 30s, 5m, 1h30m or 7d", s);
    *out_ms = total;
    return SB_EOK;
}

int sb__parse_size(const char *s, uint64_t *out_bytes, char *errstr, size_t errstr_size)
{
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {{"B", 1},
                 {"KiB", 1ull << 10},
                 {"MiB", 1ull << 20},
                 {"GiB", 1ull << 30},
                 {"TiB", 1ull << 40},
                 {"kB", 1000ull},
                 {"KB", 1000ull},
                 {"MB", 1000000ull},
                 {"GB", 1000000000ull},
                 {"TB", 1000000000000ull}};
    if (!s || !out_bytes)
        return sb__errf(errstr, errstr_size, SB_EINVAL, "no size given");
    const char *p = skip_blanks(s);
    uint64_t v;
    int nd;
    const char *q = read_uint(p, &v, &nd);
    if (!q)
        return sb__errf(errstr, errstr_size, SB_ERANGE, "size \"%s\" is too large", s);
    if (nd == 0)
        return sb__errf(errstr, errstr_size, SB_EPARSE,
                        "invalid size \"%s\": expected an integer and an optional unit "
                        "(B, KiB, MiB, GiB, kB, MB, GB), e.g. 64KiB",
                        s);
    if (*q == '.' || *q == ',')
        return sb__errf(errstr, errstr_size, SB_EPARSE,
                        "invalid size \"%s\": fractions are not supported, use a smaller unit "
                        "(e.g. 1536KiB instead of 1.5MiB)",
                        s);
    q = skip_blanks(q);
    size_t ulen = 0;
    while (isalpha((unsigned char)q[ulen]))
        ulen++;
    uint64_t mult = ulen ? 0 : 1;
    for (size_t i = 0; ulen && i < sizeof units / sizeof units[0]; i++)
        if (strlen(units[i].name) == ulen && strncmp(q, units[i].name, ulen) == 0)
            mult = units[i].mult;
    if (!mult)
        return sb__errf(errstr, errstr_size, SB_EPARSE,
                        "invalid size \"%s\": unknown unit (use B, KiB, MiB, GiB, kB, MB or GB)",
                        s);
    if (*skip_blanks(q + ulen) != '\0')
        return sb__errf(errstr, errstr_size, SB_EPARSE, "invalid size \"%s\": trailing characters",
                        s);
    if (v > UINT64_MAX / mult)
        return sb__errf(errstr, errstr_size, SB_ERANGE, "size \"%s\" is too large", s);
    *out_bytes = v * mult;
    return SB_EOK;
}

void sb__format_duration_ms(uint64_t ms, char *buf, size_t size)
{
    static const struct {
        const char *name;
        uint64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    if (!size)
        return;
    if (ms == 0) {
        snprintf(buf, size, "0s");
        return;
    }
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof units / sizeof units[0] && off < size; i++) {
        if (ms >= units[i].ms) {
            int n = snprintf(buf + off, size - off, "%llu%s",
                             (unsigned long long)(ms / units[i].ms), units[i].name);
            if (n < 0)
                return;
            off += (size_t)n;
            ms %= units[i].ms;
        }
    }
}

void sb__format_size(uint64_t bytes, char *buf, size_t size)
{
    static const char *names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    unsigned i = 0;
    while (i < 4 && bytes && bytes % 1024 == 0) {
        bytes /= 1024;
        i++;
    }
    snprintf(buf, size, "%llu%s", (unsigned long long)bytes, names[i]);
}
