/* track.c - stream framing for the tracker (see track.h). */
#include "proxy/track.h"

#include <string.h>

#define MSG_MAX (1u << 30)

/* ---- mixed requests (see track.h) ---- */

/* A Query or FunctionCall opens a request (called before sync_out counts
 * it): one more for every mixed request whose Sync is still to come, and
 * a mixed one itself after extended messages of its batch (not when some
 * of them may have gone into a COPY: ext_unsure).  One not kept
 * may be skipped unseen, and the numbers of the requests after it be one
 * too high: none is kept from then on until nothing is outstanding (the
 * first of them would pass for outstanding while the server answers the
 * next, and a Query's own error there for the skipping of it). */
void pgw_track_mixed_query(struct pgw_track *t)
{
    for (int i = t->nmixed; i-- > 0 && t->mixed[i].open;)
        t->mixed[i].skip++;
    if (t->ext_open == 0)
        return;
    if (t->nmixed == PGW_TRACK_MIXED_MAX || t->mixed_off || t->ext_unsure) {
        t->mixed_off = true;
        t->count_high = true;
        return;
    }
    t->mixed[t->nmixed++] = (struct pgw_track_mixed) {
        .seq = t->req_done + (uint32_t)t->sync_out, .ext = (uint32_t)t->ext_open,
        .skip = 1, .open = true,
    };
}

void pgw_track_mixed_sync(struct pgw_track *t)
{
    for (int i = t->nmixed; i-- > 0 && t->mixed[i].open;)
        t->mixed[i].open = false;
}

/* Forget the mixed requests answered or skipped (numbered below req_done). */
void pgw_track_mixed_drop(struct pgw_track *t)
{
    int k = 0;
    while (k < t->nmixed && (int32_t)(t->mixed[k].seq - t->req_done) < 0)
        k++;
    if (k == 0)
        return;
    t->nmixed -= k;
    for (int i = 0; i < t->nmixed; i++)
        t->mixed[i] = t->mixed[i + k];
}

/* The first outstanding request, when it is a mixed one (NULL: not). */
static const struct pgw_track_mixed *mixed_first(const struct pgw_track *t)
{
    if (t->nmixed == 0 || t->sync_out == 0 || t->mixed[0].seq != t->req_done)
        return NULL;
    return &t->mixed[0];
}

/* The replies that end a Parse, Bind, Close, Describe (after its
 * ParameterDescription) and Execute (after its rows or COPY), which come
 * before anything the Query's own answer holds.  An ErrorResponse ends
 * one too, but pgw_track_error reads it first.  With nothing outstanding
 * they answer the open batch, whose Query may come only after them (a
 * client that flushed and read them first): counted all the same, or
 * that Query's own error would pass for one of theirs. */
void pgw_track_mixed_reply(struct pgw_track *t, char type)
{
    uint32_t ext;
    if (t->sync_out == 0) {
        ext = (uint32_t)t->ext_open;
    } else {
        const struct pgw_track_mixed *m = mixed_first(t);
        if (!m)
            return;
        ext = m->ext;
    }
    if (t->ext_done >= ext)
        return;
    switch (type) {
    case PGW_BE_PARSE_COMPLETE: case PGW_BE_BIND_COMPLETE: case PGW_BE_CLOSE_COMPLETE:
    case PGW_BE_ROW_DESC: case PGW_BE_NO_DATA: case PGW_BE_COMMAND_COMPLETE:
    case PGW_BE_EMPTY_QUERY: case PGW_BE_PORTAL_SUSPENDED:
        t->ext_done++;
        break;
    default:
        break;
    }
}

void pgw_track_error(struct pgw_track *t)
{
    if (t->after == PGW_TRACK_AFTER_SYNCED && t->after_err)
        pgw_track_settle(t, PGW_BE_ERROR);       /* (a request's own error: first) */
    if (t->skip_sync)
        return;                  /* the server answers nothing until the Sync */
    if (t->sync_out == 0) {
        /* Every request is answered: it answers a message of the open
         * batch, whose Sync is still to come. */
        if (t->ext_open > 0)
            pgw_track_ext_error(t, 0, true);
        return;
    }
    /* It answers the first outstanding request: a Sync's batch (skipping
     * ends at that Sync), a Query's own failure (its ReadyForQuery
     * follows), or one of the extended messages before a mixed Query. */
    const struct pgw_track_mixed *m = mixed_first(t);
    if (m && t->ext_done < m->ext)
        pgw_track_ext_error(t, (int)m->skip, m->open);
}

/* One header complete: apply it.  ReadyForQuery needs its status byte, so
 * backend headers wait for 6 bytes; everything else for 5. */
static int on_header(struct pgw_track *t, struct pgw_track_stream *st)
{
    uint32_t len = pgw_get_u32(st->hdr + 1);
    if (len < 4 || len > MSG_MAX)
        return -1;
    char type = (char)st->hdr[0];
    uint32_t consumed = st->nhdr - 1;      /* length field and any body byte */
    if (st->backend) {
        if (type == PGW_BE_READY) {
            pgw_track_ready(t, len >= 5 ? (char)st->hdr[5] : 'I');
        } else {
            if (type == PGW_BE_ERROR)
                pgw_track_error(t);
            pgw_track_backend(t, type);
        }
    } else {
        if ((type == PGW_FE_SYNC || type == PGW_FE_FLUSH) && len != 4)
            type = pgw_track_bodied(t, type);    /* (as relay.c) */
        pgw_track_frontend(t, type);
    }
    st->skip = len + 1 - 1 - consumed;
    st->nhdr = 0;
    return 1;
}

int pgw_track_feed(struct pgw_track *t, struct pgw_track_stream *st, const uint8_t *p, size_t n)
{
    int headers = 0;
    size_t i = 0;
    while (i < n) {
        if (st->skip) {
            size_t k = n - i < st->skip ? n - i : st->skip;
            i += k;
            st->skip -= (uint32_t)k;
            continue;
        }
        st->hdr[st->nhdr++] = p[i++];
        size_t want = 5;
        if (st->nhdr >= 5) {
            uint32_t len = pgw_get_u32(st->hdr + 1);
            if (len < 4 || len > MSG_MAX)
                return -1;
            /* ReadyForQuery: also its status byte (when it has one). */
            if (st->backend && st->hdr[0] == PGW_BE_READY && len >= 5)
                want = 6;
        }
        if (st->nhdr < want)
            continue;
        if (on_header(t, st) < 0)
            return -1;
        headers++;
    }
    return headers;
}

bool pgw_track_copy_fail_error(const uint8_t *body, size_t len)
{
    bool code = false, routine = false;
    size_t i = 0;
    while (i < len && body[i] != '\0') {
        char field = (char)body[i++];
        const uint8_t *v = body + i;
        const uint8_t *nul = memchr(v, '\0', len - i);
        if (!nul)
            return false;
        size_t n = (size_t)(nul - v);
        if (field == 'C')
            code = n == 5 && memcmp(v, "57014", 5) == 0;
        else if (field == 'R')
            routine = n == 11 && memcmp(v, "CopyGetData", 11) == 0;
        i += n + 1;
    }
    return code && routine;
}
