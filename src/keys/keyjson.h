/* A key as JSON: the one document the dashboard's key list and `konnect key list --json` both
 * print, so that the two never disagree. */
#ifndef KN_KEYS_KEYJSON_H
#define KN_KEYS_KEYJSON_H

#include <jansson.h>
#include <stdint.h>

#include "store/store.h"

/* Returns a new object for key k, which has served `requests` requests in all, with its status
 * at Unix time now: id, name, mode, environment, hint, status, created, created_by, requests,
 * ip_allowlist (an array of addresses and networks, empty for any address), last_used, expires,
 * revoked (Unix times or null) and rolled_to (an id or null). Never NULL. */
json_t *keyjson_doc(const struct store_key *k, uint64_t requests, int64_t now);

#endif
