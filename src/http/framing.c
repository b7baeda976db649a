/* How an HTTP/1 request's body is delimited, read from its raw head; see framing.h. */
#include "http/framing.h"

#include <string.h>
#include <strings.h>

/* picohttpparser's interface, as libh2o exports it (h2o does not install its header). */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len,
                      const char **path, size_t *path_len, int *minor_version,
                      struct phr_header *headers, size_t *num_headers, size_t last_len);

#define HEADERS_MAX 100 /* h2o's H2O_MAX_HEADERS: a longer head never reaches a handler. */

static int named(const struct phr_header *h, const char *name, size_t len)
{
    return h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

/* A Content-Length value: digits only, trimmed of blanks. Returns it, or -1. */
static int64_t length_of(const char *v, size_t len)
{
    int64_t n = 0;
    size_t i = 0;

    while (i < len && (v[i] == ' ' || v[i] == '\t'))
        i++;
    while (len > i && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (i == len || len - i > 18)
        return -1;
    for (; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    return n;
}

int framing_suspect(const char *head, size_t len)
{
    const char *p = head, *end = head + len;
    int lengths = 0;

    /* Each header line starts after a '\n'; only two names matter, so look at the first byte of
     * each line before comparing anything. */
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL && ++p < end) {
        if (*p == 'c' && (size_t)(end - p) >= 15 && memcmp(p, "content-length:", 15) == 0)
            lengths++;
        else if (*p == 't' && (size_t)(end - p) >= 18 && memcmp(p, "transfer-encoding:", 18) == 0)
            return 1;
    }
    return lengths > 1;
}

int framing_parse(const char *buf, size_t len, struct framing_info *out)
{
    struct phr_header headers[HEADERS_MAX];
    size_t n = HEADERS_MAX, method_len;
    const char *method;
    int lengths = 0, codings = 0, r;

    memset(out, 0, sizeof(*out));
    out->content_length = -1;
    r = phr_parse_request(buf, len, &method, &method_len, &out->path, &out->path_len,
                          &out->minor_version, headers, &n, 0);
    if (r <= 0)
        return r == 0 ? -1 : r;
    for (size_t i = 0; i < n; i++) {
        const struct phr_header *h = &headers[i];
        if (h->name == NULL)
            continue; /* A folded continuation line. */
        if (named(h, "content-length", 14)) {
            int64_t v = length_of(h->value, h->value_len);
            if (lengths++ == 0) {
                out->content_length = v;
                out->length_value = h->value;
                out->length_value_len = h->value_len;
            } else if (v != out->content_length || v < 0) {
                out->framing = FRAMING_CONFLICTING_LENGTHS;
            }
        } else if (named(h, "transfer-encoding", 17)) {
            codings++;
        } else if (named(h, "authorization", 13)) {
            if (out->authorization_count++ == 0) {
                out->authorization = h->value;
                out->authorization_len = h->value_len;
            }
        }
    }
    out->chunked = codings > 0;
    if (out->framing == FRAMING_OK && codings > 0) {
        if (out->minor_version == 0)
            out->framing = FRAMING_CODING_IN_HTTP10;
        else if (lengths > 0)
            out->framing = FRAMING_LENGTH_AND_CHUNKED;
        else if (codings > 1)
            out->framing = FRAMING_SEVERAL_CODINGS;
    }
    return r;
}

const char *framing_problem(enum framing f)
{
    switch (f) {
    case FRAMING_CONFLICTING_LENGTHS:
        return "The request has Content-Length headers with different values";
    case FRAMING_LENGTH_AND_CHUNKED:
        return "The request has both Content-Length and Transfer-Encoding";
    case FRAMING_SEVERAL_CODINGS:
        return "The request has more than one Transfer-Encoding header";
    case FRAMING_CODING_IN_HTTP10:
        return "An HTTP/1.0 request cannot use Transfer-Encoding";
    case FRAMING_OK:
        break;
    }
    return "The request's framing is fine";
}
