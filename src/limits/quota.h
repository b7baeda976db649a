/* An account's live limits, per account (never per key, so that more keys buy nothing): its
 * plan, its monthly quotas of requests and tokens, its requests per minute and its requests in
 * flight, all in memory.
 *
 * Every live request reserves one request of its account's monthly quota and an estimate of its
 * tokens before it reaches the model backend (quota_reserve), and settles them once billed
 * (quota_settle) or gives them back if it is not (quota_release), so that with a quota of N
 * exactly N live requests are billed in a month, however many arrive at once, and concurrent long
 * requests cannot overshoot the token quota without bound: a request is admitted while the tokens
 * billed plus those reserved by requests in flight are below the quota, and reserves at most what
 * remains. The overshoot is bounded by what the requests in flight at that moment use beyond
 * their reservations (README "Quotas").
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
    /* The plan in force, or NULL when the account's plan is one the server's plans do not define
     * (plan_wanted names it): live requests are then refused, never served free. */
    _Atomic(const struct plan *) plan;
    _Atomic(const char *) plan_wanted;
    _Atomic int64_t quota_requests; /* In force this month: PLAN_UNLIMITED or a limit. */
    _Atomic int64_t quota_tokens;
    /* The month counted, and in it: requests billed or in flight, tokens billed. The month and
     * the request count share one 64-bit cell (month in the high 24 bits), so that a new month
     * resets the count atomically. */
    _Atomic uint64_t requests_cell;
    _Atomic uint64_t tokens_cell;
    _Atomic uint64_t tokens_reserved; /* Held by live requests in flight, any month. */
    /* Live requests holding a request of the quota (reserved, not yet settled or released), of
     * any month: a new month's count starts from them (quota.c, take_request). */
    _Atomic uint32_t requests_held;
    _Atomic uint64_t rate_tat;    /* GCRA state of the plan's requests_per_minute. */
    _Atomic uint32_t inflight;    /* Live requests being answered right now. */
    _Atomic int64_t suspended_at; /* The operator suspended it: every key refused. 0 = not. */
    _Atomic uint32_t api_queued;  /* Its management API calls waiting or running. */
};

/* A live key's own monthly quota of requests (below its account's), counted over the key's line
 * of replacements so that rolling a key never starts it again: one cell per line, shared by the
 * keys of the line, counting the requests billed or in flight in the month it names (the same
 * layout as an account's requests_cell). Never freed while the server runs. */
struct keyquota {
    _Atomic uint64_t requests_cell;
    char id[ACCOUNT_REC_ID_SIZE]; /* The line's first key id (its cell's name in Redis). */
};

enum quota_outcome {
    QUOTA_OK = 0,
    QUOTA_REQUESTS_USED_UP,
    QUOTA_TOKENS_USED_UP,
    QUOTA_KEY_REQUESTS_USED_UP, /* The key's own monthly quota (struct keyquota). */
};

/* What a live request reserved: tokens of its account's quota, and the key line whose request
 * count it took (NULL for a key without one). */
struct quota_hold {
    uint64_t tokens;
    struct keyquota *line;
};

/* Sets the plan (NULL: unknown, see plan_wanted) and the limits in force (an override or the
 * plan's). */
void quota_configure(struct acctrec *a, const struct plan *plan, int64_t quota_requests,
                     int64_t quota_tokens);

/* Sets the usage already billed in `month` (at start, from the store). */
void quota_load(struct acctrec *a, int64_t month, uint64_t requests, uint64_t tokens);

/* Reserves one request and up to `tokens` tokens in `month`, and writes the tokens reserved to
 * *held (what remains of the quota when that is less; 0 without a token quota). Returns
 * QUOTA_OK, or why not (nothing reserved). */
enum quota_outcome quota_reserve(struct acctrec *a, int64_t month, uint64_t tokens, uint64_t *held);

/* Gives back a request reserved in `month` that was not billed, and its held tokens. */
void quota_release(struct acctrec *a, int64_t month, uint64_t held);

/* A request was billed `tokens` in `month` (the month of its ledger row, which for a request
 * still running when a month ended is the new one): they replace the `held` ones, and count in
 * the later of `month` and the month the account's cells are in. */
void quota_settle(struct acctrec *a, int64_t month, uint64_t held, uint64_t tokens);

/* The usage counted in `month`: requests billed or in flight, tokens billed. */
void quota_usage(struct acctrec *a, int64_t month, uint64_t *requests, uint64_t *tokens);

/* Raises a key line's count of `month` to `requests` (the store's, read again) where it is lower;
 * never lowers it, nor touches a later month's. */
void keyquota_raise(struct keyquota *q, int64_t month, uint64_t requests);

/* Counts one request of `month` in q, allowing `max` (0: count without a limit). Returns 1, or 0
 * when the line has used its quota (nothing counted). */
int keyquota_take(struct keyquota *q, int64_t month, int64_t max);

/* Gives back a request counted in `month` that was not billed. */
void keyquota_give(struct keyquota *q, int64_t month);

/* The requests counted in `month`: billed or in flight. */
uint64_t keyquota_used(struct keyquota *q, int64_t month);

#endif
