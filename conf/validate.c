/*
 * validate.c - checks that span several keys (and the single-key ones that
 * need the whole config), run once every file has been read.  Each check
 * runs when every key it reads parsed (PARSED), so a file with errors gets
 * all of them at once, and none from the default of a key whose line
 * failed.  Each error names the line of the key that decides it (or just
 * the main file when that key kept its default).
 */
#include "conf/conf_int.h"

#include "common/err.h"
#include "common/log.h"
#include "common/names.h"
#include "common/netaddr.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <grp.h>
#include <sys/un.h>
#include <unistd.h>

/* Report at the line where general key `name` was set; when it kept its
 * default, at the line of `other` (the key it clashes with: a check
 * between two keys, only one of them in the file), else the main file. */
static void vkey_report(struct conf_loader *ld, bool warn, const char *name, const char *other,
                        const char *fmt, va_list ap)
{
    char text[512];
    vsnprintf(text, sizeof(text), fmt, ap);
    const char *names[2] = { name, other };
    const char *file = ld->cfg->file;
    int line = 0;
    for (int k = 0; k < 2 && names[k]; k++) {
        int i = conf_key_find(names[k]);
        const struct pgw_conf_origin *o = i >= 0 && ld->origins ? &ld->origins[i] : NULL;
        if (o && o->file) {
            file = o->file;
            line = o->line;
            break;
        }
    }
    if (warn)
        conf_warn(&ld->rep, file, line, "%s", text);
    else
        conf_error(&ld->rep, file, line, "%s", text);
}

static void vkey_error(struct conf_loader *ld, const char *name, const char *other,
                       const char *fmt, va_list ap)
{
    vkey_report(ld, false, name, other, fmt, ap);
}

static void key_error(struct conf_loader *ld, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void key_error(struct conf_loader *ld, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vkey_error(ld, name, NULL, fmt, ap);
    va_end(ap);
}

static void keys_error(struct conf_loader *ld, const char *name, const char *other,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void keys_error(struct conf_loader *ld, const char *name, const char *other,
                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vkey_error(ld, name, other, fmt, ap);
    va_end(ap);
}

static void keys_warn(struct conf_loader *ld, const char *name, const char *other,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void keys_warn(struct conf_loader *ld, const char *name, const char *other,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vkey_report(ld, true, name, other, fmt, ap);
    va_end(ap);
}

/* Did every general key named (a NULL-ended list) parse?  A key whose line
 * failed holds its default, which no check may report. */
static bool keys_parsed(const struct conf_loader *ld, ...)
{
    bool ok = true;
    va_list ap;
    va_start(ap, ld);
    for (const char *name; (name = va_arg(ap, const char *)) != NULL;) {
        int i = conf_key_find(name);
        if (ld->failed && i >= 0 && ld->failed[i])
            ok = false;
    }
    va_end(ap);
    return ok;
}

#define PARSED(ld, ...) keys_parsed((ld), __VA_ARGS__, (const char *)NULL)

static bool any_auth_user(const struct pgw_config *cfg)
{
    if (*cfg->auth_user)
        return true;
    for (int i = 0; i < cfg->ndbs; i++)
        if (cfg->dbs[i].auth_user && *cfg->dbs[i].auth_user)
            return true;
    return false;
}

static void check_auth(struct conf_loader *ld)
{
    const struct pgw_config *cfg = ld->cfg;
    const char *type = pgw_auth_type_name(cfg->auth_type);
    bool needs_secrets = cfg->auth_type == PGW_AUTH_PLAIN || cfg->auth_type == PGW_AUTH_MD5 ||
                         cfg->auth_type == PGW_AUTH_SCRAM;
    /* an entry whose line failed may have had its auth_user */
    if (needs_secrets && !*cfg->auth_file && !any_auth_user(cfg) && !ld->lists_failed &&
        PARSED(ld, "auth_type", "auth_file", "auth_user"))
        keys_error(ld, "auth_type", "auth_file",
                   "auth_type %s needs auth_file, or auth_user to look passwords up with "
                   "auth_query", type);
    if (any_auth_user(cfg) && !*cfg->auth_query && PARSED(ld, "auth_user", "auth_query"))
        key_error(ld, "auth_query", "auth_query: must not be empty when auth_user is set");
    if (cfg->auth_type == PGW_AUTH_HBA && !*cfg->auth_hba_file &&
        PARSED(ld, "auth_type", "auth_hba_file"))
        keys_error(ld, "auth_type", "auth_hba_file", "auth_type hba needs auth_hba_file");
    if (cfg->auth_type == PGW_AUTH_CERT && cfg->client_tls_sslmode == PGW_TLS_DISABLE &&
        PARSED(ld, "auth_type", "client_tls_sslmode"))
        keys_error(ld, "auth_type", "client_tls_sslmode",
                   "auth_type cert needs client_tls_sslmode other than disable");
}

static void check_tls(struct conf_loader *ld)
{
    const struct pgw_config *cfg = ld->cfg;
    if (cfg->client_tls_sslmode != PGW_TLS_DISABLE &&
        (!*cfg->client_tls_key_file || !*cfg->client_tls_cert_file) &&
        PARSED(ld, "client_tls_sslmode", "client_tls_key_file", "client_tls_cert_file"))
        key_error(ld, "client_tls_sslmode",
                  "client_tls_sslmode %s needs client_tls_key_file and client_tls_cert_file",
                  pgw_tls_mode_name(cfg->client_tls_sslmode));
    /* PgBouncer refuses any other value (its TLS setup fails: with client
     * TLS on). */
    const char *dhe = cfg->client_tls_dheparams;
    if (cfg->client_tls_sslmode != PGW_TLS_DISABLE && strcasecmp(dhe, "none") != 0 &&
        strcasecmp(dhe, "auto") != 0 && strcasecmp(dhe, "legacy") != 0 &&
        PARSED(ld, "client_tls_sslmode", "client_tls_dheparams"))
        key_error(ld, "client_tls_dheparams",
                  "client_tls_dheparams: invalid value \"%s\" (expected none, auto or legacy)",
                  dhe);
    if (!PARSED(ld, "server_tls_key_file", "server_tls_cert_file"))
        return;
    if (*cfg->server_tls_key_file && !*cfg->server_tls_cert_file)
        key_error(ld, "server_tls_key_file", "server_tls_key_file needs server_tls_cert_file");
    if (!*cfg->server_tls_key_file && *cfg->server_tls_cert_file)
        key_error(ld, "server_tls_cert_file", "server_tls_cert_file needs server_tls_key_file");
}

/* min_pool_size above the pool size: PgBouncer runs such a file (a
 * general min_pool_size with one small database is common), opening no
 * more than the pool size: a warning, and the pool keeps at most its size
 * (pool_conf.c). */
static void check_pools(struct conf_loader *ld)
{
    const struct pgw_config *cfg = ld->cfg;
    if (!PARSED(ld, "min_pool_size", "default_pool_size"))
        return;
    if (cfg->min_pool_size > cfg->default_pool_size)
        keys_warn(ld, "min_pool_size", "default_pool_size",
                  "min_pool_size %d is larger than default_pool_size %d: pools keep %d open",
                  cfg->min_pool_size, cfg->default_pool_size, cfg->default_pool_size);
    for (int i = 0; i < cfg->ndbs; i++) {
        const struct pgw_conf_db *db = &cfg->dbs[i];
        if (db->min_pool_size < 0 && db->pool_size < 0)
            continue;
        int min = pgw_conf_min_pool_size(cfg, db), size = pgw_conf_pool_size(cfg, db, NULL);
        if (min > size)
            conf_warn(&ld->rep, db->file, db->line,
                      "database \"%s\": min_pool_size %d is larger than pool_size %d: its "
                      "pools keep %d open", db->name, min, size, size);
    }
}

/* A cancel passed to a peer that is this very process would come back and
 * go round: an entry of another id with this process's own Unix socket is
 * an error.  (A TCP address cannot be told apart: with so_reuseport the
 * port is shared on purpose.)  [peers] without peer_id does nothing. */

/* A socket path as a process reaches it: its directory's real path
 * (symlinks, "..", "//", a trailing "/"), or read lexically where that
 * directory does not exist (yet); an abstract name ("@...") as it is. */
static void norm_socket_path(const char *path, char *out, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (path[0] == '@' || !slash) {
        snprintf(out, size, "%s", path);
        return;
    }
    char dir[PATH_MAX], real[PATH_MAX];
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    if (realpath(*dir ? dir : "/", real)) {
        snprintf(out, size, "%s%s", strcmp(real, "/") == 0 ? "" : real, slash);
        return;
    }
    /* lexically: components, "." dropped, ".." taking the one before; a
     * relative directory from the current one (as the process reaches it:
     * "sock" and "$PWD/sock" are one socket, also before it exists) */
    if (dir[0] != '/') {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof(cwd))) {
            char abs[2 * PATH_MAX + 2];
            int n = snprintf(abs, sizeof(abs), "%s/%s", cwd, dir);
            if (n > 0 && (size_t)n < sizeof(dir))
                memcpy(dir, abs, (size_t)n + 1);
        }
    }
    size_t o = 0;
    out[0] = '\0';
    bool rel = dir[0] != '/';
    for (const char *c = dir; *c;) {
        while (*c == '/')
            c++;
        size_t len = strcspn(c, "/");
        if (len == 0)
            break;
        if (len == 1 && c[0] == '.') {
            /* nothing */
        } else if (len == 2 && c[0] == '.' && c[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
        } else if (o + 1 + len < size) {
            if (o > 0 || !rel)
                out[o++] = '/';
            memcpy(out + o, c, len);
            o += len;
        }
        out[o] = '\0';
        c += len;
    }
    snprintf(out + o, size - o, "%s", slash);
}

/* The admin console answers as "pgwharf" and as "pgbouncer", each name
 * unless [databases] has an entry of exactly that name (proxy/session.c):
 * with entries of both names no client reaches the console (RELOAD, PAUSE,
 * SHOW...: only signals are left).  PgBouncer refuses a database named
 * "pgbouncer"; here a warning at the later of the two entries. */
static void check_console_names(struct conf_loader *ld)
{
    const struct pgw_config *cfg = ld->cfg;
    int a = conf_db_find(cfg, "pgwharf"), b = conf_db_find(cfg, "pgbouncer");
    if (a < 0 || b < 0)
        return;
    const struct pgw_conf_db *later = &cfg->dbs[a > b ? a : b];
    const struct pgw_conf_db *first = &cfg->dbs[a > b ? b : a];
    conf_warn(&ld->rep, later->file, later->line,
              "database \"%s\": with database \"%s\" (%s:%d) this leaves the admin console "
              "no name: it answers as \"pgwharf\" or \"pgbouncer\" only where no entry has "
              "that name (rename one of them: PgBouncer reserves \"pgbouncer\")",
              later->name, first->name, first->file, first->line);
}

static bool has_hostaddr(const struct pgw_conf_db *db)
{
    for (int i = 0; i < db->nconn; i++)
        if (strcmp(db->conn_keys[i], "hostaddr") == 0)
            return *db->conn_vals[i] != '\0';
    return false;
}

/* An entry whose server socket would be pgwharf's own (no host, or host =
 * unix_socket_dir, and the port it listens on): its pool's logins would
 * be clients of its own, each asking the pool for a server. */
static void check_self_entries(struct conf_loader *ld)
{
    const struct pgw_config *cfg = ld->cfg;
    if (!*cfg->unix_socket_dir || !PARSED(ld, "unix_socket_dir", "listen_port"))
        return;
    for (int i = 0; i < cfg->ndbs; i++) {
        const struct pgw_conf_db *db = &cfg->dbs[i];
        /* with a hostaddr the pool connects to it over TCP, whatever host
         * says (pool/pool_conf.c make_hosts: no host is then no socket;
         * libpq uses hostaddr for the connection, host only to name it) */
        if (has_hostaddr(db))
            continue;
        bool own_dir = !db->host || !*db->host || strcmp(db->host, cfg->unix_socket_dir) == 0;
        if (!own_dir && db->host[0] == '/') {
            /* the same directory however spelt ("dir/", "dir/.", "//") */
            char a[PATH_MAX + 16], b[PATH_MAX + 16], na[PATH_MAX + 16], nb[PATH_MAX + 16];
            snprintf(a, sizeof(a), "%s/.s.PGSQL", db->host);
            snprintf(b, sizeof(b), "%s/.s.PGSQL", cfg->unix_socket_dir);
            norm_socket_path(a, na, sizeof(na));
            norm_socket_path(b, nb, sizeof(nb));
            own_dir = strcmp(na, nb) == 0;
        }
        const char *port = db->port && *db->port ? db->port : "5432";
        char *end;
        long p = strtol(port, &end, 10);
        if (own_dir && !*end && p == cfg->listen_port)
            conf_error(&ld->rep, db->file, db->line,
                       "database \"%s\": its server socket %s/.s.PGSQL.%ld is pgwharf's own "
                       "(unix_socket_dir and listen_port): set host or port", db->name,
                       cfg->unix_socket_dir, p);
    }
}

/* Is the numeric address x (family f) one pgwharf listens on: an entry of
 * listen_addr equal to it, or a wildcard of its family ("*", 0.0.0.0,
 * ::) when it is a loopback or unspecified address, which reaches that
 * listener on any host?  Names are not looked up (a reload must not block
 * on DNS), nor the host's other addresses. */
static bool listened_on(const char *listen, int f, const uint8_t x[16])
{
    static const uint8_t zero[16] = { 0 }, v6lo[16] = { [15] = 1 };
    bool local = f == AF_INET ? x[0] == 127 || memcmp(x, zero, 16) == 0
                              : memcmp(x, v6lo, 16) == 0 || memcmp(x, zero, 16) == 0;
    for (const char *p = listen; *p;) {
        size_t n = strcspn(p, PGW_CONF_LISTEN_SEP);
        char one[256];
        uint8_t y[16];
        int fy;
        snprintf(one, sizeof(one), "%.*s", (int)n, p);
        if (n > 0 && strcmp(one, "*") == 0 && local)
            return true;
        if (n > 0 && pgw_addr_numeric(one, true, &fy, y) && fy == f &&
            (memcmp(y, x, 16) == 0 || (memcmp(y, zero, 16) == 0 && local)))
            return true;
        p += n;
        p += strspn(p, PGW_CONF_LISTEN_SEP);
    }
    return false;
}

/* An entry whose server address would be one of pgwharf's own TCP
 * listeners (a numeric hostaddr or host, the port it listens on), as
 * check_self_entries for its Unix socket: its pool's logins would be
 * clients of its own, waiting for servers of that pool until
 * client_login_timeout.  (An entry with a hostaddr was refused there as
 * the socket's until the hostaddr was read as the pool reads it; one
 * with host=127.0.0.1 never was.) */
static void check_self_tcp(struct conf_loader *ld)
{
    const struct pgw_config *cfg = ld->cfg;
    if (cfg->listen_port <= 0 || !PARSED(ld, "listen_addr", "listen_port"))
        return;
    for (int i = 0; i < cfg->ndbs; i++) {
        const struct pgw_conf_db *db = &cfg->dbs[i];
        const char *ha = NULL;
        for (int k = 0; k < db->nconn && !ha; k++)
            if (strcmp(db->conn_keys[k], "hostaddr") == 0)
                ha = db->conn_vals[k];
        int nh = pgw_comma_count(db->host), na = pgw_comma_count(ha), np = pgw_comma_count(db->port);
        int n = nh ? nh : na ? na : 1;
        if ((na && na != n) || (np > 1 && np != n))
            continue;                    /* (lists that do not match: the pool refuses) */
        for (int h = 0; h < n; h++) {
            char addr[256], port[32], *end;
            uint8_t x[16];
            int f;
            (void)pgw_comma_item(ha, h, addr, sizeof(addr));
            if (!*addr)
                (void)pgw_comma_item(db->host, h, addr, sizeof(addr));
            (void)pgw_comma_item(db->port, np > 1 ? h : 0, port, sizeof(port));
            long p = strtol(*port ? port : "5432", &end, 10);
            if (*addr && !*end && p == cfg->listen_port && pgw_addr_numeric(addr, false, &f, x) &&
                listened_on(cfg->listen_addr, f, x)) {
                conf_error(&ld->rep, db->file, db->line,
                           "database \"%s\": its server %s port %ld is pgwharf's own listener "
                           "(listen_addr and listen_port): set host, hostaddr or port",
                           db->name, addr, p);
                break;
            }
        }
    }
}

static void check_peers(struct conf_loader *ld)
{
    const struct pgw_config *cfg = ld->cfg;
    if (!PARSED(ld, "peer_id"))
        return;
    if (cfg->npeers > 0 && cfg->peer_id == 0) {
        conf_warn(&ld->rep, cfg->peers[0].file, cfg->peers[0].line,
                  "[peers]: not used while peer_id is 0");
        return;
    }
    if (!*cfg->unix_socket_dir || !PARSED(ld, "unix_socket_dir", "listen_port"))
        return;
    char own[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int n = snprintf(own, sizeof(own), "%s/.s.PGSQL.%d", cfg->unix_socket_dir,
                     cfg->listen_port);
    if (n < 0 || (size_t)n >= sizeof(own))
        return;
    char own_norm[PATH_MAX], peer_norm[PATH_MAX];
    norm_socket_path(own, own_norm, sizeof(own_norm));
    for (int i = 0; i < cfg->npeers; i++) {
        const struct pgw_conf_peer *p = &cfg->peers[i];
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&p->addr;
        char path[sizeof(sun->sun_path) + 1];
        if (p->addr.ss_family == AF_UNIX) {
            /* an abstract name ("@...") has a NUL for its '@' */
            snprintf(path, sizeof(path), "%c%s", sun->sun_path[0] ? sun->sun_path[0] : '@',
                     sun->sun_path + 1);
            norm_socket_path(path, peer_norm, sizeof(peer_norm));
        }
        if (p->id != cfg->peer_id && p->addr.ss_family == AF_UNIX &&
            strcmp(peer_norm, own_norm) == 0)
            conf_error(&ld->rep, p->file, p->line, "peer %d: %s is this process's own "
                       "socket, but its peer_id is %d (cancels would loop)", p->id, own,
                       cfg->peer_id);
        /* This process's id at another socket: a process there has the
         * same peer_id (a rolling restart that copied the old one's), and
         * each drops the other's clients' cancels as its own unknown keys
         * (hunt: peers, half of them lost). */
        if (p->id == cfg->peer_id && p->addr.ss_family == AF_UNIX &&
            strcmp(peer_norm, own_norm) != 0)
            conf_warn(&ld->rep, p->file, p->line, "peer %d is this process's peer_id, but "
                      "its socket %s is not this process's %s: a process there with the "
                      "same peer_id and this one lose each other's cancels (give each "
                      "process a peer_id of its own)", p->id, peer_norm, own);
    }
}

static void check_track_extra(struct conf_loader *ld)
{
    char names[PGW_CONF_TRACK_EXTRA_MAX][PGW_CONF_PARAM_NAME_MAX + 1], err[256];
    if (PARSED(ld, "track_extra_parameters") &&
        pgw_conf_track_extra(ld->cfg->track_extra_parameters, names, err, sizeof(err)) < 0)
        key_error(ld, "track_extra_parameters", "track_extra_parameters: %s", err);
}

/* metrics_addr as the endpoint reads it at start (a numeric address, "*"
 * or localhost: no name lookup), and listen_addr's entries written as a
 * host name or address can be (the lookup itself waits for --check and the
 * start: a reload must not block on DNS). */
static bool addr_any(const char *a)
{
    return !*a || strcmp(a, "*") == 0 || strcmp(a, "0.0.0.0") == 0 || strcmp(a, "::") == 0;
}

/* May a listener on a and the metrics endpoint on b take one address?  A
 * name (localhost too: it may bind 127.0.0.1 and ::1) may resolve to the
 * other: yes, as for a wildcard; two numeric ones only when equal. */
static bool addr_same(const char *a, const char *b)
{
    uint8_t x[16], y[16];
    int fx, fy;
    if (!pgw_addr_numeric(a, true, &fx, x) || !pgw_addr_numeric(b, true, &fy, y))
        return true;
    return fx == fy && memcmp(x, y, 16) == 0;
}

/* Could a listener of the list `listen` and the metrics address `m` take
 * the same address (a wildcard on either side, or one address)? */
static bool addrs_overlap(const char *listen, const char *m)
{
    const char *p = listen;
    while (*p) {
        size_t n = strcspn(p, PGW_CONF_LISTEN_SEP);
        char one[256];
        snprintf(one, sizeof(one), "%.*s", (int)n, p);
        if (n > 0 && (addr_any(m) || addr_any(one) || addr_same(one, m)))
            return true;
        p += n;
        p += strspn(p, PGW_CONF_LISTEN_SEP);
    }
    return false;
}

static void check_addrs(struct conf_loader *ld)
{
    const struct pgw_config *cfg = ld->cfg;
    const char *m = cfg->metrics_addr;
    if (cfg->metrics_port > 0 && *m && strcmp(m, "*") != 0 && strcasecmp(m, "localhost") != 0 &&
        PARSED(ld, "metrics_port", "metrics_addr")) {
        struct addrinfo hints = { 0 }, *ai = NULL;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
        int gai = getaddrinfo(m, "1", &hints, &ai);
        if (gai != 0)
            key_error(ld, "metrics_addr", "metrics_addr \"%s\": %s (a numeric address, \"*\" "
                      "or localhost)", m, gai_strerror(gai));
        freeaddrinfo(ai);
    }
    /* Both on one port and address: the start failed binding the listener,
     * in words that blamed another process (with listen_addr's line). */
    if (cfg->metrics_port > 0 && cfg->metrics_port == cfg->listen_port &&
        addrs_overlap(cfg->listen_addr, cfg->metrics_addr) &&
        PARSED(ld, "metrics_port", "listen_port", "listen_addr", "metrics_addr"))
        keys_error(ld, "metrics_port", "listen_port", "metrics_port %d is listen_port too, on "
                   "the same address: the metrics endpoint needs a port of its own",
                   (int)cfg->metrics_port);
    const char *p = PARSED(ld, "listen_addr") ? cfg->listen_addr : "";
    while (*p) {
        size_t n = strcspn(p, PGW_CONF_LISTEN_SEP);
        if (n > 0 && strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                            "0123456789.-_:%*[]") < n) {
            key_error(ld, "listen_addr", "listen_addr \"%.*s\": not a host name or address",
                      (int)n, p);
            return;
        }
        p += n;
        p += strspn(p, PGW_CONF_LISTEN_SEP);
    }
}

/* breaker_max_cooldown left at its default (a few seconds, so that a
 * backend back from an outage is probed again soon) under a longer
 * breaker_cooldown: that cooldown is the cap, never doubled (the breaker
 * keeps its cap at least its cooldown, pgw_breaker_configure), as it was
 * below the old default of 30 s.  Set apart, a shorter cap is an error. */
static bool max_cooldown_at_default(const struct conf_loader *ld)
{
    int i = conf_key_find("breaker_max_cooldown");
    /* left at it, not a line saying "2" (the README's "when set") */
    return i >= 0 && !(ld->origins && ld->origins[i].file) &&
           ld->cfg->breaker_max_cooldown == strtod(pgw_conf_key_default(i), NULL);
}

void conf_validate(struct conf_loader *ld)
{
    const struct pgw_config *cfg = ld->cfg;
    check_auth(ld);
    check_tls(ld);
    check_pools(ld);
    check_self_entries(ld);
    check_self_tcp(ld);
    check_console_names(ld);
    check_peers(ld);
    check_track_extra(ld);
    check_addrs(ld);
    if (cfg->breaker_max_cooldown < cfg->breaker_cooldown && !max_cooldown_at_default(ld) &&
        PARSED(ld, "breaker_max_cooldown", "breaker_cooldown")) {
        char max[64], min[64];
        conf_format_num(max, sizeof(max), cfg->breaker_max_cooldown);
        conf_format_num(min, sizeof(min), cfg->breaker_cooldown);
        keys_error(ld, "breaker_max_cooldown", "breaker_cooldown",
                   "breaker_max_cooldown %ss is shorter than breaker_cooldown %ss", max, min);
    }
    if (cfg->stats_period > 0 && cfg->stats_period < 1 && PARSED(ld, "stats_period"))
        key_error(ld, "stats_period", "stats_period must be 0 (off) or at least 1s");
    if (!*cfg->listen_addr && !*cfg->unix_socket_dir &&
        PARSED(ld, "listen_addr", "unix_socket_dir"))
        keys_error(ld, "listen_addr", "unix_socket_dir",
                   "nothing to listen on: listen_addr and unix_socket_dir are both empty");
    /* The listener's "DIR/.s.PGSQL.PORT" must fit in sun_path: else only
     * the start failed, after --check said the file was fine. */
    const size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    size_t path = (size_t)snprintf(NULL, 0, "%s/.s.PGSQL.%d", cfg->unix_socket_dir,
                                   cfg->listen_port);
    if (*cfg->unix_socket_dir && path > max && PARSED(ld, "unix_socket_dir", "listen_port"))
        keys_error(ld, "unix_socket_dir", "listen_port",
                   "unix_socket_dir \"%.20s...\": the socket path would be %zu bytes long "
                   "(at most %zu)", cfg->unix_socket_dir, path, max);
    if (PARSED(ld, "syslog_facility") && pgw_log_syslog_facility(cfg->syslog_facility) < 0)
        key_error(ld, "syslog_facility",
                  "syslog_facility \"%s\": expected auth, authpriv, daemon, user or "
                  "local0-local7", cfg->syslog_facility);
    if (PARSED(ld, "unix_socket_mode") && pgw_conf_unix_socket_mode(cfg) < 0) {
        const char *m = cfg->unix_socket_mode;
        if (*m >= '1' && *m <= '7' && strspn(m, "01234567") == strlen(m))
            key_error(ld, "unix_socket_mode",
                      "unix_socket_mode \"%s\": not an octal file mode (0000-0777): write it "
                      "with a leading 0 (0%s); PgBouncer reads %s as a decimal number", m, m, m);
        else
            key_error(ld, "unix_socket_mode",
                      "unix_socket_mode \"%s\": not an octal file mode (0000-0777)", m);
    }
}

/* PgBouncer reads it as any integer (strtol base 0: 0770, 0x1f8), so a
 * plain 770 is decimal there (the mode 01402): refused here rather than
 * read either way (validate says how to write it); 0 is 0. */
int pgw_conf_unix_socket_mode(const struct pgw_config *cfg)
{
    const char *p = cfg->unix_socket_mode;
    if (p[0] != '0')
        return -1;
    char *end = NULL;
    errno = 0;
    long mode = strtol(p, &end, 0);
    if (end == p || *end || errno == ERANGE || mode < 0 || mode > 0777)
        return -1;
    return (int)mode;
}

/* As PgBouncer: a number >= 0 is a group id, anything else a group's
 * name (looked up: the start and --check both read it here). */
int pgw_conf_unix_socket_gid(const struct pgw_config *cfg, gid_t *gid)
{
    const char *g = cfg->unix_socket_group;
    if (!*g)
        return 0;
    char *end;
    errno = 0;
    long num = strtol(g, &end, 10);
    if (*end == '\0' && num >= 0) {
        /* past the ids a group can have (-1 is chown's "unchanged"): none */
        if (errno == ERANGE || num >= 4294967295L)
            return -1;
        *gid = (gid_t)num;
        return 1;
    }
    struct group *gr = getgrnam(g);
    if (!gr)
        return -1;
    *gid = gr->gr_gid;
    return 1;
}

int pgw_conf_validate(struct pgw_config *cfg, struct pgw_conf_diag *diag)
{
    struct conf_loader ld = { .cfg = cfg, .rep = { .diag = diag }, .origins = cfg->origins };
    conf_validate(&ld);
    return ld.rep.nerrors || ld.rep.oom ? PGW_ECONFIG : 0;
}
