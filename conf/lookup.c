/*
 * lookup.c - reading a loaded config: finding [databases] and [users]
 * entries, and the effective value of each inherited setting (user entry,
 * then database entry, then the general key).
 */
#include "conf/conf_int.h"
#include "common/hmap.h"
#include "common/log.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* [databases] by name: open addressing, linear probing, at most half
 * full.  Each login looks its database up, and a file of 40 000 entries
 * took 6.6 s to load, looking each new one up among all before it (hunt:
 * config). */
static size_t db_slot0(const struct pgw_config *cfg, const char *name)
{
    return (size_t)pgw_hash_bytes(name, strlen(name), 0) & (cfg->db_nslots - 1);
}

int conf_db_find(const struct pgw_config *cfg, const char *name)
{
    if (!cfg->db_slots) {
        for (int i = 0; i < cfg->ndbs; i++)
            if (strcmp(cfg->dbs[i].name, name) == 0)
                return i;
        return -1;
    }
    for (size_t k = db_slot0(cfg, name);; k = (k + 1) & (cfg->db_nslots - 1)) {
        int i = cfg->db_slots[k];
        if (i < 0 || strcmp(cfg->dbs[i].name, name) == 0)
            return i;
    }
}

static void db_slot_put(struct pgw_config *cfg, int i)
{
    size_t k = db_slot0(cfg, cfg->dbs[i].name);
    while (cfg->db_slots[k] >= 0)
        k = (k + 1) & (cfg->db_nslots - 1);
    cfg->db_slots[k] = i;
}

void conf_db_indexed(struct pgw_config *cfg, int i)
{
    if (!cfg->db_slots && i > 0)
        return;                      /* memory was short: looked through */
    if ((size_t)cfg->ndbs * 2 > cfg->db_nslots) {
        size_t n = cfg->db_nslots ? cfg->db_nslots * 2 : 64;
        int *slots = malloc(n * sizeof(*slots));
        free(cfg->db_slots);
        cfg->db_slots = slots;
        cfg->db_nslots = slots ? n : 0;
        if (!slots)
            return;
        memset(slots, 0xff, n * sizeof(*slots));      /* -1 each */
        for (int j = 0; j < cfg->ndbs; j++)
            db_slot_put(cfg, j);
        return;
    }
    db_slot_put(cfg, i);
}

const struct pgw_conf_db *pgw_conf_find_db(const struct pgw_config *cfg, const char *name)
{
    int i = conf_db_find(cfg, name);
    if (i < 0)
        i = conf_db_find(cfg, "*");
    return i >= 0 ? &cfg->dbs[i] : NULL;
}

const struct pgw_conf_user *pgw_conf_find_user(const struct pgw_config *cfg, const char *name)
{
    for (int i = 0; i < cfg->nusers; i++)
        if (strcmp(cfg->users[i].name, name) == 0)
            return &cfg->users[i];
    return NULL;
}

const struct pgw_conf_peer *pgw_conf_find_peer(const struct pgw_config *cfg, int id)
{
    for (int i = 0; i < cfg->npeers; i++)
        if (cfg->peers[i].id == id)
            return &cfg->peers[i];
    return NULL;
}

enum pgw_pool_mode pgw_conf_pool_mode(const struct pgw_config *cfg,
                                      const struct pgw_conf_db *db,
                                      const struct pgw_conf_user *user)
{
    if (user && user->pool_mode >= 0)
        return (enum pgw_pool_mode)user->pool_mode;
    if (db && db->pool_mode >= 0)
        return (enum pgw_pool_mode)db->pool_mode;
    return cfg->pool_mode;
}

int pgw_conf_pool_size(const struct pgw_config *cfg, const struct pgw_conf_db *db,
                       const struct pgw_conf_user *user)
{
    if (user && user->pool_size >= 0)
        return user->pool_size;
    if (db && db->pool_size >= 0)
        return db->pool_size;
    return cfg->default_pool_size;
}

int pgw_conf_min_pool_size(const struct pgw_config *cfg, const struct pgw_conf_db *db)
{
    return db && db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size;
}

int pgw_conf_reserve_pool_size(const struct pgw_config *cfg, const struct pgw_conf_db *db,
                               const struct pgw_conf_user *user)
{
    if (user && user->reserve_pool_size >= 0)
        return user->reserve_pool_size;
    return db && db->reserve_pool_size >= 0 ? db->reserve_pool_size : cfg->reserve_pool_size;
}

int pgw_conf_max_db_connections(const struct pgw_config *cfg, const struct pgw_conf_db *db)
{
    return db && db->max_db_connections >= 0 ? db->max_db_connections
                                             : cfg->max_db_connections;
}

int pgw_conf_max_db_client_connections(const struct pgw_config *cfg,
                                       const struct pgw_conf_db *db)
{
    return db && db->max_db_client_connections >= 0 ? db->max_db_client_connections
                                                    : cfg->max_db_client_connections;
}

int pgw_conf_max_user_client_connections(const struct pgw_config *cfg,
                                         const struct pgw_conf_user *user)
{
    return user && user->max_user_client_connections >= 0 ? user->max_user_client_connections
                                                          : cfg->max_user_client_connections;
}

int pgw_conf_log_level(const struct pgw_config *cfg)
{
    if (cfg->verbose > 0)
        return PGW_LOG_DEBUG;
    return cfg->log_level && *cfg->log_level ? pgw_log_level_parse(cfg->log_level) : -1;
}

double pgw_conf_server_lifetime(const struct pgw_config *cfg, const struct pgw_conf_db *db)
{
    return db && db->server_lifetime >= 0 ? db->server_lifetime : cfg->server_lifetime;
}

const char *pgw_conf_auth_user(const struct pgw_config *cfg, const struct pgw_conf_db *db)
{
    if (db && db->auth_user && *db->auth_user)
        return db->auth_user;
    return *cfg->auth_user ? cfg->auth_user : NULL;
}

const char *pgw_conf_auth_dbname(const struct pgw_config *cfg, const struct pgw_conf_db *db)
{
    if (db && db->auth_dbname && *db->auth_dbname)
        return db->auth_dbname;
    return *cfg->auth_dbname ? cfg->auth_dbname : NULL;
}

const char *pgw_conf_auth_query(const struct pgw_config *cfg, const struct pgw_conf_db *db)
{
    if (db && db->auth_query && *db->auth_query)
        return db->auth_query;
    return cfg->auth_query;
}

int pgw_conf_max_user_connections(const struct pgw_config *cfg,
                                  const struct pgw_conf_user *user)
{
    return user && user->max_user_connections >= 0 ? user->max_user_connections
                                                   : cfg->max_user_connections;
}

double pgw_conf_query_timeout(const struct pgw_config *cfg, const struct pgw_conf_user *user)
{
    return user && user->query_timeout >= 0 ? user->query_timeout : cfg->query_timeout;
}

double pgw_conf_idle_transaction_timeout(const struct pgw_config *cfg,
                                         const struct pgw_conf_user *user)
{
    return user && user->idle_transaction_timeout >= 0 ? user->idle_transaction_timeout
                                                       : cfg->idle_transaction_timeout;
}

double pgw_conf_transaction_timeout(const struct pgw_config *cfg,
                                         const struct pgw_conf_user *user)
{
    return user && user->transaction_timeout >= 0 ? user->transaction_timeout
                                                       : cfg->transaction_timeout;
}

double pgw_conf_client_idle_timeout(const struct pgw_config *cfg,
                                    const struct pgw_conf_user *user)
{
    return user && user->client_idle_timeout >= 0 ? user->client_idle_timeout
                                                  : cfg->client_idle_timeout;
}

double pgw_conf_query_wait_timeout(const struct pgw_config *cfg, const struct pgw_conf_db *db,
                                   const struct pgw_conf_user *user)
{
    if (user && user->query_wait_timeout >= 0)
        return user->query_wait_timeout;
    if (db && db->query_wait_timeout >= 0)
        return db->query_wait_timeout;
    return cfg->query_wait_timeout;
}

bool pgw_conf_list_has(const char *list, const char *name)
{
    if (!list || !name || !*name)
        return false;
    size_t want = strlen(name);
    const char *p = list;
    while (*p) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        size_t n = strcspn(p, ", \t\r\n");
        if (n == want && strncmp(p, name, n) == 0)
            return true;
        p += n;
    }
    return false;
}

/* ---- open files ---- */

int pgw_conf_server_fds(const struct pgw_config *cfg)
{
    int user_size = -1;              /* the largest [users] pool_size */
    for (int i = 0; i < cfg->nusers; i++)
        if (cfg->users[i].pool_size > user_size)
            user_size = cfg->users[i].pool_size;
    long long total = 0;
    for (int i = 0; i < cfg->ndbs; i++) {
        const struct pgw_conf_db *db = &cfg->dbs[i];
        long long n = pgw_conf_pool_size(cfg, db, NULL);
        if (user_size > n)
            n = user_size;
        n += pgw_conf_reserve_pool_size(cfg, db, NULL);
        int cap = pgw_conf_max_db_connections(cfg, db);
        if (cap > 0 && n > cap)
            n = cap;
        total += n;
        if (total > INT_MAX / 2)
            return INT_MAX / 2;
    }
    return (int)total;
}

long long pgw_conf_fd_reserve(long long nofile)
{
    long long r = PGW_FD_FIXED + (nofile > 0 ? nofile / 8 : 0);
    return r < PGW_FD_RESERVE_MAX ? r : PGW_FD_RESERVE_MAX;
}

int pgw_conf_client_cap(const struct pgw_config *cfg, long long nofile)
{
    long long servers = pgw_conf_server_fds(cfg);
    if (servers > nofile / 2)
        servers = nofile / 2;
    long long room = nofile - servers - pgw_conf_fd_reserve(nofile);
    if (room < nofile / 4)           /* the admin console stays reachable */
        room = nofile / 4;
    return room < cfg->max_client_conn ? (int)room : cfg->max_client_conn;
}

static bool param_name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && ((c >= '0' && c <= '9') || c == '$'));
}

int pgw_conf_track_extra(const char *list,
                         char names[][PGW_CONF_PARAM_NAME_MAX + 1], char *err, size_t errlen)
{
    int n = 0;
    const char *p = list ? list : "";
    for (;;) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        if (!*p)
            return n;
        size_t len = strcspn(p, ", \t\r\n\v\f");
        bool ok = len <= PGW_CONF_PARAM_NAME_MAX;
        for (size_t i = 0, part = 0; ok && i < len; i++, part++) {
            if (p[i] == '.' && part > 0 && i + 1 < len) {
                part = (size_t)-1;                   /* the next one starts a part */
                continue;
            }
            ok = param_name_char(p[i], part == 0);
        }
        if (!ok) {
            snprintf(err, errlen, "\"%.*s\" is not a parameter name (expected letters, digits, "
                     "'_' and '$', at most %d bytes, starting with a letter or '_')",
                     (int)(len < 100 ? len : 100), p, PGW_CONF_PARAM_NAME_MAX);
            return -1;
        }
        char name[PGW_CONF_PARAM_NAME_MAX + 1];
        for (size_t i = 0; i < len; i++)
            name[i] = (char)tolower((unsigned char)p[i]);
        name[len] = '\0';
        p += len;
        bool dup = false;
        for (int i = 0; i < n && !dup; i++)
            dup = strcmp(names[i], name) == 0;
        if (dup)
            continue;
        if (n == PGW_CONF_TRACK_EXTRA_MAX) {
            snprintf(err, errlen, "more than %d names", PGW_CONF_TRACK_EXTRA_MAX);
            return -1;
        }
        memcpy(names[n++], name, len + 1);
    }
}
