/* Moving a single-node installation to PostgreSQL (`konnect store copy`): every table of a SQLite
 * store (accounts, users and memberships, keys with their request counts, the audit log, sessions,
 * invitations and set-password links, the ledger with its rollup, published plans) copied into an
 * empty PostgreSQL database, in one transaction, then counted again there. Keys keep working on
 * the new store as long as its servers use the same server secret (only keyed hashes are
 * stored). */
#ifndef KN_STORE_COPY_H
#define KN_STORE_COPY_H

#include <stddef.h>
#include <stdio.h>

/* Copies the SQLite store at `from` into the PostgreSQL store at `to` (migrated first; it must
 * hold no account and no ledger row), writing a line per table to report. Returns 0, or -1 with a
 * message in err (nothing is copied then). */
int store_copy(const char *from, const char *to, FILE *report, char *err, size_t errsize);

#endif
