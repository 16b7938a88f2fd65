/*
 * admin_int.h - what the admin console's files share (admin.c, admin_show.c,
 * admin_cmd.c, admin_stats.c, metrics.c); never included outside proxy/.
 *
 *   admin.c        login, the query loop, command parsing and dispatch, the
 *                  result-set builder, PAUSE state, init/reload/deinit
 *   admin_show.c   SHOW commands (PgBouncer's column layouts)
 *   admin_cmd.c    PAUSE, RESUME, DISABLE, ENABLE, KILL, KILL_CLIENT,
 *                  RECONNECT, WAIT_CLOSE, RELOAD, SET, SHUTDOWN
 *   admin_stats.c  per-database counters (SHOW STATS, pgwharf_*_total) and
 *                  the averages of the last stats_period
 *   metrics.c      the Prometheus endpoint: a small HTTP/1.0 server on the
 *                  loop, the exposition text and the two histograms
 *
 * Ownership: struct pgw_proxy owns one struct pgw_admin (px->admin); it owns
 * the metrics listener and its connections, the stats table and the list of
 * servers RECONNECT marked for WAIT_CLOSE.  Nothing here points at sessions:
 * a session waiting for WAIT_CLOSE is found by walking px->sessions.
 */
#ifndef PGW_PROXY_ADMIN_INT_H
#define PGW_PROXY_ADMIN_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/names.h"
#include "proxy/proxy_int.h"

/* ---- result sets (admin.c) ---- */

#define PGW_OID_INT8      20
#define PGW_OID_INT4      23
#define PGW_OID_TEXT      25
#define PGW_OID_NUMERIC   1700

struct pgw_rs_col {
    const char *name;
    uint32_t oid;
};

/* RowDescription, then rows of text values (DataRow), then CommandComplete.
 * Values go in column order; pgw_rs_row_end checks the count. */
struct pgw_rs {
    struct pgw_wbuf *out;
    int ncols, col;
    size_t row;              /* start of the open DataRow */
    uint64_t nrows;
};

void pgw_rs_begin(struct pgw_rs *rs, struct pgw_wbuf *out, const struct pgw_rs_col *cols, int n);
void pgw_rs_row(struct pgw_rs *rs);
void pgw_rs_text(struct pgw_rs *rs, const char *v);     /* NULL: SQL NULL */
void pgw_rs_int(struct pgw_rs *rs, int64_t v);
void pgw_rs_uint(struct pgw_rs *rs, uint64_t v);
/* A time as PgBouncer shows one: text, "2026-12-01 15:01:52 UTC" (pgwharf
 * always in UTC); 0: NULL.  t is on the monotonic clock (pgw_mono_now()),
 * shown as the wall-clock time it stands for now. */
void pgw_rs_time(struct pgw_rs *rs, ev_tstamp t);
void pgw_rs_row_end(struct pgw_rs *rs);
void pgw_rs_end(struct pgw_rs *rs, const char *tag);

#define PGW_RS_NCOLS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- commands ---- */

/* What a command handler returns. */
enum {
    PGW_ADMIN_DONE = 0,      /* result (or error) written to out */
    PGW_ADMIN_FAILED = -1,   /* ErrorResponse written: stop this query */
    PGW_ADMIN_DEFERRED = 1   /* the reply comes later (WAIT_CLOSE) */
};

/* Write an ErrorResponse; returns PGW_ADMIN_FAILED. */
int pgw_admin_error(struct pgw_wbuf *out, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* admin_show.c: SHOW <what> */
int pgw_admin_show(struct pgw_session *s, const char *what, struct pgw_wbuf *out);
/* Is what a view or session parameter SHOW knows (case-insensitive)? */
bool pgw_admin_show_known(const char *what);
/* May SET change this key at run time (SHOW CONFIG's "changeable")? */
bool pgw_admin_key_changeable(const char *key);

/* admin_cmd.c: the rest.  arg is "" when none was given. */
int pgw_admin_cmd_pause(struct pgw_session *s, const char *arg, struct pgw_wbuf *out);
int pgw_admin_cmd_resume(struct pgw_session *s, const char *arg, struct pgw_wbuf *out);
int pgw_admin_cmd_kill(struct pgw_session *s, const char *arg, struct pgw_wbuf *out);
int pgw_admin_cmd_disable(struct pgw_session *s, const char *arg, struct pgw_wbuf *out);
int pgw_admin_cmd_enable(struct pgw_session *s, const char *arg, struct pgw_wbuf *out);
int pgw_admin_cmd_kill_client(struct pgw_session *s, const char *arg, struct pgw_wbuf *out);
int pgw_admin_cmd_reconnect(struct pgw_session *s, const char *arg, struct pgw_wbuf *out);
int pgw_admin_cmd_wait_close(struct pgw_session *s, const char *arg, struct pgw_wbuf *out);
int pgw_admin_cmd_reload(struct pgw_session *s, const char *arg, struct pgw_wbuf *out);
int pgw_admin_cmd_shutdown(struct pgw_session *s, const char *arg, struct pgw_wbuf *out);
int pgw_admin_cmd_set(struct pgw_session *s, const char *key, const char *value,
                      struct pgw_wbuf *out);
/* A SET refused or failed, whatever the reason (not parsed, a stats user,
 * a bad value, a config that does not load): the console gets the error
 * and the log a warning, event=admin_set_failed with the same reason and
 * the SQLSTATE, so that a script's SET failing leaves a trace.  Returns
 * PGW_ADMIN_FAILED.  key and value may be "" (not parsed). */
int pgw_admin_set_failed(struct pgw_session *s, const char *key, const char *value,
                         const char *sqlstate, struct pgw_wbuf *out, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Only its log line (the error went out once for several). */
void pgw_admin_set_log_failed(const struct pgw_session *s, const char *key, const char *value,
                              const char *sqlstate, const char *why);
/* Called by the wait timer: answer WAIT_CLOSE sessions whose servers are gone. */
void pgw_admin_wait_tick(struct pgw_proxy *px);
/* After a deferred reply: go on with what the client sent meanwhile. */
void pgw_admin_resume_input(struct pgw_session *s);
/* Send a deferred command's CommandComplete + ReadyForQuery and read on. */
void pgw_admin_deferred_reply(struct pgw_session *s, const char *tag);
/* The same with an ErrorResponse in place of the CommandComplete. */
void pgw_admin_deferred_fail(struct pgw_session *s, const char *sqlstate, const char *msg);

/* ---- live counts shared by SHOW and /metrics (admin_show.c) ---- */

struct pgw_pool_row {
    struct pgw_pool *pool;
    int cl_active, cl_waiting;
    int sv_active, sv_idle, sv_used, sv_tested, sv_login;
    int bridges;             /* LISTEN bridges (notify_bridge.c): in no sv_* */
    ev_tstamp maxwait;
    bool paused;
};
/* One row per pool, in pool order; *n rows.  NULL (and *n 0) when there are
 * no pools or memory is short.  free() the result. */
struct pgw_pool_row *pgw_admin_pool_rows(struct pgw_proxy *px, int *n);

/* Is this database paused by PAUSE (all or by name)? */
bool pgw_admin_db_paused(const struct pgw_proxy *px, const char *db);
/* ... by a PAUSE of its name (SHOW DATABASES' paused, as PgBouncer's)? */
bool pgw_admin_db_paused_by_name(const struct pgw_proxy *px, const char *db);

/* ---- per-database counters (admin_stats.c) ---- */

struct pgw_dbstat {
    uint64_t assignments;    /* servers lent to clients */
    uint64_t xacts, queries;
    uint64_t recv, sent;     /* bytes from / to clients */
    uint64_t xact_us, query_us, wait_us;
    uint64_t wait_timeouts;
    uint64_t ps_client_parses;   /* named Parses of clients (max_prepared_statements) */
    uint64_t ps_server_parses;   /* Parses pgwharf sent to servers for them */
    uint64_t ps_binds;           /* Binds of clients' named statements */
};

struct pgw_dbstat_row {
    const char *database;
    struct pgw_dbstat total;     /* since start */
    struct pgw_dbstat avg;       /* per second over the last stats_period;
                                  * times: per transaction / query / assignment */
};
/* Current totals and last-period averages per database, sorted by name.
 * The names stay valid until the stats table changes (next loop callback).
 * free() the result. */
struct pgw_dbstat_row *pgw_stats_rows(struct pgw_proxy *px, int *n);
/* Every database's totals since start and last-period averages together
 * (SHOW TOTALS): averages from the summed counters, as PgBouncer's, so a
 * database of less than one transaction a second still counts. */
void pgw_stats_totals(struct pgw_proxy *px, struct pgw_dbstat *total, struct pgw_dbstat *avg);
/* The sessions' counters (transactions, queries, bytes...) since start,
 * every database's, as SHOW STATS counts them (bytes: no login, no
 * Terminate; no console session): the stats log line's. */
void pgw_stats_sessions_total(struct pgw_proxy *px, struct pgw_dbstat *sum);

struct pgw_stats;
/* The console's own row of SHOW STATS, as PgBouncer's admin pool's: one
 * transaction and one query per console session that sent a message other
 * than Terminate, a Parse or a Sync as well as a Query (its first:
 * PgBouncer counts a query until a server's ReadyForQuery ends it,
 * which never comes on the console), the rest 0. */
void pgw_stats_console_query(struct pgw_stats *st);
void pgw_stats_console(struct pgw_proxy *px, struct pgw_dbstat *total, struct pgw_dbstat *avg);
struct pgw_stats *pgw_stats_create(struct pgw_proxy *px);
void pgw_stats_destroy(struct pgw_stats *st);
void pgw_stats_reconfigure(struct pgw_stats *st);
void pgw_stats_session_gone(struct pgw_stats *st, const struct pgw_session *s);
/* Does this session count toward a database's stats? */
bool pgw_stats_counts(const struct pgw_session *s);

/* ---- the metrics endpoint (metrics.c) ---- */

struct pgw_metrics;
int pgw_metrics_create(struct pgw_proxy *px, struct pgw_metrics **out, char *errbuf,
                       size_t errlen);
int pgw_metrics_reconfigure(struct pgw_metrics *m, const struct pgw_config *cfg, char *errbuf,
                            size_t errlen);
void pgw_metrics_destroy(struct pgw_metrics *m);
/* The exposition text (format 0.0.4) into out. */
void pgw_metrics_render(struct pgw_proxy *px, struct pgw_wbuf *out);

/* ---- the admin state hung on the proxy ---- */

/* How often a waiting PAUSE or WAIT_CLOSE looks again for what closes no
 * server (a server's close is seen in the next loop turn), seconds. */
#define PGW_ADMIN_WAIT_TICK 0.1

struct pgw_admin {
    struct pgw_proxy *px;
    /* PAUSE */
    bool paused_all;
    struct pgw_names paused;     /* PAUSE db */
    /* DISABLE: databases whose new clients are refused */
    struct pgw_names disabled;
    /* RECONNECT marks: (database, server id) still to close for WAIT_CLOSE */
    struct pgw_close_mark {
        char *db;
        uint64_t server_id;
    } *marks;
    int nmarks;
    size_t capmarks;
    ev_timer wait_timer;     /* runs while a PAUSE or WAIT_CLOSE waits */
    ev_timer shutdown_timer; /* SHUTDOWN WAIT_*: after the reply went out */
    enum pgw_shutdown_mode shutdown_mode;
    struct pgw_stats *stats;
    struct pgw_metrics *metrics;
};

/* printf onto a wbuf (sets failed on allocation failure). */
void pgw_admin_printf(struct pgw_wbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
