/* Cluster-wide limits over Redis; see cluster.h. */
#include "limits/cluster.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

__thread struct redis_conn *cluster_conn;

/* Settlements and releases that could not be sent (Redis away), sent once it is back, before
 * anything else; and releases whose answer was lost, sent again. Per thread, like the
 * connection. */
struct pending_op {
    char account_id[40];
    char lease[80];
    char line[40]; /* A release's key line, or "". */
    int64_t month;
    uint64_t tokens;
    int settle;
    int waited; /* Kept while Redis was away (kn_settle counts it only if still leased). */
};
enum { PENDING_MAX = 1024 };
struct pending_queue {
    struct pending_op ops[PENDING_MAX];
    size_t head, count, dropped;
};
static __thread struct pending_queue *pending; /* Made at the first op that waits. */
/* Settlements and releases of every thread not answered yet: queued or on their way. */
static _Atomic size_t unsettled;

static void pend(const struct pending_op *p);
static void flush_pending(void);

/* The keys of an account's limits, in konnect.lua's order. */
struct account_keys {
    char rate[64], requests[80], tokens[80], leases[64], held[64], reserved[64], seeded[48],
        voids[64], lapsed[64];
};

static void account_keys(const char *account_id, int64_t month, struct account_keys *k)
{
    snprintf(k->rate, sizeof(k->rate), "kn:{a:%.32s}:rate", account_id);
    snprintf(k->requests, sizeof(k->requests), "kn:{a:%.32s}:m:%lld:req", account_id,
             (long long)month);
    snprintf(k->tokens, sizeof(k->tokens), "kn:{a:%.32s}:m:%lld:tok", account_id, (long long)month);
    snprintf(k->leases, sizeof(k->leases), "kn:{a:%.32s}:leases", account_id);
    snprintf(k->held, sizeof(k->held), "kn:{a:%.32s}:held", account_id);
    snprintf(k->reserved, sizeof(k->reserved), "kn:{a:%.32s}:reserved", account_id);
    snprintf(k->voids, sizeof(k->voids), "kn:{a:%.32s}:voids", account_id);
    snprintf(k->lapsed, sizeof(k->lapsed), "kn:{a:%.32s}:lapses", account_id);
    cluster_seeded_key(month, k->seeded, sizeof(k->seeded));
}

static void line_key(const char *account_id, const char *line, int64_t month, char *buf,
                     size_t size)
{
    snprintf(buf, size, "kn:{a:%.32s}:m:%lld:line:%.32s", account_id, (long long)month, line);
}

void cluster_seeded_key(int64_t month, char *buf, size_t size)
{
    snprintf(buf, size, "kn:seeded:%lld", (long long)month);
}

static int64_t element(const redisReply *r, size_t i)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || i >= r->elements)
        return 0;
    return r->element[i]->type == REDIS_REPLY_INTEGER ? r->element[i]->integer : 0;
}

static uint32_t seconds_of_ms(int64_t ms)
{
    return ms <= 0 ? 0 : (uint32_t)((ms + 999) / 1000);
}

/* An answer is an array of integers of at least n elements. */
static int well_formed(const redisReply *r, size_t n)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (r->element[i]->type != REDIS_REPLY_INTEGER)
            return 0;
    return 1;
}

struct test_call {
    cluster_test_cb cb;
    void *ud;
    uint32_t rpm, rpd;
};

static void on_test(void *ud, redisReply *r)
{
    struct test_call *t = ud;
    struct cluster_test_result res;
    int ok = well_formed(r, 6);

    memset(&res, 0, sizeof(res));
    if (ok) {
        res.refused = (int)element(r, 0);
        res.minute = (struct ratelimit_result){.allowed = res.refused != 2,
                                               .limit = t->rpm,
                                               .window = 60,
                                               .remaining = (uint32_t)element(r, 1),
                                               .reset = seconds_of_ms(element(r, 2)),
                                               .retry_after = seconds_of_ms(element(r, 3))};
        if (res.refused == 2 && res.minute.retry_after == 0)
            res.minute.retry_after = 1;
        uint32_t day_reset = seconds_of_ms(element(r, 5));
        res.day = (struct ratelimit_result){.allowed = res.refused != 1,
                                            .limit = t->rpd,
                                            .window = 86400,
                                            .remaining = (uint32_t)element(r, 4),
                                            .reset = day_reset,
                                            .retry_after = res.refused == 1 ? day_reset : 0};
    } else if (r != NULL) {
        fprintf(stderr, "konnect: Redis answered kn_test with %s\n",
                r->type == REDIS_REPLY_ERROR ? r->str : "something else");
    }
    t->cb(t->ud, ok, &res);
    free(t);
}

int cluster_test_take(const char *key_id, uint32_t rpm, uint32_t rpd, cluster_test_cb cb, void *ud)
{
    char rate[64], day[64], m[16], d[16];
    const char *argv[4] = {rate, day, m, d};

    if (cluster_conn == NULL)
        return -1;
    snprintf(rate, sizeof(rate), "kn:{k:%.32s}:rate", key_id);
    snprintf(day, sizeof(day), "kn:{k:%.32s}:day:", key_id);
    snprintf(m, sizeof(m), "%u", rpm);
    snprintf(d, sizeof(d), "%u", rpd);
    struct test_call *t = kn_calloc(1, sizeof(*t));
    *t = (struct test_call){cb, ud, rpm, rpd};
    if (redis_conn_fcall(cluster_conn, "kn_test", 2, 4, argv, on_test, t) != 0) {
        free(t);
        return -1;
    }
    return 0;
}

struct admit_call {
    cluster_admit_cb cb;
    void *ud;
    uint32_t rpm;
};

static void on_admit(void *ud, redisReply *r)
{
    struct admit_call *a = ud;
    struct cluster_admit_result res;
    int ok = well_formed(r, 5);

    memset(&res, 0, sizeof(res));
    /* Void (released before it arrived) or an outcome this build does not know: not admitted. */
    if (ok && (element(r, 0) < CLUSTER_ADMITTED || element(r, 0) > CLUSTER_KEY_REQUESTS_USED_UP ||
               element(r, 0) == 6))
        ok = 0;
    if (ok) {
        res.outcome = (enum cluster_admit_outcome)element(r, 0);
        res.held = (uint64_t)element(r, 1);
        res.minute = (struct ratelimit_result){.allowed = res.outcome != CLUSTER_RATE,
                                               .limit = a->rpm,
                                               .window = 60,
                                               .remaining = (uint32_t)element(r, 2),
                                               .reset = seconds_of_ms(element(r, 3)),
                                               .retry_after = seconds_of_ms(element(r, 4))};
        if (res.outcome == CLUSTER_RATE && res.minute.retry_after == 0)
            res.minute.retry_after = 1;
    } else if (r != NULL) {
        fprintf(stderr, "konnect: Redis answered kn_admit with %s\n",
                r->type == REDIS_REPLY_ERROR ? r->str : "something else");
    }
    a->cb(a->ud, ok, &res);
    free(a);
}

int cluster_admit(const struct cluster_admit_ask *ask, cluster_admit_cb cb, void *ud)
{
    struct account_keys k;
    char rpm[16], inflight[16], qr[24], qt[24], want[24], ms[24], month[24], line[128], lq[24];
    const char *argv[19] = {k.rate,  k.requests, k.tokens, k.leases, k.held,   k.reserved, k.seeded,
                            k.voids, k.lapsed,   line,     rpm,      inflight, qr,         qt,
                            want,    ask->lease, ms,       month,    lq};
    int nkeys = ask->line != NULL ? 10 : 9;

    /* Until Redis's counts are known good for its current run, nothing is spent on them. */
    if (cluster_conn == NULL || !redis_conn_counts_ok(cluster_conn))
        return -1;
    flush_pending();
    account_keys(ask->account_id, ask->month, &k);
    snprintf(rpm, sizeof(rpm), "%u", ask->rpm);
    snprintf(inflight, sizeof(inflight), "%u", ask->max_inflight);
    snprintf(qr, sizeof(qr), "%lld",
             (long long)(ask->quota_requests < 0 ? -1 : ask->quota_requests));
    snprintf(qt, sizeof(qt), "%lld", (long long)(ask->quota_tokens < 0 ? -1 : ask->quota_tokens));
    snprintf(want, sizeof(want), "%llu", (unsigned long long)ask->want_tokens);
    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)ask->lease_ms);
    snprintf(month, sizeof(month), "%lld", (long long)ask->month);
    if (ask->line != NULL) {
        line_key(ask->account_id, ask->line, ask->month, line, sizeof(line));
        snprintf(lq, sizeof(lq), "%lld", (long long)(ask->line_quota > 0 ? ask->line_quota : 0));
    } else {
        /* Nine keys: the line's place is the first argument's. */
        memmove(argv + 9, argv + 10, 8 * sizeof(argv[0]));
    }
    struct admit_call *a = kn_calloc(1, sizeof(*a));
    *a = (struct admit_call){cb, ud, ask->rpm};
    if (redis_conn_fcall(cluster_conn, "kn_admit", nkeys, ask->line != NULL ? 19 : 17, argv,
                         on_admit, a) != 0) {
        free(a);
        return -1;
    }
    return 0;
}

static void on_settled(void *ud, redisReply *r)
{
    (void)ud;
    /* No answer (the connection was cut): the settlement may have been applied, so it is not
     * sent again (tokens would count twice); if it was not, the lease lapses as billed. */
    if (r != NULL && r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "konnect: Redis refused to settle a lease: %s\n", r->str);
    atomic_fetch_sub(&unsettled, 1);
}

static int send_settle(const struct pending_op *p)
{
    struct account_keys k;
    char t[24], month[24];
    const char *argv[11] = {k.tokens, k.leases, k.held,   k.reserved, k.requests,
                            k.seeded, k.lapsed, p->lease, t,          p->waited ? "1" : "0",
                            month};

    account_keys(p->account_id, p->month, &k);
    snprintf(t, sizeof(t), "%llu", (unsigned long long)p->tokens);
    snprintf(month, sizeof(month), "%lld", (long long)p->month);
    return redis_conn_fcall(cluster_conn, "kn_settle", 7, 11, argv, on_settled, NULL);
}

static void on_released(void *ud, redisReply *r)
{
    struct pending_op *p = ud;
    if (r == NULL) {
        pend(p); /* Cut before the answer: a release is safe to send again. */
    } else {
        if (r->type == REDIS_REPLY_ERROR)
            fprintf(stderr, "konnect: Redis refused to release a lease: %s\n", r->str);
        atomic_fetch_sub(&unsettled, 1);
    }
    free(p);
}

static int send_release(const struct pending_op *p)
{
    struct account_keys k;
    char month[24], line[128];
    const char *argv[10] = {k.requests, k.leases, k.held, k.reserved, k.voids,
                            k.tokens,   k.lapsed, line,   p->lease,   month};
    int nkeys = p->line[0] != '\0' ? 8 : 7;

    account_keys(p->account_id, p->month, &k);
    snprintf(month, sizeof(month), "%lld", (long long)p->month);
    if (nkeys == 8)
        line_key(p->account_id, p->line, p->month, line, sizeof(line));
    else
        memmove(argv + 7, argv + 8, 2 * sizeof(argv[0]));
    struct pending_op *copy = kn_calloc(1, sizeof(*copy));
    *copy = *p;
    if (redis_conn_fcall(cluster_conn, "kn_release", nkeys, nkeys + 2, argv, on_released, copy) !=
        0) {
        free(copy);
        return -1;
    }
    return 0;
}

static int send_op(const struct pending_op *p)
{
    if (cluster_conn == NULL || !redis_conn_ready(cluster_conn))
        return -1;
    return p->settle ? send_settle(p) : send_release(p);
}

static void pend(const struct pending_op *p)
{
    struct pending_queue *q = pending;
    if (q == NULL)
        q = pending = kn_calloc(1, sizeof(*q));
    if (q->count == PENDING_MAX) {
        /* Full (Redis away for long): the oldest is dropped; its lease lapses as billed. */
        q->head = (q->head + 1) % PENDING_MAX;
        q->count--;
        q->dropped++;
        atomic_fetch_sub(&unsettled, 1);
    }
    struct pending_op *slot = &q->ops[(q->head + q->count++) % PENDING_MAX];
    *slot = *p;
    slot->waited = 1;
}

static void flush_pending(void)
{
    struct pending_queue *q = pending;
    while (q != NULL && q->count > 0 && cluster_conn != NULL && redis_conn_ready(cluster_conn)) {
        struct pending_op p = q->ops[q->head];
        q->head = (q->head + 1) % PENDING_MAX;
        q->count--;
        if (send_op(&p) != 0) {
            pend(&p);
            return;
        }
    }
}

void cluster_thread_init(h2o_loop_t *loop, const struct redis_target *t, uint32_t timeout_ms)
{
    cluster_conn = redis_conn_new(loop, t, timeout_ms);
    redis_conn_on_ready(cluster_conn, flush_pending);
}

void cluster_thread_dispose(void)
{
    redis_conn_free(cluster_conn); /* Calls back with no answer: releases wait in the queue. */
    cluster_conn = NULL;
    if (pending != NULL) {
        if (pending->count + pending->dropped > 0)
            fprintf(stderr,
                    "konnect: %zu lease settlements or releases were never sent to Redis; their "
                    "leases count against their accounts' quotas until they lapse (bills are in "
                    "the ledger either way)\n",
                    pending->count + pending->dropped);
        atomic_fetch_sub(&unsettled, pending->count);
        free(pending);
        pending = NULL;
    }
}

size_t cluster_pending(void)
{
    return pending != NULL ? pending->count : 0;
}

size_t cluster_unsettled(void)
{
    return atomic_load(&unsettled);
}

static void settle_or_release(const char *account_id, int64_t month, const char *lease,
                              const char *line, uint64_t tokens, int settle)
{
    struct pending_op p = {.month = month, .tokens = tokens, .settle = settle};

    if (cluster_conn == NULL)
        return;
    atomic_fetch_add(&unsettled, 1);
    snprintf(p.account_id, sizeof(p.account_id), "%s", account_id);
    snprintf(p.lease, sizeof(p.lease), "%s", lease);
    snprintf(p.line, sizeof(p.line), "%s", line != NULL ? line : "");
    flush_pending();
    if (send_op(&p) != 0)
        pend(&p);
}

void cluster_settle(const char *account_id, int64_t month, const char *lease, uint64_t tokens)
{
    settle_or_release(account_id, month, lease, NULL, tokens, 1);
}

void cluster_release(const char *account_id, int64_t month, const char *lease, const char *line)
{
    settle_or_release(account_id, month, lease, line, 0, 0);
}

void cluster_seed_account(redisContext *ctx, const char *account_id, int64_t month,
                          uint64_t requests, uint64_t tokens)
{
    struct account_keys k;

    account_keys(account_id, month, &k);
    redisAppendCommand(ctx, "SET %s %llu NX PX %lld", k.requests, (unsigned long long)requests,
                       40LL * 86400000);
    redisAppendCommand(ctx, "SET %s %llu NX PX %lld", k.tokens, (unsigned long long)tokens,
                       40LL * 86400000);
}

/* Reads n answers; every one, even after a refusal, so that none is left for the next command.
 * Counts in *ones the answers that are the integer 1. */
static int collect(redisContext *ctx, size_t n, size_t *ones)
{
    redisReply *r;
    int ok = 1;

    for (size_t i = 0; i < n; i++) {
        if (redisGetReply(ctx, (void **)&r) != REDIS_OK || r == NULL)
            return -1;
        ok &= r->type != REDIS_REPLY_ERROR;
        *ones += r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        freeReplyObject(r);
    }
    return ok ? 0 : -1;
}

int cluster_seed_collect(redisContext *ctx, size_t n)
{
    size_t ones = 0;
    return collect(ctx, 2 * n, &ones);
}

void cluster_reconcile_account(redisContext *ctx, const char *account_id, int64_t month,
                               uint64_t requests, uint64_t tokens)
{
    struct account_keys k;

    account_keys(account_id, month, &k);
    redisAppendCommand(ctx, "FCALL kn_reconcile 4 %s %s %s %s %llu %llu", k.requests, k.tokens,
                       k.leases, k.seeded, (unsigned long long)requests,
                       (unsigned long long)tokens);
}

int cluster_reconcile_collect(redisContext *ctx, size_t n, size_t *raised)
{
    return collect(ctx, n, raised);
}

void cluster_line(redisContext *ctx, const char *account_id, const char *line, int64_t month,
                  uint64_t requests, int reconcile)
{
    struct account_keys k;
    char key[128];

    account_keys(account_id, month, &k);
    line_key(account_id, line, month, key, sizeof(key));
    if (reconcile)
        redisAppendCommand(ctx, "FCALL kn_raise 2 %s %s %llu %lld", key, k.held,
                           (unsigned long long)requests, (long long)month);
    else
        redisAppendCommand(ctx, "SET %s %llu NX PX %lld", key, (unsigned long long)requests,
                           40LL * 86400000);
}

int cluster_line_collect(redisContext *ctx, size_t n, size_t *raised)
{
    return collect(ctx, n, raised);
}
