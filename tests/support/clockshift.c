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

/* Set once, when the library is loaded, before any thread of the server runs. */
static long long shift;
static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int (*real_gettimeofday)(struct timeval *, void *);

__attribute__((constructor)) static void init(void)
{
    const char *e = getenv("KONNECT_TEST_CLOCK_SHIFT");

    shift = e != NULL ? atoll(e) : 0;
    *(void **)&real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    *(void **)&real_gettimeofday = dlsym(RTLD_NEXT, "gettimeofday");
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    int r = real_clock_gettime(id, ts);

    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        ts->tv_sec += shift;
    return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    int r = real_gettimeofday(tv, tz);

    if (r == 0) /* (glibc declares tv non-null) */
        tv->tv_sec += shift;
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
