/* Latency histograms: percentiles within 1/16, the sum, the cumulative counts that /metrics
 * exports as Prometheus buckets, and a period's counts by subtraction. */
#include <string.h>

#include "core/histogram.h"
#include "unit.h"

static struct histogram h;

int main(void)
{
    struct histogram_snap a, b;

    memset(&a, 0, sizeof(a));
    histogram_read(&h, &a);
    CHECK(a.count == 0 && a.sum == 0 && histogram_count_le(&a, 1000) == 0);
    for (uint64_t v = 1; v <= 1000; v++)
        histogram_add(&h, v * 1000); /* 1 us .. 1 ms, in ns */
    memset(&a, 0, sizeof(a));
    histogram_read(&h, &a);
    CHECK(a.count == 1000 && a.max == 1000000);
    CHECK(a.sum == 1000ull * 1001 / 2 * 1000);
    /* Cumulative, and within 1/16 of the bound: about half are at or below 500 us. */
    uint64_t half = histogram_count_le(&a, 500000);
    CHECK(half >= 468 && half <= 500);
    CHECK(histogram_count_le(&a, 1000000) <= 1000 && histogram_count_le(&a, 2000000) == 1000);
    CHECK(histogram_count_le(&a, 100000) <= histogram_count_le(&a, 200000));
    uint64_t p99 = histogram_percentile(&a, 0.99);
    CHECK(p99 >= 990000 && p99 <= 990000 + 990000 / 16);
    /* A period: what was added after a copy. */
    histogram_add(&h, 5);
    memset(&b, 0, sizeof(b));
    histogram_read(&h, &b);
    histogram_since(&b, &a);
    CHECK(b.count == 1 && b.sum == 5 && histogram_count_le(&b, 5) == 1);
    return unit_result();
}
