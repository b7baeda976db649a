/* Plans files, prices in integer micro-units, monthly quotas and calendar months. */
#include <pthread.h>
#include <stdlib.h>

#include "core/base62.h"
#include "core/util.h"
#include "limits/quota.h"
#include "metering/plans.h"
#include "unit.h"

static struct plans *parse(const char *text)
{
    char err[256];
    struct plans *p = plans_parse(text, strlen(text), err, sizeof(err));
    if (p == NULL)
        fprintf(stderr, "(expected or not) %s\n", err);
    return p;
}

static void test_plans(void)
{
    struct plans *p =
        parse("{\"currency\":\"eur\",\"default_plan\":\"pro\",\"plans\":[{\"name\":\"free\","
              "\"requests_per_month\":100},{\"name\":\"pro\",\"tokens_per_month\":null,"
              "\"price_per_request_micros\":100,\"price_per_million_input_tokens_micros\":150000,"
              "\"price_per_million_output_tokens_micros\":600000,\"requests_per_minute\":600,"
              "\"max_concurrent_requests\":4}]}");
    const struct plan *pro, *free_plan;

    CHECK(p != NULL);
    CHECK_STR(p->currency, "eur");
    pro = plans_find(p, "");
    free_plan = plans_find(p, "free");
    CHECK(pro != NULL && strcmp(pro->name, "pro") == 0);
    CHECK(free_plan->requests_per_month == 100 && free_plan->tokens_per_month == PLAN_UNLIMITED);
    CHECK(free_plan->max_concurrent == PLAN_DEFAULT_CONCURRENCY);
    CHECK(pro->requests_per_minute == 600 && pro->max_concurrent == 4);
    CHECK(plans_find(p, "gold") == NULL);
    /* 100 + (1000 * 0.15 + 2000 * 0.6) = 100 + 1350 micro-units. */
    CHECK(plan_price(pro, 1000, 2000) == 1450);
    /* Rounded to the nearest micro-unit, halves up: 3 * 0.15 = 0.45, 4 * 0.15 = 0.6. */
    CHECK(plan_price(pro, 3, 0) == 100);
    CHECK(plan_price(pro, 4, 0) == 101);
    /* No overflow at the extremes. */
    struct plan big = *pro;
    big.price_per_million_input = PLAN_PRICE_MAX;
    CHECK(plan_price(&big, UINT32_MAX, 0) == 100 + (int64_t)UINT32_MAX * 1000000);
    plans_free(p);

    CHECK(parse("") == NULL);
    CHECK(parse("{\"plans\":[]}") == NULL);
    CHECK(parse("{\"plans\":[{\"name\":\"a\"},{\"name\":\"a\"}]}") == NULL);
    CHECK(parse("{\"plans\":[{\"name\":\"a b\"}]}") == NULL);
    CHECK(parse("{\"plans\":[{\"name\":\"a\",\"price_per_request_micros\":1.5}]}") == NULL);
    CHECK(parse("{\"plans\":[{\"name\":\"a\",\"price_per_request_micros\":-1}]}") == NULL);
    CHECK(parse("{\"plans\":[{\"name\":\"a\",\"max_concurrent_requests\":0}]}") == NULL);
    CHECK(parse("{\"plans\":[{\"name\":\"a\",\"typo\":1}]}") == NULL);
    CHECK(parse("{\"plans\":[{\"name\":\"a\"}],\"default_plan\":\"b\"}") == NULL);
    CHECK(parse("{\"plans\":[{\"name\":\"a\"}],\"currency\":\"USD\"}") == NULL);

    char err[256];
    p = plans_load("/nonexistent/plans.json", 0, err, sizeof(err));
    CHECK(p != NULL && p->builtin && plans_find(p, "")->requests_per_month == PLAN_UNLIMITED);
    plans_free(p);
    CHECK(plans_load("/nonexistent/plans.json", 1, err, sizeof(err)) == NULL);
}

static struct acctrec shared;
static _Atomic int admitted;

static void *reserve_many(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++)
        if (quota_reserve(&shared, 24322) == QUOTA_OK)
            atomic_fetch_add(&admitted, 1);
    return NULL;
}

static void test_quota(void)
{
    struct plan plan = {.name = "p", .requests_per_month = 3, .tokens_per_month = 100};
    struct acctrec a;
    uint64_t req, tok;

    memset(&a, 0, sizeof(a));
    quota_configure(&a, &plan, 3, 100);
    quota_load(&a, 100, 1, 0);
    CHECK(quota_reserve(&a, 100) == QUOTA_OK);
    CHECK(quota_reserve(&a, 100) == QUOTA_OK);
    CHECK(quota_reserve(&a, 100) == QUOTA_REQUESTS_USED_UP);
    quota_release(&a, 100);
    CHECK(quota_reserve(&a, 100) == QUOTA_OK);
    quota_add_tokens(&a, 100, 100);
    quota_usage(&a, 100, &req, &tok);
    CHECK(req == 3 && tok == 100);
    /* A new month starts from zero; the old month's late releases do not touch it. */
    quota_configure(&a, &plan, 3, 1000);
    CHECK(quota_reserve(&a, 101) == QUOTA_OK);
    quota_release(&a, 100);
    quota_usage(&a, 101, &req, &tok);
    CHECK(req == 1 && tok == 0);
    quota_configure(&a, &plan, PLAN_UNLIMITED, 5);
    quota_add_tokens(&a, 101, 5);
    CHECK(quota_reserve(&a, 101) == QUOTA_TOKENS_USED_UP);

    /* Exactly the quota under contention. */
    pthread_t t[4];
    memset(&shared, 0, sizeof(shared));
    quota_configure(&shared, &plan, 12345, PLAN_UNLIMITED);
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, reserve_many, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(atomic_load(&admitted) == 12345);
}

static void test_months(void)
{
    char buf[16];
    int64_t m;

    CHECK(kn_month_of(0) == 1970 * 12);
    CHECK(kn_month_of(1795805276) == 2026 * 12 + 10); /* 2026-11-27 */
    CHECK_STR(kn_month_format(2026 * 12 + 10, buf, sizeof(buf)), "2026-11");
    CHECK(kn_month_start(2026 * 12 + 11) == 1796083200); /* 2026-12-01T00:00:00Z */
    CHECK(kn_month_of(1796083200) == 2026 * 12 + 11);
    CHECK(kn_month_of(1796083199) == 2026 * 12 + 10);
    CHECK(kn_month_start(2028 * 12 + 2) - kn_month_start(2028 * 12 + 1) == 29 * 86400);
    CHECK(kn_month_parse("2026-11", &m) == 0 && m == 2026 * 12 + 10);
    CHECK(kn_month_parse("2026-13", &m) == -1);
    CHECK(kn_month_parse("2026-1", &m) == -1);
    CHECK(kn_month_parse("26-11-", &m) == -1);
    CHECK(kn_month_parse("+026-11", &m) == -1);
    for (int64_t mm = 1970 * 12; mm < 2100 * 12; mm++)
        if (kn_month_of(kn_month_start(mm)) != mm || kn_month_of(kn_month_start(mm) - 1) != mm - 1)
            CHECK(!"month boundaries");
}

/* Request ids sort by time (the ledger's key), and stay random after the time. */
static void test_time_ids(void)
{
    char a[29], b[29], c[29];

    base62_time_id(a, "req_", 24, 1795805276000);
    base62_time_id(b, "req_", 24, 1795805276001);
    base62_time_id(c, "req_", 24, 1795805276001);
    CHECK(strlen(a) == 28 && strncmp(a, "req_", 4) == 0);
    CHECK(strcmp(a, b) < 0 && strcmp(a, c) < 0);
    CHECK(memcmp(b, c, 4 + BASE62_TIME_DIGITS) == 0 && strcmp(b, c) != 0);
    for (size_t i = 4; i < 28; i++)
        CHECK(base62_value((unsigned char)a[i]) >= 0);
    /* 62^7 ms reach past the year 2080. */
    base62_time_id(a, "req_", 24, 3500000000000);
    base62_time_id(b, "req_", 24, 3500000000001);
    CHECK(strcmp(a, b) < 0);
}

int main(void)
{
    test_time_ids();
    test_plans();
    test_quota();
    test_months();
    return unit_result();
}
