/* Allocation, fatal errors, clocks, string and time helpers; see util.h. */
#include "core/util.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

noreturn void kn_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("konnect: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(70);
}

void *kn_malloc(size_t size)
{
    void *p = malloc(size == 0 ? 1 : size);
    if (p == NULL)
        kn_fatal("out of memory allocating %zu bytes", size);
    return p;
}

void *kn_calloc(size_t count, size_t size)
{
    void *p = calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);
    if (p == NULL)
        kn_fatal("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *kn_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size == 0 ? 1 : size);
    if (p == NULL)
        kn_fatal("out of memory reallocating %zu bytes", size);
    return p;
}

char *kn_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = kn_malloc(n);
    memcpy(p, s, n);
    return p;
}

int64_t kn_unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

uint64_t kn_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t kn_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

size_t kn_strlcpy(char *dst, const char *src, size_t dstsize)
{
    size_t n = strlen(src);
    if (dstsize != 0) {
        size_t c = n < dstsize - 1 ? n : dstsize - 1;
        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}

int kn_parse_int(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int kn_parse_duration(const char *s, int64_t *out)
{
    char num[32];
    size_t len = s != NULL ? strlen(s) : 0;
    long long v, unit = 1;

    if (len == 0 || len >= sizeof(num))
        return -1;
    memcpy(num, s, len + 1);
    switch (num[len - 1]) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    default:
        /* A number without its unit (is "90" seconds or minutes?) is refused; only 0 needs none. */
        if (strcmp(num, "0") != 0)
            return -1;
        len++;
        break;
    }
    num[len - 1] = '\0';
    if (kn_parse_int(num, 0, 100LL * 365 * 86400, &v) != 0 || v * unit > 100LL * 365 * 86400)
        return -1;
    *out = (int64_t)(v * unit);
    return 0;
}

char *kn_format_time(int64_t t, char *buf, size_t bufsize)
{
    struct tm tm;
    time_t tt = (time_t)t;

    if (t == 0 || gmtime_r(&tt, &tm) == NULL) {
        kn_strlcpy(buf, "-", bufsize);
        return buf;
    }
    strftime(buf, bufsize, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

size_t kn_decimal(char *out, int64_t v)
{
    char tmp[KN_DECIMAL_MAX];
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0, len = 0;

    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        out[len++] = '-';
    while (n > 0)
        out[len++] = tmp[--n];
    return len;
}

/* Days since the epoch of a civil date, and back: Howard Hinnant's algorithms, exact for the
 * proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int64_t kn_month_of(int64_t unix_s)
{
    int64_t z = (unix_s >= 0 ? unix_s : unix_s - 86399) / 86400 + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = (int64_t)yoe + era * 400 + (m <= 2);
    return y * 12 + (int64_t)m - 1;
}

int64_t kn_month_start(int64_t month)
{
    int64_t y = month >= 0 ? month / 12 : (month - 11) / 12;
    return days_from_civil(y, (unsigned)(month - y * 12) + 1, 1) * 86400;
}

char *kn_month_format(int64_t month, char *buf, size_t bufsize)
{
    int64_t y = month >= 0 ? month / 12 : (month - 11) / 12;
    snprintf(buf, bufsize, "%04lld-%02d", (long long)y, (int)(month - y * 12) + 1);
    return buf;
}

int kn_month_parse(const char *s, int64_t *month)
{
    long long y, m;
    char ys[5], ms[3];

    if (strlen(s) != 7 || s[4] != '-')
        return -1;
    memcpy(ys, s, 4);
    ys[4] = '\0';
    memcpy(ms, s + 5, 2);
    ms[2] = '\0';
    if (ys[0] == '-' || ys[0] == '+' || ms[0] == '-' || ms[0] == '+' ||
        kn_parse_int(ys, 1970, 9999, &y) != 0 || kn_parse_int(ms, 1, 12, &m) != 0)
        return -1;
    *month = y * 12 + m - 1;
    return 0;
}

/* Removes "." and ".." segments and doubled slashes from an absolute path, in place. */
static void normalize(char *p)
{
    char *out = p, *seg = p;

    while (*seg != '\0') {
        while (*seg == '/')
            seg++;
        char *end = strchr(seg, '/');
        size_t len = end != NULL ? (size_t)(end - seg) : strlen(seg);
        if (len == 0)
            break;
        if (len == 1 && seg[0] == '.') {
            /* nothing */
        } else if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            while (out > p && *--out != '/')
                ;
        } else {
            *out++ = '/';
            memmove(out, seg, len);
            out += len;
        }
        seg += len;
    }
    if (out == p)
        *out++ = '/';
    *out = '\0';
}

char *kn_abs_path(const char *path, char *out, size_t size)
{
    char dir[PATH_MAX], real[PATH_MAX], joined[2 * PATH_MAX + 2];
    const char *slash = strrchr(path, '/');

    /* The directory part resolved when it exists (symbolic links too); otherwise the path is
     * taken from the working directory and tidied up as written. */
    if (slash != NULL) {
        size_t n = (size_t)(slash - path);
        snprintf(dir, sizeof(dir), "%.*s", (int)(n > 0 ? n : 1), path);
        if (realpath(dir, real) != NULL) {
            snprintf(out, size, "%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/", slash + 1);
            return out;
        }
    }
    if (path[0] == '/' || getcwd(real, sizeof(real)) == NULL)
        snprintf(joined, sizeof(joined), "%s", path);
    else
        snprintf(joined, sizeof(joined), "%s/%s", real, path);
    normalize(joined);
    snprintf(out, size, "%s", joined);
    return out;
}
