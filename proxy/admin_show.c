/*
 * admin_show.c - SHOW commands of the admin console.
 *
 * Column names, order and types follow PgBouncer 1.24, so tools written
 * for PgBouncer (pgbouncer_exporter and the like) read them unchanged.  Where
 * pgwharf has no such value the column holds 0, "" or NULL of the right
 * type.  Timestamps are UTC.  SHOW BREAKERS is pgwharf's own.
 *
 * The live pool counts (pgw_admin_pool_rows) are shared with /metrics so
 * both always agree.
 */
#include "proxy/admin_int.h"
#include "proxy/prepared.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/clock.h"
#include "common/log.h"

#define I4 PGW_OID_INT4
#define I8 PGW_OID_INT8
#define TX PGW_OID_TEXT
#define TS PGW_OID_TEXT        /* times are text, as in PgBouncer (pgw_rs_time) */
#define NU PGW_OID_NUMERIC

/* ---- live pool counts ---- */

static int cmp_row_pool(const void *a, const void *b)
{
    const struct pgw_pool *x = ((const struct pgw_pool_row *)a)->pool;
    const struct pgw_pool *y = ((const struct pgw_pool_row *)b)->pool;
    return x < y ? -1 : x > y;
}

/* PgBouncer's order of pools: by database, then user. */
static int cmp_pool_names(const struct pgw_pool *x, const struct pgw_pool *y)
{
    int c = strcmp(pgw_pool_dbname(x), pgw_pool_dbname(y));
    return c ? c : strcmp(pgw_pool_user(x), pgw_pool_user(y));
}

static int cmp_pools(const void *a, const void *b)
{
    return cmp_pool_names(*(struct pgw_pool *const *)a, *(struct pgw_pool *const *)b);
}

/* The pools in PgBouncer's order (free() it); NULL with *n 0 when there
 * are none, with *n -1 when memory is short. */
static struct pgw_pool **pools_by_name(struct pgw_proxy *px, int *n)
{
    int count = 0;
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p))
        count++;
    *n = count;
    if (count == 0)
        return NULL;
    struct pgw_pool **pools = malloc(sizeof(*pools) * (size_t)count);
    if (!pools) {
        *n = -1;
        return NULL;
    }
    int i = 0;
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p))
        pools[i++] = p;
    qsort(pools, (size_t)count, sizeof(*pools), cmp_pools);
    return pools;
}

static struct pgw_pool_row *find_row(struct pgw_pool_row *sorted, int n, struct pgw_pool *pool)
{
    struct pgw_pool_row key = { .pool = pool };
    return bsearch(&key, sorted, (size_t)n, sizeof(key), cmp_row_pool);
}

struct pgw_pool_row *pgw_admin_pool_rows(struct pgw_proxy *px, int *n)
{
    int count;
    *n = 0;
    struct pgw_pool **pools = pools_by_name(px, &count);
    if (!pools)
        return NULL;
    struct pgw_pool_row *rows = calloc((size_t)count, sizeof(*rows));
    struct pgw_pool_row *sorted = calloc((size_t)count, sizeof(*sorted));   /* by address */
    if (!rows || !sorted) {
        free(rows);
        free(sorted);
        free(pools);
        return NULL;
    }
    for (int i = 0; i < count; i++)
        sorted[i].pool = pools[i];
    qsort(sorted, (size_t)count, sizeof(*sorted), cmp_row_pool);
    /* Clients from the sessions, as SHOW CLIENTS shows them. */
    ev_tstamp now = pgw_mono_now(px->loop);
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
        struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
        struct pgw_pool_row *r = s->pool ? find_row(sorted, count, s->pool) : NULL;
        if (!r)
            continue;
        ev_tstamp since;
        switch (s->state) {
        case PGW_SS_IDLE:
            /* Its LISTEN waits for the hub's server: it waits for a server. */
            if (pgw_notify_waits_for_server(s, &since)) {
                r->cl_waiting++;
                if (now - since > r->maxwait)
                    r->maxwait = now - since;
            } else {
                r->cl_active++;
            }
            break;
        case PGW_SS_LINKED:
            /* Handed a server that still runs the query of a client that
             * left ahead of its own (server_pipeline_depth), it waits. */
            if (s->pipe_waits) {
                r->cl_waiting++;
                if (now - s->waiter.since > r->maxwait)
                    r->maxwait = now - s->waiter.since;
                break;
            }
            /* fall through */
        case PGW_SS_LOGIN_SYNC:
            r->cl_active++;
            break;
        case PGW_SS_WAIT_SERVER:
        case PGW_SS_LOGIN_WAIT:
            r->cl_waiting++;
            /* Queued on a busy server (server_pipeline_depth), it waits
             * for that server: its wait counts as the pool's queue's does. */
            if (s->pipe_srv && now - s->waiter.since > r->maxwait)
                r->maxwait = now - s->waiter.since;
            break;
        default:
            break;
        }
    }
    for (int i = 0; i < count; i++) {
        struct pgw_pool *p = pools[i];
        struct pgw_pool_row *r = &rows[i];
        *r = *find_row(sorted, count, p);
        struct pgw_pool_stats st;
        pgw_pool_get_stats(p, &st);
        r->sv_active = st.sv_active;
        r->sv_idle = st.sv_idle;
        r->sv_used = st.sv_used;
        r->sv_tested = st.sv_tested;
        r->sv_login = st.sv_login;
        r->bridges = st.sv_detached;
        if (st.maxwait > r->maxwait)
            r->maxwait = st.maxwait;
        r->paused = pgw_admin_db_paused(px, pgw_pool_dbname(p));
    }
    free(sorted);
    free(pools);
    *n = count;                       /* in PgBouncer's order, as pools_by_name */
    return rows;
}

/* ---- helpers ---- */

/* "host:port" (host may hold ':' for IPv6) into its parts. */
static void split_address(const char *address, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(address, ':');
    size_t n = colon ? (size_t)(colon - address) : strlen(address);
    if (n >= hostlen)
        n = hostlen - 1;
    memcpy(host, address, n);
    host[n] = '\0';
    *port = colon ? atoi(colon + 1) : 0;
    if (host[0] == '/' || host[0] == '@')     /* a socket directory or abstract name */
        snprintf(host, hostlen, "unix");
}

static void sockaddr_text(const struct sockaddr_storage *ss, char *host, size_t hostlen,
                          int *port)
{
    snprintf(host, hostlen, "unix");
    *port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)hostlen);
        *port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)hostlen);
        *port = ntohs(in6->sin6_port);
    }
}

/* The address a server socket is connected to, when it is a TCP one: an
 * entry's host given as a name shows the address it reached, as PgBouncer
 * shows it.  false (host/port untouched) otherwise: not connected yet, or
 * a Unix socket ("unix" and the configured port, from the address). */
static bool peer_address(int fd, char *host, size_t hostlen, int *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) < 0 ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
        return false;
    sockaddr_text(&ss, host, hostlen, port);
    return true;
}

static void local_address(int fd, char *host, size_t hostlen, int *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(host, hostlen, "%s", "");
        *port = 0;
        return;
    }
    sockaddr_text(&ss, host, hostlen, port);
}

static int peer_pid(const struct pgw_session *s)
{
    if (!s->unix_sock || s->fd < 0)
        return 0;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(s->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return 0;
    return (int)cred.pid;
}

/* Its lone LISTEN/UNLISTEN waits for the hub's server (notify.c). */
static bool waits_for_hub(const struct pgw_session *s)
{
    ev_tstamp since;
    return pgw_notify_waits_for_server(s, &since);
}

static const char *client_state(const struct pgw_session *s)
{
    switch (s->state) {
    case PGW_SS_LINKED:
        if (s->pipe_waits)
            return "waiting";       /* as SHOW POOLS counts it */
        /* fall through */
    case PGW_SS_LOGIN_SYNC:
        return s->cancel_inflight ? "active_cancel_req" : "active";
    case PGW_SS_WAIT_SERVER:
    case PGW_SS_LOGIN_WAIT:
        return "waiting";
    case PGW_SS_IDLE:
        return waits_for_hub(s) ? "waiting" : "idle";
    case PGW_SS_ADMIN:
        return "idle";
    default:
        return NULL;         /* not logged in yet, or going: not listed */
    }
}

static const char *pool_mode_text(enum pgw_pool_mode m) { return pgw_pool_mode_name(m); }

/* PgBouncer's tls column: "TLSv1.3/TLS_AES_256_GCM_SHA384", "" without TLS.
 * On a server link (pgwharf the TLS client) PgBouncer adds the key
 * exchange the server chose: "/ECDH=prime256v1" (an elliptic curve of
 * OpenSSL's short names; X25519 and the like add nothing there) or
 * "/DH=2048"; a client's row has none, as there. */
static const char *tls_text(void *ssl, bool server_link, char *buf, size_t len)
{
    buf[0] = '\0';
    if (!ssl)
        return buf;
    char kx[80] = "";
    EVP_PKEY *pk = NULL;
    if (server_link && SSL_get_peer_tmp_key((SSL *)ssl, &pk) == 1 && pk) {
        char group[64];
        if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC &&
            EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                           sizeof(group), NULL) == 1)
            snprintf(kx, sizeof(kx), "/ECDH=%s", group);
        else if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_DH)
            snprintf(kx, sizeof(kx), "/DH=%d", EVP_PKEY_get_bits(pk));
        EVP_PKEY_free(pk);
    }
    ERR_clear_error();
    snprintf(buf, len, "%s/%s%s", SSL_get_version((SSL *)ssl),
             SSL_CIPHER_get_name(SSL_get_current_cipher((SSL *)ssl)), kx);
    return buf;
}

/* ---- SHOW POOLS ---- */

/* The console pool's database: "pgbouncer", as PgBouncer's, unless
 * [databases] names a database so (the console is "pgwharf" then). */
static const char *console_pool_db(const struct pgw_proxy *px)
{
    const struct pgw_conf_db *d = pgw_conf_find_db(px->cfg, "pgbouncer");
    return d && strcmp(d->name, "pgbouncer") == 0 ? "pgwharf" : "pgbouncer";
}

/* The console's pool (user pgbouncer) against a pool: by database, then
 * user (< 0: the console's comes first). */
static int cmp_console_pool(const struct pgw_proxy *px, const struct pgw_pool *p)
{
    int c = strcmp(console_pool_db(px), pgw_pool_dbname(p));
    return c ? c : strcmp("pgbouncer", pgw_pool_user(p));
}

/* PgBouncer's row for its console pool: the console sessions are its
 * cl_active clients; it has no servers, and its pool_mode is statement. */
static void console_pool_row(struct pgw_rs *rs, struct pgw_proxy *px)
{
    int clients = 0;
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next)
        if (pgw_container_of(l, struct pgw_session, node)->state == PGW_SS_ADMIN)
            clients++;
    pgw_rs_row(rs);
    pgw_rs_text(rs, console_pool_db(px));
    pgw_rs_text(rs, "pgbouncer");
    pgw_rs_int(rs, clients);
    for (int k = 0; k < 12; k++)        /* cl_waiting ... maxwait_us */
        pgw_rs_int(rs, 0);
    pgw_rs_text(rs, "statement");
    pgw_rs_text(rs, NULL);
    pgw_rs_row_end(rs);
}

static int show_pools(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = {
        { "database", TX }, { "user", TX }, { "cl_active", I4 }, { "cl_waiting", I4 },
        { "cl_active_cancel_req", I4 }, { "cl_waiting_cancel_req", I4 },
        { "sv_active", I4 }, { "sv_active_cancel", I4 }, { "sv_being_canceled", I4 },
        { "sv_idle", I4 }, { "sv_used", I4 }, { "sv_tested", I4 }, { "sv_login", I4 },
        { "maxwait", I4 }, { "maxwait_us", I4 }, { "pool_mode", TX },
        { "load_balance_hosts", TX },
    };
    struct pgw_rs rs;
    int n;
    struct pgw_pool_row *rows = pgw_admin_pool_rows(s->px, &n);
    bool console_done = false;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    for (int i = 0; i <= n; i++) {
        /* PgBouncer's console pool, pgbouncer/pgbouncer, in its place by
         * name (as SHOW CLIENTS and SOCKETS list the console's clients). */
        if (!console_done && (i == n || cmp_console_pool(s->px, rows[i].pool) < 0)) {
            console_pool_row(&rs, s->px);
            console_done = true;
        }
        if (i == n)
            break;
        const struct pgw_pool_row *r = &rows[i];
        long long us = (long long)(r->maxwait * 1e6);
        pgw_rs_row(&rs);
        pgw_rs_text(&rs, pgw_pool_dbname(r->pool));
        pgw_rs_text(&rs, pgw_pool_user(r->pool));
        pgw_rs_int(&rs, r->cl_active);
        pgw_rs_int(&rs, r->cl_waiting);
        pgw_rs_int(&rs, 0);
        pgw_rs_int(&rs, 0);
        pgw_rs_int(&rs, r->sv_active);
        pgw_rs_int(&rs, 0);
        pgw_rs_int(&rs, 0);
        pgw_rs_int(&rs, r->sv_idle);
        pgw_rs_int(&rs, r->sv_used);
        pgw_rs_int(&rs, r->sv_tested);
        pgw_rs_int(&rs, r->sv_login);
        pgw_rs_int(&rs, us / 1000000);
        pgw_rs_int(&rs, us % 1000000);
        pgw_rs_text(&rs, pool_mode_text(pgw_pool_mode(r->pool)));
        pgw_rs_text(&rs, pgw_pool_load_balance(r->pool));
        pgw_rs_row_end(&rs);
    }
    free(rows);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

/* ---- SHOW CLIENTS / SERVERS ---- */

#define SOCKET_COLS                                                                        \
    { "type", TX }, { "user", TX }, { "database", TX }, { "replication", TX }, { "state", TX }, \
    { "addr", TX }, { "port", I4 }, { "local_addr", TX }, { "local_port", I4 },               \
    { "connect_time", TS }, { "request_time", TS }, { "wait", I4 }, { "wait_us", I4 },          \
    { "close_needed", I4 }, { "ptr", TX }, { "link", TX }, { "remote_pid", I4 }, { "tls", TX },  \
    { "application_name", TX }, { "prepared_statements", I4 }, { "id", I8 }

static const struct pgw_rs_col socket_cols[] = { SOCKET_COLS };

/* SHOW SOCKETS / ACTIVE_SOCKETS: SHOW CLIENTS' columns and PgBouncer's
 * positions in the buffer of what came in on the socket.  pgwharf keeps
 * one buffer per direction, in the client's session: what a client sent
 * is in its cbuf (cskip: body bytes of the message being relayed still to
 * come), what a server sent in its client's sbuf (sskip); a server not
 * lent has none.  recv_pos = bytes in the buffer, pkt_pos = parsed up to,
 * send_pos = sent up to; pkt_avail = received not yet parsed, send_avail =
 * parsed not yet sent; send_remain is 0, as in PgBouncer. */
static const struct pgw_rs_col sockets_cols[] = {
    SOCKET_COLS,
    { "recv_pos", I4 }, { "pkt_pos", I4 }, { "pkt_remain", I4 }, { "send_pos", I4 },
    { "send_remain", I4 }, { "pkt_avail", I4 }, { "send_avail", I4 },
};

struct sock_buf {
    int64_t recv_pos, pkt_pos, pkt_remain, send_pos, pkt_avail, send_avail;
};

static struct sock_buf sock_buf_of(const struct pgw_iobuf *b, uint32_t skip)
{
    struct sock_buf d = { .pkt_remain = skip };
    if (b) {
        d.recv_pos = b->len;
        d.pkt_pos = b->parsed;
        d.send_pos = b->sent;
        d.pkt_avail = (int64_t)b->len - b->parsed;
        d.send_avail = (int64_t)b->parsed - b->sent;
    }
    return d;
}

/* PgBouncer's "not empty": bytes not yet sent on, or a message part way. */
static bool sock_buf_active(const struct sock_buf *d)
{
    return d->recv_pos > d->send_pos || d->pkt_remain > 0;
}

/* A server's bytes are in its client's sbuf; a server not lent has none. */
static struct sock_buf server_buf(const struct pgw_server *srv)
{
    const struct pgw_session *cl = srv->link;
    return sock_buf_of(cl ? cl->sbuf : NULL, cl ? cl->sskip : 0);
}

static void sock_buf_values(struct pgw_rs *rs, const struct sock_buf *d)
{
    pgw_rs_int(rs, d->recv_pos);
    pgw_rs_int(rs, d->pkt_pos);
    pgw_rs_int(rs, d->pkt_remain);
    pgw_rs_int(rs, d->send_pos);
    pgw_rs_int(rs, 0);
    pgw_rs_int(rs, d->pkt_avail);
    pgw_rs_int(rs, d->send_avail);
}

/* One SHOW CLIENTS row; with buf (SHOW SOCKETS) its buffer columns too. */
static void client_row(struct pgw_rs *rs, const struct pgw_session *s, const char *state,
                       ev_tstamp now, const struct sock_buf *buf)
{
    char addr[INET6_ADDRSTRLEN + 8], laddr[INET6_ADDRSTRLEN + 8], ptr[32], link[32], tls[160];
    int port, lport;
    sockaddr_text(&s->addr, addr, sizeof(addr), &port);
    local_address(s->fd, laddr, sizeof(laddr), &lport);
    if (s->unix_sock)
        port = lport = s->px->cfg->listen_port;      /* as PgBouncer shows both */
    snprintf(ptr, sizeof(ptr), "%p", (const void *)s);
    snprintf(link, sizeof(link), "%s", "");
    /* A client waiting shows no server, as PgBouncer's waiting ones: also
     * one handed a server that still runs the query of a client that left
     * ahead of its own (server_pipeline_depth), which the server's row
     * links to all the same. */
    if (s->server && !s->pipe_waits)
        snprintf(link, sizeof(link), "%p", (const void *)s->server);
    long long wait_us = 0;
    ev_tstamp since;
    if (s->state == PGW_SS_WAIT_SERVER || s->state == PGW_SS_LOGIN_WAIT ||
        (s->state == PGW_SS_LINKED && s->pipe_waits))
        wait_us = (long long)((now - s->waiter.since) * 1e6);
    else if (s->state == PGW_SS_IDLE && pgw_notify_waits_for_server(s, &since))
        wait_us = (long long)((now - since) * 1e6);
    if (wait_us < 0)
        wait_us = 0;
    const char *app = s->params[PGW_TP_APPLICATION_NAME];
    pgw_rs_row(rs);
    pgw_rs_text(rs, "C");
    pgw_rs_text(rs, s->user ? s->user : "(nouser)");
    pgw_rs_text(rs, s->database ? s->database : "(nodb)");
    pgw_rs_text(rs, pgw_replication_name(s->replication));
    pgw_rs_text(rs, state);
    pgw_rs_text(rs, addr);
    pgw_rs_int(rs, port);
    pgw_rs_text(rs, laddr);
    pgw_rs_int(rs, lport);
    pgw_rs_time(rs, s->connect_time);
    pgw_rs_time(rs, s->last_activity);
    pgw_rs_int(rs, wait_us / 1000000);
    pgw_rs_int(rs, wait_us % 1000000);
    pgw_rs_int(rs, 0);
    pgw_rs_text(rs, ptr);
    pgw_rs_text(rs, link);
    pgw_rs_int(rs, peer_pid(s));
    pgw_rs_text(rs, tls_text(s->ssl, false, tls, sizeof(tls)));
    pgw_rs_text(rs, app ? app : "");
    pgw_rs_int(rs, pgw_ps_client_count(s));
    pgw_rs_uint(rs, s->id);
    if (buf)
        sock_buf_values(rs, buf);
    pgw_rs_row_end(rs);
}

/* A SHOW CLIENTS row and where PgBouncer lists it: it walks its pools by
 * database, then user (the console's clients are one pool, user
 * pgbouncer), and in each its active clients (idle ones too), then the
 * waiting, then cancel requests, each list in the order the clients
 * joined it (list_seq: a client that waited goes to the end). */
struct client_ref {
    const struct pgw_session *s;
    const char *state, *db, *user;
    int list;
    bool login;            /* SHOW SOCKETS' cl_login: after every pool */
};

static int client_list_rank(const char *state)
{
    if (strcmp(state, "waiting") == 0)
        return 1;
    return strcmp(state, "active_cancel_req") == 0 ? 2 : 0;
}

/* A client's pool against a pool: by database, then user. */
static int cmp_ref_pool(const struct client_ref *r, const struct pgw_pool *p)
{
    int c = strcmp(r->db, pgw_pool_dbname(p));
    return c ? c : strcmp(r->user, pgw_pool_user(p));
}

static int cmp_client_refs(const void *a, const void *b)
{
    const struct client_ref *x = a, *y = b;
    if (x->login || y->login)       /* cl_login: in the order they came in */
        return x->login != y->login ? x->login - y->login
                                    : (x->s->id > y->s->id) - (x->s->id < y->s->id);
    int c = strcmp(x->db, y->db);
    if (c == 0)
        c = strcmp(x->user, y->user);
    if (c == 0)
        c = (x->list > y->list) - (x->list < y->list);
    if (c == 0)
        c = (x->s->list_seq > y->s->list_seq) - (x->s->list_seq < y->s->list_seq);
    return c;
}

/* A client's row name and list for SHOW CLIENTS or SHOW SOCKETS; false:
 * not listed there. */
typedef bool (*client_list_fn)(const struct pgw_session *s, struct client_ref *r);

static bool clients_list_of(const struct pgw_session *s, struct client_ref *r)
{
    r->state = client_state(s);
    if (r->state)
        r->list = client_list_rank(r->state);
    return r->state != NULL;
}

/* The clients list_of lists, in PgBouncer's order (free() it); NULL when
 * memory is short. */
static struct client_ref *client_refs(struct pgw_proxy *px, client_list_fn list_of, size_t *np)
{
    size_t n = 0;
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next)
        n++;
    struct client_ref *refs = malloc(sizeof(*refs) * (n + 1));
    if (!refs)
        return NULL;
    n = 0;
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
        const struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
        struct client_ref *r = &refs[n];
        *r = (struct client_ref){ s, NULL, s->database ? s->database : "",
                                  s->user ? s->user : "", 0, false };
        if (!list_of(s, r))
            continue;
        n++;
        if (s->pool) {
            r->db = pgw_pool_dbname(s->pool);
            r->user = pgw_pool_user(s->pool);
        } else if (s->state == PGW_SS_ADMIN) {
            r->db = console_pool_db(px);        /* either name: one pool */
            r->user = "pgbouncer";
        }
    }
    qsort(refs, n, sizeof(*refs), cmp_client_refs);
    *np = n;
    return refs;
}

static int show_clients(struct pgw_session *self, struct pgw_wbuf *out)
{
    struct pgw_proxy *px = self->px;
    ev_tstamp now = pgw_mono_now(px->loop);
    size_t n;
    struct client_ref *refs = client_refs(px, clients_list_of, &n);
    if (!refs) {
        out->failed = true;
        return PGW_ADMIN_DONE;
    }
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, socket_cols, PGW_RS_NCOLS(socket_cols));
    for (size_t i = 0; i < n; i++)
        client_row(&rs, refs[i].s, refs[i].state, now, NULL);
    free(refs);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

/* "used" as SHOW POOLS' sv_used counts: due for server_check_query.
 * "bridge" (pgwharf's own): a LISTEN bridge, in no sv_* (notify_bridge.c). */
static const char *server_state(const struct pgw_server *srv)
{
    switch (srv->state) {
    case PGW_SRV_CONNECTING: return "new";
    case PGW_SRV_RESETTING:  return "tested";
    case PGW_SRV_ACTIVE:     return pgw_notify_bridge_client(srv) ? "bridge" : "active";
    case PGW_SRV_IDLE:
        return pgw_server_used(srv) ? "used" : "idle";
    default:
        return NULL;
    }
}

/* One SHOW SERVERS row; with buf (SHOW SOCKETS) its buffer columns too. */
static void server_row(struct pgw_rs *rs, struct pgw_pool *pool, const struct pgw_server *srv,
                       const char *state, const struct sock_buf *buf)
{
    struct pgw_backend_info bi;
    char host[300], laddr[INET6_ADDRSTRLEN + 8], ptr[32], link[32], tls[160];
    int port = 0, lport;
    memset(&bi, 0, sizeof(bi));
    if (srv->backend)
        pgw_backend_get_info(srv->backend, &bi);
    if (!peer_address(pgw_server_socket(srv), host, sizeof(host), &port))
        split_address(bi.address ? bi.address : "", host, sizeof(host), &port);
    local_address(pgw_server_socket(srv), laddr, sizeof(laddr), &lport);
    /* One still logging in: since it started, as PgBouncer shows it. */
    ev_tstamp since = srv->connect_time > 0 ? srv->connect_time : srv->start_time;
    snprintf(ptr, sizeof(ptr), "%p", (const void *)srv);
    snprintf(link, sizeof(link), "%s", "");
    /* A bridge's: the client it listens for (whose own row links to no
     * server: it holds none). */
    const struct pgw_session *cl = srv->link ? srv->link : pgw_notify_bridge_client(srv);
    if (cl)
        snprintf(link, sizeof(link), "%p", (const void *)cl);
    /* The server's own application_name, as it last reported it (as
     * PgBouncer's varcache): an idle server keeps its last client's. */
    const char *app = pgw_params_get(&srv->params, "application_name");
    /* The user it logs in as (libpq's, as given): a pool whose entry's
     * user= a reload changed logs its new servers in as the new user
     * while its clients last, under the old name (it listed that). */
    const char *user = srv->conn ? PQuser(srv->conn) : NULL;
    pgw_rs_row(rs);
    pgw_rs_text(rs, "S");
    pgw_rs_text(rs, user && *user ? user : pgw_pool_user(pool));
    pgw_rs_text(rs, pgw_pool_dbname(pool));
    pgw_rs_text(rs, pgw_replication_name(srv->replication));
    pgw_rs_text(rs, state);
    pgw_rs_text(rs, host);
    pgw_rs_int(rs, port);
    pgw_rs_text(rs, laddr);
    pgw_rs_int(rs, lport);
    pgw_rs_time(rs, since);
    pgw_rs_time(rs, srv->request_time > 0 ? srv->request_time : since);
    pgw_rs_int(rs, 0);
    pgw_rs_int(rs, 0);
    pgw_rs_int(rs, pgw_server_close_needed(srv));   /* RECONNECT, KILL, a reload */
    pgw_rs_text(rs, ptr);
    pgw_rs_text(rs, link);
    pgw_rs_int(rs, srv->backend_pid);
    pgw_rs_text(rs, tls_text(srv->ssl, true, tls, sizeof(tls)));
    pgw_rs_text(rs, app ? app : "");
    pgw_rs_int(rs, pgw_ps_server_count(srv));
    pgw_rs_uint(rs, srv->id);
    if (buf)
        sock_buf_values(rs, buf);
    pgw_rs_row_end(rs);
}

enum server_view { VIEW_SERVERS, VIEW_SOCKETS, VIEW_ACTIVE_SOCKETS };

/* One pool's servers as PgBouncer lists them: its active servers, then
 * the idle, used, tested and new ones (sv_active ... sv_login in SHOW
 * SOCKETS; ACTIVE_SOCKETS: only those with bytes in their buffer).  Its
 * LISTEN bridges come after the active ones (in SHOW SOCKETS, as
 * sv_active: PgBouncer has no list for them). */
static void pool_server_rows(struct pgw_rs *rs, struct pgw_proxy *px, struct pgw_pool *pool,
                             ev_tstamp now, enum server_view view)
{
    static const char *const lists[][2] = {
        { "active", "sv_active" }, { "bridge", "sv_active" }, { "idle", "sv_idle" },
        { "used", "sv_used" }, { "tested", "sv_tested" }, { "new", "sv_login" },
    };
    for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++)
        for (struct pgw_server *srv = pgw_pool_server_next(pool, NULL); srv;
             srv = pgw_pool_server_next(pool, srv)) {
            const char *state = server_state(srv);
            if (!state || strcmp(state, lists[k][0]) != 0)
                continue;
            if (view == VIEW_SERVERS) {
                server_row(rs, pool, srv, state, NULL);
                continue;
            }
            struct sock_buf buf = server_buf(srv);
            if (view == VIEW_SOCKETS || sock_buf_active(&buf))
                server_row(rs, pool, srv, lists[k][1], &buf);
        }
}

/* As PgBouncer walks them: pool by pool (by database, then user). */
static int show_servers(struct pgw_session *self, struct pgw_wbuf *out)
{
    struct pgw_proxy *px = self->px;
    ev_tstamp now = pgw_mono_now(px->loop);
    int n;
    struct pgw_pool **pools = pools_by_name(px, &n);
    if (n < 0) {
        out->failed = true;
        return PGW_ADMIN_DONE;
    }
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, socket_cols, PGW_RS_NCOLS(socket_cols));
    for (int i = 0; i < n; i++)
        pool_server_rows(&rs, px, pools[i], now, VIEW_SERVERS);
    free(pools);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

/* ---- SHOW SOCKETS / ACTIVE_SOCKETS ---- */

/* PgBouncer's list names: cl_active (logged in: idle, linked or on the
 * console), cl_waiting, cl_login (not logged in yet); not listed: a cancel
 * connection, or one closing. */
static bool sockets_list_of(const struct pgw_session *s, struct client_ref *r)
{
    switch (s->state) {
    case PGW_SS_STARTUP:
    case PGW_SS_AUTH:
        r->state = "cl_login";
        r->login = true;
        return true;
    case PGW_SS_WAIT_SERVER:
    case PGW_SS_LOGIN_WAIT:
        r->state = "cl_waiting";
        r->list = 1;
        return true;
    case PGW_SS_IDLE:
        r->list = waits_for_hub(s) ? 1 : 0;
        r->state = r->list ? "cl_waiting" : "cl_active";
        return true;
    case PGW_SS_LINKED:
        r->list = s->pipe_waits ? 1 : 0;     /* as SHOW CLIENTS */
        r->state = r->list ? "cl_waiting" : "cl_active";
        return true;
    case PGW_SS_LOGIN_SYNC:
    case PGW_SS_ADMIN:
        r->state = "cl_active";
        return true;
    default:
        return false;
    }
}

static void client_sock_row(struct pgw_rs *rs, const struct client_ref *r, ev_tstamp now,
                            bool active_only)
{
    struct sock_buf buf = sock_buf_of(r->s->cbuf, r->s->cskip);
    if (!active_only || sock_buf_active(&buf))
        client_row(rs, r->s, r->state, now, &buf);
}

/* Every client and server socket, or (active_only) those with bytes in
 * their buffer, as PgBouncer walks them: pool by pool (by database, then
 * user; the console's clients are pool pgbouncer/pgbouncer), in each
 * cl_active and cl_waiting (each in the order the clients joined it),
 * then sv_active, sv_idle, sv_used, sv_tested, sv_login; last the
 * clients still logging in (cl_login), in the order they came in. */
static int show_sockets_view(struct pgw_session *self, bool active_only, struct pgw_wbuf *out)
{
    struct pgw_proxy *px = self->px;
    ev_tstamp now = pgw_mono_now(px->loop);
    int npools;
    size_t n, c = 0;
    struct pgw_pool **pools = pools_by_name(px, &npools);
    struct client_ref *refs = npools < 0 ? NULL : client_refs(px, sockets_list_of, &n);
    if (!refs) {
        free(pools);
        out->failed = true;
        return PGW_ADMIN_DONE;
    }
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, sockets_cols, PGW_RS_NCOLS(sockets_cols));
    for (int i = 0; i < npools; i++) {
        /* clients of a pool with no pgw_pool (the console's) come in
         * their place among the pools */
        for (; c < n && !refs[c].login && cmp_ref_pool(&refs[c], pools[i]) <= 0; c++)
            client_sock_row(&rs, &refs[c], now, active_only);
        pool_server_rows(&rs, px, pools[i], now,
                         active_only ? VIEW_ACTIVE_SOCKETS : VIEW_SOCKETS);
    }
    for (; c < n; c++)
        client_sock_row(&rs, &refs[c], now, active_only);
    free(refs);
    free(pools);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

static int show_sockets(struct pgw_session *s, struct pgw_wbuf *o)
{
    return show_sockets_view(s, false, o);
}

static int show_active_sockets(struct pgw_session *s, struct pgw_wbuf *o)
{
    return show_sockets_view(s, true, o);
}

/* ---- SHOW DATABASES / USERS ---- */

static int pool_servers(struct pgw_pool *p)
{
    struct pgw_pool_stats st;
    pgw_pool_get_stats(p, &st);
    /* (LISTEN bridges too: connections that log in as the user, counted
     * by max_db_connections and max_user_connections.) */
    return st.sv_active + st.sv_idle + st.sv_used + st.sv_tested + st.sv_login + st.sv_detached;
}

/* A libpq keyword of the entry, NULL when it gives none. */
static const char *db_conn_value(const struct pgw_conf_db *db, const char *key)
{
    for (int i = 0; i < db->nconn; i++)
        if (strcmp(db->conn_keys[i], key) == 0)
            return db->conn_vals[i];
    return NULL;
}

/* The port of every host of the entry (an empty item: libpq's 5432), or
 * -1 when the hosts of a list have different ports: SHOW DATABASES' port
 * is one int4, as in PgBouncer (whose host lists share one port). */
static int db_port(const struct pgw_conf_db *db)
{
    int port = -1;
    const char *p = db->port ? db->port : "";
    for (;;) {
        int one = *p && *p != ',' ? atoi(p) : 5432;
        if (port >= 0 && one != port)
            return -1;
        port = one;
        p += strcspn(p, ",");
        if (!*p++)
            return port;
    }
}

/* load_balance_hosts when the entry names several hosts (host, or
 * hostaddr without host), else NULL, as PgBouncer shows it. */
static const char *db_load_balance(const struct pgw_conf_db *db)
{
    const char *list = db->host && *db->host ? db->host : db_conn_value(db, "hostaddr");
    if (!list || !strchr(list, ','))
        return NULL;
    return pgw_load_balance_name(db->load_balance_hosts >= 0
                                     ? (enum pgw_load_balance)db->load_balance_hosts
                                     : PGW_LB_ROUND_ROBIN);
}

/* A SHOW DATABASES row: an entry, or a name "*" serves (PgBouncer's
 * auto-database: its own row, under the name the clients asked for). */
struct db_row {
    const char *name;
    const struct pgw_conf_db *db;
    int servers, clients;
};

static int cmp_db_rows(const void *a, const void *b)
{
    return strcmp(((const struct db_row *)a)->name, ((const struct db_row *)b)->name);
}

static int cmp_db_row_key(const void *name, const void *row)
{
    return strcmp(name, ((const struct db_row *)row)->name);
}

/* SHOW DATABASES' rows, by name, each once (NULL, *n 0 when out of
 * memory): the entries but "*", then the names "*" serves now (its
 * pools', its clients'), as PgBouncer lists its auto-databases, and the
 * console's database (db NULL), as PgBouncer lists its admin database. */
static struct db_row *db_rows(struct pgw_proxy *px, size_t *n_out)
{
    const struct pgw_config *cfg = px->cfg;
    const struct pgw_conf_db *star = pgw_conf_find_db(cfg, "*");
    *n_out = 0;
    size_t cap = (size_t)cfg->ndbs + 2;
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p))
        cap++;
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next)
        cap++;
    const struct pgw_admin *adm = px->admin;
    if (adm)
        cap += (size_t)adm->paused.n + (size_t)adm->disabled.n;
    struct db_row *rows = calloc(cap, sizeof(*rows));
    if (!rows)
        return NULL;
    size_t n = 0;
    for (int i = 0; i < cfg->ndbs; i++)
        if (&cfg->dbs[i] != star)
            rows[n++] = (struct db_row){ .name = cfg->dbs[i].name, .db = &cfg->dbs[i] };
    size_t nentries = n;
    qsort(rows, n, sizeof(*rows), cmp_db_rows);
    if (star) {
        for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p;
             p = pgw_pool_next(px->pools, p))
            if (!bsearch(pgw_pool_dbname(p), rows, nentries, sizeof(*rows), cmp_db_row_key))
                rows[n++] = (struct db_row){ .name = pgw_pool_dbname(p), .db = star };
        for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
            const struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
            if (!s->is_admin && s->db == star && s->database && pgw_session_logged_in(s))
                rows[n++] = (struct db_row){ .name = s->database, .db = star };
        }
        /* A name PAUSEd or DISABLEd keeps its row without a pool or a
         * client (before its first one, after autodb_idle_timeout freed
         * its pool), as PgBouncer keeps the database it registered: the
         * state the console set stays in view until RESUME / ENABLE. */
        const struct pgw_names *held[] = { adm ? &adm->paused : NULL,
                                           adm ? &adm->disabled : NULL };
        for (size_t h = 0; h < 2; h++)
            for (int i = 0; held[h] && i < held[h]->n; i++)
                if (!bsearch(held[h]->v[i], rows, nentries, sizeof(*rows), cmp_db_row_key))
                    rows[n++] = (struct db_row){ .name = held[h]->v[i], .db = star };
    }
    qsort(rows, n, sizeof(*rows), cmp_db_rows);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || strcmp(rows[i].name, rows[m - 1].name) != 0)
            rows[m++] = rows[i];
    const char *console = console_pool_db(px);
    if (!bsearch(console, rows, m, sizeof(*rows), cmp_db_row_key)) {
        rows[m++] = (struct db_row){ .name = console };
        qsort(rows, m, sizeof(*rows), cmp_db_rows);
    }
    *n_out = m;
    return rows;
}

/* PgBouncer's row for its admin database: no host, the listen port, user
 * pgbouncer, a pool of 2 in statement mode, never paused or disabled (a
 * PAUSE or DISABLE of all leaves the console alone). */
static void console_db_row(struct pgw_rs *rs, struct pgw_proxy *px, int clients)
{
    const struct pgw_config *cfg = px->cfg;
    pgw_rs_row(rs);
    pgw_rs_text(rs, console_pool_db(px));
    pgw_rs_text(rs, NULL);
    pgw_rs_int(rs, cfg->listen_port);
    pgw_rs_text(rs, "pgbouncer");
    pgw_rs_text(rs, "pgbouncer");
    pgw_rs_int(rs, 2);                                  /* pool_size */
    pgw_rs_int(rs, 0);                                  /* min_pool_size */
    pgw_rs_int(rs, 0);                                  /* reserve_pool_size */
    pgw_rs_int(rs, (int64_t)pgw_conf_server_lifetime(cfg, NULL));
    pgw_rs_text(rs, "statement");
    pgw_rs_text(rs, NULL);                              /* load_balance_hosts */
    pgw_rs_int(rs, 0);                                  /* max_connections */
    pgw_rs_int(rs, 0);                                  /* current_connections */
    pgw_rs_int(rs, 0);                                  /* max_client_connections */
    pgw_rs_int(rs, clients);
    pgw_rs_int(rs, 0);                                  /* paused */
    pgw_rs_int(rs, 0);                                  /* disabled */
    pgw_rs_row_end(rs);
}

static int show_databases(struct pgw_session *self, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = {
        { "name", TX }, { "host", TX }, { "port", I4 }, { "database", TX }, { "force_user", TX },
        { "pool_size", I4 }, { "min_pool_size", I4 }, { "reserve_pool_size", I4 },
        { "server_lifetime", I4 }, { "pool_mode", TX }, { "load_balance_hosts", TX },
        { "max_connections", I4 },
        { "current_connections", I4 }, { "max_client_connections", I4 },
        { "current_client_connections", I4 }, { "paused", I4 }, { "disabled", I4 },
    };
    struct pgw_proxy *px = self->px;
    const struct pgw_config *cfg = px->cfg;
    size_t m;
    struct db_row *rows = db_rows(px, &m);
    if (!rows) {
        out->failed = true;
        return PGW_ADMIN_DONE;
    }
    /* The counts in one pass over the pools and one over the sessions
     * (per database, they made the view cubic in the databases: seconds
     * of the loop at 1500, and pgbouncer_exporter asks at every scrape). */
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p)) {
        struct db_row *r = bsearch(pgw_pool_dbname(p), rows, m, sizeof(*rows), cmp_db_row_key);
        if (r)
            r->servers += pool_servers(p);
    }
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
        const struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
        if (s->state == PGW_SS_ADMIN) {
            struct db_row *r = bsearch(console_pool_db(px), rows, m, sizeof(*rows),
                                       cmp_db_row_key);
            if (r && !r->db)
                r->clients++;       /* as the console pool's cl_active */
            continue;
        }
        if (s->is_admin || !s->db || !s->database || !pgw_session_logged_in(s))
            continue;
        struct db_row *r = bsearch(s->database, rows, m, sizeof(*rows), cmp_db_row_key);
        if (r && r->db == s->db)
            r->clients++;
    }
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    for (size_t i = 0; i < m; i++) {
        const struct pgw_conf_db *db = rows[i].db;
        if (!db) {
            console_db_row(&rs, px, rows[i].clients);
            continue;
        }
        pgw_rs_row(&rs);
        pgw_rs_text(&rs, rows[i].name);
        pgw_rs_text(&rs, db->host);
        int port = db_port(db);
        if (port >= 0)
            pgw_rs_int(&rs, port);
        else
            pgw_rs_text(&rs, NULL);      /* hosts with different ports */
        pgw_rs_text(&rs, db->dbname ? db->dbname : rows[i].name);
        pgw_rs_text(&rs, db->user);
        pgw_rs_int(&rs, pgw_conf_pool_size(cfg, db, NULL));
        pgw_rs_int(&rs, pgw_conf_min_pool_size(cfg, db));
        pgw_rs_int(&rs, pgw_conf_reserve_pool_size(cfg, db, NULL));
        pgw_rs_int(&rs, (int64_t)pgw_conf_server_lifetime(cfg, db));
        pgw_rs_text(&rs, db->pool_mode >= 0 ? pool_mode_text((enum pgw_pool_mode)db->pool_mode)
                                            : NULL);
        pgw_rs_text(&rs, db_load_balance(db));
        pgw_rs_int(&rs, pgw_conf_max_db_connections(cfg, db));
        pgw_rs_int(&rs, rows[i].servers);
        pgw_rs_int(&rs, pgw_conf_max_db_client_connections(cfg, db));
        pgw_rs_int(&rs, rows[i].clients);
        /* A PAUSE of this database, as PgBouncer's db_paused: a PAUSE of
         * all shows in SHOW STATE, not here (pgwharf showed it on every
         * row). */
        pgw_rs_int(&rs, pgw_admin_db_paused_by_name(px, rows[i].name));
        pgw_rs_int(&rs, pgw_admin_db_disabled(px, rows[i].name));
        pgw_rs_row_end(&rs);
    }
    free(rows);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

/* A user SHOW USERS lists, with its counts. */
struct user_ref {
    const char *name;
    const struct pgw_conf_user *u;   /* its [users] entry, or NULL */
    int servers, clients;
};

/* By name; a name's [users] entry before its pools' mentions of it. */
static int cmp_user_refs(const void *a, const void *b)
{
    const struct user_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->u == NULL) - (y->u == NULL);
}

static int cmp_user_name(const void *name, const void *ref)
{
    return strcmp(name, ((const struct user_ref *)ref)->name);
}

static struct user_ref *find_user_ref(struct user_ref *refs, int n, const char *name)
{
    return bsearch(name, refs, (size_t)n, sizeof(*refs), cmp_user_name);
}

/* The users SHOW USERS lists but the auth_file's: the [users] entries,
 * the console's own user pgbouncer (PgBouncer makes it at start, for the
 * console's pool), the users of pools (for an entry with user=, that one),
 * and the users clients (of pools or the console) logged in as; by name,
 * each once (a name's [users] entry kept).  NULL when memory is short;
 * free() it. */
static struct user_ref *users_but_auth_file(struct pgw_proxy *px, int *n)
{
    const struct pgw_config *cfg = px->cfg;
    size_t cap = (size_t)cfg->nusers + 2;
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p))
        cap += 2;
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next)
        cap++;
    struct user_ref *refs = calloc(cap, sizeof(*refs));
    if (!refs)
        return NULL;
    int k = 0;
    for (int i = 0; i < cfg->nusers; i++)
        refs[k++] = (struct user_ref){ .name = cfg->users[i].name, .u = &cfg->users[i] };
    refs[k++].name = "pgbouncer";
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p)) {
        refs[k++].name = pgw_pool_user(p);
        if (strcmp(pgw_pool_server_user(p), pgw_pool_user(p)) != 0)
            refs[k++].name = pgw_pool_server_user(p);
    }
    /* A pool of an entry with user= is that user's: its clients' own
     * names are users too (PgBouncer lists every login user). */
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
        const struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
        if ((s->pool || s->is_admin) && pgw_session_logged_in(s))
            refs[k++].name = s->user;
    }
    qsort(refs, (size_t)k, sizeof(*refs), cmp_user_refs);
    int m = 0;
    for (int i = 0; i < k; i++)
        if (m == 0 || strcmp(refs[i].name, refs[m - 1].name) != 0)
            refs[m++] = refs[i];
    *n = m;
    return refs;
}

/* SHOW USERS' rows: users_but_auth_file's and the auth_file's users
 * (logged in or not), by name as PgBouncer keeps them, each once, with
 * their servers (by the user they log in as, as max_user_connections
 * counts them) and logged-in clients (console sessions too, as
 * PgBouncer).  The auth_file is sorted already and may hold many
 * thousands of users: merged, not sorted again.  NULL when memory is
 * short; free() it. */
static struct user_ref *users_list(struct pgw_proxy *px, int *n)
{
    const struct pgw_auth_file *af = px->auth;
    int na = af ? af->n : 0, no;
    struct user_ref *other = users_but_auth_file(px, &no);
    struct user_ref *refs = other ? calloc((size_t)no + (size_t)na + 1, sizeof(*refs)) : NULL;
    if (!refs) {
        free(other);
        return NULL;
    }
    int m = 0, i = 0, j = 0;
    while (i < no || j < na) {
        int c = i == no ? 1 : j == na ? -1 : strcmp(other[i].name, af->entries[j].user);
        if (c <= 0)
            refs[m++] = other[i++];          /* its [users] entry, if any */
        else
            refs[m++].name = af->entries[j].user;
        if (c >= 0)
            j++;
    }
    free(other);
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p)) {
        struct user_ref *r = find_user_ref(refs, m, pgw_pool_server_user(p));
        if (r)                           /* (it is: put in above) */
            r->servers += pool_servers(p);
    }
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
        const struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
        struct user_ref *r = pgw_session_logged_in(s) ? find_user_ref(refs, m, s->user) : NULL;
        if (r)
            r->clients++;
    }
    *n = m;
    return refs;
}

/* The number of SHOW USERS' rows, without making them: SHOW LISTS, which
 * pgbouncer_exporter asks at every scrape, costs no sort of the auth_file
 * (20 ms of the loop at 200000 users).  -1 when memory is short. */
static int users_count(struct pgw_proxy *px)
{
    const struct pgw_auth_file *af = px->auth;
    int no;
    struct user_ref *other = users_but_auth_file(px, &no);
    if (!other)
        return -1;
    int n = af ? af->n : 0;
    for (int i = 0; i < no; i++)
        n += pgw_authfile_lookup(af, other[i].name) == NULL;
    free(other);
    return n;
}

/* PgBouncer writes a user's pool_size and reserve_pool_size as "%9d"
 * text, empty when the user sets none. */
static const char *user_size_text(int v, char *buf, size_t len)
{
    buf[0] = '\0';
    if (v >= 0)
        snprintf(buf, len, "%9d", v);
    return buf;
}

static int show_users(struct pgw_session *self, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = {
        { "name", TX }, { "pool_size", TX }, { "reserve_pool_size", TX }, { "pool_mode", TX },
        { "max_user_connections", I4 }, { "current_connections", I4 },
        { "max_user_client_connections", I4 }, { "current_client_connections", I4 },
    };
    struct pgw_proxy *px = self->px;
    int n;
    struct user_ref *refs = users_list(px, &n);
    if (!refs) {
        out->failed = true;
        return PGW_ADMIN_DONE;
    }
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    for (int i = 0; i < n; i++) {
        const struct pgw_conf_user *u = refs[i].u;
        char size[16], reserve[16];
        pgw_rs_row(&rs);
        pgw_rs_text(&rs, refs[i].name);
        pgw_rs_text(&rs, user_size_text(u ? u->pool_size : -1, size, sizeof(size)));
        pgw_rs_text(&rs, user_size_text(u ? u->reserve_pool_size : -1, reserve, sizeof(reserve)));
        pgw_rs_text(&rs, u && u->pool_mode >= 0 ? pool_mode_text((enum pgw_pool_mode)u->pool_mode)
                                                : NULL);
        pgw_rs_int(&rs, pgw_conf_max_user_connections(px->cfg, u));
        pgw_rs_int(&rs, refs[i].servers);
        pgw_rs_int(&rs, pgw_conf_max_user_client_connections(px->cfg, u));
        pgw_rs_int(&rs, refs[i].clients);
        pgw_rs_row_end(&rs);
    }
    free(refs);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

/* ---- SHOW CONFIG / STATE / VERSION / LISTS / MEM ---- */

/* Keys a reload cannot change (the listeners stay as they are). */
bool pgw_admin_key_changeable(const char *key)
{
    return !pgw_conf_key_fixed(key);
}

/* Keys PgBouncer has no default for: it writes NULL as their default,
 * and as their value while unset (other unset strings are ""; verbose,
 * an integer, is never unset). */
static bool key_default_null(const char *key)
{
    static const char *const keys[] = {
        "auth_dbname", "auth_file", "auth_ident_file", "auth_user",
        "client_tls13_ciphers", "server_tls13_ciphers", "user", "verbose",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(keys[i], key) == 0)
            return true;
    return false;
}

static int by_key_name(const void *a, const void *b)
{
    return strcmp(pgw_conf_key_name(*(const int *)a), pgw_conf_key_name(*(const int *)b));
}

static int show_config(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = {
        { "key", TX }, { "value", TX }, { "default", TX }, { "changeable", TX },
    };
    /* In the order of the keys' names, as PgBouncer lists them. */
    int n = 0;
    while (pgw_conf_key_name(n))
        n++;
    int *order = malloc(sizeof(*order) * (size_t)n);
    if (!order) {
        out->failed = true;
        return PGW_ADMIN_DONE;
    }
    for (int k = 0; k < n; k++)
        order[k] = k;
    qsort(order, (size_t)n, sizeof(*order), by_key_name);
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    for (int k = 0; k < n; k++) {
        int i = order[k];
        const char *key = pgw_conf_key_name(i);
        const char *def = pgw_conf_key_default(i);
        /* The whole value, however long the file made it. */
        char *value = pgw_conf_get_dup(s->px->cfg, key);
        if (!value) {
            out->failed = true;          /* every key is known: memory is short */
            break;
        }
        const char *shown = value;
        char mode_now[16];
        if (pgw_conf_key_is_bool(i)) {
            /* As PgBouncer writes booleans here (scripts compare with "1") */
            shown = strcmp(value, "on") == 0 ? "1" : "0";
            def = strcmp(def, "on") == 0 ? "1" : "0";
        } else if (key_default_null(key)) {
            def = NULL;
            if (!shown[0])
                shown = NULL;
        } else if (strcmp(key, "unix_socket_mode") == 0) {
            /* PgBouncer's is an integer key: its value in decimal (0700:
             * 448), its default as its key table writes it (0777) */
            int mode = pgw_conf_unix_socket_mode(s->px->cfg);
            if (mode >= 0)
                snprintf(mode_now, sizeof(mode_now), "%d", mode);
            shown = mode >= 0 ? mode_now : value;
        }
        pgw_rs_row(&rs);
        pgw_rs_text(&rs, key);
        pgw_rs_text(&rs, shown);
        pgw_rs_text(&rs, def);
        pgw_rs_text(&rs, pgw_admin_key_changeable(key) ? "yes" : "no");
        pgw_rs_row_end(&rs);
        free(value);
    }
    free(order);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

static int show_state(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = { { "key", TX }, { "value", TX } };
    bool paused = s->px->admin && s->px->admin->paused_all;
    static const char *const keys[] = { "active", "paused", "suspended" };
    const bool vals[] = { !paused, paused, false };
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    for (int i = 0; i < 3; i++) {
        pgw_rs_row(&rs);
        pgw_rs_text(&rs, keys[i]);
        pgw_rs_text(&rs, vals[i] ? "yes" : "no");
        pgw_rs_row_end(&rs);
    }
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

static int show_version(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = { { "version", TX } };
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, 1);
    pgw_rs_row(&rs);
    pgw_rs_text(&rs, "pgwharf " PGW_VERSION);
    pgw_rs_row_end(&rs);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

static void list_row(struct pgw_rs *rs, const char *name, int64_t v)
{
    pgw_rs_row(rs);
    pgw_rs_text(rs, name);
    pgw_rs_int(rs, v);
    pgw_rs_row_end(rs);
}

static int show_lists(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = { { "list", TX }, { "items", I4 } };
    struct pgw_proxy *px = s->px;
    int pools = 0, used = 0, login = 0, names = 0, queries = 0;
    size_t ndbs;
    int users = users_count(px);
    struct db_row *dbs = db_rows(px, &ndbs);
    bool ok = users >= 0 && dbs;
    free(dbs);
    if (!ok) {
        out->failed = true;
        return PGW_ADMIN_DONE;
    }
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p))
        pools++;
    for (struct pgw_backend *be = pgw_backend_next(px->pools, NULL); be;
         be = pgw_backend_next(px->pools, be)) {
        struct pgw_backend_info bi;
        pgw_backend_get_info(be, &bi);
        names += bi.hostname != NULL;
        queries += bi.resolving;
    }
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
        const struct pgw_session *c = pgw_container_of(l, struct pgw_session, node);
        used++;
        /* as SHOW SOCKETS' cl_login: one waiting for a server at login
         * is cl_waiting there and in SHOW POOLS (PgBouncer counts it so) */
        if (c->state <= PGW_SS_AUTH)
            login++;
    }
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    list_row(&rs, "databases", (int64_t)ndbs);   /* the rows of SHOW DATABASES */
    list_row(&rs, "users", users);   /* the rows of SHOW USERS */
    list_row(&rs, "peers", px->cfg->npeers);
    list_row(&rs, "pools", pools + 1);   /* the rows of SHOW POOLS: the console's too */
    list_row(&rs, "peer_pools", 0);
    list_row(&rs, "free_clients", 0);
    list_row(&rs, "used_clients", used);
    list_row(&rs, "login_clients", login);
    list_row(&rs, "free_servers", 0);
    list_row(&rs, "used_servers", pgw_pool_set_server_count(px->pools));
    list_row(&rs, "dns_names", names);
    list_row(&rs, "dns_zones", 0);
    list_row(&rs, "dns_queries", queries);
    list_row(&rs, "dns_pending", 0);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

/* memtotal is int8 where PgBouncer's is int4 (its unsigned product, sent
 * as int4, wraps): 2^31 bytes are 65 456 iobufs, two for each of 32 728
 * sessions moving data at once, a load max_client_conn allows. */
static void mem_row(struct pgw_rs *rs, const char *name, size_t size, int used, int nfree)
{
    pgw_rs_row(rs);
    pgw_rs_text(rs, name);
    pgw_rs_int(rs, (int64_t)size);
    pgw_rs_int(rs, used);
    pgw_rs_int(rs, nfree);
    pgw_rs_int(rs, (int64_t)size * (used + nfree));
    pgw_rs_row_end(rs);
}

static int show_mem(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = {
        { "name", TX }, { "size", I4 }, { "used", I4 }, { "free", I4 }, { "memtotal", I8 },
    };
    struct pgw_proxy *px = s->px;
    int sessions = 0, bufs = 0;
    for (struct pgw_list *l = px->sessions.next; l != &px->sessions; l = l->next) {
        const struct pgw_session *c = pgw_container_of(l, struct pgw_session, node);
        sessions++;
        bufs += (c->cbuf != NULL) + (c->sbuf != NULL);
    }
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    mem_row(&rs, "session", sizeof(struct pgw_session), sessions, 0);
    mem_row(&rs, "iobuf", sizeof(struct pgw_iobuf) + PGW_IOBUF_SIZE, bufs, px->nfree_bufs);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

/* ---- SHOW STATS* ---- */

enum stats_view { STATS_ALL, STATS_TOTALS, STATS_AVERAGES };

static void stat_values(struct pgw_rs *rs, const struct pgw_dbstat *d)
{
    pgw_rs_uint(rs, d->assignments);
    pgw_rs_uint(rs, d->xacts);
    pgw_rs_uint(rs, d->queries);
    pgw_rs_uint(rs, d->recv);
    pgw_rs_uint(rs, d->sent);
    pgw_rs_uint(rs, d->xact_us);
    pgw_rs_uint(rs, d->query_us);
    pgw_rs_uint(rs, d->wait_us);
    pgw_rs_uint(rs, d->ps_client_parses);
    pgw_rs_uint(rs, d->ps_server_parses);
    pgw_rs_uint(rs, d->ps_binds);
}

static int show_stats(struct pgw_session *s, enum stats_view view, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col all[] = {
        { "database", TX }, { "total_server_assignment_count", NU }, { "total_xact_count", NU },
        { "total_query_count", NU }, { "total_received", NU }, { "total_sent", NU },
        { "total_xact_time", NU }, { "total_query_time", NU }, { "total_wait_time", NU },
        { "total_client_parse_count", NU }, { "total_server_parse_count", NU },
        { "total_bind_count", NU }, { "avg_server_assignment_count", NU },
        { "avg_xact_count", NU }, { "avg_query_count", NU }, { "avg_recv", NU },
        { "avg_sent", NU }, { "avg_xact_time", NU }, { "avg_query_time", NU },
        { "avg_wait_time", NU }, { "avg_client_parse_count", NU },
        { "avg_server_parse_count", NU }, { "avg_bind_count", NU },
    };
    static const struct pgw_rs_col totals[] = {
        { "database", TX }, { "server_assignment_count", NU }, { "xact_count", NU },
        { "query_count", NU }, { "bytes_received", NU }, { "bytes_sent", NU },
        { "xact_time", NU }, { "query_time", NU }, { "wait_time", NU },
        { "client_parse_count", NU }, { "server_parse_count", NU }, { "bind_count", NU },
    };
    static const struct pgw_rs_col averages[] = {
        { "database", TX }, { "server_assignment_count", NU }, { "xact_count", NU },
        { "query_count", NU }, { "bytes_received", NU }, { "bytes_sent", NU },
        { "xact_time", NU }, { "query_time", NU }, { "wait_time", NU },
        { "avg_client_parse_count", NU }, { "avg_server_parse_count", NU },
        { "avg_bind_count", NU },
    };
    struct pgw_rs rs;
    int n;
    struct pgw_dbstat_row *rows = pgw_stats_rows(s->px, &n);
    if (view == STATS_ALL)
        pgw_rs_begin(&rs, out, all, PGW_RS_NCOLS(all));
    else if (view == STATS_TOTALS)
        pgw_rs_begin(&rs, out, totals, PGW_RS_NCOLS(totals));
    else
        pgw_rs_begin(&rs, out, averages, PGW_RS_NCOLS(averages));
    /* The console's row in its place by name, as PgBouncer lists its
     * admin database's (pgwharf had none). */
    struct pgw_dbstat_row console = { console_pool_db(s->px), { 0 }, { 0 } };
    pgw_stats_console(s->px, &console.total, &console.avg);
    bool console_done = false;
    for (int i = 0; i <= n; i++) {
        const struct pgw_dbstat_row *r = i < n ? &rows[i] : NULL;
        if (!console_done && (!r || strcmp(console.database, r->database) < 0)) {
            console_done = true;
            r = &console;
            i--;
        }
        if (!r)
            break;
        pgw_rs_row(&rs);
        pgw_rs_text(&rs, r->database);
        if (view != STATS_AVERAGES)
            stat_values(&rs, &r->total);
        if (view != STATS_TOTALS)
            stat_values(&rs, &r->avg);
        pgw_rs_row_end(&rs);
    }
    free(rows);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

static void total_row(struct pgw_rs *rs, const char *name, uint64_t v)
{
    pgw_rs_row(rs);
    pgw_rs_text(rs, name);
    pgw_rs_uint(rs, v);
    pgw_rs_row_end(rs);
}

/* SHOW TOTALS: SHOW STATS summed over databases, one name/value per row,
 * named as PgBouncer's show_stat_totals names them: "total_"/"avg_" and
 * its counter's field name (client_bytes, ps_bind_count...).  The averages
 * are those of every database's counters of the last period together. */
static int show_totals(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = { { "name", TX }, { "value", NU } };
    struct pgw_dbstat t, a;
    pgw_stats_totals(s->px, &t, &a);
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    total_row(&rs, "total_server_assignment_count", t.assignments);
    total_row(&rs, "total_xact_count", t.xacts);
    total_row(&rs, "total_query_count", t.queries);
    total_row(&rs, "total_client_bytes", t.recv);
    total_row(&rs, "total_server_bytes", t.sent);
    total_row(&rs, "total_xact_time", t.xact_us);
    total_row(&rs, "total_query_time", t.query_us);
    total_row(&rs, "total_wait_time", t.wait_us);
    total_row(&rs, "total_ps_client_parse_count", t.ps_client_parses);
    total_row(&rs, "total_ps_server_parse_count", t.ps_server_parses);
    total_row(&rs, "total_ps_bind_count", t.ps_binds);
    total_row(&rs, "avg_server_assignment_count", a.assignments);
    total_row(&rs, "avg_xact_count", a.xacts);
    total_row(&rs, "avg_query_count", a.queries);
    total_row(&rs, "avg_client_bytes", a.recv);
    total_row(&rs, "avg_server_bytes", a.sent);
    total_row(&rs, "avg_xact_time", a.xact_us);
    total_row(&rs, "avg_query_time", a.query_us);
    total_row(&rs, "avg_wait_time", a.wait_us);
    total_row(&rs, "avg_ps_client_parse_count", a.ps_client_parses);
    total_row(&rs, "avg_ps_server_parse_count", a.ps_server_parses);
    total_row(&rs, "avg_ps_bind_count", a.ps_binds);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

/* ---- SHOW BREAKERS (pgwharf's own) ---- */

static int show_breakers(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = {
        { "backend", TX }, { "state", TX }, { "failures", I4 }, { "trips", I8 },
        { "last_error", TX }, { "last_sqlstate", TX }, { "next_probe", TS },
    };
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    for (struct pgw_backend *be = pgw_backend_next(s->px->pools, NULL); be;
         be = pgw_backend_next(s->px->pools, be)) {
        struct pgw_backend_info bi;
        pgw_backend_get_info(be, &bi);
        pgw_rs_row(&rs);
        pgw_rs_text(&rs, bi.address);
        pgw_rs_text(&rs, pgw_breaker_state_name(bi.state));
        pgw_rs_int(&rs, bi.failures);
        pgw_rs_uint(&rs, bi.trips);
        pgw_rs_text(&rs, bi.last_error ? bi.last_error : "");
        pgw_rs_text(&rs, bi.last_sqlstate ? bi.last_sqlstate : "");
        pgw_rs_time(&rs, bi.state == PGW_BREAKER_OPEN ? bi.next_probe : 0);
        pgw_rs_row_end(&rs);
    }
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

/* ---- SHOW PREPARED_STATEMENTS (pgwharf's own) ---- */

static int show_prepared(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = {
        { "name", TX }, { "parameters", I4 }, { "refs", I4 }, { "query", TX },
    };
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    size_t bucket = 0;
    void *cursor = NULL;
    struct pgw_ps_info info;
    while (pgw_ps_next(s->px, &bucket, &cursor, &info)) {
        pgw_rs_row(&rs);
        pgw_rs_text(&rs, info.name);
        pgw_rs_int(&rs, info.nparams);
        pgw_rs_int(&rs, info.refs);
        pgw_rs_text(&rs, info.query);
        pgw_rs_row_end(&rs);
    }
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

/* ---- PgBouncer views pgwharf has nothing for: right columns, no rows ---- */

static int show_empty(struct pgw_wbuf *out, const struct pgw_rs_col *cols, int n)
{
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, n);
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

/* Host names of the backends and what their last lookup gave: ttl is the
 * seconds until the next lookup (dns_max_ttl after an answer,
 * dns_nxdomain_ttl after a failure), addrs the addresses libpq connects
 * to. */
static int show_dns_hosts(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = { { "hostname", TX }, { "ttl", I8 }, { "addrs", TX } };
    ev_tstamp now = pgw_mono_now(s->px->loop);
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    for (struct pgw_backend *be = pgw_backend_next(s->px->pools, NULL); be;
         be = pgw_backend_next(s->px->pools, be)) {
        struct pgw_backend_info bi;
        pgw_backend_get_info(be, &bi);
        if (!bi.hostname)
            continue;
        double ttl = bi.lookup_due > 0 ? bi.lookup_due - now : 0;
        pgw_rs_row(&rs);
        pgw_rs_text(&rs, bi.hostname);
        pgw_rs_int(&rs, ttl > 0 ? (int64_t)(ttl + 0.999) : 0);
        pgw_rs_text(&rs, bi.addrs ? bi.addrs : "");
        pgw_rs_row_end(&rs);
    }
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

static int show_dns_zones(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = { { "zonename", TX }, { "serial", I8 },
                                              { "count", I4 } };
    return show_empty(out, cols, PGW_RS_NCOLS(cols));
}

/* The [peers] entries; pool_size is PgBouncer's, shown as PgBouncer shows
 * it (default_pool_size when the entry sets none), unused: each forwarded
 * cancel has its own connection. */
static int show_peers(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = {
        { "peer_id", I4 }, { "host", TX }, { "port", I4 }, { "pool_size", I4 },
    };
    const struct pgw_config *cfg = s->px->cfg;
    struct pgw_rs rs;
    pgw_rs_begin(&rs, out, cols, PGW_RS_NCOLS(cols));
    for (int i = 0; i < cfg->npeers; i++) {
        const struct pgw_conf_peer *p = &cfg->peers[i];
        pgw_rs_row(&rs);
        pgw_rs_int(&rs, p->id);
        pgw_rs_text(&rs, p->host);
        pgw_rs_int(&rs, p->port);
        pgw_rs_int(&rs, p->pool_size >= 0 ? p->pool_size : cfg->default_pool_size);
        pgw_rs_row_end(&rs);
    }
    pgw_rs_end(&rs, "SHOW");
    return PGW_ADMIN_DONE;
}

static int show_peer_pools(struct pgw_session *s, struct pgw_wbuf *out)
{
    static const struct pgw_rs_col cols[] = {
        { "peer_id", I4 }, { "cl_active_cancel_req", I4 }, { "cl_waiting_cancel_req", I4 },
        { "sv_active_cancel", I4 }, { "sv_login", I4 },
    };
    return show_empty(out, cols, PGW_RS_NCOLS(cols));
}

/* SHOW FDS hands PgBouncer's sockets to the process taking over in an
 * online restart (-R), which pgwharf refuses: a clear error rather than
 * "invalid command". */
static int show_fds(struct pgw_session *s, struct pgw_wbuf *out)
{
    (void)s;
    return pgw_admin_error(out, "0A000", "SHOW FDS is not supported: pgwharf has no online "
                           "restart (-R); restart with so_reuseport and SHUTDOWN "
                           "WAIT_FOR_CLIENTS instead");
}

static int show_help(struct pgw_session *s, struct pgw_wbuf *out)
{
    size_t m = pgw_wbuf_msg_begin(out, PGW_BE_NOTICE);
    static const char *const fields[] = {
        "SNOTICE", "VNOTICE", "C00000", "MConsole usage",
        "D\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
        "\tSHOW PEERS|PEER_POOLS\n"
        "\tSHOW SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE|BREAKERS|PREPARED_STATEMENTS\n"
        "\tSHOW DNS_HOSTS|DNS_ZONES\n"
        "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
        "\tSET key = arg\n"
        "\tRELOAD\n"
        "\tPAUSE [<db>]\n"
        "\tRESUME [<db>]\n"
        "\tDISABLE <db>\n"
        "\tENABLE <db>\n"
        "\tRECONNECT [<db>]\n"
        "\tKILL [<db>]\n"
        "\tKILL_CLIENT <client_id>\n"
        "\tWAIT_CLOSE [<db>]\n"
        "\tSHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]",
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        pgw_wbuf_put_str(out, fields[i]);
    pgw_wbuf_put_u8(out, 0);
    pgw_wbuf_msg_end(out, m);
    pgw_wire_command_complete(out, "SHOW");
    return PGW_ADMIN_DONE;
}

/* Session parameters some drivers SHOW on connect, and their values. */
static const char *const fake_params[][2] = {
    { "client_encoding", "UTF8" }, { "default_transaction_isolation", "read committed" },
    { "standard_conforming_strings", "on" }, { "datestyle", "ISO" }, { "timezone", "UTC" },
    { "extra_float_digits", "2" }, { "server_version", PGW_VERSION "/pgwharf" },
};

static int show_fake(const char *name, struct pgw_wbuf *out)
{
    for (size_t i = 0; i < sizeof(fake_params) / sizeof(fake_params[0]); i++) {
        if (strcasecmp(name, fake_params[i][0]) != 0)
            continue;
        struct pgw_rs_col col = { fake_params[i][0], TX };
        struct pgw_rs rs;
        pgw_rs_begin(&rs, out, &col, 1);
        pgw_rs_row(&rs);
        pgw_rs_text(&rs, fake_params[i][1]);
        pgw_rs_row_end(&rs);
        pgw_rs_end(&rs, "SHOW");
        return PGW_ADMIN_DONE;
    }
    return pgw_admin_error(out, "42601", "invalid command 'SHOW %s', use SHOW HELP;", name);
}

/* ---- dispatch ---- */

static int show_stats_all(struct pgw_session *s, struct pgw_wbuf *o)
{
    return show_stats(s, STATS_ALL, o);
}
static int show_stats_totals(struct pgw_session *s, struct pgw_wbuf *o)
{
    return show_stats(s, STATS_TOTALS, o);
}
static int show_stats_averages(struct pgw_session *s, struct pgw_wbuf *o)
{
    return show_stats(s, STATS_AVERAGES, o);
}

static const struct {
    const char *word;
    int (*fn)(struct pgw_session *s, struct pgw_wbuf *out);
} views[] = {
    { "pools", show_pools },           { "clients", show_clients },
    { "servers", show_servers },       { "databases", show_databases },
    { "users", show_users },           { "config", show_config },
    { "lists", show_lists },           { "mem", show_mem },
    { "version", show_version },       { "state", show_state },
    { "stats", show_stats_all },       { "stats_totals", show_stats_totals },
    { "stats_averages", show_stats_averages }, { "totals", show_totals },
    { "breakers", show_breakers },     { "help", show_help },
    { "prepared_statements", show_prepared },
    { "dns_hosts", show_dns_hosts },   { "dns_zones", show_dns_zones },
    { "peers", show_peers },           { "peer_pools", show_peer_pools },
    { "sockets", show_sockets },       { "active_sockets", show_active_sockets },
    { "fds", show_fds },
};

bool pgw_admin_show_known(const char *what)
{
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++)
        if (strcasecmp(what, views[i].word) == 0)
            return true;
    for (size_t i = 0; i < sizeof(fake_params) / sizeof(fake_params[0]); i++)
        if (strcasecmp(what, fake_params[i][0]) == 0)
            return true;
    return false;
}

int pgw_admin_show(struct pgw_session *s, const char *what, struct pgw_wbuf *out)
{
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++)
        if (strcasecmp(what, views[i].word) == 0)
            return views[i].fn(s, out);
    return show_fake(what, out);
}
