/* The ledger's spool: a small append-only file in the server's data directory where a billed
 * request's ledger row goes when the store cannot take it (PostgreSQL unreachable, a disk that
 * fails), synced to disk before the answer it bills is delivered, and replayed into the store,
 * idempotently (the request id is unique there), once the store takes writes again. So no answer
 * leaves without its bill even while the store is down.
 *
 * One row a line, as a JSON object; a line cut short by a crash during its write belongs to an
 * answer that was never delivered (delivery waits for the sync) and is skipped. Used by the store
 * thread only. */
#ifndef KN_METERING_SPOOL_H
#define KN_METERING_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct spool;

/* Opens (creating, mode 0600) the spool at path, holding at most max_bytes. Returns NULL with a
 * message in err when it cannot be opened. */
struct spool *spool_open(const char *path, uint64_t max_bytes, char *err, size_t errsize);

void spool_close(struct spool *sp);

/* Appends n rows and syncs them to disk. Returns 0 once they are durable, -1 (nothing counted as
 * spooled) when they cannot be written or would pass max_bytes. */
int spool_add(struct spool *sp, const struct store_ledger_row *rows, size_t n);

/* The rows waiting to be replayed. */
uint64_t spool_pending(const struct spool *sp);

/* Replays every spooled row into s, in batches, and empties the spool once all are in the store.
 * Returns the number of rows replayed (0 when the spool was empty), or -1 when the store failed
 * (the spool keeps them for the next try). *voided counts rows the store had voided (logged and
 * dropped). */
long spool_replay(struct spool *sp, struct store *s, long *voided);

#endif
