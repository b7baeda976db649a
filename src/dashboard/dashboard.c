#include "dashboard/dashboard.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/password.h"
#include "auth/session.h"
#include "core/base62.h"
#include "core/errors.h"
#include "core/util.h"
#include "keys/lifecycle.h"
#include "metering/plans.h"
#include "metering/report.h"
#include "store/store.h"

#define THROTTLE_WINDOW 900 /* seconds over which failed sign-ins are counted */
#define THROTTLE_PER_EMAIL 5
#define THROTTLE_PER_IP 20
#define INVITE_TTL (7 * 86400)
#define AUDIT_PAGE 50
#define MAX_GRACE (30 * 86400)

struct dashboard {
    const struct kn_config *cfg;
    uint8_t secret[32];
    struct keysync *ks;
    struct store *store;
    const struct plans *plans; /* The server's, for usage reports and invoices. */
};

/* The signed-in user of a request. */
struct who {
    struct store_session session;
    struct store_user user;
    struct store_member member;
    struct lifecycle_actor actor;
};

struct dashboard *dashboard_new(const struct kn_config *c, const uint8_t secret[32],
                                struct keysync *ks, const struct plans *plans, char *err,
                                size_t errsize)
{
    struct dashboard *d = kn_calloc(1, sizeof(*d));

    d->cfg = c;
    memcpy(d->secret, secret, 32);
    d->ks = ks;
    d->plans = plans;
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

/* ---- responses --------------------------------------------------------------------------- */

static void reply_json(struct dash_response *res, int status, const char *reason, json_t *doc)
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

static void reply_error(struct dash_response *res, const struct dash_request *req, enum kn_err err,
                        const char *message, const char *param)
{
    const struct kn_error_def *def = kn_error_def(err);

    res->status = def->status;
    res->reason = def->reason;
    res->error_code = def->code;
    res->body = kn_error_json(err, message, param, req->request_id, &res->body_len);
}

static void reply_store_error(struct dashboard *d, struct dash_response *res,
                              const struct dash_request *req)
{
    fprintf(stderr, "konnect: dashboard store error (%s): %s\n", req->request_id,
            store_errmsg(d->store));
    reply_error(res, req, KN_ERR_INTERNAL, NULL, NULL);
}

static void set_cookie(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const char *token)
{
    if (token != NULL)
        snprintf(res->set_cookie, sizeof(res->set_cookie),
                 SESSION_COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%u%s", token,
                 d->cfg->session_max_s, req->https ? "; Secure" : "");
    else
        snprintf(res->set_cookie, sizeof(res->set_cookie),
                 SESSION_COOKIE "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0%s",
                 req->https ? "; Secure" : "");
}

static void audit(struct dashboard *d, const char *account_id, const char *actor, const char *ip,
                  const char *action, const char *target, const char *result, const char *detail)
{
    lifecycle_audit_entry(d->store, account_id, actor, ip, action, target, result, detail);
}

/* ---- request helpers --------------------------------------------------------------------- */

/* Parses the JSON object body. Returns it, or NULL after replying with the error. */
static json_t *body_object(const struct dash_request *req, struct dash_response *res)
{
    json_error_t jerr;
    json_t *doc;

    if (req->content_type == NULL || strncasecmp(req->content_type, "application/json", 16) != 0) {
        reply_error(res, req, KN_ERR_UNSUPPORTED_MEDIA_TYPE, NULL, NULL);
        return NULL;
    }
    doc = json_loadb(req->body != NULL ? req->body : "", req->body_len, JSON_REJECT_DUPLICATES,
                     &jerr);
    if (doc == NULL || !json_is_object(doc)) {
        json_decref(doc);
        reply_error(res, req, KN_ERR_INVALID_JSON, "The request body must be a JSON object.", NULL);
        return NULL;
    }
    return doc;
}

/* Returns the string member `name`, or NULL after replying 400 (when required or mistyped). */
static const char *string_member(json_t *doc, const char *name, int required,
                                 const struct dash_request *req, struct dash_response *res,
                                 int *failed)
{
    json_t *v = json_object_get(doc, name);
    char msg[96];

    if (v == NULL && !required)
        return NULL;
    if (!json_is_string(v)) {
        snprintf(msg, sizeof(msg), "'%s' must be a string.", name);
        reply_error(res, req, v == NULL ? KN_ERR_MISSING_PARAMETER : KN_ERR_INVALID_PARAMETER,
                    v == NULL ? NULL : msg, name);
        *failed = 1;
        return NULL;
    }
    return json_string_value(v);
}

/* Requests made without a session must come from the dashboard's own origin. */
static int same_origin(const struct dash_request *req)
{
    char expected[300];

    if (req->origin == NULL)
        return 1; /* Not a browser's cross-origin request; SameSite and JSON cover the rest. */
    if (req->host == NULL)
        return 0;
    snprintf(expected, sizeof(expected), "%s://%s", req->https ? "https" : "http", req->host);
    return strcmp(req->origin, expected) == 0;
}

/* Finds the signed-in user. Returns 0, or -1 after replying 401. */
static int signed_in(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                     struct who *w)
{
    const char *token;
    size_t len;
    uint8_t hash[32];
    int64_t now = kn_unix_now();

    memset(w, 0, sizeof(*w));
    if (req->cookie == NULL ||
        session_cookie_find(req->cookie, strlen(req->cookie), SESSION_COOKIE, &token, &len) != 0 ||
        len != SESSION_TOKEN_LEN)
        goto out;
    session_token_hash(d->secret, token, len, hash);
    if (store_session_find(d->store, hash, &w->session) != STORE_OK)
        goto out;
    if (w->session.expires_at <= now ||
        w->session.last_seen_at + (int64_t)d->cfg->session_idle_s <= now) {
        store_session_delete(d->store, hash);
        goto out;
    }
    if (store_user_find(d->store, w->session.user_id, &w->user) != STORE_OK ||
        store_member_find(d->store, w->session.account_id, w->session.user_id, &w->member) !=
            STORE_OK)
        goto out;
    /* Write the idle clock at most once a minute. */
    if (now - w->session.last_seen_at >= 60)
        store_session_touch(d->store, hash, now);
    w->actor.name = w->user.email;
    w->actor.ip = req->ip;
    return 0;
out:
    reply_error(res, req, KN_ERR_NOT_SIGNED_IN, NULL, NULL);
    set_cookie(d, req, res, NULL);
    return -1;
}

static int csrf_ok(const struct dash_request *req, const struct who *w)
{
    size_t n = strlen(w->session.csrf_token);
    return req->csrf_token != NULL && strlen(req->csrf_token) == n &&
           sodium_memcmp(req->csrf_token, w->session.csrf_token, n) == 0;
}

/* ---- sessions ---------------------------------------------------------------------------- */

static json_t *session_doc(const struct store_user *u, const struct store_member *m,
                           const char *account_email, const char *csrf)
{
    return json_pack("{s:{s:s, s:s}, s:{s:s, s:s}, s:s, s:s}", "user", "id", u->id, "email",
                     u->email, "account", "id", m->account_id, "email", account_email, "role",
                     m->role, "csrf_token", csrf);
}

/* Starts a session for user u in the account of membership m and replies with it. */
static void start_session(struct dashboard *d, const struct dash_request *req,
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
        reply_store_error(d, res, req);
        return;
    }
    set_cookie(d, req, res, token);
    sodium_memzero(token, sizeof(token));
    reply_json(res, status, status == 201 ? "Created" : "OK",
               session_doc(u, m, a.email, x.csrf_token));
}

static void do_signup(struct dashboard *d, const struct dash_request *req,
                      struct dash_response *res)
{
    struct store_account a;
    struct store_user u;
    struct store_member m;
    char hash[PASSWORD_HASH_SIZE];
    int failed = 0, r;
    json_t *doc;
    const char *email, *pw;

    if (strcmp(d->cfg->signup, "open") != 0) {
        reply_error(res, req, KN_ERR_SIGNUP_CLOSED, NULL, NULL);
        return;
    }
    if ((doc = body_object(req, res)) == NULL)
        return;
    email = string_member(doc, "email", 1, req, res, &failed);
    pw = failed ? NULL : string_member(doc, "password", 1, req, res, &failed);
    if (failed)
        goto out;
    if (password_acceptable(pw) != 0) {
        reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                    "Choose a password of 10 to 256 characters.", "password");
        goto out;
    }
    memset(&a, 0, sizeof(a));
    memset(&u, 0, sizeof(u));
    /* The account and its owner share the email; store_account_create checks its shape. */
    if (store_account_find(d->store, email, &a) == STORE_OK ||
        store_user_find(d->store, email, &u) == STORE_OK) {
        reply_error(res, req, KN_ERR_EMAIL_TAKEN, NULL, "email");
        goto out;
    }
    if (password_hash(pw, hash) != 0) {
        reply_error(res, req, KN_ERR_INTERNAL, NULL, NULL);
        goto out;
    }
    r = store_account_create(d->store, email, &a);
    if (r == STORE_CONFLICT) {
        reply_error(res, req, KN_ERR_EMAIL_TAKEN, NULL, "email");
        goto out;
    }
    if (r != STORE_OK) {
        reply_error(res, req, KN_ERR_INVALID_PARAMETER, store_errmsg(d->store), "email");
        goto out;
    }
    if (store_user_find(d->store, a.email, &u) != STORE_OK ||
        store_user_set_password(d->store, u.id, hash) != STORE_OK ||
        store_member_find(d->store, a.id, u.id, &m) != STORE_OK) {
        reply_store_error(d, res, req);
        goto out;
    }
    audit(d, a.id, u.email, req->ip, "user.signup", u.email, "ok", NULL);
    start_session(d, req, res, 201, &u, &m);
out:
    json_decref(doc);
}

/* Counts recent failures for one throttle key; returns seconds to wait, or 0. */
static unsigned throttled(struct dashboard *d, const char *kind, const char *key, int limit,
                          int64_t now)
{
    int count = 0;
    int64_t oldest = 0;

    if (store_failure_count(d->store, kind, key, now - THROTTLE_WINDOW, &count, &oldest) !=
            STORE_OK ||
        count < limit)
        return 0;
    int64_t wait = oldest + THROTTLE_WINDOW - now;
    return wait > 0 ? (unsigned)wait : 1;
}

static void do_signin(struct dashboard *d, const struct dash_request *req,
                      struct dash_response *res)
{
    struct store_user u;
    struct store_member m;
    char email[STORE_EMAIL_MAX + 1], msg[200];
    int failed = 0;
    int64_t now = kn_unix_now();
    unsigned wait;
    json_t *doc;
    const char *em, *pw;

    if ((doc = body_object(req, res)) == NULL)
        return;
    em = string_member(doc, "email", 1, req, res, &failed);
    pw = failed ? NULL : string_member(doc, "password", 1, req, res, &failed);
    if (failed)
        goto out;
    for (size_t i = 0; i < sizeof(email); i++) {
        email[i] = (char)((em[i] >= 'A' && em[i] <= 'Z') ? em[i] + 32 : em[i]);
        if (em[i] == '\0')
            break;
    }
    email[sizeof(email) - 1] = '\0';
    wait = throttled(d, "email", email, THROTTLE_PER_EMAIL, now);
    if (wait == 0 && req->ip != NULL)
        wait = throttled(d, "ip", req->ip, THROTTLE_PER_IP, now);
    if (wait != 0) {
        snprintf(msg, sizeof(msg),
                 "Too many failed sign-in attempts. Try again in %u minute%s, or reset the "
                 "password with the operator.",
                 (wait + 59) / 60, (wait + 59) / 60 == 1 ? "" : "s");
        res->retry_after = wait;
        reply_error(res, req, KN_ERR_TOO_MANY_ATTEMPTS, msg, NULL);
        int known = store_user_find(d->store, email, &u) == STORE_OK &&
                    store_member_first(d->store, u.id, &m) == STORE_OK;
        audit(d, known ? m.account_id : NULL, email, req->ip, "user.signin", email, "throttled",
              NULL);
        goto out;
    }
    int found = store_user_find(d->store, email, &u) == STORE_OK;
    int member = found && store_member_first(d->store, u.id, &m) == STORE_OK;
    if (!password_verify(found ? u.password_hash : "", pw) || !member) {
        store_failure_add(d->store, "email", email, now);
        if (req->ip != NULL)
            store_failure_add(d->store, "ip", req->ip, now);
        if (member)
            audit(d, m.account_id, email, req->ip, "user.signin", email, "failed",
                  "wrong password");
        else
            audit(d, NULL, email, req->ip, "user.signin", email, "failed", "unknown email");
        reply_error(res, req, KN_ERR_INVALID_CREDENTIALS, NULL, NULL);
        goto out;
    }
    store_failure_clear(d->store, "email", email);
    audit(d, m.account_id, u.email, req->ip, "user.signin", u.email, "ok", NULL);
    start_session(d, req, res, 200, &u, &m);
out:
    json_decref(doc);
}

static void do_signout(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const struct who *w)
{
    store_session_delete(d->store, w->session.token_hash);
    audit(d, w->member.account_id, w->user.email, req->ip, "user.signout", w->user.email, "ok",
          NULL);
    set_cookie(d, req, res, NULL);
    reply_json(res, 204, "No Content", NULL);
}

static void do_revoke_sessions(struct dashboard *d, const struct dash_request *req,
                               struct dash_response *res, const struct who *w)
{
    if (store_sessions_delete_user(d->store, w->user.id) != STORE_OK) {
        reply_store_error(d, res, req);
        return;
    }
    audit(d, w->member.account_id, w->user.email, req->ip, "user.sessions_revoked", w->user.email,
          "ok", "every session ended");
    set_cookie(d, req, res, NULL);
    reply_json(res, 204, "No Content", NULL);
}

static void do_session(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const struct who *w)
{
    struct store_account a;
    if (store_account_find(d->store, w->member.account_id, &a) != STORE_OK) {
        reply_store_error(d, res, req);
        return;
    }
    reply_json(res, 200, "OK", session_doc(&w->user, &w->member, a.email, w->session.csrf_token));
}

/* ---- keys -------------------------------------------------------------------------------- */

static json_t *time_or_null(int64_t t)
{
    return t != 0 ? json_integer(t) : json_null();
}

static json_t *key_doc(const struct store_key *k)
{
    json_t *allow = json_array();
    const char *p = k->ip_allowlist;

    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        json_array_append_new(allow, json_stringn(p, len));
        p += len + (p[len] == ',');
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:I, s:o}", "id", k->id, "name",
                          k->name, "mode", k->mode, "environment", k->environment, "hint", k->hint,
                          "status", lifecycle_status(k, kn_unix_now()), "created",
                          (json_int_t)k->created_at, "created_by", k->created_by, "requests",
                          (json_int_t)k->requests_total, "ip_allowlist", allow);
    if (o == NULL)
        kn_fatal("cannot build key document");
    json_object_set_new(o, "last_used", time_or_null(k->last_used_at));
    json_object_set_new(o, "expires", time_or_null(k->expires_at));
    json_object_set_new(o, "revoked", time_or_null(k->revoked_at));
    json_object_set_new(o, "rolled_to", k->rolled_to[0] ? json_string(k->rolled_to) : json_null());
    return o;
}

static int collect_key(void *ud, const struct store_key *k)
{
    json_array_insert_new(ud, 0, key_doc(k)); /* newest first */
    return 0;
}

static void do_keys_list(struct dashboard *d, const struct dash_request *req,
                         struct dash_response *res, const struct who *w)
{
    int64_t month = kn_month_of(kn_unix_now());
    json_t *arr = json_array(), *usage = NULL, *k;
    char m[16];
    size_t i;

    if (store_key_list(d->store, w->member.account_id, collect_key, arr) != STORE_OK ||
        report_key_usage(d->store, w->member.account_id, month, &usage) != STORE_OK) {
        json_decref(arr);
        reply_store_error(d, res, req);
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
    reply_json(res, 200, "OK",
               json_pack("{s:o, s:s, s:s}", "data", arr, "month",
                         kn_month_format(month, m, sizeof(m)), "currency", d->plans->currency));
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
        reply_error(res, req, KN_ERR_INVALID_PARAMETER, err, "ip_allowlist");
        return -1;
    }
    return 0;
bad:
    reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                "'ip_allowlist' must be a list of IP addresses and CIDR ranges.", "ip_allowlist");
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
    reply_json(res, status, "Created", doc);
}

static void do_key_create(struct dashboard *d, const struct dash_request *req,
                          struct dash_response *res, const struct who *w)
{
    struct lifecycle_spec spec;
    struct store_key k;
    char sk[APIKEY_LEN + 1], allow[STORE_ALLOWLIST_MAX];
    int failed = 0;
    json_t *doc, *v;
    const char *name, *mode, *env;

    if ((doc = body_object(req, res)) == NULL)
        return;
    memset(&spec, 0, sizeof(spec));
    name = string_member(doc, "name", 1, req, res, &failed);
    mode = failed ? NULL : string_member(doc, "mode", 1, req, res, &failed);
    env = failed ? NULL : string_member(doc, "environment", 0, req, res, &failed);
    if (failed)
        goto out;
    if (lifecycle_valid_name(name) != 0) {
        reply_error(res, req, KN_ERR_INVALID_PARAMETER, "Give the key a name of 1 to 128 bytes.",
                    "name");
        goto out;
    }
    if (apikey_mode_parse(mode, &spec.mode) != 0) {
        reply_error(res, req, KN_ERR_INVALID_PARAMETER, "'mode' must be test or live.", "mode");
        goto out;
    }
    spec.env = spec.mode == APIKEY_MODE_LIVE ? APIKEY_ENV_PRODUCTION : APIKEY_ENV_DEVELOPMENT;
    if (env != NULL && apikey_env_parse(env, &spec.env) != 0) {
        reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                    "'environment' must be development, staging or production.", "environment");
        goto out;
    }
    if ((v = json_object_get(doc, "expires_in_days")) != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 3650) {
            reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                        "'expires_in_days' must be a whole number of days from 1 to 3650.",
                        "expires_in_days");
            goto out;
        }
        spec.expires_at = kn_unix_now() + json_integer_value(v) * 86400;
    }
    if ((v = json_object_get(doc, "expires_at")) != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) <= kn_unix_now()) {
            reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                        "'expires_at' must be a Unix time in the future.", "expires_at");
            goto out;
        }
        spec.expires_at = json_integer_value(v);
    }
    if (allowlist_member(doc, req, res, allow) != 0)
        goto out;
    spec.account_id = w->member.account_id;
    spec.name = name;
    spec.allowlist = allow;
    if (lifecycle_create(d->store, d->secret, &spec, &w->actor, &k, sk) != STORE_OK) {
        reply_store_error(d, res, req);
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
    reply_error(res, req, KN_ERR_NOT_FOUND, "No such API key.", "id");
    return -1;
}

static int reload(struct dashboard *d, struct store_key *k)
{
    char id[STORE_ID_SIZE];
    kn_strlcpy(id, k->id, sizeof(id));
    return store_key_find(d->store, id, NULL, k);
}

static void do_key_roll(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, const struct who *w, const char *id)
{
    struct store_key old, k;
    char sk[APIKEY_LEN + 1];
    json_t *doc, *v;
    json_int_t grace = 0;
    int r;

    if ((doc = body_object(req, res)) == NULL)
        return;
    if ((v = json_object_get(doc, "grace_seconds")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > MAX_GRACE) {
            reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                        "'grace_seconds' must be between 0 and 2592000 (30 days).",
                        "grace_seconds");
            goto out;
        }
        grace = json_integer_value(v);
    }
    if (own_key(d, req, res, w, id, &old) != 0)
        goto out;
    r = lifecycle_roll(d->store, d->secret, &old, grace, &w->actor, &k, sk);
    if (r == STORE_CONFLICT) {
        reply_error(res, req, KN_ERR_KEY_NOT_ACTIVE, NULL, NULL);
        goto out;
    }
    if (r != STORE_OK || reload(d, &old) != STORE_OK) {
        sodium_memzero(sk, sizeof(sk));
        reply_store_error(d, res, req);
        goto out;
    }
    sync_keys(d);
    reply_key_and_secret(res, 201, &k, sk, key_doc(&old));
out:
    json_decref(doc);
}

static void do_key_revoke(struct dashboard *d, const struct dash_request *req,
                          struct dash_response *res, const struct who *w, const char *id)
{
    struct store_key k;

    if (own_key(d, req, res, w, id, &k) != 0)
        return;
    if (k.revoked_at == 0 && lifecycle_revoke(d->store, &k, &w->actor) != STORE_OK) {
        reply_store_error(d, res, req);
        return;
    }
    sync_keys(d);
    if (reload(d, &k) != STORE_OK) {
        reply_store_error(d, res, req);
        return;
    }
    reply_json(res, 200, "OK", json_pack("{s:o}", "key", key_doc(&k)));
}

static void do_key_update(struct dashboard *d, const struct dash_request *req,
                          struct dash_response *res, const struct who *w, const char *id)
{
    struct store_key k;
    char allow[STORE_ALLOWLIST_MAX];
    int failed = 0;
    json_t *doc;
    const char *name;

    if ((doc = body_object(req, res)) == NULL)
        return;
    name = string_member(doc, "name", 0, req, res, &failed);
    if (failed)
        goto out;
    if (name != NULL && lifecycle_valid_name(name) != 0) {
        reply_error(res, req, KN_ERR_INVALID_PARAMETER, "Give the key a name of 1 to 128 bytes.",
                    "name");
        goto out;
    }
    if (allowlist_member(doc, req, res, allow) != 0 || own_key(d, req, res, w, id, &k) != 0)
        goto out;
    if (name != NULL && lifecycle_rename(d->store, &k, name, &w->actor) != STORE_OK)
        goto fail;
    if (json_object_get(doc, "ip_allowlist") != NULL &&
        lifecycle_set_allowlist(d->store, &k, allow, &w->actor) != STORE_OK)
        goto fail;
    sync_keys(d);
    if (reload(d, &k) != STORE_OK)
        goto fail;
    reply_json(res, 200, "OK", json_pack("{s:o}", "key", key_doc(&k)));
    goto out;
fail:
    reply_store_error(d, res, req);
out:
    json_decref(doc);
}

/* ---- members ----------------------------------------------------------------------------- */

static int collect_member(void *ud, const struct store_member *m)
{
    json_array_append_new(ud, json_pack("{s:s, s:s, s:s, s:I}", "user_id", m->user_id, "email",
                                        m->email, "role", m->role, "joined",
                                        (json_int_t)m->created_at));
    return 0;
}

static int collect_invite(void *ud, const struct store_invite *i)
{
    json_array_append_new(ud, json_pack("{s:s, s:s, s:I, s:I}", "email", i->email, "invited_by",
                                        i->invited_by, "created", (json_int_t)i->created_at,
                                        "expires", (json_int_t)i->expires_at));
    return 0;
}

static void do_members(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const struct who *w)
{
    json_t *members = json_array(), *invites = json_array();

    if (store_members_list(d->store, w->member.account_id, collect_member, members) != STORE_OK ||
        store_invites_list(d->store, w->member.account_id, kn_unix_now(), collect_invite,
                           invites) != STORE_OK) {
        json_decref(members);
        json_decref(invites);
        reply_store_error(d, res, req);
        return;
    }
    reply_json(res, 200, "OK", json_pack("{s:o, s:o}", "data", members, "invites", invites));
}

static void do_invite(struct dashboard *d, const struct dash_request *req,
                      struct dash_response *res, const struct who *w)
{
    struct store_invite inv;
    char token[SESSION_TOKEN_LEN + 1], url[96];
    int failed = 0;
    json_t *doc;
    const char *email;

    if ((doc = body_object(req, res)) == NULL)
        return;
    email = string_member(doc, "email", 1, req, res, &failed);
    if (failed)
        goto out;
    if (strlen(email) > STORE_EMAIL_MAX || strchr(email, '@') == NULL || email[0] == '@') {
        reply_error(res, req, KN_ERR_INVALID_PARAMETER, "Enter the invitee's email address.",
                    "email");
        goto out;
    }
    memset(&inv, 0, sizeof(inv));
    session_token_new(token);
    session_token_hash(d->secret, token, SESSION_TOKEN_LEN, inv.token_hash);
    kn_strlcpy(inv.account_id, w->member.account_id, sizeof(inv.account_id));
    kn_strlcpy(inv.email, email, sizeof(inv.email));
    kn_strlcpy(inv.invited_by, w->user.email, sizeof(inv.invited_by));
    inv.created_at = kn_unix_now();
    inv.expires_at = inv.created_at + INVITE_TTL;
    if (store_invite_insert(d->store, &inv) != STORE_OK) {
        reply_store_error(d, res, req);
        goto out;
    }
    audit(d, w->member.account_id, w->user.email, req->ip, "member.invite", email, "ok", NULL);
    /* The token travels in the fragment, which browsers never send to servers or in Referer. */
    snprintf(url, sizeof(url), "/invite#token=%s", token);
    sodium_memzero(token, sizeof(token));
    reply_json(res, 201, "Created",
               json_pack("{s:s, s:I}", "invite_url", url, "expires", (json_int_t)inv.expires_at));
    sodium_memzero(url, sizeof(url));
out:
    json_decref(doc);
}

static void do_invite_accept(struct dashboard *d, const struct dash_request *req,
                             struct dash_response *res)
{
    struct store_invite inv;
    struct store_user u, fresh;
    struct store_member m;
    uint8_t hash[32];
    int failed = 0, have_user;
    json_t *doc;
    const char *token, *pw;
    int64_t now = kn_unix_now();

    if ((doc = body_object(req, res)) == NULL)
        return;
    token = string_member(doc, "token", 1, req, res, &failed);
    pw = failed ? NULL : string_member(doc, "password", 1, req, res, &failed);
    if (failed)
        goto out;
    session_token_hash(d->secret, token, strlen(token), hash);
    if (store_invite_find(d->store, hash, &inv) != STORE_OK || inv.accepted_at != 0 ||
        inv.expires_at <= now) {
        reply_error(res, req, KN_ERR_INVITE_INVALID, NULL, "token");
        goto out;
    }
    have_user = store_user_find(d->store, inv.email, &u) == STORE_OK;
    if (!have_user && strcmp(d->cfg->signup, "closed") == 0) {
        /* "closed": nobody new joins, not even by invitation; existing users still can. */
        reply_error(res, req, KN_ERR_SIGNUP_CLOSED, NULL, NULL);
        goto out;
    }
    if (have_user && u.password_hash[0] != '\0') {
        /* An existing user proves who they are; the link alone does not sign anyone in. */
        if (!password_verify(u.password_hash, pw)) {
            reply_error(res, req, KN_ERR_INVALID_CREDENTIALS,
                        "You already have a password: enter it to join.", "password");
            goto out;
        }
    } else if (password_acceptable(pw) != 0) {
        reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                    "Choose a password of 10 to 256 characters.", "password");
        goto out;
    }
    if (store_invite_accept(d->store, hash, now) != STORE_OK) {
        reply_error(res, req, KN_ERR_INVITE_INVALID, NULL, "token");
        goto out;
    }
    memset(&fresh, 0, sizeof(fresh));
    if (!have_user) {
        base62_random_id(fresh.id, "user_", 20);
        kn_strlcpy(fresh.email, inv.email, sizeof(fresh.email));
        fresh.created_at = now;
    }
    if (!have_user || u.password_hash[0] == '\0') {
        if (password_hash(pw, fresh.password_hash) != 0) {
            reply_error(res, req, KN_ERR_INTERNAL, NULL, NULL);
            goto out;
        }
    }
    memset(&m, 0, sizeof(m));
    kn_strlcpy(m.account_id, inv.account_id, sizeof(m.account_id));
    kn_strlcpy(m.user_id, have_user ? u.id : fresh.id, sizeof(m.user_id));
    kn_strlcpy(m.role, "member", sizeof(m.role));
    m.created_at = now;
    if (store_member_find(d->store, m.account_id, m.user_id, &m) != STORE_OK &&
        store_member_add(d->store, &m, have_user ? NULL : &fresh) != STORE_OK) {
        reply_store_error(d, res, req);
        goto out;
    }
    if (have_user && u.password_hash[0] == '\0' &&
        store_user_set_password(d->store, u.id, fresh.password_hash) != STORE_OK) {
        reply_store_error(d, res, req);
        goto out;
    }
    if (store_user_find(d->store, m.user_id, &u) != STORE_OK ||
        store_member_find(d->store, m.account_id, m.user_id, &m) != STORE_OK) {
        reply_store_error(d, res, req);
        goto out;
    }
    audit(d, m.account_id, u.email, req->ip, "member.join", u.email, "ok",
          have_user ? "existing user" : "new user");
    start_session(d, req, res, 200, &u, &m);
out:
    json_decref(doc);
}

/* ---- audit log --------------------------------------------------------------------------- */

struct audit_page {
    json_t *arr;
    int64_t last;
    int n;
};

static int collect_audit(void *ud, const struct store_audit *e)
{
    struct audit_page *p = ud;
    json_array_append_new(p->arr, json_pack("{s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "id",
                                            (json_int_t)e->id, "time", (json_int_t)e->at, "actor",
                                            e->actor, "action", e->action, "target", e->target,
                                            "ip", e->ip, "result", e->result, "detail", e->detail));
    p->last = e->id;
    p->n++;
    return 0;
}

static void do_audit(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                     const struct who *w)
{
    struct audit_page p = {.arr = json_array()};
    long long before = 0;
    const char *q = req->query;

    if (q != NULL && strncmp(q, "before=", 7) == 0 &&
        kn_parse_int(q + 7, 1, INT64_MAX, &before) != 0) {
        json_decref(p.arr);
        reply_error(res, req, KN_ERR_INVALID_PARAMETER, "'before' must be an entry id.", "before");
        return;
    }
    if (store_audit_list(d->store, w->member.account_id, before, AUDIT_PAGE, collect_audit, &p) !=
        STORE_OK) {
        json_decref(p.arr);
        reply_store_error(d, res, req);
        return;
    }
    reply_json(res, 200, "OK",
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
        reply_error(res, req, KN_ERR_INVALID_PARAMETER, "That month has not started yet.", "month");
        return -1;
    }
    return 0;
bad:
    reply_error(res, req, KN_ERR_INVALID_PARAMETER, "'month' must be a month such as 2026-11.",
                "month");
    return -1;
}

static int own_account(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const struct who *w, struct store_account *a)
{
    if (store_account_find(d->store, w->member.account_id, a) == STORE_OK)
        return 0;
    reply_store_error(d, res, req);
    return -1;
}

static void do_usage(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                     const struct who *w)
{
    struct store_account a;
    int64_t now = kn_unix_now(), month;
    json_t *doc;

    if (month_param(req, res, now, &month) != 0 || own_account(d, req, res, w, &a) != 0)
        return;
    if (report_usage(d->store, d->plans, &a, month, now, &doc) != STORE_OK) {
        reply_store_error(d, res, req);
        return;
    }
    reply_json(res, 200, "OK", doc);
}

static void do_invoices(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, const struct who *w)
{
    struct store_account a;
    json_t *arr;

    if (own_account(d, req, res, w, &a) != 0)
        return;
    if (report_months(d->store, d->plans, &a, kn_unix_now(), &arr) != STORE_OK) {
        reply_store_error(d, res, req);
        return;
    }
    reply_json(res, 200, "OK",
               json_pack("{s:o, s:s}", "data", arr, "currency", d->plans->currency));
}

/* GET invoices/YYYY-MM (JSON) or invoices/YYYY-MM.csv (a download). */
static void do_invoice(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const struct who *w, const char *which)
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
    if (report_invoice(d->store, d->plans, &a, month, now, &doc) != STORE_OK) {
        reply_store_error(d, res, req);
        return;
    }
    if (!csv) {
        reply_json(res, 200, "OK", doc);
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
    reply_error(res, req, KN_ERR_NOT_FOUND,
                "No such invoice: give a month such as 2026-11 that has started.", NULL);
}

/* ---- routing ----------------------------------------------------------------------------- */

void dashboard_handle(struct dashboard *d, const struct dash_request *req,
                      struct dash_response *res)
{
    const char *m = req->method, *p = req->path;
    int get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0, patch = strcmp(m, "PATCH") == 0;
    struct who w;

    memset(res, 0, sizeof(*res));
    if (strncmp(p, "/dashboard/api/", 15) != 0)
        goto not_found;
    p += 15;

    /* Calls that make a session: they must come from our own origin. */
    if (strcmp(p, "signup") == 0 || strcmp(p, "signin") == 0 || strcmp(p, "invites/accept") == 0) {
        if (!post)
            goto not_allowed_post;
        if (!same_origin(req)) {
            reply_error(res, req, KN_ERR_CSRF_FAILED, NULL, NULL);
            return;
        }
        if (strcmp(p, "signup") == 0)
            do_signup(d, req, res);
        else if (strcmp(p, "signin") == 0)
            do_signin(d, req, res);
        else
            do_invite_accept(d, req, res);
        return;
    }
    if (signed_in(d, req, res, &w) != 0)
        return;
    if (!get && (!csrf_ok(req, &w) || !same_origin(req))) {
        reply_error(res, req, KN_ERR_CSRF_FAILED, NULL, NULL);
        audit(d, w.member.account_id, w.user.email, req->ip, "csrf.refused", p, "denied", m);
        return;
    }
    if (strcmp(p, "session") == 0) {
        if (!get)
            goto not_allowed_get;
        do_session(d, req, res, &w);
    } else if (strcmp(p, "signout") == 0) {
        if (!post)
            goto not_allowed_post;
        do_signout(d, req, res, &w);
    } else if (strcmp(p, "sessions/revoke-all") == 0) {
        if (!post)
            goto not_allowed_post;
        do_revoke_sessions(d, req, res, &w);
    } else if (strcmp(p, "keys") == 0) {
        if (get)
            do_keys_list(d, req, res, &w);
        else if (post)
            do_key_create(d, req, res, &w);
        else
            goto not_allowed_get_post;
    } else if (strncmp(p, "keys/", 5) == 0) {
        char id[STORE_ID_SIZE + 16];
        const char *rest = p + 5, *slash = strchr(rest, '/');
        size_t len = slash != NULL ? (size_t)(slash - rest) : strlen(rest);
        if (len == 0 || len >= sizeof(id))
            goto not_found;
        memcpy(id, rest, len);
        id[len] = '\0';
        if (slash == NULL) {
            if (!patch)
                goto not_allowed_patch;
            do_key_update(d, req, res, &w, id);
        } else if (strcmp(slash, "/roll") == 0 || strcmp(slash, "/revoke") == 0) {
            if (!post)
                goto not_allowed_post;
            if (strcmp(slash, "/roll") == 0)
                do_key_roll(d, req, res, &w, id);
            else
                do_key_revoke(d, req, res, &w, id);
        } else {
            goto not_found;
        }
    } else if (strcmp(p, "members") == 0) {
        if (!get)
            goto not_allowed_get;
        do_members(d, req, res, &w);
    } else if (strcmp(p, "members/invite") == 0) {
        if (!post)
            goto not_allowed_post;
        do_invite(d, req, res, &w);
    } else if (strcmp(p, "audit") == 0) {
        if (!get)
            goto not_allowed_get;
        do_audit(d, req, res, &w);
    } else if (strcmp(p, "usage") == 0) {
        if (!get)
            goto not_allowed_get;
        do_usage(d, req, res, &w);
    } else if (strcmp(p, "invoices") == 0) {
        if (!get)
            goto not_allowed_get;
        do_invoices(d, req, res, &w);
    } else if (strncmp(p, "invoices/", 9) == 0) {
        if (!get)
            goto not_allowed_get;
        do_invoice(d, req, res, &w, p + 9);
    } else {
        goto not_found;
    }
    return;
not_found:
    reply_error(res, req, KN_ERR_NOT_FOUND, NULL, NULL);
    return;
not_allowed_get:
    reply_error(res, req, KN_ERR_METHOD_NOT_ALLOWED, "This call only accepts GET.", NULL);
    return;
not_allowed_post:
    reply_error(res, req, KN_ERR_METHOD_NOT_ALLOWED, "This call only accepts POST.", NULL);
    return;
not_allowed_patch:
    reply_error(res, req, KN_ERR_METHOD_NOT_ALLOWED, "This call only accepts PATCH.", NULL);
    return;
not_allowed_get_post:
    reply_error(res, req, KN_ERR_METHOD_NOT_ALLOWED, "This call only accepts GET and POST.", NULL);
}
