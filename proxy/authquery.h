/*
 * authquery.h - looking a client's secret up in PostgreSQL with auth_query
 * (internal to proxy/).
 *
 * When a client's user is not in auth_file and an auth_user applies (the
 * [databases] entry's auth_user=, else the general one), auth.c asks this
 * module for the user's secret.  The module runs auth_query as auth_user
 * through pgwharf's own pool for (auth_dbname or the client's database,
 * auth_user), on the loop, and caches the answer per (that database,
 * auth_user, user) for a short time.  Sessions asking for the same user
 * while a lookup runs wait for that one lookup.
 *
 * Ownership: struct pgw_aq_cache (proxy->aq) owns every cache entry and
 * every lookup in flight (its lent server, its watchers).  A session owns
 * its struct pgw_aq_wait (embedded in auth.c's per-session state) and is
 * linked to an entry only while it waits.
 */
#ifndef PGW_PROXY_AUTHQUERY_H
#define PGW_PROXY_AUTHQUERY_H

#include <stdbool.h>
#include <stddef.h>

#include "common/list.h"
#include "ctx/ctx.h"

struct pgw_proxy;
struct pgw_session;
struct pgw_aq_entry;

/* How long answers are kept (seconds), "no such user" too.
 * PGW_AUTH_CACHE_TTL in the environment overrides it (tests). */
#define PGW_AQ_TTL          30.0
/* Most answers kept; the oldest go first. */
#define PGW_AQ_MAX_ENTRIES  10000

enum pgw_aq_status {
    PGW_AQ_FOUND,            /* one row: secret (NULL when the password is NULL or empty) */
    PGW_AQ_NOT_FOUND,        /* no row */
    PGW_AQ_ERROR             /* the lookup failed: sqlstate, message */
};

struct pgw_aq_result {
    enum pgw_aq_status status;
    const char *secret;      /* FOUND only; may be NULL */
    const char *sqlstate;    /* ERROR only */
    const char *message;     /* ERROR only: for the client and the log */
};

struct pgw_aq_wait;
/* The answer; r and its strings are valid only during the call.  The wait
 * is already detached, so the callback may close the session. */
typedef void (*pgw_aq_done_fn)(struct pgw_aq_wait *w, const struct pgw_aq_result *r);

/* Embedded by the caller, zeroed before first use. */
struct pgw_aq_wait {
    struct pgw_session *session;
    pgw_aq_done_fn done;
    /* private */
    struct pgw_list node;            /* in the entry's waiters */
    struct pgw_ctx_sub sub;          /* the session's ctx: the client left */
    struct pgw_aq_entry *entry;      /* non-NULL while waiting */
};

/* Does an auth_user apply to this session (so an unknown user is looked up)? */
bool pgw_authquery_applies(const struct pgw_session *s);
/* The lookup s would run now (its database, auth_user, user and query) as
 * an opaque malloc'd key of *len bytes; NULL when none applies (or out of
 * memory).  auth.c keeps the one its answer came from: a reload during the
 * login may have given the client's database other settings (or, named
 * and not in [databases] before, an entry of its own with them). */
char *pgw_authquery_target(const struct pgw_session *s, size_t *len);
/* Look s->user up.  done runs exactly once -- possibly before this returns
 * (a cached answer, or a lookup that fails at once) -- unless the wait is
 * cancelled or the session ends first (then never). */
void pgw_authquery_lookup(struct pgw_session *s, struct pgw_aq_wait *w, pgw_aq_done_fn done);
/* Stop waiting, without a callback; a no-op when not waiting.  A lookup
 * nobody waits for any more is dropped if it has no server yet. */
void pgw_authquery_cancel(struct pgw_aq_wait *w);
static inline bool pgw_authquery_waiting(const struct pgw_aq_wait *w) { return w->entry != NULL; }

/* s logged in with a secret from auth_query: give the client's own pool
 * that secret when it is plaintext (libpq can log in with nothing else),
 * or say in the log why the server login may fail. */
void pgw_authquery_server_login(struct pgw_session *s, const char *secret);

/* proxy.c: create (0 or PGW_ENOMEM), after a reload (forget every answer),
 * destroy (before the pool set: gives lent servers back). */
int pgw_authquery_init(struct pgw_proxy *px);
void pgw_authquery_reload(struct pgw_proxy *px);
void pgw_authquery_deinit(struct pgw_proxy *px);
/* KILL db (db "" for every database): a lookup talking to a server of db's
 * pools ends now, its query cancelled and its server closed; its waiters
 * get 57P01. */
void pgw_authquery_kill(struct pgw_proxy *px, const char *db);

#endif
