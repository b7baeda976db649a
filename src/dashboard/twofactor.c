/* Two-factor sign-in (auth/totp.h) in the dashboard: a user sets it up with their password (the
 * seed is shown once, as text and as an otpauth:// link for an app), turns it on with a first
 * code (the recovery codes are shown once), replaces their recovery codes or turns it off with
 * their password and a code; an owner may require it of every member of the account. Sign-in
 * asks for the code (dashboard/access.c). */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "auth/totp.h"
#include "core/util.h"
#include "dashboard/internal.h"

/* How many codes a stored list of recovery-code hashes holds. */
static size_t codes_left(const char *list)
{
    size_t n = list[0] != '\0';
    for (const char *p = list; *p != '\0'; p++)
        n += *p == ',';
    return n;
}

enum dash_tf dash_two_factor_check(struct dashboard *d, const struct store_user *u,
                                   const char *code, char *how, size_t howsize)
{
    uint8_t seed[TOTP_SEED_LEN];
    char rest[TOTP_RECOVERY_LIST_SIZE];
    uint64_t step;
    int r;

    how[0] = '\0';
    if (u->totp_enabled_at == 0 || u->totp_seed[0] == '\0')
        return DASH_TF_OFF;
    if (code == NULL || code[0] == '\0')
        return DASH_TF_MISSING;
    if (totp_open(d->secret, u->id, u->totp_seed, seed) != 0) {
        /* Sealed under another server secret (docs/operations.md: rotating it means enrolling
         * again): only a recovery code, or `konnect user two-factor-off`, opens this user. */
        fprintf(stderr,
                "konnect: the two-factor seed of user %s cannot be opened with this server "
                "secret (it was sealed under another); the operator can turn it off for them "
                "(konnect user two-factor-off) once they have checked who asks\n",
                u->id);
        step = 0;
    } else {
        step = totp_check(seed, sizeof(seed), code, kn_unix_now(), (uint64_t)u->totp_last_step);
        sodium_memzero(seed, sizeof(seed));
    }
    if (step != 0) {
        r = store_user_totp_step(d->store, u->id, (int64_t)step);
        if (r == STORE_OK) {
            snprintf(how, howsize, "with an authenticator code");
            return DASH_TF_OK;
        }
        return r == STORE_CONFLICT ? DASH_TF_WRONG : DASH_TF_STORE;
    }
    if (!totp_recovery_take(d->secret, u->recovery_codes, code, rest))
        return DASH_TF_WRONG;
    r = store_user_recovery_take(d->store, u->id, u->recovery_codes, rest);
    if (r != STORE_OK)
        return r == STORE_CONFLICT ? DASH_TF_WRONG : DASH_TF_STORE;
    snprintf(how, howsize, "with a recovery code (%zu left)", codes_left(rest));
    return DASH_TF_OK;
}

/* The two-factor part of the session document and of these calls' answers. */
static json_t *state_doc(const struct store_user *u)
{
    size_t left = u->totp_enabled_at != 0 ? codes_left(u->recovery_codes) : 0;
    return json_pack("{s:b, s:b, s:I}", "enabled", u->totp_enabled_at != 0, "pending",
                     u->totp_enabled_at == 0 && u->totp_seed[0] != '\0', "recovery_codes_left",
                     (json_int_t)left);
}

/* New recovery codes for u: stored, and returned as the list shown once. */
static json_t *new_codes(struct dashboard *d, char list[TOTP_RECOVERY_LIST_SIZE])
{
    char codes[TOTP_RECOVERY_CODES][TOTP_RECOVERY_SIZE];
    json_t *arr = json_array();

    totp_recovery_new(d->secret, codes, list);
    for (int i = 0; i < TOTP_RECOVERY_CODES; i++)
        json_array_append_new(arr, json_string(codes[i]));
    sodium_memzero(codes, sizeof(codes));
    return arr;
}

void dash_two_factor_setup(struct dashboard *d, const struct dash_request *req,
                           struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    uint8_t seed[TOTP_SEED_LEN];
    char sealed[TOTP_SEALED_SIZE], b32[TOTP_BASE32_SIZE], uri[700];
    json_t *doc;

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if (w->user.totp_enabled_at != 0) {
        dash_reply_error(res, req, KN_ERR_TWO_FACTOR_STATE,
                         "Two-factor sign-in is on already; turn it off first to use another "
                         "app or device.",
                         NULL);
        goto out;
    }
    if (!dash_reauthenticate(d, req, res, w, doc, 0, "user.two_factor_setup"))
        goto out;
    totp_seed_new(seed);
    totp_seal(d->secret, w->user.id, seed, sealed);
    totp_base32(seed, sizeof(seed), b32, sizeof(b32));
    sodium_memzero(seed, sizeof(seed));
    /* Only while it is still not on: a setup that raced with turning it on never undoes it. */
    int r = store_user_totp_set(d->store, w->user.id, "", sealed, 0, NULL, 0);
    if (r == STORE_CONFLICT) {
        dash_reply_error(res, req, KN_ERR_TWO_FACTOR_STATE,
                         "Two-factor sign-in was turned on meanwhile.", NULL);
        goto out;
    }
    if (r != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    totp_uri("Konnect", w->user.email, b32, uri, sizeof(uri));
    dash_audit(d, w->member.account_id, w->user.email, req->ip, "user.two_factor_setup",
               w->user.email, "ok", "a new seed, not on until a code confirms it");
    dash_reply_json(res, 200, "OK",
                    json_pack("{s:s, s:s, s:i, s:i}", "secret", b32, "otpauth_url", uri, "digits",
                              TOTP_DIGITS, "period", TOTP_STEP));
    sodium_memzero(b32, sizeof(b32));
    sodium_memzero(uri, sizeof(uri));
out:
    json_decref(doc);
}

void dash_two_factor_enable(struct dashboard *d, const struct dash_request *req,
                            struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    uint8_t seed[TOTP_SEED_LEN];
    char list[TOTP_RECOVERY_LIST_SIZE];
    int failed = 0;
    uint64_t step;
    json_t *doc;
    const char *code;

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if ((code = dash_string_member(doc, "code", 1, req, res, &failed)) == NULL)
        goto out;
    if (w->user.totp_enabled_at != 0 || w->user.totp_seed[0] == '\0') {
        dash_reply_error(res, req, KN_ERR_TWO_FACTOR_STATE,
                         w->user.totp_enabled_at != 0
                             ? "Two-factor sign-in is on already."
                             : "Set up two-factor sign-in first (POST two-factor/setup).",
                         NULL);
        goto out;
    }
    if (totp_open(d->secret, w->user.id, w->user.totp_seed, seed) != 0) {
        dash_reply_error(res, req, KN_ERR_TWO_FACTOR_STATE,
                         "The seed set up cannot be read any more; set it up again.", NULL);
        goto out;
    }
    step = totp_check(seed, sizeof(seed), code, kn_unix_now(), 0);
    sodium_memzero(seed, sizeof(seed));
    if (step == 0) {
        dash_audit(d, w->member.account_id, w->user.email, req->ip, "user.two_factor_on",
                   w->user.email, "failed", "wrong code");
        dash_reply_error(res, req, KN_ERR_INVALID_TWO_FACTOR_CODE,
                         "That code is wrong or expired: enter the current code your "
                         "authenticator app shows for this account (check the phone's clock).",
                         "code");
        goto out;
    }
    json_t *codes = new_codes(d, list);
    /* Other sessions end first; then one write turns it on with its codes and the step just
     * used, and only for the seed this user set up (a newer setup or a turning-on that raced
     * with this one wins). */
    if (store_sessions_delete_others(d->store, w->user.id, w->session.token_hash) != STORE_OK) {
        json_decref(codes);
        dash_reply_store_error(d, res, req);
        goto out;
    }
    int r = store_user_totp_set(d->store, w->user.id, w->user.totp_seed, w->user.totp_seed,
                                kn_unix_now(), list, (int64_t)step);
    if (r != STORE_OK) {
        json_decref(codes);
        if (r == STORE_CONFLICT)
            dash_reply_error(res, req, KN_ERR_TWO_FACTOR_STATE,
                             "Two-factor sign-in was set up again or turned on meanwhile; start "
                             "over.",
                             NULL);
        else
            dash_reply_store_error(d, res, req);
        goto out;
    }
    dash_audit(d, w->member.account_id, w->user.email, req->ip, "user.two_factor_on", w->user.email,
               "ok", "every other session ended");
    dash_reply_json(res, 200, "OK", json_pack("{s:b, s:o}", "enabled", 1, "recovery_codes", codes));
out:
    json_decref(doc);
}

/* 1 when an account of the signed-in user requires two-factor sign-in (the one signed in to). */
static int required_here(struct dashboard *d, const struct who *w, int *required)
{
    return store_account_two_factor(d->store, w->member.account_id, required);
}

void dash_two_factor_disable(struct dashboard *d, const struct dash_request *req,
                             struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    int required = 0;
    json_t *doc;

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if (w->user.totp_enabled_at == 0) {
        dash_reply_error(res, req, KN_ERR_TWO_FACTOR_STATE, "Two-factor sign-in is not on.", NULL);
        goto out;
    }
    if (required_here(d, w, &required) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    if (required) {
        dash_reply_error(res, req, KN_ERR_TWO_FACTOR_REQUIRED,
                         "This account's owner requires two-factor sign-in, so it cannot be "
                         "turned off. To move to another app or device, ask the owner to lift "
                         "the requirement for a moment.",
                         NULL);
        goto out;
    }
    if (!dash_reauthenticate(d, req, res, w, doc, 1, "user.two_factor_off"))
        goto out;
    if (store_user_totp_set(d->store, w->user.id, NULL, "", 0, NULL, 0) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    dash_audit(d, w->member.account_id, w->user.email, req->ip, "user.two_factor_off",
               w->user.email, "ok", NULL);
    dash_reply_json(res, 204, "No Content", NULL);
out:
    json_decref(doc);
}

void dash_two_factor_codes(struct dashboard *d, const struct dash_request *req,
                           struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    char list[TOTP_RECOVERY_LIST_SIZE];
    json_t *doc;
    struct store_user now;

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if (w->user.totp_enabled_at == 0) {
        dash_reply_error(res, req, KN_ERR_TWO_FACTOR_STATE, "Two-factor sign-in is not on.", NULL);
        goto out;
    }
    if (!dash_reauthenticate(d, req, res, w, doc, 1, "user.recovery_codes"))
        goto out;
    /* The code just given may have been a recovery code: start from what the store has now. */
    if (store_user_find(d->store, w->user.id, &now) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    json_t *codes = new_codes(d, list);
    if (store_user_recovery_take(d->store, w->user.id, now.recovery_codes, list) != STORE_OK) {
        json_decref(codes);
        dash_reply_store_error(d, res, req);
        goto out;
    }
    dash_audit(d, w->member.account_id, w->user.email, req->ip, "user.recovery_codes",
               w->user.email, "ok", "new codes; the old ones no longer work");
    dash_reply_json(res, 200, "OK", json_pack("{s:o}", "recovery_codes", codes));
out:
    json_decref(doc);
}

void dash_account_two_factor(struct dashboard *d, const struct dash_request *req,
                             struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    json_t *doc, *v;
    int was = 0;

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    v = json_object_get(doc, "required");
    if (!json_is_boolean(v)) {
        dash_reply_error(res, req, v == NULL ? KN_ERR_MISSING_PARAMETER : KN_ERR_INVALID_PARAMETER,
                         "\"required\" must be true or false.", "required");
        goto out;
    }
    int want = json_is_true(v);
    if (want && w->user.totp_enabled_at == 0) {
        dash_reply_error(res, req, KN_ERR_TWO_FACTOR_STATE,
                         "Turn on two-factor sign-in for yourself first: requiring it would "
                         "otherwise lock you out of everything but setting it up.",
                         NULL);
        goto out;
    }
    if (required_here(d, w, &was) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    /* Lifting the requirement weakens every member's sign-in: a stolen session is not enough,
     * the owner's password and code are asked again. */
    if (was && !want && !dash_reauthenticate(d, req, res, w, doc, 1, "account.two_factor_optional"))
        goto out;
    if (was != want &&
        store_account_set_two_factor(d->store, w->member.account_id, want) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    if (was != want)
        dash_audit(d, w->member.account_id, w->user.email, req->ip,
                   want ? "account.two_factor_required" : "account.two_factor_optional",
                   w->member.account_id, "ok",
                   want ? "every member must sign in with a second factor" : NULL);
    dash_reply_json(res, 200, "OK", json_pack("{s:b}", "required", want));
out:
    json_decref(doc);
}

json_t *dash_two_factor_doc(struct dashboard *d, const struct store_user *u, const char *account_id)
{
    int required = 0;
    json_t *doc = state_doc(u);
    store_account_two_factor(d->store, account_id, &required);
    json_object_set_new(doc, "required", json_boolean(required));
    return doc;
}
