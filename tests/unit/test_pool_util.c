/*
 * test_pool_util.c - unit tests for pool/'s pure helpers: the SQLSTATE
 * guessed from libpq's connect error text (as libpq 15 words it), the
 * one-line trim of that text, the server parameter table (values and
 * names of any length, copies, out of memory), and the length of a pool's
 * turn.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include "pool/breaker.h"

static void t_sqlstate_table(void **state)
{
    static const struct { const char *msg, *want; } cases[] = {
        { "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password "
          "authentication failed for user \"bob\"\n", "28P01" },
        { "connection to server at \"127.0.0.1\", port 5432 failed: fe_sendauth: no "
          "password supplied\n", "28P01" },
        { "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  sorry, too "
          "many clients already\n", "53300" },
        { "FATAL:  remaining connection slots are reserved for non-replication superuser "
          "connections", "53300" },
        { "FATAL:  too many connections for role \"app\"", "53300" },
        { "FATAL:  must be superuser or replication role to start walsender", "42501" },
        { "FATAL:  permission denied to start WAL sender", "42501" },
        { "FATAL:  number of requested standby connections exceeds max_wal_senders "
          "(currently 10)", "53300" },
        { "FATAL:  no pg_hba.conf entry for replication connection from host \"127.0.0.1\", "
          "user \"app\", no encryption", "28000" },
        { "connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: FATAL:  database "
          "\"nope\" does not exist\n", "3D000" },
        { "FATAL:  role \"ghost\" does not exist", "28000" },
        { "FATAL:  the database system is starting up", "57P03" },
        { "FATAL:  the database system is shutting down", "57P03" },
        { "FATAL:  no pg_hba.conf entry for host \"10.0.0.1\", user \"x\", database \"y\"",
          "28000" },
        { "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  pg_hba.conf "
          "rejects connection for host \"127.0.0.1\", user \"app\", database \"db\", no "
          "encryption\n", "28000" },
        { "FATAL:  pg_hba.conf rejects replication connection for host \"127.0.0.1\", user "
          "\"app\", no encryption", "28000" },
        { "FATAL:  permission denied for database \"db\"", "42501" },
        { "connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs "
          "the server running on that host and accepting TCP/IP connections?\n", "08001" },
        { "could not translate host name \"nohost.invalid\" to address: Name or service "
          "not known", "08001" },
        { "server_connect_timeout (15.0 s) expired", "08001" },
        { "connection to server at 127.0.0.1:5432 failed: server_connect_timeout (15.0 s) "
          "expired", "08001" },
        { "connection to server at \"127.0.0.1\", port 5432 failed: could not read root "
          "certificate file \"/etc/x/ca.pem\": No such file or directory\n", "F0000" },
        { "certificate present, but not private key file \"/k.pem\"", "F0000" },
        { "could not open certificate file \"/c.pem\": Permission denied", "F0000" },
        { "SSL error: certificate verify failed", "08001" },   /* the server's certificate */
        /* libpq refusing an entry's option value before connecting, the
         * server refusing a login parameter: configuration */
        { "invalid sslmode value: \"requre\"", "F0000" },
        { "invalid channel_binding value: \"x\"", "F0000" },
        { "invalid sslcertmode value: \"x\"", "F0000" },           /* libpq 16 */
        { "invalid integer value \"ten\" for connection option \"connect_timeout\"",
          "F0000" },
        { "invalid SSL protocol version range", "F0000" },
        { "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  invalid value "
          "for parameter \"TimeZone\": \"Mars/Base\"\n", "22023" },
        { "FATAL:  unrecognized configuration parameter \"no_such\"", "42704" },
        /* ... and the other refusals of an entry's options (PostgreSQL's
         * process_postgres_switches and set_config_option at login): they
         * were 08006, a server down, and opened the breaker for every entry
         * on the server */
        { "FATAL:  -c foo requires a value", "42601" },
        { "FATAL:  --foo requires a value", "42601" },
        { "FATAL:  invalid command-line argument for server process: -Z", "42601" },
        { "FATAL:  1 kB is outside the valid range for parameter \"work_mem\" (64 .. "
          "2147483647)", "22023" },
        { "FATAL:  parameter \"enable_seqscan\" requires a Boolean value", "22023" },
        { "FATAL:  parameter \"shared_buffers\" cannot be changed without restarting the "
          "server", "55P02" },
        { "FATAL:  parameter \"wal_level\" cannot be changed now", "55P02" },
        { "FATAL:  parameter \"log_connections\" cannot be set after connection start",
          "55P02" },
        { "FATAL:  permission denied to set parameter \"log_statement\"", "42501" },
        { "FATAL:  invalid configuration parameter name \"a..b\"", "42602" },
        { "server closed the connection unexpectedly", "08006" },
        { "", "08006" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = pgw_pool_guess_sqlstate(cases[i].msg);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("case %zu: \"%s\" -> %s, want %s", i, cases[i].msg, got, cases[i].want);
    }
    assert_string_equal(pgw_pool_guess_sqlstate(NULL), "08006");
}

/* One host's TLS refusals (another host of a list may pass); a role's
 * limit or a dead server is no such thing. */
static void t_refusal_is_tls(void **state)
{
    (void)state;
    assert_true(pgw_pool_refusal_is_tls("connection to server at \"127.0.0.2\", port 5432 "
                                        "failed: server certificate for \"127.0.0.1\" (and 1 "
                                        "other name) does not match host name \"127.0.0.2\""));
    assert_true(pgw_pool_refusal_is_tls("SSL error: certificate verify failed"));
    assert_true(pgw_pool_refusal_is_tls("server does not support SSL, but SSL was required"));
    assert_true(pgw_pool_refusal_is_tls("could not get server's host name from server "
                                        "certificate"));
    assert_true(pgw_pool_refusal_is_local("SSL error: certificate verify failed"));
    assert_false(pgw_pool_refusal_is_tls("FATAL:  too many connections for role \"app\""));
    assert_false(pgw_pool_refusal_is_tls("Connection refused"));
    assert_false(pgw_pool_refusal_is_tls(NULL));
}

/* PostgreSQL 15's wording: a role's or database's own limit is that
 * pool's refusal; the server-wide one is the backend's state. */
static void t_refusal_is_local(void **state)
{
    assert_true(pgw_pool_refusal_is_local("connection to server at \"127.0.0.1\", port 5432 "
                                          "failed: FATAL:  too many connections for role \"app\""));
    assert_true(pgw_pool_refusal_is_local("FATAL:  too many connections for database \"db\""));
    assert_true(pgw_pool_refusal_is_local("FATAL:  database \"db\" is not currently accepting "
                                          "connections"));
    assert_false(pgw_pool_refusal_is_local("FATAL:  sorry, too many clients already"));
    /* the reserved slots: full for this role, not for a superuser */
    assert_true(pgw_pool_refusal_is_local("FATAL:  remaining connection slots are reserved "
                                          "for non-replication superuser connections"));
    assert_true(pgw_pool_refusal_is_local("FATAL:  remaining connection slots are reserved "
                                          "for roles with the SUPERUSER attribute"));
    assert_false(pgw_pool_refusal_is_local("Connection refused"));
    /* Told by the routine that raised it, in any lc_messages (libpq's
     * verbose form) */
    const char *at = "connection to server at \"127.0.0.1\", port 5432 failed: ";
    char m[512];
    snprintf(m, sizeof(m), "%sFATAL:  53300: zu viele Verbindungen f\xc3\xbcr Rolle \"app\"\n"
             "LOCATION:  InitializeSessionUserId, miscinit.c:842\n", at);
    assert_true(pgw_pool_refused_for_role_or_db(m));
    snprintf(m, sizeof(m), "%sFATAL:  53300: zu viele Verbindungen f\xc3\xbcr Datenbank \"db\"\n"
             "LOCATION:  CheckMyDatabase, postinit.c:384\n", at);
    assert_true(pgw_pool_refused_for_role_or_db(m));
    snprintf(m, sizeof(m), "%sFATAL:  53300: tut mir leid, schon zu viele Verbindungen\n"
             "LOCATION:  InitProcess, proc.c:362\n", at);
    assert_false(pgw_pool_refused_for_role_or_db(m));
    /* InitPostgres' 53300 is the reserved slots; its other refusals
     * (shutting down) are not the role's */
    snprintf(m, sizeof(m), "%sFATAL:  53300: die verbleibenden Verbindungen sind reserviert\n"
             "LOCATION:  InitPostgres, postinit.c:840\n", at);
    assert_true(pgw_pool_refused_for_role_or_db(m));
    snprintf(m, sizeof(m), "%sFATAL:  57P03: x\nLOCATION:  InitPostgres, postinit.c:820\n", at);
    assert_false(pgw_pool_refused_for_role_or_db(m));
    snprintf(m, sizeof(m), "%sFATAL:  53300: x\nLOCATION:  CheckMyDatabaseX, postinit.c:1\n", at);
    assert_false(pgw_pool_refused_for_role_or_db(m));
    /* only the last attempt's: an earlier address's refusal does not count */
    snprintf(m, sizeof(m), "%sFATAL:  53300: x\nLOCATION:  CheckMyDatabase, postinit.c:384\n"
             "%sConnection refused\n", at, at);
    assert_false(pgw_pool_refused_for_role_or_db(m));
    /* a LOCATION line is the server's only after a coded attempt line */
    assert_false(pgw_pool_refused_for_role_or_db("LOCATION:  CheckMyDatabase, postinit.c:384\n"));
    assert_false(pgw_pool_refused_for_role_or_db(NULL));
    /* an entry requiring an encryption the server lacks: that entry's */
    const char *no_ssl = "connection to server at \"127.0.0.1\", port 5432 failed: "
                         "server does not support SSL, but SSL was required";
    assert_true(pgw_pool_refusal_is_local(no_ssl));
    assert_string_equal(pgw_pool_guess_sqlstate(no_ssl), "08001");
    assert_true(pgw_pool_refusal_is_local("server doesn't support GSSAPI encryption, "
                                          "but it was required"));
    /* a server certificate this entry's check refuses: that entry's */
    const char *bad_ca = "connection to server at \"127.0.0.1\", port 5432 failed: "
                         "SSL error: certificate verify failed";
    assert_true(pgw_pool_refusal_is_local(bad_ca));
    assert_string_equal(pgw_pool_guess_sqlstate(bad_ca), "08001");
    assert_true(pgw_pool_refusal_is_local("server certificate for \"db1\" does not match "
                                          "host name \"db2\""));
    /* channel_binding=require the link or the server cannot meet, a
     * service= pg_service.conf lacks: that entry's */
    assert_true(pgw_pool_refusal_is_local("connection to server at \"127.0.0.1\", port 5432 "
                                          "failed: channel binding required, but SSL not in use"));
    assert_true(pgw_pool_refusal_is_local("channel binding is required, but server did not "
                                          "offer an authentication method that supports "
                                          "channel binding"));
    assert_string_equal(pgw_pool_guess_sqlstate("definition of service \"x\" not found"),
                        "F0000");
    assert_string_equal(pgw_pool_guess_sqlstate("service file \"/x\" not found"), "F0000");
    /* a broken TLS link is not */
    assert_false(pgw_pool_refusal_is_local("SSL SYSCALL error: EOF detected"));
    assert_false(pgw_pool_refusal_is_local("SSL error: unexpected eof while reading"));
    assert_false(pgw_pool_refusal_is_local(NULL));
    assert_string_equal(pgw_pool_guess_sqlstate("FATAL:  database \"db\" is not currently "
                                                "accepting connections"), "55000");
}

static void t_trim(void **state)
{
    char buf[64];
    pgw_pool_trim_error(buf, sizeof(buf), "  connection failed: FATAL:  bad\n\tsecond line\n");
    assert_string_equal(buf, "connection failed: FATAL: bad second line");
    pgw_pool_trim_error(buf, 8, "abcdefghijkl");
    assert_string_equal(buf, "abcdefg");
    pgw_pool_trim_error(buf, sizeof(buf), NULL);
    assert_string_equal(buf, "");
    pgw_pool_trim_error(buf, sizeof(buf), "\n\n");
    assert_string_equal(buf, "");
}

/* libpq's verbose form (pool/server.c): the server's own SQLSTATE, in
 * any language; the last ErrorResponse's when libpq tried twice. */
static void t_server_sqlstate(void **state)
{
    char code[6];
    const char *de = "connection to server at \"127.0.0.1\", port 5432 failed: "
                     "FATAL:  3D000: Datenbank \xc2\xbb" "x\xc2\xab existiert nicht\n"
                     "LOCATION:  InitPostgres, postinit.c:941\n";
    assert_true(pgw_pool_server_sqlstate(de, code));
    assert_string_equal(code, "3D000");
    assert_string_equal(pgw_pool_guess_sqlstate(de), "08006");   /* the text says nothing */
    char buf[512];
    pgw_pool_trim_error(buf, sizeof(buf), de);
    assert_string_equal(buf, "connection to server at \"127.0.0.1\", port 5432 failed: "
                             "FATAL: Datenbank \xc2\xbb" "x\xc2\xab existiert nicht");
    const char *two = "connection to server at \"::1\", port 5432 failed: FATAL:  57P03: "
                      "the database system is starting up\nLOCATION:  a, b.c:1\n"
                      "connection to server at \"127.0.0.1\", port 5432 failed: "
                      "SCHWERWIEGEND:  28P01: Passwort-Authentifizierung f\xc3\xbcr Benutzer "
                      "\xc2\xbb" "app\xc2\xab fehlgeschlagen\nDETAIL:  x\n";
    assert_true(pgw_pool_server_sqlstate(two, code));
    assert_string_equal(code, "28P01");
    pgw_pool_trim_error(buf, sizeof(buf), two);
    assert_null(strstr(buf, "57P03"));
    assert_null(strstr(buf, "LOCATION"));
    assert_non_null(strstr(buf, "starting up connection to"));
    assert_non_null(strstr(buf, "SCHWERWIEGEND: Passwort"));
    assert_non_null(strstr(buf, "DETAIL: x"));
    /* a code spelt in a name the server quotes back is not the code, and
     * the name is shown as it is */
    const char *crafted = "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  "
                          "3D000: database \"x:  08006: y\" does not exist\n";
    assert_true(pgw_pool_server_sqlstate(crafted, code));
    assert_string_equal(code, "3D000");
    pgw_pool_trim_error(buf, sizeof(buf), crafted);
    assert_string_equal(buf, "connection to server at \"127.0.0.1\", port 5432 failed: FATAL: "
                             "database \"x: 08006: y\" does not exist");
    /* libpq's own failures carry none */
    assert_false(pgw_pool_server_sqlstate("connection to server at \"127.0.0.1\", port 1 "
                                          "failed: Connection refused\n", code));
    assert_false(pgw_pool_server_sqlstate("FATAL:  database \"x\" does not exist", code));
    assert_false(pgw_pool_server_sqlstate(NULL, code));
}

/* Out of memory on demand: this test links with -Wl,--wrap=malloc
 * (tests/CMakeLists.txt), so every call to malloc in its objects and in
 * pgwharf's static libraries comes here, and the allocator's own malloc
 * (glibc's, valgrind's, the sanitizers') stays behind __real_malloc.  A
 * malloc of the test's own replacing glibc's was skipped under the
 * sanitizers and bypassed under valgrind, which replaces malloc wherever
 * it is defined.  While fail_malloc is set, malloc returns NULL. */
static bool fail_malloc;
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_malloc(size_t size)
{
    return fail_malloc ? NULL : __real_malloc(size);
}

/* A string of n bytes: c, then its position's digits, so two of them
 * differ in more than their length. */
static char *long_string(size_t n, char c)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        s[i] = i % 10 == 0 ? c : (char)('0' + i % 10);
    s[n] = 0;
    return s;
}

static void t_params(void **state)
{
    struct pgw_params ps = { .n = 0 };
    assert_null(pgw_params_get(&ps, "TimeZone"));
    assert_true(pgw_params_set(&ps, "TimeZone", "UTC"));
    assert_true(pgw_params_set(&ps, "client_encoding", "UTF8"));
    assert_string_equal(pgw_params_get(&ps, "TimeZone"), "UTC");
    assert_true(pgw_params_set(&ps, "TimeZone", "Europe/Paris"));
    assert_string_equal(pgw_params_get(&ps, "TimeZone"), "Europe/Paris");
    assert_int_equal(ps.n, 2);
    /* names are case-sensitive, as PostgreSQL reports them */
    assert_null(pgw_params_get(&ps, "timezone"));
    /* a full table takes no new name, and still takes new values */
    while (ps.n < PGW_MAX_PARAMS) {
        char name[16];
        snprintf(name, sizeof(name), "p%d", ps.n);
        assert_true(pgw_params_set(&ps, name, "1"));
    }
    assert_false(pgw_params_set(&ps, "one_more", "1"));
    assert_null(pgw_params_get(&ps, "one_more"));
    assert_true(pgw_params_set(&ps, "TimeZone", "UTC"));   /* updates still work */
    char *big = long_string(3000, 'z');
    assert_true(pgw_params_set(&ps, "TimeZone", big));     /* long ones too */
    assert_string_equal(pgw_params_get(&ps, "TimeZone"), big);
    free(big);
    pgw_params_deinit(&ps);
    assert_int_equal(ps.n, 0);
    assert_null(pgw_params_get(&ps, "TimeZone"));
}

/* Values and names of any length (a long search_path, a POSIX TimeZone
 * spec, a custom GUC's name): kept whole, whether they fit the entry or
 * not, through overwrites both ways, unset, deinit. */
static void t_params_long(void **state)
{
    struct pgw_params ps = { .n = 0 };
    /* at the edge of the entry's inline room, and one past it */
    size_t room = PGW_PARAM_INLINE - sizeof("TimeZone") - 1;
    char *edge = long_string(room, 'e'), *past = long_string(room + 1, 'p');
    assert_true(pgw_params_set(&ps, "TimeZone", edge));
    assert_null(ps.p[0].heap);                           /* no allocation */
    assert_string_equal(pgw_params_get(&ps, "TimeZone"), edge);
    assert_true(pgw_params_set(&ps, "TimeZone", past));
    assert_non_null(ps.p[0].heap);
    assert_string_equal(pgw_params_get(&ps, "TimeZone"), past);
    assert_true(pgw_params_set(&ps, "TimeZone", "UTC"));  /* back inline */
    assert_null(ps.p[0].heap);
    assert_string_equal(pgw_params_get(&ps, "TimeZone"), "UTC");
    /* long to longer to long, beside short ones */
    char *sp1 = long_string(100, 'a'), *sp2 = long_string(5000, 'b');
    assert_true(pgw_params_set(&ps, "client_encoding", "UTF8"));
    assert_true(pgw_params_set(&ps, "search_path", sp1));
    assert_true(pgw_params_set(&ps, "search_path", sp2));
    assert_string_equal(pgw_params_get(&ps, "search_path"), sp2);
    assert_true(pgw_params_set(&ps, "search_path", sp1));
    assert_string_equal(pgw_params_get(&ps, "search_path"), sp1);
    /* a name longer than any fixed field, a value empty or long */
    char *name = long_string(200, 'n');
    memcpy(name, "myapp.", 6);
    assert_true(pgw_params_set(&ps, name, ""));
    assert_string_equal(pgw_params_get(&ps, name), "");
    assert_true(pgw_params_set(&ps, name, sp2));
    assert_string_equal(pgw_params_get(&ps, name), sp2);
    assert_string_equal(pgw_param_name(&ps.p[ps.n - 1]), name);
    assert_int_equal(ps.n, 4);
    /* a value taken from the table itself (its own, or another's) */
    assert_true(pgw_params_set(&ps, "search_path", pgw_params_get(&ps, "search_path")));
    assert_string_equal(pgw_params_get(&ps, "search_path"), sp1);
    assert_true(pgw_params_set(&ps, "TimeZone", pgw_params_get(&ps, name)));
    assert_string_equal(pgw_params_get(&ps, "TimeZone"), sp2);
    assert_true(pgw_params_set(&ps, pgw_param_name(&ps.p[3]), "short"));
    assert_string_equal(pgw_params_get(&ps, name), "short");
    /* unset moves the last entry, long one included, into the gap */
    uint32_t gen = ps.gen;
    assert_true(pgw_params_unset(&ps, "TimeZone"));
    assert_true(ps.gen != gen);
    assert_false(pgw_params_unset(&ps, "TimeZone"));
    assert_int_equal(ps.n, 3);
    assert_null(pgw_params_get(&ps, "TimeZone"));
    assert_string_equal(pgw_params_get(&ps, "search_path"), sp1);
    assert_string_equal(pgw_params_get(&ps, name), "short");
    assert_string_equal(pgw_params_get(&ps, "client_encoding"), "UTF8");
    pgw_params_deinit(&ps);
    assert_int_equal(ps.n, 0);
    pgw_params_deinit(&ps);                              /* twice is harmless */
    free(edge);
    free(past);
    free(sp1);
    free(sp2);
    free(name);
}

/* pgw_params_copy: a deep copy (the pool's defaults from a server's
 * record) that outlives its source and replaces what dst held. */
static void t_params_copy(void **state)
{
    struct pgw_params src = { .n = 0 }, dst = { .n = 0 };
    char *tz = long_string(200, 't'), *sp = long_string(2000, 's');
    assert_true(pgw_params_set(&src, "TimeZone", tz));
    assert_true(pgw_params_set(&src, "DateStyle", "ISO, MDY"));
    assert_true(pgw_params_set(&dst, "search_path", sp));   /* replaced by the copy */
    assert_true(pgw_params_set(&dst, "old", "x"));
    uint32_t gen = dst.gen;
    assert_true(pgw_params_copy(&dst, &src));
    assert_true(dst.gen != gen);
    assert_int_equal(dst.n, 2);
    assert_null(pgw_params_get(&dst, "search_path"));
    assert_null(pgw_params_get(&dst, "old"));
    assert_ptr_not_equal(dst.p[0].heap, src.p[0].heap);     /* its own */
    /* the source changes or goes: the copy stays */
    assert_true(pgw_params_set(&src, "TimeZone", "UTC"));
    pgw_params_deinit(&src);
    assert_string_equal(pgw_params_get(&dst, "TimeZone"), tz);
    assert_string_equal(pgw_params_get(&dst, "DateStyle"), "ISO, MDY");
    assert_true(pgw_params_copy(&dst, &dst));               /* onto itself: as it was */
    assert_string_equal(pgw_params_get(&dst, "TimeZone"), tz);
    assert_true(pgw_params_copy(&dst, &src));               /* an empty one empties */
    assert_int_equal(dst.n, 0);
    pgw_params_deinit(&dst);
    free(tz);
    free(sp);
}

/* Out of memory: a value that cannot be kept leaves no record of the
 * name (never the old value, which would pass for the server's), and a
 * copy that fails leaves its destination as it was. */
static void t_params_out_of_memory(void **state)
{
    struct pgw_params ps = { .n = 0 }, dst = { .n = 0 };
    char *big = long_string(500, 'b');
    assert_true(pgw_params_set(&ps, "TimeZone", "UTC"));
    assert_true(pgw_params_set(&ps, "search_path", big));
    assert_true(pgw_params_set(&ps, "DateStyle", "ISO, MDY"));
    assert_true(pgw_params_set(&dst, "TimeZone", "Asia/Tokyo"));
    uint32_t gen = ps.gen;
    fail_malloc = true;
    bool set_long = pgw_params_set(&ps, "TimeZone", big);
    bool set_new = pgw_params_set(&ps, "application_name", big);
    bool set_short = pgw_params_set(&ps, "DateStyle", "ISO, DMY");  /* needs no memory */
    bool copied = pgw_params_copy(&dst, &ps);
    fail_malloc = false;
    assert_false(set_long);
    assert_null(pgw_params_get(&ps, "TimeZone"));           /* not "UTC" */
    assert_true(ps.gen != gen);
    assert_false(set_new);
    assert_false(pgw_params_full(&ps));                     /* memory, not the limit */
    assert_null(pgw_params_get(&ps, "application_name"));
    assert_true(set_short);
    assert_string_equal(pgw_params_get(&ps, "DateStyle"), "ISO, DMY");
    assert_string_equal(pgw_params_get(&ps, "search_path"), big);
    assert_int_equal(ps.n, 2);
    assert_false(copied);
    assert_int_equal(dst.n, 1);
    assert_string_equal(pgw_params_get(&dst, "TimeZone"), "Asia/Tokyo");
    pgw_params_deinit(&ps);
    pgw_params_deinit(&dst);
    free(big);
}

/* A full table (PGW_MAX_PARAMS names) refuses a new name and says so
 * (pgwharf's limit, 54000), apart from memory shortage (53200): the
 * names there still take new values, short or long. */
static void t_params_full(void **state)
{
    struct pgw_params ps = { .n = 0 };
    char name[32], *big = long_string(500, 'b');
    for (int i = 0; i < PGW_MAX_PARAMS; i++) {
        snprintf(name, sizeof(name), "pgw.p%d", i);
        assert_true(pgw_params_set(&ps, name, "on"));
        assert_false(pgw_params_full(&ps) && i < PGW_MAX_PARAMS - 1);
    }
    uint32_t gen = ps.gen;
    assert_false(pgw_params_set(&ps, "one.more", "on"));
    assert_true(pgw_params_full(&ps));
    assert_null(pgw_params_get(&ps, "one.more"));
    assert_int_equal(ps.n, PGW_MAX_PARAMS);
    assert_int_equal(ps.gen, gen);                          /* nothing changed */
    assert_true(pgw_params_set(&ps, "pgw.p7", "off"));      /* one there: a new value */
    assert_true(pgw_params_set(&ps, "pgw.p8", big));
    assert_string_equal(pgw_params_get(&ps, "pgw.p7"), "off");
    assert_string_equal(pgw_params_get(&ps, "pgw.p8"), big);
    /* out of memory for a full table's own name: a shortage, not the
     * limit (the name is dropped, never left with its old value) */
    fail_malloc = true;
    bool set = pgw_params_set(&ps, "pgw.p9", big);
    fail_malloc = false;
    assert_false(set);
    assert_false(pgw_params_full(&ps));
    assert_null(pgw_params_get(&ps, "pgw.p9"));
    /* and one below the limit, out of memory for a new name */
    fail_malloc = true;
    set = pgw_params_set(&ps, "a.long.one", big);
    fail_malloc = false;
    assert_false(set);
    assert_false(pgw_params_full(&ps));
    assert_int_equal(ps.n, PGW_MAX_PARAMS - 1);
    pgw_params_deinit(&ps);
    free(big);
}

/* libpq's cancel copy (struct pgw_libpq_cancel_head) is trusted only for
 * the connection it came from: its address the socket's peer, a pid. */
static void set_in(struct pgw_libpq_cancel_head *h, const char *ip, int port)
{
    struct sockaddr_in *a = (void *)&h->raddr.addr;
    memset(h, 0, sizeof(*h));
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &a->sin_addr);
    h->raddr.salen = sizeof(*a);
}

static void t_cancel_head(void **state)
{
    (void)state;
    struct pgw_libpq_cancel_head h, peer;
    set_in(&peer, "127.0.0.1", 5432);
    const struct sockaddr *p = (const void *)&peer.raddr.addr;
    socklen_t plen = peer.raddr.salen;

    set_in(&h, "127.0.0.1", 5432);
    h.be_pid = 4242;
    h.be_key = 7;
    assert_true(pgw_pool_cancel_head_valid(&h, p, plen));
    h.be_pid = 0;                                   /* before the BackendKeyData */
    assert_false(pgw_pool_cancel_head_valid(&h, p, plen));
    h.be_pid = -1;
    assert_false(pgw_pool_cancel_head_valid(&h, p, plen));
    set_in(&h, "127.0.0.1", 5433);                  /* another port */
    h.be_pid = 4242;
    assert_false(pgw_pool_cancel_head_valid(&h, p, plen));
    set_in(&h, "127.0.0.2", 5432);                  /* another address */
    h.be_pid = 4242;
    assert_false(pgw_pool_cancel_head_valid(&h, p, plen));
    /* a layout not libpq's: a length out of range, or none */
    set_in(&h, "127.0.0.1", 5432);
    h.be_pid = 4242;
    h.raddr.salen = sizeof(h.raddr.addr) + 1;
    assert_false(pgw_pool_cancel_head_valid(&h, p, plen));
    h.raddr.salen = 0;
    assert_false(pgw_pool_cancel_head_valid(&h, p, plen));
    /* garbage: bytes that are no address of the peer's family */
    memset(&h, 0x5a, sizeof(h));
    assert_false(pgw_pool_cancel_head_valid(&h, p, plen));

    /* IPv6 */
    struct sockaddr_in6 *a6 = (void *)&h.raddr.addr, *p6 = (void *)&peer.raddr.addr;
    memset(&h, 0, sizeof(h));
    memset(&peer, 0, sizeof(peer));
    a6->sin6_family = p6->sin6_family = AF_INET6;
    a6->sin6_port = p6->sin6_port = htons(5432);
    inet_pton(AF_INET6, "::1", &a6->sin6_addr);
    inet_pton(AF_INET6, "::1", &p6->sin6_addr);
    h.raddr.salen = sizeof(*a6);
    h.be_pid = 9;
    assert_true(pgw_pool_cancel_head_valid(&h, p, sizeof(*p6)));
    assert_false(pgw_pool_cancel_head_valid(&h, p, sizeof(struct sockaddr_in)));  /* short */
    inet_pton(AF_INET6, "::2", &a6->sin6_addr);
    assert_false(pgw_pool_cancel_head_valid(&h, p, sizeof(*p6)));

    /* Unix socket: libpq counts the whole sockaddr_un, the kernel's
     * getpeername the path and its NUL */
    struct sockaddr_un *u = (void *)&h.raddr.addr, *pu = (void *)&peer.raddr.addr;
    const char *path = "/tmp/.s.PGSQL.5432";
    memset(&h, 0, sizeof(h));
    memset(&peer, 0, sizeof(peer));
    u->sun_family = pu->sun_family = AF_UNIX;
    strcpy(u->sun_path, path);
    strcpy(pu->sun_path, path);
    h.raddr.salen = sizeof(*u);
    h.be_pid = 11;
    socklen_t ulen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
    assert_true(pgw_pool_cancel_head_valid(&h, p, ulen));
    strcpy(u->sun_path, "/tmp/.s.PGSQL.5433");
    assert_false(pgw_pool_cancel_head_valid(&h, p, ulen));
    /* the same socket by another name: "DIR/" (libpq's "DIR//.s.PGSQL.N"),
     * a symlinked directory: the kernel names it as the server bound it */
    strcpy(u->sun_path, "/tmp//.s.PGSQL.5432");
    assert_true(pgw_pool_cancel_head_valid(&h, p, ulen));
    strcpy(u->sun_path, "/var/run/x/.s.PGSQL.5432");
    assert_true(pgw_pool_cancel_head_valid(&h, p, ulen));
    strcpy(u->sun_path, "/tmp/");                  /* no name after the last slash */
    assert_false(pgw_pool_cancel_head_valid(&h, p, ulen));
    /* abstract ones ("@name": a NUL first) by their length */
    memset(u->sun_path, 0, sizeof(u->sun_path));
    memset(pu->sun_path, 0, sizeof(pu->sun_path));
    memcpy(u->sun_path, "\0pg", 3);
    memcpy(pu->sun_path, "\0pg", 3);
    h.raddr.salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 3);
    assert_true(pgw_pool_cancel_head_valid(&h, p, h.raddr.salen));
    pu->sun_path[2] = 'x';
    assert_false(pgw_pool_cancel_head_valid(&h, p, h.raddr.salen));
    /* another family */
    assert_false(pgw_pool_cancel_head_valid(&h, (const void *)&(struct sockaddr_in){
                                                    .sin_family = AF_INET },
                                            sizeof(struct sockaddr_in)));
}

/* A pool's turn: a quarter of query_wait_timeout up to a second, never
 * under 0.1 s (a quarter of 0.1 s let another pool's idle server go every
 * 25 ms), but under half of it, so that a turn still comes before its
 * clients time out. */
static void t_turn_length(void **state)
{
    (void)state;
    static const struct { double qwt, want; } cases[] = {
        { 0, 1.0 },        /* no query_wait_timeout */
        { 120, 1.0 }, { 4, 1.0 }, { 2, 0.5 }, { 1, 0.25 },
        { 0.4, 0.1 }, { 0.3, 0.1 }, { 0.2, 0.1 },
        { 0.1, 0.05 }, { 0.02, 0.01 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        double got = pgw_pool_turn_length(cases[i].qwt);
        if (got < cases[i].want - 1e-9 || got > cases[i].want + 1e-9)
            fail_msg("query_wait_timeout %g: turn %g, want %g", cases[i].qwt, got,
                     cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_sqlstate_table),
        cmocka_unit_test(t_refusal_is_local),
        cmocka_unit_test(t_refusal_is_tls),
        cmocka_unit_test(t_trim),
        cmocka_unit_test(t_server_sqlstate),
        cmocka_unit_test(t_params),
        cmocka_unit_test(t_params_long),
        cmocka_unit_test(t_params_copy),
        cmocka_unit_test(t_params_out_of_memory),
        cmocka_unit_test(t_params_full),
        cmocka_unit_test(t_turn_length),
        cmocka_unit_test(t_cancel_head),
    };
    return cmocka_run_group_tests_name("pool_util", tests, NULL, NULL);
}
