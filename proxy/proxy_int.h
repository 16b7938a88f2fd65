/*
 * proxy_int.h - the proxy's internal types, shared by the files of proxy/
 * and never included from outside it (but for its tests).
 *
 * Ownership: struct pgw_proxy owns listeners, sessions, the buffer free
 * list, the pool set, the auth file and the config.  A session owns its
 * client fd, its two I/O buffers while they hold bytes, and -- while
 * linked -- the lent server (returned through pgw_pool_release).
 */
#ifndef PGW_PROXY_PROXY_INT_H
#define PGW_PROXY_PROXY_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "common/list.h"
#include "common/pgenc.h"
#include "common/wire.h"
#include "conf/conf.h"
#include "ctx/ctx.h"
#include "pool/pool.h"
#include "proxy/proxy.h"
#include "proxy/track.h"

/* Messages of a request queued on a busy server (relay.c): Query, or
 * Parse, Bind, Describe, Execute, Sync and one more of them. */
#define PGW_PIPE_REQ_MAX 6

/* ---- I/O buffers: fixed size, pooled, taken on first use ---- */
#define PGW_IOBUF_SIZE (32 * 1024)

/* data[0 .. sent) written out, [sent .. parsed) scanned and ready to send,
 * [parsed .. len) received but not yet scanned (a partial header or a
 * message that must be whole to be inspected).  A client's buffer may be
 * held at `hold` (sent <= hold <= parsed): what is from there on waits
 * (notify.c: the ReadyForQuery of a transaction whose LISTEN the listening
 * server has yet to run, and all behind it); the functions below keep
 * `hold` on its byte as they move the data. */
struct pgw_iobuf {
    uint32_t sent, parsed, len, cap;
    uint32_t hold;
    bool held;
    struct pgw_list node;            /* free list */
    uint8_t data[];
};

/* The end of what may go out now: parsed, or the hold. */
static inline uint32_t pgw_iobuf_out_end(const struct pgw_iobuf *b)
{
    return b->held && b->hold < b->parsed ? b->hold : b->parsed;
}

/* The largest message pgwharf holds whole (to inspect or rewrite it). */
#define PGW_IOBUF_MAX (64u * 1024 * 1024)
/* The most a buffer holds once pgwharf has added bytes of its own to what
 * the client sent (prepared.c's DEALLOCATE rewrite): a buffer grown for
 * PGW_IOBUF_MAX maps up to 64 kB more (pgw_iobuf_reserve's steps), which
 * the client's reads may fill, and one buffer more for what is added. */
#define PGW_IOBUF_EDIT_MAX (PGW_IOBUF_MAX + 3u * PGW_IOBUF_SIZE)

struct pgw_iobuf *pgw_iobuf_get(struct pgw_proxy *px);
/* Make *bp hold at least `need` bytes from its first unsent one, moving to
 * a larger mapping if needed (given back when the buffer empties).  False
 * when need exceeds PGW_IOBUF_MAX or memory is short. */
bool pgw_iobuf_reserve(struct pgw_proxy *px, struct pgw_iobuf **bp, uint32_t need);
/* The same up to PGW_IOBUF_EDIT_MAX: room for what pgwharf adds in front
 * of, or into, what the client sent, which may already fill a buffer of
 * the largest size. */
bool pgw_iobuf_reserve_edit(struct pgw_proxy *px, struct pgw_iobuf **bp, uint32_t need);
void pgw_iobuf_put(struct pgw_proxy *px, struct pgw_iobuf *b);
/* Move unsent bytes to the front to make room at the end. */
void pgw_iobuf_compact(struct pgw_iobuf *b);
/* Append proxy-made bytes after everything received; false if no room. */
bool pgw_iobuf_append(struct pgw_iobuf *b, const void *p, size_t n);
/* Insert bytes at `at` (sent <= at <= len), shifting the rest up. */
bool pgw_iobuf_insert(struct pgw_iobuf *b, uint32_t at, const void *p, size_t n);
/* Remove n bytes at `at`, shifting the rest down. */
void pgw_iobuf_cut(struct pgw_iobuf *b, uint32_t at, uint32_t n);

/* ---- parameters a client sees and the pooler keeps in step ---- */
enum pgw_tracked_param {
    PGW_TP_CLIENT_ENCODING,
    PGW_TP_DATESTYLE,
    PGW_TP_TIMEZONE,
    PGW_TP_INTERVALSTYLE,
    PGW_TP_STANDARD_CONFORMING_STRINGS,
    PGW_TP_APPLICATION_NAME,
    PGW_TP_EXTRA_FLOAT_DIGITS,       /* not reported by the server: kept as set */
    PGW_TP_COUNT                     /* then track_extra_parameters' (px->tracked) */
};
#define PGW_TP_MAX (PGW_TP_COUNT + PGW_CONF_TRACK_EXTRA_MAX)
#define PGW_SYNC_CHECK 0xff           /* sync_order: no parameter's SET (relay.c) */
extern const char *const pgw_tracked_param_names[PGW_TP_COUNT];
struct pgw_proxy;
struct pgw_told;                     /* relay.c: what a bare welcome said */
/* The tracked parameters: the built-in ones, then track_extra_parameters
 * but those already built in (fixed at start).  0 or PGW_ECONFIG. */
int pgw_tracked_params_init(struct pgw_proxy *px, char *errbuf, size_t errlen);
/* Its index in px->tracked (case does not matter), -1 when not tracked. */
int pgw_tracked_param_index(const struct pgw_proxy *px, const char *name);

/* ---- sessions ---- */
struct ssl_st;                       /* OpenSSL's SSL and SSL_CTX */
struct ssl_ctx_st;

enum pgw_sess_state {
    PGW_SS_STARTUP,          /* reading the first packet */
    PGW_SS_AUTH,             /* waiting for the password message */
    PGW_SS_LOGIN_WAIT,       /* waiting for a server to learn its parameters */
    PGW_SS_LOGIN_SYNC,       /* server linked, startup SETs in flight */
    PGW_SS_IDLE,             /* logged in, no server linked */
    PGW_SS_WAIT_SERVER,      /* client bytes pending, acquiring */
    PGW_SS_LINKED,           /* relaying */
    PGW_SS_ADMIN,            /* talking to the admin console */
    PGW_SS_CANCEL,           /* a CancelRequest connection */
    PGW_SS_CLOSING
};
const char *pgw_sess_state_name(enum pgw_sess_state s);

/* Client messages the relay drops (relay.c, scan_client).  A request that
 * failed before it reached a server (no server for it, a cancel while it
 * waited) is dropped as PostgreSQL skips one after an error, then answered
 * with ReadyForQuery (fail_request). */
enum pgw_discard {
    PGW_DISCARD_NONE,
    PGW_DISCARD_UNTYPED,     /* its first message that is not a Flush or a stray
                                CopyData, CopyDone or CopyFail (which PostgreSQL
                                ignores) is still to come: it tells what ends it */
    PGW_DISCARD_TO_SYNC,     /* it began with an extended-protocol message: only a
                                Sync ends it (PostgreSQL skips a Query or
                                FunctionCall before it) */
    PGW_DISCARD_LAST,        /* the message being dropped (cskip) ends it */
    PGW_DISCARD_STRAY,       /* not a request: the rest of a message PostgreSQL would
                                ignore, sent with no server linked (scan_client) */
};

/* What ends a login whose startup parameter the server refused: the
 * server's SQLSTATE and message, in one allocation (free() it). */
struct pgw_login_refusal {
    char sqlstate[6];
    const char *detail;              /* in message's bytes, after it; NULL: none */
    char message[];
};

/* Statement names a link forgets at most (pgw_session.stmt_forget). */
#define PGW_STMT_FORGET_MAX 8
/* SQL PREPAREs of one Query read at their tags (pgw_session.stmt_prep). */
#define PGW_STMT_PREP_MAX 4
#define PGW_STMT_PREP_UNREAD 0x80

/* What a Bind's statement, or the unnamed portal, runs as to an SQL
 * PREPARE (relay.c stmt_portal_*): nothing of one, one (its name hash and
 * words as pgw_session.stmt_prep's), or not known. */
enum pgw_portal_prep { PGW_PORTAL_PREP_NONE, PGW_PORTAL_PREP_ONE, PGW_PORTAL_PREP_MAYBE };
struct pgw_portal_prep_ref {
    uint64_t h;
    uint8_t w;
    uint8_t kind;                    /* enum pgw_portal_prep */
};

struct pgw_session {
    struct pgw_proxy *px;
    uint64_t id;
    enum pgw_sess_state state;
    int fd;
    bool unix_sock;
    struct sockaddr_storage addr;
    char addr_text[64];              /* "ip:port" or "unix" */
    ev_io cli_r, cli_w;
    ev_timer timer;                  /* login, idle, query, idle-in-transaction */
    ev_tstamp connect_time;          /* times: pgw_mono_now(), common/clock.h */
    ev_tstamp last_activity;         /* last byte either way */
    ev_tstamp query_start;           /* first outstanding request, 0 when none */
    ev_tstamp ready_at;              /* the server last became ready for a request
                                        (the link, a ReadyForQuery) */
    ev_tstamp query_floor;           /* a ReadyForQuery inside a pipeline: the request
                                      * after it started there (query_timeout) */
    ev_tstamp waited_since;          /* the request the server was taken for began
                                        waiting for it then (query_timeout counts the
                                        wait, as PgBouncer's); 0 once it is answered */
    uint64_t list_seq;               /* when it last joined PgBouncer's active or waiting
                                        client list (pgw_session_list_join) */
    struct pgw_list node;            /* proxy's session list / close list */
    struct pgw_list over_node;       /* px->over_limit while over_limit, oldest first */
    struct pgw_list cancel_node;     /* cancel key hash bucket */
    struct pgw_ctx *ctx;

    /* who */
    char *user, *database;
    const struct pgw_conf_db *db;
    struct pgw_pool *pool;
    enum pgw_pool_mode mode;
    int replication;                 /* PGW_REPL_*: the startup parameter; such a
                                        client has a server of its own (session
                                        mode whatever the pool's) */
    char *repl_options;              /* its startup parameters for that server
                                        (relay.c acquire_replication) */
    bool is_admin, admin_can_write;
    bool admin_local;                /* the console's user "pgbouncer" from pgwharf's
                                        own Unix user on the socket: in without a
                                        password, as an admin (auth.c) */
    uint32_t cancel_pid, cancel_key; /* issued by pgwharf */
    uint8_t md5_salt[4];
    char *params[PGW_TP_MAX];        /* what the client should see, by px->tracked
                                        index; NULL = server's */
    uint64_t params_sig;             /* summary of params (relay.c), 0 = stale */
    const char *close_detail;        /* the DETAIL of pgw_session_close's FATAL, or NULL */
    struct pgw_login_refusal *login_refusal; /* a startup parameter the server
                                                refused (relay.c) */
    char *startup_order;             /* a tracked parameter came twice with different
                                        values: the packet's tracked values in the
                                        order PostgreSQL applies them, for the login's
                                        server to check ("name\0value\0...\0";
                                        session.c list_startup_order); NULL once welcomed */

    /* relay */
    struct pgw_iobuf *cbuf;          /* client -> server */
    struct pgw_iobuf *sbuf;          /* server -> client (and proxy's own replies) */
    struct pgw_server *server;
    struct pgw_pool_waiter waiter;
    uint32_t cskip, sskip;           /* body bytes of the current message still to pass */
    bool cmsg_alone;                 /* ... of one sent when nothing was under way */
    bool cskip_copy;                 /* ... a CopyData relayed in part (relay.c) */
    bool settings_pending;           /* sent what may change a tracked setting (a SET:
                                        params are current at its answer), not all
                                        answered yet: Parses share no statement */
    bool unnamed_sets;               /* the unnamed statement's text may change a
                                        setting: so may a Bind of it */
    uint32_t settings_gen;           /* bumped at each message sent that may change
                                        a tracked setting: while one is unanswered,
                                        a Parse is read in the settings since the
                                        latest (prepared.c, parse_context_now) */
    struct pgw_track track;          /* what decides the release (track.h) */
    int swallow;                     /* injected queries whose replies are dropped */
    uint8_t sync_order[PGW_TP_MAX + 1]; /* the parameter of each SET/RESET swallowed
                                        (PGW_SYNC_CHECK: the check of startup_order) */
    uint8_t sync_queued;             /* how many the link queued (sync_params) */
    bool sync_err;                   /* the one being answered failed */
    bool sync_hold;                  /* those are the link's SETs (sync_params): the
                                        client's request waits for their answers */
    bool sync_failed;                /* one of them failed: they are sent again before
                                        the client's request (relay.c, sync_done) */
    bool sync_resume;                /* all answered: the client's request goes now */
    uint8_t sync_tries;              /* rounds of them that failed at this link */
    char sync_fail_state[6];         /* the SQLSTATE of the last that failed */
    char *sync_fail_msg;             /* ...and its message (malloc'd; NULL: none) */
    enum pgw_discard discard;        /* a failed request being dropped (relay.c) */
    bool terminating;                /* client sent Terminate */
    bool term_wait;                  /* ...with requests unanswered: the session ends
                                        once they are, as at client_eof (relay.c) */
    /* The open batch on the server as far as Closes go (relay.c
     * close_batch_sent): its Closes, their CloseCompletes in, anything
     * else in it (or an error), a Flush after its last Close. */
    int cb_closes;
    int cb_done;
    bool cb_other;
    bool cb_flushed;
    bool left_queue;                 /* it left the pool's queue at its end (relay.c,
                                        leave_queue): idle since, but the close log
                                        says waiting, the state it left */
    bool fe_invalid;                 /* ...in place of a message of a type PostgreSQL
                                        refuses after login: the end is FATAL 08P01 */
    uint8_t fe_invalid_type;         /* ...that message's type byte */
    bool term_sent;                  /* ...and that end (or the Terminate) went to the
                                        server, which answers it and closes (relay.c,
                                        term_to_server) */
    ev_tstamp term_sent_at;          /* ...when (server_connect_timeout bounds the wait
                                        for that close: session.c) */
    bool srv_eof_due;                /* the client's stream ended inside a CopyData
                                        relayed in part: the end goes to the server
                                        once all is on it (relay.c, eof_cut_to_server) */
    uint8_t copy_abort;              /* ...in the client's COPY FROM STDIN: pgwharf's
                                        CopyFail and marker are out (relay.c,
                                        COPY_ABORT_*) */
    bool copy_abort_ours;            /* ...and the COPY failed at that CopyFail: the
                                        FATAL is PostgreSQL's for a COPY */
    bool copy_abort_lost;            /* ...and a write to the client failed since:
                                        nothing more goes to it */
    uint32_t copy_abort_z;           /* ReadyForQuerys held back meanwhile */
    char copy_abort_zs;              /* ...their status */
    char copy_abort_name[40];        /* the marker's portal name (random) */
    char *copy_abort_where;          /* the CONTEXT (W) of the server's error at
                                        pgwharf's CopyFail: the COPY's line, which
                                        PostgreSQL's error at the refused message
                                        names too (malloc'd, or NULL) */
    bool copy_mixed;                 /* the client's last message other than
                                        CopyData/Flush/Sync/CopyDone/CopyFail came
                                        behind a request not answered yet */
    uint32_t copy_mixed_seq;         /* ...the number of its request (track.req_done
                                        + sync_out then): all before it answered at
                                        the CopyInResponse, it was the COPY's own */
    bool ssl_asked, gss_asked;       /* SSLRequest / GSSENCRequest answered 'N' (a
                                        second is refused, as by PostgreSQL) */
    char server_fatal[6];            /* SQLSTATE of a FATAL (or PANIC) the server sent
                                        the client: the close that follows is that
                                        error's, no second one of pgwharf's own */
    bool client_eof;                 /* the client's stream ended (it closed, or shut
                                        down its sending side): what it sent whole
                                        runs, then the session ends (relay.c) */
    uint32_t state_words;            /* PGW_WORDS_STATE in what the client sent
                                        on this link (transaction/statement
                                        mode): with a CommandComplete tag, what
                                        it may leave on the server
                                        (relay.c: note_leftover) */
    uint32_t unnamed_words;          /* PGW_WORDS_STATE in the text of the client's
                                        last Parse into the unnamed statement: a
                                        Bind of it in a later transaction notes
                                        them (relay.c: stmt_words_bind); with
                                        PGW_WORDS_PREPARE and PGW_WORDS_EXECUTE:
                                        an SQL PREPARE or EXECUTE in it */
    uint64_t unnamed_server;         /* the server that Parse was read on (its
                                        EXECUTE's words are that server's) */
    uint64_t unnamed_prep;           /* the name hash its SQL PREPARE makes, and */
    uint8_t unnamed_prep_words;      /* its words (as pgw_session.stmt_prep's) */
    bool unnamed_prep_is;            /* its text is an SQL PREPARE */
    /* The SQL PREPAREs of a Query sent with nothing else outstanding, in its
     * order, or of the Executes of the first request sent so (the extended
     * protocol): at each tag "PREPARE" the next ran (relay.c
     * stmt_sql_prepared).  Its hash and PGW_WORDS_STATE >> 27
     * (PGW_STMT_PREP_UNREAD: a name not read). */
    uint64_t stmt_prep[PGW_STMT_PREP_MAX];
    uint8_t stmt_prep_words[PGW_STMT_PREP_MAX];
    uint8_t stmt_prep_n, stmt_prep_at;
    bool stmt_prep_open;             /* an Execute of a PREPARE sent now is the
                                        next in stmt_prep: nothing that may tag
                                        "PREPARE" went unlisted since the link
                                        was last idle (relay.c stmt_portal_run) */
    struct pgw_portal_prep_ref bind_prep;    /* the Bind being read runs this */
    struct pgw_portal_prep_ref portal_prep;  /* the unnamed portal's, as sent */
    bool stmt_prep_due;              /* the Query scanned has a PREPARE (note_setting_words) */
    bool stmt_prep_loose;            /* PREPAREs kept as sent, not at their tag,
                                        since nothing was last outstanding */
    bool stmt_prep_noplain;          /* a text that PREPAREs out of sight, or
                                        a DEALLOCATE, went since the last
                                        ReadyForQuery: a tag "PREPARE" keeps
                                        no name plain (relay.c) */
    uint64_t stmt_forget[PGW_STMT_FORGET_MAX];  /* names of statements the server
                                        keeps words of (user_stmt_hash) that a Close
                                        or SQL DEALLOCATE sent on this link drops:
                                        forgotten once answered without an error */
    uint8_t stmt_forget_n;
    bool stmt_forget_err;            /* an ErrorResponse came since the first */
    bool stmt_kept;                  /* a named Parse on this link added to user_stmt_hash
                                        (or set user_stmt_lost) since all it sent was
                                        last answered: a DISCARD ALL or DEALLOCATE ALL
                                        answered meanwhile may have run before it */
    bool unrep_touched;              /* sent on this link what may change a tracked
                                        parameter the server does not report
                                        (relay.c: note_setting_words) */
    bool srv_copy_in;                /* the server is in COPY FROM STDIN: its
                                        CopyInResponse came, its end did not */
    uint8_t trk_probe;               /* pgwharf's probe after a failed COPY is out
                                        (relay.c track_probe_send; TRK_PROBE_*) */
    bool eof_copy_fail;              /* after client_eof, pgwharf ended that COPY
                                        with a CopyFail of its own (relay.c) */
    uint32_t copy_ins, copy_ends;    /* CopyIn/CopyBothResponses relayed, and the
                                        client's CopyDone/CopyFail sent with a request
                                        outstanding, since nothing was: more of the
                                        first, a COPY waits for the client's data */
    bool wait_notified;              /* query_wait_notify sent for this wait */
    bool release_held;               /* ReadyForQuery came with a message half
                                        relayed: release once clean (relay.c) */
    bool replies_unread;             /* its next request waits until the client reads
                                        what it was answered (relay.c) */
    bool acquiring;                  /* in pgw_relay_acquire from the client's data */
    bool refused_now;                /* ... and the request was refused there (relay.c) */
    bool cli_write_blocked, srv_write_blocked;
    uint64_t linger_bytes;           /* > 0: closed while it still sends this much at
                                        most; its socket lingers (linger.c) */
    bool close_after_sent;           /* its FATAL is queued behind what it was sent:
                                        nothing more is read from it, and it closes
                                        once all is written (pgw_session_close_after_sent) */
    int cancel_inflight;             /* forwarded cancels not finished yet */
    uint64_t cancel_lost_srv;        /* the server (id; 0: none) a cancel went to
                                        that PostgreSQL did not confirm within
                                        cancel_wait_timeout: it never runs this
                                        client's next request (cancel.c) */
    uint32_t answered;               /* every ReadyForQuery and ErrorResponse
                                        relayed, inside a pipeline too: a
                                        cancel whose forward began since the
                                        last one joins it, a later one is for
                                        another request, and a deferred one
                                        is dropped past one (cancel.c) */
    /* CancelRequest connections (cancel.c): one stays open until what it
     * asked for is over, as PostgreSQL keeps it; ask_node links it to the
     * forward it waits for, or to its target's cancel_askers while the
     * cancel is deferred (pipe_cancel). */
    struct pgw_list cancel_askers;   /* the target's: waiting for pipe_cancel */
    struct pgw_list ask_node;        /* the asker's */
    ev_tstamp cancel_at;             /* the asker's: when it asked */
    bool ask_deferred;               /* the asker's: on a target's list, not a
                                        forward's (cancel_wait_timeout bounds
                                        the wait then) */
    bool cancel_over;                /* the asker's: closed at its next timer
                                        (never inside the caller's walk) */
    /* server_pipeline_depth (relay.c): while pipe_srv is set, this client's
     * one Query is on that server, queued behind its borrower's (state
     * WAIT_SERVER, on the server's user_queue by pipe_node). */
    struct pgw_server *pipe_srv;
    struct pgw_list pipe_node;
    ev_tstamp pipe_since;            /* queued at (its wait in the pool's queue,
                                        if any, is counted up to then) */
    uint8_t pipe_budget;             /* client messages this link may still send
                                        while others may queue behind it */
    uint8_t pipe_nreq;               /* the queued request: its message types, */
    char pipe_req[PGW_PIPE_REQ_MAX];
    uint8_t pipe_named;              /* which of them name pipe_stmt (bit i), */
    struct ps_stmt *pipe_stmt;       /* a statement of the client's names map */
    bool pipe_stop;                  /* got its last ReadyForQuery; what the
                                        server sends next is the next client's */
    int pipe_skip;                   /* replies ahead of its own to drop (of
                                        clients that left), its own included
                                        when pipe_fail_own */
    uint32_t pipe_drop;              /* bytes of a message to drop first */
    bool pipe_fail_own;              /* its query ran with another client's
                                        settings or cancel: 08006 instead */
    bool pipe_waits;                 /* has the server, which still runs the
                                        query of a client that left ahead of
                                        its own (pipe_skip): it waits for it
                                        (query_wait_timeout), its query not
                                        started (no query_start) */
    ev_tstamp pipe_left_at;          /* then: the query_timeout deadline of
                                        that query, its client's; 0 none */
    double pipe_left_qt;             /* the query_timeout of those ahead not
                                        started yet (relay.c pipe_qt_join) */
    bool pipe_cancel;                /* canceled while queued (or while its
                                        SETs ran): forwarded once its own
                                        query runs */
    bool over_limit;                 /* beyond max_client_conn: refused at startup */
    bool late;                       /* accepted while shutting down (the Unix socket
                                      * kept for cancels): a login is refused */

    /* prepared statements (prepared.c) */
    bool ps_on;                      /* rewriting for this link */
    bool ps_need_room;               /* a rewrite waits for buffer room */
    bool ps_wait;                    /* a rewrite waits for the server's answers
                                        (PGW_PS_WAIT) */
    uint32_t ps_room_need;           /* how much room it wants */
    struct ps_client *ps_client;     /* the client's statement names */
    struct ps_queue *ps_queue;       /* responses expected from the server */
    /* The client's unnamed statement: its last unnamed Parse, whole, and
     * whether the server took it (ps_unnamed_ok), for a Bind or Describe of
     * it on a server that does not have it (prepared.c unnamed_ensure). */
    uint8_t *ps_unnamed;
    uint32_t ps_unnamed_len, ps_unnamed_cap, ps_unnamed_gen;
    uint32_t ps_unnamed_pipe_gen;    /* that of an unnamed Parse queued on a busy
                                      * server (pgw_ps_unnamed_queued) */
    bool ps_unnamed_ok;

    /* timeouts in force ([users] over [pgwharf]); 0 = off */
    double query_timeout, idle_transaction_timeout, client_idle_timeout, transaction_timeout;
    bool requested;                  /* relayed a request since login: in session mode
                                      * it keeps its server from then on, and
                                      * client_idle_timeout no longer applies */

    /* stats */
    uint64_t xact_count, query_count;
    uint64_t bytes_in, bytes_out;    /* every byte on the client's socket */
    bool welcomed_bare;              /* welcomed without a server and not
                                        linked since (relay.c
                                        report_session_params) */
    struct pgw_told *told;           /* session mode, welcomed_bare: what the
                                        welcome said of reported parameters
                                        not tracked (relay.c) */
    bool welcomed;                   /* its login's welcome is queued: */
    uint64_t unrelayed_in, unrelayed_out;  /* ... what of bytes_in, bytes_out
                                        SHOW STATS leaves out, as PgBouncer counts
                                        only what it relays: the login, a Terminate */
    uint64_t ps_parse_count, ps_server_parse_count, ps_bind_count;  /* prepared.c */

    /* ---- admin console and metrics (admin*.c, metrics.c) ---- */
    struct pgw_wbuf admin_out;       /* reply not yet moved into sbuf */
    size_t admin_out_off;            /* ... from this offset on (moved before it) */
    void (*admin_write_next)(struct ev_loop *, ev_io *, int);  /* cli_w's own callback */
    bool admin_skip;                 /* extended protocol refused: drop up to Sync */
    bool admin_counted;              /* its first message (Query, Parse, Sync...)
                                      * counted in the console's SHOW STATS row
                                      * (pgw_stats_console_query) */
    bool admin_waiting;              /* WAIT_CLOSE, PAUSE: reply (and read on) when done */
    bool admin_wait_pause;           /* ... and the reply is PAUSE's */
    bool admin_wait_undo;            /* ... and that PAUSE paused something (a cancel
                                      * undoes it; a PAUSE db of a paused one did not) */
    bool admin_last;                 /* the command running is the last of its query */
    char admin_wait_db[64];          /* its database, "" = all */
    ev_tstamp xact_start;            /* first query of the open transaction, 0 = none */
    ev_tstamp xact_floor;            /* a ReadyForQuery 'I' inside a pipeline: the open
                                      * transaction (transaction_timeout) began after it */
    uint64_t xact_time_us, query_time_us;

    /* ---- client authentication (auth.c) ---- */
    struct pgw_auth_state *auth_state;   /* only while a password exchange runs */

    /* ---- writes gathered per loop iteration (batch.c) ---- */
    struct pgw_list batch_node;      /* on the loop's list while batch_want != 0 */
    unsigned batch_want;             /* directions to flush before the next poll */

    /* ---- LISTEN in transaction/statement mode (notify.c) ---- */
    struct pgw_notify_sub *notify;   /* NULL unless it listens (or its LISTEN runs) */
    struct pgw_notify_qscan *qscan;  /* a Query too long to read whole, read as it passes */

    /* ---- TLS to the client (tls.c, tls.h) ---- */
    struct ssl_st *ssl;              /* set once SSLRequest got 'S'; NULL = plaintext */
    ev_prepare tls_pending;          /* reads bytes OpenSSL holds decrypted (SSL_pending) */
    unsigned tls_flags;              /* PGW_TLS_* */
};

/* session.c */
struct pgw_session *pgw_session_create(struct pgw_proxy *px, int fd, const struct sockaddr *sa,
                                       socklen_t salen, bool unix_sock, bool over_limit);
/* Room among the sessions let in past the cap (px->overflow_cap of them)
 * for a new one: the oldest that has sent no StartupMessage or
 * CancelRequest yet (nothing, an SSLRequest, a TLS handshake), else the
 * oldest console login not through its authentication yet, is refused
 * now with 53300.  Connections that send nothing, or a console login and
 * no password, past max_client_conn, kept a CancelRequest and the console
 * out (hunt, review).  Cancels are never refused so.  false when all are
 * cancels. */
bool pgw_session_over_limit_room(struct pgw_proxy *px);
/* The one way a session ends: log why, tell the client (sqlstate non-NULL
 * and the client can read), return or close the server, free later. */
void pgw_session_close(struct pgw_session *s, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for a client between transactions (no server linked) that is
 * still owed what its buffer holds: the FATAL ErrorResponse goes in
 * behind it, the client's subscriptions go, nothing more is read from it,
 * and the session closes once the client has read all of it (or at
 * pgw_session_close: its idle timeout, a shutdown, a failed write).  Logged
 * now. */
void pgw_session_close_after_sent(struct pgw_session *s, const char *sqlstate, const char *fmt,
                                  ...) __attribute__((format(printf, 3, 4)));
void pgw_session_free(struct pgw_session *s);
/* Queue a message pgwharf composed for the client; it goes out with this
 * loop iteration's writes (batch.c), or at once. */
bool pgw_session_send(struct pgw_session *s, const struct pgw_wbuf *msg);
/* The same without writing yet (the next send or flush takes it along). */
bool pgw_session_queue(struct pgw_session *s, const struct pgw_wbuf *msg);
void pgw_session_flush_client(struct pgw_session *s);
/* Read what the client sent (through TLS when s->ssl) and act on it; what
 * cli_r's callback does once TLS has had its say (tls.c calls it too). */
void pgw_session_read_client(struct pgw_session *s);
void pgw_session_read_before_cancel(struct pgw_session *s);
void pgw_session_on_client_input(struct pgw_session *s);
void pgw_session_login_done(struct pgw_session *s);
/* Past authentication and not closing: what the client limits count. */
bool pgw_session_logged_in(const struct pgw_session *s);
void pgw_session_arm_timer(struct pgw_session *s);
/* When the request s has under way on its server meets s's query_timeout
 * or transaction_timeout; 0: none (none under way, or neither set). */
ev_tstamp pgw_session_query_deadline(const struct pgw_session *s);
/* s moves to the end of its PgBouncer client list, the order SHOW CLIENTS
 * lists a pool's clients in: at login, when it queues for a server, and
 * when it leaves the queue (served or not).  A client served at once
 * stays where it was, as in PgBouncer. */
void pgw_session_list_join(struct pgw_session *s);
/* Take the timeouts for this user from the config in force. */
void pgw_session_apply_timeouts(struct pgw_session *s);

/* relay.c */
void pgw_relay_srv_read_cb(struct ev_loop *loop, ev_io *w, int revents);
void pgw_relay_srv_write_cb(struct ev_loop *loop, ev_io *w, int revents);
void pgw_relay_client_data(struct pgw_session *s);
/* Reading the client goes on (its buffer filled while it waited, and
 * pgw_session_read_client stopped it), unless something keeps it stopped
 * on purpose: its end, a Terminate, replies it has not read. */
void pgw_relay_read_again(struct pgw_session *s);
/* The client has read what it was answered: a request held meanwhile goes on. */
void pgw_relay_replies_read(struct pgw_session *s);
/* The words of n bytes of SQL text that matter there: bit i for
 * px->tracked[i] (those in want) named as a word of its own,
 * PGW_WORDS_RESET for RESET or DISCARD, PGW_WORDS_SET for SET or
 * set_config. */
#define PGW_WORDS_RESET (1u << 31)
#define PGW_WORDS_SET (1u << 30)         /* SET or set_config */
/* HOLD (a WITH HOLD cursor), TEMP, TEMPORARY or pg_temp (a temporary
 * object), CREATE or INTO as SQL, not in a literal or a comment (SELECT
 * ... INTO, CREATE TABLE ... AS, any CREATE: temporary with pg_temp first
 * in the search_path): what may outlive the transaction
 * (pgw_server.user_leftover). */
#define PGW_WORDS_HOLD (1u << 29)
#define PGW_WORDS_TEMP (1u << 28)
#define PGW_WORDS_MAKE (1u << 27)
#define PGW_WORDS_STATE (PGW_WORDS_HOLD | PGW_WORDS_TEMP | PGW_WORDS_MAKE)
/* A statement that starts with PREPARE; the word EXECUTE (not a
 * privilege's): an SQL prepared statement made or run (relay.c
 * stmt_sql_*). */
#define PGW_WORDS_PREPARE (1u << 26)
#define PGW_WORDS_EXECUTE (1u << 25)
/* The word PREPARE past a statement's first word (a DO block's or a
 * function's body, its EXECUTE 'PREPARE ...'): a PREPARE pgwharf does not
 * read (relay.c stmt_sql_hidden). */
#define PGW_WORDS_PREPARE_IN (1u << 24)
/* The word DEALLOCATE anywhere: a name seen PREPAREd plain may be gone
 * where pgwharf does not read it, for a function to PREPARE again
 * (relay.c stmt_sql_dealloc). */
#define PGW_WORDS_DEALLOCATE (1u << 23)
_Static_assert(PGW_TP_MAX <= 23, "the tracked parameters' bits stay below PGW_WORDS_DEALLOCATE");
uint32_t pgw_relay_text_words(const struct pgw_proxy *px, const uint8_t *p, size_t n,
                              uint32_t want);
/* A Bind of a statement whose text has these words (pgw_relay_text_words
 * of all tracked names) runs it: what it may change, as for a Query
 * (unrep_touched, settings_pending), and the SQL prepared statement it
 * makes or runs there (text: n bytes, the body of its Parse).  s has a
 * server. */
void pgw_relay_note_bound_words(struct pgw_session *s, uint32_t words, const uint8_t *text,
                                size_t n);
/* The client's stream ended (EOF).  true when the session goes on to run
 * what the client sent whole (client_eof); false when there is nothing to
 * run, or its request waits in the pool's queue: the caller closes it. */
bool pgw_relay_client_eof(struct pgw_session *s);
/* A Terminate from a client whose request waits in the pool's queue: the
 * session is closed at once, the request dropped; true then. */
bool pgw_relay_left_while_queued(struct pgw_session *s);
/* Does srv hold s's unnamed statement as it is now (not an older one)? */
bool pgw_relay_unnamed_current(const struct pgw_session *s, const struct pgw_server *srv);
/* After client_eof: end the session once what the client sent is answered. */
void pgw_relay_eof_check(struct pgw_session *s);
/* A write to the client failed (it is gone).  true when pgwharf is ending
 * its COPY FROM STDIN (copy_abort): what was for it is dropped, as is the
 * rest, and that end goes on, the server kept; false: close as ever. */
bool pgw_relay_copy_abort_lost(struct pgw_session *s);
void pgw_relay_server_readable(struct pgw_session *s);
void pgw_relay_flush_server(struct pgw_session *s);
void pgw_relay_link(struct pgw_session *s, struct pgw_server *srv);
/* Let go of a welcome's record (struct pgw_told); NULL is fine. */
void pgw_relay_told_unref(struct pgw_told *t);
void pgw_relay_unlink(struct pgw_session *s, enum pgw_release how);
void pgw_relay_acquire(struct pgw_session *s);
/* A cancel of a client waiting in its pool's queue: 57014 to it, its
 * request dropped, the client stays.  false when it is not waiting there. */
bool pgw_relay_cancel_waiting(struct pgw_session *s);
/* A request of a client that holds no server, refused by pgwharf before
 * it reached one (notify.c, from pgw_notify_query): the error to the
 * client, the request dropped as PostgreSQL skips one after an error (up
 * to its Sync), then ReadyForQuery; the relay goes on with what follows. */
void pgw_relay_refuse(struct pgw_session *s, const char *sqlstate, const char *message);
/* A client's login is done: welcome it (ParameterStatus, BackendKeyData,
 * ReadyForQuery), taking a server first when it needs one. */
void pgw_relay_login(struct pgw_session *s);
/* The session ends at a limit of pgwharf's where PostgreSQL would go on:
 * its server goes now (closed where not idle), what the client was given
 * before is written, then the FATAL, then it ends; the rest of what the
 * client sends is read and dropped meanwhile (pgw_session_close_after_sent:
 * a close at once lost those answers, and the FATAL behind them, to a
 * client not reading then -- or to the reset of a close with its data
 * unread). */
void pgw_relay_close_owed(struct pgw_session *s, const char *sqlstate, const char *message);
/* How the server should go back when the client leaves now. */
enum pgw_release pgw_relay_release_mode(const struct pgw_session *s);
/* With release_held set: release the server if nothing is half relayed. */
void pgw_relay_release_if_clean(struct pgw_session *s);
bool pgw_relay_track_probe(struct pgw_session *s);
/* A client queued on a server (pipe_srv) is closing. */
void pgw_relay_pipe_leave(struct pgw_session *s);
/* The clients queued on srv get 08006 instead of their replies (their
 * queries run after a change of settings, or a cancel, not theirs). */
void pgw_relay_pipe_taint(struct pgw_server *srv);
/* s waited for its server to end the query of a client that left ahead
 * of its own (pipe_waits) until query_wait_timeout passed, or (ahead) until
 * that query met its own client's query_timeout (pipe_left_at). */
void pgw_relay_pipe_wait_timeout(struct pgw_session *s, bool ahead);

/* auth.c */
void pgw_auth_start(struct pgw_session *s);
void pgw_auth_password(struct pgw_session *s, const uint8_t *body, size_t len);
/* An auth_query lookup runs: nothing has been asked of the client yet. */
bool pgw_auth_looking_up(const struct pgw_session *s);
const char *pgw_auth_server_password(struct pgw_proxy *px, const struct pgw_conf_db *db,
                                     const char *user);
bool pgw_auth_md5_check(const char *user, const char *secret, const uint8_t salt[4],
                        const char *response);
void pgw_auth_state_free(struct pgw_auth_state *st);
/* s is closing: a login step still under way off the loop (the peer
 * lookup) is cancelled, so that its answer never logs a closed session in
 * (auth_query's waits end with s->ctx). */
void pgw_auth_session_closing(struct pgw_session *s);

/* peer.c: a unix-socket client's local user name (auth method peer),
 * looked up (getpwuid_r, NSS) on a thread, never on the loop.  done runs
 * on the loop, once, with the name or else why there is none -- never
 * inside pgw_peer_lookup, and never after pgw_peer_cancel (the session
 * ended).  pgw_peer_lookup returns NULL when no thread can be had; at
 * most 8 run at once, the others wait their turn (still cancellable). */
struct pgw_peer_req;
struct pgw_offload;
typedef void (*pgw_peer_done_fn)(struct pgw_session *s, const char *name, const char *error);
struct pgw_peer_req *pgw_peer_lookup(struct pgw_session *s, uid_t uid, pgw_peer_done_fn done);
void pgw_peer_cancel(struct pgw_peer_req *r);
/* pgw_proxy_destroy, after the sessions: lookups still running are left
 * to finish on their own (their answers dropped), not waited for. */
void pgw_peer_deinit(struct pgw_proxy *px);

/* cancel.c */
/* With peer_id > 0, the low 16 bits of the cancel keys pgwharf hands out
 * (session.c) are the peer id (14 bits: up to 16383) and a hop count (2
 * bits, 0 in the keys handed out, raised at each pass to a peer, so a
 * misconfigured group cannot pass a cancel round for ever); the rest is
 * random. */
#define PGW_PEER_KEY_MASK 0xffffu
#define PGW_PEER_ID_MASK 0x3fffu
#define PGW_PEER_HOP_SHIFT 14
#define PGW_PEER_MAX_HOPS 3
void pgw_cancel_register(struct pgw_proxy *px, struct pgw_session *s);
void pgw_cancel_unregister(struct pgw_proxy *px, struct pgw_session *s);
/* A CancelRequest on connection `asker`: forwarded to the server of the
 * session with that key, else to the [peers] process the key names, else
 * dropped; each case logged.  True when a forward took it, or it was
 * deferred: asker stays open until that is over (then cancel.c closes it);
 * false: close it now.  full non-NULL: asker cannot be held (the room
 * past the cap, session.c): one that would be is not forwarded, joined
 * or deferred but refused (*full set, false), as closing it at once would
 * tell the client its cancel is done while the signal may still come
 * and hit its next query. */
bool pgw_cancel_request(struct pgw_proxy *px, struct pgw_session *asker, uint32_t pid,
                        uint32_t key, bool *full);
/* Forward the cancel deferred for s's query (pipe_cancel) on its server,
 * delay seconds from now (see relay.c); the connections that asked for it
 * wait for that forward, or close when none starts. */
void pgw_cancel_session(struct pgw_proxy *px, struct pgw_session *s, const char *from,
                        double delay);
/* s's deferred cancel (pipe_cancel) is dropped: its query ended without it,
 * or will be answered with 08006; the connections that asked close. */
void pgw_cancel_deferred_drop(struct pgw_session *s);
/* Cancel what srv runs for pgwharf itself (an auth_query lookup given up
 * on), before it is closed: closing alone leaves the backend running the
 * query to its end.  from names the asker in the log. */
void pgw_cancel_server(struct pgw_proxy *px, const struct pgw_server *srv, const char *from);
int pgw_cancel_init(struct pgw_proxy *px);
/* Cancels forwarded and not finished yet. */
int pgw_cancel_inflight(const struct pgw_proxy *px);
/* s's server is one a cancel went to unconfirmed (cancel_lost_srv). */
bool pgw_cancel_lost(const struct pgw_session *s);
/* End s: its server may yet get that cancel, the next request with it. */
void pgw_cancel_lost_close(struct pgw_session *s);
void pgw_cancel_deinit(struct pgw_proxy *px);

/* admin.c, admin_*.c, metrics.c: the admin console, per-database stats and
 * the Prometheus endpoint.  Where the rest of proxy/ calls in:
 *   pgw_admin_init       pgw_proxy_create, after the listeners (may fail:
 *                        metrics_port cannot be bound)
 *   pgw_admin_prepare_reload  pgw_proxy_reload, the last step that may fail
 *                        before the new config is committed: moves the
 *                        metrics listener (on failure the old one stays)
 *   pgw_admin_reload     end of pgw_proxy_reload (stats timer)
 *   pgw_admin_deinit     pgw_proxy_destroy, before the pool set goes
 *   pgw_admin_session_gone   just before pgw_session_free (folds its counters)
 *   pgw_admin_pool_attach    after pgw_pool_get in login (PAUSE covers new pools)
 *   pgw_admin_db_disabled    in login, before the pool (DISABLE refuses new clients)
 *   pgw_metrics_observe_wait relay.c granted(): seconds since waiter.since
 *   pgw_metrics_ready    relay.c on_ready(): after the sync_out > 0 return,
 *                        before query_start is cleared
 *   pgw_metrics_xact_end relay.c on_ready(): a ReadyForQuery 'I'
 *                        inside a pipeline (a transaction ended: counted),
 *                        before xact_floor moves to it; and every
 *                        ReadyForQuery 'I' pgwharf sends itself (a LISTEN,
 *                        UNLISTEN or DEALLOCATE answered here, a lone Sync,
 *                        a queued query ended here) */
void pgw_admin_login(struct pgw_session *s);
void pgw_admin_input(struct pgw_session *s);
/* A CancelRequest for a console session (cancel.c). */
void pgw_admin_cancel(struct pgw_session *s, const char *from);
int pgw_admin_init(struct pgw_proxy *px, char *errbuf, size_t errlen);
int pgw_admin_prepare_reload(struct pgw_proxy *px, const struct pgw_config *cfg, char *errbuf,
                             size_t errlen);
void pgw_admin_reload(struct pgw_proxy *px);
void pgw_admin_deinit(struct pgw_proxy *px);
void pgw_admin_session_gone(struct pgw_session *s);
void pgw_admin_pool_attach(struct pgw_proxy *px, struct pgw_pool *pool);
bool pgw_admin_db_disabled(const struct pgw_proxy *px, const char *db);
void pgw_metrics_observe_wait(struct pgw_session *s, double seconds);
void pgw_metrics_ready(struct pgw_session *s, char status);
void pgw_metrics_xact_end(struct pgw_session *s);

/* listener.c */
struct pgw_listener {
    ev_io io;
    int fd;
    bool unix_sock;
    bool defer;                      /* TCP_DEFER_ACCEPT: data is there at accept */
    char *path;                      /* unix socket path to unlink */
    struct pgw_proxy *px;
    struct pgw_listener *next;
};
int pgw_listener_open_all(struct pgw_proxy *px, char *errbuf, size_t errlen);
void pgw_listener_pause(struct pgw_proxy *px, bool paused);
void pgw_listener_close_all(struct pgw_proxy *px);
/* The same, but the Unix-socket listeners with keep_unix (a shutdown
 * with [peers]: their cancels still reach this process's clients). */
void pgw_listener_close(struct pgw_proxy *px, bool keep_unix);
/* A reload: the listeners' socket options again (tcp_keepalive). */
void pgw_listener_reconfigure(struct pgw_proxy *px);
/* relay.c: server_fast_close for sessions idle on a server due to close
 * (after RECONNECT or a reload). */
void pgw_relay_fast_close_idle(struct pgw_proxy *px);

/* linger.c: close fd once the client has sent up to `bytes` more (read and
 * dropped) or closed, within a few seconds: a close with its input unread
 * would reset the connection and lose the FATAL sent before it. */
void pgw_linger_close(struct pgw_proxy *px, int fd, uint64_t bytes);
/* Close the oldest lingering socket at once (a client needs its place
 * under client_cap); false: none lingers. */
bool pgw_linger_evict(struct pgw_proxy *px);
void pgw_linger_deinit(struct pgw_proxy *px);
/* Read and drop what a closing connection's peer sends: unread bytes at
 * close(2) make a reset, which discards the send queue (the reply, the
 * FATAL).  At most per_cb bytes a call, so a peer that keeps sending does
 * not hold the loop; *left goes down by what was read.  rd: read(2) alike
 * (NULL: read(2) of fd).  AGAIN: call again when there is more (readable;
 * through TLS also a read that waits for writability, or bytes OpenSSL
 * holds, which the caller's TLS watchers see); ERROR: errno. */
typedef ssize_t (*pgw_read_fn)(void *arg, void *p, size_t n);
enum pgw_drain { PGW_DRAIN_AGAIN, PGW_DRAIN_EOF, PGW_DRAIN_ERROR, PGW_DRAIN_SPENT };
enum pgw_drain pgw_drain(int fd, pgw_read_fn rd, void *arg, size_t per_cb, uint64_t *left);

/* ---- the proxy ---- */
/* Logins past the client cap still read their first packet (a CancelRequest
 * must work when full; a StartupMessage gets a clear 53300), at most this many
 * at once; held CancelRequest connections leave their client slots for
 * this room while it has some (cancel_leaves_slot, session.c). */
#define PGW_OVERFLOW_SESSIONS 64
/* The last places of that room no held cancel takes: a console login can
 * always push out one of what is there, so that a full pgwharf can be
 * looked at however many cancels are held (cancel_hold_room, session.c). */
#define PGW_OVERFLOW_CONSOLE 8
#define PGW_CANCEL_BUCKETS 4096

struct pgw_cancel_state;
struct pgw_aq_cache;                 /* authquery.c */

struct pgw_proxy {
    struct ev_loop *loop;
    struct pgw_config *cfg;
    struct pgw_config *old_cfgs;     /* not used yet */
    struct pgw_auth_file *auth;
    struct pgw_ctx *root;
    struct pgw_pool_set *pools;
    struct pgw_listener *listeners;
    struct pgw_list sessions;
    struct pgw_list closing;         /* freed by the check watcher */
    ev_check reaper;
    /* Started with the reaper: an idle watcher keeps the loop's next poll
     * from blocking, so the check runs at once, not at the next timer or
     * I/O (a fast shutdown ended only at the pool's tick). */
    ev_idle reaper_nudge;
    ev_timer accept_retry;           /* listeners paused after EMFILE */
    ev_timer shutdown_timer;
    ev_timer stats_timer;
    int nclients;                    /* sessions within client_cap */
    int client_cap;                  /* max_client_conn, or fewer under the open-files limit */
    int overflow_cap;                /* sessions past client_cap that may read a first packet */
    int nrejecting;                  /* sessions beyond it: about to be refused, a
                                      * console login, a held cancel */
    struct pgw_list over_limit;      /* ... those, in the order they came */
    struct pgw_list lingering;       /* client sockets closing (linger.c) */
    int nlingering;
    uint64_t next_session_id;
    uint64_t list_seq;               /* the last session's list_seq */
    struct pgw_list free_bufs;
    int nfree_bufs;
    int free_low;                    /* fewest free buffers since the last trim */
    ev_timer buf_trim;               /* returns unneeded free buffers */
    struct pgw_list cancel_hash[PGW_CANCEL_BUCKETS];
    struct pgw_cancel_state *cancel;
    int cancel_cap;                  /* cancel links in flight at most (fd_budget) */
    struct pgw_scram_cache *scram_cache;     /* verifiers made from plaintext secrets */
    struct ps_registry *ps;          /* prepared statements (prepared.c) */
    struct pgw_offload *peer;        /* peer lookups (peer.c), made on first use */
    uint64_t hash_seed;              /* the seed of hashes of what clients choose
                                        (statement names and texts, settings,
                                        notifications): pgw_proxy_hash_seed */
    char ps_dealloc[32];             /* the statement an SQL DEALLOCATE of a client's
                                        deallocates on the server: prepared.c */
    uint8_t rnd[256];                /* random bytes not handed out yet */
    size_t rnd_pos;
    bool shutting_down, finished;
    bool user_from_command_line;     /* -u: the file's user never applies */
    enum pgw_shutdown_mode shutdown_mode;
    struct pgw_config *retired_cfgs[8];  /* old configs still referenced by pools */
    int nretired;
    /* totals for stats */
    uint64_t total_clients;
    uint64_t total_pipelined, total_pipeline_failed;   /* server_pipeline_depth */
    /* ---- admin console state, stats and metrics endpoint (admin*.c, metrics.c) ---- */
    struct pgw_admin *admin;
    /* ---- client authentication (auth.c, hba.c) ---- */
    struct pgw_hba *hba;             /* auth_hba_file, loaded when auth_type is hba */
    /* ---- TLS to clients (tls.c) ---- */
    struct ssl_ctx_st *tls_ctx;      /* from client_tls_*; NULL when sslmode is disable */
    /* ---- auth_query look-ups and their cache (authquery.c, authquery.h) ---- */
    struct pgw_aq_cache *aq;
    /* ---- the relay's writes, sent together per iteration (batch.c) ---- */
    struct pgw_batch *batch;
    /* ---- LISTEN/NOTIFY fan-out: one hub per pool with listeners (notify.c) ---- */
    struct pgw_list notify_hubs;
    struct pgw_pgenc_set notify_enc;  /* listeners' client_encodings (notify.c) */
    uint64_t notify_bridge_seq;       /* the last LISTEN bridge's (notify_bridge.c) */
    uint64_t total_notifications, total_notifications_dropped;  /* to clients */
    /* ---- tracked parameters (session.c): names by index, ntracked of them ---- */
    const char *tracked[PGW_TP_MAX];
    size_t tracked_len[PGW_TP_MAX];  /* strlen of each: most names are ruled out by it */
    int ntracked;
    int tracked_timeout;             /* statement_timeout's index, or -1: set first */
    char tracked_extra[PGW_CONF_TRACK_EXTRA_MAX][PGW_CONF_PARAM_NAME_MAX + 1];
    struct pgw_told *told_last;      /* the last welcome's record, shared with
                                        the next welcome that says the same
                                        (relay.c): one reference */
};

void pgw_proxy_maybe_finish(struct pgw_proxy *px);
/* Queue the sessions on px->closing for the reaper (an ev_check, after
 * this loop iteration), and keep that iteration's poll from blocking. */
void pgw_proxy_reap_later(struct pgw_proxy *px);

/* The limit a client past client_cap meets, as its 53300 names it:
 * fewer places than max_client_conn means the open-files limit set them. */
static inline bool pgw_proxy_fd_limited(const struct pgw_proxy *px)
{
    return px->client_cap < px->cfg->max_client_conn;
}

static inline const char *pgw_proxy_full_limit(const struct pgw_proxy *px)
{
    return pgw_proxy_fd_limited(px) ? "open-files limit" : "max_client_conn";
}

/* notify.c: LISTEN/NOTIFY in transaction and statement mode (see there).
 * pgw_notify_query: the client holds no server and its next message may
 * be a lone LISTEN/UNLISTEN; 1 when taken, PGW_NOTIFY_MORE when it is to
 * be read whole first, 0 when the relay should send it, -1 when the
 * session was closed.
 * While pgw_notify_waiting, the client's next messages stay unread.
 * pgw_notify_flush: the session holds no server any more: notifications
 * kept during its transaction go out. */
struct pgw_notify_sub;
#define PGW_NOTIFY_MORE 2
void pgw_notify_init(struct pgw_proxy *px);
void pgw_notify_destroy(struct pgw_proxy *px);
int pgw_notify_query(struct pgw_session *s);
bool pgw_notify_waiting(const struct pgw_session *s);
/* The ReadyForQuery ending its transaction is held (its LISTEN waits for
 * the hub): it waits, not idle. */
bool pgw_notify_rfq_held(const struct pgw_session *s);
/* Its server's reply fills its buffer behind the held ReadyForQuery: the
 * hold is lifted (relay.c). */
void pgw_notify_hold_give_up(struct pgw_session *s);
/* A prepared LISTEN/UNLISTEN's portal, bound and flushed in the batch
 * before, waits for its Execute (notify_ext.c). */
bool pgw_notify_portal_held(const struct pgw_session *s);
void pgw_notify_portal_drop(struct pgw_session *s);
/* Its lone LISTEN/UNLISTEN is not sent to the hub's server yet, or the
 * ReadyForQuery of its transaction's LISTEN is held (the hub waits for a
 * server): the client waits for a server as one in
 * PGW_SS_WAIT_SERVER does (SHOW CLIENTS "waiting", cl_waiting), since
 * *since. */
bool pgw_notify_waits_for_server(const struct pgw_session *s, ev_tstamp *since);
/* A cancel of a client whose lone LISTEN/UNLISTEN waits for the hub's
 * server (not sent yet): 57014 to it, the statement dropped; likewise
 * (57014 before the held ReadyForQuery, the channels not the client's)
 * for a transaction's LISTEN.  false when it is not waiting so. */
bool pgw_notify_cancel_waiting(struct pgw_session *s);
/* When its lone LISTEN/UNLISTEN was sent to the hub's server, still
 * unanswered (0: none): query_timeout runs from then.  At that timeout
 * the hub's server is taken for stuck: dropped, as lost (its listeners
 * are told between transactions, the others' requests go to the next). */
ev_tstamp pgw_notify_sent_at(const struct pgw_session *s);
void pgw_notify_query_timeout(struct pgw_session *s);
void pgw_notify_flush(struct pgw_session *s);
void pgw_notify_session_gone(struct pgw_session *s);
/* s's server srv, idle (ReadyForQuery 'I', nothing outstanding), is being
 * given back by pgw_relay_unlink: true when notify_bridge.c keeps it (the
 * server its transaction's LISTEN ran on, listening for it until the hub's
 * server does), out of the pool's counts; false: release it. */
bool pgw_notify_bridge_take(struct pgw_session *s, struct pgw_server *srv);
/* When srv is a bridge (kept by pgw_notify_bridge_take, not closed yet):
 * the client it listens for; else NULL (SHOW SERVERS). */
const struct pgw_session *pgw_notify_bridge_client(const struct pgw_server *srv);
/* The client's stream ended: nothing reaches it after the answers it is
 * owed, as from PostgreSQL, which ends the session then.  Its held
 * ReadyForQuery goes now (the listening server's LISTEN is waited for no
 * more), and its bridge goes. */
void pgw_notify_client_eof(struct pgw_session *s);
/* Its server ran DISCARD ALL: it listens to nothing any more. */
void pgw_notify_discard(struct pgw_session *s);
/* A lone LISTEN or UNLISTEN run on the client's server: the hub's if its
 * transaction commits.  pgw_notify_tx_message: a whole Query or Parse of at
 * most PGW_NOTIFY_QUERY_MAX bytes of text (false: the session was closed);
 * pgw_notify_tx_tag: each CommandComplete, whole; pgw_notify_tx_error: each
 * ErrorResponse the client gets; pgw_notify_tx_ready: each ReadyForQuery's
 * status, true when that ReadyForQuery ends a transaction whose LISTEN the
 * hub's server has yet to run: the relay holds the client's buffer there
 * (pgw_iobuf hold) until notify.c lifts it. */
#define PGW_NOTIFY_QUERY_MAX (PGW_IOBUF_SIZE - PGW_MSG_HDR)   /* whole in the relay's buffer */
/* A Close of a client holding s->notify, its first n bytes: all of it, or
 * PGW_NOTIFY_CLOSE_MAX of a longer one (a statement's name is its first
 * PGW_NOTIFY_STMT_NAME_MAX bytes in the database's encoding, as for
 * PostgreSQL: in any client encoding, PGW_NOTIFY_STMT_NAME_READ bytes hold
 * at least as many characters): a prepared LISTEN or UNLISTEN of that name
 * is gone. */
#define PGW_NOTIFY_STMT_NAME_MAX 63
#define PGW_NOTIFY_STMT_NAME_READ (4 * PGW_NOTIFY_STMT_NAME_MAX)
#define PGW_NOTIFY_CLOSE_MAX (PGW_MSG_HDR + 1 + PGW_NOTIFY_STMT_NAME_READ)
void pgw_notify_close(struct pgw_session *s, const uint8_t *msg, uint32_t n);
/* The key PostgreSQL files a prepared statement or portal under: its name
 * (n bytes, in s's client_encoding, as the message has it) converted to the
 * database's encoding (pq_getmsgstring), then its first
 * PGW_NOTIFY_STMT_NAME_MAX bytes, cut even inside a character (its hash
 * tables keep no more).  whole false: name is the head of a longer one, at
 * least PGW_NOTIFY_STMT_NAME_READ bytes, maybe cut inside a character.
 * false when it does not convert or is not well-formed: PostgreSQL
 * refuses the message (the server reports it), or pgwharf cannot tell
 * (MULE_INTERNAL).  In notify.c,
 * with the encodings it converts; prepared.c keys client names with it. */
bool pgw_notify_stmt_key(const struct pgw_session *s, const char *name, size_t n, bool whole,
                         char key[PGW_NOTIFY_STMT_NAME_MAX + 1]);
/* The same, telling why there is no key: 1 made; 0 pgwharf cannot tell;
 * -1 PostgreSQL refuses the name as text in s's client_encoding: 22021,
 * not well-formed there (checked even when nothing is converted), or
 * 22P05, a character the database's encoding lacks.  It reads a Parse's,
 * Bind's, Describe's or Close's names first, and refuses the message.  -1
 * only where pgwharf checks as PostgreSQL does (UTF-8 from the client, or
 * into a UTF8 database; LATIN1's range): such a message goes to the
 * server as it is. */
int pgw_notify_stmt_key_of(const struct pgw_session *s, const char *name, size_t n, bool whole,
                           char key[PGW_NOTIFY_STMT_NAME_MAX + 1]);
/* The name of a lone SQL "DEALLOCATE [PREPARE] name" (sql: len bytes in s's
 * client_encoding) as PostgreSQL's scanner reads it (in UTF-8, cut at a
 * whole character of the database's encoding, full set for its NOTICE
 * 42622: pgw_deallocate_parse) and its key (pgw_notify_stmt_key's, from
 * that name); false: not one, or not one pgwharf reads.  prepared.c reads
 * the DEALLOCATE of a client's protocol-level statement with it. */
struct pgw_ident_full;
bool pgw_notify_dealloc_key(const struct pgw_session *s, const char *sql, size_t len,
                            char key[PGW_NOTIFY_STMT_NAME_MAX + 1],
                            char name[3 * PGW_NOTIFY_STMT_NAME_MAX + 1],
                            struct pgw_ident_full *full);
/* The answer to a SQL DEALLOCATE pgwharf took: the NOTICE 42622 PostgreSQL's
 * scanner sends when it cut the name (full, freed here), CommandComplete
 * DEALLOCATE and ReadyForQuery with status.  0, or -1 when s was closed. */
int pgw_notify_deallocated(struct pgw_session *s, struct pgw_ident_full *full,
                           const char *name, char status);
bool pgw_notify_tx_message(struct pgw_session *s, const uint8_t *msg, uint32_t total);
/* A Query (avail bytes of it here) of a client holding a server: a lone
 * SQL DEALLOCATE [PREPARE] of a prepared LISTEN or UNLISTEN it keeps (which
 * no server has) is answered by pgwharf inside a transaction too, as
 * PostgreSQL answers it (prepared statements are not transactional), once
 * the server has answered what came before (quiet: nothing outstanding).
 * 1: answered and cut, 0: for the server, PGW_NOTIFY_MORE: read it whole,
 * or wait until quiet; -1: the session was closed. */
int pgw_notify_tx_deallocate(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                             uint32_t total, bool quiet);
/* A Query longer than that, which streams through: offered at its header
 * (again if the relay scans it again), then fed each piece of it as the
 * relay passes it on, the first (first: from its header) and the rest
 * (body bytes); its statements are noted as pgw_notify_tx_message notes
 * them.  false: the session was closed. */
bool pgw_notify_qscan_offer(struct pgw_session *s, const uint8_t *msg);
bool pgw_notify_qscan_feed(struct pgw_session *s, const uint8_t *p, uint32_t n, bool first);
void pgw_notify_qscan_free(struct pgw_session *s);
void pgw_notify_tx_tag(struct pgw_session *s, const uint8_t *msg, uint32_t total);
void pgw_notify_tx_error(struct pgw_session *s);
bool pgw_notify_tx_ready(struct pgw_session *s, char status);
/* A simple Query, or a Parse of the unnamed statement, that a server gets
 * or pgwharf answers: PostgreSQL's unnamed statement goes (or is
 * replaced), so does an unnamed LISTEN pgwharf kept. */
void pgw_notify_unnamed_gone(struct pgw_session *s);
/* A Parse (avail of its total bytes there) the server gets, of a vstmt's
 * name: prepared.c takes the statement over first, and refuses the Parse
 * (42P05) as PostgreSQL does.  false: read more of it first.  s may be
 * closed (out of memory). */
bool pgw_notify_tx_parse(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                         uint32_t total);
/* A Describe (avail of its total bytes there) the server gets: of a
 * vstmt, prepared.c takes the statement over first, as for a Bind.
 * false: read more of it first.  s may be closed (out of memory). */
bool pgw_notify_tx_describe(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                            uint32_t total);
/* A Bind (avail of its total bytes there) of a client holding s->notify,
 * inside a transaction: a noted Parse of its statement runs; a vstmt's
 * goes to prepared.c (pgw_notify_vstmt_to_server).  false: read more of
 * it first.  s may be closed (out of memory). */
bool pgw_notify_tx_bind(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                        uint32_t total);
/* A Bind the server gets of the client's statement `key`, prepared with
 * text sql (prepared.c's), in an earlier request or in this one: a
 * LISTEN or UNLISTEN is noted as a Parse of this batch would be, and
 * runs.  false: s was closed (out of memory). */
bool pgw_notify_tx_bound(struct pgw_session *s, const char *key, const char *sql);
/* A NotificationResponse (whole) from the server a client holding
 * s->notify ran LISTEN on: false when the hub's copy is the one it gets. */
bool pgw_notify_server_notification(struct pgw_session *s, const uint8_t *msg, uint32_t total);
/* Its server ran DEALLOCATE ALL: its prepared LISTENs and UNLISTENs go. */
void pgw_notify_deallocate_all(struct pgw_session *s);

/* The first byte of a statement's text (a Query's, or a Parse's after its
 * name) may start a lone LISTEN or UNLISTEN: white space (here any byte up
 * to ' '), a comment's / or -, L or U.  The relay gives any other to the server without
 * asking pgw_notify_query. */
static inline bool pgw_notify_may_start(uint8_t c)
{
    return c <= ' ' || (c | 0x20) == 'l' || (c | 0x20) == 'u' || c == '/' || c == '-';
}
/* Channels listened on (over all pools) and clients listening. */
void pgw_notify_counts(const struct pgw_proxy *px, uint64_t *channels, uint64_t *clients);

/* batch.c: the relay's hot writes, made together before the loop polls
 * (io_batch).  configure applies px->cfg->io_batch (start and reload). */
int pgw_batch_init(struct pgw_proxy *px);
void pgw_batch_configure(struct pgw_proxy *px);
void pgw_batch_free(struct pgw_proxy *px);
struct pgw_batch_stats {
    bool on;                         /* batching now (io_batch and a ring) */
    uint64_t batches, sends;         /* flush rounds, deferred writes made in them */
};
void pgw_batch_get_stats(const struct pgw_proxy *px, struct pgw_batch_stats *st);
/* pgw_session_flush_client / pgw_relay_flush_server, now or before the
 * next poll. */
void pgw_batch_flush_client(struct pgw_session *s);
void pgw_batch_flush_server(struct pgw_session *s);
/* Off the list (the session is closing). */
void pgw_batch_forget(struct pgw_session *s);
/* n unpredictable bytes (salts, cancel keys).  Returns 0 or PGW_EIO. */
int pgw_proxy_random(struct pgw_proxy *px, void *out, size_t n);
uint64_t pgw_proxy_hash_seed(struct pgw_proxy *px);

#endif
