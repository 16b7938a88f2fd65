/*
 * test_names.c - the set of names (common/names.h) behind PAUSE db and
 * DISABLE: add is idempotent, remove says whether the name was there, clear
 * and deinit leave an empty set that takes names again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/names.h"

static void t_add_find_remove(void **state)
{
    (void)state;
    struct pgw_names ns;
    pgw_names_init(&ns);
    assert_false(pgw_names_has(&ns, "a"));
    assert_int_equal(pgw_names_add(&ns, "a"), 1);
    assert_int_equal(pgw_names_add(&ns, "b"), 1);
    assert_int_equal(pgw_names_add(&ns, "a"), 0);      /* already there */
    assert_int_equal(ns.n, 2);
    assert_true(pgw_names_has(&ns, "a"));
    assert_true(pgw_names_has(&ns, "b"));
    assert_false(pgw_names_has(&ns, "ab"));
    assert_true(pgw_names_remove(&ns, "a"));
    assert_false(pgw_names_remove(&ns, "a"));
    assert_false(pgw_names_has(&ns, "a"));
    assert_true(pgw_names_has(&ns, "b"));              /* moved into a's place */
    assert_int_equal(ns.n, 1);
    pgw_names_deinit(&ns);
    assert_int_equal(ns.n, 0);
    assert_null(ns.v);
}

static void t_clear_then_reuse(void **state)
{
    (void)state;
    struct pgw_names ns = { 0 };                       /* zeroed = empty */
    char name[8];
    for (int i = 0; i < 20; i++) {
        name[0] = (char)('a' + i);
        name[1] = '\0';
        assert_int_equal(pgw_names_add(&ns, name), 1);
    }
    pgw_names_clear(&ns);
    assert_int_equal(ns.n, 0);
    assert_false(pgw_names_has(&ns, "a"));
    assert_false(pgw_names_remove(&ns, "a"));
    assert_int_equal(pgw_names_add(&ns, "a"), 1);
    assert_true(pgw_names_has(&ns, "a"));
    pgw_names_deinit(&ns);
    pgw_names_deinit(&ns);                             /* twice is harmless */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_add_find_remove),
        cmocka_unit_test(t_clear_then_reuse),
    };
    return cmocka_run_group_tests_name("names", tests, NULL, NULL);
}
