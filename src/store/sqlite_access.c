/* The SQLite backend's dashboard access: users, memberships, sessions, invitations, set-password
 * links, throttles and pruning (see sqlite_internal.h). */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/sqlite_internal.h"

/* ---- dashboard: users, memberships, sessions, invitations, sign-in failures ---------------- */

static int insert_user(struct store *s, const struct store_user *u)
{
    int rc = RUN(s, USER_INSERT,
                 "INSERT INTO users(id, email, password_hash, created_at) "
                 "VALUES (?1, lower(?2), nullif(?3, ''), ?4)",
                 "ttti", u->id, u->email, u->password_hash, u->created_at);
    return sq_done(s, STMT(s, USER_INSERT), rc, "cannot create user");
}

int sqlite_account_insert_owned(struct store *s, const struct store_account *a,
                                const struct store_user *u, int existing)
{
    struct store_user found;
    int rc;

    if ((rc = sq_begin(s)) != STORE_OK)
        return rc;
    if ((rc = sqlite_account_insert(s, a)) != STORE_OK)
        goto rollback;
    rc = sqlite_user_find(s, u->email, &found);
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
    rc = RUN(
        s, MEMBER_INSERT,
        "INSERT INTO memberships(account_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)",
        "ttti", a->id, u->id, "owner", a->created_at);
    rc = sq_done(s, STMT(s, MEMBER_INSERT), rc, "cannot add the owner");
rollback:
    return sq_end(s, rc);
}

static void read_user(sqlite3_stmt *q, void *out)
{
    struct store_user *u = out;
    memset(u, 0, sizeof(*u));
    sq_copy_text(u->id, sizeof(u->id), q, 0);
    sq_copy_text(u->email, sizeof(u->email), q, 1);
    sq_copy_text(u->password_hash, sizeof(u->password_hash), q, 2);
    u->created_at = sqlite3_column_int64(q, 3);
    sq_copy_text(u->totp_seed, sizeof(u->totp_seed), q, 4);
    u->totp_enabled_at = sqlite3_column_int64(q, 5);
    u->totp_last_step = sqlite3_column_int64(q, 6);
    sq_copy_text(u->recovery_codes, sizeof(u->recovery_codes), q, 7);
}

int sqlite_user_find(struct store *s, const char *email_or_id, struct store_user *out)
{
    int rc = RUN(s, USER_FIND,
                 "SELECT id, email, coalesce(password_hash, ''), created_at, "
                 "coalesce(totp_seed, ''), coalesce(totp_enabled_at, 0), totp_last_step, "
                 "coalesce(recovery_codes, '') FROM users WHERE email = lower(?1) OR id = ?1",
                 "t", email_or_id);
    return sq_one_row(s, STMT(s, USER_FIND), rc, read_user, out, "no such user",
                      "cannot read user");
}

/* Forgets a user's set-password links that were not used: a new password, or a newer link,
 * makes them worthless, and one left in a shell history or a chat must not open the user. */
static int void_password_tokens(struct store *s, const char *user_id)
{
    int rc =
        RUN(s, PWTOKENS_VOID, "DELETE FROM password_tokens WHERE user_id = ?1 AND used_at IS NULL",
            "t", user_id);
    return sq_done(s, STMT(s, PWTOKENS_VOID), rc, "cannot void set-password links");
}

/* Inside a transaction. */
static int set_password(struct store *s, const char *user_id, const char *hash)
{
    int rc = RUN(s, USER_PASSWORD, "UPDATE users SET password_hash = ?2 WHERE id = ?1", "tt",
                 user_id, hash);
    if ((rc = sq_done(s, STMT(s, USER_PASSWORD), rc, "cannot set password")) != STORE_OK)
        return rc;
    if (sqlite3_changes(sq_db_of(s)) == 0)
        return store_set_error(s, STORE_NOT_FOUND, "no such user");
    return void_password_tokens(s, user_id);
}

int sqlite_user_set_password(struct store *s, const char *user_id, const char *hash)
{
    int rc;

    if ((rc = sq_begin(s)) != STORE_OK)
        return rc;
    return sq_end(s, set_password(s, user_id, hash));
}

int sqlite_user_totp_set(struct store *s, const char *user_id, const char *expect, const char *seed,
                         int64_t enabled_at, const char *recovery_codes, int64_t last_step)
{
    int on = seed != NULL && seed[0] != '\0';
    int rc = RUN(s, USER_TOTP_SET,
                 "UPDATE users SET totp_seed = NULLIF(?2, ''), totp_enabled_at = NULLIF(?3, 0), "
                 "totp_last_step = ?5, recovery_codes = NULLIF(?4, '') WHERE id = ?1 AND "
                 "(?6 = 0 OR (totp_enabled_at IS NULL AND (?7 = '' OR totp_seed = ?7)))",
                 "ttitiit", user_id, on ? seed : "", on ? enabled_at : (int64_t)0,
                 on && recovery_codes != NULL ? recovery_codes : "", on ? last_step : (int64_t)0,
                 (int64_t)(expect != NULL), expect != NULL ? expect : "");
    if ((rc = sq_done(s, STMT(s, USER_TOTP_SET), rc, "cannot set two-factor sign-in")) != STORE_OK)
        return rc;
    if (sqlite3_changes(sq_db_of(s)) != 0)
        return STORE_OK;
    return expect != NULL
               ? store_set_error(s, STORE_CONFLICT, "two-factor sign-in changed meanwhile")
               : store_set_error(s, STORE_NOT_FOUND, "no such user");
}

int sqlite_user_totp_step(struct store *s, const char *user_id, int64_t step)
{
    int rc = RUN(s, USER_TOTP_STEP,
                 "UPDATE users SET totp_last_step = ?2 WHERE id = ?1 AND totp_last_step < ?2 "
                 "AND totp_seed IS NOT NULL",
                 "ti", user_id, step);
    if ((rc = sq_done(s, STMT(s, USER_TOTP_STEP), rc, "cannot record a two-factor code")) !=
        STORE_OK)
        return rc;
    return sqlite3_changes(sq_db_of(s)) == 0
               ? store_set_error(s, STORE_CONFLICT, "that code was used already")
               : STORE_OK;
}

int sqlite_user_recovery_take(struct store *s, const char *user_id, const char *expect,
                              const char *next)
{
    int rc = RUN(s, USER_RECOVERY_TAKE,
                 "UPDATE users SET recovery_codes = NULLIF(?3, '') WHERE id = ?1 AND "
                 "coalesce(recovery_codes, '') = ?2 AND totp_seed IS NOT NULL",
                 "ttt", user_id, expect, next);
    if ((rc = sq_done(s, STMT(s, USER_RECOVERY_TAKE), rc, "cannot use a recovery code")) !=
        STORE_OK)
        return rc;
    return sqlite3_changes(sq_db_of(s)) == 0
               ? store_set_error(s, STORE_CONFLICT, "that recovery code was used already")
               : STORE_OK;
}

static void read_flag(sqlite3_stmt *q, void *out)
{
    *(int *)out = sqlite3_column_int64(q, 0) != 0;
}

int sqlite_account_two_factor(struct store *s, const char *account_id, int *required)
{
    int rc = RUN(s, ACCOUNT_2FA, "SELECT require_two_factor FROM accounts WHERE id = ?1", "t",
                 account_id);
    return sq_one_row(s, STMT(s, ACCOUNT_2FA), rc, read_flag, required, "no such account",
                      "cannot read the account");
}

int sqlite_account_set_two_factor(struct store *s, const char *account_id, int required)
{
    int rc = RUN(s, ACCOUNT_SET_2FA, "UPDATE accounts SET require_two_factor = ?2 WHERE id = ?1",
                 "ti", account_id, (int64_t)(required != 0));
    if ((rc = sq_done(s, STMT(s, ACCOUNT_SET_2FA), rc, "cannot change the account")) != STORE_OK)
        return rc;
    return sqlite3_changes(sq_db_of(s)) == 0
               ? store_set_error(s, STORE_NOT_FOUND, "no such account")
               : STORE_OK;
}

#define MEMBER_COLUMNS "m.account_id, m.user_id, u.email, m.role, m.created_at"

static void read_member(sqlite3_stmt *q, void *out)
{
    struct store_member *m = out;
    memset(m, 0, sizeof(*m));
    sq_copy_text(m->account_id, sizeof(m->account_id), q, 0);
    sq_copy_text(m->user_id, sizeof(m->user_id), q, 1);
    sq_copy_text(m->email, sizeof(m->email), q, 2);
    sq_copy_text(m->role, sizeof(m->role), q, 3);
    m->created_at = sqlite3_column_int64(q, 4);
}

static int one_member(struct store *s, sqlite3_stmt *q, int rc, struct store_member *out)
{
    return sq_one_row(s, q, rc, read_member, out, "no such membership", "cannot read membership");
}

int sqlite_member_first(struct store *s, const char *user_id, struct store_member *out)
{
    int rc = RUN(s, MEMBER_FIRST,
                 "SELECT " MEMBER_COLUMNS " FROM memberships m JOIN users u ON u.id = m.user_id "
                 "WHERE m.user_id = ?1 ORDER BY m.role = 'owner' DESC, m.created_at LIMIT 1",
                 "t", user_id);
    return one_member(s, STMT(s, MEMBER_FIRST), rc, out);
}

int sqlite_member_find(struct store *s, const char *account_id, const char *user_id,
                       struct store_member *out)
{
    int rc = RUN(s, MEMBER_FIND,
                 "SELECT " MEMBER_COLUMNS " FROM memberships m JOIN users u ON u.id = m.user_id "
                 "WHERE m.account_id = ?1 AND m.user_id = ?2",
                 "tt", account_id, user_id);
    return one_member(s, STMT(s, MEMBER_FIND), rc, out);
}

int sqlite_member_add(struct store *s, const struct store_member *m, const struct store_user *u)
{
    int rc;

    if ((rc = sq_begin(s)) != STORE_OK)
        return rc;
    if (u != NULL && (rc = insert_user(s, u)) != STORE_OK)
        goto rollback;
    rc = RUN(
        s, MEMBER_INSERT,
        "INSERT INTO memberships(account_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)",
        "ttti", m->account_id, m->user_id, m->role, m->created_at);
    rc = sq_done(s, STMT(s, MEMBER_INSERT), rc, "cannot add member");
rollback:
    return sq_end(s, rc);
}

int sqlite_members_list(struct store *s, const char *account_id, store_member_cb cb, void *ud)
{
    struct store_member m;
    sqlite3_stmt *q;
    int rc = RUN(s, MEMBERS_LIST,
                 "SELECT " MEMBER_COLUMNS " FROM memberships m JOIN users u ON u.id = m.user_id "
                 "WHERE m.account_id = ?1 ORDER BY m.created_at, m.rowid",
                 "t", account_id);
    q = STMT(s, MEMBERS_LIST);
    for (; rc == SQLITE_ROW; rc = sqlite3_step(q)) {
        read_member(q, &m);
        if (cb(ud, &m) != 0)
            break;
    }
    return sq_done(s, q, rc, "cannot list members");
}

int sqlite_session_insert(struct store *s, const struct store_session *x)
{
    int rc = RUN(s, SESSION_INSERT,
                 "INSERT INTO sessions(token_hash, user_id, account_id, csrf_token, created_at, "
                 "last_seen_at, expires_at, ip) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                 "htttiiit", x->token_hash, x->user_id, x->account_id, x->csrf_token, x->created_at,
                 x->last_seen_at, x->expires_at, x->ip);
    return sq_done(s, STMT(s, SESSION_INSERT), rc, "cannot create session");
}

static void read_session(sqlite3_stmt *q, void *row)
{
    struct store_session *out = row;

    memset(out, 0, sizeof(*out));
    sq_copy_text(out->user_id, sizeof(out->user_id), q, 0);
    sq_copy_text(out->account_id, sizeof(out->account_id), q, 1);
    sq_copy_text(out->csrf_token, sizeof(out->csrf_token), q, 2);
    out->created_at = sqlite3_column_int64(q, 3);
    out->last_seen_at = sqlite3_column_int64(q, 4);
    out->expires_at = sqlite3_column_int64(q, 5);
    sq_copy_text(out->ip, sizeof(out->ip), q, 6);
}

int sqlite_session_find(struct store *s, const uint8_t *hash, struct store_session *out)
{
    int rc = RUN(s, SESSION_FIND,
                 "SELECT user_id, account_id, csrf_token, created_at, last_seen_at, expires_at, "
                 "coalesce(ip, '') FROM sessions WHERE token_hash = ?1",
                 "h", hash);
    if ((rc = sq_one_row(s, STMT(s, SESSION_FIND), rc, read_session, out, "no such session",
                         "cannot read session")) == STORE_OK)
        memcpy(out->token_hash, hash, STORE_HASH_LEN);
    return rc;
}

int sqlite_session_touch(struct store *s, const uint8_t *hash, int64_t at)
{
    int rc = RUN(s, SESSION_TOUCH, "UPDATE sessions SET last_seen_at = ?2 WHERE token_hash = ?1",
                 "hi", hash, at);
    return sq_done(s, STMT(s, SESSION_TOUCH), rc, "cannot update session");
}

int sqlite_session_delete(struct store *s, const uint8_t *hash)
{
    int rc = RUN(s, SESSION_DELETE, "DELETE FROM sessions WHERE token_hash = ?1", "h", hash);
    return sq_done(s, STMT(s, SESSION_DELETE), rc, "cannot end session");
}

int sqlite_sessions_delete_user(struct store *s, const char *user_id)
{
    int rc = RUN(s, SESSIONS_DELETE_USER, "DELETE FROM sessions WHERE user_id = ?1", "t", user_id);
    return sq_done(s, STMT(s, SESSIONS_DELETE_USER), rc, "cannot end sessions");
}

int sqlite_invite_insert(struct store *s, const struct store_invite *i)
{
    int rc = RUN(s, INVITE_INSERT,
                 "INSERT INTO invites(token_hash, id, account_id, email, invited_by, created_at, "
                 "expires_at) VALUES (?1, ?2, ?3, lower(?4), ?5, ?6, ?7)",
                 "htttt"
                 "ii",
                 i->token_hash, i->id, i->account_id, i->email, i->invited_by, i->created_at,
                 i->expires_at);
    return sq_done(s, STMT(s, INVITE_INSERT), rc, "cannot create invitation");
}

static void read_invite(sqlite3_stmt *q, void *out)
{
    struct store_invite *i = out;
    const void *h = sqlite3_column_blob(q, 0);
    memset(i, 0, sizeof(*i));
    if (h != NULL && sqlite3_column_bytes(q, 0) == STORE_HASH_LEN)
        memcpy(i->token_hash, h, STORE_HASH_LEN);
    sq_copy_text(i->account_id, sizeof(i->account_id), q, 1);
    sq_copy_text(i->email, sizeof(i->email), q, 2);
    sq_copy_text(i->invited_by, sizeof(i->invited_by), q, 3);
    i->created_at = sqlite3_column_int64(q, 4);
    i->expires_at = sqlite3_column_int64(q, 5);
    i->accepted_at = sqlite3_column_int64(q, 6);
    sq_copy_text(i->id, sizeof(i->id), q, 7);
    i->canceled_at = sqlite3_column_int64(q, 8);
    i->failures = sqlite3_column_int(q, 9);
}

#define INVITE_COLUMNS                                                                             \
    "token_hash, account_id, email, invited_by, created_at, expires_at, coalesce(accepted_at, "    \
    "0), "                                                                                         \
    "coalesce(id, ''), coalesce(canceled_at, 0), failures"
#define INVITE_PENDING "accepted_at IS NULL AND canceled_at IS NULL AND expires_at > ?2"

int sqlite_invite_find(struct store *s, const uint8_t *hash, struct store_invite *out)
{
    int rc = RUN(s, INVITE_FIND, "SELECT " INVITE_COLUMNS " FROM invites WHERE token_hash = ?1",
                 "h", hash);
    return sq_one_row(s, STMT(s, INVITE_FIND), rc, read_invite, out, "no such invitation",
                      "cannot read invitation");
}

/* Cancels an account's pending invitations for an email: the person joined, or was removed,
 * and no invitation made before may bring them (back) in. */
static int cancel_invites_for(struct store *s, const char *account_id, const char *email,
                              int64_t at)
{
    int rc = RUN(s, INVITES_CANCEL_EMAIL,
                 "UPDATE invites SET canceled_at = ?3 WHERE account_id = ?1 AND email = ?2 AND "
                 "accepted_at IS NULL AND canceled_at IS NULL",
                 "tti", account_id, email, at);
    return sq_done(s, STMT(s, INVITES_CANCEL_EMAIL), rc, "cannot cancel invitations");
}

int sqlite_invite_accept(struct store *s, const uint8_t *hash, int64_t at)
{
    char account_id[STORE_ID_SIZE] = "", email[STORE_EMAIL_MAX + 1] = "";
    int rc;

    if ((rc = sq_begin(s)) != STORE_OK)
        return rc;
    rc = RUN(s, INVITE_ACCEPT,
             "UPDATE invites SET accepted_at = ?2 WHERE token_hash = ?1 AND accepted_at IS NULL "
             "AND canceled_at IS NULL RETURNING account_id, email",
             "hi", hash, at);
    if (rc == SQLITE_ROW) {
        sq_copy_text(account_id, sizeof(account_id), STMT(s, INVITE_ACCEPT), 0);
        sq_copy_text(email, sizeof(email), STMT(s, INVITE_ACCEPT), 1);
    }
    if ((rc = sq_done(s, STMT(s, INVITE_ACCEPT), rc, "cannot accept invitation")) != STORE_OK)
        goto rollback;
    if (account_id[0] == '\0') {
        rc = store_set_error(s, STORE_CONFLICT, "invitation already used or cancelled");
        goto rollback;
    }
    rc = cancel_invites_for(s, account_id, email, at);
rollback:
    return sq_end(s, rc);
}

int sqlite_invites_list(struct store *s, const char *account_id, int64_t now, store_invite_cb cb,
                        void *ud)
{
    struct store_invite i;
    sqlite3_stmt *q;
    int rc = RUN(s, INVITES_LIST,
                 "SELECT " INVITE_COLUMNS " FROM invites WHERE account_id = ?1 AND " INVITE_PENDING
                 " ORDER BY created_at",
                 "ti", account_id, now);
    q = STMT(s, INVITES_LIST);
    for (; rc == SQLITE_ROW; rc = sqlite3_step(q)) {
        read_invite(q, &i);
        if (cb(ud, &i) != 0)
            break;
    }
    return sq_done(s, q, rc, "cannot list invitations");
}

int sqlite_invite_fail(struct store *s, const uint8_t *hash, int max, int64_t at, int *failures)
{
    int rc = RUN(s, INVITE_FAIL,
                 "UPDATE invites SET failures = failures + 1, canceled_at = CASE WHEN canceled_at "
                 "IS NULL AND failures + 1 >= ?2 THEN ?3 ELSE canceled_at END "
                 "WHERE token_hash = ?1 RETURNING failures",
                 "hii", hash, (int64_t)max, at);
    if (rc == SQLITE_ROW)
        *failures = sqlite3_column_int(STMT(s, INVITE_FAIL), 0);
    int r = sq_done(s, STMT(s, INVITE_FAIL), rc, "cannot count a failed invitation");
    if (r == STORE_OK && rc == SQLITE_DONE)
        return store_set_error(s, STORE_NOT_FOUND, "no such invitation");
    return r;
}

int sqlite_invite_cancel(struct store *s, const char *account_id, const char *id, int64_t at,
                         struct store_invite *out)
{
    int rc = RUN(s, INVITE_CANCEL,
                 "UPDATE invites SET canceled_at = ?2 WHERE account_id = ?3 AND id = ?1 AND "
                 "accepted_at IS NULL AND canceled_at IS NULL AND expires_at > ?2 "
                 "RETURNING " INVITE_COLUMNS,
                 "tit", id, at, account_id);
    return sq_one_row(s, STMT(s, INVITE_CANCEL), rc, read_invite, out, "no such pending invitation",
                      "cannot cancel invitation");
}

int sqlite_invites_pending(struct store *s, const char *account_id, int64_t now, int64_t *count)
{
    int rc = RUN(s, INVITES_PENDING,
                 "SELECT count(*) FROM invites WHERE account_id = ?1 AND " INVITE_PENDING, "ti",
                 account_id, now);
    return sq_one_row(s, STMT(s, INVITES_PENDING), rc, sq_read_count, count, "no count",
                      "cannot count invitations");
}

/* A new link replaces the user's earlier ones that were not used. */
int sqlite_password_token_insert(struct store *s, const struct store_password_token *t)
{
    int rc;

    if ((rc = sq_begin(s)) != STORE_OK)
        return rc;
    if ((rc = void_password_tokens(s, t->user_id)) != STORE_OK)
        goto rollback;
    rc = RUN(s, PWTOKEN_INSERT,
             "INSERT INTO password_tokens(token_hash, user_id, created_at, expires_at) "
             "VALUES (?1, ?2, ?3, ?4)",
             "htii", t->token_hash, t->user_id, t->created_at, t->expires_at);
    rc = sq_done(s, STMT(s, PWTOKEN_INSERT), rc, "cannot create a set-password link");
rollback:
    return sq_end(s, rc);
}

static void read_password_token(sqlite3_stmt *q, void *row)
{
    struct store_password_token *out = row;

    memset(out, 0, sizeof(*out));
    sq_copy_text(out->user_id, sizeof(out->user_id), q, 0);
    out->created_at = sqlite3_column_int64(q, 1);
    out->expires_at = sqlite3_column_int64(q, 2);
    out->used_at = sqlite3_column_int64(q, 3);
}

int sqlite_password_token_find(struct store *s, const uint8_t *hash,
                               struct store_password_token *out)
{
    int rc = RUN(s, PWTOKEN_FIND,
                 "SELECT user_id, created_at, expires_at, coalesce(used_at, 0) FROM "
                 "password_tokens WHERE token_hash = ?1",
                 "h", hash);
    if ((rc = sq_one_row(s, STMT(s, PWTOKEN_FIND), rc, read_password_token, out, "no such link",
                         "cannot read a set-password link")) == STORE_OK)
        memcpy(out->token_hash, hash, STORE_HASH_LEN);
    return rc;
}

int sqlite_password_token_use(struct store *s, const uint8_t *hash, const char *password_hash,
                              int64_t at)
{
    char user_id[STORE_ID_SIZE] = "";
    int rc;

    if ((rc = sq_begin(s)) != STORE_OK)
        return rc;
    rc = RUN(s, PWTOKEN_USE,
             "UPDATE password_tokens SET used_at = ?2 WHERE token_hash = ?1 AND used_at IS NULL "
             "AND expires_at > ?2 RETURNING user_id",
             "hi", hash, at);
    if (rc == SQLITE_ROW)
        sq_copy_text(user_id, sizeof(user_id), STMT(s, PWTOKEN_USE), 0);
    if ((rc = sq_done(s, STMT(s, PWTOKEN_USE), rc, "cannot use a set-password link")) != STORE_OK)
        goto rollback;
    if (user_id[0] == '\0') {
        rc = store_set_error(s, STORE_CONFLICT, "the link was used already or has expired");
        goto rollback;
    }
    if ((rc = set_password(s, user_id, password_hash)) != STORE_OK ||
        (rc = sqlite_sessions_delete_user(s, user_id)) != STORE_OK)
        goto rollback;
    rc = STORE_OK;
rollback:
    return sq_end(s, rc);
}

int sqlite_member_remove(struct store *s, const char *account_id, const char *user_id, int64_t at)
{
    struct store_user u;
    int rc;

    if ((rc = sq_begin(s)) != STORE_OK)
        return rc;
    if ((rc = sqlite_user_find(s, user_id, &u)) != STORE_OK ||
        (rc = cancel_invites_for(s, account_id, u.email, at)) != STORE_OK)
        goto rollback;
    rc = RUN(s, MEMBER_REMOVE, "DELETE FROM memberships WHERE account_id = ?1 AND user_id = ?2",
             "tt", account_id, user_id);
    if ((rc = sq_done(s, STMT(s, MEMBER_REMOVE), rc, "cannot remove member")) != STORE_OK)
        goto rollback;
    if (sqlite3_changes(sq_db_of(s)) == 0) {
        rc = store_set_error(s, STORE_NOT_FOUND, "no such member");
        goto rollback;
    }
    rc = RUN(s, SESSIONS_DELETE_MEMBER,
             "DELETE FROM sessions WHERE account_id = ?1 AND user_id = ?2", "tt", account_id,
             user_id);
    rc = sq_done(s, STMT(s, SESSIONS_DELETE_MEMBER), rc, "cannot end sessions");
rollback:
    return sq_end(s, rc);
}

int sqlite_sessions_delete_others(struct store *s, const char *user_id, const uint8_t *keep)
{
    int rc =
        RUN(s, SESSIONS_DELETE_OTHERS,
            "DELETE FROM sessions WHERE user_id = ?1 AND token_hash <> ?2", "th", user_id, keep);
    return sq_done(s, STMT(s, SESSIONS_DELETE_OTHERS), rc, "cannot end sessions");
}

int sqlite_key_count_working(struct store *s, const char *account_id, int64_t now, int64_t *count)
{
    int rc = RUN(s, KEY_COUNT_WORKING,
                 "SELECT count(*) FROM api_keys WHERE account_id = ?1 AND revoked_at IS NULL AND "
                 "(expires_at IS NULL OR expires_at > ?2)",
                 "ti", account_id, now);
    return sq_one_row(s, STMT(s, KEY_COUNT_WORKING), rc, sq_read_count, count, "no count",
                      "cannot count keys");
}

static void read_throttle(sqlite3_stmt *q, void *out)
{
    struct store_throttle *t = out;
    t->count = sqlite3_column_int64(q, 0);
    t->first_at = sqlite3_column_int64(q, 1);
    t->last_at = sqlite3_column_int64(q, 2);
    t->refused = sqlite3_column_int64(q, 3);
}

int sqlite_throttle_get(struct store *s, const char *kind, const char *key,
                        struct store_throttle *out)
{
    int rc = RUN(s, THROTTLE_GET,
                 "SELECT count, first_at, last_at, refused FROM throttles WHERE kind = ?1 AND "
                 "key = ?2",
                 "tt", kind, key);
    return sq_one_row(s, STMT(s, THROTTLE_GET), rc, read_throttle, out, "no throttle",
                      "cannot read a throttle");
}

int sqlite_throttle_hit(struct store *s, const char *kind, const char *key, int64_t now,
                        int64_t window, struct store_throttle *out)
{
    int rc = RUN(s, THROTTLE_HIT,
                 "INSERT INTO throttles(kind, key, count, first_at, last_at) "
                 "VALUES (?1, ?2, 1, ?3, ?3) ON CONFLICT(kind, key) DO UPDATE SET "
                 "count = CASE WHEN last_at <= ?3 - ?4 THEN 1 ELSE count + 1 END, "
                 "first_at = CASE WHEN last_at <= ?3 - ?4 THEN ?3 ELSE first_at END, "
                 "refused = 0, last_at = ?3 RETURNING count, first_at, last_at, refused",
                 "ttii", kind, key, now, window);
    if (rc == SQLITE_ROW)
        read_throttle(STMT(s, THROTTLE_HIT), out);
    return sq_done(s, STMT(s, THROTTLE_HIT), rc, "cannot count an attempt");
}

int sqlite_throttle_refuse(struct store *s, const char *kind, const char *key, int64_t *refused)
{
    int rc = RUN(s, THROTTLE_REFUSE,
                 "UPDATE throttles SET refused = refused + 1 WHERE kind = ?1 AND key = ?2 "
                 "RETURNING refused - 1",
                 "tt", kind, key);
    *refused = rc == SQLITE_ROW ? sqlite3_column_int64(STMT(s, THROTTLE_REFUSE), 0) : 0;
    return sq_done(s, STMT(s, THROTTLE_REFUSE), rc, "cannot count a refused attempt");
}

int sqlite_throttle_clear(struct store *s, const char *kind, const char *key)
{
    int rc = RUN(s, THROTTLE_CLEAR, "DELETE FROM throttles WHERE kind = ?1 AND key = ?2", "tt",
                 kind, key);
    return sq_done(s, STMT(s, THROTTLE_CLEAR), rc, "cannot clear a throttle");
}

/* ---- operator keys ------------------------------------------------------------------------- */

#define OPKEY_COLUMNS                                                                              \
    "id, name, hash, hint, created_at, created_by, coalesce(last_used_at, 0), "                    \
    "coalesce(revoked_at, 0)"

static void read_operator_key(sqlite3_stmt *q, void *out)
{
    struct store_key *k = out;

    memset(k, 0, sizeof(*k));
    sq_copy_text(k->id, sizeof(k->id), q, 0);
    sq_copy_text(k->name, sizeof(k->name), q, 1);
    if (sqlite3_column_bytes(q, 2) == STORE_HASH_LEN)
        memcpy(k->hash, sqlite3_column_blob(q, 2), STORE_HASH_LEN);
    sq_copy_text(k->hint, sizeof(k->hint), q, 3);
    k->created_at = sqlite3_column_int64(q, 4);
    sq_copy_text(k->created_by, sizeof(k->created_by), q, 5);
    k->last_used_at = sqlite3_column_int64(q, 6);
    k->revoked_at = sqlite3_column_int64(q, 7);
    kn_strlcpy(k->mode, "operator", sizeof(k->mode));
}

int sqlite_operator_key_insert(struct store *s, const struct store_key *k,
                               const struct store_audit *audit)
{
    int r = sq_begin(s), rc;

    if (r != STORE_OK)
        return r;
    rc = RUN(s, OPKEY_INSERT,
             "INSERT INTO operator_keys(id, name, hash, hint, created_at, created_by) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
             "tthtit", k->id, k->name, k->hash, k->hint, k->created_at, k->created_by);
    r = sq_done(s, STMT(s, OPKEY_INSERT), rc, "cannot create an operator key");
    if (r == STORE_OK)
        r = sq_audit_row(s, audit);
    return sq_end(s, r);
}

int sqlite_operator_key_find(struct store *s, const char *id, const uint8_t *hash,
                             struct store_key *out)
{
    int rc = id != NULL
                 ? RUN(s, OPKEY_FIND_ID,
                       "SELECT " OPKEY_COLUMNS " FROM operator_keys WHERE id = ?1", "t", id)
                 : RUN(s, OPKEY_FIND_HASH,
                       "SELECT " OPKEY_COLUMNS " FROM operator_keys WHERE hash = ?1", "h", hash);
    return sq_one_row(s, id != NULL ? STMT(s, OPKEY_FIND_ID) : STMT(s, OPKEY_FIND_HASH), rc,
                      read_operator_key, out, "no such operator key",
                      "cannot read an operator key");
}

int sqlite_operator_keys_list(struct store *s, store_key_list_cb cb, void *ud)
{
    struct store_key k;
    sqlite3_stmt *q;
    int rc = RUN(s, OPKEY_LIST, "SELECT " OPKEY_COLUMNS " FROM operator_keys ORDER BY rowid", "");

    q = STMT(s, OPKEY_LIST);
    for (; rc == SQLITE_ROW; rc = sqlite3_step(q)) {
        read_operator_key(q, &k);
        if (cb(ud, &k, 0) != 0)
            break;
    }
    return sq_done(s, q, rc, "cannot list operator keys");
}

int sqlite_operator_key_revoke(struct store *s, const char *id, int64_t at, const char *actor,
                               const struct store_audit *audit)
{
    int r = sq_begin(s), rc;

    if (r != STORE_OK)
        return r;
    rc = RUN(s, OPKEY_REVOKE,
             "UPDATE operator_keys SET revoked_by = coalesce(revoked_by, ?3), "
             "revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
             "tit", id, at, actor);
    r = sq_done(s, STMT(s, OPKEY_REVOKE), rc, "cannot revoke an operator key");
    if (r == STORE_OK && sqlite3_changes(sq_db_of(s)) == 0)
        r = store_set_error(s, STORE_NOT_FOUND, "no such operator key");
    if (r == STORE_OK)
        r = sq_audit_row(s, audit);
    return sq_end(s, r);
}

int sqlite_operator_key_touch(struct store *s, const char *id, int64_t at)
{
    int rc = RUN(s, OPKEY_TOUCH, "UPDATE operator_keys SET last_used_at = ?2 WHERE id = ?1", "ti",
                 id, at);
    return sq_done(s, STMT(s, OPKEY_TOUCH), rc, "cannot record an operator key's use");
}

/* ---- idempotency keys ---------------------------------------------------------------------- */

/* One statement claims the key: a new row, or one a day old or abandoned taken over; a key held
 * by another request (finished or not) is left as it is and read. */
int sqlite_idem_begin(struct store *s, const char *scope, const char *key, const uint8_t *hash,
                      int64_t now, int64_t stale_before, struct store_idem *out)
{
    sqlite3_stmt *q;
    int rc = RUN(s, IDEM_BEGIN,
                 "INSERT INTO idempotency_keys(scope, key, request_hash, created_at, status, body) "
                 "VALUES (?1, ?2, ?3, ?4, 0, NULL) ON CONFLICT (scope, key) DO UPDATE SET "
                 "request_hash = excluded.request_hash, created_at = excluded.created_at, "
                 "status = 0, body = NULL WHERE idempotency_keys.created_at <= ?4 - ?5 OR "
                 "(idempotency_keys.status = 0 AND idempotency_keys.created_at < ?6)",
                 "tthiii", scope, key, hash, now, (int64_t)STORE_IDEM_TTL, stale_before);
    int r = sq_done(s, STMT(s, IDEM_BEGIN), rc, "cannot claim an idempotency key");

    memset(out, 0, sizeof(*out));
    if (r != STORE_OK)
        return r;
    if (sqlite3_changes(sq_db_of(s)) == 1)
        return STORE_OK;
    rc = RUN(s, IDEM_READ,
             "SELECT request_hash, created_at, status, body FROM idempotency_keys WHERE "
             "scope = ?1 AND key = ?2",
             "tt", scope, key);
    q = STMT(s, IDEM_READ);
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_bytes(q, 0) == STORE_HASH_LEN)
            memcpy(out->request_hash, sqlite3_column_blob(q, 0), STORE_HASH_LEN);
        out->created_at = sqlite3_column_int64(q, 1);
        out->status = sqlite3_column_int(q, 2);
        if (sqlite3_column_type(q, 3) == SQLITE_TEXT)
            out->body = kn_strdup((const char *)sqlite3_column_text(q, 3));
        sqlite3_reset(q);
        return store_set_error(s, STORE_CONFLICT, "the idempotency key is taken");
    }
    r = sq_done(s, q, rc, "cannot read an idempotency key");
    /* Gone between the two statements (a prune): the caller may try again. */
    return r != STORE_OK ? r : store_set_error(s, STORE_RETRY, "the idempotency key went away");
}

int sqlite_idem_finish(struct store *s, const char *scope, const char *key, int status,
                       const char *body)
{
    int rc = RUN(s, IDEM_FINISH,
                 "UPDATE idempotency_keys SET status = ?3, body = ?4 WHERE scope = ?1 AND "
                 "key = ?2 AND status = 0",
                 "ttit", scope, key, (int64_t)status, body);
    return sq_done(s, STMT(s, IDEM_FINISH), rc, "cannot keep an idempotent answer");
}

int sqlite_idem_release(struct store *s, const char *scope, const char *key)
{
    int rc = RUN(s, IDEM_RELEASE,
                 "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND status = 0", "tt",
                 scope, key);
    return sq_done(s, STMT(s, IDEM_RELEASE), rc, "cannot release an idempotency key");
}

/* Deletes at most PRUNE_BATCH rows per statement, each its own short transaction, so that a
 * prune never holds the write lock long enough to delay a ledger commit. */
#define PRUNE_BATCH 500

int sqlite_prune(struct store *s, const struct store_retention *r, int64_t now, int64_t *deleted)
{
    static const char *const sql[] = {
        "DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM sessions WHERE "
        "expires_at <= ?1 OR last_seen_at <= ?1 - ?7 LIMIT 500)",
        "DELETE FROM throttles WHERE (kind, key) IN (SELECT kind, key FROM throttles WHERE "
        "last_at <= ?2 LIMIT 500)",
        "DELETE FROM invites WHERE token_hash IN (SELECT token_hash FROM invites WHERE "
        "coalesce(accepted_at, canceled_at, expires_at) <= ?3 AND (accepted_at IS NOT NULL OR "
        "canceled_at IS NOT NULL OR expires_at <= ?1) LIMIT 500)",
        "DELETE FROM password_tokens WHERE token_hash IN (SELECT token_hash FROM password_tokens "
        "WHERE coalesce(used_at, expires_at) <= ?3 LIMIT 500)",
        /* Only a prefix of each change log, in sequence order (see the PostgreSQL backend): a
         * clock set back would otherwise leave a hole that the oldest change does not show. */
        "DELETE FROM key_changes WHERE seq IN (SELECT seq FROM key_changes WHERE seq < (SELECT "
        "min(seq) FROM key_changes WHERE at > ?4 OR seq = (SELECT max(seq) FROM key_changes)) "
        "ORDER BY seq LIMIT 500)",
        "DELETE FROM account_changes WHERE seq IN (SELECT seq FROM account_changes WHERE seq < "
        "(SELECT min(seq) FROM account_changes WHERE at > ?4 OR seq = (SELECT max(seq) FROM "
        "account_changes)) ORDER BY seq LIMIT 500)",
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE ?5 > 0 AND at <= ?6 "
        "ORDER BY id LIMIT 500)",
        /* Servers not seen for a day: stopped without saying so (their row is not live after 3
         * seconds; this only keeps the table short). */
        "DELETE FROM nodes WHERE id IN (SELECT id FROM nodes WHERE seen_ms < (?1 - 86400) * 1000 "
        "LIMIT 500)",
        "DELETE FROM idempotency_keys WHERE (scope, key) IN (SELECT scope, key FROM "
        "idempotency_keys WHERE created_at <= ?1 - 86400 LIMIT 500)",
    };
    struct sqlite_backend *b = store_backend(s);
    int64_t total = 0;
    _Static_assert(sizeof(sql) / sizeof(sql[0]) == sizeof(b->prune) / sizeof(b->prune[0]),
                   "one cached statement per prune statement");

    for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
        for (;;) {
            int rc = sq_run(s, &b->prune[i], sql[i], "iiiiiii", now, now - r->throttle_s,
                            now - r->done_days * 86400, now - r->change_log_days * 86400,
                            r->audit_days, now - r->audit_days * 86400, r->session_idle_s);
            sqlite3_reset(b->prune[i]);
            if (rc != SQLITE_DONE)
                return sq_fail(s, "cannot prune");
            int n = sqlite3_changes(sq_db_of(s));
            total += n;
            if (n < PRUNE_BATCH)
                break;
        }
    }
    *deleted = total;
    return STORE_OK;
}
