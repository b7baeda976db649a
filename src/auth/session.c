/* Session and invitation tokens, and the cookies that carry them; see session.h. */
#include "auth/session.h"

#include <sodium.h>
#include <string.h>

#include "core/base62.h"

void session_token_new(char out[SESSION_TOKEN_LEN + 1])
{
    base62_random(out, SESSION_TOKEN_LEN);
    out[SESSION_TOKEN_LEN] = '\0';
}

void session_token_hash(const uint8_t secret[32], const char *token, size_t len, uint8_t out[32])
{
    crypto_generichash(out, 32, (const unsigned char *)token, len, secret, 32);
}

int session_cookie_find(const char *header, size_t len, const char *name, const char **value,
                        size_t *value_len)
{
    size_t nlen = strlen(name), i = 0;

    while (i < len) {
        while (i < len && (header[i] == ' ' || header[i] == ';'))
            i++;
        size_t start = i;
        while (i < len && header[i] != ';')
            i++;
        /* One "name=value" pair in header[start..i). */
        if (i - start > nlen && memcmp(header + start, name, nlen) == 0 &&
            header[start + nlen] == '=') {
            size_t vstart = start + nlen + 1, vend = i;
            while (vend > vstart && header[vend - 1] == ' ')
                vend--;
            *value = header + vstart;
            *value_len = vend - vstart;
            return 0;
        }
    }
    return -1;
}
