/*
 * clock.h - the monotonic "now" that every duration and deadline uses.
 *
 * ev_now() is libev's copy of the wall clock: an NTP step or date(1) moves
 * it, and a deadline kept on it (a breaker's next probe, a login refusal
 * window, server_lifetime, client_idle_timeout...) then comes an hour late
 * after a step back, or everything expires at once after a step forward.
 * pgw_mono_now(loop) is CLOCK_MONOTONIC instead, which no step moves.
 *
 * Per loop, no globals: pgw_clock_attach() gives a loop a struct pgw_clock
 * (the loop's userdata and its invoke-pending hook are the clock's from
 * then on); the clock is then read once per loop iteration, after the poll,
 * so that every callback of one iteration sees the same "now", as with
 * ev_now().  On a loop with no clock attached every call reads the clock.
 *
 * The values are CLOCK_MONOTONIC plus PGW_CLOCK_EPOCH, so that 0, which the
 * code uses for "never" / "not set", stays decades in the past as it was
 * on the wall clock (CLOCK_MONOTONIC itself starts near 0 at boot).
 *
 * Wall-clock time is for display only (SHOW CLIENTS/SERVERS/BREAKERS
 * times, log lines): pgw_clock_wall() turns a monotonic timestamp into the
 * wall-clock time it stands for now.
 */
#ifndef PGW_COMMON_CLOCK_H
#define PGW_COMMON_CLOCK_H

#include <ev.h>

#define PGW_CLOCK_EPOCH 1e9

struct pgw_clock {
    ev_tstamp now;              /* read when the loop last invoked callbacks */
};

/* clk must outlive the loop's use (its owner keeps both). */
void pgw_clock_attach(struct pgw_clock *clk, struct ev_loop *loop);
void pgw_clock_detach(struct ev_loop *loop);

/* The loop iteration's monotonic time in seconds. */
ev_tstamp pgw_mono_now(struct ev_loop *loop);
/* The monotonic clock read now, bypassing any cache. */
ev_tstamp pgw_clock_read(void);
/* The wall-clock time (seconds since the epoch) of a pgw_mono_now() value:
 * now's wall clock minus the time elapsed since mono. */
ev_tstamp pgw_clock_wall(ev_tstamp mono);

/* Seconds from environment variable name (a knob for tests), or def when
 * it is unset or empty; one that is not a number in [min, max] is warned
 * under event and def used instead. */
double pgw_env_seconds(const char *name, double def, double min, double max, const char *event);

#endif
