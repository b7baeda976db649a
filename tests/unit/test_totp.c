/* TOTP against RFC 6238's test vectors, the window and replay rules, sealed seeds and recovery
 * codes. */
#include <sodium.h>
#include <stdlib.h>

#include "auth/totp.h"
#include "unit.h"

static const uint8_t RFC_SEED[] = "12345678901234567890";

static int code_at(int64_t t, const char *want)
{
    char out[TOTP_DIGITS + 1];
    totp_code(RFC_SEED, 20, (uint64_t)t / TOTP_STEP, out);
    return strcmp(out, want) == 0;
}

int main(void)
{
    CHECK(sodium_init() >= 0);
    /* RFC 6238, appendix B (SHA1), the last six of its eight digits. */
    CHECK(code_at(59, "287082"));
    CHECK(code_at(1111111109, "081804"));
    CHECK(code_at(1111111111, "050471"));
    CHECK(code_at(1234567890, "005924"));
    CHECK(code_at(2000000000, "279037"));
    CHECK(code_at(20000000000LL, "353130"));

    /* The window: the step before and after, once each; never one already used. */
    int64_t now = 1234567890;
    uint64_t cur = (uint64_t)now / TOTP_STEP;
    char c[TOTP_DIGITS + 1], spaced[16];
    totp_code(RFC_SEED, 20, cur, c);
    CHECK(totp_check(RFC_SEED, 20, c, now, 0) == cur);
    CHECK(totp_check(RFC_SEED, 20, c, now, cur) == 0); /* replayed */
    snprintf(spaced, sizeof(spaced), "%.3s %.3s", c, c + 3);
    CHECK(totp_check(RFC_SEED, 20, spaced, now, 0) == cur);
    totp_code(RFC_SEED, 20, cur - 1, c);
    CHECK(totp_check(RFC_SEED, 20, c, now, 0) == cur - 1);
    totp_code(RFC_SEED, 20, cur + 1, c);
    CHECK(totp_check(RFC_SEED, 20, c, now, 0) == cur + 1);
    totp_code(RFC_SEED, 20, cur + 2, c);
    CHECK(totp_check(RFC_SEED, 20, c, now, 0) == 0); /* too far ahead */
    totp_code(RFC_SEED, 20, cur - 2, c);
    CHECK(totp_check(RFC_SEED, 20, c, now, 0) == 0); /* too old */
    CHECK(totp_check(RFC_SEED, 20, "", now, 0) == 0);
    CHECK(totp_check(RFC_SEED, 20, "12345", now, 0) == 0);
    CHECK(totp_check(RFC_SEED, 20, "1234567", now, 0) == 0);
    CHECK(totp_check(RFC_SEED, 20, "12a456", now, 0) == 0);

    /* Base32 (RFC 4648): "12345678901234567890" is GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ. */
    char b32[TOTP_BASE32_SIZE];
    totp_base32(RFC_SEED, 20, b32, sizeof(b32));
    CHECK_STR(b32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");

    /* Sealed seeds open only for their user, under their secret. */
    uint8_t secret[32], other[32], seed[TOTP_SEED_LEN], back[TOTP_SEED_LEN];
    char sealed[TOTP_SEALED_SIZE];
    randombytes_buf(secret, sizeof(secret));
    randombytes_buf(other, sizeof(other));
    totp_seed_new(seed);
    totp_seal(secret, "user_a", seed, sealed);
    CHECK(strlen(sealed) == TOTP_SEALED_SIZE - 1);
    CHECK(totp_open(secret, "user_a", sealed, back) == 0 && memcmp(seed, back, sizeof(seed)) == 0);
    CHECK(totp_open(secret, "user_b", sealed, back) != 0);
    CHECK(totp_open(other, "user_a", sealed, back) != 0);
    sealed[10] = sealed[10] == '0' ? '1' : '0';
    CHECK(totp_open(secret, "user_a", sealed, back) != 0);
    CHECK(totp_open(secret, "user_a", "", back) != 0);

    /* Recovery codes: each works once, in any case, with or without its dash. */
    char codes[TOTP_RECOVERY_CODES][TOTP_RECOVERY_SIZE], list[TOTP_RECOVERY_LIST_SIZE],
        rest[TOTP_RECOVERY_LIST_SIZE], rest2[TOTP_RECOVERY_LIST_SIZE];
    totp_recovery_new(secret, codes, list);
    CHECK(strlen(codes[0]) == 11 && codes[0][5] == '-');
    CHECK(strstr(list, codes[3]) == NULL);
    CHECK(totp_recovery_take(secret, list, codes[3], rest) == 1);
    CHECK(strlen(rest) == strlen(list) - 65);
    CHECK(totp_recovery_take(secret, rest, codes[3], rest2) == 0);
    char upper[TOTP_RECOVERY_SIZE];
    for (size_t i = 0; i < sizeof(upper); i++)
        upper[i] =
            codes[4][i] >= 'a' && codes[4][i] <= 'z' ? (char)(codes[4][i] - 32) : codes[4][i];
    char nodash[16];
    snprintf(nodash, sizeof(nodash), "%.5s%s", upper, upper + 6);
    CHECK(totp_recovery_take(secret, rest, nodash, rest2) == 1);
    CHECK(totp_recovery_take(other, list, codes[0], rest) == 0);
    CHECK(totp_recovery_take(secret, list, "not-acode", rest) == 0);
    CHECK(totp_recovery_take(secret, "", codes[0], rest) == 0);

    char uri[512];
    totp_uri("Konnect", "a+b@example.com", b32, uri, sizeof(uri));
    CHECK_STR(uri, "otpauth://totp/Konnect:a%2Bb%40example.com?secret="
                   "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Konnect&algorithm=SHA1&digits=6&"
                   "period=30");
    return unit_result();
}
