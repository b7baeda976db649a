/* Dashboard passwords: Argon2id through libsodium's crypto_pwhash_str, with its "interactive"
 * cost (about 64 MiB and a fraction of a second per hash), so a stolen database resists guessing.
 */
#ifndef KN_AUTH_PASSWORD_H
#define KN_AUTH_PASSWORD_H

#include <stddef.h>

#define PASSWORD_MIN 10
#define PASSWORD_MAX 256
#define PASSWORD_HASH_SIZE 128 /* crypto_pwhash_STRBYTES */

/* Returns 0 when pw is an acceptable new password (PASSWORD_MIN..PASSWORD_MAX bytes), or -1. */
int password_acceptable(const char *pw);

/* Hashes pw into out. Returns 0, or -1 when the memory for it could not be had. */
int password_hash(const char *pw, char out[PASSWORD_HASH_SIZE]);

/* Returns 1 when pw matches hash. With an empty hash (no password set, or no such user) it still
 * spends the time of one verification and returns 0, so that timing does not tell whether an
 * account exists. */
int password_verify(const char *hash, const char *pw);

#endif
