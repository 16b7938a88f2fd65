/*
 * notify_bridge.c - the server a transaction's LISTEN ran on, kept
 * listening for its client until the hub's server takes over.
 *
 * A transaction that commits a LISTEN of a channel the hub's server does
 * not listen on yet (it waits for a server, or its LISTEN of it is still
 * queued) has the ReadyForQuery that ends it held until the hub's server
 * does (notify.c, "the ReadyForQuery of a transaction's LISTEN").  A
 * notification committed in between reached neither server that mattered:
 * the client's own, which listened from the commit on, was closed when
 * given back, and the hub's did not listen yet; PostgreSQL delivers it.
 * So that server stays, as the client's bridge: out of the pool's counts
 * (pgw_pool_detach: out of pool_size, the hub may need the room it held;
 * in max_db_connections and max_user_connections), read here, its
 * notifications of the channels the hub did not listen on at the commit
 * (b->chans) the client's, until one marker notification has reached both
 * it and the hub's server:
 *
 *   - once the hub's server listens on every bridged channel (its LISTEN
 *     ran) and on its marker channel (h->marker, unguessable), the bridge
 *     runs   LISTEN "<marker>"; NOTIFY "<marker>", '<seq>'   as one
 *     transaction.  The marker has one place in PostgreSQL's queue, after
 *     the hub's LISTENs committed, and each server sends what it listens
 *     to in the queue's order (the bridge gets its own marker: it listens
 *     on the channel from that commit on, as the NOTIFY is queued).
 *   - Before the marker the bridge's copies are the client's, and the
 *     hub's copies of the bridged channels are dropped; after it, the
 *     hub's are, and the bridge is closed.  Nothing is lost, nothing sent
 *     twice, and a channel's notifications keep their commit order.  When
 *     the hub's marker comes first, the hub's copies for the client wait
 *     (b->later, up to max_notify_backlog) for the bridge's, then go in
 *     their order.  One past that bound is dropped, and so is every one
 *     after it (b->over); the client still gets what it was owed, the
 *     bridge's copies up to its marker, then those kept, and then FATAL
 *     54000, as past the bound anywhere.  Copies the hub sent before the
 *     bridge (held for the client's transaction's end) are noted
 *     (b->seen): the bridge's of those are dropped.
 *
 * Bounds: notify_bridge_timeout (the hub's tick checks it), the pool's
 * pool_size bridges at once, and max_db_connections and
 * max_user_connections, in which a bridge counts (at one of them, past
 * the pool's bridges, or with the timeout at 0, the server is closed as
 * before and the gap stays).  A bridge that ends
 * before its marker (its server lost, an error, the timeout, PAUSE)
 * leaves a gap: its client is disconnected with FATAL 08006 between
 * transactions, as when the hub's server is lost (event=notify_bridge_lost);
 * one past the bound already (b->over) with 54000, as its
 * notification_dropped said (pgw_notify_bridge_over_end).
 * One whose client goes, or whose hub's server is lost or ended (which
 * ends its clients anyway), just goes.  One bridge a client at a time.
 *
 * Not mended: the order between the bridge's copies and the hub's copies
 * of the client's other channels before the marker, which come from two
 * connections (each in commit order), is the order they are read in.
 *
 * The bridge's server speaks the client_encoding of the client's
 * transaction (b->conv): its copies are converted to UTF-8, as the hub's
 * are sent, then to the client's encoding of the moment they go out.
 */
#include "proxy/notify_int.h"

#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/wire.h"

#define BRIDGE_RBUF_MAX (1u << 20)       /* largest message read (as the hub's) */
#define BRIDGE_SEEN_MAX 64

struct notify_bridge {
    struct pgw_notify_sub *sub;
    struct pgw_proxy *px;
    struct pgw_server *srv;              /* NULL once closed */
    uint64_t seq;                        /* its marker's payload */
    char (*chans)[PGW_CHANNEL_UTF8_MAX + 1];
    int nchans;
    const struct pgw_pgenc_conv *conv;   /* its server's client_encoding; NULL: UTF-8 */
    ev_tstamp deadline;
    bool sent;                           /* its marker went out */
    bool srv_marked, hub_marked;         /* ... and came back from this server, the hub's */
    struct pgw_wbuf later;               /* the hub's copies after its marker */
    bool over;                           /* one more did not fit in later: the client
                                            gets what it was owed, then 54000, at the
                                            hand-over (bridge_done) */
    struct {
        uint64_t hash;
        uint32_t len;
    } seen[BRIDGE_SEEN_MAX];
    int nseen;
    uint8_t *rbuf;
    size_t rlen, rcap;
    struct pgw_wbuf out;
};

static bool bridged(const struct notify_bridge *b, const char *chan)
{
    for (int i = 0; i < b->nchans; i++)
        if (strcmp(b->chans[i], chan) == 0)
            return true;
    return false;
}

static bool whole_notification(const uint8_t *m, uint32_t n)
{
    const char *chan = (const char *)m + PGW_MSG_HDR + 4;
    return n >= PGW_MSG_HDR + 6 && m[n - 1] == '\0' &&
           memchr(chan, '\0', n - PGW_MSG_HDR - 4 - 1) != NULL;
}

/* The hub's copies of bridged channels held for the client now. */
static void seen_note(struct notify_bridge *b)
{
    const struct pgw_wbuf *p = &b->sub->pending;
    for (size_t off = 0; off + PGW_MSG_HDR <= p->len && b->nseen < BRIDGE_SEEN_MAX;) {
        const uint8_t *m = p->data + off;
        uint32_t n = 1 + pgw_get_u32(m + 1);
        if ((m[0] == PGW_BE_NOTIFY || m[0] == HELD_MAYBE) &&
            bridged(b, pgw_notify_msg_chan(m))) {
            b->seen[b->nseen].hash = pgw_notify_msg_hash(b->sub->session->px, m, n);
            b->seen[b->nseen++].len = n;
        }
        off += n;
    }
}

static bool seen_take(struct notify_bridge *b, const uint8_t *m, uint32_t n)
{
    uint64_t h = 0;
    for (int i = 0; i < b->nseen; i++) {
        if (b->seen[i].len != n)
            continue;
        if (h == 0)
            h = pgw_notify_msg_hash(b->sub->session->px, m, n);
        if (b->seen[i].hash == h) {
            b->seen[i] = b->seen[--b->nseen];
            return true;
        }
    }
    return false;
}

static void bridge_io_cb(struct ev_loop *loop, ev_io *w, int revents);

static void close_server(struct notify_bridge *b)
{
    struct pgw_server *srv = b->srv;
    if (!srv)
        return;
    ev_io_stop(b->px->loop, &srv->user_r);
    ev_io_stop(b->px->loop, &srv->user_w);
    srv->user_io_set = false;
    b->srv = NULL;
    pgw_pool_release(srv, PGW_RELEASE_CLOSE);    /* (detached: closed) */
}

/* b leaves its sub (its server closed). */
static void bridge_free(struct notify_bridge *b)
{
    struct pgw_notify_sub *sub = b->sub;
    close_server(b);
    if (sub->bridge == b) {
        sub->bridge = NULL;
        pgw_notify_hub_bridges(sub->hub, -1);
    }
    pgw_wbuf_deinit(&b->later);
    pgw_wbuf_deinit(&b->out);
    free(b->rbuf);
    free(b->chans);
    free(b);
}

static void bridge_log(const struct notify_bridge *b, const char *what)
{
    const struct pgw_session *s = b->sub->session;
    char qd[200], qu[200];
    pgw_debug("notify_bridge", "client=%s db=%s user=%s channels=%d %s", s->addr_text,
              pgw_log_quote(qd, sizeof(qd), s->database),
              pgw_log_quote(qu, sizeof(qu), s->user), b->nchans, what);
}

bool pgw_notify_bridge_over_end(struct pgw_notify_sub *sub)
{
    struct notify_bridge *b = sub->bridge;
    if (!b || !b->over || sub->ending != NOTIFY_END_NONE)
        return false;
    /* What it was owed ends where the bridge's copies stopped: the hub's
     * kept after its marker come after those the bridge never passed on
     * (commit order), so they go unsent too, each counted as dropped, as
     * the ones after them were: the client gets what reached it, then
     * 54000, as past the bound anywhere. */
    uint64_t n = 0;
    for (size_t off = 0; off + PGW_MSG_HDR <= b->later.len;
         off += 1 + (size_t)pgw_get_u32(b->later.data + off + 1))
        n++;
    b->px->total_notifications_dropped += n;
    pgw_wbuf_reset(&b->later);
    pgw_notify_backlog_end(sub->session);
    return true;
}

void pgw_notify_bridge_end(struct pgw_notify_sub *sub, const char *why)
{
    struct notify_bridge *b = sub->bridge;
    if (!b)
        return;
    if (why) {
        const struct pgw_session *s = sub->session;
        char qd[200], qu[200], qr[400], reason[256];
        pgw_warn("notify_bridge_lost", "client=%s db=%s user=%s channels=%d reason=%s "
                 "detail=\"%s\"",
                 s->addr_text, pgw_log_quote(qd, sizeof(qd), s->database),
                 pgw_log_quote(qu, sizeof(qu), s->user), b->nchans,
                 pgw_log_quote(qr, sizeof(qr), why),
                 b->over ? "past max_notify_backlog already (notification_dropped): the client "
                           "is disconnected (54000) between transactions, once it has read "
                           "what reached it"
                         : "the client is disconnected (08006) between transactions: "
                           "notifications committed since its LISTEN's COMMIT may have "
                           "been missed");
        if (!pgw_notify_bridge_over_end(sub)) {
            snprintf(reason, sizeof(reason), "its own server, listening for it from its "
                     "COMMIT until the pool's listening server took over: %s", why);
            pgw_notify_sub_lost(sub, reason);
        }
    } else {
        bridge_log(b, "reason=\"its client is ended, or leaves\"");
    }
    bridge_free(b);
}

/* Both markers came: the hub's copies from now on are the client's; those
 * kept after the hub's marker go now, in their order.  Past the bound
 * (b->over) none is: the client is ended (54000) once it has read them. */
static void bridge_done(struct notify_bridge *b)
{
    struct pgw_notify_sub *sub = b->sub;
    struct pgw_session *s = sub->session;
    struct pgw_wbuf later = b->later;
    bool over = b->over;
    pgw_wbuf_init(&b->later);
    bridge_log(b, "reason=\"the listening server took over\"");
    bridge_free(b);
    for (size_t off = 0; off + PGW_MSG_HDR <= later.len && s->notify == sub;) {
        uint32_t n = 1 + pgw_get_u32(later.data + off + 1);
        pgw_notify_hub_copy(s, later.data + off, n);
        off += n;
    }
    pgw_wbuf_deinit(&later);
    if (over && s->notify == sub)
        pgw_notify_backlog_end(s);
}

static void bridge_flush(struct notify_bridge *b)
{
    struct pgw_server *srv = b->srv;
    while (srv && b->out.len > 0) {
        bool want_read = false;
        ssize_t n = pgw_server_write(srv, b->out.data, b->out.len, &want_read);
        if (n == PGW_EAGAIN) {
            ev_io_start(b->px->loop, &srv->user_w);
            return;
        }
        if (n <= 0) {
            pgw_notify_bridge_end(b->sub, "write to the server failed");
            return;
        }
        pgw_wbuf_consume(&b->out, (size_t)n);
    }
    if (srv)
        ev_io_stop(b->px->loop, &srv->user_w);
}

void pgw_notify_bridge_check(struct pgw_notify_sub *sub)
{
    struct notify_bridge *b = sub->bridge;
    if (!b || b->sent || !b->srv)
        return;
    const char *marker = pgw_notify_hub_marker(sub->hub, true);
    if (!marker)
        return;
    for (int i = 0; i < b->nchans; i++)
        if (pgw_notify_sub_listens_on(sub, b->chans[i]) &&
            !pgw_notify_hub_listens(sub, b->chans[i]))
            return;                      /* (one the client left: the hub may not) */
    char sql[160];
    snprintf(sql, sizeof(sql), "LISTEN \"%s\"; NOTIFY \"%s\", '%llu'", marker, marker,
             (unsigned long long)b->seq);
    pgw_wire_query(&b->out, sql);
    if (b->out.failed) {
        pgw_notify_bridge_end(sub, "out of memory");
        return;
    }
    b->sent = true;
    bridge_flush(b);
}

bool pgw_notify_bridge_hub_marked(struct pgw_notify_sub *sub, const char *payload)
{
    struct notify_bridge *b = sub->bridge;
    char want[24];
    snprintf(want, sizeof(want), "%llu", (unsigned long long)b->seq);
    if (!b->sent || b->hub_marked || strcmp(payload, want) != 0)
        return false;
    b->hub_marked = true;
    if (b->srv_marked)
        bridge_done(b);                  /* (nothing kept: its marker came first) */
    return true;
}

bool pgw_notify_bridge_hub_copy(struct pgw_notify_sub *sub, const uint8_t *msg, uint32_t total)
{
    struct notify_bridge *b = sub->bridge;
    if (!b->hub_marked)
        return bridged(b, pgw_notify_msg_chan(msg));   /* the bridge's copy is the client's */
    /* After the hub's marker, before the bridge's: after what the bridge
     * still sends. */
    struct pgw_session *s = sub->session;
    size_t at = b->later.len;
    if (!b->over && at + total <= (size_t)s->px->cfg->max_notify_backlog)
        pgw_wbuf_append(&b->later, msg, total);
    if (b->over || b->later.len != at + total) {
        /* No room: as past the bound anywhere, but the client's end waits
         * for what it was owed before this one, the bridge's copies up to
         * its marker (they come before it in commit order) and those kept
         * (review r1: 54000 came at once, and none of them). */
        b->later.len = at;
        b->later.failed = false;
        b->over = true;
        pgw_notify_backlog_dropped(s);
    }
    return true;
}

void pgw_notify_bridge_tick(struct pgw_notify_sub *sub, ev_tstamp now, bool paused)
{
    struct notify_bridge *b = sub->bridge;
    if (paused)
        pgw_notify_bridge_end(sub, "pool paused");
    else if (now >= b->deadline)
        pgw_notify_bridge_end(sub, "notify_bridge_timeout");
}

/* A notification of the bridge's server (m, n: whole). */
static void bridge_notification(struct notify_bridge *b, const uint8_t *m, uint32_t n)
{
    if (!whole_notification(m, n) || b->srv_marked)
        return;
    struct pgw_notify_sub *sub = b->sub;
    const char *chan = (const char *)m + PGW_MSG_HDR + 4;
    const char *marker = pgw_notify_hub_marker(sub->hub, false);
    if (b->sent && marker && strcmp(chan, marker) == 0) {
        char want[24];
        snprintf(want, sizeof(want), "%llu", (unsigned long long)b->seq);
        if (strcmp(chan + strlen(chan) + 1, want) != 0)
            return;
        /* Its marker: nothing after it is the bridge's. */
        b->srv_marked = true;
        close_server(b);
        if (b->hub_marked)
            bridge_done(b);
        return;
    }
    /* In UTF-8, as the hub's copies and the channels' names are. */
    uint8_t *utf8 = NULL;
    if (b->conv && !pgw_pgenc_ascii(chan, n - PGW_MSG_HDR - 4)) {
        size_t cap = 4 * (size_t)n + PGW_MSG_HDR + 4;
        utf8 = malloc(cap);
        if (!utf8) {
            pgw_notify_bridge_end(sub, "out of memory");
            return;
        }
        memcpy(utf8, m, PGW_MSG_HDR + 4);          /* type, length (below), pid */
        size_t off = PGW_MSG_HDR + 4;
        const char *str = chan;
        for (int i = 0; i < 2; i++) {              /* the channel, then the payload */
            size_t k = strlen(str);
            ssize_t got = pgw_pgenc_convert(b->conv->from_client, str, k, (char *)utf8 + off,
                                            cap - off - (size_t)(2 - i));
            if (got < 0) {
                free(utf8);
                return;                  /* not the hub's either: no listener's */
            }
            off += (size_t)got;
            utf8[off++] = '\0';
            str += k + 1;
        }
        pgw_put_u32(utf8 + 1, (uint32_t)off - 1);
        m = utf8;
        n = (uint32_t)off;
    }
    if (bridged(b, pgw_notify_msg_chan(m)) && !seen_take(b, m, n))
        pgw_notify_deliver_own(sub->session, m, n);
    free(utf8);
}

/* One whole message of the bridge's server. */
static void bridge_message(struct notify_bridge *b, const uint8_t *m, uint32_t n)
{
    switch ((char)m[0]) {
    case PGW_BE_NOTIFY:
        bridge_notification(b, m, n);
        break;
    case PGW_BE_ERROR: {
        /* Its SET or its marker failed, or the server ends (a FATAL). */
        struct pgw_wire_err_fields f;
        char why[300];
        if (pgw_wire_parse_error(m + PGW_MSG_HDR, n - PGW_MSG_HDR, &f) == 0)
            snprintf(why, sizeof(why), "%s (SQLSTATE %s)", f.message, f.sqlstate);
        else
            snprintf(why, sizeof(why), "an error from the server");
        pgw_notify_bridge_end(b->sub, why);
        break;
    }
    default:
        break;           /* its replies' CommandComplete, ReadyForQuery; notices */
    }
}

static void bridge_read(struct notify_bridge *b)
{
    struct pgw_notify_sub *sub = b->sub;
    struct pgw_session *s = sub->session;
    if (b->rcap - b->rlen < 8192) {
        size_t cap = b->rcap ? 2 * b->rcap : 16384;
        uint8_t *grown = cap > BRIDGE_RBUF_MAX + 16384 ? NULL : realloc(b->rbuf, cap);
        if (!grown) {
            pgw_notify_bridge_end(sub, cap > BRIDGE_RBUF_MAX + 16384 ? "message too large"
                                                                    : "out of memory");
            return;
        }
        b->rbuf = grown;
        b->rcap = cap;
    }
    bool want_write = false;
    ssize_t n = pgw_server_read(b->srv, b->rbuf + b->rlen, b->rcap - b->rlen, &want_write);
    if (n == PGW_EAGAIN)
        return;
    if (n <= 0) {
        pgw_pool_server_lost(b->srv);
        pgw_notify_bridge_end(sub, n == 0 ? "server closed the connection" : "server read failed");
        return;
    }
    b->rlen += (size_t)n;
    size_t off = 0;
    while (b->rlen - off >= PGW_MSG_HDR) {
        uint32_t mlen = pgw_get_u32(b->rbuf + off + 1);
        if (mlen < 4 || mlen > BRIDGE_RBUF_MAX) {
            pgw_notify_bridge_end(sub, "invalid message from the server");
            return;
        }
        if (b->rlen - off < (size_t)mlen + 1)
            break;
        bridge_message(b, b->rbuf + off, mlen + 1);
        /* Ended meanwhile (b freed: its client's write failed, an error),
         * or its marker came (its server closed). */
        if (s->notify != sub || sub->bridge != b || !b->srv)
            return;
        off += (size_t)mlen + 1;
    }
    memmove(b->rbuf, b->rbuf + off, b->rlen - off);
    b->rlen -= off;
    /* TLS may hold decrypted bytes the socket no longer signals. */
    if (pgw_server_pending(b->srv) > 0)
        ev_feed_event(b->px->loop, &b->srv->user_r, EV_READ);
}

static void bridge_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct notify_bridge *b = w->data;
    if (revents & EV_ERROR)
        pgw_notify_bridge_end(b->sub, "could not watch the connection for events");
    else if (revents & EV_WRITE)
        bridge_flush(b);
    else
        bridge_read(b);
}

const struct pgw_session *pgw_notify_bridge_client(const struct pgw_server *srv)
{
    /* Its watchers are the bridge's from the take to the close, which
     * takes it off the pool's lists (a server is calloc'ed: a NULL
     * callback until first lent). */
    if (srv->state != PGW_SRV_ACTIVE || srv->user_r.cb != bridge_io_cb)
        return NULL;
    const struct notify_bridge *b = srv->user_r.data;
    return b && b->srv == srv ? b->sub->session : NULL;
}

bool pgw_notify_bridge_take(struct pgw_session *s, struct pgw_server *srv)
{
    struct pgw_notify_sub *sub = s->notify;
    struct pgw_proxy *px = s->px;
    if (!sub || sub->bridge || s->state != PGW_SS_LINKED || s->mode == PGW_POOL_SESSION ||
        srv->user_listen != s->id || !sub->rfq_held || sub->nawait == 0 || sub->hold_failed ||
        sub->ending != NOTIFY_END_NONE || px->cfg->notify_bridge_timeout <= 0 || srv->fd < 0)
        return false;
    struct pgw_pool_stats st;
    struct pgw_pool *pool = pgw_notify_hub_pool(sub->hub);
    pgw_pool_get_stats(pool, &st);
    if (pgw_notify_hub_bridges(sub->hub, 0) >= st.pool_size)
        return false;                    /* (as before: the gap) */
    /* The bridge stays in max_db_connections and max_user_connections (a
     * connection to PostgreSQL all the same): at one of them, the room
     * srv holds is the waiters' (the hub's among them), and a login past
     * the cap the operator set to PostgreSQL's own (max_connections, a
     * role's or database's CONNECTION LIMIT) would be refused, 53300,
     * opening the backend's breaker (review r1). */
    if (!pgw_pool_limits_room(pool))
        return false;
    struct notify_bridge *b = calloc(1, sizeof(*b));
    if (b)
        b->chans = calloc((size_t)sub->nawait, sizeof(b->chans[0]));
    if (!b || !b->chans) {
        free(b);
        return false;
    }
    memcpy(b->chans, sub->await, (size_t)sub->nawait * sizeof(b->chans[0]));
    b->nchans = sub->nawait;
    b->sub = sub;
    b->px = px;
    b->srv = srv;
    b->seq = ++px->notify_bridge_seq;
    const char *enc = pgw_params_get(&srv->params, "client_encoding");
    b->conv = enc ? pgw_pgenc_get(&px->notify_enc, enc) : NULL;
    b->deadline = pgw_mono_now(px->loop) + px->cfg->notify_bridge_timeout;
    pgw_wbuf_init(&b->later);
    pgw_wbuf_init(&b->out);
    seen_note(b);
    /* Its idle time, with nothing to send until the hub listens, is no
     * idleness of a session's (idle_session_timeout for the role, the
     * database or the cluster would end it). */
    if (srv->server_version >= 140000)
        pgw_wire_query(&b->out, "SET idle_session_timeout TO 0");
    sub->bridge = b;
    pgw_notify_hub_bridges(sub->hub, 1);
    pgw_server_retire(srv, "its LISTEN bridge ended");
    ev_io_init(&srv->user_r, bridge_io_cb, srv->fd, EV_READ);
    ev_io_init(&srv->user_w, bridge_io_cb, srv->fd, EV_WRITE);
    srv->user_io_set = false;            /* the watchers are the bridge's */
    srv->user_r.data = srv->user_w.data = b;
    ev_io_start(px->loop, &srv->user_r);
    char pid[32];
    snprintf(pid, sizeof(pid), "backend_pid=%d", srv->backend_pid);
    bridge_log(b, pid);
    pgw_pool_detach(srv);                /* (its room goes to the waiters: the hub's) */
    if (s->notify != sub || sub->bridge != b)
        return true;
    if (pgw_server_pending(srv) > 0)
        ev_feed_event(px->loop, &srv->user_r, EV_READ);
    bridge_flush(b);
    /* The hub's marker channel, asked for now if it has a server (else
     * when it gets one); the marker goes at once if all is ready. */
    if (s->notify == sub && sub->bridge == b)
        pgw_notify_bridge_check(sub);
    return true;
}
