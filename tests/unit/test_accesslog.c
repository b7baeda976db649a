/* Access-log escaping and secret redaction. */
#include <stdlib.h>

#include "http/accesslog.h"
#include "unit.h"

static char *render(const char *s)
{
    struct logbuf b = {0};
    logbuf_put_redacted(&b, s, strlen(s));
    char *out = malloc(b.len + 1);
    memcpy(out, b.buf, b.len);
    out[b.len] = '\0';
    logbuf_free(&b);
    return out;
}

int main(void)
{
    char *s;

    s = render("/v1/chat");
    CHECK_STR(s, "/v1/chat");
    free(s);
    s = render("/x/sk_live_abcDEF123/y?sk_test_Zz9");
    CHECK_STR(s, "/x/sk_live_[redacted]/y?sk_test_[redacted]");
    free(s);
    s = render("a\"b\\c\n\x01\xc3\xa9");
    CHECK_STR(s, "a\\\"b\\\\c\\u000a\\u0001\\u00c3\\u00a9");
    free(s);
    s = render("sk_live_");
    CHECK_STR(s, "sk_live_[redacted]");
    free(s);
    s = render("sk_liv");
    CHECK_STR(s, "sk_liv");
    free(s);
    return unit_result();
}
