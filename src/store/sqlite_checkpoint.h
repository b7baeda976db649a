/* A busy SQLite writer's WAL checkpoints, on a thread of their own with a connection of their own,
 * so that no commit of the writer waits for one (sqlite_checkpoint.c says how and why). Used by
 * the SQLite backend for the connection opened with "checkpoint=background". */
#ifndef KN_STORE_SQLITE_CHECKPOINT_H
#define KN_STORE_SQLITE_CHECKPOINT_H

#include <sqlite3.h>
#include <stddef.h>

struct checkpointer;

/* Starts the checkpoint thread for the database `writer` has open, and takes over its
 * checkpoints (a WAL hook on writer). Returns NULL with a message in err. */
struct checkpointer *checkpointer_start(sqlite3 *writer, char *err, size_t errsize);

/* Starts the log again from its beginning when that is due (a RESTART checkpoint on the writer's
 * own connection db, between its transactions). The writer calls it when nothing waits for it
 * (idle = 1: whenever a restart is due), and before each write transaction (idle = 0: only when
 * the log has grown to twice the length that makes a restart due, because the writer never was
 * idle; the commit then waits for it). NULL is accepted. */
void checkpointer_restart_log(struct checkpointer *c, sqlite3 *db, int idle);

/* Stops the thread and closes its connection (NULL is accepted). Before the writer closes. */
void checkpointer_stop(struct checkpointer *c);

#endif
