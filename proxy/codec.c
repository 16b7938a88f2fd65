/* codec.c - startup packet and message framing parsers (see codec.h). */
#include "proxy/codec.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "common/pgenc.h"
#include "common/wire.h"

long pgw_startup_need(const uint8_t *buf, size_t len)
{
    if (len < 4)
        return 0;
    uint32_t n = pgw_get_u32(buf);
    if (n < 8 || n > PGW_STARTUP_MAX)
        return -1;
    return (long)n;
}

static int bad(struct pgw_startup *out, const char *why)
{
    out->kind = PGW_STARTUP_BAD;
    out->error = why;
    out->sqlstate = "08P01";
    return PGW_EPROTO;
}

static int parse_v3_params(const uint8_t *p, size_t n, struct pgw_startup *out)
{
    size_t i = 0;
    for (;;) {
        if (i >= n)
            return bad(out, "invalid startup packet layout: expected terminator as last byte");
        if (p[i] == '\0')
            break;
        const uint8_t *ne = memchr(p + i, 0, n - i);
        if (!ne)
            return bad(out, "invalid startup packet layout: unterminated name");
        const char *name = (const char *)p + i;
        i = (size_t)(ne - p) + 1;
        if (i >= n)
            return bad(out, "invalid startup packet layout: missing value");
        const uint8_t *ve = memchr(p + i, 0, n - i);
        if (!ve)
            return bad(out, "invalid startup packet layout: unterminated value");
        const char *value = (const char *)p + i;
        i = (size_t)(ve - p) + 1;
        if (strncmp(name, "_pq_.", 5) == 0) {
            /* Each is named in NegotiateProtocolVersion: one left out
             * there the client would take as accepted. */
            if (out->nprotoopts >= PGW_STARTUP_MAX_PARAMS)
                return bad(out, "too many startup parameters");
            out->protoopts[out->nprotoopts++] = name;
            continue;
        }
        if (strcmp(name, "user") == 0)
            out->user = value;
        else if (strcmp(name, "database") == 0)
            out->database = value;
        if (out->nparams >= PGW_STARTUP_MAX_PARAMS)
            return bad(out, "too many startup parameters");
        out->names[out->nparams] = name;
        out->values[out->nparams] = value;
        out->nparams++;
    }
    if (i + 1 != n)
        return bad(out, "invalid startup packet layout: expected terminator as last byte");
    if (!out->user || !*out->user) {
        bad(out, "no PostgreSQL user name specified in startup packet");
        out->sqlstate = "28000";             /* invalid_authorization_specification */
        return PGW_EPROTO;
    }
    if (!out->database || !*out->database)
        out->database = out->user;
    return 0;
}

int pgw_startup_parse(const uint8_t *pkt, size_t len, struct pgw_startup *out)
{
    memset(out, 0, sizeof(*out));
    if (len < 8 || len > PGW_STARTUP_MAX || pgw_get_u32(pkt) != len)
        return bad(out, "invalid length of startup packet");
    uint32_t code = pgw_get_u32(pkt + 4);
    out->version = code;
    switch (code) {
    case PGW_PROTO_SSLREQ:
        out->kind = PGW_STARTUP_SSL;
        return len == 8 ? 0 : bad(out, "invalid length of SSL request");
    case PGW_PROTO_GSSENCREQ:
        out->kind = PGW_STARTUP_GSSENC;
        return len == 8 ? 0 : bad(out, "invalid length of GSSENC request");
    case PGW_PROTO_CANCELREQ:
        if (len != 16)
            return bad(out, "invalid length of cancel request");
        out->kind = PGW_STARTUP_CANCEL;
        out->cancel_pid = pgw_get_u32(pkt + 8);
        out->cancel_key = pgw_get_u32(pkt + 12);
        return 0;
    default:
        break;
    }
    if ((code >> 16) != 3) {
        /* PostgreSQL's words (ProcessStartupPacket) and SQLSTATE. */
        snprintf(out->errbuf, sizeof(out->errbuf),
                 "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
                 (unsigned)(code >> 16), (unsigned)(code & 0xffff));
        bad(out, out->errbuf);
        out->sqlstate = "0A000";             /* feature_not_supported */
        return PGW_EPROTO;
    }
    out->kind = PGW_STARTUP_V3;
    return parse_v3_params(pkt + 8, len - 8, out);
}

long pgw_msg_complete(const uint8_t *buf, size_t len, uint32_t max)
{
    if (len < PGW_MSG_HDR)
        return 0;
    uint32_t n = pgw_get_u32(buf + 1);
    if (n < 4 || n > max)
        return -1;
    return (size_t)n + 1 <= len ? (long)n + 1 : 0;
}

/* ---- the options startup parameter ---- */

static bool opt_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Split options into words in buf (each NUL-terminated, escapes undone);
 * returns how many.  buf holds strlen(options) + 1 bytes: a word is never
 * longer than its text, and a separator or the end follows each one. */
static int split_words(const char *in, char *buf)
{
    int n = 0;
    char *o = buf;
    for (;;) {
        while (opt_space(*in))
            in++;
        if (!*in)
            return n;
        bool escaped = false;
        for (; *in && (escaped || !opt_space(*in)); in++) {
            if (!escaped && *in == '\\') {
                escaped = true;
                continue;
            }
            escaped = false;
            *o++ = *in;
        }
        *o++ = '\0';
        n++;
    }
}

/* "name=value" of -c or --: split it and give it to fn. */
static int option_setting(char *word, const char *sw, pgw_startup_option_fn fn, void *arg)
{
    char why[160];
    char *eq = strchr(word, '=');
    if (!eq) {
        snprintf(why, sizeof(why), "%s%.100s: no value (expected name=value)", sw, word);
        return fn(arg, NULL, why);
    }
    if (eq == word) {
        snprintf(why, sizeof(why), "%s%.100s: no parameter name", sw, word);
        return fn(arg, NULL, why);
    }
    *eq = '\0';
    for (char *c = word; *c; c++)
        if (*c == '-')
            *c = '_';
    return fn(arg, word, eq + 1);
}

/* ---- DateStyle ---- */

enum { DS_NONE = -1 };
static const char *const ds_styles[] = { "ISO", "SQL", "Postgres", "German" };
static const char *const ds_orders[] = { "YMD", "DMY", "MDY" };

/* One word of a DateStyle, as check_datestyle reads it: *style or *order
 * set (an index into the tables above); false for any other word. */
static bool ds_word(const char *w, size_t n, int *style, int *order)
{
    char tok[16];
    if (n == 0 || n >= sizeof(tok))
        return false;
    for (size_t i = 0; i < n; i++)
        tok[i] = (w[i] >= 'a' && w[i] <= 'z') ? (char)(w[i] - 'a' + 'A') : w[i];
    tok[n] = '\0';
    int st = DS_NONE, od = DS_NONE;
    if (strcmp(tok, "ISO") == 0)
        st = 0;
    else if (strcmp(tok, "SQL") == 0)
        st = 1;
    else if (strncmp(tok, "POSTGRES", 8) == 0)
        st = 2;
    else if (strcmp(tok, "GERMAN") == 0)
        st = 3;
    else if (strcmp(tok, "YMD") == 0)
        od = 0;
    else if (strcmp(tok, "DMY") == 0 || strncmp(tok, "EURO", 4) == 0)
        od = 1;
    else if (strcmp(tok, "MDY") == 0 || strcmp(tok, "US") == 0 || strncmp(tok, "NONEURO", 7) == 0)
        od = 2;
    else
        return false;                    /* DEFAULT too: not read here */
    if ((st != DS_NONE && *style != DS_NONE && *style != st) ||
        (od != DS_NONE && *order != DS_NONE && *order != od))
        return false;                    /* conflicting: PostgreSQL refuses it */
    if (st != DS_NONE)
        *style = st;
    if (od != DS_NONE)
        *order = od;
    return true;
}

/* The parts one DateStyle value names (DS_NONE for one it leaves as it
 * was); "German" without an order of its own names DMY too. */
static bool ds_parse(const char *v, int *style, int *order)
{
    *style = *order = DS_NONE;
    const char *p = v;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
            p++;
        const char *w = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' &&
               *p != '\f' && *p != '\v')
            p++;
        if (!ds_word(w, (size_t)(p - w), style, order))
            return false;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
            p++;
        if (!*p)
            break;
        if (*p != ',')
            return false;
        p++;
    }
    if (*style == 3 && *order == DS_NONE)
        *order = 1;
    return true;
}

/* Is v the word DEFAULT alone (any case, blanks around it)? */
static bool ds_is_default(const char *v)
{
    while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r' || *v == '\f')
        v++;
    if (strncasecmp(v, "default", 7) != 0)
        return false;
    for (v += 7; *v; v++)
        if (!(*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r' || *v == '\f'))
            return false;
    return true;
}

bool pgw_datestyle_merge(const char *prev, const char *next, char *out, size_t outlen)
{
    int ps, po, ns, no;
    /* DEFAULT is the reset value, which at login is the value before it
     * (a login's values are its defaults): PostgreSQL keeps that one. */
    if (ds_is_default(next))
        next = prev;
    if (!ds_parse(prev, &ps, &po) || !ds_parse(next, &ns, &no))
        return false;
    int style = ns != DS_NONE ? ns : ps, order = no != DS_NONE ? no : po;
    int n;
    if (style != DS_NONE && order != DS_NONE)
        n = snprintf(out, outlen, "%s, %s", ds_styles[style], ds_orders[order]);
    else
        n = snprintf(out, outlen, "%s", style != DS_NONE ? ds_styles[style] : ds_orders[order]);
    return n > 0 && (size_t)n < outlen;
}

int pgw_startup_options(const char *options, pgw_startup_option_fn fn, void *arg)
{
    size_t len = strlen(options);
    char *buf = malloc(len + 1);
    if (!buf)
        return PGW_ENOMEM;
    int n = split_words(options, buf), rc = 0;
    bool ended = false;              /* after "--": no more switches */
    char why[160];
    char *next = buf;
    for (int i = 0; i < n && rc == 0; i++) {
        char *w = next;
        next = w + strlen(w) + 1;    /* before option_setting cuts w at '=' */
        if (!ended && strcmp(w, "--") == 0) {
            ended = true;
        } else if (!ended && strncmp(w, "--", 2) == 0) {
            rc = option_setting(w + 2, "--", fn, arg);
        } else if (!ended && strcmp(w, "-c") == 0) {
            if (++i == n) {
                rc = fn(arg, NULL, "-c: no name=value after it");
                break;
            }
            w = next;
            next = w + strlen(w) + 1;
            rc = option_setting(w, "-c ", fn, arg);
        } else if (!ended && strncmp(w, "-c", 2) == 0) {
            rc = option_setting(w + 2, "-c", fn, arg);
        } else {
            snprintf(why, sizeof(why), "\"%.100s\" is not -c name=value or --name=value", w);
            rc = fn(arg, NULL, why);
        }
    }
    free(buf);
    return rc;
}

/* ---- dollar quoting ---- */

/* Would value, dollar-quoted with tag, end before its end?  The lexer
 * takes a '$', the longest run of tag characters after it and a '$' as a
 * delimiter; inside value that is "$T$", or "$T" at its end completed by
 * the closing delimiter's '$' (T: tag without its '$'s). */
static bool ends_early(const char *value, const char *tag)
{
    size_t vl = strlen(value), open = strlen(tag) - 1;    /* "$T" */
    return strstr(value, tag) != NULL ||
           (vl >= open && memcmp(value + vl - open, tag, open) == 0);
}

static void make_tag(char tag[PGW_DOLLAR_TAG_MAX], unsigned k)
{
    if (k == 0)
        snprintf(tag, PGW_DOLLAR_TAG_MAX, "$pgw$");
    else
        snprintf(tag, PGW_DOLLAR_TAG_MAX, "$pgw%u$", k);
}

/* One pass: each "$pgw" in value names the tag it would end ("$pgw$" or
 * "$pgwK$" inside it, "$pgw" or "$pgwK" at its end); the first tag none
 * names is the answer.  A value of n bytes names fewer than n / 4 tags, so
 * one of the first DOLLAR_KMAX is free for any startup parameter; past
 * them (a longer value naming them all) the search goes on tag by tag. */
#define DOLLAR_KMAX 4096u

void pgw_dollar_tag(const char *value, char tag[PGW_DOLLAR_TAG_MAX])
{
    uint8_t used[DOLLAR_KMAX / 8] = { 0 };
    for (const char *p = strstr(value, "$pgw"); p; p = strstr(p + 1, "$pgw")) {
        const char *d = p + 4;
        size_t nd = 0;
        unsigned k = 0;
        while (nd < 5 && d[nd] >= '0' && d[nd] <= '9')
            k = k * 10 + (unsigned)(d[nd++] - '0');
        if ((d[nd] != '$' && d[nd] != '\0') || (nd > 0 && d[0] == '0'))
            continue;                /* "$pgwx", "$pgw123456...", "$pgw01$": none of ours */
        if (k < DOLLAR_KMAX)
            used[k / 8] |= (uint8_t)(1u << (k % 8));
    }
    for (unsigned k = 0; k < DOLLAR_KMAX; k++) {
        if (!(used[k / 8] & (1u << (k % 8)))) {
            make_tag(tag, k);
            return;
        }
    }
    unsigned k = DOLLAR_KMAX;
    for (make_tag(tag, k); ends_early(value, tag) && k < 0xFFFFFFFFu;)
        make_tag(tag, ++k);
}

/* ---- LISTEN / UNLISTEN ---- */

/* White space as PostgreSQL 15's scanner reads it (scan.l "space"): not
 * \v, which only 16 added (15 says 42601 to "UNLISTEN\va"; a server that
 * reads it so gets the statement). */
static bool sql_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

static bool ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool ident_cont(unsigned char c)
{
    return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

/* The keyword kw (upper case) at *p, not followed by a name character. */
static bool sql_keyword(const char **p, const char *end, const char *kw)
{
    size_t n = strlen(kw);
    if ((size_t)(end - *p) < n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (c != kw[i])
            return false;
    }
    if (*p + n < end && ident_cont((unsigned char)(*p)[n]))
        return false;
    *p += n;
    return true;
}

/* The end of a dollar-quoted string whose opening tag ($tag$, tag len n
 * including both $) starts at p; NULL when unterminated. */
static const char *dollar_end(const char *p, const char *end, size_t n)
{
    for (const char *q = p + n; q + n <= end; q++)
        if (*q == '$' && memcmp(q, p, n) == 0)
            return q + n;
    return NULL;
}

size_t pgw_sql_comment_len(const char *p, size_t n)
{
    const char *end = p + n, *q = p;
    if (n < 2)
        return 0;
    if (p[0] == '-' && p[1] == '-') {
        while (q < end && *q != '\n' && *q != '\r')    /* either ends it, as there */
            q++;
    } else if (p[0] == '/' && p[1] == '*') {
        int depth = 0;                               /* comments nest */
        while (q < end) {
            if (*q == '/' && q + 1 < end && q[1] == '*') {
                depth++;
                q += 2;
            } else if (*q == '*' && q + 1 < end && q[1] == '/') {
                q += 2;
                if (--depth == 0)
                    break;
            } else {
                q++;
            }
        }
    }
    return (size_t)(q - p);
}

size_t pgw_sql_statement_end(const char *sql, size_t len)
{
    const char *p = sql, *end = sql + len;
    while (p < end) {
        char c = *p;
        if (c == ';')
            return (size_t)(p - sql);
        if (c == '\'' || c == '"') {
            /* E'...' takes backslash escapes; '' and "" are the quote */
            bool esc = c == '\'' && p > sql && (p[-1] == 'E' || p[-1] == 'e') &&
                       (p - 1 == sql || !ident_cont((unsigned char)p[-2]));
            for (p++; p < end; p++) {
                if (esc && *p == '\\' && p + 1 < end) {
                    p++;
                } else if (*p == c) {
                    if (p + 1 < end && p[1] == c)
                        p++;
                    else
                        break;
                }
            }
            if (p < end)
                p++;
        } else if (pgw_sql_comment_len(p, (size_t)(end - p)) > 0) {
            p += pgw_sql_comment_len(p, (size_t)(end - p));
        } else if (c == '$' && (p == sql || !ident_cont((unsigned char)p[-1]))) {
            /* $tag$ or $$ opens a dollar quote; $1 is a parameter */
            const char *q = p + 1;
            if (q < end && ident_start((unsigned char)*q))
                while (q < end && ident_cont((unsigned char)*q) && *q != '$')
                    q++;
            if (q < end && *q == '$') {
                const char *e = dollar_end(p, end, (size_t)(q - p) + 1);
                p = e ? e : end;
            } else {
                p++;
            }
        } else if (ident_cont((unsigned char)c)) {
            while (p < end && ident_cont((unsigned char)*p))
                p++;                             /* a name: no quote starts inside it */
        } else {
            p++;
        }
    }
    return len;
}

/* ---- the same, piece by piece ---- */

enum { SC_NORMAL, SC_SQUOTE, SC_DQUOTE, SC_LINE, SC_BLOCK, SC_TAG, SC_DOLLAR, SC_LOST };

void pgw_sql_scan_init(struct pgw_sql_scan *sc)
{
    memset(sc, 0, sizeof(*sc));
}

/* c in a literal or a quoted name (q its quote): false when it ends it and
 * is to be read again outside. */
static bool scan_quoted(struct pgw_sql_scan *sc, unsigned char c, unsigned char q)
{
    if (sc->pend == '\\') {
        sc->pend = 0;                    /* taken by the backslash */
    } else if (sc->pend == q) {
        sc->pend = 0;
        if (c != q) {
            sc->state = SC_NORMAL;       /* the quote before it ended it */
            return false;
        }                                /* '' or "": the quote itself */
    } else if (sc->esc && c == '\\') {
        sc->pend = '\\';
    } else if (c == q) {
        sc->pend = q;
    }
    return true;
}

static void scan_block(struct pgw_sql_scan *sc, unsigned char c)
{
    if (sc->pend == '/' && c == '*') {
        sc->depth++;
        sc->pend = 0;
    } else if (sc->pend == '*' && c == '/') {
        sc->pend = 0;
        if (--sc->depth == 0)
            sc->state = SC_NORMAL;
    } else {
        sc->pend = c == '/' || c == '*' ? c : 0;
    }
}

/* c after "$" and maybe a tag: false when it is no dollar quote's, to be
 * read again outside (the "$" and the name characters after it mean
 * nothing there). */
static bool scan_tag(struct pgw_sql_scan *sc, unsigned char c)
{
    if (c == '$') {
        sc->tag[sc->taglen++] = '$';
        sc->state = SC_DOLLAR;
        sc->match = 0;
    } else if (sc->taglen == 1 ? ident_start(c) : ident_cont(c)) {
        if (sc->taglen + 1u >= sizeof(sc->tag)) {
            sc->lost = true;
            sc->state = SC_LOST;
        } else {
            sc->tag[sc->taglen++] = (char)c;
        }
    } else {
        sc->state = SC_NORMAL;
        return false;
    }
    return true;
}

/* c outside of anything: false when it is the ';' that ends the statement. */
static bool scan_normal(struct pgw_sql_scan *sc, unsigned char c)
{
    unsigned char pend = sc->pend;
    sc->pend = 0;
    if (pend == '-' && c == '-') {
        sc->state = SC_LINE;
    } else if (pend == '/' && c == '*') {
        sc->state = SC_BLOCK;
        sc->depth = 1;
    } else if (c == ';') {
        return false;
    } else if (c == '\'' || c == '"') {
        sc->state = c == '\'' ? SC_SQUOTE : SC_DQUOTE;
        sc->esc = c == '\'' && (sc->prev == 'E' || sc->prev == 'e') && !ident_cont(sc->prev2);
    } else if (c == '-' || c == '/') {
        sc->pend = c;
    } else if (c == '$' && !ident_cont(sc->prev)) {
        sc->state = SC_TAG;
        sc->tag[0] = '$';
        sc->taglen = 1;
    }
    return true;
}

/* Characters that mean something outside of anything (the first of a
 * comment's two, a literal's E aside: prev and prev2 keep it). */
static bool scan_plain(unsigned char c)
{
    return c != ';' && c != '\'' && c != '"' && c != '-' && c != '/' && c != '$';
}

/* How many of p[0..n) the scanner may pass over at once in its state:
 * those that change nothing but prev and prev2.  (A Query may be many
 * megabytes: most of it is passed over so, at memchr's pace.) */
static size_t scan_skip(const struct pgw_sql_scan *sc, const char *p, size_t n)
{
    const char *stop;
    size_t i = 0;
    if (sc->pend)
        return 0;
    switch (sc->state) {
    case SC_NORMAL:
        while (i < n && scan_plain((unsigned char)p[i]))
            i++;
        return i;
    case SC_SQUOTE:
        if (sc->esc) {
            while (i < n && p[i] != '\'' && p[i] != '\\')
                i++;
            return i;
        }
        stop = memchr(p, '\'', n);
        return stop ? (size_t)(stop - p) : n;
    case SC_DQUOTE:
        stop = memchr(p, '"', n);
        return stop ? (size_t)(stop - p) : n;
    case SC_LINE:
        while (i < n && p[i] != '\n' && p[i] != '\r')
            i++;
        return i;
    case SC_BLOCK:
        while (i < n && p[i] != '*' && p[i] != '/')
            i++;
        return i;
    case SC_DOLLAR:
        if (sc->match)
            return 0;
        stop = memchr(p, '$', n);
        return stop ? (size_t)(stop - p) : n;
    case SC_LOST:
        return n;
    default:
        return 0;
    }
}

size_t pgw_sql_scan_feed(struct pgw_sql_scan *sc, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = scan_skip(sc, p + i, n - i);
        if (k > 0) {
            sc->prev2 = k > 1 ? (unsigned char)p[i + k - 2] : sc->prev;
            sc->prev = (unsigned char)p[i + k - 1];
            i += k;
            if (i == n)
                break;
        }
        unsigned char c = (unsigned char)p[i];
        bool again = true;
        while (again) {
            again = false;
            switch (sc->state) {
            case SC_NORMAL:
                if (!scan_normal(sc, c))
                    return i;
                break;
            case SC_SQUOTE: case SC_DQUOTE:
                again = !scan_quoted(sc, c, sc->state == SC_SQUOTE ? '\'' : '"');
                break;
            case SC_LINE:
                if (c == '\n' || c == '\r')
                    sc->state = SC_NORMAL;
                break;
            case SC_BLOCK:
                scan_block(sc, c);
                break;
            case SC_TAG:
                again = !scan_tag(sc, c);
                break;
            case SC_DOLLAR:
                if (c == (unsigned char)sc->tag[sc->match]) {
                    if (++sc->match == sc->taglen)
                        sc->state = SC_NORMAL;
                } else {
                    sc->match = c == '$' ? 1 : 0;
                }
                break;
            default:
                break;                   /* SC_LOST */
            }
        }
        sc->prev2 = sc->prev;
        sc->prev = c;
    }
    return n;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* n hex digits at p (before end) into *v. */
static bool hex_read(const char *p, const char *end, int n, uint32_t *v)
{
    if (end - p < n)
        return false;
    *v = 0;
    for (int i = 0; i < n; i++) {
        int d = hex_digit(p[i]);
        if (d < 0)
            return false;
        *v = *v << 4 | (uint32_t)d;
    }
    return true;
}

/* The text of a U&"..." name ("" read as one quote already) decoded as
 * PostgreSQL's str_udeescape does: esc esc is esc, esc XXXX and esc
 * +XXXXXX a code point (1 to 10FFFF; UTF-16 surrogates only as a pair),
 * written as UTF-8 -- what the hub's server speaks -- into out (room for
 * len + 1 bytes: no escape is shorter than its UTF-8), *outlen bytes.
 * false: one PostgreSQL refuses. */
static bool unicode_unescape(const char *in, size_t len, char esc, char *out, size_t *outlen)
{
    const char *p = in, *end = in + len;
    size_t n = 0;
    uint32_t first = 0;                   /* a pair's first half, waiting */
    while (p < end) {
        uint32_t c;
        if (*p != esc || (p + 1 < end && p[1] == esc)) {
            if (first)
                return false;
            out[n++] = *p;
            p += *p == esc ? 2 : 1;
            continue;
        }
        if (hex_read(p + 1, end, 4, &c))
            p += 5;
        else if (p + 1 < end && p[1] == '+' && hex_read(p + 2, end, 6, &c))
            p += 8;
        else
            return false;                 /* "invalid Unicode escape" */
        if (c == 0 || c > 0x10FFFF)
            return false;
        bool second = c >= 0xDC00 && c <= 0xDFFF;
        if (first && !second)
            return false;
        if (first) {
            c = 0x10000 + ((first - 0xD800) << 10) + (c - 0xDC00);
            first = 0;
        } else if (second) {
            return false;
        } else if (c >= 0xD800 && c <= 0xDBFF) {
            first = c;
            continue;
        }
        n += pgw_utf8_encode(c, out + n);  /* 4 bytes at most, from 5 or 8 (a pair: 10) */
    }
    if (first)
        return false;
    out[n] = '\0';
    *outlen = n;
    return true;
}

/* After a U&"..." name at *p: an optional UESCAPE 'c' (white space around,
 * c one byte PostgreSQL takes: no hex digit, +, quote or white space) into
 * *esc, '\' when none.  false: one pgwharf does not read (a comment
 * before it, an E'' or longer string, a backslash whose meaning depends
 * on standard_conforming_strings). */
static bool uescape_read(const char **pp, const char *end, char *esc)
{
    const char *p = *pp;
    *esc = '\\';
    while (p < end && sql_space(*p))
        p++;
    if (!sql_keyword(&p, end, "UESCAPE"))
        return true;                      /* none: *pp stays */
    while (p < end && sql_space(*p))
        p++;
    if (end - p < 3 || p[0] != '\'' || p[2] != '\'')
        return false;
    char c = p[1];
    /* as PostgreSQL's check_uescapechar: a backslash, the default, is allowed */
    if (hex_digit(c) >= 0 || c == '+' || c == '\'' || c == '"' || sql_space(c) ||
        (unsigned char)c >= 0x80)
        return false;
    *esc = c;
    *pp = p + 3;
    return true;
}

/* A U&"..." name [UESCAPE 'c'] at *pp (its U&" checked) decoded into
 * name (room for end - *pp + 1 bytes), *n bytes. */
static bool sql_uident(const char **pp, const char *end, char *name, size_t *n)
{
    char *raw = malloc((size_t)(end - *pp) + 1);
    const char *p;
    size_t r = 0;
    bool ok = false;
    if (!raw)
        return false;
    for (p = *pp + 3;; p++) {
        if (p == end)
            goto out;
        if (*p == '"') {
            if (p + 1 < end && p[1] == '"')
                p++;
            else
                break;
        }
        if (*p == '\0')
            goto out;
        raw[r++] = *p;
    }
    p++;
    char esc;
    if (r == 0 || !uescape_read(&p, end, &esc) || !unicode_unescape(raw, r, esc, name, n))
        goto out;
    *pp = p;
    ok = true;
out:
    free(raw);
    return ok;
}

static ssize_t clip_utf8(const void *arg, const char *name, size_t n)
{
    (void)arg;
    if (!pgw_utf8_valid(name, n))
        return -1;
    size_t k = PGW_CHANNEL_MAX;
    while (k > 0 && ((unsigned char)name[k] & 0xC0) == 0x80)
        k--;                              /* a continuation byte: back to its start */
    return (ssize_t)k;
}

const struct pgw_ident_clip pgw_ident_clip_utf8 = { clip_utf8, NULL };

/* The length PostgreSQL gives the character that starts with byte c in a
 * server encoding (pg_wchar.c's mblen functions): 0 for one it does not
 * know here. */
static int enc_mblen(const char *enc, uint8_t c)
{
    if (strcmp(enc, "UTF8") == 0)
        return c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                                 : (c & 0xf8) == 0xf0 ? 4 : 1;
    if (strcmp(enc, "EUC_JP") == 0 || strcmp(enc, "EUC_JIS_2004") == 0 ||
        strcmp(enc, "EUC_KR") == 0)        /* (pg_euckr_mblen is pg_euc_mblen) */
        return c == 0x8e ? 2 : c == 0x8f ? 3 : c >= 0x80 ? 2 : 1;
    if (strcmp(enc, "EUC_TW") == 0)
        return c == 0x8e ? 4 : c == 0x8f ? 3 : c >= 0x80 ? 2 : 1;
    if (strcmp(enc, "EUC_CN") == 0)
        return c >= 0x80 ? 2 : 1;
    if (strcmp(enc, "MULE_INTERNAL") == 0)
        return 0;
    return 1;            /* SQL_ASCII, LATIN1..10, WIN*, KOI8*, ISO_8859_*: one byte each */
}

ssize_t pgw_name_cliplen(const char *v, size_t n, const char *server_encoding)
{
    if (n <= PGW_NAME_MAX)
        return (ssize_t)n;
    if (!server_encoding || enc_mblen(server_encoding, 'a') == 0)
        return -1;
    size_t k = 0;
    while (k < n) {
        size_t l = (size_t)enc_mblen(server_encoding, (uint8_t)v[k]);
        if (k + l > PGW_NAME_MAX)
            break;
        k += l;
    }
    return (ssize_t)k;
}

void pgw_ident_full_free(struct pgw_ident_full *full)
{
    free(full->name);
    full->name = NULL;
    full->cut = false;
}

/* name (n bytes, NUL-terminated, malloc'd: taken) into out (outmax bytes
 * and a NUL) as PostgreSQL's truncate_identifier leaves it: cut to
 * PGW_CHANNEL_MAX bytes when longer and ASCII, else where clip says (NULL:
 * not cut).  full, when not NULL, tells whether it was cut, and keeps
 * the whole name then. */
static bool ident_cut(char *name, size_t n, const struct pgw_ident_clip *clip, char *out,
                      size_t outmax, struct pgw_ident_full *full)
{
    size_t k = n;
    if (n > PGW_CHANNEL_MAX) {
        ssize_t c = pgw_pgenc_ascii(name, n) ? PGW_CHANNEL_MAX
                    : clip                   ? clip->clip(clip->arg, name, n)
                                             : -1;
        if (c < 0 || (size_t)c > n) {
            free(name);
            return false;
        }
        k = (size_t)c;
    }
    if (k > outmax) {
        free(name);
        return false;
    }
    memcpy(out, name, k);
    out[k] = '\0';
    if (full) {
        full->cut = k < n;
        full->name = full->cut ? name : NULL;
    }
    if (!full || !full->cut)
        free(name);
    return true;
}

/* A name at *p as PostgreSQL reads it into out (outmax bytes and a NUL):
 * unquoted with its ASCII letters lowered, quoted as written ("" read as
 * one quote), U&"..." [UESCAPE 'c'] decoded, then cut as PostgreSQL
 * truncates an identifier (NOTIFY's too: ident_cut).  false: none, or
 * one pgwharf does not read (empty, unterminated, a bad escape, one
 * ident_cut does not cut). */
static bool sql_ident(const char **pp, const char *end, const struct pgw_ident_clip *clip,
                      char *out, size_t outmax, struct pgw_ident_full *full)
{
    const char *p = *pp;
    size_t n = 0;
    if (full)
        *full = (struct pgw_ident_full){ .cut = false };
    if (p == end)
        return false;
    char *name = malloc((size_t)(end - p) + 1);   /* never longer than its text */
    if (!name)
        return false;
    if (end - p > 2 && (*p == 'U' || *p == 'u') && p[1] == '&' && p[2] == '"') {
        if (!sql_uident(&p, end, name, &n))
            goto bad;
    } else if (*p == '"') {
        for (p++;; p++) {
            if (p == end)
                goto bad;                         /* unterminated */
            if (*p == '"') {
                if (p + 1 < end && p[1] == '"')
                    p++;
                else
                    break;
            }
            if (*p == '\0')
                goto bad;
            name[n++] = *p;
        }
        p++;
        if (n == 0)
            goto bad;                             /* zero-length delimited identifier */
    } else if (ident_start((unsigned char)*p)) {
        for (; p < end && ident_cont((unsigned char)*p); p++) {
            char c = *p;
            name[n++] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
        }
    } else {
        goto bad;
    }
    name[n] = '\0';
    if (!ident_cut(name, n, clip, out, outmax, full))
        return false;
    *pp = p;
    return true;
bad:
    free(name);
    return false;
}

/* The length of the closed comment at p (-- to a line's end or the
 * text's; a nested block comment with its last close), 0 when none or
 * one not closed (PostgreSQL's "unterminated comment": its to say). */
static size_t sql_comment_closed(const char *p, const char *end)
{
    size_t k = pgw_sql_comment_len(p, (size_t)(end - p));
    if (k == 0 || p[0] == '-')
        return k;
    int depth = 0;
    for (size_t i = 0; i + 1 < k; i++) {
        if (p[i] == '/' && p[i + 1] == '*') {
            depth++;
            i++;
        } else if (p[i] == '*' && p[i + 1] == '/') {
            depth--;
            i++;
        }
    }
    return depth == 0 ? k : 0;
}

/* White space and comments between tokens: PostgreSQL's scanner reads a
 * comment as white space. */
static void sql_skip_space(const char **p, const char *end)
{
    for (;;) {
        while (*p < end && sql_space(**p))
            (*p)++;
        size_t k = *p < end ? sql_comment_closed(*p, end) : 0;
        if (k == 0)
            return;
        *p += k;
    }
}

/* White space, one optional ';', white space, the end. */
static bool sql_at_end(const char *p, const char *end)
{
    sql_skip_space(&p, end);
    if (p < end && *p == ';')
        p++;
    sql_skip_space(&p, end);
    return p == end;
}

/* PostgreSQL's reserved and type/function-name keywords (its kwlist.h,
 * RESERVED_KEYWORD and TYPE_FUNC_NAME_KEYWORD): not a ColId unquoted, so
 * "LISTEN select" is its syntax error, not a channel. */
static bool colid_keyword(const char *name)
{
    static const char *const kw[] = {
        "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric",
        "authorization", "binary", "both", "case", "cast", "check", "collate", "collation",
        "column", "concurrently", "constraint", "create", "cross", "current_catalog",
        "current_date", "current_role", "current_schema", "current_time", "current_timestamp",
        "current_user", "default", "deferrable", "desc", "distinct", "do", "else", "end",
        "except", "false", "fetch", "for", "foreign", "freeze", "from", "full", "grant",
        "group", "having", "ilike", "in", "initially", "inner", "intersect", "into", "is",
        "isnull", "join", "lateral", "leading", "left", "like", "limit", "localtime",
        "localtimestamp", "natural", "not", "notnull", "null", "offset", "on", "only", "or",
        "order", "outer", "overlaps", "placing", "primary", "references", "returning",
        "right", "select", "session_user", "similar", "some", "symmetric", "table",
        "tablesample", "then", "to", "trailing", "true", "union", "unique", "user", "using",
        "variadic", "verbose", "when", "where", "window", "with",
    };
    for (size_t i = 0; i < sizeof(kw) / sizeof(kw[0]); i++)
        if (strcmp(name, kw[i]) == 0)
            return true;
    return false;
}

/* An unquoted identifier at p that is one of those keywords. */
static bool sql_keyword_ident(const char *p, const char *end)
{
    char word[32];
    size_t n = 0;
    if (p == end || !ident_start((unsigned char)*p) ||
        (end - p > 1 && (*p == 'U' || *p == 'u') && p[1] == '&'))
        return false;
    for (; p < end && ident_cont((unsigned char)*p); p++) {
        if (n + 1 >= sizeof(word))
            return false;
        word[n++] = *p >= 'A' && *p <= 'Z' ? (char)(*p - 'A' + 'a') : *p;
    }
    word[n] = '\0';
    return colid_keyword(word);
}

enum pgw_listen_kind pgw_listen_parse(const char *sql, size_t len,
                                      const struct pgw_ident_clip *clip,
                                      char chan[PGW_CHANNEL_UTF8_MAX + 1],
                                      struct pgw_ident_full *full)
{
    const char *p = sql, *end = sql + len;
    enum pgw_listen_kind kind;
    if (full)
        *full = (struct pgw_ident_full){ .cut = false };
    sql_skip_space(&p, end);
    if (sql_keyword(&p, end, "LISTEN"))
        kind = PGW_LISTEN;
    else if (sql_keyword(&p, end, "UNLISTEN"))
        kind = PGW_UNLISTEN;
    else
        return PGW_LISTEN_NONE;
    sql_skip_space(&p, end);
    if (p < end && *p == '*' && kind == PGW_UNLISTEN) {
        kind = PGW_UNLISTEN_ALL;
        p++;
    } else if (sql_keyword_ident(p, end) ||
               !sql_ident(&p, end, clip, chan, PGW_CHANNEL_UTF8_MAX, full)) {
        return PGW_LISTEN_NONE;
    }
    if (sql_at_end(p, end))
        return kind;
    if (full)
        pgw_ident_full_free(full);
    return PGW_LISTEN_NONE;
}

bool pgw_deallocate_parse(const char *sql, size_t len, const struct pgw_ident_clip *clip,
                          char name[PGW_CHANNEL_UTF8_MAX + 1], struct pgw_ident_full *full)
{
    const char *p = sql, *end = sql + len;
    if (full)
        *full = (struct pgw_ident_full){ .cut = false };
    sql_skip_space(&p, end);
    if (!sql_keyword(&p, end, "DEALLOCATE"))
        return false;
    sql_skip_space(&p, end);
    const char *at = p;
    if (sql_keyword(&p, end, "PREPARE")) {
        sql_skip_space(&p, end);
        if (sql_at_end(p, end))
            p = at;                      /* DEALLOCATE prepare: the name */
    }
    if (sql_keyword(&p, end, "ALL"))
        return false;                    /* ALL is reserved: never a name */
    if (sql_keyword_ident(p, end) ||
        !sql_ident(&p, end, clip, name, clip ? PGW_CHANNEL_UTF8_MAX : PGW_CHANNEL_MAX, full))
        return false;
    if (sql_at_end(p, end))
        return true;
    if (full)
        pgw_ident_full_free(full);
    return false;
}

/* A statement name at *p (white space and comments before it skipped),
 * as PostgreSQL reads it, into name: READ (ASCII), UNREAD (another, or
 * one sql_ident does not read), NONE when no name starts there (a
 * literal, a parenthesis). */
static enum pgw_sql_name_kind sql_stmt_name(const char **p, const char *end,
                                            char name[PGW_NAME_MAX + 1])
{
    sql_skip_space(p, end);
    if (*p == end || !(ident_start((unsigned char)**p) || **p == '"'))
        return PGW_SQL_NAME_NONE;
    if (end - *p > 1 && (**p == 'U' || **p == 'u') && (*p)[1] == '&' &&
        (end - *p < 3 || (*p)[2] != '"'))
        return PGW_SQL_NAME_NONE;        /* U&'...': a literal */
    const char *q = *p;
    if (!sql_ident(p, end, NULL, name, PGW_NAME_MAX, NULL) ||
        !pgw_pgenc_ascii(name, strlen(name))) {
        *p = q + 1;
        return PGW_SQL_NAME_UNREAD;
    }
    return PGW_SQL_NAME_READ;
}

enum pgw_sql_name_kind pgw_prepare_parse(const char *sql, size_t len,
                                         char name[PGW_NAME_MAX + 1], size_t *rest)
{
    const char *p = sql, *end = sql + len;
    sql_skip_space(&p, end);
    if (!sql_keyword(&p, end, "PREPARE"))
        return PGW_SQL_NAME_NONE;
    *rest = (size_t)(p - sql);
    const char *at = p;
    sql_skip_space(&at, end);
    if (sql_keyword(&at, end, "TRANSACTION")) {
        /* PREPARE TRANSACTION 'gid' (tag "PREPARE TRANSACTION"), unless
         * a statement named so: its types or AS come next. */
        sql_skip_space(&at, end);
        if (at == end || (*at != '(' && !sql_keyword(&at, end, "AS")))
            return PGW_SQL_NAME_NONE;
    }
    enum pgw_sql_name_kind k = sql_stmt_name(&p, end, name);
    if (k == PGW_SQL_NAME_READ)
        *rest = (size_t)(p - sql);
    return k == PGW_SQL_NAME_NONE ? PGW_SQL_NAME_UNREAD : k;
}

enum pgw_sql_name_kind pgw_sql_execute_next(const char *sql, size_t len, size_t *at,
                                            char name[PGW_NAME_MAX + 1])
{
    const char *end = sql + len;
    for (size_t i = *at; i + 7 <= len; i++) {
        if ((sql[i] != 'e' && sql[i] != 'E') || (i > 0 && ident_cont((unsigned char)sql[i - 1])))
            continue;
        const char *p = sql + i;
        if (!sql_keyword(&p, end, "EXECUTE"))
            continue;
        enum pgw_sql_name_kind k = sql_stmt_name(&p, end, name);
        *at = (size_t)(p - sql);
        if (k != PGW_SQL_NAME_NONE)
            return k;
        i = *at - 1;
    }
    *at = len;
    return PGW_SQL_NAME_NONE;
}

bool pgw_sql_may_start(const char *sql, size_t n, const char *const *kw, int nkw)
{
    size_t i = 0;
    for (;;) {
        while (i < n && sql_space(sql[i]))
            i++;
        size_t k = pgw_sql_comment_len(sql + i, n - i);
        if (k == 0)
            break;
        if (i + k == n)
            return true;                 /* a comment not ended yet: what follows may be */
        i += k;
    }
    for (int k = 0; k < nkw; k++) {
        size_t j = 0;
        while (kw[k][j] && i + j < n && (sql[i + j] & ~0x20) == kw[k][j])
            j++;
        if (!kw[k][j] || i + j == n)
            return true;
    }
    return false;
}

bool pgw_sp_may_be(const char *sql, size_t n)
{
    static const char *const kw[] = { "SAVEPOINT", "RELEASE", "ROLLBACK" };
    return pgw_sql_may_start(sql, n, kw, 3);
}

enum pgw_sp_kind pgw_sp_parse(const char *sql, size_t len, char name[PGW_CHANNEL_MAX + 1])
{
    const char *p = sql, *end = sql + len;
    enum pgw_sp_kind kind;
    name[0] = '\0';
    sql_skip_space(&p, end);
    if (sql_keyword(&p, end, "SAVEPOINT")) {
        kind = PGW_SP_SAVE;
    } else if (sql_keyword(&p, end, "RELEASE")) {
        kind = PGW_SP_RELEASE;
        sql_skip_space(&p, end);
        sql_keyword(&p, end, "SAVEPOINT");
    } else if (sql_keyword(&p, end, "ROLLBACK")) {
        sql_skip_space(&p, end);
        if (!sql_keyword(&p, end, "WORK"))
            sql_keyword(&p, end, "TRANSACTION");
        sql_skip_space(&p, end);
        if (!sql_keyword(&p, end, "TO"))
            return PGW_SP_ROLLBACK;       /* the whole transaction (AND CHAIN or not) */
        kind = PGW_SP_ROLLBACK_TO;
        sql_skip_space(&p, end);
        sql_keyword(&p, end, "SAVEPOINT");
    } else {
        return PGW_SP_NONE;
    }
    sql_skip_space(&p, end);
    if (!sql_ident(&p, end, NULL, name, PGW_CHANNEL_MAX, NULL) || !sql_at_end(p, end))
        name[0] = '\0';                  /* a name pgwharf does not read */
    return kind;
}
