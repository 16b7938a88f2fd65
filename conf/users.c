/*
 * users.c - [users] entries: `name = key=value ...` with pool_mode,
 * pool_size, max_user_connections, query_timeout, idle_transaction_timeout,
 * client_idle_timeout and query_wait_timeout.  Fields not given stay -1
 * (inherit).  An entry with any error is reported and left out.
 */
#include "conf/conf_int.h"
#include "common/err.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void conf_user_free(struct pgw_conf_user *u)
{
    free(u->name);
    free(u->file);
    u->name = u->file = NULL;
}

int conf_user_dup(struct pgw_conf_user *dst, const struct pgw_conf_user *src)
{
    *dst = *src;
    if (CONF_OWN_STRS(&dst->name, &dst->file) == 0)
        return 0;
    conf_user_free(dst);
    return PGW_ENOMEM;
}

static void user_init(struct pgw_conf_user *u)
{
    memset(u, 0, sizeof(*u));
    u->pool_mode = u->pool_size = u->max_user_connections = u->max_user_client_connections = -1;
    u->query_timeout = u->idle_transaction_timeout = u->client_idle_timeout = -1;
    u->transaction_timeout = u->reserve_pool_size = u->query_wait_timeout = -1;
}


/* 0, PGW_ECONFIG with err, or PGW_ENOTFOUND (every PgBouncer user key is
 * implemented). */
static int user_key(struct pgw_conf_user *u, const char *key, const char *val, char *err,
                    size_t errlen)
{
    if (strcasecmp(key, "pool_mode") == 0)
        return conf_parse_pool_mode(val, &u->pool_mode, err, errlen);
    if (strcasecmp(key, "pool_size") == 0)
        return conf_parse_int_unset(val, 1, INT_MAX, &u->pool_size, err, errlen);
    if (strcasecmp(key, "reserve_pool_size") == 0)
        return conf_parse_int_unset(val, 0, INT_MAX, &u->reserve_pool_size, err, errlen);
    if (strcasecmp(key, "max_user_connections") == 0)
        return conf_parse_int_unset(val, 0, INT_MAX, &u->max_user_connections, err, errlen);
    if (strcasecmp(key, "max_user_client_connections") == 0)
        return conf_parse_int_unset(val, 0, INT_MAX, &u->max_user_client_connections, err, errlen);
    if (strcasecmp(key, "query_timeout") == 0)
        return conf_parse_entry_dur(val, &u->query_timeout, err, errlen);
    if (strcasecmp(key, "idle_transaction_timeout") == 0)
        return conf_parse_entry_dur(val, &u->idle_transaction_timeout, err, errlen);
    if (strcasecmp(key, "transaction_timeout") == 0)
        return conf_parse_entry_dur(val, &u->transaction_timeout, err, errlen);
    if (strcasecmp(key, "client_idle_timeout") == 0)
        return conf_parse_entry_dur(val, &u->client_idle_timeout, err, errlen);
    if (strcasecmp(key, "query_wait_timeout") == 0)
        return conf_parse_dur_unset(val, &u->query_wait_timeout, err, errlen);
    return PGW_ENOTFOUND;
}

/* Parse the settings; returns the number of errors reported. */
static int parse_settings(struct conf_loader *ld, struct pgw_conf_user *u, const char *file,
                          int line, const char *settings)
{
    char err[CONF_ERRLEN], *key, *val;
    const char *p = settings;
    int rc, nerrors = 0;
    while ((rc = conf_connstr_next(&p, &key, &val, err, sizeof(err))) > 0) {
        rc = user_key(u, key, val, err, sizeof(err));
        if (rc == PGW_ENOTFOUND)
            conf_error(&ld->rep, file, line, "user \"%s\": unknown key \"%s\"", u->name, key);
        else if (rc != 0)
            conf_error(&ld->rep, file, line, "user \"%s\": %s: %s", u->name, key, err);
        nerrors += rc < 0;
        free(key);
        free(val);
    }
    if (rc == PGW_ECONFIG)
        conf_error(&ld->rep, file, line, "user \"%s\": %s", u->name, err);
    else if (rc == PGW_ENOMEM)
        ld->rep.oom = true;
    return nerrors + (rc < 0);
}

void conf_user_add(struct conf_loader *ld, const char *file, int line, const char *name,
                   const char *settings)
{
    /* A user defined again replaces the earlier line, in its place (as in
     * PgBouncer, where the later line wins), with a warning. */
    struct pgw_config *cfg = ld->cfg;
    int replace = -1;
    for (int i = 0; i < cfg->nusers && replace < 0; i++) {
        if (strcmp(cfg->users[i].name, name) == 0) {
            conf_warn(&ld->rep, file, line, "user \"%s\" defined again: replaces %s:%d", name,
                      cfg->users[i].file, cfg->users[i].line);
            replace = i;
        }
    }
    struct pgw_conf_user u;
    user_init(&u);
    u.name = conf_strdup(&ld->rep, name);
    u.file = conf_strdup(&ld->rep, file);
    u.line = line;
    if (!u.name || !u.file || parse_settings(ld, &u, file, line, settings) != 0) {
        conf_user_free(&u);
        return;
    }
    if (CONF_ENTRY_PUT(cfg->users, cfg->nusers, replace, u, conf_user_free) != 0) {
        ld->rep.oom = true;
        conf_user_free(&u);
    }
}
