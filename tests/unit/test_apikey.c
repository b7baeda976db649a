/* Key generation, format, checksum, hint and keyed hash. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keys/apikey.h"
#include "unit.h"

int main(void)
{
    char k[APIKEY_MAX_LEN + 1], k2[APIKEY_MAX_LEN + 1], hint[APIKEY_HINT_SIZE];
    char u_swap[APIKEY_MAX_LEN + 1];
    enum apikey_mode mode;
    uint8_t secret[APIKEY_SECRET_LEN], h1[APIKEY_HASH_LEN], h2[APIKEY_HASH_LEN];

    CHECK(sodium_init() >= 0);

    apikey_generate(APIKEY_MODE_TEST, k);
    CHECK(strlen(k) == 46);
    CHECK(strncmp(k, "sk_test_", 8) == 0);
    CHECK(apikey_parse(k, strlen(k), &mode) == 0 && mode == APIKEY_MODE_TEST);
    apikey_generate(APIKEY_MODE_LIVE, k2);
    CHECK(strncmp(k2, "sk_live_", 8) == 0);
    CHECK(apikey_parse(k2, strlen(k2), &mode) == 0 && mode == APIKEY_MODE_LIVE);
    CHECK(strcmp(k, k2 + 0) != 0);

    /* Two keys never repeat (190 bits of entropy). */
    apikey_generate(APIKEY_MODE_TEST, k2);
    CHECK(strcmp(k, k2) != 0);

    /* Every single-character change is caught by the checksum or the alphabet. */
    int caught = 0, total = 0;
    for (size_t i = 8; i < 46; i++) {
        char t[APIKEY_MAX_LEN + 1];
        memcpy(t, k, sizeof(t));
        t[i] = t[i] == 'a' ? 'b' : 'a';
        total++;
        caught += apikey_parse(t, 46, &mode) != 0;
    }
    CHECK(caught == total);

    /* Wrong prefix, length, alphabet. */
    char t[APIKEY_MAX_LEN + 1];
    memcpy(t, k, sizeof(t));
    memcpy(t, "sk_prod_", 8);
    CHECK(apikey_parse(t, 46, &mode) != 0);
    CHECK(apikey_parse(k, 46 - 1, &mode) != 0);
    CHECK(apikey_parse("", 0, &mode) != 0);
    memcpy(t, k, sizeof(t));
    t[20] = '-';
    CHECK(apikey_parse(t, 46, &mode) != 0);
    /* A live prefix on a test key's body fails the checksum. */
    memcpy(t, k, sizeof(t));
    memcpy(t, "sk_live_", 8);
    CHECK(apikey_parse(t, 46, &mode) != 0);

    /* Base62 body: only alphabet characters. */
    for (size_t i = 8; i < 46; i++)
        CHECK((k[i] >= '0' && k[i] <= '9') || (k[i] >= 'A' && k[i] <= 'Z') ||
              (k[i] >= 'a' && k[i] <= 'z'));

    apikey_hint(k, hint);
    CHECK(strncmp(hint, "sk_test_\xe2\x80\xa6", 11) == 0);
    CHECK(memcmp(hint + 11, k + 46 - 4, 4) == 0);
    CHECK(strlen(hint) == 15);

    /* The keyed hash depends on both the key and the server secret. */
    randombytes_buf(secret, sizeof(secret));
    apikey_hash(secret, k, 46, h1);
    apikey_hash(secret, k, 46, h2);
    CHECK(memcmp(h1, h2, sizeof(h1)) == 0);
    apikey_hash(secret, k2, 46, h2);
    CHECK(memcmp(h1, h2, sizeof(h1)) != 0);
    secret[0] ^= 1;
    apikey_hash(secret, k, 46, h2);
    CHECK(memcmp(h1, h2, sizeof(h1)) != 0);

    enum apikey_env env;
    CHECK(apikey_env_parse("staging", &env) == 0 && env == APIKEY_ENV_STAGING);
    CHECK(apikey_env_parse("prod", &env) != 0);
    CHECK(apikey_mode_parse("live", &mode) == 0 && mode == APIKEY_MODE_LIVE);
    CHECK(apikey_mode_parse("LIVE", &mode) != 0);

    /* Admin keys: a longer prefix, the same body and checksum. */
    char a[APIKEY_MAX_LEN + 1], ah[APIKEY_HINT_SIZE];
    CHECK(apikey_generate(APIKEY_MODE_ADMIN, a) == 47 && strlen(a) == 47);
    CHECK(strncmp(a, "sk_admin_", 9) == 0);
    CHECK(apikey_parse(a, 47, &mode) == 0 && mode == APIKEY_MODE_ADMIN);
    CHECK(apikey_parse(a, 46, &mode) != 0);
    memcpy(t, a + 1, 46); /* "k_admin_..." : no known prefix */
    CHECK(apikey_parse(t, 46, &mode) != 0);
    for (size_t i = 9; i < 47; i++) {
        char u[APIKEY_MAX_LEN + 1];
        memcpy(u, a, sizeof(u));
        u[i] = u[i] == 'a' ? 'b' : 'a';
        CHECK(apikey_parse(u, 47, &mode) != 0);
    }
    /* An admin key's body under a live prefix fails (length, then checksum). */
    memcpy(u_swap, "sk_live_", 8);
    memcpy(u_swap + 8, a + 9, 38);
    CHECK(apikey_parse(u_swap, 46, &mode) != 0);
    apikey_hint(a, ah);
    CHECK(strncmp(ah, "sk_admin_\xe2\x80\xa6", 12) == 0 && memcmp(ah + 12, a + 43, 4) == 0 &&
          strlen(ah) == 16);
    CHECK(apikey_mode_parse("admin", &mode) == 0 && mode == APIKEY_MODE_ADMIN);
    CHECK(strcmp(apikey_mode_name(APIKEY_MODE_ADMIN), "admin") == 0);
    sodium_memzero(a, sizeof(a));

    /* Operator keys: "sk_op_", 44 characters; never an account key's mode. */
    char op[APIKEY_MAX_LEN + 1], oh[APIKEY_HINT_SIZE];
    CHECK(apikey_generate(APIKEY_MODE_OPERATOR, op) == 44 && strncmp(op, "sk_op_", 6) == 0);
    CHECK(apikey_parse(op, 44, &mode) == 0 && mode == APIKEY_MODE_OPERATOR);
    op[20] = op[20] == 'a' ? 'b' : 'a';
    CHECK(apikey_parse(op, 44, &mode) != 0);
    apikey_hint(op, oh);
    CHECK(strncmp(oh, "sk_op_\xe2\x80\xa6", 9) == 0 && strlen(oh) == 13);
    CHECK(apikey_mode_parse("operator", &mode) != 0);
    CHECK(strcmp(apikey_mode_name(APIKEY_MODE_OPERATOR), "operator") == 0);
    sodium_memzero(op, sizeof(op));

    /* Server secret: created with mode 0600, read back, and refused when others can read it. */
    char dir[] = "/tmp/konnect-test-XXXXXX", path[64], err[256];
    uint8_t s1[APIKEY_SECRET_LEN], s2[APIKEY_SECRET_LEN];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/secret", dir);
    CHECK(apikey_secret_load(path, 0, s1, err, sizeof(err)) != 0);
    CHECK(apikey_secret_load(path, 1, s1, err, sizeof(err)) == 0);
    CHECK(apikey_secret_load(path, 0, s2, err, sizeof(err)) == 0);
    CHECK(memcmp(s1, s2, sizeof(s1)) == 0);
    CHECK(chmod(path, 0644) == 0);
    CHECK(apikey_secret_load(path, 0, s2, err, sizeof(err)) != 0);
    CHECK(strstr(err, "chmod 600") != NULL);
    unlink(path);
    rmdir(dir);

    return unit_result();
}
