/* The PostgreSQL backend's dashboard access: users, memberships, sessions, invitations,
 * set-password links, throttles and pruning (see pg_internal.h). */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/pg_internal.h"

static int insert_user(struct store *s, const struct store_user *u)
{
    return PG_RUN(s, USER_INSERT,
                  "INSERT INTO users(id, email, password_hash, created_at) "
                  "VALUES ($1, lower($2 COLLATE \"C\"), nullif($3, ''), $4)",
                  NULL, "cannot create user", "ttti", u->id, u->email, u->password_hash,
                  u->created_at);
}

static int insert_member(struct store *s, const char *account_id, const char *user_id,
                         const char *role, int64_t at, const char *what)
{
    return PG_RUN(
        s, MEMBER_INSERT,
        "INSERT INTO memberships(account_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        NULL, what, "ttti", account_id, user_id, role, at);
}

int pg_account_insert_owned(struct store *s, const struct store_account *a,
                            const struct store_user *u, int existing)
{
    struct store_user found;
    int rc;

    if ((rc = pg_begin(s)) != STORE_OK)
        return rc;
    if ((rc = pg_account_insert(s, a)) != STORE_OK)
        goto rollback;
    rc = pg_user_find(s, u->email, &found);
    if (rc != STORE_OK && rc != STORE_NOT_FOUND)
        goto rollback;
    if (existing) {
        /* The caller named the user it expects: only that one may become the owner. */
        if (rc == STORE_NOT_FOUND || strcmp(found.id, u->id) != 0) {
            rc = store_set_error(s, STORE_NOT_FOUND, "%s is not the dashboard user of %s", u->id,
                                 u->email);
            goto rollback;
        }
    } else if (rc == STORE_OK) {
        rc = store_set_error(s, STORE_CONFLICT, "%s is already a dashboard user (%s)", u->email,
                             found.id);
        goto rollback;
    } else if ((rc = insert_user(s, u)) != STORE_OK) {
        goto rollback;
    }
    rc = insert_member(s, a->id, u->id, "owner", a->created_at, "cannot add the owner");
rollback:
    return pg_end(s, rc);
}

static void read_user(PGresult *res, int i, void *out)
{
    struct store_user *u = out;
    memset(u, 0, sizeof(*u));
    pg_text(u->id, sizeof(u->id), res, i, 0);
    pg_text(u->email, sizeof(u->email), res, i, 1);
    pg_text(u->password_hash, sizeof(u->password_hash), res, i, 2);
    u->created_at = pg_int(res, i, 3);
    pg_text(u->totp_seed, sizeof(u->totp_seed), res, i, 4);
    u->totp_enabled_at = pg_int(res, i, 5);
    u->totp_last_step = pg_int(res, i, 6);
    pg_text(u->recovery_codes, sizeof(u->recovery_codes), res, i, 7);
}

int pg_user_find(struct store *s, const char *email_or_id, struct store_user *out)
{
    PGresult *res;
    int r = PG_RUN(s, USER_FIND,
                   "SELECT id, email, coalesce(password_hash, ''), created_at, "
                   "coalesce(totp_seed, ''), coalesce(totp_enabled_at, 0), totp_last_step, "
                   "coalesce(recovery_codes, '') FROM users "
                   "WHERE email = lower($1 COLLATE \"C\") OR id = $1",
                   &res, "cannot read user", "t", email_or_id);
    return r != STORE_OK ? r : pg_one_row(s, res, read_user, out, "no such user");
}

/* Forgets a user's set-password links that were not used: a new password, or a newer link,
 * makes them worthless, and one left in a shell history or a chat must not open the user. */
static int void_password_tokens(struct store *s, const char *user_id)
{
    return PG_RUN(s, PWTOKENS_VOID,
                  "DELETE FROM password_tokens WHERE user_id = $1 AND used_at IS NULL", NULL,
                  "cannot void set-password links", "t", user_id);
}

/* Inside a transaction. */
static int set_password(struct store *s, const char *user_id, const char *hash)
{
    PGresult *res;
    int r = PG_RUN(s, USER_PASSWORD, "UPDATE users SET password_hash = $2 WHERE id = $1", &res,
                   "cannot set password", "tt", user_id, hash);
    if (r != STORE_OK)
        return r;
    long changed = pg_changes(res);
    PQclear(res);
    if (changed == 0)
        return store_set_error(s, STORE_NOT_FOUND, "no such user");
    return void_password_tokens(s, user_id);
}

int pg_user_set_password(struct store *s, const char *user_id, const char *hash)
{
    int rc;

    if ((rc = pg_begin(s)) != STORE_OK)
        return rc;
    return pg_end(s, set_password(s, user_id, hash));
}

/* An UPDATE that must change one row: STORE_OK, or `none` with its message. */
static int one_changed(struct store *s, int r, PGresult *res, int none, const char *msg)
{
    if (r != STORE_OK)
        return r;
    long changed = pg_changes(res);
    PQclear(res);
    return changed == 0 ? store_set_error(s, none, "%s", msg) : STORE_OK;
}

int pg_user_totp_set(struct store *s, const char *user_id, const char *expect, const char *seed,
                     int64_t enabled_at, const char *recovery_codes, int64_t last_step)
{
    PGresult *res;
    int on = seed != NULL && seed[0] != '\0';
    int r = PG_RUN(s, USER_TOTP_SET,
                   "UPDATE users SET totp_seed = NULLIF($2, ''), totp_enabled_at = NULLIF($3, 0), "
                   "totp_last_step = $5, recovery_codes = NULLIF($4, '') WHERE id = $1 AND "
                   "($6 = 0 OR (totp_enabled_at IS NULL AND ($7 = '' OR totp_seed = $7)))",
                   &res, "cannot set two-factor sign-in", "ttitiit", user_id, on ? seed : "",
                   on ? enabled_at : (int64_t)0, on && recovery_codes != NULL ? recovery_codes : "",
                   on ? last_step : (int64_t)0, (int64_t)(expect != NULL),
                   expect != NULL ? expect : "");
    return expect != NULL
               ? one_changed(s, r, res, STORE_CONFLICT, "two-factor sign-in changed meanwhile")
               : one_changed(s, r, res, STORE_NOT_FOUND, "no such user");
}

int pg_user_totp_step(struct store *s, const char *user_id, int64_t step)
{
    PGresult *res;
    int r = PG_RUN(s, USER_TOTP_STEP,
                   "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND totp_last_step < $2 "
                   "AND totp_seed IS NOT NULL",
                   &res, "cannot record a two-factor code", "ti", user_id, step);
    return one_changed(s, r, res, STORE_CONFLICT, "that code was used already");
}

int pg_user_recovery_take(struct store *s, const char *user_id, const char *expect,
                          const char *next)
{
    PGresult *res;
    int r = PG_RUN(s, USER_RECOVERY_TAKE,
                   "UPDATE users SET recovery_codes = NULLIF($3, '') WHERE id = $1 AND "
                   "coalesce(recovery_codes, '') = $2 AND totp_seed IS NOT NULL",
                   &res, "cannot use a recovery code", "ttt", user_id, expect, next);
    return one_changed(s, r, res, STORE_CONFLICT, "that recovery code was used already");
}

static void read_flag(PGresult *res, int i, void *out)
{
    *(int *)out = pg_int(res, i, 0) != 0;
}

int pg_account_two_factor(struct store *s, const char *account_id, int *required)
{
    PGresult *res;
    int r = PG_RUN(s, ACCOUNT_2FA, "SELECT require_two_factor FROM accounts WHERE id = $1", &res,
                   "cannot read the account", "t", account_id);
    return r != STORE_OK ? r : pg_one_row(s, res, read_flag, required, "no such account");
}

int pg_account_set_two_factor(struct store *s, const char *account_id, int required)
{
    PGresult *res;
    int r = PG_RUN(s, ACCOUNT_SET_2FA, "UPDATE accounts SET require_two_factor = $2 WHERE id = $1",
                   &res, "cannot change the account", "ti", account_id, (int64_t)(required != 0));
    return one_changed(s, r, res, STORE_NOT_FOUND, "no such account");
}

#define MEMBER_COLUMNS "m.account_id, m.user_id, u.email, m.role, m.created_at"

static void read_member(PGresult *res, int i, void *out)
{
    struct store_member *m = out;
    memset(m, 0, sizeof(*m));
    pg_text(m->account_id, sizeof(m->account_id), res, i, 0);
    pg_text(m->user_id, sizeof(m->user_id), res, i, 1);
    pg_text(m->email, sizeof(m->email), res, i, 2);
    pg_text(m->role, sizeof(m->role), res, i, 3);
    m->created_at = pg_int(res, i, 4);
}

int pg_member_first(struct store *s, const char *user_id, struct store_member *out)
{
    PGresult *res;
    int r = PG_RUN(s, MEMBER_FIRST,
                   "SELECT " MEMBER_COLUMNS " FROM memberships m JOIN users u ON u.id = m.user_id "
                   "WHERE m.user_id = $1 ORDER BY m.role = 'owner' DESC, m.created_at, m.ord "
                   "LIMIT 1",
                   &res, "cannot read membership", "t", user_id);
    return r != STORE_OK ? r : pg_one_row(s, res, read_member, out, "no such membership");
}

int pg_member_find(struct store *s, const char *account_id, const char *user_id,
                   struct store_member *out)
{
    PGresult *res;
    int r = PG_RUN(s, MEMBER_FIND,
                   "SELECT " MEMBER_COLUMNS " FROM memberships m JOIN users u ON u.id = m.user_id "
                   "WHERE m.account_id = $1 AND m.user_id = $2",
                   &res, "cannot read membership", "tt", account_id, user_id);
    return r != STORE_OK ? r : pg_one_row(s, res, read_member, out, "no such membership");
}

int pg_member_add(struct store *s, const struct store_member *m, const struct store_user *u)
{
    int rc;

    if ((rc = pg_begin(s)) != STORE_OK)
        return rc;
    if (u == NULL || (rc = insert_user(s, u)) == STORE_OK)
        rc = insert_member(s, m->account_id, m->user_id, m->role, m->created_at,
                           "cannot add member");
    return pg_end(s, rc);
}

/* The walks' adaptor for the callbacks that take the row only. */
struct row_walk {
    int (*cb)(void *ud, const void *row);
    void *ud;
};

static int member_one(void *ud, void *row, PGresult *res, int i)
{
    struct row_walk *w = ud;
    (void)res, (void)i;
    return w->cb(w->ud, row);
}

int pg_members_list(struct store *s, const char *account_id, store_member_cb cb, void *ud)
{
    struct row_walk w = {.cb = (int (*)(void *, const void *))cb, .ud = ud};
    struct store_member m;
    PGresult *res;
    int r = PG_RUN(s, MEMBERS_LIST,
                   "SELECT " MEMBER_COLUMNS " FROM memberships m JOIN users u ON u.id = m.user_id "
                   "WHERE m.account_id = $1 ORDER BY m.created_at, m.ord",
                   &res, "cannot list members", "t", account_id);
    return r != STORE_OK ? r : pg_each_row(res, read_member, &m, member_one, &w);
}

int pg_session_insert(struct store *s, const struct store_session *x)
{
    return PG_RUN(s, SESSION_INSERT,
                  "INSERT INTO sessions(token_hash, user_id, account_id, csrf_token, created_at, "
                  "last_seen_at, expires_at, ip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                  NULL, "cannot create session", "htttiiit", x->token_hash, x->user_id,
                  x->account_id, x->csrf_token, x->created_at, x->last_seen_at, x->expires_at,
                  x->ip);
}

static void read_session(PGresult *res, int i, void *row)
{
    struct store_session *out = row;

    memset(out, 0, sizeof(*out));
    pg_text(out->user_id, sizeof(out->user_id), res, i, 0);
    pg_text(out->account_id, sizeof(out->account_id), res, i, 1);
    pg_text(out->csrf_token, sizeof(out->csrf_token), res, i, 2);
    out->created_at = pg_int(res, i, 3);
    out->last_seen_at = pg_int(res, i, 4);
    out->expires_at = pg_int(res, i, 5);
    pg_text(out->ip, sizeof(out->ip), res, i, 6);
}

int pg_session_find(struct store *s, const uint8_t *hash, struct store_session *out)
{
    PGresult *res;
    int r = PG_RUN(s, SESSION_FIND,
                   "SELECT user_id, account_id, csrf_token, created_at, last_seen_at, expires_at, "
                   "coalesce(ip, '') FROM sessions WHERE token_hash = $1",
                   &res, "cannot read session", "h", hash);
    if (r == STORE_OK && (r = pg_one_row(s, res, read_session, out, "no such session")) == STORE_OK)
        memcpy(out->token_hash, hash, STORE_HASH_LEN);
    return r;
}

int pg_session_touch(struct store *s, const uint8_t *hash, int64_t at)
{
    return PG_RUN(s, SESSION_TOUCH, "UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1",
                  NULL, "cannot update session", "hi", hash, at);
}

int pg_session_delete(struct store *s, const uint8_t *hash)
{
    return PG_RUN(s, SESSION_DELETE, "DELETE FROM sessions WHERE token_hash = $1", NULL,
                  "cannot end session", "h", hash);
}

int pg_sessions_delete_user(struct store *s, const char *user_id)
{
    return PG_RUN(s, SESSIONS_DELETE_USER, "DELETE FROM sessions WHERE user_id = $1", NULL,
                  "cannot end sessions", "t", user_id);
}

int pg_invite_insert(struct store *s, const struct store_invite *i)
{
    return PG_RUN(s, INVITE_INSERT,
                  "INSERT INTO invites(token_hash, id, account_id, email, invited_by, created_at, "
                  "expires_at) VALUES ($1, $2, $3, lower($4 COLLATE \"C\"), $5, $6, $7)",
                  NULL, "cannot create invitation",
                  "htttt"
                  "ii",
                  i->token_hash, i->id, i->account_id, i->email, i->invited_by, i->created_at,
                  i->expires_at);
}

static void read_invite(PGresult *res, int row, void *out)
{
    struct store_invite *i = out;
    memset(i, 0, sizeof(*i));
    pg_hash(i->token_hash, res, row, 0);
    pg_text(i->account_id, sizeof(i->account_id), res, row, 1);
    pg_text(i->email, sizeof(i->email), res, row, 2);
    pg_text(i->invited_by, sizeof(i->invited_by), res, row, 3);
    i->created_at = pg_int(res, row, 4);
    i->expires_at = pg_int(res, row, 5);
    i->accepted_at = pg_int(res, row, 6);
    pg_text(i->id, sizeof(i->id), res, row, 7);
    i->canceled_at = pg_int(res, row, 8);
    i->failures = (int)pg_int(res, row, 9);
}

#define INVITE_COLUMNS                                                                             \
    "token_hash, account_id, email, invited_by, created_at, expires_at, "                          \
    "coalesce(accepted_at, 0), coalesce(id, ''), coalesce(canceled_at, 0), failures"
#define INVITE_PENDING "accepted_at IS NULL AND canceled_at IS NULL AND expires_at > $2"

int pg_invite_find(struct store *s, const uint8_t *hash, struct store_invite *out)
{
    PGresult *res;
    int r = PG_RUN(s, INVITE_FIND, "SELECT " INVITE_COLUMNS " FROM invites WHERE token_hash = $1",
                   &res, "cannot read invitation", "h", hash);
    return r != STORE_OK ? r : pg_one_row(s, res, read_invite, out, "no such invitation");
}

/* Cancels an account's pending invitations for an email: the person joined, or was removed,
 * and no invitation made before may bring them (back) in. */
static int cancel_invites_for(struct store *s, const char *account_id, const char *email,
                              int64_t at)
{
    return PG_RUN(s, INVITES_CANCEL_EMAIL,
                  "UPDATE invites SET canceled_at = $3 WHERE account_id = $1 AND email = $2 AND "
                  "accepted_at IS NULL AND canceled_at IS NULL",
                  NULL, "cannot cancel invitations", "tti", account_id, email, at);
}

int pg_invite_accept(struct store *s, const uint8_t *hash, int64_t at)
{
    char account_id[STORE_ID_SIZE] = "", email[STORE_EMAIL_MAX + 1] = "";
    PGresult *res;
    int rc;

    if ((rc = pg_begin(s)) != STORE_OK)
        return rc;
    rc = PG_RUN(s, INVITE_ACCEPT,
                "UPDATE invites SET accepted_at = $2 WHERE token_hash = $1 AND accepted_at IS NULL "
                "AND canceled_at IS NULL RETURNING account_id, email",
                &res, "cannot accept invitation", "hi", hash, at);
    if (rc != STORE_OK)
        goto rollback;
    if (PQntuples(res) == 1) {
        pg_text(account_id, sizeof(account_id), res, 0, 0);
        pg_text(email, sizeof(email), res, 0, 1);
    }
    PQclear(res);
    if (account_id[0] == '\0') {
        rc = store_set_error(s, STORE_CONFLICT, "invitation already used or cancelled");
        goto rollback;
    }
    rc = cancel_invites_for(s, account_id, email, at);
rollback:
    return pg_end(s, rc);
}

static int invite_one(void *ud, void *row, PGresult *res, int i)
{
    return member_one(ud, row, res, i);
}

int pg_invites_list(struct store *s, const char *account_id, int64_t now, store_invite_cb cb,
                    void *ud)
{
    struct row_walk w = {.cb = (int (*)(void *, const void *))cb, .ud = ud};
    struct store_invite i;
    PGresult *res;
    int r = PG_RUN(s, INVITES_LIST,
                   "SELECT " INVITE_COLUMNS
                   " FROM invites WHERE account_id = $1 AND " INVITE_PENDING " ORDER BY created_at",
                   &res, "cannot list invitations", "ti", account_id, now);
    return r != STORE_OK ? r : pg_each_row(res, read_invite, &i, invite_one, &w);
}

int pg_invite_fail(struct store *s, const uint8_t *hash, int max, int64_t at, int *failures)
{
    PGresult *res;
    int r = PG_RUN(s, INVITE_FAIL,
                   "UPDATE invites SET failures = failures + 1, canceled_at = CASE WHEN "
                   "canceled_at IS NULL AND failures + 1 >= $2 THEN $3 ELSE canceled_at END "
                   "WHERE token_hash = $1 RETURNING failures",
                   &res, "cannot count a failed invitation", "hii", hash, (int64_t)max, at);
    if (r != STORE_OK)
        return r;
    int found = PQntuples(res) == 1;
    if (found)
        *failures = (int)pg_int(res, 0, 0);
    PQclear(res);
    return found ? STORE_OK : store_set_error(s, STORE_NOT_FOUND, "no such invitation");
}

int pg_invite_cancel(struct store *s, const char *account_id, const char *id, int64_t at,
                     struct store_invite *out)
{
    PGresult *res;
    int r = PG_RUN(s, INVITE_CANCEL,
                   "UPDATE invites SET canceled_at = $2 WHERE account_id = $3 AND id = $1 AND "
                   "accepted_at IS NULL AND canceled_at IS NULL AND expires_at > $2 "
                   "RETURNING " INVITE_COLUMNS,
                   &res, "cannot cancel invitation", "tit", id, at, account_id);
    return r != STORE_OK ? r : pg_one_row(s, res, read_invite, out, "no such pending invitation");
}

int pg_invites_pending(struct store *s, const char *account_id, int64_t now, int64_t *count)
{
    PGresult *res;
    int r = PG_RUN(s, INVITES_PENDING,
                   "SELECT count(*) FROM invites WHERE account_id = $1 AND " INVITE_PENDING, &res,
                   "cannot count invitations", "ti", account_id, now);
    return r != STORE_OK ? r : pg_one_row(s, res, pg_read_count, count, "no count");
}

/* A new link replaces the user's earlier ones that were not used. */
int pg_password_token_insert(struct store *s, const struct store_password_token *t)
{
    int rc;

    if ((rc = pg_begin(s)) != STORE_OK)
        return rc;
    if ((rc = void_password_tokens(s, t->user_id)) == STORE_OK)
        rc = PG_RUN(s, PWTOKEN_INSERT,
                    "INSERT INTO password_tokens(token_hash, user_id, created_at, expires_at) "
                    "VALUES ($1, $2, $3, $4)",
                    NULL, "cannot create a set-password link", "htii", t->token_hash, t->user_id,
                    t->created_at, t->expires_at);
    return pg_end(s, rc);
}

static void read_password_token(PGresult *res, int i, void *row)
{
    struct store_password_token *out = row;

    memset(out, 0, sizeof(*out));
    pg_text(out->user_id, sizeof(out->user_id), res, i, 0);
    out->created_at = pg_int(res, i, 1);
    out->expires_at = pg_int(res, i, 2);
    out->used_at = pg_int(res, i, 3);
}

int pg_password_token_find(struct store *s, const uint8_t *hash, struct store_password_token *out)
{
    PGresult *res;
    int r = PG_RUN(s, PWTOKEN_FIND,
                   "SELECT user_id, created_at, expires_at, coalesce(used_at, 0) FROM "
                   "password_tokens WHERE token_hash = $1",
                   &res, "cannot read a set-password link", "h", hash);
    if (r == STORE_OK &&
        (r = pg_one_row(s, res, read_password_token, out, "no such link")) == STORE_OK)
        memcpy(out->token_hash, hash, STORE_HASH_LEN);
    return r;
}

int pg_password_token_use(struct store *s, const uint8_t *hash, const char *password_hash,
                          int64_t at)
{
    char user_id[STORE_ID_SIZE] = "";
    PGresult *res;
    int rc;

    if ((rc = pg_begin(s)) != STORE_OK)
        return rc;
    rc = PG_RUN(s, PWTOKEN_USE,
                "UPDATE password_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL "
                "AND expires_at > $2 RETURNING user_id",
                &res, "cannot use a set-password link", "hi", hash, at);
    if (rc != STORE_OK)
        goto rollback;
    if (PQntuples(res) == 1)
        pg_text(user_id, sizeof(user_id), res, 0, 0);
    PQclear(res);
    if (user_id[0] == '\0') {
        rc = store_set_error(s, STORE_CONFLICT, "the link was used already or has expired");
        goto rollback;
    }
    if ((rc = set_password(s, user_id, password_hash)) == STORE_OK)
        rc = pg_sessions_delete_user(s, user_id);
rollback:
    return pg_end(s, rc);
}

int pg_member_remove(struct store *s, const char *account_id, const char *user_id, int64_t at)
{
    struct store_user u;
    PGresult *res;
    int rc;

    if ((rc = pg_begin(s)) != STORE_OK)
        return rc;
    if ((rc = pg_user_find(s, user_id, &u)) != STORE_OK ||
        (rc = cancel_invites_for(s, account_id, u.email, at)) != STORE_OK)
        goto rollback;
    rc = PG_RUN(s, MEMBER_REMOVE, "DELETE FROM memberships WHERE account_id = $1 AND user_id = $2",
                &res, "cannot remove member", "tt", account_id, user_id);
    if (rc != STORE_OK)
        goto rollback;
    long removed = pg_changes(res);
    PQclear(res);
    if (removed == 0) {
        rc = store_set_error(s, STORE_NOT_FOUND, "no such member");
        goto rollback;
    }
    rc = PG_RUN(s, SESSIONS_DELETE_MEMBER,
                "DELETE FROM sessions WHERE account_id = $1 AND user_id = $2", NULL,
                "cannot end sessions", "tt", account_id, user_id);
rollback:
    return pg_end(s, rc);
}

int pg_sessions_delete_others(struct store *s, const char *user_id, const uint8_t *keep)
{
    return PG_RUN(s, SESSIONS_DELETE_OTHERS,
                  "DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2", NULL,
                  "cannot end sessions", "th", user_id, keep);
}

int pg_key_count_working(struct store *s, const char *account_id, int64_t now, int64_t *count)
{
    PGresult *res;
    int r = PG_RUN(s, KEY_COUNT_WORKING,
                   "SELECT count(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL AND "
                   "(expires_at IS NULL OR expires_at > $2)",
                   &res, "cannot count keys", "ti", account_id, now);
    return r != STORE_OK ? r : pg_one_row(s, res, pg_read_count, count, "no count");
}

static void read_throttle(PGresult *res, int i, void *out)
{
    struct store_throttle *t = out;
    t->count = pg_int(res, i, 0);
    t->first_at = pg_int(res, i, 1);
    t->last_at = pg_int(res, i, 2);
    t->refused = pg_int(res, i, 3);
}

int pg_throttle_get(struct store *s, const char *kind, const char *key, struct store_throttle *out)
{
    PGresult *res;
    int r = PG_RUN(s, THROTTLE_GET,
                   "SELECT count, first_at, last_at, refused FROM throttles WHERE kind = $1 AND "
                   "key = $2",
                   &res, "cannot read a throttle", "tt", kind, key);
    return r != STORE_OK ? r : pg_one_row(s, res, read_throttle, out, "no throttle");
}

int pg_throttle_hit(struct store *s, const char *kind, const char *key, int64_t now, int64_t window,
                    struct store_throttle *out)
{
    PGresult *res;
    int r = PG_RUN(s, THROTTLE_HIT,
                   "INSERT INTO throttles AS t(kind, key, count, first_at, last_at) "
                   "VALUES ($1, $2, 1, $3::bigint, $3::bigint) ON CONFLICT (kind, key) DO UPDATE "
                   "SET count = CASE WHEN t.last_at <= $3::bigint - $4::bigint THEN 1 "
                   "ELSE t.count + 1 END, "
                   "first_at = CASE WHEN t.last_at <= $3::bigint - $4::bigint THEN $3::bigint "
                   "ELSE t.first_at END, "
                   "refused = 0, last_at = $3::bigint RETURNING count, first_at, last_at, refused",
                   &res, "cannot count an attempt", "ttii", kind, key, now, window);
    return r != STORE_OK ? r : pg_one_row(s, res, read_throttle, out, "no throttle");
}

int pg_throttle_refuse(struct store *s, const char *kind, const char *key, int64_t *refused)
{
    PGresult *res;
    int r = PG_RUN(s, THROTTLE_REFUSE,
                   "UPDATE throttles SET refused = refused + 1 WHERE kind = $1 AND key = $2 "
                   "RETURNING refused - 1",
                   &res, "cannot count a refused attempt", "tt", kind, key);
    if (r != STORE_OK)
        return r;
    *refused = PQntuples(res) == 1 ? pg_int(res, 0, 0) : 0;
    PQclear(res);
    return STORE_OK;
}

int pg_throttle_clear(struct store *s, const char *kind, const char *key)
{
    return PG_RUN(s, THROTTLE_CLEAR, "DELETE FROM throttles WHERE kind = $1 AND key = $2", NULL,
                  "cannot clear a throttle", "tt", kind, key);
}

/* ---- operator keys (see the SQLite backend) ---------------------------------------------- */

#define OPKEY_COLUMNS                                                                              \
    "id, name, hash, hint, created_at, created_by, coalesce(last_used_at, 0), "                    \
    "coalesce(revoked_at, 0)"

static void read_operator_key(PGresult *res, int i, void *out)
{
    struct store_key *k = out;

    memset(k, 0, sizeof(*k));
    pg_text(k->id, sizeof(k->id), res, i, 0);
    pg_text(k->name, sizeof(k->name), res, i, 1);
    pg_hash(k->hash, res, i, 2);
    pg_text(k->hint, sizeof(k->hint), res, i, 3);
    k->created_at = pg_int(res, i, 4);
    pg_text(k->created_by, sizeof(k->created_by), res, i, 5);
    k->last_used_at = pg_int(res, i, 6);
    k->revoked_at = pg_int(res, i, 7);
    kn_strlcpy(k->mode, "operator", sizeof(k->mode));
}

int pg_operator_key_insert(struct store *s, const struct store_key *k,
                           const struct store_audit *audit)
{
    int r = pg_begin(s);

    if (r != STORE_OK)
        return r;
    r = PG_RUN(s, OPKEY_INSERT,
               "INSERT INTO operator_keys(id, name, hash, hint, created_at, created_by) "
               "VALUES ($1, $2, $3, $4, $5, $6)",
               NULL, "cannot create an operator key", "tthtit", k->id, k->name, k->hash, k->hint,
               k->created_at, k->created_by);
    if (r == STORE_OK)
        r = pg_audit_row(s, audit);
    return pg_end(s, r);
}

int pg_operator_key_find(struct store *s, const char *id, const uint8_t *hash,
                         struct store_key *out)
{
    PGresult *res;
    int r = id != NULL ? PG_RUN(s, OPKEY_FIND_ID,
                                "SELECT " OPKEY_COLUMNS " FROM operator_keys WHERE id = $1", &res,
                                "cannot read an operator key", "t", id)
                       : PG_RUN(s, OPKEY_FIND_HASH,
                                "SELECT " OPKEY_COLUMNS " FROM operator_keys WHERE hash = $1", &res,
                                "cannot read an operator key", "h", hash);
    return r != STORE_OK ? r : pg_one_row(s, res, read_operator_key, out, "no such operator key");
}

static int operator_key_one(void *ud, void *row, PGresult *res, int i)
{
    struct pg_walk *w = ud;
    (void)res, (void)i;
    return w->key_list(w->ud, row, 0);
}

int pg_operator_keys_list(struct store *s, store_key_list_cb cb, void *ud)
{
    struct pg_walk w = {.key_list = cb, .ud = ud};
    struct store_key k;
    PGresult *res;
    int r =
        PG_RUN(s, OPKEY_LIST, "SELECT " OPKEY_COLUMNS " FROM operator_keys ORDER BY created_at, id",
               &res, "cannot list operator keys", "");
    return r != STORE_OK ? r : pg_each_row(res, read_operator_key, &k, operator_key_one, &w);
}

int pg_operator_key_revoke(struct store *s, const char *id, int64_t at, const char *actor,
                           const struct store_audit *audit)
{
    PGresult *res;
    int r = pg_begin(s);

    if (r != STORE_OK)
        return r;
    r = PG_RUN(s, OPKEY_REVOKE,
               "UPDATE operator_keys SET revoked_by = coalesce(revoked_by, $3), "
               "revoked_at = coalesce(revoked_at, $2) WHERE id = $1",
               &res, "cannot revoke an operator key", "tit", id, at, actor);
    if (r == STORE_OK) {
        long n = pg_changes(res);
        PQclear(res);
        if (n == 0)
            r = store_set_error(s, STORE_NOT_FOUND, "no such operator key");
    }
    if (r == STORE_OK)
        r = pg_audit_row(s, audit);
    return pg_end(s, r);
}

int pg_operator_key_touch(struct store *s, const char *id, int64_t at)
{
    return PG_RUN(s, OPKEY_TOUCH, "UPDATE operator_keys SET last_used_at = $2 WHERE id = $1", NULL,
                  "cannot record an operator key's use", "ti", id, at);
}

/* ---- idempotency keys ---------------------------------------------------------------------- */

/* See the SQLite backend. Two servers claiming the same key at once: one inserts, the other's
 * ON CONFLICT waits for it and then finds the row taken. */
int pg_idem_begin(struct store *s, const char *scope, const char *key, const uint8_t *hash,
                  int64_t now, int64_t stale_before, struct store_idem *out)
{
    PGresult *res;
    int r = PG_RUN(s, IDEM_BEGIN,
                   "INSERT INTO idempotency_keys(scope, key, request_hash, created_at, status, "
                   "body) VALUES ($1, $2, $3, $4, 0, NULL) ON CONFLICT (scope, key) DO UPDATE SET "
                   "request_hash = excluded.request_hash, created_at = excluded.created_at, "
                   "status = 0, body = NULL WHERE idempotency_keys.created_at <= $4::bigint - "
                   "$5::bigint OR (idempotency_keys.status = 0 AND idempotency_keys.created_at < "
                   "$6::bigint)",
                   &res, "cannot claim an idempotency key", "tthiii", scope, key, hash, now,
                   (int64_t)STORE_IDEM_TTL, stale_before);

    memset(out, 0, sizeof(*out));
    if (r != STORE_OK)
        return r;
    long n = pg_changes(res);
    PQclear(res);
    if (n == 1)
        return STORE_OK;
    r = PG_RUN(s, IDEM_READ,
               "SELECT request_hash, created_at, status, body FROM idempotency_keys WHERE "
               "scope = $1 AND key = $2",
               &res, "cannot read an idempotency key", "tt", scope, key);
    if (r != STORE_OK)
        return r;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return store_set_error(s, STORE_RETRY, "the idempotency key went away");
    }
    pg_hash(out->request_hash, res, 0, 0);
    out->created_at = pg_int(res, 0, 1);
    out->status = (int)pg_int(res, 0, 2);
    if (!PQgetisnull(res, 0, 3))
        out->body = kn_strdup(PQgetvalue(res, 0, 3));
    PQclear(res);
    return store_set_error(s, STORE_CONFLICT, "the idempotency key is taken");
}

int pg_idem_finish(struct store *s, const char *scope, const char *key, int status,
                   const char *body)
{
    return PG_RUN(s, IDEM_FINISH,
                  "UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND "
                  "key = $2 AND status = 0",
                  NULL, "cannot keep an idempotent answer", "ttit", scope, key, (int64_t)status,
                  body);
}

int pg_idem_release(struct store *s, const char *scope, const char *key)
{
    return PG_RUN(s, IDEM_RELEASE,
                  "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status = 0", NULL,
                  "cannot release an idempotency key", "tt", scope, key);
}

/* Deletes at most PRUNE_BATCH rows per statement, each its own short transaction, so that a
 * prune never holds locks long. */
#define PRUNE_BATCH 500

int pg_prune(struct store *s, const struct store_retention *r, int64_t now, int64_t *deleted)
{
    static const char *const sql[] = {
        "DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM sessions WHERE "
        "expires_at <= $1::bigint OR last_seen_at <= $1::bigint - $7::bigint LIMIT 500)",
        "DELETE FROM throttles WHERE (kind, key) IN (SELECT kind, key FROM throttles WHERE "
        "last_at <= $2::bigint LIMIT 500)",
        "DELETE FROM invites WHERE token_hash IN (SELECT token_hash FROM invites WHERE "
        "coalesce(accepted_at, canceled_at, expires_at) <= $3::bigint AND (accepted_at IS NOT "
        "NULL OR canceled_at IS NOT NULL OR expires_at <= $1::bigint) LIMIT 500)",
        "DELETE FROM password_tokens WHERE token_hash IN (SELECT token_hash FROM password_tokens "
        "WHERE coalesce(used_at, expires_at) <= $3::bigint LIMIT 500)",
        /* The change logs lose only a prefix, in sequence order, up to the first change still
         * young enough or the newest (a server's cursor): a change's time is when its
         * transaction began, not its place in commit order, and a hole in the middle would hide
         * from the oldest-change test that tells a reader it fell behind. */
        "DELETE FROM key_changes WHERE seq IN (SELECT seq FROM key_changes WHERE seq < (SELECT "
        "min(seq) FROM key_changes WHERE at > $4::bigint OR seq = (SELECT max(seq) FROM "
        "key_changes)) ORDER BY seq LIMIT 500)",
        "DELETE FROM account_changes WHERE seq IN (SELECT seq FROM account_changes WHERE seq < "
        "(SELECT min(seq) FROM account_changes WHERE at > $4::bigint OR seq = (SELECT max(seq) "
        "FROM account_changes)) ORDER BY seq LIMIT 500)",
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE $5::bigint > 0 AND "
        "at <= $6::bigint ORDER BY id LIMIT 500)",
        /* Servers not seen for a day (see the SQLite backend). */
        "DELETE FROM nodes WHERE id IN (SELECT id FROM nodes WHERE seen_ms < ($1::bigint - 86400) "
        "* 1000 LIMIT 500)",
        "DELETE FROM idempotency_keys WHERE (scope, key) IN (SELECT scope, key FROM "
        "idempotency_keys WHERE created_at <= $1::bigint - 86400 LIMIT 500)",
    };
    int64_t total = 0;
    _Static_assert(sizeof(sql) / sizeof(sql[0]) == PS_PRUNE_LAST - PS_PRUNE_FIRST + 1,
                   "one prepared statement per prune statement");

    for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
        for (;;) {
            PGresult *res;
            int rc = pg_run(s, PS_PRUNE_FIRST + (int)i, sql[i], &res, "cannot prune", "iiiiiii",
                            now, now - r->throttle_s, now - r->done_days * 86400,
                            now - r->change_log_days * 86400, r->audit_days,
                            now - r->audit_days * 86400, r->session_idle_s);
            if (rc != STORE_OK)
                return rc;
            long n = pg_changes(res);
            PQclear(res);
            total += n;
            if (n < PRUNE_BATCH)
                break;
        }
    }
    *deleted = total;
    return STORE_OK;
}
