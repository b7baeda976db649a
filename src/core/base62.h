/* Base62 alphabet helpers and random identifiers drawn from libsodium's CSPRNG. */
#ifndef KN_CORE_BASE62_H
#define KN_CORE_BASE62_H

#include <stddef.h>
#include <stdint.h>

/* The alphabet, in value order: 0-9, A-Z, a-z. */
extern const char base62_alphabet[63];

/* Returns the value (0..61) of c in the alphabet, or -1 when c is not a base62 character. Inline:
 * it runs for every character of every key presented. */
static inline int base62_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'Z')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 36;
    return -1;
}

/* Writes v as exactly `width` base62 digits, most significant first, zero-padded with '0'. The
 * caller guarantees 62^width > v. Does not terminate the string. */
void base62_encode_fixed(uint64_t v, char *out, size_t width);

/* Fills out[0..n) with uniformly distributed base62 characters from libsodium's CSPRNG (rejection
 * sampling, so every character carries log2(62) bits). Does not terminate the string. */
void base62_random(char *out, size_t n);

/* Writes prefix followed by n random base62 characters and a terminating NUL into out, which must
 * hold strlen(prefix) + n + 1 bytes. Used for public ids such as "key_…" and "req_…", never for a
 * secret: draws from a per-thread ChaCha20 stream keyed once from the system's generator, so that
 * request ids cost no system call. */
void base62_random_id(char *out, const char *prefix, size_t n);

#define BASE62_TIME_DIGITS 7 /* Milliseconds since the epoch: 62^7 ms runs to the year 2081. */

/* Like base62_random_id, but the first BASE62_TIME_DIGITS characters (n must be larger) are the
 * time (Unix milliseconds), so that ids sort by creation time: the usage ledger, keyed by request
 * id, then grows at one end of its index instead of at random places in it. */
void base62_time_id(char *out, const char *prefix, size_t n, uint64_t unix_ms);

#endif
