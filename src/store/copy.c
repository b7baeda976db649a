/* `konnect store copy`: a single-node installation's SQLite store copied into PostgreSQL, table
 * by table, in one PostgreSQL transaction; see copy.h. Both schemas are at the same version (the
 * migrations' numbers mean the same tables), so each table is copied column by column, by name. */
#include "store/copy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/pg_internal.h"
#include "store/sqlite_internal.h"

/* The tables copied, parents first, with their columns (the same names on both backends). The
 * change logs and the nodes table are not: PostgreSQL's triggers write the change log as the keys
 * go in, and servers write their own heartbeats. Nor are throttle counters (they are short-lived).
 * Identity columns (audit_log.id, plans_versions.version) keep their values. */
static const struct copied_table {
    const char *name;
    const char *columns;
    const char *identity; /* The identity column whose sequence is moved past the copied rows. */
} tables[] = {
    {"accounts",
     "id, email, created_at, plan, quota_requests, quota_tokens, suspended_at, "
     "require_two_factor",
     NULL},
    {"users",
     "id, email, password_hash, created_at, totp_seed, totp_enabled_at, totp_last_step, "
     "recovery_codes",
     NULL},
    {"memberships", "account_id, user_id, role, created_at", NULL},
    {"api_keys",
     "id, account_id, name, mode, environment, hash, hint, created_at, created_by, last_used_at, "
     "expires_at, revoked_at, revoked_by, ip_allowlist, rolled_to, models, requests_per_minute, "
     "monthly_requests, quota_key",
     NULL},
    {"key_usage_daily", "key_id, day, requests, refused", NULL},
    {"audit_log", "id, at, account_id, actor, action, target, ip, result, detail", "id"},
    {"sessions",
     "token_hash, user_id, account_id, csrf_token, created_at, last_seen_at, "
     "expires_at, ip",
     NULL},
    {"invites",
     "token_hash, id, account_id, email, invited_by, created_at, expires_at, "
     "accepted_at, failures, canceled_at",
     NULL},
    {"password_tokens", "token_hash, user_id, created_at, expires_at, used_at", NULL},
    {"usage_ledger",
     "request_id, account_id, key_id, environment, model, input_tokens, "
     "output_tokens, price_micros, currency, plan, at_ms, month, voided, "
     "plan_version",
     NULL},
    {"usage_rollup",
     "account_id, day, key_id, model, environment, month, requests, input_tokens, "
     "output_tokens, price_micros",
     NULL},
    {"plans_versions", "version, body, created_at, created_by", "version"},
    {"operator_keys",
     "id, name, hash, hint, created_at, created_by, last_used_at, revoked_at, revoked_by", NULL},
    {"invoice_numbers", "account_id, month, seq, issued_at", NULL},
};

#define MAX_COLUMNS 24

static PGconn *pg_conn(struct store *s)
{
    return pg_connection(s);
}

static size_t count_columns(const char *columns)
{
    size_t n = 1;
    for (const char *p = columns; *p != '\0'; p++)
        n += *p == ',';
    return n;
}

static const char hexdigits[] = "0123456789abcdef";

/* Copies one table; writes the rows copied to *rows. Returns 0 or -1 with a message. */
static int copy_table(sqlite3 *src, PGconn *dst, const struct copied_table *t, int64_t *rows,
                      char *err, size_t errsize)
{
    char sql[1024], insert[2048], *values[MAX_COLUMNS];
    size_t n = count_columns(t->columns), off;
    sqlite3_stmt *q = NULL;
    int rc, ok = 0;

    *rows = 0;
    snprintf(sql, sizeof(sql), "SELECT %s FROM %s", t->columns, t->name);
    off = (size_t)snprintf(insert, sizeof(insert), "INSERT INTO %s(%s) %sVALUES (", t->name,
                           t->columns, t->identity != NULL ? "OVERRIDING SYSTEM VALUE " : "");
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(insert + off, sizeof(insert) - off, "%s$%zu", i ? ", " : "", i + 1);
    snprintf(insert + off, sizeof(insert) - off, ")");
    if (sqlite3_prepare_v2(src, sql, -1, &q, NULL) != SQLITE_OK) {
        snprintf(err, errsize, "cannot read %s: %s", t->name, sqlite3_errmsg(src));
        return -1;
    }
    PGresult *p = PQprepare(dst, t->name, insert, (int)n, NULL);
    if (PQresultStatus(p) != PGRES_COMMAND_OK) {
        snprintf(err, errsize, "cannot write %s: %s", t->name, PQerrorMessage(dst));
        PQclear(p);
        sqlite3_finalize(q);
        return -1;
    }
    PQclear(p);
    memset(values, 0, sizeof(values));
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        for (size_t i = 0; i < n; i++) {
            free(values[i]);
            values[i] = NULL;
            switch (sqlite3_column_type(q, (int)i)) {
            case SQLITE_NULL:
                break;
            case SQLITE_BLOB: {
                /* bytea's hex input form. */
                const unsigned char *b = sqlite3_column_blob(q, (int)i);
                int len = sqlite3_column_bytes(q, (int)i);
                values[i] = kn_malloc((size_t)len * 2 + 3);
                values[i][0] = '\\';
                values[i][1] = 'x';
                for (int j = 0; j < len; j++) {
                    values[i][2 + 2 * j] = hexdigits[b[j] >> 4];
                    values[i][3 + 2 * j] = hexdigits[b[j] & 15];
                }
                values[i][2 + 2 * len] = '\0';
                break;
            }
            default:
                values[i] = kn_strdup((const char *)sqlite3_column_text(q, (int)i));
                break;
            }
        }
        PGresult *r =
            PQexecPrepared(dst, t->name, (int)n, (const char *const *)values, NULL, NULL, 0);
        int good = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!good)
            snprintf(err, errsize, "cannot copy a row of %s: %s", t->name,
                     PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) != NULL
                         ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)
                         : PQerrorMessage(dst));
        PQclear(r);
        if (!good)
            goto out;
        (*rows)++;
    }
    if (rc != SQLITE_DONE) {
        snprintf(err, errsize, "cannot read %s: %s", t->name, sqlite3_errmsg(src));
        goto out;
    }
    if (t->identity != NULL) {
        snprintf(sql, sizeof(sql),
                 "SELECT setval(pg_get_serial_sequence('%s', '%s'), coalesce(max(%s), 0) + 1, "
                 "false) FROM %s",
                 t->name, t->identity, t->identity, t->name);
        PGresult *r = PQexec(dst, sql);
        int good = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (!good) {
            snprintf(err, errsize, "cannot move the identity of %s: %s", t->name,
                     PQerrorMessage(dst));
            goto out;
        }
    }
    ok = 1;
out:
    for (size_t i = 0; i < n; i++)
        free(values[i]);
    sqlite3_finalize(q);
    snprintf(sql, sizeof(sql), "DEALLOCATE \"%s\"", t->name);
    PQclear(PQexec(dst, sql));
    return ok ? 0 : -1;
}

static int64_t pg_count(PGconn *c, const char *table)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    PGresult *r = PQexec(c, sql);
    int64_t n = PQresultStatus(r) == PGRES_TUPLES_OK ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return n;
}

int store_copy(const char *from, const char *to, FILE *report, char *err, size_t errsize)
{
    struct store *src = NULL, *dst = NULL;
    int64_t copied[sizeof(tables) / sizeof(tables[0])];
    int ret = -1, in_tx = 0;

    if (store_is_postgres(from) || !store_is_postgres(to)) {
        snprintf(err, errsize,
                 "store copy copies a SQLite store (--from, a path or sqlite: URL) into "
                 "PostgreSQL (--to, a postgresql:// URL)");
        return -1;
    }
    if (!store_exists(from, NULL, 0)) {
        snprintf(err, errsize, "there is no SQLite store at %s", from);
        return -1;
    }
    /* Both at this build's newest schema, so that their tables agree. */
    if ((src = store_open(from, 1, err, errsize)) == NULL ||
        (dst = store_open(to, 1, err, errsize)) == NULL)
        goto out;
    PGconn *pg = pg_conn(dst);
    if (pg == NULL) {
        snprintf(err, errsize, "%s", store_errmsg(dst));
        goto out;
    }
    if (pg_count(pg, "accounts") != 0 || pg_count(pg, "usage_ledger") != 0) {
        snprintf(err, errsize,
                 "the PostgreSQL store is not empty (it has accounts or ledger rows): copy into a "
                 "new database");
        goto out;
    }
    /* One read transaction on SQLite: every table from the same moment. */
    if (sqlite3_exec(sq_db_of(src), "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errsize, "cannot read the SQLite store: %s", sqlite3_errmsg(sq_db_of(src)));
        goto out;
    }
    PGresult *r = PQexec(pg, "BEGIN");
    in_tx = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!in_tx) {
        snprintf(err, errsize, "cannot begin: %s", PQerrorMessage(pg));
        goto out;
    }
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++)
        if (copy_table(sq_db_of(src), pg, &tables[i], &copied[i], err, errsize) != 0)
            goto out;
    r = PQexec(pg, "COMMIT");
    in_tx = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(err, errsize, "cannot commit the copy: %s", PQerrorMessage(pg));
        PQclear(r);
        goto out;
    }
    PQclear(r);
    /* What arrived, counted again on the other side. */
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        int64_t there = pg_count(pg, tables[i].name);
        fprintf(report, "  %-16s %10lld rows%s\n", tables[i].name, (long long)copied[i],
                there == copied[i] ? "" : " (PostgreSQL counts a different number!)");
        if (there != copied[i]) {
            snprintf(err, errsize, "%s: %lld rows copied but %lld in PostgreSQL", tables[i].name,
                     (long long)copied[i], (long long)there);
            goto out;
        }
    }
    ret = 0;
out:
    if (in_tx && pg_conn(dst) != NULL)
        PQclear(PQexec(pg_conn(dst), "ROLLBACK"));
    if (src != NULL)
        sqlite3_exec(sq_db_of(src), "COMMIT", NULL, NULL, NULL);
    store_close(src);
    store_close(dst);
    return ret;
}
