/* Cluster-wide limits over Redis; see cluster.h. */
#include "limits/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

__thread struct redis_conn *cluster_conn;

/* The keys of an account's limits, in konnect.lua's order. */
struct account_keys {
    char rate[64], requests[80], tokens[80], leases[64], held[64], reserved[64], seeded[48];
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
    cluster_seeded_key(month, k->seeded, sizeof(k->seeded));
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
    char rpm[16], inflight[16], qr[24], qt[24], want[24], ms[24], month[24];
    const char *argv[15] = {k.rate,     k.requests, k.tokens,   k.leases, k.held,
                            k.reserved, k.seeded,   rpm,        inflight, qr,
                            qt,         want,       ask->lease, ms,       month};

    if (cluster_conn == NULL)
        return -1;
    account_keys(ask->account_id, ask->month, &k);
    snprintf(rpm, sizeof(rpm), "%u", ask->rpm);
    snprintf(inflight, sizeof(inflight), "%u", ask->max_inflight);
    snprintf(qr, sizeof(qr), "%lld",
             (long long)(ask->quota_requests < 0 ? -1 : ask->quota_requests));
    snprintf(qt, sizeof(qt), "%lld", (long long)(ask->quota_tokens < 0 ? -1 : ask->quota_tokens));
    snprintf(want, sizeof(want), "%llu", (unsigned long long)ask->want_tokens);
    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)ask->lease_ms);
    snprintf(month, sizeof(month), "%lld", (long long)ask->month);
    struct admit_call *a = kn_calloc(1, sizeof(*a));
    *a = (struct admit_call){cb, ud, ask->rpm};
    if (redis_conn_fcall(cluster_conn, "kn_admit", 7, 15, argv, on_admit, a) != 0) {
        free(a);
        return -1;
    }
    return 0;
}

static void on_done(void *ud, redisReply *r)
{
    (void)ud;
    if (r != NULL && r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "konnect: Redis refused to settle a lease: %s\n", r->str);
}

void cluster_settle(const char *account_id, int64_t month, const char *lease, uint64_t tokens)
{
    struct account_keys k;
    char t[24];
    const char *argv[8] = {k.tokens, k.leases, k.held, k.reserved, k.requests, k.seeded, lease, t};

    if (cluster_conn == NULL)
        return;
    account_keys(account_id, month, &k);
    snprintf(t, sizeof(t), "%llu", (unsigned long long)tokens);
    redis_conn_fcall(cluster_conn, "kn_settle", 6, 8, argv, on_done, NULL);
}

void cluster_release(const char *account_id, int64_t month, const char *lease)
{
    struct account_keys k;
    const char *argv[5] = {k.requests, k.leases, k.held, k.reserved, lease};

    if (cluster_conn == NULL)
        return;
    account_keys(account_id, month, &k);
    redis_conn_fcall(cluster_conn, "kn_release", 4, 5, argv, on_done, NULL);
}

int cluster_seed_account(redisContext *ctx, const char *account_id, int64_t month,
                         uint64_t requests, uint64_t tokens)
{
    struct account_keys k;
    redisReply *r;
    int ok = 1;

    account_keys(account_id, month, &k);
    /* Pipelined: two commands, one round trip. */
    redisAppendCommand(ctx, "SET %s %llu NX PX %lld", k.requests, (unsigned long long)requests,
                       40LL * 86400000);
    redisAppendCommand(ctx, "SET %s %llu NX PX %lld", k.tokens, (unsigned long long)tokens,
                       40LL * 86400000);
    for (int i = 0; i < 2; i++) {
        if (redisGetReply(ctx, (void **)&r) != REDIS_OK || r == NULL) {
            return -1;
        }
        ok &= r->type != REDIS_REPLY_ERROR;
        freeReplyObject(r);
    }
    return ok ? 0 : -1;
}
