/* Unit tests for pgw_log_quote (common/log.c): logfmt values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/log.h"

static void test_plain_values_stay_as_they_are(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "pgwharf"), "pgwharf");
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "caf\xc3\xa9"), "caf\xc3\xa9");
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), NULL), "\"\"");
}

static void test_spaces_quotes_and_newlines_are_quoted(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "a b"), "\"a b\"");
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "x=\"y\"\n"), "\"x=\\\"y\\\"\\n\"");
}

/* A client's database or user name need not be UTF-8; the log line must
 * be (log shippers reject it otherwise).  Such bytes went out raw. */
static void test_bytes_that_are_not_utf8_are_escaped(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "b\xff\xfe"), "\"b\\xFF\\xFE\"");
    /* a cut-short sequence, then a good one */
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "\xc3" "a\xc3\xa9"),
                        "\"\\xC3a\xc3\xa9\"");
}

/* DEL went out plain (the line's writer then made it a space: "h\x7fx"
 * read as two fields), the C1 controls (NEL) and U+2028/U+2029 raw, which
 * some viewers take for line breaks. */
static void test_del_c1_and_line_separators_are_escaped(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "h\x7f" "forged"), "\"h\\x7Fforged\"");
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "a\xc2\x85" "b"), "\"a\\u0085b\"");
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "a\xe2\x80\xa8" "b\xe2\x80\xa9"),
                        "\"a\\u2028b\\u2029\"");
    /* other characters past U+009F stay as they are */
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "\xc2\xa0x"), "\xc2\xa0x");
}

/* Cut to the buffer, never inside a character or an escape. */
static void test_a_long_value_is_cut_between_characters(void **state)
{
    (void)state;
    char buf[8];
    /* '"' + "ab" + 2-byte char would need 1+2+2+1+1 = 7: fits; a third byte no */
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "ab\xc3\xa9\xc3\xa9 "), "\"ab\xc3\xa9\"");
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "a\xff\xff "), "\"a\\xFF\"");
    /* and a value that needs no quotes */
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "ab\xc3\xa9\xc3\xa9\xc3\xa9"),
                        "ab\xc3\xa9\xc3\xa9");
    assert_string_equal(pgw_log_quote(buf, sizeof(buf), "abcdefghij"), "abcdefg");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_values_stay_as_they_are),
        cmocka_unit_test(test_spaces_quotes_and_newlines_are_quoted),
        cmocka_unit_test(test_bytes_that_are_not_utf8_are_escaped),
        cmocka_unit_test(test_del_c1_and_line_separators_are_escaped),
        cmocka_unit_test(test_a_long_value_is_cut_between_characters),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
