/* For tests: preloaded into a server (LD_PRELOAD), moves its wall clock KONNECT_TEST_CLOCK_SHIFT
 * seconds on (clock_gettime's realtime clocks, gettimeofday, time), so that a test can run it
 * across the end of a month. Monotonic clocks are left alone. Never built into Konnect. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long long shift(void)
{
    static long long s = -1;
    if (s == -1) {
        const char *e = getenv("KONNECT_TEST_CLOCK_SHIFT");
        s = e != NULL ? atoll(e) : 0;
    }
    return s;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    static int (*real)(clockid_t, struct timespec *);
    int r;

    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "clock_gettime");
    r = real(id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        ts->tv_sec += shift();
    return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    static int (*real)(struct timeval *, void *);
    int r;

    if (real == NULL)
        *(void **)&real = dlsym(RTLD_NEXT, "gettimeofday");
    r = real(tv, tz);
    if (r == 0) /* (glibc declares tv non-null) */
        tv->tv_sec += shift();
    return r;
}

time_t time(time_t *t)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    if (t != NULL)
        *t = ts.tv_sec;
    return ts.tv_sec;
}
