/*
 * keys.c - the one table of [pgwharf] keys.  Parsing, defaults, printing,
 * admin SET/SHOW and freeing all walk this table, so a key cannot be
 * known to one and forgotten by another.  A compile-time check ties each
 * entry's kind to the C type of its struct pgw_config field.
 *
 * Also the list of PgBouncer keys accepted with a warning.
 */
#include "conf/conf_int.h"
#include "common/err.h"

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Expired passwords (rolvaliduntil) and roles without LOGIN give no secret,
 * so those logins fail as PostgreSQL's own would. */
#define PGW_AUTH_QUERY_DEFAULT                                                   \
    "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END " \
    "FROM pg_authid WHERE rolname=$1 AND rolcanlogin"

/* X(field = key name, kind, default text, lo, hi): lo/hi bound CONF_INT. */
#define PGW_CONF_KEYS(X)                                                    \
    X(listen_addr,              STR,        "127.0.0.1",   0, 0)            \
    X(listen_port,              INT,        "6432",        0, 65535)        \
    X(unix_socket_dir,          STR,        "/tmp",        0, 0)            \
    X(listen_backlog,           INT,        "128",         1, INT_MAX)      \
    X(tcp_defer_accept,         INT,        "1",           0, 3600)         \
    X(so_reuseport,             BOOL,       "off",         0, 0)            \
    X(peer_id,                  INT,        "0",           0, PGW_PEER_ID_MAX) \
    X(unix_socket_mode,         STR,        "0777",        0, 0)            \
    X(unix_socket_group,        STR,        "",            0, 0)            \
    X(tcp_keepalive,            BOOL,       "on",          0, 0)            \
    X(tcp_keepcnt,              INT,        "0",           0, 127)          \
    X(tcp_keepidle,             INT,        "0",           0, 32767)        \
    X(tcp_keepintvl,            INT,        "0",           0, 32767)        \
    X(tcp_user_timeout,         INT,        "0",           0, INT_MAX)      \
    X(tcp_socket_buffer,        INT,        "0",           0, INT_MAX)      \
    X(auth_type,                AUTH_TYPE,  "md5",         0, 0)            \
    X(auth_file,                STR,        "",            0, 0)            \
    X(auth_hba_file,            STR,        "",            0, 0)            \
    X(auth_ident_file,          STR,        "",            0, 0)            \
    X(auth_user,                STR,        "",            0, 0)            \
    X(auth_query,               STR,        PGW_AUTH_QUERY_DEFAULT, 0, 0)   \
    X(auth_dbname,              STR,        "",            0, 0)            \
    X(admin_users,              STR,        "",            0, 0)            \
    X(stats_users,              STR,        "",            0, 0)            \
    X(ignore_startup_parameters, STR,       "",            0, 0)            \
    X(track_extra_parameters,   STR,        "",            0, 0)            \
    X(application_name_add_host, BOOL,      "off",         0, 0)            \
    X(login_notify_message,     STR,        "",            0, 0)            \
    X(pool_mode,                POOL_MODE,  "session",     0, 0)            \
    X(max_client_conn,          INT,        "100",         1, INT_MAX)      \
    X(default_pool_size,        INT,        "20",          0, INT_MAX)      \
    X(min_pool_size,            INT,        "0",           0, INT_MAX)      \
    X(reserve_pool_size,        INT,        "0",           0, INT_MAX)      \
    X(reserve_pool_timeout,     DUR,        "5",           0, 0)            \
    X(max_db_connections,       INT,        "0",           0, INT_MAX)      \
    X(max_user_connections,     INT,        "0",           0, INT_MAX)      \
    X(max_db_client_connections, INT,       "0",           0, INT_MAX)      \
    X(max_user_client_connections, INT,     "0",           0, INT_MAX)      \
    X(max_prepared_statements,  INT,        "200",         0, INT_MAX)      \
    X(max_notify_backlog,       INT,        "1048576",     8192, INT_MAX)   \
    X(notify_bridge_timeout,    DUR,        "120",         0, 0)            \
    X(scram_iterations,         INT,        "4096",        1, 100000)       \
    X(scram_salt_key_file,      STR,        "",            0, 0)            \
    X(max_packet_size,          INT,        "2147483647",  16, INT_MAX)     \
    X(log_stats,                BOOL,       "on",          0, 0)            \
    X(server_lifetime,          DUR,        "3600",        0, 0)            \
    X(server_idle_timeout,      DUR,        "600",         0, 0)            \
    X(autodb_idle_timeout,      DUR,        "3600",        0, 0)            \
    X(pool_idle_timeout,        DUR,        "0",           0, 0)            \
    X(server_connect_timeout,   DUR,        "15",          0, 0)            \
    X(server_login_retry,       DUR,        "15",          0, 0)            \
    X(server_reset_query,       STR,        "DISCARD ALL", 0, 0)            \
    X(server_reset_query_always, BOOL,      "off",         0, 0)            \
    X(server_reset_session_state, BOOL,     "on",          0, 0)            \
    X(server_check_query,       STR,        "select 1",    0, 0)            \
    X(server_check_delay,       DUR,        "30",          0, 0)            \
    X(server_round_robin,       BOOL,       "off",         0, 0)            \
    X(server_fast_close,        BOOL,       "off",         0, 0)            \
    X(disable_pqexec,           BOOL,       "off",         0, 0)            \
    X(server_pipeline_depth,    INT,        "0",           0, 64)           \
    X(io_batch,                 BOOL,       "on",          0, 0)            \
    X(query_timeout,            DUR,        "0",           0, 0)            \
    X(query_wait_timeout,       DUR,        "120",         0, 0)            \
    X(query_wait_notify,        DUR,        "5",           0, 0)            \
    X(cancel_wait_timeout,      DUR,        "10",          0, 0)            \
    X(client_login_timeout,     DUR,        "60",          0, 0)            \
    X(client_idle_timeout,      DUR,        "0",           0, 0)            \
    X(idle_transaction_timeout, DUR,        "0",           0, 0)            \
    X(transaction_timeout,      DUR,        "0",           0, 0)            \
    X(logfile,                  STR,        "",            0, 0)            \
    X(pidfile,                  STR,        "",            0, 0)            \
    X(user,                     STR,        "",            0, 0)            \
    X(log_connections,          BOOL,       "on",          0, 0)            \
    X(log_disconnections,       BOOL,       "on",          0, 0)            \
    X(log_pooler_errors,        BOOL,       "on",          0, 0)            \
    X(stats_period,             DUR,        "60",          0, 0)            \
    X(log_level,                LOG_LEVEL,  "info",        0, 0)            \
    X(verbose,                  INT,        "0",           0, 10)           \
    X(syslog,                   BOOL,       "off",         0, 0)            \
    X(syslog_ident,             STR,        "pgwharf",     0, 0)            \
    X(syslog_facility,          STR,        "daemon",      0, 0)            \
    X(client_tls_sslmode,       TLS_MODE,   "disable",     0, 0)            \
    X(client_tls_key_file,      STR,        "",            0, 0)            \
    X(client_tls_cert_file,     STR,        "",            0, 0)            \
    X(client_tls_ca_file,       STR,        "",            0, 0)            \
    X(client_tls_protocols,     STR,        "secure",      0, 0)            \
    X(client_tls_ciphers,       STR,        "fast",        0, 0)            \
    X(client_tls13_ciphers,     STR,        "",            0, 0)            \
    X(client_tls_ecdhcurve,     STR,        "auto",        0, 0)            \
    X(client_tls_dheparams,     STR,        "auto",        0, 0)            \
    X(server_tls_sslmode,       TLS_MODE,   "prefer",      0, 0)            \
    X(server_tls_key_file,      STR,        "",            0, 0)            \
    X(server_tls_cert_file,     STR,        "",            0, 0)            \
    X(server_tls_ca_file,       STR,        "",            0, 0)            \
    X(server_tls_protocols,     STR,        "secure",      0, 0)            \
    X(server_tls_ciphers,       STR,        "fast",        0, 0)            \
    X(server_tls13_ciphers,     STR,        "",            0, 0)            \
    X(breaker_threshold,        INT,        "3",           1, INT_MAX)      \
    X(breaker_cooldown,         DUR,        "1",           0, 0)            \
    X(breaker_max_cooldown,     DUR,        "2",           0, 0)            \
    X(server_connect_rate,      NUM,        "0",           0, 0)            \
    X(server_connect_burst,     INT,        "0",           0, INT_MAX)      \
    X(dns_max_ttl,              DUR,        "15",          0, 0)            \
    X(dns_nxdomain_ttl,         DUR,        "15",          0, 0)            \
    X(metrics_addr,             STR,        "127.0.0.1",   0, 0)            \
    X(metrics_port,             INT,        "0",           0, 65535)        \
    X(shutdown_timeout,         DUR,        "30",          0, 0)

/* The C type each kind is stored as. */
#define CTYPE_INT int
#define CTYPE_DUR double
#define CTYPE_NUM double
#define CTYPE_BOOL bool
#define CTYPE_STR char *
#define CTYPE_LOG_LEVEL char *
#define CTYPE_POOL_MODE enum pgw_pool_mode
#define CTYPE_AUTH_TYPE enum pgw_auth_type
#define CTYPE_TLS_MODE enum pgw_tls_mode

#define KEY_TYPE_CHECK(field, kind, def, lo, hi)                                  \
    _Static_assert(__builtin_types_compatible_p(                                  \
                       __typeof__(((struct pgw_config *)0)->field), CTYPE_##kind), \
                   "struct pgw_config." #field " is not " #kind);
PGW_CONF_KEYS(KEY_TYPE_CHECK)
#undef KEY_TYPE_CHECK

#define KEY_ENTRY(field, kind, def, lo, hi) \
    { #field, CONF_##kind, offsetof(struct pgw_config, field), def, lo, hi },
static const struct conf_key keys[] = { PGW_CONF_KEYS(KEY_ENTRY) };
#undef KEY_ENTRY

#define NKEYS ((int)(sizeof(keys) / sizeof(keys[0])))

/* Genuine PgBouncer keys pgwharf does not implement: a warning, not an
 * error, so an existing pgbouncer.ini loads. */
static const char *const unsupported_keys[] = {
    "auth_ldap_options", "conffile",
    "dns_zone_check_period", "job_name", "pkt_buf",
    "resolv_conf", "sbuf_loopcnt", "service_name", "suspend_timeout",
};

/* Keys fixed at start: the listeners and the pidfile are set up once.  A
 * reload keeps their running values (PgBouncer's CF_NO_RELOAD), so SHOW
 * CONFIG never shows a value that is not in force.  peer_id too: it is in
 * the cancel key of every client logged in, and the other processes'
 * [peers] send this process the cancels of that id; a new id while those
 * clients stay would have their cancels routed by an id no peer maps here
 * any more.  track_extra_parameters too: every session holds a value per
 * tracked name, and sessions and servers compare them by position. */
static const char *const fixed_keys[] = {
    "listen_addr", "listen_port", "unix_socket_dir", "listen_backlog", "tcp_defer_accept",
    "so_reuseport", "peer_id", "unix_socket_mode", "unix_socket_group", "tcp_socket_buffer",
    "pidfile", "user", "track_extra_parameters",
};

int conf_key_count(void) { return NKEYS; }

const struct conf_key *conf_key_at(int i)
{
    return i >= 0 && i < NKEYS ? &keys[i] : NULL;
}

int conf_key_find(const char *name)
{
    for (int i = 0; i < NKEYS; i++)
        if (strcasecmp(keys[i].name, name) == 0)
            return i;
    return -1;
}

bool conf_key_unsupported(const char *name)
{
    for (size_t i = 0; i < sizeof(unsupported_keys) / sizeof(unsupported_keys[0]); i++)
        if (strcasecmp(unsupported_keys[i], name) == 0)
            return true;
    return false;
}

const char *pgw_conf_key_name(int i)
{
    return i >= 0 && i < NKEYS ? keys[i].name : NULL;
}

const char *pgw_conf_key_default(int i)
{
    return i >= 0 && i < NKEYS ? keys[i].def : NULL;
}

bool pgw_conf_key_is_bool(int i)
{
    return i >= 0 && i < NKEYS && keys[i].kind == CONF_BOOL;
}

#define FIELD(cfg, k, type) ((type *)((char *)(cfg) + (k)->offset))
#define CFIELD(cfg, k, type) ((const type *)((const char *)(cfg) + (k)->offset))

static int set_string(char **field, const char *text)
{
    char *copy = strdup(text);
    if (!copy)
        return PGW_ENOMEM;
    free(*field);
    *field = copy;
    return 0;
}

/* Enums are stored through an int parse, then assigned with their type. */
static int set_enum(struct pgw_config *cfg, const struct conf_key *k, const char *text,
                    char *err, size_t errlen)
{
    int v, rc;
    switch (k->kind) {
    case CONF_POOL_MODE:
        if ((rc = conf_parse_pool_mode(text, &v, err, errlen)) == 0)
            *FIELD(cfg, k, enum pgw_pool_mode) = (enum pgw_pool_mode)v;
        return rc;
    case CONF_AUTH_TYPE:
        if ((rc = conf_parse_auth_type(text, &v, err, errlen)) == 0)
            *FIELD(cfg, k, enum pgw_auth_type) = (enum pgw_auth_type)v;
        return rc;
    case CONF_TLS_MODE:
        if ((rc = conf_parse_tls_mode(text, &v, err, errlen)) == 0)
            *FIELD(cfg, k, enum pgw_tls_mode) = (enum pgw_tls_mode)v;
        return rc;
    default:
        return PGW_EINVAL;
    }
}

int conf_key_set(struct pgw_config *cfg, const struct conf_key *k, const char *text,
                 char *err, size_t errlen)
{
    switch (k->kind) {
    case CONF_INT:
        return conf_parse_int_c(text, k->lo, k->hi, FIELD(cfg, k, int), err, errlen);
    case CONF_DUR:
        return conf_parse_dur(text, FIELD(cfg, k, double), err, errlen);
    case CONF_NUM:
        return conf_parse_num(text, FIELD(cfg, k, double), err, errlen);
    case CONF_BOOL:
        return conf_parse_bool(text, FIELD(cfg, k, bool), err, errlen);
    case CONF_LOG_LEVEL:
        if (conf_parse_log_level(text, err, errlen) != 0)
            return PGW_ECONFIG;
        return set_string(FIELD(cfg, k, char *), text);
    case CONF_STR:
        return set_string(FIELD(cfg, k, char *), text);
    default:
        return set_enum(cfg, k, text, err, errlen);
    }
}

void conf_key_get(const struct pgw_config *cfg, const struct conf_key *k, char *buf,
                  size_t len)
{
    switch (k->kind) {
    case CONF_INT:
        snprintf(buf, len, "%d", *CFIELD(cfg, k, int));
        break;
    case CONF_DUR:
    case CONF_NUM:
        conf_format_num(buf, len, *CFIELD(cfg, k, double));
        break;
    case CONF_BOOL:
        snprintf(buf, len, "%s", *CFIELD(cfg, k, bool) ? "on" : "off");
        break;
    case CONF_STR:
    case CONF_LOG_LEVEL:
        snprintf(buf, len, "%s", *CFIELD(cfg, k, char *) ? *CFIELD(cfg, k, char *) : "");
        break;
    case CONF_POOL_MODE:
        snprintf(buf, len, "%s", pgw_pool_mode_name(*CFIELD(cfg, k, enum pgw_pool_mode)));
        break;
    case CONF_AUTH_TYPE:
        snprintf(buf, len, "%s", pgw_auth_type_name(*CFIELD(cfg, k, enum pgw_auth_type)));
        break;
    case CONF_TLS_MODE:
        snprintf(buf, len, "%s", pgw_tls_mode_name(*CFIELD(cfg, k, enum pgw_tls_mode)));
        break;
    }
}

const char *conf_key_string(const struct pgw_config *cfg, const struct conf_key *k)
{
    if (k->kind != CONF_STR && k->kind != CONF_LOG_LEVEL)
        return NULL;
    return *CFIELD(cfg, k, char *) ? *CFIELD(cfg, k, char *) : "";
}

void conf_keys_free(struct pgw_config *cfg)
{
    for (int i = 0; i < NKEYS; i++) {
        if (keys[i].kind == CONF_STR || keys[i].kind == CONF_LOG_LEVEL) {
            char **field = FIELD(cfg, &keys[i], char *);
            free(*field);
            *field = NULL;
        }
    }
}

int conf_keys_dup(struct pgw_config *dst, const struct pgw_config *src)
{
    for (int i = 0; i < NKEYS; i++)
        if (keys[i].kind == CONF_STR || keys[i].kind == CONF_LOG_LEVEL)
            *FIELD(dst, &keys[i], char *) = NULL;
    for (int i = 0; i < NKEYS; i++)
        if ((keys[i].kind == CONF_STR || keys[i].kind == CONF_LOG_LEVEL) &&
            conf_dup_str(FIELD(dst, &keys[i], char *), *CFIELD(src, &keys[i], char *)) != 0)
            return PGW_ENOMEM;
    return 0;
}

struct pgw_config *pgw_conf_defaults(void)
{
    struct pgw_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    char err[CONF_ERRLEN];
    for (int i = 0; i < NKEYS; i++) {
        if (conf_key_set(cfg, &keys[i], keys[i].def, err, sizeof(err)) != 0) {
            pgw_conf_free(cfg);
            return NULL;
        }
    }
    cfg->file = strdup("");
    if (!cfg->file) {
        pgw_conf_free(cfg);
        return NULL;
    }
    return cfg;
}

int pgw_conf_set(struct pgw_config *cfg, const char *key, const char *value,
                 char *errbuf, size_t errlen)
{
    char err[CONF_ERRLEN] = "", dummy[1];
    int i = conf_key_find(key);
    int rc = PGW_ECONFIG;
    if (!errbuf || !errlen) {
        errbuf = dummy;
        errlen = sizeof(dummy);
    }
    if (!value)
        value = "";
    if (i < 0 && conf_key_unsupported(key))
        snprintf(errbuf, errlen, "%s: not supported yet", key);
    else if (i < 0)
        snprintf(errbuf, errlen, "unknown key \"%s\"", key);
    else if (strpbrk(value, "\r\n"))
        snprintf(errbuf, errlen, "%s: the value must be on one line", keys[i].name);
    else if ((rc = conf_key_set(cfg, &keys[i], value, err, sizeof(err))) == PGW_ECONFIG)
        snprintf(errbuf, errlen, "%s: %s", keys[i].name, err);
    else if (rc == PGW_ENOMEM)
        snprintf(errbuf, errlen, "out of memory");
    else
        errbuf[0] = '\0';
    if (rc == 0 && cfg->origins) {      /* set by SET now, not by a line */
        free(cfg->origins[i].file);
        cfg->origins[i].file = NULL;
    }
    return rc;
}

bool pgw_conf_key_fixed(const char *key)
{
    for (size_t i = 0; i < sizeof(fixed_keys) / sizeof(fixed_keys[0]); i++)
        if (strcasecmp(fixed_keys[i], key) == 0)
            return true;
    return false;
}

/* Whether key k holds the same value in a and b. */
static bool key_same(const struct pgw_config *a, const struct pgw_config *b,
                     const struct conf_key *k)
{
    const char *sa = conf_key_string(a, k), *sb = conf_key_string(b, k);
    if (sa || sb)
        return sa && sb && strcmp(sa, sb) == 0;
    char va[64], vb[64];
    conf_key_get(a, k, va, sizeof(va));
    conf_key_get(b, k, vb, sizeof(vb));
    return strcmp(va, vb) == 0;
}

/* Copy key k from src into dst, strings duplicated.  0 or PGW_ENOMEM. */
static int key_copy(struct pgw_config *dst, const struct pgw_config *src,
                    const struct conf_key *k)
{
    switch (k->kind) {
    case CONF_STR:
    case CONF_LOG_LEVEL:
        return set_string(FIELD(dst, k, char *), conf_key_string(src, k));
    case CONF_INT:
        *FIELD(dst, k, int) = *CFIELD(src, k, int);
        return 0;
    case CONF_DUR:
    case CONF_NUM:
        *FIELD(dst, k, double) = *CFIELD(src, k, double);
        return 0;
    case CONF_BOOL:
        *FIELD(dst, k, bool) = *CFIELD(src, k, bool);
        return 0;
    case CONF_POOL_MODE:
        *FIELD(dst, k, enum pgw_pool_mode) = *CFIELD(src, k, enum pgw_pool_mode);
        return 0;
    case CONF_AUTH_TYPE:
        *FIELD(dst, k, enum pgw_auth_type) = *CFIELD(src, k, enum pgw_auth_type);
        return 0;
    case CONF_TLS_MODE:
        *FIELD(dst, k, enum pgw_tls_mode) = *CFIELD(src, k, enum pgw_tls_mode);
        return 0;
    }
    return PGW_EINVAL;
}

int pgw_conf_keep_fixed(struct pgw_config *cfg, const struct pgw_config *running,
                        pgw_conf_changed_fn changed, void *arg)
{
    char was[256], now[256];
    for (int i = 0; i < NKEYS; i++) {
        const struct conf_key *k = &keys[i];
        if (!pgw_conf_key_fixed(k->name) || key_same(cfg, running, k))
            continue;
        conf_key_get(running, k, was, sizeof(was));
        conf_key_get(cfg, k, now, sizeof(now));
        if (key_copy(cfg, running, k) != 0)
            return PGW_ENOMEM;
        if (changed)
            changed(k->name, was, now, arg);
    }
    return 0;
}

bool pgw_conf_get(const struct pgw_config *cfg, const char *key, char *buf, size_t len)
{
    int i = conf_key_find(key);
    if (i < 0)
        return false;
    if (buf && len)
        conf_key_get(cfg, &keys[i], buf, len);
    return true;
}

char *pgw_conf_get_dup(const struct pgw_config *cfg, const char *key)
{
    int i = conf_key_find(key);
    if (i < 0)
        return NULL;
    const char *str = conf_key_string(cfg, &keys[i]);
    if (str)
        return strdup(str);
    char buf[64];                        /* numbers, booleans and enum names */
    conf_key_get(cfg, &keys[i], buf, sizeof(buf));
    return strdup(buf);
}
