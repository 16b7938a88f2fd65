/*
 * test_conf.c - the config loader: every value type, defaults, sections,
 * %include, each kind of error with its exact "file:line: message",
 * connection strings, [users] and inheritance, print/reload round trip,
 * deep copies, admin SET/SHOW, the auth file, and a real-world pgbouncer.ini.
 * Data files live in tests/unit/data/conf/.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/err.h"
#include "conf/conf.h"

#define DATA PGW_SOURCE_DIR "/tests/unit/data/conf/"
/* The smallest valid [pgwharf] section: no auth secrets needed. */
#define BASE "[pgwharf]\nauth_type = trust\n"

/* ---- helpers ---- */

static void dump(const struct pgw_conf_diag *d)
{
    for (int i = 0; i < d->nerrors; i++)
        fprintf(stderr, "  error: %s\n", d->errors[i]);
    for (int i = 0; i < d->nwarnings; i++)
        fprintf(stderr, "  warning: %s\n", d->warnings[i]);
}

static bool has(char **msgs, int n, const char *want)
{
    for (int i = 0; i < n; i++)
        if (strcmp(msgs[i], want) == 0)
            return true;
    return false;
}

#define assert_error(d, want)                                                 \
    do {                                                                      \
        if (!has((d)->errors, (d)->nerrors, want)) {                          \
            dump(d);                                                          \
            fail_msg("missing error: %s", want);                              \
        }                                                                     \
    } while (0)
#define assert_warning(d, want)                                               \
    do {                                                                      \
        if (!has((d)->warnings, (d)->nwarnings, want)) {                      \
            dump(d);                                                          \
            fail_msg("missing warning: %s", want);                            \
        }                                                                     \
    } while (0)

static struct pgw_config *load_ok(const char *text, struct pgw_conf_diag *d)
{
    struct pgw_config *cfg = NULL;
    int rc = pgw_conf_load_string("t.ini", text, &cfg, d);
    if (rc != 0 || d->nerrors)
        dump(d);
    assert_int_equal(rc, 0);
    assert_int_equal(d->nerrors, 0);
    assert_non_null(cfg);
    return cfg;
}

/* Expect failure with exactly `nerrors` errors; diag keeps them. */
static void load_fail(const char *text, struct pgw_conf_diag *d, int nerrors)
{
    struct pgw_config *cfg = (struct pgw_config *)1;
    int rc = pgw_conf_load_string("t.ini", text, &cfg, d);
    if (d->nerrors != nerrors)
        dump(d);
    assert_int_equal(rc, PGW_ECONFIG);
    assert_null(cfg);
    assert_int_equal(d->nerrors, nerrors);
}

/* One general key's value error, as the loader reports it. */
static void expect_key_error(const char *line, const char *want)
{
    char text[512];
    struct pgw_conf_diag d = { 0 };
    snprintf(text, sizeof(text), BASE "%s\n", line);
    load_fail(text, &d, 1);
    assert_error(&d, want);
    pgw_conf_diag_free(&d);
}

static const char *conn(const struct pgw_conf_db *db, const char *key)
{
    for (int i = 0; i < db->nconn; i++)
        if (strcmp(db->conn_keys[i], key) == 0)
            return db->conn_vals[i];
    return NULL;
}

/* ---- defaults ---- */

static void test_defaults(void **state)
{
    struct pgw_config *cfg = pgw_conf_defaults();
    assert_non_null(cfg);
    assert_string_equal(cfg->listen_addr, "127.0.0.1");
    assert_int_equal(cfg->listen_port, 6432);
    assert_string_equal(cfg->unix_socket_dir, "/tmp");
    assert_int_equal(cfg->listen_backlog, 128);
    assert_int_equal(cfg->auth_type, PGW_AUTH_MD5);
    assert_string_equal(cfg->auth_file, "");
    assert_string_equal(cfg->auth_query,
                        "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE "
                        "rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin");
    assert_int_equal(cfg->pool_mode, PGW_POOL_SESSION);
    assert_int_equal(cfg->max_client_conn, 100);
    assert_int_equal(cfg->default_pool_size, 20);
    assert_int_equal(cfg->min_pool_size, 0);
    assert_int_equal(cfg->reserve_pool_size, 0);
    assert_true(cfg->reserve_pool_timeout == 5);
    assert_int_equal(cfg->max_prepared_statements, 200);
    assert_int_equal(cfg->max_notify_backlog, 1048576);
    assert_true(cfg->notify_bridge_timeout == 120);
    assert_true(cfg->server_lifetime == 3600);
    assert_true(cfg->server_idle_timeout == 600);
    assert_true(cfg->server_connect_timeout == 15);
    assert_true(cfg->server_login_retry == 15);
    assert_string_equal(cfg->server_reset_query, "DISCARD ALL");
    assert_false(cfg->server_reset_query_always);
    assert_true(cfg->server_reset_session_state);
    assert_string_equal(cfg->server_check_query, "select 1");
    assert_true(cfg->server_check_delay == 30);
    assert_false(cfg->server_round_robin);
    assert_int_equal(cfg->server_pipeline_depth, 0);
    assert_true(cfg->query_timeout == 0);
    assert_true(cfg->query_wait_timeout == 120);
    assert_true(cfg->client_login_timeout == 60);
    assert_true(cfg->log_connections && cfg->log_disconnections && cfg->log_pooler_errors);
    assert_true(cfg->stats_period == 60);
    assert_string_equal(cfg->log_level, "info");
    assert_int_equal(cfg->client_tls_sslmode, PGW_TLS_DISABLE);
    assert_string_equal(cfg->client_tls_protocols, "secure");
    assert_string_equal(cfg->client_tls_ciphers, "fast");
    assert_int_equal(cfg->server_tls_sslmode, PGW_TLS_PREFER);
    assert_int_equal(cfg->breaker_threshold, 3);
    assert_true(cfg->breaker_cooldown == 1);
    assert_true(cfg->breaker_max_cooldown == 2);
    assert_true(cfg->server_connect_rate == 0);
    assert_int_equal(cfg->server_connect_burst, 0);
    assert_string_equal(cfg->metrics_addr, "127.0.0.1");
    assert_int_equal(cfg->metrics_port, 0);
    assert_true(cfg->shutdown_timeout == 30);
    assert_true(cfg->cancel_wait_timeout == 10);
    assert_string_equal(cfg->ignore_startup_parameters, "");
    assert_false(cfg->application_name_add_host);
    assert_int_equal(cfg->ndbs, 0);
    assert_int_equal(cfg->nusers, 0);

    /* The table's default text is what SHOW gives for a default config. */
    int n = 0;
    char buf[256];
    for (const char *k; (k = pgw_conf_key_name(n)) != NULL; n++) {
        assert_true(pgw_conf_get(cfg, k, buf, sizeof(buf)));
        assert_string_equal(buf, pgw_conf_key_default(n));
    }
    assert_true(n > 60);
    assert_null(pgw_conf_key_default(n));
    assert_null(pgw_conf_key_name(-1));
    pgw_conf_free(cfg);
}

static void test_minimal_file_gets_defaults(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE, &d);
    assert_string_equal(cfg->file, "t.ini");
    assert_int_equal(cfg->listen_port, 6432);
    assert_int_equal(cfg->default_pool_size, 20);
    assert_int_equal(d.nwarnings, 0);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

/* ---- value types ---- */

/* default_pool_size = 0 and a database's pool_size=0, as PgBouncer 1.18
 * takes them (run side by side): a pool of no servers of its own (its
 * clients wait, query_wait_timeout, or the reserve), unless a database
 * entry sets pool_size.  pgwharf refused the file. */
static void test_pool_size_zero(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "default_pool_size = 0\nmin_pool_size = 0\n"
                                          "[databases]\nsized = pool_size=3\nzero = pool_size=0\n"
                                          "plain = dbname=x\n", &d);
    assert_int_equal(cfg->default_pool_size, 0);
    assert_int_equal(pgw_conf_pool_size(cfg, pgw_conf_find_db(cfg, "sized"), NULL), 3);
    assert_int_equal(pgw_conf_pool_size(cfg, pgw_conf_find_db(cfg, "zero"), NULL), 0);
    assert_int_equal(pgw_conf_pool_size(cfg, pgw_conf_find_db(cfg, "plain"), NULL), 0);
    assert_int_equal(d.nwarnings, 0);
    char err[200];
    assert_int_equal(pgw_conf_set(cfg, "default_pool_size", "0", err, sizeof(err)), 0);
    assert_int_not_equal(pgw_conf_set(cfg, "default_pool_size", "-1", err, sizeof(err)), 0);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

static void test_int_keys(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "listen_port = 0\nmax_client_conn = 5000\n"
                                          "default_pool_size=1\nmin_pool_size = 0\n"
                                          "metrics_port = 65535\nbreaker_threshold = +7\n"
                                          "max_notify_backlog = 8192\n", &d);
    assert_int_equal(cfg->listen_port, 0);
    assert_int_equal(cfg->max_client_conn, 5000);
    assert_int_equal(cfg->default_pool_size, 1);
    assert_int_equal(cfg->metrics_port, 65535);
    assert_int_equal(cfg->breaker_threshold, 7);
    assert_int_equal(cfg->max_notify_backlog, 8192);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    expect_key_error("default_pool_size = -3",
                     "t.ini:3: default_pool_size: expected a non-negative integer, got \"-3\"");
    expect_key_error("server_pipeline_depth = 65",
                     "t.ini:3: server_pipeline_depth: expected an integer from 0 to 64, got \"65\"");
    expect_key_error("listen_port = 65536",
                     "t.ini:3: listen_port: expected an integer from 0 to 65535, got \"65536\"");
    expect_key_error("listen_port = 64k",
                     "t.ini:3: listen_port: expected an integer from 0 to 65535, got \"64k\"");
    expect_key_error("max_notify_backlog = 8191",
                     "t.ini:3: max_notify_backlog: expected an integer from 8192 to 2147483647, "
                     "got \"8191\"");
    expect_key_error("min_pool_size = -1",
                     "t.ini:3: min_pool_size: expected a non-negative integer, got \"-1\"");
    expect_key_error("max_client_conn = 99999999999999",
                     "t.ini:3: max_client_conn: expected a positive integer, got "
                     "\"99999999999999\"");
    expect_key_error("max_client_conn =",
                     "t.ini:3: max_client_conn: expected a positive integer, got \"\"");
    expect_key_error("max_client_conn = 1.5",
                     "t.ini:3: max_client_conn: expected a positive integer, got \"1.5\"");
}

/* [pgbouncer] integers as PgBouncer's cf_set_int reads them: strtol with
 * base 0, the whole value.  0x10 was refused here, and 010 was ten where
 * PgBouncer makes it eight.  [databases] and [users] integers stay decimal:
 * PgBouncer reads those with atoi (010 is ten there). */
static void test_int_keys_as_pgbouncer(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "default_pool_size = 0x10\nmax_client_conn = 010\n"
                                          "listen_port = 0X1F90\nmin_pool_size = 00\n"
                                          "[databases]\na = pool_size=010\n", &d);
    assert_int_equal(cfg->default_pool_size, 16);
    assert_int_equal(cfg->max_client_conn, 8);
    assert_int_equal(cfg->listen_port, 8080);
    assert_int_equal(cfg->min_pool_size, 0);
    assert_int_equal(pgw_conf_find_db(cfg, "a")->pool_size, 10);
    /* octal by surprise for whoever did not know: said at its line */
    assert_int_equal(d.nwarnings, 2);
    assert_warning(&d, "t.ini:4: max_client_conn: 010 is octal, 8 (a leading 0 means octal, "
                       "as PgBouncer reads it)");
    assert_warning(&d, "t.ini:6: min_pool_size: 00 is octal, 0 (a leading 0 means octal, "
                       "as PgBouncer reads it)");
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    /* the console's SET reads them the same way */
    cfg = load_ok(BASE, &d);
    char err[256];
    assert_int_equal(pgw_conf_set(cfg, "default_pool_size", "0x20", err, sizeof(err)), 0);
    assert_int_equal(cfg->default_pool_size, 32);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    /* what strtol does not read whole, PgBouncer refuses too */
    expect_key_error("default_pool_size = 09",
                     "t.ini:3: default_pool_size: expected a non-negative integer (decimal, 0x "
                     "hexadecimal, or octal after a leading 0, as PgBouncer reads it), got \"09\"");
    expect_key_error("default_pool_size = 0x",
                     "t.ini:3: default_pool_size: expected a non-negative integer (decimal, 0x "
                     "hexadecimal, or octal after a leading 0, as PgBouncer reads it), got \"0x\"");
    expect_key_error("listen_port = 0x10000",
                     "t.ini:3: listen_port: expected an integer from 0 to 65535, got \"0x10000\"");
    expect_key_error("max_client_conn = 0x7fffffffffffffffff",
                     "t.ini:3: max_client_conn: expected a positive integer, got "
                     "\"0x7fffffffffffffffff\"");
    /* [databases]: decimal, and 0x10 (atoi's 0 in PgBouncer) an error */
    load_fail(BASE "[databases]\nb = pool_size=0x10\n", &d, 1);
    assert_error(&d, "t.ini:4: database \"b\": pool_size: expected a non-negative integer, "
                     "got \"0x10\"");
    pgw_conf_diag_free(&d);
}

static void test_duration_parse(void **state)
{
    static const struct {
        const char *text;
        double want;
    } good[] = {
        { "0", 0 }, { "5", 5 }, { "1.5", 1.5 }, { ".5", 0.5 }, { "3.", 3 },
        { "250ms", 0.25 }, { "100us", 0.0001 }, { "2s", 2 }, { "2min", 120 },
        { "1h", 3600 }, { "1.5h", 5400 }, { "1d", 86400 }, { "5 s", 5 },
        { "10MS", 0.01 }, { " 7 ", 7 },
        /* what PgBouncer's strtod reads (1.18: SET query_timeout and the
         * ini file), with its meaning: whole microseconds */
        { "1e3", 1000 }, { "1E3", 1000 }, { "1e+2", 100 }, { "5e-1", 0.5 },
        { "+5", 5 }, { "-0", 0 }, { "0x10", 16 }, { "0x1p4", 16 }, { "00012", 12 },
        { "1e-7", 0 }, { "0.0000004", 0 }, { "0.0000015", 0.000001 }, { "1e3ms", 1 },
        { "1.5e3us", 0.0015 },
    };
    static const char *const bad[] = {
        "", "-1", "-5s", "abc", "5x", "1m", "1.2.3", "inf", "nan", "infinity", "-nan",
        "s", ".", "5 s s", "+", "-", "1e", "e3", "1,5", "1_000", "0x", ".e1",
        /* strtod's ERANGE: PgBouncer refuses these */
        "1e400", "1e-400",
        /* PgBouncer takes these as garbage (an out-of-range cast) */
        "9e18", "1e13",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        double v = -1;
        if (pgw_conf_parse_duration(good[i].text, &v) != 0)
            fail_msg("\"%s\" refused", good[i].text);
        if (v != good[i].want || signbit(v))
            fail_msg("%s -> %g, want %g", good[i].text, v, good[i].want);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        double v = 42;
        if (pgw_conf_parse_duration(bad[i], &v) != PGW_EINVAL)
            fail_msg("\"%s\" parsed", bad[i]);
        assert_true(v == 42);
    }
}

static void test_duration_keys(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "server_lifetime = 2h\nquery_timeout = 1.5\n"
                                          "query_wait_timeout = 250ms\nbreaker_cooldown = 500us\n"
                                          "shutdown_timeout = 1min\nstats_period = 1d\n"
                                          "server_connect_rate = 2.5\n"
                                          "cancel_wait_timeout = 1500ms\n"
                                          "notify_bridge_timeout = 2.5\n", &d);
    assert_true(cfg->server_lifetime == 7200);
    assert_true(cfg->notify_bridge_timeout == 2.5);
    assert_true(cfg->cancel_wait_timeout == 1.5);
    assert_true(cfg->query_timeout == 1.5);
    assert_true(cfg->query_wait_timeout == 0.25);
    assert_true(cfg->breaker_cooldown == 0.0005);
    assert_true(cfg->shutdown_timeout == 60);
    assert_true(cfg->stats_period == 86400);
    assert_true(cfg->server_connect_rate == 2.5);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    expect_key_error("server_lifetime = -5",
                     "t.ini:3: server_lifetime: expected a non-negative duration, got \"-5\"");
    expect_key_error("notify_bridge_timeout = -1",
                     "t.ini:3: notify_bridge_timeout: expected a non-negative duration, got \"-1\"");
    expect_key_error("server_idle_timeout = 10 minutes",
                     "t.ini:3: server_idle_timeout: expected a duration (seconds, or a number "
                     "with us, ms, s, min, h, d), got \"10 minutes\"");
    /* PgBouncer's forms through the file and its errors at file:line */
    cfg = load_ok(BASE "query_timeout = 1e3\nclient_idle_timeout = 0x10\n"
                       "server_check_delay = +2.5\nidle_transaction_timeout = 1e-7\n", &d);
    assert_true(cfg->query_timeout == 1000);
    assert_true(cfg->client_idle_timeout == 16);
    assert_true(cfg->server_check_delay == 2.5);
    assert_true(cfg->idle_transaction_timeout == 0);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    expect_key_error("query_timeout = 1e400",
                     "t.ini:3: query_timeout: expected a duration (seconds, or a number "
                     "with us, ms, s, min, h, d), got \"1e400\"");
    expect_key_error("query_timeout = nan",
                     "t.ini:3: query_timeout: expected a duration (seconds, or a number "
                     "with us, ms, s, min, h, d), got \"nan\"");
    expect_key_error("query_timeout = -1e3",
                     "t.ini:3: query_timeout: expected a non-negative duration, got \"-1e3\"");
    /* [databases] and [users] values PgBouncer reads with atoi: "1e3" is 1
     * there, "0x10" 0, so only the forms that mean the same to both load */
    cfg = load_ok(BASE "[databases]\nb = server_lifetime=1.5\n"
                       "[users]\nu = client_idle_timeout=30\n", &d);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    load_fail(BASE "[databases]\nb = server_lifetime=1e3\n"
                   "[users]\nu = client_idle_timeout=0x10 query_wait_timeout=+5\n", &d, 3);
    assert_error(&d, "t.ini:4: database \"b\": server_lifetime: expected a duration (seconds, "
                     "or a number with us, ms, s, min, h, d), got \"1e3\"");
    assert_error(&d, "t.ini:6: user \"u\": client_idle_timeout: expected a duration (seconds, "
                     "or a number with us, ms, s, min, h, d), got \"0x10\"");
    assert_error(&d, "t.ini:6: user \"u\": query_wait_timeout: expected a duration (seconds, "
                     "or a number with us, ms, s, min, h, d) or -1 (not set), got \"+5\"");
    pgw_conf_diag_free(&d);
    /* -1 is "not set" there, as PgBouncer reads it (it was refused) */
    cfg = load_ok(BASE "default_pool_size = 7\n[databases]\n"
                       "b = pool_size=-1 reserve_pool=-1 max_db_connections=-1 min_pool_size=-1\n"
                       "[users]\nu = pool_size=-1 max_user_connections=-1\n", &d);
    const struct pgw_conf_db *b = pgw_conf_find_db(cfg, "b");
    assert_int_equal(b->pool_size, -1);
    assert_int_equal(b->max_db_connections, -1);
    assert_int_equal(pgw_conf_find_user(cfg, "u")->max_user_connections, -1);
    assert_int_equal(pgw_conf_pool_size(cfg, b, pgw_conf_find_user(cfg, "x")), 7);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    load_fail(BASE "[databases]\nb = pool_size=-2\n", &d, 1);
    assert_error(&d, "t.ini:4: database \"b\": pool_size: expected a non-negative integer, "
                     "got \"-2\"");
    pgw_conf_diag_free(&d);
    expect_key_error("server_connect_rate = fast",
                     "t.ini:3: server_connect_rate: expected a non-negative number, got \"fast\"");
}

static void test_bool_forms(void **state)
{
    static const struct {
        const char *text;
        bool want;
    } forms[] = {
        { "1", true }, { "0", false }, { "yes", true }, { "no", false }, { "on", true },
        { "off", false }, { "true", true }, { "false", false }, { "TRUE", true }, { "Off", false },
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        char text[256];
        struct pgw_conf_diag d = { 0 };
        snprintf(text, sizeof(text), BASE "server_round_robin = %s\nlog_connections = %s\n",
                 forms[i].text, forms[i].text);
        struct pgw_config *cfg = load_ok(text, &d);
        assert_int_equal(cfg->server_round_robin, forms[i].want);
        assert_int_equal(cfg->log_connections, forms[i].want);
        pgw_conf_free(cfg);
        pgw_conf_diag_free(&d);
    }
    expect_key_error("log_connections = maybe",
                     "t.ini:3: log_connections: expected a boolean (on/off, yes/no, true/false, "
                     "1/0), got \"maybe\"");
    expect_key_error("server_round_robin = 2",
                     "t.ini:3: server_round_robin: expected a boolean (on/off, yes/no, "
                     "true/false, 1/0), got \"2\"");
}

static void test_enums(void **state)
{
    static const char *const pools[] = { "session", "transaction", "statement" };
    static const char *const auths[] = { "trust", "any", "plain", "md5", "scram-sha-256",
                                         "cert", "hba" };
    static const char *const tls[] = { "disable", "allow", "prefer", "require", "verify-ca",
                                       "verify-full" };
    char err[256];
    struct pgw_config *cfg = pgw_conf_defaults();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pgw_conf_set(cfg, "pool_mode", pools[i], err, sizeof(err)), 0);
        assert_int_equal(cfg->pool_mode, i);
        assert_string_equal(pgw_pool_mode_name((enum pgw_pool_mode)i), pools[i]);
    }
    for (int i = 0; i < 7; i++) {
        assert_int_equal(pgw_conf_set(cfg, "auth_type", auths[i], err, sizeof(err)), 0);
        assert_int_equal(cfg->auth_type, i);
        assert_string_equal(pgw_auth_type_name((enum pgw_auth_type)i), auths[i]);
    }
    for (int i = 0; i < 6; i++) {
        assert_int_equal(pgw_conf_set(cfg, "server_tls_sslmode", tls[i], err, sizeof(err)), 0);
        assert_int_equal(cfg->server_tls_sslmode, i);
        assert_int_equal(pgw_conf_set(cfg, "client_tls_sslmode", tls[i], err, sizeof(err)), 0);
        assert_int_equal(cfg->client_tls_sslmode, i);
        assert_string_equal(pgw_tls_mode_name((enum pgw_tls_mode)i), tls[i]);
    }
    assert_int_equal(pgw_conf_set(cfg, "pool_mode", "Transaction", err, sizeof(err)), 0);
    assert_int_equal(cfg->pool_mode, PGW_POOL_TRANSACTION);
    pgw_conf_free(cfg);

    expect_key_error("pool_mode = txn",
                     "t.ini:3: pool_mode: expected one of session, transaction, statement; "
                     "got \"txn\"");
    expect_key_error("server_tls_sslmode = on",
                     "t.ini:3: server_tls_sslmode: expected one of disable, allow, prefer, "
                     "require, verify-ca, verify-full; got \"on\"");
    expect_key_error("log_level = loud",
                     "t.ini:3: log_level: expected one of debug, info, notice, warning, error, "
                     "fatal; got \"loud\"");
    struct pgw_conf_diag d = { 0 };
    load_fail("[pgwharf]\nauth_type = pam\n", &d, 1);
    assert_error(&d, "t.ini:2: auth_type: expected one of trust, any, plain, md5, "
                     "scram-sha-256, cert, hba; got \"pam\"");
    pgw_conf_diag_free(&d);
}

static void test_strings(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(
        BASE "server_reset_query = RESET ALL; SET search_path = public\n"
             "auth_query = SELECT u, p FROM auth.lookup($1) ; -- not a comment\n"
             "unix_socket_dir =\n"
             "listen_addr = 0.0.0.0, ::1\n"
             "admin_users = \"quoted stays\"\n"
             "log_level = DEBUG\n", &d);
    assert_string_equal(cfg->server_reset_query, "RESET ALL; SET search_path = public");
    assert_string_equal(cfg->auth_query, "SELECT u, p FROM auth.lookup($1) ; -- not a comment");
    assert_string_equal(cfg->unix_socket_dir, "");
    assert_string_equal(cfg->listen_addr, "0.0.0.0, ::1");
    assert_string_equal(cfg->admin_users, "\"quoted stays\"");
    assert_string_equal(cfg->log_level, "DEBUG");
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

/* ---- sections, case, comments ---- */

static void test_sections_and_case(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok("\xef\xbb\xbf; comment\r\n"
                                     "  # indented comment\n"
                                     "[PgBouncer]\r\n"
                                     "AUTH_TYPE = trust\n"
                                     "Listen_Port=7001\t\n"
                                     "\n"
                                     "[ DATABASES ]  ; trailing comment\n"
                                     "App = host=h\n"
                                     "[pgwharf]\n"
                                     "listen_port = 7002\n", &d);
    assert_int_equal(cfg->auth_type, PGW_AUTH_TRUST);
    assert_int_equal(cfg->listen_port, 7002);  /* the later line wins */
    assert_int_equal(cfg->ndbs, 1);
    assert_string_equal(cfg->dbs[0].name, "App");  /* database names keep their case */
    assert_null(pgw_conf_find_db(cfg, "app"));
    assert_int_equal(cfg->dbs[0].line, 8);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

/* PgBouncer sets every [pgbouncer] key back to its default where that
 * header comes again (an %include'd file opening its own), so a file that
 * sets listen_addr above such a header listens elsewhere under PgBouncer.
 * pgwharf keeps the values and names them in a warning at the header. */
/* The console answers as "pgwharf" and "pgbouncer" where no entry has the
 * name: entries of both names leave it none, which a file must say. */
static void test_databases_of_both_console_names_warn(void **state)
{
    (void)state;
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok("[pgwharf]\n"
                                     "auth_type = trust\n"
                                     "[databases]\n"
                                     "pgbouncer = host=h\n"          /* 4 */
                                     "app = host=h\n"
                                     "pgwharf = host=h dbname=app\n", &d);     /* 6 */
    assert_int_equal(cfg->ndbs, 3);
    assert_warning(&d, "t.ini:6: database \"pgwharf\": with database \"pgbouncer\" (t.ini:4) "
                       "this leaves the admin console no name: it answers as \"pgwharf\" or "
                       "\"pgbouncer\" only where no entry has that name (rename one of them: "
                       "PgBouncer reserves \"pgbouncer\")");
    assert_int_equal(d.nwarnings, 1);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    /* one of the names, either, leaves the console the other; the '*'
     * fallback and names in another case take neither */
    static const char *const ok[] = {
        "[pgwharf]\nauth_type = trust\n[databases]\npgwharf = host=h\n",
        "[pgwharf]\nauth_type = trust\n[databases]\npgbouncer = host=h\n",
        "[pgwharf]\nauth_type = trust\n[databases]\n* = host=h\nPgBouncer = host=h\n"
        "pgwharf = host=h\n",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cfg = load_ok(ok[i], &d);
        assert_int_equal(d.nwarnings, 0);
        pgw_conf_free(cfg);
        pgw_conf_diag_free(&d);
    }
}

static void test_general_section_again_warns(void **state)
{
    (void)state;
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok("[pgbouncer]\n"
                                     "auth_type = trust\n"
                                     "listen_port = 7001\n"
                                     "[databases]\n"
                                     "app = host=h\n"
                                     "[pgbouncer]\n"          /* 6 */
                                     "max_client_conn = 300\n"
                                     "[PgWharf]\n", &d);     /* 8 */
    assert_int_equal(cfg->auth_type, PGW_AUTH_TRUST);
    assert_int_equal(cfg->listen_port, 7001);
    assert_int_equal(cfg->max_client_conn, 300);
    assert_warning(&d, "t.ini:6: [pgbouncer] again: PgBouncer sets the 2 general keys set above "
                       "(listen_port, auth_type) back to their defaults here; pgwharf keeps them");
    assert_warning(&d, "t.ini:8: [PgWharf] again: PgBouncer sets the 3 general keys set above "
                       "(listen_port, auth_type, max_client_conn) back to their defaults here; "
                       "pgwharf keeps them");
    assert_int_equal(d.nwarnings, 2);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    /* a header with nothing set above it, the first or not, says nothing */
    cfg = load_ok("[databases]\napp = host=h\n[pgwharf]\n[pgbouncer]\nauth_type = trust\n", &d);
    assert_int_equal(d.nwarnings, 0);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    /* one key; a long list is cut short, never past the message */
    cfg = load_ok("[pgwharf]\nauth_type = trust\n[pgwharf]\n", &d);
    assert_warning(&d, "t.ini:3: [pgwharf] again: PgBouncer sets the 1 general key set above "
                       "(auth_type) back to its default here; pgwharf keeps it");
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    static const char *const durs[] = {
        "server_lifetime", "server_idle_timeout", "autodb_idle_timeout", "pool_idle_timeout",
        "server_connect_timeout", "server_login_retry", "server_check_delay", "query_timeout",
        "query_wait_timeout", "query_wait_notify", "cancel_wait_timeout", "client_login_timeout",
        "client_idle_timeout", "idle_transaction_timeout", "transaction_timeout", "stats_period",
        "breaker_cooldown", "breaker_max_cooldown", "dns_max_ttl", "dns_nxdomain_ttl",
        "shutdown_timeout", "reserve_pool_timeout",
    };
    char text[4096];
    size_t used = (size_t)snprintf(text, sizeof(text), BASE);
    for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++)
        used += (size_t)snprintf(text + used, sizeof(text) - used, "%s = 1\n", durs[i]);
    snprintf(text + used, sizeof(text) - used, "[pgbouncer]\n");
    cfg = load_ok(text, &d);
    assert_int_equal(d.nwarnings, 1);
    const char *w = d.warnings[0];
    const char *head = "t.ini:25: [pgbouncer] again: PgBouncer sets the 23 general keys set above (";
    const char *tail = ", ...) back to their defaults here; pgwharf keeps them";
    assert_int_equal(strncmp(w, head, strlen(head)), 0);
    assert_true(strlen(w) > strlen(tail));
    assert_string_equal(w + strlen(w) - strlen(tail), tail);
    assert_non_null(strstr(w, "auth_type, "));
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

static void test_syntax_errors_all_reported(void **state)
{
    struct pgw_conf_diag d = { 0 };
    load_fail("listen_port = 1\n"              /* 1: before any section */
              "[pgwharf\n"                     /* 2 */
              "[pgwharf]\n"                    /* 3 */
              "auth_type = trust\n"            /* 4 */
              "listen_port 6432\n"             /* 5: no '=' */
              "= 5\n"                          /* 6 */
              "%includ x.ini\n"                /* 7 */
              "%include\n"                     /* 8 */
              "[bogus]\n"                      /* 9 */
              "anything = goes here\n"         /* 10: skipped, section unknown */
              "[databases]\n"                  /* 11 */
              "\"unterminated = x\n"           /* 12 */
              "[]\n"                           /* 13 */
              "[users] junk\n",                /* 14 */
              &d, 10);
    assert_error(&d, "t.ini:1: key \"listen_port\" outside of any section");
    assert_error(&d, "t.ini:2: unterminated section header (expected \"]\")");
    assert_error(&d, "t.ini:5: syntax error: expected \"key = value\", got \"listen_port 6432\"");
    assert_error(&d, "t.ini:6: syntax error: no key before \"=\"");
    assert_error(&d, "t.ini:7: unknown directive \"%includ\"");
    assert_error(&d, "t.ini:8: %include needs a file name");
    assert_error(&d, "t.ini:9: unknown section [bogus] (expected pgwharf, pgbouncer, "
                     "databases, users or peers)");
    assert_error(&d, "t.ini:12: unterminated quoted key");
    assert_error(&d, "t.ini:13: empty section name");
    assert_error(&d, "t.ini:14: unexpected text after section header: \"junk\"");
    pgw_conf_diag_free(&d);
}

static void test_value_errors_all_reported(void **state)
{
    struct pgw_conf_diag d = { 0 };
    load_fail(BASE "listen_port = x\n"
                   "default_pool_size = -3\n"
                   "nope = 1\n"
                   "[databases]\n"
                   "a = hots=h\n"
                   "b = pool_size=zero\n"
                   "[users]\n"
                   "u = pool_mode=bad\n", &d, 6);
    assert_error(&d, "t.ini:3: listen_port: expected an integer from 0 to 65535, got \"x\"");
    assert_error(&d, "t.ini:4: default_pool_size: expected a non-negative integer, got \"-3\"");
    assert_error(&d, "t.ini:5: unknown key \"nope\"");
    assert_error(&d, "t.ini:7: database \"a\": unknown key \"hots\"");
    assert_error(&d, "t.ini:8: database \"b\": pool_size: expected a non-negative integer, "
                     "got \"zero\"");
    assert_error(&d, "t.ini:10: user \"u\": pool_mode: expected one of session, transaction, "
                     "statement; got \"bad\"");
    pgw_conf_diag_free(&d);
}

/* Many [databases]: each found by its name (an index now; a 40 000-entry
 * file took seconds, each entry looked up among all before it), one
 * defined again in its place, an unknown name the "*" entry. */
static void test_many_databases(void **state)
{
    (void)state;
    enum { N = 3000 };
    size_t cap = 64 * N + 256, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    len += (size_t)snprintf(text + len, cap - len, BASE "[databases]\n");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(text + len, cap - len, "db%d = dbname=x%d\n", i, i);
    len += (size_t)snprintf(text + len, cap - len, "db77 = dbname=again\n* = dbname=any\n");
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(text, &d);
    free(text);
    assert_int_equal(cfg->ndbs, N + 1);
    char name[32], want[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "db%d", i);
        snprintf(want, sizeof(want), "x%d", i);
        const struct pgw_conf_db *db = pgw_conf_find_db(cfg, name);
        assert_non_null(db);
        assert_string_equal(db->name, name);
        assert_string_equal(db->dbname, i == 77 ? "again" : want);
    }
    assert_ptr_equal(pgw_conf_find_db(cfg, "db77"), &cfg->dbs[77]);   /* in its place */
    assert_string_equal(pgw_conf_find_db(cfg, "nosuch")->name, "*");
    assert_string_equal(pgw_conf_find_db(cfg, "db")->name, "*");
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

static void test_unknown_vs_unsupported(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "sbuf_loopcnt = 5\nPKT_BUF = 0\njob_name = x\n"
                                          "peer_id = 1\n", &d);
    assert_int_equal(d.nwarnings, 3);       /* peer_id is implemented */
    assert_warning(&d, "t.ini:3: sbuf_loopcnt: ignored: not supported yet");
    assert_warning(&d, "t.ini:4: PKT_BUF: ignored: not supported yet");
    assert_warning(&d, "t.ini:5: job_name: ignored: not supported yet");
    assert_int_equal(cfg->peer_id, 1);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    load_fail(BASE "sbuf_loopcnt = 1\nfoo = 1\n", &d, 1);
    assert_error(&d, "t.ini:4: unknown key \"foo\"");
    assert_int_equal(d.nwarnings, 1);   /* warnings are listed on failure too */
    pgw_conf_diag_free(&d);

    /* The file's bytes that are not UTF-8 (and controls) come as \xNN:
     * they went to stderr as they were (hunt); UTF-8 stays. */
    load_fail(BASE "\xff\xfe = 1\ncaf\xc3\xa9\x01 = 1\nk\xc2\x9b = 1\n", &d, 3);
    assert_error(&d, "t.ini:3: unknown key \"\\xFF\\xFE\"");
    assert_error(&d, "t.ini:4: unknown key \"caf\xc3\xa9\\x01\"");
    assert_error(&d, "t.ini:5: unknown key \"k\\xC2\\x9B\"");
    pgw_conf_diag_free(&d);

    /* diag may be NULL */
    struct pgw_config *out = NULL;
    assert_int_equal(pgw_conf_load_string("t.ini", BASE "foo = 1\n", &out, NULL), PGW_ECONFIG);
    assert_null(out);
    assert_int_equal(pgw_conf_load_string("t.ini", BASE, &out, NULL), 0);
    pgw_conf_free(out);
}

/* PgBouncer 1.24/1.25 keys pgwharf once refused or ignored: they load
 * without a warning and keep their values. */
static void test_pgbouncer_new_keys(void **state)
{
    struct pgw_config *def = pgw_conf_defaults();
    assert_string_equal(def->login_notify_message, "");
    assert_true(def->pool_idle_timeout == 0);
    assert_true(def->dns_nxdomain_ttl == 15);
    pgw_conf_free(def);

    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "login_notify_message = Welcome: this is pgwharf, "
                                          "not PostgreSQL\n", &d);
    assert_int_equal(d.nwarnings, 0);
    assert_string_equal(cfg->login_notify_message, "Welcome: this is pgwharf, not PostgreSQL");
    char buf[128];
    assert_true(pgw_conf_get(cfg, "login_notify_message", buf, sizeof(buf)));
    assert_string_equal(buf, "Welcome: this is pgwharf, not PostgreSQL");
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    cfg = load_ok(BASE "pool_idle_timeout = 90s\n", &d);
    assert_int_equal(d.nwarnings, 0);
    assert_true(cfg->pool_idle_timeout == 90);
    assert_true(pgw_conf_get(cfg, "pool_idle_timeout", buf, sizeof(buf)));
    assert_string_equal(buf, "90");
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    cfg = load_ok(BASE "dns_nxdomain_ttl = 0\n", &d);
    assert_int_equal(d.nwarnings, 0);      /* was "ignored: not supported yet" */
    assert_true(cfg->dns_nxdomain_ttl == 0);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    expect_key_error("pool_idle_timeout = -1",
                     "t.ini:3: pool_idle_timeout: expected a non-negative duration, got \"-1\"");
}

/* ---- %include ---- */

static void test_include(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = NULL;
    int rc = pgw_conf_load(DATA "include-main.ini", &cfg, &d);
    if (rc)
        dump(&d);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg->listen_port, 7001);
    assert_int_equal(cfg->max_client_conn, 500);
    assert_int_equal(cfg->default_pool_size, 42);
    assert_int_equal(cfg->ndbs, 2);
    const struct pgw_conf_db *app1 = pgw_conf_find_db(cfg, "app1");
    assert_non_null(app1);
    assert_string_equal(app1->file, DATA "inc/part.ini");
    assert_int_equal(app1->line, 5);
    const struct pgw_conf_db *app2 = pgw_conf_find_db(cfg, "app2");
    assert_non_null(app2);
    assert_string_equal(app2->file, DATA "include-main.ini");
    assert_int_equal(app2->line, 7);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

static void test_include_errors(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = NULL;
    assert_int_equal(pgw_conf_load(DATA "loop-a.ini", &cfg, &d), PGW_ECONFIG);
    assert_null(cfg);
    assert_int_equal(d.nerrors, 1);
    assert_error(&d, DATA "loop-b.ini:2: %include loop: \"" DATA "loop-a.ini\" is already "
                          "being read");
    pgw_conf_diag_free(&d);

    assert_int_equal(pgw_conf_load(DATA "include-missing.ini", &cfg, &d), PGW_ECONFIG);
    assert_error(&d, DATA "include-missing.ini:3: %include \"" DATA "does-not-exist.ini\": "
                          "cannot open: No such file or directory");
    pgw_conf_diag_free(&d);

    assert_int_equal(pgw_conf_load(DATA "no-such.ini", &cfg, &d), PGW_ECONFIG);
    assert_int_equal(d.nerrors, 1);
    assert_error(&d, DATA "no-such.ini: cannot open: No such file or directory");
    pgw_conf_diag_free(&d);
}

/* A NUL byte (a binary file, a bad copy) is an error at its line, in the
 * main file, an included one and the auth file: it was reported at the
 * file alone ("t.ini: contains a NUL byte"), with no line to look at. */
static void test_nul_byte_has_a_line(void **state)
{
    char dir[] = "/tmp/pgw_conf_XXXXXX", main[64], inc[64], auth[64], want[256];
    assert_non_null(mkdtemp(dir));
    snprintf(main, sizeof(main), "%s/main.ini", dir);
    snprintf(inc, sizeof(inc), "%s/inc.ini", dir);
    snprintf(auth, sizeof(auth), "%s/users.txt", dir);
    static const char text[] = BASE "pool_mode = session\n; x\0y\n";   /* line 4 */
    FILE *f = fopen(main, "w");
    assert_non_null(f);
    fwrite(text, 1, sizeof(text) - 1, f);
    fclose(f);
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = NULL;
    assert_int_equal(pgw_conf_load(main, &cfg, &d), PGW_ECONFIG);
    snprintf(want, sizeof(want), "%s:4: contains a NUL byte", main);
    assert_error(&d, want);
    pgw_conf_diag_free(&d);

    f = fopen(inc, "w");
    assert_non_null(f);
    fwrite(text, 1, sizeof(text) - 1, f);
    fclose(f);
    f = fopen(main, "w");
    assert_non_null(f);
    fprintf(f, BASE "%%include inc.ini\n");
    fclose(f);
    assert_int_equal(pgw_conf_load(main, &cfg, &d), PGW_ECONFIG);
    snprintf(want, sizeof(want), "%s:3: %%include \"%s\": %s:4: contains a NUL byte", main,
             inc, inc);
    assert_error(&d, want);
    pgw_conf_diag_free(&d);

    static const char users[] = "\"a\" \"x\"\n\"b\" \"y\0\"\n";       /* line 2 */
    f = fopen(auth, "w");
    assert_non_null(f);
    fwrite(users, 1, sizeof(users) - 1, f);
    fclose(f);
    struct pgw_auth_file *af = NULL;
    assert_int_equal(pgw_authfile_load(auth, &af, &d), PGW_ECONFIG);
    snprintf(want, sizeof(want), "%s:2: contains a NUL byte", auth);
    assert_error(&d, want);
    pgw_conf_diag_free(&d);
    unlink(main);
    unlink(inc);
    unlink(auth);
    rmdir(dir);
}

/* A chain deep0 -> deep1 -> ... deeper than the limit, in a temp dir. */
static void test_include_depth_limit(void **state)
{
    char dir[] = "/tmp/pgw_conf_XXXXXX", path[PATH_MAX], want[PATH_MAX + 128];
    assert_non_null(mkdtemp(dir));
    for (int i = 0; i <= 12; i++) {
        snprintf(path, sizeof(path), "%s/deep%d.ini", dir, i);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        if (i == 0)
            fprintf(f, BASE);
        fprintf(f, "%%include deep%d.ini\n", i + 1);
        fclose(f);
    }
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = NULL;
    snprintf(path, sizeof(path), "%s/deep0.ini", dir);
    assert_int_equal(pgw_conf_load(path, &cfg, &d), PGW_ECONFIG);
    snprintf(want, sizeof(want), "%s/deep10.ini:1: %%include nested too deeply (more than 10 "
                                 "levels)", dir);
    assert_int_equal(d.nerrors, 1);
    assert_error(&d, want);
    pgw_conf_diag_free(&d);
    for (int i = 0; i <= 12; i++) {
        snprintf(path, sizeof(path), "%s/deep%d.ini", dir, i);
        unlink(path);
    }
    rmdir(dir);
}

/* ---- [databases] ---- */

/* A [databases] entry with a setting of each kind (connection parameters,
 * quoted, a keyword's case; pool settings; auth_* and connect_query), as
 * assert_app_entry reads it. */
#define APP_ENTRY                                                                 \
    "app = host=db1 port=5433 user=bob password='se cr''et' "                     \
    "application_name='it''s' options='-c search_path=x' pool_size=7 "            \
    "min_pool_size=2 reserve_pool=3 max_db_connections=9 pool_mode=transaction "  \
    "auth_user=lookup auth_dbname=adb auth_query='SELECT 1' "                     \
    "connect_query='SET x = 1' SSLMODE = require\n"

/* Every field of APP_ENTRY's entry, at t.ini's line `line` (as loaded, and
 * as copied by pgw_conf_dup): the convenience pointers point into the
 * entry's own values. */
static void assert_app_entry(const struct pgw_conf_db *db, int line)
{
    assert_string_equal(db->name, "app");
    assert_string_equal(db->host, "db1");
    assert_string_equal(db->port, "5433");
    assert_string_equal(db->user, "bob");
    assert_string_equal(db->password, "se cr'et");
    assert_string_equal(db->dbname, "app");         /* defaults to the entry name */
    assert_ptr_equal(db->host, conn(db, "host"));
    assert_ptr_equal(db->port, conn(db, "port"));
    assert_ptr_equal(db->user, conn(db, "user"));
    assert_ptr_equal(db->password, conn(db, "password"));
    assert_ptr_equal(db->dbname, conn(db, "dbname"));
    assert_string_equal(conn(db, "application_name"), "it's");
    assert_string_equal(conn(db, "options"), "-c search_path=x");
    assert_string_equal(conn(db, "sslmode"), "require");  /* keyword case folded */
    assert_null(conn(db, "pool_size"));
    assert_null(conn(db, "auth_user"));
    assert_int_equal(db->nconn, 8);
    assert_null(db->conn_keys[db->nconn]);
    assert_null(db->conn_vals[db->nconn]);
    assert_int_equal(db->pool_size, 7);
    assert_int_equal(db->min_pool_size, 2);
    assert_int_equal(db->reserve_pool_size, 3);
    assert_int_equal(db->max_db_connections, 9);
    assert_int_equal(db->pool_mode, PGW_POOL_TRANSACTION);
    assert_string_equal(db->auth_user, "lookup");
    assert_string_equal(db->auth_dbname, "adb");
    assert_string_equal(db->auth_query, "SELECT 1");
    assert_string_equal(db->connect_query, "SET x = 1");
    assert_string_equal(db->file, "t.ini");
    assert_int_equal(db->line, line);
}

static void test_connstr(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "[databases]\n" APP_ENTRY
                                          "plain =\n"
                                          "\"odd name\" = dbname=real reserve_pool_size=4\n",
                                     &d);
    assert_int_equal(cfg->ndbs, 3);
    assert_app_entry(&cfg->dbs[0], 4);

    const struct pgw_conf_db *db = &cfg->dbs[1];
    assert_int_equal(db->nconn, 1);
    assert_string_equal(db->dbname, "plain");
    assert_null(db->host);
    assert_int_equal(db->pool_size, -1);
    assert_int_equal(db->pool_mode, -1);
    assert_null(db->auth_user);

    db = pgw_conf_find_db(cfg, "odd name");
    assert_non_null(db);
    assert_string_equal(db->dbname, "real");
    assert_int_equal(db->reserve_pool_size, 4);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

static void test_connstr_datestyle_timezone(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(
        BASE "[databases]\n"
             "a = datestyle=ISO timezone=UTC\n"
             "b = options='-c work_mem=64MB' DateStyle='ISO, MDY' client_encoding=UTF8\n", &d);
    assert_string_equal(conn(&cfg->dbs[0], "options"), "-c DateStyle=ISO -c TimeZone=UTC");
    assert_null(conn(&cfg->dbs[0], "datestyle"));
    assert_string_equal(conn(&cfg->dbs[1], "options"),
                        "-c work_mem=64MB -c DateStyle=ISO,\\ MDY");
    assert_string_equal(conn(&cfg->dbs[1], "client_encoding"), "UTF8");
    assert_int_equal(d.nwarnings, 0);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

/* The integer keywords libpq parses at every connect: a bad one failed
 * each login ("invalid integer value ... for connection option"), found
 * only when a client came.  Blanks around the number and an empty value
 * (not set) are libpq's. */
static void test_connstr_integers(void **state)
{
    struct pgw_conf_diag d = { 0 };
    load_fail(BASE "[databases]\n"
                   "a = keepalives=abc\n"                              /* 4 */
                   "b = keepalives_idle=1.5 keepalives_interval=10s\n" /* 5: two */
                   "c = keepalives_count=99999999999\n"                /* 6 */
                   "d = tcp_user_timeout=-\n"                          /* 7 */
                   "ok = keepalives=1 keepalives_idle=' 30 ' keepalives_count=-1 "
                   "tcp_user_timeout='' connect_timeout=+10\n",
              &d, 5);
    assert_error(&d, "t.ini:4: database \"a\": keepalives: expected an integer, got \"abc\"");
    assert_error(&d, "t.ini:5: database \"b\": keepalives_idle: expected an integer, "
                     "got \"1.5\"");
    assert_error(&d, "t.ini:5: database \"b\": keepalives_interval: expected an integer, "
                     "got \"10s\"");
    assert_error(&d, "t.ini:6: database \"c\": keepalives_count: expected an integer, "
                     "got \"99999999999\"");
    assert_error(&d, "t.ini:7: database \"d\": tcp_user_timeout: expected an integer, "
                     "got \"-\"");
    pgw_conf_diag_free(&d);
}

/* hostaddr is a numeric address (libpq's "could not parse network
 * address" at every connect, which opened the entry's breaker as a server
 * down); an empty item of a list is libpq's "use the host name". */
static void test_hostaddr_is_numeric(void **state)
{
    struct pgw_conf_diag d = { 0 };
    load_fail(BASE "[databases]\n"
                   "a = host=db hostaddr=abc\n"                      /* 4 */
                   "b = host=x,y hostaddr=10.0.0.1,1.2.3.4.5\n"      /* 5 */
                   "c = hostaddr=localhost\n"                        /* 6 */
                   "ok = host=x,y,z hostaddr=10.0.0.1,,::1\n",
              &d, 3);
    assert_error(&d, "t.ini:4: database \"a\": hostaddr: expected a numeric IP address, "
                     "got \"abc\"");
    assert_error(&d, "t.ini:5: database \"b\": hostaddr: expected a numeric IP address, "
                     "got \"1.2.3.4.5\"");
    assert_error(&d, "t.ini:6: database \"c\": hostaddr: expected a numeric IP address, "
                     "got \"localhost\"");
    pgw_conf_diag_free(&d);
}

/* A host list item pgwharf cannot hold (pool/hosts.h keeps each host in
 * PGW_CONF_HOST_MAX bytes, each hostaddr in PGW_CONF_HOSTADDR_MAX) is an
 * error here: it was taken, and the first login to the entry crashed
 * pgwharf (a reload to it kept the old hosts without a word). */
static void test_host_items_that_do_not_fit(void **state)
{
    struct pgw_conf_diag d = { 0 };
    char text[4096], host[PGW_CONF_HOST_MAX + 2], addr[PGW_CONF_HOSTADDR_MAX + 2];
    memset(host, 'h', sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    memset(addr, '1', sizeof(addr) - 1);
    addr[sizeof(addr) - 1] = '\0';
    snprintf(text, sizeof(text), BASE "[databases]\n"
             "a = host=%s\n"                               /* 4 */
             "b = host=x,%s port=1,2\n"                    /* 5 */
             "c = host=x hostaddr=%s\n"                    /* 6 */
             "ok = host=%s\n",                             /* 7: just fits */
             host, host, addr, host + 1);
    load_fail(text, &d, 3);
    assert_error(&d, "t.ini:4: database \"a\": host: \"hhhhhhhhhhhhhhhhhhhh...\" is 256 bytes "
                     "long (at most 255)");
    assert_error(&d, "t.ini:5: database \"b\": host: \"hhhhhhhhhhhhhhhhhhhh...\" is 256 bytes "
                     "long (at most 255)");
    assert_error(&d, "t.ini:6: database \"c\": hostaddr: \"11111111111111111111...\" is 64 "
                     "bytes long (at most 63)");
    pgw_conf_diag_free(&d);

    /* A socket directory whose socket's path libpq cannot connect to: each
     * connect failed ("Unix-domain socket path ... is too long"), as if the
     * server were down, and opened the breaker.  98 bytes of directory and
     * "/.s.PGSQL.5432" (libpq's default port) are 112. */
    char dir[99];
    memset(dir, 'd', sizeof(dir) - 1);
    dir[0] = '/';
    dir[sizeof(dir) - 1] = '\0';
    snprintf(text, sizeof(text), BASE "[databases]\n"
             "a = host=%s\n"                               /* 4 */
             "b = host=x,@%s port=1,2\n"                   /* 5 */
             "c = host=x,%s port=1\n"                      /* 6 */
             "ok = host=/%s port=5432\n",                  /* 7: 107 bytes */
             dir, dir + 1, dir, dir + 6);
    load_fail(text, &d, 3);
    assert_error(&d, "t.ini:4: database \"a\": host: the Unix socket path \"/ddddddddddddddddddd"
                     "...\" would be 112 bytes long (at most 107)");
    assert_error(&d, "t.ini:5: database \"b\": host: the Unix socket path \"@ddddddddddddddddddd"
                     "...\" would be 109 bytes long (at most 107)");
    assert_error(&d, "t.ini:6: database \"c\": host: the Unix socket path \"/ddddddddddddddddddd"
                     "...\" would be 109 bytes long (at most 107)");
    pgw_conf_diag_free(&d);
}

static char *print_to_string(const struct pgw_config *cfg);

/* As PgBouncer's loader.c reads them: a backslash is a character like any
 * other, inside quotes or out; '' is the one escape.  They were read as
 * libpq's escapes: PgBouncer's password=p\ss was "pss" here. */
static void test_connstr_backslashes_as_pgbouncer(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(
        BASE "[databases]\n"
             "a = dbname=a\\\\b password=p\\ss user='x\\y' application_name=c\\'d "
             "options='-c x=\\' connect_query='SELECT ''\\'''\n", &d);
    const struct pgw_conf_db *db = pgw_conf_find_db(cfg, "a");
    assert_string_equal(db->dbname, "a\\\\b");
    assert_string_equal(db->password, "p\\ss");
    assert_string_equal(db->user, "x\\y");
    assert_string_equal(conn(db, "application_name"), "c\\'d");
    assert_string_equal(conn(db, "options"), "-c x=\\");
    assert_string_equal(db->connect_query, "SELECT '\\'");
    /* printed the way it reads back */
    char *text = print_to_string(cfg);
    assert_non_null(strstr(text, "a = dbname=a\\\\b password=**** user=x\\y "
                                 "application_name='c\\''d' options='-c x=\\' "));
    free(text);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    /* libpq's \' inside quotes: PgBouncer's "syntax error in connection
     * string" */
    load_fail(BASE "[databases]\n"
                   "b = password='a\\'b'\n", &d, 1);
    assert_error(&d, "t.ini:4: database \"b\": password: expected a space after the quoted "
                     "value (a quote inside quotes is '', a backslash escapes nothing)");
    pgw_conf_diag_free(&d);
}

/* A key said twice in an entry: the later one counts, as PgBouncer reads
 * it (a file PgBouncer takes stopped pgwharf's start). */
/* pgwharf makes a plaintext secret's SCRAM verifier on its loop: a count
 * of 10 million held every client for seconds at each user's first login
 * (and 2^31 - 1 passed --check). */
static void test_scram_iterations_bounded(void **state)
{
    struct pgw_conf_diag d = { 0 };
    load_fail(BASE "scram_iterations = 100001\n", &d, 1);
    assert_error(&d, "t.ini:3: scram_iterations: expected an integer from 1 to 100000, got "
                     "\"100001\"");
    pgw_conf_diag_free(&d);
    struct pgw_config *cfg = load_ok(BASE "scram_iterations = 100000\n", &d);
    assert_int_equal(cfg->scram_iterations, 100000);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

/* The listener's socket path must fit (--check said fine, the start
 * failed). */
static void test_unix_socket_dir_too_long(void **state)
{
    struct pgw_conf_diag d = { 0 };
    char text[512], dir[200];
    memset(dir, 'd', 97);
    dir[0] = '/';
    dir[97] = '\0';                                 /* + "/.s.PGSQL.6432": 111 */
    snprintf(text, sizeof(text), BASE "unix_socket_dir = %s\n", dir);
    load_fail(text, &d, 1);
    assert_error(&d, "t.ini:3: unix_socket_dir \"/ddddddddddddddddddd...\": the socket path "
                     "would be 111 bytes long (at most 107)");
    pgw_conf_diag_free(&d);
    dir[93] = '\0';                                 /* 107: fits */
    snprintf(text, sizeof(text), BASE "unix_socket_dir = %s\n", dir);
    pgw_conf_free(load_ok(text, &d));
    pgw_conf_diag_free(&d);
}

static void test_connstr_key_twice(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "[databases]\n"
                                          "a = host=h1 dbname=x port=1 dbname=y host=h2\n", &d);
    const struct pgw_conf_db *a = pgw_conf_find_db(cfg, "a");
    assert_string_equal(conn(a, "host"), "h2");
    assert_string_equal(conn(a, "dbname"), "y");
    assert_string_equal(conn(a, "port"), "1");
    assert_int_equal(a->nconn, 3);
    assert_null(a->conn_keys[3]);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

static void test_connstr_errors(void **state)
{
    struct pgw_conf_diag d = { 0 };
    load_fail(BASE "[databases]\n"
                   "a = host=h hots=x\n"                   /* 4 */
                   "b = password='open\n"                  /* 5 */
                   "c = host='h'x\n"                       /* 6 */
                   "d = port=5432,99999\n"                 /* 7 */
                   "e = host=a port=0\n"                   /* 8 */
                   "f = pool_mode=txn min_pool_size=-2\n"  /* 9: two errors */
                   "g = host\n"                            /* 10 */
                   "ok = host=h\n"                         /* 11 */
                   "ok = host=again\n"                     /* 12 */
                   "h = =x\n"                              /* 13 */
                   "i = load_balance_hosts=random\n"        /* 14 */
                   "j = host=a,b port=1,2,3\n"              /* 15 */
                   "k = host=a,b,c hostaddr=1.1.1.1,2.2.2.2\n"  /* 16 */
                   "l = host=a,b hostaddr=1.1.1.1\n"            /* 17: libpq wants 2 */
                   "m = target_session_attrs=master\n"           /* 18 */
                   "n = sslmode=requre\n"                        /* 19 */
                   "o = gssencmode=Prefer channel_binding=maybe\n"   /* 20: two errors */
                   "p = ssl_min_protocol_version=tlsv1.2 ssl_max_protocol_version=TLSv2\n"
                   "q = sslmode=verify-full ssl_max_protocol_version='' gssencmode=disable\n"
                   "long_name_012345678901234567890123456789012345678901234567890123456789 = host=h\n",
              &d, 18);
    assert_error(&d, "t.ini:4: database \"a\": unknown key \"hots\"");
    assert_error(&d, "t.ini:5: database \"b\": password: unterminated quoted value");
    assert_error(&d, "t.ini:6: database \"c\": host: expected a space after the quoted value "
                     "(a quote inside quotes is '', a backslash escapes nothing)");
    assert_error(&d, "t.ini:7: database \"d\": port: expected a port number from 1 to 65535, "
                     "got \"5432,99999\"");
    assert_error(&d, "t.ini:8: database \"e\": port: expected a port number from 1 to 65535, "
                     "got \"0\"");
    assert_error(&d, "t.ini:9: database \"f\": pool_mode: expected one of session, transaction, "
                     "statement; got \"txn\"");
    assert_error(&d, "t.ini:9: database \"f\": min_pool_size: expected a non-negative integer, "
                     "got \"-2\"");
    assert_error(&d, "t.ini:10: database \"g\": expected \"=\" after \"host\"");
    assert_warning(&d, "t.ini:12: database \"ok\" defined again: replaces t.ini:11");
    assert_error(&d, "t.ini:13: database \"h\": expected key=value, got \"=x\"");
    assert_error(&d, "t.ini:14: database \"i\": load_balance_hosts: expected one of "
                     "round-robin, disable; got \"random\"");
    assert_error(&d, "t.ini:15: database \"j\": port: 3 ports for 2 hosts (expected one, or "
                     "one per host)");
    assert_error(&d, "t.ini:16: database \"k\": hostaddr: 2 values for 3 hosts (expected one "
                     "per host)");
    assert_error(&d, "t.ini:17: database \"l\": hostaddr: 1 value for 2 hosts (expected one "
                     "per host)");
    /* libpq would refuse it on every connect, which looked like the
     * server being down */
    assert_error(&d, "t.ini:18: database \"m\": target_session_attrs: expected one of any, "
                     "read-write, read-only, primary, standby, prefer-standby; got \"master\"");
    /* the same for the values libpq checks on every connect */
    assert_error(&d, "t.ini:19: database \"n\": sslmode: expected one of disable, allow, "
                     "prefer, require, verify-ca, verify-full; got \"requre\"");
    assert_error(&d, "t.ini:20: database \"o\": gssencmode: expected one of disable, prefer, "
                     "require; got \"Prefer\"");
    assert_error(&d, "t.ini:20: database \"o\": channel_binding: expected one of disable, "
                     "prefer, require; got \"maybe\"");
    assert_error(&d, "t.ini:21: database \"p\": ssl_max_protocol_version: expected one of "
                     "TLSv1, TLSv1.1, TLSv1.2, TLSv1.3; got \"TLSv2\"");
    /* a startup packet's name is cut at 63 bytes, as PostgreSQL cuts it */
    assert_warning(&d, "t.ini:23: database \"long_name_012345678901234567890123456789...\": a "
                       "name of more than 63 bytes no client can ask for (a startup packet's "
                       "is cut there, as PostgreSQL cuts it)");
    pgw_conf_diag_free(&d);
    /* an empty value at the end of the line (PgBouncer: a syntax error) */
    load_fail(BASE "[databases]\na = host=h dbname=\n", &d, 1);
    assert_error(&d, "t.ini:4: database \"a\": dbname: expected a value after \"=\" (an "
                     "empty one is '')");
    pgw_conf_diag_free(&d);

    /* load_balance_hosts: a pool key (libpq 15 does not know it), and
     * printed back */
    struct pgw_config *lb = load_ok(BASE "[databases]\n"
                                         "a = host=x,y port=1,2 load_balance_hosts=disable\n"
                                         "b = host=x,y load_balance_hosts=Round-Robin\nc =\n",
                                    &d);
    assert_int_equal(lb->dbs[0].load_balance_hosts, PGW_LB_DISABLE);
    assert_null(conn(&lb->dbs[0], "load_balance_hosts"));
    assert_int_equal(lb->dbs[1].load_balance_hosts, PGW_LB_ROUND_ROBIN);
    assert_int_equal(lb->dbs[2].load_balance_hosts, -1);
    pgw_conf_free(lb);
    pgw_conf_diag_free(&d);

    /* target_session_attrs: read by pgwharf, and passed to libpq under
     * the name libpq takes */
    struct pgw_config *ts = load_ok(BASE "[databases]\n"
                                         "a = host=x,y target_session_attrs=Prefer-Standby\n"
                                         "b = host=x target_session_attrs=read-write\nc =\n",
                                    &d);
    assert_int_equal(ts->dbs[0].target_session_attrs, PGW_TSA_PREFER_STANDBY);
    assert_string_equal(conn(&ts->dbs[0], "target_session_attrs"), "prefer-standby");
    assert_int_equal(ts->dbs[1].target_session_attrs, PGW_TSA_READ_WRITE);
    assert_string_equal(conn(&ts->dbs[1], "target_session_attrs"), "read-write");
    assert_int_equal(ts->dbs[2].target_session_attrs, -1);
    assert_null(conn(&ts->dbs[2], "target_session_attrs"));
    pgw_conf_free(ts);
    pgw_conf_diag_free(&d);

    /* auth_dbname and auth_query per entry, else the general ones */
    struct pgw_config *cfg = load_ok(BASE "auth_dbname = g\n[databases]\n"
                                          "x = auth_dbname=y auth_query='select $1, null'\nz =\n",
                                     &d);
    assert_int_equal(d.nwarnings, 0);
    const struct pgw_conf_db *x = pgw_conf_find_db(cfg, "x"), *z = pgw_conf_find_db(cfg, "z");
    assert_string_equal(pgw_conf_auth_dbname(cfg, x), "y");
    assert_string_equal(pgw_conf_auth_query(cfg, x), "select $1, null");
    assert_string_equal(pgw_conf_auth_dbname(cfg, z), "g");
    assert_string_equal(pgw_conf_auth_query(cfg, z), cfg->auth_query);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    /* client limits: the entry's own, else the general key (PgBouncer 1.24) */
    cfg = load_ok(BASE "max_db_client_connections = 7\nmax_user_client_connections = 9\n"
                       "[databases]\nx = max_db_client_connections=5 server_lifetime=90\ny =\n"
                       "[users]\nu = max_user_client_connections=2\n", &d);
    assert_int_equal(d.nwarnings, 0);
    assert_int_equal(pgw_conf_max_db_client_connections(cfg, pgw_conf_find_db(cfg, "x")), 5);
    assert_int_equal(pgw_conf_max_db_client_connections(cfg, pgw_conf_find_db(cfg, "y")), 7);
    assert_true(pgw_conf_server_lifetime(cfg, pgw_conf_find_db(cfg, "x")) == 90);
    assert_true(pgw_conf_server_lifetime(cfg, pgw_conf_find_db(cfg, "y")) == 3600);
    assert_int_equal(pgw_conf_max_user_client_connections(cfg, pgw_conf_find_user(cfg, "u")), 2);
    assert_int_equal(pgw_conf_max_user_client_connections(cfg, NULL), 9);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

/* query_wait_timeout in [databases] and [users] (PgBouncer 1.25): the
 * user's, else the entry's, else the general one; -1 = not set; printed
 * back as given. */
static void test_query_wait_timeout_per_entry(void **state)
{
    (void)state;
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "query_wait_timeout = 30\n"
                                          "[databases]\nx = query_wait_timeout=5\n"
                                          "y = query_wait_timeout=-1\nz =\n"
                                          "[users]\nu = query_wait_timeout=2s\n"
                                          "v = query_wait_timeout=-1\nw = query_wait_timeout=0\n",
                                     &d);
    assert_int_equal(d.nwarnings, 0);
    const struct pgw_conf_db *x = pgw_conf_find_db(cfg, "x"), *y = pgw_conf_find_db(cfg, "y");
    const struct pgw_conf_db *z = pgw_conf_find_db(cfg, "z");
    const struct pgw_conf_user *u = pgw_conf_find_user(cfg, "u"), *v = pgw_conf_find_user(cfg, "v");
    const struct pgw_conf_user *w = pgw_conf_find_user(cfg, "w");
    assert_non_null(x);
    assert_non_null(u);
    assert_true(pgw_conf_query_wait_timeout(cfg, x, NULL) == 5);
    assert_true(pgw_conf_query_wait_timeout(cfg, y, NULL) == 30);
    assert_true(pgw_conf_query_wait_timeout(cfg, z, NULL) == 30);
    assert_true(pgw_conf_query_wait_timeout(cfg, x, u) == 2);     /* the user's wins */
    assert_true(pgw_conf_query_wait_timeout(cfg, x, v) == 5);
    assert_true(pgw_conf_query_wait_timeout(cfg, z, v) == 30);
    assert_true(pgw_conf_query_wait_timeout(cfg, x, w) == 0);     /* 0: no limit, set */
    char *text = print_to_string(cfg);
    assert_non_null(strstr(text, "\nx = dbname=x query_wait_timeout=5\n"));
    assert_non_null(strstr(text, "\nu = query_wait_timeout=2\n"));
    assert_non_null(strstr(text, "\nv =\n"));
    free(text);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    load_fail(BASE "[databases]\nx = query_wait_timeout=-2\n[users]\nu = query_wait_timeout=soon\n",
              &d, 2);
    assert_error(&d, "t.ini:4: database \"x\": query_wait_timeout: expected a duration (seconds, "
                     "or a number with us, ms, s, min, h, d) or -1 (not set), got \"-2\"");
    assert_error(&d, "t.ini:6: user \"u\": query_wait_timeout: expected a duration (seconds, "
                     "or a number with us, ms, s, min, h, d) or -1 (not set), got \"soon\"");
    pgw_conf_diag_free(&d);
}

static void test_fallback_db(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "[databases]\n* = host=fallback port=6000\n"
                                          "app = host=main\n", &d);
    const struct pgw_conf_db *star = pgw_conf_find_db(cfg, "whatever");
    assert_non_null(star);
    assert_string_equal(star->name, "*");
    assert_string_equal(star->host, "fallback");
    assert_null(star->dbname);          /* the client's database name is used */
    assert_string_equal(pgw_conf_find_db(cfg, "app")->host, "main");
    assert_ptr_equal(pgw_conf_find_db(cfg, "*"), star);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    cfg = load_ok(BASE "[databases]\napp = host=main\n", &d);
    assert_null(pgw_conf_find_db(cfg, "other"));
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

/* ---- [users] and inheritance ---- */

/* The open-files budget: servers of one full pool per database, the
 * reserve, and the clients that fit under a given limit. */
static void test_fd_budget(void **state)
{
    struct pgw_conf_diag d = { 0 };
    /* Each pool as large as the largest pool_size that may apply (alice's
     * 12) plus the reserve: a: 12 + 1 = 13; b: 12 (max_db_connections 20
     * is more); c: 12, capped at max_db_connections 6. */
    struct pgw_config *cfg = load_ok(
        BASE "default_pool_size = 10\nmax_client_conn = 1000\n"
             "[databases]\n"
             "a = user=u pool_size=5 reserve_pool=1\n"
             "b = max_db_connections=20\n"
             "c = max_db_connections=6\n"
             "[users]\n"
             "alice = pool_size=12\n"
             "bob =\n", &d);
    int servers = 13 + 12 + 6;
    assert_int_equal(pgw_conf_server_fds(cfg), servers);
    /* the reserve: PGW_FD_FIXED plus an eighth, at most the maximum */
    assert_int_equal(pgw_conf_fd_reserve(400), PGW_FD_FIXED + 50);
    assert_int_equal(pgw_conf_fd_reserve(4096), PGW_FD_RESERVE_MAX);
    assert_int_equal(pgw_conf_fd_reserve(1LL << 40), PGW_FD_RESERVE_MAX);
    assert_int_equal(pgw_conf_client_cap(cfg, 1000 + servers + PGW_FD_RESERVE_MAX), 1000);
    assert_int_equal(pgw_conf_client_cap(cfg, 1LL << 40), 1000);
    assert_int_equal(pgw_conf_client_cap(cfg, 1024), 1024 - servers - PGW_FD_RESERVE_MAX);
    assert_int_equal(pgw_conf_client_cap(cfg, 400), 400 - servers - (PGW_FD_FIXED + 50));
    /* servers take at most half, clients get at least a quarter */
    assert_int_equal(pgw_conf_client_cap(cfg, 60), 60 / 4);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    /* No [databases]: nothing kept for servers. */
    cfg = load_ok(BASE "max_client_conn = 5\n", &d);
    assert_int_equal(pgw_conf_server_fds(cfg), 0);
    assert_int_equal(pgw_conf_client_cap(cfg, 1024), 5);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

static void test_users_and_inheritance(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(
        BASE "pool_mode = statement\ndefault_pool_size = 10\nmin_pool_size = 1\n"
             "query_timeout = 30\nmax_user_connections = 50\nauth_user = global_lookup\n"
             "[databases]\n"
             "a = pool_mode=transaction pool_size=5 min_pool_size=2 reserve_pool=1 "
             "max_db_connections=8 auth_user=a_lookup\n"
             "b = host=h\n"
             "[users]\n"
             "alice = pool_mode=session pool_size=3 max_user_connections=4 query_timeout=2s "
             "idle_transaction_timeout=1min client_idle_timeout=500ms\n"
             "bob =\n"
             "carol = reserve_pool_size=2\n", &d);
    assert_int_equal(cfg->nusers, 3);
    assert_int_equal(d.nwarnings, 0);   /* reserve_pool_size per user: PgBouncer 1.24 */
    const struct pgw_conf_db *a = pgw_conf_find_db(cfg, "a"), *b = pgw_conf_find_db(cfg, "b");
    const struct pgw_conf_user *alice = pgw_conf_find_user(cfg, "alice");
    const struct pgw_conf_user *bob = pgw_conf_find_user(cfg, "bob");
    assert_non_null(alice);
    assert_non_null(bob);
    assert_null(pgw_conf_find_user(cfg, "nobody"));
    assert_string_equal(alice->file, "t.ini");
    assert_int_equal(alice->line, 13);
    assert_int_equal(bob->pool_mode, -1);
    assert_true(bob->query_timeout < 0);

    /* user > database > general */
    assert_int_equal(pgw_conf_pool_mode(cfg, a, alice), PGW_POOL_SESSION);
    assert_int_equal(pgw_conf_pool_mode(cfg, a, bob), PGW_POOL_TRANSACTION);
    assert_int_equal(pgw_conf_pool_mode(cfg, b, bob), PGW_POOL_STATEMENT);
    assert_int_equal(pgw_conf_pool_mode(cfg, NULL, NULL), PGW_POOL_STATEMENT);
    assert_int_equal(pgw_conf_pool_size(cfg, a, alice), 3);
    assert_int_equal(pgw_conf_pool_size(cfg, a, bob), 5);
    assert_int_equal(pgw_conf_pool_size(cfg, b, NULL), 10);
    assert_int_equal(pgw_conf_min_pool_size(cfg, a), 2);
    assert_int_equal(pgw_conf_min_pool_size(cfg, b), 1);
    assert_int_equal(pgw_conf_reserve_pool_size(cfg, a, NULL), 1);
    assert_int_equal(pgw_conf_reserve_pool_size(cfg, b, NULL), 0);
    const struct pgw_conf_user *carol = pgw_conf_find_user(cfg, "carol");
    assert_int_equal(pgw_conf_reserve_pool_size(cfg, a, carol), 2);   /* the user's wins */
    assert_int_equal(pgw_conf_reserve_pool_size(cfg, a, bob), 1);
    assert_int_equal(pgw_conf_max_db_connections(cfg, a), 8);
    assert_int_equal(pgw_conf_max_db_connections(cfg, b), 0);
    assert_string_equal(pgw_conf_auth_user(cfg, a), "a_lookup");
    assert_string_equal(pgw_conf_auth_user(cfg, b), "global_lookup");
    assert_int_equal(pgw_conf_max_user_connections(cfg, alice), 4);
    assert_int_equal(pgw_conf_max_user_connections(cfg, bob), 50);
    assert_true(pgw_conf_query_timeout(cfg, alice) == 2);
    assert_true(pgw_conf_query_timeout(cfg, bob) == 30);
    assert_true(pgw_conf_idle_transaction_timeout(cfg, alice) == 60);
    assert_true(pgw_conf_idle_transaction_timeout(cfg, NULL) == 0);
    assert_true(pgw_conf_client_idle_timeout(cfg, alice) == 0.5);
    assert_true(pgw_conf_client_idle_timeout(cfg, bob) == 0);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    load_fail(BASE "[users]\nu = pool_size=0\nu = \nv = colour=blue\nw = pool_mode\n", &d, 3);
    assert_error(&d, "t.ini:4: user \"u\": pool_size: expected a positive integer, got \"0\"");
    assert_error(&d, "t.ini:6: user \"v\": unknown key \"colour\"");
    assert_error(&d, "t.ini:7: user \"w\": expected \"=\" after \"pool_mode\"");
    pgw_conf_diag_free(&d);
    /* a name defined again: the later line wins, in the earlier one's place
     * (as in PgBouncer), with a warning */
    cfg = load_ok(BASE "[users]\nu = pool_size=1\nv = pool_size=3\nu = pool_mode=session\n", &d);
    assert_warning(&d, "t.ini:6: user \"u\" defined again: replaces t.ini:4");
    assert_int_equal(cfg->nusers, 2);
    assert_string_equal(cfg->users[0].name, "u");
    assert_int_equal(cfg->users[0].line, 6);
    assert_true(cfg->users[0].pool_size <= 0);           /* not the first line's 1 */
    assert_int_equal(cfg->users[0].pool_mode, PGW_POOL_SESSION);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    cfg = load_ok(BASE "[databases]\nx = host=a port=1111\ny = host=b\nx = host=c pool_size=7\n",
                  &d);
    assert_warning(&d, "t.ini:6: database \"x\" defined again: replaces t.ini:4");
    assert_int_equal(cfg->ndbs, 2);
    assert_string_equal(cfg->dbs[0].name, "x");
    assert_string_equal(cfg->dbs[0].host, "c");
    assert_null(cfg->dbs[0].port);
    assert_int_equal(cfg->dbs[0].pool_size, 7);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    /* a later line with an error still fails the file */
    load_fail(BASE "[users]\nu = pool_size=1\nu = pool_size=0\n", &d, 1);
    assert_error(&d, "t.ini:5: user \"u\": pool_size: expected a positive integer, got \"0\"");
    pgw_conf_diag_free(&d);
}

/* ---- [peers] ---- */

static const char *peer_path(const struct pgw_conf_peer *p)
{
    assert_int_equal(p->addr.ss_family, AF_UNIX);
    assert_int_equal(p->addrlen, sizeof(struct sockaddr_un));
    return ((const struct sockaddr_un *)&p->addr)->sun_path;
}

static void test_peers(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = pgw_conf_defaults();
    assert_int_equal(cfg->peer_id, 0);                  /* off */
    assert_int_equal(cfg->npeers, 0);
    pgw_conf_free(cfg);
    assert_true(pgw_conf_key_fixed("peer_id"));

    /* the whole group's list, this process's own id included */
    cfg = load_ok(BASE "peer_id = 2\nunix_socket_dir = /run/p2\nlisten_port = 7000\n"
                       "[peers]\n"
                       "1 = host=/run/p1 port=7000\n"
                       "2 = host=/run/p2 port=7000 pool_size=3\n"
                       "16383 = host=127.0.0.1\n"
                       "40 = host=::1 port=7001\n", &d);
    assert_int_equal(d.nwarnings, 0);
    assert_int_equal(cfg->peer_id, 2);
    assert_int_equal(cfg->npeers, 4);
    const struct pgw_conf_peer *p = pgw_conf_find_peer(cfg, 1);
    assert_non_null(p);
    assert_string_equal(p->host, "/run/p1");
    assert_int_equal(p->port, 7000);
    assert_int_equal(p->pool_size, -1);
    assert_string_equal(peer_path(p), "/run/p1/.s.PGSQL.7000");
    assert_string_equal(p->file, "t.ini");
    assert_int_equal(p->line, 7);
    assert_int_equal(pgw_conf_find_peer(cfg, 2)->pool_size, 3);   /* accepted, unused */
    p = pgw_conf_find_peer(cfg, 16383);
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)&p->addr;
    assert_int_equal(in4->sin_family, AF_INET);
    assert_int_equal(p->addrlen, sizeof(*in4));
    assert_int_equal(ntohs(in4->sin_port), 6432);       /* the default port */
    assert_int_equal(ntohl(in4->sin_addr.s_addr), INADDR_LOOPBACK);
    p = pgw_conf_find_peer(cfg, 40);
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&p->addr;
    assert_int_equal(in6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(in6->sin6_port), 7001);
    assert_true(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));
    assert_null(pgw_conf_find_peer(cfg, 3));
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    /* every error at once, each at its line; an entry with one is left out */
    load_fail(BASE "peer_id = 16384\n"
                   "[peers]\n"
                   "0 = host=/a\n"
                   "x1 = host=/a\n"
                   "16384 = host=/a\n"
                   "5 = host=peer5.example port=6432\n"
                   "6 = port=6432\n"
                   "7 = host=/a port=0\n"
                   "8 = host=/a colour=blue\n"
                   "9 = host=/a/very/long/directory/name/that/goes/on/and/on/past/the/one/hundred"
                   "/and/eight/bytes/of/sun_path\n"
                   "10 = host\n", &d, 10);
    assert_error(&d, "t.ini:3: peer_id: expected an integer from 0 to 16383, got \"16384\"");
    assert_error(&d, "t.ini:5: [peers]: expected a peer id from 1 to 16383, got \"0\"");
    assert_error(&d, "t.ini:6: [peers]: expected a peer id from 1 to 16383, got \"x1\"");
    assert_error(&d, "t.ini:7: [peers]: expected a peer id from 1 to 16383, got \"16384\"");
    assert_error(&d, "t.ini:8: peer 5: host: expected an IP address or a Unix socket directory "
                     "(host names are not resolved), got \"peer5.example\"");
    assert_error(&d, "t.ini:9: peer 6: host: missing (an IP address or a Unix socket "
                     "directory)");
    assert_error(&d, "t.ini:10: peer 7: port: expected an integer from 1 to 65535, got \"0\"");
    assert_error(&d, "t.ini:11: peer 8: unknown key \"colour\" (expected host, port or "
                     "pool_size)");
    assert_error(&d, "t.ini:12: peer 9: host: the socket path /a/very/long/directory/name/that/"
                     "goes/on/and/on/past/the/one/hundred/and/eight/bytes/of/sun_path/"
                     ".s.PGSQL.6432 is longer than 107 bytes");
    assert_error(&d, "t.ini:13: peer 10: expected \"=\" after \"host\"");
    pgw_conf_diag_free(&d);

    /* an id defined again: the later line wins, in its place */
    cfg = load_ok(BASE "peer_id = 1\n[peers]\n2 = host=/a\n3 = host=/b\n2 = host=/c\n", &d);
    assert_warning(&d, "t.ini:7: peer 2 defined again: replaces t.ini:5");
    assert_int_equal(cfg->npeers, 2);
    assert_int_equal(cfg->peers[0].id, 2);
    assert_string_equal(peer_path(&cfg->peers[0]), "/c/.s.PGSQL.6432");
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    /* another id at this process's own socket would send cancels round */
    load_fail(BASE "peer_id = 1\nunix_socket_dir = /run/me\nlisten_port = 7000\n"
                   "[peers]\n1 = host=/run/me port=7000\n2 = host=/run/me port=7000\n"
                   "3 = host=/run/me port=7001\n", &d, 1);
    assert_error(&d, "t.ini:8: peer 2: /run/me/.s.PGSQL.7000 is this process's own socket, "
                     "but its peer_id is 1 (cancels would loop)");
    pgw_conf_diag_free(&d);
    /* however the directory is written ("/", "..", "//", ".") */
    load_fail(BASE "peer_id = 1\nunix_socket_dir = /run/me\nlisten_port = 7000\n"
                   "[peers]\n2 = host=/run/me/ port=7000\n3 = host=/run/x/../me port=7000\n"
                   "4 = host=//run/./me port=7000\n5 = host=/run/mex port=7000\n", &d, 3);
    assert_error(&d, "t.ini:7: peer 2: /run/me/.s.PGSQL.7000 is this process's own socket, "
                     "but its peer_id is 1 (cancels would loop)");
    assert_error(&d, "t.ini:8: peer 3: /run/me/.s.PGSQL.7000 is this process's own socket, "
                     "but its peer_id is 1 (cancels would loop)");
    assert_error(&d, "t.ini:9: peer 4: /run/me/.s.PGSQL.7000 is this process's own socket, "
                     "but its peer_id is 1 (cancels would loop)");
    pgw_conf_diag_free(&d);

    /* "@": an abstract socket name, a NUL for its '@' and no trailing NUL
     * in the address (as the listener binds it); the same own-socket check,
     * and a file of the same path is another socket */
    load_fail(BASE "peer_id = 1\nunix_socket_dir = @/run/me\nlisten_port = 7000\n"
                   "[peers]\n1 = host=@/run/me port=7000\n2 = host=@/run/me port=7000\n"
                   "3 = host=/run/me port=7000\n", &d, 1);
    assert_error(&d, "t.ini:8: peer 2: @/run/me/.s.PGSQL.7000 is this process's own socket, "
                     "but its peer_id is 1 (cancels would loop)");
    pgw_conf_diag_free(&d);
    cfg = load_ok(BASE "peer_id = 1\n[peers]\n2 = host=@/run/p2 port=7000\n", &d);
    const struct sockaddr_un *sun = (const struct sockaddr_un *)&cfg->peers[0].addr;
    assert_int_equal(sun->sun_family, AF_UNIX);
    assert_int_equal(sun->sun_path[0], '\0');
    assert_string_equal(sun->sun_path + 1, "/run/p2/.s.PGSQL.7000");
    assert_int_equal(cfg->peers[0].addrlen,
                     offsetof(struct sockaddr_un, sun_path) + strlen("@/run/p2/.s.PGSQL.7000"));
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    /* this process's id at another socket: two processes with one id
     * (a rolling restart that copied the old one's peer_id) */
    cfg = load_ok(BASE "peer_id = 1\nunix_socket_dir = /run/new\nlisten_port = 7000\n"
                       "[peers]\n1 = host=/run/old port=7000\n2 = host=/run/two port=7000\n",
                  &d);
    assert_int_equal(d.nwarnings, 1);
    assert_warning(&d, "t.ini:7: peer 1 is this process's peer_id, but its socket "
                       "/run/old/.s.PGSQL.7000 is not this process's /run/new/.s.PGSQL.7000: "
                       "a process there with the same peer_id and this one lose each "
                       "other's cancels (give each process a peer_id of its own)");
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    /* written another way, it is its own: nothing to say */
    cfg = load_ok(BASE "peer_id = 1\nunix_socket_dir = /run/me\nlisten_port = 7000\n"
                       "[peers]\n1 = host=/run/x/../me/ port=7000\n", &d);
    assert_int_equal(d.nwarnings, 0);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    /* a relative unix_socket_dir not made yet, and the same directory
     * written from / in [peers]: its own too */
    {
        char cwd[PATH_MAX], ini[2 * PATH_MAX];
        assert_non_null(getcwd(cwd, sizeof(cwd)));
        snprintf(ini, sizeof(ini), BASE "peer_id = 1\nunix_socket_dir = not-made-yet\n"
                 "listen_port = 7000\n[peers]\n1 = host=%s/not-made-yet port=7000\n", cwd);
        cfg = load_ok(ini, &d);
        assert_int_equal(d.nwarnings, 0);
        pgw_conf_free(cfg);
        pgw_conf_diag_free(&d);
    }

    /* [peers] without peer_id does nothing: said once */
    cfg = load_ok(BASE "[peers]\n1 = host=/a\n2 = host=/b\n", &d);
    assert_int_equal(d.nwarnings, 1);
    assert_warning(&d, "t.ini:4: [peers]: not used while peer_id is 0");
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

/* ---- checks across keys ---- */

static void test_validation(void **state)
{
    struct pgw_conf_diag d = { 0 };
    load_fail("[pgwharf]\nlisten_port = 1\n", &d, 1);
    assert_error(&d, "t.ini: auth_type md5 needs auth_file, or auth_user to look passwords up "
                     "with auth_query");
    pgw_conf_diag_free(&d);

    load_fail("[pgwharf]\nauth_type = scram-sha-256\n", &d, 1);
    assert_error(&d, "t.ini:2: auth_type scram-sha-256 needs auth_file, or auth_user to look "
                     "passwords up with auth_query");
    pgw_conf_diag_free(&d);

    /* md5 is fine with an auth_file, or an auth_user (global or per database) */
    pgw_conf_free(load_ok("[pgwharf]\nauth_type = md5\nauth_file = /x\n", &d));
    pgw_conf_free(load_ok("[pgwharf]\nauth_type = plain\nauth_user = a\n", &d));
    pgw_conf_free(load_ok("[pgwharf]\n[databases]\nx = auth_user=a\n", &d));
    /* breaker_max_cooldown left at its default (2 s) under a longer
     * breaker_cooldown: that cooldown is the cap, as below the old default
     * (30 s); a file with breaker_cooldown = 10 alone still loads */
    pgw_conf_free(load_ok("[pgwharf]\nauth_file = /x\nbreaker_cooldown = 10\n", &d));
    pgw_conf_diag_free(&d);
    /* ... but set to that default in the file, below breaker_cooldown: the
     * error any other shorter cap gets */
    load_fail("[pgwharf]\nauth_file = /x\nbreaker_cooldown = 10\nbreaker_max_cooldown = 2\n",
              &d, 1);
    assert_error(&d, "t.ini:4: breaker_max_cooldown 2s is shorter than breaker_cooldown 10s");
    pgw_conf_diag_free(&d);

    load_fail("[pgwharf]\nauth_type = hba\n"
              "auth_user = a\nauth_query =\n"
              "client_tls_sslmode = require\nclient_tls_key_file = /k\n"
              "server_tls_cert_file = /c\n"
              "breaker_cooldown = 10\nbreaker_max_cooldown = 5s\n"
              "default_pool_size = 4\nmin_pool_size = 5\n"
              "listen_addr =\nunix_socket_dir =\n"
              "[databases]\n"
              "p = pool_size=3 min_pool_size=4\n"
              "q = pool_size=4\n"          /* general min_pool_size 5 > 4 */
              "r = min_pool_size=2\n", &d, 6);
    assert_error(&d, "t.ini:2: auth_type hba needs auth_hba_file");
    assert_error(&d, "t.ini:4: auth_query: must not be empty when auth_user is set");
    assert_error(&d, "t.ini:5: client_tls_sslmode require needs client_tls_key_file and "
                     "client_tls_cert_file");
    assert_error(&d, "t.ini:7: server_tls_cert_file needs server_tls_key_file");
    assert_error(&d, "t.ini:9: breaker_max_cooldown 5s is shorter than breaker_cooldown 10s");
    assert_error(&d, "t.ini:12: nothing to listen on: listen_addr and unix_socket_dir are both "
                     "empty");
    /* min_pool_size above the pool size: a warning (PgBouncer runs such a
     * file; the pool keeps its size open) */
    assert_warning(&d, "t.ini:11: min_pool_size 5 is larger than default_pool_size 4: pools "
                       "keep 4 open");
    assert_warning(&d, "t.ini:15: database \"p\": min_pool_size 4 is larger than pool_size 3: "
                       "its pools keep 3 open");
    assert_warning(&d, "t.ini:16: database \"q\": min_pool_size 5 is larger than pool_size 4: "
                       "its pools keep 4 open");
    pgw_conf_diag_free(&d);

    /* an entry whose server socket is pgwharf's own (no host: unix_socket_dir,
     * as PgBouncer), not one of another directory or port, nor over TCP */
    load_fail("[pgwharf]\nauth_type = trust\nlisten_port = 5432\nunix_socket_dir = /run/x\n"
              "[databases]\n"
              "a = dbname=a\n"
              "b = host=/run/x port=5432\n"
              "c = port=5433\n"
              "d = host=/run/y\n"
              "e = host=127.0.0.2\n"     /* (127.0.0.1: pgwharf's own listener) */
              /* the same directory spelt otherwise was let through: its
               * clients hung until client_login_timeout */
              "f = host=/run/x/\n"
              "g = host=/run//x/.\n"
              "h = host=/run/y/../x\n"
              /* a hostaddr and no host: TCP to it, not the socket (they
               * were refused as the socket's) */
              "i = hostaddr=10.0.0.5\n"
              "j = hostaddr=10.0.0.5 port=5432 dbname=j\n"
              "k = host=/run/x hostaddr=10.0.0.5\n", &d, 5);
    assert_error(&d, "t.ini:6: database \"a\": its server socket /run/x/.s.PGSQL.5432 is "
                     "pgwharf's own (unix_socket_dir and listen_port): set host or port");
    assert_error(&d, "t.ini:7: database \"b\": its server socket /run/x/.s.PGSQL.5432 is "
                     "pgwharf's own (unix_socket_dir and listen_port): set host or port");
    for (int line = 11; line <= 13; line++) {
        char want[200];
        snprintf(want, sizeof(want), "t.ini:%d: database \"%c\": its server socket "
                 "/run/x/.s.PGSQL.5432 is pgwharf's own (unix_socket_dir and listen_port): "
                 "set host or port", line, 'f' + line - 11);
        assert_error(&d, want);
    }
    pgw_conf_diag_free(&d);

    /* an entry whose server is one of pgwharf's own TCP listeners (a
     * numeric hostaddr, or host, on listen_port): its clients hung until
     * client_login_timeout as for the socket; hostaddr=127.0.0.1 was
     * refused as the socket's until that check read the hostaddr (review
     * r1).  Not an address or port it does not listen on, nor a name. */
    load_fail("[pgwharf]\nauth_type = trust\nlisten_addr = 127.0.0.1, ::1\n"
              "listen_port = 6000\nunix_socket_dir =\n"
              "[databases]\n"
              "a = hostaddr=127.0.0.1 port=6000\n"                    /* 7 */
              "b = host=127.0.0.1 port=6000\n"
              "c = host=/run/x hostaddr=127.0.0.1 port=6000 dbname=c\n"
              "d = host=db1,db2 hostaddr=10.0.0.1,::1 port=6000\n"    /* 10 */
              "e = host=127.0.0.1 port=6001\n"
              "f = hostaddr=127.0.0.2 port=6000\n"
              "g = host=localhost port=6000\n"
              "h = host=127.0.0.1,127.0.0.1 port=6001,6000\n"         /* 14 */
              "i = host=10.0.0.1,127.0.0.1 port=6000,6001\n"
              "* = host=127.0.0.1 port=6000\n", &d, 6);               /* 16 */
    static const char *const self[][2] = {
        { "7: database \"a\"", "127.0.0.1" }, { "8: database \"b\"", "127.0.0.1" },
        { "9: database \"c\"", "127.0.0.1" }, { "10: database \"d\"", "::1" },
        { "14: database \"h\"", "127.0.0.1" }, { "16: database \"*\"", "127.0.0.1" },
    };
    for (size_t i = 0; i < sizeof(self) / sizeof(self[0]); i++) {
        char want[300];
        snprintf(want, sizeof(want), "t.ini:%s: its server %s port 6000 is pgwharf's own "
                 "listener (listen_addr and listen_port): set host, hostaddr or port",
                 self[i][0], self[i][1]);
        assert_error(&d, want);
    }
    pgw_conf_diag_free(&d);
    /* a wildcard: the loopback and unspecified addresses of its family */
    load_fail("[pgwharf]\nauth_type = trust\nlisten_addr = 0.0.0.0\nlisten_port = 6000\n"
              "[databases]\n"
              "a = hostaddr=127.0.0.5 port=6000\n"      /* 6 */
              "b = host=0.0.0.0 port=6000\n"
              "c = host=::1 port=6000\n"
              "d = host=10.0.0.5 port=6000\n", &d, 2);
    assert_error(&d, "t.ini:6: database \"a\": its server 127.0.0.5 port 6000 is pgwharf's own "
                     "listener (listen_addr and listen_port): set host, hostaddr or port");
    assert_error(&d, "t.ini:7: database \"b\": its server 0.0.0.0 port 6000 is pgwharf's own "
                     "listener (listen_addr and listen_port): set host, hostaddr or port");
    pgw_conf_diag_free(&d);
    load_fail("[pgwharf]\nauth_type = trust\nlisten_addr = *\nlisten_port = 6000\n"
              "[databases]\nc = host=::1 port=6000\nd = hostaddr=10.0.0.5 port=6000\n", &d, 1);
    assert_error(&d, "t.ini:6: database \"c\": its server ::1 port 6000 is pgwharf's own "
                 "listener (listen_addr and listen_port): set host, hostaddr or port");
    pgw_conf_diag_free(&d);

    /* the metrics endpoint on the clients' port: the start failed, naming
     * listen_addr as if another process held the port */
    load_fail("[pgwharf]\nauth_type = trust\nlisten_port = 7000\nmetrics_port = 7000\n", &d, 1);
    assert_error(&d, "t.ini:4: metrics_port 7000 is listen_port too, on the same address: the "
                     "metrics endpoint needs a port of its own");
    pgw_conf_diag_free(&d);
    load_fail("[pgwharf]\nauth_type = trust\nlisten_addr = 10.0.0.5, *\nlisten_port = 7000\n"
              "metrics_port = 7000\n", &d, 1);
    pgw_conf_diag_free(&d);
    /* a name (localhost binds ::1 too), another spelling of one address */
    load_fail("[pgwharf]\nauth_type = trust\nlisten_addr = localhost\nlisten_port = 7000\n"
              "metrics_addr = ::1\nmetrics_port = 7000\n", &d, 1);
    pgw_conf_diag_free(&d);
    load_fail("[pgwharf]\nauth_type = trust\nlisten_addr = 0:0::1\nlisten_port = 7000\n"
              "metrics_addr = ::1\nmetrics_port = 7000\n", &d, 1);
    pgw_conf_diag_free(&d);
    /* other addresses on one port bind: fine */
    struct pgw_config *ok = load_ok("[pgwharf]\nauth_type = trust\nlisten_addr = 10.0.0.5\n"
                                    "listen_port = 7000\nmetrics_port = 7000\n", &d);
    pgw_conf_free(ok);
    pgw_conf_diag_free(&d);

    /* a sub-second stats_period would keep two repeating timers spinning */
    load_fail("[pgwharf]\nauth_type = trust\nstats_period = 1us\n", &d, 1);
    assert_error(&d, "t.ini:3: stats_period must be 0 (off) or at least 1s");
    pgw_conf_diag_free(&d);

    load_fail("[pgwharf]\nauth_type = cert\n", &d, 1);
    assert_error(&d, "t.ini:2: auth_type cert needs client_tls_sslmode other than disable");
    pgw_conf_diag_free(&d);

    load_fail("[pgwharf]\nauth_type = trust\nsyslog_facility = kern\n", &d, 1);
    assert_error(&d, "t.ini:3: syslog_facility \"kern\": expected auth, authpriv, daemon, user "
                     "or local0-local7");
    pgw_conf_diag_free(&d);

    /* unix_socket_mode is octal, as PgBouncer writes it */
    struct pgw_config *cfg = load_ok("[pgwharf]\nauth_type = trust\nunix_socket_mode = 0770\n", &d);
    assert_int_equal(pgw_conf_unix_socket_mode(cfg), 0770);
    pgw_conf_free(cfg);
    cfg = load_ok("[pgwharf]\nauth_type = trust\n", &d);
    assert_int_equal(pgw_conf_unix_socket_mode(cfg), 0777);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    load_fail("[pgwharf]\nauth_type = trust\nunix_socket_mode = 0789\n", &d, 1);
    assert_error(&d, "t.ini:3: unix_socket_mode \"0789\": not an octal file mode (0000-0777)");
    pgw_conf_diag_free(&d);
    load_fail("[pgwharf]\nauth_type = trust\nunix_socket_mode = 01777\n", &d, 1);
    assert_error(&d, "t.ini:3: unix_socket_mode \"01777\": not an octal file mode (0000-0777)");
    pgw_conf_diag_free(&d);
    /* PgBouncer reads it as any integer (strtol base 0): 0x1ff is 0777;
     * 770 is decimal there (the mode 01402), octal here before: neither
     * guess, an error that says how to write it */
    cfg = load_ok("[pgwharf]\nauth_type = trust\nunix_socket_mode = 0x1ff\n", &d);
    assert_int_equal(pgw_conf_unix_socket_mode(cfg), 0777);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    load_fail("[pgwharf]\nauth_type = trust\nunix_socket_mode = 770\n", &d, 1);
    assert_error(&d, "t.ini:3: unix_socket_mode \"770\": not an octal file mode (0000-0777): "
                     "write it with a leading 0 (0770); PgBouncer reads 770 as a decimal "
                     "number");
    pgw_conf_diag_free(&d);
}

/* ---- print ---- */

static char *print_to_string(const struct pgw_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    pgw_conf_print(f, cfg);
    fclose(f);
    return buf;
}

static void assert_same_config(const struct pgw_config *x, const struct pgw_config *y)
{
    char a[1024], b[1024];
    for (int i = 0; pgw_conf_key_name(i); i++) {
        assert_true(pgw_conf_get(x, pgw_conf_key_name(i), a, sizeof(a)));
        assert_true(pgw_conf_get(y, pgw_conf_key_name(i), b, sizeof(b)));
        assert_string_equal(a, b);
    }
    assert_int_equal(x->ndbs, y->ndbs);
    for (int i = 0; i < x->ndbs; i++) {
        const struct pgw_conf_db *p = &x->dbs[i], *q = &y->dbs[i];
        assert_string_equal(p->name, q->name);
        assert_int_equal(p->nconn, q->nconn);
        for (int j = 0; j < p->nconn; j++) {
            assert_string_equal(p->conn_keys[j], q->conn_keys[j]);
            if (strstr(p->conn_keys[j], "password"))
                assert_string_equal(q->conn_vals[j], "****");   /* masked */
            else
                assert_string_equal(p->conn_vals[j], q->conn_vals[j]);
        }
        assert_int_equal(p->pool_size, q->pool_size);
        assert_int_equal(p->min_pool_size, q->min_pool_size);
        assert_int_equal(p->reserve_pool_size, q->reserve_pool_size);
        assert_int_equal(p->max_db_connections, q->max_db_connections);
        assert_int_equal(p->pool_mode, q->pool_mode);
        assert_int_equal(p->load_balance_hosts, q->load_balance_hosts);
        assert_int_equal(p->target_session_attrs, q->target_session_attrs);
        assert_true((p->auth_user == NULL) == (q->auth_user == NULL));
        if (p->auth_user)
            assert_string_equal(p->auth_user, q->auth_user);
        assert_true((p->connect_query == NULL) == (q->connect_query == NULL));
        if (p->connect_query)
            assert_string_equal(p->connect_query, q->connect_query);
    }
    assert_int_equal(x->nusers, y->nusers);
    for (int i = 0; i < x->nusers; i++) {
        const struct pgw_conf_user *p = &x->users[i], *q = &y->users[i];
        assert_string_equal(p->name, q->name);
        assert_int_equal(p->pool_mode, q->pool_mode);
        assert_int_equal(p->pool_size, q->pool_size);
        assert_int_equal(p->max_user_connections, q->max_user_connections);
        assert_true(p->query_timeout == q->query_timeout);
        assert_true(p->idle_transaction_timeout == q->idle_transaction_timeout);
        assert_true(p->client_idle_timeout == q->client_idle_timeout);
    }
    assert_int_equal(x->npeers, y->npeers);
    for (int i = 0; i < x->npeers; i++) {
        const struct pgw_conf_peer *p = &x->peers[i], *q = &y->peers[i];
        assert_int_equal(p->id, q->id);
        assert_string_equal(p->host, q->host);
        assert_int_equal(p->port, q->port);
        assert_int_equal(p->pool_size, q->pool_size);
        assert_int_equal(p->addrlen, q->addrlen);
        assert_memory_equal(&p->addr, &q->addr, p->addrlen);
    }
}

static void test_print_roundtrip(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(
        "[pgwharf]\nauth_type = md5\nauth_file = /etc/users.txt\nlisten_port = 7000\n"
        "server_lifetime = 1.25h\nquery_wait_timeout = 333ms\nbreaker_cooldown = 0.1\n"
        "server_connect_rate = 0.3\nserver_round_robin = yes\npool_mode = transaction\n"
        "server_reset_query = RESET ALL; DISCARD PLANS\npeer_id = 2\n"
        "[databases]\n"
        "app = host=db1 password='top secret' user=bob application_name='a ''q'' \\b' "
        "pool_size=5 pool_mode=session connect_query='SET x = ''y''' datestyle=ISO\n"
        "\"we\"\"ird name\" = host=h sslpassword=hunter2 target_session_attrs=STANDBY\n"
        "* = host=fallback,fb2 load_balance_hosts=disable\n"
        "[users]\n"
        "alice = pool_mode=statement query_timeout=1.5 client_idle_timeout=250ms\n"
        "bob =\n"
        "[peers]\n"
        "1 = host='/run/pg wharf' port=7000\n"
        "2 = host=10.0.0.2 pool_size=4\n", &d);
    char *text = print_to_string(cfg);
    assert_non_null(strstr(text, "[pgwharf]\nlisten_addr = 127.0.0.1\nlisten_port = 7000\n"));
    assert_non_null(strstr(text, "\nserver_lifetime = 4500\n"));
    assert_non_null(strstr(text, "\nquery_wait_timeout = 0.333\n"));
    assert_non_null(strstr(text, "\nserver_round_robin = on\n"));
    assert_non_null(strstr(text, "\n[databases]\napp = host=db1 password=**** user=bob "
                                 "application_name='a ''q'' \\b' "));
    assert_non_null(strstr(text, "sslpassword=****"));
    assert_null(strstr(text, "top secret"));
    assert_null(strstr(text, "hunter2"));
    assert_non_null(strstr(text, "\n\"we\"\"ird name\" = host=h"));
    assert_non_null(strstr(text, "sslpassword=**** target_session_attrs=standby "));
    assert_non_null(strstr(text, "\n* = host=fallback,fb2 load_balance_hosts=disable\n"));
    assert_non_null(strstr(text, "\n[users]\nalice = pool_mode=statement query_timeout=1.5 "
                                 "client_idle_timeout=0.25\nbob =\n"));
    assert_non_null(strstr(text, "\npeer_id = 2\n"));
    assert_non_null(strstr(text, "\n[peers]\n1 = host='/run/pg wharf' port=7000\n"
                                 "2 = host=10.0.0.2 port=6432 pool_size=4\n"));

    struct pgw_config *again = load_ok(text, &d);
    assert_same_config(cfg, again);
    assert_string_equal(pgw_conf_find_db(again, "app")->password, "****");
    /* printing the reloaded config gives the same text */
    char *text2 = print_to_string(again);
    assert_string_equal(text, text2);
    free(text);
    free(text2);
    pgw_conf_free(again);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

/* ---- pgw_conf_dup (the admin console's SET) ---- */

/* Allocations counted and failed on demand, where the allocator can be
 * replaced (not under the sanitizers, which replace it themselves and
 * find a pointer shared by two configs as a use after free). */
#if defined(__SANITIZE_ADDRESS__)
#define CAN_COUNT_ALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CAN_COUNT_ALLOC 0
#endif
#endif
#ifndef CAN_COUNT_ALLOC
#define CAN_COUNT_ALLOC 1
static bool counting;              /* count (and maybe fail) from now on */
static long live;                  /* allocations less frees, while counting */
static long seen, fail_at = -1;    /* the allocation (0, 1, ...) to fail */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);
static bool alloc_fails(void)
{
    return counting && seen++ == fail_at;
}
void *malloc(size_t size)
{
    void *p = alloc_fails() ? NULL : __libc_malloc(size);
    live += counting && p;
    return p;
}
void *calloc(size_t n, size_t size)
{
    void *p = alloc_fails() ? NULL : __libc_calloc(n, size);
    live += counting && p;
    return p;
}
void *realloc(void *old, size_t size)
{
    void *p = alloc_fails() ? NULL : __libc_realloc(old, size);
    live += counting && p && !old;
    return p;
}
void free(void *p)
{
    live -= counting && p;
    __libc_free(p);
}
#endif

static const char DUP_INI[] =
    BASE "server_check_query = select 'a long check'\nadmin_users = ops, admin\n"
    "log_level = notice\n"
    "[databases]\n" APP_ENTRY
    "other = host=/run/pg\n"
    "* =\n"
    "[users]\nalice = pool_mode=statement query_timeout=1.5\nbob =\n"
    "[peers]\n1 = host='/run/pg wharf' port=7000\n2 = host=10.0.0.2 pool_size=4\n";

/* A copy shares no pointer with its source: it outlives it whole, and
 * SET's change of the copy leaves the running one as it was. */
static void test_dup(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(DUP_INI, &d);
    char *text = print_to_string(cfg);
    char where[256];
#if CAN_COUNT_ALLOC
    /* Short of memory at each of its allocations in turn: NULL, and
     * nothing left behind. */
    struct pgw_config *copy = NULL;
    for (fail_at = 0; !copy; fail_at++) {
        seen = live = 0;
        counting = true;
        copy = pgw_conf_dup(cfg);
        if (!copy)
            assert_int_equal(live, 0);
        counting = false;
        assert_true(fail_at < 1000);
    }
    fail_at = -1;
    long made = live;                   /* what the copy owns */
    assert_true(made > 30);
    counting = true;
    live = 0;
    pgw_conf_free(copy);
    counting = false;
    assert_int_equal(live, -made);      /* frees only its own, each once */
#endif
    struct pgw_config *dup = pgw_conf_dup(cfg);
    assert_non_null(dup);
    char *same = print_to_string(dup);       /* every key and entry (passwords masked) */
    assert_string_equal(text, same);
    free(same);
    assert_ptr_not_equal(dup->file, cfg->file);
    assert_ptr_not_equal(dup->server_check_query, cfg->server_check_query);
    assert_ptr_not_equal(dup->dbs, cfg->dbs);
    assert_ptr_not_equal(dup->origins, cfg->origins);
    const struct pgw_conf_db *app = pgw_conf_find_db(dup, "app");
    assert_ptr_not_equal(app->host, pgw_conf_find_db(cfg, "app")->host);

    pgw_conf_free(cfg);                 /* the copy lives on alone */
    char *again = print_to_string(dup);
    assert_string_equal(text, again);
    assert_app_entry(pgw_conf_find_db(dup, "app"), 7);
    assert_string_equal(pgw_conf_find_db(dup, "nope")->name, "*");     /* index kept */
    assert_string_equal(pgw_conf_find_user(dup, "alice")->file, "t.ini");
    assert_string_equal(pgw_conf_find_peer(dup, 1)->host, "/run/pg wharf");
    assert_string_equal(pgw_conf_where(dup, "admin_users", where, sizeof(where)), "t.ini:4");

    /* SET's edit of the copy: its own line forgotten, the others kept */
    char err[256];
    struct pgw_config *set = pgw_conf_dup(dup);
    assert_non_null(set);
    assert_int_equal(pgw_conf_set(set, "admin_users", "root", err, sizeof(err)), 0);
    assert_int_equal(pgw_conf_validate(set, &d), 0);
    assert_string_equal(pgw_conf_where(set, "admin_users", where, sizeof(where)), "t.ini");
    assert_string_equal(pgw_conf_where(set, "log_level", where, sizeof(where)), "t.ini:5");
    assert_string_equal(dup->admin_users, "ops, admin");
    assert_string_equal(set->admin_users, "root");
    pgw_conf_free(dup);
    assert_string_equal(pgw_conf_find_db(set, "app")->connect_query, "SET x = 1");

    /* the defaults (no origins, no entries) copy too */
    struct pgw_config *def = pgw_conf_defaults(), *def2 = pgw_conf_dup(def);
    assert_non_null(def2);
    assert_same_config(def, def2);
    assert_null(def2->origins);
    assert_int_equal(def2->ndbs, 0);
    pgw_conf_free(def);
    pgw_conf_free(def2);
    pgw_conf_free(set);
    free(text);
    free(again);
    pgw_conf_diag_free(&d);
}

/* ---- admin SET / SHOW ---- */

static void test_set_get(void **state)
{
    struct pgw_config *cfg = pgw_conf_defaults();
    char err[256], buf[256];
    assert_int_equal(pgw_conf_set(cfg, "listen_port", "7000", err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(cfg->listen_port, 7000);
    assert_true(pgw_conf_get(cfg, "LISTEN_PORT", buf, sizeof(buf)));
    assert_string_equal(buf, "7000");

    assert_int_equal(pgw_conf_set(cfg, "listen_port", "x", err, sizeof(err)), PGW_ECONFIG);
    assert_string_equal(err, "listen_port: expected an integer from 0 to 65535, got \"x\"");
    assert_int_equal(cfg->listen_port, 7000);   /* unchanged */

    assert_int_equal(pgw_conf_set(cfg, "server_lifetime", "1.5h", err, sizeof(err)), 0);
    assert_true(pgw_conf_get(cfg, "server_lifetime", buf, sizeof(buf)));
    assert_string_equal(buf, "5400");
    assert_int_equal(pgw_conf_set(cfg, "log_connections", "no", err, sizeof(err)), 0);
    assert_true(pgw_conf_get(cfg, "log_connections", buf, sizeof(buf)));
    assert_string_equal(buf, "off");
    assert_int_equal(pgw_conf_set(cfg, "server_reset_query", "RESET ALL", err, sizeof(err)), 0);
    assert_string_equal(cfg->server_reset_query, "RESET ALL");
    assert_int_equal(pgw_conf_set(cfg, "auth_type", "scram-sha-256", err, sizeof(err)), 0);
    assert_true(pgw_conf_get(cfg, "auth_type", buf, sizeof(buf)));
    assert_string_equal(buf, "scram-sha-256");
    assert_int_equal(pgw_conf_set(cfg, "ignore_startup_parameters", "extra_float_digits",
                                  err, sizeof(err)), 0);
    assert_string_equal(cfg->ignore_startup_parameters, "extra_float_digits");

    assert_int_equal(pgw_conf_set(cfg, "nope", "1", err, sizeof(err)), PGW_ECONFIG);
    assert_string_equal(err, "unknown key \"nope\"");
    assert_int_equal(pgw_conf_set(cfg, "sbuf_loopcnt", "1", err, sizeof(err)), PGW_ECONFIG);
    assert_string_equal(err, "sbuf_loopcnt: not supported yet");
    assert_int_equal(pgw_conf_set(cfg, "tcp_keepidle", "45", err, sizeof(err)), 0);
    assert_int_equal(cfg->tcp_keepidle, 45);
    assert_int_equal(pgw_conf_set(cfg, "tcp_keepcnt", "200", err, sizeof(err)), PGW_ECONFIG);
    assert_int_equal(pgw_conf_set(cfg, "logfile", "a\nb", err, sizeof(err)), PGW_ECONFIG);
    assert_string_equal(err, "logfile: the value must be on one line");
    assert_int_equal(pgw_conf_set(cfg, "listen_port", "1", NULL, 0), 0);
    assert_false(pgw_conf_get(cfg, "nope", buf, sizeof(buf)));

    /* a short buffer truncates */
    char tiny[4];
    assert_true(pgw_conf_get(cfg, "server_reset_query", tiny, sizeof(tiny)));
    assert_string_equal(tiny, "RES");
    pgw_conf_free(cfg);
}

/* A reload keeps the keys fixed at start at their running values. */
struct changed_log {
    char text[512];
    int n;
};

static void note_changed(const char *key, const char *was, const char *now, void *arg)
{
    struct changed_log *l = arg;
    size_t used = strlen(l->text);
    snprintf(l->text + used, sizeof(l->text) - used, "%s:%s->%s;", key, was, now);
    l->n++;
}

static void test_keep_fixed(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *running = load_ok(BASE "listen_port = 7000\nlisten_addr = 127.0.0.1\n"
                                              "pidfile = /run/a.pid\n", &d);
    struct pgw_config *cfg = load_ok(BASE "listen_port = 7001\nlisten_addr = *\n"
                                          "listen_backlog = 7\npidfile = /run/a.pid\n"
                                          "default_pool_size = 3\n", &d);
    assert_true(pgw_conf_key_fixed("LISTEN_PORT"));
    assert_true(pgw_conf_key_fixed("pidfile"));
    assert_false(pgw_conf_key_fixed("default_pool_size"));
    assert_false(pgw_conf_key_fixed("nope"));
    struct changed_log l = { "", 0 };
    assert_int_equal(pgw_conf_keep_fixed(cfg, running, note_changed, &l), 0);
    assert_int_equal(cfg->listen_port, 7000);
    assert_string_equal(cfg->listen_addr, "127.0.0.1");
    assert_int_equal(cfg->listen_backlog, 128);
    assert_string_equal(cfg->pidfile, "/run/a.pid");
    assert_int_equal(cfg->default_pool_size, 3);          /* the rest is the file's */
    assert_int_equal(l.n, 3);
    assert_string_equal(l.text, "listen_addr:127.0.0.1->*;listen_port:7000->7001;"
                                "listen_backlog:128->7;");
    /* nothing changed: nothing to say */
    l.n = 0;
    l.text[0] = '\0';
    assert_int_equal(pgw_conf_keep_fixed(cfg, running, note_changed, &l), 0);
    assert_int_equal(l.n, 0);
    pgw_conf_free(cfg);
    pgw_conf_free(running);
    pgw_conf_diag_free(&d);
}

/* A reload's checks across keys see the config that would run: the fixed
 * keys' running values.  The [peers] entry below is at this process's own
 * socket; with the file's peer_id 2 it is this process, with the running 1
 * (which a reload keeps) it is another id, and cancels would loop. */
static void test_load_over_checks_what_would_run(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *running = load_ok(BASE "peer_id = 1\nunix_socket_dir = /run/me\n"
                                              "listen_port = 7000\n", &d);
    const char *file = BASE "peer_id = 2\nunix_socket_dir = /run/me\nlisten_port = 7000\n"
                            "[peers]\n2 = host=/run/me port=7000\n";
    struct pgw_config *cfg = load_ok(file, &d);         /* on its own, fine */
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);

    struct changed_log l = { "", 0 };
    cfg = NULL;
    assert_int_equal(pgw_conf_load_over("t.ini", file, running, note_changed, &l, &cfg, &d),
                     PGW_ECONFIG);
    assert_null(cfg);
    assert_string_equal(l.text, "peer_id:1->2;");
    assert_int_equal(d.nerrors, 1);
    assert_error(&d, "t.ini:7: peer 2: /run/me/.s.PGSQL.7000 is this process's own socket, "
                     "but its peer_id is 1 (cancels would loop)");
    pgw_conf_diag_free(&d);

    /* the other checks are a start's, at their lines */
    assert_int_equal(pgw_conf_load_over("t.ini", BASE "breaker_cooldown = 10\n"
                                        "breaker_max_cooldown = 5s\n", running, NULL, NULL, &cfg,
                                        &d),
                     PGW_ECONFIG);
    assert_error(&d, "t.ini:4: breaker_max_cooldown 5s is shorter than breaker_cooldown 10s");
    pgw_conf_diag_free(&d);

    /* a good file: the running fixed values, the file's others */
    assert_int_equal(pgw_conf_load_over("t.ini", BASE "peer_id = 1\nlisten_port = 7001\n"
                                        "default_pool_size = 3\n[peers]\n"
                                        "2 = host=/run/me port=7001\n", running, NULL, NULL,
                                        &cfg, &d), 0);
    assert_int_equal(cfg->listen_port, 7000);
    assert_int_equal(cfg->default_pool_size, 3);
    assert_int_equal(cfg->npeers, 1);
    pgw_conf_free(cfg);
    pgw_conf_free(running);
    pgw_conf_diag_free(&d);
}

static void test_list_has(void **state)
{
    const char *list = " alice, bob,carol  dave\t,, eve ";
    assert_true(pgw_conf_list_has(list, "alice"));
    assert_true(pgw_conf_list_has(list, "bob"));
    assert_true(pgw_conf_list_has(list, "carol"));
    assert_true(pgw_conf_list_has(list, "dave"));
    assert_true(pgw_conf_list_has(list, "eve"));
    assert_false(pgw_conf_list_has(list, "al"));
    assert_false(pgw_conf_list_has(list, "alice,"));
    assert_false(pgw_conf_list_has(list, "Alice"));
    assert_false(pgw_conf_list_has(list, ""));
    assert_false(pgw_conf_list_has("", "alice"));
    assert_false(pgw_conf_list_has(NULL, "alice"));
}

/* ---- auth file ---- */

static void test_authfile_parse(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_auth_file *af = NULL;
    assert_int_equal(pgw_authfile_load(DATA "userlist.txt", &af, &d), 0);
    assert_int_equal(d.nerrors, 0);
    assert_int_equal(af->n, 4);
    assert_string_equal(pgw_authfile_lookup(af, "alice"), "md5a3556571e93b0d20722ba62be61e8c2d");
    assert_non_null(strstr(pgw_authfile_lookup(af, "bob"), "SCRAM-SHA-256$4096:"));
    assert_string_equal(pgw_authfile_lookup(af, "carol \"the admin\""), "pa ss\"word");
    assert_string_equal(pgw_authfile_lookup(af, "dave"), "plain");
    assert_null(pgw_authfile_lookup(af, "mallory"));
    assert_null(pgw_authfile_lookup(af, "carol"));
    pgw_authfile_free(af);

    /* a user listed twice: the later line wins, with a warning */
    assert_int_equal(pgw_authfile_parse("u.txt", "\"a\" \"1\"\n\"b\" \"2\"\n\"a\" \"3\"\n", &af,
                                        &d), 0);
    assert_int_equal(af->n, 2);
    assert_string_equal(pgw_authfile_lookup(af, "a"), "3");
    assert_warning(&d, "u.txt:3: user \"a\" is listed again; this line replaces line 1");
    pgw_authfile_free(af);
    pgw_conf_diag_free(&d);

    assert_int_equal(pgw_authfile_parse("empty.txt", "; nothing\n\n", &af, &d), 0);
    assert_int_equal(af->n, 0);
    assert_null(pgw_authfile_lookup(af, "a"));
    pgw_authfile_free(af);
}

static void test_authfile_errors(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_auth_file *af = (struct pgw_auth_file *)1;
    int rc = pgw_authfile_parse("u.txt",
                                "\"ok\" \"fine\"\n"
                                "alice \"secret\"\n"
                                "\"bob \"secret\"\n"
                                "\"carol\"\n"
                                "\"dave\" \"unterminated\n"
                                "\"\" \"x\"\n"
                                "\"erin\" secret\n", &af, &d);
    assert_int_equal(rc, PGW_ECONFIG);
    assert_null(af);
    assert_int_equal(d.nerrors, 6);
    assert_error(&d, "u.txt:2: expected a quoted user name (\"user\" \"secret\")");
    assert_error(&d, "u.txt:3: user \"bob \": expected a quoted secret after the user name");
    assert_error(&d, "u.txt:4: user \"carol\": expected a quoted secret after the user name");
    assert_error(&d, "u.txt:5: user \"dave\": unterminated quoted secret");
    assert_error(&d, "u.txt:6: empty user name");
    assert_error(&d, "u.txt:7: user \"erin\": expected a quoted secret after the user name");
    pgw_conf_diag_free(&d);

    assert_int_equal(pgw_authfile_parse("u.txt", "\"open\n", &af, &d), PGW_ECONFIG);
    assert_error(&d, "u.txt:1: unterminated quoted user name");
    pgw_conf_diag_free(&d);

    assert_int_equal(pgw_authfile_load(DATA "missing.txt", &af, &d), PGW_ECONFIG);
    assert_error(&d, DATA "missing.txt: cannot open: No such file or directory");
    pgw_conf_diag_free(&d);
}

/* ---- a real-world pgbouncer.ini ---- */

static void test_real_pgbouncer_ini(void **state)
{
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = NULL;
    int rc = pgw_conf_load(DATA "pgbouncer-real.ini", &cfg, &d);
    if (rc != 0 || d.nerrors)
        dump(&d);
    assert_int_equal(rc, 0);
    assert_int_equal(d.nerrors, 0);
    assert_int_equal(d.nwarnings, 4);      /* tcp_*, syslog, dns_nxdomain_ttl... are implemented */
    assert_warning(&d, DATA "pgbouncer-real.ini:150: dns_zone_check_period: ignored: not "
                            "supported yet");

    assert_string_equal(cfg->listen_addr, "*");
    assert_int_equal(cfg->auth_type, PGW_AUTH_SCRAM);
    assert_int_equal(cfg->pool_mode, PGW_POOL_TRANSACTION);
    assert_int_equal(cfg->max_client_conn, 5000);
    assert_int_equal(cfg->listen_backlog, 4096);
    assert_int_equal(cfg->tcp_defer_accept, 1);
    assert_int_equal(pgw_conf_unix_socket_mode(cfg), 0777);
    assert_false(cfg->so_reuseport);
    assert_true(cfg->tcp_keepalive);
    assert_int_equal(cfg->tcp_keepcnt, 5);
    assert_int_equal(cfg->tcp_keepidle, 30);
    assert_int_equal(cfg->tcp_keepintvl, 10);
    assert_true(cfg->io_batch);      /* not in the file: the default */
    assert_int_equal(cfg->client_tls_sslmode, PGW_TLS_PREFER);
    assert_true(cfg->server_round_robin);
    assert_true(cfg->application_name_add_host);
    assert_false(cfg->log_connections);
    assert_true(cfg->server_idle_timeout == 300);
    assert_true(cfg->autodb_idle_timeout == 3600);
    assert_true(cfg->dns_nxdomain_ttl == 15);
    assert_true(cfg->cancel_wait_timeout == 10);
    assert_string_equal(cfg->ignore_startup_parameters, "extra_float_digits, search_path");
    assert_true(pgw_conf_list_has(cfg->admin_users, "dba"));
    assert_true(pgw_conf_list_has(cfg->stats_users, "monitoring"));

    assert_int_equal(cfg->ndbs, 6);
    const struct pgw_conf_db *orders = pgw_conf_find_db(cfg, "orders");
    assert_string_equal(orders->password, "Sup3r$ecret");
    assert_int_equal(orders->reserve_pool_size, 5);
    assert_int_equal(pgw_conf_pool_mode(cfg, orders, NULL), PGW_POOL_TRANSACTION);
    const struct pgw_conf_db *ro = pgw_conf_find_db(cfg, "orders_ro");
    assert_string_equal(ro->host, "pg-replica1.internal,pg-replica2.internal");
    assert_string_equal(ro->dbname, "orders");
    const struct pgw_conf_db *rep = pgw_conf_find_db(cfg, "reporting");
    assert_string_equal(rep->connect_query, "SET statement_timeout = '15min'");
    assert_string_equal(pgw_conf_auth_user(cfg, rep), "pgbouncer_auth");
    assert_string_equal(conn(pgw_conf_find_db(cfg, "legacy"), "options"),
                        "-c DateStyle=ISO -c TimeZone=UTC");
    assert_string_equal(pgw_conf_find_db(cfg, "unlisted")->name, "*");
    const struct pgw_conf_user *web = pgw_conf_find_user(cfg, "web");
    assert_int_equal(pgw_conf_pool_mode(cfg, pgw_conf_find_db(cfg, "reporting"), web),
                     PGW_POOL_TRANSACTION);
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

static void test_track_extra_parameters(void **state)
{
    (void)state;
    char names[PGW_CONF_TRACK_EXTRA_MAX][PGW_CONF_PARAM_NAME_MAX + 1], err[256];
    assert_int_equal(pgw_conf_track_extra("", names, err, sizeof(err)), 0);
    assert_int_equal(pgw_conf_track_extra(NULL, names, err, sizeof(err)), 0);
    assert_int_equal(pgw_conf_track_extra(" , ,", names, err, sizeof(err)), 0);
    /* lower-cased, each once, comma or space separated */
    assert_int_equal(pgw_conf_track_extra("Default_Transaction_Read_Only, search_path "
                                          "SEARCH_PATH,myext.some_Setting\tx$1",
                                          names, err, sizeof(err)), 3 + 1);
    assert_string_equal(names[0], "default_transaction_read_only");
    assert_string_equal(names[1], "search_path");
    assert_string_equal(names[2], "myext.some_setting");
    assert_string_equal(names[3], "x$1");
    /* 16 different names, then a repeat: fine; a 17th: not */
    char list[512] = "";
    for (int i = 0; i < PGW_CONF_TRACK_EXTRA_MAX; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "p%d,", i);
    strcat(list, "P3");
    assert_int_equal(pgw_conf_track_extra(list, names, err, sizeof(err)), 16);
    strcat(list, ",p16");
    assert_int_equal(pgw_conf_track_extra(list, names, err, sizeof(err)), -1);
    assert_string_equal(err, "more than 16 names");
    /* not names */
    static const char *const bad[] = {
        "1abc", "a-b", "a..b", ".a", "a.", "a.1b", "x'y", "a;b", "\"a\"", "é",
        "a=b", "$a",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",          /* 48 bytes */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (pgw_conf_track_extra(bad[i], names, err, sizeof(err)) != -1)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(strstr(err, "is not a parameter name"));
    }
    /* 47 bytes is the longest */
    assert_int_equal(pgw_conf_track_extra("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                                          names, err, sizeof(err)), 1);
    /* the loader: the key's line, and it is no longer "not supported yet" */
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "track_extra_parameters = search_path\n", &d);
    assert_string_equal(cfg->track_extra_parameters, "search_path");
    assert_int_equal(d.nwarnings, 0);
    assert_true(pgw_conf_key_fixed("track_extra_parameters"));
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
    load_fail(BASE "\ntrack_extra_parameters = search_path, bad-name\n", &d, 1);
    assert_error(&d, "t.ini:4: track_extra_parameters: \"bad-name\" is not a parameter name "
                     "(expected letters, digits, '_' and '$', at most 47 bytes, starting with "
                     "a letter or '_')");
    pgw_conf_diag_free(&d);
}

/* The lines of the keys stay with the config: errors found after loading
 * (a TLS file, auth_file that cannot be opened) named only the file. */
static void test_key_lines_outlive_the_load(void **state)
{
    (void)state;
    struct pgw_conf_diag d = { 0 };
    struct pgw_config *cfg = load_ok(BASE "\nauth_file = nope.txt\n"
                                     "server_tls_ca_file = ca.pem\n", &d);
    char where[128], err[128];
    assert_string_equal(pgw_conf_where(cfg, "server_tls_ca_file", where, sizeof(where)),
                        "t.ini:5");
    assert_string_equal(pgw_conf_where(cfg, "auth_file", where, sizeof(where)), "t.ini:4");
    assert_string_equal(pgw_conf_where(cfg, "client_tls_ca_file", where, sizeof(where)),
                        "t.ini");                       /* at its default */
    assert_string_equal(pgw_conf_where(cfg, "no_such_key", where, sizeof(where)), "t.ini");

    struct pgw_auth_file *af = NULL;
    assert_int_equal(pgw_authfile_load("nope.txt", &af, &d), PGW_ECONFIG);
    pgw_conf_diag_locate(&d, 0, cfg, "auth_file", "nope.txt");
    assert_int_equal(d.nerrors, 1);
    assert_true(strncmp(d.errors[0], "t.ini:4: auth_file \"nope.txt\": cannot open: ", 44) == 0);
    pgw_conf_diag_free(&d);

    /* SET changes the value: no line set it any more */
    assert_int_equal(pgw_conf_set(cfg, "auth_file", "other.txt", err, sizeof(err)), 0);
    assert_string_equal(pgw_conf_where(cfg, "auth_file", where, sizeof(where)), "t.ini");
    pgw_conf_free(cfg);

    cfg = pgw_conf_defaults();
    assert_string_equal(pgw_conf_where(cfg, "auth_file", where, sizeof(where)), "config");
    pgw_conf_free(cfg);
}

/* metrics_addr and listen_addr passed --check with values only the start
 * refused. */
static void test_listen_and_metrics_addr_checked_at_load(void **state)
{
    (void)state;
    struct pgw_conf_diag d = { 0 };
    load_fail(BASE "metrics_port = 9127\nmetrics_addr = db.example\n", &d, 1);
    assert_error(&d, "t.ini:4: metrics_addr \"db.example\": Name or service not known (a "
                 "numeric address, \"*\" or localhost)");
    pgw_conf_diag_free(&d);
    load_fail(BASE "listen_addr = 127.0.0.1, local/host\n", &d, 1);
    assert_error(&d, "t.ini:3: listen_addr \"local/host\": not a host name or address");
    pgw_conf_diag_free(&d);
    struct pgw_config *cfg = load_ok(BASE "metrics_port = 9127\nmetrics_addr = ::1\n"
                                     "listen_addr = *,\tlocalhost, ::1, 10.0.0.1, db-1.example\n",
                                     &d);
    pgw_conf_free(cfg);
    cfg = load_ok(BASE "metrics_addr = db.example\n", &d);   /* not used: metrics_port 0 */
    pgw_conf_free(cfg);
    pgw_conf_diag_free(&d);
}

/* An error on one line does not hide the checks of the others (README:
 * "all of them at once"); a check that reads a key whose line failed is
 * skipped, not run on that key's default. */
static void test_checks_run_after_errors(void **state)
{
    struct pgw_conf_diag d = { 0 };
    load_fail(BASE "foo = 1\n"                          /* 3 */
                   "stats_period = 0.5\n"               /* 4 */
                   "unix_socket_mode = 770\n"           /* 5 */
                   "listen_addr = a$b\n"                /* 6 */
                   "syslog_facility = local9\n"         /* 7 */
                   "breaker_cooldown = 10\n"            /* 8 */
                   "breaker_max_cooldown = 5\n", &d, 6);
    assert_error(&d, "t.ini:3: unknown key \"foo\"");
    assert_error(&d, "t.ini:4: stats_period must be 0 (off) or at least 1s");
    assert_error(&d, "t.ini:5: unix_socket_mode \"770\": not an octal file mode (0000-0777): "
                     "write it with a leading 0 (0770); PgBouncer reads 770 as a decimal number");
    assert_error(&d, "t.ini:6: listen_addr \"a$b\": not a host name or address");
    assert_error(&d, "t.ini:7: syslog_facility \"local9\": expected auth, authpriv, daemon, "
                     "user or local0-local7");
    assert_error(&d, "t.ini:9: breaker_max_cooldown 5s is shorter than breaker_cooldown 10s");
    pgw_conf_diag_free(&d);

    /* a value error, a [databases] error, a key in an unknown section */
    load_fail(BASE "stats_period = 0.5\nlisten_port = x\n[databases]\na = hots=h\n"
                   "[pgwharff]\nsyslog_facility = nope\n", &d, 4);
    assert_error(&d, "t.ini:3: stats_period must be 0 (off) or at least 1s");
    pgw_conf_diag_free(&d);

    /* a key whose line failed keeps its default: no check reports it */
    char text[600];
    snprintf(text, sizeof(text),
             "[pgwharf]\nauth_type = md5x\n"                          /* 2 */
             "breaker_cooldown = zz\nbreaker_max_cooldown = 1\n"      /* 3, 4 */
             "listen_port = abc\nunix_socket_dir = /tmp/%0120d\n"     /* 5, 6 */
             "client_tls_sslmode = bogus\n"                           /* 7 */
             "[pgwharff]\nlisten_addr = \nunix_socket_dir = \n"       /* 8-10 */
             "[databases]\nx = host=h auth_user=u bogus=1\n", 0);     /* 11, 12 */
    load_fail(text, &d, 6);
    assert_error(&d, "t.ini:8: unknown section [pgwharff] (expected pgwharf, pgbouncer, "
                     "databases, users or peers)");
    assert_error(&d, "t.ini:12: database \"x\": unknown key \"bogus\"");
    pgw_conf_diag_free(&d);
    /* the same file with auth_type md5: its auth_user may be on the line
     * that failed, so no "needs auth_file" */
    memcpy(strstr(text, "md5x"), "md5 ", 4);
    load_fail(text, &d, 5);
    pgw_conf_diag_free(&d);

    /* a reload: the same, on the config that would run */
    struct pgw_config *running = load_ok(BASE, &d), *cfg = NULL;
    struct changed_log l = { "", 0 };
    assert_int_equal(pgw_conf_load_over("t.ini", BASE "foo = 1\nstats_period = 0.5\n"
                                        "listen_port = 7001\n", running, note_changed, &l,
                                        &cfg, &d), PGW_ECONFIG);
    assert_null(cfg);
    assert_int_equal(d.nerrors, 2);
    assert_error(&d, "t.ini:4: stats_period must be 0 (off) or at least 1s");
    assert_string_equal(l.text, "");            /* a file refused changes nothing */
    pgw_conf_free(running);
    pgw_conf_diag_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_many_databases),
        cmocka_unit_test(test_minimal_file_gets_defaults),
        cmocka_unit_test(test_pool_size_zero),
        cmocka_unit_test(test_int_keys),
        cmocka_unit_test(test_int_keys_as_pgbouncer),
        cmocka_unit_test(test_duration_parse),
        cmocka_unit_test(test_duration_keys),
        cmocka_unit_test(test_bool_forms),
        cmocka_unit_test(test_enums),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_sections_and_case),
        cmocka_unit_test(test_general_section_again_warns),
        cmocka_unit_test(test_databases_of_both_console_names_warn),
        cmocka_unit_test(test_syntax_errors_all_reported),
        cmocka_unit_test(test_value_errors_all_reported),
        cmocka_unit_test(test_unknown_vs_unsupported),
        cmocka_unit_test(test_pgbouncer_new_keys),
        cmocka_unit_test(test_include),
        cmocka_unit_test(test_include_errors),
        cmocka_unit_test(test_nul_byte_has_a_line),
        cmocka_unit_test(test_include_depth_limit),
        cmocka_unit_test(test_connstr),
        cmocka_unit_test(test_connstr_datestyle_timezone),
        cmocka_unit_test(test_connstr_errors),
        cmocka_unit_test(test_connstr_key_twice),
        cmocka_unit_test(test_unix_socket_dir_too_long),
        cmocka_unit_test(test_scram_iterations_bounded),
        cmocka_unit_test(test_connstr_backslashes_as_pgbouncer),
        cmocka_unit_test(test_host_items_that_do_not_fit),
        cmocka_unit_test(test_connstr_integers),
        cmocka_unit_test(test_hostaddr_is_numeric),
        cmocka_unit_test(test_fallback_db),
        cmocka_unit_test(test_users_and_inheritance),
        cmocka_unit_test(test_query_wait_timeout_per_entry),
        cmocka_unit_test(test_peers),
        cmocka_unit_test(test_fd_budget),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_print_roundtrip),
        cmocka_unit_test(test_dup),
        cmocka_unit_test(test_set_get),
        cmocka_unit_test(test_keep_fixed),
        cmocka_unit_test(test_load_over_checks_what_would_run),
        cmocka_unit_test(test_track_extra_parameters),
        cmocka_unit_test(test_list_has),
        cmocka_unit_test(test_authfile_parse),
        cmocka_unit_test(test_authfile_errors),
        cmocka_unit_test(test_real_pgbouncer_ini),
        cmocka_unit_test(test_key_lines_outlive_the_load),
        cmocka_unit_test(test_listen_and_metrics_addr_checked_at_load),
        cmocka_unit_test(test_checks_run_after_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
