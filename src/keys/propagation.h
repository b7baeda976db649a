/* Confirmation that a change is in force everywhere: every server writes, at least once a second
 * and at once after it applied changes, how far it has read the key and account change logs and
 * which plans version it has in force (the nodes table, keys/keysync.h). Whoever changes a key, an
 * account or a plan (the CLI, any server's dashboard) waits here until every live server has
 * applied it. A server is live while its last heartbeat is under PROPAGATION_LIVE_MS old by the
 * store's clock. */
#ifndef KN_KEYS_PROPAGATION_H
#define KN_KEYS_PROPAGATION_H

#include "store/store.h"

#define PROPAGATION_LIVE_MS 3000

struct propagation {
    int live;          /* Live servers at the last look. */
    int applied;       /* Of those, the ones that had applied the change. */
    char lagging[512]; /* The ids of the others, ", "-separated ("" when none). */
};

/* Reads where the change logs end now (call it once the change is committed), then looks at the
 * nodes table every few milliseconds until every live server has applied that far, or wait_ms
 * have passed. Returns STORE_OK with *out filled (out->lagging names the servers that had not
 * applied it in time), or the store's error. */
int propagation_wait(struct store *s, int wait_ms, struct propagation *out);

/* Counts the live servers other than `self` ("" for none) into *others, and those of them whose
 * limits are counted locally (not in Redis) into *local. */
int propagation_live_others(struct store *s, const char *self, int *others, int *local);

#endif
