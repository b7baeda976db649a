/* The operator API (/v1/operator/...; docs/openapi.yaml): what the operator's own sign-up and
 * billing systems need of Konnect, with an operator key (sk_op_..., konnect operator-key create).
 * Create, list and show accounts; set an account's plan and quotas; suspend and reinstate it;
 * create its first keys; export every account's usage for a month, as JSON or CSV.
 *
 * The HTTP layer checked the key's form and checksum and sends its keyed hash; the key is found
 * here, in the store, on every call, so that a revocation is in force at once on every server. */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/session.h"
#include "core/util.h"
#include "dashboard/internal.h"
#include "keys/apikey.h"
#include "metering/plans.h"
#include "metering/report.h"

#define LAST_USE_EVERY_S 60 /* A key's last use is written at most once a minute. */
#define QUOTA_MAX 1000000000000000LL

static dash_handler op_accounts, op_account_create, op_account_show, op_account_update,
    op_account_suspend, op_account_reinstate, op_account_key, op_usage;

static const struct dash_route op_routes[] = {
    {"GET", "accounts", OWNER, op_accounts, 0, "data", "id", 0, 0},
    {"POST", "accounts", OWNER, op_account_create, 0, NULL, NULL, 0, 0},
    {"GET", "accounts/*", OWNER, op_account_show, 0, NULL, NULL, 0, 0},
    {"PATCH", "accounts/*", OWNER, op_account_update, 0, NULL, NULL, 0, 0},
    {"POST", "accounts/*", OWNER, op_account_update, 0, NULL, NULL, 0, 0},
    {"POST", "accounts/*/suspend", OWNER, op_account_suspend, 0, NULL, NULL, 0, 0},
    {"POST", "accounts/*/reinstate", OWNER, op_account_reinstate, 0, NULL, NULL, 0, 0},
    {"POST", "accounts/*/keys", OWNER, op_account_key, 0, NULL, NULL, 0, 0},
    {"GET", "usage", OWNER, op_usage, 0, NULL, NULL, 0, 0},
    {"GET", "usage.csv", OWNER, op_usage, 0, NULL, NULL, 0, 0},
};

/* ---- accounts ---------------------------------------------------------------------------- */

static json_t *quota_doc(int64_t q)
{
    return q == STORE_QUOTA_FROM_PLAN   ? json_null()
           : q == STORE_QUOTA_UNLIMITED ? json_string("unlimited")
                                        : json_integer((json_int_t)q);
}

static json_t *account_doc(const struct store_account *a)
{
    return json_pack(
        "{s:s, s:s, s:I, s:o, s:o, s:o, s:o}", "id", a->id, "email", a->email, "created",
        (json_int_t)a->created_at, "plan", a->plan[0] != '\0' ? json_string(a->plan) : json_null(),
        "quota_requests", quota_doc(a->quota_requests), "quota_tokens", quota_doc(a->quota_tokens),
        "suspended", a->suspended_at != 0 ? json_integer(a->suspended_at) : json_null());
}

/* Every account, oldest first. */
struct accounts {
    struct store_account *a;
    size_t n;
};

static int read_accounts(struct dashboard *d, struct accounts *l)
{
    return store_accounts_list(d->store, &l->a, &l->n) == STORE_OK ? 0 : -1;
}

static void op_accounts(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, struct who *w, const char *param)
{
    struct accounts l;
    json_t *arr = json_array();

    (void)w, (void)param;
    if (read_accounts(d, &l) != 0) {
        json_decref(arr);
        free(l.a);
        dash_reply_store_error(d, res, req);
        return;
    }
    for (size_t i = 0; i < l.n; i++)
        json_array_append_new(arr, account_doc(&l.a[i]));
    free(l.a);
    dash_reply_json(res, 200, "OK", json_pack("{s:o}", "data", arr));
}

/* Finds the account of the path (an id, or an email). Returns 0, or -1 after replying 404. */
static int path_account(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, const char *which, struct store_account *a)
{
    int r = store_account_find(d->store, which, a);

    if (r == STORE_OK)
        return 0;
    if (r == STORE_NOT_FOUND)
        dash_reply_error(res, req, KN_ERR_NOT_FOUND, "No such account.", "id");
    else
        dash_reply_store_error(d, res, req);
    return -1;
}

static void op_account_show(struct dashboard *d, const struct dash_request *req,
                            struct dash_response *res, struct who *w, const char *which)
{
    struct store_account a;
    int64_t now = kn_unix_now();
    json_t *usage;

    (void)w;
    if (path_account(d, req, res, which, &a) != 0)
        return;
    if (report_usage(d->store, dash_plans(d), &a, kn_month_of(now), now, &usage) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_reply_json(res, 200, "OK",
                    json_pack("{s:o, s:o}", "account", account_doc(&a), "usage", usage));
}

/* Reads "plan": a plan of the plans in force, or "default" for the file's default plan, into
 * stored (what the account row keeps: "" for the default). Returns 1 when given, 0 when absent,
 * or -1 after replying 400. */
static int plan_member(struct dashboard *d, json_t *doc, const struct dash_request *req,
                       struct dash_response *res, char stored[STORE_PLAN_MAX + 1])
{
    const struct plans *ps = dash_plans(d);
    json_t *v = json_object_get(doc, "plan");
    const struct plan *p;
    char msg[200];

    if (v == NULL)
        return 0;
    if (!json_is_string(v) || json_string_length(v) > STORE_PLAN_MAX) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "'plan' must be the name of a plan of the plans file.", "plan");
        return -1;
    }
    const char *name = json_string_value(v);
    if ((p = plans_find(ps, name)) != NULL && name[0] != '\0') {
        kn_strlcpy(stored, ps->builtin ? "" : p->name, STORE_PLAN_MAX + 1);
        return 1;
    }
    if (strcmp(name, "default") == 0) {
        stored[0] = '\0';
        return 1;
    }
    size_t used = (size_t)snprintf(msg, sizeof(msg), "No such plan. The plans are:");
    for (size_t i = 0; i < ps->count && used < sizeof(msg) - PLAN_NAME_MAX - 4; i++)
        used += (size_t)snprintf(msg + used, sizeof(msg) - used, "%s %s", i ? "," : "",
                                 ps->plan[i].name);
    dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, msg, "plan");
    return -1;
}

/* Reads a quota member: a number, "unlimited", or null for the plan's. Returns 1 when given, 0
 * when absent, or -1 after replying 400. */
static int quota_member(json_t *doc, const char *name, const struct dash_request *req,
                        struct dash_response *res, int64_t *out)
{
    json_t *v = json_object_get(doc, name);
    char msg[128];

    if (v == NULL)
        return 0;
    if (json_is_null(v)) {
        *out = STORE_QUOTA_FROM_PLAN;
        return 1;
    }
    if (json_is_string(v) && strcmp(json_string_value(v), "unlimited") == 0) {
        *out = STORE_QUOTA_UNLIMITED;
        return 1;
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= QUOTA_MAX) {
        *out = json_integer_value(v);
        return 1;
    }
    snprintf(msg, sizeof(msg),
             "'%s' must be a number from 0 to 10^15, \"unlimited\", or null for the plan's.", name);
    dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, msg, name);
    return -1;
}

/* Applies the plan and quotas of doc to account a (re-read after). Returns 0, 1 when nothing was
 * given, or -1 after replying. */
static int apply_plan_and_quota(struct dashboard *d, json_t *doc, const struct dash_request *req,
                                struct dash_response *res, const struct who *w,
                                struct store_account *a)
{
    char plan[STORE_PLAN_MAX + 1], detail[256];
    int64_t requests = a->quota_requests, tokens = a->quota_tokens;
    int has_plan, has_req, has_tok;

    if ((has_plan = plan_member(d, doc, req, res, plan)) < 0 ||
        (has_req = quota_member(doc, "quota_requests", req, res, &requests)) < 0 ||
        (has_tok = quota_member(doc, "quota_tokens", req, res, &tokens)) < 0)
        return -1;
    if (!has_plan && !has_req && !has_tok)
        return 1;
    if (has_plan) {
        snprintf(detail, sizeof(detail), "plan %s (was %s)", plan[0] ? plan : "the default",
                 a->plan[0] ? a->plan : "the default");
        if (store_account_set_plan(d->store, a->id, plan) != STORE_OK)
            goto fail;
        dash_audit(d, a->id, w->actor.name, req->ip, "account.plan", a->email, "ok", detail);
    }
    if (has_req || has_tok) {
        char r0[24], r1[24], t0[24], t1[24];
#define QUOTA_TEXT(q, b)                                                                           \
    ((q) == STORE_QUOTA_FROM_PLAN   ? "plan"                                                       \
     : (q) == STORE_QUOTA_UNLIMITED ? "unlimited"                                                  \
                                    : (snprintf(b, sizeof(b), "%lld", (long long)(q)), b))
        snprintf(detail, sizeof(detail), "requests %s (was %s), tokens %s (was %s)",
                 QUOTA_TEXT(requests, r1), QUOTA_TEXT(a->quota_requests, r0),
                 QUOTA_TEXT(tokens, t1), QUOTA_TEXT(a->quota_tokens, t0));
#undef QUOTA_TEXT
        if (store_account_set_quota(d->store, a->id, requests, tokens) != STORE_OK)
            goto fail;
        dash_audit(d, a->id, w->actor.name, req->ip, "account.quota", a->email, "ok", detail);
    }
    if (store_account_find(d->store, a->id, a) != STORE_OK)
        goto fail;
    return 0;
fail:
    dash_reply_store_error(d, res, req);
    return -1;
}

/* A one-time link with which a new owner chooses a password (as konnect account create prints),
 * written to url ("" when it could not be made: the operator can make one with the CLI). */
static void password_link(struct dashboard *d, const struct store_user *u, char *url, size_t size)
{
    struct store_password_token t;
    char token[SESSION_TOKEN_LEN + 1];

    url[0] = '\0';
    memset(&t, 0, sizeof(t));
    session_token_new(token);
    session_token_hash(d->secret, token, SESSION_TOKEN_LEN, t.token_hash);
    kn_strlcpy(t.user_id, u->id, sizeof(t.user_id));
    t.created_at = kn_unix_now();
    t.expires_at = t.created_at + PASSWORD_LINK_TTL;
    if (store_password_token_insert(d->store, &t) == STORE_OK)
        snprintf(url, size, "/set-password#token=%s", token);
    sodium_memzero(token, sizeof(token));
}

static void op_account_create(struct dashboard *d, const struct dash_request *req,
                              struct dash_response *res, struct who *w, const char *param)
{
    struct store_account a;
    struct store_user u;
    char url[96];
    json_t *doc, *propagation;
    const char *email, *existing;
    int failed = 0;

    (void)param;
    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if ((email = dash_email_member(doc, req, res)) == NULL ||
        ((existing = dash_string_member(doc, "existing_user", 0, req, res, &failed)), failed))
        goto out;
    if (store_account_find(d->store, email, &a) == STORE_OK) {
        dash_reply_error(res, req, KN_ERR_EMAIL_TAKEN, "An account with this email exists.",
                         "email");
        goto out;
    }
    /* As the CLI: a user anyone could have made (sign-up, an invitation) is never handed an
     * account unless the operator names that user. */
    if (existing == NULL && store_user_find(d->store, email, &u) == STORE_OK) {
        dash_reply_error(res, req, KN_ERR_EMAIL_TAKEN,
                         "This email is already a dashboard user, made by sign-up or by an "
                         "invitation. If that user is the right owner, give their id as "
                         "existing_user.",
                         "email");
        goto out;
    }
    /* The plan and quotas are checked before anything is made. */
    char plan[STORE_PLAN_MAX + 1];
    int64_t q;
    if (plan_member(d, doc, req, res, plan) < 0 ||
        quota_member(doc, "quota_requests", req, res, &q) < 0 ||
        quota_member(doc, "quota_tokens", req, res, &q) < 0)
        goto out;
    int r = store_account_create(d->store, email, NULL, existing, &a);
    if (r == STORE_NOT_FOUND || r == STORE_CONFLICT) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, store_errmsg(d->store),
                         existing != NULL ? "existing_user" : "email");
        goto out;
    }
    if (r != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    dash_audit(d, a.id, w->actor.name, req->ip, "account.create", a.email, "ok",
               existing != NULL ? "owner: an existing user" : "owner: new user");
    if (apply_plan_and_quota(d, doc, req, res, w, &a) < 0)
        goto out;
    url[0] = '\0';
    if (store_user_find(d->store, a.email, &u) == STORE_OK && u.password_hash[0] == '\0') {
        password_link(d, &u, url, sizeof(url));
        if (url[0] != '\0')
            dash_audit(d, a.id, w->actor.name, req->ip, "user.password_link", u.email, "ok", NULL);
    }
    propagation = dash_sync_changes(d);
    json_t *out = json_pack("{s:o, s:o, s:o}", "account", account_doc(&a), "password_link",
                            url[0] ? json_string(url) : json_null(), "propagation", propagation);
    sodium_memzero(url, sizeof(url));
    dash_reply_json(res, 201, "Created", out);
out:
    json_decref(doc);
}

static void op_account_update(struct dashboard *d, const struct dash_request *req,
                              struct dash_response *res, struct who *w, const char *which)
{
    struct store_account a;
    json_t *doc;
    int r;

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if (path_account(d, req, res, which, &a) != 0 ||
        (r = apply_plan_and_quota(d, doc, req, res, w, &a)) < 0)
        goto out;
    if (r == 1) {
        dash_reply_error(res, req, KN_ERR_MISSING_PARAMETER,
                         "Give plan, quota_requests or quota_tokens.", NULL);
        goto out;
    }
    dash_reply_json(
        res, 200, "OK",
        json_pack("{s:o, s:o}", "account", account_doc(&a), "propagation", dash_sync_changes(d)));
out:
    json_decref(doc);
}

static void suspension(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, struct who *w, const char *which, int suspend)
{
    struct store_account a;

    if (path_account(d, req, res, which, &a) != 0)
        return;
    if ((a.suspended_at != 0) != suspend) {
        if (store_account_set_suspended(d->store, a.id, suspend ? kn_unix_now() : 0) != STORE_OK ||
            store_account_find(d->store, a.id, &a) != STORE_OK) {
            dash_reply_store_error(d, res, req);
            return;
        }
        dash_audit(d, a.id, w->actor.name, req->ip,
                   suspend ? "account.suspend" : "account.reinstate", a.email, "ok",
                   suspend ? "every key refused" : "its keys work again");
    }
    dash_reply_json(
        res, 200, "OK",
        json_pack("{s:o, s:o}", "account", account_doc(&a), "propagation", dash_sync_changes(d)));
}

static void op_account_suspend(struct dashboard *d, const struct dash_request *req,
                               struct dash_response *res, struct who *w, const char *which)
{
    suspension(d, req, res, w, which, 1);
}

static void op_account_reinstate(struct dashboard *d, const struct dash_request *req,
                                 struct dash_response *res, struct who *w, const char *which)
{
    suspension(d, req, res, w, which, 0);
}

/* A key of the account, made as its owner would in the dashboard (the same body and answer),
 * admin keys included: the account's first keys. */
static void op_account_key(struct dashboard *d, const struct dash_request *req,
                           struct dash_response *res, struct who *w, const char *which)
{
    struct store_account a;

    if (path_account(d, req, res, which, &a) != 0)
        return;
    kn_strlcpy(w->member.account_id, a.id, sizeof(w->member.account_id));
    dash_key_create(d, req, res, w, "");
}

/* ---- usage export ------------------------------------------------------------------------ */

static void csv_field(char **buf, size_t *len, size_t *cap, const char *s, int last)
{
    size_t need = 2 * strlen(s) + 4;

    if (*len + need >= *cap) {
        *cap = (*len + need) * 2;
        *buf = kn_realloc(*buf, *cap);
    }
    /* RFC 4180: quoted when it holds a comma, a quote or a line break; a leading = + - @ is
     * quoted away too, so that a spreadsheet never runs it as a formula. */
    int quote = strpbrk(s, ",\"\r\n") != NULL || strchr("=+-@", s[0]) != NULL;
    char *p = *buf + *len;
    if (quote)
        *p++ = '"';
    if (quote && strchr("=+-@", s[0]) != NULL && s[0] != '\0')
        *p++ = '\'';
    for (; *s != '\0'; s++) {
        if (*s == '"')
            *p++ = '"';
        *p++ = *s;
    }
    if (quote)
        *p++ = '"';
    *p++ = last ? '\n' : ',';
    *len = (size_t)(p - *buf);
}

static void op_usage(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                     struct who *w, const char *param)
{
    const struct plans *ps = dash_plans(d);
    struct accounts l;
    int64_t now = kn_unix_now(), month = kn_month_of(now);
    char text[16], m[16];
    int csv = strcmp(req->path + strlen(req->path) - 4, ".csv") == 0;
    int found = dash_query_param(req, "month", text, sizeof(text));
    json_t *arr = json_array();

    (void)w, (void)param;
    if (found != 0 &&
        (found < 0 || kn_month_parse(text, &month) != 0 || month > kn_month_of(now))) {
        json_decref(arr);
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "'month' must be a month that has started, such as 2026-11.", "month");
        return;
    }
    if (read_accounts(d, &l) != 0)
        goto fail;
    for (size_t i = 0; i < l.n; i++) {
        json_t *u;
        if (report_usage(d->store, ps, &l.a[i], month, now, &u) != STORE_OK)
            goto fail;
        json_t *t = json_object_get(u, "totals");
        json_array_append_new(arr, json_pack("{s:s, s:s, s:O, s:o, s:O, s:O, s:O, s:O, s:O}",
                                             "account_id", l.a[i].id, "email", l.a[i].email, "plan",
                                             json_object_get(json_object_get(u, "plan"), "name"),
                                             "suspended", json_boolean(l.a[i].suspended_at != 0),
                                             "requests", json_object_get(t, "requests"),
                                             "input_tokens", json_object_get(t, "input_tokens"),
                                             "output_tokens", json_object_get(t, "output_tokens"),
                                             "tokens", json_object_get(t, "tokens"), "cost_micros",
                                             json_object_get(t, "cost_micros")));
        json_decref(u);
    }
    free(l.a);
    kn_month_format(month, m, sizeof(m));
    if (!csv) {
        dash_reply_json(res, 200, "OK",
                        json_pack("{s:s, s:s, s:s, s:o}", "object", "usage_export", "month", m,
                                  "currency", ps->currency, "data", arr));
        return;
    }
    static const char *const cols[] = {"account_id",    "email",    "plan",
                                       "suspended",     "requests", "input_tokens",
                                       "output_tokens", "tokens",   "cost_micros"};
    size_t ncols = sizeof(cols) / sizeof(cols[0]), len = 0, cap = 4096, i;
    char *buf = kn_malloc(cap), num[32];
    json_t *row;
    for (size_t c = 0; c < ncols; c++)
        csv_field(&buf, &len, &cap, cols[c], c + 1 == ncols);
    json_array_foreach(arr, i, row)
    {
        for (size_t c = 0; c < ncols; c++) {
            json_t *v = json_object_get(row, cols[c]);
            const char *s =
                json_is_string(v) ? json_string_value(v)
                : json_is_boolean(v)
                    ? (json_is_true(v) ? "true" : "false")
                    : (snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v)), num);
            csv_field(&buf, &len, &cap, s, c + 1 == ncols);
        }
    }
    json_decref(arr);
    res->status = 200;
    res->reason = "OK";
    res->body = buf;
    res->body_len = len;
    res->content_type = "text/csv; charset=utf-8";
    snprintf(res->content_disposition, sizeof(res->content_disposition),
             "attachment; filename=\"konnect-usage-%s.csv\"", m);
    return;
fail:
    json_decref(arr);
    free(l.a);
    dash_reply_store_error(d, res, req);
}

/* ---- the operator key -------------------------------------------------------------------- */

static int operator_of(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, struct who *w)
{
    uint8_t hash[STORE_HASH_LEN];
    struct store_key k;
    size_t n = 0;
    int64_t now = kn_unix_now();
    int r;

    memset(w, 0, sizeof(*w));
    if (sodium_hex2bin(hash, sizeof(hash), req->operator_key_hash, strlen(req->operator_key_hash),
                       NULL, &n, NULL) != 0 ||
        n != sizeof(hash)) {
        dash_reply_error(res, req, KN_ERR_INVALID_API_KEY, NULL, NULL);
        return -1;
    }
    r = store_operator_key_find(d->store, NULL, hash, &k);
    sodium_memzero(hash, sizeof(hash));
    if (r == STORE_NOT_FOUND) {
        dash_reply_error(res, req, KN_ERR_INVALID_API_KEY, NULL, NULL);
        return -1;
    }
    if (r != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return -1;
    }
    if (k.revoked_at != 0) {
        dash_reply_error(res, req, KN_ERR_API_KEY_REVOKED, NULL, NULL);
        return -1;
    }
    if (now - k.last_used_at >= LAST_USE_EVERY_S)
        store_operator_key_touch(d->store, k.id, now);
    w->api = WHO_OPERATOR;
    kn_strlcpy(w->member.role, "owner", sizeof(w->member.role));
    snprintf(w->user.email, sizeof(w->user.email), "operator key %s", k.id);
    kn_strlcpy(w->member.email, w->user.email, sizeof(w->member.email));
    w->actor.name = w->user.email;
    w->actor.ip = req->ip;
    return 0;
}

void dash_operator_handle(struct dashboard *d, const struct dash_request *req,
                          struct dash_response *res)
{
    static const struct dash_api api = {"/v1/operator/", op_routes,
                                        sizeof(op_routes) / sizeof(op_routes[0]), operator_of,
                                        "operator"};
    dash_api_dispatch(d, req, res, &api);
}
