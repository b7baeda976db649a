/* The usage ledger's writer: billed requests are queued from any thread and written by the store
 * thread in group commits (every row queued while the previous commit was on disk goes into the
 * next one), each acknowledged once durable, so that an answer is delivered only once its bill is
 * written. */
#ifndef KN_METERING_LEDGER_H
#define KN_METERING_LEDGER_H

#include <stddef.h>

#include "store/store.h"

/* A billed request waiting for its ledger row. */
struct ledger_entry {
    struct store_ledger_row row;
    struct ledger_entry *next;
    /* Called on the store thread once the row is durable (ok = 1), or when it could not be
     * written after retries or its request id was voided (ok = 0; the request must then not be
     * delivered). The entry belongs to the caller again when this is called. */
    void (*done)(struct ledger_entry *e, int ok);
};

struct ledger;

/* Creates an empty queue; queuing into it writes 1 to wake_fd (an eventfd the store thread
 * polls) when the thread was not woken already. */
struct ledger *ledger_new(int wake_fd);

/* Frees the queue, which must be empty (ledger_write has run since the last ledger_bill). */
void ledger_free(struct ledger *l);

/* Queues an entry for the next group commit. Safe from any thread; never blocks on I/O. */
void ledger_bill(struct ledger *l, struct ledger_entry *e);

/* On the store thread: writes every queued row to s, in group commits of up to 4,096 rows, and
 * calls each entry's done. A commit that lost a race (STORE_RETRY) is tried again at once, a few
 * times; a store that fails otherwise is retried for about a second before the rows are given up.
 * A row the store reports voided is given up at once. */
void ledger_write(struct ledger *l, struct store *s);

#endif
