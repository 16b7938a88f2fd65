/* test_track.c - the relay's release tracker (proxy/track.h): whole protocol
 * conversations fed in every possible split must end in the same state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/wire.h"
#include "proxy/track.h"

static size_t msg(uint8_t *out, char type, const char *body, size_t blen)
{
    out[0] = (uint8_t)type;
    pgw_put_u32(out + 1, (uint32_t)(blen + 4));
    memcpy(out + 5, body, blen);
    return blen + 5;
}

/* Feed fe then be in chunks of `step`; return the final state. */
static struct pgw_track run(const uint8_t *fe, size_t fn, const uint8_t *be, size_t bn, size_t step)
{
    struct pgw_track t = { .tx_status = 'I' };
    struct pgw_track_stream fs = { .backend = false }, bs = { .backend = true };
    for (size_t i = 0; i < fn; i += step)
        assert_true(pgw_track_feed(&t, &fs, fe + i, fn - i < step ? fn - i : step) >= 0);
    for (size_t i = 0; i < bn; i += step)
        assert_true(pgw_track_feed(&t, &bs, be + i, bn - i < step ? bn - i : step) >= 0);
    return t;
}

static void test_simple_query_then_idle(void **state)
{
    (void)state;
    uint8_t fe[64], be[128];
    size_t fn = msg(fe, 'Q', "select 1", 9);
    size_t bn = 0;
    bn += msg(be + bn, 'T', "\0\0", 2);
    bn += msg(be + bn, 'D', "\0\1\0\0\0\1" "1", 7);
    bn += msg(be + bn, 'C', "SELECT 1", 9);
    bn += msg(be + bn, 'Z', "I", 1);
    for (size_t step = 1; step <= bn; step++) {
        struct pgw_track t = run(fe, fn, be, bn, step);
        assert_true(pgw_track_idle(&t));
    }
}

static void test_pipeline_two_syncs_needs_both_ready(void **state)
{
    (void)state;
    uint8_t fe[128], be[64];
    size_t fn = 0;
    fn += msg(fe + fn, 'P', "\0select 1\0\0\0", 12);
    fn += msg(fe + fn, 'B', "\0\0\0\0\0\0\0\0", 8);
    fn += msg(fe + fn, 'E', "\0\0\0\0\0", 5);
    fn += msg(fe + fn, 'S', "", 0);
    fn += msg(fe + fn, 'B', "\0\0\0\0\0\0\0\0", 8);
    fn += msg(fe + fn, 'E', "\0\0\0\0\0", 5);
    fn += msg(fe + fn, 'S', "", 0);
    size_t one = msg(be, 'Z', "I", 1);
    for (size_t step = 1; step <= fn; step++) {
        struct pgw_track t = run(fe, fn, be, one, step);
        assert_false(pgw_track_idle(&t));       /* one Sync still outstanding */
        assert_int_equal(t.sync_out, 1);
    }
    size_t bn = one + msg(be + one, 'Z', "I", 1);
    struct pgw_track t = run(fe, fn, be, bn, 3);
    assert_true(pgw_track_idle(&t));
}

static void test_open_batch_blocks_release(void **state)
{
    (void)state;
    uint8_t fe[64], be[16];
    size_t fn = 0;
    fn += msg(fe + fn, 'Q', "select 1", 9);
    fn += msg(fe + fn, 'P', "\0select 2\0\0\0", 12);   /* no Sync yet */
    size_t bn = msg(be, 'Z', "I", 1);
    struct pgw_track t = run(fe, fn, be, bn, 1);
    assert_int_equal(t.sync_out, 0);
    assert_int_equal(t.fe_open, 1);
    assert_false(pgw_track_idle(&t));
}

static void test_transaction_status_blocks_release(void **state)
{
    (void)state;
    uint8_t fe[32], be[16];
    size_t fn = msg(fe, 'Q', "begin", 6);
    size_t bn = msg(be, 'Z', "T", 1);
    struct pgw_track t = run(fe, fn, be, bn, 2);
    assert_int_equal(t.tx_status, 'T');
    assert_false(pgw_track_idle(&t));
}

/* Feed fe1, be1, fe2, be2 in chunks of `step`, each stream framed across
 * the pieces: a client that waits for the server between the two. */
static struct pgw_track run2(const uint8_t *fe1, size_t fn1, const uint8_t *be1, size_t bn1,
                             const uint8_t *fe2, size_t fn2, const uint8_t *be2, size_t bn2,
                             size_t step)
{
    struct pgw_track t = { .tx_status = 'I' };
    struct pgw_track_stream fs = { .backend = false }, bs = { .backend = true };
    const uint8_t *p[4] = { fe1, be1, fe2, be2 };
    size_t n[4] = { fn1, bn1, fn2, bn2 };
    for (int k = 0; k < 4; k++) {
        struct pgw_track_stream *st = k % 2 ? &bs : &fs;
        for (size_t i = 0; i < n[k]; i += step)
            assert_true(pgw_track_feed(&t, st, p[k] + i, n[k] - i < step ? n[k] - i : step) >= 0);
    }
    return t;
}

static void test_copy_in_extended_ignores_inner_sync(void **state)
{
    (void)state;
    /* libpq: P B E S (COPY FROM STDIN), waits for CopyInResponse, then
     * d d c S.  The first Sync arrives during COPY IN and gets no
     * ReadyForQuery. */
    uint8_t fe1[128], fe2[128], be1[32], be2[64];
    size_t fn1 = 0, fn2 = 0, bn1 = 0, bn2 = 0;
    fn1 += msg(fe1 + fn1, 'P', "\0copy t from stdin\0\0\0", 22);
    fn1 += msg(fe1 + fn1, 'B', "\0\0\0\0\0\0\0\0", 8);
    fn1 += msg(fe1 + fn1, 'E', "\0\0\0\0\0", 5);
    fn1 += msg(fe1 + fn1, 'S', "", 0);
    bn1 += msg(be1 + bn1, '1', "", 0);
    bn1 += msg(be1 + bn1, '2', "", 0);
    bn1 += msg(be1 + bn1, 'G', "\0\0\0", 3);
    fn2 += msg(fe2 + fn2, 'd', "1\n", 2);
    fn2 += msg(fe2 + fn2, 'd', "2\n", 2);
    fn2 += msg(fe2 + fn2, 'c', "", 0);
    fn2 += msg(fe2 + fn2, 'S', "", 0);
    bn2 += msg(be2 + bn2, 'C', "COPY 2", 7);
    bn2 += msg(be2 + bn2, 'Z', "I", 1);
    for (size_t step = 1; step <= fn1 + fn2; step += 3) {
        struct pgw_track t = run2(fe1, fn1, be1, bn1, fe2, fn2, be2, bn2, step);
        assert_true(pgw_track_idle(&t));
    }
    /* Before the last ReadyForQuery: not idle. */
    struct pgw_track t = run2(fe1, fn1, be1, bn1, fe2, fn2, be2, bn2 - 6, 1);
    assert_int_equal(t.sync_out, 1);
    assert_false(pgw_track_idle(&t));
}

static void test_copy_done_outside_copy_takes_nothing_back(void **state)
{
    (void)state;
    /* P B E S, a CopyDone the server ignores (no COPY), a Query: two
     * ReadyForQuery to come.  After the first the server is not idle. */
    uint8_t fe[128], be[32];
    size_t fn = 0;
    fn += msg(fe + fn, 'P', "\0select 1\0\0\0", 12);
    fn += msg(fe + fn, 'B', "\0\0\0\0\0\0\0\0", 8);
    fn += msg(fe + fn, 'E', "\0\0\0\0\0", 5);
    fn += msg(fe + fn, 'S', "", 0);
    fn += msg(fe + fn, 'c', "", 0);
    fn += msg(fe + fn, 'Q', "select 2", 9);
    size_t one = msg(be, 'Z', "I", 1);
    for (size_t step = 1; step <= fn; step++) {
        struct pgw_track t = run(fe, fn, be, one, step);
        assert_int_equal(t.sync_out, 1);
        assert_false(pgw_track_idle(&t));
    }
    size_t bn = one + msg(be + one, 'Z', "I", 1);
    struct pgw_track t = run(fe, fn, be, bn, 2);
    assert_true(pgw_track_idle(&t));
}

static void test_copy_in_response_of_an_earlier_execute_takes_nothing_back(void **state)
{
    (void)state;
    /* E (COPY), B, E, S: the CopyInResponse is the first Execute's; the
     * server fails that COPY at the Bind and answers the Sync.  A CopyDone
     * then must not take that Sync back. */
    uint8_t fe1[64], fe2[64], be1[16], be2[16];
    size_t fn1 = 0, fn2 = 0, bn1 = 0, bn2 = 0;
    fn1 += msg(fe1 + fn1, 'E', "\0\0\0\0\0", 5);
    fn1 += msg(fe1 + fn1, 'B', "\0\0\0\0\0\0\0\0", 8);
    fn1 += msg(fe1 + fn1, 'E', "\0\0\0\0\0", 5);
    fn1 += msg(fe1 + fn1, 'S', "", 0);
    bn1 += msg(be1 + bn1, 'G', "\0\0\0", 3);
    fn2 += msg(fe2 + fn2, 'c', "", 0);
    fn2 += msg(fe2 + fn2, 'Q', "select 2", 9);
    bn2 += msg(be2 + bn2, 'Z', "I", 1);
    struct pgw_track t = run2(fe1, fn1, be1, bn1, fe2, fn2, be2, bn2, 1);
    assert_int_equal(t.sync_out, 1);
    assert_false(pgw_track_idle(&t));
}

static void test_copy_in_after_an_answered_execute_takes_its_sync_back(void **state)
{
    (void)state;
    /* E (SELECT), E (COPY), S: the first Execute is answered (CommandComplete)
     * before the CopyInResponse, which is so the last one's; the Sync
     * after it is ignored by the server, and the CopyDone takes it back. */
    uint8_t fe1[64], fe2[64], be1[64], be2[64];
    size_t fn1 = 0, fn2 = 0, bn1 = 0, bn2 = 0;
    fn1 += msg(fe1 + fn1, 'E', "\0\0\0\0\0", 5);
    fn1 += msg(fe1 + fn1, 'E', "p\0\0\0\0\0", 6);
    fn1 += msg(fe1 + fn1, 'S', "", 0);
    bn1 += msg(be1 + bn1, 'D', "\0\1\0\0\0\1" "1", 7);
    bn1 += msg(be1 + bn1, 'C', "SELECT 1", 9);
    bn1 += msg(be1 + bn1, 'G', "\0\0\0", 3);
    fn2 += msg(fe2 + fn2, 'd', "1\n", 2);
    fn2 += msg(fe2 + fn2, 'c', "", 0);
    fn2 += msg(fe2 + fn2, 'S', "", 0);
    bn2 += msg(be2 + bn2, 'C', "COPY 1", 7);
    bn2 += msg(be2 + bn2, 'Z', "I", 1);
    for (size_t step = 1; step <= 16; step++) {
        struct pgw_track t = run2(fe1, fn1, be1, bn1, fe2, fn2, be2, bn2, step);
        assert_int_equal(t.sync_out, 0);
        assert_true(pgw_track_idle(&t));
    }
}

static void test_bad_length_rejected(void **state)
{
    (void)state;
    uint8_t bad[5] = { 'Q', 0, 0, 0, 3 };
    struct pgw_track t = { .tx_status = 'I' };
    struct pgw_track_stream st = { 0 };
    assert_int_equal(pgw_track_feed(&t, &st, bad, sizeof(bad)), -1);
    uint8_t huge[5] = { 'D', 0x7f, 0xff, 0xff, 0xff };
    struct pgw_track_stream bs = { .backend = true };
    assert_int_equal(pgw_track_feed(&t, &bs, huge, sizeof(huge)), -1);
}

/* An extended-protocol error (prepared.c says which: pgw_track_ext_error)
 * skips the Query sent before its Sync, which then gets no ReadyForQuery;
 * with no Sync sent yet, a Query after it opens no request and the batch
 * stays open until the Sync. */
static void test_query_skipped_after_an_extended_error(void **state)
{
    (void)state;
    struct pgw_track t = { .tx_status = 'I' };
    /* P B E Q S all sent, then the error: one ReadyForQuery in all. */
    const char sent[] = { 'P', 'B', 'E', 'Q', 'S' };
    for (size_t i = 0; i < sizeof(sent); i++)
        pgw_track_frontend(&t, sent[i]);
    assert_int_equal(t.sync_out, 2);
    pgw_track_ext_error(&t, 1, false);
    assert_int_equal(t.sync_out, 1);
    assert_true(pgw_track_ready(&t, 'I'));
    assert_true(pgw_track_idle(&t));
    /* P B E H, the error, then Q Q and the Sync. */
    pgw_track_frontend(&t, 'P');
    pgw_track_frontend(&t, 'B');
    pgw_track_frontend(&t, 'E');
    pgw_track_frontend(&t, 'H');
    pgw_track_ext_error(&t, 0, true);
    assert_true(t.skip_sync);
    assert_false(pgw_track_frontend(&t, 'Q'));
    pgw_track_frontend(&t, 'Q');
    assert_int_equal(t.sync_out, 0);
    assert_false(pgw_track_idle(&t));           /* the server waits for the Sync */
    assert_true(pgw_track_frontend(&t, 'S'));
    assert_false(t.skip_sync);
    assert_int_equal(t.sync_out, 1);
    assert_true(pgw_track_ready(&t, 'I'));
    assert_true(pgw_track_idle(&t));
    /* After the Sync a Query is a request again. */
    pgw_track_frontend(&t, 'Q');
    assert_int_equal(t.sync_out, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_query_then_idle),
        cmocka_unit_test(test_pipeline_two_syncs_needs_both_ready),
        cmocka_unit_test(test_open_batch_blocks_release),
        cmocka_unit_test(test_transaction_status_blocks_release),
        cmocka_unit_test(test_copy_in_extended_ignores_inner_sync),
        cmocka_unit_test(test_copy_done_outside_copy_takes_nothing_back),
        cmocka_unit_test(test_copy_in_response_of_an_earlier_execute_takes_nothing_back),
        cmocka_unit_test(test_copy_in_after_an_answered_execute_takes_its_sync_back),
        cmocka_unit_test(test_bad_length_rejected),
        cmocka_unit_test(test_query_skipped_after_an_extended_error),
    };
    return cmocka_run_group_tests_name("track", tests, NULL, NULL);
}
