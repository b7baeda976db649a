/* API key format: a prefix that says the key's kind ("sk_live_", "sk_test_", "sk_admin_",
 * "sk_op_"), 32
 * base62 characters from the CSPRNG (190 bits), and 6 base62 characters of CRC32 over everything
 * before them. The checksum lets the server (and any secret scanner) reject a mistyped or made-up
 * key without touching the store. Only a keyed BLAKE2b hash of a key is ever stored.
 *
 * Live and test keys call the chat API; admin keys call the management API of their account
 * (/v1/keys, /v1/usage, ...) and nothing else; operator keys, the operator API. */
#ifndef KN_KEYS_APIKEY_H
#define KN_KEYS_APIKEY_H

#include <stddef.h>
#include <stdint.h>

#define APIKEY_PREFIX_MAX 9 /* "sk_admin_"; "sk_live_" and "sk_test_" are 8. */
#define APIKEY_BODY_LEN 32
#define APIKEY_CHECKSUM_LEN 6
/* The longest key (an admin key); a buffer of APIKEY_MAX_LEN + 1 holds any key and its NUL. */
#define APIKEY_MAX_LEN (APIKEY_PREFIX_MAX + APIKEY_BODY_LEN + APIKEY_CHECKSUM_LEN)
#define APIKEY_HASH_LEN 32
#define APIKEY_SECRET_LEN 32
/* "sk_admin_" + U+2026 (3 bytes) + last 4 characters + NUL. */
#define APIKEY_HINT_SIZE (APIKEY_PREFIX_MAX + 3 + 4 + 1)

/* An account's keys are test, live or admin; operator keys (sk_op_...) belong to no account and
 * call the operator API (/v1/operator/...) only. */
enum apikey_mode {
    APIKEY_MODE_TEST = 0,
    APIKEY_MODE_LIVE = 1,
    APIKEY_MODE_ADMIN = 2,
    APIKEY_MODE_OPERATOR = 3,
};

enum apikey_env {
    APIKEY_ENV_DEVELOPMENT = 0,
    APIKEY_ENV_STAGING = 1,
    APIKEY_ENV_PRODUCTION = 2,
};

/* Writes a new key of the given mode and a terminating NUL into out (APIKEY_MAX_LEN + 1 bytes)
 * and returns its length. The caller wipes it with sodium_memzero once it has been shown. */
size_t apikey_generate(enum apikey_mode mode, char out[APIKEY_MAX_LEN + 1]);

/* Checks that s[0..len) is a well-formed key: known prefix, base62 body and a matching checksum.
 * Performs no I/O. Returns 0 and writes *mode on success, -1 when the key is malformed. */
int apikey_parse(const char *s, size_t len, enum apikey_mode *mode);

/* Computes the keyed BLAKE2b-256 hash of s[0..len) under the server secret. */
void apikey_hash(const uint8_t secret[APIKEY_SECRET_LEN], const char *s, size_t len,
                 uint8_t out[APIKEY_HASH_LEN]);

/* Writes the display hint of a well-formed, NUL-terminated key ("sk_test_…abcd") into out. */
void apikey_hint(const char *key, char out[APIKEY_HINT_SIZE]);

/* Names used in the store, the CLI and JSON: "test"/"live"/"admin"/"operator" and
 * "development"/"staging"/"production". The parse functions return 0 and write *out, or -1 for an
 * unknown name; apikey_mode_parse knows the kinds of an account's keys only (never "operator",
 * which no account key may be). */
const char *apikey_mode_name(enum apikey_mode mode);
int apikey_mode_parse(const char *name, enum apikey_mode *out);
const char *apikey_env_name(enum apikey_env env);
int apikey_env_parse(const char *name, enum apikey_env *out);

/* Loads the server secret from path (64 hex characters). When the file does not exist and create
 * is non-zero, generates one and writes it with mode 0600. Refuses a file that group or others can
 * read. Returns 0 on success; on failure returns -1 and writes a message into err. */
int apikey_secret_load(const char *path, int create, uint8_t out[APIKEY_SECRET_LEN], char *err,
                       size_t errsize);

#endif
