/*
 * clock.c - the per-loop monotonic clock (see clock.h).
 *
 * Owns nothing: the struct pgw_clock belongs to whoever owns the loop.
 */
#include "common/clock.h"
#include "common/log.h"

#include <stddef.h>
#include <stdlib.h>
#include <time.h>

ev_tstamp pgw_clock_read(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return PGW_CLOCK_EPOCH + (ev_tstamp)ts.tv_sec + (ev_tstamp)ts.tv_nsec * 1e-9;
}

/* libev's invoke-pending hook: runs before the callbacks of each batch of
 * pending events (after the poll, and before prepare watchers), which is
 * when libev itself has just updated ev_now(). */
static void clock_invoke(struct ev_loop *loop)
{
    struct pgw_clock *clk = ev_userdata(loop);
    if (clk)
        clk->now = pgw_clock_read();
    ev_invoke_pending(loop);
}

void pgw_clock_attach(struct pgw_clock *clk, struct ev_loop *loop)
{
    clk->now = pgw_clock_read();
    ev_set_userdata(loop, clk);
    ev_set_invoke_pending_cb(loop, clock_invoke);
}

void pgw_clock_detach(struct ev_loop *loop)
{
    ev_set_invoke_pending_cb(loop, ev_invoke_pending);
    ev_set_userdata(loop, NULL);
}

ev_tstamp pgw_mono_now(struct ev_loop *loop)
{
    const struct pgw_clock *clk = ev_userdata(loop);
    return clk ? clk->now : pgw_clock_read();
}

ev_tstamp pgw_clock_wall(ev_tstamp mono)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ev_tstamp wall = (ev_tstamp)ts.tv_sec + (ev_tstamp)ts.tv_nsec * 1e-9;
    return wall - (pgw_clock_read() - mono);
}

double pgw_env_seconds(const char *name, double def, double min, double max, const char *event)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    double t = strtod(v, &end);
    if (*end || !(t >= min) || t > max) {
        pgw_warn(event, "reason=\"%s=%s is not a number of seconds (%g to %g), using %g\"", name,
                 v, min, max, def);
        return def;
    }
    return t;
}
