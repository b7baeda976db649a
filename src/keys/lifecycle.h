/* The key lifecycle, shared by the CLI and the dashboard: create (the secret is shown once),
 * roll (a replacement, with a grace period for the old key), rename, allowlist, expire and
 * revoke. Every operation writes its audit entry in the store; none ever records a secret.
 *
 * A running server learns of each change through the store's change log (keys/keysync.h); the
 * caller nudges it when it is another process (the CLI). */
#ifndef KN_KEYS_LIFECYCLE_H
#define KN_KEYS_LIFECYCLE_H

#include <stdint.h>

#include "keys/apikey.h"
#include "store/store.h"

/* Who acts, for the audit log. */
struct lifecycle_actor {
    const char *name; /* "cli" or a user's email. */
    const char *ip;   /* The client address, or "" for the CLI. */
};

/* What a new key looks like. */
struct lifecycle_spec {
    const char *account_id;
    const char *name; /* 1..STORE_NAME_MAX bytes. */
    enum apikey_mode mode;
    enum apikey_env env;
    int64_t expires_at;    /* Unix time, 0 = never. */
    const char *allowlist; /* IP ranges as text (see core/ipnet.h), NULL or "" for any. */
    const char *models;    /* Canonical model list (lifecycle_canonical_models), NULL or "" for
                            * all the plan's. */
    int64_t requests_per_minute; /* The key's own limit, 0 for none. */
    int64_t monthly_requests;    /* A live key's own monthly quota of requests, 0 for none. */
};

#define LIFECYCLE_MODELS_MAX 32 /* Models one restricted key may name. */

struct plans;
struct plan;
/* Turns a list of model names (comma-separated text) into its canonical form in out: each a model
 * the plan may use (any valid name without a catalogue), without repeats, in the order given.
 * Returns 0, or -1 with a message naming what is wrong in err. */
int lifecycle_canonical_models(const struct plans *ps, const struct plan *plan, const char *text,
                               char out[STORE_MODELS_MAX], char *err, size_t errsize);
/* 1 when the canonical list `models` allows the model `name` ("" allows every model). */
int lifecycle_model_allowed(const char *models, const char *name, size_t len);

/* Checks a key name: 1..STORE_NAME_MAX bytes of UTF-8, no control characters. Returns 0 or -1. */
int lifecycle_valid_name(const char *name);

/* Turns allowlist text into its canonical form in out. Returns 0, or -1 with a message in err. */
int lifecycle_canonical_allowlist(const char *text, char out[STORE_ALLOWLIST_MAX], char *err,
                                  size_t errsize);

/* Fills k for a new key described by spec (without storing it) and writes its secret into sk.
 * The caller wipes sk once shown. */
void lifecycle_fill(const uint8_t secret[APIKEY_SECRET_LEN], const struct lifecycle_spec *spec,
                    const char *created_by, struct store_key *k, char sk[APIKEY_MAX_LEN + 1]);

/* Creates a key: stores it, audits it, writes it to *k and its secret to sk. Returns a store
 * status; on STORE_ERROR the store's message says why. The spec must be valid. */
int lifecycle_create(struct store *s, const uint8_t secret[APIKEY_SECRET_LEN],
                     const struct lifecycle_spec *spec, const struct lifecycle_actor *who,
                     struct store_key *k, char sk[APIKEY_MAX_LEN + 1]);

/* Operator keys (the operator API's; no account): create writes a new one named `name` and its
 * secret to sk; revoke revokes k. Each with its audit entry (account ""). */
int lifecycle_operator_key_create(struct store *s, const uint8_t secret[APIKEY_SECRET_LEN],
                                  const char *name, const struct lifecycle_actor *who,
                                  struct store_key *k, char sk[APIKEY_MAX_LEN + 1]);
int lifecycle_operator_key_revoke(struct store *s, const struct store_key *k,
                                  const struct lifecycle_actor *who);

/* Rolls the key `old`: a replacement with the same account, name, mode, environment,
 * allowlist and expiry, and the old key expiring after grace seconds (0 = now) or at its own
 * expiry when that comes first. Writes the replacement to
 * *k and its secret to sk. STORE_CONFLICT when the old key is revoked, expired or already rolled.
 */
int lifecycle_roll(struct store *s, const uint8_t secret[APIKEY_SECRET_LEN],
                   const struct store_key *old, int64_t grace, const struct lifecycle_actor *who,
                   struct store_key *k, char sk[APIKEY_MAX_LEN + 1]);

/* Revokes, expires (at Unix time `at`), renames, or replaces the allowlist of key k (as read
 * from the store), with an audit entry each. */
int lifecycle_revoke(struct store *s, const struct store_key *k, const struct lifecycle_actor *who);
int lifecycle_expire(struct store *s, const struct store_key *k, int64_t at,
                     const struct lifecycle_actor *who);
int lifecycle_rename(struct store *s, const struct store_key *k, const char *name,
                     const struct lifecycle_actor *who);
int lifecycle_set_allowlist(struct store *s, const struct store_key *k, const char *canonical,
                            const struct lifecycle_actor *who);
/* Restricts key k to the canonical model list, its own requests per minute and its own monthly
 * quota of requests (0: none). */
int lifecycle_set_restrictions(struct store *s, const struct store_key *k, const char *models,
                               int64_t requests_per_minute, int64_t monthly_requests,
                               const struct lifecycle_actor *who);

/* Makes every text field of an audit entry valid UTF-8 (lifecycle_audit_entry does it before
 * writing; readers of older rows do it before building JSON, which refuses anything else). */
void lifecycle_audit_clean(struct store_audit *e);

/* Writes one audit entry. NULL strings are stored empty. Failures to write the audit log are
 * reported on stderr and do not undo the change they record. */
void lifecycle_audit_entry(struct store *s, const char *account_id, const char *actor,
                           const char *ip, const char *action, const char *target,
                           const char *result, const char *detail);

/* Writes one audit entry about key k (or about nothing when k is NULL), by `who`. */
/* Fills e as the "ok" entry of a key change, for the store to commit with the change (see the
 * store_key_* functions); k may be NULL. */
void lifecycle_key_entry(struct store_audit *e, const char *account_id,
                         const struct lifecycle_actor *who, const char *action,
                         const struct store_key *k, const char *detail);
void lifecycle_audit(struct store *s, const char *account_id, const struct lifecycle_actor *who,
                     const char *action, const struct store_key *k, const char *result,
                     const char *detail);

/* Returns "active", "revoked", "expired" or "rolled" (active during its grace period) for k at
 * Unix time now. */
const char *lifecycle_status(const struct store_key *k, int64_t now);

#endif
