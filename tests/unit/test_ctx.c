/*
 * test_ctx.c - unit tests for ctx/: cancel propagation, deadlines (kept
 * distinct from cancels), subscription order and removal, reentrant
 * callbacks that cancel, create and release, values, and a random stress.
 *
 * Every test steps a fresh ev_loop.  Deadlines are tiny and the loop is run
 * until the callback fires (with a wall-time bound, never a sleep); the
 * assertion is on the error kind and on pgw_mono_now() (the loop's clock,
 * attached as pgwharf's main does) at firing time.  Teardown
 * releases the background context and checks that no watcher is left.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/clock.h"
#include "common/err.h"
#include "ctx/ctx.h"
#include "testutil.h"

#define WAIT_BOUND 5.0      /* seconds of wall time, a bound only */

struct fx {
    struct ev_loop *loop;
    struct pgw_clock clock;
    struct pgw_ctx *bg;     /* NULL once a test released it itself */
    int log[256];           /* probe ids in firing order */
    int nlog;
};

struct probe;
typedef void (*probe_action)(struct probe *p);

struct probe {
    struct pgw_ctx_sub sub;
    struct fx *fx;
    int id;
    int fired;
    int err;
    ev_tstamp now;          /* pgw_mono_now() when it fired */
    bool flag;              /* set on firing, for pgw_test_run_until */
    probe_action action;    /* optional extra work inside the callback */
    void *target;
    void *target2;
};

static void probe_cb(struct pgw_ctx_sub *sub, int err)
{
    struct probe *p = pgw_container_of(sub, struct probe, sub);

    p->fired++;
    p->err = err;
    p->now = pgw_mono_now(p->fx->loop);
    p->flag = true;
    if (p->fx->nlog < (int)(sizeof(p->fx->log) / sizeof(p->fx->log[0])))
        p->fx->log[p->fx->nlog++] = p->id;
    if (p->action)
        p->action(p);
}

static void probe_init(struct fx *fx, struct probe *p, int id)
{
    memset(p, 0, sizeof(*p));
    pgw_ctx_sub_init(&p->sub);
    p->fx = fx;
    p->id = id;
}

/* Initialise p and subscribe it to c, which must be live. */
static void probe_on(struct fx *fx, struct probe *p, int id, struct pgw_ctx *c)
{
    probe_init(fx, p, id);
    assert_int_equal(pgw_ctx_subscribe(c, &p->sub, probe_cb, p), 0);
    assert_ptr_equal(p->sub.arg, p);
}

static void assert_log(const struct fx *fx, const int *want, int n)
{
    assert_int_equal(fx->nlog, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(fx->log[i], want[i]);
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));

    assert_non_null(fx);
    fx->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(fx->loop);
    pgw_clock_attach(&fx->clock, fx->loop);
    fx->bg = pgw_ctx_background(fx->loop);
    assert_non_null(fx->bg);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;

    pgw_ctx_release(fx->bg);
    /* No watcher of ours is left active or pending. */
    assert_int_equal(ev_pending_count(fx->loop), 0);
    assert_int_equal(ev_run(fx->loop, EVRUN_NOWAIT), 0);
    ev_loop_destroy(fx->loop);
    free(fx);
    return 0;
}

/* ---- basics ------------------------------------------------------------ */

static void t_background(void **state)
{
    struct fx *fx = *state;
    struct probe p;
    static const char key;

    assert_int_equal(pgw_ctx_err(fx->bg), 0);
    assert_false(pgw_ctx_done(fx->bg));
    assert_true(pgw_ctx_deadline(fx->bg) == 0.);
    assert_ptr_equal(pgw_ctx_loop(fx->bg), fx->loop);
    assert_null(pgw_ctx_value(fx->bg, &key));
    assert_int_equal(ev_run(fx->loop, EVRUN_NOWAIT), 0);

    /* Only an explicit cancel ends it; later children are born done. */
    probe_on(fx, &p, 1, fx->bg);
    pgw_ctx_cancel(fx->bg);
    assert_int_equal(pgw_ctx_err(fx->bg), PGW_ECANCELED);
    assert_int_equal(p.fired, 1);
    struct pgw_ctx *c = pgw_ctx_with_timeout(fx->bg, 0.001);
    assert_non_null(c);
    assert_int_equal(pgw_ctx_err(c), PGW_ECANCELED);
    assert_int_equal(ev_run(fx->loop, EVRUN_NOWAIT), 0);   /* no timer */
    pgw_ctx_release(c);
}

static void t_cancel_three_levels(void **state)
{
    struct fx *fx = *state;
    static const char key;
    struct pgw_ctx *a = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *b = pgw_ctx_with_cancel(a);
    struct pgw_ctx *c = pgw_ctx_with_value(b, &key, NULL);
    struct pgw_ctx *s = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *as = pgw_ctx_with_cancel(a);
    struct probe pa, pb, pc, ps, pas;

    probe_on(fx, &pa, 1, a);
    probe_on(fx, &pb, 2, b);
    probe_on(fx, &pc, 3, c);
    probe_on(fx, &ps, 4, s);
    probe_on(fx, &pas, 5, as);

    pgw_ctx_cancel(b);
    assert_int_equal(pgw_ctx_err(b), PGW_ECANCELED);
    assert_int_equal(pgw_ctx_err(c), PGW_ECANCELED);
    assert_int_equal(pgw_ctx_err(a), 0);
    assert_int_equal(pgw_ctx_err(as), 0);
    assert_int_equal(pgw_ctx_err(s), 0);
    assert_int_equal(pgw_ctx_err(fx->bg), 0);
    assert_log(fx, (int[]){2, 3}, 2);
    assert_int_equal(pb.err, PGW_ECANCELED);
    assert_int_equal(pc.err, PGW_ECANCELED);

    pgw_ctx_cancel(a);
    assert_int_equal(pgw_ctx_err(a), PGW_ECANCELED);
    assert_int_equal(pgw_ctx_err(as), PGW_ECANCELED);
    assert_int_equal(pgw_ctx_err(s), 0);
    assert_log(fx, (int[]){2, 3, 1, 5}, 4);
    assert_int_equal(pb.fired, 1);
    assert_int_equal(pc.fired, 1);

    /* Cancelling the root reaches only what is still live. */
    pgw_ctx_cancel(fx->bg);
    assert_int_equal(pgw_ctx_err(s), PGW_ECANCELED);
    assert_log(fx, (int[]){2, 3, 1, 5, 4}, 5);

    pgw_ctx_release(c);
    pgw_ctx_release(b);
    pgw_ctx_release(as);
    pgw_ctx_release(a);
    pgw_ctx_release(s);
}

/* ---- deadlines --------------------------------------------------------- */

static void t_deadline_vs_cancel(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *d = pgw_ctx_with_timeout(fx->bg, 0.005);
    struct pgw_ctx *k = pgw_ctx_with_timeout(fx->bg, 60);
    struct probe pd, pk;

    probe_on(fx, &pd, 1, d);
    probe_on(fx, &pk, 2, k);
    assert_true(pgw_test_run_until(fx->loop, &pd.flag, WAIT_BOUND));
    assert_int_equal(pd.err, PGW_EDEADLINE);
    assert_int_equal(pgw_ctx_err(d), PGW_EDEADLINE);
    assert_true(pd.now >= pgw_ctx_deadline(d));
    assert_int_equal(pgw_ctx_err(k), 0);
    assert_int_equal(pk.fired, 0);

    pgw_ctx_cancel(k);
    assert_int_equal(pgw_ctx_err(k), PGW_ECANCELED);
    assert_int_equal(pk.err, PGW_ECANCELED);
    pgw_ctx_release(d);
    pgw_ctx_release(k);
}

static void t_parent_deadline_cascades(void **state)
{
    struct fx *fx = *state;
    static const char key;
    struct pgw_ctx *p = pgw_ctx_with_timeout(fx->bg, 0.005);
    struct pgw_ctx *c1 = pgw_ctx_with_cancel(p);
    struct pgw_ctx *c2 = pgw_ctx_with_value(c1, &key, NULL);
    struct pgw_ctx *c3 = pgw_ctx_with_timeout(c1, 60);  /* = p's deadline */
    struct probe pp, p1, p2, p3;

    assert_true(pgw_ctx_deadline(c3) == pgw_ctx_deadline(p));
    probe_on(fx, &pp, 1, p);
    probe_on(fx, &p3, 4, c3);
    probe_on(fx, &p2, 3, c2);
    probe_on(fx, &p1, 2, c1);
    assert_true(pgw_test_run_until(fx->loop, &p3.flag, WAIT_BOUND));
    assert_log(fx, (int[]){1, 2, 3, 4}, 4);
    struct probe *all[] = {&pp, &p1, &p2, &p3};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(all[i]->fired, 1);
        assert_int_equal(all[i]->err, PGW_EDEADLINE);
        assert_true(all[i]->now >= pgw_ctx_deadline(p));
    }
    assert_int_equal(pgw_ctx_err(c2), PGW_EDEADLINE);
    assert_int_equal(pgw_ctx_err(fx->bg), 0);
    pgw_ctx_release(p);
    pgw_ctx_release(c1);
    pgw_ctx_release(c2);
    pgw_ctx_release(c3);
}

static void t_child_deadline_min(void **state)
{
    struct fx *fx = *state;
    ev_tstamp now = pgw_mono_now(fx->loop);
    struct pgw_ctx *p = pgw_ctx_with_deadline(fx->bg, now + 100);
    struct pgw_ctx *late = pgw_ctx_with_deadline(p, now + 1000);
    struct pgw_ctx *mid = pgw_ctx_with_deadline(p, now + 10);
    struct pgw_ctx *gc = pgw_ctx_with_timeout(mid, 1000);
    struct pgw_ctx *early = pgw_ctx_with_timeout(p, 0.005);
    struct probe pe, pp, pl;

    assert_true(pgw_ctx_deadline(late) == now + 100);
    assert_true(pgw_ctx_deadline(mid) == now + 10);
    assert_true(pgw_ctx_deadline(gc) == now + 10);
    assert_true(pgw_ctx_deadline(early) == now + 0.005);

    /* The earlier child expires alone. */
    probe_on(fx, &pe, 1, early);
    probe_on(fx, &pp, 2, p);
    probe_on(fx, &pl, 3, late);
    assert_true(pgw_test_run_until(fx->loop, &pe.flag, WAIT_BOUND));
    assert_int_equal(pe.err, PGW_EDEADLINE);
    assert_true(pe.now >= now + 0.005);
    assert_int_equal(pgw_ctx_err(p), 0);
    assert_int_equal(pgw_ctx_err(late), 0);
    assert_int_equal(pgw_ctx_err(mid), 0);
    assert_log(fx, (int[]){1}, 1);

    pgw_ctx_release(gc);
    pgw_ctx_release(mid);
    pgw_ctx_release(early);
    pgw_ctx_release(late);
    pgw_ctx_release(p);
    assert_log(fx, (int[]){1, 3, 2}, 3);
    assert_int_equal(pl.err, PGW_ECANCELED);
}

/* A later child owns no timer: its end comes from the parent's expiry. */
static void t_child_later_deadline_expires_with_parent(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *p = pgw_ctx_with_timeout(fx->bg, 0.003);
    struct pgw_ctx *c = pgw_ctx_with_timeout(p, 0.5);
    struct probe pc;

    probe_on(fx, &pc, 1, c);
    assert_true(pgw_test_run_until(fx->loop, &pc.flag, WAIT_BOUND));
    assert_int_equal(pc.err, PGW_EDEADLINE);
    assert_int_equal(pgw_ctx_err(p), PGW_EDEADLINE);
    assert_true(pc.now >= pgw_ctx_deadline(c));
    /* Releasing the parent alone leaves no timer behind. */
    pgw_ctx_release(p);
    assert_int_equal(ev_run(fx->loop, EVRUN_NOWAIT), 0);
    pgw_ctx_release(c);
}

static void t_past_deadline_not_synchronous(void **state)
{
    struct fx *fx = *state;
    ev_tstamp now = pgw_mono_now(fx->loop);
    struct pgw_ctx *a = pgw_ctx_with_deadline(fx->bg, now - 1);
    struct pgw_ctx *b = pgw_ctx_with_timeout(fx->bg, 0);
    struct pgw_ctx *c = pgw_ctx_with_timeout(fx->bg, -5);
    struct pgw_ctx *ac = pgw_ctx_with_cancel(a);
    struct probe pa, pb, pc, pac;

    assert_int_equal(pgw_ctx_err(a), 0);
    assert_int_equal(pgw_ctx_err(b), 0);
    assert_int_equal(pgw_ctx_err(c), 0);
    assert_int_equal(pgw_ctx_err(ac), 0);
    assert_true(pgw_ctx_deadline(a) == now - 1);
    assert_true(pgw_ctx_deadline(c) == now - 5);
    /* Still live, so subscribing works and fires later. */
    probe_on(fx, &pa, 1, a);
    probe_on(fx, &pb, 2, b);
    probe_on(fx, &pc, 3, c);
    probe_on(fx, &pac, 4, ac);
    assert_int_equal(fx->nlog, 0);

    assert_true(pgw_test_run_until(fx->loop, &pb.flag, WAIT_BOUND));
    assert_true(pgw_test_run_until(fx->loop, &pa.flag, WAIT_BOUND));
    assert_true(pgw_test_run_until(fx->loop, &pc.flag, WAIT_BOUND));
    struct probe *all[] = {&pa, &pb, &pc, &pac};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(all[i]->fired, 1);
        assert_int_equal(all[i]->err, PGW_EDEADLINE);
    }
    assert_true(pb.now >= pgw_ctx_deadline(b));
    pgw_ctx_release(ac);
    pgw_ctx_release(a);
    pgw_ctx_release(b);
    pgw_ctx_release(c);
}

static void t_deadline_values(void **state)
{
    struct fx *fx = *state;
    static const char key;
    ev_tstamp now = pgw_mono_now(fx->loop);
    struct pgw_ctx *plain = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *d = pgw_ctx_with_deadline(fx->bg, now + 50);
    struct pgw_ctx *dc = pgw_ctx_with_cancel(d);
    struct pgw_ctx *dv = pgw_ctx_with_value(d, &key, NULL);
    struct pgw_ctx *later = pgw_ctx_with_deadline(d, now + 60);
    struct pgw_ctx *earlier = pgw_ctx_with_deadline(dv, now + 40);
    struct pgw_ctx *t = pgw_ctx_with_timeout(d, 5);

    assert_true(pgw_ctx_deadline(fx->bg) == 0.);
    assert_true(pgw_ctx_deadline(plain) == 0.);
    assert_true(pgw_ctx_deadline(d) == now + 50);
    assert_true(pgw_ctx_deadline(dc) == now + 50);
    assert_true(pgw_ctx_deadline(dv) == now + 50);
    assert_true(pgw_ctx_deadline(later) == now + 50);
    assert_true(pgw_ctx_deadline(earlier) == now + 40);
    assert_true(pgw_ctx_deadline(t) == pgw_mono_now(fx->loop) + 5);
    /* A done context keeps its deadline. */
    pgw_ctx_cancel(d);
    assert_true(pgw_ctx_deadline(earlier) == now + 40);
    assert_true(pgw_ctx_deadline(d) == now + 50);

    struct pgw_ctx *all[] = {t, earlier, later, dv, dc, d, plain};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        pgw_ctx_release(all[i]);
}

/* ---- first error wins -------------------------------------------------- */

static void t_idempotent_cancel(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *d = pgw_ctx_with_timeout(fx->bg, 0.002);
    struct pgw_ctx *c = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *p = pgw_ctx_with_timeout(fx->bg, 0.002);
    struct pgw_ctx *pc = pgw_ctx_with_cancel(p);
    struct probe pd, pcx, pp, ppc;

    probe_on(fx, &pd, 1, d);
    probe_on(fx, &pcx, 2, c);
    probe_on(fx, &pp, 3, p);
    probe_on(fx, &ppc, 4, pc);

    pgw_ctx_cancel(c);
    pgw_ctx_cancel(c);
    assert_int_equal(pcx.fired, 1);
    assert_int_equal(pgw_ctx_err(c), PGW_ECANCELED);

    pgw_ctx_cancel(pc);       /* child first; parent's deadline later */
    assert_true(pgw_test_run_until(fx->loop, &pd.flag, WAIT_BOUND));
    assert_true(pgw_test_run_until(fx->loop, &pp.flag, WAIT_BOUND));
    pgw_ctx_cancel(d);
    pgw_ctx_cancel(p);
    assert_int_equal(pgw_ctx_err(d), PGW_EDEADLINE);
    assert_int_equal(pgw_ctx_err(p), PGW_EDEADLINE);
    assert_int_equal(pgw_ctx_err(pc), PGW_ECANCELED);
    assert_int_equal(pd.fired, 1);
    assert_int_equal(pp.fired, 1);
    assert_int_equal(ppc.fired, 1);
    assert_int_equal(ppc.err, PGW_ECANCELED);

    /* Release of a done context does not change its error. */
    pgw_ctx_release(pc);
    pgw_ctx_release(p);
    pgw_ctx_release(c);
    pgw_ctx_release(d);
}

/* ---- subscriptions ----------------------------------------------------- */

static void t_callback_order(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *p = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *c = pgw_ctx_with_cancel(p);
    struct pgw_ctx *g = pgw_ctx_with_cancel(c);
    struct pgw_ctx *c2 = pgw_ctx_with_cancel(p);
    struct probe s[7];

    /* Subscribe in an interleaved order; firing is by tree, then FIFO. */
    probe_on(fx, &s[0], 10, c);
    probe_on(fx, &s[1], 1, p);
    probe_on(fx, &s[2], 20, g);
    probe_on(fx, &s[3], 2, p);
    probe_on(fx, &s[4], 30, c2);
    probe_on(fx, &s[5], 11, c);
    probe_on(fx, &s[6], 3, p);
    pgw_ctx_cancel(p);
    assert_log(fx, (int[]){1, 2, 3, 10, 11, 20, 30}, 7);
    for (int i = 0; i < 7; i++)
        assert_int_equal(s[i].fired, 1);

    pgw_ctx_release(g);
    pgw_ctx_release(c);
    pgw_ctx_release(c2);
    pgw_ctx_release(p);
}

static void t_unsubscribe_before_firing(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *c = pgw_ctx_with_cancel(fx->bg);
    struct probe a, b, d, never;

    probe_on(fx, &a, 1, c);
    probe_on(fx, &b, 2, c);
    probe_on(fx, &d, 3, c);
    pgw_ctx_unsubscribe(&b.sub);
    assert_null(b.sub.ctx);
    pgw_ctx_unsubscribe(&b.sub);                  /* twice: no-op */
    probe_init(fx, &never, 4);
    pgw_ctx_unsubscribe(&never.sub);              /* never subscribed */
    pgw_ctx_cancel(c);
    assert_log(fx, (int[]){1, 3}, 2);
    assert_int_equal(b.fired, 0);
    pgw_ctx_unsubscribe(&a.sub);                  /* already fired */
    assert_int_equal(a.fired, 1);
    pgw_ctx_release(c);
}

static void act_unsub_two(struct probe *p)
{
    pgw_ctx_unsubscribe(&((struct probe *)p->target)->sub);
    pgw_ctx_unsubscribe(&((struct probe *)p->target2)->sub);
}

static void t_unsubscribe_in_callback(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *p = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *c = pgw_ctx_with_cancel(p);
    struct probe a, b, cc, d;

    probe_on(fx, &a, 1, p);
    probe_on(fx, &b, 2, p);      /* next in line on the same context */
    probe_on(fx, &cc, 3, c);     /* on a child, queued in the cascade */
    probe_on(fx, &d, 4, c);
    a.action = act_unsub_two;
    a.target = &b;
    a.target2 = &cc;
    pgw_ctx_cancel(p);
    assert_log(fx, (int[]){1, 4}, 2);
    assert_int_equal(b.fired, 0);
    assert_int_equal(cc.fired, 0);
    assert_null(b.sub.ctx);
    assert_null(cc.sub.ctx);
    pgw_ctx_release(c);
    pgw_ctx_release(p);
}

static void t_subscribe_on_done(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *c = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *d = pgw_ctx_with_timeout(fx->bg, 0.001);
    struct probe p, q, wait;

    pgw_ctx_cancel(c);
    probe_init(fx, &p, 1);
    assert_int_equal(pgw_ctx_subscribe(c, &p.sub, probe_cb, &p), PGW_ECANCELED);
    assert_null(p.sub.ctx);
    pgw_ctx_unsubscribe(&p.sub);                  /* harmless */

    probe_on(fx, &wait, 2, d);
    assert_true(pgw_test_run_until(fx->loop, &wait.flag, WAIT_BOUND));
    probe_init(fx, &q, 3);
    assert_int_equal(pgw_ctx_subscribe(d, &q.sub, probe_cb, &q), PGW_EDEADLINE);

    pgw_ctx_cancel(c);
    pgw_ctx_cancel(d);
    ev_run(fx->loop, EVRUN_NOWAIT);
    assert_int_equal(p.fired, 0);
    assert_int_equal(q.fired, 0);
    assert_log(fx, (int[]){2}, 1);
    pgw_ctx_release(c);
    pgw_ctx_release(d);
}

/* A fired subscription can be reused on another context. */
static void act_resubscribe(struct probe *p)
{
    assert_int_equal(pgw_ctx_subscribe(p->target, &p->sub, probe_cb, p), 0);
}

static void t_resubscribe_in_callback(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *a = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *b = pgw_ctx_with_cancel(fx->bg);
    struct probe p;

    probe_on(fx, &p, 1, a);
    p.action = act_resubscribe;
    p.target = b;
    pgw_ctx_cancel(a);
    assert_int_equal(p.fired, 1);
    assert_ptr_equal(p.sub.ctx, b);
    p.action = NULL;
    pgw_ctx_cancel(b);
    assert_int_equal(p.fired, 2);
    pgw_ctx_release(a);
    pgw_ctx_release(b);
}

/* ---- reentrancy -------------------------------------------------------- */

static void act_release_target(struct probe *p)
{
    pgw_ctx_release(p->target);
}

static void t_release_self_in_callback(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *c = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *g = pgw_ctx_with_cancel(c);
    struct probe a, b, pg;

    probe_on(fx, &a, 1, c);
    probe_on(fx, &b, 2, c);
    probe_on(fx, &pg, 3, g);
    a.action = act_release_target;
    a.target = c;
    pgw_ctx_cancel(c);
    /* c's memory outlived its release until its callbacks were done. */
    assert_log(fx, (int[]){1, 2, 3}, 3);
    assert_int_equal(pgw_ctx_err(g), PGW_ECANCELED);
    assert_null(pgw_ctx_value(g, &a));            /* detached, still valid */
    pgw_ctx_release(g);

    /* Releasing a live context whose callback releases it again. */
    struct pgw_ctx *d = pgw_ctx_with_timeout(fx->bg, 30);
    struct probe pd;
    probe_on(fx, &pd, 4, d);
    pd.action = act_release_target;
    pd.target = d;
    pgw_ctx_release(d);
    assert_int_equal(pd.fired, 1);
    assert_int_equal(pd.err, PGW_ECANCELED);
}

static void t_release_other_in_callback(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *p = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *c = pgw_ctx_with_cancel(p);
    struct pgw_ctx *x = pgw_ctx_with_timeout(fx->bg, 30);
    struct probe a, b, pc, px;

    probe_on(fx, &a, 1, p);
    probe_on(fx, &b, 2, p);
    probe_on(fx, &pc, 3, c);
    probe_on(fx, &px, 4, x);
    a.action = act_release_target;
    a.target = c;          /* queued in this cascade: still fires, once */
    b.action = act_release_target;
    b.target = x;          /* live elsewhere: ends now, inside b */
    pgw_ctx_cancel(p);
    assert_log(fx, (int[]){1, 2, 4, 3}, 4);
    assert_int_equal(pc.fired, 1);
    assert_int_equal(pc.err, PGW_ECANCELED);
    assert_int_equal(px.err, PGW_ECANCELED);
    pgw_ctx_release(p);
}

struct make_child_state {
    struct pgw_ctx *parent;
    struct pgw_ctx *other;
    struct pgw_ctx *born;
    int sub_ret;
    int resub_ret;
    struct probe late;
};

static void act_cancel_and_create(struct probe *p)
{
    struct make_child_state *st = p->target;

    pgw_ctx_cancel(st->other);
    st->born = pgw_ctx_with_timeout(st->parent, 10);
    assert_non_null(st->born);
    probe_init(p->fx, &st->late, 9);
    st->sub_ret = pgw_ctx_subscribe(st->born, &st->late.sub, probe_cb, &st->late);
    st->resub_ret = pgw_ctx_subscribe(st->parent, &st->late.sub, probe_cb, &st->late);
}

static void t_cancel_and_create_in_callback(void **state)
{
    struct fx *fx = *state;
    struct make_child_state st = {0};
    struct probe a, po, pc;

    st.parent = pgw_ctx_with_cancel(fx->bg);
    st.other = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *c = pgw_ctx_with_cancel(st.parent);
    probe_on(fx, &a, 1, st.parent);
    probe_on(fx, &po, 2, st.other);
    probe_on(fx, &pc, 3, c);
    a.action = act_cancel_and_create;
    a.target = &st;
    pgw_ctx_cancel(st.parent);
    /* The nested cancel ran to completion inside a's callback. */
    assert_log(fx, (int[]){1, 2, 3}, 3);
    assert_int_equal(pgw_ctx_err(st.born), PGW_ECANCELED);
    assert_int_equal(st.sub_ret, PGW_ECANCELED);
    assert_int_equal(st.resub_ret, PGW_ECANCELED);
    assert_int_equal(st.late.fired, 0);
    assert_int_equal(ev_run(fx->loop, EVRUN_NOWAIT), 0);  /* born done: no timer */
    pgw_ctx_release(st.born);
    pgw_ctx_release(c);
    pgw_ctx_release(st.parent);
    pgw_ctx_release(st.other);
}

static void t_release_parent_child_alive(void **state)
{
    struct fx *fx = *state;
    static const char k1, k2;
    int v1, v2;
    struct pgw_ctx *p = pgw_ctx_with_timeout(fx->bg, 0.001);
    struct pgw_ctx *pv = pgw_ctx_with_value(p, &k1, &v1);
    struct pgw_ctx *c = pgw_ctx_with_value(pv, &k2, &v2);
    struct pgw_ctx *g = pgw_ctx_with_cancel(c);
    struct probe pc, pg;

    probe_on(fx, &pc, 1, c);
    probe_on(fx, &pg, 2, g);
    pgw_ctx_release(pv);
    pgw_ctx_release(p);
    assert_log(fx, (int[]){1, 2}, 2);
    assert_int_equal(pc.err, PGW_ECANCELED);   /* released, not expired */
    /* No timer remains, though children are alive. */
    assert_int_equal(ev_run(fx->loop, EVRUN_NOWAIT), 0);

    /* The children are done but valid. */
    assert_int_equal(pgw_ctx_err(c), PGW_ECANCELED);
    assert_int_equal(pgw_ctx_err(g), PGW_ECANCELED);
    assert_ptr_equal(pgw_ctx_value(g, &k2), &v2);
    assert_ptr_equal(pgw_ctx_loop(g), fx->loop);
    assert_true(pgw_ctx_deadline(g) > 0.);
    pgw_ctx_cancel(c);
    struct pgw_ctx *n = pgw_ctx_with_cancel(g);
    assert_int_equal(pgw_ctx_err(n), PGW_ECANCELED);
    assert_int_equal(pc.fired, 1);
    pgw_ctx_release(c);
    pgw_ctx_release(n);
    pgw_ctx_release(g);
}

static void t_release_background_first(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *a = pgw_ctx_with_cancel(fx->bg);
    struct pgw_ctx *b = pgw_ctx_with_timeout(a, 10);
    struct probe pb;

    probe_on(fx, &pb, 1, b);
    pgw_ctx_release(fx->bg);
    fx->bg = NULL;
    assert_int_equal(pb.err, PGW_ECANCELED);
    assert_int_equal(pgw_ctx_err(a), PGW_ECANCELED);
    assert_int_equal(ev_run(fx->loop, EVRUN_NOWAIT), 0);
    pgw_ctx_release(b);
    pgw_ctx_release(a);
}

static void t_release_frees_timers(void **state)
{
    struct fx *fx = *state;
    struct pgw_ctx *c[64];

    for (int i = 0; i < 64; i++)
        c[i] = pgw_ctx_with_timeout(i ? c[i / 2] : fx->bg, 100.0 - i);
    assert_true(ev_run(fx->loop, EVRUN_NOWAIT) != 0);   /* timers active */
    for (int i = 63; i >= 0; i--)
        pgw_ctx_release(c[i]);
    assert_int_equal(ev_pending_count(fx->loop), 0);
    assert_int_equal(ev_run(fx->loop, EVRUN_NOWAIT), 0);
}

static void t_values(void **state)
{
    struct fx *fx = *state;
    static const char k1, k2, k3;
    char va, vb, vc, vs;
    struct pgw_ctx *a = pgw_ctx_with_value(fx->bg, &k1, &va);
    struct pgw_ctx *b = pgw_ctx_with_value(a, &k2, &vb);
    struct pgw_ctx *c = pgw_ctx_with_value(b, &k1, &vc);     /* shadows a */
    struct pgw_ctx *d = pgw_ctx_with_timeout(c, 10);
    struct pgw_ctx *e = pgw_ctx_with_value(d, &k2, NULL);     /* NULL shadows */
    struct pgw_ctx *s = pgw_ctx_with_value(a, &k2, &vs);

    assert_ptr_equal(pgw_ctx_value(d, &k1), &vc);
    assert_ptr_equal(pgw_ctx_value(d, &k2), &vb);
    assert_ptr_equal(pgw_ctx_value(b, &k1), &va);
    assert_ptr_equal(pgw_ctx_value(a, &k1), &va);
    assert_null(pgw_ctx_value(a, &k2));
    assert_null(pgw_ctx_value(fx->bg, &k1));
    assert_null(pgw_ctx_value(d, &k3));
    assert_null(pgw_ctx_value(e, &k2));
    assert_ptr_equal(pgw_ctx_value(e, &k1), &vc);
    assert_ptr_equal(pgw_ctx_value(s, &k2), &vs);
    assert_ptr_equal(pgw_ctx_value(s, &k1), &va);
    /* Values stay readable after the context ends. */
    pgw_ctx_cancel(a);
    assert_ptr_equal(pgw_ctx_value(e, &k1), &vc);

    pgw_ctx_release(e);
    pgw_ctx_release(d);
    pgw_ctx_release(s);
    pgw_ctx_release(c);
    pgw_ctx_release(b);
    pgw_ctx_release(a);
}

/* A chain deeper than any recursion would survive. */
static void t_deep_chain(void **state)
{
    struct fx *fx = *state;
    enum { N = 200000 };
    struct pgw_ctx **c = malloc(N * sizeof(*c));
    struct probe p;

    assert_non_null(c);
    c[0] = pgw_ctx_with_cancel(fx->bg);
    for (int i = 1; i < N; i++) {
        c[i] = pgw_ctx_with_cancel(c[i - 1]);
        assert_non_null(c[i]);
    }
    probe_on(fx, &p, 1, c[N - 1]);
    pgw_ctx_cancel(c[0]);
    assert_int_equal(p.fired, 1);
    assert_int_equal(pgw_ctx_err(c[N - 1]), PGW_ECANCELED);
    for (int i = 0; i < N; i++)
        pgw_ctx_release(c[i]);
    free(c);
}

/* ---- stress ------------------------------------------------------------ */

#define STRESS_N 10000

struct slot {
    struct pgw_ctx *ctx;    /* NULL once released */
    int parent;             /* slot index, -1 for the background */
    bool subscribed;
    struct probe p;
};

struct stress {
    struct fx *fx;
    struct slot s[STRESS_N];
    int n;
    uint64_t rng;
    int pending_deadlines;
};

static uint32_t rnd(struct stress *st)
{
    st->rng ^= st->rng << 13;
    st->rng ^= st->rng >> 7;
    st->rng ^= st->rng << 17;
    return (uint32_t)(st->rng >> 16);
}

static struct stress *stress_of(struct probe *p)
{
    return p->target;
}

/* Reentrant chaos: cancel or release another slot, or our own context. */
static void act_stress(struct probe *p)
{
    struct stress *st = stress_of(p);
    struct slot *me = pgw_container_of(p, struct slot, p);
    uint32_t r = rnd(st);

    assert_int_equal(p->fired, 1);
    if (r % 8 == 0) {
        struct slot *o = &st->s[rnd(st) % st->n];
        if (o->ctx)
            pgw_ctx_cancel(o->ctx);
    } else if (r % 8 == 1 && me->ctx) {
        pgw_ctx_release(me->ctx);
        me->ctx = NULL;
    } else if (r % 8 == 2) {
        struct slot *o = &st->s[rnd(st) % st->n];
        if (o->ctx) {
            pgw_ctx_release(o->ctx);
            o->ctx = NULL;
        }
    }
}

static void stress_check(struct stress *st)
{
    for (int i = 0; i < st->n; i++) {
        struct slot *s = &st->s[i];
        assert_true(s->p.fired <= 1);
        if (!s->ctx)
            continue;
        int err = pgw_ctx_err(s->ctx);
        if (s->subscribed) {
            assert_int_equal(s->p.fired, err != 0);
            if (err)
                assert_int_equal(s->p.err, err);
        }
        if (s->parent >= 0 && st->s[s->parent].ctx && pgw_ctx_done(st->s[s->parent].ctx))
            assert_true(err != 0);
    }
}

static void stress_create(struct stress *st)
{
    struct fx *fx = st->fx;
    int i = st->n;
    struct slot *s = &st->s[i];
    int parent = i && rnd(st) % 4 ? (int)(rnd(st) % (unsigned)i) : -1;
    struct pgw_ctx *pc = parent >= 0 ? st->s[parent].ctx : NULL;
    uint32_t kind = rnd(st) % 4;

    if (!pc) {
        parent = -1;
        pc = fx->bg;
    }
    if (kind == 0)
        s->ctx = pgw_ctx_with_cancel(pc);
    else if (kind == 1)
        s->ctx = pgw_ctx_with_value(pc, st, s);
    else if (kind == 2)
        s->ctx = pgw_ctx_with_timeout(pc, (rnd(st) % 20) / 1000.0);
    else
        s->ctx = pgw_ctx_with_timeout(pc, 100);
    assert_non_null(s->ctx);
    s->parent = parent;
    st->n++;
    probe_init(fx, &s->p, i);
    s->p.action = act_stress;
    s->p.target = st;
    s->subscribed = pgw_ctx_subscribe(s->ctx, &s->p.sub, probe_cb, &s->p) == 0;
    assert_true(s->subscribed == !pgw_ctx_done(pc));
    assert_ptr_equal(pgw_ctx_value(s->ctx, st), kind == 1 ? s : pgw_ctx_value(pc, st));
}

static void stress_op(struct stress *st)
{
    uint32_t r = rnd(st) % 16;
    struct slot *o = &st->s[rnd(st) % st->n];

    if (r < 9 && st->n < STRESS_N) {
        stress_create(st);
    } else if (r < 12) {
        if (o->ctx)
            pgw_ctx_cancel(o->ctx);
    } else if (r < 14) {
        if (o->ctx) {
            pgw_ctx_release(o->ctx);
            o->ctx = NULL;
        }
    } else if (r == 14) {
        ev_run(st->fx->loop, EVRUN_NOWAIT);
    } else if (o->ctx && o->subscribed && !o->p.fired && rnd(st) % 2) {
        pgw_ctx_unsubscribe(&o->p.sub);
        o->subscribed = false;
    }
}

static void t_stress(void **state)
{
    struct fx *fx = *state;
    struct stress *st = calloc(1, sizeof(*st));

    assert_non_null(st);
    st->fx = fx;
    st->rng = 0x9e3779b97f4a7c15ull;
    stress_create(st);
    for (int op = 0; st->n < STRESS_N; op++) {
        stress_op(st);
        if (op % 1000 == 0)
            stress_check(st);
    }
    stress_check(st);

    /* Let every short deadline expire (bounded by wall time). */
    bool never = false;
    pgw_test_run_until(fx->loop, &never, 0.1);
    int expired = 0;
    for (int i = 0; i < st->n; i++)
        if (st->s[i].p.err == PGW_EDEADLINE)
            expired++;
    assert_true(expired > 0);
    stress_check(st);

    /* Release in random order; callbacks keep cancelling/releasing. */
    static int order[STRESS_N];
    for (int i = 0; i < st->n; i++)
        order[i] = i;
    for (int i = st->n - 1; i > 0; i--) {
        int j = (int)(rnd(st) % (unsigned)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < st->n; i++) {
        struct slot *s = &st->s[order[i]];
        if (s->ctx) {
            pgw_ctx_release(s->ctx);
            s->ctx = NULL;
        }
        if (i % 1000 == 0)
            stress_check(st);
    }
    for (int i = 0; i < st->n; i++) {
        assert_null(st->s[i].ctx);
        assert_true(st->s[i].p.fired == (st->s[i].subscribed ? 1 : 0));
    }
    free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_background, setup, teardown),
        cmocka_unit_test_setup_teardown(t_cancel_three_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(t_deadline_vs_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(t_parent_deadline_cascades, setup, teardown),
        cmocka_unit_test_setup_teardown(t_child_deadline_min, setup, teardown),
        cmocka_unit_test_setup_teardown(t_child_later_deadline_expires_with_parent, setup, teardown),
        cmocka_unit_test_setup_teardown(t_past_deadline_not_synchronous, setup, teardown),
        cmocka_unit_test_setup_teardown(t_deadline_values, setup, teardown),
        cmocka_unit_test_setup_teardown(t_idempotent_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(t_callback_order, setup, teardown),
        cmocka_unit_test_setup_teardown(t_unsubscribe_before_firing, setup, teardown),
        cmocka_unit_test_setup_teardown(t_unsubscribe_in_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(t_subscribe_on_done, setup, teardown),
        cmocka_unit_test_setup_teardown(t_resubscribe_in_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(t_release_self_in_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(t_release_other_in_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(t_cancel_and_create_in_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(t_release_parent_child_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(t_release_background_first, setup, teardown),
        cmocka_unit_test_setup_teardown(t_release_frees_timers, setup, teardown),
        cmocka_unit_test_setup_teardown(t_values, setup, teardown),
        cmocka_unit_test_setup_teardown(t_deep_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(t_stress, setup, teardown),
    };
    return cmocka_run_group_tests_name("ctx", tests, NULL, NULL);
}
