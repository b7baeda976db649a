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
#include "store/sqlite_internal.h"
#include "store/store.h"

void store_set_backend__(struct store *s, void *backend);

/* A key's columns (0 to 13, read by read_key); KEY_TODAY is its request count on day ?1. */
#define KEY_COLUMNS                                                                                \
    "k.id, k.account_id, k.name, k.mode, k.environment, k.hash, k.hint, k.created_at, "            \
    "k.created_by, coalesce(k.last_used_at, 0), coalesce(k.expires_at, 0), "                       \
    "coalesce(k.revoked_at, 0), coalesce(k.rolled_to, ''), k.ip_allowlist"
#define KEY_TODAY                                                                                  \
    "coalesce((SELECT requests FROM key_usage_daily d WHERE d.key_id = k.id AND d.day = ?1), 0)"

sqlite3 *sq_db_of(struct store *s)
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

int sq_fail(struct store *s, const char *what)
{
    return store_set_error(s, status_of(sqlite3_extended_errcode(sq_db_of(s))), "%s: %s", what,
                           sqlite3_errmsg(sq_db_of(s)));
}

int sq_exec(struct store *s, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(sq_db_of(s), sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        rc = store_set_error(s, status_of(sqlite3_extended_errcode(sq_db_of(s))), "%s",
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
int sq_changed(struct store *s, int status)
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

    if (sqlite3_prepare_v2(sq_db_of(s), "SELECT coalesce(max(version), 0) FROM schema_migrations",
                           -1, &q, NULL) != SQLITE_OK) {
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
    if ((r = sq_exec(s, full ? "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
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

    if (sq_exec(s, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                   "name TEXT NOT NULL, applied_at INTEGER NOT NULL)") != STORE_OK)
        return STORE_ERROR;
    for (size_t i = 0; i < store_migrations_count; i++) {
        const struct store_migration *m = &store_migrations[i];
        if (sq_exec(s, "BEGIN IMMEDIATE") != STORE_OK)
            return STORE_ERROR;
        if (sqlite3_prepare_v2(sq_db_of(s),
                               "SELECT coalesce(max(version), 0) FROM schema_migrations", -1, &q,
                               NULL) != SQLITE_OK)
            goto fail;
        current = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : 0;
        sqlite3_finalize(q);
        if (m->version <= current) {
            sq_exec(s, "COMMIT");
            continue;
        }
        if (sq_exec(s, m->sql) != STORE_OK) {
            char msg[512];
            snprintf(msg, sizeof(msg), "migration %s failed: %s", m->name, store_errmsg(s));
            sq_exec(s, "ROLLBACK");
            return store_set_error(s, STORE_ERROR, "%s", msg);
        }
        if (sqlite3_prepare_v2(sq_db_of(s),
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
        if (sq_exec(s, "COMMIT") != STORE_OK)
            return STORE_ERROR;
    }
    return STORE_OK;
fail:
    sq_fail(s, "migration");
    sq_exec(s, "ROLLBACK");
    return STORE_ERROR;
}

/* Prepares (once) and runs a statement with arguments described by fmt: 't' text, 'i' int64,
 * 'h' a STORE_HASH_LEN blob. Leaves the statement positioned on its first row when there is one;
 * the caller reads it and resets. Returns the sqlite3_step code, or the preparation's error code
 * when the statement cannot be prepared (then *cache stays NULL: sqlite3_reset accepts that, and
 * callers read columns only after SQLITE_ROW). */
int sq_run(struct store *s, sqlite3_stmt **cache, const char *sql, const char *fmt, ...)
{
    va_list ap;
    int i = 1, rc;

    if (*cache == NULL && (rc = sqlite3_prepare_v3(sq_db_of(s), sql, -1, SQLITE_PREPARE_PERSISTENT,
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

/* 1 when the statement that just failed broke a uniqueness constraint (a row that exists
 * already), 0 for any other failure, another constraint included. */
static int duplicate(struct store *s, int rc)
{
    int ext = sqlite3_extended_errcode(sq_db_of(s));
    return rc == SQLITE_CONSTRAINT &&
           (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY);
}

/* Resets q and turns a sqlite3_step code into a status. */
int sq_done(struct store *s, sqlite3_stmt *q, int rc, const char *what)
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
    int r = sq_fail(s, what);
    sqlite3_reset(q);
    return r;
}

/* For a statement that reads one row: STORE_OK with the row read by `read` into out (when
 * there was one), STORE_NOT_FOUND with the message `none` (when there was none). */
int sq_one_row(struct store *s, sqlite3_stmt *q, int rc, void (*read)(sqlite3_stmt *, void *),
               void *out, const char *none, const char *what)
{
    if (rc == SQLITE_ROW)
        read(q, out);
    sqlite3_reset(q);
    if (rc == SQLITE_ROW)
        return STORE_OK;
    if (rc == SQLITE_DONE)
        return store_set_error(s, STORE_NOT_FOUND, "%s", none);
    return sq_fail(s, what);
}

/* Calls read(q, row) then cb(ud, row) for each row, from the one rc says the statement is on;
 * returning non-zero from cb ends the walk. */
int sq_each_row(struct store *s, sqlite3_stmt *q, int rc, void (*read)(sqlite3_stmt *, void *),
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
    return rc == SQLITE_DONE ? STORE_OK : sq_fail(s, what);
}

int sq_begin(struct store *s)
{
    return sq_exec(s, "BEGIN IMMEDIATE");
}

/* Commits, or rolls back and returns status when status is not STORE_OK (the error already
 * recorded). */
int sq_end(struct store *s, int status)
{
    if (status == STORE_OK && (status = sq_exec(s, "COMMIT")) == STORE_OK)
        return STORE_OK;
    char msg[512];
    kn_strlcpy(msg, store_errmsg(s), sizeof(msg));
    sq_exec(s, "ROLLBACK");
    return store_set_error(s, status, "%s", msg);
}

/* Ends a read transaction: one left open would keep this connection on an old snapshot, blind to
 * every later change. Returns status, or the failure to end it. */
int sq_end_read(struct store *s, int status)
{
    int r = sq_exec(s, "COMMIT");
    if (r == STORE_OK)
        return status;
    sq_exec(s, "ROLLBACK");
    return status != STORE_OK ? status : r;
}

static int sqlite_ping(struct store *s)
{
    int rc = RUN(s, MAX_SEQ, "SELECT coalesce(max(seq), 0) FROM key_changes", "");
    return sq_done(s, STMT(s, MAX_SEQ), rc, "ping");
}

int sqlite_account_insert(struct store *s, const struct store_account *a)
{
    int rc =
        RUN(s, ACCOUNT_INSERT, "INSERT INTO accounts(id, email, created_at) VALUES (?1, ?2, ?3)",
            "tti", a->id, a->email, a->created_at);
    if (duplicate(s, rc)) {
        sqlite3_reset(STMT(s, ACCOUNT_INSERT));
        return store_set_error(s, STORE_CONFLICT, "an account with email %s already exists",
                               a->email);
    }
    return sq_done(s, STMT(s, ACCOUNT_INSERT), rc, "cannot create account");
}

void sq_copy_text(char *dst, size_t size, sqlite3_stmt *q, int col)
{
    const unsigned char *t = sqlite3_column_text(q, col);
    kn_strlcpy(dst, t != NULL ? (const char *)t : "", size);
}

void sq_read_account(sqlite3_stmt *q, void *out)
{
    struct store_account *a = out;
    memset(a, 0, sizeof(*a));
    sq_copy_text(a->id, sizeof(a->id), q, 0);
    sq_copy_text(a->email, sizeof(a->email), q, 1);
    a->created_at = sqlite3_column_int64(q, 2);
    sq_copy_text(a->plan, sizeof(a->plan), q, 3);
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
    return sq_one_row(s, STMT(s, ACCOUNT_FIND), rc, sq_read_account, out, none,
                      "cannot read account");
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
    return sq_done(s, STMT(s, AUDIT_ADD), rc, "cannot write the audit log");
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
    return sq_done(s, STMT(s, KEY_INSERT), rc, "cannot create key");
}

static int sqlite_key_insert(struct store *s, const struct store_key *keys, size_t n,
                             const struct store_audit *audit)
{
    int r;

    /* Bulk loads touch random places of two indexes (ids and hashes are random): give them a
     * page cache that holds those indexes, or every insert reads and writes pages. */
    if (n > 1000)
        sq_exec(s, "PRAGMA cache_size = -262144");
    if ((r = sq_begin(s)) != STORE_OK)
        return r;
    for (size_t i = 0; i < n && r == STORE_OK; i++)
        r = insert_key_row(s, &keys[i]);
    if (r == STORE_OK)
        r = audit_row(s, audit);
    return sq_changed(s, sq_end(s, r));
}

void sq_read_count(sqlite3_stmt *q, void *out)
{
    *(int64_t *)out = sqlite3_column_int64(q, 0);
}

static int sqlite_key_count(struct store *s, int64_t *count)
{
    int rc = RUN(s, KEY_COUNT, "SELECT count(*) FROM api_keys", "");
    return sq_one_row(s, STMT(s, KEY_COUNT), rc, sq_read_count, count, "no count",
                      "cannot count keys");
}

static void read_key(sqlite3_stmt *q, void *out)
{
    struct store_key *k = out;
    const void *hash;

    memset(k, 0, sizeof(*k));
    sq_copy_text(k->id, sizeof(k->id), q, 0);
    sq_copy_text(k->account_id, sizeof(k->account_id), q, 1);
    sq_copy_text(k->name, sizeof(k->name), q, 2);
    sq_copy_text(k->mode, sizeof(k->mode), q, 3);
    sq_copy_text(k->environment, sizeof(k->environment), q, 4);
    hash = sqlite3_column_blob(q, 5);
    if (hash != NULL && sqlite3_column_bytes(q, 5) == STORE_HASH_LEN)
        memcpy(k->hash, hash, STORE_HASH_LEN);
    sq_copy_text(k->hint, sizeof(k->hint), q, 6);
    k->created_at = sqlite3_column_int64(q, 7);
    sq_copy_text(k->created_by, sizeof(k->created_by), q, 8);
    k->last_used_at = sqlite3_column_int64(q, 9);
    k->expires_at = sqlite3_column_int64(q, 10);
    k->revoked_at = sqlite3_column_int64(q, 11);
    sq_copy_text(k->rolled_to, sizeof(k->rolled_to), q, 12);
    sq_copy_text(k->ip_allowlist, sizeof(k->ip_allowlist), q, 13);
}

static int sqlite_key_find(struct store *s, const char *id, const uint8_t *hash,
                           struct store_key *out)
{
    int rc =
        id != NULL
            ? RUN(s, KEY_FIND_ID, "SELECT " KEY_COLUMNS " FROM api_keys k WHERE k.id = ?1", "t", id)
            : RUN(s, KEY_FIND_HASH, "SELECT " KEY_COLUMNS " FROM api_keys k WHERE k.hash = ?1", "h",
                  hash);
    return sq_one_row(s, id != NULL ? STMT(s, KEY_FIND_ID) : STMT(s, KEY_FIND_HASH), rc, read_key,
                      out, "no such key", "cannot read key");
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
    return sq_each_row(s, STMT(s, KEY_LIST), rc, read_key, &k, key_walk_one, &w,
                       "cannot read keys");
}

/* Ends a one-statement key change: STORE_NOT_FOUND when it sq_changed no row; else writes the audit
 * entry and commits. */
static int end_key_change(struct store *s, sqlite3_stmt *q, int rc, const struct store_audit *audit)
{
    int r = sq_done(s, q, rc, "cannot update key");
    if (r == STORE_OK && sqlite3_changes(sq_db_of(s)) == 0)
        r = store_set_error(s, STORE_NOT_FOUND, "no such key");
    if (r == STORE_OK)
        r = audit_row(s, audit);
    return sq_changed(s, sq_end(s, r));
}

static int sqlite_key_revoke(struct store *s, const char *id, int64_t at, const char *actor,
                             const struct store_audit *audit)
{
    int r = sq_begin(s);
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
    int r = sq_begin(s);
    if (r != STORE_OK)
        return r;
    int rc = RUN(s, KEY_EXPIRE, "UPDATE api_keys SET expires_at = nullif(?2, 0) WHERE id = ?1",
                 "ti", id, at);
    return end_key_change(s, STMT(s, KEY_EXPIRE), rc, audit);
}

static int sqlite_key_rename(struct store *s, const char *id, const char *name,
                             const struct store_audit *audit)
{
    int r = sq_begin(s);
    if (r != STORE_OK)
        return r;
    int rc = RUN(s, KEY_RENAME, "UPDATE api_keys SET name = ?2 WHERE id = ?1", "tt", id, name);
    return end_key_change(s, STMT(s, KEY_RENAME), rc, audit);
}

static int sqlite_key_set_allowlist(struct store *s, const char *id, const char *allowlist,
                                    const struct store_audit *audit)
{
    int r = sq_begin(s);
    if (r != STORE_OK)
        return r;
    int rc = RUN(s, KEY_ALLOWLIST, "UPDATE api_keys SET ip_allowlist = ?2 WHERE id = ?1", "tt", id,
                 allowlist);
    return end_key_change(s, STMT(s, KEY_ALLOWLIST), rc, audit);
}

/* The change feed. SQLite has one writer at a time, so a change-log row's sequence number is
 * also its commit order: the cursor is the highest number read (v[0]), and a reader never
 * misses a row by reading `seq > v[0]`. */
int sq_walk_changes(struct store *s, sqlite3_stmt *q, int rc, struct store_cursor *c,
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
        return sq_fail(s, what);
    c->v[0] = seq;
    return STORE_OK;
}

/* Reads the newest change-log number (of key_changes or account_changes) into c, inside the
 * caller's read transaction, before the rows it goes with are read. */
int sq_cursor_at_newest(struct store *s, int keys, struct store_cursor *c)
{
    int rc = keys
                 ? RUN(s, MAX_SEQ, "SELECT coalesce(max(seq), 0) FROM key_changes", "")
                 : RUN(s, ACCOUNT_MAX_SEQ, "SELECT coalesce(max(seq), 0) FROM account_changes", "");
    memset(c, 0, sizeof(*c));
    return sq_one_row(s, keys ? STMT(s, MAX_SEQ) : STMT(s, ACCOUNT_MAX_SEQ), rc, sq_read_count,
                      &c->v[0], "no change log", "cannot read the change log");
}

static int sqlite_keys_load(struct store *s, int64_t today, struct store_cursor *cursor,
                            store_key_load_cb cb, void *ud)
{
    struct key_walk w = {NULL, cb, ud};
    struct store_cursor c;
    struct store_key k;
    int r;

    /* One read transaction, so that the cursor matches the keys read. */
    if ((r = sq_exec(s, "BEGIN")) != STORE_OK)
        return r;
    if ((r = sq_cursor_at_newest(s, 1, &c)) == STORE_OK) {
        int rc =
            RUN(s, KEYS_LOAD, "SELECT " KEY_COLUMNS ", " KEY_TODAY " FROM api_keys k", "i", today);
        r = sq_each_row(s, STMT(s, KEYS_LOAD), rc, read_key, &k, key_walk_one, &w,
                        "cannot read keys");
    }
    r = sq_end_read(s, r);
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
    return sq_walk_changes(s, STMT(s, KEY_CHANGES), rc, cursor, key_walk_one, &w, &k, read_key, 15,
                           "cannot read key changes");
}

static int sqlite_usage_add(struct store *s, const struct store_usage *u, size_t n)
{
    int r;

    if (n == 0)
        return STORE_OK;
    if ((r = sq_begin(s)) != STORE_OK)
        return r;
    for (size_t i = 0; i < n && r == STORE_OK; i++) {
        int rc = RUN(s, USAGE_DAY,
                     "INSERT INTO key_usage_daily(key_id, day, requests) VALUES (?1, ?2, ?3) "
                     "ON CONFLICT(key_id, day) DO UPDATE SET requests = requests + "
                     "excluded.requests",
                     "tii", u[i].key_id, u[i].day, (int64_t)u[i].requests);
        if ((r = sq_done(s, STMT(s, USAGE_DAY), rc, "cannot record usage")) != STORE_OK)
            break;
        rc = RUN(s, USAGE_LAST_USED,
                 "UPDATE api_keys SET last_used_at = ?2 "
                 "WHERE id = ?1 AND coalesce(last_used_at, 0) < ?2",
                 "ti", u[i].key_id, u[i].last_used);
        r = sq_done(s, STMT(s, USAGE_LAST_USED), rc, "cannot record usage");
    }
    return sq_end(s, r);
}

static int sqlite_key_roll(struct store *s, const char *old_id, const struct store_key *repl,
                           int64_t old_expires_at, const struct store_audit *audit)
{
    int r, rc;

    if ((r = sq_begin(s)) != STORE_OK)
        return r;
    rc = RUN(s, KEY_ROLL_MARK,
             "UPDATE api_keys SET rolled_to = ?2, expires_at = CASE WHEN expires_at "
             "IS NOT NULL AND expires_at < ?3 THEN expires_at ELSE ?3 END "
             "WHERE id = ?1 AND revoked_at IS NULL AND rolled_to IS NULL",
             "tti", old_id, repl->id, old_expires_at);
    if ((r = sq_done(s, STMT(s, KEY_ROLL_MARK), rc, "cannot roll key")) != STORE_OK)
        return sq_end(s, r);
    if (sqlite3_changes(sq_db_of(s)) == 0) {
        rc = RUN(s, KEY_EXISTS, "SELECT 1 FROM api_keys WHERE id = ?1", "t", old_id);
        if ((r = sq_done(s, STMT(s, KEY_EXISTS), rc, "cannot roll key")) == STORE_OK)
            r = rc == SQLITE_ROW
                    ? store_set_error(s, STORE_CONFLICT, "the key is revoked or was already rolled")
                    : store_set_error(s, STORE_NOT_FOUND, "no such key");
        return sq_end(s, r);
    }
    if ((r = insert_key_row(s, repl)) == STORE_OK)
        r = audit_row(s, audit);
    return sq_changed(s, sq_end(s, r));
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
    sq_copy_text(e->account_id, sizeof(e->account_id), q, 2);
    sq_copy_text(e->actor, sizeof(e->actor), q, 3);
    sq_copy_text(e->action, sizeof(e->action), q, 4);
    sq_copy_text(e->target, sizeof(e->target), q, 5);
    sq_copy_text(e->ip, sizeof(e->ip), q, 6);
    sq_copy_text(e->result, sizeof(e->result), q, 7);
    sq_copy_text(e->detail, sizeof(e->detail), q, 8);
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
    return sq_each_row(s, STMT(s, AUDIT_LIST), rc, read_audit, &e, audit_one, &t,
                       "cannot read the audit log");
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
