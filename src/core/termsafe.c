/* Text made safe for a terminal; see termsafe.h. */
#include "core/termsafe.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The length of the UTF-8 sequence at s (1..4) and its code point, or 0 when it is not one. */
static size_t utf8_decode(const unsigned char *s, uint32_t *cp)
{
    size_t n;
    uint32_t c;

    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        c = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        c = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        c = s[0] & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) ||
        (n == 4 && (c < 0x10000 || c > 0x10ffff)))
        return 0;
    *cp = c;
    return n;
}

static int dangerous(uint32_t c)
{
    return (c >= 0x80 && c <= 0x9f) || c == 0x61c || c == 0x200e || c == 0x200f ||
           (c >= 0x2028 && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

char *termsafe_copy(char *dst, size_t dstsize, const char *src)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t used = 0;

    if (dstsize == 0)
        return dst;
    while (*s != '\0') {
        char esc[16];
        const char *out = esc;
        size_t len;
        uint32_t cp = 0;
        size_t n = utf8_decode(s, &cp);

        if (n == 0) {
            snprintf(esc, sizeof(esc), "\\x%02x", *s);
            n = 1;
        } else if (cp == '\n') {
            out = "\\n";
        } else if (cp == '\t') {
            out = "\\t";
        } else if (cp == '\\') {
            out = "\\\\";
        } else if (cp < 0x20 || cp == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", (unsigned)cp);
        } else if (dangerous(cp)) {
            snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)cp);
        } else {
            memcpy(esc, s, n);
            esc[n] = '\0';
        }
        len = strlen(out);
        if (used + len >= dstsize)
            break;
        memcpy(dst + used, out, len);
        used += len;
        s += n;
    }
    dst[used] = '\0';
    return dst;
}

char *utf8_clean_copy(char *dst, size_t dstsize, const char *src)
{
    static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
    const unsigned char *s = (const unsigned char *)src;
    size_t used = 0;

    if (dstsize == 0)
        return dst;
    while (*s != '\0') {
        uint32_t cp;
        size_t n = utf8_decode(s, &cp), len = n == 0 ? 3 : n;
        if (used + len >= dstsize)
            break;
        memcpy(dst + used, n == 0 ? replacement : (const char *)s, len);
        used += len;
        s += n == 0 ? 1 : n;
    }
    dst[used] = '\0';
    return dst;
}
