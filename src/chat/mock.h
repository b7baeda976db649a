/* The mock answer a test key gets instead of a model's: the same prompt and model always give the
 * same text, which says plainly that it is a mock, in the shape the client asked for (Konnect's
 * /v1/chat or OpenAI's chat completions, plain or streamed word by word like a model). The one
 * builder of every mock answer. */
#ifndef KN_CHAT_MOCK_H
#define KN_CHAT_MOCK_H

#include <stddef.h>
#include <stdint.h>

#include "chat/openai.h"

/* What a mock answer depends on. Strings are borrowed. */
struct chat_mock {
    enum chat_api api;
    int stream;
    int include_usage; /* Streaming OpenAI clients that asked for the usage chunk. */
    const char *model;
    const char *prompt; /* The last user message's text. */
    size_t prompt_len;
    uint32_t input_tokens; /* Reported as the answer's input usage. */
};

/* The mock of a validated call (chat_call_from_konnect or chat_call_from_openai). */
static inline struct chat_mock chat_mock_of(const struct chat_call *c)
{
    struct chat_mock m = {c->api,    c->stream,     c->include_usage, c->model,
                          c->prompt, c->prompt_len, c->input_estimate};
    return m;
}

/* The whole mock answer: a JSON document or the stream's every event, NUL-terminated, for the
 * caller to free; its length goes to *len. */
char *chat_mock_answer(const struct chat_mock *m, const char *id, int64_t created, size_t *len);

/* Writes the mock answer's text for a message and model into out (at least 512 bytes). Returns
 * its length. */
size_t chat_mock_content(const char *message, size_t message_len, const char *model, char *out,
                         size_t outsize);

#endif
