/* TOTP, sealed seeds and recovery codes; see totp.h. */
#include "auth/totp.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

void totp_code(const uint8_t *seed, size_t len, uint64_t step, char out[TOTP_DIGITS + 1])
{
    uint8_t msg[8], mac[EVP_MAX_MD_SIZE];
    unsigned mlen = 0;

    for (int i = 7; i >= 0; i--, step >>= 8)
        msg[i] = (uint8_t)(step & 0xff);
    HMAC(EVP_sha1(), seed, (int)len, msg, sizeof(msg), mac, &mlen);
    /* RFC 4226's dynamic truncation. */
    unsigned off = mac[mlen - 1] & 0x0f;
    uint32_t bin = ((uint32_t)(mac[off] & 0x7f) << 24) | ((uint32_t)mac[off + 1] << 16) |
                   ((uint32_t)mac[off + 2] << 8) | mac[off + 3];
    snprintf(out, TOTP_DIGITS + 1, "%06u", bin % 1000000u);
    sodium_memzero(mac, sizeof(mac));
}

uint64_t totp_check(const uint8_t *seed, size_t len, const char *code, int64_t now,
                    uint64_t last_step)
{
    char given[TOTP_DIGITS + 1], want[TOTP_DIGITS + 1];
    size_t n = 0;
    uint64_t found = 0;

    for (const char *p = code; *p != '\0'; p++) {
        if (*p == ' ' || *p == '-')
            continue;
        if (*p < '0' || *p > '9' || n == TOTP_DIGITS)
            return 0;
        given[n++] = *p;
    }
    if (n != TOTP_DIGITS || now < TOTP_STEP)
        return 0;
    given[n] = '\0';
    uint64_t cur = (uint64_t)now / TOTP_STEP;
    for (uint64_t s = cur - 1; s <= cur + 1; s++) {
        totp_code(seed, len, s, want);
        /* Every step is computed and compared, matched or not. */
        if (sodium_memcmp(given, want, TOTP_DIGITS) == 0 && s > last_step && found == 0)
            found = s;
    }
    sodium_memzero(want, sizeof(want));
    return found;
}

void totp_seed_new(uint8_t seed[TOTP_SEED_LEN])
{
    randombytes_buf(seed, TOTP_SEED_LEN);
}

void totp_base32(const uint8_t *seed, size_t len, char *out, size_t size)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    size_t o = 0;
    uint32_t buf = 0;
    int bits = 0;

    for (size_t i = 0; i < len; i++) {
        buf = (buf << 8) | seed[i];
        bits += 8;
        while (bits >= 5 && o + 1 < size) {
            out[o++] = alphabet[(buf >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0 && o + 1 < size)
        out[o++] = alphabet[(buf << (5 - bits)) & 31];
    out[o] = '\0';
}

/* The seeds' key: the server secret's, for this use only. */
static void seal_key(const uint8_t secret[32], uint8_t key[32])
{
    static const char ctx[] = "konnect totp seed v1";
    crypto_generichash(key, 32, (const unsigned char *)ctx, sizeof(ctx) - 1, secret, 32);
}

void totp_seal(const uint8_t secret[32], const char *user_id, const uint8_t seed[TOTP_SEED_LEN],
               char out[TOTP_SEALED_SIZE])
{
    uint8_t key[32], box[24 + TOTP_SEED_LEN + 16];
    unsigned long long clen = 0;

    seal_key(secret, key);
    randombytes_buf(box, 24);
    /* The user id is authenticated with it: a seed copied to another user's row opens for none. */
    crypto_aead_xchacha20poly1305_ietf_encrypt(box + 24, &clen, seed, TOTP_SEED_LEN,
                                               (const unsigned char *)user_id, strlen(user_id),
                                               NULL, box, key);
    sodium_bin2hex(out, TOTP_SEALED_SIZE, box, sizeof(box));
    sodium_memzero(key, sizeof(key));
}

int totp_open(const uint8_t secret[32], const char *user_id, const char *sealed,
              uint8_t seed[TOTP_SEED_LEN])
{
    uint8_t key[32], box[24 + TOTP_SEED_LEN + 16];
    size_t blen = 0;
    unsigned long long mlen = 0;
    int r;

    if (strlen(sealed) != TOTP_SEALED_SIZE - 1 ||
        sodium_hex2bin(box, sizeof(box), sealed, strlen(sealed), NULL, &blen, NULL) != 0 ||
        blen != sizeof(box))
        return -1;
    seal_key(secret, key);
    r = crypto_aead_xchacha20poly1305_ietf_decrypt(seed, &mlen, NULL, box + 24, sizeof(box) - 24,
                                                   (const unsigned char *)user_id, strlen(user_id),
                                                   box, key);
    sodium_memzero(key, sizeof(key));
    return r == 0 && mlen == TOTP_SEED_LEN ? 0 : -1;
}

/* A code's keyed hash in hex: lower case, without dashes or spaces. */
static int recovery_hash(const uint8_t secret[32], const char *code, char hex[65])
{
    static const char ctx[] = "konnect recovery code v1:";
    char norm[TOTP_RECOVERY_SIZE];
    uint8_t h[32];
    size_t n = 0;
    crypto_generichash_state st;

    for (const char *p = code; *p != '\0'; p++) {
        if (*p == '-' || *p == ' ')
            continue;
        if (!isalnum((unsigned char)*p) || n + 1 >= sizeof(norm))
            return -1;
        norm[n++] = (char)tolower((unsigned char)*p);
    }
    if (n != TOTP_RECOVERY_SIZE - 2)
        return -1;
    crypto_generichash_init(&st, secret, 32, sizeof(h));
    crypto_generichash_update(&st, (const unsigned char *)ctx, sizeof(ctx) - 1);
    crypto_generichash_update(&st, (const unsigned char *)norm, n);
    crypto_generichash_final(&st, h, sizeof(h));
    sodium_bin2hex(hex, 65, h, sizeof(h));
    sodium_memzero(norm, sizeof(norm));
    return 0;
}

void totp_recovery_new(const uint8_t secret[32],
                       char codes[TOTP_RECOVERY_CODES][TOTP_RECOVERY_SIZE],
                       char list[TOTP_RECOVERY_LIST_SIZE])
{
    /* No 0, 1, l, o: codes are read off paper. */
    static const char alphabet[] = "23456789abcdefghijkmnpqrstuvwxyz";
    size_t o = 0;

    list[0] = '\0';
    for (int i = 0; i < TOTP_RECOVERY_CODES; i++) {
        char hex[65];
        for (int k = 0, j = 0; k < 10; k++) {
            codes[i][j++] = alphabet[randombytes_uniform(sizeof(alphabet) - 1)];
            if (k == 4)
                codes[i][j++] = '-';
        }
        codes[i][TOTP_RECOVERY_SIZE - 1] = '\0';
        recovery_hash(secret, codes[i], hex);
        o += (size_t)snprintf(list + o, TOTP_RECOVERY_LIST_SIZE - o, "%s%s", i ? "," : "", hex);
    }
}

int totp_recovery_take(const uint8_t secret[32], const char *list, const char *code,
                       char rest[TOTP_RECOVERY_LIST_SIZE])
{
    char hex[65];
    int found = 0;
    size_t o = 0;
    const char *p = list;

    rest[0] = '\0';
    if (recovery_hash(secret, code, hex) != 0)
        return 0;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        int match = n == 64 && sodium_memcmp(p, hex, 64) == 0;
        if (match && !found)
            found = 1;
        else if (o + n + 2 < TOTP_RECOVERY_LIST_SIZE)
            o += (size_t)snprintf(rest + o, TOTP_RECOVERY_LIST_SIZE - o, "%s%.*s", o ? "," : "",
                                  (int)n, p);
        p += n + (end != NULL);
    }
    return found;
}

/* Percent-encodes s for a URI's path or query. */
static size_t uri_escape(const char *s, char *out, size_t size)
{
    size_t o = 0;
    for (; *s != '\0' && o + 4 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, size - o, "%%%02X", c);
    }
    out[o] = '\0';
    return o;
}

void totp_uri(const char *issuer, const char *email, const char *base32, char *out, size_t size)
{
    char ei[128], ee[512];
    uri_escape(issuer, ei, sizeof(ei));
    uri_escape(email, ee, sizeof(ee));
    snprintf(out, size,
             "otpauth://totp/%s:%s?secret=%s&issuer=%s&algorithm=SHA1&digits=%d&period=%d", ei, ee,
             base32, ei, TOTP_DIGITS, TOTP_STEP);
}
