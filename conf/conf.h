/*
 * conf.h - pgwharf's configuration: an INI file laid out like pgbouncer.ini.
 *
 * Sections: [pgwharf] (or [pgbouncer]) for general settings, [databases]
 * (name = connection string, "*" as the fallback entry), [users]
 * (name = per-user settings), [peers] (id = address of another process
 * sharing the port, for cancels).  `%include FILE` pulls in another file
 * (relative to the including file).  Durations take seconds with fractions
 * or units: 250ms, 5s, 2min, 1h, 1d.  Sizes take plain numbers.
 *
 * Errors and warnings name the place: "pgwharf.ini:12: default_pool_size:
 * expected a positive integer, got \"-3\"".  An unknown key is an error; a
 * PgBouncer key pgwharf does not implement yet is a warning, so a real
 * pgbouncer.ini loads.
 *
 * A loaded struct pgw_config is immutable; reload builds a new one.
 */
#ifndef PGW_CONF_CONF_H
#define PGW_CONF_CONF_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

enum pgw_pool_mode {
    PGW_POOL_SESSION,
    PGW_POOL_TRANSACTION,
    PGW_POOL_STATEMENT
};

/* load_balance_hosts: how a database entry's host list is used. */
enum pgw_load_balance {
    PGW_LB_ROUND_ROBIN,      /* each connection attempt takes the next host */
    PGW_LB_DISABLE           /* the same host until a connection to it fails */
};

/* target_session_attrs: libpq's values (14+), checked per host (pool/). */
enum pgw_target_session {
    PGW_TSA_ANY,
    PGW_TSA_READ_WRITE,      /* default_transaction_read_only off, not a standby */
    PGW_TSA_READ_ONLY,       /* either of those on */
    PGW_TSA_PRIMARY,         /* not in hot standby */
    PGW_TSA_STANDBY,         /* in hot standby */
    PGW_TSA_PREFER_STANDBY   /* a standby if the list has one up, else any host */
};

enum pgw_auth_type {
    PGW_AUTH_TRUST,
    PGW_AUTH_ANY,            /* like trust, but ignores the user name */
    PGW_AUTH_PLAIN,          /* cleartext password */
    PGW_AUTH_MD5,
    PGW_AUTH_SCRAM,          /* scram-sha-256 */
    PGW_AUTH_CERT,
    PGW_AUTH_HBA
};

enum pgw_tls_mode {
    PGW_TLS_DISABLE,
    PGW_TLS_ALLOW,
    PGW_TLS_PREFER,
    PGW_TLS_REQUIRE,
    PGW_TLS_VERIFY_CA,
    PGW_TLS_VERIFY_FULL
};

const char *pgw_pool_mode_name(enum pgw_pool_mode m);
const char *pgw_auth_type_name(enum pgw_auth_type t);
const char *pgw_load_balance_name(enum pgw_load_balance m);
const char *pgw_target_session_name(enum pgw_target_session t);
const char *pgw_tls_mode_name(enum pgw_tls_mode m);

/* One [databases] entry.  Fields the entry does not set are -1 (numbers)
 * or NULL (strings) and inherit the general settings; use the
 * "effective values" functions below (pgw_conf_pool_size, ...).
 * PgBouncer's datestyle= and timezone= keys are turned into libpq's
 * options ("-c DateStyle=... -c TimeZone=..."), after any options= given.
 * dbname defaults to the entry's name, except for "*" (where NULL means
 * "the name the client asked for").  The libpq keyword list is static
 * (conf does not link libpq) and includes keys of libpq 16-18: an older
 * libpq rejects those at connect time. */
/* The longest item of a host list (a host name or socket directory) and of
 * a hostaddr list: the pools keep each in a buffer of this size plus one
 * (pool/hosts.h), and a longer one is a config error. */
#define PGW_CONF_HOST_MAX 255
#define PGW_CONF_HOSTADDR_MAX 63
struct pgw_conf_db {
    char *name;              /* database name clients ask for; "*" = fallback */
    /* libpq connection keywords for the server (host, port, dbname, user,
     * password, sslmode, ...), NULL-terminated, ready for
     * PQconnectStartParams.  Pool keys below are not in here. */
    char **conn_keys;
    char **conn_vals;
    int nconn;
    /* Convenience pointers into conn_vals (NULL when not given). */
    const char *host, *port, *dbname, *user, *password;
    int pool_size;
    int min_pool_size;
    int reserve_pool_size;
    int max_db_connections;
    int max_db_client_connections;
    double server_lifetime;  /* < 0 = the general one */
    double query_wait_timeout; /* < 0 = the user's, else the general one */
    int pool_mode;           /* enum pgw_pool_mode, or -1 */
    int load_balance_hosts;  /* enum pgw_load_balance, or -1 (round-robin) */
    /* enum pgw_target_session, or -1 (any); also in conn_vals (its
     * canonical name) for libpq */
    int target_session_attrs;
    char *auth_user;
    char *auth_dbname;       /* NULL or "": the general one */
    char *auth_query;        /* NULL or "": the general one */
    char *connect_query;
    char *file;              /* where it was defined */
    int line;
};

/* One [users] entry. */
struct pgw_conf_user {
    char *name;
    int pool_mode;           /* -1 = inherit */
    int pool_size;
    int max_user_connections;
    int max_user_client_connections;
    int reserve_pool_size;   /* -1 = the database entry's, else the general one */
    double query_timeout;    /* < 0 = inherit */
    double idle_transaction_timeout;
    double transaction_timeout;
    double client_idle_timeout;
    double query_wait_timeout; /* < 0 = the database entry's, else the general one */
    char *file;
    int line;
};

/* Peer ids are 1..PGW_PEER_ID_MAX (PgBouncer's range); peer_id 0 is off. */
#define PGW_PEER_ID_MAX 16383

/* One [peers] entry: another process of a group sharing one port
 * (so_reuseport), as PgBouncer's peering.  A CancelRequest whose key names
 * this id (its low 16 bits, see peer_id) and that is not for a client of
 * this process is passed on to `addr` unchanged.  The section may list
 * the process's own id too (one [peers] for the whole group): that entry
 * is never used. */
struct pgw_conf_peer {
    int id;                  /* 1..16383 */
    char *host;              /* an IP address, or a Unix socket directory */
    int port;                /* 6432 */
    int pool_size;           /* PgBouncer's; accepted and unused; -1 = not given */
    /* host and port resolved at load (no names: nothing to resolve on the
     * loop): a TCP address, or <host>/.s.PGSQL.<port> */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *file;
    int line;
};

/* listen_addr's separators: commas and any white space around them (a
 * tab after a comma too, as PgBouncer and the user lists read theirs). */
#define PGW_CONF_LISTEN_SEP ", \t\r\n\v\f"

/* Where a general key was set. */
struct pgw_conf_origin {
    char *file;              /* NULL: key left at its default (or changed by SET) */
    int line;
};

/* General settings.  String fields are never NULL: "" means unset. */
struct pgw_config {
    char *file;              /* path of the main file */
    /* One per general key (NULL for pgw_conf_defaults): the line that set
     * it, for errors found after loading (TLS files, auth_file). */
    struct pgw_conf_origin *origins;

    /* listening */
    char *listen_addr;       /* comma-separated; "*" = all IPv4/IPv6; default "127.0.0.1" */
    int listen_port;         /* 6432 */
    char *unix_socket_dir;   /* "" = off; default "/tmp" */
    int listen_backlog;      /* 128 */
    int tcp_defer_accept;    /* 1 s; 0 = accept at once (TCP_DEFER_ACCEPT) */
    bool so_reuseport;       /* false: SO_REUSEPORT on the TCP listeners */
    int peer_id;             /* 0 = off; 1..16383: this process's id among its
                              * [peers], in the low 16 bits of its cancel keys */
    char *unix_socket_mode;  /* "0777": octal permissions of the Unix socket */
    char *unix_socket_group; /* "": group of the Unix socket (name or number) */

    /* TCP tuning of client and server sockets; 0 = the kernel's default */
    bool tcp_keepalive;      /* true: SO_KEEPALIVE */
    int tcp_keepcnt;         /* TCP_KEEPCNT */
    int tcp_keepidle;        /* TCP_KEEPIDLE, seconds */
    int tcp_keepintvl;       /* TCP_KEEPINTVL, seconds */
    int tcp_user_timeout;    /* TCP_USER_TIMEOUT, milliseconds */
    int tcp_socket_buffer;   /* SO_SNDBUF and SO_RCVBUF, bytes */

    /* authentication */
    enum pgw_auth_type auth_type;   /* md5 */
    char *auth_file;
    char *auth_hba_file;
    char *auth_ident_file;   /* "": user name maps (map= of peer and cert rules) */
    char *auth_user;
    char *auth_query;        /* PgBouncer's default query */
    char *auth_dbname;
    char *admin_users;       /* comma-separated */
    char *stats_users;
    char *ignore_startup_parameters;    /* comma-separated; "" */
    char *track_extra_parameters;       /* comma-separated; "" (fixed at start) */
    bool application_name_add_host;     /* false */
    char *login_notify_message;  /* "": a NOTICE in every pool login's welcome */

    /* pooling */
    enum pgw_pool_mode pool_mode;   /* session */
    int max_client_conn;     /* 100 */
    int default_pool_size;   /* 20 */
    int min_pool_size;       /* 0 */
    int reserve_pool_size;   /* 0 */
    double reserve_pool_timeout;    /* 5 s */
    int max_db_connections;  /* 0 = unlimited */
    int max_user_connections;       /* 0 = unlimited */
    int max_db_client_connections;  /* clients per database; 0 = unlimited */
    int max_user_client_connections;    /* clients per user; 0 = unlimited */
    int max_prepared_statements;    /* 200; 0 = pass-through */
    int max_notify_backlog;         /* bytes of notifications waiting for one client
                                       (transaction/statement mode): past it, FATAL 54000 */
    double notify_bridge_timeout;   /* 120 s: longest life of a LISTEN bridge
                                       (proxy/notify_bridge.c); 0 = no bridges */
    int scram_iterations;           /* 4096: verifiers made from plaintext secrets */
    char *scram_salt_key_file;      /* key of the salts of users without a verifier */
    int max_packet_size;            /* largest protocol message relayed, either way */
    bool log_stats;                 /* true: the event=stats line every stats_period */

    /* server connections */
    double server_lifetime;         /* 3600 s */
    double server_idle_timeout;     /* 600 s */
    double autodb_idle_timeout;     /* 3600 s: free unused pools of the "*" entry */
    double pool_idle_timeout;       /* 0 = off: free any pool without clients and servers */
    double server_connect_timeout;  /* 15 s */
    double server_login_retry;      /* 15 s */
    char *server_reset_query;       /* "DISCARD ALL" */
    bool server_reset_query_always; /* false */
    bool server_reset_session_state; /* true: CLOSE ALL / DISCARD TEMP after a transaction
                                      * that may leave a WITH HOLD cursor or a
                                      * temporary object (transaction/statement mode) */
    char *server_check_query;       /* "select 1" */
    double server_check_delay;      /* 30 s */
    bool server_round_robin;        /* false */
    bool server_fast_close;         /* false: session mode ends sessions on servers due to close */
    bool disable_pqexec;            /* false: a client Query (simple protocol) ends the client */
    int server_pipeline_depth;      /* 0 = off: clients queued behind a busy server's query */
    bool io_batch;                  /* true: relay writes sent per loop iteration */

    /* client timeouts; 0 = off */
    double query_timeout;
    double query_wait_timeout;      /* 120 s */
    double query_wait_notify;       /* 5 s: a NOTICE to a client queued that long; 0 = none */
    double dns_max_ttl;             /* 15 s: how long a resolved host name is used */
    double dns_nxdomain_ttl;        /* 15 s: how long a failed lookup stands; 0 = not kept */
    double cancel_wait_timeout;     /* 10 s: a forwarded cancel's deadline */
    double client_login_timeout;    /* 60 s */
    double client_idle_timeout;
    double idle_transaction_timeout;
    double transaction_timeout;     /* from a transaction's first query */

    /* logging */
    char *logfile;
    char *pidfile;
    char *user;              /* "": stay; else the Unix user to become after start (as root) */
    int verbose;             /* 0; > 0: log at debug, as PgBouncer's -v */
    bool syslog;             /* false: lines to syslog(3) too */
    char *syslog_ident;      /* "pgwharf" */
    char *syslog_facility;   /* "daemon" */
    bool log_connections;           /* true */
    bool log_disconnections;        /* true */
    bool log_pooler_errors;         /* true */
    double stats_period;            /* 60 s */
    char *log_level;                /* "info" (ours) */

    /* TLS to clients */
    enum pgw_tls_mode client_tls_sslmode;   /* disable */
    char *client_tls_key_file, *client_tls_cert_file, *client_tls_ca_file;
    char *client_tls_protocols;     /* "secure" */
    char *client_tls_ciphers;       /* "fast" */
    char *client_tls13_ciphers;     /* "": OpenSSL's TLS 1.3 suites */
    char *client_tls_ecdhcurve;     /* "auto" */
    char *client_tls_dheparams;     /* "auto" */
    /* TLS to servers */
    enum pgw_tls_mode server_tls_sslmode;   /* prefer */
    char *server_tls_key_file, *server_tls_cert_file, *server_tls_ca_file;
    char *server_tls_protocols;
    char *server_tls_ciphers;
    char *server_tls13_ciphers;     /* no effect: libpq has no cipher setting */

    /* ours: circuit breaker, connect rate, metrics, shutdown */
    int breaker_threshold;          /* 3 */
    double breaker_cooldown;        /* 1 s */
    double breaker_max_cooldown;    /* 30 s */
    double server_connect_rate;     /* per second per backend; 0 = unlimited */
    int server_connect_burst;       /* 0 = same as rate, at least 1 */
    char *metrics_addr;             /* "127.0.0.1" */
    int metrics_port;               /* 0 = off */
    double shutdown_timeout;        /* 30 s */

    struct pgw_conf_db *dbs;
    int ndbs;
    int *db_slots;                  /* dbs by name: indexes, -1 free (lookup.c); NULL
                                       when memory was short (then looked through) */
    size_t db_nslots;
    struct pgw_conf_user *users;
    int nusers;
    struct pgw_conf_peer *peers;
    int npeers;
};

/* Messages gathered while loading: each a full "file:line: text" line.
 * Zero it before the first use; loaders append to it. */
struct pgw_conf_diag {
    char **errors;
    int nerrors;
    char **warnings;
    int nwarnings;
};

/* Load and validate.  Returns 0 and sets *out, or PGW_ECONFIG with every
 * problem listed in diag (and *out NULL).  Warnings are listed either way.
 * diag may be NULL.  Checks across keys (auth_type needs auth_file, ...)
 * run once every line has parsed without error. */
int pgw_conf_load(const char *path, struct pgw_config **out, struct pgw_conf_diag *diag);
/* Load from a string (for tests); `name` stands for the file in messages;
 * %include paths are relative to the current directory. */
int pgw_conf_load_string(const char *name, const char *text, struct pgw_config **out,
                         struct pgw_conf_diag *diag);
/* The checks across keys pgw_conf_load runs, on a config changed since
 * (the admin console's SET): 0 or PGW_ECONFIG with the messages in diag. */
int pgw_conf_validate(struct pgw_config *cfg, struct pgw_conf_diag *diag);
void pgw_conf_free(struct pgw_config *cfg);
/* "file:line" of the line that set general key `key` into buf, or the
 * main file's name (or "config") when the key kept its default. */
const char *pgw_conf_where(const struct pgw_config *cfg, const char *key, char *buf,
                           size_t len);
/* A start-up error in err becomes "where: label: err" (or "where: err"
 * without a label_fmt), where is pgw_conf_where's for key (none without a
 * cfg): the one way a message names the config line it came from. */
void pgw_conf_locate(const struct pgw_config *cfg, const char *key, char *err, size_t errlen,
                     const char *label_fmt, ...) __attribute__((format(printf, 5, 6)));
/* Errors found after loading about a file a key names (auth_file...): the
 * messages of diag from index `from` on that begin with "path: " (no line
 * inside the file: it could not be opened or read) become
 * "where: key \"path\": ...", naming the config line that set the key. */
void pgw_conf_diag_locate(struct pgw_conf_diag *diag, int from, const struct pgw_config *cfg,
                          const char *key, const char *path);
void pgw_conf_diag_free(struct pgw_conf_diag *diag);

/* A config with every default and no databases. */
struct pgw_config *pgw_conf_defaults(void);

/* Print the effective settings as `key = value` lines, [pgwharf] first, then
 * [databases], [users] and [peers]: what `pgwharf --check` shows.  Passwords
 * are masked. */
void pgw_conf_print(FILE *f, const struct pgw_config *cfg);

/* Set one [pgwharf] key as the file would (admin SET).  Returns 0 or
 * PGW_ECONFIG with a message in errbuf. */
int pgw_conf_set(struct pgw_config *cfg, const char *key, const char *value,
                 char *errbuf, size_t errlen);
/* The current value of a general key as text (admin SHOW CONFIG); returns
 * false for an unknown key.  Iterate all keys with pgw_conf_key_name(i)
 * until it returns NULL.  Booleans read "on"/"off", durations plain
 * seconds; a value longer than len is truncated. */
bool pgw_conf_get(const struct pgw_config *cfg, const char *key, char *buf, size_t len);
/* The same text whole, malloc'd (the caller frees it); NULL for an unknown
 * key or when memory is short. */
char *pgw_conf_get_dup(const struct pgw_config *cfg, const char *key);
/* Keys fixed at start (listen_addr, listen_port, unix_socket_dir,
 * listen_backlog, tcp_defer_accept, so_reuseport, peer_id, unix_socket_mode,
 * unix_socket_group, tcp_socket_buffer, pidfile, user): SET refuses them, a
 * reload keeps them. */
bool pgw_conf_key_fixed(const char *key);
/* The log level to run at (enum pgw_log_level): debug when verbose > 0 (as
 * PgBouncer's -v), else log_level's; -1 when neither says. */
int pgw_conf_log_level(const struct pgw_config *cfg);
/* unix_socket_mode as a number, or -1 when it is not octal 0000-0777. */
int pgw_conf_unix_socket_mode(const struct pgw_config *cfg);
/* unix_socket_group's group id into *gid: 1, or 0 when none is set, -1
 * when no group has that name. */
int pgw_conf_unix_socket_gid(const struct pgw_config *cfg, gid_t *gid);
/* For a reload: give cfg the running values of the fixed keys, as PgBouncer
 * does, calling changed (may be NULL) for each one the file changed (values
 * as SHOW CONFIG writes them).  0 or PGW_ENOMEM. */
typedef void (*pgw_conf_changed_fn)(const char *key, const char *was, const char *now,
                                    void *arg);
int pgw_conf_keep_fixed(struct pgw_config *cfg, const struct pgw_config *running,
                        pgw_conf_changed_fn changed, void *arg);
/* For a reload: pgw_conf_load of file `name` (or of text standing for it),
 * where the fixed keys take running's values (pgw_conf_keep_fixed, before
 * the checks across keys): those checks then see the config that would
 * run, and refuse at its lines a file that holds only with values a reload
 * cannot change (a [peers] entry at this process's own socket under the
 * running peer_id), as a start would refuse it. */
int pgw_conf_load_over(const char *name, const char *text, const struct pgw_config *running,
                       pgw_conf_changed_fn changed, void *arg, struct pgw_config **out,
                       struct pgw_conf_diag *diag);
/* A deep copy of cfg, every string and entry its own (the admin console's
 * SET changes one key of the running config's copy); NULL when memory is
 * short. */
struct pgw_config *pgw_conf_dup(const struct pgw_config *cfg);
const char *pgw_conf_key_name(int i);
const char *pgw_conf_key_default(int i);
/* Is key i a boolean (written "on"/"off" by pgw_conf_get)? */
bool pgw_conf_key_is_bool(int i);

/* The entry for a database name: exact match, else "*", else NULL. */
const struct pgw_conf_db *pgw_conf_find_db(const struct pgw_config *cfg, const char *name);
const struct pgw_conf_user *pgw_conf_find_user(const struct pgw_config *cfg, const char *name);
/* The [peers] entry for id, or NULL. */
const struct pgw_conf_peer *pgw_conf_find_peer(const struct pgw_config *cfg, int id);

/* Effective values for a (database, user) pair, resolving inheritance:
 * user entry, then database entry, then general setting. */
enum pgw_pool_mode pgw_conf_pool_mode(const struct pgw_config *cfg,
                                      const struct pgw_conf_db *db,
                                      const struct pgw_conf_user *user);
int pgw_conf_pool_size(const struct pgw_config *cfg, const struct pgw_conf_db *db,
                       const struct pgw_conf_user *user);
/* The same for the other inherited settings (db and user may be NULL);
 * pgw_conf_auth_user returns NULL when neither sets one. */
int pgw_conf_min_pool_size(const struct pgw_config *cfg, const struct pgw_conf_db *db);
/* The [users] entry's (PgBouncer 1.24), else the database entry's, else
 * the general reserve_pool_size; user may be NULL. */
int pgw_conf_reserve_pool_size(const struct pgw_config *cfg, const struct pgw_conf_db *db,
                               const struct pgw_conf_user *user);
int pgw_conf_max_db_connections(const struct pgw_config *cfg, const struct pgw_conf_db *db);
double pgw_conf_server_lifetime(const struct pgw_config *cfg, const struct pgw_conf_db *db);
/* Client limits (PgBouncer 1.24): the entry's own value, else the general
 * key; 0 = unlimited.  db or user may be NULL. */
int pgw_conf_max_db_client_connections(const struct pgw_config *cfg,
                                       const struct pgw_conf_db *db);
int pgw_conf_max_user_client_connections(const struct pgw_config *cfg,
                                         const struct pgw_conf_user *user);
const char *pgw_conf_auth_user(const struct pgw_config *cfg, const struct pgw_conf_db *db);
/* auth_dbname and auth_query: the database entry's, else the general
 * ones.  auth_dbname is NULL when neither is set (the client's database
 * is used); auth_query is never NULL ("" = none). */
const char *pgw_conf_auth_dbname(const struct pgw_config *cfg, const struct pgw_conf_db *db);
const char *pgw_conf_auth_query(const struct pgw_config *cfg, const struct pgw_conf_db *db);
int pgw_conf_max_user_connections(const struct pgw_config *cfg,
                                  const struct pgw_conf_user *user);
double pgw_conf_query_timeout(const struct pgw_config *cfg, const struct pgw_conf_user *user);
double pgw_conf_idle_transaction_timeout(const struct pgw_config *cfg,
                                         const struct pgw_conf_user *user);
double pgw_conf_transaction_timeout(const struct pgw_config *cfg,
                                         const struct pgw_conf_user *user);
double pgw_conf_client_idle_timeout(const struct pgw_config *cfg,
                                    const struct pgw_conf_user *user);
/* A pool's query_wait_timeout: the [users] entry's, else the [databases]
 * entry's, else the general one (PgBouncer 1.25). */
double pgw_conf_query_wait_timeout(const struct pgw_config *cfg, const struct pgw_conf_db *db,
                                   const struct pgw_conf_user *user);

/* Open files.  pgw_conf_server_fds: the server connections of one full
 * pool per [databases] entry -- pool_size (or the largest [users]
 * pool_size) plus reserve_pool_size, capped by max_db_connections.  More
 * users per database mean more pools; those are not counted.
 * pgw_conf_fd_reserve: descriptors kept aside under a limit of `nofile`
 * besides the servers': PGW_FD_FIXED for cancel links in flight
 * (PGW_FD_CANCEL_LINKS of them, and what the rest leaves: past that a
 * cancel fails rather than take a descriptor promised to others),
 * metrics connections (32), listeners, the log and the loop; the rest for
 * logins past the client cap that still get to read a first packet.
 * pgw_conf_client_cap: the clients that fit under `nofile` with those kept
 * aside (servers at most half of it), never fewer than a quarter of it,
 * at most max_client_conn. */
#define PGW_FD_FIXED 80
#define PGW_FD_CANCEL_LINKS 32
#define PGW_FD_RESERVE_MAX 160
int pgw_conf_server_fds(const struct pgw_config *cfg);
long long pgw_conf_fd_reserve(long long nofile);
int pgw_conf_client_cap(const struct pgw_config *cfg, long long nofile);

/* Durations: parse "250ms", "5s", "2min", "1.5", "1h", "1d" into seconds.
 * Returns 0 or PGW_EINVAL. */
int pgw_conf_parse_duration(const char *text, double *seconds);
/* Is name in a comma- or space-separated list (admin_users, stats_users)? */
bool pgw_conf_list_has(const char *list, const char *name);
/* track_extra_parameters: at most PGW_CONF_TRACK_EXTRA_MAX names, each a
 * parameter name PostgreSQL would take unquoted (a letter or '_', then
 * letters, digits, '_' and '$'; parts joined by '.' for an extension's) of
 * at most PGW_CONF_PARAM_NAME_MAX bytes.  Into names, lower-cased as
 * PostgreSQL folds them, each once.  Returns how many, or -1 with err
 * saying what is wrong. */
#define PGW_CONF_TRACK_EXTRA_MAX 16
#define PGW_CONF_PARAM_NAME_MAX 47
int pgw_conf_track_extra(const char *list,
                         char names[][PGW_CONF_PARAM_NAME_MAX + 1], char *err, size_t errlen);

/*
 * auth_file in PgBouncer's format: one `"user" "secret"` per line; the
 * secret is plaintext, "md5<32 hex>" or "SCRAM-SHA-256$...".  Lines starting
 * with ';' or '#' and blank lines are skipped; `""` inside quotes is a quote.
 */
struct pgw_auth_entry {
    char *user;
    char *secret;
};
struct pgw_auth_file {
    struct pgw_auth_entry *entries;
    int n;
    int nsecret;                 /* entries with a non-empty secret */
    int nscram;                  /* of those, SCRAM verifiers */
};
int pgw_authfile_load(const char *path, struct pgw_auth_file **out, struct pgw_conf_diag *diag);
int pgw_authfile_parse(const char *name, const char *text, struct pgw_auth_file **out,
                       struct pgw_conf_diag *diag);
const char *pgw_authfile_lookup(const struct pgw_auth_file *af, const char *user);
void pgw_authfile_free(struct pgw_auth_file *af);

#endif
