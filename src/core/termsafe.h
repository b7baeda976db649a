/* Text from the store (names, emails, audit details, user agents one day) shown in a terminal:
 * anything that could forge a line of output or drive the operator's terminal is written as an
 * escape instead. Used by every text output of the CLI; JSON output is ASCII-escaped instead. */
#ifndef KN_CORE_TERMSAFE_H
#define KN_CORE_TERMSAFE_H

#include <stddef.h>

/* Room for the escaped form of n bytes (each may become "\u202e"), with its NUL. */
#define TERMSAFE_SIZE(n) ((n)*6 + 1)

/* Copies src into dst (dstsize bytes, always terminated, cut at a whole character when it does
 * not fit) with these written as escapes: C0 controls and DEL ("\n" as \n, "\t" as \t, the rest
 * as \xNN), the backslash itself (\\), C1 controls (U+0080..U+009F), the line and paragraph
 * separators (U+2028, U+2029), bidirectional marks, embeddings, overrides and isolates
 * (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) as \uXXXX, and bytes that are not
 * UTF-8 as \xNN. Returns dst. */
char *termsafe_copy(char *dst, size_t dstsize, const char *src);

/* Copies src into dst (dstsize bytes, always terminated, cut at a whole character) as valid
 * UTF-8: each byte that is not part of a UTF-8 character becomes U+FFFD. For text that must go
 * into JSON, which cannot hold anything else (jansson refuses such strings). Returns dst. */
char *utf8_clean_copy(char *dst, size_t dstsize, const char *src);

#endif
