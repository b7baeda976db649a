/* Authorization header parsing and the authentication outcomes. */
#include <sodium.h>

#include "auth/bearer.h"
#include "unit.h"

static int parse(const char *v, const char *want)
{
    const char *tok;
    size_t len;
    if (bearer_parse(v, strlen(v), &tok, &len) != 0)
        return want == NULL;
    return want != NULL && len == strlen(want) && memcmp(tok, want, len) == 0;
}

int main(void)
{
    CHECK(sodium_init() >= 0);
    CHECK(parse("Bearer abc", "abc"));
    CHECK(parse("bearer abc", "abc"));
    CHECK(parse("BEARER   abc  ", "abc"));
    CHECK(parse("Bearer abc==", "abc=="));
    CHECK(parse("Bearer", NULL));
    CHECK(parse("Bearer ", NULL));
    CHECK(parse("Bearer  ", NULL));
    CHECK(parse("Basic abc", NULL));
    CHECK(parse("Bearerabc", NULL));
    CHECK(parse("Bearer abc def", NULL));
    CHECK(parse("Bearer a\"b", NULL));
    CHECK(parse("Bearer abc\r\n", NULL));
    CHECK(parse("", NULL));
    CHECK(parse("Bearer =abc", NULL));

    uint8_t secret[APIKEY_SECRET_LEN];
    char live[APIKEY_MAX_LEN + 1], test[APIKEY_MAX_LEN + 1], unknown[APIKEY_MAX_LEN + 1], hdr[80];
    struct keytable *kt = keytable_new(16);
    struct keyrec_data d;
    struct keyrec *rec;
    struct auth_input in = {.now = 1000};
    char id[KEY_ID_SIZE];

    randombytes_buf(secret, sizeof(secret));
    apikey_generate(APIKEY_MODE_LIVE, live);
    apikey_generate(APIKEY_MODE_TEST, test);
    apikey_generate(APIKEY_MODE_TEST, unknown);
    memset(&d, 0, sizeof(d));
    apikey_hash(secret, live, strlen(live), d.hash);
    strcpy(d.id, "key_live");
    d.mode = APIKEY_MODE_LIVE;
    keytable_upsert(kt, &d);
    apikey_hash(secret, test, strlen(test), d.hash);
    strcpy(d.id, "key_test");
    d.mode = APIKEY_MODE_TEST;
    keytable_upsert(kt, &d);

    CHECK(auth_authenticate(kt, secret, &in, &rec) == KN_ERR_MISSING_API_KEY && rec == NULL);

#define AUTH(v)                                                                                    \
    (in.header = (v), in.header_len = strlen(v), in.header_count = 1,                              \
     auth_authenticate(kt, secret, &in, &rec))
    snprintf(hdr, sizeof(hdr), "Bearer %s", live);
    CHECK(AUTH(hdr) == KN_OK && rec != NULL && strcmp(keyrec_id(rec, id), "key_live") == 0);
    snprintf(hdr, sizeof(hdr), "Bearer %s", test);
    CHECK(AUTH(hdr) == KN_OK && strcmp(keyrec_id(rec, id), "key_test") == 0);
    snprintf(hdr, sizeof(hdr), "Bearer %s", unknown);
    CHECK(AUTH(hdr) == KN_ERR_INVALID_API_KEY && rec == NULL);
    CHECK(AUTH("Bearer sk_test_123") == KN_ERR_INVALID_API_KEY);
    CHECK(AUTH("Basic Zm9vOmJhcg==") == KN_ERR_INVALID_API_KEY);
    CHECK(AUTH("Bearer") == KN_ERR_INVALID_API_KEY);
    snprintf(hdr, sizeof(hdr), "Bearer %s", test);
    in.header_count = 2;
    in.header = hdr;
    in.header_len = strlen(hdr);
    CHECK(auth_authenticate(kt, secret, &in, &rec) == KN_ERR_INVALID_API_KEY);

    /* Revoked wins over expired; expiry is inclusive of its second (the store's change, through
     * an upsert, as the server makes it). */
    rec = keytable_lookup(kt, d.hash);
    d.expires_at = 1000;
    CHECK(keytable_upsert(kt, &d) == rec);
    CHECK(AUTH(hdr) == KN_ERR_API_KEY_EXPIRED && rec != NULL);
    d.expires_at = 1001;
    keytable_upsert(kt, &d);
    CHECK(AUTH(hdr) == KN_OK);
    d.revoked_at = 999;
    keytable_upsert(kt, &d);
    CHECK(AUTH(hdr) == KN_ERR_API_KEY_REVOKED && rec != NULL);

    /* A different server secret knows none of the keys. */
    secret[0] ^= 0xff;
    snprintf(hdr, sizeof(hdr), "Bearer %s", live);
    CHECK(AUTH(hdr) == KN_ERR_INVALID_API_KEY);
    keytable_free(kt);
    return unit_result();
}
