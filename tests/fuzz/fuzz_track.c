/*
 * fuzz_track.c - the relay's release tracker (proxy/track.h) fed a byte
 * stream in pieces whose sizes come from the input.  Property: however the
 * stream is cut, framing and counters end in the same state as when it is
 * fed whole (and nothing reads out of bounds).
 *
 * Input: byte 0 picks the direction (even: client, odd: server), bytes
 * 1..8 give chunk sizes, the rest is the stream.
 */
#include "fuzz_util.h"
#include "proxy/track.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    pgw_log_set_level(PGW_LOG_FATAL);
    return 0;
}

static int feed_all(struct pgw_track *t, struct pgw_track_stream *st, const uint8_t *p,
                    size_t n, const uint8_t *cuts, size_t ncuts)
{
    int headers = 0;
    size_t i = 0, c = 0;
    while (i < n) {
        size_t k = ncuts ? (size_t)cuts[c++ % ncuts] % 17 + 1 : n - i;
        if (k > n - i)
            k = n - i;
        int h = pgw_track_feed(t, st, p + i, k);
        if (h < 0)
            return -1;
        headers += h;
        i += k;
    }
    return headers;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9)
        return 0;
    bool backend = data[0] & 1;
    const uint8_t *cuts = data + 1;
    const uint8_t *p = data + 9;
    size_t n = size - 9;

    struct pgw_track whole = { .tx_status = 'I' }, split = { .tx_status = 'I' };
    struct pgw_track_stream ws = { .backend = backend }, ss = { .backend = backend };
    uint8_t *copy = malloc(n ? n : 1);           /* exact size: ASan sees overruns */
    if (!copy)
        abort();
    memcpy(copy, p, n);
    int hw = feed_all(&whole, &ws, copy, n, NULL, 0);
    int hs = feed_all(&split, &ss, copy, n, cuts, 8);
    free(copy);
    if (hw < 0 || hs < 0) {
        /* An invalid length must be found whichever way the stream is cut. */
        if ((hw < 0) != (hs < 0))
            abort();
        return 0;
    }
    if (hw != hs || whole.sync_out != split.sync_out || whole.fe_open != split.fe_open ||
        whole.sync_exec != split.sync_exec || whole.tx_status != split.tx_status ||
        whole.copy != split.copy || whole.copy_in != split.copy_in ||
        whole.exec_last != split.exec_last || whole.exec_batch != split.exec_batch ||
        whole.skip_sync != split.skip_sync || whole.ext_open != split.ext_open ||
        whole.req_done != split.req_done || whole.nmixed != split.nmixed ||
        whole.ext_done != split.ext_done || whole.mixed_off != split.mixed_off ||
        whole.ext_unsure != split.ext_unsure ||
        ws.skip != ss.skip || ws.nhdr != ss.nhdr)
        abort();
    if (whole.sync_out < 0 || whole.fe_open < 0 || whole.nmixed < 0 ||
        whole.nmixed > PGW_TRACK_MIXED_MAX)
        abort();
    /* The mixed requests kept are outstanding ones, in order. */
    for (int i = 0; i < whole.nmixed; i++)
        if ((int32_t)(whole.mixed[i].seq - whole.req_done) < 0 ||
            whole.mixed[i].seq - whole.req_done >= (uint32_t)whole.sync_out ||
            (i > 0 && whole.mixed[i].seq <= whole.mixed[i - 1].seq))
            abort();
    return 0;
}
