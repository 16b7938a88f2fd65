/*
 * replication.c - a replication client's own server (pool.h,
 * pgw_pool_acquire_replication): the queue of such clients waiting for
 * their server to log in, starting one server per waiter on a host of the
 * entry's list, and handing it over or failing that one client.
 *
 * A replication server and its client form a pair: made for that client
 * (its mode and application_name), never lent to another, never idle;
 * pgw_pool_release closes it.  Such servers sit on pool->dedicated and in
 * no count of the pool (pool_size, max_db_connections,
 * max_user_connections, SHOW POOLS): PostgreSQL bounds them by
 * max_wal_senders.  A waiter is on pool->repl_waiters from the acquire to
 * its callback; w->repl_srv is its server while that one connects.
 *
 * Host lists: as a pool's connection would, a client's server goes to the
 * next host of the entry's list (load_balance_hosts, hosts whose breaker
 * is open passed over) when one cannot be reached or is not the kind
 * target_session_attrs asks for; each host gets one attempt per client
 * (w->repl_tried: a word for up to 64 hosts, an array for more; a reload
 * that changes the list moves the marks with their hosts), and the
 * client fails when none is left.  A refusal the server answered for the
 * client's own reasons ends it at once; so does a list whose every host
 * the pool found not to match target_session_attrs (as a normal client
 * of the pool is refused).  The pool's own refused logins do not end a
 * replication client: its server logs in otherwise (pg_hba's replication
 * lines, no connect_query), and gets its own answer.
 */
#include "pool/pool_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

static void repl_done_cb(struct pgw_ctx_sub *sub, int err);

/* Room in w->repl_tried for hosts 0 .. n-1 (the bits it has kept);
 * false when memory is short. */
static bool tried_room(struct pgw_pool_waiter *w, int n)
{
    int words = pgw_tried_words(n);
    if (words <= w->repl_tried_words)
        return true;
    uint64_t *t = &w->repl_tried_one;
    if (words > 1) {
        t = calloc((size_t)words, sizeof(*t));
        if (!t)
            return false;
        if (w->repl_tried_words > 0)
            memcpy(t, w->repl_tried, (size_t)w->repl_tried_words * sizeof(*t));
        if (w->repl_tried != &w->repl_tried_one)
            free(w->repl_tried);
    }
    w->repl_tried = t;
    w->repl_tried_words = words;
    return true;
}

static void tried_free(struct pgw_pool_waiter *w)
{
    if (w->repl_tried != &w->repl_tried_one)
        free(w->repl_tried);
    w->repl_tried = NULL;
    w->repl_tried_words = 0;
}

/* A reload replaced the list: what a client tried is a set of hosts, not
 * of places in the list (one reordered would have it take a host it had
 * again and pass over one it had not).  Each tried host still in the list
 * is marked at its new place (the backends are the same objects: one per
 * address), a host new to the list is untried, and the attempts count the
 * marked ones.  Short of memory, a waiter keeps no mark: its next kick
 * fails it (repl_no_server). */
void pgw_pool_repl_hosts_replaced(struct pgw_pool *pool, const struct pool_host *hosts, int n)
{
    int words = pgw_tried_words(n);
    for (struct pgw_list *l = pool->repl_waiters.next; l != &pool->repl_waiters; l = l->next) {
        struct pgw_pool_waiter *w = pgw_container_of(l, struct pgw_pool_waiter, node);
        uint64_t one = 0, *t = words > 1 ? calloc((size_t)words, sizeof(*t)) : &one;
        int tries = 0;
        for (int j = 0; t && j < n; j++) {
            for (int i = 0; i < pool->nhosts; i++) {
                if (hosts[j].be == pool->hosts[i].be &&
                    pgw_tried_bit(w->repl_tried, w->repl_tried_words, i)) {
                    pgw_tried_set(t, j);
                    tries++;
                    break;
                }
            }
        }
        tried_free(w);
        w->repl_tried_one = one;
        w->repl_tried = t == &one ? &w->repl_tried_one : t;
        w->repl_tried_words = t ? words : 0;
        w->repl_tries = tries;
    }
}

int pgw_pool_acquire_replication(struct pgw_pool *pool, struct pgw_pool_waiter *w,
                                 struct pgw_ctx *ctx, pgw_pool_acquire_fn cb, void *arg,
                                 int mode, const char *application_name,
                                 const char *client_encoding, const char *options)
{
    struct pgw_pool_error *e = &pool->set->error;
    w->arg = arg;
    w->server = NULL;
    w->error = NULL;
    pgw_list_init(&w->node);
    pgw_ctx_sub_init(&w->sub);
    w->pool = pool;
    w->cb = cb;
    w->ctx = NULL;
    w->since = pgw_mono_now(pool->set->loop);
    w->replication = mode;
    w->repl_app = application_name;
    w->repl_encoding = client_encoding;
    w->repl_options = options;
    w->repl_srv = NULL;
    w->repl_tried = NULL;
    w->repl_tried_one = 0;
    w->repl_tried_words = 0;
    w->repl_tries = 0;

    int gone = pgw_pool_refuse_gone(pool, w);
    if (gone)
        return gone;
    int down = pgw_pool_hosts_down(pool, e);
    if (down) {
        if (down == PGW_EBREAKER_OPEN)
            pool->st.total_breaker_rejects++;
        w->error = e;
        return e->code;
    }
    if (pgw_pool_hosts_mismatched(pool, e)) {
        w->error = e;
        return e->code;
    }
    int err = pgw_ctx_err(ctx);
    w->ctx = err ? NULL : pgw_ctx_with_cancel(ctx);
    if (!err && !w->ctx)
        err = PGW_ENOMEM;
    if (!err && (err = pgw_ctx_subscribe(w->ctx, &w->sub, repl_done_cb, w)) != 0) {
        pgw_ctx_release(w->ctx);
        w->ctx = NULL;
    }
    if (!err && !tried_room(w, pool->nhosts)) {
        pgw_ctx_unsubscribe(&w->sub);
        pgw_ctx_release(w->ctx);
        w->ctx = NULL;
        err = PGW_ENOMEM;
    }
    if (err) {
        w->error = pgw_pool_set_error(e, err, err == PGW_ENOMEM ? "53200" : "57014",
                                      "canceled before its replication connection started");
        return err;
    }
    pgw_list_append(&pool->repl_waiters, &w->node);
    pool->n_repl_waiters++;
    /* Start its server now when a host admits one; the callback comes
     * from the loop (a connect never reports inside this call). */
    bool was = pool->dispatching;
    pool->dispatching = true;
    pgw_pool_repl_grow(pool, false);
    pool->dispatching = was;
    return PGW_ACQ_QUEUED;
}

void pgw_pool_repl_unqueue(struct pgw_pool_waiter *w)
{
    struct pgw_pool *pool = w->pool;
    pgw_list_del(&w->node);
    pool->n_repl_waiters--;
    pgw_ctx_unsubscribe(&w->sub);
    if (w->ctx)
        pgw_ctx_release(w->ctx);
    w->ctx = NULL;
    tried_free(w);
    struct pgw_server *srv = w->repl_srv;
    w->repl_srv = NULL;
    if (srv) {
        srv_priv(srv)->owner = NULL;
        pgw_server_close(srv, "replication client left before its server logged in");
    }
}

static void repl_fail(struct pgw_pool_waiter *w, const struct pgw_pool_error *err)
{
    struct pgw_pool *pool = w->pool;
    pgw_pool_repl_unqueue(w);
    if (err != &pool->set->error)
        pool->set->error = *err;
    w->error = &pool->set->error;
    w->server = NULL;
    w->cb(w, NULL);
}

static void repl_done_cb(struct pgw_ctx_sub *sub, int err)
{
    struct pgw_pool_waiter *w = pgw_container_of(sub, struct pgw_pool_waiter, sub);
    struct pgw_pool_error e;
    pgw_pool_set_error(&e, PGW_ECANCELED, "57014",
                       "canceled while its replication connection started");
    (void)err;
    repl_fail(w, &e);
}

void pgw_pool_repl_fail_waiters(struct pgw_pool *pool, const struct pgw_pool_error *err)
{
    /* Callbacks may queue others: fail only those queued now. */
    int n = pool->n_repl_waiters;
    struct pgw_list *f;
    while (n-- > 0 && (f = pgw_list_first(&pool->repl_waiters)))
        repl_fail(pgw_container_of(f, struct pgw_pool_waiter, node), err);
}

void pgw_pool_repl_fail_unserved(struct pgw_pool *pool, const struct pgw_pool_error *err)
{
    /* Callbacks may queue others: at most as many as are queued now. */
    int left = pool->n_repl_waiters;
    struct pgw_list *l = pool->repl_waiters.next;
    while (left > 0 && l != &pool->repl_waiters) {
        struct pgw_pool_waiter *w = pgw_container_of(l, struct pgw_pool_waiter, node);
        if (w->repl_srv) {
            l = l->next;
            continue;
        }
        left--;
        repl_fail(w, err);
        l = pool->repl_waiters.next;     /* callbacks ran: from the top */
    }
}

/* Why w, queued, cannot have a server now, in e: out of memory for the
 * hosts it tried (the list grew on a reload), no host left of those it
 * has not tried (the breakers of the others opened meanwhile), or every
 * host out for target_session_attrs.  false when it may wait (a wake-up
 * kicks the pool again: a connect-rate token, a name lookup); i is then
 * the host chosen, or the reason to wait. */
static bool repl_no_server(struct pgw_pool_waiter *w, int *i, bool *probe,
                           struct pgw_pool_error *e)
{
    struct pgw_pool *pool = w->pool;
    *i = PGW_ENOMEM;
    if (!tried_room(w, pool->nhosts)) {
        pgw_pool_set_error(e, PGW_ENOMEM, "53200", "out of memory");
        return true;
    }
    *i = pgw_pool_choose_host(pool, w, probe);
    if (*i != PGW_EBREAKER_OPEN)
        return false;
    if (w->repl_tries > 0) {
        pgw_pool_set_error(e, PGW_ESERVER_CONNECT, "08001",
                           "server connection failed: no host of the list left to try");
        return true;
    }
    return pgw_pool_hosts_mismatched(pool, e);
}

/* Not while the pool is paused (PAUSE, KILL): as PgBouncer, no new server
 * connection until RESUME, a replication client's neither (the server may
 * be on its way down for a restart).  Such a client waits in its login,
 * under client_login_timeout (SHOW CLIENTS and POOLS count it waiting);
 * RESUME kicks the pool.  A waiter that cannot have a server is failed
 * with may_fail (its callback runs: not inside
 * pgw_pool_acquire_replication), else left for the next kick. */
void pgw_pool_repl_grow(struct pgw_pool *pool, bool may_fail)
{
    if (pool->set->destroying || pool->orphan || pool->paused)
        return;
    /* No server starts while pgwharf is out of descriptors (as
     * pgw_pool_grow): a host name's lookup that failed so kicked the pool
     * and started the next at once, back to back (review r5 of bc455f7). */
    if (pgw_mono_now(pool->set->loop) < pool->set->fds_short_until)
        return;
    struct pgw_list *n;
    for (n = pool->repl_waiters.next; n != &pool->repl_waiters; n = n->next) {
        struct pgw_pool_waiter *w = pgw_container_of(n, struct pgw_pool_waiter, node);
        if (w->repl_srv)
            continue;
        struct pgw_pool_error e;
        bool probe = false;
        int i;
        if (repl_no_server(w, &i, &probe, &e)) {
            if (may_fail) {
                repl_fail(w, &e);
                n = &pool->repl_waiters;      /* callbacks ran: from the top */
                if (pool->set->destroying || pool->orphan || pool->paused)
                    return;
            }
            continue;
        }
        if (i < 0) {
            if (w->repl_tries > 0)
                continue;     /* others may still have a host this one had */
            return;           /* a wake-up kicks the pool again, or the hosts are
                               * down: pgw_pool_host_down fails the waiters */
        }
        if (!pgw_server_start(pool, i, probe, w)) {
            if (probe)
                pgw_breaker_probe_abort(&pool->hosts[i].be->breaker, pgw_mono_now(pool->set->loop));
            return;
        }
        pgw_tried_set(w->repl_tried, i);
        w->repl_tries++;
    }
}

void pgw_pool_repl_login_done(struct pgw_server *srv)
{
    struct pool_server *ps = srv_priv(srv);
    struct pgw_pool_waiter *w = ps->owner;
    if (!w) {
        pgw_server_close(srv, "its replication client left");
        return;
    }
    ps->owner = NULL;
    w->repl_srv = NULL;       /* its own now: unqueueing must not close it */
    pgw_pool_repl_unqueue(w);
    struct pgw_pool *pool = srv->pool;
    ev_tstamp now = pgw_mono_now(pool->set->loop);
    pgw_server_move(srv, PGW_SRV_ACTIVE);
    srv->request_time = now;
    srv->lend_count++;
    srv->link = NULL;
    pool->st.total_acquires++;
    if (now > w->since)       /* as a normal waiter's: SHOW STATS wait_time */
        pool->st.total_wait_us += (uint64_t)((now - w->since) * 1e6);
    w->server = srv;
    w->error = NULL;
    w->cb(w, srv);
}

void pgw_pool_repl_login_failed(struct pgw_server *srv, const char *sqlstate, const char *msg,
                                bool next_host)
{
    struct pool_server *ps = srv_priv(srv);
    struct pgw_pool_waiter *w = ps->owner;
    ps->owner = NULL;
    if (!w)
        return;
    w->repl_srv = NULL;
    struct pgw_pool *pool = w->pool;
    bool gone = pool->set->destroying || pool->orphan;
    if (!gone && ps->settings_gen != pool->settings_gen) {
        /* Started under settings a reload has since changed (user,
         * password, hosts, target_session_attrs): its refusal, or its
         * verdict on the host, is of the old ones.  As the pool's waiters
         * (connect_failed), the client logs in with the new ones, each
         * host of the list untried again. */
        if (w->repl_tried_words > 0)
            memset(w->repl_tried, 0, (size_t)w->repl_tried_words * sizeof(*w->repl_tried));
        w->repl_tries = 0;
        return;               /* still queued: the kick that follows starts it */
    }
    if (next_host && w->repl_tries < pool->nhosts && !gone && pgw_pool_host_left(pool, w))
        return;               /* still queued: the kick that follows starts
                               * its server on the next host */
    struct pgw_pool_error e;
    pgw_pool_set_error(&e, PGW_ESERVER_LOGIN, sqlstate, "server login failed: %s", msg);
    repl_fail(w, &e);
}
