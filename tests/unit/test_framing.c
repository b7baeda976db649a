/* Request framing read from the raw head: what smuggling looks like, and what is fine. */
#include "http/framing.h"

#include <string.h>

#include "unit.h"

static enum framing framing(const char *head)
{
    struct framing_info f;
    return framing_parse(head, strlen(head), &f) > 0 ? f.framing : (enum framing) - 1;
}

int main(void)
{
    struct framing_info f;
    const char *ok = "POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n"
                     "Authorization: Bearer sk_test_abc\r\n\r\n";

    CHECK(framing_parse(ok, strlen(ok), &f) == (int)strlen(ok));
    CHECK(f.framing == FRAMING_OK && f.content_length == 12 && !f.chunked && f.minor_version == 1);
    CHECK(f.path_len == 8 && memcmp(f.path, "/v1/chat", 8) == 0);
    CHECK(f.authorization_count == 1 && f.authorization_len == 18);
    CHECK(f.length_value_len == 2 && memcmp(f.length_value, "12", 2) == 0);
    CHECK(framing_parse(ok, strlen(ok) - 2, &f) == -2);
    CHECK(framing_parse("garbage\r\n\r\n", 11, &f) == -1);

    CHECK(framing("POST / HTTP/1.1\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n") ==
          FRAMING_OK);
    CHECK(framing("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n") ==
          FRAMING_CONFLICTING_LENGTHS);
    CHECK(framing("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: x\r\n\r\n") ==
          FRAMING_CONFLICTING_LENGTHS);
    CHECK(framing("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n") ==
          FRAMING_LENGTH_AND_CHUNKED);
    CHECK(framing("POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\nContent-Length: 5\r\n\r\n") ==
          FRAMING_LENGTH_AND_CHUNKED);
    CHECK(framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == FRAMING_OK);
    CHECK(framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
                  "\r\n\r\n") == FRAMING_SEVERAL_CODINGS);
    CHECK(framing("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n") ==
          FRAMING_CODING_IN_HTTP10);
    CHECK(framing("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n") == FRAMING_OK);
    CHECK(framing("GET / HTTP/1.1\r\nHost: x\r\n\r\n") == FRAMING_OK);
    /* The cheap pre-check: only heads that could be ambiguous are parsed. */
    const char *one = "POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n";
    const char *two = "POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n";
    const char *te = "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n";
    CHECK(!framing_suspect(one, strlen(one)));
    CHECK(framing_suspect(two, strlen(two)));
    CHECK(framing_suspect(te, strlen(te)));
    return unit_result();
}
