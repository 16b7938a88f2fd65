/*
 * aq_reply.h - an auth_query lookup on the wire: the request to send and
 * the reply, parsed as it arrives.  Pure (no I/O, no loop): authquery.c
 * reads into in[] and calls pgw_aq_reply_take.
 */
#ifndef PGW_AQ_REPLY_H
#define PGW_AQ_REPLY_H

#include <stdbool.h>
#include <stdint.h>

#include "common/wire.h"

#define PGW_AQ_RBUF 16384            /* the longest reply message kept whole */

struct pgw_aq_reply {
    int rows, cols;
    bool null_user;                  /* column 1 of the first row is SQL NULL */
    char *secret;                    /* column 2 of the first row; NULL = SQL NULL */
    bool at_ready;                   /* ReadyForQuery seen */
    char status;                     /* its transaction status */
    bool dirty;                      /* the server's stream cannot be trusted: close it */
    bool failed;                     /* sqlstate/message say why */
    char sqlstate[6];
    char message[600];
    uint32_t skip;                   /* body bytes of an ignored long message to drop */
    uint32_t in_len;                 /* bytes received, not yet taken */
    uint8_t in[PGW_AQ_RBUF];
};

/* Parse (unnamed, the query with one parameter), Bind (the user name as
 * text), Execute (all rows), Sync.  False when b ran out of memory. */
bool pgw_aq_build_request(struct pgw_wbuf *b, const char *query, const char *user);

/* Take the whole messages in in[0, in_len) and keep the rest at in[0].
 * True when the reply is over: at ReadyForQuery, or after a failure that
 * ends it (then failed and dirty are set). */
bool pgw_aq_reply_take(struct pgw_aq_reply *r);

/* Note why the lookup failed; the first reason stays.  broken: the
 * server's stream cannot be trusted any more (it is closed, not reused). */
void pgw_aq_reply_fail(struct pgw_aq_reply *r, bool broken, const char *sqlstate,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
