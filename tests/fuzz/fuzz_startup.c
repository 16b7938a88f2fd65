/*
 * fuzz_startup.c - the first bytes a client sends (proxy/codec.h).
 *
 * The input is a client's byte stream as the session reads it: the first
 * packet (StartupMessage, SSLRequest, GSSENCRequest or CancelRequest) framed
 * by pgw_startup_need() and parsed by pgw_startup_parse(), a second startup
 * packet after an SSLRequest 'N', then regular frontend messages framed by
 * pgw_msg_complete() as during auth (cap 8192) and the relay (cap 1 GiB).
 * Each parameter value is also read as the options parameter
 * (pgw_startup_options), each Query's text as a lone LISTEN or UNLISTEN
 * (pgw_listen_parse), as SQL PREPARE and EXECUTE (pgw_prepare_parse,
 * pgw_sql_execute_next), and cut into statements (pgw_sql_statement_end),
 * each read so too.
 * Invariants checked beyond "no crash": a parsed packet's pointers lie
 * inside it; a complete message never claims more bytes than are there;
 * an option's name and value are no longer than the text they came from,
 * and a refused word's reason is short.
 */
#include <stdbool.h>

#include "common/pgenc.h"
#include "common/wire.h"
#include "fuzz_util.h"
#include "proxy/codec.h"

static bool inside(const void *p, const uint8_t *pkt, size_t len)
{
    const uint8_t *b = p;
    return b >= pkt && b < pkt + len;
}

static int one_option(void *arg, const char *name, const char *value)
{
    size_t max = *(const size_t *)arg;
    if (!value || (name && (!*name || strlen(name) > max || strlen(value) > max)) ||
        (!name && (!*value || strlen(value) >= 160)))
        abort();
    if (name)
        fuzz_touch(name);
    fuzz_touch(value);
    return 0;
}

/* Parse one startup packet at the front of buf; returns its size, or 0. */
static size_t one_startup(const uint8_t *buf, size_t len, int *kind)
{
    long need = pgw_startup_need(buf, len);
    if (need < 0) {
        if (len < 4)
            abort();            /* -1 needs a length field */
        return 0;
    }
    if (need == 0) {
        if (len >= 4)
            abort();            /* 4 bytes always decide */
        return 0;
    }
    if (need < 8 || need > (long)PGW_STARTUP_MAX)
        abort();
    if ((size_t)need > len)
        return 0;
    /* An exact-size heap copy: any read past the packet is an ASan report. */
    uint8_t *pkt = malloc((size_t)need);
    if (!pkt)
        abort();
    memcpy(pkt, buf, (size_t)need);
    struct pgw_startup st;
    int rc = pgw_startup_parse(pkt, (size_t)need, &st);
    *kind = st.kind;
    if (rc < 0) {
        if (st.kind != PGW_STARTUP_BAD || !st.error || !*st.error)
            abort();
    } else if (st.kind == PGW_STARTUP_V3) {
        if (!st.user || !*st.user || !st.database || !inside(st.user, pkt, (size_t)need) ||
            !inside(st.database, pkt, (size_t)need))
            abort();
        if (st.nparams < 0 || st.nparams > PGW_STARTUP_MAX_PARAMS ||
            st.nprotoopts < 0 || st.nprotoopts > PGW_STARTUP_MAX_PARAMS)
            abort();
        for (int i = 0; i < st.nparams; i++) {
            if (!inside(st.names[i], pkt, (size_t)need) || !inside(st.values[i], pkt, (size_t)need))
                abort();
            fuzz_touch(st.names[i]);
            fuzz_touch(st.values[i]);
            size_t max = strlen(st.values[i]);
            if (pgw_startup_options(st.values[i], one_option, &max) != 0)
                abort();
        }
        for (int i = 0; i < st.nprotoopts; i++)
            fuzz_touch(st.protoopts[i]);
        fuzz_touch(st.user);
        fuzz_touch(st.database);
    } else if (st.kind == PGW_STARTUP_BAD) {
        abort();                /* success never says BAD */
    }
    free(pkt);
    return (size_t)need;
}

/* A Query's text read as a lone LISTEN/UNLISTEN (pgw_listen_parse): the
 * channel is at most PGW_CHANNEL_MAX bytes, no longer than the text, and
 * a name for LISTEN and UNLISTEN, none for UNLISTEN *. */
static void listen_statement(const uint8_t *sql, size_t len)
{
    char chan[PGW_CHANNEL_UTF8_MAX + 1];
    struct pgw_ident_full full;
    memset(chan, 0x5a, sizeof(chan));
    memset(&full, 0x5a, sizeof(full));
    enum pgw_listen_kind k = pgw_listen_parse((const char *)sql, len,
                                              len & 1 ? &pgw_ident_clip_utf8 : NULL, chan, &full);
    if (k == PGW_LISTEN || k == PGW_UNLISTEN) {
        size_t n = strnlen(chan, sizeof(chan));
        if (n == 0 || n > PGW_CHANNEL_MAX || n > len)
            abort();
        /* the whole name starts with the cut one, longer when cut */
        if (full.cut && (strlen(full.name) <= n || strncmp(full.name, chan, n) != 0 ||
                         n + 4 <= PGW_CHANNEL_MAX))
            abort();
        if (!full.cut && full.name)
            abort();
        pgw_ident_full_free(&full);
    } else if (k != PGW_LISTEN_NONE && k != PGW_UNLISTEN_ALL) {
        abort();
    } else if (full.cut || full.name) {
        abort();
    }
}

/* A statement read as SQL PREPARE (pgw_prepare_parse) and a text's
 * EXECUTEs (pgw_sql_execute_next): a name read is ASCII, 1 to
 * PGW_NAME_MAX bytes, what follows it inside the text; the walk moves on
 * and ends at the text's end. */
static void sql_prepared(const uint8_t *sql, size_t len)
{
    char name[PGW_NAME_MAX + 1];
    size_t rest = SIZE_MAX;
    if (pgw_prepare_parse((const char *)sql, len, name, &rest) == PGW_SQL_NAME_READ) {
        size_t n = strnlen(name, sizeof(name));
        if (n == 0 || n > PGW_NAME_MAX || rest > len || !pgw_pgenc_ascii(name, n))
            abort();
    }
    size_t at = 0, was = 0;
    for (enum pgw_sql_name_kind k;
         (k = pgw_sql_execute_next((const char *)sql, len, &at, name)) != PGW_SQL_NAME_NONE;
         was = at) {
        size_t n = strnlen(name, sizeof(name));
        if (at <= was || at > len ||
            (k == PGW_SQL_NAME_READ && (n == 0 || n > PGW_NAME_MAX || !pgw_pgenc_ascii(name, n))))
            abort();
    }
    if (at != len)
        abort();
}

/* Does pgw_sql_scan_feed end the statement at sql where want says, the
 * text fed in pieces of piece bytes (as a long Query streams through the
 * relay)?  (A dollar quote's tag too long for it: no ';' ends it.) */
static bool scan_agrees(const uint8_t *sql, size_t len, size_t piece, size_t want)
{
    struct pgw_sql_scan sc;
    pgw_sql_scan_init(&sc);
    for (size_t off = 0; off < len; off += piece) {
        size_t k = len - off < piece ? len - off : piece;
        size_t got = pgw_sql_scan_feed(&sc, (const char *)sql + off, k);
        if (got < k)
            return off + got == want;
    }
    return want == len || sc.lost;
}

/* A Query's text cut into statements (pgw_sql_statement_end), each read
 * as above: each end is within the text and at a ';' unless it is the
 * text's end, so the walk moves on and stops; fed in pieces, the same
 * ends (unless a dollar quote's tag was too long for the scanner). */
static void statements(const uint8_t *sql, size_t len)
{
    for (size_t off = 0; off < len;) {
        size_t n = pgw_sql_statement_end((const char *)sql + off, len - off);
        if (n > len - off || (n < len - off && sql[off + n] != ';'))
            abort();
        if (!scan_agrees(sql + off, len - off, 1 + (len - off) % 7, n))
            abort();
        listen_statement(sql + off, n);
        sql_prepared(sql + off, n);
        off += n + 1;
    }
}

static void messages(const uint8_t *buf, size_t len, uint32_t max)
{
    while (len > 0) {
        long n = pgw_msg_complete(buf, len, max);
        if (n < 0)
            return;
        if (n == 0)
            return;
        if ((size_t)n > len || n < (long)PGW_MSG_HDR)
            abort();
        if (buf[0] == 'Q') {
            listen_statement(buf + PGW_MSG_HDR, (size_t)n - PGW_MSG_HDR);
            statements(buf + PGW_MSG_HDR, (size_t)n - PGW_MSG_HDR);
            sql_prepared(buf + PGW_MSG_HDR, (size_t)n - PGW_MSG_HDR);
        }
        buf += n;
        len -= (size_t)n;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int kind = PGW_STARTUP_BAD;
    size_t used = one_startup(data, size, &kind);
    if (used == 0)
        return 0;
    if (kind == PGW_STARTUP_SSL || kind == PGW_STARTUP_GSSENC) {
        size_t more = one_startup(data + used, size - used, &kind);
        if (more == 0)
            return 0;
        used += more;
    }
    messages(data + used, size - used, 8192);
    messages(data + used, size - used, 1u << 30);
    return 0;
}
