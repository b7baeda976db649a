/* The fault switch; see fault.h. */
#include "core/fault.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifndef NDEBUG
static const char *const kind_names[FAULT__COUNT] = {"store", "ledger"};

struct fault {
    uint64_t from, count; /* Calls from..from+count-1 fail; count 0 = none, UINT64_MAX = all. */
    _Atomic uint64_t calls;
};

static struct fault faults[FAULT__COUNT];

int fault_hit(enum fault_kind k)
{
    struct fault *f = &faults[k];
    if (f->count == 0)
        return 0;
    uint64_t n = atomic_fetch_add_explicit(&f->calls, 1, memory_order_relaxed) + 1;
    return n >= f->from && (f->count == UINT64_MAX || n - f->from < f->count);
}

/* Reads a positive decimal number of at most 18 digits at *p (digits only: no sign, no space)
 * and moves *p past it. Returns it, or 0 when there is none. */
static uint64_t number(const char **p)
{
    uint64_t n = 0;
    int digits = 0;

    while (**p >= '0' && **p <= '9' && digits < 19) {
        n = n * 10 + (uint64_t)(**p - '0');
        (*p)++;
        digits++;
    }
    return digits == 0 || digits > 18 ? 0 : n;
}
#endif

int fault_init(const char *spec, char *err, size_t errsize)
{
    if (spec == NULL || *spec == '\0')
        return 0;
#ifdef NDEBUG
    snprintf(err, errsize,
             "KONNECT_FAULT is set, but this is a release build, which has no fault "
             "switch: unset it, or use a debug build (CMAKE_BUILD_TYPE=Debug)");
    return -1;
#else
    struct fault parsed[FAULT__COUNT];
    const char *p = spec;

    memset(parsed, 0, sizeof(parsed));
    for (;;) {
        int k;
        for (k = 0; k < FAULT__COUNT; k++) {
            size_t len = strlen(kind_names[k]);
            if (strncmp(p, kind_names[k], len) == 0 && p[len] == ':') {
                p += len + 1;
                break;
            }
        }
        if (k == FAULT__COUNT || (parsed[k].from = number(&p)) == 0)
            goto bad;
        parsed[k].count = 1;
        if (*p == 'x') {
            p++;
            if (*p == '*') {
                parsed[k].count = UINT64_MAX;
                p++;
            } else if ((parsed[k].count = number(&p)) == 0) {
                goto bad;
            }
        }
        if (*p == '\0')
            break;
        if (*p++ != ',')
            goto bad;
    }
    for (int k = 0; k < FAULT__COUNT; k++) {
        faults[k].from = parsed[k].from;
        faults[k].count = parsed[k].count;
    }
    fprintf(stderr, "konnect: KONNECT_FAULT=%s: calls will fail on purpose\n", spec);
    return 0;
bad:
    snprintf(err, errsize,
             "KONNECT_FAULT must be KIND:N[xC] items separated by commas, KIND store or ledger, N "
             "and C positive numbers or C '*' (for example store:5x3,ledger:1)");
    return -1;
#endif
}
