/* The dashboard's records: the audit log, usage and invoices of the signed-in account. */
#include "dashboard/dashboard.h"

#include <jansson.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/password.h"
#include "auth/session.h"
#include "core/base62.h"
#include "core/errors.h"
#include "core/util.h"
#include "dashboard/internal.h"
#include "keys/keyjson.h"
#include "keys/keysync.h"
#include "keys/lifecycle.h"
#include "metering/plans.h"
#include "metering/report.h"
#include "store/store.h"

#define AUDIT_PAGE 50

/* ---- audit log --------------------------------------------------------------------------- */

struct audit_page {
    json_t *arr;
    int64_t last;
    int n;
};

static int collect_audit(void *ud, const struct store_audit *entry)
{
    struct audit_page *p = ud;
    struct store_audit clean = *entry, *e = &clean;

    lifecycle_audit_clean(e); /* Rows written before entries were cleaned as they were written. */
    json_array_append_new(p->arr, json_pack("{s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
                                            (json_int_t)e->id, "time", (json_int_t)e->at, "actor",
                                            e->actor, "action", e->action, "target", e->target,
                                            "ip", e->ip, "result", e->result, "detail", e->detail));
    p->last = e->id;
    p->n++;
    return 0;
}

/* GET audit, newest first: ?limit=N (1 to 100; the dashboard's default AUDIT_PAGE, the
 * management API's API_PAGE) and ?starting_after=ID (or the dashboard's ?before=ID): the entries
 * older than that one. "next" is the cursor of the next page, null on the last. */
void dash_audit_page(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                     struct who *w, const char *param)
{
    (void)param;
    struct audit_page p = {.arr = json_array()};
    long long before = 0, limit = w->api ? API_PAGE : AUDIT_PAGE;
    char text[24];
    int found = dash_query_param(req, "starting_after", text, sizeof(text));

    if (found == 0)
        found = dash_query_param(req, "before", text, sizeof(text));
    if (found != 0 && (found < 0 || kn_parse_int(text, 1, INT64_MAX, &before) != 0)) {
        json_decref(p.arr);
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "'starting_after' must be an audit entry's id.", "starting_after");
        return;
    }
    if (dash_limit_param(req, res, &limit) != 0) {
        json_decref(p.arr);
        return;
    }
    /* One more than asked for says whether there is another page. */
    if (store_audit_list(d->store, w->member.account_id, before, (int)limit + 1, collect_audit,
                         &p) != STORE_OK) {
        json_decref(p.arr);
        dash_reply_store_error(d, res, req);
        return;
    }
    json_t *next = json_null();
    if (p.n > limit) {
        json_array_remove(p.arr, (size_t)limit);
        next = json_object_get(json_array_get(p.arr, (size_t)limit - 1), "id");
        next = json_integer(json_integer_value(next));
    }
    dash_reply_json(res, 200, "OK", json_pack("{s:o, s:o}", "data", p.arr, "next", next));
}

/* ---- usage and invoices ------------------------------------------------------------------ */

/* Reads ?month=YYYY-MM (default: this month). Returns 0, or -1 after replying 400. */
static int month_param(const struct dash_request *req, struct dash_response *res, int64_t now,
                       int64_t *month)
{
    char text[16];
    int found = dash_query_param(req, "month", text, sizeof(text));

    *month = kn_month_of(now);
    if (found == 0)
        return 0;
    if (found < 0 || kn_month_parse(text, month) != 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "'month' must be a month such as 2026-11.", "month");
        return -1;
    }
    if (*month > kn_month_of(now)) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, "That month has not started yet.",
                         "month");
        return -1;
    }
    return 0;
}

static int own_account(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const struct who *w, struct store_account *a)
{
    if (store_account_find(d->store, w->member.account_id, a) == STORE_OK)
        return 0;
    dash_reply_store_error(d, res, req);
    return -1;
}

void dash_usage(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                struct who *w, const char *param)
{
    (void)param;
    struct store_account a;
    int64_t now = kn_unix_now(), month;
    json_t *doc;

    if (month_param(req, res, now, &month) != 0 || own_account(d, req, res, w, &a) != 0)
        return;
    if (report_usage(d->store, dash_plans(d), &a, month, now, &doc) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_reply_json(res, 200, "OK", doc);
}

void dash_invoices(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                   struct who *w, const char *param)
{
    (void)param;
    struct store_account a;
    json_t *arr;

    if (own_account(d, req, res, w, &a) != 0)
        return;
    if (report_months(d->store, dash_plans(d), &a, kn_unix_now(), &arr) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_reply_json(res, 200, "OK",
                    json_pack("{s:o, s:s}", "data", arr, "currency", dash_plans(d)->currency));
}

/* GET invoices/YYYY-MM (JSON) or invoices/YYYY-MM.csv (a download). */
void dash_invoice(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                  struct who *w, const char *which)
{
    struct store_account a;
    int64_t now = kn_unix_now(), month;
    size_t len = strlen(which);
    int csv = len > 4 && strcmp(which + len - 4, ".csv") == 0;
    char text[16];
    json_t *doc;

    if (csv)
        len -= 4;
    if (len >= sizeof(text))
        goto not_found;
    memcpy(text, which, len);
    text[len] = '\0';
    if (kn_month_parse(text, &month) != 0 || month > kn_month_of(now))
        goto not_found;
    if (own_account(d, req, res, w, &a) != 0)
        return;
    if (report_invoice(d->store, dash_plans(d), &a, month, now, &doc) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    if (!csv) {
        dash_reply_json(res, 200, "OK", doc);
        return;
    }
    res->status = 200;
    res->reason = "OK";
    res->body = report_invoice_csv(doc, &res->body_len);
    res->content_type = "text/csv; charset=utf-8";
    /* A draft has no number: its month names it. */
    const char *number = json_string_value(json_object_get(doc, "number"));
    snprintf(res->content_disposition, sizeof(res->content_disposition),
             "attachment; filename=\"konnect-invoice-%s%s.csv\"", number != NULL ? number : text,
             number != NULL ? "" : "-draft");
    json_decref(doc);
    return;
not_found:
    dash_reply_error(res, req, KN_ERR_NOT_FOUND,
                     "No such invoice: give a month such as 2026-11 that has started.", NULL);
}
