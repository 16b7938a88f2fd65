/*
 * bucket.c - the connect-rate token bucket (one per backend).  Pure: the
 * caller passes the clock.
 */
#include "pool/breaker.h"

static double bucket_burst(double rate, int burst)
{
    if (burst > 0)
        return burst;
    if (rate >= 2147483647.0)   /* (past int: the cast is undefined) */
        return 2147483647.0;
    return rate > 1 ? (double)(int)rate : 1;
}

static void bucket_refill(struct pgw_bucket *tb, double now)
{
    if (now > tb->last) {
        tb->tokens += (now - tb->last) * tb->rate;
        if (tb->tokens > tb->burst)
            tb->tokens = tb->burst;
    }
    tb->last = now;
}

void pgw_bucket_init(struct pgw_bucket *tb, double rate, int burst, double now)
{
    tb->rate = rate > 0 ? rate : 0;
    tb->burst = bucket_burst(rate, burst);
    tb->tokens = tb->burst;
    tb->last = now;
}

void pgw_bucket_configure(struct pgw_bucket *tb, double rate, int burst, double now)
{
    if (tb->rate > 0)
        bucket_refill(tb, now);
    else
        tb->tokens = bucket_burst(rate, burst);   /* was unlimited: start full */
    tb->rate = rate > 0 ? rate : 0;
    tb->burst = bucket_burst(rate, burst);
    if (tb->tokens > tb->burst)
        tb->tokens = tb->burst;
    tb->last = now;
}

bool pgw_bucket_take(struct pgw_bucket *tb, double now)
{
    if (tb->rate <= 0)
        return true;
    bucket_refill(tb, now);
    if (tb->tokens < 1)
        return false;
    tb->tokens -= 1;
    return true;
}

void pgw_bucket_put_back(struct pgw_bucket *tb)
{
    if (tb->rate <= 0)
        return;
    tb->tokens += 1;
    if (tb->tokens > tb->burst)
        tb->tokens = tb->burst;
}

double pgw_bucket_wait(const struct pgw_bucket *tb, double now)
{
    if (tb->rate <= 0)
        return 0;
    double tokens = tb->tokens;
    if (now > tb->last)
        tokens += (now - tb->last) * tb->rate;
    if (tokens >= 1)
        return 0;
    return (1 - tokens) / tb->rate;
}
