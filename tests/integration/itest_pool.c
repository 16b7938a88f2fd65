/*
 * itest_pool.c - pool/ against the throwaway PostgreSQL of the "pg"
 * fixture (tests/pgcluster.sh; coordinates from $PGW_TEST_ENV).
 *
 * Each test builds a config with pgw_conf_load_string, a fresh loop, a
 * background ctx and a pool set, and steps the loop with a wall-time bound
 * (pgw_test_run_until) until the event it waits for.  Server connections
 * are counted both by the pool's stats and by pg_stat_activity, through a
 * separate blocking libpq connection (fine in a test); our servers carry
 * application_name=pgw_itest so they can be told apart.  Teardown destroys
 * the set and checks the process has no more fds than before the test.
 * The breaker test stops PostgreSQL and always starts it again, in the
 * test and, should the test fail half-way, in teardown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/wire.h"
#include "conf/conf.h"
#include "ctx/ctx.h"
#include "pool/pool.h"
#include "testutil.h"

#define BOUND 10.0            /* seconds of wall time: a bound, never a wait */
#define APPNAME "pgw_itest"
#define MAXCL 16

struct fx;

struct client {
    struct pgw_pool_waiter w;
    struct fx *fx;
    int id;
    bool done;
    struct pgw_server *srv;
    int err;
    struct pgw_pool_error e;  /* w.error, copied when it was valid */
    bool release_in_cb;
    struct pgw_pool_waiter *cancel_in_cb;   /* its wait to cancel from the callback */
};

struct fx {
    int fd_base;
    struct ev_loop *loop;
    struct pgw_clock clock;
    struct pgw_ctx *bg;
    struct pgw_config *cfg;
    struct pgw_pool_set *set;
    struct pgw_pool *pool;
    struct client cl[MAXCL];
    int order[MAXCL];
    int norder;
    int max_servers;          /* most servers seen at any callback */
    bool pg_stopped;
};

/* ---- environment, PostgreSQL control ---------------------------------- */

static const char *env(const char *key)
{
    const char *v = pgw_test_env(key);
    if (!v)
        fail_msg("%s missing from $PGW_TEST_ENV (is the pg fixture running?)", key);
    return v;
}

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* pg_ctl as the data directory's owner (as root: through runuser). */
static int pg_ctl(const char *action)
{
    char cmd[2048];
    struct stat st;
    const char *data = env("PGW_TEST_PGDATA");
    const char *log = pgw_test_env("PGW_TEST_PGLOG");
    char opt[1100] = "-m fast";
    if (strcmp(action, "start") == 0)
        snprintf(opt, sizeof(opt), "-l '%s'", log ? log : "/dev/null");
    if (geteuid() == 0 && stat(data, &st) == 0 && st.st_uid != 0)
        snprintf(cmd, sizeof(cmd),
                 "cd / && runuser -u \"$(stat -c %%U '%s')\" -- '%s/pg_ctl' %s -D '%s' %s "
                 "-w -t 60 </dev/null >/dev/null 2>&1",
                 data, env("PGW_TEST_PGBIN"), action, data, opt);
    else
        snprintf(cmd, sizeof(cmd), "cd / && '%s/pg_ctl' %s -D '%s' %s -w -t 60 "
                 "</dev/null >/dev/null 2>&1", env("PGW_TEST_PGBIN"), action, data, opt);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static PGconn *admin_connect(void)
{
    const char *k[] = { "host", "port", "user", "password", "dbname", NULL };
    const char *v[] = { env("PGW_TEST_PGHOST"), env("PGW_TEST_PGPORT"), env("PGW_TEST_PGUSER"),
                        env("PGW_TEST_PGPASSWORD"), "postgres", NULL };
    PGconn *c = PQconnectdbParams(k, v, 0);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("admin connection: %s", PQerrorMessage(c));
    return c;
}

static int admin_int(const char *sql)
{
    PGconn *c = admin_connect();
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    int v = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return v;
}

static int pg_count(void)
{
    return admin_int("select count(*) from pg_stat_activity where application_name = '" APPNAME
                     "'");
}

/* ---- fixture ----------------------------------------------------------- */

/* A config for the test cluster; `general` and `dbextra` add settings;
 * host and port (NULL: the cluster's) may point elsewhere. */
static struct pgw_config *make_cfg_at(const char *general, const char *host, const char *port,
                                      const char *dbextra)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "[pgwharf]\nauth_type = trust\nserver_tls_sslmode = disable\n%s\n"
             "[databases]\npgwharf = host=%s port=%s dbname=%s application_name=" APPNAME
             " %s\n",
             general, host ? host : env("PGW_TEST_PGHOST"), port ? port : env("PGW_TEST_PGPORT"),
             pgw_test_env("PGW_TEST_PGDATABASE") ? pgw_test_env("PGW_TEST_PGDATABASE")
                                                 : "postgres",
             dbextra ? dbextra : "");
    struct pgw_config *cfg = NULL;
    struct pgw_conf_diag d = { 0 };
    int rc = pgw_conf_load_string("itest.ini", text, &cfg, &d);
    for (int i = 0; i < d.nerrors; i++)
        print_error("%s\n", d.errors[i]);
    pgw_conf_diag_free(&d);
    assert_int_equal(rc, 0);
    return cfg;
}

static struct pgw_config *make_cfg(const char *general, const char *host, const char *dbextra)
{
    return make_cfg_at(general, host, NULL, dbextra);
}

/* Set, pool for (pgwharf, superuser) with the given password. */
static void fx_start(struct fx *fx, struct pgw_config *cfg, const char *password)
{
    fx->cfg = cfg;
    fx->set = pgw_pool_set_create(fx->loop, fx->bg, cfg);
    assert_non_null(fx->set);
    const struct pgw_conf_db *db = pgw_conf_find_db(cfg, "pgwharf");
    assert_non_null(db);
    fx->pool = pgw_pool_get(fx->set, db, "pgwharf", env("PGW_TEST_PGUSER"),
                            password ? password : env("PGW_TEST_PGPASSWORD"));
    assert_non_null(fx->pool);
    assert_ptr_equal(fx->pool, pgw_pool_get(fx->set, db, "pgwharf", env("PGW_TEST_PGUSER"),
                                            password ? password : env("PGW_TEST_PGPASSWORD")));
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    fx->fd_base = pgw_test_fd_count();
    fx->loop = ev_loop_new(EVFLAG_AUTO);
    pgw_clock_attach(&fx->clock, fx->loop);
    fx->bg = pgw_ctx_background(fx->loop);
    for (int i = 0; i < MAXCL; i++) {
        fx->cl[i].fx = fx;
        fx->cl[i].id = i;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    if (fx->pg_stopped && pg_ctl("start") == 0)
        fx->pg_stopped = false;
    pgw_pool_set_destroy(fx->set);
    pgw_ctx_release(fx->bg);
    ev_loop_destroy(fx->loop);
    pgw_conf_free(fx->cfg);
    int fds = pgw_test_fd_count();
    int base = fx->fd_base;
    bool stopped = fx->pg_stopped;
    free(fx);
    if (stopped)
        fail_msg("could not restart PostgreSQL");
    if (fds != base)
        fail_msg("fd leak: %d open, %d before the test", fds, base);
    return 0;
}

/* ---- clients ----------------------------------------------------------- */

static void acquired(struct pgw_pool_waiter *w, struct pgw_server *srv)
{
    struct client *c = pgw_container_of(w, struct client, w);
    struct fx *fx = c->fx;
    int n = pgw_pool_set_server_count(fx->set);
    fx->max_servers = n > fx->max_servers ? n : fx->max_servers;
    assert_false(c->done);
    c->done = true;
    c->srv = srv;
    c->err = srv ? 0 : w->error->code;
    if (!srv)
        c->e = *w->error;
    assert_true(srv == w->server);
    if (srv)
        fx->order[fx->norder++] = c->id;
    if (c->cancel_in_cb)
        pgw_pool_cancel_wait(c->cancel_in_cb);
    if (srv && c->release_in_cb) {
        c->srv = NULL;
        pgw_pool_release(srv, PGW_RELEASE_IDLE);
    }
}

static int acquire(struct fx *fx, int i, struct pgw_ctx *ctx)
{
    struct client *c = &fx->cl[i];
    c->done = false;
    c->srv = NULL;
    c->err = 0;
    int rc = pgw_pool_acquire(fx->pool, &c->w, ctx ? ctx : fx->bg, acquired, c);
    if (rc == PGW_ACQ_GRANTED) {
        c->done = true;
        c->srv = c->w.server;
        fx->order[fx->norder++] = i;
    } else if (rc < 0) {
        c->e = *pgw_pool_error_of(&c->w, rc);
    }
    return rc;
}

static void release(struct fx *fx, int i, enum pgw_release how)
{
    struct client *c = &fx->cl[i];
    assert_non_null(c->srv);
    struct pgw_server *srv = c->srv;
    c->srv = NULL;
    pgw_pool_release(srv, how);
}

static bool run_until_done(struct fx *fx, int i)
{
    return pgw_test_run_until(fx->loop, &fx->cl[i].done, BOUND);
}

/* Step the loop until pred(fx) holds or BOUND passes. */
static bool run_until_pred(struct fx *fx, bool (*pred)(struct fx *))
{
    double end = wall() + BOUND;
    bool flag = false;
    while (!(flag = pred(fx)) && wall() < end) {
        bool never = false;
        pgw_test_run_until(fx->loop, &never, 0.02);
    }
    return flag;
}

static void run_for(struct fx *fx, double seconds)
{
    bool never = false;
    pgw_test_run_until(fx->loop, &never, seconds);
}

/* ---- raw queries on a lent server (blocking with poll; test only) ------ */

static bool wait_fd(struct pgw_server *srv, short events)
{
    struct pollfd p = { .fd = srv->fd, .events = events };
    return poll(&p, 1, 5000) > 0;
}

/* Runs sql; copies the first column of the first row into val (if any).
 * Returns 0, or -1 on an ErrorResponse / I/O trouble. */
static int raw_query(struct pgw_server *srv, const char *sql, char *val, size_t vlen)
{
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_query(&b, sql);
    size_t off = 0;
    while (off < b.len) {
        bool other;
        ssize_t n = pgw_server_write(srv, b.data + off, b.len - off, &other);
        if (n == PGW_EAGAIN) {
            assert_true(wait_fd(srv, other ? POLLIN : POLLOUT));
            continue;
        }
        assert_true(n > 0);
        off += (size_t)n;
    }
    pgw_wbuf_deinit(&b);
    if (val && vlen)
        val[0] = 0;
    static uint8_t in[65536];
    size_t have = 0;
    int rc = 0;
    for (;;) {
        while (have >= 5 && have >= 1 + pgw_get_u32(in + 1)) {
            uint32_t len = pgw_get_u32(in + 1);
            char type = (char)in[0];
            if (type == 'D' && val && !val[0] && len >= 10) {
                int32_t cl = (int32_t)pgw_get_u32(in + 7);
                if (cl >= 0)
                    snprintf(val, vlen, "%.*s", cl, (const char *)in + 11);
            }
            if (type == 'E')
                rc = -1;
            memmove(in, in + 1 + len, have - 1 - len);
            have -= 1 + len;
            if (type == 'Z')
                return have == 0 ? rc : -1;
        }
        bool other;
        ssize_t n = pgw_server_read(srv, in + have, sizeof(in) - have, &other);
        if (n == PGW_EAGAIN) {
            if (!wait_fd(srv, other ? POLLOUT : POLLIN))
                return -1;
            continue;
        }
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
}

static struct pgw_pool_stats stats(struct fx *fx)
{
    struct pgw_pool_stats st;
    pgw_pool_get_stats(fx->pool, &st);
    return st;
}

/* ---- tests ------------------------------------------------------------- */

/* pool_size 2, 10 acquirers: never more than 2 servers, FIFO grants. */
static void t_size_and_fifo(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("default_pool_size = 2\n", NULL, NULL), NULL);
    for (int i = 0; i < 10; i++)
        assert_int_equal(acquire(fx, i, NULL), PGW_ACQ_QUEUED);
    assert_int_equal(fx->norder, 0);        /* no callback inside acquire */
    assert_true(run_until_done(fx, 0));
    assert_true(run_until_done(fx, 1));
    run_for(fx, 0.1);                       /* a chance to overshoot, if it would */
    assert_int_equal(fx->norder, 2);
    assert_int_equal(pgw_pool_set_server_count(fx->set), 2);
    assert_int_equal(pg_count(), 2);
    struct pgw_pool_stats st = stats(fx);
    assert_int_equal(st.sv_active, 2);
    assert_int_equal(st.cl_waiting, 8);
    assert_true(st.maxwait > 0);
    assert_int_equal(st.total_connects, 2);

    /* Release one by one: each release hands the server to the next waiter
     * at once; the later half release from inside their own callback. */
    for (int i = 5; i < 10; i++)
        fx->cl[i].release_in_cb = true;
    for (int i = 0; i < 5; i++) {
        release(fx, i, PGW_RELEASE_IDLE);
        assert_true(fx->cl[i + 2].done);
    }
    assert_int_equal(fx->norder, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(fx->order[i], i);
    assert_int_equal(fx->max_servers, 2);
    assert_int_equal(pg_count(), 2);
    st = stats(fx);
    assert_int_equal(st.total_acquires, 10);
    assert_int_equal(st.cl_waiting, 0);
    assert_int_equal(st.sv_idle, 2);
    assert_int_equal(st.total_connects, 2);

    /* An idle server is lent at once, most recently used first. */
    struct pgw_server *mru = pgw_pool_server_next(fx->pool, NULL);
    assert_int_equal(acquire(fx, 10, NULL), PGW_ACQ_GRANTED);
    assert_ptr_equal(fx->cl[10].srv, mru);
    assert_int_equal(fx->cl[10].srv->state, PGW_SRV_ACTIVE);
    assert_true(fx->cl[10].srv->backend_pid > 0);
    /* The cancel target, read at login (libpq's key, the socket's peer). */
    assert_true(fx->cl[10].srv->cancel_ok);
    assert_true(fx->cl[10].srv->cancel_addrlen > 0);
    assert_true(fx->cl[10].srv->server_version >= 90000);
    assert_non_null(pgw_params_get(&fx->cl[10].srv->params, "server_version"));
    assert_string_equal(pgw_params_get(&fx->cl[10].srv->params, "application_name"), APPNAME);
    int n = 0;
    for (struct pgw_server *s = pgw_pool_server_next(fx->pool, NULL); s;
         s = pgw_pool_server_next(fx->pool, s))
        n++;
    assert_int_equal(n, 2);
    release(fx, 10, PGW_RELEASE_IDLE);
}

/* A waiter's query_wait_timeout fires; the server goes to the next one. */
static void t_wait_timeout(void **state)
{
    struct fx *fx = *state;
    /* The first login waits without a limit (under ASan on a busy host it
     * can take longer than the deadline tested); the waits after the
     * reload have it. */
    fx_start(fx, make_cfg("default_pool_size = 1\nquery_wait_timeout = 0\n", NULL, NULL),
             NULL);
    acquire(fx, 0, NULL);
    assert_true(run_until_done(fx, 0));
    assert_non_null(fx->cl[0].srv);
    struct pgw_config *cfg2 =
        make_cfg("default_pool_size = 1\nquery_wait_timeout = 0.4\n", NULL, NULL);
    pgw_pool_set_reconfigure(fx->set, cfg2);
    pgw_conf_free(fx->cfg);
    fx->cfg = cfg2;
    assert_int_equal(acquire(fx, 1, NULL), PGW_ACQ_QUEUED);
    run_for(fx, 0.2);
    assert_int_equal(acquire(fx, 2, NULL), PGW_ACQ_QUEUED);
    assert_true(run_until_done(fx, 1));
    assert_null(fx->cl[1].srv);
    assert_int_equal(fx->cl[1].err, PGW_EDEADLINE);
    assert_string_equal(fx->cl[1].e.sqlstate, "57014");
    assert_non_null(strstr(fx->cl[1].e.message, "query_wait_timeout"));
    assert_false(fx->cl[2].done);           /* its own deadline: 0.2 s later */
    assert_int_equal(stats(fx).total_wait_timeouts, 1);
    release(fx, 0, PGW_RELEASE_IDLE);
    assert_true(fx->cl[2].done);            /* handed over in release */
    assert_non_null(fx->cl[2].srv);
    assert_int_equal(pgw_pool_set_server_count(fx->set), 1);
    release(fx, 2, PGW_RELEASE_IDLE);
}

/* Cancelling the caller's ctx removes the waiter with PGW_ECANCELED;
 * pgw_pool_cancel_wait removes one without a callback. */
static void t_cancel(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("default_pool_size = 1\n", NULL, NULL), NULL);
    acquire(fx, 0, NULL);
    assert_true(run_until_done(fx, 0));
    struct pgw_ctx *sess = pgw_ctx_with_cancel(fx->bg);
    assert_int_equal(acquire(fx, 1, sess), PGW_ACQ_QUEUED);
    assert_int_equal(acquire(fx, 2, NULL), PGW_ACQ_QUEUED);
    assert_int_equal(acquire(fx, 3, NULL), PGW_ACQ_QUEUED);
    pgw_ctx_cancel(sess);
    run_for(fx, 0.05);
    assert_true(fx->cl[1].done);
    assert_null(fx->cl[1].srv);
    assert_int_equal(fx->cl[1].err, PGW_ECANCELED);
    pgw_pool_cancel_wait(&fx->cl[2].w);
    pgw_pool_cancel_wait(&fx->cl[2].w);     /* a no-op the second time */
    assert_int_equal(stats(fx).cl_waiting, 1);
    release(fx, 0, PGW_RELEASE_IDLE);
    assert_false(fx->cl[2].done);
    assert_true(fx->cl[3].done);
    assert_non_null(fx->cl[3].srv);
    /* a ctx already done: refused at once, no callback */
    assert_int_equal(acquire(fx, 4, sess), PGW_ECANCELED);
    assert_false(fx->cl[4].done);
    pgw_ctx_release(sess);
    release(fx, 3, PGW_RELEASE_IDLE);
    assert_int_equal(pgw_pool_set_server_count(fx->set), 1);
}

static bool four_idle(struct fx *fx)
{
    struct pgw_pool_stats st = stats(fx);
    return st.sv_idle + st.sv_used == 4;
}

static bool gone_failed(struct fx *fx)
{
    return fx->cl[1].done && fx->cl[3].done;
}

/* Waiters whose client left (pgw_pool_waiter_gone) while a server was on
 * its way to each: failed with PGW_ECLIENT_EOF once none is (here: PAUSE),
 * the others kept.  Those failed are taken off the queue before the
 * first callback, which here cancels another gone waiter's wait (a
 * session closing may end another's): that one gets no callback, the
 * rest of them are failed, and the counts come back. */
static void t_gone(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("default_pool_size = 4\nserver_reset_query = DISCARD ALL\n", NULL, NULL),
             NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(acquire(fx, i, NULL), PGW_ACQ_QUEUED);
    for (int i = 0; i < 4; i++)
        assert_true(pgw_pool_waiter_server_coming(&fx->cl[i].w));
    for (int i = 1; i < 4; i++) {
        pgw_pool_waiter_gone(&fx->cl[i].w);
        pgw_pool_waiter_gone(&fx->cl[i].w);    /* once only */
    }
    fx->cl[1].cancel_in_cb = &fx->cl[2].w;
    pgw_pool_pause(fx->pool, true);
    assert_true(run_until_pred(fx, gone_failed));
    assert_int_equal(fx->cl[1].err, PGW_ECLIENT_EOF);
    assert_int_equal(fx->cl[3].err, PGW_ECLIENT_EOF);
    assert_false(fx->cl[2].done);
    assert_false(pgw_pool_waiter_queued(&fx->cl[2].w));
    assert_false(fx->cl[0].done);
    assert_int_equal(stats(fx).cl_waiting, 1);
    pgw_pool_pause(fx->pool, false);
    assert_true(run_until_done(fx, 0));
    assert_non_null(fx->cl[0].srv);
    release(fx, 0, PGW_RELEASE_IDLE);
    assert_true(run_until_pred(fx, four_idle));
    /* Gone while a server is on its way (being reset for it): served. */
    fx->cl[1].cancel_in_cb = NULL;
    assert_int_equal(acquire(fx, 1, NULL), PGW_ACQ_GRANTED);
    assert_int_equal(acquire(fx, 2, NULL), PGW_ACQ_GRANTED);
    assert_int_equal(acquire(fx, 3, NULL), PGW_ACQ_GRANTED);
    assert_int_equal(acquire(fx, 4, NULL), PGW_ACQ_GRANTED);
    assert_int_equal(acquire(fx, 5, NULL), PGW_ACQ_QUEUED);
    assert_false(pgw_pool_waiter_server_coming(&fx->cl[5].w));   /* a full pool */
    release(fx, 1, PGW_RELEASE_RESET);
    assert_true(pgw_pool_waiter_server_coming(&fx->cl[5].w));
    pgw_pool_waiter_gone(&fx->cl[5].w);
    assert_true(run_until_done(fx, 5));
    assert_non_null(fx->cl[5].srv);
    for (int i = 2; i < 6; i++)
        release(fx, i, PGW_RELEASE_IDLE);
}

static bool three_servers(struct fx *fx)
{
    return pgw_pool_set_server_count(fx->set) >= 3;
}

static bool all_idle(struct fx *fx)
{
    return stats(fx).sv_idle == pgw_pool_set_server_count(fx->set);
}

/* server_reset_query runs on a RESET release, not on an IDLE one. */
static void t_reset(void **state)
{
    struct fx *fx = *state;
    char val[128];
    fx_start(fx, make_cfg("default_pool_size = 1\nserver_reset_query = DISCARD ALL\n", NULL,
                          NULL), NULL);
    acquire(fx, 0, NULL);
    assert_true(run_until_done(fx, 0));
    struct pgw_server *srv = fx->cl[0].srv;
    int pid = srv->backend_pid;
    assert_int_equal(raw_query(srv, "SET statement_timeout = 4321", NULL, 0), 0);
    assert_int_equal(raw_query(srv, "SET application_name = 'dirty'", NULL, 0), 0);
    /* what the proxy does when it relays the ParameterStatus */
    pgw_params_set(&srv->params, "application_name", "dirty");
    release(fx, 0, PGW_RELEASE_IDLE);
    assert_int_equal(acquire(fx, 1, NULL), PGW_ACQ_GRANTED);
    assert_int_equal(raw_query(fx->cl[1].srv, "SHOW statement_timeout", val, sizeof(val)), 0);
    assert_string_equal(val, "4321ms");
    release(fx, 1, PGW_RELEASE_RESET);
    assert_int_equal(stats(fx).sv_tested, 1);
    assert_true(run_until_pred(fx, all_idle));
    assert_int_equal(acquire(fx, 2, NULL), PGW_ACQ_GRANTED);
    srv = fx->cl[2].srv;
    assert_int_equal(srv->backend_pid, pid);
    assert_int_equal(raw_query(srv, "SHOW statement_timeout", val, sizeof(val)), 0);
    assert_string_equal(val, "0");
    /* DISCARD ALL's ParameterStatus reached the server's table */
    assert_string_equal(pgw_params_get(&srv->params, "application_name"), APPNAME);
    /* a reset that fails closes the server */
    assert_int_equal(raw_query(srv, "BEGIN", NULL, 0), 0);
    release(fx, 2, PGW_RELEASE_RESET);      /* DISCARD ALL inside a txn: error */
    assert_true(run_until_pred(fx, all_idle));
    assert_int_equal(pgw_pool_set_server_count(fx->set), 0);
}

/* server_check_query runs before lending a server idle longer than
 * server_check_delay (0: always); a failing check closes the server and
 * the waiter gets a new one. */
static void t_check(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("default_pool_size = 1\nserver_check_delay = 0\n"
                          "server_check_query = select 1\n", NULL, NULL), NULL);
    acquire(fx, 0, NULL);
    assert_true(run_until_done(fx, 0));
    int pid = fx->cl[0].srv->backend_pid;
    release(fx, 0, PGW_RELEASE_IDLE);
    assert_int_equal(stats(fx).sv_used, 1);
    assert_int_equal(acquire(fx, 1, NULL), PGW_ACQ_QUEUED);
    assert_int_equal(stats(fx).sv_tested, 1);
    assert_true(run_until_done(fx, 1));
    assert_int_equal(fx->cl[1].srv->backend_pid, pid);
    release(fx, 1, PGW_RELEASE_IDLE);

    /* Now a check that fails. */
    struct pgw_config *cfg2 = make_cfg("default_pool_size = 1\nserver_check_delay = 0\n"
                                       "server_check_query = select 1/0\n", NULL, NULL);
    pgw_pool_set_reconfigure(fx->set, cfg2);
    pgw_conf_free(fx->cfg);
    fx->cfg = cfg2;
    assert_int_equal(acquire(fx, 2, NULL), PGW_ACQ_QUEUED);
    assert_true(run_until_done(fx, 2));
    assert_non_null(fx->cl[2].srv);
    assert_int_not_equal(fx->cl[2].srv->backend_pid, pid);
    assert_int_equal(stats(fx).total_connects, 2);
    release(fx, 2, PGW_RELEASE_IDLE);
}

static bool no_servers(struct fx *fx)
{
    return pgw_pool_set_server_count(fx->set) == 0;
}

/* A server killed while idle is dropped, never lent. */
static void t_terminated_idle(void **state)
{
    struct fx *fx = *state;
    char sql[128];
    fx_start(fx, make_cfg("default_pool_size = 2\n", NULL, NULL), NULL);
    acquire(fx, 0, NULL);
    assert_true(run_until_done(fx, 0));
    int pid = fx->cl[0].srv->backend_pid;
    release(fx, 0, PGW_RELEASE_IDLE);
    snprintf(sql, sizeof(sql), "select count(*) from (select pg_terminate_backend(%d)) t", pid);
    assert_int_equal(admin_int(sql), 1);
    assert_true(run_until_pred(fx, no_servers));
    assert_int_equal(acquire(fx, 1, NULL), PGW_ACQ_QUEUED);
    assert_true(run_until_done(fx, 1));
    assert_non_null(fx->cl[1].srv);
    assert_int_not_equal(fx->cl[1].srv->backend_pid, pid);
    char val[32];
    assert_int_equal(raw_query(fx->cl[1].srv, "select 42", val, sizeof(val)), 0);
    assert_string_equal(val, "42");
    release(fx, 1, PGW_RELEASE_IDLE);
}

static struct pgw_backend_info backend_info(struct fx *fx)
{
    struct pgw_backend_info info;
    struct pgw_backend *be = pgw_backend_next(fx->set, NULL);
    assert_non_null(be);
    assert_null(pgw_backend_next(fx->set, be));
    pgw_backend_get_info(be, &info);
    return info;
}

static bool breaker_closed(struct fx *fx)
{
    return backend_info(fx).state == PGW_BREAKER_CLOSED;
}

static bool tripped_twice(struct fx *fx)
{
    return backend_info(fx).trips >= 2;
}

/* PostgreSQL down: the breaker opens after breaker_threshold failures,
 * queued waiters fail with the backend's error, later acquires fail at
 * once; PostgreSQL back: a half-open probe closes it. */
static void t_breaker(void **state)
{
    struct fx *fx = *state;
    /* A cooldown of a second: the checks made while it runs must not be
     * overtaken by it on a slow (sanitized, loaded) run. */
    fx_start(fx, make_cfg("default_pool_size = 2\nbreaker_threshold = 3\n"
                          "breaker_cooldown = 1\nbreaker_max_cooldown = 3\n"
                          "query_wait_timeout = 20\n", NULL, NULL), NULL);
    acquire(fx, 0, NULL);
    assert_true(run_until_done(fx, 0));
    release(fx, 0, PGW_RELEASE_IDLE);

    fx->pg_stopped = true;
    assert_int_equal(pg_ctl("stop"), 0);
    assert_true(run_until_pred(fx, no_servers));       /* the idle one saw EOF */

    assert_int_equal(acquire(fx, 1, NULL), PGW_ACQ_QUEUED);
    assert_int_equal(acquire(fx, 2, NULL), PGW_ACQ_QUEUED);
    assert_true(run_until_done(fx, 1));
    assert_true(run_until_done(fx, 2));
    for (int i = 1; i <= 2; i++) {
        assert_null(fx->cl[i].srv);
        assert_int_equal(fx->cl[i].err, PGW_EBREAKER_OPEN);
        assert_string_equal(fx->cl[i].e.sqlstate, "08001");
        assert_non_null(strstr(fx->cl[i].e.message, "server connection failed: "));
        assert_non_null(strstr(fx->cl[i].e.message, "refused"));
    }
    struct pgw_backend_info info = backend_info(fx);
    assert_int_equal(info.state, PGW_BREAKER_OPEN);
    assert_true(info.failures >= 3);       /* attempts already out fail late */
    assert_int_equal(info.trips, 1);
    assert_true(info.next_probe > 0);
    assert_non_null(strstr(info.last_error, "refused"));
    assert_string_equal(info.last_sqlstate, "08001");
    assert_true(stats(fx).total_connect_failures >= 3);

    /* refused in acquire itself, without a turn of the loop (not after
     * query_wait_timeout, 20 s) */
    assert_int_equal(acquire(fx, 3, NULL), PGW_EBREAKER_OPEN);
    assert_false(fx->cl[3].done);
    assert_non_null(strstr(fx->cl[3].e.message, "refused"));
    assert_int_equal(stats(fx).total_breaker_rejects, 3);

    /* Still down after the cooldown: the probe fails, the cooldown doubles. */
    double first_probe = info.next_probe;
    assert_true(run_until_pred(fx, tripped_twice));
    info = backend_info(fx);
    assert_int_equal(info.trips, 2);
    assert_true(info.next_probe - first_probe >= 2.0 - 0.05);

    assert_int_equal(pg_ctl("start"), 0);
    fx->pg_stopped = false;
    assert_true(run_until_pred(fx, breaker_closed));
    assert_int_equal(backend_info(fx).failures, 0);
    int rc = acquire(fx, 4, NULL);
    if (rc == PGW_ACQ_QUEUED)
        assert_true(run_until_done(fx, 4));
    assert_non_null(fx->cl[4].srv);
    release(fx, 4, PGW_RELEASE_IDLE);
}

/* A wrong server password: 28P01 and libpq's text reach the waiter at
 * once; the pool waits server_login_retry before another login, the next
 * client gets the same error without one, and the backend's breaker stays
 * closed (the server answered: other pools on it are fine). */
static void t_bad_password(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("breaker_threshold = 1\nserver_login_retry = 30\n", NULL, NULL),
             "not-the-password");
    assert_int_equal(acquire(fx, 0, NULL), PGW_ACQ_QUEUED);
    assert_true(run_until_done(fx, 0));
    assert_null(fx->cl[0].srv);
    assert_int_equal(fx->cl[0].err, PGW_ESERVER_LOGIN);
    assert_string_equal(fx->cl[0].e.sqlstate, "28P01");
    assert_non_null(strstr(fx->cl[0].e.message, "password authentication failed"));
    assert_int_equal(acquire(fx, 1, NULL), PGW_ESERVER_LOGIN);
    assert_string_equal(fx->cl[1].e.sqlstate, "28P01");
    assert_int_equal(stats(fx).total_connect_failures, 1);
    assert_int_equal(backend_info(fx).failures, 0);
    assert_int_equal(backend_info(fx).trips, 0);
}

/* A host name is resolved off the loop and works; min_pool_size is kept
 * warm; a reconfigure applies a new size and nobody is dropped. */
static void t_hostname_min_pool_reconfigure(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("default_pool_size = 1\nmin_pool_size = 1\n", "localhost", NULL),
             NULL);
    acquire(fx, 0, NULL);
    assert_true(run_until_done(fx, 0));
    assert_non_null(fx->cl[0].srv);
    assert_int_equal(acquire(fx, 1, NULL), PGW_ACQ_QUEUED);

    /* New config, pool_size 3: the waiter gets a new server; the old
     * config is freed at once (pools keep no pointer into it). */
    struct pgw_config *cfg2 =
        make_cfg("default_pool_size = 3\nmin_pool_size = 3\n", "localhost", NULL);
    pgw_pool_set_reconfigure(fx->set, cfg2);
    pgw_conf_free(fx->cfg);
    fx->cfg = cfg2;
    assert_true(run_until_done(fx, 1));
    assert_non_null(fx->cl[1].srv);
    assert_non_null(fx->cl[0].srv);         /* nobody dropped */
    release(fx, 0, PGW_RELEASE_IDLE);
    release(fx, 1, PGW_RELEASE_IDLE);
    /* the tick warms the pool to min_pool_size */
    assert_true(run_until_pred(fx, three_servers));
    assert_int_equal(pgw_pool_set_server_count(fx->set), 3);
    assert_true(run_until_pred(fx, all_idle));
    assert_int_equal(pg_count(), 3);
}

/* A pool that cannot be made (here: a host the pool cannot hold, which
 * the config loader refuses; else out of memory) is NULL and nothing else:
 * its half-made pool was freed as if it were in the set's list (NULL
 * dereference, pgwharf crashed at the login). */
static void t_pool_get_fails_cleanly(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("", NULL, NULL), NULL);
    char host[PGW_CONF_HOST_MAX + 2];
    memset(host, 'h', sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    struct pgw_conf_db db = *pgw_conf_find_db(fx->cfg, "pgwharf");
    db.host = host;
    assert_null(pgw_pool_get(fx->set, &db, "other", env("PGW_TEST_PGUSER"), NULL));
    acquire(fx, 0, NULL);                     /* the set goes on */
    assert_true(run_until_done(fx, 0));
    assert_non_null(fx->cl[0].srv);
    release(fx, 0, PGW_RELEASE_IDLE);
}

/* Pause queues, resume serves; reconnect replaces idle servers; destroy
 * with waiters queued tells them PGW_ESHUTDOWN. */
static void t_pause_reconnect_destroy(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("default_pool_size = 1\n", NULL, NULL), NULL);
    acquire(fx, 0, NULL);
    assert_true(run_until_done(fx, 0));
    int pid = fx->cl[0].srv->backend_pid;
    release(fx, 0, PGW_RELEASE_IDLE);
    pgw_pool_pause(fx->pool, true);
    assert_int_equal(acquire(fx, 1, NULL), PGW_ACQ_QUEUED);
    run_for(fx, 0.05);
    assert_false(fx->cl[1].done);
    pgw_pool_pause(fx->pool, false);
    assert_true(fx->cl[1].done);
    assert_int_equal(fx->cl[1].srv->backend_pid, pid);
    pgw_pool_reconnect(fx->pool, true);           /* lent: closed at release */
    release(fx, 1, PGW_RELEASE_IDLE);
    assert_int_equal(pgw_pool_set_server_count(fx->set), 0);
    acquire(fx, 2, NULL);
    assert_true(run_until_done(fx, 2));
    assert_int_not_equal(fx->cl[2].srv->backend_pid, pid);
    assert_int_equal(acquire(fx, 3, NULL), PGW_ACQ_QUEUED);
    /* destroy with a server lent and a waiter queued */
    fx->cl[2].srv = NULL;
    pgw_pool_set_destroy(fx->set);
    fx->set = NULL;
    assert_true(fx->cl[3].done);
    assert_int_equal(fx->cl[3].err, PGW_ESHUTDOWN);
}

/* server_connect_rate defers connection starts (nobody refused). */
static void t_connect_rate(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("default_pool_size = 3\nserver_connect_rate = 5\n"
                          "server_connect_burst = 1\n", NULL, NULL), NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(acquire(fx, i, NULL), PGW_ACQ_QUEUED);
    /* 1 at once, then one per 0.2 s (the rate itself: unit.bucket) */
    assert_int_equal(stats(fx).sv_login, 1);
    assert_true(run_until_done(fx, 0));
    assert_false(fx->cl[2].done);          /* its start is 0.4 s away */
    for (int i = 1; i < 3; i++)
        assert_true(run_until_done(fx, i));
    for (int i = 0; i < 3; i++) {
        assert_non_null(fx->cl[i].srv);
        release(fx, i, PGW_RELEASE_IDLE);
    }
    assert_int_equal(stats(fx).total_connects, 3);
}

/* reserve_pool_size: a waiter past reserve_pool_timeout may grow the pool. */
static void t_reserve(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("default_pool_size = 1\nreserve_pool_size = 1\n"
                          "reserve_pool_timeout = 1\n", NULL, NULL), NULL);
    acquire(fx, 0, NULL);
    assert_true(run_until_done(fx, 0));
    assert_int_equal(acquire(fx, 1, NULL), PGW_ACQ_QUEUED);
    /* 0.1 s in, 0.9 s before reserve_pool_timeout: not grown yet */
    run_for(fx, 0.1);
    assert_false(fx->cl[1].done);
    assert_int_equal(pgw_pool_set_server_count(fx->set), 1);
    assert_true(run_until_done(fx, 1));
    assert_non_null(fx->cl[1].srv);
    assert_int_equal(pgw_pool_set_server_count(fx->set), 2);
    assert_int_equal(acquire(fx, 2, NULL), PGW_ACQ_QUEUED);   /* at 1 + 1 */
    release(fx, 0, PGW_RELEASE_IDLE);
    assert_true(fx->cl[2].done);
    release(fx, 1, PGW_RELEASE_IDLE);
    release(fx, 2, PGW_RELEASE_IDLE);
}

/* max_db_connections across the pools of a database: a second user's pool
 * waits, and an idle server of the first pool makes way for it. */
static void t_max_db_connections(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("default_pool_size = 2\nmax_db_connections = 1\n", NULL, NULL),
             NULL);
    const char *app = pgw_test_env("PGW_TEST_APPUSER");
    if (!app)
        skip();
    struct pgw_pool *p1 = fx->pool;
    struct pgw_pool *p2 = pgw_pool_get(fx->set, pgw_conf_find_db(fx->cfg, "pgwharf"), "pgwharf",
                                       app, env("PGW_TEST_APPPASSWORD"));
    assert_non_null(p2);
    assert_ptr_not_equal(p1, p2);
    acquire(fx, 0, NULL);
    assert_true(run_until_done(fx, 0));
    assert_int_equal(acquire(fx, 1, NULL), PGW_ACQ_QUEUED);   /* same pool: limit */
    fx->pool = p2;
    assert_int_equal(acquire(fx, 2, NULL), PGW_ACQ_QUEUED);
    run_for(fx, 0.1);
    assert_false(fx->cl[2].done);
    assert_int_equal(pgw_pool_set_server_count(fx->set), 1);
    release(fx, 0, PGW_RELEASE_IDLE);       /* p1's own waiter comes first */
    assert_true(fx->cl[1].done);
    release(fx, 1, PGW_RELEASE_IDLE);       /* now idle: evicted for p2 */
    assert_true(run_until_done(fx, 2));
    assert_non_null(fx->cl[2].srv);
    assert_int_equal(pgw_pool_set_server_count(fx->set), 1);
    assert_int_equal(pg_count(), 1);
    release(fx, 2, PGW_RELEASE_IDLE);
    int n = 0;
    for (struct pgw_pool *p = pgw_pool_next(fx->set, NULL); p; p = pgw_pool_next(fx->set, p))
        n++;
    assert_int_equal(n, 2);
}

/* server_connect_timeout: a server that never answers the startup. */
static void t_connect_timeout(void **state)
{
    struct fx *fx = *state;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(ls, 16), 0);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
    char port[16];
    snprintf(port, sizeof(port), "%d", ntohs(sa.sin_port));
    fx_start(fx, make_cfg_at("server_connect_timeout = 0.2\nbreaker_threshold = 1\n",
                             "127.0.0.1", port, NULL), NULL);
    assert_int_equal(acquire(fx, 0, NULL), PGW_ACQ_QUEUED);
    bool ok = run_until_done(fx, 0);
    close(ls);
    assert_true(ok);
    /* The timer, not another failure, ended the wait (no wall-clock check:
     * libev times it from the loop's cached now, which may precede any
     * clock the test reads). */
    assert_int_equal(fx->cl[0].err, PGW_EBREAKER_OPEN);
    assert_string_equal(fx->cl[0].e.sqlstate, "08001");
    assert_non_null(strstr(fx->cl[0].e.message, "server_connect_timeout (0.2 s) expired"));
    /* which host hung: a host list has several */
    char where[64];
    snprintf(where, sizeof(where), "connection to server at 127.0.0.1:%s failed: ", port);
    assert_non_null(strstr(fx->cl[0].e.message, where));
}

/* connect_query runs once after login.  One the server answers with an
 * error is the pool's problem, like a refused login: its waiters get the
 * server's SQLSTATE, the breaker does not count it. */
static void t_connect_query(void **state)
{
    struct fx *fx = *state;
    char val[64];
    fx_start(fx, make_cfg("", NULL, "connect_query='SET work_mem = ''7MB'''"), NULL);
    acquire(fx, 0, NULL);
    assert_true(run_until_done(fx, 0));
    assert_non_null(fx->cl[0].srv);
    assert_int_equal(raw_query(fx->cl[0].srv, "SHOW work_mem", val, sizeof(val)), 0);
    assert_string_equal(val, "7MB");
    release(fx, 0, PGW_RELEASE_IDLE);

    struct pgw_config *cfg2 = make_cfg("breaker_threshold = 1\n", NULL,
                                       "connect_query='select nosuchcolumn'");
    pgw_pool_set_reconfigure(fx->set, cfg2);
    pgw_conf_free(fx->cfg);
    fx->cfg = cfg2;
    pgw_pool_reconnect(fx->pool, true);
    acquire(fx, 1, NULL);
    assert_true(run_until_done(fx, 1));
    assert_null(fx->cl[1].srv);
    assert_int_equal(fx->cl[1].err, PGW_ESERVER_LOGIN);
    assert_string_equal(fx->cl[1].e.sqlstate, "42703");   /* undefined_column */
    assert_non_null(strstr(fx->cl[1].e.message, "connect_query failed"));
    struct pgw_backend_info info = backend_info(fx);
    assert_int_equal(info.state, PGW_BREAKER_CLOSED);
    assert_int_equal(info.failures, 0);
}

/* ---- stress: reentrant acquire/release from callbacks ------------------ */

#define SN 24                 /* clients */
#define SROUNDS 25            /* grants or failures each */

struct sclient {
    struct pgw_pool_waiter w;
    struct fx *fx;
    ev_timer hold;
    struct pgw_server *srv;
    struct pgw_ctx *ctx;      /* a short-deadline parent, sometimes */
    int rounds;
};

struct stress {
    struct sclient c[SN];
    struct pgw_server *lent[SN];
    int grants, timeouts, refused, done;
    unsigned seed;
    bool finished;
};
static struct stress *S;

static unsigned srand_next(void)
{
    S->seed = S->seed * 1103515245u + 12345u;
    return (S->seed >> 16) & 0x7fff;
}

static void s_acquire(struct sclient *c);

static void s_granted(struct sclient *c, struct pgw_server *srv)
{
    for (int i = 0; i < SN; i++)
        assert_ptr_not_equal(S->lent[i], srv);          /* never lent twice */
    assert_int_equal(srv->state, PGW_SRV_ACTIVE);
    S->lent[c - S->c] = srv;
    c->srv = srv;
    int n = pgw_pool_set_server_count(c->fx->set);
    c->fx->max_servers = n > c->fx->max_servers ? n : c->fx->max_servers;
    S->grants++;
    ev_timer_set(&c->hold, (srand_next() % 3) * 0.001, 0);
    ev_timer_start(c->fx->loop, &c->hold);
}

static void s_round_done(struct sclient *c)
{
    if (c->ctx)
        pgw_ctx_release(c->ctx);
    c->ctx = NULL;
    if (++c->rounds < SROUNDS) {
        s_acquire(c);
    } else if (++S->done == SN) {
        S->finished = true;
    }
}

static void s_cb(struct pgw_pool_waiter *w, struct pgw_server *srv)
{
    struct sclient *c = pgw_container_of(w, struct sclient, w);
    if (srv) {
        if (c->ctx)
            pgw_ctx_release(c->ctx);
        c->ctx = NULL;
        s_granted(c, srv);
        return;
    }
    assert_true(w->error->code == PGW_EDEADLINE || w->error->code == PGW_ECANCELED);
    S->timeouts++;
    s_round_done(c);          /* acquires again from inside the callback */
}

static void s_acquire(struct sclient *c)
{
    struct fx *fx = c->fx;
    struct pgw_ctx *parent = fx->bg;
    if (srand_next() % 5 == 0)
        parent = c->ctx = pgw_ctx_with_timeout(fx->bg, 0.002);
    int rc = pgw_pool_acquire(fx->pool, &c->w, parent, s_cb, c);
    if (rc == PGW_ACQ_GRANTED) {
        if (c->ctx)
            pgw_ctx_release(c->ctx);
        c->ctx = NULL;
        s_granted(c, c->w.server);
    } else if (rc < 0) {
        S->refused++;
        s_round_done(c);
    }
}

static void s_hold_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct sclient *c = pgw_container_of(t, struct sclient, hold);
    struct pgw_server *srv = c->srv;
    unsigned r = srand_next() % 20;
    c->srv = NULL;
    S->lent[c - S->c] = NULL;
    pgw_pool_release(srv, r == 0 ? PGW_RELEASE_CLOSE : r < 4 ? PGW_RELEASE_RESET
                                                              : PGW_RELEASE_IDLE);
    s_round_done(c);          /* may be handed a server at once */
}

static void t_stress(void **state)
{
    struct fx *fx = *state;
    fx_start(fx, make_cfg("default_pool_size = 3\nquery_wait_timeout = 5\n", NULL, NULL),
             NULL);
    S = calloc(1, sizeof(*S));
    S->seed = 12345;
    for (int i = 0; i < SN; i++) {
        S->c[i].fx = fx;
        ev_timer_init(&S->c[i].hold, s_hold_cb, 0, 0);
    }
    for (int i = 0; i < SN; i++)
        s_acquire(&S->c[i]);
    bool ok = pgw_test_run_until(fx->loop, &S->finished, 60.0);
    int grants = S->grants, timeouts = S->timeouts, refused = S->refused;
    for (int i = 0; i < SN; i++)
        ev_timer_stop(fx->loop, &S->c[i].hold);
    free(S);
    S = NULL;
    print_message("stress: %d grants, %d timeouts/cancels, %d refused\n", grants, timeouts,
                  refused);
    assert_true(ok);
    assert_int_equal(grants + timeouts + refused, SN * SROUNDS);
    assert_true(grants > SN * SROUNDS / 2);
    assert_int_equal(refused, 0);
    assert_true(fx->max_servers <= 3);
    assert_true(pgw_pool_set_server_count(fx->set) <= 3);
    struct pgw_pool_stats st = stats(fx);
    assert_int_equal(st.cl_waiting, 0);
    assert_int_equal(st.sv_active, 0);
    assert_int_equal((int)st.total_acquires, grants);
}

int main(void)
{
    pgw_log_set_level(PGW_LOG_WARNING);
    if (getenv("PGW_TEST_VERBOSE"))
        pgw_log_set_level(PGW_LOG_DEBUG);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_size_and_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(t_wait_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(t_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(t_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(t_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(t_check, setup, teardown),
        cmocka_unit_test_setup_teardown(t_terminated_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(t_breaker, setup, teardown),
        cmocka_unit_test_setup_teardown(t_bad_password, setup, teardown),
        cmocka_unit_test_setup_teardown(t_hostname_min_pool_reconfigure, setup, teardown),
        cmocka_unit_test_setup_teardown(t_pool_get_fails_cleanly, setup, teardown),
        cmocka_unit_test_setup_teardown(t_pause_reconnect_destroy, setup, teardown),
        cmocka_unit_test_setup_teardown(t_connect_rate, setup, teardown),
        cmocka_unit_test_setup_teardown(t_reserve, setup, teardown),
        cmocka_unit_test_setup_teardown(t_max_db_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(t_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(t_connect_query, setup, teardown),
        cmocka_unit_test_setup_teardown(t_stress, setup, teardown),
    };
    return cmocka_run_group_tests_name("itest.pool", tests, NULL, NULL);
}
