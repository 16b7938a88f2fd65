/*
 * ctx.c - context trees on one libev loop (see ctx.h for the contract).
 *
 * Owns: every struct pgw_ctx of a tree, the per-tree state (struct
 * ctx_tree: the loop and a small free list of context objects for reuse),
 * and the one ev_timer of each context that owns a deadline.
 *
 * Ending a context is two phases.  The mark phase walks the live part of
 * the subtree in pre-order without running any user code: it sets the
 * error, stops timers, takes a reference and queues each node on a fire
 * list that lives on the stack of that cancellation.  The fire phase then
 * pops nodes off that list and pops subscriptions off each node, one at a
 * time, so callbacks see a subtree that is already entirely done and may
 * unsubscribe, cancel, create and release anything: a popped node stays
 * allocated by the fire list's reference until its subscribers have run.
 *
 * Invariant: every descendant of a done context that is still linked to it
 * is done too (children of a done parent are born done), so the mark phase
 * skips done subtrees whole.
 */
#include "ctx/ctx.h"

#include <math.h>
#include <stdlib.h>

#include "common/clock.h"
#include "common/err.h"

/* Objects kept for reuse per tree.  Off under AddressSanitizer so that a
 * use after release is reported instead of hitting a recycled object. */
#if defined(__SANITIZE_ADDRESS__)
#define CTX_FREE_MAX 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CTX_FREE_MAX 0
#endif
#endif
#ifndef CTX_FREE_MAX
#define CTX_FREE_MAX 256
#endif

struct ctx_tree {
    struct ev_loop *loop;
    struct pgw_list free;      /* recycled contexts, linked by .sibling */
    unsigned nfree;
    unsigned nlive;            /* allocated contexts, the root included */
};

struct pgw_ctx {
    struct ctx_tree *tree;
    struct pgw_ctx *parent;    /* NULL for the root and once detached */
    struct pgw_list sibling;   /* in parent->children (or tree->free) */
    struct pgw_list children;
    struct pgw_list subs;      /* struct pgw_ctx_sub.node, FIFO */
    struct pgw_list firing;    /* in one cancellation's fire list */
    ev_timer timer;            /* started only when owns_timer */
    ev_tstamp deadline;        /* effective; INFINITY when none */
    const void *key;
    void *value;
    int err;
    unsigned refs;             /* the owner's + one per fire list */
    bool released;
    bool has_value;
    bool owns_timer;
};

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* ---- allocation ------------------------------------------------------ */

static struct pgw_ctx *ctx_alloc(struct ctx_tree *tree)
{
    struct pgw_ctx *c;
    struct pgw_list *n = pgw_list_first(&tree->free);

    if (n) {
        pgw_list_del(n);
        tree->nfree--;
        c = pgw_container_of(n, struct pgw_ctx, sibling);
    } else {
        c = malloc(sizeof(*c));
        if (!c)
            return NULL;
    }
    c->tree = tree;
    c->parent = NULL;
    pgw_list_init(&c->sibling);
    pgw_list_init(&c->children);
    pgw_list_init(&c->subs);
    pgw_list_init(&c->firing);
    ev_init(&c->timer, timer_cb);
    c->deadline = INFINITY;
    c->key = NULL;
    c->value = NULL;
    c->err = 0;
    c->refs = 1;
    c->released = false;
    c->has_value = false;
    c->owns_timer = false;
    tree->nlive++;
    return c;
}

static void tree_free(struct ctx_tree *tree)
{
    struct pgw_list *n, *tmp;

    pgw_list_foreach_safe(n, tmp, &tree->free)
        free(pgw_container_of(n, struct pgw_ctx, sibling));
    free(tree);
}

/* Keep c for reuse if the free list has room. */
static bool ctx_recycle(struct ctx_tree *tree, struct pgw_ctx *c)
{
#if CTX_FREE_MAX > 0
    if (tree->nfree < CTX_FREE_MAX) {
        pgw_list_append(&tree->free, &c->sibling);
        tree->nfree++;
        return true;
    }
#endif
    (void)tree;
    (void)c;
    return false;
}

/* The last reference is gone: the object is unlinked from everything. */
static void ctx_free(struct pgw_ctx *c)
{
    struct ctx_tree *tree = c->tree;

    if (!ctx_recycle(tree, c))
        free(c);
    if (--tree->nlive == 0)
        tree_free(tree);
}

static void ctx_unref(struct pgw_ctx *c)
{
    if (--c->refs == 0)
        ctx_free(c);
}

/* ---- ending a subtree ------------------------------------------------ */

/* The first live child of p at or after list position `from`. */
static struct pgw_ctx *live_child_from(struct pgw_ctx *p, struct pgw_list *from)
{
    for (struct pgw_list *n = from; n != &p->children; n = n->next) {
        struct pgw_ctx *c = pgw_container_of(n, struct pgw_ctx, sibling);
        if (!c->err)
            return c;
    }
    return NULL;
}

static void mark_one(struct pgw_ctx *c, int err, struct pgw_list *fire)
{
    c->err = err;
    if (c->owns_timer)
        ev_timer_stop(c->tree->loop, &c->timer);
    c->refs++;
    pgw_list_append(fire, &c->firing);
}

/* Pre-order walk of the live part of top's subtree, without recursion so
 * deep chains cannot exhaust the stack.  top must be live. */
static void mark_subtree(struct pgw_ctx *top, int err, struct pgw_list *fire)
{
    struct pgw_ctx *c = top, *next;

    mark_one(c, err, fire);
    for (;;) {
        next = live_child_from(c, c->children.next);
        while (!next && c != top) {
            next = live_child_from(c->parent, c->sibling.next);
            if (!next)
                c = c->parent;
        }
        if (!next)
            return;
        c = next;
        mark_one(c, err, fire);
    }
}

/* Pop one subscription at a time: a callback may remove any of the rest. */
static void fire_subs(struct pgw_ctx *c)
{
    struct pgw_list *n;

    while ((n = pgw_list_first(&c->subs))) {
        struct pgw_ctx_sub *sub = pgw_container_of(n, struct pgw_ctx_sub, node);
        pgw_list_del(n);
        sub->ctx = NULL;
        sub->fn(sub, c->err);
    }
}

static void end_subtree(struct pgw_ctx *top, int err)
{
    struct pgw_list fire, *n;

    pgw_list_init(&fire);
    mark_subtree(top, err, &fire);
    while ((n = pgw_list_first(&fire))) {
        struct pgw_ctx *c = pgw_container_of(n, struct pgw_ctx, firing);
        pgw_list_del(n);
        fire_subs(c);
        ctx_unref(c);
    }
}

/*
 * A deadline is on the loop's monotonic clock (pgw_mono_now(), read once
 * per iteration) and the timer on libev's, read a moment earlier in the
 * same iteration: a timer that fires a hair early is re-armed for the
 * rest, so pgw_mono_now() is never before the deadline of an expired
 * context.  Neither clock moves with the wall clock.
 */
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgw_ctx *c = pgw_container_of(w, struct pgw_ctx, timer);
    ev_tstamp left = c->deadline - pgw_mono_now(loop);

    (void)revents;
    if (left > 0) {
        ev_timer_set(w, left, 0.);
        ev_timer_start(loop, w);
        return;
    }
    end_subtree(c, PGW_EDEADLINE);
}

/* ---- making contexts ------------------------------------------------- */

struct pgw_ctx *pgw_ctx_background(struct ev_loop *loop)
{
    struct ctx_tree *tree = malloc(sizeof(*tree));
    struct pgw_ctx *c;

    if (!tree)
        return NULL;
    tree->loop = loop;
    pgw_list_init(&tree->free);
    tree->nfree = 0;
    tree->nlive = 0;
    c = ctx_alloc(tree);
    if (!c)
        free(tree);
    return c;
}

/* A child inheriting parent's deadline; born done if parent is done. */
static struct pgw_ctx *child_new(struct pgw_ctx *parent)
{
    struct pgw_ctx *c = ctx_alloc(parent->tree);

    if (!c)
        return NULL;
    c->deadline = parent->deadline;
    if (parent->released) {
        /* Misuse, but keep it memory-safe: an orphan, born done. */
        c->err = parent->err ? parent->err : PGW_ECANCELED;
        return c;
    }
    c->parent = parent;
    c->err = parent->err;
    pgw_list_append(&parent->children, &c->sibling);
    return c;
}

struct pgw_ctx *pgw_ctx_with_cancel(struct pgw_ctx *parent)
{
    return child_new(parent);
}

struct pgw_ctx *pgw_ctx_with_deadline(struct pgw_ctx *parent, ev_tstamp deadline)
{
    struct pgw_ctx *c = child_new(parent);
    struct ev_loop *loop;

    /* Not earlier than the parent's: the parent's expiry cascades here. */
    if (!c || c->err || !(deadline < parent->deadline))
        return c;
    loop = c->tree->loop;
    c->deadline = deadline;
    c->owns_timer = true;
    /* Already past: a 0 delay fires on the next iteration, not now. */
    ev_timer_set(&c->timer, fmax(deadline - pgw_mono_now(loop), 0.), 0.);
    ev_timer_start(loop, &c->timer);
    return c;
}

struct pgw_ctx *pgw_ctx_with_timeout(struct pgw_ctx *parent, ev_tstamp timeout)
{
    return pgw_ctx_with_deadline(parent, pgw_mono_now(parent->tree->loop) + timeout);
}

struct pgw_ctx *pgw_ctx_with_value(struct pgw_ctx *parent, const void *key, void *value)
{
    struct pgw_ctx *c = child_new(parent);

    if (!c)
        return NULL;
    c->key = key;
    c->value = value;
    c->has_value = true;
    return c;
}

/* ---- queries --------------------------------------------------------- */

void *pgw_ctx_value(const struct pgw_ctx *ctx, const void *key)
{
    for (const struct pgw_ctx *c = ctx; c; c = c->parent)
        if (c->has_value && c->key == key)
            return c->value;
    return NULL;
}

int pgw_ctx_err(const struct pgw_ctx *ctx)
{
    return ctx->err;
}

ev_tstamp pgw_ctx_deadline(const struct pgw_ctx *ctx)
{
    return isinf(ctx->deadline) ? 0. : ctx->deadline;
}

struct ev_loop *pgw_ctx_loop(const struct pgw_ctx *ctx)
{
    return ctx->tree->loop;
}

/* ---- cancel, subscribe, release -------------------------------------- */

void pgw_ctx_cancel(struct pgw_ctx *ctx)
{
    if (!ctx->err)
        end_subtree(ctx, PGW_ECANCELED);
}

/* sub must not be subscribed elsewhere (fresh, initialised, fired or
 * removed).  On a done ctx it is left in the "not subscribed" state. */
int pgw_ctx_subscribe(struct pgw_ctx *ctx, struct pgw_ctx_sub *sub,
                      pgw_ctx_done_fn fn, void *arg)
{
    pgw_list_init(&sub->node);
    sub->fn = fn;
    sub->arg = arg;
    if (ctx->err) {
        sub->ctx = NULL;
        return ctx->err;
    }
    sub->ctx = ctx;
    pgw_list_append(&ctx->subs, &sub->node);
    return 0;
}

void pgw_ctx_unsubscribe(struct pgw_ctx_sub *sub)
{
    if (!sub->ctx)
        return;
    pgw_list_del(&sub->node);
    sub->ctx = NULL;
}

/* Children become roots of their own (done) subtrees. */
static void detach(struct pgw_ctx *c)
{
    struct pgw_list *n;

    if (c->parent) {
        pgw_list_del(&c->sibling);
        c->parent = NULL;
    }
    while ((n = pgw_list_first(&c->children))) {
        pgw_list_del(n);
        pgw_container_of(n, struct pgw_ctx, sibling)->parent = NULL;
    }
}

/* A second release of the same context is ignored while the object still
 * exists (it may be inside its own cascade); after that it is a bug. */
void pgw_ctx_release(struct pgw_ctx *ctx)
{
    if (!ctx || ctx->released)
        return;
    ctx->released = true;
    if (!ctx->err)
        end_subtree(ctx, PGW_ECANCELED);
    detach(ctx);
    ctx_unref(ctx);
}
