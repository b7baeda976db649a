/* The usage ledger's writer, on the store thread: billed requests reach it through the store
 * thread's mailbox (keys/keysync.h) and are written in group commits (every row that arrived
 * while the previous commit was on disk goes into the next one), each acknowledged once durable,
 * so that an answer is delivered only once its bill is written. */
#ifndef KN_METERING_LEDGER_H
#define KN_METERING_LEDGER_H

#include <stddef.h>

#include "core/mailbox.h"
#include "store/store.h"

/* A billed request waiting for its ledger row. */
struct ledger_entry {
    struct mailbox_msg msg; /* How it travels to the store thread. */
    struct store_ledger_row row;
    /* kn_mono_ns() when the store thread took the row and when its commit returned. */
    uint64_t taken_ns, committed_ns;
    /* Called on the store thread once the row is durable (ok = 1), or when it could not be
     * written after retries or its request id was voided (ok = 0; the request must then not be
     * delivered). The entry belongs to the caller again when this is called. */
    void (*done)(struct ledger_entry *e, int ok);
};

struct ledger;
struct spool;

struct ledger *ledger_new(void);

/* Gives the writer a spool (metering/spool.h; NULL: none) for the rows that the store cannot
 * take: a commit that fails for good writes them there instead, and they count as durable. */
void ledger_set_spool(struct ledger *l, struct spool *sp);

/* Returns 1 while the store does not take ledger rows (the last commit failed for good, and
 * nothing has been written since): new live requests are refused, unbilled, rather than served
 * into a ledger that cannot take them. Safe from any thread. */
int ledger_down(const struct ledger *l);

/* Called by the store thread once a write to the store succeeded (a heartbeat, a replay of the
 * spool): the store takes writes again. */
void ledger_mark_up(struct ledger *l);

/* Frees the writer, which must hold no row (ledger_commit has run since the last ledger_add). */
void ledger_free(struct ledger *l);

/* Called by the store thread before it takes a round of messages: when the last round committed
 * many rows, waits a moment so that this one gathers more (PostgreSQL's commit_delay with
 * commit_siblings). */
void ledger_gather(struct ledger *l);

/* Adds an entry to the commit being gathered; a full commit (4,096 rows) is written at once. */
void ledger_add(struct ledger *l, struct store *s, struct ledger_entry *e);

/* Writes the rows gathered to s in one commit and calls each entry's done. A commit that lost a
 * race (STORE_RETRY) is tried again at once, a few times; a store that fails otherwise is
 * retried for about a second (once only while ledger_down), then the rows go to the spool, or,
 * without one or when it fails too, are given up. A row the store reports voided is given up at
 * once. */
void ledger_commit(struct ledger *l, struct store *s);

#endif
