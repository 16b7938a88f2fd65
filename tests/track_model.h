/*
 * track_model.h - a model PostgreSQL backend, message by message, against
 * the relay's release tracker (proxy/track.h) as relay.c drives it without
 * prepared.c (max_prepared_statements = 0): shared by unit.track (random
 * conversations) and the track_model fuzz target.
 *
 * A script of byte pairs (op, choice) is a conversation: an op that is not
 * a multiple of 3 sends a frontend message (Parse, Bind, Describe,
 * Execute, Close, Flush, Sync, Query, FunctionCall, CopyData, CopyDone,
 * CopyFail), which the model answers at once into its queue, choice
 * (and a Sync or Flush with a body, which PostgreSQL answers with 08P01),
 * picking success or the way it fails; the other ops deliver 1 to 4
 * queued replies to the tracker.  The model follows postgres.c and
 * copyfromparse.c: an error in an extended-protocol message skips all up
 * to the next Sync (a Query or FunctionCall too); an error in a Query,
 * FunctionCall or at a Sync (a commit, of a batch that ran) does not; a
 * COPY FROM STDIN may
 * fail before it reads anything (a BEFORE STATEMENT trigger runs after
 * the CopyInResponse), else it reads
 * the messages after its start as its own, ignoring Sync and Flush and
 * failing on anything but COPY data -- or at its CopyDone (an AFTER
 * STATEMENT trigger, a last row cut short) (as PostgreSQL 13 does; 14 and later
 * end the connection) -- on a CopyFail with an error relay.c recognizes
 * as that CopyFail's (pgw_track_copy_fail_error; not when too large to
 * read whole); CopyData/CopyDone/CopyFail outside a COPY are ignored.
 *
 * Checked: at each ReadyForQuery where the relay would give the server
 * back (pgw_track_ready true, nothing sent since the last Sync/Query),
 * the model owes nothing more, skips nothing and runs no COPY (else the
 * next client would read this one's replies); and at the end, once the
 * model owes nothing and no batch is open, the tracker lets the server go
 * -- unless the conversation had a COPY FROM STDIN or more mixed Queries
 * than the tracker keeps (there it may keep the server, by design).
 *
 * And where the tracker asks for a probe after a failed COPY
 * (pgw_track_probe_due) and a delivering op's choice says the client is
 * quiet: the model runs no COPY, skips nothing, and owes nothing but
 * ReadyForQuerys (and errors of a commit at a Sync) -- relay.c relays
 * them, drops the probe's, and the tracker takes its last
 * (pgw_track_probed): the conversation goes on from there.
 */
#ifndef PGW_TESTS_TRACK_MODEL_H
#define PGW_TESTS_TRACK_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/track.h"

enum track_model_result {
    TRACK_MODEL_OK,
    TRACK_MODEL_EARLY,       /* given back with a reply still to come */
    TRACK_MODEL_KEPT,        /* kept though nothing was outstanding */
    TRACK_MODEL_PROBE        /* a probe asked for where other replies may come */
};

#define TRACK_MODEL_QUEUE 4096

struct track_model {
    char queue[TRACK_MODEL_QUEUE];   /* replies owed, by type */
    size_t head, tail;
    bool skipping;           /* ignore_till_sync */
    bool open;               /* extended messages since the last Sync/Query */
    char copy_by;            /* 'Q' or 'E': a COPY FROM STDIN reads the client's messages */
    bool copied;             /* a COPY FROM STDIN ran */
    int ext_since;           /* extended messages sent since the last Sync/Query/FunctionCall */
    int mixed_sent;          /* Queries/FunctionCalls sent after extended messages */
};

static inline void track_model_out(struct track_model *m, char type)
{
    m->queue[m->tail++ % TRACK_MODEL_QUEUE] = type;
}

/* An error in an extended-protocol message: skip to the next Sync. */
static inline void track_model_ext_error(struct track_model *m)
{
    track_model_out(m, 'E');
    m->skipping = true;
}

/* A message read by a COPY FROM STDIN. */
static inline void track_model_copy_msg(struct track_model *m, char type, unsigned ch)
{
    char by = m->copy_by;
    if (type == 'S' || type == 'H' || type == 'y' || type == 'h' ||
        (type == 'd' && ch % 7 != 0))
        return;              /* ignored (with a body too), or a row taken */
    m->copy_by = 0;
    /* A CopyDone may fail too: an AFTER STATEMENT trigger, a constraint
     * checked at the end, a last row cut short in its data. */
    if (type == 'c' && ch % 5 != 4) {
        track_model_out(m, 'C');
    } else {                 /* a bad row, CopyFail, or not COPY data */
        /* The CopyFail's own error ('!': SQLSTATE 57014 from CopyGetData),
         * which relay.c tells from any other -- unless too large to read
         * whole (then a plain one). */
        track_model_out(m, type == 'f' && ch % 3 != 0 ? '!' : 'E');
        if (by == 'E')
            m->skipping = true;
    }
    if (by == 'Q')
        track_model_out(m, 'Z');
}

static inline void track_model_execute(struct track_model *m, unsigned ch)
{
    switch (ch % 8) {
    case 0: track_model_ext_error(m); break;
    case 1: track_model_out(m, 'D'); track_model_ext_error(m); break;
    case 2: track_model_out(m, 'D'); track_model_out(m, 'D'); track_model_out(m, 'C'); break;
    case 3: track_model_out(m, 'I'); break;
    case 4: track_model_out(m, 'D'); track_model_out(m, 's'); break;
    case 5:                  /* COPY TO STDOUT */
        track_model_out(m, 'H'); track_model_out(m, 'd'); track_model_out(m, 'c');
        track_model_out(m, 'C');
        break;
    case 6:                  /* COPY FROM STDIN */
        track_model_out(m, 'G');
        m->copied = true;
        if ((ch / 8) % 4 == 0)
            track_model_ext_error(m);    /* failed before it read anything */
        else
            m->copy_by = 'E';
        break;
    default: track_model_out(m, 'C'); break;
    }
}

static inline void track_model_query(struct track_model *m, unsigned ch)
{
    switch (ch % 7) {
    case 0: track_model_out(m, 'E'); break;
    case 1: track_model_out(m, 'T'); track_model_out(m, 'D'); track_model_out(m, 'C'); break;
    case 2: track_model_out(m, 'C'); track_model_out(m, 'E'); break;   /* the 2nd fails */
    case 3: track_model_out(m, 'I'); break;
    case 4:                  /* COPY TO STDOUT */
        track_model_out(m, 'H'); track_model_out(m, 'd'); track_model_out(m, 'c');
        track_model_out(m, 'C');
        break;
    case 5:                  /* COPY FROM STDIN */
        track_model_out(m, 'G');
        m->copied = true;
        if ((ch / 7) % 4 == 0) {
            track_model_out(m, 'E');     /* failed before it read anything */
            break;
        }
        m->copy_by = 'Q';
        return;
    default: track_model_out(m, 'C'); track_model_out(m, 'T'); track_model_out(m, 'C'); break;
    }
    track_model_out(m, 'Z');
}

/* The server reads a frontend message (choice ch) and answers it. */
static inline void track_model_read(struct track_model *m, char type, unsigned ch)
{
    if (m->copy_by) {
        track_model_copy_msg(m, type, ch);
        return;
    }
    if (type == 'd' || type == 'c' || type == 'f')
        return;              /* outside a COPY: ignored */
    if (type == 'y') {       /* a Sync with a body: 08P01, and its ReadyForQuery */
        m->skipping = m->open = false;
        track_model_out(m, 'E');
        track_model_out(m, 'Z');
        return;
    }
    if (type == 'S') {
        /* The commit may fail where the batch ran: not an empty one, nor
         * one skipped to this Sync (its transaction aborted). */
        bool ran = m->open && !m->skipping;
        m->skipping = m->open = false;
        if (ran && ch % 5 == 0)
            track_model_out(m, 'E');     /* the commit failed */
        track_model_out(m, 'Z');
        return;
    }
    if (m->skipping) {
        m->open = true;
        return;
    }
    switch (type) {
    case 'P': case 'B': case 'C':
        m->open = true;
        if (ch % 4 == 0)
            track_model_ext_error(m);
        else
            track_model_out(m, type == 'P' ? '1' : type == 'B' ? '2' : '3');
        break;
    case 'H':
        break;               /* part of an open batch, or nothing to flush */
    case 'h':                /* a Flush with a body: 08P01, skipping to a Sync */
        m->open = true;
        track_model_ext_error(m);
        break;
    case 'D':
        m->open = true;
        switch (ch % 5) {
        case 0: track_model_ext_error(m); break;
        case 1: track_model_out(m, 't'); track_model_out(m, 'T'); break;
        case 2: track_model_out(m, 't'); track_model_out(m, 'n'); break;
        case 3: track_model_out(m, 'T'); break;
        default: track_model_out(m, 'n'); break;
        }
        break;
    case 'E':
        m->open = true;
        track_model_execute(m, ch);
        break;
    case 'Q':
        m->open = false;
        track_model_query(m, ch);
        break;
    case 'F':
        m->open = false;
        track_model_out(m, ch % 3 == 0 ? 'E' : 'V');
        track_model_out(m, 'Z');
        break;
    }
}

/* One reply to the tracker, as relay.c gives it; false when the relay
 * would give the server back now with something still to come. */
static inline bool track_model_deliver(struct track_model *m, struct pgw_track *t)
{
    char type = m->queue[m->head++ % TRACK_MODEL_QUEUE];
    if (type == '!') {       /* the error a COPY sends on reading a CopyFail */
        pgw_track_copy_failed(t);
        type = 'E';
    }
    if (type != 'Z') {
        if (type == 'E')
            pgw_track_error(t);
        pgw_track_backend(t, type);
        return true;
    }
    if (!pgw_track_ready(t, 'I') || t->fe_open > 0)
        return true;
    return m->head == m->tail && !m->skipping && !m->copy_by;
}

/* relay.c's probe (pgw_track_probe_due, the client quiet): false when
 * the model may send what would pass for the probe's replies, run a COPY
 * that would read them, or skip (the probe's Sync would end that). */
static inline bool track_model_probe(struct track_model *m, struct pgw_track *t)
{
    if (m->copy_by || m->skipping)
        return false;
    for (size_t i = m->head; i != m->tail; i++) {
        char type = m->queue[i % TRACK_MODEL_QUEUE];
        if (type != 'Z' && type != 'E')
            return false;
    }
    while (m->head != m->tail) {
        char type = m->queue[m->head++ % TRACK_MODEL_QUEUE];
        if (type == 'E') {
            pgw_track_error(t);
            pgw_track_backend(t, 'E');
        } else {
            pgw_track_ready(t, 'I');     /* (no release while the probe is out) */
        }
    }
    pgw_track_probed(t, 'I');
    m->open = false;
    m->ext_since = 0;
    return true;
}

static inline enum track_model_result track_model_run(const uint8_t *script, size_t n)
{
    static const char fe_types[] = "PBDECHSQFdcfyh";    /* y, h: a Sync, a Flush with a body */
    struct track_model m = { .head = 0 };
    struct pgw_track t = { .tx_status = 'I' };
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned op = script[i], ch = script[i + 1];
        if (op % 3 != 0) {
            char type = fe_types[(op / 3) % (sizeof(fe_types) - 1)];
            if (m.tail - m.head > TRACK_MODEL_QUEUE - 8)
                continue;    /* the queue is full: no more sending */
            if ((type == 'Q' || type == 'F') && m.ext_since > 0)
                m.mixed_sent++;
            if (type == 'S' || type == 'Q' || type == 'F' || type == 'y')
                m.ext_since = 0;
            else if (type != 'H' && type != 'd' && type != 'c' && type != 'f')
                m.ext_since++;
            char ttype = type;
            if (type == 'y' || type == 'h')      /* (as relay.c does) */
                ttype = pgw_track_bodied(&t, type == 'y' ? PGW_FE_SYNC : PGW_FE_FLUSH);
            pgw_track_frontend(&t, ttype);
            track_model_read(&m, type, ch);
            continue;
        }
        if (ch >= 0xe0 && pgw_track_probe_due(&t)) {
            if (!track_model_probe(&m, &t))
                return TRACK_MODEL_PROBE;
            continue;
        }
        for (unsigned k = ch % 4 + 1; k > 0 && m.head != m.tail; k--)
            if (!track_model_deliver(&m, &t))
                return TRACK_MODEL_EARLY;
    }
    while (m.head != m.tail)
        if (!track_model_deliver(&m, &t))
            return TRACK_MODEL_EARLY;
    if (!m.skipping && !m.open && !m.copy_by && !m.copied &&
        m.mixed_sent <= PGW_TRACK_MIXED_MAX && !pgw_track_idle(&t))
        return TRACK_MODEL_KEPT;
    return TRACK_MODEL_OK;
}

#endif
