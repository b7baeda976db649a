/* The in-process limiter: the counters are atomics in the key and account records
 * (limits/ratelimit.c and limits/quota.c do the arithmetic). */
#include "limits/limiter.h"

static int local_rate_take(struct limiter *l, struct keyrec *key, int per_account, uint32_t limit,
                           uint32_t window, uint64_t now_ns, struct ratelimit_result *out)
{
    (void)l;
    return ratelimit_gcra_take(per_account ? &keyrec_acct(key)->rate_tat : &key->rate_tat, limit,
                               window, now_ns, out);
}

static int local_daily_take(struct limiter *l, struct keyrec *key, uint32_t limit, int64_t now,
                            struct ratelimit_result *out)
{
    (void)l;
    return ratelimit_daily_take(&key->day_cell, limit, now, out);
}

static void local_daily_refund(struct limiter *l, struct keyrec *key, int64_t now)
{
    (void)l;
    ratelimit_daily_refund(&key->day_cell, now);
}

static int local_inflight_acquire(struct limiter *l, struct acctrec *a, uint32_t max)
{
    (void)l;
    if (atomic_fetch_add(&a->inflight, 1) < max)
        return 1;
    atomic_fetch_sub(&a->inflight, 1);
    return 0;
}

static void local_inflight_release(struct limiter *l, struct acctrec *a)
{
    (void)l;
    atomic_fetch_sub(&a->inflight, 1);
}

static enum quota_outcome local_quota_reserve(struct limiter *l, struct keyrec *key, int64_t month,
                                              uint64_t tokens, struct quota_hold *hold)
{
    /* The rules first: a record whose rules name a quota was given its line before them. */
    const struct keyrules *rules = keyrec_rules(key);
    struct keyquota *line = keyrec_line(key);
    enum quota_outcome q;

    (void)l;
    hold->tokens = 0;
    hold->line = NULL;
    /* A live key's line counts every request, limited or not, so that a quota set later starts
     * from what was really used. */
    if (line != NULL && !keyquota_take(line, month, rules != NULL ? rules->monthly : 0))
        return QUOTA_KEY_REQUESTS_USED_UP;
    if ((q = quota_reserve(keyrec_acct(key), month, tokens, &hold->tokens)) != QUOTA_OK) {
        if (line != NULL)
            keyquota_give(line, month);
        return q;
    }
    hold->line = line;
    return QUOTA_OK;
}

static void local_quota_release(struct limiter *l, struct keyrec *key, int64_t month,
                                const struct quota_hold *hold)
{
    (void)l;
    quota_release(keyrec_acct(key), month, hold->tokens);
    if (hold->line != NULL)
        keyquota_give(hold->line, month);
}

static void local_quota_settle(struct limiter *l, struct keyrec *key, int64_t month,
                               const struct quota_hold *hold, uint64_t tokens)
{
    (void)l;
    quota_settle(keyrec_acct(key), month, hold->tokens, tokens);
}

#define LOCAL(type, name, params, args) .name = local_##name,
#define LOCAL_VOID(name, params, args) .name = local_##name,
static const struct limiter_ops local_ops = {LIMITER_OPS(LOCAL, LOCAL_VOID)};
#undef LOCAL
#undef LOCAL_VOID

struct limiter limiter_local = {&local_ops};
