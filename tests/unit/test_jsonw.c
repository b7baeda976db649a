/* The JSON writer: every string comes out byte for byte as jansson's compact output writes it,
 * and text that is not UTF-8 is refused exactly when jansson refuses it. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/jsonw.h"
#include "core/util.h"
#include "unit.h"

/* Compares one string with jansson's view of it. Returns 1 when they agree. */
static int agrees(const char *s, size_t len)
{
    struct jsonw w;
    size_t n = 0;
    json_t *j = json_stringn(s, len);
    char *want = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    int ok;

    jsonw_init(&w, 0);
    jsonw_str(&w, s, len);
    char *got = jsonw_finish(&w, &n);
    if (want == NULL)
        ok = got == NULL;
    else
        ok = got != NULL && n == strlen(want) && memcmp(got, want, n) == 0;
    if (!ok)
        fprintf(stderr, "disagree on %zu bytes: jsonw %s, jansson %s\n", len, got ? got : "NULL",
                want ? want : "NULL");
    free(got);
    free(want);
    json_decref(j);
    return ok;
}

static void test_every_byte_and_pair(void)
{
    char s[3];
    int bad = 0;
    for (int a = 0; a < 256; a++) {
        s[0] = (char)a;
        bad += !agrees(s, 1);
        for (int b = 0; b < 256; b++) {
            s[1] = (char)b;
            bad += !agrees(s, 2);
        }
    }
    CHECK(bad == 0);
}

static void test_sequences(void)
{
    static const char *cases[] = {
        "",
        "plain ASCII text",
        "quote \" backslash \\ slash / tab \t newline \n cr \r bell \a del \x7f",
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe2\x80\xa8",
        "\xed\xa0\x80",                 /* a surrogate */
        "\xc0\xaf",                     /* overlong */
        "\xe0\x80\xaf",                 /* overlong */
        "\xf0\x80\x80\xaf",             /* overlong */
        "\xf4\x90\x80\x80",             /* past U+10FFFF */
        "\xef\xbf\xbf\xf4\x8f\xbf\xbf", /* the highest code points */
        "cut \xe2\x82",
        "\xff",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK(agrees(cases[i], strlen(cases[i])));
    CHECK(agrees("nul \0 inside", 13));
}

static void test_random(void)
{
    unsigned seed = 12345;
    char s[64];
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        size_t len = (size_t)(rand_r(&seed) % sizeof(s));
        for (size_t k = 0; k < len; k++) {
            /* Mostly UTF-8-looking bytes, so that valid sequences come up too. */
            int r = rand_r(&seed) % 8;
            s[k] = (char)(r < 3   ? 0x20 + rand_r(&seed) % 0x60
                          : r < 4 ? rand_r(&seed) % 0x20
                          : r < 6 ? 0x80 + rand_r(&seed) % 0x40
                                  : 0xc0 + rand_r(&seed) % 0x40);
        }
        bad += !agrees(s, len);
    }
    CHECK(bad == 0);
}

/* Every byte at every place of strings long enough to be scanned a word at a time (and of the
 * tails after the words), beside plain text and beside another byte that needs care; and long
 * strings where every byte is escaped, which grow the buffer as they go. */
static void test_every_byte_in_words(void)
{
    char s[40];
    int bad = 0;
    for (size_t len = 8; len <= 25; len += 17 - 8)
        for (size_t at = 0; at < len; at++)
            for (int b = 0; b < 256; b++) {
                memset(s, 'a', len);
                s[at] = (char)b;
                bad += !agrees(s, len);
                s[(at + 3) % len] = '"';
                bad += !agrees(s, len);
                s[(at + 3) % len] = (char)0xc3;
                s[(at + 4) % len] = (char)0xa9;
                bad += !agrees(s, len);
            }
    CHECK(bad == 0);
    char *all = malloc(3000);
    for (int b = 0; b < 0x20; b++) {
        memset(all, b, 3000);
        bad += !agrees(all, 3000);
    }
    memset(all, '\\', 3000);
    bad += !agrees(all, 3000);
    for (int i = 0; i < 3000; i++)
        all[i] = i % 9 == 8 ? '"' : 'x';
    bad += !agrees(all, 3000);
    free(all);
    CHECK(bad == 0);
}

static void test_document(void)
{
    struct jsonw w;
    size_t n;
    jsonw_init(&w, 0);
    jsonw_lit(&w, "{\"a\":");
    jsonw_int(&w, -9223372036854775807LL - 1);
    jsonw_lit(&w, ",\"b\":");
    jsonw_int(&w, 42);
    jsonw_lit(&w, ",\"c\":");
    jsonw_str(&w, "x", 1);
    jsonw_lit(&w, "}");
    char *s = jsonw_finish(&w, &n);
    CHECK_STR(s, "{\"a\":-9223372036854775808,\"b\":42,\"c\":\"x\"}");
    CHECK(n == strlen(s));
    free(s);
    /* One bad string spoils the document. */
    jsonw_init(&w, 0);
    jsonw_str(&w, "\xff", 1);
    jsonw_str(&w, "fine", 4);
    CHECK(jsonw_finish(&w, &n) == NULL);
}

/* kn_decimal agrees with printf at the edges and on random values. */
static void test_decimal(void)
{
    int64_t edges[] = {0, 1, 9, 10, -1, -10, 99, 100, INT64_MAX, INT64_MIN, INT64_MIN + 1};
    char got[KN_DECIMAL_MAX + 1], want[32];

    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]) + 10000; i++) {
        int64_t v;
        if (i < sizeof(edges) / sizeof(edges[0])) {
            v = edges[i];
        } else {
            uint64_t r = ((uint64_t)rand() << 33) ^ ((uint64_t)rand() << 11) ^ (uint64_t)rand();
            v = (int64_t)(r >> (1 + rand() % 63)); /* Below 2^63, any number of digits. */
            if (rand() & 1)
                v = -v;
        }
        size_t n = kn_decimal(got, v);
        got[n] = '\0';
        snprintf(want, sizeof(want), "%lld", (long long)v);
        CHECK_STR(got, want);
    }
}

int main(void)
{
    test_decimal();
    test_every_byte_and_pair();
    test_sequences();
    test_every_byte_in_words();
    test_random();
    test_document();
    return unit_result();
}
