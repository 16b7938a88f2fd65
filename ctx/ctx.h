/*
 * ctx.h - Go's context.Context in C, for one libev loop.
 *
 * A tree of contexts.  Cancelling a context cancels its whole subtree,
 * idempotently.  A context with a deadline owns one ev_timer; when it fires
 * the context (and its subtree) ends with PGW_EDEADLINE, kept distinct from
 * PGW_ECANCELED.  A child's deadline is never later than its parent's.
 *
 * Done-subscriptions: the caller embeds a struct pgw_ctx_sub (no allocation)
 * and gets exactly one callback when the context ends, unless it removes the
 * subscription first.  Callbacks of one context run in subscription order;
 * a parent's subscribers run before its children's.  A callback may remove
 * subscriptions, cancel other contexts and release contexts, its own
 * included: memory is freed only once no callback of it is running.
 *
 * Ownership: every context made by with_* is released exactly once by its
 * creator with pgw_ctx_release().  Releasing cancels the context (with
 * PGW_ECANCELED, if still live) and detaches it from its parent; live
 * children of a released context stay valid (already cancelled) until
 * their own release; they are detached, so value lookups from them no
 * longer reach the released context or its ancestors.  Subscriptions of a
 * context that has ended still fire if it is released, by another
 * callback of the same cascade, before their turn.  The background
 * context is made per loop and released last, with pgw_ctx_release() too
 * (releasing it earlier is safe: the per-loop state lives until the last
 * context of the tree is released).
 *
 * Threads: a context tree belongs to one loop and one thread.
 */
#ifndef PGW_CTX_CTX_H
#define PGW_CTX_CTX_H

#include <ev.h>
#include <stdbool.h>

#include "common/list.h"

struct pgw_ctx;
struct pgw_ctx_sub;

/* err is PGW_ECANCELED or PGW_EDEADLINE. */
typedef void (*pgw_ctx_done_fn)(struct pgw_ctx_sub *sub, int err);

/* Embedded by the subscriber; treat the fields as private. */
struct pgw_ctx_sub {
    struct pgw_list node;
    pgw_ctx_done_fn fn;
    void *arg;                 /* for the callback's use */
    struct pgw_ctx *ctx;       /* NULL when not subscribed */
};

/* The root of a tree: never done by itself, only by pgw_ctx_cancel(). */
struct pgw_ctx *pgw_ctx_background(struct ev_loop *loop);

struct pgw_ctx *pgw_ctx_with_cancel(struct pgw_ctx *parent);
/* Absolute deadline on the loop's monotonic clock (pgw_mono_now() of
 * common/clock.h; not ev_now(), which is the wall clock).  The effective
 * deadline is min(deadline, parent's).  A deadline already past ends the
 * context at the next loop iteration, never synchronously inside this call. */
struct pgw_ctx *pgw_ctx_with_deadline(struct pgw_ctx *parent, ev_tstamp deadline);
struct pgw_ctx *pgw_ctx_with_timeout(struct pgw_ctx *parent, ev_tstamp timeout);
/* A child carrying key -> value; lookups walk up the tree. */
struct pgw_ctx *pgw_ctx_with_value(struct pgw_ctx *parent, const void *key, void *value);
void *pgw_ctx_value(const struct pgw_ctx *ctx, const void *key);

/* All with_* return NULL on allocation failure. */

/* Cancel ctx and its subtree with PGW_ECANCELED.  Idempotent: a context
 * that is already done keeps its first error. */
void pgw_ctx_cancel(struct pgw_ctx *ctx);
/* 0 while live, else PGW_ECANCELED or PGW_EDEADLINE. */
int pgw_ctx_err(const struct pgw_ctx *ctx);
static inline bool pgw_ctx_done(const struct pgw_ctx *ctx) { return pgw_ctx_err(ctx) != 0; }
/* The effective deadline, or 0 when there is none. */
ev_tstamp pgw_ctx_deadline(const struct pgw_ctx *ctx);
struct ev_loop *pgw_ctx_loop(const struct pgw_ctx *ctx);

/* Subscribe: fn(sub, err) runs once when ctx ends.  Returns 0, or the
 * context's error if it has already ended (and then nothing is subscribed
 * and fn never runs).  sub must not be subscribed at the time (it need
 * not be initialised; a fired or removed sub may be reused, also from
 * inside its own callback).  O(1). */
int pgw_ctx_subscribe(struct pgw_ctx *ctx, struct pgw_ctx_sub *sub,
                      pgw_ctx_done_fn fn, void *arg);
/* Remove a subscription that has not fired; a no-op if it has fired or was
 * never subscribed (after pgw_ctx_sub_init or a failed subscribe).  Safe to
 * call from any callback.  O(1). */
void pgw_ctx_unsubscribe(struct pgw_ctx_sub *sub);
static inline void pgw_ctx_sub_init(struct pgw_ctx_sub *sub)
{
    pgw_list_init(&sub->node);
    sub->fn = NULL;
    sub->arg = NULL;
    sub->ctx = NULL;
}

/* Free the context (cancelling it first if live).  Safe inside callbacks
 * of this context or others: the memory is freed once no callback of it is
 * running. */
void pgw_ctx_release(struct pgw_ctx *ctx);

#endif
