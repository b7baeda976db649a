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
#define MAX_GRACE (30 * 86400)

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

    if (req->content_type == NULL || strncasecmp(req->content_type, "application/json", 16) != 0) {
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

json_t *dash_session_doc(const struct store_user *u, const struct store_member *m,
                         const char *account_email, const char *csrf)
{
    return json_pack("{s:{s:s, s:s}, s:{s:s, s:s}, s:s, s:s}", "user", "id", u->id, "email",
                     u->email, "account", "id", m->account_id, "email", account_email, "role",
                     m->role, "csrf_token", csrf);
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
                    dash_session_doc(u, m, a.email, x.csrf_token));
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
                    dash_session_doc(&w->user, &w->member, a.email, w->session.csrf_token));
}

/* ---- keys -------------------------------------------------------------------------------- */

/* A key in an answer about that key alone. Its request count is the key list's business: 0
 * here (the only true figure for a key just created). */
static json_t *key_doc(const struct store_key *k)
{
    return keyjson_doc(k, 0, kn_unix_now());
}

static int collect_key(void *ud, const struct store_key *k, uint64_t requests)
{
    json_array_insert_new(ud, 0, keyjson_doc(k, requests, kn_unix_now())); /* newest first */
    return 0;
}

static void do_keys_list(struct dashboard *d, const struct dash_request *req,
                         struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    int64_t month = kn_month_of(kn_unix_now());
    json_t *arr = json_array(), *usage = NULL, *k;
    char m[16];
    size_t i;

    if (store_key_list(d->store, w->member.account_id, collect_key, arr) != STORE_OK ||
        report_key_usage(d->store, w->member.account_id, month, &usage) != STORE_OK) {
        json_decref(arr);
        dash_reply_store_error(d, res, req);
        return;
    }
    /* This month's billed usage of each key, zeros for keys without any. */
    json_array_foreach(arr, i, k)
    {
        json_t *u = json_object_get(usage, json_string_value(json_object_get(k, "id")));
        json_object_set_new(k, "usage",
                            u != NULL ? json_incref(u)
                                      : json_pack("{s:i, s:i, s:i, s:i, s:i}", "requests", 0,
                                                  "input_tokens", 0, "output_tokens", 0, "tokens",
                                                  0, "cost_micros", 0));
    }
    json_decref(usage);
    dash_reply_json(res, 200, "OK",
                    json_pack("{s:o, s:s, s:s}", "data", arr, "month",
                              kn_month_format(month, m, sizeof(m)), "currency",
                              dash_plans(d)->currency));
}

/* Reads "ip_allowlist": [..] into canonical text. Returns 0, or -1 after replying 400. */
static int allowlist_member(json_t *doc, const struct dash_request *req, struct dash_response *res,
                            char out[STORE_ALLOWLIST_MAX])
{
    json_t *v = json_object_get(doc, "ip_allowlist"), *item;
    char text[STORE_ALLOWLIST_MAX * 2] = "", err[256];
    size_t i, used = 0;

    out[0] = '\0';
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        goto bad;
    json_array_foreach(v, i, item)
    {
        if (!json_is_string(item) || used + json_string_length(item) + 2 >= sizeof(text))
            goto bad;
        used += (size_t)snprintf(text + used, sizeof(text) - used, "%s%s", used ? "," : "",
                                 json_string_value(item));
    }
    if (lifecycle_canonical_allowlist(text, out, err, sizeof(err)) != 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, err, "ip_allowlist");
        return -1;
    }
    return 0;
bad:
    dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                     "'ip_allowlist' must be a list of IP addresses and CIDR ranges.",
                     "ip_allowlist");
    return -1;
}

static void sync_keys(struct dashboard *d)
{
    /* The change must be in force on the API before this answer reaches the browser. */
    if (d->ks != NULL)
        keysync_sync_now(d->ks);
}

static void reply_key_and_secret(struct dash_response *res, int status, const struct store_key *k,
                                 char sk[APIKEY_LEN + 1], json_t *extra_rolled)
{
    json_t *doc = json_pack("{s:o, s:s}", "key", key_doc(k), "secret", sk);
    if (extra_rolled != NULL)
        json_object_set_new(doc, "rolled", extra_rolled);
    sodium_memzero(sk, APIKEY_LEN + 1);
    dash_reply_json(res, status, "Created", doc);
}

/* Live keys are the owner's to create and roll; every working key counts towards the account's
 * cap (KONNECT_MAX_KEYS_PER_ACCOUNT), which only the operator's CLI may exceed. Returns 0, or -1
 * after replying. */
static int may_add_key(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const struct who *w, int live, int grows)
{
    int64_t n = 0;
    char msg[200];

    if (live && strcmp(w->member.role, "owner") != 0) {
        dash_reply_error(res, req, KN_ERR_OWNER_REQUIRED,
                         "Only the account's owner can create or roll live keys. Ask them, or "
                         "use a test key.",
                         NULL);
        return -1;
    }
    if (!grows || d->cfg->max_keys_per_account == 0)
        return 0;
    if (store_key_count_working(d->store, w->member.account_id, kn_unix_now(), &n) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return -1;
    }
    if (n < d->cfg->max_keys_per_account)
        return 0;
    snprintf(msg, sizeof(msg),
             "This account has %lld working API keys, the most it may have. Revoke keys you no "
             "longer use first.",
             (long long)n);
    dash_reply_error(res, req, KN_ERR_LIMIT_REACHED, msg, NULL);
    return -1;
}

static void do_key_create(struct dashboard *d, const struct dash_request *req,
                          struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    struct lifecycle_spec spec;
    struct store_key k;
    char sk[APIKEY_LEN + 1], allow[STORE_ALLOWLIST_MAX];
    int failed = 0;
    json_t *doc, *v;
    const char *name, *mode, *env;

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    memset(&spec, 0, sizeof(spec));
    name = dash_string_member(doc, "name", 1, req, res, &failed);
    mode = failed ? NULL : dash_string_member(doc, "mode", 1, req, res, &failed);
    env = failed ? NULL : dash_string_member(doc, "environment", 0, req, res, &failed);
    if (failed)
        goto out;
    if (lifecycle_valid_name(name) != 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "Give the key a name of 1 to 128 bytes.", "name");
        goto out;
    }
    if (apikey_mode_parse(mode, &spec.mode) != 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, "'mode' must be test or live.",
                         "mode");
        goto out;
    }
    spec.env = spec.mode == APIKEY_MODE_LIVE ? APIKEY_ENV_PRODUCTION : APIKEY_ENV_DEVELOPMENT;
    if (env != NULL && apikey_env_parse(env, &spec.env) != 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "'environment' must be development, staging or production.",
                         "environment");
        goto out;
    }
    if ((v = json_object_get(doc, "expires_in_days")) != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 3650) {
            dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                             "'expires_in_days' must be a whole number of days from 1 to 3650.",
                             "expires_in_days");
            goto out;
        }
        spec.expires_at = kn_unix_now() + json_integer_value(v) * 86400;
    }
    if ((v = json_object_get(doc, "expires_at")) != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) <= kn_unix_now()) {
            dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                             "'expires_at' must be a Unix time in the future.", "expires_at");
            goto out;
        }
        spec.expires_at = json_integer_value(v);
    }
    if (allowlist_member(doc, req, res, allow) != 0 ||
        may_add_key(d, req, res, w, spec.mode == APIKEY_MODE_LIVE, 1) != 0)
        goto out;
    spec.account_id = w->member.account_id;
    spec.name = name;
    spec.allowlist = allow;
    if (lifecycle_create(d->store, d->secret, &spec, &w->actor, &k, sk) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    sync_keys(d);
    reply_key_and_secret(res, 201, &k, sk, NULL);
out:
    json_decref(doc);
}

/* Finds the key `id` of the signed-in account. Returns 0, or -1 after replying 404. */
static int own_key(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                   const struct who *w, const char *id, struct store_key *k)
{
    if (strlen(id) < STORE_ID_SIZE && store_key_find(d->store, id, NULL, k) == STORE_OK &&
        strcmp(k->account_id, w->member.account_id) == 0)
        return 0;
    dash_reply_error(res, req, KN_ERR_NOT_FOUND, "No such API key.", "id");
    return -1;
}

static int reload(struct dashboard *d, struct store_key *k)
{
    char id[STORE_ID_SIZE];
    kn_strlcpy(id, k->id, sizeof(id));
    return store_key_find(d->store, id, NULL, k);
}

static void do_key_roll(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, struct who *w, const char *id)
{
    struct store_key old, k;
    char sk[APIKEY_LEN + 1];
    json_t *doc, *v;
    json_int_t grace = 0;
    int r;

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if ((v = json_object_get(doc, "grace_seconds")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > MAX_GRACE) {
            dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                             "'grace_seconds' must be between 0 and 2592000 (30 days).",
                             "grace_seconds");
            goto out;
        }
        grace = json_integer_value(v);
    }
    if (own_key(d, req, res, w, id, &old) != 0 ||
        may_add_key(d, req, res, w, strcmp(old.mode, "live") == 0, grace > 0) != 0)
        goto out;
    r = lifecycle_roll(d->store, d->secret, &old, grace, &w->actor, &k, sk);
    if (r == STORE_CONFLICT) {
        dash_reply_error(res, req, KN_ERR_KEY_NOT_ACTIVE, NULL, NULL);
        goto out;
    }
    if (r != STORE_OK || reload(d, &old) != STORE_OK) {
        sodium_memzero(sk, sizeof(sk));
        dash_reply_store_error(d, res, req);
        goto out;
    }
    sync_keys(d);
    reply_key_and_secret(res, 201, &k, sk, key_doc(&old));
out:
    json_decref(doc);
}

static void do_key_revoke(struct dashboard *d, const struct dash_request *req,
                          struct dash_response *res, struct who *w, const char *id)
{
    struct store_key k;

    if (own_key(d, req, res, w, id, &k) != 0)
        return;
    if (k.revoked_at == 0 && lifecycle_revoke(d->store, &k, &w->actor) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    sync_keys(d);
    if (reload(d, &k) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_reply_json(res, 200, "OK", json_pack("{s:o}", "key", key_doc(&k)));
}

static void do_key_update(struct dashboard *d, const struct dash_request *req,
                          struct dash_response *res, struct who *w, const char *id)
{
    struct store_key k;
    char allow[STORE_ALLOWLIST_MAX];
    int failed = 0;
    json_t *doc;
    const char *name;

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    name = dash_string_member(doc, "name", 0, req, res, &failed);
    if (failed)
        goto out;
    if (name != NULL && lifecycle_valid_name(name) != 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "Give the key a name of 1 to 128 bytes.", "name");
        goto out;
    }
    if (allowlist_member(doc, req, res, allow) != 0 || own_key(d, req, res, w, id, &k) != 0)
        goto out;
    /* Where a live key may be used from is the owner's to decide, like the key itself. */
    if (json_object_get(doc, "ip_allowlist") != NULL && strcmp(k.mode, "live") == 0 &&
        strcmp(w->member.role, "owner") != 0) {
        dash_reply_error(res, req, KN_ERR_OWNER_REQUIRED,
                         "Only the account's owner can change a live key's IP allowlist.", NULL);
        goto out;
    }
    if (name != NULL && lifecycle_rename(d->store, &k, name, &w->actor) != STORE_OK)
        goto fail;
    if (json_object_get(doc, "ip_allowlist") != NULL &&
        lifecycle_set_allowlist(d->store, &k, allow, &w->actor) != STORE_OK)
        goto fail;
    sync_keys(d);
    if (reload(d, &k) != STORE_OK)
        goto fail;
    dash_reply_json(res, 200, "OK", json_pack("{s:o}", "key", key_doc(&k)));
    goto out;
fail:
    dash_reply_store_error(d, res, req);
out:
    json_decref(doc);
}

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

static void do_audit(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                     struct who *w, const char *param)
{
    (void)param;
    struct audit_page p = {.arr = json_array()};
    long long before = 0;
    const char *q = req->query;

    if (q != NULL && strncmp(q, "before=", 7) == 0 &&
        kn_parse_int(q + 7, 1, INT64_MAX, &before) != 0) {
        json_decref(p.arr);
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, "'before' must be an entry id.",
                         "before");
        return;
    }
    if (store_audit_list(d->store, w->member.account_id, before, AUDIT_PAGE, collect_audit, &p) !=
        STORE_OK) {
        json_decref(p.arr);
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_reply_json(res, 200, "OK",
                    json_pack("{s:o, s:o}", "data", p.arr, "next",
                              p.n == AUDIT_PAGE ? json_integer(p.last) : json_null()));
}

/* ---- usage and invoices ------------------------------------------------------------------ */

/* Reads ?month=YYYY-MM (default: this month). Returns 0, or -1 after replying 400. */
static int month_param(const struct dash_request *req, struct dash_response *res, int64_t now,
                       int64_t *month)
{
    const char *p = req->query, *v = NULL;
    char text[16];
    size_t len;

    *month = kn_month_of(now);
    while (p != NULL && *p != '\0') {
        if (strncmp(p, "month=", 6) == 0) {
            v = p + 6;
            break;
        }
        if ((p = strchr(p, '&')) != NULL)
            p++;
    }
    if (v == NULL)
        return 0;
    len = strcspn(v, "&");
    if (len >= sizeof(text))
        goto bad;
    memcpy(text, v, len);
    text[len] = '\0';
    if (kn_month_parse(text, month) != 0)
        goto bad;
    if (*month > kn_month_of(now)) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, "That month has not started yet.",
                         "month");
        return -1;
    }
    return 0;
bad:
    dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, "'month' must be a month such as 2026-11.",
                     "month");
    return -1;
}

static int own_account(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const struct who *w, struct store_account *a)
{
    if (store_account_find(d->store, w->member.account_id, a) == STORE_OK)
        return 0;
    dash_reply_store_error(d, res, req);
    return -1;
}

static void do_usage(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
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

static void do_invoices(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, struct who *w, const char *param)
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
static void do_invoice(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, struct who *w, const char *which)
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
    snprintf(res->content_disposition, sizeof(res->content_disposition),
             "attachment; filename=\"konnect-invoice-%s.csv\"",
             json_string_value(json_object_get(doc, "number")));
    json_decref(doc);
    return;
not_found:
    dash_reply_error(res, req, KN_ERR_NOT_FOUND,
                     "No such invoice: give a month such as 2026-11 that has started.", NULL);
}

/* ---- routing ----------------------------------------------------------------------------- */

enum access {
    OPEN,     /* No session: the request must come from the dashboard's own origin. */
    OPTIONAL, /* A session when the request has one (then with its CSRF token), else OPEN. */
    SIGNED_IN,
    OWNER, /* Signed in as the account's owner. */
};

typedef void (*dash_fn)(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, struct who *w, const char *param);

struct route {
    const char *method;
    const char *path; /* Under /dashboard/api/; one "*" stands for one path segment (param). */
    enum access access;
    dash_fn fn;
    int hashes; /* 1 when the call hashes or checks a password (the dashboard's slow lane). */
};

static void do_signup(struct dashboard *d, const struct dash_request *req,
                      struct dash_response *res, struct who *w, const char *param)
{
    (void)w, (void)param;
    dash_signup(d, req, res);
}

static void do_signin(struct dashboard *d, const struct dash_request *req,
                      struct dash_response *res, struct who *w, const char *param)
{
    (void)w, (void)param;
    dash_signin(d, req, res);
}

static void do_invite_accept(struct dashboard *d, const struct dash_request *req,
                             struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    dash_invite_accept(d, req, res, w);
}

static void do_password_set(struct dashboard *d, const struct dash_request *req,
                            struct dash_response *res, struct who *w, const char *param)
{
    (void)w, (void)param;
    dash_password_set(d, req, res);
}

static void do_password_change(struct dashboard *d, const struct dash_request *req,
                               struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    dash_password_change(d, req, res, w);
}

static void do_members(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    dash_members(d, req, res, w);
}

static void do_invite(struct dashboard *d, const struct dash_request *req,
                      struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    dash_invite(d, req, res, w);
}

static const struct route routes[] = {
    {"POST", "signup", OPEN, do_signup, 1},
    {"POST", "signin", OPEN, do_signin, 1},
    {"POST", "invites/accept", OPTIONAL, do_invite_accept, 1},
    {"POST", "password/set", OPEN, do_password_set, 1},
    {"POST", "password", SIGNED_IN, do_password_change, 1},
    {"GET", "session", SIGNED_IN, do_session, 0},
    {"POST", "signout", SIGNED_IN, do_signout, 0},
    {"POST", "sessions/revoke-all", SIGNED_IN, do_revoke_sessions, 0},
    {"GET", "keys", SIGNED_IN, do_keys_list, 0},
    {"POST", "keys", SIGNED_IN, do_key_create, 0},
    {"PATCH", "keys/*", SIGNED_IN, do_key_update, 0},
    {"POST", "keys/*/roll", SIGNED_IN, do_key_roll, 0},
    {"POST", "keys/*/revoke", SIGNED_IN, do_key_revoke, 0},
    {"GET", "members", SIGNED_IN, do_members, 0},
    {"POST", "members/invite", OWNER, do_invite, 0},
    {"POST", "members/*/remove", OWNER, dash_member_remove, 0},
    {"POST", "invites/*/cancel", OWNER, dash_invite_cancel, 0},
    {"GET", "audit", SIGNED_IN, do_audit, 0},
    {"GET", "usage", SIGNED_IN, do_usage, 0},
    {"GET", "invoices", SIGNED_IN, do_invoices, 0},
    {"GET", "invoices/*", SIGNED_IN, do_invoice, 0},
};

#define PARAM_MAX 64

/* Matches path against pattern, copying the segment that "*" stands for into param. */
static int path_matches(const char *pattern, const char *path, char param[PARAM_MAX])
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
    if (len == 0 || len >= PARAM_MAX || strcmp(path + pre + len, star + 1) != 0)
        return 0;
    memcpy(param, path + pre, len);
    param[len] = '\0';
    return 1;
}

/* The route for a request, or NULL; *allowed gets the methods of the routes with that path. */
static const struct route *find_route(const char *method, const char *path, char param[PARAM_MAX],
                                      char *allowed, size_t allowed_size)
{
    const struct route *found = NULL;

    allowed[0] = '\0';
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        char p[PARAM_MAX];
        if (!path_matches(routes[i].path, path, p))
            continue;
        size_t n = strlen(allowed);
        snprintf(allowed + n, allowed_size - n, "%s%s", n ? ", " : "", routes[i].method);
        if (found == NULL && strcmp(routes[i].method, method) == 0) {
            found = &routes[i];
            memcpy(param, p, PARAM_MAX);
        }
    }
    return found;
}

int dashboard_hashes_passwords(const char *method, const char *path)
{
    char param[PARAM_MAX], allowed[64];
    const struct route *r;

    if (strncmp(path, "/dashboard/api/", 15) != 0)
        return 0;
    r = find_route(method, path + 15, param, allowed, sizeof(allowed));
    return r != NULL && r->hashes;
}

void dashboard_handle(struct dashboard *d, const struct dash_request *req,
                      struct dash_response *res)
{
    const struct route *r;
    char param[PARAM_MAX], allowed[64], msg[96];
    struct who w;
    int signed_in;

    memset(res, 0, sizeof(*res));
    if (strncmp(req->path, "/dashboard/api/", 15) != 0 ||
        ((r = find_route(req->method, req->path + 15, param, allowed, sizeof(allowed))) == NULL &&
         allowed[0] == '\0')) {
        dash_reply_error(res, req, KN_ERR_NOT_FOUND, NULL, NULL);
        return;
    }
    if (r == NULL) {
        snprintf(msg, sizeof(msg), "This call only accepts %s.", allowed);
        dash_reply_error(res, req, KN_ERR_METHOD_NOT_ALLOWED, msg, NULL);
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
    r->fn(d, req, res, signed_in ? &w : NULL, param);
}
