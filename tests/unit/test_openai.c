/* The OpenAI protocol layer: upstream requests, backend answers, Server-Sent Events framing and the
 * events written to clients. */
#include <stdlib.h>

#include "chat/openai.h"
#include "chat/mock.h"
#include "unit.h"

struct collected {
    int n;
    char data[8][256];
};

static int collect(void *ud, const char *data, size_t len)
{
    struct collected *c = ud;
    if (c->n < 8 && len < sizeof(c->data[0])) {
        memcpy(c->data[c->n], data, len);
        c->data[c->n][len] = '\0';
    }
    c->n++;
    return 0;
}

static uint32_t allowed; /* The plan's allowed costly parameters, for openai(). */

static enum kn_err openai(const char *body, struct chat_call *out)
{
    struct chat_error e;
    if (chat_call_from_openai(body, strlen(body), "default-model", allowed, out, &e) == 0) {
        chat_call_prepare(out, out->model);
        return KN_OK;
    }
    return e.err;
}

/* Parameters that cost the operator more are refused unless the plan allows them. */
static void test_costly_parameters(void)
{
    static const char *const costly[][2] = {
        {"\"n\":2", "n"},
        {"\"best_of\":4", "best_of"},
        {"\"use_beam_search\":true", "use_beam_search"},
        {"\"models\":[\"gpt-4o\"]", "models"},
        {"\"route\":\"fallback\"", "route"},
        {"\"provider\":{\"order\":[\"x\"]}", "provider"},
        {"\"modalities\":\"audio\"", "modalities"},
        {"\"service_tier\":\"priority\"", "service_tier"},
        {"\"store\":true", "store"},
        {"\"metadata\":{\"a\":\"b\"}", "metadata"},
        {"\"web_search_options\":{}", "web_search_options"},
        {"\"audio\":{\"voice\":\"alloy\"}", "audio"},
        {"\"modalities\":[\"text\",\"audio\"]", "modalities"},
        {"\"prediction\":{\"type\":\"content\",\"content\":\"x\"}", "prediction"},
    };
    static const char *const harmless[] = {"\"n\":1",           "\"store\":false",
                                           "\"metadata\":null", "\"modalities\":[\"text\"]",
                                           "\"best_of\":1",     "\"use_beam_search\":false"};
    struct chat_call c;
    struct chat_error e;
    char body[256];

    for (size_t i = 0; i < sizeof(costly) / sizeof(costly[0]); i++) {
        snprintf(body, sizeof(body), "{%s,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                 costly[i][0]);
        CHECK(chat_call_from_openai(body, strlen(body), "m", 0, &c, &e) == -1 &&
              e.err == KN_ERR_UNSUPPORTED_PARAMETER && strcmp(e.param, costly[i][1]) == 0);
        CHECK(chat_call_from_openai(body, strlen(body), "m", 0xffff, &c, &e) == 0);
        chat_call_cleanup(&c);
    }
    for (size_t i = 0; i < sizeof(harmless) / sizeof(harmless[0]); i++) {
        snprintf(body, sizeof(body), "{%s,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                 harmless[i]);
        CHECK(chat_call_from_openai(body, strlen(body), "m", 0, &c, &e) == 0);
        chat_call_cleanup(&c);
    }
    /* The reservation is the smaller limit, sent in both fields; max_completion_tokens alone
     * (which some backends ignore) never reserves less than the default. */
    const char *b = "{\"max_tokens\":50,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    CHECK(chat_call_from_openai(b, strlen(b), "m", 0, &c, &e) == 0 && c.max_output == 50);
    chat_call_cleanup(&c);
    b = "{\"max_completion_tokens\":1,\"messages\":[{\"role\":\"user\"}]}";
    CHECK(chat_call_from_openai(b, strlen(b), "m", 0, &c, &e) == 0 &&
          c.max_output == CHAT_OUTPUT_RESERVE_DEFAULT);
    chat_call_cleanup(&c);
    b = "{\"max_completion_tokens\":9000,\"messages\":[{\"role\":\"user\"}]}";
    CHECK(chat_call_from_openai(b, strlen(b), "m", 0, &c, &e) == 0 && c.max_output == 9000);
    chat_call_cleanup(&c);
    b = "{\"max_completion_tokens\":7,\"max_tokens\":50,\"messages\":[{\"role\":\"user\"}]}";
    CHECK(chat_call_from_openai(b, strlen(b), "m", 0, &c, &e) == 0 && c.max_output == 7);
    /* The backend's name goes upstream, and the smaller limit in both fields. */
    chat_call_prepare(&c, "backend-name");
    CHECK(strstr(c.body, "\"model\":\"backend-name\"") != NULL);
    CHECK(strstr(c.body, "\"max_tokens\":7") != NULL &&
          strstr(c.body, "\"max_completion_tokens\":7") != NULL);
    chat_call_cleanup(&c);
    b = "{\"max_completion_tokens\":70,\"max_tokens\":5,\"messages\":[{\"role\":\"user\"}]}";
    CHECK(chat_call_from_openai(b, strlen(b), "m", 0, &c, &e) == 0 && c.max_output == 5);
    chat_call_cleanup(&c);
    /* Limits that are not positive whole numbers, and the backends' own names for them. */
    static const char *const bad[][2] = {
        {"\"max_tokens\":0", "max_tokens"},
        {"\"max_tokens\":\"100\"", "max_tokens"},
        {"\"max_tokens\":1.5", "max_tokens"},
        {"\"max_completion_tokens\":-1", "max_completion_tokens"},
        {"\"n_predict\":100000", "n_predict"},
        {"\"num_predict\":-1", "num_predict"},
        {"\"max_new_tokens\":100000", "max_new_tokens"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), "{%s,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                 bad[i][0]);
        CHECK(chat_call_from_openai(body, strlen(body), "m", 0xffff, &c, &e) == -1 &&
              strcmp(e.param, bad[i][1]) == 0);
    }
}

static void test_openai_requests(void)
{
    struct chat_call c;
    json_t *sent;

    CHECK(openai("{\"messages\":[{\"role\":\"user\",\"content\":\"Hi there\"}]}", &c) == KN_OK);
    CHECK_STR(c.model, "default-model");
    CHECK(!c.stream && c.input_estimate > 0);
    CHECK_STR(c.prompt, "Hi there");
    sent = json_loads(c.body, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(sent, "model")), "default-model");
    CHECK(json_object_get(sent, "stream_options") == NULL);
    json_decref(sent);
    chat_call_cleanup(&c);

    CHECK(openai("{\"model\":\"m\",\"stream\":true,\"temperature\":0.5,\"messages\":[{\"role\":"
                 "\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":[{\"type\":"
                 "\"text\",\"text\":\"part\"}]}]}",
                 &c) == KN_OK);
    CHECK(c.stream && !c.include_usage);
    CHECK_STR(c.prompt, "part");
    sent = json_loads(c.body, 0, NULL);
    /* Usage is always asked for when streaming; other parameters go through. */
    CHECK(json_is_true(json_object_get(json_object_get(sent, "stream_options"), "include_usage")));
    CHECK(json_real_value(json_object_get(sent, "temperature")) == 0.5);
    json_decref(sent);
    chat_call_cleanup(&c);

    CHECK(openai("{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                 &c) == KN_OK);
    CHECK(c.include_usage);
    chat_call_cleanup(&c);

    CHECK(openai("", &c) == KN_ERR_INVALID_JSON);
    CHECK(openai("[]", &c) == KN_ERR_INVALID_JSON);
    CHECK(openai("{}", &c) == KN_ERR_MISSING_PARAMETER);
    CHECK(openai("{\"messages\":[]}", &c) == KN_ERR_INVALID_PARAMETER);
    CHECK(openai("{\"messages\":[1]}", &c) == KN_ERR_INVALID_PARAMETER);
    CHECK(openai("{\"messages\":[{\"content\":\"no role\"}]}", &c) == KN_ERR_INVALID_PARAMETER);
    CHECK(openai("{\"messages\":[{\"role\":\"user\",\"content\":5}]}", &c) ==
          KN_ERR_INVALID_PARAMETER);
    CHECK(openai("{\"model\":\"has space\",\"messages\":[{\"role\":\"user\"}]}", &c) ==
          KN_ERR_INVALID_PARAMETER);
    CHECK(openai("{\"stream\":\"yes\",\"messages\":[{\"role\":\"user\"}]}", &c) ==
          KN_ERR_INVALID_PARAMETER);
    CHECK(openai("{\"stream_options\":5,\"messages\":[{\"role\":\"user\"}]}", &c) ==
          KN_ERR_INVALID_PARAMETER);
}

static void test_results(void)
{
    struct chat_result r;
    const char *ok = "{\"model\":\"m1\",\"choices\":[{\"message\":{\"role\":\"assistant\","
                     "\"content\":\"Hello\"},\"finish_reason\":\"length\"}],\"usage\":{"
                     "\"prompt_tokens\":3,\"completion_tokens\":5}}";

    CHECK(chat_result_parse(ok, strlen(ok), &r) == 0);
    CHECK(r.content_len == 5 && memcmp(r.content, "Hello", 5) == 0);
    CHECK_STR(r.finish_reason, "length");
    CHECK_STR(r.model, "m1");
    CHECK(r.has_usage && r.input_tokens == 3 && r.output_tokens == 5);
    chat_result_cleanup(&r);
    const char *null_content = "{\"choices\":[{\"message\":{\"content\":null}}]}";
    CHECK(chat_result_parse(null_content, strlen(null_content), &r) == 0);
    CHECK(r.content_len == 0 && !r.has_usage);
    chat_result_cleanup(&r);
    CHECK(chat_result_parse("{\"choices\": [", 13, &r) == -1);
    CHECK(chat_result_parse("{\"hello\":1}", 11, &r) == -1);
    CHECK(chat_result_parse("{\"choices\":[]}", 14, &r) == -1);
    const char *bad = "{\"choices\":[{\"message\":{\"content\":1}}]}";
    CHECK(chat_result_parse(bad, strlen(bad), &r) == -1);
}

static void test_sse(void)
{
    struct sse_parser p;
    struct collected c = {0};
    const char *a = "data: {\"a\":1}\n\n: comment\n\nevent: x\ndata: line1\ndata: line2\n\n";

    sse_init(&p, 64);
    /* Byte by byte: events may arrive cut anywhere. */
    for (size_t i = 0; i < strlen(a); i++)
        CHECK(sse_feed(&p, a + i, 1, collect, &c) == 0);
    CHECK(c.n == 2);
    CHECK_STR(c.data[0], "{\"a\":1}");
    CHECK_STR(c.data[1], "line1\nline2");
    CHECK(sse_feed(&p, "data: [DONE]\r\n\r\ndata:x", 22, collect, &c) == 0);
    CHECK(c.n == 3);
    CHECK_STR(c.data[2], "[DONE]");
    CHECK(p.len == 6); /* "data:x" waits for its blank line. */
    char big[100];
    memset(big, 'x', sizeof(big));
    CHECK(sse_feed(&p, big, sizeof(big), collect, &c) == -1);
    sse_free(&p);
}

static void test_chunks_and_events(void)
{
    struct chat_chunk k;
    const char *d = "{\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hi\"},"
                    "\"finish_reason\":null}]}";
    size_t len;
    char *ev;

    CHECK(chat_chunk_parse(d, strlen(d), &k) == 0);
    CHECK(k.has_choices && k.content_len == 2 && k.finish_reason == NULL && !k.has_usage);
    CHECK(k.generated_bytes == 2);
    chat_chunk_cleanup(&k);
    /* Text where some backends put it counts as generated too. */
    d = "{\"choices\":[{\"delta\":{\"text\":\"abc\"}},{\"text\":\"defg\",\"delta\":{}}]}";
    CHECK(chat_chunk_parse(d, strlen(d), &k) == 0 && k.generated_bytes == 7);
    chat_chunk_cleanup(&k);
    d = "{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}";
    CHECK(chat_chunk_parse(d, strlen(d), &k) == 0);
    CHECK(!k.has_choices && k.has_usage && k.output_tokens == 2);
    chat_chunk_cleanup(&k);
    CHECK(chat_chunk_parse("[DONE]", 6, &k) == 0 && k.done);
    CHECK(chat_chunk_parse("{not json", 9, &k) == -1);
    CHECK(chat_chunk_parse("[1]", 3, &k) == -1);

    ev = chat_konnect_final_event("chat_1", 5, "m", 1, "stop", 3, 4, &len);
    CHECK(len == strlen(ev));
    CHECK(strstr(ev, "\"usage\":{\"input_tokens\":3,\"output_tokens\":4}") != NULL);
    CHECK(strcmp(ev + len - 14, "data: [DONE]\n\n") == 0);
    free(ev);
    ev = chat_openai_chunk_event("c", 5, "m", 1, "a\"b", 3, NULL, &len);
    CHECK(strstr(ev, "\"delta\":{\"role\":\"assistant\",\"content\":\"a\\\"b\"}") != NULL);
    CHECK(strstr(ev, "\"finish_reason\":null") != NULL);
    free(ev);
    /* Text that is not UTF-8 cannot go into JSON: the caller gets NULL, not a bad document. */
    CHECK(chat_konnect_delta_event("c", 5, "m", 1, "\xff", 1, &len) == NULL);
}

static void test_mock_answers(void)
{
    struct chat_call c;
    size_t len;
    char *a, *b;

    CHECK(openai("{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":["
                 "{\"role\":\"user\",\"content\":\"Same\"}]}",
                 &c) == KN_OK);
    struct chat_mock m = chat_mock_of(&c);
    a = chat_mock_answer(&m, "id", 1, &len);
    b = chat_mock_answer(&m, "id", 1, &len);
    CHECK_STR(a, b);                            /* Deterministic. */
    CHECK(strstr(a, "[mock response") == NULL); /* Streamed word by word... */
    CHECK(strstr(a, "\"content\":\"[mock \"") != NULL);
    CHECK(strstr(a, "\"usage\"") != NULL && strcmp(a + len - 14, "data: [DONE]\n\n") == 0);
    free(a);
    free(b);
    m.stream = 0;
    a = chat_mock_answer(&m, "id", 1, &len);
    CHECK(strstr(a, "\"object\":\"chat.completion\"") != NULL);
    CHECK(strstr(a, "[mock response: test key, no model was called]") != NULL);
    free(a);
    chat_call_cleanup(&c);
}

int main(void)
{
    test_openai_requests();
    test_costly_parameters();
    test_results();
    test_sse();
    test_chunks_and_events();
    test_mock_answers();
    return unit_result();
}
