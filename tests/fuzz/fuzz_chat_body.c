/* libFuzzer target: an untrusted POST /v1/chat body through validation and, when it is valid,
 * the mock response (which must always be valid JSON). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "chat/mock.h"
#include "core/redact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct chat_request req;
    struct chat_error err;
    size_t len;

    if (chat_request_parse((const char *)data, size, &req, &err) != 0) {
        /* Every rejection names a public error and has a message. */
        if (err.err == KN_OK || err.message[0] == '\0')
            abort();
        /* The echoed parameter and the message must be valid UTF-8 and free of secrets, or the
         * error document cannot be built or would leak. */
        json_t *m = json_string(err.message);
        if (m == NULL)
            abort();
        for (const char *p = err.message; *p != '\0'; p++)
            if (redact_match(p, strlen(p)) > 8) /* a key prefix followed by key characters */
                abort();
        json_decref(m);
        if (err.param != NULL) {
            json_t *p = json_string(err.param);
            if (p == NULL)
                abort();
            json_decref(p);
        }
        return 0;
    }
    if (req.message_len == 0 || req.message_len > CHAT_MESSAGE_MAX)
        abort();
    struct chat_mock m = {CHAT_API_KONNECT, 0, 0, "m", req.message, req.message_len, 1};
    char *out = chat_mock_answer(&m, "chat_x", 1, &len);
    json_t *doc = json_loadb(out, len, 0, NULL);
    if (doc == NULL)
        abort();
    json_decref(doc);
    free(out);
    chat_request_cleanup(&req);
    return 0;
}
