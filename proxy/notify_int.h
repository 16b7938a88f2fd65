/*
 * notify_int.h - what the LISTEN/NOTIFY files share; never included
 * outside proxy/notify*.c.
 *
 *   notify.c       the hubs (one listening server per pool), the fan-out
 *                  of notifications, a lone LISTEN/UNLISTEN as a simple
 *                  Query, the session's side (delivery, flush, leaving)
 *   notify_ext.c   the same statements through the extended protocol: the
 *                  batch reader and the session's virtual prepared
 *                  statements (vstmt)
 *   notify_bridge.c  the bridge: the server a committed LISTEN ran on,
 *                  kept listening for its client until the hub's server
 *                  listens on the channel (no notification lost in between)
 *
 * Ownership: a session's struct pgw_notify_sub (s->notify) is notify.c's
 * (made by pgw_notify_sub_get, freed by pgw_notify_session_gone); the
 * vstmt table in it is filled and read by notify_ext.c, freed with the sub;
 * its bridge (sub->bridge) is notify_bridge.c's, ended with the sub.
 */
#ifndef PGW_PROXY_NOTIFY_INT_H
#define PGW_PROXY_NOTIFY_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/list.h"
#include "common/wire.h"
#include "proxy/codec.h"
#include "proxy/proxy_int.h"

/* The type byte of a held copy that may not be the client's (sub->pending,
 * maybe_add); 'A' once it is. */
#define HELD_MAYBE 'a'
/* ... of the client's server's own copy of a channel that is not the
 * hub's (a LISTEN in a function): the client's whatever it listens on
 * through the hub; 'A' when it goes out. */
#define HELD_OWN 's'
/* ... of a mark where notifications held for the client were dropped past
 * what may be held (lost_note; notify.c's held_max, twice
 * max_notify_backlog, for its own, max_notify_backlog for the copies that
 * may be its): HELD_LOST of a channel it listens on,
 * HELD_LOST_MAYBE of hub's copies that may be its (as HELD_MAYBE): the
 * channel, no process ID (0) and no payload; each drop is counted as it
 * happens, so one mark a channel and type stands for them all. */
#define HELD_LOST 'x'
#define HELD_LOST_MAYBE 'y'

/* A LISTEN or UNLISTEN the client prepared (extended protocol): pgwharf
 * answers its Parse and runs it at its Execute; no server has it. */
#define NOTIFY_STMT_NAME_MAX PGW_NOTIFY_STMT_NAME_MAX
struct notify_vstmt {
    char name[NOTIFY_STMT_NAME_MAX + 1];     /* "" = the unnamed statement */
    enum pgw_listen_kind kind;
    char chan[PGW_CHANNEL_UTF8_MAX + 1];
    char *sql;                               /* its text as the client sent it:
                                                owned by the session's table */
};

struct pgw_notify_hub;
struct notify_req;                  /* a statement for the hub's server */
struct notify_bridge;               /* notify_bridge.c */

/* A lone LISTEN or UNLISTEN the client ran on its own server, in a
 * transaction: the hub's once that commits (notify.c, pgw_notify_tx_*). */
struct notify_txop {
    enum pgw_listen_kind kind;
    uint32_t req;                       /* its request's number (the tracker's
                                           req_done counts them) */
    int at;                             /* messages of its batch before it */
    bool ran;                           /* its CommandComplete came */
    bool doomed;                        /* an error or a ROLLBACK came since it ran:
                                           gone if its transaction ends now */
    int depth;                          /* savepoints open when it ran */
    bool parsed;                        /* a Parse's: runs only if a Bind of its
                                           statement follows in its batch */
    bool bound;
    bool on_do;                         /* UNLISTEN * for a DO block whose text
                                           holds UNLISTEN: runs with its DO tag */
    bool claimed;                       /* a Bind prepared.c sent took it
                                           (pgw_notify_tx_bound): a later
                                           Bind of it is noted anew */
    char stmt[NOTIFY_STMT_NAME_MAX + 1];  /* a Parse's statement */
    char chan[PGW_CHANNEL_UTF8_MAX + 1];
};

/* A savepoint open in the client's transaction, counted from its first
 * noted LISTEN or UNLISTEN; name "" when pgwharf did not read it. */
struct notify_sp {
    char name[PGW_CHANNEL_MAX + 1];
};

/* A savepoint statement the client sent (SAVEPOINT, RELEASE, ROLLBACK
 * [TO]), waiting for its tag, which says it ran. */
struct notify_spcmd {
    enum pgw_sp_kind kind;
    uint32_t req;
    char name[PGW_CHANNEL_MAX + 1];
};

/* A notification the client's own server sent it for a channel the hub
 * has (or takes over) for it: the hub's copy of it is not sent again. */
struct notify_echo {
    uint64_t hash;                      /* of the message as the client got it */
    uint32_t len;
    uint32_t gen;                       /* 0 while the client holds that server;
                                           then its hub barrier's (hub_echo_end) */
};

/* Why a listening client is to be disconnected between transactions
 * (sub->ending): its notifications can no longer all reach it. */
enum notify_end {
    NOTIFY_END_NONE,
    NOTIFY_END_NO_ROOM,                 /* a reload ended its hub (hub_end) */
    NOTIFY_END_LOST,                    /* its hub's server was lost (hub_lost) */
    NOTIFY_END_BACKLOG,                 /* more than max_notify_backlog bytes waited
                                           for it (backlog_over) */
};

struct pgw_notify_sub {
    struct pgw_notify_hub *hub;
    struct pgw_session *session;
    struct notify_vstmt *vst;           /* notify_ext.c's */
    int nvst;
    size_t capvst;
    /* A portal of a vstmt bound in a batch that ended at a Flush, before its
     * Execute (Parse, Bind, Flush, then Execute, Sync): the next batch's
     * Execute or Describe of it.  (sql NULL: only the kind and channel.) */
    struct notify_vstmt held;
    char held_portal[NOTIFY_STMT_NAME_MAX + 1];
    bool has_held;
    struct pgw_list node;
    char (*chans)[PGW_CHANNEL_UTF8_MAX + 1];
    int nchans;
    size_t capchans;
    struct pgw_wbuf pending;            /* notifications for after its transaction,
                                           in the order they came; nmaybe of them
                                           marked HELD_MAYBE (notify.c, maybe_add):
                                           the hub's copies for a channel only its
                                           transaction listens on, which may have
                                           committed (and HELD_LOST_MAYBE marks of
                                           those dropped past the bound) */
    int nmaybe;
    size_t maybe_bytes;                 /* the HELD_MAYBE ones': up to max_notify_backlog
                                           (notify.c, maybe_add) */
    size_t lost_from;                   /* 1 + the offset in pending of its first
                                           mark (notify.c, lost_note); 0: none */
    bool waiting;                       /* its LISTEN runs on the hub's server */
    ev_tstamp wait_since;               /* ... asked for then */
    enum notify_end ending;             /* closed between transactions (at once or
                                           at its transaction's end) */
    const char *end_why;                /* NOTIFY_END_LOST: hub_lost's reason */
    bool end_listen;                    /* ... the hub's LISTEN failed: end_why is its
                                           message (end_msg), end_state its SQLSTATE */
    char end_state[6];                  /* the failure it ends for, kept apart from */
    char end_msg[256];                  /* hold_state/hold_msg (a later hold_fail) */
    bool enc_warned;                    /* a notification it could not take was logged */
    bool backlog_warned;                /* one past max_notify_backlog was logged
                                           (notify.c, backlog_warn): once a client */
    bool warned_held;                   /* ... for one held, which its transaction's
                                           end may discard: then logged again at
                                           the next (pgw_notify_flush) */
    struct notify_txop *tx;             /* run in its open transaction, in order */
    int ntx;
    size_t captx;
    struct notify_sp *sp;               /* open savepoints, counted from its first
                                           noted one */
    int nsp;
    size_t capsp;
    struct notify_spcmd *spq;           /* sent, their tags not back yet */
    int nspq;
    size_t capspq;
    char (*fresh)[PGW_CHANNEL_UTF8_MAX + 1]; /* taken over by the hub while the client
                                           still holds the server they ran on */
    int nfresh;
    size_t capfresh;
    struct notify_echo *echo;
    int necho;
    size_t capecho;
    /* Channels its transaction's LISTEN made its own at the commit, the
     * hub not listening on them yet: the ReadyForQuery that ends the
     * transaction waits for that (held: pgw_iobuf hold in its sbuf). */
    char (*await)[PGW_CHANNEL_UTF8_MAX + 1];
    int nawait;
    size_t capawait;
    bool rfq_held;                      /* its sbuf is held (hold_end lifts it) */
    ev_tstamp held_since;
    bool hold_canceled;                 /* a cancel ended the hold (a WARNING goes) */
    bool hold_failed;                   /* the hub could not listen: this error goes */
    bool hold_listen;                   /* ... its LISTEN failed (hold_fail_listen) */
    char hold_state[6];                 /* before the ReadyForQuery, its channels */
    char hold_msg[256];                 /* not the client's (hold_fail) */
    struct notify_bridge *bridge;       /* the server its LISTEN ran on, listening for
                                           it until the hub takes over (notify_bridge.c) */
};

/* ---- notify.c, for notify_ext.c ---- */

/* pgw_listen_parse of s's statement text sql[0..len), which is in s's
 * client_encoding: chan comes in UTF-8, the listening server's (and
 * *converted says whether it had to be converted, so the server must not
 * run sql as it is).  PGW_LISTEN_NONE when not a lone LISTEN or UNLISTEN,
 * or when the text does not convert (the server reports it). */
enum pgw_listen_kind pgw_notify_parse(const struct pgw_session *s, const char *sql, size_t len,
                                      char chan[PGW_CHANNEL_UTF8_MAX + 1], bool *converted,
                                      struct pgw_ident_full *full);

/* PostgreSQL's NOTICE 42622 for a channel name it cuts (full, from
 * pgw_notify_parse, cut to chan), in s's client_encoding, onto b; nothing
 * when the name was not cut.  pgwharf sends it where it answers or runs
 * the statement for the client, as PostgreSQL's scanner does: before
 * the Parse's ParseComplete, the Query's CommandComplete. */
void pgw_notify_truncated(const struct pgw_session *s, struct pgw_wbuf *b,
                          const struct pgw_ident_full *full, const char *chan);

/* The first n bytes of a statement's text could start LISTEN or UNLISTEN. */
bool pgw_notify_may_be_listen(const char *sql, size_t n);

/* A LISTEN of s may take a listening server (see there); false: it runs on
 * the client's server, as before. */
bool pgw_notify_room_for_hub(const struct pgw_session *s);

/* s's sub, made (with its pool's hub) when missing; NULL when memory is
 * short. */
struct pgw_notify_sub *pgw_notify_sub_get(struct pgw_session *s);

/* UNLISTEN chan (PGW_UNLISTEN) or UNLISTEN * (PGW_UNLISTEN_ALL) for sub. */
void pgw_notify_unlisten(struct pgw_notify_sub *sub, enum pgw_listen_kind kind,
                         const char *chan);

/* LISTEN "chan" as the hub writes it, followed in its batch by closes
 * Closes of its portal or statement (stmt: the statement's key when one
 * is of it, else NULL), answered after its CommandComplete; NULL when
 * memory is short. */
struct notify_req *pgw_notify_listen_req(const char *chan, int closes, const char *stmt);

/* sub listens to nothing, keeps no statement, holds nothing and waits
 * for no LISTEN: it can go (pgw_notify_session_gone). */
bool pgw_notify_sub_idle(const struct pgw_notify_sub *sub);

/* n CloseCompletes onto b, for Closes after a prepared LISTEN's or
 * UNLISTEN's Execute that succeeded; stmt (when not NULL) is no more. */
void pgw_notify_closes(struct pgw_notify_sub *sub, struct pgw_wbuf *b, int n, const char *stmt);

/* s's LISTEN r (from pgw_notify_listen_req, or the client's own text) goes
 * to the hub's server; s reads nothing more until its reply is through.
 * s may be closed on return. */
void pgw_notify_ask(struct pgw_session *s, struct notify_req *r);

/* Whole messages to a client that holds no server, its buffer grown to
 * take them; false when memory is short. */
bool pgw_notify_send(struct pgw_session *s, const uint8_t *msg, size_t n);

/* pgw_notify_stmt_key (proxy_int.h): whole false takes at least
 * NOTIFY_STMT_NAME_READ bytes. */
#define NOTIFY_STMT_NAME_READ PGW_NOTIFY_STMT_NAME_READ

/* ---- notify.c, for notify_bridge.c ---- */

/* The hub's copy msg (in UTF-8, as the hub's server sent it) for s, as the
 * fan-out gives it: if s listens on its channel (or its transaction may
 * have), converted to s's client_encoding, held or sent. */
void pgw_notify_hub_copy(struct pgw_session *s, const uint8_t *msg, uint32_t total);
/* msg (in UTF-8), from another server than the hub's: s's when s listens
 * on its channel, held or sent as the hub's copies are. */
void pgw_notify_deliver_own(struct pgw_session *s, const uint8_t *msg, uint32_t total);
/* s's listening may have missed notifications (why: a reason kept in the
 * sub): it is disconnected with FATAL 08006 between transactions, as when
 * the hub's server is lost (hub_lost). */
void pgw_notify_sub_lost(struct pgw_notify_sub *sub, const char *why);
bool pgw_notify_sub_listens_on(const struct pgw_notify_sub *sub, const char *chan);
/* The hub's server listens on chan (its LISTEN ran, none is queued). */
bool pgw_notify_hub_listens(const struct pgw_notify_sub *sub, const char *chan);
/* The channel the hub's server listens on for the bridges' markers; NULL
 * while it does not (yet): asked for with want true. */
const char *pgw_notify_hub_marker(struct pgw_notify_hub *h, bool want);
/* Bridges of the sub's hub now (delta: one more or one fewer). */
int pgw_notify_hub_bridges(struct pgw_notify_hub *h, int delta);
struct pgw_pool *pgw_notify_hub_pool(const struct pgw_notify_hub *h);
/* One of s's notifications dropped past max_notify_backlog while the end
 * it brings waits (the bridge's copies before it still come): counted,
 * and logged at the first; pgw_notify_backlog_end later ends s (54000)
 * once it has read what it was owed, as backlog_over does at once. */
void pgw_notify_backlog_dropped(struct pgw_session *s);
void pgw_notify_backlog_end(struct pgw_session *s);
/* The Int32 pid, channel, payload of a NotificationResponse (whole,
 * checked): its channel. */
const char *pgw_notify_msg_chan(const uint8_t *msg);
/* A NotificationResponse's hash (whole, total bytes), its type byte left
 * out: a held copy's (HELD_MAYBE, HELD_OWN) is the same notification.  The
 * hub's echoes (notify.c) and the bridge's seen copies compare by it. */
uint64_t pgw_notify_msg_hash(struct pgw_proxy *px, const uint8_t *msg, uint32_t total);

/* ---- notify_bridge.c, for notify.c ---- */

/* The hub's copy msg for sub, which has a bridge: true when the bridge
 * takes it (dropped: the bridge sends the client its own copy; or kept
 * until the bridge's marker comes). */
bool pgw_notify_bridge_hub_copy(struct pgw_notify_sub *sub, const uint8_t *msg, uint32_t total);
/* The hub's server sent a notification on its marker channel with this
 * payload: true when it is sub's bridge's marker. */
bool pgw_notify_bridge_hub_marked(struct pgw_notify_sub *sub, const char *payload);
/* The hub may listen on the bridge's channels now: its marker goes when
 * it does. */
void pgw_notify_bridge_check(struct pgw_notify_sub *sub);
/* From the hub's tick: the bridge's time is up, or its pool paused. */
void pgw_notify_bridge_tick(struct pgw_notify_sub *sub, ev_tstamp now, bool paused);
/* The bridge goes (its server closed): why NULL when its client is ended
 * anyway (the hub's server lost, the sub's end); else its client may have
 * missed notifications: event=notify_bridge_lost, and FATAL 08006. */
void pgw_notify_bridge_end(struct pgw_notify_sub *sub, const char *why);
/* sub's bridge is past max_notify_backlog (a copy after the hub's marker
 * dropped: event=notification_dropped said 54000) and ends before its
 * marker, or sub's hub's server is lost: true, and sub is ended as past
 * the bound (54000, pgw_notify_backlog_end) after what reached it, not
 * 08006 (review r1's b->over left the lost bridge's answer, 08006). */
bool pgw_notify_bridge_over_end(struct pgw_notify_sub *sub);

/* ---- notify_ext.c, for notify.c ---- */

/* SQL DEALLOCATE of the prepared LISTEN or UNLISTEN of key
 * (pgw_notify_dealloc_key's): false when sub has none of that key. */
bool pgw_notify_vstmt_forget(struct pgw_notify_sub *sub, const char *name);
bool pgw_notify_vstmt_has(struct pgw_notify_sub *sub, const char *name);
/* Every vstmt of sub goes (DEALLOCATE ALL, DISCARD ALL, the sub's end). */
void pgw_notify_vstmt_clear(struct pgw_notify_sub *sub);
/* A Bind, Describe or Parse of vstmt key goes to the client's server
 * (inside a transaction, or in a batch with other statements), which
 * lacks it: prepared.c takes the statement over (a Bind or Describe then
 * prepares it there first, a Parse is refused) and the vstmt goes; not
 * the unnamed one, nor with max_prepared_statements = 0.  false when out
 * of memory. */
bool pgw_notify_vstmt_to_server(struct pgw_session *s, const char *key);

/* A Parse or Bind at the head of s's buffer (s holds no server): as
 * pgw_notify_query. */
int pgw_notify_ext_batch(struct pgw_session *s);

#endif
