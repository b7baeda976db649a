/* Base62 text and random identifiers; see base62.h. */
#include "core/base62.h"

#include <sodium.h>
#include <string.h>

const char base62_alphabet[63] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

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
    /* A ChaCha20 keystream under a per-thread key drawn once from the system: the ids need to be
     * unpredictable, not secret (no secret is made here), and the system's generator would cost
     * a system call every 256 bytes (libsodium's getrandom chunks), one every few requests. */
    static _Thread_local unsigned char key[crypto_stream_chacha20_ietf_KEYBYTES];
    static _Thread_local unsigned char nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
    static _Thread_local unsigned char pool[4096];
    static _Thread_local size_t pool_used = sizeof(pool);
    static _Thread_local int keyed;
    size_t plen = strlen(prefix), have = 0;

    memcpy(out, prefix, plen);
    while (have < n) {
        if (pool_used == sizeof(pool)) {
            if (!keyed) {
                randombytes_buf(key, sizeof(key));
                keyed = 1;
            }
            crypto_stream_chacha20_ietf(pool, sizeof(pool), nonce, key);
            sodium_increment(nonce, sizeof(nonce)); /* A new block of the stream each time. */
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
