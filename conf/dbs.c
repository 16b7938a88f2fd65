/*
 * dbs.c - [databases] entries: `name = key=value ...`.  libpq keywords go
 * to conn_keys/conn_vals for PQconnectStartParams; PgBouncer's pool keys
 * (pool_size, min_pool_size, reserve_pool[_size], max_db_connections,
 * query_wait_timeout, pool_mode, load_balance_hosts, auth_user,
 * connect_query) fill the
 * entry's fields; datestyle=
 * and timezone= become "-c DateStyle=... -c TimeZone=..." in options.
 * An entry with any error is reported and left out.
 */
#include "conf/conf_int.h"
#include "common/err.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

/* An entry being built, with the PgBouncer extras still to merge. */
struct db_build {
    struct pgw_conf_db db;
    char *gucs;              /* "-c DateStyle=... -c TimeZone=..." or NULL */
    int nerrors;
};

static void db_init(struct pgw_conf_db *db)
{
    memset(db, 0, sizeof(*db));
    db->pool_size = db->min_pool_size = db->reserve_pool_size = -1;
    db->max_db_connections = db->max_db_client_connections = db->pool_mode = -1;
    db->server_lifetime = db->query_wait_timeout = -1;
    db->load_balance_hosts = -1;
    db->target_session_attrs = -1;
}

void conf_db_free(struct pgw_conf_db *db)
{
    for (int i = 0; i < db->nconn; i++) {
        free(db->conn_keys[i]);
        free(db->conn_vals[i]);
    }
    free(db->conn_keys);
    free(db->conn_vals);
    free(db->name);
    free(db->auth_user);
    free(db->auth_dbname);
    free(db->auth_query);
    free(db->connect_query);
    free(db->file);
    db_init(db);
}

/* A convenience pointer of src (into its conn_vals) as the same one of dst. */
static const char *same_val(const struct pgw_conf_db *dst, const struct pgw_conf_db *src,
                            const char *p)
{
    for (int i = 0; p && i < src->nconn; i++)
        if (src->conn_vals[i] == p)
            return dst->conn_vals[i];
    return NULL;
}

int conf_db_dup(struct pgw_conf_db *dst, const struct pgw_conf_db *src)
{
    *dst = *src;
    /* src's lists, none of them dst's to free (the strings: below) */
    dst->conn_keys = dst->conn_vals = NULL;
    dst->nconn = 0;
    dst->host = dst->port = dst->dbname = dst->user = dst->password = NULL;
    if (CONF_OWN_STRS(&dst->name, &dst->auth_user, &dst->auth_dbname, &dst->auth_query,
                      &dst->connect_query, &dst->file) != 0)
        goto oom;
    if (src->conn_keys) {
        /* with the NULLs that end them */
        dst->conn_keys = calloc((size_t)src->nconn + 1, sizeof(char *));
        dst->conn_vals = calloc((size_t)src->nconn + 1, sizeof(char *));
        if (!dst->conn_keys || !dst->conn_vals)
            goto oom;
        for (int i = 0; i < src->nconn; i++) {
            if (conf_dup_str(&dst->conn_keys[i], src->conn_keys[i]) != 0 ||
                conf_dup_str(&dst->conn_vals[i], src->conn_vals[i]) != 0) {
                free(dst->conn_keys[i]);
                dst->conn_keys[i] = NULL;
                goto oom;
            }
            dst->nconn = i + 1;
        }
    }
    dst->host = same_val(dst, src, src->host);
    dst->port = same_val(dst, src, src->port);
    dst->dbname = same_val(dst, src, src->dbname);
    dst->user = same_val(dst, src, src->user);
    dst->password = same_val(dst, src, src->password);
    return 0;
oom:
    conf_db_free(dst);
    return PGW_ENOMEM;
}

static int find_conn(const struct pgw_conf_db *db, const char *key)
{
    for (int i = 0; i < db->nconn; i++)
        if (strcmp(db->conn_keys[i], key) == 0)
            return i;
    return -1;
}

/* Drop the i-th key=val, keeping the order of the others. */
static void drop_conn(struct pgw_conf_db *db, int i)
{
    free(db->conn_keys[i]);
    free(db->conn_vals[i]);
    for (int k = i; k < db->nconn; k++) {      /* the NULLs that end them too */
        db->conn_keys[k] = db->conn_keys[k + 1];
        db->conn_vals[k] = db->conn_vals[k + 1];
    }
    db->nconn--;
}

/* Append key=val (taking val) keeping both arrays NULL-terminated. */
static int add_conn(struct pgw_conf_db *db, const char *key, char *val)
{
    char **keys = realloc(db->conn_keys, (size_t)(db->nconn + 2) * sizeof(char *));
    if (keys)
        db->conn_keys = keys;
    char **vals = keys ? realloc(db->conn_vals, (size_t)(db->nconn + 2) * sizeof(char *)) : NULL;
    if (vals)
        db->conn_vals = vals;
    char *k = vals ? strdup(key) : NULL;
    if (!k) {
        free(val);
        return PGW_ENOMEM;
    }
    db->conn_keys[db->nconn] = k;
    db->conn_vals[db->nconn] = val;
    db->nconn++;
    db->conn_keys[db->nconn] = db->conn_vals[db->nconn] = NULL;
    return 0;
}

/* " -c Name=value" with the server's escapes for spaces and backslashes. */
static int add_guc(struct db_build *b, const char *name, const char *value)
{
    size_t old = b->gucs ? strlen(b->gucs) : 0;
    char *s = realloc(b->gucs, old + strlen(name) + 2 * strlen(value) + 8);
    if (!s)
        return PGW_ENOMEM;
    b->gucs = s;
    s += old;
    s += sprintf(s, "%s-c %s=", old ? " " : "", name);
    for (const char *p = value; *p; p++) {
        if (*p == ' ' || *p == '\\')
            *s++ = '\\';
        *s++ = *p;
    }
    *s = '\0';
    return 0;
}

static int set_str(char **field, const char *val)
{
    char *copy = strdup(val);
    if (!copy)
        return PGW_ENOMEM;
    free(*field);
    *field = copy;
    return 0;
}

/* A pool key: 1 when handled, 0 when key is not one, or an error. */
static int pool_key(struct pgw_conf_db *db, const char *key, const char *val, char *err,
                    size_t errlen)
{
    int rc;
    if (strcasecmp(key, "pool_size") == 0)
        rc = conf_parse_int_unset(val, 0, INT_MAX, &db->pool_size, err, errlen);
    else if (strcasecmp(key, "min_pool_size") == 0)
        rc = conf_parse_int_unset(val, 0, INT_MAX, &db->min_pool_size, err, errlen);
    else if (strcasecmp(key, "reserve_pool") == 0 || strcasecmp(key, "reserve_pool_size") == 0)
        rc = conf_parse_int_unset(val, 0, INT_MAX, &db->reserve_pool_size, err, errlen);
    else if (strcasecmp(key, "max_db_connections") == 0)
        rc = conf_parse_int_unset(val, 0, INT_MAX, &db->max_db_connections, err, errlen);
    else if (strcasecmp(key, "max_db_client_connections") == 0)
        rc = conf_parse_int_unset(val, 0, INT_MAX, &db->max_db_client_connections, err, errlen);
    else if (strcasecmp(key, "server_lifetime") == 0)
        rc = conf_parse_entry_dur(val, &db->server_lifetime, err, errlen);
    else if (strcasecmp(key, "query_wait_timeout") == 0)
        rc = conf_parse_dur_unset(val, &db->query_wait_timeout, err, errlen);
    else if (strcasecmp(key, "pool_mode") == 0)
        rc = conf_parse_pool_mode(val, &db->pool_mode, err, errlen);
    else if (strcasecmp(key, "load_balance_hosts") == 0)
        rc = conf_parse_load_balance(val, &db->load_balance_hosts, err, errlen);
    else if (strcasecmp(key, "auth_user") == 0)
        rc = set_str(&db->auth_user, val);
    else if (strcasecmp(key, "auth_dbname") == 0)
        rc = set_str(&db->auth_dbname, val);
    else if (strcasecmp(key, "auth_query") == 0)
        rc = set_str(&db->auth_query, val);
    else if (strcasecmp(key, "connect_query") == 0)
        rc = set_str(&db->connect_query, val);
    else
        return 0;
    return rc == 0 ? 1 : rc;
}

/* libpq keywords whose value libpq checks on every connect: a bad one
 * failed each connect as if the server were down (the breaker opened for
 * every entry on a healthy server).  Checked here as libpq compares them
 * (case matters, but for the TLS versions; an empty version is libpq's
 * default). */
static const struct {
    const char *kw;
    const char *const values[7];
    bool any_case;
} libpq_enums[] = {
    { "sslmode", { "disable", "allow", "prefer", "require", "verify-ca", "verify-full" }, false },
    { "gssencmode", { "disable", "prefer", "require" }, false },
    { "channel_binding", { "disable", "prefer", "require" }, false },
    { "ssl_min_protocol_version", { "", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3" }, true },
    { "ssl_max_protocol_version", { "", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3" }, true },
};

/* 0 when kw takes val (or is not one of libpq_enums), else PGW_ECONFIG
 * with err. */
static int libpq_enum_check(const char *kw, const char *val, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(libpq_enums) / sizeof(libpq_enums[0]); i++) {
        if (strcmp(libpq_enums[i].kw, kw) != 0)
            continue;
        const char *const *v = libpq_enums[i].values;
        for (size_t j = 0; j < 7 && v[j]; j++)
            if (libpq_enums[i].any_case ? strcasecmp(v[j], val) == 0 : strcmp(v[j], val) == 0)
                return 0;
        size_t used = (size_t)snprintf(err, errlen, "%s: expected one of ", kw);
        for (size_t j = 0; j < 7 && v[j] && used < errlen; j++)
            if (*v[j])
                used += (size_t)snprintf(err + used, errlen - used, "%s%s",
                                         j > (v[0][0] == '\0') ? ", " : "", v[j]);
        if (used < errlen)
            snprintf(err + used, errlen - used, "; got \"%s\"", val);
        return PGW_ECONFIG;
    }
    return 0;
}

/* libpq keywords it parses as integers at every connect (libpq's
 * parse_int_param: blanks around, a sign, base 10, an int; empty = not
 * set).  0, or PGW_ECONFIG with err. */
static int libpq_int_check(const char *kw, const char *val, char *err, size_t errlen)
{
    static const char *const ints[] = {
        "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout",
    };
    bool is_int = false;
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]) && !is_int; i++)
        is_int = strcmp(ints[i], kw) == 0;
    if (!is_int || !*val)
        return 0;
    const char *p = val;
    while (isspace((unsigned char)*p))
        p++;
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    while (end != p && isspace((unsigned char)*end))
        end++;
    if (end != p && *end == '\0' && errno == 0 && v >= INT_MIN && v <= INT_MAX)
        return 0;
    snprintf(err, errlen, "%s: expected an integer, got \"%s\"", kw, val);
    return PGW_ECONFIG;
}

/* A key that is not a pool key: datestyle/timezone or a libpq keyword.
 * Takes *val.  0, PGW_ECONFIG with err, or PGW_ENOMEM. */
static int conn_key(struct db_build *b, const char *key, char *val, char *err, size_t errlen)
{
    const char *kw = conf_libpq_keyword(key);
    int rc = 0;
    /* Said twice: the later one counts, as PgBouncer reads an entry. */
    int had = kw ? find_conn(&b->db, kw) : -1;
    if (had >= 0)
        drop_conn(&b->db, had);
    if (strcasecmp(key, "datestyle") == 0 || strcasecmp(key, "timezone") == 0) {
        rc = add_guc(b, strcasecmp(key, "datestyle") == 0 ? "DateStyle" : "TimeZone", val);
    } else if (kw && strcmp(kw, "target_session_attrs") == 0) {
        /* pgwharf reads it to choose hosts; libpq gets the canonical name
         * (a value libpq rejects would fail every connect, as if the
         * server were down) */
        int *tsa = &b->db.target_session_attrs;
        size_t used = (size_t)snprintf(err, errlen, "%s: ", kw);
        rc = conf_parse_target_session(val, tsa, err + used, errlen - used);
        if (rc == 0) {
            free(val);
            val = strdup(pgw_target_session_name((enum pgw_target_session)*tsa));
            return val ? add_conn(&b->db, kw, val) : PGW_ENOMEM;
        }
    } else if (kw && (rc = libpq_enum_check(kw, val, err, errlen)) == 0 &&
               (rc = libpq_int_check(kw, val, err, errlen)) == 0) {
        return add_conn(&b->db, kw, val);
    } else if (kw) {
        /* rc and err say why */
    } else {
        snprintf(err, errlen, "unknown key \"%s\"", key);
        rc = PGW_ECONFIG;
    }
    free(val);
    return rc;
}

/* Route one key=value of the connection string; takes val.  Errors are
 * reported and counted; returns PGW_ENOMEM or 0. */
static int db_key(struct conf_loader *ld, struct db_build *b, const char *file, int line,
                  const char *key, char *val)
{
    char err[CONF_ERRLEN];
    int rc = pool_key(&b->db, key, val, err, sizeof(err));
    if (rc == PGW_ECONFIG)      /* a pool key's value: name the key */
        conf_error(&ld->rep, file, line, "database \"%s\": %s: %s", b->db.name, key, err);
    if (rc != 0) {
        free(val);
    } else if ((rc = conn_key(b, key, val, err, sizeof(err))) == PGW_ECONFIG) {
        conf_error(&ld->rep, file, line, "database \"%s\": %s", b->db.name, err);
    }
    if (rc == PGW_ENOMEM)
        ld->rep.oom = true;
    b->nerrors += rc < 0;
    return rc == PGW_ENOMEM ? rc : 0;
}

/* Every comma-separated port must be empty (libpq's default) or 1-65535. */
static bool ports_valid(const char *ports)
{
    char err[CONF_ERRLEN], one[16];
    int port;
    for (const char *p = ports;; p++) {
        size_t n = strcspn(p, ",");
        if (n >= sizeof(one))
            return false;
        memcpy(one, p, n);
        one[n] = '\0';
        if (n > 0 && conf_parse_int(one, 1, 65535, &port, err, sizeof(err)) != 0)
            return false;
        p += n;
        if (!*p)
            return true;
    }
}

/* Whether every comma-separated item of list is at most max bytes; else
 * *item and *len say which is not. */
static bool items_fit(const char *list, size_t max, const char **item, size_t *len)
{
    for (const char *p = list;; p++) {
        size_t n = strcspn(p, ",");
        if (n > max) {
            *item = p;
            *len = n;
            return false;
        }
        p += n;
        if (!*p)
            return true;
    }
}

/* Whether every non-empty item of a hostaddr list (each at most
 * PGW_CONF_HOSTADDR_MAX bytes) is a numeric IPv4 or IPv6 address, as libpq
 * wants; else *item and *len say which is not. */
static bool numeric_items(const char *list, const char **item, size_t *len)
{
    char one[PGW_CONF_HOSTADDR_MAX + 1];
    struct in6_addr a;
    for (const char *p = list;; p++) {
        size_t n = strcspn(p, ",");
        memcpy(one, p, n);
        one[n] = '\0';
        if (n > 0 && inet_pton(AF_INET, one, &a) != 1 && inet_pton(AF_INET6, one, &a) != 1) {
            *item = p;
            *len = n;
            return false;
        }
        p += n;
        if (!*p)
            return true;
    }
}

static const char *conn_value(const struct pgw_conf_db *db, const char *key)
{
    int i = find_conn(db, key);
    return i < 0 ? NULL : db->conn_vals[i];
}

static int list_items(const char *list)
{
    int n = list && *list ? 1 : 0;
    for (const char *p = list ? list : ""; *p; p++)
        n += *p == ',';
    return n;
}

/* The i-th comma-separated item of list (list has at least i + 1). */
static const char *item_at(const char *list, int i, size_t *len)
{
    for (; i > 0; i--)
        list += strcspn(list, ",") + 1;
    *len = strcspn(list, ",");
    return list;
}

/* libpq connects to a socket directory's (or, with '@', an abstract
 * name's) "DIR/.s.PGSQL.PORT", which must fit in sun_path: a longer one
 * failed every connect ("Unix-domain socket path ... is too long"), as if
 * the server were down.  The port is the host's, else libpq's default. */
static void check_socket_paths(struct conf_loader *ld, struct db_build *b, const char *file,
                               int line, int nhosts)
{
    const char *hosts = conn_value(&b->db, "host"), *ports = conn_value(&b->db, "port");
    const size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    int nports = list_items(ports);
    for (int i = 0; hosts && i < nhosts; i++) {
        size_t hlen, plen = 0;
        const char *h = item_at(hosts, i, &hlen);
        const char *p = nports ? item_at(ports, nports > 1 ? i : 0, &plen) : NULL;
        if (plen == 0) {
            p = "5432";
            plen = strlen(p);
        }
        size_t len = hlen + strlen("/.s.PGSQL.") + plen;
        if ((*h == '/' || *h == '@') && len > max) {
            conf_error(&ld->rep, file, line,
                       "database \"%s\": host: the Unix socket path \"%.20s...\" would be %zu "
                       "bytes long (at most %zu)", b->db.name, h, len, max);
            b->nerrors++;
        }
    }
}

/* pgwharf pairs the i-th host with the i-th hostaddr and port, as libpq
 * does (pool/hosts.c): lists that do not pair up are an error here rather
 * than on every connect.  True when they pair up, else err says why. */
static bool host_lists_pair(const struct pgw_conf_db *db, char *err, size_t errlen)
{
    int nh = list_items(conn_value(db, "host"));
    int na = list_items(conn_value(db, "hostaddr"));
    int np = list_items(conn_value(db, "port"));
    int n = nh ? nh : na ? na : 1;
    if (na && na != n) {      /* libpq: "could not match N host names to M hostaddr values" */
        snprintf(err, errlen, "hostaddr: %d value%s for %d hosts (expected one per host)", na,
                 na == 1 ? "" : "s", n);
        return false;
    }
    if (np > 1 && np != n) {
        snprintf(err, errlen, "port: %d ports for %d hosts (expected one, or one per host)",
                 np, n);
        return false;
    }
    return true;
}

/* Merge the extras into the libpq keys and set the convenience pointers. */
static int db_finish(struct db_build *b)
{
    struct pgw_conf_db *db = &b->db;
    int i, rc = 0;
    if (b->gucs && (i = find_conn(db, "options")) >= 0) {
        char *merged = NULL;
        if (asprintf(&merged, "%s %s", db->conn_vals[i], b->gucs) < 0)
            return PGW_ENOMEM;
        free(db->conn_vals[i]);
        db->conn_vals[i] = merged;
    } else if (b->gucs) {
        rc = add_conn(db, "options", b->gucs);
        b->gucs = NULL;
    }
    if (rc == 0 && !conn_value(db, "dbname") && strcmp(db->name, "*") != 0) {
        char *dbname = strdup(db->name);
        rc = dbname ? add_conn(db, "dbname", dbname) : PGW_ENOMEM;
    }
    db->host = conn_value(db, "host");
    db->port = conn_value(db, "port");
    db->dbname = conn_value(db, "dbname");
    db->user = conn_value(db, "user");
    db->password = conn_value(db, "password");
    return rc;
}

static void parse_connstr(struct conf_loader *ld, struct db_build *b, const char *file,
                          int line, const char *connstr)
{
    char err[CONF_ERRLEN], *key, *val;
    const char *p = connstr;
    int rc;
    while ((rc = conf_connstr_next(&p, &key, &val, err, sizeof(err))) > 0) {
        rc = db_key(ld, b, file, line, key, val);
        free(key);
        if (rc == PGW_ENOMEM)
            return;
    }
    if (rc == PGW_ECONFIG) {
        conf_error(&ld->rep, file, line, "database \"%s\": %s", b->db.name, err);
        b->nerrors++;
    } else if (rc == PGW_ENOMEM) {
        ld->rep.oom = true;
        b->nerrors++;
    }
    const char *port = conn_value(&b->db, "port");
    if (port && !ports_valid(port)) {
        conf_error(&ld->rep, file, line,
                   "database \"%s\": port: expected a port number from 1 to 65535, got \"%s\"",
                   b->db.name, port);
        b->nerrors++;
    } else if (!host_lists_pair(&b->db, err, sizeof(err))) {
        conf_error(&ld->rep, file, line, "database \"%s\": %s", b->db.name, err);
        b->nerrors++;
    } else {
        check_socket_paths(ld, b, file, line, list_items(conn_value(&b->db, "host")));
    }
    /* What a pool keeps of each host (pool/hosts.h): a longer one could
     * not be connected to, and was not refused until a client came. */
    static const struct {
        const char *kw;
        size_t max;
    } sized[] = { { "host", PGW_CONF_HOST_MAX }, { "hostaddr", PGW_CONF_HOSTADDR_MAX } };
    for (size_t i = 0; i < sizeof(sized) / sizeof(sized[0]); i++) {
        const char *list = conn_value(&b->db, sized[i].kw), *item;
        size_t len;
        if (list && !items_fit(list, sized[i].max, &item, &len)) {
            conf_error(&ld->rep, file, line,
                       "database \"%s\": %s: \"%.20s...\" is %zu bytes long (at most %zu)",
                       b->db.name, sized[i].kw, item, len, sized[i].max);
            b->nerrors++;
        } else if (list && i == 1 && !numeric_items(list, &item, &len)) {
            conf_error(&ld->rep, file, line,
                       "database \"%s\": hostaddr: expected a numeric IP address, got \"%.*s\"",
                       b->db.name, (int)len, item);
            b->nerrors++;
        }
    }
}

void conf_db_add(struct conf_loader *ld, const char *file, int line, const char *name,
                 const char *connstr)
{
    /* A name defined again replaces the earlier entry, in its place (as
     * PgBouncer, where the later line wins), with a warning. */
    int replace = conf_db_find(ld->cfg, name);
    const struct pgw_conf_db *old = replace >= 0 ? &ld->cfg->dbs[replace] : NULL;
    if (old)
        conf_warn(&ld->rep, file, line, "database \"%s\" defined again: replaces %s:%d", name,
                  old->file, old->line);
    if (strlen(name) > 63)
        conf_warn(&ld->rep, file, line, "database \"%.40s...\": a name of more than 63 bytes "
                  "no client can ask for (a startup packet's is cut there, as PostgreSQL "
                  "cuts it)", name);
    struct db_build b = { .gucs = NULL };
    db_init(&b.db);
    b.db.name = conf_strdup(&ld->rep, name);
    b.db.file = conf_strdup(&ld->rep, file);
    b.db.line = line;
    if (b.db.name && b.db.file)
        parse_connstr(ld, &b, file, line, connstr);
    int rc = -1;
    if (b.nerrors == 0 && b.db.name && b.db.file) {
        rc = db_finish(&b);
        if (rc == 0)
            rc = CONF_ENTRY_PUT(ld->cfg->dbs, ld->cfg->ndbs, replace, b.db, conf_db_free);
        if (rc == 0 && replace < 0)
            conf_db_indexed(ld->cfg, ld->cfg->ndbs - 1);
    }
    if (rc == 0) {
        free(b.gucs);
        return;
    }
    if (b.nerrors == 0)
        ld->rep.oom = true;
    free(b.gucs);
    conf_db_free(&b.db);
}
