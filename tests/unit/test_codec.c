/* test_codec.c - the startup-packet and framing parsers (proxy/codec.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/wire.h"
#include "proxy/codec.h"

static size_t build_startup(uint8_t *buf, uint32_t version, const char *const *kv, int nkv)
{
    size_t o = 8;
    for (int i = 0; i < nkv; i++) {
        size_t l = strlen(kv[i]) + 1;
        memcpy(buf + o, kv[i], l);
        o += l;
    }
    buf[o++] = 0;
    pgw_put_u32(buf, (uint32_t)o);
    pgw_put_u32(buf + 4, version);
    return o;
}

static void test_startup_v3(void **state)
{
    (void)state;
    uint8_t buf[512];
    const char *kv[] = { "user", "bob", "database", "app", "application_name", "psql" };
    size_t n = build_startup(buf, PGW_PROTO_V3, kv, 6);
    struct pgw_startup st;
    assert_int_equal(pgw_startup_need(buf, n), (long)n);
    assert_int_equal(pgw_startup_parse(buf, n, &st), 0);
    assert_int_equal(st.kind, PGW_STARTUP_V3);
    assert_string_equal(st.user, "bob");
    assert_string_equal(st.database, "app");
    assert_int_equal(st.nparams, 3);
    assert_string_equal(st.names[2], "application_name");
    assert_string_equal(st.values[2], "psql");
}

static void test_startup_database_defaults_to_user(void **state)
{
    (void)state;
    uint8_t buf[512];
    const char *kv[] = { "user", "bob" };
    size_t n = build_startup(buf, PGW_PROTO_V3, kv, 2);
    struct pgw_startup st;
    assert_int_equal(pgw_startup_parse(buf, n, &st), 0);
    assert_string_equal(st.database, "bob");
}

static void test_startup_no_user(void **state)
{
    (void)state;
    uint8_t buf[512];
    const char *kv[] = { "database", "x" };
    size_t n = build_startup(buf, PGW_PROTO_V3, kv, 2);
    struct pgw_startup st;
    assert_int_equal(pgw_startup_parse(buf, n, &st), PGW_EPROTO);
    assert_int_equal(st.kind, PGW_STARTUP_BAD);
    assert_non_null(strstr(st.error, "user name"));
    assert_string_equal(st.sqlstate, "28000");
}

static void test_startup_minor_and_protoopts(void **state)
{
    (void)state;
    uint8_t buf[512];
    const char *kv[] = { "user", "u", "_pq_.foo", "1" };
    size_t n = build_startup(buf, PGW_PROTO_V3 | 2, kv, 4);
    struct pgw_startup st;
    assert_int_equal(pgw_startup_parse(buf, n, &st), 0);
    assert_int_equal(st.version & 0xffff, 2);
    assert_int_equal(st.nprotoopts, 1);
    assert_string_equal(st.protoopts[0], "_pq_.foo");
    assert_int_equal(st.nparams, 1);
    /* PostgreSQL takes as many as the packet holds: 40 options and 40
     * parameters (32 of each were too many) */
    static char names[80][16];
    const char *many[162] = { "user", "u" };
    for (int i = 0; i < 80; i++) {
        snprintf(names[i], sizeof(names[i]), i < 40 ? "_pq_.o%d" : "p%d", i);
        many[2 + 2 * i] = names[i];
        many[3 + 2 * i] = "v";
    }
    uint8_t big[4096];
    n = build_startup(big, PGW_PROTO_V3 | 2, many, 162);
    assert_int_equal(pgw_startup_parse(big, n, &st), 0);
    assert_int_equal(st.kind, PGW_STARTUP_V3);
    assert_int_equal(st.nprotoopts, 40);
    assert_string_equal(st.protoopts[39], "_pq_.o39");
    assert_int_equal(st.nparams, 41);
}

/* More "_pq_." options than NegotiateProtocolVersion can name
 * (PGW_STARTUP_MAX_PARAMS): refused, as too many parameters are.  Those
 * after the 128th were dropped from the list, and the client took them
 * as accepted. */
static void test_startup_too_many_protoopts(void **state)
{
    (void)state;
    static char names[PGW_STARTUP_MAX_PARAMS + 1][16];
    const char *kv[2 * (PGW_STARTUP_MAX_PARAMS + 1) + 2] = { "user", "u" };
    static uint8_t buf[8192];
    struct pgw_startup st;
    for (int all = PGW_STARTUP_MAX_PARAMS; all <= PGW_STARTUP_MAX_PARAMS + 1; all++) {
        for (int i = 0; i < all; i++) {
            snprintf(names[i], sizeof(names[i]), "_pq_.o%d", i);
            kv[2 + 2 * i] = names[i];
            kv[3 + 2 * i] = "v";
        }
        size_t n = build_startup(buf, PGW_PROTO_V3 | 2, kv, 2 + 2 * all);
        assert_true(n <= PGW_STARTUP_MAX);
        if (all == PGW_STARTUP_MAX_PARAMS) {
            assert_int_equal(pgw_startup_parse(buf, n, &st), 0);
            assert_int_equal(st.nprotoopts, all);
            assert_string_equal(st.protoopts[all - 1], names[all - 1]);
        } else {
            assert_int_equal(pgw_startup_parse(buf, n, &st), PGW_EPROTO);
            assert_int_equal(st.kind, PGW_STARTUP_BAD);
            assert_string_equal(st.sqlstate, "08P01");
            assert_string_equal(st.error, "too many startup parameters");
        }
    }
}

/* pgw_name_cliplen: PostgreSQL's cut of a name-like value at 63 bytes,
 * whole characters of the database's encoding only. */
static void test_name_cliplen(void **state)
{
    (void)state;
    char v[200];
    memset(v, 'a', sizeof(v));
    assert_int_equal(pgw_name_cliplen(v, 63, NULL), 63);     /* short: as it is */
    assert_int_equal(pgw_name_cliplen(v, 64, NULL), -1);
    assert_int_equal(pgw_name_cliplen(v, 64, "MULE_INTERNAL"), -1);
    assert_int_equal(pgw_name_cliplen(v, 100, "UTF8"), 63);
    for (int i = 0; i < 40; i++)
        memcpy(v + 2 * i, "\xc3\xa9", 2);
    assert_int_equal(pgw_name_cliplen(v, 80, "UTF8"), 62);
    assert_int_equal(pgw_name_cliplen(v, 80, "LATIN1"), 63);
    assert_int_equal(pgw_name_cliplen(v, 80, "EUC_JP"), 62);
    memset(v, 'a', sizeof(v));
    memcpy(v + 61, "\xe2\x82\xac", 3);                         /* 61 + 3 bytes */
    assert_int_equal(pgw_name_cliplen(v, 64, "UTF8"), 61);
    memset(v, 0xff, 70);                      /* not UTF-8: a byte each, as PostgreSQL */
    assert_int_equal(pgw_name_cliplen(v, 70, "UTF8"), 63);
    memset(v, 'a', sizeof(v));
    v[62] = (char)0x8e;                       /* EUC_TW: a 4-byte character at 62 */
    assert_int_equal(pgw_name_cliplen(v, 70, "EUC_TW"), 62);
    memset(v, 'a', sizeof(v));
    v[61] = (char)0x8f;                       /* EUC_KR (pg_euc_mblen): 0x8f starts 3 bytes */
    assert_int_equal(pgw_name_cliplen(v, 70, "EUC_KR"), 61);
    assert_int_equal(pgw_name_cliplen(v, 70, "EUC_CN"), 63);    /* 2 there */
}

static void test_startup_bad_version(void **state)
{
    (void)state;
    uint8_t buf[512];
    const char *kv[] = { "user", "u" };
    size_t n = build_startup(buf, 2u << 16, kv, 2);
    struct pgw_startup st;
    assert_int_equal(pgw_startup_parse(buf, n, &st), PGW_EPROTO);
    assert_string_equal(st.sqlstate, "0A000");
    assert_string_equal(st.error, "unsupported frontend protocol 2.0: server supports 3.0 to 3.0");
    n = build_startup(buf, 4u << 16, kv, 2);
    assert_int_equal(pgw_startup_parse(buf, n, &st), PGW_EPROTO);
    assert_string_equal(st.error, "unsupported frontend protocol 4.0: server supports 3.0 to 3.0");
    /* a malformed packet is a protocol violation */
    pgw_put_u32(buf, 7);
    assert_int_equal(pgw_startup_parse(buf, 7, &st), PGW_EPROTO);
    assert_string_equal(st.sqlstate, "08P01");
}

static void test_ssl_gss_cancel(void **state)
{
    (void)state;
    uint8_t buf[16];
    struct pgw_startup st;
    pgw_put_u32(buf, 8);
    pgw_put_u32(buf + 4, PGW_PROTO_SSLREQ);
    assert_int_equal(pgw_startup_parse(buf, 8, &st), 0);
    assert_int_equal(st.kind, PGW_STARTUP_SSL);
    pgw_put_u32(buf + 4, PGW_PROTO_GSSENCREQ);
    assert_int_equal(pgw_startup_parse(buf, 8, &st), 0);
    assert_int_equal(st.kind, PGW_STARTUP_GSSENC);
    pgw_put_u32(buf, 16);
    pgw_put_u32(buf + 4, PGW_PROTO_CANCELREQ);
    pgw_put_u32(buf + 8, 1234);
    pgw_put_u32(buf + 12, 0xdeadbeef);
    assert_int_equal(pgw_startup_parse(buf, 16, &st), 0);
    assert_int_equal(st.kind, PGW_STARTUP_CANCEL);
    assert_int_equal(st.cancel_pid, 1234);
    assert_int_equal(st.cancel_key, 0xdeadbeef);
    /* A cancel request of the wrong size is refused. */
    pgw_put_u32(buf, 12);
    assert_int_equal(pgw_startup_parse(buf, 12, &st), PGW_EPROTO);
}

/* What pgwharf sends a server to cancel (proxy/cancel.c) is what it
 * takes from clients: a 16-byte CancelRequest, pid and key intact. */
static void test_cancel_request_round_trip(void **state)
{
    (void)state;
    static const uint32_t cases[][2] = {
        { 1, 0 }, { 4242, 0xdeadbeef }, { 0x7fffffff, 0xffffffff }, { 0x12345678, 0x80000000 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t pkt[PGW_CANCEL_REQ_LEN + 1];
        memset(pkt, 0xaa, sizeof(pkt));
        pgw_wire_cancel_request(pkt, cases[i][0], cases[i][1]);
        assert_int_equal(pkt[PGW_CANCEL_REQ_LEN], 0xaa);      /* nothing past 16 bytes */
        assert_int_equal(pgw_get_u32(pkt), 16);
        assert_int_equal(pgw_get_u32(pkt + 4), 80877102);
        struct pgw_startup st;
        assert_int_equal(pgw_startup_parse(pkt, PGW_CANCEL_REQ_LEN, &st), 0);
        assert_int_equal(st.kind, PGW_STARTUP_CANCEL);
        assert_int_equal(st.cancel_pid, cases[i][0]);
        assert_int_equal(st.cancel_key, cases[i][1]);
    }
}

static void test_startup_lengths(void **state)
{
    (void)state;
    uint8_t buf[8] = { 0 };
    pgw_put_u32(buf, 4);
    assert_int_equal(pgw_startup_need(buf, 4), -1);
    pgw_put_u32(buf, PGW_STARTUP_MAX + 1);
    assert_int_equal(pgw_startup_need(buf, 4), -1);
    /* PostgreSQL takes 10000 bytes after the length word: 10004 in all */
    pgw_put_u32(buf, 10004);
    assert_int_equal(pgw_startup_need(buf, 4), 10004);
    pgw_put_u32(buf, 10005);
    assert_int_equal(pgw_startup_need(buf, 4), -1);
    pgw_put_u32(buf, 0x80000000u);
    assert_int_equal(pgw_startup_need(buf, 4), -1);
    assert_int_equal(pgw_startup_need(buf, 3), 0);
}

/* Every truncation of a valid packet is either "need more" or rejected --
 * never accepted, never out of bounds (run under ASan). */
static void test_startup_every_truncation(void **state)
{
    (void)state;
    uint8_t buf[512];
    const char *kv[] = { "user", "bob", "database", "app" };
    size_t n = build_startup(buf, PGW_PROTO_V3, kv, 4);
    for (size_t cut = 0; cut < n; cut++) {
        long need = pgw_startup_need(buf, cut);
        assert_true(need == 0 || (size_t)need == n);
        struct pgw_startup st;
        uint8_t copy[512];
        memcpy(copy, buf, cut);
        pgw_put_u32(copy, (uint32_t)cut);   /* lie about the length */
        if (cut >= 8)
            assert_int_equal(pgw_startup_parse(copy, cut, &st), PGW_EPROTO);
    }
}

static void test_msg_complete(void **state)
{
    (void)state;
    uint8_t m[10] = { 'Q', 0, 0, 0, 9, 's', 'e', 'l', 0, 0 };
    for (size_t i = 0; i < 10; i++)
        assert_int_equal(pgw_msg_complete(m, i, 100), 0);
    assert_int_equal(pgw_msg_complete(m, 10, 100), 10);
    m[4] = 3;
    assert_int_equal(pgw_msg_complete(m, 10, 100), -1);
    pgw_put_u32(m + 1, 200);
    assert_int_equal(pgw_msg_complete(m, 10, 100), -1);
}

static void test_wire_error_roundtrip(void **state)
{
    (void)state;
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_error(&b, "ERROR", "57014", "waited %d s", 3);
    assert_false(b.failed);
    assert_int_equal(b.data[0], 'E');
    assert_int_equal(pgw_get_u32(b.data + 1), b.len - 1);
    struct pgw_wire_err_fields f;
    assert_int_equal(pgw_wire_parse_error(b.data + 5, b.len - 5, &f), 0);
    assert_string_equal(f.severity, "ERROR");
    assert_string_equal(f.sqlstate, "57014");
    assert_string_equal(f.message, "waited 3 s");
    assert_string_equal(f.routine, "");
    assert_string_equal(f.context, "");
    /* A server's routine field, read whatever the language of the text;
     * its CONTEXT too (a COPY's line, which pgwharf repeats). */
    static const uint8_t srv[] = "SFEHLER\0VERROR\0C0A000\0Mgecachter Plan\0"
                                 "WCOPY t, Zeile 2\0"
                                 "Fplancache.c\0RRevalidateCachedQuery\0";
    struct pgw_wire_err_fields g;
    assert_int_equal(pgw_wire_parse_error(srv, sizeof(srv), &g), 0);
    assert_string_equal(g.sqlstate, "0A000");
    assert_string_equal(g.severity, "ERROR");
    assert_string_equal(g.routine, "RevalidateCachedQuery");
    assert_string_equal(g.context, "COPY t, Zeile 2");
    /* Truncated bodies are rejected, never read past. */
    for (size_t cut = 0; cut < b.len - 5; cut++)
        assert_int_equal(pgw_wire_parse_error(b.data + 5, cut, &f), PGW_EPROTO);
    pgw_wbuf_deinit(&b);
}

/* ---- the options startup parameter ---- */

/* What pgw_startup_options reported, one "name=value|" or "!why|" each. */
struct opt_log {
    char text[4096];
    int calls, stop_after;           /* stop_after: fn returns 7 at that call */
};

static int opt_collect(void *arg, const char *name, const char *value)
{
    struct opt_log *l = arg;
    size_t o = strlen(l->text);
    if (name)
        snprintf(l->text + o, sizeof(l->text) - o, "[%s]=[%s]|", name, value);
    else
        snprintf(l->text + o, sizeof(l->text) - o, "!%s|", value);
    return ++l->calls == l->stop_after ? 7 : 0;
}

static const char *opts(const char *in)
{
    static struct opt_log l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(pgw_startup_options(in, opt_collect, &l), 0);
    return l.text;
}

static void test_options_settings(void **state)
{
    (void)state;
    static const struct { const char *in, *want; } cases[] = {
        { "-c TimeZone=UTC", "[TimeZone]=[UTC]|" },
        { "-cTimeZone=UTC", "[TimeZone]=[UTC]|" },
        { "--TimeZone=UTC", "[TimeZone]=[UTC]|" },
        { "  -c  a=1\t--b=2\n-cc=3  ", "[a]=[1]|[b]=[2]|[c]=[3]|" },
        /* '-' in a name is '_'; not in the value */
        { "--search-path=a-b -c x-y=-z", "[search_path]=[a-b]|[x_y]=[-z]|" },
        /* the first '=' splits; the value may hold more, or be empty */
        { "-c a=b=c --d=", "[a]=[b=c]|[d]=[]|" },
        /* a backslash keeps the next character, white space included */
        { "-c search_path=a\\ b", "[search_path]=[a b]|" },
        { "-c x=a\\\\b", "[x]=[a\\b]|" },
        { "-c x=a\\\\ -c y=1", "[x]=[a\\]|[y]=[1]|" },
        { "-c x=\\a\\=b", "[x]=[a=b]|" },
        { "-c\\ x=1", "[ x]=[1]|" },
        { "\\-c x=1", "[x]=[1]|" },
        /* a backslash at the very end is dropped */
        { "-c x=1\\", "[x]=[1]|" },
        { "-c x=1 \\", "[x]=[1]|!\"\" is not -c name=value or --name=value|" },
        /* -c takes the next word whatever it is */
        { "-c -c=1", "[_c]=[1]|" },
        { "", "" },
        { "   \t\n ", "" },
        { "--", "" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = opts(cases[i].in);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("options %s: got %s, want %s", cases[i].in, got, cases[i].want);
    }
}

static void test_options_refused_words(void **state)
{
    (void)state;
    static const struct { const char *in, *want; } cases[] = {
        { "-c", "!-c: no name=value after it|" },
        { "  -c  ", "!-c: no name=value after it|" },
        { "-c TimeZone", "!-c TimeZone: no value (expected name=value)|" },
        { "-cTimeZone", "!-cTimeZone: no value (expected name=value)|" },
        { "--TimeZone", "!--TimeZone: no value (expected name=value)|" },
        { "-c =UTC", "!-c =UTC: no parameter name|" },
        { "--=x", "!--=x: no parameter name|" },
        { "-B 100", "!\"-B\" is not -c name=value or --name=value|"
                    "!\"100\" is not -c name=value or --name=value|" },
        { "-e", "!\"-e\" is not -c name=value or --name=value|" },
        { "TimeZone=UTC", "!\"TimeZone=UTC\" is not -c name=value or --name=value|" },
        { "-- -c a=1", "!\"-c\" is not -c name=value or --name=value|"
                       "!\"a=1\" is not -c name=value or --name=value|" },
        { "\\", "!\"\" is not -c name=value or --name=value|" },
        { "-c a=1 -x -c b=2", "[a]=[1]|!\"-x\" is not -c name=value or --name=value|[b]=[2]|" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = opts(cases[i].in);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("options %s: got %s, want %s", cases[i].in, got, cases[i].want);
    }
}

static void test_options_callback_stops(void **state)
{
    (void)state;
    struct opt_log l;
    memset(&l, 0, sizeof(l));
    l.stop_after = 2;
    assert_int_equal(pgw_startup_options("-c a=1 -x -c b=2", opt_collect, &l), 7);
    assert_int_equal(l.calls, 2);
    assert_string_equal(l.text, "[a]=[1]|!\"-x\" is not -c name=value or --name=value|");
}


/* For long input: count the calls, check a setting's value is all 'v' or "1". */
static int opt_count_long(void *arg, const char *name, const char *value)
{
    size_t *calls = arg;
    (*calls)++;
    if (name && strcmp(value, "1") != 0 && strcmp(name, "a") != 0)
        for (const char *v = value; *v; v++)
            assert_int_equal(*v, 'v');
    if (!name)
        assert_true(strlen(value) < 200);     /* a refusal quotes the word cut short */
    return 0;
}

static void test_options_long_and_hostile(void **state)
{
    (void)state;
    /* A long value, a long run of escapes and of spaces: read whole. */
    size_t n = 20000;
    char *in = malloc(n + 64);
    assert_non_null(in);
    strcpy(in, "-c x=");
    memset(in + 5, 'v', n);
    in[5 + n] = '\0';
    size_t calls = 0;                  /* counted only: the text would not fit */
    int rc = pgw_startup_options(in, opt_count_long, &calls);
    assert_int_equal(rc, 0);
    assert_int_equal(calls, 1);
    /* only backslashes: half of them */
    memset(in, '\\', n);
    in[n] = '\0';
    calls = 0;
    assert_int_equal(pgw_startup_options(in, opt_count_long, &calls), 0);
    assert_int_equal(calls, 1);                /* one word of n/2 backslashes: refused */
    /* only spaces */
    memset(in, ' ', n);
    calls = 0;
    assert_int_equal(pgw_startup_options(in, opt_count_long, &calls), 0);
    assert_int_equal(calls, 0);
    /* many words */
    size_t o = 0;
    while (o + 8 < n) {
        memcpy(in + o, "-c a=1 ", 7);
        o += 7;
    }
    in[o] = '\0';
    calls = 0;
    assert_int_equal(pgw_startup_options(in, opt_count_long, &calls), 0);
    assert_int_equal(calls, o / 7);
    /* every byte value but NUL, one at a time after -c a= : never more than one call */
    for (int c = 1; c < 256; c++) {
        char one[16];
        snprintf(one, sizeof(one), "-c a=%c", c);
        calls = 0;
        assert_int_equal(pgw_startup_options(one, opt_count_long, &calls), 0);
        assert_true(calls <= 1);
    }
    free(in);
}

/* ---- dollar quoting ---- */

static const char *dtag(const char *value)
{
    static char tag[PGW_DOLLAR_TAG_MAX];
    pgw_dollar_tag(value, tag);
    return tag;
}

static void test_dollar_tag(void **state)
{
    (void)state;
    static const struct { const char *value, *want; } cases[] = {
        { "", "$pgw$" },
        { "plain", "$pgw$" },
        { "a\\'b", "$pgw$" },
        { "$", "$pgw$" },              /* "$$pgw$": "$$" is another delimiter */
        { "$$", "$pgw$" },
        { "x$pg", "$pgw$" },           /* "$pg$" is not "$pgw$" */
        { "x$pgwa", "$pgw$" },         /* "$pgwa$" neither */
        { "$pgw$", "$pgw1$" },
        { "x$pgw", "$pgw1$" },         /* the closing '$' would complete "$pgw$" */
        { "$pgw$ $pgw1$ x$pgw2", "$pgw3$" },
        { "$pgw1$", "$pgw$" },
        { "$pgw01$ $pgw0$ $pgw$", "$pgw1$" },   /* leading zeros: not ours */
        { "$pgw1x$pgw$", "$pgw1$" },
        { "$pgw$pgw1", "$pgw2$" },              /* "$pgw1" at the end */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_string_equal(dtag(cases[i].value), cases[i].want);
    /* many delimiters in one value: a tag it holds nowhere, still short */
    char big[8000] = "";
    for (int k = 0; k < 500; k++) {
        char one[16];
        snprintf(one, sizeof(one), k ? "$pgw%d$" : "$pgw$", k);
        strcat(big, one);
    }
    assert_string_equal(dtag(big), "$pgw500$");
    /* a value naming every tag of the one-pass search: on tag by tag, and
     * one ending a tag past them is still seen */
    size_t cap = 4200 * 12, o = 0;
    char *huge = malloc(cap);
    assert_non_null(huge);
    for (unsigned k = 0; k < 4097; k++)
        o += (size_t)snprintf(huge + o, cap - o, k ? "$pgw%u$" : "$pgw$", k);
    assert_string_equal(dtag(huge), "$pgw4097$");
    snprintf(huge + o, cap - o, "x$pgw4097");
    assert_string_equal(dtag(huge), "$pgw4098$");
    free(huge);
}

/* ---- LISTEN / UNLISTEN statements (notify.c takes them) ---- */

static enum pgw_listen_kind lp(const char *sql, char *chan)
{
    return pgw_listen_parse(sql, strlen(sql), NULL, chan, NULL);
}

static void test_listen_parse(void **state)
{
    (void)state;
    char chan[PGW_CHANNEL_UTF8_MAX + 1];
    struct { const char *sql; enum pgw_listen_kind kind; const char *chan; } ok[] = {
        { "LISTEN foo", PGW_LISTEN, "foo" },
        { "listen Foo_Bar$1", PGW_LISTEN, "foo_bar$1" },     /* unquoted: lowered */
        { "  \t\nLiStEn\tx ; \n", PGW_LISTEN, "x" },
        { "LISTEN \"Mixed Case\"", PGW_LISTEN, "Mixed Case" },
        { "LISTEN \"a\"\"b\";", PGW_LISTEN, "a\"b" },       /* "" is one quote */
        { "LISTEN\"q\"", PGW_LISTEN, "q" },
        { "LISTEN _x", PGW_LISTEN, "_x" },
        { "LISTEN \xc3\xa9t\xc3\xa9", PGW_LISTEN, "\xc3\xa9t\xc3\xa9" },  /* high bytes kept */
        { "unlisten foo;", PGW_UNLISTEN, "foo" },
        { "UNLISTEN *", PGW_UNLISTEN_ALL, "" },
        { "UNLISTEN*;", PGW_UNLISTEN_ALL, "" },
        /* comments are white space between the words (block ones nest) */
        { "LISTEN foo -- comment", PGW_LISTEN, "foo" },
        { "/* c */ LISTEN foo", PGW_LISTEN, "foo" },
        { "LISTEN foo/* c */", PGW_LISTEN, "foo" },
        { "UNLISTEN /* app=x */ a", PGW_UNLISTEN, "a" },
        { "--c\nUNLISTEN/*x*/*--y\n;--z", PGW_UNLISTEN_ALL, "" },
        { "unlisten /* a /* b */ c */\"Q\"/**/;", PGW_UNLISTEN, "Q" },
        /* quoted, or an unreserved / column-name keyword, or longer: a name */
        { "LISTEN \"select\"", PGW_LISTEN, "select" },
        { "LISTEN name", PGW_LISTEN, "name" },
        { "LISTEN int", PGW_LISTEN, "int" },
        { "LISTEN selects", PGW_LISTEN, "selects" },
        { "LISTEN user_x", PGW_LISTEN, "user_x" },
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        memset(chan, 'z', sizeof(chan));
        assert_int_equal(lp(ok[i].sql, chan), ok[i].kind);
        if (ok[i].kind != PGW_UNLISTEN_ALL)
            assert_string_equal(chan, ok[i].chan);
    }
    const char *none[] = {
        "", "LISTEN", "LISTEN ;", "LISTENfoo", "LISTEN foo bar", "LISTEN foo;;",
        "LISTEN foo; select 1", "LISTEN * ", "LISTEN \"\"", "LISTEN \"open",
        "LISTEN 1abc", "LISTEN $x", "NOTIFY foo",
        /* a comment not closed, or closed one level short: PostgreSQL's error */
        "LISTEN foo /* c", "LISTEN foo /* a /* b */", "/*/ LISTEN foo", "LISTEN/**",
        /* \v is no white space to PostgreSQL 15 (42601) */
        "UNLISTEN\va", "\vLISTEN a", "LISTEN a\v", "select 1", "UNLISTEN", "UNLISTEN **",
        "LISTEN a\"b\"", "XLISTEN foo", "LISTENX foo",
        /* reserved and type/function-name keywords are no ColId unquoted:
         * PostgreSQL's 42601, the server's to say */
        "LISTEN select", "UNLISTEN FROM", "unlisten table;", "LISTEN user", "LISTEN inner",
        "UNLISTEN Verbose",
        /* over 63 bytes and not ASCII: where PostgreSQL cuts it depends on
         * the database's encoding */
        ("LISTEN \"\xc3\xa9" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""),
        "LISTEN aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9",
    };
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
        assert_int_equal(lp(none[i], chan), PGW_LISTEN_NONE);
    /* Longer (ASCII): cut to 63 bytes, as PostgreSQL truncates it. */
    assert_int_equal(lp("LISTEN aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaBBB;",
                        chan), PGW_LISTEN);
    assert_int_equal(strlen(chan), 63);
    assert_int_equal(lp("UNLISTEN \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\"B\"",
                        chan), PGW_UNLISTEN);
    assert_int_equal(strlen(chan), 63);
    /* 63 bytes fit */
    char max[80] = "LISTEN ";
    memset(max + 7, 'b', 63);
    max[70] = '\0';
    assert_int_equal(lp(max, chan), PGW_LISTEN);
    assert_int_equal(strlen(chan), 63);
    /* len bounds the text: what follows is not read */
    assert_int_equal(pgw_listen_parse("LISTEN ab; select 1", 10, NULL, chan, NULL), PGW_LISTEN);
    assert_string_equal(chan, "ab");
    /* a NUL inside is not white space */
    assert_int_equal(pgw_listen_parse("LISTEN a\0", 9, NULL, chan, NULL), PGW_LISTEN_NONE);
}

/* A name over 63 bytes as PostgreSQL 15's truncate_identifier cuts it in
 * a UTF8 database (pg_mbcliplen: at the last whole character), with the
 * whole name for its NOTICE 42622; the cut names checked against psql on
 * a UTF8 cluster. */
static void test_listen_parse_cut(void **state)
{
    (void)state;
    char chan[PGW_CHANNEL_UTF8_MAX + 1];
    struct pgw_ident_full full;
    char e29[64] = "", e40[100] = "", u35[300] = "";
    for (int i = 0; i < 29; i++)
        strcat(e29, "\xc3\xa9");                   /* "pgw_" and 29 of them: 62 bytes */
    for (int i = 0; i < 40; i++)
        strcat(e40, "\xc3\xa9");
    for (int i = 0; i < 35; i++)
        strcat(u35, "\\00e9");
    char sql[600], want_full[200];
    struct { const char *fmt, *arg; } ok[] = {
        { "LISTEN \"pgw_%s\"", e40 },               /* quoted */
        { "listen pgw_%s", e40 },                   /* unquoted: high bytes as they are */
        { "UNLISTEN U&\"pgw_%s\"", u35 },           /* decoded, then cut */
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        snprintf(sql, sizeof(sql), ok[i].fmt, ok[i].arg);
        memset(&full, 'z', sizeof(full));
        assert_int_equal(pgw_listen_parse(sql, strlen(sql), &pgw_ident_clip_utf8, chan, &full),
                         i == 2 ? PGW_UNLISTEN : PGW_LISTEN);
        snprintf(want_full, sizeof(want_full), "pgw_%s", e29);
        assert_string_equal(chan, want_full);
        assert_true(full.cut);
        snprintf(want_full, sizeof(want_full), "pgw_%s", i == 2 ? e29 : e40);
        if (i == 2) {                               /* 35 decoded */
            char e35[100] = "";
            for (int k = 0; k < 35; k++)
                strcat(e35, "\xc3\xa9");
            snprintf(want_full, sizeof(want_full), "pgw_%s", e35);
        }
        assert_string_equal(full.name, want_full);
        pgw_ident_full_free(&full);
        /* Not UTF8 (where the database cuts is unknown): not read. */
        assert_int_equal(pgw_listen_parse(sql, strlen(sql), NULL, chan, NULL), PGW_LISTEN_NONE);
    }
    /* A 4-byte character across byte 63: cut before it. */
    snprintf(sql, sizeof(sql), "LISTEN \"%.61s\xf0\x9f\x98\x80\"",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_int_equal(pgw_listen_parse(sql, strlen(sql), &pgw_ident_clip_utf8, chan, &full), PGW_LISTEN);
    assert_int_equal(strlen(chan), 61);
    assert_true(full.cut);
    pgw_ident_full_free(&full);
    /* 63 bytes fit: not cut. */
    snprintf(sql, sizeof(sql), "LISTEN \"pgw_%s\xc3\xa9" "a\"", e29);    /* 4 + 58 + 3 = 65 */
    assert_int_equal(pgw_listen_parse(sql, strlen(sql), &pgw_ident_clip_utf8, chan, &full), PGW_LISTEN);
    assert_int_equal(strlen(chan), 62);
    pgw_ident_full_free(&full);
    snprintf(sql, sizeof(sql), "LISTEN \"pgw_%sa\"", e29);             /* 63 */
    assert_int_equal(pgw_listen_parse(sql, strlen(sql), &pgw_ident_clip_utf8, chan, &full), PGW_LISTEN);
    assert_int_equal(strlen(chan), 63);
    assert_false(full.cut);
    /* ASCII: cut whatever the encoding, and said so. */
    char ascii[100] = "LISTEN ";
    memset(ascii + 7, 'a', 68);
    ascii[75] = '\0';
    assert_int_equal(pgw_listen_parse(ascii, strlen(ascii), NULL, chan, &full), PGW_LISTEN);
    assert_true(full.cut);
    assert_int_equal(strlen(chan), 63);
    assert_int_equal(strlen(full.name), 68);
    pgw_ident_full_free(&full);
    /* Not valid UTF-8 past the cut: the server reports it. */
    snprintf(sql, sizeof(sql), "LISTEN \"pgw_%s\xc3\xa9\xff\"", e29);
    assert_int_equal(pgw_listen_parse(sql, strlen(sql), &pgw_ident_clip_utf8, chan, &full), PGW_LISTEN_NONE);
    /* Any length: PostgreSQL cuts it all the same (pgwharf read none over
     * 1023 bytes). */
    static char big[5000] = "LISTEN \"";
    memset(big + 8, 'a', 4000);
    strcpy(big + 4008, "\";");
    assert_int_equal(pgw_listen_parse(big, strlen(big), NULL, chan, &full), PGW_LISTEN);
    assert_int_equal(strlen(chan), 63);
    assert_true(full.cut);
    assert_int_equal(strlen(full.name), 4000);
    pgw_ident_full_free(&full);
    snprintf(big, sizeof(big), "UNLISTEN U&\"");
    for (int i = 0; i < 900; i++)
        strcat(big, "\\00e9");
    strcat(big, "\"");
    assert_int_equal(pgw_listen_parse(big, strlen(big), &pgw_ident_clip_utf8, chan, &full),
                     PGW_UNLISTEN);
    assert_int_equal(strlen(chan), 62);
    assert_int_equal(strlen(full.name), 1800);
    pgw_ident_full_free(&full);
}

/* A database in another encoding cuts where its clip says; a name that
 * fits there is not cut, however long in UTF-8. */
static ssize_t clip_two_bytes_each(const void *arg, const char *name, size_t n)
{
    (void)arg;
    (void)n;
    size_t chars = 0, i = 0;        /* each UTF-8 character one byte there */
    while (name[i] && chars < PGW_CHANNEL_MAX) {
        i++;
        while (((unsigned char)name[i] & 0xC0) == 0x80)
            i++;
        chars++;
    }
    return (ssize_t)i;
}

static void test_listen_parse_clip(void **state)
{
    (void)state;
    const struct pgw_ident_clip one = { clip_two_bytes_each, NULL };
    char chan[PGW_CHANNEL_UTF8_MAX + 1], sql[400] = "LISTEN \"";
    struct pgw_ident_full full;
    for (int i = 0; i < 60; i++)
        strcat(sql, "\xc3\xa9");                 /* 120 bytes, 60 characters */
    strcat(sql, "\"");
    assert_int_equal(pgw_listen_parse(sql, strlen(sql), &one, chan, &full), PGW_LISTEN);
    assert_int_equal(strlen(chan), 120);
    assert_false(full.cut);
    sql[strlen(sql) - 1] = '\0';
    strcat(sql, "abcd\"");                         /* 64 characters: 63 kept */
    assert_int_equal(pgw_listen_parse(sql, strlen(sql), &one, chan, &full), PGW_LISTEN);
    assert_int_equal(strlen(chan), 123);
    assert_true(full.cut);
    assert_int_equal(strlen(full.name), 124);
    pgw_ident_full_free(&full);
    /* No clip: not read. */
    assert_int_equal(pgw_listen_parse(sql, strlen(sql), NULL, chan, &full), PGW_LISTEN_NONE);
    assert_false(full.cut);
}

/* U&"..." names: their escapes decoded as PostgreSQL does, to UTF-8; one
 * PostgreSQL refuses is not read (the server reports it). */
static void test_listen_parse_unicode_escapes(void **state)
{
    (void)state;
    char chan[PGW_CHANNEL_UTF8_MAX + 1];
    struct { const char *sql; enum pgw_listen_kind kind; const char *chan; } ok[] = {
        { "LISTEN U&\"d\\0061t\\+000061\"", PGW_LISTEN, "data" },
        { "listen u&\"X\\0041\"", PGW_LISTEN, "XA" },                /* not lowered */
        { "UNLISTEN U&\"d!0061ta\" UESCAPE '!'", PGW_UNLISTEN, "data" },
        { "LISTEN U&\"d!0061ta\"uescape'!';", PGW_LISTEN, "data" },
        { "LISTEN U&\"!!a\" UESCAPE\t'!' ", PGW_LISTEN, "!a" },      /* !! is one ! */
        { "LISTEN U&\"a\\\\b\"", PGW_LISTEN, "a\\b" },                /* \\ is one \ */
        { "LISTEN U&\"a\"\"\\0062\"", PGW_LISTEN, "a\"b" },           /* "" read first */
        { "LISTEN U&\"\\00e9\\+01F600\"", PGW_LISTEN, "\xc3\xa9\xf0\x9f\x98\x80" },
        { "LISTEN U&\"a\\D83D\\DE00\"", PGW_LISTEN, "a\xf0\x9f\x98\x80" },   /* a pair */
        { "LISTEN U&\"plain\"", PGW_LISTEN, "plain" },
        { "LISTEN U&\"\\+00007a\"", PGW_LISTEN, "z" },
        /* the default written out (PostgreSQL allows it; it was not read,
         * and the LISTEN ran on a pooled server, never heard) */
        { "LISTEN U&\"a\\0062\" UESCAPE '\\'", PGW_LISTEN, "ab" },
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        memset(chan, 'z', sizeof(chan));
        assert_int_equal(lp(ok[i].sql, chan), ok[i].kind);
        assert_string_equal(chan, ok[i].chan);
    }
    const char *none[] = {
        "LISTEN U&\"\\zz\"", "LISTEN U&\"a\\0000\"", "LISTEN U&\"\\+110000\"",
        "LISTEN U&\"\\006\"", "LISTEN U&\"\\+00006\"", "LISTEN U&\"a\\\"",
        "LISTEN U&\"\\D83D\"", "LISTEN U&\"\\D83Dx\"", "LISTEN U&\"\\DE00\"",
        "LISTEN U&\"\\D83D\\0041\"", "LISTEN U&\"\"", "LISTEN U&\"open",
        "LISTEN U& \"a\"", "LISTEN U&a", "LISTEN U&\"a\" UESCAPE",
        "LISTEN U&\"a\" UESCAPE 'ab'", "LISTEN U&\"a\" UESCAPE '+'",
        "LISTEN U&\"a\" UESCAPE 'f'", "LISTEN U&\"a\" UESCAPE '\"'",
        "LISTEN U&\"a\" UESCAPE ' '", "LISTEN U&\"a\" UESCAPE ''",
        "LISTEN U&\"a\" UESCAPE ''''",
        "LISTEN U&\"a\" UESCAPE E'!'", "LISTEN U&\"a\" UESCAPE '!",
        "LISTEN U&\"a\" /* c */ UESCAPE '!'", "LISTEN U&\"a\" x",
        "LISTEN \"a\" UESCAPE '!'", "LISTEN U&\"a\" UESCAPE '\xc3\xa9'",
        /* 64 bytes once decoded: PostgreSQL would cut it */
        "LISTEN U&\"\\00e9aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
    };
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
        assert_int_equal(lp(none[i], chan), PGW_LISTEN_NONE);
    /* 63 bytes once decoded fit, however long the text */
    char max[600] = "LISTEN U&\"";
    size_t o = strlen(max);
    for (int k = 0; k < 63; k++)
        o += (size_t)snprintf(max + o, sizeof(max) - o, "\\+000062");
    snprintf(max + o, sizeof(max) - o, "\"");
    assert_int_equal(lp(max, chan), PGW_LISTEN);
    assert_int_equal(strlen(chan), 63);
    char name[PGW_CHANNEL_UTF8_MAX + 1];
    const char *d = "DEALLOCATE U&\"S\\005f1\"";
    assert_true(pgw_deallocate_parse(d, strlen(d), NULL, name, NULL));
    assert_string_equal(name, "S_1");
    const char *sp = "SAVEPOINT U&\"S!0050\" UESCAPE '!'";
    assert_int_equal(pgw_sp_parse(sp, strlen(sp), name), PGW_SP_SAVE);
    assert_string_equal(name, "SP");
}

static void test_deallocate_parse(void **state)
{
    (void)state;
    char name[PGW_CHANNEL_UTF8_MAX + 1];
    static const struct { const char *sql; bool ok; const char *name; } cases[] = {
        { "DEALLOCATE a", true, "a" },
        { " deallocate S_1 ;", true, "s_1" },                        /* lowered */
        { "DEALLOCATE \"S_1\"", true, "S_1" },                       /* quoted: as written */
        { "deallocate prepare \"x\"\"y\"", true, "x\"y" },
        { "DEALLOCATE PREPARE", true, "prepare" },                    /* a statement's name */
        { "DEALLOCATE prepare;", true, "prepare" },
        { "DEALLOCATE \"ALL\"", true, "ALL" },
        { "DEALLOCATE ALL", false, NULL },
        { "deallocate prepare all", false, NULL },
        { "DEALLOCATE a b", false, NULL },
        { "DEALLOCATE /* c */ a", true, "a" },                  /* a comment: white space */
        { "DEALLOCATE", false, NULL },
        { "DEALLOCATE \"\"", false, NULL },
        { "DEALLOCATEa", false, NULL },
        { "DEALLOCATE a; DEALLOCATE b", false, NULL },
        { "select 1", false, NULL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool ok = pgw_deallocate_parse(cases[i].sql, strlen(cases[i].sql), NULL, name, NULL);
        assert_int_equal(ok, cases[i].ok);
        if (ok)
            assert_string_equal(name, cases[i].name);
    }
    /* A longer name, cut as PostgreSQL's scanner cuts it (its NOTICE names
     * the whole one). */
    struct pgw_ident_full full;
    char d[96] = "DEALLOCATE ";
    memset(d + 11, 's', 70);
    d[81] = '\0';
    assert_true(pgw_deallocate_parse(d, strlen(d), NULL, name, &full));
    assert_true(full.cut);
    assert_int_equal(strlen(name), 63);
    assert_string_equal(full.name, d + 11);
    pgw_ident_full_free(&full);
    assert_true(pgw_deallocate_parse("deallocate s", 12, NULL, name, &full));
    assert_false(full.cut);
    /* Not ASCII, in a UTF8 database: cut at the last whole character. */
    char e[200] = "DEALLOCATE \"x";
    for (int k = 0; k < 40; k++)
        strcat(e, "\xc3\xa9");
    strcat(e, "\"");
    assert_false(pgw_deallocate_parse(e, strlen(e), NULL, name, NULL));     /* unknown cut */
    assert_true(pgw_deallocate_parse(e, strlen(e), &pgw_ident_clip_utf8, name, &full));
    assert_true(full.cut);
    assert_int_equal(strlen(name), 63);                 /* x and 31 of them */
    pgw_ident_full_free(&full);
    assert_false(full.cut);
}

/* SQL PREPARE and EXECUTE (relay.c stmt_sql_*): a statement name as
 * PostgreSQL reads it, ASCII only. */
static void test_prepare_parse(void **state)
{
    (void)state;
    char name[PGW_NAME_MAX + 1];
    static const struct {
        const char *sql;
        enum pgw_sql_name_kind kind;
        const char *name, *rest;
    } cases[] = {
        { "PREPARE p AS SELECT 1 INTO TEMP t", PGW_SQL_NAME_READ, "p", " AS SELECT" },
        { " /* c */ prepare MiX(int, text) as select $1", PGW_SQL_NAME_READ, "mix", "(int" },
        { "PREPARE \"MiX\"AS select 1", PGW_SQL_NAME_READ, "MiX", "AS" },
        { "prepare \"a\"\"b\" as select 1", PGW_SQL_NAME_READ, "a\"b", " as" },
        { "PREPARE U&\"d\\0061t\\+000061\" AS select 1", PGW_SQL_NAME_READ, "data", " AS" },
        { "PREPARE transaction AS select 1", PGW_SQL_NAME_READ, "transaction", " AS" },
        { "PREPARE transaction (int) AS select $1", PGW_SQL_NAME_READ, "transaction", " (int" },
        { "PREPARE --c\n prepare AS select 1", PGW_SQL_NAME_READ, "prepare", " AS" },
        { "PREPARE TRANSACTION 'gid'", PGW_SQL_NAME_NONE, NULL, NULL },
        { "prepare transaction E'gid'", PGW_SQL_NAME_NONE, NULL, NULL },
        { "PREPARE \"\xc3\xa9t\xc3\xa9\" AS select 1", PGW_SQL_NAME_UNREAD, NULL, NULL },
        { "PREPARE U&\"\\00e9\" AS select 1", PGW_SQL_NAME_UNREAD, NULL, NULL },
        { "PREPARE \"open AS select 1", PGW_SQL_NAME_UNREAD, NULL, NULL },
        { "PREPARE 'x' AS select 1", PGW_SQL_NAME_UNREAD, NULL, NULL },
        { "PREPARE", PGW_SQL_NAME_UNREAD, NULL, NULL },
        { "PREPARED p", PGW_SQL_NAME_NONE, NULL, NULL },
        { "COMMIT PREPARED 'gid'", PGW_SQL_NAME_NONE, NULL, NULL },
        { "select 1", PGW_SQL_NAME_NONE, NULL, NULL },
        { "", PGW_SQL_NAME_NONE, NULL, NULL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *sql = cases[i].sql;
        size_t rest = 999;
        enum pgw_sql_name_kind k = pgw_prepare_parse(sql, strlen(sql), name, &rest);
        assert_int_equal(k, cases[i].kind);
        if (k == PGW_SQL_NAME_READ) {
            assert_string_equal(name, cases[i].name);
            assert_true(rest <= strlen(sql));
            assert_memory_equal(sql + rest, cases[i].rest, strlen(cases[i].rest));
        }
        /* Every piece of it cut short reads within its bytes (the relay
         * takes a name that reaches the cut as not read). */
        for (size_t n = 0; n < strlen(sql); n++) {
            char *cut = malloc(n ? n : 1);
            assert_non_null(cut);
            memcpy(cut, sql, n);
            if (pgw_prepare_parse(cut, n, name, &rest) == PGW_SQL_NAME_READ)
                assert_true(rest <= n && strlen(name) <= PGW_NAME_MAX);
            free(cut);
        }
    }
    /* 70 bytes: PostgreSQL keeps 63 (NAMEDATALEN - 1). */
    char d[96] = "PREPARE ";
    memset(d + 8, 'S', 70);
    strcpy(d + 78, " AS select 1");
    size_t rest = 0;
    assert_int_equal(pgw_prepare_parse(d, strlen(d), name, &rest), PGW_SQL_NAME_READ);
    assert_int_equal(strlen(name), 63);
    assert_int_equal(name[0], 's');
    assert_int_equal(rest, 78);
}

static void test_execute_next(void **state)
{
    (void)state;
    char name[PGW_NAME_MAX + 1];
    const char *sql = "EXECUTE p(1); explain analyze execute \"Q\"; create table x as "
                      "Execute /* c */ r; select 'execute s'; execute 'dyn'; executed t; "
                      "execute format('x'); xexecute u; execute \"open";
    size_t at = 0, n = strlen(sql);
    const char *want[] = { "p", "Q", "r", "s", "format" };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(pgw_sql_execute_next(sql, n, &at, name), PGW_SQL_NAME_READ);
        assert_string_equal(name, want[i]);
    }
    assert_int_equal(pgw_sql_execute_next(sql, n, &at, name), PGW_SQL_NAME_UNREAD);
    assert_int_equal(pgw_sql_execute_next(sql, n, &at, name), PGW_SQL_NAME_NONE);
    assert_int_equal(at, n);
    at = 0;
    assert_int_equal(pgw_sql_execute_next("execute U&\"\\00e9\"", 17, &at, name),
                     PGW_SQL_NAME_UNREAD);
    at = 0;
    assert_int_equal(pgw_sql_execute_next("do $$ begin execute 'x'; end $$", 31, &at, name),
                     PGW_SQL_NAME_NONE);
    at = 0;
    assert_int_equal(pgw_sql_execute_next("execute", 7, &at, name), PGW_SQL_NAME_NONE);
    at = 0;
    assert_int_equal(pgw_sql_execute_next("execute u&'x'", 13, &at, name), PGW_SQL_NAME_NONE);
}

static void test_sp_parse(void **state)
{
    (void)state;
    char name[PGW_CHANNEL_MAX + 1];
    static const struct { const char *sql; enum pgw_sp_kind kind; const char *name; } cases[] = {
        { "SAVEPOINT a", PGW_SP_SAVE, "a" },
        { " savepoint Sp_One ;", PGW_SP_SAVE, "sp_one" },            /* lowered */
        { "SAVEPOINT \"Sp\"\"x\"", PGW_SP_SAVE, "Sp\"x" },          /* quoted: as written */
        { "release sp", PGW_SP_RELEASE, "sp" },
        { "RELEASE SAVEPOINT \"B\"", PGW_SP_RELEASE, "B" },
        { "rollback to a", PGW_SP_ROLLBACK_TO, "a" },
        { "ROLLBACK TO SAVEPOINT A;", PGW_SP_ROLLBACK_TO, "a" },
        { "rollback work to savepoint b", PGW_SP_ROLLBACK_TO, "b" },
        { "ROLLBACK TRANSACTION TO c", PGW_SP_ROLLBACK_TO, "c" },
        { "rollback", PGW_SP_ROLLBACK, "" },
        { "ROLLBACK AND CHAIN", PGW_SP_ROLLBACK, "" },
        { "rollback work", PGW_SP_ROLLBACK, "" },
        { "SAVEPOINT a b", PGW_SP_SAVE, "" },                       /* not read: no name */
        { "SAVEPOINT /* c */ a", PGW_SP_SAVE, "a" },                /* a comment: white space */
        { "rollback to", PGW_SP_ROLLBACK_TO, "" },
        { "select 1", PGW_SP_NONE, "" },
        { "SAVEPOINTS a", PGW_SP_NONE, "" },
        { "releases a", PGW_SP_NONE, "" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(name, 'z', sizeof(name));
        assert_int_equal(pgw_sp_parse(cases[i].sql, strlen(cases[i].sql), name), cases[i].kind);
        assert_string_equal(name, cases[i].name);
    }
    assert_true(pgw_sp_may_be("  sav", 5));
    assert_true(pgw_sp_may_be("Rollback to x", 13));
    assert_true(pgw_sp_may_be("RELEASE", 7));
    assert_false(pgw_sp_may_be("select", 6));
    assert_false(pgw_sp_may_be("rolx", 4));
}

/* ---- statements of a Query ---- */

static void test_statement_end(void **state)
{
    (void)state;
    static const struct { const char *sql; size_t end; } cases[] = {
        { "LISTEN a; LISTEN b", 8 },
        { "select 1", 8 },                              /* none: the whole text */
        { ";", 0 },
        { "select 'a;b'; listen x", 12 },               /* inside a literal */
        { "select 'it''s;'; x", 15 },                   /* '' is a quote */
        { "select E'\\';'; x", 13 },                  /* E'' takes \' */
        { "select e'a\\'b;'; x", 15 },
        { "select ne'a\\';x", 13 },                   /* the name ne: a plain literal */
        { "select \"a;\"\"b\"; x", 14 },             /* a quoted name, "" inside */
        { "select 1 -- a; b\n; x", 17 },               /* a line comment */
        { "select 1 -- a; b\r; x", 17 },               /* a lone CR ends it too */
        { "select /* a; /* b; */ c; */ 1; x", 29 },     /* comments nest */
        { "select $$a;b$$; x", 14 },
        { "select $f$ $$; $f$; x", 18 },                /* $$ inside $f$ */
        { "select $1; x", 9 },                          /* a parameter, no quote */
        { "select a$b; x", 10 },                        /* $ inside a name */
        { "select $q$ unterminated; x", 26 },
        { "select 'open; x", 15 },
        { "select \xc3\xa9; x", 9 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t got = pgw_sql_statement_end(cases[i].sql, strlen(cases[i].sql));
        if (got != cases[i].end)
            fail_msg("case %zu: \"%s\" -> %zu, want %zu", i, cases[i].sql, got, cases[i].end);
    }
    /* len bounds it */
    assert_int_equal(pgw_sql_statement_end("ab;c", 2), 2);
}

/* Where pgw_sql_scan_feed finds the end of sql's first statement when sql
 * comes in pieces cut at cut1 and cut2. */
static size_t scan_end_cut(const char *sql, size_t len, size_t cut1, size_t cut2)
{
    struct pgw_sql_scan sc;
    pgw_sql_scan_init(&sc);
    size_t cuts[] = { 0, cut1, cut2, len };
    for (int k = 0; k < 3; k++) {
        size_t got = pgw_sql_scan_feed(&sc, sql + cuts[k], cuts[k + 1] - cuts[k]);
        if (got < cuts[k + 1] - cuts[k])
            return cuts[k] + got;
    }
    return len;
}

static void test_statement_end_in_pieces(void **state)
{
    (void)state;
    /* The same answer as pgw_sql_statement_end, the text cut anywhere
     * (twice: a piece of one byte in the middle of each pair). */
    static const char *const cases[] = {
        "LISTEN a; LISTEN b", "select 'it''s;'; x", "select E'\\';'; x", "select e'a\\'b;'; x",
        "select ne'a\\';x", "x'a'E'\\';'; y", "select \"a;\"\"b\"; x", "select 1 -- a; b\n; x",
        "select 1 -- a; b\r; x", "--\r;x",
        "select 1 - -1; x", "select /* a; /* b; */ c; */ 1; x", "select /***/ 1; x",
        "select /*/ ; */ 1; x", "select $$a;b$$; x", "select $f$ $$; $f$; x", "select $1; x",
        "select a$b; x", "select $q$ unterminated; x", "select 'open; x", "select \xc3\xa9; x",
        "$$$$;x", "$a$$a$;$a$;y", "$$x$$$$;y$$; z", "$E'\\';'; x", "select 4/2; x",
        "select $a$ $a $a$; x", "$ab $; x", "select $_b1$;$_b1$ ;", "-", "/",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *sql = cases[i];
        size_t len = strlen(sql), want = pgw_sql_statement_end(sql, len);
        for (size_t a = 0; a <= len; a++)
            for (size_t b = a; b <= len && b <= a + 1; b++) {
                size_t got = scan_end_cut(sql, len, a, b);
                if (got != want)
                    fail_msg("case %zu: \"%s\" cut at %zu, %zu -> %zu, want %zu", i, sql, a, b,
                             got, want);
            }
    }
    /* Random texts of the characters that matter, cut at random. */
    static const char alpha[] = "';\"-/*$Ee\\ \n\rab1_";
    unsigned seed = 12345;
    for (int t = 0; t < 200000; t++) {
        char sql[24];
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % sizeof(sql);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            sql[i] = alpha[(seed >> 16) % (sizeof(alpha) - 1)];
        }
        seed = seed * 1103515245u + 12345u;
        size_t a = len ? (seed >> 16) % (len + 1) : 0;
        seed = seed * 1103515245u + 12345u;
        size_t b = a + (len - a ? (seed >> 16) % (len - a + 1) : 0);
        size_t want = pgw_sql_statement_end(sql, len), got = scan_end_cut(sql, len, a, b);
        if (got != want)
            fail_msg("\"%.*s\" cut at %zu, %zu -> %zu, want %zu", (int)len, sql, a, b, got, want);
    }
    /* Statement after statement, the scanner started again after each ';'. */
    const char *sql = "a 'x;'; b $$;$$; c";
    struct pgw_sql_scan sc;
    pgw_sql_scan_init(&sc);
    assert_int_equal(pgw_sql_scan_feed(&sc, sql, strlen(sql)), 6);
    pgw_sql_scan_init(&sc);
    assert_int_equal(pgw_sql_scan_feed(&sc, sql + 7, strlen(sql) - 7), 8);
    /* A tag too long to match: no ';' ends the statement from there on. */
    char longtag[400];
    memset(longtag, 'x', sizeof(longtag));
    longtag[0] = longtag[300] = '$';
    memcpy(longtag + 301, " ; 1", 5);
    pgw_sql_scan_init(&sc);
    assert_int_equal(pgw_sql_scan_feed(&sc, longtag, strlen(longtag)), strlen(longtag));
    assert_true(sc.lost);
}

/* A login's DateStyle given twice, as PostgreSQL 15 applies the two in
 * turn (each case checked against it): pgwharf kept the last alone, and
 * "German" then "SQL" was "SQL, MDY" on a fresh server, not "SQL, DMY". */
static void test_datestyle_merge(void **state)
{
    (void)state;
    static const struct {
        const char *prev, *next, *want;     /* want NULL: not merged */
    } cases[] = {
        { "German", "SQL", "SQL, DMY" },
        { "SQL", "YMD", "SQL, YMD" },
        { "YMD", "SQL", "SQL, YMD" },
        { "YMD", "German", "German, DMY" },          /* German sets DMY */
        { "ISO, YMD", "German", "German, DMY" },
        { "YMD", "German, MDY", "German, MDY" },      /* unless it names one */
        { "euro", "postgres", "Postgres, DMY" },
        { "SQL, DMY", "iso", "ISO, DMY" },
        { " sql ,us ", "Postgresql", "Postgres, MDY" },
        { "nonEuropean", "dmy", "DMY" },              /* no style named: one part */
        { "ISO", "SQL", "SQL" },
        { "European", "ISO, MDY", "ISO, MDY" },
        { "German", "default", "German, DMY" },       /* DEFAULT alone: the one before */
        { "SQL, YMD", " DEFAULT ", "SQL, YMD" },
        { "YMD", "default", "YMD" },
        { "default", "SQL", NULL },                   /* DEFAULT first: not read here */
        { "German", "default, YMD", NULL },           /* DEFAULT with a part: neither */
        { "German", "bogus", NULL },
        { "German", "SQL, ISO", NULL },               /* two styles: refused there */
        { "German", "YMD, DMY", NULL },
        { "German", "SQL,", NULL },
        { "German", "\"SQL\"", NULL },
        { "German", "", NULL },
        { "bogus", "SQL", NULL },
        { "German", "SQLSQLSQLSQLSQLSQLSQL", NULL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[32] = "";
        bool ok = pgw_datestyle_merge(cases[i].prev, cases[i].next, out, sizeof(out));
        if (ok != (cases[i].want != NULL) || (ok && strcmp(out, cases[i].want) != 0))
            fail_msg("case %zu (%s then %s): %s \"%s\"", i, cases[i].prev, cases[i].next,
                     ok ? "merged" : "not merged", out);
    }
    char small[8];
    assert_false(pgw_datestyle_merge("German", "SQL", small, sizeof(small)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_startup_v3),
        cmocka_unit_test(test_startup_database_defaults_to_user),
        cmocka_unit_test(test_startup_no_user),
        cmocka_unit_test(test_startup_minor_and_protoopts),
        cmocka_unit_test(test_startup_too_many_protoopts),
        cmocka_unit_test(test_name_cliplen),
        cmocka_unit_test(test_startup_bad_version),
        cmocka_unit_test(test_ssl_gss_cancel),
        cmocka_unit_test(test_cancel_request_round_trip),
        cmocka_unit_test(test_startup_lengths),
        cmocka_unit_test(test_startup_every_truncation),
        cmocka_unit_test(test_msg_complete),
        cmocka_unit_test(test_wire_error_roundtrip),
        cmocka_unit_test(test_options_settings),
        cmocka_unit_test(test_options_refused_words),
        cmocka_unit_test(test_options_callback_stops),
        cmocka_unit_test(test_options_long_and_hostile),
        cmocka_unit_test(test_dollar_tag),
        cmocka_unit_test(test_listen_parse),
        cmocka_unit_test(test_listen_parse_cut),
        cmocka_unit_test(test_listen_parse_clip),
        cmocka_unit_test(test_listen_parse_unicode_escapes),
        cmocka_unit_test(test_sp_parse),
        cmocka_unit_test(test_deallocate_parse),
        cmocka_unit_test(test_prepare_parse),
        cmocka_unit_test(test_execute_next),
        cmocka_unit_test(test_statement_end),
        cmocka_unit_test(test_statement_end_in_pieces),
        cmocka_unit_test(test_datestyle_merge),
    };
    return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
