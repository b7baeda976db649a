/* The mock answers of test keys; see mock.h. */
#include "chat/mock.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/openai.h"
#include "core/util.h"

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

    /* The content depends only on the model and the message, so the same input always gives the
     * same answer. */
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof(digest));
    crypto_generichash_update(&st, (const unsigned char *)model, strlen(model));
    crypto_generichash_update(&st, (const unsigned char *)"\0", 1);
    crypto_generichash_update(&st, (const unsigned char *)message, message_len);
    crypto_generichash_final(&st, digest, sizeof(digest));
    sodium_bin2hex(fp, sizeof(fp), digest, 4);
    /* "[mock response: test key, no model was called] REPLY (message of N bytes, fingerprint
     * FP)", put together without printf: it is written for every test-key answer. */
    const char *reply = replies[digest[4] % (sizeof(replies) / sizeof(replies[0]))];
    char num[KN_DECIMAL_MAX];
    size_t numlen = kn_decimal(num, (int64_t)message_len);
    const struct {
        const char *s;
        size_t len;
    } parts[] = {
#define LIT(s) {s, sizeof(s) - 1}
        LIT("[mock response: test key, no model was called] "),
        {reply, strlen(reply)},
        LIT(" (message of "),
        {num, numlen},
        LIT(" bytes, fingerprint "),
        {fp, 8},
        LIT(")"),
#undef LIT
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        if (n + parts[i].len >= outsize)
            kn_fatal("mock content too long");
        memcpy(out + n, parts[i].s, parts[i].len);
        n += parts[i].len;
    }
    out[n] = '\0';
    return n;
}

/* Appends s[0..n) to the growing buffer *out. */
static void append(char **out, size_t *len, const char *s, size_t n)
{
    *out = kn_realloc(*out, *len + n + 1);
    memcpy(*out + *len, s, n);
    *len += n;
    (*out)[*len] = '\0';
}

char *chat_mock_answer(const struct chat_mock *c, const char *id, int64_t created, size_t *len)
{
    char content[512];
    size_t clen = chat_mock_content(c->prompt, c->prompt_len, c->model, content, sizeof(content));
    uint32_t in = c->input_tokens, out = chat_estimate_tokens(content, clen);
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
