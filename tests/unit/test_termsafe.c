/* Text shown in a terminal cannot forge lines or drive the terminal. */
#include "core/termsafe.h"

#include "unit.h"

int main(void)
{
    char buf[TERMSAFE_SIZE(64)];

    CHECK_STR(termsafe_copy(buf, sizeof(buf), "plain name, ünïcödé"), "plain name, ünïcödé");
    CHECK_STR(termsafe_copy(buf, sizeof(buf), "two\nlines\r"), "two\\nlines\\x0d");
    CHECK_STR(termsafe_copy(buf, sizeof(buf), "\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
    CHECK_STR(termsafe_copy(buf, sizeof(buf), "back\\slash\x7f"), "back\\\\slash\\x7f");
    /* C1 controls (CSI as one byte pair), bidi overrides and isolates, line separators. */
    CHECK_STR(termsafe_copy(buf, sizeof(buf),
                            "\xc2\x9b"
                            "2J"),
              "\\u009b2J");
    CHECK_STR(termsafe_copy(buf, sizeof(buf),
                            "abc\xe2\x80\xae"
                            "fdp.exe"),
              "abc\\u202efdp.exe");
    CHECK_STR(termsafe_copy(buf, sizeof(buf), "\xe2\x81\xa6x\xe2\x81\xa9"), "\\u2066x\\u2069");
    CHECK_STR(termsafe_copy(buf, sizeof(buf),
                            "a\xe2\x80\xa8"
                            "b"),
              "a\\u2028b");
    /* Bytes that are not UTF-8, overlong forms and surrogates. */
    CHECK_STR(termsafe_copy(buf, sizeof(buf), "\xff\xc0\xaf"), "\\xff\\xc0\\xaf");
    CHECK_STR(termsafe_copy(buf, sizeof(buf), "\xed\xa0\x80"), "\\xed\\xa0\\x80");
    /* Cut at a whole escape when the room runs out. */
    char small[8];
    CHECK_STR(termsafe_copy(small, sizeof(small), "ab\ncdef"), "ab\\ncde");
    CHECK_STR(termsafe_copy(small, sizeof(small), "abcd\x1b"), "abcd");
    /* Clean UTF-8 for JSON: bad bytes replaced, a cut never splits a character. */
    CHECK_STR(utf8_clean_copy(buf, sizeof(buf), "members/\xff\xfe/x \xc3"),
              "members/\xef\xbf\xbd\xef\xbf\xbd/x \xef\xbf\xbd");
    CHECK_STR(utf8_clean_copy(buf, sizeof(buf), "caf\xc3\xa9 \xed\xa0\x80"),
              "caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    CHECK_STR(utf8_clean_copy(small, sizeof(small), "abcdef\xc3\xa9"), "abcdef");
    CHECK_STR(utf8_clean_copy(small, 5, "\xe2\x82\xac\xe2\x82\xac"), "\xe2\x82\xac");
    return unit_result();
}
