/* The disk's own commit latency, for the live rows of bench/run.sh: writes 8 KiB (about what a
 * group commit of one ledger row writes to SQLite's log) into a file of 64 MiB made beforehand,
 * going round it as SQLite's log does after a restart (so that a sync writes data, not the file's
 * size), and calls fdatasync, as many times as it can in the given seconds (at most 1,000,000), and
 * prints the latency of each write-and-sync as percentiles in microseconds. A live request under
 * KONNECT_LEDGER_SYNC=full waits for one such sync; this is the least it can wait. Not part of
 * Konnect.
 *
 *   syncbench FILE SECONDS */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static int by_value(const void *a, const void *b)
{
    unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    static char block[8192];
    enum { RING = 64 << 20 };
    size_t n = 0, cap = 1000000;
    unsigned long long *v, end;
    int fd;

    if (argc != 3) {
        fprintf(stderr, "usage: syncbench FILE SECONDS\n");
        return 2;
    }
    if ((fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        perror(argv[1]);
        return 1;
    }
    memset(block, 'k', sizeof(block));
    for (off_t at = 0; at < RING; at += (off_t)sizeof(block))
        if (pwrite(fd, block, sizeof(block), at) != (ssize_t)sizeof(block)) {
            perror("write");
            return 1;
        }
    if (fsync(fd) != 0) {
        perror("fsync");
        return 1;
    }
    v = malloc(cap * sizeof(*v));
    end = now_ns() + (unsigned long long)(atof(argv[2]) * 1e9);
    while (now_ns() < end && n < cap) {
        unsigned long long t0 = now_ns();
        off_t at = (off_t)((n * sizeof(block)) % RING);
        if (pwrite(fd, block, sizeof(block), at) != (ssize_t)sizeof(block) || fdatasync(fd) != 0) {
            perror("write or fdatasync");
            return 1;
        }
        v[n++] = now_ns() - t0;
    }
    close(fd);
    unlink(argv[1]);
    if (n == 0) {
        fprintf(stderr, "syncbench: no sync in the time given\n");
        return 1;
    }
    qsort(v, n, sizeof(*v), by_value);
    printf("syncs %zu\n", n);
    printf("p50_us %.1f\np90_us %.1f\np99_us %.1f\np999_us %.1f\nmax_us %.1f\n",
           (double)v[n / 2] / 1e3, (double)v[n * 9 / 10] / 1e3, (double)v[n * 99 / 100] / 1e3,
           (double)v[n * 999 / 1000] / 1e3, (double)v[n - 1] / 1e3);
    return 0;
}
