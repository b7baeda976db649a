/* The SQLite backend: one file in WAL mode, so that readers (the CLI, the server's reads) never
 * wait for the writer. */
#include <errno.h>
#include <fcntl.h>
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

int sqlite_changes_fd(struct store *s)
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

int sqlite_open(struct store *s, const char *path, const char *options)
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
    b->full = (uint8_t)full;
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

#define FK_OFF_MARK "-- konnect: foreign keys off\n"

/* After a migration that ran with foreign keys off: 1 (with the store's message set) when a row
 * refers to one that is not there. */
static int foreign_keys_broken(struct store *s)
{
    sqlite3_stmt *q;
    int broken;

    if (sqlite3_prepare_v2(sq_db_of(s), "PRAGMA foreign_key_check", -1, &q, NULL) != SQLITE_OK) {
        sq_fail(s, "foreign_key_check");
        return 1;
    }
    broken = sqlite3_step(q) != SQLITE_DONE;
    if (broken)
        store_set_error(
            s, STORE_ERROR,
            "table %s has foreign keys to rows that are not there (PRAGMA foreign_key_check)",
            sqlite3_column_type(q, 0) == SQLITE_TEXT ? (const char *)sqlite3_column_text(q, 0)
                                                     : "?");
    sqlite3_finalize(q);
    return broken;
}

int sqlite_migrate(struct store *s)
{
    sqlite3_stmt *q;
    int current = 0;

    if (sq_exec(s, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                   "name TEXT NOT NULL, applied_at INTEGER NOT NULL)") != STORE_OK)
        return STORE_ERROR;
    for (size_t i = 0; i < store_migrations_count; i++) {
        const struct store_migration *m = &store_migrations[i];
        /* A migration that makes a table again runs with foreign keys off (they cannot be
         * turned off inside a transaction), and checks them itself before it commits. */
        int rebuilds = strncmp(m->sql, FK_OFF_MARK, sizeof(FK_OFF_MARK) - 1) == 0;
        if (rebuilds && sq_exec(s, "PRAGMA foreign_keys = OFF") != STORE_OK)
            return STORE_ERROR;
        if (sq_exec(s, "BEGIN IMMEDIATE") != STORE_OK)
            goto fk_on;
        if (sqlite3_prepare_v2(sq_db_of(s),
                               "SELECT coalesce(max(version), 0) FROM schema_migrations", -1, &q,
                               NULL) != SQLITE_OK)
            goto fail;
        current = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : 0;
        sqlite3_finalize(q);
        if (m->version <= current) {
            sq_exec(s, "COMMIT");
            if (rebuilds && sq_exec(s, "PRAGMA foreign_keys = ON") != STORE_OK)
                return STORE_ERROR;
            continue;
        }
        if (sq_exec(s, m->sql) != STORE_OK || (rebuilds && foreign_keys_broken(s))) {
            char msg[512];
            snprintf(msg, sizeof(msg), "migration %s failed: %s", m->name, store_errmsg(s));
            sq_exec(s, "ROLLBACK");
            if (rebuilds)
                sq_exec(s, "PRAGMA foreign_keys = ON");
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
            goto fk_on;
        if (rebuilds && sq_exec(s, "PRAGMA foreign_keys = ON") != STORE_OK)
            return STORE_ERROR;
    }
    return STORE_OK;
fail:
    sq_fail(s, "migration");
    sq_exec(s, "ROLLBACK");
fk_on:
    sq_exec(s, "PRAGMA foreign_keys = ON");
    return STORE_ERROR;
}

/* Prepares (once) and runs a statement with arguments described by fmt: 't' text, 'i' int64,
 * 'h' a STORE_HASH_LEN blob. Leaves the statement positioned on its first row when there is one;
 * the caller reads it and resets. Returns the sqlite3_step code, or the preparation's error code
 * when the statement cannot be prepared (then *cache stays NULL: sqlite3_reset accepts that, and
 * callers read columns only after SQLITE_ROW). */
int sq_vrun(struct store *s, sqlite3_stmt **cache, const char *sql, const char *fmt, va_list ap)
{
    int i = 1, rc;

    if (*cache == NULL && (rc = sqlite3_prepare_v3(sq_db_of(s), sql, -1, SQLITE_PREPARE_PERSISTENT,
                                                   cache, NULL)) != SQLITE_OK)
        return rc;
    sqlite3_reset(*cache);
    sqlite3_clear_bindings(*cache);
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
    return sqlite3_step(*cache);
}

int sq_run(struct store *s, sqlite3_stmt **cache, const char *sql, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sq_vrun(s, cache, sql, fmt, ap);
    va_end(ap);
    return rc;
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

/* Back to synchronous = FULL after a relaxed write; b->relaxed stays set while it cannot be, so
 * that the next sq_begin tries again and no commit that must wait for the disk runs without. */
static int unrelax(struct store *s)
{
    struct sqlite_backend *b = store_backend(s);
    int r;

    if (!b->relaxed)
        return STORE_OK;
    if ((r = sq_exec(s, "PRAGMA synchronous = FULL")) == STORE_OK)
        b->relaxed = 0;
    return r;
}

int sq_begin(struct store *s)
{
    int r = unrelax(s);
    return r != STORE_OK ? r : sq_exec(s, "BEGIN IMMEDIATE");
}

int sq_begin_relaxed(struct store *s)
{
    struct sqlite_backend *b = store_backend(s);
    int r;

    if (b->full && !b->relaxed) {
        if ((r = sq_exec(s, "PRAGMA synchronous = NORMAL")) != STORE_OK)
            return r;
        b->relaxed = 1;
    }
    return sq_exec(s, "BEGIN IMMEDIATE");
}

/* Commits, or rolls back and returns status when status is not STORE_OK (the error already
 * recorded). After a relaxed write the connection waits for the disk again; what was committed
 * is reported so even when that fails (the next sq_begin tries again, and fails while it must). */
int sq_end(struct store *s, int status)
{
    if (status == STORE_OK && (status = sq_exec(s, "COMMIT")) == STORE_OK) {
        unrelax(s);
        return STORE_OK;
    }
    char msg[512];
    kn_strlcpy(msg, store_errmsg(s), sizeof(msg));
    sq_exec(s, "ROLLBACK");
    unrelax(s);
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

int sqlite_ping(struct store *s)
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
    a->suspended_at = sqlite3_column_int64(q, 6);
}

int sqlite_account_find(struct store *s, const char *email_or_id, struct store_account *out)
{
    int rc = RUN(s, ACCOUNT_FIND,
                 "SELECT " ACCOUNT_COLUMNS " FROM accounts WHERE email = lower(?1) OR id = ?1", "t",
                 email_or_id);
    char none[STORE_EMAIL_MAX + 16];
    snprintf(none, sizeof(none), "no account %s", email_or_id);
    return sq_one_row(s, STMT(s, ACCOUNT_FIND), rc, sq_read_account, out, none,
                      "cannot read account");
}

/* The change feed. SQLite has one writer at a time, so a change-log row's sequence number is
 * also its commit order: the cursor is the highest number read (v[0]), and a reader never
 * misses a row by reading `seq > v[0]`. */
int sq_walk_changes(struct store *s, sqlite3_stmt *q, int rc, struct store_cursor *c,
                    int (*one)(void *ud, void *row, sqlite3_stmt *q), void *ud, void *row,
                    void (*read)(sqlite3_stmt *, void *), int seq_col, const char *what)
{
    int64_t seq = c->v[0];

    /* At least one row (seq null when nothing is new), with the oldest and newest change the log
     * holds after seq, -1 when it is empty (two scalar subqueries: SQLite answers a lone min() or
     * max() from the index, but scans the whole log for both in one). */
    if (rc == SQLITE_ROW && store_feed_stale(seq, sqlite3_column_int64(q, seq_col + 1),
                                             sqlite3_column_int64(q, seq_col + 2))) {
        sqlite3_reset(q);
        return STORE_STALE;
    }
    for (; rc == SQLITE_ROW; rc = sqlite3_step(q)) {
        if (sqlite3_column_type(q, seq_col) == SQLITE_NULL)
            continue;
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
static int cursor_at_newest(struct store *s, int keys, struct store_cursor *c)
{
    int rc = keys
                 ? RUN(s, MAX_SEQ, "SELECT coalesce(max(seq), 0) FROM key_changes", "")
                 : RUN(s, ACCOUNT_MAX_SEQ, "SELECT coalesce(max(seq), 0) FROM account_changes", "");
    memset(c, 0, sizeof(*c));
    return sq_one_row(s, keys ? STMT(s, MAX_SEQ) : STMT(s, ACCOUNT_MAX_SEQ), rc, sq_read_count,
                      &c->v[0], "no change log", "cannot read the change log");
}

int sq_load_all(struct store *s, int keys, struct store_cursor *cursor,
                void (*read)(sqlite3_stmt *, void *), void *row,
                int (*one)(void *ud, void *row, sqlite3_stmt *q), void *ud, const char *what,
                int which, const char *sql, const char *fmt, ...)
{
    struct sqlite_backend *b = store_backend(s);
    struct store_cursor c;
    va_list ap;
    int r;

    if ((r = sq_exec(s, "BEGIN")) != STORE_OK)
        return r;
    if ((r = cursor_at_newest(s, keys, &c)) == STORE_OK) {
        va_start(ap, fmt);
        int rc = sq_vrun(s, &b->dash[which], sql, fmt, ap);
        va_end(ap);
        r = sq_each_row(s, b->dash[which], rc, read, row, one, ud, what);
    }
    r = sq_end_read(s, r);
    if (r == STORE_OK)
        *cursor = c;
    return r;
}

/* ---- the nodes table ---------------------------------------------------------------------- */

int sqlite_node_beat(struct store *s, const struct store_node *n)
{
    int r;

    /* Once a second, and nothing waits for it: relaxed (see sq_begin_relaxed). */
    if ((r = sq_begin_relaxed(s)) != STORE_OK)
        return r;
    int rc = RUN(s, NODE_BEAT,
                 "INSERT INTO nodes(id, started_at, seen_ms, key_seq, account_seq, counters, "
                 "version, address, plans_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
                 "ON CONFLICT(id) DO UPDATE SET started_at = excluded.started_at, "
                 "seen_ms = excluded.seen_ms, key_seq = excluded.key_seq, "
                 "account_seq = excluded.account_seq, counters = excluded.counters, "
                 "version = excluded.version, address = excluded.address, "
                 "plans_version = excluded.plans_version",
                 "tiiiittti", n->id, n->started_at, (int64_t)kn_unix_ms(), n->key_seq,
                 n->account_seq, n->counters, n->version, n->address, n->plans_version);
    return sq_end(s, sq_done(s, STMT(s, NODE_BEAT), rc, "cannot write the node's heartbeat"));
}

int sqlite_node_leave(struct store *s, const char *id)
{
    int rc = RUN(s, NODE_LEAVE, "DELETE FROM nodes WHERE id = ?1", "t", id);
    return sq_done(s, STMT(s, NODE_LEAVE), rc, "cannot remove the node");
}

int sqlite_nodes_list(struct store *s, store_node_cb cb, void *ud)
{
    struct store_node n;
    sqlite3_stmt *q;
    int rc = RUN(s, NODES_LIST,
                 "SELECT id, started_at, ?1 - seen_ms, key_seq, account_seq, counters, version, "
                 "address, plans_version FROM nodes ORDER BY seen_ms DESC",
                 "i", (int64_t)kn_unix_ms());
    q = STMT(s, NODES_LIST);
    for (; rc == SQLITE_ROW; rc = sqlite3_step(q)) {
        memset(&n, 0, sizeof(n));
        sq_copy_text(n.id, sizeof(n.id), q, 0);
        n.started_at = sqlite3_column_int64(q, 1);
        n.age_ms = sqlite3_column_int64(q, 2);
        n.key_seq = sqlite3_column_int64(q, 3);
        n.account_seq = sqlite3_column_int64(q, 4);
        sq_copy_text(n.counters, sizeof(n.counters), q, 5);
        sq_copy_text(n.version, sizeof(n.version), q, 6);
        sq_copy_text(n.address, sizeof(n.address), q, 7);
        n.plans_version = sqlite3_column_int64(q, 8);
        if (cb(ud, &n) != 0)
            break;
    }
    return sq_done(s, q, rc, "cannot read the nodes");
}

int sqlite_changes_newest(struct store *s, int64_t *key_seq, int64_t *account_seq,
                          int64_t *plans_version)
{
    struct store_cursor k, a;
    int64_t pv = 0;
    int r;

    if ((r = sq_exec(s, "BEGIN")) != STORE_OK)
        return r;
    if ((r = cursor_at_newest(s, 1, &k)) == STORE_OK &&
        (r = cursor_at_newest(s, 0, &a)) == STORE_OK) {
        int rc = RUN(s, PLANS_MAX, "SELECT coalesce(max(version), 0) FROM plans_versions", "");
        r = sq_one_row(s, STMT(s, PLANS_MAX), rc, sq_read_count, &pv, "no plans",
                       "cannot read the plans");
    }
    if ((r = sq_end_read(s, r)) == STORE_OK) {
        *key_seq = k.v[0];
        *account_seq = a.v[0];
        *plans_version = pv;
    }
    return r;
}

int sqlite_plans_publish(struct store *s, const char *body, int64_t at, const char *by,
                         const struct store_audit *audit, int64_t *version)
{
    int r = sq_begin(s);

    if (r != STORE_OK)
        return r;
    int rc = RUN(s, PLANS_PUBLISH,
                 "INSERT INTO plans_versions(body, created_at, created_by) VALUES (?1, ?2, ?3)",
                 "tit", body, at, by);
    int64_t v = sqlite3_last_insert_rowid(sq_db_of(s)); /* Before the audit row's insert. */
    if ((r = sq_done(s, STMT(s, PLANS_PUBLISH), rc, "cannot publish the plans")) == STORE_OK)
        r = sq_audit_row(s, audit);
    if ((r = sq_changed(s, sq_end(s, r))) == STORE_OK)
        *version = v;
    return r;
}

int sqlite_start_lock(struct store *s, int take)
{
    (void)s, (void)take;
    return STORE_OK;
}

int sqlite_plans_newest(struct store *s, int64_t *version, char **body)
{
    int rc = RUN(s, PLANS_NEWEST,
                 "SELECT version, body FROM plans_versions ORDER BY version DESC LIMIT 1", "");
    sqlite3_stmt *q = STMT(s, PLANS_NEWEST);

    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int64(q, 0);
        const unsigned char *t = sqlite3_column_text(q, 1);
        *body = kn_strdup(t != NULL ? (const char *)t : "");
    } else if (rc == SQLITE_DONE) {
        *version = 0;
        *body = NULL;
    }
    return sq_done(s, q, rc, "cannot read the plans");
}

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

/* Reads the copy back: whole (quick_check), and what it holds. */
static int check_backup(struct store *s, const char *to, struct store_backup_info *info)
{
    static const char sql[] =
        "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM users), "
        "(SELECT count(*) FROM api_keys), (SELECT count(*) FROM usage_ledger), "
        "(SELECT count(*) FROM audit_log), (SELECT page_count * page_size FROM "
        "pragma_page_count, pragma_page_size), (SELECT quick_check FROM pragma_quick_check)";
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int ok = sqlite3_open_v2(to, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
             sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK &&
             sqlite3_step(q) == SQLITE_ROW;
    if (ok) {
        const unsigned char *check = sqlite3_column_text(q, 6);
        *info = (struct store_backup_info){.accounts = sqlite3_column_int64(q, 0),
                                           .users = sqlite3_column_int64(q, 1),
                                           .keys = sqlite3_column_int64(q, 2),
                                           .ledger_rows = sqlite3_column_int64(q, 3),
                                           .audit_entries = sqlite3_column_int64(q, 4),
                                           .bytes = sqlite3_column_int64(q, 5)};
        ok = check != NULL && strcmp((const char *)check, "ok") == 0;
    }
    int r = ok ? STORE_OK
               : store_set_error(s, STORE_ERROR, "the backup %s does not read back whole: %s", to,
                                 db != NULL ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_finalize(q);
    sqlite3_close(db);
    return r;
}

int sqlite_backup(struct store *s, const char *to, struct store_backup_info *info)
{
    sqlite3_stmt *q = NULL;
    int fd = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600), rc;

    if (fd < 0)
        return store_set_error(s, STORE_ERROR, "cannot create %s: %s", to,
                               errno == EEXIST
                                   ? "it exists already (a backup never replaces a file)"
                                   : strerror(errno));
    close(fd);
    /* VACUUM INTO writes into an empty file as into a new one. */
    rc = sqlite3_prepare_v2(sq_db_of(s), "VACUUM INTO ?1", -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(q, 1, to, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) {
        int r = sq_fail(s, "cannot write the backup");
        unlink(to);
        return r;
    }
    if (check_backup(s, to, info) != STORE_OK) {
        unlink(to);
        return STORE_ERROR;
    }
    return STORE_OK;
}

static void sqlite_idle(struct store *s)
{
    struct sqlite_backend *b = store_backend(s);
    checkpointer_restart_log(b->ckpt, b->db, 1);
}

/* The entries named here, then every operation of STORE_OPS and STORE_OPS_OWN (laid out by hand:
 * clang-format would pack the table around the macros). */
#define SQLITE_OP(name, params, args) .name = sqlite_##name,
/* clang-format off */
const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .close = sqlite_close,
    .idle = sqlite_idle,
    .changes_drain = sqlite_changes_drain,
    STORE_OPS(SQLITE_OP)
    STORE_OPS_OWN(SQLITE_OP)
};
/* clang-format on */
#undef SQLITE_OP
