/* test_aq_reply.c - the auth_query reply parser (proxy/aq_reply.h): whole
 * replies fed in every split, errors, malformed and oversized messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/wire.h"
#include "proxy/aq_reply.h"

static size_t msg(uint8_t *out, char type, const void *body, size_t blen)
{
    out[0] = (uint8_t)type;
    pgw_put_u32(out + 1, (uint32_t)(blen + 4));
    memcpy(out + 5, body, blen);
    return blen + 5;
}

/* A DataRow of two text columns; c1 NULL or len2 < 0 = NULL. */
static size_t data_row(uint8_t *out, const char *c1, const char *c2, int len2)
{
    uint8_t body[256];
    size_t n = 0;
    pgw_put_u16(body, 2);
    n += 2;
    pgw_put_u32(body + n, c1 ? (uint32_t)strlen(c1) : UINT32_MAX);
    n += 4;
    if (c1) {
        memcpy(body + n, c1, strlen(c1));
        n += strlen(c1);
    }
    pgw_put_u32(body + n, (uint32_t)len2);
    n += 4;
    if (len2 > 0) {
        memcpy(body + n, c2, (size_t)len2);
        n += (size_t)len2;
    }
    return msg(out, 'D', body, n);
}

/* ParseComplete, BindComplete, rows, CommandComplete, ReadyForQuery 'I'. */
static size_t reply(uint8_t *out, const uint8_t *rows, size_t rn)
{
    size_t n = 0;
    n += msg(out + n, '1', "", 0);
    n += msg(out + n, '2', "", 0);
    memcpy(out + n, rows, rn);
    n += rn;
    n += msg(out + n, 'C', "SELECT 1", 9);
    n += msg(out + n, 'Z', "I", 1);
    return n;
}

/* Feed data in chunks of step, as reads would; returns the state after the
 * call that said "over" (or after the last chunk). */
static struct pgw_aq_reply *feed(const uint8_t *data, size_t len, size_t step, bool *over)
{
    struct pgw_aq_reply *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    *over = false;
    for (size_t i = 0; i < len && !*over; i += step) {
        size_t k = len - i < step ? len - i : step;
        assert_true(r->in_len + k <= sizeof(r->in));
        memcpy(r->in + r->in_len, data + i, k);
        r->in_len += (uint32_t)k;
        *over = pgw_aq_reply_take(r);
    }
    return r;
}

static void done(struct pgw_aq_reply *r)
{
    free(r->secret);
    free(r);
}

/* A whole reply with one row (user, secret of len2 bytes; < 0 = NULL),
 * fed in chunks of step (0: at once); it must be over. */
static struct pgw_aq_reply *one_row(const char *user, const char *secret, int len2, size_t step,
                                    size_t extra_ready)
{
    uint8_t rows[128], buf[512];
    size_t rn = data_row(rows, user, secret, len2);
    size_t n = reply(buf, rows, rn);
    for (size_t i = 0; i < extra_ready; i++)
        n += msg(buf + n, 'Z', "I", 1);
    bool over;
    struct pgw_aq_reply *r = feed(buf, n, step ? step : n, &over);
    assert_true(over);
    return r;
}

static void test_secret_in_any_split(void **state)
{
    (void)state;
    for (size_t step = 1; step <= 64; step++) {   /* the reply is 56 bytes: every cut */
        struct pgw_aq_reply *r = one_row("alice", "md5abc", 6, step, 0);
        assert_false(r->failed);
        assert_false(r->dirty);
        assert_true(r->at_ready);
        assert_int_equal(r->status, 'I');
        assert_int_equal(r->rows, 1);
        assert_int_equal(r->cols, 2);
        assert_string_equal(r->secret, "md5abc");
        assert_int_equal(r->in_len, 0);
        done(r);
    }
}

static void test_no_row_and_null_secret(void **state)
{
    (void)state;
    uint8_t rows[128] = { 0 }, buf[512];
    bool over;
    size_t n = reply(buf, rows, 0);
    struct pgw_aq_reply *r = feed(buf, n, n, &over);
    assert_true(over);
    assert_int_equal(r->rows, 0);
    assert_null(r->secret);
    done(r);

    r = one_row("bob", NULL, -1, 3, 0);
    assert_int_equal(r->rows, 1);
    assert_null(r->secret);
    assert_false(r->failed);
    assert_false(r->null_user);
    done(r);

    /* a LEFT JOIN's row for a name that is no role */
    r = one_row(NULL, NULL, -1, 5, 0);
    assert_int_equal(r->rows, 1);
    assert_true(r->null_user);
    assert_false(r->failed);
    done(r);
    r = one_row(NULL, "md5abc", 6, 0, 0);
    assert_true(r->null_user);
    assert_string_equal(r->secret, "md5abc");
    done(r);
}

static void test_error_response_gives_its_sqlstate(void **state)
{
    (void)state;
    static const char err[] = "SERROR\0C42P01\0Mrelation \"nope\" does not exist\0";
    uint8_t buf[256];
    size_t n = msg(buf, 'E', err, sizeof(err));     /* with the final NUL */
    n += msg(buf + n, 'Z', "I", 1);
    bool over;
    struct pgw_aq_reply *r = feed(buf, n, 5, &over);
    assert_true(over);
    assert_true(r->failed);
    assert_false(r->dirty);
    assert_string_equal(r->sqlstate, "42P01");
    assert_string_equal(r->message, "relation \"nope\" does not exist");
    done(r);
}

static void test_nul_in_password_refused(void **state)
{
    (void)state;
    struct pgw_aq_reply *r = one_row("eve", "ab\0cd", 5, 0, 0);
    assert_true(r->failed);
    assert_string_equal(r->sqlstate, "28000");
    assert_null(r->secret);
    done(r);
}

static void test_malformed_and_unexpected_break_the_stream(void **state)
{
    (void)state;
    uint8_t buf[512];
    bool over;
    /* A DataRow whose column length runs past the message. */
    uint8_t body[16] = { 0, 2, 0, 0, 0, 50, 'x' };
    size_t n = msg(buf, 'D', body, 7);
    struct pgw_aq_reply *r = feed(buf, n, n, &over);
    assert_false(over);                       /* the reply goes on; the failure stays */
    assert_true(r->failed);
    assert_true(r->dirty);
    assert_string_equal(r->sqlstate, "08P01");
    done(r);

    /* A length below 4. */
    buf[0] = 'C';
    pgw_put_u32(buf + 1, 3);
    r = feed(buf, 5, 5, &over);
    assert_true(over);
    assert_true(r->dirty);
    done(r);

    /* A message type no lookup expects (CopyInResponse). */
    n = msg(buf, 'G', "\0\0\0", 3);
    r = feed(buf, n, n, &over);
    assert_true(over);
    assert_true(r->dirty);
    assert_string_equal(r->sqlstate, "08P01");
    done(r);
}

static void test_oversized_notice_skipped_other_refused(void **state)
{
    (void)state;
    size_t big = PGW_AQ_RBUF + 100;
    uint8_t *buf = malloc(big + 64);
    assert_non_null(buf);
    buf[0] = 'N';
    pgw_put_u32(buf + 1, (uint32_t)(big + 4));
    memset(buf + 5, 'n', big);
    size_t n = 5 + big;
    n += msg(buf + n, 'Z', "I", 1);
    bool over;
    struct pgw_aq_reply *r = feed(buf, n, 1000, &over);
    assert_true(over);
    assert_false(r->failed);
    assert_true(r->at_ready);
    done(r);

    buf[0] = 'D';                             /* the same size as a DataRow: refused */
    r = feed(buf, 1000, 1000, &over);
    assert_true(over);
    assert_true(r->dirty);
    assert_string_equal(r->sqlstate, "08P01");
    done(r);
    free(buf);
}

static void test_bytes_after_ready_are_dirty(void **state)
{
    (void)state;
    struct pgw_aq_reply *r = one_row("al", "pw", 2, 0, 1);
    assert_true(r->dirty);                    /* not left behind on a pooled server */
    assert_false(r->failed);
    done(r);
}

static void test_first_reason_stays(void **state)
{
    (void)state;
    struct pgw_aq_reply *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    pgw_aq_reply_fail(r, false, "28000", "first %d", 1);
    pgw_aq_reply_fail(r, true, "08P01", "second");
    assert_string_equal(r->sqlstate, "28000");
    assert_string_equal(r->message, "first 1");
    assert_true(r->dirty);
    done(r);
}

static void test_request_shape(void **state)
{
    (void)state;
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    assert_true(pgw_aq_build_request(&b, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1",
                                     "o'hara"));
    const char types[] = { 'P', 'B', 'E', 'S' };
    size_t pos = 0;
    for (size_t i = 0; i < sizeof(types); i++) {
        assert_true(pos + 5 <= b.len);
        assert_int_equal(b.data[pos], types[i]);
        pos += 1 + pgw_get_u32(b.data + pos + 1);
    }
    assert_int_equal(pos, b.len);
    /* The user name travels as a parameter, as it is: no quoting. */
    assert_non_null(memmem(b.data, b.len, "o'hara", 6));
    pgw_wbuf_deinit(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_in_any_split),
        cmocka_unit_test(test_no_row_and_null_secret),
        cmocka_unit_test(test_error_response_gives_its_sqlstate),
        cmocka_unit_test(test_nul_in_password_refused),
        cmocka_unit_test(test_malformed_and_unexpected_break_the_stream),
        cmocka_unit_test(test_oversized_notice_skipped_other_refused),
        cmocka_unit_test(test_bytes_after_ready_are_dirty),
        cmocka_unit_test(test_first_reason_stays),
        cmocka_unit_test(test_request_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
