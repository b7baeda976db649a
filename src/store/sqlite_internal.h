/* What the SQLite backend's files share (internal to src/store/): the backend's state, its one
 * statement mechanism (RUN: prepared on first use, bound from a format) and the row and
 * transaction helpers. store_sqlite.c holds the backend's table, opening and migrating, the
 * statement and row helpers, accounts and the change feed's wake-ups; sqlite_keys.c the keys,
 * their changes, request counts and the audit log; sqlite_ledger.c the plans, quotas and ledger;
 * sqlite_access.c the dashboard's users, memberships, sessions, invitations, set-password links,
 * throttles and pruning; sqlite_checkpoint.c the writer's checkpoints. */
#ifndef KN_STORE_SQLITE_INTERNAL_H
#define KN_STORE_SQLITE_INTERNAL_H

#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* An account's columns (0 to 6, read by sq_read_account). */
#define ACCOUNT_COLUMNS                                                                            \
    "id, email, created_at, coalesce(plan, ''), coalesce(quota_requests, -2), "                    \
    "coalesce(quota_tokens, -2), coalesce(suspended_at, 0)"
#define ACCOUNT_NCOLUMNS 7 /* The first column after them (a change's seq). */

/* Every statement, prepared on first use (see sq_run). */
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
    DS_KEY_RESTRICT,
    DS_KEY_ROLL_MARK,
    DS_KEY_EXISTS,
    DS_KEY_COUNT,
    DS_AUDIT_ADD,
    DS_AUDIT_LIST,
    DS_USER_INSERT,
    DS_USER_FIND,
    DS_USER_PASSWORD,
    DS_USER_TOTP_SET,
    DS_USER_TOTP_STEP,
    DS_USER_RECOVERY_TAKE,
    DS_ACCOUNT_2FA,
    DS_ACCOUNT_SET_2FA,
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
    DS_ACCOUNT_SUSPEND,
    DS_OPKEY_INSERT,
    DS_OPKEY_FIND_ID,
    DS_OPKEY_FIND_HASH,
    DS_OPKEY_LIST,
    DS_OPKEY_REVOKE,
    DS_OPKEY_TOUCH,
    DS_IDEM_BEGIN,
    DS_IDEM_READ,
    DS_IDEM_FINISH,
    DS_IDEM_RELEASE,
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
    DS_LINE_TOTALS,
    DS_INVOICE_NUMBER,
    DS_INVOICE_ISSUE,
    DS_USAGE_SUMS,
    DS_NODE_BEAT,
    DS_NODE_LEAVE,
    DS_NODES_LIST,
    DS_PLANS_PUBLISH,
    DS_PLANS_NEWEST,
    DS_PLANS_MAX,
    DS__COUNT
};

struct sqlite_backend {
    sqlite3 *db;
    sqlite3_stmt *dash[DS__COUNT];
    sqlite3_stmt *prune[9];
    struct checkpointer *ckpt;
    uint8_t full;    /* Opened with sync=full: every commit waits for the disk... */
    uint8_t relaxed; /* ...but the one under way (sq_begin_relaxed), or a restore failed. */
};

#define RUN(s, name, sql, ...)                                                                     \
    sq_run((s), &((struct sqlite_backend *)store_backend(s))->dash[DS_##name], sql, __VA_ARGS__)
#define STMT(s, name) (((struct sqlite_backend *)store_backend(s))->dash[DS_##name])

/* The helpers (store_sqlite.c): the connection, an error from its last failure, a script, a
 * statement (see RUN), a step's code turned into a status. */
sqlite3 *sq_db_of(struct store *s);
int sq_fail(struct store *s, const char *what);
int sq_exec(struct store *s, const char *sql);
int sq_run(struct store *s, sqlite3_stmt **cache, const char *sql, const char *fmt, ...);
int sq_vrun(struct store *s, sqlite3_stmt **cache, const char *sql, const char *fmt, va_list ap);
int sq_done(struct store *s, sqlite3_stmt *q, int rc, const char *what);
/* One row into out by read, or STORE_NOT_FOUND with the message none. */
int sq_one_row(struct store *s, sqlite3_stmt *q, int rc, void (*read)(sqlite3_stmt *, void *),
               void *out, const char *none, const char *what);
/* Every row: read(q, row), then cb(ud, row, q); non-zero from cb ends the walk. */
int sq_each_row(struct store *s, sqlite3_stmt *q, int rc, void (*read)(sqlite3_stmt *, void *),
                void *row, int (*cb)(void *ud, void *row, sqlite3_stmt *q), void *ud,
                const char *what);
/* BEGIN IMMEDIATE; and COMMIT, or ROLLBACK keeping the error, when status is not STORE_OK. */
int sq_begin(struct store *s);
int sq_end(struct store *s, int status);
/* BEGIN IMMEDIATE for a write that no answer waits for and that nothing bills (request counts, a
 * heartbeat): under sync=full it does not wait for the disk either (synchronous = NORMAL until
 * its sq_end). The next commit that does wait (a ledger commit) flushes the log with it, since
 * one fdatasync of the log covers every frame written before it; until then a power failure may
 * lose it, as under sync=normal, never a crash of the process. */
int sq_begin_relaxed(struct store *s);
/* Ends a read transaction (rolled back, and reported, when it cannot end). */
int sq_end_read(struct store *s, int status);
/* A text column, "" for NULL. */
void sq_copy_text(char *dst, size_t size, sqlite3_stmt *q, int col);
/* Inserts an account row, inside the caller's transaction. */
int sqlite_account_insert(struct store *s, const struct store_account *a);
/* Writes an audit entry inside the caller's transaction (none when e is NULL). */
int sq_audit_row(struct store *s, const struct store_audit *e);

/* Signals readers of the change feed (store_changes_fd) when status is STORE_OK; returns it. */
int sq_changed(struct store *s, int status);
/* Reads a whole table with where the change feed stands (key_changes when keys is 1, else
 * account_changes) in one read transaction, so that the cursor matches the rows read: runs the
 * statement `which` (its SQL and bindings as sq_run's), walks its rows as sq_each_row and sets
 * *cursor once all are read. */
int sq_load_all(struct store *s, int keys, struct store_cursor *cursor,
                void (*read)(sqlite3_stmt *, void *), void *row,
                int (*one)(void *ud, void *row, sqlite3_stmt *q), void *ud, const char *what,
                int which, const char *sql, const char *fmt, ...);
/* The caller's callback (the one of its type) and its argument, for the function a row walk
 * (sq_each_row, sq_walk_changes) calls for each row. */
struct sq_walk {
    store_key_list_cb key_list;
    store_key_load_cb key_load;
    store_audit_cb audit;
    store_account_cb account;
    void *ud;
};
/* Walks change-feed rows (their sequence number in column seq_col), advancing c past them. */
int sq_walk_changes(struct store *s, sqlite3_stmt *q, int rc, struct store_cursor *c,
                    int (*one)(void *ud, void *row, sqlite3_stmt *q), void *ud, void *row,
                    void (*read)(sqlite3_stmt *, void *), int seq_col, const char *what);
/* Row readers: an account (columns ACCOUNT_COLUMNS), a count (column 0). */
void sq_read_account(sqlite3_stmt *q, void *out);
void sq_read_count(sqlite3_stmt *q, void *out);

/* The operations of the ops table (store.h's STORE_OPS and STORE_OPS_OWN): keys and the change feed
 * in sqlite_keys.c, dashboard access in sqlite_access.c, plans, quotas and the ledger in
 * sqlite_ledger.c, accounts in store_sqlite.c. */
#define SQLITE_OP(name, params, args) int sqlite_##name params;
STORE_OPS(SQLITE_OP)
STORE_OPS_OWN(SQLITE_OP)
#undef SQLITE_OP

#endif
