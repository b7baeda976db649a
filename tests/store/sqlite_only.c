/* What only the SQLite backend has: its open options, its log kept bounded by the background
 * checkpointer, its refusal of a database from a newer Konnect, and a statement that cannot be
 * prepared answered as an error rather than an exit. */
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "store/store.h"
#include "unit.h"

/* A writer that commits without pause, as the store thread does under load, with checkpoints on
 * their own thread: the log must stay bounded (it grew without end when the checkpoint
 * connection never opened the log, and when passive checkpoints never caught up). The store
 * thread calls store_idle whenever its mailbox is empty, and the log restarts there (idle_every:
 * commits between two such moments); a writer that is never idle restarts it before a commit
 * once the log is twice as long (idle_every 0). */
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
    memset(&row, 0, sizeof(row));
    kn_strlcpy(row.account_id, "acct_wal", sizeof(row.account_id));
    kn_strlcpy(row.key_id, "key_wal", sizeof(row.key_id));
    kn_strlcpy(row.environment, "production", sizeof(row.environment));
    kn_strlcpy(row.model, "m", sizeof(row.model));
    kn_strlcpy(row.currency, "usd", sizeof(row.currency));
    kn_strlcpy(row.plan, "pro", sizeof(row.plan));
    row.at_ms = 1795805276000;
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

static int no_audit(void *ud, const struct store_audit *e)
{
    (void)ud, (void)e;
    return 0;
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

    snprintf(path, sizeof(path), "%s/log.db", dir);
    test_log_stays_bounded(path, 4, 160);
    test_log_stays_bounded(path, 0, 300);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return unit_result();
}
