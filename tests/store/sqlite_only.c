/* What only the SQLite backend has: its open options, sync=full relaxed for the per-second
 * writes that nothing waits for, its log kept bounded by the background checkpointer, its
 * refusal of a database from a newer Konnect, and a statement that cannot be prepared answered
 * as an error rather than an exit. */
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "store/migrations.h"
#include "store/sqlite_internal.h"
#include "store/store.h"
#include "unit.h"

/* A writer that commits without pause, as the store thread does under load, with checkpoints on
 * their own thread: the log must stay bounded (it grew without end when the checkpoint
 * connection never opened the log, and when passive checkpoints never caught up). The store
 * thread calls store_idle whenever its mailbox is empty, and the log restarts there (idle_every:
 * commits between two such moments); a writer that is never idle restarts it before a commit
 * once the log is twice as long (idle_every 0). The bounds leave room above the restart points
 * (128 and 256 MB) for the log that a checkpoint thread starved of the CPU lets grow meanwhile
 * (161 MB once, against 160, with the whole suite running on 2 cores); unbounded, it would pass
 * 400 MB. */
/* A ledger row of one request: the fields a test does not care about filled in. */
static void ledger_row(struct store_ledger_row *row, const char *account, const char *key,
                       int64_t at_ms)
{
    memset(row, 0, sizeof(*row));
    kn_strlcpy(row->account_id, account, sizeof(row->account_id));
    kn_strlcpy(row->key_id, key, sizeof(row->key_id));
    kn_strlcpy(row->environment, "production", sizeof(row->environment));
    kn_strlcpy(row->model, "m", sizeof(row->model));
    kn_strlcpy(row->currency, "usd", sizeof(row->currency));
    kn_strlcpy(row->plan, "pro", sizeof(row->plan));
    row->at_ms = at_ms;
}

static void test_log_stays_bounded(const char *path, int idle_every, double max_mb)
{
    char err[256], wal[160], url[200];
    struct store *s;
    struct store_ledger_row row;
    struct stat st;
    off_t biggest = 0;
    uint8_t outcome;
    int ok = 1;

    snprintf(url, sizeof(url), "sqlite:%s?checkpoint=background", path);
    CHECK((s = store_open(url, 1, err, sizeof(err))) != NULL);
    if (s == NULL)
        return;
    snprintf(wal, sizeof(wal), "%s-wal", path);
    ledger_row(&row, "acct_wal", "key_wal", 1795805276000);
    /* Two to three pages a commit: unbounded, the log would pass 400 MB. */
    for (int i = 0; i < 40000 && ok; i++) {
        snprintf(row.request_id, sizeof(row.request_id), "req_wal%02d%019d", idle_every, i);
        ok = store_ledger_add(s, &row, 1, &outcome) == STORE_OK && outcome == STORE_LEDGER_ADDED;
        if (idle_every != 0 && i % idle_every == 0)
            store_idle(s);
        if (i % 500 == 0 && stat(wal, &st) == 0 && st.st_size > biggest)
            biggest = st.st_size;
    }
    CHECK(ok);
    printf("largest log, idle every %d commits: %.1f MB\n", idle_every, (double)biggest / 1048576);
    CHECK(biggest > 0 && (double)biggest < max_mb * 1048576);
    store_close(s);
}

static int count_keys(void *ud, const struct store_key *k, uint32_t today)
{
    (void)k, (void)today;
    ++*(int *)ud;
    return 0;
}

static int64_t scalar(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return v;
}

/* A clock set back makes a later change older: the prune takes only the log's prefix up to the
 * first change still young, never a hole behind it that a reader would read past; and a reader
 * ahead of the log (a store restored from an older copy) must load everything again. */
static void test_prune_takes_a_prefix(const char *path)
{
    char err[256], sql[256];
    struct store *s = store_open(path, 1, err, sizeof(err));
    struct store_account a;
    struct store_retention keep = {
        .change_log_days = 1, .throttle_s = 1, .done_days = 1, .session_idle_s = 3600};
    int64_t deleted, now = kn_unix_now(), young = 0;
    sqlite3 *db;

    CHECK(s != NULL && store_account_create(s, "prefix@example.com", NULL, NULL, &a) == STORE_OK);
    for (int i = 0; i < 5; i++) {
        struct store_key k;
        memset(&k, 0, sizeof(k));
        snprintf(k.id, sizeof(k.id), "key_p%d", i);
        kn_strlcpy(k.account_id, a.id, sizeof(k.account_id));
        kn_strlcpy(k.name, k.id, sizeof(k.name));
        kn_strlcpy(k.mode, "live", sizeof(k.mode));
        kn_strlcpy(k.environment, "production", sizeof(k.environment));
        k.hash[0] = (uint8_t)i;
        kn_strlcpy(k.hint, "sk_live_...x", sizeof(k.hint));
        kn_strlcpy(k.created_by, "cli", sizeof(k.created_by));
        CHECK(store_key_insert(s, &k, 1, NULL) == STORE_OK);
    }
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    young = scalar(db, "SELECT seq FROM key_changes WHERE key_id = 'key_p2'");
    int64_t newest = scalar(db, "SELECT max(seq) FROM key_changes");
    snprintf(sql, sizeof(sql),
             "UPDATE key_changes SET at = CASE WHEN seq = %lld THEN %lld ELSE 0 "
             "END",
             (long long)young, (long long)now);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    CHECK(store_prune(s, &keep, now, &deleted) == STORE_OK);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM key_changes WHERE seq < %lld",
             (long long)young);
    CHECK(scalar(db, sql) == 0);
    CHECK(scalar(db, "SELECT count(*) FROM key_changes WHERE key_id IN ('key_p3', 'key_p4')") == 2);
    struct store_cursor at_young = {{young}}, before = {{young - 2}}, ahead = {{newest + 3}};
    int n = 0;
    CHECK(store_key_changes(s, 1, &at_young, count_keys, &n) == STORE_OK && n == 2);
    n = 0;
    CHECK(store_key_changes(s, 1, &before, count_keys, &n) == STORE_STALE && n == 0);
    CHECK(store_key_changes(s, 1, &ahead, count_keys, &n) == STORE_STALE && n == 0);
    sqlite3_close(db);
    store_close(s);
}

static int no_audit(void *ud, const struct store_audit *e)
{
    (void)ud, (void)e;
    return 0;
}

/* A database as Konnect left it at migration 9 (before admin keys), at path. */
static sqlite3 *old_database(const char *path)
{
    sqlite3 *db;
    char sql[160];

    unlink(path);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT "
                       "NOT NULL, applied_at INTEGER NOT NULL)",
                       NULL, NULL, NULL) == SQLITE_OK);
    for (size_t i = 0; i < store_migrations_count && store_migrations[i].version <= 9; i++) {
        CHECK(sqlite3_exec(db, store_migrations[i].sql, NULL, NULL, NULL) == SQLITE_OK);
        snprintf(sql, sizeof(sql), "INSERT INTO schema_migrations VALUES (%d, 'x', 0)",
                 store_migrations[i].version);
        CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    }
    CHECK(sqlite3_exec(db,
                       "INSERT INTO accounts(id, email, created_at) VALUES ('acct_m', 'm@x.co', 1);"
                       "INSERT INTO api_keys(id, account_id, name, mode, environment, hash, hint,"
                       " created_at, created_by) VALUES"
                       " ('key_b', 'acct_m', 'b', 'live', 'production', x'01', 'h', 2, 'cli'),"
                       " ('key_a', 'acct_m', 'a', 'test', 'development', x'02', 'h', 2, 'cli');"
                       "INSERT INTO key_usage_daily(key_id, day, requests) VALUES"
                       " ('key_b', 20000, 7), ('key_a', 20000, 3);",
                       NULL, NULL, NULL) == SQLITE_OK);
    /* Migration 9 could not hold an admin key. */
    CHECK(sqlite3_exec(db,
                       "INSERT INTO api_keys(id, account_id, name, mode, environment, hash, hint,"
                       " created_at, created_by) VALUES"
                       " ('key_c', 'acct_m', 'c', 'admin', 'production', x'03', 'h', 2, 'cli')",
                       NULL, NULL, NULL) == SQLITE_CONSTRAINT);
    return db;
}

/* Migration 010 makes api_keys again (SQLite cannot change a CHECK constraint) with foreign keys
 * off: on a database of migration 9 with keys, their daily counts and their changes, it keeps
 * every row and the order of the keys; on one whose references are already broken it stops
 * before committing and leaves the database as it was. */
static void test_keys_rebuilt(const char *path)
{
    char err[256];
    struct store *s;
    struct store_cursor cur;
    sqlite3 *db = old_database(path);
    int n = 0;

    CHECK((s = store_open(path, 1, err, sizeof(err))) != NULL);
    CHECK(store_keys_load(s, 20000, &cur, count_keys, &n) == STORE_OK && n == 2);
    store_close(s);
    CHECK(scalar(db, "SELECT max(version) FROM schema_migrations") ==
          store_migrations[store_migrations_count - 1].version);
    CHECK(sqlite3_exec(db,
                       "INSERT INTO api_keys(id, account_id, name, mode, environment, hash, hint,"
                       " created_at, created_by) VALUES"
                       " ('key_c', 'acct_m', 'c', 'admin', 'production', x'03', 'h', 2, 'cli')",
                       NULL, NULL, NULL) == SQLITE_OK);
    CHECK(scalar(db, "SELECT sum(requests) FROM key_usage_daily") == 10);
    CHECK(scalar(db, "SELECT count(*) FROM pragma_foreign_key_check") == 0);
    /* The keys keep their rowids: key_b, key_a, key_c in the order they were made. */
    CHECK(scalar(db, "SELECT rowid FROM api_keys WHERE id = 'key_c'") >
          scalar(db, "SELECT rowid FROM api_keys WHERE id = 'key_a'"));
    CHECK(scalar(db, "SELECT rowid FROM api_keys WHERE id = 'key_a'") >
          scalar(db, "SELECT rowid FROM api_keys WHERE id = 'key_b'"));
    /* The triggers that carry key changes to every server are there again, and work. */
    CHECK(scalar(db, "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND "
                     "tbl_name = 'api_keys'") == 2);
    CHECK(scalar(db, "SELECT count(*) FROM key_changes WHERE key_id = 'key_c'") == 1);
    CHECK(scalar(db, "SELECT count(*) FROM sqlite_master WHERE name = 'api_keys_account'") == 1);
    sqlite3_close(db);

    /* A count of a key that does not exist (written with foreign keys off): the migration
     * refuses to commit, and says why. */
    db = old_database(path);
    CHECK(sqlite3_exec(db,
                       "INSERT INTO key_usage_daily(key_id, day, requests) VALUES"
                       " ('key_gone', 20000, 1)",
                       NULL, NULL, NULL) == SQLITE_OK);
    CHECK(store_open(path, 1, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "foreign") != NULL);
    CHECK(scalar(db, "SELECT max(version) FROM schema_migrations") == 9);
    CHECK(scalar(db, "SELECT count(*) FROM api_keys") == 2);
    sqlite3_close(db);
}

/* The statements of the store's connection that set its durability or end a transaction, one
 * letter each: N (synchronous = NORMAL), F (= FULL), B (BEGIN), C (COMMIT), R (ROLLBACK). */
static int trace_sync(unsigned type, void *ud, void *p, void *x)
{
    char *log = ud;
    const char *sql = sqlite3_sql(p);
    char c = 0;

    (void)type, (void)x;
    if (!strcmp(sql, "PRAGMA synchronous = NORMAL"))
        c = 'N';
    else if (!strcmp(sql, "PRAGMA synchronous = FULL"))
        c = 'F';
    else if (!strncmp(sql, "BEGIN", 5))
        c = 'B';
    else if (!strcmp(sql, "COMMIT"))
        c = 'C';
    else if (!strcmp(sql, "ROLLBACK"))
        c = 'R';
    size_t n = strlen(log);
    if (c != 0 && n + 1 < 64)
        log[n] = c, log[n + 1] = 0;
    return 0;
}

/* Under sync=full the per-second writes that nothing waits for (request counts, the heartbeat)
 * commit without a flush of their own, and the connection waits for the disk again straight
 * after, failed or not: a ledger commit always runs with synchronous = FULL. */
static void test_full_relaxes_housekeeping(const char *path)
{
    char err[256], url[200], log[64] = "";
    struct store *s;
    struct store_account a;
    struct store_key k;
    struct store_usage u;
    struct store_node n;
    struct store_ledger_row row;
    uint8_t outcome;

    snprintf(url, sizeof(url), "sqlite:%s?sync=full&checkpoint=inline", path);
    CHECK((s = store_open(url, 1, err, sizeof(err))) != NULL);
    if (s == NULL)
        return;
    sqlite3 *db = ((struct sqlite_backend *)store_backend(s))->db;
    CHECK(scalar(db, "PRAGMA synchronous") == 2);
    CHECK(store_account_create(s, "full@example.com", NULL, NULL, &a) == STORE_OK);
    memset(&k, 0, sizeof(k));
    strcpy(k.id, "key_full");
    kn_strlcpy(k.account_id, a.id, sizeof(k.account_id));
    strcpy(k.name, "full");
    strcpy(k.mode, "live");
    strcpy(k.environment, "production");
    memset(k.hash, 7, sizeof(k.hash));
    strcpy(k.hint, "sk_live_...full");
    strcpy(k.created_by, "cli");
    k.created_at = 100;
    CHECK(store_key_insert(s, &k, 1, NULL) == STORE_OK);
    sqlite3_trace_v2(db, SQLITE_TRACE_STMT, trace_sync, log);

    memset(&u, 0, sizeof(u));
    strcpy(u.key_id, "key_full");
    u.day = 20790;
    u.requests = 3;
    u.last_used = 1796256000;
    CHECK(store_usage_add(s, &u, 1) == STORE_OK);
    CHECK(!strcmp(log, "NBCF"));
    /* SQLite says which last uses it wrote (the store thread then skips the next minute's). */
    CHECK(u.last_used_written);
    log[0] = 0;
    u.last_used += 59;
    u.requests = 0;
    CHECK(store_usage_add(s, &u, 1) == STORE_OK && !u.last_used_written);
    CHECK(!strcmp(log, "NBCF"));
    u.last_used -= 59;
    u.requests = 3;
    CHECK(scalar(db, "PRAGMA synchronous") == 2);

    /* A count that cannot be written (no such key) is rolled back, and the connection waits for
     * the disk again all the same. */
    log[0] = 0;
    strcpy(u.key_id, "key_none");
    CHECK(store_usage_add(s, &u, 1) != STORE_OK);
    CHECK(!strcmp(log, "NBRF"));
    CHECK(scalar(db, "PRAGMA synchronous") == 2);

    log[0] = 0;
    memset(&n, 0, sizeof(n));
    strcpy(n.id, "node_full");
    n.started_at = 1796256000;
    strcpy(n.counters, "local");
    strcpy(n.version, "test");
    CHECK(store_node_beat(s, &n) == STORE_OK);
    CHECK(!strcmp(log, "NBCF"));

    /* A bill: never relaxed. */
    log[0] = 0;
    ledger_row(&row, a.id, "key_full", 1796256000000);
    kn_strlcpy(row.request_id, "req_full", sizeof(row.request_id));
    CHECK(store_ledger_add(s, &row, 1, &outcome) == STORE_OK && outcome == STORE_LEDGER_ADDED);
    CHECK(strchr(log, 'N') == NULL && strchr(log, 'C') != NULL);
    CHECK(scalar(db, "PRAGMA synchronous") == 2);
    CHECK(scalar(db, "SELECT requests FROM key_usage_daily WHERE key_id = 'key_full'") == 3);
    sqlite3_trace_v2(db, 0, NULL, NULL);
    store_close(s);

    /* Under sync=normal nothing changes the connection's durability. */
    snprintf(url, sizeof(url), "sqlite:%s?checkpoint=inline", path);
    CHECK((s = store_open(url, 1, err, sizeof(err))) != NULL);
    if (s == NULL)
        return;
    db = ((struct sqlite_backend *)store_backend(s))->db;
    log[0] = 0;
    sqlite3_trace_v2(db, SQLITE_TRACE_STMT, trace_sync, log);
    strcpy(u.key_id, "key_full");
    CHECK(store_usage_add(s, &u, 1) == STORE_OK);
    CHECK(!strcmp(log, "BC"));
    CHECK(scalar(db, "PRAGMA synchronous") == 1);
    sqlite3_trace_v2(db, 0, NULL, NULL);
    store_close(s);
}

int main(void)
{
    char dir[] = "/tmp/konnect-sqlite-XXXXXX", path[128], url[200], err[256];
    struct store *s;
    struct stat st;
    sqlite3 *db;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/konnect.db", dir);

    /* An option misspelt is refused before the database is created. */
    snprintf(url, sizeof(url), "sqlite:%s?sync=ful", path);
    CHECK(store_open(url, 1, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "sync=ful") != NULL && strstr(err, "sync=full") != NULL);
    CHECK(stat(path, &st) != 0);
    snprintf(url, sizeof(url), "sqlite:%s?sync=full&checkpoint=inline", path);
    CHECK((s = store_open(url, 1, err, sizeof(err))) != NULL);
    store_close(s);
    /* A plain path is a path, '?' and all. */
    char odd[160];
    snprintf(odd, sizeof(odd), "%s/odd?sync=full", dir);
    CHECK((s = store_open(odd, 1, err, sizeof(err))) != NULL);
    store_close(s);
    CHECK(stat(odd, &st) == 0);

    /* A statement that cannot be prepared (its table is gone) is an error, not an exit. */
    CHECK((s = store_open(path, 1, err, sizeof(err))) != NULL);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "DROP TABLE audit_log", NULL, NULL, NULL) == SQLITE_OK);
    CHECK(store_audit_list(s, "", 0, 10, no_audit, NULL) == STORE_ERROR);
    CHECK(strstr(store_errmsg(s), "audit_log") != NULL);
    store_close(s);

    /* A database migrated by a newer Konnect is refused, with or without migrating. */
    CHECK(sqlite3_exec(db,
                       "INSERT INTO schema_migrations(version, name, applied_at) "
                       "VALUES (999, '999_future.sql', 0)",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK(store_open(path, 1, err, sizeof(err)) == NULL && strstr(err, "newer") != NULL);
    CHECK(store_open(path, 0, err, sizeof(err)) == NULL && strstr(err, "999") != NULL);

    snprintf(path, sizeof(path), "%s/rebuilt.db", dir);
    test_keys_rebuilt(path);
    snprintf(path, sizeof(path), "%s/prefix.db", dir);
    test_prune_takes_a_prefix(path);
    snprintf(path, sizeof(path), "%s/full.db", dir);
    test_full_relaxes_housekeeping(path);
    snprintf(path, sizeof(path), "%s/log.db", dir);
    test_log_stays_bounded(path, 4, 200);
    test_log_stays_bounded(path, 0, 340);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return unit_result();
}
