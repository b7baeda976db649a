/* Redaction of anything shaped like an API key; see redact.h. */
#include "core/redact.h"

#include <string.h>

#include "core/base62.h"

size_t redact_match(const char *s, size_t len)
{
    size_t j = 8;

    if (len < 8 || s[0] != 's' || s[1] != 'k' || s[2] != '_' ||
        (memcmp(s + 3, "live_", 5) != 0 && memcmp(s + 3, "test_", 5) != 0))
        return 0;
    while (j < len && base62_value((unsigned char)s[j]) >= 0)
        j++;
    return j;
}

char *redact_copy(char *dst, size_t dstsize, const char *src)
{
    size_t len = strlen(src), i = 0, o = 0;

    if (dstsize == 0)
        return dst;
    while (i < len && o + 1 < dstsize) {
        size_t m = redact_match(src + i, len - i);
        if (m == 0) {
            dst[o++] = src[i++];
            continue;
        }
        /* Keep the prefix ("sk_live_"), drop the rest. */
        for (size_t k = 0; k < 8 && o + 1 < dstsize; k++)
            dst[o++] = src[i + k];
        for (const char *r = REDACTED; *r != '\0' && o + 1 < dstsize; r++)
            dst[o++] = *r;
        i += m;
    }
    dst[o] = '\0';
    return dst;
}
