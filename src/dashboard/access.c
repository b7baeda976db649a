/* Who gets into an account: sign-up, sign-in, accepting an invitation, the operator's one-time
 * set-password link and changing one's own password. The rules (README "Security model"):
 *
 * - A password is set only by its user: at sign-up, through a one-time link the operator made
 *   for that user, by an invitation only when the invitation creates the user, or by the user
 *   giving the current one. An invitation never creates, sets or replaces the credentials of a
 *   user who already exists: that user joins with their own signed-in session or their current
 *   password, and a user without a password cannot be given one through an invitation.
 * - Wrong passwords are throttled per email and address and per address (auth/throttle.h),
 *   wherever they are given; each is audited, and attempts refused while throttled are counted
 *   and reported once, not written one row each. Five wrong passwords void an invitation.
 * - Emails are checked for shape before anything looks them up or logs them. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/password.h"
#include "auth/session.h"
#include "auth/throttle.h"
#include "core/base62.h"
#include "core/util.h"
#include "dashboard/internal.h"

#define THROTTLE_SIGNIN "signin"        /* key: email and address */
#define THROTTLE_CODE "two-factor-user" /* key: user id (wrong codes, from anywhere) */
#define THROTTLE_ADDRESS "address"      /* key: address */
#define THROTTLE_SIGNUP_ADDRESS "signup-address"
#define THROTTLE_SIGNUP_ALL "signup-all"

/* ---- throttles --------------------------------------------------------------------------- */

/* The throttle counters of one password attempt: for the email and address, and the address. */
struct attempt {
    char pair[STORE_EMAIL_MAX + 64];
    char address[64];
    struct store_throttle tpair, taddr; /* Read before the attempt; zero when none. */
    int64_t now;
};

static void read_throttle(struct dashboard *d, const char *kind, const char *key,
                          struct store_throttle *t)
{
    memset(t, 0, sizeof(*t));
    if (key[0] != '\0' && store_throttle_get(d->store, kind, key, t) != STORE_OK)
        memset(t, 0, sizeof(*t));
}

static void attempt_begin(struct dashboard *d, const struct dash_request *req, const char *email,
                          struct attempt *a)
{
    memset(a, 0, sizeof(*a));
    a->now = kn_unix_now();
    throttle_address_key(req->ip, a->address, sizeof(a->address));
    snprintf(a->pair, sizeof(a->pair), "%s %s", email, a->address);
    read_throttle(d, THROTTLE_SIGNIN, a->pair, &a->tpair);
    read_throttle(d, THROTTLE_ADDRESS, a->address, &a->taddr);
}

/* Attempts refused while throttled since the last audited one, for the next audit entry. */
static void refused_note(const struct attempt *a, char *buf, size_t size)
{
    int64_t n = a->tpair.refused + a->taddr.refused;
    buf[0] = '\0';
    if (n > 0)
        snprintf(buf, size, "; %lld attempt%s refused while throttled before this one",
                 (long long)n, n == 1 ? "" : "s");
}

/* Returns 1, after replying 429 (and auditing the first refusal of a run), when the attempt must
 * wait; 0 when it may go on. */
static int attempt_throttled(struct dashboard *d, const struct dash_request *req,
                             struct dash_response *res, struct attempt *a, const char *email,
                             const char *account_id, const char *action)
{
    int64_t wp = throttle_wait(&throttle_signin_pair, &a->tpair, a->now);
    int64_t wa = throttle_wait(&throttle_signin_address, &a->taddr, a->now);
    int64_t wait = wp > wa ? wp : wa, before = 0;
    char msg[256], detail[160];

    if (wait == 0)
        return 0;
    if (wp >= wa)
        store_throttle_refuse(d->store, THROTTLE_SIGNIN, a->pair, &before);
    else
        store_throttle_refuse(d->store, THROTTLE_ADDRESS, a->address, &before);
    if (before == 0) {
        snprintf(detail, sizeof(detail),
                 "too many wrong passwords from %s; further attempts for %lld s are counted, not "
                 "logged one by one",
                 wp >= wa ? "this address for this email" : "this address", (long long)wait);
        dash_audit(d, account_id, email, req->ip, action, email, "throttled", detail);
    }
    snprintf(msg, sizeof(msg),
             "Too many wrong passwords. Try again in %lld second%s, or ask the operator for a "
             "set-password link.",
             (long long)wait, wait == 1 ? "" : "s");
    res->retry_after = (unsigned)wait;
    dash_reply_error(res, req, KN_ERR_TOO_MANY_ATTEMPTS, msg, NULL);
    return 1;
}

/* Counts, on the address's counter alone, an answer that told an anonymous client whether an
 * invitation's email has a user (asked without a password, or one that cannot be used): the
 * inviter holds the link, so an owner inviting email after email could otherwise list who uses
 * this server. */
static void attempt_probed(struct dashboard *d, struct attempt *a)
{
    struct store_throttle t;
    if (a->address[0] != '\0' && store_throttle_hit(d->store, THROTTLE_ADDRESS, a->address, a->now,
                                                    throttle_signin_address.window, &t) != STORE_OK)
        fprintf(stderr, "konnect: cannot count an invitation's answer: %s\n",
                store_errmsg(d->store));
}

/* Counts a wrong password on both counters. */
static void attempt_failed(struct dashboard *d, struct attempt *a)
{
    struct store_throttle t;
    if (store_throttle_hit(d->store, THROTTLE_SIGNIN, a->pair, a->now, throttle_signin_pair.window,
                           &t) != STORE_OK ||
        (a->address[0] != '\0' &&
         store_throttle_hit(d->store, THROTTLE_ADDRESS, a->address, a->now,
                            throttle_signin_address.window, &t) != STORE_OK))
        fprintf(stderr, "konnect: cannot count a failed sign-in: %s\n", store_errmsg(d->store));
}

/* The right password: the email's counter for this address starts again. The address's counter
 * does not, so that one good password does not buy more guesses at other emails. */
static void attempt_succeeded(struct dashboard *d, struct attempt *a)
{
    store_throttle_clear(d->store, THROTTLE_SIGNIN, a->pair);
}

/* ---- sign-up ----------------------------------------------------------------------------- */

static int64_t signup_wait(struct dashboard *d, const char *kind, const char *key, uint32_t limit,
                           int64_t now)
{
    struct throttle_policy p = {limit, 3600, 3600, 3600};
    struct store_throttle t;

    if (limit == 0 || key[0] == '\0')
        return 0;
    read_throttle(d, kind, key, &t);
    return throttle_wait(&p, &t, now);
}

void dash_signup(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                 struct who *w, const char *param)
{
    (void)w, (void)param;
    struct store_account a;
    struct store_user u;
    struct store_member m;
    struct store_throttle t;
    char hash[PASSWORD_HASH_SIZE], address[64], msg[200];
    int failed = 0, r;
    int64_t now = kn_unix_now(), wait;
    json_t *doc;
    const char *email, *pw;

    if (strcmp(d->cfg->signup, "open") != 0) {
        dash_reply_error(res, req, KN_ERR_SIGNUP_CLOSED, NULL, NULL);
        return;
    }
    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if ((email = dash_email_member(doc, req, res)) == NULL ||
        (pw = dash_string_member(doc, "password", 1, req, res, &failed)) == NULL)
        goto out;
    if (password_acceptable(pw) != 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "Choose a password of 10 to 256 characters.", "password");
        goto out;
    }
    throttle_address_key(req->ip, address, sizeof(address));
    wait = signup_wait(d, THROTTLE_SIGNUP_ADDRESS, address, d->cfg->signups_per_hour_ip, now);
    int64_t all = signup_wait(d, THROTTLE_SIGNUP_ALL, "all", d->cfg->signups_per_hour, now);
    if (wait > 0 || all > 0) {
        if (all > wait)
            wait = all;
        snprintf(msg, sizeof(msg),
                 "Too many accounts were created %s in the last hour. Try again in %lld "
                 "minute%s.",
                 all > 0 ? "on this server" : "from this address", (long long)(wait + 59) / 60,
                 (wait + 59) / 60 == 1 ? "" : "s");
        res->retry_after = (unsigned)wait;
        dash_reply_error(res, req, KN_ERR_TOO_MANY_ATTEMPTS, msg, NULL);
        goto out;
    }
    if (store_account_find(d->store, email, &a) == STORE_OK ||
        store_user_find(d->store, email, &u) == STORE_OK) {
        dash_reply_error(res, req, KN_ERR_EMAIL_TAKEN, NULL, "email");
        goto out;
    }
    if (password_hash(pw, hash) != 0) {
        dash_reply_error(res, req, KN_ERR_INTERNAL, NULL, NULL);
        goto out;
    }
    r = store_account_create(d->store, email, hash, NULL, &a);
    sodium_memzero(hash, sizeof(hash));
    if (r == STORE_CONFLICT) {
        dash_reply_error(res, req, KN_ERR_EMAIL_TAKEN, NULL, "email");
        goto out;
    }
    if (r != STORE_OK || store_user_find(d->store, a.email, &u) != STORE_OK ||
        store_member_find(d->store, a.id, u.id, &m) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    if (address[0] != '\0')
        store_throttle_hit(d->store, THROTTLE_SIGNUP_ADDRESS, address, now, 3600, &t);
    store_throttle_hit(d->store, THROTTLE_SIGNUP_ALL, "all", now, 3600, &t);
    dash_audit(d, a.id, u.email, req->ip, "user.signup", u.email, "ok", NULL);
    dash_start_session(d, req, res, 201, &u, &m);
out:
    json_decref(doc);
}

/* ---- sign-in ----------------------------------------------------------------------------- */

/* The second step of a sign-in whose password was right: the code ("code" in doc) of a user with
 * two-factor sign-in on. Returns 1 when u has none or the code is right (how says which kind, for
 * the audit); otherwise replies (401 two_factor_code_required without a code; 401
 * invalid_two_factor_code, counted like a wrong password, for a wrong one) and returns 0. */
static int second_factor(struct dashboard *d, const struct dash_request *req,
                         struct dash_response *res, const struct store_user *u, json_t *doc,
                         struct attempt *at, const char *account_id, const char *action, char *how,
                         size_t howsize)
{
    int failed = 0;
    const char *code = dash_string_member(doc, "code", 0, req, res, &failed);
    struct store_user fresh;
    struct store_throttle t;
    char msg[200];

    if (failed)
        return 0;
    /* The user as they are now, after the password's slow check: a sign-in that began before
     * they turned two-factor sign-in on must not end in a session without a code. */
    if (store_user_find(d->store, u->id, &fresh) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return 0;
    }
    if (fresh.totp_enabled_at != 0 && code != NULL && code[0] != '\0') {
        /* Guesses are counted per user too, from every address together. */
        read_throttle(d, THROTTLE_CODE, fresh.id, &t);
        int64_t wait = throttle_wait(&throttle_code_user, &t, at->now);
        if (wait > 0) {
            snprintf(msg, sizeof(msg),
                     "Too many wrong codes for this user. Try again in %lld second%s.",
                     (long long)wait, wait == 1 ? "" : "s");
            res->retry_after = (unsigned)wait;
            dash_reply_error(res, req, KN_ERR_TOO_MANY_ATTEMPTS, msg, "code");
            return 0;
        }
    }
    enum dash_tf tf = dash_two_factor_check(d, &fresh, code, how, howsize);
    sodium_memzero(&fresh, sizeof(fresh));
    switch (tf) {
    case DASH_TF_OFF:
        return 1;
    case DASH_TF_OK:
        store_throttle_clear(d->store, THROTTLE_CODE, u->id);
        return 1;
    case DASH_TF_MISSING:
        dash_reply_error(res, req, KN_ERR_TWO_FACTOR_CODE_REQUIRED, NULL, "code");
        return 0;
    case DASH_TF_WRONG:
        attempt_failed(d, at);
        store_throttle_hit(d->store, THROTTLE_CODE, u->id, at->now, throttle_code_user.window, &t);
        dash_audit(d, account_id, u->email, req->ip, action, u->email, "failed",
                   "right password, wrong two-factor code");
        dash_reply_error(res, req, KN_ERR_INVALID_TWO_FACTOR_CODE, NULL, "code");
        return 0;
    default:
        dash_reply_store_error(d, res, req);
        return 0;
    }
}

int dash_reauthenticate(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, struct who *w, json_t *doc, int code_too,
                        const char *action)
{
    struct attempt at;
    char note[96], detail[160], how[64];
    int failed = 0;
    const char *pw = dash_string_member(doc, "password", 1, req, res, &failed);

    if (pw == NULL)
        return 0;
    attempt_begin(d, req, w->user.email, &at);
    if (attempt_throttled(d, req, res, &at, w->user.email, w->member.account_id, action))
        return 0;
    refused_note(&at, note, sizeof(note));
    if (!password_verify(w->user.password_hash, pw)) {
        attempt_failed(d, &at);
        snprintf(detail, sizeof(detail), "wrong password%s", note);
        dash_audit(d, w->member.account_id, w->user.email, req->ip, action, w->user.email, "failed",
                   detail);
        dash_reply_error(res, req, KN_ERR_INVALID_CREDENTIALS, "The password is wrong.",
                         "password");
        return 0;
    }
    if (code_too && !second_factor(d, req, res, &w->user, doc, &at, w->member.account_id, action,
                                   how, sizeof(how)))
        return 0;
    attempt_succeeded(d, &at);
    return 1;
}

void dash_signin(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                 struct who *w, const char *param)
{
    (void)w, (void)param;
    struct store_user u;
    struct store_member m;
    struct attempt at;
    char note[96];
    int failed = 0;
    json_t *doc;
    const char *email, *pw;

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if ((email = dash_email_member(doc, req, res)) == NULL ||
        (pw = dash_string_member(doc, "password", 1, req, res, &failed)) == NULL)
        goto out;
    int found = store_user_find(d->store, email, &u) == STORE_OK;
    int member = found && store_member_first(d->store, u.id, &m) == STORE_OK;
    attempt_begin(d, req, found ? u.email : email, &at);
    if (attempt_throttled(d, req, res, &at, found ? u.email : email, member ? m.account_id : NULL,
                          "user.signin"))
        goto out;
    refused_note(&at, note, sizeof(note));
    if (!password_verify(found ? u.password_hash : "", pw) || !member) {
        char detail[160];
        attempt_failed(d, &at);
        snprintf(detail, sizeof(detail), "%s%s",
                 !found                       ? "unknown email"
                 : u.password_hash[0] == '\0' ? "the user has no password yet"
                                              : "wrong password",
                 note);
        dash_audit(d, member ? m.account_id : NULL, found ? u.email : email, req->ip, "user.signin",
                   found ? u.email : email, "failed", detail);
        dash_reply_error(res, req, KN_ERR_INVALID_CREDENTIALS, NULL, NULL);
        goto out;
    }
    char how[64] = "";
    if (!second_factor(d, req, res, &u, doc, &at, m.account_id, "user.signin", how, sizeof(how)))
        goto out;
    attempt_succeeded(d, &at);
    char detail[160];
    snprintf(detail, sizeof(detail), "%s%s%s", how, how[0] && note[0] ? "; " : "",
             note[0] ? note + 2 : "");
    dash_audit(d, m.account_id, u.email, req->ip, "user.signin", u.email, "ok",
               detail[0] ? detail : NULL);
    dash_start_session(d, req, res, 200, &u, &m);
out:
    json_decref(doc);
}

/* ---- invitations ------------------------------------------------------------------------- */

/* Makes user u a member of the invitation's account (when not one already) and signs them in
 * there. The invitation is used up first, so that it admits one person once. */
static void join(struct dashboard *d, const struct dash_request *req, struct dash_response *res,
                 const struct store_invite *inv, const struct store_user *u,
                 const struct store_user *fresh, const char *how)
{
    struct store_member m;
    struct store_user joined;
    int64_t now = kn_unix_now();

    if (store_invite_accept(d->store, inv->token_hash, now) != STORE_OK) {
        dash_reply_error(res, req, KN_ERR_INVITE_INVALID, NULL, "token");
        return;
    }
    memset(&m, 0, sizeof(m));
    kn_strlcpy(m.account_id, inv->account_id, sizeof(m.account_id));
    kn_strlcpy(m.user_id, fresh != NULL ? fresh->id : u->id, sizeof(m.user_id));
    kn_strlcpy(m.role, "member", sizeof(m.role));
    m.created_at = now;
    if (store_member_find(d->store, m.account_id, m.user_id, &m) != STORE_OK) {
        int r = store_member_add(d->store, &m, fresh);
        if (r == STORE_CONFLICT && fresh != NULL) {
            /* Someone made a user of this email since: they did not choose this password. */
            dash_reply_error(res, req, KN_ERR_EMAIL_TAKEN,
                             "A user with this email was created meanwhile. Open the "
                             "invitation again.",
                             NULL);
            return;
        }
        if (r != STORE_OK) {
            dash_reply_store_error(d, res, req);
            return;
        }
    }
    if (store_user_find(d->store, m.user_id, &joined) != STORE_OK ||
        store_member_find(d->store, m.account_id, m.user_id, &m) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        return;
    }
    dash_audit(d, m.account_id, joined.email, req->ip, "member.join", joined.email, "ok", how);
    dash_start_session(d, req, res, 200, &joined, &m);
}

/* A wrong password given with an invitation: throttled like a sign-in, audited in the inviting
 * account, and counted on the invitation, which the INVITE_MAX_FAILURES-th voids. */
static void invite_wrong_password(struct dashboard *d, const struct dash_request *req,
                                  struct dash_response *res, const struct store_invite *inv,
                                  struct attempt *at)
{
    char note[96], detail[160];
    int failures = 0;

    refused_note(at, note, sizeof(note));
    attempt_failed(d, at);
    store_invite_fail(d->store, inv->token_hash, INVITE_MAX_FAILURES, at->now, &failures);
    snprintf(detail, sizeof(detail), "wrong password (%d of %d)%s", failures, INVITE_MAX_FAILURES,
             note);
    dash_audit(d, inv->account_id, inv->email, req->ip, "member.join", inv->email, "failed",
               detail);
    if (failures == INVITE_MAX_FAILURES)
        dash_audit(d, inv->account_id, "konnect", req->ip, "member.invite_voided", inv->email, "ok",
                   "voided after five wrong passwords");
    dash_reply_error(res, req, KN_ERR_INVALID_CREDENTIALS,
                     "You already have a Konnect user: enter its password to join (or sign in "
                     "first, then open the link).",
                     "password");
}

void dash_invite_accept(struct dashboard *d, const struct dash_request *req,
                        struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    struct store_invite inv;
    struct store_user u, fresh;
    struct attempt at;
    uint8_t hash[32];
    int failed = 0;
    json_t *doc;
    const char *token, *pw;
    int64_t now = kn_unix_now();

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if ((token = dash_string_member(doc, "token", 1, req, res, &failed)) == NULL)
        goto out;
    pw = dash_string_member(doc, "password", 0, req, res, &failed);
    if (failed)
        goto out;
    session_token_hash(d->secret, token, strlen(token), hash);
    if (store_invite_find(d->store, hash, &inv) != STORE_OK || inv.accepted_at != 0 ||
        inv.canceled_at != 0 || inv.expires_at <= now) {
        dash_reply_error(res, req, KN_ERR_INVITE_INVALID, NULL, "token");
        goto out;
    }
    int have_user = store_user_find(d->store, inv.email, &u) == STORE_OK;
    if (w != NULL) {
        /* Signed in: the session is the proof, but only for the invited user. */
        if (!have_user || strcmp(w->user.id, u.id) != 0) {
            dash_reply_error(res, req, KN_ERR_INVITE_FOR_ANOTHER_USER, NULL, NULL);
            goto out;
        }
        uint8_t old[STORE_HASH_LEN];
        memcpy(old, w->session.token_hash, sizeof(old));
        join(d, req, res, &inv, &u, NULL, "existing user, signed in");
        if (res->status == 200)
            store_session_delete(d->store, old); /* The browser now holds the new session. */
        goto out;
    }
    /* Anonymous: what follows may tell whether the email has a user, counted (attempt_probed)
     * and throttled like a sign-in from this address. */
    attempt_begin(d, req, inv.email, &at);
    if (attempt_throttled(d, req, res, &at, inv.email, inv.account_id, "member.join"))
        goto out;
    if (have_user) {
        if (u.password_hash[0] == '\0') {
            attempt_probed(d, &at);
            dash_audit(d, inv.account_id, inv.email, req->ip, "member.join", inv.email, "denied",
                       "the user has no password yet");
            dash_reply_error(res, req, KN_ERR_PASSWORD_NOT_SET, NULL, NULL);
            goto out;
        }
        if (pw == NULL) {
            attempt_probed(d, &at);
            dash_reply_error(res, req, KN_ERR_MISSING_PARAMETER,
                             "You already have a Konnect user: enter its password to join.",
                             "password");
            goto out;
        }
        attempt_begin(d, req, u.email, &at);
        if (attempt_throttled(d, req, res, &at, u.email, inv.account_id, "member.join"))
            goto out;
        if (!password_verify(u.password_hash, pw)) {
            invite_wrong_password(d, req, res, &inv, &at);
            goto out;
        }
        char how[64];
        if (!second_factor(d, req, res, &u, doc, &at, inv.account_id, "member.join", how,
                           sizeof(how)))
            goto out;
        attempt_succeeded(d, &at);
        join(d, req, res, &inv, &u, NULL, "existing user, with their password");
        goto out;
    }
    if (strcmp(d->cfg->signup, "closed") == 0) {
        /* "closed": nobody new joins, not even by invitation; existing users still can. */
        attempt_probed(d, &at);
        dash_reply_error(res, req, KN_ERR_SIGNUP_CLOSED, NULL, NULL);
        goto out;
    }
    if (pw == NULL || password_acceptable(pw) != 0) {
        attempt_probed(d, &at);
        dash_reply_error(res, req, pw == NULL ? KN_ERR_MISSING_PARAMETER : KN_ERR_INVALID_PARAMETER,
                         "Choose a password of 10 to 256 characters.", "password");
        goto out;
    }
    memset(&fresh, 0, sizeof(fresh));
    base62_random_id(fresh.id, "user_", 20);
    kn_strlcpy(fresh.email, inv.email, sizeof(fresh.email));
    fresh.created_at = now;
    if (password_hash(pw, fresh.password_hash) != 0) {
        dash_reply_error(res, req, KN_ERR_INTERNAL, NULL, NULL);
        goto out;
    }
    join(d, req, res, &inv, NULL, &fresh, "new user");
    sodium_memzero(fresh.password_hash, sizeof(fresh.password_hash));
out:
    json_decref(doc);
}

/* ---- passwords --------------------------------------------------------------------------- */

void dash_password_set(struct dashboard *d, const struct dash_request *req,
                       struct dash_response *res, struct who *w, const char *param)
{
    (void)w, (void)param;
    struct store_password_token t;
    struct store_user u;
    struct store_member m;
    char hash[PASSWORD_HASH_SIZE];
    uint8_t th[32];
    int failed = 0, r;
    json_t *doc;
    const char *token, *pw;
    int64_t now = kn_unix_now();

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if ((token = dash_string_member(doc, "token", 1, req, res, &failed)) == NULL ||
        (pw = dash_string_member(doc, "password", 1, req, res, &failed)) == NULL)
        goto out;
    session_token_hash(d->secret, token, strlen(token), th);
    if (store_password_token_find(d->store, th, &t) != STORE_OK || t.used_at != 0 ||
        t.expires_at <= now || store_user_find(d->store, t.user_id, &u) != STORE_OK) {
        dash_reply_error(res, req, KN_ERR_LINK_INVALID, NULL, "token");
        goto out;
    }
    if (password_acceptable(pw) != 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "Choose a password of 10 to 256 characters.", "password");
        goto out;
    }
    if (password_hash(pw, hash) != 0) {
        dash_reply_error(res, req, KN_ERR_INTERNAL, NULL, NULL);
        goto out;
    }
    r = store_password_token_use(d->store, th, hash, now);
    sodium_memzero(hash, sizeof(hash));
    if (r == STORE_CONFLICT) {
        dash_reply_error(res, req, KN_ERR_LINK_INVALID, NULL, "token");
        goto out;
    }
    if (r != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    int member = store_member_first(d->store, u.id, &m) == STORE_OK;
    dash_audit(d, member ? m.account_id : NULL, u.email, req->ip, "user.password_set", u.email,
               "ok", "with a set-password link; every other session ended");
    /* A link is not a second factor: a user with two-factor sign-in signs in with the new
     * password and a code. */
    if (member && u.totp_enabled_at == 0)
        dash_start_session(d, req, res, 200, &u, &m);
    else
        dash_reply_json(res, 204, "No Content", NULL);
out:
    json_decref(doc);
}

void dash_password_change(struct dashboard *d, const struct dash_request *req,
                          struct dash_response *res, struct who *w, const char *param)
{
    (void)param;
    struct attempt at;
    char hash[PASSWORD_HASH_SIZE], note[96], detail[160];
    int failed = 0;
    json_t *doc;
    const char *cur, *next;

    if ((doc = dash_body_object(req, res)) == NULL)
        return;
    if ((cur = dash_string_member(doc, "current_password", 1, req, res, &failed)) == NULL ||
        (next = dash_string_member(doc, "new_password", 1, req, res, &failed)) == NULL)
        goto out;
    if (password_acceptable(next) != 0) {
        dash_reply_error(res, req, KN_ERR_INVALID_PARAMETER,
                         "Choose a new password of 10 to 256 characters.", "new_password");
        goto out;
    }
    attempt_begin(d, req, w->user.email, &at);
    if (attempt_throttled(d, req, res, &at, w->user.email, w->member.account_id,
                          "user.password_change"))
        goto out;
    refused_note(&at, note, sizeof(note));
    if (!password_verify(w->user.password_hash, cur)) {
        attempt_failed(d, &at);
        snprintf(detail, sizeof(detail), "wrong current password%s", note);
        dash_audit(d, w->member.account_id, w->user.email, req->ip, "user.password_change",
                   w->user.email, "failed", detail);
        dash_reply_error(res, req, KN_ERR_INVALID_CREDENTIALS, "The current password is wrong.",
                         "current_password");
        goto out;
    }
    attempt_succeeded(d, &at);
    if (password_hash(next, hash) != 0) {
        dash_reply_error(res, req, KN_ERR_INTERNAL, NULL, NULL);
        goto out;
    }
    int r = store_user_set_password(d->store, w->user.id, hash);
    sodium_memzero(hash, sizeof(hash));
    if (r != STORE_OK ||
        store_sessions_delete_others(d->store, w->user.id, w->session.token_hash) != STORE_OK) {
        dash_reply_store_error(d, res, req);
        goto out;
    }
    dash_audit(d, w->member.account_id, w->user.email, req->ip, "user.password_change",
               w->user.email, "ok", "every other session ended");
    dash_reply_json(res, 204, "No Content", NULL);
out:
    json_decref(doc);
}
