/* The fault switch, in debug builds only: KONNECT_FAULT makes chosen calls fail, so that tests
 * run the code that handles failures instead of imagining it (in the spirit of curl's torture
 * tests and SQLite's DO_OS_MALLOC_TEST).
 *
 *   KONNECT_FAULT=KIND:N[xC][,KIND:N[xC]...]
 *
 * From the Nth call of KIND on (counting from 1, over the whole process), C calls fail (1 when
 * xC is left out; "x*" for every call from the Nth on). Kinds:
 *   store   every store call, on any connection (it fails with STORE_UNAVAILABLE, as if the
 *           database could not be reached)
 *   ledger  ledger group commits (store_ledger_add), likewise
 * A release build refuses a non-empty KONNECT_FAULT rather than ignore it. */
#ifndef KN_CORE_FAULT_H
#define KN_CORE_FAULT_H

#include <stddef.h>

enum fault_kind { FAULT_STORE, FAULT_LEDGER, FAULT__COUNT };

/* Reads spec (KONNECT_FAULT's value; NULL or "" for none). Returns 0, or -1 with a message in
 * err for a spec that is malformed, or given to a release build. Call once, before any thread
 * starts. */
int fault_init(const char *spec, char *err, size_t errsize);

#ifndef NDEBUG
/* Counts a call of kind k; returns 1 when it must fail. Safe from any thread. */
int fault_hit(enum fault_kind k);
#else
#define fault_hit(k) 0
#endif

#endif
