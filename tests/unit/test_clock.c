/*
 * test_clock.c - the per-loop monotonic clock (common/clock.h): one "now"
 * for every callback of a loop iteration, a later one in the next
 * iteration, a fresh read on a loop without a clock, 0 ("never") far in
 * its past, and display as wall-clock time.
 *
 * No assertion depends on how long anything takes: where time must have
 * passed, the test spins until the raw clock has moved.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <cmocka.h>

#include "common/clock.h"

struct seen {
    ev_timer t[2];
    ev_tstamp at[2];
    int fired;
};

/* The raw clock strictly past t (it has a resolution; spin, never sleep). */
static void spin_past(ev_tstamp t)
{
    while (pgw_clock_read() <= t)
        ;
}

/* Records the loop's now, then lets time pass before the next callback. */
static void seen_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct seen *s = w->data;
    (void)revents;
    s->at[s->fired++] = pgw_mono_now(loop);
    spin_past(pgw_mono_now(loop));
}

/* Two timers due at once fire in one iteration: both see the same now
 * though time passed in the first one's callback; the next iteration sees
 * a later one. */
static void t_one_now_per_iteration(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct pgw_clock clk;
    struct seen s = { .fired = 0 };
    assert_non_null(loop);
    pgw_clock_attach(&clk, loop);
    for (int i = 0; i < 2; i++) {
        ev_timer_init(&s.t[i], seen_cb, 0, 0);
        s.t[i].data = &s;
        ev_timer_start(loop, &s.t[i]);
    }
    while (s.fired < 2)
        ev_run(loop, EVRUN_ONCE);
    assert_true(s.at[0] == s.at[1]);
    assert_true(pgw_mono_now(loop) == s.at[0]);      /* outside callbacks too */

    s.fired = 0;
    ev_timer_set(&s.t[0], 0, 0);
    ev_timer_start(loop, &s.t[0]);
    while (s.fired < 1)
        ev_run(loop, EVRUN_ONCE);
    assert_true(s.at[0] > s.at[1]);

    pgw_clock_detach(loop);
    ev_loop_destroy(loop);
}

/* Without a clock attached (or once detached) every call reads the clock. */
static void t_no_clock_reads_each_time(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(loop);
    ev_tstamp t1 = pgw_mono_now(loop);
    spin_past(t1);
    assert_true(pgw_mono_now(loop) > t1);

    struct pgw_clock clk;
    pgw_clock_attach(&clk, loop);
    ev_tstamp cached = pgw_mono_now(loop);
    spin_past(cached);
    assert_true(pgw_mono_now(loop) == cached);
    pgw_clock_detach(loop);
    assert_true(pgw_mono_now(loop) > cached);
    ev_loop_destroy(loop);
}

/* 0 means "never" to the code (no deadline, no last use): it must stay
 * far in the past, as it was on the wall clock, even just after boot. */
static void t_zero_is_long_ago(void **state)
{
    (void)state;
    assert_true(pgw_clock_read() > PGW_CLOCK_EPOCH);
    assert_true(PGW_CLOCK_EPOCH > 100.0 * 365 * 86400 / 4);   /* > 25 years */
}

/* Shown as wall-clock time: now is now, ten seconds ago is ten seconds
 * before (bounds only, for a slow machine). */
static void t_wall_of_monotonic(void **state)
{
    (void)state;
    ev_tstamp m = pgw_clock_read();
    ev_tstamp w = pgw_clock_wall(m), w10 = pgw_clock_wall(m - 10);
    ev_tstamp real = (ev_tstamp)time(NULL);
    assert_true(w > real - 60 && w < real + 60);
    assert_true(w - w10 > 9 && w - w10 < 11);
}

/* A test knob from the environment: its value when it is a number of
 * seconds in range, the default otherwise. */
static void t_env_seconds(void **state)
{
    (void)state;
    const char *n = "PGW_TEST_CLOCK_SECONDS";
    unsetenv(n);
    assert_true(pgw_env_seconds(n, 1.5, 0.01, 10, "test") == 1.5);
    setenv(n, "", 1);
    assert_true(pgw_env_seconds(n, 1.5, 0.01, 10, "test") == 1.5);
    setenv(n, "0.25", 1);
    assert_true(pgw_env_seconds(n, 1.5, 0.01, 10, "test") == 0.25);
    const char *bad[] = { "2s", "abc", "0", "11", "nan", "-1" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv(n, bad[i], 1);
        assert_true(pgw_env_seconds(n, 1.5, 0.01, 10, "test") == 1.5);
    }
    setenv(n, "0", 1);                   /* in range when the minimum is 0 */
    assert_true(pgw_env_seconds(n, 1.5, 0, 10, "test") == 0);
    unsetenv(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_one_now_per_iteration),
        cmocka_unit_test(t_no_clock_reads_each_time),
        cmocka_unit_test(t_zero_is_long_ago),
        cmocka_unit_test(t_wall_of_monotonic),
        cmocka_unit_test(t_env_seconds),
    };
    return cmocka_run_group_tests_name("clock", tests, NULL, NULL);
}
