/* The in-memory key table: keyed hash of a secret -> key record. Every key in the store is here,
 * so verifying a key, known or not, costs one hash and one probe with no disk or network I/O.
 *
 * Concurrency: any number of threads may look up and touch records at the same time without locks;
 * only one thread at a time may call keytable_upsert (the store thread). Records are never freed
 * while the table lives (a revoked key stays, so that it can be answered with api_key_revoked),
 * so a pointer returned by a lookup stays valid until keytable_free. */
#ifndef KN_KEYS_KEYTABLE_H
#define KN_KEYS_KEYTABLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/ipnet.h"
#include "keys/apikey.h"

struct acctrec;
struct keyquota;

#define KEY_ID_SIZE 32

/* A record keeps the first 16 bytes (128 bits) of its key's 32-byte keyed hash (BLAKE2b under the
 * server secret, keys/apikey.h): 16 MB less for a million keys. A presented key matches one of a
 * million records by chance with a probability of 2^-108, and without the secret nobody can aim
 * for one; the store keeps the whole hash. */
#define KEYREC_HASH_LEN 16

#define KEYRULES_MODELS_MAX 1024

/* What restricts a key beyond its mode and expiry; installed whole and never changed (a change
 * installs another and retires this one, which readers may still hold). */
struct keyrules {
    const struct iplist *allow; /* Addresses it may be used from (in the same block); NULL = any. */
    uint32_t rpm;               /* Its own requests per minute; 0 = none. */
    int64_t monthly;            /* A live key's own monthly quota of requests; 0 = none. */
    char models[KEYRULES_MODELS_MAX]; /* The models it may use, "a,b"; "" = all its plan's. */
};

/* What a key shares with the keys like it: its account, rules, line, expiry and revocation. A
 * class never changes once published; a change to a key (revoked, a new expiry or rules) gives
 * it another class, found or made in the table's own set (keytable.c), so that the million test
 * keys of an account with none of these share one class, and a record holds one pointer for all
 * of them. Classes stay until keytable_free (a reader may still hold a replaced one). */
struct keyclass {
    struct acctrec *acct; /* The key's account, whose id it bills (limits/quota.h). */
    /* Where the key may be used from, its models, its own rate: NULL for a key without any. */
    const struct keyrules *rules;
    /* A live key's line of replacements: its month's request count (limits/quota.h), given with
     * the key's first class and kept by every later one, so that every live request counts in
     * it, with a quota or without (one set later starts from what was really used); NULL for
     * other keys. */
    struct keyquota *line;
    /* Unix seconds to 2106 (keyrec_time). */
    uint32_t expires_at; /* 0 = never. */
    uint32_t revoked_at; /* 0 = not revoked. */
    /* The key id when it is not of the form the record packs ("key_" or "opk_" and 20 base62
     * characters, as keys/lifecycle.c makes them); NULL when the record holds it. */
    const char *odd_id;
};

/* One key: 72 bytes, so that a million take 69 MB. The plain fields never change after
 * insertion; the atomic ones are updated in place. */
struct keyrec {
    /* The first KEYREC_HASH_LEN bytes of the key's keyed hash: what a presented key is found by. */
    uint8_t hash[KEYREC_HASH_LEN];
    _Atomic(const struct keyclass *) cls; /* Never NULL once the record is found. */
    _Atomic uint64_t rate_tat;            /* GCRA theoretical arrival time (limits/ratelimit.h). */
    _Atomic uint64_t day_cell;            /* Daily counter (see limits/ratelimit.h). */
    /* The id's 20 base62 characters, 4 to each 3 bytes (62^4 < 2^24); see keyrec_id. */
    uint8_t id[15];
    /* The key's mode (bits 0-1), environment (2-3), the id's kind (4-5: KEYREC_ID_*) and whether
     * it is on the dirty list (bit 7). Only bit 7 changes, and only by sequentially consistent
     * read-modify-writes: mark_dirty's plain load relies on it. */
    _Atomic uint8_t meta;
    /* Unix seconds to 2106 (keyrec_time): in 32 bits, a million records take 12 MB less. */
    _Atomic uint32_t last_used;        /* The last authenticated request. */
    _Atomic uint32_t pending_requests; /* Requests not yet written to the store. */
    _Atomic uint32_t pending_refused;  /* Refused ones (keytable_refuse), likewise. */
    _Atomic uint32_t dirty_next; /* The next record on the dirty list: its index + 1; 0 = end. */
};

#define KEYREC_ID_KEY 0 /* "key_" and the packed characters. */
#define KEYREC_ID_OPK 1 /* "opk_" and the packed characters. */
#define KEYREC_ID_ODD 2 /* The class's odd_id. */
#define KEYREC_DIRTY 0x80

/* The record's class: acquire, so that what the writer put in it is seen. */
static inline const struct keyclass *keyrec_class(const struct keyrec *r)
{
    return atomic_load_explicit(&((struct keyrec *)r)->cls, memory_order_acquire);
}

static inline enum apikey_mode keyrec_mode(const struct keyrec *r)
{
    return (enum apikey_mode)(
        atomic_load_explicit(&((struct keyrec *)r)->meta, memory_order_relaxed) & 3);
}

static inline enum apikey_env keyrec_env(const struct keyrec *r)
{
    return (enum apikey_env)(
        (atomic_load_explicit(&((struct keyrec *)r)->meta, memory_order_relaxed) >> 2) & 3);
}

static inline struct acctrec *keyrec_acct(const struct keyrec *r)
{
    return keyrec_class(r)->acct;
}

static inline const struct keyrules *keyrec_rules(const struct keyrec *r)
{
    return keyrec_class(r)->rules;
}

static inline struct keyquota *keyrec_line(const struct keyrec *r)
{
    return keyrec_class(r)->line;
}

/* Writes the record's key id and its NUL into out and returns out. */
char *keyrec_id(const struct keyrec *r, char out[KEY_ID_SIZE]);

/* A record's time: Unix seconds, 0 for none (or before 1970), UINT32_MAX for past 2106 (an expiry
 * that far is as good as none). */
static inline uint32_t keyrec_time(int64_t t)
{
    return t <= 0 ? 0 : t >= (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)t;
}

/* The fields of a key that the store owns; used to insert or refresh a record. */
struct keyrec_data {
    uint8_t hash[APIKEY_HASH_LEN];
    char id[KEY_ID_SIZE];
    enum apikey_mode mode;
    enum apikey_env env;
    struct acctrec *acct;
    int64_t expires_at;
    int64_t revoked_at;
    int64_t last_used;
    uint64_t day_cell;          /* Today's request count as a daily-counter cell, 0 when unknown. */
    const struct iplist *allow; /* Borrowed; the table keeps its own copy. NULL or empty = any. */
    const char *models;         /* Borrowed: a restricted key's models, NULL or "" = all. */
    uint32_t rpm;               /* A restricted key's own requests per minute, 0 = none. */
    int64_t monthly;            /* A live key's own monthly quota of requests, 0 = none. */
    /* A live key: the first key of its line of replacements (its own id when it replaced none),
     * whose count it shares; "" for other keys. */
    char line_id[KEY_ID_SIZE];
};

struct keytable;

/* Creates an empty table sized for about `expected` keys (it grows as needed). */
struct keytable *keytable_new(size_t expected);

/* Frees the table and every record in it. No other thread may use it any more. */
void keytable_free(struct keytable *kt);

/* Returns the record whose hash equals `hash`, or NULL. Lock-free; hashes are compared in constant
 * time. */
struct keyrec *keytable_lookup(struct keytable *kt, const uint8_t hash[APIKEY_HASH_LEN]);

/* Inserts the key described by d, or refreshes the mutable fields (expiry, revocation, allowlist)
 * of the record that has its hash. Only one thread may call it at a time. Returns the record. */
struct keyrec *keytable_upsert(struct keytable *kt, const struct keyrec_data *d);

/* Raises the count of the line whose first key is line_id to `requests` billed in `month` (the
 * store's, at start) where it is lower. Only the writer thread may call it. */
void keytable_line_raise(struct keytable *kt, const char *line_id, int64_t month,
                         uint64_t requests);

/* Grows the table, while it is still empty of readers, to hold `expected` keys without growing
 * again. Only the writer thread may call it. */
void keytable_reserve(struct keytable *kt, size_t expected);

/* Returns the number of keys in the table. */
size_t keytable_count(struct keytable *kt);

/* Records that rec was used at Unix time `now`: updates last_used, adds `requests` to the requests
 * to be written (0 for a request the limits refused) and queues the record for the next flush to
 * the store. Lock-free. */
void keytable_touch(struct keytable *kt, struct keyrec *rec, int64_t now, uint32_t requests);

/* Records that a request with rec was refused by a limit or quota (429) at Unix time `now`: the
 * key's count of refused requests, written with its requests. Lock-free. */
void keytable_refuse(struct keytable *kt, struct keyrec *rec, int64_t now);

/* Detaches and returns the list of records touched since the last call, or NULL; the list goes
 * on with keytable_dirty_next. For each record the caller must take the next one first, then call
 * keytable_settle. Only one thread may walk a detached list. */
struct keyrec *keytable_take_dirty(struct keytable *kt);

/* The record after rec on a list detached by keytable_take_dirty, or NULL. */
struct keyrec *keytable_dirty_next(struct keytable *kt, const struct keyrec *rec);

/* The record's place in the table, from 0: a record keeps it, and is one key's, for the table's
 * life (records are never freed or reused). */
uint32_t keytable_index(const struct keyrec *rec);

/* Marks rec as flushed and returns the number of requests it served since it was last settled
 * (and, in *refused, of those refused). */
uint32_t keytable_settle(struct keyrec *rec, uint32_t *refused);

/* Gives back `requests` and `refused` that a failed flush could not write, so that the next flush
 * retries them. Lock-free. */
void keytable_requeue(struct keytable *kt, struct keyrec *rec, uint32_t requests, uint32_t refused);

#endif
