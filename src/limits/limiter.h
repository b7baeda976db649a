/* The limiter: every counter a request takes from before it is served, and gives back or
 * settles after, behind one interface. The server and the live path call only this:
 *
 *   rate cells       requests per minute (GCRA), a test key's own or a live account's
 *   daily counts     a test key's requests per UTC day: take, and refund a request refused later
 *   in-flight slots  a live account's requests being answered at once: acquire, release
 *   quota            a live account's monthly requests and tokens, and a live key's own
 *                    monthly requests: reserve at admission, then settle once billed or release
 *                    if not (limits/quota.h says why that bounds the overshoot)
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

/* The operations, each V(NAME, parameters, arguments) for one that returns nothing and
 * X(TYPE, NAME, parameters, arguments) for one that returns a TYPE. Each is a field of struct
 * limiter_ops, a wrapper limiter_NAME below and a function of each implementation (here:
 * local_NAME in limiter.c).
 *
 *   rate_take         takes one request from the per-minute cell of key (per_account = 0) or of
 *                     its account (1), allowing `limit` per `window` seconds, at monotonic time
 *                     now_ns; returns out->allowed
 *   daily_take        takes one request from key's count for the UTC day of now (Unix time),
 *                     allowing `limit`; daily_refund gives one back the same day
 *   inflight_acquire  takes one of an account's `max` in-flight slots: 1, or 0 when all are
 *                     taken; inflight_release gives it back
 *   quota_reserve     reserves one request and up to `tokens` tokens of key's account's quotas
 *                     in `month`, and one request of the key's own monthly quota when it has one
 *                     (keyrec.line), writing what it took to *hold; QUOTA_OK or why not
 *                     (nothing then taken)
 *   quota_release, quota_settle: give back what hold took / make it usage, as in
 *                     limits/quota.h */
/* Laid out by hand: clang-format would write "struct limiter * l". */
/* clang-format off */
#define LIMITER_OPS(X, V)                                                                          \
    X(int, rate_take,                                                                              \
      (struct limiter *l, struct keyrec *key, int per_account, uint32_t limit, uint32_t window,    \
       uint64_t now_ns, struct ratelimit_result *out),                                             \
      (l, key, per_account, limit, window, now_ns, out))                                           \
    X(int, daily_take,                                                                             \
      (struct limiter *l, struct keyrec *key, uint32_t limit, int64_t now,                         \
       struct ratelimit_result *out),                                                              \
      (l, key, limit, now, out))                                                                   \
    V(daily_refund, (struct limiter *l, struct keyrec *key, int64_t now), (l, key, now))           \
    X(int, inflight_acquire, (struct limiter *l, struct acctrec *a, uint32_t max), (l, a, max))    \
    V(inflight_release, (struct limiter *l, struct acctrec *a), (l, a))                            \
    X(enum quota_outcome, quota_reserve,                                                           \
      (struct limiter *l, struct keyrec *key, int64_t month, uint64_t tokens,                      \
       struct quota_hold *hold),                                                                   \
      (l, key, month, tokens, hold))                                                               \
    V(quota_release,                                                                               \
      (struct limiter *l, struct keyrec *key, int64_t month, const struct quota_hold *hold),       \
      (l, key, month, hold))                                                                       \
    V(quota_settle,                                                                                \
      (struct limiter *l, struct keyrec *key, int64_t month, const struct quota_hold *hold,        \
       uint64_t tokens),                                                                           \
      (l, key, month, hold, tokens))
/* clang-format on */

#define LIMITER_FIELD(type, name, params, args) type(*name) params;
#define LIMITER_FIELD_VOID(name, params, args) void(*name) params;
struct limiter_ops {
    LIMITER_OPS(LIMITER_FIELD, LIMITER_FIELD_VOID)
};
#undef LIMITER_FIELD
#undef LIMITER_FIELD_VOID

struct limiter {
    const struct limiter_ops *ops;
};

/* The in-process limiter. */
extern struct limiter limiter_local;

#define LIMITER_WRAPPER(type, name, params, args)                                                  \
    static inline type limiter_##name params                                                       \
    {                                                                                              \
        return l->ops->name args;                                                                  \
    }
#define LIMITER_WRAPPER_VOID(name, params, args)                                                   \
    static inline void limiter_##name params                                                       \
    {                                                                                              \
        l->ops->name args;                                                                         \
    }
LIMITER_OPS(LIMITER_WRAPPER, LIMITER_WRAPPER_VOID)
#undef LIMITER_WRAPPER
#undef LIMITER_WRAPPER_VOID

#endif
