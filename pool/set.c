/*
 * set.c - the pool set of one loop: creation, reconfiguration, the
 * maintenance tick, the reaper that frees closed servers after the
 * callback that closed them, and destruction.
 *
 * Owns: every pool and backend of the loop (pools of the "*" entry, of
 * entries a reload removed and, with pool_idle_timeout, any pool are freed
 * once unused, see expire_pools; a backend once no pool host or server
 * names it, see pgw_backend_unref; the rest by destroy), the
 * tick timer, the reaper idle watcher and the ev_async that DNS threads
 * use to wake the loop.  No globals: all state hangs off the set.
 */
#include "pool/pool_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

double pgw_pool_set_random(struct pgw_pool_set *set)
{
    /* xorshift64*: enough to spread server lifetimes. */
    uint64_t x = set->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    set->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static void reaper_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct pgw_pool_set *set = pgw_container_of(w, struct pgw_pool_set, reaper);
    struct pgw_list *n;
    while ((n = pgw_list_first(&set->dead))) {
        pgw_list_del(n);
        struct pgw_server *srv = pgw_container_of(n, struct pgw_server, node);
        pgw_pool_recheck_reaped(srv);     /* may close and queue more */
        /* A LISTEN bridge held room in max_db_connections and
         * max_user_connections (count_servers): the waiters under them get
         * it now, not at the next tick.  (Here, not where it closed: its
         * bridge is freed in between, proxy/notify_bridge.c.) */
        struct pgw_pool *pool = srv->pool;
        bool kick = srv_priv(srv)->detached && !set->destroying &&
                    (pool->max_db_connections > 0 || pool->max_user_connections > 0);
        pgw_server_free(srv);
        if (kick)
            pgw_pool_kick_related(pool);
    }
    ev_idle_stop(loop, w);
}

void pgw_pool_set_reap_later(struct pgw_pool_set *set, struct pgw_server *srv)
{
    pgw_list_append(&set->dead, &srv->node);
    if (!set->destroying)
        ev_idle_start(set->loop, &set->reaper);
}

static bool has_dead_server(const struct pgw_pool_set *set, const struct pgw_pool *pool)
{
    for (const struct pgw_list *n = set->dead.next; n != &set->dead; n = n->next)
        if (pgw_container_of(n, struct pgw_server, node)->pool == pool)
            return true;
    return false;
}

/* Why an unused pool should go now, or NULL: its entry left the config
 * or now forces another user (as soon as it is unused); a pool of the "*" entry unused for
 * autodb_idle_timeout (idle servers or not: otherwise every database name
 * a client tries under "*" would keep a pool, and its stats, for ever);
 * any pool with neither clients nor servers for pool_idle_timeout
 * (PgBouncer 1.25). */
static const char *expire_reason(const struct pgw_pool *pool, const struct pgw_config *cfg,
                                 ev_tstamp now)
{
    if (pool->orphan)
        return "database_removed";
    if (pool->user_superseded)
        return "forced_user_changed";
    if (pool->autodb && cfg->autodb_idle_timeout > 0 &&
        now - pool->last_used >= cfg->autodb_idle_timeout)
        return "autodb_idle_timeout";
    if (cfg->pool_idle_timeout > 0 && now - pool->last_held >= cfg->pool_idle_timeout)
        return "pool_idle_timeout";
    return NULL;
}

/* Free the pools nobody can come back for (expire_reason).  Used = held by
 * a session (pgw_pool_ref, taken in the same callback as pgw_pool_get, so
 * a client logging in never sees its pool go), waited on, or with a
 * server lent, connecting or being reset: such a pool never goes.  Idle
 * servers close first; the pool itself goes once none of its closed
 * servers waits for the reaper (their free hook reads it). */
static void expire_pools(struct pgw_pool_set *set, ev_tstamp now)
{
    struct pgw_list *n, *next;
    for (n = set->pools.next; n != &set->pools; n = next) {
        next = n->next;
        struct pgw_pool *pool = pgw_container_of(n, struct pgw_pool, node);
        if (pool->refs > 0 || pool->n_waiters > 0 || pool->n_repl_waiters > 0 ||
            pool->n_dedicated > 0 ||
            pool->n_active + pool->n_connecting + pool->n_resetting > 0) {
            pool->last_used = pool->last_held = now;
            pool->expiring = false;
            continue;
        }
        if (pgw_pool_total(pool) > 0 || has_dead_server(set, pool))
            pool->last_held = now;
        const char *why = expire_reason(pool, set->cfg, now);
        if (!why)
            continue;
        if (pool->login_retry_until > now)   /* a new pool would not wait server_login_retry */
            continue;
        pool->expiring = true;               /* min_pool_size does not refill it */
        struct pgw_list *s;
        while ((s = pgw_list_first(&pool->idle)))
            pgw_server_close(pgw_container_of(s, struct pgw_server, node), why);
        if (pgw_pool_total(pool) == 0 && !has_dead_server(set, pool)) {
            char names[PGW_POOL_LOG_NAMES];
            pgw_info("pool_free", "%s reason=%s", pgw_pool_log_names(pool, names, sizeof(names)),
                     why);
            if (set->gone_hook)
                set->gone_hook(pool, set->gone_hook_arg);
            pgw_pool_free(pool);
        }
    }
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgw_pool_set *set = pgw_container_of(w, struct pgw_pool_set, tick);
    ev_tstamp now = pgw_mono_now(loop);
    struct pgw_list *n;
    expire_pools(set, now);
    for (n = set->pools.next; n != &set->pools; n = n->next)
        pgw_pool_retire(pgw_container_of(n, struct pgw_pool, node), now);
    for (n = set->backends.next; n != &set->backends; n = n->next)
        pgw_backend_tick(pgw_container_of(n, struct pgw_backend, node), now);
    pgw_pool_kick_all(set);
}

struct pgw_pool_set *pgw_pool_set_create(struct ev_loop *loop, struct pgw_ctx *root,
                                         const struct pgw_config *cfg)
{
    /* A server key under a passphrase (an entry's sslkey=) with no
     * sslpassword: libpq left OpenSSL's default, which asks on the
     * terminal (stdin), holding the loop at every server connection.
     * libpq's own hook answers with sslpassword or nothing, never asks.
     * (Process-wide, and the same for every loop.) */
    PQsetSSLKeyPassHook_OpenSSL(PQdefaultSSLKeyPassHook_OpenSSL);
    struct pgw_pool_set *set = calloc(1, sizeof(*set));
    if (!set)
        return NULL;
    set->loop = loop;
    set->root = root;
    set->cfg = cfg;
    set->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)set;
    if (!set->rng)
        set->rng = 88172645463325252ULL;
    pgw_list_init(&set->pools);
    pgw_list_init(&set->backends);
    pgw_list_init(&set->dead);
    ev_timer_init(&set->tick, tick_cb, PGW_POOL_TICK, PGW_POOL_TICK);
    ev_timer_start(loop, &set->tick);
    ev_idle_init(&set->reaper, reaper_cb);
    if (pgw_backend_dns_init(set) != 0) {
        ev_timer_stop(loop, &set->tick);
        free(set);
        return NULL;
    }
    return set;
}

static bool same_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* The server_tls_* settings libpq is given (server_tls_ciphers is not). */
static bool server_tls_changed(const struct pgw_config *a, const struct pgw_config *b)
{
    return a->server_tls_sslmode != b->server_tls_sslmode ||
           !same_str(a->server_tls_key_file, b->server_tls_key_file) ||
           !same_str(a->server_tls_cert_file, b->server_tls_cert_file) ||
           !same_str(a->server_tls_ca_file, b->server_tls_ca_file) ||
           !same_str(a->server_tls_protocols, b->server_tls_protocols);
}

void pgw_pool_set_reconfigure(struct pgw_pool_set *set, const struct pgw_config *cfg)
{
    struct pgw_list *n;
    /* New server_tls_* settings: servers made under the old ones are
     * replaced (as PgBouncer does: one kept would keep a weaker setting for
     * as long as it lives), and failures seen under them are forgotten (an
     * open breaker, a pool's refused login). */
    bool tls = server_tls_changed(set->cfg, cfg);
    set->cfg = cfg;
    for (n = set->backends.next; n != &set->backends; n = n->next) {
        struct pgw_backend *be = pgw_container_of(n, struct pgw_backend, node);
        pgw_backend_configure(be, cfg);
        if (tls)
            pgw_backend_forget_failures(be);
    }
    for (n = set->pools.next; n != &set->pools; n = n->next) {
        struct pgw_pool *pool = pgw_container_of(n, struct pgw_pool, node);
        const struct pgw_conf_db *db = pgw_conf_find_db(cfg, pool->dbname);
        pgw_pool_login_retry_configure(pool);
        if (db) {
            if (pgw_pool_apply_db(pool, db)) {
                pgw_pool_reconnect(pool, true);
            } else if (tls) {
                pgw_pool_settings_changed(pool);
                pgw_pool_reconnect(pool, false);
            }
            continue;
        }
        /* Gone from the config: no new servers, the lent ones close at
         * release, waiters are told why. */
        char names[PGW_POOL_LOG_NAMES];
        pgw_info("pool_orphaned", "%s", pgw_pool_log_names(pool, names, sizeof(names)));
        pool->orphan = true;
        pool->db_src = NULL;
        struct pgw_pool_error err = { .code = PGW_ENOTFOUND, .sqlstate = "3D000" };
        snprintf(err.message, sizeof(err.message),
                 "database \"%s\" is no longer in the configuration", pool->dbname);
        pgw_pool_fail_waiters(pool, &err);
        pgw_pool_reconnect(pool, true);
    }
    pgw_pool_kick_all(set);
}

int pgw_pool_set_server_count(const struct pgw_pool_set *set)
{
    int total = 0;
    const struct pgw_list *n;
    for (n = set->pools.next; n != &set->pools; n = n->next)
    {
        const struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        total += pgw_pool_total(p) + p->n_dedicated;
    }
    return total;
}

static void close_list(struct pgw_list *head)
{
    struct pgw_list *n;
    while ((n = pgw_list_first(head)))
        pgw_server_close(pgw_container_of(n, struct pgw_server, node), "shutdown");
}

void pgw_pool_set_destroy(struct pgw_pool_set *set)
{
    if (!set)
        return;
    struct pgw_list *n;
    set->destroying = true;
    ev_timer_stop(set->loop, &set->tick);
    struct pgw_pool_error err = { .code = PGW_ESHUTDOWN, .sqlstate = "57P01",
                                  .message = "pgwharf is shutting down" };
    for (n = set->pools.next; n != &set->pools; n = n->next)
        pgw_pool_fail_waiters(pgw_container_of(n, struct pgw_pool, node), &err);
    for (n = set->pools.next; n != &set->pools; n = n->next) {
        struct pgw_pool *pool = pgw_container_of(n, struct pgw_pool, node);
        close_list(&pool->idle);
        close_list(&pool->active);
        close_list(&pool->pending);
        close_list(&pool->dedicated);
    }
    /* Servers first: their free hook may still look at their pool. */
    ev_idle_stop(set->loop, &set->reaper);
    reaper_cb(set->loop, &set->reaper, 0);
    while ((n = pgw_list_first(&set->pools)))
        pgw_pool_free(pgw_container_of(n, struct pgw_pool, node));
    while ((n = pgw_list_first(&set->backends)))
        pgw_backend_free(pgw_container_of(n, struct pgw_backend, node));
    pgw_backend_dns_deinit(set);
    free(set);
}

void pgw_pool_set_drain(struct pgw_pool_set *set)
{
    set->draining = true;
}

void pgw_pool_set_gone_hook(struct pgw_pool_set *set, pgw_pool_gone_fn fn, void *arg)
{
    set->gone_hook = fn;
    set->gone_hook_arg = arg;
}

void pgw_pool_set_cancel_hook(struct pgw_pool_set *set, pgw_server_cancel_fn fn, void *arg)
{
    set->cancel_hook = fn;
    set->cancel_hook_arg = arg;
}

void pgw_pool_set_closed_hook(struct pgw_pool_set *set, pgw_server_closed_fn fn, void *arg)
{
    set->closed_hook = fn;
    set->closed_hook_arg = arg;
}

void pgw_pool_set_free_hook(struct pgw_pool_set *set, pgw_server_free_fn fn, void *arg)
{
    set->free_hook = fn;
    set->free_hook_arg = arg;
}
