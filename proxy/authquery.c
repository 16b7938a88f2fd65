/*
 * authquery.c - auth_query: a client's secret looked up in PostgreSQL, on
 * the loop, with a short-lived cache (see authquery.h for the interface).
 *
 * One lookup per cache entry, shared by every session that asks for the
 * same (lookup database, auth_user, user) while it runs:
 *   1. acquire a server from pgwharf's own pool for (auth_dbname or the
 *      client's database, auth_user), waiting like any client (FIFO,
 *      query_wait_timeout, breaker) -- pgw_pool_acquire with a callback;
 *   2. send Parse/Bind/Execute/Sync with the user name as a text parameter
 *      (no quoting to get wrong), written and read raw with
 *      pgw_server_write/pgw_server_read through an ev_io of our own on
 *      srv->fd.  While a server is lent the pool's idle watcher is stopped
 *      and the relay's watchers are not running (srv->link is NULL), so
 *      ours is the only one; it is stopped before the server goes back;
 *   3. read until ReadyForQuery: DataRow gives the secret (column 2),
 *      ErrorResponse the failure; then release the server IDLE when the
 *      reply ended cleanly at ReadyForQuery 'I', else CLOSE.
 * The reply must come within server_connect_timeout (as for the pool's own
 * reset and check queries).
 *
 * Answers are kept PGW_AQ_TTL seconds (no row too), at most
 * PGW_AQ_MAX_ENTRIES of them; errors are not kept.  A reload forgets them.
 * A session that leaves (its ctx ends) stops waiting; a lookup nobody waits
 * for is dropped while it still waits for a server, and otherwise allowed
 * to finish (bounded by the reply timeout) so its server goes back clean
 * and its answer is kept.
 */
#include "proxy/authquery.h"
#include "proxy/proxy_int.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/hmap.h"
#include "common/log.h"
#include "proxy/aq_reply.h"
#include "proxy/scram.h"

struct aq_lookup {
    struct pgw_aq_entry *entry;
    struct pgw_aq_cache *cache;
    struct pgw_pool_waiter waiter;
    struct pgw_server *srv;          /* lent to us, or NULL */
    ev_io io;
    ev_timer timer;                  /* server_connect_timeout for the reply */
    ev_tstamp started;
    struct pgw_wbuf out;
    size_t out_off;
    struct pgw_aq_reply reply;
};

struct pgw_aq_entry {
    struct pgw_hnode hnode;
    struct pgw_list node;            /* cache->pending, or cache->ready (oldest first) */
    struct pgw_aq_cache *cache;
    char *key;                       /* dbname \0 auth_user \0 user \0 query \0 */
    size_t keylen;
    const char *dbname, *auth_user, *user, *query;   /* into key */
    bool in_map;                     /* false once a reload made it stale */
    bool cached;                     /* on the ready list */
    bool warned;                     /* the server-login notice was logged */
    enum pgw_aq_status status;
    char *secret;
    ev_tstamp expires;
    struct pgw_list waiters;         /* struct pgw_aq_wait */
    struct aq_lookup *lk;            /* while the lookup runs */
};

struct pgw_aq_cache {
    struct pgw_proxy *px;
    struct pgw_hmap map;
    struct pgw_list pending, ready;
    int nready;
    double ttl, neg_ttl;
    uint64_t seed;
};

static void conclude(struct aq_lookup *lk);

/* ---- secrets ---- */

static bool is_verifier(const char *secret)
{
    return pgw_md5_is_secret(secret) || pgw_scram_is_secret(secret);
}

static void free_secret(char *p)
{
    if (p) {
        OPENSSL_cleanse(p, strlen(p));
        free(p);
    }
}

/* ---- entries ---- */

/* Where and how a session's secret is looked up: the database whose pool
 * runs the query (auth_dbname, the entry's or the general one, else the
 * client's database), as whom, and the query (the entry's auth_query or
 * the general one). */
struct aq_target {
    const char *db, *auth_user, *query;
};

/* False when no lookup applies (no auth_user or no query).  A database
 * not in [databases] (refused with 3D000 once logged in, session.c) is
 * looked up as the console is, with the general settings, when the
 * general auth_dbname gives a database to run the query in: otherwise its
 * users, the right password given, were told 28P01 "password
 * authentication failed" where auth_file's users learn the database does
 * not exist. */
static bool lookup_target(const struct pgw_session *s, struct aq_target *t)
{
    const struct pgw_config *cfg = s->px->cfg;
    t->auth_user = pgw_conf_auth_user(cfg, s->db);
    t->query = pgw_conf_auth_query(cfg, s->db);
    if (!t->auth_user || !*t->query)
        return false;
    t->db = pgw_conf_auth_dbname(cfg, s->db);
    if (!t->db)   /* the console (or no such database) is none to run a query in */
        t->db = s->is_admin || !s->db ? NULL : s->database;
    return t->db != NULL;
}

/* The cache key: entries differ by any of the four (two databases may
 * share an auth_dbname and not their auth_query). */
static char *make_key(const struct aq_target *t, const char *user, size_t *len)
{
    const char *part[4] = { t->db, t->auth_user, user, t->query };
    size_t n[4], total = 0;
    for (int i = 0; i < 4; i++)
        total += n[i] = strlen(part[i]) + 1;
    char *k = malloc(total);
    if (!k)
        return NULL;
    for (size_t i = 0, off = 0; i < 4; off += n[i], i++)
        memcpy(k + off, part[i], n[i]);
    *len = total;
    return k;
}

static struct pgw_aq_entry *find(struct pgw_aq_cache *c, const char *key, size_t len,
                                 uint64_t hash)
{
    for (struct pgw_hnode *n = pgw_hmap_first(&c->map, hash); n; n = pgw_hmap_next(n)) {
        struct pgw_aq_entry *e = pgw_container_of(n, struct pgw_aq_entry, hnode);
        if (e->keylen == len && memcmp(e->key, key, len) == 0)
            return e;
    }
    return NULL;
}

/* Only for an entry nobody waits on and no lookup runs for. */
static void entry_free(struct pgw_aq_entry *e)
{
    struct pgw_aq_cache *c = e->cache;
    if (e->in_map)
        pgw_hmap_remove(&c->map, &e->hnode);
    if (e->cached)
        c->nready--;
    pgw_list_del(&e->node);
    free_secret(e->secret);
    free(e->key);
    free(e);
}

/* Drop answers past their time, and the oldest beyond the cap. */
static void prune(struct pgw_aq_cache *c, ev_tstamp now)
{
    struct pgw_list *n;
    while ((n = pgw_list_first(&c->ready))) {
        struct pgw_aq_entry *e = pgw_container_of(n, struct pgw_aq_entry, node);
        if (e->expires > now && c->nready < PGW_AQ_MAX_ENTRIES)
            break;
        entry_free(e);
    }
}

/* Takes key. */
static struct pgw_aq_entry *entry_new(struct pgw_aq_cache *c, char *key, size_t len,
                                      uint64_t hash)
{
    struct pgw_aq_entry *e = calloc(1, sizeof(*e));
    if (!e || pgw_hmap_insert(&c->map, &e->hnode, hash) < 0) {
        free(e);
        free(key);
        return NULL;
    }
    e->cache = c;
    e->key = key;
    e->keylen = len;
    e->dbname = key;
    e->auth_user = e->dbname + strlen(e->dbname) + 1;
    e->user = e->auth_user + strlen(e->auth_user) + 1;
    e->query = e->user + strlen(e->user) + 1;
    e->in_map = true;
    pgw_list_init(&e->waiters);
    pgw_list_append(&c->pending, &e->node);
    return e;
}

static void detach(struct pgw_aq_wait *w)
{
    pgw_ctx_unsubscribe(&w->sub);
    pgw_list_del(&w->node);
    w->entry = NULL;
}

static void lookup_free(struct aq_lookup *lk)
{
    pgw_wbuf_deinit(&lk->out);
    free_secret(lk->reply.secret);
    OPENSSL_cleanse(lk->reply.in, sizeof(lk->reply.in));
    free(lk);
}

/* Nobody waits any more: a lookup still queued for a server is dropped
 * (one already talking to its server finishes, see the top). */
static void maybe_abandon(struct pgw_aq_entry *e)
{
    struct aq_lookup *lk = e->lk;
    if (!lk || !pgw_list_empty(&e->waiters) || lk->srv || !pgw_pool_waiter_queued(&lk->waiter))
        return;
    pgw_pool_cancel_wait(&lk->waiter);
    char qu[200];
    pgw_debug("auth_query", "db=%s user=%s result=abandoned", e->dbname,
              pgw_log_quote(qu, sizeof(qu), e->user));
    e->lk = NULL;
    lookup_free(lk);
    entry_free(e);
}

static void wait_ctx_done(struct pgw_ctx_sub *sub, int err)
{
    struct pgw_aq_wait *w = sub->arg;
    struct pgw_aq_entry *e = w->entry;
    if (!e)
        return;
    pgw_list_del(&w->node);
    w->entry = NULL;
    maybe_abandon(e);
}

void pgw_authquery_cancel(struct pgw_aq_wait *w)
{
    struct pgw_aq_entry *e = w->entry;
    if (!e)
        return;
    detach(w);
    maybe_abandon(e);
}

/* Store the answer (unless it is an error or the entry went stale) and
 * hand it to every waiter. */
static void entry_answer(struct pgw_aq_entry *e, const struct pgw_aq_result *res)
{
    struct pgw_aq_cache *c = e->cache;
    struct pgw_aq_result r = *res;
    if (r.status == PGW_AQ_FOUND && r.secret && *r.secret) {
        e->secret = strdup(r.secret);
        if (!e->secret) {
            r.status = PGW_AQ_ERROR;
            r.sqlstate = "53200";
            r.message = "out of memory";
        }
    }
    r.secret = e->secret;
    e->status = r.status;
    pgw_list_del(&e->node);
    double ttl = r.status == PGW_AQ_FOUND ? c->ttl : c->neg_ttl;
    if (r.status != PGW_AQ_ERROR && e->in_map && ttl > 0) {
        e->expires = pgw_mono_now(c->px->loop) + ttl;
        e->cached = true;
        pgw_list_append(&c->ready, &e->node);
        c->nready++;
    } else if (e->in_map) {
        pgw_hmap_remove(&c->map, &e->hnode);
        e->in_map = false;
    }
    struct pgw_list *n;
    while ((n = pgw_list_first(&e->waiters))) {
        struct pgw_aq_wait *w = pgw_container_of(n, struct pgw_aq_wait, node);
        detach(w);
        w->done(w, &r);
    }
    if (!e->cached)
        entry_free(e);
}

/* ---- the query (the reply is parsed in aq_reply.c) ---- */

#define record(lk, ...) pgw_aq_reply_fail(&(lk)->reply, false, __VA_ARGS__)
/* A protocol or I/O failure: the server goes, not back to the pool. */
#define broken(lk, ...) pgw_aq_reply_fail(&(lk)->reply, true, __VA_ARGS__)

static void io_wait(struct aq_lookup *lk, int events)
{
    struct ev_loop *loop = lk->cache->px->loop;
    if (ev_is_active(&lk->io) && (lk->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(loop, &lk->io);
    ev_io_set(&lk->io, lk->srv->fd, events);
    ev_io_start(loop, &lk->io);
}

/* Write what is left of the request, then read until the reply is over
 * or the socket has nothing more for now. */
static void step(struct aq_lookup *lk)
{
    struct pgw_server *srv = lk->srv;
    bool other = false;
    while (lk->out_off < lk->out.len) {
        ssize_t n = pgw_server_write(srv, lk->out.data + lk->out_off, lk->out.len - lk->out_off,
                                     &other);
        if (n == PGW_EAGAIN) {
            io_wait(lk, other ? EV_READ : EV_WRITE);
            return;
        }
        if (n < 0) {
            broken(lk, "08006", "auth_query: cannot send to the server: %s", pgw_strerror((int)n));
            conclude(lk);
            return;
        }
        lk->out_off += (size_t)n;
    }
    for (;;) {
        if (lk->reply.in_len == sizeof(lk->reply.in)) {
            broken(lk, "08P01", "auth_query: reply too long");
            conclude(lk);
            return;
        }
        ssize_t n = pgw_server_read(srv, lk->reply.in + lk->reply.in_len,
                                    sizeof(lk->reply.in) - lk->reply.in_len, &other);
        if (n == PGW_EAGAIN) {
            io_wait(lk, other ? EV_WRITE : EV_READ);
            return;
        }
        if (n <= 0) {
            broken(lk, "08006", "auth_query: %s",
                   n == 0 ? "server closed the connection unexpectedly" : pgw_strerror((int)n));
            conclude(lk);
            return;
        }
        lk->reply.in_len += (uint32_t)n;
        if (pgw_aq_reply_take(&lk->reply)) {
            conclude(lk);
            return;
        }
    }
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    step(pgw_container_of(w, struct aq_lookup, io));
}

/* How long a lookup waits for its reply: server_connect_timeout, or
 * without one client_login_timeout (a login waits no longer), or a minute:
 * never for ever (a lookup nobody waits for any more runs on, its server
 * held). */
static double reply_limit(const struct pgw_config *cfg, const char **key)
{
    *key = "server_connect_timeout";
    if (cfg->server_connect_timeout > 0)
        return cfg->server_connect_timeout;
    *key = "client_login_timeout";
    if (cfg->client_login_timeout > 0)
        return cfg->client_login_timeout;
    *key = "the lookup's own limit";
    return 60;
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct aq_lookup *lk = pgw_container_of(w, struct aq_lookup, timer);
    const char *key;
    double limit = reply_limit(lk->cache->px->cfg, &key);
    broken(lk, "08006", "auth_query: no reply from the server within %s (%g s)", key, limit);
    /* Closing the server leaves its backend running the query (a lock
     * wait, a slow function) to its end; retried logins would pile up
     * more of them. */
    if (lk->srv)
        pgw_cancel_server(lk->cache->px, lk->srv, "auth_query");
    conclude(lk);
}

static void run(struct aq_lookup *lk, struct pgw_server *srv)
{
    struct ev_loop *loop = lk->cache->px->loop;
    const char *key;
    double limit = reply_limit(lk->cache->px->cfg, &key);
    lk->srv = srv;
    /* The request's Parse replaces the server's unnamed statement: a
     * client whose own it was must not Bind the lookup's (its rows, the
     * verifiers, to that client); the next borrower drops it (relay.c). */
    srv->user_unnamed = PGW_UNNAMED_OWN;
    ev_io_set(&lk->io, srv->fd, EV_WRITE);
    ev_timer_set(&lk->timer, limit, 0);
    ev_timer_start(loop, &lk->timer);
    step(lk);
}

static void acquire_failed(struct aq_lookup *lk, const struct pgw_pool_error *err)
{
    record(lk, err->sqlstate[0] ? err->sqlstate : "08006", "%s",
           err->message[0] ? err->message : pgw_strerror(err->code));
    conclude(lk);
}

static void acquired_cb(struct pgw_pool_waiter *w, struct pgw_server *srv)
{
    struct aq_lookup *lk = w->arg;
    if (!srv)
        acquire_failed(lk, w->error);
    else
        run(lk, srv);
}

static void log_result(const struct aq_lookup *lk, const struct pgw_aq_result *r)
{
    const struct pgw_aq_entry *e = lk->entry;
    char qd[200], qa[200], qu[200], qm[700];
    double ms = (pgw_mono_now(lk->cache->px->loop) - lk->started) * 1000.0;
    pgw_log_quote(qd, sizeof(qd), e->dbname);
    pgw_log_quote(qa, sizeof(qa), e->auth_user);
    pgw_log_quote(qu, sizeof(qu), e->user);
    if (r->status == PGW_AQ_ERROR) {
        pgw_warn("auth_query", "db=%s auth_user=%s user=%s result=error sqlstate=%s ms=%.1f "
                 "reason=%s", qd, qa, qu, r->sqlstate, ms,
                 pgw_log_quote(qm, sizeof(qm), lk->reply.message));
        return;
    }
    pgw_info("auth_query", "db=%s auth_user=%s user=%s result=%s ms=%.1f", qd, qa, qu,
             r->status == PGW_AQ_NOT_FOUND ? "not_found" : r->secret ? "found" : "no_password",
             ms);
}

/* The lookup is over (done, failed or timed out): give the server back,
 * answer the waiters, free the lookup. */
static void conclude(struct aq_lookup *lk)
{
    struct pgw_aq_entry *e = lk->entry;
    struct ev_loop *loop = lk->cache->px->loop;
    ev_io_stop(loop, &lk->io);
    ev_timer_stop(loop, &lk->timer);
    pgw_pool_cancel_wait(&lk->waiter);
    struct pgw_server *srv = lk->srv;
    lk->srv = NULL;
    enum pgw_release how = lk->reply.at_ready && lk->reply.status == 'I' && !lk->reply.dirty
                               ? PGW_RELEASE_IDLE
                               : PGW_RELEASE_CLOSE;
    char why[700];
    struct pgw_aq_result r = { .status = PGW_AQ_FOUND };
    if (!lk->reply.failed && lk->reply.rows > 1)
        record(lk, "28000", "auth_query returned %d rows (expected at most one)", lk->reply.rows);
    if (!lk->reply.failed && lk->reply.rows == 1 && lk->reply.cols < 2)
        record(lk, "28000", "auth_query must return two columns (user name, password), "
               "not %d", lk->reply.cols);
    if (!lk->reply.failed && !lk->reply.at_ready)
        broken(lk, "08P01", "auth_query: the reply ended early");
    if (lk->reply.failed && strcmp(lk->reply.sqlstate, "22021") == 0) {
        /* The name is not valid in the lookup's encoding (a client's
         * non-UTF-8 bytes): no role can have it.  No such user, as
         * PostgreSQL answers it (after the password exchange), not a
         * FATAL before any. */
        log_result(lk, &(struct pgw_aq_result){ .status = PGW_AQ_ERROR,
                                                 .sqlstate = lk->reply.sqlstate });
        r.status = PGW_AQ_NOT_FOUND;
    } else if (lk->reply.failed) {
        r.status = PGW_AQ_ERROR;
        r.sqlstate = lk->reply.sqlstate;
        /* The client is not logged in yet: it learns that the lookup
         * failed and the SQLSTATE, not the why (a table's name, the
         * auth_user's login failure, auth_dbname, a backend's address),
         * which is in the log.  A wait pgwharf gave up (query_wait_timeout)
         * or a statement cancelled says nothing about the setup. */
        if (strcmp(r.sqlstate, "57014") == 0)
            snprintf(why, sizeof(why), "auth_query failed for user \"%s\": %s", e->user,
                     lk->reply.message);
        else
            snprintf(why, sizeof(why), "auth_query failed for user \"%s\" (the reason is in "
                     "pgwharf's log)", e->user);
        r.message = why;
    } else if (lk->reply.rows == 0) {
        r.status = PGW_AQ_NOT_FOUND;
    } else if (lk->reply.null_user) {
        /* A LEFT JOIN or a function that answers every name with a row
         * must not log anyone in: a NULL user name is no such user (as in
         * PgBouncer), whatever the password column says. */
        char qd[200], qu[200];
        pgw_warn("auth_query", "db=%s user=%s reason=\"the reply's user name is NULL: no such "
                 "user\"", pgw_log_quote(qd, sizeof(qd), e->dbname),
                 pgw_log_quote(qu, sizeof(qu), e->user));
        r.status = PGW_AQ_NOT_FOUND;
    } else {
        r.secret = lk->reply.secret && *lk->reply.secret ? lk->reply.secret : NULL;
    }
    log_result(lk, &r);
    e->lk = NULL;
    if (srv)
        pgw_pool_release(srv, how);
    entry_answer(e, &r);
    lookup_free(lk);
}

static void lookup_start(struct pgw_aq_entry *e)
{
    struct pgw_aq_cache *c = e->cache;
    struct pgw_proxy *px = c->px;
    struct aq_lookup *lk = calloc(1, sizeof(*lk));
    if (!lk) {
        struct pgw_aq_result r = { .status = PGW_AQ_ERROR, .sqlstate = "53200",
                                   .message = "out of memory" };
        entry_answer(e, &r);
        return;
    }
    lk->entry = e;
    lk->cache = c;
    e->lk = lk;
    pgw_wbuf_init(&lk->out);
    ev_init(&lk->io, io_cb);
    ev_init(&lk->timer, timer_cb);
    lk->started = pgw_mono_now(px->loop);
    const struct pgw_conf_db *db = pgw_conf_find_db(px->cfg, e->dbname);
    if (!db) {
        record(lk, "3D000", "auth_dbname \"%s\" is not in [databases]", e->dbname);
        conclude(lk);
        return;
    }
    if (!pgw_aq_build_request(&lk->out, e->query, e->user)) {
        record(lk, "53200", "out of memory");
        conclude(lk);
        return;
    }
    struct pgw_pool *pool = pgw_pool_get(px->pools, db, e->dbname, e->auth_user,
                                         pgw_auth_server_password(px, db, e->auth_user));
    if (!pool) {
        record(lk, "53200", "out of memory");
        conclude(lk);
        return;
    }
    pgw_admin_pool_attach(px, pool);
    int rc = pgw_pool_acquire(pool, &lk->waiter, px->root, acquired_cb, lk);
    if (rc == PGW_ACQ_GRANTED) {
        run(lk, lk->waiter.server);
    } else if (rc < 0) {
        acquire_failed(lk, pgw_pool_error_of(&lk->waiter, rc));
    } else {
        char qd[200], qa[200], qu[200];
        pgw_debug("auth_query", "db=%s auth_user=%s user=%s result=waiting",
                  pgw_log_quote(qd, sizeof(qd), e->dbname),
                  pgw_log_quote(qa, sizeof(qa), e->auth_user),
                  pgw_log_quote(qu, sizeof(qu), e->user));
    }
}

/* ---- the interface ---- */

bool pgw_authquery_applies(const struct pgw_session *s)
{
    struct aq_target t;
    return s->px->aq && lookup_target(s, &t);
}

char *pgw_authquery_target(const struct pgw_session *s, size_t *len)
{
    struct aq_target t;
    if (!s->px->aq || !lookup_target(s, &t))
        return NULL;
    return make_key(&t, s->user, len);
}

void pgw_authquery_lookup(struct pgw_session *s, struct pgw_aq_wait *w, pgw_aq_done_fn done)
{
    struct pgw_proxy *px = s->px;
    struct pgw_aq_cache *c = px->aq;
    pgw_authquery_cancel(w);
    w->session = s;
    w->done = done;
    struct aq_target t;
    struct pgw_aq_result r = { .status = PGW_AQ_ERROR, .sqlstate = "53200",
                               .message = "out of memory" };
    if (!c || !lookup_target(s, &t)) {
        r.sqlstate = "28000";
        r.message = "no auth_user applies to this database";
        done(w, &r);
        return;
    }
    size_t len;
    char *key = make_key(&t, s->user, &len);
    if (!key) {
        done(w, &r);
        return;
    }
    uint64_t hash = pgw_hash_bytes(key, len, c->seed);
    ev_tstamp now = pgw_mono_now(px->loop);
    struct pgw_aq_entry *e = find(c, key, len, hash);
    if (e && e->cached && e->expires <= now) {
        entry_free(e);
        e = NULL;
    }
    if (e && e->cached) {
        free(key);
        struct pgw_aq_result hit = { .status = e->status, .secret = e->secret };
        done(w, &hit);
        return;
    }
    if (pgw_ctx_subscribe(s->ctx, &w->sub, wait_ctx_done, w) != 0) {
        free(key);                 /* the session is ending: nobody to answer */
        return;
    }
    bool created = false;
    if (e) {
        free(key);
    } else {
        prune(c, now);
        e = entry_new(c, key, len, hash);
        if (!e) {
            pgw_ctx_unsubscribe(&w->sub);
            done(w, &r);
            return;
        }
        created = true;
    }
    pgw_list_append(&e->waiters, &w->node);
    w->entry = e;
    if (created)
        lookup_start(e);
}

void pgw_authquery_server_login(struct pgw_session *s, const char *secret)
{
    const struct pgw_conf_db *db = s->db;
    if (s->is_admin || !db)
        return;
    /* The entry's own password, or a fixed user= that logs in with its
     * own secret, leaves nothing to do. */
    if ((db->password && *db->password) || (db->user && *db->user))
        return;
    if (secret && *secret && !is_verifier(secret)) {
        /* The pool login_done is about to use; it keeps the password
         * (a reload does not drop it: the config never gave it). */
        struct pgw_pool *p = pgw_pool_get(s->px->pools, db, s->database, s->user, NULL);
        if (p)
            pgw_pool_set_password(p, secret, true);
        return;
    }
    /* Once per cached answer, not per login. */
    struct pgw_aq_cache *c = s->px->aq;
    struct aq_target t;
    if (c && lookup_target(s, &t)) {
        size_t len;
        char *key = make_key(&t, s->user, &len);
        struct pgw_aq_entry *e = key ? find(c, key, len, pgw_hash_bytes(key, len, c->seed)) : NULL;
        free(key);
        if (e && e->warned)
            return;
        if (e)
            e->warned = true;
    }
    char qd[200], qu[200];
    pgw_notice("auth_query_server_login", "db=%s user=%s reason=\"auth_query gave %s, which "
               "libpq cannot log in with: the server login as this user works only if the "
               "server does not ask for a password (trust, cert, peer), a passfile has it, or "
               "the [databases] entry sets password= (or user= and password=)\"",
               pgw_log_quote(qd, sizeof(qd), s->database), pgw_log_quote(qu, sizeof(qu), s->user),
               secret && *secret ? "a verifier" : "no password");
}

int pgw_authquery_init(struct pgw_proxy *px)
{
    struct pgw_aq_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return PGW_ENOMEM;
    c->px = px;
    pgw_hmap_init(&c->map);
    pgw_list_init(&c->pending);
    pgw_list_init(&c->ready);
    c->ttl = pgw_env_seconds("PGW_AUTH_CACHE_TTL", PGW_AQ_TTL, 0, 86400, "auth_query");
    /* "No such user" kept as long as a found one: a shorter life made
     * unknown names answer slower (a lookup again) than known ones (from
     * the cache), which told who exists. */
    c->neg_ttl = c->ttl;
    if (pgw_proxy_random(px, &c->seed, sizeof(c->seed)) < 0)
        c->seed = (uint64_t)(uintptr_t)c;
    px->aq = c;
    return 0;
}

void pgw_authquery_reload(struct pgw_proxy *px)
{
    struct pgw_aq_cache *c = px->aq;
    struct pgw_list *pos, *tmp;
    if (!c)
        return;
    pgw_list_foreach_safe(pos, tmp, &c->ready)
        entry_free(pgw_container_of(pos, struct pgw_aq_entry, node));
    /* Lookups under way answer their waiters, then are forgotten. */
    pgw_list_foreach_safe(pos, tmp, &c->pending) {
        struct pgw_aq_entry *e = pgw_container_of(pos, struct pgw_aq_entry, node);
        if (e->in_map) {
            pgw_hmap_remove(&c->map, &e->hnode);
            e->in_map = false;
        }
    }
}

void pgw_authquery_kill(struct pgw_proxy *px, const char *db)
{
    struct pgw_aq_cache *c = px->aq;
    if (!c)
        return;
    /* conclude() moves the entry off the pending list (and may free it):
     * start over after each. */
    for (;;) {
        struct aq_lookup *lk = NULL;
        for (struct pgw_list *pos = c->pending.next; pos != &c->pending; pos = pos->next) {
            struct pgw_aq_entry *e = pgw_container_of(pos, struct pgw_aq_entry, node);
            if (e->lk && e->lk->srv && (!*db || strcmp(e->dbname, db) == 0)) {
                lk = e->lk;
                break;
            }
        }
        if (!lk)
            return;
        broken(lk, "57P01", "auth_query: terminating connection due to administrator command");
        pgw_cancel_server(px, lk->srv, "auth_query");   /* as the reply timeout: stop the query */
        conclude(lk);
    }
}

void pgw_authquery_deinit(struct pgw_proxy *px)
{
    struct pgw_aq_cache *c = px->aq;
    struct pgw_list *pos, *tmp, *n;
    if (!c)
        return;
    /* First leave every queue, so giving servers back below cannot call
     * into a lookup of ours. */
    pgw_list_foreach_safe(pos, tmp, &c->pending) {
        struct pgw_aq_entry *e = pgw_container_of(pos, struct pgw_aq_entry, node);
        while ((n = pgw_list_first(&e->waiters)))
            detach(pgw_container_of(n, struct pgw_aq_wait, node));
        if (e->lk) {
            ev_io_stop(px->loop, &e->lk->io);
            ev_timer_stop(px->loop, &e->lk->timer);
            pgw_pool_cancel_wait(&e->lk->waiter);
        }
    }
    while ((n = pgw_list_first(&c->pending))) {
        struct pgw_aq_entry *e = pgw_container_of(n, struct pgw_aq_entry, node);
        struct aq_lookup *lk = e->lk;
        e->lk = NULL;
        if (lk) {
            struct pgw_server *srv = lk->srv;
            lookup_free(lk);
            if (srv)
                pgw_pool_release(srv, PGW_RELEASE_CLOSE);   /* mid-reply */
        }
        entry_free(e);
    }
    pgw_list_foreach_safe(pos, tmp, &c->ready)
        entry_free(pgw_container_of(pos, struct pgw_aq_entry, node));
    pgw_hmap_deinit(&c->map);
    free(c);
    px->aq = NULL;
}
