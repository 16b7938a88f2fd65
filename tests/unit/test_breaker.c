/*
 * test_breaker.c - unit tests for the circuit breaker state machine
 * (pool/breaker.c) with a hand-driven clock: threshold, cooldown doubling
 * and its cap, exactly one half-open probe, success closes, late failures,
 * probe abort, threshold 0 = disabled, reconfiguration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <cmocka.h>

/* cmocka 1.1 compares floats only in single precision. */
#define assert_double_equal(a, b, eps)                                        \
    do {                                                                      \
        double a_ = (a), b_ = (b);                                            \
        if (fabs(a_ - b_) > (eps))                                            \
            fail_msg("%s = %.9f, want %.9f", #a, a_, b_);                     \
    } while (0)

#include "pool/breaker.h"

static void t_threshold_opens(void **state)
{
    struct pgw_breaker b;
    bool probe;
    pgw_breaker_init(&b, 3, 1.0, 30.0);
    assert_int_equal(b.state, PGW_BREAKER_CLOSED);
    assert_true(pgw_breaker_allow(&b, 100.0, &probe));
    assert_false(probe);
    assert_false(pgw_breaker_failure(&b, 100.0, false));
    assert_false(pgw_breaker_failure(&b, 100.1, false));
    assert_false(pgw_breaker_blocked(&b, 100.1));
    assert_true(pgw_breaker_failure(&b, 100.2, false));
    assert_int_equal(b.state, PGW_BREAKER_OPEN);
    assert_int_equal(b.trips, 1);
    assert_int_equal(b.failures, 3);
    assert_true(pgw_breaker_blocked(&b, 100.2));
    assert_true(pgw_breaker_blocked(&b, 101.1));
    assert_false(pgw_breaker_allow(&b, 101.1, &probe));
    assert_double_equal(b.next_probe, 101.2, 1e-9);
}

static void t_success_resets_count(void **state)
{
    struct pgw_breaker b;
    pgw_breaker_init(&b, 3, 1.0, 30.0);
    pgw_breaker_failure(&b, 1, false);
    pgw_breaker_failure(&b, 2, false);
    pgw_breaker_success(&b);
    assert_int_equal(b.failures, 0);
    assert_false(pgw_breaker_failure(&b, 3, false));
    assert_false(pgw_breaker_failure(&b, 4, false));
    assert_int_equal(b.state, PGW_BREAKER_CLOSED);
}

static void t_single_probe_then_close(void **state)
{
    struct pgw_breaker b;
    bool probe;
    pgw_breaker_init(&b, 1, 2.0, 30.0);
    assert_true(pgw_breaker_failure(&b, 10.0, false));
    assert_false(pgw_breaker_allow(&b, 11.9, &probe));
    /* cooldown over: one probe, and only one */
    assert_false(pgw_breaker_blocked(&b, 12.0));
    assert_true(pgw_breaker_allow(&b, 12.0, &probe));
    assert_true(probe);
    assert_int_equal(b.state, PGW_BREAKER_HALF_OPEN);
    assert_true(pgw_breaker_blocked(&b, 12.0));
    assert_false(pgw_breaker_allow(&b, 12.0, &probe));
    assert_false(pgw_breaker_allow(&b, 99.0, &probe));
    pgw_breaker_success(&b);
    assert_int_equal(b.state, PGW_BREAKER_CLOSED);
    assert_int_equal(b.failures, 0);
    assert_double_equal(b.cooldown, 2.0, 1e-9);
    assert_true(pgw_breaker_allow(&b, 12.1, &probe));
    assert_false(probe);
}

static void t_cooldown_doubles_to_max(void **state)
{
    struct pgw_breaker b;
    bool probe;
    double now = 0;
    pgw_breaker_init(&b, 2, 1.0, 5.0);
    pgw_breaker_failure(&b, now, false);
    assert_true(pgw_breaker_failure(&b, now, false));
    const double want[] = { 2.0, 4.0, 5.0, 5.0 };
    for (int i = 0; i < 4; i++) {
        now = b.next_probe;
        assert_false(pgw_breaker_allow(&b, now - 0.001, &probe));
        assert_true(pgw_breaker_allow(&b, now, &probe));
        assert_true(probe);
        assert_true(pgw_breaker_failure(&b, now, true));
        assert_int_equal(b.state, PGW_BREAKER_OPEN);
        assert_double_equal(b.cooldown, want[i], 1e-9);
        assert_double_equal(b.next_probe, now + want[i], 1e-9);
    }
    assert_int_equal(b.trips, 5);
    /* success resets the cooldown to the base */
    now = b.next_probe;
    assert_true(pgw_breaker_allow(&b, now, &probe));
    pgw_breaker_success(&b);
    assert_double_equal(b.cooldown, 1.0, 1e-9);
    pgw_breaker_failure(&b, now, false);
    assert_true(pgw_breaker_failure(&b, now, false));
    assert_double_equal(b.next_probe, now + 1.0, 1e-9);
}

static void t_late_failure_while_open(void **state)
{
    struct pgw_breaker b;
    pgw_breaker_init(&b, 1, 1.0, 8.0);
    assert_true(pgw_breaker_failure(&b, 0, false));
    /* attempts started before the trip fail later: no new trip, no push */
    assert_false(pgw_breaker_failure(&b, 0.5, false));
    assert_double_equal(b.next_probe, 1.0, 1e-9);
    assert_int_equal(b.trips, 1);
    /* and in half-open, a non-probe failure does not re-open */
    bool probe;
    assert_true(pgw_breaker_allow(&b, 1.0, &probe));
    assert_false(pgw_breaker_failure(&b, 1.1, false));
    assert_int_equal(b.state, PGW_BREAKER_HALF_OPEN);
}

static void t_probe_abort(void **state)
{
    struct pgw_breaker b;
    bool probe;
    pgw_breaker_init(&b, 1, 1.0, 8.0);
    pgw_breaker_failure(&b, 0, false);
    assert_true(pgw_breaker_allow(&b, 1.0, &probe));
    pgw_breaker_probe_abort(&b, 1.5);
    assert_int_equal(b.state, PGW_BREAKER_OPEN);
    assert_double_equal(b.cooldown, 1.0, 1e-9);
    assert_true(pgw_breaker_allow(&b, 1.5, &probe));
    assert_true(probe);
}

static void t_disabled(void **state)
{
    struct pgw_breaker b;
    bool probe;
    pgw_breaker_init(&b, 0, 1.0, 8.0);
    for (int i = 0; i < 100; i++)
        assert_false(pgw_breaker_failure(&b, i, false));
    assert_int_equal(b.state, PGW_BREAKER_CLOSED);
    assert_true(pgw_breaker_allow(&b, 100, &probe));
    assert_int_equal(b.failures, 100);
}

static void t_reconfigure(void **state)
{
    struct pgw_breaker b;
    pgw_breaker_init(&b, 1, 1.0, 30.0);
    pgw_breaker_failure(&b, 0, false);
    assert_int_equal(b.state, PGW_BREAKER_OPEN);
    pgw_breaker_configure(&b, 1, 4.0, 30.0, 0);   /* raises the cooldown in force */
    assert_double_equal(b.cooldown, 4.0, 1e-9);
    pgw_breaker_configure(&b, 0, 4.0, 30.0, 0);   /* disabling closes it */
    assert_int_equal(b.state, PGW_BREAKER_CLOSED);
    assert_false(pgw_breaker_blocked(&b, 0));
    assert_string_equal(pgw_breaker_state_name(PGW_BREAKER_HALF_OPEN), "half-open");
}

static void t_reconfigure_shortens_the_wait(void **state)
{
    /* Opened under a 30 s cooldown at t=10: a reload at t=12 to 1 s / 2 s
     * brings the probe to t=14 (the cooldown in force, 2 s, from now); it
     * kept t=40. */
    struct pgw_breaker b;
    bool probe;
    pgw_breaker_init(&b, 1, 30.0, 30.0);
    pgw_breaker_failure(&b, 10, false);
    assert_int_equal(b.state, PGW_BREAKER_OPEN);
    assert_double_equal(b.next_probe, 40.0, 1e-9);
    pgw_breaker_configure(&b, 1, 1.0, 2.0, 12);
    assert_double_equal(b.cooldown, 2.0, 1e-9);
    assert_double_equal(b.next_probe, 14.0, 1e-9);
    assert_true(pgw_breaker_blocked(&b, 13.9));
    assert_true(pgw_breaker_allow(&b, 14, &probe));
    assert_true(probe);
    /* a longer cap leaves a nearer probe where it is */
    pgw_breaker_failure(&b, 20, true);
    assert_double_equal(b.next_probe, 22.0, 1e-9);
    pgw_breaker_configure(&b, 1, 10.0, 60.0, 21);
    assert_double_equal(b.next_probe, 22.0, 1e-9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_threshold_opens),
        cmocka_unit_test(t_success_resets_count),
        cmocka_unit_test(t_single_probe_then_close),
        cmocka_unit_test(t_cooldown_doubles_to_max),
        cmocka_unit_test(t_late_failure_while_open),
        cmocka_unit_test(t_probe_abort),
        cmocka_unit_test(t_disabled),
        cmocka_unit_test(t_reconfigure),
        cmocka_unit_test(t_reconfigure_shortens_the_wait),
    };
    return cmocka_run_group_tests_name("breaker", tests, NULL, NULL);
}
