/* codec.c - startup packet and message framing parsers (see codec.h). */
#include "proxy/codec.h"

#include <string.h>

#include "common/err.h"
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
            if (out->nprotoopts < PGW_STARTUP_MAX_PARAMS)
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
    if (!out->user || !*out->user)
        return bad(out, "no PostgreSQL user name specified in startup packet");
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
    if ((code >> 16) != 3)
        return bad(out, "unsupported frontend protocol: server supports 3.0");
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
