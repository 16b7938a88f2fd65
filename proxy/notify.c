/*
 * notify.c - LISTEN/NOTIFY in transaction and statement mode.
 *
 * PostgreSQL keeps a LISTEN in the server connection that ran it, which a
 * pooler lends to another client at the end of the transaction.  So in
 * these modes a client's LISTEN or UNLISTEN that comes as a simple Query
 * on its own, while the client holds no server, does not go to a pooled
 * server: each pool that has listeners keeps one server of its own (the
 * hub's), which runs every LISTEN its clients ask for, and the
 * notifications it receives go to the clients that listen on their
 * channel (a fan-out: many clients, one listening connection).
 *
 * - LISTEN: the client's statement runs on the hub's server as it was
 *   written (PostgreSQL checks it); its reply goes to the client, which
 *   reads nothing else meanwhile (what it sends after waits).  From the
 *   CommandComplete on, notifications on the channel reach the client.
 * - UNLISTEN: answered by pgwharf; the hub's server runs UNLISTEN when the
 *   last client of a channel leaves it.
 * - A notification reaches a client that holds no server at once, one
 *   inside a transaction when its server goes back to the pool (right
 *   after its ReadyForQuery): between transactions, as PostgreSQL sends
 *   them.  The process ID in it is the notifying server's.
 * - At most max_notify_backlog bytes of them wait for a client (unread,
 *   or held for its transaction's end).  One that falls further behind
 *   gets none past that: its subscriptions go, and it is sent what it was
 *   owed, then FATAL 54000, between transactions (backlog_over), as
 *   PostgreSQL drops no notification of a listener's.  Held ones past the
 *   bound leave a mark (lost_note), and the transaction's end decides
 *   (lost_cut): those it discards were never the client's.
 * - The hub's server is one of the pool's (it counts in pool_size and
 *   shows in SHOW SERVERS as active with no client).  When it is lost, or
 *   marked for closing (RECONNECT, PAUSE, a reload), the hub takes
 *   another and runs LISTEN for every channel again; notifications sent
 *   in between are lost (event=notify_server_lost), so its listening
 *   clients are disconnected with FATAL 08006 between transactions, as a
 *   direct connection ends with its backend (hub_lost).
 * - A pool that can have only one server keeps it for queries (room_for);
 *   when a reload leaves a hub's pool so (event=notify_no_room), the hub
 *   gives its server back and ends: its clients' listening can only end
 *   with their connections, as in PostgreSQL, so each gets FATAL 57P01
 *   between transactions (and reconnects; its LISTEN then runs on its own
 *   server).
 *
 * A lone LISTEN or UNLISTEN through the extended protocol (Parse, Bind,
 * Execute) between transactions: notify_ext.c.  The server a committed
 * LISTEN ran on, kept listening for its client until the hub listens on
 * the channel: notify_bridge.c.  One inside a transaction,
 * or among other statements of a Query, runs on the client's server and
 * becomes the hub's when the transaction commits (see "inside a
 * transaction" below).  One inside a function runs on the client's server
 * only (relay.c listen_check).
 *
 * The hub's server speaks UTF-8: a client's LISTEN text is read in its
 * client_encoding, and each notification goes out converted to it.
 *
 * State lives in the proxy (px->notify_hubs, px->notify_enc) and in each
 * listening session (s->notify): nothing global.
 */
#include "proxy/notify_int.h"

#include <ctype.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/array.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/hmap.h"
#include "common/log.h"
#include "common/wire.h"

#define NOTIFY_RBUF_MAX (1u << 20)      /* largest message the hub reads */
#define NOTIFY_TICK 0.5                 /* seconds: retries, close checks */
/* The hub's own LISTEN of a channel clients want, tried that many times in
 * a row (hub_listen_failed) before they learn it failed. */
#define NOTIFY_LISTEN_TRIES 3

struct notify_chan {
    char name[PGW_CHANNEL_UTF8_MAX + 1];
    int refs;                           /* clients listening */
    bool listening;                     /* a LISTEN of it succeeded on the hub's server */
    bool failed;                        /* the hub's own LISTEN of it failed, with this
                                           error (hub_listen_failed); a LISTEN of it
                                           that succeeds clears it */
    char fail_state[6];
    char fail_msg[256];
    int tries;                          /* its LISTENs failed in a row (NOTIFY_LISTEN_TRIES) */
};

/* A statement for the hub's server: a client's LISTEN, or the hub's own
 * (s == NULL: LISTEN again on a new server, UNLISTEN). */
struct notify_req {
    struct notify_req *next;
    struct pgw_session *s;
    bool sent, failed, listen;
    bool answered;                      /* its CommandComplete or error went to its
                                           client: never sent again (hub_lost) */
    bool barrier;                       /* the hub's own, for hub_echo_end(gen) */
    bool marker;                        /* the hub's own LISTEN of its marker channel */
    uint32_t gen;
    ev_tstamp sent_at;                  /* when sent to the hub's server */
    int closes;                         /* Closes after it in its batch (notify_ext.c): */
    bool close_stmt;                    /* ... one of its statement, stmt */
    char stmt[NOTIFY_STMT_NAME_MAX + 1];
    char chan[PGW_CHANNEL_UTF8_MAX + 1];
    char sql[];
};

struct pgw_notify_hub {
    struct pgw_proxy *px;
    struct pgw_pool *pool;              /* referenced */
    struct pgw_list node;               /* px->notify_hubs */
    struct pgw_list subs;               /* pgw_notify_sub.node */
    struct notify_chan *chans;
    int nchans;
    size_t capchans;
    struct notify_req *head, *tail;
    struct notify_req *answered;        /* a client's request answered by a server
                                           lost before its ReadyForQuery: the
                                           client gets that at the next tick */
    bool lost;                          /* hub_lost marked listeners: the next
                                           tick disconnects those it can */
    bool backlog;                       /* backlog_over marked a listener between
                                           transactions: the next tick ends it */
    struct pgw_server *srv;
    struct pgw_pool_waiter waiter;
    bool acquiring;
    bool no_room;                       /* ended by a reload (hub_end): takes no
                                           server, its clients leave */
    uint32_t echo_gen;                  /* the last barrier's (echo_seal) */
    /* The bridges of its subs (notify_bridge.c): their markers come on this
     * channel, which its server listens on while they need it. */
    char marker[32];
    bool marker_ok;                     /* its server's LISTEN of it ran */
    bool marker_queued;                 /* ... is queued */
    int nbridges;
    int nheld;                          /* subs whose ReadyForQuery is held (hold_end) */
    struct pgw_session *asking;         /* in pgw_notify_query: its caller reads
                                           on (an answer from inside the kick
                                           must not) */
    ev_timer tick;
    uint8_t *rbuf;
    size_t rlen, rcap;
    struct pgw_wbuf out;
};

/* What a listening client gets when its hub ends (hub_end). */
#define NOTIFY_NO_ROOM_SQLSTATE "57P01"
#define NOTIFY_NO_ROOM_MSG "database configuration changed: the pool has no room for a " \
                           "listening server"
/* ... and when more than max_notify_backlog bytes of notifications wait
 * for it (backlog_over): PostgreSQL never drops a listener's notification
 * (its queue grows, and at its end NOTIFY fails with 54000 "too many
 * notifications in the NOTIFY queue"); a client that lost some could not
 * tell, so it learns here, with PostgreSQL's code for a limit reached. */
#define NOTIFY_BACKLOG_SQLSTATE "54000"
#define NOTIFY_BACKLOG_MSG "too many notifications wait for this client (more than " \
                           "max_notify_backlog, %d bytes): notifications would have been missed"
/* ... and when its hub's server is lost (hub_lost): as a direct
 * connection whose backend went away, it learns that it may have missed
 * notifications, and reconnects to LISTEN again. */
#define NOTIFY_LOST_SQLSTATE "08006"
#define NOTIFY_LOST_MSG "the server connection listening for this client was lost (%s): " \
                        "notifications may have been missed"
/* ... and when the hub's LISTEN of a channel it took over from the
 * client's transaction fails (hub_listen_failed): 08006 too (the client
 * reconnects to LISTEN again; its COMMIT succeeded, so the LISTEN's own
 * SQLSTATE, 57014 say, would misread), PostgreSQL's error in the DETAIL. */
#define NOTIFY_LISTEN_FAILED_MSG "the LISTEN this client's transaction committed failed on the " \
                                 "server connection listening for it (%s): the client does not " \
                                 "listen on the channel"
#define NOTIFY_LISTEN_FAILED_DETAIL "PostgreSQL's error for that LISTEN: SQLSTATE %s: %s"

static void hub_kick(struct pgw_notify_hub *h);
static void hub_lost(struct pgw_notify_hub *h, const char *why);
static bool deliverable(const struct pgw_session *s);
static void tx_unlinked(struct pgw_notify_sub *sub);
static void hub_echo_end(struct pgw_notify_hub *h, uint32_t gen);
static bool echo_take(struct pgw_notify_sub *sub, const uint8_t *msg, uint32_t total);
static void fresh_add(struct pgw_notify_sub *sub, const char *chan);
static int tx_current(const struct pgw_notify_sub *sub);
static bool sp_noted(struct pgw_notify_sub *sub, const struct notify_spcmd *cmds, int n);
static bool maybe_for(const struct pgw_notify_sub *sub, const char *chan);
static bool hub_listens(const struct pgw_notify_hub *h, const char *chan);
static void backlog_over(struct pgw_session *s);
static void backlog_warn(struct pgw_session *s, bool held);
static void maybe_add(struct pgw_session *s, const uint8_t *msg, uint32_t total);
static void backlog_end(struct pgw_session *s);
static void maybe_settle(struct pgw_notify_sub *sub);
static void held_clear(struct pgw_notify_sub *sub);
static const char *msg_chan(const uint8_t *m);
static void hub_tick_now(struct pgw_notify_hub *h);
static void hold_fail(struct pgw_notify_sub *sub, const char *sqlstate, const char *msg);
static void hub_unhold(struct pgw_notify_hub *h);
static void hub_listen_failed(struct pgw_notify_hub *h, const char *chan);
static void hold_fail_listen(struct pgw_notify_sub *sub, const struct notify_chan *c);
typedef bool (*held_keep_fn)(struct pgw_notify_sub *sub, uint8_t *msg);
struct converted;
static void deliver(struct pgw_session *s, const uint8_t *msg, uint32_t total,
                    const struct pgw_pgenc_conv *c, struct converted *conv);


static const char *lq(char *buf, size_t n, const char *v) { return pgw_log_quote(buf, n, v); }

/* ---- channels ---- */

static struct notify_chan *hub_chan(struct pgw_notify_hub *h, const char *name)
{
    for (int i = 0; i < h->nchans; i++)
        if (strcmp(h->chans[i].name, name) == 0)
            return &h->chans[i];
    return NULL;
}

static int sub_find(const struct pgw_notify_sub *sub, const char *name)
{
    for (int i = 0; i < sub->nchans; i++)
        if (strcmp(sub->chans[i], name) == 0)
            return i;
    return -1;
}

/* LISTEN or UNLISTEN "name" for the hub's server. */
static struct notify_req *req_new(struct pgw_session *s, const char *sql, const char *chan,
                                  bool listen)
{
    size_t n = strlen(sql);
    struct notify_req *r = calloc(1, sizeof(*r) + n + 1);
    if (!r)
        return NULL;
    r->s = s;
    r->listen = listen;
    snprintf(r->chan, sizeof(r->chan), "%s", chan);
    memcpy(r->sql, sql, n + 1);
    return r;
}

static struct notify_req *req_own(const char *verb, const char *chan)
{
    char sql[16 + 2 * PGW_CHANNEL_UTF8_MAX + 4];
    size_t n = (size_t)snprintf(sql, sizeof(sql), "%s \"", verb);
    for (const char *c = chan; *c; c++) {
        if (*c == '"')
            sql[n++] = '"';
        sql[n++] = *c;
    }
    sql[n++] = '"';
    sql[n] = '\0';
    return req_new(NULL, sql, chan, strcmp(verb, "LISTEN") == 0);
}

static void req_push(struct pgw_notify_hub *h, struct notify_req *r)
{
    r->next = NULL;
    if (h->tail)
        h->tail->next = r;
    else
        h->head = r;
    h->tail = r;
}

/* A LISTEN of the channel is queued (or runs): its end decides. */
static bool listen_queued(const struct pgw_notify_hub *h, const char *name)
{
    for (const struct notify_req *q = h->head; q; q = q->next)
        if (q->listen && strcmp(q->chan, name) == 0)
            return true;
    return false;
}

/* The last client of a channel left it: the hub stops listening. */
static void chan_unref(struct pgw_notify_hub *h, const char *name)
{
    struct notify_chan *c = hub_chan(h, name);
    if (!c || --c->refs > 0)
        return;
    *c = h->chans[--h->nchans];
    if (!h->srv || listen_queued(h, name))
        return;           /* a new server listens only to what is wanted */
    struct notify_req *r = req_own("UNLISTEN", name);
    if (!r) {
        hub_lost(h, "out of memory");    /* a new server forgets the channel */
        return;
    }
    req_push(h, r);
    hub_kick(h);
}

static bool chan_ref(struct pgw_notify_hub *h, const char *name)
{
    struct notify_chan *c = hub_chan(h, name);
    if (c) {
        c->refs++;
        return true;
    }
    struct notify_chan *grown = pgw_array_grow(h->chans, sizeof(*grown), (size_t)h->nchans,
                                               &h->capchans, 4);
    if (!grown)
        return false;
    h->chans = grown;
    c = &h->chans[h->nchans++];
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->refs = 1;
    c->failed = c->listening = false;
    c->tries = 0;
    snprintf(c->fail_state, sizeof(c->fail_state), "%s", "08006");
    snprintf(c->fail_msg, sizeof(c->fail_msg), "%s", "LISTEN failed on the listening server");
    return true;
}

static bool sub_add(struct pgw_notify_sub *sub, const char *name)
{
    if (sub_find(sub, name) >= 0)
        return true;
    void *grown = pgw_array_grow(sub->chans, sizeof(sub->chans[0]), (size_t)sub->nchans,
                                 &sub->capchans, 2);
    if (!grown)
        return false;
    sub->chans = grown;
    if (!chan_ref(sub->hub, name))
        return false;
    snprintf(sub->chans[sub->nchans++], sizeof(sub->chans[0]), "%s", name);
    return true;
}

static void sub_remove(struct pgw_notify_sub *sub, const char *name)
{
    int i = sub_find(sub, name);
    if (i < 0)
        return;
    memcpy(sub->chans[i], sub->chans[--sub->nchans], sizeof(sub->chans[0]));
    chan_unref(sub->hub, name);
}

/* It listens to nothing, holds nothing for the client, has no vstmt and
 * nothing noted in a transaction. */
static bool sub_empty(const struct pgw_notify_sub *sub)
{
    return sub->nchans == 0 && sub->pending.len == 0 && sub->nvst == 0 && sub->ntx == 0;
}

/* ---- the hub ---- */

static struct pgw_notify_hub *hub_find(struct pgw_proxy *px, const struct pgw_pool *pool)
{
    for (struct pgw_list *n = px->notify_hubs.next; n != &px->notify_hubs; n = n->next) {
        struct pgw_notify_hub *h = pgw_container_of(n, struct pgw_notify_hub, node);
        if (h->pool == pool)
            return h;
    }
    return NULL;
}

static void hub_tick_cb(struct ev_loop *loop, ev_timer *w, int revents);

static struct pgw_notify_hub *hub_get(struct pgw_proxy *px, struct pgw_pool *pool)
{
    struct pgw_notify_hub *h = hub_find(px, pool);
    if (h)
        return h;
    h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->px = px;
    h->pool = pool;
    /* Not to be guessed: a NOTIFY on it from anyone else would move a
     * bridge's hand-over (notify_bridge.c). */
    unsigned char rnd[8];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        free(h);
        return NULL;
    }
    int k = snprintf(h->marker, sizeof(h->marker), "pgw_hub_");
    for (size_t i = 0; i < sizeof(rnd); i++)
        k += snprintf(h->marker + k, sizeof(h->marker) - (size_t)k, "%02x", rnd[i]);
    pgw_pool_ref(pool);
    pgw_list_init(&h->subs);
    pgw_wbuf_init(&h->out);
    ev_timer_init(&h->tick, hub_tick_cb, NOTIFY_TICK, NOTIFY_TICK);
    h->tick.data = h;
    ev_timer_start(px->loop, &h->tick);
    pgw_list_append(&px->notify_hubs, &h->node);
    return h;
}

static void hub_drop_server(struct pgw_notify_hub *h)
{
    struct pgw_server *srv = h->srv;
    if (!srv)
        return;
    ev_io_stop(h->px->loop, &srv->user_r);
    ev_io_stop(h->px->loop, &srv->user_w);
    srv->user_io_set = false;          /* the watchers are the hub's */
    h->srv = NULL;
    h->rlen = 0;
    h->marker_ok = h->marker_queued = false;   /* (a new server listens anew) */
    pgw_wbuf_reset(&h->out);
    pgw_pool_release(srv, PGW_RELEASE_CLOSE);
}

/* Every bridge of h's subs goes (why: as pgw_notify_bridge_end). */
static void hub_bridges_end(struct pgw_notify_hub *h, const char *why)
{
    for (struct pgw_list *l = h->subs.next; h->nbridges > 0 && l != &h->subs; l = l->next) {
        struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
        if (sub->bridge)
            pgw_notify_bridge_end(sub, why);
    }
}

/* The hub may listen on channels its subs' bridges wait for. */
static void hub_bridges_check(struct pgw_notify_hub *h)
{
    for (struct pgw_list *l = h->subs.next; h->nbridges > 0 && l != &h->subs; l = l->next) {
        struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
        if (sub->bridge)
            pgw_notify_bridge_check(sub);
    }
}

static void hub_free(struct pgw_notify_hub *h)
{
    struct pgw_proxy *px = h->px;
    hub_bridges_end(h, NULL);
    pgw_pool_cancel_wait(&h->waiter);
    hub_drop_server(h);
    ev_timer_stop(px->loop, &h->tick);
    while (h->head) {
        struct notify_req *r = h->head;
        h->head = r->next;
        free(r);
    }
    while (h->answered) {
        struct notify_req *r = h->answered;
        h->answered = r->next;
        free(r);
    }
    pgw_list_del(&h->node);
    pgw_pool_unref(h->pool);
    pgw_wbuf_deinit(&h->out);
    free(h->rbuf);
    free(h->chans);
    free(h);
}

/* No client listens or waits: the hub and its server go. */
static bool hub_maybe_free(struct pgw_notify_hub *h)
{
    if (!pgw_list_empty(&h->subs))
        return false;
    for (struct notify_req *r = h->head; r; r = r->next)
        if (r->s)
            return false;
    if (h->answered)
        return false;
    hub_free(h);
    return true;
}

/* Answer a waiting client with the rest of its LISTEN's reply, then read
 * what it sent meanwhile (unless it is the one asking: its reading goes on
 * in relay.c, which would find its buffer gone from under it). */
static void client_resume(struct pgw_session *s)
{
    struct pgw_notify_sub *sub = s->notify;
    if (!sub || !sub->waiting)
        return;
    bool read_on = sub->hub->asking != s;
    sub->waiting = false;
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_ready(&b, 'I');
    pgw_metrics_xact_end(s);             /* as PostgreSQL's 'I' would count */
    pgw_session_send(s, &b);
    pgw_wbuf_deinit(&b);
    if (s->state == PGW_SS_CLOSING)
        return;
    /* Idle from now (its wait for a server, and for the answer, was no
     * idleness): client_idle_timeout counts from here, as after any
     * request's answer; it counted from the LISTEN's sending. */
    s->last_activity = pgw_mono_now(s->px->loop);
    pgw_session_arm_timer(s);            /* idle again: client_idle_timeout */
    if (sub_empty(sub))
        pgw_notify_session_gone(s);      /* its LISTEN failed: listens to nothing */
    if (read_on && s->state == PGW_SS_IDLE && s->cbuf && s->cbuf->parsed < s->cbuf->len)
        pgw_relay_client_data(s);
    /* While it waited, its buffer may have filled and its reading stopped
     * (pgw_session_read_client): what the buffer held is taken now, so it
     * reads on.  Else a buffer that ended at a message's end or inside a
     * header (nothing left there asks for more) kept it unread for good:
     * the client waited for ever and its end of stream was never seen. */
    if (s->state != PGW_SS_CLOSING)
        pgw_relay_read_again(s);
}

/* Bytes the client has not read yet (it holds no server: all are whole
 * messages of pgwharf's). */
static size_t unsent(const struct pgw_session *s)
{
    return s->sbuf ? s->sbuf->len - s->sbuf->sent : 0;
}

/* How many bytes of notifications may wait for one client: those it has
 * not read yet (between transactions), or those held for the end of its
 * transaction.  A client that reads drains it; only one that falls this
 * far behind is ended (backlog_over). */
static size_t backlog_max(const struct pgw_session *s)
{
    return (size_t)s->px->cfg->max_notify_backlog;
}

/* How many bytes may be held for the end of the client's transaction:
 * twice the bound, for that end may throw some away, as PostgreSQL,
 * reading them then, skips them -- the hub's copies of a channel the
 * transaction LISTENs (HELD_MAYBE: a ROLLBACK), those of one it UNLISTENs
 * (a COMMIT; nothing says so when they come, nor whether the UNLISTEN
 * will).  What is the client's after that end is cut past backlog_max
 * (lost_cut); one past held_max is dropped at once (lost_note). */
static size_t held_max(const struct pgw_session *s)
{
    return 2 * backlog_max(s);
}

/* Whole messages to the client, its buffer grown to take them (up to
 * backlog_max unread, checked by the callers); false when memory is
 * short. */
bool pgw_notify_send(struct pgw_session *s, const uint8_t *msg, size_t n)
{
    if (!s->sbuf && !(s->sbuf = pgw_iobuf_get(s->px)))
        return false;
    size_t need = unsent(s) + n;
    if (need > s->sbuf->cap && !pgw_iobuf_reserve(s->px, &s->sbuf, (uint32_t)need))
        return false;
    struct pgw_wbuf b = { .data = (uint8_t *)msg, .len = n, .cap = n };
    return pgw_session_send(s, &b);
}

/* Every waiting client's LISTEN fails with err (no server for the hub),
 * a transaction's too (hold_fail: at the tick). */
static void hub_fail_waiting(struct pgw_notify_hub *h, const char *sqlstate, const char *msg)
{
    for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next) {
        struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
        if (sub->nawait > 0)
            hold_fail(sub, sqlstate, msg);
    }
    struct notify_req *failing = NULL, **fp = &failing, **pp = &h->head;
    h->tail = NULL;
    while (*pp) {
        struct notify_req *r = *pp;
        if (!r->s) {
            h->tail = r;
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        r->next = NULL;
        *fp = r;
        fp = &r->next;
    }
    /* Answered after the queue is whole again: a client may send its next
     * LISTEN from client_resume. */
    while (failing) {
        struct notify_req *r = failing;
        failing = r->next;
        struct pgw_session *s = r->s;
        free(r);
        if (!s || s->state == PGW_SS_CLOSING)
            continue;
        struct pgw_wbuf b;
        pgw_wbuf_init(&b);
        pgw_wire_error(&b, "ERROR", sqlstate, "%s", msg);
        pgw_session_send(s, &b);
        pgw_wbuf_deinit(&b);
        client_resume(s);
    }
}

static void hub_flush(struct pgw_notify_hub *h)
{
    struct pgw_server *srv = h->srv;
    while (srv && h->out.len > 0) {
        bool want_read = false;
        ssize_t n = pgw_server_write(srv, h->out.data, h->out.len, &want_read);
        if (n == PGW_EAGAIN) {
            ev_io_start(h->px->loop, &srv->user_w);
            return;
        }
        if (n <= 0) {
            hub_lost(h, "write to the server failed");
            hub_kick(h);
            return;
        }
        pgw_wbuf_consume(&h->out, (size_t)n);
    }
    if (srv)
        ev_io_stop(h->px->loop, &srv->user_w);
}

/* Send what is not sent yet. */
static void hub_send(struct pgw_notify_hub *h)
{
    if (!h->srv)
        return;
    for (struct notify_req *r = h->head; r; r = r->next)
        if (!r->sent) {
            pgw_wire_query(&h->out, r->sql);
            r->sent = true;
            r->sent_at = pgw_mono_now(h->px->loop);
            if (r->s && r->s->query_timeout > 0)
                pgw_session_arm_timer(r->s);     /* query_timeout runs from now */
        }
    if (h->out.failed) {
        hub_lost(h, "out of memory");
        return;
    }
    hub_flush(h);
}

/* ---- client encodings: the hub's server speaks UTF-8 ---- */

/* The converters for s's client_encoding (its own, or what its pool's
 * servers start with); NULL when UTF-8 reaches it as it is. */
static const struct pgw_pgenc_conv *client_conv(const struct pgw_session *s)
{
    const char *enc = s->params[PGW_TP_CLIENT_ENCODING];
    if (!enc && s->pool)
        enc = pgw_params_get(pgw_pool_defaults(s->pool), "client_encoding");
    return enc ? pgw_pgenc_get(&s->px->notify_enc, enc) : NULL;
}

/* Where a database in an encoding iconv converts to cuts a long name
 * (pgw_ident_clip): each character of the UTF-8 name converted on its
 * own, as many as fit in PGW_CHANNEL_MAX bytes (pg_mbcliplen).  Every
 * character must convert, past the cut too: PostgreSQL converts the
 * whole text before it reads it (22P05 otherwise, from the server). */
static ssize_t clip_converted(const void *arg, const char *name, size_t n)
{
    const struct pgw_pgenc_conv *c = arg;
    size_t i = 0, bytes = 0, cut = n;
    while (i < n) {
        uint32_t cp;
        size_t k = (unsigned char)name[i] < 0x80
                       ? 1 : pgw_utf8_decode((const unsigned char *)name + i, &cp);
        char out[16];
        ssize_t m = k == 0 || i + k > n ? -1
                                        : pgw_pgenc_convert(c->to_client, name + i, k, out,
                                                            sizeof(out));
        if (m <= 0)
            return -1;                  /* bad UTF-8, or none in that encoding */
        if (cut == n && bytes + (size_t)m > PGW_CHANNEL_MAX)
            cut = i;
        bytes += (size_t)m;
        i += k;
    }
    return cut <= PGW_CHANNEL_UTF8_MAX ? (ssize_t)cut : -1;
}

/* How s's database cuts a long name not ASCII (pgw_listen_parse): in
 * UTF-8 in a UTF8 database; in another encoding pgwharf converts to,
 * character by character; NULL (the server reads it) in SQL_ASCII, where
 * PostgreSQL cuts bytes whatever the characters, and where the encoding
 * is unknown. */
static const struct pgw_ident_clip *db_clip(const struct pgw_session *s,
                                            struct pgw_ident_clip *buf)
{
    const char *enc = s->pool ? pgw_params_get(pgw_pool_defaults(s->pool), "server_encoding")
                              : NULL;
    if (!enc || strcmp(enc, "SQL_ASCII") == 0)
        return NULL;
    if (strcmp(enc, "UTF8") == 0)
        return &pgw_ident_clip_utf8;
    const struct pgw_pgenc_conv *c = pgw_pgenc_get(&s->px->notify_enc, enc);
    if (!c)
        return NULL;
    *buf = (struct pgw_ident_clip){ clip_converted, c };
    return buf;
}

/* ---- statement and portal names, as PostgreSQL keys them ---- */

/* How PostgreSQL holds text in encoding enc (a name it reports; NULL:
 * unknown): as bytes it never converts (SQL_ASCII), in UTF-8, or in an
 * encoding iconv converts to (ENC_OTHER: MULE_INTERNAL). */
enum enc_kind { ENC_BYTES, ENC_UTF8, ENC_ICONV, ENC_OTHER };

static enum enc_kind enc_kind(const char *enc)
{
    if (!enc || strcasecmp(enc, "SQL_ASCII") == 0)
        return ENC_BYTES;
    if (strcasecmp(enc, "UTF8") == 0 || strcasecmp(enc, "UTF-8") == 0 ||
        strcasecmp(enc, "UNICODE") == 0)
        return ENC_UTF8;
    return pgw_pgenc_iconv_name(enc) ? ENC_ICONV : ENC_OTHER;
}

static const char *client_enc(const struct pgw_session *s)
{
    const char *enc = s->params[PGW_TP_CLIENT_ENCODING];
    if (!enc && s->pool)
        enc = pgw_params_get(pgw_pool_defaults(s->pool), "client_encoding");
    return enc;
}

static const char *db_enc(const struct pgw_session *s)
{
    return s->pool ? pgw_params_get(pgw_pool_defaults(s->pool), "server_encoding") : NULL;
}

/* in[0..n) converted by cd into a malloc'd string (*outn bytes, then a
 * NUL); whole false: in is the head of a longer text, maybe cut inside a
 * character, which is left out.  NULL when it does not convert. */
static char *convert_dup(iconv_t cd, const char *in, size_t n, bool whole, size_t *outn)
{
    char *out = malloc(4 * n + 1);       /* no encoding takes over 4 bytes a byte */
    for (size_t drop = 0; out && drop <= (whole ? 0 : 3) && drop <= n; drop++) {
        ssize_t k = pgw_pgenc_convert(cd, in, n - drop, out, 4 * n);
        if (k >= 0) {
            out[k] = '\0';
            *outn = (size_t)k;
            return out;
        }
    }
    free(out);
    return NULL;
}

/* The first NOTIFY_STMT_NAME_MAX bytes of name (n bytes, UTF-8) in s's
 * database's encoding, into key; false when a character is not there. */
static bool key_from_utf8(const struct pgw_session *s, const char *name, size_t n,
                          char key[NOTIFY_STMT_NAME_MAX + 1])
{
    const char *enc = db_enc(s);
    const char *k = name;
    char *conv = NULL;
    size_t kn = n;
    if (!pgw_pgenc_ascii(name, n) && enc_kind(enc) != ENC_UTF8) {
        const struct pgw_pgenc_conv *c = enc_kind(enc) == ENC_ICONV
                                             ? pgw_pgenc_get(&s->px->notify_enc, enc) : NULL;
        if (!c || !(k = conv = convert_dup(c->to_client, name, n, true, &kn)))
            return false;
    }
    kn = kn < NOTIFY_STMT_NAME_MAX ? kn : NOTIFY_STMT_NAME_MAX;
    memcpy(key, k, kn);
    key[kn] = '\0';
    free(conv);
    return true;
}

/* name refused (pgw_notify_stmt_key_of's -1); whole false: name is the head of
 * a longer one, its last character maybe cut (left out here). */
static bool name_refused(const struct pgw_session *s, const char *name, size_t n, bool whole)
{
    if (!whole) {
        size_t m = n;
        while (m > 0 && n - m < 3 && ((unsigned char)name[m - 1] & 0xC0) == 0x80)
            m--;
        if (m > 0 && (unsigned char)name[m - 1] >= 0xC0)
            m--;                         /* a character's first byte, its rest maybe cut */
        n = m;
    }
    if (pgw_pgenc_ascii(name, n))
        return false;
    const char *cenc = client_enc(s), *denc = db_enc(s);
    if (!cenc || !denc)
        return false;
    enum enc_kind ck = enc_kind(cenc), dk = enc_kind(denc);
    /* Only where pgwharf checks as PostgreSQL does: a name PostgreSQL
     * takes after all would stay on a pooled server under the client's
     * own name, and iconv's tables of some encodings (SJIS, EUC_JP) are
     * not PostgreSQL's.  A UTF8 client's text is checked as UTF-8 whatever
     * the database (converted, or not: a SQL_ASCII database checks it in
     * the client's encoding), and so is a SQL_ASCII client's in a UTF8
     * database; a LATIN1 database has exactly the first 256 characters. */
    if (ck != ENC_UTF8 && !(ck == ENC_BYTES && dk == ENC_UTF8))
        return false;
    if (!pgw_utf8_valid(name, n))
        return true;                     /* 22021 */
    if (ck != ENC_UTF8 || strcasecmp(denc, "LATIN1") != 0)
        return false;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (unsigned char)name[i] < 0x80 ? (cp = 0, 1)
                                           : pgw_utf8_decode((const unsigned char *)name + i, &cp);
        if (cp > 0xFF)
            return true;                 /* 22P05 */
    }
    return false;
}

bool pgw_notify_stmt_key(const struct pgw_session *s, const char *name, size_t n, bool whole,
                         char key[NOTIFY_STMT_NAME_MAX + 1])
{
    return pgw_notify_stmt_key_of(s, name, n, whole, key) > 0;
}

int pgw_notify_stmt_key_of(const struct pgw_session *s, const char *name, size_t n, bool whole,
                           char key[NOTIFY_STMT_NAME_MAX + 1])
{
    if (name_refused(s, name, n, whole))
        return -1;
    const char *cenc = client_enc(s), *denc = db_enc(s);
    enum enc_kind ck = enc_kind(cenc), dk = enc_kind(denc);
    /* PostgreSQL converts nothing when either side is SQL_ASCII or both
     * are the same; every encoding it has is ASCII's. */
    if (pgw_pgenc_ascii(name, n) || ck == ENC_BYTES || dk == ENC_BYTES ||
        strcasecmp(cenc, denc) == 0) {
        size_t k = n < NOTIFY_STMT_NAME_MAX ? n : NOTIFY_STMT_NAME_MAX;
        memcpy(key, name, k);
        key[k] = '\0';
        return 1;
    }
    if (ck == ENC_UTF8)
        return key_from_utf8(s, name, n, key);
    const struct pgw_pgenc_conv *c = ck == ENC_ICONV ? client_conv(s) : NULL;
    size_t un;
    char *utf8 = c ? convert_dup(c->from_client, name, n, whole, &un) : NULL;
    bool ok = utf8 && key_from_utf8(s, utf8, un, key);
    free(utf8);
    return ok;
}

bool pgw_notify_dealloc_key(const struct pgw_session *s, const char *sql, size_t len,
                            char key[NOTIFY_STMT_NAME_MAX + 1],
                            char name[PGW_CHANNEL_UTF8_MAX + 1], struct pgw_ident_full *full)
{
    *full = (struct pgw_ident_full){ .cut = false };
    enum enc_kind dk = enc_kind(db_enc(s));
    if (dk == ENC_BYTES || pgw_pgenc_ascii(sql, len)) {
        /* Read as it is (a long name not ASCII in a SQL_ASCII database:
         * not read, the server's). */
        struct pgw_ident_clip clip;
        if (!pgw_deallocate_parse(sql, len, dk == ENC_BYTES ? NULL : db_clip(s, &clip), name,
                                  full))
            return false;
        snprintf(key, NOTIFY_STMT_NAME_MAX + 1, "%s", name);
        return true;
    }
    /* The scanner reads it in the database's encoding, where the name is
     * cut at a whole character (pgw_listen_parse's clip), then keyed. */
    const struct pgw_pgenc_conv *c = NULL;
    enum enc_kind ck = enc_kind(client_enc(s));
    if (ck == ENC_BYTES || ck == ENC_OTHER || (ck == ENC_ICONV && !(c = client_conv(s))))
        return false;
    size_t un = len;
    char *utf8 = c ? convert_dup(c->from_client, sql, len, true, &un) : NULL;
    struct pgw_ident_clip clip;
    const struct pgw_ident_clip *cl = db_clip(s, &clip);
    bool ok = (!c || utf8) && cl &&
              pgw_deallocate_parse(c ? utf8 : sql, un, cl, name, full) &&
              key_from_utf8(s, name, strlen(name), key);
    free(utf8);
    if (!ok)
        pgw_ident_full_free(full);
    return ok;
}

enum pgw_listen_kind pgw_notify_parse(const struct pgw_session *s, const char *sql, size_t len,
                                      char chan[PGW_CHANNEL_UTF8_MAX + 1], bool *converted,
                                      struct pgw_ident_full *full)
{
    *converted = false;
    if (full)
        *full = (struct pgw_ident_full){ .cut = false };
    /* The relay offers every Query and Parse whose text starts with white
     * space, U or L (an UPDATE, an indented SELECT): the keyword first,
     * before any scan or conversion of the whole text.  It is ASCII in
     * every client encoding. */
    if (!pgw_notify_may_be_listen(sql, len))
        return PGW_LISTEN_NONE;
    struct pgw_ident_clip clip;
    const struct pgw_ident_clip *cl = db_clip(s, &clip);
    const struct pgw_pgenc_conv *c = pgw_pgenc_ascii(sql, len) ? NULL : client_conv(s);
    if (!c)
        return pgw_listen_parse(sql, len, cl, chan, full);
    /* A character of any client encoding is at most 4 bytes of UTF-8 per
     * byte of it. */
    char *utf8 = malloc(4 * len + 1);
    ssize_t n = utf8 ? pgw_pgenc_convert(c->from_client, sql, len, utf8, 4 * len + 1) : -1;
    enum pgw_listen_kind kind = n < 0 ? PGW_LISTEN_NONE
                                      : pgw_listen_parse(utf8, (size_t)n, cl, chan, full);
    free(utf8);
    *converted = kind != PGW_LISTEN_NONE;
    return kind;
}

void pgw_notify_truncated(const struct pgw_session *s, struct pgw_wbuf *b,
                          const struct pgw_ident_full *full, const char *chan)
{
    if (!full->cut)
        return;
    static const char fmt[] = "identifier \"%s\" will be truncated to \"%s\"";
    size_t cap = sizeof(fmt) + strlen(full->name) + strlen(chan);
    char *msg = malloc(cap);
    if (!msg) {
        b->failed = true;
        return;
    }
    int n = snprintf(msg, cap, fmt, full->name, chan);
    const struct pgw_pgenc_conv *c = pgw_pgenc_ascii(msg, (size_t)n) ? NULL : client_conv(s);
    char *conv = c ? malloc(4 * cap) : NULL;
    ssize_t k = conv ? pgw_pgenc_convert(c->to_client, msg, (size_t)n, conv, 4 * cap - 1) : -1;
    if (k >= 0)
        conv[k] = '\0';
    pgw_wire_notice(b, "42622", k >= 0 ? conv : msg);
    free(conv);
    free(msg);
}

/* A NotificationResponse in one client encoding, made once per fan-out
 * and encoding (or the client's server's, back in UTF-8). */
struct converted {
    const struct pgw_pgenc_conv *conv;  /* what msg is in; NULL = none yet */
    bool ok;
    uint8_t *msg;
    uint32_t len;
    size_t cap;
};

static bool convert_notification(struct converted *x, const struct pgw_pgenc_conv *c,
                                 iconv_t cd, const uint8_t *msg, uint32_t total)
{
    if (x->conv == c)
        return x->ok;
    x->conv = c;
    x->ok = false;
    /* Int32 pid, channel, payload: each string converted on its own; no
     * encoding takes more than four bytes for a character UTF-8 writes
     * in one, nor UTF-8 for one byte of another. */
    size_t need = 4 * (size_t)total + PGW_MSG_HDR;
    if (need > x->cap) {
        uint8_t *m = realloc(x->msg, need);
        if (!m)
            return false;
        x->msg = m;
        x->cap = need;
    }
    size_t off = PGW_MSG_HDR + 4;
    memcpy(x->msg, msg, off);                    /* type, length (set below), pid */
    const char *str = (const char *)msg + off;
    for (int i = 0; i < 2; i++) {                /* the channel, then the payload */
        size_t n = strlen(str);
        ssize_t got = pgw_pgenc_convert(cd, str, n, (char *)x->msg + off,
                                        x->cap - off - (size_t)(2 - i));
        if (got < 0)
            return false;
        off += (size_t)got;
        x->msg[off++] = '\0';
        str += n + 1;
    }
    pgw_put_u32(x->msg + 1, (uint32_t)off - 1);
    x->len = (uint32_t)off;
    x->ok = true;
    return true;
}

/* PostgreSQL cannot send such a notification to such a client either (it
 * fails the conversion); pgwharf drops it for this client. */
static void not_representable(struct pgw_session *s, const char *enc)
{
    struct pgw_notify_sub *sub = s->notify;
    if (sub->enc_warned)
        return;
    sub->enc_warned = true;
    char qd[200], qu[200], qe[100];
    pgw_warn("notification_dropped", "client=%s db=%s user=%s client_encoding=%s reason=\"a "
             "character of the notification has no equivalent in the client's encoding\"",
             s->addr_text, lq(qd, sizeof(qd), s->database), lq(qu, sizeof(qu), s->user),
             lq(qe, sizeof(qe), enc));
}

/* The hub's copy msg (c converts it for s; NULL: it reaches s as it is;
 * conv keeps what it made), unless the client's own server sent it the
 * same one (pgw_notify_server_notification); held (maybe) when the client
 * does not listen on its channel yet but its transaction's LISTEN may have
 * committed. */
static void deliver_once(struct pgw_session *s, const uint8_t *msg, uint32_t total,
                         const struct pgw_pgenc_conv *c, struct converted *conv, bool maybe)
{
    if (s->notify->bridge && pgw_notify_bridge_hub_copy(s->notify, msg, total))
        return;                  /* the bridge's copy is the client's, or comes first */
    if (s->notify->necho > 0) {
        /* Its server's copies are noted as it sent them (in the client's
         * encoding); one it could not convert it did not send. */
        if (!c ? echo_take(s->notify, msg, total)
               : convert_notification(conv, c, c->to_client, msg, total) &&
                     echo_take(s->notify, conv->msg, conv->len))
            return;
    }
    if (maybe)
        maybe_add(s, msg, total);
    else
        deliver(s, msg, total, c, conv);
}

static void fan_out(struct pgw_notify_hub *h, const uint8_t *msg, uint32_t total)
{
    /* Int32 pid, channel, payload. */
    const char *chan = (const char *)msg + PGW_MSG_HDR + 4;
    if (total < PGW_MSG_HDR + 6 || msg[total - 1] != '\0' ||
        !memchr(chan, '\0', total - PGW_MSG_HDR - 4 - 1))
        return;
    /* Sessions first, then the sends: a failed send closes its session
     * (and may close others), which leave the list; a closed session's
     * memory stays until the loop's check watcher. */
    size_t n = 0, cap = 0;
    struct { struct pgw_session *s; bool maybe; } *to = NULL;
    for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next) {
        struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
        bool maybe = false;
        if (sub_find(sub, chan) < 0 && !(maybe = maybe_for(sub, chan)))
            continue;
        void *grown = pgw_array_grow(to, sizeof(*to), n, &cap, 16);
        if (!grown)
            break;
        to = grown;
        to[n].s = sub->session;
        to[n++].maybe = maybe;
    }
    bool ascii = pgw_pgenc_ascii(msg + PGW_MSG_HDR + 4, total - PGW_MSG_HDR - 4);
    struct converted conv = { 0 };
    for (size_t i = 0; i < n; i++) {
        struct pgw_session *s = to[i].s;
        if (s->state == PGW_SS_CLOSING || !s->notify)
            continue;
        deliver_once(s, msg, total, ascii ? NULL : client_conv(s), &conv, to[i].maybe);
    }
    free(conv.msg);
    free(to);
}

/* The hub's server sent a whole message. */
static void hub_message(struct pgw_notify_hub *h, const uint8_t *msg, uint32_t total)
{
    struct notify_req *r = h->head && h->head->sent ? h->head : NULL;
    switch ((char)msg[0]) {
    case PGW_BE_NOTIFY:
        if (h->marker_ok || h->marker_queued) {
            const char *chan = (const char *)msg + PGW_MSG_HDR + 4;
            if (total >= PGW_MSG_HDR + 6 && msg[total - 1] == '\0' &&
                memchr(chan, '\0', total - PGW_MSG_HDR - 4 - 1) && strcmp(chan, h->marker) == 0) {
                /* A bridge's (or one that went), for pgwharf only. */
                const char *payload = chan + strlen(chan) + 1;
                for (struct pgw_list *l = h->subs.next; h->nbridges > 0 && l != &h->subs;
                     l = l->next) {
                    struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
                    if (sub->bridge && pgw_notify_bridge_hub_marked(sub, payload))
                        break;
                }
                break;
            }
        }
        fan_out(h, msg, total);
        break;
    case PGW_BE_COMMAND_COMPLETE: {
        struct notify_chan *c0;
        if (!r)
            break;
        if (r->listen && !r->failed) {
            struct notify_chan *c = hub_chan(h, r->chan);
            if (c)
                c->failed = false, c->tries = 0;    /* it listens on it now */
            /* From here on the channel's notifications are the client's. */
            if (r->s && !sub_add(r->s->notify, r->chan)) {
                r->failed = r->answered = true;
                struct pgw_wbuf b;
                pgw_wbuf_init(&b);
                pgw_wire_error(&b, "ERROR", "53200", "out of memory");
                pgw_session_send(r->s, &b);
                pgw_wbuf_deinit(&b);
                break;
            }
        }
        if (r->listen && !r->failed && (c0 = hub_chan(h, r->chan)))
            c0->listening = true;        /* (after sub_add, which may make it) */
        if (r->s && r->closes == 0) {
            r->answered = true;
            pgw_notify_send(r->s, msg, total);
        } else if (r->s) {
            /* With the CloseCompletes of the Closes after it, in one
             * write: r is not looked at after it (a failed write closes
             * r->s, and the hub's UNLISTEN of its channel, failing in
             * turn, may free r: hub_lost). */
            r->answered = true;
            struct pgw_session *s = r->s;
            struct pgw_wbuf b;
            pgw_wbuf_init(&b);
            pgw_wbuf_append(&b, msg, total);
            pgw_notify_closes(s->notify, &b, r->closes, r->close_stmt ? r->stmt : NULL);
            if (b.failed)
                pgw_session_close(s, "53200", "out of memory");
            else
                pgw_notify_send(s, b.data, b.len);
            pgw_wbuf_deinit(&b);
        }
        break;
    }
    case PGW_BE_ERROR:
    case PGW_BE_NOTICE: {
        struct pgw_wire_err_fields f;
        bool parsed = pgw_wire_parse_error(msg + PGW_MSG_HDR, total - PGW_MSG_HDR, &f) == 0;
        /* FATAL or PANIC is the server's end, not the statement's: the
         * statement runs again on the next server. */
        bool fatal = (char)msg[0] == PGW_BE_ERROR && parsed &&
                     (strcmp(f.severity, "FATAL") == 0 || strcmp(f.severity, "PANIC") == 0);
        if (r && (char)msg[0] == PGW_BE_ERROR && !fatal)
            r->failed = r->answered = true;   /* first: a failed write may free r
                                                 (hub_lost) */
        if (r && r->listen && (char)msg[0] == PGW_BE_ERROR && !fatal && parsed) {
            /* The hub's own LISTEN: its clients learn at its ReadyForQuery
             * (hub_listen_failed). */
            struct notify_chan *c = hub_chan(h, r->chan);
            if (c) {
                snprintf(c->fail_state, sizeof(c->fail_state), "%s", f.sqlstate);
                snprintf(c->fail_msg, sizeof(c->fail_msg), "%s", f.message);
            }
        }
        if (r && r->s && !fatal) {
            pgw_notify_send(r->s, msg, total);
        } else if (parsed) {
            char q1[700], q2[200], q3[200];
            pgw_warn("notify_server", "db=%s user=%s sqlstate=%s reason=%s",
                     lq(q2, sizeof(q2), pgw_pool_dbname(h->pool)),
                     lq(q3, sizeof(q3), pgw_pool_user(h->pool)), f.sqlstate,
                     lq(q1, sizeof(q1), f.message));
        }
        break;
    }
    case PGW_BE_READY:
        if (!r)
            break;
        h->head = r->next;
        if (!h->head)
            h->tail = NULL;
        if (r->listen && !hub_chan(h, r->chan) && !listen_queued(h, r->chan)) {
            /* Nobody listens to it now (its client left, or its last
             * listener while the LISTEN ran, or the LISTEN failed), and no
             * LISTEN of it comes next (whose end decides). */
            struct notify_req *u = req_own("UNLISTEN", r->chan);
            if (u)
                req_push(h, u);
        }
        struct pgw_session *s = r->s;
        if (r->barrier)
            hub_echo_end(h, r->gen);
        /* (A client's lone LISTEN that failed too, behind the hub's own:
         * the channel is not listened on either.) */
        if (r->listen && r->failed && hub_chan(h, r->chan) && !hub_chan(h, r->chan)->listening &&
            !listen_queued(h, r->chan))
            hub_listen_failed(h, r->chan);
        if (r->listen && h->nheld > 0)
            hub_tick_now(h);             /* a held ReadyForQuery may go (hub_unhold) */
        if (r->marker) {
            h->marker_queued = false;
            h->marker_ok = !r->failed;
            if (r->failed)
                hub_bridges_end(h, "the listening server could not LISTEN on pgwharf's marker "
                                   "channel");
        }
        bool bridged = h->nbridges > 0 && (r->listen || r->marker);
        free(r);
        if (s)
            client_resume(s);
        if (bridged)
            hub_bridges_check(h);        /* their markers may go (its LISTENs ran) */
        hub_send(h);
        break;
    default:
        break;         /* ParameterStatus and the like */
    }
}

static void hub_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgw_notify_hub *h = w->data;
    if (revents & EV_ERROR) {
        /* libev could not watch the socket (epoll_ctl failed) and stopped
         * its watchers: the server is lost to the hub, which takes another. */
        hub_lost(h, "could not watch the connection for events");
        hub_kick(h);
        return;
    }
    if (revents & EV_WRITE) {
        hub_flush(h);
        return;
    }
    /* One read per wake-up: what it delivers goes out to the clients with
     * this loop iteration's writes before the hub reads more (a burst read
     * to the end at once would pile up in the clients' buffers first). */
    {
        if (h->rcap - h->rlen < 8192) {
            size_t cap = h->rcap ? 2 * h->rcap : 16384;
            if (cap > NOTIFY_RBUF_MAX + 16384) {
                hub_lost(h, "message too large");
                hub_kick(h);
                return;
            }
            uint8_t *n = realloc(h->rbuf, cap);
            if (!n) {
                hub_lost(h, "out of memory");
                hub_kick(h);
                return;
            }
            h->rbuf = n;
            h->rcap = cap;
        }
        bool want_write = false;
        ssize_t n = pgw_server_read(h->srv, h->rbuf + h->rlen, h->rcap - h->rlen, &want_write);
        if (n == PGW_EAGAIN)
            return;
        if (n <= 0) {
            hub_lost(h, n == 0 ? "server closed the connection" : "server read failed");
            hub_kick(h);
            return;
        }
        h->rlen += (size_t)n;
        size_t off = 0;
        while (h->rlen - off >= PGW_MSG_HDR) {
            uint32_t mlen = pgw_get_u32(h->rbuf + off + 1);
            if (mlen < 4 || mlen > NOTIFY_RBUF_MAX) {
                hub_lost(h, "invalid message from the server");
                hub_kick(h);
                return;
            }
            if (h->rlen - off < (size_t)mlen + 1)
                break;
            struct pgw_server *srv = h->srv;
            hub_message(h, h->rbuf + off, mlen + 1);
            if (h->srv != srv)
                return;        /* lost meanwhile (a failed write) */
            off += (size_t)mlen + 1;
        }
        memmove(h->rbuf, h->rbuf + off, h->rlen - off);
        h->rlen -= off;
    }
    /* TLS may hold decrypted bytes the socket no longer signals. */
    if (h->srv && pgw_server_pending(h->srv) > 0)
        ev_feed_event(loop, &h->srv->user_r, EV_READ);
}

/* The hub's LISTEN of its marker channel (for the bridges, notify_bridge.c),
 * marked queued; NULL short of memory. */
static struct notify_req *marker_req(struct pgw_notify_hub *h)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "LISTEN \"%s\"", h->marker);
    struct notify_req *r = req_new(NULL, sql, "", false);
    if (r) {
        r->marker = true;
        h->marker_queued = true;
    }
    return r;
}

static void hub_got_server(struct pgw_notify_hub *h, struct pgw_server *srv)
{
    struct ev_loop *loop = h->px->loop;
    h->srv = srv;
    pgw_pool_hold(srv);
    h->rlen = 0;
    pgw_wbuf_reset(&h->out);
    ev_io_init(&srv->user_r, hub_read_cb, srv->fd, EV_READ);
    ev_io_init(&srv->user_w, hub_read_cb, srv->fd, EV_WRITE);
    srv->user_io_set = false;
    srv->user_r.data = srv->user_w.data = h;
    ev_io_start(loop, &srv->user_r);
    /* UTF-8 (the server came with the last borrower's client_encoding,
     * which would convert every channel and payload to it), no
     * idle_session_timeout (PostgreSQL 14 on: set for the role, the
     * database or the cluster, it would end the server between
     * notifications, which are lost until another server listens; the
     * server is closed when given back), then the channels, then the
     * clients' LISTENs still to run. */
    struct notify_req *first = req_new(NULL, srv->server_version >= 140000
                                                 ? "SET client_encoding TO 'UTF8'; "
                                                   "SET idle_session_timeout TO 0"
                                                 : "SET client_encoding TO 'UTF8'", "", false);
    struct notify_req **tailp = first ? &first->next : NULL;
    if (tailp && (h->nbridges > 0 || h->px->cfg->notify_bridge_timeout > 0)) {
        /* For the bridges to come (notify_bridge.c), or those waiting (they
         * came while the hub had no server): before the channels, so that
         * the server's latest statement is one of theirs. */
        struct notify_req *r = marker_req(h);
        if (r) {
            *tailp = r;
            tailp = &r->next;
        }                                /* (short of memory: their time runs out) */
    }
    for (int i = 0; tailp && i < h->nchans; i++) {
        struct notify_req *r = req_own("LISTEN", h->chans[i].name);
        if (!r) {
            tailp = NULL;
            break;
        }
        *tailp = r;
        tailp = &r->next;
    }
    if (!tailp) {
        while (first) {
            struct notify_req *x = first;
            first = x->next;
            free(x);
        }
        hub_lost(h, "out of memory");
        return;
    }
    *tailp = h->head;
    if (!h->head)
        h->tail = pgw_container_of(tailp, struct notify_req, next);
    h->head = first;
    char q1[200], q2[200];
    pgw_debug("notify_server", "db=%s user=%s channels=%d backend_pid=%d",
              lq(q1, sizeof(q1), pgw_pool_dbname(h->pool)),
              lq(q2, sizeof(q2), pgw_pool_user(h->pool)), h->nchans, srv->backend_pid);
    hub_send(h);
}

static void hub_acquired_cb(struct pgw_pool_waiter *w, struct pgw_server *srv)
{
    struct pgw_notify_hub *h = w->arg;
    h->acquiring = false;
    if (srv) {
        hub_got_server(h, srv);
        return;
    }
    const struct pgw_pool_error *err = w->error;
    hub_fail_waiting(h, err ? err->sqlstate : "08006",
                     err ? err->message : "no server connection for LISTEN");
}

static bool hub_has_work(const struct pgw_notify_hub *h)
{
    return h->nchans > 0 || h->head;
}

/* Take a server when there is something to listen to and none is held. */
static void hub_kick(struct pgw_notify_hub *h)
{
    if (h->srv) {
        hub_send(h);
        return;
    }
    /* Shutting down too: clients go on until they leave (SIGTERM, SHUTDOWN
     * WAIT_FOR_CLIENTS), their LISTENs with them. */
    if (h->acquiring || h->no_room || !hub_has_work(h))
        return;
    int r = pgw_pool_acquire(h->pool, &h->waiter, h->px->root, hub_acquired_cb, h);
    if (r == PGW_ACQ_GRANTED) {
        hub_got_server(h, h->waiter.server);
    } else if (r == PGW_ACQ_QUEUED) {
        h->acquiring = true;
    } else {
        const struct pgw_pool_error *err = pgw_pool_error_of(&h->waiter, r);
        hub_fail_waiting(h, err ? err->sqlstate : "08006",
                         err ? err->message : "no server connection for LISTEN");
        /* The channels' clients stay; the tick tries again. */
    }
}

/* The client listens through the hub, or its open transaction has the
 * hub listen for it (a noted LISTEN): a notification the hub misses may
 * be one of its. */
static bool sub_listens(const struct pgw_notify_sub *sub)
{
    if (sub->nchans > 0)
        return true;
    for (int i = 0; i < sub->ntx; i++)
        if (sub->tx[i].kind == PGW_LISTEN)
            return true;
    return false;
}

/* The hub's server is gone (or given up): a client's request not answered
 * yet is sent again on the next one, the hub's own statements made anew;
 * one already answered (its CommandComplete or error sent, its
 * ReadyForQuery not read yet: PostgreSQL writes them together, but the
 * stream may be cut between them) is never sent again: its client gets
 * its ReadyForQuery at the next tick.  Notifications sent until another
 * server listens are lost, so every client that listens is marked to be
 * disconnected (FATAL 08006) between transactions, as a direct
 * connection ends with its backend: the next tick closes those between
 * transactions, pgw_notify_flush the others at their transaction's end.
 * Nothing is closed or answered from here: hub_lost runs inside the
 * hub's callbacks and from a session's leaving (chan_unref). */
static void hub_lost(struct pgw_notify_hub *h, const char *why)
{
    if (!h->srv)
        return;
    int nsubs = 0;
    for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next) {
        struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
        if (sub->bridge && pgw_notify_bridge_over_end(sub))
            continue;          /* past the bound already: 54000, as its event said */
        if (sub->ending == NOTIFY_END_NONE && sub_listens(sub)) {
            sub->ending = NOTIFY_END_LOST;
            sub->end_why = why;
            sub->end_listen = false;
            nsubs++;
        }
    }
    char q1[200], q2[200], q3[200];
    pgw_warn("notify_server_lost", "db=%s user=%s channels=%d clients=%d reason=%s "
             "detail=\"the listening clients are disconnected (08006) between transactions: "
             "notifications sent until another server listens are lost\"",
             lq(q1, sizeof(q1), pgw_pool_dbname(h->pool)),
             lq(q2, sizeof(q2), pgw_pool_user(h->pool)), h->nchans, nsubs, lq(q3, sizeof(q3), why));
    hub_drop_server(h);
    hub_echo_end(h, 0);     /* the copies it was to send come from no server */
    hub_bridges_end(h, NULL);   /* their clients are ended (their markers never come) */
    for (int i = 0; i < h->nchans; i++) {
        h->chans[i].failed = h->chans[i].listening = false;   /* the next server tries
                                                                 every LISTEN anew */
        h->chans[i].tries = 0;
    }
    struct notify_req **pp = &h->head, **ap = &h->answered;
    while (*ap)
        ap = &(*ap)->next;
    h->tail = NULL;
    while (*pp) {
        struct notify_req *r = *pp;
        if (!r->s || r->answered) {
            *pp = r->next;
            r->next = NULL;
            if (r->s) {
                *ap = r;
                ap = &r->next;
            } else {
                free(r);
            }
            continue;
        }
        r->sent = r->failed = false;
        h->tail = r;
        pp = &r->next;
    }
    if (nsubs > 0 || h->answered) {
        /* The tick, now (from the loop, not from inside this call). */
        h->lost = nsubs > 0;
        hub_tick_now(h);     /* (a held ReadyForQuery goes there too: hub_unhold) */
    }
}

/* The tick, now (from the loop, not from inside the caller). */
static void hub_tick_now(struct pgw_notify_hub *h)
{
    ev_timer_stop(h->px->loop, &h->tick);
    ev_timer_set(&h->tick, 0., NOTIFY_TICK);
    ev_timer_start(h->px->loop, &h->tick);
}

/* s is ended for NOTIFY_END_LOST: its hub's server lost (or none came
 * for it), or the hub's LISTEN of one of its channels failed: FATAL 08006
 * either way (it reconnects; its transaction committed the LISTEN), the
 * latter with PostgreSQL's error in the message and DETAIL. */
static void lost_close(struct pgw_session *s)
{
    struct pgw_notify_sub *sub = s->notify;
    if (sub->end_listen) {
        char detail[400];
        snprintf(detail, sizeof(detail), NOTIFY_LISTEN_FAILED_DETAIL, sub->end_state,
                 sub->end_why);
        s->close_detail = detail;        /* (read by pgw_session_close only) */
        pgw_session_close(s, NOTIFY_LOST_SQLSTATE, NOTIFY_LISTEN_FAILED_MSG, sub->end_why);
        s->close_detail = NULL;
    } else {
        pgw_session_close(s, NOTIFY_LOST_SQLSTATE, NOTIFY_LOST_MSG, sub->end_why);
    }
}

/* After hub_lost: the answered requests' clients get their ReadyForQuery
 * (and read on), then the listeners between transactions are
 * disconnected. */
static void hub_lost_settle(struct pgw_notify_hub *h)
{
    while (h->answered) {
        struct notify_req *r = h->answered;
        h->answered = r->next;
        struct pgw_session *s = r->s;
        free(r);
        if (s && s->state != PGW_SS_CLOSING)
            client_resume(s);
    }
    if (!h->lost)
        return;
    h->lost = false;
    /* Sessions first, then the closes (each leaves the list). */
    int nsubs = 0;
    for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next)
        nsubs++;
    struct pgw_session **to = nsubs ? calloc((size_t)nsubs, sizeof(*to)) : NULL;
    int n = 0;
    for (struct pgw_list *l = h->subs.next; to && l != &h->subs; l = l->next) {
        struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
        if (sub->ending == NOTIFY_END_LOST && (sub->waiting || deliverable(sub->session)) &&
            sub->session->state != PGW_SS_WAIT_SERVER)
            to[n++] = sub->session;
    }
    /* Short of memory: they are closed at their next transaction's end. */
    for (int i = 0; i < n; i++)
        if (to[i]->state != PGW_SS_CLOSING && to[i]->notify)
            lost_close(to[i]);
    free(to);
}

/* After backlog_over: the clients between transactions it marked are
 * ended once they have read what they were owed. */
static void hub_backlog_settle(struct pgw_notify_hub *h)
{
    h->backlog = false;
    /* Sessions first, then the ends (each leaves the list). */
    int nsubs = 0;
    for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next)
        nsubs++;
    struct pgw_session **to = nsubs ? calloc((size_t)nsubs, sizeof(*to)) : NULL;
    int n = 0;
    for (struct pgw_list *l = h->subs.next; to && l != &h->subs; l = l->next) {
        struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
        if (sub->ending != NOTIFY_END_BACKLOG)
            continue;
        if ((sub->waiting || deliverable(sub->session)) &&
            sub->session->state != PGW_SS_WAIT_SERVER)
            to[n++] = sub->session;
        else
            h->backlog = true;   /* waiting for a server: it may get none (a cancel, an
                                    error) and be idle again with no pgw_notify_flush;
                                    the next tick looks again */
    }
    /* Short of memory (or not between transactions now): at their
     * transaction's end. */
    for (int i = 0; i < n; i++)
        if (to[i]->state != PGW_SS_CLOSING)
            pgw_session_close_after_sent(to[i], NOTIFY_BACKLOG_SQLSTATE, NOTIFY_BACKLOG_MSG,
                                         to[i]->px->cfg->max_notify_backlog);
    free(to);
}

static bool room_for(struct pgw_proxy *px, struct pgw_pool *pool,
                     const struct pgw_notify_hub *self);

/* Between transactions: no server, no partial message toward the client. */
static bool deliverable(const struct pgw_session *s)
{
    return !s->server && !s->pipe_srv &&
           (s->state == PGW_SS_IDLE || s->state == PGW_SS_WAIT_SERVER);
}

/* A reload left the pool no room for the hub's server (room_for): it goes
 * back, and the hub ends.  Notifications can reach its clients no more
 * (nor can the LISTEN statements they prepared, which only the hub
 * knows, run), and a PostgreSQL session stops listening only when it
 * ends: each client
 * gets FATAL 57P01 between transactions -- at once when it holds no
 * server (or waits for its LISTEN, which gets that as its answer), else
 * at its transaction's end (pgw_notify_flush).  A client that reconnects
 * and listens again finds no hub: its LISTEN runs on its own server.  The
 * hub is freed at a tick once they are gone. */
static void hub_end(struct pgw_notify_hub *h)
{
    char q1[200], q2[200];
    int nsubs = 0;
    for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next)
        nsubs++;
    pgw_warn("notify_no_room", "db=%s user=%s channels=%d clients=%d reason=\"a reload left the "
             "pool no room for a listening server\" detail=\"the listening clients are "
             "disconnected (57P01) between transactions\"",
             lq(q1, sizeof(q1), pgw_pool_dbname(h->pool)),
             lq(q2, sizeof(q2), pgw_pool_user(h->pool)), h->nchans, nsubs);
    h->no_room = true;
    if (h->acquiring) {
        pgw_pool_cancel_wait(&h->waiter);
        h->acquiring = false;
    }
    hub_drop_server(h);
    hub_bridges_end(h, NULL);
    /* Sessions first, then the closes (each leaves the list).  Short of
     * memory, they are closed at their next transaction's end. */
    struct pgw_session **to = nsubs ? calloc((size_t)nsubs, sizeof(*to)) : NULL;
    int n = 0;
    for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next) {
        struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
        sub->ending = NOTIFY_END_NO_ROOM;
        if (to && (sub->waiting || deliverable(sub->session)) &&
            sub->session->state != PGW_SS_WAIT_SERVER)
            to[n++] = sub->session;
    }
    for (int i = 0; i < n; i++)
        if (to[i]->state != PGW_SS_CLOSING)
            pgw_session_close(to[i], NOTIFY_NO_ROOM_SQLSTATE, NOTIFY_NO_ROOM_MSG);
    free(to);
    /* Their LISTENs (their clients gone) and the hub's own statements. */
    while (h->head) {
        struct notify_req *r = h->head;
        h->head = r->next;
        if (r->s && r->s->state != PGW_SS_CLOSING)
            pgw_session_close(r->s, NOTIFY_NO_ROOM_SQLSTATE, NOTIFY_NO_ROOM_MSG);
        free(r);
    }
    h->tail = NULL;
}

static void hub_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct pgw_notify_hub *h = w->data;
    if (h->nbridges > 0) {
        ev_tstamp now = pgw_mono_now(h->px->loop);
        bool paused = pgw_pool_paused(h->pool);
        for (struct pgw_list *l = h->subs.next; h->nbridges > 0 && l != &h->subs; l = l->next) {
            struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
            if (sub->bridge)
                pgw_notify_bridge_tick(sub, now, paused);
        }
        hub_bridges_check(h);
    }
    if (h->answered || h->lost)
        hub_lost_settle(h);
    if (h->nheld > 0)
        hub_unhold(h);
    if (h->backlog)
        hub_backlog_settle(h);
    if (hub_maybe_free(h))
        return;
    if (h->no_room)
        return;              /* its clients leave; then it goes */
    if (!room_for(h->px, h->pool, h)) {
        hub_end(h);
        return;
    }
    if (h->srv && !hub_has_work(h)) {
        /* No channel left, while its clients stay (keeping a prepared
         * LISTEN or UNLISTEN, as asyncpg after remove_listener): the
         * server goes back; the next LISTEN takes one again. */
        char q1[200], q2[200];
        pgw_debug("notify_server", "db=%s user=%s channels=0 reason=\"given back\"",
                  lq(q1, sizeof(q1), pgw_pool_dbname(h->pool)),
                  lq(q2, sizeof(q2), pgw_pool_user(h->pool)));
        hub_drop_server(h);
        return;
    }
    if (h->srv && (pgw_server_close_needed(h->srv) || pgw_pool_paused(h->pool)))
        hub_lost(h, pgw_pool_paused(h->pool) ? "pool paused" : "server marked for closing");
    if (!h->srv && !h->acquiring)
        hub_kick(h);
}

/* ---- for notify_bridge.c ---- */

void pgw_notify_hub_copy(struct pgw_session *s, const uint8_t *msg, uint32_t total)
{
    struct pgw_notify_sub *sub = s->notify;
    const char *chan = msg_chan(msg);
    bool maybe = false;
    if (sub_find(sub, chan) < 0 && !(maybe = maybe_for(sub, chan)))
        return;
    bool ascii = pgw_pgenc_ascii(msg + PGW_MSG_HDR + 4, total - PGW_MSG_HDR - 4);
    struct converted conv = { 0 };
    deliver_once(s, msg, total, ascii ? NULL : client_conv(s), &conv, maybe);
    free(conv.msg);
}

void pgw_notify_deliver_own(struct pgw_session *s, const uint8_t *msg, uint32_t total)
{
    if (sub_find(s->notify, msg_chan(msg)) < 0)
        return;                          /* it left the channel since */
    bool ascii = pgw_pgenc_ascii(msg + PGW_MSG_HDR + 4, total - PGW_MSG_HDR - 4);
    struct converted conv = { 0 };
    deliver(s, msg, total, ascii ? NULL : client_conv(s), &conv);
    free(conv.msg);
}

void pgw_notify_sub_lost(struct pgw_notify_sub *sub, const char *why)
{
    if (sub->ending != NOTIFY_END_NONE)
        return;
    snprintf(sub->end_msg, sizeof(sub->end_msg), "%s", why);
    sub->ending = NOTIFY_END_LOST;
    sub->end_why = sub->end_msg;
    sub->end_listen = false;
    sub->hub->lost = true;
    hub_tick_now(sub->hub);              /* (closed from the tick, not from here) */
}

bool pgw_notify_hub_listens(const struct pgw_notify_sub *sub, const char *chan)
{
    return hub_listens(sub->hub, chan);
}

const char *pgw_notify_hub_marker(struct pgw_notify_hub *h, bool want)
{
    if (h->marker_ok)
        return h->marker;
    if (want && h->srv && !h->marker_queued) {
        struct notify_req *r = marker_req(h);
        if (r) {
            req_push(h, r);
            hub_kick(h);
        }                                /* (short of memory: the bridges' time runs out) */
    }
    /* (No server: hub_got_server asks for it while bridges wait.) */
    return NULL;
}

bool pgw_notify_sub_listens_on(const struct pgw_notify_sub *sub, const char *chan)
{
    return sub_find(sub, chan) >= 0;
}

int pgw_notify_hub_bridges(struct pgw_notify_hub *h, int delta)
{
    h->nbridges += delta;
    return h->nbridges;
}

struct pgw_pool *pgw_notify_hub_pool(const struct pgw_notify_hub *h)
{
    return h->pool;
}

void pgw_notify_backlog_dropped(struct pgw_session *s)
{
    s->px->total_notifications_dropped++;
    if (s->notify->ending == NOTIFY_END_NONE)
        backlog_warn(s, false);
}

void pgw_notify_backlog_end(struct pgw_session *s)
{
    backlog_end(s);
}

const char *pgw_notify_msg_chan(const uint8_t *msg)
{
    return msg_chan(msg);
}

uint64_t pgw_notify_msg_hash(struct pgw_proxy *px, const uint8_t *msg, uint32_t total)
{
    return pgw_hash_bytes(msg + 1, total - 1, pgw_proxy_hash_seed(px));
}

/* ---- sessions ---- */

struct pgw_notify_sub *pgw_notify_sub_get(struct pgw_session *s)
{
    struct pgw_notify_hub *h = hub_get(s->px, s->pool);
    if (!h)
        return NULL;
    if (s->notify)
        return s->notify;
    struct pgw_notify_sub *sub = calloc(1, sizeof(*sub));
    if (!sub)
        return NULL;
    sub->hub = h;
    sub->session = s;
    pgw_wbuf_init(&sub->pending);
    pgw_list_append(&h->subs, &sub->node);
    s->notify = sub;
    return sub;
}

void pgw_notify_unlisten(struct pgw_notify_sub *sub, enum pgw_listen_kind kind, const char *chan)
{
    if (kind == PGW_UNLISTEN)
        sub_remove(sub, chan);
    else
        while (sub->nchans > 0)
            sub_remove(sub, sub->chans[sub->nchans - 1]);
}

struct notify_req *pgw_notify_listen_req(const char *chan, int closes, const char *stmt)
{
    struct notify_req *r = req_own("LISTEN", chan);
    if (r) {
        r->closes = closes;
        r->close_stmt = stmt != NULL;
        if (stmt)
            snprintf(r->stmt, sizeof(r->stmt), "%s", stmt);
    }
    return r;
}

bool pgw_notify_sub_idle(const struct pgw_notify_sub *sub)
{
    return sub_empty(sub) && !sub->waiting;
}

void pgw_notify_closes(struct pgw_notify_sub *sub, struct pgw_wbuf *b, int n, const char *stmt)
{
    for (int i = 0; i < n; i++)
        pgw_wbuf_msg_end(b, pgw_wbuf_msg_begin(b, PGW_BE_CLOSE_COMPLETE));
    if (stmt)
        pgw_notify_vstmt_forget(sub, stmt);   /* the sub goes at the ReadyForQuery if
                                                 that was all */
}

void pgw_notify_ask(struct pgw_session *s, struct notify_req *r)
{
    struct pgw_notify_hub *h = s->notify->hub;
    r->s = s;
    s->notify->waiting = true;
    s->notify->wait_since = pgw_mono_now(s->px->loop);
    s->wait_notified = false;           /* query_wait_notify: once per wait */
    req_push(h, r);
    struct pgw_session *was = h->asking;   /* another's, answered from a kick */
    h->asking = s;
    hub_kick(h);          /* may answer at once (a failed acquire) */
    h->asking = was;
    /* Waiting now: query_timeout, not client_idle_timeout, runs (its
     * deadline counts the wait for the hub's server: session.c). */
    if (s->state != PGW_SS_CLOSING && s->notify && s->notify->waiting)
        pgw_session_arm_timer(s);
}

bool pgw_notify_may_be_listen(const char *sql, size_t n)
{
    static const char *const kw[] = { "LISTEN", "UNLISTEN" };
    return pgw_sql_may_start(sql, n, kw, 2);
}

/* The hub's server is one of the pool's: a pool of one server keeps it
 * for the clients' queries (LISTEN runs there, as before).  It counts in
 * max_db_connections and max_user_connections too, with the listening
 * servers of the other pools under the same cap: for a new hub (self
 * NULL) every one; for self, those older than it (the first to listen
 * keeps its place when a reload lowers a cap). */
static bool room_for(struct pgw_proxy *px, struct pgw_pool *pool,
                     const struct pgw_notify_hub *self)
{
    struct pgw_pool_stats st;
    pgw_pool_get_stats(pool, &st);
    const struct pgw_config *cfg = px->cfg;
    /* reserve_pool_timeout 0 turns the reserve off (pool.c) */
    int reserve = cfg->reserve_pool_timeout > 0 ? st.reserve_pool_size : 0;
    if ((long long)st.pool_size + reserve < 2)
        return false;
    const char *db = pgw_pool_dbname(pool), *su = pgw_pool_server_user(pool);
    int capdb = pgw_conf_max_db_connections(cfg, pgw_conf_find_db(cfg, db));
    int capuser = pgw_conf_max_user_connections(cfg, pgw_conf_find_user(cfg, su));
    int leftdb = capdb, leftuser = capuser;      /* 0 = no cap */
    for (struct pgw_list *n = px->notify_hubs.next; n != &px->notify_hubs; n = n->next) {
        const struct pgw_notify_hub *h = pgw_container_of(n, struct pgw_notify_hub, node);
        if (h == self)
            break;
        if (h->no_room)
            continue;                            /* holds no server */
        leftdb -= strcmp(pgw_pool_dbname(h->pool), db) == 0;
        leftuser -= strcmp(pgw_pool_server_user(h->pool), su) == 0;
    }
    return (capdb <= 0 || leftdb >= 2) && (capuser <= 0 || leftuser >= 2);
}

/* May s's pool listen through a hub (a new one, or the one it has)?  An
 * ended hub's pool is as a pool of one until the hub goes. */
bool pgw_notify_room_for_hub(const struct pgw_session *s)
{
    const struct pgw_notify_hub *h = hub_find(s->px, s->pool);
    return h ? !h->no_room && room_for(s->px, s->pool, h) : room_for(s->px, s->pool, NULL);
}

static bool may_be_deallocate(const char *sql, size_t n)
{
    static const char *const kw[] = { "DEALLOCATE" };
    return pgw_sql_may_start(sql, n, kw, 1);
}

/* The answer to a DEALLOCATE of a kept statement name, the name read
 * as full (PostgreSQL's scanner sends its NOTICE 42622 when it cuts the
 * name; freed here), then ReadyForQuery status: 0, or -1 when s was
 * closed. */
int pgw_notify_deallocated(struct pgw_session *s, struct pgw_ident_full *full,
                           const char *name, char status)
{
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_notify_truncated(s, &b, full, name);
    pgw_ident_full_free(full);
    pgw_wire_command_complete(&b, "DEALLOCATE");
    pgw_wire_ready(&b, status);
    if (status == 'I')
        pgw_metrics_xact_end(s);         /* as PostgreSQL's 'I' would count */
    bool ok = !b.failed && (s->sbuf || (s->sbuf = pgw_iobuf_get(s->px))) &&
              pgw_iobuf_reserve(s->px, &s->sbuf, s->sbuf->len - s->sbuf->sent + (uint32_t)b.len) &&
              pgw_session_send(s, &b);
    pgw_wbuf_deinit(&b);
    if (!ok) {
        pgw_session_close(s, "53200", "out of memory for a reply to the client");
        return -1;
    }
    return s->state == PGW_SS_CLOSING ? -1 : 0;
}

/* A whole Query sql (len bytes, then its NUL; total: the message's) of a
 * client with prepared LISTENs or UNLISTENs that starts with DEALLOCATE:
 * "DEALLOCATE [PREPARE] name" of one of them forgets it, as PostgreSQL
 * would (no server has it: the server would answer 26000); any other
 * DEALLOCATE goes to the server (0). */
static int deallocate_query(struct pgw_session *s, const char *sql, size_t len, uint32_t total)
{
    char name[PGW_CHANNEL_UTF8_MAX + 1], key[NOTIFY_STMT_NAME_MAX + 1];
    struct pgw_ident_full full = { .cut = false };
    struct pgw_notify_sub *sub = s->notify;
    if (strlen(sql) != len || !pgw_notify_dealloc_key(s, sql, len, key, name, &full))
        return 0;
    if (!pgw_notify_vstmt_forget(sub, key)) {
        pgw_ident_full_free(&full);
        return 0;
    }
    s->query_count++;
    pgw_iobuf_cut(s->cbuf, s->cbuf->parsed, total);
    if (pgw_notify_deallocated(s, &full, name, 'I') < 0)
        return -1;
    if (sub_empty(sub) && !sub->waiting)
        pgw_notify_session_gone(s);     /* that was all it kept */
    return 1;
}

int pgw_notify_tx_deallocate(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                              uint32_t total, bool quiet)
{
    struct pgw_notify_sub *sub = s->notify;
    if (!sub || sub->nvst == 0 || total > PGW_MSG_HDR + PGW_NOTIFY_QUERY_MAX)
        return 0;
    const char *sql = (const char *)msg + PGW_MSG_HDR;
    if (!may_be_deallocate(sql, (avail < total ? avail : total) - PGW_MSG_HDR))
        return 0;
    if (avail < total)
        return PGW_NOTIFY_MORE;          /* read it whole first */
    size_t len = total - PGW_MSG_HDR;
    char name[PGW_CHANNEL_UTF8_MAX + 1], key[NOTIFY_STMT_NAME_MAX + 1];
    struct pgw_ident_full full = { .cut = false };
    if (len == 0 || sql[len - 1] != '\0' || strlen(sql) != len - 1 ||
        !pgw_notify_dealloc_key(s, sql, len - 1, key, name, &full))
        return 0;
    bool kept = pgw_notify_vstmt_has(sub, key);
    char status = s->track.tx_status;
    if (!kept || !quiet || status == 'E') {
        pgw_ident_full_free(&full);
        /* !quiet: answered in its turn; 'E': refused in a failed
         * transaction (25P02), by the server */
        return kept && !quiet ? PGW_NOTIFY_MORE : 0;
    }
    pgw_notify_vstmt_forget(sub, key);
    s->query_count++;
    pgw_iobuf_cut(s->cbuf, s->cbuf->parsed, total);
    if (pgw_notify_deallocated(s, &full, name, status) < 0)
        return -1;
    if (sub_empty(sub) && !sub->waiting)
        pgw_notify_session_gone(s);     /* that was all it kept */
    return 1;
}

int pgw_notify_query(struct pgw_session *s)
{
    struct pgw_iobuf *b = s->cbuf;
    if (s->mode == PGW_POOL_SESSION || !s->pool || b->len - b->parsed < PGW_MSG_HDR)
        return 0;
    const uint8_t *p = b->data + b->parsed;
    if ((char)p[0] == PGW_FE_PARSE || (char)p[0] == PGW_FE_BIND ||
        (char)p[0] == PGW_FE_DESCRIBE ||
        ((char)p[0] == PGW_FE_EXECUTE && pgw_notify_portal_held(s)))
        return pgw_notify_ext_batch(s);
    if ((char)p[0] != PGW_FE_QUERY)
        return 0;
    pgw_notify_unnamed_gone(s);         /* answered here or by the server */
    uint32_t total = pgw_get_u32(p + 1) + 1;
    if (total > PGW_MSG_HDR + PGW_NOTIFY_QUERY_MAX)
        return 0;
    size_t have = b->len - b->parsed - PGW_MSG_HDR;
    bool dealloc = s->notify && s->notify->nvst > 0 &&
                   may_be_deallocate((const char *)p + PGW_MSG_HDR, have);
    if (b->len - b->parsed < total)   /* read it whole first, if it may be one */
        return have > 0 && (dealloc || pgw_notify_may_be_listen((const char *)p + PGW_MSG_HDR,
                                                                have))
                   ? PGW_NOTIFY_MORE : 0;
    const char *sql = (const char *)p + PGW_MSG_HDR;
    size_t len = total - PGW_MSG_HDR;
    if (len == 0 || sql[len - 1] != '\0')
        return 0;                       /* the server reports it */
    if (dealloc)
        return deallocate_query(s, sql, len - 1, total);
    char chan[PGW_CHANNEL_UTF8_MAX + 1];
    bool converted;
    struct pgw_ident_full full = { .cut = false };
    enum pgw_listen_kind kind = pgw_notify_parse(s, sql, len - 1, chan, &converted, &full);
    if (kind == PGW_LISTEN_NONE || strlen(sql) != len - 1 ||
        (kind == PGW_LISTEN && !pgw_notify_room_for_hub(s))) {
        pgw_ident_full_free(&full);
        return 0;
    }
    s->query_count++;
    /* A name PostgreSQL cuts: its NOTICE first, as its scanner sends it. */
    struct pgw_wbuf notice;
    pgw_wbuf_init(&notice);
    pgw_notify_truncated(s, &notice, &full, chan);
    bool cut = full.cut;
    pgw_ident_full_free(&full);
    if (kind != PGW_LISTEN) {
        pgw_iobuf_cut(b, b->parsed, total);
        struct pgw_notify_sub *sub = s->notify;
        if (sub)
            pgw_notify_unlisten(sub, kind, chan);
        pgw_wire_command_complete(&notice, "UNLISTEN");
        pgw_wire_ready(&notice, 'I');
        pgw_metrics_xact_end(s);         /* as PostgreSQL's 'I' would count */
        pgw_session_send(s, &notice);
        pgw_wbuf_deinit(&notice);
        if (s->state == PGW_SS_CLOSING)
            return -1;
        if (sub && sub_empty(sub))
            pgw_notify_session_gone(s);  /* listens no more */
        return 1;
    }
    struct pgw_notify_sub *sub = pgw_notify_sub_get(s);
    /* The client's text as it wrote it; in the hub's form once converted,
     * or cut (its NOTICE is pgwharf's, in the client's encoding). */
    struct notify_req *r = !sub ? NULL : converted || cut ? pgw_notify_listen_req(chan, 0, NULL)
                                                          : req_new(s, sql, chan, true);
    if (!r || notice.failed || (notice.len > 0 && !pgw_notify_send(s, notice.data, notice.len))) {
        pgw_wbuf_deinit(&notice);
        free(r);
        pgw_session_close(s, "53200", "out of memory");
        return -1;
    }
    pgw_wbuf_deinit(&notice);
    pgw_iobuf_cut(b, b->parsed, total);
    pgw_notify_ask(s, r);
    return s->state == PGW_SS_CLOSING ? -1 : 1;
}

bool pgw_notify_portal_held(const struct pgw_session *s)
{
    return s->notify && s->notify->has_held;
}

void pgw_notify_portal_drop(struct pgw_session *s)
{
    if (s->notify)
        s->notify->has_held = false;
}

bool pgw_notify_waiting(const struct pgw_session *s)
{
    return s->notify && s->notify->waiting;
}

bool pgw_notify_rfq_held(const struct pgw_session *s)
{
    return s->notify && s->notify->rfq_held;
}

/* The link to s's lone LISTEN/UNLISTEN while it waits unsent in its hub's
 * queue (*prev: the request before it, NULL at the head); NULL when there
 * is none (answered, or sent to the hub's server). */
static struct notify_req **unsent_req(const struct pgw_session *s, struct notify_req **prev)
{
    *prev = NULL;
    if (!pgw_notify_waiting(s))
        return NULL;
    struct notify_req **pp = &s->notify->hub->head;
    while (*pp && ((*pp)->s != s || (*pp)->sent)) {
        *prev = *pp;
        pp = &(*pp)->next;
    }
    return *pp ? pp : NULL;
}

bool pgw_notify_waits_for_server(const struct pgw_session *s, ev_tstamp *since)
{
    struct notify_req *prev;
    if (s->notify && s->notify->rfq_held && !s->notify->hub->srv) {
        *since = s->notify->held_since;    /* its transaction's LISTEN waits */
        return true;
    }
    if (!unsent_req(s, &prev))
        return false;
    *since = s->notify->wait_since;
    return true;
}

/* s's request sent to the hub's server and not answered yet, or NULL. */
static struct notify_req *sent_req(const struct pgw_session *s)
{
    if (!pgw_notify_waiting(s))
        return NULL;
    for (struct notify_req *r = s->notify->hub->head; r; r = r->next)
        if (r->s == s && r->sent && !r->answered)
            return r;
    return NULL;
}

ev_tstamp pgw_notify_sent_at(const struct pgw_session *s)
{
    const struct notify_req *r = sent_req(s);
    return r ? r->sent_at : 0;
}

void pgw_notify_query_timeout(struct pgw_session *s)
{
    if (sent_req(s))
        hub_lost(s->notify->hub, "query_timeout: the listening server did not answer");
}

bool pgw_notify_cancel_waiting(struct pgw_session *s)
{
    struct pgw_notify_sub *sub = s->notify;
    /* (A client running a query on its server -- one sent behind the
     * COMMIT -- has the cancel forwarded.) */
    if (sub && sub->rfq_held && !sub->hub->srv && !sub->hold_failed && !s->server &&
        !s->pipe_srv) {
        hold_fail(sub, "57014", "canceling statement due to user request");
        sub->hold_canceled = true;
        return true;
    }
    struct notify_req *prev, **pp = unsent_req(s, &prev);
    if (!pp)
        return false;                /* sent: its answer comes soon */
    struct pgw_notify_hub *h = s->notify->hub;
    struct notify_req *r = *pp;
    *pp = r->next;
    if (h->tail == r)
        h->tail = prev;
    free(r);
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_error(&b, "ERROR", "57014", "canceling statement due to user request");
    pgw_session_send(s, &b);
    pgw_wbuf_deinit(&b);
    if (s->state != PGW_SS_CLOSING)
        client_resume(s);
    return true;
}

/* One notification past max_notify_backlog for s (or no memory for it):
 * it does not reach s, nor does any after it, and s is ended with FATAL
 * 54000 between transactions, once it has read what it was owed before
 * (pgw_session_close_after_sent): at the next tick when it is between
 * transactions, else at its transaction's end (pgw_notify_flush).  Its
 * subscriptions go then; the channels' other listeners go on.  A client
 * whose hub was lost (or ended) is ended for that already. */
static void backlog_over(struct pgw_session *s)
{
    s->px->total_notifications_dropped++;
    backlog_end(s);
}

/* The event for a client past max_notify_backlog, once a client: when the
 * first is dropped, held (a mark, lost_note: its transaction's end
 * decides whether it ends the client) or not.  When that end discards
 * the held ones, the next drop is logged again (pgw_notify_flush). */
static void backlog_warn(struct pgw_session *s, bool held)
{
    struct pgw_notify_sub *sub = s->notify;
    if (sub->backlog_warned)
        return;
    sub->backlog_warned = true;
    sub->warned_held = held;
    char qd[200], qu[200];
    pgw_warn("notification_dropped", "client=%s db=%s user=%s reason=\"more than "
             "max_notify_backlog (%d bytes) of notifications wait for the client (its "
             "transaction to end, or to read them)\" detail=\"%s\"",
             s->addr_text, lq(qd, sizeof(qd), s->database), lq(qu, sizeof(qu), s->user),
             s->px->cfg->max_notify_backlog,
             held ? "held for the end of its transaction: the client is disconnected (54000) "
                    "then, once it has read those before, unless that end discards the "
                    "dropped ones (a ROLLBACK of their LISTEN, a committed UNLISTEN)"
                  : "the client is disconnected (54000) once it has read those");
}

/* backlog_over, the dropped one counted already. */
static void backlog_end(struct pgw_session *s)
{
    struct pgw_notify_sub *sub = s->notify;
    if (sub->ending != NOTIFY_END_NONE)
        return;
    sub->ending = NOTIFY_END_BACKLOG;
    backlog_warn(s, false);
    if (deliverable(s)) {
        /* The tick, now (not from inside the hub's read). */
        struct pgw_notify_hub *h = sub->hub;
        h->backlog = true;
        ev_timer_stop(h->px->loop, &h->tick);
        ev_timer_set(&h->tick, 0., NOTIFY_TICK);
        ev_timer_start(h->px->loop, &h->tick);
    }
}

/* A notification for s after backlog_over: not its. */
static bool backlog_ended(struct pgw_session *s)
{
    if (s->notify->ending != NOTIFY_END_BACKLOG)
        return false;
    s->px->total_notifications_dropped++;
    return true;
}

/* msg, to be held for s, is past held_max: dropped, with a mark
 * of type (HELD_LOST, HELD_LOST_MAYBE) where it was, and the end of s's
 * transaction decides (lost_cut) whether it missed one of its own: it may
 * not be (its transaction's LISTEN of the channel rolls back, an UNLISTEN
 * of it commits), and one PostgreSQL would not have sent it does not count.
 * One mark a channel and type, which stands for those after it too (a
 * sweep that takes it takes them), so marks are few and small. */
static void lost_note(struct pgw_session *s, const uint8_t *msg, uint8_t type)
{
    struct pgw_notify_sub *sub = s->notify;
    struct pgw_wbuf *p = &sub->pending;
    const char *chan = msg_chan(msg);
    /* Dropped now, whatever the end decides (counted, and the event logged
     * at the first: a transaction that never ends, a client that goes
     * before its end, still shows; review of 42a3027). */
    s->px->total_notifications_dropped++;
    if (sub->ending == NOTIFY_END_NONE)
        backlog_warn(s, true);
    /* From the first mark on (none before it): the whole of pending for
     * every notification past the bound made a client stuck in its
     * transaction cost the loop O(held) each (review). */
    for (size_t off = sub->lost_from ? sub->lost_from - 1 : p->len; off + PGW_MSG_HDR <= p->len;
         off += 1 + (size_t)pgw_get_u32(p->data + off + 1)) {
        if (p->data[off] == type && strcmp(msg_chan(p->data + off), chan) == 0)
            return;                              /* it stands for this one too */
    }
    size_t cn = strlen(chan);
    uint8_t m[PGW_MSG_HDR + 4 + PGW_CHANNEL_UTF8_MAX + 2];
    size_t n = PGW_MSG_HDR + 4 + cn + 2, at = p->len;
    if (cn <= PGW_CHANNEL_UTF8_MAX) {
        m[0] = type;
        pgw_put_u32(m + 1, (uint32_t)(n - 1));
        pgw_put_u32(m + PGW_MSG_HDR, 0);          /* no process ID */
        memcpy(m + PGW_MSG_HDR + 4, chan, cn + 1);
        m[n - 1] = '\0';                          /* no payload */
        pgw_wbuf_append(p, m, n);
    }
    if (p->len != at + n) {
        backlog_end(s);                           /* no memory: as before */
        return;
    }
    if (!sub->lost_from)
        sub->lost_from = at + 1;
    sub->nmaybe += type == HELD_LOST_MAYBE;
}

/* The end of the client's transaction decided what is held for it: a
 * mark left (lost_note) is of notifications of its that were dropped.  It
 * gets those held before the first, then FATAL 54000 (backlog_end). */
static void lost_cut(struct pgw_session *s, struct pgw_notify_sub *sub)
{
    struct pgw_wbuf *p = &sub->pending;
    size_t cut = p->len, sum = 0, maybe = 0;
    uint64_t lost = 0;
    for (size_t off = 0; off + PGW_MSG_HDR <= p->len;) {
        uint8_t t = p->data[off];
        size_t n = 1 + (size_t)pgw_get_u32(p->data + off + 1);
        bool mark = t == HELD_LOST || t == HELD_LOST_MAYBE;
        /* ... or the first past the bound: up to held_max was held, for
         * what the end would throw away (deliver). */
        if (cut == p->len && (mark || sum + n > backlog_max(s)))
            cut = off;
        if (cut > off) {
            sum += n;
            maybe += t == HELD_MAYBE ? n : 0;
        } else if (!mark) {
            lost++;                        /* held after it: dropped now */
        }
        off += n;
    }
    if (cut == p->len)
        return;
    sub->warned_held = false;           /* a drop kept: the event was for it */
    p->len = cut;
    sub->lost_from = 0;
    sub->maybe_bytes = maybe;
    s->px->total_notifications_dropped += lost;   /* the marks' were, by lost_note */
    backlog_end(s);
}

/* The hub's copy msg for s (as deliver_once), out now when s is between
 * transactions; else held as it is, and converted when it goes out
 * (held_convert): PostgreSQL converts a notification to the
 * client_encoding in force when it sends it. */
static void deliver(struct pgw_session *s, const uint8_t *msg, uint32_t total,
                    const struct pgw_pgenc_conv *c, struct converted *conv)
{
    struct pgw_notify_sub *sub = s->notify;
    if (backlog_ended(s))
        return;
    const uint8_t *utf8 = msg;
    uint32_t utf8_len = total;
    bool now = deliverable(s) && sub->pending.len == 0;
    if (now && c) {
        if (!convert_notification(conv, c, c->to_client, msg, total)) {
            s->px->total_notifications_dropped++;
            not_representable(s, c->name);
            return;
        }
        msg = conv->msg;
        total = conv->len;
    }
    /* Held: up to held_max, so that the copies its transaction's end
     * throws away do not push out one of its own, which PostgreSQL sends:
     * those a ROLLBACK of a LISTEN throws away (maybe_add holds them only
     * while they fit the bound among themselves, so the client's own fit
     * beside them; review of 42a3027), and those of a channel a COMMIT
     * UNLISTENs (the copies of it, its own when they came, filled the
     * bound, and one of another channel behind them was dropped: the
     * COMMIT that threw them away ended the client, session 48's gap).
     * The end cuts what goes past the bound then (lost_cut). */
    size_t held = now ? unsent(s) : sub->pending.len;
    if (now && held > 0 && held + total > backlog_max(s)) {
        /* What one read of the hub's server delivered waits for the end
         * of the loop iteration (io_batch): a read can hold more than the
         * bound for a client that reads at once.  Written before it
         * counts as behind -- a write only here, once a bound's worth. */
        pgw_session_flush_client(s);
        if (s->state == PGW_SS_CLOSING || s->notify != sub)
            return;                       /* the write failed: s is closed */
        if (!deliverable(s) || sub->pending.len > 0) {
            deliver(s, utf8, utf8_len, c, conv);   /* (it read its next request): held */
            return;
        }
        held = unsent(s);
    }
    if (now) {
        if (held + total <= backlog_max(s) && pgw_notify_send(s, msg, total))
            s->px->total_notifications++;
        else
            backlog_over(s);
        return;
    }
    if (held + total > held_max(s)) {
        lost_note(s, msg, HELD_LOST);      /* the end of its transaction decides */
        return;
    }
    pgw_wbuf_append(&sub->pending, msg, total);
}

/* The held notifications (in UTF-8, as the hub got them) in s's
 * client_encoding now; one the encoding lacks a character of goes, and so
 * does one past the 1 MB once converted (GB18030 writes some characters
 * in more bytes than UTF-8). */
static void held_convert(struct pgw_session *s, struct pgw_notify_sub *sub)
{
    const struct pgw_pgenc_conv *c = client_conv(s);
    struct pgw_wbuf *p = &sub->pending;
    bool ascii = true;
    for (size_t off = 0; c && ascii && off + PGW_MSG_HDR <= p->len;
         off += 1 + (size_t)pgw_get_u32(p->data + off + 1))
        ascii = pgw_pgenc_ascii(p->data + off + PGW_MSG_HDR + 4,
                                pgw_get_u32(p->data + off + 1) - 4 - 4);   /* past the pid */
    if (ascii)
        return;
    struct pgw_wbuf out;
    pgw_wbuf_init(&out);
    struct converted conv = { 0 };
    bool over = false;
    for (size_t off = 0; off + PGW_MSG_HDR <= p->len;) {
        const uint8_t *m = p->data + off;
        uint32_t n = 1 + pgw_get_u32(m + 1);
        off += n;
        conv.conv = NULL;                        /* another message */
        if (!pgw_pgenc_ascii(m + PGW_MSG_HDR + 4, n - PGW_MSG_HDR - 4)) {
            if (!convert_notification(&conv, c, c->to_client, m, n)) {
                s->px->total_notifications_dropped++;
                not_representable(s, c->name);
                continue;
            }
            m = conv.msg;
            n = conv.len;
        }
        /* What is held is the client's (lost_cut left those before the
         * first mark; nothing was held after backlog_over): only one past
         * the bound once converted, and those after it, are not.  Its
         * ending already set (lost_cut just now) dropped them all for a
         * client whose encoding is not UTF-8 (review). */
        if (over || out.len + n > backlog_max(s)) {
            over = true;
            backlog_over(s);     /* this one and those after it: not the client's */
        } else {
            pgw_wbuf_append(&out, m, n);
        }
    }
    free(conv.msg);
    out.failed |= p->failed;
    pgw_wbuf_deinit(p);
    *p = out;
}

/* Notifications held during the client's transaction, out now. */
static void pending_flush(struct pgw_session *s, struct pgw_notify_sub *sub)
{
    if (sub->nmaybe > 0)
        maybe_settle(sub);       /* none when nothing is noted (tx_settle_to) */
    lost_cut(s, sub);
    if (!sub->pending.failed)
        held_convert(s, sub);
    if (!sub->pending.failed && sub->pending.len > 0) {   /* (all may be dropped
                                                              converting) */
        /* Count the messages: each is 'A', length, body. */
        uint64_t n = 0;
        for (size_t off = 0; off + PGW_MSG_HDR <= sub->pending.len;
             off += 1 + pgw_get_u32(sub->pending.data + off + 1)) {
            sub->pending.data[off] = PGW_BE_NOTIFY;      /* HELD_OWN too */
            n++;
        }
        if (pgw_notify_send(s, sub->pending.data, sub->pending.len))
            s->px->total_notifications += n;
        else
            s->px->total_notifications_dropped += n;
        if (s->notify != sub)
            return;      /* the write failed: s is closed, sub freed with it */
    }
    held_clear(sub);
}

/* Nothing held for the client; a burst's memory goes back. */
static void held_clear(struct pgw_notify_sub *sub)
{
    if (sub->pending.cap > 65536) {
        pgw_wbuf_deinit(&sub->pending);
        pgw_wbuf_init(&sub->pending);
    }
    pgw_wbuf_reset(&sub->pending);
    sub->pending.failed = false;
    sub->nmaybe = 0;
    sub->maybe_bytes = 0;
    sub->lost_from = 0;
}

/* The messages held for the client that keep(sub, message) keeps (it may
 * mark one the client's), in their order. */
static void held_sweep(struct pgw_notify_sub *sub, held_keep_fn keep)
{
    struct pgw_wbuf *p = &sub->pending;
    size_t kept = 0;
    int marks = 0;
    sub->lost_from = 0;
    sub->maybe_bytes = 0;
    for (size_t off = 0; off + PGW_MSG_HDR <= p->len;) {
        size_t n = 1 + (size_t)pgw_get_u32(p->data + off + 1);
        if (keep(sub, p->data + off)) {
            memmove(p->data + kept, p->data + off, n);
            marks += p->data[kept] == HELD_MAYBE || p->data[kept] == HELD_LOST_MAYBE;
            sub->maybe_bytes += p->data[kept] == HELD_MAYBE ? n : 0;
            if (!sub->lost_from && (p->data[kept] == HELD_LOST || p->data[kept] == HELD_LOST_MAYBE))
                sub->lost_from = kept + 1;
            kept += n;
        }
        off += n;
    }
    p->len = kept;
    sub->nmaybe = marks;
    if (kept == 0 && !p->failed)
        held_clear(sub);
}

/* ---- the client's own server's notifications ----
 *
 * A LISTEN that ran on the client's server (inside a transaction) makes
 * that server listen too, from its COMMIT on, while the client still
 * holds it: up to the COMMIT's ReadyForQuery, or to the end of what the
 * client sent behind it.  The relay passes on what it sends meanwhile
 * (pgw_notify_server_notification), and the hub, which listens on the
 * channel since the LISTEN was noted, has each of those too.  PostgreSQL
 * delivers a notification once to each listening session, so the client
 * gets one copy:
 *   - a channel the client listened on through the hub before: the hub's
 *     (it reached the client, or waits for the end of its transaction);
 *     the server's is dropped;
 *   - a channel taken over by this transaction (sub->fresh, or still
 *     noted): the copy that came first, where it came; the server's
 *     marks where the hub's take over (the server listens only from its
 *     COMMIT on).  The hub's copy, when already waiting in sub->pending,
 *     stays there and the server's is dropped; else the server's is the
 *     client's, and the hub's is noted (sub->echo) and dropped when it
 *     comes.  Both streams come in the order of PostgreSQL's queue.
 * While anything is held for the client, a copy of its server's that is
 * the client's waits behind it in sub->pending (in UTF-8, as the rest;
 * one of a channel not the hub's marked HELD_OWN, which an UNLISTEN
 * committed with the transaction leaves there), and all goes out in
 * order at the end of the transaction: PostgreSQL sends what it reads
 * from its queue in the queue's order, and what was held was committed
 * before (a listener of a that runs BEGIN; LISTEN b; NOTIFY b; COMMIT
 * while a1 is committed gets a1, then b).  Passed at once, it went out
 * before them.
 * A copy the hub never sends (its own LISTEN ran after the server's
 * COMMIT) would be waited for without end, and a later identical one
 * (same sender, channel and payload) taken for it: once the client is
 * between transactions, an empty Query goes to the hub's server behind
 * what it was asked (echo_seal), and by its ReadyForQuery the server has
 * sent every notification committed before it arrived; the copies still
 * noted then are forgotten (hub_echo_end). */

#define NOTIFY_ECHO_MAX 256

static bool fresh_has(const struct pgw_notify_sub *sub, const char *chan)
{
    for (int i = 0; i < sub->nfresh; i++)
        if (strcmp(sub->fresh[i], chan) == 0)
            return true;
    return false;
}

static void fresh_add(struct pgw_notify_sub *sub, const char *chan)
{
    if (fresh_has(sub, chan))
        return;
    void *grown = pgw_array_grow(sub->fresh, sizeof(sub->fresh[0]), (size_t)sub->nfresh,
                                 &sub->capfresh, 2);
    if (!grown)
        return;        /* short of memory: its server's copies are dropped */
    sub->fresh = grown;
    snprintf(sub->fresh[sub->nfresh++], sizeof(sub->fresh[0]), "%s", chan);
}

/* A LISTEN of chan is noted in the client's transaction. */
static bool tx_holds(const struct pgw_notify_sub *sub, const char *chan)
{
    for (int i = 0; i < sub->ntx; i++)
        if (sub->tx[i].kind == PGW_LISTEN && strcmp(sub->tx[i].chan, chan) == 0)
            return true;
    return false;
}

/* The same message among those held for the client (the hub's copy,
 * the client's). */
static bool pending_has(const struct pgw_notify_sub *sub, const uint8_t *msg, uint32_t total)
{
    const struct pgw_wbuf *p = &sub->pending;
    for (size_t off = 0; off + PGW_MSG_HDR <= p->len;) {
        size_t n = 1 + (size_t)pgw_get_u32(p->data + off + 1);
        if (n == total && memcmp(p->data + off, msg, total) == 0)
            return true;
        off += n;
    }
    return false;
}

static void echo_add(struct pgw_notify_sub *sub, const uint8_t *msg, uint32_t total)
{
    if (sub->necho == NOTIFY_ECHO_MAX) {
        memmove(sub->echo, sub->echo + 1, (size_t)--sub->necho * sizeof(sub->echo[0]));
    } else {
        struct notify_echo *grown = pgw_array_grow(sub->echo, sizeof(*grown),
                                                   (size_t)sub->necho, &sub->capecho, 4);
        if (!grown)
            return;    /* short of memory: the hub's copy goes out too */
        sub->echo = grown;
    }
    sub->echo[sub->necho++] = (struct notify_echo){
        .hash = pgw_notify_msg_hash(sub->session->px, msg, total), .len = total, .gen = 0 };
}

static bool echo_take(struct pgw_notify_sub *sub, const uint8_t *msg, uint32_t total)
{
    uint64_t hash = 0;
    for (int i = 0; i < sub->necho; i++) {
        if (sub->echo[i].len != total)
            continue;
        if (hash == 0)
            hash = pgw_notify_msg_hash(sub->session->px, msg, total);
        if (sub->echo[i].hash == hash) {
            memmove(sub->echo + i, sub->echo + i + 1,
                    (size_t)(sub->necho - i - 1) * sizeof(sub->echo[0]));
            sub->necho--;
            return true;
        }
    }
    return false;
}

/* Drop the client's noted copies of barrier gen and before (gen 0: all). */
static void echo_end(struct pgw_notify_sub *sub, uint32_t gen)
{
    int kept = 0;
    for (int i = 0; i < sub->necho; i++) {
        const struct notify_echo *e = &sub->echo[i];
        bool end = gen == 0 || (e->gen != 0 && (int32_t)(e->gen - gen) <= 0);
        if (!end)
            sub->echo[kept++] = *e;
    }
    sub->necho = kept;
}

static void hub_echo_end(struct pgw_notify_hub *h, uint32_t gen)
{
    for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next) {
        struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
        if (sub->necho > 0)
            echo_end(sub, gen);
    }
}

/* The client is between transactions: the copies it got from its server
 * are noted until the hub's barrier. */
static void echo_seal(struct pgw_notify_sub *sub)
{
    struct pgw_notify_hub *h = sub->hub;
    bool unsealed = false;
    for (int i = 0; i < sub->necho && !unsealed; i++)
        unsealed = sub->echo[i].gen == 0;
    if (!unsealed)
        return;                /* their barrier is on its way (one per sealing) */
    struct notify_req *r = h->srv ? req_new(NULL, "", "", false) : NULL;
    if (!r) {
        int kept = 0;          /* no server: its copies never come */
        for (int i = 0; i < sub->necho; i++)
            if (sub->echo[i].gen != 0)
                sub->echo[kept++] = sub->echo[i];
        sub->necho = kept;
        return;
    }
    if (++h->echo_gen == 0)
        h->echo_gen = 1;
    r->barrier = true;
    r->gen = h->echo_gen;
    for (int i = 0; i < sub->necho; i++)
        if (sub->echo[i].gen == 0)
            sub->echo[i].gen = r->gen;
    req_push(h, r);
    hub_kick(h);
}

/* ---- the end of a LISTEN's transaction ----
 *
 * Its server commits, sends its ReadyForQuery (the COMMIT's tag first, for
 * a transaction block), and from its commit on listens; pgwharf reads that
 * reply a moment later, or much later when the client reads slowly and
 * the reply waits behind what the relay holds for it.  A notification
 * committed in between reaches the hub, whose copy the client must get
 * unless its server sends its own before its ReadyForQuery: after it, the
 * server is given back (and closed) and what it sends is not read.  So
 * while a request of the client's runs (one whose reply may end the
 * transaction), the hub's copies of a channel only its transaction listens
 * on are held (maybe_add: in sub->pending, marked HELD_MAYBE, among the
 * notifications held for the end of its transaction, in the order they
 * came), as the transaction's LISTEN is:
 *   - its server's copy of one takes its place (and the hub's copies of
 *     the channel before it go: committed before the server listened, so
 *     PostgreSQL would not send them);
 *   - when the LISTEN is the hub's (its transaction committed) they are
 *     the client's, where they are among the rest held for the end of its
 *     transaction (PostgreSQL reads the queue in its order then);
 *   - when it is forgotten, they go.
 * While no request runs, the transaction is open on an idle server: what
 * comes was committed before the LISTEN and is not the client's, as in
 * PostgreSQL; so is what a ReadyForQuery 'T' or 'E' with no request
 * behind it finds held -- unless the client listened already (on another
 * channel): PostgreSQL reads what was committed during its transaction at
 * its end, from where it was, and a channel the transaction made its own
 * by then is heard; so all is held for it.  The price: one committed before the commit while
 * the request that ends the transaction ran, or while one ran with that
 * one queued (pipelined) behind it, reaches the client too. */

static bool maybe_for(const struct pgw_notify_sub *sub, const char *chan)
{
    const struct pgw_session *s = sub->session;
    return sub->ntx > 0 && s->server &&
           (s->track.sync_out > 0 || s->track.fe_open > 0 || sub->nchans > 0) &&
           tx_holds(sub, chan);
}

static void maybe_add(struct pgw_session *s, const uint8_t *msg, uint32_t total)
{
    struct pgw_notify_sub *sub = s->notify;
    struct pgw_wbuf *p = &sub->pending;
    if (backlog_ended(s))
        return;
    /* The copies count against the bound among themselves, and against
     * held_max with the rest: the client's own still have the bound's
     * room beside them (a ROLLBACK throws the copies away), and a copy
     * is not dropped for the client's own that a committed UNLISTEN then
     * throws away (all held against the bound: BEGIN; LISTEN c; UNLISTEN
     * a, a's filling the bound, ended the client at the COMMIT where
     * PostgreSQL sends c's; review r3 of ecd485d). */
    if (sub->maybe_bytes + total > backlog_max(s) || p->len + total > held_max(s)) {
        lost_note(s, msg, HELD_LOST_MAYBE);
        return;
    }
    size_t at = p->len;
    pgw_wbuf_append(p, msg, total);
    if (p->len == at + total) {
        p->data[at] = HELD_MAYBE;      /* in place among the client's, until decided */
        sub->nmaybe++;
        sub->maybe_bytes += total;
    }
}

static const char *msg_chan(const uint8_t *m)
{
    return (const char *)m + PGW_MSG_HDR + 4;   /* Int32 pid, channel, payload */
}

/* The same message among the held copies: the client's, where it waits;
 * the earlier copies of its channel go. */
static bool maybe_take(struct pgw_notify_sub *sub, const uint8_t *msg, uint32_t total)
{
    struct pgw_wbuf *p = &sub->pending;
    size_t hit = p->len;
    for (size_t off = 0; off + PGW_MSG_HDR <= p->len && hit == p->len;
         off += 1 + (size_t)pgw_get_u32(p->data + off + 1))
        if (p->data[off] == HELD_MAYBE &&
            1 + (size_t)pgw_get_u32(p->data + off + 1) == total &&
            memcmp(p->data + off + 1, msg + 1, total - 1) == 0)
            hit = off;
    if (hit == p->len)
        return false;
    size_t kept = 0;
    sub->lost_from = 0;
    sub->maybe_bytes = 0;
    for (size_t off = 0; off + PGW_MSG_HDR <= p->len;) {
        size_t n = 1 + (size_t)pgw_get_u32(p->data + off + 1);
        if (off >= hit || p->data[off] != HELD_MAYBE ||
            strcmp(msg_chan(p->data + off), msg_chan(msg)) != 0) {
            if (off == hit) {
                p->data[off] = PGW_BE_NOTIFY;
                sub->nmaybe--;
            }
            if (!sub->lost_from && (p->data[off] == HELD_LOST || p->data[off] == HELD_LOST_MAYBE))
                sub->lost_from = kept + 1;
            sub->maybe_bytes += p->data[off] == HELD_MAYBE ? n : 0;
            memmove(p->data + kept, p->data + off, n);
            kept += n;
        } else {
            sub->nmaybe--;
        }
        off += n;
    }
    p->len = kept;
    return true;
}

/* The transaction's LISTENs were decided: a held copy of a channel the
 * client listens on now is its own, where it came; one of a channel it
 * does not (and its transaction no longer may) goes. */
static bool settle_keep(struct pgw_notify_sub *sub, uint8_t *m)
{
    if (m[0] != HELD_MAYBE && m[0] != HELD_LOST_MAYBE)
        return true;
    if (sub_find(sub, msg_chan(m)) >= 0) {
        m[0] = m[0] == HELD_MAYBE ? PGW_BE_NOTIFY : HELD_LOST;
        return true;
    }
    return tx_holds(sub, msg_chan(m));
}

static void maybe_settle(struct pgw_notify_sub *sub)
{
    held_sweep(sub, settle_keep);
}

/* The held copies go: committed before the transaction's LISTEN. */
static bool unmarked_keep(struct pgw_notify_sub *sub, uint8_t *m)
{
    (void)sub;
    return m[0] != HELD_MAYBE && m[0] != HELD_LOST_MAYBE;
}

/* The client's server's copy msg (m, n: in UTF-8) in its place among
 * those held for the client, as type: they go out first at the end of
 * its transaction, as PostgreSQL sends what it read from its queue in the
 * queue's order. */
static bool held_add(struct pgw_session *s, const uint8_t *m, uint32_t n, uint8_t type)
{
    struct pgw_wbuf *p = &s->notify->pending;
    /* One of the hub's channels: the hub's copy, not taken for it (no
     * echo), is counted where it is dropped (deliver, lost_note), so this
     * one is not counted too; HELD_OWN has no other copy. */
    bool own = type == HELD_OWN;
    if (s->notify->ending == NOTIFY_END_BACKLOG) {
        s->px->total_notifications_dropped += own;
        return false;
    }
    if (p->len + n > held_max(s)) {
        if (own)
            backlog_over(s);
        else
            backlog_end(s);
        return false;
    }
    size_t at = p->len;
    pgw_wbuf_append(p, m, n);
    if (p->len != at + n)
        return false;
    p->data[at] = type;
    return true;
}

bool pgw_notify_server_notification(struct pgw_session *s, const uint8_t *msg, uint32_t total)
{
    struct pgw_notify_sub *sub = s->notify;
    const char *chan = (const char *)msg + PGW_MSG_HDR + 4;
    if (!sub || total < PGW_MSG_HDR + 6 || msg[total - 1] != '\0' ||
        !memchr(chan, '\0', total - PGW_MSG_HDR - 4 - 1))
        return true;
    /* The client's server writes the channel in the client's encoding;
     * pgwharf keeps channel names in UTF-8 (the hub's).  Unconverted, a
     * LATIN1 client's "café" was not found: its own server's copy passed
     * as not the hub's, and the hub's came too (twice). */
    const struct pgw_pgenc_conv *c;
    char *utf8 = NULL;
    size_t cn = strlen(chan), un;
    if (!pgw_pgenc_ascii(chan, cn) && (c = client_conv(s)) &&
        (utf8 = convert_dup(c->from_client, chan, cn, true, &un)))
        chan = utf8;
    bool has = sub_find(sub, chan) >= 0;
    bool hubs = has || tx_holds(sub, chan);    /* else not the hub's (a LISTEN in a function) */
    bool pass = true;
    if (has && !fresh_has(sub, chan)) {
        pass = false;     /* the hub's copy reached it, or waits for its transaction's end */
    } else if (hubs || sub->pending.len > 0) {
        /* The held copies are the hub's, in UTF-8. */
        struct converted back = { 0 };
        const uint8_t *m = msg;
        uint32_t n = total;
        bool utf8_ok = true;
        if (!pgw_pgenc_ascii(msg + PGW_MSG_HDR + 4, total - PGW_MSG_HDR - 4) &&
            (c = client_conv(s))) {
            utf8_ok = convert_notification(&back, c, c->from_client, msg, total);
            if (utf8_ok) {
                m = back.msg;
                n = back.len;
            }
        }
        if (hubs && (pending_has(sub, m, n) || maybe_take(sub, m, n))) {
            pass = false;     /* the hub's copy, where it waits, is the client's */
        } else {
            /* Something is held for the client: this one goes out after
             * it (it came after it in PostgreSQL's queue), not now. */
            bool held = false;
            if (sub->pending.len > 0 && utf8_ok) {
                held = held_add(s, m, n, hubs ? PGW_BE_NOTIFY : HELD_OWN);
                pass = false;
            }
            /* The hub's is dropped when it comes -- unless this one was
             * (past the bound): the hub's may find room then (review). */
            if (hubs && (pass || held))
                echo_add(sub, msg, total);
        }
        free(back.msg);
    }
    free(utf8);
    return pass;
}

void pgw_notify_deallocate_all(struct pgw_session *s)
{
    if (s->notify)
        pgw_notify_vstmt_clear(s->notify);   /* the sub goes at the ReadyForQuery if that was all */
}

void pgw_notify_flush(struct pgw_session *s)
{
    struct pgw_notify_sub *sub = s->notify;
    if (!sub || !deliverable(s))
        return;
    sub->nfresh = 0;
    sub->nspq = 0;           /* of the server gone (its request numbers) */
    if (sub->necho > 0)
        echo_seal(sub);
    if (sub->ntx > 0) {
        tx_unlinked(sub);
        if (sub_empty(sub) && !sub->waiting) {
            pgw_notify_session_gone(s);
            return;
        }
    }
    if (sub->pending.len > 0)
        pending_flush(s, sub);
    if (s->notify != sub || s->state == PGW_SS_CLOSING)
        return;
    if (sub->warned_held) {
        /* The end discarded the drops the event was logged for (a ROLLBACK
         * of their LISTEN, a committed UNLISTEN): the next one, which may
         * be kept, is logged (review r2d: the one event was spent). */
        sub->warned_held = false;
        if (sub->ending == NOTIFY_END_NONE)
            sub->backlog_warned = false;
    }
    if (sub->ending == NOTIFY_END_NO_ROOM) {
        pgw_session_close(s, NOTIFY_NO_ROOM_SQLSTATE, NOTIFY_NO_ROOM_MSG);  /* hub_end */
    } else if (sub->ending == NOTIFY_END_BACKLOG) {
        /* backlog_over: after what was held for it (sent above). */
        pgw_session_close_after_sent(s, NOTIFY_BACKLOG_SQLSTATE, NOTIFY_BACKLOG_MSG,
                                     s->px->cfg->max_notify_backlog);
        return;
    } else if (sub->ending == NOTIFY_END_LOST) {
        /* hub_lost; a transaction whose LISTEN it was rolled back, and
         * which listened to nothing else, missed nothing. */
        if (sub_listens(sub))
            lost_close(s);
        else
            sub->ending = NOTIFY_END_NONE;
    }
    /* What was held was all it had (its own server's copies, an UNLISTEN
     * behind the COMMIT): it listens no more (review). */
    if (s->state != PGW_SS_CLOSING && s->notify == sub && sub->ending == NOTIFY_END_NONE &&
        pgw_notify_sub_idle(sub))
        pgw_notify_session_gone(s);
}

void pgw_notify_session_gone(struct pgw_session *s)
{
    struct pgw_notify_sub *sub = s->notify;
    if (!sub)
        return;
    struct pgw_notify_hub *h = sub->hub;
    if (sub->bridge)
        pgw_notify_bridge_end(sub, NULL);
    s->notify = NULL;
    pgw_list_del(&sub->node);
    if (sub->rfq_held) {
        /* Its channels are no more (DISCARD ALL, UNLISTEN behind the
         * COMMIT, its end): nothing to wait for. */
        h->nheld--;
        if (s->sbuf)
            s->sbuf->held = false;
        if (s->state != PGW_SS_CLOSING)
            pgw_batch_flush_client(s);
    }
    free(sub->await);
    for (struct notify_req *r = h->head; r; r = r->next)
        if (r->s == s)
            r->s = NULL;
    for (struct notify_req *r = h->answered; r; r = r->next)
        if (r->s == s)
            r->s = NULL;
    while (sub->nchans > 0) {
        int i = --sub->nchans;
        chan_unref(h, sub->chans[i]);
    }
    for (int i = 0; i < sub->ntx; i++)
        if (sub->tx[i].kind == PGW_LISTEN)
            chan_unref(h, sub->tx[i].chan);      /* its hold */
    pgw_wbuf_deinit(&sub->pending);
    free(sub->chans);
    pgw_notify_vstmt_clear(sub);
    free(sub->vst);
    free(sub->tx);
    free(sub->sp);
    free(sub->spq);
    free(sub->fresh);
    free(sub->echo);
    free(sub);
    /* The hub goes at its next tick (not from inside its own callbacks). */
}

/* ---- the ReadyForQuery of a transaction's LISTEN ----
 *
 * A transaction's LISTEN is the hub's from its commit, but the hub may
 * not listen on the channel yet (it waits for a server, or its LISTEN is
 * queued behind others): what is committed in between would be lost,
 * also after the COMMIT has returned, when PostgreSQL delivers it.  So
 * the ReadyForQuery that ends such a transaction (the COMMIT's, an
 * implicit transaction's; after COMMIT AND CHAIN, the one that ends the
 * chain: the client's server, which it keeps, listens from the commit on
 * and sends what comes meanwhile before it -- though not in commit order:
 * a notification committed during the chain before the hub listens comes
 * from that server only, at the chain's end, after one committed later
 * that the hub holds already, which pgw_notify_server_notification
 * appends it behind; not mended) is held, with everything behind it in
 * the client's buffer (pgw_iobuf hold: the client's order
 * stays), until the hub's server has run LISTEN on every channel the
 * commit added (sub->await).  Its server leaves it meanwhile (the client
 * is between transactions: PAUSE, RELOAD and KILL find it so), but stays
 * listening for it, out of the pool's counts, until the hub takes over
 * (the bridge, notify_bridge.c): what is committed before the hub
 * listens reaches the client from there.  When the
 * hub cannot listen (no server: hub_fail_waiting), or the client cancels
 * while the hub waits for a server, the error a lone LISTEN gets goes
 * before that ReadyForQuery and the channels are not the client's
 * (hold_fail).  A hub that listens already costs nothing: no hold.  A
 * client whose listening ends (hub_lost, hub_end) gets its ReadyForQuery
 * and then its FATAL; one that leaves, nothing. */

/* The hub's server listens on chan: no LISTEN of it waits or runs. */
static bool hub_listens(const struct pgw_notify_hub *h, const char *chan)
{
    const struct notify_chan *c = hub_chan((struct pgw_notify_hub *)h, chan);
    return h->srv && !listen_queued(h, chan) && !(c && c->failed);
}

/* The hub's own LISTEN of chan failed (and none of it is queued again):
 * the error, for a client whose transaction made chan its own. */
static const struct notify_chan *listen_failure(struct pgw_notify_hub *h, const char *chan)
{
    const struct notify_chan *c = hub_chan(h, chan);
    return c && c->failed && !listen_queued(h, chan) ? c : NULL;
}

static bool await_add(struct pgw_notify_sub *sub, const char *chan)
{
    for (int i = 0; i < sub->nawait; i++)
        if (strcmp(sub->await[i], chan) == 0)
            return true;
    void *grown = pgw_array_grow(sub->await, sizeof(sub->await[0]), (size_t)sub->nawait,
                                 &sub->capawait, 2);
    if (!grown)
        return false;
    sub->await = grown;
    snprintf(sub->await[sub->nawait++], sizeof(sub->await[0]), "%s", chan);
    /* Failed before: try again for this commit (its LISTEN may have been
     * noted while the failed one ran, and the cause may be gone); its end
     * decides (hub_listen_failed). */
    const struct notify_chan *c = listen_failure(sub->hub, chan);
    if (c && sub->hub->srv) {
        struct notify_req *r = req_own("LISTEN", chan);
        if (r) {
            req_push(sub->hub, r);
            hub_kick(sub->hub);
        } else {
            hold_fail_listen(sub, c);
        }
    } else if (c) {
        hold_fail_listen(sub, c);
    }
    return true;
}

/* Those the hub listens on now, or the client no more, go. */
static void await_prune(struct pgw_notify_sub *sub)
{
    int kept = 0;
    for (int i = 0; i < sub->nawait; i++)
        if (sub_find(sub, sub->await[i]) >= 0 && !hub_listens(sub->hub, sub->await[i]))
            memcpy(sub->await[kept++], sub->await[i], sizeof(sub->await[0]));
    sub->nawait = kept;
}

/* At a ReadyForQuery: must it wait (it is held from now, or already)? */
static bool hold_due(struct pgw_notify_sub *sub)
{
    if (sub->nawait == 0)
        return false;
    if (!sub->hold_failed)
        await_prune(sub);
    if (sub->ending != NOTIFY_END_NONE || sub->nawait == 0) {
        sub->nawait = 0;
        sub->hold_failed = sub->hold_listen = false;
        return sub->rfq_held;        /* (an earlier one stays held: hub_unhold) */
    }
    if (!sub->rfq_held) {
        sub->rfq_held = true;
        sub->held_since = pgw_mono_now(sub->session->px->loop);
        sub->hub->nheld++;
    }
    if (sub->hold_failed)
        hub_tick_now(sub->hub);
    return true;
}

/* The hub cannot listen for sub's transaction: err goes before its held
 * ReadyForQuery (at the tick, or at that ReadyForQuery when it comes). */
static void hold_fail(struct pgw_notify_sub *sub, const char *sqlstate, const char *msg)
{
    if (sub->hold_failed)
        return;
    sub->hold_failed = true;
    snprintf(sub->hold_state, sizeof(sub->hold_state), "%s", sqlstate);
    snprintf(sub->hold_msg, sizeof(sub->hold_msg), "%s", msg);
    if (sub->rfq_held)
        hub_tick_now(sub->hub);
}

/* The hub's own LISTEN of c failed: sub's transaction committed its
 * LISTEN, so no error after its COMMIT; that error ends the client after
 * its ReadyForQuery (hold_end), as FATAL 08006 (lost_close). */
static void hold_fail_listen(struct pgw_notify_sub *sub, const struct notify_chan *c)
{
    if (sub->hold_failed)
        return;
    sub->hold_listen = true;
    hold_fail(sub, c->fail_state, c->fail_msg);
}

/* The hub's own LISTEN of chan failed (its ReadyForQuery came, no LISTEN
 * of it is queued): the channel is marked (hub_listens says no until a
 * LISTEN of it succeeds; a transaction's LISTEN of it sends one again).
 * The cause may pass (a cancel, a lock or statement timeout, a lack of
 * memory): clients want the channel (refs: those that await it too), so
 * the hub tries again, behind what is queued, up to NOTIFY_LISTEN_TRIES
 * times in a row, the clients waiting meanwhile as for the first.  Then
 * it failed for good: a client that awaits it fails its hold; one that
 * listens on it already is ended between transactions with that error.
 * (Nothing is closed from here: the tick does it.) */
static void hub_listen_failed(struct pgw_notify_hub *h, const char *chan)
{
    struct notify_chan *c = hub_chan(h, chan);
    c->failed = true;
    if (c->refs > 0 && ++c->tries < NOTIFY_LISTEN_TRIES && h->srv) {
        struct notify_req *r = req_own("LISTEN", chan);
        if (r) {
            req_push(h, r);    /* (sent by the caller's hub_send) */
            return;
        }
    }
    c->tries = 0;         /* a transaction's LISTEN of it later tries anew (await_add) */
    for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next) {
        struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
        bool awaits = false;
        for (int i = 0; i < sub->nawait && !awaits; i++)
            awaits = strcmp(sub->await[i], chan) == 0;
        if (awaits) {
            hold_fail_listen(sub, c);
        } else if (sub_find(sub, chan) >= 0 && sub->ending == NOTIFY_END_NONE) {
            /* (Not in hold_state/hold_msg: a later hold_fail would
             * rewrite them.) */
            snprintf(sub->end_state, sizeof(sub->end_state), "%s", c->fail_state);
            snprintf(sub->end_msg, sizeof(sub->end_msg), "%s", c->fail_msg);
            sub->ending = NOTIFY_END_LOST;
            sub->end_why = sub->end_msg;
            sub->end_listen = true;
            h->lost = true;
            hub_tick_now(h);
        }
    }
}

/* The hold of s ends: its ReadyForQuery goes with what is behind it
 * (after a WARNING when a cancel ended the wait; the client disconnected
 * after it when the hub could not listen). */
static void hold_end(struct pgw_session *s)
{
    struct pgw_notify_sub *sub = s->notify;
    struct pgw_iobuf *b = s->sbuf;
    sub->rfq_held = false;
    sub->hub->nheld--;
    bool canceled = sub->hold_failed && sub->hold_canceled;
    if (canceled && b && b->held && !sub->bridge) {
        /* A cancel: its transaction committed, so no error -- a WARNING
         * before the ReadyForQuery; its channels stay, listened on when
         * the hub has its server. */
        struct pgw_wbuf e;
        pgw_wbuf_init(&e);
        pgw_wire_warning(&e, "01000", "canceled the wait for this transaction's LISTEN to take "
                         "effect: notifications sent before it does are missed");
        bool ok = !e.failed &&
                  pgw_iobuf_reserve(s->px, &s->sbuf, b->len - b->sent + (uint32_t)e.len) &&
                  pgw_iobuf_insert(s->sbuf, s->sbuf->hold, e.data, e.len);
        pgw_wbuf_deinit(&e);
        if (!ok) {
            pgw_session_close(s, "53200", "out of memory for a reply to the client");
            return;
        }
        b = s->sbuf;
    } else if (sub->hold_failed && !canceled && sub->ending == NOTIFY_END_NONE) {
        /* The hub could not listen (no server for it): its transaction
         * committed, so its COMMIT is not answered with an error; it is
         * disconnected (08006) after its ReadyForQuery, as when the hub's
         * server is lost, and reconnects to LISTEN again (hub_lost_settle
         * at the next tick, or pgw_notify_flush at its transaction's end). */
        snprintf(sub->end_state, sizeof(sub->end_state), "%s", sub->hold_state);
        snprintf(sub->end_msg, sizeof(sub->end_msg), "%s", sub->hold_msg);
        sub->ending = NOTIFY_END_LOST;
        sub->end_why = sub->end_msg;
        sub->end_listen = sub->hold_listen;
        sub->hub->lost = true;
        hub_tick_now(sub->hub);
    }
    sub->nawait = 0;
    sub->hold_failed = sub->hold_canceled = sub->hold_listen = false;
    if (b)
        b->held = false;
    pgw_session_flush_client(s);
    if (s->state != PGW_SS_CLOSING && s->notify == sub && sub->ending == NOTIFY_END_NONE &&
        pgw_notify_sub_idle(sub) && deliverable(s))
        pgw_notify_session_gone(s);
}

/* s's own server answers behind its held ReadyForQuery (a query sent
 * behind the COMMIT) and its buffer is full: the server cannot finish,
 * nor go back to the pool, until the
 * hold is lifted, and the hub may need that very server.  The hold goes
 * (as before it existed): a notification committed before the hub
 * listens may be missed. */
void pgw_notify_hold_give_up(struct pgw_session *s)
{
    struct pgw_notify_sub *sub = s->notify;
    if (!sub || !sub->rfq_held)
        return;
    char qd[200], qu[200];
    pgw_warn("notify_hold_given_up", "client=%s db=%s user=%s reason=\"its own server's reply "
             "fills its buffer behind the held ReadyForQuery\"", s->addr_text,
             lq(qd, sizeof(qd), s->database), lq(qu, sizeof(qu), s->user));
    sub->hold_failed = false;
    hold_end(s);
}

void pgw_notify_client_eof(struct pgw_session *s)
{
    struct pgw_notify_sub *sub = s->notify;
    if (!sub)
        return;
    if (sub->bridge)
        pgw_notify_bridge_end(sub, NULL);
    if (sub->rfq_held) {
        sub->hold_failed = false;
        hold_end(s);
    }
}

/* From the tick: the held whose wait is over. */
static void hub_unhold(struct pgw_notify_hub *h)
{
    int n = 0;
    for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next)
        n++;
    struct pgw_session **to = calloc((size_t)n, sizeof(*to));
    if (!to)
        return;                          /* the next tick */
    int k = 0;
    for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next) {
        struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
        if (!sub->rfq_held)
            continue;
        if (!sub->hold_failed)
            await_prune(sub);
        if (sub->hold_failed || sub->nawait == 0 || sub->ending != NOTIFY_END_NONE)
            to[k++] = sub->session;
    }
    for (int i = 0; i < k; i++)
        if (to[i]->state != PGW_SS_CLOSING && to[i]->notify && to[i]->notify->rfq_held)
            hold_end(to[i]);
    free(to);
}

/* ---- LISTEN and UNLISTEN inside a transaction ----
 *
 * A LISTEN or UNLISTEN a client sends while it holds a server (inside a
 * transaction block: BEGIN, then LISTEN, as psycopg2, pgjdbc and other
 * drivers do outside autocommit; behind other messages; or among other
 * statements of one Query), as a Query or a Parse executed before its
 * Sync, runs there, so PostgreSQL checks it and the transaction decides
 * it.  pgwharf notes it,
 * and when the transaction commits the hub takes it over: from then on the
 * client gets the channel's notifications from the hub, as after a LISTEN
 * of its own (the server it ran on is closed when given back, relay.c
 * listen_check).  A rolled-back or failed transaction forgets it.  The hub
 * starts listening on a LISTEN's channel when pgwharf sees the LISTEN (a
 * hold on the channel, given back at the end), so it listens by the time
 * the COMMIT returns: no notification is lost in between unless the hub has
 * to wait for a server.
 *
 * What decides, from the server's replies (a noted statement runs once its
 * CommandComplete comes; those of the request being answered are the ones
 * numbered up to the tracker's req_done):
 *   COMMIT                 what ran is the hub's (COMMIT AND CHAIN too);
 *   ROLLBACK               of the whole transaction: what ran is forgotten
 *                          (ROLLBACK AND CHAIN too); ROLLBACK TO a
 *                          savepoint: what ran since it is forgotten (of
 *                          a savepoint not known by name: the latest, and
 *                          the rest doomed, below);
 *   an ErrorResponse       what ran is doomed: the transaction, implicit
 *                          or not, is rolled back unless a ROLLBACK TO
 *                          SAVEPOINT recovers it;
 *   ReadyForQuery 'I'      the transaction ended: what ran and is not
 *                          doomed committed (an implicit transaction, or
 *                          behind a COMMIT), the rest is forgotten;
 *   ReadyForQuery 'T'/'E'  the transaction goes on: doomed no more.
 * Savepoints are followed from the first noted statement, by their tags
 * and names (see "savepoints, by name" below).  A noted Parse runs only
 * if a Bind of its statement follows in its batch (pgw_notify_tx_bind);
 * a LISTEN or UNLISTEN tag confirms the first of its kind that does. */

static bool tx_note(struct pgw_notify_sub *sub, enum pgw_listen_kind kind, const char *chan,
                    uint32_t req, int at, const char *stmt)
{
    struct notify_txop *grown = pgw_array_grow(sub->tx, sizeof(*grown), (size_t)sub->ntx,
                                               &sub->captx, 2);
    if (!grown)
        return false;
    sub->tx = grown;
    struct pgw_notify_hub *h = sub->hub;
    if (kind == PGW_LISTEN) {
        bool known = hub_chan(h, chan) != NULL;
        if (!chan_ref(h, chan))
            return false;
        /* (failed: again; not while a LISTEN of it is queued, a retry of
         * hub_listen_failed's say, whose end decides: each more would
         * put off its count of NOTIFY_LISTEN_TRIES, and the clients
         * waiting on it, for as long as transactions note the channel) */
        if ((!known || hub_chan(h, chan)->failed) && h->srv && !listen_queued(h, chan)) {
            struct notify_req *r = req_own("LISTEN", chan);
            if (!r) {
                chan_unref(h, chan);
                return false;
            }
            req_push(h, r);
        }
    }
    if (sub->ntx == 0)
        sub->nsp = 0;                    /* counted from here */
    struct notify_txop *op = &sub->tx[sub->ntx++];
    op->kind = kind;
    op->req = req;
    op->at = at;
    op->ran = op->doomed = false;
    op->depth = 0;
    op->parsed = stmt != NULL;
    op->bound = op->claimed = op->on_do = false;
    snprintf(op->stmt, sizeof(op->stmt), "%s", stmt ? stmt : "");
    snprintf(op->chan, sizeof(op->chan), "%s", chan);
    if (kind == PGW_LISTEN)
        hub_kick(h);      /* listens on a new server, or sends the LISTEN */
    return true;
}

/* The statements of one Query or Parse being noted (tx_statement), and
 * its savepoint statements (noted at its end, tx_statements_end). */
struct tx_stmts {
    uint32_t req;
    int at;
    const char *stmt;
    bool sps;
    bool lost;                           /* more than cmds holds */
    int ncmds;
    struct notify_spcmd cmds[16];
};

/* White space as PostgreSQL 15 reads it (codec.c sql_space: no \v). */
static bool sql_space_c(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

/* A DO block whose text holds UNLISTEN (EXECUTE 'UNLISTEN a'): it runs
 * on the client's server, which does not listen, with "DO" for its tag.
 * Which channels it leaves is not known: it counts as UNLISTEN * (as an
 * UNLISTEN pgwharf did not read, tx_unlisten_unread).  A function that
 * runs UNLISTEN is not seen.  The word must stand where a statement
 * starts (after a quote, a ';', BEGIN, THEN, ELSE or LOOP) with white
 * space, '*' or '"' after it: "RAISE NOTICE 'no unlisten here'" or
 * pg_notify('jobs', 'unlisten') is no UNLISTEN (review). */
static bool do_word_before(const char *p, size_t i)
{
    static const char *const starts[] = { "BEGIN", "THEN", "ELSE", "LOOP" };
    while (i > 0 && sql_space_c(p[i - 1]))
        i--;
    if (i == 0)
        return false;
    if (p[i - 1] == '\'' || p[i - 1] == ';')
        return true;
    for (size_t k = 0; k < sizeof(starts) / sizeof(starts[0]); k++) {
        size_t w = strlen(starts[k]);
        if (i >= w && strncasecmp(p + i - w, starts[k], w) == 0 &&
            (i == w || !(isalnum((unsigned char)p[i - w - 1]) || p[i - w - 1] == '_')))
            return true;
    }
    return false;
}

static bool do_unlisten(const char *p, size_t n)
{
    static const char *const kw[] = { "DO" };
    if (!pgw_sql_may_start(p, n, kw, 1))
        return false;
    for (size_t i = 0; i + 8 < n; i++)
        if (strncasecmp(p + i, "unlisten", 8) == 0 &&
            (sql_space_c(p[i + 8]) || p[i + 8] == '*' || p[i + 8] == '"') &&
            (i == 0 || !(isalnum((unsigned char)p[i - 1]) || p[i - 1] == '_')) &&
            do_word_before(p, i))
            return true;
    return false;
}

/* One statement p[0..n) of it; false: the session was closed. */
static bool tx_statement(struct pgw_session *s, struct tx_stmts *st, const char *p, size_t n)
{
    char chan[PGW_CHANNEL_UTF8_MAX + 1];
    bool converted;
    enum pgw_listen_kind kind = pgw_notify_parse(s, p, n, chan, &converted, NULL);
    if (kind == PGW_LISTEN_NONE && st->sps && pgw_sp_may_be(p, n)) {
        struct notify_spcmd *c = &st->cmds[st->ncmds < 16 ? st->ncmds : 15];
        c->kind = pgw_sp_parse(p, n, c->name);
        c->req = st->req;
        if (c->kind != PGW_SP_NONE && st->ncmds < 16)
            st->ncmds++;
        else if (c->kind != PGW_SP_NONE)
            st->lost = true;
    }
    if (kind == PGW_LISTEN_NONE && s->notify && do_unlisten(p, n)) {
        if (!tx_note(s->notify, PGW_UNLISTEN_ALL, "", st->req, st->at, st->stmt)) {
            pgw_session_close(s, "53200", "out of memory");
            return false;
        }
        s->notify->tx[s->notify->ntx - 1].on_do = true;
        return true;
    }
    if (kind == PGW_LISTEN_NONE)
        return true;
    if (!s->notify && (kind != PGW_LISTEN || !pgw_notify_room_for_hub(s)))
        return true;      /* nothing to undo; a pool of one keeps it as before */
    struct pgw_notify_sub *sub = pgw_notify_sub_get(s);
    if (!sub || !tx_note(sub, kind, chan, st->req, st->at, st->stmt)) {
        pgw_session_close(s, "53200", "out of memory");
        return false;
    }
    return true;
}

static bool tx_statements_end(struct pgw_session *s, struct tx_stmts *st)
{
    if (st->ncmds > 0 && s->notify && !sp_noted(s->notify, st->cmds, st->lost ? 0 : st->ncmds)) {
        pgw_session_close(s, "53200", "out of memory");
        return false;
    }
    return true;
}

bool pgw_notify_tx_message(struct pgw_session *s, const uint8_t *msg, uint32_t total)
{
    const char *sql = (const char *)msg + PGW_MSG_HDR;
    const char *end = (const char *)msg + total;
    if (total > PGW_MSG_HDR + PGW_NOTIFY_QUERY_MAX || !s->pool)
        return true;
    const char *stmt = NULL;
    char key[NOTIFY_STMT_NAME_MAX + 1];
    if ((char)msg[0] == PGW_FE_PARSE) {
        const char *name_end = memchr(sql, '\0', (size_t)(end - sql));
        if (!name_end || !pgw_notify_stmt_key(s, sql, (size_t)(name_end - sql), true, key))
            return true;     /* the server reports it */
        stmt = key;          /* as PostgreSQL keeps it */
        sql = name_end + 1;
    }
    /* A Query's text ends the message (an UPDATE is turned down before it
     * is read through); a Parse's is followed by its parameter types. */
    bool query = (char)msg[0] == PGW_FE_QUERY;
    const char *sql_end = query && end > sql && end[-1] == '\0'
                              ? end - 1 : memchr(sql, '\0', (size_t)(end - sql));
    if (!sql_end || strlen(sql) != (size_t)(sql_end - sql))
        return true;
    /* Its place in what the client sent: the request the server answers
     * after those outstanding, and the message in its batch.  The same
     * message is offered again when the relay scans it again (prepared.c
     * made it wait): noted once. */
    uint32_t req = s->track.req_done + (uint32_t)s->track.sync_out;
    int at = s->track.fe_open;
    const struct pgw_notify_sub *was = s->notify;
    if (was && was->ntx > 0 && was->tx[was->ntx - 1].req == req &&
        was->tx[was->ntx - 1].at == at)
        return true;
    /* A Parse holds one statement; a Query may hold several (BEGIN; LISTEN
     * a; LISTEN b; COMMIT), each noted in its order (their tags come in
     * that order).  Its savepoint statements are noted too, all of them
     * once the client has a sub (their tags are matched to them in order),
     * when the message is the first of its request (a Query, or a Parse
     * first in its batch): none of the request runs before it. */
    struct tx_stmts st = { .req = req, .at = at, .stmt = stmt, .sps = at == 0 };
    for (const char *p = sql; p < sql_end;) {
        size_t n = query ? pgw_sql_statement_end(p, (size_t)(sql_end - p))
                         : (size_t)(sql_end - p);
        if (!tx_statement(s, &st, p, n))
            return false;
        p += n + 1;
    }
    return tx_statements_end(s, &st);
}

/* A Query larger than the relay's buffer streams through: its statements
 * are read as they pass (pgw_sql_scan: what they are inside of carries
 * over), each kept up to NOTIFY_QSCAN_HEAD bytes (after its leading white
 * space) for tx_statement.  A longer LISTEN or savepoint statement (white
 * space inside, trailing white space apart: a comment, which the small
 * path does not read either) is not noted. */
#define NOTIFY_QSCAN_HEAD 1024
struct pgw_notify_qscan {
    bool started, dead;
    uint32_t left;                       /* the message's bytes still to come */
    struct tx_stmts st;
    struct pgw_sql_scan sc;
    size_t hlen;
    bool over;                           /* more than head holds, not white space */
    char head[NOTIFY_QSCAN_HEAD];
};

void pgw_notify_qscan_free(struct pgw_session *s)
{
    free(s->qscan);
    s->qscan = NULL;
}

bool pgw_notify_qscan_offer(struct pgw_session *s, const uint8_t *msg)
{
    if (!s->pool || (!s->notify && !pgw_notify_room_for_hub(s)))
        return true;                     /* nothing it could note */
    struct pgw_notify_qscan *q = s->qscan;
    if (!q && !(q = s->qscan = malloc(sizeof(*q)))) {
        pgw_session_close(s, "53200", "out of memory");
        return false;
    }
    memset(q, 0, offsetof(struct pgw_notify_qscan, head));
    pgw_sql_scan_init(&q->sc);
    q->left = pgw_get_u32(msg + 1) + 1;
    q->st.req = s->track.req_done + (uint32_t)s->track.sync_out;
    q->st.at = s->track.fe_open;
    q->st.sps = q->st.at == 0;
    return true;
}

static bool qscan_statement(struct pgw_session *s, struct pgw_notify_qscan *q)
{
    bool ok = q->over || q->hlen == 0 || tx_statement(s, &q->st, q->head, q->hlen);
    q->hlen = 0;
    q->over = false;
    pgw_sql_scan_init(&q->sc);
    return ok;
}

/* Text of the statement being read, up to its end or the piece's. */
static void qscan_keep(struct pgw_notify_qscan *q, const char *p, size_t n)
{
    size_t i = 0;
    while (q->hlen == 0 && i < n && sql_space_c(p[i]))
        i++;                             /* leading white space */
    size_t k = sizeof(q->head) - q->hlen;
    if (k > n - i)
        k = n - i;
    memcpy(q->head + q->hlen, p + i, k);
    q->hlen += k;
    for (i += k; i < n && !q->over; i++)
        q->over = !sql_space_c(p[i]);
}

bool pgw_notify_qscan_feed(struct pgw_session *s, const uint8_t *p, uint32_t n, bool first)
{
    struct pgw_notify_qscan *q = s->qscan;
    if (first == q->started)
        return true;                     /* (not offered: taken by no Query) */
    if (first && pgw_get_u32(p + 1) + 1 != q->left) {
        pgw_notify_qscan_free(s);        /* offered, then not taken: not this one */
        return true;
    }
    if (first) {
        q->started = true;
        p += PGW_MSG_HDR;                /* the rest of the message comes as body bytes */
        n -= PGW_MSG_HDR;
        q->left -= PGW_MSG_HDR;
    }
    if (n > q->left)
        n = q->left;
    q->left -= n;
    bool last = q->left == 0;
    const char *text = (const char *)p;
    size_t len = n - (last && n > 0 ? 1 : 0);   /* the NUL that ends the text */
    if (last && n > 0 && text[len] != '\0')
        q->dead = true;                  /* the server reports it */
    while (!q->dead && len > 0) {
        const char *nul = memchr(text, '\0', len);
        if (nul) {
            q->dead = true;              /* a NUL inside: the server refuses it */
            break;
        }
        size_t k = pgw_sql_scan_feed(&q->sc, text, len);
        qscan_keep(q, text, k);
        if (k == len)
            break;
        if (!qscan_statement(s, q))
            return false;
        text += k + 1;
        len -= k + 1;
    }
    if (!last)
        return true;
    bool ok = q->dead || q->sc.lost || (qscan_statement(s, q) && tx_statements_end(s, &q->st));
    if (s->qscan)
        pgw_notify_qscan_free(s);
    return ok;
}

bool pgw_notify_tx_bind(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                        uint32_t total)
{
    /* Bind: portal name, statement name, ...; the statement's latest noted
     * Parse of this batch runs if an Execute follows (its tag says so). */
    struct pgw_notify_sub *sub = s->notify;
    uint32_t req = s->track.req_done + (uint32_t)s->track.sync_out;
    int last = -1;
    for (int i = 0; sub && i < sub->ntx; i++)
        if (sub->tx[i].parsed && sub->tx[i].req == req)
            last = i;
    if (last < 0 && (!sub || sub->nvst == 0))
        return true;
    const char *p = (const char *)msg + PGW_MSG_HDR, *end = (const char *)msg + avail;
    const char *z = memchr(p, '\0', (size_t)(end - p));
    const char *name = z ? z + 1 : NULL;
    const char *name_end = name ? memchr(name, '\0', (size_t)(end - name)) : NULL;
    if (!name_end)
        return avail >= total;           /* read more of it first; or the server reports it */
    char key[NOTIFY_STMT_NAME_MAX + 1];
    if (!pgw_notify_stmt_key(s, name, (size_t)(name_end - name), true, key))
        return true;                     /* the server refuses it */
    /* A vstmt: the server must have it now (prepared.c prepares it there,
     * and notes its LISTEN or UNLISTEN, pgw_notify_tx_bound). */
    if (sub->nvst > 0 && !pgw_notify_vstmt_to_server(s, key)) {
        pgw_session_close(s, "53200", "out of memory");
        return true;
    }
    for (int i = last; i >= 0; i--) {
        struct notify_txop *op = &sub->tx[i];
        if (op->parsed && op->req == req && strcmp(op->stmt, key) == 0) {
            op->bound = true;
            break;
        }
    }
    return true;
}

bool pgw_notify_tx_bound(struct pgw_session *s, const char *key, const char *sql)
{
    if (!s->pool || !pgw_notify_may_be_listen(sql, strnlen(sql, 16)))
        return true;         /* the common case (an UPDATE, say) */
    size_t n = strlen(sql);
    if (n > PGW_NOTIFY_QUERY_MAX)
        return true;
    uint32_t req = s->track.req_done + (uint32_t)s->track.sync_out;
    int at = s->track.fe_open;
    /* Noted already: parsed in this batch, and this is the first Bind of
     * it (pgw_notify_tx_bind marked it bound).  A later Bind of it in the
     * batch runs it again, after what ran between (LISTEN, UNLISTEN,
     * LISTEN): noted anew.  (Not by its place: a Parse prepared.c answers
     * itself is not counted in fe_open.) */
    struct pgw_notify_sub *was = s->notify;
    for (int i = was ? was->ntx - 1 : -1; i >= 0; i--) {     /* the one it marked: the latest */
        struct notify_txop *op = &was->tx[i];
        if (op->req == req && op->parsed && op->bound && !op->claimed &&
            strcmp(op->stmt, key) == 0) {
            op->claimed = true;
            return true;
        }
    }
    char chan[PGW_CHANNEL_UTF8_MAX + 1];
    bool converted;
    enum pgw_listen_kind kind = pgw_notify_parse(s, sql, n, chan, &converted, NULL);
    if (kind == PGW_LISTEN_NONE)
        return true;
    if (!s->notify && (kind != PGW_LISTEN || !pgw_notify_room_for_hub(s)))
        return true;         /* nothing to undo; a pool of one keeps it as before */
    struct pgw_notify_sub *sub = pgw_notify_sub_get(s);
    if (!sub || !tx_note(sub, kind, chan, req, at, key)) {
        pgw_session_close(s, "53200", "out of memory");
        return false;
    }
    sub->tx[sub->ntx - 1].bound = sub->tx[sub->ntx - 1].claimed = true;
    return true;
}

/* The noted statements of the request being answered, or of one before
 * it (skipped after an error): a prefix. */
static int tx_current(const struct pgw_notify_sub *sub)
{
    uint32_t first = sub->session->track.req_done;
    int n = 0;
    while (n < sub->ntx && (int32_t)(sub->tx[n].req - first) <= 0)
        n++;
    return n;
}

/* op is decided: the hub's (apply) or forgotten; a LISTEN's hold goes. */
static void tx_apply(struct pgw_notify_sub *sub, const struct notify_txop *op, bool apply)
{
    if (op->kind == PGW_LISTEN) {
        if (apply && sub_find(sub, op->chan) < 0)
            fresh_add(sub, op->chan);
        /* (Short of memory: not waited for, as before.) */
        if (apply && !hub_listens(sub->hub, op->chan))
            await_add(sub, op->chan);
        if (apply && !sub_add(sub, op->chan)) {
            char qd[200], qu[200];
            pgw_warn("notify_listen_lost", "client=%s db=%s user=%s reason=\"out of "
                     "memory\"", sub->session->addr_text,
                     lq(qd, sizeof(qd), sub->session->database),
                     lq(qu, sizeof(qu), sub->session->user));
        }
        chan_unref(sub->hub, op->chan);          /* the hold; sub_add took its own */
    } else if (apply && op->kind == PGW_UNLISTEN) {
        sub_remove(sub, op->chan);
    } else if (apply) {
        while (sub->nchans > 0)
            sub_remove(sub, sub->chans[sub->nchans - 1]);
    }
}

enum tx_event { TX_COMMIT, TX_ROLLBACK, TX_ENDED, TX_GOES_ON, TX_DROPPED, TX_DISCARDED };
enum tx_fate { TX_KEEP, TX_APPLY, TX_FORGET };

/* What ev makes of op (see the top of this section); for TX_ROLLBACK, to
 * is the number of savepoints left open (-1: not known). */
static enum tx_fate tx_fate(const struct pgw_notify_sub *sub, struct notify_txop *op,
                            enum tx_event ev, int to)
{
    switch (ev) {
    case TX_COMMIT:
        return op->ran ? TX_APPLY : TX_KEEP;
    case TX_ROLLBACK:
        if (!op->ran)
            return TX_KEEP;
        if (to >= 0)
            return op->depth >= to ? TX_FORGET : TX_KEEP;
        if (sub->nsp == 0 || op->depth >= sub->nsp)
            return TX_FORGET;
        op->doomed = true;                   /* unless it was ROLLBACK TO */
        return TX_KEEP;
    case TX_ENDED:
        return op->ran && !op->doomed ? TX_APPLY : TX_FORGET;
    case TX_GOES_ON:
        if (!op->ran)
            return TX_FORGET;                /* its error, or a Parse without Execute */
        op->doomed = false;
        return TX_KEEP;
    case TX_DISCARDED:
        /* DISCARD ALL ran: what ran before it goes; what was sent behind
         * it in its batch (not run yet: tags come in order) runs after. */
        return op->ran ? TX_FORGET : TX_KEEP;
    case TX_DROPPED:
    default:
        return TX_FORGET;
    }
}

/* An UNLISTEN committed: what is held for the client's transaction's end
 * on a channel it listens on no more goes.  PostgreSQL, too, reads the
 * notifications that came during a transaction at its end, and skips
 * those of a channel it no longer listens on then. */
static bool listened_keep(struct pgw_notify_sub *sub, uint8_t *m)
{
    /* HELD_MAYBE: maybe_settle decides; HELD_OWN: the server sent it, so
     * listened on its channel (not the hub's) then. */
    return m[0] == HELD_MAYBE || m[0] == HELD_LOST_MAYBE || m[0] == HELD_OWN ||
           sub_find(sub, msg_chan(m)) >= 0;
}

/* ev for the first n noted. */
static void tx_settle_to(struct pgw_notify_sub *sub, int n, enum tx_event ev, int to)
{
    if (n == 0)
        return;                          /* sub->tx may be NULL */
    int kept = 0;
    bool unlistened = false;
    for (int i = 0; i < n; i++) {
        struct notify_txop op = sub->tx[i];
        enum tx_fate f = tx_fate(sub, &op, ev, to);
        if (f == TX_KEEP) {
            sub->tx[kept++] = op;
        } else {
            tx_apply(sub, &op, f == TX_APPLY);
            unlistened |= f == TX_APPLY && op.kind != PGW_LISTEN;
        }
    }
    memmove(sub->tx + kept, sub->tx + n, (size_t)(sub->ntx - n) * sizeof(sub->tx[0]));
    sub->ntx -= n - kept;
    if (unlistened && sub->pending.len > 0)
        held_sweep(sub, listened_keep);
    if (sub->nmaybe > 0)
        maybe_settle(sub);
}

static void tx_settle(struct pgw_notify_sub *sub, int n, enum tx_event ev)
{
    tx_settle_to(sub, n, ev, -1);
}

static bool tag_is(const char *tag, size_t n, const char *want)
{
    return n == strlen(want) + 1 && memcmp(tag, want, n) == 0;
}

/* ---- savepoints, by name ----
 *
 * The savepoint statements a client with a sub sends (sp_noted, from
 * pgw_notify_tx_message) wait in sub->spq for their tags, which come in
 * the same order; a statement of a request that got its ReadyForQuery, or
 * an error, without its tag did not run.  A SAVEPOINT tag opens a
 * savepoint of the statement's name (or of no known name when it was not
 * noted: sent before the client had a sub, in a batch behind another
 * message, or in a Query of more than 16); RELEASE and ROLLBACK TO find
 * theirs by name, the latest of it.  A name not among those open was
 * opened before the first noted LISTEN or UNLISTEN (it ran after).  One of
 * no known name opened after the latest of the name (or with none of the
 * name open) might be it: then the latest open is taken, as drivers and
 * ORMs nest them.  What is noted goes when the server goes back (the
 * request numbers start again on the next). */

/* The first k noted go. */
static void spq_drop(struct pgw_notify_sub *sub, int k)
{
    if (k == 0)
        return;                          /* sub->spq may be NULL */
    memmove(sub->spq, sub->spq + k, (size_t)(sub->nspq - k) * sizeof(sub->spq[0]));
    sub->nspq -= k;
}

static bool sp_noted(struct pgw_notify_sub *sub, const struct notify_spcmd *cmds, int n)
{
    /* Those of requests answered are gone (their tags did not come). */
    uint32_t done = sub->session->track.req_done;
    int k = 0;
    while (k < sub->nspq && (int32_t)(sub->spq[k].req - done) < 0)
        k++;
    spq_drop(sub, k);
    /* Noted from a Query (a request of its own) or a Parse first in its
     * batch: one of its request noted already is this message, scanned
     * again (prepared.c made it wait). */
    if (n > 0 && sub->nspq > 0 && sub->spq[sub->nspq - 1].req == cmds[0].req)
        return true;
    for (int i = 0; i < n; i++) {
        struct notify_spcmd *grown = pgw_array_grow(sub->spq, sizeof(*grown),
                                                    (size_t)sub->nspq, &sub->capspq, 4);
        if (!grown)
            return false;
        sub->spq = grown;
        sub->spq[sub->nspq++] = cmds[i];
    }
    return true;
}

/* The noted statement a tag of kind answers: its name into name ("" when
 * not known).  PGW_SP_NONE when none is noted for it. */
static enum pgw_sp_kind sp_take(struct pgw_notify_sub *sub, enum pgw_sp_kind kind,
                                char name[PGW_CHANNEL_MAX + 1])
{
    uint32_t done = sub->session->track.req_done;
    int k = 0;
    while (k < sub->nspq && (int32_t)(sub->spq[k].req - done) < 0)
        k++;                             /* of requests answered: did not run */
    enum pgw_sp_kind got = PGW_SP_NONE;
    name[0] = '\0';
    if (k < sub->nspq && sub->spq[k].req == done &&
        (sub->spq[k].kind == kind ||
         (kind == PGW_SP_ROLLBACK_TO && sub->spq[k].kind == PGW_SP_ROLLBACK))) {
        got = sub->spq[k].kind;
        memcpy(name, sub->spq[k].name, sizeof(sub->spq[k].name));
        k++;
    }
    spq_drop(sub, k);
    return got;
}

/* The open savepoints name leaves open when RELEASEd (at) or rolled back
 * to (at + 1): the index of the latest of that name, -1 when it was opened
 * before them all, -2 when not known (one of no known name opened after
 * the latest of the name may be it). */
static int sp_find(const struct pgw_notify_sub *sub, const char *name)
{
    if (!*name)
        return -2;
    for (int i = sub->nsp - 1; i >= 0; i--) {
        if (!sub->sp[i].name[0])
            return -2;                   /* a later one of no known name may be it */
        if (strcmp(sub->sp[i].name, name) == 0)
            return i;
    }
    return -1;
}

static void sp_open(struct pgw_notify_sub *sub, const char *name)
{
    struct notify_sp *grown = pgw_array_grow(sub->sp, sizeof(*grown), (size_t)sub->nsp,
                                             &sub->capsp, 4);
    if (!grown) {
        /* Short of memory: counted as before, by the latest. */
        for (int i = 0; i < sub->nsp; i++)
            sub->sp[i].name[0] = '\0';
        return;
    }
    sub->sp = grown;
    snprintf(sub->sp[sub->nsp++].name, sizeof(sub->sp[0].name), "%s", name);
}

static void sp_release(struct pgw_notify_sub *sub, const char *name)
{
    int i = sp_find(sub, name);
    if (i == -2)
        sub->nsp = sub->nsp > 0 ? sub->nsp - 1 : 0;
    else
        sub->nsp = i < 0 ? 0 : i;
    for (int j = 0; j < sub->ntx; j++)     /* part of the enclosing one now */
        if (sub->tx[j].depth > sub->nsp)
            sub->tx[j].depth = sub->nsp;
}

static void sp_rollback(struct pgw_notify_sub *sub, enum pgw_sp_kind kind, const char *name)
{
    int n = tx_current(sub);
    if (kind == PGW_SP_ROLLBACK) {
        tx_settle_to(sub, n, TX_ROLLBACK, 0);       /* the whole transaction */
        sub->nsp = 0;
        return;
    }
    int i = kind == PGW_SP_ROLLBACK_TO ? sp_find(sub, name) : -2;
    if (i == -2) {
        tx_settle(sub, n, TX_ROLLBACK);             /* to the latest (or not known) */
        return;
    }
    sub->nsp = i + 1;                                /* the savepoint stays open */
    tx_settle_to(sub, n, TX_ROLLBACK, sub->nsp);
}

/* An UNLISTEN ran on the client's server that pgwharf did not read (text
 * its parser does not take, a Parse it did not see bound): which channels
 * it names is not known, so it counts as UNLISTEN * of this request, at
 * its place among those noted, decided with them by the transaction.  It
 * can only leave the client fewer notifications after an UNLISTEN, never
 * ones PostgreSQL would not send.  false: out of memory. */
static bool tx_unlisten_unread(struct pgw_notify_sub *sub, int at)
{
    struct notify_txop *grown = pgw_array_grow(sub->tx, sizeof(*grown), (size_t)sub->ntx,
                                               &sub->captx, 2);
    if (!grown)
        return false;
    sub->tx = grown;
    if (sub->ntx == 0)
        sub->nsp = 0;                    /* counted from here */
    memmove(sub->tx + at + 1, sub->tx + at, (size_t)(sub->ntx - at) * sizeof(sub->tx[0]));
    sub->ntx++;
    struct notify_txop *op = &sub->tx[at];
    memset(op, 0, sizeof(*op));
    op->kind = PGW_UNLISTEN_ALL;
    op->req = sub->session->track.req_done;
    op->ran = true;
    op->depth = sub->nsp;
    return true;
}

void pgw_notify_tx_tag(struct pgw_session *s, const uint8_t *msg, uint32_t total)
{
    struct pgw_notify_sub *sub = s->notify;
    if (!sub)
        return;
    const char *tag = (const char *)msg + PGW_MSG_HDR;
    size_t n = total - PGW_MSG_HDR;
    bool listen = tag_is(tag, n, "LISTEN");
    bool unlisten = !listen && tag_is(tag, n, "UNLISTEN");
    if (sub->ntx == 0 && !unlisten)
        return;
    if (listen || unlisten) {
        /* It ran: the first noted of this request, of its kind, that had
         * not, and that runs (a Parse's, once a Bind of it followed). */
        /* Tags come in statement order: an UNLISTEN's is the next
         * noted statement's (that runs) or one pgwharf did not read,
         * which goes before that next one, not after it (review: an
         * unread UNLISTEN then LISTEN b in one Query unlistened b). */
        bool noted = false;
        int cur = tx_current(sub), next = cur;
        for (int i = 0; i < cur; i++) {
            struct notify_txop *op = &sub->tx[i];
            if (!op->ran && (!op->parsed || op->bound)) {
                next = i;
                break;
            }
        }
        for (int i = unlisten ? next : 0; i < cur && !noted; i++) {
            struct notify_txop *op = &sub->tx[i];
            if (!op->ran && !op->on_do && (op->kind == PGW_LISTEN) == listen &&
                (!op->parsed || op->bound)) {
                op->ran = true;
                op->doomed = false;
                op->depth = sub->nsp;
                noted = true;
            }
            if (unlisten)
                break;                   /* the next one or none */
        }
        if (unlisten && !noted && !tx_unlisten_unread(sub, next))
            pgw_session_close(s, "53200", "out of memory");
    } else if (tag_is(tag, n, "DO")) {
        for (int i = 0, cur = tx_current(sub); i < cur; i++) {
            struct notify_txop *op = &sub->tx[i];
            if (!op->ran && op->on_do) {
                op->ran = true;
                op->doomed = false;
                op->depth = sub->nsp;
                break;
            }
        }
    } else if (tag_is(tag, n, "SAVEPOINT")) {
        char name[PGW_CHANNEL_MAX + 1];
        sp_take(sub, PGW_SP_SAVE, name);
        sp_open(sub, name);
    } else if (tag_is(tag, n, "RELEASE")) {
        char name[PGW_CHANNEL_MAX + 1];
        sp_take(sub, PGW_SP_RELEASE, name);
        sp_release(sub, name);
    } else if (tag_is(tag, n, "COMMIT")) {
        tx_settle(sub, tx_current(sub), TX_COMMIT);
        sub->nsp = 0;
    } else if (tag_is(tag, n, "ROLLBACK")) {
        char name[PGW_CHANNEL_MAX + 1];
        enum pgw_sp_kind kind = sp_take(sub, PGW_SP_ROLLBACK_TO, name);
        sp_rollback(sub, kind, name);
    }
}

/* The request being answered ended (an error, or its ReadyForQuery): its
 * savepoint statements still noted did not run. */
static void sp_request_ended(struct pgw_notify_sub *sub)
{
    uint32_t done = sub->session->track.req_done;
    int k = 0;
    while (k < sub->nspq && (int32_t)(sub->spq[k].req - done) <= 0)
        k++;
    spq_drop(sub, k);
}

void pgw_notify_tx_error(struct pgw_session *s)
{
    struct pgw_notify_sub *sub = s->notify;
    if (!sub)
        return;
    for (int i = 0, n = tx_current(sub); i < n; i++)
        if (sub->tx[i].ran)
            sub->tx[i].doomed = true;
    sp_request_ended(sub);
}

bool pgw_notify_tx_ready(struct pgw_session *s, char status)
{
    struct pgw_notify_sub *sub = s->notify;
    if (!sub)
        return false;
    /* Those of this request or before are decided or kept; the others came
     * behind it.  (Called before the tracker counts this ReadyForQuery.) */
    tx_settle(sub, tx_current(sub), status == 'I' ? TX_ENDED : TX_GOES_ON);
    if (status != 'I' && s->track.sync_out <= 1 && s->track.fe_open == 0 && sub->nchans == 0) {
        /* Its transaction goes on and nothing behind may end it: what the
         * hub sent so far was committed before it (a client listening
         * already reads it at its transaction's end: maybe_for). */
        if (sub->nmaybe > 0)
            held_sweep(sub, unmarked_keep);
    }
    sp_request_ended(sub);
    if (status == 'I')
        sub->nsp = 0;
    /* A chained transaction ('T', 'E': COMMIT AND CHAIN) keeps its server,
     * which listens since the commit and sends what is committed meanwhile
     * before the ReadyForQuery that ends it (not in commit order with the
     * hub's copies: see "the ReadyForQuery of a transaction's LISTEN");
     * PostgreSQL sends the client nothing before that: the wait, if any,
     * is for that one.  (Held
     * here, the client pinned its server while the listening server might
     * wait for it.) */
    if (status == 'I' && hold_due(sub))
        return true;
    if (sub_empty(sub) && !sub->waiting)
        pgw_notify_session_gone(s);
    return false;
}

void pgw_notify_discard(struct pgw_session *s)
{
    /* Its channels, and (as in PostgreSQL) what came for them and is not
     * delivered yet; its prepared statements.  A LISTEN or UNLISTEN the
     * client sent behind it runs after it: it stays noted. */
    struct pgw_notify_sub *sub = s->notify;
    if (!sub || sub->waiting)
        return;
    int n = tx_current(sub);
    bool behind = false;             /* noted in its batch, after it */
    for (int i = 0; i < n; i++)
        behind |= !sub->tx[i].ran;
    if (n == sub->ntx && !behind) {
        pgw_notify_session_gone(s);
        return;
    }
    tx_settle(sub, n, TX_DISCARDED);
    pgw_notify_unlisten(sub, PGW_UNLISTEN_ALL, NULL);
    held_clear(sub);
    if (sub->ending == NOTIFY_END_BACKLOG)
        sub->ending = NOTIFY_END_NONE;   /* what it missed was for channels it left */
    pgw_notify_vstmt_clear(sub);
}

/* Its server went back (or was never had): anything still noted is
 * forgotten.  (A Parse prepared.c held past the transaction's end is
 * noted again when the relay scans it on the next server.) */
static void tx_unlinked(struct pgw_notify_sub *sub)
{
    if (sub->ntx > 0)
        tx_settle(sub, sub->ntx, TX_DROPPED);
}

void pgw_notify_counts(const struct pgw_proxy *px, uint64_t *channels, uint64_t *clients)
{
    *channels = *clients = 0;
    for (struct pgw_list *n = px->notify_hubs.next; n != &px->notify_hubs; n = n->next) {
        const struct pgw_notify_hub *h = pgw_container_of(n, struct pgw_notify_hub, node);
        *channels += (uint64_t)h->nchans;
        for (struct pgw_list *l = h->subs.next; l != &h->subs; l = l->next) {
            const struct pgw_notify_sub *sub = pgw_container_of(l, struct pgw_notify_sub, node);
            *clients += sub->nchans > 0;
        }
    }
}

void pgw_notify_init(struct pgw_proxy *px)
{
    pgw_list_init(&px->notify_hubs);
}

void pgw_notify_destroy(struct pgw_proxy *px)
{
    while (!pgw_list_empty(&px->notify_hubs))
        hub_free(pgw_container_of(pgw_list_first(&px->notify_hubs), struct pgw_notify_hub, node));
    pgw_pgenc_set_free(&px->notify_enc);
}
