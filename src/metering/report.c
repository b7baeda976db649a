/* Usage reports and invoices as JSON, read from the store's rollup (see report.h); their
 * renderings as text and CSV are in report_render.c. */
#include "metering/report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define DAY 86400

/* ---- reading the rollup -------------------------------------------------------------------- */

struct rows {
    struct store_usage_sum *v;
    size_t n, cap;
};

static int collect_row(void *ud, const struct store_usage_sum *u)
{
    struct rows *r = ud;

    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->v = kn_realloc(r->v, r->cap * sizeof(*r->v));
    }
    r->v[r->n++] = *u;
    return 0;
}

static int load_rows(struct store *s, const char *account_id, int64_t from, int64_t to,
                     struct rows *r)
{
    memset(r, 0, sizeof(*r));
    return store_usage_sums(s, account_id, from, to, collect_row, r);
}

static void free_rows(struct rows *r)
{
    free(r->v);
    r->v = NULL;
    r->n = r->cap = 0;
}

/* Sums of some rows. */
struct sums {
    uint64_t requests, input_tokens, output_tokens;
    int64_t cost;
};

static void add_row(struct sums *t, const struct store_usage_sum *u)
{
    t->requests += u->requests;
    t->input_tokens += u->input_tokens;
    t->output_tokens += u->output_tokens;
    t->cost += u->price_micros;
}

static json_int_t ji(uint64_t v)
{
    return v > (uint64_t)INT64_MAX ? (json_int_t)INT64_MAX : (json_int_t)v;
}

/* Fails a report of a month that has not started yet. */
static int check_month(struct store *s, int64_t month, int64_t now)
{
    char m[16];

    if (month > kn_month_of(now))
        return store_set_error(s, STORE_NOT_FOUND, "%s has not started yet",
                               kn_month_format(month, m, sizeof(m)));
    return STORE_OK;
}

/* ---- keys ---------------------------------------------------------------------------------- */

/* A key with usage, and what it used. */
struct keyuse {
    struct store_key key; /* Found in the store, or only its id when it is gone. */
    struct sums sums;
    size_t order; /* The key's place in the account's key list (oldest first); gone keys last. */
};

static int by_key_id(const void *a, const void *b)
{
    return strcmp(((const struct store_usage_sum *)a)->key_id,
                  ((const struct store_usage_sum *)b)->key_id);
}

/* Keys in the order of the account's key list (store_key_list: creation time, then insertion),
 * which is deterministic even for keys created within the same second. */
static int by_list_order(const void *a, const void *b)
{
    const struct keyuse *x = a, *y = b;
    if (x->order != y->order)
        return x->order < y->order ? -1 : 1;
    return strcmp(x->key.id, y->key.id);
}

struct list_order {
    struct keyuse *ku;
    size_t n, seen;
};

static int note_order(void *ud, const struct store_key *k, uint64_t requests)
{
    struct list_order *o = ud;
    (void)requests;
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->ku[i].key.id, k->id) == 0)
            o->ku[i].order = o->seen;
    o->seen++;
    return 0;
}

/* Sums rows per key, in the order of the account's key list; with names when `names` is set. Writes
 * the array and its length. */
static int key_uses(struct store *s, const struct rows *r, int names, struct keyuse **out,
                    size_t *count)
{
    struct store_usage_sum *sorted = kn_malloc((r->n ? r->n : 1) * sizeof(*sorted));
    struct keyuse *ku = kn_calloc(1, sizeof(*ku));
    size_t n = 0, cap = 1;

    if (r->n)
        memcpy(sorted, r->v, r->n * sizeof(*sorted));
    qsort(sorted, r->n, sizeof(*sorted), by_key_id);
    for (size_t i = 0; i < r->n; i++) {
        if (n == 0 || strcmp(ku[n - 1].key.id, sorted[i].key_id) != 0) {
            if (n == cap) {
                ku = kn_realloc(ku, 2 * cap * sizeof(*ku));
                memset(ku + cap, 0, cap * sizeof(*ku));
                cap *= 2;
            }
            kn_strlcpy(ku[n].key.id, sorted[i].key_id, sizeof(ku[n].key.id));
            kn_strlcpy(ku[n].key.environment, sorted[i].environment, sizeof(ku[n].key.environment));
            n++;
        }
        add_row(&ku[n - 1].sums, &sorted[i]);
    }
    free(sorted);
    for (size_t i = 0; names && i < n; i++) {
        struct store_key k;
        ku[i].order = SIZE_MAX;
        int rc = store_key_find(s, ku[i].key.id, NULL, &k);
        if (rc == STORE_OK) {
            ku[i].key = k;
        } else if (rc != STORE_NOT_FOUND) {
            free(ku);
            return rc;
        }
    }
    if (names && n > 1) {
        struct list_order o = {ku, n, 0};
        const char *account = NULL;
        for (size_t i = 0; i < n && account == NULL; i++)
            if (ku[i].key.account_id[0] != '\0')
                account = ku[i].key.account_id;
        int rc = account != NULL ? store_key_list(s, account, note_order, &o) : STORE_OK;
        if (rc != STORE_OK) {
            free(ku);
            return rc;
        }
        qsort(ku, n, sizeof(*ku), by_list_order);
    }
    *out = ku;
    *count = n;
    return STORE_OK;
}

static json_t *sums_doc(const struct sums *t)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I}", "requests", ji(t->requests), "input_tokens",
                     ji(t->input_tokens), "output_tokens", ji(t->output_tokens), "tokens",
                     ji(t->input_tokens + t->output_tokens), "cost_micros", (json_int_t)t->cost);
}

int report_key_usage(struct store *s, const char *account_id, int64_t month, json_t **out)
{
    struct rows r;
    struct keyuse *ku = NULL;
    size_t n = 0;
    int rc = load_rows(s, account_id, month, month, &r);

    if (rc == STORE_OK)
        rc = key_uses(s, &r, 0, &ku, &n);
    if (rc == STORE_OK) {
        json_t *doc = json_object();
        for (size_t i = 0; i < n; i++)
            json_object_set_new(doc, ku[i].key.id, sums_doc(&ku[i].sums));
        *out = doc;
    }
    free(ku);
    free_rows(&r);
    return rc;
}

/* ---- plan and quota ------------------------------------------------------------------------ */

static const struct plan *plan_of(const struct plans *plans, const struct store_account *a)
{
    /* Like the server: an account on a plan the file no longer defines is on the default. */
    const struct plan *p = plans_find(plans, a->plan);
    return p != NULL ? p : plans_find(plans, NULL);
}

static json_t *limit_or_null(int64_t v)
{
    return v == PLAN_UNLIMITED ? json_null() : json_integer(v);
}

json_t *report_plan_json(const struct plan *p)
{
    json_t *o =
        json_pack("{s:s, s:I, s:I, s:I, s:I}", "name", p->name, "price_per_request_micros",
                  (json_int_t)p->price_per_request, "price_per_million_input_tokens_micros",
                  (json_int_t)p->price_per_million_input, "price_per_million_output_tokens_micros",
                  (json_int_t)p->price_per_million_output, "max_concurrent_requests",
                  (json_int_t)p->max_concurrent);
    json_object_set_new(o, "requests_per_month", limit_or_null(p->requests_per_month));
    json_object_set_new(o, "tokens_per_month", limit_or_null(p->tokens_per_month));
    json_object_set_new(o, "requests_per_minute",
                        p->requests_per_minute ? json_integer(p->requests_per_minute)
                                               : json_null());
    /* With a model catalogue, the models the plan may use and their prices for it. */
    if (p->models != NULL) {
        json_t *models = json_array();
        for (size_t i = 0; i < p->nmodels; i++)
            json_array_append_new(models,
                                  json_pack("{s:s, s:I, s:I, s:I}", "name", p->models[i].name,
                                            "price_per_request_micros",
                                            (json_int_t)p->models[i].price_per_request,
                                            "price_per_million_input_tokens_micros",
                                            (json_int_t)p->models[i].price_per_million_input,
                                            "price_per_million_output_tokens_micros",
                                            (json_int_t)p->models[i].price_per_million_output));
        json_object_set_new(o, "models", models);
    }
    return o;
}

/* One quota: the limit in force (an override or the plan's), what is used and what remains. */
static json_t *quota_doc(int64_t override, int64_t from_plan, uint64_t used)
{
    int64_t limit = override == STORE_QUOTA_FROM_PLAN ? from_plan : override;
    json_t *o = json_pack("{s:I, s:s}", "used", ji(used), "source",
                          override == STORE_QUOTA_FROM_PLAN ? "plan" : "override");

    json_object_set_new(o, "limit", limit_or_null(limit));
    if (limit == PLAN_UNLIMITED)
        json_object_set_new(o, "remaining", json_null());
    else
        json_object_set_new(o, "remaining",
                            json_integer(used >= (uint64_t)limit ? 0 : limit - (int64_t)used));
    return o;
}

char *report_day_format(int64_t day, char *buf, size_t size)
{
    char t[32];
    kn_format_time(day * DAY, t, sizeof(t));
    snprintf(buf, size, "%.10s", t);
    return buf;
}

/* A JSON string of text that should be UTF-8 but was never checked (a key name from the CLI):
 * bytes that do not form UTF-8 become '?', so that no report ever loses a line. */
static json_t *text_json(const char *s)
{
    json_t *v = json_string(s);

    if (v == NULL) {
        char *copy = kn_strdup(s);
        for (char *p = copy; *p != '\0'; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        v = json_string(copy);
        free(copy);
    }
    return v;
}

/* ---- the usage report ---------------------------------------------------------------------- */

static const char *const env_order[] = {"production", "staging", "development"};

static void object_add(json_t *obj, const char *key, uint64_t v)
{
    json_t *cur = json_object_get(obj, key);
    json_object_set_new(obj, key,
                        json_integer(ji((cur ? (uint64_t)json_integer_value(cur) : 0) + v)));
}

static json_t *environments_doc(const struct rows *r)
{
    json_t *arr = json_array();
    size_t nenv = sizeof(env_order) / sizeof(env_order[0]);
    struct sums *t = kn_calloc(nenv + r->n + 1, sizeof(*t));
    const char **names = kn_calloc(nenv + r->n + 1, sizeof(*names));
    size_t n = nenv;

    for (size_t i = 0; i < nenv; i++)
        names[i] = env_order[i];
    for (size_t i = 0; i < r->n; i++) {
        size_t j = 0;
        while (j < n && strcmp(names[j], r->v[i].environment) != 0)
            j++;
        if (j == n)
            names[n++] = r->v[i].environment;
        add_row(&t[j], &r->v[i]);
    }
    for (size_t j = 0; j < n; j++) {
        if (t[j].requests == 0 && t[j].cost == 0)
            continue;
        json_t *o = sums_doc(&t[j]);
        json_object_set_new(o, "environment", json_string(names[j]));
        json_array_append_new(arr, o);
    }
    free(t);
    free(names);
    return arr;
}

static json_t *days_doc(const struct rows *r, int64_t month, int64_t now)
{
    int64_t first = kn_month_start(month) / DAY, end = kn_month_start(month + 1) / DAY;
    int64_t today = now / DAY;
    json_t *arr = json_array();
    size_t i = 0;

    if (month == kn_month_of(now))
        end = today + 1;
    for (int64_t day = first; day < end; day++) {
        struct sums t = {0};
        json_t *by_key = json_object(), *tok_key = json_object(), *by_env = json_object(),
               *tok_env = json_object();
        char date[16];

        while (i < r->n && r->v[i].day < day)
            i++; /* Rows are in day order; none should be before the month. */
        for (; i < r->n && r->v[i].day == day; i++) {
            const struct store_usage_sum *u = &r->v[i];
            add_row(&t, u);
            object_add(by_key, u->key_id, u->requests);
            object_add(tok_key, u->key_id, u->input_tokens + u->output_tokens);
            object_add(by_env, u->environment, u->requests);
            object_add(tok_env, u->environment, u->input_tokens + u->output_tokens);
        }
        json_t *o = sums_doc(&t);
        json_object_set_new(o, "date", json_string(report_day_format(day, date, sizeof(date))));
        json_object_set_new(o, "by_key", by_key);
        json_object_set_new(o, "tokens_by_key", tok_key);
        json_object_set_new(o, "by_environment", by_env);
        json_object_set_new(o, "tokens_by_environment", tok_env);
        json_array_append_new(arr, o);
    }
    return arr;
}

static json_t *account_doc(const struct store_account *a)
{
    return json_pack("{s:s, s:o}", "id", a->id, "email", text_json(a->email));
}

int report_usage(struct store *s, const struct plans *plans, const struct store_account *a,
                 int64_t month, int64_t now, json_t **out)
{
    const struct plan *p = plan_of(plans, a);
    struct rows r = {0};
    struct sums total = {0};
    struct keyuse *ku = NULL;
    size_t nk = 0;
    char m[16], t[32];
    json_t *doc, *keys, *quota;
    int rc;

    if ((rc = check_month(s, month, now)) != STORE_OK ||
        (rc = load_rows(s, a->id, month, month, &r)) != STORE_OK ||
        (rc = key_uses(s, &r, 1, &ku, &nk)) != STORE_OK)
        goto out;
    for (size_t i = 0; i < r.n; i++)
        add_row(&total, &r.v[i]);
    keys = json_array();
    for (size_t i = 0; i < nk; i++) {
        json_t *o = sums_doc(&ku[i].sums);
        json_object_set_new(o, "key_id", json_string(ku[i].key.id));
        json_object_set_new(o, "name", text_json(ku[i].key.name));
        json_object_set_new(o, "mode", json_string(ku[i].key.mode));
        json_object_set_new(o, "environment", json_string(ku[i].key.environment));
        json_object_set_new(o, "hint", json_string(ku[i].key.hint));
        json_array_append_new(keys, o);
    }
    quota = json_pack(
        "{s:o, s:o, s:s}", "requests",
        quota_doc(a->quota_requests, p->requests_per_month, total.requests), "tokens",
        quota_doc(a->quota_tokens, p->tokens_per_month, total.input_tokens + total.output_tokens),
        "resets_at", kn_format_time(kn_month_start(month + 1), t, sizeof(t)));
    doc = json_pack("{s:s, s:o, s:s, s:s, s:b, s:o, s:o, s:o, s:o, s:o, s:o}", "object", "usage",
                    "account", account_doc(a), "month", kn_month_format(month, m, sizeof(m)),
                    "currency", plans->currency, "current", month == kn_month_of(now), "plan",
                    report_plan_json(p), "quota", quota, "totals", sums_doc(&total), "keys", keys,
                    "environments", environments_doc(&r), "days", days_doc(&r, month, now));
    if (doc == NULL)
        kn_fatal("cannot build the usage report");
    json_object_set_new(doc, "as_of", json_string(kn_format_time(now, t, sizeof(t))));
    *out = doc;
out:
    free(ku);
    free_rows(&r);
    return rc;
}

/* ---- invoices ------------------------------------------------------------------------------ */

/* The number of an account's invoice for a month, into *out: the server's next one the first
 * time the invoice of a closed month with billed requests is issued, the same one ever after;
 * none (null) for an open month's draft or a month with nothing to invoice. */
static int invoice_number(struct store *s, const char *account_id, int64_t month, int64_t now,
                          uint64_t requests, json_t **out)
{
    int64_t seq;
    char buf[32];
    int rc;

    *out = json_null();
    if (month >= kn_month_of(now) || requests == 0)
        return STORE_OK;
    if ((rc = store_invoice_number(s, account_id, month, now, &seq)) != STORE_OK)
        return rc;
    snprintf(buf, sizeof(buf), "INV-%06lld", (long long)seq);
    *out = json_string(buf);
    return STORE_OK;
}

/* The unit prices of a line's model on the account's plan, when they are the prices it was billed
 * at: its amount, the sum of each request's price rounded to the micro-unit, is within half a
 * micro-unit per request of what those prices give for its totals. NULL when they are not (the
 * plan or its prices changed during the month, or the plan no longer has the model): the amount
 * stands, from the ledger, without unit prices that would not explain it. */
static json_t *unit_prices(const struct plans *plans, const struct plan *plan, const char *model,
                           const struct sums *line)
{
    struct plan_model pm;
    __int128 tokens, billed;

    if (plan == NULL || plans_model(plans, plan, model, strlen(model), &pm) != 0)
        return NULL;
    tokens = (__int128)line->input_tokens * pm.price_per_million_input +
             (__int128)line->output_tokens * pm.price_per_million_output;
    billed = ((__int128)line->cost - (__int128)line->requests * pm.price_per_request) * 1000000;
    if (billed - tokens > (__int128)line->requests * 500000 ||
        tokens - billed > (__int128)line->requests * 500000)
        return NULL;
    return json_pack("{s:I, s:I, s:I}", "per_request_micros", (json_int_t)pm.price_per_request,
                     "per_million_input_tokens_micros", (json_int_t)pm.price_per_million_input,
                     "per_million_output_tokens_micros", (json_int_t)pm.price_per_million_output);
}

static int by_model_key(const void *a, const void *b)
{
    const struct store_usage_sum *x = a, *y = b;
    int c = strcmp(x->model, y->model);
    return c != 0 ? c : strcmp(x->key_id, y->key_id);
}

static json_t *sums_fields(json_t *o, const struct sums *t)
{
    json_object_set_new(o, "requests", json_integer(ji(t->requests)));
    json_object_set_new(o, "input_tokens", json_integer(ji(t->input_tokens)));
    json_object_set_new(o, "output_tokens", json_integer(ji(t->output_tokens)));
    return o;
}

int report_invoice(struct store *s, const struct plans *plans, const struct store_account *a,
                   int64_t month, int64_t now, json_t **out)
{
    struct rows r = {0};
    struct sums total = {0};
    struct keyuse *ku = NULL;
    size_t nk = 0;
    char m[16], start[32], end[32];
    json_t *doc, *lines, *number;
    int rc;

    if ((rc = check_month(s, month, now)) != STORE_OK ||
        (rc = load_rows(s, a->id, month, month, &r)) != STORE_OK ||
        (rc = key_uses(s, &r, 1, &ku, &nk)) != STORE_OK)
        goto out;
    /* One line per model and key, in that order. */
    if (r.n > 1)
        qsort(r.v, r.n, sizeof(*r.v), by_model_key);
    const struct plan *plan = plan_of(plans, a);
    int priced = 1; /* Every line at the plan's prices. */
    lines = json_array();
    for (size_t i = 0, j; i < r.n; i = j) {
        struct sums line = {0};
        const char *name = "";
        json_t *prices;

        for (j = i; j < r.n && by_model_key(&r.v[i], &r.v[j]) == 0; j++) {
            add_row(&line, &r.v[j]);
            add_row(&total, &r.v[j]);
        }
        for (size_t k = 0; k < nk; k++)
            if (strcmp(ku[k].key.id, r.v[i].key_id) == 0)
                name = ku[k].key.name;
        json_t *o = json_pack("{s:o, s:s, s:o, s:s, s:I}", "model", text_json(r.v[i].model),
                              "key_id", r.v[i].key_id, "key_name", text_json(name), "environment",
                              r.v[i].environment, "amount_micros", (json_int_t)line.cost);
        if (o == NULL)
            kn_fatal("cannot build an invoice line");
        prices = unit_prices(plans, plan, r.v[i].model, &line);
        priced &= prices != NULL;
        json_object_set_new(o, "unit_prices", prices != NULL ? prices : json_null());
        json_array_append_new(lines, sums_fields(o, &line));
    }
    if ((rc = invoice_number(s, a->id, month, now, total.requests, &number)) != STORE_OK) {
        json_decref(lines);
        goto out;
    }
    doc = json_pack(
        "{s:s, s:o, s:o, s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:I}", "object", "invoice", "number",
        number, "account", account_doc(a), "month", kn_month_format(month, m, sizeof(m)), "status",
        month < kn_month_of(now) ? "final" : "open", "currency", plans->currency, "period_start",
        kn_format_time(kn_month_start(month), start, sizeof(start)), "period_end",
        kn_format_time(kn_month_start(month + 1), end, sizeof(end)), "lines", lines,
        "subtotal_micros", (json_int_t)total.cost, "total_micros", (json_int_t)total.cost);
    if (doc == NULL)
        kn_fatal("cannot build the invoice");
    const struct plan_seller *sl = &plans->seller;
    json_object_set_new(doc, "seller",
                        sl->name[0]
                            ? json_pack("{s:s, s:s, s:s, s:s}", "name", sl->name, "address",
                                        sl->address, "email", sl->email, "tax_id", sl->tax_id)
                            : json_null());
    /* The plan, when every line was billed at its prices (else a plan change in the month). */
    json_object_set_new(
        doc, "plan", plan != NULL && priced ? json_pack("{s:s}", "name", plan->name) : json_null());
    sums_fields(doc, &total);
    *out = doc;
out:
    free(ku);
    free_rows(&r);
    return rc;
}

static json_t *month_doc(const struct plans *plans, int64_t month, int64_t current,
                         const struct sums *t, json_t *number)
{
    char m[16];
    json_t *o =
        json_pack("{s:s, s:o, s:s, s:s, s:I}", "month", kn_month_format(month, m, sizeof(m)),
                  "number", number, "status", month < current ? "final" : "open", "currency",
                  plans->currency, "total_micros", (json_int_t)t->cost);
    return sums_fields(o, t);
}

int report_months(struct store *s, const struct plans *plans, const struct store_account *a,
                  int64_t now, json_t **out)
{
    int64_t current = kn_month_of(now);
    struct rows r = {0};
    struct sums none = {0};
    json_t *arr;
    int rc, listed_current = 0;

    if ((rc = load_rows(s, a->id, 0, current, &r)) != STORE_OK)
        goto out;
    arr = json_array();
    /* Rows come in day order, so a month's rows are together. */
    for (size_t i = 0, j; i < r.n; i = j) {
        struct sums t = {0};
        json_t *number;
        for (j = i; j < r.n && r.v[j].month == r.v[i].month; j++)
            add_row(&t, &r.v[j]);
        /* Oldest first, so that months invoiced for the first time are numbered in order. */
        if ((rc = invoice_number(s, a->id, r.v[i].month, now, t.requests, &number)) != STORE_OK) {
            json_decref(arr);
            goto out;
        }
        json_array_insert_new(arr, 0, month_doc(plans, r.v[i].month, current, &t, number));
        listed_current |= r.v[i].month == current;
    }
    if (!listed_current)
        json_array_insert_new(arr, 0, month_doc(plans, current, current, &none, json_null()));
    *out = arr;
out:
    free_rows(&r);
    return rc;
}
