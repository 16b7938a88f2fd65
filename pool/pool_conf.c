/*
 * pool_conf.c - making pools and keeping them in step with the config:
 * pgw_pool_get() (create or find), copying what a pool needs out of its db
 * entry (the entry may be freed by a reload, so pools keep their own copy
 * of the libpq keywords and effective sizes), and freeing a pool.
 */
#include "pool/pool_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"

static void free_strv(char **v, int n)
{
    if (!v)
        return;
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static char *build_signature(const struct pgw_conf_db *db)
{
    size_t len = 1;
    for (int i = 0; i < db->nconn && db->conn_keys[i]; i++)
        len += strlen(db->conn_keys[i]) + strlen(db->conn_vals[i] ? db->conn_vals[i] : "") + 2;
    char *s = malloc(len);
    if (!s)
        return NULL;
    size_t o = 0;
    for (int i = 0; i < db->nconn && db->conn_keys[i]; i++)
        o += (size_t)sprintf(s + o, "%s=%s\n", db->conn_keys[i],
                             db->conn_vals[i] ? db->conn_vals[i] : "");
    s[o] = 0;
    return s;
}

static bool copy_keys(struct pgw_pool *pool, const struct pgw_conf_db *db)
{
    int n = 0;
    while (n < db->nconn && db->conn_keys[n])
        n++;
    char **k = calloc((size_t)n + 1, sizeof(*k));
    char **v = calloc((size_t)n + 1, sizeof(*v));
    bool ok = k && v;
    for (int i = 0; ok && i < n; i++) {
        k[i] = strdup(db->conn_keys[i]);
        v[i] = strdup(db->conn_vals[i] ? db->conn_vals[i] : "");
        ok = k[i] && v[i];
    }
    if (!ok) {
        free_strv(k, n);
        free_strv(v, n);
        return false;
    }
    free_strv(pool->keys, pool->nkeys);
    free_strv(pool->vals, pool->nkeys);
    pool->keys = k;
    pool->vals = v;
    pool->nkeys = n;
    pool->db_sets_user = db->user && *db->user;
    pool->db_sets_password = db->password && *db->password;
    pool->db_sets_dbname = db->dbname && *db->dbname;
    pool->server_user = pool->user;
    for (int i = 0; pool->db_sets_user && i < n; i++)
        if (strcmp(k[i], "user") == 0)
            pool->server_user = v[i];
    return true;
}

static const char *conn_value(const struct pgw_conf_db *db, const char *key)
{
    for (int i = 0; i < db->nconn && db->conn_keys[i]; i++)
        if (strcmp(db->conn_keys[i], key) == 0)
            return db->conn_vals[i];
    return NULL;
}

static void unref_hosts(struct pgw_pool *pool)
{
    for (int i = 0; i < pool->nhosts; i++)
        pgw_backend_unref(pool->hosts[i].be);
    free(pool->hosts);
    pool->hosts = NULL;
    pool->nhosts = 0;
}

/* The entry's host list, one backend per host; false (nothing changed)
 * when it cannot be had. */
static bool make_hosts(struct pgw_pool *pool, const struct pgw_conf_db *db)
{
    const char *hostaddr = conn_value(db, "hostaddr");
    /* No host: the Unix socket in unix_socket_dir, as PgBouncer reads
     * it ("applies to both the listening socket and server connections");
     * with none, libpq's default directory. */
    const char *host = db->host;
    const char *dir = pool->set->cfg->unix_socket_dir;
    if ((!host || !*host) && (!hostaddr || !*hostaddr) && dir && *dir)
        host = dir;
    int n = pgw_hosts_count(host, hostaddr);
    struct pool_host *hosts = calloc((size_t)n, sizeof(*hosts));
    struct pgw_host_spec *specs = calloc((size_t)n, sizeof(*specs));
    char err[128];
    bool ok = hosts && specs && pgw_hosts_parse(host, hostaddr, db->port, specs, n, err,
                                                sizeof(err)) == n;
    for (int i = 0; ok && i < n; i++) {
        hosts[i].spec = specs[i];
        hosts[i].be = pgw_backend_get(pool->set, &specs[i]);
        ok = hosts[i].be != NULL;
    }
    free(specs);
    if (!ok) {
        for (int i = 0; hosts && i < n; i++)
            pgw_backend_unref(hosts[i].be);
        free(hosts);
        return false;
    }
    pgw_pool_repl_hosts_replaced(pool, hosts, n);
    unref_hosts(pool);
    pool->hosts = hosts;
    pool->nhosts = n;
    pool->cursor.n = n;
    pool->cursor.next = 0;
    return true;
}

static void apply_settings(struct pgw_pool *pool, const struct pgw_conf_db *db)
{
    const struct pgw_config *cfg = pool->set->cfg;
    const struct pgw_conf_user *u = pgw_conf_find_user(cfg, pool->user);
    pool->mode = pgw_conf_pool_mode(cfg, db, u);
    pool->pool_size = pgw_conf_pool_size(cfg, db, u);
    pool->min_pool_size = pgw_conf_min_pool_size(cfg, db);
    pool->reserve_pool_size = pgw_conf_reserve_pool_size(cfg, db, u);
    pool->max_db_connections = pgw_conf_max_db_connections(cfg, db);
    double qwt = pgw_conf_query_wait_timeout(cfg, db, u);
    bool rewait = qwt != pool->query_wait_timeout;
    pool->query_wait_timeout = qwt;
    pool->cursor.mode = db->load_balance_hosts >= 0 ? (enum pgw_load_balance)db->load_balance_hosts
                                                    : PGW_LB_ROUND_ROBIN;
    pool->tsa = db->target_session_attrs >= 0 ? (enum pgw_target_session)db->target_session_attrs
                                              : PGW_TSA_ANY;
    double life = pgw_conf_server_lifetime(cfg, db);
    if (life != pool->server_lifetime) {
        /* As PgBouncer, which compares a server's age with the current
         * value: the servers already in get the new lifetime too (their
         * own jitter kept), else a lowered one waited for the old. */
        for (struct pgw_server *srv = pgw_pool_server_next(pool, NULL); srv;
             srv = pgw_pool_server_next(pool, srv))
            if (srv->connect_time > 0)
                srv->expire_at = life > 0 ? srv->connect_time + life * srv->life_jitter : 0;
    }
    pool->server_lifetime = life;
    if (rewait)
        pgw_pool_rewait(pool);
    /* The cap of the user the servers log in as (copy_keys). */
    const char *su = db->user && *db->user ? db->user : pool->user;
    pool->max_user_connections = pgw_conf_max_user_connections(cfg, pgw_conf_find_user(cfg, su));
    if (pool->min_pool_size > pool->pool_size)
        pool->min_pool_size = pool->pool_size;
    char *cq = db->connect_query && *db->connect_query ? strdup(db->connect_query) : NULL;
    free(pool->connect_query);
    pool->connect_query = cq;
}

static bool same_text(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* Is there a pool of (dbname, user) in set? */
static bool pool_exists(const struct pgw_pool_set *set, const char *dbname, const char *user)
{
    for (const struct pgw_list *n = set->pools.next; n != &set->pools; n = n->next) {
        const struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        if (strcmp(p->dbname, dbname) == 0 && strcmp(p->user, user) == 0)
            return true;
    }
    return false;
}

/* The entry's user= (PgBouncer's forced user) changed from this pool's,
 * the entry's pool: as PgBouncer, whose forced user is renamed in place,
 * the pool takes the new name.  Its clients stay in it (no client is
 * left in a pool SHOW POOLS lists under a user its new servers do not
 * log in as); its servers, logged in as the old user, reconnect (the
 * keys changed: close_needed, as PgBouncer's).  Not when a pool of the
 * new name is there already (one of the entry's clients' own, from
 * before it forced a user): this one is superseded (its clients move at
 * their next request, relay.c repool). */
static void rename_forced(struct pgw_pool *pool, const struct pgw_conf_db *db)
{
    if (!pool->db_sets_user || !db->user || !*db->user || !pool->user ||
        strcmp(db->user, pool->user) == 0 || pool_exists(pool->set, pool->dbname, db->user))
        return;
    char *u = strdup(db->user);
    if (!u)
        return;                          /* superseded instead, as before */
    char names[PGW_POOL_LOG_NAMES], qu[200];
    pgw_log_quote(qu, sizeof(qu), pool->user);
    /* (server_user points into the keys while the entry sets user=) */
    free(pool->user);
    pool->user = u;
    pgw_info("pool_user_changed", "%s old_user=%s", pgw_pool_log_names(pool, names, sizeof(names)),
             qu);
}

/* Returns true when the connection keys or connect_query changed (servers
 * must reconnect: as PgBouncer, a server set up by the old connect_query
 * is not what new clients are configured to get). */
bool pgw_pool_apply_db(struct pgw_pool *pool, const struct pgw_conf_db *db)
{
    pool->db_src = db;
    pool->orphan = false;
    rename_forced(pool, db);
    pool->user_superseded = db->user && *db->user && pool->user &&
                            strcmp(db->user, pool->user) != 0;
    pool->autodb = strcmp(db->name, "*") == 0;
    char *old_cq = pool->connect_query;
    enum pgw_pool_mode old_mode = pool->mode;
    pool->connect_query = NULL;           /* apply_settings frees it otherwise */
    apply_settings(pool, db);
    bool cq_changed = !same_text(old_cq, pool->connect_query);
    /* Made session mode by a reload: the idle servers went back to the
     * pool without server_reset_query, as transaction and statement mode
     * give them back (a client's temp tables, locks, SETs still on them),
     * and a session client would keep what it finds; PgBouncer had reset
     * them at each client's end.  They reconnect; those lent now go back
     * through server_reset_query (pgw_relay_release_mode), and a session
     * client keeps its own. */
    if (pool->signature && old_mode != PGW_POOL_SESSION && pool->mode == PGW_POOL_SESSION)
        pgw_pool_close_idle(pool);
    free(old_cq);
    if (cq_changed)
        pgw_params_deinit(&pool->cq_params);  /* the new one's are read at its servers' logins */
    char *sig = build_signature(db);
    if (!sig)
        return false;
    if (pool->signature && strcmp(sig, pool->signature) == 0) {
        free(sig);
        if (cq_changed)
            pgw_pool_settings_changed(pool);   /* a refusal of the old one */
        return cq_changed;
    }
    bool first = pool->signature == NULL;
    /* Without its hosts the entry is not taken (the signature stays: the
     * next reconfigure tries again) rather than kept under new keys. */
    if (!copy_keys(pool, db) || !make_hosts(pool, db)) {
        free(sig);
        return false;
    }
    free(pool->signature);
    pool->signature = sig;
    /* A refusal of the old keys (password, user, dbname...) says nothing
     * about the new ones: no server_login_retry wait for them. */
    pgw_pool_settings_changed(pool);
    return !first;
}

void pgw_pool_set_password(struct pgw_pool *pool, const char *password, bool looked_up)
{
    if (!password) {
        if (!pool->password || pool->password_looked_up)
            return;
        free(pool->password);
        pool->password = NULL;
    } else if (pool->password && strcmp(pool->password, password) == 0) {
        pool->password_looked_up = looked_up;
        return;
    } else {
        char *pw = strdup(password);
        if (!pw)
            return;
        free(pool->password);
        pool->password = pw;
    }
    pool->password_looked_up = looked_up;
    pgw_pool_settings_changed(pool);   /* refused with the old password */
}

struct pgw_pool *pgw_pool_get(struct pgw_pool_set *set, const struct pgw_conf_db *db,
                              const char *dbname, const char *user, const char *password)
{
    /* An entry that sets user= has one pool, whoever its clients are (as
     * PgBouncer's forced user): its pool_size is the entry's, not one per
     * client name (with auth_type = any, any number of names). */
    if (db && db->user && *db->user)
        user = db->user;
    struct pgw_list *n;
    for (n = set->pools.next; n != &set->pools; n = n->next) {
        struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        if (strcmp(p->dbname, dbname) || strcmp(p->user, user))
            continue;
        pgw_pool_set_password(p, password, false);
        if (p->db_src != db && pgw_pool_apply_db(p, db))
            pgw_pool_reconnect(p, true);
        p->last_used = p->last_held = pgw_mono_now(set->loop);  /* about to be used: not expired */
        p->expiring = false;
        return p;
    }
    struct pgw_pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return NULL;
    pool->set = set;
    pgw_list_init(&pool->node);          /* pgw_pool_free below: not in the set yet */
    pgw_pool_init_queues(pool);
    pool->dbname = strdup(dbname);
    pool->user = strdup(user);
    pool->password = password ? strdup(password) : NULL;
    pool->last_used = pool->last_held = pgw_mono_now(set->loop);
    pgw_pool_apply_db(pool, db);
    if (!pool->dbname || !pool->user || (password && !pool->password) || !pool->signature ||
        !pool->hosts) {
        pgw_pool_free(pool);
        return NULL;
    }
    pgw_list_append(&set->pools, &pool->node);
    char names[PGW_POOL_LOG_NAMES];
    pgw_info("pool_create", "%s backend=%s hosts=%d pool_size=%d",
             pgw_pool_log_names(pool, names, sizeof(names)), pool->hosts[0].be->address,
             pool->nhosts, pool->pool_size);
    return pool;
}

/* Frees the pool's memory; its servers and waiters must be gone. */
void pgw_pool_free(struct pgw_pool *pool)
{
    ev_timer_stop(pool->set->loop, &pool->reserve_timer);
    ev_timer_stop(pool->set->loop, &pool->turn_timer);
    if (pgw_list_linked(&pool->node))
        pgw_list_del(&pool->node);
    free_strv(pool->keys, pool->nkeys);
    free_strv(pool->vals, pool->nkeys);
    free(pool->signature);
    unref_hosts(pool);
    free(pool->connect_query);
    free(pool->dbname);
    free(pool->user);
    free(pool->password);
    free(pool->login_error);
    free(pool->mismatch_error);
    pgw_params_deinit(&pool->defaults);
    pgw_params_deinit(&pool->cq_params);
    free(pool);
}
