/*
 * session.c - one client connection as a state machine (see enum
 * pgw_sess_state in proxy_int.h): reading the startup packet, handing off
 * to auth, the welcome after login, the session timer, and the single close
 * path.  The byte relay lives in relay.c.
 */
#include "proxy/proxy_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/pgenc.h"
#include "proxy/codec.h"
#include "proxy/tls.h"
#include "proxy/prepared.h"

const char *const pgw_tracked_param_names[PGW_TP_COUNT] = {
    "client_encoding", "DateStyle", "TimeZone", "IntervalStyle",
    "standard_conforming_strings", "application_name", "extra_float_digits"
};

int pgw_tracked_param_index(const struct pgw_proxy *px, const char *name)
{
    /* Called for every parameter of every welcome: the length first. */
    size_t n = strlen(name);
    for (int i = 0; i < px->ntracked; i++)
        if (px->tracked_len[i] == n && strcasecmp(name, px->tracked[i]) == 0)
            return i;
    return -1;
}

/* A server's record of a tracked parameter as unknown ("": relay.c's
 * forget_unreported) is kept inline (struct pgw_param): it cannot fail. */
_Static_assert(PGW_CONF_PARAM_NAME_MAX + 2 <= PGW_PARAM_INLINE,
               "a track_extra_parameters name does not fit struct pgw_param inline");

int pgw_tracked_params_init(struct pgw_proxy *px, char *errbuf, size_t errlen)
{
    char err[256];
    px->ntracked = 0;
    for (int i = 0; i < PGW_TP_COUNT; i++) {
        px->tracked_len[px->ntracked] = strlen(pgw_tracked_param_names[i]);
        px->tracked[px->ntracked++] = pgw_tracked_param_names[i];
    }
    int n = pgw_conf_track_extra(px->cfg->track_extra_parameters, px->tracked_extra, err,
                                 sizeof(err));
    if (n < 0) {
        snprintf(errbuf, errlen, "track_extra_parameters: %s", err);
        return PGW_ECONFIG;
    }
    for (int i = 0; i < n; i++)          /* IntervalStyle (PgBouncer's default) is built in */
        if (pgw_tracked_param_index(px, px->tracked_extra[i]) < 0) {
            px->tracked_len[px->ntracked] = strlen(px->tracked_extra[i]);
            px->tracked[px->ntracked++] = px->tracked_extra[i];
        }
    px->tracked_timeout = pgw_tracked_param_index(px, "statement_timeout");
    return 0;
}

const char *pgw_sess_state_name(enum pgw_sess_state st)
{
    static const char *const names[] = {
        "startup", "auth", "login_wait", "login_sync", "idle", "waiting",
        "active", "admin", "cancel", "closing"
    };
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}

static void client_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void client_write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* Decimal digits of v at o; the end of them. */
static char *put_uint(char *o, unsigned v)
{
    char d[10];
    int n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *o++ = d[--n];
    return o;
}

static void addr_to_text(struct pgw_session *s, const struct sockaddr *sa)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (s->unix_sock) {
        snprintf(s->addr_text, sizeof(s->addr_text), "unix");
        return;
    }
    if (sa->sa_family == AF_INET) {
        /* Every TCP login comes here: written by hand, not through
         * inet_ntop and snprintf (a tenth of a login's user time). */
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        const uint8_t *ip = (const uint8_t *)&in->sin_addr;
        char *o = s->addr_text;
        for (int i = 0; i < 4; i++) {
            o = put_uint(o, ip[i]);
            *o++ = i < 3 ? '.' : ':';
        }
        o = put_uint(o, ntohs(in->sin_port));
        *o = '\0';
        return;
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(s->addr_text, sizeof(s->addr_text), "%s:%d", host, port);
}

/* The client's address as PgBouncer's application_name_add_host writes
 * it: "1.2.3.4:port", "[::1]:port", "unix(<pid>@<host name>):<port>". */
static const char *app_name_addr(const struct pgw_session *s, char *buf, size_t len)
{
    if (s->unix_sock) {
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        char host[64] = "";
        if (getsockopt(s->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0)
            cred.pid = 0;
        if (gethostname(host, sizeof(host) - 1) < 0)
            host[0] = '\0';
        snprintf(buf, len, "unix(%d@%s):%d", (int)cred.pid, host, s->px->cfg->listen_port);
        return buf;
    }
    if (s->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&s->addr;
        char host[INET6_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%d", host, ntohs(in6->sin6_port));
        return buf;
    }
    return s->addr_text;
}

struct pgw_session *pgw_session_create(struct pgw_proxy *px, int fd, const struct sockaddr *sa,
                                       socklen_t salen, bool unix_sock, bool over_limit)
{
    struct pgw_session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->ctx = pgw_ctx_with_cancel(px->root);
    if (!s->ctx) {
        free(s);
        return NULL;
    }
    s->px = px;
    s->id = ++px->next_session_id;
    s->fd = fd;
    s->unix_sock = unix_sock;
    if (salen <= sizeof(s->addr))
        memcpy(&s->addr, sa, salen);
    addr_to_text(s, sa);
    s->state = PGW_SS_STARTUP;
    s->track.tx_status = 'I';
    s->connect_time = s->last_activity = pgw_mono_now(px->loop);
    pgw_list_init(&s->cancel_node);
    pgw_list_init(&s->pipe_node);
    pgw_list_init(&s->cancel_askers);
    pgw_list_init(&s->ask_node);
    ev_io_init(&s->cli_r, client_read_cb, fd, EV_READ);
    ev_io_init(&s->cli_w, client_write_cb, fd, EV_WRITE);
    ev_init(&s->timer, timer_cb);
    ev_io_start(px->loop, &s->cli_r);
    pgw_list_append(&px->sessions, &s->node);
    pgw_list_init(&s->over_node);
    s->over_limit = over_limit;
    if (over_limit) {
        px->nrejecting++;
        pgw_list_append(&px->over_limit, &s->over_node);
    } else {
        px->nclients++;
    }
    px->total_clients++;
    pgw_session_arm_timer(s);
    return s;
}

/* s no longer counts among those let in past the cap. */
static void over_limit_end(struct pgw_session *s)
{
    s->over_limit = false;
    s->px->nrejecting--;
    pgw_list_del(&s->over_node);
    pgw_list_init(&s->over_node);
}

/* A CancelRequest connection held open until its forward is over (see
 * handle_startup) leaves its client slot for the room past the cap, while
 * there is room there (px->overflow_cap, descriptors of the reserve): the
 * cancels of a burst of statement timeouts, held behind a slow server or
 * a long query, kept real clients out at max_client_conn (PgBouncer 1.18
 * counts them as clients too).  Past that room it keeps its slot. */
static void cancel_leaves_slot(struct pgw_session *s)
{
    struct pgw_proxy *px = s->px;
    /* Half the room at most: the rest stays for what only it can take at
     * the cap, a console login and a cancel that comes then. */
    if (s->over_limit || px->nrejecting >= px->overflow_cap / 2)
        return;
    px->nclients--;
    s->over_limit = true;
    px->nrejecting++;
    pgw_list_append(&px->over_limit, &s->over_node);
}

/* May a CancelRequest that came at the cap (its place in the room past
 * the cap taken at accept) be held there until its forward is over?  Only
 * while held cancels leave the room's last PGW_OVERFLOW_CONSOLE places
 * (half a smaller room) to the rest: those from below the cap (cancel_leaves_slot) and those at it
 * filled it, and a console login found no place (a full pgwharf could
 * not be looked at).  The room is small: counted here. */
static bool cancel_hold_room(const struct pgw_session *s)
{
    const struct pgw_proxy *px = s->px;
    if (!s->over_limit)
        return true;
    int held = 0;
    for (const struct pgw_list *l = px->over_limit.next; l != &px->over_limit; l = l->next)
        if (pgw_container_of(l, struct pgw_session, over_node)->state == PGW_SS_CANCEL)
            held++;
    /* A room cut to a few places by a small open-files limit (8 under a
     * limit of 64) would keep them all for the console, every cancel at
     * the cap refused: the console keeps half of it then. */
    int console = (px->overflow_cap + 1) / 2;
    if (console > PGW_OVERFLOW_CONSOLE)
        console = PGW_OVERFLOW_CONSOLE;
    return held < px->overflow_cap - console;
}

/* Has s, let in past the cap, sent nothing at all: no byte read, none
 * waiting in its socket (an end there counts as nothing)?  Such a one can
 * take the 53300 in plaintext; one in its TLS handshake can be told
 * nothing (only closed), and one whose SSLRequest is in would read the
 * 53300 as the answer to it, which libpq (15.10 and later) reports as
 * "server sent an error response during SSL exchange", the 53300 lost. */
static bool sent_nothing(const struct pgw_session *s)
{
    if (s->ssl || s->ssl_asked || s->gss_asked || (s->cbuf && s->cbuf->len > 0))
        return false;
    char c;
    return recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
}

/* Has s, in plaintext (no TLS, no SSLRequest or GSSENCRequest answered),
 * sent less than a whole first packet, counting what it has read and what
 * waits in its socket?  A flood of connections sending a byte each is no
 * more a client than one sending nothing. */
static bool sent_a_part(const struct pgw_session *s)
{
    if (s->ssl || s->ssl_asked || s->gss_asked)
        return false;
    uint8_t head[4];
    size_t have = 0;
    uint32_t in = s->cbuf ? s->cbuf->len - s->cbuf->sent : 0;
    if (in > 0) {
        have = in < sizeof(head) ? in : sizeof(head);
        memcpy(head, s->cbuf->data + s->cbuf->sent, have);
    }
    if (have < sizeof(head)) {       /* the rest of the length from the socket */
        ssize_t n = recv(s->fd, head + have, sizeof(head) - have, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0)
            have += (size_t)n;
    }
    int waiting = 0;
    if (ioctl(s->fd, FIONREAD, &waiting) < 0 || waiting < 0)
        waiting = 0;
    long need = pgw_startup_need(head, have);
    return need == 0 || (need > 0 && (long)in + waiting < need);
}

bool pgw_session_over_limit_room(struct pgw_proxy *px)
{
    /* First one that has sent nothing at all (the idle connections of a
     * flood: a client in its TLS handshake, or whose SSLRequest is still
     * unread, was pushed out for them and got no 53300 it could read);
     * then one in plaintext that has sent part of a first packet (a flood
     * of a byte each went around the first); then one that has sent
     * nothing of a login yet; then a console login still proving who it
     * is (any user name gets that far: review) */
    static const enum pgw_sess_state order[] = { PGW_SS_STARTUP, PGW_SS_STARTUP, PGW_SS_STARTUP,
                                                 PGW_SS_AUTH };
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        for (struct pgw_list *l = px->over_limit.next; l != &px->over_limit; l = l->next) {
            struct pgw_session *s = pgw_container_of(l, struct pgw_session, over_node);
            if (s->state == order[k] && (k != 0 || sent_nothing(s)) &&
                (k != 1 || sent_a_part(s))) {
                pgw_session_close(s, "53300", "no more connections allowed (%s)",
                                  pgw_proxy_full_limit(px));
                return true;
            }
        }
    }
    return false;
}

/* ---- the session timer: one ev_timer, re-armed lazily ---- */

/* The moment the current timeout expires, or 0 when none applies. */
void pgw_session_apply_timeouts(struct pgw_session *s)
{
    const struct pgw_config *cfg = s->px->cfg;
    const struct pgw_conf_user *u = s->user ? pgw_conf_find_user(cfg, s->user) : NULL;
    s->query_timeout = pgw_conf_query_timeout(cfg, u);
    s->idle_transaction_timeout = pgw_conf_idle_transaction_timeout(cfg, u);
    s->client_idle_timeout = pgw_conf_client_idle_timeout(cfg, u);
    s->transaction_timeout = pgw_conf_transaction_timeout(cfg, u);
    if (s->replication) {
        /* START_REPLICATION and BASE_BACKUP stream for as long as they
         * last: one "query" that never ends is no stuck transaction.  And
         * the client holds its own server from login: not idle either
         * (PgBouncer skips a client linked to a server). */
        s->query_timeout = s->idle_transaction_timeout = s->transaction_timeout = 0;
        s->client_idle_timeout = 0;
    }
}

/* transaction_timeout: a transaction runs from its first query (an
 * implicit one-statement transaction too, as PostgreSQL 17 counts it)
 * until the ReadyForQuery 'I' that ends it. */
static ev_tstamp transaction_deadline(const struct pgw_session *s)
{
    if (s->transaction_timeout <= 0)
        return 0;
    ev_tstamp start = s->xact_start > 0 ? s->xact_start : s->query_start;
    if (start <= 0)
        return 0;
    /* A pipeline's earlier transactions ended at their ReadyForQuery 'I'
     * (query_start is the pipeline's first message). */
    if (s->xact_floor > start)
        start = s->xact_floor;
    return start + s->transaction_timeout;
}

/* Why a session's timer fires: X(name, its text in the log: the key that
 * set the deadline, mostly). */
#define SESSION_TIMEOUTS(X)                              \
    X(NONE, "")                                          \
    X(LOGIN, "client_login_timeout")                     \
    X(IDLE, "client_idle_timeout")                       \
    X(WAIT_NOTIFY, "query_wait_notify")                  \
    X(WAIT, "query_wait_timeout")                        \
    X(QUERY, "query_timeout")                            \
    X(QUERY_AHEAD, "query_timeout")                      \
    X(TRANSACTION, "transaction_timeout")                \
    X(IDLE_TRANSACTION, "idle_transaction_timeout")      \
    X(CANCEL_OVER, "cancel_over")                        \
    X(CANCEL_WAIT, "cancel_wait_timeout")                \
    X(TERM_SENT, "server_connect_timeout")

enum session_timeout {
#define X(name, text) TO_##name,
    SESSION_TIMEOUTS(X)
#undef X
};

static const char *const timeout_text[] = {
#define X(name, text) text,
    SESSION_TIMEOUTS(X)
#undef X
};

/* The earlier of two deadlines (0 = none). */
static ev_tstamp earlier(ev_tstamp at, enum session_timeout *what, ev_tstamp other,
                         enum session_timeout other_what)
{
    if (other > 0 && (at <= 0 || other < at)) {
        *what = other_what;
        return other;
    }
    return at;
}

/* Bytes of a client message not yet relayed (one still arriving). */
static bool client_msg_arriving(const struct pgw_session *s)
{
    return s->cbuf && s->cbuf->parsed < s->cbuf->len;
}

static ev_tstamp linked_deadline(const struct pgw_session *s, enum session_timeout *what);

static ev_tstamp session_deadline(const struct pgw_session *s, enum session_timeout *what)
{
    const struct pgw_config *cfg = s->px->cfg;
    switch (s->state) {
    case PGW_SS_STARTUP:
    case PGW_SS_AUTH:
    case PGW_SS_LOGIN_WAIT:
    case PGW_SS_LOGIN_SYNC:
        *what = TO_LOGIN;
        return cfg->client_login_timeout > 0 ? s->connect_time + cfg->client_login_timeout : 0;
    case PGW_SS_ADMIN:
        if (s->admin_waiting)
            return 0;           /* waits for pgwharf (PAUSE, WAIT_CLOSE): not idle */
        /* fall through */
    case PGW_SS_IDLE: {
        /* Waiting for its lone LISTEN's answer from the pool's listening
         * server is no idleness: query_timeout runs there instead. */
        if (pgw_notify_waiting(s) || pgw_notify_rfq_held(s)) {
            /* from its sending to the listening server, or (as a query's
             * wait in the pool's queue) from when it began to wait for
             * that server; while it waits there, query_wait_notify's
             * notice as for a query waiting for a server */
            ev_tstamp sent = s->query_timeout > 0 ? pgw_notify_sent_at(s) : 0, since = 0;
            bool queued = pgw_notify_waits_for_server(s, &since);
            ev_tstamp at = 0;
            if (queued && cfg->query_wait_notify > 0 && !s->wait_notified) {
                *what = TO_WAIT_NOTIFY;
                at = since + cfg->query_wait_notify;
            }
            if (s->query_timeout > 0 && sent == 0 && queued)
                sent = since;
            return earlier(at, what, sent > 0 ? sent + s->query_timeout : 0, TO_QUERY);
        }
        *what = TO_IDLE;
        return s->client_idle_timeout > 0 ? s->last_activity + s->client_idle_timeout : 0;
    }
    case PGW_SS_WAIT_SERVER:
        /* In the pool's queue query_wait_timeout runs there (this timer
         * tells the client, once, that it waits: query_wait_notify, and
         * runs query_timeout); queued on a server (server_pipeline_depth),
         * the query ahead runs under its own query_timeout, and this one's
         * starts when it gets the server. */
        if (s->pipe_srv)
            return 0;
        ev_tstamp at = 0;
        if (cfg->query_wait_notify > 0 && !s->wait_notified) {
            *what = TO_WAIT_NOTIFY;
            at = s->waiter.since + cfg->query_wait_notify;
        }
        /* As PgBouncer's, query_timeout counts the wait (query_wait_timeout
         * may be longer). */
        return earlier(at, what, s->query_timeout > 0 ? s->waiter.since + s->query_timeout : 0,
                       TO_QUERY);
    case PGW_SS_LINKED: {
        if (s->pipe_waits) {
            /* Handed a server that still runs the query of a client that
             * left ahead of its own (server_pipeline_depth): nobody's
             * query_timeout runs that one, and this one's query has not
             * started.  It waits for its server, as in the pool's queue,
             * under query_wait_timeout from when it began to wait; and
             * that query under its client's query_timeout still, as if
             * the client had stayed (pipe_left_at). */
            double t = s->pool ? pgw_pool_query_wait_timeout(s->pool) : 0;
            *what = TO_WAIT;
            return earlier(t > 0 ? s->waiter.since + t : 0, what, s->pipe_left_at,
                           TO_QUERY_AHEAD);
        }
        ev_tstamp end = earlier(linked_deadline(s, what), what, transaction_deadline(s),
                                TO_TRANSACTION);
        /* The client's end went to its server, which answers what came
         * before it and closes (relay.c, term_to_server, eof_cut_to_server):
         * the session waits for that close, the server's slot held, for as
         * long as the pool waits for any server's reply of its own -- a
         * frozen backend held it for ever without query_timeout.  (The
         * client left: PgBouncer closes the server at once.) */
        if (s->term_sent && cfg->server_connect_timeout > 0)
            end = earlier(end, what, s->term_sent_at + cfg->server_connect_timeout, TO_TERM_SENT);
        return end;
    }
    case PGW_SS_CANCEL:
        /* What it asked for is over (cancel.c); else a deferred cancel it
         * waits for, at most cancel_wait_timeout (a forward under way has
         * that deadline of its own). */
        if (s->cancel_over) {
            *what = TO_CANCEL_OVER;
            return pgw_mono_now(s->px->loop);
        }
        *what = TO_CANCEL_WAIT;
        return s->ask_deferred && cfg->cancel_wait_timeout > 0
                   ? s->cancel_at + cfg->cancel_wait_timeout : 0;
    default:
        return 0;
    }
}

/* Has the server answered all the client sent, and waits for the rest of
 * its next message?  PostgreSQL reads a message whole before it runs it:
 * a client sending one a byte at a time is idle until the last one comes
 * (its idle_in_transaction_session_timeout runs meanwhile). */
static bool awaits_rest_of_message(const struct pgw_session *s)
{
    if (s->track.copy || s->track.sync_out > 1 || s->swallow > 0)
        return false;
    if (s->cskip > 0)
        return s->cmsg_alone;       /* relayed as it comes: counted already */
    const struct pgw_iobuf *b = s->cbuf;
    if (s->track.sync_out > 0 || s->track.fe_open > 0 || !b || b->parsed == b->len)
        return false;
    uint32_t have = b->len - b->parsed;
    return have < PGW_MSG_HDR || have < 1 + pgw_get_u32(b->data + b->parsed + 1);
}

static ev_tstamp linked_deadline_as_sent(const struct pgw_session *s, enum session_timeout *what);

static ev_tstamp linked_deadline(const struct pgw_session *s, enum session_timeout *what)
{
    ev_tstamp at = linked_deadline_as_sent(s, what);
    if (!awaits_rest_of_message(s))
        return at;
    /* Idle since the server was ready, however many bytes came since. */
    if (s->track.tx_status != 'I')
        return earlier(at, what, s->idle_transaction_timeout > 0
                                     ? s->ready_at + s->idle_transaction_timeout : 0,
                       TO_IDLE_TRANSACTION);
    if (s->mode == PGW_POOL_SESSION && s->requested)
        return at;
    return earlier(at, what, s->client_idle_timeout > 0 ? s->ready_at + s->client_idle_timeout : 0,
                   TO_IDLE);
}

static ev_tstamp linked_deadline_as_sent(const struct pgw_session *s, enum session_timeout *what)
{
    /* query_start is set while a request is under way: one awaiting its
     * ReadyForQuery, extended-protocol messages with no Sync yet, or a
     * message still arriving.  Without a Sync a client could otherwise
     * hold its server for ever.  In a pipeline each request is timed
     * from when the server started on it, the ReadyForQuery of the one
     * before (query_floor): several short queries sent at once are no
     * long one (query_start, the first message, is the statistics'). */
    if (s->query_start > 0 &&
        (s->track.sync_out > 0 || s->swallow > 0 ||    /* (its SETs first: relay.c) */
         (s->query_timeout > 0 &&
          (s->track.fe_open > 0 || s->ps_wait || client_msg_arriving(s))))) {
        *what = TO_QUERY;
        if (s->query_timeout <= 0)
            return 0;
        ev_tstamp start = s->query_floor > s->query_start ? s->query_floor : s->query_start;
        if (s->query_floor == 0 && s->waited_since > 0 && s->waited_since < start)
            start = s->waited_since;     /* the request that waited for the server */
        return start + s->query_timeout;
    }
    if (s->track.fe_open > 0 || s->ps_wait) {
        /* Extended-protocol messages with no Sync yet (a cursor's Execute
         * + Flush, a pipeline): the server may be running them, so the
         * client is not idle.  Nor while its message waits for answers
         * (PGW_PS_WAIT: a Parse of pgwharf's sent ahead of it may wait on
         * a lock). */
        *what = TO_NONE;
        return 0;
    }
    if (s->track.tx_status != 'I') {
        *what = TO_IDLE_TRANSACTION;
        return s->idle_transaction_timeout > 0 ? s->last_activity + s->idle_transaction_timeout
                                               : 0;
    }
    if (s->mode == PGW_POOL_SESSION && s->requested) {
        /* As PgBouncer (janitor.c skips a client linked to a server): a
         * session client keeps the server it took with its first request,
         * idle or not, until it leaves.  Before that request it is idle
         * as a client with no server is. */
        *what = TO_NONE;
        return 0;
    }
    *what = TO_IDLE;
    return s->client_idle_timeout > 0 ? s->last_activity + s->client_idle_timeout : 0;
}

ev_tstamp pgw_session_query_deadline(const struct pgw_session *s)
{
    enum session_timeout what = TO_NONE;
    ev_tstamp at = linked_deadline_as_sent(s, &what);
    if (what != TO_QUERY)
        return 0;
    /* (A request others queue behind is one statement in its own
     * transaction: transaction_timeout ends it too.) */
    return earlier(at, &what, transaction_deadline(s), TO_TRANSACTION);
}

void pgw_session_list_join(struct pgw_session *s)
{
    s->list_seq = ++s->px->list_seq;
}

void pgw_session_arm_timer(struct pgw_session *s)
{
    enum session_timeout what = TO_NONE;
    ev_tstamp at = session_deadline(s, &what);
    struct ev_loop *loop = s->px->loop;
    if (at <= 0) {
        return;     /* a running timer re-checks when it fires */
    }
    ev_tstamp in = at - pgw_mono_now(loop);
    if (in < 0)
        in = 0;
    if (ev_is_active(&s->timer) && ev_timer_remaining(loop, &s->timer) <= in + 0.001)
        return;
    ev_timer_stop(loop, &s->timer);
    ev_timer_set(&s->timer, in, 0);
    ev_timer_start(loop, &s->timer);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgw_session *s = pgw_container_of(w, struct pgw_session, timer);
    enum session_timeout what = TO_NONE;
    ev_tstamp at = session_deadline(s, &what);
    if (at <= 0)
        return;
    if (at > pgw_mono_now(loop) + 0.0005) {
        ev_timer_set(w, at - pgw_mono_now(loop), 0);
        ev_timer_start(loop, w);
        return;
    }
    const char *name = timeout_text[what];
    switch (what) {
    case TO_WAIT_NOTIFY: {
        /* PgBouncer 1.25's notice, once per wait; the wait goes on. */
        s->wait_notified = true;
        struct pgw_wbuf b;
        pgw_wbuf_init(&b);
        pgw_wire_notice(&b, "00000",
                        "No server connection available in postgres backend, client being queued");
        if (!pgw_session_send(s, &b))
            pgw_session_close(s, "53200", "out of memory");
        pgw_wbuf_deinit(&b);
        if (s->state == PGW_SS_WAIT_SERVER || pgw_notify_waiting(s))
            pgw_session_arm_timer(s);       /* query_timeout still runs */
        break;
    }
    case TO_WAIT:
    case TO_QUERY_AHEAD:
        pgw_relay_pipe_wait_timeout(s, what == TO_QUERY_AHEAD);
        break;
    case TO_CANCEL_OVER:
        pgw_session_close(s, NULL, "cancel request handled");
        break;
    case TO_CANCEL_WAIT:
        /* The cancel stays deferred: it still goes once the query runs. */
        pgw_info(name, "client=%s reason=\"%s (%g s): the deferred cancel is still held for "
                 "the query; its connection is closed\"",
                 s->addr_text, name, s->px->cfg->cancel_wait_timeout);
        pgw_session_close(s, NULL, "%s", name);
        break;
    case TO_QUERY:
        /* Its server may be stuck in that query: nobody queued on it
         * (server_pipeline_depth) is handed the server; it closes. */
        if (s->server)
            s->server->user_pipe_broken = true;
        else
            pgw_notify_query_timeout(s);    /* its LISTEN, on the listening server */
        pgw_session_close(s, "57014", "%s: canceling statement due to query timeout", name);
        break;
    case TO_TRANSACTION:
        if (s->server)
            s->server->user_pipe_broken = true;     /* maybe mid-query, as above */
        /* 25P04: PostgreSQL 17's transaction_timeout */
        pgw_session_close(s, "25P04", "%s: transaction timed out", name);
        break;
    case TO_TERM_SENT:
        /* Its server is closed (retired already: never given back), and
         * what it runs cancelled: closing alone does not stop it
         * (PostgreSQL sees a client gone only when it writes), so a long
         * query the client's end went behind ran on past its server's
         * close while the pool, its slot free, opened another backend
         * (review r3: pool_size and max_db_connections overrun, one more
         * backend each server_connect_timeout). */
        if (s->server) {
            s->server->user_pipe_broken = true;
            pgw_cancel_server(s->px, s->server, name);
        }
        pgw_session_close(s, "08006", "%s: the server did not end after the client's end "
                          "(%g s)", name, s->px->cfg->server_connect_timeout);
        break;
    case TO_LOGIN:
        pgw_session_close(s, "08P01", "%s: client did not log in in time", name);
        break;
    case TO_IDLE_TRANSACTION:
        pgw_session_close(s, "25P03", "%s: idle transaction timed out", name);
        break;
    case TO_IDLE:
    case TO_NONE:
        pgw_session_close(s, "08P01", "%s: client idle too long", timeout_text[TO_IDLE]);
        break;
    }
}

/* ---- writing to the client ---- */

/* write(2) alike, through TLS once the client asked for it. */
static ssize_t cli_write(struct pgw_session *s, const void *p, size_t n)
{
    if (s->ssl)
        return pgw_tls_write(s, p, n);
    ssize_t w;
    do {
        w = write(s->fd, p, n);
    } while (w < 0 && errno == EINTR);
    return w;
}

static bool discard_client_input(struct pgw_session *s);

void pgw_session_flush_client(struct pgw_session *s)
{
    struct pgw_iobuf *b = s->sbuf;
    struct ev_loop *loop = s->px->loop;
    if (!b)
        return;
    while (b->sent < pgw_iobuf_out_end(b)) {
        ssize_t w = cli_write(s, b->data + b->sent, pgw_iobuf_out_end(b) - b->sent);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!ev_is_active(&s->cli_w))
                    ev_io_start(loop, &s->cli_w);
                s->cli_write_blocked = true;
                return;
            }
            /* The client is gone (also one that sent requests and closed:
             * client_eof).  As PostgreSQL, whose backend ends at a write
             * its client cannot take ("connection to client lost"): a
             * server mid-request is closed, so the request is cut off and
             * nothing sent after it runs, rather than streaming a COPY or
             * a BASE_BACKUP to nowhere and running the requests behind.
             * (But for the end of a COPY pgwharf is making: it goes on.) */
            if (pgw_relay_copy_abort_lost(s)) {
                s->cli_write_blocked = false;
                if (ev_is_active(&s->cli_w))
                    ev_io_stop(loop, &s->cli_w);
                return;
            }
            pgw_session_close(s, NULL, "client write failed: %s", strerror(errno));
            return;
        }
        b->sent += (uint32_t)w;
        s->bytes_out += (uint64_t)w;
    }
    s->cli_write_blocked = false;
    if (s->close_after_sent && b->sent == b->len && s->state != PGW_SS_CLOSING) {
        if (!discard_client_input(s))
            return;
        pgw_session_close(s, NULL, "its final error was read");    /* logged before */
        return;
    }
    if (ev_is_active(&s->cli_w) && !(s->tls_flags & PGW_TLS_READ_WANTS_WRITE))
        ev_io_stop(loop, &s->cli_w);
    if (b->sent == b->len) {
        b->sent = b->parsed = b->len = b->hold = 0;
        b->held = false;
        if (!s->server || b->cap != PGW_IOBUF_SIZE) {
            pgw_iobuf_put(s->px, b);
            s->sbuf = NULL;
        }
    }
    /* Room again: resume reading the server if we had stopped.  Bytes a
     * TLS server link already decrypted will not make its socket readable. */
    if (s->server && !ev_is_active(&s->server->user_r)) {
        ev_io_start(loop, &s->server->user_r);
        if (pgw_server_pending(s->server) > 0)
            ev_feed_event(loop, &s->server->user_r, EV_READ);
    }
    if (s->replies_unread)
        pgw_relay_replies_read(s);      /* its next request, held meanwhile */
    if (s->client_eof && s->state != PGW_SS_CLOSING)
        pgw_relay_eof_check(s);
}

/* libev could not watch the client's socket (epoll_ctl failed, ENOMEM):
 * it stopped the watchers and says so once (EV_ERROR).  Nothing more would
 * ever be read or written: the session ends (else the client waits for
 * ever, its descriptor held and shutdown waiting for it). */
static bool client_watch_failed(struct pgw_session *s, int revents)
{
    if (!(revents & EV_ERROR))
        return false;
    pgw_session_close(s, "08006", "could not watch the client's connection for events");
    return true;
}

static void client_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgw_session *s = pgw_container_of(w, struct pgw_session, cli_w);
    if (client_watch_failed(s, revents))
        return;
    if (s->ssl)
        pgw_tls_writable(s);    /* handshake, or a TLS read waiting for writability */
    else
        pgw_session_flush_client(s);
}

bool pgw_session_queue(struct pgw_session *s, const struct pgw_wbuf *msg)
{
    if (msg->failed)
        return false;
    if (!s->sbuf && !(s->sbuf = pgw_iobuf_get(s->px)))
        return false;
    /* Proxy-made bytes go after everything scanned, before any partial
     * server message still being received. */
    return pgw_iobuf_insert(s->sbuf, s->sbuf->parsed, msg->data, msg->len);
}

bool pgw_session_send(struct pgw_session *s, const struct pgw_wbuf *msg)
{
    if (!pgw_session_queue(s, msg))
        return false;
    pgw_batch_flush_client(s);
    return true;
}

/* ---- reading from the client ---- */

/* read(2) alike, through TLS once the client asked for it. */
static ssize_t cli_read(struct pgw_session *s, void *p, size_t n)
{
    if (s->ssl)
        return pgw_tls_read(s, p, n);
    ssize_t r;
    do {
        r = read(s->fd, p, n);
    } while (r < 0 && errno == EINTR);
    return r;
}

static void client_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgw_session *s = pgw_container_of(w, struct pgw_session, cli_r);
    if (client_watch_failed(s, revents))
        return;
    if (s->ssl)
        pgw_tls_readable(s);    /* handshake, or a TLS write waiting for readability */
    else
        pgw_session_read_client(s);
}

static ssize_t cli_read_fn(void *s, void *p, size_t n) { return cli_read(s, p, n); }

/* A CancelRequest for s has come: what s's client sent before it may
 * still be in s's socket.  libev runs the watchers of one poll last
 * ready first, so the listener (and the cancel's startup packet, read at
 * accept) went before a request that arrived earlier: the cancel found
 * nothing running and was dropped, the request then ran to its end.
 * PostgreSQL reads a request sent before the cancel first (the cancel's
 * backend fork is much slower than a read).  Read it now; s may end on
 * it (a Terminate): the caller looks its key up again. */
void pgw_session_read_before_cancel(struct pgw_session *s)
{
    /* Over TLS a read takes one record (a query of 20 kB is two), or
     * less than OpenSSL decrypted (its rest left there, the socket empty):
     * read until the socket and OpenSSL hold nothing more, or reading
     * stops (a full buffer, the end).  Bounded: a client that streams
     * (a COPY) is not read to its end here.  A closed session stays
     * allocated until the loop reaps it. */
    for (int round = 0; round < 64; round++) {
        if (s->state == PGW_SS_CLOSING || s->fd < 0 || !ev_is_active(&s->cli_r))
            return;
        char c;
        if (pgw_tls_pending(s) == 0 && recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
            return;    /* nothing, its end of stream or an error: the loop's */
        uint64_t before = s->bytes_in;
        ev_invoke(s->px->loop, &s->cli_r, EV_READ);
        if (s->bytes_in == before && pgw_tls_pending(s) == 0)
            return;    /* a TLS read waiting for the rest of a record, or a handshake */
    }
}

/* A session ending after its queued FATAL (close_after_sent) reads what
 * the client still sends and drops it (pgw_drain), at most 64 kB a call.
 * false: the session was closed (a read error). */
static bool discard_client_input(struct pgw_session *s)
{
    uint64_t left = UINT64_MAX;
    enum pgw_drain r = pgw_drain(s->fd, cli_read_fn, s, 65536, &left);
    s->bytes_in += UINT64_MAX - left;
    s->unrelayed_in += UINT64_MAX - left;    /* never relayed: not in SHOW STATS */
    if (r == PGW_DRAIN_ERROR) {
        pgw_session_close(s, NULL, "client read failed: %s", strerror(errno));
        return false;
    }
    /* Its end of stream: it may still read (a half-close); the writes go
     * on, and end it if it is gone. */
    if (r == PGW_DRAIN_EOF)
        ev_io_stop(s->px->loop, &s->cli_r);
    return true;
}

void pgw_session_read_client(struct pgw_session *s)
{
    struct ev_loop *loop = s->px->loop;
    if (s->close_after_sent) {
        discard_client_input(s);        /* nothing it sends is taken */
        return;
    }
    if (s->client_eof) {
        /* started again by the relay: nothing more comes */
        ev_io_stop(loop, &s->cli_r);
        return;
    }
    if (!s->cbuf && !(s->cbuf = pgw_iobuf_get(s->px))) {
        pgw_session_close(s, "53200", "out of memory");
        return;
    }
    struct pgw_iobuf *b = s->cbuf;
    if (b->len == b->cap)
        pgw_iobuf_compact(b);
    if (b->len == b->cap) {
        /* Full: stop reading until the server (or we) drain it.  A
         * client queued for a server is then seen to leave only at its
         * turn: its end of stream waits behind the bytes not read, in
         * the client's own send buffer past some hundred kB (README). */
        ev_io_stop(loop, &s->cli_r);
        return;
    }
    ssize_t n = cli_read(s, b->data + b->len, b->cap - b->len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        /* Reset inside a COPY FROM STDIN: as at the end of its stream,
         * pgwharf ends that COPY and keeps the server (relay.c,
         * copy_abort_leave); the client reads nothing more anyway. */
        if (errno == ECONNRESET && s->srv_copy_in && pgw_relay_client_eof(s))
            return;
        pgw_session_close(s, NULL, "client read failed: %s", strerror(errno));
        return;
    }
    if (n == 0) {
        /* A CancelRequest connection half-closed after the request (as
         * postgres.js sends it: end(request)) still waits for the forward
         * to end, as PostgreSQL keeps it open until it has signalled the
         * backend: the client reads the close as "done".  Nothing more
         * comes to read; a reset or read error still ends it (above). */
        if (s->state == PGW_SS_CANCEL) {
            ev_io_stop(loop, &s->cli_r);
            return;
        }
        /* What the client sent before its end of stream runs first, as
         * PostgreSQL reads it (relay.c). */
        if (!pgw_relay_client_eof(s))
            pgw_session_close(s, NULL, "client closed the connection");
        return;
    }
    b->len += (uint32_t)n;
    s->bytes_in += (uint64_t)n;
    s->last_activity = pgw_mono_now(loop);
    pgw_session_on_client_input(s);
}

/* The one-byte answer to an SSLRequest or GSSENCRequest.  false when it
 * could not be sent (the session is closed: the client would wait for it
 * until client_login_timeout, for ever without one). */
static bool send_simple_byte(struct pgw_session *s, char c)
{
    if (cli_write(s, &c, 1) == 1)
        return true;
    pgw_session_close(s, NULL, "could not send the answer to the encryption request: %s",
                      strerror(errno));
    return false;
}

static void negotiate_version(struct pgw_session *s, const struct pgw_startup *st)
{
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    size_t m = pgw_wbuf_msg_begin(&b, PGW_BE_NEGOTIATE);
    pgw_wbuf_put_u32(&b, PGW_PROTO_V3);
    pgw_wbuf_put_u32(&b, (uint32_t)st->nprotoopts);
    for (int i = 0; i < st->nprotoopts; i++)
        pgw_wbuf_put_str(&b, st->protoopts[i]);
    pgw_wbuf_msg_end(&b, m);
    pgw_session_send(s, &b);
    pgw_wbuf_deinit(&b);
}

static bool ignored_param(const struct pgw_config *cfg, const char *name)
{
    return cfg->ignore_startup_parameters &&
           pgw_conf_list_has(cfg->ignore_startup_parameters, name);
}

/* What take_param works on: the session, and whether a tracked parameter
 * came twice with different values (the first pass of
 * take_startup_params), or the list of them being made (the second). */
struct startup_take {
    struct pgw_session *s;
    bool twice;
    struct pgw_wbuf *order;          /* NULL: taking, not listing */
};

/* A tracked value PostgreSQL could refuse, onto t->order (startup_order):
 * not application_name, which it cleans and never refuses. */
static void list_param(struct startup_take *t, int i, const char *value)
{
    if (i == PGW_TP_APPLICATION_NAME)
        return;
    const char *name = t->s->px->tracked[i];
    pgw_wbuf_append(t->order, name, strlen(name) + 1);
    pgw_wbuf_append(t->order, value, strlen(value) + 1);
}

/* One startup parameter, on its own or from inside options: a tracked one
 * is kept; one in ignore_startup_parameters is dropped, and inside options
 * so is any other when options itself is listed there (as PgBouncer does);
 * anything else refuses the login.  0, or CLOSED when the session was
 * closed (positive: not one of pgw_startup_options' own codes). */
#define CLOSED 1
static int take_param(struct startup_take *tk, const char *name, const char *value,
                      bool in_options)
{
    struct pgw_session *s = tk->s;
    const struct pgw_config *cfg = s->px->cfg;
    int t = pgw_tracked_param_index(s->px, name);
    if (t >= 0 && tk->order) {
        list_param(tk, t, value);
        return 0;
    }
    if (t >= 0) {
        if (s->params[t] && strcmp(s->params[t], value) != 0 && t != PGW_TP_APPLICATION_NAME)
            tk->twice = true;
        /* A DateStyle of one part keeps the other part of the one before
         * it, as PostgreSQL applies them in turn ("German" then "SQL" is
         * "SQL, DMY"); the last alone, SET on a fresh server's "ISO, MDY",
         * gave "SQL, MDY". */
        char merged[32];
        if (t == PGW_TP_DATESTYLE && s->params[t] &&
            pgw_datestyle_merge(s->params[t], value, merged, sizeof(merged)))
            value = merged;
        char *v = strdup(value);
        if (!v) {
            pgw_session_close(s, "53200", "out of memory");
            return CLOSED;
        }
        free(s->params[t]);
        s->params[t] = v;
        return 0;
    }
    if (tk->order)
        return 0;                    /* (taken already) */
    if (ignored_param(cfg, name) || (in_options && ignored_param(cfg, "options")))
        return 0;
    pgw_session_close(s, "08P01", "unsupported startup parameter%s: %s",
                      in_options ? " in options" : "", name);
    return CLOSED;
}

/* PostgreSQL's parse_bool: a boolean word or a unique prefix of one (two
 * letters for on/off), any case; 1 true, 0 false, -1 neither. */
static int parse_bool(const char *v)
{
    static const struct { const char *word; size_t min; int value; } words[] = {
        { "true", 1, 1 }, { "false", 1, 0 }, { "yes", 1, 1 }, { "no", 1, 0 },
        { "on", 2, 1 }, { "off", 2, 0 }, { "1", 1, 1 }, { "0", 1, 0 },
    };
    size_t n = strlen(v);
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (n >= words[i].min && n <= strlen(words[i].word) &&
            strncasecmp(v, words[i].word, n) == 0)
            return words[i].value;
    return -1;
}

/* The startup parameter replication, as PostgreSQL reads it: "database"
 * (logical), a boolean (physical or none), anything else refused.  False
 * when the session was closed. */
static bool take_replication(struct pgw_session *s, const char *value)
{
    if (strcmp(value, "database") == 0) {
        s->replication = PGW_REPL_LOGICAL;
        return true;
    }
    int b = parse_bool(value);
    if (b < 0) {
        pgw_session_close(s, "22023", "invalid value for parameter \"replication\": \"%s\"",
                          value);
        return false;
    }
    s->replication = b ? PGW_REPL_PHYSICAL : PGW_REPL_NONE;
    return true;
}

/* pgw_startup_options' callback: a setting inside options, or a word that
 * is none (refused, unless options is in ignore_startup_parameters). */
static int take_option(void *arg, const char *name, const char *value)
{
    struct startup_take *tk = arg;
    struct pgw_session *s = tk->s;
    if (name)
        return take_param(tk, name, value, true);
    if (tk->order || ignored_param(s->px->cfg, "options"))
        return 0;
    pgw_session_close(s, "08P01", "unsupported options startup parameter: %s", value);
    return CLOSED;
}

/* One pass over the startup packet's parameters, options' first: a
 * parameter of its own in the packet wins over the same one inside
 * options, as in PostgreSQL (process_startup_options applies options'
 * switches, then the packet's parameters, each in turn).  false when the
 * session was closed. */
static bool startup_pass(struct startup_take *tk, const struct pgw_startup *st)
{
    struct pgw_session *s = tk->s;
    for (int i = 0; i < st->nparams; i++) {
        if (strcmp(st->names[i], "options") != 0)
            continue;
        int rc = pgw_startup_options(st->values[i], take_option, tk);
        if (rc == PGW_ENOMEM)
            pgw_session_close(s, "53200", "out of memory");
        if (rc != 0)
            return false;
    }
    for (int i = 0; i < st->nparams; i++) {
        const char *name = st->names[i];
        if (strcmp(name, "user") == 0 || strcmp(name, "database") == 0 ||
            strcmp(name, "options") == 0)
            continue;
        if (strcmp(name, "replication") == 0) {
            if (!tk->order && !take_replication(s, st->values[i]))
                return false;
            continue;
        }
        if (take_param(tk, name, st->values[i], false) != 0)
            return false;
    }
    return true;
}

/* A tracked parameter given twice with different values (in options and
 * on its own, or twice in options): PostgreSQL applies each in turn and
 * refuses the login at the first it refuses, where pgwharf keeps only the
 * last.  So every tracked value of the packet, in PostgreSQL's order, is
 * listed in s->startup_order ("name\0value\0...", an empty name at the
 * end) for the login's server to check (relay.c, sync_params).  false when
 * the session was closed. */
static bool list_startup_order(struct pgw_session *s, const struct pgw_startup *st)
{
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    struct startup_take tk = { .s = s, .order = &b };
    bool ok = startup_pass(&tk, st);
    if (ok) {
        pgw_wbuf_append(&b, "", 1);
        if (b.failed || !(s->startup_order = malloc(b.len))) {
            pgw_session_close(s, "53200", "out of memory");
            ok = false;
        } else {
            memcpy(s->startup_order, b.data, b.len);
        }
    }
    pgw_wbuf_deinit(&b);
    return ok;
}

/* Take what the startup packet says; false when the session was closed. */
static bool take_startup_params(struct pgw_session *s, const struct pgw_startup *st)
{
    struct startup_take tk = { .s = s };
    if (!startup_pass(&tk, st))
        return false;
    if (tk.twice && !list_startup_order(s, st))
        return false;
    if (s->px->cfg->application_name_add_host && !s->replication) {
        /* (Not for replication: synchronous_standby_names names the
         * standby by the application_name it sends.) */
        /* As PgBouncer: "<application_name or app> - <ip:port>", set once
         * at login; a later SET wins.  A long name is cut whole characters
         * at a time (PostgreSQL keeps 63 bytes of it anyway). */
        char *app = s->params[PGW_TP_APPLICATION_NAME];
        const char *name = app && *app ? app : "app";
        size_t n = strlen(name);
        if (n > 200) {
            n = 200;
            while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80)
                n--;
        }
        char buf[256], where[160];
        snprintf(buf, sizeof(buf), "%.*s - %s", (int)n, name,
                 app_name_addr(s, where, sizeof(where)));
        free(app);
        s->params[PGW_TP_APPLICATION_NAME] = strdup(buf);
        if (!s->params[PGW_TP_APPLICATION_NAME]) {
            pgw_session_close(s, "53200", "out of memory");
            return false;
        }
    }
    return true;
}

/* A client accepted beyond max_client_conn (or the open-files cap), at its
 * StartupMessage: a client like any other when others have left since
 * (PgBouncer counts at the StartupMessage too: an SSLRequest, a TLS
 * handshake came first); else refused, as PgBouncer does, unless it is
 * for the admin console, which PgBouncer lets in so that a full pooler
 * can still be looked at and managed.  Once logged in it counts as a
 * client like any other.  False when it was closed. */
static bool take_over_limit(struct pgw_session *s)
{
    struct pgw_proxy *px = s->px;
    if (px->nclients < px->client_cap) {
        over_limit_end(s);
        px->nclients++;
        return true;
    }
    if (!s->is_admin) {
        pgw_session_close(s, "53300", "no more connections allowed (%s)",
                          pgw_proxy_full_limit(px));
        return false;
    }
    return true;      /* counted past the cap until logged in (pgw_session_login_done) */
}

static void handle_startup(struct pgw_session *s)
{
    struct pgw_iobuf *b = s->cbuf;
    long need = pgw_startup_need(b->data + b->sent, b->len - b->sent);
    if (need < 0) {
        pgw_session_close(s, "08P01", "invalid length of startup packet");
        return;
    }
    if (need == 0 || b->len - b->sent < (uint32_t)need)
        return;
    struct pgw_startup st;
    const uint8_t *pkt = b->data + b->sent;
    if (pgw_startup_parse(pkt, (size_t)need, &st) < 0) {
        /* A CancelRequest gets no answer, not even to a malformed one:
         * PostgreSQL only logs it (COMMERROR) and closes. */
        pgw_session_close(s, st.version == PGW_PROTO_CANCELREQ ? NULL : st.sqlstate, "%s",
                          st.error);
        return;
    }
    switch (st.kind) {
    case PGW_STARTUP_SSL:
    case PGW_STARTUP_GSSENC:
        b->sent += (uint32_t)need;
        b->parsed = b->sent;
        if (s->ssl) {
            /* PostgreSQL reads it as a startup packet of an unknown
             * protocol then (ProcessStartupPacket with ssl_done). */
            pgw_session_close(s, "0A000", "unsupported frontend protocol %u.%u: server supports "
                              "3.0 to 3.0", 1234u, st.kind == PGW_STARTUP_SSL ? 5679u : 5680u);
            return;
        }
        /* Plaintext behind the request would be read as if encrypted
         * (perhaps injected by a man in the middle): refused in
         * PostgreSQL's words, after the 'N' PostgreSQL sends first when it
         * will not encrypt (where it would, it starts the handshake and
         * waits; pgwharf refuses at once). */
        if (b->sent != b->len) {
            bool ssl = st.kind == PGW_STARTUP_SSL;
            if (!(ssl && pgw_tls_offered(s)) && !send_simple_byte(s, 'N'))
                return;
            s->close_detail = "This could be either a client-software bug or evidence of an "
                              "attempted man-in-the-middle attack.";
            pgw_session_close(s, "08P01", "received unencrypted data after %s",
                              ssl ? "SSL request" : "GSSAPI encryption request");
            return;
        }
        b->sent = b->parsed = b->len = 0;
        /* As ProcessStartupPacket: one of each kind, answered 'N'; an
         * SSLRequest after a GSSENCRequest is allowed again, and the other
         * way round (libpq asks for GSS, then SSL). */
        if (st.kind == PGW_STARTUP_SSL ? s->ssl_asked : s->gss_asked) {
            pgw_session_close(s, "0A000", "unsupported frontend protocol %u.%u: server supports "
                              "3.0 to 3.0", 1234u, st.kind == PGW_STARTUP_SSL ? 5679u : 5680u);
            return;
        }
        s->ssl_asked = st.kind == PGW_STARTUP_SSL;
        s->gss_asked = st.kind == PGW_STARTUP_GSSENC;
        if (st.kind == PGW_STARTUP_SSL && pgw_tls_offered(s)) {
            if (send_simple_byte(s, 'S'))
                pgw_tls_accept(s);
            return;
        }
        (void)send_simple_byte(s, 'N');
        return;
    case PGW_STARTUP_CANCEL: {
        bool hold = cancel_hold_room(s), full = false;
        s->state = PGW_SS_CANCEL;
        cancel_leaves_slot(s);
        /* Open until the forward is over, as PostgreSQL closes it once it
         * has signalled the backend: a client (PQcancel) sends its next
         * query only then, which a late signal would cancel instead.  One
         * the room past the cap cannot hold is not forwarded at all
         * (closed at once, a late signal could hit the client's next
         * query): 53300, as at accept when the room is full. */
        bool held = pgw_cancel_request(s->px, s, st.cancel_pid, st.cancel_key,
                                       hold ? NULL : &full);
        if (full) {
            s->state = PGW_SS_STARTUP;         /* the 53300 goes out */
            pgw_session_close(s, "53300", "no more connections allowed (%s)",
                              pgw_proxy_full_limit(s->px));
        } else if (!held) {
            pgw_session_close(s, NULL, "cancel request handled");
        }
        return;
    }
    default:
        break;
    }
    /* Shutting down, the Unix socket stays open for cancels (the peers'
     * forwards): a login there is refused, as PostgreSQL refuses one
     * while it shuts down. */
    if (s->late) {
        pgw_session_close(s, "57P03", "the database system is shutting down");
        return;
    }
    if (!s->ssl && !s->unix_sock && s->px->cfg->client_tls_sslmode >= PGW_TLS_REQUIRE) {
        pgw_session_close(s, "28000", "SSL required (client_tls_sslmode is %s)",
                          pgw_tls_mode_name(s->px->cfg->client_tls_sslmode));
        return;
    }
    s->user = strdup(st.user);
    s->database = strdup(st.database);
    if (!s->user || !s->database) {
        pgw_session_close(s, "53200", "out of memory");
        return;
    }
    /* As PostgreSQL's ProcessStartupPacket: the user and database names
     * are cut to NAMEDATALEN - 1 bytes (the database is the user's name
     * when none is given, cut too), so a 63-byte role and the longer names
     * that begin with it are one user here too (one pool, one auth_query
     * answer, one max_user_connections), not as many aliases. */
    if (strlen(s->user) > PGW_NAME_MAX)
        s->user[PGW_NAME_MAX] = '\0';
    if (strlen(s->database) > PGW_NAME_MAX)
        s->database[PGW_NAME_MAX] = '\0';
    if ((st.version & 0xffff) != 0 || st.nprotoopts > 0) {
        negotiate_version(s, &st);
        if (s->state == PGW_SS_CLOSING)       /* the write failed: gone */
            return;
    }
    if (!take_startup_params(s, &st))
        return;
    b->sent += (uint32_t)need;
    b->parsed = b->sent;
    if (b->sent == b->len)
        b->sent = b->parsed = b->len = 0;
    /* The admin console answers as "pgwharf" and "pgbouncer" unless
     * [databases] names a real database so. */
    s->db = pgw_conf_find_db(s->px->cfg, s->database);
    bool admin_name = strcmp(s->database, "pgwharf") == 0 || strcmp(s->database, "pgbouncer") == 0;
    if (admin_name && (!s->db || strcmp(s->db->name, s->database) != 0)) {
        s->is_admin = true;
        s->db = NULL;
        if (s->replication) {
            pgw_session_close(s, "0A000",
                              "replication connections to the admin console are not supported");
            return;
        }
    }
    /* An unknown database is refused once the client has logged in (after
     * pgw_auth_start), as PostgreSQL and PgBouncer do: before, the answer
     * told anyone which names exist. */
    if (s->over_limit && !take_over_limit(s))
        return;
    s->state = PGW_SS_AUTH;
    pgw_auth_start(s);
}

#define PGW_AUTH_TOKEN_MAX 65535

static void handle_auth_input(struct pgw_session *s)
{
    struct pgw_iobuf *b = s->cbuf;
    /* auth_query still looking the user up: nothing was asked yet, so
     * what came is kept for when it has been (auth.c takes it then). */
    if (pgw_auth_looking_up(s))
        return;
    /* Its type first: anything but a password message (a startup packet
     * sent again, a Query) is refused at once, not read as a length.
     * PostgreSQL reads a password or SASL message of up to
     * PG_MAX_AUTH_TOKEN_LENGTH (65535) bytes: one longer than the buffer
     * gets a larger one. */
    if (b->len > b->sent && b->data[b->sent] != PGW_FE_PASSWORD) {
        pgw_session_close(s, "08P01", "expected password response, got message type %d",
                          b->data[b->sent]);
        return;
    }
    long n = pgw_msg_complete(b->data + b->sent, b->len - b->sent, PGW_AUTH_TOKEN_MAX);
    if (n < 0) {
        pgw_session_close(s, "08P01", "invalid message length during authentication");
        return;
    }
    if (n == 0) {
        uint32_t need = b->len - b->sent >= PGW_MSG_HDR
                            ? pgw_get_u32(b->data + b->sent + 1) + 1 : 0;
        if (need > b->cap - b->sent && !pgw_iobuf_reserve(s->px, &s->cbuf, need)) {
            pgw_session_close(s, "53200", "out of memory");
            return;
        }
        /* A buffer that filled while auth_query looked the user up
         * stopped the reading (pgw_session_read_client): the rest of the
         * message has room now. */
        if (!s->client_eof && !ev_is_active(&s->cli_r))
            ev_io_start(s->px->loop, &s->cli_r);
        return;
    }
    const uint8_t *msg = b->data + b->sent;
    b->sent += (uint32_t)n;
    b->parsed = b->sent;
    /* Logging in may link and release a server, which gives an empty
     * buffer back: look at s->cbuf afresh afterwards, never at b. */
    pgw_auth_password(s, msg + 5, (size_t)n - 5);
    b = s->cbuf;
    if (b && s->state != PGW_SS_CLOSING && b->sent == b->len)
        b->sent = b->parsed = b->len = 0;
}

static uint32_t unread(const struct pgw_session *s)
{
    return s->cbuf ? s->cbuf->len - s->cbuf->sent : 0;
}

/* One step of the state machine over what the client sent. */
static void client_input_step(struct pgw_session *s)
{
    switch (s->state) {
    case PGW_SS_STARTUP:
        handle_startup(s);
        break;
    case PGW_SS_AUTH:
        handle_auth_input(s);
        break;
    case PGW_SS_LOGIN_WAIT:
    case PGW_SS_LOGIN_SYNC:
        /* Nothing is expected before ReadyForQuery; keep it for later
         * (but a Terminate while the login waits in the pool's queue). */
        pgw_relay_left_while_queued(s);
        break;
    case PGW_SS_ADMIN:
        pgw_admin_input(s);
        break;
    case PGW_SS_IDLE:
    case PGW_SS_WAIT_SERVER:
    case PGW_SS_LINKED:
        pgw_relay_client_data(s);
        break;
    default:
        break;
    }
}

void pgw_session_on_client_input(struct pgw_session *s)
{
    /* Bytes that arrived together (an SSLRequest and the startup packet,
     * the startup packet and whatever followed it) are handled in the
     * same turn, each by the state it reaches, until nothing moves. */
    for (int round = 0; round < 64; round++) {
        enum pgw_sess_state before = s->state;
        uint32_t left = unread(s);
        client_input_step(s);
        if (s->state == PGW_SS_CLOSING || unread(s) == 0)
            return;
        if (s->state == before && unread(s) == left)
            return;
    }
}

/* max_db_client_connections or max_user_client_connections, when this
 * login would go past it (PgBouncer 1.24): the key's name, else NULL.
 * Clients are counted by the database name they asked for and by user,
 * once logged in; an admin user on the console is never refused.  The
 * walk over the sessions only happens while a limit is set. */
static const char *client_limit_reached(const struct pgw_session *s)
{
    const struct pgw_config *cfg = s->px->cfg;
    if (s->is_admin && (s->admin_local || pgw_conf_list_has(cfg->admin_users, s->user)))
        return NULL;
    int db_max = s->is_admin ? cfg->max_db_client_connections
                             : pgw_conf_max_db_client_connections(cfg, s->db);
    int user_max = pgw_conf_max_user_client_connections(cfg, pgw_conf_find_user(cfg, s->user));
    if (db_max <= 0 && user_max <= 0)
        return NULL;
    int on_db = 0, as_user = 0;
    const struct pgw_list *head = &s->px->sessions;
    for (const struct pgw_list *l = head->next; l != head; l = l->next) {
        const struct pgw_session *o = pgw_container_of(l, struct pgw_session, node);
        if (o == s || !pgw_session_logged_in(o))
            continue;
        on_db += db_max > 0 && strcmp(o->database, s->database) == 0;
        as_user += user_max > 0 && strcmp(o->user, s->user) == 0;
    }
    if (db_max > 0 && on_db >= db_max)
        return "max_db_client_connections";
    if (user_max > 0 && as_user >= user_max)
        return "max_user_client_connections";
    return NULL;
}

bool pgw_session_logged_in(const struct pgw_session *s)
{
    switch (s->state) {
    case PGW_SS_LOGIN_WAIT:
    case PGW_SS_LOGIN_SYNC:
    case PGW_SS_IDLE:
    case PGW_SS_WAIT_SERVER:
    case PGW_SS_LINKED:
    case PGW_SS_ADMIN:
        return s->user && s->database;
    default:
        return false;
    }
}

/* Auth succeeded: AuthenticationOk, then find a server to learn its
 * parameters (or enter the admin console). */
void pgw_session_login_done(struct pgw_session *s)
{
    if (s->state == PGW_SS_CLOSING)
        return;               /* a login step answered after all: closed stays closed */
    if (s->over_limit) {
        /* A console login past the cap (take_over_limit): a client from
         * now on.  Until here it counted among the few let in past the
         * cap, so that unauthenticated ones cannot pile up there. */
        over_limit_end(s);
        s->px->nclients++;
    }
    const char *limit = client_limit_reached(s);
    if (limit) {
        pgw_session_close(s, "53300", "no more connections allowed (%s)", limit);
        return;
    }
    /* AuthenticationOk goes out together with the welcome that follows
     * (one write instead of two). */
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_auth(&b, 0, NULL, 0);
    bool ok = pgw_session_queue(s, &b);
    pgw_wbuf_deinit(&b);
    if (!ok) {
        pgw_session_close(s, "53200", "out of memory");
        return;
    }
    do {
        if (pgw_proxy_random(s->px, &s->cancel_pid, sizeof(s->cancel_pid)) < 0 ||
            pgw_proxy_random(s->px, &s->cancel_key, sizeof(s->cancel_key)) < 0) {
            pgw_session_close(s, "53200", "cannot make a cancel key");
            return;
        }
        s->cancel_pid &= 0x7fffffff;
    } while (s->cancel_pid == 0);
    /* With peering the key's low 16 bits name this process, so that a
     * peer given the cancel knows where to pass it (cancel.c).  What is
     * left to guess is 31 + 16 random bits instead of 31 + 32. */
    if (s->px->cfg->peer_id > 0)
        s->cancel_key = (s->cancel_key & ~(uint32_t)PGW_PEER_KEY_MASK) |
                        (uint32_t)s->px->cfg->peer_id;
    pgw_cancel_register(s->px, s);
    pgw_session_apply_timeouts(s);
    if (s->px->cfg->log_connections) {
        char qd[200], qu[200];
        pgw_info("login", "client=%s db=%s user=%s", s->addr_text,
                 pgw_log_quote(qd, sizeof(qd), s->database),
                 pgw_log_quote(qu, sizeof(qu), s->user));
    }
    if (s->is_admin) {
        pgw_admin_login(s);
        return;
    }
    if (!s->db) {
        /* Not in [databases] (or a reload during the login took it out). */
        pgw_session_close(s, "3D000", "database \"%s\" does not exist", s->database);
        return;
    }
    if (pgw_admin_db_disabled(s->px, s->database)) {
        /* DISABLE: as PgBouncer's message; 55000 as PostgreSQL's for a
         * database not accepting connections. */
        pgw_session_close(s, "55000", "database \"%s\" is disabled", s->database);
        return;
    }
    const struct pgw_conf_user *u = pgw_conf_find_user(s->px->cfg, s->user);
    s->mode = pgw_conf_pool_mode(s->px->cfg, s->db, u);
    const char *pw = pgw_auth_server_password(s->px, s->db, s->user);
    s->pool = pgw_pool_get(s->px->pools, s->db, s->database, s->user, pw);
    if (!s->pool) {
        pgw_session_close(s, "53200", "out of memory");
        return;
    }
    pgw_pool_ref(s->pool);                   /* until pgw_session_free */
    pgw_admin_pool_attach(s->px, s->pool);
    /* A replication client keeps its own server for its whole session. */
    s->mode = s->replication ? PGW_POOL_SESSION : pgw_pool_mode(s->pool);
    s->state = PGW_SS_LOGIN_WAIT;
    pgw_session_list_join(s);
    pgw_relay_login(s);
}

/* ---- closing ---- */

static void send_final_error(struct pgw_session *s, const char *sqlstate, const char *msg)
{
    if (s->close_after_sent) {
        /* Its FATAL is queued already (pgw_session_close_after_sent):
         * one more attempt at it, no second one. */
        if (s->sbuf && s->sbuf->sent < s->sbuf->parsed)
            pgw_session_flush_client(s);
        return;
    }
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_error_detail(&b, "FATAL", sqlstate, msg, s->close_detail);
    if (!b.failed) {
        /* Whatever is already queued goes first; then one attempt --
         * not in the middle of a server message the client has part of
         * (sskip: its rest never comes), which would read the error as
         * that message's bytes and the rest as more messages: there the
         * connection just ends, as when the server goes mid-message.  A
         * held ReadyForQuery (notify.c) goes too: its transaction
         * committed. */
        if (s->sbuf)
            s->sbuf->held = false;
        if (s->sbuf && s->sbuf->sent < s->sbuf->parsed)
            pgw_session_flush_client(s);
        if (!s->cli_write_blocked && s->sskip == 0) {
            ssize_t w = cli_write(s, b.data, b.len);
            (void)w;
        }
    }
    pgw_wbuf_deinit(&b);
}

static void log_disconnect(const struct pgw_session *s, enum pgw_sess_state was,
                           const char *sqlstate, const char *reason)
{
    if (!s->px->cfg->log_disconnections && !sqlstate)
        return;
    char q[700], qd[200], qu[200];
    /* A client that left the pool's queue (relay.c, leave_queue) is idle
     * only while the answers it was owed go out. */
    enum pgw_sess_state shown = was == PGW_SS_IDLE && s->left_queue ? PGW_SS_WAIT_SERVER : was;
    pgw_log(sqlstate ? PGW_LOG_WARNING : PGW_LOG_INFO, "disconnect",
            "client=%s db=%s user=%s state=%s sqlstate=%s reason=%s", s->addr_text,
            pgw_log_quote(qd, sizeof(qd), s->database), pgw_log_quote(qu, sizeof(qu), s->user),
            pgw_sess_state_name(shown), sqlstate ? sqlstate : "",
            pgw_log_quote(q, sizeof(q), reason));
}

/* A close's reason, cut at a character's end when too long. */
static void format_reason(char *reason, size_t size, const char *fmt, va_list ap)
{
    int n = vsnprintf(reason, size, fmt, ap);
    if (n >= (int)size)
        pgw_utf8_trim_cut(reason, size - 1);
}

void pgw_session_close_after_sent(struct pgw_session *s, const char *sqlstate, const char *fmt,
                                  ...)
{
    if (s->state == PGW_SS_CLOSING || s->close_after_sent)
        return;
    char reason[600];
    va_list ap;
    va_start(ap, fmt);
    format_reason(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_error_detail(&b, "FATAL", sqlstate, reason, s->close_detail);
    /* Only between requests: a client that sent its next one (waiting for
     * a server) is closed at once, as by pgw_session_close. */
    bool queued = s->state == PGW_SS_IDLE && !s->server && !s->pipe_srv &&
                  pgw_session_queue(s, &b);
    pgw_wbuf_deinit(&b);
    if (!queued) {
        pgw_session_close(s, sqlstate, "%s", reason);
        return;
    }
    log_disconnect(s, s->state, sqlstate, reason);
    s->close_after_sent = true;
    if (!s->client_eof)
        ev_io_start(s->px->loop, &s->cli_r);    /* read and dropped (discard_client_input) */
    pgw_notify_session_gone(s);
    pgw_session_flush_client(s);       /* closes it when all goes at once */
}

void pgw_session_close(struct pgw_session *s, const char *sqlstate, const char *fmt, ...)
{
    if (s->state == PGW_SS_CLOSING)
        return;
    struct pgw_proxy *px = s->px;
    char reason[600];
    va_list ap;
    va_start(ap, fmt);
    format_reason(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    enum pgw_sess_state was = s->state;
    /* A session ending after its queued FATAL was logged with that; an
     * error that comes before it is read (client_idle_timeout) still is. */
    if (was != PGW_SS_CANCEL && !(s->close_after_sent && !sqlstate))
        log_disconnect(s, was, sqlstate, reason);
    /* Closing from here on: a failed write while the error goes out must
     * not close the session a second time (counters would drift). */
    s->state = PGW_SS_CLOSING;
    /* A CancelRequest connection gets no reply, as from PostgreSQL: only
     * its close (a shutdown too). */
    if (sqlstate && was != PGW_SS_CANCEL && !s->server_fatal[0])
        send_final_error(s, sqlstate, reason);
    pgw_batch_forget(s);
    pgw_pool_cancel_wait(&s->waiter);
    if (s->pipe_srv)
        pgw_relay_pipe_leave(s);
    if (s->server)
        pgw_relay_unlink(s, pgw_relay_release_mode(s));
    pgw_notify_session_gone(s);
    struct ev_loop *loop = px->loop;
    ev_io_stop(loop, &s->cli_r);
    ev_io_stop(loop, &s->cli_w);
    ev_timer_stop(loop, &s->timer);
    /* A lingering TLS client gets no close_notify: libpq, still writing
     * its message, reads it as the end of the stream ("SSL connection has
     * been closed unexpectedly") and drops the FATAL, as it would a
     * shutdown(SHUT_WR) (linger.c).  Its raw bytes carry TLS framing on
     * top of the message: the byte budget allows for it. */
    bool linger = s->linger_bytes > 0 && !s->client_eof;
    if (linger && s->ssl) {
        s->tls_flags |= PGW_TLS_BROKEN;
        s->linger_bytes += s->linger_bytes / 16;
    }
    pgw_tls_close(s);
    if (s->fd >= 0) {
        if (linger)
            pgw_linger_close(px, s->fd, s->linger_bytes);
        else
            close(s->fd);
        s->fd = -1;
    }
    pgw_cancel_unregister(px, s);
    if (s->ctx)
        pgw_ctx_cancel(s->ctx);
    pgw_auth_session_closing(s);
    if (s->over_limit)
        over_limit_end(s);
    else
        px->nclients--;
    pgw_list_del(&s->node);
    pgw_list_append(&px->closing, &s->node);
    pgw_proxy_reap_later(px);
}

void pgw_session_free(struct pgw_session *s)
{
    struct pgw_proxy *px = s->px;
    pgw_cancel_unregister(px, s);      /* closed already; never left in the table */
    pgw_ps_session_free(s);
    pgw_notify_qscan_free(s);
    if (s->ctx)
        pgw_ctx_release(s->ctx);
    if (s->pool)
        pgw_pool_unref(s->pool);
    pgw_iobuf_put(px, s->cbuf);
    pgw_iobuf_put(px, s->sbuf);
    for (int i = 0; i < PGW_TP_MAX; i++)
        free(s->params[i]);
    pgw_relay_told_unref(s->told);
    free(s->login_refusal);
    free(s->startup_order);
    free(s->sync_fail_msg);
    free(s->copy_abort_where);
    free(s->repl_options);
    free(s->user);
    free(s->database);
    pgw_auth_state_free(s->auth_state);
    free(s);
}
