#include "chat/openai.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jsonw.h"
#include "core/redact.h"
#include "core/util.h"

#define MESSAGES_MAX 4096

static uint32_t clamp_tokens(json_int_t v)
{
    return v < 0 ? 0 : v > (json_int_t)UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* Reads OpenAI's usage object; returns 1 when it holds both counts. */
static int read_usage(json_t *usage, uint32_t *in, uint32_t *out)
{
    json_t *p = json_object_get(usage, "prompt_tokens"),
           *c = json_object_get(usage, "completion_tokens");
    if (!json_is_object(usage) || !json_is_integer(p) || !json_is_integer(c))
        return 0;
    *in = clamp_tokens(json_integer_value(p));
    *out = clamp_tokens(json_integer_value(c));
    return 1;
}

static char *dump(json_t *doc, size_t *len)
{
    char *s = json_dumps(doc, JSON_COMPACT);
    if (s == NULL)
        kn_fatal("cannot serialize JSON");
    *len = strlen(s);
    return s;
}

/* "data: <json>\n\n" */
static char *event_of(json_t *doc, size_t *len)
{
    size_t n;
    char *json = dump(doc, &n), *out = kn_malloc(n + 9);
    memcpy(out, "data: ", 6);
    memcpy(out + 6, json, n);
    memcpy(out + 6 + n, "\n\n", 3);
    free(json);
    *len = n + 8;
    return out;
}

void chat_call_from_konnect(const struct chat_request *req, const char *default_model,
                            struct chat_call *out)
{
    struct jsonw w;

    memset(out, 0, sizeof(*out));
    out->api = CHAT_API_KONNECT;
    out->stream = req->stream;
    if (req->model != NULL) {
        memcpy(out->model, req->model, req->model_len);
        out->model[req->model_len] = '\0';
    } else {
        kn_strlcpy(out->model, default_model, sizeof(out->model));
    }
    jsonw_init(&w, req->message_len + 160);
    jsonw_lit(&w, "{\"model\":");
    jsonw_str(&w, out->model, strlen(out->model));
    jsonw_lit(&w, ",\"messages\":[{\"role\":\"user\",\"content\":");
    jsonw_str(&w, req->message, req->message_len);
    if (req->stream)
        jsonw_lit(&w, "}],\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    else
        jsonw_lit(&w, "}],\"stream\":false}");
    if ((out->body = jsonw_finish(&w, &out->body_len)) == NULL)
        kn_fatal("cannot build the upstream request");
    out->prompt = kn_malloc(req->message_len + 1);
    memcpy(out->prompt, req->message, req->message_len);
    out->prompt[req->message_len] = '\0';
    out->prompt_len = req->message_len;
    out->input_estimate = chat_estimate_tokens(req->message, req->message_len);
}

static void set_err(struct chat_error *err, enum kn_err code, const char *param, const char *msg)
{
    err->err = code;
    err->param = param;
    snprintf(err->message, sizeof(err->message), "%s", msg);
}

/* The text of a message's content: a string, or the "text" parts of an array. */
static size_t content_text(json_t *content, char **out)
{
    size_t n = 0;

    *out = NULL;
    if (json_is_string(content)) {
        n = json_string_length(content);
        *out = kn_malloc(n + 1);
        memcpy(*out, json_string_value(content), n + 1);
    } else if (json_is_array(content)) {
        size_t i;
        json_t *part;
        json_array_foreach(content, i, part)
        {
            json_t *t = json_object_get(part, "text");
            if (!json_is_string(t))
                continue;
            size_t l = json_string_length(t);
            *out = kn_realloc(*out, n + l + 2);
            if (n > 0)
                (*out)[n++] = '\n';
            memcpy(*out + n, json_string_value(t), l);
            n += l;
            (*out)[n] = '\0';
        }
    }
    return n;
}

int chat_call_from_openai(const char *body, size_t len, const char *default_model,
                          struct chat_call *out, struct chat_error *err)
{
    json_error_t jerr;
    json_t *root, *messages, *v, *m;
    size_t i, input_bytes = 0;

    memset(out, 0, sizeof(*out));
    out->api = CHAT_API_OPENAI;
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        char msg[128];
        if (len == 0)
            snprintf(msg, sizeof(msg), "The request body is not valid JSON (it is empty).");
        else
            snprintf(msg, sizeof(msg),
                     "The request body is not valid JSON (error at line %d, column %d).", jerr.line,
                     jerr.column);
        set_err(err, KN_ERR_INVALID_JSON, NULL, msg);
        return -1;
    }
    if (!json_is_object(root)) {
        set_err(err, KN_ERR_INVALID_JSON, NULL,
                "The request body must be a JSON object with \"model\" and \"messages\".");
        goto fail;
    }
    messages = json_object_get(root, "messages");
    if (messages == NULL) {
        set_err(err, KN_ERR_MISSING_PARAMETER, "messages",
                "Missing required parameter: 'messages'.");
        goto fail;
    }
    if (!json_is_array(messages) || json_array_size(messages) == 0 ||
        json_array_size(messages) > MESSAGES_MAX) {
        set_err(err, KN_ERR_INVALID_PARAMETER, "messages",
                "'messages' must be an array of 1 to 4096 messages.");
        goto fail;
    }
    json_array_foreach(messages, i, m)
    {
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        if (!json_is_object(m) || !json_is_string(role)) {
            set_err(err, KN_ERR_INVALID_PARAMETER, "messages",
                    "Each message must be an object with a string 'role'.");
            goto fail;
        }
        if (content != NULL && !json_is_string(content) && !json_is_array(content) &&
            !json_is_null(content)) {
            set_err(err, KN_ERR_INVALID_PARAMETER, "messages",
                    "A message's 'content' must be a string, an array of parts, or null.");
            goto fail;
        }
        char *text;
        size_t n = content_text(content, &text);
        input_bytes += n;
        if (strcmp(json_string_value(role), "user") == 0 && text != NULL) {
            free(out->prompt);
            out->prompt = text;
            out->prompt_len = n;
        } else {
            free(text);
        }
    }
    if ((v = json_object_get(root, "model")) != NULL) {
        if (!json_is_string(v) || !chat_valid_model(json_string_value(v), json_string_length(v))) {
            set_err(err, KN_ERR_INVALID_PARAMETER, "model",
                    "'model' must be a string of 1 to 128 printable ASCII characters without "
                    "spaces.");
            goto fail;
        }
        kn_strlcpy(out->model, json_string_value(v), sizeof(out->model));
    } else {
        kn_strlcpy(out->model, default_model, sizeof(out->model));
        json_object_set_new(root, "model", json_string(default_model));
    }
    if ((v = json_object_get(root, "stream")) != NULL && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            set_err(err, KN_ERR_INVALID_PARAMETER, "stream", "'stream' must be true or false.");
            goto fail;
        }
        out->stream = json_is_true(v);
    }
    if ((v = json_object_get(root, "stream_options")) != NULL && !json_is_null(v)) {
        json_t *iu = json_object_get(v, "include_usage");
        if (!json_is_object(v) || (iu != NULL && !json_is_boolean(iu))) {
            set_err(err, KN_ERR_INVALID_PARAMETER, "stream_options",
                    "'stream_options' must be an object such as {\"include_usage\": true}.");
            goto fail;
        }
        out->include_usage = json_is_true(iu);
    }
    if (out->stream) {
        /* Konnect bills from the usage the backend reports, so it always asks for it; the
         * client sees the usage chunk only if it asked too. */
        json_t *so = json_object_get(root, "stream_options");
        if (!json_is_object(so)) {
            so = json_object();
            json_object_set_new(root, "stream_options", so);
        }
        json_object_set_new(so, "include_usage", json_true());
    } else {
        json_object_del(root, "stream_options");
    }
    if (out->prompt == NULL) {
        out->prompt = kn_strdup("");
        out->prompt_len = 0;
    }
    out->input_estimate = chat_estimate_tokens("", input_bytes);
    out->body = dump(root, &out->body_len);
    json_decref(root);
    return 0;
fail:
    json_decref(root);
    chat_call_cleanup(out);
    return -1;
}

void chat_call_cleanup(struct chat_call *c)
{
    free(c->body);
    free(c->prompt);
    memset(c, 0, sizeof(*c));
}

int chat_result_parse(const char *body, size_t len, struct chat_result *out)
{
    json_t *choices, *choice, *message, *content, *v;

    memset(out, 0, sizeof(*out));
    out->root = json_loadb(body, len, 0, NULL);
    if (!json_is_object(out->root))
        goto fail;
    choices = json_object_get(out->root, "choices");
    choice = json_array_get(choices, 0);
    message = json_object_get(choice, "message");
    content = json_object_get(message, "content");
    if (!json_is_object(message) || (!json_is_string(content) && !json_is_null(content)))
        goto fail;
    out->content = json_is_string(content) ? json_string_value(content) : "";
    out->content_len = json_is_string(content) ? json_string_length(content) : 0;
    v = json_object_get(choice, "finish_reason");
    out->finish_reason = json_is_string(v) ? json_string_value(v) : "stop";
    v = json_object_get(out->root, "model");
    out->model = json_is_string(v) ? json_string_value(v) : NULL;
    out->has_usage =
        read_usage(json_object_get(out->root, "usage"), &out->input_tokens, &out->output_tokens);
    return 0;
fail:
    chat_result_cleanup(out);
    return -1;
}

void chat_result_cleanup(struct chat_result *r)
{
    if (r->root != NULL)
        json_decref(r->root);
    memset(r, 0, sizeof(*r));
}

char *chat_konnect_response(const char *id, int64_t created, const char *model, int livemode,
                            const char *content, size_t content_len, const char *finish_reason,
                            uint32_t input_tokens, uint32_t output_tokens, size_t *len)
{
    struct jsonw w;

    jsonw_init(&w, content_len + 256);
    jsonw_lit(&w, "{\"id\":");
    jsonw_str(&w, id, strlen(id));
    jsonw_lit(&w, ",\"object\":\"chat.response\",\"created\":");
    jsonw_int(&w, created);
    jsonw_lit(&w, ",\"model\":");
    jsonw_str(&w, model, strlen(model));
    if (livemode)
        jsonw_lit(&w, ",\"livemode\":true,\"message\":{\"role\":\"assistant\",\"content\":");
    else
        jsonw_lit(&w, ",\"livemode\":false,\"message\":{\"role\":\"assistant\",\"content\":");
    jsonw_str(&w, content, content_len);
    jsonw_lit(&w, "},\"finish_reason\":");
    jsonw_str(&w, finish_reason, strlen(finish_reason));
    jsonw_lit(&w, ",\"usage\":{\"input_tokens\":");
    jsonw_int(&w, input_tokens);
    jsonw_lit(&w, ",\"output_tokens\":");
    jsonw_int(&w, output_tokens);
    jsonw_lit(&w, "}}");
    /* NULL for content that is not UTF-8: the backend's fault. */
    return jsonw_finish(&w, len);
}

static json_t *usage_object(uint32_t in, uint32_t out)
{
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)in, "completion_tokens",
                     (json_int_t)out, "total_tokens", (json_int_t)in + (json_int_t)out);
}

char *chat_openai_completion(json_t *base, const char *id, int64_t created, const char *model,
                             const char *content, size_t content_len, uint32_t input_tokens,
                             uint32_t output_tokens, size_t *len)
{
    json_t *doc = base != NULL ? json_incref(base)
                               : json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:{s:s, s:s%}, s:s}]}",
                                           "id", id, "object", "chat.completion", "created",
                                           (json_int_t)created, "model", model, "choices", "index",
                                           0, "message", "role", "assistant", "content", content,
                                           content_len, "finish_reason", "stop");
    if (doc == NULL)
        return NULL;
    json_object_set_new(doc, "usage", usage_object(input_tokens, output_tokens));
    char *s = dump(doc, len);
    json_decref(doc);
    return s;
}

int chat_chunk_parse(const char *data, size_t len, struct chat_chunk *out)
{
    json_t *choices, *choice, *delta, *v;

    memset(out, 0, sizeof(*out));
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        out->done = 1;
        return 0;
    }
    out->root = json_loadb(data, len, 0, NULL);
    if (!json_is_object(out->root)) {
        chat_chunk_cleanup(out);
        return -1;
    }
    choices = json_object_get(out->root, "choices");
    choice = json_array_get(choices, 0);
    out->has_choices = json_is_object(choice);
    delta = json_object_get(choice, "delta");
    v = json_object_get(delta, "content");
    if (json_is_string(v)) {
        out->content = json_string_value(v);
        out->content_len = json_string_length(v);
    }
    v = json_object_get(choice, "finish_reason");
    out->finish_reason = json_is_string(v) ? json_string_value(v) : NULL;
    v = json_object_get(out->root, "model");
    out->model = json_is_string(v) ? json_string_value(v) : NULL;
    out->has_usage =
        read_usage(json_object_get(out->root, "usage"), &out->input_tokens, &out->output_tokens);
    return 0;
}

void chat_chunk_cleanup(struct chat_chunk *c)
{
    if (c->root != NULL)
        json_decref(c->root);
    memset(c, 0, sizeof(*c));
}

void sse_init(struct sse_parser *p, size_t max_event)
{
    memset(p, 0, sizeof(*p));
    p->max = max_event;
}

void sse_free(struct sse_parser *p)
{
    free(p->buf);
    memset(p, 0, sizeof(*p));
}

/* Hands out the data of the event in ev[0..n) (without its blank line). */
static int emit_event(const char *ev, size_t n, int (*cb)(void *, const char *, size_t), void *ud)
{
    char *data = NULL;
    size_t dlen = 0;
    int have = 0, ret = 0;

    for (size_t pos = 0; pos < n;) {
        const char *line = ev + pos, *nl = memchr(line, '\n', n - pos);
        size_t llen = nl != NULL ? (size_t)(nl - line) : n - pos;
        pos += llen + (nl != NULL);
        if (llen > 0 && line[llen - 1] == '\r')
            llen--;
        if (llen >= 5 && memcmp(line, "data:", 5) == 0) {
            size_t skip = llen > 5 && line[5] == ' ' ? 6 : 5;
            data = kn_realloc(data, dlen + (llen - skip) + 2);
            if (have)
                data[dlen++] = '\n';
            memcpy(data + dlen, line + skip, llen - skip);
            dlen += llen - skip;
            have = 1;
        }
    }
    if (have)
        ret = cb(ud, data, dlen);
    free(data);
    return ret;
}

int sse_feed(struct sse_parser *p, const char *bytes, size_t n,
             int (*cb)(void *ud, const char *data, size_t len), void *ud)
{
    size_t start = 0, scan;

    if (p->len + n > p->cap) {
        p->cap = (p->len + n) * 2;
        p->buf = kn_realloc(p->buf, p->cap);
    }
    memcpy(p->buf + p->len, bytes, n);
    scan = p->len > 3 ? p->len - 3 : 0;
    p->len += n;
    /* An event ends at a blank line: "\n\n", or "\r\n\r\n" (handled as lines ending in "\r"). */
    for (size_t i = scan; i + 1 < p->len; i++) {
        size_t end = 0;
        if (p->buf[i] == '\n' && p->buf[i + 1] == '\n')
            end = 2;
        else if (p->buf[i] == '\n' && p->buf[i + 1] == '\r' && i + 2 < p->len &&
                 p->buf[i + 2] == '\n')
            end = 3;
        if (end == 0 || i < start)
            continue;
        int r = emit_event(p->buf + start, i - start, cb, ud);
        start = i + end;
        i = start - 1;
        if (r != 0) {
            memmove(p->buf, p->buf + start, p->len - start);
            p->len -= start;
            return r;
        }
    }
    memmove(p->buf, p->buf + start, p->len - start);
    p->len -= start;
    return p->len > p->max ? -1 : 0;
}

char *chat_konnect_delta_event(const char *id, int64_t created, const char *model, int livemode,
                               const char *content, size_t content_len, size_t *len)
{
    json_t *doc = json_pack("{s:s, s:s, s:I, s:s, s:b, s:{s:s%}}", "id", id, "object",
                            "chat.response.chunk", "created", (json_int_t)created, "model", model,
                            "livemode", livemode, "delta", "content", content, content_len);
    if (doc == NULL)
        return NULL;
    char *s = event_of(doc, len);
    json_decref(doc);
    return s;
}

char *chat_konnect_final_event(const char *id, int64_t created, const char *model, int livemode,
                               const char *finish_reason, uint32_t input_tokens,
                               uint32_t output_tokens, size_t *len)
{
    json_t *doc =
        json_pack("{s:s, s:s, s:I, s:s, s:b, s:{}, s:s, s:{s:I, s:I}}", "id", id, "object",
                  "chat.response.chunk", "created", (json_int_t)created, "model", model, "livemode",
                  livemode, "delta", "finish_reason", finish_reason, "usage", "input_tokens",
                  (json_int_t)input_tokens, "output_tokens", (json_int_t)output_tokens);
    size_t n;
    char *ev = event_of(doc, &n);
    json_decref(doc);
    ev = kn_realloc(ev, n + 15);
    memcpy(ev + n, "data: [DONE]\n\n", 15);
    *len = n + 14;
    return ev;
}

char *chat_openai_chunk_event(const char *id, int64_t created, const char *model, int first,
                              const char *content, size_t content_len, const char *finish_reason,
                              size_t *len)
{
    json_t *delta = json_object();
    if (first)
        json_object_set_new(delta, "role", json_string("assistant"));
    if (content != NULL) {
        json_t *c = json_stringn(content, content_len);
        if (c == NULL) {
            json_decref(delta);
            return NULL;
        }
        json_object_set_new(delta, "content", c);
    }
    json_t *doc = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:s?}]}", "id", id, "object",
                            "chat.completion.chunk", "created", (json_int_t)created, "model", model,
                            "choices", "index", 0, "delta", delta, "finish_reason", finish_reason);
    json_t *choice = json_array_get(json_object_get(doc, "choices"), 0);
    if (finish_reason == NULL)
        json_object_set_new(choice, "finish_reason", json_null());
    char *s = event_of(doc, len);
    json_decref(doc);
    return s;
}

char *chat_openai_usage_event(const char *id, int64_t created, const char *model,
                              uint32_t input_tokens, uint32_t output_tokens, size_t *len)
{
    json_t *doc = json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", id, "object",
                            "chat.completion.chunk", "created", (json_int_t)created, "model", model,
                            "choices", "usage", usage_object(input_tokens, output_tokens));
    char *s = event_of(doc, len);
    json_decref(doc);
    return s;
}

char *chat_error_event(const char *error_json, size_t error_len, size_t *len)
{
    char *out = kn_malloc(error_len + 9);
    memcpy(out, "data: ", 6);
    memcpy(out + 6, error_json, error_len);
    memcpy(out + 6 + error_len, "\n\n", 3);
    *len = error_len + 8;
    return out;
}

/* Appends s[0..n) to the growing buffer *out. */
static void append(char **out, size_t *len, const char *s, size_t n)
{
    *out = kn_realloc(*out, *len + n + 1);
    memcpy(*out + *len, s, n);
    *len += n;
    (*out)[*len] = '\0';
}

char *chat_mock_answer(const struct chat_call *c, const char *id, int64_t created, size_t *len)
{
    char content[512];
    size_t clen = chat_mock_content(c->prompt, c->prompt_len, c->model, content, sizeof(content));
    uint32_t in = c->input_estimate, out = chat_estimate_tokens(content, clen);
    char *doc = NULL, *ev;
    size_t n = 0, elen;

    if (!c->stream) {
        if (c->api == CHAT_API_OPENAI)
            return chat_openai_completion(NULL, id, created, c->model, content, clen, in, out, len);
        return chat_konnect_response(id, created, c->model, 0, content, clen, "stop", in, out, len);
    }
    /* Streamed word by word, like a model. */
    if (c->api == CHAT_API_OPENAI) {
        ev = chat_openai_chunk_event(id, created, c->model, 1, "", 0, NULL, &elen);
        append(&doc, &n, ev, elen);
        free(ev);
    }
    for (size_t i = 0; i < clen;) {
        size_t j = i;
        while (j < clen && content[j] != ' ')
            j++;
        if (j < clen)
            j++;
        ev =
            c->api == CHAT_API_OPENAI
                ? chat_openai_chunk_event(id, created, c->model, 0, content + i, j - i, NULL, &elen)
                : chat_konnect_delta_event(id, created, c->model, 0, content + i, j - i, &elen);
        append(&doc, &n, ev, elen);
        free(ev);
        i = j;
    }
    if (c->api == CHAT_API_OPENAI) {
        ev = chat_openai_chunk_event(id, created, c->model, 0, NULL, 0, "stop", &elen);
        append(&doc, &n, ev, elen);
        free(ev);
        if (c->include_usage) {
            ev = chat_openai_usage_event(id, created, c->model, in, out, &elen);
            append(&doc, &n, ev, elen);
            free(ev);
        }
        append(&doc, &n, "data: [DONE]\n\n", 14);
    } else {
        ev = chat_konnect_final_event(id, created, c->model, 0, "stop", in, out, &elen);
        append(&doc, &n, ev, elen);
        free(ev);
    }
    *len = n;
    return doc;
}
