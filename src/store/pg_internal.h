/* What the PostgreSQL backend's files share (internal to src/store/): the backend's state, its one
 * statement mechanism (PG_RUN: prepared on this connection on first use, run with parameters
 * described by a format, text results) and the row and transaction helpers. store_pg.c holds
 * the backend's table, connecting, migrating, the helpers, accounts and the change feed's
 * listener; pg_keys.c the keys, their changes, request counts and the audit log; pg_ledger.c the
 * plans, quotas and ledger; pg_access.c the dashboard's users, memberships, sessions,
 * invitations, set-password links, throttles and pruning.
 *
 * A connection is blocking libpq: it is used only by threads that are not event loops (the store
 * thread, the dashboard's lanes, the CLI). A lost connection makes the call that found it fail
 * with STORE_UNAVAILABLE; the next call connects again (at most once a second) and prepares its
 * statements again. */
#ifndef KN_STORE_PG_INTERNAL_H
#define KN_STORE_PG_INTERNAL_H

#include <libpq-fe.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* An account's columns (0 to 6, read by pg_read_account). */
#define PG_ACCOUNT_COLUMNS                                                                         \
    "id, email, created_at, coalesce(plan, ''), coalesce(quota_requests, -2), "                    \
    "coalesce(quota_tokens, -2), coalesce(suspended_at, 0)"
#define PG_ACCOUNT_NCOLUMNS 7 /* The first column after them (a change's seq). */

/* Every statement, prepared on a connection on first use (see pg_run). */
enum {
    PS_ACCOUNT_INSERT,
    PS_ACCOUNT_FIND,
    PS_KEY_INSERT,
    PS_KEY_FIND_ID,
    PS_KEY_FIND_HASH,
    PS_KEY_LIST,
    PS_KEY_REVOKE,
    PS_KEY_EXPIRE,
    PS_KEY_RENAME,
    PS_KEY_ALLOWLIST,
    PS_KEY_RESTRICT,
    PS_KEYS_LOAD,
    PS_KEY_CHANGES,
    PS_MAX_SEQ,
    PS_ACCOUNT_MAX_SEQ,
    PS_USAGE_ADD,
    PS_KEY_ROLL_MARK,
    PS_KEY_EXISTS,
    PS_KEY_COUNT,
    PS_AUDIT_ADD,
    PS_AUDIT_LIST,
    PS_USER_INSERT,
    PS_USER_FIND,
    PS_USER_PASSWORD,
    PS_USER_TOTP_SET,
    PS_USER_TOTP_STEP,
    PS_USER_RECOVERY_TAKE,
    PS_ACCOUNT_2FA,
    PS_ACCOUNT_SET_2FA,
    PS_MEMBER_INSERT,
    PS_MEMBER_FIRST,
    PS_MEMBER_FIND,
    PS_MEMBERS_LIST,
    PS_SESSION_INSERT,
    PS_SESSION_FIND,
    PS_SESSION_TOUCH,
    PS_SESSION_DELETE,
    PS_SESSIONS_DELETE_USER,
    PS_INVITE_INSERT,
    PS_INVITE_FIND,
    PS_INVITE_ACCEPT,
    PS_INVITES_LIST,
    PS_INVITE_FAIL,
    PS_INVITE_CANCEL,
    PS_INVITES_CANCEL_EMAIL,
    PS_INVITES_PENDING,
    PS_PWTOKEN_INSERT,
    PS_PWTOKEN_FIND,
    PS_PWTOKEN_USE,
    PS_PWTOKENS_VOID,
    PS_MEMBER_REMOVE,
    PS_SESSIONS_DELETE_MEMBER,
    PS_SESSIONS_DELETE_OTHERS,
    PS_KEY_COUNT_WORKING,
    PS_THROTTLE_GET,
    PS_THROTTLE_HIT,
    PS_THROTTLE_REFUSE,
    PS_THROTTLE_CLEAR,
    PS_ACCOUNT_SUSPEND,
    PS_OPKEY_INSERT,
    PS_OPKEY_FIND_ID,
    PS_OPKEY_FIND_HASH,
    PS_OPKEY_LIST,
    PS_OPKEY_REVOKE,
    PS_OPKEY_TOUCH,
    PS_IDEM_BEGIN,
    PS_IDEM_READ,
    PS_IDEM_FINISH,
    PS_IDEM_RELEASE,
    PS_ACCOUNT_SET_PLAN,
    PS_ACCOUNT_SET_QUOTA,
    PS_ACCOUNTS_LOAD,
    PS_ACCOUNT_CHANGES,
    PS_LEDGER_ADD,
    PS_LEDGER_VOIDED,
    PS_LEDGER_VOID,
    PS_MONTH_TOTALS,
    PS_LINE_TOTALS,
    PS_INVOICE_NUMBER,
    PS_INVOICE_ISSUE,
    PS_USAGE_SUMS,
    PS_NODE_BEAT,
    PS_NODE_LEAVE,
    PS_NODES_LIST,
    PS_CHANGES_NEWEST,
    PS_PLANS_PUBLISH,
    PS_PLANS_NEWEST,
    PS_PRUNE_FIRST,
    PS_PRUNE_LAST = PS_PRUNE_FIRST + 8,
    PS__COUNT
};

/* Runs the statement `which` (its SQL text sql, prepared on this connection on first use) with
 * parameters described by fmt, one character each: 't' text (const char *), 'i' int64_t, 'h' a
 * STORE_HASH_LEN bytea (const uint8_t *), 'a' text already in PostgreSQL's literal form (an
 * array: const char *). On success returns STORE_OK with the result in *res (the caller frees it
 * with PQclear; NULL res: freed here); on failure records "what: message" and returns its
 * status: STORE_CONFLICT for a uniqueness violation, STORE_RETRY for a serialisation failure or
 * deadlock, STORE_UNAVAILABLE for a lost or refused connection, STORE_ERROR otherwise. */
int pg_run(struct store *s, int which, const char *sql, PGresult **res, const char *what,
           const char *fmt, ...);
int pg_vrun(struct store *s, int which, const char *sql, PGresult **res, const char *what,
            const char *fmt, va_list ap);
#define PG_RUN(s, name, sql, res, what, ...) pg_run((s), PS_##name, sql, res, what, __VA_ARGS__)

/* The connection (made again if it was lost), for code of this folder that speaks to PostgreSQL
 * directly (store/copy.c); NULL when it cannot be made. */
PGconn *pg_connection(struct store *s);

/* A script or a statement without parameters, run as it is (not prepared). */
int pg_exec(struct store *s, const char *sql, const char *what);
/* BEGIN; and COMMIT, or ROLLBACK keeping the error, when status is not STORE_OK. */
int pg_begin(struct store *s);
int pg_end(struct store *s, int status);
/* The number of rows the command that gave res changed (PQcmdTuples). */
long pg_changes(PGresult *res);

/* Values of a text-format result; NULL reads as "" or 0. */
void pg_text(char *dst, size_t size, PGresult *res, int row, int col);
int64_t pg_int(PGresult *res, int row, int col);
/* A bytea column into a STORE_HASH_LEN buffer (left zero unless it holds that many bytes). */
void pg_hash(uint8_t *out, PGresult *res, int row, int col);

/* For a result of at most one row: STORE_OK with row 0 read by `read` into out, or
 * STORE_NOT_FOUND with the message none. Frees res. */
int pg_one_row(struct store *s, PGresult *res, void (*read)(PGresult *, int, void *), void *out,
               const char *none);
/* Every row: read(res, i, row), then cb(ud, row, res, i); non-zero from cb ends the walk. Frees
 * res. */
int pg_each_row(PGresult *res, void (*read)(PGresult *, int, void *), void *row,
                int (*cb)(void *ud, void *row, PGresult *res, int i), void *ud);

/* Text arrays in PostgreSQL's literal form ({"a","b"}), for 'a' parameters: a growing buffer. */
struct pg_array {
    char *buf;
    size_t len, cap;
};
void pg_array_text(struct pg_array *a, const char *v);
void pg_array_int(struct pg_array *a, int64_t v);
/* Closes the literal ("}") and returns it. */
const char *pg_array_end(struct pg_array *a);
void pg_array_free(struct pg_array *a);

/* Inserts an account row, inside the caller's transaction. */
int pg_account_insert(struct store *s, const struct store_account *a);
/* Writes an audit entry inside the caller's transaction (none when e is NULL). */
int pg_audit_row(struct store *s, const struct store_audit *e);
/* Row readers: an account (columns PG_ACCOUNT_COLUMNS), a count (column 0). */
void pg_read_account(PGresult *res, int row, void *out);
void pg_read_count(PGresult *res, int row, void *out);

/* The caller's callback (the one of its type) and its argument, for the walks. */
struct pg_walk {
    store_key_list_cb key_list;
    store_key_load_cb key_load;
    store_audit_cb audit;
    store_account_cb account;
    void *ud;
};
/* Reads a whole table with where the change feed stands (key_changes when keys is 1, else
 * account_changes), in one repeatable-read snapshot, so that the cursor matches the rows read:
 * runs the statement `which` (SQL and parameters as pg_run's), walks its rows as pg_each_row and
 * sets *cursor once all are read. */
int pg_load_all(struct store *s, int keys, struct store_cursor *cursor,
                void (*read)(PGresult *, int, void *), void *row,
                int (*one)(void *ud, void *row, PGresult *res, int i), void *ud, const char *what,
                int which, const char *sql, const char *fmt, ...);
/* Walks change-feed rows (their sequence number in column seq_col), advancing c past them. */
int pg_walk_changes(PGresult *res, struct store_cursor *c,
                    int (*one)(void *ud, void *row, PGresult *res, int i), void *ud, void *row,
                    void (*read)(PGresult *, int, void *), int seq_col);

/* The operations of the ops table (store.h's STORE_OPS and STORE_OPS_OWN). */
#define PG_OP(name, params, args) int pg_##name params;
STORE_OPS(PG_OP)
STORE_OPS_OWN(PG_OP)
#undef PG_OP

#endif
