/*
 * print.c - pgw_conf_print: the effective settings as an INI file that
 * loads back to the same values (what `pgwharf --check` shows): every
 * general key from the key table, then [databases], [users] and [peers].
 * Secrets in connection strings print as ****.
 */
#include "conf/conf_int.h"

#include <stdio.h>
#include <string.h>

static const char *const secret_keys[] = {
    "password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key",
};

static bool is_secret(const char *key)
{
    for (size_t i = 0; i < sizeof(secret_keys) / sizeof(secret_keys[0]); i++)
        if (strcmp(secret_keys[i], key) == 0)
            return true;
    return false;
}

/* An entry name, double-quoted unless it is plain. */
static void print_name(FILE *f, const char *name)
{
    size_t n = strlen(name);
    if (n > 0 && strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              "0123456789_.-*$") == n) {
        fputs(name, f);
        return;
    }
    fputc('"', f);
    for (const char *p = name; *p; p++) {
        if (*p == '"')
            fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

static void print_int(FILE *f, const char *key, int v)
{
    if (v >= 0)
        fprintf(f, " %s=%d", key, v);
}

static void print_dur(FILE *f, const char *key, double v)
{
    char num[64];
    if (v < 0)
        return;
    conf_format_num(num, sizeof(num), v);
    fprintf(f, " %s=%s", key, num);
}

static void print_str(FILE *f, const char *key, const char *v)
{
    if (!v)
        return;
    fprintf(f, " %s=", key);
    conf_connstr_quote(f, v);
}

static void print_db(FILE *f, const struct pgw_conf_db *db)
{
    print_name(f, db->name);
    fputs(" =", f);
    for (int i = 0; i < db->nconn; i++) {
        if (is_secret(db->conn_keys[i]))
            fprintf(f, " %s=****", db->conn_keys[i]);
        else
            print_str(f, db->conn_keys[i], db->conn_vals[i]);
    }
    print_int(f, "pool_size", db->pool_size);
    print_int(f, "min_pool_size", db->min_pool_size);
    print_int(f, "reserve_pool_size", db->reserve_pool_size);
    print_int(f, "max_db_connections", db->max_db_connections);
    print_int(f, "max_db_client_connections", db->max_db_client_connections);
    print_dur(f, "server_lifetime", db->server_lifetime);
    print_dur(f, "query_wait_timeout", db->query_wait_timeout);
    if (db->pool_mode >= 0)
        fprintf(f, " pool_mode=%s", pgw_pool_mode_name((enum pgw_pool_mode)db->pool_mode));
    if (db->load_balance_hosts >= 0)
        fprintf(f, " load_balance_hosts=%s",
                pgw_load_balance_name((enum pgw_load_balance)db->load_balance_hosts));
    print_str(f, "auth_user", db->auth_user);
    print_str(f, "auth_dbname", db->auth_dbname);
    print_str(f, "auth_query", db->auth_query);
    print_str(f, "connect_query", db->connect_query);
    fputc('\n', f);
}

static void print_user(FILE *f, const struct pgw_conf_user *u)
{
    print_name(f, u->name);
    fputs(" =", f);
    if (u->pool_mode >= 0)
        fprintf(f, " pool_mode=%s", pgw_pool_mode_name((enum pgw_pool_mode)u->pool_mode));
    print_int(f, "pool_size", u->pool_size);
    print_int(f, "max_user_connections", u->max_user_connections);
    print_int(f, "max_user_client_connections", u->max_user_client_connections);
    print_int(f, "reserve_pool_size", u->reserve_pool_size);
    print_dur(f, "query_timeout", u->query_timeout);
    print_dur(f, "idle_transaction_timeout", u->idle_transaction_timeout);
    print_dur(f, "transaction_timeout", u->transaction_timeout);
    print_dur(f, "client_idle_timeout", u->client_idle_timeout);
    print_dur(f, "query_wait_timeout", u->query_wait_timeout);
    fputc('\n', f);
}

static void print_peer(FILE *f, const struct pgw_conf_peer *p)
{
    fprintf(f, "%d =", p->id);
    print_str(f, "host", p->host);
    print_int(f, "port", p->port);
    print_int(f, "pool_size", p->pool_size);
    fputc('\n', f);
}

void pgw_conf_print(FILE *f, const struct pgw_config *cfg)
{
    char value[256];
    fputs("[pgwharf]\n", f);
    for (int i = 0; i < conf_key_count(); i++) {
        const struct conf_key *k = conf_key_at(i);
        const char *s = conf_key_string(cfg, k);
        if (!s) {
            conf_key_get(cfg, k, value, sizeof(value));
            s = value;
        }
        fprintf(f, "%s = %s\n", k->name, s);
    }
    fputs("\n[databases]\n", f);
    for (int i = 0; i < cfg->ndbs; i++)
        print_db(f, &cfg->dbs[i]);
    fputs("\n[users]\n", f);
    for (int i = 0; i < cfg->nusers; i++)
        print_user(f, &cfg->users[i]);
    fputs("\n[peers]\n", f);
    for (int i = 0; i < cfg->npeers; i++)
        print_peer(f, &cfg->peers[i]);
}
