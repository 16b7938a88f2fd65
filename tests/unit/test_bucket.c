/*
 * test_bucket.c - unit tests for the connect-rate token bucket
 * (pool/bucket.c) with a hand-driven clock: burst, refill, the wait until
 * the next token, rate 0 = unlimited, default burst, reconfiguration.
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

static void t_burst_then_refill(void **state)
{
    struct pgw_bucket tb;
    pgw_bucket_init(&tb, 10.0, 3, 50.0);
    for (int i = 0; i < 3; i++)
        assert_true(pgw_bucket_take(&tb, 50.0));
    assert_false(pgw_bucket_take(&tb, 50.0));
    assert_double_equal(pgw_bucket_wait(&tb, 50.0), 0.1, 1e-9);
    assert_double_equal(pgw_bucket_wait(&tb, 50.05), 0.05, 1e-9);
    assert_false(pgw_bucket_take(&tb, 50.09));
    assert_true(pgw_bucket_take(&tb, 50.1));
    assert_false(pgw_bucket_take(&tb, 50.1));
    /* a long pause refills only up to the burst */
    assert_double_equal(pgw_bucket_wait(&tb, 1000.0), 0, 1e-9);
    for (int i = 0; i < 3; i++)
        assert_true(pgw_bucket_take(&tb, 1000.0));
    assert_false(pgw_bucket_take(&tb, 1000.0));
}

static void t_unlimited(void **state)
{
    struct pgw_bucket tb;
    pgw_bucket_init(&tb, 0, 0, 0);
    for (int i = 0; i < 10000; i++)
        assert_true(pgw_bucket_take(&tb, 0));
    assert_double_equal(pgw_bucket_wait(&tb, 0), 0, 1e-9);
}

static void t_default_burst(void **state)
{
    struct pgw_bucket tb;
    pgw_bucket_init(&tb, 5.0, 0, 0);          /* burst = rate */
    int n = 0;
    while (pgw_bucket_take(&tb, 0))
        n++;
    assert_int_equal(n, 5);
    pgw_bucket_init(&tb, 0.5, 0, 0);          /* at least 1 */
    assert_true(pgw_bucket_take(&tb, 0));
    assert_false(pgw_bucket_take(&tb, 0));
    assert_double_equal(pgw_bucket_wait(&tb, 0), 2.0, 1e-9);
    assert_true(pgw_bucket_take(&tb, 2.0));
}

/* A rate past INT_MAX (the config takes up to 1e12) made the default
 * burst (int)rate, undefined: INT_MIN on x86, and every connection then
 * waited about a second for a token. */
static void t_huge_rate_takes_at_once(void **state)
{
    struct pgw_bucket tb;
    for (double rate = 2147483647.0; rate < 2e12; rate *= 10) {
        pgw_bucket_init(&tb, rate, 0, 0);
        for (int i = 0; i < 1000; i++)
            assert_true(pgw_bucket_take(&tb, 0));
        assert_double_equal(pgw_bucket_wait(&tb, 0), 0, 1e-9);
        pgw_bucket_configure(&tb, rate * 2, 0, 0);
        assert_true(pgw_bucket_take(&tb, 0));
    }
}

static void t_steady_rate(void **state)
{
    struct pgw_bucket tb;
    pgw_bucket_init(&tb, 4.0, 1, 0);
    int n = 0;
    for (double t = 0; t < 10.0 - 1e-9; t += 0.01)
        if (pgw_bucket_take(&tb, t))
            n++;
    /* 1 at start + 4/s for ~10 s */
    assert_in_range(n, 39, 41);
}

static void t_configure(void **state)
{
    struct pgw_bucket tb;
    pgw_bucket_init(&tb, 1.0, 5, 0);
    for (int i = 0; i < 5; i++)
        assert_true(pgw_bucket_take(&tb, 0));
    pgw_bucket_configure(&tb, 100.0, 2, 0);    /* tokens kept: still empty */
    assert_false(pgw_bucket_take(&tb, 0));
    assert_true(pgw_bucket_take(&tb, 0.01));
    pgw_bucket_configure(&tb, 0, 0, 1.0);      /* unlimited */
    assert_true(pgw_bucket_take(&tb, 1.0));
    pgw_bucket_configure(&tb, 1.0, 2, 1.0);    /* from unlimited: starts full */
    assert_true(pgw_bucket_take(&tb, 1.0));
    assert_true(pgw_bucket_take(&tb, 1.0));
    assert_false(pgw_bucket_take(&tb, 1.0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_burst_then_refill),
        cmocka_unit_test(t_unlimited),
        cmocka_unit_test(t_default_burst),
        cmocka_unit_test(t_huge_rate_takes_at_once),
        cmocka_unit_test(t_steady_rate),
        cmocka_unit_test(t_configure),
    };
    return cmocka_run_group_tests_name("bucket", tests, NULL, NULL);
}
