/*
 * test_array.c - room in a doubling array (common/array.h): the first
 * allocation takes `first`, a full array doubles and keeps its elements,
 * one with room is not touched, and a size that would overflow fails with
 * the array and its capacity unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "common/array.h"

static void t_grows_by_doubling(void **state)
{
    (void)state;
    int *v = NULL;
    size_t n = 0, cap = 0;
    static const size_t caps[] = { 4, 4, 4, 4, 8, 8, 8, 8, 16 };   /* cap after element i */
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        int *grown = pgw_array_grow(v, sizeof(*v), n, &cap, 4);
        assert_non_null(grown);
        assert_int_equal(cap, caps[i]);
        v = grown;
        v[n++] = (int)i * 10;
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(v[i], (int)i * 10);          /* kept across the moves */
    free(v);
}

static void t_room_left_is_not_touched(void **state)
{
    (void)state;
    size_t cap = 8;
    int *v = malloc(cap * sizeof(*v));
    assert_non_null(v);
    for (size_t n = 0; n < cap; n++)
        assert_ptr_equal(pgw_array_grow(v, sizeof(*v), n, &cap, 2), v);
    assert_int_equal(cap, 8);
    free(v);
}

static void t_past_the_end_grows_past_n(void **state)
{
    (void)state;
    size_t cap = 0;
    char *v = pgw_array_grow(NULL, 1, 9, &cap, 2);   /* 2, 4, 8, 16 */
    assert_non_null(v);
    assert_int_equal(cap, 16);
    free(v);
}

static void t_overflow_fails_unchanged(void **state)
{
    (void)state;
    size_t cap = 4;
    uint64_t *v = calloc(cap, sizeof(*v));
    assert_non_null(v);
    v[3] = 42;
    size_t huge = SIZE_MAX / sizeof(*v) / 2 + 1;      /* twice it overflows */
    size_t hcap = huge;
    assert_null(pgw_array_grow(v, sizeof(*v), huge, &hcap, 4));
    assert_int_equal(hcap, huge);
    hcap = SIZE_MAX / 2 + 1;                          /* doubling overflows */
    assert_null(pgw_array_grow(v, sizeof(*v), hcap, &hcap, 4));
    assert_int_equal(hcap, SIZE_MAX / 2 + 1);
    assert_int_equal(v[3], 42);                       /* still valid */
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_grows_by_doubling),
        cmocka_unit_test(t_room_left_is_not_touched),
        cmocka_unit_test(t_past_the_end_grows_past_n),
        cmocka_unit_test(t_overflow_fails_unchanged),
    };
    return cmocka_run_group_tests_name("array", tests, NULL, NULL);
}
