/* The dashboard's routes, their access rules, and sessions; see dashboard.h. */
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

struct dashboard *dashboard_new(const struct kn_config *c, const uint8_t secret[32],
                                struct keysync *ks, char *err, size_t errsize)
{
    struct dashboard *d = kn_calloc(1, sizeof(*d));

    d->cfg = c;
    memcpy(d->secret, secret, 32);
    d->ks = ks;
    if ((d->store = store_open(c->database, 1, err, errsize)) == NULL) {
        sodium_memzero(d->secret, sizeof(d->secret));
        free(d);
        return NULL;
    }
    return d;
}

void dashboard_free(struct dashboard *d)
{
    if (d == NULL)
        return;
    store_close(d->store);
    sodium_memzero(d->secret, sizeof(d->secret));
    free(d);
}

int dashboard_prune(struct dashboard *d, int64_t *deleted)
{
    struct store_retention r = {
        .audit_days = d->cfg->audit_retention_days,
        .change_log_days = d->cfg->change_log_retention_days,
        .throttle_s = 86400,
        .done_days = 30,
        .session_idle_s = d->cfg->session_idle_s,
    };

    if (store_prune(d->store, &r, kn_unix_now(), deleted) == STORE_OK)
        return 0;
    fprintf(stderr, "konnect: %s\n", store_errmsg(d->store));
    return -1;
}

const struct plans *dash_plans(struct dashboard *d)
{
    return keysync_plans(d->ks);
}

/* ---- responses --------------------------------------------------------------------------- */

void dash_reply_json(struct dash_response *res, int status, const char *reason, json_t *doc)
{
    res->status = status;
    res->reason = reason;
    if (doc == NULL) {
        res->body = NULL;
        res->body_len = 0;
        return;
    }
    res->body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (res->body == NULL)
        kn_fatal("cannot serialize dashboard response");
    res->body_len = strlen(res->body);
}

void dash_reply_error(struct dash_response *res, const struct dash_request *req, enum kn_err err,
                      const char *message, const char *param)
{
    const struct kn_error_def *def = kn_error_def(err);

    free(res->body); /* A reply made earlier in the same call, if any, is replaced. */
    res->status = def->status;
    res->reason = def->reason;
    res->error_code = def->code;
    res->body = kn_error_json(err, message, param, req->request_id, &res->body_len);
}

void dash_reply_store_error(struct dashboard *d, struct dash_response *res,
                            const struct dash_request *req)
{
    fprintf(stderr, "konnect: dashboard store error (%s): %s\n", req->request_id,
            store_errmsg(d->store));
    dash_reply_error(res, req, KN_ERR_INTERNAL, NULL, NULL);
}

void dash_set_cookie(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                     const char *token)
{
    const char *name = req->https ? SESSION_COOKIE_HTTPS : SESSION_COOKIE;

    if (token != NULL)
        snprintf(res->set_cookie, sizeof(res->set_cookie),
                 "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%u%s", name, token,
                 d->cfg->session_max_s, req->https ? "; Secure" : "");
    else
        snprintf(res->set_cookie, sizeof(res->set_cookie),
                 "%s=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0%s", name,
                 req->https ? "; Secure" : "");
}

void dash_audit(struct dashboard *d, const char *account_id, const char *actor, const char *ip,
                const char *action, const char *target, const char *result, const char *detail)
{
    lifecycle_audit_entry(d->store, account_id, actor, ip, action, target, result, detail);
}

/* ---- request helpers --------------------------------------------------------------------- */

json_t *dash_body_object(const struct dash_request *req, struct dash_response *res)
{
    json_error_t jerr;
    json_t *doc;

    if (req->content_type == NULL || strncasecmp(req->content_type, "application/json", 16) != 0 ||
        (req->content_type[16] != '\0' && req->content_type[16] != ';' &&
         req->content_type[16] != ' ')) {
        dash_reply_error(res, req, KN_ERR_UNSUPPORTED_MEDIA_TYPE, NULL, NULL);
        return NULL;
    }
    doc = json_loadb(req->body != NULL ? req->body : "", req->body_len, JSON_REJECT_DUPLICATES,
                     &jerr);
    if (doc == NULL || !json_is_object(doc)) {
        json_decref(doc);
        dash_reply_error(res, req, KN_ERR_INVALID_JSON, "The request body must be a JSON object.",
                         NULL);
        return NULL;
    }
    return doc;
}

const char *dash_string_member(json_t *doc, const char *name, int required,
                               const struct dash_request *req, struct dash_response *res,
                               int *failed)
{
    json_t *v = json_object_get(doc, name);
    char msg[96];

    if (v == NULL && !required)
        return NULL;
    if (!json_is_string(v)) {
        snprintf(msg, sizeof(msg), "'%s' must be a string.", name);
        dash_reply_error(res, req, v == NULL ? KN_ERR_MISSING_PARAMETER : KN_ERR_INVALID_PARAMETER,
                         v == NULL ? NULL : msg, name);
        *failed = 1;
        return NULL;
    }
    return json_string_value(v);
}

const char *dash_email_member(json_t *doc, const struct dash_request *req,
                              struct dash_response *res)
{
    int failed = 0;
    const char *email = dash_string_member(doc, "email", 1, req, res, &failed);

    if (email == NULL)
        return NULL;
    if (!store_email_valid(email)) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "Enter an email address such as dev@example.com.", "email");
        return NULL;
    }
    return email;
}

int dash_query_param(const struct dash_request *req, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);

    for (const char *p = req->query; p != NULL && *p != '\0';) {
        size_t len = strcspn(p, "&");
        if (len > n && strncmp(p, name, n) == 0 && p[n] == '=') {
            if (len - n - 1 >= size)
                return -1;
            memcpy(out, p + n + 1, len - n - 1);
            out[len - n - 1] = '\0';
            return 1;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return 0;
}

/* Requests made without a session must come from the dashboard's own origin: KONNECT_PUBLIC_URL
 * when it is set (the HTTP layer has already refused other hosts), else the Host asked for. */
static int same_origin(struct dashboard *d, const struct dash_request *req)
{
    char expected[600];

    if (req->origin == NULL)
        return 1; /* Not a browser's cross-origin request; SameSite and JSON cover the rest. */
    if (d->cfg->public_url[0] != '\0')
        return strcmp(req->origin, d->cfg->public_url) == 0;
    if (req->host == NULL)
        return 0;
    snprintf(expected, sizeof(expected), "%s://%s", req->https ? "https" : "http", req->host);
    return strcmp(req->origin, expected) == 0;
}

int dash_session_of(struct dashboard *d, const struct dash_request *req, struct who *w)
{
    const char *token;
    size_t len;
    uint8_t hash[32];
    int64_t now = kn_unix_now();

    memset(w, 0, sizeof(*w));
    if (req->cookie == NULL ||
        session_cookie_find(req->cookie, strlen(req->cookie),
                            req->https ? SESSION_COOKIE_HTTPS : SESSION_COOKIE, &token,
                            &len) != 0 ||
        len != SESSION_TOKEN_LEN)
        return -1;
    session_token_hash(d->secret, token, len, hash);
    if (store_session_find(d->store, hash, &w->session) != STORE_OK)
        return -1;
    if (w->session.expires_at <= now ||
        w->session.last_seen_at + (int64_t)d->cfg->session_idle_s <= now) {
        store_session_delete(d->store, hash);
        return -1;
    }
    if (store_user_find(d->store, w->session.user_id, &w->user) != STORE_OK ||
        store_member_find(d->store, w->session.account_id, w->session.user_id, &w->member) !=
            STORE_OK)
        return -1;
    /* Write the idle clock at most once a minute. */
    if (now - w->session.last_seen_at >= 60)
        store_session_touch(d->store, hash, now);
    w->actor.name = w->user.email;
    w->actor.ip = req->ip;
    return 0;
}

static int csrf_ok(const struct dash_request *req, const struct who *w)
{
    size_t n = strlen(w->session.csrf_token);
    return req->csrf_token != NULL && strlen(req->csrf_token) == n &&
           sodium_memcmp(req->csrf_token, w->session.csrf_token, n) == 0;
}

/* ---- sessions ---------------------------------------------------------------------------- */

json_t *dash_session_doc(struct dashboard *d, const struct store_user *u,
                         const struct store_member *m, const char *account_email, const char *csrf)
{
    return json_pack("{s:{s:s, s:s}, s:{s:s, s:s}, s:s, s:s, s:o}", "user", "id", u->id, "email",
                     u->email, "account", "id", m->account_id, "email", account_email, "role",
                     m->role, "csrf_token", csrf, "two_factor",
                     dash_two_factor_doc(d, u, m->account_id));
}

void dash_start_session(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, int status, const struct store_user *u,
                        const struct store_member *m)
{
    struct store_session x;
    struct store_account a;
    char token[SESSION_TOKEN_LEN + 1];
    int64_t now = kn_unix_now();

    memset(&x, 0, sizeof(x));
    session_token_new(token);
    session_token_hash(d->secret, token, SESSION_TOKEN_LEN, x.token_hash);
    kn_strlcpy(x.user_id, u->id, sizeof(x.user_id));
    kn_strlcpy(x.account_id, m->account_id, sizeof(x.account_id));
    base62_random(x.csrf_token, 32);
    x.csrf_token[32] = '\0';
    x.created_at = x.last_seen_at = now;
    x.expires_at = now + d->cfg->session_max_s;
    kn_strlcpy(x.ip, req->ip != NULL ? req->ip : "", sizeof(x.ip));
    if (store_session_insert(d->store, &x) != STORE_OK ||
        store_account_find(d->store, m->account_id, &a) != STORE_OK) {
        sodium_memzero(token, sizeof(token));
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_set_cookie(d, req, res, token);
    sodium_memzero(token, sizeof(token));
    dash_reply_json(res, status, status == 201 ? "Created" : "OK",
                    dash_session_doc(d, u, m, a.email, x.csrf_token));
}

static void do_signout(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    store_session_delete(d->store, w->session.token_hash);
    dash_audit(d, w->member.account_id, w->user.email, req->ip, "user.signout", w->user.email, "ok",
               NULL);
    dash_set_cookie(d, req, res, NULL);
    dash_reply_json(res, 204, "No Content", NULL);
}

static void do_revoke_sessions(struct dashboard *d, const struct dash_request *req,
                               struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    if (store_sessions_delete_user(d->store, w->user.id) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_audit(d, w->member.account_id, w->user.email, req->ip, "user.sessions_revoked",
               w->user.email, "ok", "every session ended");
    dash_set_cookie(d, req, res, NULL);
    dash_reply_json(res, 204, "No Content", NULL);
}

static void do_session(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, struct who *w, const char *param)
{
    struct store_account a;
    (void)param;
    if (store_account_find(d->store, w->member.account_id, &a) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_reply_json(res, 200, "OK",
                    dash_session_doc(d, &w->user, &w->member, a.email, w->session.csrf_token));
}

/* ---- routing ----------------------------------------------------------------------------- */

static const struct dash_route routes[] = {
    {"POST", "signup", OPEN, dash_signup, 1, NULL, NULL, 0, 0},
    {"POST", "signin", OPEN, dash_signin, 1, NULL, NULL, 0, 0},
    {"POST", "invites/accept", OPTIONAL, dash_invite_accept, 1, NULL, NULL, 0, 0},
    {"POST", "password/set", OPEN, dash_password_set, 1, NULL, NULL, 0, 0},
    {"POST", "password", SIGNED_IN, dash_password_change, 1, NULL, NULL, 0, 1},
    {"GET", "session", SIGNED_IN, do_session, 0, NULL, NULL, 0, 1},
    {"POST", "signout", SIGNED_IN, do_signout, 0, NULL, NULL, 0, 1},
    {"POST", "two-factor/setup", SIGNED_IN, dash_two_factor_setup, 1, NULL, NULL, 0, 1},
    {"POST", "two-factor/enable", SIGNED_IN, dash_two_factor_enable, 0, NULL, NULL, 0, 1},
    {"POST", "two-factor/disable", SIGNED_IN, dash_two_factor_disable, 1, NULL, NULL, 0, 0},
    {"POST", "two-factor/recovery-codes", SIGNED_IN, dash_two_factor_codes, 1, NULL, NULL, 0, 0},
    {"POST", "account/two-factor", OWNER, dash_account_two_factor, 1, NULL, NULL, 0, 0},
    {"POST", "sessions/revoke-all", SIGNED_IN, do_revoke_sessions, 0, NULL, NULL, 0, 1},
    {"GET", "keys", SIGNED_IN, dash_keys_list, 0, NULL, NULL, 0, 0},
    {"POST", "keys", SIGNED_IN, dash_key_create, 0, NULL, NULL, 0, 0},
    {"PATCH", "keys/*", SIGNED_IN, dash_key_update, 0, NULL, NULL, 0, 0},
    {"POST", "keys/*/roll", SIGNED_IN, dash_key_roll, 0, NULL, NULL, 0, 0},
    {"POST", "keys/*/revoke", SIGNED_IN, dash_key_revoke, 0, NULL, NULL, 0, 0},
    {"GET", "members", SIGNED_IN, dash_members, 0, NULL, NULL, 0, 0},
    {"POST", "members/invite", OWNER, dash_invite, 0, NULL, NULL, 0, 0},
    {"POST", "members/*/remove", OWNER, dash_member_remove, 0, NULL, NULL, 0, 0},
    {"POST", "invites/*/cancel", OWNER, dash_invite_cancel, 0, NULL, NULL, 0, 0},
    {"GET", "audit", SIGNED_IN, dash_audit_page, 0, NULL, NULL, 0, 0},
    {"GET", "usage", SIGNED_IN, dash_usage, 0, NULL, NULL, 0, 0},
    {"GET", "invoices", SIGNED_IN, dash_invoices, 0, NULL, NULL, 0, 0},
    {"GET", "invoices/*", SIGNED_IN, dash_invoice, 0, NULL, NULL, 0, 0},
};

/* Matches path against pattern, copying the segment that "*" stands for into param. */
static int path_matches(const char *pattern, const char *path, char param[DASH_PARAM_MAX])
{
    const char *star = strchr(pattern, '*');
    size_t pre, len;

    param[0] = '\0';
    if (star == NULL)
        return strcmp(pattern, path) == 0;
    pre = (size_t)(star - pattern);
    if (strncmp(pattern, path, pre) != 0)
        return 0;
    len = strcspn(path + pre, "/");
    if (len == 0 || len >= DASH_PARAM_MAX || strcmp(path + pre + len, star + 1) != 0)
        return 0;
    memcpy(param, path + pre, len);
    param[len] = '\0';
    return 1;
}

const struct dash_route *dash_find_route(const struct dash_route *table, size_t n,
                                         const char *method, const char *path,
                                         char param[DASH_PARAM_MAX], char *allowed,
                                         size_t allowed_size)
{
    const struct dash_route *found = NULL;

    allowed[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char p[DASH_PARAM_MAX];
        if (!path_matches(table[i].path, path, p))
            continue;
        size_t used = strlen(allowed);
        snprintf(allowed + used, allowed_size - used, "%s%s", used ? ", " : "", table[i].method);
        if (found == NULL && strcmp(table[i].method, method) == 0) {
            found = &table[i];
            memcpy(param, p, DASH_PARAM_MAX);
        }
    }
    return found;
}

static const struct dash_route *find_route(const char *method, const char *path,
                                           char param[DASH_PARAM_MAX], char *allowed,
                                           size_t allowed_size)
{
    return dash_find_route(routes, sizeof(routes) / sizeof(routes[0]), method, path, param, allowed,
                           allowed_size);
}

int dashboard_hashes_passwords(const char *method, const char *path)
{
    char param[DASH_PARAM_MAX], allowed[64];
    const struct dash_route *r;

    if (strncmp(path, "/dashboard/api/", 15) != 0)
        return 0;
    r = find_route(method, path + 15, param, allowed, sizeof(allowed));
    return r != NULL && r->hashes;
}

void dashboard_handle(struct dashboard *d, const struct dash_request *req,
                      struct dash_response *res)
{
    const struct dash_route *r;
    char param[DASH_PARAM_MAX], allowed[64], msg[96];
    struct who w;
    int signed_in;

    memset(res, 0, sizeof(*res));
    if (req->api_key_id != NULL) {
        dash_manage_handle(d, req, res);
        return;
    }
    if (req->operator_key_hash != NULL) {
        dash_operator_handle(d, req, res);
        return;
    }
    if (strncmp(req->path, "/dashboard/api/", 15) != 0 ||
        ((r = find_route(req->method, req->path + 15, param, allowed, sizeof(allowed))) == NULL &&
         allowed[0] == '\0')) {
        dash_reply_error(res, req, KN_ERR_NOT_FOUND, NULL, NULL);
        return;
    }
    if (r == NULL) {
        snprintf(msg, sizeof(msg), "This call only accepts %s.", allowed);
        dash_reply_error(res, req, KN_ERR_METHOD_NOT_ALLOWED, msg, NULL);
        kn_strlcpy(res->allow, allowed, sizeof(res->allow));
        return;
    }
    signed_in = r->access != OPEN && dash_session_of(d, req, &w) == 0;
    if (!signed_in && (r->access == SIGNED_IN || r->access == OWNER)) {
        dash_reply_error(res, req, KN_ERR_NOT_SIGNED_IN, NULL, NULL);
        dash_set_cookie(d, req, res, NULL);
        return;
    }
    /* Every state-changing call made with a session carries its CSRF token; every call made
     * without one comes from our own origin. */
    if (signed_in && strcmp(req->method, "GET") != 0 &&
        (!csrf_ok(req, &w) || !same_origin(d, req))) {
        dash_reply_error(res, req, KN_ERR_CSRF_FAILED, NULL, NULL);
        dash_audit(d, w.member.account_id, w.user.email, req->ip, "csrf.refused", req->path + 15,
                   "denied", req->method);
        return;
    }
    if (!signed_in && !same_origin(d, req)) {
        dash_reply_error(res, req, KN_ERR_CSRF_FAILED, NULL, NULL);
        return;
    }
    if (r->access == OWNER && strcmp(w.member.role, "owner") != 0) {
        dash_reply_error(res, req, KN_ERR_OWNER_REQUIRED, NULL, NULL);
        dash_audit(d, w.member.account_id, w.user.email, req->ip, "member.refused", req->path + 15,
                   "denied", "owners only");
        return;
    }
    if (signed_in && !r->before_two_factor && w.user.totp_enabled_at == 0) {
        /* An account that requires two-factor sign-in: a member without it may only turn it
         * on (and sign out). */
        int required = 0;
        if (store_account_two_factor(d->store, w.member.account_id, &required) != STORE_OK) {
            dash_reply_store_error(d, res, req);
            return;
        }
        if (required) {
            dash_reply_error(res, req, KN_ERR_TWO_FACTOR_REQUIRED, NULL, NULL);
            return;
        }
    }
    r->fn(d, req, res, signed_in ? &w : NULL, param);
}
