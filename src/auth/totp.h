/* Two-factor sign-in with an authenticator app: TOTP (RFC 6238: HMAC-SHA1 over 30-second steps,
 * 6 digits, as every authenticator app does by default), the seed kept encrypted under a key
 * derived from the server secret and bound to its user, and recovery codes shown once and kept
 * only as keyed hashes. */
#ifndef KN_AUTH_TOTP_H
#define KN_AUTH_TOTP_H

#include <stddef.h>
#include <stdint.h>

#define TOTP_SEED_LEN 20 /* 160 bits, RFC 4226's recommendation */
#define TOTP_STEP 30     /* seconds */
#define TOTP_DIGITS 6
#define TOTP_BASE32_SIZE 33 /* the seed in base32 (32 characters) and a NUL */
/* The encrypted seed as stored: hex of a 24-byte nonce, the seed and a 16-byte tag. */
#define TOTP_SEALED_SIZE (2 * (24 + TOTP_SEED_LEN + 16) + 1)
#define TOTP_RECOVERY_CODES 10
#define TOTP_RECOVERY_SIZE 12 /* "abcde-fghij" and a NUL */
/* The stored list: each code's keyed hash in hex, separated by commas. */
#define TOTP_RECOVERY_LIST_SIZE (TOTP_RECOVERY_CODES * 65 + 1)

/* The code of a seed for a time step (floor(unix time / 30)), as 6 digits and a NUL. */
void totp_code(const uint8_t *seed, size_t len, uint64_t step, char out[TOTP_DIGITS + 1]);

/* Checks a code given for time `now` against the steps now-1, now and now+1 (a clock off by up
 * to 30 s either way) that are later than last_step (a code is accepted once). Spaces in the code
 * are ignored. Returns the step it matched, or 0. Constant time in the code's digits. */
uint64_t totp_check(const uint8_t *seed, size_t len, const char *code, int64_t now,
                    uint64_t last_step);

/* A new random seed, and its base32 text (RFC 4648, no padding) for the app. */
void totp_seed_new(uint8_t seed[TOTP_SEED_LEN]);
void totp_base32(const uint8_t *seed, size_t len, char *out, size_t size);

/* Seals a seed for user_id under the server secret, and opens it again. open returns 0, or -1
 * when the text is not a seed sealed for that user under that secret. */
void totp_seal(const uint8_t secret[32], const char *user_id, const uint8_t seed[TOTP_SEED_LEN],
               char out[TOTP_SEALED_SIZE]);
int totp_open(const uint8_t secret[32], const char *user_id, const char *sealed,
              uint8_t seed[TOTP_SEED_LEN]);

/* Makes TOTP_RECOVERY_CODES new codes (codes[i], shown once) and the list of their hashes. */
void totp_recovery_new(const uint8_t secret[32],
                       char codes[TOTP_RECOVERY_CODES][TOTP_RECOVERY_SIZE],
                       char list[TOTP_RECOVERY_LIST_SIZE]);
/* When code (case and dashes ignored) is in list, writes the list without it to rest and returns
 * 1; otherwise 0. */
int totp_recovery_take(const uint8_t secret[32], const char *list, const char *code,
                       char rest[TOTP_RECOVERY_LIST_SIZE]);

/* "otpauth://totp/Konnect:EMAIL?secret=...&issuer=Konnect..." for an app's QR code or link. */
void totp_uri(const char *issuer, const char *email, const char *base32, char *out, size_t size);

#endif
