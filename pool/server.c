/*
 * server.c - one server connection: the asynchronous libpq connect and
 * login, byte I/O on the socket (through TLS when libpq set it up), the
 * raw-protocol engine that runs connect_query / server_reset_query /
 * server_check_query, the watch on idle servers, and closing.
 *
 * Owns: struct pool_server (the public struct pgw_server plus private
 * state), its PGconn, its ev_io and ev_timer.  One ev_io serves
 * every phase; its callback changes with the phase (connect, job, idle) and
 * its fd/events change only while it is stopped.  Closing never frees: the
 * memory goes to the set's reaper.
 */
#include "pool/pool_int.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

/* libpq has no iterator over the ParameterStatus values it saw: these are
 * the ones PostgreSQL reports (GUC_REPORT). */
static const char *const reported_params[] = {
    "server_version", "server_encoding", "client_encoding", "application_name",
    "default_transaction_read_only", "in_hot_standby", "is_superuser",
    "session_authorization", "DateStyle", "IntervalStyle", "TimeZone",
    "integer_datetimes", "standard_conforming_strings",
};
/* A server's record holds these, extra_float_digits and the
 * track_extra_parameters, with room for names a newer PostgreSQL reports
 * (scram_iterations, ...); a full record is pgwharf's limit (54000). */
_Static_assert(sizeof(reported_params) / sizeof(reported_params[0]) + 1 +
                   PGW_CONF_TRACK_EXTRA_MAX + 8 <= PGW_MAX_PARAMS,
               "PGW_MAX_PARAMS leaves no room for reported parameters");

static void connect_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void job_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void idle_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void server_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* ---- byte I/O ---------------------------------------------------------- */

static ssize_t tls_result(SSL *ssl, int r, bool *want_other, int fail)
{
    int e = SSL_get_error(ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return PGW_EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        if (want_other)
            *want_other = true;
        return PGW_EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PGW_EAGAIN;
        return r == 0 && fail == PGW_ESERVER_READ ? 0 : fail;
    default:
        return fail;
    }
}

ssize_t pgw_server_read(struct pgw_server *srv, void *buf, size_t n, bool *want_write)
{
    if (want_write)
        *want_write = false;
    if (n > INT_MAX)
        n = INT_MAX;
    if (srv->ssl) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_read(srv->ssl, buf, (int)n);
        if (r > 0)
            return r;
        ssize_t rc = tls_result(srv->ssl, r, want_write, PGW_ESERVER_READ);
        /* OpenSSL 3 reports a peer that vanished without close_notify as
         * an SSL error: it is an EOF all the same. */
        if (rc == PGW_ESERVER_READ &&
            ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            rc = 0;
        ERR_clear_error();
        return rc;
    }
    for (;;) {
        ssize_t r = recv(srv->fd, buf, n, 0);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PGW_EAGAIN;
        return PGW_ESERVER_READ;
    }
}

ssize_t pgw_server_write(struct pgw_server *srv, const void *buf, size_t n, bool *want_read)
{
    if (want_read)
        *want_read = false;
    if (n > INT_MAX)
        n = INT_MAX;
    if (srv->ssl) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_write(srv->ssl, buf, (int)n);
        if (r > 0)
            return r;
        bool want_write = false;
        ssize_t rc = tls_result(srv->ssl, r, &want_write, PGW_ESERVER_WRITE);
        /* For a write, WANT_READ is the "other" direction. */
        if (rc == PGW_EAGAIN && want_read)
            *want_read = !want_write;
        ERR_clear_error();
        return rc == 0 ? PGW_ESERVER_WRITE : rc;
    }
    for (;;) {
        ssize_t r = send(srv->fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PGW_EAGAIN;
        return PGW_ESERVER_WRITE;
    }
}

size_t pgw_server_pending(const struct pgw_server *srv)
{
    if (!srv->ssl)
        return 0;
    int n = SSL_pending(srv->ssl);
    return n > 0 ? (size_t)n : 0;
}

/* ---- lists and counters ------------------------------------------------ */

static int *state_counter(struct pgw_pool *pool, enum pgw_server_state st)
{
    switch (st) {
    case PGW_SRV_CONNECTING: return &pool->n_connecting;
    case PGW_SRV_RESETTING:  return &pool->n_resetting;
    case PGW_SRV_IDLE:       return &pool->n_idle;
    case PGW_SRV_ACTIVE:     return &pool->n_active;
    case PGW_SRV_CLOSING:    break;
    }
    return NULL;
}

/* Move srv to the list of state st (idle: most recently used first). */
void pgw_server_move(struct pgw_server *srv, enum pgw_server_state st)
{
    struct pgw_pool *pool = srv->pool;
    if (srv->replication || srv_priv(srv)->detached) {
        /* On the pool's list of replication servers (and of detached
         * ones), in no count of its own (pool_size, limits, SHOW POOLS'
         * sv_*). */
        int detached = srv_priv(srv)->detached ? 1 : 0;
        if (pgw_list_linked(&srv->node)) {
            pgw_list_del(&srv->node);
            pool->n_dedicated--;
            pool->n_detached -= detached;
        }
        srv->state = st;
        if (st != PGW_SRV_CLOSING) {
            pgw_list_append(&pool->dedicated, &srv->node);
            pool->n_dedicated++;
            pool->n_detached += detached;
        }
        return;
    }
    if (srv_priv(srv)->held && st != PGW_SRV_ACTIVE) {
        srv_priv(srv)->held = false;
        pool->n_held--;
    }
    int *c = state_counter(pool, srv->state);
    if (pgw_list_linked(&srv->node)) {
        pgw_list_del(&srv->node);
        if (c)
            (*c)--;
    }
    srv->state = st;
    c = state_counter(pool, st);
    if (!c)
        return;
    (*c)++;
    if (st == PGW_SRV_IDLE) {
        /* Lent from the head: most recently used first (so extras idle
         * out), or the longest idle first with server_round_robin. */
        if (pool->set->cfg->server_round_robin)
            pgw_list_append(&pool->idle, &srv->node);
        else
            pgw_list_prepend(&pool->idle, &srv->node);
    }
    else if (st == PGW_SRV_ACTIVE) {
        srv_priv(srv)->pristine = false;     /* lent to a client */
        pgw_list_append(&pool->active, &srv->node);
    }
    else
        pgw_list_append(&pool->pending, &srv->node);
}

static void io_watch(struct pgw_server *srv, void (*cb)(struct ev_loop *, ev_io *, int),
                     int fd, int events)
{
    struct ev_loop *loop = srv->pool->set->loop;
    ev_io_stop(loop, &srv->io);
    ev_set_cb(&srv->io, cb);
    ev_io_set(&srv->io, fd, events);
    ev_io_start(loop, &srv->io);
}

/* Like io_watch for a socket that cannot have changed (after login): no
 * ev_io_set when fd and events are the same, so libev does not re-register
 * the fd with the kernel (an epoll_ctl per lend/release otherwise). */
static void io_watch_stable(struct pgw_server *srv, void (*cb)(struct ev_loop *, ev_io *, int),
                            int fd, int events)
{
    struct ev_loop *loop = srv->pool->set->loop;
    ev_io_stop(loop, &srv->io);
    ev_set_cb(&srv->io, cb);
    if (srv->io.fd != fd || (srv->io.events & (EV_READ | EV_WRITE)) != events)
        ev_io_set(&srv->io, fd, events);
    ev_io_start(loop, &srv->io);
}

static void timer_arm(struct pgw_server *srv, double after)
{
    struct ev_loop *loop = srv->pool->set->loop;
    ev_timer_stop(loop, &srv->timer);
    if (after >= 0) {
        ev_timer_set(&srv->timer, after, 0);
        ev_timer_start(loop, &srv->timer);
    }
}

static const char *srv_log_fields(const struct pgw_server *srv, char *buf, size_t len)
{
    char names[PGW_POOL_LOG_NAMES];
    snprintf(buf, len, "%s backend=%s id=%llu pid=%d",
             pgw_pool_log_names(srv->pool, names, sizeof(names)), srv->backend->address,
             (unsigned long long)srv->id, srv->backend_pid);
    return buf;
}

/* A server that may go back to idle: not marked, not too old, pool alive. */
static bool server_reusable(const struct pgw_server *srv)
{
    const struct pool_server *ps = srv_priv_const(srv);
    ev_tstamp now = pgw_mono_now(srv->pool->set->loop);
    if (ps->reconnect || srv->pool->orphan || srv->pool->set->destroying)
        return false;
    return !(srv->expire_at > 0 && now >= srv->expire_at);
}

/* ---- closing ----------------------------------------------------------- */

void pgw_server_close(struct pgw_server *srv, const char *reason)
{
    if (srv->state == PGW_SRV_CLOSING)
        return;
    struct pool_server *ps = srv_priv(srv);
    struct pgw_pool_set *set = srv->pool->set;
    if (ps->probe) {
        ps->probe = false;
        pgw_breaker_probe_abort(&srv->backend->breaker, pgw_mono_now(set->loop));
    }
    /* A recheck closed unanswered (connect_failed gives its verdict after,
     * but for want of a descriptor): the pools waiting for it are kicked when
     * it is reaped, with the host's clock put back (the next tick came up
     * to a second later, and found no recheck due). */
    if (pgw_pool_recheck_end(srv))
        ps->recheck_unanswered = true;
    ev_io_stop(set->loop, &srv->io);
    ev_timer_stop(set->loop, &srv->timer);
    if (reason) {
        char f[PGW_POOL_LOG_NAMES + 200], q[600];
        pgw_info("server_close", "%s reason=%s", srv_log_fields(srv, f, sizeof(f)),
                 pgw_log_quote(q, sizeof(q), reason));
    }
    pgw_server_move(srv, PGW_SRV_CLOSING);
    if (set->closed_hook)
        set->closed_hook(srv, set->closed_hook_arg);
    /* PQfinish sends a Terminate first, and in libpq's blocking mode waits
     * (poll) until the socket takes it: a server that reads nothing (its
     * query waits on a lock, requests queued behind it fill its socket)
     * held the whole loop.  Non-blocking, a Terminate that does not fit
     * is dropped.  (The switch flushes libpq's own output first: empty,
     * pgwharf writes the socket itself.) */
    if (srv->conn) {
        (void)PQsetnonblocking(srv->conn, 1);
        PQfinish(srv->conn);
    }
    srv->conn = NULL;
    srv->ssl = NULL;
    srv->fd = -1;
    srv->link = NULL;
    pgw_pool_set_reap_later(set, srv);
}

void pgw_server_free(struct pgw_server *srv)
{
    struct pool_server *ps = srv_priv(srv);
    struct pgw_pool_set *set = srv->pool->set;
    if (set->free_hook && srv->user_state)
        set->free_hook(srv, set->free_hook_arg);
    srv->user_state = NULL;
    pgw_backend_unref(srv->backend);
    pgw_wbuf_deinit(&ps->out);
    pgw_params_deinit(&srv->params);
    free(srv->user_vals);
    free(ps->big);
    free(ps);
}

bool pgw_server_needs_check(const struct pgw_server *srv, ev_tstamp now)
{
    const struct pgw_config *cfg = srv->pool->set->cfg;
    if (!cfg->server_check_query || !*cfg->server_check_query)
        return false;
    if (srv_priv_const(srv)->doubted)
        return true;                     /* pgw_pool_server_doubted */
    /* With a delay of 0 every reuse is checked, but not a fresh login,
     * nor one checked since it was last lent (its client may have gone
     * meanwhile). */
    if (cfg->server_check_delay <= 0)
        return srv->lend_count > 0 && !srv_priv_const(srv)->checked;
    /* A check counts as a use (request_time): fresh for the delay again,
     * not for ever when nobody took it. */
    return now - srv->request_time >= cfg->server_check_delay;
}

bool pgw_server_used(const struct pgw_server *srv)
{
    return srv->state == PGW_SRV_IDLE &&
           pgw_server_needs_check(srv, pgw_mono_now(srv->pool->set->loop));
}

/* ---- idle -------------------------------------------------------------- */

void pgw_server_make_idle(struct pgw_server *srv)
{
    srv_priv(srv)->job = SRV_JOB_NONE;
    timer_arm(srv, -1);
    pgw_server_move(srv, PGW_SRV_IDLE);
    io_watch_stable(srv, idle_io_cb, srv->fd, EV_READ);
}

/* An idle server has nothing to say: any byte, EOF or error closes it (a
 * terminated backend sends a FATAL ErrorResponse, then EOF). */
static void idle_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgw_server *srv = pgw_container_of(w, struct pgw_server, io);
    struct pgw_pool *pool = srv->pool;
    uint8_t buf[1024];
    char why[600];
    ssize_t n = 0;
    if (!(revents & EV_ERROR)) {  /* (libev could not watch the socket: stopped) */
        n = pgw_server_read(srv, buf, sizeof(buf) - 1, NULL);
        if (n == PGW_EAGAIN)
            return;           /* TLS housekeeping, no data */
    }
    if (revents & EV_ERROR) {
        snprintf(why, sizeof(why), "could not watch the connection for events while idle");
    } else if (n == 0) {
        snprintf(why, sizeof(why), "server closed the connection while idle");
    } else if (n < 0) {
        snprintf(why, sizeof(why), "%s while idle", pgw_strerror((int)n));
    } else if (buf[0] == PGW_BE_ERROR && n > (ssize_t)PGW_MSG_HDR) {
        struct pgw_wire_err_fields f;
        buf[n] = 0;           /* a truncated body still ends in NUL */
        if (pgw_wire_parse_error(buf + PGW_MSG_HDR, (size_t)n - PGW_MSG_HDR + 1, &f) == 0)
            snprintf(why, sizeof(why), "server error while idle: %s (%s)", f.message,
                     f.sqlstate);
        else
            snprintf(why, sizeof(why), "server error while idle");
    } else {
        snprintf(why, sizeof(why), "unexpected message '%c' from idle server",
                 buf[0] >= 0x20 && buf[0] < 0x7f ? buf[0] : '?');
    }
    pgw_server_close(srv, why);
    pgw_pool_server_lost(srv);
    pgw_pool_kick_related(pool);
}

/* ---- connect ----------------------------------------------------------- */

/* Whether the entry sets key: an empty value is libpq's "not set" (as
 * db_sets_user and the others read it), so the server_tls_* default still
 * applies; else sslrootcert='' left libpq to look in ~/.postgresql. */
static bool pool_has_key(const struct pgw_pool *pool, const char *key)
{
    for (int i = 0; i < pool->nkeys; i++)
        if (strcmp(pool->keys[i], key) == 0 && pool->vals[i][0])
            return true;
    return false;
}

#define PGW_NUM_TEXT 16      /* an int as text */

/* A replication client's parameters (w->repl_options) after the entry's
 * own options, if any (PostgreSQL applies them in order: the client's
 * win, as a SET would on a pooled server).  NULL when the client has
 * none or memory is short (the server then gets the entry's: the client
 * sees what it got in the ParameterStatus of its login); free() it. */
static char *repl_options(const struct pgw_pool *pool, const struct pgw_pool_waiter *w)
{
    if (!w || !w->repl_options || !*w->repl_options)
        return NULL;
    const char *entry = "";
    for (int i = 0; i < pool->nkeys; i++)
        if (strcmp(pool->keys[i], "options") == 0)
            entry = pool->vals[i];
    size_t len = strlen(entry) + 1 + strlen(w->repl_options) + 1;
    char *o = malloc(len);
    if (o)
        snprintf(o, len, "%s%s%s", entry, *entry ? " " : "", w->repl_options);
    return o;
}

static void add_kv(const char **k, const char **v, int *n, const char *key, const char *val)
{
    if (!val || !*val)
        return;
    k[*n] = key;
    v[*n] = val;
    (*n)++;
}

/* server_tls_protocols (PgBouncer's list: tlsv1.0 .. tlsv1.3, all,
 * secure, legacy, "!" to take one away) as libpq's protocol range.  libpq
 * takes a range, so a list with a hole gets its outer bounds; max is NULL
 * when TLS 1.3 is allowed (no cap).  Unknown words are skipped. */
static void tls_protocol_range(const char *text, const char **min, const char **max)
{
    static const char *const libpq_names[] = { "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3" };
    static const struct { const char *word; unsigned mask; } words[] = {
        { "tlsv1", 1 }, { "tlsv1.0", 1 }, { "tlsv1.1", 2 }, { "tlsv1.2", 4 }, { "tlsv1.3", 8 },
        { "all", 15 }, { "legacy", 15 }, { "secure", 12 }, { "default", 12 },
    };
    unsigned on = 0, off = 0;
    const char *p = text ? text : "";
    for (;;) {
        p += strspn(p, ", :\t");
        size_t n = strcspn(p, ", :\t");
        if (n == 0)
            break;
        bool neg = *p == '!';
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
            if (strlen(words[i].word) == n - neg &&
                strncasecmp(words[i].word, p + neg, n - neg) == 0) {
                if (neg)
                    off |= words[i].mask;
                else
                    on |= words[i].mask;
            }
        }
        p += n;
    }
    on = (on ? on : off ? 15u : 12u) & ~off;
    *min = *max = NULL;
    for (int i = 0; i < 4; i++) {
        if (on & (1u << i)) {
            if (!*min)
                *min = libpq_names[i];
            *max = i < 3 ? libpq_names[i] : NULL;
        }
    }
}

/* The libpq keywords: the db entry's, then what it leaves out. */
/* tcp_keepalive and friends for server sockets, through libpq's own
 * parameters (a database entry that sets one itself wins).  The numbers
 * are written into text, which must outlast the connection start. */
static void add_tcp_params(const struct pgw_pool *pool, const char **k, const char **v, int *n,
                           char (*text)[PGW_NUM_TEXT])
{
    const struct pgw_config *cfg = pool->set->cfg;
    const struct { const char *key; int value; } opt[] = {
        { "keepalives_count", cfg->tcp_keepcnt },
        { "keepalives_idle", cfg->tcp_keepidle },
        { "keepalives_interval", cfg->tcp_keepintvl },
        { "tcp_user_timeout", cfg->tcp_user_timeout },
    };
    if (!pool_has_key(pool, "keepalives"))
        add_kv(k, v, n, "keepalives", cfg->tcp_keepalive ? "1" : "0");
    for (size_t i = 0; i < sizeof(opt) / sizeof(opt[0]); i++) {
        if (opt[i].value <= 0 || pool_has_key(pool, opt[i].key))
            continue;
        snprintf(text[i], PGW_NUM_TEXT, "%d", opt[i].value);
        add_kv(k, v, n, opt[i].key, text[i]);
    }
}

/* libpq gets one host of the entry's list, the one chosen (h): its name
 * and port, with its addresses when pgwharf resolved the name.  With
 * prefer-standby, libpq (one host: no second pass) is asked for a standby
 * or for any server (standby_pass). */
/* For a replication client (w), its mode, application_name and
 * client_encoding replace the entry's, and opts (repl_options) its
 * options. */
/* addrs: the host, hostaddr and port lists of h's resolved name for this
 * connection (pgw_backend_addr_lists), or NULL. */
static int build_params(const struct pgw_pool *pool, const struct pool_host *h,
                        bool standby_pass, const struct pgw_pool_waiter *w, const char *opts,
                        char (*addrs)[PGW_BACKEND_LIST_MAX], const char **k, const char **v,
                        char (*text)[PGW_NUM_TEXT])
{
    const struct pgw_config *cfg = pool->set->cfg;
    int n = 0;
    if (w) {
        add_kv(k, v, &n, "replication", w->replication == PGW_REPL_LOGICAL ? "database" : "true");
        add_kv(k, v, &n, "application_name", w->repl_app);
        add_kv(k, v, &n, "client_encoding", w->repl_encoding);
        add_kv(k, v, &n, "options", opts);
    }
    for (int i = 0; i < pool->nkeys; i++) {
        if (strcmp(pool->keys[i], "host") == 0 || strcmp(pool->keys[i], "port") == 0 ||
            strcmp(pool->keys[i], "hostaddr") == 0)
            continue;
        if (strcmp(pool->keys[i], "replication") == 0 ||
            (w && w->repl_app && strcmp(pool->keys[i], "application_name") == 0) ||
            (w && w->repl_encoding && strcmp(pool->keys[i], "client_encoding") == 0) ||
            (opts && strcmp(pool->keys[i], "options") == 0))
            continue;         /* the client's, or none: the server is pooled */
        if (strcmp(pool->keys[i], "target_session_attrs") == 0 &&
            pool->tsa == PGW_TSA_PREFER_STANDBY) {
            add_kv(k, v, &n, pool->keys[i], standby_pass ? "standby" : "any");
            continue;
        }
        add_kv(k, v, &n, pool->keys[i], pool->vals[i]);
    }
    if (addrs) {
        add_kv(k, v, &n, "host", addrs[0]);
        add_kv(k, v, &n, "hostaddr", addrs[1]);
        add_kv(k, v, &n, "port", addrs[2]);
    } else {
        add_kv(k, v, &n, "host", h->spec.host);
        add_kv(k, v, &n, "hostaddr", h->spec.hostaddr);
        add_kv(k, v, &n, "port", h->spec.port);
    }
    if (!pool->db_sets_user)
        add_kv(k, v, &n, "user", pool->user);
    if (!pool->db_sets_password)
        add_kv(k, v, &n, "password", pool->password);
    if (!pool->db_sets_dbname)
        add_kv(k, v, &n, "dbname", pool->dbname);
    if (!pool_has_key(pool, "sslmode"))
        add_kv(k, v, &n, "sslmode", pgw_tls_mode_name(cfg->server_tls_sslmode));
    /* libpq's default (prefer) asks the GSSAPI library for credentials at
     * every connect, inside the loop, and MIT krb5 crashes when one of its
     * allocations fails there (found by fault injection), taking every
     * client with it; PgBouncer never uses GSSAPI to servers.  An entry
     * that wants it says gssencmode=. */
    if (!pool_has_key(pool, "gssencmode"))
        add_kv(k, v, &n, "gssencmode", "disable");
    if (!pool_has_key(pool, "sslrootcert"))
        add_kv(k, v, &n, "sslrootcert", cfg->server_tls_ca_file);
    if (!pool_has_key(pool, "sslcert"))
        add_kv(k, v, &n, "sslcert", cfg->server_tls_cert_file);
    if (!pool_has_key(pool, "sslkey"))
        add_kv(k, v, &n, "sslkey", cfg->server_tls_key_file);
    const char *tls_min, *tls_max;
    tls_protocol_range(cfg->server_tls_protocols, &tls_min, &tls_max);
    if (!pool_has_key(pool, "ssl_min_protocol_version"))
        add_kv(k, v, &n, "ssl_min_protocol_version", tls_min);
    if (!pool_has_key(pool, "ssl_max_protocol_version"))
        add_kv(k, v, &n, "ssl_max_protocol_version", tls_max);
    add_tcp_params(pool, k, v, &n, text);
    k[n] = NULL;
    v[n] = NULL;
    return n;
}

/* answered: the SQLSTATE of an ERROR the server answered the
 * connect_query with (the server is up: this pool's problem), or NULL.
 * A failure with no SQLSTATE is asked of pgw_pool_fds_exhausted: libpq's
 * "could not create socket" is in the language of its messages, the errno
 * long gone. */
static void connect_failed_answered(struct pgw_server *srv, const char *msg,
                                    const char *answered)
{
    struct pgw_pool *pool = srv->pool;
    struct pgw_backend *be = srv->backend;
    struct pool_server *ps = srv_priv(srv);
    bool probe = ps->probe;
    bool recheck = ps->recheck;   /* ended by the close below, before the verdict */
    bool silent = answered && ps->cq_silent;
    char text[512], f[256], q[600];

    char code[6];             /* msg is the connection's: read before it is closed */
    bool coded = pgw_pool_server_sqlstate(msg, code);
    bool role_or_db = pgw_pool_refused_for_role_or_db(msg);
    pgw_pool_trim_error(text, sizeof(text), msg);
    ps->probe = false;        /* the breaker hears the outcome below */
    pool->st.total_connect_failures++;
    pgw_warn("server_connect_failed", "%s reason=%s", srv_log_fields(srv, f, sizeof(f)),
             pgw_log_quote(q, sizeof(q), text));
    pgw_server_close(srv, NULL);
    if (!answered && !coded && pgw_pool_fds_exhausted()) {
        /* pgwharf's own shortage says nothing of the backend (it opened
         * the breaker for every pool on it, and kept it open after the
         * descriptors came back). */
        pgw_warn("server_connect_failed", "%s reason=\"no file descriptor left (open-files "
                 "limit): not the backend's failure\"", srv_log_fields(srv, f, sizeof(f)));
        if (probe)
            pgw_breaker_probe_abort(&be->breaker, pgw_mono_now(pool->set->loop));
        if (srv->replication)
            pgw_pool_repl_login_failed(srv, "53300", "pgwharf has no file descriptor left "
                                       "(open-files limit)", false);
        else
            pgw_pool_fds_short(pool);
        pgw_pool_kick_related(pool);
        return;
    }
    const char *sqlstate = answered ? answered : coded ? code : pgw_pool_guess_sqlstate(text);
    /* Refused for this pool's credentials, database or role alone: the
     * server answered, and is up for other pools. */
    bool local = pgw_pool_login_error_is_local(sqlstate) || pgw_pool_refusal_is_local(text) ||
                 (!answered && role_or_db);
    /* (its fds branch above left a recheck unanswered: the reaper's) */
    if (srv->replication) {
        /* A refusal the server answered (no REPLICATION privilege, no
         * pg_hba line for replication, max_wal_senders) is this client's:
         * the backend is up.  Only a failure to reach it counts there. */
        bool mismatch = pgw_pool_target_mismatch(text);
        bool refused = local || strcmp(sqlstate, "53300") == 0 || mismatch;
        if (refused) {
            pgw_backend_connected(be, probe);
        } else {
            pgw_pool_host_failed(pool, ps->host, be);
            pgw_backend_failed(be, probe, text, sqlstate);
        }
        /* Unreachable, or not the kind asked for: the client's next host,
         * as libpq would; its own refusals end it. */
        pgw_pool_repl_login_failed(srv, sqlstate, text, mismatch || !refused);
        pgw_pool_kick_related(pool);
        return;
    }
    /* Started under settings a reload has since changed (another
     * target_session_attrs, host list, user or database): its verdict on
     * the host is of the old ones, and the waiters get a server logging in
     * with the new ones (kicked below). */
    bool stale = ps->settings_gen != pool->settings_gen;
    ps->recheck_unanswered = false;   /* answered here, kicked below */
    if (!answered && pgw_pool_target_mismatch(text)) {
        /* Up and answering, but not what target_session_attrs asks for
         * (a standby, a read-only session): not a health failure; this
         * pool tries its other hosts. */
        pgw_backend_connected(be, probe);
        if (!stale)
            pgw_pool_host_mismatch(pool, ps->host, be, sqlstate, text);
    } else if (!answered && !coded && pool->nhosts > 1 && pgw_pool_refusal_is_tls(text)) {
        /* This host's TLS (none there, or a certificate the entry's check
         * refuses): up and answering, and another host of the list may
         * pass, as libpq's multi-host connect goes on to it; not the
         * whole pool's refusal for server_login_retry.  (prefer-standby's
         * second pass, which takes the hosts skipped for their kind, does
         * not take these: host_skipped.)  Not when the server answered the
         * last attempt (coded): sslmode=prefer keeps the failed TLS
         * attempt's text ahead of the plain one's FATAL (a wrong
         * password), which is the pool's refusal, as libpq's multi-host
         * connect stops at it. */
        pgw_backend_connected(be, probe);
        if (recheck)
            pgw_pool_recheck_void(srv);
        if (!stale)
            pgw_pool_host_tls_refused(pool, ps->host, be, sqlstate, text);
    } else if (answered || local) {
        /* The server answered and refused this pool's user or database,
         * or its connect_query: the backend is fine (other pools on it
         * too), this pool waits server_login_retry (not when stale).
         * A connect_query that got no reply says neither: the backend let
         * the pool in, but did not show it serves (a backend crawling
         * back from an outage, or this pool's query waiting on a lock).
         * No count either way; a probe's verdict is left to the next one,
         * at once (another pool's, or the tick's), so one pool's slow
         * query neither lets every client back in nor keeps them out. */
        if (!silent)
            pgw_backend_connected(be, probe);
        else if (probe)
            pgw_breaker_probe_abort(&be->breaker, pgw_mono_now(pool->set->loop));
        if (recheck)     /* nothing said of the host's kind */
            pgw_pool_recheck_void(srv);
        if (!stale)
            pgw_pool_login_failed(pool, sqlstate, text);
    } else {
        pgw_pool_host_failed(pool, ps->host, be);
        if (ps->standby_pass && !stale)   /* libpq's first pass would go on too */
            pgw_pool_host_no_standby(pool, ps->host, be);
        pgw_backend_failed(be, probe, text, sqlstate);
    }
    pgw_pool_kick_related(pool);
    if (recheck)   /* the other pools' clients waiting for its outcome */
        pgw_pool_kick_host_pools(be);
}

static void connect_failed(struct pgw_server *srv, const char *msg)
{
    connect_failed_answered(srv, msg, NULL);
}

/* The server_close reason of a server ended at its login (notice_cb). */
static const char *fatal_reason(const struct pool_server *ps, char *buf, size_t len)
{
    snprintf(buf, len, "server error right after login: %s (%s)", ps->fatal_msg,
             ps->fatal_sqlstate);
    return buf;
}

static void login_succeeded(struct pgw_server *srv)
{
    struct pgw_pool *pool = srv->pool;
    struct pool_server *ps = srv_priv(srv);
    struct pgw_backend *be = srv->backend;
    bool probe = ps->probe;
    ps->probe = false;
    bool recheck = pgw_pool_recheck_end(srv);
    /* Not a login started under settings a reload has since changed: its
     * success says nothing of the new ones, which may have been refused
     * (server_login_retry) meanwhile. */
    if (ps->settings_gen == pool->settings_gen) {
        pgw_pool_login_ok(pool);
        pgw_pool_host_matched(pool, ps->host, be, recheck);
    }
    const char *over = NULL;
    char why[400];
    if (ps->fatal_sqlstate[0])        /* login_ended */
        pgw_server_close(srv, fatal_reason(ps, why, sizeof(why)));
    else if (!server_reusable(srv))
        pgw_server_close(srv, "not reusable after login");
    else if ((over = pgw_pool_over_limit(pool)))
        /* Started before a reload lowered a limit: counted while it logged
         * in, it would go to a waiter over the new one. */
        pgw_server_close(srv, over);
    else {
        pool->login_ended_last = false;
        pgw_server_make_idle(srv);
    }
    pgw_backend_connected(be, probe);
    pgw_pool_kick_related(pool);
    if (recheck)   /* the other pools' clients waiting for its outcome */
        pgw_pool_kick_host_pools(be);
}

/* The server ended its session in the read that brought the login's
 * ReadyForQuery (notice_cb saw the FATAL): closed, never made idle nor
 * lent (its client got 08006).  The login itself worked, so the breaker
 * hears connected and the pool's login error clears: the backend let the
 * role in and answered; a backend that refuses logins (shutting down,
 * 57P03; too many connections) says so before ReadyForQuery, which stays
 * a failed login (connect_failed).  Counted as a failure, an
 * administrator's pg_terminate_backend sweep would open the breaker for
 * every pool on the backend.  The waiters get another server from the
 * kick, as for a server lost before it was lent. */
static void login_ended(struct pgw_server *srv)
{
    struct pgw_pool *pool = srv->pool;
    struct pool_server *ps = srv_priv(srv);
    char why[400];
    if (!srv->replication) {
        if (pool->login_ended_last) {
            /* Again: a backend that ends every session at its login
             * would be logged into as fast as it answers for as long as
             * a client waits.  A refusal: server_login_retry, the
             * waiters get the error. */
            pool->login_ended_last = false;
            connect_failed_answered(srv, fatal_reason(ps, why, sizeof(why)),
                                    ps->fatal_sqlstate);
            return;
        }
        pool->login_ended_last = true;
        login_succeeded(srv);         /* which closes it */
        return;
    }
    bool probe = ps->probe;
    ps->probe = false;
    pgw_server_close(srv, fatal_reason(ps, why, sizeof(why)));
    pgw_backend_connected(srv->backend, probe);
    /* a replication client is told, as of a refusal: it asked for this
     * connection, not for any server */
    pgw_pool_repl_login_failed(srv, ps->fatal_sqlstate, ps->fatal_msg, false);
    pgw_pool_kick_related(pool);
}

/* Why a parameter could not be kept in ps (pgw_params_set said false),
 * in why, and its SQLSTATE: pgwharf's own limit (the table is full) or
 * memory shortage, the pool's refusal either way, no word on the backend. */
static const char *params_failure(const struct pgw_params *ps, char *why, size_t wl,
                                  const char *what)
{
    if (pgw_params_full(ps)) {
        snprintf(why, wl, "%s: more than %d parameters, pgwharf's limit", what, PGW_MAX_PARAMS);
        return "54000";                      /* program_limit_exceeded */
    }
    snprintf(why, wl, "out of memory for %s", what);
    return "53200";
}

/* False when one could not be recorded (out of memory, or the record is
 * full: params_failure): the server is of no use then (the pool's
 * defaults, the welcome, come from it). */
static bool take_params(struct pgw_server *srv)
{
    for (size_t i = 0; i < sizeof(reported_params) / sizeof(reported_params[0]); i++) {
        const char *v = PQparameterStatus(srv->conn, reported_params[i]);
        if (v && !pgw_params_set(&srv->params, reported_params[i], v))
            return false;
    }
    /* and track_extra_parameters that this PostgreSQL reports (a newer one
     * may report more than the list above): the proxy follows those */
    const char *extra = srv->pool->set->cfg->track_extra_parameters;
    char names[PGW_CONF_TRACK_EXTRA_MAX][PGW_CONF_PARAM_NAME_MAX + 1], err[8];
    int n = extra && *extra ? pgw_conf_track_extra(extra, names, err, sizeof(err)) : 0;
    for (int i = 0; i < n; i++) {
        const char *v = PQparameterStatus(srv->conn, names[i]);
        if (v && !pgw_params_set(&srv->params, names[i], v))
            return false;
    }
    return true;
}

/* What a new client sees of parameters it does not set: this server's as
 * clients get it, after connect_query (a SET TimeZone there is the
 * pool's).  Not from a server that logged in with what a reload or
 * RECONNECT replaced (reconnect): that record is the old backend's.
 * False when out of memory (the pool's are then as they were). */
static bool take_defaults(struct pgw_server *srv)
{
    if (pgw_server_close_needed(srv))
        return true;
    if (!pgw_params_copy(&srv->pool->defaults, &srv->params))
        return false;
    srv->pool->defaults_memo_valid = false;
    srv->pool->defaults_stale = false;
    return true;
}

/* libpq's copy of the backend's cancel data (struct
 * pgw_libpq_cancel_head): libpq before 17 hands the key to no one but its
 * own blocking PQcancel (17's PQcancelCreate still makes the connection
 * itself), so it is read from the copy PQgetCancel makes, trusted only
 * from a libpq whose layout is known and when the address in it is the
 * one the connection's socket is connected to. */
static bool read_cancel_head(const struct pgw_server *srv, struct pgw_libpq_cancel_head *h)
{
    int ver = PQlibVersion();
    if (ver < 90100 || ver >= 180000 || !srv->conn)
        return false;
    struct sockaddr_storage peer;
    socklen_t peerlen = sizeof(peer);
    int fd = PQsocket(srv->conn);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&peer, &peerlen) != 0)
        return false;
    PGcancel *c = PQgetCancel(srv->conn);
    if (!c)
        return false;
    memcpy(h, c, sizeof(*h));    /* a prefix of libpq's larger struct */
    PQfreeCancel(c);
    return pgw_pool_cancel_head_valid(h, (const struct sockaddr *)&peer, peerlen);
}

/* The backend's secret key, when the pid next to it is PQbackendPID's
 * too. */
static bool read_cancel_key(struct pgw_server *srv, uint32_t *key)
{
    struct pgw_libpq_cancel_head h;
    if (srv->backend_pid <= 0 || !read_cancel_head(srv, &h) || h.be_pid != srv->backend_pid)
        return false;
    *key = (uint32_t)h.be_key;
    return true;
}

/* The backend's PID while it logs in: PQbackendPID says 0 until
 * CONNECTION_OK, but libpq has it from the BackendKeyData, which comes
 * before ReadyForQuery; PQgetCancel's copy holds it.  0 before the
 * BackendKeyData, or with another libpq (read_cancel_head's checks). */
static int login_pid(const struct pgw_server *srv)
{
    struct pgw_libpq_cancel_head h;
    return read_cancel_head(srv, &h) ? h.be_pid : 0;
}

/* Where cancels for this backend go (proxy/cancel.c sends them itself, on
 * the loop): the address the server socket is connected to, TCP or Unix,
 * and the key.  A server without them is still usable; cancels for it
 * fail (event=cancel_failed). */
static void take_cancel_target(struct pgw_server *srv)
{
    srv->cancel_addrlen = sizeof(srv->cancel_addr);
    srv->cancel_ok = srv->fd >= 0 &&
                     getpeername(srv->fd, (struct sockaddr *)&srv->cancel_addr,
                                 &srv->cancel_addrlen) == 0 &&
                     srv->cancel_addrlen <= sizeof(srv->cancel_addr) &&
                     read_cancel_key(srv, &srv->cancel_key);
    if (!srv->cancel_ok) {
        char f[PGW_POOL_LOG_NAMES + 200];
        pgw_warn("server_no_cancel", "%s libpq=%d reason=\"cannot read the backend's cancel "
                 "key or address: cancels for it will fail\"", srv_log_fields(srv, f, sizeof(f)),
                 PQlibVersion());
    }
}

/* CONNECTION_OK: from here on the pool and the proxy own the byte stream. */
static void login_done(struct pgw_server *srv)
{
    struct pgw_pool *pool = srv->pool;
    struct pgw_pool_set *set = pool->set;
    ev_tstamp now = pgw_mono_now(set->loop);
    char f[PGW_POOL_LOG_NAMES + 200];

    timer_arm(srv, -1);
    ev_io_stop(set->loop, &srv->io);
    srv->backend_pid = PQbackendPID(srv->conn);
    /* libpq may have read past the ReadyForQuery: what the server sent
     * in the same packet is in libpq's buffer, never on the socket
     * pgwharf reads from now on.  libpq parses it as an idle
     * connection's (PQconnectPoll does, up to its last whole message;
     * PQisBusy is for a libpq that leaves some): a ParameterStatus into
     * what take_params reads, a NoticeResponse and an ErrorResponse to
     * notice_cb, which notes a FATAL.  A NotificationResponse cannot come
     * before any LISTEN, nor anything else unasked. */
    (void)PQisBusy(srv->conn);
    srv->fd = PQsocket(srv->conn);
    /* tcp_socket_buffer: libpq has no parameter for it and the link is
     * open already, so the send buffer only (a receive buffer shrunk now
     * would drop what the window advertised at the handshake let the
     * server send). */
    int buf = set->cfg->tcp_socket_buffer;
    if (buf > 0)
        setsockopt(srv->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    /* tcp_user_timeout: libpq sets it only with its keepalives on (the
     * libpq parameter, add_tcp_params); with tcp_keepalive = 0 a dead
     * server would hold a query for TCP's retries (~15 min).  A Unix
     * socket refuses it: no matter. */
    int uto = set->cfg->tcp_user_timeout;
    if (uto > 0 && !pool_has_key(pool, "tcp_user_timeout"))
        setsockopt(srv->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
    srv->ssl = PQsslInUse(srv->conn) ? PQsslStruct(srv->conn, "OpenSSL") : NULL;
    take_cancel_target(srv);
    srv->server_version = PQserverVersion(srv->conn);
    if (!take_params(srv)) {
        char why[160];
        connect_failed_answered(srv, why, params_failure(&srv->params, why, sizeof(why),
                                                         "the server's parameters"));
        return;
    }
    srv_priv(srv)->login_standby =
        pgw_params_get(&srv->params, "in_hot_standby") &&
        strcmp(pgw_params_get(&srv->params, "in_hot_standby"), "on") == 0;
    srv->connect_time = srv->request_time = now;
    double life = pool->server_lifetime;
    srv->life_jitter = 0.9 + 0.2 * pgw_pool_set_random(set);
    srv->expire_at = life > 0 ? now + life * srv->life_jitter : 0;
    pgw_info("server_connect", "%s tls=%s", srv_log_fields(srv, f, sizeof(f)),
             srv->ssl ? "on" : "off");
    if (srv_priv(srv)->fatal_sqlstate[0]) {
        login_ended(srv);
        return;
    }
    if (srv->replication) {
        /* No connect_query (a physical walsender takes replication
         * commands only), no pool defaults: straight to its client. */
        bool probe = srv_priv(srv)->probe;
        srv_priv(srv)->probe = false;
        pgw_backend_connected(srv->backend, probe);
        pgw_pool_repl_login_done(srv);
        return;
    }
    if (pool->connect_query && *pool->connect_query) {
        if (pgw_server_job(srv, SRV_JOB_CONNECT_QUERY, pool->connect_query) < 0)
            connect_failed_answered(srv, "out of memory for connect_query", "53200");
        return;
    }
    if (!take_defaults(srv)) {
        connect_failed_answered(srv, "out of memory for the pool's parameters", "53200");
        return;
    }
    login_succeeded(srv);
}

static void connect_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgw_server *srv = pgw_container_of(w, struct pgw_server, io);
    if (revents & EV_ERROR) {           /* libev could not watch the socket */
        ev_io_stop(loop, w);
        connect_failed(srv, "could not watch the connection for events");
        return;
    }
    PostgresPollingStatusType st = PQconnectPoll(srv->conn);
    int fd = PQsocket(srv->conn);

    ev_io_stop(loop, w);
    switch (st) {
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        if (fd < 0) {
            connect_failed(srv, "libpq lost its socket");
            return;
        }
        io_watch(srv, connect_io_cb, fd, st == PGRES_POLLING_READING ? EV_READ : EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        login_done(srv);
        return;
    default:
        connect_failed(srv, PQerrorMessage(srv->conn));
        return;
    }
}

/* libpq's notices for this connection (a NoticeResponse of the login,
 * what login_done's PQisBusy parses after the ReadyForQuery, libpq's own
 * complaints): into pgwharf's log as event=server_notice, not onto stderr
 * as libpq's default does (past -q, logfile and the log format).  A FATAL
 * or PANIC can only be the server ending the session: noted for
 * login_done, which closes the server instead of lending it. */
static void notice_cb(void *arg, const PGresult *res)
{
    struct pgw_server *srv = arg;
    struct pool_server *ps = srv_priv(srv);
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (!sev)
        sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (!msg)
        msg = PQresultErrorMessage(res);
    sev = sev ? sev : "NOTICE";
    code = code ? code : "";
    msg = msg ? msg : "";
    char text[256], f[PGW_POOL_LOG_NAMES + 200], q[600], sq[40], sc[40];
    pgw_pool_trim_error(text, sizeof(text), msg);
    bool fatal = strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0;
    bool warn = fatal || strcmp(sev, "ERROR") == 0 || strcmp(sev, "WARNING") == 0;
    /* Before login_done sets it: the BackendKeyData's, when it came (a
     * FATAL behind the login's ReadyForQuery was logged with pid=0). */
    int pid = srv->backend_pid;
    if (pid <= 0)
        srv->backend_pid = login_pid(srv);
    srv_log_fields(srv, f, sizeof(f));
    srv->backend_pid = pid;
    pgw_log(warn ? PGW_LOG_WARNING : PGW_LOG_INFO, "server_notice",
            "%s severity=%s sqlstate=%s message=%s", f,
            pgw_log_quote(sq, sizeof(sq), sev), pgw_log_quote(sc, sizeof(sc), code),
            pgw_log_quote(q, sizeof(q), text));
    if (fatal && !ps->fatal_sqlstate[0]) {
        bool valid = strlen(code) == 5;
        for (int i = 0; valid && i < 5; i++)
            valid = isdigit((unsigned char)code[i]) || isupper((unsigned char)code[i]);
        snprintf(ps->fatal_sqlstate, sizeof(ps->fatal_sqlstate), "%s", valid ? code : "08006");
        snprintf(ps->fatal_msg, sizeof(ps->fatal_msg), "%s", text);
    }
}

int pgw_server_socket(const struct pgw_server *srv)
{
    if (srv->state == PGW_SRV_CONNECTING)
        return srv->conn ? PQsocket(srv->conn) : -1;
    return srv->fd;
}

/* Starts a connection for pool to its host `host`; the caller has been
 * admitted by that host's backend (breaker, rate, DNS).  Failures surface
 * from the loop, never inside this call. */
struct pgw_server *pgw_server_start(struct pgw_pool *pool, int host, bool probe,
                                    struct pgw_pool_waiter *w)
{
    struct pgw_pool_set *set = pool->set;
    struct pool_server *ps = calloc(1, sizeof(*ps));
    if (!ps)
        return NULL;
    struct pgw_server *srv = &ps->pub;
    srv->id = ++set->next_id;
    srv->start_time = pgw_mono_now(set->loop);
    srv->fd = -1;
    srv->pool = pool;
    srv->backend = pool->hosts[host].be;
    pgw_backend_ref(srv->backend);
    srv->state = PGW_SRV_CLOSING;
    pgw_list_init(&srv->node);
    pgw_list_init(&srv->user_queue);
    pgw_wbuf_init(&ps->out);
    ps->probe = probe;
    ps->host = host;
    ps->standby_pass = pgw_pool_wants_standby(pool, host);
    ps->pristine = true;
    ps->settings_gen = pool->settings_gen;
    if (w) {
        srv->replication = w->replication;
        ps->owner = w;
        w->repl_srv = srv;
    }
    ev_init(&srv->io, connect_io_cb);
    ev_init(&srv->timer, server_timer_cb);
    pgw_server_move(srv, PGW_SRV_CONNECTING);
    pool->st.total_connects++;

    int cap = pool->nkeys + 28;    /* the keys build_params adds, and NULL */
    const char **k = calloc((size_t)cap, sizeof(*k));
    const char **v = calloc((size_t)cap, sizeof(*v));
    char text[4][PGW_NUM_TEXT];
    char *opts = repl_options(pool, w);
    if (k && v) {
        /* a name's addresses: the next one first with round-robin */
        char addrs[3][PGW_BACKEND_LIST_MAX];
        struct pool_host *ph = &pool->hosts[host];
        bool named = pgw_backend_resolves(ph->be, &ph->spec) &&
                     pgw_backend_addr_lists(ph->be, pool->cursor.mode == PGW_LB_ROUND_ROBIN,
                                            addrs[0], addrs[1], addrs[2]);
        build_params(pool, ph, ps->standby_pass, w, opts, named ? addrs : NULL, k, v, text);
        srv->conn = PQconnectStartParams(k, v, 0);
        /* The server's SQLSTATE in PQerrorMessage: a refusal is read by its
         * code, whatever language the server writes (connect_failed). */
        if (srv->conn) {
            PQsetErrorVerbosity(srv->conn, PQERRORS_VERBOSE);
            PQsetNoticeReceiver(srv->conn, notice_cb, srv);
        }
    }
    free(opts);
    free(k);
    free(v);
    int fd = srv->conn ? PQsocket(srv->conn) : -1;
    if (!srv->conn || PQstatus(srv->conn) == CONNECTION_BAD || fd < 0) {
        timer_arm(srv, 0);    /* report from the loop: see server_timer_cb */
        return srv;
    }
    io_watch(srv, connect_io_cb, fd, EV_WRITE);
    if (set->cfg->server_connect_timeout > 0)
        timer_arm(srv, set->cfg->server_connect_timeout);
    return srv;
}

/* ---- raw queries: connect_query, server_reset_query, server_check_query */

static const char *job_name(enum srv_job job)
{
    switch (job) {
    case SRV_JOB_CONNECT_QUERY: return "connect_query";
    case SRV_JOB_RESET:         return "server_reset_query";
    case SRV_JOB_CLEANUP:       return "server_reset_session_state";
    case SRV_JOB_CHECK:         return "server_check_query";
    case SRV_JOB_ROLLBACK:      return "ROLLBACK";
    case SRV_JOB_NONE:          break;
    }
    return "none";
}

void pgw_server_job_cancel(struct pgw_server *srv)
{
    struct pgw_pool_set *set = srv->pool->set;
    if (srv->state == PGW_SRV_RESETTING && srv_priv(srv)->job != SRV_JOB_NONE && set->cancel_hook)
        set->cancel_hook(srv, job_name(srv_priv(srv)->job), set->cancel_hook_arg);
}

/* After connect_query: a Query reading back what it SET of the tracked
 * parameters PostgreSQL does not report (rows of name, value; job_message
 * keeps them in pool->cq_params).  A client that never set one gets that
 * value again where another client's was, not RESET's. */
static void cq_read_back(struct pgw_server *srv, struct pgw_wbuf *b)
{
    static const char head[] = "SELECT pg_catalog.lower(name), pg_catalog.current_setting(name) "
                               "FROM pg_catalog.pg_settings WHERE source = 'session' AND "
                               "pg_catalog.lower(name) IN ('extra_float_digits'";
    const char *extra = srv->pool->set->cfg->track_extra_parameters;
    char names[PGW_CONF_TRACK_EXTRA_MAX][PGW_CONF_PARAM_NAME_MAX + 1], err[8];
    int n = extra && *extra ? pgw_conf_track_extra(extra, names, err, sizeof(err)) : 0;
    size_t m = pgw_wbuf_msg_begin(b, PGW_FE_QUERY);
    pgw_wbuf_append(b, head, sizeof(head) - 1);
    for (int i = 0; i < n; i++) {          /* letters, digits, _ $ . (checked) */
        pgw_wbuf_append(b, ", '", 3);
        pgw_wbuf_append(b, names[i], strlen(names[i]));
        pgw_wbuf_append(b, "'", 1);
    }
    pgw_wbuf_append(b, ")", 2);              /* with its NUL */
    pgw_wbuf_msg_end(b, m);
}

/* A DataRow of cq_read_back's: name, value (whole, however long).  A
 * value that cannot be kept fails the login: the pool would not know
 * what a client that never set the parameter must get back. */
static int cq_row(struct pgw_server *srv, const uint8_t *p, size_t n, char *why, size_t wl)
{
    char *v[2] = {NULL, NULL};
    int rc = 0;
    if (n < 2 || pgw_get_u16(p) != 2)
        goto bad;
    p += 2;
    n -= 2;
    for (int i = 0; i < 2; i++) {
        if (n < 4)
            goto bad;
        uint32_t len = pgw_get_u32(p);
        if (len == UINT32_MAX)
            goto out;                        /* NULL: nothing to keep */
        if (len > n - 4 || memchr(p + 4, 0, len))
            goto bad;
        if (!(v[i] = malloc((size_t)len + 1))) {
            snprintf(why, wl, "out of memory for connect_query's values");
            rc = PGW_ENOMEM;
            goto out;
        }
        memcpy(v[i], p + 4, len);
        v[i][len] = 0;
        p += 4 + len;
        n -= 4 + len;
    }
    if (!pgw_params_set(&srv->pool->cq_params, v[0], v[1])) {
        char what[96];
        snprintf(what, sizeof(what), "connect_query's values (%.40s)", v[0]);
        memcpy(srv_priv(srv)->err_sqlstate,
               params_failure(&srv->pool->cq_params, why, wl, what), 6);
        rc = PGW_ENOMEM;
    }
    goto out;
bad:
    snprintf(why, wl, "connect_query's read-back sent a malformed row");
    rc = PGW_EPROTO;
out:
    free(v[0]);
    free(v[1]);
    return rc;
}

int pgw_server_job(struct pgw_server *srv, enum srv_job job, const char *sql)
{
    struct pool_server *ps = srv_priv(srv);
    /* A transaction block a client left open, noted for the jobs of a
     * release (the pool's reset_job): the job takes it back first. */
    bool rollback = (job == SRV_JOB_RESET || job == SRV_JOB_CLEANUP ||
                     job == SRV_JOB_ROLLBACK) && (srv->user_leftover & PGW_LEFTOVER_XACT);
    if (rollback)
        srv->user_leftover &= (uint8_t)~PGW_LEFTOVER_XACT;
    pgw_wbuf_reset(&ps->out);
    if (rollback)
        pgw_wire_query(&ps->out, "ROLLBACK");
    if (sql)
        pgw_wire_query(&ps->out, sql);
    if (job == SRV_JOB_CONNECT_QUERY)
        cq_read_back(srv, &ps->out);
    if (ps->out.failed)
        return PGW_ENOMEM;
    ps->job = job;
    ps->job_start = pgw_mono_now(srv->pool->set->loop);
    srv->user_unnamed = 0;               /* a simple Query drops the unnamed statement */
    ps->err_sqlstate[0] = 0;
    ps->hdr_len = 0;
    ps->body_left = ps->body_len = ps->body_got = 0;
    srv->pending_ready = (sql ? 1 : 0) + (job == SRV_JOB_CONNECT_QUERY) + (rollback ? 1 : 0);
    pgw_server_move(srv, PGW_SRV_RESETTING);
    io_watch(srv, job_io_cb, srv->fd, EV_WRITE);
    double t = srv->pool->set->cfg->server_connect_timeout;
    timer_arm(srv, t > 0 ? t : -1);
    return 0;
}

/* Must the job read this message whole, however long (job_feed)?  A
 * ParameterStatus (the server's record) and a row of connect_query's
 * read-back (cq_row): cut, the value would be lost, or wrong. */
static bool keep_whole(struct pgw_server *srv, char type)
{
    return type == PGW_BE_PARAM_STATUS ||
           (type == PGW_BE_DATA_ROW && srv_priv(srv)->job == SRV_JOB_CONNECT_QUERY &&
            srv->pending_ready == 1);
}

/* One whole message (body possibly cut to sizeof(ps->body), except those
 * keep_whole names).  Returns 0 to
 * go on, 1 when the final ReadyForQuery came, or a negative code with why. */
static int job_message(struct pgw_server *srv, char type, char *why, size_t wl)
{
    struct pool_server *ps = srv_priv(srv);
    const uint8_t *body = ps->big ? ps->big : ps->body;
    size_t kept = ps->body_got;
    bool whole = ps->body_got == ps->body_len;
    struct pgw_wire_err_fields f;

    switch (type) {
    case PGW_BE_READY:
        if (--srv->pending_ready > 0)
            return 0;
        if (kept < 1 || ps->body[0] != 'I') {
            snprintf(why, wl, "%s left the server in state '%c'", job_name(ps->job),
                     kept ? ps->body[0] : '?');
            return PGW_EPROTO;
        }
        return 1;
    case PGW_BE_ERROR:
        ps->body[kept < sizeof(ps->body) ? kept : sizeof(ps->body) - 1] = 0;
        if (pgw_wire_parse_error(ps->body, kept, &f) == 0 || !whole) {
            snprintf(why, wl, "%s failed: %s (%s)", job_name(ps->job), f.message, f.sqlstate);
            /* An ERROR is the query's answer; a FATAL or PANIC ends the
             * connection (terminated, shutting down, crashed): the
             * server's state, whatever the query was. */
            bool fatal = strcmp(f.severity, "FATAL") == 0 || strcmp(f.severity, "PANIC") == 0;
            if (!fatal && f.sqlstate && strlen(f.sqlstate) == 5)
                memcpy(ps->err_sqlstate, f.sqlstate, 6);
        } else
            snprintf(why, wl, "%s failed", job_name(ps->job));
        return PGW_EPROTO;
    case PGW_BE_PARAM_STATUS: {
        /* (job_feed kept it whole, however long) */
        const char *name = (const char *)body;
        size_t nl = strnlen(name, kept);
        if (!whole || nl + 1 >= kept || body[kept - 1] != 0) {
            snprintf(why, wl, "malformed ParameterStatus during %s", job_name(ps->job));
            return PGW_EPROTO;
        }
        if (!pgw_params_set(&srv->params, name, name + nl + 1)) {
            char what[128];
            snprintf(what, sizeof(what), "the server's parameters (%.40s, reported during %s)",
                     name, job_name(ps->job));
            memcpy(ps->err_sqlstate, params_failure(&srv->params, why, wl, what), 6);
            return PGW_ENOMEM;
        }
        return 0;
    }
    case PGW_BE_DATA_ROW:
        if (keep_whole(srv, type))
            return cq_row(srv, body, kept, why, wl);
        return 0;
    case PGW_BE_NOTICE:
    case PGW_BE_ROW_DESC:
    case PGW_BE_COMMAND_COMPLETE:
    case PGW_BE_EMPTY_QUERY:
        return 0;
    default:
        snprintf(why, wl, "unexpected message '%c' during %s",
                 type >= 0x20 && type < 0x7f ? type : '?', job_name(ps->job));
        return PGW_EPROTO;
    }
}

/* Feed received bytes to the message framer. */
static int job_feed(struct pgw_server *srv, const uint8_t *p, size_t n, char *why, size_t wl)
{
    struct pool_server *ps = srv_priv(srv);
    while (n > 0) {
        if (ps->hdr_len < PGW_MSG_HDR) {
            size_t take = PGW_MSG_HDR - ps->hdr_len;
            take = take < n ? take : n;
            memcpy(ps->hdr + ps->hdr_len, p, take);
            ps->hdr_len += (unsigned)take;
            p += take;
            n -= take;
            if (ps->hdr_len < PGW_MSG_HDR)
                return 0;
            uint32_t len = pgw_get_u32(ps->hdr + 1);
            if (len < 4 || len > (1u << 30)) {
                snprintf(why, wl, "bad message length %u during %s", len, job_name(ps->job));
                return PGW_EPROTO;
            }
            ps->body_len = ps->body_left = len - 4;
            ps->body_got = 0;
            free(ps->big);
            ps->big = NULL;
            if (ps->body_len > sizeof(ps->body) && keep_whole(srv, (char)ps->hdr[0])) {
                if (ps->body_len > PGW_JOB_BODY_MAX) {
                    snprintf(why, wl, "a '%c' message of %u bytes during %s is too long "
                             "to keep (%u at most)", (char)ps->hdr[0], ps->body_len,
                             job_name(ps->job), PGW_JOB_BODY_MAX);
                    memcpy(ps->err_sqlstate, "54000", 6);    /* pgwharf's limit */
                    return PGW_EPROTO;
                }
                if (!(ps->big = malloc(ps->body_len))) {
                    snprintf(why, wl, "out of memory for a '%c' message of %u bytes "
                             "during %s", (char)ps->hdr[0], ps->body_len, job_name(ps->job));
                    return PGW_ENOMEM;
                }
            }
        }
        size_t take = ps->body_left < n ? ps->body_left : n;
        size_t cap = ps->big ? ps->body_len : sizeof(ps->body);
        if (ps->body_got < cap) {
            size_t keep = cap - ps->body_got;
            keep = keep < take ? keep : take;
            memcpy((ps->big ? ps->big : ps->body) + ps->body_got, p, keep);
            ps->body_got += (uint32_t)keep;
        }
        ps->body_left -= (uint32_t)take;
        p += take;
        n -= take;
        if (ps->body_left > 0)
            return 0;
        ps->hdr_len = 0;
        int rc = job_message(srv, (char)ps->hdr[0], why, wl);
        free(ps->big);
        ps->big = NULL;
        if (rc != 0) {
            if (rc == 1 && (n > 0 || pgw_server_pending(srv) > 0)) {
                snprintf(why, wl, "unexpected data after %s", job_name(ps->job));
                return PGW_EPROTO;
            }
            return rc;
        }
    }
    return 0;
}

/* Write what is left of the query, then read replies until ReadyForQuery.
 * Returns 0 (waiting; watcher set), 1 (done) or a negative code with why. */
static int job_step(struct pgw_server *srv, char *why, size_t wl)
{
    struct pool_server *ps = srv_priv(srv);
    bool other = false;
    while (ps->out.len > 0) {
        ssize_t n = pgw_server_write(srv, ps->out.data, ps->out.len, &other);
        if (n == PGW_EAGAIN) {
            io_watch(srv, job_io_cb, srv->fd, other ? EV_READ : EV_WRITE);
            return 0;
        }
        if (n < 0) {
            snprintf(why, wl, "%s: %s", job_name(ps->job), pgw_strerror((int)n));
            return (int)n;
        }
        pgw_wbuf_consume(&ps->out, (size_t)n);
    }
    for (;;) {
        uint8_t buf[4096];
        ssize_t n = pgw_server_read(srv, buf, sizeof(buf), &other);
        if (n == PGW_EAGAIN) {
            io_watch(srv, job_io_cb, srv->fd, other ? EV_WRITE : EV_READ);
            return 0;
        }
        if (n <= 0) {
            snprintf(why, wl, "%s: %s", job_name(ps->job),
                     pgw_strerror(n == 0 ? PGW_ESERVER_EOF : (int)n));
            return n == 0 ? PGW_ESERVER_EOF : (int)n;
        }
        int rc = job_feed(srv, buf, (size_t)n, why, wl);
        if (rc != 0)
            return rc;
    }
}

static bool word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* Does sql hold `verb ALL` (any case, any white space between, whole
 * words)?  pgw_sql_has_all(sql, "discard"): DISCARD ALL, which must be a
 * Query of its own and takes back every leftover; with "reset" too, the
 * statements that bring every setting of the session back to its default
 * (another server_reset_query, DEALLOCATE ALL say, leaves a client's SETs
 * in place, and what the server reports after it is not the server's). */
bool pgw_sql_has_all(const char *sql, const char *verb)
{
    size_t n = strlen(verb);
    for (const char *p = sql; p && *p; p++) {
        if (strncasecmp(p, verb, n) != 0 || (p > sql && word_char(p[-1])) ||
            !isspace((unsigned char)p[n]))
            continue;
        const char *w = p + n;
        while (isspace((unsigned char)*w))
            w++;
        if (strncasecmp(w, "all", 3) == 0 && !word_char(w[3]))
            return true;
    }
    return false;
}

static bool resets_settings(const char *sql)
{
    return pgw_sql_has_all(sql, "discard") || pgw_sql_has_all(sql, "reset");
}

static void job_finished(struct pgw_server *srv)
{
    struct pgw_pool *pool = srv->pool;
    enum srv_job job = srv_priv(srv)->job;
    timer_arm(srv, -1);
    ev_io_stop(pool->set->loop, &srv->io);
    srv_priv(srv)->job = SRV_JOB_NONE;
    if (job == SRV_JOB_CONNECT_QUERY) {
        if (!take_defaults(srv)) {
            connect_failed_answered(srv, "out of memory for the pool's parameters", "53200");
            return;
        }
        login_succeeded(srv);
        return;
    }
    if (job == SRV_JOB_CHECK) {
        srv->request_time = pgw_mono_now(pool->set->loop);
        srv_priv(srv)->checked = true;
        srv_priv(srv)->doubted = false;
    }
    if (job == SRV_JOB_RESET && resets_settings(pool->set->cfg->server_reset_query))
        srv_priv(srv)->pristine = true;   /* a client's SETs are gone */
    if (pgw_pool_server_kind_changed(srv))
        pgw_server_close(srv, "its host no longer matches target_session_attrs");
    else if (server_reusable(srv))
        pgw_server_make_idle(srv);
    else
        pgw_server_close(srv, "retired after reset");
    pgw_pool_kick_related(pool);
}

static void job_failed(struct pgw_server *srv, const char *why)
{
    struct pgw_pool *pool = srv->pool;
    struct pool_server *ps = srv_priv(srv);
    if (ps->job == SRV_JOB_CONNECT_QUERY) {
        /* An error the server answered is this pool's connect_query, not
         * the backend's health: no breaker count, server_login_retry. */
        connect_failed_answered(srv, why, ps->err_sqlstate[0] ? ps->err_sqlstate : NULL);
        return;
    }
    pgw_server_close(srv, why);
    pgw_pool_kick_related(pool);
}

static void job_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgw_server *srv = pgw_container_of(w, struct pgw_server, io);
    char why[600];
    if (revents & EV_ERROR) {           /* libev could not watch the socket */
        job_failed(srv, "could not watch the connection for events");
        return;
    }
    int rc = job_step(srv, why, sizeof(why));
    if (rc == 1)
        job_finished(srv);
    else if (rc < 0) {
        /* pgwharf's own shortage (or its limit, 54000 above) is no word on
         * the backend: as a refusal of this pool's connect_query, not a
         * breaker count that failed every pool on the host (review of
         * 24f85c9). */
        if (rc == PGW_ENOMEM && !srv_priv(srv)->err_sqlstate[0])
            memcpy(srv_priv(srv)->err_sqlstate, "53200", 6);
        job_failed(srv, why);
    }
}

/* connect: a deferred libpq failure or server_connect_timeout;
 * a job: the reply took too long. */
static void server_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgw_server *srv = pgw_container_of(w, struct pgw_server, timer);
    char why[600];
    if (srv->state == PGW_SRV_CONNECTING) {
        if (!srv->conn)
            connect_failed(srv, "out of memory");
        else if (PQstatus(srv->conn) == CONNECTION_BAD)
            connect_failed(srv, PQerrorMessage(srv->conn));
        else {
            /* Which host of a list hung, as libpq names the one it could
             * not reach. */
            snprintf(why, sizeof(why), "connection to server at %s failed: "
                     "server_connect_timeout (%.1f s) expired", srv->backend->address,
                     srv->pool->set->cfg->server_connect_timeout);
            connect_failed(srv, why);
        }
        return;
    }
    if (srv->state == PGW_SRV_RESETTING) {
        enum srv_job job = srv_priv(srv)->job;
        snprintf(why, sizeof(why), "%s: no reply in time", job_name(job));
        /* A check (select 1 on an idle server) with no reply is its host
         * frozen: the host's other idle servers would fail theirs in turn.
         * A reset is no such word: DISCARD ALL waits on a lock another
         * session holds on the client's temporary table, a slow
         * server_reset_query is slow on a healthy host (hunt h1 of
         * session 48). */
        if (job == SRV_JOB_CHECK)
            pgw_pool_server_silent(srv);
        else if (job == SRV_JOB_RESET || job == SRV_JOB_CLEANUP || job == SRV_JOB_ROLLBACK)
            /* ... but a frozen host gives no reply to a reset either: its
             * other idle servers were lent unchecked (server_check_delay),
             * each client's query hanging where the entry's other host was
             * up (the reset half of 4e8134a, review r1b of session 48). */
            pgw_pool_server_doubted(srv);
        else if (job == SRV_JOB_CONNECT_QUERY) {
            /* The backend let the pool in and took its connect_query: one
             * slower than server_connect_timeout is this pool's, as one
             * that fails is (57014, the query given up on).  Taken for a
             * backend down, it was logged into again at once, each time
             * leaving a backend running it, until the breaker opened for
             * every pool on the backend. */
            memcpy(srv_priv(srv)->err_sqlstate, "57014", 6);
            srv_priv(srv)->cq_silent = true;
        }
        /* Closing the connection does not stop the query (PostgreSQL sees
         * the close only when it writes): canceled, or each login's
         * connect_query, each client's reset or each check ran on, a new
         * server logged in for the next client, backends piling up past
         * pool_size toward max_connections (review of b4e2bb4; hunt h1
         * of session 48 for the reset and the check). */
        pgw_server_job_cancel(srv);
        job_failed(srv, why);
    }
}

void pgw_pool_detach(struct pgw_server *srv)
{
    struct pool_server *ps = srv_priv(srv);
    struct pgw_pool *pool = srv->pool;
    if (srv->state != PGW_SRV_ACTIVE || srv->replication || ps->detached)
        return;
    if (ps->held) {
        ps->held = false;
        pool->n_held--;
    }
    if (pgw_list_linked(&srv->node)) {
        pgw_list_del(&srv->node);
        pool->n_active--;
    }
    ps->detached = true;
    pgw_list_append(&pool->dedicated, &srv->node);
    pool->n_dedicated++;
    pool->n_detached++;
    srv->link = NULL;
    /* The room it held in pool_size goes to the waiters now (a new login),
     * as at a release; it stays in max_db_connections and
     * max_user_connections (count_servers). */
    pgw_pool_kick_related(pool);
}

void pgw_pool_hold(struct pgw_server *srv)
{
    if (srv->state == PGW_SRV_ACTIVE && !srv_priv(srv)->held && !srv->replication) {
        srv_priv(srv)->held = true;
        srv->pool->n_held++;
    }
}
