/* Plans: what live usage costs and how much of it an account may have. The operator defines them
 * in a JSON file (KONNECT_PLANS, by default <data dir>/plans.json; see README.md):
 *
 *   {"currency": "usd", "default_plan": "free",
 *    "plans": [{"name": "free", "requests_per_month": 1000, "tokens_per_month": 200000,
 *               "price_per_request_micros": 0, "price_per_million_input_tokens_micros": 0,
 *               "price_per_million_output_tokens_micros": 0, "requests_per_minute": 60,
 *               "max_concurrent_requests": 4}, ...]}
 *
 * Money is integer micro-units of the currency (1 USD = 1,000,000), never floating point. A quota
 * that is absent or null is unlimited. Without a file, every account is on one built-in plan,
 * "default": unlimited and free. */
#ifndef KN_METERING_PLANS_H
#define KN_METERING_PLANS_H

#include <stddef.h>
#include <stdint.h>

#define PLAN_NAME_MAX 63
#define PLAN_UNLIMITED (-1)
#define PLAN_DEFAULT_CONCURRENCY 16
/* The largest price accepted, per request or per million tokens: 1,000,000 currency units. */
#define PLAN_PRICE_MAX 1000000000000LL

struct plan {
    char name[PLAN_NAME_MAX + 1];
    int64_t requests_per_month;       /* PLAN_UNLIMITED or a limit. */
    int64_t tokens_per_month;         /* Input plus output tokens; PLAN_UNLIMITED or a limit. */
    int64_t price_per_request;        /* Micro-units. */
    int64_t price_per_million_input;  /* Micro-units per 1,000,000 input tokens. */
    int64_t price_per_million_output; /* Micro-units per 1,000,000 output tokens. */
    uint32_t requests_per_minute;     /* Per live key; 0 = unlimited. */
    uint32_t max_concurrent;          /* Requests in flight per live key, at least 1. */
};

struct plans {
    char currency[8]; /* Lower-case ISO 4217 code, "usd" by default. */
    size_t count;
    struct plan *plan;
    size_t default_index;
    int builtin; /* 1 when no file was found and the built-in plan is in use. */
};

/* Reads the plans file at path. When the file does not exist and `required` is 0, returns the
 * built-in plan; otherwise a missing or invalid file is an error. Returns NULL with a message in
 * err on error. */
struct plans *plans_load(const char *path, int required, char *err, size_t errsize);

/* Parses plans from JSON text; for tests and for plans_load. */
struct plans *plans_parse(const char *text, size_t len, char *err, size_t errsize);

void plans_free(struct plans *p);

/* The plan called name, the default plan for "" or NULL, or NULL when there is no such plan. */
const struct plan *plans_find(const struct plans *p, const char *name);

/* The price of one request in micro-units: the per-request price plus the token prices, rounded
 * to the nearest micro-unit (halves up). */
int64_t plan_price(const struct plan *plan, uint32_t input_tokens, uint32_t output_tokens);

#endif
