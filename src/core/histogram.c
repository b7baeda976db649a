/* Log-linear latency histograms for one writer and any reader; see histogram.h. */
#include "core/histogram.h"

/* The bucket of v: values below 16 have one each; above, each power of two 2^e (e >= 4) has 16
 * buckets of width 2^(e-4). */
static size_t bucket_of(uint64_t v)
{
    if (v < HISTOGRAM_SUB)
        return (size_t)v;
    int e = 63 - __builtin_clzll(v);
    size_t i = HISTOGRAM_SUB + (size_t)(e - 4) * HISTOGRAM_SUB +
               (size_t)((v >> (e - 4)) & (HISTOGRAM_SUB - 1));
    return i < HISTOGRAM_BUCKETS ? i : HISTOGRAM_BUCKETS - 1;
}

/* The largest value bucket i holds. */
static uint64_t bucket_top(size_t i)
{
    if (i < HISTOGRAM_SUB)
        return i;
    size_t e = (i - HISTOGRAM_SUB) / HISTOGRAM_SUB + 4, sub = (i - HISTOGRAM_SUB) % HISTOGRAM_SUB;
    return ((uint64_t)(HISTOGRAM_SUB + sub + 1) << (e - 4)) - 1;
}

void histogram_add(struct histogram *h, uint64_t v)
{
    _Atomic uint32_t *b = &h->bucket[bucket_of(v)];

    /* One writer: a load and a store, never a locked read-modify-write. */
    atomic_store_explicit(b, atomic_load_explicit(b, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->count, atomic_load_explicit(&h->count, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->sum, atomic_load_explicit(&h->sum, memory_order_relaxed) + v,
                          memory_order_relaxed);
    if (v > atomic_load_explicit(&h->max, memory_order_relaxed))
        atomic_store_explicit(&h->max, v, memory_order_relaxed);
}

void histogram_read(const struct histogram *h, struct histogram_snap *into)
{
    uint64_t max = atomic_load_explicit(&h->max, memory_order_relaxed);

    into->count += atomic_load_explicit(&h->count, memory_order_relaxed);
    into->sum += atomic_load_explicit(&h->sum, memory_order_relaxed);
    if (max > into->max)
        into->max = max;
    for (size_t i = 0; i < HISTOGRAM_BUCKETS; i++)
        into->bucket[i] += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
}

void histogram_since(struct histogram_snap *now, const struct histogram_snap *before)
{
    now->count -= before->count;
    now->sum -= before->sum;
    for (size_t i = 0; i < HISTOGRAM_BUCKETS; i++)
        now->bucket[i] -= before->bucket[i];
}

uint64_t histogram_percentile(const struct histogram_snap *h, double p)
{
    uint64_t total = 0, want, seen = 0;

    for (size_t i = 0; i < HISTOGRAM_BUCKETS; i++)
        total += h->bucket[i];
    if (total == 0)
        return 0;
    want = (uint64_t)(p * (double)total + 0.999999);
    if (want == 0)
        want = 1;
    for (size_t i = 0; i < HISTOGRAM_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= want) {
            uint64_t top = bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

uint64_t histogram_count_le(const struct histogram_snap *h, uint64_t v)
{
    uint64_t n = 0;

    for (size_t i = 0; i < HISTOGRAM_BUCKETS && bucket_top(i) <= v; i++)
        n += h->bucket[i];
    return n;
}
