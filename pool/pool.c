/*
 * pool.c - one pool per (database, user): the FIFO waiter queue, lending
 * and taking back servers, growing within the pool's limits (each new
 * server on a host of the entry's list chosen by the pool's cursor), the
 * pool's view of its hosts being down, stats and iteration.
 *
 * Invariants:
 *   - a server is in exactly one of pool->idle / active / pending, or closed;
 *   - a waiter is queued (w->node linked, w->ctx subscribed) or not, and
 *     its callback runs at most once per acquire, never inside
 *     pgw_pool_acquire();
 *   - pgw_pool_kick() is reentrant: a waiter callback may release or
 *     acquire on any pool; a nested kick of the same pool only flags the
 *     running one to loop again.
 * Lending an idle server allocates nothing.
 */
#include "pool/pool_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

static void waiter_done_cb(struct pgw_ctx_sub *sub, int err);
static int hosts_down(const struct pgw_pool *pool, struct pgw_pool_error *err);
static bool kind_recheck_open(const struct pgw_pool *pool);
static void shed_idle(struct pgw_pool *pool);

int pgw_pool_total(const struct pgw_pool *pool)
{
    return pool->n_idle + pool->n_active + pool->n_connecting + pool->n_resetting;
}

static ev_tstamp pool_now(const struct pgw_pool *pool)
{
    return pgw_mono_now(pool->set->loop);
}

const struct pgw_pool_error *pgw_pool_set_error(struct pgw_pool_error *e, int code,
                                                const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    e->code = code;
    snprintf(e->sqlstate, sizeof(e->sqlstate), "%s", sqlstate);
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return e;
}

/* ---- waiters ----------------------------------------------------------- */

bool pgw_pool_waiter_queued(const struct pgw_pool_waiter *w)
{
    return w->pool && w->node.next && pgw_list_linked(&w->node);
}

/* How many waiters, from the head of the queue, a server is on its way
 * to: one for each connecting or being checked or reset (each ends idle
 * and serves the oldest waiter); none in a paused pool. */
static int servers_coming(const struct pgw_pool *pool)
{
    return pool->paused ? 0 : pool->n_connecting + pool->n_resetting;
}

bool pgw_pool_waiter_server_coming(const struct pgw_pool_waiter *w)
{
    const struct pgw_pool *pool = w->pool;
    if (!pgw_pool_waiter_queued(w) || w->replication)
        return false;
    /* (Bounded by the servers on their way: a client's every read while
     * queued asks, and a long queue made that a walk of all of it.) */
    int coming = servers_coming(pool), ahead = 0;
    for (const struct pgw_list *n = pool->waiters.next; ahead < coming; n = n->next) {
        if (n == &w->node)
            return true;
        ahead++;
    }
    return false;
}

void pgw_pool_waiter_gone(struct pgw_pool_waiter *w)
{
    if (!w->gone && pgw_pool_waiter_queued(w) && !w->replication) {
        w->gone = true;
        w->pool->n_gone++;
    }
}

/* Take w off the queue and end its wait context; no callback. */
static void waiter_unqueue(struct pgw_pool_waiter *w)
{
    struct pgw_pool *pool = w->pool;
    if (w->replication) {
        pgw_pool_repl_unqueue(w);
        return;
    }
    pgw_list_del(&w->node);
    pool->n_waiters--;
    if (w->gone) {
        w->gone = false;
        pool->n_gone--;
    }
    pgw_ctx_unsubscribe(&w->sub);
    if (w->ctx)
        pgw_ctx_release(w->ctx);
    w->ctx = NULL;
}

/* The loop's error slot, filled, for a waiter to point at. */
static const struct pgw_pool_error *fail_slot(struct pgw_pool *pool,
                                              const struct pgw_pool_error *err)
{
    if (err != &pool->set->error)
        pool->set->error = *err;
    return &pool->set->error;
}

/* A waiter whose client left (pgw_pool_waiter_gone) fails as such
 * (PGW_ECLIENT_EOF), whatever ended its wait -- fail_gone, its
 * query_wait_timeout, a refused login, RELOAD or KILL (not a cancel of
 * its caller's ctx, which ends the caller's session anyway): the caller
 * lets the client go, not on to the next request it sent as if it were
 * there (one queued for a server as a client's that had not left, and
 * ran for nobody). */
static void waiter_fail(struct pgw_pool_waiter *w, const struct pgw_pool_error *err)
{
    struct pgw_pool_error left;
    if (w->gone && err->code != PGW_ECLIENT_EOF && err->code != PGW_ECANCELED)
        err = pgw_pool_set_error(&left, PGW_ECLIENT_EOF, "08006",
                                 "the client left while waiting for a server (%s)", err->message);
    waiter_unqueue(w);
    w->error = fail_slot(w->pool, err);
    w->server = NULL;
    w->cb(w, NULL);
}

/* The error of a host's lookup that could not be made and is made again
 * every PGW_POOL_FDS_PAUSE (backend.c, dns_retry_later: pgwharf short of
 * memory or of a thread), when every host of the pool is such a name
 * without addresses: no server could have come.  Else NULL. */
static const char *lookup_retrying(const struct pgw_pool *pool)
{
    const char *first = NULL;
    for (int k = 0; k < pool->nhosts; k++) {
        const struct pool_host *h = &pool->hosts[k];
        const char *why = pgw_backend_resolves(h->be, &h->spec)
                              ? pgw_backend_dns_retrying(h->be) : NULL;
        if (!why)
            return NULL;
        first = first ? first : why;
    }
    return first;
}

/* A waiter's query_wait_timeout: 57014.  With every host's breaker open
 * (not paused) no new server could have come, only one given back: the
 * message adds the breaker's error, as a client gets it at once where no
 * server is to come back (breaker_refuses, fail_stranded) -- in session
 * mode, waiting for a server another client holds for its session, the
 * client was not told why no new server came.  The SQLSTATE stays the
 * timeout's: the session is fine (a class 08 would have drivers drop
 * it). */
void pgw_pool_wait_timed_out(struct pgw_pool *pool, ev_tstamp since, struct pgw_pool_error *e)
{
    ev_tstamp waited = pool_now(pool) - since;
    pool->st.total_wait_timeouts++;
    struct pgw_pool_error down;
    const char *lookup = NULL;
    if (!pool->paused && hosts_down(pool, &down) == PGW_EBREAKER_OPEN)
        pgw_pool_set_error(e, PGW_EDEADLINE, "57014",
                           "query_wait_timeout: waited %.1f s for a server in pool %s/%s, the "
                           "backend's circuit breaker open (%s %s)", waited, pool->dbname,
                           pool->user, down.sqlstate, down.message);
    else if (!pool->paused && (lookup = lookup_retrying(pool)))
        pgw_pool_set_error(e, PGW_EDEADLINE, "57014",
                           "query_wait_timeout: waited %.1f s for a server in pool %s/%s, the "
                           "backend's host name lookup failing (%.400s)", waited, pool->dbname,
                           pool->user, lookup);
    else
        pgw_pool_set_error(e, PGW_EDEADLINE, "57014",
                           "query_wait_timeout: waited %.1f s for a server in pool %s/%s", waited,
                           pool->dbname, pool->user);
    char names[PGW_POOL_LOG_NAMES];
    pgw_info("pool_wait_timeout", "%s waited=%.3f", pgw_pool_log_names(pool, names, sizeof(names)),
             waited);
}

static void waiter_done_cb(struct pgw_ctx_sub *sub, int err)
{
    struct pgw_pool_waiter *w = pgw_container_of(sub, struct pgw_pool_waiter, sub);
    struct pgw_pool *pool = w->pool;
    struct pgw_pool_error e;

    if (err == PGW_EDEADLINE) {
        pgw_pool_wait_timed_out(pool, w->since, &e);
    } else {
        pgw_pool_set_error(&e, PGW_ECANCELED, "57014", "canceled while waiting for a server");
    }
    waiter_fail(w, &e);
}

/* The normal queue only (pgw_pool_fail_waiters adds the replication one). */
static void fail_queue(struct pgw_pool *pool, const struct pgw_pool_error *err)
{
    struct pgw_list snap;
    pgw_list_init(&snap);
    /* Move the queue aside so waiters queued by the callbacks are kept. */
    if (!pgw_list_empty(&pool->waiters)) {
        snap.next = pool->waiters.next;
        snap.prev = pool->waiters.prev;
        snap.next->prev = &snap;
        snap.prev->next = &snap;
        pgw_list_init(&pool->waiters);
    }
    struct pgw_list *n;
    while ((n = pgw_list_first(&snap))) {
        struct pgw_pool_waiter *w = pgw_container_of(n, struct pgw_pool_waiter, node);
        waiter_fail(w, err);
    }
}

void pgw_pool_fail_waiters(struct pgw_pool *pool, const struct pgw_pool_error *err)
{
    fail_queue(pool, err);
    pgw_pool_repl_fail_waiters(pool, err);
}

/* ---- refused logins ---------------------------------------------------- */

bool pgw_pool_login_error_is_local(const char *sqlstate)
{
    static const char *const local[] = {
        "3D000", "42501", "F0000", "55000",        /* 55000: ALLOW_CONNECTIONS false */
        "22023", "42704", "42601", "42602", "55P02",   /* a login parameter refused */
    };
    if (strncmp(sqlstate, "28", 2) == 0)
        return true;
    for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++)
        if (strcmp(sqlstate, local[i]) == 0)
            return true;
    return false;
}

/* The pool's login was refused and server_login_retry is not over; not
 * when the refusal is that every host is skipped for its kind and one of
 * them may be rechecked (kind_recheck_open): a client that comes then
 * waits for that login, as where the other hosts are down (hosts_down).
 * With two standbys and no primary, a promotion was found only after
 * server_login_retry. */
static bool login_blocked(const struct pgw_pool *pool)
{
    return pool->login_error && pool_now(pool) < pool->login_retry_until &&
           !(pool->login_kind && kind_recheck_open(pool));
}

bool pgw_pool_login_blocked(const struct pgw_pool *pool)
{
    return login_blocked(pool);
}

/* Will a server of the pool come back to serve a waiter: one lent out,
 * idle, or being checked or reset (not only a new login)? */
static bool server_to_come(const struct pgw_pool *pool)
{
    return pool->n_active > pool->n_held || pool->n_idle > 0 || pool->n_resetting > 0;
}

void pgw_pool_login_failed(struct pgw_pool *pool, const char *sqlstate, const char *msg)
{
    double retry = pool->set->cfg->server_login_retry;
    char *copy = strdup(msg);
    pool->login_kind = false;       /* pgw_pool_host_mismatch sets it after */
    if (copy) {
        free(pool->login_error);
        pool->login_error = copy;
        snprintf(pool->login_sqlstate, sizeof(pool->login_sqlstate), "%s", sqlstate);
        pool->login_retry_until = retry > 0 ? pool_now(pool) + retry : 0;
    }
    /* Its waiters would only wait for the same refusal: they get it now,
     * unless a server of the pool (lent out, or being checked or reset)
     * comes back, or another login is on its way, as fail_stranded has
     * it: a role's CONNECTION LIMIT refuses some of a fresh pool's
     * logins and lets one in (hunt: backend faults; every client of the
     * pool got the 53300, and the server that logged in a moment later
     * was left idle).  If that one is refused too, its refusal fails
     * them.  Not its replication clients: their servers log in
     * otherwise (pg_hba's replication lines, no connect_query, no
     * database for a physical one), each gets its own server's answer
     * (replication.c). */
    if (!server_to_come(pool) && pool->n_connecting == 0) {
        struct pgw_pool_error err;
        pgw_pool_set_error(&err, PGW_ESERVER_LOGIN, sqlstate, "server login failed: %s", msg);
        fail_queue(pool, &err);
    }
}

bool pgw_pool_fds_exhausted(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        close(fd);
        return false;
    }
    return errno == EMFILE || errno == ENFILE;
}

void pgw_pool_fds_short(struct pgw_pool *pool)
{
    pool->set->fds_short_until = pool_now(pool) + PGW_POOL_FDS_PAUSE;
    if (!server_to_come(pool)) {
        struct pgw_pool_error err;
        pgw_pool_set_error(&err, PGW_ESERVER_CONNECT, "53300", "no server connection: pgwharf "
                           "has no file descriptor left (open-files limit)");
        fail_queue(pool, &err);
    }
}

void pgw_pool_login_retry_configure(struct pgw_pool *pool)
{
    double retry = pool->set->cfg->server_login_retry;
    ev_tstamp now = pool_now(pool);
    ev_tstamp skip = now + (retry > 1.0 ? retry : 1.0), first = 0;   /* (host_skip's) */
    for (int i = 0; i < pool->nhosts; i++) {
        if (pool->hosts[i].skip_until > skip)
            pool->hosts[i].skip_until = skip;
        ev_tstamp t = pool->hosts[i].skip_until;
        if (t > now && (first == 0 || t < first))
            first = t;
    }
    /* (0: no wait, but the block until a skipped host's turn stays, as
     * pgw_pool_host_mismatch sets it) */
    ev_tstamp until = retry > 0 ? now + retry : first > 0 ? first : now;
    if (pool->login_retry_until > until)
        pool->login_retry_until = until;
}

void pgw_pool_login_ok(struct pgw_pool *pool)
{
    free(pool->login_error);
    pool->login_error = NULL;
    pool->login_retry_until = 0;
    pool->login_kind = false;
}

void pgw_pool_settings_changed(struct pgw_pool *pool)
{
    pgw_pool_login_ok(pool);
    for (int i = 0; i < pool->nhosts; i++) {
        if (pool->hosts[i].tls_skip) {      /* refused under the old settings */
            pool->hosts[i].skip_until = 0;
            pool->hosts[i].tls_skip = false;
        }
    }
    pool->settings_gen++;
}

/* ---- lending ----------------------------------------------------------- */

static void lend(struct pgw_pool *pool, struct pgw_server *srv, struct pgw_pool_waiter *w)
{
    ev_tstamp now = pool_now(pool);
    ev_io_stop(pool->set->loop, &srv->io);
    pgw_server_move(srv, PGW_SRV_ACTIVE);
    srv->request_time = now;
    srv->lend_count++;
    srv->link = NULL;
    srv_priv(srv)->checked = false;
    w->server = srv;
    if (!w->not_assigned)
        pool->st.total_acquires++;
}

/* The reserve the pool may use: none with reserve_pool_timeout 0, which
 * turns it off, as PgBouncer's does. */
static int reserve_size(const struct pgw_pool *pool)
{
    return pool->set->cfg->reserve_pool_timeout > 0 ? pool->reserve_pool_size : 0;
}

static int count_servers(const struct pgw_pool *pool, bool by_db);
static bool same_limit(const struct pgw_pool *a, const struct pgw_pool *b, bool by_db);

/* pool's database (by_db) or user is at its max_db_connections or
 * max_user_connections, with no idle server of another pool under it to
 * make way (evict_idle). */
static bool limit_full(const struct pgw_pool *pool, bool by_db)
{
    int limit = by_db ? pool->max_db_connections : pool->max_user_connections;
    if (limit <= 0)
        return false;
    long long total = 0;                 /* one walk: count_servers and the idle look */
    for (const struct pgw_list *n = pool->set->pools.next; n != &pool->set->pools; n = n->next) {
        const struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        if (!same_limit(p, pool, by_db))
            continue;
        if (p != pool && p->n_idle > 0)
            return false;
        total += pgw_pool_total(p);
    }
    return total >= limit;
}

/* The pool may not grow any more: its pool_size and reserve taken (queueing
 * on a busy server must not keep a waiting client from a reserve server,
 * which it would get past reserve_pool_timeout), or its database's or
 * user's limit. */
static bool pipeline_full(const struct pgw_pool *pool)
{
    return pool->n_idle == 0 &&
           (pgw_pool_total(pool) >= (long long)pool->pool_size + reserve_size(pool) ||
            limit_full(pool, true) || limit_full(pool, false));
}

/* srv closes when its borrower is done (RECONNECT, server_lifetime). */
static bool closes_at_release(struct pgw_server *srv, ev_tstamp now)
{
    return srv_priv(srv)->reconnect || (srv->expire_at > 0 && now >= srv->expire_at);
}

struct pgw_pool_waiter *pgw_pool_pipeline_waiter(struct pgw_server *srv, pgw_pool_acquire_fn cb)
{
    struct pgw_pool *pool = srv->pool;
    /* As for pick: only clients no other server would take soon.  A free
     * server, room to grow (reserve included), or a server connecting or
     * being reset serves the head of the queue sooner, without waiting
     * behind this one.  None over a lowered limit (pick says why). */
    if (pool->paused || pool->orphan || pool->set->destroying ||
        pgw_list_empty(&pool->waiters) || srv->state != PGW_SRV_ACTIVE ||
        pool->n_waiters <= pool->n_connecting + pool->n_resetting ||
        closes_at_release(srv, pool_now(pool)) || !pipeline_full(pool) ||
        pgw_pool_over_limit(pool))
        return NULL;
    struct pgw_pool_waiter *w =
        pgw_container_of(pgw_list_first(&pool->waiters), struct pgw_pool_waiter, node);
    return w->cb == cb ? w : NULL;
}

void pgw_pool_take_waiter(struct pgw_pool_waiter *w)
{
    waiter_unqueue(w);
}

struct pgw_server *pgw_pool_pipeline_pick(struct pgw_pool *pool,
                                          int (*score)(struct pgw_server *, void *), void *arg)
{
    /* Only when a client would otherwise wait: a free server or room to
     * grow serves it sooner.  Not past clients already waiting: they are
     * queued first, in order (pgw_pool_pipeline_waiter). */
    if (pool->paused || pool->orphan || pool->set->destroying ||
        !pgw_list_empty(&pool->waiters) || !pipeline_full(pool))
        return NULL;
    /* Over a limit a reload lowered (pool_size, max_db_connections,
     * max_user_connections), a server must come back to close: one
     * clients keep queueing on would stay busy, and the count over the
     * limit, for as long as the load lasts. */
    if (pgw_pool_over_limit(pool))
        return NULL;
    ev_tstamp now = pool_now(pool);
    struct pgw_server *best = NULL;
    int best_score = -1;
    for (struct pgw_list *n = pool->active.next; n != &pool->active; n = n->next) {
        struct pgw_server *srv = pgw_container_of(n, struct pgw_server, node);
        if (closes_at_release(srv, now))
            continue;         /* queue nobody behind it */
        int sc = score(srv, arg);
        if (sc >= 0 && (!best || sc < best_score)) {
            best = srv;
            best_score = sc;
            if (sc == 0)
                break;
        }
    }
    return best;
}

bool pgw_pool_handoff(struct pgw_server *srv)
{
    /* RECONNECT, server_lifetime, a removed database or PAUSE do not stop
     * it: the queries queued here are on the server already, and their
     * answers come only this way.  (Nobody new queues behind a server due
     * to close, nor on a paused pool; it closes at its last release.) */
    if (srv->state != PGW_SRV_ACTIVE)
        return false;
    srv->request_time = pool_now(srv->pool);
    srv->lend_count++;
    return true;
}

void pgw_pool_pipeline_assigned(struct pgw_pool *pool, double waited)
{
    pool->st.total_acquires++;
    if (waited > 0)
        pool->st.total_wait_us += (uint64_t)(waited * 1e6);
}

/* The server to lend without a check, if any: the first idle one in the
 * list's order (the most recent, or the longest idle with
 * server_round_robin) that is not due for server_check_query. */
static struct pgw_server *fresh_idle(struct pgw_pool *pool)
{
    ev_tstamp now = pool_now(pool);
    for (struct pgw_list *n = pool->idle.next; n != &pool->idle; n = n->next) {
        struct pgw_server *srv = pgw_container_of(n, struct pgw_server, node);
        if (!pgw_server_needs_check(srv, now))
            return srv;
    }
    return NULL;
}

/* PgBouncer's "<empty>" (its default since 1.24) is an empty query: the
 * server answers EmptyQueryResponse, parsing and planning nothing. */
static void check_or_close(struct pgw_server *srv)
{
    const char *q = srv->pool->set->cfg->server_check_query;
    if (strcmp(q, "<empty>") == 0)
        q = "";
    if (pgw_server_job(srv, SRV_JOB_CHECK, q) < 0)
        pgw_server_close(srv, "out of memory for server_check_query");
}

/* Hand idle servers to waiters in FIFO order. */
static void serve_waiters(struct pgw_pool *pool)
{
    /* The queue itself, not n_waiters: while pgw_pool_fail_waiters fails a
     * snapshot of it, n_waiters still counts waiters no longer on it. */
    while (!pool->paused && !pgw_list_empty(&pool->waiters) && !pool->set->destroying) {
        shed_idle(pool);
        struct pgw_list *n = pgw_list_first(&pool->idle);
        if (!n)
            return;
        struct pgw_server *srv = fresh_idle(pool);
        if (!srv) {
            /* All due for a check: one for each waiter that no server
             * being checked or reset (each ends idle for a waiter) will
             * serve; not every idle server for one client. */
            if (pool->n_resetting >= pool->n_waiters)
                return;
            check_or_close(pgw_container_of(n, struct pgw_server, node));
            continue;
        }
        struct pgw_pool_waiter *w =
            pgw_container_of(pgw_list_first(&pool->waiters), struct pgw_pool_waiter, node);
        pool->st.total_wait_us += (uint64_t)((pool_now(pool) - w->since) * 1e6);
        pgw_pool_take_waiter(w);
        lend(pool, srv, w);
        w->cb(w, srv);
    }
}

/* No server of the pool will come back (the last lent one closed) and
 * none may be opened: the server refused the pool's login
 * (server_login_retry), every host's breaker is open, or no host name
 * resolves (dns_nxdomain_ttl).  Its waiters get that error now, as a
 * client coming now does, rather than wait out query_wait_timeout.  Not
 * while paused: they wait for RESUME. */
static void fail_stranded(struct pgw_pool *pool)
{
    if (pgw_list_empty(&pool->waiters) || pool->paused || server_to_come(pool) ||
        pool->n_connecting > 0)
        return;
    struct pgw_pool_error err;
    int rc = 0;
    if (login_blocked(pool))
        pgw_pool_set_error(&err, PGW_ESERVER_LOGIN, pool->login_sqlstate,
                           "server login failed: %s", pool->login_error);
    else if ((rc = hosts_down(pool, &err)) == 0)
        return;               /* a connection may start: grow does */
    if (rc == PGW_EBREAKER_OPEN)
        pool->st.total_breaker_rejects += (uint64_t)pool->n_waiters;
    fail_queue(pool, &err);
}

/* Waiters whose client left while a server was on its way to them
 * (pgw_pool_waiter_gone) and to whom none is now: failed, as a client
 * leaving a full pool's queue is let go (their request never runs).
 * Before pgw_pool_grow: no new server is opened for a client that left
 * (with server_login_retry 0 the next login, opened first, kept a server
 * on its way to it for as long as another of the pool was lent, and its
 * request ran when that one came back).  One walk: a server on its way
 * is a waiter's by its place in the queue (servers_coming), and gone
 * ones are marked only there, near the head, so the walk ends at the
 * last of them.  They go to a list of their own before any is failed,
 * as in fail_queue: a callback may change the queue. */
static void fail_gone(struct pgw_pool *pool)
{
    struct pgw_list out;
    pgw_list_init(&out);
    int coming = servers_coming(pool), at = 0, seen = 0;
    struct pgw_list *n, *next;
    for (n = pool->waiters.next; n != &pool->waiters && seen < pool->n_gone; n = next, at++) {
        next = n->next;
        if (pgw_container_of(n, struct pgw_pool_waiter, node)->gone) {
            seen++;
            if (at >= coming) {
                pgw_list_del(n);
                pgw_list_append(&out, n);
            }
        }
    }
    struct pgw_pool_error err;
    pgw_pool_set_error(&err, PGW_ECLIENT_EOF, "08006",
                       "the client left while waiting for a server");
    while ((n = pgw_list_first(&out)))
        waiter_fail(pgw_container_of(n, struct pgw_pool_waiter, node), &err);
}

void pgw_pool_kick(struct pgw_pool *pool)
{
    if (pool->dispatching) {
        pool->dispatch_again = true;
        return;
    }
    pool->dispatching = true;
    do {
        pool->dispatch_again = false;
        serve_waiters(pool);
        fail_stranded(pool);
        /* A client that left is let go before a new login is opened for
         * it only after a refusal (pool->login_error: with
         * server_login_retry = 0 the next login would be refused too, and
         * it waited for a lent server for nobody).  After a transient
         * failure (a connect that failed unanswered, a failed check) a
         * new login is on its way to it as to a present client, and its
         * request runs when it comes, as in PostgreSQL and PgBouncer. */
        if (pool->n_gone > 0 && pool->login_error)
            fail_gone(pool);
        pgw_pool_grow(pool);
        if (pool->n_gone > 0)
            fail_gone(pool);
        if (pool->n_repl_waiters > 0)
            pgw_pool_repl_grow(pool, true);
    } while (pool->dispatch_again);
    pool->dispatching = false;
}

/* Do a and b share the max_db_connections (by_db) or max_user_connections
 * limit?  The user one is the server login user's. */
static bool same_limit(const struct pgw_pool *a, const struct pgw_pool *b, bool by_db)
{
    return strcmp(by_db ? a->dbname : a->server_user, by_db ? b->dbname : b->server_user) == 0;
}

/* When the pool's longest-waiting client came (it has one). */
static ev_tstamp oldest_since(const struct pgw_pool *pool)
{
    return pgw_container_of(pgw_list_first(&pool->waiters), struct pgw_pool_waiter, node)->since;
}

/* A turn (pgw_pool_turn_length): a quarter of query_wait_timeout at most,
 * so that a turn comes before clients time out; PGW_POOL_TURN_MIN at
 * least, as a quarter of 0.1 s let a login of the others' room go every
 * 25 ms, about as often as one can finish. */
double pgw_pool_turn_length(double qwt)
{
    if (qwt <= 0 || qwt / 4 >= PGW_POOL_TURN)
        return PGW_POOL_TURN;
    double floor = qwt / 2 < PGW_POOL_TURN_MIN ? qwt / 2 : PGW_POOL_TURN_MIN;
    return qwt / 4 > floor ? qwt / 4 : floor;
}

static double pool_turn(const struct pgw_pool *pool)
{
    return pgw_pool_turn_length(pool->query_wait_timeout);
}

struct kick_entry {
    struct pgw_pool *pool;
    ev_tstamp since;          /* its longest-waiting client's */
};

static int cmp_kick(const void *a, const void *b)
{
    const struct kick_entry *x = a, *y = b;
    return x->since < y->since ? -1 : x->since > y->since;
}

uint64_t pgw_pool_kick_waiting(struct pgw_pool_set *set,
                               bool (*match)(const struct pgw_pool *, const void *),
                               const void *arg)
{
    /* One walk (it runs at every release of a server under a db or user
     * limit): into the array on the stack, a heap one only past it. */
    struct kick_entry few[16], *order = few;
    size_t cap = sizeof(few) / sizeof(few[0]), k = 0;
    for (struct pgw_list *n = set->pools.next; n != &set->pools; n = n->next) {
        struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        if (pgw_list_empty(&p->waiters) || !match(p, arg))
            continue;
        if (k == cap) {
            struct kick_entry *more = realloc(order == few ? NULL : order,
                                              2 * cap * sizeof(*order));
            if (!more)
                break;          /* out of memory: the first ones only */
            if (order == few)
                memcpy(more, few, sizeof(few));
            order = more;
            cap *= 2;
        }
        order[k++] = (struct kick_entry){ p, oldest_since(p) };
    }
    uint64_t round = ++set->kick_round;
    qsort(order, k, sizeof(*order), cmp_kick);
    for (size_t i = 0; i < k; i++) {
        order[i].pool->kick_mark = round;
        pgw_pool_kick(order[i].pool);
    }
    if (order != few)
        free(order);
    return round;
}

static bool all_pools(const struct pgw_pool *p, const void *arg)
{
    (void)p;
    (void)arg;
    return true;
}

void pgw_pool_kick_all(struct pgw_pool_set *set)
{
    uint64_t round = pgw_pool_kick_waiting(set, all_pools, NULL);
    for (struct pgw_list *n = set->pools.next; n != &set->pools; n = n->next) {
        struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        if (p->kick_mark != round)
            pgw_pool_kick(p);
    }
}

static bool shares_a_limit(const struct pgw_pool *p, const void *arg)
{
    const struct pgw_pool *pool = arg;
    return p != pool && (same_limit(p, pool, true) || same_limit(p, pool, false));
}

/* A server of pool closed or came back: it, and the pools sharing its db
 * or user limit, may now have room to grow.  Its own waiting clients
 * first (a server it took back serves them as it is: no other pool's
 * idle server evicted, no new login), then the other pools', the one
 * whose client has waited longest first (pgw_pool_kick_waiting), then its
 * min_pool_size.  (The others went in the list's order: the pools first
 * in it took each room that opened, evicting each other's idle servers,
 * and the last ones' clients waited until the others had none -- hunt:
 * limits, four users under one max_db_connections.) */
void pgw_pool_kick_related(struct pgw_pool *pool)
{
    bool limited = pool->max_db_connections > 0 || pool->max_user_connections > 0;
    bool first = !limited || !pgw_list_empty(&pool->waiters);
    if (first)
        pgw_pool_kick(pool);
    if (!limited)
        return;
    pgw_pool_kick_waiting(pool->set, shares_a_limit, pool);
    if (!first)
        pgw_pool_kick(pool);
}

/* ---- growing ----------------------------------------------------------- */

static int count_servers(const struct pgw_pool *pool, bool by_db)
{
    int total = 0;
    const struct pgw_list *n;
    for (n = pool->set->pools.next; n != &pool->set->pools; n = n->next) {
        const struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        if (same_limit(p, pool, by_db))
            total += pgw_pool_total(p) + p->n_detached;    /* (LISTEN bridges) */
    }
    return total;
}

bool pgw_pool_limits_room(const struct pgw_pool *pool)
{
    return (pool->max_db_connections <= 0 ||
            count_servers(pool, true) < pool->max_db_connections) &&
           (pool->max_user_connections <= 0 ||
            count_servers(pool, false) < pool->max_user_connections);
}

bool pgw_pool_has_room(const struct pgw_pool *pool)
{
    return pgw_pool_total(pool) < pool->pool_size &&
           (pool->max_db_connections <= 0 ||
            count_servers(pool, true) < pool->max_db_connections) &&
           (pool->max_user_connections <= 0 ||
            count_servers(pool, false) < pool->max_user_connections);
}

/* How many servers the pool, its database and its user have over their
 * pool_size (its reserve included), max_db_connections and
 * max_user_connections: more than 0 after a reload lowered one (growing
 * never passes a limit, nor evicting an idle server of another pool).
 * Then a server of the pool coming back, or idle, closes. */
struct excess {
    long long size;
    int db, user;
};

static void excess_count(const struct pgw_pool *pool, struct excess *x)
{
    x->size = pgw_pool_total(pool) - ((long long)pool->pool_size + reserve_size(pool));
    x->db = pool->max_db_connections > 0
                ? count_servers(pool, true) - pool->max_db_connections : 0;
    x->user = pool->max_user_connections > 0
                  ? count_servers(pool, false) - pool->max_user_connections : 0;
}

/* Why a server closes for x, or NULL. */
static const char *excess_why(const struct excess *x)
{
    return x->size > 0 ? "pool_size lowered"
           : x->db > 0 ? "max_db_connections lowered"
           : x->user > 0 ? "max_user_connections lowered" : NULL;
}

const char *pgw_pool_over_limit(const struct pgw_pool *pool)
{
    struct excess x;
    excess_count(pool, &x);
    return excess_why(&x);
}

/* The idle server used longest ago: the list's tail, or its head with
 * server_round_robin (which puts a released server last: server.c). */
static struct pgw_list *idle_lru(const struct pgw_pool *pool)
{
    return pool->set->cfg->server_round_robin ? pgw_list_first(&pool->idle)
                                              : pgw_list_last(&pool->idle);
}

/* Close the pool's idle servers, least recently used first, while it (its
 * database, its user) is over a limit a reload lowered: as PgBouncer, a
 * server over the limit closes rather than serve a client, who gets one
 * within it (one coming back, or idle in its pool, once the count is
 * down to the limit). */
static void shed_idle(struct pgw_pool *pool)
{
    struct pgw_list *n;
    const char *over;
    struct excess x;
    if (pool->n_idle == 0)
        return;
    excess_count(pool, &x);
    while ((over = excess_why(&x)) && (n = idle_lru(pool))) {
        pgw_server_close(pgw_container_of(n, struct pgw_server, node), over);
        x.size--;
        x.db--;
        x.user--;
    }
}

/* The oldest waiter has waited past reserve_pool_timeout?  Otherwise arm
 * the timer for when it will have. */
static bool reserve_due(struct pgw_pool *pool)
{
    struct ev_loop *loop = pool->set->loop;
    ev_timer_stop(loop, &pool->reserve_timer);
    if (reserve_size(pool) <= 0 || pgw_list_empty(&pool->waiters))   /* as above */
        return false;
    struct pgw_pool_waiter *w =
        pgw_container_of(pgw_list_first(&pool->waiters), struct pgw_pool_waiter, node);
    double left = w->since + pool->set->cfg->reserve_pool_timeout - pool_now(pool);
    if (left <= 0)
        return true;
    ev_timer_set(&pool->reserve_timer, left, 0);
    ev_timer_start(loop, &pool->reserve_timer);
    return false;
}

/* At a db/user limit, an idle server of another pool under the same limit
 * makes way (the least recently used one), as PgBouncer does.  Returns
 * true when one was closed. */
static bool evict_idle(struct pgw_pool *pool, bool by_db)
{
    struct pgw_server *victim = NULL;
    struct pgw_list *n;
    for (n = pool->set->pools.next; n != &pool->set->pools; n = n->next) {
        struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        if (p == pool || !same_limit(p, pool, by_db))
            continue;
        struct pgw_list *last = idle_lru(p);
        if (!last)
            continue;
        struct pgw_server *s = pgw_container_of(last, struct pgw_server, node);
        if (!victim || s->request_time < victim->request_time)
            victim = s;
    }
    if (!victim)
        return false;
    pgw_server_close(victim, by_db ? "max_db_connections: making room for another pool"
                                   : "max_user_connections: making room for another pool");
    return true;
}

/* Room under a db or user limit, evicting other pools' idle servers for
 * up to `evict` new ones. */
static int limit_room(struct pgw_pool *pool, int limit, bool by_db, int evict)
{
    int r = limit - count_servers(pool, by_db);
    while (r < evict && evict_idle(pool, by_db))
        r++;
    return r;
}

/* How many more servers this pool may have now (all limits), at most want.
 * Only waiters (`evict` of them) make other pools' idle servers go; warming
 * min_pool_size never does, or two pools would take turns. */
static long long size_room(struct pgw_pool *pool)
{
    long long max = pool->pool_size;         /* both may be up to INT_MAX */
    if (reserve_due(pool))
        max += reserve_size(pool);
    return max - pgw_pool_total(pool);
}

static int room(struct pgw_pool *pool, int want, int evict)
{
    long long left = size_room(pool);
    int r = want < left ? want : (int)left;
    if (r > 0 && pool->max_db_connections > 0) {
        int d = limit_room(pool, pool->max_db_connections, true, evict < r ? evict : r);
        r = d < r ? d : r;
    }
    if (r > 0 && pool->max_user_connections > 0) {
        int u = limit_room(pool, pool->max_user_connections, false, evict < r ? evict : r);
        r = u < r ? u : r;
    }
    return r;
}

/* Servers waiters need beyond those on their way (connecting, being
 * checked or reset: each ends idle and serves a waiter). */
static int needed(const struct pgw_pool *pool)
{
    int coming = pool->n_connecting + pool->n_resetting + pool->n_idle;
    return pool->paused ? 0 : pool->n_waiters - coming;
}

/* Is host h out of this attempt for target_session_attrs?  With
 * prefer-standby only the standby pass leaves out the hosts found not to
 * be one; the other pass takes any host, but not one that refused the
 * entry's TLS (tls_skip): no pass can log in there. */
static bool host_skipped(const struct pgw_pool *pool, const struct pool_host *h, ev_tstamp now,
                         bool standby_pass)
{
    return now < h->skip_until &&
           (pool->tsa != PGW_TSA_PREFER_STANDBY || standby_pass || h->tls_skip);
}

struct grow_try {
    struct pgw_pool *pool;
    bool probe;
    bool standby_pass;
    bool recheck;     /* only the hosts skipped for their kind (recheck_due) */
    bool rechecked;   /* out: the host chosen is such a recheck */
    const struct pgw_pool_waiter *w;  /* the replication client it is for, else NULL */
};

/* Did replication waiter w (NULL: none) have host i?  A host past its
 * array (the list grew on a reload) it did not. */
static bool host_tried(const struct pgw_pool_waiter *w, int i)
{
    return w && pgw_tried_bit(w->repl_tried, w->repl_tried_words, i);
}

/* May host h, skipped for its kind, be tried again now, before its
 * server_login_retry is over?  Only when no other host can take an attempt
 * (the caller's to know), and a second at least after the host's last
 * refusal or recheck by any pool (its backend's kind_recheck_at).  After
 * a failover the standby, refused while the primary was failing, is
 * promoted: clients were told that no host matched until
 * server_login_retry ended, though libpq's own multi-host connect found
 * the new primary at once (hunt: 12.6 s with the default 15 s).  One login
 * a second at most on the host, however many pools name it (the clock was
 * each pool's: N pools, N logins a second on a standby that stays one),
 * and none while one is under way (its outcome is every pool's: a slow
 * login made no second one).  Not with prefer-standby: its second pass
 * takes the skipped hosts anyway. */
static bool recheck_due(const struct pgw_pool *pool, const struct pool_host *h, ev_tstamp now)
{
    return pool->tsa != PGW_TSA_PREFER_STANDBY && !h->tls_skip &&
           now >= h->be->kind_recheck_at[pool->tsa] && h->be->kind_rechecks[pool->tsa] == 0;
}

/* Will a client that comes now see skipped host h rechecked: one due, or
 * one under way (any pool's)?  It waits for that login's outcome then, and
 * gets the refusal only if the host is still of the wrong kind (clients
 * coming while the login was under way got the breaker's 08001 at once,
 * the standby promoted and found a moment later). */
static bool recheck_open(const struct pgw_pool *pool, const struct pool_host *h, ev_tstamp now)
{
    return pool->tsa != PGW_TSA_PREFER_STANDBY && !h->tls_skip &&
           (now >= h->be->kind_recheck_at[pool->tsa] || h->be->kind_rechecks[pool->tsa] > 0) &&
           !pgw_breaker_blocked(&h->be->breaker, now);
}

/* Is a recheck open (recheck_open) on one of the pool's skipped hosts? */
static bool kind_recheck_open(const struct pgw_pool *pool)
{
    ev_tstamp now = pool_now(pool);
    for (int i = 0; i < pool->nhosts; i++) {
        const struct pool_host *h = &pool->hosts[i];
        if (host_skipped(pool, h, now, false) && recheck_open(pool, h, now))
            return true;
    }
    return false;
}

/* pgw_hosts_choose's try: may host i take a connection attempt now? */
static int grow_try_host(int i, void *arg)
{
    struct grow_try *t = arg;
    struct pool_host *h = &t->pool->hosts[i];
    ev_tstamp now = pool_now(t->pool);
    if (host_tried(t->w, i))
        return PGW_EBREAKER_OPEN;  /* this client had it: one attempt a host */
    if (host_skipped(t->pool, h, now, t->standby_pass) != t->recheck ||
        (t->recheck && !recheck_due(t->pool, h, now)))
        return PGW_EBREAKER_OPEN;  /* not a target_session_attrs match (or,
                                    * rechecking, not one skipped, or not yet) */
    return pgw_backend_admit(h->be, pgw_backend_resolves(h->be, &h->spec), &t->probe);
}

/* The host of the next connection attempt (pgw_hosts_choose).  With
 * prefer-standby, libpq's two passes: the hosts not found to be anything
 * but a standby first; only when none of them can take the attempt now
 * (each found not to be one, unreachable, or its breaker open) any host.
 * With no host to take it otherwise, one skipped for its kind whose
 * recheck is due (recheck_due) when a client waits: not for min_pool_size
 * (a login a second per pool on a standby that stays one, with no client
 * asking: review).  (A replication client's server, chosen so while a
 * client waits, is not counted as a recheck under way: grow_one's are.) */
static int choose_host(struct pgw_pool *pool, struct grow_try *t)
{
    t->standby_pass = pool->tsa == PGW_TSA_PREFER_STANDBY;
    int i = pgw_hosts_choose(&pool->cursor, grow_try_host, t);
    if (i == PGW_EBREAKER_OPEN && t->standby_pass) {
        t->standby_pass = false;
        i = pgw_hosts_choose(&pool->cursor, grow_try_host, t);
    }
    if (i == PGW_EBREAKER_OPEN && pool->n_waiters > 0 && pool->tsa != PGW_TSA_PREFER_STANDBY) {
        t->recheck = true;
        i = pgw_hosts_choose(&pool->cursor, grow_try_host, t);
        t->recheck = false;
        /* (Its clock moves when the login starts: grow_one.  A
         * replication client's login moves none.) */
        t->rechecked = i >= 0;
    }
    return i;
}

int pgw_pool_choose_host(struct pgw_pool *pool, const struct pgw_pool_waiter *w, bool *probe)
{
    struct grow_try t = { .pool = pool, .w = w };
    int i = choose_host(pool, &t);
    *probe = t.probe;
    return i;
}

/* Start one server for the pool; evicting: an idle server of another
 * pool under the same limit makes way for it, but only once a connection
 * may start (a server_connect_rate token): evicted for a start that then
 * waits, the idle server was only opened again by the other pool's
 * warm-up, and the waiter waited on.  false when none started. */
static bool grow_one(struct pgw_pool *pool, bool evicting)
{
    if (evicting && (limit_full(pool, true) || limit_full(pool, false)))
        return false;           /* no idle server elsewhere to make way */
    struct grow_try t = { .pool = pool };
    int i = choose_host(pool, &t);
    if (i < 0)
        return false;
    if (evicting && room(pool, 1, 1) <= 0) {
        pgw_backend_unadmit(pool->hosts[i].be, t.probe);
        return false;
    }
    struct pgw_server *srv = pgw_server_start(pool, i, t.probe, NULL);
    if (!srv) {
        if (t.probe)
            pgw_breaker_probe_abort(&pool->hosts[i].be->breaker, pool_now(pool));
        return false;
    }
    if (t.rechecked) {
        /* Under way till its answer (pgw_pool_recheck_end): clients of
         * every pool skipping the host wait for it (recheck_open). */
        srv_priv(srv)->recheck = true;
        srv_priv(srv)->recheck_tsa = pool->tsa;
        srv->backend->kind_rechecks[pool->tsa]++;
        srv_priv(srv)->recheck_prev_at = srv->backend->kind_recheck_at[pool->tsa];
        srv->backend->kind_recheck_at[pool->tsa] = pool_now(pool) + 1.0;
        srv_priv(srv)->recheck_set_at = srv->backend->kind_recheck_at[pool->tsa];
        char names[PGW_POOL_LOG_NAMES];
        pgw_debug("pool_kind_recheck", "%s backend=%s id=%llu",
                 pgw_pool_log_names(pool, names, sizeof(names)), srv->backend->address,
                 (unsigned long long)srv->id);
    }
    return true;
}

/* ---- taking turns under a shared limit ---------------------------------- */

/* The limit of q that it shares with p and that keeps q from growing now:
 * "max_db_connections", "max_user_connections", or NULL when none does. */
static const char *shared_full(const struct pgw_pool *q, const struct pgw_pool *p)
{
    if (q->max_db_connections > 0 && same_limit(q, p, true) &&
        count_servers(q, true) >= q->max_db_connections)
        return "max_db_connections";
    if (q->max_user_connections > 0 && same_limit(q, p, false) &&
        count_servers(q, false) >= q->max_user_connections)
        return "max_user_connections";
    return NULL;
}

/* Would q have room for a server, one of p's closed?  Its size and each of
 * its limits, p's server counted off those it shares with q. */
static bool room_after(struct pgw_pool *q, const struct pgw_pool *p)
{
    if (size_room(q) <= 0)
        return false;
    if (q->max_db_connections > 0 &&
        count_servers(q, true) - same_limit(q, p, true) >= q->max_db_connections)
        return false;
    return q->max_user_connections <= 0 ||
           count_servers(q, false) - same_limit(q, p, false) < q->max_user_connections;
}

/* The pool a server of `pool`, coming back while `pool` has clients
 * waiting, goes to instead (closed, for a login of that one), or NULL.
 * Its own waiters come first, so under a load that keeps every pool's
 * clients waiting no server of a shared max_db_connections /
 * max_user_connections was ever idle for another pool to take, and the
 * pools that came first kept the cap while a later one's clients waited
 * out query_wait_timeout (four users under one cap, 25 clients each: one
 * or two served about a query a client in 8 s).  A pool q with clients no
 * server of its own covers, and none on its way to it, takes the server
 * when
 *   - it has two servers fewer than `pool` at least: the counts even out
 *     and then no server changes hands (a login each time it does), or
 *   - it has none, `pool` only this one, and q's oldest client has waited
 *     a turn (pool_turn) longer than `pool`'s: more pools wait than the cap
 *     has servers, and they take turns of about that length.
 * Of those, the one whose client has waited longest; only when the shared
 * limit is what keeps it from growing, and its other limits and its
 * pool_size leave it room once the server is gone.
 * PgBouncer evens the cap out at the start, one login a pool at a time;
 * under a load that never lets a server go idle it keeps no turns. */
static struct pgw_pool *turn_taker(struct pgw_pool *pool, const char **limit)
{
    if ((pool->max_db_connections <= 0 && pool->max_user_connections <= 0) ||
        pgw_list_empty(&pool->waiters))
        return NULL;
    /* Servers that can change hands: the LISTEN hub's, held for good,
     * never come back (review: a pool left with it alone never had its
     * turn again). */
    int mine = pgw_pool_total(pool) - pool->n_held;
    ev_tstamp since = oldest_since(pool);
    struct pgw_pool *best = NULL;
    ev_tstamp best_since = 0;
    for (struct pgw_list *n = pool->set->pools.next; n != &pool->set->pools; n = n->next) {
        struct pgw_pool *q = pgw_container_of(n, struct pgw_pool, node);
        if (!shares_a_limit(q, pool) || pgw_list_empty(&q->waiters) || q->paused ||
            q->orphan || q->n_connecting + q->n_resetting > 0 || needed(q) <= 0 ||
            login_blocked(q))
            continue;
        int theirs = pgw_pool_total(q) - q->n_held;
        ev_tstamp their_since = oldest_since(q);
        if (theirs + 2 > mine && !(theirs == 0 && their_since + pool_turn(q) < since))
            continue;
        if (!best || their_since < best_since) {
            best = q;
            best_since = their_since;
        }
    }
    if (!best || !(*limit = shared_full(best, pool)) || !room_after(best, pool))
        return NULL;
    return best;
}

/* srv, coming back, goes to another pool under a shared limit
 * (turn_taker): that one's login starts, then srv closes.  false when it
 * stays (none is due, or no login may start now). */
static bool hand_over(struct pgw_server *srv)
{
    const char *limit = NULL;
    struct pgw_pool_set *set = srv->pool->set;
    if (set->destroying || pool_now(srv->pool) < set->fds_short_until)
        return false;           /* no login may start (pgw_pool_grow's guards) */
    struct pgw_pool *q = turn_taker(srv->pool, &limit);
    if (!q || !grow_one(q, false))
        return false;
    char why[96];
    snprintf(why, sizeof(why), "%s: its turn goes to another pool", limit);
    pgw_server_close(srv, why);
    return true;
}

/* Has a turn (pool_turn) passed since the pool's oldest waiter came and
 * since its last login taken from the others' room?  If not, its timer
 * kicks the pool when it has: the maintenance tick alone came up to a
 * second late, past the turn of a query_wait_timeout under 4 s, its
 * clients timing out meanwhile.  A quiet pool has nothing else to kick it
 * (a login stuck on a frozen host). */
static bool turn_over(struct pgw_pool *pool, ev_tstamp now)
{
    double turn = pool_turn(pool);
    ev_tstamp from = oldest_since(pool);
    if (pool->evicted_at > from)
        from = pool->evicted_at;
    double left = from + turn - now;
    if (left <= 0)
        return true;
    struct ev_loop *loop = pool->set->loop;
    ev_timer_stop(loop, &pool->turn_timer);
    ev_timer_set(&pool->turn_timer, left, 0);
    ev_timer_start(loop, &pool->turn_timer);
    return false;
}

/* The pool's servers on their way a turn (pool_turn) and more: logins,
 * and jobs (connect_query, server_check_query, server_reset_query) sent
 * that long ago.  They no longer cover a waiter (pgw_pool_grow): a check
 * or reset stuck on a frozen backend kept its waiter from the pool's own
 * room until server_connect_timeout (for ever with 0), as a stuck login
 * did.  When one still does, the timer kicks the pool as the first of
 * those ages past a turn. */
static int on_way_stale(struct pgw_pool *pool, ev_tstamp now)
{
    double turn = pool_turn(pool);
    ev_tstamp next = 0;
    int n = 0;
    for (struct pgw_list *l = pool->pending.next; l != &pool->pending; l = l->next) {
        const struct pgw_server *srv = pgw_container_of(l, struct pgw_server, node);
        ev_tstamp from;
        if (srv->state == PGW_SRV_CONNECTING)
            from = srv->start_time;
        else if (srv->state == PGW_SRV_RESETTING)
            from = srv_priv_const(srv)->job_start;
        else
            continue;
        ev_tstamp at = from + turn;
        if (at <= now)
            n++;
        else if (next == 0 || at < next)
            next = at;
    }
    if (next > 0) {
        struct ev_loop *loop = pool->set->loop;
        ev_timer_stop(loop, &pool->turn_timer);
        ev_timer_set(&pool->turn_timer, next - now, 0);
        ev_timer_start(loop, &pool->turn_timer);
    }
    return n;
}

void pgw_pool_grow(struct pgw_pool *pool)
{
    if (pool->orphan || pool->set->destroying || login_blocked(pool) ||
        pool_now(pool) < pool->set->fds_short_until)
        return;
    int need = needed(pool);
    /* A paused pool keeps no servers warm: PAUSE closed them, as PgBouncer's
     * does, and new ones now would hit a server being restarted; nor does
     * one while pgwharf shuts down (a reload meanwhile raising
     * min_pool_size opened servers for nobody). */
    int warm = pool->expiring || pool->paused || pool->set->draining || pool->user_superseded
                   ? 0 : pool->min_pool_size - pgw_pool_total(pool);
    int n = need > warm ? need : warm;
    /* Room as it is first. */
    int open_now = n > 0 ? room(pool, n, 0) : 0;
    for (int k = 0; k < open_now; k++)
        if (!grow_one(pool, false))
            return;
    /* Beyond it, another pool's idle server makes way for the oldest
     * waiter alone, and only when no server of the pool's own is on its
     * way to it (logging in, running connect_query, being checked or
     * reset: each ends idle for the oldest waiter).  Each later waiter
     * gets its turn when that one has come: evicting one idle server and
     * logging in one new server per waiter at once left as many of the
     * shared max_db_connections / max_user_connections logging in, for
     * other pools to take back a moment later the same way (review of
     * 8d26bc4: four users under one max_db_connections, a slow
     * connect_query).  PgBouncer starts one login a pool at a time.  A
     * login on its way covers them while it is young only: one stuck (a
     * frozen host, a stalled connect_query) kept the pool from the others'
     * idle room until server_connect_timeout, or for ever without one,
     * while its clients timed out (review of 1d1a477).  Past a turn
     * (pool_turn) of the oldest waiter's wait and of the pool's last such
     * login, another goes (at most one a turn), and a login on its way a
     * turn and more covers no waiter: counted, one stuck kept a pool's
     * only waiter from the others' room for good, as it kept all but
     * those beyond the logins on their way (review, session 44).  Stale
     * logins make way for one more login beyond the waiters, not one a
     * turn for good: on a frozen host each new login sticks too, and one
     * client took the others' whole shared limit, one server a turn.  A
     * check or reset stuck as long (on_way_stale) no longer covers a
     * waiter either, in the pool's own room too (session 45). */
    ev_tstamp now = pool_now(pool);
    bool on_way = pool->n_connecting + pool->n_resetting > 0;
    bool over = false;
    if (need <= open_now &&
        (pool->paused || !on_way || pgw_list_empty(&pool->waiters) ||
         pool->n_connecting + pool->n_resetting > pool->n_waiters ||
         !(over = turn_over(pool, now)) || need + on_way_stale(pool, now) <= open_now))
        return;
    if (size_room(pool) <= 0 || (on_way && pgw_list_empty(&pool->waiters)))
        return;
    if (on_way && !over && !turn_over(pool, now))
        return;
    if (grow_one(pool, true))
        pool->evicted_at = now;
}

static void reserve_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct pgw_pool *pool = pgw_container_of(t, struct pgw_pool, reserve_timer);
    pgw_pool_kick(pool);
}

static void turn_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct pgw_pool *pool = pgw_container_of(t, struct pgw_pool, turn_timer);
    pgw_pool_kick(pool);
}

void pgw_pool_init_queues(struct pgw_pool *pool)
{
    pgw_list_init(&pool->idle);
    pgw_list_init(&pool->active);
    pgw_list_init(&pool->pending);
    pgw_list_init(&pool->waiters);
    pgw_list_init(&pool->repl_waiters);
    pgw_list_init(&pool->dedicated);
    ev_init(&pool->reserve_timer, reserve_timer_cb);
    ev_init(&pool->turn_timer, turn_timer_cb);
}

/* ---- hosts ------------------------------------------------------------- */

int pgw_pool_host_index(const struct pgw_pool *pool, const struct pgw_backend *be)
{
    for (int i = 0; i < pool->nhosts; i++)
        if (pool->hosts[i].be == be)
            return i;
    return -1;
}

/* Can no host of the pool take a connection attempt now?  0 when one can
 * (or only target_session_attrs keeps them out: login_blocked covers
 * that), else PGW_EBREAKER_OPEN with the first open breaker's error in
 * err, or PGW_ESERVER_CONNECT with a cached failed lookup's. */
static int hosts_down(const struct pgw_pool *pool, struct pgw_pool_error *err)
{
    ev_tstamp now = pool_now(pool);
    const struct pgw_backend *open = NULL, *unresolved = NULL;
    int skipped = 0;
    bool recheck = false;
    for (int k = 0; k < pool->nhosts; k++) {
        const struct pool_host *h = &pool->hosts[(pool->cursor.next + k) % pool->nhosts];
        if (host_skipped(pool, h, now, false)) {
            skipped++;
            recheck = recheck || recheck_open(pool, h, now);
            continue;
        }
        if (pgw_breaker_blocked(&h->be->breaker, now)) {
            open = open ? open : h->be;
            continue;
        }
        if (pgw_backend_resolves(h->be, &h->spec) && pgw_backend_dns_failed(h->be, err)) {
            unresolved = unresolved ? unresolved : h->be;
            continue;
        }
        return 0;
    }
    if ((!open && !unresolved) || recheck)
        return 0;      /* recheck: a host skipped for its kind is (to be) tried */
    if (open)
        pgw_backend_error(open, err);
    else
        pgw_backend_dns_failed(unresolved, err);
    if (skipped > 0) {
        /* The others answered, but are not of the kind wanted (host_skip):
         * said too, as libpq names each host's reason (hunt: a client was
         * told of the dead host alone, the live primary unnamed).  A long
         * reason gives way to it, cut between UTF-8 characters. */
        char note[128];
        int k = snprintf(note, sizeof(note), "; %s target_session_attrs=%s",
                         skipped > 1 ? "other hosts of the list do not match"
                                     : "another host of the list does not match",
                         pgw_target_session_name(pool->tsa));
        size_t n = strlen(err->message);
        if (k > 0 && (size_t)k < sizeof(note)) {
            if (n + (size_t)k >= sizeof(err->message)) {
                n = sizeof(err->message) - 1 - (size_t)k;
                while (n > 0 && ((unsigned char)err->message[n] & 0xC0) == 0x80)
                    n--;
            }
            memcpy(err->message + n, note, (size_t)k + 1);
        }
    }
    return open ? PGW_EBREAKER_OPEN : PGW_ESERVER_CONNECT;
}

/* Does any host take an attempt now, target_session_attrs counted, the
 * hosts replication waiter w tried (w NULL: none) left out? */
bool pgw_pool_host_left(const struct pgw_pool *pool, const struct pgw_pool_waiter *w)
{
    struct pgw_pool_error err;
    ev_tstamp now = pool_now(pool);
    for (int i = 0; i < pool->nhosts; i++) {
        const struct pool_host *h = &pool->hosts[i];
        if (!host_tried(w, i) && !host_skipped(pool, h, now, false) &&
            !pgw_breaker_blocked(&h->be->breaker, now) &&
            !(pgw_backend_resolves(h->be, &h->spec) && pgw_backend_dns_failed(h->be, &err)))
            return true;
    }
    return false;
}

/* Can the pool's waiters wait for a server to come back rather than for
 * a new connection: one lent out, idle, or being checked or reset (below
 * its size too), or the pool paused?  Then an open breaker does not fail
 * them: they queue for that server under query_wait_timeout, as
 * PgBouncer's do (hunt: with one of two servers lent and max_connections
 * used up by others, a client got the breaker's 53300 at once, the lent
 * server free a moment later).  A pool with no server fails fast: nothing
 * could serve it; nor does a waiter hang once the last one closes
 * instead of coming back (fail_stranded). */
static bool waits_for_release(const struct pgw_pool *pool)
{
    return pool->paused || server_to_come(pool);
}

void pgw_pool_host_down(struct pgw_pool *pool)
{
    struct pgw_pool_error err;
    int rc = hosts_down(pool, &err);
    if (rc == PGW_EBREAKER_OPEN && waits_for_release(pool)) {
        /* Only the replication clients: each needs a new connection. */
        pool->st.total_breaker_rejects += (uint64_t)pool->n_repl_waiters;
        pgw_pool_repl_fail_waiters(pool, &err);
    } else if (rc == PGW_EBREAKER_OPEN) {
        pool->st.total_breaker_rejects += (uint64_t)(pool->n_waiters + pool->n_repl_waiters);
        pgw_pool_fail_waiters(pool, &err);
    } else if (rc == PGW_ESERVER_CONNECT && !pool->paused) {
        pgw_pool_fail_waiters(pool, &err);
    }
}

void pgw_pool_host_failed(struct pgw_pool *pool, int i, const struct pgw_backend *be)
{
    if (i >= 0 && i < pool->nhosts && pool->hosts[i].be == be)
        pgw_hosts_failed(&pool->cursor, i);
}

/* Skip host i for server_login_retry (a second at least); false when the
 * list changed since the attempt on it started. */
static bool host_skip(struct pgw_pool *pool, int i, const struct pgw_backend *be)
{
    if (i < 0 || i >= pool->nhosts || pool->hosts[i].be != be)
        return false;
    double retry = pool->set->cfg->server_login_retry;
    ev_tstamp now = pool_now(pool);
    pool->hosts[i].skip_until = now + (retry > 1.0 ? retry : 1.0);
    pool->hosts[i].tls_skip = false;
    /* no recheck (recheck_due) for a second */
    pool->hosts[i].be->kind_recheck_at[pool->tsa] = now + 1.0;
    return true;
}

void pgw_pool_host_matched(struct pgw_pool *pool, int i, struct pgw_backend *be, bool recheck)
{
    /* A recheck found the host's kind changed: other pools skipping it
     * recheck it at once, not a second later (their clients waited for
     * this one: recheck_open). */
    if (recheck)
        be->kind_recheck_at[pool->tsa] = 0;
    /* prefer-standby: a login of its second pass matches any host. */
    if (pool->tsa != PGW_TSA_PREFER_STANDBY && i >= 0 && i < pool->nhosts &&
        pool->hosts[i].be == be)
        pool->hosts[i].skip_until = 0;
}

bool pgw_pool_recheck_end(struct pgw_server *srv)
{
    struct pool_server *ps = srv_priv(srv);
    if (!ps->recheck)
        return false;
    ps->recheck = false;
    srv->backend->kind_rechecks[ps->recheck_tsa]--;
    return true;
}

/* The clock bounds the logins that ask a host its kind; a recheck refused
 * for its pool's role or database, or closed unanswered, asked nothing:
 * another pool with the same target_session_attrs (another role, another
 * database) rechecks at once, not a second later (its clients, which
 * waited for this one, got the breaker's 08001).  Not when another login
 * moved the clock since (a refusal for the kind, a match). */
void pgw_pool_recheck_void(struct pgw_server *srv)
{
    const struct pool_server *ps = srv_priv_const(srv);
    ev_tstamp *at = &srv->backend->kind_recheck_at[ps->recheck_tsa];
    if (*at == ps->recheck_set_at)
        *at = ps->recheck_prev_at;
}

void pgw_pool_recheck_reaped(struct pgw_server *srv)
{
    struct pool_server *ps = srv_priv(srv);
    if (!ps->recheck_unanswered)
        return;
    ps->recheck_unanswered = false;
    pgw_pool_recheck_void(srv);
    if (!srv->pool->set->destroying)    /* (pgw_pool_set_destroy reaps too) */
        pgw_pool_kick_host_pools(srv->backend);
}

static bool names_backend(const struct pgw_pool *pool, const void *be)
{
    return pgw_pool_host_index(pool, be) >= 0;
}

void pgw_pool_kick_host_pools(struct pgw_backend *be)
{
    pgw_pool_kick_waiting(be->set, names_backend, be);
}

static void host_refused(struct pgw_pool *pool, int i, const struct pgw_backend *be,
                         const char *sqlstate, const char *msg, bool tls)
{
    if (!host_skip(pool, i, be))
        return;
    pool->hosts[i].tls_skip = tls;
    char *copy = strdup(msg);
    if (copy) {
        free(pool->mismatch_error);
        pool->mismatch_error = copy;
    }
    pgw_hosts_failed(&pool->cursor, i);
    if (pgw_pool_host_left(pool, NULL))
        return;
    /* Another host skipped for its kind may be rechecked (its own clock,
     * or under way for another pool): the waiters wait for that login
     * (the caller kicks the pool), as libpq tries each host of its list. */
    if (kind_recheck_open(pool))
        return;
    /* No host now, but one only for its breaker's cooldown (the primary
     * down a moment, the standby tried meanwhile): the waiters get the
     * breaker's error, and its probe decides -- not server_login_retry's
     * block of every login, which kept the pool from the primary back
     * long before. */
    struct pgw_pool_error err;
    if (hosts_down(pool, &err) == PGW_EBREAKER_OPEN) {
        pgw_pool_host_down(pool);
        return;
    }
    pgw_pool_login_failed(pool, sqlstate, msg);
    pool->login_kind = true;      /* lifted for a recheck (login_blocked) */
    /* server_login_retry = 0 blocks no login, but every host is skipped
     * (a second at least): until the first comes back, a new client gets
     * this refusal at once, as the first did, rather than waiting in the
     * queue for that host. */
    if (pool->login_error && pool->login_retry_until == 0) {
        ev_tstamp now = pool_now(pool), until = 0;
        for (int k = 0; k < pool->nhosts; k++) {
            ev_tstamp t = pool->hosts[k].skip_until;
            if (t > now && (until == 0 || t < until))
                until = t;
        }
        pool->login_retry_until = until;
    }
}

void pgw_pool_host_mismatch(struct pgw_pool *pool, int i, const struct pgw_backend *be,
                            const char *sqlstate, const char *msg)
{
    host_refused(pool, i, be, sqlstate, msg, false);
}

void pgw_pool_host_tls_refused(struct pgw_pool *pool, int i, const struct pgw_backend *be,
                               const char *sqlstate, const char *msg)
{
    host_refused(pool, i, be, sqlstate, msg, true);
}

void pgw_pool_host_no_standby(struct pgw_pool *pool, int i, const struct pgw_backend *be)
{
    if (pool->tsa == PGW_TSA_PREFER_STANDBY)
        host_skip(pool, i, be);
}

bool pgw_pool_wants_standby(const struct pgw_pool *pool, int i)
{
    return pool->tsa == PGW_TSA_PREFER_STANDBY && i >= 0 && i < pool->nhosts &&
           !host_skipped(pool, &pool->hosts[i], pool_now(pool), true);
}

static bool reports(const struct pgw_server *srv, const char *name, const char *value)
{
    const char *v = pgw_params_get(&srv->params, name);
    return v && strcmp(v, value) == 0;
}

/* libpq's refusal of srv as it is now, NULL while it matches.
 * in_hot_standby is the server's state (no session can set it; a server
 * leaves hot standby when promoted, and enters it only by a restart).
 * default_transaction_read_only can be a client's SET: it counts only
 * while the session is pristine, or for a standby since promoted (a SET
 * there changed nothing a client could see). */
static const char *kind_mismatch(struct pgw_server *srv)
{
    if (srv->pool->tsa == PGW_TSA_ANY)
        return NULL;          /* every release passes here: be quick */
    struct pool_server *ps = srv_priv(srv);
    bool standby = reports(srv, "in_hot_standby", "on");
    bool primary = reports(srv, "in_hot_standby", "off");
    bool defaults = ps->pristine || (ps->login_standby && primary);
    bool ro = defaults && reports(srv, "default_transaction_read_only", "on");
    bool rw = defaults && reports(srv, "default_transaction_read_only", "off");
    switch (srv->pool->tsa) {
    case PGW_TSA_READ_WRITE:
        return standby || ro ? "session is read-only" : NULL;
    case PGW_TSA_READ_ONLY:
        return primary && rw ? "session is not read-only" : NULL;
    case PGW_TSA_PRIMARY:
        return standby ? "server is in hot standby mode" : NULL;
    case PGW_TSA_STANDBY:
        return primary ? "server is not in hot standby mode" : NULL;
    case PGW_TSA_PREFER_STANDBY:
        return ps->standby_pass && primary ? "server is not in hot standby mode" : NULL;
    case PGW_TSA_ANY:
        break;
    }
    return NULL;
}

/* A server given back with no reset to come (transaction mode) whose
 * session reports what target_session_attrs refuses, a client's own SET
 * or its host's change (ALTER SYSTEM and a reload fence a primary
 * read-only; only a server at its defaults tells which): it closes, and
 * the login of the next one checks the host.  NULL when it may stay. */
static const char *session_kind_suspect(const struct pgw_server *srv)
{
    switch (srv->pool->tsa) {
    case PGW_TSA_READ_WRITE:
        return reports(srv, "default_transaction_read_only", "on")
                   ? "its session is read-only (target_session_attrs=read-write): "
                     "a new login checks its host"
                   : NULL;
    case PGW_TSA_READ_ONLY:
        return reports(srv, "in_hot_standby", "off") &&
                       reports(srv, "default_transaction_read_only", "off")
                   ? "its session is not read-only (target_session_attrs=read-only): "
                     "a new login checks its host"
                   : NULL;
    default:
        return NULL;
    }
}

/* New servers go to the pool's other hosts for server_login_retry, when
 * there are others. */
static void host_passed_over(struct pgw_server *srv)
{
    struct pgw_pool *pool = srv->pool;
    int i = srv_priv(srv)->host;
    if (host_skip(pool, i, srv->backend)) {
        pgw_hosts_failed(&pool->cursor, i);
        if (!pgw_pool_host_left(pool, NULL))
            pool->hosts[i].skip_until = 0;
    }
}

/* The pool's idle servers on srv's host, srv aside, are closed: the
 * host changed or stopped answering, not srv alone. */
static void close_idle_on_host(struct pgw_server *srv, const char *why)
{
    struct pgw_list *n, *t;
    pgw_list_foreach_safe(n, t, &srv->pool->idle) {
        struct pgw_server *o = pgw_container_of(n, struct pgw_server, node);
        if (o != srv && o->backend == srv->backend)
            pgw_server_close(o, why);
    }
}

bool pgw_pool_server_kind_changed(struct pgw_server *srv)
{
    struct pgw_pool *pool = srv->pool;
    const char *why = kind_mismatch(srv);
    if (!why)
        return false;
    struct pgw_backend *be = srv->backend;
    char msg[512], names[PGW_POOL_LOG_NAMES], q[600];
    snprintf(msg, sizeof(msg), "server at %s: %s (target_session_attrs=%s)", be->address, why,
             pgw_target_session_name(pool->tsa));
    pgw_warn("server_kind_changed", "%s backend=%s id=%llu reason=%s",
             pgw_pool_log_names(pool, names, sizeof(names)), be->address,
             (unsigned long long)srv->id, pgw_log_quote(q, sizeof(q), msg));
    /* The host changed, not this server alone: its other servers go too
     * (the idle ones now, the busy ones when given back). */
    static const char retired[] = "its host no longer matches target_session_attrs";
    close_idle_on_host(srv, retired);
    struct pgw_list *n;
    for (int k = 0; k < 2; k++) {
        struct pgw_list *head = k ? &pool->pending : &pool->active;
        for (n = head->next; n != head; n = n->next) {
            struct pgw_server *o = pgw_container_of(n, struct pgw_server, node);
            if (o != srv && o->backend == be && o->state != PGW_SRV_CONNECTING)
                pgw_server_retire(o, retired);
        }
    }
    /* New servers go to the other hosts; when none is left, the next
     * login tries this one and libpq's check says (and fails the waiters,
     * from the loop, as any refused login). */
    host_passed_over(srv);
    return true;
}

/* The idle servers on srv's host of the set's other pools (another
 * database or user on the same host:port: one backend) share its frozen
 * host: checked before they are lent, or with no server_check_query
 * closed.  Their own check with no reply then closes the rest of their
 * pool's there (pgw_pool_server_silent): one timeout a pool, not one a
 * server.  One pass over the idle servers, on a job's timeout only. */
static void idle_on_host_elsewhere(struct pgw_server *srv, const char *why)
{
    const char *q = srv->pool->set->cfg->server_check_query;
    bool check = q && *q;
    struct pgw_pool_set *set = srv->pool->set;
    for (struct pgw_list *p = set->pools.next; p != &set->pools; p = p->next) {
        struct pgw_pool *pool = pgw_container_of(p, struct pgw_pool, node);
        if (pool == srv->pool || pool->n_idle == 0)
            continue;
        struct pgw_list *n, *t;
        pgw_list_foreach_safe(n, t, &pool->idle) {
            struct pgw_server *o = pgw_container_of(n, struct pgw_server, node);
            if (o->backend != srv->backend)
                continue;
            if (check)
                srv_priv(o)->doubted = true;
            else
                pgw_server_close(o, why);
        }
    }
}

void pgw_pool_server_silent(struct pgw_server *srv)
{
    static const char why[] = "another server of its host did not answer in time";
    close_idle_on_host(srv, why);
    idle_on_host_elsewhere(srv, why);
    host_passed_over(srv);
}

void pgw_pool_server_doubted(struct pgw_server *srv)
{
    const char *q = srv->pool->set->cfg->server_check_query;
    if (!q || !*q) {
        pgw_pool_server_silent(srv);
        return;
    }
    struct pgw_list *n;
    for (n = srv->pool->idle.next; n != &srv->pool->idle; n = n->next) {
        struct pgw_server *o = pgw_container_of(n, struct pgw_server, node);
        if (o != srv && o->backend == srv->backend)
            srv_priv(o)->doubted = true;
    }
    idle_on_host_elsewhere(srv, NULL);
}

/* ---- acquire / release ------------------------------------------------- */

/* Would this waiter need a new connection, and could the pool get one
 * only from hosts whose breaker is open? */
static bool breaker_refuses(struct pgw_pool *pool, struct pgw_pool_error *e)
{
    if (pool->paused || hosts_down(pool, e) != PGW_EBREAKER_OPEN)
        return false;
    int coming = pool->n_connecting + pool->n_resetting + pool->n_idle;
    if (pool->n_waiters + 1 <= coming)
        return false;
    /* With a server of its own to come back (at its size or below), it
     * waits for a release, not a new connection. */
    return !waits_for_release(pool);
}

int pgw_pool_refuse_gone(struct pgw_pool *pool, struct pgw_pool_waiter *w)
{
    struct pgw_pool_error *e = &pool->set->error;
    if (pool->set->destroying) {
        w->error = pgw_pool_set_error(e, PGW_ESHUTDOWN, "57P01", "pgwharf is shutting down");
        return PGW_ESHUTDOWN;
    }
    if (pool->orphan) {
        w->error = pgw_pool_set_error(e, PGW_ENOTFOUND, "3D000",
                                      "database \"%s\" is no longer in the configuration",
                                      pool->dbname);
        return PGW_ENOTFOUND;
    }
    return 0;
}

static int acquire_refuse(struct pgw_pool *pool, struct pgw_pool_waiter *w)
{
    struct pgw_pool_error *e = &pool->set->error;
    int gone = pgw_pool_refuse_gone(pool, w);
    if (gone)
        return gone;
    if (breaker_refuses(pool, e)) {
        pool->st.total_breaker_rejects++;
        w->error = e;
        return PGW_EBREAKER_OPEN;
    }
    /* No host name resolved a moment ago (dns_nxdomain_ttl): no server
     * can come until one is looked up again. */
    if (!pool->paused && hosts_down(pool, e) == PGW_ESERVER_CONNECT) {
        w->error = e;
        return e->code;
    }
    return 0;
}

const struct pgw_pool_error *pgw_pool_error_of(const struct pgw_pool_waiter *w, int rc)
{
    return w->error ? w->error
                    : pgw_pool_set_error(&w->pool->set->error, rc, "08006", "%s", pgw_strerror(rc));
}

int pgw_pool_acquire(struct pgw_pool *pool, struct pgw_pool_waiter *w,
                     struct pgw_ctx *ctx, pgw_pool_acquire_fn cb, void *arg)
{
    w->arg = arg;
    w->server = NULL;
    w->error = NULL;
    pgw_list_init(&w->node);
    pgw_ctx_sub_init(&w->sub);
    w->pool = pool;
    w->cb = cb;
    w->ctx = NULL;
    w->parent = ctx;
    w->since = pool_now(pool);
    w->gone = false;
    w->replication = PGW_REPL_NONE;
    w->repl_srv = NULL;
    w->repl_app = w->repl_encoding = w->repl_options = NULL;

    int err = pgw_ctx_err(ctx);
    if (err) {
        w->error = pgw_pool_set_error(&pool->set->error, err, "57014",
                                      "canceled before waiting for a server");
        return err;
    }
    err = acquire_refuse(pool, w);
    if (err)
        return err;
    if (!pool->paused && !pool->n_waiters)
        shed_idle(pool);      /* those over a lowered limit are not lent */
    struct pgw_server *srv = pool->paused || pool->n_waiters ? NULL : fresh_idle(pool);
    if (srv) {
        lend(pool, srv, w);
        return PGW_ACQ_GRANTED;
    }
    if (login_blocked(pool) && !server_to_come(pool) && pool->n_connecting == 0) {
        /* Nothing will come back, and no new login before the retry.  A
         * login still on its way (started before the refusal) may yet
         * succeed: the client waits for it, as those queued before it do
         * (pgw_pool_login_failed); if it is refused too, its refusal
         * fails them all. */
        w->error = pgw_pool_set_error(&pool->set->error, PGW_ESERVER_LOGIN, pool->login_sqlstate,
                                      "server login failed: %s", pool->login_error);
        return PGW_ESERVER_LOGIN;
    }
    double t = pool->query_wait_timeout;
    w->ctx = t > 0 ? pgw_ctx_with_timeout(ctx, t) : pgw_ctx_with_cancel(ctx);
    if (!w->ctx) {
        w->error = pgw_pool_set_error(&pool->set->error, PGW_ENOMEM, "53200", "out of memory");
        return PGW_ENOMEM;
    }
    err = pgw_ctx_subscribe(w->ctx, &w->sub, waiter_done_cb, w);
    if (err) {
        pgw_ctx_release(w->ctx);
        w->ctx = NULL;
        w->error = pgw_pool_set_error(&pool->set->error, err, "57014",
                                      "canceled before waiting for a server");
        return err;
    }
    pgw_list_append(&pool->waiters, &w->node);
    pool->n_waiters++;
    /* Start checks and connections, but lend nothing here: the callback
     * must not run inside this call.  A nested kick only flags. */
    bool was = pool->dispatching;
    pool->dispatching = true;
    for (struct pgw_list *n = pool->idle.next; n != &pool->idle && !pool->paused;) {
        struct pgw_server *s = pgw_container_of(n, struct pgw_server, node);
        n = n->next;
        if (pool->n_resetting + pool->n_connecting >= pool->n_waiters)
            break;
        check_or_close(s);
    }
    pgw_pool_grow(pool);
    pool->dispatching = was;
    return PGW_ACQ_QUEUED;
}

void pgw_pool_rewait(struct pgw_pool *pool)
{
    /* As PgBouncer, which compares each wait with the current value: a
     * query_wait_timeout changed online applies to the clients queued
     * (counted from when each began), not only to those that come next. */
    double t = pool->query_wait_timeout;
    for (struct pgw_list *n = pool->waiters.next; n != &pool->waiters; n = n->next) {
        struct pgw_pool_waiter *w = pgw_container_of(n, struct pgw_pool_waiter, node);
        struct pgw_ctx *c = t > 0 ? pgw_ctx_with_deadline(w->parent, w->since + t)
                                  : pgw_ctx_with_cancel(w->parent);
        if (!c)
            continue;               /* out of memory: the old deadline stays */
        if (pgw_ctx_err(c)) {
            pgw_ctx_release(c);     /* the caller's ctx is done: its callback comes */
            continue;
        }
        pgw_ctx_unsubscribe(&w->sub);
        pgw_ctx_release(w->ctx);
        w->ctx = c;
        pgw_ctx_subscribe(c, &w->sub, waiter_done_cb, w);   /* c is not done: cannot fail */
    }
}

void pgw_pool_cancel_wait(struct pgw_pool_waiter *w)
{
    if (pgw_pool_waiter_queued(w))
        waiter_unqueue(w);
}

/* The statements that take back what srv->user_leftover says a client may
 * have left on srv: one Query, its replies swallowed (a job, as
 * server_reset_query), NULL for none.  Neither touches pgwharf's prepared
 * statements (DISCARD ALL would). */
static const char *leftover_sql(uint8_t leftover)
{
    switch (leftover & (PGW_LEFTOVER_CURSOR | PGW_LEFTOVER_TEMP)) {
    case PGW_LEFTOVER_CURSOR:                     return "CLOSE ALL";
    case PGW_LEFTOVER_TEMP:                       return "DISCARD TEMP";
    case PGW_LEFTOVER_CURSOR | PGW_LEFTOVER_TEMP: return "CLOSE ALL; DISCARD TEMP";
    default:                                      return NULL;
    }
}

/* Run server_reset_query (reset, or NULL) on srv, with the cleanup of its
 * leftovers (server_reset_session_state) ahead of it in the same Query.
 * DISCARD ALL takes them back itself, and must be a Query of its own (it
 * cannot run inside the implicit transaction of several statements).  A
 * transaction block left open (PGW_LEFTOVER_XACT) is rolled back first,
 * in a Query of its own too, all under the job's bound
 * (server_connect_timeout): a frozen backend holds no client's end. */
static void reset_job(struct pgw_server *srv, const char *reset)
{
    const char *clean = leftover_sql(srv->user_leftover);
    srv->user_leftover &= PGW_LEFTOVER_XACT;     /* (the job's ROLLBACK takes it) */
    if (clean && reset && pgw_sql_has_all(reset, "discard"))
        clean = NULL;
    if (clean) {
        char names[PGW_POOL_LOG_NAMES];
        pgw_info("server_reset_session_state", "%s id=%llu pid=%d query=\"%s\"",
                 pgw_pool_log_names(srv->pool, names, sizeof(names)),
                 (unsigned long long)srv->id, srv->backend_pid, clean);
    }
    if (!reset || !clean) {
        enum srv_job job = reset ? SRV_JOB_RESET : clean ? SRV_JOB_CLEANUP : SRV_JOB_ROLLBACK;
        if (pgw_server_job(srv, job, reset ? reset : clean) < 0)
            pgw_server_close(srv, "out of memory for server_reset_query");
        return;
    }
    size_t n = strlen(clean) + strlen(reset) + 3;
    char *sql = malloc(n);
    if (sql)
        snprintf(sql, n, "%s; %s", clean, reset);
    if (!sql || pgw_server_job(srv, SRV_JOB_RESET, sql) < 0)
        pgw_server_close(srv, "out of memory for server_reset_query");
    free(sql);
}

void pgw_pool_release(struct pgw_server *srv, enum pgw_release how)
{
    struct pgw_pool *pool = srv->pool;
    const char *reset = pool->set->cfg->server_reset_query;
    const char *over, *why;
    struct excess x;
    /* (A reload that turned it off since drops what was noted; never a
     * transaction block left open.) */
    bool rollback = srv->user_leftover & PGW_LEFTOVER_XACT;
    bool cleanup = (srv->user_leftover & ~PGW_LEFTOVER_XACT) &&
                   pool->set->cfg->server_reset_session_state;
    if (!cleanup)
        srv->user_leftover &= PGW_LEFTOVER_XACT;

    if (srv->state != PGW_SRV_ACTIVE) {
        char names[PGW_POOL_LOG_NAMES];
        pgw_warn("pool_release_bad_state", "%s id=%llu state=%d",
                 pgw_pool_log_names(pool, names, sizeof(names)), (unsigned long long)srv->id,
                 (int)srv->state);
        return;
    }
    srv->request_time = pool_now(pool);
    srv->link = NULL;
    if (srv->replication || srv_priv(srv)->detached) {
        pgw_server_close(srv, srv->replication ? "replication client left"
                              : srv_priv(srv)->retire_why ? srv_priv(srv)->retire_why
                                                          : "closed by client session");
        return;               /* it held no room in any limit */
    }
    if (how == PGW_RELEASE_CLOSE)
        pgw_server_close(srv, "closed by client session");
    else if (pgw_pool_server_kind_changed(srv))
        pgw_server_close(srv, "its host no longer matches target_session_attrs");
    else if (!(how == PGW_RELEASE_RESET && reset && *reset) && (why = session_kind_suspect(srv)))
        pgw_server_close(srv, why);
    else if (srv_priv(srv)->reconnect || pool->orphan ||
             (srv->expire_at > 0 && srv->request_time >= srv->expire_at))
        pgw_server_close(srv, !srv_priv(srv)->reconnect ? "server_lifetime"
                              : srv_priv(srv)->retire_why ? srv_priv(srv)->retire_why
                                                          : "reconnect");
    else if (excess_count(pool, &x), (over = excess_why(&x)))
        /* A reload lowered a limit: with clients waiting (of this pool or
         * another under the same db/user limit) it would go to the next
         * one, and the old number of servers stay under load. */
        pgw_server_close(srv, over);
    else if (hand_over(srv))
        ;                     /* closed: another pool under a shared limit logs in */
    else if (how == PGW_RELEASE_RESET && reset && *reset)
        reset_job(srv, reset);
    else if (cleanup || rollback)
        reset_job(srv, NULL);
    else
        pgw_server_make_idle(srv);
    pgw_pool_kick_related(pool);
}

void pgw_server_retire(struct pgw_server *srv, const char *why)
{
    struct pool_server *ps = srv_priv(srv);
    ps->reconnect = true;
    ps->pause_close = false;
    ps->retire_why = why;
}

/* ---- maintenance ------------------------------------------------------- */

/* Close idle servers past server_idle_timeout (above min_pool_size), past
 * their lifetime or over a limit a reload lowered (clients waiting or
 * not).  Oldest-used first: they sit at the tail (at the head with
 * server_round_robin). */
void pgw_pool_retire(struct pgw_pool *pool, ev_tstamp now)
{
    const struct pgw_config *cfg = pool->set->cfg;
    const char *over;
    struct pgw_list *n, *prev;
    struct excess x;
    excess_count(pool, &x);   /* once: the counts walk every pool */
    bool rr = cfg->server_round_robin;
    for (n = rr ? pool->idle.next : pool->idle.prev; n != &pool->idle; n = prev) {
        prev = rr ? n->next : n->prev;
        struct pgw_server *srv = pgw_container_of(n, struct pgw_server, node);
        if (srv->expire_at > 0 && now >= srv->expire_at)
            pgw_server_close(srv, "server_lifetime");
        else if (cfg->server_idle_timeout > 0 &&
                 now - srv->request_time >= cfg->server_idle_timeout &&
                 (pool->user_superseded || pgw_pool_total(pool) > pool->min_pool_size))
            pgw_server_close(srv, "server_idle_timeout");
        else if ((over = excess_why(&x)))
            pgw_server_close(srv, over);   /* a waiter gets one within the limit */
        else
            continue;
        x.size--;             /* one server fewer in each count */
        x.db--;
        x.user--;
    }
}

/* ---- accessors, admin ---------------------------------------------------- */

void pgw_pool_ref(struct pgw_pool *pool)
{
    pool->refs++;             /* pgw_pool_get, just before, ended any expiry */
}

void pgw_pool_unref(struct pgw_pool *pool)
{
    if (pool->refs > 0)
        pool->refs--;
    pool->last_used = pool->last_held = pool_now(pool);
}

const char *pgw_pool_dbname(const struct pgw_pool *pool) { return pool->dbname; }

const char *pgw_pool_log_names(const struct pgw_pool *pool, char *buf, size_t len)
{
    char qd[190], qu[190];
    snprintf(buf, len, "db=%s user=%s", pgw_log_quote(qd, sizeof(qd), pool->dbname),
             pgw_log_quote(qu, sizeof(qu), pool->user));
    return buf;
}
const struct pgw_params *pgw_pool_defaults(const struct pgw_pool *pool) { return &pool->defaults; }

const struct pgw_params *pgw_pool_cq_params(const struct pgw_pool *pool)
{
    return &pool->cq_params;
}

bool pgw_pool_defaults_memo(const struct pgw_pool *pool, uint32_t *memo)
{
    *memo = pool->defaults_memo;
    return pool->defaults_memo_valid;
}

void pgw_pool_set_defaults_memo(struct pgw_pool *pool, uint32_t memo)
{
    pool->defaults_memo = memo;
    pool->defaults_memo_valid = true;
}

bool pgw_pool_welcome_ready(const struct pgw_pool *pool)
{
    struct pgw_pool_error err;
    return pool->defaults.n > 0 && !pool->defaults_stale && !pool->set->destroying &&
           !pool->orphan && hosts_down(pool, &err) != PGW_EBREAKER_OPEN && !login_blocked(pool);
}
const char *pgw_pool_user(const struct pgw_pool *pool) { return pool->user; }
const char *pgw_pool_server_user(const struct pgw_pool *pool) { return pool->server_user; }
enum pgw_pool_mode pgw_pool_mode(const struct pgw_pool *pool) { return pool->mode; }

double pgw_pool_query_wait_timeout(const struct pgw_pool *pool) { return pool->query_wait_timeout; }

const char *pgw_pool_load_balance(const struct pgw_pool *pool)
{
    return pool->nhosts > 1 ? pgw_load_balance_name(pool->cursor.mode) : NULL;
}

void pgw_pool_get_stats(const struct pgw_pool *pool, struct pgw_pool_stats *st)
{
    ev_tstamp now = pool_now(pool);
    *st = pool->st;
    st->cl_active = pool->n_active;
    st->cl_waiting = pool->n_waiters;
    st->sv_active = pool->n_active;
    st->sv_tested = pool->n_resetting;
    st->sv_login = pool->n_connecting;
    st->sv_detached = pool->n_detached;
    st->sv_idle = st->sv_used = 0;
    const struct pgw_list *n;
    for (n = pool->idle.next; n != &pool->idle; n = n->next) {
        const struct pgw_server *s = pgw_container_of(n, struct pgw_server, node);
        if (pgw_server_needs_check(s, now))
            st->sv_used++;
        else
            st->sv_idle++;
    }
    st->pool_size = pool->pool_size;
    st->min_pool_size = pool->min_pool_size;
    st->reserve_pool_size = pool->reserve_pool_size;
    st->paused = pool->paused;
    st->maxwait = 0;
    /* The oldest waiter: each queue is in arrival order; a replication
     * client held by PAUSE (or a connect-rate bucket) waits too. */
    for (int k = 0; k < 2; k++) {
        struct pgw_list *f = pgw_list_first(k ? &pool->repl_waiters : &pool->waiters);
        ev_tstamp w = f ? now - pgw_container_of(f, struct pgw_pool_waiter, node)->since : 0;
        if (w > st->maxwait)
            st->maxwait = w;
    }
}

/* Lent and logging-in servers (pool->active, pool->pending). */
static void mark_lent(struct pgw_pool *pool, bool reconnect, bool pause_close)
{
    struct pgw_list *lists[] = { &pool->active, &pool->pending };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        for (struct pgw_list *n = lists[i]->next; n != lists[i]; n = n->next) {
            struct pool_server *ps = srv_priv(pgw_container_of(n, struct pgw_server, node));
            if (pause_close && ps->reconnect && !ps->pause_close)
                continue;                /* marked for a reason PAUSE does not undo */
            if (!reconnect && !ps->pause_close)
                continue;                /* RESUME: only PAUSE's marks go */
            ps->reconnect = reconnect;
            ps->pause_close = pause_close;
        }
}

void pgw_pool_pause(struct pgw_pool *pool, bool paused)
{
    pool->paused = paused;
    if (!paused) {
        mark_lent(pool, false, false);
        pgw_pool_kick(pool);
    }
}

bool pgw_pool_paused(const struct pgw_pool *pool) { return pool->paused; }

bool pgw_pool_idle_for_next(const struct pgw_pool *pool)
{
    return !pool->paused && pool->n_waiters == 0 && !pgw_list_empty(&pool->idle);
}

bool pgw_server_close_needed(const struct pgw_server *srv)
{
    const struct pool_server *ps = pgw_container_of(srv, const struct pool_server, pub);
    return ps->reconnect && !ps->pause_close;
}

bool pgw_server_closing(const struct pgw_server *srv)
{
    return pgw_container_of(srv, const struct pool_server, pub)->reconnect;
}

static void close_idle_and_mark(struct pgw_pool *pool, bool pause)
{
    struct pgw_list *n, *t;
    pgw_list_foreach_safe(n, t, &pool->idle)
        pgw_server_close(pgw_container_of(n, struct pgw_server, node), "reconnect");
    mark_lent(pool, true, pause);
    pgw_pool_kick_related(pool);
}

void pgw_pool_server_lost(struct pgw_server *srv)
{
    struct pgw_pool *pool = srv->pool;
    const struct pgw_list *lists[] = { &pool->idle, &pool->active, &pool->pending };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        for (const struct pgw_list *n = lists[i]->next; n != lists[i]; n = n->next) {
            const struct pgw_server *o = pgw_container_of(n, struct pgw_server, node);
            if (o != srv && (lists[i] != &pool->pending || o->state == PGW_SRV_RESETTING))
                return;
        }
    pool->defaults_stale = true;
}

void pgw_pool_close_idle(struct pgw_pool *pool)
{
    struct pgw_list *n, *t;
    pgw_list_foreach_safe(n, t, &pool->idle)
        pgw_server_close(pgw_container_of(n, struct pgw_server, node), "reconnect");
    /* Those on their way to idle through a job that is no server_reset_query
     * (a transaction's cleanup or ROLLBACK, a check) would come back as dirty
     * as the idle ones: they close when it ends (job_finished).  A PAUSE's
     * mark is no such close: RESUME takes it back (mark_lent), and the
     * server went idle dirty all the same. */
    for (n = pool->pending.next; n != &pool->pending; n = n->next) {
        struct pgw_server *srv = pgw_container_of(n, struct pgw_server, node);
        struct pool_server *ps = srv_priv(srv);
        if (srv->state == PGW_SRV_RESETTING && ps->job != SRV_JOB_RESET &&
            ps->job != SRV_JOB_CONNECT_QUERY && (!ps->reconnect || ps->pause_close))
            pgw_server_retire(srv, "reconnect");
    }
    pgw_pool_kick_related(pool);
}

void pgw_pool_reconnect(struct pgw_pool *pool, bool new_setup)
{
    if (new_setup)
        pool->defaults_stale = true;
    close_idle_and_mark(pool, false);
}

void pgw_pool_kill(struct pgw_pool *pool)
{
    /* A server running server_reset_query (or a check, a cleanup) is the
     * pool's, no client's: it goes now, its query cancelled (closing does
     * not stop it), not when the query ends -- the next client waited for
     * it (hunt h1 of session 48, F2; PgBouncer drops it at once). */
    struct pgw_list *n, *t;
    pgw_list_foreach_safe(n, t, &pool->pending) {
        struct pgw_server *srv = pgw_container_of(n, struct pgw_server, node);
        if (srv->state != PGW_SRV_RESETTING)
            continue;
        pgw_server_job_cancel(srv);
        pgw_server_close(srv, "reconnect");
    }
    pgw_pool_reconnect(pool, true);
}

void pgw_pool_close_for_pause(struct pgw_pool *pool)
{
    close_idle_and_mark(pool, true);
}

struct pgw_pool *pgw_pool_next(struct pgw_pool_set *set, struct pgw_pool *prev)
{
    struct pgw_list *n = prev ? prev->node.next : set->pools.next;
    return n == &set->pools ? NULL : pgw_container_of(n, struct pgw_pool, node);
}

static struct pgw_list *server_list(struct pgw_pool *pool, int i)
{
    switch (i) {
    case 0: return &pool->idle;
    case 1: return &pool->active;
    case 2: return &pool->pending;
    case 3: return &pool->dedicated;
    default: return NULL;
    }
}

static int list_index(const struct pgw_server *srv)
{
    if (srv->replication || srv_priv_const(srv)->detached)
        return 3;
    return srv->state == PGW_SRV_IDLE ? 0 : srv->state == PGW_SRV_ACTIVE ? 1 : 2;
}

struct pgw_server *pgw_pool_server_next(struct pgw_pool *pool, struct pgw_server *prev)
{
    int i = prev ? list_index(prev) : 0;
    struct pgw_list *n = prev ? prev->node.next : pool->idle.next;
    for (;;) {
        struct pgw_list *head = server_list(pool, i);
        if (!head)
            return NULL;
        if (n != head)
            return pgw_container_of(n, struct pgw_server, node);
        head = server_list(pool, ++i);
        if (!head)
            return NULL;
        n = head->next;
    }
}

int pgw_pool_hosts_down(const struct pgw_pool *pool, struct pgw_pool_error *err)
{
    return hosts_down(pool, err);
}

bool pgw_pool_hosts_mismatched(const struct pgw_pool *pool, struct pgw_pool_error *err)
{
    ev_tstamp now = pool_now(pool);
    if (pool->nhosts == 0)
        return false;
    for (int i = 0; i < pool->nhosts; i++)
        if (!host_skipped(pool, &pool->hosts[i], now, false))
            return false;
    /* As a normal client of the pool gets it (pgw_pool_host_mismatch) */
    if (pool->mismatch_error)
        pgw_pool_set_error(err, PGW_ESERVER_LOGIN, pgw_pool_guess_sqlstate(pool->mismatch_error),
                           "server login failed: %s", pool->mismatch_error);
    else
        pgw_pool_set_error(err, PGW_ESERVER_LOGIN, "08001",
                           "server login failed: no host of the list matches "
                           "target_session_attrs=%s", pgw_target_session_name(pool->tsa));
    return true;
}
