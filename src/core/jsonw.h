/* A JSON text written piece by piece into a growing buffer, for the few documents on the hot path
 * whose shape is fixed (Konnect's chat answer, the request to the model backend). jansson builds
 * a tree of objects first and then serialises it, at about ten times the cost. Strings are
 * escaped exactly as jansson's compact output escapes them, so either way gives the same bytes. */
#ifndef KONNECT_CORE_JSONW_H
#define KONNECT_CORE_JSONW_H

#include <stddef.h>
#include <stdint.h>

struct jsonw {
    char *buf;
    size_t len, cap;
    int bad; /* A string was not valid UTF-8. */
};

/* Starts an empty text with room for about cap bytes. */
void jsonw_init(struct jsonw *w, size_t cap);

/* Appends JSON text as it is (punctuation, names, literals). */
void jsonw_raw(struct jsonw *w, const char *s, size_t len);
#define jsonw_lit(w, s) jsonw_raw((w), (s), sizeof(s) - 1)

/* Appends s (len bytes, which may include NULs) as a quoted JSON string. Text that is not valid
 * UTF-8 marks the whole document bad. */
void jsonw_str(struct jsonw *w, const char *s, size_t len);

/* Appends an integer. */
void jsonw_int(struct jsonw *w, int64_t v);

/* Ends the text: returns it NUL-terminated (to free()) with its length in *len, or NULL (and
 * frees it) when a string was not valid UTF-8. */
char *jsonw_finish(struct jsonw *w, size_t *len);

#endif
