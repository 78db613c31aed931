/* datetime.c: strict RFC 3339 parsing and formatting without libc time zone state.
 * Calendar arithmetic is done by hand (days from civil date) so parsing never touches
 * TZ, locale or mktime, which are slow and not thread-safe everywhere. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "datetime.h"

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int sb__datetime_parse(const char *s, size_t len, bool allow_no_offset, int64_t *unix_us,
                       bool *had_offset)
{
    int Y, M, D, h, mi, sec;
    if (len < 19)
        return -1;
    if (digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
        digits(s + 8, 2, &D))
        return -1;
    if (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
        return -1;
    if (digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
        digits(s + 17, 2, &sec))
        return -1;
    if (M < 1 || M > 12 || D < 1 || D > month_days(Y, M) || h > 23 || mi > 59 || sec > 60)
        return -1;
    size_t i = 19;
    int64_t frac_us = 0;
    if (i < len && s[i] == '.') {
        i++;
        int nd = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (nd < 6)
                frac_us = frac_us * 10 + (s[i] - '0');
            nd++;
            i++;
        }
        if (nd == 0 || nd > 9)
            return -1;
        for (int k = nd; k < 6; k++)
            frac_us *= 10;
    }
    int offset_min = 0;
    bool off = true;
    if (i == len) {
        if (!allow_no_offset)
            return -1;
        off = false;
    } else if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == len) {
        /* UTC */
    } else if ((s[i] == '+' || s[i] == '-') && i + 6 == len) {
        int oh, om;
        if (digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || digits(s + i + 4, 2, &om) || oh > 23 ||
            om > 59)
            return -1;
        offset_min = (oh * 60 + om) * (s[i] == '-' ? -1 : 1);
    } else {
        return -1;
    }
    if (sec == 60) {
        sec = 59;
        frac_us = 999999;
    }
    int64_t secs =
        days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + sec - (int64_t)offset_min * 60;
    if (unix_us)
        *unix_us = secs * 1000000 + frac_us;
    if (had_offset)
        *had_offset = off;
    return 0;
}

void sb__datetime_format(int64_t unix_us, char buf[32])
{
    int64_t secs = unix_us / 1000000, us = unix_us % 1000000;
    if (us < 0) {
        us += 1000000;
        secs--;
    }
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    /* civil from days */
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp + (mp < 10 ? 3 : -9);
    y += m <= 2;
    char tmp[96];
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", (int)y, (int)m, (int)d,
             (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), (int)us);
    size_t n = strlen(tmp);
    if (n > 31)
        n = 31; /* only years beyond 9999 get here */
    memcpy(buf, tmp, n);
    buf[n] = '\0';
}

int64_t sb__datetime_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
