/*
 * cancel.c - CancelRequest forwarding.
 *
 * Clients get a (pid, key) made by pgwharf; a CancelRequest carrying it is
 * looked up here and forwarded only to the server linked to that client,
 * and only while that server is busy with the client's request.
 *
 * A forward is a job on the loop, as libpq's PQcancel does it but without
 * blocking: a new connection to the address the server socket is connected
 * to (recorded at login, pool/server.c, with the backend's pid and key),
 * the 16-byte CancelRequest in plain text (as PQcancel, whatever TLS the
 * server link uses), then a wait for the server to close it, which is
 * when PostgreSQL has acted on it.  cancel_wait_timeout bounds the whole.
 * The client's own cancel connection stays open until then, half-closed
 * by the client too (session.c), as PostgreSQL keeps it: PostgreSQL
 * signals the backend twice (the pid, then its process group), and a
 * client that went on at once could have its next query hit by the
 * second signal (libpq's PQcancel waits for the close for that reason).
 * A deferred cancel (relay.c, pipe_cancel) keeps it open
 * too, until its forward has ended or it is dropped (the request it was
 * for ended without it, the client left), at most cancel_wait_timeout before the
 * forward begins (the cancel stays deferred: the wait is the client's
 * query's, which may be long).  One whose forward is already under way for
 * the same request (no ReadyForQuery since it began, one inside a
 * pipeline included, nor ErrorResponse) waits for that one instead of making another
 * connection: a client retrying against a stopped server holds one
 * descriptor, not one per retry.  A cancel of a later request gets a
 * forward of its own at once, but its connection is closed only once the
 * client's earlier forwards have ended too (their late signals).
 * While a job is in flight the session keeps its server (no release to the
 * pool), so the cancel can never reach the next client's query; a job that
 * gives up after sending retires that server (closed when given back), as
 * the request may still be read later, and ends a session that would keep
 * it for its next request (lost_check).  A client still waiting in its
 * pool's queue has no query on any server: its request is failed with
 * 57014 where it waits (relay.c).  A key of a console session goes
 * to the console (admin_cmd.c): it ends a PAUSE or WAIT_CLOSE that waits.
 *
 * Peering (peer_id, [peers]; PgBouncer's): with so_reuseport the kernel
 * may hand the cancel's new connection to another process of the group
 * than the one serving the client.  The keys handed out carry the peer id
 * of the process that made them (session.c), so a request whose key is
 * unknown here but names another configured peer is passed on to that
 * peer, the 16 bytes unchanged, by the same kind of job: it has no session
 * and retires no server, and it is over when the peer closes the
 * connection (a pgwharf peer does once it has taken the request).  It
 * cannot go round: the peer named owns that id and never passes it on.
 *
 * Owns: the jobs (socket, ev_io, ev_timer each) and the list of them, per
 * proxy.  Each holds one descriptor for at most cancel_wait_timeout, at
 * most one per request of a session; their number is capped by what the
 * open-files limit leaves for them (px->cancel_cap, proxy.c): past it a
 * cancel fails, rather than take the descriptors the pools and clients
 * were promised (under a server that does not answer, requests cycling,
 * or keys forged to name a peer, could otherwise pile them up).
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/wire.h"

struct cancel_job {
    struct pgw_list node;            /* the state's inflight list */
    struct pgw_cancel_state *cs;
    struct pgw_session *sess;        /* NULL once the session is gone, or
                                      * for a peer's job */
    struct pgw_list askers;          /* CancelRequest connections (ask_node),
                                      * closed when the job ends */
    uint64_t srv_id;                 /* the server the cancel is for */
    uint32_t answered;               /* the session's when the job began:
                                      * which request it is for */
    int backend_pid;
    int peer;                        /* 0; else the [peers] id it goes to */
    int fd;
    ev_io io;                        /* writable until sent, then readable */
    ev_timer timer;                  /* cancel_wait_timeout; first the delay
                                      * of a deferred cancel */
    struct sockaddr_storage addr;    /* where it goes, kept for a delay */
    socklen_t addrlen;
    double limit;                    /* its value when the job began */
    bool connected;
    uint8_t sent;                    /* bytes of pkt written */
    uint8_t pkt[PGW_CANCEL_REQ_LEN];
    char from[64];                   /* who asked, for the log */
};

struct pgw_cancel_state {
    struct pgw_proxy *px;
    struct pgw_list inflight;
    int ninflight;
};

static unsigned bucket(uint32_t pid, uint32_t key)
{
    return (pid * 2654435761u ^ key) % PGW_CANCEL_BUCKETS;
}

void pgw_cancel_register(struct pgw_proxy *px, struct pgw_session *s)
{
    pgw_list_append(&px->cancel_hash[bucket(s->cancel_pid, s->cancel_key)], &s->cancel_node);
}

/* The connections on `list` have had their answer: each closes from its
 * own timer, so that a caller walking sessions never sees one go. */
static void askers_release(struct pgw_list *list)
{
    struct pgw_list *n;
    while ((n = pgw_list_first(list))) {
        struct pgw_session *a = pgw_container_of(n, struct pgw_session, ask_node);
        pgw_list_del(n);
        a->ask_deferred = false;
        a->cancel_over = true;
        pgw_session_arm_timer(a);
    }
}

void pgw_cancel_deferred_drop(struct pgw_session *s)
{
    s->pipe_cancel = false;
    askers_release(&s->cancel_askers);
}

void pgw_cancel_unregister(struct pgw_proxy *px, struct pgw_session *s)
{
    if (pgw_list_linked(&s->cancel_node))
        pgw_list_del(&s->cancel_node);
    if (pgw_list_linked(&s->ask_node))      /* an asker that left first */
        pgw_list_del(&s->ask_node);
    askers_release(&s->cancel_askers);      /* a target gone: nothing comes */
    if (!s->cancel_inflight || !px->cancel)
        return;
    struct pgw_list *pos;
    for (pos = px->cancel->inflight.next; pos != &px->cancel->inflight; pos = pos->next) {
        struct cancel_job *j = pgw_container_of(pos, struct cancel_job, node);
        if (j->sess == s)
            j->sess = NULL;
    }
    s->cancel_inflight = 0;
}

int pgw_cancel_inflight(const struct pgw_proxy *px)
{
    return px->cancel ? px->cancel->ninflight : 0;
}

/* Stop and free j; nothing else points to it once it is off the list. */
static void job_free(struct cancel_job *j)
{
    struct ev_loop *loop = j->cs->px->loop;
    ev_io_stop(loop, &j->io);
    ev_timer_stop(loop, &j->timer);
    if (j->fd >= 0)
        close(j->fd);
    pgw_list_del(&j->node);
    j->cs->ninflight--;
    /* Its askers are gone already, or closed first (job_end). */
    while (pgw_list_first(&j->askers))
        pgw_list_del(pgw_list_first(&j->askers));
    free(j);
}

/* A session whose cancels are all done, and whose request ended meanwhile
 * (ReadyForQuery 'I'), can let its server go now. */
static void session_cancels_done(struct pgw_session *s)
{
    if (s->server && s->state == PGW_SS_LINKED && s->mode != PGW_POOL_SESSION &&
        s->track.sync_out == 0 && s->track.fe_open == 0 && s->track.tx_status == 'I') {
        s->release_held = true;
        pgw_relay_release_if_clean(s);
    }
    /* A Close of the unnamed statement that waited for the cancel
     * (relay.c close_waits), the server kept (not clean to give back):
     * it goes on now. */
    if (s->ps_wait && s->server && s->state == PGW_SS_LINKED && s->cancel_inflight == 0) {
        s->ps_wait = false;
        pgw_relay_client_data(s);
    }
    /* Or the count of replies due unsure after a failed COPY: the probe
     * waited for the cancel (relay.c track_probe_quiet). */
    if (s->server && s->state == PGW_SS_LINKED)
        pgw_relay_track_probe(s);
    /* A client whose stream ended while its cancel was held: nothing
     * else looks at it again (its reads are stopped). */
    if (s->client_eof)
        pgw_relay_eof_check(s);
}

bool pgw_cancel_lost(const struct pgw_session *s)
{
    return s->cancel_lost_srv && s->server && s->server->id == s->cancel_lost_srv;
}

void pgw_cancel_lost_close(struct pgw_session *s)
{
    pgw_session_close(s, "08006", "a cancel sent to the server was not confirmed within "
                      "cancel_wait_timeout: the server is closed, as the cancel may still "
                      "reach it and hit the next request");
}

/* A cancel for s's request went to its server and was not confirmed in
 * time (job_end): PostgreSQL may act on it later, on whatever the backend
 * runs then.  The client's driver took the close of its cancel connection
 * for the cancel done, so its next request must not run there.  Given
 * back (transaction mode, ReadyForQuery 'I'), the server is closed, being
 * retired.  Kept -- session mode, a transaction open, more sent since
 * (moved_on: the request the cancel was for is over) -- the session ends
 * with 08006 now; while that request still runs, at its ReadyForQuery
 * (relay.c on_ready). */
static void lost_check(struct pgw_session *s, bool moved_on)
{
    if (s->state != PGW_SS_LINKED || !pgw_cancel_lost(s))
        return;
    bool busy = s->track.sync_out > 0 || s->track.fe_open > 0 || s->track.copy;
    if (moved_on || !busy)
        pgw_cancel_lost_close(s);
}

/* Who a job's request is for, as the log names it. */
static const char *job_target(const struct cancel_job *j, char *buf, size_t len)
{
    if (j->peer)
        snprintf(buf, len, "peer=%d", j->peer);
    else
        snprintf(buf, len, "backend_pid=%d", j->backend_pid);
    return buf;
}

/* A forward for j's session begun before j and still in flight (the
 * list is in the order they began), or NULL.  j's askers wait for it too:
 * its late signal could otherwise hit the query a client sends once its
 * cancel connection closed (a cancel of a pipelined request's successor
 * is forwarded while the one of the request before may still be). */
static struct cancel_job *earlier_job(const struct cancel_job *j)
{
    if (!j->sess)
        return NULL;
    const struct pgw_list *pos;
    for (pos = j->node.prev; pos != &j->cs->inflight; pos = pos->prev) {
        struct cancel_job *e = pgw_container_of(pos, struct cancel_job, node);
        if (e->sess == j->sess)
            return e;
    }
    return NULL;
}

/* The job is over: the server closed the connection (why NULL), or it
 * failed.  Called from the job's own watchers: they are stopped and j is
 * freed here (nothing else refers to it, so no deferred free is needed);
 * the session is touched only after that. */
static void job_end(struct cancel_job *j, const char *why)
{
    struct pgw_cancel_state *cs = j->cs;
    struct pgw_session *s = j->sess;
    bool lost = false, moved_on = false;
    if (why) {
        char q[300], t[32];
        pgw_warn("cancel_failed", "client=%s %s reason=%s", j->from,
                 job_target(j, t, sizeof(t)), pgw_log_quote(q, sizeof(q), why));
        /* Bytes may be on their way still: the server must not serve
         * another client's query, where they could land, nor this
         * client's next one (lost_check). */
        if (j->sent > 0 && s && s->server && s->server->id == j->srv_id) {
            pgw_server_retire(s->server, "a cancel sent to it was not confirmed");
            s->cancel_lost_srv = j->srv_id;
            lost = true;
            moved_on = s->answered != j->answered;
        }
    }
    struct pgw_list *n;
    struct cancel_job *before = earlier_job(j);
    while ((n = pgw_list_first(&j->askers))) {
        pgw_list_del(n);
        if (before)
            pgw_list_append(&before->askers, n);
        else
            pgw_session_close(pgw_container_of(n, struct pgw_session, ask_node), NULL,
                              "cancel request handled");
    }
    job_free(j);
    if (s && --s->cancel_inflight == 0)
        session_cancels_done(s);
    if (lost)
        lost_check(s, moved_on);
    if (cs->ninflight == 0)
        pgw_proxy_maybe_finish(cs->px);
}

static void job_fail_errno(struct cancel_job *j, const char *what, int err)
{
    char why[160];
    snprintf(why, sizeof(why), "%s: %s", what, strerror(err));
    job_end(j, why);
}

static void job_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct cancel_job *j = pgw_container_of(w, struct cancel_job, io);
    if (revents & EV_ERROR) {           /* libev could not watch the socket */
        job_end(j, "could not watch the connection for events");
        return;
    }
    if (!j->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(j->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            job_fail_errno(j, "connect", err);
            return;
        }
        j->connected = true;
    }
    if (j->sent < sizeof(j->pkt)) {
        ssize_t n = send(j->fd, j->pkt + j->sent, sizeof(j->pkt) - j->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                job_fail_errno(j, "send", errno);
            return;
        }
        j->sent += (uint8_t)n;
        if (j->sent == sizeof(j->pkt)) {
            ev_io_stop(loop, &j->io);
            ev_io_set(&j->io, j->fd, EV_READ);
            ev_io_start(loop, &j->io);
        }
        return;
    }
    /* PostgreSQL answers nothing: it closes once it has acted on the
     * request.  As in PQcancel, an error reading counts as that close. */
    uint8_t buf[64];
    ssize_t n = recv(j->fd, buf, sizeof(buf), 0);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
        return;
    job_end(j, NULL);
}

static void job_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct cancel_job *j = pgw_container_of(w, struct cancel_job, timer);
    (void)loop;
    (void)revents;
    char why[160];
    snprintf(why, sizeof(why), "cancel_wait_timeout (%g s): the %s %s", j->limit,
             j->peer ? "peer" : "server",
             !j->connected ? "did not accept the connection"
             : j->sent < sizeof(j->pkt) ? "did not take the request"
             : "did not close the connection");
    job_end(j, why);
}

/* Start j's connection to addr; false (with *err set) when it failed at
 * once. */
static bool job_connect(struct cancel_job *j, const struct sockaddr_storage *addr,
                        socklen_t addrlen, int *err)
{
    j->fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (j->fd < 0) {
        *err = errno;
        return false;
    }
    if (connect(j->fd, (const struct sockaddr *)addr, addrlen) == 0) {
        j->connected = true;
        return true;
    }
    /* EINTR: the connection goes on being made.  EAGAIN (a Unix socket
     * whose listen queue is full) cannot be waited for: a failure. */
    if (errno == EINPROGRESS || errno == EINTR)
        return true;
    *err = errno;
    return false;
}

/* Start j (its request, target and `from` filled in) on the loop: the
 * connection to addr, the timer.  False when the connection failed at
 * once: logged, j freed. */
/* A deferred cancel's wait is over: connect now (job_start). */
static void job_delay_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct cancel_job *j = pgw_container_of(w, struct cancel_job, timer);
    (void)revents;
    /* The request it was for is over (its ReadyForQuery or ErrorResponse
     * relayed, one inside a pipeline too) or its client gone: sent now, it
     * would land on the client's next request. */
    struct pgw_session *s = j->sess;
    if (!s || !s->server || s->server->id != j->srv_id || s->answered != j->answered) {
        char t[32];
        pgw_info("cancel_ignored", "client=%s %s reason=\"its query ended before the "
                 "deferred cancel went out\"", j->from, job_target(j, t, sizeof(t)));
        job_end(j, NULL);
        return;
    }
    int err = 0;
    if (!job_connect(j, &j->addr, j->addrlen, &err)) {
        job_fail_errno(j, "connect", err);
        return;
    }
    ev_io_set(&j->io, j->fd, EV_WRITE);
    ev_io_start(loop, &j->io);
    ev_timer_init(&j->timer, job_timer_cb, j->limit, 0);
    if (j->limit > 0)
        ev_timer_start(loop, &j->timer);
}

/* delay > 0: wait that long before connecting (the job counts as in
 * flight meanwhile: its session keeps its server). */
static bool job_start(struct pgw_proxy *px, struct cancel_job *j,
                      const struct sockaddr_storage *addr, socklen_t addrlen, double delay)
{
    struct pgw_cancel_state *cs = px->cancel;
    int err = 0;
    j->fd = -1;
    j->limit = px->cfg->cancel_wait_timeout;
    pgw_list_init(&j->askers);
    if (cs->ninflight >= px->cancel_cap) {
        char t[32];
        pgw_warn("cancel_failed", "client=%s %s reason=\"%d cancels in flight already, as many "
                 "as the open-files limit leaves room for\"", j->from,
                 job_target(j, t, sizeof(t)), cs->ninflight);
        free(j);
        return false;
    }
    ev_init(&j->io, job_io_cb);
    if (delay > 0) {
        j->cs = cs;
        memcpy(&j->addr, addr, addrlen);
        j->addrlen = addrlen;
        ev_timer_init(&j->timer, job_delay_cb, delay, 0);
        ev_timer_start(px->loop, &j->timer);
        pgw_list_append(&cs->inflight, &j->node);
        cs->ninflight++;
        return true;
    }
    if (!job_connect(j, addr, addrlen, &err)) {
        char t[32];
        pgw_warn("cancel_failed", "client=%s %s reason=\"connect: %s\"", j->from,
                 job_target(j, t, sizeof(t)), strerror(err));
        if (j->fd >= 0)
            close(j->fd);
        free(j);
        return false;
    }
    j->cs = cs;
    ev_io_set(&j->io, j->fd, EV_WRITE);
    ev_io_start(px->loop, &j->io);
    ev_timer_init(&j->timer, job_timer_cb, j->limit, 0);
    if (j->limit > 0)
        ev_timer_start(px->loop, &j->timer);
    pgw_list_append(&cs->inflight, &j->node);
    cs->ninflight++;
    return true;
}

static struct pgw_session *find(struct pgw_proxy *px, uint32_t pid, uint32_t key)
{
    struct pgw_list *head = &px->cancel_hash[bucket(pid, key)], *pos;
    for (pos = head->next; pos != head; pos = pos->next) {
        struct pgw_session *s = pgw_container_of(pos, struct pgw_session, cancel_node);
        if (s->cancel_pid == pid && s->cancel_key == key)
            return s;
    }
    return NULL;
}

/* A key no client here has: with peering, one another peer made goes
 * there as it came.  Keys of this process's own id (a client gone
 * meanwhile, a stale or made-up key) are dropped as without peering.
 * The job passing it on, if any. */
static bool refused(struct pgw_proxy *px, bool *full, const char *from)
{
    if (!full)
        return false;
    *full = true;
    pgw_warn("client_rejected", "reason=held_cancels client=%s clients=%d detail=\"a cancel that "
             "would be held past max_client_conn, the room there all but full of held cancels: "
             "not forwarded\"", from, px->nclients);
    return true;
}

static struct cancel_job *cancel_not_here(struct pgw_proxy *px, uint32_t pid, uint32_t key,
                                          const char *from, bool *full)
{
    int self = px->cfg->peer_id;
    int id = (int)(key & PGW_PEER_ID_MASK);
    unsigned hops = (key >> PGW_PEER_HOP_SHIFT) & 3u;
    if (self == 0 || id == self) {
        pgw_info("cancel_ignored", "client=%s reason=\"unknown cancel key\"", from);
        return NULL;
    }
    if (hops >= PGW_PEER_MAX_HOPS) {
        pgw_warn("cancel_ignored", "client=%s peer=%d reason=\"passed on %u times already: "
                 "do two [peers] lists name the same id at different processes?\"", from, id,
                 hops);
        return NULL;
    }
    const struct pgw_conf_peer *peer = pgw_conf_find_peer(px->cfg, id);
    if (!peer) {
        pgw_info("cancel_ignored", "client=%s peer=%d reason=\"unknown cancel key, and no "
                 "[peers] entry for the peer id in it\"", from, id);
        return NULL;
    }
    if (refused(px, full, from))
        return NULL;
    uint8_t pkt[PGW_CANCEL_REQ_LEN];
    key = (key & ~(3u << PGW_PEER_HOP_SHIFT)) | ((hops + 1) << PGW_PEER_HOP_SHIFT);
    pgw_wire_cancel_request(pkt, pid, key);
    /* A retry of a cancel still being passed on (the peer has not closed
     * the connection: it has not acted yet, or waits for PostgreSQL to)
     * joins it, as at the client's own process: a frozen peer would
     * otherwise hold a descriptor and a cancel_cap slot per retry here. */
    struct pgw_list *pos;
    for (pos = px->cancel->inflight.next; pos != &px->cancel->inflight; pos = pos->next) {
        struct cancel_job *j = pgw_container_of(pos, struct cancel_job, node);
        if (j->peer == id && memcmp(j->pkt, pkt, sizeof(pkt)) == 0) {
            pgw_info("cancel_joined", "client=%s peer=%d", from, id);
            return j;
        }
    }
    struct cancel_job *j = calloc(1, sizeof(*j));
    if (!j) {
        pgw_warn("cancel_failed", "client=%s peer=%d reason=\"out of memory\"", from, id);
        return NULL;
    }
    j->peer = id;
    snprintf(j->from, sizeof(j->from), "%s", from);
    memcpy(j->pkt, pkt, sizeof(pkt));
    /* The entry is copied into the job: a reload may free it meanwhile. */
    if (!job_start(px, j, &peer->addr, peer->addrlen, 0))
        return NULL;
    pgw_info("cancel_forwarded", "client=%s peer=%d", from, id);
    return j;
}

/* A job forwarding a cancel for s's query to its server (NULL: none
 * started).  Failures before a job exists touch no session: it never held
 * its server for them. */
static struct cancel_job *session_job(struct pgw_proxy *px, struct pgw_session *s,
                                      const char *from, double delay)
{
    struct pgw_server *srv = s->server;
    bool busy = srv && (s->track.sync_out > 0 || s->track.fe_open > 0 || s->track.copy);
    if (!busy) {
        pgw_info("cancel_ignored", "client=%s target=%s reason=\"no query in progress\"",
                 from, s->addr_text);
        return NULL;
    }
    if (!srv->cancel_ok) {
        pgw_warn("cancel_failed", "client=%s backend_pid=%d reason=\"the server's cancel key "
                 "is unknown (event=server_no_cancel)\"", from, srv->backend_pid);
        return NULL;
    }
    struct cancel_job *j = calloc(1, sizeof(*j));
    if (!j) {
        pgw_warn("cancel_failed", "client=%s backend_pid=%d reason=\"out of memory\"", from,
                 srv->backend_pid);
        return NULL;
    }
    j->backend_pid = srv->backend_pid;
    snprintf(j->from, sizeof(j->from), "%s", from);
    pgw_wire_cancel_request(j->pkt, (uint32_t)srv->backend_pid, srv->cancel_key);
    if (!job_start(px, j, &srv->cancel_addr, srv->cancel_addrlen, delay))
        return NULL;
    j->sess = s;
    j->srv_id = srv->id;
    j->answered = s->answered;
    s->cancel_inflight++;
    if (srv->user_queued > 0) {
        /* The cancel may land on a query queued behind this one
         * (server_pipeline_depth): those clients get 08006 instead. */
        pgw_relay_pipe_taint(srv);
    }
    pgw_info("cancel_forwarded", "client=%s target=%s backend_pid=%d", from, s->addr_text,
             srv->backend_pid);
    return j;
}

void pgw_cancel_server(struct pgw_proxy *px, const struct pgw_server *srv, const char *from)
{
    if (!srv->cancel_ok)
        return;
    struct cancel_job *j = calloc(1, sizeof(*j));
    if (!j) {
        pgw_warn("cancel_failed", "client=%s backend_pid=%d reason=\"out of memory\"", from,
                 srv->backend_pid);
        return;
    }
    j->backend_pid = srv->backend_pid;
    snprintf(j->from, sizeof(j->from), "%s", from);
    pgw_wire_cancel_request(j->pkt, (uint32_t)srv->backend_pid, srv->cancel_key);
    if (job_start(px, j, &srv->cancel_addr, srv->cancel_addrlen, 0))
        pgw_info("cancel_forwarded", "client=%s backend_pid=%d", from, srv->backend_pid);
}

/* A forward for s's request under way already: on its server, begun since
 * the last ReadyForQuery, one inside a pipeline too, or ErrorResponse (so
 * it lands on what runs now, or is being deferred to it).  A forward begun before that one
 * was for a request answered since: a cancel now is for the next request,
 * which that forward may well have missed (PostgreSQL signalled the
 * backend before it closed the connection), so it gets a forward of its
 * own. */
static struct cancel_job *session_forward(struct pgw_proxy *px, const struct pgw_session *s)
{
    if (!s->cancel_inflight || !s->server)
        return NULL;
    struct pgw_list *pos;
    for (pos = px->cancel->inflight.next; pos != &px->cancel->inflight; pos = pos->next) {
        struct cancel_job *j = pgw_container_of(pos, struct cancel_job, node);
        if (j->sess == s && j->srv_id == s->server->id && j->answered == s->answered)
            return j;
    }
    return NULL;
}

bool pgw_cancel_request(struct pgw_proxy *px, struct pgw_session *asker, uint32_t pid,
                        uint32_t key, bool *full)
{
    const char *from = asker->addr_text;
    /* With peering the keys handed out have no hops: one passed on has. */
    uint32_t own = px->cfg->peer_id > 0 ? key & ~(3u << PGW_PEER_HOP_SHIFT) : key;
    struct pgw_session *s = find(px, pid, own);
    struct cancel_job *j;
    if (s) {
        /* Its request may be unread still, behind the cancel's connection. */
        pgw_session_read_before_cancel(s);
        s = find(px, pid, own);
    }
    if (!s) {
        j = cancel_not_here(px, pid, key, from, full);
    } else if (s->is_admin) {
        pgw_admin_cancel(s, from);       /* a PAUSE or WAIT_CLOSE that waits */
        return false;
    } else if (s->pipe_srv ||
               (s->server && (s->pipe_skip > 0 || s->pipe_drop > 0 || s->swallow > 0))) {
        /* Queued behind another client's query (server_pipeline_depth), or
         * holding the server while it still drops replies of clients that
         * left, or while it runs the SETs that give it this client's
         * settings: the server runs someone else's query, or pgwharf's,
         * now (a canceled SET would leave the client's query with another
         * client's settings).  Sent once this client's own query runs
         * (relay.c, pipe_cancel_due). */
        if (refused(px, full, from))
            return false;
        s->pipe_cancel = true;
        pgw_info("cancel_deferred", "client=%s target=%s reason=\"%s\"", from, s->addr_text,
                 s->swallow > 0 && !s->pipe_srv ? "the client's settings being restored first"
                                                : "query queued on a server");
        pgw_list_append(&s->cancel_askers, &asker->ask_node);
        asker->ask_deferred = true;
        asker->cancel_at = pgw_mono_now(px->loop);
        pgw_session_arm_timer(asker);
        return true;
    } else if (pgw_relay_cancel_waiting(s) || pgw_notify_cancel_waiting(s)) {
        /* Waiting for a server: its request ended here, nothing to wait
         * for before the connection closes. */
        pgw_info("cancel_waiting", "client=%s reason=\"canceled while waiting for a server\"",
                 from);
        return false;
    } else if (refused(px, full, from)) {
        return false;
    } else if ((j = session_forward(px, s))) {
        /* Retried (a driver's statement timeout firing again, ^C twice):
         * one forward is enough. */
        pgw_info("cancel_joined", "client=%s target=%s backend_pid=%d", from, s->addr_text,
                 j->backend_pid);
    } else {
        j = session_job(px, s, from, 0);
    }
    if (!j)
        return false;
    pgw_list_append(&j->askers, &asker->ask_node);
    return true;
}

void pgw_cancel_session(struct pgw_proxy *px, struct pgw_session *s, const char *from,
                        double delay)
{
    s->pipe_cancel = false;
    struct cancel_job *j = session_job(px, s, from, delay);
    if (!j) {
        askers_release(&s->cancel_askers);
        return;
    }
    struct pgw_list *n;
    while ((n = pgw_list_first(&s->cancel_askers))) {
        pgw_list_del(n);
        pgw_container_of(n, struct pgw_session, ask_node)->ask_deferred = false;
        pgw_list_append(&j->askers, n);
    }
}

int pgw_cancel_init(struct pgw_proxy *px)
{
    struct pgw_cancel_state *cs = calloc(1, sizeof(*cs));
    if (!cs)
        return -1;
    cs->px = px;
    pgw_list_init(&cs->inflight);
    px->cancel = cs;
    return 0;
}

/* Jobs still in flight (a fast shutdown does not wait for them) are
 * dropped; their sessions are gone already. */
void pgw_cancel_deinit(struct pgw_proxy *px)
{
    struct pgw_cancel_state *cs = px->cancel;
    if (!cs)
        return;
    while (!pgw_list_empty(&cs->inflight)) {
        struct cancel_job *j =
            pgw_container_of(pgw_list_first(&cs->inflight), struct cancel_job, node);
        char t[32];
        pgw_warn("cancel_failed", "client=%s %s reason=\"pgwharf shut down\"", j->from,
                 job_target(j, t, sizeof(t)));
        job_free(j);
    }
    free(cs);
    px->cancel = NULL;
}
