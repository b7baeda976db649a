/* How an HTTP/1 request's body is delimited, read from its raw head (RFC 9112 section 6.3).
 *
 * h2o 2.2.5 takes the first of several Content-Length headers, lets Transfer-Encoding win over
 * Content-Length, and puts neither header in req->headers, so a request that two servers could
 * frame differently (request smuggling behind a proxy) would be answered as if it were fine. The
 * check has to read the raw head, which h2o keeps at the start of the connection's input buffer
 * (sock->input) until the request's answer is complete; it parses it again with h2o's own
 * picohttpparser (phr_parse_request, which libh2o exports). */
#ifndef KN_HTTP_FRAMING_H
#define KN_HTTP_FRAMING_H

#include <stddef.h>
#include <stdint.h>

enum framing {
    FRAMING_OK = 0,
    FRAMING_CONFLICTING_LENGTHS, /* Content-Length headers with different values. */
    FRAMING_LENGTH_AND_CHUNKED,  /* Both Content-Length and Transfer-Encoding. */
    FRAMING_SEVERAL_CODINGS,     /* More than one Transfer-Encoding header. */
    FRAMING_CODING_IN_HTTP10,    /* Transfer-Encoding in an HTTP/1.0 request. */
};

/* What a request head says about its framing, and what the caller needs of it. */
struct framing_info {
    enum framing framing;
    int minor_version;
    int chunked;              /* A Transfer-Encoding header. */
    int64_t content_length;   /* The (agreed) Content-Length, or -1 when none. */
    const char *length_value; /* The first Content-Length value in the head (to rewrite it). */
    size_t length_value_len;
    const char *path; /* The request target, in the head. */
    size_t path_len;
    const char *authorization; /* The first Authorization value, or NULL. */
    size_t authorization_len;
    int authorization_count;
};

/* Returns 1 when the request head at head[0..len) (header names lower-cased, as h2o leaves them)
 * could be framed ambiguously: it names Content-Length more than once, or Transfer-Encoding at
 * all. Cheap (two memmem passes), so that framing_parse runs only for such heads. */
int framing_suspect(const char *head, size_t len);

/* Parses the request head at buf[0..len) and writes what it says to *out. Returns the head's
 * length, -2 when the head is not complete, -1 when it is not an HTTP/1 request head. */
int framing_parse(const char *buf, size_t len, struct framing_info *out);

/* The reason phrase of an ambiguous framing, for the 400's message. */
const char *framing_problem(enum framing f);

#endif
