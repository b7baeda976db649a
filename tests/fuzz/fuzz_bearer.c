/* libFuzzer target: an untrusted Authorization header value through the whole authentication
 * path (header parsing, key format and checksum, keyed hash, key-table lookup). */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/bearer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct keytable *kt;
static uint8_t secret[APIKEY_SECRET_LEN];

static void setup(void)
{
    struct keyrec_data d;
    char key[APIKEY_MAX_LEN + 1];

    if (sodium_init() < 0)
        abort();
    memset(secret, 7, sizeof(secret));
    kt = keytable_new(16);
    /* A few known keys, so that some inputs reach the revoked and expired outcomes. */
    for (int i = 0; i < 4; i++) {
        memset(&d, 0, sizeof(d));
        apikey_generate(i % 2 ? APIKEY_MODE_LIVE : APIKEY_MODE_TEST, key);
        apikey_hash(secret, key, strlen(key), d.hash);
        d.revoked_at = i == 2 ? 1 : 0;
        d.expires_at = i == 3 ? 1 : 0;
        keytable_upsert(kt, &d);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct auth_input in = {
        .header = (const char *)data, .header_len = size, .header_count = 1, .now = 1000};
    struct keyrec *rec;
    const char *tok;
    size_t len;
    enum apikey_mode mode;

    if (kt == NULL)
        setup();
    if (bearer_parse((const char *)data, size, &tok, &len) == 0) {
        if (tok < (const char *)data || tok + len > (const char *)data + size || len == 0)
            abort();
    }
    if (apikey_parse((const char *)data, size, &mode) == 0 && size != 46 && size != 47)
        abort();
    enum kn_err err = auth_authenticate(kt, secret, &in, &rec);
    if (err == KN_OK && rec == NULL)
        abort();
    return 0;
}
