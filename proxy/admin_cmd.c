/*
 * admin_cmd.c - the admin console's commands that change things: PAUSE,
 * RESUME, DISABLE, ENABLE, KILL, KILL_CLIENT, RECONNECT, WAIT_CLOSE,
 * RELOAD, SET, SHUTDOWN.
 *
 * KILL closes the database's clients and servers and leaves it paused, as
 * PgBouncer's does.
 *
 * PAUSE works as PgBouncer's: the pools stop lending (new transactions
 * wait in the queue, under query_wait_timeout), their servers are closed
 * (idle ones now, lent ones when they come back, as RECONNECT does) and the
 * reply waits until they are all gone -- unless other commands follow in
 * the same query, when it answers at once.  A cancel of the waiting
 * console undoes it (57014); a RESUME that undoes it fails it (57014).
 *
 * Differences from PgBouncer, kept on purpose (simpler, and what a pooler
 * with a FIFO pool queue needs):
 *   - WAIT_CLOSE waits for the servers RECONNECT, KILL or PAUSE marked (those
 *     that existed then) to be closed; without such marks it answers at once,
 *     also after a RELOAD that changed a database (the pool closes those
 *     servers on release by itself).
 *   - SET changes the one key of a copy of the running config (the file is
 *     not read: its [databases]/[users]/[peers] as they run too) and
 *     applies the result as a reload would.  The change lasts until the
 *     next RELOAD/SIGHUP, which reads the file.
 */
#include "proxy/admin_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/array.h"
#include "common/err.h"
#include "common/log.h"
#include "proxy/authquery.h"

/* A name for a log line, quoted as logfmt wants (a console user or an
 * argument may hold spaces, quotes, '='); the buffer lives as long as the
 * enclosing block. */
#define LQ(v) pgw_log_quote((char[300]){ 0 }, 300, (v))

/* The console's own name (as session.c decides: "pgwharf" and "pgbouncer"
 * unless [databases] defines a database of exactly that name). */
static bool is_admin_db(const struct pgw_proxy *px, const char *db)
{
    if (strcmp(db, "pgwharf") != 0 && strcmp(db, "pgbouncer") != 0)
        return false;
    const struct pgw_conf_db *d = pgw_conf_find_db(px->cfg, db);
    return !d || strcmp(d->name, db) != 0;
}

static bool pool_matches(struct pgw_pool *p, const char *db)
{
    return !*db || strcmp(pgw_pool_dbname(p), db) == 0;
}

/* A database name as an argument: known to the config (or "*") or to a
 * pool, and not the console itself.  Writes the error otherwise. */
static int check_db(struct pgw_proxy *px, const char *verb, const char *db, struct pgw_wbuf *out)
{
    if (is_admin_db(px, db))
        return pgw_admin_error(out, "55000", "cannot %s admin db: %s", verb, db);
    /* The fallback entry is found under any name, its own too, and acts on
     * no pool: PAUSE "*" would answer PAUSE and pause nothing. */
    if (strcmp(db, "*") == 0)
        return pgw_admin_error(out, "3D000", "no such database: * (the [databases] fallback "
                               "entry is not a database)");
    if (pgw_conf_find_db(px->cfg, db))
        return 0;
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p))
        if (strcmp(pgw_pool_dbname(p), db) == 0)
            return 0;
    return pgw_admin_error(out, "3D000", "no such database: %s", db);
}

static int done(struct pgw_wbuf *out, const char *tag)
{
    pgw_wire_command_complete(out, tag);
    return PGW_ADMIN_DONE;
}

static void reconnect_pools(struct pgw_proxy *px, const char *db, bool pause, bool kill);
static void prune_marks(struct pgw_proxy *px);
static bool has_marks(const struct pgw_admin *adm, const char *db);

/* Reply later, once the servers RECONNECT, KILL or PAUSE marked (of db, or
 * of all when "") are closed; at once when there are none. */
static int reply_when_closed(struct pgw_session *s, const char *db, bool pause, bool undo,
                             struct pgw_wbuf *out)
{
    struct pgw_proxy *px = s->px;
    struct pgw_admin *adm = px->admin;
    prune_marks(px);
    if (!has_marks(adm, db))
        return done(out, pause ? "PAUSE" : "WAIT_CLOSE");
    s->admin_waiting = true;
    s->admin_wait_pause = pause;
    s->admin_wait_undo = undo;
    snprintf(s->admin_wait_db, sizeof(s->admin_wait_db), "%s", db);
    if (!ev_is_active(&adm->wait_timer)) {
        ev_timer_set(&adm->wait_timer, PGW_ADMIN_WAIT_TICK, PGW_ADMIN_WAIT_TICK);
        ev_timer_start(px->loop, &adm->wait_timer);
    }
    return PGW_ADMIN_DEFERRED;
}

/* PAUSE's reply: the paused pools' servers are closed first.  paused:
 * this PAUSE paused db (not one of a database paused already), which a
 * cancel while it waits undoes. */
static int pause_reply(struct pgw_session *s, const char *db, bool paused, struct pgw_wbuf *out)
{
    reconnect_pools(s->px, db, true, false);
    if (!s->admin_last)
        return done(out, "PAUSE");       /* more commands follow: do not wait */
    return reply_when_closed(s, db, true, paused, out);
}

/* ---- PAUSE / RESUME ---- */

static void pause_pools(struct pgw_proxy *px, const char *db, bool paused)
{
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p))
        if (pool_matches(p, db))
            pgw_pool_pause(p, paused);
}

/* Pause one database by name (PAUSE db, KILL db); 1 when paused now, 0
 * when it was already (nothing to do), -1 when memory is short. */
static int pause_db(struct pgw_proxy *px, const char *db)
{
    int rc = pgw_names_add(&px->admin->paused, db);
    if (rc < 0)
        return -1;
    if (rc > 0)
        pause_pools(px, db, true);
    return rc > 0;
}

/* A console whose PAUSE still waits though its database (or everything)
 * is no longer paused, or NULL. */
static struct pgw_session *undone_pause(struct pgw_proxy *px)
{
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
        struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
        if (!s->is_admin || !s->admin_waiting || !s->admin_wait_pause ||
            s->state != PGW_SS_ADMIN)
            continue;
        if (*s->admin_wait_db ? !pgw_admin_db_paused(px, s->admin_wait_db)
                              : !px->admin->paused_all)
            return s;
    }
    return NULL;
}

/* After RESUME (or a canceled PAUSE): a PAUSE still waiting for what was
 * undone fails (57014) rather than answer PAUSE later, with the database
 * not paused and serving clients meanwhile.  Replying may run that
 * console's next commands: look the next one up afresh each time. */
static void fail_undone_pauses(struct pgw_proxy *px)
{
    struct pgw_session *s;
    while ((s = undone_pause(px))) {
        pgw_info("admin_cancel", "target=%s user=%s command=PAUSE db=%s reason=\"resumed\"",
                 s->addr_text, LQ(s->user), LQ(*s->admin_wait_db ? s->admin_wait_db : "*"));
        pgw_admin_deferred_fail(s, "57014", "PAUSE canceled: RESUME came before it completed");
    }
}

/* Everything paused (PAUSE, SIGUSR1) or resumed (RESUME, SIGUSR2). */
static void pause_all(struct pgw_proxy *px)
{
    px->admin->paused_all = true;
    pause_pools(px, "", true);
}

/* RESUME (SIGUSR2): the global PAUSE or SUSPEND ends; a database paused
 * by name (PAUSE db, KILL db) stays paused until RESUME db, as in
 * PgBouncer. */
static void resume_all(struct pgw_proxy *px)
{
    px->admin->paused_all = false;
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p))
        pgw_pool_pause(p, pgw_names_has(&px->admin->paused, pgw_pool_dbname(p)));
}

int pgw_admin_cmd_pause(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    struct pgw_proxy *px = s->px;
    struct pgw_admin *adm = px->admin;
    if (adm->paused_all)
        return pgw_admin_error(out, "55000", "already suspended/paused");
    if (!*arg) {
        pause_all(px);
        pgw_info("admin_pause", "user=%s db=*", LQ(s->user));
        return pause_reply(s, "", true, out);
    }
    if (check_db(px, "pause", arg, out) < 0)
        return PGW_ADMIN_FAILED;
    if (strlen(arg) >= sizeof(s->admin_wait_db))
        return pgw_admin_error(out, "22023", "database name too long");
    /* Pausing twice is no error (as PgBouncer). */
    int rc = pause_db(px, arg);
    if (rc < 0)
        return pgw_admin_error(out, "53200", "out of memory");
    pgw_info("admin_pause", "user=%s db=%s", LQ(s->user), LQ(arg));
    return pause_reply(s, arg, rc > 0, out);
}

int pgw_admin_cmd_resume(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    struct pgw_proxy *px = s->px;
    struct pgw_admin *adm = px->admin;
    if (!*arg) {
        if (!adm->paused_all)
            return pgw_admin_error(out, "55000", "pooler is not paused/suspended");
        resume_all(px);
        pgw_info("admin_resume", "user=%s db=*", LQ(s->user));
        fail_undone_pauses(px);
        return done(out, "RESUME");
    }
    if (!pgw_names_remove(&adm->paused, arg)) {
        if (check_db(px, "resume", arg, out) < 0)
            return PGW_ADMIN_FAILED;         /* as PgBouncer: no such database */
        return pgw_admin_error(out, "55000", "database %s is not paused", arg);
    }
    if (!adm->paused_all)
        pause_pools(px, arg, false);
    pgw_info("admin_resume", "user=%s db=%s", LQ(s->user), LQ(arg));
    fail_undone_pauses(px);
    return done(out, "RESUME");
}

/* SIGUSR1 / SIGUSR2, as PgBouncer: PAUSE / RESUME of everything, with
 * nobody to answer (a PAUSE's servers close as they come back). */
void pgw_proxy_pause_all(struct pgw_proxy *px, bool pause)
{
    struct pgw_admin *adm = px->admin;
    if (pause) {
        if (adm->paused_all) {
            pgw_info("admin_pause", "user=(signal) db=* result=\"already paused\"");
            return;
        }
        pause_all(px);
        reconnect_pools(px, "", true, false);
        pgw_info("admin_pause", "user=(signal) db=*");
        return;
    }
    if (!adm->paused_all) {
        pgw_info("admin_resume", "user=(signal) db=* result=\"not paused\"");
        return;
    }
    resume_all(px);
    pgw_info("admin_resume", "user=(signal) db=*");
    fail_undone_pauses(px);
}

/* ---- DISABLE / ENABLE ---- */

/* New clients of the database are refused at login (55000); its clients
 * already in go on.  Kept by name, so it outlasts a reload and covers the
 * names "*" serves. */
int pgw_admin_cmd_disable(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    struct pgw_admin *adm = s->px->admin;
    if (!*arg)
        return pgw_admin_error(out, "42601", "a database is required");
    if (check_db(s->px, "disable", arg, out) < 0)
        return PGW_ADMIN_FAILED;
    if (pgw_names_add(&adm->disabled, arg) < 0)
        return pgw_admin_error(out, "53200", "out of memory");
    pgw_info("admin_disable", "user=%s db=%s", LQ(s->user), LQ(arg));
    return done(out, "DISABLE");
}

int pgw_admin_cmd_enable(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    struct pgw_admin *adm = s->px->admin;
    if (!*arg)
        return pgw_admin_error(out, "42601", "a database is required");
    if (!pgw_names_remove(&adm->disabled, arg) && check_db(s->px, "enable", arg, out) < 0)
        return PGW_ADMIN_FAILED;
    pgw_info("admin_enable", "user=%s db=%s", LQ(s->user), LQ(arg));
    return done(out, "ENABLE");
}

/* ---- RECONNECT marks for WAIT_CLOSE ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Forget marks of servers that are gone, or that RESUME kept. */
static void prune_marks(struct pgw_proxy *px)
{
    struct pgw_admin *adm = px->admin;
    if (adm->nmarks == 0)
        return;
    size_t n = 0, cap = 0;
    uint64_t *ids = NULL;
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p)) {
        for (struct pgw_server *srv = pgw_pool_server_next(p, NULL); srv;
             srv = pgw_pool_server_next(p, srv)) {
            if (!pgw_server_closing(srv))
                continue;                /* RESUME kept it: not to wait for */
            uint64_t *grown = pgw_array_grow(ids, sizeof(*ids), n, &cap, 64);
            if (!grown) {
                free(ids);
                return;                  /* try again on the next tick */
            }
            ids = grown;
            ids[n++] = srv->id;
        }
    }
    if (n)
        qsort(ids, n, sizeof(*ids), cmp_u64);
    int kept = 0;
    for (int i = 0; i < adm->nmarks; i++) {
        struct pgw_close_mark *m = &adm->marks[i];
        if (n && bsearch(&m->server_id, ids, n, sizeof(*ids), cmp_u64))
            adm->marks[kept++] = *m;
        else
            free(m->db);
    }
    adm->nmarks = kept;
    free(ids);
}

static bool has_marks(const struct pgw_admin *adm, const char *db)
{
    for (int i = 0; i < adm->nmarks; i++)
        if (!*db || strcmp(adm->marks[i].db, db) == 0)
            return true;
    return false;
}

static void add_mark(struct pgw_admin *adm, const char *db, uint64_t id)
{
    for (int i = 0; i < adm->nmarks; i++)
        if (adm->marks[i].server_id == id)
            return;
    struct pgw_close_mark *grown = pgw_array_grow(adm->marks, sizeof(*grown), (size_t)adm->nmarks,
                                                  &adm->capmarks, 32);
    if (!grown)
        return;                          /* WAIT_CLOSE may answer early */
    adm->marks = grown;
    char *name = strdup(db);
    if (!name)
        return;
    adm->marks[adm->nmarks].db = name;
    adm->marks[adm->nmarks].server_id = id;
    adm->nmarks++;
}

/* Mark the pools' servers for WAIT_CLOSE and have them closed: idle ones
 * now, lent ones when they come back (pause: pgw_pool_close_for_pause,
 * which RESUME undoes and which keeps the pools' defaults, as clients log
 * in while paused; else pgw_pool_reconnect with new_setup, or with kill
 * pgw_pool_kill: a server running its reset goes at once).  A
 * replication client's server is neither: it never comes back, and goes
 * with its client. */
static void reconnect_pools(struct pgw_proxy *px, const char *db, bool pause, bool kill)
{
    struct pgw_admin *adm = px->admin;
    prune_marks(px);
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p)) {
        if (!pool_matches(p, db))
            continue;
        for (struct pgw_server *srv = pgw_pool_server_next(p, NULL); srv;
             srv = pgw_pool_server_next(p, srv))
            if (!srv->replication)
                add_mark(adm, pgw_pool_dbname(p), srv->id);
        if (pause)
            pgw_pool_close_for_pause(p);
        else if (kill)
            pgw_pool_kill(p);         /* a reset under way too, at once */
        else
            pgw_pool_reconnect(p, true);
    }
}

int pgw_admin_cmd_reconnect(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    if (*arg && check_db(s->px, "reconnect", arg, out) < 0)
        return PGW_ADMIN_FAILED;
    pgw_info("admin_reconnect", "user=%s db=%s", LQ(s->user), LQ(*arg ? arg : "*"));
    reconnect_pools(s->px, arg, false, false);
    pgw_relay_fast_close_idle(s->px);
    return done(out, "RECONNECT");
}

int pgw_admin_cmd_wait_close(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    if (*arg && check_db(s->px, "wait in", arg, out) < 0)
        return PGW_ADMIN_FAILED;
    if (strlen(arg) >= sizeof(s->admin_wait_db))
        return pgw_admin_error(out, "22023", "database name too long");
    return reply_when_closed(s, arg, false, false, out);
}

/* The next waiting console session whose servers are all gone. */
static struct pgw_session *next_ready_waiter(struct pgw_proxy *px, bool *any_waiting)
{
    *any_waiting = false;
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
        struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
        if (!s->is_admin || !s->admin_waiting || s->state != PGW_SS_ADMIN)
            continue;
        if (!has_marks(px->admin, s->admin_wait_db))
            return s;
        *any_waiting = true;
    }
    return NULL;
}

void pgw_admin_wait_tick(struct pgw_proxy *px)
{
    struct pgw_admin *adm = px->admin;
    bool waiting = false;
    struct pgw_session *s;
    prune_marks(px);
    /* Replying may run the session's next commands, which may close other
     * sessions: look the next one up afresh each time. */
    while ((s = next_ready_waiter(px, &waiting)))
        pgw_admin_deferred_reply(s, s->admin_wait_pause ? "PAUSE" : "WAIT_CLOSE");
    if (!waiting)
        ev_timer_stop(px->loop, &adm->wait_timer);
}

/* A CancelRequest for a console session (psql's ^C): a PAUSE or
 * WAIT_CLOSE still waiting ends with 57014, as a canceled statement does,
 * and what the PAUSE paused is resumed (PgBouncer resumes too; a database
 * paused by name before it stays paused, as after a failed statement): else
 * the console hung until the last transaction ended, and a PAUSE given
 * up on by closing the console stayed in force.  Other commands are
 * answered at once: nothing to cancel. */
void pgw_admin_cancel(struct pgw_session *s, const char *from)
{
    struct pgw_proxy *px = s->px;
    struct pgw_admin *adm = px->admin;
    if (s->state != PGW_SS_ADMIN || !s->admin_waiting || !adm) {
        pgw_info("cancel_ignored", "client=%s target=%s reason=\"no query in progress\"", from,
                 s->addr_text);
        return;
    }
    const char *db = s->admin_wait_db;
    const char *cmd = s->admin_wait_pause ? "PAUSE" : "WAIT_CLOSE";
    if (s->admin_wait_pause && s->admin_wait_undo) {
        /* Only what this PAUSE did: databases paused by name before it
         * (PAUSE db, KILL db) stay paused. */
        if (!*db) {
            adm->paused_all = false;
            for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p;
                 p = pgw_pool_next(px->pools, p))
                if (!pgw_admin_db_paused(px, pgw_pool_dbname(p)))
                    pgw_pool_pause(p, false);
        } else if (pgw_names_remove(&adm->paused, db) && !adm->paused_all) {
            pause_pools(px, db, false);
        }
    }
    pgw_info("admin_cancel", "client=%s target=%s user=%s command=%s db=%s", from, s->addr_text,
             LQ(s->user), cmd, LQ(*db ? db : "*"));
    pgw_admin_deferred_fail(s, "57014", "canceling statement due to user request");
    fail_undone_pauses(px);              /* another console's PAUSE of the same */
}

/* ---- KILL / KILL_CLIENT ---- */

static struct pgw_session *find_victim(struct pgw_proxy *px, const struct pgw_session *self,
                                       const char *db)
{
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
        struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
        if (s == self || s->is_admin || !s->database || s->state == PGW_SS_CLOSING ||
            s->state == PGW_SS_CANCEL)
            continue;
        if (!*db || strcmp(s->database, db) == 0)
            return s;
    }
    return NULL;
}

int pgw_admin_cmd_kill(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    struct pgw_proxy *px = s->px;
    struct pgw_admin *adm = px->admin;
    if (adm->paused_all)
        return pgw_admin_error(out, "55000", "already suspended/paused");
    if (*arg && check_db(px, "kill", arg, out) < 0)
        return PGW_ADMIN_FAILED;
    /* As PgBouncer, the database stays paused: its new clients wait for
     * RESUME (scripts run KILL db, then RESUME db). */
    if (!*arg) {
        adm->paused_all = true;
        pause_pools(px, "", true);
    } else if (pause_db(px, arg) < 0) {
        return pgw_admin_error(out, "53200", "out of memory");
    } else {
        /* The pause is KILL's now: a waiting PAUSE of it that is canceled
         * later must not take it back. */
        for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
            struct pgw_session *c = pgw_container_of(l, struct pgw_session, node);
            if (c->is_admin && c->admin_waiting && c->admin_wait_pause &&
                strcmp(c->admin_wait_db, arg) == 0)
                c->admin_wait_undo = false;
        }
    }
    int n = 0;
    struct pgw_session *v;
    /* Closing one session may change the list (a release can wake others):
     * start over each time. */
    while ((v = find_victim(px, s, arg))) {
        pgw_session_close(v, "57P01", "terminating connection due to administrator command");
        n++;
    }
    reconnect_pools(px, arg, false, true);  /* as PgBouncer's KILL, which drops the pool */
    pgw_authquery_kill(px, arg);            /* and a server lent to an auth_query lookup */
    pgw_info("admin_kill", "user=%s db=%s clients=%d", LQ(s->user), LQ(*arg ? arg : "*"), n);
    return done(out, "KILL");
}

int pgw_admin_cmd_kill_client(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    struct pgw_proxy *px = s->px;
    char *end;
    errno = 0;
    unsigned long long id = strtoull(arg, &end, 10);
    if (!*arg || *end || errno)
        return pgw_admin_error(out, "22023",
                               "KILL_CLIENT needs a client id (SHOW CLIENTS, column id)");
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
        struct pgw_session *v = pgw_container_of(l, struct pgw_session, node);
        if (v->id != id || v->state == PGW_SS_CLOSING)
            continue;
        if (v == s)
            return pgw_admin_error(out, "55000", "cannot kill the connection issuing KILL_CLIENT");
        pgw_info("admin_kill_client", "user=%s id=%llu client=%s", LQ(s->user), id, v->addr_text);
        pgw_session_close(v, "57P01", "terminating connection due to administrator command");
        return done(out, "KILL_CLIENT");
    }
    return pgw_admin_error(out, "42704", "client not found: %llu", id);
}

/* ---- RELOAD / SET ---- */

int pgw_admin_cmd_reload(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    if (*arg)
        return pgw_admin_error(out, "42601", "RELOAD takes no argument");
    pgw_info("admin_reload", "user=%s", LQ(s->user));
    if (pgw_proxy_reload_file(s->px) < 0)
        return pgw_admin_error(out, "F0000", "RELOAD failed, see logs for additional details");
    return done(out, "RELOAD");
}

void pgw_admin_set_log_failed(const struct pgw_session *s, const char *key, const char *value,
                              const char *sqlstate, const char *why)
{
    char q[600], qw[1200];
    pgw_warn("admin_set_failed", "user=%s key=%s value=%s sqlstate=%s reason=%s", LQ(s->user),
             LQ(key), pgw_log_quote(q, sizeof(q), value), sqlstate,
             pgw_log_quote(qw, sizeof(qw), why));
}

int pgw_admin_set_failed(struct pgw_session *s, const char *key, const char *value,
                         const char *sqlstate, struct pgw_wbuf *out, const char *fmt, ...)
{
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    pgw_admin_set_log_failed(s, key, value, sqlstate, why);
    return pgw_admin_error(out, sqlstate, "%s", why);
}

/* A new config: the running one (its databases, users and peers too: the
 * file is not read, as PgBouncer's SET reads none) with key = value,
 * checked as a loaded file is.  NULL with the error written. */
static struct pgw_config *config_with(struct pgw_session *s, const char *key,
                                      const char *value, struct pgw_wbuf *out)
{
    struct pgw_config *cfg = pgw_conf_dup(s->px->cfg);
    if (!cfg) {
        pgw_admin_set_failed(s, key, value, "53200", out, "SET failed: out of memory");
        return NULL;
    }
    char err[512];
    if (pgw_conf_set(cfg, key, value, err, sizeof(err)) < 0) {
        pgw_admin_set_failed(s, key, value, "22023", out, "SET failed: %s", err);
        pgw_conf_free(cfg);
        return NULL;
    }
    /* The checks a config file gets (auth_type md5 without auth_file...):
     * a SET must not lock everyone out, the console included. */
    struct pgw_conf_diag vd = { 0 };
    if (pgw_conf_validate(cfg, &vd) < 0) {
        const char *why = vd.nerrors ? vd.errors[0] : "invalid combination of settings";
        const char *colon = strstr(why, ": ");       /* drop "file:line: " */
        pgw_admin_set_failed(s, key, value, "22023", out, "SET failed: %s",
                             colon ? colon + 2 : why);
        pgw_conf_diag_free(&vd);
        pgw_conf_free(cfg);
        return NULL;
    }
    pgw_conf_diag_free(&vd);
    return cfg;
}

int pgw_admin_cmd_set(struct pgw_session *s, const char *key, const char *value,
                      struct pgw_wbuf *out)
{
    struct pgw_proxy *px = s->px;
    if (pgw_conf_get(px->cfg, key, NULL, 0) && !pgw_admin_key_changeable(key))
        return pgw_admin_set_failed(s, key, value, "55P02", out, "parameter \"%s\" cannot be "
                                    "changed without restarting pgwharf", key);
    struct pgw_config *cfg = config_with(s, key, value, out);
    if (!cfg)
        return PGW_ADMIN_FAILED;
    /* Logged once it has applied, so that a SET that fails has only
     * admin_set_failed (pgw_proxy_reload logs why a config does not load);
     * at the level from before too, so that a SET of log_level = error is
     * logged as well. */
    bool heard = pgw_log_get_level() <= PGW_LOG_INFO;
    if (pgw_proxy_reload(px, cfg) < 0)
        return pgw_admin_set_failed(s, key, value, "F0000", out, "SET failed: the new config "
                                    "does not load (auth_file, auth_hba_file, TLS files, "
                                    "scram_salt_key_file, logfile or metrics port), see the log");
    char q[600];
    if (heard || pgw_log_get_level() <= PGW_LOG_INFO)
        pgw_log_always(PGW_LOG_INFO, "admin_set", "user=%s key=%s value=%s", LQ(s->user),
                       LQ(key), pgw_log_quote(q, sizeof(q), value));
    char tag[300];
    snprintf(tag, sizeof(tag), "SET %.100s=%.150s", key, value);
    return done(out, tag);
}

/* ---- SHUTDOWN ---- */

static void shutdown_later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgw_admin *adm = pgw_container_of(w, struct pgw_admin, shutdown_timer);
    pgw_proxy_shutdown(adm->px, adm->shutdown_mode);
}

int pgw_admin_cmd_shutdown(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    struct pgw_proxy *px = s->px;
    struct pgw_admin *adm = px->admin;
    enum pgw_shutdown_mode mode;
    if (!*arg)
        mode = PGW_SHUTDOWN_FAST;
    else if (strcasecmp(arg, "wait_for_clients") == 0)
        mode = PGW_SHUTDOWN_WAIT_CLIENTS;
    else if (strcasecmp(arg, "wait_for_servers") == 0)
        mode = PGW_SHUTDOWN_WAIT_SERVERS;
    else
        return pgw_admin_error(out, "42601", "SHUTDOWN takes WAIT_FOR_CLIENTS or WAIT_FOR_SERVERS");
    pgw_info("admin_shutdown", "user=%s mode=%s", LQ(s->user), LQ(*arg ? arg : "immediate"));
    if (mode == PGW_SHUTDOWN_FAST) {
        /* Like PgBouncer: no reply; the connection ends with the process. */
        pgw_proxy_shutdown(px, mode);
        return PGW_ADMIN_DONE;
    }
    /* Answer first; a waiting shutdown may close this (idle) session. */
    adm->shutdown_mode = mode;
    if (!ev_is_active(&adm->shutdown_timer)) {   /* a second SHUTDOWN in the same turn */
        ev_timer_init(&adm->shutdown_timer, shutdown_later_cb, 0, 0);
        ev_timer_start(px->loop, &adm->shutdown_timer);
    }
    return done(out, "SHUTDOWN");
}
