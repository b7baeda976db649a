/* libFuzzer target: the bytes of a backend's HTTP response, as the backend client reads them. The
 * input's first byte chooses the size of the pieces it arrives in, and whether the connection
 * ends after it; whatever comes, the reader must stop at -1 or at the end of a response, keep its
 * Content-Type within bounds and never hand out more body than it was given. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/upstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct upstream_response r;
    size_t step, at = 0, body = 0;
    int eof, ret = 0;

    if (size == 0)
        return 0;
    step = (data[0] & 0x3f) + 1;
    eof = (data[0] & 0x40) != 0;
    data++;
    size--;
    upstream_response_init(&r);
    while (at < size && ret == 0 && !r.complete) {
        size_t n = size - at < step ? size - at : step;
        ret = upstream_response_feed(&r, (const char *)data + at, n);
        at += n;
        body += r.body_len;
        r.body_len = 0;
    }
    if (eof && ret == 0 && !r.complete) {
        ret = upstream_response_feed(&r, NULL, 0);
        body += r.body_len;
    }
    if (ret < -1 || ret > 1 || body > size || r.ctype_len > UPSTREAM_CTYPE_MAX ||
        (r.complete && !r.head_done))
        abort();
    upstream_response_cleanup(&r);
    return 0;
}
