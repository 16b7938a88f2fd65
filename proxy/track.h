/*
 * track.h - what the relay counts to know when a server may go back to the
 * pool: pure functions over message types, shared by relay.c and the fuzz
 * target that feeds whole protocol streams in random pieces.
 *
 *   sync_out   Sync/Query/FunctionCall sent whose ReadyForQuery is not back
 *   fe_open    messages sent since the last Sync/Query (an open batch)
 *   sync_exec  Syncs sent right after the last Execute (nothing but Syncs
 *              and Flushes between) before any error came: a COPY FROM
 *              STDIN that Execute starts reads and ignores them -- unless
 *              it fails before it reads anything (a BEFORE STATEMENT
 *              trigger runs after the CopyInResponse): then each is
 *              answered.  So they are taken back only once the COPY's
 *              CommandComplete comes after the client's CopyDone (it read
 *              all up to there), and only when the server's
 *              CopyInResponse was certainly that Execute's (copy_in).  A
 *              CopyDone outside a COPY, which the server ignores, must not:
 *              ReadyForQuery would be expected one too few, and the server
 *              would go back to the pool with a reply still to come, read
 *              by the next client -- nor undo what the COPY's own end
 *              takes back (a second CopyDone or CopyFail before its
 *              CommandComplete: ignored too).  When unsure (the COPY
 *              failed, or a CopyFail ended it), the count stays high: the
 *              server is kept (and closed when the client leaves), never
 *              handed on early.
 *   sync_copy  Syncs sent during that COPY after data: read and ignored
 *              unless the COPY failed on data before it read them (then
 *              the first is answered).  Taken back, with sync_exec, only
 *              when its CommandComplete comes (sync_copy_back): it then
 *              read them all; after an error they stay counted.
 *   sync_fail_back  those Syncs (sync_exec and sync_copy) once a CopyFail
 *              ends that COPY (copy_failing): it fails on reading the
 *              CopyFail, having read all before it, with an ErrorResponse
 *              no other error can pass for -- SQLSTATE 57014 raised in
 *              CopyGetData (its R field: a function name only server C
 *              code sets; a trigger's RAISE can copy the SQLSTATE and the
 *              message, never that).  When the first error after the
 *              CopyFail is that one (pgw_track_copy_failed, which relay.c
 *              calls on reading it whole) the Syncs are taken back, and so
 *              are the Queries/FunctionCalls sent after the CopyFail
 *              before any Sync (fail_skip: the server skips them to that
 *              Sync); any other error (the COPY failed first, maybe before
 *              it read them) leaves them counted, as above.
 *   skip_sync  an extended-protocol error came and the client has sent no
 *              Sync since: the server skips all it gets until that Sync --
 *              a Query or FunctionCall too, which then opens no request
 *              and gets no ReadyForQuery.  Which message an error answers
 *              prepared.c knows when it rewrites the session's traffic
 *              (pgw_track_ext_error); otherwise the tracker works it out
 *              (pgw_track_error): an error while no request is outstanding
 *              answers a message of the open batch; one while requests are
 *              outstanding answers the first of them, and only a Query or
 *              FunctionCall sent after extended messages of its batch (no
 *              Sync between: a "mixed" request, numbered and kept in
 *              `mixed`) can then be skipped -- when the error comes before
 *              those messages' replies are all in (ext_done).  Where the
 *              numbers may be off (a mixed request not kept; a COPY FROM
 *              STDIN, which reads the messages after it as its own) none is
 *              kept until nothing is outstanding (mixed_off): a skipped
 *              request then keeps the server with its client, never hands
 *              it on early.  (A COPY that ends well with CopyDone reads
 *              nothing after it: they are kept again from there,
 *              mixed_copy -- where its CopyInResponse alone had turned
 *              the keeping off, mixed_by_copy, and its batch's messages
 *              are counted on, not ext_unsure: a CopyDone or CopyFail
 *              after a COPY's error, a look-ahead settled under
 *              mixed_off.)
 *   copy_doubt  count_high, or a batch open again (fe_open), come of a COPY
 *              FROM STDIN by Execute that failed with Syncs it may have read
 *              (above).  The client sent nothing since that Execute but
 *              Syncs, Flushes and copy messages (copy_plain): all that can
 *              still come of it is ReadyForQuerys, alike: 'I' each, or 'E'
 *              each in the transaction block the error failed (a Close there
 *              is answered as ever, and the client's ROLLBACK then gives the
 *              server back).  Once one came after the error (doubt_z: the
 *              server then skips nothing, having read a Sync since) and the
 *              client sends nothing more, relay.c asks the server
 *              (pgw_track_probe_due): a Sync, a Close of a portal no client
 *              has (a no-op, answered by CloseComplete, which nothing the
 *              client sent can get), a Sync -- the ReadyForQuerys before
 *              that CloseComplete are the client's but one, the probe's
 *              first (any one: they are alike); the CloseComplete and the
 *              ReadyForQuery after it end the doubt (pgw_track_probed).
 *   after      Or the client's next request tells (no probe needed, and none
 *              could go out once the client sent more than Syncs): when the
 *              COPY's end (CopyDone/CopyFail, sent with nothing but Syncs,
 *              Flushes and data since the Execute) was followed by a Sync
 *              with nothing between but Flushes and copy messages -- or a
 *              Sync was sent once the COPY's error went by (read after the
 *              COPY failed) -- that Sync is answered whatever the COPY read,
 *              and nothing after it is skipped.  Everything before it gets
 *              ReadyForQuerys alone (after the COPY's error the server skips
 *              to a Sync and ignores copy messages, and a Sync then commits
 *              nothing), and so do the lone Syncs (nothing before them in
 *              their batch) sent after it first: the first other reply (but
 *              a NoticeResponse, ParameterStatus or NotificationResponse,
 *              which come at any time) is the first reply of the first
 *              request after them -- everything before it is over, and the
 *              count is exact again: the requests sent from that one on
 *              (pgw_track_settle).  A Query or FunctionCall there after
 *              extended messages of its batch (a mixed one, which an error
 *              may skip) gives the look-ahead up.
 *
 * A server may be released at ReadyForQuery 'I' once sync_out and fe_open
 * are both zero.  Internal to proxy/.
 */
#ifndef PGW_PROXY_TRACK_H
#define PGW_PROXY_TRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/wire.h"

/* A Query or FunctionCall sent after extended-protocol messages of its
 * batch.  More than PGW_TRACK_MIXED_MAX outstanding at once are not kept:
 * an error skipping one of those leaves a ReadyForQuery expected that never
 * comes, so the server stays with the client (closed when it leaves),
 * never handed on early -- and no later one is kept either (mixed_off),
 * their numbers counting that ReadyForQuery. */
#define PGW_TRACK_MIXED_MAX 8

/* struct pgw_track.after: where the client is after a COPY FROM STDIN's end. */
enum pgw_track_after {
    PGW_TRACK_AFTER_NONE,        /* no look-ahead (see the top) */
    PGW_TRACK_AFTER_COPY,        /* the COPY of the last Execute is under way (copy_in) */
    PGW_TRACK_AFTER_END,         /* its CopyDone/CopyFail sent, no Sync since */
    PGW_TRACK_AFTER_SYNCED       /* and a Sync after it: what follows is counted */
};
struct pgw_track_mixed {
    uint32_t seq;                /* its request's number (req_done counts them) */
    uint32_t ext;                /* the Parse/Bind/Describe/Execute/Close before it */
    uint32_t skip;               /* Queries/FunctionCalls from it up to the next Sync */
    bool open;                   /* that Sync is not sent yet */
};

struct pgw_track {
    int sync_out;
    int fe_open;
    int sync_exec;
    int execs;                   /* Executes since the last Sync/Query */
    int exec_batch;              /* Executes in the batch of the last Execute, up to it */
    int exec_done;               /* Executes answered (CommandComplete, EmptyQueryResponse,
                                  * PortalSuspended) since the last ReadyForQuery */
    char tx_status;              /* last ReadyForQuery status */
    bool copy;                   /* COPY under way */
    bool exec_last;              /* only Syncs/Flushes since the last Execute */
    bool copy_in;                /* COPY FROM STDIN of the last Execute, not ended by the client */
    bool copy_err;               /* an error came during that COPY: it read no more */
    int sync_copy;               /* Syncs sent after its data (see the top) */
    int sync_copy_back;          /* those, once CopyDone is sent: back at its CommandComplete */
    int sync_fail_back;          /* those, once CopyFail is sent: back at its own error */
    bool copy_failing;           /* that CopyFail's own error would be the next one */
    bool fail_open;              /* no Sync sent since that CopyFail */
    int fail_skip;               /* Queries/FunctionCalls sent since, before a Sync */
    bool skip_sync;              /* the server skips messages until the next Sync */
    /* The numbers of the requests outstanding may be off (a mixed Query
     * was not kept: the server may skip it unseen; a COPY FROM STDIN may
     * have read messages as its own): no new mixed request is kept until
     * nothing is outstanding. */
    bool mixed_off;
    /* Mixed requests are kept again from the CopyDone that ends a COPY
     * FROM STDIN of the last Execute for certain (copy_in, no error seen),
     * with nothing outstanding but the Syncs it read: the COPY reads
     * nothing after its CopyDone.  They are numbered as if it read those
     * Syncs (sync_copy_back), which its CommandComplete confirms; where
     * they are not taken back (its error came first) they are dropped and
     * mixed_off is on again (pgw_track_copy_back_lost). */
    bool mixed_copy;
    /* mixed_off was off when the CopyInResponse of that COPY came: it alone
     * turned the keeping off, and its CopyDone may turn it on again.  (Left
     * on from before -- a look-ahead settled the count without a
     * ReadyForQuery, a mixed Query not kept -- the batch's numbers may be
     * off: review of e8e2d04.) */
    bool mixed_by_copy;
    /* The COPY of the last Execute was ended by the client (CopyDone or
     * CopyFail, copy_in) and no Execute or Query went since: a further end
     * comes outside any COPY, which PostgreSQL ignores -- it takes nothing
     * from the mixed requests kept since the first (mixed_copy). */
    bool copy_ended;
    /* sync_out may be higher than the ReadyForQuerys to come: a request
     * was outstanding besides the one of a COPY FROM STDIN (which may read
     * its Sync or Query as its own), or a Query was not kept as mixed
     * (the server may skip it unseen).  Until nothing is outstanding. */
    bool count_high;
    bool copy_doubt;             /* the count is unsure after a failed COPY (see the top) */
    bool copy_plain;             /* only Sync, Flush, CopyData/Done/Fail since the
                                  * Execute of the COPY FROM STDIN under way (copy_in) */
    bool doubt_z;                /* a ReadyForQuery came since its error */
    bool doubt_open;             /* fe_open is only its batch opened again by the
                                  * CopyDone/CopyFail just sent */
    uint8_t after;               /* enum pgw_track_after: the client's messages after the
                                  * end of the COPY of the last Execute (see the top) */
    bool after_err;              /* that COPY failed: copy_doubt is its */
    bool after_open;             /* since the last Sync there, messages other than
                                  * Flushes and copy messages */
    bool after_lead;             /* the requests since the Sync after the end are lone
                                  * Syncs so far */
    int32_t after_n;             /* requests sent since that Sync */
    int32_t after_lone;          /* of them, the lone Syncs first */
    bool bodied;                 /* a Sync or Flush with a body was sent, not all answered
                                  * since (pgw_track_bodied) */
    bool ext_unsure;             /* the open batch was sent under mixed_off: some of
                                  * its messages may get no answer */
    int ext_open;                /* Parse/Bind/Describe/Execute/Close since the last
                                  * Sync/Query/FunctionCall */
    uint32_t req_done;           /* requests answered (or skipped) since the link: the
                                  * first outstanding one has this number */
    uint32_t ext_done;           /* replies ending one of the extended messages of the
                                  * first outstanding request, when it is mixed; while
                                  * none is outstanding, of the open batch (a Query
                                  * closing it takes them along) */
    int nmixed;
    struct pgw_track_mixed mixed[PGW_TRACK_MIXED_MAX];   /* oldest first */
};

static inline void pgw_track_reset(struct pgw_track *t)
{
    t->sync_out = t->fe_open = t->sync_exec = t->execs = t->exec_batch = t->exec_done = 0;
    t->copy = t->exec_last = t->copy_in = t->skip_sync = t->mixed_off = t->ext_unsure = false;
    t->mixed_copy = t->mixed_by_copy = t->copy_ended = false;
    t->count_high = t->copy_err = t->copy_failing = t->fail_open = false;
    t->copy_doubt = t->copy_plain = t->doubt_z = t->doubt_open = false;
    t->after = PGW_TRACK_AFTER_NONE;
    t->after_err = t->bodied = false;
    t->sync_copy = t->sync_copy_back = t->sync_fail_back = t->fail_skip = 0;
    t->ext_open = t->nmixed = 0;
    t->req_done = t->ext_done = 0;
}

/* The open batch held Closes and Flushes alone, every Close answered by
 * CloseComplete after a Flush, nothing outstanding (relay.c
 * close_batch_done): a Close opens no transaction, so the server waits
 * for nothing more of it -- taken for ended, as at a Sync. */
static inline void pgw_track_closes_answered(struct pgw_track *t)
{
    t->fe_open = t->ext_open = 0;
    t->ext_done = 0;
    t->exec_last = false;
}

/* Mixed requests (track.c): a Query/FunctionCall opening a request, a
 * Sync, a reply the client gets, requests answered or skipped. */
void pgw_track_mixed_query(struct pgw_track *t);
void pgw_track_mixed_sync(struct pgw_track *t);
void pgw_track_mixed_reply(struct pgw_track *t, char type);
void pgw_track_mixed_drop(struct pgw_track *t);

/* How many Syncs a CopyDone/CopyFail sent now takes back. */
static inline int pgw_track_copy_ignored(const struct pgw_track *t)
{
    return t->copy_in ? t->sync_exec : 0;
}

/* The Syncs a COPY that ended with CopyDone read will not be taken back
 * (its error came first, or they are forgotten): the mixed requests kept
 * since that CopyDone, numbered as if they were (mixed_copy), are not
 * kept -- a skipped one then keeps the server with its client, as under
 * mixed_off, never hands it on early. */
static inline void pgw_track_copy_back_lost(struct pgw_track *t)
{
    if (!t->mixed_copy)
        return;
    t->mixed_copy = false;
    t->mixed_off = true;
    if (t->nmixed > 0) {
        t->nmixed = 0;
        t->count_high = true;
    }
}

/* Count from here what the client sends after the COPY's end (see the
 * top, after), when it sent nothing but Syncs, Flushes and copy messages
 * since the Execute. */
static inline void pgw_track_after_start(struct pgw_track *t, enum pgw_track_after at)
{
    t->after = (uint8_t)(t->copy_plain && !t->bodied ? at : PGW_TRACK_AFTER_NONE);
    t->after_open = false;
    t->after_lead = true;
    t->after_n = t->after_lone = 0;
}

/* A Sync or Flush (`type`) with a body is about to be sent: PostgreSQL
 * answers it with an error, outside a COPY -- a Sync with its
 * ReadyForQuery too, which the look-ahead would take for the next
 * request's first reply (see the top, after): none until everything sent
 * so far is answered (review: the server went back with that request's
 * replies still to come); a Flush skipping to the next Sync after, as a
 * failed Parse does (alone it opened no batch: the server went back with
 * its error to come, track_model).  Returns the type to give
 * pgw_track_frontend. */
static inline char pgw_track_bodied(struct pgw_track *t, char type)
{
    /* A Flush inside the COPY FROM STDIN of the last Execute, no error
     * seen: the COPY ignores it, body and all, and once the COPY failed
     * the server skips it to the next Sync (copyfromparse.c, postgres.c)
     * -- unless a Sync sent since the Execute ended the skipping (a
     * trigger failed the COPY before it read that Sync): then 08P01,
     * skipping to the next Sync.  So with such a Sync it holds a batch
     * open (the server stays until the client's next Sync is answered)
     * and keeps the look-ahead off; the COPY stays certain, its Syncs
     * taken back at its CommandComplete (counted as a failed Parse, it
     * kept the server for the session). */
    if (type == PGW_FE_FLUSH && t->copy_in && !t->copy_err) {
        if (t->sync_exec > 0 || t->sync_copy > 0) {
            t->bodied = true;
            t->after = PGW_TRACK_AFTER_NONE;
            t->ext_open++;       /* (its error is an extended message's) */
            t->fe_open++;
        }
        return type;
    }
    t->bodied = true;
    t->after = PGW_TRACK_AFTER_NONE;
    return type == PGW_FE_FLUSH ? PGW_FE_PARSE : type;
}

/* A frontend message of `type` is sent after a COPY's end (see the top,
 * after). */
static inline void pgw_track_after_sent(struct pgw_track *t, char type)
{
    switch (type) {
    case PGW_FE_SYNC:
        if (t->after == PGW_TRACK_AFTER_END) {
            /* (Messages between the end and this Sync may be skipped.) */
            t->after = t->after_open ? PGW_TRACK_AFTER_NONE : PGW_TRACK_AFTER_SYNCED;
        } else if (t->after_n == INT32_MAX) {
            t->after = PGW_TRACK_AFTER_NONE;     /* (lone Syncs for ever: given up) */
        } else {
            t->after_n++;
            if (t->after_lead && !t->after_open)
                t->after_lone++;
            else
                t->after_lead = false;
        }
        t->after_open = false;
        break;
    case PGW_FE_QUERY:
    case PGW_FE_FUNCTION_CALL:
        /* Before the Sync, or after extended messages of its batch: the
         * server may skip it. */
        if (t->after == PGW_TRACK_AFTER_END || t->after_open) {
            t->after = PGW_TRACK_AFTER_NONE;
            break;
        }
        if (t->after_n == INT32_MAX) {
            t->after = PGW_TRACK_AFTER_NONE;
            break;
        }
        t->after_n++;
        t->after_lead = false;
        break;
    case PGW_FE_FLUSH:
    case PGW_FE_COPY_DATA:
    case PGW_FE_COPY_DONE:
    case PGW_FE_COPY_FAIL:
        break;                   /* (outside a COPY, copy messages are ignored) */
    default:
        t->after_open = true;
        break;
    }
}

/* A frontend message of `type` is sent.  Returns true when it opens a
 * request (the first outstanding Sync/Query), for query timing. */
static inline bool pgw_track_frontend(struct pgw_track *t, char type)
{
    if (type == PGW_FE_QUERY)
        t->copy_ended = false;           /* (it may start a COPY FROM STDIN) */
    if (t->skip_sync && (type == PGW_FE_QUERY || type == PGW_FE_FUNCTION_CALL))
        type = PGW_FE_PARSE;     /* skipped by the server: one more message of the batch */
    t->doubt_open = false;
    if (t->after >= PGW_TRACK_AFTER_END)
        pgw_track_after_sent(t, type);
    switch (type) {
    case PGW_FE_QUERY:
    case PGW_FE_FUNCTION_CALL:
        if (t->ext_open > 0 || t->nmixed > 0)
            pgw_track_mixed_query(t);
        t->ext_open = 0;
        t->ext_unsure = false;
        t->sync_exec = t->execs = 0;
        t->fe_open = 0;
        t->exec_last = t->copy_in = false;
        if (t->mixed_off && t->sync_out > 0)
            t->count_high = true;
        if (t->fail_open)
            t->fail_skip++;
        t->copy_plain = false;
        return t->sync_out++ == 0;
    case PGW_FE_SYNC:
        /* Sent once the COPY's error went by, the server read it after
         * failing: answered, as a Sync after the COPY's end. */
        if (t->after == PGW_TRACK_AFTER_COPY && t->after_err)
            pgw_track_after_start(t, PGW_TRACK_AFTER_SYNCED);
        if (t->nmixed > 0)
            pgw_track_mixed_sync(t);
        t->ext_open = 0;
        t->ext_unsure = false;
        t->skip_sync = false;
        t->fail_open = false;
        /* (One sent after the COPY failed is not read by it.) */
        if (t->exec_last && !t->copy_err)
            t->sync_exec++;
        else if (t->copy_in && !t->copy_err)
            t->sync_copy++;
        t->execs = 0;
        t->fe_open = 0;
        if (t->mixed_off && t->sync_out > 0)
            t->count_high = true;
        return t->sync_out++ == 0;
    case PGW_FE_COPY_DONE:
    case PGW_FE_COPY_FAIL: {
        int back = pgw_track_copy_ignored(t);
        /* A second end, sent with no Execute or Query since the first
         * (copy_ended), comes outside any COPY: PostgreSQL ignores it, and
         * the mixed requests kept since the first end stay kept (given up
         * there, a Query an error skipped after it kept the server with
         * its client for the session: mixed_off).  One that may be read by
         * a COPY the client started since gives them up (kept, never
         * early). */
        if (!t->copy_ended)
            pgw_track_copy_back_lost(t);
        t->copy_ended = t->copy_ended || t->copy_in;
        if (t->after == PGW_TRACK_AFTER_COPY)
            pgw_track_after_start(t, PGW_TRACK_AFTER_END);
        /* Sent before the CopyInResponse came (not yet certainly the last
         * Execute's COPY): Syncs sent right after that Execute may be the
         * COPY's, read and ignored, and their ReadyForQuery never come. */
        if (!t->copy_in && t->sync_exec > 0)
            t->count_high = true;
        /* The Syncs it read come back at the COPY's CommandComplete, which
         * only a CopyDone gets, and only when no error came first: an
         * error may have come before it read them.  Else they stay
         * counted, maybe one too many: kept. */
        bool ends_well = type == PGW_FE_COPY_DONE && t->copy_in && !t->copy_err;
        /* Only an end of the COPY of the last Execute (copy_in) sets what
         * it takes back.  One sent after that COPY's CopyDone or CopyFail
         * (a second end) comes outside the COPY, which read nothing after
         * its own: PostgreSQL ignores it ("accept but ignore", postgres.c)
         * and that COPY's CommandComplete or error still comes -- the
         * first end's Syncs stay to be taken back there (set to none, they
         * stayed counted: the server stayed with its client for the
         * session, review).  (Else nothing is pending there.) */
        if (t->copy_in) {
            t->sync_copy_back = ends_well ? t->sync_copy + back : 0;
            /* A CopyFail gets its own error, which tells that the COPY
             * read it (pgw_track_copy_failed): then those Syncs too. */
            t->copy_failing = t->fail_open = type == PGW_FE_COPY_FAIL && !t->copy_err;
            t->sync_fail_back = t->copy_failing ? t->sync_copy + back : 0;
            t->fail_skip = 0;
        }
        if (back > 0 && !ends_well)
            t->count_high = true;
        /* Syncs among the data may be the COPY's too: its batch may be
         * open still -- after a CopyDone's CommandComplete, which takes
         * them back (the replies of that batch, the COPY's ParseComplete
         * and BindComplete, count in ext_done: a mixed Query sent next
         * must count them among its batch's, or an error skipping it
         * passes for its own, and the numbers drift to a release one
         * ReadyForQuery early), or after the CopyFail's error, the server
         * skipping up to the client's next Sync (below). */
        bool reopen = t->copy_in && (back > 0 || t->sync_copy_back > 0 || t->sync_fail_back > 0);
        t->sync_copy = 0;
        /* The Syncs the COPY read were none: its batch goes on, and the
         * Executes after it count on from the COPY's (exec_done counts
         * replies since the last ReadyForQuery, which did not come).  (If
         * it failed after all, the count is high: no COPY after it is
         * taken for certain.) */
        if (t->copy_in && t->sync_copy_back > 0)
            t->execs = t->exec_batch;
        /* The COPY reads nothing after its CopyDone: what the client sends
         * next is answered in order, or skipped to the next Sync after an
         * error (the COPY's own too) -- a mixed Query or FunctionCall can
         * be kept again (the CopyInResponse turned that off), where
         * nothing else is outstanding but the Syncs the COPY read: with
         * those, for certain once its CommandComplete takes them back
         * (mixed_copy); else at once (its Execute is one of the batch's
         * messages).  Else a skipped one kept the server for the session
         * (difftest hunt).  Only where this COPY's CopyInResponse alone
         * turned the keeping off (mixed_by_copy) and the batch's messages
         * are counted on (ext_unsure): an ext_open one too high, left by
         * a stray CopyDone after a failed COPY, had a later mixed
         * request's own error pass for its skipping (review of e8e2d04:
         * an early release). */
        if (ends_well && t->mixed_by_copy && t->sync_out == t->sync_copy_back &&
            t->nmixed == 0 && !t->bodied && !t->ext_unsure && !t->copy_doubt) {
            t->mixed_off = false;
            t->mixed_copy = t->sync_copy_back > 0;
        }
        if (reopen) {
            /* Those Syncs may be the COPY's: the Execute's batch may be
             * open again, its reply (CommandComplete, or the error a
             * CopyFail gets, after which the server skips to the next
             * Sync) still to come -- the server stays until the client's
             * next Sync. */
            t->ext_open = (int)t->ext_done + 1;   /* (replies in so far, and its own) */
            t->doubt_open = t->fe_open++ == 0;
            /* After the COPY's error its reply is in, and the server skips
             * to a Sync or not (it read those Syncs or not): which of the
             * batch's messages get an answer is unknown -- and after a
             * Sync sent once the error went by (a stray CopyDone, ignored)
             * none is to come, ext_open one too high: a mixed Query's own
             * error would pass for its skipping (review of e8e2d04, the
             * track_model fuzzer: an early release). */
            if (t->copy_err)
                t->ext_unsure = true;
        }
        t->sync_exec = 0;
        t->exec_last = t->copy_in = false;
        return false;
    }
    case PGW_FE_COPY_DATA:
        /* A Sync after data may come after the COPY failed: it counts. */
        t->exec_last = false;
        return false;
    case PGW_FE_EXECUTE:
        /* Sent once a COPY's error went by: a Sync after it is for this
         * Execute's COPY, if it is one, to read (copy_err is the old
         * one's; it kept a second COPY pipelined behind a failed one from
         * being taken for certain: review). */
        t->copy_err = false;
        t->copy_ended = false;
        t->ext_open++;
        t->sync_exec = 0;
        t->exec_batch = ++t->execs;
        t->exec_last = true;
        t->copy_in = t->copy_plain = false;
        t->fe_open++;
        return false;
    case PGW_FE_FLUSH:
        /* Part of an open batch; alone (after a Query or Sync) there is
         * nothing to flush it waits for, and no Sync need follow. */
        if (t->fe_open > 0)
            t->fe_open++;
        return false;
    case PGW_FE_PARSE:
    case PGW_FE_BIND:
    case PGW_FE_DESCRIBE:
    case PGW_FE_CLOSE:
        t->ext_open++;
        /* fall through */
    default:
        /* Any other message would end a COPY FROM STDIN (the server fails
         * it): the Syncs before it are not taken back. */
        t->exec_last = t->copy_in = t->copy_plain = false;
        t->fe_open++;
        return false;
    }
}

/* A server message other than ReadyForQuery, one the client gets, came
 * while a failed COPY's end was followed by a Sync (see the top, after):
 * unless it may come at any time, it is the first reply of the first
 * request sent after that Sync but the lone Syncs first, and every request
 * before that one is over.  (Call it first: pgw_track_backend and
 * pgw_track_error do.) */
static inline void pgw_track_settle(struct pgw_track *t, char type)
{
    if (!t->copy_doubt || type == PGW_BE_NOTICE || type == PGW_BE_PARAM_STATUS ||
        type == PGW_BE_NOTIFY)
        return;
    /* (Lone Syncs alone get nothing else: not theirs.) */
    if (t->after_n == t->after_lone && !t->after_open)
        return;
    int n = t->after_n - t->after_lone;
    t->after = PGW_TRACK_AFTER_NONE;
    if (n > t->sync_out)
        return;                  /* (cannot be: the look-ahead is given up) */
    t->req_done += (uint32_t)(t->sync_out - n);
    t->sync_out = n;
    t->count_high = t->copy_doubt = t->doubt_z = t->doubt_open = false;
    /* The open batch was sent under mixed_off, as where a ReadyForQuery
     * ends it (pgw_track_ready): its messages are not counted on. */
    if (t->mixed_off && t->ext_open > 0)
        t->ext_unsure = true;
}

/* A server message other than ReadyForQuery, one the client gets (not
 * the replies pgwharf drops).  A CopyInResponse is the last Execute's for
 * certain when every Sync before that Execute is answered, every Execute
 * of its batch before it is answered (so none of them is the COPY), and
 * the client has sent nothing but Syncs and Flushes since (a client that
 * waits for the CopyInResponse, as libpq does).  Otherwise its Syncs are
 * not taken back. */
static inline void pgw_track_backend(struct pgw_track *t, char type)
{
    if (t->after == PGW_TRACK_AFTER_SYNCED && t->after_err)
        pgw_track_settle(t, type);
    /* The COPY the CopyDone ended went well: it read every Sync sent
     * during it (the first CommandComplete since: nothing else was
     * outstanding when it began).  First: that CommandComplete is the
     * reply of the batch the Syncs' going opens again. */
    if (type == PGW_BE_COMMAND_COMPLETE && t->sync_copy_back > 0) {
        int back = t->sync_out > t->sync_copy_back ? t->sync_copy_back : t->sync_out;
        t->sync_out -= back;
        /* (Answered: the first outstanding, the mixed requests kept since
         * the CopyDone numbered after them.) */
        t->req_done += (uint32_t)back;
        t->sync_copy_back = 0;
        t->mixed_copy = false;
        /* With nothing else outstanding the numbers are certain again
         * (the CopyInResponse made them unsure: mixed_off). */
        if (t->sync_out == 0) {
            t->mixed_off = t->count_high = false;
            t->nmixed = 0;
        }
    }
    if (t->nmixed > 0 || (t->sync_out == 0 && t->ext_open > 0))
        pgw_track_mixed_reply(t, type);
    if (type == PGW_BE_COMMAND_COMPLETE || type == PGW_BE_EMPTY_QUERY ||
        type == PGW_BE_PORTAL_SUSPENDED)
        t->exec_done++;
    if (type == PGW_BE_ERROR) {
        /* Syncs sent since the COPY's Execute that it may have read before
         * it failed, or not (a row after them, or a trigger before it read
         * anything): counted, maybe one too many (count_high) -- so also
         * where no later Sync finds the count unsure, as when the COPY's
         * batch ended with a Flush and its only Sync came among the data.
         * (A CopyFail's own error took its Syncs back first:
         * pgw_track_copy_failed.) */
        if (t->copy && (t->sync_copy > 0 || t->sync_copy_back > 0 || t->sync_fail_back > 0 ||
                        (t->copy_in && t->sync_exec > 0))) {
            t->count_high = true;
            /* A probe may tell, once the server skips nothing for it, or
             * the client's next request (after). */
            t->copy_doubt = true;
            t->doubt_z = false;
            t->after_err = t->after != PGW_TRACK_AFTER_NONE;
        }
        t->copy_err = t->copy;
        pgw_track_copy_back_lost(t);
        t->sync_copy = t->sync_copy_back = t->sync_fail_back = 0;
        t->copy_failing = t->fail_open = false;
    }
    if (type == PGW_BE_COPY_IN || type == PGW_BE_COPY_OUT || type == PGW_BE_COPY_BOTH)
        t->copy = true;
    if (type == PGW_BE_COPY_IN || type == PGW_BE_COPY_BOTH) {
        t->copy_in = t->exec_last && t->exec_done == t->exec_batch - 1 &&
                     t->sync_out == t->sync_exec;
        t->copy_plain = t->copy_in;
        t->after = t->copy_in && !t->bodied ? PGW_TRACK_AFTER_COPY : PGW_TRACK_AFTER_NONE;
        t->after_err = false;
        t->copy_err = t->copy_failing = t->fail_open = false;
        pgw_track_copy_back_lost(t);
        t->sync_copy = t->sync_copy_back = 0;
        /* The COPY reads what the client sent after the message that
         * started it: a Sync there is read and ignored (no ReadyForQuery
         * answers it); before PostgreSQL 14 any other message too, ending
         * the COPY with an error (14 and later end the connection). */
        t->mixed_by_copy = !t->mixed_off;
        t->copy_ended = false;
        t->mixed_off = true;
        t->nmixed = 0;
        if (t->sync_out > 1)
            t->count_high = true;
    }
}

/* ReadyForQuery with `status`: true when it answers the last outstanding
 * request. */
static inline bool pgw_track_ready(struct pgw_track *t, char status)
{
    pgw_track_copy_back_lost(t);         /* (before the COPY's CommandComplete: not its Syncs) */
    if (t->sync_out > 0) {
        t->sync_out--;
        t->req_done++;
        t->ext_done = 0;
        if (t->nmixed > 0)
            pgw_track_mixed_drop(t);
    }
    t->exec_done = 0;
    t->tx_status = status;
    if (t->sync_out == 0) {
        t->count_high = false;
        t->bodied = t->bodied && t->fe_open > 0;
    }
    if (t->copy_doubt) {
        t->doubt_z = true;
        if (t->sync_out == 0 && t->fe_open == 0) {
            t->copy_doubt = false;       /* nothing outstanding: no doubt left */
            t->after = PGW_TRACK_AFTER_NONE;
        }
    }
    if (t->sync_out == 0 && t->mixed_off) {
        t->mixed_off = false;
        t->ext_unsure = t->ext_open > 0;
    }
    t->copy = t->copy_in = t->copy_err = t->copy_failing = t->fail_open = false;
    t->sync_copy = t->sync_copy_back = 0;
    return t->sync_out == 0;
}

/* Does an ErrorResponse coming now need reading whole, for
 * pgw_track_copy_fail_error?  (Only the first after a CopyFail that ended
 * the COPY of the last Execute: the hot path stays header-only.) */
static inline bool pgw_track_copy_fail_due(const struct pgw_track *t)
{
    return t->copy_failing;
}

/* body/len: an ErrorResponse after its 5-byte header.  True when it is
 * the one a COPY FROM STDIN sends on reading a CopyFail: SQLSTATE 57014
 * raised in CopyGetData (the R field; the message, "COPY from stdin
 * failed: " and the CopyFail's text, may be translated). */
bool pgw_track_copy_fail_error(const uint8_t *body, size_t len);

/* The first error since the CopyFail is that CopyFail's (call it before
 * pgw_track_error and pgw_track_backend): the COPY read every Sync sent
 * since its Execute, and the server skips what was sent after the
 * CopyFail up to the next Sync: none of them gets a ReadyForQuery. */
static inline void pgw_track_copy_failed(struct pgw_track *t)
{
    if (!t->copy_failing)
        return;
    int n = t->sync_fail_back + t->fail_skip;
    bool open = t->fail_open;
    t->copy_failing = t->fail_open = false;
    t->sync_fail_back = t->fail_skip = 0;
    t->sync_out = t->sync_out > n ? t->sync_out - n : 0;
    /* No Sync since the CopyFail: the server skips what comes until one. */
    if (open) {
        t->skip_sync = true;
        if (t->fe_open == 0)
            t->fe_open = 1;
    }
    /* With nothing else outstanding the numbers are certain again (as at
     * a CopyDone's CommandComplete). */
    if (t->sync_out == 0) {
        t->mixed_off = t->count_high = false;
        t->nmixed = 0;
    }
}

/* An ErrorResponse answering an extended-protocol message came: the
 * server skips what was sent after that message up to the next Sync.
 * `skipped` Queries/FunctionCalls were sent in between (no ReadyForQuery
 * answers them); `open`: no Sync was sent after it yet, so the server goes
 * on skipping what the client sends until one comes. */
static inline void pgw_track_ext_error(struct pgw_track *t, int skipped, bool open)
{
    if (skipped > 0) {
        /* The first `skipped` requests outstanding: their numbers pass. */
        t->req_done += (uint32_t)(t->sync_out < skipped ? t->sync_out : skipped);
        t->ext_done = 0;
        if (t->nmixed > 0)
            pgw_track_mixed_drop(t);
    }
    t->sync_out = t->sync_out > skipped ? t->sync_out - skipped : 0;
    if (open) {
        t->skip_sync = true;
        if (t->fe_open == 0)
            t->fe_open = 1;      /* the batch stays open until its Sync */
    }
}

/* An ErrorResponse the client gets, when prepared.c does not say what it
 * answers (max_prepared_statements = 0, session mode): works out whether
 * the server now skips a Query/FunctionCall or what the client sends next
 * (pgw_track_ext_error).  Call it before pgw_track_backend. */
void pgw_track_error(struct pgw_track *t);

/* Should relay.c ask the server (a probe of its own) what a failed COPY
 * left?  True when the count is unsure for it alone (copy_doubt), only
 * ReadyForQuerys of one status ('I', or 'E' in a failed transaction block)
 * can still come, and the server skips nothing: a Sync,
 * a Close of a portal no client has and a Sync then sent -- with nothing of
 * the client's after them until the last of their replies is in -- tell
 * which ReadyForQuerys are the client's (see the top).  relay.c checks
 * that the client has nothing more under way on its side. */
static inline bool pgw_track_probe_due(const struct pgw_track *t)
{
    return t->copy_doubt && t->copy_plain && t->doubt_z && !t->copy && !t->skip_sync &&
           (t->tx_status == 'I' || t->tx_status == 'E') &&
           (t->fe_open == 0 || t->doubt_open) &&
           (t->sync_out > 0 ? t->count_high : t->fe_open > 0);
}

/* The probe's last ReadyForQuery (with `status`) came: everything the
 * client sent before it is answered, and the server is at a Sync. */
static inline void pgw_track_probed(struct pgw_track *t, char status)
{
    pgw_track_reset(t);
    t->tx_status = status;
}

/* Could the server go back to the pool right now? */
static inline bool pgw_track_idle(const struct pgw_track *t)
{
    return t->sync_out == 0 && t->fe_open == 0 && !t->copy && t->tx_status == 'I';
}

/*
 * Feed a byte stream in pieces (fuzzing and tests): frames messages across
 * chunk boundaries and applies the counters.  `skip` and `hdr` carry a
 * partial message between calls.  Returns the number of whole-message
 * headers seen, or -1 on an invalid length.
 */
struct pgw_track_stream {
    uint32_t skip;               /* body bytes of the current message still to pass */
    uint8_t hdr[6];              /* a partial header (type, length, first body byte) */
    uint8_t nhdr;
    bool backend;
};
int pgw_track_feed(struct pgw_track *t, struct pgw_track_stream *st, const uint8_t *p, size_t n);

#endif
