/* The limiter: every counter a request takes from before it is served, and gives back or
 * settles after, behind one interface. The server and the live path call only this:
 *
 *   rate cells       requests per minute (GCRA), a test key's own or a live account's
 *   daily counts     a test key's requests per UTC day: take, and refund a request refused later
 *   in-flight slots  a live account's requests being answered at once: acquire, release
 *   quota            a live account's monthly requests and tokens: reserve at admission, then
 *                    settle once billed or release if not (limits/quota.h says why that bounds
 *                    the overshoot)
 *
 * limiter_local is the in-process implementation: atomics in the key and account records, exact
 * on one node, no lock, no allocation, no I/O. A cluster-wide implementation (shared counters on
 * another server) is another table of these operations. */
#ifndef KN_LIMITS_LIMITER_H
#define KN_LIMITS_LIMITER_H

#include <stdint.h>

#include "keys/keytable.h"
#include "limits/quota.h"
#include "limits/ratelimit.h"

struct limiter;

struct limiter_ops {
    /* Takes one request from the per-minute cell of key (per_account = 0) or of its account
     * (1), allowing `limit` per `window` seconds, at monotonic time now_ns. Returns
     * out->allowed. */
    int (*rate_take)(struct limiter *l, struct keyrec *key, int per_account, uint32_t limit,
                     uint32_t window, uint64_t now_ns, struct ratelimit_result *out);
    /* Takes one request from key's count for the UTC day of now (Unix time), allowing `limit`;
     * refund gives one back the same day. */
    int (*daily_take)(struct limiter *l, struct keyrec *key, uint32_t limit, int64_t now,
                      struct ratelimit_result *out);
    void (*daily_refund)(struct limiter *l, struct keyrec *key, int64_t now);
    /* Takes one of an account's `max` in-flight slots: 1, or 0 when all are taken. */
    int (*inflight_acquire)(struct limiter *l, struct acctrec *a, uint32_t max);
    void (*inflight_release)(struct limiter *l, struct acctrec *a);
    /* As quota_reserve, quota_release and quota_settle (limits/quota.h). */
    enum quota_outcome (*quota_reserve)(struct limiter *l, struct acctrec *a, int64_t month,
                                        uint64_t tokens, uint64_t *held);
    void (*quota_release)(struct limiter *l, struct acctrec *a, int64_t month, uint64_t held);
    void (*quota_settle)(struct limiter *l, struct acctrec *a, int64_t month, uint64_t held,
                         uint64_t tokens);
};

struct limiter {
    const struct limiter_ops *ops;
};

/* The in-process limiter. */
extern struct limiter limiter_local;

static inline int limiter_rate_take(struct limiter *l, struct keyrec *key, int per_account,
                                    uint32_t limit, uint32_t window, uint64_t now_ns,
                                    struct ratelimit_result *out)
{
    return l->ops->rate_take(l, key, per_account, limit, window, now_ns, out);
}

static inline int limiter_daily_take(struct limiter *l, struct keyrec *key, uint32_t limit,
                                     int64_t now, struct ratelimit_result *out)
{
    return l->ops->daily_take(l, key, limit, now, out);
}

static inline void limiter_daily_refund(struct limiter *l, struct keyrec *key, int64_t now)
{
    l->ops->daily_refund(l, key, now);
}

static inline int limiter_inflight_acquire(struct limiter *l, struct acctrec *a, uint32_t max)
{
    return l->ops->inflight_acquire(l, a, max);
}

static inline void limiter_inflight_release(struct limiter *l, struct acctrec *a)
{
    l->ops->inflight_release(l, a);
}

static inline enum quota_outcome limiter_quota_reserve(struct limiter *l, struct acctrec *a,
                                                       int64_t month, uint64_t tokens,
                                                       uint64_t *held)
{
    return l->ops->quota_reserve(l, a, month, tokens, held);
}

static inline void limiter_quota_release(struct limiter *l, struct acctrec *a, int64_t month,
                                         uint64_t held)
{
    l->ops->quota_release(l, a, month, held);
}

static inline void limiter_quota_settle(struct limiter *l, struct acctrec *a, int64_t month,
                                        uint64_t held, uint64_t tokens)
{
    l->ops->quota_settle(l, a, month, held, tokens);
}

#endif
