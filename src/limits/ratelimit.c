/* Request limits on lock-free cells: GCRA per minute, counts per UTC day; see ratelimit.h. */
#include "limits/ratelimit.h"

#define NS 1000000000ull

static uint32_t ceil_seconds(uint64_t ns)
{
    return (uint32_t)((ns + NS - 1) / NS);
}

int ratelimit_gcra_take(_Atomic uint64_t *tat, uint32_t limit, uint32_t window, uint64_t now_ns,
                        struct ratelimit_result *out)
{
    uint64_t period = (uint64_t)window * NS;
    uint64_t interval = period / limit;
    uint64_t old = atomic_load_explicit(tat, memory_order_relaxed), next;

    out->limit = limit;
    out->window = window;
    for (;;) {
        uint64_t base = old > now_ns ? old : now_ns;
        next = base + interval;
        if (next - now_ns > period) {
            /* Admitting it would put more than `limit` requests inside one window. */
            uint64_t wait = next - now_ns - period;
            out->allowed = 0;
            out->remaining = 0;
            out->retry_after = ceil_seconds(wait);
            if (out->retry_after == 0)
                out->retry_after = 1;
            out->reset = ceil_seconds(base - now_ns);
            return 0;
        }
        if (atomic_compare_exchange_weak_explicit(tat, &old, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    out->allowed = 1;
    out->retry_after = 0;
    out->remaining = (uint32_t)((period - (next - now_ns)) / interval);
    out->reset = ceil_seconds(next - now_ns);
    return 1;
}

uint64_t ratelimit_daily_cell(uint32_t count, int64_t now_unix)
{
    return ((uint64_t)(now_unix / 86400) << 32) | count;
}

int ratelimit_daily_take(_Atomic uint64_t *cell, uint32_t limit, int64_t now_unix,
                         struct ratelimit_result *out)
{
    uint64_t day = (uint64_t)(now_unix / 86400);
    uint64_t old = atomic_load_explicit(cell, memory_order_relaxed), next;
    uint32_t count;

    out->limit = limit;
    out->window = 86400;
    out->reset = (uint32_t)((int64_t)(day + 1) * 86400 - now_unix);
    for (;;) {
        count = (old >> 32) == day ? (uint32_t)old : 0;
        if (count >= limit) {
            out->allowed = 0;
            out->remaining = 0;
            out->retry_after = out->reset;
            return 0;
        }
        next = (day << 32) | (count + 1);
        if (atomic_compare_exchange_weak_explicit(cell, &old, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    out->allowed = 1;
    out->remaining = limit - count - 1;
    out->retry_after = 0;
    return 1;
}

void ratelimit_daily_refund(_Atomic uint64_t *cell, int64_t now_unix)
{
    uint64_t day = (uint64_t)(now_unix / 86400);
    uint64_t old = atomic_load_explicit(cell, memory_order_relaxed);

    while ((old >> 32) == day && (uint32_t)old > 0 &&
           !atomic_compare_exchange_weak_explicit(cell, &old, old - 1, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}
