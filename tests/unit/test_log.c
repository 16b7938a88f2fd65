/* Unit tests for common/log.c: pgw_log_quote (logfmt values), and lines
 * that stay whole on a logfile that runs out of room. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <unistd.h>
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

/* Logging to fd (quiet), the event "first" cut at byte 40 (RLIMIT_FSIZE,
 * SIGXFSZ ignored), and with lost an event "second" that fails whole
 * (EFBIG); the limit and the signal restored. */
static void log_cut_at_40(int fd, bool lost)
{
    pgw_log_set_quiet(true);
    pgw_log_use(fd);
    void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, cut;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    cut = old;
    cut.rlim_cur = 40;                      /* within the first line */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &cut), 0);
    pgw_log(PGW_LOG_WARNING, "first", "key=%s", "a value long enough to be cut");
    if (lost)
        pgw_log(PGW_LOG_WARNING, "second", "key=lost");   /* EFBIG: lost whole */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, was);
}

/* A logfile that takes part of a line (a full disk; here RLIMIT_FSIZE,
 * SIGXFSZ ignored: the write is cut at the limit, the next ones fail
 * EFBIG), then room again: the next event went on the cut line ("...
 * event=first ts=... event=third"); it starts a line of its own now. */
static void test_a_cut_line_does_not_take_the_next_event(void **state)
{
    (void)state;
    char path[] = "/tmp/pgw-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    log_cut_at_40(fd, true);
    pgw_log(PGW_LOG_WARNING, "third", "key=whole");
    pgw_log(PGW_LOG_WARNING, "fourth", "key=whole");

    char buf[1024];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    pgw_log_use(STDERR_FILENO);              /* closes fd */
    pgw_log_set_quiet(false);
    assert_true(n > 40);
    buf[n] = '\0';
    assert_int_equal(buf[n - 1], '\n');
    char *save = NULL;
    const char *want[] = { "event=first", "event=third", "event=fourth" };
    int lines = 0;
    for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save), lines++) {
        assert_true(lines < 3);
        assert_true(strncmp(l, "ts=", 3) == 0);
        assert_null(strstr(l + 3, "ts="));  /* one event a line */
        if (lines == 0)
            assert_int_equal(strlen(l), 40);
        else
            assert_non_null(strstr(l, want[lines]));
    }
    assert_int_equal(lines, 3);
}

/* The same file reopened (a reload) after a cut line: still ended first. */
static void test_a_cut_line_is_ended_after_a_reopen(void **state)
{
    (void)state;
    char path[] = "/tmp/pgw-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    log_cut_at_40(fd, false);
    int again = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);   /* as a reload */
    assert_true(again >= 0);
    pgw_log_use(again);                      /* closes fd */
    pgw_log(PGW_LOG_WARNING, "second", "key=whole");
    char buf[1024];
    int r = open(path, O_RDONLY);
    ssize_t n = read(r, buf, sizeof(buf) - 1);
    close(r);
    unlink(path);
    pgw_log_use(STDERR_FILENO);
    pgw_log_set_quiet(false);
    assert_true(n > 41);
    buf[n] = '\0';
    assert_int_equal(buf[40], '\n');
    assert_non_null(strstr(buf + 41, "event=second"));
}

/* A new file after a cut line (logrotate renamed the old one, a reload
 * reopened the logfile's path): the old file's cut line was never ended,
 * its last line left without a newline; it is ended as the file is left.
 * The new file starts with the next event, no empty line. */
static void test_a_cut_line_is_ended_in_the_file_left_for_a_new_one(void **state)
{
    (void)state;
    char path[] = "/tmp/pgw-test-log-XXXXXX", next[] = "/tmp/pgw-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int nfd = mkstemp(next);
    assert_true(nfd >= 0);
    log_cut_at_40(fd, false);
    pgw_log_use(nfd);                        /* closes fd */
    pgw_log(PGW_LOG_WARNING, "second", "key=whole");
    char buf[1024], nbuf[1024];
    int r = open(path, O_RDONLY);
    ssize_t n = read(r, buf, sizeof(buf) - 1);
    close(r);
    ssize_t nn = pread(nfd, nbuf, sizeof(nbuf) - 1, 0);
    unlink(path);
    unlink(next);
    pgw_log_use(STDERR_FILENO);              /* closes nfd */
    pgw_log_set_quiet(false);
    assert_int_equal(n, 41);
    assert_int_equal(buf[40], '\n');
    assert_true(nn > 3);
    nbuf[nn] = '\0';
    assert_true(strncmp(nbuf, "ts=", 3) == 0);
    assert_non_null(strstr(nbuf, "event=second"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_values_stay_as_they_are),
        cmocka_unit_test(test_spaces_quotes_and_newlines_are_quoted),
        cmocka_unit_test(test_bytes_that_are_not_utf8_are_escaped),
        cmocka_unit_test(test_del_c1_and_line_separators_are_escaped),
        cmocka_unit_test(test_a_long_value_is_cut_between_characters),
        cmocka_unit_test(test_a_cut_line_does_not_take_the_next_event),
        cmocka_unit_test(test_a_cut_line_is_ended_after_a_reopen),
        cmocka_unit_test(test_a_cut_line_is_ended_in_the_file_left_for_a_new_one),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
