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
    uint64_t held;
    (void)arg;
    for (int i = 0; i < 10000; i++)
        if (quota_reserve(&shared, 24322, 0, &held) == QUOTA_OK)
            atomic_fetch_add(&admitted, 1);
    return NULL;
}

static struct acctrec tokens_shared;
static _Atomic uint64_t tokens_billed;

/* Requests of 100 tokens each against a quota of 10,000: reserve, then bill what they used. */
static void *spend_tokens(void *arg)
{
    uint64_t held;
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        if (quota_reserve(&tokens_shared, 24322, 100, &held) != QUOTA_OK)
            continue;
        quota_settle(&tokens_shared, 24322, held, 100);
        atomic_fetch_add(&tokens_billed, 100);
    }
    return NULL;
}

/* Requests that each bill exactly what they held, racing at the edge of a token quota that the
 * test raises 300 tokens at a time once it is used up. Hostile case: a hold checked against a
 * billed figure that a settle moved on meanwhile would take the tokens past the quota (with the
 * check before the fix, 1 to 4 edges in 5 s on 2 cores overran; 8 threads make the preemption
 * in that window common enough). */
static struct acctrec edge;
static _Atomic int edge_stop;

static void *fill_edge(void *arg)
{
    uint64_t held;
    (void)arg;
    while (!atomic_load(&edge_stop))
        if (quota_reserve(&edge, 7, 100, &held) == QUOTA_OK)
            quota_settle(&edge, 7, held, held);
    return NULL;
}

static void test_quota_edge(void)
{
    struct plan plan = {.name = "p"};
    pthread_t t[8];
    uint64_t req, tok, over = 0, rounds = 0;
    int64_t cap = 0;
    uint64_t deadline = kn_mono_ns() + 3000 * UINT64_C(1000000);

    memset(&edge, 0, sizeof(edge));
    quota_configure(&edge, &plan, PLAN_UNLIMITED, 0);
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, fill_edge, NULL);
    while (rounds < 2000000 && kn_mono_ns() < deadline) {
        cap += 300;
        quota_configure(&edge, &plan, PLAN_UNLIMITED, cap);
        do
            quota_usage(&edge, 7, &req, &tok);
        while (tok < (uint64_t)cap);
        if (tok > (uint64_t)cap)
            over++;
        cap = (int64_t)tok; /* Go on from what was billed, so that one overrun counts once. */
        rounds++;
    }
    atomic_store(&edge_stop, 1);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    quota_usage(&edge, 7, &req, &tok);
    if (over != 0)
        fprintf(stderr, "%llu of %llu quota edges overrun\n", (unsigned long long)over,
                (unsigned long long)rounds);
    CHECK(over == 0 && rounds > 100);
    CHECK(tok == (uint64_t)cap && atomic_load(&edge.tokens_reserved) == 0);
}

/* An account record starting again from nothing in `month`, under these limits. */
static void fresh_account(struct acctrec *a, const struct plan *plan, int64_t requests,
                          int64_t tokens, int64_t month)
{
    memset(a, 0, sizeof(*a));
    quota_configure(a, plan, requests, tokens);
    quota_load(a, month, 0, 0);
}

/* Reserves a request of `month` without tokens. */
static enum quota_outcome admit(struct acctrec *a, int64_t month)
{
    uint64_t held;
    return quota_reserve(a, month, 0, &held);
}

static void test_quota(void)
{
    struct plan plan = {.name = "p", .requests_per_month = 3, .tokens_per_month = 100};
    struct acctrec a;
    uint64_t req, tok, held, h2;

    memset(&a, 0, sizeof(a));
    quota_configure(&a, &plan, 3, 100);
    quota_load(&a, 100, 1, 0);
    CHECK(quota_reserve(&a, 100, 10, &held) == QUOTA_OK && held == 10);
    CHECK(quota_reserve(&a, 100, 10, &h2) == QUOTA_OK && h2 == 10);
    CHECK(quota_reserve(&a, 100, 10, &held) == QUOTA_REQUESTS_USED_UP && held == 0);
    CHECK(atomic_load(&a.tokens_reserved) == 20);
    quota_release(&a, 100, 10);
    CHECK(quota_reserve(&a, 100, 1000, &held) == QUOTA_OK && held == 90); /* what is left */
    quota_settle(&a, 100, held, 100);
    quota_settle(&a, 100, h2, 0);
    quota_usage(&a, 100, &req, &tok);
    CHECK(req == 3 && tok == 100 && atomic_load(&a.tokens_reserved) == 0);
    /* A new month starts from the requests that still hold one of the old month's (their rows
     * bill them in the new one); one of them released unbilled gives it back there. */
    quota_configure(&a, &plan, 4, 1000);
    CHECK(admit(&a, 100) == QUOTA_OK); /* Still running when the month ends. */
    CHECK(admit(&a, 101) == QUOTA_OK);
    quota_usage(&a, 101, &req, &tok);
    CHECK(req == 2 && tok == 0);
    quota_release(&a, 100, 0);
    quota_usage(&a, 101, &req, &tok);
    CHECK(req == 1 && tok == 0);
    quota_configure(&a, &plan, PLAN_UNLIMITED, 5);
    quota_settle(&a, 101, 0, 5);
    CHECK(quota_reserve(&a, 101, 1, &held) == QUOTA_TOKENS_USED_UP);
    /* Requests in flight hold their share: the quota is full while they run. */
    quota_configure(&a, &plan, PLAN_UNLIMITED, 20);
    CHECK(quota_reserve(&a, 101, 10, &held) == QUOTA_OK && held == 10);
    CHECK(quota_reserve(&a, 101, 10, &h2) == QUOTA_OK && h2 == 5);
    CHECK(quota_reserve(&a, 101, 10, &tok) == QUOTA_TOKENS_USED_UP);
    quota_release(&a, 101, held);
    CHECK(quota_reserve(&a, 101, 10, &held) == QUOTA_OK && held == 10);

    /* A request that read the clock just before a month began, reaching the cells after
     * another one moved them into the new month, counts in the new month: it does not start
     * the new month's count again. */
    fresh_account(&a, &plan, 5, 1000, 200);
    for (int i = 0; i < 3; i++)
        CHECK(admit(&a, 201) == QUOTA_OK);
    quota_settle(&a, 201, 0, 900);
    CHECK(quota_reserve(&a, 200, 200, &held) == QUOTA_OK && held == 100); /* 900 billed */
    quota_usage(&a, 201, &req, &tok);
    CHECK(req == 4 && tok == 900);
    CHECK(admit(&a, 201) == QUOTA_TOKENS_USED_UP); /* 900 + 100 held */
    quota_release(&a, 200, 100);                   /* Given back where it was counted. */
    CHECK(admit(&a, 201) == QUOTA_OK);
    CHECK(admit(&a, 201) == QUOTA_OK);
    CHECK(admit(&a, 201) == QUOTA_REQUESTS_USED_UP);
    CHECK(admit(&a, 200) == QUOTA_REQUESTS_USED_UP);
    /* Requests still running when a month begins count in the new month's quota, whose ledger
     * rows bill them (dated when they end): a quota of 4 bills 4 in the new month. */
    fresh_account(&a, &plan, 4, PLAN_UNLIMITED, 300);
    CHECK(admit(&a, 300) == QUOTA_OK);
    CHECK(admit(&a, 300) == QUOTA_OK);
    CHECK(admit(&a, 301) == QUOTA_OK); /* The new month's first. */
    quota_usage(&a, 301, &req, &tok);
    CHECK(req == 3);
    quota_settle(&a, 301, 0, 7); /* The first of the old month's, billed in the new one. */
    quota_usage(&a, 301, &req, &tok);
    CHECK(req == 3 && tok == 7);
    quota_release(&a, 300, 0); /* The second, not billed: given back in the new month. */
    CHECK(admit(&a, 301) == QUOTA_OK);
    CHECK(admit(&a, 301) == QUOTA_OK);
    CHECK(admit(&a, 301) == QUOTA_REQUESTS_USED_UP);
    quota_usage(&a, 301, &req, &tok);
    CHECK(req == 4);
    /* A request of the old month that failed and was given back only after the new month's
     * first request: that one counted it, so it is given back there, and no more than that. */
    fresh_account(&a, &plan, 2, PLAN_UNLIMITED, 500);
    CHECK(admit(&a, 500) == QUOTA_OK); /* X */
    CHECK(admit(&a, 501) == QUOTA_OK); /* Y, the new month's first */
    quota_release(&a, 500, 0);         /* X's quota back */
    CHECK(admit(&a, 501) == QUOTA_OK);
    CHECK(admit(&a, 501) == QUOTA_REQUESTS_USED_UP);
    /* Billed in a month nobody was admitted in yet: the cell moves there, counting it and the
     * others that hold a request. */
    fresh_account(&a, &plan, 2, PLAN_UNLIMITED, 400);
    CHECK(admit(&a, 400) == QUOTA_OK);
    CHECK(admit(&a, 400) == QUOTA_OK);
    quota_settle(&a, 401, 0, 3);
    quota_usage(&a, 401, &req, &tok);
    CHECK(req == 2 && tok == 3);
    CHECK(admit(&a, 401) == QUOTA_REQUESTS_USED_UP);
    /* Billed once the new month began, in its ledger row's month (the new one), or in the
     * cells' when they are further on: never dropped from the month that counts it. */
    fresh_account(&a, &plan, PLAN_UNLIMITED, 1000, 200);
    CHECK(quota_reserve(&a, 200, 300, &held) == QUOTA_OK && held == 300);
    CHECK(quota_reserve(&a, 200, 300, &h2) == QUOTA_OK && h2 == 300);
    quota_settle(&a, 201, held, 250); /* Began in 200, billed in 201. */
    quota_usage(&a, 201, &req, &tok);
    CHECK(tok == 250);
    quota_settle(&a, 200, h2, 350); /* The cells are in 201 already. */
    quota_usage(&a, 201, &req, &tok);
    CHECK(tok == 600 && atomic_load(&a.tokens_reserved) == 0);
    CHECK(quota_reserve(&a, 201, 500, &held) == QUOTA_OK && held == 400);
    struct keyquota kq = {0};
    keyquota_raise(&kq, 201, 2);
    CHECK(keyquota_take(&kq, 200, 3) && keyquota_used(&kq, 201) == 3);
    CHECK(!keyquota_take(&kq, 200, 3) && !keyquota_take(&kq, 201, 3));

    /* Exactly the quota under contention. */
    pthread_t t[4];
    memset(&shared, 0, sizeof(shared));
    quota_configure(&shared, &plan, 12345, PLAN_UNLIMITED);
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, reserve_many, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(atomic_load(&admitted) == 12345);
    /* Requests that use what they reserve never take the tokens past the quota. */
    memset(&tokens_shared, 0, sizeof(tokens_shared));
    quota_configure(&tokens_shared, &plan, PLAN_UNLIMITED, 10000);
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, spend_tokens, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(atomic_load(&tokens_billed) == 10000);
    quota_usage(&tokens_shared, 24322, &req, &tok);
    CHECK(tok == 10000 && atomic_load(&tokens_shared.tokens_reserved) == 0);
}

/* The model catalogue: which models each plan may use, at which prices, under which names. */
static void test_catalogue(void)
{
    struct plans *p =
        parse("{\"default_model\":\"small\",\"models\":["
              "{\"name\":\"small\",\"backend_model\":\"llama3.2:1b\","
              "\"price_per_million_output_tokens_micros\":400000},"
              "{\"name\":\"large\",\"price_per_request_micros\":50}],"
              "\"plans\":[{\"name\":\"free\",\"models\":[\"small\"],"
              "\"price_per_million_input_tokens_micros\":7},"
              "{\"name\":\"pro\",\"allowed_parameters\":[\"n\",\"store\"]},"
              "{\"name\":\"vip\",\"models\":{\"large\":{\"price_per_request_micros\":1}}}]}");
    struct plan_model m;

    CHECK(p != NULL && p->has_catalogue && strcmp(p->default_model, "small") == 0);
    const struct plan *fr = plans_find(p, "free"), *pro = plans_find(p, "pro"),
                      *vip = plans_find(p, "vip");
    CHECK(plans_model(p, fr, "small", 5, &m) == 0 && strcmp(m.backend, "llama3.2:1b") == 0);
    /* The model's own price first, the plan's for what the model does not set. */
    CHECK(m.price_per_million_output == 400000 && m.price_per_million_input == 7);
    CHECK(plans_model(p, fr, "large", 5, &m) == -1);
    CHECK(plans_model(p, fr, "other", 5, &m) == -1);
    CHECK(plans_model(p, pro, "large", 5, &m) == 0 && m.price_per_request == 50 &&
          strcmp(m.backend, "large") == 0);
    CHECK(pro->nmodels == 2 && pro->allowed_params == (PLAN_PARAM_N | PLAN_PARAM_STORE));
    CHECK(plans_model(p, vip, "large", 5, &m) == 0 && m.price_per_request == 1);
    CHECK(plan_model_price(&m, 0, 0) == 1);
    CHECK(plans_model(p, vip, "small", 5, &m) == -1);
    plans_free(p);
    /* Without a catalogue every name is a model at the plan's prices. */
    p = parse("{\"plans\":[{\"name\":\"a\",\"price_per_request_micros\":3}]}");
    CHECK(plans_model(p, plans_find(p, NULL), "anything", 8, &m) == 0 &&
          strcmp(m.backend, "anything") == 0 && m.price_per_request == 3);
    plans_free(p);
    /* Mistakes are refused with a reason. */
    CHECK(parse("{\"plans\":[{\"name\":\"a\",\"models\":[\"x\"]}]}") == NULL);
    CHECK(
        parse("{\"models\":[{\"name\":\"x\"}],\"plans\":[{\"name\":\"a\",\"models\":[\"y\"]}]}") ==
        NULL);
    CHECK(parse("{\"models\":[{\"name\":\"x\"},{\"name\":\"x\"}],\"plans\":[{\"name\":\"a\"}]}") ==
          NULL);
    CHECK(parse("{\"models\":[{\"name\":\"x\",\"backends\":[]}],\"plans\":[{\"name\":\"a\"}]}") ==
          NULL);
    CHECK(parse("{\"models\":[{\"name\":\"x y\"}],\"plans\":[{\"name\":\"a\"}]}") == NULL);
    CHECK(parse("{\"default_model\":\"z\",\"models\":[{\"name\":\"x\"}],\"plans\":[{\"name\":\"a\"}"
                "]}") == NULL);
    CHECK(parse("{\"plans\":[{\"name\":\"a\",\"allowed_parameters\":[\"temperature\"]}]}") == NULL);
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
    test_quota_edge();
    test_catalogue();
    test_months();
    return unit_result();
}
