/* The SQLite backend's keys: their rows, their changes with the audit entry each commits with,
 * the change feed's key half, request counts, and the audit log (see sqlite_internal.h). */
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/sqlite_internal.h"
#include "store/store.h"

/* A key's columns (0 to KEY_NCOLUMNS - 1, read by read_key); KEY_TODAY is its request count on
 * day ?1, read after them. */
#define KEY_COLUMNS                                                                                \
    "k.id, k.account_id, k.name, k.mode, k.environment, k.hash, k.hint, k.created_at, "            \
    "k.created_by, coalesce(k.last_used_at, 0), coalesce(k.expires_at, 0), "                       \
    "coalesce(k.revoked_at, 0), coalesce(k.rolled_to, ''), k.ip_allowlist, k.models, "             \
    "k.requests_per_minute, k.monthly_requests, coalesce(k.quota_key, k.id)"
#define KEY_NCOLUMNS 18
#define KEY_TODAY                                                                                  \
    "coalesce((SELECT requests FROM key_usage_daily d WHERE d.key_id = k.id AND d.day = ?1), 0)"

/* Writes an audit entry inside the caller's transaction (none when e is NULL). */
int sq_audit_row(struct store *s, const struct store_audit *e)
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
                 "created_at, created_by, expires_at, ip_allowlist, models, requests_per_minute, "
                 "monthly_requests, quota_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                 "nullif(?10, 0), ?11, ?12, ?13, ?14, nullif(nullif(?15, ''), ?1))",
                 "tttttht"
                 "itittiit",
                 k->id, k->account_id, k->name, k->mode, k->environment, k->hash, k->hint,
                 k->created_at, k->created_by, k->expires_at, k->ip_allowlist, k->models,
                 k->requests_per_minute, k->monthly_requests, k->quota_key);
    return sq_done(s, STMT(s, KEY_INSERT), rc, "cannot create key");
}

int sqlite_key_insert(struct store *s, const struct store_key *keys, size_t n,
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
        r = sq_audit_row(s, audit);
    return sq_changed(s, sq_end(s, r));
}

void sq_read_count(sqlite3_stmt *q, void *out)
{
    *(int64_t *)out = sqlite3_column_int64(q, 0);
}

int sqlite_key_count(struct store *s, int64_t *count)
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
    sq_copy_text(k->models, sizeof(k->models), q, 14);
    k->requests_per_minute = sqlite3_column_int64(q, 15);
    k->monthly_requests = sqlite3_column_int64(q, 16);
    sq_copy_text(k->quota_key, sizeof(k->quota_key), q, 17);
    k->refused = 0;
}

int sqlite_key_find(struct store *s, const char *id, const uint8_t *hash, struct store_key *out)
{
    int rc =
        id != NULL
            ? RUN(s, KEY_FIND_ID, "SELECT " KEY_COLUMNS " FROM api_keys k WHERE k.id = ?1", "t", id)
            : RUN(s, KEY_FIND_HASH, "SELECT " KEY_COLUMNS " FROM api_keys k WHERE k.hash = ?1", "h",
                  hash);
    return sq_one_row(s, id != NULL ? STMT(s, KEY_FIND_ID) : STMT(s, KEY_FIND_HASH), rc, read_key,
                      out, "no such key", "cannot read key");
}

/* A walk over keys with one count beside each (column KEY_NCOLUMNS), for the two callback types. */
static int key_walk_one(void *ud, void *row, sqlite3_stmt *q)
{
    struct sq_walk *w = ud;
    int64_t count = sqlite3_column_int64(q, KEY_NCOLUMNS);
    if (w->key_list != NULL && sqlite3_column_count(q) > KEY_NCOLUMNS + 1)
        ((struct store_key *)row)->refused = sqlite3_column_int64(q, KEY_NCOLUMNS + 1);
    return w->key_list != NULL ? w->key_list(w->ud, row, (uint64_t)count)
                               : w->key_load(w->ud, row, (uint32_t)count);
}

int sqlite_key_list(struct store *s, const char *account_id, store_key_list_cb cb, void *ud)
{
    struct sq_walk w = {.key_list = cb, .ud = ud};
    struct store_key k;
    int rc = RUN(s, KEY_LIST,
                 "SELECT " KEY_COLUMNS ", coalesce((SELECT sum(requests) FROM key_usage_daily d "
                 "WHERE d.key_id = k.id), 0), coalesce((SELECT sum(refused) FROM "
                 "key_usage_daily d WHERE d.key_id = k.id), 0) FROM api_keys k "
                 "WHERE k.account_id = ?1 ORDER BY k.created_at, k.rowid",
                 "t", account_id);
    return sq_each_row(s, STMT(s, KEY_LIST), rc, read_key, &k, key_walk_one, &w,
                       "cannot read keys");
}

/* A one-statement key change (the statement `which`, its SQL and bindings as sq_run's) and its
 * audit entry, in one transaction: STORE_NOT_FOUND when the statement changed no row. */
static int key_change(struct store *s, const struct store_audit *audit, int which, const char *sql,
                      const char *fmt, ...)
{
    struct sqlite_backend *b = store_backend(s);
    va_list ap;
    int r = sq_begin(s);

    if (r != STORE_OK)
        return r;
    va_start(ap, fmt);
    int rc = sq_vrun(s, &b->dash[which], sql, fmt, ap);
    va_end(ap);
    r = sq_done(s, b->dash[which], rc, "cannot update key");
    if (r == STORE_OK && sqlite3_changes(sq_db_of(s)) == 0)
        r = store_set_error(s, STORE_NOT_FOUND, "no such key");
    if (r == STORE_OK)
        r = sq_audit_row(s, audit);
    return sq_changed(s, sq_end(s, r));
}

int sqlite_key_revoke(struct store *s, const char *id, int64_t at, const char *actor,
                      const struct store_audit *audit)
{
    return key_change(s, audit, DS_KEY_REVOKE,
                      "UPDATE api_keys SET revoked_by = coalesce(revoked_by, ?3), "
                      "revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                      "tit", id, at, actor);
}

int sqlite_key_expire(struct store *s, const char *id, int64_t at, const struct store_audit *audit)
{
    return key_change(s, audit, DS_KEY_EXPIRE,
                      "UPDATE api_keys SET expires_at = nullif(?2, 0) WHERE id = ?1", "ti", id, at);
}

int sqlite_key_rename(struct store *s, const char *id, const char *name,
                      const struct store_audit *audit)
{
    return key_change(s, audit, DS_KEY_RENAME, "UPDATE api_keys SET name = ?2 WHERE id = ?1", "tt",
                      id, name);
}

int sqlite_key_set_allowlist(struct store *s, const char *id, const char *allowlist,
                             const struct store_audit *audit)
{
    return key_change(s, audit, DS_KEY_ALLOWLIST,
                      "UPDATE api_keys SET ip_allowlist = ?2 WHERE id = ?1", "tt", id, allowlist);
}

int sqlite_key_set_restrictions(struct store *s, const char *id, const char *models,
                                int64_t requests_per_minute, int64_t monthly_requests,
                                const struct store_audit *audit)
{
    return key_change(s, audit, DS_KEY_RESTRICT,
                      "UPDATE api_keys SET models = ?2, requests_per_minute = ?3, "
                      "monthly_requests = ?4 WHERE id = ?1",
                      "ttii", id, models, requests_per_minute, monthly_requests);
}

int sqlite_keys_load(struct store *s, int64_t today, struct store_cursor *cursor,
                     store_key_load_cb cb, void *ud)
{
    struct sq_walk w = {.key_load = cb, .ud = ud};
    struct store_key k;

    return sq_load_all(s, 1, cursor, read_key, &k, key_walk_one, &w, "cannot read keys",
                       DS_KEYS_LOAD, "SELECT " KEY_COLUMNS ", " KEY_TODAY " FROM api_keys k", "i",
                       today);
}

int sqlite_key_changes(struct store *s, int64_t today, struct store_cursor *cursor,
                       store_key_load_cb cb, void *ud)
{
    struct sq_walk w = {.key_load = cb, .ud = ud};
    struct store_key k;
    int rc = RUN(s, KEY_CHANGES,
                 "SELECT " KEY_COLUMNS ", " KEY_TODAY
                 ", c.seq, coalesce(m.lo, -1), coalesce(m.hi, -1) FROM (SELECT (SELECT "
                 "min(seq) FROM key_changes) AS lo, (SELECT max(seq) FROM key_changes) AS hi) m "
                 "LEFT JOIN (key_changes c "
                 "JOIN api_keys k ON k.id = c.key_id) ON c.seq > ?2 ORDER BY c.seq",
                 "ii", today, cursor->v[0]);
    return sq_walk_changes(s, STMT(s, KEY_CHANGES), rc, cursor, key_walk_one, &w, &k, read_key,
                           KEY_NCOLUMNS + 1, "cannot read key changes");
}

int sqlite_usage_add(struct store *s, struct store_usage *u, size_t n)
{
    int r;

    if (n == 0)
        return STORE_OK;
    /* Written every second by the store thread between group commits: relaxed, so that the
     * answers queued behind it wait for no flush of the disk but their own commit's. */
    if ((r = sq_begin_relaxed(s)) != STORE_OK)
        return r;
    for (size_t i = 0; i < n && r == STORE_OK; i++) {
        int rc = RUN(s, USAGE_DAY,
                     "INSERT INTO key_usage_daily(key_id, day, requests, refused) "
                     "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(key_id, day) DO UPDATE SET "
                     "requests = requests + excluded.requests, "
                     "refused = refused + excluded.refused",
                     "tiii", u[i].key_id, u[i].day, (int64_t)u[i].requests, (int64_t)u[i].refused);
        u[i].last_used_written = 0;
        if ((r = sq_done(s, STMT(s, USAGE_DAY), rc, "cannot record usage")) != STORE_OK)
            break;
        if (u[i].last_used == 0)
            continue;
        rc = RUN(s, USAGE_LAST_USED,
                 "UPDATE api_keys SET last_used_at = ?2 "
                 "WHERE id = ?1 AND coalesce(last_used_at, 0) <= ?2 - " STORE_LAST_USED_EVERY_S,
                 "ti", u[i].key_id, u[i].last_used);
        if ((r = sq_done(s, STMT(s, USAGE_LAST_USED), rc, "cannot record usage")) == STORE_OK)
            u[i].last_used_written = sqlite3_changes(sq_db_of(s)) > 0;
    }
    return sq_end(s, r);
}

int sqlite_key_roll(struct store *s, const char *old_id, const struct store_key *repl,
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
        r = sq_audit_row(s, audit);
    return sq_changed(s, sq_end(s, r));
}

int sqlite_audit_add(struct store *s, const struct store_audit *e)
{
    return sq_audit_row(s, e);
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

static int audit_one(void *ud, void *row, sqlite3_stmt *q)
{
    struct sq_walk *w = ud;
    (void)q;
    return w->audit(w->ud, row);
}

int sqlite_audit_list(struct store *s, const char *account_id, int64_t before_id, int limit,
                      store_audit_cb cb, void *ud)
{
    struct sq_walk t = {.audit = cb, .ud = ud};
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
