/* The PostgreSQL backend: blocking libpq connections, prepared statements, the change feed's
 * listener (LISTEN konnect_changes); see pg_internal.h. */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/migrations.h"
#include "store/pg_internal.h"
#include "store/store.h"

void store_set_backend__(struct store *s, void *backend);

/* The advisory lock that `konnect migrate` (and every opening that migrates) holds, so that
 * nodes starting together apply each migration once. */
#define PG_MIGRATE_LOCK 7200000
/* The types of the parameters (pg_type.h's OIDs, fixed since PostgreSQL 7): given when a statement
 * is prepared, so that every parameter has its type even where the SQL does not say it, and a
 * statement may leave some of its parameters unused. */
#define PG_BYTEA_OID 17
#define PG_INT8_OID 20
#define PG_TEXT_OID 25
/* How often a lost connection is tried again, at most. */
#define PG_RECONNECT_NS 1000000000ull

struct pg_backend {
    PGconn *conn;
    char *url;
    unsigned gen; /* Connections made so far: a statement prepared on an older one */
    unsigned prepared[PS__COUNT]; /* is prepared again (0: never). */
    int in_tx;                    /* Inside pg_begin ... pg_end. */
    uint64_t next_try_ns;         /* No connection attempt before this (kn_mono_ns). */
    PGconn *listen;               /* The change feed's listener (store_changes_fd), or NULL. */
    uint64_t listen_next_try_ns;
};

static struct pg_backend *pg_of(struct store *s)
{
    return store_backend(s);
}

/* libpq prints notices (such as "relation exists, skipping") to stderr unless told otherwise. */
static void quiet(void *arg, const char *message)
{
    (void)arg, (void)message;
}

/* Connection parameters that every connection gets unless the URL sets them (libpq keeps the last
 * value of a repeated keyword, and the URL, expanded from dbname, comes last): a bounded connect,
 * keepalives that find a dead server in seconds, a query whose packets go unacknowledged for 3 s
 * failed (over TCP: a network that drops them otherwise holds the store thread for as long as
 * TCP retries, some 15 minutes), and a name in pg_stat_activity. Every new
 * connection then sets synchronous_commit on, whatever the server's or the role's default: the
 * ledger needs a commit durable when it returns. */
static PGconn *connect_url(const char *url, const char *app)
{
    const char *keys[] = {"connect_timeout",     "keepalives",       "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                          "application_name",    "dbname",           NULL};
    const char *vals[] = {"2", "1", "5", "2", "3", "3000", app, url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c != NULL)
        PQsetNoticeProcessor(c, quiet, NULL);
    if (c != NULL && PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, "SET synchronous_commit = on");
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok)
            PQfinish(c), c = NULL;
    }
    return c;
}

/* The first line of libpq's message for c, without its trailing newline. */
static const char *conn_message(PGconn *c, char *buf, size_t size)
{
    kn_strlcpy(buf, c != NULL ? PQerrorMessage(c) : "out of memory", size);
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

/* Makes sure there is a working connection: one that was lost is replaced (not inside a
 * transaction, whose work is gone with it). */
static int ensure_connected(struct store *s)
{
    struct pg_backend *b = pg_of(s);
    char msg[512];

    if (b->conn != NULL && PQstatus(b->conn) == CONNECTION_OK)
        return STORE_OK;
    if (b->in_tx)
        return store_set_error(s, STORE_UNAVAILABLE, "the connection to PostgreSQL was lost");
    uint64_t now = kn_mono_ns();
    if (b->conn != NULL && now < b->next_try_ns)
        return store_set_error(s, STORE_UNAVAILABLE, "PostgreSQL cannot be reached: %s",
                               conn_message(b->conn, msg, sizeof(msg)));
    b->next_try_ns = now + PG_RECONNECT_NS;
    PQfinish(b->conn);
    b->conn = connect_url(b->url, "konnect");
    if (b->conn == NULL || PQstatus(b->conn) != CONNECTION_OK)
        return store_set_error(s, STORE_UNAVAILABLE, "cannot connect to PostgreSQL: %s",
                               conn_message(b->conn, msg, sizeof(msg)));
    b->gen++;
    return STORE_OK;
}

PGconn *pg_connection(struct store *s)
{
    return ensure_connected(s) == STORE_OK ? pg_of(s)->conn : NULL;
}

/* What a failed result means to a caller (see pg_run). */
static int status_of(PGconn *c, PGresult *res)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    if (PQstatus(c) != CONNECTION_OK || state == NULL)
        return STORE_UNAVAILABLE;
    if (strcmp(state, "23505") == 0)
        return STORE_CONFLICT;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0)
        return STORE_RETRY;
    /* Connection exceptions, the server shutting down or refusing connections, out of disk or
     * memory: the store cannot be used now, whatever the statement. */
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strncmp(state, "53", 2) == 0)
        return STORE_UNAVAILABLE;
    return STORE_ERROR;
}

static int fail(struct store *s, PGresult *res, const char *what)
{
    struct pg_backend *b = pg_of(s);
    char msg[512];
    const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    int status = status_of(b->conn, res);

    if (primary == NULL)
        primary = conn_message(b->conn, msg, sizeof(msg));
    if (status == STORE_CONFLICT)
        return store_set_error(s, status, "%s: already exists", what);
    return store_set_error(s, status, "%s: %s", what, primary);
}

/* 1 when res is a success. */
static int ok_result(PGresult *res)
{
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

int pg_exec(struct store *s, const char *sql, const char *what)
{
    int r;
    if ((r = ensure_connected(s)) != STORE_OK)
        return r;
    PGresult *res = PQexec(pg_of(s)->conn, sql);
    r = ok_result(res) ? STORE_OK : fail(s, res, what);
    PQclear(res);
    return r;
}

int pg_vrun(struct store *s, int which, const char *sql, PGresult **out, const char *what,
            const char *fmt, va_list ap)
{
    struct pg_backend *b = pg_of(s);
    enum { MAX_PARAMS = 16 };
    const char *values[MAX_PARAMS];
    int lengths[MAX_PARAMS], formats[MAX_PARAMS], n = 0, r;
    Oid types[MAX_PARAMS];
    char ints[MAX_PARAMS][24], name[16];

    if ((r = ensure_connected(s)) != STORE_OK)
        return r;
    for (const char *f = fmt; *f != '\0' && n < MAX_PARAMS; f++, n++) {
        lengths[n] = 0;
        formats[n] = 0;
        switch (*f) {
        case 't':
            types[n] = PG_TEXT_OID;
            values[n] = va_arg(ap, const char *);
            break;
        case 'a':
            types[n] = 0; /* The statement casts it. */
            values[n] = va_arg(ap, const char *);
            break;
        case 'i':
            types[n] = PG_INT8_OID;
            ints[n][kn_decimal(ints[n], va_arg(ap, int64_t))] = '\0';
            values[n] = ints[n];
            break;
        case 'h':
            types[n] = PG_BYTEA_OID;
            values[n] = (const char *)va_arg(ap, const uint8_t *);
            lengths[n] = STORE_HASH_LEN;
            formats[n] = 1;
            break;
        }
    }
    snprintf(name, sizeof(name), "kn%d", which);
    if (b->prepared[which] != b->gen) {
        PGresult *p = PQprepare(b->conn, name, sql, n, types);
        if (!ok_result(p)) {
            r = fail(s, p, what);
            PQclear(p);
            return r;
        }
        PQclear(p);
        b->prepared[which] = b->gen;
    }
    PGresult *res = PQexecPrepared(b->conn, name, n, values, lengths, formats, 0);
    if (!ok_result(res)) {
        r = fail(s, res, what);
        PQclear(res);
        return r;
    }
    if (out != NULL)
        *out = res;
    else
        PQclear(res);
    return STORE_OK;
}

int pg_run(struct store *s, int which, const char *sql, PGresult **res, const char *what,
           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = pg_vrun(s, which, sql, res, what, fmt, ap);
    va_end(ap);
    return r;
}

int pg_begin(struct store *s)
{
    int r = pg_exec(s, "BEGIN", "cannot begin a transaction");
    pg_of(s)->in_tx = r == STORE_OK;
    return r;
}

int pg_end(struct store *s, int status)
{
    struct pg_backend *b = pg_of(s);

    if (status == STORE_OK)
        status = pg_exec(s, "COMMIT", "cannot commit");
    if (status != STORE_OK && b->conn != NULL && PQstatus(b->conn) == CONNECTION_OK &&
        PQtransactionStatus(b->conn) != PQTRANS_IDLE) {
        char msg[512];
        kn_strlcpy(msg, store_errmsg(s), sizeof(msg));
        PQclear(PQexec(b->conn, "ROLLBACK"));
        store_set_error(s, status, "%s", msg);
    }
    b->in_tx = 0;
    return status;
}

long pg_changes(PGresult *res)
{
    const char *n = PQcmdTuples(res);
    return n != NULL && *n != '\0' ? strtol(n, NULL, 10) : 0;
}

void pg_text(char *dst, size_t size, PGresult *res, int row, int col)
{
    kn_strlcpy(dst, PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col), size);
}

int64_t pg_int(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void pg_hash(uint8_t *out, PGresult *res, int row, int col)
{
    /* bytea in text results is "\x" and two hex digits a byte (bytea_output = hex, the
     * default since PostgreSQL 9.0). */
    const char *v = PQgetvalue(res, row, col);
    uint8_t h[STORE_HASH_LEN];

    memset(out, 0, STORE_HASH_LEN);
    if (PQgetisnull(res, row, col) || strlen(v) != 2 + 2 * STORE_HASH_LEN || v[0] != '\\' ||
        v[1] != 'x')
        return;
    for (size_t i = 0; i < STORE_HASH_LEN; i++) {
        int hi = hexval(v[2 + 2 * i]), lo = hexval(v[3 + 2 * i]);
        if (hi < 0 || lo < 0)
            return;
        h[i] = (uint8_t)(hi << 4 | lo);
    }
    memcpy(out, h, STORE_HASH_LEN);
}

int pg_one_row(struct store *s, PGresult *res, void (*read)(PGresult *, int, void *), void *out,
               const char *none)
{
    int found = PQntuples(res) > 0;
    if (found)
        read(res, 0, out);
    PQclear(res);
    return found ? STORE_OK : store_set_error(s, STORE_NOT_FOUND, "%s", none);
}

int pg_each_row(PGresult *res, void (*read)(PGresult *, int, void *), void *row,
                int (*cb)(void *ud, void *row, PGresult *res, int i), void *ud)
{
    for (int i = 0, n = PQntuples(res); i < n; i++) {
        read(res, i, row);
        if (cb(ud, row, res, i) != 0)
            break;
    }
    PQclear(res);
    return STORE_OK;
}

static void array_put(struct pg_array *a, const char *p, size_t n)
{
    if (a->len + n + 2 > a->cap) {
        a->cap = (a->len + n + 2) * 2 + 64;
        a->buf = kn_realloc(a->buf, a->cap);
    }
    memcpy(a->buf + a->len, p, n);
    a->len += n;
    a->buf[a->len] = '\0';
}

static void array_sep(struct pg_array *a)
{
    array_put(a, a->len == 0 ? "{" : ",", 1);
}

void pg_array_text(struct pg_array *a, const char *v)
{
    array_sep(a);
    array_put(a, "\"", 1);
    for (; *v != '\0'; v++) {
        if (*v == '"' || *v == '\\')
            array_put(a, "\\", 1);
        array_put(a, v, 1);
    }
    array_put(a, "\"", 1);
}

void pg_array_int(struct pg_array *a, int64_t v)
{
    char d[24];
    array_sep(a);
    array_put(a, d, kn_decimal(d, v));
}

const char *pg_array_end(struct pg_array *a)
{
    if (a->len == 0)
        array_put(a, "{", 1);
    array_put(a, "}", 1);
    return a->buf;
}

void pg_array_free(struct pg_array *a)
{
    free(a->buf);
    memset(a, 0, sizeof(*a));
}

/* ---- opening, migrating ---------------------------------------------------------------------- */

static int known_version(void)
{
    return store_pg_migrations_count > 0
               ? store_pg_migrations[store_pg_migrations_count - 1].version
               : 0;
}

/* The schema version of the database, 0 before the first migration. */
static int schema_version(struct store *s, int *version)
{
    PGresult *res = NULL;
    int r = pg_exec(s,
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                    "name text NOT NULL, applied_at bigint NOT NULL)",
                    "cannot prepare the migrations");
    if (r != STORE_OK)
        return r;
    res = PQexec(pg_of(s)->conn, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (!ok_result(res)) {
        r = fail(s, res, "cannot read the schema version");
        PQclear(res);
        return r;
    }
    *version = (int)pg_int(res, 0, 0);
    PQclear(res);
    return STORE_OK;
}

int pg_open(struct store *s, const char *url, const char *options)
{
    struct pg_backend *b = kn_calloc(1, sizeof(*b));
    int r, version = 0;

    store_set_backend__(s, b);
    /* The server's own options for its writer (store_open_with) mean nothing here: a commit on
     * PostgreSQL is durable when it returns (synchronous_commit = on, required by the ledger) and
     * PostgreSQL checkpoints by itself. Anything else is a mistake. */
    for (const char *o = options; o != NULL && *o != '\0';) {
        size_t n = strcspn(o, "&");
        if (!(n == 9 && strncmp(o, "sync=full", 9) == 0) &&
            !(n == 11 && strncmp(o, "sync=normal", 11) == 0) &&
            !(n == 21 && strncmp(o, "checkpoint=background", 21) == 0) &&
            !(n == 17 && strncmp(o, "checkpoint=inline", 17) == 0))
            return store_set_error(s, STORE_ERROR, "unknown store option \"%.*s\"",
                                   (int)(n > 64 ? 64 : n), o);
        o += n + (o[n] == '&');
    }
    b->url = kn_strdup(url);
    if ((r = ensure_connected(s)) != STORE_OK)
        return r;
    PGresult *res = PQexec(b->conn, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    int has = ok_result(res) && PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (has && (r = schema_version(s, &version)) != STORE_OK)
        return r;
    if (version > known_version())
        return store_set_error(s, STORE_ERROR,
                               "the database was migrated by a newer Konnect (schema version %d; "
                               "this one knows up to %d): use that version, or a newer one",
                               version, known_version());
    return STORE_OK;
}

static void pg_close(struct store *s)
{
    struct pg_backend *b = pg_of(s);
    PQfinish(b->conn);
    PQfinish(b->listen);
    free(b->url);
    free(b);
    store_set_backend__(s, NULL);
}

int pg_migrate(struct store *s)
{
    struct pg_backend *b = pg_of(s);
    char sql[128];
    int r, version = 0;

    snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%d)", PG_MIGRATE_LOCK);
    if ((r = pg_exec(s, sql, "cannot take the migration lock")) != STORE_OK)
        return r;
    if ((r = schema_version(s, &version)) != STORE_OK)
        goto unlock;
    for (size_t i = 0; i < store_pg_migrations_count && r == STORE_OK; i++) {
        const struct store_migration *m = &store_pg_migrations[i];
        char what[160], v[16], at[24];
        if (m->version <= version)
            continue;
        snprintf(what, sizeof(what), "migration %s failed", m->name);
        if ((r = pg_begin(s)) != STORE_OK)
            break;
        r = pg_exec(s, m->sql, what);
        if (r == STORE_OK) {
            const char *vals[] = {v, m->name, at};
            snprintf(v, sizeof(v), "%d", m->version);
            at[kn_decimal(at, kn_unix_now())] = '\0';
            PGresult *res = PQexecParams(b->conn,
                                         "INSERT INTO schema_migrations(version, name, applied_at) "
                                         "VALUES ($1, $2, $3)",
                                         3, NULL, vals, NULL, NULL, 0);
            r = ok_result(res) ? STORE_OK : fail(s, res, what);
            PQclear(res);
        }
        r = pg_end(s, r);
    }
unlock:;
    char msg[512];
    kn_strlcpy(msg, store_errmsg(s), sizeof(msg));
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%d)", PG_MIGRATE_LOCK);
    pg_exec(s, sql, "cannot release the migration lock");
    return r == STORE_OK ? STORE_OK : store_set_error(s, r, "%s", msg);
}

int pg_ping(struct store *s)
{
    return PG_RUN(s, MAX_SEQ, "SELECT coalesce(max(seq), 0) FROM key_changes", NULL, "ping", "");
}

/* ---- accounts ----------------------------------------------------------------------------------
 */

int pg_account_insert(struct store *s, const struct store_account *a)
{
    int r =
        PG_RUN(s, ACCOUNT_INSERT, "INSERT INTO accounts(id, email, created_at) VALUES ($1, $2, $3)",
               NULL, "cannot create account", "tti", a->id, a->email, a->created_at);
    if (r == STORE_CONFLICT)
        return store_set_error(s, STORE_CONFLICT, "an account with email %s already exists",
                               a->email);
    return r;
}

void pg_read_account(PGresult *res, int row, void *out)
{
    struct store_account *a = out;
    memset(a, 0, sizeof(*a));
    pg_text(a->id, sizeof(a->id), res, row, 0);
    pg_text(a->email, sizeof(a->email), res, row, 1);
    a->created_at = pg_int(res, row, 2);
    pg_text(a->plan, sizeof(a->plan), res, row, 3);
    a->quota_requests = pg_int(res, row, 4);
    a->quota_tokens = pg_int(res, row, 5);
    a->suspended_at = pg_int(res, row, 6);
}

void pg_read_count(PGresult *res, int row, void *out)
{
    *(int64_t *)out = pg_int(res, row, 0);
}

int pg_account_find(struct store *s, const char *email_or_id, struct store_account *out)
{
    PGresult *res;
    char none[STORE_EMAIL_MAX + 16];
    int r = PG_RUN(s, ACCOUNT_FIND,
                   "SELECT " PG_ACCOUNT_COLUMNS
                   " FROM accounts WHERE email = lower($1 COLLATE \"C\") OR id = $1",
                   &res, "cannot read account", "t", email_or_id);
    if (r != STORE_OK)
        return r;
    snprintf(none, sizeof(none), "no account %s", email_or_id);
    return pg_one_row(s, res, pg_read_account, out, none);
}

/* ---- the change feed ------------------------------------------------------------------------- */

/* The cursor is the highest sequence number read (v[0]): every writer of a change log holds an
 * advisory lock from taking its number to its commit (see the migration), so the numbers become
 * visible in their order and `seq > v[0]` misses none. The query gives at least one row (seq
 * null when nothing is new) with the oldest and newest change the log holds after seq (-1 when it
 * is empty). */
int pg_walk_changes(PGresult *res, struct store_cursor *c,
                    int (*one)(void *ud, void *row, PGresult *res, int i), void *ud, void *row,
                    void (*read)(PGresult *, int, void *), int seq_col)
{
    int64_t seq = c->v[0];

    if (PQntuples(res) > 0 &&
        store_feed_stale(seq, pg_int(res, 0, seq_col + 1), pg_int(res, 0, seq_col + 2))) {
        PQclear(res);
        return STORE_STALE;
    }
    for (int i = 0, n = PQntuples(res); i < n; i++) {
        if (PQgetisnull(res, i, seq_col))
            continue;
        read(res, i, row);
        if (pg_int(res, i, seq_col) > seq)
            seq = pg_int(res, i, seq_col);
        if (one(ud, row, res, i) != 0)
            break;
    }
    PQclear(res);
    c->v[0] = seq;
    return STORE_OK;
}

int pg_load_all(struct store *s, int keys, struct store_cursor *cursor,
                void (*read)(PGresult *, int, void *), void *row,
                int (*one)(void *ud, void *row, PGresult *res, int i), void *ud, const char *what,
                int which, const char *sql, const char *fmt, ...)
{
    struct store_cursor c;
    PGresult *res = NULL;
    va_list ap;
    int r;

    memset(&c, 0, sizeof(c));
    if ((r = pg_exec(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                     "cannot begin a read")) != STORE_OK)
        return r;
    pg_of(s)->in_tx = 1;
    r = keys ? PG_RUN(s, MAX_SEQ, "SELECT coalesce(max(seq), 0) FROM key_changes", &res,
                      "cannot read the change log", "")
             : PG_RUN(s, ACCOUNT_MAX_SEQ, "SELECT coalesce(max(seq), 0) FROM account_changes", &res,
                      "cannot read the change log", "");
    if (r == STORE_OK)
        r = pg_one_row(s, res, pg_read_count, &c.v[0], "no change log");
    if (r == STORE_OK) {
        va_start(ap, fmt);
        r = pg_vrun(s, which, sql, &res, what, fmt, ap);
        va_end(ap);
        if (r == STORE_OK)
            r = pg_each_row(res, read, row, one, ud);
    }
    r = pg_end(s, r);
    if (r == STORE_OK)
        *cursor = c;
    return r;
}

/* ---- the nodes table ---------------------------------------------------------------------- */

/* PostgreSQL's clock in milliseconds: every node's heartbeat is stamped and aged by it. */
#define PG_NOW_MS "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

int pg_node_beat(struct store *s, const struct store_node *n)
{
    return PG_RUN(
        s, NODE_BEAT,
        "INSERT INTO nodes(id, started_at, seen_ms, key_seq, account_seq, counters, "
        "version, address, plans_version) VALUES ($1, $2, " PG_NOW_MS ", $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, "
        "seen_ms = excluded.seen_ms, key_seq = excluded.key_seq, "
        "account_seq = excluded.account_seq, counters = excluded.counters, "
        "version = excluded.version, address = excluded.address, "
        "plans_version = excluded.plans_version",
        NULL, "cannot write the node's heartbeat", "tiiittti", n->id, n->started_at, n->key_seq,
        n->account_seq, n->counters, n->version, n->address, n->plans_version);
}

int pg_node_leave(struct store *s, const char *id)
{
    return PG_RUN(s, NODE_LEAVE, "DELETE FROM nodes WHERE id = $1", NULL, "cannot remove the node",
                  "t", id);
}

int pg_nodes_list(struct store *s, store_node_cb cb, void *ud)
{
    struct store_node n;
    PGresult *res;
    int r = PG_RUN(s, NODES_LIST,
                   "SELECT id, started_at, " PG_NOW_MS " - seen_ms, key_seq, account_seq, "
                   "counters, version, address, plans_version FROM nodes ORDER BY seen_ms DESC",
                   &res, "cannot read the nodes", "");
    if (r != STORE_OK)
        return r;
    for (int i = 0, count = PQntuples(res); i < count; i++) {
        memset(&n, 0, sizeof(n));
        pg_text(n.id, sizeof(n.id), res, i, 0);
        n.started_at = pg_int(res, i, 1);
        n.age_ms = pg_int(res, i, 2);
        n.key_seq = pg_int(res, i, 3);
        n.account_seq = pg_int(res, i, 4);
        pg_text(n.counters, sizeof(n.counters), res, i, 5);
        pg_text(n.version, sizeof(n.version), res, i, 6);
        pg_text(n.address, sizeof(n.address), res, i, 7);
        n.plans_version = pg_int(res, i, 8);
        if (cb(ud, &n) != 0)
            break;
    }
    PQclear(res);
    return STORE_OK;
}

int pg_changes_newest(struct store *s, int64_t *key_seq, int64_t *account_seq,
                      int64_t *plans_version)
{
    PGresult *res;
    /* One statement, so one snapshot for all three. */
    int r = PG_RUN(s, CHANGES_NEWEST,
                   "SELECT (SELECT coalesce(max(seq), 0) FROM key_changes), "
                   "(SELECT coalesce(max(seq), 0) FROM account_changes), "
                   "(SELECT coalesce(max(version), 0) FROM plans_versions)",
                   &res, "cannot read the change logs", "");
    if (r != STORE_OK)
        return r;
    *key_seq = pg_int(res, 0, 0);
    *account_seq = pg_int(res, 0, 1);
    *plans_version = pg_int(res, 0, 2);
    PQclear(res);
    return STORE_OK;
}

int pg_plans_publish(struct store *s, const char *body, int64_t at, const char *by,
                     const struct store_audit *audit, int64_t *version)
{
    PGresult *res = NULL;
    int r = pg_begin(s);

    if (r != STORE_OK)
        return r;
    r = PG_RUN(s, PLANS_PUBLISH,
               "INSERT INTO plans_versions(body, created_at, created_by) VALUES ($1, $2, $3) "
               "RETURNING version",
               &res, "cannot publish the plans", "tit", body, at, by);
    int64_t v = 0;
    if (r == STORE_OK) {
        v = pg_int(res, 0, 0);
        PQclear(res);
        r = pg_audit_row(s, audit);
    }
    if ((r = pg_end(s, r)) == STORE_OK)
        *version = v;
    return r;
}

int pg_start_lock(struct store *s, int take)
{
    return pg_exec(s,
                   take ? "SELECT pg_advisory_lock(7200003)" : "SELECT pg_advisory_unlock(7200003)",
                   "cannot take the start lock");
}

int pg_plans_newest(struct store *s, int64_t *version, char **body)
{
    PGresult *res;
    int r = PG_RUN(s, PLANS_NEWEST,
                   "SELECT version, body FROM plans_versions ORDER BY version DESC LIMIT 1", &res,
                   "cannot read the plans", "");
    if (r != STORE_OK)
        return r;
    if (PQntuples(res) == 1) {
        *version = pg_int(res, 0, 0);
        *body = kn_strdup(PQgetvalue(res, 0, 1));
    } else {
        *version = 0;
        *body = NULL;
    }
    PQclear(res);
    return STORE_OK;
}

/* The listener: a connection of its own that LISTENs, so that a notification is never taken by
 * a query of the main connection. A lost one is made again (at most once a second); the
 * notifications sent meanwhile are lost, which the store thread's reading of the change log every
 * second makes up for. */
int pg_changes_fd(struct store *s)
{
    struct pg_backend *b = pg_of(s);

    if (b->listen != NULL && PQstatus(b->listen) == CONNECTION_OK)
        return PQsocket(b->listen);
    uint64_t now = kn_mono_ns();
    if (now < b->listen_next_try_ns)
        return -1;
    b->listen_next_try_ns = now + PG_RECONNECT_NS;
    PQfinish(b->listen);
    b->listen = connect_url(b->url, "konnect-listen");
    if (b->listen != NULL && PQstatus(b->listen) == CONNECTION_OK) {
        PGresult *res = PQexec(b->listen, "LISTEN konnect_changes");
        int ok = ok_result(res);
        PQclear(res);
        if (ok && PQsetnonblocking(b->listen, 1) == 0)
            return PQsocket(b->listen);
    }
    PQfinish(b->listen);
    b->listen = NULL;
    return -1;
}

static void pg_changes_drain(struct store *s)
{
    struct pg_backend *b = pg_of(s);
    PGnotify *n;

    if (b->listen == NULL)
        return;
    if (PQconsumeInput(b->listen) == 0) {
        PQfinish(b->listen);
        b->listen = NULL;
        return;
    }
    while ((n = PQnotifies(b->listen)) != NULL)
        PQfreemem(n);
}

int pg_backup(struct store *s, const char *to, struct store_backup_info *info)
{
    (void)to, (void)info;
    return store_set_error(s, STORE_ERROR,
                           "konnect backup copies a SQLite store; back up PostgreSQL with pg_dump "
                           "(or base backups with WAL archiving), see docs/operations.md");
}

#define PG_OP(name, params, args) .name = pg_##name,
/* clang-format off */
const struct store_ops store_pg_ops = {
    .name = "postgresql",
    .close = pg_close,
    .idle = NULL,
    .changes_drain = pg_changes_drain,
    STORE_OPS(PG_OP)
    STORE_OPS_OWN(PG_OP)
};
/* clang-format on */
#undef PG_OP
