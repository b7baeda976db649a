/* API authentication: reads "Authorization: Bearer <key>" (RFC 6750 section 2.1), checks the
 * key's format and checksum with no I/O, then finds it in the key table by its keyed hash. */
#ifndef KN_AUTH_BEARER_H
#define KN_AUTH_BEARER_H

#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "keys/keytable.h"

/* Extracts the token from one Authorization header value. The scheme is matched without regard to
 * case; one or more spaces separate it from the token, which must be a non-empty RFC 6750 b64token
 * with nothing after it but optional whitespace. On success returns 0 and points *token into
 * value (borrowed, not copied); returns -1 when the value is malformed. */
int bearer_parse(const char *value, size_t len, const char **token, size_t *token_len);

/* Everything needed to authenticate one request. */
struct auth_input {
    const char *header; /* The Authorization value, or NULL when absent. */
    size_t header_len;
    int header_count;            /* How many Authorization headers the request carried. */
    int64_t now;                 /* Unix time. */
    const struct sockaddr *peer; /* The client's address, checked against the key's allowlist. */
};

/* Authenticates a request against the key table with the server secret. Returns KN_OK and writes
 * *rec for a usable key; otherwise returns the error to send (missing, invalid, revoked, expired,
 * or used from an address outside the key's allowlist) and, when a known key was presented, still
 * writes *rec so the caller can log its id. */
enum kn_err auth_authenticate(struct keytable *kt, const uint8_t secret[APIKEY_SECRET_LEN],
                              const struct auth_input *in, struct keyrec **rec);

#endif
