/* Usage reports, invoices, their CSV and text renderings and money formatting, on a real SQLite
 * file store with ledger rows written by store_ledger_add. */
#include <sodium.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/util.h"
#include "metering/plans.h"
#include "metering/report.h"
#include "store/store.h"
#include "unit.h"

#define NOV_2026 (2026 * 12 + 10)
#define DAY 86400

static int64_t ledger_total; /* Sum of every price written, to compare invoices with. */
static int seq;

static void add_key(struct store *s, const char *account_id, const char *id, const char *name,
                    const char *mode, const char *env, int64_t created)
{
    struct store_key k;

    memset(&k, 0, sizeof(k));
    kn_strlcpy(k.id, id, sizeof(k.id));
    kn_strlcpy(k.account_id, account_id, sizeof(k.account_id));
    kn_strlcpy(k.name, name, sizeof(k.name));
    kn_strlcpy(k.mode, mode, sizeof(k.mode));
    kn_strlcpy(k.environment, env, sizeof(k.environment));
    randombytes_buf(k.hash, sizeof(k.hash));
    kn_strlcpy(k.hint,
               "sk_live_\xe2\x80\xa6"
               "abcd",
               sizeof(k.hint));
    kn_strlcpy(k.created_by, "cli", sizeof(k.created_by));
    k.created_at = created;
    CHECK(store_key_insert(s, &k, 1, NULL) == STORE_OK);
}

/* Bills one request at Unix time t. */
static void bill(struct store *s, const char *account_id, const char *key_id, const char *env,
                 const char *model, uint32_t in, uint32_t out, int64_t price, int64_t t)
{
    struct store_ledger_row r;
    uint8_t outcome = 0;

    memset(&r, 0, sizeof(r));
    snprintf(r.request_id, sizeof(r.request_id), "req_test%06d", ++seq);
    kn_strlcpy(r.account_id, account_id, sizeof(r.account_id));
    kn_strlcpy(r.key_id, key_id, sizeof(r.key_id));
    kn_strlcpy(r.environment, env, sizeof(r.environment));
    kn_strlcpy(r.model, model, sizeof(r.model));
    kn_strlcpy(r.currency, "usd", sizeof(r.currency));
    kn_strlcpy(r.plan, "pro", sizeof(r.plan));
    r.input_tokens = in;
    r.output_tokens = out;
    r.price_micros = price;
    r.at_ms = t * 1000 + 123;
    CHECK(store_ledger_add(s, &r, 1, &outcome) == STORE_OK && outcome == STORE_LEDGER_ADDED);
    /* A retried batch bills nothing twice. */
    CHECK(store_ledger_add(s, &r, 1, &outcome) == STORE_OK &&
          outcome == STORE_LEDGER_BILLED_BEFORE);
    ledger_total += price;
}

static json_t *find_by(json_t *arr, const char *member, const char *value)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, member)), value) == 0)
            return o;
    }
    return NULL;
}

static long long num(json_t *o, const char *member)
{
    return json_integer_value(json_object_get(o, member));
}

static void test_money(void)
{
    char b[REPORT_MONEY_SIZE];

    CHECK_STR(report_money(0, "usd", b, sizeof(b)), "$0.000000");
    CHECK_STR(report_money(12345678, "usd", b, sizeof(b)), "$12.345678");
    CHECK_STR(report_money(1, "usd", b, sizeof(b)), "$0.000001");
    CHECK_STR(report_money(-1500000, "usd", b, sizeof(b)), "-$1.500000");
    CHECK_STR(report_money(1000000, "eur", b, sizeof(b)), "1.000000 EUR");
    CHECK_STR(report_money(INT64_MAX, "usd", b, sizeof(b)), "$9223372036854.775807");
    CHECK_STR(report_money(INT64_MIN, "usd", b, sizeof(b)), "-$9223372036854.775808");
    CHECK_STR(report_decimal(2500, b, sizeof(b)), "0.002500");
    CHECK_STR(report_decimal(-7000001, b, sizeof(b)), "-7.000001");
}

int main(void)
{
    char dir[] = "/tmp/konnect-report-XXXXXX", path[128], err[256];
    struct store *s;
    struct store_account a, other;
    struct plans *plans;
    int64_t nov = kn_month_start(NOV_2026);
    int64_t now = nov + 14 * DAY + 12 * 3600; /* 2026-11-15T12:00:00Z */
    json_t *u, *inv, *months, *ku, *o, *day;
    const char *plans_json =
        "{\"currency\":\"usd\",\"default_plan\":\"free\",\"plans\":["
        "{\"name\":\"free\",\"requests_per_month\":100,\"tokens_per_month\":null},"
        "{\"name\":\"pro\",\"requests_per_month\":1000,\"tokens_per_month\":50000,"
        "\"price_per_request_micros\":100,\"price_per_million_input_tokens_micros\":150000,"
        "\"price_per_million_output_tokens_micros\":600000}]}";

    CHECK(sodium_init() >= 0);
    test_money();
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/konnect.db", dir);
    s = store_open(path, 1, err, sizeof(err));
    CHECK(s != NULL);
    plans = plans_parse(plans_json, strlen(plans_json), err, sizeof(err));
    CHECK(plans != NULL);
    CHECK(store_account_create(s, "dev@example.com", NULL, NULL, &a) == STORE_OK);
    CHECK(store_account_create(s, "other@example.com", NULL, NULL, &other) == STORE_OK);
    CHECK(store_account_set_plan(s, a.id, "pro") == STORE_OK);
    CHECK(store_account_find(s, a.id, &a) == STORE_OK);
    CHECK_STR(a.plan, "pro");

    add_key(s, a.id, "key_backend", "Backend, \"main\"", "live", "production", nov - 90 * DAY);
    add_key(s, a.id, "key_staging", "=cmd|calc", "live", "staging", nov - 30 * DAY);
    add_key(s, other.id, "key_other", "caf\xe9", "live", "production", nov - 30 * DAY);

    /* November: three days with usage, two models, two keys. */
    bill(s, a.id, "key_backend", "production", "gpt-a", 10, 20, 112, nov + 0 * DAY + 60);
    bill(s, a.id, "key_backend", "production", "gpt-a", 5, 5, 104, nov + 0 * DAY + 7200);
    bill(s, a.id, "key_backend", "production", "gpt-b", 1000, 2000, 1450, nov + 2 * DAY);
    bill(s, a.id, "key_staging", "staging", "gpt-a", 7, 3, 103, nov + 2 * DAY + 10);
    bill(s, a.id, "key_staging", "staging", "gpt-a", 1, 1, 100, now - 60);
    int64_t nov_total = ledger_total;
    /* October's last second, and August. */
    bill(s, a.id, "key_backend", "production", "gpt-a", 2, 2, 101, nov - 1);
    bill(s, a.id, "key_backend", "production", "gpt-a", 2, 2, 333, kn_month_start(NOV_2026 - 3));
    /* Another account's usage never shows. */
    bill(s, other.id, "key_other", "production", "gpt-a", 9, 9, 999999, nov + DAY);

    /* ---- the usage report of this month ---- */
    CHECK(report_usage(s, plans, &a, NOV_2026, now, &u) == STORE_OK);
    CHECK_STR(json_string_value(json_object_get(u, "month")), "2026-11");
    CHECK_STR(json_string_value(json_object_get(u, "currency")), "usd");
    CHECK(json_is_true(json_object_get(u, "current")));
    CHECK_STR(json_string_value(json_object_get(json_object_get(u, "account"), "id")), a.id);
    o = json_object_get(u, "plan");
    CHECK_STR(json_string_value(json_object_get(o, "name")), "pro");
    CHECK(num(o, "requests_per_month") == 1000 && num(o, "tokens_per_month") == 50000);
    CHECK(num(o, "price_per_request_micros") == 100);
    o = json_object_get(u, "totals");
    CHECK(num(o, "requests") == 5);
    CHECK(num(o, "input_tokens") == 1023 && num(o, "output_tokens") == 2029);
    CHECK(num(o, "tokens") == 3052);
    CHECK(num(o, "cost_micros") == nov_total);
    o = json_object_get(json_object_get(u, "quota"), "requests");
    CHECK(num(o, "limit") == 1000 && num(o, "used") == 5 && num(o, "remaining") == 995);
    CHECK_STR(json_string_value(json_object_get(o, "source")), "plan");
    o = json_object_get(json_object_get(u, "quota"), "tokens");
    CHECK(num(o, "limit") == 50000 && num(o, "used") == 3052 && num(o, "remaining") == 46948);
    CHECK_STR(json_string_value(json_object_get(json_object_get(u, "quota"), "resets_at")),
              "2026-12-01T00:00:00Z");
    /* Keys, oldest first, with their names. */
    CHECK(json_array_size(json_object_get(u, "keys")) == 2);
    o = json_array_get(json_object_get(u, "keys"), 0);
    CHECK_STR(json_string_value(json_object_get(o, "key_id")), "key_backend");
    CHECK_STR(json_string_value(json_object_get(o, "name")), "Backend, \"main\"");
    CHECK_STR(json_string_value(json_object_get(o, "mode")), "live");
    CHECK(num(o, "requests") == 3 && num(o, "cost_micros") == 112 + 104 + 1450);
    o = json_array_get(json_object_get(u, "keys"), 1);
    CHECK_STR(json_string_value(json_object_get(o, "key_id")), "key_staging");
    CHECK(num(o, "requests") == 2 && num(o, "input_tokens") == 8 && num(o, "cost_micros") == 203);
    /* Environments with usage, production first. */
    CHECK(json_array_size(json_object_get(u, "environments")) == 2);
    o = find_by(json_object_get(u, "environments"), "environment", "staging");
    CHECK(o != NULL && num(o, "requests") == 2 && num(o, "tokens") == 12);
    CHECK_STR(json_string_value(json_object_get(
                  json_array_get(json_object_get(u, "environments"), 0), "environment")),
              "production");
    /* Every day from the 1st to today, zeros included. */
    CHECK(json_array_size(json_object_get(u, "days")) == 15);
    day = json_array_get(json_object_get(u, "days"), 0);
    CHECK_STR(json_string_value(json_object_get(day, "date")), "2026-11-01");
    CHECK(num(day, "requests") == 2 && num(day, "cost_micros") == 216);
    CHECK(num(json_object_get(day, "by_key"), "key_backend") == 2);
    CHECK(num(json_object_get(day, "tokens_by_key"), "key_backend") == 40);
    day = json_array_get(json_object_get(u, "days"), 1);
    CHECK_STR(json_string_value(json_object_get(day, "date")), "2026-11-02");
    CHECK(num(day, "requests") == 0 && json_object_size(json_object_get(day, "by_key")) == 0);
    day = json_array_get(json_object_get(u, "days"), 2);
    CHECK(num(day, "requests") == 2);
    CHECK(num(json_object_get(day, "by_key"), "key_backend") == 1);
    CHECK(num(json_object_get(day, "by_key"), "key_staging") == 1);
    CHECK(num(json_object_get(day, "by_environment"), "staging") == 1);
    CHECK(num(json_object_get(day, "tokens_by_environment"), "production") == 3000);
    day = json_array_get(json_object_get(u, "days"), 14);
    CHECK_STR(json_string_value(json_object_get(day, "date")), "2026-11-15");
    CHECK(num(day, "requests") == 1);
    char *text = report_usage_text(u);
    CHECK(strstr(text, "Plan      pro") != NULL);
    CHECK(strstr(text, "5 used of 1000, 995 remaining (plan quota)") != NULL);
    CHECK(strstr(text, "key_staging") != NULL);
    free(text);
    json_decref(u);

    /* Overrides: unlimited requests, a token limit below what is used. */
    CHECK(store_account_set_quota(s, a.id, STORE_QUOTA_UNLIMITED, 3000) == STORE_OK);
    CHECK(store_account_find(s, a.id, &a) == STORE_OK);
    CHECK(report_usage(s, plans, &a, NOV_2026, now, &u) == STORE_OK);
    o = json_object_get(json_object_get(u, "quota"), "requests");
    CHECK(json_is_null(json_object_get(o, "limit")) &&
          json_is_null(json_object_get(o, "remaining")));
    CHECK_STR(json_string_value(json_object_get(o, "source")), "override");
    o = json_object_get(json_object_get(u, "quota"), "tokens");
    CHECK(num(o, "limit") == 3000 && num(o, "remaining") == 0);
    json_decref(u);

    /* A past month has every one of its days; a plan the file no longer has is the default. */
    CHECK(store_account_set_plan(s, a.id, "gone") == STORE_OK);
    CHECK(store_account_find(s, a.id, &a) == STORE_OK);
    CHECK(report_usage(s, plans, &a, NOV_2026 - 1, now, &u) == STORE_OK);
    CHECK(json_array_size(json_object_get(u, "days")) == 31);
    CHECK(!json_is_true(json_object_get(u, "current")));
    CHECK_STR(json_string_value(json_object_get(json_object_get(u, "plan"), "name")), "free");
    CHECK(num(json_object_get(u, "totals"), "cost_micros") == 101);
    CHECK(num(json_array_get(json_object_get(u, "days"), 30), "requests") == 1);
    json_decref(u);
    /* Next month has not started. */
    u = NULL;
    CHECK(report_usage(s, plans, &a, NOV_2026 + 1, now, &u) == STORE_NOT_FOUND && u == NULL);
    CHECK(strstr(store_errmsg(s), "2026-12") != NULL);

    /* ---- the invoice ---- */
    /* On the plan "gone" (the default, free, applies), no line is at the plan's prices. */
    CHECK(report_invoice(s, plans, &a, NOV_2026, now, &inv) == STORE_OK);
    CHECK(json_is_null(json_object_get(inv, "plan")));
    CHECK(json_is_null(
        json_object_get(json_array_get(json_object_get(inv, "lines"), 2), "unit_prices")));
    json_decref(inv);
    CHECK(store_account_set_plan(s, a.id, "pro") == STORE_OK);
    CHECK(store_account_find(s, a.id, &a) == STORE_OK);
    CHECK(report_invoice(s, plans, &a, NOV_2026, now, &inv) == STORE_OK);
    CHECK_STR(json_string_value(json_object_get(inv, "status")), "open");
    CHECK(json_is_null(json_object_get(inv, "number"))); /* a draft: numbered once final */
    CHECK_STR(json_string_value(json_object_get(inv, "period_start")), "2026-11-01T00:00:00Z");
    CHECK_STR(json_string_value(json_object_get(inv, "period_end")), "2026-12-01T00:00:00Z");
    CHECK(num(inv, "total_micros") == nov_total && num(inv, "subtotal_micros") == nov_total);
    CHECK(num(inv, "requests") == 5);
    json_t *lines = json_object_get(inv, "lines");
    CHECK(json_array_size(lines) == 3); /* gpt-a/backend, gpt-a/staging, gpt-b/backend */
    long long sum = 0;
    for (size_t i = 0; i < json_array_size(lines); i++)
        sum += num(json_array_get(lines, i), "amount_micros");
    CHECK(sum == nov_total);
    o = json_array_get(lines, 0);
    CHECK_STR(json_string_value(json_object_get(o, "model")), "gpt-a");
    CHECK_STR(json_string_value(json_object_get(o, "key_id")), "key_backend");
    CHECK_STR(json_string_value(json_object_get(o, "key_name")), "Backend, \"main\"");
    CHECK(num(o, "requests") == 2 && num(o, "amount_micros") == 216);
    CHECK(json_is_null(json_object_get(o, "unit_prices")));
    o = json_array_get(lines, 2);
    CHECK_STR(json_string_value(json_object_get(o, "model")), "gpt-b");
    CHECK(num(o, "input_tokens") == 1000 && num(o, "output_tokens") == 2000);
    o = json_object_get(o, "unit_prices");
    CHECK(num(o, "per_request_micros") == 100 &&
          num(o, "per_million_input_tokens_micros") == 150000 &&
          num(o, "per_million_output_tokens_micros") == 600000);
    CHECK(json_is_null(json_object_get(inv, "plan"))); /* not every line at the plan's prices */

    size_t len;
    char *csv = report_invoice_csv(inv, &len);
    CHECK(len == strlen(csv));
    CHECK(strncmp(csv, "type,invoice,month,model,key_id,key_name,environment,requests,", 60) == 0);
    /* gpt-a's amounts are not what the plan's prices give (its prices changed): no unit prices;
     * gpt-b's are. */
    CHECK(strstr(csv, ",gpt-a,key_backend,\"Backend, \"\"main\"\"\",production,2,15,25,216,"
                      "0.000216,usd,,,\r\n") != NULL);
    CHECK(strstr(csv, ",gpt-b,key_backend,\"Backend, \"\"main\"\"\",production,1,1000,2000,"
                      "1450,0.001450,usd,100,150000,600000\r\n") != NULL);
    CHECK(strstr(csv, ",\"'=cmd|calc\",") != NULL); /* a formula, defused */
    char want[128];
    snprintf(want, sizeof(want), "\r\ntotal,,2026-11,,,,,5,1023,2029,%lld,0.00",
             (long long)nov_total);
    CHECK(strstr(csv, want) != NULL);
    int rows = 0;
    for (const char *p = csv; (p = strstr(p, "\r\n")) != NULL; p += 2)
        rows++;
    CHECK(rows == 5); /* header, three lines, total */
    CHECK(csv[len - 1] == '\n' && csv[len - 2] == '\r');
    free(csv);
    text = report_invoice_text(inv);
    CHECK(strstr(text, "Status    open") != NULL);
    CHECK(strstr(text, "Invoice   draft (numbered once the month is over)") != NULL);
    CHECK(strstr(text, "Period    2026-11-01 to 2026-11-30 (UTC)") != NULL);
    CHECK(strstr(text, "$0.001450") != NULL);
    /* (gpt-a's staging line is within rounding of the plan's prices: it has them.) */
    CHECK(strstr(text, "\nUnit prices\n  gpt-a: $0.000100 per request") != NULL);
    CHECK(strstr(text, "\n  gpt-b: $0.000100 per request, $0.150000 per million input tokens, "
                       "$0.600000 per million output tokens\n") != NULL);
    CHECK(strstr(text, "Plan      ") == NULL);
    snprintf(want, sizeof(want), "$0.%06lld\n", (long long)nov_total);
    CHECK(strstr(text, want) != NULL); /* the total ends the text */
    free(text);
    json_decref(inv);

    /* Past months are final; an empty month has no lines and a zero total. */
    CHECK(report_invoice(s, plans, &a, NOV_2026 - 1, now, &inv) == STORE_OK);
    CHECK_STR(json_string_value(json_object_get(inv, "status")), "final");
    CHECK(num(inv, "total_micros") == 101);
    /* The first final invoice issued takes the server's first number, and keeps it. */
    CHECK_STR(json_string_value(json_object_get(inv, "number")), "INV-000001");
    text = report_invoice_text(inv);
    CHECK(strstr(text, "Invoice   INV-000001\n") != NULL);
    /* October's one request was billed at the plan's prices (101.5 rounded... to 101 is within
     * half a micro-unit): the plan and its unit prices are on the invoice. */
    CHECK(strstr(text, "Plan      pro\n") != NULL && strstr(text, "  gpt-a: $0.000100") != NULL);
    CHECK_STR(json_string_value(json_object_get(json_object_get(inv, "plan"), "name")), "pro");
    free(text);
    json_decref(inv);
    CHECK(report_invoice(s, plans, &a, NOV_2026 - 1, now + DAY, &inv) == STORE_OK);
    CHECK_STR(json_string_value(json_object_get(inv, "number")), "INV-000001");
    json_decref(inv);
    CHECK(report_invoice(s, plans, &a, NOV_2026 - 2, now, &inv) == STORE_OK);
    CHECK(json_array_size(json_object_get(inv, "lines")) == 0 && num(inv, "total_micros") == 0);
    CHECK(json_is_null(json_object_get(inv, "number"))); /* nothing to invoice: no number spent */
    text = report_invoice_text(inv);
    CHECK(strstr(text, "no billed usage") != NULL && strstr(text, "$0.000000") != NULL);
    free(text);
    json_decref(inv);
    inv = NULL;
    CHECK(report_invoice(s, plans, &a, NOV_2026 + 1, now, &inv) == STORE_NOT_FOUND && inv == NULL);

    /* ---- the list of invoices ---- */
    CHECK(report_months(s, plans, &a, now, &months) == STORE_OK);
    CHECK(json_array_size(months) == 3);
    CHECK_STR(json_string_value(json_object_get(json_array_get(months, 0), "month")), "2026-11");
    CHECK_STR(json_string_value(json_object_get(json_array_get(months, 0), "status")), "open");
    CHECK(num(json_array_get(months, 0), "total_micros") == nov_total);
    CHECK_STR(json_string_value(json_object_get(json_array_get(months, 1), "month")), "2026-10");
    CHECK_STR(json_string_value(json_object_get(json_array_get(months, 1), "status")), "final");
    CHECK_STR(json_string_value(json_object_get(json_array_get(months, 1), "number")),
              "INV-000001");
    CHECK(json_is_null(json_object_get(json_array_get(months, 0), "number")));
    CHECK_STR(json_string_value(json_object_get(json_array_get(months, 2), "month")), "2026-08");
    /* Listed for the first time: numbered now, the next number. */
    CHECK_STR(json_string_value(json_object_get(json_array_get(months, 2), "number")),
              "INV-000002");
    text = report_months_text(months);
    CHECK(strstr(text, "draft") != NULL && strstr(text, "INV-000002") != NULL);
    free(text);
    CHECK(num(json_array_get(months, 2), "total_micros") == 333);
    CHECK(num(json_array_get(months, 2), "requests") == 1);
    json_decref(months);
    /* The current month is listed even before any usage. */
    CHECK(report_months(s, plans, &a, kn_month_start(NOV_2026 + 2) + 5, &months) == STORE_OK);
    CHECK(json_array_size(months) == 4);
    CHECK_STR(json_string_value(json_object_get(json_array_get(months, 0), "month")), "2027-01");
    CHECK(num(json_array_get(months, 0), "total_micros") == 0);
    /* November is over by then: listed, it took the next number. */
    CHECK_STR(json_string_value(json_object_get(json_array_get(months, 1), "number")),
              "INV-000003");
    json_decref(months);

    /* A key name that is not UTF-8 (the CLI does not check) still has its line. */
    CHECK(report_invoice(s, plans, &other, NOV_2026, now, &inv) == STORE_OK);
    CHECK(json_array_size(json_object_get(inv, "lines")) == 1);
    CHECK_STR(json_string_value(
                  json_object_get(json_array_get(json_object_get(inv, "lines"), 0), "key_name")),
              "caf?");
    CHECK(num(inv, "total_micros") == 999999);
    CHECK(json_is_null(json_object_get(inv, "number")));
    json_decref(inv);
    /* Once November is over, one sequence numbers every account's invoices, without gaps. */
    CHECK(report_invoice(s, plans, &other, NOV_2026, kn_month_start(NOV_2026 + 1) + 5, &inv) ==
          STORE_OK);
    CHECK_STR(json_string_value(json_object_get(inv, "number")), "INV-000004");
    json_decref(inv);
    CHECK(report_invoice(s, plans, &a, NOV_2026, kn_month_start(NOV_2026 + 1) + 5, &inv) ==
          STORE_OK);
    CHECK_STR(json_string_value(json_object_get(inv, "number")), "INV-000003");
    json_decref(inv);
    CHECK(report_invoice(s, plans, &other, NOV_2026, kn_month_start(NOV_2026 + 1) + 5, &inv) ==
          STORE_OK);
    CHECK_STR(json_string_value(json_object_get(inv, "number")), "INV-000004");
    json_decref(inv);

    /* ---- per-key usage for the key list ---- */
    CHECK(report_key_usage(s, a.id, NOV_2026, &ku) == STORE_OK);
    CHECK(json_object_size(ku) == 2);
    CHECK(num(json_object_get(ku, "key_backend"), "requests") == 3);
    CHECK(num(json_object_get(ku, "key_staging"), "cost_micros") == 203);
    CHECK(json_object_get(ku, "key_other") == NULL);
    json_decref(ku);
    CHECK(report_key_usage(s, other.id, NOV_2026 - 1, &ku) == STORE_OK &&
          json_object_size(ku) == 0);
    json_decref(ku);

    plans_free(plans);
    store_close(s);
    snprintf(path, sizeof(path), "rm -rf %s", dir);
    CHECK(system(path) == 0);
    return unit_result();
}
