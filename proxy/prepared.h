/*
 * prepared.h - protocol-level named prepared statements in transaction and
 * statement mode (max_prepared_statements > 0).
 *
 * A client's named Parse is registered under a pgwharf-owned name
 * ("PGW_<n>"); identical statements (same text and parameter types) share
 * one entry across clients.  Bind/Describe/Close naming the client's
 * statement are rewritten; a server that lacks the statement gets a Parse
 * injected first, whose ParseComplete is swallowed.  Each server keeps an
 * LRU of at most max_prepared_statements statements and closes the ones it
 * evicts.  A Parse the server already has, and a client's Close, are
 * answered by pgwharf itself.
 *
 * To put pgwharf's own answers in the right place among the server's, the
 * session keeps a queue of the responses it expects, one entry per message
 * sent (forwarded, injected or answered locally), in order.
 *
 * Internal to proxy/.
 */
#ifndef PGW_PROXY_PREPARED_H
#define PGW_PROXY_PREPARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pgw_proxy;
struct pgw_session;
struct pgw_server;
struct pgw_iobuf;
struct ps_stmt;

struct pgw_ps_stats {
    uint64_t statements;         /* entries in the registry now */
    uint64_t client_parses;      /* named Parse messages from clients */
    uint64_t server_prepares;    /* Parse messages sent to servers */
    uint64_t hits;               /* Parse/Bind served without a server prepare */
    uint64_t evictions;          /* statements closed by a server's LRU */
};

/* One registered statement, for SHOW PREPARED_STATEMENTS. */
struct pgw_ps_info {
    const char *name;            /* pgwharf's name on servers */
    const char *query;
    int nparams;
    int refs;                    /* client names + servers + in-flight messages */
};
/* Iterate the registry: start with *cursor = NULL and bucket = 0; returns
 * false at the end.  Nothing may change the registry meanwhile. */
bool pgw_ps_next(const struct pgw_proxy *px, size_t *bucket, void **cursor,
                 struct pgw_ps_info *info);

int pgw_ps_init(struct pgw_proxy *px);
void pgw_ps_deinit(struct pgw_proxy *px);
void pgw_ps_get_stats(const struct pgw_proxy *px, struct pgw_ps_stats *st);
/* Statements the client has prepared under its names, and statements the
 * server has prepared under pgwharf's (SHOW CLIENTS / SERVERS
 * prepared_statements). */
int pgw_ps_client_count(const struct pgw_session *s);
int pgw_ps_server_count(const struct pgw_server *srv);

/* Is the session's traffic rewritten (transaction/statement mode with
 * max_prepared_statements > 0)? */
bool pgw_ps_enabled(const struct pgw_session *s);
/* The session is gone: drop its statements and queue. */
void pgw_ps_session_free(struct pgw_session *s);
/* Linking or unlinking a server: the response queue starts empty. */
void pgw_ps_link(struct pgw_session *s);
/* A request of the client's (a Query, or Parse/Bind/Describe/Execute and a
 * Sync: `n` message types) went to the server without passing
 * pgw_ps_frontend (queued behind another client's, relay.c): expect its
 * replies.  Bit i of `named` says message i names statement st (which the
 * server had: pgw_ps_server_ready).  False when out of memory. */
bool pgw_ps_request_sent(struct pgw_session *s, const char *types, int n, unsigned named,
                         struct ps_stmt *st);
/* The client's statement `key` (a name as name_key files it) becomes
 * pgwharf's as if its Parse of sql, without parameter types, had been
 * answered: a LISTEN or UNLISTEN notify_ext.c answered between
 * transactions, now bound on a server, which lacks it (ensure_prepared
 * sends it there first).  Nothing when the client has a statement of that
 * name already; false when out of memory. */
bool pgw_ps_adopt(struct pgw_session *s, const char *key, const char *sql);
/* Does the client have a prepared statement of that name (as the client
 * sent it; filed as name_key files it)? */
bool pgw_ps_client_has(struct pgw_session *s, const char *name);
/* The statement the client calls `name`, with its text and the name it has
 * on servers; NULL when the client has none by that name.  It lives while
 * the client's name does. */
struct ps_stmt *pgw_ps_client_stmt(struct pgw_session *s, const char *name, const char **sql,
                                   const char **server_name);
/* srv has st prepared, with a usable plan. */
bool pgw_ps_server_ready(struct pgw_server *srv, const struct ps_stmt *st);
/* s leaves srv to clients queued behind it before the answers to
 * what it sent came: the statements it was preparing there may or may
 * not exist, and its Closes may or may not have run.  They are forgotten
 * and closed again before the server prepares anything more. */
void pgw_ps_abandon(struct pgw_session *s, struct pgw_server *srv);
/* A Parse of a named statement (the client's or injected) awaits its
 * answer on s's server. */
bool pgw_ps_parse_pending(const struct pgw_session *s);
/* s sends a request using st to srv, which has it (LRU order, hit count). */
void pgw_ps_server_used(struct pgw_session *s, struct pgw_server *srv, const struct ps_stmt *st);
/* Its replies were dropped and answered by pgwharf instead: forget them. */
void pgw_ps_request_dropped(struct pgw_session *s);
void pgw_ps_unlink(struct pgw_session *s);

enum pgw_ps_action {
    PGW_PS_FORWARD,              /* send the message at b->parsed (*total may change) */
    PGW_PS_DROPPED,              /* pgwharf answered it; it is gone from the buffer */
    PGW_PS_NEED_ROOM,            /* wait until the buffer drains, then scan again */
    PGW_PS_WAIT,                 /* wait for the server's answers to what is sent (a
                                  * Sync's ReadyForQuery), then scan again */
    PGW_PS_FAILED                /* the session was closed (or ends once what it owes
                                  * the client is written: pgw_relay_close_owed) */
};

/* A whole frontend message of `type` and `*total` bytes sits at b->parsed
 * (the session is linked).  Injects what the server needs before it,
 * rewrites it, and queues the responses expected.  P, B, D, C, Q and
 * the response-producing E, S, F come here; others do not. */
enum pgw_ps_action pgw_ps_frontend(struct pgw_session *s, struct pgw_iobuf *b, char type,
                                   uint32_t *total);
/* A Query (avail of its total bytes here) that may be SQL DEALLOCATE of
 * one of the client's statements: 1 answered by pgwharf and cut from the
 * buffer; 0 for the server; PGW_PS_DEALLOC_REWRITTEN (with a server, msg at
 * s->cbuf's parse position) a DEALLOCATE among its statements was
 * rewritten in place, behind messages of pgwharf's: read the message
 * there again; PGW_NOTIFY_MORE read it whole first, or wait until nothing
 * is outstanding (quiet false); -1 the session was closed. */
#define PGW_PS_DEALLOC_REWRITTEN 3    /* (not PGW_NOTIFY_MORE's 2) */
/* The client sent what replaces or drops its unnamed statement in
 * PostgreSQL (a Parse or Close of it, a simple Query): the copy kept of
 * it is not it any more. */
void pgw_ps_unnamed_gone(struct pgw_session *s);
/* The unnamed Parse m starts a request queued on a busy server
 * (server_pipeline_depth): kept as the client's once answered. */
void pgw_ps_unnamed_queued(struct pgw_session *s, const uint8_t *m);
int pgw_ps_deallocate_query(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                            uint32_t total, bool quiet);
/* The longest Close (of a statement or a portal) a client with no server
 * has answered here (pgw_ps_close_alone, the relay's close_portal_alone);
 * a longer name waits for a server, read there whole. */
#define PGW_CLOSE_ALONE_MAX (PGW_MSG_HDR + 2 + 4096)

/* A Close of a statement msg (avail bytes of its total here) from a
 * client with nothing under way and no server (ts-postgres closes with
 * Close + Flush, no Sync): its name goes (the unnamed one's copy went
 * already: drops_unnamed), and the caller answers CloseComplete, as a
 * Close linked is answered (a server taken for it would stay with the
 * idle client, its batch open until the next Sync).  1 gone (answer it),
 * 0 not (a portal, a name PostgreSQL refuses or a malformed Close: the
 * server's), PGW_NOTIFY_MORE read it whole first. */
int pgw_ps_close_alone(struct pgw_session *s, const uint8_t *msg, uint32_t avail,
                       uint32_t total);
/* A Parse m (have bytes of what the client sent, from m, here) from a
 * client with no server and nothing under way (so in no transaction):
 * when it is followed by a Sync, nothing between (libpq's PQprepare), and
 * its text and parameter types are a statement a server of the pool has
 * prepared in the client's reading of settings, under a name the client
 * has not, pgwharf answers ParseComplete and the name is the client's,
 * unread: its reading is the one a server gives at its first Bind or
 * Describe (prepared.c's unread_use).  The caller answers the Sync.  No
 * wait for a server held by a client whose replies this client's thread
 * would read (pgbench -M prepared, more clients than servers on one
 * thread).  1 answered (the Parse cut from the buffer), 0 not (a
 * server's), PGW_NOTIFY_MORE read up to the Sync first, -1 the session
 * was closed. */
int pgw_ps_parse_alone(struct pgw_session *s, const uint8_t *m, size_t have);
/* The client sent CopyDone or CopyFail (type): which Syncs a COPY FROM
 * STDIN may read and ignore is counted from them. */
void pgw_ps_copy_sent(struct pgw_session *s, char type);
/* A server message of `type` begins (its header read): when it shows
 * that Syncs a failed COPY FROM STDIN may have read were read, the
 * replies pgwharf makes itself behind them go out now, before it.  True
 * when some did (the buffer changed: scan again from its cursor), or the
 * session was closed. */
bool pgw_ps_resolve(struct pgw_session *s, char type);
/* How many Syncs sent (and counted by pgw_track_frontend) a COPY FROM
 * STDIN has read as its own since the last call: no ReadyForQuery answers
 * them.  Told only once certain: at the COPY's CommandComplete, or after
 * it failed, when a later reply shows which it read (a COPY can fail
 * before it reads anything, in a BEFORE STATEMENT trigger). */
int pgw_ps_copy_syncs_read(struct pgw_session *s);
/* After a COPY FROM STDIN failed, whether it read some Syncs the client
 * sent in it, or they were answered, the replies tell only once a later
 * request's come.  A client with nothing else under way gets none: when
 * only such Syncs are outstanding (and replies pgwharf makes itself, to
 * messages it sent nowhere), pgwharf sends a probe of its own (a Sync, a
 * Close no statement has, a Flush; its replies dropped), after what the
 * client sent (the caller writes it out).  True when sent. */
bool pgw_ps_probe_idle(struct pgw_session *s);
/* Did a probe's last reply just come (once)?  The server may be free. */
bool pgw_ps_probe_ended(struct pgw_session *s);

/* Does this backend message type need to be whole in the buffer? */
bool pgw_ps_backend_wants_whole(struct pgw_session *s, char type);
/* A backend message at sbuf->parsed (msg NULL: one passing through in
 * pieces, only its type and length known); returns true when it must be
 * dropped (a reply to an injected message).  May queue pgwharf's own answers to
 * be inserted after it: see pgw_ps_emit. */
bool pgw_ps_backend(struct pgw_session *s, char type, const uint8_t *msg, uint32_t total);
/* A whole ErrorResponse of `*total` bytes at sbuf->parsed, before
 * pgw_ps_backend sees it: one answering a Bind or Describe renamed to
 * PGW_<n> names the client's statement instead (PostgreSQL quotes the name
 * in 26000 and in 08P01 "bind message supplies..."), the 42P05 pgwharf
 * raises loses the CONTEXT of the DO block raising it, and the 25P02
 * refusing a Parse pgwharf sent for a Bind in a failed transaction becomes
 * the 08P01 PostgreSQL raises first when the Bind's parameters do not
 * match.  *total and s->sbuf may change.  False when the session was
 * closed. */
bool pgw_ps_backend_error(struct pgw_session *s, uint32_t *total);
/* Insert answers that are due (queue head) at sbuf->parsed, advancing it. */
void pgw_ps_emit(struct pgw_session *s);
/* Nothing outstanding in the queue? */
bool pgw_ps_idle(const struct pgw_session *s);
/* Nothing in the queue but Closes pgwharf answers itself (pgw_ps_emit
 * sends them next), which ask nothing of the server? */
bool pgw_ps_closes_only(const struct pgw_session *s);
/* Are Syncs outstanding that a failed COPY may or may not have answered
 * (the count of ReadyForQuerys to come is unknown until the server sends
 * more)?  A client gone then gets its server closed, not waited for. */
bool pgw_ps_unsure(const struct pgw_session *s);
/* Replies the session's queue still expects from its server. */
uint32_t pgw_ps_backlog(const struct pgw_session *s);
/* Replies the queue may expect before the client's next messages wait
 * (pgw_ps_frontend's PGW_PS_WAIT, a Flush sent for what the server holds).
 * High enough for a driver that sends a whole batch before it reads,
 * which would wait for ever (JDBC's executeBatch reads once it expects
 * about 64 kB of replies, at 250 bytes a query: hundreds of Binds and
 * Executes).  Checked per message, not per read: a read of small messages
 * past it doubled the queue (16384 entries and one read: 5.6 MB a
 * client).  Below 8192, the queue's cap, by more than one message adds (a
 * Parse pgwharf sends ahead of a Bind, a Close it makes room with). */
#define PGW_PS_BACKLOG_MAX 8000

/* srv goes back to the pool through reset_query (server_reset_query),
 * which may drop its statements (DISCARD ALL): forget them there. */
void pgw_ps_server_reset(struct pgw_server *srv, const char *reset_query);

/* Server state freed with the server (pgw_pool_set_free_hook). */
void pgw_ps_server_free(struct pgw_server *srv, void *arg);

#endif
