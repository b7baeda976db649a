/* The fault switch; see fault.h. */
#include "core/fault.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
    char buf[256];
    if (strlen(spec) >= sizeof(buf))
        goto bad;
    memcpy(buf, spec, strlen(spec) + 1);
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(item, ':'), *end;
        int k;
        if (colon == NULL)
            goto bad;
        *colon = '\0';
        for (k = 0; k < FAULT__COUNT && strcmp(item, kind_names[k]) != 0; k++)
            ;
        if (k == FAULT__COUNT)
            goto bad;
        unsigned long long from = strtoull(colon + 1, &end, 10), count = 1;
        if (end == colon + 1 || from == 0)
            goto bad;
        if (*end == 'x') {
            if (strcmp(end + 1, "*") == 0) {
                count = UINT64_MAX;
                end += 2;
            } else {
                char *cend;
                count = strtoull(end + 1, &cend, 10);
                if (cend == end + 1 || count == 0)
                    goto bad;
                end = cend;
            }
        }
        if (*end != '\0')
            goto bad;
        faults[k].from = from;
        faults[k].count = count;
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
