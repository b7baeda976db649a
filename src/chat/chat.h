/* POST /v1/chat: request validation and the deterministic mock answer given to test keys. */
#ifndef KN_CHAT_CHAT_H
#define KN_CHAT_CHAT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"

#define CHAT_MESSAGE_MAX 32768
#define CHAT_MODEL_MAX 128

/* A validated request. message and model are borrowed from the parsed document, which the
 * request owns until chat_request_cleanup. */
struct chat_request {
    json_t *root;
    const char *message;
    size_t message_len;
    const char *model; /* NULL when the request named no model. */
    size_t model_len;
    int stream; /* 1 when the client asked for Server-Sent Events ("stream": true). */
};

/* What was wrong with a rejected request. */
struct chat_error {
    enum kn_err err;
    const char *param; /* The offending parameter (static or borrowed from the input), or NULL. */
    char message[200];
};

/* Parses and validates a request body: a JSON object (duplicate keys rejected) with "message", a
 * string of 1..CHAT_MESSAGE_MAX bytes of UTF-8, an optional "model" string of 1..CHAT_MODEL_MAX
 * printable ASCII characters and an optional boolean "stream"; any other member is an unknown
 * parameter. Returns
 * 0 and fills *req on success; returns -1 and fills *err otherwise (req then owns nothing). */
int chat_request_parse(const char *body, size_t len, struct chat_request *req,
                       struct chat_error *err);

/* Releases what chat_request_parse allocated. */
void chat_request_cleanup(struct chat_request *req);

/* Builds the mock response body for a test key: the same message and model always give the same
 * content, which says plainly that it is a mock. Returns a NUL-terminated JSON document the caller
 * frees with free(), and writes its length to *len. */
char *chat_mock_response(const struct chat_request *req, const char *model, const char *id,
                         int64_t created, size_t *len);

/* Writes the mock answer's text for a message and model into out (at least 512 bytes): what
 * chat_mock_response puts in "content". Returns its length. */
size_t chat_mock_content(const char *message, size_t message_len, const char *model, char *out,
                         size_t outsize);

/* Checks a model name: 1..CHAT_MODEL_MAX printable ASCII characters without spaces. */
int chat_valid_model(const char *s, size_t len);

/* Estimates the token count of a text the way OpenAI's rule of thumb does (about 4 bytes of
 * English text per token), never returning 0 for a non-empty text. */
uint32_t chat_estimate_tokens(const char *text, size_t len);

#endif
