/* Cluster-wide limits (KONNECT_REDIS_URL): one atomic Redis call per request (limits/konnect.lua),
 * sent from the request's event loop without blocking it, so that every limit holds across all
 * nodes together: a test key's requests per minute and per day; a live account's requests per
 * minute, requests in flight and monthly quotas of requests and tokens, reserved at admission as
 * a lease (the request id) that is settled once billed or released if not, and that lapses,
 * counted as billed, if its node dies. Each month's usage is seeded into Redis from the store by
 * every node's store thread (SET NX), and a live request is refused while it is not (it is
 * money).
 *
 * When Redis cannot be reached or does not answer in time, the caller falls back: a test key's
 * limits to this node's share (the limit divided by the live nodes, rounded up), counted locally;
 * a live request is refused (503 quota_unavailable), unbilled. */
#ifndef KN_LIMITS_CLUSTER_H
#define KN_LIMITS_CLUSTER_H

#include <stdint.h>

#include "limits/quota.h"
#include "limits/ratelimit.h"
#include "limits/redis.h"

/* The event loop's connection (set by each worker thread; NULL without Redis). */
extern __thread struct redis_conn *cluster_conn;

/* What Redis said of a test key's request. */
struct cluster_test_result {
    int refused; /* 0, 1 by the day limit, 2 by the minute limit. */
    struct ratelimit_result minute, day;
};

typedef void (*cluster_test_cb)(void *ud, int ok, const struct cluster_test_result *r);

/* Takes one request from a test key's limits (0 = none). Returns 0 when asked (cb is called
 * later: ok = 0 when Redis failed to answer), -1 when there is no connection (cb is not
 * called). */
int cluster_test_take(const char *key_id, uint32_t rpm, uint32_t rpd, cluster_test_cb cb, void *ud);

enum cluster_admit_outcome {
    CLUSTER_ADMITTED = 0,
    CLUSTER_NOT_SEEDED = 1,
    CLUSTER_RATE = 2,
    CLUSTER_INFLIGHT = 3,
    CLUSTER_REQUESTS_USED_UP = 4,
    CLUSTER_TOKENS_USED_UP = 5,
    CLUSTER_KEY_REQUESTS_USED_UP = 7, /* (6, void, is never reported: not admitted.) */
};

struct cluster_admit_result {
    enum cluster_admit_outcome outcome;
    uint64_t held; /* Tokens reserved. */
    struct ratelimit_result minute;
};

typedef void (*cluster_admit_cb)(void *ud, int ok, const struct cluster_admit_result *r);

/* What a live request asks of its account's limits (0 or -1 as in limits/quota.h for none). */
struct cluster_admit_ask {
    const char *account_id;
    int64_t month;
    uint32_t rpm, max_inflight;
    int64_t quota_requests, quota_tokens; /* PLAN_UNLIMITED (-1) for none. */
    uint64_t want_tokens;
    const char *lease; /* The request id. */
    uint64_t lease_ms; /* Longer than the request may last. */
    /* A live key's line (keyrec.line): the line's id and the key's own monthly quota (0: counted
     * without a limit). NULL: none. */
    const char *line;
    int64_t line_quota;
};

/* Asks Redis to admit a live request. Returns 0 (cb later) or -1 (no connection). */
int cluster_admit(const struct cluster_admit_ask *ask, cluster_admit_cb cb, void *ud);

/* The lease of an admitted request: billed (tokens become usage) or not. Sent without waiting;
 * when Redis cannot take it, the lease lapses and counts as billed. */
void cluster_settle(const char *account_id, int64_t month, const char *lease, uint64_t tokens);
/* line: the key's line id (keyrec.line) when it has one, else NULL; the line's count is given
 * back only if the admission counted in it. */
void cluster_release(const char *account_id, int64_t month, const char *lease, const char *line);
/* Settlements and releases are sent at once, or, while Redis is away, kept (per event loop, up
 * to 1,024) and sent as soon as it is back; a release whose answer is lost is
 * sent again. A release that finds no lease leaves a void fence in Redis, so that an admission
 * still on its way (it timed out here) is refused when it arrives: call cluster_release for every
 * admission that did not answer. cluster_pending: how many wait on this thread. */
size_t cluster_pending(void);
/* How many settlements and releases of every thread of this process are not answered yet
 * (queued, or sent and waiting): a raise of Redis's counts to the ledger's waits for them a
 * moment, since a billed request whose settlement has not arrived would count twice. */
size_t cluster_unsettled(void);
/* Opens this thread's connection (on its event loop): what waits is sent as soon as it is ready,
 * each time it is. */
void cluster_thread_init(h2o_loop_t *loop, const struct redis_target *t, uint32_t timeout_ms);
/* Closes this thread's connection and drops what still waits (saying how much). */
void cluster_thread_dispose(void);

/* The name of the mark that says a month's usage is in Redis (written by the seeding). */
void cluster_seeded_key(int64_t month, char *buf, size_t size);

/* Seeds accounts' billed usage of a month into Redis, on the store thread's connection (SET NX:
 * a count Redis already has is never replaced), pipelined: cluster_seed_account queues one
 * account's commands, cluster_seed_collect reads the answers to the n accounts queued since the
 * last collect (one round trip for all of them). collect returns 0, or -1 when Redis failed or
 * refused one. */
void cluster_seed_account(redisContext *ctx, const char *account_id, int64_t month,
                          uint64_t requests, uint64_t tokens);
int cluster_seed_collect(redisContext *ctx, size_t n);
/* The same for a month already seeded (kn_reconcile): raises an account's counts to the ledger's
 * where Redis has fewer (it lost some), never lowers them. collect also counts, in *raised, the
 * accounts whose counts were raised. */
void cluster_reconcile_account(redisContext *ctx, const char *account_id, int64_t month,
                               uint64_t requests, uint64_t tokens);
int cluster_reconcile_collect(redisContext *ctx, size_t n, size_t *raised);
/* The same for a key line's monthly requests: queues its seeding (reconcile = 0: SET NX) or its
 * raising to what the ledger holds (kn_raise); one answer each, read with cluster_line_collect
 * (which counts the raised ones in *raised). */
void cluster_line(redisContext *ctx, const char *account_id, const char *line, int64_t month,
                  uint64_t requests, int reconcile);
int cluster_line_collect(redisContext *ctx, size_t n, size_t *raised);

#endif
