/* Latency histograms: one writer thread each, read at any time by another (a report), with no
 * lock and no allocation. Buckets are log-linear, as HdrHistogram lays them out: 16 linear
 * buckets per power of two, so that any percentile read back is within 1/16 (6 %) of the value
 * recorded, from nanoseconds to hours. Counters are relaxed atomics that only their writer
 * changes, so recording is a plain load and store (no locked instruction) and a reader sees
 * each counter whole. */
#ifndef KN_CORE_HISTOGRAM_H
#define KN_CORE_HISTOGRAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define HISTOGRAM_SUB 16
#define HISTOGRAM_BUCKETS (HISTOGRAM_SUB + 44 * HISTOGRAM_SUB)

struct histogram {
    _Atomic uint64_t count;
    _Atomic uint64_t max;
    _Atomic uint64_t sum; /* Of every value recorded (wraps after 584 years of nanoseconds). */
    _Atomic uint32_t bucket[HISTOGRAM_BUCKETS];
};

/* A copy of a histogram that one thread owns: what a report reads, and subtracts. */
struct histogram_snap {
    uint64_t count, max, sum;
    uint32_t bucket[HISTOGRAM_BUCKETS];
};

/* Records a value (nanoseconds, or any unit). For the histogram's one writer thread. */
void histogram_add(struct histogram *h, uint64_t v);

/* Adds h's counters to *into (a reader's copy; several histograms merge into one). */
void histogram_read(const struct histogram *h, struct histogram_snap *into);

/* Subtracts an earlier copy from a later one of the same histograms: what was recorded in
 * between. The max is the later one's (a histogram keeps no max per period). */
void histogram_since(struct histogram_snap *now, const struct histogram_snap *before);

/* The value at or below which a fraction p (0..1) of the values lie (the bucket's upper bound), or
 * 0 for an empty copy. */
uint64_t histogram_percentile(const struct histogram_snap *h, double p);

/* How many values of h are at or below v, as the buckets tell it: a value in the bucket that holds
 * v counts when that bucket's top is at or below v (within 1/16 of v; Prometheus's cumulative
 * buckets). */
uint64_t histogram_count_le(const struct histogram_snap *h, uint64_t v);

#endif
