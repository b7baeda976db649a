/* Removes anything shaped like an API key from text that is about to be shown or logged. */
#ifndef KN_CORE_REDACT_H
#define KN_CORE_REDACT_H

#include <stddef.h>

/* The text that replaces a key's secret part. */
#define REDACTED "[redacted]"

/* Returns the length of the key-shaped run that starts at s[0..len): "sk_live_" or "sk_test_"
 * followed by base62 characters, or 0 when s does not start with one. */
size_t redact_match(const char *s, size_t len);

/* Copies src into dst (dstsize bytes, always terminated), replacing the secret part of every
 * key-shaped run with REDACTED. Returns dst. */
char *redact_copy(char *dst, size_t dstsize, const char *src);

#endif
