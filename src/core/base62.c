/* Base62 text and random identifiers; see base62.h. */
#include "core/base62.h"

#include <sodium.h>
#include <string.h>

const char base62_alphabet[63] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

int base62_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'Z')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 36;
    return -1;
}

void base62_encode_fixed(uint64_t v, char *out, size_t width)
{
    for (size_t i = width; i > 0; i--) {
        out[i - 1] = base62_alphabet[v % 62];
        v /= 62;
    }
}

void base62_random(char *out, size_t n)
{
    unsigned char buf[64];
    size_t have = 0, used = 0;

    while (have < n) {
        if (used == 0 || used == sizeof(buf)) {
            randombytes_buf(buf, sizeof(buf));
            used = 0;
        }
        /* 248 = 4 * 62: bytes at or above it would bias the low digits, so they are skipped. */
        unsigned char b = buf[used++];
        if (b < 248)
            out[have++] = base62_alphabet[b % 62];
    }
    sodium_memzero(buf, sizeof(buf));
}

void base62_random_id(char *out, const char *prefix, size_t n)
{
    static _Thread_local unsigned char pool[4096];
    static _Thread_local size_t pool_used = sizeof(pool);
    size_t plen = strlen(prefix), have = 0;

    memcpy(out, prefix, plen);
    while (have < n) {
        if (pool_used == sizeof(pool)) {
            randombytes_buf(pool, sizeof(pool));
            pool_used = 0;
        }
        unsigned char b = pool[pool_used++];
        if (b < 248)
            out[plen + have++] = base62_alphabet[b % 62];
    }
    out[plen + n] = '\0';
}

void base62_time_id(char *out, const char *prefix, size_t n, uint64_t unix_ms)
{
    size_t plen = strlen(prefix);

    base62_random_id(out, prefix, n);
    base62_encode_fixed(unix_ms, out + plen, BASE62_TIME_DIGITS);
}
