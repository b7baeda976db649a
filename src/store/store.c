/* The store's wrappers: the backend chosen by URL, every call through the fault switch; see
 * store.h. */
#include "store/store.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base62.h"
#include "core/fault.h"
#include "core/util.h"

struct store {
    const struct store_ops *ops;
    void *backend;
    char errmsg[512];
    char url[4096];
};

struct store *store_open(const char *url, int migrate, char *err, size_t errsize)
{
    return store_open_with(url, NULL, migrate, err, errsize);
}

struct store *store_open_with(const char *url, const char *options, int migrate, char *err,
                              size_t errsize)
{
    struct store *s;
    char where[4096], opts[1024] = "";
    const char *q = NULL;

    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) {
        snprintf(err, errsize, "PostgreSQL is not supported by this build yet: use a SQLite path");
        return NULL;
    }
    /* Options come after a '?' of a "sqlite:" URL only: a plain path is taken as it is. */
    if (strncmp(url, "sqlite:", 7) == 0) {
        url += 7;
        q = strchr(url, '?');
    }
    size_t len = q != NULL ? (size_t)(q - url) : strlen(url);
    if (len >= sizeof(where) ||
        (size_t)snprintf(opts, sizeof(opts), "%s%s%s", q != NULL ? q + 1 : "",
                         q != NULL && options != NULL ? "&" : "",
                         options != NULL ? options : "") >= sizeof(opts)) {
        snprintf(err, errsize, "the database URL is too long");
        return NULL;
    }
    memcpy(where, url, len);
    where[len] = '\0';
    s = kn_calloc(1, sizeof(*s));
    s->ops = &store_sqlite_ops;
    kn_strlcpy(s->url, where, sizeof(s->url));
    if (s->ops->open(s, where, opts[0] != '\0' ? opts : NULL) != STORE_OK ||
        (migrate && store_migrate(s) != STORE_OK)) {
        snprintf(err, errsize, "%s", s->errmsg);
        store_close(s);
        return NULL;
    }
    return s;
}

int store_exists(const char *url, char *where, size_t size)
{
    struct stat st;
    char path[4096];

    if (strncmp(url, "sqlite:", 7) == 0) {
        url += 7;
        kn_strlcpy(path, url, sizeof(path));
        path[strcspn(path, "?")] = '\0';
        url = path;
    }
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

/* A call the fault switch fails (core/fault.h). */
static int injected(struct store *s)
{
    return store_set_error(s, STORE_UNAVAILABLE, "the store cannot be reached (KONNECT_FAULT)");
}

/* Every call to the backend goes through here, so that the fault switch can fail any of them. */
#define CALL(s, op, ...) (fault_hit(FAULT_STORE) ? injected(s) : (s)->ops->op((s), __VA_ARGS__))

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
    return fault_hit(FAULT_STORE) ? injected(s) : s->ops->migrate(s);
}

int store_ping(struct store *s)
{
    return fault_hit(FAULT_STORE) ? injected(s) : s->ops->ping(s);
}

void store_idle(struct store *s)
{
    if (s->ops->idle != NULL)
        s->ops->idle(s);
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
    int r = CALL(s, account_insert_owned, &a, &u, existing_user != NULL);
    if (r == STORE_OK)
        *out = a;
    return r;
}

int store_account_find(struct store *s, const char *email_or_id, struct store_account *out)
{
    return CALL(s, account_find, email_or_id, out);
}

int store_key_insert(struct store *s, const struct store_key *keys, size_t n,
                     const struct store_audit *audit)
{
    return CALL(s, key_insert, keys, n, audit);
}

int store_key_count(struct store *s, int64_t *count)
{
    return CALL(s, key_count, count);
}

int store_key_find(struct store *s, const char *id, const uint8_t *hash, struct store_key *out)
{
    return CALL(s, key_find, id, hash, out);
}

int store_key_list(struct store *s, const char *account_id, store_key_list_cb cb, void *ud)
{
    return CALL(s, key_list, account_id, cb, ud);
}

int store_key_revoke(struct store *s, const char *id, int64_t at, const char *actor,
                     const struct store_audit *audit)
{
    return CALL(s, key_revoke, id, at, actor, audit);
}

int store_key_expire(struct store *s, const char *id, int64_t at, const struct store_audit *audit)
{
    return CALL(s, key_expire, id, at, audit);
}

int store_key_rename(struct store *s, const char *id, const char *name,
                     const struct store_audit *audit)
{
    return CALL(s, key_rename, id, name, audit);
}

int store_key_set_allowlist(struct store *s, const char *id, const char *allowlist,
                            const struct store_audit *audit)
{
    return CALL(s, key_set_allowlist, id, allowlist, audit);
}

int store_key_roll(struct store *s, const char *old_id, const struct store_key *replacement,
                   int64_t old_expires_at, const struct store_audit *audit)
{
    return CALL(s, key_roll, old_id, replacement, old_expires_at, audit);
}

int store_user_find(struct store *s, const char *email_or_id, struct store_user *out)
{
    return CALL(s, user_find, email_or_id, out);
}

int store_user_set_password(struct store *s, const char *user_id, const char *hash)
{
    return CALL(s, user_set_password, user_id, hash);
}

int store_member_first(struct store *s, const char *user_id, struct store_member *out)
{
    return CALL(s, member_first, user_id, out);
}

int store_member_find(struct store *s, const char *account_id, const char *user_id,
                      struct store_member *out)
{
    return CALL(s, member_find, account_id, user_id, out);
}

int store_member_add(struct store *s, const struct store_member *m, const struct store_user *u)
{
    return CALL(s, member_add, m, u);
}

int store_members_list(struct store *s, const char *account_id, store_member_cb cb, void *ud)
{
    return CALL(s, members_list, account_id, cb, ud);
}

int store_session_insert(struct store *s, const struct store_session *x)
{
    return CALL(s, session_insert, x);
}

int store_session_find(struct store *s, const uint8_t *hash, struct store_session *out)
{
    return CALL(s, session_find, hash, out);
}

int store_session_touch(struct store *s, const uint8_t *hash, int64_t at)
{
    return CALL(s, session_touch, hash, at);
}

int store_session_delete(struct store *s, const uint8_t *hash)
{
    return CALL(s, session_delete, hash);
}

int store_sessions_delete_user(struct store *s, const char *user_id)
{
    return CALL(s, sessions_delete_user, user_id);
}

int store_invite_insert(struct store *s, const struct store_invite *i)
{
    return CALL(s, invite_insert, i);
}

int store_invite_find(struct store *s, const uint8_t *hash, struct store_invite *out)
{
    return CALL(s, invite_find, hash, out);
}

int store_invite_accept(struct store *s, const uint8_t *hash, int64_t at)
{
    return CALL(s, invite_accept, hash, at);
}

int store_invites_list(struct store *s, const char *account_id, int64_t now, store_invite_cb cb,
                       void *ud)
{
    return CALL(s, invites_list, account_id, now, cb, ud);
}

int store_invite_fail(struct store *s, const uint8_t *hash, int max, int64_t at, int *failures)
{
    return CALL(s, invite_fail, hash, max, at, failures);
}

int store_invite_cancel(struct store *s, const char *account_id, const char *id, int64_t at,
                        struct store_invite *out)
{
    return CALL(s, invite_cancel, account_id, id, at, out);
}

int store_invites_pending(struct store *s, const char *account_id, int64_t now, int64_t *count)
{
    return CALL(s, invites_pending, account_id, now, count);
}

int store_password_token_insert(struct store *s, const struct store_password_token *t)
{
    return CALL(s, password_token_insert, t);
}

int store_password_token_find(struct store *s, const uint8_t *hash,
                              struct store_password_token *out)
{
    return CALL(s, password_token_find, hash, out);
}

int store_password_token_use(struct store *s, const uint8_t *hash, const char *password_hash,
                             int64_t at)
{
    return CALL(s, password_token_use, hash, password_hash, at);
}

int store_member_remove(struct store *s, const char *account_id, const char *user_id, int64_t at)
{
    return CALL(s, member_remove, account_id, user_id, at);
}

int store_sessions_delete_others(struct store *s, const char *user_id, const uint8_t *keep)
{
    return CALL(s, sessions_delete_others, user_id, keep);
}

int store_key_count_working(struct store *s, const char *account_id, int64_t now, int64_t *count)
{
    return CALL(s, key_count_working, account_id, now, count);
}

int store_throttle_get(struct store *s, const char *kind, const char *key,
                       struct store_throttle *out)
{
    return CALL(s, throttle_get, kind, key, out);
}

int store_throttle_hit(struct store *s, const char *kind, const char *key, int64_t now,
                       int64_t window, struct store_throttle *out)
{
    return CALL(s, throttle_hit, kind, key, now, window, out);
}

int store_throttle_refuse(struct store *s, const char *kind, const char *key, int64_t *refused)
{
    return CALL(s, throttle_refuse, kind, key, refused);
}

int store_throttle_clear(struct store *s, const char *kind, const char *key)
{
    return CALL(s, throttle_clear, kind, key);
}

int store_prune(struct store *s, const struct store_retention *r, int64_t now, int64_t *deleted)
{
    return CALL(s, prune, r, now, deleted);
}

int store_audit_add(struct store *s, const struct store_audit *e)
{
    return CALL(s, audit_add, e);
}

int store_audit_list(struct store *s, const char *account_id, int64_t before_id, int limit,
                     store_audit_cb cb, void *ud)
{
    return CALL(s, audit_list, account_id, before_id, limit, cb, ud);
}

int store_keys_load(struct store *s, int64_t today, struct store_cursor *cursor,
                    store_key_load_cb cb, void *ud)
{
    return CALL(s, keys_load, today, cursor, cb, ud);
}

int store_key_changes(struct store *s, int64_t today, struct store_cursor *cursor,
                      store_key_load_cb cb, void *ud)
{
    return CALL(s, key_changes, today, cursor, cb, ud);
}

int store_changes_fd(struct store *s)
{
    return s->ops->changes_fd(s);
}

void store_changes_drain(struct store *s)
{
    s->ops->changes_drain(s);
}

int store_usage_add(struct store *s, const struct store_usage *u, size_t n)
{
    return CALL(s, usage_add, u, n);
}

int store_account_set_plan(struct store *s, const char *id, const char *plan)
{
    return CALL(s, account_set_plan, id, plan);
}

int store_account_set_quota(struct store *s, const char *id, int64_t requests, int64_t tokens)
{
    return CALL(s, account_set_quota, id, requests, tokens);
}

int store_accounts_load(struct store *s, struct store_cursor *cursor, store_account_cb cb, void *ud)
{
    return CALL(s, accounts_load, cursor, cb, ud);
}

int store_account_changes(struct store *s, struct store_cursor *cursor, store_account_cb cb,
                          void *ud)
{
    return CALL(s, account_changes, cursor, cb, ud);
}

int store_ledger_add(struct store *s, const struct store_ledger_row *rows, size_t n,
                     uint8_t *outcome)
{
    if (fault_hit(FAULT_LEDGER))
        return injected(s);
    return CALL(s, ledger_add, rows, n, outcome);
}

int store_ledger_void(struct store *s, const char *request_id, int64_t at_ms, int *was_billed)
{
    return CALL(s, ledger_void, request_id, at_ms, was_billed);
}

int store_usage_month_totals(struct store *s, int64_t month, store_month_total_cb cb, void *ud)
{
    return CALL(s, usage_month_totals, month, cb, ud);
}

int store_usage_sums(struct store *s, const char *account_id, int64_t month_from, int64_t month_to,
                     store_usage_sum_cb cb, void *ud)
{
    return CALL(s, usage_sums, account_id, month_from, month_to, cb, ud);
}
