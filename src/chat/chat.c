#include "chat/chat.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/redact.h"
#include "core/util.h"

static void set_error(struct chat_error *err, enum kn_err code, const char *param, const char *fmt,
                      const char *arg)
{
    err->err = code;
    err->param = param;
    snprintf(err->message, sizeof(err->message), fmt, arg);
}

/* Drops a UTF-8 sequence cut short at the end of s (the names come from valid UTF-8, so only
 * truncation can leave one). */
static void trim_partial_utf8(char *s)
{
    size_t n = strlen(s), k = n, want;

    while (k > 0 && ((unsigned char)s[k - 1] & 0xC0) == 0x80)
        k--;
    if (k == 0 || (unsigned char)s[k - 1] < 0xC0)
        return;
    unsigned char lead = (unsigned char)s[k - 1];
    want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
    if (n - (k - 1) < want)
        s[k - 1] = '\0';
}

int chat_valid_model(const char *s, size_t len)
{
    if (len == 0 || len > CHAT_MODEL_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

int chat_request_parse(const char *body, size_t len, struct chat_request *req,
                       struct chat_error *err)
{
    json_error_t jerr;
    json_t *root, *v;
    const char *name;

    memset(req, 0, sizeof(*req));
    /* JSON_DISABLE_EOF_CHECK stays off: trailing garbage after the object is an error. */
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        /* jansson's text quotes the offending bytes, which may be a cut UTF-8 sequence or a
         * secret; the position is enough to find the mistake. */
        char where[64];
        if (len == 0)
            snprintf(where, sizeof(where), "%s", "it is empty");
        else
            snprintf(where, sizeof(where), "error at line %d, column %d", jerr.line, jerr.column);
        set_error(err, KN_ERR_INVALID_JSON, NULL, "The request body is not valid JSON (%s).",
                  where);
        return -1;
    }
    if (!json_is_object(root)) {
        set_error(err, KN_ERR_INVALID_JSON, NULL, "%s",
                  "The request body must be a JSON object such as {\"message\": \"Hello\"}.");
        goto fail;
    }
    json_object_foreach(root, name, v)
    {
        if (strcmp(name, "message") == 0) {
            if (!json_is_string(v)) {
                set_error(err, KN_ERR_INVALID_PARAMETER, "message", "%s",
                          "'message' must be a string.");
                goto fail;
            }
            req->message = json_string_value(v);
            req->message_len = json_string_length(v);
        } else if (strcmp(name, "model") == 0) {
            if (!json_is_string(v) ||
                !chat_valid_model(json_string_value(v), json_string_length(v))) {
                set_error(err, KN_ERR_INVALID_PARAMETER, "model", "%s",
                          "'model' must be a string of 1 to 128 printable ASCII characters without "
                          "spaces.");
                goto fail;
            }
            req->model = json_string_value(v);
            req->model_len = json_string_length(v);
        } else if (strcmp(name, "stream") == 0) {
            if (!json_is_boolean(v)) {
                set_error(err, KN_ERR_INVALID_PARAMETER, "stream", "%s",
                          "'stream' must be true or false.");
                goto fail;
            }
            req->stream = json_is_true(v);
        } else {
            /* The parameter name is echoed back, so it is bounded: a client controls it. */
            static _Thread_local char pname[65];
            redact_copy(pname, sizeof(pname), name);
            trim_partial_utf8(pname);
            set_error(err, KN_ERR_UNKNOWN_PARAMETER, pname, "Unknown parameter: '%s'.", pname);
            goto fail;
        }
    }
    if (req->message == NULL) {
        set_error(err, KN_ERR_MISSING_PARAMETER, "message", "%s",
                  "Missing required parameter: 'message'.");
        goto fail;
    }
    if (req->message_len == 0 || req->message_len > CHAT_MESSAGE_MAX) {
        set_error(err, KN_ERR_INVALID_PARAMETER, "message", "%s",
                  "'message' must be between 1 and 32768 bytes of UTF-8 text.");
        goto fail;
    }
    req->root = root;
    return 0;
fail:
    json_decref(root);
    memset(req, 0, sizeof(*req));
    return -1;
}

void chat_request_cleanup(struct chat_request *req)
{
    if (req->root != NULL)
        json_decref(req->root);
    memset(req, 0, sizeof(*req));
}

uint32_t chat_estimate_tokens(const char *text, size_t len)
{
    (void)text;
    if (len == 0)
        return 0;
    return (uint32_t)((len + 3) / 4);
}

/* Writes s (printable ASCII) as the body of a JSON string: quotes and backslashes escaped. */
static size_t escape_ascii(const char *s, char *out)
{
    size_t o = 0;
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            out[o++] = '\\';
        out[o++] = *s;
    }
    out[o] = '\0';
    return o;
}

size_t chat_mock_content(const char *message, size_t message_len, const char *model, char *out,
                         size_t outsize)
{
    static const char *const replies[] = {
        "Hello! This is where your model's answer will appear.",
        "Your request was authenticated and validated successfully.",
        "Everything is wired up: switch to a live key for real model output.",
        "Test keys are rate limited and never billed.",
    };
    unsigned char digest[16];
    char fp[33];
    int n;

    /* The content depends only on the model and the message, so the same input always gives the
     * same answer. */
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof(digest));
    crypto_generichash_update(&st, (const unsigned char *)model, strlen(model));
    crypto_generichash_update(&st, (const unsigned char *)"\0", 1);
    crypto_generichash_update(&st, (const unsigned char *)message, message_len);
    crypto_generichash_final(&st, digest, sizeof(digest));
    sodium_bin2hex(fp, sizeof(fp), digest, 4);
    n = snprintf(out, outsize,
                 "[mock response: test key, no model was called] %s (message of %zu bytes, "
                 "fingerprint %s)",
                 replies[digest[4] % (sizeof(replies) / sizeof(replies[0]))], message_len, fp);
    if (n < 0 || (size_t)n >= outsize)
        kn_fatal("mock content too long");
    return (size_t)n;
}

char *chat_mock_response(const struct chat_request *req, const char *model, const char *id,
                         int64_t created, size_t *len)
{
    char content[512], emodel[2 * CHAT_MODEL_MAX + 1];
    size_t model_len = strlen(model), size,
           clen =
               chat_mock_content(req->message, req->message_len, model, content, sizeof(content));
    char *out;
    int n;

    /* Every piece is ASCII that needs no escaping but the model name (printable ASCII, checked
     * by the caller or the configuration), so the document is written directly: this is the hot
     * path for test keys. */
    if (model_len > CHAT_MODEL_MAX)
        kn_fatal("model name too long");
    escape_ascii(model, emodel);
    size = 256 + strlen(id) + strlen(emodel) + clen;
    out = kn_malloc(size);
    n = snprintf(out, size,
                 "{\"id\":\"%s\",\"object\":\"chat.response\",\"created\":%lld,\"model\":\"%s\","
                 "\"livemode\":false,\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},"
                 "\"finish_reason\":\"stop\",\"usage\":{\"input_tokens\":%u,\"output_tokens\":%u}}",
                 id, (long long)created, emodel, content,
                 chat_estimate_tokens(req->message, req->message_len),
                 chat_estimate_tokens(content, clen));
    if (n < 0 || (size_t)n >= size)
        kn_fatal("mock response too long");
    *len = (size_t)n;
    return out;
}
