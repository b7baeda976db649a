/* The backend client's response reader: every framing of a response (Content-Length, chunked, to
 * the end of the connection, after 1xx answers), fed whole and one byte at a time, and what it
 * says about bytes that are not a response. */
#include <stdlib.h>

#include "http/upstream.h"
#include "unit.h"

struct result {
    int r; /* The last feed's return. */
    int head_done, complete, status, keep_alive;
    char ctype[UPSTREAM_CTYPE_MAX + 1];
    char body[4096];
    size_t body_len;
};

/* Feeds text in pieces of `step` bytes (0: whole), then the end of the connection when eof. */
static struct result feed(const char *text, size_t step, int eof)
{
    struct upstream_response r;
    struct result out;
    size_t len = strlen(text), at = 0;

    memset(&out, 0, sizeof(out));
    upstream_response_init(&r);
    while (at < len && out.r == 0 && !r.complete) {
        size_t n = step == 0 || len - at < step ? len - at : step;
        out.r = upstream_response_feed(&r, text + at, n);
        at += n;
        if (r.body_len > 0 && out.body_len + r.body_len <= sizeof(out.body)) {
            memcpy(out.body + out.body_len, r.body, r.body_len);
            out.body_len += r.body_len;
        }
        r.body_len = 0;
    }
    if (eof && out.r == 0 && !r.complete) {
        out.r = upstream_response_feed(&r, NULL, 0);
        if (r.body_len > 0 && out.body_len + r.body_len <= sizeof(out.body)) {
            memcpy(out.body + out.body_len, r.body, r.body_len);
            out.body_len += r.body_len;
        }
    }
    out.head_done = r.head_done;
    out.complete = r.complete;
    out.status = r.head_done ? (int)r.parser.status_code : 0;
    out.keep_alive = r.complete && http_should_keep_alive(&r.parser);
    memcpy(out.ctype, r.ctype, r.ctype_len);
    upstream_response_cleanup(&r);
    return out;
}

static int body_is(const struct result *res, const char *want)
{
    return res->body_len == strlen(want) && memcmp(res->body, want, res->body_len) == 0;
}

static void test_framings(void)
{
    static const size_t steps[] = {0, 1, 2, 7};
    const char *cl = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     "Content-Length: 11\r\n\r\n{\"a\":\"bcd\"}";
    const char *chunked = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n"
                          "6\r\ndata: \r\n5\r\nhello\r\n2;ext=1\r\n\n\n\r\n0\r\n\r\n";
    const char *until_close = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              "Connection: close\r\n\r\n{\"until\":\"close\"}";
    const char *informational = "HTTP/1.1 100 Continue\r\n\r\n"
                                "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                                "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";

    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct result r = feed(cl, steps[i], 0);
        CHECK(r.r == 0 && r.complete && r.status == 200 && r.keep_alive);
        CHECK_STR(r.ctype, "application/json");
        CHECK(body_is(&r, "{\"a\":\"bcd\"}"));

        r = feed(chunked, steps[i], 0);
        CHECK(r.r == 0 && r.complete && r.keep_alive);
        CHECK_STR(r.ctype, "text/event-stream");
        CHECK(body_is(&r, "data: hello\n\n"));

        r = feed(until_close, steps[i], 0);
        CHECK(r.r == 0 && r.head_done && !r.complete); /* Not over until the connection is. */
        r = feed(until_close, steps[i], 1);
        CHECK(r.r == 0 && r.complete && !r.keep_alive);
        CHECK(body_is(&r, "{\"until\":\"close\"}"));

        r = feed(informational, steps[i], 0);
        CHECK(r.r == 0 && r.complete && r.status == 201);
        CHECK(body_is(&r, "ok"));
    }
}

static void test_keep_alive_and_leftovers(void)
{
    struct result r = feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 0, 0);
    CHECK(r.r == 1 && r.complete); /* Bytes after the response: the connection is spoiled. */
    CHECK(body_is(&r, "ok"));
    r = feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", 0, 0);
    CHECK(r.r == 0 && r.complete && !r.keep_alive);
    r = feed("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, 0);
    CHECK(r.r == 0 && r.complete && !r.keep_alive);
    r = feed("HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok", 0, 0);
    CHECK(r.r == 0 && r.complete && r.keep_alive);
    r = feed("HTTP/1.1 204 No Content\r\n\r\n", 0, 0);
    CHECK(r.r == 0 && r.complete && r.status == 204 && r.body_len == 0);
}

static void test_content_type(void)
{
    struct result r = feed("HTTP/1.1 200 OK\r\nX-Content-Type: nope\r\nCONTENT-TYPE: text/plain\r\n"
                           "Content-Length: 0\r\n\r\n",
                           3, 0);
    CHECK_STR(r.ctype, "text/plain");
    r = feed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0);
    CHECK_STR(r.ctype, "");
    /* A very long value is cut, not overflowed. */
    char text[1024];
    char big[600];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    snprintf(text, sizeof(text), "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: 0\r\n\r\n",
             big);
    r = feed(text, 5, 0);
    CHECK(r.complete && strlen(r.ctype) == UPSTREAM_CTYPE_MAX);
}

static void test_not_responses(void)
{
    CHECK(feed("this is not http\r\n\r\n", 0, 0).r == -1);
    CHECK(feed("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 0, 0).r == -1);
    CHECK(feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, 0).r == -1);
    /* Cut short: the connection ends before the promised body, or before any head. */
    CHECK(feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, 1).r == -1);
    CHECK(feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", 0, 1).r == -1);
    struct result r = feed("", 0, 1);
    CHECK(r.r == 0 && !r.head_done); /* Nothing at all: the caller sees no head. */
    r = feed("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", 0, 0);
    CHECK(r.r == -1);
}

int main(void)
{
    test_framings();
    test_keep_alive_and_leftovers();
    test_content_type();
    test_not_responses();
    return unit_result();
}
