#include "store/store.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base62.h"
#include "core/util.h"

struct store {
    const struct store_ops *ops;
    void *backend;
    char errmsg[512];
    char url[4096];
};

struct store *store_open(const char *url, int migrate, char *err, size_t errsize)
{
    struct store *s = kn_calloc(1, sizeof(*s));

    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) {
        snprintf(err, errsize, "PostgreSQL is not supported by this build yet: use a SQLite path");
        free(s);
        return NULL;
    }
    s->ops = &store_sqlite_ops;
    kn_strlcpy(s->url, url, sizeof(s->url));
    if (strncmp(url, "sqlite:", 7) == 0)
        url += 7;
    if (s->ops->open(s, url) != STORE_OK || (migrate && s->ops->migrate(s) != STORE_OK)) {
        snprintf(err, errsize, "%s", s->errmsg);
        store_close(s);
        return NULL;
    }
    return s;
}

int store_exists(const char *url, char *where, size_t size)
{
    struct stat st;

    if (strncmp(url, "sqlite:", 7) == 0)
        url += 7;
    if (where != NULL)
        kn_abs_path(url, where, size);
    return stat(url, &st) == 0;
}

void store_close(struct store *s)
{
    if (s == NULL)
        return;
    if (s->backend != NULL)
        s->ops->close(s);
    free(s);
}

const char *store_url_of(struct store *s)
{
    return s->url;
}

const char *store_errmsg(struct store *s)
{
    return s->errmsg;
}

int store_set_error(struct store *s, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
    va_end(ap);
    return status;
}

void *store_backend(struct store *s)
{
    return s->backend;
}

/* Lets a backend attach its state; declared here rather than in the header because only backends
 * defined in this folder may use it. */
void store_set_backend__(struct store *s, void *backend);
void store_set_backend__(struct store *s, void *backend)
{
    s->backend = backend;
}

int store_migrate(struct store *s)
{
    return s->ops->migrate(s);
}

int store_ping(struct store *s)
{
    return s->ops->ping(s);
}

int store_email_valid(const char *email)
{
    size_t len = strlen(email);
    const char *at = strchr(email, '@');

    if (len < 3 || len > STORE_EMAIL_MAX || at == NULL || at == email || at[1] == '\0' ||
        strchr(at + 1, '@') != NULL)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)email[i] <= 0x20 || email[i] == 0x7f)
            return 0;
    return 1;
}

int store_account_create(struct store *s, const char *email, const char *password_hash,
                         const char *existing_user, struct store_account *out)
{
    struct store_account a;
    struct store_user u;
    size_t len = strlen(email);

    if (!store_email_valid(email))
        return store_set_error(s, STORE_ERROR,
                               "that is not an email address (expected one like dev@example.com, "
                               "without spaces)");
    memset(&a, 0, sizeof(a));
    base62_random_id(a.id, "acct_", 20);
    for (size_t i = 0; i <= len; i++)
        a.email[i] = (char)tolower((unsigned char)email[i]);
    a.created_at = kn_unix_now();
    a.quota_requests = a.quota_tokens = STORE_QUOTA_FROM_PLAN;
    memset(&u, 0, sizeof(u));
    if (existing_user != NULL)
        kn_strlcpy(u.id, existing_user, sizeof(u.id));
    else
        base62_random_id(u.id, "user_", 20);
    kn_strlcpy(u.email, a.email, sizeof(u.email));
    kn_strlcpy(u.password_hash, password_hash != NULL ? password_hash : "",
               sizeof(u.password_hash));
    u.created_at = a.created_at;
    int r = s->ops->account_insert_owned(s, &a, &u, existing_user != NULL);
    if (r == STORE_OK)
        *out = a;
    return r;
}

int store_account_find(struct store *s, const char *email_or_id, struct store_account *out)
{
    return s->ops->account_find(s, email_or_id, out);
}

int store_key_insert(struct store *s, const struct store_key *keys, size_t n)
{
    return s->ops->key_insert(s, keys, n);
}

int store_key_count(struct store *s, int64_t *count)
{
    return s->ops->key_count(s, count);
}

int store_key_find(struct store *s, const char *id, const uint8_t *hash, struct store_key *out)
{
    return s->ops->key_find(s, id, hash, out);
}

int store_key_list(struct store *s, const char *account_id, store_key_cb cb, void *ud)
{
    return s->ops->key_list(s, account_id, cb, ud);
}

int store_key_revoke(struct store *s, const char *id, int64_t at, const char *actor)
{
    return s->ops->key_revoke(s, id, at, actor);
}

int store_key_expire(struct store *s, const char *id, int64_t at)
{
    return s->ops->key_expire(s, id, at);
}

int store_key_rename(struct store *s, const char *id, const char *name)
{
    return s->ops->key_rename(s, id, name);
}

int store_key_set_allowlist(struct store *s, const char *id, const char *allowlist)
{
    return s->ops->key_set_allowlist(s, id, allowlist);
}

int store_key_roll(struct store *s, const char *old_id, const struct store_key *replacement,
                   int64_t old_expires_at)
{
    return s->ops->key_roll(s, old_id, replacement, old_expires_at);
}

int store_audit_add(struct store *s, const struct store_audit *e)
{
    return s->ops->audit_add(s, e);
}

int store_audit_list(struct store *s, const char *account_id, int64_t before_id, int limit,
                     store_audit_cb cb, void *ud)
{
    return s->ops->audit_list(s, account_id, before_id, limit, cb, ud);
}

int store_keys_load(struct store *s, int64_t today, int64_t *last_seq, store_key_cb cb, void *ud)
{
    return s->ops->keys_load(s, today, last_seq, cb, ud);
}

int store_key_changes(struct store *s, int64_t today, int64_t *last_seq, store_key_cb cb, void *ud)
{
    return s->ops->key_changes(s, today, last_seq, cb, ud);
}

int store_usage_add(struct store *s, const struct store_usage *u, size_t n)
{
    return s->ops->usage_add(s, u, n);
}

int store_user_find(struct store *s, const char *email_or_id, struct store_user *out)
{
    return s->ops->user_find(s, email_or_id, out);
}

int store_user_set_password(struct store *s, const char *user_id, const char *hash)
{
    return s->ops->user_set_password(s, user_id, hash);
}

int store_member_first(struct store *s, const char *user_id, struct store_member *out)
{
    return s->ops->member_first(s, user_id, out);
}

int store_member_find(struct store *s, const char *account_id, const char *user_id,
                      struct store_member *out)
{
    return s->ops->member_find(s, account_id, user_id, out);
}

int store_member_add(struct store *s, const struct store_member *m, const struct store_user *u)
{
    return s->ops->member_add(s, m, u);
}

int store_members_list(struct store *s, const char *account_id, store_member_cb cb, void *ud)
{
    return s->ops->members_list(s, account_id, cb, ud);
}

int store_session_insert(struct store *s, const struct store_session *x)
{
    return s->ops->session_insert(s, x);
}

int store_session_find(struct store *s, const uint8_t *hash, struct store_session *out)
{
    return s->ops->session_find(s, hash, out);
}

int store_session_touch(struct store *s, const uint8_t *hash, int64_t at)
{
    return s->ops->session_touch(s, hash, at);
}

int store_session_delete(struct store *s, const uint8_t *hash)
{
    return s->ops->session_delete(s, hash);
}

int store_sessions_delete_user(struct store *s, const char *user_id)
{
    return s->ops->sessions_delete_user(s, user_id);
}

int store_invite_insert(struct store *s, const struct store_invite *i)
{
    return s->ops->invite_insert(s, i);
}

int store_invite_find(struct store *s, const uint8_t *hash, struct store_invite *out)
{
    return s->ops->invite_find(s, hash, out);
}

int store_invite_accept(struct store *s, const uint8_t *hash, int64_t at)
{
    return s->ops->invite_accept(s, hash, at);
}

int store_invites_list(struct store *s, const char *account_id, int64_t now, store_invite_cb cb,
                       void *ud)
{
    return s->ops->invites_list(s, account_id, now, cb, ud);
}

int store_invite_fail(struct store *s, const uint8_t *hash, int max, int64_t at, int *failures)
{
    return s->ops->invite_fail(s, hash, max, at, failures);
}

int store_invite_cancel(struct store *s, const char *account_id, const char *id, int64_t at,
                        struct store_invite *out)
{
    return s->ops->invite_cancel(s, account_id, id, at, out);
}

int store_invites_pending(struct store *s, const char *account_id, int64_t now, int64_t *count)
{
    return s->ops->invites_pending(s, account_id, now, count);
}

int store_password_token_insert(struct store *s, const struct store_password_token *t)
{
    return s->ops->password_token_insert(s, t);
}

int store_password_token_find(struct store *s, const uint8_t *hash,
                              struct store_password_token *out)
{
    return s->ops->password_token_find(s, hash, out);
}

int store_password_token_use(struct store *s, const uint8_t *hash, const char *password_hash,
                             int64_t at)
{
    return s->ops->password_token_use(s, hash, password_hash, at);
}

int store_member_remove(struct store *s, const char *account_id, const char *user_id, int64_t at)
{
    return s->ops->member_remove(s, account_id, user_id, at);
}

int store_sessions_delete_others(struct store *s, const char *user_id, const uint8_t *keep)
{
    return s->ops->sessions_delete_others(s, user_id, keep);
}

int store_key_count_working(struct store *s, const char *account_id, int64_t now, int64_t *count)
{
    return s->ops->key_count_working(s, account_id, now, count);
}

int store_throttle_get(struct store *s, const char *kind, const char *key,
                       struct store_throttle *out)
{
    return s->ops->throttle_get(s, kind, key, out);
}

int store_throttle_hit(struct store *s, const char *kind, const char *key, int64_t now,
                       int64_t window, struct store_throttle *out)
{
    return s->ops->throttle_hit(s, kind, key, now, window, out);
}

int store_throttle_refuse(struct store *s, const char *kind, const char *key, int64_t *refused)
{
    return s->ops->throttle_refuse(s, kind, key, refused);
}

int store_throttle_clear(struct store *s, const char *kind, const char *key)
{
    return s->ops->throttle_clear(s, kind, key);
}

int store_prune(struct store *s, const struct store_retention *r, int64_t now, int64_t *deleted)
{
    return s->ops->prune(s, r, now, deleted);
}

int store_set_durable(struct store *s, int full)
{
    return s->ops->set_durable(s, full);
}

int store_checkpoint_in_background(struct store *s)
{
    return s->ops->checkpoint_in_background(s);
}

int store_account_set_plan(struct store *s, const char *id, const char *plan)
{
    return s->ops->account_set_plan(s, id, plan);
}

int store_account_set_quota(struct store *s, const char *id, int64_t requests, int64_t tokens)
{
    return s->ops->account_set_quota(s, id, requests, tokens);
}

int store_accounts_load(struct store *s, int64_t *last_seq, store_account_cb cb, void *ud)
{
    return s->ops->accounts_load(s, last_seq, cb, ud);
}

int store_account_changes(struct store *s, int64_t *last_seq, store_account_cb cb, void *ud)
{
    return s->ops->account_changes(s, last_seq, cb, ud);
}

int store_ledger_add(struct store *s, const struct store_ledger_row *rows, size_t n, size_t *added)
{
    return s->ops->ledger_add(s, rows, n, added);
}

int store_usage_month_totals(struct store *s, int64_t month, store_month_total_cb cb, void *ud)
{
    return s->ops->usage_month_totals(s, month, cb, ud);
}

int store_usage_sums(struct store *s, const char *account_id, int64_t month_from, int64_t month_to,
                     store_usage_sum_cb cb, void *ud)
{
    return s->ops->usage_sums(s, account_id, month_from, month_to, cb, ud);
}
