/* GCRA per-minute limits and UTC-day counters. */
#include <pthread.h>

#include "limits/ratelimit.h"
#include "unit.h"

#define NS 1000000000ull

static _Atomic uint64_t shared_cell;
static _Atomic int admitted;

static void *hammer(void *arg)
{
    struct ratelimit_result r;
    (void)arg;
    for (int i = 0; i < 1000; i++)
        if (ratelimit_daily_take(&shared_cell, 500, 86400 * 20000 + 5, &r))
            atomic_fetch_add(&admitted, 1);
    return NULL;
}

int main(void)
{
    _Atomic uint64_t tat = 0;
    struct ratelimit_result r;
    uint64_t now = 1000 * NS;
    int ok = 0;

    /* 60 per minute: a burst of 60, then refused. */
    for (int i = 0; i < 60; i++)
        ok += ratelimit_gcra_take(&tat, 60, 60, now, &r);
    CHECK(ok == 60);
    CHECK(r.remaining == 0);
    CHECK(!ratelimit_gcra_take(&tat, 60, 60, now, &r));
    CHECK(r.retry_after == 1 && r.remaining == 0 && r.limit == 60 && r.window == 60);
    /* One second later exactly one more is allowed. */
    CHECK(ratelimit_gcra_take(&tat, 60, 60, now + NS, &r));
    CHECK(!ratelimit_gcra_take(&tat, 60, 60, now + NS, &r));
    /* A minute of quiet restores the whole burst. */
    CHECK(ratelimit_gcra_take(&tat, 60, 60, now + 62 * NS, &r));
    CHECK(r.remaining == 59);
    CHECK(r.reset == 1);

    /* One request per minute: the next one waits the whole minute. */
    _Atomic uint64_t t2 = 0;
    CHECK(ratelimit_gcra_take(&t2, 1, 60, now, &r));
    CHECK(!ratelimit_gcra_take(&t2, 1, 60, now, &r));
    CHECK(r.retry_after == 60);

    /* Daily: 3 per day, resets at midnight UTC. */
    _Atomic uint64_t day = 0;
    int64_t t = 86400 * 20000 + 3600; /* 01:00 UTC */
    CHECK(ratelimit_daily_take(&day, 3, t, &r) && r.remaining == 2);
    CHECK(ratelimit_daily_take(&day, 3, t, &r) && r.remaining == 1);
    CHECK(ratelimit_daily_take(&day, 3, t, &r) && r.remaining == 0);
    CHECK(!ratelimit_daily_take(&day, 3, t, &r));
    CHECK(r.retry_after == 82800 && r.reset == 82800);
    ratelimit_daily_refund(&day, t);
    CHECK(ratelimit_daily_take(&day, 3, t, &r));
    CHECK(ratelimit_daily_take(&day, 3, t + 82800, &r) && r.remaining == 2);
    /* A cell loaded from the store carries its count. */
    day = ratelimit_daily_cell(2, t);
    CHECK(ratelimit_daily_take(&day, 3, t, &r) && r.remaining == 0);

    /* Concurrency: exactly the limit is admitted, never more. */
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, hammer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK(atomic_load(&admitted) == 500);
    return unit_result();
}
