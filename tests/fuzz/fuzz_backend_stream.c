/* libFuzzer target: whatever a model backend sends. The bytes go through the Server-Sent Events
 * framing (cut in two at a point the input chooses), every event through the chunk parser, and
 * the whole input through the plain-answer parser; whatever is accepted must turn into valid JSON
 * events and documents for the client, or into NULL (text that cannot be JSON), never a crash. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_event(char *ev, size_t len)
{
    if (ev == NULL)
        return;
    if (len < 8 || memcmp(ev, "data: ", 6) != 0 || strlen(ev) != len)
        abort();
    char *end = strstr(ev, "\n\n");
    json_t *doc = json_loadb(ev + 6, (size_t)(end - ev) - 6, 0, NULL);
    if (doc == NULL)
        abort();
    json_decref(doc);
    free(ev);
}

static int on_event(void *ud, const char *d, size_t len)
{
    struct chat_chunk c;
    size_t n;
    (void)ud;
    if (chat_chunk_parse(d, len, &c) != 0)
        return 0;
    if (c.content != NULL) {
        char *ev = chat_konnect_delta_event("chat_x", 1, "m", 1, c.content, c.content_len, &n);
        check_event(ev, n);
        ev = chat_openai_chunk_event("chatcmpl-x", 1, "m", 0, c.content, c.content_len, NULL, &n);
        check_event(ev, n);
    }
    chat_chunk_cleanup(&c);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sse_parser p;
    struct chat_result r;
    size_t cut = size > 0 ? data[0] % (size + 1) : 0, n;

    sse_init(&p, 4096);
    if (sse_feed(&p, (const char *)data, cut, on_event, NULL) == 0)
        sse_feed(&p, (const char *)data + cut, size - cut, on_event, NULL);
    sse_free(&p);
    if (chat_result_parse((const char *)data, size, &r) == 0) {
        char *doc = chat_konnect_response("chat_x", 1, "m", 1, r.content, r.content_len,
                                          r.finish_reason, 1, 2, &n);
        if (doc != NULL) {
            json_t *j = json_loadb(doc, n, 0, NULL);
            if (j == NULL)
                abort();
            json_decref(j);
            free(doc);
        }
        chat_result_cleanup(&r);
    }
    return 0;
}
