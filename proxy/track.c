/* track.c - stream framing for the tracker (see track.h). */
#include "proxy/track.h"

#define MSG_MAX (1u << 30)

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
        if (type == PGW_BE_READY)
            pgw_track_ready(t, len >= 5 ? (char)st->hdr[5] : 'I');
        else
            pgw_track_backend(t, type);
    } else {
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
