/* Chat request validation and the deterministic mock response. */
#include <stdlib.h>

#include "chat/chat.h"
#include "chat/mock.h"
#include "unit.h"

static enum kn_err parse(const char *body, const char **param)
{
    struct chat_request r;
    struct chat_error e;
    if (chat_request_parse(body, strlen(body), &r, &e) == 0) {
        chat_request_cleanup(&r);
        return KN_OK;
    }
    if (param != NULL)
        *param = e.param;
    return e.err;
}

int main(void)
{
    const char *param = NULL;
    struct chat_request r;
    struct chat_error e;

    CHECK(parse("{\"message\": \"Hello\"}", NULL) == KN_OK);
    CHECK(parse("{\"message\": \"Hello\", \"model\": \"llama3.2:1b\"}", NULL) == KN_OK);
    CHECK(parse("", NULL) == KN_ERR_INVALID_JSON);
    CHECK(parse("{", NULL) == KN_ERR_INVALID_JSON);
    CHECK(parse("[]", NULL) == KN_ERR_INVALID_JSON);
    CHECK(parse("\"Hello\"", NULL) == KN_ERR_INVALID_JSON);
    CHECK(parse("{\"message\": \"a\"} x", NULL) == KN_ERR_INVALID_JSON);
    CHECK(parse("{\"message\": \"a\", \"message\": \"b\"}", NULL) == KN_ERR_INVALID_JSON);
    CHECK(parse("{\"message\": \"\\u0000\"}", NULL) == KN_ERR_INVALID_JSON);
    CHECK(parse("{\"message\": \"\xff\"}", NULL) == KN_ERR_INVALID_JSON);
    CHECK(parse("{}", &param) == KN_ERR_MISSING_PARAMETER && strcmp(param, "message") == 0);
    CHECK(parse("{\"message\": 5}", &param) == KN_ERR_INVALID_PARAMETER &&
          strcmp(param, "message") == 0);
    CHECK(parse("{\"message\": \"\"}", &param) == KN_ERR_INVALID_PARAMETER);
    CHECK(parse("{\"message\": \"a\", \"model\": 1}", &param) == KN_ERR_INVALID_PARAMETER &&
          strcmp(param, "model") == 0);
    CHECK(parse("{\"message\": \"a\", \"model\": \"has space\"}", NULL) ==
          KN_ERR_INVALID_PARAMETER);
    CHECK(parse("{\"mesage\": \"a\"}", &param) == KN_ERR_UNKNOWN_PARAMETER &&
          strcmp(param, "mesage") == 0);
    CHECK(parse("{\"message\": \"a\", \"temperature\": 1}", &param) == KN_ERR_UNKNOWN_PARAMETER &&
          strcmp(param, "temperature") == 0);

    /* 32768 bytes is the largest message; one more is refused. */
    char *big = malloc(32768 + 32);
    memcpy(big, "{\"message\":\"", 12);
    memset(big + 12, 'a', 32768);
    strcpy(big + 12 + 32768, "\"}");
    CHECK(parse(big, NULL) == KN_OK);
    memset(big + 12, 'a', 32769);
    strcpy(big + 12 + 32769, "\"}");
    CHECK(parse(big, &param) == KN_ERR_INVALID_PARAMETER);
    free(big);

    /* A very long unknown name is echoed shortened, and still valid UTF-8. */
    char longname[300] = "{\"";
    for (int i = 0; i < 100; i++)
        strcat(longname, "\xc3\xa9");
    strcat(longname, "\": 1}");
    CHECK(chat_request_parse(longname, strlen(longname), &r, &e) != 0);
    CHECK(e.err == KN_ERR_UNKNOWN_PARAMETER && strlen(e.param) <= 64 && strlen(e.param) % 2 == 0);

    /* The mock is deterministic in the message and model, and says it is a mock. */
    const char *body = "{\"message\": \"Hello\"}";
    size_t l1, l2;
    CHECK(chat_request_parse(body, strlen(body), &r, &e) == 0);
    struct chat_mock m = {CHAT_API_KONNECT,
                          0,
                          0,
                          "m",
                          r.message,
                          r.message_len,
                          chat_estimate_tokens(r.message, r.message_len)};
    char *a = chat_mock_answer(&m, "chat_1", 1, &l1);
    char *b = chat_mock_answer(&m, "chat_2", 2, &l2);
    json_t *ja = json_loads(a, 0, NULL), *jb = json_loads(b, 0, NULL);
    const char *ca = json_string_value(json_object_get(json_object_get(ja, "message"), "content"));
    const char *cb = json_string_value(json_object_get(json_object_get(jb, "message"), "content"));
    CHECK(ca != NULL && cb != NULL && strcmp(ca, cb) == 0);
    CHECK(strstr(ca, "mock") != NULL);
    CHECK(json_is_false(json_object_get(ja, "livemode")));
    CHECK_STR(json_string_value(json_object_get(ja, "object")), "chat.response");
    CHECK(json_integer_value(json_object_get(json_object_get(ja, "usage"), "input_tokens")) == 2);
    m.model = "other";
    char *c = chat_mock_answer(&m, "chat_3", 3, &l2);
    json_t *jc = json_loads(c, 0, NULL);
    const char *cc = json_string_value(json_object_get(json_object_get(jc, "message"), "content"));
    CHECK(strcmp(ca, cc) != 0);
    json_decref(ja);
    json_decref(jb);
    json_decref(jc);
    free(a);
    free(b);
    free(c);
    chat_request_cleanup(&r);
    CHECK(chat_estimate_tokens("", 0) == 0);
    CHECK(chat_estimate_tokens("abcde", 5) == 2);
    return unit_result();
}
