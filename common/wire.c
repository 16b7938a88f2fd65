/* wire.c - message builders and parsers for PostgreSQL v3 (see wire.h). */
#include "common/wire.h"
#include "common/err.h"
#include "common/pgenc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pgw_wbuf_init(struct pgw_wbuf *b) { memset(b, 0, sizeof(*b)); }

void pgw_wbuf_deinit(struct pgw_wbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

void pgw_wbuf_reset(struct pgw_wbuf *b)
{
    b->len = 0;
    b->failed = false;
}

static bool wbuf_reserve(struct pgw_wbuf *b, size_t n)
{
    if (b->failed)
        return false;
    if (b->len + n <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) {
        b->failed = true;
        return false;
    }
    b->data = d;
    b->cap = cap;
    return true;
}

void pgw_wbuf_append(struct pgw_wbuf *b, const void *p, size_t n)
{
    if (!n || !wbuf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void pgw_wbuf_consume(struct pgw_wbuf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

size_t pgw_wbuf_msg_begin(struct pgw_wbuf *b, char type)
{
    size_t start = b->len;
    uint8_t hdr[5] = { (uint8_t)type, 0, 0, 0, 0 };
    pgw_wbuf_append(b, hdr, sizeof(hdr));
    return start;
}

void pgw_wbuf_msg_end(struct pgw_wbuf *b, size_t start)
{
    if (b->failed || b->len < start + 5)
        return;
    pgw_put_u32(b->data + start + 1, (uint32_t)(b->len - start - 1));
}

void pgw_wbuf_put_u8(struct pgw_wbuf *b, uint8_t v) { pgw_wbuf_append(b, &v, 1); }

void pgw_wbuf_put_u16(struct pgw_wbuf *b, uint16_t v)
{
    uint8_t x[2];
    pgw_put_u16(x, v);
    pgw_wbuf_append(b, x, 2);
}

void pgw_wbuf_put_u32(struct pgw_wbuf *b, uint32_t v)
{
    uint8_t x[4];
    pgw_put_u32(x, v);
    pgw_wbuf_append(b, x, 4);
}

void pgw_wbuf_put_str(struct pgw_wbuf *b, const char *s)
{
    pgw_wbuf_append(b, s, strlen(s) + 1);
}

static void put_field(struct pgw_wbuf *b, char code, const char *v)
{
    pgw_wbuf_put_u8(b, (uint8_t)code);
    pgw_wbuf_put_str(b, v);
}

void pgw_wire_error_detail(struct pgw_wbuf *b, const char *severity, const char *sqlstate,
                           const char *msg, const char *detail)
{
    size_t m = pgw_wbuf_msg_begin(b, PGW_BE_ERROR);
    put_field(b, 'S', severity);
    put_field(b, 'V', severity);
    put_field(b, 'C', sqlstate);
    put_field(b, 'M', msg);
    if (detail && *detail)
        put_field(b, 'D', detail);
    pgw_wbuf_put_u8(b, 0);
    pgw_wbuf_msg_end(b, m);
}

void pgw_wire_verror(struct pgw_wbuf *b, const char *severity, const char *sqlstate,
                     const char *fmt, va_list ap)
{
    char msg[1024];
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n >= (int)sizeof(msg))
        pgw_utf8_trim_cut(msg, sizeof(msg) - 1);
    pgw_wire_error_detail(b, severity, sqlstate, msg, NULL);
}

void pgw_wire_error(struct pgw_wbuf *b, const char *severity, const char *sqlstate,
                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pgw_wire_verror(b, severity, sqlstate, fmt, ap);
    va_end(ap);
}

static void notice_at(struct pgw_wbuf *b, const char *severity, const char *sqlstate,
                      const char *msg)
{
    size_t m = pgw_wbuf_msg_begin(b, PGW_BE_NOTICE);
    put_field(b, 'S', severity);
    put_field(b, 'V', severity);
    put_field(b, 'C', sqlstate);
    put_field(b, 'M', msg);
    pgw_wbuf_put_u8(b, 0);
    pgw_wbuf_msg_end(b, m);
}

void pgw_wire_notice(struct pgw_wbuf *b, const char *sqlstate, const char *msg)
{
    notice_at(b, "NOTICE", sqlstate, msg);
}

void pgw_wire_warning(struct pgw_wbuf *b, const char *sqlstate, const char *msg)
{
    notice_at(b, "WARNING", sqlstate, msg);
}

void pgw_wire_auth(struct pgw_wbuf *b, uint32_t code, const void *extra, size_t n)
{
    size_t m = pgw_wbuf_msg_begin(b, PGW_BE_AUTH);
    pgw_wbuf_put_u32(b, code);
    pgw_wbuf_append(b, extra, n);
    pgw_wbuf_msg_end(b, m);
}

/* A dozen of these go out with every login: one reservation and one
 * copy of each part, not an append per field. */
void pgw_wire_param_status(struct pgw_wbuf *b, const char *name, const char *value)
{
    size_t nl = strlen(name) + 1, vl = strlen(value) + 1, n = 5 + nl + vl;
    if (!wbuf_reserve(b, n))
        return;
    uint8_t *p = b->data + b->len;
    p[0] = PGW_BE_PARAM_STATUS;
    pgw_put_u32(p + 1, (uint32_t)(n - 1));
    memcpy(p + 5, name, nl);
    memcpy(p + 5 + nl, value, vl);
    b->len += n;
}

void pgw_wire_key_data(struct pgw_wbuf *b, uint32_t pid, uint32_t key)
{
    size_t m = pgw_wbuf_msg_begin(b, PGW_BE_KEY_DATA);
    pgw_wbuf_put_u32(b, pid);
    pgw_wbuf_put_u32(b, key);
    pgw_wbuf_msg_end(b, m);
}

void pgw_wire_cancel_request(uint8_t out[PGW_CANCEL_REQ_LEN], uint32_t pid, uint32_t key)
{
    pgw_put_u32(out, PGW_CANCEL_REQ_LEN);
    pgw_put_u32(out + 4, PGW_PROTO_CANCELREQ);
    pgw_put_u32(out + 8, pid);
    pgw_put_u32(out + 12, key);
}

void pgw_wire_ready(struct pgw_wbuf *b, char status)
{
    size_t m = pgw_wbuf_msg_begin(b, PGW_BE_READY);
    pgw_wbuf_put_u8(b, (uint8_t)status);
    pgw_wbuf_msg_end(b, m);
}

void pgw_wire_query(struct pgw_wbuf *b, const char *sql)
{
    size_t m = pgw_wbuf_msg_begin(b, PGW_FE_QUERY);
    pgw_wbuf_put_str(b, sql);
    pgw_wbuf_msg_end(b, m);
}

void pgw_wire_command_complete(struct pgw_wbuf *b, const char *tag)
{
    size_t m = pgw_wbuf_msg_begin(b, PGW_BE_COMMAND_COMPLETE);
    pgw_wbuf_put_str(b, tag);
    pgw_wbuf_msg_end(b, m);
}

int pgw_wire_parse_error(const uint8_t *body, size_t len, struct pgw_wire_err_fields *out)
{
    out->severity = out->sqlstate = out->message = out->detail = out->hint = "";
    out->context = out->routine = "";
    size_t i = 0;
    while (i < len) {
        uint8_t code = body[i++];
        if (code == 0)
            return 0;
        const uint8_t *end = memchr(body + i, 0, len - i);
        if (!end)
            return PGW_EPROTO;
        const char *v = (const char *)body + i;
        switch (code) {
        case 'S': if (!*out->severity) out->severity = v; break;
        case 'V': out->severity = v; break;
        case 'C': out->sqlstate = v; break;
        case 'M': out->message = v; break;
        case 'D': out->detail = v; break;
        case 'H': out->hint = v; break;
        case 'W': out->context = v; break;
        case 'R': out->routine = v; break;
        default: break;
        }
        i = (size_t)(end - body) + 1;
    }
    return PGW_EPROTO;
}

/* Decode one UTF-8 sequence at s (NUL-terminated); returns its length, or
 * 0 when it is not well-formed (overlong, surrogate, > U+10FFFF, cut). */
size_t pgw_utf8_decode(const unsigned char *s, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        n = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return n;
}

bool pgw_utf8_valid(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k =
            (unsigned char)s[i] < 0x80 ? 1 : pgw_utf8_decode((const unsigned char *)s + i, &cp);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}
