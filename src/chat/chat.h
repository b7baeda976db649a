/* POST /v1/chat: request validation and token estimates (the mock answer of test keys is in
 * chat/mock.h). */
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

/* Checks a model name: 1..CHAT_MODEL_MAX printable ASCII characters without spaces. */
int chat_valid_model(const char *s, size_t len);

/* Estimates the token count of a text the way OpenAI's rule of thumb does (about 4 bytes of
 * English text per token), never returning 0 for a non-empty text. */
uint32_t chat_estimate_tokens(const char *text, size_t len);

#endif
