/* test_iobuf.c - the relay's buffers (proxy/proxy.c): a held buffer
 * (notify.c's held ReadyForQuery) keeps its hold on the same byte while
 * compact, insert, cut and reserve move the data, and lets out only what
 * is before it (pgw_iobuf_out_end). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "proxy/proxy_int.h"

/* A buffer of cap bytes holding text, the first `sent` of it written,
 * all of it scanned, held at byte `hold`. */
/* b (cap bytes of room) holding text, parsed, sent up to sent, held at
 * hold. */
static struct pgw_iobuf *fill(struct pgw_iobuf *b, uint32_t cap, const char *text,
                              uint32_t sent, uint32_t hold)
{
    b->cap = cap;
    b->len = b->parsed = (uint32_t)strlen(text);
    memcpy(b->data, text, b->len);
    b->sent = sent;
    b->held = true;
    b->hold = hold;
    return b;
}

static struct pgw_iobuf *buf(uint32_t cap, const char *text, uint32_t sent, uint32_t hold)
{
    struct pgw_iobuf *b = calloc(1, sizeof(*b) + cap);
    assert_non_null(b);
    return fill(b, cap, text, sent, hold);
}

/* The byte the hold is on. */
static char held_byte(const struct pgw_iobuf *b)
{
    return (char)b->data[b->hold];
}

static void test_out_end(void **state)
{
    (void)state;
    struct pgw_iobuf *b = buf(64, "abcZdef", 1, 3);
    assert_int_equal(pgw_iobuf_out_end(b), 3);
    b->held = false;
    assert_int_equal(pgw_iobuf_out_end(b), 7);
    b->held = true;
    b->parsed = 2;                       /* (not scanned that far yet) */
    assert_int_equal(pgw_iobuf_out_end(b), 2);
    free(b);
}

static void test_compact_keeps_the_hold(void **state)
{
    (void)state;
    struct pgw_iobuf *b = buf(64, "abcZdef", 2, 3);
    pgw_iobuf_compact(b);
    assert_int_equal(b->sent, 0);
    assert_int_equal(b->hold, 1);
    assert_int_equal(held_byte(b), 'Z');
    free(b);
}

static void test_insert_before_and_after(void **state)
{
    (void)state;
    struct pgw_iobuf *b = buf(64, "abcZdef", 0, 3);
    assert_true(pgw_iobuf_insert(b, 1, "xy", 2));      /* before: it moves */
    assert_int_equal(held_byte(b), 'Z');
    assert_int_equal(b->hold, 5);
    assert_true(pgw_iobuf_insert(b, 7, "q", 1));       /* after: it stays */
    assert_int_equal(b->hold, 5);
    assert_true(pgw_iobuf_insert(b, 5, "E", 1));       /* at it: held too */
    assert_int_equal(b->hold, 5);
    assert_int_equal(held_byte(b), 'E');
    assert_memory_equal(b->data, "axybcEZdqef", 11);
    free(b);
}

static void test_insert_that_compacts(void **state)
{
    (void)state;
    struct pgw_iobuf *b = buf(8, "abcZdef", 2, 3);     /* full but for one byte */
    assert_true(pgw_iobuf_insert(b, 5, "xy", 2));      /* compacts first */
    assert_int_equal(b->sent, 0);
    assert_int_equal(held_byte(b), 'Z');
    assert_int_equal(b->hold, 1);
    free(b);
}

static void test_cut(void **state)
{
    (void)state;
    struct pgw_iobuf *b = buf(64, "abcZdef", 0, 3);
    pgw_iobuf_cut(b, 4, 2);                            /* after it */
    assert_int_equal(b->hold, 3);
    pgw_iobuf_cut(b, 0, 2);                            /* before it */
    assert_int_equal(b->hold, 1);
    assert_int_equal(held_byte(b), 'Z');
    pgw_iobuf_cut(b, 0, 2);                            /* through it: at the cut */
    assert_int_equal(b->hold, 0);
    free(b);
}

/* A mapping of cap bytes (not PGW_IOBUF_SIZE: pgw_iobuf_put unmaps it, as
 * a buffer grown before), as buf(). */
static struct pgw_iobuf *mapped(uint32_t cap, const char *text, uint32_t sent, uint32_t hold)
{
    void *m = mmap(NULL, sizeof(struct pgw_iobuf) + cap, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    return fill(m, cap, text, sent, hold);
}

static void test_reserve_moves_the_hold(void **state)
{
    (void)state;
    struct pgw_proxy px;
    memset(&px, 0, sizeof(px));
    struct pgw_iobuf *b = mapped(16, "abcZdefg", 2, 3);
    assert_true(pgw_iobuf_reserve(&px, &b, 16));       /* room enough: stays */
    assert_int_equal(b->sent, 2);
    assert_int_equal(b->hold, 3);
    assert_true(pgw_iobuf_reserve(&px, &b, 4096));     /* a new mapping, from sent */
    assert_true(b->cap >= 4096);
    assert_int_equal(b->sent, 0);
    assert_int_equal(b->parsed, 6);
    assert_int_equal(b->len, 6);
    assert_true(b->held);
    assert_int_equal(b->hold, 1);
    assert_int_equal(held_byte(b), 'Z');
    assert_int_equal(pgw_iobuf_out_end(b), 1);
    assert_memory_equal(b->data, "cZdefg", 6);
    b->held = false;                                   /* not held: none moved in */
    b->hold = 0;
    b->sent = 1;
    uint32_t cap = b->cap;
    assert_true(pgw_iobuf_reserve(&px, &b, cap + 1));
    assert_false(b->held);
    assert_int_equal(b->hold, 0);
    assert_int_equal(pgw_iobuf_out_end(b), 5);
    pgw_iobuf_put(&px, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_end),
        cmocka_unit_test(test_compact_keeps_the_hold),
        cmocka_unit_test(test_insert_before_and_after),
        cmocka_unit_test(test_insert_that_compacts),
        cmocka_unit_test(test_cut),
        cmocka_unit_test(test_reserve_moves_the_hold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
