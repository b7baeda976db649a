/* A JSON writer for the hot path's fixed-shape documents; see jsonw.h. */
#include "core/jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void jsonw_init(struct jsonw *w, size_t cap)
{
    w->cap = cap < 64 ? 64 : cap;
    w->buf = kn_malloc(w->cap);
    w->len = 0;
    w->bad = 0;
}

static void reserve(struct jsonw *w, size_t more)
{
    if (w->len + more + 1 > w->cap) {
        w->cap = (w->len + more + 1) * 2;
        w->buf = kn_realloc(w->buf, w->cap);
    }
}

void jsonw_raw(struct jsonw *w, const char *s, size_t len)
{
    reserve(w, len);
    memcpy(w->buf + w->len, s, len);
    w->len += len;
}

/* The length of the UTF-8 sequence at s (at most n bytes), or 0 when it is not a valid one
 * (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Non-zero when one of the 8 bytes of v needs more than a copy: a control character (below 0x20),
 * '"', '\\' or a byte of a UTF-8 sequence (0x80 and up). Each test is the classic one for "some
 * byte is below n" ((x - n per byte) & ~x & the high bits), which is never wrong about whether
 * there is one; '"' and '\\' are the bytes that the xor makes zero. */
static inline uint64_t word_needs_care(uint64_t v)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = v ^ (ones * '"'), slash = v ^ (ones * '\\');

    return (((v - ones * 0x20) & ~v) | ((quote - ones) & ~quote) | ((slash - ones) & ~slash) | v) &
           highs;
}

void jsonw_str(struct jsonw *w, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run;

    /* Room for the string as it is; each escape makes more room for itself. */
    reserve(w, len + 2);
    w->buf[w->len++] = '"';
    while (i < len) {
        /* Copy the longest stretch that needs no escape in one go, 8 bytes at a time while no
         * byte of them needs care. */
        for (run = i; run + 8 <= len; run += 8) {
            uint64_t v;
            memcpy(&v, s + run, 8);
            if (word_needs_care(v))
                break;
        }
        for (; run < len && s[run] >= 0x20 && s[run] != '"' && s[run] != '\\' && s[run] < 0x80;
             run++)
            ;
        memcpy(w->buf + w->len, s + i, run - i);
        w->len += run - i;
        i = run;
        if (i == len)
            break;
        unsigned char c = s[i];
        if (c >= 0x80) {
            size_t n = utf8_seq(s + i, len - i);
            if (n == 0) {
                w->bad = 1;
                return;
            }
            memcpy(w->buf + w->len, s + i, n);
            w->len += n;
            i += n;
            continue;
        }
        /* Two-character escapes where JSON has them, else \u00XX; the rest of the string and
         * the closing quote still fit after it. */
        static const char short_escape[0x60] = {
            ['"'] = '"',  ['\\'] = '\\', ['\b'] = 'b', ['\f'] = 'f',
            ['\n'] = 'n', ['\r'] = 'r',  ['\t'] = 't'};
        reserve(w, 6 + (len - i) + 1);
        w->buf[w->len++] = '\\';
        if (c < sizeof(short_escape) && short_escape[c] != 0)
            w->buf[w->len++] = short_escape[c];
        else
            w->len += (size_t)snprintf(w->buf + w->len, 6, "u%04X", c);
        i++;
    }
    w->buf[w->len++] = '"';
}

void jsonw_int(struct jsonw *w, int64_t v)
{
    reserve(w, KN_DECIMAL_MAX);
    w->len += kn_decimal(w->buf + w->len, v);
}

char *jsonw_finish(struct jsonw *w, size_t *len)
{
    char *out = w->buf;

    w->buf = NULL;
    if (w->bad) {
        free(out);
        return NULL;
    }
    out[w->len] = '\0';
    *len = w->len;
    return out;
}
