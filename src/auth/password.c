/* Dashboard passwords: hashing and checking with Argon2id; see password.h. */
#include "auth/password.h"

#include <pthread.h>
#include <sodium.h>
#include <string.h>

_Static_assert(PASSWORD_HASH_SIZE == crypto_pwhash_STRBYTES, "hash size");

int password_acceptable(const char *pw)
{
    size_t len = strlen(pw);
    return len >= PASSWORD_MIN && len <= PASSWORD_MAX ? 0 : -1;
}

int password_hash(const char *pw, char out[PASSWORD_HASH_SIZE])
{
    return crypto_pwhash_str(out, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                             crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0
               ? 0
               : -1;
}

static char dummy[PASSWORD_HASH_SIZE];

static void make_dummy(void)
{
    if (password_hash("konnect-no-such-user-password", dummy) != 0)
        dummy[0] = '\0';
}

int password_verify(const char *hash, const char *pw)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    if (hash == NULL || hash[0] == '\0') {
        /* Same work as a real check, against a hash nobody knows the password of. */
        pthread_once(&once, make_dummy);
        if (dummy[0] != '\0' && crypto_pwhash_str_verify(dummy, pw, strlen(pw)) == 0)
            return 0; /* Not reachable: nobody signs in with the dummy password. */
        return 0;
    }
    return crypto_pwhash_str_verify(hash, pw, strlen(pw)) == 0;
}
