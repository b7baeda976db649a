/* The OpenAI chat-completions protocol, both ways: the requests Konnect's clients send to
 * /v1/chat and /v1/chat/completions become one upstream request to the model backend, and the
 * backend's answers (one JSON document, or Server-Sent Events when streaming) become the answer in
 * the shape the client asked for. Pure functions over bytes, so that they can be tested and
 * fuzzed without a network. */
#ifndef KN_CHAT_OPENAI_H
#define KN_CHAT_OPENAI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/chat.h"
#include "metering/plans.h"

/* The API a client called. */
enum chat_api {
    CHAT_API_KONNECT, /* POST /v1/chat: {"message": ...} in, Konnect's chat.response out. */
    CHAT_API_OPENAI,  /* POST /v1/chat/completions: OpenAI's request and response shapes. */
};

/* A validated request. chat_call_prepare makes it ready to forward. */
struct chat_call {
    enum chat_api api;
    int stream;                     /* The client wants Server-Sent Events. */
    int include_usage;              /* Streaming OpenAI clients: they asked for the usage chunk. */
    char model[CHAT_MODEL_MAX + 1]; /* The model asked for (or the default). */
    json_t *root;                   /* /v1/chat/completions: the request, owned. */
    char *body; /* The upstream request (JSON), always asking for usage when streaming. */
    size_t body_len;
    char *prompt; /* The last user message's text, for mock answers. */
    size_t prompt_len;
    uint32_t max_output;     /* The output it reserves of its quota (output_limit in openai.c),
                              * or 0 for CHAT_OUTPUT_RESERVE_DEFAULT. */
    uint32_t input_estimate; /* Input tokens by the rule of thumb (over the whole upstream request
                              * body: messages, tools, schemas), when the backend says none. */
    uint64_t input_bound;    /* See chat_call_input_bound. */
};

/* Builds the call for a /v1/chat request. */
void chat_call_from_konnect(const struct chat_request *req, const char *default_model,
                            struct chat_call *out);

/* Validates a /v1/chat/completions body: a JSON object with a non-empty "messages" array of
 * objects with a string "role", an optional "model" (default_model when absent), an optional
 * boolean "stream" and an optional "stream_options" object; any other member goes to the backend
 * as it is, except those that change what an answer costs the operator or touch its data (see
 * enum plan_param), refused with KN_ERR_UNSUPPORTED_PARAMETER unless `allowed` has their bit.
 * Returns 0, or -1 with *err filled. */
int chat_call_from_openai(const char *body, size_t len, const char *default_model, uint32_t allowed,
                          struct chat_call *out, struct chat_error *err);

/* Writes the upstream request for the backend's model name `backend_model` into c->body and
 * estimates its input tokens. Needed only for calls that go to the backend. */
void chat_call_prepare(struct chat_call *c, const char *backend_model);

void chat_call_cleanup(struct chat_call *c);

/* The least an image, audio or file part sent as a data URL reserves of the token quota. */
#define CHAT_MEDIA_RESERVE_MIN 1024

/* What a live request reserves of its token quota for its input (chat_call_prepare): one token
 * a byte of the upstream request, since no tokenizer makes a token of less than a byte of text;
 * but its messages' media parts sent as data URLs (images, audio, files), whose tokens the model
 * counts its own way, a token for four of their bytes and at least CHAT_MEDIA_RESERVE_MIN each.
 * (The chat template's few tokens of its own are not in the bytes.) input_estimate, a rule of
 * thumb of four bytes a token, is for billing when the backend reports no usage: a prompt of
 * one-letter words is nearer two bytes a token. */
static inline uint64_t chat_call_input_bound(const struct chat_call *c)
{
    return c->input_bound;
}

/* The most tokens a backend may report for one count of one request. More, a negative or a
 * fractional count is not usage but a broken backend: such usage is ignored (logged, and the
 * request billed by estimate; README "Billing rules"). */
#define CHAT_USAGE_MAX 10000000

/* The output tokens a live request reserves of its account's token quota at admission when it
 * names no limit the backend is sure to honour (max_tokens); with its input estimate. */
#define CHAT_OUTPUT_RESERVE_DEFAULT 4096

/* What the backend answered. Strings point into `root`, which chat_result_cleanup releases. */
struct chat_result {
    json_t *root;
    const char *content;
    size_t content_len;
    const char *finish_reason; /* "stop" when the backend gave none. */
    const char *model;         /* The backend's model name, or NULL. */
    int has_usage;
    int usage_invalid; /* The backend sent usage that cannot be read (see CHAT_USAGE_MAX). */
    uint32_t input_tokens, output_tokens;
    size_t generated_bytes; /* Of every choice: content, reasoning, refusal, tool calls. */
};

/* Serializes doc as compact JSON. Returns a string to free() and its length in *len. */
char *chat_json_dump(json_t *doc, size_t *len);

/* Parses a non-streaming chat completion. Returns 0, or -1 when it is not one (not JSON, no
 * choices, no message). */
int chat_result_parse(const char *body, size_t len, struct chat_result *out);
void chat_result_cleanup(struct chat_result *r);

/* Konnect's answer to /v1/chat. Returns a string to free() and its length in *len. */
char *chat_konnect_response(const char *id, int64_t created, const char *model, int livemode,
                            const char *content, size_t content_len, const char *finish_reason,
                            uint32_t input_tokens, uint32_t output_tokens, size_t *len);

/* OpenAI's chat.completion document, for test keys and for backends that gave no usage (then
 * `base` is the backend's document to which the usage is added; NULL builds a new one). */
char *chat_openai_completion(json_t *base, const char *id, int64_t created, const char *model,
                             const char *content, size_t content_len, uint32_t input_tokens,
                             uint32_t output_tokens, size_t *len);

/* One streamed event from the backend. */
struct chat_chunk {
    json_t *root;
    int done;            /* "data: [DONE]" */
    const char *content; /* The first choice's delta text, or NULL. */
    size_t content_len;
    const char *finish_reason; /* Or NULL. */
    const char *model;
    int has_choices;
    int has_usage;
    int usage_invalid; /* As in struct chat_result. */
    uint32_t input_tokens, output_tokens;
    size_t generated_bytes; /* Generated text in every choice's delta, as in chat_result. */
};

/* The output tokens billed for one streamed event that a backend reported no usage for: about
 * 4 bytes of generated text a token, and at least 1 when it generated anything. */
uint32_t chat_event_tokens(size_t generated_bytes);

/* Parses one event's data. Returns 0, or -1 when it is neither [DONE] nor a JSON object. */
int chat_chunk_parse(const char *data, size_t len, struct chat_chunk *out);
void chat_chunk_cleanup(struct chat_chunk *c);

/* Server-Sent Events framing: collects bytes and hands out each event's data (the "data:" lines
 * joined by "\n"); comments, "event:", "id:" and "retry:" lines are skipped. */
struct sse_parser {
    char *buf;
    size_t len, cap, max;
};

void sse_init(struct sse_parser *p, size_t max_event);
void sse_free(struct sse_parser *p);
/* Feeds n bytes, calling cb for each complete event's data; stops when cb returns non-zero and
 * returns that value. Returns -1 when an event grows beyond max_event, 0 otherwise. */
int sse_feed(struct sse_parser *p, const char *bytes, size_t n,
             int (*cb)(void *ud, const char *data, size_t len), void *ud);

/* Streamed events written to clients. Each returns a malloc'ed string and its length. */
/* /v1/chat: a piece of the answer. */
char *chat_konnect_delta_event(const char *id, int64_t created, const char *model, int livemode,
                               const char *content, size_t content_len, size_t *len);
/* /v1/chat: the last event, with the finish reason ("stop" when it is not valid UTF-8) and the
 * usage, then [DONE]. NULL only when the model name is not valid UTF-8. */
char *chat_konnect_final_event(const char *id, int64_t created, const char *model, int livemode,
                               const char *finish_reason, uint32_t input_tokens,
                               uint32_t output_tokens, size_t *len);
/* /v1/chat/completions: one chat.completion.chunk with a content delta (role first when
 * `first`), or with finish_reason when content is NULL. */
char *chat_openai_chunk_event(const char *id, int64_t created, const char *model, int first,
                              const char *content, size_t content_len, const char *finish_reason,
                              size_t *len);
/* /v1/chat/completions: the usage chunk (empty choices). */
char *chat_openai_usage_event(const char *id, int64_t created, const char *model,
                              uint32_t input_tokens, uint32_t output_tokens, size_t *len);
/* An error in the middle of a stream: data: {"error": ...}. `error_json` is kn_error_json's. */
char *chat_error_event(const char *error_json, size_t error_len, size_t *len);

#endif
