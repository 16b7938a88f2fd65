/*
 * wire.h - PostgreSQL v3 protocol: constants, byte-order helpers, a small
 * growable output buffer and builders for the messages pgwharf writes
 * itself (errors, auth, parameter status, ReadyForQuery, simple Query).
 *
 * Everything here is pure: functions over buffers, no I/O, so it can be
 * unit-tested and fuzzed.  Shared by pool/ (reset and check queries) and
 * proxy/ (sessions, admin console).
 */
#ifndef PGW_COMMON_WIRE_H
#define PGW_COMMON_WIRE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_PROTO_V3            196608u     /* 3.0 */
#define PGW_PROTO_SSLREQ        80877103u
#define PGW_PROTO_GSSENCREQ     80877104u
#define PGW_PROTO_CANCELREQ     80877102u
#define PGW_CANCEL_REQ_LEN      16u         /* length, code, pid, key */
#define PGW_STARTUP_MAX         10004u      /* PostgreSQL's own cap: 10000 bytes
                                               after the length word */
#define PGW_MSG_HDR             5u          /* type byte + int32 length */

/* Backend message types pgwharf cares about. */
#define PGW_BE_AUTH             'R'
#define PGW_BE_PARAM_STATUS     'S'
#define PGW_BE_KEY_DATA         'K'
#define PGW_BE_READY            'Z'
#define PGW_BE_ERROR            'E'
#define PGW_BE_NOTICE           'N'
#define PGW_BE_COMMAND_COMPLETE 'C'
#define PGW_BE_ROW_DESC         'T'
#define PGW_BE_DATA_ROW         'D'
#define PGW_BE_EMPTY_QUERY      'I'
#define PGW_BE_PORTAL_SUSPENDED 's'
#define PGW_BE_FUNCTION_RESULT  'V'
#define PGW_BE_COPY_IN          'G'
#define PGW_BE_COPY_OUT         'H'
#define PGW_BE_COPY_BOTH        'W'
#define PGW_BE_COPY_DATA        'd'
#define PGW_BE_COPY_DONE        'c'
#define PGW_BE_NOTIFY           'A'
#define PGW_BE_PARSE_COMPLETE   '1'
#define PGW_BE_BIND_COMPLETE    '2'
#define PGW_BE_CLOSE_COMPLETE   '3'
#define PGW_BE_NO_DATA          'n'
#define PGW_BE_NEGOTIATE        'v'

/* Frontend message types. */
#define PGW_FE_QUERY            'Q'
#define PGW_FE_PARSE            'P'
#define PGW_FE_BIND             'B'
#define PGW_FE_DESCRIBE         'D'
#define PGW_FE_EXECUTE          'E'
#define PGW_FE_CLOSE            'C'
#define PGW_FE_SYNC             'S'
#define PGW_FE_FLUSH            'H'
#define PGW_FE_TERMINATE        'X'
#define PGW_FE_PASSWORD         'p'
#define PGW_FE_COPY_DATA        'd'
#define PGW_FE_COPY_DONE        'c'
#define PGW_FE_COPY_FAIL        'f'
#define PGW_FE_FUNCTION_CALL    'F'

static inline uint32_t pgw_get_u32(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}
static inline uint16_t pgw_get_u16(const void *p)
{
    const uint8_t *b = p;
    return (uint16_t)(b[0] << 8 | b[1]);
}
static inline void pgw_put_u32(void *p, uint32_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)(v >> 24); b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);  b[3] = (uint8_t)v;
}
static inline void pgw_put_u16(void *p, uint16_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)(v >> 8); b[1] = (uint8_t)v;
}

/*
 * A growable byte buffer for messages pgwharf composes.  Not for the relay's
 * hot path (that uses fixed buffers).  On allocation failure `failed` is set
 * and later appends do nothing, so builders can be chained and checked once.
 */
struct pgw_wbuf {
    uint8_t *data;
    size_t len, cap;
    bool failed;
};

void pgw_wbuf_init(struct pgw_wbuf *b);
void pgw_wbuf_deinit(struct pgw_wbuf *b);
void pgw_wbuf_reset(struct pgw_wbuf *b);                  /* len = 0, keeps memory */
void pgw_wbuf_append(struct pgw_wbuf *b, const void *p, size_t n);
void pgw_wbuf_consume(struct pgw_wbuf *b, size_t n);      /* drop n bytes from the front */
/* Message framing: begin writes type + placeholder length, end patches it. */
size_t pgw_wbuf_msg_begin(struct pgw_wbuf *b, char type);
void pgw_wbuf_msg_end(struct pgw_wbuf *b, size_t start);
void pgw_wbuf_put_u8(struct pgw_wbuf *b, uint8_t v);
void pgw_wbuf_put_u16(struct pgw_wbuf *b, uint16_t v);
void pgw_wbuf_put_u32(struct pgw_wbuf *b, uint32_t v);
void pgw_wbuf_put_str(struct pgw_wbuf *b, const char *s);  /* with its NUL */

/* Builders for whole messages. */
void pgw_wire_error(struct pgw_wbuf *b, const char *severity, const char *sqlstate,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void pgw_wire_verror(struct pgw_wbuf *b, const char *severity, const char *sqlstate,
                     const char *fmt, va_list ap);
/* One with a DETAIL field too (none when detail is NULL or empty). */
void pgw_wire_error_detail(struct pgw_wbuf *b, const char *severity, const char *sqlstate,
                           const char *msg, const char *detail);
void pgw_wire_notice(struct pgw_wbuf *b, const char *sqlstate, const char *msg);
/* The same at WARNING. */
void pgw_wire_warning(struct pgw_wbuf *b, const char *sqlstate, const char *msg);
void pgw_wire_auth(struct pgw_wbuf *b, uint32_t code, const void *extra, size_t n);
void pgw_wire_param_status(struct pgw_wbuf *b, const char *name, const char *value);
void pgw_wire_key_data(struct pgw_wbuf *b, uint32_t pid, uint32_t key);
void pgw_wire_ready(struct pgw_wbuf *b, char status);
/* A CancelRequest, the whole packet (it has no type byte). */
void pgw_wire_cancel_request(uint8_t out[PGW_CANCEL_REQ_LEN], uint32_t pid, uint32_t key);
void pgw_wire_query(struct pgw_wbuf *b, const char *sql);
void pgw_wire_command_complete(struct pgw_wbuf *b, const char *tag);

/*
 * Parsed fields of an ErrorResponse/NoticeResponse body (pointers into the
 * body, which must stay alive).  Missing fields are "".
 */
struct pgw_wire_err_fields {
    const char *severity, *sqlstate, *message, *detail, *hint;
    const char *context;         /* 'W': the CONTEXT lines (a COPY's "COPY t, line N") */
    const char *routine;         /* 'R': the server's C function, never translated */
};
/* body/len: the message body after the 5-byte header.  Returns 0 or PGW_EPROTO. */
int pgw_wire_parse_error(const uint8_t *body, size_t len, struct pgw_wire_err_fields *out);

/* Decode one UTF-8 sequence at s (NUL-terminated) into *cp; returns its
 * length, or 0 when it is not well-formed (overlong, surrogate,
 * > U+10FFFF, cut short). */
size_t pgw_utf8_decode(const unsigned char *s, uint32_t *cp);
/* s[0..n) is well-formed UTF-8 (as PostgreSQL checks text in a UTF8
 * database: 22021 otherwise); s[n] a NUL. */
bool pgw_utf8_valid(const char *s, size_t n);

#endif
