/* Small helpers every module uses: allocation that never returns NULL, fatal errors and clocks. */
#ifndef KN_CORE_UTIL_H
#define KN_CORE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>

/* The structure of type `type` whose member `member` is at ptr. */
#define KN_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Prints "konnect: <message>" to stderr and exits with status 70 (internal software error). */
noreturn void kn_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation wrappers: running out of memory aborts with a message instead of returning NULL. */
void *kn_malloc(size_t size);
void *kn_calloc(size_t count, size_t size);
void *kn_realloc(void *ptr, size_t size);
char *kn_strdup(const char *s);

/* Wall-clock time in whole seconds since the Unix epoch. */
int64_t kn_unix_now(void);

/* Wall-clock time in milliseconds since the Unix epoch. */
uint64_t kn_unix_ms(void);

/* Monotonic time in nanoseconds; only differences are meaningful. */
uint64_t kn_mono_ns(void);

/* Copies at most dstsize-1 bytes of src into dst and always terminates it. Returns strlen(src), so
 * a result >= dstsize means the copy was truncated. */
size_t kn_strlcpy(char *dst, const char *src, size_t dstsize);

/* Parses a base-10 integer that must fill the whole string and lie in [min, max]. Returns 0 and
 * writes *out on success, -1 otherwise (out untouched). */
int kn_parse_int(const char *s, long long min, long long max, long long *out);

/* Parses a duration such as "90s", "15m", "24h" or "7d" into seconds ("0" needs no unit; any other
 * number without one is refused). Returns 0 and writes *out on success, -1 on a malformed or
 * out-of-range value. */
int kn_parse_duration(const char *s, int64_t *out);

/* Formats a Unix time as RFC 3339 UTC ("2026-11-27T15:26:12Z") into buf (at least 21 bytes). A
 * zero time is written as "-". Returns buf. */
char *kn_format_time(int64_t t, char *buf, size_t bufsize);

/* Writes v in decimal (a '-' first when negative) to out, which must hold KN_DECIMAL_MAX bytes,
 * without a terminating NUL, and returns the number of bytes written: the hot path's numbers,
 * without printf's cost. */
#define KN_DECIMAL_MAX 20
size_t kn_decimal(char *out, int64_t v);

/* Writes path as an absolute path into out (the working directory before a relative one; "./"
 * and "../" resolved where the directories exist), so that messages say exactly which file they
 * mean. Returns out. */
char *kn_abs_path(const char *path, char *out, size_t size);

/* Calendar months, UTC, numbered year * 12 + month - 1 so that consecutive months differ by 1.
 * Billing periods and quotas use them. */
int64_t kn_month_of(int64_t unix_s);
/* The Unix time at which a month starts (00:00 UTC on its first day). */
int64_t kn_month_start(int64_t month);
/* Formats a month as "2026-11" into buf (at least 8 bytes). Returns buf. */
char *kn_month_format(int64_t month, char *buf, size_t bufsize);
/* Parses "2026-11". Returns 0 and writes *month, or -1. */
int kn_month_parse(const char *s, int64_t *month);

#endif
