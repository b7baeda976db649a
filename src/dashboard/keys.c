/* The dashboard's keys: the list, creation (the secret shown once), rolling, revocation, renaming
 * and allowlists, with the roles that may do each. */
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
#include "keys/propagation.h"
#include "metering/plans.h"
#include "metering/report.h"
#include "store/store.h"

#define MAX_GRACE (30 * 86400)

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

void dash_keys_list(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                    struct who *w, const char *param)
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

/* Reads a restricted key's "models" (a list of model names of the account's plan, or null for
 * all of them), "requests_per_minute" (a number below the account's, or null for none) and, for
 * a live key, "monthly_requests" (its own monthly quota, at most the account's, or null for none)
 * for a key of `mode`. *given says which of them were in doc (bits 1, 2, 4). Returns 0, or -1
 * after replying 400. */
static int restrictions_member(struct dashboard *d, json_t *doc, const struct dash_request *req,
                               struct dash_response *res, const struct who *w, const char *mode,
                               char models[STORE_MODELS_MAX], int64_t *rpm, int64_t *monthly,
                               int *given)
{
    json_t *m = json_object_get(doc, "models"), *r = json_object_get(doc, "requests_per_minute"),
           *q = json_object_get(doc, "monthly_requests");
    const struct plans *ps = dash_plans(d);
    struct store_account a;
    const struct plan *plan;
    char text[STORE_MODELS_MAX * 2] = "", err[300];
    size_t used = 0, i;
    json_t *item;

    models[0] = '\0';
    *rpm = 0;
    *monthly = 0;
    *given = (m != NULL) | (r != NULL) << 1 | (q != NULL) << 2;
    if (*given == 0)
        return 0;
    if (strcmp(mode, "admin") == 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "Admin keys call no model: 'models', 'requests_per_minute' and "
                         "'monthly_requests' are for live and test keys.",
                         m != NULL   ? "models"
                         : r != NULL ? "requests_per_minute"
                                     : "monthly_requests");
        return -1;
    }
    if (q != NULL && !json_is_null(q) && strcmp(mode, "live") != 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "Test keys have no monthly quota (they are never billed): "
                         "'monthly_requests' is for live keys.",
                         "monthly_requests");
        return -1;
    }
    if (store_account_find(d->store, w->member.account_id, &a) != STORE_OK) {
        a.quota_requests = STORE_QUOTA_FROM_PLAN;
        plan = plans_find(ps, NULL);
    } else if ((plan = plans_find(ps, a.plan)) == NULL) {
        plan = plans_find(ps, NULL);
    }
    if (m != NULL && !json_is_null(m)) {
        if (!json_is_array(m) || json_array_size(m) == 0)
            goto bad_models;
        json_array_foreach(m, i, item)
        {
            if (!json_is_string(item) || json_string_length(item) == 0 ||
                strchr(json_string_value(item), ',') != NULL ||
                used + json_string_length(item) + 2 >= sizeof(text))
                goto bad_models;
            used += (size_t)snprintf(text + used, sizeof(text) - used, "%s%s", used ? "," : "",
                                     json_string_value(item));
        }
        if (lifecycle_canonical_models(ps, plan, text, models, err, sizeof(err)) != 0) {
            dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, err, "models");
            return -1;
        }
    }
    if (r != NULL && !json_is_null(r)) {
        int live = strcmp(mode, "live") == 0;
        int64_t cap = live ? (int64_t)plan->requests_per_minute : (int64_t)d->cfg->test_rpm;
        if (!json_is_integer(r) || json_integer_value(r) < 1 || json_integer_value(r) > 1000000) {
            dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                             "'requests_per_minute' must be a whole number from 1 to 1000000, or "
                             "null for none of the key's own.",
                             "requests_per_minute");
            return -1;
        }
        if (cap != 0 && json_integer_value(r) > cap) {
            snprintf(err, sizeof(err),
                     "'requests_per_minute' must be below the limit the key has anyway: %lld a "
                     "minute (%s).",
                     (long long)cap, live ? "its account's plan" : "every test key's");
            dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, err, "requests_per_minute");
            return -1;
        }
        *rpm = json_integer_value(r);
    }
    if (q != NULL && !json_is_null(q)) {
        int64_t cap =
            a.quota_requests == STORE_QUOTA_FROM_PLAN ? plan->requests_per_month : a.quota_requests;
        if (!json_is_integer(q) || json_integer_value(q) < 1 ||
            json_integer_value(q) > 1000000000000LL) {
            dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                             "'monthly_requests' must be a whole number from 1 to 1000000000000, "
                             "or null for none of the key's own.",
                             "monthly_requests");
            return -1;
        }
        if (cap >= 0 && json_integer_value(q) > cap) {
            snprintf(err, sizeof(err),
                     "'monthly_requests' must be at most the quota the key has anyway: %lld "
                     "requests a month (its account's).",
                     (long long)cap);
            dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, err, "monthly_requests");
            return -1;
        }
        *monthly = json_integer_value(q);
    }
    return 0;
bad_models:
    dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                     "'models' must be a non-empty list of model names, or null for every model "
                     "of the plan.",
                     "models");
    return -1;
}

/* How long a change waits for every running server to apply it before the answer says which
 * had not (the CLI's --wait default). */
#define PROPAGATION_WAIT_MS 5000

/* The change must be in force on the API of every running server before this answer reaches the
 * browser (or the API's caller): this server applies it at once, the others when notified; then
 * every live server's heartbeat must show it. Returns what the answer says of it: {"servers": N,
 * "lagging": [...]} (the ids of the servers that had not applied it in time, none when it is in
 * force). */
json_t *dash_sync_changes(struct dashboard *d)
{
    struct propagation p;
    json_t *lagging = json_array();

    if (d->ks != NULL)
        keysync_sync_now(d->ks);
    if (propagation_wait(d->store, PROPAGATION_WAIT_MS, &p) != STORE_OK) {
        /* Committed, but unconfirmed: said as such, never as in force. */
        fprintf(stderr, "konnect: cannot confirm a key change on every server: %s\n",
                store_errmsg(d->store));
        json_array_append_new(lagging, json_string("unknown"));
        return json_pack("{s:i, s:o}", "servers", 0, "lagging", lagging);
    }
    for (const char *id = p.lagging; *id != '\0';) {
        size_t n = strcspn(id, ",");
        json_array_append_new(lagging, json_stringn(id, n));
        id += n;
        id += strspn(id, ", ");
    }
    if (p.lagging[0] != '\0')
        fprintf(stderr, "konnect: a key change was not applied in time by: %s\n", p.lagging);
    return json_pack("{s:i, s:o}", "servers", p.live, "lagging", lagging);
}

static void reply_key_and_secret(struct dash_response *res, int status, const struct store_key *k,
                                 char sk[APIKEY_MAX_LEN + 1], json_t *extra_rolled,
                                 json_t *propagation)
{
    json_t *doc =
        json_pack("{s:o, s:s, s:o}", "key", key_doc(k), "secret", sk, "propagation", propagation);
    if (extra_rolled != NULL)
        json_object_set_new(doc, "rolled", extra_rolled);
    sodium_memzero(sk, APIKEY_MAX_LEN + 1);
    dash_reply_json(res, status, "Created", doc);
}

/* Live and admin keys are the owner's to create and roll; an admin key (the management API)
 * makes and rolls live and test keys, never admin keys, so that a leaked admin key cannot outlive
 * its revocation through another. Every working key counts towards the account's cap
 * (KONNECT_MAX_KEYS_PER_ACCOUNT), which only the operator's CLI may exceed. Returns 0, or -1
 * after replying. */
static int may_add_key(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, const struct who *w, enum apikey_mode mode,
                       int grows)
{
    int64_t n = 0;
    char msg[200];

    if (mode == APIKEY_MODE_ADMIN && w->api == WHO_ADMIN_KEY) {
        dash_reply_error(res, req, KN_ERR_OWNER_REQUIRED,
                         "Admin keys are made and rolled by the account's owner in the dashboard "
                         "(Settings, API Keys) or by the operator's CLI, never with another admin "
                         "key.",
                         NULL);
        return -1;
    }
    if (mode != APIKEY_MODE_TEST && strcmp(w->member.role, "owner") != 0) {
        dash_reply_error(res, req, KN_ERR_OWNER_REQUIRED,
                         mode == APIKEY_MODE_ADMIN
                             ? "Only the account's owner can create or roll admin keys."
                             : "Only the account's owner can create or roll live keys. Ask "
                               "them, or use a test key.",
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

void dash_key_create(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                     struct who *w, const char *param)
{
    (void)param;
    struct lifecycle_spec spec;
    struct store_key k;
    char sk[APIKEY_MAX_LEN + 1], allow[STORE_ALLOWLIST_MAX];
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
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER, "'mode' must be test, live or admin.",
                         "mode");
        goto out;
    }
    spec.env = spec.mode != APIKEY_MODE_TEST ? APIKEY_ENV_PRODUCTION : APIKEY_ENV_DEVELOPMENT;
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
        if (!json_is_integer(v) || json_integer_value(v) <= kn_unix_now() ||
            json_integer_value(v) > kn_unix_now() + 3650LL * 86400) {
            dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                             "'expires_at' must be a Unix time in the next ten years.",
                             "expires_at");
            goto out;
        }
        spec.expires_at = json_integer_value(v);
    }
    char models[STORE_MODELS_MAX];
    int given;
    if (allowlist_member(doc, req, res, allow) != 0 ||
        restrictions_member(d, doc, req, res, w, apikey_mode_name(spec.mode), models,
                            &spec.requests_per_minute, &spec.monthly_requests, &given) != 0 ||
        may_add_key(d, req, res, w, spec.mode, 1) != 0)
        goto out;
    spec.account_id = w->member.account_id;
    spec.name = name;
    spec.allowlist = allow;
    spec.models = models;
    if (lifecycle_create(d->store, d->secret, &spec, &w->actor, &k, sk) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    reply_key_and_secret(res, 201, &k, sk, NULL, dash_sync_changes(d));
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

void dash_key_roll(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                   struct who *w, const char *id)
{
    struct store_key old, k;
    char sk[APIKEY_MAX_LEN + 1];
    json_t *doc, *v;
    json_int_t grace = 0;
    enum apikey_mode mode;
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
    if (own_key(d, req, res, w, id, &old) != 0)
        goto out;
    if (apikey_mode_parse(old.mode, &mode) != 0)
        mode = APIKEY_MODE_ADMIN; /* A kind this server does not know: the strictest rule. */
    if (may_add_key(d, req, res, w, mode, grace > 0) != 0)
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
    reply_key_and_secret(res, 201, &k, sk, key_doc(&old), dash_sync_changes(d));
out:
    json_decref(doc);
}

void dash_key_get(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                  struct who *w, const char *id)
{
    struct store_key k;

    if (own_key(d, req, res, w, id, &k) != 0)
        return;
    dash_reply_json(res, 200, "OK", json_pack("{s:o}", "key", key_doc(&k)));
}

void dash_key_revoke(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                     struct who *w, const char *id)
{
    struct store_key k;

    if (own_key(d, req, res, w, id, &k) != 0)
        return;
    if (k.revoked_at == 0 && lifecycle_revoke(d->store, &k, &w->actor) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    json_t *propagation = dash_sync_changes(d);
    if (reload(d, &k) != STORE_OK) {
        json_decref(propagation);
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_reply_json(res, 200, "OK",
                    json_pack("{s:o, s:o}", "key", key_doc(&k), "propagation", propagation));
}

/* Reads "expires_at" for an update: a Unix time in the future, or null for never. Returns 1 with
 * *at set, 0 when absent, or -1 after replying 400. */
static int expiry_member(json_t *doc, const struct dash_request *req, struct dash_response *res,
                         int64_t *at)
{
    json_t *v = json_object_get(doc, "expires_at");

    if (v == NULL)
        return 0;
    if (json_is_null(v)) {
        *at = 0;
        return 1;
    }
    if (json_is_integer(v) && json_integer_value(v) > kn_unix_now() &&
        json_integer_value(v) <= kn_unix_now() + 3650LL * 86400) {
        *at = json_integer_value(v);
        return 1;
    }
    dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                     "'expires_at' must be a Unix time in the next ten years, or null for never.",
                     "expires_at");
    return -1;
}

/* PATCH (or POST) keys/ID: "name", "ip_allowlist" and "expires_at", each optional. */
void dash_key_update(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                     struct who *w, const char *id)
{
    struct store_key k;
    char allow[STORE_ALLOWLIST_MAX];
    int failed = 0, expiry;
    int64_t expires_at = 0, now = kn_unix_now();
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
    char models[STORE_MODELS_MAX];
    int64_t rpm = 0, monthly = 0;
    int given = 0;
    if (allowlist_member(doc, req, res, allow) != 0 ||
        (expiry = expiry_member(doc, req, res, &expires_at)) < 0 ||
        own_key(d, req, res, w, id, &k) != 0 ||
        restrictions_member(d, doc, req, res, w, k.mode, models, &rpm, &monthly, &given) != 0)
        goto out;
    /* A member may restrict a test key; a live key's restrictions are the owner's, like its
     * allowlist. */
    if (given && strcmp(k.mode, "test") != 0 && strcmp(w->member.role, "owner") != 0) {
        dash_reply_error(res, req, KN_ERR_OWNER_REQUIRED,
                         "Only the account's owner can change a live key's models, rate limit or "
                         "monthly quota.",
                         NULL);
        goto out;
    }
    /* What is not given stays as it is. */
    if (!(given & 1))
        kn_strlcpy(models, k.models, sizeof(models));
    if (!(given & 2))
        rpm = k.requests_per_minute;
    if (!(given & 4))
        monthly = k.monthly_requests;
    /* Where and how long a live or admin key may be used is the owner's to decide, like the key
     * itself. */
    if ((json_object_get(doc, "ip_allowlist") != NULL || expiry) && strcmp(k.mode, "test") != 0 &&
        strcmp(w->member.role, "owner") != 0) {
        dash_reply_error(res, req, KN_ERR_OWNER_REQUIRED,
                         "Only the account's owner can change a live key's IP allowlist or "
                         "expiry.",
                         NULL);
        goto out;
    }
    /* An admin key may not widen an admin key (itself or another): a leaked one could otherwise
     * lift its own expiry and allowlist. It may rename it and bring its expiry forward. */
    if (w->api == WHO_ADMIN_KEY && strcmp(k.mode, "admin") == 0 &&
        (json_object_get(doc, "ip_allowlist") != NULL ||
         (expiry && (expires_at == 0 || (k.expires_at != 0 && expires_at > k.expires_at))))) {
        dash_reply_error(res, req, KN_ERR_OWNER_REQUIRED,
                         "An admin key can rename an admin key or bring its expiry forward; its "
                         "allowlist and a later expiry are the owner's to set, in the dashboard.",
                         NULL);
        goto out;
    }
    /* A revoked or expired key stays so; a rolled key's grace can be cut short, not extended. */
    if (expiry && (k.revoked_at != 0 || (k.expires_at != 0 && k.expires_at <= now) ||
                   (k.rolled_to[0] != '\0' && (expires_at == 0 || expires_at > k.expires_at)))) {
        dash_reply_error(res, req, KN_ERR_KEY_NOT_ACTIVE,
                         k.rolled_to[0] != '\0' && k.revoked_at == 0 &&
                                 (k.expires_at == 0 || k.expires_at > now)
                             ? "This key was rolled: its expiry can be brought forward, not put "
                               "back."
                             : "This key is revoked or expired: its expiry cannot change.",
                         "expires_at");
        goto out;
    }
    /* A change that changes nothing writes nothing (and no audit entry). */
    if (name != NULL && strcmp(name, k.name) != 0 &&
        lifecycle_rename(d->store, &k, name, &w->actor) != STORE_OK)
        goto fail;
    if (json_object_get(doc, "ip_allowlist") != NULL && strcmp(allow, k.ip_allowlist) != 0 &&
        lifecycle_set_allowlist(d->store, &k, allow, &w->actor) != STORE_OK)
        goto fail;
    if (expiry && expires_at != k.expires_at &&
        lifecycle_expire(d->store, &k, expires_at, &w->actor) != STORE_OK)
        goto fail;
    if (given &&
        (strcmp(models, k.models) != 0 || rpm != k.requests_per_minute ||
         monthly != k.monthly_requests) &&
        lifecycle_set_restrictions(d->store, &k, models, rpm, monthly, &w->actor) != STORE_OK)
        goto fail;
    json_t *propagation = dash_sync_changes(d);
    if (reload(d, &k) != STORE_OK) {
        json_decref(propagation);
        goto fail;
    }
    dash_reply_json(res, 200, "OK",
                    json_pack("{s:o, s:o}", "key", key_doc(&k), "propagation", propagation));
    goto out;
fail:
    dash_reply_store_error(d, res, req);
out:
    json_decref(doc);
}
