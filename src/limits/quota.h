/* Monthly quotas of live usage, per account, in memory. Every live request reserves one request
 * of its account's quota before it reaches the model backend and gives it back if it is not
 * billed, so that with a quota of N exactly N live requests are billed in a month, however many
 * arrive at once. Tokens are known only once the backend answers: they are added when a request
 * is billed, and a request is refused once the tokens already billed reach the token quota (so
 * the requests in flight when that happens may pass it by their own tokens).
 *
 * The counters are for the calendar month (UTC) they name; the first request of a new month
 * starts them again from zero. At start, they are loaded from the ledger's rollup. */
#ifndef KN_LIMITS_QUOTA_H
#define KN_LIMITS_QUOTA_H

#include <stdatomic.h>
#include <stdint.h>

#include "metering/plans.h"

#define ACCOUNT_REC_ID_SIZE 32

/* One account. Records are never freed while the server runs, so that keys can point at them. */
struct acctrec {
    char id[ACCOUNT_REC_ID_SIZE];
    _Atomic(const struct plan *) plan;
    _Atomic int64_t quota_requests; /* In force this month: PLAN_UNLIMITED or a limit. */
    _Atomic int64_t quota_tokens;
    /* The month counted, and in it: requests billed or in flight, tokens billed. The month and
     * the request count share one 64-bit cell (month in the high 24 bits), so that a new month
     * resets the count atomically. */
    _Atomic uint64_t requests_cell;
    _Atomic uint64_t tokens_cell;
};

enum quota_outcome {
    QUOTA_OK = 0,
    QUOTA_REQUESTS_USED_UP,
    QUOTA_TOKENS_USED_UP,
};

/* Sets the plan and the limits in force (an override or the plan's). */
void quota_configure(struct acctrec *a, const struct plan *plan, int64_t quota_requests,
                     int64_t quota_tokens);

/* Sets the usage already billed in `month` (at start, from the store). */
void quota_load(struct acctrec *a, int64_t month, uint64_t requests, uint64_t tokens);

/* Reserves one request in `month`. Returns QUOTA_OK, or why not (nothing reserved). */
enum quota_outcome quota_reserve(struct acctrec *a, int64_t month);

/* Gives back a request reserved in `month` that was not billed. */
void quota_release(struct acctrec *a, int64_t month);

/* Adds the tokens of a billed request reserved in `month`. */
void quota_add_tokens(struct acctrec *a, int64_t month, uint64_t tokens);

/* The usage counted in `month`: requests billed or in flight, tokens billed. */
void quota_usage(struct acctrec *a, int64_t month, uint64_t *requests, uint64_t *tokens);

#endif
