/*
 * peers.c - [peers] entries: `id = host=... port=...`, PgBouncer's peering.
 * The id is 1..16383 (PgBouncer's range); host is an IP address or a Unix
 * socket directory (an absolute path), never a name, so that a cancel is
 * passed on without a lookup on the loop; port defaults to 6432.  The
 * address is resolved here, once, into the entry.  PgBouncer's pool_size
 * (its connections to the peer) is accepted and unused: pgwharf opens one
 * connection per forwarded cancel.  An entry with any error is reported
 * and left out.
 */
#include "conf/conf_int.h"
#include "common/err.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stddef.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

void conf_peer_free(struct pgw_conf_peer *p)
{
    free(p->host);
    free(p->file);
    p->host = p->file = NULL;
}

int conf_peer_dup(struct pgw_conf_peer *dst, const struct pgw_conf_peer *src)
{
    *dst = *src;                         /* addr and addrlen: plain bytes */
    if (CONF_OWN_STRS(&dst->host, &dst->file) == 0)
        return 0;
    conf_peer_free(dst);
    return PGW_ENOMEM;
}

/* 0, PGW_ECONFIG with err, PGW_ENOMEM or PGW_ENOTFOUND. */
static int peer_key(struct pgw_conf_peer *p, const char *key, const char *val, char *err,
                    size_t errlen)
{
    if (strcasecmp(key, "host") == 0) {
        char *copy = strdup(val);
        if (!copy)
            return PGW_ENOMEM;
        free(p->host);
        p->host = copy;
        return 0;
    }
    if (strcasecmp(key, "port") == 0)
        return conf_parse_int(val, 1, 65535, &p->port, err, errlen);
    if (strcasecmp(key, "pool_size") == 0)
        return conf_parse_int(val, 1, INT_MAX, &p->pool_size, err, errlen);
    return PGW_ENOTFOUND;
}

/* host and port into p->addr; 0 or PGW_ECONFIG with err. */
static int peer_resolve(struct pgw_conf_peer *p, char *err, size_t errlen)
{
    memset(&p->addr, 0, sizeof(p->addr));
    if (p->host[0] == '/' || p->host[0] == '@') {
        /* "@": a name in the abstract namespace (no trailing NUL in the
         * address), as the peer's unix_socket_dir = @... listens */
        struct sockaddr_un *sun = (struct sockaddr_un *)&p->addr;
        sun->sun_family = AF_UNIX;
        int n = snprintf(sun->sun_path, sizeof(sun->sun_path), "%s/.s.PGSQL.%d", p->host,
                         p->port);
        if (n < 0 || (size_t)n >= sizeof(sun->sun_path)) {
            snprintf(err, errlen, "host: the socket path %s/.s.PGSQL.%d is longer than %zu "
                     "bytes", p->host, p->port, sizeof(sun->sun_path) - 1);
            return PGW_ECONFIG;
        }
        p->addrlen = (socklen_t)sizeof(*sun);
        if (p->host[0] == '@') {
            sun->sun_path[0] = '\0';
            p->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n);
        }
        return 0;
    }
    struct sockaddr_in *in4 = (struct sockaddr_in *)&p->addr;
    if (inet_pton(AF_INET, p->host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)p->port);
        p->addrlen = (socklen_t)sizeof(*in4);
        return 0;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&p->addr;
    if (inet_pton(AF_INET6, p->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p->port);
        p->addrlen = (socklen_t)sizeof(*in6);
        return 0;
    }
    snprintf(err, errlen, "host: expected an IP address or a Unix socket directory (host "
             "names are not resolved), got \"%s\"", p->host);
    return PGW_ECONFIG;
}

/* Parse the settings and resolve; returns the number of errors reported. */
static int parse_settings(struct conf_loader *ld, struct pgw_conf_peer *p, const char *file,
                          int line, const char *settings)
{
    char err[CONF_ERRLEN], *key, *val;
    const char *s = settings;
    int rc, nerrors = 0;
    while ((rc = conf_connstr_next(&s, &key, &val, err, sizeof(err))) > 0) {
        rc = peer_key(p, key, val, err, sizeof(err));
        if (rc == PGW_ENOTFOUND)
            conf_error(&ld->rep, file, line, "peer %d: unknown key \"%s\" (expected host, "
                       "port or pool_size)", p->id, key);
        else if (rc == PGW_ECONFIG)
            conf_error(&ld->rep, file, line, "peer %d: %s: %s", p->id, key, err);
        else if (rc == PGW_ENOMEM)
            ld->rep.oom = true;
        nerrors += rc < 0;
        free(key);
        free(val);
    }
    if (rc == PGW_ECONFIG)
        conf_error(&ld->rep, file, line, "peer %d: %s", p->id, err);
    else if (rc == PGW_ENOMEM)
        ld->rep.oom = true;
    nerrors += rc < 0;
    if (nerrors)
        return nerrors;
    if (!p->host || !*p->host) {
        conf_error(&ld->rep, file, line, "peer %d: host: missing (an IP address or a Unix "
                   "socket directory)", p->id);
        return 1;
    }
    if (peer_resolve(p, err, sizeof(err)) != 0) {
        conf_error(&ld->rep, file, line, "peer %d: %s", p->id, err);
        return 1;
    }
    return 0;
}

void conf_peer_add(struct conf_loader *ld, const char *file, int line, const char *name,
                   const char *settings)
{
    char err[CONF_ERRLEN];
    struct pgw_conf_peer p = { .port = 6432, .pool_size = -1 };
    if (conf_parse_int(name, 1, PGW_PEER_ID_MAX, &p.id, err, sizeof(err)) != 0) {
        conf_error(&ld->rep, file, line, "[peers]: expected a peer id from 1 to %d, got \"%s\"",
                   PGW_PEER_ID_MAX, name);
        return;
    }
    /* An id defined again replaces the earlier line, in its place, with a
     * warning, as in [databases] and [users]. */
    struct pgw_config *cfg = ld->cfg;
    int replace = -1;
    for (int i = 0; i < cfg->npeers && replace < 0; i++) {
        if (cfg->peers[i].id == p.id) {
            conf_warn(&ld->rep, file, line, "peer %d defined again: replaces %s:%d", p.id,
                      cfg->peers[i].file, cfg->peers[i].line);
            replace = i;
        }
    }
    p.file = conf_strdup(&ld->rep, file);
    p.line = line;
    if (!p.file || parse_settings(ld, &p, file, line, settings) != 0) {
        conf_peer_free(&p);
        return;
    }
    if (CONF_ENTRY_PUT(cfg->peers, cfg->npeers, replace, p, conf_peer_free) != 0) {
        ld->rep.oom = true;
        conf_peer_free(&p);
    }
}
