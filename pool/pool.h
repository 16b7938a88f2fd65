/*
 * pool.h - server connection pools.
 *
 * A pool set belongs to one libev loop (one per worker thread later) and
 * owns every pool and backend of that loop:
 *   - struct pgw_pool: one per (database, user); lends server connections to
 *     waiters in strict FIFO order, grows on demand up to its size, keeps
 *     min_pool_size warm, retires idle/old servers, checks and resets them.
 *   - struct pgw_backend: one per server address (host:port); holds the
 *     circuit breaker and the connect-rate token bucket shared by every pool
 *     that connects there.
 *   - struct pgw_server: one libpq connection.  libpq connects and logs in
 *     asynchronously on the loop; after CONNECTION_OK the proxy relays bytes
 *     on srv->fd (through srv->ssl when TLS is on) while srv is lent.
 *
 * Lifecycle of a lent server: pgw_pool_acquire() grants it; the caller owns
 * it exclusively until pgw_pool_release().  While idle in the pool the pool
 * watches the socket, so a server that closes (or sends anything) while idle
 * is dropped.
 *
 * Every ev_tstamp here is on the loop's monotonic clock (pgw_mono_now() of
 * common/clock.h), never the wall clock: a clock step moves no deadline.
 */
#ifndef PGW_POOL_POOL_H
#define PGW_POOL_POOL_H

#include <ev.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/list.h"
#include "conf/conf.h"
#include "ctx/ctx.h"

struct pgw_pool_set;
struct pgw_pool;
struct pgw_backend;
struct pgw_server;

/* An error to show a client: SQLSTATE and a message saying why. */
struct pgw_pool_error {
    int code;                 /* PGW_E* */
    char sqlstate[6];
    char message[512];
};

/* ---- server parameters (ParameterStatus) ---- */
/* What PostgreSQL reports (13 to 16 names by version), and what pgwharf SET
 * of tracked parameters it does not report (extra_float_digits and up to
 * PGW_CONF_TRACK_EXTRA_MAX of track_extra_parameters). */
#define PGW_MAX_PARAMS 40

/* pgw_server.user_unnamed of a server whose unnamed statement pgwharf made
 * (an auth_query lookup): no client's, so the next borrower's drop it. */
#define PGW_UNNAMED_OWN UINT64_MAX
/* One name/value pair: "name\0value\0" in buf when it fits (the common
 * case: no allocation), else in heap.  Read it with pgw_param_name and
 * pgw_param_value. */
#define PGW_PARAM_INLINE 116
struct pgw_param {
    char *heap;               /* the pair when it does not fit buf, else NULL */
    uint32_t nl;              /* strlen(name) */
    char buf[PGW_PARAM_INLINE];
};
/* A table that owns memory (long pairs): zero-initialised is empty; free
 * it with pgw_params_deinit, copy it with pgw_params_copy, never by
 * assignment. */
struct pgw_params {
    struct pgw_param p[PGW_MAX_PARAMS];
    int n;
    uint32_t gen;             /* bumped by every change */
};
const char *pgw_param_name(const struct pgw_param *p);
const char *pgw_param_value(const struct pgw_param *p);
const char *pgw_params_get(const struct pgw_params *ps, const char *name);
/* Returns false when the table is full (a new name is then not stored) or
 * out of memory: the name then has no record at all (unknown), never the
 * old value.  pgw_params_full tells the two apart. */
bool pgw_params_set(struct pgw_params *ps, const char *name, const char *value);
/* After pgw_params_set returned false: true when it was the table's limit
 * (PGW_MAX_PARAMS names, pgwharf's own: 54000 program_limit_exceeded),
 * false when memory was short (53200). */
bool pgw_params_full(const struct pgw_params *ps);
/* Forget name; false when it was not there. */
bool pgw_params_unset(struct pgw_params *ps, const char *name);
/* Forget them all and free what they hold (the table is empty after). */
void pgw_params_deinit(struct pgw_params *ps);
/* dst becomes a copy of src; false (dst as it was) when out of memory. */
bool pgw_params_copy(struct pgw_params *dst, const struct pgw_params *src);

/* ---- server connections ---- */
enum pgw_server_state {
    PGW_SRV_CONNECTING,       /* libpq connect/login in progress */
    PGW_SRV_RESETTING,        /* running server_reset_query / check / connect_query */
    PGW_SRV_IDLE,             /* in the pool, ready to lend */
    PGW_SRV_ACTIVE,           /* lent to a client */
    PGW_SRV_CLOSING
};

/* Named statements per server whose words pgwharf keeps (user_stmt_hash). */
#define PGW_STMT_WORDS_MAX 16
/* SQL PREPAREs per server seen to run without those words (user_sql_plain). */
#define PGW_SQL_PLAIN_MAX 16

struct pgw_server {
    /* Read-only for users of pool.h. */
    uint64_t id;
    int fd;                   /* PQsocket() after login */
    void *ssl;                /* SSL * when the link is TLS, else NULL */
    PGconn *conn;             /* kept alive: PQfinish closes fd */
    int backend_pid;
    /* A replication client's own server (pgw_pool_acquire_replication):
     * PGW_REPL_PHYSICAL or PGW_REPL_LOGICAL, else PGW_REPL_NONE. */
    int replication;
    /* Where a CancelRequest for this backend goes, recorded at login: the
     * server socket's peer address and the backend's secret key.
     * cancel_ok is false when either could not be had. */
    struct sockaddr_storage cancel_addr;
    socklen_t cancel_addrlen;
    uint32_t cancel_key;
    bool cancel_ok;
    int server_version;
    struct pgw_params params; /* as the server reported them */
    struct pgw_pool *pool;
    struct pgw_backend *backend;
    enum pgw_server_state state;
    ev_tstamp start_time;     /* connection started */
    ev_tstamp connect_time;   /* login finished */
    ev_tstamp request_time;   /* last lend or release */
    uint64_t lend_count;
    void *link;               /* the client session while ACTIVE (proxy's) */
    /* For the borrower while lent: watchers on fd, set up once per server
     * (ev_io_set only the first time, so lending costs no epoll_ctl). */
    ev_io user_r, user_w;
    bool user_io_set;
    /* The borrower's note that params matched its summary `user_sig` when
     * params.gen was `user_sig_gen` (lets it skip comparing them). */
    uint64_t user_sig;
    uint32_t user_sig_gen;
    /* The borrower's copy of the values user_sig summarises, to confirm a
     * match (a hash can collide); freed with the server. */
    char *user_vals;
    uint32_t user_vals_len, user_vals_cap;
    void *user_state;         /* the proxy's per-server state (prepared
                               * statements); freed by the set's free hook */
    /* For the borrower: clients whose query is already sent to this server
     * behind the current borrower's (server_pipeline_depth; relay.c). */
    struct pgw_list user_queue;
    int user_queued;
    bool user_pipe_ok;        /* what the borrower sent ends at its next
                               * ReadyForQuery 'I': others may queue */
    bool user_pipe_broken;    /* it cannot pass on: close at the handoff */
    uint64_t user_unnamed;    /* the session whose unnamed statement it may
                               * hold (it outlives transactions); 0: none;
                               * PGW_UNNAMED_OWN: pgwharf's (auth_query), or
                               * not known */
    uint32_t user_unnamed_gen;    /* that session's ps_unnamed_gen when it was
                                   * Parsed: an older one of the client's is
                                   * not its statement now */
    bool user_unrep_stmt;     /* holds a named statement that may change a
                               * tracked parameter it does not report, Parsed
                               * with max_prepared_statements = 0: a Bind of
                               * any may (relay.c note_setting_words) */
    /* Named statements Parsed on it with max_prepared_statements = 0 whose
     * text says HOLD or TEMP (transaction/statement mode, relay.c
     * stmt_words_*): a hash of each name and those words (and whether it
     * PREPAREs out of sight, relay.c STMT_WORDS_HIDDEN), read at a Bind
     * of it in a later transaction (its text not at hand then).
     * user_stmt_lost: more than PGW_STMT_WORDS_MAX, or a name not read:
     * a Bind of any named statement counts, until DISCARD ALL or
     * DEALLOCATE ALL. */
    uint64_t user_stmt_hash[PGW_STMT_WORDS_MAX];
    uint8_t user_stmt_words[PGW_STMT_WORDS_MAX];
    uint8_t user_stmt_n;
    bool user_stmt_lost;
    /* SQL PREPAREs seen to run on it (their tag "PREPARE" read) whose text
     * says neither HOLD nor TEMP: a hash of each name (relay.c
     * stmt_sql_plain_*).  An SQL EXECUTE of a name neither here nor in
     * user_stmt_hash may run what a function or DO block PREPAREd out of
     * pgwharf's sight: it counts as one that may leave both.  The oldest
     * makes room past PGW_SQL_PLAIN_MAX (forgotten: its EXECUTE costs a
     * cleanup). */
    uint64_t user_sql_plain[PGW_SQL_PLAIN_MAX];
    uint8_t user_sql_plain_n, user_sql_plain_next;
    uint64_t user_listen;     /* the session that ran LISTEN on it
                               * (transaction/statement mode); 0: none */
    uint8_t user_leftover;    /* PGW_LEFTOVER_*: what a transaction may have
                               * left on it for the next client to see
                               * (transaction/statement mode, relay.c); the
                               * pool cleans it up when it is given back
                               * (server_reset_session_state) */
    int user_tail_skip;       /* replies after the last queued client's that
                               * nobody reads (clients that left) */
    double user_tail_qt;      /* their query_timeout (relay.c pipe_qt_join) */

    /* Private to pool/. */
    struct pgw_list node;     /* in the pool's idle/active/... list */
    ev_io io;
    ev_timer timer;
    ev_tstamp expire_at;      /* server_lifetime with jitter */
    double life_jitter;       /* that jitter (0.9 .. 1.1): a reload that
                               * changes server_lifetime recomputes expire_at */
    int pending_ready;        /* ReadyForQuery still expected from reset/check */
    void *rbuf;
    int close_err;
};

/* Read/write bytes on a lent server, through TLS when it has it.
 * Return bytes done (> 0), 0 on EOF (read only), PGW_EAGAIN when the socket
 * is not ready (for TLS, *want_write tells whether to wait for writability
 * instead of readability), or another negative PGW_E* code. */
ssize_t pgw_server_read(struct pgw_server *srv, void *buf, size_t n, bool *want_write);
ssize_t pgw_server_write(struct pgw_server *srv, const void *buf, size_t n, bool *want_read);
/* Bytes already decrypted and buffered inside TLS (SSL_pending), else 0. */
size_t pgw_server_pending(const struct pgw_server *srv);

/* ---- acquiring ---- */
enum pgw_acquire_result {
    PGW_ACQ_GRANTED = 1,      /* w->server is set now; no callback */
    PGW_ACQ_QUEUED = 0        /* the callback will run exactly once */
};

struct pgw_pool_waiter;
/* srv is the granted server, or NULL with w->error filled (deadline,
 * cancel, breaker open, pool closed). */
typedef void (*pgw_pool_acquire_fn)(struct pgw_pool_waiter *w, struct pgw_server *srv);

/* Embedded by the caller (the session); fields are private but for arg,
 * server and error. */
struct pgw_pool_waiter {
    void *arg;
    struct pgw_server *server;
    /* On failure: code, SQLSTATE and message, in the pool set's one error
     * slot (a waiter holds no 500-byte message while it idles or waits):
     * valid until the next failure on this loop -- read it at once, in the
     * callback or right after pgw_pool_acquire returns.  NULL otherwise. */
    const struct pgw_pool_error *error;
    /* Set by the caller before pgw_pool_acquire: the server is for a
     * login's welcome only, given back before the client's first request
     * (which takes one anew): not a server assignment (SHOW STATS'
     * server_assignment_count), as PgBouncer welcomes such a login with no
     * server linked.  Its wait still counts. */
    bool not_assigned;
    /* private */
    struct pgw_list node;
    struct pgw_pool *pool;
    pgw_pool_acquire_fn cb;
    struct pgw_ctx *ctx;      /* child of the caller's ctx with query_wait_timeout */
    struct pgw_ctx *parent;   /* the caller's ctx (outlives the wait) */
    struct pgw_ctx_sub sub;
    ev_tstamp since;
    bool gone;                /* its client left (pgw_pool_waiter_gone) */
    /* replication (pgw_pool_acquire_replication) */
    int replication;
    const char *repl_app, *repl_encoding;   /* the client's; outlive the wait */
    const char *repl_options;               /* its other parameters, as libpq's
                                               options ("-c name=value ..."), or NULL */
    struct pgw_server *repl_srv;            /* connecting for it */
    /* Hosts tried, bit i of word i / 64 for host i: repl_tried_one, or
     * a heap array for a list longer than 64 (repl_tried_words words;
     * NULL while not queued). */
    uint64_t *repl_tried;
    uint64_t repl_tried_one;
    int repl_tried_words;
    int repl_tries;                         /* attempts made */
};

/*
 * Acquire a server from pool under ctx (the session's context).
 * Returns PGW_ACQ_GRANTED (w->server set), PGW_ACQ_QUEUED (cb later, with
 * w->since set), or a negative PGW_E* code with w->error filled (breaker
 * open, ctx already done, pool closed) and no callback.
 * While queued the wait runs under a child context whose deadline is the
 * pool's query_wait_timeout; if it passes, cb gets NULL with PGW_EDEADLINE;
 * if ctx is cancelled, cb gets NULL with PGW_ECANCELED.
 * w->error on failure (code, SQLSTATE, message):
 *   PGW_EDEADLINE      57014  "query_wait_timeout: waited 2.0 s for a server in pool db/user"
 *   PGW_ECANCELED      57014  (the caller's ctx ended; the client went away)
 *   PGW_EBREAKER_OPEN  the backend's own (28P01, 53300, 3D000, 57P03, ...) guessed
 *                      from libpq's text, else 08001/08006;
 *                      "server connection failed: <libpq's message>"
 *   PGW_ESHUTDOWN      57P01  (pgw_pool_set_destroy)
 *   PGW_ENOTFOUND      3D000  (the database left the config on reload)
 *   PGW_ENOMEM         53200
 * Callbacks run from the loop (or from inside pgw_pool_release / pause /
 * reconnect / reconfigure, which may hand a server over at once), never
 * from inside pgw_pool_acquire; they may call back into the pool.
 */
/* w->error after pgw_pool_acquire returned rc < 0 (one with only the
 * code rc, should none have been set). */
const struct pgw_pool_error *pgw_pool_error_of(const struct pgw_pool_waiter *w, int rc);
int pgw_pool_acquire(struct pgw_pool *pool, struct pgw_pool_waiter *w,
                     struct pgw_ctx *ctx, pgw_pool_acquire_fn cb, void *arg);
/* Would an acquisition now get one of the pool's idle servers (at once,
 * or after a server_check_query of it): one is idle, nobody waits ahead,
 * the pool is not paused?  False when the client would wait for a login
 * or for a server another client holds. */
bool pgw_pool_idle_for_next(const struct pgw_pool *pool);
/* Leave the queue without a callback (no-op when not queued).  w must have
 * been zeroed or passed to pgw_pool_acquire() before. */
void pgw_pool_cancel_wait(struct pgw_pool_waiter *w);
/* Is w queued (its callback still to come)?  Same precondition. */
bool pgw_pool_waiter_queued(const struct pgw_pool_waiter *w);
/* Is a server on its way to queued waiter w: one connecting or being
 * checked or reset for the waiters up to it (not in a paused pool)?  Its
 * wait is then the few milliseconds of a connect or check, not a full or
 * paused pool's. */
bool pgw_pool_waiter_server_coming(const struct pgw_pool_waiter *w);
/* w's client left while a server was on its way to it (what it sent
 * before it left runs if that server comes): as soon as none is on its
 * way to w any more (the login refused, the check failed, while another
 * server of the pool is lent), w fails (PGW_ECLIENT_EOF, 08006) instead
 * of waiting for a server for nobody; no new server is opened for it.
 * Its wait ending otherwise (a timeout, a refused login, RELOAD, KILL)
 * fails it with PGW_ECLIENT_EOF too: the caller lets the client go. */
void pgw_pool_waiter_gone(struct pgw_pool_waiter *w);

/* Replication connections (PgBouncer 1.23's design): a client sending the
 * startup parameter replication gets a server of its own, connected for
 * it with the same mode (and its application_name, client_encoding, and
 * its other parameters as options, after the entry's own options), not
 * run through connect_query, checks or resets, never idle in the pool,
 * closed when given back.  Outside pool_size, max_db_connections and
 * max_user_connections (PostgreSQL bounds walsenders by max_wal_senders);
 * listed with the pool's servers (pgw_pool_server_next).  Its login
 * refused for the client's own reasons (privileges, pg_hba, 53300) goes
 * to that client only: neither the backend's breaker nor the pool's
 * server_login_retry hears of it; nor does the pool's refused login end
 * the client's wait (its server logs in otherwise).
 * Returns PGW_ACQ_QUEUED (cb later, with the server logged in or NULL and
 * w->error) or a negative code with w->error (as pgw_pool_acquire). */
enum { PGW_REPL_NONE = 0, PGW_REPL_PHYSICAL = 1, PGW_REPL_LOGICAL = 2 };
/* As SHOW CLIENTS / SERVERS name it (PgBouncer's replication column). */
static inline const char *pgw_replication_name(int mode)
{
    return mode == PGW_REPL_PHYSICAL ? "physical" : mode == PGW_REPL_LOGICAL ? "logical" : "none";
}
int pgw_pool_acquire_replication(struct pgw_pool *pool, struct pgw_pool_waiter *w,
                                 struct pgw_ctx *ctx, pgw_pool_acquire_fn cb, void *arg,
                                 int mode, const char *application_name,
                                 const char *client_encoding, const char *options);

/* pgw_server.user_leftover: what a transaction-mode client may have left on
 * its server that outlives the transaction and that another client could
 * read by name. */
#define PGW_LEFTOVER_CURSOR 0x1   /* a WITH HOLD cursor: CLOSE ALL */
#define PGW_LEFTOVER_TEMP 0x2     /* a temporary table, view, sequence or
                                   * function (pg_temp): DISCARD TEMP */
#define PGW_LEFTOVER_XACT 0x4     /* a transaction block the client left open
                                   * (pgwharf ended its COPY in it), nothing
                                   * else outstanding: ROLLBACK, in any mode
                                   * and whatever server_reset_session_state
                                   * says, before the server is reused */

enum pgw_release {
    PGW_RELEASE_IDLE,         /* clean: transaction idle, nothing outstanding */
    PGW_RELEASE_RESET,        /* clean, but run server_reset_query first */
    PGW_RELEASE_CLOSE         /* dirty or broken: close it, never reuse */
};
/* Give a lent server back.  The caller must not touch srv afterwards and
 * must have stopped its own watchers on srv->fd. */
void pgw_pool_release(struct pgw_server *srv, enum pgw_release how);
/* srv, lent to the caller, is closed when given back instead of going back
 * to the pool (why: the reason logged then, a static string). */
void pgw_server_retire(struct pgw_server *srv, const char *why);

/* Pipelining (the proxy's server_pipeline_depth).
 * pick: when the pool has no idle server, no room to grow
 * (reserve_pool_size included), no waiter and is not paused, the lent
 * server with the lowest score(srv, arg) >= 0 (a negative score rules a
 * server out), else NULL (servers due to close at their release are never
 * picked).
 * waiter: the first waiter in the pool, when it waits with callback cb
 * (the caller's clients: auth_query lookups wait too), which the caller
 * may queue on srv (a lent server) instead, in order; NULL when there is
 * none, or the pool is paused or going, has an idle server or room to grow
 * (reserve included), has no more waiters than servers connecting or
 * being reset, or srv closes at its release.
 * take: that waiter leaves the pool's queue (no callback); its wait is
 * not counted yet (assigned does).
 * handoff: the lent server passes straight to the next borrower (a server
 * due to close closes at its last release); false when it is not lent any
 * more.
 * assigned: the server gets to the query of a client queued on it: one
 * assignment and its wait (`waited` seconds, in the pool's queue
 * included) in the pool's counters, as a lend after a wait in the queue
 * counts (SHOW STATS); a queued client that fails or leaves first counts
 * as neither, as one that leaves the queue. */
struct pgw_server *pgw_pool_pipeline_pick(struct pgw_pool *pool,
                                          int (*score)(struct pgw_server *, void *), void *arg);
struct pgw_pool_waiter *pgw_pool_pipeline_waiter(struct pgw_server *srv, pgw_pool_acquire_fn cb);
void pgw_pool_take_waiter(struct pgw_pool_waiter *w);
bool pgw_pool_handoff(struct pgw_server *srv);
void pgw_pool_pipeline_assigned(struct pgw_pool *pool, double waited);

/* ---- pools ---- */
struct pgw_pool_stats {
    int cl_active;            /* clients holding a server */
    int cl_waiting;
    int sv_active, sv_idle, sv_used, sv_tested, sv_login;
    int sv_detached;          /* servers pgw_pool_detach took out of those
                               * (the proxy's LISTEN bridges) */
    ev_tstamp maxwait;        /* longest current wait, seconds */
    uint64_t total_acquires;
    uint64_t total_wait_us;
    uint64_t total_wait_timeouts;
    uint64_t total_connects;
    uint64_t total_connect_failures;
    uint64_t total_breaker_rejects;
    /* settings in force (for SHOW POOLS) */
    int pool_size, min_pool_size, reserve_pool_size;
    bool paused;
};

/* Create or find the pool for (db entry, client-facing database name, user);
 * the user is the entry's user= when it sets one (PgBouncer's forced user:
 * one pool for all its clients).
 * password: for the server login when the db entry's conninfo has none
 * (from auth_file), may be NULL; an existing pool takes it as
 * pgw_pool_set_password(looked_up false) does.  Returns NULL on allocation
 * failure. */
struct pgw_pool *pgw_pool_get(struct pgw_pool_set *set, const struct pgw_conf_db *db,
                              const char *dbname, const char *user, const char *password);
/* The password for the server login when the entry has none.  From the
 * config (looked_up false: the entry's password= or auth_file, NULL when
 * they give none, which a reload may make so) or from auth_query's answer
 * (looked_up true), which a NULL from the config does not clear: the config
 * never had it.  A change forgets a login refusal (pgw_pool_settings_changed). */
void pgw_pool_set_password(struct pgw_pool *pool, const char *password, bool looked_up);
const char *pgw_pool_dbname(const struct pgw_pool *pool);
/* srv's connection was lost (EOF, an error, the server's FATAL): when
 * no other server of its pool that logged in before is left, PostgreSQL
 * may have restarted with other settings (ALTER SYSTEM): new clients are
 * welcomed once a server has logged in again, not with the pool's record
 * (as after RECONNECT).  One lost among others (idle_session_timeout, a
 * backend killed) leaves the record. */
void pgw_pool_server_lost(struct pgw_server *srv);
/* The parameters a fresh server of the pool reports (see pool->defaults). */
const struct pgw_params *pgw_pool_defaults(const struct pgw_pool *pool);
/* What the pool's connect_query SET of the tracked parameters PostgreSQL
 * does not report (extra_float_digits, track_extra_parameters' such as
 * search_path): a fresh server's values of them, where it has no other
 * than its default (RESET). */
const struct pgw_params *pgw_pool_cq_params(const struct pgw_pool *pool);
/* A word the proxy keeps with the pool, worked out from its defaults
 * (which tracked parameters a fresh server does not report): false when
 * none is kept or the defaults changed since it was set. */
bool pgw_pool_defaults_memo(const struct pgw_pool *pool, uint32_t *memo);
void pgw_pool_set_defaults_memo(struct pgw_pool *pool, uint32_t memo);
/* May a new client be welcomed with pgw_pool_defaults, before it has a
 * server?  Once a server of the pool has logged in (since the last
 * pgw_pool_reconnect with new_setup), and only while nothing
 * would refuse the client a server: not shutting down, still configured,
 * no breaker blocking the backend, no server login refusal pending. */
bool pgw_pool_welcome_ready(const struct pgw_pool *pool);
const char *pgw_pool_user(const struct pgw_pool *pool);
/* The user its servers log in as: the database entry's user=, else
 * pgw_pool_user.  max_user_connections counts servers by this user (the
 * [users] entry of this name sets it), as PgBouncer does. */
const char *pgw_pool_server_user(const struct pgw_pool *pool);
enum pgw_pool_mode pgw_pool_mode(const struct pgw_pool *pool);
/* The pool's query_wait_timeout in seconds, 0 for none. */
double pgw_pool_query_wait_timeout(const struct pgw_pool *pool);
/* A client that began to wait for a server at since ran out of
 * query_wait_timeout outside the pool's queue (server_pipeline_depth: its
 * server still runs the query of a client that left): counted and logged
 * as a wait in the queue is; e gets the error it shows. */
void pgw_pool_wait_timed_out(struct pgw_pool *pool, ev_tstamp since, struct pgw_pool_error *e);
/* Close the pool's idle servers, and those a job other than server_reset_query
 * takes back to idle when it ends (the lent ones stay). */
void pgw_pool_close_idle(struct pgw_pool *pool);
/* How the pool uses its entry's host list (load_balance_hosts), NULL when
 * the entry names one host (SHOW POOLS, as PgBouncer). */
const char *pgw_pool_load_balance(const struct pgw_pool *pool);
void pgw_pool_get_stats(const struct pgw_pool *pool, struct pgw_pool_stats *st);
/* Pause: lend nothing (waiters queue) until resumed. */
void pgw_pool_pause(struct pgw_pool *pool, bool paused);
bool pgw_pool_paused(const struct pgw_pool *pool);
/* A session holds the pool from its login to its free: a pool of the "*"
 * entry (or of an entry a reload removed) is freed only when nothing holds
 * it, nobody waits and no server is busy (set.c expire_pools). */
void pgw_pool_ref(struct pgw_pool *pool);
void pgw_pool_unref(struct pgw_pool *pool);
/* Close every idle server and mark active ones to be closed at release.
 * new_setup: the servers may come back different (new connection keys,
 * RECONNECT, KILL), so new clients are welcomed by a server, not by
 * pgw_pool_defaults, until one has logged in again (PAUSE keeps them:
 * clients log in while it lasts). */
void pgw_pool_reconnect(struct pgw_pool *pool, bool new_setup);
/* KILL: pgw_pool_reconnect with new_setup, and the servers running a
 * query of the pool's (server_reset_query, a check) closed now, the query
 * cancelled on the server through the set's cancel hook. */
void pgw_pool_kill(struct pgw_pool *pool);
/* PAUSE: close every idle server, and lent ones when they come back, as
 * pgw_pool_reconnect without new_setup; but resuming the pool
 * (pgw_pool_pause false) keeps the lent ones that have not come back, and
 * they are no pgw_server_close_needed meanwhile (as PgBouncer's PAUSE,
 * which sets no close_needed: server_fast_close must not end their
 * sessions). */
void pgw_pool_close_for_pause(struct pgw_pool *pool);
/* Is srv to be closed when it comes back (RECONNECT, a reload that changed
 * its connection settings, KILL)?  server_fast_close acts on it. */
bool pgw_server_close_needed(const struct pgw_server *srv);
/* The socket srv uses now (libpq's while it connects: it may change
 * during the login), or -1. */
int pgw_server_socket(const struct pgw_server *srv);
/* Will srv be closed when it comes back, for any of those or PAUSE? */
bool pgw_server_closing(const struct pgw_server *srv);
/* Is srv idle and due for server_check_query before its next lend
 * (PgBouncer's "used": SHOW POOLS sv_used, SHOW SERVERS used)? */
bool pgw_server_used(const struct pgw_server *srv);

/* Iterate pools: pass NULL first. */
struct pgw_pool *pgw_pool_next(struct pgw_pool_set *set, struct pgw_pool *prev);
/* Iterate servers of a pool (any state): pass NULL first. */
struct pgw_server *pgw_pool_server_next(struct pgw_pool *pool, struct pgw_server *prev);

/* ---- backends and circuit breakers ---- */
enum pgw_breaker_state { PGW_BREAKER_CLOSED, PGW_BREAKER_OPEN, PGW_BREAKER_HALF_OPEN };
const char *pgw_breaker_state_name(enum pgw_breaker_state s);

struct pgw_backend_info {
    const char *address;      /* "host:port" */
    enum pgw_breaker_state state;
    int failures;             /* consecutive */
    uint64_t trips;
    ev_tstamp next_probe;     /* 0 when not open */
    const char *last_error;   /* "" when none */
    const char *last_sqlstate;
    /* DNS (SHOW DNS_HOSTS): the host name pgwharf looked up (NULL for an
     * address, a socket directory, a name given with its hostaddr, and
     * before the first lookup), its addresses as libpq gets them
     * (comma-separated; NULL before the first answer) and until when they
     * are used; when the next lookup is due (the addresses' end, or a
     * failed lookup's dns_nxdomain_ttl, whichever is later; 0 before the
     * first answer or failure); a lookup is in flight. */
    const char *hostname, *addrs;
    ev_tstamp addrs_until, lookup_due;
    bool resolving;
};
/* Iterate backends: pass NULL first. */
struct pgw_backend *pgw_backend_next(struct pgw_pool_set *set, struct pgw_backend *prev);
void pgw_backend_get_info(const struct pgw_backend *be, struct pgw_backend_info *info);

/* ---- the set ---- */
struct pgw_pool_set *pgw_pool_set_create(struct ev_loop *loop, struct pgw_ctx *root,
                                         const struct pgw_config *cfg);
/* Apply a reloaded config: new sizes and timeouts take effect; nobody is
 * dropped.  cfg must outlive the set or the next reconfigure. */
void pgw_pool_set_reconfigure(struct pgw_pool_set *set, const struct pgw_config *cfg);
/* Called once for each server as it is freed, so the owner of
 * srv->user_state can free it.  NULL = none. */
typedef void (*pgw_server_free_fn)(struct pgw_server *srv, void *arg);
void pgw_pool_set_free_hook(struct pgw_pool_set *set, pgw_server_free_fn fn, void *arg);
/* Called with a pool about to be freed while the loop runs (unused pools of
 * "*" or of a removed entry): its counters can be kept (admin stats). */
typedef void (*pgw_pool_gone_fn)(const struct pgw_pool *pool, void *arg);
void pgw_pool_set_gone_hook(struct pgw_pool_set *set, pgw_pool_gone_fn fn, void *arg);
/* Called for a server about to be closed while the backend still runs a
 * query the pool sent (connect_query, server_reset_query,
 * server_reset_session_state's or server_check_query past
 * server_connect_timeout, or a reset a KILL gives up on): the owner sends
 * the backend a CancelRequest, or the query runs on with no one to read
 * it.  what names the query.  NULL = none. */
typedef void (*pgw_server_cancel_fn)(const struct pgw_server *srv, const char *what, void *arg);
void pgw_pool_set_cancel_hook(struct pgw_pool_set *set, pgw_server_cancel_fn fn, void *arg);
/* Called for each server as it closes (it has left its pool's lists; it is
 * freed later), so that whoever waits for it to be gone (the console's
 * PAUSE and WAIT_CLOSE) can answer in the next loop turn.  NULL = none. */
typedef void (*pgw_server_closed_fn)(const struct pgw_server *srv, void *arg);
void pgw_pool_set_closed_hook(struct pgw_pool_set *set, pgw_server_closed_fn fn, void *arg);
/* A shutdown is under way: min_pool_size opens no more servers (clients
 * still served get them as before). */
void pgw_pool_set_drain(struct pgw_pool_set *set);
/* Number of servers in all pools (any state) -- for shutdown and tests. */
int pgw_pool_set_server_count(const struct pgw_pool_set *set);
/* Cancel every waiter (callback with PGW_ESHUTDOWN, SQLSTATE 57P01), close
 * every server (PQfinish; lent ones too, so release or forget them first),
 * free everything.  Not from inside a pool callback. */
void pgw_pool_set_destroy(struct pgw_pool_set *set);

/* srv, lent, never comes back to the pool's queue (the LISTEN hub's):
 * waiters do not wait for it. */
void pgw_pool_hold(struct pgw_server *srv);
/* srv, lent, leaves its pool's pool_size and SHOW POOLS' sv_* for the
 * rest of its life, as a replication server: the room it held in
 * pool_size goes to the waiters at once (a new login).  Unlike a
 * replication server it stays in max_db_connections and
 * max_user_connections: it is one more connection to PostgreSQL (ask
 * pgw_pool_limits_room first).  Its borrower keeps it (a LISTEN bridge,
 * proxy/notify_bridge.c) and gives it back with pgw_pool_release, which
 * closes it (why: pgw_server_retire's, when set).  It is listed with the
 * pool's servers (pgw_pool_server_next), lent to no client. */
void pgw_pool_detach(struct pgw_server *srv);
/* Is there room for one more server of the pool's database and user
 * under max_db_connections and max_user_connections (pool_size aside)? */
bool pgw_pool_limits_room(const struct pgw_pool *pool);

/* Does sql hold `verb ALL` (any case, any white space between, whole
 * words)?  ("discard": DISCARD ALL; "deallocate": DEALLOCATE ALL.) */
bool pgw_sql_has_all(const char *sql, const char *verb);

#endif
