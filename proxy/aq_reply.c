/*
 * aq_reply.c - the auth_query request and its reply (see aq_reply.h).
 */
#include "proxy/aq_reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pgw_aq_reply_fail(struct pgw_aq_reply *r, bool broken, const char *sqlstate,
                       const char *fmt, ...)
{
    if (broken)
        r->dirty = true;
    if (r->failed)
        return;             /* the first reason is the one to tell */
    r->failed = true;
    snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);
}

/* Parse (unnamed, one parameter of unspecified type, as a literal would
 * be), Bind (the user name as text), Execute (all rows), Sync. */
bool pgw_aq_build_request(struct pgw_wbuf *b, const char *query, const char *user)
{
    size_t m = pgw_wbuf_msg_begin(b, PGW_FE_PARSE);
    pgw_wbuf_put_str(b, "");
    pgw_wbuf_put_str(b, query);
    pgw_wbuf_put_u16(b, 1);
    pgw_wbuf_put_u32(b, 0);
    pgw_wbuf_msg_end(b, m);
    m = pgw_wbuf_msg_begin(b, PGW_FE_BIND);
    pgw_wbuf_put_str(b, "");
    pgw_wbuf_put_str(b, "");
    pgw_wbuf_put_u16(b, 0);               /* parameter formats: all text */
    pgw_wbuf_put_u16(b, 1);
    pgw_wbuf_put_u32(b, (uint32_t)strlen(user));
    pgw_wbuf_append(b, user, strlen(user));
    pgw_wbuf_put_u16(b, 0);               /* result formats: all text */
    pgw_wbuf_msg_end(b, m);
    m = pgw_wbuf_msg_begin(b, PGW_FE_EXECUTE);
    pgw_wbuf_put_str(b, "");
    pgw_wbuf_put_u32(b, 0);
    pgw_wbuf_msg_end(b, m);
    m = pgw_wbuf_msg_begin(b, PGW_FE_SYNC);
    pgw_wbuf_msg_end(b, m);
    return !b->failed;
}

/* DataRow: int16 columns, then per column int32 length (-1 = NULL) and
 * the bytes.  Keeps column 2 of the first row and whether its column 1
 * (the user name) is NULL: a row naming no user is no user. */
static void data_row(struct pgw_aq_reply *r, const uint8_t *p, uint32_t n)
{
    if (++r->rows > 1)
        return;
    if (n < 2) {
        pgw_aq_reply_fail(r, true, "08P01", "auth_query: malformed DataRow from the server");
        return;
    }
    r->cols = pgw_get_u16(p);
    uint32_t pos = 2;
    for (int i = 0; i < r->cols && i < 2; i++) {
        if (n - pos < 4) {
            pgw_aq_reply_fail(r, true, "08P01", "auth_query: malformed DataRow from the server");
            return;
        }
        int32_t len = (int32_t)pgw_get_u32(p + pos);
        pos += 4;
        if (len < -1 || (len > 0 && (uint32_t)len > n - pos)) {
            pgw_aq_reply_fail(r, true, "08P01", "auth_query: malformed DataRow from the server");
            return;
        }
        if (i == 0 && len == -1)
            r->null_user = true;
        if (i == 1 && len >= 0) {
            if (memchr(p + pos, 0, (size_t)len)) {
                pgw_aq_reply_fail(r, false, "28000",
                                  "auth_query: the password column holds a NUL byte");
                return;
            }
            r->secret = strndup((const char *)p + pos, (size_t)len);
            if (!r->secret)
                pgw_aq_reply_fail(r, false, "53200", "out of memory");
        }
        if (len > 0)
            pos += (uint32_t)len;
    }
}

/* One whole reply message.  Returns true at ReadyForQuery. */
static bool reply_message(struct pgw_aq_reply *r, uint8_t type, const uint8_t *p, uint32_t n)
{
    struct pgw_wire_err_fields f;
    switch (type) {
    case PGW_BE_PARSE_COMPLETE:
    case PGW_BE_BIND_COMPLETE:
    case PGW_BE_COMMAND_COMPLETE:
    case PGW_BE_EMPTY_QUERY:
    case PGW_BE_NOTICE:
    case PGW_BE_PARAM_STATUS:
    case PGW_BE_NOTIFY:
        return false;
    case PGW_BE_DATA_ROW:
        data_row(r, p, n);
        return false;
    case PGW_BE_ERROR:
        /* The body ends in a NUL; a malformed one still gives a reason. */
        if (n > 0 && p[n - 1] == 0 && pgw_wire_parse_error(p, n, &f) == 0 && *f.sqlstate)
            pgw_aq_reply_fail(r, false, f.sqlstate, "%s", f.message);
        else
            pgw_aq_reply_fail(r, false, "08P01", "malformed error from the server");
        return false;
    case PGW_BE_READY:
        r->at_ready = true;
        r->status = n >= 1 ? (char)p[0] : '?';
        return true;
    default:
        pgw_aq_reply_fail(r, true, "08P01",
                          "auth_query: unexpected message type '%c' from the server",
                          type >= 0x20 && type < 0x7f ? type : '?');
        return true;
    }
}

/* Take the whole messages received.  True when the reply is over (at
 * ReadyForQuery or after a failure that ends it). */
bool pgw_aq_reply_take(struct pgw_aq_reply *r)
{
    uint32_t pos = 0;
    bool over = false;
    while (!over) {
        uint32_t avail = r->in_len - pos;
        if (r->skip) {
            uint32_t k = r->skip < avail ? r->skip : avail;
            pos += k;
            r->skip -= k;
            if (r->skip)
                break;
            continue;
        }
        if (avail < PGW_MSG_HDR)
            break;
        const uint8_t *m = r->in + pos;
        uint32_t len = pgw_get_u32(m + 1);
        if (len < 4) {
            pgw_aq_reply_fail(r, true, "08P01",
                              "auth_query: invalid message length from the server");
            return true;
        }
        uint32_t body = len - 4;
        if (body > PGW_AQ_RBUF - PGW_MSG_HDR) {
            if (m[0] == PGW_BE_NOTICE || m[0] == PGW_BE_PARAM_STATUS || m[0] == PGW_BE_NOTIFY) {
                pos += PGW_MSG_HDR;
                r->skip = body;
                continue;
            }
            pgw_aq_reply_fail(r, true, "08P01",
                              "auth_query: reply message '%c' too long (%u bytes)",
                              m[0] >= 0x20 && m[0] < 0x7f ? m[0] : '?', body);
            return true;
        }
        if (avail < PGW_MSG_HDR + body)
            break;
        over = reply_message(r, m[0], m + PGW_MSG_HDR, body);
        pos += PGW_MSG_HDR + body;
    }
    memmove(r->in, r->in + pos, r->in_len - pos);
    r->in_len -= pos;
    if (over && r->in_len > 0)
        r->dirty = true;          /* bytes after ReadyForQuery: not ours to leave behind */
    return over;
}
