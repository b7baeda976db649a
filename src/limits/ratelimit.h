/* Per-key request limits on lock-free 64-bit cells.
 *
 * Per-minute limits use GCRA (the generic cell rate algorithm): one atomic "theoretical arrival
 * time" per key, advanced by window/limit for each admitted request and updated by compare-and-
 * swap. It allows a burst of `limit` requests and then one every window/limit, with no timers and
 * no per-window reset cliff.
 *
 * Per-day limits use a calendar (UTC) day counter: the cell packs the day number in its high 32
 * bits and the count in its low 32 bits, so that a new day resets the count atomically. */
#ifndef KN_LIMITS_RATELIMIT_H
#define KN_LIMITS_RATELIMIT_H

#include <stdatomic.h>
#include <stdint.h>

/* The outcome of taking one request from a limit. */
struct ratelimit_result {
    int allowed;          /* 1 when the request may proceed. */
    uint32_t limit;       /* The limit's quota. */
    uint32_t window;      /* The limit's window in seconds. */
    uint32_t remaining;   /* Requests still allowed right now after this one. */
    uint32_t reset;       /* Seconds until the quota is whole again. */
    uint32_t retry_after; /* When refused: seconds until a request would be allowed. */
};

/* Takes one request from a GCRA cell allowing `limit` requests per `window` seconds, at monotonic
 * time now_ns. Writes *out and returns out->allowed. limit must be > 0. */
int ratelimit_gcra_take(_Atomic uint64_t *tat, uint32_t limit, uint32_t window, uint64_t now_ns,
                        struct ratelimit_result *out);

/* Takes one request from a daily cell allowing `limit` requests per UTC day, at Unix time
 * now_unix. Writes *out and returns out->allowed. limit must be > 0. */
int ratelimit_daily_take(_Atomic uint64_t *cell, uint32_t limit, int64_t now_unix,
                         struct ratelimit_result *out);

/* Gives back a request taken with ratelimit_daily_take on the same day. */
void ratelimit_daily_refund(_Atomic uint64_t *cell, int64_t now_unix);

/* Builds a daily cell holding `count` requests on the UTC day of now_unix. */
uint64_t ratelimit_daily_cell(uint32_t count, int64_t now_unix);

#endif
