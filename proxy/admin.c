/*
 * admin.c - the admin console: the virtual database "pgwharf" (also
 * "pgbouncer").  Simple query protocol only; commands are PgBouncer's
 * (SHOW ..., PAUSE, RESUME, KILL, RELOAD, SET, ...), case-insensitive, one or
 * more per Query separated by ';'.  admin_users may run everything,
 * stats_users only SHOW (and the harmless SETs drivers send).
 *
 * Output never grows a session buffer past its size: a result is built in
 * the session's admin_out and moved into the client buffer as it drains;
 * the next query is read only when the previous reply is on its way.
 *
 * Also here: the result-set builder, the PAUSE state and the admin state's
 * init/reload/deinit (see admin_int.h for the other files).
 */
#include "proxy/admin_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "proxy/codec.h"

#define ADMIN_MAX_STMTS 32
#define ADMIN_WORD_MAX 256
#define ADMIN_VALUE_MAX 4096

/* ---- text helpers ---- */

void pgw_admin_printf(struct pgw_wbuf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        pgw_wbuf_append(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    pgw_wbuf_append(b, big, (size_t)n);
    free(big);
}

int pgw_admin_error(struct pgw_wbuf *out, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pgw_wire_verror(out, "ERROR", sqlstate, fmt, ap);
    va_end(ap);
    return PGW_ADMIN_FAILED;
}

/* ---- result sets ---- */

static int16_t type_len(uint32_t oid)
{
    switch (oid) {
    case PGW_OID_INT8:      return 8;
    case PGW_OID_INT4:      return 4;
    default:                return -1;
    }
}

void pgw_rs_begin(struct pgw_rs *rs, struct pgw_wbuf *out, const struct pgw_rs_col *cols, int n)
{
    memset(rs, 0, sizeof(*rs));
    rs->out = out;
    rs->ncols = n;
    size_t m = pgw_wbuf_msg_begin(out, PGW_BE_ROW_DESC);
    pgw_wbuf_put_u16(out, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        pgw_wbuf_put_str(out, cols[i].name);
        pgw_wbuf_put_u32(out, 0);                        /* table */
        pgw_wbuf_put_u16(out, 0);                        /* column */
        pgw_wbuf_put_u32(out, cols[i].oid);
        pgw_wbuf_put_u16(out, (uint16_t)type_len(cols[i].oid));
        pgw_wbuf_put_u32(out, 0xffffffffu);              /* typmod -1 */
        pgw_wbuf_put_u16(out, 0);                        /* text */
    }
    pgw_wbuf_msg_end(out, m);
}

void pgw_rs_row(struct pgw_rs *rs)
{
    rs->row = pgw_wbuf_msg_begin(rs->out, PGW_BE_DATA_ROW);
    pgw_wbuf_put_u16(rs->out, (uint16_t)rs->ncols);
    rs->col = 0;
}

/* Length of the next piece of v as sent: a well-formed UTF-8 sequence as
 * is (*len bytes of v), or one byte that starts none (*len 1, sent as
 * U+FFFD). */
static bool utf8_piece(const char *v, size_t *len)
{
    uint32_t cp;
    size_t n = (unsigned char)*v < 0x80 ? 1 : pgw_utf8_decode((const unsigned char *)v, &cp);
    *len = n ? n : 1;
    return n != 0;
}

void pgw_rs_text(struct pgw_rs *rs, const char *v)
{
    if (!v) {
        pgw_wbuf_put_u32(rs->out, 0xffffffffu);
        rs->col++;
        return;
    }
    /* The console says client_encoding UTF8: a byte that starts no
     * well-formed sequence (in a database or application name a client
     * chose) is sent as U+FFFD, as /metrics does, or drivers that decode
     * strictly (psycopg) could not read the view at all. */
    size_t out = 0, len;
    for (const char *p = v; *p; p += len)
        out += utf8_piece(p, &len) ? len : 3;
    pgw_wbuf_put_u32(rs->out, (uint32_t)out);
    for (const char *p = v; *p; p += len) {
        if (utf8_piece(p, &len))
            pgw_wbuf_append(rs->out, p, len);
        else
            pgw_wbuf_append(rs->out, "\xEF\xBF\xBD", 3);
    }
    rs->col++;
}

void pgw_rs_int(struct pgw_rs *rs, int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    pgw_rs_text(rs, buf);
}

void pgw_rs_uint(struct pgw_rs *rs, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    pgw_rs_text(rs, buf);
}

void pgw_rs_time(struct pgw_rs *rs, ev_tstamp t)
{
    if (t <= 0) {
        pgw_rs_text(rs, NULL);
        return;
    }
    time_t sec = (time_t)pgw_clock_wall(t);
    struct tm tm;
    char buf[40];
    gmtime_r(&sec, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
    pgw_rs_text(rs, buf);
}

void pgw_rs_row_end(struct pgw_rs *rs)
{
    if (rs->col != rs->ncols) {
        /* A bug in a SHOW handler: never send a malformed row. */
        pgw_error("admin", "reason=\"row has %d values for %d columns\"", rs->col, rs->ncols);
        rs->out->failed = true;
    }
    pgw_wbuf_msg_end(rs->out, rs->row);
    rs->nrows++;
}

void pgw_rs_end(struct pgw_rs *rs, const char *tag)
{
    pgw_wire_command_complete(rs->out, tag);
}

/* ---- PAUSE state ---- */

bool pgw_admin_db_paused(const struct pgw_proxy *px, const char *db)
{
    const struct pgw_admin *adm = px->admin;
    if (!adm)
        return false;
    return adm->paused_all || pgw_names_has(&adm->paused, db);
}

bool pgw_admin_db_paused_by_name(const struct pgw_proxy *px, const char *db)
{
    return px->admin && pgw_names_has(&px->admin->paused, db);
}

/* ---- DISABLE state ---- */

bool pgw_admin_db_disabled(const struct pgw_proxy *px, const char *db)
{
    const struct pgw_admin *adm = px->admin;
    return adm && db && pgw_names_has(&adm->disabled, db);
}

void pgw_admin_pool_attach(struct pgw_proxy *px, struct pgw_pool *pool)
{
    if (pool && pgw_admin_db_paused(px, pgw_pool_dbname(pool)))
        pgw_pool_pause(pool, true);
}

/* ---- sending: admin_out -> sbuf as it drains ---- */

static void admin_write_cb(struct ev_loop *loop, ev_io *w, int revents);

/* Move queued output into the client buffer and flush; returns true when
 * everything queued has been handed to the client buffer.  What is moved
 * is skipped by an offset, compacted only once it is most of the buffer:
 * shifting the rest left at every 32 kB made a reply of n bytes cost n^2
 * (SHOW CLIENTS of long application_names, 32 views in one Query). */
static bool admin_push(struct pgw_session *s)
{
    struct pgw_wbuf *o = &s->admin_out;
    while (o->len > s->admin_out_off) {
        if (s->state == PGW_SS_CLOSING)
            return false;
        if (!s->sbuf && !(s->sbuf = pgw_iobuf_get(s->px))) {
            pgw_session_close(s, "53200", "out of memory");
            return false;
        }
        struct pgw_iobuf *b = s->sbuf;
        pgw_iobuf_compact(b);
        size_t room = b->cap - b->len;
        if (room == 0)
            return false;                /* admin_write_cb comes back */
        size_t left = o->len - s->admin_out_off;
        size_t n = left < room ? left : room;
        memcpy(b->data + b->len, o->data + s->admin_out_off, n);
        b->len += (uint32_t)n;
        b->parsed = b->len;
        s->admin_out_off += n;
        if (s->admin_out_off > o->len / 2 && s->admin_out_off < o->len) {
            pgw_wbuf_consume(o, s->admin_out_off);   /* at most the half left: linear */
            s->admin_out_off = 0;
        }
        pgw_session_flush_client(s);
        if (s->state == PGW_SS_CLOSING)
            return false;
        if (s->cli_write_blocked && o->len > s->admin_out_off)
            return false;
    }
    pgw_wbuf_deinit(o);                  /* give the memory back between replies */
    s->admin_out_off = 0;
    return true;
}

static void admin_queue(struct pgw_session *s, struct pgw_wbuf *msg)
{
    if (msg->failed) {
        pgw_session_close(s, "53200", "out of memory building the admin reply");
        return;
    }
    if (s->admin_out.len == 0 && !s->admin_out.data) {
        s->admin_out = *msg;             /* take the buffer over */
        pgw_wbuf_init(msg);
    } else {
        pgw_wbuf_append(&s->admin_out, msg->data, msg->len);
        if (s->admin_out.failed) {
            pgw_session_close(s, "53200", "out of memory queueing the admin reply");
            return;
        }
    }
    admin_push(s);
}

/* cli_w's callback while in the console: the session's own (flush, TLS),
 * then the rest of the reply. */
static void admin_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgw_session *s = pgw_container_of(w, struct pgw_session, cli_w);
    s->admin_write_next(loop, w, revents);
    if (s->state != PGW_SS_ADMIN || s->cli_write_blocked)
        return;
    if (admin_push(s))
        pgw_admin_input(s);              /* the next query may go now */
}

/* ---- login ---- */

void pgw_admin_login(struct pgw_session *s)
{
    const struct pgw_config *cfg = s->px->cfg;
    bool admin = s->admin_local || pgw_conf_list_has(cfg->admin_users, s->user);
    bool stats = pgw_conf_list_has(cfg->stats_users, s->user);
    if (!admin && !stats) {
        pgw_session_close(s, "42501", "not allowed to connect to the admin console: \"%s\"",
                          s->user);
        return;
    }
    s->admin_can_write = admin;
    /* Replies larger than a buffer are fed from admin_out as it drains:
     * chain a callback in front of the session's own. */
    if (ev_cb(&s->cli_w) != admin_write_cb) {
        s->admin_write_next = ev_cb(&s->cli_w);
        ev_set_cb(&s->cli_w, admin_write_cb);
    }
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_param_status(&b, "server_version", PGW_VERSION "/pgwharf");
    pgw_wire_param_status(&b, "client_encoding", "UTF8");
    pgw_wire_param_status(&b, "server_encoding", "UTF8");
    pgw_wire_param_status(&b, "DateStyle", "ISO, MDY");
    pgw_wire_param_status(&b, "TimeZone", "UTC");     /* as SHOW timezone says */
    pgw_wire_param_status(&b, "standard_conforming_strings", "on");
    pgw_wire_param_status(&b, "is_superuser", "on");    /* PgBouncer's set, and PostgreSQL's */
    pgw_wire_param_status(&b, "application_name", "");
    pgw_wire_key_data(&b, s->cancel_pid, s->cancel_key);
    pgw_wire_ready(&b, 'I');
    s->state = PGW_SS_ADMIN;
    pgw_session_list_join(s);
    pgw_session_arm_timer(s);
    admin_queue(s, &b);
    pgw_wbuf_deinit(&b);
    /* A query sent right behind the password is already here. */
    if (s->state == PGW_SS_ADMIN && s->cbuf && s->cbuf->sent < s->cbuf->len)
        pgw_admin_input(s);
}

/* ---- parsing ---- */

struct admin_stmt {
    char cmd[64];
    char arg[ADMIN_WORD_MAX];
    char key[ADMIN_WORD_MAX];            /* SET */
    char value[ADMIN_VALUE_MAX];
    bool is_set;
};

static const char *skip_ws(const char *p)
{
    while (*p && isspace((unsigned char)*p))
        p++;
    return p;
}

/* A string quoted with q (q doubled for q inside), p at the opening quote.
 * Returns the position after the closing quote, or NULL when it does not
 * end or does not fit; *len gets its length. */
static const char *read_quoted(const char *p, char q, char *out, size_t size, size_t *len)
{
    size_t n = 0;
    for (p++;; p++) {
        if (!*p)
            return NULL;
        if (*p == q) {
            if (p[1] != q)
                break;
            p++;
        }
        if (n + 1 >= size)
            return NULL;
        out[n++] = *p;
    }
    out[n] = '\0';
    *len = n;
    return p + 1;
}

/* A run of word characters ([A-Za-z0-9_]) or, !word, of non-blanks.
 * Returns the position after it, or NULL when there is none or it does
 * not fit. */
static const char *read_run(const char *p, bool word, char *out, size_t size)
{
    size_t n = 0;
    while (*p && (word ? isalnum((unsigned char)*p) || *p == '_' : !isspace((unsigned char)*p))) {
        if (n + 1 >= size)
            return NULL;
        out[n++] = *p++;
    }
    out[n] = '\0';
    return n ? p : NULL;
}

/* A word: "quoted" ("" for a quote inside, not empty) or a run of word
 * characters. */
static const char *read_word(const char *p, char *out, size_t size)
{
    size_t n = 0;
    if (*p != '"')
        return read_run(p, true, out, size);
    p = read_quoted(p, '"', out, size, &n);
    return n ? p : NULL;
}

/* A SET value: 'string' ('' for a quote inside), "string" ("" inside; as
 * PgBouncer, which takes a quoted word there too) or a run of non-blanks. */
static const char *read_value(const char *p, char *out, size_t size)
{
    size_t n;
    if (*p == '"')
        return read_quoted(p, '"', out, size, &n);
    if (*p != '\'')
        return read_run(p, false, out, size);
    return read_quoted(p, '\'', out, size, &n);
}

/* Parse one statement (no ';').  Returns 0, or -1 when it does not parse
 * (is_set still tells a SET, with its key and value where they parsed
 * whole, "" where not). */
static int parse_stmt(const char *text, struct admin_stmt *st)
{
    memset(st, 0, sizeof(*st));
    const char *p = read_word(skip_ws(text), st->cmd, sizeof(st->cmd));
    if (!p)
        return -1;
    p = skip_ws(p);
    if (strcasecmp(st->cmd, "set") == 0) {
        st->is_set = true;
        if (!(p = read_word(p, st->key, sizeof(st->key)))) {
            st->key[0] = '\0';
            return -1;
        }
        p = skip_ws(p);
        if (*p == '=')
            p++;
        else if (strncasecmp(p, "to", 2) == 0 && isspace((unsigned char)p[2]))
            p += 2;
        else
            return -1;
        if (!(p = read_value(skip_ws(p), st->value, sizeof(st->value)))) {
            st->value[0] = '\0';
            return -1;
        }
    } else if (*p) {
        p = read_word(p, st->arg, sizeof(st->arg));
        if (!p)
            return -1;
    }
    return *skip_ws(p) ? -1 : 0;
}

/* Split a query on ';' outside quotes into trimmed, non-empty statements
 * (written over a copy of the text); *count gets how many.  Returns 0, or
 * -1 when there are too many (the first max in stmts, *rest the text from
 * the next one on, untouched) or a quote is not closed (the last
 * statement runs to the end; *rest NULL). */
static int split_query(char *q, char **stmts, int max, int *count, char **rest)
{
    int n = 0;
    *count = 0;
    *rest = NULL;
    char quote = 0;
    char *start = q;
    for (char *p = q;; p++) {
        if (*p && quote) {
            if (*p == quote)
                quote = 0;
            continue;
        }
        if (*p == '\'' || *p == '"') {
            quote = *p;
            continue;
        }
        if (*p && *p != ';')
            continue;
        bool end = *p == '\0';
        char *t = (char *)skip_ws(start);
        if (t < p && n == max) {
            *rest = start;
            return -1;
        }
        *p = '\0';
        size_t len = strlen(t);
        while (len > 0 && isspace((unsigned char)t[len - 1]))
            t[--len] = '\0';
        if (len > 0) {
            stmts[n++] = t;
            *count = n;
        }
        if (end)
            break;
        start = p + 1;
    }
    return quote ? -1 : 0;
}

/* SETs among stmts that do not run are logged as refused all the same
 * (pgw_admin_set_failed), with sqlstate and why. */
static void log_unrun_sets(const struct pgw_session *s, char **stmts, int n,
                           const char *sqlstate, const char *why)
{
    for (int i = 0; i < n; i++) {
        struct admin_stmt st;
        (void)parse_stmt(stmts[i], &st);
        if (st.is_set)
            pgw_admin_set_log_failed(s, st.key, st.value, sqlstate, why);
    }
}

/* A query that does not split runs none of its statements: its SETs,
 * those past the first ADMIN_MAX_STMTS too (split from rest on), up to
 * 4 x ADMIN_MAX_STMTS statements. */
static void log_unsplit_sets(const struct pgw_session *s, char **stmts, int n, char *rest,
                             const char *why)
{
    log_unrun_sets(s, stmts, n, "42601", why);
    /* (Three more splits at most: a query of a thousand SETs logged a
     * thousand lines.) */
    for (int more_splits = 0; rest && more_splits < 3; more_splits++) {
        char *more[ADMIN_MAX_STMTS];
        int m = 0;
        (void)split_query(rest, more, ADMIN_MAX_STMTS, &m, &rest);
        log_unrun_sets(s, more, m, "42601", why);
    }
}

/* ---- dispatch ---- */

typedef int (*admin_cmd_fn)(struct pgw_session *s, const char *arg, struct pgw_wbuf *out);

struct admin_cmd {
    const char *word;
    bool needs_admin;
    admin_cmd_fn fn;
};

/* SHOW (SELECT) of a view run_stmt found known. */
static int cmd_show(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    return pgw_admin_show(s, arg, out);
}

/* PgBouncer's SUSPEND flushes every buffer and stops reading, for an
 * online restart (-R) to take the sockets over; pgwharf has none, so it
 * says so instead of "invalid command". */
static int cmd_suspend(struct pgw_session *s, const char *arg, struct pgw_wbuf *out)
{
    (void)s;
    if (*arg)
        return pgw_admin_error(out, "42601", "invalid command 'SUSPEND %s', use SHOW HELP;", arg);
    return pgw_admin_error(out, "0A000", "SUSPEND is not supported: pgwharf has no online "
                           "restart (-R); use PAUSE, or so_reuseport and SHUTDOWN "
                           "WAIT_FOR_CLIENTS");
}

static const struct admin_cmd admin_cmds[] = {
    { "show",        false, cmd_show },
    { "select",      false, cmd_show },     /* PgBouncer's alias: SELECT pools */
    { "pause",       true,  pgw_admin_cmd_pause },
    { "resume",      true,  pgw_admin_cmd_resume },
    { "disable",     true,  pgw_admin_cmd_disable },
    { "enable",      true,  pgw_admin_cmd_enable },
    { "kill",        true,  pgw_admin_cmd_kill },
    { "kill_client", true,  pgw_admin_cmd_kill_client },
    { "reconnect",   true,  pgw_admin_cmd_reconnect },
    { "wait_close",  true,  pgw_admin_cmd_wait_close },
    { "reload",      true,  pgw_admin_cmd_reload },
    { "shutdown",    true,  pgw_admin_cmd_shutdown },
    { "suspend",     true,  cmd_suspend },
};

/* Session parameters drivers like to SET on connect: accepted and ignored. */
static bool fake_param(const char *name)
{
    static const char *const names[] = {
        "client_encoding", "default_transaction_isolation", "standard_conforming_strings",
        "datestyle", "timezone", "extra_float_digits", "application_name"
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return false;
}

static int run_stmt(struct pgw_session *s, const char *text, bool last, struct pgw_wbuf *out)
{
    struct admin_stmt st;
    if (parse_stmt(text, &st) < 0) {
        if (st.is_set)       /* logged as every SET refused (admin_set_failed) */
            return pgw_admin_set_failed(s, st.key, st.value, "42601", out,
                                        "invalid command '%s', use SHOW HELP;", text);
        return pgw_admin_error(out, "42601", "invalid command '%s', use SHOW HELP;", text);
    }
    if (st.is_set) {
        if (fake_param(st.key)) {
            pgw_wire_notice(out, "00000", "SET ignored");
            pgw_wire_command_complete(out, "SET");
            return PGW_ADMIN_DONE;
        }
        if (!s->admin_can_write)
            return pgw_admin_set_failed(s, st.key, st.value, "42501", out,
                                        "admin access needed");
        return pgw_admin_cmd_set(s, st.key, st.value, out);
    }
    for (size_t i = 0; i < sizeof(admin_cmds) / sizeof(admin_cmds[0]); i++) {
        const struct admin_cmd *c = &admin_cmds[i];
        if (strcasecmp(st.cmd, c->word) != 0)
            continue;
        if (c->needs_admin && !s->admin_can_write)
            return pgw_admin_error(out, "42501", "admin access needed");
        /* PgBouncer's words for a view it does not know, the statement as
         * typed ('show foo', 'select 1'): scripts match on them. */
        if (c->fn == cmd_show && (!*st.arg || !pgw_admin_show_known(st.arg)))
            return pgw_admin_error(out, "42601", "invalid command '%s', use SHOW HELP;", text);
        if (c->fn == pgw_admin_cmd_wait_close && !last)
            return pgw_admin_error(out, "42601", "WAIT_CLOSE must be the last command of a query");
        s->admin_last = last;
        return c->fn(s, st.arg, out);
    }
    return pgw_admin_error(out, "42601", "invalid command '%s', use SHOW HELP;", text);
}

static void run_query(struct pgw_session *s, const uint8_t *body, size_t len)
{
    struct pgw_wbuf out;
    pgw_wbuf_init(&out);
    char *q = NULL;
    /* As PostgreSQL reads a Query: one string, the whole message (an
     * ERROR, the session goes on). */
    const uint8_t *nul = memchr(body, 0, len);
    if (nul && nul == body + len - 1 && !(q = strdup((const char *)body))) {
        pgw_wbuf_deinit(&out);
        pgw_session_close(s, "53200", "out of memory");
        return;
    }
    char *stmts[ADMIN_MAX_STMTS], *rest = NULL;
    int n = 0, i = 0;
    int rc = PGW_ADMIN_DONE;
    if (!q) {
        pgw_admin_error(&out, "08P01", nul ? "invalid message format"
                                           : "invalid string in message");
    } else if (split_query(q, stmts, ADMIN_MAX_STMTS, &n, &rest) < 0) {
        char why[120];
        snprintf(why, sizeof(why), "cannot parse the query (unclosed quote or more than %d "
                 "commands)", ADMIN_MAX_STMTS);
        log_unsplit_sets(s, stmts, n, rest, why);
        pgw_admin_error(&out, "42601", "%s", why);
        n = 0;
    } else if (n == 0) {
        size_t m = pgw_wbuf_msg_begin(&out, PGW_BE_EMPTY_QUERY);
        pgw_wbuf_msg_end(&out, m);
    }
    for (; i < n && rc == PGW_ADMIN_DONE && s->state == PGW_SS_ADMIN; i++) {
        char qu[200], qc[600];
        pgw_debug("admin", "client=%s user=%s command=%s", s->addr_text,
                  pgw_log_quote(qu, sizeof(qu), s->user), pgw_log_quote(qc, sizeof(qc), stmts[i]));
        rc = run_stmt(s, stmts[i], i == n - 1, &out);
    }
    /* Past a command that failed the rest of the query does not run, as
     * in PostgreSQL (nor past one that waits, or ended the session): its
     * SETs are logged too. */
    if (i < n)
        log_unrun_sets(s, stmts + i, n - i, "25P02", rc == PGW_ADMIN_FAILED
                       ? "not run: an earlier command of the query failed"
                       : "not run: an earlier command of the query ended it");
    free(q);
    if (rc != PGW_ADMIN_DEFERRED)
        pgw_wire_ready(&out, 'I');
    if (s->state == PGW_SS_ADMIN)
        admin_queue(s, &out);
    pgw_wbuf_deinit(&out);
}

#define SIMPLE_ONLY "the admin console takes simple queries only"

/* An 08P01 `error` (NULL: none), then ReadyForQuery if `ready`. */
static void reply_simple(struct pgw_session *s, const char *error, char ready)
{
    struct pgw_wbuf out;
    pgw_wbuf_init(&out);
    if (error)
        pgw_admin_error(&out, "08P01", "%s", error);
    if (ready)
        pgw_wire_ready(&out, ready);
    admin_queue(s, &out);
    pgw_wbuf_deinit(&out);
}

/* Is type one PgBouncer's console takes (counting its session, as
 * handle_client_work does before it hands the message to the console),
 * not Terminate and not one it disconnects for? */
static bool console_counts(uint8_t type)
{
    switch (type) {
    case PGW_FE_QUERY:
    case PGW_FE_FUNCTION_CALL:
    case PGW_FE_SYNC:
    case PGW_FE_FLUSH:
    case PGW_FE_PARSE:
    case PGW_FE_BIND:
    case PGW_FE_DESCRIBE:
    case PGW_FE_EXECUTE:
    case PGW_FE_CLOSE:
    case PGW_FE_COPY_DATA:
    case PGW_FE_COPY_DONE:
    case PGW_FE_COPY_FAIL:
        return true;
    default:
        return false;
    }
}

static void handle_message(struct pgw_session *s, uint8_t type, const uint8_t *body, size_t len)
{
    /* The console's SHOW STATS row: a session counts at its first message
     * of any kind PgBouncer takes (a Parse or a Sync too, not only a
     * Query), as PgBouncer's counts its query and transaction then. */
    if (!s->admin_counted && s->px->admin && console_counts(type)) {
        s->admin_counted = true;
        pgw_stats_console_query(s->px->admin->stats);
    }
    switch (type) {
    case PGW_FE_TERMINATE:
        pgw_session_close(s, NULL, "client terminated");
        return;
    case PGW_FE_SYNC:
        /* (One with a body: PostgreSQL's 08P01, then ReadyForQuery.) */
        s->admin_skip = false;
        reply_simple(s, len > 0 ? "invalid message format" : NULL, 'I');
        return;
    case PGW_FE_QUERY:
        if (!s->admin_skip)
            run_query(s, body, len);
        return;
    case PGW_FE_FUNCTION_CALL:
        reply_simple(s, SIMPLE_ONLY, 'I');
        return;
    case PGW_FE_FLUSH:
        /* Nothing pending: PostgreSQL does nothing either (it set
         * skipping: a Query after it was dropped).  One with a body: its
         * 08P01, skipping to the next Sync (unless skipping already). */
        if (len > 0 && !s->admin_skip) {
            reply_simple(s, "invalid message format", 0);
            s->admin_skip = true;
        }
        return;
    case PGW_FE_PARSE:
    case PGW_FE_BIND:
    case PGW_FE_DESCRIBE:
    case PGW_FE_EXECUTE:
    case PGW_FE_CLOSE:
        if (!s->admin_skip)
            reply_simple(s, SIMPLE_ONLY, 0);
        s->admin_skip = true;            /* drop the rest up to Sync */
        return;
    case PGW_FE_COPY_DATA:
    case PGW_FE_COPY_DONE:
    case PGW_FE_COPY_FAIL:
        return;                          /* no COPY here: ignore, as PostgreSQL does */
    default:
        pgw_session_close(s, "08P01", "invalid frontend message type %d", type);
        return;
    }
}

void pgw_admin_input(struct pgw_session *s)
{
    struct pgw_iobuf *b = s->cbuf;
    /* One message at a time, and only once the last reply is handed over. */
    while (b && s->state == PGW_SS_ADMIN && !s->admin_waiting && s->admin_out.len == 0 &&
           b->sent < b->len) {
        long n = pgw_msg_complete(b->data + b->sent, b->len - b->sent, b->cap - PGW_MSG_HDR);
        if (n < 0) {
            pgw_session_close(s, "08P01", "invalid message length");
            return;
        }
        if (n == 0) {
            if (b->sent > 0)
                pgw_iobuf_compact(b);    /* make room for the rest */
            break;
        }
        const uint8_t *msg = b->data + b->sent;
        b->sent += (uint32_t)n;
        b->parsed = b->sent;
        handle_message(s, msg[0], msg + PGW_MSG_HDR, (size_t)n - PGW_MSG_HDR);
    }
    if (s->state != PGW_SS_ADMIN || s->cbuf != b || !b)
        return;
    if (b->sent == b->len)
        b->sent = b->parsed = b->len = 0;
    /* client_read_cb stops reading when the buffer fills; read on. */
    if (!s->admin_waiting && !ev_is_active(&s->cli_r) && b->len < b->cap)
        ev_io_start(s->px->loop, &s->cli_r);
}

void pgw_admin_resume_input(struct pgw_session *s)
{
    if (s->state == PGW_SS_ADMIN && !s->admin_waiting && s->admin_out.len == 0)
        pgw_admin_input(s);
}

/* The end of a deferred command: CommandComplete with tag, or (sqlstate
 * given) an ErrorResponse with msg; then ReadyForQuery. */
static void deferred_end(struct pgw_session *s, const char *tag, const char *sqlstate,
                         const char *msg)
{
    struct pgw_wbuf out;
    pgw_wbuf_init(&out);
    if (sqlstate)
        pgw_admin_error(&out, sqlstate, "%s", msg);
    else
        pgw_wire_command_complete(&out, tag);
    pgw_wire_ready(&out, 'I');
    s->admin_waiting = false;
    s->admin_wait_pause = false;
    s->admin_wait_undo = false;
    s->admin_wait_db[0] = '\0';
    /* Idle from this ReadyForQuery on (client_idle_timeout), not from
     * the query the wait began with. */
    s->last_activity = pgw_mono_now(s->px->loop);
    pgw_session_arm_timer(s);
    admin_queue(s, &out);
    pgw_wbuf_deinit(&out);
    pgw_admin_resume_input(s);
}

void pgw_admin_deferred_reply(struct pgw_session *s, const char *tag)
{
    deferred_end(s, tag, NULL, NULL);
}

void pgw_admin_deferred_fail(struct pgw_session *s, const char *sqlstate, const char *msg)
{
    deferred_end(s, NULL, sqlstate, msg);
}

/* ---- the admin state ---- */

static void wait_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgw_admin *adm = pgw_container_of(w, struct pgw_admin, wait_timer);
    pgw_admin_wait_tick(adm->px);
}

/* A server a waiting PAUSE or WAIT_CLOSE marked has closed: the wait is
 * checked in the next loop turn, as PgBouncer checks it after every turn,
 * not at the next tick (up to PGW_ADMIN_WAIT_TICK later: a PAUSE under load held
 * every client that long after the last transaction ended).  The tick
 * stays for what closes no server (a RESUME keeping the marked ones). */
static void server_closed(const struct pgw_server *srv, void *arg)
{
    struct pgw_admin *adm = arg;
    if (!ev_is_active(&adm->wait_timer))
        return;
    for (int i = 0; i < adm->nmarks; i++) {
        if (adm->marks[i].server_id != srv->id)
            continue;
        ev_timer_stop(adm->px->loop, &adm->wait_timer);
        ev_timer_set(&adm->wait_timer, 0., PGW_ADMIN_WAIT_TICK);
        ev_timer_start(adm->px->loop, &adm->wait_timer);
        return;
    }
}

int pgw_admin_init(struct pgw_proxy *px, char *errbuf, size_t errlen)
{
    struct pgw_admin *adm = calloc(1, sizeof(*adm));
    if (!adm) {
        snprintf(errbuf, errlen, "out of memory");
        return PGW_ENOMEM;
    }
    adm->px = px;
    ev_init(&adm->wait_timer, wait_timer_cb);
    ev_init(&adm->shutdown_timer, NULL);
    px->admin = adm;
    pgw_pool_set_closed_hook(px->pools, server_closed, adm);
    adm->stats = pgw_stats_create(px);
    if (!adm->stats) {
        snprintf(errbuf, errlen, "out of memory");
        pgw_admin_deinit(px);
        return PGW_ENOMEM;
    }
    int rc = pgw_metrics_create(px, &adm->metrics, errbuf, errlen);
    if (rc < 0) {
        pgw_admin_deinit(px);
        return rc;
    }
    return 0;
}

int pgw_admin_prepare_reload(struct pgw_proxy *px, const struct pgw_config *cfg, char *errbuf,
                             size_t errlen)
{
    return px->admin ? pgw_metrics_reconfigure(px->admin->metrics, cfg, errbuf, errlen) : 0;
}

void pgw_admin_reload(struct pgw_proxy *px)
{
    if (px->admin)
        pgw_stats_reconfigure(px->admin->stats);
}

void pgw_admin_deinit(struct pgw_proxy *px)
{
    struct pgw_admin *adm = px->admin;
    if (!adm)
        return;
    ev_timer_stop(px->loop, &adm->wait_timer);
    ev_timer_stop(px->loop, &adm->shutdown_timer);
    if (px->pools)
        pgw_pool_set_closed_hook(px->pools, NULL, NULL);
    pgw_metrics_destroy(adm->metrics);
    pgw_stats_destroy(adm->stats);
    pgw_names_deinit(&adm->paused);
    pgw_names_deinit(&adm->disabled);
    for (int i = 0; i < adm->nmarks; i++)
        free(adm->marks[i].db);
    free(adm->marks);
    free(adm);
    px->admin = NULL;
}

void pgw_admin_session_gone(struct pgw_session *s)
{
    if (s->px->admin)
        pgw_stats_session_gone(s->px->admin->stats, s);
    pgw_wbuf_deinit(&s->admin_out);
}
