/* The store thread of a running server: the one writer of the store. It loads every key into the
 * key table and every account's plan, quota and month's usage at start (limits/accounts.h), then
 * keeps them equal to the store: each change (creation, revocation, expiry, plan, quota) in the
 * store's change feed is applied within one second, and at once when a command nudges the server
 * through its control socket (keys/control.h) or a connection of this process commits one. The
 * same thread writes back last-used times and request counts in batches, so the request path
 * never waits for the disk, and it writes the usage ledger in group commits (metering/ledger.h).
 * Other threads reach it through one mailbox (core/mailbox.h): ledger rows, and the requests they
 * wait on (apply the key changes now, reload the plans).
 */
#ifndef KN_KEYS_KEYSYNC_H
#define KN_KEYS_KEYSYNC_H

#include <stddef.h>
#include <stdint.h>

#include "keys/keytable.h"
#include "limits/quota.h"
#include "metering/ledger.h"
#include "metering/plans.h"
#include "limits/redis.h"
#include "store/store.h"

struct keysync;

/* Converts a stored key, with the requests it served today, into the key table's form, at Unix
 * time now. Returns 0, or -1 when the stored mode or environment is unknown. */
int keysync_key_to_rec(const struct store_key *k, uint32_t requests_today, int64_t now,
                       struct keyrec_data *out);

/* What the store thread is started with. */
struct keysync_config {
    const char *db_url;      /* The store (store_open). */
    const char *socket_path; /* The control socket, or NULL for none (the caller must be the
                                only server using it). */
    struct plans *plans;     /* The plans in force, taken over (reloaded from plans_path, a file
                                that must exist when plans_required). */
    const char *plans_path;
    int plans_required;
    int durable; /* 1: every ledger commit waits for the disk (the store's sync=full). */
    /* This server's row in the nodes table (its id, counters and version; the rest is filled
     * in): the store thread writes its heartbeat there each time it reads the change logs, at
     * least once a second, and removes it at keysync_stop. */
    const struct store_node *node;
    const char *spool_path; /* The ledger's spool (metering/spool.h), or NULL for none. */
    uint64_t spool_max_bytes;
    /* Redis, where the limits are counted (limits/cluster.h), or NULL for none: the store
     * thread seeds each month's usage there. */
    const struct redis_target *redis;
    /* For tests: called by the store thread after each reading of the change logs, before its
     * heartbeat, and at start after the keys are loaded, before the first heartbeat (NULL:
     * none). */
    void (*after_read)(void *ud);
    void *after_read_ud;
};

/* Opens the store, loads every account (with its plan) and every key into kt, replays the
 * ledger's spool, binds the control socket and starts the store thread. Returns NULL with a
 * message in err on failure (the plans then still belong to the caller only if they were never
 * taken: they are freed). */
struct keysync *keysync_start(struct keytable *kt, const struct keysync_config *cfg, char *err,
                              size_t errsize);

/* Returns 1 while the store does not take ledger rows (metering/ledger.h's ledger_down): live
 * requests are refused before they start. Safe from any thread. */
int keysync_billing_down(struct keysync *ks);

/* The ledger rows waiting in the spool for the store. Safe from any thread. */
uint64_t keysync_spooled(struct keysync *ks);

/* When the store thread last finished a reading of the change logs (applied, or failed to reach
 * the store), on the monotonic clock. A key looked up after this call is looked up in a table
 * that holds every change of that reading at least. Safe from any thread. */
uint64_t keysync_reading(struct keysync *ks);

/* Returns 1 when `reading` (keysync_reading) is older than a server stays live without a heartbeat
 * (keys/propagation.h), less a margin for the clocks (2.75 s). The store thread publishes no
 * reading that ended too late for its heartbeat to be seen in time, so this also holds when the
 * process was frozen or the thread is stuck. Other servers stopped waiting for this one by then,
 * and may have confirmed a revocation it has not applied: it serves no key until the thread has
 * read again. Sample the reading before the key's lookup and ask this after it, so that a thread
 * frozen in between is caught too. (A store that cannot be reached does not make it stale: the
 * thread tries every second, and no change can be committed there meanwhile.) */
int keysync_stale_since(uint64_t reading);

/* The live servers of the store (this one included), as of the last heartbeat. Safe from any
 * thread. */
int keysync_live_nodes(struct keysync *ks);

/* This server's id in the nodes table. */
const char *keysync_node_id(struct keysync *ks);

/* Tells the store thread the address the server answers at (KONNECT_PUBLIC_URL, else where it
 * listens), which it gives to commands that ask through the control socket ("base-url"), so
 * that the links they print point at this server. Once, before the CLI may ask. */
void keysync_set_base_url(struct keysync *ks, const char *url);

/* The plans in force. They and the plans before them stay valid until keysync_stop. Safe from
 * any thread. */
const struct plans *keysync_plans(struct keysync *ks);

/* Reads the plans file again and puts it in force on every account (SIGHUP, `konnect plans
 * reload`), waiting for the store thread to do it; an invalid file keeps the plans in force.
 * Writes what happened to msg. Returns 0, or -1 when the plans in force were kept. */
int keysync_reload_plans(struct keysync *ks, char *msg, size_t size);

/* Puts a ledger row in the store thread's mailbox for the next group commit. Safe from any
 * thread; never blocks on I/O. Once the store thread has stopped, the entry is given up at once
 * (its done is called with ok = 0 on the calling thread). */
void keysync_bill(struct keysync *ks, struct ledger_entry *e);

/* Stops the thread after a last flush of usage counts, removes the control socket and frees ks. */
void keysync_stop(struct keysync *ks);

/* Returns 1 when the last round trip to the store succeeded, 0 otherwise; writes the age of the
 * last success in milliseconds to *age_ms. Safe from any thread. */
int keysync_ready(struct keysync *ks, uint64_t *age_ms);

/* Applies every pending key change now and returns once it is in the key table. For threads of
 * the same process (the dashboard), which cannot wait on their own control socket. */
void keysync_sync_now(struct keysync *ks);

#endif
