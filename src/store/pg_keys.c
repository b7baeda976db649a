/* The PostgreSQL backend's keys: their rows, their changes with the audit entry each commits
 * with, the change feed's key half, request counts, and the audit log (see pg_internal.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/pg_internal.h"
#include "store/store.h"

/* A key's columns (0 to KEY_NCOLUMNS - 1, read by read_key); KEY_TODAY is its request count on
 * day $1, read after them. */
#define KEY_COLUMNS                                                                                \
    "k.id, k.account_id, k.name, k.mode, k.environment, k.hash, k.hint, k.created_at, "            \
    "k.created_by, coalesce(k.last_used_at, 0), coalesce(k.expires_at, 0), "                       \
    "coalesce(k.revoked_at, 0), coalesce(k.rolled_to, ''), k.ip_allowlist, k.models, "             \
    "k.requests_per_minute, k.monthly_requests, coalesce(k.quota_key, k.id)"
#define KEY_NCOLUMNS 18
#define KEY_TODAY                                                                                  \
    "coalesce((SELECT requests FROM key_usage_daily d WHERE d.key_id = k.id AND d.day = $1), 0)"

/* Writes an audit entry inside the caller's transaction (none when e is NULL). */
int pg_audit_row(struct store *s, const struct store_audit *e)
{
    if (e == NULL)
        return STORE_OK;
    return PG_RUN(s, AUDIT_ADD,
                  "INSERT INTO audit_log(at, account_id, actor, action, target, ip, result, "
                  "detail) VALUES ($1, nullif($2, ''), $3, $4, $5, nullif($6, ''), $7, $8)",
                  NULL, "cannot write the audit log", "ittttttt", e->at, e->account_id, e->actor,
                  e->action, e->target, e->ip, e->result, e->detail);
}

/* Inserts one key row inside the caller's transaction. */
static int insert_key_row(struct store *s, const struct store_key *k)
{
    return PG_RUN(s, KEY_INSERT,
                  "INSERT INTO api_keys(id, account_id, name, mode, environment, hash, hint, "
                  "created_at, created_by, expires_at, ip_allowlist, models, requests_per_minute, "
                  "monthly_requests, quota_key) "
                  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, nullif($10::bigint, 0), $11, $12, "
                  "$13, $14, nullif(nullif($15, ''), $1))",
                  NULL, "cannot create key",
                  "tttttht"
                  "itittiit",
                  k->id, k->account_id, k->name, k->mode, k->environment, k->hash, k->hint,
                  k->created_at, k->created_by, k->expires_at, k->ip_allowlist, k->models,
                  k->requests_per_minute, k->monthly_requests, k->quota_key);
}

int pg_key_insert(struct store *s, const struct store_key *keys, size_t n,
                  const struct store_audit *audit)
{
    int r;

    if ((r = pg_begin(s)) != STORE_OK)
        return r;
    for (size_t i = 0; i < n && r == STORE_OK; i++)
        r = insert_key_row(s, &keys[i]);
    if (r == STORE_OK)
        r = pg_audit_row(s, audit);
    return pg_end(s, r);
}

int pg_key_count(struct store *s, int64_t *count)
{
    PGresult *res;
    int r = PG_RUN(s, KEY_COUNT, "SELECT count(*) FROM api_keys", &res, "cannot count keys", "");
    return r != STORE_OK ? r : pg_one_row(s, res, pg_read_count, count, "no count");
}

static void read_key(PGresult *res, int i, void *out)
{
    struct store_key *k = out;

    memset(k, 0, sizeof(*k));
    pg_text(k->id, sizeof(k->id), res, i, 0);
    pg_text(k->account_id, sizeof(k->account_id), res, i, 1);
    pg_text(k->name, sizeof(k->name), res, i, 2);
    pg_text(k->mode, sizeof(k->mode), res, i, 3);
    pg_text(k->environment, sizeof(k->environment), res, i, 4);
    pg_hash(k->hash, res, i, 5);
    pg_text(k->hint, sizeof(k->hint), res, i, 6);
    k->created_at = pg_int(res, i, 7);
    pg_text(k->created_by, sizeof(k->created_by), res, i, 8);
    k->last_used_at = pg_int(res, i, 9);
    k->expires_at = pg_int(res, i, 10);
    k->revoked_at = pg_int(res, i, 11);
    pg_text(k->rolled_to, sizeof(k->rolled_to), res, i, 12);
    pg_text(k->ip_allowlist, sizeof(k->ip_allowlist), res, i, 13);
    pg_text(k->models, sizeof(k->models), res, i, 14);
    k->requests_per_minute = pg_int(res, i, 15);
    k->monthly_requests = pg_int(res, i, 16);
    pg_text(k->quota_key, sizeof(k->quota_key), res, i, 17);
    k->refused = 0;
}

int pg_key_find(struct store *s, const char *id, const uint8_t *hash, struct store_key *out)
{
    PGresult *res;
    int r =
        id != NULL
            ? PG_RUN(s, KEY_FIND_ID, "SELECT " KEY_COLUMNS " FROM api_keys k WHERE k.id = $1", &res,
                     "cannot read key", "t", id)
            : PG_RUN(s, KEY_FIND_HASH, "SELECT " KEY_COLUMNS " FROM api_keys k WHERE k.hash = $1",
                     &res, "cannot read key", "h", hash);
    return r != STORE_OK ? r : pg_one_row(s, res, read_key, out, "no such key");
}

/* A walk over keys with one count beside each (column KEY_NCOLUMNS), for the two callback types. */
static int key_walk_one(void *ud, void *row, PGresult *res, int i)
{
    struct pg_walk *w = ud;
    int64_t count = pg_int(res, i, KEY_NCOLUMNS);
    if (w->key_list != NULL && PQnfields(res) > KEY_NCOLUMNS + 1)
        ((struct store_key *)row)->refused = pg_int(res, i, KEY_NCOLUMNS + 1);
    return w->key_list != NULL ? w->key_list(w->ud, row, (uint64_t)count)
                               : w->key_load(w->ud, row, (uint32_t)count);
}

int pg_key_list(struct store *s, const char *account_id, store_key_list_cb cb, void *ud)
{
    struct pg_walk w = {.key_list = cb, .ud = ud};
    struct store_key k;
    PGresult *res;
    int r = PG_RUN(s, KEY_LIST,
                   "SELECT " KEY_COLUMNS ", coalesce((SELECT sum(requests) FROM key_usage_daily d "
                   "WHERE d.key_id = k.id), 0), coalesce((SELECT sum(refused) FROM "
                   "key_usage_daily d WHERE d.key_id = k.id), 0) FROM api_keys k "
                   "WHERE k.account_id = $1 ORDER BY k.created_at, k.ord",
                   &res, "cannot read keys", "t", account_id);
    return r != STORE_OK ? r : pg_each_row(res, read_key, &k, key_walk_one, &w);
}

/* A one-statement key change (the statement `which`, its SQL and parameters as pg_run's) and its
 * audit entry, in one transaction: STORE_NOT_FOUND when the statement changed no row. */
static int key_change(struct store *s, const struct store_audit *audit, int which, const char *sql,
                      const char *fmt, ...)
{
    PGresult *res = NULL;
    va_list ap;
    int r = pg_begin(s);

    if (r != STORE_OK)
        return r;
    va_start(ap, fmt);
    r = pg_vrun(s, which, sql, &res, "cannot update key", fmt, ap);
    va_end(ap);
    if (r == STORE_OK && pg_changes(res) == 0)
        r = store_set_error(s, STORE_NOT_FOUND, "no such key");
    PQclear(res);
    if (r == STORE_OK)
        r = pg_audit_row(s, audit);
    return pg_end(s, r);
}

int pg_key_revoke(struct store *s, const char *id, int64_t at, const char *actor,
                  const struct store_audit *audit)
{
    return key_change(s, audit, PS_KEY_REVOKE,
                      "UPDATE api_keys SET revoked_by = coalesce(revoked_by, $3), "
                      "revoked_at = coalesce(revoked_at, $2) WHERE id = $1",
                      "tit", id, at, actor);
}

int pg_key_expire(struct store *s, const char *id, int64_t at, const struct store_audit *audit)
{
    return key_change(s, audit, PS_KEY_EXPIRE,
                      "UPDATE api_keys SET expires_at = nullif($2::bigint, 0) WHERE id = $1", "ti",
                      id, at);
}

int pg_key_rename(struct store *s, const char *id, const char *name,
                  const struct store_audit *audit)
{
    return key_change(s, audit, PS_KEY_RENAME, "UPDATE api_keys SET name = $2 WHERE id = $1", "tt",
                      id, name);
}

int pg_key_set_allowlist(struct store *s, const char *id, const char *allowlist,
                         const struct store_audit *audit)
{
    return key_change(s, audit, PS_KEY_ALLOWLIST,
                      "UPDATE api_keys SET ip_allowlist = $2 WHERE id = $1", "tt", id, allowlist);
}

int pg_key_set_restrictions(struct store *s, const char *id, const char *models,
                            int64_t requests_per_minute, int64_t monthly_requests,
                            const struct store_audit *audit)
{
    return key_change(s, audit, PS_KEY_RESTRICT,
                      "UPDATE api_keys SET models = $2, requests_per_minute = $3, "
                      "monthly_requests = $4 WHERE id = $1",
                      "ttii", id, models, requests_per_minute, monthly_requests);
}

int pg_keys_load(struct store *s, int64_t today, struct store_cursor *cursor, store_key_load_cb cb,
                 void *ud)
{
    struct pg_walk w = {.key_load = cb, .ud = ud};
    struct store_key k;

    return pg_load_all(s, 1, cursor, read_key, &k, key_walk_one, &w, "cannot read keys",
                       PS_KEYS_LOAD, "SELECT " KEY_COLUMNS ", " KEY_TODAY " FROM api_keys k", "i",
                       today);
}

int pg_key_changes(struct store *s, int64_t today, struct store_cursor *cursor,
                   store_key_load_cb cb, void *ud)
{
    struct pg_walk w = {.key_load = cb, .ud = ud};
    struct store_key k;
    PGresult *res;
    int r = PG_RUN(s, KEY_CHANGES,
                   "SELECT " KEY_COLUMNS ", " KEY_TODAY
                   ", c.seq, coalesce(m.lo, -1), coalesce(m.hi, -1) FROM (SELECT (SELECT "
                   "min(seq) FROM key_changes) AS lo, (SELECT max(seq) FROM key_changes) AS hi) "
                   "m LEFT JOIN (key_changes c "
                   "JOIN api_keys k ON k.id = c.key_id) ON c.seq > $2 ORDER BY c.seq",
                   &res, "cannot read key changes", "ii", today, cursor->v[0]);
    return r != STORE_OK
               ? r
               : pg_walk_changes(res, cursor, key_walk_one, &w, &k, read_key, KEY_NCOLUMNS + 1);
}

int pg_usage_add(struct store *s, struct store_usage *u, size_t n)
{
    struct pg_array ids = {0}, days = {0}, requests = {0}, last = {0}, refused = {0};
    int r;

    if (n == 0)
        return STORE_OK;
    for (size_t i = 0; i < n; i++) {
        pg_array_text(&ids, u[i].key_id);
        pg_array_int(&days, u[i].day);
        pg_array_int(&requests, u[i].requests);
        pg_array_int(&refused, u[i].refused);
        pg_array_int(&last, u[i].last_used);
        u[i].last_used_written = 0; /* One statement for all: which rows it changed is not known. */
    }
    /* One statement for the whole batch: the day counts, and the last-used times (only ever
     * forward, and at most once a minute: store.h). */
    r = PG_RUN(s, USAGE_ADD,
               "WITH u AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], "
               "$4::bigint[], $5::bigint[]) AS t(key_id, day, requests, last_used, refused)), "
               "d AS (INSERT INTO key_usage_daily(key_id, day, requests, refused) "
               "SELECT key_id, day, sum(requests), sum(refused) FROM u GROUP BY key_id, day "
               "ON CONFLICT (key_id, day) DO UPDATE SET "
               "requests = key_usage_daily.requests + excluded.requests, "
               "refused = key_usage_daily.refused + excluded.refused) "
               "UPDATE api_keys k SET last_used_at = m.last_used FROM "
               "(SELECT key_id, max(last_used) AS last_used FROM u GROUP BY key_id) m "
               "WHERE k.id = m.key_id AND coalesce(k.last_used_at, 0) <= m.last_used "
               "- " STORE_LAST_USED_EVERY_S,
               NULL, "cannot record usage", "aaaaa", pg_array_end(&ids), pg_array_end(&days),
               pg_array_end(&requests), pg_array_end(&last), pg_array_end(&refused));
    pg_array_free(&ids);
    pg_array_free(&days);
    pg_array_free(&requests);
    pg_array_free(&last);
    pg_array_free(&refused);
    return r;
}

int pg_key_roll(struct store *s, const char *old_id, const struct store_key *repl,
                int64_t old_expires_at, const struct store_audit *audit)
{
    PGresult *res = NULL;
    int r;

    if ((r = pg_begin(s)) != STORE_OK)
        return r;
    r = PG_RUN(s, KEY_ROLL_MARK,
               "UPDATE api_keys SET rolled_to = $2, expires_at = CASE WHEN expires_at "
               "IS NOT NULL AND expires_at < $3 THEN expires_at ELSE $3 END "
               "WHERE id = $1 AND revoked_at IS NULL AND rolled_to IS NULL",
               &res, "cannot roll key", "tti", old_id, repl->id, old_expires_at);
    if (r != STORE_OK)
        return pg_end(s, r);
    long changed = pg_changes(res);
    PQclear(res);
    if (changed == 0) {
        r = PG_RUN(s, KEY_EXISTS, "SELECT 1 FROM api_keys WHERE id = $1", &res, "cannot roll key",
                   "t", old_id);
        if (r == STORE_OK) {
            int exists = PQntuples(res) > 0;
            PQclear(res);
            r = exists
                    ? store_set_error(s, STORE_CONFLICT, "the key is revoked or was already rolled")
                    : store_set_error(s, STORE_NOT_FOUND, "no such key");
        }
        return pg_end(s, r);
    }
    if ((r = insert_key_row(s, repl)) == STORE_OK)
        r = pg_audit_row(s, audit);
    return pg_end(s, r);
}

int pg_audit_add(struct store *s, const struct store_audit *e)
{
    return pg_audit_row(s, e);
}

static void read_audit(PGresult *res, int i, void *out)
{
    struct store_audit *e = out;
    memset(e, 0, sizeof(*e));
    e->id = pg_int(res, i, 0);
    e->at = pg_int(res, i, 1);
    pg_text(e->account_id, sizeof(e->account_id), res, i, 2);
    pg_text(e->actor, sizeof(e->actor), res, i, 3);
    pg_text(e->action, sizeof(e->action), res, i, 4);
    pg_text(e->target, sizeof(e->target), res, i, 5);
    pg_text(e->ip, sizeof(e->ip), res, i, 6);
    pg_text(e->result, sizeof(e->result), res, i, 7);
    pg_text(e->detail, sizeof(e->detail), res, i, 8);
}

static int audit_one(void *ud, void *row, PGresult *res, int i)
{
    struct pg_walk *w = ud;
    (void)res, (void)i;
    return w->audit(w->ud, row);
}

int pg_audit_list(struct store *s, const char *account_id, int64_t before_id, int limit,
                  store_audit_cb cb, void *ud)
{
    struct pg_walk t = {.audit = cb, .ud = ud};
    struct store_audit e;
    PGresult *res;
    int r = PG_RUN(
        s, AUDIT_LIST,
        "SELECT id, at, coalesce(account_id, ''), actor, action, "
        "coalesce(target, ''), coalesce(ip, ''), result, coalesce(detail, '') "
        "FROM audit_log WHERE ($1 = '' OR account_id = $1) AND ($2::bigint = 0 OR id < $2::bigint) "
        "ORDER BY id DESC LIMIT $3",
        &res, "cannot read the audit log", "tii", account_id, before_id, (int64_t)limit);
    return r != STORE_OK ? r : pg_each_row(res, read_audit, &e, audit_one, &t);
}
