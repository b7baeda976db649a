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

int store_is_postgres(const char *url)
{
    return strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0;
}

/* Opens s's backend at `where` with options, and migrates when asked; NULL (s freed) when either
 * fails. */
static struct store *opened(struct store *s, const char *where, const char *options, int migrate,
                            char *err, size_t errsize)
{
    if (s->ops->open(s, where, options) != STORE_OK || (migrate && store_migrate(s) != STORE_OK)) {
        snprintf(err, errsize, "%s", s->errmsg);
        store_close(s);
        return NULL;
    }
    return s;
}

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

    if (store_is_postgres(url)) {
        /* libpq reads the whole URL, its own parameters after the '?' included. */
        if (strlen(url) >= sizeof(s->url)) {
            snprintf(err, errsize, "the database URL is too long");
            return NULL;
        }
        s = kn_calloc(1, sizeof(*s));
        s->ops = &store_pg_ops;
        kn_strlcpy(s->url, url, sizeof(s->url));
        return opened(s, url, options, migrate, err, errsize);
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
    return opened(s, where, opts[0] != '\0' ? opts : NULL, migrate, err, errsize);
}

int store_exists(const char *url, char *where, size_t size)
{
    struct stat st;
    char path[4096];

    if (store_is_postgres(url)) {
        /* A database that libpq cannot find is an error when it is opened: nothing to create. */
        if (where != NULL)
            store_url_redacted(url, where, size);
        return 1;
    }
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

void store_url_redacted(const char *url, char *out, size_t size)
{
    size_t o = 0;
    const char *p = url, *auth_end = NULL;

    if (size == 0)
        return;
    if (store_is_postgres(url)) {
        /* postgresql://user:password@host/db: the password goes, the user stays. */
        const char *start = strstr(url, "://") + 3;
        const char *at = start + strcspn(start, "@/?");
        const char *colon = memchr(start, ':', (size_t)(at - start));
        if (*at == '@' && colon != NULL && colon + 1 < at)
            auth_end = at;
        for (; *p != '\0' && o + 1 < size; p++) {
            if (auth_end != NULL && p == colon + 1) {
                for (const char *m = "***"; *m != '\0' && o + 1 < size; m++)
                    out[o++] = *m;
                p = auth_end - 1;
                continue;
            }
            /* A password given as a parameter: password=...&. */
            if ((*p == '?' || *p == '&') && strncmp(p + 1, "password=", 9) == 0) {
                for (const char *m = p[0] == '?' ? "?password=***" : "&password=***";
                     *m != '\0' && o + 1 < size; m++)
                    out[o++] = *m;
                p += 9 + strcspn(p + 10, "&");
                continue;
            }
            out[o++] = *p;
        }
        out[o] = '\0';
        return;
    }
    kn_strlcpy(out, url, size);
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
#define CALL_ARGS(s, op, args) (fault_hit(FAULT_STORE) ? injected(s) : (s)->ops->op args)

#define WRAPPER(name, params, args)                                                                \
    int store_##name params                                                                        \
    {                                                                                              \
        return CALL_ARGS(s, name, args);                                                           \
    }
STORE_OPS(WRAPPER)
#undef WRAPPER

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

int store_feed_stale(int64_t cursor, int64_t oldest, int64_t newest)
{
    if (newest < 0)
        return cursor > 0;
    return oldest > cursor + 1 || newest < cursor;
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

struct account_array {
    struct store_account *a;
    size_t n, cap;
};

static int add_account(void *ud, const struct store_account *a)
{
    struct account_array *l = ud;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->a = kn_realloc(l->a, l->cap * sizeof(*l->a));
    }
    l->a[l->n++] = *a;
    return 0;
}

static int by_creation(const void *x, const void *y)
{
    const struct store_account *a = x, *b = y;
    return a->created_at != b->created_at ? (a->created_at < b->created_at ? -1 : 1)
                                          : strcmp(a->id, b->id);
}

int store_accounts_list(struct store *s, struct store_account **out, size_t *n)
{
    struct account_array l = {0};
    struct store_cursor cur;
    int r = store_accounts_load(s, &cur, add_account, &l);

    if (r == STORE_OK && l.n > 1)
        qsort(l.a, l.n, sizeof(*l.a), by_creation);
    *out = l.a;
    *n = l.n;
    return r;
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

int store_changes_fd(struct store *s)
{
    return s->ops->changes_fd(s);
}

void store_changes_drain(struct store *s)
{
    s->ops->changes_drain(s);
}

int store_ledger_add(struct store *s, const struct store_ledger_row *rows, size_t n,
                     uint8_t *outcome)
{
    if (fault_hit(FAULT_LEDGER))
        return injected(s);
    return CALL(s, ledger_add, rows, n, outcome);
}
