/*
 * breaker.h - pure parts of pool/: the circuit breaker state machine, the
 * connect-rate token bucket, the length of a pool's turn and the
 * classification of libpq connect errors.
 *
 * Internal to pool/ (exposed only so tests/unit can reach them).  Nothing
 * here reads a clock: every function takes `now` in seconds, so the unit
 * tests drive time by hand.
 */
#ifndef PGW_POOL_BREAKER_H
#define PGW_POOL_BREAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "pool/pool.h"

/*
 * closed --(threshold consecutive failures)--> open
 * open --(now >= next_probe; one attempt allowed)--> half-open (probe in flight)
 * half-open --success--> closed (failures and cooldown reset)
 * half-open --failure--> open, cooldown doubled (up to max_cooldown)
 * A success in any state closes the breaker: the backend answered.
 * threshold <= 0 disables the breaker (it never opens).
 */
struct pgw_breaker {
    enum pgw_breaker_state state;
    int threshold;
    double base_cooldown, max_cooldown;
    double cooldown;          /* the one in force (doubles per failed probe) */
    double next_probe;        /* when open: earliest probe time */
    int failures;             /* consecutive */
    uint64_t trips;
    bool probe_inflight;      /* half-open: the single probe is out */
};

void pgw_breaker_init(struct pgw_breaker *b, int threshold, double cooldown,
                      double max_cooldown);
/* New settings; state and counts are kept, but an open breaker's next
 * probe comes no later than the (new) cooldown in force from now. */
void pgw_breaker_configure(struct pgw_breaker *b, int threshold, double cooldown,
                           double max_cooldown, double now);
/* Would a new connection attempt be refused now?  No side effects. */
bool pgw_breaker_blocked(const struct pgw_breaker *b, double now);
/* May a new connection attempt start now?  When open and the cooldown has
 * passed, this turns the breaker half-open and the caller's attempt is the
 * probe (*probe set true): it must report success, failure or abort. */
bool pgw_breaker_allow(struct pgw_breaker *b, double now, bool *probe);
void pgw_breaker_success(struct pgw_breaker *b);
/* Returns true when this failure opened the breaker (a trip). */
bool pgw_breaker_failure(struct pgw_breaker *b, double now, bool probe);
/* The probe ended without an answer (closed by us): allow another at once. */
void pgw_breaker_probe_abort(struct pgw_breaker *b, double now);

/*
 * Token bucket: `rate` tokens per second up to `burst`.  rate <= 0 means
 * unlimited.  burst <= 0 means max(1, rate).
 */
struct pgw_bucket {
    double rate, burst, tokens, last;
};
void pgw_bucket_init(struct pgw_bucket *tb, double rate, int burst, double now);
/* New rate/burst; tokens are kept (capped at the new burst). */
void pgw_bucket_configure(struct pgw_bucket *tb, double rate, int burst, double now);
/* Take one token if there is one. */
bool pgw_bucket_take(struct pgw_bucket *tb, double now);
/* Seconds until a token is available (0 when one is, or unlimited). */
double pgw_bucket_wait(const struct pgw_bucket *tb, double now);
/* A token taken and not used goes back (up to the burst). */
void pgw_bucket_put_back(struct pgw_bucket *tb);

/* How long a pool's clients wait for a turn under a shared
 * max_db_connections / max_user_connections, or before a login on its way
 * may be overtaken, for a query_wait_timeout of qwt seconds (0: none):
 * PGW_POOL_TURN, a quarter of qwt at most, PGW_POOL_TURN_MIN at least but
 * never past half of qwt (pool_int.h). */
double pgw_pool_turn_length(double qwt);

/*
 * libpq 15 keeps no SQLSTATE for a failed connect or login, only the text of
 * PQerrorMessage().  pool/server.c asks for its verbose form, in which each
 * ErrorResponse of the server reads "FATAL:  3D000: database ..." whatever
 * the server's lc_messages: the last such SQLSTATE into out (true), or
 * false when the server sent none (libpq's own failures).
 */
bool pgw_pool_server_sqlstate(const char *libpq_msg, char out[6]);
/*
 * Without one, guess the SQLSTATE the backend sent from the English text
 * ("FATAL:  password authentication failed ..." -> 28P01, ...); "08006"
 * (connection_failure) when nothing matches, "08001" when the client could
 * not even reach the server.  Returns a static string.
 */
const char *pgw_pool_guess_sqlstate(const char *libpq_msg);
/* Did libpq refuse the connection for target_session_attrs (the server
 * answered, but is read-only / not, in hot standby / not)? */
bool pgw_pool_target_mismatch(const char *libpq_msg);
/* Did the server refuse the login for one role or database only (its
 * CONNECTION LIMIT, "too many connections for role/database",
 * ALLOW_CONNECTIONS false, or the slots reserved for superusers), or refuse
 * the encryption the pool's entry requires (sslmode=require,
 * gssencmode=require against a server without it)?  Unlike "sorry, too many
 * clients already" (53300 as well), the server is up for every other pool
 * on it. */
bool pgw_pool_refusal_is_local(const char *libpq_msg);
/* Of those, the refusals of one host's TLS: no TLS there, or a
 * certificate the pool's check refuses (the wrong CA, a name that does not
 * match under verify-full).  Another host of the entry's list may pass, as
 * libpq's own multi-host connect goes on to it. */
bool pgw_pool_refusal_is_tls(const char *libpq_msg);
/* The same told by where the server raised the last attempt's error (the
 * verbose form's "LOCATION:  routine, file:line"), whatever the server's
 * lc_messages: a check of the role or of the database, or the reserved
 * slots (53300 from InitPostgres: full for this role, not for a superuser
 * or, from 16, a member of pg_use_reserved_connections). */
bool pgw_pool_refused_for_role_or_db(const char *libpq_msg);
/* Copy libpq's multi-line message into buf on one line, trimmed, without
 * the verbose form's SQLSTATEs and LOCATION lines. */
void pgw_pool_trim_error(char *buf, size_t size, const char *libpq_msg);

/* The start of libpq's struct pg_cancel (libpq-int.h), the same from
 * libpq 9.1 to 17: { SockAddr raddr; int be_pid; int be_key; ... }.  libpq
 * 18 made the key variable-length and moved it.  pool/server.c reads it
 * from PQgetCancel's copy: libpq before 17 hands the backend's key to no
 * one but its own blocking PQcancel. */
struct pgw_libpq_cancel_head {
    struct {                     /* SockAddr: padded as a struct of its own */
        struct sockaddr_storage addr;
        socklen_t salen;
    } raddr;
    int be_pid;
    int be_key;
};
/* Is h what libpq keeps for the connection whose socket's peer (its
 * getpeername) is peer/peerlen: a positive pid, and raddr that address
 * (family, port and address; a Unix socket's by the path's last
 * component, as libpq's name for it may reach the socket the server bound
 * another way: "DIR/", a symlink; an abstract one by its bytes)?  A
 * layout that is not libpq's fails it. */
bool pgw_pool_cancel_head_valid(const struct pgw_libpq_cancel_head *h,
                                const struct sockaddr *peer, socklen_t peerlen);

#endif
