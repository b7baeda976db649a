/* POST /v1/chat: request validation and token estimates; see chat.h. */
#include "chat/chat.h"

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
