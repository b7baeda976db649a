/* The SQLite backend: one file in WAL mode, so that readers (the CLI, the server's reads) never
 * wait for the writer. */
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/util.h"
#include "store/migrations.h"
#include "store/sqlite_checkpoint.h"
#include "store/store.h"

void store_set_backend__(struct store *s, void *backend);

/* A key's columns (0 to 13, read by read_key); KEY_TODAY is its request count on day ?1. */
#define KEY_COLUMNS                                                                                \
    "k.id, k.account_id, k.name, k.mode, k.environment, k.hash, k.hint, k.created_at, "            \
    "k.created_by, coalesce(k.last_used_at, 0), coalesce(k.expires_at, 0), "                       \
    "coalesce(k.revoked_at, 0), coalesce(k.rolled_to, ''), k.ip_allowlist"
#define KEY_TODAY                                                                                  \
    "coalesce((SELECT requests FROM key_usage_daily d WHERE d.key_id = k.id AND d.day = ?1), 0)"

#define ACCOUNT_COLUMNS                                                                            \
    "id, email, created_at, coalesce(plan, ''), coalesce(quota_requests, -2), "                    \
    "coalesce(quota_tokens, -2)"

/* Every statement, prepared on first use (see run). */
enum {
    DS_ACCOUNT_INSERT,
    DS_ACCOUNT_FIND,
    DS_KEY_INSERT,
    DS_KEY_FIND_ID,
    DS_KEY_FIND_HASH,
    DS_KEY_LIST,
    DS_KEY_REVOKE,
    DS_KEY_EXPIRE,
    DS_KEYS_LOAD,
    DS_KEY_CHANGES,
    DS_MAX_SEQ,
    DS_USAGE_DAY,
    DS_USAGE_LAST_USED,
    DS_KEY_RENAME,
    DS_KEY_ALLOWLIST,
    DS_KEY_ROLL_MARK,
    DS_KEY_EXISTS,
    DS_KEY_COUNT,
    DS_AUDIT_ADD,
    DS_AUDIT_LIST,
    DS_USER_INSERT,
    DS_USER_FIND,
    DS_USER_PASSWORD,
    DS_MEMBER_INSERT,
    DS_MEMBER_FIRST,
    DS_MEMBER_FIND,
    DS_MEMBERS_LIST,
    DS_SESSION_INSERT,
    DS_SESSION_FIND,
    DS_SESSION_TOUCH,
    DS_SESSION_DELETE,
    DS_SESSIONS_DELETE_USER,
    DS_INVITE_INSERT,
    DS_INVITE_FIND,
    DS_INVITE_ACCEPT,
    DS_INVITES_LIST,
    DS_INVITE_FAIL,
    DS_INVITE_CANCEL,
    DS_INVITES_CANCEL_EMAIL,
    DS_INVITES_PENDING,
    DS_PWTOKEN_INSERT,
    DS_PWTOKEN_FIND,
    DS_PWTOKEN_USE,
    DS_PWTOKENS_VOID,
    DS_MEMBER_REMOVE,
    DS_SESSIONS_DELETE_MEMBER,
    DS_SESSIONS_DELETE_OTHERS,
    DS_KEY_COUNT_WORKING,
    DS_THROTTLE_GET,
    DS_THROTTLE_HIT,
    DS_THROTTLE_REFUSE,
    DS_THROTTLE_CLEAR,
    DS_ACCOUNT_SET_PLAN,
    DS_ACCOUNT_SET_QUOTA,
    DS_ACCOUNTS_LOAD,
    DS_ACCOUNT_MAX_SEQ,
    DS_ACCOUNT_CHANGES,
    DS_LEDGER_INSERT,
    DS_LEDGER_VOIDED,
    DS_LEDGER_VOID,
    DS_ROLLUP_ADD,
    DS_MONTH_TOTALS,
    DS_USAGE_SUMS,
    DS__COUNT
};

struct sqlite_backend {
    sqlite3 *db;
    sqlite3_stmt *dash[DS__COUNT];
    sqlite3_stmt *prune[7];
    struct checkpointer *ckpt;
};

static sqlite3 *db_of(struct store *s)
{
    return ((struct sqlite_backend *)store_backend(s))->db;
}

/* What a SQLite result code (extended) means to a caller. A read transaction that lost the race
 * to write (SQLITE_BUSY_SNAPSHOT) is worth retrying at once. A lock that another writer held past
 * the busy timeout (plain SQLITE_BUSY, after 5 s of waiting) is not: the store is as good as
 * unavailable, like a failing disk or file. Anything else is an error. */
static int status_of(int rc)
{
    if (rc == SQLITE_BUSY_SNAPSHOT || (rc & 0xff) == SQLITE_LOCKED)
        return STORE_RETRY;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_FULL:
    case SQLITE_NOMEM:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
        return STORE_UNAVAILABLE;
    default:
        return STORE_ERROR;
    }
}

static int fail(struct store *s, const char *what)
{
    return store_set_error(s, status_of(sqlite3_extended_errcode(db_of(s))), "%s: %s", what,
                           sqlite3_errmsg(db_of(s)));
}

static int exec(struct store *s, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db_of(s), sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        rc = store_set_error(s, status_of(sqlite3_extended_errcode(db_of(s))), "%s",
                             msg != NULL ? msg : "unknown SQLite error");
        sqlite3_free(msg);
        return rc;
    }
    return STORE_OK;
}

static int start_checkpointer(struct store *s);

/* The change feed's wake-up: one eventfd for the process, signalled whenever one of its
 * connections commits a change to a key or an account (other processes nudge the server through
 * its control socket instead). */
static pthread_once_t changes_once = PTHREAD_ONCE_INIT;
static int changes_fd = -1;

static void changes_init(void)
{
    changes_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

static int sqlite_changes_fd(struct store *s)
{
    (void)s;
    pthread_once(&changes_once, changes_init);
    return changes_fd;
}

static void sqlite_changes_drain(struct store *s)
{
    uint64_t v;
    if (sqlite_changes_fd(s) >= 0 && read(changes_fd, &v, sizeof(v)) < 0) {
        /* Nothing was pending. */
    }
}

/* Returns status after signalling readers of the change feed when it is STORE_OK. */
static int changed(struct store *s, int status)
{
    uint64_t one = 1;
    if (status == STORE_OK && sqlite_changes_fd(s) >= 0 &&
        write(changes_fd, &one, sizeof(one)) < 0) {
        /* The counter is full: readers have a wake-up pending anyway. */
    }
    return status;
}

/* The newest migration this build knows. */
static int known_version(void)
{
    return store_migrations_count > 0 ? store_migrations[store_migrations_count - 1].version : 0;
}

/* Refuses a database migrated by a newer Konnect: this build would misread its tables. */
static int check_version(struct store *s, const char *path)
{
    sqlite3_stmt *q = NULL;
    int version = 0;

    if (sqlite3_prepare_v2(db_of(s), "SELECT coalesce(max(version), 0) FROM schema_migrations", -1,
                           &q, NULL) != SQLITE_OK) {
        sqlite3_finalize(q);
        return STORE_OK; /* A new database: nothing migrated yet. */
    }
    if (sqlite3_step(q) == SQLITE_ROW)
        version = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (version > known_version())
        return store_set_error(s, STORE_ERROR,
                               "the database %s was migrated by a newer Konnect (schema version "
                               "%d; this one knows up to %d): use that version, or a newer one",
                               path, version, known_version());
    return STORE_OK;
}

static int sqlite_open(struct store *s, const char *path, const char *options)
{
    struct sqlite_backend *b = kn_calloc(1, sizeof(*b));
    int full = 0, background = 0, r;

    store_set_backend__(s, b);
    /* Options first: a typo must not open (and create) the database before it is refused. */
    for (const char *o = options; o != NULL && *o != '\0';) {
        size_t n = strcspn(o, "&");
        if (n == 9 && strncmp(o, "sync=full", 9) == 0)
            full = 1;
        else if (n == 11 && strncmp(o, "sync=normal", 11) == 0)
            full = 0;
        else if (n == 21 && strncmp(o, "checkpoint=background", 21) == 0)
            background = 1;
        else if (n == 17 && strncmp(o, "checkpoint=inline", 17) == 0)
            background = 0;
        else
            return store_set_error(s, STORE_ERROR,
                                   "unknown SQLite option \"%.*s\" (known: sync=full, "
                                   "sync=normal, checkpoint=background, checkpoint=inline)",
                                   (int)(n > 64 ? 64 : n), o);
        o += n + (o[n] == '&');
    }
    if ((r = sqlite3_open_v2(path, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL)) !=
        SQLITE_OK)
        return store_set_error(s, status_of(r), "cannot open database %s: %s", path,
                               b->db != NULL ? sqlite3_errmsg(b->db) : "out of memory");
    sqlite3_busy_timeout(b->db, 5000);
    /* In WAL mode, NORMAL writes each commit to the log without waiting for the disk; FULL waits
     * for it (fsync) at every commit. */
    if ((r = exec(s, full ? "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
                            "PRAGMA foreign_keys = ON;"
                          : "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
                            "PRAGMA foreign_keys = ON;")) != STORE_OK)
        return store_set_error(s, r, "cannot open database %s: %s", path, store_errmsg(s));
    if ((r = check_version(s, path)) != STORE_OK)
        return r;
    return background ? start_checkpointer(s) : STORE_OK;
}

static void sqlite_close(struct store *s)
{
    struct sqlite_backend *b = store_backend(s);
    if (b->ckpt != NULL)
        checkpointer_stop(b->ckpt);
    for (int i = 0; i < DS__COUNT; i++)
        sqlite3_finalize(b->dash[i]);
    for (size_t i = 0; i < sizeof(b->prune) / sizeof(b->prune[0]); i++)
        sqlite3_finalize(b->prune[i]);
    sqlite3_close(b->db);
    free(b);
    store_set_backend__(s, NULL);
}

static int sqlite_migrate(struct store *s)
{
    sqlite3_stmt *q;
    int current = 0;

    if (exec(s, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at INTEGER NOT NULL)") != STORE_OK)
        return STORE_ERROR;
    for (size_t i = 0; i < store_migrations_count; i++) {
        const struct store_migration *m = &store_migrations[i];
        if (exec(s, "BEGIN IMMEDIATE") != STORE_OK)
            return STORE_ERROR;
        if (sqlite3_prepare_v2(db_of(s), "SELECT coalesce(max(version), 0) FROM schema_migrations",
                               -1, &q, NULL) != SQLITE_OK)
            goto fail;
        current = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : 0;
        sqlite3_finalize(q);
        if (m->version <= current) {
            exec(s, "COMMIT");
            continue;
        }
        if (exec(s, m->sql) != STORE_OK) {
            char msg[512];
            snprintf(msg, sizeof(msg), "migration %s failed: %s", m->name, store_errmsg(s));
            exec(s, "ROLLBACK");
            return store_set_error(s, STORE_ERROR, "%s", msg);
        }
        if (sqlite3_prepare_v2(db_of(s),
                               "INSERT INTO schema_migrations(version, name, applied_at) "
                               "VALUES (?1, ?2, ?3)",
                               -1, &q, NULL) != SQLITE_OK)
            goto fail;
        sqlite3_bind_int(q, 1, m->version);
        sqlite3_bind_text(q, 2, m->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 3, kn_unix_now());
        int rc = sqlite3_step(q);
        sqlite3_finalize(q);
        if (rc != SQLITE_DONE)
            goto fail;
        if (exec(s, "COMMIT") != STORE_OK)
            return STORE_ERROR;
    }
    return STORE_OK;
fail:
    fail(s, "migration");
    exec(s, "ROLLBACK");
    return STORE_ERROR;
}

/* Prepares (once) and runs a statement with arguments described by fmt: 't' text, 'i' int64,
 * 'h' a STORE_HASH_LEN blob. Leaves the statement positioned on its first row when there is one;
 * the caller reads it and resets. Returns the sqlite3_step code, or the preparation's error code
 * when the statement cannot be prepared (then *cache stays NULL: sqlite3_reset accepts that, and
 * callers read columns only after SQLITE_ROW). */
static int run(struct store *s, sqlite3_stmt **cache, const char *sql, const char *fmt, ...)
{
    va_list ap;
    int i = 1, rc;

    if (*cache == NULL && (rc = sqlite3_prepare_v3(db_of(s), sql, -1, SQLITE_PREPARE_PERSISTENT,
                                                   cache, NULL)) != SQLITE_OK)
        return rc;
    sqlite3_reset(*cache);
    sqlite3_clear_bindings(*cache);
    va_start(ap, fmt);
    for (const char *f = fmt; *f != '\0'; f++, i++) {
        switch (*f) {
        case 't':
            sqlite3_bind_text(*cache, i, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
            break;
        case 'i':
            sqlite3_bind_int64(*cache, i, va_arg(ap, int64_t));
            break;
        case 'h':
            sqlite3_bind_blob(*cache, i, va_arg(ap, const uint8_t *), STORE_HASH_LEN,
                              SQLITE_TRANSIENT);
            break;
        }
    }
    va_end(ap);
    return sqlite3_step(*cache);
}

#define RUN(s, name, sql, ...)                                                                     \
    run((s), &((struct sqlite_backend *)store_backend(s))->dash[DS_##name], sql, __VA_ARGS__)
#define STMT(s, name) (((struct sqlite_backend *)store_backend(s))->dash[DS_##name])

/* 1 when the statement that just failed broke a uniqueness constraint (a row that exists
 * already), 0 for any other failure, another constraint included. */
static int duplicate(struct store *s, int rc)
{
    int ext = sqlite3_extended_errcode(db_of(s));
    return rc == SQLITE_CONSTRAINT &&
           (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY);
}

/* Resets q and turns a sqlite3_step code into a status. */
static int done(struct store *s, sqlite3_stmt *q, int rc, const char *what)
{
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
        sqlite3_reset(q);
        return STORE_OK;
    }
    /* The extended code is read before the reset, which would report the failure again. */
    if (duplicate(s, rc)) {
        sqlite3_reset(q);
        return store_set_error(s, STORE_CONFLICT, "%s: already exists", what);
    }
    int r = fail(s, what);
    sqlite3_reset(q);
    return r;
}

/* For a statement that reads one row: STORE_OK with the row read by `read` into out (when
 * there was one), STORE_NOT_FOUND with the message `none` (when there was none). */
static int one_row(struct store *s, sqlite3_stmt *q, int rc, void (*read)(sqlite3_stmt *, void *),
                   void *out, const char *none, const char *what)
{
    if (rc == SQLITE_ROW)
        read(q, out);
    sqlite3_reset(q);
    if (rc == SQLITE_ROW)
        return STORE_OK;
    if (rc == SQLITE_DONE)
        return store_set_error(s, STORE_NOT_FOUND, "%s", none);
    return fail(s, what);
}

/* Calls read(q, row) then cb(ud, row) for each row, from the one rc says the statement is on;
 * returning non-zero from cb ends the walk. */
static int each_row(struct store *s, sqlite3_stmt *q, int rc, void (*read)(sqlite3_stmt *, void *),
                    void *row, int (*cb)(void *ud, void *row, sqlite3_stmt *q), void *ud,
                    const char *what)
{
    for (; rc == SQLITE_ROW; rc = sqlite3_step(q)) {
        read(q, row);
        if (cb(ud, row, q) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? STORE_OK : fail(s, what);
}

static int begin(struct store *s)
{
    return exec(s, "BEGIN IMMEDIATE");
}

/* Commits, or rolls back and returns status when status is not STORE_OK (the error already
 * recorded). */
static int end(struct store *s, int status)
{
    if (status == STORE_OK && (status = exec(s, "COMMIT")) == STORE_OK)
        return STORE_OK;
    char msg[512];
    kn_strlcpy(msg, store_errmsg(s), sizeof(msg));
    exec(s, "ROLLBACK");
    return store_set_error(s, status, "%s", msg);
}

/* Ends a read transaction: one left open would keep this connection on an old snapshot, blind to
 * every later change. Returns status, or the failure to end it. */
static int end_read(struct store *s, int status)
{
    int r = exec(s, "COMMIT");
    if (r == STORE_OK)
        return status;
    exec(s, "ROLLBACK");
    return status != STORE_OK ? status : r;
}

static int sqlite_ping(struct store *s)
{
    int rc = RUN(s, MAX_SEQ, "SELECT coalesce(max(seq), 0) FROM key_changes", "");
    return done(s, STMT(s, MAX_SEQ), rc, "ping");
}

static int sqlite_account_insert(struct store *s, const struct store_account *a)
{
    int rc =
        RUN(s, ACCOUNT_INSERT, "INSERT INTO accounts(id, email, created_at) VALUES (?1, ?2, ?3)",
            "tti", a->id, a->email, a->created_at);
    if (duplicate(s, rc)) {
        sqlite3_reset(STMT(s, ACCOUNT_INSERT));
        return store_set_error(s, STORE_CONFLICT, "an account with email %s already exists",
                               a->email);
    }
    return done(s, STMT(s, ACCOUNT_INSERT), rc, "cannot create account");
}

static void copy_text(char *dst, size_t size, sqlite3_stmt *q, int col)
{
    const unsigned char *t = sqlite3_column_text(q, col);
    kn_strlcpy(dst, t != NULL ? (const char *)t : "", size);
}

static void read_account(sqlite3_stmt *q, void *out)
{
    struct store_account *a = out;
    memset(a, 0, sizeof(*a));
    copy_text(a->id, sizeof(a->id), q, 0);
    copy_text(a->email, sizeof(a->email), q, 1);
    a->created_at = sqlite3_column_int64(q, 2);
    copy_text(a->plan, sizeof(a->plan), q, 3);
    a->quota_requests = sqlite3_column_int64(q, 4);
    a->quota_tokens = sqlite3_column_int64(q, 5);
}

static int sqlite_account_find(struct store *s, const char *email_or_id, struct store_account *out)
{
    int rc = RUN(s, ACCOUNT_FIND,
                 "SELECT " ACCOUNT_COLUMNS " FROM accounts WHERE email = lower(?1) OR id = ?1", "t",
                 email_or_id);
    char none[STORE_EMAIL_MAX + 16];
    snprintf(none, sizeof(none), "no account %s", email_or_id);
    return one_row(s, STMT(s, ACCOUNT_FIND), rc, read_account, out, none, "cannot read account");
}

/* Writes an audit entry inside the caller's transaction (none when e is NULL). */
static int audit_row(struct store *s, const struct store_audit *e)
{
    if (e == NULL)
        return STORE_OK;
    int rc = RUN(s, AUDIT_ADD,
                 "INSERT INTO audit_log(at, account_id, actor, action, target, ip, result, "
                 "detail) VALUES (?1, nullif(?2, ''), ?3, ?4, ?5, nullif(?6, ''), ?7, ?8)",
                 "ittttttt", e->at, e->account_id, e->actor, e->action, e->target, e->ip, e->result,
                 e->detail);
    return done(s, STMT(s, AUDIT_ADD), rc, "cannot write the audit log");
}

/* Inserts one key row inside the caller's transaction. */
static int insert_key_row(struct store *s, const struct store_key *k)
{
    int rc = RUN(s, KEY_INSERT,
                 "INSERT INTO api_keys(id, account_id, name, mode, environment, hash, hint, "
                 "created_at, created_by, expires_at, ip_allowlist) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, nullif(?10, 0), ?11)",
                 "tttttht"
                 "itit",
                 k->id, k->account_id, k->name, k->mode, k->environment, k->hash, k->hint,
                 k->created_at, k->created_by, k->expires_at, k->ip_allowlist);
    return done(s, STMT(s, KEY_INSERT), rc, "cannot create key");
}

static int sqlite_key_insert(struct store *s, const struct store_key *keys, size_t n,
                             const struct store_audit *audit)
{
    int r;

    /* Bulk loads touch random places of two indexes (ids and hashes are random): give them a
     * page cache that holds those indexes, or every insert reads and writes pages. */
    if (n > 1000)
        exec(s, "PRAGMA cache_size = -262144");
    if ((r = begin(s)) != STORE_OK)
        return r;
    for (size_t i = 0; i < n && r == STORE_OK; i++)
        r = insert_key_row(s, &keys[i]);
    if (r == STORE_OK)
        r = audit_row(s, audit);
    return changed(s, end(s, r));
}

static void read_count(sqlite3_stmt *q, void *out)
{
    *(int64_t *)out = sqlite3_column_int64(q, 0);
}

static int sqlite_key_count(struct store *s, int64_t *count)
{
    int rc = RUN(s, KEY_COUNT, "SELECT count(*) FROM api_keys", "");
    return one_row(s, STMT(s, KEY_COUNT), rc, read_count, count, "no count", "cannot count keys");
}

static void read_key(sqlite3_stmt *q, void *out)
{
    struct store_key *k = out;
    const void *hash;

    memset(k, 0, sizeof(*k));
    copy_text(k->id, sizeof(k->id), q, 0);
    copy_text(k->account_id, sizeof(k->account_id), q, 1);
    copy_text(k->name, sizeof(k->name), q, 2);
    copy_text(k->mode, sizeof(k->mode), q, 3);
    copy_text(k->environment, sizeof(k->environment), q, 4);
    hash = sqlite3_column_blob(q, 5);
    if (hash != NULL && sqlite3_column_bytes(q, 5) == STORE_HASH_LEN)
        memcpy(k->hash, hash, STORE_HASH_LEN);
    copy_text(k->hint, sizeof(k->hint), q, 6);
    k->created_at = sqlite3_column_int64(q, 7);
    copy_text(k->created_by, sizeof(k->created_by), q, 8);
    k->last_used_at = sqlite3_column_int64(q, 9);
    k->expires_at = sqlite3_column_int64(q, 10);
    k->revoked_at = sqlite3_column_int64(q, 11);
    copy_text(k->rolled_to, sizeof(k->rolled_to), q, 12);
    copy_text(k->ip_allowlist, sizeof(k->ip_allowlist), q, 13);
}

static int sqlite_key_find(struct store *s, const char *id, const uint8_t *hash,
                           struct store_key *out)
{
    int rc =
        id != NULL
            ? RUN(s, KEY_FIND_ID, "SELECT " KEY_COLUMNS " FROM api_keys k WHERE k.id = ?1", "t", id)
            : RUN(s, KEY_FIND_HASH, "SELECT " KEY_COLUMNS " FROM api_keys k WHERE k.hash = ?1", "h",
                  hash);
    return one_row(s, id != NULL ? STMT(s, KEY_FIND_ID) : STMT(s, KEY_FIND_HASH), rc, read_key, out,
                   "no such key", "cannot read key");
}

/* A walk over keys with one count beside each (column 14), for the two callback types. */
struct key_walk {
    store_key_list_cb list;
    store_key_load_cb load;
    void *ud;
};

static int key_walk_one(void *ud, void *row, sqlite3_stmt *q)
{
    struct key_walk *w = ud;
    int64_t count = sqlite3_column_int64(q, 14);
    return w->list != NULL ? w->list(w->ud, row, (uint64_t)count)
                           : w->load(w->ud, row, (uint32_t)count);
}

static int sqlite_key_list(struct store *s, const char *account_id, store_key_list_cb cb, void *ud)
{
    struct key_walk w = {cb, NULL, ud};
    struct store_key k;
    int rc = RUN(s, KEY_LIST,
                 "SELECT " KEY_COLUMNS ", coalesce((SELECT sum(requests) FROM key_usage_daily d "
                 "WHERE d.key_id = k.id), 0) FROM api_keys k WHERE k.account_id = ?1 "
                 "ORDER BY k.created_at, k.rowid",
                 "t", account_id);
    return each_row(s, STMT(s, KEY_LIST), rc, read_key, &k, key_walk_one, &w, "cannot read keys");
}

/* Ends a one-statement key change: STORE_NOT_FOUND when it changed no row; else writes the audit
 * entry and commits. */
static int end_key_change(struct store *s, sqlite3_stmt *q, int rc, const struct store_audit *audit)
{
    int r = done(s, q, rc, "cannot update key");
    if (r == STORE_OK && sqlite3_changes(db_of(s)) == 0)
        r = store_set_error(s, STORE_NOT_FOUND, "no such key");
    if (r == STORE_OK)
        r = audit_row(s, audit);
    return changed(s, end(s, r));
}

static int sqlite_key_revoke(struct store *s, const char *id, int64_t at, const char *actor,
                             const struct store_audit *audit)
{
    int r = begin(s);
    if (r != STORE_OK)
        return r;
    int rc = RUN(s, KEY_REVOKE,
                 "UPDATE api_keys SET revoked_by = coalesce(revoked_by, ?3), "
                 "revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                 "tit", id, at, actor);
    return end_key_change(s, STMT(s, KEY_REVOKE), rc, audit);
}

static int sqlite_key_expire(struct store *s, const char *id, int64_t at,
                             const struct store_audit *audit)
{
    int r = begin(s);
    if (r != STORE_OK)
        return r;
    int rc = RUN(s, KEY_EXPIRE, "UPDATE api_keys SET expires_at = nullif(?2, 0) WHERE id = ?1",
                 "ti", id, at);
    return end_key_change(s, STMT(s, KEY_EXPIRE), rc, audit);
}

static int sqlite_key_rename(struct store *s, const char *id, const char *name,
                             const struct store_audit *audit)
{
    int r = begin(s);
    if (r != STORE_OK)
        return r;
    int rc = RUN(s, KEY_RENAME, "UPDATE api_keys SET name = ?2 WHERE id = ?1", "tt", id, name);
    return end_key_change(s, STMT(s, KEY_RENAME), rc, audit);
}

static int sqlite_key_set_allowlist(struct store *s, const char *id, const char *allowlist,
                                    const struct store_audit *audit)
{
    int r = begin(s);
    if (r != STORE_OK)
        return r;
    int rc = RUN(s, KEY_ALLOWLIST, "UPDATE api_keys SET ip_allowlist = ?2 WHERE id = ?1", "tt", id,
                 allowlist);
    return end_key_change(s, STMT(s, KEY_ALLOWLIST), rc, audit);
}

/* The change feed. SQLite has one writer at a time, so a change-log row's sequence number is
 * also its commit order: the cursor is the highest number read (v[0]), and a reader never
 * misses a row by reading `seq > v[0]`. */
static int walk_changes(struct store *s, sqlite3_stmt *q, int rc, struct store_cursor *c,
                        int (*one)(void *ud, void *row, sqlite3_stmt *q), void *ud, void *row,
                        void (*read)(sqlite3_stmt *, void *), int seq_col, const char *what)
{
    int64_t seq = c->v[0];

    for (; rc == SQLITE_ROW; rc = sqlite3_step(q)) {
        read(q, row);
        if (sqlite3_column_int64(q, seq_col) > seq)
            seq = sqlite3_column_int64(q, seq_col);
        if (one(ud, row, q) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return fail(s, what);
    c->v[0] = seq;
    return STORE_OK;
}

/* Reads the newest change-log number (of key_changes or account_changes) into c, inside the
 * caller's read transaction, before the rows it goes with are read. */
static int cursor_at_newest(struct store *s, int keys, struct store_cursor *c)
{
    int rc = keys
                 ? RUN(s, MAX_SEQ, "SELECT coalesce(max(seq), 0) FROM key_changes", "")
                 : RUN(s, ACCOUNT_MAX_SEQ, "SELECT coalesce(max(seq), 0) FROM account_changes", "");
    memset(c, 0, sizeof(*c));
    return one_row(s, keys ? STMT(s, MAX_SEQ) : STMT(s, ACCOUNT_MAX_SEQ), rc, read_count, &c->v[0],
                   "no change log", "cannot read the change log");
}

static int sqlite_keys_load(struct store *s, int64_t today, struct store_cursor *cursor,
                            store_key_load_cb cb, void *ud)
{
    struct key_walk w = {NULL, cb, ud};
    struct store_cursor c;
    struct store_key k;
    int r;

    /* One read transaction, so that the cursor matches the keys read. */
    if ((r = exec(s, "BEGIN")) != STORE_OK)
        return r;
    if ((r = cursor_at_newest(s, 1, &c)) == STORE_OK) {
        int rc =
            RUN(s, KEYS_LOAD, "SELECT " KEY_COLUMNS ", " KEY_TODAY " FROM api_keys k", "i", today);
        r = each_row(s, STMT(s, KEYS_LOAD), rc, read_key, &k, key_walk_one, &w, "cannot read keys");
    }
    r = end_read(s, r);
    if (r == STORE_OK)
        *cursor = c;
    return r;
}

static int sqlite_key_changes(struct store *s, int64_t today, struct store_cursor *cursor,
                              store_key_load_cb cb, void *ud)
{
    struct key_walk w = {NULL, cb, ud};
    struct store_key k;
    int rc = RUN(s, KEY_CHANGES,
                 "SELECT " KEY_COLUMNS ", " KEY_TODAY ", c.seq FROM key_changes c "
                 "JOIN api_keys k ON k.id = c.key_id WHERE c.seq > ?2 ORDER BY c.seq",
                 "ii", today, cursor->v[0]);
    return walk_changes(s, STMT(s, KEY_CHANGES), rc, cursor, key_walk_one, &w, &k, read_key, 15,
                        "cannot read key changes");
}

static int sqlite_usage_add(struct store *s, const struct store_usage *u, size_t n)
{
    int r;

    if (n == 0)
        return STORE_OK;
    if ((r = begin(s)) != STORE_OK)
        return r;
    for (size_t i = 0; i < n && r == STORE_OK; i++) {
        int rc = RUN(s, USAGE_DAY,
                     "INSERT INTO key_usage_daily(key_id, day, requests) VALUES (?1, ?2, ?3) "
                     "ON CONFLICT(key_id, day) DO UPDATE SET requests = requests + "
                     "excluded.requests",
                     "tii", u[i].key_id, u[i].day, (int64_t)u[i].requests);
        if ((r = done(s, STMT(s, USAGE_DAY), rc, "cannot record usage")) != STORE_OK)
            break;
        rc = RUN(s, USAGE_LAST_USED,
                 "UPDATE api_keys SET last_used_at = ?2 "
                 "WHERE id = ?1 AND coalesce(last_used_at, 0) < ?2",
                 "ti", u[i].key_id, u[i].last_used);
        r = done(s, STMT(s, USAGE_LAST_USED), rc, "cannot record usage");
    }
    return end(s, r);
}

static int sqlite_key_roll(struct store *s, const char *old_id, const struct store_key *repl,
                           int64_t old_expires_at, const struct store_audit *audit)
{
    int r, rc;

    if ((r = begin(s)) != STORE_OK)
        return r;
    rc = RUN(s, KEY_ROLL_MARK,
             "UPDATE api_keys SET rolled_to = ?2, expires_at = CASE WHEN expires_at "
             "IS NOT NULL AND expires_at < ?3 THEN expires_at ELSE ?3 END "
             "WHERE id = ?1 AND revoked_at IS NULL AND rolled_to IS NULL",
             "tti", old_id, repl->id, old_expires_at);
    if ((r = done(s, STMT(s, KEY_ROLL_MARK), rc, "cannot roll key")) != STORE_OK)
        return end(s, r);
    if (sqlite3_changes(db_of(s)) == 0) {
        rc = RUN(s, KEY_EXISTS, "SELECT 1 FROM api_keys WHERE id = ?1", "t", old_id);
        if ((r = done(s, STMT(s, KEY_EXISTS), rc, "cannot roll key")) == STORE_OK)
            r = rc == SQLITE_ROW
                    ? store_set_error(s, STORE_CONFLICT, "the key is revoked or was already rolled")
                    : store_set_error(s, STORE_NOT_FOUND, "no such key");
        return end(s, r);
    }
    if ((r = insert_key_row(s, repl)) == STORE_OK)
        r = audit_row(s, audit);
    return changed(s, end(s, r));
}

static int sqlite_audit_add(struct store *s, const struct store_audit *e)
{
    return audit_row(s, e);
}

static void read_audit(sqlite3_stmt *q, void *out)
{
    struct store_audit *e = out;
    memset(e, 0, sizeof(*e));
    e->id = sqlite3_column_int64(q, 0);
    e->at = sqlite3_column_int64(q, 1);
    copy_text(e->account_id, sizeof(e->account_id), q, 2);
    copy_text(e->actor, sizeof(e->actor), q, 3);
    copy_text(e->action, sizeof(e->action), q, 4);
    copy_text(e->target, sizeof(e->target), q, 5);
    copy_text(e->ip, sizeof(e->ip), q, 6);
    copy_text(e->result, sizeof(e->result), q, 7);
    copy_text(e->detail, sizeof(e->detail), q, 8);
}

struct audit_walk {
    store_audit_cb cb;
    void *ud;
};

static int audit_one(void *ud, void *row, sqlite3_stmt *q)
{
    struct audit_walk *w = ud;
    (void)q;
    return w->cb(w->ud, row);
}

static int sqlite_audit_list(struct store *s, const char *account_id, int64_t before_id, int limit,
                             store_audit_cb cb, void *ud)
{
    struct audit_walk t = {cb, ud};
    struct store_audit e;
    int rc = RUN(s, AUDIT_LIST,
                 "SELECT id, at, coalesce(account_id, ''), actor, action, "
                 "coalesce(target, ''), coalesce(ip, ''), result, coalesce(detail, '') "
                 "FROM audit_log WHERE (?1 = '' OR account_id = ?1) AND (?2 = 0 OR id < ?2) "
                 "ORDER BY id DESC LIMIT ?3",
                 "tii", account_id, before_id, (int64_t)limit);
    return each_row(s, STMT(s, AUDIT_LIST), rc, read_audit, &e, audit_one, &t,
                    "cannot read the audit log");
}

/* ---- dashboard: users, memberships, sessions, invitations, sign-in failures ---------------- */

static int sqlite_user_find(struct store *s, const char *email_or_id, struct store_user *out);

static int insert_user(struct store *s, const struct store_user *u)
{
    int rc = RUN(s, USER_INSERT,
                 "INSERT INTO users(id, email, password_hash, created_at) "
                 "VALUES (?1, lower(?2), nullif(?3, ''), ?4)",
                 "ttti", u->id, u->email, u->password_hash, u->created_at);
    return done(s, STMT(s, USER_INSERT), rc, "cannot create user");
}

static int sqlite_account_insert_owned(struct store *s, const struct store_account *a,
                                       const struct store_user *u, int existing)
{
    struct store_user found;
    int rc;

    if ((rc = begin(s)) != STORE_OK)
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
    if ((rc = done(s, STMT(s, MEMBER_INSERT), rc, "cannot add the owner")) != STORE_OK)
        goto rollback;
    rc = STORE_OK;
rollback:
    return end(s, rc);
}

static void read_user(sqlite3_stmt *q, struct store_user *u)
{
    memset(u, 0, sizeof(*u));
    copy_text(u->id, sizeof(u->id), q, 0);
    copy_text(u->email, sizeof(u->email), q, 1);
    copy_text(u->password_hash, sizeof(u->password_hash), q, 2);
    u->created_at = sqlite3_column_int64(q, 3);
}

static int sqlite_user_find(struct store *s, const char *email_or_id, struct store_user *out)
{
    int rc = RUN(s, USER_FIND,
                 "SELECT id, email, coalesce(password_hash, ''), created_at FROM users "
                 "WHERE email = lower(?1) OR id = ?1",
                 "t", email_or_id);
    if (rc == SQLITE_ROW)
        read_user(STMT(s, USER_FIND), out);
    sqlite3_reset(STMT(s, USER_FIND));
    if (rc == SQLITE_ROW)
        return STORE_OK;
    return rc == SQLITE_DONE ? store_set_error(s, STORE_NOT_FOUND, "no such user")
                             : fail(s, "cannot read user");
}

/* Forgets a user's set-password links that were not used: a new password, or a newer link,
 * makes them worthless, and one left in a shell history or a chat must not open the user. */
static int void_password_tokens(struct store *s, const char *user_id)
{
    int rc =
        RUN(s, PWTOKENS_VOID, "DELETE FROM password_tokens WHERE user_id = ?1 AND used_at IS NULL",
            "t", user_id);
    return done(s, STMT(s, PWTOKENS_VOID), rc, "cannot void set-password links");
}

/* Inside a transaction. */
static int set_password(struct store *s, const char *user_id, const char *hash)
{
    int rc = RUN(s, USER_PASSWORD, "UPDATE users SET password_hash = ?2 WHERE id = ?1", "tt",
                 user_id, hash);
    if ((rc = done(s, STMT(s, USER_PASSWORD), rc, "cannot set password")) != STORE_OK)
        return rc;
    if (sqlite3_changes(db_of(s)) == 0)
        return store_set_error(s, STORE_NOT_FOUND, "no such user");
    return void_password_tokens(s, user_id);
}

static int sqlite_user_set_password(struct store *s, const char *user_id, const char *hash)
{
    int rc;

    if ((rc = begin(s)) != STORE_OK)
        return rc;
    return end(s, set_password(s, user_id, hash));
}

#define MEMBER_COLUMNS "m.account_id, m.user_id, u.email, m.role, m.created_at"

static void read_member(sqlite3_stmt *q, struct store_member *m)
{
    memset(m, 0, sizeof(*m));
    copy_text(m->account_id, sizeof(m->account_id), q, 0);
    copy_text(m->user_id, sizeof(m->user_id), q, 1);
    copy_text(m->email, sizeof(m->email), q, 2);
    copy_text(m->role, sizeof(m->role), q, 3);
    m->created_at = sqlite3_column_int64(q, 4);
}

static int one_member(struct store *s, sqlite3_stmt *q, int rc, struct store_member *out)
{
    if (rc == SQLITE_ROW)
        read_member(q, out);
    sqlite3_reset(q);
    if (rc == SQLITE_ROW)
        return STORE_OK;
    return rc == SQLITE_DONE ? store_set_error(s, STORE_NOT_FOUND, "no such membership")
                             : fail(s, "cannot read membership");
}

static int sqlite_member_first(struct store *s, const char *user_id, struct store_member *out)
{
    int rc = RUN(s, MEMBER_FIRST,
                 "SELECT " MEMBER_COLUMNS " FROM memberships m JOIN users u ON u.id = m.user_id "
                 "WHERE m.user_id = ?1 ORDER BY m.role = 'owner' DESC, m.created_at LIMIT 1",
                 "t", user_id);
    return one_member(s, STMT(s, MEMBER_FIRST), rc, out);
}

static int sqlite_member_find(struct store *s, const char *account_id, const char *user_id,
                              struct store_member *out)
{
    int rc = RUN(s, MEMBER_FIND,
                 "SELECT " MEMBER_COLUMNS " FROM memberships m JOIN users u ON u.id = m.user_id "
                 "WHERE m.account_id = ?1 AND m.user_id = ?2",
                 "tt", account_id, user_id);
    return one_member(s, STMT(s, MEMBER_FIND), rc, out);
}

static int sqlite_member_add(struct store *s, const struct store_member *m,
                             const struct store_user *u)
{
    int rc;

    if ((rc = begin(s)) != STORE_OK)
        return rc;
    if (u != NULL && (rc = insert_user(s, u)) != STORE_OK)
        goto rollback;
    rc = RUN(
        s, MEMBER_INSERT,
        "INSERT INTO memberships(account_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)",
        "ttti", m->account_id, m->user_id, m->role, m->created_at);
    if ((rc = done(s, STMT(s, MEMBER_INSERT), rc, "cannot add member")) != STORE_OK)
        goto rollback;
    rc = STORE_OK;
rollback:
    return end(s, rc);
}

static int sqlite_members_list(struct store *s, const char *account_id, store_member_cb cb,
                               void *ud)
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
    return done(s, q, rc, "cannot list members");
}

static int sqlite_session_insert(struct store *s, const struct store_session *x)
{
    int rc = RUN(s, SESSION_INSERT,
                 "INSERT INTO sessions(token_hash, user_id, account_id, csrf_token, created_at, "
                 "last_seen_at, expires_at, ip) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                 "htttiiit", x->token_hash, x->user_id, x->account_id, x->csrf_token, x->created_at,
                 x->last_seen_at, x->expires_at, x->ip);
    return done(s, STMT(s, SESSION_INSERT), rc, "cannot create session");
}

static int sqlite_session_find(struct store *s, const uint8_t *hash, struct store_session *out)
{
    sqlite3_stmt *q;
    int rc = RUN(s, SESSION_FIND,
                 "SELECT user_id, account_id, csrf_token, created_at, last_seen_at, expires_at, "
                 "coalesce(ip, '') FROM sessions WHERE token_hash = ?1",
                 "h", hash);
    q = STMT(s, SESSION_FIND);
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        memcpy(out->token_hash, hash, STORE_HASH_LEN);
        copy_text(out->user_id, sizeof(out->user_id), q, 0);
        copy_text(out->account_id, sizeof(out->account_id), q, 1);
        copy_text(out->csrf_token, sizeof(out->csrf_token), q, 2);
        out->created_at = sqlite3_column_int64(q, 3);
        out->last_seen_at = sqlite3_column_int64(q, 4);
        out->expires_at = sqlite3_column_int64(q, 5);
        copy_text(out->ip, sizeof(out->ip), q, 6);
    }
    sqlite3_reset(q);
    if (rc == SQLITE_ROW)
        return STORE_OK;
    return rc == SQLITE_DONE ? store_set_error(s, STORE_NOT_FOUND, "no such session")
                             : fail(s, "cannot read session");
}

static int sqlite_session_touch(struct store *s, const uint8_t *hash, int64_t at)
{
    int rc = RUN(s, SESSION_TOUCH, "UPDATE sessions SET last_seen_at = ?2 WHERE token_hash = ?1",
                 "hi", hash, at);
    return done(s, STMT(s, SESSION_TOUCH), rc, "cannot update session");
}

static int sqlite_session_delete(struct store *s, const uint8_t *hash)
{
    int rc = RUN(s, SESSION_DELETE, "DELETE FROM sessions WHERE token_hash = ?1", "h", hash);
    return done(s, STMT(s, SESSION_DELETE), rc, "cannot end session");
}

static int sqlite_sessions_delete_user(struct store *s, const char *user_id)
{
    int rc = RUN(s, SESSIONS_DELETE_USER, "DELETE FROM sessions WHERE user_id = ?1", "t", user_id);
    return done(s, STMT(s, SESSIONS_DELETE_USER), rc, "cannot end sessions");
}

static int sqlite_invite_insert(struct store *s, const struct store_invite *i)
{
    int rc = RUN(s, INVITE_INSERT,
                 "INSERT INTO invites(token_hash, id, account_id, email, invited_by, created_at, "
                 "expires_at) VALUES (?1, ?2, ?3, lower(?4), ?5, ?6, ?7)",
                 "htttt"
                 "ii",
                 i->token_hash, i->id, i->account_id, i->email, i->invited_by, i->created_at,
                 i->expires_at);
    return done(s, STMT(s, INVITE_INSERT), rc, "cannot create invitation");
}

static void read_invite(sqlite3_stmt *q, struct store_invite *i)
{
    const void *h = sqlite3_column_blob(q, 0);
    memset(i, 0, sizeof(*i));
    if (h != NULL && sqlite3_column_bytes(q, 0) == STORE_HASH_LEN)
        memcpy(i->token_hash, h, STORE_HASH_LEN);
    copy_text(i->account_id, sizeof(i->account_id), q, 1);
    copy_text(i->email, sizeof(i->email), q, 2);
    copy_text(i->invited_by, sizeof(i->invited_by), q, 3);
    i->created_at = sqlite3_column_int64(q, 4);
    i->expires_at = sqlite3_column_int64(q, 5);
    i->accepted_at = sqlite3_column_int64(q, 6);
    copy_text(i->id, sizeof(i->id), q, 7);
    i->canceled_at = sqlite3_column_int64(q, 8);
    i->failures = sqlite3_column_int(q, 9);
}

#define INVITE_COLUMNS                                                                             \
    "token_hash, account_id, email, invited_by, created_at, expires_at, coalesce(accepted_at, "    \
    "0), "                                                                                         \
    "coalesce(id, ''), coalesce(canceled_at, 0), failures"
#define INVITE_PENDING "accepted_at IS NULL AND canceled_at IS NULL AND expires_at > ?2"

static int sqlite_invite_find(struct store *s, const uint8_t *hash, struct store_invite *out)
{
    int rc = RUN(s, INVITE_FIND, "SELECT " INVITE_COLUMNS " FROM invites WHERE token_hash = ?1",
                 "h", hash);
    if (rc == SQLITE_ROW)
        read_invite(STMT(s, INVITE_FIND), out);
    sqlite3_reset(STMT(s, INVITE_FIND));
    if (rc == SQLITE_ROW)
        return STORE_OK;
    return rc == SQLITE_DONE ? store_set_error(s, STORE_NOT_FOUND, "no such invitation")
                             : fail(s, "cannot read invitation");
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
    return done(s, STMT(s, INVITES_CANCEL_EMAIL), rc, "cannot cancel invitations");
}

static int sqlite_invite_accept(struct store *s, const uint8_t *hash, int64_t at)
{
    char account_id[STORE_ID_SIZE] = "", email[STORE_EMAIL_MAX + 1] = "";
    int rc;

    if ((rc = begin(s)) != STORE_OK)
        return rc;
    rc = RUN(s, INVITE_ACCEPT,
             "UPDATE invites SET accepted_at = ?2 WHERE token_hash = ?1 AND accepted_at IS NULL "
             "AND canceled_at IS NULL RETURNING account_id, email",
             "hi", hash, at);
    if (rc == SQLITE_ROW) {
        copy_text(account_id, sizeof(account_id), STMT(s, INVITE_ACCEPT), 0);
        copy_text(email, sizeof(email), STMT(s, INVITE_ACCEPT), 1);
    }
    if ((rc = done(s, STMT(s, INVITE_ACCEPT), rc, "cannot accept invitation")) != STORE_OK)
        goto rollback;
    if (account_id[0] == '\0') {
        rc = store_set_error(s, STORE_CONFLICT, "invitation already used or cancelled");
        goto rollback;
    }
    if ((rc = cancel_invites_for(s, account_id, email, at)) != STORE_OK)
        goto rollback;
    rc = STORE_OK;
rollback:
    return end(s, rc);
}

static int sqlite_invites_list(struct store *s, const char *account_id, int64_t now,
                               store_invite_cb cb, void *ud)
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
    return done(s, q, rc, "cannot list invitations");
}

static int sqlite_invite_fail(struct store *s, const uint8_t *hash, int max, int64_t at,
                              int *failures)
{
    int rc = RUN(s, INVITE_FAIL,
                 "UPDATE invites SET failures = failures + 1, canceled_at = CASE WHEN canceled_at "
                 "IS NULL AND failures + 1 >= ?2 THEN ?3 ELSE canceled_at END "
                 "WHERE token_hash = ?1 RETURNING failures",
                 "hii", hash, (int64_t)max, at);
    if (rc == SQLITE_ROW)
        *failures = sqlite3_column_int(STMT(s, INVITE_FAIL), 0);
    int r = done(s, STMT(s, INVITE_FAIL), rc, "cannot count a failed invitation");
    if (r == STORE_OK && rc == SQLITE_DONE)
        return store_set_error(s, STORE_NOT_FOUND, "no such invitation");
    return r;
}

static int sqlite_invite_cancel(struct store *s, const char *account_id, const char *id, int64_t at,
                                struct store_invite *out)
{
    int rc = RUN(s, INVITE_CANCEL,
                 "UPDATE invites SET canceled_at = ?2 WHERE account_id = ?3 AND id = ?1 AND "
                 "accepted_at IS NULL AND canceled_at IS NULL AND expires_at > ?2 "
                 "RETURNING " INVITE_COLUMNS,
                 "tit", id, at, account_id);
    if (rc == SQLITE_ROW)
        read_invite(STMT(s, INVITE_CANCEL), out);
    int r = done(s, STMT(s, INVITE_CANCEL), rc, "cannot cancel invitation");
    if (r == STORE_OK && rc == SQLITE_DONE)
        return store_set_error(s, STORE_NOT_FOUND, "no such pending invitation");
    return r;
}

static int sqlite_invites_pending(struct store *s, const char *account_id, int64_t now,
                                  int64_t *count)
{
    int rc = RUN(s, INVITES_PENDING,
                 "SELECT count(*) FROM invites WHERE account_id = ?1 AND " INVITE_PENDING, "ti",
                 account_id, now);
    if (rc == SQLITE_ROW)
        *count = sqlite3_column_int64(STMT(s, INVITES_PENDING), 0);
    return done(s, STMT(s, INVITES_PENDING), rc, "cannot count invitations");
}

/* A new link replaces the user's earlier ones that were not used. */
static int sqlite_password_token_insert(struct store *s, const struct store_password_token *t)
{
    int rc;

    if ((rc = begin(s)) != STORE_OK)
        return rc;
    if ((rc = void_password_tokens(s, t->user_id)) != STORE_OK)
        goto rollback;
    rc = RUN(s, PWTOKEN_INSERT,
             "INSERT INTO password_tokens(token_hash, user_id, created_at, expires_at) "
             "VALUES (?1, ?2, ?3, ?4)",
             "htii", t->token_hash, t->user_id, t->created_at, t->expires_at);
    if ((rc = done(s, STMT(s, PWTOKEN_INSERT), rc, "cannot create a set-password link")) !=
        STORE_OK)
        goto rollback;
    rc = STORE_OK;
rollback:
    return end(s, rc);
}

static int sqlite_password_token_find(struct store *s, const uint8_t *hash,
                                      struct store_password_token *out)
{
    sqlite3_stmt *q;
    int rc = RUN(s, PWTOKEN_FIND,
                 "SELECT user_id, created_at, expires_at, coalesce(used_at, 0) FROM "
                 "password_tokens WHERE token_hash = ?1",
                 "h", hash);
    q = STMT(s, PWTOKEN_FIND);
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        memcpy(out->token_hash, hash, STORE_HASH_LEN);
        copy_text(out->user_id, sizeof(out->user_id), q, 0);
        out->created_at = sqlite3_column_int64(q, 1);
        out->expires_at = sqlite3_column_int64(q, 2);
        out->used_at = sqlite3_column_int64(q, 3);
    }
    int r = done(s, q, rc, "cannot read a set-password link");
    if (r == STORE_OK && rc == SQLITE_DONE)
        return store_set_error(s, STORE_NOT_FOUND, "no such link");
    return r;
}

static int sqlite_password_token_use(struct store *s, const uint8_t *hash,
                                     const char *password_hash, int64_t at)
{
    char user_id[STORE_ID_SIZE] = "";
    int rc;

    if ((rc = begin(s)) != STORE_OK)
        return rc;
    rc = RUN(s, PWTOKEN_USE,
             "UPDATE password_tokens SET used_at = ?2 WHERE token_hash = ?1 AND used_at IS NULL "
             "AND expires_at > ?2 RETURNING user_id",
             "hi", hash, at);
    if (rc == SQLITE_ROW)
        copy_text(user_id, sizeof(user_id), STMT(s, PWTOKEN_USE), 0);
    if ((rc = done(s, STMT(s, PWTOKEN_USE), rc, "cannot use a set-password link")) != STORE_OK)
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
    return end(s, rc);
}

static int sqlite_member_remove(struct store *s, const char *account_id, const char *user_id,
                                int64_t at)
{
    struct store_user u;
    int rc;

    if ((rc = begin(s)) != STORE_OK)
        return rc;
    if ((rc = sqlite_user_find(s, user_id, &u)) != STORE_OK ||
        (rc = cancel_invites_for(s, account_id, u.email, at)) != STORE_OK)
        goto rollback;
    rc = RUN(s, MEMBER_REMOVE, "DELETE FROM memberships WHERE account_id = ?1 AND user_id = ?2",
             "tt", account_id, user_id);
    if ((rc = done(s, STMT(s, MEMBER_REMOVE), rc, "cannot remove member")) != STORE_OK)
        goto rollback;
    if (sqlite3_changes(db_of(s)) == 0) {
        rc = store_set_error(s, STORE_NOT_FOUND, "no such member");
        goto rollback;
    }
    rc = RUN(s, SESSIONS_DELETE_MEMBER,
             "DELETE FROM sessions WHERE account_id = ?1 AND user_id = ?2", "tt", account_id,
             user_id);
    if ((rc = done(s, STMT(s, SESSIONS_DELETE_MEMBER), rc, "cannot end sessions")) != STORE_OK)
        goto rollback;
    rc = STORE_OK;
rollback:
    return end(s, rc);
}

static int sqlite_sessions_delete_others(struct store *s, const char *user_id, const uint8_t *keep)
{
    int rc =
        RUN(s, SESSIONS_DELETE_OTHERS,
            "DELETE FROM sessions WHERE user_id = ?1 AND token_hash <> ?2", "th", user_id, keep);
    return done(s, STMT(s, SESSIONS_DELETE_OTHERS), rc, "cannot end sessions");
}

static int sqlite_key_count_working(struct store *s, const char *account_id, int64_t now,
                                    int64_t *count)
{
    int rc = RUN(s, KEY_COUNT_WORKING,
                 "SELECT count(*) FROM api_keys WHERE account_id = ?1 AND revoked_at IS NULL AND "
                 "(expires_at IS NULL OR expires_at > ?2)",
                 "ti", account_id, now);
    if (rc == SQLITE_ROW)
        *count = sqlite3_column_int64(STMT(s, KEY_COUNT_WORKING), 0);
    return done(s, STMT(s, KEY_COUNT_WORKING), rc, "cannot count keys");
}

static void read_throttle(sqlite3_stmt *q, struct store_throttle *t)
{
    t->count = sqlite3_column_int64(q, 0);
    t->first_at = sqlite3_column_int64(q, 1);
    t->last_at = sqlite3_column_int64(q, 2);
    t->refused = sqlite3_column_int64(q, 3);
}

static int sqlite_throttle_get(struct store *s, const char *kind, const char *key,
                               struct store_throttle *out)
{
    int rc = RUN(s, THROTTLE_GET,
                 "SELECT count, first_at, last_at, refused FROM throttles WHERE kind = ?1 AND "
                 "key = ?2",
                 "tt", kind, key);
    if (rc == SQLITE_ROW)
        read_throttle(STMT(s, THROTTLE_GET), out);
    int r = done(s, STMT(s, THROTTLE_GET), rc, "cannot read a throttle");
    if (r == STORE_OK && rc == SQLITE_DONE)
        return store_set_error(s, STORE_NOT_FOUND, "no throttle");
    return r;
}

static int sqlite_throttle_hit(struct store *s, const char *kind, const char *key, int64_t now,
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
    return done(s, STMT(s, THROTTLE_HIT), rc, "cannot count an attempt");
}

static int sqlite_throttle_refuse(struct store *s, const char *kind, const char *key,
                                  int64_t *refused)
{
    int rc = RUN(s, THROTTLE_REFUSE,
                 "UPDATE throttles SET refused = refused + 1 WHERE kind = ?1 AND key = ?2 "
                 "RETURNING refused - 1",
                 "tt", kind, key);
    *refused = rc == SQLITE_ROW ? sqlite3_column_int64(STMT(s, THROTTLE_REFUSE), 0) : 0;
    return done(s, STMT(s, THROTTLE_REFUSE), rc, "cannot count a refused attempt");
}

static int sqlite_throttle_clear(struct store *s, const char *kind, const char *key)
{
    int rc = RUN(s, THROTTLE_CLEAR, "DELETE FROM throttles WHERE kind = ?1 AND key = ?2", "tt",
                 kind, key);
    return done(s, STMT(s, THROTTLE_CLEAR), rc, "cannot clear a throttle");
}

/* Deletes at most PRUNE_BATCH rows per statement, each its own short transaction, so that a
 * prune never holds the write lock long enough to delay a ledger commit. */
#define PRUNE_BATCH 500

static int sqlite_prune(struct store *s, const struct store_retention *r, int64_t now,
                        int64_t *deleted)
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
        "DELETE FROM key_changes WHERE seq IN (SELECT seq FROM key_changes WHERE at <= ?4 AND "
        "seq < (SELECT max(seq) FROM key_changes) LIMIT 500)",
        "DELETE FROM account_changes WHERE seq IN (SELECT seq FROM account_changes WHERE at <= ?4 "
        "AND seq < (SELECT max(seq) FROM account_changes) LIMIT 500)",
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE ?5 > 0 AND at <= ?6 "
        "ORDER BY id LIMIT 500)",
    };
    struct sqlite_backend *b = store_backend(s);
    int64_t total = 0;

    for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
        for (;;) {
            int rc = run(s, &b->prune[i], sql[i], "iiiiiii", now, now - r->throttle_s,
                         now - r->done_days * 86400, now - r->change_log_days * 86400,
                         r->audit_days, now - r->audit_days * 86400, r->session_idle_s);
            sqlite3_reset(b->prune[i]);
            if (rc != SQLITE_DONE)
                return fail(s, "cannot prune");
            int n = sqlite3_changes(db_of(s));
            total += n;
            if (n < PRUNE_BATCH)
                break;
        }
    }
    *deleted = total;
    return STORE_OK;
}

/* ---- plans, quotas and the usage ledger ---------------------------------------------------- */

static int update_account(struct store *s, sqlite3_stmt *q, int rc)
{
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return fail(s, "cannot update account");
    if (sqlite3_changes(db_of(s)) == 0)
        return store_set_error(s, STORE_NOT_FOUND, "no such account");
    return STORE_OK;
}

/* The writer's checkpoints run on a thread of their own (store/sqlite_checkpoint.c). */
static int start_checkpointer(struct store *s)
{
    struct sqlite_backend *b = store_backend(s);
    char err[400];

    if (b->ckpt != NULL)
        return STORE_OK;
    if ((b->ckpt = checkpointer_start(b->db, err, sizeof(err))) == NULL)
        return store_set_error(s, STORE_ERROR, "%s", err);
    return STORE_OK;
}

static int sqlite_account_set_plan(struct store *s, const char *id, const char *plan)
{
    int rc = RUN(s, ACCOUNT_SET_PLAN, "UPDATE accounts SET plan = nullif(?2, '') WHERE id = ?1",
                 "tt", id, plan);
    return changed(s, update_account(s, STMT(s, ACCOUNT_SET_PLAN), rc));
}

static int sqlite_account_set_quota(struct store *s, const char *id, int64_t requests,
                                    int64_t tokens)
{
    int rc = RUN(s, ACCOUNT_SET_QUOTA,
                 "UPDATE accounts SET quota_requests = nullif(?2, -2), "
                 "quota_tokens = nullif(?3, -2) WHERE id = ?1",
                 "tii", id, requests, tokens);
    return changed(s, update_account(s, STMT(s, ACCOUNT_SET_QUOTA), rc));
}

struct account_walk {
    store_account_cb cb;
    void *ud;
};

static int account_one(void *ud, void *row, sqlite3_stmt *q)
{
    struct account_walk *w = ud;
    (void)q;
    return w->cb(w->ud, row);
}

static int sqlite_accounts_load(struct store *s, struct store_cursor *cursor, store_account_cb cb,
                                void *ud)
{
    struct account_walk w = {cb, ud};
    struct store_cursor c;
    struct store_account a;
    int r;

    if ((r = exec(s, "BEGIN")) != STORE_OK)
        return r;
    if ((r = cursor_at_newest(s, 0, &c)) == STORE_OK) {
        int rc = RUN(s, ACCOUNTS_LOAD, "SELECT " ACCOUNT_COLUMNS " FROM accounts", "");
        r = each_row(s, STMT(s, ACCOUNTS_LOAD), rc, read_account, &a, account_one, &w,
                     "cannot read accounts");
    }
    r = end_read(s, r);
    if (r == STORE_OK)
        *cursor = c;
    return r;
}

static int sqlite_account_changes(struct store *s, struct store_cursor *cursor, store_account_cb cb,
                                  void *ud)
{
    struct account_walk w = {cb, ud};
    struct store_account a;
    int rc = RUN(s, ACCOUNT_CHANGES,
                 "SELECT " ACCOUNT_COLUMNS ", c.seq FROM account_changes c "
                 "JOIN accounts a ON a.id = c.account_id WHERE c.seq > ?1 ORDER BY c.seq",
                 "i", cursor->v[0]);
    return walk_changes(s, STMT(s, ACCOUNT_CHANGES), rc, cursor, account_one, &w, &a, read_account,
                        6, "cannot read account changes");
}

static int64_t month_of_ms(int64_t at_ms)
{
    return kn_month_of(at_ms / 1000);
}

/* One line of the rollup a batch adds to: the rows of one account, day, key and model. */
struct rollup_sum {
    const struct store_ledger_row *row; /* The first row of the group; NULL for an empty slot. */
    int64_t day, month;
    int64_t requests, input_tokens, output_tokens, price_micros;
};

static uint64_t rollup_hash(const struct store_ledger_row *r, int64_t day)
{
    const char *parts[] = {r->account_id, r->key_id, r->model};
    uint64_t h = 1469598103934665603ull ^ (uint64_t)day;
    for (size_t i = 0; i < 3; i++)
        for (const char *c = parts[i]; *c != '\0'; c++)
            h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h;
}

static int same_group(const struct rollup_sum *g, const struct store_ledger_row *r, int64_t day)
{
    return g->day == day && strcmp(g->row->account_id, r->account_id) == 0 &&
           strcmp(g->row->key_id, r->key_id) == 0 && strcmp(g->row->model, r->model) == 0;
}

static void read_voided(sqlite3_stmt *q, void *out)
{
    *(int *)out = sqlite3_column_int(q, 0) != 0;
}

/* Why a row's request id is in the ledger already: billed before (a retried batch) or voided. */
static int existing_row(struct store *s, const char *request_id, uint8_t *outcome)
{
    int voided = 0;
    int rc = RUN(s, LEDGER_VOIDED, "SELECT voided FROM usage_ledger WHERE request_id = ?1", "t",
                 request_id);
    int r = one_row(s, STMT(s, LEDGER_VOIDED), rc, read_voided, &voided, "ledger row vanished",
                    "cannot read the ledger");
    *outcome = voided ? STORE_LEDGER_VOIDED : STORE_LEDGER_BILLED_BEFORE;
    return r;
}

static int sqlite_ledger_add(struct store *s, const struct store_ledger_row *rows, size_t n,
                             uint8_t *outcome)
{
    size_t mask = 1;
    struct rollup_sum *sums;
    int rc;

    /* The batch's rows are summed per rollup line first, so that a group commit of many
     * requests from a few keys updates a few rollup rows, not one per request. */
    while (mask < n * 2)
        mask <<= 1;
    sums = kn_calloc(mask, sizeof(*sums));
    mask--;
    checkpointer_restart_log(((struct sqlite_backend *)store_backend(s))->ckpt, db_of(s));
    if ((rc = begin(s)) != STORE_OK) {
        free(sums);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        const struct store_ledger_row *r = &rows[i];
        int64_t month = month_of_ms(r->at_ms), day = r->at_ms / 86400000;

        rc = RUN(s, LEDGER_INSERT,
                 "INSERT OR IGNORE INTO usage_ledger(request_id, account_id, key_id, "
                 "environment, model, input_tokens, output_tokens, price_micros, currency, plan, "
                 "at_ms, month) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                 "tttttiiittii", r->request_id, r->account_id, r->key_id, r->environment, r->model,
                 (int64_t)r->input_tokens, (int64_t)r->output_tokens, r->price_micros, r->currency,
                 r->plan, r->at_ms, month);
        sqlite3_reset(STMT(s, LEDGER_INSERT));
        if (rc != SQLITE_DONE)
            goto fail;
        if (sqlite3_changes(db_of(s)) == 0) {
            /* Billed already (a retried batch) or voided: either way nothing to add. */
            if (existing_row(s, r->request_id, &outcome[i]) != STORE_OK)
                goto fail;
            continue;
        }
        outcome[i] = STORE_LEDGER_ADDED;
        size_t k = rollup_hash(r, day) & mask;
        while (sums[k].row != NULL && !same_group(&sums[k], r, day))
            k = (k + 1) & mask;
        if (sums[k].row == NULL) {
            sums[k].row = r;
            sums[k].day = day;
            sums[k].month = month;
        }
        sums[k].requests++;
        sums[k].input_tokens += r->input_tokens;
        sums[k].output_tokens += r->output_tokens;
        sums[k].price_micros += r->price_micros;
    }
    for (size_t k = 0; k <= mask; k++) {
        const struct rollup_sum *g = &sums[k];
        if (g->row == NULL)
            continue;
        rc = RUN(s, ROLLUP_ADD,
                 "INSERT INTO usage_rollup(account_id, day, key_id, model, environment, month, "
                 "requests, input_tokens, output_tokens, price_micros) "
                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
                 "ON CONFLICT(account_id, day, key_id, model) DO UPDATE SET "
                 "requests = requests + excluded.requests, "
                 "input_tokens = input_tokens + excluded.input_tokens, "
                 "output_tokens = output_tokens + excluded.output_tokens, "
                 "price_micros = price_micros + excluded.price_micros",
                 "titttiiiii", g->row->account_id, g->day, g->row->key_id, g->row->model,
                 g->row->environment, g->month, g->requests, g->input_tokens, g->output_tokens,
                 g->price_micros);
        sqlite3_reset(STMT(s, ROLLUP_ADD));
        if (rc != SQLITE_DONE)
            goto fail;
    }
    free(sums);
    return end(s, STORE_OK);
fail:
    free(sums);
    return end(s, fail(s, "cannot record billed usage"));
}

static int sqlite_ledger_void(struct store *s, const char *request_id, int64_t at_ms,
                              int *was_billed)
{
    int r = begin(s);
    if (r != STORE_OK)
        return r;
    int rc = RUN(s, LEDGER_VOID,
                 "INSERT OR IGNORE INTO usage_ledger(request_id, account_id, key_id, environment, "
                 "model, input_tokens, output_tokens, price_micros, currency, plan, at_ms, month, "
                 "voided) VALUES (?1, '', '', '', '', 0, 0, 0, '', '', ?2, ?3, 1)",
                 "tii", request_id, at_ms, month_of_ms(at_ms));
    if ((r = done(s, STMT(s, LEDGER_VOID), rc, "cannot void a ledger row")) != STORE_OK)
        return end(s, r);
    if (sqlite3_changes(db_of(s)) == 1) {
        *was_billed = 0;
        return end(s, STORE_OK);
    }
    uint8_t outcome;
    if ((r = existing_row(s, request_id, &outcome)) == STORE_OK)
        *was_billed = outcome == STORE_LEDGER_BILLED_BEFORE;
    return end(s, r);
}

static int sqlite_usage_month_totals(struct store *s, int64_t month, store_month_total_cb cb,
                                     void *ud)
{
    struct store_month_total t;
    int rc = RUN(s, MONTH_TOTALS,
                 "SELECT account_id, sum(requests), sum(input_tokens + output_tokens) "
                 "FROM usage_rollup WHERE month = ?1 GROUP BY account_id",
                 "i", month);
    sqlite3_stmt *q = STMT(s, MONTH_TOTALS);

    for (; rc == SQLITE_ROW; rc = sqlite3_step(q)) {
        memset(&t, 0, sizeof(t));
        copy_text(t.account_id, sizeof(t.account_id), q, 0);
        t.requests = (uint64_t)sqlite3_column_int64(q, 1);
        t.tokens = (uint64_t)sqlite3_column_int64(q, 2);
        if (cb(ud, &t) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? STORE_OK : fail(s, "cannot read monthly usage");
}

static int sqlite_usage_sums(struct store *s, const char *account_id, int64_t month_from,
                             int64_t month_to, store_usage_sum_cb cb, void *ud)
{
    struct store_usage_sum u;
    int rc = RUN(s, USAGE_SUMS,
                 "SELECT day, month, key_id, model, environment, requests, input_tokens, "
                 "output_tokens, price_micros FROM usage_rollup "
                 "WHERE account_id = ?1 AND month BETWEEN ?2 AND ?3 ORDER BY day, key_id, model",
                 "tii", account_id, month_from, month_to);
    sqlite3_stmt *q = STMT(s, USAGE_SUMS);

    for (; rc == SQLITE_ROW; rc = sqlite3_step(q)) {
        memset(&u, 0, sizeof(u));
        u.day = sqlite3_column_int64(q, 0);
        u.month = sqlite3_column_int64(q, 1);
        copy_text(u.key_id, sizeof(u.key_id), q, 2);
        copy_text(u.model, sizeof(u.model), q, 3);
        copy_text(u.environment, sizeof(u.environment), q, 4);
        u.requests = (uint64_t)sqlite3_column_int64(q, 5);
        u.input_tokens = (uint64_t)sqlite3_column_int64(q, 6);
        u.output_tokens = (uint64_t)sqlite3_column_int64(q, 7);
        u.price_micros = sqlite3_column_int64(q, 8);
        if (cb(ud, &u) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? STORE_OK : fail(s, "cannot read usage");
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .migrate = sqlite_migrate,
    .ping = sqlite_ping,
    .account_find = sqlite_account_find,
    .key_insert = sqlite_key_insert,
    .key_find = sqlite_key_find,
    .key_count = sqlite_key_count,
    .key_list = sqlite_key_list,
    .key_revoke = sqlite_key_revoke,
    .key_expire = sqlite_key_expire,
    .key_rename = sqlite_key_rename,
    .key_set_allowlist = sqlite_key_set_allowlist,
    .key_roll = sqlite_key_roll,
    .audit_add = sqlite_audit_add,
    .audit_list = sqlite_audit_list,
    .account_insert_owned = sqlite_account_insert_owned,
    .user_find = sqlite_user_find,
    .user_set_password = sqlite_user_set_password,
    .member_first = sqlite_member_first,
    .member_find = sqlite_member_find,
    .member_add = sqlite_member_add,
    .members_list = sqlite_members_list,
    .session_insert = sqlite_session_insert,
    .session_find = sqlite_session_find,
    .session_touch = sqlite_session_touch,
    .session_delete = sqlite_session_delete,
    .sessions_delete_user = sqlite_sessions_delete_user,
    .invite_insert = sqlite_invite_insert,
    .invite_find = sqlite_invite_find,
    .invite_accept = sqlite_invite_accept,
    .invites_list = sqlite_invites_list,
    .invite_fail = sqlite_invite_fail,
    .invite_cancel = sqlite_invite_cancel,
    .invites_pending = sqlite_invites_pending,
    .password_token_insert = sqlite_password_token_insert,
    .password_token_find = sqlite_password_token_find,
    .password_token_use = sqlite_password_token_use,
    .member_remove = sqlite_member_remove,
    .sessions_delete_others = sqlite_sessions_delete_others,
    .key_count_working = sqlite_key_count_working,
    .throttle_get = sqlite_throttle_get,
    .throttle_hit = sqlite_throttle_hit,
    .throttle_refuse = sqlite_throttle_refuse,
    .throttle_clear = sqlite_throttle_clear,
    .prune = sqlite_prune,
    .keys_load = sqlite_keys_load,
    .key_changes = sqlite_key_changes,
    .usage_add = sqlite_usage_add,
    .changes_fd = sqlite_changes_fd,
    .changes_drain = sqlite_changes_drain,
    .account_set_plan = sqlite_account_set_plan,
    .account_set_quota = sqlite_account_set_quota,
    .accounts_load = sqlite_accounts_load,
    .account_changes = sqlite_account_changes,
    .ledger_add = sqlite_ledger_add,
    .ledger_void = sqlite_ledger_void,
    .usage_month_totals = sqlite_usage_month_totals,
    .usage_sums = sqlite_usage_sums,
};
