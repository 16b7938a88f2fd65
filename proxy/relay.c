/*
 * relay.c - moving protocol bytes between a client and its lent server.
 *
 * Only the 5-byte message headers are parsed on the hot path; bodies pass
 * untouched, in pieces if they are larger than a buffer.  The few messages
 * the pooler must read (ReadyForQuery, ParameterStatus, and everything it
 * swallows) are inspected whole.  Counters decide when a server may go
 * back to the pool in transaction/statement mode:
 *   sync_out  Sync/Query/FunctionCall sent whose ReadyForQuery is not back
 *   fe_open   messages sent since the last Sync/Query (an open batch)
 * A server is released at ReadyForQuery 'I' when both are zero.
 *
 * Backpressure: a full buffer stops reading its source until the
 * destination drains it; nothing grows without bound.
 */
#include "proxy/proxy_int.h"

#include <ctype.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/hmap.h"
#include "common/log.h"
#include "common/pgenc.h"
#include "proxy/codec.h"
#include "proxy/prepared.h"

#define MSG_MAX (1u << 30)

/* libev could not watch the server's socket (epoll_ctl failed): its
 * watchers are stopped for good, so the server is lost to its client. */
static bool srv_watch_failed(struct pgw_server *srv, int revents)
{
    if (!(revents & EV_ERROR))
        return false;
    srv->user_pipe_broken = true;
    pgw_pool_server_lost(srv);
    pgw_session_close(srv->link, "08006", "could not watch the server connection for events");
    return true;
}

void pgw_relay_srv_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgw_server *srv = pgw_container_of(w, struct pgw_server, user_r);
    if (!srv->link) {
        ev_io_stop(loop, w);
        return;
    }
    if (srv_watch_failed(srv, revents))
        return;
    pgw_relay_server_readable(srv->link);
}

void pgw_relay_srv_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgw_server *srv = pgw_container_of(w, struct pgw_server, user_w);
    if (!srv->link) {
        ev_io_stop(loop, w);
        return;
    }
    if (srv_watch_failed(srv, revents))
        return;
    pgw_relay_flush_server(srv->link);
}

static void send_ready(struct pgw_session *s, char status)
{
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_ready(&b, status);
    pgw_session_send(s, &b);
    pgw_wbuf_deinit(&b);
}

static void send_error(struct pgw_session *s, const char *sqlstate, const char *msg)
{
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_error(&b, "ERROR", sqlstate, "%s", msg);
    pgw_session_send(s, &b);
    pgw_wbuf_deinit(&b);
}

/* ---- parameters ---- */

/* A Query message setting name to value as a startup parameter would:
 * set_config takes the text as it is, where SET name TO 'a, b' makes one
 * quoted element of a list parameter (search_path).  The value is
 * dollar-quoted (pgw_dollar_tag), whole however long: the server reads the
 * query in the client's client_encoding, where an E'' literal with
 * backslashes doubled byte by byte loses a doubling to a SJIS (BIG5, GBK
 * ...) character whose second byte is 0x5C, and the quote after it ends
 * the literal early.  local: set_config's is_local, the value gone at the
 * end of the statement's transaction. */
static void value_literal(struct pgw_wbuf *b, const char *value, bool raw)
{
    const char *v = value;
    while (*v && (unsigned char)*v < 0x80)
        v++;
    if (raw && *v) {
        /* Bytes of the server's encoding (a startup value, which
         * PostgreSQL takes as it is): in hex, or the server would read
         * them in the client_encoding SET before. */
        static const char dec[] = "pg_catalog.convert_from(pg_catalog.decode('",
                          enc[] = "', 'hex'), pg_catalog.current_setting('server_encoding'))";
        static const char hex[] = "0123456789abcdef";
        pgw_wbuf_append(b, dec, sizeof(dec) - 1);
        for (v = value; *v; v++) {
            char h[2] = { hex[(unsigned char)*v >> 4], hex[(unsigned char)*v & 15] };
            pgw_wbuf_append(b, h, 2);
        }
        pgw_wbuf_append(b, enc, sizeof(enc) - 1);
    } else {
        char tag[PGW_DOLLAR_TAG_MAX];
        pgw_dollar_tag(value, tag);
        pgw_wbuf_append(b, tag, strlen(tag));
        pgw_wbuf_append(b, value, strlen(value));
        pgw_wbuf_append(b, tag, strlen(tag));
    }
}

static void set_config_call(struct pgw_wbuf *b, const char *name, const char *value, bool raw,
                            bool local)
{
    static const char head[] = "pg_catalog.set_config('", mid[] = "', ";
    const char *tail = local ? ", true)" : ", false)";
    pgw_wbuf_append(b, head, sizeof(head) - 1);
    pgw_wbuf_append(b, name, strlen(name));      /* a name of letters, digits, _ $ . */
    pgw_wbuf_append(b, mid, sizeof(mid) - 1);
    value_literal(b, value, raw);
    pgw_wbuf_append(b, tail, strlen(tail));
}

/* The name of pgwharf's own statement and portal, which no client has
 * (one made of printable characters could be a client's). */
#define OWN_NAME "\001pgwharf"

/* One statement of sync_params, written between these two: a simple
 * Query -- or, keep, where the client's own unnamed statement is on the
 * server (any simple Query drops it: its Bind got 26000, hunt), the
 * extended protocol with a statement of pgwharf's, closed before it runs
 * (a refused value leaves nothing behind): Close, Parse, Bind, Close,
 * Execute, Sync.  Either way one ReadyForQuery ends its replies. */
static size_t sync_stmt_begin(struct pgw_wbuf *b, bool keep)
{
    if (keep) {
        /* (One left by a Bind that failed -- a statement_timeout, a
         * cancel -- would fail every Parse of it after.) */
        size_t c = pgw_wbuf_msg_begin(b, PGW_FE_CLOSE);
        pgw_wbuf_append(b, "S", 1);
        pgw_wbuf_append(b, OWN_NAME, sizeof(OWN_NAME));      /* (its NUL too) */
        pgw_wbuf_msg_end(b, c);
    }
    size_t m = pgw_wbuf_msg_begin(b, keep ? PGW_FE_PARSE : PGW_FE_QUERY);
    if (keep)
        pgw_wbuf_append(b, OWN_NAME, sizeof(OWN_NAME));
    return m;
}

static void sync_stmt_end(struct pgw_wbuf *b, size_t m, bool keep)
{
    pgw_wbuf_append(b, "", 1);                   /* the statement's NUL */
    if (!keep) {
        pgw_wbuf_msg_end(b, m);
        return;
    }
    pgw_wbuf_append(b, "\0", 2);                 /* no parameter types */
    pgw_wbuf_msg_end(b, m);
    m = pgw_wbuf_msg_begin(b, PGW_FE_BIND);      /* the unnamed portal: none is open */
    pgw_wbuf_append(b, "", 1);
    pgw_wbuf_append(b, OWN_NAME, sizeof(OWN_NAME));
    pgw_wbuf_append(b, "\0\0\0\0\0", 6);       /* no formats, parameters, result formats */
    pgw_wbuf_msg_end(b, m);
    m = pgw_wbuf_msg_begin(b, PGW_FE_CLOSE);
    pgw_wbuf_append(b, "S", 1);
    pgw_wbuf_append(b, OWN_NAME, sizeof(OWN_NAME));
    pgw_wbuf_msg_end(b, m);
    m = pgw_wbuf_msg_begin(b, PGW_FE_EXECUTE);
    pgw_wbuf_append(b, "\0\0\0\0", 5);         /* the unnamed portal, all rows */
    pgw_wbuf_msg_end(b, m);
    pgw_wbuf_msg_end(b, pgw_wbuf_msg_begin(b, PGW_FE_SYNC));
}

/* A statement setting name to value; with base, to base first: a DateStyle
 * of one part ("SQL", "DMY": a startup value) keeps the other part of the
 * value it replaces, which must be a fresh server's (base), as when
 * PostgreSQL reads it at a login, not the last client's.  raw: value is
 * in the server's encoding, not the client's (set_config_call).  keep:
 * sync_stmt_begin. */
static void set_config_query(struct pgw_wbuf *b, const char *name, const char *value,
                             const char *base, bool raw, bool keep)
{
    size_t m = sync_stmt_begin(b, keep);
    pgw_wbuf_append(b, "SELECT ", 7);
    if (base) {
        set_config_call(b, name, base, false, false);
        pgw_wbuf_append(b, ", ", 2);
    }
    set_config_call(b, name, value, raw, false);
    sync_stmt_end(b, m, keep);
}

/* Queue SETs that make the server's tracked parameters match what the
 * client has seen; their replies are swallowed. */
/* A summary of the client's tracked values (0 = none yet). */
static uint64_t params_sig(const struct pgw_session *s)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < s->px->ntracked; i++) {
        const char *v = s->params[i];
        h = pgw_hash_bytes(v ? v : "\001", v ? strlen(v) + 1 : 1, h);
    }
    return h ? h : 1;
}

/* Packed lists of NUL-terminated strings (a server's user_vals, a
 * welcome's struct pgw_told): str copied at p, with its NUL; the end of it. */
static char *pack_str(char *p, const char *str)
{
    size_t n = strlen(str) + 1;
    memcpy(p, str, n);
    return p + n;
}

/* Is str, with its NUL, next at *p (before end)?  Then *p passes it. */
static bool packed_eq(const char **p, const char *end, const char *str)
{
    size_t n = strlen(str) + 1;
    if ((size_t)(end - *p) < n || memcmp(*p, str, n) != 0)
        return false;
    *p += n;
    return true;
}

/* The client's tracked values as srv keeps them beside user_sig: for each,
 * a byte 0 (none) or 1 and the value with its NUL.  False when out of
 * memory.  The buffer only grows: a link that SETs allocates nothing once
 * it is as long as the longest so far. */
static bool params_keep(struct pgw_server *srv, const struct pgw_session *s)
{
    size_t len = 0;
    for (int i = 0; i < s->px->ntracked; i++)
        len += 1 + (s->params[i] ? strlen(s->params[i]) + 1 : 0);
    if (len > UINT32_MAX)
        return false;
    if (len > srv->user_vals_cap) {
        char *p = realloc(srv->user_vals, len);
        if (!p)
            return false;
        srv->user_vals = p;
        srv->user_vals_cap = (uint32_t)len;
    }
    char *p = srv->user_vals;
    for (int i = 0; i < s->px->ntracked; i++) {
        *p++ = s->params[i] != NULL;
        if (s->params[i])
            p = pack_str(p, s->params[i]);
    }
    srv->user_vals_len = (uint32_t)len;
    return true;
}

/* Was srv left with the client's settings?  Its summary says so, and the
 * values it kept (params_keep) confirm it: params_sig is a 64-bit hash,
 * which a client could make collide with another's on purpose, and then
 * run with its settings (a search_path of its own schema).  A few short
 * compares, no lookups. */
static bool params_match(const struct pgw_server *srv, const struct pgw_session *s)
{
    if (srv->user_sig != s->params_sig || srv->user_sig_gen != srv->params.gen)
        return false;
    const char *p = srv->user_vals, *end = p + srv->user_vals_len;
    if (!p)
        return false;
    for (int i = 0; i < s->px->ntracked; i++) {
        if (p == end || *p++ != (s->params[i] != NULL))
            return false;
        if (s->params[i] && !packed_eq(&p, end, s->params[i]))
            return false;
    }
    return p == end;
}

/* Does PostgreSQL report name (ParameterStatus)?  A fresh server of the
 * pool did.  A server's record of one it does not (extra_float_digits) is
 * only what pgwharf SET there, for whichever client. */
static bool param_reported(const struct pgw_pool *pool, const char *name)
{
    return pgw_params_get(pgw_pool_defaults(pool), name) != NULL;
}

_Static_assert(PGW_TP_MAX <= 27, "a tracked parameter's bit is one of PGW_WORDS_*");

/* The tracked parameters a fresh server of pool does not report, bit i for
 * px->tracked[i]: worked out once per change of the pool's defaults (a
 * lookup per name on every message cost more than the relay's own work). */
static uint32_t unreported_mask(const struct pgw_proxy *px, struct pgw_pool *pool)
{
    uint32_t mask;
    if (pgw_pool_defaults_memo(pool, &mask))
        return mask;
    mask = 0;
    for (int i = 0; i < px->ntracked; i++)
        if (!param_reported(pool, px->tracked[i]))
            mask |= 1u << i;
    pgw_pool_set_defaults_memo(pool, mask);
    return mask;
}

/* What pgwharf SET on srv of a parameter the server does not report is
 * unknown from now on ("": the next client gets a SET or RESET, even one
 * that wants ""), after server_reset_query, a refused SET, or a value too
 * long for the record; all: those pgwharf never SET too (a client may have
 * set them: note_setting_words). */
static void forget_unreported(const struct pgw_proxy *px, struct pgw_server *srv, bool all)
{
    uint32_t mask = unreported_mask(px, srv->pool);
    for (int i = 0; i < px->ntracked; i++) {
        const char *name = px->tracked[i];
        if ((mask & (1u << i)) && (all || pgw_params_get(&srv->params, name)))
            pgw_params_set(&srv->params, name, "");
    }
}

/* A letter, digit, _, $ or a byte of a multibyte character: what an SQL
 * identifier is made of (C locale, whatever the process's). */
static const uint8_t sql_ident[256] = {
    ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1, ['_'] = 1, ['$'] = 1,
    [0x80 ... 0xff] = 1,
};

static inline uint8_t lower_ascii(uint8_t c)
{
    return (uint8_t)(c - 'A') < 26 ? (uint8_t)(c | 0x20) : c;
}

/* Does p[0..n) begin with word (m bytes), in any case, not followed by an
 * identifier character (password_resets holds no RESET)? */
static bool word_at(const uint8_t *p, size_t n, const char *word, size_t m)
{
    if (m > n)
        return false;
    for (size_t k = 0; k < m; k++)
        if (lower_ascii(p[k]) != lower_ascii((uint8_t)word[k]))
            return false;
    return m == n || !sql_ident[p[m]];
}

/* Does a statement beginning with this word (left bytes at q) hold SET
 * only as a part of its own (UPDATE ... SET, ALTER ... SET, CREATE
 * FUNCTION ... SET), never the command? */
/* Does a statement beginning with this word end a transaction (which
 * takes back its SET LOCALs, and its SETs on a rollback)? */
static bool ends_a_transaction(const uint8_t *q, size_t left)
{
    switch (lower_ascii(*q)) {
    case 'c': return word_at(q, left, "commit", 6);
    case 'r': return word_at(q, left, "rollback", 8);
    case 'a': return word_at(q, left, "abort", 5);
    case 'e': return word_at(q, left, "end", 3);
    default: return false;
    }
}

static bool set_is_a_clause(const uint8_t *q, size_t left)
{
    switch (lower_ascii(*q)) {
    case 'u': return word_at(q, left, "update", 6);
    case 'i': return word_at(q, left, "insert", 6);
    case 'm': return word_at(q, left, "merge", 5);
    case 'a': return word_at(q, left, "alter", 5);
    case 'c': return word_at(q, left, "create", 6);
    case 'w': return word_at(q, left, "with", 4);
    default: return false;
    }
}

/* The most bytes of blanks, quotes and comments tracked_word reads
 * between an extension parameter's name parts. */
#define TRACKED_GAP_MAX 256

/* Does the word at q (left bytes to the text's end) name tracked
 * parameter t?  Its name, or for an extension's (a dot in it) its first
 * part alone: PostgreSQL reads "myext"."mode" and myext . mode as
 * myext.mode (review r4 of session 53). */
static bool tracked_word(const struct pgw_proxy *px, int t, const uint8_t *q, size_t left)
{
    const char *name = px->tracked[t];
    size_t len = px->tracked_len[t];
    if (lower_ascii(*q) != lower_ascii((uint8_t)name[0]))
        return false;
    if (word_at(q, left, name, len))
        return true;
    const char *dot = memchr(name, '.', len);
    if (!dot || !word_at(q, left, name, (size_t)(dot - name)))
        return false;
    /* (its first part, then a '.' and its rest, each maybe quoted, with
     * blanks or comments between: PostgreSQL's comments, codec's; its
     * blanks, a form feed among them -- and a vertical tab, which 15
     * rejects there: a false alarm at worst.  A gap longer than
     * TRACKED_GAP_MAX is taken for the name, a false alarm at worst: read
     * to its end for each such word, a text of many before long comments
     * (select 1 -- myext --myext ...) took quadratic time, review r7 of
     * session 54.) */
    const uint8_t *e = q + left, *gap = q + (dot - name), *r = gap;
    bool dotted = false;
    size_t k;
    while (r < e) {
        if ((size_t)(r - gap) > TRACKED_GAP_MAX)
            return true;
        if (*r == '"' || *r == ' ' || *r == '\t' || *r == '\n' || *r == '\r' || *r == '\f' ||
            *r == '\v' || (*r == '.' && !dotted)) {
            dotted |= *r == '.';
            r++;
        } else if ((k = pgw_sql_comment_len((const char *)r,
                                            (size_t)(e - r) < TRACKED_GAP_MAX + 2
                                                ? (size_t)(e - r) : TRACKED_GAP_MAX + 2)) > 0) {
            r += k;                     /* (one cut short: past the limit) */
        } else {
            break;
        }
    }
    return dotted && r < e && word_at(r, (size_t)(e - r), dot + 1, len - (size_t)(dot - name) - 1);
}

/* The tracked parameters in want named by an SQL spelling of their own
 * SET (SET SCHEMA, SET XML OPTION, SET SESSION CHARACTERISTICS AS
 * TRANSACTION), the word at q (left bytes); 0 for any other word. */
static uint32_t spelled_words(const struct pgw_proxy *px, const uint8_t *q, size_t left,
                              uint32_t want)
{
    static const char *const schema[] = { "search_path", NULL },
                             *const xml[] = { "xmloption", NULL },
                             *const chars[] = { "default_transaction_isolation",
                                                "default_transaction_read_only",
                                                "default_transaction_deferrable", NULL };
    const char *const *names;
    switch (lower_ascii(*q)) {
    case 's': names = word_at(q, left, "schema", 6) ? schema : NULL; break;
    case 'x': names = word_at(q, left, "xml", 3) ? xml : NULL; break;
    case 'c': names = word_at(q, left, "characteristics", 15) ? chars : NULL; break;
    default: names = NULL; break;
    }
    uint32_t found = 0;
    for (; names && *names; names++)
        for (uint32_t m = want; m; m &= m - 1) {
            int t = __builtin_ctz(m);
            if (strcasecmp(px->tracked[t], *names) == 0)
                found |= 1u << t;
        }
    return found;
}

static const uint8_t *skip_blanks(const uint8_t *q, const uint8_t *e)
{
    while (q < e && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
        q++;
    return q;
}

/* Is the first argument of the set_config at q (left bytes) a string
 * literal, whole ('...' then the comma)?  Then the name is a word of the
 * text (its parameter is seen by name); otherwise (a bound $1, a column,
 * an expression such as 'search_' || 'path') it may be any. */
static bool set_config_literal(const uint8_t *q, size_t left)
{
    const uint8_t *e = q + left;
    q = skip_blanks(q + 10, e);
    if (q >= e || *q++ != '(')
        return false;
    q = skip_blanks(q, e);
    if (q >= e || *q++ != '\'')
        return false;
    for (;;) {                       /* to the closing quote ('' is one quote) */
        while (q < e && *q != '\'') {
            if (*q == '\\')
                return false;        /* (an escape, standard_conforming_strings off) */
            q++;
        }
        if (q + 1 < e && q[1] == '\'') {
            q += 2;
            continue;
        }
        break;
    }
    if (q >= e)
        return false;
    q = skip_blanks(q + 1, e);
    return q < e && *q == ',';
}

/* Where a literal or quoted name opened by the quote at q ends ('' and
 * "" are the quote itself; with escapes, an E'...' literal, a backslash
 * takes the byte behind it), lim at the latest: past its closing quote. */
static const uint8_t *quote_end(const uint8_t *q, const uint8_t *lim, bool escapes)
{
    uint8_t c = *q;
    for (q++; q < lim; q++) {
        if (*q == '\\' && escapes) {
            q++;
            continue;
        }
        if (*q != c)
            continue;
        if (q + 1 < lim && q[1] == c)
            q++;
        else
            return q + 1;
    }
    return lim;
}

/* Where the dollar quote opened at q ($$ or $tag$, as PostgreSQL's
 * scanner reads a '$' that starts a word) ends, lim at the latest; NULL
 * when none opens there ($1, a parameter). */
static const uint8_t *dollar_quote_end(const uint8_t *q, const uint8_t *lim)
{
    const uint8_t *r = q + 1;
    if (r < lim && sql_ident[*r] && (uint8_t)(*r - '0') >= 10 && *r != '$')
        while (r < lim && sql_ident[*r] && *r != '$')
            r++;
    if (r >= lim || *r != '$')
        return NULL;
    size_t m = (size_t)(r + 1 - q);
    for (r++; r + m <= lim; r++)
        if (*r == '$' && memcmp(r, q, m) == 0)
            return r + m;
    return lim;
}

/* Do blanks, then a word, follow at q before lim, or a quoted name or a
 * comment, blanks before it or not?  (CREATE or INTO so in a literal: a
 * statement, what a function of the client's may run -- select
 * run_sql('create table t (a int)'), run_sql('explain analyze select 1
 * into"t"') -- not 'CREATE' or 'action:create'.)  PostgreSQL's blanks: a
 * form feed too (run_sql('create\ftable t (a int)') made its table
 * unseen: review r4 of session 54), and a vertical tab (which 15 rejects
 * there: a false alarm at worst). */
static bool word_follows(const uint8_t *q, const uint8_t *lim)
{
    const uint8_t *r = q;
    while (r < lim && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r' || *r == '\f' ||
                       *r == '\v'))
        r++;
    if (r < lim && (*r == '"' || (r + 1 < lim && ((r[0] == '/' && r[1] == '*') ||
                                                  (r[0] == '-' && r[1] == '-')))))
        return true;
    return r > q && r < lim && sql_ident[*r];
}

/* The lexer of pgw_relay_text_words: which span the byte at q is in --
 * a literal ('\''), a quoted name ('"'), a comment ('-') or a dollar
 * quote ('$'), until span_end; none goes past a NUL (nul: the next one; a
 * Parse's statement name ends at it) -- and in a DO block's body (a
 * dollar quote, until body_end) whether in a literal (inlit; opened: by
 * the last quote) or a dollar quote (until nested_end) of the body's own:
 * SQL that EXECUTE may run, not PL/pgSQL.  lex_at reads each byte the
 * rules read, in order; a word ends where lex_word_end says. */
struct words_lex {
    const uint8_t *p, *end;
    const uint8_t *span_start, *span_end, *nul;
    uint8_t span;
    const uint8_t *body_end, *nested_end;
    bool inlit, opened;
    bool escaped;                       /* a backslash in the body: quotes unread */
    bool nested_comment;                /* until nested_end: a comment of the body's */
};

/* The span the byte at q is in ('\'', '"', '-', '$'), 0 for none. */
static inline uint8_t lex_span(const struct words_lex *lx, const uint8_t *q)
{
    return q < lx->span_end ? lx->span : 0;
}

/* The byte at q: a span opens there, or in a DO block's body a literal or
 * dollar quote of the body's own; do_body: a dollar quote opening here is
 * a DO block's body. */
static inline void lex_at(struct words_lex *lx, const uint8_t *q, bool do_body)
{
    const uint8_t *p = lx->p;
    if (q >= lx->span_end && (*q == '\'' || *q == '"' || *q == '$' || *q == '-' || *q == '/')) {
        if (!lx->nul || lx->nul < q) {
            lx->nul = memchr(q, 0, (size_t)(lx->end - q));
            lx->nul = lx->nul ? lx->nul : lx->end;
        }
        const uint8_t *nul = lx->nul;
        size_t clen = *q == '-' || *q == '/'
                          ? pgw_sql_comment_len((const char *)q, (size_t)(nul - q)) : 0;
        const uint8_t *e = clen ? q + clen
                           : *q == '$' ? (q == p || !sql_ident[q[-1]]
                                              ? dollar_quote_end(q, nul) : NULL)
                           : *q == '\'' || *q == '"'
                               ? quote_end(q, nul, *q == '\'' && q > p &&
                                                       lower_ascii(q[-1]) == 'e' &&
                                                       (q - 1 == p || !sql_ident[q[-2]]))
                               : NULL;
        if (e) {
            lx->span = clen ? '-' : *q;
            lx->span_start = q;
            lx->span_end = e;
            if (lx->span == '$' && do_body) {
                lx->body_end = e;
                lx->inlit = lx->escaped = false;
            }
        }
    } else if (q < lx->body_end && q > lx->span_start) {
        const uint8_t *e = NULL;
        if (q < lx->nested_end) {
            /* (in a dollar quote, comment, quoted name or E'' literal of the
             * body's own) */
        } else if (*q == '\\') {
            lx->escaped = true;         /* (standard_conforming_strings off?) */
        } else if (lx->inlit) {
        } else if (*q == '"') {
            e = quote_end(q, lx->body_end, false);
        } else if (*q == '-' || *q == '/') {
            size_t clen = pgw_sql_comment_len((const char *)q, (size_t)(lx->body_end - q));
            e = clen ? q + clen : NULL;
            lx->nested_comment = clen != 0;
        } else if (*q == '\'' && lower_ascii(q[-1]) == 'e' && !sql_ident[q[-2]]) {
            e = quote_end(q, lx->body_end, true);
        }
        if (e) {
            lx->nested_end = e;         /* (its quotes neither open nor close) */
            lx->opened = false;
            lx->nested_comment &= *q == '-' || *q == '/';
        } else if (*q == '\'' && q >= lx->nested_end) {
            lx->inlit = !lx->inlit;     /* ('' twice) */
            lx->opened = lx->inlit && q[-1] != '\'';
        } else if (*q == '\'') {
            lx->opened = false;
        } else if (*q == '$' && !lx->inlit && q >= lx->nested_end && !sql_ident[q[-1]]) {
            e = dollar_quote_end(q, lx->body_end);
            lx->nested_end = e ? e : lx->nested_end;
            lx->nested_comment &= !e;
        }
    }
}

/* Is q in a comment: the text's, or one in a DO block's body (in: q's
 * span)?  A blank there. */
static inline bool lex_comment(const struct words_lex *lx, const uint8_t *q, uint8_t in)
{
    return in == '-' || (q < lx->nested_end && lx->nested_comment);
}

/* Is q in a DO block's body, not in a literal or dollar quote in it? */
static inline bool lex_in_body(const struct words_lex *lx, const uint8_t *q)
{
    return q < lx->body_end && !lx->inlit && q >= lx->nested_end && !lx->escaped;
}

/* Did the last quote before q, in a DO block's body, open a literal? */
static inline bool lex_opened(const struct words_lex *lx, const uint8_t *q)
{
    return q < lx->body_end && lx->opened && !lx->escaped;
}

/* Where the word at w (an identifier character) ends: a run of them; a
 * dollar quote's closing delimiter ends it, as it ends PostgreSQL's token
 * (select $$a$$into t is SELECT ... INTO t).  In a span a '$' ends a word
 * too, a delimiter's most likely (run_sql($$create table t ...$$),
 * EXECUTE $x$create ...$x$ in a DO block's body): the word goes on past
 * its last; so in a literal, a quoted name or a comment, where the span
 * may be read wrong (a backslash: standard_conforming_strings off). */
static inline const uint8_t *lex_word_end(const struct words_lex *lx, const uint8_t *w)
{
    const uint8_t *q = w + 1;
    while (q < lx->end && sql_ident[*q] && !(lx->span == '$' && q == lx->span_end))
        q++;
    if (w < lx->span_end)
        for (const uint8_t *d = q - 1; d > w; d--)
            if (*d == '$')
                return d + 1;
    return q;
}

/* What a word (left bytes at q) of a blind text says read loose: the
 * words whose meaning the scan takes from its state (a statement's first
 * word, a span, a clause) count wherever they are -- CREATE or INTO
 * (MAKE), SET (its clause unread), EXECUTE (a privilege's unread), HOLD
 * (WITHOUT unread), PREPARE (not known first: PREPARE_IN, what pgwharf
 * does not read), and the words that end a transaction (SET). */
static uint32_t blind_word(const uint8_t *q, size_t left, uint32_t want)
{
    switch (lower_ascii(*q)) {
    case 'c':
        return word_at(q, left, "create", 6) ? PGW_WORDS_MAKE
               : word_at(q, left, "commit", 6) ? PGW_WORDS_SET : 0;
    case 'i': return word_at(q, left, "into", 4) ? PGW_WORDS_MAKE : 0;
    case 's': return word_at(q, left, "set", 3) ? PGW_WORDS_SET : 0;
    case 'e':
        return word_at(q, left, "execute", 7) ? PGW_WORDS_SET | PGW_WORDS_EXECUTE | want
               : word_at(q, left, "end", 3) ? PGW_WORDS_SET : 0;
    case 'p': return word_at(q, left, "prepare", 7) ? PGW_WORDS_PREPARE_IN : 0;
    case 'h': return word_at(q, left, "hold", 4) ? PGW_WORDS_HOLD : 0;
    case 'r': return word_at(q, left, "rollback", 8) ? PGW_WORDS_SET : 0;
    case 'a': return word_at(q, left, "abort", 5) ? PGW_WORDS_SET : 0;
    default: return 0;
    }
}

/* The words of q[0..lim) of a blind text, read with no span at all: a
 * word is a run of identifier characters that a '$' ends too (a dollar
 * quote's delimiter, where one may open: x$$create ..., into$$), each
 * what blind_word says and what the scan reads everywhere (TEMP, RESET,
 * the tracked names -- an extension's in parts to the text's end, as
 * tracked_word reads them: myext . mode, "myext"."mode" -- and a U&""
 * name ...).  For the bytes the scan does not read as words of their
 * own: a comment before a statement (skipped), a word with a '$' in it. */
static uint32_t blind_words(const struct pgw_proxy *px, const uint8_t *q, const uint8_t *lim,
                            const uint8_t *end, uint32_t want)
{
    uint32_t found = 0;
    const uint8_t *from = q, *run_end = q;
    while (q < lim) {
        if (!sql_ident[*q] || *q == '$') {
            /* (U&"extra!005ffloat!005fdigits" UESCAPE '!': any tracked
             * name, as the scan reads one; review r4 of session 54) */
            if (*q == '&' && q + 1 < lim && q[1] == '"' && q > from && lower_ascii(q[-1]) == 'u')
                found |= PGW_WORDS_TEMP | want;
            q++;
            continue;
        }
        const uint8_t *e = q;
        while (e < lim && sql_ident[*e] && *e != '$')
            e++;
        size_t left = (size_t)(e - q);
        uint8_t c = lower_ascii(*q);
        found |= blind_word(q, left, want);
        if ((c == 't' && (word_at(q, left, "temp", 4) || word_at(q, left, "temporary", 9))) ||
            (c == 'p' && word_at(q, left < 7 ? left : 7, "pg_temp", 7)))
            found |= PGW_WORDS_TEMP;
        else if ((c == 'r' && word_at(q, left, "reset", 5)) ||
                 (c == 'd' && word_at(q, left, "discard", 7)))
            found |= PGW_WORDS_RESET;
        else if (c == 'd' && word_at(q, left, "deallocate", 10))
            found |= PGW_WORDS_DEALLOCATE;
        else if ((c == 's' && word_at(q, left, "set_config", 10)) ||
                 (c == 'p' && word_at(q, left, "pg_settings", 11)))
            found |= PGW_WORDS_SET | want;
        if ((c == 's' || c == 'x' || c == 'c') && (want & ~found))
            found |= spelled_words(px, q, left, want & ~found);
        /* (a name with dots: an extension's; once for all its words, or
         * a run of them took quadratic time -- a.a.a..., review r7 of
         * session 54) */
        if (run_end < e) {
            run_end = e;
            while (run_end < lim && (*run_end == '.' || (sql_ident[*run_end] && *run_end != '$')))
                run_end++;
        }
        const uint8_t *d = run_end;
        for (uint32_t m = want & ~found; m; m &= m - 1) {
            int t = __builtin_ctz(m);
            if (tracked_word(px, t, q, (size_t)(d - q)) ||
                tracked_word(px, t, q, (size_t)(end - q)))
                found |= 1u << t;
        }
        q = e;
    }
    return found;
}

/* What pgw_relay_text_words knows of the statement it is in, kept
 * whole where a ';' in a span begins others (until the span's end). */
struct words_stmt {
    char stmt;                          /* its first word: PREPARE, WITH, EXPLAIN, DO */
    bool main_seen;                     /* WITH: the ')' that ends its queries */
    bool opts;                          /* EXPLAIN: in its options' parentheses */
    bool prepare_as;                    /* PREPARE: its AS */
    bool clause;                        /* SET in it is a clause (set_is_a_clause) */
    bool privilege;                     /* GRANT, REVOKE, ALTER: EXECUTE is a privilege */
    int depth;                          /* of parentheses in it */
};

/* May p[0..n) be a blind text (pgw_relay_text_words: a backslash, or a
 * word that starts with a digit or '$' and has a '$' further in)?  Not
 * without a backslash or a '$' after an identifier byte: most texts
 * (pgbench's, an ORM's, with $1 parameters), whose words then need no
 * reading loose.  A memchr or two where blind_word ran on every word. */
static bool may_be_blind(const uint8_t *p, size_t n)
{
    if (memchr(p, '\\', n))
        return true;
    const uint8_t *e = p + n;
    for (const uint8_t *d = p; (d = memchr(d, '$', (size_t)(e - d))) != NULL; d++)
        if (d > p && sql_ident[d[-1]])
            return true;
    return false;
}

/* One pass, a table lookup per byte: it runs on every Query and Parse.
 * The lexer (struct words_lex: lex_at, lex_span, lex_word_end) says which
 * span each byte is in and where a word ends; the rules here read the
 * bytes and words and decide the flags.
 * PGW_WORDS_SET also for a statement that ends a transaction, and for
 * pg_settings.  SET counts as the command unless its statement (after a ';', or the
 * NUL that ends a Parse's statement name, and the comments before it)
 * begins with a word that takes SET as a clause (a false alarm costs
 * only sharing, prepared.c) -- but for one in a literal or dollar quote
 * with a word behind it, a statement a function of the client's may run
 * (update t set a = run_sql('set work_mem = 1'), as for CREATE below).
 *
 * CREATE and INTO (PGW_WORDS_MAKE, a DISCARD TEMP round trip) count only
 * where they are SQL: not in a comment, nor in a string literal ('...'
 * -- INSERT INTO audit VALUES ('create'), has_database_privilege(...,
 * 'CREATE'), Rails' query log tags: a comment action:create) unless the
 * text has a DO block or the word EXECUTE or FORMAT (what a literal may
 * run), or a word follows it in the literal ('create table t (a int)',
 * 'select 1 into t': a statement, which a function of the client's may
 * EXECUTE: select run_sql('...')).  In a dollar quote (a function's or
 * DO block's body) and a quoted name they count as before.  The other
 * words are read everywhere.
 *
 * A blind text, one whose spans may be read wrong -- a backslash anywhere
 * (with standard_conforming_strings off a literal ends elsewhere: 'a\'
 * ')' is one), a '$' inside a number or parameter ($1$$: where a dollar
 * quote may open otherwise than read here) -- has its words read loose
 * too, whatever the span, state or clause they are in (blind_word,
 * blind_words: CREATE or INTO anywhere is MAKE, SET anywhere SET, ...),
 * what every rule that reads spans or the statement may have missed
 * (review r7's second scan, loose, replaced: one pass). */
uint32_t pgw_relay_text_words(const struct pgw_proxy *px, const uint8_t *p, size_t n,
                              uint32_t want)
{
    uint32_t found = 0;
    const uint8_t *q = p, *end = p + n;
    bool at_start = true, without = false, inserting = false;
    /* Where an INSERT or MERGE is the command, not a column's label (SELECT
     * 1 AS insert INTO t, SELECT "merge" INTO t: a SELECT INTO): first in
     * its statement, after a '(' (WITH x AS (INSERT, COPY (INSERT), after
     * the ')' that ends a WITH's queries or EXPLAIN's options, after
     * EXPLAIN's own words, PREPARE's AS, or a DO block's BEGIN, THEN, ELSE,
     * LOOP or the quote opening a literal in its body (EXECUTE 'INSERT
     * ...'). */
    bool command_next = false, plpgsql = false;
    struct words_stmt st = { 0 };       /* the statement's (see struct words_stmt) */
    uint8_t punct = 0;                  /* the last byte not blank since a word */
    struct words_lex lx = { .p = p, .end = end, .span_end = p, .body_end = p, .nested_end = p };
    const uint8_t *start_within = NULL; /* the dollar quote a ';' at_start is in */
    /* A ';' in a span (a dollar quote, a DO text's literal) begins
     * statements until the span's end (scope_end), where the statement it
     * is in goes on: its state, kept (select $$;with $$ a, (1) insert into
     * t: no WITH). */
    const uint8_t *scope_end = NULL;
    struct words_stmt outer = { 0 };
    int span_depth = 0;                 /* at the span's start */
    bool make_quoted = false, blind = false, dynamic = false;
    uint32_t loose = 0;                 /* the words read loose: for a blind text */
    const bool loosen = may_be_blind(p, n);     /* (read only where it may be one) */
    want &= (1u << px->ntracked) - 1;
    while (q < end) {
        if (scope_end && q >= scope_end) {
            st = outer;
            at_start = false;
            scope_end = NULL;
        }
        lex_at(&lx, q, st.stmt == 'd' && !at_start);
        uint8_t in = lex_span(&lx, q);  /* the span q is in, 0 for none */
        if (in && q == lx.span_start)
            span_depth = st.depth;      /* (a ';' in it: the depth its end restores) */
        if (!sql_ident[*q]) {
            blind |= *q == '\\';
            /* (one in a literal, a quoted name or a comment is none: with x
             * as (select '(' a) select ')', (1) insert into t) */
            bool code = !in || in == '$';
            if (*q == '(' && code) {
                st.opts |= st.stmt == 'e' && command_next && !punct && st.depth == 0;
                st.depth++;
            } else if (*q == ')' && code) {
                st.depth--;
            }
            /* (a comment is a blank: with x as (...) -- c, then its main
             * query, the word after the ')'; so a form feed, one of
             * PostgreSQL's blanks -- with x as (...)\fselect (1) insert
             * into t: its main query unseen, the ')' before INSERT read as
             * ending the WITH's queries, review r4 of session 54 -- and a
             * vertical tab, which 15 rejects) */
            if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != '\f' &&
                *q != '\v' && !lex_comment(&lx, q, in))
                punct = *q;
            if ((*q == ';' && !(in == '-' || in == '"' || (in == '\'' && !plpgsql))) ||
                *q == '\0') {
                /* (a ';' in a comment, a quoted name or a literal of a text
                 * with no DO: none; in a dollar quote or a DO's literal, a
                 * body of statements, until its end) */
                if (in && !scope_end && *q == ';') {
                    scope_end = lx.span_end;
                    outer = st;
                    /* (not the depth here: a dollar quote's parentheses
                     * count, select $$);$$ is none of the statement's) */
                    outer.depth = span_depth;
                }
                at_start = true;
                start_within = in ? lx.span_end : NULL;
                st.depth = 0;
            } else if (at_start && in == '-' && q == lx.span_start) {
                /* A comment before the statement (one that opens here, not
                 * a "--" or "/\*" in a literal behind a ';' in it: select
                 * ';--', 1 into t): to its end as the span reads it, a NUL
                 * (a Parse's statement name) at the latest.  Unread: with
                 * a backslash in the text it may be none (select 'a\';
                 * --'; select 1 into t, standard_conforming_strings off):
                 * its words read loose. */
                if (loosen)
                    loose |= blind_words(px, q, lx.span_end, end, want);
                q = lx.span_end;
                continue;
            } else if (*q == '&' && q + 1 < end && q[1] == '"' && q > p &&
                       lower_ascii(q[-1]) == 'u') {
                /* U&"pg\005ftemp": pg_temp, no word of it; so a tracked
                 * name (SET U&"extra!005ffloat!005fdigits" UESCAPE '!':
                 * review r4 of session 53) */
                found |= PGW_WORDS_TEMP | want;
            }
            q++;
            continue;
        }
        /* A word of its own starts here: what the text says is a run of
         * identifier characters; a name with dots (an extension's) spans
         * several. */
        size_t left = (size_t)(end - q);
        uint8_t c = lower_ascii(*q);
        if (start_within && q >= start_within)
            at_start = false;           /* select $$;$$ insert into t: a label */
        start_within = NULL;
        /* (a word in a comment: a blank, but for its own words) */
        bool blank = lex_comment(&lx, q, in);
        bool first = at_start && !blank;
        /* (in a literal, a comment or a quoted name: no command word) */
        bool text = in && in != '$';
        bool glued = punct == 0;        /* nothing but blanks since the last word */
        bool closes = punct == ')' && st.depth == 0 && !blank;
        /* (a quote's opening only, in a DO block's body: EXECUTE 'INSERT
         * ...'; not a closing one: select 'x' insert into t, a column's
         * label) */
        bool command = first || command_next || punct == '(' ||
                       (punct == '\'' && lex_opened(&lx, q)) ||
                       (closes && ((st.stmt == 'w' && !st.main_seen) ||
                                   (st.stmt == 'e' && st.opts)));
        if (closes && st.stmt == 'w' && !(c == 'a' && word_at(q, left, "as", 2)))
            st.main_seen = true;        /* (WITH x (a) AS: its columns) */
        if (closes)
            st.opts = false;
        if (!blank)
            punct = 0;
        if (first) {
            /* (one a ';' in a span began: what the client's function or
             * a DO block's EXECUTE runs, its WITH, EXPLAIN or PREPARE
             * unread -- a ';' in a literal or dollar quote of its own may
             * be read as one: select run_sql($q$ ... $$;with $$ ...$q$)) */
            st.stmt = scope_end ? 0
                   : (c == 'p' && word_at(q, left, "prepare", 7)) ? 'p'
                   : (c == 'w' && word_at(q, left, "with", 4)) ? 'w'
                   : (c == 'e' && word_at(q, left, "explain", 7)) ? 'e'
                   : (c == 'd' && word_at(q, left, "do", 2)) ? 'd' : 0;
            plpgsql |= st.stmt == 'd' || (c == 'd' && word_at(q, left, "do", 2));
            /* (its body's statements: past a ';' too) */
            st.prepare_as = st.main_seen = st.opts = false;
            st.clause = set_is_a_clause(q, left);
            /* GRANT / REVOKE / ALTER DEFAULT PRIVILEGES ... EXECUTE: a privilege */
            st.privilege = (c == 'g' && word_at(q, left, "grant", 5)) ||
                        (c == 'r' && word_at(q, left, "revoke", 6)) ||
                        (c == 'a' && word_at(q, left, "alter", 5));
            if (ends_a_transaction(q, left))
                found |= PGW_WORDS_SET;      /* may take SETs back */
            if (c == 'p' && word_at(q, left, "prepare", 7))
                found |= PGW_WORDS_PREPARE;  /* (SQL: PREPARE TRANSACTION too) */
            at_start = false;
        }
        /* A statement PREPAREd before, its text not here (EXECUTE, and
         * EXPLAIN ANALYZE EXECUTE or CREATE TABLE ... AS EXECUTE), or
         * pg_settings (UPDATE pg_settings SET ... WHERE name = <any
         * expression>): any parameter. */
        if (c == 'e' && !st.privilege && word_at(q, left, "execute", 7))
            found |= PGW_WORDS_SET | PGW_WORDS_EXECUTE | want;
        else if (c == 'p' && word_at(q, left, "pg_settings", 11))
            found |= PGW_WORDS_SET | want;
        else if (c == 'p' && !first && word_at(q, left, "prepare", 7))
            found |= PGW_WORDS_PREPARE_IN;
        /* (WITHOUT HOLD: what psycopg2 declares a cursor with) */
        if (c == 'h' && !without && word_at(q, left, "hold", 4))
            found |= PGW_WORDS_HOLD;
        else if ((c == 't' && (word_at(q, left, "temp", 4) || word_at(q, left, "temporary", 9))) ||
                 (c == 'p' && word_at(q, left < 7 ? left : 7, "pg_temp", 7)))   /* pg_temp_3 */
            found |= PGW_WORDS_TEMP;
        else if ((c == 'c' && word_at(q, left, "create", 6)) ||
                 (c == 'i' && !(inserting && glued) && word_at(q, left, "into", 4))) {
            if (!in || in == '"' || in == '$' ||
                (in == '\'' && word_follows(q + (c == 'c' ? 6 : 4), lx.span_end)))
                found |= PGW_WORDS_MAKE;  /* (not INSERT INTO, MERGE INTO: command) */
            else if (in == '\'')
                make_quoted = true;
        }
        dynamic |= (c == 'e' && word_at(q, left, "execute", 7)) ||
                   (c == 'f' && word_at(q, left, "format", 6));
        without = blank ? without : c == 'w' && word_at(q, left, "without", 7);
        inserting = blank ? inserting
                          : command && !text && ((c == 'i' && word_at(q, left, "insert", 6)) ||
                                                 (c == 'm' && word_at(q, left, "merge", 5)));
        /* (EXPLAIN's own words: EXPLAIN first, ANALYZE and VERBOSE right
         * after it, not a name or literal -- explain analyze select
         * "verbose" insert into t; BEGIN, THEN, ELSE and LOOP in a DO
         * block's body, not in what it EXECUTEs -- execute 'explain
         * analyze select loop insert into t ...', nor after it) */
        command_next = blank ? command_next
                       : st.stmt == 'e' ? (first && c == 'e' && word_at(q, left, "explain", 7)) ||
                                     (command_next && glued && !in &&
                                      ((c == 'a' && (word_at(q, left, "analyze", 7) ||
                                                     word_at(q, left, "analyse", 7))) ||
                                       (c == 'v' && word_at(q, left, "verbose", 7))))
                       : lex_in_body(&lx, q) ? (c == 'b' && word_at(q, left, "begin", 5)) ||
                                       (c == 't' && word_at(q, left, "then", 4)) ||
                                       (c == 'e' && word_at(q, left, "else", 4)) ||
                                       (c == 'l' && word_at(q, left, "loop", 4))
                       : false;
        if (c == 'a' && st.stmt == 'p' && !st.prepare_as && !blank && word_at(q, left, "as", 2))
            command_next = st.prepare_as = true;  /* (its first AS: PREPARE p (int) AS) */
        if ((c == 'r' && word_at(q, left, "reset", 5)) ||
            (c == 'd' && word_at(q, left, "discard", 7)))
            found |= PGW_WORDS_RESET;
        else if (c == 'd' && word_at(q, left, "deallocate", 10))
            found |= PGW_WORDS_DEALLOCATE;
        else if (c == 's' && word_at(q, left, "set", 3) &&
                 (!st.clause || ((in == '\'' || in == '$') && word_follows(q + 3, lx.span_end))))
            found |= PGW_WORDS_SET;     /* (update t set a = run_sql('set work_mem = 1')) */
        else if (c == 's' && word_at(q, left, "set_config", 10))
            found |= PGW_WORDS_SET | (set_config_literal(q, left) ? 0 : want);
        if ((c == 's' || c == 'x' || c == 'c') && (want & ~found))
            found |= spelled_words(px, q, left, want & ~found);
        for (uint32_t m = want & ~found; m; m &= m - 1) {
            int t = __builtin_ctz(m);
            if (tracked_word(px, t, q, left))
                found |= 1u << t;
        }
        const uint8_t *w = q;
        q = lex_word_end(&lx, w);
        const uint8_t *dollar = q - w > 1 ? memchr(w + 1, '$', (size_t)(q - w - 1)) : NULL;
        if (!in && ((uint8_t)(c - '0') < 10 || c == '$'))
            blind |= dollar != NULL;
        if (loosen)
            loose |= dollar ? blind_words(px, w, q, end, want)
                            : blind_word(w, (size_t)(q - w), want);
        /* A number or parameter glued to INTO: PostgreSQL 14 and older
         * read them apart (select 1into t, 1e1into t, $1into t: SELECT ...
         * INTO t; 15 on: trailing junk).  Review r4 of session 53. */
        if ((uint8_t)(c - '0') < 10 || (c == '$' && q - w > 1 && (uint8_t)(w[1] - '0') < 10)) {
            const uint8_t *r = w + 1;
            while (r < q && (uint8_t)(*r - '0') < 10)
                r++;
            if (q - r > 1 && lower_ascii(*r) == 'e' && (uint8_t)(r[1] - '0') < 10)
                for (r++; r < q && (uint8_t)(*r - '0') < 10; r++)
                    ;
            if (r < q && word_at(r, (size_t)(q - r), "into", 4))
                found |= PGW_WORDS_MAKE;
        }
    }
    if (make_quoted && (plpgsql || dynamic))
        found |= PGW_WORDS_MAKE;
    return blind ? found | loose : found;
}

static void stmt_sql_bound(struct pgw_session *s, uint32_t w, const uint8_t *t, size_t n);
static void stmt_sql_hidden(struct pgw_session *s, uint32_t w);
static void stmt_portal_text(struct pgw_session *s, uint32_t w, const uint8_t *t, size_t n);
static void stmt_sql_dealloc(struct pgw_session *s, char type, const uint8_t *t, size_t n);

void pgw_relay_note_bound_words(struct pgw_session *s, uint32_t words, const uint8_t *text,
                                size_t n)
{
    s->state_words |= words & PGW_WORDS_STATE;
    if (s->mode != PGW_POOL_SESSION && s->px->cfg->server_reset_session_state) {
        stmt_portal_text(s, words, text, n);
        stmt_sql_hidden(s, words);
        if (words & PGW_WORDS_DEALLOCATE)
            stmt_sql_dealloc(s, PGW_FE_BIND, NULL, 0);
        if (words & (PGW_WORDS_PREPARE | PGW_WORDS_EXECUTE))
            stmt_sql_bound(s, words, text, n);
    }
    uint32_t mask = unreported_mask(s->px, s->server->pool);
    if (mask && (words & (mask | PGW_WORDS_RESET)))
        s->unrep_touched = true;
    if (s->ps_on && (words & (PGW_WORDS_SET | PGW_WORDS_RESET))) {
        s->settings_pending = true;
        s->settings_gen++;
    }
}

/* ---- statements Bound in a later transaction (server_reset_session_state)
 *
 * note_leftover reads the words of the client's text with the tag.  A
 * Bind runs a statement Parsed before, maybe in an earlier transaction:
 * the unnamed statement (the client's own: another's is dropped at the
 * link), whose words the session keeps (unnamed_words); or, with
 * max_prepared_statements = 0, a named one the server keeps as Parsed.
 * For those the server keeps a hash of each name whose text says HOLD or
 * TEMP, with its words (user_stmt_hash, at most PGW_STMT_WORDS_MAX); a
 * Bind of one notes them.  A Bind of any other costs nothing (the revert
 * of 59c32e8: one such statement made every Bind on its server cost a
 * cleanup).  A name is forgotten once a Close or SQL DEALLOCATE of it is
 * answered with no error on the link (stmt_forget), at DISCARD ALL or
 * DEALLOCATE ALL, and with the server.  A hash stands for a name: a
 * collision (a random seed) costs a cleanup, or forgets the other. */

static bool stmt_words_on(const struct pgw_session *s)
{
    return s->mode != PGW_POOL_SESSION && s->px->cfg->server_reset_session_state;
}

/* PostgreSQL keys prepared statements by the first NAMEDATALEN - 1 bytes of
 * their names (its hash table's key size). */
static uint64_t stmt_hash(struct pgw_proxy *px, const uint8_t *name, size_t n)
{
    return pgw_hash_bytes(name, n < PGW_NAME_MAX ? n : PGW_NAME_MAX, pgw_proxy_hash_seed(px));
}

static int stmt_words_find(const struct pgw_server *srv, uint64_t h)
{
    for (int i = 0; i < srv->user_stmt_n; i++)
        if (srv->user_stmt_hash[i] == h)
            return i;
    return -1;
}

static void stmt_words_clear(struct pgw_server *srv)
{
    srv->user_stmt_n = 0;
    srv->user_stmt_lost = false;
    srv->user_sql_plain_n = 0;
}

_Static_assert((PGW_WORDS_STATE >> 27) <= UINT8_MAX && (PGW_WORDS_STATE & ((1u << 27) - 1)) == 0,
               "user_stmt_words holds PGW_WORDS_STATE >> 27");
/* In user_stmt_words beside them: its text PREPAREs inside a statement and
 * says HOLD, TEMP or MAKE, or says DEALLOCATE: the names seen PREPAREd plain are
 * forgotten at each Bind or EXECUTE of it (stmt_sql_plain_forget). */
#define STMT_WORDS_HIDDEN 0x40
_Static_assert(((PGW_WORDS_STATE >> 27) & STMT_WORDS_HIDDEN) == 0,
               "STMT_WORDS_HIDDEN is past PGW_WORDS_STATE >> 27");

static bool words_hidden(uint32_t w)
{
    return (w & PGW_WORDS_PREPARE_IN) && (w & PGW_WORDS_STATE);
}

/* The statement of name hash h on srv may leave what its words w (HOLD or
 * TEMP among them) say: kept, with those of an earlier one of its name. */
static void stmt_words_keep(struct pgw_server *srv, uint64_t h, uint32_t w)
{
    int i = stmt_words_find(srv, h);
    if (i < 0 && srv->user_stmt_n == PGW_STMT_WORDS_MAX) {
        srv->user_stmt_lost = true;
        return;
    }
    if (i < 0) {
        i = srv->user_stmt_n++;
        srv->user_stmt_hash[i] = h;
        srv->user_stmt_words[i] = 0;
    }
    srv->user_stmt_words[i] |= (uint8_t)((w & PGW_WORDS_STATE) >> 27);
    if (words_hidden(w) || (w & PGW_WORDS_DEALLOCATE))
        srv->user_stmt_words[i] |= STMT_WORDS_HIDDEN;
}

static void stmt_sql_plain_forget(struct pgw_session *s);

/* The words of the statement the server keeps at i, run by a Bind or an
 * SQL EXECUTE on s's link: one whose text PREPAREs out of sight forgets
 * the names seen PREPAREd plain (stmt_sql_hidden), as its text would. */
static uint32_t stmt_words_run(struct pgw_session *s, int i)
{
    uint8_t k = s->server->user_stmt_words[i];
    if (k & STMT_WORDS_HIDDEN)
        stmt_sql_plain_forget(s);
    return (uint32_t)(k & (PGW_WORDS_STATE >> 27)) << 27;
}

static void stmt_words_drop(struct pgw_server *srv, uint64_t h)
{
    int i = stmt_words_find(srv, h);
    if (i < 0)
        return;
    srv->user_stmt_n--;
    srv->user_stmt_hash[i] = srv->user_stmt_hash[srv->user_stmt_n];
    srv->user_stmt_words[i] = srv->user_stmt_words[srv->user_stmt_n];
}

/* A statement of name hash h made again on s's link: a Close or
 * DEALLOCATE of the name sent ahead of it, not answered yet, dropped the
 * one it replaces, not it (stmt_forget_done leaves it). */
static void stmt_forget_unsay(struct pgw_session *s, uint64_t h)
{
    for (int k = 0; k < s->stmt_forget_n; k++)
        if (s->stmt_forget[k] == h)
            s->stmt_forget[k--] = s->stmt_forget[--s->stmt_forget_n];
}

/* A Parse (avail of its bytes at p, none past it) whose text has words
 * w: the unnamed statement's words, or a named one's kept on the server
 * when they say HOLD, TEMP or MAKE (max_prepared_statements = 0). */
static void stmt_words_parse(struct pgw_session *s, const uint8_t *p, uint32_t avail, bool unnamed,
                             uint32_t w)
{
    if (unnamed) {
        s->unnamed_words = w & (PGW_WORDS_STATE | PGW_WORDS_PREPARE | PGW_WORDS_EXECUTE |
                                PGW_WORDS_PREPARE_IN | PGW_WORDS_DEALLOCATE);
        s->unnamed_server = s->server->id;
        return;
    }
    if (s->ps_on || !(w & (PGW_WORDS_STATE | PGW_WORDS_DEALLOCATE)))
        return;
    struct pgw_server *srv = s->server;
    const uint8_t *name = p + PGW_MSG_HDR;
    const uint8_t *nul = avail > PGW_MSG_HDR ? memchr(name, 0, avail - PGW_MSG_HDR) : NULL;
    size_t n = nul ? (size_t)(nul - name) : avail - PGW_MSG_HDR;
    s->stmt_kept = true;                     /* (a DISCARD ALL sent ahead: kept) */
    if (!nul && n < PGW_NAME_MAX) {
        srv->user_stmt_lost = true;          /* its name is not here yet */
        return;
    }
    uint64_t h = stmt_hash(s->px, name, n);
    /* A Close or DEALLOCATE of the name sent ahead of it, not answered
     * yet, dropped the statement this Parse makes again: not forgotten. */
    stmt_forget_unsay(s, h);
    stmt_words_keep(srv, h, w);
}

/* The statement name of a Bind (avail of its bytes at p): its length, or
 * -1 when it is not all here. */
static ssize_t bind_stmt_name(const uint8_t *p, uint32_t avail, const uint8_t **name)
{
    const uint8_t *b = p + PGW_MSG_HDR, *e = p + avail;
    const uint8_t *z = b < e ? memchr(b, 0, (size_t)(e - b)) : NULL;   /* the portal's end */
    if (!z)
        return -1;
    *name = z + 1;
    const uint8_t *z2 = z + 1 < e ? memchr(z + 1, 0, (size_t)(e - z - 1)) : NULL;
    if (!z2)
        return e - (z + 1) >= PGW_NAME_MAX ? (ssize_t)(e - (z + 1)) : -1;
    return z2 - (z + 1);
}

/* A Bind (avail of its bytes at p): the words of the statement it runs, as
 * if its text were here. */
static void stmt_words_bind(struct pgw_session *s, const uint8_t *p, uint32_t avail)
{
    const struct pgw_server *srv = s->server;
    bool unnamed_may = (s->unnamed_words & (PGW_WORDS_STATE | PGW_WORDS_EXECUTE)) != 0;
    bool named_may = !s->ps_on && (srv->user_stmt_n > 0 || srv->user_stmt_lost);
    if (!unnamed_may && !named_may)
        return;
    const uint8_t *name = NULL;
    ssize_t n = bind_stmt_name(p, avail, &name);
    if (n <= 0) {                            /* (not all here: either) */
        s->state_words |= (s->unnamed_words & PGW_WORDS_STATE) |
                          (n < 0 && named_may ? PGW_WORDS_STATE : 0);
        if (s->unnamed_words & (PGW_WORDS_PREPARE | PGW_WORDS_EXECUTE))
            stmt_sql_bound(s, s->unnamed_words, NULL, 0);
        return;
    }
    if (!named_may)
        return;
    int i = -1;
    if (srv->user_stmt_lost || (i = stmt_words_find(srv, stmt_hash(s->px, name, (size_t)n))) >= 0)
        s->state_words |= i >= 0 ? stmt_words_run(s, i) : PGW_WORDS_STATE;
}

/* ---- SQL PREPAREs seen to run plain (user_sql_plain)
 *
 * A function or a DO block may PREPARE out of pgwharf's sight (PL/pgSQL's
 * EXECUTE 'PREPARE p AS SELECT ... INTO TEMP t', its text in a function
 * defined long before), and an SQL EXECUTE p in a later transaction then
 * leaves that table.  So an SQL EXECUTE of a name the server keeps no
 * words of counts as one that may leave both, unless pgwharf saw that
 * name PREPAREd there without them: its tag "PREPARE" read
 * (stmt_sql_prepared), or a PREPARE ahead of it in the same Query.  Such a
 * name is forgotten (its EXECUTE costs a cleanup from then on) at a Close
 * or a Query's DEALLOCATE of it as sent, at DISCARD ALL, and all of them
 * at any other text that says DEALLOCATE (stmt_sql_dealloc) or whose word
 * PREPARE is inside a statement (stmt_sql_hidden).  Nothing of this runs
 * for a text without the word EXECUTE, PREPARE or DEALLOCATE. */

static bool stmt_sql_plain_has(const struct pgw_server *srv, uint64_t h)
{
    for (int i = 0; i < srv->user_sql_plain_n; i++)
        if (srv->user_sql_plain[i] == h)
            return true;
    return false;
}

static void stmt_sql_plain_keep(struct pgw_server *srv, uint64_t h)
{
    if (stmt_sql_plain_has(srv, h))
        return;
    if (srv->user_sql_plain_n < PGW_SQL_PLAIN_MAX) {
        srv->user_sql_plain[srv->user_sql_plain_n++] = h;
        return;
    }
    srv->user_sql_plain[srv->user_sql_plain_next] = h;          /* (one makes room) */
    srv->user_sql_plain_next = (uint8_t)((srv->user_sql_plain_next + 1) % PGW_SQL_PLAIN_MAX);
}

static void stmt_sql_plain_drop(struct pgw_server *srv, uint64_t h)
{
    for (int i = 0; i < srv->user_sql_plain_n; i++)
        if (srv->user_sql_plain[i] == h) {
            srv->user_sql_plain[i] = srv->user_sql_plain[--srv->user_sql_plain_n];
            return;
        }
}

/* A text with words w runs on s's server: one whose word PREPARE is inside
 * a statement (a DO block's EXECUTE 'PREPARE ...', a function's text) and
 * that says HOLD, TEMP or MAKE may PREPARE what pgwharf does not read, under a
 * name it saw PREPAREd plain (DEALLOCATEd there first): none is known
 * plain any more. */
static void stmt_sql_hidden(struct pgw_session *s, uint32_t w)
{
    if (words_hidden(w))
        stmt_sql_plain_forget(s);
}

/* None is known plain on s's server any more, nor will be at a tag
 * "PREPARE" answered before the link's next ReadyForQuery: that PREPARE
 * (of the same Query, or one sent ahead) may have run before the text
 * that PREPAREs out of sight, which may DEALLOCATE its name and PREPARE it
 * again with a table (stmt_sql_prepared). */
static void stmt_sql_plain_forget(struct pgw_session *s)
{
    s->server->user_sql_plain_n = 0;
    s->stmt_prep_noplain = true;
}

/* A text (n bytes at t; NULL: a Bind of one) that says DEALLOCATE runs on
 * s's server: a name it drops there is known plain no more, or a function
 * could PREPARE it again with a table.  A Query's statements
 * "DEALLOCATE [PREPARE] name" drop theirs; any other (DEALLOCATE ALL, a
 * DO block's, a name not read, a Parse's) all of them.  A tag "PREPARE"
 * answered before the link's next ReadyForQuery keeps none plain: its
 * PREPARE may have run before this. */
static void stmt_sql_dealloc(struct pgw_session *s, char type, const uint8_t *t, size_t n)
{
    s->stmt_prep_noplain = true;
    const char *sql = (const char *)t;
    if (type != PGW_FE_QUERY || !t || n < 2 || sql[n - 1] != '\0' || memchr(sql, 0, n - 1) ||
        !pgw_pgenc_ascii(sql, n - 1)) {
        stmt_sql_plain_forget(s);
        return;
    }
    char name[PGW_CHANNEL_UTF8_MAX + 1];
    for (size_t off = 0, len = n - 1; off < len;) {
        size_t e = pgw_sql_statement_end(sql + off, len - off);
        if (pgw_relay_text_words(s->px, t + off, e, 0) & PGW_WORDS_DEALLOCATE) {
            if (!pgw_deallocate_parse(sql + off, e, NULL, name, NULL)) {
                stmt_sql_plain_forget(s);
                return;
            }
            stmt_sql_plain_drop(s->server, stmt_hash(s->px, (const uint8_t *)name, strlen(name)));
        }
        off += e + 1;
    }
}

/* A Close of a statement, or a lone SQL DEALLOCATE of one (avail of its
 * total bytes at p): a name the server keeps words of is forgotten once
 * answered with no error (stmt_forget_done), one seen PREPAREd plain at
 * once. */
static void stmt_words_close(struct pgw_session *s, char type, const uint8_t *p, uint32_t avail,
                             uint32_t total)
{
    struct pgw_server *srv = s->server;
    if (avail < total)
        return;
    const uint8_t *body = p + PGW_MSG_HDR;
    size_t blen = total - PGW_MSG_HDR;
    uint64_t h;
    if (type == PGW_FE_CLOSE) {
        if (blen < 2 || body[0] != 'S' || body[blen - 1] != '\0')
            return;
        h = stmt_hash(s->px, body + 1, strlen((const char *)body + 1));
    } else {
        static const char *const kw[] = { "DEALLOCATE" };
        const char *sql = (const char *)body;
        size_t len = blen - 1;               /* (its NUL) */
        char name[PGW_CHANNEL_UTF8_MAX + 1];
        if (blen < 2 || sql[len] != '\0' || !pgw_sql_may_start(sql, len, kw, 1) ||
            memchr(sql, 0, len) || !pgw_pgenc_ascii(sql, len) ||
            !pgw_deallocate_parse(sql, len, NULL, name, NULL))
            return;
        h = stmt_hash(s->px, (const uint8_t *)name, strlen(name));
    }
    stmt_sql_plain_drop(srv, h);             /* (at once: a cleanup too many at worst) */
    if (s->stmt_forget_n < PGW_STMT_FORGET_MAX && stmt_words_find(srv, h) >= 0)
        s->stmt_forget[s->stmt_forget_n++] = h;
}

/* All the link sent is answered (a ReadyForQuery, nothing outstanding):
 * the names its Closes and DEALLOCATEs dropped are forgotten, unless an
 * error came since (the server skips to the Sync: one may not have run). */
static void stmt_forget_done(struct pgw_session *s)
{
    struct pgw_server *srv = s->server;
    if (s->track.fe_open > 0 || !srv)
        return;                              /* (sent since the Sync: later) */
    s->stmt_kept = false;
    for (int k = 0; !s->stmt_forget_err && k < s->stmt_forget_n; k++)
        stmt_words_drop(srv, s->stmt_forget[k]);
    s->stmt_forget_n = 0;
    s->stmt_forget_err = false;
}

/* ---- SQL PREPARE and EXECUTE (server_reset_session_state)
 *
 * An SQL prepared statement lives on the server as a named protocol one
 * does, in the same namespace, with max_prepared_statements on or off
 * (pgwharf renames only protocol ones): PREPARE p AS SELECT ... INTO TEMP
 * t (PostgreSQL prepares SELECT INTO; not DECLARE, nor CREATE TABLE AS)
 * in one transaction, EXECUTE p in a later one, whose tag is "SELECT 1"
 * with no word of p's text beside it.  So the server keeps the words of
 * p as of a Parse's (user_stmt_hash): a PREPARE whose statement says HOLD
 * or TEMP once its tag "PREPARE" says it ran, and one without them drops
 * an old record of its name (the name was free).  EXECUTE p (alone, or in
 * EXPLAIN ANALYZE EXECUTE p, which runs it) reads them as a Bind of it
 * does.  DEALLOCATE and DEALLOCATE ALL / DISCARD ALL forget them as
 * above.  A text is read for it only when its scan (pgw_relay_text_words)
 * found a statement that starts with PREPARE (PGW_WORDS_PREPARE) or the
 * word EXECUTE (PGW_WORDS_EXECUTE; a name the server keeps no words of
 * is looked up among those seen PREPAREd plain, user_sql_plain): nothing
 * more for any other. */

/* Does a statement of the Query text t[0..upto) PREPARE name? */
static bool text_prepares(const char *t, size_t upto, const char *name)
{
    char pn[PGW_NAME_MAX + 1];
    if (memchr(t, '\\', upto))
        return false;                            /* (its split: stmt_sql_sent) */
    for (size_t off = 0; off < upto;) {
        size_t e = pgw_sql_statement_end(t + off, upto - off), rest = 0;
        if (pgw_prepare_parse(t + off, e, pn, &rest) == PGW_SQL_NAME_READ && strcmp(pn, name) == 0)
            return true;
        off += e + 1;
    }
    return false;
}

/* The words the SQL prepared statements a text (n bytes at t: one that
 * says EXECUTE; prepares: a Query's that may PREPARE too) EXECUTEs on s's
 * server may leave: all for a name pgwharf does not read, with the
 * server's names lost, or for a name pgwharf neither keeps words of nor
 * saw PREPAREd plain there (user_sql_plain): a function or DO block may
 * have PREPAREd it. */
static uint32_t stmt_sql_execute_words(struct pgw_session *s, const uint8_t *t, size_t n,
                                       bool prepares)
{
    const struct pgw_server *srv = s->server;
    if (srv->user_stmt_lost)
        return PGW_WORDS_STATE;
    uint32_t w = 0;
    size_t at = 0;
    char name[PGW_NAME_MAX + 1];
    enum pgw_sql_name_kind k;
    while ((k = pgw_sql_execute_next((const char *)t, n, &at, name)) != PGW_SQL_NAME_NONE) {
        if (k == PGW_SQL_NAME_UNREAD)
            return PGW_WORDS_STATE;
        uint64_t h = stmt_hash(s->px, (const uint8_t *)name, strlen(name));
        int i = stmt_words_find(srv, h);
        if (i >= 0)
            w |= stmt_words_run(s, i);
        else if (!stmt_sql_plain_has(srv, h) &&
                 !(prepares && text_prepares((const char *)t, at, name)))
            return PGW_WORDS_STATE;
    }
    return w;
}

/* Where the statement a PREPARE names starts (sql[0..len), its name ending
 * at rest): past its parameter types and its AS, so that an INSERT INTO
 * there is first in its statement for pgw_relay_text_words; rest itself
 * if they are not read (a quote or a comment among them: all its words). */
static size_t prepare_body(const char *sql, size_t len, size_t rest)
{
    const uint8_t *b = (const uint8_t *)sql, *e = b + len, *q = skip_blanks(b + rest, e);
    if (q < e && *q == '(') {
        int depth = 0;
        for (; q < e; q++) {
            if (*q == '(') {
                depth++;
            } else if (*q == ')' && --depth == 0) {
                q++;
                break;
            } else if (*q == '"' || *q == '\'' || *q == '-' || *q == '/') {
                return rest;
            }
        }
        if (depth)
            return rest;
        q = skip_blanks(q, e);
    }
    if (q < e && word_at(q, (size_t)(e - q), "as", 2))
        return (size_t)(q + 2 - b);
    return rest;
}

/* The statement sql[0..len) (pgw_sql_statement_end's split; whole: not
 * cut short, the rest of it still to come): a PREPARE (true), its name's
 * hash in *h and the words of what follows the name in *w (all of them
 * for one cut short), PGW_STMT_PREP_UNREAD with them for a name pgwharf
 * does not read (or that may go on past the cut). */
static bool stmt_sql_prepare_one(struct pgw_session *s, const char *sql, size_t len, bool whole,
                                 uint64_t *h, uint8_t *w)
{
    static const char *const kw[] = { "PREPARE" };
    char name[PGW_NAME_MAX + 1];
    size_t rest = 0;
    enum pgw_sql_name_kind k = pgw_prepare_parse(sql, len, name, &rest);
    if (k == PGW_SQL_NAME_NONE && (whole || !pgw_sql_may_start(sql, len, kw, 1)))
        return false;
    if (!whole) {
        *w = PGW_WORDS_STATE >> 27;
        if (k == PGW_SQL_NAME_NONE || rest >= len)
            k = PGW_SQL_NAME_UNREAD;
    } else {
        size_t body = prepare_body(sql, len, rest);
        *w = (uint8_t)((pgw_relay_text_words(s->px, (const uint8_t *)sql + body, len - body, 0) &
                        PGW_WORDS_STATE) >> 27);
    }
    if (k == PGW_SQL_NAME_UNREAD)
        *w |= PGW_STMT_PREP_UNREAD;
    else
        *h = stmt_hash(s->px, (const uint8_t *)name, strlen(name));
    return true;
}

/* One PREPARE ran, or may have (hash h, words w as stmt_sql_prepare_one's),
 * on s's server.  Kept as a named Parse is (stmt_words_parse): a DEALLOCATE
 * of the name or a DISCARD ALL sent ahead and answered after it does not
 * forget it. */
static void stmt_sql_made(struct pgw_session *s, uint64_t h, uint8_t w)
{
    struct pgw_server *srv = s->server;
    uint32_t words = (uint32_t)(w & ~PGW_STMT_PREP_UNREAD) << 27;
    if (!(words & PGW_WORDS_STATE))
        return;
    s->stmt_kept = true;
    if (w & PGW_STMT_PREP_UNREAD) {
        srv->user_stmt_lost = true;
    } else {
        stmt_forget_unsay(s, h);
        stmt_words_keep(srv, h, words);
    }
}

/* A Query (n of its total bytes at p) with a statement that may start
 * with PREPARE goes to the server; was_open: a request of the link's was
 * outstanding.  With none, and its PREPAREs read (at most
 * PGW_STMT_PREP_MAX), each is kept at its tag (the first tags "PREPARE"
 * that come are theirs, in order: stmt_sql_prepared); else those whose
 * words say HOLD, TEMP or MAKE are kept now, whether they run or not (and a
 * Query not all here: only its first statement is read, a PREPARE that
 * is not all here kept with all words). */
static void stmt_sql_sent(struct pgw_session *s, const uint8_t *p, uint32_t n, uint32_t total,
                          bool was_open)
{
    static const char *const kw[] = { "PREPARE" };
    const char *sql = (const char *)p + PGW_MSG_HDR;
    size_t len = n > PGW_MSG_HDR ? n - PGW_MSG_HDR : 0;
    if (n == total && len > 0)
        len--;                                   /* (its NUL) */
    if (n < total && !pgw_sql_may_start(sql, len, kw, 1))
        return;                                  /* (its words all set: any text) */
    uint64_t hs[PGW_STMT_PREP_MAX];
    uint8_t ws[PGW_STMT_PREP_MAX];
    int k = 0;
    /* A backslash may escape a quote (standard_conforming_strings off):
     * PostgreSQL may split the text otherwise, its tags "PREPARE" those of
     * other statements than read here.  Kept as sent then. */
    bool exact = !was_open && n == total && !memchr(sql, '\\', len);
    for (size_t off = 0; off < len;) {
        size_t e = pgw_sql_statement_end(sql + off, len - off);
        uint64_t h = 0;
        uint8_t w = 0;
        if (stmt_sql_prepare_one(s, sql + off, e, off + e < len || n == total, &h, &w)) {
            if (exact && k < PGW_STMT_PREP_MAX) {
                hs[k] = h;
                ws[k++] = w;
            } else {
                if (exact) {
                    exact = false;               /* more than kept: all now */
                    for (int j = 0; j < k; j++)
                        stmt_sql_made(s, hs[j], ws[j]);
                }
                stmt_sql_made(s, h, w);
                s->stmt_prep_loose = true;
            }
        }
        if (n < total)
            break;                               /* (streams through: the first) */
        off += e + 1;
    }
    if (!exact)
        return;
    memcpy(s->stmt_prep, hs, sizeof(hs[0]) * (size_t)k);
    memcpy(s->stmt_prep_words, ws, (size_t)k);
    s->stmt_prep_n = (uint8_t)k;
    s->stmt_prep_at = 0;
}

/* A CommandComplete "PREPARE": the next PREPARE of the Query (stmt_sql_sent)
 * ran.  One pgwharf did not read there (none kept as sent since the link
 * was last idle) whose transaction's words say HOLD, TEMP or MAKE: any named
 * statement there may leave both. */
static void stmt_sql_prepared(struct pgw_session *s)
{
    struct pgw_server *srv = s->server;
    if (s->stmt_prep_at < s->stmt_prep_n) {
        uint64_t h = s->stmt_prep[s->stmt_prep_at];
        uint8_t w = s->stmt_prep_words[s->stmt_prep_at++];
        if (!(w & PGW_STMT_PREP_UNREAD) && !(w & (PGW_WORDS_STATE >> 27))) {
            stmt_words_drop(srv, h);             /* the name was free: an old record */
            if (!s->stmt_prep_noplain)
                stmt_sql_plain_keep(srv, h);
        }
        stmt_sql_made(s, h, w);
    } else if (!s->stmt_prep_loose && (s->state_words & PGW_WORDS_STATE)) {
        srv->user_stmt_lost = true;
    }
}

/* ---- SQL PREPAREs sent by the extended protocol, read at their tags
 *
 * A Parse of "PREPARE p AS ..." runs at an Execute of a portal Bound to it
 * (psycopg 3 with binary=True, JDBC and npgsql send every text so), and
 * its tag "PREPARE" says it ran: one that failed (42P05: p there already,
 * maybe a function's with a table) keeps nothing.  As a Query's
 * (stmt_sql_sent), the PREPAREs that the Executes of the first request
 * sent with nothing outstanding run are listed in stmt_prep, in order,
 * while every Execute sent there that may tag "PREPARE" is: one of a
 * portal or statement pgwharf does not know (a named portal, a named
 * statement with max_prepared_statements = 0), or past PGW_STMT_PREP_MAX,
 * ends the list until the link's next ReadyForQuery (stmt_prep_open), a
 * tag that matched none keeping nothing plain. */

/* What a text with words w runs as to an SQL PREPARE, read (read: its
 * statement is one, pgw_prepare_parse).  A "prepare" pgwharf's words see
 * that it did not read as a PREPARE may still tag one: behind an empty
 * statement (";prepare p ..."), or as the first word past a nested
 * comment (PGW_WORDS_PREPARE_IN then) -- not known, lest its tag be taken
 * for the next one listed (one that fails: 42P05). */
static enum pgw_portal_prep portal_prep_kind(uint32_t w, bool read)
{
    if (!(w & (PGW_WORDS_PREPARE | PGW_WORDS_PREPARE_IN)))
        return PGW_PORTAL_PREP_NONE;
    return (w & PGW_WORDS_PREPARE) && read ? PGW_PORTAL_PREP_ONE : PGW_PORTAL_PREP_MAYBE;
}

/* A Bind (avail of its bytes at p) is read: what its statement runs, the
 * unnamed one's as its Parse said (stmt_sql_parse); a named one's text
 * prepared.c alone has, and tells after (stmt_portal_text).  The unnamed
 * one Bound again, in a later request, runs its text again where pgwharf
 * reads none: one that says DEALLOCATE, or PREPAREs out of sight, forgets
 * the names seen PREPAREd plain as at its Parse (a named statement's
 * PREPARE, its tag read, may have kept one plain since). */
static void stmt_portal_bind(struct pgw_session *s, const uint8_t *p, uint32_t avail)
{
    const uint8_t *name = NULL;
    ssize_t n = bind_stmt_name(p, avail, &name);
    s->bind_prep.kind = PGW_PORTAL_PREP_MAYBE;
    if (n != 0)
        return;
    if (words_hidden(s->unnamed_words) || (s->unnamed_words & PGW_WORDS_DEALLOCATE))
        stmt_sql_plain_forget(s);
    s->bind_prep.kind = portal_prep_kind(s->unnamed_words, s->unnamed_prep_is);
    if (s->bind_prep.kind != PGW_PORTAL_PREP_ONE)
        return;
    s->bind_prep.h = s->unnamed_prep;
    s->bind_prep.w = s->unnamed_prep_words;
}

/* The Bind being read runs a named statement whose text (n bytes at t,
 * its name first) has words w (prepared.c, at each Bind). */
static void stmt_portal_text(struct pgw_session *s, uint32_t w, const uint8_t *t, size_t n)
{
    const uint8_t *z = t ? memchr(t, 0, n) : NULL;
    uint64_t h = 0;
    uint8_t sw = 0;
    if (portal_prep_kind(w, true) != PGW_PORTAL_PREP_ONE) {
        s->bind_prep.kind = portal_prep_kind(w, true);
    } else if (!z || !stmt_sql_prepare_one(s, (const char *)z + 1,
                                           strnlen((const char *)z + 1, (size_t)(t + n - z - 1)),
                                           true, &h, &sw)) {
        s->bind_prep.kind = PGW_PORTAL_PREP_MAYBE;
    } else {
        s->bind_prep = (struct pgw_portal_prep_ref){ .h = h, .w = sw,
                                                     .kind = PGW_PORTAL_PREP_ONE };
    }
}

/* A Bind or an Execute (n of its bytes at p, the portal's name first) goes
 * to the server.  A Bind of the unnamed portal makes it what the Bind
 * runs; an Execute of a PREPARE is listed (or ends the list). */
static void stmt_portal_run(struct pgw_session *s, char type, const uint8_t *p, uint32_t n)
{
    bool unnamed = n > PGW_MSG_HDR && p[PGW_MSG_HDR] == '\0';
    if (type == PGW_FE_BIND) {
        if (unnamed)
            s->portal_prep = s->bind_prep;
        else if (n <= PGW_MSG_HDR)      /* (cut after its header: maybe the unnamed one) */
            s->portal_prep.kind = PGW_PORTAL_PREP_MAYBE;
        return;
    }
    const struct pgw_portal_prep_ref *r = &s->portal_prep;
    if (unnamed && r->kind == PGW_PORTAL_PREP_NONE)
        return;
    if (unnamed && r->kind == PGW_PORTAL_PREP_ONE && s->stmt_prep_open &&
        s->track.sync_out == 0 && s->stmt_prep_n < PGW_STMT_PREP_MAX) {
        s->stmt_prep[s->stmt_prep_n] = r->h;
        s->stmt_prep_words[s->stmt_prep_n++] = r->w;
        return;
    }
    s->stmt_prep_open = false;
}

/* A Parse (avail of its bytes at p, none past it) whose text may be a
 * PREPARE (words w).  The name it makes: for the unnamed statement kept
 * for its Bind (stmt_sql_bound), and its Execute's tag (stmt_portal_bind),
 * HOLD, TEMP or MAKE or not; a named one, with max_prepared_statements = 0, may
 * run at any Bind there, where its text is not at hand: any named
 * statement there may leave both, if its words say HOLD, TEMP or MAKE.  (With
 * them on, prepared.c has its text at each Bind.) */
static void stmt_sql_parse(struct pgw_session *s, const uint8_t *p, uint32_t avail, bool unnamed,
                           uint32_t w)
{
    if (unnamed)
        s->unnamed_prep_is = false;
    if (!unnamed && (s->ps_on || !(w & PGW_WORDS_STATE)))
        return;
    const uint8_t *e = p + avail, *name = p + PGW_MSG_HDR;
    const uint8_t *b = name < e ? memchr(name, 0, (size_t)(e - name)) : NULL;
    if (!b)
        return;                              /* (its name not here: stmt_words_parse) */
    b++;
    const uint8_t *z = b < e ? memchr(b, 0, (size_t)(e - b)) : NULL;
    uint64_t h = 0;
    uint8_t sw = 0;
    if (!stmt_sql_prepare_one(s, (const char *)b, z ? (size_t)(z - b) : (size_t)(e - b), z != NULL,
                              &h, &sw))
        return;
    if (unnamed) {
        s->unnamed_prep_is = true;
        s->unnamed_prep = h;
        s->unnamed_prep_words = sw;
    } else if (sw & (PGW_WORDS_STATE >> 27)) {
        s->stmt_kept = true;
        s->server->user_stmt_lost = true;
    }
}

/* A Bind of a statement whose text (n bytes at t: the Parse's body, name
 * first; NULL: the unnamed statement's, read at its Parse) has words w,
 * one of them PGW_WORDS_PREPARE or PGW_WORDS_EXECUTE: the name it
 * PREPAREs is kept now (it may run), and what it EXECUTEs here is
 * noted. */
static void stmt_sql_bound(struct pgw_session *s, uint32_t w, const uint8_t *t, size_t n)
{
    struct pgw_server *srv = s->server;
    if ((w & PGW_WORDS_PREPARE) && (w & PGW_WORDS_STATE)) {
        const uint8_t *z = t ? memchr(t, 0, n) : NULL;
        uint64_t h = 0;
        uint8_t sw = 0;
        if (!t && s->unnamed_prep_is)
            stmt_sql_made(s, s->unnamed_prep, s->unnamed_prep_words);
        else if (z && stmt_sql_prepare_one(s, (const char *)z + 1,
                                           strnlen((const char *)z + 1, (size_t)(t + n - z - 1)),
                                           true, &h, &sw))
            stmt_sql_made(s, h, sw);
        s->stmt_prep_loose = true;               /* (its tag: kept already) */
    }
    if (!(w & PGW_WORDS_EXECUTE))
        return;
    if (t)
        s->state_words |= stmt_sql_execute_words(s, t, n, false);
    else if (s->unnamed_server != srv->id)
        s->state_words |= PGW_WORDS_STATE;       /* (its Parse read another server's) */
}

/* What a Query, Parse or FunctionCall (avail of its total bytes at p) may
 * change.  A tracked parameter the server does not report (SET,
 * set_config() or RESET of it, RESET ALL, DISCARD ALL): pgwharf would not
 * see it, the server's record of what it SET would be wrong, and the next
 * client would get the value (a client's login value is to follow it
 * wherever it goes): unrep_touched.  Any tracked setting, with prepared
 * statements on (a Query or FunctionCall: it runs now): the Parses behind
 * it, before its answer, may be read with the new value while the
 * client's record still has the old one: settings_pending.  Its text
 * names the parameter or says SET, RESET or DISCARD; a FunctionCall or a
 * message not read whole may. */
static void note_setting_words(struct pgw_session *s, char type, const uint8_t *p, uint32_t avail,
                               uint32_t total)
{
    /* A Parse runs at its Bind: a named one's words are looked at then
     * (pgw_relay_note_bound_words); the unnamed statement's Bind names
     * nothing to look up, and it is Bound right after, as a rule. */
    bool unnamed = type == PGW_FE_PARSE && avail > PGW_MSG_HDR && p[PGW_MSG_HDR] == '\0';
    /* Without prepared-statement support a named statement stays on the
     * server as Parsed, for a Bind in a later transaction. */
    bool kept = type == PGW_FE_PARSE && !unnamed && !s->ps_on && s->mode != PGW_POOL_SESSION &&
                !s->server->user_unrep_stmt;
    bool unrep = !s->unrep_touched || kept;
    /* (Its words stay for a Bind of it in a later request too.)  Looked
     * at while a SET is unanswered too: each SET starts new settings. */
    bool pend = s->ps_on && (type != PGW_FE_PARSE || unnamed);
    /* What it may leave on the server for another client (note_leftover):
     * a named statement's words are looked at its Bind too, with
     * prepared statements on.  (Read with all words noted already too:
     * a Parse's own, for a later Bind, and an SQL PREPARE's.) */
    bool state = s->mode != PGW_POOL_SESSION && s->px->cfg->server_reset_session_state;
    s->stmt_prep_due = false;
    if (!unrep && !pend && !state)
        return;
    uint32_t mask = unreported_mask(s->px, s->server->pool);
    uint32_t w;
    if (type == PGW_FE_FUNCTION_CALL || avail < total)
        w = UINT32_MAX;
    else if (!pend && !mask && !state)
        return;
    else
        w = pgw_relay_text_words(s->px, p + PGW_MSG_HDR,
                                 total > PGW_MSG_HDR ? total - PGW_MSG_HDR : 0, mask);
    if (state) {
        /* An SQL EXECUTE (EXPLAIN ANALYZE EXECUTE, CREATE TABLE ... AS
         * EXECUTE) runs a named statement as a Bind does, an SQL PREPAREd
         * one or one Parsed with HOLD, TEMP or MAKE (max_prepared_statements =
         * 0): the words the server keeps of the names it runs
         * (stmt_sql_*).  A named Parse of it with max_prepared_statements
         * = 0 runs at a Bind whose text is not at hand, the names there
         * then unknown now: it may leave both once Bound. */
        if ((w & PGW_WORDS_EXECUTE) && w != UINT32_MAX)
            w |= stmt_sql_execute_words(s, p + PGW_MSG_HDR, total - PGW_MSG_HDR,
                                        type == PGW_FE_QUERY && (w & PGW_WORDS_PREPARE));
        stmt_sql_hidden(s, w);
        if ((w & PGW_WORDS_DEALLOCATE) && w != UINT32_MAX)
            stmt_sql_dealloc(s, type, p + PGW_MSG_HDR, total - PGW_MSG_HDR);
        s->state_words |= w & PGW_WORDS_STATE;
        uint32_t bound = w;
        if ((w & PGW_WORDS_EXECUTE) && type == PGW_FE_PARSE && !unnamed && !s->ps_on)
            bound |= PGW_WORDS_STATE;
        /* A Parse not all here that fits the buffer is read whole before
         * it is sent (offer_tx_listen: transaction and statement mode),
         * and read here again then: its words for a later Bind from that
         * (one cut by a read said HOLD, TEMP and MAKE, or lost its server's
         * names: every Bind there cost a cleanup). */
        if (type == PGW_FE_PARSE &&
            (avail >= total || total > PGW_MSG_HDR + PGW_NOTIFY_QUERY_MAX))
            stmt_words_parse(s, p, avail < total ? avail : total, unnamed, bound);
        if (type == PGW_FE_PARSE && (w & PGW_WORDS_PREPARE) &&
            (avail >= total || total > PGW_MSG_HDR + PGW_NOTIFY_QUERY_MAX))
            stmt_sql_parse(s, p, avail < total ? avail : total, unnamed, w);
        s->stmt_prep_due = type == PGW_FE_QUERY && (w & PGW_WORDS_PREPARE);
    }
    if (unrep && mask && (w & (mask | PGW_WORDS_RESET))) {
        s->unrep_touched = true;
        if (kept)
            s->server->user_unrep_stmt = true;
    }
    if (pend && (w & (PGW_WORDS_SET | PGW_WORDS_RESET))) {
        s->settings_pending = true;      /* until its answer */
        s->settings_gen++;
    }
    if (unnamed && s->ps_on)
        s->unnamed_sets = (w & (PGW_WORDS_SET | PGW_WORDS_RESET)) != 0;
}

/* Does the client's first message on this link replace the server's
 * unnamed statement (a simple Query, or a Parse into it)?  The first
 * message of a link is never skipped after an error: it is processed. */
static bool first_replaces_unnamed(const struct pgw_session *s)
{
    const struct pgw_iobuf *b = s->cbuf;
    if (!b || b->sent != b->parsed || b->len - b->parsed < PGW_MSG_HDR + 1)
        return false;
    const uint8_t *p = b->data + b->parsed;
    return p[0] == PGW_FE_QUERY || (p[0] == PGW_FE_PARSE && p[PGW_MSG_HDR] == '\0');
}

/* Is want, the value of name to SET, bytes of the server's encoding?  A
 * value the server does not report is the startup packet's, which
 * PostgreSQL takes as it came, when that is text of its encoding (one
 * that is not, SJIS bytes to a UTF8 server, is read in the client's, as
 * is any in a multibyte encoding but UTF8). */
static bool startup_bytes(const struct pgw_pool *pool, const char *name, const char *want)
{
    if (param_reported(pool, name))
        return false;              /* as the server reported it: the client's encoding */
    const char *enc = pgw_params_get(pgw_pool_defaults(pool), "server_encoding");
    if (!enc)
        return true;
    if (strcmp(enc, "UTF8") == 0)
        return pgw_utf8_valid(want, strlen(want));
    /* Another multibyte one may refuse the bytes (convert_from): read in
     * the client's, as before. */
    return strncmp(enc, "EUC_", 4) != 0 && strcmp(enc, "MULE_INTERNAL") != 0;
}

/* Queue what a client needs before its first message on this server: SETs
 * that make the server's tracked parameters match what the client has
 * seen, and a drop of an unnamed statement another client may have left
 * there; their replies are swallowed. */
/* An application_name with bytes PostgreSQL does not keep, as the pool's
 * server would keep it: PostgreSQL takes a startup parameter's bytes as
 * they come and cleans them (up to 15 each into '?', from 16 into \xNN),
 * where pgwharf's SET of them is text of the client's encoding, which the
 * server converts first (LATIN1: "é" became four '?', not two) or refuses
 * (bytes that are not UTF-8: 22021, the login failed).  Cleaned, it is
 * printable ASCII, as the server reports it back.  False when memory is
 * short. */
/* A value over PGW_NAME_MAX bytes is cut first, as PostgreSQL cuts a
 * name-like setting (truncate_identifier, in the database's encoding)
 * before it cleans it: cleaned first, "é" x 40 gave 63 '?' where
 * PostgreSQL keeps 62, and from 16 on the server cut the \xNN text. */
static bool clean_application_name(struct pgw_session *s, const struct pgw_pool *pool)
{
    const char *v = s->params[PGW_TP_APPLICATION_NAME];
    ssize_t clip = pgw_name_cliplen(v, strlen(v), pgw_params_get(pgw_pool_defaults(pool),
                                                                 "server_encoding"));
    size_t n = 0, unclean = 0;
    for (; v[n] && (clip < 0 || n < (size_t)clip); n++)
        unclean += (uint8_t)v[n] < 0x20 || (uint8_t)v[n] > 0x7e;
    if (unclean == 0 && v[n] == '\0')
        return true;
    const char *version = pgw_params_get(pgw_pool_defaults(pool), "server_version");
    bool escape = !version || atoi(version) >= 16;
    char *out = malloc(n + unclean * 3 + 1), *o = out;
    if (!out)
        return false;
    for (const uint8_t *p = (const uint8_t *)v; p < (const uint8_t *)v + n; p++) {
        if (*p >= 0x20 && *p <= 0x7e)
            *o++ = (char)*p;
        else if (escape)
            o += sprintf(o, "\\x%02x", *p);
        else
            *o++ = '?';
    }
    *o = '\0';
    free(s->params[PGW_TP_APPLICATION_NAME]);
    s->params[PGW_TP_APPLICATION_NAME] = out;
    s->params_sig = 0;
    return true;
}

/* Reported parameters no SET changes (PostgreSQL: 55P02 "cannot be
 * changed"), which track_extra_parameters may name: what the server
 * reports of them is its own (in_hot_standby of another host, is_superuser
 * after SET SESSION AUTHORIZATION), never set back to the pool's. */
static bool param_settable(const char *name)
{
    static const char *const fixed[] = { "is_superuser", "in_hot_standby", "server_version",
                                         "server_encoding", "integer_datetimes",
                                         "session_authorization" };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (strcasecmp(name, fixed[i]) == 0)
            return false;
    return true;
}

/* The check of a login whose startup packet gave a tracked parameter twice
 * with different values (session.c, startup_order): one statement that
 * applies each value in PostgreSQL's order with set_config(..., true),
 * so that the first the server refuses ends the login with its error, as
 * PostgreSQL's own login would, and that keeps none (the values last
 * until the end of its transaction; PostgreSQL reports no ParameterStatus
 * for a value back to what it was).  The SETs of sync_params then make
 * the last value of each the session's. */
static void startup_check_query(struct pgw_wbuf *b, const struct pgw_session *s, bool keep)
{
    size_t m = sync_stmt_begin(b, keep);
    pgw_wbuf_append(b, "SELECT ", 7);
    for (const char *p = s->startup_order; *p;) {
        const char *v = p + strlen(p) + 1;
        if (p != s->startup_order)
            pgw_wbuf_append(b, ", ", 2);
        bool raw = startup_bytes(s->server->pool, p, v);
        if (strcmp(p, s->px->tracked[PGW_TP_CLIENT_ENCODING]) == 0) {
            /* At a login PostgreSQL checks only the name of a
             * client_encoding (PrepareClientEncoding succeeds until the
             * backend has started; the last one's conversion is the SET's
             * to check): one with no conversion to the server's (LATIN1
             * and SJIS, MULE_INTERNAL and UTF8) that a later one replaces
             * logs in there, where set_config refused it (0A000). */
            static const char w[] = "CASE WHEN pg_catalog.pg_char_to_encoding(",
                              o[] = ") < 0 OR pg_catalog.octet_length(", t[] = ") > 63 THEN ";
            pgw_wbuf_append(b, w, sizeof(w) - 1);
            value_literal(b, v, raw);
            pgw_wbuf_append(b, o, sizeof(o) - 1);
            value_literal(b, v, raw);
            pgw_wbuf_append(b, t, sizeof(t) - 1);
            set_config_call(b, p, v, raw, true);
            pgw_wbuf_append(b, " END", 4);
        } else {
            set_config_call(b, p, v, raw, true);
        }
        p = v + strlen(v) + 1;
    }
    sync_stmt_end(b, m, keep);
}

static bool sync_params(struct pgw_session *s)
{
    struct pgw_server *srv = s->server;
    if (s->params[PGW_TP_APPLICATION_NAME] && !clean_application_name(s, srv->pool))
        return false;
    /* The unnamed statement outlives transactions and clients: a Bind of
     * it without a Parse would run the one another client left here (its
     * rows to this client).  Any simple Query drops it, the SETs below
     * too; otherwise an empty one goes first -- unless the client's own
     * first message replaces it anyway.  The client's own stays (as on
     * a server of its own).  A transaction-mode login link sends nothing:
     * the client gets a server anew for its first query. */
    bool login_only = s->state == PGW_SS_LOGIN_WAIT && s->mode != PGW_POOL_SESSION;
    bool unnamed = srv->user_unnamed && !pgw_relay_unnamed_current(s, srv) && !login_only &&
                   !first_replaces_unnamed(s);
    if (unnamed || (!login_only && first_replaces_unnamed(s)))
        srv->user_unnamed = 0;           /* dropped below, or by the client's message */
    /* The client's own is there still: the SETs must leave it. */
    bool keep = srv->user_unnamed && !unnamed && !login_only;
    /* Most links find the server as this client left it (or as another
     * client with the same settings did): one comparison of summaries. */
    if (!s->params_sig)
        s->params_sig = params_sig(s);
    /* (Only at a login, and one whose packet said a value twice.) */
    bool check = s->startup_order && *s->startup_order;
    if (!unnamed && !check && params_match(srv, s))
        return true;
    /* One Query per SET or RESET: a value the server refuses (a startup
     * parameter PostgreSQL never checked) must not skip the others, as
     * the rest of a multi-statement Query would be. */
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    int queries = 0;
    const char *set[PGW_TP_MAX] = {NULL};    /* the value SET */
    bool reset[PGW_TP_MAX] = {false};
    const struct pgw_proxy *px = s->px;
    /* statement_timeout (track_extra_parameters) first: the others then
     * run under the client's own, not under the one the last client left
     * there -- a tiny one cancelled a SET, and the client's query ran with
     * that client's DateStyle (hunt). */
    int first = px->tracked_timeout;
    /* The check after the client's statement_timeout and client_encoding
     * (which the check's text is read in), before the rest: a value
     * refused there is PostgreSQL's first refusal. */
    int check_at = first > PGW_TP_CLIENT_ENCODING ? 2 : 1;
    for (int k = 0; k <= px->ntracked; k++) {
        if (check && k == check_at) {
            startup_check_query(&b, s, keep);
            s->sync_order[queries++] = PGW_SYNC_CHECK;
            check = false;
        }
        if (k == px->ntracked)
            break;
        int i = first < 0 || k > first ? k : k == 0 ? first : k - 1;
        const char *name = px->tracked[i];
        const char *want = s->params[i];
        const char *have = pgw_params_get(&srv->params, name);
        if (!want) {
            /* Never set by the client: it has what a fresh server has.  A
             * parameter the server does not report may hold another
             * client's SET (or be unknown after server_reset_query). */
            if (!have)
                continue;
            if (param_reported(srv->pool, name)) {
                /* In session mode (the welcome is still to come; a
                 * client welcomed without a server has every reported
                 * one set, and gets it SET below) the
                 * server comes from server_reset_query, which need not
                 * reset SETs (DEALLOCATE ALL, an empty one) and undoes
                 * connect_query's (DISCARD ALL): what it reports may be
                 * the last client's.  The client gets a fresh server's
                 * value, as from PgBouncer.  (In the other modes the
                 * welcome gave the client the pool's values: set.) */
                const char *def = s->mode == PGW_POOL_SESSION && param_settable(name)
                                      ? pgw_params_get(pgw_pool_defaults(srv->pool), name) : NULL;
                if (!def || strcmp(have, def) == 0)
                    continue;
                set_config_query(&b, name, def, NULL, startup_bytes(srv->pool, name, def), keep);
                set[i] = def;
                s->sync_order[queries++] = (uint8_t)i;
                continue;
            }
            /* A fresh server's is connect_query's, where it SET one. */
            const char *cq = pgw_params_get(pgw_pool_cq_params(srv->pool), name);
            if (cq && *have && strcmp(have, cq) == 0)
                continue;
            if (cq) {
                set_config_query(&b, name, cq, NULL, startup_bytes(srv->pool, name, cq), keep);
                set[i] = cq;
            } else {
                size_t m = sync_stmt_begin(&b, keep);
                pgw_wbuf_append(&b, "RESET ", 6);
                pgw_wbuf_append(&b, name, strlen(name));
                sync_stmt_end(&b, m, keep);
                reset[i] = true;
            }
        } else {
            if (have && strcmp(have, want) == 0 && (*have || param_reported(srv->pool, name)))
                continue;
            const char *base = NULL;
            if (i == PGW_TP_DATESTYLE) {
                base = pgw_params_get(pgw_pool_defaults(srv->pool), name);
                if (base && (strcmp(base, want) == 0 || (have && strcmp(base, have) == 0)))
                    base = NULL;             /* a fresh server's already, or wanted whole */
            }
            set_config_query(&b, name, want, base, startup_bytes(srv->pool, name, want),
                             keep);
            set[i] = want;
        }
        s->sync_order[queries++] = (uint8_t)i;
    }
    int extra = 0;                       /* an empty Query, answered first */
    if (unnamed && queries == 0) {
        pgw_wire_query(&b, "");
        extra = 1;
    }
    if (queries + extra > 0) {
        /* In front of whatever the client has queued, however much that is:
         * its first query must not run with another client's settings. */
        bool ok = !b.failed;
        if (ok && !s->cbuf)
            ok = (s->cbuf = pgw_iobuf_get(s->px)) != NULL;
        if (ok && s->cbuf->len + b.len > s->cbuf->cap)
            ok = pgw_iobuf_reserve(s->px, &s->cbuf,
                                   (uint32_t)(s->cbuf->len - s->cbuf->sent + b.len));
        if (ok)
            ok = pgw_iobuf_insert(s->cbuf, s->cbuf->sent, b.data, b.len);
        pgw_wbuf_deinit(&b);
        if (!ok)
            return false;
        /* 0 before: one sync per link.  The empty Query has no entry in
         * sync_order: with none queued, sync_answered skips its reply. */
        s->swallow += queries + extra;
        s->sync_hold = true;             /* (not prepared.c's swallowed messages) */
        if (!keep)
            srv->user_unnamed = 0;       /* each a simple Query: the unnamed statement goes */
        s->sync_queued = (uint8_t)queries;
        s->sync_err = false;
        /* Unreported parameters are known only by what pgwharf set (a
         * refused SET makes them unknown again: param_sync_failed).  A
         * reported one is recorded when the server reports it, or as it
         * was when the SET changed nothing (sync_answered): never as the
         * client spelled a value the server may refuse. */
        for (int i = 0; i < px->ntracked; i++) {
            if (param_reported(srv->pool, px->tracked[i]))
                continue;
            if (set[i] && !pgw_params_set(&srv->params, px->tracked[i], set[i]))
                pgw_params_set(&srv->params, px->tracked[i], "");    /* no memory: unknown */
            else if (reset[i])
                pgw_params_unset(&srv->params, px->tracked[i]);
        }
    } else {
        pgw_wbuf_deinit(&b);
    }
    /* true once the SETs above ran; without the values to confirm it,
     * the next link compares them all */
    srv->user_sig = params_keep(srv, s) ? s->params_sig : 0;
    srv->user_sig_gen = srv->params.gen;
    return true;
}

/* Rounds of sync_params at one link that may fail before the client is
 * told (sync_done, and login_sync_again). */
#define SYNC_TRIES 3

/* The server refused a SET or RESET of sync_params.  What it holds is no
 * longer what user_sig says, nor, for a parameter it does not report, what
 * pgwharf recorded: the next link compares and sets again.  During the
 * login the value is a startup parameter, which PostgreSQL refuses with a
 * FATAL: the client gets that instead of the welcome (AFTER_LOGIN).  A
 * SET cancelled then (57014: a pg_cancel_backend from outside, which any
 * client of the role may send) is no refusal of the value: the round goes
 * again (login_sync_again), as at a link (sync_done). */
static void param_sync_failed(struct pgw_session *s, const struct pgw_wire_err_fields *f)
{
    struct pgw_server *srv = s->server;
    srv->user_sig = 0;
    /* All of them: a RESET queued dropped its record at once, and a
     * refused one would pass for done (review: the next round skipped
     * it, and the request ran with the last client's value). */
    forget_unreported(s->px, srv, true);
    s->sync_err = true;
    const char *state = f->sqlstate && strlen(f->sqlstate) == 5 ? f->sqlstate : "08P01";
    if (s->state == PGW_SS_LINKED && s->sync_hold) {
        s->sync_failed = true;           /* (sync_done: sent again) */
        memcpy(s->sync_fail_state, state, sizeof(s->sync_fail_state));
        free(s->sync_fail_msg);
        s->sync_fail_msg = f->message ? strdup(f->message) : NULL;
    }
    /* The check of a packet that gave a value twice (PGW_SYNC_CHECK)
     * applies every tracked value of the packet in PostgreSQL's order:
     * its refusal is PostgreSQL's, over one of a SET before it (the last
     * client_encoding or statement_timeout, where an earlier value of
     * another parameter is what PostgreSQL names). */
    int k = s->sync_queued - s->swallow;
    bool check = k >= 0 && k < s->sync_queued && s->sync_order[k] == PGW_SYNC_CHECK;
    if (s->state != PGW_SS_LOGIN_SYNC || (s->login_refusal && !check))
        return;
    if (strcmp(state, "57014") == 0 && s->sync_tries + 1 < SYNC_TRIES) {
        s->sync_failed = true;
        return;
    }
    const char *msg = f->message ? f->message : "invalid startup parameter";
    size_t n = strlen(msg), d = f->detail ? strlen(f->detail) + 1 : 0;
    struct pgw_login_refusal *r = malloc(sizeof(*r) + n + 1 + d);
    if (r) {
        free(s->login_refusal);
        memcpy(r->sqlstate, state, sizeof(r->sqlstate));
        memcpy(r->message, msg, n + 1);
        r->detail = d ? memcpy(r->message + n + 1, f->detail, d) : NULL;
        s->login_refusal = r;
    }
}

/* The reply to one SET or RESET of sync_params is through.  A SET of a
 * reported parameter that changed the value brought a ParameterStatus
 * (note_param); one that changed nothing brought none: the server already
 * had the value, as it spells it ('iso, mdy' is 'ISO, MDY'), and that
 * spelling is the client's from now on, as PostgreSQL would have reported
 * it (later links then find it equal instead of SETting it again). */
static void sync_answered(struct pgw_session *s)
{
    int k = s->sync_queued - s->swallow;
    bool failed = s->sync_err;
    s->sync_err = false;
    if (failed || k < 0 || k >= s->sync_queued || s->sync_order[k] == PGW_SYNC_CHECK)
        return;
    int i = s->sync_order[k];
    const char *name = s->px->tracked[i];
    const char *have = pgw_params_get(&s->server->params, name);
    if (!s->params[i] || !have || !param_reported(s->server->pool, name) ||
        strcmp(have, s->params[i]) == 0)
        return;
    char *v = strdup(have);
    if (v) {
        free(s->params[i]);
        s->params[i] = v;
        s->params_sig = 0;
    }
}

/* What srv reported of name.  One that cannot be recorded (out of memory,
 * or a name past PGW_MAX_PARAMS) has no record, so the next link SETs it:
 * left as it was, the old value would pass for the server's. */
static void record_reported(struct pgw_server *srv, const char *name, const char *value)
{
    if (!pgw_params_set(&srv->params, name, value))
        pgw_params_unset(&srv->params, name);     /* (set dropped it already) */
}

/* A ParameterStatus from the server: both the server and the client now
 * have this value. */
static void note_param(struct pgw_session *s, const uint8_t *body, size_t len)
{
    const char *name = (const char *)body;
    const uint8_t *ne = memchr(body, 0, len);
    if (!ne || (size_t)(ne - body) + 1 >= len)
        return;
    const char *value = (const char *)ne + 1;
    if (!memchr(value, 0, len - (size_t)(ne - body) - 1))
        return;
    if (s->server->user_queued > 0) {
        /* Queued queries run after this change, not with the settings
         * they were queued for. */
        const char *have = pgw_params_get(&s->server->params, name);
        if (!have || strcmp(have, value) != 0)
            pgw_relay_pipe_taint(s->server);
    }
    record_reported(s->server, name, value);
    int t = pgw_tracked_param_index(s->px, name);
    if (t >= 0 && (!s->params[t] || strcmp(s->params[t], value) != 0)) {
        char *v = strdup(value);
        if (v) {
            free(s->params[t]);
            s->params[t] = v;
            s->params_sig = 0;
        }
    }
}

/* pgwharf's probe after a failed COPY FROM STDIN (track.h, copy_doubt):
 * sent (its first ReadyForQuery, any one of those to come, still due),
 * out (the client's ReadyForQuerys relayed until its CloseComplete), its
 * last ReadyForQuery due. */
enum { TRK_PROBE_NONE, TRK_PROBE_FIRST, TRK_PROBE_OUT, TRK_PROBE_LAST };

/* ---- linking ---- */

/* What the welcome of a session client without a server said of the
 * reported parameters pgwharf does not track (server_version,
 * session_authorization, is_superuser, default_transaction_read_only,
 * in_hot_standby...): the pool's record of a fresh server at that moment.
 * The record follows every server that logs in -- the one the client's
 * own first request logs in too, before the link -- so it cannot stand
 * for the welcome later.  Packed "name\0value\0..." and shared by the
 * clients welcomed from the same record: the proxy keeps the last one for
 * the next welcome that says the same (10 000 idle clients would
 * otherwise hold a copy each). */
struct pgw_told {
    uint32_t refs;
    uint32_t len;                    /* of pairs */
    char pairs[];
};

void pgw_relay_told_unref(struct pgw_told *t)
{
    if (t && --t->refs == 0)
        free(t);
}

static const char *told_get(const struct pgw_told *t, const char *name)
{
    const char *p = t->pairs, *end = t->pairs + t->len;
    while (p < end) {
        const char *v = p + strlen(p) + 1;
        if (strcmp(p, name) == 0)
            return v;
        p = v + strlen(v) + 1;
    }
    return NULL;
}

/* Does t say what defs says of the parameters not tracked, no more? */
static bool told_same(const struct pgw_proxy *px, const struct pgw_told *t,
                      const struct pgw_params *defs)
{
    const char *p = t->pairs, *end = t->pairs + t->len;
    for (int i = 0; i < defs->n; i++) {
        const char *name = pgw_param_name(&defs->p[i]), *v = pgw_param_value(&defs->p[i]);
        if (pgw_tracked_param_index(px, name) >= 0)
            continue;
        if (!packed_eq(&p, end, name) || !packed_eq(&p, end, v))
            return false;
    }
    return p == end;
}

/* A reference to the record of what a welcome from defs says; NULL when
 * memory is short. */
static struct pgw_told *told_take(struct pgw_proxy *px, const struct pgw_params *defs)
{
    struct pgw_told *t = px->told_last;
    if (t && told_same(px, t, defs)) {
        t->refs++;
        return t;
    }
    size_t len = 0;
    for (int i = 0; i < defs->n; i++)
        if (pgw_tracked_param_index(px, pgw_param_name(&defs->p[i])) < 0)
            len += strlen(pgw_param_name(&defs->p[i])) + strlen(pgw_param_value(&defs->p[i])) + 2;
    t = malloc(sizeof(*t) + len);
    if (!t)
        return NULL;
    t->refs = 2;                         /* the client's and px->told_last */
    t->len = (uint32_t)len;
    char *p = t->pairs;
    for (int i = 0; i < defs->n; i++) {
        const char *name = pgw_param_name(&defs->p[i]), *v = pgw_param_value(&defs->p[i]);
        if (pgw_tracked_param_index(px, name) >= 0)
            continue;
        p = pack_str(pack_str(p, name), v);
    }
    pgw_relay_told_unref(px->told_last);
    px->told_last = t;
    return t;
}

/* A session client welcomed without a server (pgw_relay_login) keeps the
 * one it takes at its first request: what that server reports may differ
 * from what the welcome said where no SET of sync_params makes them alike
 * -- a reported parameter pgwharf does not track (default_transaction_
 * read_only a server_reset_query that keeps SETs left there, or a role's
 * setting changed since; in_hot_standby or server_version of another
 * host; session_authorization of the pool a reload's user= made it take),
 * or a tracked one no SET changes (is_superuser after a SET SESSION
 * AUTHORIZATION the reset kept).  The client is told the server's values,
 * as PostgreSQL tells it of a change (ParameterStatus), ahead of any
 * reply: as a session client whose login took the server was welcomed
 * with them.  Measured against the welcome's own record (s->told), not
 * the pool's now: a server that logged in for this very request has made
 * the pool's record its own already.  false when memory is short. */
static bool report_session_params(struct pgw_session *s, const struct pgw_server *srv)
{
    const struct pgw_params *sp = &srv->params;
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    for (int i = 0; i < sp->n; i++) {
        const char *name = pgw_param_name(&sp->p[i]), *have = pgw_param_value(&sp->p[i]), *told;
        int t = pgw_tracked_param_index(s->px, name);
        if (t < 0) {
            told = s->told ? told_get(s->told, name) : NULL;
        } else {
            if (param_settable(name) || !param_reported(s->pool, name))
                continue;                /* SET by sync_params, or unreported */
            told = s->params[t];
        }
        if (!told || strcmp(told, have) == 0)
            continue;
        if (t >= 0) {
            char *v = strdup(have);
            if (!v) {
                pgw_wbuf_deinit(&b);
                return false;
            }
            free(s->params[t]);
            s->params[t] = v;
            s->params_sig = 0;
        }
        pgw_wire_param_status(&b, name, have);
    }
    bool ok = b.len == 0 || pgw_session_queue(s, &b);
    pgw_wbuf_deinit(&b);
    return ok;
}

void pgw_relay_link(struct pgw_session *s, struct pgw_server *srv)
{
    struct ev_loop *loop = s->px->loop;
    /* Client bytes are scanned only while linked, so the counters start
     * from nothing here. */
    s->server = srv;
    srv->link = s;
    s->sskip = 0;
    s->swallow = 0;
    s->sync_hold = s->sync_failed = s->sync_resume = false;
    s->sync_tries = 0;
    free(s->sync_fail_msg);
    s->sync_fail_msg = NULL;
    s->trk_probe = TRK_PROBE_NONE;
    s->track.copy = false;
    s->track.tx_status = 'I';
    s->copy_ins = s->copy_ends = 0;
    s->ready_at = pgw_mono_now(loop);
    /* The pool has had this socket registered with libev since it
     * connected, so the watchers need ev_io_set only when the fd number
     * differs from last time (which costs an epoll_ctl). */
    if (!srv->user_io_set) {
        ev_io_init(&srv->user_r, pgw_relay_srv_read_cb, srv->fd, EV_READ);
        ev_io_init(&srv->user_w, pgw_relay_srv_write_cb, srv->fd, EV_WRITE);
        srv->user_io_set = true;
    }
    ev_io_start(loop, &srv->user_r);
    s->ps_on = pgw_ps_enabled(s);
    if (s->ps_on)
        pgw_ps_link(s);
    /* A replication client's server was made for it (a physical walsender
     * would refuse a SET anyway). */
    if (s->replication)
        return;
    if (s->welcomed_bare && s->mode == PGW_POOL_SESSION && !report_session_params(s, srv)) {
        pgw_session_close(s, "53200", "out of memory reporting the server's parameters");
        return;
    }
    s->welcomed_bare = false;
    pgw_relay_told_unref(s->told);
    s->told = NULL;
    /* Relaying the client's bytes without the SETs would run them with
     * the settings another client left on this server. */
    if (!sync_params(s))
        pgw_session_close(s, "53200", "out of memory queueing SET for the client's parameters");
}

/* pgw_relay_release_mode, the server's bytes past what is scanned aside. */
static enum pgw_release release_mode_scanned(const struct pgw_session *s)
{
    /* (A block the pool rolls back: PGW_LEFTOVER_XACT, copy_abort_reply.) */
    bool rolled_back = s->server && (s->server->user_leftover & PGW_LEFTOVER_XACT);
    if (s->track.sync_out > 0 || s->track.fe_open > 0 || s->swallow > 0 || s->track.copy ||
        s->cskip || s->sskip || s->cancel_inflight ||
        (s->track.tx_status != 'I' && !rolled_back) || (s->ps_on && !pgw_ps_idle(s)) ||
        s->trk_probe)
        return PGW_RELEASE_CLOSE;
    if (s->cbuf && s->cbuf->sent < s->cbuf->parsed)
        return PGW_RELEASE_CLOSE;
    /* (A client of a pool a reload made session mode since its login gives
     * its server back reset too: the next may be a session client.) */
    if (s->mode == PGW_POOL_SESSION || s->px->cfg->server_reset_query_always ||
        (s->pool && pgw_pool_mode(s->pool) == PGW_POOL_SESSION))
        return PGW_RELEASE_RESET;
    return PGW_RELEASE_IDLE;
}

enum pgw_release pgw_relay_release_mode(const struct pgw_session *s)
{
    if (s->sbuf && s->sbuf->parsed < s->sbuf->len && !s->pipe_stop)
        return PGW_RELEASE_CLOSE;
    return release_mode_scanned(s);
}

/* The server is idle with nothing outstanding (ReadyForQuery 'I' in
 * transaction or statement mode): let it go, unless a message is half
 * relayed either way -- a client still streaming CopyData after the server
 * ended its COPY, a partial message in a buffer or on its way.  Those bytes
 * belong to this server (which ignores stray CopyData), not the next one:
 * the release waits until they are through (release_held), and is tried
 * again after each flush to the server and each server read. */
void pgw_relay_release_if_clean(struct pgw_session *s)
{
    if (!s->release_held || !s->server || s->state != PGW_SS_LINKED)
        return;
    enum pgw_release how = pgw_relay_release_mode(s);
    if (how == PGW_RELEASE_CLOSE)
        return;
    pgw_relay_unlink(s, how);
    pgw_session_arm_timer(s);
    /* Bytes that arrived for the next transaction are already scanned
     * only if complete; anything pending gets a new server. */
    if (s->cbuf && s->cbuf->parsed < s->cbuf->len)
        pgw_relay_client_data(s);
}

static void pipe_handoff(struct pgw_server *srv, struct pgw_session *n);
static void pipe_fail(struct pgw_list *queue, const char *why);
static void pipe_cancel_due(struct pgw_session *s);
static double pipe_qt_join(double a, double b);
static double pipe_qt_of(const struct pgw_session *s);
static ev_tstamp pipe_left_deadline(double qt, ev_tstamp now);
#define PIPE_CANCEL_DELAY 0.1     /* seconds; see pipe_cancel_due */

/* Room for n more bytes in *bp (taken if NULL), so that appending or
 * inserting them cannot fail. */
static bool pipe_room(struct pgw_proxy *px, struct pgw_iobuf **bp, uint32_t n)
{
    if (n == 0)
        return true;
    if (!*bp && !(*bp = pgw_iobuf_get(px)))
        return false;
    struct pgw_iobuf *b = *bp;
    if (b->len + n <= b->cap)
        return true;
    pgw_iobuf_compact(b);
    return b->len + n <= b->cap || pgw_iobuf_reserve(px, bp, b->len - b->sent + n);
}

void pgw_relay_unlink(struct pgw_session *s, enum pgw_release how)
{
    struct pgw_server *srv = s->server;
    struct ev_loop *loop = s->px->loop;
    s->release_held = false;
    /* A cancel still deferred was for the request that ends here. */
    if (s->pipe_cancel)
        pgw_cancel_deferred_drop(s);
    if (!srv)
        return;
    ev_io_stop(loop, &srv->user_r);
    ev_io_stop(loop, &srv->user_w);
    s->srv_write_blocked = false;
    s->server = NULL;
    srv->link = NULL;
    s->state_words = 0;      /* (srv->user_leftover stays: the pool's to clean) */
    s->stmt_forget_n = 0;    /* (not answered: the names stay) */
    s->stmt_forget_err = false;
    s->stmt_kept = false;
    s->stmt_prep_n = s->stmt_prep_at = 0;
    s->stmt_prep_open = false;
    s->stmt_prep_loose = false;
    s->stmt_prep_noplain = false;
    s->portal_prep.kind = PGW_PORTAL_PREP_NONE;   /* (a portal ends with its transaction) */
    if (s->unrep_touched) {
        /* What pgwharf SET of them there may have changed: the next
         * client gets a SET or RESET. */
        s->unrep_touched = false;
        forget_unreported(s->px, srv, true);
        srv->user_sig = 0;
    }
    /* Clients queued behind this one (server_pipeline_depth) get the
     * server next, with what it already sent them.  A borrower that leaves
     * before its reply is through leaves the rest of it for the next one to
     * drop.  When the server cannot go on they fail. */
    struct pgw_session *next = NULL;
    struct pgw_list failing;
    pgw_list_init(&failing);
    const char *why = "server connection closed while the query ahead of yours ran";
    if (srv->user_queued > 0 || srv->user_tail_skip > 0) {
        /* Its own reply: through (pipe_stop), or all that is outstanding. */
        bool clean = !s->track.copy && s->track.fe_open == 0 && s->swallow == 0 &&
                     s->cskip == 0 && s->cancel_inflight == 0 &&
                     s->track.sync_out == (s->pipe_stop ? 0 : 1);
        struct pgw_list *first = pgw_list_first(&srv->user_queue);
        struct pgw_session *head = first ? pgw_container_of(first, struct pgw_session, pipe_node)
                                         : NULL;
        /* A reset due (a reload made the pool session mode, or turned on
         * server_reset_query_always) waits for the queue: the queued
         * queries are on the server already, lone SELECTs that change no
         * setting, and run before any reset would.  The last of them
         * gives the server back reset (release_mode_scanned); nobody new
         * queues meanwhile (pipe_request). */
        if (head && clean && !srv->user_pipe_broken && pgw_pool_handoff(srv)) {
            next = head;
            if (s->ps_on && !s->pipe_stop)
                pgw_ps_abandon(s, srv);
            if (!s->pipe_stop) {
                /* Its own reply is in pipe_skip already when tainted. */
                next->pipe_skip += s->pipe_skip + (s->pipe_fail_own ? 0 : 1);
                next->pipe_drop = s->pipe_skip > 0 ? s->pipe_drop : s->sskip;
                /* The query the server runs, nobody's now, keeps its
                 * client's query_timeout or transaction_timeout (that of
                 * one ahead of s's own when s waited for it): next's wait
                 * ends there. */
                next->pipe_left_at = s->pipe_waits ? s->pipe_left_at
                                                   : pgw_session_query_deadline(s);
                if (s->pipe_waits)
                    next->pipe_left_qt = pipe_qt_join(pipe_qt_join(s->pipe_left_qt, pipe_qt_of(s)),
                                                      next->pipe_left_qt);
            } else {
                /* Those of clients that left behind s start now. */
                next->pipe_left_at = pipe_left_deadline(next->pipe_left_qt,
                                                        pgw_mono_now(loop));
            }
            /* What the server sent past this client's reply, and what is
             * still to be sent to it (queries queued behind), go with it. */
            uint32_t left = s->sbuf ? s->sbuf->len - s->sbuf->parsed : 0;
            uint32_t unsent = s->cbuf ? s->cbuf->parsed - s->cbuf->sent : 0;
            if (!pipe_room(s->px, &next->sbuf, left) || !pipe_room(s->px, &next->cbuf, unsent)) {
                next = NULL;
                why = "out of memory passing the server on";
            } else {
                if (left > 0)
                    pgw_iobuf_append(next->sbuf, s->sbuf->data + s->sbuf->parsed, left);
                if (unsent > 0) {
                    pgw_iobuf_insert(next->cbuf, next->cbuf->sent, s->cbuf->data + s->cbuf->sent,
                                     unsent);
                    pgw_iobuf_cut(s->cbuf, s->cbuf->sent, unsent);
                }
            }
        }
        if (!next) {
            how = PGW_RELEASE_CLOSE;
            struct pgw_list *q;
            while ((q = pgw_list_first(&srv->user_queue))) {
                pgw_list_del(q);
                pgw_list_append(&failing, q);
            }
            srv->user_queued = 0;
            srv->user_tail_skip = 0;
            srv->user_tail_qt = 0;
        }
        /* else user_tail_skip stays: those replies come after the queue's. */
    }
    if (!next && s->pipe_waits && s->cbuf && s->cbuf->sent < s->cbuf->parsed) {
        /* Requests of the clients queued behind s, moved to it at its
         * handoff and not sent yet (its own messages since are held,
         * unscanned): they fail with the queue.  Left there, they went to
         * s's next server, their answers read as its own. */
        pgw_iobuf_cut(s->cbuf, s->cbuf->sent, s->cbuf->parsed - s->cbuf->sent);
    }
    srv->user_pipe_ok = false;
    srv->user_pipe_broken = false;
    s->pipe_stop = false;
    s->pipe_budget = 0;
    if (s->sbuf)
        s->sbuf->len = s->sbuf->parsed;   /* a partial server message is the server's */
    s->sskip = 0;
    pgw_track_reset(&s->track);
    s->trk_probe = TRK_PROBE_NONE;
    s->swallow = 0;
    s->query_start = 0;
    s->waited_since = 0;
    s->pipe_waits = false;
    s->pipe_left_at = 0;
    s->pipe_left_qt = 0;
    s->ps_need_room = false;
    s->ps_wait = false;
    if (s->ps_on)
        pgw_ps_unlink(s);
    if (how == PGW_RELEASE_RESET && !next) {
        /* server_reset_query may take back what pgwharf SET of a parameter
         * the server does not report: unknown from now on (the next client
         * gets a SET or RESET). */
        forget_unreported(s->px, srv, false);
        pgw_ps_server_reset(srv, s->px->cfg->server_reset_query);
        const char *rq = s->px->cfg->server_reset_query;
        if (rq && *rq)
            srv->user_unnamed = 0;       /* a simple Query drops it */
        if (rq && (pgw_sql_has_all(rq, "discard") || pgw_sql_has_all(rq, "deallocate"))) {
            srv->user_unrep_stmt = false;    /* its named statements are gone */
            stmt_words_clear(srv);
        }
    }
    /* (The server its transaction's LISTEN ran on may stay, listening for
     * the client until the hub's server does: notify_bridge.c.) */
    if (!next && !(how != PGW_RELEASE_CLOSE && s->notify &&
                   !(srv->user_leftover & PGW_LEFTOVER_XACT) && pgw_notify_bridge_take(s, srv)))
        pgw_pool_release(srv, how);
    /* A client without a server holds no empty buffer (an idle client is
     * then just its session). */
    if (s->sbuf && s->sbuf->sent == s->sbuf->len) {
        pgw_iobuf_put(s->px, s->sbuf);
        s->sbuf = NULL;
    }
    if (s->cbuf && s->cbuf->sent == s->cbuf->len) {
        pgw_iobuf_put(s->px, s->cbuf);
        s->cbuf = NULL;
    }
    if (s->state == PGW_SS_LINKED)
        s->state = PGW_SS_IDLE;
    if (s->notify)
        pgw_notify_flush(s);         /* notifications held during its transaction */
    if (next)
        pipe_handoff(srv, next);
    pipe_fail(&failing, why);
    pgw_proxy_maybe_finish(s->px);
}

/* ---- the welcome after login ---- */

static const struct pgw_params no_params;

/* welcome's loops for a pool's defaults standing for the server and for
 * what the client gets unset: each tracked one the client did not set
 * takes the defaults' value, and each of the defaults goes out as
 * ParameterStatus with the client's value where it set one. */
static void welcome_from_defaults(struct pgw_session *s, const struct pgw_params *defs,
                                  struct pgw_wbuf *b)
{
    for (int i = 0; i < defs->n; i++) {
        const char *name = pgw_param_name(&defs->p[i]), *v = pgw_param_value(&defs->p[i]);
        int t = pgw_tracked_param_index(s->px, name);
        if (t >= 0) {
            /* (The defaults hold it under the tracked spelling: the
             * lookup by that name the general path does finds it.) */
            if (!s->params[t] && strcmp(name, s->px->tracked[t]) == 0)
                s->params[t] = strdup(v);
            if (s->params[t])
                v = s->params[t];
        }
        pgw_wire_param_status(b, name, v);
    }
}

static void welcome(struct pgw_session *s)
{
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    free(s->startup_order);              /* (checked: sync_params) */
    s->startup_order = NULL;
    s->sync_tries = 0;                   /* (the login's rounds: login_sync_again) */
    s->sync_failed = false;
    /* A tracked parameter the client did not set is, in transaction and
     * statement mode, what a fresh server reports -- not what the client
     * before it on this server SET (the next link SETs it back).  In
     * session mode the client keeps this server, reset for it by
     * server_reset_query: what it reports is what the client gets.  (A
     * session client welcomed without one gets a fresh server's, and the
     * server it takes is SET to them or reports its own:
     * report_session_params.) */
    /* A parameter the server does not report (extra_float_digits) is the
     * client's only if it set it: the server's record of one is another
     * client's SET, and PostgreSQL sends no ParameterStatus for it. */
    /* Without a server (welcome_without_server) the pool's record of a
     * fresh one stands for it. */
    const struct pgw_params *sp = s->server ? &s->server->params : pgw_pool_defaults(s->pool);
    if (s->replication) {
        /* Its own server, made with only application_name and
         * client_encoding of what the client sent: the client sees what
         * that server says, all of it. */
        for (int i = 0; i < s->px->ntracked; i++) {
            free(s->params[i]);
            s->params[i] = NULL;
        }
        for (int i = 0; i < sp->n; i++) {
            const char *name = pgw_param_name(&sp->p[i]), *v = pgw_param_value(&sp->p[i]);
            int t = pgw_tracked_param_index(s->px, name);
            if (t >= 0)
                s->params[t] = strdup(v);
            pgw_wire_param_status(&b, name, v);
        }
        static const struct pgw_params none;
        sp = &none;           /* nothing more below */
    }
    const struct pgw_params *defs = pgw_pool_defaults(s->pool);
    const struct pgw_params *dp = s->mode == PGW_POOL_SESSION ? sp : defs;
    if (sp == defs && dp == defs) {
        /* A login with no server: what the two loops below do, in one
         * pass over the defaults. */
        welcome_from_defaults(s, defs, &b);
        sp = &no_params;
        /* (Session mode: what the server it takes is told against.) */
        if (s->mode == PGW_POOL_SESSION && !(s->told = told_take(s->px, defs))) {
            pgw_wbuf_deinit(&b);
            pgw_session_close(s, "53200", "out of memory");
            return;
        }
    }
    for (int i = 0; i < s->px->ntracked; i++) {
        if (s->params[i] || sp == &no_params)
            continue;
        /* Reported (the pool's defaults have it), then dp's value. */
        const char *v = pgw_params_get(defs, s->px->tracked[i]);
        if (v && dp != defs)
            v = pgw_params_get(dp, s->px->tracked[i]);
        if (v)                           /* unreported and unset: no opinion */
            s->params[i] = strdup(v);
    }
    for (int i = 0; i < sp->n; i++) {
        const char *name = pgw_param_name(&sp->p[i]), *v = pgw_param_value(&sp->p[i]);
        /* (Every one of the defaults' own is reported.) */
        if (sp != defs && !param_reported(s->pool, name))
            continue;
        int t = pgw_tracked_param_index(s->px, name);
        if (t >= 0 && s->params[t])
            v = s->params[t];
        pgw_wire_param_status(&b, name, v);
    }
    s->params_sig = 0;
    pgw_wire_key_data(&b, s->cancel_pid, s->cancel_key);
    /* login_notify_message (PgBouncer 1.25): part of a pool's welcome,
     * so the admin console, whose welcome is its own, does not get it. */
    if (*s->px->cfg->login_notify_message)
        pgw_wire_notice(&b, "00000", s->px->cfg->login_notify_message);
    pgw_wire_ready(&b, 'I');
    if (!pgw_session_queue(s, &b)) {
        pgw_wbuf_deinit(&b);
        pgw_session_close(s, "53200", "out of memory");
        return;
    }
    pgw_wbuf_deinit(&b);
    /* The login ends with this welcome: what was read and not handled yet
     * is the client's first requests, what waits to be written (the
     * welcome and AuthenticationOk before it) the login's. */
    s->welcomed = true;
    s->unrelayed_in = s->bytes_in - (s->cbuf ? s->cbuf->len - s->cbuf->sent : 0);
    s->unrelayed_out = s->bytes_out + (s->sbuf->parsed - s->sbuf->sent);
    pgw_batch_flush_client(s);
    if (s->state == PGW_SS_CLOSING)
        return;
    if (s->mode == PGW_POOL_SESSION && s->server) {
        s->state = PGW_SS_LINKED;
    } else {
        /* (A session client welcomed without one takes its server at its
         * first request: report_session_params.) */
        s->welcomed_bare = !s->server;
        s->state = PGW_SS_IDLE;
        if (s->server)
            pgw_relay_unlink(s, PGW_RELEASE_IDLE);
    }
    /* Idle from its welcome, the last answer it got: the login's wait for
     * a server (a PAUSE, a slow server, a replication client's own one)
     * was no idleness, and counted from its password client_idle_timeout
     * closed it as soon as it was in. */
    s->last_activity = pgw_mono_now(s->px->loop);
    pgw_session_arm_timer(s);
    if (s->cbuf && s->cbuf->len > s->cbuf->parsed) {
        pgw_relay_client_data(s);
    } else if (s->cbuf && !s->server && s->cbuf->sent == s->cbuf->len) {
        pgw_iobuf_put(s->px, s->cbuf);     /* an idle client holds no buffer */
        s->cbuf = NULL;
    }
}

/* ---- pipelining: clients queued on a busy server (server_pipeline_depth) ----
 *
 * When a pool has no free server and no room to grow, a client whose
 * request is one simple-protocol SELECT may have it sent at once to a lent
 * server, behind the query its borrower runs, instead of waiting for a
 * server to come back.  PostgreSQL answers in order, each answer ending
 * with ReadyForQuery, so the bytes after the borrower's last ReadyForQuery
 * are the next client's.  Only where that is certain:
 *   - the borrower's own request is one such SELECT and it has sent nothing
 *     since (pipe_budget; what it sends next is held until the server
 *     moves on), so it leaves at that ReadyForQuery 'I';
 *   - a SELECT without ';' is one statement in its own implicit
 *     transaction: it cannot leave a transaction open for the next client;
 *   - the queued client's tracked settings are those the server has, and a
 *     ParameterStatus that changes them while others are queued, a cancel
 *     of the borrower, or a queued client that leaves closes the server at
 *     the handoff: the clients behind get 08006 rather than an answer run
 *     with another client's settings, canceled for another client, or meant
 *     for another client. */

static void server_data(struct pgw_session *s);

/* A Query text that is one SELECT: optional blanks, SELECT, and no ';'
 * before the trailing blanks and semicolons (in a string, a comment or
 * code, a ';' rules the query out: safe, not exact). */
static bool pipe_safe_sql(const char *sql, size_t len)
{
    size_t i = 0;
    while (i < len && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r'))
        i++;
    if (len - i < 7 || strncasecmp(sql + i, "select", 6) != 0)
        return false;
    char c = sql[i + 6];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
        return false;
    size_t end = len;
    while (end > i && (sql[end - 1] == ';' || sql[end - 1] == ' ' || sql[end - 1] == '\t' ||
                       sql[end - 1] == '\n' || sql[end - 1] == '\r'))
        end--;
    return memchr(sql + i, ';', end - i) == NULL;
}

/* pipe_safe_sql, and the SELECT changes no setting (set_config, or what
 * takes SETs back): a queued request runs before its client has the
 * server, unseen by note_setting_words, and the clients queued behind it
 * would run with that change -- a parameter the server does not report
 * (search_path) gives no ParameterStatus that fails them.  Nor may it
 * leave a temporary table (SELECT ... INTO TEMP): unseen, its tag would
 * not mark the server for server_reset_session_state, and the clients
 * queued behind it, and the next one the pool lends the server to, would
 * read it. */
static bool pipe_safe_text(const struct pgw_proxy *px, const char *sql, size_t len)
{
    return pipe_safe_sql(sql, len) &&
           !(pgw_relay_text_words(px, (const uint8_t *)sql, len, 0) &
             (PGW_WORDS_SET | PGW_WORDS_RESET | PGW_WORDS_STATE));
}

/* A request that may queue on a busy server, as pipe_request reads it. */
struct pipe_req {
    int n;                           /* messages */
    char types[PGW_PIPE_REQ_MAX];
    bool parse;                      /* it starts with a Parse (unnamed) */
    bool bound;                      /* a Bind came: the portal is its own */
    unsigned named;                  /* bit i: message i names stmt */
    struct ps_stmt *stmt;            /* the client's named statement */
    const char *name;                /* its name for it (in the client's buffer) */
    const char *srv_name;            /* its name on servers */
};

/* One message of a queueable extended-protocol request: the Parse, first,
 * of a text pipe_safe_sql accepts into the unnamed statement and Bind/
 * Describe/Execute of it with the unnamed portal; or, with no Parse, the
 * same naming one of the client's prepared statements whose text
 * pipe_safe_sql accepts (prepared.c renames it; only servers that have it
 * take the request: pipe_score). */
static bool pipe_ext_msg(struct pgw_session *s, char type, const uint8_t *body, uint32_t blen,
                         struct pipe_req *r)
{
    const char *name = NULL;         /* the statement it names */
    switch (type) {
    case PGW_FE_PARSE: {
        if (r->n != 0 || blen < 4 || body[0] != '\0')
            return false;
        const uint8_t *sql = body + 1, *end = body + blen;
        const uint8_t *nul = memchr(sql, 0, (size_t)(end - sql));
        if (!nul || end - nul < 3 ||
            !pipe_safe_text(s->px, (const char *)sql, (size_t)(nul - sql)))
            return false;
        uint32_t nparams = pgw_get_u16(nul + 1);
        if ((uint64_t)(end - nul - 3) != 4ull * nparams)
            return false;
        r->parse = true;
        break;
    }
    case PGW_FE_BIND:                /* portal "", statement, the rest */
        if (blen < 2 || body[0] != '\0' || !memchr(body + 1, 0, blen - 1))
            return false;
        name = (const char *)body + 1;
        r->bound = true;
        break;
    case PGW_FE_DESCRIBE:            /* 'P' "" or 'S' name */
        if (blen < 2 || body[blen - 1] != '\0' || memchr(body + 1, 0, blen - 1) != body + blen - 1)
            return false;
        if (body[0] == 'S')
            name = (const char *)body + 1;
        else if (body[0] != 'P' || blen != 2 || !r->bound)
            return false;
        break;
    case PGW_FE_EXECUTE:
        if (!r->bound || blen != 5 || body[0] != '\0')
            return false;
        break;
    case PGW_FE_SYNC:
        if (r->n == 0 || blen != 0)
            return false;
        break;
    default:
        return false;
    }
    if (name && *name == '\0' && !r->parse)
        return false;                /* whatever the server has unnamed */
    if (name && *name != '\0') {
        if (r->parse)
            return false;
        if (!r->stmt) {
            const char *sql;
            if (!pgw_ps_enabled(s) ||
                !(r->stmt = pgw_ps_client_stmt(s, name, &sql, &r->srv_name)) ||
                !pipe_safe_text(s->px, sql, strlen(sql)))
                return false;
            r->name = name;
        } else if (strcmp(name, r->name) != 0) {
            return false;
        }
        r->named |= 1u << r->n;
    }
    r->types[r->n++] = type;
    return true;
}

/* The client's unsent bytes are exactly one whole request that may queue
 * on a busy server, and the session may take part: one Query that
 * pipe_safe_sql accepts, or extended-protocol messages pipe_ext_msg
 * accepts and one Sync, last (what libpq's PQexecParams and
 * PQexecPrepared send).  Fills r; false when it may not. */
static bool pipe_request(struct pgw_session *s, struct pipe_req *r)
{
    const struct pgw_config *cfg = s->px->cfg;
    const struct pgw_iobuf *b = s->cbuf;
    if (cfg->server_pipeline_depth <= 0 || s->mode == PGW_POOL_SESSION ||
        (s->pool && pgw_pool_mode(s->pool) == PGW_POOL_SESSION) ||
        cfg->server_reset_query_always || s->discard != PGW_DISCARD_NONE || s->cskip ||
        s->cancel_inflight || !b || b->sent != b->parsed || b->len - b->parsed < PGW_MSG_HDR + 1)
        return false;
    memset(r, 0, sizeof(*r));
    const uint8_t *p = b->data + b->parsed, *end = b->data + b->len;
    if (p[0] == PGW_FE_QUERY) {
        uint32_t mlen = pgw_get_u32(p + 1);
        if (mlen < 5 || (uint64_t)mlen + 1 != (uint64_t)(end - p))
            return false;
        const char *sql = (const char *)p + PGW_MSG_HDR;
        size_t n = mlen - 5;                 /* without the terminating NUL */
        if (sql[n] != '\0' || memchr(sql, '\0', n) || !pipe_safe_text(s->px, sql, n))
            return false;
        r->types[r->n++] = PGW_FE_QUERY;
        return true;
    }
    while (p < end) {
        if (r->n == PGW_PIPE_REQ_MAX || end - p < PGW_MSG_HDR)
            return false;
        char type = (char)p[0];
        uint32_t mlen = pgw_get_u32(p + 1);
        if (mlen < 4 || (uint64_t)mlen + 1 > (uint64_t)(end - p) ||
            !pipe_ext_msg(s, type, p + PGW_MSG_HDR, mlen - 4, r))
            return false;
        p += mlen + 1;
        if (type == PGW_FE_SYNC)
            return p == end;             /* one Sync, the last message */
    }
    return false;
}

struct pipe_pick {
    struct pgw_session *s;
    const struct ps_stmt *stmt;
};

/* How good a place srv is for s's query: the fewest clients queued; -1
 * when it is no place at all. */
static int pipe_score(struct pgw_server *srv, void *arg)
{
    const struct pipe_pick *pk = arg;
    struct pgw_session *s = pk->s;
    struct pgw_session *h = srv->link;
    if (!h || !srv->user_pipe_ok || srv->user_pipe_broken ||
        srv->user_queued >= s->px->cfg->server_pipeline_depth)
        return -1;
    /* Not behind a reply nobody reads (it may be a runaway query a client
     * gave up on) nor a borrower with a cancel on its way. */
    if (h->state != PGW_SS_LINKED || h->pipe_stop || h->pipe_skip || h->pipe_drop ||
        h->release_held || h->cancel_inflight || h->pipe_cancel ||
        h->swallow || h->unrep_touched || h->track.sync_out != 1 || h->track.fe_open ||
        h->track.copy || h->trk_probe ||
        (h->cbuf && h->cbuf->parsed != h->cbuf->len))
        return -1;
    /* Nor behind one that may leave a cursor or temporary table there (a
     * SELECT ... INTO TEMP): a query behind it would run before the
     * cleanup (note_leftover). */
    if (srv->user_leftover || (h->state_words & PGW_WORDS_STATE))
        return -1;
    if (!params_match(srv, s))
        return -1;                       /* other settings: it would need SETs */
    /* A request on a prepared statement leaves the unnamed one as it is:
     * not another client's for this one to Bind once it has the server. */
    if (pk->stmt && srv->user_unnamed && srv->user_unnamed != s->id)
        return -1;
    /* The server has the statement, and not by a Parse still in flight
     * (that may fail). */
    if (pk->stmt && (!pgw_ps_server_ready(srv, pk->stmt) || pgw_ps_parse_pending(h)))
        return -1;
    return srv->user_queued;
}

/* Append r (the n bytes at p) to b with the statement's server name in
 * place of the client's; false when b has no room. */
static bool pipe_copy(struct pgw_iobuf *b, const uint8_t *p, uint32_t n, const struct pipe_req *r)
{
    if (!r->named)
        return pgw_iobuf_append(b, p, n);
    size_t oldn = strlen(r->name), newn = strlen(r->srv_name);
    int64_t grow = ((int64_t)newn - (int64_t)oldn) * __builtin_popcount(r->named);
    if (b->len + n + grow > b->cap)
        pgw_iobuf_compact(b);
    if (b->len + n + grow > b->cap)
        return false;
    for (int i = 0; i < r->n; i++) {
        uint32_t total = pgw_get_u32(p + 1) + 1;
        if (!((r->named >> i) & 1)) {
            pgw_iobuf_append(b, p, total);
        } else {
            /* Bind: portal "" then the name; Describe: 'S' then the name. */
            uint8_t hdr[PGW_MSG_HDR + 1];
            hdr[0] = p[0];
            pgw_put_u32(hdr + 1, (uint32_t)(total - 1 - oldn + newn));
            hdr[5] = p[5];
            pgw_iobuf_append(b, hdr, sizeof(hdr));
            pgw_iobuf_append(b, r->srv_name, newn);
            pgw_iobuf_append(b, p + 6 + oldn, total - 6 - oldn);
        }
        p += total;
    }
    return true;
}

/* Put s's request r on srv's queue, behind its borrower's; false when it
 * does not fit there (nothing changed).  A client taken from the pool's
 * queue (pulled) keeps its wait start. */
static bool pipe_queue_on(struct pgw_session *s, struct pgw_server *srv, const struct pipe_req *r,
                          bool pulled)
{
    struct pgw_session *h = srv->link;
    struct pgw_iobuf *b = s->cbuf;
    uint32_t n = b->len - b->parsed;
    if (!h->cbuf && !(h->cbuf = pgw_iobuf_get(s->px)))
        return false;
    /* The borrower's buffer is the server's outgoing queue: the query goes
     * behind everything it sent, as scanned bytes the borrower's next
     * client bytes (held) never mix with. */
    if (!pipe_copy(h->cbuf, b->data + b->parsed, n, r))
        return false;
    h->cbuf->parsed = h->cbuf->len;
    if (r->stmt)
        pgw_ps_server_used(s, srv, r->stmt);
    if (r->parse) {
        /* the client's, once it has the server (read before b goes back) */
        pgw_ps_unnamed_queued(s, b->data + b->parsed);
        s->unnamed_words = 0;            /* (pipe_safe_text: no HOLD, no TEMP) */
        srv->user_unnamed = s->id;
        srv->user_unnamed_gen = s->ps_unnamed_gen;
    }
    b->len = b->parsed;
    if (b->sent == b->len) {
        pgw_iobuf_put(s->px, b);
        s->cbuf = NULL;
    }
    struct ev_loop *loop = s->px->loop;
    pgw_list_append(&srv->user_queue, &s->pipe_node);
    srv->user_queued++;
    s->pipe_srv = srv;
    memcpy(s->pipe_req, r->types, (size_t)r->n);
    s->pipe_nreq = (uint8_t)r->n;
    s->pipe_named = (uint8_t)r->named;
    s->pipe_stmt = r->stmt;
    s->pipe_skip = srv->user_tail_skip;    /* replies of clients that left */
    s->pipe_left_qt = srv->user_tail_qt;
    s->pipe_left_at = 0;
    s->pipe_drop = 0;
    s->pipe_fail_own = false;
    pgw_cancel_deferred_drop(s);         /* one left from a request before */
    srv->user_tail_skip = 0;
    srv->user_tail_qt = 0;
    s->state = PGW_SS_WAIT_SERVER;
    s->pipe_since = pgw_mono_now(loop);
    if (!pulled) {
        s->waiter.since = s->pipe_since;
        pgw_session_list_join(s);        /* queued (a pulled one was) */
    }
    /* Its query runs once it has the server (query_timeout from then on):
     * the query ahead runs under its own. */
    s->query_start = 0;
    s->waited_since = 0;
    s->query_count++;
    s->px->total_pipelined++;
    pgw_session_arm_timer(s);
    return true;
}

/* Queue s's query on a busy server if pipelining may; true when done. */
static bool pipe_enqueue(struct pgw_session *s)
{
    struct pipe_req r;
    if (!pipe_request(s, &r))
        return false;
    if (!s->params_sig)
        s->params_sig = params_sig(s);
    struct pipe_pick pk = { s, r.stmt };
    struct pgw_server *srv = pgw_pool_pipeline_pick(s->pool, pipe_score, &pk);
    if (!srv || !pipe_queue_on(s, srv, &r, false))
        return false;
    pgw_batch_flush_server(srv->link);
    return true;
}

static void acquired_cb(struct pgw_pool_waiter *w, struct pgw_server *srv);

/* Queue on srv, in order, the clients waiting in its pool whose requests
 * may queue there; stop at the first that may not (so the pool's queue
 * stays first come, first served). */
static void pipe_pull(struct pgw_server *srv)
{
    struct pgw_pool_waiter *w;
    struct pgw_session *h = srv->link;
    bool any = false;
    while (srv->user_pipe_ok && srv->link == h &&
           (w = pgw_pool_pipeline_waiter(srv, acquired_cb))) {
        struct pgw_session *s = w->arg;
        struct pipe_req r;
        if (s->state != PGW_SS_WAIT_SERVER || !pipe_request(s, &r))
            break;
        if (!s->params_sig)
            s->params_sig = params_sig(s);
        struct pipe_pick pk = { s, r.stmt };
        if (pipe_score(srv, &pk) < 0)
            break;
        if (!pipe_queue_on(s, srv, &r, true))
            break;                       /* no room: it waits for a server */
        pgw_pool_take_waiter(&s->waiter);
        any = true;
    }
    if (any)
        pgw_batch_flush_server(h);
}

/* Replies of clients that left (their queries) are still ahead of s's own
 * on its server: the server has not got to s's query. */
static bool pipe_others_ahead(const struct pgw_session *s)
{
    return s->pipe_skip > (s->pipe_fail_own ? 1 : 0) || (s->pipe_skip == 0 && s->pipe_drop > 0);
}

/* The query_timeout of the queries of clients that left, ahead of a
 * client's own and not started (pipe_left_qt, user_tail_qt): 0 when there
 * are none, -1 when one has none, else the longest.  It stands for them
 * all: none is cut sooner than its client's would have cut it (they share
 * a pool, and mostly a user and its query_timeout). */
static double pipe_qt_join(double a, double b)
{
    if (a == 0 || b == 0)
        return a + b;
    return a < 0 || b < 0 ? -1 : a > b ? a : b;
}

/* s's own query's, as pipe_qt_join reads it: the query is one statement
 * in its own transaction, so transaction_timeout bounds it as
 * query_timeout does, whichever is shorter. */
static double pipe_qt_of(const struct pgw_session *s)
{
    double qt = s->query_timeout, tt = s->transaction_timeout;
    if (tt > 0 && (qt <= 0 || tt < qt))
        qt = tt;
    return qt > 0 ? qt : -1;
}

/* The deadline of such a query the server starts now (0: none). */
static ev_tstamp pipe_left_deadline(double qt, ev_tstamp now)
{
    return qt > 0 ? now + qt : 0;
}

/* The server gets to s's query (handed the server, nothing ahead of it
 * left to drop): its wait ends, counted as the pool's lend after a wait
 * is, and its query_timeout starts. */
static void pipe_query_starts(struct pgw_session *s)
{
    ev_tstamp now = pgw_mono_now(s->px->loop);
    s->pipe_waits = false;
    s->pipe_left_at = 0;
    s->pipe_left_qt = 0;
    pgw_session_list_join(s);            /* active from now (SHOW CLIENTS' order) */
    pgw_pool_pipeline_assigned(s->server->pool, now - s->waiter.since);
    pgw_metrics_observe_wait(s, now - s->waiter.since);
    s->query_start = now;
}

/* n, first on srv's queue, becomes its borrower: its query is on the
 * server already, and so may be part of its answer (in its sbuf).  The
 * replies it drops first (pipe_skip: of clients that left) are the
 * server's wait, not its query's (pipe_waits). */
static void pipe_handoff(struct pgw_server *srv, struct pgw_session *n)
{
    struct ev_loop *loop = n->px->loop;
    pgw_list_del(&n->pipe_node);
    srv->user_queued--;
    n->pipe_srv = NULL;
    /* (still waiting: it joins the active ones when its query starts) */
    /* No SETs: its settings were the server's when it queued, and a change
     * since would have closed the server instead. */
    n->server = srv;
    srv->link = n;
    n->sskip = 0;
    n->swallow = 0;
    n->pipe_stop = false;
    n->pipe_budget = 0;
    pgw_track_reset(&n->track);
    for (int i = 0; i < n->pipe_nreq; i++)
        pgw_track_frontend(&n->track, n->pipe_req[i]);
    /* Its request may have others queued behind it (pipe_pull, below). */
    srv->user_pipe_ok = true;
    ev_io_start(loop, &srv->user_r);
    if (srv->ssl && pgw_server_pending(srv) > 0)
        ev_feed_event(loop, &srv->user_r, EV_READ);   /* decrypted, not readable */
    n->ps_on = pgw_ps_enabled(n);
    if (n->ps_on) {
        pgw_ps_link(n);
        if (!pgw_ps_request_sent(n, n->pipe_req, n->pipe_nreq, n->pipe_named, n->pipe_stmt)) {
            pgw_session_close(n, "53200", "out of memory");
            return;
        }
    }
    n->pipe_stmt = NULL;
    n->state = PGW_SS_LINKED;
    /* Its answer may be in the server's buffer already, read with the
     * one ahead's (in that session's read, which counted as that one's
     * activity): client_idle_timeout counted from its query's sending. */
    n->last_activity = pgw_mono_now(loop);
    n->query_start = 0;
    n->pipe_waits = true;
    if (!pipe_others_ahead(n))
        pipe_query_starts(n);
    pgw_session_arm_timer(n);
    pipe_cancel_due(n);
    if (n->state != PGW_SS_LINKED)
        return;
    if (n->sbuf && n->sbuf->parsed < n->sbuf->len)
        server_data(n);
    /* Queries still to go to the server (moved from the borrower that
     * left), then whatever it sent itself meanwhile. */
    if (n->state == PGW_SS_LINKED && n->server == srv && n->cbuf && n->cbuf->sent < n->cbuf->len)
        pgw_relay_client_data(n);
    if (n->state == PGW_SS_LINKED && n->server == srv)
        pipe_pull(srv);
}

/* A cancel held while s was queued, dropped others' replies or had SETs
 * run goes out once nothing but its own query is ahead of it on the
 * server (should it land on the next one's, those behind are tainted).
 * A query whose reply is replaced by 08006 anyway needs none. */
static void pipe_cancel_due(struct pgw_session *s)
{
    if (!s->pipe_cancel || !s->server)
        return;
    if (s->pipe_fail_own) {
        pgw_cancel_deferred_drop(s);     /* 08006 is its answer */
        return;
    }
    if (s->pipe_skip > 0 || s->pipe_drop > 0 || s->swallow > 0)
        return;
    /* The server has the query but may not have started it yet (it just
     * sent the ReadyForQuery of the one ahead), and PostgreSQL drops a
     * cancel that comes while it is between queries: give it a moment. */
    pgw_cancel_session(s->px, s, "deferred", PIPE_CANCEL_DELAY);
}

/* f's queued request ends with an error (sqlstate, why) in place of its
 * reply, then ReadyForQuery; it stays logged in.  f holds no server and is
 * on no queue. */
static void pipe_end_request(struct pgw_session *f, const char *sqlstate, const char *why)
{
    /* Closed already (an unlink just before may end a shutdown that
     * closes the idle clients, f too): IDLE again would revive it. */
    if (f->state == PGW_SS_CLOSING)
        return;
    f->pipe_srv = NULL;
    f->pipe_stmt = NULL;
    f->pipe_skip = 0;
    f->pipe_left_qt = 0;
    f->pipe_drop = 0;
    f->pipe_fail_own = false;
    pgw_cancel_deferred_drop(f);
    pgw_track_reset(&f->track);
    f->query_start = 0;
    f->state = PGW_SS_IDLE;
    pgw_session_list_join(f);
    send_error(f, sqlstate, why);
    if (f->state == PGW_SS_CLOSING)
        return;
    pgw_metrics_xact_end(f);             /* its query counted when it queued */
    send_ready(f, 'I');
    if (f->notify)
        pgw_notify_flush(f);         /* held while it was queued */
    if (f->state == PGW_SS_CLOSING)
        return;
    f->last_activity = pgw_mono_now(f->px->loop);
    pgw_session_arm_timer(f);
    if (f->cbuf && f->cbuf->parsed < f->cbuf->len)
        pgw_relay_client_data(f);
}

/* s's server was lost (found reading or writing it) while it ran the
 * query of a client that left ahead of s's own (pipe_waits): s's query
 * did not run, and s stays with 08006, as the clients queued behind it
 * do.  The caller made the server lost. */
static void pipe_lost_ahead(struct pgw_session *s)
{
    pgw_relay_unlink(s, PGW_RELEASE_CLOSE);
    pipe_end_request(s, "08006", "server connection closed while the query ahead of yours ran");
}

/* Clients taken off a server's queue: their query may or may not have run;
 * each gets 08006 and ReadyForQuery and stays logged in. */
static void pipe_fail(struct pgw_list *queue, const char *why)
{
    struct pgw_list *q;
    while ((q = pgw_list_first(queue))) {
        struct pgw_session *f = pgw_container_of(q, struct pgw_session, pipe_node);
        pgw_list_del(q);
        f->px->total_pipeline_failed++;
        char qd[200], qu[200], qr[300];
        pgw_warn("pipeline_failed", "client=%s db=%s user=%s reason=%s", f->addr_text,
                 pgw_log_quote(qd, sizeof(qd), f->database), pgw_log_quote(qu, sizeof(qu), f->user),
                 pgw_log_quote(qr, sizeof(qr), why));
        pipe_end_request(f, "08006", why);
    }
}

void pgw_relay_pipe_wait_timeout(struct pgw_session *s, bool ahead)
{
    /* The server runs a query nobody waits for and may be stuck in it:
     * it closes, as that query's query_timeout would have closed it had
     * its client stayed, and those queued behind get 08006
     * (pgw_relay_unlink).  s's own query has not run (it was behind): it
     * ends as a wait in the pool's queue does, and the session goes on. */
    struct pgw_pool_error e;
    if (!s->server || !s->pool)
        return;
    if (ahead) {
        snprintf(e.sqlstate, sizeof(e.sqlstate), "%s", "57014");
        snprintf(e.message, sizeof(e.message),
                 "query_timeout: the query ahead of yours on the server, of a client that "
                 "left, ran past its query_timeout or transaction_timeout; waited %.1f s for "
                 "a server in pool %s/%s",
                 pgw_mono_now(s->px->loop) - s->waiter.since, pgw_pool_dbname(s->pool),
                 pgw_pool_user(s->pool));
    } else {
        pgw_pool_wait_timed_out(s->pool, s->waiter.since, &e);
    }
    if (s->px->cfg->log_pooler_errors) {
        char qd[200], qu[200], qr[700];
        pgw_warn("pooler_error", "client=%s db=%s user=%s sqlstate=%s reason=%s", s->addr_text,
                 pgw_log_quote(qd, sizeof(qd), s->database), pgw_log_quote(qu, sizeof(qu), s->user),
                 e.sqlstate, pgw_log_quote(qr, sizeof(qr), e.message));
    }
    s->server->user_pipe_broken = true;
    pgw_relay_unlink(s, PGW_RELEASE_CLOSE);
    pipe_end_request(s, e.sqlstate, e.message);    /* nothing when that closed s */
}

void pgw_relay_pipe_leave(struct pgw_session *s)
{
    struct pgw_server *srv = s->pipe_srv;
    /* Its reply (and what it had to drop first) will still come: whoever
     * is behind it drops it, or the server closes if nobody is. */
    int skip = s->pipe_skip + (s->pipe_fail_own ? 0 : 1);
    double qt = pipe_qt_join(s->pipe_left_qt, pipe_qt_of(s));
    struct pgw_list *after = s->pipe_node.next;
    if (after != &srv->user_queue) {
        struct pgw_session *a = pgw_container_of(after, struct pgw_session, pipe_node);
        a->pipe_skip += skip;
        a->pipe_left_qt = pipe_qt_join(qt, a->pipe_left_qt);
    } else {
        srv->user_tail_skip += skip;
        srv->user_tail_qt = pipe_qt_join(srv->user_tail_qt, qt);
    }
    pgw_list_del(&s->pipe_node);
    srv->user_queued--;
    s->pipe_srv = NULL;
    s->pipe_stmt = NULL;
    s->pipe_skip = 0;
    s->pipe_left_qt = 0;
    s->pipe_fail_own = false;
    pgw_cancel_deferred_drop(s);
}

void pgw_relay_pipe_taint(struct pgw_server *srv)
{
    for (struct pgw_list *q = srv->user_queue.next; q != &srv->user_queue; q = q->next) {
        struct pgw_session *f = pgw_container_of(q, struct pgw_session, pipe_node);
        if (!f->pipe_fail_own) {
            f->pipe_fail_own = true;
            f->pipe_skip++;               /* its own reply is dropped too */
        }
    }
    srv->user_pipe_ok = false;
}

/* ---- acquiring ---- */

static void fail_request(struct pgw_session *s, const char *sqlstate, const char *message);

static void acquire_failed(struct pgw_session *s, const struct pgw_pool_error *err)
{
    if (err->code == PGW_ECANCELED || s->state == PGW_SS_CLOSING)
        return;
    /* It left while a server was on its way (pgw_pool_waiter_gone), and
     * its wait ended without one (none came, a timeout, ...): it goes
     * now, as from a full pool's queue.  Not on to the next request it
     * sent as if it were there: that one queued for a server like a
     * client's that had not left, and ran for nobody. */
    if (err->code == PGW_ECLIENT_EOF) {
        pgw_session_close(s, NULL, s->client_eof ? "client closed the connection"
                                                 : "client terminated");
        return;
    }
    if (s->state == PGW_SS_LOGIN_WAIT) {
        pgw_session_close(s, err->sqlstate[0] ? err->sqlstate : "08006", "%s", err->message);
        return;
    }
    if (s->px->cfg->log_pooler_errors) {
        char qd[200], qu[200], qr[700];
        pgw_warn("pooler_error", "client=%s db=%s user=%s sqlstate=%s reason=%s", s->addr_text,
                 pgw_log_quote(qd, sizeof(qd), s->database), pgw_log_quote(qu, sizeof(qu), s->user),
                 err->sqlstate, pgw_log_quote(qr, sizeof(qr), err->message));
    }
    fail_request(s, err->sqlstate[0] ? err->sqlstate : "08006", err->message);
}

/* The client's request ends with an error before it reached a server
 * (no server for it, or a cancel while it waited). */
static void fail_request(struct pgw_session *s, const char *sqlstate, const char *message)
{
    send_error(s, sqlstate, message);
    if (s->state == PGW_SS_CLOSING)
        return;
    /* Drop the failed request as PostgreSQL skips one after an error,
     * then ReadyForQuery: the session stays usable.  A Query or
     * FunctionCall is a request of its own; extended-protocol messages
     * end at their Sync, whatever comes before it (a Query too, which
     * gets no ReadyForQuery of its own).  Which it is, its first message
     * tells (scan_client): not a Flush or a stray Copy message before it,
     * which PostgreSQL ignores (they may not even be followed by the
     * rest yet). */
    s->state = PGW_SS_IDLE;
    s->discard = PGW_DISCARD_UNTYPED;
    pgw_track_reset(&s->track);
    s->query_start = 0;
    s->waited_since = 0;
    /* Idle from now: client_idle_timeout counts again (its timer may have
     * fired, finding no deadline, while the client waited). */
    s->last_activity = pgw_mono_now(s->px->loop);
    pgw_session_arm_timer(s);
    if (s->cbuf) {
        s->cbuf->parsed = s->cbuf->sent;
        s->cskip = 0;
    }
    pgw_notify_qscan_free(s);
    if (!ev_is_active(&s->cli_r))
        ev_io_start(s->px->loop, &s->cli_r);
    if (s->acquiring)
        s->refused_now = true;   /* pgw_relay_client_data goes on with the rest */
    else
        pgw_relay_client_data(s);
}

void pgw_relay_refuse(struct pgw_session *s, const char *sqlstate, const char *message)
{
    /* Called from client_data_step, which takes what follows (refused_now):
     * not from in here. */
    bool acquiring = s->acquiring;
    s->acquiring = true;
    fail_request(s, sqlstate, message);
    s->acquiring = acquiring;
}

/* A CancelRequest for a client waiting in its pool's queue for a server
 * (cancel.c): its request has not reached PostgreSQL, so it ends here as
 * PostgreSQL ends a query canceled while it waits for a lock -- 57014,
 * the rest of that request dropped (up to its Sync, or the Query), then
 * ReadyForQuery -- and the client stays, with what it sent after that
 * request still to run.  (PgBouncer leaves such a client waiting, until
 * a server frees up or query_wait_timeout.)  false: not waiting there. */
bool pgw_relay_cancel_waiting(struct pgw_session *s)
{
    if (s->state != PGW_SS_WAIT_SERVER || s->server || s->pipe_srv ||
        !pgw_pool_waiter_queued(&s->waiter))
        return false;
    pgw_pool_cancel_wait(&s->waiter);
    pgw_session_list_join(s);
    fail_request(s, "57014", "canceling statement due to user request");
    return true;
}

static void granted(struct pgw_session *s, struct pgw_server *srv)
{
    pgw_metrics_observe_wait(s, pgw_mono_now(s->px->loop) - s->waiter.since);
    struct pipe_req r;
    int pipe = s->state == PGW_SS_WAIT_SERVER && pipe_request(s, &r) ? r.n : 0;
    pgw_relay_link(s, srv);
    if (s->state == PGW_SS_CLOSING)
        return;
    /* Others may queue behind a lone SELECT (no SETs before it). */
    srv->user_pipe_ok = pipe > 0 && s->swallow == 0;
    srv->user_pipe_broken = false;
    s->pipe_budget = srv->user_pipe_ok ? (uint8_t)pipe : 0;
    s->pipe_stop = false;
    pgw_cancel_deferred_drop(s);         /* one left from a request before */
    if (s->state == PGW_SS_LOGIN_WAIT) {
        if (s->swallow > 0) {
            s->state = PGW_SS_LOGIN_SYNC;
            pgw_relay_flush_server(s);
        } else {
            welcome(s);
        }
        return;
    }
    s->state = PGW_SS_LINKED;
    s->waited_since = s->waiter.since;   /* query_timeout counts the wait */
    if (!ev_is_active(&s->cli_r))
        ev_io_start(s->px->loop, &s->cli_r);
    if (s->cbuf)
        pgw_relay_client_data(s);     /* scan what waited, then send */
    if (s->state == PGW_SS_LINKED)
        pgw_session_arm_timer(s);
    if (s->state == PGW_SS_LINKED && s->server == srv && srv->user_pipe_ok)
        pipe_pull(srv);               /* clients waiting behind it */
}

static void acquired_cb(struct pgw_pool_waiter *w, struct pgw_server *srv)
{
    struct pgw_session *s = w->arg;
    pgw_session_list_join(s);            /* out of the queue */
    if (!srv) {
        acquire_failed(s, w->error);
        return;
    }
    if (s->state == PGW_SS_CLOSING) {
        pgw_pool_release(srv, PGW_RELEASE_IDLE);
        return;
    }
    granted(s, srv);
}

/* An application_name PostgreSQL keeps as it is: printable ASCII (it
 * turns other bytes into '?') shorter than NAMEDATALEN (it truncates). */
static bool application_name_as_is(const char *v)
{
    size_t n = 0;
    for (; v[n]; n++)
        if (v[n] < 0x20 || v[n] > 0x7e)
            return false;
    return n < 64;
}

/* Can the client be welcomed before a server has seen its startup
 * parameters?  Each must be what a fresh server of the pool reports, byte
 * for byte, or an application_name PostgreSQL keeps as it is (SET at the
 * first link, like any change).  A client_encoding that names the
 * server's encoding in another spelling (asyncpg's 'utf-8': every asyncpg
 * login took a server, hunt) takes the server's, which PostgreSQL reports
 * to the client too.  Anything else needs PostgreSQL to check and spell it
 * (an alias such as 'unicode', a bad DateStyle is refused), and a
 * parameter it does not report (extra_float_digits) has no record to
 * compare with.  Nor a packet that said one twice (startup_order: each
 * value is checked).  false too when memory is short. */
static bool startup_params_known(struct pgw_session *s)
{
    if (s->startup_order)
        return false;
    const struct pgw_params *dp = pgw_pool_defaults(s->pool);
    for (int i = 0; i < s->px->ntracked; i++) {
        if (!s->params[i])
            continue;
        if (i == PGW_TP_APPLICATION_NAME && application_name_as_is(s->params[i]))
            continue;
        const char *have = pgw_params_get(dp, s->px->tracked[i]);
        if (have && i == PGW_TP_CLIENT_ENCODING && strcmp(have, s->params[i]) != 0 &&
            pgw_pgenc_same_name(have, s->params[i])) {
            char *v = strdup(have);
            if (!v)
                return false;
            free(s->params[i]);
            s->params[i] = v;
            s->params_sig = 0;
        }
        if (!have || strcmp(have, s->params[i]) != 0)
            return false;
    }
    return true;
}

/* name=value as an option of options: "-c name=value", a space or
 * backslash in the value escaped with a backslash, after a space unless
 * it is the first. */
static void append_option(struct pgw_wbuf *b, const char *name, const char *value)
{
    if (b->len > 0)
        pgw_wbuf_append(b, " ", 1);
    pgw_wbuf_append(b, "-c ", 3);
    pgw_wbuf_append(b, name, strlen(name));
    pgw_wbuf_append(b, "=", 1);
    for (const char *c = value; *c; c++) {
        if (isspace((unsigned char)*c) || *c == '\\')
            pgw_wbuf_append(b, "\\", 1);
        pgw_wbuf_append(b, c, 1);
    }
}

/* The client's startup parameters but application_name and
 * client_encoding (libpq keywords of their own), as PostgreSQL's options
 * want them; first, where the packet gave one twice (startup_order),
 * each of its values in its order, for the server to apply and check in
 * turn, as it would the packet.  NULL when there are none; false when
 * memory is short. */
static bool replication_options(struct pgw_session *s)
{
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    for (const char *p = s->startup_order; p && *p;) {
        const char *v = p + strlen(p) + 1;
        append_option(&b, p, v);
        p = v + strlen(v) + 1;
    }
    for (int i = 0; i < s->px->ntracked; i++) {
        if (!s->params[i] || i == PGW_TP_APPLICATION_NAME || i == PGW_TP_CLIENT_ENCODING)
            continue;
        append_option(&b, s->px->tracked[i], s->params[i]);
    }
    bool ok = !b.failed;
    if (ok && b.len > 0) {
        pgw_wbuf_append(&b, "", 1);
        ok = !b.failed && (s->repl_options = strdup((const char *)b.data)) != NULL;
    }
    pgw_wbuf_deinit(&b);
    return ok;
}

/* A replication client: its own server, connected for it (pool.h), with
 * the parameters it sent (a walsender takes no SET to sync them later). */
static void acquire_replication(struct pgw_session *s)
{
    if (!replication_options(s)) {
        pgw_session_close(s, "53200", "out of memory");
        return;
    }
    int r = pgw_pool_acquire_replication(s->pool, &s->waiter, s->ctx, acquired_cb, s,
                                         s->replication, s->params[PGW_TP_APPLICATION_NAME],
                                         s->params[PGW_TP_CLIENT_ENCODING], s->repl_options);
    if (r < 0)
        acquire_failed(s, pgw_pool_error_of(&s->waiter, r));
}

void pgw_relay_login(struct pgw_session *s)
{
    if (s->replication) {
        acquire_replication(s);
        return;
    }
    /* A client whose startup parameters a fresh server already has is
     * welcomed with the pool's record of one and takes a server at its
     * first request, as in PgBouncer: a login does not wait for a free
     * server (a full or paused pool).  So in session mode too, where the
     * server it takes then stays its own until it leaves (a login that
     * waited here for the only server of a pool, held by the same client's
     * other connection, hung pgbench -C on one thread until
     * client_login_timeout: hunt).  Otherwise -- the pool's first client,
     * parameters to SET (and have PostgreSQL check), a breaker or a server
     * login refusal that would refuse it -- the login takes a server now
     * and fails with the reason when there is none. */
    if (pgw_pool_welcome_ready(s->pool) && startup_params_known(s)) {
        welcome(s);
        return;
    }
    pgw_relay_acquire(s);
}

/* A reload that set, changed or dropped its entry's user= (PgBouncer's
 * forced user: the pool's user) moved the client to another pool: it goes
 * there at its next request for a server (a change of it renames the
 * entry's pool, which its clients stay in: pool_conf.c rename_forced).
 * False when out of memory. */
static bool repool(struct pgw_session *s)
{
    const struct pgw_conf_db *db = s->db;
    if (!db || s->replication)
        return true;
    const char *want = db->user && *db->user ? db->user : s->user;
    if (strcmp(pgw_pool_user(s->pool), want) == 0)
        return true;
    const char *pw = pgw_auth_server_password(s->px, db, s->user);
    struct pgw_pool *p = pgw_pool_get(s->px->pools, db, s->database, s->user, pw);
    if (!p)
        return false;
    pgw_pool_ref(p);
    pgw_admin_pool_attach(s->px, p);
    pgw_pool_unref(s->pool);
    s->pool = p;
    return true;
}

void pgw_relay_acquire(struct pgw_session *s)
{
    if (!repool(s)) {
        pgw_session_close(s, "53200", "out of memory");
        return;
    }
    if (s->state == PGW_SS_WAIT_SERVER && s->px->cfg->server_pipeline_depth > 0 &&
        pipe_enqueue(s))
        return;
    /* A transaction-mode login's server goes back after the welcome
     * (sync_params' login_only): the first request takes one anew, the
     * assignment PgBouncer counts.  A session-mode login keeps its own. */
    s->waiter.not_assigned = s->state == PGW_SS_LOGIN_WAIT && s->mode != PGW_POOL_SESSION;
    int r = pgw_pool_acquire(s->pool, &s->waiter, s->ctx, acquired_cb, s);
    if (r == PGW_ACQ_GRANTED) {
        granted(s, s->waiter.server);
    } else if (r == PGW_ACQ_QUEUED) {
        pgw_session_list_join(s);
        if (s->state != PGW_SS_LOGIN_WAIT) {
            s->state = PGW_SS_WAIT_SERVER;
            s->wait_notified = false;
            pgw_session_arm_timer(s);       /* query_wait_notify */
        }
        pgw_relay_left_while_queued(s);     /* a Terminate behind it, or its stream ended */
    } else {
        acquire_failed(s, pgw_pool_error_of(&s->waiter, r));
    }
}

/* ---- client -> server ---- */

/* Room kept free in a buffer for what prepared statements inject. */
#define PS_HEADROOM 1024

/* Frontend messages the prepared-statement layer must see. */
static bool ps_type(char type)
{
    switch (type) {
    case PGW_FE_PARSE: case PGW_FE_BIND: case PGW_FE_DESCRIBE: case PGW_FE_CLOSE:
    case PGW_FE_QUERY: case PGW_FE_EXECUTE: case PGW_FE_SYNC: case PGW_FE_FUNCTION_CALL:
        return true;
    default:
        return false;
    }
}

/* A Query or Parse that may be a lone LISTEN or UNLISTEN (or a Query
 * with one among its statements), sent while the client holds a server:
 * notify.c notes it (the hub's if its transaction commits); so it does a
 * savepoint statement of a client it keeps state for (s->notify).  1: go on, 0:
 * read the message whole first (any Query or Parse of up to
 * PGW_NOTIFY_QUERY_MAX bytes), -1: the session was closed. */
static int offer_tx_listen(struct pgw_session *s, const uint8_t *p, uint32_t avail,
                           uint32_t total)
{
    bool small = total <= PGW_MSG_HDR + PGW_NOTIFY_QUERY_MAX;
    const uint8_t *text = p + PGW_MSG_HDR, *end = p + (avail < total ? avail : total);
    if (p[0] == PGW_FE_PARSE && text < end) {
        const uint8_t *z = memchr(text, '\0', (size_t)(end - text));
        text = z ? z + 1 : end;
    }
    if (!small && p[0] == PGW_FE_QUERY)
        return pgw_notify_qscan_offer(s, p) ? 1 : -1;   /* read as it passes */
    if (total > avail)
        return small ? 0 : 1;
    if (text >= end)
        return 1;
    /* A Query of several statements (a ';' with more after it) may hold
     * one anywhere. */
    bool maybe = pgw_notify_may_start(*text) ||
                 (s->notify && ((*text | 0x20) == 'd' ||       /* DO: notify.c do_unlisten */
                                pgw_sp_may_be((const char *)text, (size_t)(end - text))));
    const uint8_t *semi = maybe || p[0] != PGW_FE_QUERY ? NULL
                                                       : memchr(text, ';', (size_t)(end - text));
    while (semi && ++semi < end && (*semi <= ' ' || *semi == ';'))
        ;              /* what follows the last ';': white space, the final NUL */
    if (!maybe && !(semi && semi < end))
        return 1;
    return pgw_notify_tx_message(s, p, total) ? 1 : -1;
}

/* Has the server answered everything the client sent, and has the client
 * been given all of it but what the server may still send on its own?  A
 * reply pgwharf makes then goes out in its turn (pgw_session_queue). */
static bool tx_quiet(const struct pgw_session *s)
{
    return s->track.sync_out == 0 && s->track.fe_open == 0 && !s->track.copy &&
           s->swallow == 0 && s->sskip == 0 && s->pipe_skip == 0 && s->pipe_drop == 0 &&
           !s->pipe_stop && (!s->ps_on || pgw_ps_idle(s));
}

/* A Close of the unnamed portal sent behind requests not yet answered,
 * opening no batch of its own then (nothing sent since their Sync or
 * Query), as ts-postgres closes with Close and Flush, no Sync.  Sent on,
 * it opened a batch whose Sync only the client's next request would
 * bring: the server stayed with the idle client.  It waits for those
 * answers instead: after a ReadyForQuery 'I' the server goes back, and the
 * Close is answered with no server (close_portal_alone: no transaction,
 * so PostgreSQL has no unnamed portal left); else it goes on to the server
 * then.  Not a named portal: a WITH HOLD cursor outlives the transaction
 * on this server (one a function declared has no tag pgwharf sees, and
 * server_reset_session_state may be off), and the client's Close is what
 * closes it -- answered here, the cursor stayed for the next client,
 * which read its rows (review r2 of ce31cce).  Not while the count of
 * answers may be high (they may never all come while the client's bytes
 * wait) nor in a COPY (the Close fails it, as in PostgreSQL).  One still
 * arriving that may be such a Close (its length is the unnamed portal's,
 * its first body byte 'P' or not here yet) waits too, read whole first: it
 * went on as a batch opened when the client's write was cut before its
 * name (with max_prepared_statements = 0, which relays it as it comes), so
 * what came of it hung on how TCP cut the bytes. */
static bool close_waits(const struct pgw_session *s, const uint8_t *m, uint32_t avail)
{
    const struct pgw_track *t = &s->track;
    /* With max_prepared_statements on, the unnamed statement's too: it
     * went on (the queue of replies prepared.c keeps has the Close pass),
     * and kept the server the same way; after the ReadyForQuery 'I' it is
     * answered as one with no server is (pgw_ps_close_alone: the client's
     * unnamed statement gone, drops_unnamed; the server's dropped at the
     * client's next link, sync_params).  With it off a Close of a
     * statement is the server's (close_batch_done gives it back). */
    bool stmt_too = s->ps_on;
    bool unnamed = avail > PGW_MSG_HDR + 1
                       ? (m[PGW_MSG_HDR] == 'P' || (stmt_too && m[PGW_MSG_HDR] == 'S')) &&
                             m[PGW_MSG_HDR + 1] == 0
                       : pgw_get_u32(m + 1) + 1 == PGW_MSG_HDR + 2 &&
                             (avail == PGW_MSG_HDR || m[PGW_MSG_HDR] == 'P' ||
                              (stmt_too && m[PGW_MSG_HDR] == 'S'));
    /* The statement's after a ReadyForQuery 'I' whose server stays linked
     * for the client's cancel still in flight (cancel.c): it waits for
     * that cancel too, then is answered as above once the server goes
     * back (session_cancels_done; cancel_wait_timeout bounds the wait).
     * Sent on there it opened a batch, the server kept by the idle client
     * until its next Sync once the cancel was done; answered at once
     * (close_alone_linked, a portal's), the server's unnamed statement
     * stayed for a Bind of it while still linked (review r2 of aab37ef). */
    bool whole = avail >= PGW_MSG_HDR + 2 && pgw_get_u32(m + 1) + 1 == PGW_MSG_HDR + 2;
    bool cancel_wait = unnamed && whole && m[PGW_MSG_HDR] == 'S' && s->cancel_inflight > 0 &&
                       t->sync_out == 0 && s->state == PGW_SS_LINKED && t->tx_status == 'I' &&
                       tx_quiet(s);
    return s->server && s->mode != PGW_POOL_SESSION && !s->notify && unnamed &&
           (t->sync_out > 0 || cancel_wait) &&
           t->fe_open == 0 && !t->skip_sync && !t->copy && !t->count_high && !t->copy_doubt &&
           s->discard == PGW_DISCARD_NONE;
}

static bool close_answered_alone(struct pgw_session *s, uint32_t total);

/* A whole Close of the unnamed portal (avail bytes at m) on a server that
 * stays linked with nothing under way after a ReadyForQuery 'I' -- a
 * cancel of the client's still in flight keeps it (cancel.c), or a
 * release waits -- where the Close close_waits held would go: as with no
 * server (close_portal_alone) no transaction is open, so PostgreSQL has no
 * unnamed portal, and the Close is answered here.  Sent on, it opened a
 * batch: once the cancel was done the server stayed with the idle client
 * until its next Sync. */
static bool close_alone_linked(const struct pgw_session *s, const uint8_t *m, uint32_t avail)
{
    return s->server && s->state == PGW_SS_LINKED && s->mode != PGW_POOL_SESSION &&
           !s->notify && !s->pipe_srv && s->discard == PGW_DISCARD_NONE &&
           s->track.tx_status == 'I' && !s->track.count_high && !s->track.copy_doubt &&
           tx_quiet(s) && pgw_get_u32(m + 1) + 1 == PGW_MSG_HDR + 2 &&
           avail >= PGW_MSG_HDR + 2 && m[PGW_MSG_HDR] == 'P' && m[PGW_MSG_HDR + 1] == 0;
}

/* A batch of Closes and Flushes alone (no Sync), as ts-postgres closes
 * with Close and Flush, sent behind a Query or alone: with
 * max_prepared_statements = 0 a Close of a named statement or portal goes
 * to the server, whose statement or cursor it is (answered with no
 * server, a statement stayed there for the next client, and a WITH HOLD
 * cursor too: review r2 of ce31cce).  The batch kept the server with the
 * idle client until its next Sync.  But a Close opens no transaction and
 * leaves nothing behind it: once every Close of the batch is answered by
 * CloseComplete (no error: the server then skips to a Sync) and a Flush
 * went after the last one (PostgreSQL sends nothing before a Flush or
 * Sync), nothing is under way, and at 'I' the server goes back
 * (close_batch_done), as at a ReadyForQuery.  Counted here as the
 * client's messages go (type as the tracker took it, fe_was its open
 * batch before). */
static void close_batch_sent(struct pgw_session *s, char type, int fe_was)
{
    if (s->track.fe_open == 0) {
        s->cb_closes = 0;
        return;
    }
    if (fe_was == 0) {
        s->cb_closes = s->cb_done = 0;
        s->cb_other = s->cb_flushed = false;
    }
    if (type == PGW_FE_CLOSE) {
        s->cb_closes++;
        s->cb_flushed = false;
    } else if (type == PGW_FE_FLUSH) {
        s->cb_flushed = true;
    } else {
        s->cb_other = true;
    }
}

/* A server message of type the client gets, other than ReadyForQuery:
 * with nothing outstanding it answers the open batch. */
static void close_batch_reply(struct pgw_session *s, char type)
{
    if (s->cb_closes == 0 || s->track.sync_out > 0 || s->track.fe_open == 0)
        return;
    if (type == PGW_BE_CLOSE_COMPLETE)
        s->cb_done++;
    else if (type != PGW_BE_NOTICE && type != PGW_BE_PARAM_STATUS && type != PGW_BE_NOTIFY)
        s->cb_other = true;             /* (an error: the server skips to a Sync) */
}

/* Messages PostgreSQL ignores when no request is under way (nothing to
 * flush): a Flush, and CopyData, CopyDone or CopyFail outside a COPY. */
static bool ignored_alone(char type)
{
    return type == PGW_FE_FLUSH || type == PGW_FE_COPY_DATA || type == PGW_FE_COPY_DONE ||
           type == PGW_FE_COPY_FAIL;
}

/* The failed request is all dropped: its ReadyForQuery.  false when the
 * session was closed. */
static bool discard_done(struct pgw_session *s)
{
    s->discard = PGW_DISCARD_NONE;
    send_ready(s, 'I');
    return s->state != PGW_SS_CLOSING;
}

bool pgw_relay_unnamed_current(const struct pgw_session *s, const struct pgw_server *srv)
{
    return srv->user_unnamed == s->id && srv->user_unnamed_gen == s->ps_unnamed_gen;
}

/* Does the client message at m (have bytes of it here) replace or drop
 * its unnamed statement in PostgreSQL: a Parse or Close of it, any simple
 * Query? */
static bool drops_unnamed(const uint8_t *m, size_t have)
{
    return m[0] == PGW_FE_QUERY ||
           (m[0] == PGW_FE_PARSE && have > PGW_MSG_HDR && m[PGW_MSG_HDR] == 0) ||
           (m[0] == PGW_FE_CLOSE && have > PGW_MSG_HDR + 1 && m[PGW_MSG_HDR] == 'S' &&
            m[PGW_MSG_HDR + 1] == 0);
}

/* The message at s->cbuf->parsed (total bytes, of the given type) is read
 * further before it goes on: all of it (whole: max_prepared_statements
 * rewrites its names), or until its names are there (a kept prepared
 * LISTEN: near its start).  The server is held for it meanwhile:
 * query_timeout runs.  The buffer grows only when it cannot hold what is
 * needed once the scanned bytes before the message have gone to the
 * server (they make room as they drain: pgw_relay_flush_server starts the
 * read again, which compacts) -- when only its names are wanted, once it
 * holds nothing else and is full, to twice that (review: a stream of
 * small Binds grew it on every read that filled it) -- and the read
 * starts again: it stopped when the buffer filled (behind SETs or a
 * probe, or at a name over 32 kB), and nothing sent now would start it
 * (hangs).  false when s was closed. */
static bool read_on(struct pgw_session *s, char type, uint32_t total, bool whole)
{
    struct pgw_iobuf *b = s->cbuf;
    uint64_t held = b->len - b->sent, ahead = b->parsed - b->sent;
    uint64_t need = ahead + total + (whole ? PS_HEADROOM : 0);
    if (!whole && (ahead > 0 || held < b->cap))
        need = 0;                        /* room comes as those drain, or is there */
    else if (!whole) {                   /* full of it: twice that, at most the largest */
        uint64_t twice = held * 2;
        if (twice > PGW_IOBUF_MAX && b->cap < PGW_IOBUF_MAX)
            twice = PGW_IOBUF_MAX;
        need = need < twice ? need : twice;
    } else if (ahead > 0 && (total + PS_HEADROOM <= b->cap || need > PGW_IOBUF_MAX))
        need = 0;                        /* (hunt: two Binds of 34 MB in a row got 54000) */
    if (need > b->cap && need > PGW_IOBUF_MAX) {
        /* The client is still sending it: its rest is read and dropped
         * after the FATAL (linger.c), or the close would reset the
         * connection and lose the FATAL. */
        s->linger_bytes = (uint64_t)total + 65536;
        pgw_session_close(s, "54000", "message of type %c too large (%u bytes) %s", type,
                          total, whole ? "with max_prepared_statements on"
                                       : "to read its names");
        return false;
    }
    /* Within the limit, a buffer that cannot grow is pgwharf short of
     * memory (RLIMIT_AS, strict overcommit), not the message too large. */
    if (need > b->cap && !pgw_iobuf_reserve(s->px, &s->cbuf, (uint32_t)need)) {
        s->linger_bytes = (uint64_t)total + 65536;
        pgw_session_close(s, "53200", "out of memory for a message of type %c (%u bytes)", type,
                          total);
        return false;
    }
    if (s->query_start == 0)
        s->query_start = pgw_mono_now(s->px->loop);
    if (!ev_is_active(&s->cli_r) && !s->client_eof && !s->replies_unread)
        ev_io_start(s->px->loop, &s->cli_r);
    return true;
}

/* The frontend message types PostgreSQL's backend reads once logged in
 * (SocketBackend, PostgreSQL 15): any other ends the connection with
 * FATAL 08P01 "invalid frontend message type N", read before the length
 * word ('p' is a reply to an authentication request only; a second
 * startup packet starts with a 0 byte).  CopyData, CopyDone and CopyFail
 * are taken outside a COPY too, and ignored. */
static bool fe_type_valid(uint8_t type)
{
    switch (type) {
    case PGW_FE_QUERY: case PGW_FE_FUNCTION_CALL: case PGW_FE_TERMINATE:
    case PGW_FE_BIND: case PGW_FE_CLOSE: case PGW_FE_DESCRIBE: case PGW_FE_EXECUTE:
    case PGW_FE_FLUSH: case PGW_FE_PARSE: case PGW_FE_SYNC:
    case PGW_FE_COPY_DATA: case PGW_FE_COPY_DONE: case PGW_FE_COPY_FAIL:
        return true;
    default:
        return false;
    }
}

/* PostgreSQL's error at a message its COPY FROM STDIN refuses, or at the
 * end of the client's stream there (client_eof, not fe_invalid: 08006,
 * CopyGetData's): with the CONTEXT (W) it names -- "COPY t, line N", that
 * of the server's error at pgwharf's CopyFail, read at the same place
 * (copy_abort_reply) -- but no F/L/R: the server's there name the
 * CopyFail's line in its source, and pgwharf's own errors carry none. */
static void send_copy_refused(struct pgw_session *s)
{
    char m[64];
    if (s->fe_invalid)
        snprintf(m, sizeof(m), "unexpected message type 0x%02X during COPY from stdin",
                 s->fe_invalid_type);
    else
        snprintf(m, sizeof(m), "unexpected EOF on client connection with an open transaction");
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    size_t at = pgw_wbuf_msg_begin(&b, PGW_BE_ERROR);
    static const char refused[] = "SERROR\0VERROR\0C08P01";
    static const char eof[] = "SERROR\0VERROR\0C08006";
    _Static_assert(sizeof(refused) == sizeof(eof), "one length for both");
    pgw_wbuf_append(&b, s->fe_invalid ? refused : eof, sizeof(refused));
    pgw_wbuf_put_u8(&b, 'M');
    pgw_wbuf_put_str(&b, m);
    if (s->copy_abort_where) {
        pgw_wbuf_put_u8(&b, 'W');
        pgw_wbuf_put_str(&b, s->copy_abort_where);
    }
    pgw_wbuf_put_u8(&b, 0);
    pgw_wbuf_msg_end(&b, at);
    pgw_session_send(s, &b);
    pgw_wbuf_deinit(&b);
}

/* A client whose stream ended (or that sent a Terminate, or that pgwharf
 * ends: pgw_relay_close_owed) out of its wait for a server -- the pool's
 * queue (leave_queue), or queued on a busy server (term_flush) -- what
 * it sent after what was answered dropped:
 * idle from here (eof_done waits for the answers owed, not for a
 * server), on PgBouncer's active list at its end (list_seq: SHOW CLIENTS'
 * order, as for a client out of the queue with a server; term_flush's
 * kept its place from when it queued, ahead of clients that logged in
 * since), but the close's log line says what the client left: waiting
 * (it said idle; left_queue). */
static void out_of_wait(struct pgw_session *s)
{
    pgw_pool_cancel_wait(&s->waiter);
    pgw_session_list_join(s);
    if (s->cbuf)
        s->cbuf->parsed = s->cbuf->len = s->cbuf->sent;
    s->left_queue = true;
    s->state = PGW_SS_IDLE;
    s->query_start = 0;
    s->waited_since = 0;
}

static void drop_server_keep_owed(struct pgw_session *s);

/* The session ends after a Terminate (close_terminated) with answers the
 * client was given before it still to be written, as from PostgreSQL: a
 * server's answers in the batch of writes, pgwharf's own (a Close or Sync
 * answered with no server, the answers to a Query a held Close waited
 * for).  Closed at once they were lost: a Query, a Close of the unnamed
 * portal and a Terminate in one write got nothing (review r2 of ce31cce);
 * written only as far as the client's socket took them at once, a client
 * that was not reading then lost the rest.  The server goes now, as at the
 * session's close (its answers after these are not the client's any more:
 * the Terminate ended it); the session writes all it owes, then ends
 * (term_wait: pgw_relay_eof_check, once it is written, comes back here).
 * false when nothing is owed (the caller closes it at once). */
static bool term_flush(struct pgw_session *s)
{
    struct pgw_iobuf *b = s->sbuf;
    if (s->state == PGW_SS_CLOSING || !b || b->sent >= pgw_iobuf_out_end(b))
        return false;
    drop_server_keep_owed(s);
    s->client_eof = true;               /* nothing more is read from it */
    s->terminating = false;
    s->term_wait = true;
    ev_io_stop(s->px->loop, &s->cli_r);
    pgw_batch_flush_client(s);          /* (may end it now: all went at once) */
    return true;
}

/* The server goes now, as at the session's close, and what the client
 * sent is dropped; what the client was given before stays, to be written
 * (term_flush, pgw_relay_close_owed). */
static void drop_server_keep_owed(struct pgw_session *s)
{
    struct pgw_iobuf *b = s->sbuf;
    enum pgw_release how = pgw_relay_release_mode(s);
    /* (Held back, the rest waited for what the server would send: as at
     * the close, it is not sent; nor what the client sent after.) */
    if (b) {
        b->parsed = b->len = pgw_iobuf_out_end(b);
        b->held = false;
        b->hold = 0;
    }
    pgw_pool_cancel_wait(&s->waiter);
    if (s->pipe_srv)
        pgw_relay_pipe_leave(s);
    if (s->server)
        pgw_relay_unlink(s, how);
    /* Out of its wait (queued on a busy server: server_pipeline_depth),
     * as leave_queue (it stayed waiting: SHOW CLIENTS and cl_waiting
     * counted it for as long as the client did not read). */
    if (s->state == PGW_SS_WAIT_SERVER)
        out_of_wait(s);
    if (s->cbuf)
        s->cbuf->sent = s->cbuf->parsed = s->cbuf->len = 0;
}

void pgw_relay_close_owed(struct pgw_session *s, const char *sqlstate, const char *message)
{
    if (s->state == PGW_SS_CLOSING)
        return;
    if (s->sskip > 0 || s->close_after_sent) {
        /* The client has part of a server message whose rest never comes
         * now: the connection just ends there (send_final_error); or it
         * ends after a FATAL queued already. */
        pgw_session_close(s, sqlstate, "%s", message);
        return;
    }
    drop_server_keep_owed(s);
    pgw_session_close_after_sent(s, sqlstate, "%s", message);
}

/* The session ends after a Terminate, or in place of a message of a type
 * PostgreSQL refuses (scan_client): with PostgreSQL's FATAL then. */
static void close_terminated(struct pgw_session *s)
{
    if (s->copy_abort_lost) {
        pgw_session_close(s, NULL, "client write failed while pgwharf ended its COPY");
        return;
    }
    if (s->fe_invalid && s->copy_abort_ours) {
        /* In a COPY FROM STDIN (copy_abort_start), PostgreSQL's error
         * there, then its FATAL at the message it stopped reading. */
        send_copy_refused(s);
        if (s->state != PGW_SS_CLOSING)
            pgw_session_close(s, "08P01", "terminating connection because protocol "
                              "synchronization was lost");
    } else if (s->fe_invalid && s->fe_invalid_type != PGW_FE_TERMINATE) {
        pgw_session_close(s, "08P01", "invalid frontend message type %d", s->fe_invalid_type);
    } else if (!term_flush(s) && s->state != PGW_SS_CLOSING) {
        /* (A Terminate the COPY was to read, which had failed on its own
         * data first: PostgreSQL, out of the COPY, takes it as one.) */
        pgw_session_close(s, NULL, "client terminated");
    }
}

/* The client's stream ended inside its COPY FROM STDIN, which failed at
 * pgwharf's CopyFail (copy_abort_leave): PostgreSQL 15 sends ERROR 08006
 * "unexpected EOF on client connection with an open transaction" (in a
 * transaction block or not), then the FATAL of a COPY that lost its
 * protocol, and a client that only shut down its sending side reads them.
 * (One whose COPY had failed on its data first gets that error and its
 * ReadyForQuery, then the close: PostgreSQL, out of the COPY, ends
 * quietly at the end of the stream.) */
static void close_copy_eof(struct pgw_session *s)
{
    send_copy_refused(s);
    if (s->state != PGW_SS_CLOSING)
        pgw_session_close(s, "08P01", "terminating connection because protocol "
                          "synchronization was lost");
}

enum { COPY_ABORT_NONE, COPY_ABORT_OUT, COPY_ABORT_MARKED };

/* Bytes of pgwharf's own for the server, behind all that cbuf holds:
 * appended and marked scanned (parsed = len), so that the relay sends them
 * as they are and never reads them as the client's.  That nothing of the
 * client's waits unscanned in front of them is the caller's to see to.
 * false when out of memory. */
static bool cbuf_own(struct pgw_session *s, const void *bytes, size_t n)
{
    if (!s->cbuf && !(s->cbuf = pgw_iobuf_get(s->px)))
        return false;
    if (!pgw_iobuf_reserve(s->px, &s->cbuf, (uint32_t)(s->cbuf->len - s->cbuf->sent + n)) ||
        !pgw_iobuf_append(s->cbuf, bytes, n))
        return false;
    s->cbuf->parsed = s->cbuf->len;
    return true;
}

/* The client ended (a Terminate, or a message PostgreSQL refuses) behind
 * requests of which a COPY FROM STDIN was or may be one, and pgwharf
 * cannot foresee where the server will be when it gets there: the count
 * of replies due is unsure (a COPY may read the Syncs behind it:
 * count_high), or a COPY waits with requests sent behind its own
 * (copy_mixed).  Ended at once, the client lost the answers PostgreSQL
 * gives -- a COPY that committed, the next one's CopyInResponse and its
 * error (review r6).  The end goes to the server instead, after all the
 * client sent: PostgreSQL answers everything, then the end itself, in a
 * COPY with the COPY's error and FATAL, outside with its FATAL (a
 * Terminate: nothing), and closes; the client gets all of it, the session
 * ends at the server's close.  The server is retired: it ends anyway.
 * Likewise a Terminate behind a batch with no Sync (fe_open): the server
 * sends nothing more of it but what a Flush in it released, and the
 * errors, which PostgreSQL flushes as they come; the session, ended at
 * once, lost the answers still on their way (its server was closed
 * anyway: the batch's transaction is rolled back as at PostgreSQL's end).
 * false when that is not the case (nothing of a COPY or a batch
 * outstanding, all answered: the callers end as before). */
static bool term_to_server(struct pgw_session *s)
{
    bool batch = s->track.fe_open > 0 && !s->fe_invalid;
    if (!s->server || s->state != PGW_SS_LINKED || s->replication || s->term_sent ||
        s->copy_abort != COPY_ABORT_NONE || s->eof_copy_fail || s->pipe_srv || s->cskip > 0 ||
        s->trk_probe || s->swallow > 0 || (s->copy_ins == 0 && s->copy_ends == 0 && !batch) ||
        s->pipe_stop || s->pipe_skip > 0 || s->pipe_drop > 0 ||
        s->server->user_queued > 0 || s->server->user_tail_skip > 0)
        return false;                   /* (other clients' requests on it: as before) */
    if (s->track.sync_out == 0 && s->track.fe_open == 0 &&
        !(s->srv_copy_in && s->copy_ins > s->copy_ends))
        return false;
    uint8_t end[PGW_MSG_HDR] = {s->fe_invalid ? s->fe_invalid_type : PGW_FE_TERMINATE};
    pgw_put_u32(end + 1, 4);
    if (!cbuf_own(s, end, sizeof(end)))
        return false;
    pgw_server_retire(s->server, s->copy_ins == 0 && s->copy_ends == 0
                      ? "the client's end went to it (behind a batch with no Sync)"
                      : "the client's end went to it (in or after a COPY FROM STDIN pgwharf "
                        "could not foresee)");
    s->term_sent = true;
    s->term_sent_at = pgw_mono_now(s->px->loop);
    s->terminating = false;
    s->term_wait = true;
    s->client_eof = true;               /* nothing more is read from it */
    ev_io_stop(s->px->loop, &s->cli_r);
    pgw_relay_flush_server(s);
    if (s->state == PGW_SS_LINKED)
        pgw_session_arm_timer(s);       /* query_timeout, server_connect_timeout */
    return true;
}

/* The end of the client's stream goes to its server (eof_cut_to_server):
 * the sending side of the link is shut down, all the client sent being on
 * it.  false when the session was closed. */
static bool srv_send_eof(struct pgw_session *s)
{
    s->srv_eof_due = false;
    if (shutdown(s->server->fd, SHUT_WR) == 0)
        return true;
    pgw_session_close(s, NULL, "client closed the connection");
    return false;
}

/* The client's stream ended inside a CopyData of its COPY FROM STDIN,
 * relayed in part (cskip): PostgreSQL 15 reads the end there and sends
 * ERROR 08006 "unexpected EOF on client connection with an open
 * transaction" (CONTEXT the COPY's line), then FATAL 08P01 "terminating
 * connection because protocol synchronization was lost", which a client
 * that only shut down its sending side reads.  pgwharf cannot end that
 * COPY itself (copy_abort_start: the server waits for the rest of the
 * message, its CopyFail would be read as that), and closed the session at
 * once: the client got nothing.  The end goes to the server instead, as
 * the client sent it: the sending side of the link shut down once all the
 * client sent is on it (srv_send_eof); the server answers as PostgreSQL,
 * the client gets it, and the session ends at the server's close
 * (term_sent, as term_to_server).  The server is retired: it ends anyway,
 * and is never given back.  false when that is not the case (another
 * message cut, other clients' requests on the server: the caller ends
 * the session, the server closed, as before). */
static bool eof_cut_to_server(struct pgw_session *s)
{
    if (!s->cskip_copy || !s->server || s->state != PGW_SS_LINKED || s->replication ||
        s->term_sent || s->discard != PGW_DISCARD_NONE || !s->srv_copy_in ||
        s->copy_ins <= s->copy_ends || s->copy_abort != COPY_ABORT_NONE || s->pipe_srv ||
        s->pipe_stop || s->pipe_skip > 0 || s->pipe_drop > 0 ||
        s->server->user_queued > 0 || s->server->user_tail_skip > 0)
        return false;
    pgw_server_retire(s->server, "the client's stream ended inside a CopyData (the end went "
                                 "to it)");
    s->term_sent = true;
    s->term_sent_at = pgw_mono_now(s->px->loop);
    s->client_eof = true;               /* nothing more is read from it */
    ev_io_stop(s->px->loop, &s->cli_r);
    if (s->cbuf && s->cbuf->sent < s->cbuf->parsed) {
        s->srv_eof_due = true;          /* (pgw_relay_flush_server, once all is on it) */
        pgw_relay_flush_server(s);
    } else if (!srv_send_eof(s)) {
        return true;
    }
    if (s->state == PGW_SS_LINKED)
        pgw_session_arm_timer(s);       /* query_timeout, server_connect_timeout */
    return true;
}

/* The client's stream ended behind a batch with no Sync (no COPY's):
 * PostgreSQL ends there as at a Terminate, after what a Flush in the
 * batch released (and its errors, flushed as they came), which a client
 * that only shut down its sending side reads.  The Terminate goes to the
 * server in its place (term_to_server); false when it cannot (the caller
 * ends the session, the server closed, as before). */
static bool eof_batch_to_server(struct pgw_session *s)
{
    return s->track.fe_open > 0 && s->copy_ins == 0 && s->copy_ends == 0 && !s->fe_invalid &&
           !s->srv_write_blocked && term_to_server(s);
}

/* A message of a type PostgreSQL refuses (fe_invalid), the client in a COPY
 * FROM STDIN the server runs: PostgreSQL would end the backend (ERROR
 * "unexpected message type 0xNN during COPY from stdin", then a FATAL).  A
 * Terminate there is such a message too (fe_invalid, type 0x58): the COPY
 * reads no Terminate, and a client may read on after one.  Likewise a
 * client that left there (client_eof: the end of its stream, a reset),
 * which PostgreSQL (and PgBouncer) end too.  Can pgwharf end
 * that COPY in its place and keep the server?  Not with replies of other
 * clients due on it (server_pipeline_depth) or pgwharf's own out; nor
 * when the client sent requests behind the COPY's (copy_mixed): their
 * answers, due to it where the COPY failed first, are not foreseen. */
static bool copy_abort_due(const struct pgw_session *s)
{
    return (s->fe_invalid || s->client_eof) && s->copy_abort == COPY_ABORT_NONE && s->server &&
           s->state == PGW_SS_LINKED && s->srv_copy_in && s->copy_ins > s->copy_ends &&
           !s->replication && s->cskip == 0 && !s->pipe_srv && !s->pipe_stop &&
           s->pipe_skip == 0 && s->pipe_drop == 0 && s->swallow == 0 && !s->trk_probe &&
           !s->copy_mixed &&
           s->server->user_queued == 0 && s->server->user_tail_skip == 0;
}

/* After what the client sent before the refused message: a CopyFail (the
 * COPY fails, its transaction with it, as at PostgreSQL's FATAL), a Sync
 * (the server skips nothing after it, in either protocol), then a marker
 * that no reply of the client's can pass for: a Describe of a portal of
 * a random name, which fails with that name (34000, in a failed
 * transaction block too), and a Sync.  Everything before the marker's
 * error answers the client's messages or pgwharf's CopyFail and Sync
 * (copy_abort_reply); the ReadyForQuery after it is the last.  The client
 * reads nothing more (client_eof), and gets the FATAL once that is in.
 * false when out of memory (the caller goes on as before). */
static bool copy_abort_start(struct pgw_session *s)
{
    static const char refused[] = "f\0\0\0\x29" "COPY ended: invalid frontend message";
    static const char left[] = "f\0\0\0\x20" "COPY ended: the client left";
    static const char sync[] = "S\0\0\0\4";
    _Static_assert(sizeof(refused) == 1 + 0x29, "the CopyFail's length (its NUL too)");
    _Static_assert(sizeof(left) == 1 + 0x20, "the CopyFail's length (its NUL too)");
    const char *fail = s->fe_invalid ? refused : left;
    size_t fail_len = s->fe_invalid ? sizeof(refused) : sizeof(left);
    uint8_t rnd[8];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return false;
    char name[sizeof(s->copy_abort_name)];
    int nl = snprintf(name, sizeof(name), "pgwharf_copy_end_%02x%02x%02x%02x%02x%02x%02x%02x",
                      rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    /* CopyFail, Sync, Describe (length 4 + 'P' + the name and its NUL),
     * Sync: the longer CopyFail, both Syncs and the longest name fit. */
    uint8_t m[sizeof(refused) + 2 * (sizeof(sync) - 1) + 1 + 4 + 1 + sizeof(name)];
    _Static_assert(sizeof(refused) >= sizeof(left), "m holds either CopyFail");
    uint32_t dlen = 4 + 1 + (uint32_t)nl + 1;
    size_t n = 0;
    memcpy(m, fail, fail_len);
    n += fail_len;
    memcpy(m + n, sync, sizeof(sync) - 1);
    n += sizeof(sync) - 1;
    m[n] = PGW_FE_DESCRIBE;
    pgw_put_u32(m + n + 1, dlen);
    m[n + 5] = 'P';
    memcpy(m + n + 6, name, (size_t)nl + 1);
    n += 1 + dlen;
    memcpy(m + n, sync, sizeof(sync) - 1);
    n += sizeof(sync) - 1;
    if (!cbuf_own(s, m, n))
        return false;
    memcpy(s->copy_abort_name, name, (size_t)nl + 1);
    s->copy_abort = COPY_ABORT_OUT;
    s->copy_abort_ours = false;
    s->copy_abort_lost = false;
    s->copy_abort_z = 0;
    s->eof_copy_fail = true;            /* (no second CopyFail: eof_end_copy) */
    /* query_timeout times this end from here, as a request of its own:
     * the COPY's clock, started by the client, fired while the server
     * answered it and closed a server whose end was answered. */
    s->query_floor = pgw_mono_now(s->px->loop);
    s->client_eof = true;               /* nothing more is read from it */
    if (s->fe_invalid)
        s->term_wait = true;            /* (a client that left: as it left) */
    ev_io_stop(s->px->loop, &s->cli_r);
    return true;
}

/* The client left inside its COPY FROM STDIN (client_eof set: a Terminate,
 * the end of its stream, a reset): PostgreSQL ends the backend there, the
 * COPY rolled back, and PgBouncer closes the server; so did pgwharf, and
 * the pool logged in again.  The end of copy_abort_start keeps it: the
 * COPY fails, its transaction with it, and the client -- which may have
 * shut down its sending side only, and read on -- gets what PostgreSQL
 * sends it (copy_abort_reply, close_copy_eof) unless a write to it fails;
 * the session ends at the marker's ReadyForQuery (pgw_relay_eof_check),
 * the server given back as ever (in a failed transaction block: rolled
 * back by the pool, PGW_LEFTOVER_XACT).  Everything whole that the client
 * sent before is scanned and goes first.  true when that end is on its
 * way (the session may have closed since: a failed write). */
static bool copy_abort_leave(struct pgw_session *s)
{
    if (!s->client_eof || s->fe_invalid || s->eof_copy_fail || !copy_abort_due(s) ||
        (s->cbuf && s->cbuf->parsed != s->cbuf->len) || !copy_abort_start(s))
        return false;
    pgw_relay_flush_server(s);
    if (s->state == PGW_SS_LINKED)
        pgw_session_arm_timer(s);       /* query_timeout bounds the end too */
    return true;
}

/* Scan client messages; returns false when the session was closed. */
static bool scan_client(struct pgw_session *s)
{
    struct pgw_iobuf *b = s->cbuf;
    if (s->terminating) {
        b->len = b->parsed;       /* nothing after a Terminate is read */
        return true;
    }
    while (b->parsed < b->len) {
        uint32_t avail = b->len - b->parsed;
        if (s->cskip) {
            uint32_t n = avail < s->cskip ? avail : s->cskip;
            if (s->qscan && s->discard != PGW_DISCARD_NONE)
                pgw_notify_qscan_free(s);    /* its Query's rest is dropped */
            else if (s->qscan && !pgw_notify_qscan_feed(s, b->data + b->parsed, n, false))
                return false;
            if (s->discard != PGW_DISCARD_NONE)
                pgw_iobuf_cut(b, b->parsed, n);
            else
                b->parsed += n;
            s->cskip -= n;
            if (s->cskip == 0 && s->discard == PGW_DISCARD_STRAY)
                s->discard = PGW_DISCARD_NONE;
            if (s->cskip == 0 && s->discard == PGW_DISCARD_LAST && !discard_done(s))
                return false;
            continue;
        }
        if ((!fe_type_valid(b->data[b->parsed]) || b->data[b->parsed] == PGW_FE_TERMINATE) &&
            !s->replication && s->srv_copy_in && s->copy_ins > s->copy_ends) {
            /* In the client's COPY FROM STDIN: pgwharf ends that COPY in
             * its place and keeps the server (copy_abort_start), the
             * client told what PostgreSQL tells it (a Terminate too: the
             * COPY's error and the FATAL, for a client that reads on);
             * failing that, it goes to the server, which ends, as before
             * (a Terminate: the client leaves, as below). */
            s->fe_invalid = true;
            s->fe_invalid_type = b->data[b->parsed];
            uint32_t cut = b->len - b->parsed;
            b->len = b->parsed;
            if (copy_abort_due(s) && copy_abort_start(s)) {
                s->unrelayed_in += cut;   /* it and what follows: dropped */
                return true;
            }
            s->fe_invalid = false;
            b->len = b->parsed + cut;
        }
        if (!fe_type_valid(b->data[b->parsed]) &&
            !(s->srv_copy_in && s->copy_ins > s->copy_ends) && !s->replication) {
            /* PostgreSQL runs what came before it, then ends the connection
             * at it: taken as a Terminate in its place (what came before
             * runs, the session ends once it is answered, the server given
             * back as ever: close_terminated), never sent to the server,
             * which would end too (a new login for the next client, one
             * per try of any client).  In a COPY FROM STDIN the server
             * reads it as a COPY's (an error, then the end): sent -- but
             * not once the client's CopyDone or CopyFail went ahead of it
             * (copy_ends: the server, out of the COPY then, would end at
             * it; srv_copy_in lasts until the server's answer). */
            s->fe_invalid = true;
            s->fe_invalid_type = b->data[b->parsed];
            s->terminating = true;
            s->unrelayed_in += b->len - b->parsed;  /* it and what follows: dropped */
            b->len = b->parsed;
            break;
        }
        if (avail < PGW_MSG_HDR)
            break;
        const uint8_t *p = b->data + b->parsed;
        char type = (char)p[0];
        uint32_t mlen = pgw_get_u32(p + 1);
        if (mlen < 4 || mlen > MSG_MAX) {
            pgw_session_close(s, "08P01", "invalid message length %u for message type %d",
                              mlen, p[0]);
            return false;
        }
        /* The whole message, type byte too, as PgBouncer counts it. */
        if (mlen >= (uint32_t)s->px->cfg->max_packet_size) {
            pgw_session_close(s, "08P01", "message of %u bytes is larger than max_packet_size "
                              "(%d)", mlen + 1, s->px->cfg->max_packet_size);
            return false;
        }
        uint32_t total = mlen + 1;
        uint32_t n = avail < total ? avail : total;
        /* A Sync or Query ends the implicit transaction, and with it a
         * prepared LISTEN's portal held for a later Execute (notify_ext.c),
         * whoever answers it. */
        if (type == PGW_FE_SYNC || type == PGW_FE_QUERY || type == PGW_FE_FUNCTION_CALL)
            pgw_notify_portal_drop(s);
        if (type == PGW_FE_TERMINATE) {
            s->terminating = true;
            s->unrelayed_in += b->len - b->parsed;  /* it and what follows: dropped */
            b->len = b->parsed;
            break;
        }
        if (type == PGW_FE_QUERY && s->px->cfg->disable_pqexec && !s->replication) {
            /* PgBouncer's words; a Query can carry several statements
             * (SQL injection), the extended protocol only one. */
            pgw_session_close(s, "08P01", "PQexec disallowed");
            return false;
        }
        if (s->discard == PGW_DISCARD_NONE && !s->server && s->state == PGW_SS_IDLE &&
            ignored_alone(type) && !(s->notify && pgw_notify_waiting(s))) {
            /* No request under way and no server: PostgreSQL would ignore
             * it (CopyData still on its way when a COPY failed, a Flush).
             * A server taken for it would get no request whose
             * ReadyForQuery gives it back: the client would hold it idle. */
            pgw_iobuf_cut(b, b->parsed, n);
            s->cskip = total - n;
            s->cmsg_alone = false;
            if (type == PGW_FE_FLUSH && mlen != 4) {
                /* PostgreSQL reads a Flush (not a stray Copy message):
                 * one with a body is an error, then skips to a Sync. */
                send_error(s, "08P01", "invalid message format");
                if (s->state == PGW_SS_CLOSING)
                    return false;
                s->discard = PGW_DISCARD_TO_SYNC;
            } else if (s->cskip > 0) {
                s->discard = PGW_DISCARD_STRAY;
            }
            continue;
        }
        if (s->discard == PGW_DISCARD_NONE && !s->server)
            break;          /* scanned once a server is linked */
        if (s->server && s->pipe_budget == 0 && s->discard == PGW_DISCARD_NONE) {
            /* Held while clients are queued, whether or not more may queue
             * (user_pipe_ok is off after a taint while the queue is still
             * there): sent now, it would
             * run before their queries and their replies would be read as
             * its own. */
            /* Also while it drops replies ahead of its own: a settings
             * change in them would fail its query, and must not reach
             * what it sends next. */
            if (s->server->user_queued > 0 || s->server->user_tail_skip > 0 || s->pipe_stop ||
                s->pipe_skip > 0 || s->pipe_drop > 0)
                break;      /* the server answers queued clients first: held */
            s->server->user_pipe_ok = false;   /* more than one SELECT: none may queue */
        }
        if (s->discard != PGW_DISCARD_NONE) {
            pgw_iobuf_cut(b, b->parsed, n);
            s->cskip = total - n;
            s->cmsg_alone = false;
            if (s->discard == PGW_DISCARD_UNTYPED && !ignored_alone(type))
                s->discard = type == PGW_FE_QUERY || type == PGW_FE_FUNCTION_CALL ||
                             type == PGW_FE_SYNC ? PGW_DISCARD_LAST : PGW_DISCARD_TO_SYNC;
            else if (s->discard == PGW_DISCARD_TO_SYNC && type == PGW_FE_SYNC) {
                s->discard = PGW_DISCARD_LAST;
                if (mlen != 4) {
                    /* PostgreSQL reads the Sync that ends the skipping:
                     * one with a body is an error before its
                     * ReadyForQuery. */
                    send_error(s, "08P01", "invalid message format");
                    if (s->state == PGW_SS_CLOSING)
                        return false;
                }
            }
            /* A Query still arriving keeps dropping until it is gone. */
            if (s->cskip == 0 && s->discard == PGW_DISCARD_LAST && !discard_done(s))
                return false;
            continue;
        }
        if (type == PGW_FE_CLOSE && close_waits(s, p, avail)) {
            s->ps_wait = true;          /* scanned again as answers come */
            break;
        }
        if (type == PGW_FE_CLOSE && close_alone_linked(s, p, avail)) {
            if (!close_answered_alone(s, total))
                return false;
            continue;
        }
        if (s->server &&
            (type == PGW_FE_QUERY || type == PGW_FE_PARSE || type == PGW_FE_FUNCTION_CALL))
            note_setting_words(s, type, p, avail, total);
        else if (type == PGW_FE_BIND && s->server) {
            if (s->server->user_unrep_stmt)
                s->unrep_touched = true;
            if (s->mode != PGW_POOL_SESSION && s->px->cfg->server_reset_session_state) {
                stmt_words_bind(s, p, avail < total ? avail : total);
                stmt_portal_bind(s, p, avail < total ? avail : total);
            }
        }
        if (s->notify && (type == PGW_FE_QUERY ||
                          (type == PGW_FE_PARSE && avail > PGW_MSG_HDR && p[PGW_MSG_HDR] == 0)))
            pgw_notify_unnamed_gone(s);
        if (drops_unnamed(p, avail))
            pgw_ps_unnamed_gone(s);
        if (type == PGW_FE_PARSE && s->notify && !pgw_notify_tx_parse(s, p, avail, total)) {
            if (!read_on(s, type, total, false))
                return false;
            break;          /* its name first */
        }
        if (s->state == PGW_SS_CLOSING)
            return false;   /* out of memory in pgw_notify_tx_parse */
        if (type == PGW_FE_QUERY && s->notify && s->mode != PGW_POOL_SESSION) {
            int r = pgw_notify_tx_deallocate(s, p, avail, total, tx_quiet(s));
            if (r < 0)
                return false;
            if (r == 1) {
                s->query_start = 0;     /* answered by pgwharf: nothing under way */
                s->waited_since = 0;
                pgw_session_arm_timer(s);
                continue;
            }
            if (r == PGW_NOTIFY_MORE) {
                if (avail >= total)
                    s->ps_wait = true;  /* scanned again as answers come */
                else if (s->query_start == 0)
                    s->query_start = pgw_mono_now(s->px->loop);
                break;
            }
        }
        if (type == PGW_FE_QUERY && s->ps_on && s->mode != PGW_POOL_SESSION) {
            /* SQL DEALLOCATE of the client's own statement (not on any
             * server under its name): answered here. */
            int r = pgw_ps_deallocate_query(s, p, avail, total, tx_quiet(s));
            if (r < 0)
                return false;
            if (r == PGW_PS_DEALLOC_REWRITTEN) {
                /* Moved and changed: read again where it is now. */
                b = s->cbuf;
                p = b->data + b->parsed;
                avail = b->len - b->parsed;
                total = pgw_get_u32(p + 1) + 1;
                mlen = total - 1;
                n = total;
                /* Outside a batch it waits below to be scanned again as
                 * answers come, which the Sync pgwharf put ahead of it
                 * brings.  Rewritten in an open batch (no Sync ahead of
                 * it) no answer comes: it goes on now.  (The two values
                 * were one: it waited in a batch too, and rewritten from
                 * server_data's ps_wait rescan -- a Bind of an unread name
                 * ahead of it in the batch -- the client hung with the
                 * server; review r2 of 0ec8acd.) */
                r = s->track.fe_open > 0 ? 0 : PGW_NOTIFY_MORE;
            }
            if (r == 1) {
                s->query_start = 0;
                s->waited_since = 0;
                pgw_session_arm_timer(s);
                continue;
            }
            if (r == PGW_NOTIFY_MORE) {
                if (avail >= total)
                    s->ps_wait = true;
                else if (s->query_start == 0)
                    s->query_start = pgw_mono_now(s->px->loop);
                break;
            }
        }
        if ((type == PGW_FE_QUERY || type == PGW_FE_PARSE) && s->mode != PGW_POOL_SESSION) {
            int r = offer_tx_listen(s, p, avail, total);
            if (r < 0)
                return false;
            if (r == 0) {
                /* Read it whole first; the server is held for it
                 * meanwhile: query_timeout runs. */
                if (s->query_start == 0)
                    s->query_start = pgw_mono_now(s->px->loop);
                break;
            }
        }
        if (type == PGW_FE_BIND && s->notify && !pgw_notify_tx_bind(s, p, avail, total)) {
            if (!read_on(s, type, total, false))
                return false;
            break;          /* its names first */
        }
        if (type == PGW_FE_DESCRIBE && s->notify && !pgw_notify_tx_describe(s, p, avail, total)) {
            if (!read_on(s, type, total, false))
                return false;
            break;          /* its name first */
        }
        if (s->state == PGW_SS_CLOSING)
            return false;   /* out of memory in pgw_notify_tx_bind or _describe */
        if (type == PGW_FE_CLOSE && s->notify) {
            uint32_t head = total < PGW_NOTIFY_CLOSE_MAX ? total : PGW_NOTIFY_CLOSE_MAX;
            if (head > avail) {
                if (s->query_start == 0)
                    s->query_start = pgw_mono_now(s->px->loop);
                break;      /* a few bytes: read its name first */
            }
            pgw_notify_close(s, p, head);
        }
        if (s->ps_on && ps_type(type)) {
            /* Parse/Bind/Describe/Close are read whole (names are rewritten);
             * the rest only queue a reply. */
            bool whole = type == PGW_FE_PARSE || type == PGW_FE_BIND ||
                         type == PGW_FE_DESCRIBE || type == PGW_FE_CLOSE;
            if (whole && total > avail) {
                if (!read_on(s, type, total, true))
                    return false;
                break;      /* wait for the whole message */
            }
            enum pgw_ps_action a = pgw_ps_frontend(s, b, type, &total);
            if (a == PGW_PS_FAILED)
                return false;
            if (a == PGW_PS_WAIT) {
                s->ps_wait = true;              /* scanned again as answers come */
                /* Under way meanwhile (a Parse of pgwharf's may run first,
                 * and wait on a lock): not idle, and query_timeout runs. */
                if (s->query_start == 0)
                    s->query_start = pgw_mono_now(s->px->loop);
                break;
            }
            if (a == PGW_PS_NEED_ROOM) {
                if (b->sent < b->parsed) {
                    s->ps_need_room = true;     /* room comes as the server drains */
                    break;
                }
                /* Nothing to drain: a larger buffer, then the same message again. */
                uint64_t want = (uint64_t)b->len - b->sent + s->ps_room_need;
                if (want > PGW_IOBUF_MAX) {
                    pgw_session_close(s, "54000", "prepared statement too large to relay");
                    return false;
                }
                if (!pgw_iobuf_reserve(s->px, &s->cbuf, (uint32_t)want)) {
                    pgw_session_close(s, "53200", "out of memory to relay a prepared statement");
                    return false;
                }
                b = s->cbuf;
                continue;
            }
            if (a == PGW_PS_DROPPED) {
                /* Answered by pgwharf: to the client now (a Flush may be
                 * all the client sends next), unless a server message is
                 * half relayed, after which scan_server sends it. */
                pgw_ps_emit(s);
                if (s->state == PGW_SS_CLOSING)
                    return false;
                if (s->sbuf && s->sbuf->sent < s->sbuf->parsed) {
                    pgw_batch_flush_client(s);
                    if (s->state == PGW_SS_CLOSING)
                        return false;
                }
                continue;
            }
            if (whole)
                n = total;  /* may have changed with a rewrite */
        }
        /* A message a COPY FROM STDIN does not read, sent behind a request
         * not answered yet: inside the COPY, or after one its data failed,
         * it is answered by the server (copy_abort_due).  Unless it is the
         * COPY's own request, sent behind others (BEGIN and COPY in one
         * write): all before it are answered at its CopyInResponse
         * (track_backend). */
        if (type != PGW_FE_COPY_DATA && type != PGW_FE_FLUSH && type != PGW_FE_SYNC &&
            type != PGW_FE_COPY_DONE && type != PGW_FE_COPY_FAIL) {
            s->copy_mixed = s->track.sync_out > 0;
            s->copy_mixed_seq = s->track.req_done + (uint32_t)s->track.sync_out;
        }
        if ((type == PGW_FE_COPY_DONE || type == PGW_FE_COPY_FAIL) &&
            (s->track.sync_out > 0 || s->track.fe_open > 0))
            s->copy_ends++;
        if ((type == PGW_FE_COPY_DONE || type == PGW_FE_COPY_FAIL) && s->ps_on)
            pgw_ps_copy_sent(s, type);
        /* A request starts with its first message (a Parse with no Sync
         * yet counts); a Sync restarts the clock as before. */
        bool was_open = s->track.sync_out > 0 || s->track.fe_open > 0;
        int fe_was = s->track.fe_open;
        char ttype = type;
        if ((type == PGW_FE_SYNC || type == PGW_FE_FLUSH) && mlen != 4)
            ttype = pgw_track_bodied(&s->track, type);   /* (answered with an error) */
        if (pgw_track_frontend(&s->track, ttype) || (!was_open && s->track.fe_open > 0))
            s->query_start = pgw_mono_now(s->px->loop);
        close_batch_sent(s, ttype, fe_was);
        s->requested = true;
        if (type == PGW_FE_QUERY || type == PGW_FE_SYNC || type == PGW_FE_FUNCTION_CALL) {
            s->query_count++;
        }
        /* A Parse into the unnamed statement (or one whose name is not
         * here yet) leaves it on the server for whoever comes next. */
        if (type == PGW_FE_PARSE &&
            (n <= PGW_MSG_HDR || b->data[b->parsed + PGW_MSG_HDR] == '\0')) {
            s->server->user_unnamed = s->id;
            s->server->user_unnamed_gen = s->ps_unnamed_gen;
        }
        /* What it does to the SQL and named statements whose words the
         * server keeps (as sent: a DEALLOCATE prepared.c rewrote is not
         * the client's). */
        if (!was_open) {
            s->stmt_prep_n = s->stmt_prep_at = 0;
            s->stmt_prep_open = true;
        }
        if (s->stmt_prep_due && type == PGW_FE_QUERY)
            stmt_sql_sent(s, b->data + b->parsed, n, total, was_open);
        if ((type == PGW_FE_BIND || type == PGW_FE_EXECUTE) && stmt_words_on(s))
            stmt_portal_run(s, type, b->data + b->parsed, n);
        s->stmt_prep_due = false;
        /* A Close that goes to the server: with max_prepared_statements
         * on, of a statement only where prepared.c leaves it to the
         * server (a name the client has not Parsed, maybe an SQL PREPAREd
         * one: close_unknown; the client's are answered there). */
        bool srv_close = type == PGW_FE_CLOSE &&
                         (!s->ps_on || (n > PGW_MSG_HDR + 1 &&
                                        b->data[b->parsed + PGW_MSG_HDR] == 'S' &&
                                        b->data[b->parsed + PGW_MSG_HDR + 1] != '\0'));
        if ((type == PGW_FE_QUERY || srv_close) &&
            (s->server->user_stmt_n > 0 || s->server->user_sql_plain_n > 0) && stmt_words_on(s))
            stmt_words_close(s, type, b->data + b->parsed, n, total);
        /* A Close of an SQL PREPAREd name: a tag "PREPARE" answered
         * behind it (that name's, sent ahead) keeps none plain. */
        if (srv_close && stmt_words_on(s))
            s->stmt_prep_noplain = true;
        if (type == PGW_FE_QUERY && s->qscan &&
            !pgw_notify_qscan_feed(s, b->data + b->parsed, n, true))
            return false;
        b->parsed += n;
        s->cskip = total - n;
        s->cskip_copy = s->cskip > 0 && type == PGW_FE_COPY_DATA;
        /* The server reads it whole before it runs it: until the rest
         * comes, it waits for this client (linked_deadline). */
        s->cmsg_alone = s->cskip > 0 && !was_open && !s->track.copy;
        if (s->pipe_budget > 0 && s->server)
            s->pipe_budget--;
    }
    return true;
}

/* The Parse m (have bytes of it here) may be a lone LISTEN or UNLISTEN:
 * the first byte of its text, after its statement name, is here and may
 * start one.  notify.c takes no other Parse, whole or still arriving (it
 * does not wait for a text that is not here yet either). */
static bool parse_may_be_listen(const uint8_t *m, size_t have)
{
    size_t end = (size_t)pgw_get_u32(m + 1) + 1;    /* the message's bytes */
    if (end > have)
        end = have;
    if (end <= PGW_MSG_HDR)
        return false;
    const uint8_t *nul = memchr(m + PGW_MSG_HDR, '\0', end - PGW_MSG_HDR);
    return nul && nul + 1 < m + end && pgw_notify_may_start(nul[1]);
}

/* Bytes waiting for the client beyond which its next request waits (half
 * a buffer: room for what that request may be answered by pgwharf). */
#define REPLIES_UNREAD_MAX (PGW_IOBUF_SIZE / 2)

static bool replies_unread(const struct pgw_session *s)
{
    return s->sbuf && s->sbuf->len - s->sbuf->sent > REPLIES_UNREAD_MAX;
}

/* With a server, max_prepared_statements answers some messages itself
 * (CloseComplete, ParseComplete) and queues an entry per request: a
 * client that sends them and never reads would grow both without bound,
 * the server's own backpressure notwithstanding.  Its next bytes wait. */
static bool linked_backlog(const struct pgw_session *s)
{
    return s->ps_on && s->server && (replies_unread(s) || pgw_ps_backlog(s) > PGW_PS_BACKLOG_MAX);
}

void pgw_relay_replies_read(struct pgw_session *s)
{
    if (!s->replies_unread || s->state == PGW_SS_CLOSING || replies_unread(s) ||
        linked_backlog(s))
        return;
    s->replies_unread = false;
    if (!ev_is_active(&s->cli_r))
        ev_io_start(s->px->loop, &s->cli_r);
    pgw_relay_client_data(s);
}

/* A Close of a portal (have bytes of msg m here) from a client with no
 * server and nothing under way (ts-postgres closes with Close + Flush, no
 * Sync).  In transaction and statement mode no transaction is open then
 * (a server goes back only at ReadyForQuery 'I'), so PostgreSQL has no
 * portal left and answers CloseComplete: answered here, as
 * pgw_ps_close_alone has a Close of a statement answered (a server taken
 * for it would stay with the idle client, its batch open until the next
 * Sync).  1 answer it, 0 not (a statement, a malformed Close: the
 * server's), PGW_NOTIFY_MORE read it whole first. */
static int close_portal_alone(struct pgw_session *s, const uint8_t *m, size_t have)
{
    uint32_t total = pgw_get_u32(m + 1) + 1;
    if (s->notify || !pgw_ps_idle(s) || total > PGW_CLOSE_ALONE_MAX ||
        total < PGW_MSG_HDR + 2)
        return 0;
    if (have < total)
        return PGW_NOTIFY_MORE;          /* read it whole first */
    const uint8_t *body = m + PGW_MSG_HDR;
    uint32_t blen = total - PGW_MSG_HDR;
    if (body[0] != 'P' || memchr(body + 1, 0, blen - 1) != body + blen - 1)
        return 0;
    return 1;
}

/* The Close at the client's parse position, taken alone: cut, and
 * CloseComplete to the client.  false when the session was closed. */
static bool close_answered_alone(struct pgw_session *s, uint32_t total)
{
    pgw_iobuf_cut(s->cbuf, s->cbuf->parsed, total);
    struct pgw_wbuf w;
    pgw_wbuf_init(&w);
    pgw_wbuf_msg_end(&w, pgw_wbuf_msg_begin(&w, PGW_BE_CLOSE_COMPLETE));
    bool ok = !w.failed && pgw_session_send(s, &w);
    pgw_wbuf_deinit(&w);
    if (!ok) {
        pgw_session_close(s, "53200", "out of memory for a reply to the client");
        return false;
    }
    return s->state != PGW_SS_CLOSING;
}

static bool eof_done(const struct pgw_session *s);

/* pgw_relay_client_data once: true when a request was refused at once
 * (fail_request) and what follows it is to be taken next. */
static bool client_data_step(struct pgw_session *s)
{
    /* (While pgwharf's probe is out, what the client sends waits behind
     * it: server_data takes it up once the probe's replies are in.) */
    if (!s->cbuf || s->trk_probe)
        return false;
    if (s->sync_hold && s->swallow > 0 && s->server && s->state == PGW_SS_LINKED) {
        /* The SETs of sync_params go alone: the client's request waits
         * until all are answered (sync_done).  Sent behind them, it ran
         * even where one failed (a cancel from outside, which any client
         * of the same role may send), with what the last client left on
         * the server: its search_path, its rows (hunt). */
        if (s->query_start == 0)
            s->query_start = pgw_mono_now(s->px->loop);   /* (timed as the request) */
        if (s->cbuf->sent < s->cbuf->parsed)
            pgw_batch_flush_server(s);
        if (s->state == PGW_SS_LINKED)
            pgw_session_arm_timer(s);
        return false;
    }
    if (!scan_client(s))
        return false;
    if (s->terminating) {
        /* What came before the Terminate runs, as PostgreSQL runs it (a
         * client that does not wait for the answer): it goes to the server
         * first, and the session ends once it is answered, as at the end
         * of the client's stream (client_eof, eof_done), the server then
         * given back as ever.  (Closed with the requests in its socket,
         * the server was reset: PostgreSQL ended the backend at its next
         * write, the requests after the running one not run -- of three
         * Queries and a Terminate, two ran.)  Where that wait could be
         * for ever (eof_done: a batch with no Sync, a COPY waiting for
         * data), the session ends once it is sent (pgw_relay_flush_server),
         * the server closed, its answer unread -- or the Terminate goes to
         * the server behind it (term_to_server: what a Flush released
         * comes first). */
        ev_io_stop(s->px->loop, &s->cli_r);
        if (s->server && s->state == PGW_SS_LINKED && !s->pipe_srv) {
            s->client_eof = true;
            s->terminating = false;
            s->term_wait = true;
            if (copy_abort_leave(s))
                return false;
            s->terminating = true;
            s->term_wait = false;
            if (eof_done(s) && term_to_server(s))
                return false;
            if (!eof_done(s)) {
                s->terminating = false;
                s->term_wait = true;
                if (s->cbuf->sent < s->cbuf->parsed)
                    pgw_relay_flush_server(s);
                /* query_timeout and transaction_timeout bound what runs
                 * (in session mode the timer was off while the client
                 * was idle: hunt, a server held as long as the query
                 * took, for good if the client also stopped reading). */
                if (s->state == PGW_SS_LINKED)
                    pgw_session_arm_timer(s);
                return false;
            }
        }
        if (s->server && s->state == PGW_SS_LINKED && s->cbuf->sent < s->cbuf->parsed) {
            pgw_relay_flush_server(s);
            if (s->state == PGW_SS_LINKED)
                pgw_session_arm_timer(s);    /* (a write that waits: review) */
        } else {
            close_terminated(s);        /* (answers owed written first: term_flush) */
        }
        return false;
    }
    if (s->notify && pgw_notify_waiting(s))
        return false;       /* read once its LISTEN is answered */
    struct pgw_iobuf *b = s->cbuf;
    if (s->server) {
        if (s->state != PGW_SS_LINKED)
            return false;
        pgw_session_arm_timer(s);       /* also for a message still arriving */
        if (b->sent < b->parsed)
            pgw_batch_flush_server(s);
        if (s->state == PGW_SS_LINKED && linked_backlog(s)) {
            s->replies_unread = true;   /* read again once it has read (pgw_relay_replies_read) */
            ev_io_stop(s->px->loop, &s->cli_r);
        }
        return false;
    }
    for (;;) {
        if (b->parsed == b->len) {
            if (b->sent == b->len) {
                pgw_iobuf_put(s->px, b);
                s->cbuf = NULL;
            }
            return false;
        }
        if (s->state != PGW_SS_IDLE || b->len - b->parsed < PGW_MSG_HDR)
            return false;
        if (replies_unread(s)) {
            /* The client reads nothing of what it was answered (by pgwharf:
             * a request that got no server, a LISTEN; or the end of a
             * server's answer): its next requests wait, unread, as behind
             * a server that stops reading, until it does
             * (pgw_relay_replies_read).  Answered now, their replies would
             * find no room in its buffer. */
            s->replies_unread = true;
            ev_io_stop(s->px->loop, &s->cli_r);
            return false;
        }
        if (s->mode == PGW_POOL_SESSION)
            break;
        /* A lone LISTEN or UNLISTEN takes no server (notify.c): a Query
         * or a Parse whose text starts with white space, L or U may be
         * one, so may a Bind or Describe once the client has prepared
         * one.  Every Parse of such a client goes there too (one reusing
         * the name of its prepared LISTEN is refused, or replaces it when
         * unnamed). */
        const uint8_t *m = b->data + b->parsed;
        size_t have = b->len - b->parsed;
        if (drops_unnamed(m, have))
            pgw_ps_unnamed_gone(s);      /* (answered here or not) */
        /* A portal held for the next batch's Execute (notify_ext.c) ends
         * at anything else but a Describe or Flush, as PostgreSQL's implicit
         * transaction ends at a Sync or Query (another batch decides). */
        if (m[0] != PGW_FE_EXECUTE && m[0] != PGW_FE_DESCRIBE && m[0] != PGW_FE_FLUSH &&
            m[0] != PGW_FE_BIND && m[0] != PGW_FE_PARSE)
            pgw_notify_portal_drop(s);
        if (m[0] == PGW_FE_QUERY && (s->ps_on || pgw_ps_enabled(s))) {
            /* SQL DEALLOCATE of one of its prepared statements: answered
             * here, with no server (it would stay linked to an idle
             * client, answered by pgwharf); scan_client checked it
             * (max_packet_size, disable_pqexec).  A simple Query drops
             * the unnamed statement.  (s->ps_on is set at a link: a
             * client never linked has names too, answered with no server,
             * pgw_ps_parse_alone's, unread.) */
            uint32_t total = pgw_get_u32(m + 1) + 1;
            int r = pgw_ps_deallocate_query(s, m, have < total ? (uint32_t)have : total, total,
                                            true);
            if (r < 0 || r == PGW_NOTIFY_MORE)
                return false;
            if (r == 1) {
                if (s->notify)
                    pgw_notify_unnamed_gone(s);
                b = s->cbuf;
                continue;
            }
        }
        if (m[0] == PGW_FE_CLOSE) {
            /* A Close of a portal, or of one of its statements: answered
             * here, with no server (close_portal_alone, pgw_ps_close_alone).
             * s->ps_on is set at a link: a client never linked yet (its
             * login had no server) has it false. */
            uint32_t total = pgw_get_u32(m + 1) + 1;
            int r = close_portal_alone(s, m, have);
            if (r == 0 && pgw_ps_enabled(s))
                r = pgw_ps_close_alone(s, m, have < total ? (uint32_t)have : total, total);
            if (r == PGW_NOTIFY_MORE)
                return false;
            /* then the next message from the top: a Flush after it is ignored */
            if (r == 1)
                return close_answered_alone(s, total);
        }
        if (m[0] == PGW_FE_SYNC && pgw_get_u32(m + 1) == 4 && pgw_ps_idle(s)) {
            /* A Sync with nothing under way (after a Close answered here,
             * as pgx deallocates: Close, Sync): PostgreSQL answers
             * ReadyForQuery and nothing else.  No server is taken for it,
             * nor waited for in a full pool; SHOW STATS counts it as the
             * server's answer was counted: a query and a transaction. */
            pgw_iobuf_cut(b, b->parsed, PGW_MSG_HDR);
            s->query_count++;
            pgw_metrics_xact_end(s);
            send_ready(s, 'I');
            return s->state != PGW_SS_CLOSING;
        }
        if (m[0] == PGW_FE_PARSE && !s->notify) {
            /* A prepare (Parse, Sync) of a statement the pool has
             * prepared: answered here, with no server
             * (pgw_ps_parse_alone); its Sync next, above. */
            int r = pgw_ps_parse_alone(s, m, have);
            if (r < 0 || r == PGW_NOTIFY_MORE)
                return false;
            if (r == 1) {
                b = s->cbuf;
                continue;
            }
        }
        if (m[0] == PGW_FE_QUERY) {
            /* (A DEALLOCATE may be of a prepared LISTEN it keeps.) */
            if (have > PGW_MSG_HDR && !pgw_notify_may_start(m[PGW_MSG_HDR]) &&
                !(s->notify && (m[PGW_MSG_HDR] | 0x20) == 'd'))
                break;
        } else if (m[0] == PGW_FE_PARSE) {
            if (!s->notify && !parse_may_be_listen(m, have))
                break;
        } else if ((m[0] != PGW_FE_BIND && m[0] != PGW_FE_DESCRIBE &&
                    !(m[0] == PGW_FE_EXECUTE && pgw_notify_portal_held(s))) || !s->notify) {
            break;
        }
        int r = pgw_notify_query(s);
        if (s->refused_now) {
            s->refused_now = false;     /* (pgw_relay_refuse) the rest: next step */
            return s->state != PGW_SS_CLOSING;
        }
        if (r < 0 || r == PGW_NOTIFY_MORE || (s->notify && pgw_notify_waiting(s)))
            return false;
        if (r == 0)
            break;
        b = s->cbuf;        /* answered: the next message */
    }
    /* A message is coming and no server is linked: get one first; it is
     * scanned (and maybe rewritten) once the server is known. */
    s->state = PGW_SS_WAIT_SERVER;
    s->acquiring = true;
    pgw_relay_acquire(s);
    s->acquiring = false;
    bool again = s->refused_now && s->state != PGW_SS_CLOSING;
    s->refused_now = false;
    return again;
}

void pgw_relay_read_again(struct pgw_session *s)
{
    if (ev_is_active(&s->cli_r) || s->fd < 0 || s->client_eof || s->terminating ||
        s->term_wait || s->replies_unread || s->close_after_sent)
        return;
    if (s->state != PGW_SS_IDLE && s->state != PGW_SS_WAIT_SERVER && s->state != PGW_SS_LINKED)
        return;
    const struct pgw_iobuf *b = s->cbuf;
    if (b && b->len - b->sent >= b->cap)
        return;                          /* full still: read once it drains */
    ev_io_start(s->px->loop, &s->cli_r);
}

void pgw_relay_client_data(struct pgw_session *s)
{
    if (s->close_after_sent)
        return;           /* ending once it has read its FATAL: nothing more runs */
    if (pgw_relay_left_while_queued(s))
        return;
    /* The requests after one refused at once are taken here, one after
     * another, not from inside fail_request: a client's buffer may hold
     * thousands of them (a Sync is 5 bytes), a nested call each. */
    while (client_data_step(s))
        ;
    /* Its buffer may have filled while it waited (pgw_session_read_client
     * stopped reading it) and been taken now by pgwharf alone: Closes,
     * Syncs, DEALLOCATEs answered here after a queued request failed
     * (pipe_end_request) or a login waited for a server (welcome).
     * Nothing sent to a server, no flush ends to start the reading again
     * (pgw_relay_flush_server): the client waited for ever for the rest
     * of its answers, its end of stream never read. */
    if (s->state != PGW_SS_CLOSING)
        pgw_relay_read_again(s);
}

/* ---- a client whose stream ended ---- */

static bool eof_end_copy(struct pgw_session *s);

/* Is the client's request waiting in its pool's queue, sent to no server
 * yet?  A client that leaves then (Terminate, or the end of its stream)
 * goes at once, its request dropped, in a full or paused pool.  Not while
 * a server is on its way to it (pgw_pool_waiter_server_coming: a login, a
 * check -- a cold pool's first client sends its query with Terminate):
 * that request runs if the server comes.  The caller marks the waiter
 * (pgw_pool_waiter_gone), and the pool fails its wait if none comes (the
 * login refused while another server is lent left it waiting for a
 * server for nobody -- review of 52c30c1); the session then ends
 * (acquire_failed). */
static bool queued_for_server(const struct pgw_session *s)
{
    return (s->state == PGW_SS_WAIT_SERVER || s->state == PGW_SS_LOGIN_WAIT) && !s->server &&
           !s->pipe_srv && pgw_pool_waiter_queued(&s->waiter);
}

/* A client that leaves while its request waits in the pool's queue (it
 * closed its socket, or sent Terminate, after a request that found no
 * free server) leaves at once, as in PgBouncer: its request never runs and
 * its max_client_conn slot is free now.  It waited, with its request, for
 * as long as the pool was full or paused (until RESUME): a client that
 * gave up (a driver's timeout, then PQfinish) had its query run later for
 * nobody, and one that retried ran it twice.  (Once linked, what it sent
 * before the end runs, as PostgreSQL runs it: pgw_relay_client_eof, which
 * leaves the close of a queued client to its caller.)  Here: a Terminate
 * among what it sent, or a stream that ended before this request queued
 * (server_pipeline_depth: a request held behind a queued one, which takes
 * a server only after the end of the stream was read); true when the
 * client left: the session closed, or (its stream ended) ending once
 * what was answered before is written. */
/* Out of the pool's queue, the rest of what it sent dropped; the session
 * ends once the replies before it are written (the one that ended its
 * turn came in this same callback, and may still be in the batch of
 * writes: pgw_batch_forget at a close would lose it).  client_eof set. */
static void leave_queue(struct pgw_session *s)
{
    out_of_wait(s);
    pgw_relay_eof_check(s);
}

bool pgw_relay_left_while_queued(struct pgw_session *s)
{
    if (!queued_for_server(s))
        return false;
    if (s->client_eof) {
        if (pgw_pool_waiter_server_coming(&s->waiter)) {
            pgw_pool_waiter_gone(&s->waiter);
            return false;
        }
        if (s->state == PGW_SS_LOGIN_WAIT) {
            pgw_session_close(s, NULL, "client closed the connection");
            return true;
        }
        leave_queue(s);
        return true;
    }
    if (!s->cbuf)
        return false;
    const struct pgw_iobuf *b = s->cbuf;
    for (uint32_t at = b->parsed; at < b->len;) {
        /* A message of a type PostgreSQL refuses (fe_type_valid, read
         * before its length) ends the session as a Terminate there would,
         * with its FATAL (it waited for the server, then ran the request
         * for nobody). */
        bool invalid = !fe_type_valid(b->data[at]) && !s->replication;
        if (!invalid && b->len - at < PGW_MSG_HDR)
            return false;
        if (b->data[at] == PGW_FE_TERMINATE || invalid) {
            if (pgw_pool_waiter_server_coming(&s->waiter)) {
                pgw_pool_waiter_gone(&s->waiter);     /* queued_for_server */
                return false;
            }
            if (invalid) {
                pgw_session_close(s, "08P01", "invalid frontend message type %d", b->data[at]);
                return true;
            }
            if (s->state == PGW_SS_LOGIN_WAIT || !s->sbuf || s->sbuf->sent >= s->sbuf->parsed) {
                pgw_session_close(s, NULL, "client terminated");
                return true;
            }
            /* Answers owed before it (one that ended its turn may be in
             * the batch of writes): as at the end of its stream, they are
             * written first, then the session ends (term_wait). */
            s->client_eof = true;
            s->term_wait = true;
            ev_io_stop(s->px->loop, &s->cli_r);
            leave_queue(s);
            return true;
        }
        uint32_t mlen = pgw_get_u32(b->data + at + 1);
        if (mlen < 4 || mlen >= b->len - at)
            return false;
        at += mlen + 1;
    }
    return false;
}

/* After client_eof: is everything the client sent answered (and given to
 * it), or may the wait for that never end? */
static bool eof_done(const struct pgw_session *s)
{
    bool unsent = s->cbuf && s->cbuf->sent < s->cbuf->len;
    switch (s->state) {
    case PGW_SS_LOGIN_WAIT:
    case PGW_SS_LOGIN_SYNC:
    case PGW_SS_WAIT_SERVER:
        return !unsent && !s->pipe_srv;     /* (a queued request is on pipe_srv) */
    case PGW_SS_IDLE:
    case PGW_SS_LINKED:
        break;
    default:
        return true;
    }
    if (unsent || (s->sbuf && s->sbuf->sent < s->sbuf->parsed))
        return false;
    if (!s->server)
        return true;
    if (s->copy_abort != COPY_ABORT_NONE)
        return false;            /* its end is on its way (copy_abort_reply) */
    /* After that end, a cancel of the client's (sent during it, or just
     * before) still on its way to the server: given back now, the server
     * would be closed (pgw_relay_release_mode), as it was; the end waits
     * for it (session_cancels_done; cancel_wait_timeout bounds it). */
    if (s->copy_abort_name[0] && s->cancel_inflight > 0)
        return false;
    /* A COPY FROM STDIN waits for data that will never come.  Not one
     * the server ended already, on a bad row (its error came, srv_copy_in
     * off): PostgreSQL flushes that error at once and its ReadyForQuery
     * after it, which a Query's COPY still gets, as from PostgreSQL (the
     * end of the stream read in between closed the session there, the
     * client got no ReadyForQuery; by Execute nothing more comes and the
     * tests below end it).  (A CopyBoth sets no srv_copy_in.) */
    if (s->copy_ins > s->copy_ends && (s->srv_copy_in || s->replication))
        return true;
    /* The count of replies due may be high (count_high, track.h): the wait
     * for them could be for ever.  The session ends as it did before (the
     * server is closed; what was sent runs). */
    if (s->track.count_high || (s->ps_on && pgw_ps_unsure(s)))
        return true;
    /* The stream ended inside a batch with no Sync after it: the server
     * sends nothing more of it (it flushes at a Sync, or skips to one after
     * an error), and a reply it sent part of stays cut.  PostgreSQL would
     * end the backend at the end of the stream, the batch's transaction
     * rolled back: the server is closed. */
    /* (The Syncs a COPY the client ended with CopyDone read are
     * outstanding until its CommandComplete, which it sends only at the
     * next Sync or Flush.) */
    if (s->track.fe_open > 0 &&
        (s->track.sync_out <= s->track.sync_copy_back || s->track.skip_sync))
        return true;
    /* A batch with no Sync yet (fe_open) gets none: nothing more comes.
     * Nor does an extended-protocol COPY FROM STDIN the client ended
     * (CopyDone; track.copy until a ReadyForQuery) whose Sync it read as
     * its own: the server waits for the next Sync after its
     * CommandComplete.  PostgreSQL would end the backend, the COPY rolled
     * back. */
    return s->track.sync_out == 0 && s->swallow == 0 && s->sskip == 0 && s->pipe_skip == 0 &&
           s->pipe_drop == 0 && !s->pipe_stop;
}

/* The client's stream ended while logged in: PostgreSQL reads every
 * message that came before the end of the stream and runs it, and a client
 * that only shut down its sending side reads the answers.  So whole
 * messages not run yet (a request waiting for a server, or for its login's
 * server) still go, and the session ends once they are answered, like a
 * Terminate after them (a Terminate among them ends it as ever); a message
 * not whole is dropped, as PostgreSQL drops it. */
bool pgw_relay_client_eof(struct pgw_session *s)
{
    switch (s->state) {
    case PGW_SS_LOGIN_WAIT:
    case PGW_SS_LOGIN_SYNC:
    case PGW_SS_IDLE:
    case PGW_SS_WAIT_SERVER:
    case PGW_SS_LINKED:
        break;
    default:
        return false;
    }
    if (queued_for_server(s)) {
        if (!pgw_pool_waiter_server_coming(&s->waiter))
            return false;       /* the caller closes it at once (pgw_relay_left_while_queued) */
        pgw_pool_waiter_gone(&s->waiter);
    }
    /* A message cut short (part of it relayed, or being dropped): the
     * server would wait for the rest of it.  (But for a CopyData: the end
     * goes to the server, which answers it as PostgreSQL.) */
    if (s->cskip > 0)
        return eof_cut_to_server(s);
    struct pgw_iobuf *b = s->cbuf;
    bool held = false;           /* whole messages not sent yet, but a Terminate */
    if (b) {
        uint32_t at = b->parsed;
        while (b->len - at >= PGW_MSG_HDR) {
            uint32_t mlen = pgw_get_u32(b->data + at + 1);
            if (mlen < 4 || mlen >= b->len - at)
                break;
            at += mlen + 1;
        }
        s->unrelayed_in += b->len - at;
        b->len = at;
        held = at > b->parsed && b->data[b->parsed] != PGW_FE_TERMINATE;
    }
    /* server_pipeline_depth: a request queued on a busy server, or one that
     * others are queued behind, is on the server already and runs.  With
     * nothing sent after it the client leaves at once as ever, and the
     * queue drops its reply; requests held behind it run in their turn
     * (once the server is its own, or it has another), as any client's. */
    if (!held && (s->pipe_srv || (s->server && (s->server->user_queued > 0 ||
                                                s->server->user_tail_skip > 0))))
        return false;
    s->client_eof = true;
    ev_io_stop(s->px->loop, &s->cli_r);
    if (s->notify) {
        pgw_notify_client_eof(s);        /* (its held ReadyForQuery, written, may fail) */
        if (s->state == PGW_SS_CLOSING)
            return true;
    }
    /* (copy_abort_leave: the COPY it left ends, the session with it;
     * closed since, maybe, at a failed write.) */
    bool copy_left = !s->terminating && copy_abort_leave(s);
    if (!s->terminating && !copy_left && eof_done(s))
        return eof_batch_to_server(s);
    if (!s->terminating && !copy_left && !eof_end_copy(s))
        return true;            /* closed */
    if (s->px->cfg->log_disconnections && s->state != PGW_SS_CLOSING) {
        char qd[200], qu[200];
        pgw_info("client_eof", "client=%s db=%s user=%s reason=\"the client's stream ended: "
                 "what it sent runs, then the session ends\"", s->addr_text,
                 pgw_log_quote(qd, sizeof(qd), s->database),
                 pgw_log_quote(qu, sizeof(qu), s->user));
    }
    return true;
}

/* After client_eof, with everything the client sent on the server: a
 * COPY FROM STDIN waiting for data would wait for ever (the count of
 * copy_ins and copy_ends cannot tell a CopyDone the server ignored, sent
 * outside a COPY).  A CopyFail ends it as PostgreSQL ends one whose client
 * went; one that was ending anyway (its CopyDone sent before the
 * CopyInResponse came) ignores it, as PostgreSQL ignores a CopyFail outside
 * a COPY.  false when the session was closed. */
static bool eof_end_copy(struct pgw_session *s)
{
    if (!s->srv_copy_in || s->eof_copy_fail || !s->server || s->state != PGW_SS_LINKED ||
        (s->cbuf && s->cbuf->sent < s->cbuf->len) || s->srv_write_blocked)
        return true;
    static const char msg[] = "f\0\0\0\x31" "COPY ended: the client closed the connection";
    bool want_read = false;
    s->eof_copy_fail = true;
    if (pgw_server_write(s->server, msg, sizeof(msg), &want_read) != (ssize_t)sizeof(msg)) {
        pgw_session_close(s, NULL, "client closed the connection");
        return false;
    }
    return true;
}

void pgw_relay_eof_check(struct pgw_session *s)
{
    if (!s->client_eof || s->terminating || s->state == PGW_SS_CLOSING)
        return;
    if (s->term_sent) {
        /* The session ends at the server's close (term_to_server); one
         * that has no server any more has nothing left to wait for. */
        if (!s->server || s->state != PGW_SS_LINKED)
            pgw_session_close(s, NULL, "client terminated");
        return;
    }
    /* The refused message came with the request that started this COPY
     * (before its CopyInResponse), or the client left behind it: the COPY
     * ends in its place now, as above, once all the client sent before it
     * is on the server. */
    if ((s->fe_invalid ? s->term_wait : !s->eof_copy_fail) && copy_abort_due(s) &&
        (!s->cbuf || s->cbuf->sent == s->cbuf->len) && !s->srv_write_blocked) {
        /* A Terminate (term_wait alone) the COPY would read: a message it
         * refuses (scan_client), the client told so. */
        bool term = s->term_wait && !s->fe_invalid;
        if (term) {
            s->fe_invalid = true;
            s->fe_invalid_type = PGW_FE_TERMINATE;
        }
        if (copy_abort_start(s)) {
            pgw_relay_flush_server(s);
            return;
        }
        if (term)
            s->fe_invalid = false;
    }
    /* (Behind a Terminate or a refused message, not the end of the
     * stream: a CopyFail sent now would end, in its place, a COPY the
     * client's end is to reach -- term_to_server, once all is in.) */
    if (!eof_done(s)) {
        if (!s->term_wait || (s->copy_ins == 0 && s->copy_ends == 0))
            eof_end_copy(s);
    } else if (s->term_wait && (!s->cbuf || s->cbuf->sent == s->cbuf->len) &&
             !s->srv_write_blocked && term_to_server(s))
        return;
    else if (!s->term_wait && (!s->cbuf || s->cbuf->sent == s->cbuf->len) &&
             eof_batch_to_server(s))
        return;
    else if (s->term_wait)
        close_terminated(s);
    else if (s->copy_abort_ours && !s->fe_invalid && !s->copy_abort_lost)
        close_copy_eof(s);
    else
        pgw_session_close(s, NULL, "client closed the connection");
}

void pgw_relay_flush_server(struct pgw_session *s)
{
    struct pgw_iobuf *b = s->cbuf;
    struct pgw_server *srv = s->server;
    struct ev_loop *loop = s->px->loop;
    if (!b || !srv)
        return;
    while (b->sent < b->parsed) {
        bool want_read = false;
        ssize_t w = pgw_server_write(srv, b->data + b->sent, b->parsed - b->sent, &want_read);
        if (w == PGW_EAGAIN) {
            s->srv_write_blocked = true;
            if (!ev_is_active(&srv->user_w))
                ev_io_start(loop, &srv->user_w);
            return;
        }
        if (w < 0) {
            srv->user_pipe_broken = true;      /* nothing is handed on */
            pgw_pool_server_lost(srv);
            if (s->pipe_waits) {
                /* (What failed to go out: the requests moved to s at its
                 * handoff, its own among them maybe.) */
                pipe_lost_ahead(s);
                return;
            }
            pgw_session_close(s, "08006", "server connection lost while sending: %s",
                              pgw_strerror((int)w));
            return;
        }
        b->sent += (uint32_t)w;
    }
    if (s->terminating) {
        close_terminated(s);
        return;
    }
    s->srv_write_blocked = false;
    if (s->srv_eof_due && !srv_send_eof(s))
        return;
    if (ev_is_active(&srv->user_w))
        ev_io_stop(loop, &srv->user_w);
    if (b->sent == b->len) {
        b->sent = b->parsed = b->len = 0;
        if (b->cap != PGW_IOBUF_SIZE) {      /* a grown buffer goes back at once */
            pgw_iobuf_put(s->px, b);
            s->cbuf = NULL;
        }
    }
    if (s->ps_need_room) {
        /* A rewrite waited for room: there is some now. */
        s->ps_need_room = false;
        pgw_relay_client_data(s);
        return;
    }
    if (!ev_is_active(&s->cli_r) && s->state != PGW_SS_CLOSING && !s->client_eof &&
        !s->replies_unread)
        ev_io_start(loop, &s->cli_r);
    pgw_relay_release_if_clean(s);
    if (s->state == PGW_SS_LINKED)
        pgw_relay_track_probe(s);        /* (it was not quiet while blocked) */
    if (s->client_eof)
        pgw_relay_eof_check(s);
}

/* ---- server -> client ---- */

/* A SET of the login's sync_params was cancelled (param_sync_failed):
 * those still needed go again before the welcome. */
static void login_sync_again(struct pgw_session *s)
{
    s->sync_failed = false;
    s->sync_tries++;
    if (!sync_params(s)) {
        pgw_session_close(s, "53200", "out of memory queueing SET for the client's "
                          "parameters");
        return;
    }
    if (s->swallow > 0)
        pgw_relay_flush_server(s);       /* (still PGW_SS_LOGIN_SYNC) */
    else
        welcome(s);
}

enum scan_after {
    AFTER_NONE, AFTER_RELEASE, AFTER_LOGIN, AFTER_STMT_ERROR, AFTER_FAST_CLOSE, AFTER_CANCEL_LOST
};

/* server_fast_close (PgBouncer's; session mode): a session whose server is
 * due to close (RECONNECT, a reload that changed its settings) ends as soon
 * as nothing is outstanding, instead of keeping the old server until the
 * client leaves: the client gets FATAL and reconnects to the new one. */
static bool fast_close_due(const struct pgw_session *s)
{
    return s->mode == PGW_POOL_SESSION && s->state == PGW_SS_LINKED && s->server &&
           s->px->cfg->server_fast_close && s->track.tx_status == 'I' &&
           s->track.sync_out == 0 && s->track.fe_open == 0 && !s->track.copy &&
           pgw_server_close_needed(s->server);
}

static void fast_close(struct pgw_session *s)
{
    pgw_session_close(s, "57P01", "database configuration changed");
}

void pgw_relay_fast_close_idle(struct pgw_proxy *px)
{
    if (!px->cfg->server_fast_close)
        return;
    struct pgw_list *pos, *next;
    for (pos = px->sessions.next; pos != &px->sessions; pos = next) {
        next = pos->next;
        struct pgw_session *s = pgw_container_of(pos, struct pgw_session, node);
        /* A request the client has sent and the server not yet seen is
         * answered first; the session ends at its ReadyForQuery. */
        bool unsent = s->cbuf && s->cbuf->sent < s->cbuf->len;
        if (fast_close_due(s) && !unsent)
            fast_close(s);
    }
}

static void ready_step(struct pgw_session *s, char status, enum scan_after *after)
{
    s->answered++;              /* a request is over: a cancel now is for the next */
    s->stmt_prep_n = s->stmt_prep_at = 0;   /* (the Query of stmt_sql_sent is over) */
    s->stmt_prep_open = false;              /* (one sent behind: not listed) */
    s->stmt_prep_noplain = false;
    if (!pgw_track_ready(&s->track, status)) {
        /* A ReadyForQuery inside a pipeline: 'I' ends a transaction, the
         * next one starts now (transaction_timeout).  In statement mode
         * one in a transaction ends the client as the last would (its
         * BEGIN and what followed were sent at once). */
        if (status == 'I') {
            pgw_metrics_xact_end(s);             /* SHOW STATS counts each */
            s->xact_floor = pgw_mono_now(s->px->loop);
        }
        /* The server starts on the next request now (query_timeout). */
        s->query_floor = pgw_mono_now(s->px->loop);
        /* Unless the count is high (count_high: a COPY that failed may
         * have read a Sync, whose ReadyForQuery never comes): nothing may
         * be under way, and an idle client must not meet query_timeout
         * (its requests are not timed while the count stays high). */
        if (s->track.count_high && s->track.fe_open == 0)
            s->query_floor = s->query_start = 0;
        if (s->mode == PGW_POOL_STATEMENT && status != 'I' && s->state == PGW_SS_LINKED)
            *after = AFTER_STMT_ERROR;
        return;
    }
    s->copy_ins = s->copy_ends = 0;
    if (s->stmt_forget_n || s->stmt_kept)
        stmt_forget_done(s);
    if (s->track.fe_open == 0)
        s->stmt_prep_loose = false;
    pgw_metrics_ready(s, status);
    if (status == 'I')
        s->xact_floor = 0;
    /* Messages sent since the last Sync are still under way. */
    s->query_start = s->track.fe_open > 0 ? pgw_mono_now(s->px->loop) : 0;
    if (s->track.sync_out == 0 && s->track.fe_open == 0)
        s->settings_pending = false;     /* every SET is answered: params are current */
    s->ready_at = pgw_mono_now(s->px->loop);
    s->query_floor = 0;
    s->waited_since = 0;
    if (fast_close_due(s)) {
        *after = AFTER_FAST_CLOSE;      /* once this ReadyForQuery is out */
        return;
    }
    /* In statement mode a transaction left open ends the client, whatever
     * it sent since without a Sync (Parse/Bind/Execute + Flush of the next
     * statement of its block). */
    if (s->mode == PGW_POOL_STATEMENT && status != 'I' && s->state == PGW_SS_LINKED) {
        *after = AFTER_STMT_ERROR;
        return;
    }
    /* A Close pgwharf answers (one of a statement, sent behind the Sync
     * answered here) asks nothing of the server: its CloseComplete goes
     * out right after this ReadyForQuery (pgw_ps_emit), before the release
     * (after_scan); waiting for it kept the server until the next Sync. */
    if (s->track.fe_open > 0 || s->mode == PGW_POOL_SESSION || s->state != PGW_SS_LINKED ||
        (s->ps_on && !pgw_ps_idle(s) && !pgw_ps_closes_only(s)))
        return;
    /* (A probe's last reply releases it; a server the client's end went
     * to is the session's until it closes: term_to_server.) */
    if (status == 'I' && !s->trk_probe && !s->term_sent)
        *after = AFTER_RELEASE;
}

/* A ReadyForQuery on a server a cancel went to unconfirmed (cancel.c,
 * lost_check): unless it gives the server back now (closed then, being
 * retired), the session ends once this ReadyForQuery is out, before the
 * client's next request runs where the cancel may yet land. */
static void on_ready(struct pgw_session *s, char status, enum scan_after *after)
{
    ready_step(s, status, after);
    bool kept = *after == AFTER_NONE || (*after == AFTER_RELEASE && s->cancel_inflight);
    if (kept && s->state == PGW_SS_LINKED && pgw_cancel_lost(s))
        *after = AFTER_CANCEL_LOST;
}

/* The length of the server message at p with its type byte, or 0 after
 * closing the session: an invalid length loses the stream, so nothing on
 * this server is handed on either. */
static uint32_t server_msg_total(struct pgw_session *s, const uint8_t *p)
{
    uint32_t mlen = pgw_get_u32(p + 1);
    if (mlen < 4 || mlen > MSG_MAX) {
        s->server->user_pipe_broken = true;
        pgw_session_close(s, "08P01", "server sent an invalid message length");
        return 0;
    }
    if (mlen >= (uint32_t)s->px->cfg->max_packet_size) {     /* (type byte too) */
        s->server->user_pipe_broken = true;     /* the rest of it is still coming */
        pgw_session_close(s, "08P01", "server message of %u bytes is larger than "
                          "max_packet_size (%d)", mlen + 1, s->px->cfg->max_packet_size);
        return 0;
    }
    return mlen + 1;
}

/* Room in sbuf for the whole message of `total` bytes at parsed (to
 * inspect it); false after closing the session. */
static bool server_msg_room(struct pgw_session *s, char type, uint32_t total)
{
    struct pgw_iobuf *b = s->sbuf;
    uint64_t need = (uint64_t)(b->parsed - b->sent) + total;
    if (need <= b->cap)
        return true;
    if (need > PGW_IOBUF_MAX) {
        s->server->user_pipe_broken = true;
        pgw_session_close(s, "08P01", "server message too large to inspect (type %c)", type);
        return false;
    }
    if (!pgw_iobuf_reserve(s->px, &s->sbuf, (uint32_t)need)) {
        s->server->user_pipe_broken = true;
        pgw_session_close(s, "53200", "out of memory to inspect a server message (type %c)",
                          type);
        return false;
    }
    return true;
}

/* The reply in place of a tainted client's own (pipe_fail_own): the
 * error, then its ReadyForQuery. */
static bool pipe_failed_reply(struct pgw_session *s, enum scan_after *after)
{
    struct pgw_wbuf w;
    pgw_wbuf_init(&w);
    pgw_wire_error(&w, "ERROR", "08006", "%s",
                   "query queued on a server behind another client's, which changed the "
                   "server's settings or was canceled: its result is not yours to see; it may "
                   "have run");
    pgw_wire_ready(&w, 'I');
    bool ok = !w.failed && pipe_room(s->px, &s->sbuf, (uint32_t)w.len) &&
              pgw_iobuf_insert(s->sbuf, s->sbuf->parsed, w.data, w.len);
    pgw_wbuf_deinit(&w);
    if (!ok) {
        pgw_session_close(s, "53200", "out of memory");
        return false;
    }
    s->px->total_pipeline_failed++;
    char qd[200], qu[200];
    pgw_warn("pipeline_failed", "client=%s db=%s user=%s reason=\"settings changed or cancel "
             "ahead of its query\"", s->addr_text, pgw_log_quote(qd, sizeof(qd), s->database),
             pgw_log_quote(qu, sizeof(qu), s->user));
    s->pipe_fail_own = false;
    if (s->ps_on)
        pgw_ps_request_dropped(s);       /* its reply never passed */
    on_ready(s, 'I', after);
    return true;
}

/* Drop what s skips ahead of its own reply (pipe_skip, pipe_drop): the
 * rest of the replies of clients that left.  1: moved on, 0: needs more
 * bytes, -1: the session was closed. */
static int pipe_drop_step(struct pgw_session *s, enum scan_after *after)
{
    struct pgw_iobuf *b = s->sbuf;
    uint32_t avail = b->len - b->parsed;
    if (s->pipe_drop > 0) {
        uint32_t n = avail < s->pipe_drop ? avail : s->pipe_drop;
        pgw_iobuf_cut(b, b->parsed, n);
        s->pipe_drop -= n;
        return 1;
    }
    if (avail < PGW_MSG_HDR)
        return 0;
    const uint8_t *p = b->data + b->parsed;
    char type = (char)p[0];
    uint32_t total = server_msg_total(s, p);
    if (!total)
        return -1;
    uint32_t mlen = total - 1;
    if (type != PGW_BE_READY && type != PGW_BE_PARAM_STATUS) {
        uint32_t n = avail < total ? avail : total;
        pgw_iobuf_cut(b, b->parsed, n);
        s->pipe_drop = total - n;
        return 1;
    }
    if (total > avail)
        return server_msg_room(s, type, total) ? 0 : -1;
    if (type == PGW_BE_PARAM_STATUS) {
        /* Another client's change: the server has it, this client's own
         * query runs with it. */
        const char *name = (const char *)p + PGW_MSG_HDR;
        const uint8_t *ne = memchr(name, 0, mlen - 4);
        if (ne && ne + 1 < p + total && memchr(ne + 1, 0, (size_t)(p + total - ne - 1))) {
            const char *value = (const char *)ne + 1;
            const char *have = pgw_params_get(&s->server->params, name);
            if (!have || strcmp(have, value) != 0) {
                if (!s->pipe_fail_own) {
                    s->pipe_fail_own = true;
                    s->pipe_skip++;
                }
                pgw_relay_pipe_taint(s->server);
                record_reported(s->server, name, value);
            }
        }
        pgw_iobuf_cut(b, b->parsed, total);
        return 1;
    }
    pgw_iobuf_cut(b, b->parsed, total);
    s->pipe_skip--;
    if (s->pipe_waits) {
        if (!pipe_others_ahead(s))
            pipe_query_starts(s);        /* the server is on its query now */
        else                             /* on that of the next that left */
            s->pipe_left_at = pipe_left_deadline(s->pipe_left_qt, pgw_mono_now(s->px->loop));
        pgw_session_arm_timer(s);
    }
    if (s->pipe_skip == 0 && s->pipe_fail_own && !pipe_failed_reply(s, after))
        return -1;
    pipe_cancel_due(s);
    return s->state == PGW_SS_CLOSING ? -1 : 1;
}

static bool pipe_more(const struct pgw_session *s)
{
    return s->server->user_queued > 0 || s->server->user_tail_skip > 0;
}

/* The CommandComplete tag of a CREATE (n bytes at tag past "CREATE ", its
 * NUL counted): did it make an object of a schema, which PostgreSQL puts
 * in pg_temp when none is written and the search_path has pg_temp first?
 * A table, view, sequence, function, type..., an extension's objects too
 * (CREATE EXTENSION: the first schema of the search_path), and what a tag
 * not listed names; those listed are in no schema. */
static bool create_in_schema(const char *tag, uint32_t n)
{
    static const char *const global[] = {
        "ACCESS METHOD", "CAST", "DATABASE", "EVENT TRIGGER", "FOREIGN DATA WRAPPER",
        "LANGUAGE", "PUBLICATION", "ROLE", "SCHEMA", "SERVER", "SUBSCRIPTION", "TABLESPACE",
        "TRANSFORM", "USER MAPPING", NULL };
    for (const char *const *g = global; *g; g++)
        if (n == strlen(*g) + 1 && memcmp(tag, *g, n) == 0)
            return false;
    return true;
}

/* Transaction and statement mode: a WITH HOLD cursor and a temporary
 * object outlive the transaction on the server, where the next client the
 * pool lends it to could read them by name.  The tag of what made one,
 * with a word in the client's text that says so, marks the server for the
 * cleanup the pool runs when it is given back (pgw_pool_release):
 * "DECLARE CURSOR" with HOLD; a tag of an object in a schema ("CREATE
 * TABLE", "CREATE VIEW"..., not "CREATE ROLE": create_in_schema), and
 * "SELECT n" of SELECT INTO and CREATE TABLE AS, with CREATE or INTO.  No
 * word TEMP is needed: with pg_temp first in the search_path PostgreSQL
 * puts an object made with no schema written in pg_temp, and pgwharf
 * cannot know the search_path (a SET LOCAL, ALTER ROLE ... SET, a
 * function's set_config() or SET clause; a server that reports it,
 * PostgreSQL 18, does so at ReadyForQuery, after the CREATE, and never a
 * SET LOCAL's).  DDL is rare where a pool is: a round trip for it.  A
 * cursor without HOLD, an ordinary SELECT, INSERT INTO cost nothing.  A
 * CREATE TEMP TABLE ... ON COMMIT DROP costs the cleanup as any other
 * (what runs in its transaction may keep a part of its table: a serial's
 * sequence OWNED BY NONE, a function a CREATE folds -- session 53).
 * (What a function creates has no tag of its own: not seen.)  tag: cut
 * bytes. */
static void note_leftover(struct pgw_session *s, const char *tag, uint32_t n)
{
    static const char declare[] = "DECLARE CURSOR", create[] = "CREATE ", select[] = "SELECT ",
                      do_[] = "DO", explain[] = "EXPLAIN", import[] = "IMPORT FOREIGN SCHEMA";
    uint32_t w = s->state_words;
    if (!s->px->cfg->server_reset_session_state || !w)
        return;
    /* (A DO block's CREATE, and EXPLAIN ANALYZE of CREATE TABLE ... AS or
     * SELECT ... INTO, which runs it: their own tags.  A DO block's
     * EXECUTE 'DECLARE ... WITH HOLD' too, and it may do both.  IMPORT
     * FOREIGN SCHEMA ... INTO pg_temp: temporary foreign tables.) */
    bool do_block = n == sizeof(do_) && memcmp(tag, do_, sizeof(do_)) == 0;
    bool makes = (w & PGW_WORDS_MAKE) &&
                 ((n > sizeof(select) && memcmp(tag, select, sizeof(select) - 1) == 0) ||
                  do_block ||
                  (n == sizeof(explain) && memcmp(tag, explain, sizeof(explain)) == 0) ||
                  (n == sizeof(import) && memcmp(tag, import, sizeof(import)) == 0) ||
                  (n > sizeof(create) && memcmp(tag, create, sizeof(create) - 1) == 0 &&
                   create_in_schema(tag + sizeof(create) - 1, n - (uint32_t)sizeof(create) + 1)));
    if ((w & PGW_WORDS_HOLD) &&
        (do_block || (n == sizeof(declare) && memcmp(tag, declare, sizeof(declare)) == 0)))
        s->server->user_leftover |= PGW_LEFTOVER_CURSOR;
    if (makes)
        s->server->user_leftover |= PGW_LEFTOVER_TEMP;
}

/* Transaction and statement mode: LISTEN lives in the server connection,
 * and PostgreSQL sends a notification to whoever holds the server then (at
 * the end of that client's transaction, or while it waits).  The client
 * whose LISTEN the relay saw (CommandComplete "LISTEN") gets them while it
 * holds the server, which is closed when given back, so no other client
 * ever holds a listening server; a notification that reaches another
 * client (a LISTEN run inside a function, which has no tag of its own) is
 * dropped and the server closed likewise.  msg is a whole CommandComplete
 * or NotificationResponse; false: drop it. */
static bool listen_check(struct pgw_session *s, char type, const uint8_t *msg, uint32_t total)
{
    static const char tag[] = "LISTEN", discard[] = "DISCARD ALL", dealloc[] = "DEALLOCATE ALL",
                      prepare[] = "PREPARE";
    struct pgw_server *srv = s->server;
    if (type == PGW_BE_COMMAND_COMPLETE) {
        if (total - PGW_MSG_HDR == sizeof(tag) &&
            memcmp(msg + PGW_MSG_HDR, tag, sizeof(tag)) == 0) {
            srv->user_listen = s->id;
            pgw_server_retire(srv, "LISTEN in transaction pooling mode");
        } else if (s->notify && total - PGW_MSG_HDR == sizeof(discard) &&
                   memcmp(msg + PGW_MSG_HDR, discard, sizeof(discard)) == 0) {
            pgw_notify_discard(s);       /* UNLISTEN * is part of it */
        } else if (s->notify && total - PGW_MSG_HDR == sizeof(dealloc) &&
                   memcmp(msg + PGW_MSG_HDR, dealloc, sizeof(dealloc)) == 0) {
            pgw_notify_deallocate_all(s);
        }
        if (s->notify)
            pgw_notify_tx_tag(s, msg, total);    /* COMMIT, ROLLBACK, SAVEPOINT... */
        /* (Not when a named Parse sent after it may have been kept
         * before this answer came: that statement is there.) */
        bool drops_all = (total - PGW_MSG_HDR == sizeof(discard) &&
                          memcmp(msg + PGW_MSG_HDR, discard, sizeof(discard)) == 0) ||
                         (total - PGW_MSG_HDR == sizeof(dealloc) &&
                          memcmp(msg + PGW_MSG_HDR, dealloc, sizeof(dealloc)) == 0);
        if (drops_all)
            srv->user_sql_plain_n = 0;           /* (a PREPARE behind it: at its tag) */
        if ((srv->user_stmt_n > 0 || srv->user_stmt_lost) && !s->stmt_kept && drops_all)
            stmt_words_clear(srv);               /* its named statements are gone */
        if (total - PGW_MSG_HDR == sizeof(prepare) &&
            memcmp(msg + PGW_MSG_HDR, prepare, sizeof(prepare)) == 0 &&
            s->px->cfg->server_reset_session_state)
            stmt_sql_prepared(s);
        note_leftover(s, (const char *)msg + PGW_MSG_HDR, total - PGW_MSG_HDR);
        return true;
    }
    if (srv->user_listen == s->id)
        return !s->notify || pgw_notify_server_notification(s, msg, total);
    char qd[200], qu[200];
    pgw_warn("notification_dropped", "client=%s db=%s user=%s reason=\"LISTEN of another client "
             "on its server (transaction pooling mode)\"", s->addr_text,
             pgw_log_quote(qd, sizeof(qd), s->database), pgw_log_quote(qu, sizeof(qu), s->user));
    pgw_server_retire(srv, "a notification for another client (LISTEN in transaction pooling "
                      "mode)");
    return false;
}

/* A server message the client gets, other than ReadyForQuery.  Which
 * message an error answers, and so whether the server now skips a Query
 * the client sent or sends, prepared.c knows when it is on; else the
 * tracker works it out. */
static void track_backend(struct pgw_session *s, char type)
{
    bool doubt = s->track.copy_doubt;
    close_batch_reply(s, type);
    if (type == PGW_BE_ERROR && !s->ps_on)
        pgw_track_error(&s->track);
    if (type == PGW_BE_ERROR && s->notify)
        pgw_notify_tx_error(s);          /* a LISTEN that ran in its transaction */
    if (type == PGW_BE_ERROR && s->stmt_forget_n)
        s->stmt_forget_err = true;       /* a Close may have been skipped */
    if (type == PGW_BE_COPY_IN || type == PGW_BE_COPY_BOTH)
        s->copy_ins++;
    /* The client's last request other than copy messages was answered
     * up to itself: it is this COPY's (a later one would wait behind the
     * COPY), its answers all foreseen (copy_abort_due).  (A link since
     * restarts req_done: read as still behind, as before.) */
    if (type == PGW_BE_COPY_IN && s->copy_mixed &&
        (int32_t)(s->track.req_done - s->copy_mixed_seq) >= 0)
        s->copy_mixed = false;
    if (type == PGW_BE_COPY_IN)
        s->srv_copy_in = true;
    else if (type == PGW_BE_ERROR || type == PGW_BE_COMMAND_COMPLETE)
        s->srv_copy_in = false;
    pgw_track_backend(&s->track, type);
    /* The client's next request settled a failed COPY's count (track.h,
     * after): the server is on it now, timed from here (query_timeout; not
     * timed while the count was unsure). */
    if (doubt && !s->track.copy_doubt && s->track.sync_out > 0) {
        s->query_floor = pgw_mono_now(s->px->loop);
        if (s->query_start == 0)
            s->query_start = s->query_floor;
        pgw_session_arm_timer(s);
    }
    /* The Syncs the COPY reads are prepared.c's to tell (ps_copy_syncs):
     * the tracker's CopyDone must not take them back a second time. */
    if (s->ps_on && (type == PGW_BE_COPY_IN || type == PGW_BE_COPY_BOTH))
        s->track.copy_in = false;
}

/* Syncs a COPY FROM STDIN read as its own, which the tracker counted as
 * requests still to be answered: with them the server never went back to
 * the pool, held by its client, idle, until it left. */
static void ps_copy_syncs(struct pgw_session *s)
{
    int n = pgw_ps_copy_syncs_read(s);
    if (n > 0)
        s->track.sync_out = s->track.sync_out > n ? s->track.sync_out - n : 0;
}

/* An ErrorResponse at p (have of its bytes here) the client gets: when
 * its severity is FATAL or PANIC the server closes next, and the client
 * has its error, as from PostgreSQL (s->server_fatal).  The severity is
 * read from the fields at hand: V (never translated), else S. */
static void note_server_error(struct pgw_session *s, const uint8_t *p, uint32_t have)
{
    const uint8_t *f = p + PGW_MSG_HDR, *end = p + have;
    const char *sev = NULL, *code = "";
    while (f < end && *f) {
        const uint8_t *nul = memchr(f + 1, 0, (size_t)(end - f - 1));
        if (!nul)
            break;
        if (*f == 'V' || (*f == 'S' && !sev))
            sev = (const char *)f + 1;
        else if (*f == 'C' && nul - f - 1 == 5)
            code = (const char *)f + 1;
        f = nul + 1;
    }
    if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
        memcpy(s->server_fatal, code[0] ? code : "08006", 6);
}

/* A ReadyForQuery or CloseComplete (whole at sbuf's parsed) while the
 * probe is out (track_probe_send).  Everything that can come before its
 * replies is ReadyForQuerys of one status (pgw_track_probe_due): the first to come
 * is dropped for the probe's first (they are alike), the CloseComplete is
 * its own, and so is the ReadyForQuery after it: then everything the
 * client sent before the probe is answered.  Returns true when the
 * message was the probe's (dropped). */
static bool track_probe_reply(struct pgw_session *s, char type, uint32_t total,
                              enum scan_after *after)
{
    struct pgw_iobuf *b = s->sbuf;
    if (type == PGW_BE_READY && s->trk_probe == TRK_PROBE_FIRST) {
        s->trk_probe = TRK_PROBE_OUT;
    } else if (type == PGW_BE_CLOSE_COMPLETE && s->trk_probe == TRK_PROBE_OUT) {
        s->trk_probe = TRK_PROBE_LAST;
    } else if (type == PGW_BE_READY && s->trk_probe == TRK_PROBE_LAST) {
        char status = total > PGW_MSG_HDR ? (char)b->data[b->parsed + PGW_MSG_HDR] : 'I';
        s->trk_probe = TRK_PROBE_NONE;
        pgw_track_probed(&s->track, status);
        s->query_start = s->query_floor = 0;
        s->copy_ins = s->copy_ends = 0;  /* (as on_ready: nothing outstanding) */
        if (status == 'I' && s->mode != PGW_POOL_SESSION && s->state == PGW_SS_LINKED)
            *after = AFTER_RELEASE;
    } else {
        return false;
    }
    pgw_iobuf_cut(b, b->parsed, total);
    return true;
}

/* After a failed COPY FROM STDIN whose count of replies due is unsure
 * (pgw_track_probe_due): nothing of the client's is unread, unsent or
 * half-relayed either way, and no other client waits on this server's
 * replies (server_pipeline_depth). */
static bool track_probe_quiet(const struct pgw_session *s)
{
    return s->server && s->state == PGW_SS_LINKED && s->mode != PGW_POOL_SESSION &&
           !s->trk_probe && s->cskip == 0 && s->sskip == 0 && s->swallow == 0 &&
           s->pipe_skip == 0 && s->pipe_drop == 0 && !s->pipe_stop && !s->pipe_srv &&
           !pipe_more(s) && s->cancel_inflight == 0 && !s->client_eof && !s->terminating &&
           !s->srv_write_blocked && !s->release_held &&
           (!s->cbuf || s->cbuf->sent == s->cbuf->len) &&
           (!s->sbuf || s->sbuf->parsed == s->sbuf->len);
}

/* The probe: a Sync (the server skips nothing after it, should it have
 * been skipping after all), a Close of a portal no client has (a no-op
 * PostgreSQL answers with CloseComplete, in a failed transaction block
 * too; not the unnamed portal, which in that block is the failed COPY's:
 * a Describe of it then got 34000 where PostgreSQL answers NoData,
 * difftest), a Sync.
 * What the client sends meanwhile waits (client_data_step).  Not sent
 * when out of memory: the server then stays with its client as before. */
static void track_probe_send(struct pgw_session *s)
{
    /* Sync, Close of OWN_NAME's portal (length 4 + 'P' + the name and its
     * NUL = 14), Sync; sizeof(m) - 1 leaves the literal's own NUL out. */
    static const char m[] = "S\0\0\0\4" "C\0\0\0\16" "P" OWN_NAME "\0" "S\0\0\0\4";
    _Static_assert(4 + 1 + sizeof(OWN_NAME) == 14 && sizeof(m) - 1 == 5 + 15 + 5,
                   "the Close's length byte");
    if (!cbuf_own(s, m, sizeof(m) - 1))
        return;
    s->trk_probe = TRK_PROBE_FIRST;
    pgw_relay_flush_server(s);
}

/* Send the probe if it is due and the client quiet: after each server
 * read, and when what kept the client from being quiet ends without one
 * (a cancel done, a blocked write to the server through).  True if sent. */
bool pgw_relay_track_probe(struct pgw_session *s)
{
    if (s->ps_on || !pgw_track_probe_due(&s->track) || !track_probe_quiet(s))
        return false;
    track_probe_send(s);
    return true;
}

/* An ErrorResponse at p (have of its bytes here) past the ReadyForQuery
 * that gives the server back (transaction and statement mode, nothing of
 * the client's outstanding, no client queued behind): the server's own as
 * it goes (a FATAL: pg_terminate_backend, idle_session_timeout), not the
 * client's, whose request is answered.  The server closes at its release,
 * as an idle server that says anything does (server.c), and the caller
 * drops the error.  It reached the client after its ReadyForQuery, which
 * stayed connected (asyncpg's next call then hung), and a client waiting
 * for the pool's server got the dying one (hunt: backend faults).  False
 * where the error is the client's. */
static bool error_past_release(struct pgw_session *s, const uint8_t *p, uint32_t have)
{
    if (s->mode == PGW_POOL_SESSION || s->state != PGW_SS_LINKED || !s->server ||
        pipe_more(s) || release_mode_scanned(s) == PGW_RELEASE_CLOSE)
        return false;
    struct pgw_wire_err_fields f;
    char buf[512], qr[700];
    uint32_t n = have - PGW_MSG_HDR < sizeof(buf) - 1 ? have - PGW_MSG_HDR : sizeof(buf) - 1;
    memcpy(buf, p + PGW_MSG_HDR, n);
    buf[n] = 0;           /* a truncated body still ends in NUL */
    bool parsed = pgw_wire_parse_error((const uint8_t *)buf, n + 1, &f) == 0;
    pgw_info("server_error_after_release", "client=%s pid=%d sqlstate=%s reason=%s",
             s->addr_text, s->server->backend_pid, parsed ? f.sqlstate : "?",
             pgw_log_quote(qr, sizeof(qr), parsed ? f.message : "(unreadable)"));
    pgw_server_retire(s->server, "an error from the server after its last reply");
    return true;
}

/* n ReadyForQuerys held back (copy_abort_reply) to the client, at the
 * server's parse position. */
static bool copy_abort_give_z(struct pgw_session *s, uint32_t n)
{
    uint8_t z[6] = {PGW_BE_READY, 0, 0, 0, 5, (uint8_t)s->copy_abort_zs};
    for (; n > 0; n--) {
        if (!pgw_iobuf_reserve(s->px, &s->sbuf, s->sbuf->len - s->sbuf->sent + sizeof(z)) ||
            !pgw_iobuf_insert(s->sbuf, s->sbuf->parsed, z, sizeof(z)))
            return false;               /* (parsed moves past it) */
    }
    return true;
}

bool pgw_relay_copy_abort_lost(struct pgw_session *s)
{
    /* A client that sent a Terminate (or a refused message) there and
     * closed its socket without reading: the COPY's own error, written
     * to it, failed, and closed the server that copy_abort_leave keeps
     * for a client that just leaves. */
    if (s->copy_abort == COPY_ABORT_NONE || s->state != PGW_SS_LINKED || !s->sbuf)
        return false;
    s->copy_abort_lost = true;
    struct pgw_iobuf *b = s->sbuf;
    pgw_iobuf_cut(b, b->sent, pgw_iobuf_out_end(b) - b->sent);
    return true;
}

/* A NotificationResponse while pgwharf ends the client's COPY (the
 * server sends one at each ReadyForQuery outside a transaction block: a
 * LISTEN of the session's, or one run inside a function).  PostgreSQL,
 * ending the backend, would have sent the client none; nor is it any
 * other client's: dropped, as where no client owns the server.  In
 * session mode the session ends and server_reset_query (DISCARD ALL's
 * UNLISTEN *) takes the LISTEN away; in transaction mode the rule of
 * listen_check holds -- a server with the client's own LISTEN is retired
 * already, one with another's (a LISTEN inside a function) is now, and
 * the drop logged.  It closed the server (copy_abort_unforeseen). */
static void copy_abort_notification(struct pgw_session *s)
{
    if (s->mode == PGW_POOL_SESSION || s->server->user_listen == s->id)
        return;
    char qd[200], qu[200];
    pgw_warn("notification_dropped", "client=%s db=%s user=%s reason=\"LISTEN of another client "
             "on its server (transaction pooling mode)\"", s->addr_text,
             pgw_log_quote(qd, sizeof(qd), s->database), pgw_log_quote(qu, sizeof(qu), s->user));
    pgw_server_retire(s->server, "a notification for another client (LISTEN in transaction "
                      "pooling mode)");
}

/* A reply copy_abort_reply did not foresee: the server's state is not
 * known, so it is closed, and the session ends as it would have. */
static int copy_abort_unforeseen(struct pgw_session *s)
{
    s->copy_abort = COPY_ABORT_NONE;
    pgw_server_retire(s->server, "an unforeseen reply while pgwharf ended a client's COPY");
    close_terminated(s);
    return -1;
}

/* A server message whole at sbuf's parse position while pgwharf ends the
 * client's COPY (copy_abort_start).  The client gets what PostgreSQL
 * would have sent it: the answers to what it sent before the refused
 * message (the COPY's own error when the COPY failed before that, a bad
 * row), never those of pgwharf's CopyFail, Sync and marker -- the
 * ReadyForQuerys are held back until it is known whose they are.  After
 * the marker's ReadyForQuery everything is answered: the server is at a
 * Sync, nothing outstanding, and the session ends with the FATAL
 * (pgw_relay_eof_check), the server given back as ever.  Anything not
 * foreseen leaves the server to be closed.  Returns -1 when the session
 * was closed, 0 to wait for more, 1 when the message was taken. */
static int copy_abort_reply(struct pgw_session *s)
{
    struct pgw_iobuf *b = s->sbuf;
    uint32_t avail = b->len - b->parsed;
    const uint8_t *p = b->data + b->parsed;
    char type = (char)p[0];
    uint32_t total = server_msg_total(s, p);
    if (!total)
        return -1;
    if (total > avail) {
        if (!server_msg_room(s, type, total))
            return -1;
        return 0;
    }
    /* Its socket failed since.  (A client that left (copy_abort_leave)
     * may have shut down its sending side only, and read on: it gets
     * what PostgreSQL sends it, as one that sent a refused message.) */
    bool gone = s->copy_abort_lost;
    if (type == PGW_BE_READY && total == 6) {
        s->copy_abort_zs = (char)p[5];
        pgw_iobuf_cut(b, b->parsed, total);
        if (s->copy_abort == COPY_ABORT_OUT) {
            s->copy_abort_z++;
            return 1;
        }
        if (s->copy_abort_zs != 'I') {
            /* The marker's says a transaction block is open (the COPY ran
             * in one, which its failure failed): PostgreSQL would have
             * ended the backend there, the block rolled back.  The pool
             * rolls it back once the session ends, under its jobs' bound
             * (server_connect_timeout), and keeps the server: the
             * client's end waits for no round trip of a backend that may
             * be frozen (review r4; the relay's own ROLLBACK here held
             * the client's error and FATAL, unbounded without
             * query_timeout). */
            s->server->user_leftover |= PGW_LEFTOVER_XACT;
        }
        /* The marker's: all is answered. */
        s->copy_abort = COPY_ABORT_NONE;
        pgw_track_probed(&s->track, s->copy_abort_zs);
        if (s->ps_on)
            pgw_ps_link(s);
        s->copy_ins = s->copy_ends = 0;
        s->srv_copy_in = false;
        s->query_start = s->query_floor = 0;
        return 1;
    }
    struct pgw_wire_err_fields f;
    if (type == PGW_BE_ERROR && s->copy_abort == COPY_ABORT_OUT &&
        pgw_wire_parse_error(p + PGW_MSG_HDR, total - PGW_MSG_HDR, &f) == 0 && f.sqlstate &&
        strcmp(f.sqlstate, "34000") == 0 && f.message && strstr(f.message, s->copy_abort_name)) {
        /* The marker's error: the ReadyForQuery before it answers
         * pgwharf's Sync; those before that the client's (lost with
         * the COPY's own error: none are). */
        if (s->copy_abort_z == 0)
            return copy_abort_unforeseen(s);    /* (pgwharf's Sync is answered first) */
        if (!s->copy_abort_ours && !gone && !copy_abort_give_z(s, s->copy_abort_z - 1)) {
            pgw_session_close(s, "53200", "out of memory for a reply to the client");
            return -1;
        }
        s->copy_abort_z = 0;
        s->copy_abort = COPY_ABORT_MARKED;
        b = s->sbuf;
        pgw_iobuf_cut(b, b->parsed, total);
        return 1;
    }
    if (s->copy_abort == COPY_ABORT_OUT && type == PGW_BE_ERROR && !s->copy_abort_ours &&
        pgw_track_copy_fail_error(p + PGW_MSG_HDR, total - PGW_MSG_HDR)) {
        /* pgwharf's CopyFail failed the COPY: PostgreSQL would have sent
         * its error at the refused message (with this one's CONTEXT: the
         * same line), then its FATAL.  (No room for the CONTEXT: none.) */
        s->copy_abort_ours = true;
        if (!gone && pgw_wire_parse_error(p + PGW_MSG_HDR, total - PGW_MSG_HDR, &f) == 0 &&
            *f.context) {
            free(s->copy_abort_where);
            s->copy_abort_where = strdup(f.context);
        }
        pgw_iobuf_cut(b, b->parsed, total);
        return 1;
    }
    /* Else only the COPY's own error (before pgwharf's CopyFail: a bad
     * row, a trigger), a notice or a parameter's new value can come: the
     * client's, after the ReadyForQuerys before them, as they came (none
     * are the client's once the COPY failed at pgwharf's CopyFail).  (A
     * client that sent other requests into its COPY had them fail it:
     * their answers are not foreseen.) */
    if (type == PGW_BE_NOTIFY) {
        copy_abort_notification(s);
        pgw_iobuf_cut(b, b->parsed, total);
        return 1;
    }
    bool ours = s->copy_abort_ours || s->copy_abort == COPY_ABORT_MARKED;
    if (type == PGW_BE_PARAM_STATUS && ours) {
        /* A setting the COPY's failure put back (a SET made in the
         * transaction block it failed), reported at pgwharf's Sync:
         * PostgreSQL, ending at the client's end, sends the client none.
         * The server's record takes it (the next client's settings). */
        note_param(s, p + PGW_MSG_HDR, total - PGW_MSG_HDR);
        pgw_iobuf_cut(b, b->parsed, total);
        return 1;
    }
    if (type != PGW_BE_NOTICE && type != PGW_BE_PARAM_STATUS &&
        (type != PGW_BE_ERROR || ours))
        return copy_abort_unforeseen(s);
    if (!ours && !gone) {
        if (!copy_abort_give_z(s, s->copy_abort_z)) {
            pgw_session_close(s, "53200", "out of memory for a reply to the client");
            return -1;
        }
        s->copy_abort_z = 0;
    }
    b = s->sbuf;
    p = b->data + b->parsed;
    if (type == PGW_BE_ERROR && !gone) {
        note_server_error(s, p, total);
    } else if (type == PGW_BE_PARAM_STATUS) {
        note_param(s, p + PGW_MSG_HDR, total - PGW_MSG_HDR);
    }
    if (gone)
        pgw_iobuf_cut(b, b->parsed, total);     /* (ReadyForQuerys counted) */
    else
        b->parsed += total;
    return 1;
}

/* The open batch was Closes and Flushes alone and all is answered
 * (close_batch_sent): nothing is under way on the server, as after a
 * ReadyForQuery -- the batch is taken for ended, and at 'I' the server
 * goes back.  Not with max_prepared_statements (prepared.c answers a
 * Close of a statement itself, and its own messages go in the batch), nor
 * where the count of replies may be off, nor in session mode. */
static void close_batch_done(struct pgw_session *s, enum scan_after *after)
{
    struct pgw_track *t = &s->track;
    /* With max_prepared_statements on, once prepared.c waits for no
     * answer either, but to Closes it answers itself, which go out right
     * after this reply (pgw_ps_emit), as at a ReadyForQuery (ready_step).
     * The Closes it leaves to the server -- a portal's, the unnamed
     * statement's, a name the client has not Parsed, which close_unknown
     * sends in a transaction -- were taken for under way: a client idle
     * in its transaction after a Close and a Flush never met
     * idle_transaction_timeout. */
    if (s->cb_closes == 0 || s->cb_other || !s->cb_flushed || s->cb_done != s->cb_closes ||
        (s->ps_on && !pgw_ps_closes_only(s)) || s->notify || s->mode == PGW_POOL_SESSION ||
        s->state != PGW_SS_LINKED || s->pipe_skip != 0 || s->pipe_drop != 0 || s->pipe_stop ||
        t->sync_out != 0 || t->fe_open == 0 || t->skip_sync || t->count_high ||
        t->copy_doubt || t->copy || t->bodied || t->ext_unsure || t->mixed_off ||
        s->cskip != 0 || s->sskip != 0 || s->swallow != 0 || s->discard != PGW_DISCARD_NONE)
        return;
    s->cb_closes = 0;
    pgw_track_closes_answered(t);
    s->query_start = 0;
    s->settings_pending = false;
    s->stmt_prep_loose = false;
    if (s->stmt_forget_n || s->stmt_kept)
        stmt_forget_done(s);
    if (t->tx_status == 'I' && !s->trk_probe && !s->term_sent && *after == AFTER_NONE)
        *after = AFTER_RELEASE;
}

/* Scan server messages; returns false when the session was closed. */
static bool scan_server(struct pgw_session *s, enum scan_after *after)
{
    struct pgw_iobuf *b = s->sbuf;
    while (b->parsed < b->len && !s->pipe_stop) {
        if (s->pipe_skip > 0 || s->pipe_drop > 0) {
            int r = pipe_drop_step(s, after);
            if (r < 0)
                return false;
            b = s->sbuf;
            if (r == 0)
                break;
            if (*after == AFTER_RELEASE) {
                s->pipe_stop = pipe_more(s);
                break;
            }
            continue;
        }
        uint32_t avail = b->len - b->parsed;
        if (s->sskip) {
            uint32_t n = avail < s->sskip ? avail : s->sskip;
            b->parsed += n;
            s->sskip -= n;
            if (s->sskip == 0 && s->ps_on && s->swallow == 0) {
                pgw_ps_emit(s);          /* replies held back by this message */
                if (s->state == PGW_SS_CLOSING)
                    return false;
                b = s->sbuf;
            }
            continue;
        }
        if (avail < PGW_MSG_HDR)
            break;
        if (s->copy_abort != COPY_ABORT_NONE) {
            int r = copy_abort_reply(s);
            if (r < 0)
                return false;
            b = s->sbuf;
            if (r == 0)
                break;
            continue;
        }
        const uint8_t *p = b->data + b->parsed;
        char type = (char)p[0];
        /* Replies of pgwharf's own that go before this message. */
        if (s->ps_on && s->swallow == 0 && pgw_ps_resolve(s, type)) {
            if (s->state == PGW_SS_CLOSING)
                return false;
            b = s->sbuf;
            continue;
        }
        uint32_t total = server_msg_total(s, p);
        if (!total)
            return false;
        if (type == PGW_BE_ERROR && (*after == AFTER_RELEASE || s->release_held) &&
            error_past_release(s, p, avail < total ? avail : total)) {
            b->len = b->parsed;
            break;
        }
        if (s->trk_probe && (type == PGW_BE_READY || type == PGW_BE_CLOSE_COMPLETE)) {
            if (total > avail)
                break;                   /* (6 or 5 bytes: the rest comes) */
            if (track_probe_reply(s, type, total, after))
                continue;                /* (what follows is scanned as ever) */
        }
        uint32_t mlen = total - 1;
        bool ps = s->ps_on && s->swallow == 0;
        bool listen = s->mode != PGW_POOL_SESSION && s->swallow == 0 &&
                      (type == PGW_BE_NOTIFY || type == PGW_BE_COMMAND_COMPLETE);
        /* An error after a CopyFail may prove the COPY read every Sync
         * before it (track.h, sync_fail_back): read whole to tell. */
        bool copy_fail = type == PGW_BE_ERROR && !s->ps_on && s->swallow == 0 &&
                         pgw_track_copy_fail_due(&s->track);
        bool whole = type == PGW_BE_READY || type == PGW_BE_PARAM_STATUS || s->swallow > 0 ||
                     listen || copy_fail || (ps && pgw_ps_backend_wants_whole(s, type));
        /* An error too large to hold (one quoting a huge input value)
         * streams through as PostgreSQL sent it, counted all the same: the
         * statement name it may quote stays pgwharf's (and a CopyFail's
         * Syncs stay counted). */
        if (whole && (ps || copy_fail) && type == PGW_BE_ERROR &&
            (b->parsed - b->sent) + total > PGW_IOBUF_MAX)
            whole = false;
        if (!whole) {
            if (type == PGW_BE_ERROR && s->swallow == 0) {
                note_server_error(s, p, avail < total ? avail : total);
                s->answered++;           /* the request is over (cancel.c), as below */
            }
            track_backend(s, type);
            close_batch_done(s, after);
            if (ps) {
                pgw_ps_backend(s, type, NULL, total);
                ps_copy_syncs(s);
            }
            uint32_t n = avail < total ? avail : total;
            b->parsed += n;
            s->sskip = total - n;
            if (ps && s->sskip == 0) {
                pgw_ps_emit(s);
                if (s->state == PGW_SS_CLOSING)
                    return false;
                b = s->sbuf;
            }
            continue;
        }
        if (total > avail) {
            if (!server_msg_room(s, type, total))
                return false;
            break;
        }
        if (listen && !listen_check(s, type, p, total)) {
            pgw_iobuf_cut(b, b->parsed, total);
            continue;
        }
        bool drop = s->swallow > 0;
        if (ps && type == PGW_BE_ERROR) {
            if (!pgw_ps_backend_error(s, &total))
                return false;
            b = s->sbuf;
            p = b->data + b->parsed;
            mlen = total - 1;
        }
        if (ps) {
            drop = pgw_ps_backend(s, type, p, total);
            ps_copy_syncs(s);
            /* The probe's CloseComplete (pgw_ps_probe_idle): with nothing
             * left outstanding the server is free, as at a ReadyForQuery. */
            if (pgw_ps_probe_ended(s) && s->mode != PGW_POOL_SESSION &&
                s->state == PGW_SS_LINKED && pgw_track_idle(&s->track) &&
                pgw_ps_idle(s))
                *after = AFTER_RELEASE;
        }
        if (copy_fail && pgw_track_copy_fail_error(p + PGW_MSG_HDR, total - PGW_MSG_HDR))
            pgw_track_copy_failed(&s->track);
        if (!drop && type != PGW_BE_READY) {
            track_backend(s, type);
            close_batch_done(s, after);
        }
        if (!drop && type == PGW_BE_ERROR) {
            note_server_error(s, p, total);
            /* Nothing more of the request runs (up to its Sync): a cancel
             * the client sends on reading this is for the next one, even
             * before the ReadyForQuery behind it is read (cancel.c). */
            s->answered++;
        }
        if (type == PGW_BE_READY) {
            if (s->swallow > 0) {
                sync_answered(s);
                bool hold = s->sync_hold;
                if (--s->swallow == 0)
                    s->sync_hold = false;
                if (s->swallow == 0 && s->state == PGW_SS_LOGIN_SYNC)
                    *after = AFTER_LOGIN;
                else if (s->swallow == 0 && s->state == PGW_SS_LINKED && hold)
                    s->sync_resume = true;   /* (server_data: sync_done) */
                else if (s->swallow == 0)
                    pipe_cancel_due(s);      /* a cancel held while the SETs ran */
            } else if (!drop) {         /* (dropped: a probe's, prepared.c) */
                /* It ends a transaction whose LISTEN the listening server
                 * has yet to run: it waits, and all behind it (notify.c
                 * lifts the hold). */
                if (s->notify && pgw_notify_tx_ready(s, mlen >= 5 ? (char)p[5] : 'I') &&
                    !b->held) {
                    b->held = true;
                    b->hold = b->parsed;
                }
                on_ready(s, mlen >= 5 ? (char)p[5] : 'I', after);
                if (*after == AFTER_STMT_ERROR) {
                    /* The client gets the error in place of this
                     * ReadyForQuery, so it reports it as the result. */
                    pgw_iobuf_cut(b, b->parsed, total);
                    b->len = b->parsed;
                    break;
                }
            }
        } else if (type == PGW_BE_PARAM_STATUS) {
            note_param(s, p + 5, mlen - 4);
        } else if (type == PGW_BE_ERROR && drop && s->swallow > 0) {
            struct pgw_wire_err_fields f;
            if (pgw_wire_parse_error(p + 5, mlen - 4, &f) == 0) {
                char qr[700];
                pgw_warn("param_sync", "client=%s sqlstate=%s reason=%s", s->addr_text,
                         f.sqlstate, pgw_log_quote(qr, sizeof(qr), f.message));
                if (s->swallow > 0)
                    param_sync_failed(s, &f);
            }
        }
        if (drop)
            pgw_iobuf_cut(b, b->parsed, total);
        else
            b->parsed += total;
        if (*after == AFTER_RELEASE && pipe_more(s)) {
            s->pipe_stop = true;     /* the rest is the queued clients' */
            if (ps)
                pgw_ps_emit(s);
            break;
        }
        if (*after == AFTER_CANCEL_LOST) {
            b->len = b->parsed;      /* what ran after it: the cancel may hit it */
            if (ps)
                pgw_ps_emit(s);
            break;
        }
        if (ps) {
            pgw_ps_emit(s);
            if (s->state == PGW_SS_CLOSING)
                return false;
            b = s->sbuf;
        }
    }
    return true;
}

static void after_scan(struct pgw_session *s, enum scan_after after)
{
    switch (after) {
    case AFTER_LOGIN:
        if (s->login_refusal) {
            s->close_detail = s->login_refusal->detail;      /* as PostgreSQL's FATAL */
            pgw_session_close(s, s->login_refusal->sqlstate, "%s", s->login_refusal->message);
        } else if (s->sync_failed) {
            login_sync_again(s);
        } else {
            welcome(s);
        }
        break;
    case AFTER_RELEASE:
        if (s->cancel_inflight)
            break;          /* cancel.c releases it when the cancel is done */
        s->release_held = true;
        pgw_relay_release_if_clean(s);
        if (s->server)
            pgw_session_arm_timer(s);
        break;
    case AFTER_STMT_ERROR:
        pgw_session_close(s, "08P01", "transaction blocks not allowed in statement pooling mode");
        break;
    case AFTER_FAST_CLOSE:
        fast_close(s);
        break;
    case AFTER_CANCEL_LOST:
        pgw_cancel_lost_close(s);
        break;
    default:
        break;
    }
}

void pgw_relay_server_readable(struct pgw_session *s)
{
    struct pgw_server *srv = s->server;
    struct ev_loop *loop = s->px->loop;
    if (!srv)
        return;
    if (!s->sbuf && !(s->sbuf = pgw_iobuf_get(s->px))) {
        pgw_session_close(s, "53200", "out of memory");
        return;
    }
    struct pgw_iobuf *b = s->sbuf;
    if (b->len == b->cap)
        pgw_iobuf_compact(b);
    if (b->len == b->cap && b->held && s->notify) {
        /* Held behind a ReadyForQuery (notify.c): it would never drain. */
        pgw_notify_hold_give_up(s);
        if (s->state == PGW_SS_CLOSING || s->server != srv || !s->sbuf)
            return;
        b = s->sbuf;
        if (b->len == b->cap)
            pgw_iobuf_compact(b);
    }
    if (b->len == b->cap) {
        ev_io_stop(loop, &srv->user_r);   /* the client is slow: wait for it */
        return;
    }
    bool want_write = false;
    ssize_t n = pgw_server_read(srv, b->data + b->len, b->cap - b->len, &want_write);
    if (n == PGW_EAGAIN)
        return;
    if (n <= 0) {
        srv->user_pipe_broken = true;      /* nothing is handed on */
        pgw_pool_server_lost(srv);
        if (s->pipe_waits) {
            pipe_lost_ahead(s);             /* (server_pipeline_depth) */
            return;
        }
        if (s->term_sent && !s->server_fatal[0]) {
            /* The server ended at the client's Terminate (term_to_server):
             * the client gets what came before, then the close, as from
             * PostgreSQL. */
            s->sbuf->held = false;
            if (s->sbuf->sent < s->sbuf->parsed)
                pgw_session_flush_client(s);
            if (s->state != PGW_SS_CLOSING)
                pgw_session_close(s, NULL, "client terminated");
            return;
        }
        if (s->server_fatal[0]) {          /* the client has the server's FATAL */
            s->sbuf->held = false;         /* (behind a held ReadyForQuery: it goes first) */
            if (s->sbuf->sent < s->sbuf->parsed)
                pgw_session_flush_client(s);
            pgw_session_close(s, s->server_fatal, "the server closed the connection after "
                              "its FATAL error");
            return;
        }
        pgw_session_close(s, "08006", "server closed the connection unexpectedly");
        return;
    }
    b->len += (uint32_t)n;
    s->last_activity = pgw_mono_now(loop);
    /* TLS: the rest of a decrypted record never makes the fd readable. */
    if (srv->ssl && pgw_server_pending(srv) > 0)
        ev_feed_event(loop, &srv->user_r, EV_READ);
    if (!s->pipe_stop)
        server_data(s);
}

/* The SETs of sync_params are all answered; the client's request waited
 * (client_data_step).  If one failed (a cancel from outside, a value the
 * server refuses), those still needed go again, at most SYNC_TRIES rounds
 * at a link: then the client is told, never its request run with another
 * client's settings.  Else the request goes now, and a cancel held while
 * the SETs ran after it.  False when s was closed. */
static bool sync_done(struct pgw_session *s)
{
    if (s->sync_failed) {
        s->sync_failed = false;
        if (++s->sync_tries >= SYNC_TRIES) {
            /* (The server's words: "permission denied to set role...") */
            pgw_session_close(s, s->sync_fail_state,
                              "could not restore this session's parameters on a server "
                              "(a SET failed %d times)%s%s", SYNC_TRIES,
                              s->sync_fail_msg ? ": " : "",
                              s->sync_fail_msg ? s->sync_fail_msg : "");
            return false;
        }
        if (!sync_params(s)) {
            pgw_session_close(s, "53200", "out of memory queueing SET for the client's "
                              "parameters");
            return false;
        }
        if (s->swallow > 0) {
            pgw_batch_flush_server(s);   /* (the request waits again) */
            return s->state != PGW_SS_CLOSING;
        }
    }
    s->sync_tries = 0;
    free(s->sync_fail_msg);
    s->sync_fail_msg = NULL;
    if (s->cbuf && s->cbuf->parsed < s->cbuf->len)
        pgw_relay_client_data(s);
    if (s->state != PGW_SS_LINKED || !s->server)
        return s->state != PGW_SS_CLOSING;
    pipe_cancel_due(s);                  /* (PIPE_CANCEL_DELAY: the request started) */
    return true;
}

/* Relay what sbuf holds unscanned from the server, and act on it. */
static void server_data(struct pgw_session *s)
{
    enum scan_after after = AFTER_NONE;
    bool probing = s->trk_probe;
    if (!scan_server(s, &after))
        return;
    pgw_batch_flush_client(s);
    if (s->state == PGW_SS_CLOSING)
        return;
    if (s->sync_resume) {
        s->sync_resume = false;
        if (s->state == PGW_SS_LINKED && s->server && !sync_done(s))
            return;
    }
    if (after != AFTER_NONE)
        after_scan(s, after);
    else if (s->release_held)
        pgw_relay_release_if_clean(s);
    else if (s->track.sync_out == 0)
        pgw_session_arm_timer(s);   /* idle in transaction from now on */
    if (s->ps_wait && s->server && s->state == PGW_SS_LINKED) {
        /* A message waited for answers (PGW_PS_WAIT): some came. */
        s->ps_wait = false;
        pgw_relay_client_data(s);
    }
    /* Only the Syncs of a failed COPY outstanding (and replies pgwharf
     * makes itself), the client waiting: a probe tells which were
     * answered (the server may go back). */
    if (s->ps_on && s->server && s->state == PGW_SS_LINKED && s->mode != PGW_POOL_SESSION &&
        !s->ps_wait && s->track.fe_open == 0 && s->cskip == 0 &&
        s->copy_abort == COPY_ABORT_NONE &&
        (!s->cbuf || s->cbuf->parsed == s->cbuf->len) && pgw_ps_probe_idle(s))
        pgw_relay_flush_server(s);
    /* Likewise with the tracker alone (max_prepared_statements = 0): the
     * count of replies due unsure after a failed COPY, the client quiet. */
    bool sent = pgw_relay_track_probe(s);
    /* The probe's replies are in: what the client sent meanwhile goes on
     * here (given back, the server's release took it up already). */
    if (!sent && probing && !s->trk_probe && s->state == PGW_SS_LINKED && s->server && s->cbuf &&
        s->cbuf->parsed < s->cbuf->len)
        pgw_relay_client_data(s);
    if (s->state == PGW_SS_CLOSING)
        return;
    if (s->client_eof)
        pgw_relay_eof_check(s);
}
