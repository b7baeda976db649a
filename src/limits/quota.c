/* An account's live limits: plan, monthly quotas, reservations, in-flight count; see quota.h. */
#include "limits/quota.h"

#define MONTH_SHIFT 40
#define COUNT_MASK ((UINT64_C(1) << MONTH_SHIFT) - 1)

static uint64_t cell(int64_t month, uint64_t count)
{
    return ((uint64_t)month << MONTH_SHIFT) | (count & COUNT_MASK);
}

static uint64_t count_in(uint64_t c, int64_t month)
{
    return (int64_t)(c >> MONTH_SHIFT) == month ? c & COUNT_MASK : 0;
}

void quota_configure(struct acctrec *a, const struct plan *plan, int64_t quota_requests,
                     int64_t quota_tokens)
{
    atomic_store(&a->plan, plan);
    atomic_store(&a->quota_requests, quota_requests);
    atomic_store(&a->quota_tokens, quota_tokens);
}

void quota_load(struct acctrec *a, int64_t month, uint64_t requests, uint64_t tokens)
{
    atomic_store(&a->requests_cell, cell(month, requests));
    atomic_store(&a->tokens_cell, cell(month, tokens));
}

/* The later of `month` and the cell's: a request that read the clock just before a month began
 * and reaches a cell another request already moved into the new month counts in the new one
 * (it must not put the cell back into the old month, which would start the new month's count
 * again from it). */
static int64_t month_for(uint64_t c, int64_t month)
{
    int64_t m = (int64_t)(c >> MONTH_SHIFT);
    return m > month ? m : month;
}

/* Takes one request of `month` from a requests cell allowing `max` (PLAN_UNLIMITED: any). When
 * this moves the cell into a new month, its count starts at the account's other requests that
 * hold one of an earlier month (*holding, which counts this one already; read again at each try,
 * so that one taken in the old month meanwhile is not left out): their ledger rows, dated when
 * they end, bill them in the new one. A key's line (holding NULL) starts from none. */
static int take_request(_Atomic uint64_t *rc, int64_t month, int64_t max, _Atomic uint32_t *holding)
{
    uint64_t c = atomic_load(rc), n;
    int64_t m;

    do {
        m = month_for(c, month);
        if ((int64_t)(c >> MONTH_SHIFT) < m)
            n = holding != NULL && atomic_load(holding) > 0 ? atomic_load(holding) - 1 : 0;
        else
            n = count_in(c, m);
        if (max != PLAN_UNLIMITED && n >= (uint64_t)max)
            return 0;
    } while (!atomic_compare_exchange_weak(rc, &c, cell(m, n + 1)));
    return 1;
}

/* Gives back a request of `month`. In a cell that a new month has reached since, an account's
 * request (`seeded`) was counted there when the cell moved (take_request; it still held its
 * request then, since it gives it back before it stops counting as holding one), and is given
 * back there; a key line's was not, and there is nothing of it to give back. */
static void give_request(_Atomic uint64_t *rc, int64_t month, int seeded)
{
    uint64_t c = atomic_load(rc);

    do {
        int64_t m = (int64_t)(c >> MONTH_SHIFT);
        if ((m != month && !(seeded && m > month)) || (c & COUNT_MASK) == 0)
            return;
    } while (!atomic_compare_exchange_weak(rc, &c, c - 1));
}

/* Holds up to `want` tokens of what remains of the token quota; 0 when there is none left.
 *
 * The check reads two cells, the month's billed tokens and the tokens held, and a settle moves
 * tokens from the second to the first. The billed cell is read first, so that a settle in
 * between is counted at most once, never twice (which would refuse a request the quota has room
 * for). The hold is taken by a compare-and-swap on the held cell, and kept only if the billed
 * cell is still the one read: the held cell may be back at the value read while a settle moved
 * tokens to billed in between (A-B-A), and a hold checked against the old billed figure could
 * then take the tokens past the quota. The billed cell only grows in a month and its month only
 * moves on, so an unchanged billed cell was unchanged all along: when the swap happened, billed
 * plus held was what the check saw. */
static int hold_tokens(struct acctrec *a, int64_t month, int64_t max_tokens, uint64_t want,
                       uint64_t *held)
{
    uint64_t c, r, billed, left, h;

    *held = 0;
    if (max_tokens == PLAN_UNLIMITED)
        return 0;
    for (;;) {
        c = atomic_load(&a->tokens_cell);
        r = atomic_load(&a->tokens_reserved);
        billed = count_in(c, month_for(c, month));
        if (billed + r >= (uint64_t)max_tokens)
            return -1;
        left = (uint64_t)max_tokens - billed - r;
        h = want < left ? want : left;
        if (!atomic_compare_exchange_weak(&a->tokens_reserved, &r, r + h))
            continue;
        if (atomic_load(&a->tokens_cell) == c) {
            *held = h;
            return 0;
        }
        atomic_fetch_sub(&a->tokens_reserved, h); /* Billed moved on meanwhile: check again. */
    }
}

enum quota_outcome quota_reserve(struct acctrec *a, int64_t month, uint64_t tokens, uint64_t *held)
{
    int64_t max_requests = atomic_load(&a->quota_requests),
            max_tokens = atomic_load(&a->quota_tokens);

    if (hold_tokens(a, month, max_tokens, tokens, held) != 0)
        return QUOTA_TOKENS_USED_UP;
    /* Counted as holding before the take, so that a new month's first request never misses it. */
    atomic_fetch_add(&a->requests_held, 1);
    if (!take_request(&a->requests_cell, month, max_requests, &a->requests_held)) {
        atomic_fetch_sub(&a->requests_held, 1);
        atomic_fetch_sub(&a->tokens_reserved, *held);
        *held = 0;
        return QUOTA_REQUESTS_USED_UP;
    }
    return QUOTA_OK;
}

void quota_release(struct acctrec *a, int64_t month, uint64_t held)
{
    atomic_fetch_sub(&a->tokens_reserved, held);
    give_request(&a->requests_cell, month, 1);
    atomic_fetch_sub(&a->requests_held, 1);
}

void quota_settle(struct acctrec *a, int64_t month, uint64_t held, uint64_t tokens)
{
    uint64_t c = atomic_load(&a->tokens_cell), n;

    int64_t m;

    /* Billed first, then the hold given back: in between, both count (never neither). In the
     * later of `month` (the month of its ledger row) and the cell's, as take_request counts. */
    do {
        m = month_for(c, month);
        n = count_in(c, m) + tokens;
    } while (!atomic_compare_exchange_weak(&a->tokens_cell, &c, cell(m, n)));
    atomic_fetch_sub(&a->tokens_reserved, held);
    /* Billed in a month no request was admitted in yet (it began in the last one): the requests
     * cell moves into it, counting this one and the others that hold a request, as take_request
     * would have. */
    c = atomic_load(&a->requests_cell);
    while ((int64_t)(c >> MONTH_SHIFT) < month &&
           !atomic_compare_exchange_weak(&a->requests_cell, &c,
                                         cell(month, atomic_load(&a->requests_held)))) {
    }
    atomic_fetch_sub(&a->requests_held, 1);
}

void quota_usage(struct acctrec *a, int64_t month, uint64_t *requests, uint64_t *tokens)
{
    *requests = count_in(atomic_load(&a->requests_cell), month);
    *tokens = count_in(atomic_load(&a->tokens_cell), month);
}

void keyquota_raise(struct keyquota *q, int64_t month, uint64_t requests)
{
    uint64_t c = atomic_load(&q->requests_cell);

    do {
        if ((int64_t)(c >> MONTH_SHIFT) > month || count_in(c, month) >= requests)
            return;
    } while (!atomic_compare_exchange_weak(&q->requests_cell, &c, cell(month, requests)));
}

int keyquota_take(struct keyquota *q, int64_t month, int64_t max)
{
    return take_request(&q->requests_cell, month, max > 0 ? max : PLAN_UNLIMITED, NULL);
}

void keyquota_give(struct keyquota *q, int64_t month)
{
    give_request(&q->requests_cell, month, 0);
}

uint64_t keyquota_used(struct keyquota *q, int64_t month)
{
    return count_in(atomic_load(&q->requests_cell), month);
}
