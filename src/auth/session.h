/* Opaque random tokens for dashboard sessions and invitations. The browser holds the token; the
 * store holds only its keyed BLAKE2b hash under the server secret. */
#ifndef KN_AUTH_SESSION_H
#define KN_AUTH_SESSION_H

#include <stddef.h>
#include <stdint.h>

#define SESSION_TOKEN_LEN 43 /* base62 characters: 256 bits */
#define SESSION_COOKIE "konnect_session"
/* Over HTTPS the cookie carries the __Host- prefix: browsers then accept it only when Secure,
 * with Path=/ and no Domain, so that no other host (a sibling subdomain) can plant or shadow it. */
#define SESSION_COOKIE_HTTPS "__Host-konnect_session"

/* Writes a new token and its terminating NUL into out. */
void session_token_new(char out[SESSION_TOKEN_LEN + 1]);

/* Hashes a token (any length) under the server secret. */
void session_token_hash(const uint8_t secret[32], const char *token, size_t len, uint8_t out[32]);

/* Finds the value of cookie `name` in a Cookie header value. Returns 0 and points *value into
 * header (borrowed), or -1 when there is no such cookie. */
int session_cookie_find(const char *header, size_t len, const char *name, const char **value,
                        size_t *value_len);

#endif
