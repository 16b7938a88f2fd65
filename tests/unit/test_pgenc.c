/*
 * test_pgenc.c - client encodings (common/pgenc.h): PostgreSQL's names map
 * to iconv's, UTF8 and SQL_ASCII need no converter, converters are opened
 * once per encoding, and a character the target lacks (or a byte sequence
 * the source does not allow) fails the conversion instead of being
 * replaced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/pgenc.h"

static void t_names(void **state)
{
    (void)state;
    assert_string_equal(pgw_pgenc_iconv_name("LATIN1"), "ISO-8859-1");
    assert_string_equal(pgw_pgenc_iconv_name("latin9"), "ISO-8859-15");
    assert_string_equal(pgw_pgenc_iconv_name("WIN1252"), "CP1252");
    assert_string_equal(pgw_pgenc_iconv_name("SJIS"), "SHIFT_JIS");
    assert_string_equal(pgw_pgenc_iconv_name("UHC"), "CP949");
    assert_null(pgw_pgenc_iconv_name("UTF8"));
    assert_null(pgw_pgenc_iconv_name("SQL_ASCII"));
    assert_null(pgw_pgenc_iconv_name("MULE_INTERNAL"));
    assert_null(pgw_pgenc_iconv_name("KLINGON"));
}

/* Names read as PostgreSQL reads them: letters and digits, any case
 * (asyncpg logs in with 'utf-8'). */
static void t_same_name(void **state)
{
    (void)state;
    assert_true(pgw_pgenc_same_name("UTF8", "utf-8"));
    assert_true(pgw_pgenc_same_name("utf-8", "UTF8"));
    assert_true(pgw_pgenc_same_name("LATIN1", "latin-1"));
    assert_true(pgw_pgenc_same_name("WIN1252", "win_1252"));
    assert_true(pgw_pgenc_same_name("SQL_ASCII", "sqlascii"));
    assert_true(pgw_pgenc_same_name("", ""));
    assert_false(pgw_pgenc_same_name("", "x"));
    assert_false(pgw_pgenc_same_name("UTF8", "UTF"));
    assert_false(pgw_pgenc_same_name("UTF8", "UTF16"));
    assert_false(pgw_pgenc_same_name("LATIN1", "LATIN10"));
    assert_false(pgw_pgenc_same_name("UTF8", "UNICODE"));   /* an alias: not known */
    assert_string_equal(pgw_pgenc_iconv_name("latin-1"), "ISO-8859-1");
    assert_string_equal(pgw_pgenc_iconv_name("iso-8859-5"), "ISO-8859-5");
    assert_string_equal(pgw_pgenc_iconv_name("Shift_JIS_2004"), "SHIFT_JISX0213");
    assert_null(pgw_pgenc_iconv_name("utf-8"));
}

static void t_ascii(void **state)
{
    (void)state;
    assert_true(pgw_pgenc_ascii("listen ch", 9));
    assert_true(pgw_pgenc_ascii("", 0));
    assert_false(pgw_pgenc_ascii("caf\xc3\xa9", 5));
    assert_false(pgw_pgenc_ascii("\x80", 1));
}

/* Each length's first and last code point (SCRAM's SASLprep and U&"..."
 * names share this encoder). */
static void t_utf8_encode(void **state)
{
    (void)state;
    static const struct {
        uint32_t c;
        const char *want;
    } cases[] = {
        { 0x41, "A" },
        { 0x7F, "\x7f" },
        { 0x80, "\xc2\x80" },
        { 0xE9, "\xc3\xa9" },
        { 0x7FF, "\xdf\xbf" },
        { 0x800, "\xe0\xa0\x80" },
        { 0xFFFF, "\xef\xbf\xbf" },
        { 0x10000, "\xf0\x90\x80\x80" },
        { 0x1F600, "\xf0\x9f\x98\x80" },
        { 0x10FFFF, "\xf4\x8f\xbf\xbf" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[4];
        size_t n = pgw_utf8_encode(cases[i].c, out);
        assert_int_equal(n, strlen(cases[i].want));
        assert_memory_equal(out, cases[i].want, n);
    }
}

/* A cut inside a character drops its first bytes; a cut after a whole
 * one (of each length) keeps it. */
static void t_utf8_trim_cut(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        { "abc", "abc" },
        { "", "" },
        { "a\xc3\xa9", "a\xc3\xa9" },
        { "a\xc3", "a" },
        { "a\xe2\x82\xac", "a\xe2\x82\xac" },
        { "a\xe2\x82", "a" },
        { "a\xe2", "a" },
        { "a\xf0\x9f\x98\x80", "a\xf0\x9f\x98\x80" },
        { "a\xf0\x9f\x98", "a" },
        { "a\xf0\x9f", "a" },
        { "a\xf0", "a" },
        { "\xc3\xa9\xc3\xa9\xe2", "\xc3\xa9\xc3\xa9" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[16];
        strcpy(buf, cases[i].in);
        size_t n = pgw_utf8_trim_cut(buf, strlen(buf));
        assert_int_equal(n, strlen(cases[i].want));
        assert_string_equal(buf, cases[i].want);
    }
}

static void t_set_opens_once(void **state)
{
    (void)state;
    struct pgw_pgenc_set set = { 0 };
    const struct pgw_pgenc_conv *a = pgw_pgenc_get(&set, "LATIN1");
    assert_non_null(a);
    assert_ptr_equal(pgw_pgenc_get(&set, "latin1"), a);
    assert_ptr_equal(pgw_pgenc_get(&set, "Latin-1"), a);
    assert_non_null(pgw_pgenc_get(&set, "WIN1252"));
    assert_null(pgw_pgenc_get(&set, "UTF8"));
    assert_null(pgw_pgenc_get(&set, "NO_SUCH_ENCODING"));
    assert_int_equal(set.n, 2);
    pgw_pgenc_set_free(&set);
    assert_int_equal(set.n, 0);
}

static void t_convert(void **state)
{
    (void)state;
    struct pgw_pgenc_set set = { 0 };
    const struct pgw_pgenc_conv *latin1 = pgw_pgenc_get(&set, "LATIN1");
    const struct pgw_pgenc_conv *win = pgw_pgenc_get(&set, "WIN1252");
    const struct pgw_pgenc_conv *sjis = pgw_pgenc_get(&set, "SJIS");
    assert_non_null(latin1);
    assert_non_null(win);
    assert_non_null(sjis);
    char out[64];

    /* UTF-8 to the client: é is one byte in LATIN1; € has no LATIN1
     * equivalent, and is 0x80 in WIN1252. */
    assert_int_equal(pgw_pgenc_convert(latin1->to_client, "\xc3\xa9t\xc3\xa9", 5, out, sizeof(out)), 3);
    assert_memory_equal(out, "\xe9t\xe9", 3);
    assert_int_equal(pgw_pgenc_convert(latin1->to_client, "5 \xe2\x82\xac", 5, out, sizeof(out)), -1);
    assert_int_equal(pgw_pgenc_convert(win->to_client, "5 \xe2\x82\xac", 5, out, sizeof(out)), 3);
    assert_memory_equal(out, "5 \x80", 3);
    /* The failure leaves the converter usable. */
    assert_int_equal(pgw_pgenc_convert(latin1->to_client, "ok", 2, out, sizeof(out)), 2);

    /* From the client to UTF-8; an SJIS lead byte with no trail byte is
     * not valid. */
    assert_int_equal(pgw_pgenc_convert(latin1->from_client, "caf\xe9", 4, out, sizeof(out)), 5);
    assert_memory_equal(out, "caf\xc3\xa9", 5);
    assert_int_equal(pgw_pgenc_convert(sjis->from_client, "\x82\xa0", 2, out, sizeof(out)), 3);
    assert_memory_equal(out, "\xe3\x81\x82", 3);                  /* あ */
    assert_int_equal(pgw_pgenc_convert(sjis->from_client, "a\x82", 2, out, sizeof(out)), -1);

    /* Too small an output fails. */
    assert_int_equal(pgw_pgenc_convert(latin1->from_client, "\xe9\xe9\xe9", 3, out, 4), -1);
    pgw_pgenc_set_free(&set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_names),
        cmocka_unit_test(t_same_name),
        cmocka_unit_test(t_ascii),
        cmocka_unit_test(t_utf8_encode),
        cmocka_unit_test(t_utf8_trim_cut),
        cmocka_unit_test(t_set_opens_once),
        cmocka_unit_test(t_convert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
