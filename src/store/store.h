/* The store: accounts, keys and usage counts, behind one interface with pluggable backends (a
 * table of function pointers, like SQLite's VFS). The backend is chosen from the database URL;
 * today that is SQLite (a file path, or "sqlite:PATH" with options after a '?', see store_open).
 *
 * A `struct store` is a connection: use it from one thread at a time. Functions return STORE_OK
 * (0) or a negative enum store_status; output parameters are written only on success, and
 * store_errmsg tells what went wrong. Times are the caller's: every function that stamps a row
 * takes `at` or `now` (Unix seconds, or milliseconds where the name says so). */
#ifndef KN_STORE_STORE_H
#define KN_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_ID_SIZE 32
#define STORE_HASH_LEN 32
#define STORE_HINT_SIZE 32
#define STORE_EMAIL_MAX 254
#define STORE_NAME_MAX 128
#define STORE_ALLOWLIST_MAX 2048 /* Canonical text of a key's IP allowlist. */
#define STORE_MODELS_MAX 1024    /* A restricted key's list of models, its NUL included. */

enum store_status {
    STORE_OK = 0,
    STORE_ERROR = -1,
    STORE_NOT_FOUND = -2,
    STORE_CONFLICT = -3,
    /* The store cannot be reached (a lost connection, a disk that fails): not ready; back off,
     * then try again. */
    STORE_UNAVAILABLE = -4,
    /* The call lost a race with another writer (a lock held too long, a serialisation failure):
     * nothing was changed; try again at once. */
    STORE_RETRY = -5,
    /* A change feed's reader fell behind the change log's retention (store_key_changes,
     * store_account_changes): changes after its cursor were pruned before it read them, or the
     * log ends before its cursor (restored from an older copy), so it must load everything
     * again (store_keys_load, store_accounts_load). */
    STORE_STALE = -6,
};

/* An account's monthly quota overrides: a limit (>= 0), or one of these. */
#define STORE_QUOTA_FROM_PLAN (-2) /* No override: the plan's quota applies. */
#define STORE_QUOTA_UNLIMITED (-1)
#define STORE_PLAN_MAX 63

struct store_account {
    char id[STORE_ID_SIZE];
    char email[STORE_EMAIL_MAX + 1];
    int64_t created_at;
    char plan[STORE_PLAN_MAX + 1]; /* "" = the plans file's default plan. */
    int64_t quota_requests;        /* STORE_QUOTA_FROM_PLAN, STORE_QUOTA_UNLIMITED or a limit. */
    int64_t quota_tokens;          /* Likewise, for input + output tokens. */
    int64_t suspended_at;          /* When the operator suspended it (Unix seconds), or 0. */
};

typedef int (*store_account_cb)(void *ud, const struct store_account *a);

/* Where a reader of a change feed (store_key_changes, store_account_changes) stands. A backend
 * hands a reader every change committed after its cursor at least once, whatever order its
 * writers commit in. v[0] is the position in the change log, a number that grows with every
 * change and means the same on every connection (store_changes_newest, store_node_beat); the
 * rest is the backend's. */
struct store_cursor {
    int64_t v[4];
};

/* What store_ledger_add did with each row. */
enum store_ledger_outcome {
    STORE_LEDGER_ADDED = 1,         /* Written now: the request is billed. */
    STORE_LEDGER_BILLED_BEFORE = 2, /* Its request id was billed already (a retried batch). */
    STORE_LEDGER_VOIDED = 3,        /* Its request id was voided (store_ledger_void): not billed,
                                       and its answer must not be delivered. */
};

/* One billed request: a row of the usage ledger. */
struct store_ledger_row {
    char request_id[40];
    char account_id[STORE_ID_SIZE];
    char key_id[STORE_ID_SIZE];
    char environment[16];
    char model[129];
    char currency[8];
    char plan[STORE_PLAN_MAX + 1];
    uint32_t input_tokens;
    uint32_t output_tokens;
    int64_t price_micros; /* Integer micro-units of the currency. */
    int64_t at_ms;        /* Unix time in milliseconds. */
    int64_t plan_version; /* The plans version that priced it (0: a plans file). */
};

/* Billed usage summed over one UTC day, key and model (the ledger's rollup). */
struct store_usage_sum {
    int64_t day;   /* Days since the epoch, UTC. */
    int64_t month; /* year * 12 + month - 1, UTC. */
    char key_id[STORE_ID_SIZE];
    char model[129];
    char environment[16];
    uint64_t requests;
    uint64_t input_tokens;
    uint64_t output_tokens;
    int64_t price_micros;
};

typedef int (*store_usage_sum_cb)(void *ud, const struct store_usage_sum *u);

/* An account's billed requests and tokens in one month. */
struct store_month_total {
    char account_id[STORE_ID_SIZE];
    char line_id[STORE_ID_SIZE]; /* line_month_totals: a key line's first key id; else "". */
    uint64_t requests;
    uint64_t tokens;
};

typedef int (*store_month_total_cb)(void *ud, const struct store_month_total *t);

struct store_key {
    char id[STORE_ID_SIZE];
    char account_id[STORE_ID_SIZE];
    char name[STORE_NAME_MAX + 1];
    char mode[12];        /* "live", "test", "admin" or "operator". */
    char environment[16]; /* "development", "staging" or "production". */
    uint8_t hash[STORE_HASH_LEN];
    char hint[STORE_HINT_SIZE];
    char created_by[STORE_EMAIL_MAX + 1];
    int64_t created_at;
    int64_t last_used_at;                   /* 0 = never. */
    int64_t expires_at;                     /* 0 = never. */
    int64_t revoked_at;                     /* 0 = not revoked. */
    char rolled_to[STORE_ID_SIZE];          /* The replacement's id once rolled, or "". */
    char ip_allowlist[STORE_ALLOWLIST_MAX]; /* "203.0.113.0/24,2001:db8::1", or "" for any. */
    /* A restricted key: the public model names it may use ("small,large"; "" for all its plan's)
     * and its own requests per minute (0: only its account's); a live key's own monthly quota
     * of requests (0: only its account's). */
    char models[STORE_MODELS_MAX];
    int64_t requests_per_minute;
    int64_t monthly_requests;
    /* The key whose line of replacements this key is in (the first of them; the key itself when
     * it replaced none): a monthly quota counts the whole line. "" on insert: the key itself. */
    char quota_key[STORE_ID_SIZE];
    /* Filled by key_list only: the requests refused by a limit or quota, all time. */
    int64_t refused;
};

/* One audit-log entry. Never holds a secret: keys are named by id and hint. */
struct store_audit {
    int64_t id;                       /* Assigned by the store. */
    int64_t at;                       /* Unix time, given by the caller. */
    char account_id[STORE_ID_SIZE];   /* The account concerned, or "" for none. */
    char actor[STORE_EMAIL_MAX + 16]; /* "cli", a user's email, or "anonymous". */
    char action[32];                  /* key.create, key.revoke, key.roll, user.signin, ... */
    char target[128];                 /* What was acted on: a key id and hint, an email. */
    char ip[48];                      /* The client address, or "" for the CLI. */
    char result[16];                  /* "ok", "denied", "failed". */
    char detail[256];                 /* Extra facts: a new name, a grace period. */
};

typedef int (*store_audit_cb)(void *ud, const struct store_audit *entry);

/* A person who signs in to the dashboard. */
struct store_user {
    char id[STORE_ID_SIZE];
    char email[STORE_EMAIL_MAX + 1];
    char password_hash[192]; /* Argon2id string, "" when no password is set. */
    int64_t created_at;
    /* Two-factor sign-in (auth/totp.h): the sealed seed ("" for none), when it was turned on (0
     * while only set up), the last step accepted, the unused recovery codes' hashes. */
    char totp_seed[128];
    int64_t totp_enabled_at;
    int64_t totp_last_step;
    char recovery_codes[704];
};

/* A user's membership of an account. */
struct store_member {
    char account_id[STORE_ID_SIZE];
    char user_id[STORE_ID_SIZE];
    char email[STORE_EMAIL_MAX + 1];
    char role[8]; /* "owner" or "member" */
    int64_t created_at;
};

/* A dashboard session. The token itself is never stored, only its keyed hash. */
struct store_session {
    uint8_t token_hash[STORE_HASH_LEN];
    char user_id[STORE_ID_SIZE];
    char account_id[STORE_ID_SIZE];
    char csrf_token[48];
    int64_t created_at, last_seen_at, expires_at;
    char ip[48];
};

/* An invitation to join an account. Only the keyed hash of its token is stored. */
struct store_invite {
    uint8_t token_hash[STORE_HASH_LEN];
    char id[STORE_ID_SIZE]; /* "inv_...", for cancelling it. */
    char account_id[STORE_ID_SIZE];
    char email[STORE_EMAIL_MAX + 1];
    char invited_by[STORE_EMAIL_MAX + 1];
    int64_t created_at, expires_at, accepted_at;
    int64_t canceled_at; /* Cancelled by an owner or voided by wrong passwords; 0 = neither. */
    int failures;        /* Wrong passwords given with it. */
};

/* A one-time link with which a user chooses a password. Only its token's keyed hash is stored. */
struct store_password_token {
    uint8_t token_hash[STORE_HASH_LEN];
    char user_id[STORE_ID_SIZE];
    int64_t created_at, expires_at, used_at;
};

/* A throttle counter: attempts of one kind for one key (an email and an address, an address). */
struct store_throttle {
    int64_t count;    /* Attempts counted since first_at. */
    int64_t first_at; /* When counting began (the window's start). */
    int64_t last_at;  /* The latest attempt counted. */
    int64_t refused;  /* Attempts refused while throttled and not yet reported in the audit log. */
};

/* An Idempotency-Key of the management or operator API (store_idem_begin): the first request's
 * fingerprint and, once it finished, its answer. */
#define STORE_IDEM_KEY_MAX 255
#define STORE_IDEM_TTL (24 * 3600) /* Kept for a day, as Stripe keeps them. */
struct store_idem {
    uint8_t request_hash[STORE_HASH_LEN]; /* What the first request asked (method, path, body). */
    int64_t created_at;
    int status; /* The first answer's HTTP status, or 0 while it is in flight. */
    char *body; /* The first answer (malloc'd; the caller frees it), or NULL in flight. */
};

/* How long the store keeps what it only needs for a while; see store_prune. */
/* What a backup holds, read back from the copy once written (store_backup). */
struct store_backup_info {
    int64_t bytes, accounts, users, keys, ledger_rows, audit_entries;
};

struct store_retention {
    int64_t audit_days;      /* Audit entries older than this are deleted; 0 = kept for ever. */
    int64_t change_log_days; /* Key and account change-log rows older than this are deleted. */
    int64_t throttle_s;      /* Throttle counters idle for this long are deleted. */
    int64_t done_days;       /* Used, cancelled or expired invitations and links, this old. */
    int64_t session_idle_s;  /* Sessions unused for this long are over (KONNECT_SESSION_IDLE). */
};

typedef int (*store_member_cb)(void *ud, const struct store_member *m);
typedef int (*store_invite_cb)(void *ud, const struct store_invite *i);

/* A key's last use is written when it is at least this many seconds after the stored one: the
 * dashboard shows it as "n minutes ago", and rewriting every key's row every second is half of what
 * recording the usage of many busy keys costs. */
#define STORE_LAST_USED_EVERY 60
#define STORE_STR_(x) #x
#define STORE_STR(x) STORE_STR_(x)
#define STORE_LAST_USED_EVERY_S STORE_STR(STORE_LAST_USED_EVERY) /* The same, for the SQL. */

/* Requests served by one key, to be added to the store. */
struct store_usage {
    char key_id[STORE_ID_SIZE];
    int64_t day;       /* UTC day number (Unix time / 86400). */
    uint32_t requests; /* Requests to add to that day. */
    uint32_t refused;  /* Requests refused by a limit or quota, to add to that day. */
    int64_t last_used; /* Unix time of the latest of them; 0: no last-used time to write. */
    /* Set by store_usage_add: 1 when the key's stored last use is now last_used; 0 when it was
     * left (it was less than STORE_LAST_USED_EVERY seconds older) or the backend cannot tell. */
    int last_used_written;
};

/* Called once per key by store_key_list, with the requests the key has served in all, and by the
 * loading functions, with the requests it served on the day they were given; returning non-zero
 * stops the walk. */
typedef int (*store_key_list_cb)(void *ud, const struct store_key *key, uint64_t requests_total);
typedef int (*store_key_load_cb)(void *ud, const struct store_key *key, uint32_t requests_today);

/* A server that uses the store (the nodes table): its heartbeat and how far it has applied the
 * change logs. */
#define STORE_NODE_ID_MAX 63
struct store_node {
    char id[STORE_NODE_ID_MAX + 1];
    int64_t started_at;           /* Unix time. */
    int64_t key_seq, account_seq; /* Change-log positions applied (store_cursor's v[0]). */
    int64_t plans_version;        /* The plans version in force (0: a file's). */
    char counters[8];             /* Where its limits are counted: "local" or "redis". */
    char version[32];
    char address[128]; /* Its base URL, for operators. */
    int64_t age_ms;    /* nodes_list: since its last beat, by the store's clock. */
};

typedef int (*store_node_cb)(void *ud, const struct store_node *n);

struct store;

/* The backend operations that the store's wrappers (store_NAME, declared below) pass on as they
 * are: X(NAME, parameters, arguments). Each is a field of struct store_ops, a wrapper in store.c
 * that the fault switch can fail, and a function of each backend (SQLite: sqlite_NAME); what each
 * does is said at its wrapper. Adding one is a line here, its wrapper's declaration and each
 * backend's function. */
/* Laid out by hand: clang-format would write "struct store * s". */
/* clang-format off */
#define STORE_OPS(X)                                                                               \
    X(account_find, (struct store *s, const char *email_or_id, struct store_account *out),         \
      (s, email_or_id, out))                                                                       \
    X(key_insert,                                                                                  \
      (struct store *s, const struct store_key *keys, size_t n, const struct store_audit *audit),  \
      (s, keys, n, audit))                                                                         \
    X(key_count, (struct store *s, int64_t *count), (s, count))                                    \
    X(key_find, (struct store *s, const char *id, const uint8_t *hash, struct store_key *out),     \
      (s, id, hash, out))                                                                          \
    X(key_list, (struct store *s, const char *account_id, store_key_list_cb cb, void *ud),         \
      (s, account_id, cb, ud))                                                                     \
    X(key_revoke,                                                                                  \
      (struct store *s, const char *id, int64_t at, const char *actor,                             \
       const struct store_audit *audit),                                                           \
      (s, id, at, actor, audit))                                                                   \
    X(key_expire, (struct store *s, const char *id, int64_t at, const struct store_audit *audit),  \
      (s, id, at, audit))                                                                          \
    X(key_rename,                                                                                  \
      (struct store *s, const char *id, const char *name, const struct store_audit *audit),        \
      (s, id, name, audit))                                                                        \
    X(key_set_allowlist,                                                                           \
      (struct store *s, const char *id, const char *allowlist, const struct store_audit *audit),   \
      (s, id, allowlist, audit))                                                                   \
    X(key_set_restrictions,                                                                        \
      (struct store *s, const char *id, const char *models, int64_t requests_per_minute,          \
       int64_t monthly_requests, const struct store_audit *audit),                                 \
      (s, id, models, requests_per_minute, monthly_requests, audit))                               \
    X(key_roll,                                                                                    \
      (struct store *s, const char *old_id, const struct store_key *replacement,                   \
       int64_t old_expires_at, const struct store_audit *audit),                                   \
      (s, old_id, replacement, old_expires_at, audit))                                             \
    X(audit_add, (struct store *s, const struct store_audit *e), (s, e))                           \
    X(audit_list,                                                                                  \
      (struct store *s, const char *account_id, int64_t before_id, int limit, store_audit_cb cb,   \
       void *ud),                                                                                  \
      (s, account_id, before_id, limit, cb, ud))                                                   \
    X(user_find, (struct store *s, const char *email_or_id, struct store_user *out),               \
      (s, email_or_id, out))                                                                       \
    X(user_set_password, (struct store *s, const char *user_id, const char *hash),                 \
      (s, user_id, hash))                                                                          \
    X(user_totp_set,                                                                               \
      (struct store *s, const char *user_id, const char *expect, const char *seed,                 \
       int64_t enabled_at, const char *recovery_codes, int64_t last_step),                         \
      (s, user_id, expect, seed, enabled_at, recovery_codes, last_step))                           \
    X(user_totp_step, (struct store *s, const char *user_id, int64_t step), (s, user_id, step))    \
    X(user_recovery_take,                                                                          \
      (struct store *s, const char *user_id, const char *expect, const char *next),                \
      (s, user_id, expect, next))                                                                  \
    X(account_two_factor, (struct store *s, const char *account_id, int *required),                \
      (s, account_id, required))                                                                   \
    X(account_set_two_factor, (struct store *s, const char *account_id, int required),             \
      (s, account_id, required))                                                                   \
    X(member_first, (struct store *s, const char *user_id, struct store_member *out),              \
      (s, user_id, out))                                                                           \
    X(member_find,                                                                                 \
      (struct store *s, const char *account_id, const char *user_id, struct store_member *out),    \
      (s, account_id, user_id, out))                                                               \
    X(member_add, (struct store *s, const struct store_member *m, const struct store_user *u),     \
      (s, m, u))                                                                                   \
    X(members_list, (struct store *s, const char *account_id, store_member_cb cb, void *ud),       \
      (s, account_id, cb, ud))                                                                     \
    X(session_insert, (struct store *s, const struct store_session *x), (s, x))                    \
    X(session_find, (struct store *s, const uint8_t *hash, struct store_session *out),             \
      (s, hash, out))                                                                              \
    X(session_touch, (struct store *s, const uint8_t *hash, int64_t at), (s, hash, at))            \
    X(session_delete, (struct store *s, const uint8_t *hash), (s, hash))                           \
    X(sessions_delete_user, (struct store *s, const char *user_id), (s, user_id))                  \
    X(invite_insert, (struct store *s, const struct store_invite *i), (s, i))                      \
    X(invite_find, (struct store *s, const uint8_t *hash, struct store_invite *out),               \
      (s, hash, out))                                                                              \
    X(invite_accept, (struct store *s, const uint8_t *hash, int64_t at), (s, hash, at))            \
    X(invites_list,                                                                                \
      (struct store *s, const char *account_id, int64_t now, store_invite_cb cb, void *ud),        \
      (s, account_id, now, cb, ud))                                                                \
    X(invite_fail, (struct store *s, const uint8_t *hash, int max, int64_t at, int *failures),     \
      (s, hash, max, at, failures))                                                                \
    X(invite_cancel,                                                                               \
      (struct store *s, const char *account_id, const char *id, int64_t at,                        \
       struct store_invite *out),                                                                  \
      (s, account_id, id, at, out))                                                                \
    X(invites_pending, (struct store *s, const char *account_id, int64_t now, int64_t *count),     \
      (s, account_id, now, count))                                                                 \
    X(password_token_insert, (struct store *s, const struct store_password_token *t), (s, t))      \
    X(password_token_find,                                                                         \
      (struct store *s, const uint8_t *hash, struct store_password_token *out), (s, hash, out))    \
    X(password_token_use,                                                                          \
      (struct store *s, const uint8_t *hash, const char *password_hash, int64_t at),               \
      (s, hash, password_hash, at))                                                                \
    X(member_remove, (struct store *s, const char *account_id, const char *user_id, int64_t at),   \
      (s, account_id, user_id, at))                                                                \
    X(sessions_delete_others, (struct store *s, const char *user_id, const uint8_t *keep),         \
      (s, user_id, keep))                                                                          \
    X(key_count_working, (struct store *s, const char *account_id, int64_t now, int64_t *count),   \
      (s, account_id, now, count))                                                                 \
    X(throttle_get,                                                                                \
      (struct store *s, const char *kind, const char *key, struct store_throttle *out),            \
      (s, kind, key, out))                                                                         \
    X(throttle_hit,                                                                                \
      (struct store *s, const char *kind, const char *key, int64_t now, int64_t window,            \
       struct store_throttle *out),                                                                \
      (s, kind, key, now, window, out))                                                            \
    X(throttle_refuse, (struct store *s, const char *kind, const char *key, int64_t *refused),     \
      (s, kind, key, refused))                                                                     \
    X(throttle_clear, (struct store *s, const char *kind, const char *key), (s, kind, key))        \
    X(operator_key_insert,                                                                         \
      (struct store *s, const struct store_key *k, const struct store_audit *audit),               \
      (s, k, audit))                                                                               \
    X(operator_key_find,                                                                           \
      (struct store *s, const char *id, const uint8_t *hash, struct store_key *out),               \
      (s, id, hash, out))                                                                          \
    X(operator_keys_list, (struct store *s, store_key_list_cb cb, void *ud), (s, cb, ud))          \
    X(operator_key_revoke,                                                                         \
      (struct store *s, const char *id, int64_t at, const char *actor,                             \
       const struct store_audit *audit),                                                           \
      (s, id, at, actor, audit))                                                                   \
    X(operator_key_touch, (struct store *s, const char *id, int64_t at), (s, id, at))              \
    X(idem_begin,                                                                                  \
      (struct store *s, const char *scope, const char *key, const uint8_t *hash, int64_t now,       \
       int64_t stale_before, struct store_idem *out),                                              \
      (s, scope, key, hash, now, stale_before, out))                                               \
    X(idem_finish,                                                                                 \
      (struct store *s, const char *scope, const char *key, int status, const char *body),         \
      (s, scope, key, status, body))                                                               \
    X(idem_release, (struct store *s, const char *scope, const char *key), (s, scope, key))        \
    X(prune, (struct store *s, const struct store_retention *r, int64_t now, int64_t *deleted),    \
      (s, r, now, deleted))                                                                        \
    X(keys_load,                                                                                   \
      (struct store *s, int64_t today, struct store_cursor *cursor, store_key_load_cb cb,          \
       void *ud),                                                                                  \
      (s, today, cursor, cb, ud))                                                                  \
    X(key_changes,                                                                                 \
      (struct store *s, int64_t today, struct store_cursor *cursor, store_key_load_cb cb,          \
       void *ud),                                                                                  \
      (s, today, cursor, cb, ud))                                                                  \
    X(usage_add, (struct store *s, struct store_usage *u, size_t n), (s, u, n))              \
    X(account_set_plan, (struct store *s, const char *id, const char *plan), (s, id, plan))        \
    X(account_set_quota, (struct store *s, const char *id, int64_t requests, int64_t tokens),      \
      (s, id, requests, tokens))                                                                   \
    X(account_set_suspended, (struct store *s, const char *id, int64_t at), (s, id, at))           \
    X(accounts_load,                                                                               \
      (struct store *s, struct store_cursor *cursor, store_account_cb cb, void *ud),               \
      (s, cursor, cb, ud))                                                                         \
    X(account_changes,                                                                             \
      (struct store *s, struct store_cursor *cursor, store_account_cb cb, void *ud),               \
      (s, cursor, cb, ud))                                                                         \
    X(ledger_void, (struct store *s, const char *request_id, int64_t at_ms, int *was_billed),      \
      (s, request_id, at_ms, was_billed))                                                          \
    X(usage_month_totals, (struct store *s, int64_t month, store_month_total_cb cb, void *ud),     \
      (s, month, cb, ud))                                                                          \
    X(line_month_totals, (struct store *s, int64_t month, store_month_total_cb cb, void *ud),      \
      (s, month, cb, ud))                                                                          \
    X(invoice_number,                                                                              \
      (struct store *s, const char *account_id, int64_t month, int64_t now, int64_t *seq),         \
      (s, account_id, month, now, seq))                                                            \
    X(usage_sums,                                                                                  \
      (struct store *s, const char *account_id, int64_t month_from, int64_t month_to,              \
       store_usage_sum_cb cb, void *ud),                                                           \
      (s, account_id, month_from, month_to, cb, ud))                                               \
    X(node_beat, (struct store *s, const struct store_node *n), (s, n))                            \
    X(node_leave, (struct store *s, const char *id), (s, id))                                      \
    X(nodes_list, (struct store *s, store_node_cb cb, void *ud), (s, cb, ud))                      \
    X(changes_newest,                                                                              \
      (struct store *s, int64_t *key_seq, int64_t *account_seq, int64_t *plans_version),           \
      (s, key_seq, account_seq, plans_version))                                                    \
    X(plans_publish,                                                                               \
      (struct store *s, const char *body, int64_t at, const char *by,                              \
       const struct store_audit *audit, int64_t *version),                                         \
      (s, body, at, by, audit, version))                                                           \
    X(plans_newest, (struct store *s, int64_t *version, char **body), (s, version, body))          \
    X(start_lock, (struct store *s, int take), (s, take))                                          \
    X(backup, (struct store *s, const char *to, struct store_backup_info *info), (s, to, info))

/* The other operations that return a status, whose wrappers do more than pass them on. open opens
 * the store at `where` (the URL without its scheme and options) with the options after the URL's
 * '?' ("name=value&...", NULL for none; an unknown one is an error); changes_fd returns a
 * descriptor, not a status (store_changes_fd). */
#define STORE_OPS_OWN(X)                                                                           \
    X(open, (struct store *s, const char *where, const char *options), (s, where, options))        \
    X(migrate, (struct store *s), (s))                                                             \
    X(ping, (struct store *s), (s))                                                                \
    X(changes_fd, (struct store *s), (s))                                                          \
    X(account_insert_owned,                                                                        \
      (struct store *s, const struct store_account *a, const struct store_user *u, int existing),  \
      (s, a, u, existing))                                                                         \
    X(ledger_add,                                                                                  \
      (struct store *s, const struct store_ledger_row *rows, size_t n, uint8_t *outcome),          \
      (s, rows, n, outcome))
/* clang-format on */

#define STORE_OP_FIELD(name, params, args) int(*name) params;

/* The operations a backend implements. */
struct store_ops {
    const char *name;
    void (*close)(struct store *s);
    /* Called by the store thread when nothing waits for it (its mailbox is empty): housekeeping
     * that would otherwise hold a commit and the answers waiting for it runs now (SQLite: the
     * log's restart, sqlite_checkpoint.c). May be NULL. */
    void (*idle)(struct store *s);
    void (*changes_drain)(struct store *s);
    STORE_OPS(STORE_OP_FIELD)
    STORE_OPS_OWN(STORE_OP_FIELD)
};

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;

/* Returns 1 when url names a PostgreSQL database ("postgresql://..." or "postgres://...", any
 * URL that libpq reads), 0 for SQLite. */
int store_is_postgres(const char *url);

/* Writes url to out without its password (a PostgreSQL URL's user:password@ or password=
 * parameter), for messages and logs. */
void store_url_redacted(const char *url, char *out, size_t size);

/* Opens the store named by url, creating it when missing, and applies pending migrations when
 * migrate is non-zero; a store migrated by a newer Konnect than this one is refused. Returns the
 * connection, or NULL with a message written into err.
 *
 * url is a PostgreSQL URL (store_is_postgres; read by libpq as it is, with its own parameters),
 * a path (any text without a scheme) or "sqlite:PATH", which may carry options after a
 * '?': "sync=full" (every commit waits for the disk, and so survives a power loss) or
 * "sync=normal" (the default: a commit survives a crash of the process, not of the machine), and
 * "checkpoint=background" (for a connection that writes all the time, the server's store thread:
 * SQLite's WAL checkpoints run on a thread of their own, so that no commit waits for them;
 * stopped by store_close). `options`, when not NULL, are more of them, applied after the URL's. */
struct store *store_open(const char *url, int migrate, char *err, size_t errsize);
struct store *store_open_with(const char *url, const char *options, int migrate, char *err,
                              size_t errsize);

/* Returns 1 when the store that url names exists already (a database file for SQLite), 0 when
 * opening it would create it. Writes the path it looked at, absolute, to where (when not NULL).
 * A PostgreSQL database is never created by opening it: 1, and its URL without the password. */
int store_exists(const char *url, char *where, size_t size);

/* Closes the connection (NULL is accepted). */
void store_close(struct store *s);

/* Returns the URL (or path) s was opened with. */
const char *store_url_of(struct store *s);

/* Returns the message of the last failed call on s. */
const char *store_errmsg(struct store *s);

/* Records an error message on s; used by backends. Returns STORE_ERROR unless status says
 * otherwise. */
int store_set_error(struct store *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Returns the backend's private state; used by backends. */
void *store_backend(struct store *s);

/* Thin wrappers over the backend operations; see struct store_ops. */
int store_migrate(struct store *s);
int store_ping(struct store *s);
void store_idle(struct store *s);
/* Returns 1 when email has the shape of an email address (local@domain, 3 to STORE_EMAIL_MAX
 * bytes, no spaces or controls, one '@'), 0 otherwise. Check it before any lookup or log. */
int store_email_valid(const char *email);
/* For the backends' change feeds: whether a reader at cursor must load everything again, given
 * the oldest and newest change the log holds (-1 when it is empty). The prune takes only a
 * prefix of the log and never its newest change, so a hole shows as an oldest change past the
 * one after the cursor; a newest change before the cursor means the log was rewound. */
int store_feed_stale(int64_t cursor, int64_t oldest, int64_t newest);

/* Creates an account for email (lower-cased) and its owner, and writes the account to *out.
 * The owner is a new user, given password_hash (NULL or "" for none), unless existing_user names
 * the user (by id) that already has this email: a user the caller did not create never becomes an
 * owner by accident. STORE_CONFLICT when the email has an account, or has a user and
 * existing_user is NULL (the message then names the user); STORE_NOT_FOUND when existing_user is
 * not the user of that email; STORE_ERROR for an email that is not one. */
int store_account_create(struct store *s, const char *email, const char *password_hash,
                         const char *existing_user, struct store_account *out);
/* Reads every account, oldest first (creation times are to the second, so ties go by id), into
 * a malloc'd array *out of *n (the caller frees it, also after a failure). */
int store_accounts_list(struct store *s, struct store_account **out, size_t *n);
/* Finds an account by email (any case) or by id. STORE_NOT_FOUND when there is none. */
int store_account_find(struct store *s, const char *email_or_id, struct store_account *out);
/* Key changes. Each commits in one transaction with its audit entry `audit` (none when NULL),
 * so that every change made is audited; a change that fails writes no entry (the caller records
 * the failure if it wants). Inserts n keys. */
int store_key_insert(struct store *s, const struct store_key *keys, size_t n,
                     const struct store_audit *audit);
/* Counts every key in the store. */
int store_key_count(struct store *s, int64_t *count);
/* Finds a key by id (when id is not NULL) or by hash. */
int store_key_find(struct store *s, const char *id, const uint8_t *hash, struct store_key *out);
/* Calls cb for every key of an account, oldest first, with its requests in all. */
int store_key_list(struct store *s, const char *account_id, store_key_list_cb cb, void *ud);
/* Revokes a key at Unix time `at`, recording the actor; a key already revoked keeps its first
 * revocation. STORE_NOT_FOUND when there is no such key. */
int store_key_revoke(struct store *s, const char *id, int64_t at, const char *actor,
                     const struct store_audit *audit);
/* Sets when a key expires (Unix time, 0 = never). STORE_NOT_FOUND when there is no such key. Each
 * of these two changes one field only, so that concurrent commands cannot undo each other. */
int store_key_expire(struct store *s, const char *id, int64_t at, const struct store_audit *audit);
/* Renames a key. STORE_NOT_FOUND when there is no such key. */
int store_key_rename(struct store *s, const char *id, const char *name,
                     const struct store_audit *audit);
/* Replaces a key's IP allowlist (canonical text, "" for none). */
int store_key_set_allowlist(struct store *s, const char *id, const char *allowlist,
                            const struct store_audit *audit);
/* Sets a key's restrictions: the models it may use ("" for all its plan's), its own requests
 * per minute and its own monthly quota of requests (0 for none). */
int store_key_set_restrictions(struct store *s, const char *id, const char *models,
                               int64_t requests_per_minute, int64_t monthly_requests,
                               const struct store_audit *audit);
/* Rolls a key: inserts the replacement, records it on the old key and makes the old key expire
 * at old_expires_at (or keeps an earlier expiry). STORE_NOT_FOUND when the old key does not
 * exist; STORE_CONFLICT when it is revoked or already rolled. */
int store_key_roll(struct store *s, const char *old_id, const struct store_key *replacement,
                   int64_t old_expires_at, const struct store_audit *audit);
/* Dashboard users, memberships, sessions, invitations and sign-in failures. Each is a thin
 * wrapper over the backend; see struct store_ops. */
int store_user_find(struct store *s, const char *email_or_id, struct store_user *out);
/* Sets a user's password and voids their unused set-password links, in one transaction. */
int store_user_set_password(struct store *s, const char *user_id, const char *hash);
/* Two-factor sign-in. totp_set writes the seed ("" or NULL removes it, with the codes), when it
 * was turned on (0: set up, not on yet), the recovery codes' list and the last step accepted; with
 * `expect` not NULL only while two-factor sign-in is not on and the seed set up is `expect` (""
 * for any or none), else STORE_CONFLICT: a setup or a turning-on that raced with another never
 * undoes it. totp_step records the step of an accepted code: STORE_CONFLICT unless it is later
 * than the one recorded (a code used twice, on one server or two). recovery_take replaces the
 * list `expect` by `next`: STORE_CONFLICT when it is not `expect` any more (the code was used
 * meanwhile). */
int store_user_totp_set(struct store *s, const char *user_id, const char *expect, const char *seed,
                        int64_t enabled_at, const char *recovery_codes, int64_t last_step);
int store_user_totp_step(struct store *s, const char *user_id, int64_t step);
int store_user_recovery_take(struct store *s, const char *user_id, const char *expect,
                             const char *next);
/* Whether an account's owner requires two-factor sign-in of its members, and setting it. */
int store_account_two_factor(struct store *s, const char *account_id, int *required);
int store_account_set_two_factor(struct store *s, const char *account_id, int required);
/* The user's first membership (owner before member, oldest first). */
int store_member_first(struct store *s, const char *user_id, struct store_member *out);
int store_member_find(struct store *s, const char *account_id, const char *user_id,
                      struct store_member *out);
/* Adds a membership, creating the user u first when u is not NULL. */
int store_member_add(struct store *s, const struct store_member *m, const struct store_user *u);
int store_members_list(struct store *s, const char *account_id, store_member_cb cb, void *ud);
int store_session_insert(struct store *s, const struct store_session *x);
int store_session_find(struct store *s, const uint8_t *hash, struct store_session *out);
int store_session_touch(struct store *s, const uint8_t *hash, int64_t at);
int store_session_delete(struct store *s, const uint8_t *hash);
int store_sessions_delete_user(struct store *s, const char *user_id);
int store_invite_insert(struct store *s, const struct store_invite *i);
int store_invite_find(struct store *s, const uint8_t *hash, struct store_invite *out);
/* Marks an invitation used and cancels the account's other pending invitations for its email,
 * in one transaction; STORE_CONFLICT when it was used or cancelled already. */
int store_invite_accept(struct store *s, const uint8_t *hash, int64_t at);
/* Calls cb for the account's pending invitations at `now`: neither accepted, cancelled nor
 * expired. */
int store_invites_list(struct store *s, const char *account_id, int64_t now, store_invite_cb cb,
                       void *ud);
/* Counts a wrong password given with an invitation and writes the new count to *failures; the
 * max-th voids it (canceled_at = at). STORE_NOT_FOUND when there is no such invitation. */
int store_invite_fail(struct store *s, const uint8_t *hash, int max, int64_t at, int *failures);
/* Cancels the pending invitation `id` of an account and writes it to *out. STORE_NOT_FOUND when
 * the account has no pending invitation with that id. */
int store_invite_cancel(struct store *s, const char *account_id, const char *id, int64_t at,
                        struct store_invite *out);
/* Counts an account's pending invitations at `now`. */
int store_invites_pending(struct store *s, const char *account_id, int64_t now, int64_t *count);
/* One-time set-password links: insert, which voids the user's earlier unused links; find by
 * token hash; use one, which sets the user's password to password_hash and ends every session of
 * the user in the same transaction (STORE_CONFLICT when the link was used already). Setting a
 * password in any way (store_user_set_password too) voids the user's unused links. */
int store_password_token_insert(struct store *s, const struct store_password_token *t);
int store_password_token_find(struct store *s, const uint8_t *hash,
                              struct store_password_token *out);
int store_password_token_use(struct store *s, const uint8_t *hash, const char *password_hash,
                             int64_t at);
/* Removes a user from an account, ends their sessions in it and cancels the account's pending
 * invitations for their email (at `at`), in one transaction. STORE_NOT_FOUND when the user is
 * not a member. */
int store_member_remove(struct store *s, const char *account_id, const char *user_id, int64_t at);
/* Ends every session of a user except the one whose token hash is `keep`. */
int store_sessions_delete_others(struct store *s, const char *user_id, const uint8_t *keep);
/* Counts an account's working keys at `now`: neither revoked nor expired (rolled keys in their
 * grace period count). */
int store_key_count_working(struct store *s, const char *account_id, int64_t now, int64_t *count);

/* Throttle counters, one per kind and key. get: STORE_NOT_FOUND when there is none. hit: counts
 * one attempt at `now`, starting the count again when the last one is older than `window`
 * seconds, sets the refused count back to 0 (the caller read and reported it first) and writes
 * the counter. refuse: counts an attempt refused while throttled and writes how many were refused
 * before it (0 for the first). clear: forgets the counter. */
int store_throttle_get(struct store *s, const char *kind, const char *key,
                       struct store_throttle *out);
int store_throttle_hit(struct store *s, const char *kind, const char *key, int64_t now,
                       int64_t window, struct store_throttle *out);
int store_throttle_refuse(struct store *s, const char *kind, const char *key, int64_t *refused);
int store_throttle_clear(struct store *s, const char *kind, const char *key);

/* Operator keys (the operator API's), kept apart from the accounts' keys: a struct store_key
 * whose account_id, environment, expiry, allowlist and rolled_to are empty and whose mode is
 * "operator". insert writes one with its audit entry; find looks one up by id (hash NULL) or by
 * hash; list walks them oldest first (request counts 0); revoke keeps a key's first revocation
 * (STORE_NOT_FOUND: no such key); touch sets its last use. */
int store_operator_key_insert(struct store *s, const struct store_key *k,
                              const struct store_audit *audit);
int store_operator_key_find(struct store *s, const char *id, const uint8_t *hash,
                            struct store_key *out);
int store_operator_keys_list(struct store *s, store_key_list_cb cb, void *ud);
int store_operator_key_revoke(struct store *s, const char *id, int64_t at, const char *actor,
                              const struct store_audit *audit);
int store_operator_key_touch(struct store *s, const char *id, int64_t at);

/* Idempotency keys, per scope (an account's id, or "operator"). begin claims `key` for a request
 * whose fingerprint is hash, at Unix time now: STORE_OK when the request is now the key's owner
 * (the key was free, a day old or more, or held by a request still unfinished since before
 * stale_before: a server that died with it); STORE_CONFLICT with the key's record in *out
 * otherwise (the caller compares the fingerprint, and frees out->body). finish keeps the owner's
 * answer; release frees the key of an owner that did not finish (its answer is not to be
 * replayed). */
int store_idem_begin(struct store *s, const char *scope, const char *key, const uint8_t *hash,
                     int64_t now, int64_t stale_before, struct store_idem *out);
int store_idem_finish(struct store *s, const char *scope, const char *key, int status,
                      const char *body);
int store_idem_release(struct store *s, const char *scope, const char *key);

/* Deletes, in small transactions, what the retention settings no longer keep at `now`: expired
 * sessions, idle throttle counters, finished invitations and links, idempotency keys a day old,
 * old change-log rows and old audit entries. Writes the number of rows deleted to *deleted. */
int store_prune(struct store *s, const struct store_retention *r, int64_t now, int64_t *deleted);

/* Appends an audit entry (its id is filled in by the store, its time is the caller's). */
int store_audit_add(struct store *s, const struct store_audit *e);
/* Calls cb for the newest `limit` audit entries of an account ("" for every account), newest
 * first, with ids below before_id (0 = from the newest). */
int store_audit_list(struct store *s, const char *account_id, int64_t before_id, int limit,
                     store_audit_cb cb, void *ud);
/* The change feed. keys_load calls cb for every key, with its request count on `today` (a UTC
 * day number), and sets *cursor to where the keys read stand (taken in the same snapshot, so
 * that no change is missed); key_changes calls cb for every key changed after *cursor (a key may
 * come more than once) and advances it, or returns STORE_STALE (nothing called) when the change
 * log no longer holds every change after *cursor (pruned), or ends before it (the store was
 * restored from an older copy). */
int store_keys_load(struct store *s, int64_t today, struct store_cursor *cursor,
                    store_key_load_cb cb, void *ud);
int store_key_changes(struct store *s, int64_t today, struct store_cursor *cursor,
                      store_key_load_cb cb, void *ud);
/* What a reader of the change feed waits on: a descriptor that becomes readable when a change to
 * keys or accounts may have committed (SQLite: one this process's connections signal when they
 * commit one; changes made by other processes arrive by the reader's own polling, or a nudge),
 * or -1 when the backend has none. changes_drain consumes its readiness without blocking. */
int store_changes_fd(struct store *s);
void store_changes_drain(struct store *s);
/* Adds request counts and last-used times in one transaction; sets each last_used_written. */
int store_usage_add(struct store *s, struct store_usage *u, size_t n);

/* Puts an account on a plan ("" = the default plan). STORE_NOT_FOUND when there is no such
 * account. */
int store_account_set_plan(struct store *s, const char *id, const char *plan);
/* Overrides an account's monthly quotas (each STORE_QUOTA_FROM_PLAN, STORE_QUOTA_UNLIMITED or a
 * limit). STORE_NOT_FOUND when there is no such account. */
int store_account_set_quota(struct store *s, const char *id, int64_t requests, int64_t tokens);
/* Suspends an account at Unix time `at` (every key of it refused), or reinstates it (at 0).
 * STORE_NOT_FOUND when there is no such account. */
int store_account_set_suspended(struct store *s, const char *id, int64_t at);
/* The accounts' change feed, as keys_load and key_changes: every account, then every account
 * whose plan, quota or suspension changed after *cursor. */
int store_accounts_load(struct store *s, struct store_cursor *cursor, store_account_cb cb,
                        void *ud);
int store_account_changes(struct store *s, struct store_cursor *cursor, store_account_cb cb,
                          void *ud);
/* Appends n ledger rows and adds them to the rollup, in one transaction (a group commit), and
 * writes what it did with rows[i] to outcome[i] (enum store_ledger_outcome). A row whose request
 * id is in the ledger already is not added again, so that a retried batch never bills a request
 * twice, and a voided one is never billed. */
int store_ledger_add(struct store *s, const struct store_ledger_row *rows, size_t n,
                     uint8_t *outcome);
/* Voids request_id in the ledger (at at_ms), unless it is billed: a fence that a late
 * store_ledger_add of it cannot pass. *was_billed tells which. */
int store_ledger_void(struct store *s, const char *request_id, int64_t at_ms, int *was_billed);
/* Calls cb with each account's billed requests and tokens in `month` (year * 12 + month - 1). */
int store_usage_month_totals(struct store *s, int64_t month, store_month_total_cb cb, void *ud);
/* Calls cb with the requests billed in `month` to each line of key replacements (line_id: the
 * first key's id, store_key.quota_key) that has any; tokens are 0. A key's monthly quota counts
 * its line's requests. */
int store_line_month_totals(struct store *s, int64_t month, store_month_total_cb cb, void *ud);
/* Writes to *seq the invoice number of an account's month: the one it was given, or, the first
 * time, the next of the server's one sequence (1, 2, 3, ... without gaps, even when several
 * servers issue invoices at once), recorded with `now` as its issue time. */
int store_invoice_number(struct store *s, const char *account_id, int64_t month, int64_t now,
                         int64_t *seq);
/* Calls cb for each day, key and model of an account's billed usage from month_from to month_to
 * (inclusive), by day, then key, then model. */
int store_usage_sums(struct store *s, const char *account_id, int64_t month_from, int64_t month_to,
                     store_usage_sum_cb cb, void *ud);

/* The nodes table. node_beat writes n (id, started_at, the positions applied, counters, version,
 * address), stamped with the store's clock; node_leave deletes a node that stops; nodes_list
 * calls cb for every node with its age_ms by the store's clock, newest first. changes_newest
 * writes the positions of the newest key and account changes committed, and the newest plans
 * version (0: none). */
int store_node_beat(struct store *s, const struct store_node *n);
int store_node_leave(struct store *s, const char *id);
int store_nodes_list(struct store *s, store_node_cb cb, void *ud);
int store_changes_newest(struct store *s, int64_t *key_seq, int64_t *account_seq,
                         int64_t *plans_version);
/* Plans in the store. publish stores a plans file's text (already validated) as the next
 * version, with its audit entry, in one transaction, and writes the version; newest writes the
 * newest version and its text (malloc'd, the caller frees it), or 0 and NULL when none was ever
 * published. */
int store_plans_publish(struct store *s, const char *body, int64_t at, const char *by,
                        const struct store_audit *audit, int64_t *version);
int store_plans_newest(struct store *s, int64_t *version, char **body);
/* Takes (take = 1) or gives back (0) the lock that servers starting on one store hold while they
 * look at each other in the nodes table, so that of two started together the second sees the
 * first (PostgreSQL: a session advisory lock; SQLite, one server per data directory: nothing). */
int store_start_lock(struct store *s, int take);
/* Writes a consistent copy of the whole store into the new file `to`, while servers go on using
 * it. SQLite: VACUUM INTO, in one read transaction (writers are not held; the step-by-step backup
 * API would start again at every commit of a busy writer), into a file created 0600 that must not
 * exist; the copy is a plain database file, not in WAL mode. PostgreSQL: STORE_ERROR, saying to use
 * pg_dump. The server secret is not in the store, so not in the copy. */
int store_backup(struct store *s, const char *to, struct store_backup_info *info);

#endif
