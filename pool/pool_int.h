/*
 * pool_int.h - pool/'s private structures and the functions its files share.
 * Never included outside pool/.
 *
 * Files:
 *   pool.c     pools: acquire/release, the waiter queue, lending, growing
 *   pool_conf.c  pools from the config: get/create, apply a db entry, free
 *   server.c   one server: libpq connect, raw I/O, reset/check queries,
 *              the idle watch, closing
 *   backend.c  backends: breaker and rate-limit glue, name resolution
 *   hosts.c    a host list split per host, the load_balance_hosts cursor
 *   set.c      the set: create/reconfigure/destroy, maintenance, reaping
 *   breaker.c, bucket.c, params.c   pure helpers
 *
 * Ownership: the set owns pools and backends; a pool owns its servers; a
 * closed server's memory is freed by the set's reaper after the current
 * callback (never inside its own callback).  A backend is counted (refs)
 * by each pool host naming it and each server made to it, and freed when
 * the count drops to 0 (after a reload removed its address), or once its
 * name lookup in flight returns.
 */
#ifndef PGW_POOL_POOL_INT_H
#define PGW_POOL_POOL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "common/wire.h"
#include "pool/breaker.h"
#include "pool/hosts.h"
#include "pool/pool.h"

/* How often the maintenance timer runs (idle/lifetime retirement,
 * min_pool_size, breaker probes). */
#define PGW_POOL_TICK 1.0
/* How long no server starts after pgwharf ran out of descriptors; how
 * long a host name waits for its next lookup after one that could not be
 * made (memory, a thread: backend.c's dns_retry_later). */
#define PGW_POOL_FDS_PAUSE 0.5
/* Under a shared max_db_connections / max_user_connections with more pools
 * waiting than it has servers: how much longer a pool with no server must
 * have waited than a pool with one before that one's server changes hands
 * at its release (at most a quarter of the pool's query_wait_timeout). */
#define PGW_POOL_TURN 1.0
/* The shortest turn: a login a turn taken from the other pools, however
 * short query_wait_timeout is (its quarter: 25 ms at 0.1 s, a login about
 * as often as one can finish).  Half of query_wait_timeout when that is
 * shorter still, so that a turn comes before its clients time out. */
#define PGW_POOL_TURN_MIN 0.1
/* How long a resolved host name is reused. */

/* What a server in PGW_SRV_RESETTING is doing. */
enum srv_job {
    SRV_JOB_NONE,
    SRV_JOB_CONNECT_QUERY,    /* after login, before first use */
    SRV_JOB_RESET,            /* server_reset_query after release */
    SRV_JOB_CLEANUP,          /* CLOSE ALL / DISCARD TEMP after release
                               * (server_reset_session_state) */
    SRV_JOB_CHECK,            /* server_check_query before lending */
    SRV_JOB_ROLLBACK          /* ROLLBACK alone after release
                               * (PGW_LEFTOVER_XACT) */
};

/* A server as the pool sees it: the public part plus private state. */
struct pool_server {
    struct pgw_server pub;
    enum srv_job job;
    ev_tstamp job_start;      /* when the job (connect_query, a check, a reset) was sent */
    bool probe;               /* this connect is the breaker's probe */
    bool cq_silent;           /* its connect_query got no reply in time */
    bool recheck;             /* a login to a host skipped for its kind, not yet
                               * answered (counted in backend kind_rechecks) */
    int recheck_tsa;          /* the kind it was for (its slot there) */
    /* The host's clock for that kind before the recheck moved it, and the
     * value it set: a recheck that ends with no word on the host's kind
     * (its role or database refused, or closed unanswered: no descriptor
     * for its socket) puts it back (pgw_pool_recheck_void). */
    ev_tstamp recheck_prev_at, recheck_set_at;
    /* Closed while its recheck was under way, the caller giving no
     * verdict: the reaper puts the clock back and kicks the pools that
     * waited for it (pgw_pool_recheck_reaped). */
    bool recheck_unanswered;
    int host;                 /* its index in pool->hosts at the start */
    /* target_session_attrs=prefer-standby: libpq is asked for a standby
     * (else for any server: no host of the list is known to be one) */
    bool standby_pass;
    /* The server said in_hot_standby=on at login. */
    bool login_standby;
    /* No client since its login or its server_reset_query: what it reports
     * of default_transaction_read_only is the server's default (for the
     * pool's role and database), not a client's SET. */
    bool pristine;
    bool reconnect;           /* close instead of reusing */
    bool pause_close;         /* reconnect set by PAUSE alone: RESUME undoes it,
                               * and it is no close_needed (server_fast_close) */
    const char *retire_why;   /* why, when pgw_server_retire set reconnect */
    bool checked;             /* passed server_check_query since its last lend */
    bool doubted;             /* another server of its host gave no reply to
                               * its reset: checked before it is lent */
    bool held;                /* lent for good (the LISTEN hub's): never back to the queue */
    bool detached;            /* out of every count, as a replication server
                               * (pgw_pool_detach: a LISTEN bridge's) */
    unsigned settings_gen;    /* the pool's when its login started */
    /* A replication client's server (pub.replication): the waiter it is
     * connecting for, NULL once granted or when that client left. */
    struct pgw_pool_waiter *owner;
    char err_sqlstate[6];     /* the job's ERROR (not a FATAL), "" when none */
    /* A FATAL or PANIC libpq passed to notice_cb: one that came in the
     * same read as the login's ReadyForQuery (pg_terminate_backend at
     * once), which libpq parses as an idle connection's notice.  "" when
     * none. */
    char fatal_sqlstate[6];
    char fatal_msg[256];
    /* raw query engine */
    struct pgw_wbuf out;
    uint8_t hdr[PGW_MSG_HDR];
    unsigned hdr_len;
    uint32_t body_left, body_len, body_got;
    uint8_t body[1024];       /* kept part of the current message */
    uint8_t *big;             /* the whole of a longer one job_feed must keep
                               * (keep_whole), else NULL */
};
/* The longest message a job keeps whole: a ParameterStatus or a row of
 * connect_query's read-back (PostgreSQL's values are far shorter). */
#define PGW_JOB_BODY_MAX (1u << 20)

static inline struct pool_server *srv_priv(struct pgw_server *s)
{
    return pgw_container_of(s, struct pool_server, pub);
}

/* The same for a reader that holds s const (no cast of const away). */
static inline const struct pool_server *srv_priv_const(const struct pgw_server *s)
{
    return (const struct pool_server *)(const void *)((const char *)s -
                                                      offsetof(struct pool_server, pub));
}

struct dns_req;
struct pgw_offload;

/* One server address ("host:port" of one host of a list).  Pools of
 * every entry naming it share its breaker and token bucket. */
struct pgw_backend {
    struct pgw_list node;     /* in set->backends */
    struct pgw_pool_set *set;
    int refs;                 /* pool hosts (pool->hosts[i].be) and servers
                               * (srv->backend) that point at it */
    char *address;            /* "host:port", the key */
    char *hosts;              /* the host name to resolve, NULL for an address
                               * or a socket directory */
    char *port;
    struct pgw_breaker breaker;
    struct pgw_bucket bucket;
    ev_timer wake;            /* a token is due / retry delay over */
    ev_tstamp retry_after;    /* no new connect before (breaker disabled) */
    char last_error[512];
    char last_sqlstate[6];
    /* resolved lists for libpq: host, hostaddr and port, one entry per
     * address (see backend.c) */
    char *res_host, *hostaddr, *res_port;
    ev_tstamp hostaddr_until;
    unsigned addr_turn;       /* round-robin over the addresses (pgw_backend_addr_lists) */
    struct dns_req *dns;      /* resolution in flight */
    /* The last lookup failed: no new one before dns_error_until
     * (dns_nxdomain_ttl); without addresses, logins fail with dns_error. */
    ev_tstamp dns_error_until;
    char dns_error[512];
    /* The last lookup could not be made (pgwharf short of memory or of a
     * thread, not the name's failure): none before dns_retry_at.
     * dns_retry_error says why until a lookup is answered ("" then): a
     * waiter's query_wait_timeout names it (pgw_backend_dns_retrying). */
    ev_tstamp dns_retry_at;
    char dns_retry_error[512];
    ev_tstamp dns_started;           /* when the lookup under way (dns) began */
    /* Not before this is the host, skipped by a pool for its kind (pool_host
     * skip_until), logged in to again early for that pool's waiting client
     * while no other host of its list can be tried (pool.c's recheck): one
     * such login a second on the host, however many pools name it.  0
     * again when one matched (its kind changed: the other pools' rechecks
     * go at once). */
    /* One clock per kind (target_session_attrs): a refusal for one kind
     * says nothing of another (a standby pool's refusal of a promoted host
     * is the read-write pool's match). */
    ev_tstamp kind_recheck_at[PGW_TSA_PREFER_STANDBY + 1];
    /* Such logins under way (pool_server.recheck): a client of any pool
     * skipping the host waits for their outcome rather than being refused. */
    int kind_rechecks[PGW_TSA_PREFER_STANDBY + 1];
};

/* One host of a pool's list: its backend, and what this pool gives libpq
 * for it. */
struct pool_host {
    struct pgw_backend *be;
    struct pgw_host_spec spec;
    /* The host did not match the entry's target_session_attrs: no attempt
     * on it before (not the backend's health: its breaker does not count
     * it, and other entries on it do not care).  With prefer-standby: not
     * a standby, or unreachable when asked for one; only the standby pass
     * skips it (see pgw_pool_grow). */
    ev_tstamp skip_until;
    /* Skipped for its TLS (pgw_pool_host_tls_refused), not its kind: no
     * early recheck; a reload of server_tls_* ends the skip. */
    bool tls_skip;
};

struct pgw_pool {
    struct pgw_list node;     /* in set->pools */
    struct pgw_pool_set *set;
    /* The entry's hosts (one when it names one), each with its backend;
     * cursor picks the host of each connection attempt
     * (load_balance_hosts). */
    struct pool_host *hosts;
    int nhosts;
    struct pgw_host_cursor cursor;
    enum pgw_target_session tsa;    /* the entry's, PGW_TSA_ANY when unset */
    char *dbname, *user, *password;
    bool password_looked_up;  /* password came from auth_query, not from
                               * the entry or auth_file (pgw_pool_set_password) */
    /* The user its servers log in as: the entry's user= (in vals), else
     * user.  max_user_connections counts servers by it, as PgBouncer. */
    const char *server_user;
    const struct pgw_conf_db *db_src;   /* identity only: never dereferenced
                                         * after a reconfigure */
    /* copied from the db entry (it may be freed by a reload) */
    char **keys, **vals;
    int nkeys;
    char *signature;          /* the connection keys, to see changes */
    bool db_sets_user, db_sets_password, db_sets_dbname;
    char *connect_query;
    /* What the last server to log in reported, before any client SET:
     * what a new client sees of parameters it did not set itself. */
    struct pgw_params defaults;
    /* What connect_query SET of tracked parameters the server does not
     * report (pgw_pool_cq_params), read back after it. */
    struct pgw_params cq_params;
    /* The proxy's word about defaults (pgw_pool_defaults_memo), valid
     * until they change. */
    uint32_t defaults_memo;
    bool defaults_memo_valid;
    /* Servers must reconnect (new connection keys, RECONNECT, KILL): the
     * backend may be another one, so no client is welcomed with defaults
     * until a server logs in again (pgw_pool_welcome_ready). */
    bool defaults_stale;
    /* effective settings */
    enum pgw_pool_mode mode;
    int pool_size, min_pool_size, reserve_pool_size;
    int max_db_connections, max_user_connections;
    double server_lifetime;   /* the entry's, else the general one */
    double query_wait_timeout; /* the user's, the entry's, else the general one */
    bool paused;
    bool orphan;              /* its db entry is gone from the config */
    bool autodb;              /* made from the "*" entry */
    bool expiring;            /* unused past autodb_idle_timeout: no warming */
    /* A reload set or changed its entry's user= (PgBouncer's forced user)
     * to another than this pool's: no client comes to it any more (they
     * move to the new user's pool at their next request, relay.c repool),
     * so it keeps no servers warm and goes once unused.  (The entry's own
     * pool takes the new name instead, pool_conf.c rename_forced, unless
     * a pool has it already.) */
    bool user_superseded;
    int refs;                 /* sessions holding it (pgw_pool_ref) */
    ev_tstamp last_used;      /* last tick it had clients, waiters or busy servers */
    ev_tstamp last_held;      /* last tick it had clients, waiters or any server */
    /* servers by state */
    struct pgw_list idle;     /* most recently used first */
    struct pgw_list active;
    struct pgw_list pending;  /* CONNECTING and RESETTING */
    int n_idle, n_active, n_connecting, n_resetting;
    int n_held;               /* of n_active: held for good (pgw_pool_hold) */
    ev_tstamp evicted_at;     /* its last login in another pool's room (grow) */
    /* waiters, FIFO */
    struct pgw_list waiters;
    int n_waiters;
    int n_gone;               /* of them, waiters whose client left (pgw_pool_waiter_gone) */
    uint64_t kick_mark;       /* kicked in this round of pgw_pool_kick_waiting */
    /* Replication clients (replication.c): those waiting for their own
     * server, and the servers made for them (any state).  Outside every
     * count above: no pool_size, no db/user limit, never idle. */
    struct pgw_list repl_waiters;
    struct pgw_list dedicated;
    int n_repl_waiters, n_dedicated;
    /* Of n_dedicated, LISTEN bridges (pgw_pool_detach): outside pool_size,
     * but each is a connection to PostgreSQL, so in the db/user limits
     * (count_servers), where a replication server (max_wal_senders' slot,
     * not max_connections') is not. */
    int n_detached;
    ev_timer reserve_timer;   /* the oldest waiter reaches reserve_pool_timeout */
    ev_timer turn_timer;      /* a turn ends for a login on its way (pgw_pool_grow) */
    bool dispatching, dispatch_again;
    /* The server refused this pool's login (28xxx, 3D000, 42501): no new
     * connect before login_retry_until (server_login_retry), and clients
     * with no server to wait for get login_error at once.  This pool's
     * fault, not the backend's: the breaker does not count it. */
    ev_tstamp login_retry_until;
    char *login_error;
    char login_sqlstate[6];
    /* The last login of this pool ended at once (a FATAL in the packet of
     * its ReadyForQuery, server.c login_ended), no server made idle since:
     * a second one in a row is taken as a refusal (server_login_retry). */
    bool login_ended_last;
    /* Bumped when the settings a login uses change (connection keys,
     * password, connect_query, server_tls_*): a refusal of a login started
     * before says nothing about the new ones (pool_server.settings_gen). */
    unsigned settings_gen;
    /* libpq's text of the last host found not to match
     * target_session_attrs (the reason when every host is skipped). */
    char *mismatch_error;
    /* login_error is that every host is skipped for its kind
     * (pgw_pool_host_mismatch): a recheck of one (backend kind_recheck_at)
     * lifts the block for the clients that come meanwhile. */
    bool login_kind;
    struct pgw_pool_stats st; /* counters only; gauges computed on demand */
};

struct pgw_pool_set {
    struct ev_loop *loop;
    struct pgw_pool_error error;  /* the failed waiter's (see pgw_pool_waiter) */
    struct pgw_ctx *root;
    const struct pgw_config *cfg;
    struct pgw_list pools, backends;
    struct pgw_list dead;     /* closed servers awaiting free */
    ev_timer tick;
    ev_idle reaper;
    struct pgw_offload *dns;  /* name lookups off the loop (backend.c) */
    uint64_t next_id;
    uint64_t rng;
    uint64_t kick_round;      /* pgw_pool_kick_waiting's rounds */
    bool destroying;
    bool draining;            /* a shutdown is under way: no servers kept warm */
    /* No descriptor was left for a server connection (EMFILE, ENFILE):
     * pgwharf's own shortage, not the backend's.  No server starts before
     * this (each try would fail at once, and kick the next). */
    ev_tstamp fds_short_until;
    pgw_server_free_fn free_hook;
    void *free_hook_arg;
    pgw_pool_gone_fn gone_hook;
    void *gone_hook_arg;
    pgw_server_cancel_fn cancel_hook;
    void *cancel_hook_arg;
    pgw_server_closed_fn closed_hook;
    void *closed_hook_arg;
};

/* pool.c */
int pgw_pool_total(const struct pgw_pool *pool);
/* Has pgwharf no descriptor left for one more socket (EMFILE, ENFILE)?
 * Asked after a failure whose errno is gone; any thread. */
bool pgw_pool_fds_exhausted(void);
/* pgwharf itself had no descriptor for a server of pool (server.c): its
 * waiters get 53300 unless a server of it comes back; no pool starts a
 * server for PGW_POOL_FDS_PAUSE. */
void pgw_pool_fds_short(struct pgw_pool *pool);
/* Empty server lists and waiter queue, timers initialised. */
void pgw_pool_init_queues(struct pgw_pool *pool);
/* Serve waiters from idle servers, start checks, then grow.  Reentrant. */
void pgw_pool_kick(struct pgw_pool *pool);
/* Kick the pools of set that match and have clients waiting, the one
 * whose client has waited longest first: room that opened under a shared
 * limit (a server_connect_rate token, max_db_connections,
 * max_user_connections) goes to that client, not to the pool earliest in
 * the list.  Marks them with the round it returns (kick_mark), for the
 * caller to kick others after.  Pools are not freed while kicked. */
uint64_t pgw_pool_kick_waiting(struct pgw_pool_set *set,
                               bool (*match)(const struct pgw_pool *, const void *),
                               const void *arg);
/* Every pool, those with waiters first (above): a tick, a reload. */
void pgw_pool_kick_all(struct pgw_pool_set *set);
/* May the pool open one more server now: under its pool_size, its
 * database's max_db_connections and its user's max_user_connections
 * (making no other pool's idle server go)? */
bool pgw_pool_has_room(const struct pgw_pool *pool);
/* Is the pool waiting out server_login_retry after a refused login? */
bool pgw_pool_login_blocked(const struct pgw_pool *pool);
/* A reload's server_login_retry: the pool's wait after a refused login
 * (and its hosts' skips) end within the new one from now; a nearer end
 * stays.  PgBouncer reads the key at each check, so a reload lowering it
 * lets the next client in (the breaker's wait likewise,
 * pgw_breaker_configure). */
void pgw_pool_login_retry_configure(struct pgw_pool *pool);
/* Why a server of the pool may not be kept (the pool, its database or
 * its user has more servers than a reload lowered its limit to), or NULL. */
const char *pgw_pool_over_limit(const struct pgw_pool *pool);
/* Start connections for waiters / min_pool_size as limits allow. */
void pgw_pool_grow(struct pgw_pool *pool);
/* Fail every queued waiter with err (a snapshot: waiters queued by the
 * callbacks are kept). */
void pgw_pool_fail_waiters(struct pgw_pool *pool, const struct pgw_pool_error *err);
/* query_wait_timeout changed: the queued waiters' deadlines follow. */
void pgw_pool_rewait(struct pgw_pool *pool);
/* Whether the server's refusal of a login (guessed sqlstate) is about this
 * pool's credentials or database rather than the backend. */
bool pgw_pool_login_error_is_local(const char *sqlstate);
/* A login of this pool was refused / succeeded (server.c). */
void pgw_pool_login_failed(struct pgw_pool *pool, const char *sqlstate, const char *msg);
void pgw_pool_login_ok(struct pgw_pool *pool);
/* The settings a login uses changed: a refusal of the old ones is
 * forgotten, and those of logins still under way ignored. */
void pgw_pool_settings_changed(struct pgw_pool *pool);
/* The index of be in the pool's host list, or -1. */
int pgw_pool_host_index(const struct pgw_pool *pool, const struct pgw_backend *be);
/* A host of the pool went down (its breaker opened, its name did not
 * resolve): when no host is left, the pool's waiters get the error now. */
void pgw_pool_host_down(struct pgw_pool *pool);
/* A connection to host i failed (the backend's failure, counted there):
 * with load_balance_hosts=disable the next attempt takes the next host. */
void pgw_pool_host_failed(struct pgw_pool *pool, int i, const struct pgw_backend *be);
/* Host i answered but did not match target_session_attrs: skipped for
 * server_login_retry (a second at least); when no host is left, a
 * refused login of the pool (sqlstate, msg). */
void pgw_pool_host_mismatch(struct pgw_pool *pool, int i, const struct pgw_backend *be,
                            const char *sqlstate, const char *msg);
/* Host i refused the pool's TLS (pgw_pool_refusal_is_tls) and the entry
 * lists other hosts: skipped as for a mismatch, but never rechecked before
 * server_login_retry is over (its kind is not what changed). */
void pgw_pool_host_tls_refused(struct pgw_pool *pool, int i, const struct pgw_backend *be,
                               const char *sqlstate, const char *msg);
/* prefer-standby: host i could not be reached when asked for a standby:
 * the standby pass skips it as it skips a host that is not one. */
void pgw_pool_host_no_standby(struct pgw_pool *pool, int i, const struct pgw_backend *be);
/* A login on host i (of backend be) matched target_session_attrs: the
 * host is skipped no more (a standby since promoted).  recheck: the login
 * was a recheck of the host skipped for its kind (pool_server.recheck). */
void pgw_pool_host_matched(struct pgw_pool *pool, int i, struct pgw_backend *be, bool recheck);
/* A recheck login of srv's (pool_server.recheck) has its answer or is
 * gone: no longer counted on its backend.  true when srv's login was one. */
bool pgw_pool_recheck_end(struct pgw_server *srv);
/* A recheck that said nothing of the host's kind: its clock as before it. */
void pgw_pool_recheck_void(struct pgw_server *srv);
/* srv, reaped, was closed with its recheck unanswered: recheck_void, and
 * the pools waiting for it kicked (not at the next tick). */
void pgw_pool_recheck_reaped(struct pgw_server *srv);
/* Kick the pools with clients waiting whose host list names be: a recheck
 * of it ended, whose outcome they waited for. */
void pgw_pool_kick_host_pools(struct pgw_backend *be);
/* prefer-standby: would a connection to host i ask libpq for a standby
 * (no: the host is known not to be one, for now)? */
bool pgw_pool_wants_standby(const struct pgw_pool *pool, int i);
/* Has srv's host stopped matching target_session_attrs since srv logged
 * in (a standby promoted; a primary whose sessions became read-only by
 * default), from what srv reports now?  Then the pool skips that host as
 * after a mismatch at login, closes its idle servers there and retires the
 * busy ones, and true: the caller closes srv. */
bool pgw_pool_server_kind_changed(struct pgw_server *srv);
/* srv's server_check_query or server_reset_query got no reply in time:
 * its host may be frozen.  The pool's idle servers on that host are
 * closed (each would take as long to fail its own check: a client waited
 * pool_size times server_connect_timeout, hunt) and new servers go to its
 * other hosts for server_login_retry.  The other pools' idle servers on
 * that host (another database or user on the same host:port) are checked
 * before they are lent (closed with no server_check_query). */
void pgw_pool_server_silent(struct pgw_server *srv);
/* srv's reset (or cleanup) got no reply in time: its host may be frozen,
 * or the reset waits on a lock.  Every pool's other idle servers on that
 * host are checked (server_check_query) before they are lent, whatever
 * server_check_delay: a frozen host fails the first check of each pool
 * (pgw_pool_server_silent), a healthy one passes them.  With no
 * server_check_query, pgw_pool_server_silent. */
void pgw_pool_server_doubted(struct pgw_server *srv);
void pgw_pool_free(struct pgw_pool *pool);
/* Copy what the pool needs from a db entry; true if connection keys changed. */
bool pgw_pool_apply_db(struct pgw_pool *pool, const struct pgw_conf_db *db);
void pgw_pool_retire(struct pgw_pool *pool, ev_tstamp now);
/* Pools over their db/user limits may get room when a server closes. */
void pgw_pool_kick_related(struct pgw_pool *pool);
/* "db=... user=..." for a log line, each name quoted as logfmt wants (a
 * client picks them: under "*" any database name).  buf: PGW_POOL_LOG_NAMES. */
#define PGW_POOL_LOG_NAMES 400
const char *pgw_pool_log_names(const struct pgw_pool *pool, char *buf, size_t len);

/* server.c */
/* A connection to pool->hosts[host], admitted by its backend; for a
 * replication client's waiter w (its mode and application_name), else
 * NULL. */
struct pgw_server *pgw_server_start(struct pgw_pool *pool, int host, bool probe,
                                    struct pgw_pool_waiter *w);
void pgw_server_move(struct pgw_server *srv, enum pgw_server_state st);
void pgw_server_make_idle(struct pgw_server *srv);
/* Run sql (NULL: none) on srv as job, a ROLLBACK in a Query of its own
 * ahead of it when the job is a release's and srv->user_leftover has
 * PGW_LEFTOVER_XACT (a transaction block left open: DISCARD ALL cannot
 * share a Query with it), which it takes off. */
int pgw_server_job(struct pgw_server *srv, enum srv_job job, const char *sql);
/* srv runs a job (RESETTING): the backend is sent a CancelRequest for it
 * (the set's cancel hook), as the connection about to close does not stop
 * it. */
void pgw_server_job_cancel(struct pgw_server *srv);
/* Stop watchers, PQfinish, unlink; the memory goes to the reaper. */
void pgw_server_close(struct pgw_server *srv, const char *reason);
void pgw_server_free(struct pgw_server *srv);
bool pgw_server_needs_check(const struct pgw_server *srv, ev_tstamp now);

/* backend.c */
/* The backend of spec's address, made on first use, with a reference taken
 * for the caller (pgw_backend_unref gives it back). */
struct pgw_backend *pgw_backend_get(struct pgw_pool_set *set, const struct pgw_host_spec *spec);
void pgw_backend_ref(struct pgw_backend *be);
/* The last reference gone: freed now, or when its lookup in flight returns
 * (a thread is never joined on the loop's behalf while it may still run). */
void pgw_backend_unref(struct pgw_backend *be);
void pgw_backend_configure(struct pgw_backend *be, const struct pgw_config *cfg);
/* Every connect is made differently now (server_tls_*): forget the failures
 * seen before, close the breaker. */
void pgw_backend_forget_failures(struct pgw_backend *be);
void pgw_backend_free(struct pgw_backend *be);
/* May a connection start now?  0 and *probe, or PGW_EAGAIN (a wake-up is
 * armed: DNS, token or retry delay), PGW_EBREAKER_OPEN, or
 * PGW_ESERVER_CONNECT (a failed lookup is cached).  resolve: the
 * connection needs the host name resolved (the entry gives no hostaddr). */
int pgw_backend_admit(struct pgw_backend *be, bool resolve, bool *probe);
/* An admitted connection that does not start after all: its token back,
 * its probe (probe) given up. */
void pgw_backend_unadmit(struct pgw_backend *be, bool probe);
/* Does a connection to spec need be's name resolved first? */
bool pgw_backend_resolves(const struct pgw_backend *be, const struct pgw_host_spec *spec);
#define PGW_BACKEND_LIST_MAX 2048
/* A connection's libpq host, hostaddr and port lists for be's resolved
 * name (each PGW_BACKEND_LIST_MAX bytes): with turn, starting one address
 * further than the last call's (round-robin over what DNS returned, as
 * PgBouncer uses several results), libpq trying the rest in turn after
 * it; else in DNS's order.  False when be has no addresses. */
bool pgw_backend_addr_lists(struct pgw_backend *be, bool turn, char *host, char *hostaddr,
                            char *port);
void pgw_backend_connected(struct pgw_backend *be, bool probe);
/* A connect or login of be failed: counted by its breaker.  sqlstate is
 * the one the server sent (libpq's verbose message, read before msg was
 * trimmed: in the server's language the text tells nothing), or NULL for
 * a guess from msg's English text. */
void pgw_backend_failed(struct pgw_backend *be, bool probe, const char *msg,
                        const char *sqlstate);
void pgw_backend_error(const struct pgw_backend *be, struct pgw_pool_error *err);
void pgw_backend_kick_pools(struct pgw_backend *be);
/* The set's name lookups (backend.c, on common/offload.h): made with the
 * set; destroyed after its backends, without waiting for a lookup still
 * running. */
int pgw_backend_dns_init(struct pgw_pool_set *set);
void pgw_backend_dns_deinit(struct pgw_pool_set *set);
/* A cached failed lookup (dns_nxdomain_ttl) leaves the backend without
 * addresses: true, and err says why, for a login to fail at once. */
bool pgw_backend_dns_failed(const struct pgw_backend *be, struct pgw_pool_error *err);
/* The error of its last lookup, which could not be made and is made again
 * (dns_retry_later), while it has no addresses; else NULL. */
const char *pgw_backend_dns_retrying(const struct pgw_backend *be);
void pgw_backend_tick(struct pgw_backend *be, ev_tstamp now);

/* replication.c */
/* Start servers for replication waiters that have none (from kick); with
 * may_fail, a waiter with no host left to try gets its callback. */
void pgw_pool_repl_grow(struct pgw_pool *pool, bool may_fail);
/* Its server logged in / failed to (srv->replication set).  next_host:
 * the host could not be reached or is not the kind target_session_attrs
 * asks for, so the client's other hosts may be tried.  A login started
 * before a reload changed the settings ends nothing: the client tries
 * again with the new ones. */
void pgw_pool_repl_login_done(struct pgw_server *srv);
void pgw_pool_repl_login_failed(struct pgw_server *srv, const char *sqlstate, const char *msg,
                                bool next_host);
/* Take w off the replication queue (no callback); its server, still
 * connecting, is closed. */
void pgw_pool_repl_unqueue(struct pgw_pool_waiter *w);
void pgw_pool_repl_fail_waiters(struct pgw_pool *pool, const struct pgw_pool_error *err);
/* The replication waiters with no server on its way to them. */
void pgw_pool_repl_fail_unserved(struct pgw_pool *pool, const struct pgw_pool_error *err);
/* A replication waiter's tried hosts (pgw_pool_waiter.repl_tried): the
 * words for a list of n hosts, and bit i of such a set. */
static inline int pgw_tried_words(int n)
{
    return n > 64 ? (n + 63) / 64 : 1;
}

static inline bool pgw_tried_bit(const uint64_t *t, int words, int i)
{
    return i >= 0 && i / 64 < words && (t[i / 64] >> (i % 64)) & 1;
}

static inline void pgw_tried_set(uint64_t *t, int i)
{
    t[i / 64] |= (uint64_t)1 << (i % 64);
}

/* The pool's host list becomes hosts[0 .. n) (a reload; pool->hosts is
 * still the old one): each waiter's tried hosts move with their backends. */
void pgw_pool_repl_hosts_replaced(struct pgw_pool *pool, const struct pool_host *hosts, int n);
/* pool.c helpers shared with replication.c */
const struct pgw_pool_error *pgw_pool_set_error(struct pgw_pool_error *e, int code,
                                                const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int pgw_pool_hosts_down(const struct pgw_pool *pool, struct pgw_pool_error *err);
/* pgwharf shutting down (57P01) or the pool's database gone from the
 * config on a reload (3D000): that code, w->error set; else 0. */
int pgw_pool_refuse_gone(struct pgw_pool *pool, struct pgw_pool_waiter *w);
/* Is every host of the list out for target_session_attrs (each found not
 * to match within server_login_retry)?  Then err is the refusal a normal
 * client of the pool gets (the last mismatch, as libpq said it). */
bool pgw_pool_hosts_mismatched(const struct pgw_pool *pool, struct pgw_pool_error *err);
/* The host of a connection attempt, leaving out the hosts replication
 * waiter w tried (w NULL: none): as pgw_hosts_choose. */
int pgw_pool_choose_host(struct pgw_pool *pool, const struct pgw_pool_waiter *w, bool *probe);
bool pgw_pool_host_left(const struct pgw_pool *pool, const struct pgw_pool_waiter *w);

/* set.c */
double pgw_pool_set_random(struct pgw_pool_set *set);
void pgw_pool_set_reap_later(struct pgw_pool_set *set, struct pgw_server *srv);

#endif
