/* test_hba.c - auth_hba_file parsing and matching (proxy/hba.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

#include "common/err.h"
#include "proxy/hba.h"

static struct pgw_hba *parse_ok(const char *text, struct pgw_conf_diag *diag)
{
    struct pgw_hba *hba = NULL;
    int rc = pgw_hba_parse("hba.conf", text, &hba, diag);
    if (rc != 0)
        fail_msg("parse failed (%d): %s", rc,
                 diag && diag->nerrors ? diag->errors[0] : "(no message)");
    return hba;
}

/* ---- parser errors: each names the file and the record's first line ---- */

static void test_parse_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *error;
    } cases[] = {
        { "hots all all 127.0.0.1/32 trust\n", "hba.conf:1: invalid connection type \"hots\"" },
        { "# c\n\nlocal\n", "hba.conf:3: end-of-line before database specification" },
        { "local all\n", "hba.conf:1: end-of-line before role specification" },
        { "local all all\n", "hba.conf:1: end-of-line before authentication method" },
        { "host all all\n", "hba.conf:1: end-of-line before IP address specification" },
        { "host all all 127.0.0.1/32\n", "hba.conf:1: end-of-line before authentication method" },
        { "host all all 127.0.0.1\n", "hba.conf:1: end-of-line before netmask specification" },
        { "host all all 127.0.0.1 255.255.x.0 md5\n", "hba.conf:1: invalid IP mask" },
        { "host all all 127.0.0.1 ffff:: md5\n", "hba.conf:1: IP address and mask do not match" },
        { "host all all 127.0.0.1/33 md5\n", "hba.conf:1: invalid CIDR mask" },
        { "host all all ::1/129 md5\n", "hba.conf:1: invalid CIDR mask" },
        { "host all all 127.0.0.1/ md5\n", "hba.conf:1: invalid CIDR mask" },
        { "host all all 127.0.0.1/3a md5\n", "hba.conf:1: invalid CIDR mask" },
        { "host all all 300.0.0.1/8 md5\n", "hba.conf:1: invalid IP address \"300.0.0.1/8\"" },
        { "host all all fe80:::1 md5\n", "hba.conf:1: invalid IP address" },
        { "host all all 127.0.0.1/32,::1/128 md5\n", "multiple values specified for host address" },
        { "local all all md5,trust\n", "multiple values specified for authentication type" },
        { "local,host all all trust\n", "multiple values specified for connection type" },
        { "local all all blah\n", "hba.conf:1: invalid authentication method \"blah\"" },
        { "local all all \"trust\"x\n", "invalid authentication method \"trustx\"" },
        { "host all all all cert\n", "cert authentication is only supported on hostssl" },
        { "local @dbs all trust\n", "hba.conf:1: @dbs: no file is read for rules given as text" },
        { "local all @ trust\n", "hba.conf:1: @ without a file name" },
        { "local a,,b all trust\n", "hba.conf:1: empty element in a comma-separated list" },
        { "local a, all trust\n", "end-of-line before authentication method" },  /* a, all = 1 field */
        { "local a,\n", "hba.conf:1: a comma-separated list ends with a comma" },
        { "local \"abc all trust\n", "hba.conf:1: unterminated quoted string" },
        { "local all all trust\nlocal all \\\nall\n",
          "hba.conf:2: end-of-line before authentication method" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pgw_conf_diag diag = { 0 };
        struct pgw_hba *hba = (struct pgw_hba *)1;
        int rc = pgw_hba_parse("hba.conf", cases[i].text, &hba, &diag);
        if (rc != PGW_ECONFIG || hba != NULL || diag.nerrors < 1 ||
            !strstr(diag.errors[0], cases[i].error))
            fail_msg("case %zu: rc %d, first error \"%s\", expected \"%s\"", i, rc,
                     diag.nerrors ? diag.errors[0] : "", cases[i].error);
        pgw_conf_diag_free(&diag);
    }
}

/* @file in a database or user list, as PostgreSQL: the names in that file
 * (blanks, commas, newlines; # comments; quotes; @file again), relative to
 * the including file's directory.  It was an error, and a PgBouncer
 * auth_hba_file using it stopped pgwharf's start. */
static void test_at_file_lists_names(void **state)
{
    (void)state;
    char dir[] = "/tmp/pgw_hba_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char hba_path[128], users[128], more[128], loop[128];
    snprintf(hba_path, sizeof(hba_path), "%s/hba.conf", dir);
    snprintf(users, sizeof(users), "%s/users.txt", dir);
    snprintf(more, sizeof(more), "%s/more.txt", dir);
    snprintf(loop, sizeof(loop), "%s/loop.txt", dir);
    FILE *f = fopen(users, "w");
    assert_non_null(f);
    fputs("alice, \"Bob\"\n# a comment, not a name\n@more.txt\n", f);
    fclose(f);
    assert_non_null(f = fopen(more, "w"));
    fputs("carol\n", f);
    fclose(f);
    assert_non_null(f = fopen(loop, "w"));
    fputs("@loop.txt\n", f);
    fclose(f);
    assert_non_null(f = fopen(hba_path, "w"));
    fputs("local all @users.txt trust\nlocal all all reject\n", f);
    fclose(f);
    struct pgw_conf_diag diag = { 0 };
    struct pgw_hba *hba = NULL;
    assert_int_equal(pgw_hba_load(hba_path, NULL, &hba, &diag), 0);
    int line;
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "alice", &line, NULL),
                     PGW_HBA_TRUST);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "Bob", &line, NULL),
                     PGW_HBA_TRUST);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "carol", &line, NULL),
                     PGW_HBA_TRUST);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "a", &line, NULL),
                     PGW_HBA_REJECT);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "comment", &line, NULL),
                     PGW_HBA_REJECT);
    pgw_hba_free(hba);
    pgw_conf_diag_free(&diag);
    /* a file that includes itself: an error, not a loop */
    assert_non_null(f = fopen(hba_path, "w"));
    fputs("local @loop.txt all trust\n", f);
    fclose(f);
    hba = NULL;
    assert_int_equal(pgw_hba_load(hba_path, NULL, &hba, &diag), PGW_ECONFIG);
    assert_non_null(strstr(diag.errors[0], "hba.conf:1: @loop.txt: files included more than"));
    pgw_conf_diag_free(&diag);
    /* @"a file name with a blank": quoted after the @, still a file (a
     * quote only at the start makes a name); was a user of that name, and
     * the reject rule never matched */
    char spaced[128];
    snprintf(spaced, sizeof(spaced), "%s/deny list.txt", dir);
    assert_non_null(f = fopen(spaced, "w"));
    fputs("mallory\n", f);
    fclose(f);
    assert_non_null(f = fopen(hba_path, "w"));
    fputs("local all @\"deny list.txt\" reject\nlocal all \"@more.txt\" md5\n"
          "local all all trust\n", f);
    fclose(f);
    hba = NULL;
    assert_int_equal(pgw_hba_load(hba_path, NULL, &hba, &diag), 0);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "mallory", &line, NULL),
                     PGW_HBA_REJECT);
    assert_int_equal(line, 1);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "carol", &line, NULL),
                     PGW_HBA_TRUST);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "@more.txt", &line, NULL),
                     PGW_HBA_MD5);     /* "@..." quoted from the start: a name */
    pgw_hba_free(hba);
    pgw_conf_diag_free(&diag);
    unlink(spaced);
    unlink(users);
    unlink(more);
    unlink(loop);
    unlink(hba_path);
    rmdir(dir);
}

/* Every bad line is reported, each with its own line number. */
static void test_parse_reports_all_errors(void **state)
{
    (void)state;
    const char *text = "local all all trust\n"
                       "bogus all all trust\n"
                       "# fine\n"
                       "host all all 1.2.3.4/99 md5\n"
                       "local all all trust\n"
                       "local all all nope\n";
    struct pgw_conf_diag diag = { 0 };
    struct pgw_hba *hba;
    assert_int_equal(pgw_hba_parse("x.conf", text, &hba, &diag), PGW_ECONFIG);
    assert_null(hba);
    assert_int_equal(diag.nerrors, 3);
    assert_non_null(strstr(diag.errors[0], "x.conf:2: "));
    assert_non_null(strstr(diag.errors[1], "x.conf:4: "));
    assert_non_null(strstr(diag.errors[2], "x.conf:6: "));
    pgw_conf_diag_free(&diag);
    /* diag may be NULL. */
    assert_int_equal(pgw_hba_parse("x.conf", text, &hba, NULL), PGW_ECONFIG);
}

static void test_parse_warnings(void **state)
{
    (void)state;
    const char *text = "local all all ident\n"
                       "host samerole all all md5\n"
                       "host all +admins all md5\n"
                       "host all all samenet md5\n"
                       "host all all db.example.com md5\n"
                       "hostgssenc all all all md5\n"
                       "host all all all md5 clientcert=verify-ca foo=bar\n";
    struct pgw_conf_diag diag = { 0 };
    struct pgw_hba *hba = parse_ok(text, &diag);
    assert_int_equal(pgw_hba_count(hba), 7);
    assert_int_equal(diag.nwarnings, 7);
    assert_non_null(strstr(diag.warnings[0], "hba.conf:1: authentication method \"ident\""));
    assert_non_null(strstr(diag.warnings[1], "hba.conf:2: \"samerole\""));
    assert_non_null(strstr(diag.warnings[2], "hba.conf:3: group \"+admins\""));
    assert_non_null(strstr(diag.warnings[3], "hba.conf:4: \"samenet\""));
    assert_non_null(strstr(diag.warnings[4], "hba.conf:5: host name \"db.example.com\""));
    assert_non_null(strstr(diag.warnings[5], "hba.conf:6: hostgssenc"));
    /* an option is not ignored: the rule rejects (fail closed) */
    assert_non_null(strstr(diag.warnings[6], "hba.conf:7: authentication option "
                                             "\"clientcert=verify-ca\" is not supported"));
    pgw_conf_diag_free(&diag);
    pgw_hba_free(hba);
}

static void test_parse_syntax(void **state)
{
    (void)state;
    /* Comments, blank lines, CRLF, continuation, quoting, lists with blanks. */
    const char *text = "  # leading comment\r\n"
                       "\r\n"
                       "local \"my db\",\"all\" \"u,1\",\"He said \"\"hi\"\"\" trust # trailing\r\n"
                       "host\tdb1, db2\t\\\n"
                       "   alice 10.0.0.0/8 \\\n"
                       "   md5\n"
                       "local all all reject";
    struct pgw_conf_diag diag = { 0 };
    struct pgw_hba *hba = parse_ok(text, &diag);
    assert_int_equal(pgw_hba_count(hba), 3);
    assert_int_equal(diag.nwarnings, 0);
    int line;
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "my db", "u,1", &line, NULL),
                     PGW_HBA_TRUST);
    assert_int_equal(line, 3);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "all", "He said \"hi\"", &line, NULL),
                     PGW_HBA_TRUST);
    /* Quoted "all" is a name, not the keyword. */
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "other", "u,1", &line, NULL),
                     PGW_HBA_REJECT);
    assert_int_equal(line, 7);
    struct sockaddr_in in = { .sin_family = AF_INET };
    inet_pton(AF_INET, "10.1.2.3", &in.sin_addr);
    assert_int_equal(pgw_hba_match(hba, false, false, (struct sockaddr *)&in, "db2", "alice",
                                   &line, NULL), PGW_HBA_MD5);
    assert_int_equal(line, 4);   /* a continued record counts from its first line */
    pgw_hba_free(hba);

    hba = parse_ok("", NULL);
    assert_int_equal(pgw_hba_count(hba), 0);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "db", "u", &line, NULL), PGW_HBA_REJECT);
    assert_int_equal(line, 0);
    pgw_hba_free(hba);
}

/* ---- matching ---- */

static const char *const match_rules =
    "# line 1\n"
    "local   all       postgres                    reject\n"             /* 2 */
    "local   sameuser  all                         trust\n"              /* 3 */
    "local   all       all                         scram-sha-256\n"      /* 4 */
    "host    all       blocked  0.0.0.0/0          reject\n"             /* 5 */
    "host    app       all      127.0.0.1/32       trust\n"              /* 6 */
    "host    app,other bob      10.0.0.0/8         md5\n"                /* 7 */
    "host    all       all      10.1.0.0 255.255.0.0 password\n"         /* 8 */
    "host    all       all      ::1/128            scram-sha-256\n"      /* 9 */
    "host    all       all      2001:db8::/32      md5\n"                /* 10 */
    "hostssl all       all      192.168.0.0/16     cert\n"               /* 11 */
    "hostnossl all     all      192.168.0.0/16     scram-sha-256\n"      /* 12 */
    "host    replication all    all                trust\n"              /* 13 */
    "host    all       +staff   172.16.0.0/12      trust\n"              /* 14 */
    "host    all       +banned  172.16.0.0/12      reject\n"             /* 15 */
    "host    all       all      172.16.0.0/12      md5\n"                /* 16 */
    "host    all       all      samehost           trust\n"              /* 17 */
    "host    \"all\"   all      all                password\n";          /* 18 */

static void test_match_table(void **state)
{
    (void)state;
    static const struct {
        bool is_unix, is_tls;
        const char *addr, *db, *user;
        enum pgw_hba_method method;
        int line;
    } cases[] = {
        /* local: first match wins */
        { true, false, NULL, "postgres", "postgres", PGW_HBA_REJECT, 2 },
        { true, false, NULL, "alice", "alice", PGW_HBA_TRUST, 3 },          /* sameuser */
        { true, false, NULL, "app", "alice", PGW_HBA_SCRAM, 4 },
        /* host v4 */
        { false, false, "127.0.0.1", "app", "blocked", PGW_HBA_REJECT, 5 },
        { false, false, "127.0.0.1", "app", "alice", PGW_HBA_TRUST, 6 },
        { false, false, "127.0.0.2", "app", "alice", PGW_HBA_REJECT, 0 },     /* /32 */
        { false, false, "10.9.9.9", "other", "bob", PGW_HBA_MD5, 7 },
        { false, false, "10.9.9.9", "app", "carol", PGW_HBA_REJECT, 0 },     /* no match */
        { false, false, "10.1.200.3", "app", "carol", PGW_HBA_PASSWORD, 8 }, /* addr + mask */
        { false, false, "10.2.0.1", "x", "carol", PGW_HBA_REJECT, 0 },
        /* host v6 */
        { false, false, "::1", "app", "alice", PGW_HBA_SCRAM, 9 },
        { false, false, "2001:db8:1::5", "x", "y", PGW_HBA_MD5, 10 },
        { false, false, "2001:db9::5", "x", "y", PGW_HBA_REJECT, 0 },
        /* an IPv4-mapped IPv6 client matches IPv4 rules */
        { false, false, "::ffff:127.0.0.1", "app", "alice", PGW_HBA_TRUST, 6 },
        /* ssl / nossl */
        { false, false, "192.168.1.1", "x", "y", PGW_HBA_SCRAM, 12 },
        { false, true, "192.168.1.1", "x", "y", PGW_HBA_CERT, 11 },
        /* replication never matches a connection that is not physical
         * replication (test_match_physical) */
        { false, false, "172.15.0.1", "replication", "y", PGW_HBA_REJECT, 0 },
        /* +group: unknown; skipped for trust, decides for reject */
        { false, false, "172.16.5.5", "x", "y", PGW_HBA_REJECT, 15 },
        /* samehost on a trust rule never lets anyone in */
        { false, false, "8.8.8.8", "x", "y", PGW_HBA_REJECT, 0 },
        /* a TCP rule never matches a unix socket, nor a local rule TCP */
        { false, false, "8.8.8.8", "all", "y", PGW_HBA_PASSWORD, 18 },
        { true, false, NULL, "all", "postgres", PGW_HBA_REJECT, 2 },
    };
    struct pgw_hba *hba = parse_ok(match_rules, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        const struct sockaddr *sa = NULL;
        if (cases[i].addr) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            if (inet_pton(AF_INET, cases[i].addr, &in->sin_addr) == 1)
                in->sin_family = AF_INET;
            else if (inet_pton(AF_INET6, cases[i].addr, &in6->sin6_addr) == 1)
                in6->sin6_family = AF_INET6;
            else
                fail_msg("bad test address %s", cases[i].addr);
            sa = (const struct sockaddr *)&ss;
        }
        int line = -1;
        enum pgw_hba_method m = pgw_hba_match(hba, cases[i].is_unix, cases[i].is_tls, sa,
                                              cases[i].db, cases[i].user, &line, NULL);
        if (m != cases[i].method || line != cases[i].line)
            fail_msg("case %zu (%s %s/%s): got %s line %d, expected %s line %d", i,
                     cases[i].addr ? cases[i].addr : "unix", cases[i].db, cases[i].user,
                     pgw_hba_method_name(m), line, pgw_hba_method_name(cases[i].method),
                     cases[i].line);
    }
    pgw_hba_free(hba);
}

/* A physical replication connection matches only the replication
 * keyword; anything else (a logical one too) never matches it. */
static void test_match_physical(void **state)
{
    (void)state;
    struct pgw_hba *hba = parse_ok("local   all          all                 trust\n"           /* 1 */
                                   "host    app          all   127.0.0.1/32  trust\n"           /* 2 */
                                   "host    /^re         all   127.0.0.1/32  trust\n"           /* 3 */
                                   "host    replication  repl  127.0.0.1/32  md5\n"             /* 4 */
                                   "host    all,replication all 127.0.0.1/32 scram-sha-256\n",  /* 5 */
                                   NULL);
    struct sockaddr_in in;
    memset(&in, 0, sizeof(in));
    in.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
    const struct sockaddr *sa = (const struct sockaddr *)&in;
    int line = -1;
    /* physical: the database name plays no part; all and names do not match */
    assert_int_equal(pgw_hba_match_conn(hba, false, false, true, sa, "app", "repl", &line, NULL),
                     PGW_HBA_MD5);
    assert_int_equal(line, 4);
    assert_int_equal(pgw_hba_match_conn(hba, false, false, true, sa, "app", "bob", &line, NULL),
                     PGW_HBA_SCRAM);
    assert_int_equal(line, 5);
    assert_int_equal(pgw_hba_match_conn(hba, true, false, true, NULL, "app", "bob", &line, NULL),
                     PGW_HBA_REJECT);
    assert_int_equal(line, 0);
    /* logical (or none): as any connection; the keyword never matches */
    assert_int_equal(pgw_hba_match_conn(hba, false, false, false, sa, "app", "repl", &line, NULL),
                     PGW_HBA_TRUST);
    assert_int_equal(line, 2);
    assert_int_equal(pgw_hba_match_conn(hba, false, false, false, sa, "replication", "repl",
                                        &line, NULL),
                     PGW_HBA_SCRAM);    /* rule 3 unsure, 4 not for it: 5 */
    assert_int_equal(line, 5);
    pgw_hba_free(hba);
}

/* Methods pgwharf lacks reject; a +group on a trust rule is skipped. */
static void test_unsupported_fail_closed(void **state)
{
    (void)state;
    struct pgw_hba *hba = parse_ok("local all all ident\nlocal all all trust\n", NULL);
    int line;
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "u", &line, NULL), PGW_HBA_REJECT);
    assert_int_equal(line, 1);
    pgw_hba_free(hba);
    /* An option pgwharf does not implement (clientcert=verify-full would
     * require a certificate): that rule rejects rather than letting in
     * more than it says. */
    hba = parse_ok("local all all md5 clientcert=verify-full\nlocal all all trust\n", NULL);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "u", &line, NULL), PGW_HBA_REJECT);
    assert_int_equal(line, 1);
    pgw_hba_free(hba);
    hba = parse_ok("local samegroup all trust\nlocal all all md5\n", NULL);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "u", &line, NULL), PGW_HBA_MD5);
    assert_int_equal(line, 2);
    pgw_hba_free(hba);
}

/* A rule skipped as unsure (+group, samerole, samenet, a host name) may be
 * the one PostgreSQL would use: a later rule that asks for less must not
 * decide in its place (once `+admins scram` then `all trust` let every
 * admin in without a password). */
static void test_unsure_rule_is_not_passed_for_less(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        enum pgw_hba_method method;
        int line;
    } cases[] = {
        /* asks for less: rejected, at the skipped rule */
        { "local all +admins scram-sha-256\nlocal all all trust\n", PGW_HBA_REJECT, 1 },
        { "local samerole all md5\nlocal all all password\n", PGW_HBA_REJECT, 1 },
        { "local all +g md5\nlocal all all trust\nlocal all all md5\n", PGW_HBA_REJECT, 1 },
        { "local all +a password\nlocal all +b md5\nlocal all all md5\n", PGW_HBA_REJECT, 1 },
        { "local all +a md5\nlocal all +b password\nlocal all all md5\n", PGW_HBA_REJECT, 2 },
        /* asks for as much: that rule decides */
        { "local all +admins md5\nlocal all all md5\n", PGW_HBA_MD5, 2 },
        { "local all +admins md5\nlocal all all scram-sha-256\n", PGW_HBA_SCRAM, 2 },
        { "local all +admins password\nlocal all all reject\n", PGW_HBA_REJECT, 2 },
        { "local all +staff trust\nlocal all all password\n", PGW_HBA_PASSWORD, 2 },
        /* a sure rule before the unsure one is not affected */
        { "local all all trust\nlocal all +admins md5\n", PGW_HBA_TRUST, 1 },
        /* nothing decides: no entry */
        { "local all +admins md5\n", PGW_HBA_REJECT, 0 },
        /* peer and cert with map=: only the same map asks for as much (one
         * map does not let in "at most" whom another does) */
        { "local all +a peer map=x\nlocal all all peer\n", PGW_HBA_REJECT, 1 },
        { "local all +a peer\nlocal all all peer map=x\n", PGW_HBA_REJECT, 1 },
        { "local all +a peer map=x\nlocal all all peer map=y\n", PGW_HBA_REJECT, 1 },
        { "local all +a peer map=x\nlocal all all peer map=x\n", PGW_HBA_PEER, 2 },
        { "local all +a peer\nlocal all all peer\n", PGW_HBA_PEER, 2 },
        { "local all +a peer map=x\nlocal all +b peer map=y\nlocal all all peer map=x\n",
          PGW_HBA_REJECT, 1 },
        { "local all +a peer map=x\nlocal all all md5\n", PGW_HBA_REJECT, 1 },
        { "local all +a trust\nlocal all all peer map=x\n", PGW_HBA_PEER, 2 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pgw_hba *hba = parse_ok(cases[i].text, NULL);
        int line = -1;
        enum pgw_hba_method m = pgw_hba_match(hba, true, false, NULL, "d", "u", &line, NULL);
        if (m != cases[i].method || line != cases[i].line)
            fail_msg("case %zu: got %s line %d, want %s line %d", i, pgw_hba_method_name(m),
                     line, pgw_hba_method_name(cases[i].method), cases[i].line);
        pgw_hba_free(hba);
    }
    /* The same over TCP with samenet and a host name. */
    struct sockaddr_in in = { .sin_family = AF_INET };
    inet_pton(AF_INET, "10.1.2.3", &in.sin_addr);
    struct pgw_hba *hba = parse_ok("host all all samenet md5\n"
                                   "host all all db.example.com scram-sha-256\n"
                                   "host all all 10.0.0.0/8 trust\n", NULL);
    int line;
    assert_int_equal(pgw_hba_match(hba, false, false, (const struct sockaddr *)&in, "d", "u",
                                   &line, NULL), PGW_HBA_REJECT);
    assert_int_equal(line, 1);
    pgw_hba_free(hba);
}

/* As PostgreSQL's next_token: only a quote at the start of a token makes it
 * a name rather than a keyword, +group or @file.  A quote further in made
 * the whole token a name: `+"ops team" reject` and `a"ll" reject` never
 * matched, and the trust rule after them let everyone in.  The connection
 * type, address and method are words whether quoted or not; addresses
 * are read as getaddrinfo reads numeric hosts; a continuation joins the
 * lines with nothing between (PostgreSQL 16). */
static void test_quotes_and_words_as_postgresql(void **state)
{
    (void)state;
    struct sockaddr_in sin = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    const struct sockaddr *sa = (const struct sockaddr *)&sin;
    static const struct {
        const char *text;
        const char *db, *user;
        enum pgw_hba_method method;
        int line;
        int nwarnings;
    } cases[] = {
        { "host all +\"ops team\" 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 trust\n",
          "d", "app", PGW_HBA_REJECT, 1, 1 },
        { "host all +\"ops team\" 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n",
          "d", "app", PGW_HBA_REJECT, 1, 1 },
        { "host a\"ll\" all 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 trust\n",
          "d", "app", PGW_HBA_REJECT, 1, 0 },
        { "host all a\"ll\" 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 trust\n",
          "d", "app", PGW_HBA_MD5, 1, 0 },
        { "host all \"+ops\" 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 trust\n",
          "d", "app", PGW_HBA_TRUST, 2, 0 },
        { "host all \"+ops\" 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 trust\n",
          "d", "+ops", PGW_HBA_REJECT, 1, 0 },
        { "host \"all\" all 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 trust\n",
          "d", "app", PGW_HBA_TRUST, 2, 0 },
        { "\"host\" all all 127.0.0.1/32 \"md5\"\n", "d", "app", PGW_HBA_MD5, 1, 0 },
        /* the address's keywords are keywords only unquoted: "all" is a
         * host name there (unsure: only a reject rule matches it) */
        { "host all all \"all\" trust\n", "d", "app", PGW_HBA_REJECT, 0, 1 },
        { "host all all \"all\" reject\nhost all all all md5\n", "d", "app", PGW_HBA_REJECT, 1,
          1 },
        { "host all all 127.1/32 md5\n", "d", "app", PGW_HBA_MD5, 1, 0 },
        { "host all all 127.1 255.255.255.255 md5\n", "d", "app", PGW_HBA_MD5, 1, 0 },
        { "host all all fe80::1%lo/128 reject\nhost all all all scram-sha-\\\n256\n",
          "d", "app", PGW_HBA_SCRAM, 2, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pgw_conf_diag diag = { 0 };
        struct pgw_hba *hba = parse_ok(cases[i].text, &diag);
        int line = -1;
        enum pgw_hba_method m = pgw_hba_match(hba, false, false, sa, cases[i].db, cases[i].user,
                                              &line, NULL);
        if (m != cases[i].method || line != cases[i].line || diag.nwarnings != cases[i].nwarnings)
            fail_msg("case %zu: got %s line %d (%d warnings), want %s line %d (%d)", i,
                     pgw_hba_method_name(m), line, diag.nwarnings,
                     pgw_hba_method_name(cases[i].method), cases[i].line, cases[i].nwarnings);
        if (cases[i].nwarnings && !strstr(diag.warnings[0], "group \"+ops team\"") &&
            !strstr(diag.warnings[0], "host name \"all\""))
            fail_msg("case %zu: %s", i, diag.warnings[0]);
        pgw_conf_diag_free(&diag);
        pgw_hba_free(hba);
    }
}

static void test_method_names(void **state)
{
    (void)state;
    assert_string_equal(pgw_hba_method_name(PGW_HBA_REJECT), "reject");
    assert_string_equal(pgw_hba_method_name(PGW_HBA_TRUST), "trust");
    assert_string_equal(pgw_hba_method_name(PGW_HBA_PASSWORD), "password");
    assert_string_equal(pgw_hba_method_name(PGW_HBA_MD5), "md5");
    assert_string_equal(pgw_hba_method_name(PGW_HBA_SCRAM), "scram-sha-256");
    assert_string_equal(pgw_hba_method_name(PGW_HBA_CERT), "cert");
    assert_string_equal(pgw_hba_method_name(PGW_HBA_PEER), "peer");
}

/* peer and the options of peer and cert rules. */
static void test_peer_and_map_options(void **state)
{
    (void)state;
    static const struct {
        const char *text, *error;
    } bad[] = {
        { "host all all all peer\n", "hba.conf:1: peer authentication is only supported on local "
          "sockets" },
        { "hostssl all all all peer map=m\n", "peer authentication is only supported on local" },
        { "local all all md5 map=m\n", "hba.conf:1: authentication option \"map\" is only valid "
          "for authentication methods peer and cert" },
        { "local all all trust map=m\n", "\"map\" is only valid" },
        { "local all all peer map=\n", "hba.conf:1: map= needs a map name" },
        { "local all all peer map\n", "authentication option not in name=value format: map" },
        { "hostssl all all all cert clientcert=verify-ca\n", "clientcert only accepts "
          "\"verify-full\"" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pgw_conf_diag diag = { 0 };
        struct pgw_hba *hba = NULL;
        assert_int_equal(pgw_hba_parse("hba.conf", bad[i].text, &hba, &diag), PGW_ECONFIG);
        assert_null(hba);
        assert_int_equal(diag.nerrors, 1);
        if (!strstr(diag.errors[0], bad[i].error))
            fail_msg("case %zu: %s", i, diag.errors[0]);
        pgw_conf_diag_free(&diag);
    }
    struct pgw_conf_diag diag = { 0 };
    struct pgw_hba *hba = parse_ok("local db1 all peer\n"
                                   "local db2 all peer map=\"local users\"\n"
                                   "hostssl all all all cert map=certs clientcert=verify-full\n"
                                   "local all all reject map=anything\n", &diag);
    assert_int_equal(diag.nwarnings, 0);
    pgw_conf_diag_free(&diag);
    struct sockaddr_in in = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
    int line;
    const char *map = "x";
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "db1", "u", &line, &map), PGW_HBA_PEER);
    assert_int_equal(line, 1);
    assert_null(map);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "db2", "u", &line, &map), PGW_HBA_PEER);
    assert_string_equal(map, "local users");
    assert_int_equal(pgw_hba_match(hba, false, true, (const struct sockaddr *)&in, "db2", "u",
                                   &line, &map), PGW_HBA_CERT);
    assert_int_equal(line, 3);
    assert_string_equal(map, "certs");
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "db3", "u", &line, &map),
                     PGW_HBA_REJECT);
    assert_null(map);
    pgw_hba_free(hba);
    /* Another option on a peer rule: not implemented, the rule rejects. */
    hba = parse_ok("local all all peer map=m include_realm=0\nlocal all all trust\n", NULL);
    assert_int_equal(pgw_hba_match(hba, true, false, NULL, "d", "u", &line, &map), PGW_HBA_REJECT);
    assert_int_equal(line, 1);
    assert_null(map);
    pgw_hba_free(hba);
}

static void test_ident_parse_and_match(void **state)
{
    (void)state;
    static const struct {
        const char *text, *error;
    } bad[] = {
        { "m sys\n", "ident.conf:1: missing entry at end of line" },
        { "# c\nm\n", "ident.conf:2: missing entry" },
        { "m sys db extra\n", "ident.conf:1: extra field \"extra\" after the database user name" },
        { "m a,b db\n", "ident.conf:1: multiple values in ident field (system user name)" },
        { "m sys \"db\n", "ident.conf:1: unterminated quoted string" },
    };
    struct pgw_hba *hba = parse_ok("local all all peer map=m\n", NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pgw_conf_diag diag = { 0 };
        assert_int_equal(pgw_hba_parse_ident(hba, "ident.conf", bad[i].text, &diag),
                         PGW_ECONFIG);
        assert_int_equal(diag.nerrors, 1);
        if (!strstr(diag.errors[0], bad[i].error))
            fail_msg("case %zu: %s", i, diag.errors[0]);
        pgw_conf_diag_free(&diag);
    }
    struct pgw_conf_diag diag = { 0 };
    assert_int_equal(pgw_hba_parse_ident(hba, "ident.conf",
                                         "# map  system  database\n"
                                         "m  alice  app\n"
                                         "m  alice  report   # trailing\r\n"
                                         "m  root   all\n"
                                         "m  bob    \"all\"\n"
                                         "m  /^(.*)$  \\1\n"
                                         "m  carol  +staff\n"
                                         "m  dave   /^x\n"
                                         "other \"e v e\" app\n", &diag), 0);
    assert_int_equal(diag.nwarnings, 3);
    assert_non_null(strstr(diag.warnings[0], "ident.conf:6: regular expression \"/^(.*)$\""));
    assert_non_null(strstr(diag.warnings[1], "ident.conf:7: group \"+staff\""));
    assert_non_null(strstr(diag.warnings[2], "ident.conf:8: regular expression \"/^x\""));
    pgw_conf_diag_free(&diag);
    static const struct {
        const char *map, *sys, *db;
        bool ok;
        int line;
    } cases[] = {
        { "m", "alice", "app", true, 2 },
        { "m", "alice", "report", true, 3 },
        { "m", "alice", "alice", false, 0 },     /* a map replaces "same name" */
        { "m", "Alice", "app", false, 0 },       /* case matters */
        { "m", "root", "anyone", true, 4 },      /* all */
        { "m", "bob", "app", false, 0 },         /* "all" quoted is a name */
        { "m", "bob", "all", true, 5 },
        { "m", "x", "x", false, 0 },             /* the regex line never matches */
        { "m", "carol", "staff", false, 0 },
        { "m", "carol", "+staff", false, 0 },
        { "m", "dave", "/^x", false, 0 },
        { "other", "e v e", "app", true, 9 },
        { "other", "alice", "app", false, 0 },
        { "nosuch", "alice", "app", false, 0 },
        { NULL, "alice", "alice", true, 0 },     /* no map: the same name */
        { NULL, "alice", "app", false, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int line = -1;
        bool ok = pgw_hba_usermap(hba, cases[i].map, cases[i].sys, cases[i].db, &line);
        if (ok != cases[i].ok || line != cases[i].line)
            fail_msg("case %zu: got %d line %d", i, ok, line);
    }
    /* A failed parse leaves no maps: nothing is let in by half a file. */
    assert_int_equal(pgw_hba_parse_ident(hba, "ident.conf", "m alice app\nm\n", NULL),
                     PGW_ECONFIG);
    int line;
    assert_false(pgw_hba_usermap(hba, "m", "alice", "app", &line));
    pgw_hba_free(hba);
}

/* Write text to path; a path ending in XXXXXX is made unique first. */
static void write_file(char *path, const char *text)
{
    size_t n = strlen(path);
    int fd = n >= 6 && strcmp(path + n - 6, "XXXXXX") == 0
                 ? mkstemp(path) : open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_load_with_ident_file(void **state)
{
    (void)state;
    char hpath[] = "/tmp/pgw-test-hba-XXXXXX", ipath[] = "/tmp/pgw-test-ident-XXXXXX";
    write_file(hpath, "local all all peer map=m\nlocal all all peer map=gone\n");
    write_file(ipath, "m alice app\n");
    struct pgw_hba *hba;
    struct pgw_conf_diag diag = { 0 };
    assert_int_equal(pgw_hba_load(hpath, ipath, &hba, &diag), 0);
    int line;
    assert_true(pgw_hba_usermap(hba, "m", "alice", "app", &line));
    assert_int_equal(line, 1);
    assert_int_equal(diag.nwarnings, 1);
    assert_non_null(strstr(diag.warnings[0], ":2: map \"gone\" has no line in "));
    pgw_conf_diag_free(&diag);
    pgw_hba_free(hba);
    /* No auth_ident_file: a map lets nobody in, and the load says so. */
    assert_int_equal(pgw_hba_load(hpath, "", &hba, &diag), 0);
    assert_int_equal(diag.nwarnings, 2);
    assert_non_null(strstr(diag.warnings[0], ":1: map \"m\" but auth_ident_file is not set"));
    assert_false(pgw_hba_usermap(hba, "m", "alice", "app", &line));
    pgw_conf_diag_free(&diag);
    pgw_hba_free(hba);
    /* A bad or missing ident file fails the load, with file:line. */
    unlink(ipath);
    assert_int_equal(pgw_hba_load(hpath, ipath, &hba, &diag), PGW_ECONFIG);
    assert_null(hba);
    assert_non_null(strstr(diag.errors[0], "cannot open"));
    pgw_conf_diag_free(&diag);
    write_file(ipath, "m alice\n");
    assert_int_equal(pgw_hba_load(hpath, ipath, &hba, &diag), PGW_ECONFIG);
    assert_null(hba);
    assert_non_null(strstr(diag.errors[0], ":1: missing entry at end of line"));
    pgw_conf_diag_free(&diag);
    unlink(ipath);
    unlink(hpath);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/pgw-test-hba-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "local all all trust\nhost all all 127.0.0.1/32 md5\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct pgw_hba *hba;
    struct pgw_conf_diag diag = { 0 };
    assert_int_equal(pgw_hba_load(path, NULL, &hba, &diag), 0);
    assert_int_equal(pgw_hba_count(hba), 2);
    pgw_hba_free(hba);
    unlink(path);
    assert_int_equal(pgw_hba_load(path, NULL, &hba, &diag), PGW_ECONFIG);
    assert_null(hba);
    assert_int_equal(diag.nerrors, 1);
    assert_non_null(strstr(diag.errors[0], path));
    assert_non_null(strstr(diag.errors[0], "cannot open"));
    pgw_conf_diag_free(&diag);
}

/* A database or user name starting with '/' is a regular expression to
 * PostgreSQL 16 and later, quoted or not.  Read as a plain name, a reject
 * rule naming /^adm never matched "admin", and the trust rule after it
 * let admin in; now such a rule is unsure (fails closed). */
static void test_regex_names_fail_closed(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "host all /^adm 0.0.0.0/0 reject\nhost all all 0.0.0.0/0 trust\n",
        "host all \"/^adm\" 0.0.0.0/0 reject\nhost all all 0.0.0.0/0 trust\n",
        "host /^adm all 0.0.0.0/0 reject\nhost all all 0.0.0.0/0 trust\n",
        "host all u,/x 0.0.0.0/0 scram-sha-256\nhost all all 0.0.0.0/0 trust\n",
    };
    struct sockaddr_in sin = { .sin_family = AF_INET };
    inet_pton(AF_INET, "10.0.0.1", &sin.sin_addr);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct pgw_conf_diag diag = { 0 };
        struct pgw_hba *hba = parse_ok(texts[i], &diag);
        int line;
        enum pgw_hba_method m = pgw_hba_match(hba, false, false, (struct sockaddr *)&sin,
                                              "admindb", "admin", &line, NULL);
        if (m != PGW_HBA_REJECT || line != 1)
            fail_msg("case %zu: method %d line %d", i, (int)m, line);
        if (diag.nwarnings != 1 || !strstr(diag.warnings[0], "hba.conf:1: regular expression"))
            fail_msg("case %zu: %d warnings: %s", i, diag.nwarnings,
                     diag.nwarnings ? diag.warnings[0] : "");
        pgw_conf_diag_free(&diag);
        pgw_hba_free(hba);
    }
    /* in auth_ident_file too: a quoted "/..." system user is a regular
     * expression, not a certificate CN or login spelled that way */
    struct pgw_hba *hba = parse_ok("local all all peer map=m\n", NULL);
    assert_int_equal(pgw_hba_parse_ident(hba, "ident.conf",
                                         "m \"/^alice$\" bob\nm carol \"/^b\"\n", NULL), 0);
    int line;
    assert_false(pgw_hba_usermap(hba, "m", "/^alice$", "bob", &line));
    assert_false(pgw_hba_usermap(hba, "m", "carol", "/^b", &line));
    pgw_hba_free(hba);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_at_file_lists_names),
        cmocka_unit_test(test_parse_reports_all_errors),
        cmocka_unit_test(test_parse_warnings),
        cmocka_unit_test(test_parse_syntax),
        cmocka_unit_test(test_match_table),
        cmocka_unit_test(test_match_physical),
        cmocka_unit_test(test_unsupported_fail_closed),
        cmocka_unit_test(test_unsure_rule_is_not_passed_for_less),
        cmocka_unit_test(test_method_names),
        cmocka_unit_test(test_quotes_and_words_as_postgresql),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_peer_and_map_options),
        cmocka_unit_test(test_ident_parse_and_match),
        cmocka_unit_test(test_load_with_ident_file),
        cmocka_unit_test(test_regex_names_fail_closed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
