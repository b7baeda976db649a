/* The access log: one JSON object per line and per request, buffered per event-loop thread and
 * written in whole lines. Anything that looks like an API key is redacted before it is written,
 * so a key sent in the wrong place (a URL, say) never reaches the log. */
#ifndef KN_HTTP_ACCESSLOG_H
#define KN_HTTP_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

struct accesslog;

/* A per-thread line buffer; zero-initialise it. */
struct logbuf {
    char *buf;
    size_t len, cap;
};

/* What one line records. Strings may be NULL (written as null); method and path are borrowed
 * (pointer, length) views into the request. */
struct accesslog_entry {
    int64_t time;
    const char *request_id;
    const char *method;
    size_t method_len;
    const char *path;
    size_t path_len;
    int status;
    const char *error_code;
    const char *key_id;
    const char *mode;
    const char *remote;
    uint64_t duration_us;
    size_t body_bytes;
};

/* Opens the log named by spec: "-" for standard error, "off" for none, or a file path (appended
 * to, created with mode 0640). Returns NULL with a message in err on failure. */
struct accesslog *accesslog_open(const char *spec, char *err, size_t errsize);

/* Returns 1 when lines are written somewhere, 0 when the log is off. */
int accesslog_enabled(const struct accesslog *log);

/* Closes the log (NULL is accepted). */
void accesslog_close(struct accesslog *log);

/* Appends one line for e to b (nothing when the log is off). */
void accesslog_append(struct accesslog *log, struct logbuf *b, const struct accesslog_entry *e);

/* Writes out b's complete lines and empties it. Thread-safe. */
void accesslog_flush(struct accesslog *log, struct logbuf *b);

/* Frees b's memory. */
void logbuf_free(struct logbuf *b);

/* Appends s[0..len) to b as the body of a JSON string (without quotes), escaping what JSON needs
 * escaped and replacing the secret part of anything shaped like an API key ("sk_live_" or
 * "sk_test_" followed by key characters) with "[redacted]". */
void logbuf_put_redacted(struct logbuf *b, const char *s, size_t len);

#endif
