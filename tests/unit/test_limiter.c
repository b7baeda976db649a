/* The limiter interface over its in-process implementation: per-key and per-account rate cells,
 * daily counts with refunds, in-flight slots, and quota reservations settled or released. */
#include <stdlib.h>

#include "core/util.h"
#include "limits/limiter.h"
#include "unit.h"

int main(void)
{
    struct limiter *l = &limiter_local;
    struct acctrec acct;
    struct keyrec a, b;
    struct plan plan;
    struct ratelimit_result r;
    int64_t now = 1795805276, month = kn_month_of(now);
    uint64_t t = 1000000000ull, held = 0, requests = 0, tokens = 0;
    int allowed = 0;

    memset(&acct, 0, sizeof(acct));
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&plan, 0, sizeof(plan));
    a.acct = b.acct = &acct;

    /* Per key, each key has its own cell; per account, two keys share one. */
    for (int i = 0; i < 6; i++)
        allowed += limiter_rate_take(l, i % 2 ? &a : &b, 0, 3, 60, t, &r);
    CHECK(allowed == 6);
    allowed = 0;
    for (int i = 0; i < 6; i++)
        allowed += limiter_rate_take(l, i % 2 ? &a : &b, 1, 3, 60, t, &r);
    CHECK(allowed == 3 && !r.allowed && r.retry_after > 0);

    /* A daily count refunded gives its request back the same day. */
    CHECK(limiter_daily_take(l, &a, 2, now, &r) && r.remaining == 1);
    CHECK(limiter_daily_take(l, &a, 2, now, &r) && r.remaining == 0);
    CHECK(!limiter_daily_take(l, &a, 2, now, &r));
    limiter_daily_refund(l, &a, now);
    CHECK(limiter_daily_take(l, &a, 2, now, &r));
    CHECK(limiter_daily_take(l, &a, 2, now + 86400, &r)); /* A new day. */

    /* In-flight slots: max at once, and a refused acquire holds nothing. */
    CHECK(limiter_inflight_acquire(l, &acct, 2) && limiter_inflight_acquire(l, &acct, 2));
    CHECK(!limiter_inflight_acquire(l, &acct, 2) && atomic_load(&acct.inflight) == 2);
    limiter_inflight_release(l, &acct);
    CHECK(limiter_inflight_acquire(l, &acct, 2));
    limiter_inflight_release(l, &acct);
    limiter_inflight_release(l, &acct);
    CHECK(atomic_load(&acct.inflight) == 0);

    /* Quota: 2 requests, 100 tokens. A reservation released is as if never made; one settled
     * counts what was billed. */
    quota_configure(&acct, &plan, 2, 100);
    CHECK(limiter_quota_reserve(l, &acct, month, 80, &held) == QUOTA_OK && held == 80);
    CHECK(limiter_quota_reserve(l, &acct, month, 80, &held) == QUOTA_OK && held == 20);
    CHECK(limiter_quota_reserve(l, &acct, month, 1, &held) != QUOTA_OK); /* Both used up. */
    limiter_quota_release(l, &acct, month, 20);
    limiter_quota_settle(l, &acct, month, 80, 30);
    quota_usage(&acct, month, &requests, &tokens);
    CHECK(requests == 1 && tokens == 30);
    CHECK(limiter_quota_reserve(l, &acct, month, 500, &held) == QUOTA_OK && held == 70);
    limiter_quota_settle(l, &acct, month, 70, 70);
    CHECK(limiter_quota_reserve(l, &acct, month, 1, &held) != QUOTA_OK);
    return unit_result();
}
