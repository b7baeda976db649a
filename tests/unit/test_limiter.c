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
    struct keyclass ca = {0}, cb = {0}, cc = {0}; /* Each key's class, changed in place here. */
    struct plan plan;
    struct ratelimit_result r;
    int64_t now = 1795805276, month = kn_month_of(now);
    uint64_t t = 1000000000ull, requests = 0, tokens = 0;
    int allowed = 0;

    memset(&acct, 0, sizeof(acct));
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&plan, 0, sizeof(plan));
    ca.acct = cb.acct = &acct;
    atomic_store(&a.cls, &ca);
    atomic_store(&b.cls, &cb);

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
    struct quota_hold h, h2;
    quota_configure(&acct, &plan, 2, 100);
    CHECK(limiter_quota_reserve(l, &a, month, 80, &h) == QUOTA_OK && h.tokens == 80 &&
          h.line == NULL);
    CHECK(limiter_quota_reserve(l, &b, month, 80, &h2) == QUOTA_OK && h2.tokens == 20);
    CHECK(limiter_quota_reserve(l, &a, month, 1, &h) != QUOTA_OK); /* Both used up. */
    h = (struct quota_hold){80, NULL};
    limiter_quota_release(l, &b, month, &h2);
    limiter_quota_settle(l, &a, month, &h, 30);
    quota_usage(&acct, month, &requests, &tokens);
    CHECK(requests == 1 && tokens == 30);
    CHECK(limiter_quota_reserve(l, &a, month, 500, &h) == QUOTA_OK && h.tokens == 70);
    limiter_quota_settle(l, &a, month, &h, 70);
    CHECK(limiter_quota_reserve(l, &a, month, 1, &h) != QUOTA_OK);

    /* A key's own monthly quota: 2 requests over its line (a and its replacement b share one
     * count), below an account quota of 10. Refused by the key's, the account's count is left as
     * it was; a request released gives back to the line it took from, even once the key's rules
     * no longer name a quota; another key of the account is not limited by it. */
    struct acctrec acct2;
    struct keyrec c;
    struct keyquota line;
    struct keyrules rules;
    memset(&acct2, 0, sizeof(acct2));
    memset(&c, 0, sizeof(c));
    memset(&rules, 0, sizeof(rules));
    quota_configure(&acct2, &plan, 10, PLAN_UNLIMITED);
    ca.acct = cb.acct = cc.acct = &acct2;
    atomic_store(&c.cls, &cc);
    memset(&line, 0, sizeof(line));
    keyquota_raise(&line, month, 1); /* One billed earlier in the month. */
    rules.monthly = 2;
    ca.line = &line;
    cb.line = &line;
    ca.rules = &rules;
    cb.rules = &rules;
    CHECK(limiter_quota_reserve(l, &b, month, 0, &h) == QUOTA_OK && h.line == &line);
    CHECK(limiter_quota_reserve(l, &a, month, 0, &h2) == QUOTA_KEY_REQUESTS_USED_UP);
    quota_usage(&acct2, month, &requests, &tokens);
    CHECK(requests == 1 && keyquota_used(&line, month) == 2);
    CHECK(limiter_quota_reserve(l, &c, month, 0, &h2) == QUOTA_OK && h2.line == NULL);
    cb.rules = NULL; /* The quota lifted while the request was in flight. */
    limiter_quota_release(l, &b, month, &h);
    CHECK(keyquota_used(&line, month) == 1);
    CHECK(limiter_quota_reserve(l, &a, month, 0, &h) == QUOTA_OK);
    limiter_quota_settle(l, &a, month, &h, 0);
    CHECK(keyquota_used(&line, month) == 2);                       /* Settled: it stays counted. */
    CHECK(limiter_quota_reserve(l, &b, month, 0, &h) == QUOTA_OK); /* No quota: counted only. */
    CHECK(keyquota_used(&line, month) == 3);
    CHECK(limiter_quota_reserve(l, &a, month + 1, 0, &h) == QUOTA_OK); /* A new month. */
    CHECK(keyquota_used(&line, month + 1) == 1 && keyquota_used(&line, month) == 0);
    /* The account's quota still applies to a key with a quota of its own. */
    quota_configure(&acct2, &plan, 0, PLAN_UNLIMITED);
    rules.monthly = 100;
    CHECK(limiter_quota_reserve(l, &a, month + 1, 0, &h) == QUOTA_REQUESTS_USED_UP);
    CHECK(keyquota_used(&line, month + 1) == 1);
    return unit_result();
}
