/* Key changes, each with its audit entry: create, roll, rename, allowlist, expire, revoke; see
 * lifecycle.h. */
#include "keys/lifecycle.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base62.h"
#include "core/termsafe.h"
#include "core/ipnet.h"
#include "core/util.h"
#include "metering/plans.h"

int lifecycle_valid_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > STORE_NAME_MAX)
        return -1;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return -1;
    /* Names go into JSON (the dashboard, reports), which only holds UTF-8. */
    json_t *utf8 = json_string(name);
    if (utf8 == NULL)
        return -1;
    json_decref(utf8);
    return 0;
}

int lifecycle_canonical_allowlist(const char *text, char out[STORE_ALLOWLIST_MAX], char *err,
                                  size_t errsize)
{
    struct iplist *l;

    out[0] = '\0';
    if (text == NULL || text[0] == '\0')
        return 0;
    if ((l = iplist_parse(text, err, errsize)) == NULL)
        return -1;
    int r = iplist_format(l, out, STORE_ALLOWLIST_MAX);
    free(l);
    if (r != 0)
        snprintf(err, errsize, "the allowlist is too long");
    return r;
}

void lifecycle_fill(const uint8_t secret[APIKEY_SECRET_LEN], const struct lifecycle_spec *spec,
                    const char *created_by, struct store_key *k, char sk[APIKEY_MAX_LEN + 1])
{
    memset(k, 0, sizeof(*k));
    apikey_generate(spec->mode, sk);
    base62_random_id(k->id, "key_", 20);
    kn_strlcpy(k->account_id, spec->account_id, sizeof(k->account_id));
    kn_strlcpy(k->name, spec->name, sizeof(k->name));
    kn_strlcpy(k->mode, apikey_mode_name(spec->mode), sizeof(k->mode));
    kn_strlcpy(k->environment, apikey_env_name(spec->env), sizeof(k->environment));
    apikey_hash(secret, sk, strlen(sk), k->hash);
    apikey_hint(sk, k->hint);
    kn_strlcpy(k->created_by, created_by, sizeof(k->created_by));
    k->created_at = kn_unix_now();
    k->expires_at = spec->expires_at;
    kn_strlcpy(k->ip_allowlist, spec->allowlist != NULL ? spec->allowlist : "",
               sizeof(k->ip_allowlist));
    kn_strlcpy(k->models, spec->models != NULL ? spec->models : "", sizeof(k->models));
    k->requests_per_minute = spec->requests_per_minute;
    k->monthly_requests = spec->monthly_requests;
}

static void clean_field(char *field, size_t size)
{
    char tmp[512];

    utf8_clean_copy(tmp, size < sizeof(tmp) ? size : sizeof(tmp), field);
    memcpy(field, tmp, strlen(tmp) + 1);
}

void lifecycle_audit_clean(struct store_audit *e)
{
    clean_field(e->actor, sizeof(e->actor));
    clean_field(e->action, sizeof(e->action));
    clean_field(e->target, sizeof(e->target));
    clean_field(e->ip, sizeof(e->ip));
    clean_field(e->result, sizeof(e->result));
    clean_field(e->detail, sizeof(e->detail));
}

static void fill_entry(struct store_audit *e, const char *account_id, const char *actor,
                       const char *ip, const char *action, const char *target, const char *result,
                       const char *detail)
{
    memset(e, 0, sizeof(*e));
    e->at = kn_unix_now();
    kn_strlcpy(e->account_id, account_id != NULL ? account_id : "", sizeof(e->account_id));
    kn_strlcpy(e->actor, actor, sizeof(e->actor));
    kn_strlcpy(e->action, action, sizeof(e->action));
    kn_strlcpy(e->target, target != NULL ? target : "", sizeof(e->target));
    kn_strlcpy(e->ip, ip != NULL ? ip : "", sizeof(e->ip));
    kn_strlcpy(e->result, result, sizeof(e->result));
    kn_strlcpy(e->detail, detail != NULL ? detail : "", sizeof(e->detail));
    lifecycle_audit_clean(e);
}

static void add_entry(struct store *s, const struct store_audit *e)
{
    if (store_audit_add(s, e) != STORE_OK)
        fprintf(stderr, "konnect: %s\n", store_errmsg(s));
}

void lifecycle_audit_entry(struct store *s, const char *account_id, const char *actor,
                           const char *ip, const char *action, const char *target,
                           const char *result, const char *detail)
{
    struct store_audit e;
    fill_entry(&e, account_id, actor, ip, action, target, result, detail);
    add_entry(s, &e);
}

void lifecycle_key_entry(struct store_audit *e, const char *account_id,
                         const struct lifecycle_actor *who, const char *action,
                         const struct store_key *k, const char *detail)
{
    char target[128] = "";

    if (k != NULL)
        snprintf(target, sizeof(target), "%s (%s)", k->id, k->hint);
    fill_entry(e, account_id, who->name, who->ip, action, target, "ok", detail);
}

void lifecycle_audit(struct store *s, const char *account_id, const struct lifecycle_actor *who,
                     const char *action, const struct store_key *k, const char *result,
                     const char *detail)
{
    struct store_audit e;
    lifecycle_key_entry(&e, account_id, who, action, k, detail);
    kn_strlcpy(e.result, result, sizeof(e.result));
    add_entry(s, &e);
}

/* After a key change that carried entry e: a change that failed committed nothing, so its entry
 * is written on its own, as "failed" (keeping the change's error message). Returns r. */
static int audited(struct store *s, int r, struct store_audit *e)
{
    if (r == STORE_OK)
        return r;
    char msg[512];
    kn_strlcpy(msg, store_errmsg(s), sizeof(msg));
    kn_strlcpy(e->result, "failed", sizeof(e->result));
    add_entry(s, e);
    store_set_error(s, r, "%s", msg);
    return r;
}

int lifecycle_create(struct store *s, const uint8_t secret[APIKEY_SECRET_LEN],
                     const struct lifecycle_spec *spec, const struct lifecycle_actor *who,
                     struct store_key *k, char sk[APIKEY_MAX_LEN + 1])
{
    char detail[256];
    int r;

    struct store_audit e;

    lifecycle_fill(secret, spec, who->name, k, sk);
    snprintf(detail, sizeof(detail), "name \"%.64s\", %s, %s%s%.120s", k->name, k->mode,
             k->environment, k->ip_allowlist[0] ? ", allowlist " : "", k->ip_allowlist);
    lifecycle_key_entry(&e, k->account_id, who, "key.create", k, detail);
    r = audited(s, store_key_insert(s, k, 1, &e), &e);
    if (r != STORE_OK)
        sodium_memzero(sk, APIKEY_MAX_LEN + 1);
    return r;
}

int lifecycle_operator_key_create(struct store *s, const uint8_t secret[APIKEY_SECRET_LEN],
                                  const char *name, const struct lifecycle_actor *who,
                                  struct store_key *k, char sk[APIKEY_MAX_LEN + 1])
{
    struct lifecycle_spec spec = {.account_id = "", .name = name, .mode = APIKEY_MODE_OPERATOR};
    struct store_audit e;
    char detail[160];

    lifecycle_fill(secret, &spec, who->name, k, sk);
    base62_random_id(k->id, "opk_", 20);
    k->environment[0] = '\0';
    snprintf(detail, sizeof(detail), "name \"%.64s\"", k->name);
    lifecycle_key_entry(&e, "", who, "operator_key.create", k, detail);
    int r = audited(s, store_operator_key_insert(s, k, &e), &e);
    if (r != STORE_OK)
        sodium_memzero(sk, APIKEY_MAX_LEN + 1);
    return r;
}

int lifecycle_operator_key_revoke(struct store *s, const struct store_key *k,
                                  const struct lifecycle_actor *who)
{
    struct store_audit e;
    lifecycle_key_entry(&e, "", who, "operator_key.revoke", k, NULL);
    return audited(s, store_operator_key_revoke(s, k->id, kn_unix_now(), who->name, &e), &e);
}

int lifecycle_roll(struct store *s, const uint8_t secret[APIKEY_SECRET_LEN],
                   const struct store_key *old, int64_t grace, const struct lifecycle_actor *who,
                   struct store_key *k, char sk[APIKEY_MAX_LEN + 1])
{
    struct lifecycle_spec spec;
    int64_t now = kn_unix_now();
    char detail[128];
    int r;

    if (old->revoked_at != 0 || (old->expires_at != 0 && old->expires_at <= now) ||
        old->rolled_to[0] != '\0')
        return store_set_error(s, STORE_CONFLICT, "%s is %s and cannot be rolled", old->id,
                               lifecycle_status(old, now));
    memset(&spec, 0, sizeof(spec));
    spec.account_id = old->account_id;
    spec.name = old->name;
    apikey_mode_parse(old->mode, &spec.mode);
    apikey_env_parse(old->environment, &spec.env);
    spec.allowlist = old->ip_allowlist;
    /* ...and its restrictions, as it inherits the expiry: rolling must never be a way out of
     * one. */
    spec.models = old->models;
    spec.requests_per_minute = old->requests_per_minute;
    spec.monthly_requests = old->monthly_requests;
    spec.expires_at = old->expires_at;
    struct store_audit e;
    lifecycle_fill(secret, &spec, who->name, k, sk);
    /* The replacement counts its quota on the old key's line: rolling never starts it again. */
    kn_strlcpy(k->quota_key, old->quota_key[0] != '\0' ? old->quota_key : old->id,
               sizeof(k->quota_key));
    snprintf(detail, sizeof(detail), "replaced by %s (%s); old key expires in %lld s", k->id,
             k->hint, (long long)grace);
    lifecycle_key_entry(&e, old->account_id, who, "key.roll", old, detail);
    r = audited(s, store_key_roll(s, old->id, k, now + grace, &e), &e);
    if (r != STORE_OK)
        sodium_memzero(sk, APIKEY_MAX_LEN + 1);
    return r;
}

int lifecycle_revoke(struct store *s, const struct store_key *k, const struct lifecycle_actor *who)
{
    struct store_audit e;
    lifecycle_key_entry(&e, k->account_id, who, "key.revoke", k, NULL);
    return audited(s, store_key_revoke(s, k->id, e.at, who->name, &e), &e);
}

int lifecycle_expire(struct store *s, const struct store_key *k, int64_t at,
                     const struct lifecycle_actor *who)
{
    char detail[64];
    struct store_audit e;
    kn_format_time(at, detail, sizeof(detail));
    lifecycle_key_entry(&e, k->account_id, who, "key.expire", k, detail);
    return audited(s, store_key_expire(s, k->id, at, &e), &e);
}

int lifecycle_rename(struct store *s, const struct store_key *k, const char *name,
                     const struct lifecycle_actor *who)
{
    char detail[STORE_NAME_MAX * 2 + 32];
    struct store_audit e;
    snprintf(detail, sizeof(detail), "\"%s\" -> \"%s\"", k->name, name);
    lifecycle_key_entry(&e, k->account_id, who, "key.rename", k, detail);
    return audited(s, store_key_rename(s, k->id, name, &e), &e);
}

int lifecycle_set_allowlist(struct store *s, const struct store_key *k, const char *canonical,
                            const struct lifecycle_actor *who)
{
    struct store_audit e;
    lifecycle_key_entry(&e, k->account_id, who, "key.allowlist", k,
                        canonical[0] ? canonical : "any address");
    return audited(s, store_key_set_allowlist(s, k->id, canonical, &e), &e);
}

int lifecycle_set_restrictions(struct store *s, const struct store_key *k, const char *models,
                               int64_t requests_per_minute, int64_t monthly_requests,
                               const struct lifecycle_actor *who)
{
    struct store_audit e;
    char detail[STORE_MODELS_MAX + 128], rpm[64], monthly[64];
    if (requests_per_minute != 0)
        snprintf(rpm, sizeof(rpm), "%lld requests per minute", (long long)requests_per_minute);
    else
        kn_strlcpy(rpm, "the account's requests per minute", sizeof(rpm));
    if (monthly_requests != 0)
        snprintf(monthly, sizeof(monthly), "%lld requests a month", (long long)monthly_requests);
    else
        kn_strlcpy(monthly, "the account's monthly quota", sizeof(monthly));
    snprintf(detail, sizeof(detail), "models %s; %s; %s", models[0] ? models : "all the plan's",
             rpm, monthly);
    lifecycle_key_entry(&e, k->account_id, who, "key.restrict", k, detail);
    return audited(
        s, store_key_set_restrictions(s, k->id, models, requests_per_minute, monthly_requests, &e),
        &e);
}

int lifecycle_model_allowed(const char *models, const char *name, size_t len)
{
    const char *p = models;

    if (*p == '\0')
        return 1;
    while (*p != '\0') {
        size_t n = strcspn(p, ",");
        if (n == len && memcmp(p, name, len) == 0)
            return 1;
        p += n + (p[n] == ',');
    }
    return 0;
}

int lifecycle_canonical_models(const struct plans *ps, const struct plan *plan, const char *text,
                               char out[STORE_MODELS_MAX], char *err, size_t errsize)
{
    const char *p = text;
    size_t o = 0, count = 0;

    out[0] = '\0';
    while (*p != '\0') {
        while (*p == ',' || *p == ' ')
            p++;
        size_t n = strcspn(p, ", ");
        if (n == 0)
            break;
        struct plan_model pm;
        if (n > PLAN_MODEL_MAX || plans_model(ps, plan, p, n, &pm) != 0) {
            snprintf(err, errsize,
                     "'%.*s' is not a model of the account's plan (\"%s\"); GET /v1/models lists "
                     "them",
                     (int)(n > 64 ? 64 : n), p, plan->name);
            return -1;
        }
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)p[i] <= ' ' || (unsigned char)p[i] > '~') {
                snprintf(err, errsize, "model names are printable ASCII without spaces");
                return -1;
            }
        if (!lifecycle_model_allowed(out, p, n) || out[0] == '\0') {
            if (++count > LIFECYCLE_MODELS_MAX || o + n + 2 > STORE_MODELS_MAX) {
                snprintf(err, errsize, "a key may name at most %d models", LIFECYCLE_MODELS_MAX);
                return -1;
            }
            o += (size_t)snprintf(out + o, STORE_MODELS_MAX - o, "%s%.*s", o ? "," : "", (int)n, p);
        }
        p += n;
    }
    if (out[0] == '\0' && text[strspn(text, ", ")] != '\0') {
        snprintf(err, errsize, "no model named");
        return -1;
    }
    return 0;
}

const char *lifecycle_status(const struct store_key *k, int64_t now)
{
    if (k->revoked_at != 0)
        return "revoked";
    if (k->expires_at != 0 && k->expires_at <= now)
        return "expired";
    if (k->rolled_to[0] != '\0')
        return "rolled";
    return "active";
}
